// bidi.test.mjs -- user text (titles, names, notes) is bidi-isolated: a
// right-to-left override (U+202E) or right-to-left script in a title reorders
// that title only, never the app's own text around it (the toast that quotes
// the title, tooltips); titles, names and notes take their direction from
// their own text (dir="auto").
import assert from 'node:assert/strict';
import test from 'node:test';
import { addCard, cardById, launchBrowser, openBoard, startDemoServer } from './helpers.mjs';

const RLO_TITLE = 'abc\u202Edef';
const RTL_TITLE = '\u05e9\u05dc\u05d5\u05dd world'; // Hebrew first: a right-to-left title

/**
 * Whether the app's words after the quoted title in a toast show in reading
 * order: the x of each letter of "rolled back" grows.
 */
function wordsInOrder(page, words) {
  return page.evaluate((w) => {
    const toast = [...document.querySelectorAll('[data-testid="toast"]')].find((el) => el.textContent.includes(w));
    if (!toast) return { error: 'no toast' };
    const walker = document.createTreeWalker(toast, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const at = n.data.indexOf(w);
      if (at < 0) continue;
      const xs = [];
      const range = document.createRange();
      for (let i = at; i < at + w.length; i++) {
        if (n.data[i] === ' ') continue;
        range.setStart(n, i);
        range.setEnd(n, i + 1);
        xs.push(Math.round(range.getBoundingClientRect().left));
      }
      return { xs, inOrder: xs.every((x, i) => i === 0 || x > xs[i - 1]), text: toast.textContent };
    }
    return { error: `"${w}" not in one text node`, text: toast.textContent };
  }, words);
}

test('a title with a right-to-left override does not reorder the text around it', { timeout: 30000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const { page: a } = await openBoard(browser, srv, { user: 'alice' });
  const { page: b } = await openBoard(browser, srv, { user: 'bob' });

  const id = await addCard(a, 'todo', RLO_TITLE);
  const rtl = await addCard(a, 'todo', RTL_TITLE);
  // Bob edits the card (locks it); alice's write to it is refused and rolled
  // back, with a toast that quotes the title.
  const cb = cardById(b, id);
  await cb.locator('[data-testid="card-edit"]').click();
  await cb.locator('[data-testid="title-input"]').waitFor({ state: 'visible' });
  await a.locator(`[data-testid="card"][data-id="${id}"][data-locked="true"]`).waitFor();
  await a.evaluate((item) => window.wsyncDemo.room.set(item, { title: 'x' }).catch(() => {}), id);
  const toast = a.locator('[data-testid="toast"]', { hasText: 'rolled back' });
  await toast.waitFor();
  assert.ok((await toast.textContent()).includes(RLO_TITLE), await toast.textContent());
  const after = await wordsInOrder(a, 'rolled back');
  assert.equal(after.inOrder, true, `"rolled back" shown reordered: ${JSON.stringify(after)}`);
  const before = await wordsInOrder(a, 'Change to');
  assert.equal(before.inOrder, true, `"Change to" shown reordered: ${JSON.stringify(before)}`);

  // The tooltip of bob's device (plain text: no markup) isolates the title
  // with U+2068 FIRST STRONG ISOLATE ... U+2069 POP DIRECTIONAL ISOLATE.
  const dot = a.locator('[data-testid="presence-user"][data-user="bob"] [data-testid="presence-device"]');
  await a.waitForFunction(() => /editing/.test(document.querySelector('[data-testid="presence-user"][data-user="bob"] [data-testid="presence-device"]')?.title));
  const tip = await dot.getAttribute('title');
  assert.ok(tip.includes(`\u2068${RLO_TITLE}\u2069`), JSON.stringify(tip));

  // Titles, names and notes take their direction from their own text.
  assert.equal(await cardById(a, rtl).locator('[data-testid="card-title"]').evaluate((el) => getComputedStyle(el).direction), 'rtl');
  assert.equal(await cardById(a, id).locator('[data-testid="card-title"]').evaluate((el) => getComputedStyle(el).direction), 'ltr');
  const note = cardById(a, rtl).locator('[data-testid="note-input"]');
  await note.click();
  await a.keyboard.type('\u05e9\u05dc\u05d5\u05dd');
  assert.equal(await note.evaluate((el) => getComputedStyle(el).direction), 'rtl');
  // Bob's caret label in alice's note carries his presence name; isolated too.
  await b.evaluate(([item, rev]) => window.wsyncDemo.room.presence.set({
    name: '\u202Ebob', note: { card: item, pos: 0, end: 0, rev },
  }), [rtl, await a.evaluate((item) => window.wsyncDemo.note(item).rev, rtl)]);
  const label = cardById(a, rtl).locator('[data-testid="note-cursor"][data-user="bob"] [data-testid="note-cursor-label"]');
  await label.waitFor({ state: 'attached' });
  assert.equal(await label.evaluate((el) => el.dir || getComputedStyle(el).unicodeBidi), 'auto');

  assert.deepEqual([...a.problems, ...b.problems], []);
});
