// hostile.test.mjs -- whatever another user controls (presence name, colour,
// caret data, card titles) is data on everybody else's page: it never becomes
// CSS, markup or script there. Bob sets hostile presence values straight
// through the client (as a modified page could); alice's page must show them
// inert: his caret stays a 2 px marker inside the note, nothing is injected,
// names and titles show as text.
import assert from 'node:assert/strict';
import test from 'node:test';
import { addCard, card, cardById, launchBrowser, openBoard, startDemoServer } from './helpers.mjs';

const NAME = '<img src=x onerror="window.__pwned=1"><style>body{display:none}</style>';
const TITLE = '<img src=x onerror="window.__pwned=2"><b>bold?</b>';
const COLORS = [
  'red;position:fixed;top:0;left:0;width:100vw;height:100vh;z-index:9999',
  'url(http://127.0.0.1:9/track.png)',
  '#fff;display:block;position:fixed',
  'expression(alert(1))',
  { toString: null },
];

/** Bob's presence as his page would set it, with the given fields replaced. */
function setBob(page, id, patch) {
  return page.evaluate(([item, p]) => {
    const { room, note } = window.wsyncDemo;
    room.presence.set({ name: 'bob', editing: null, note: { card: item, pos: 1, end: 4, rev: note(item).rev }, ...p });
  }, [id, patch]);
}

/** What alice's page shows of bob's caret, and whether anything got out of place. */
function inspect(page, id) {
  return page.evaluate((item) => {
    const cardEl = document.querySelector(`[data-testid="card"][data-id="${item}"]`);
    const cursor = cardEl.querySelector('[data-testid="note-cursor"][data-user="bob"]');
    const ta = cardEl.querySelector('[data-testid="note-input"]').getBoundingClientRect();
    const cs = cursor && getComputedStyle(cursor);
    const r = cursor && cursor.getBoundingClientRect();
    const header = document.querySelector('.topbar').getBoundingClientRect();
    const atHeader = document.elementFromPoint(header.left + header.width / 2, header.top + header.height / 2);
    const avatar = document.querySelector('[data-testid="presence-user"][data-user="bob"] .avatar');
    return {
      cursor: cursor && {
        position: cs.position, zIndex: cs.zIndex, display: cs.display,
        width: r.width, inside: r.left >= ta.left - 1 && r.right <= ta.right + 1 && r.top >= ta.top - 1 && r.bottom <= ta.bottom + 1,
        background: cs.backgroundColor, backgroundImage: cs.backgroundImage,
        who: cs.getPropertyValue('--who').trim(),
        label: cursor.querySelector('[data-testid="note-cursor-label"]').textContent,
      },
      selections: [...cardEl.querySelectorAll('.note-selection')].map((s) => {
        const sr = s.getBoundingClientRect();
        const scs = getComputedStyle(s);
        return { position: scs.position, inside: sr.left >= ta.left - 1 && sr.right <= ta.right + 1, image: scs.backgroundImage };
      }),
      headerCovered: !atHeader.closest('.topbar'),
      injected: document.querySelectorAll('body img, body style, body b, body script:not([src])').length,
      pwned: window.__pwned ?? null,
      avatarBackground: avatar && getComputedStyle(avatar).backgroundColor,
      bodyDisplay: getComputedStyle(document.body).display,
    };
  }, id);
}

test("hostile presence values and titles from another user are rendered inert", { timeout: 40000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const { page: a } = await openBoard(browser, srv, { user: 'alice' });
  const { page: b } = await openBoard(browser, srv, { user: 'bob' });

  // A card with some note text, so that bob's caret has a range to select.
  const id = await addCard(a, 'todo', 'Target');
  const note = cardById(a, id).locator('[data-testid="note-input"]');
  await note.click();
  await a.keyboard.type('some note text');
  await b.waitForFunction((item) => window.wsyncDemo.note(item)?.value === 'some note text', id);

  const cursor = cardById(a, id).locator('[data-testid="note-cursor"][data-user="bob"]');
  for (const color of COLORS) {
    await setBob(b, id, { name: NAME, color });
    await cursor.waitFor();
    await a.waitForFunction(([item, name]) => document.querySelector(
      `[data-testid="card"][data-id="${item}"] [data-testid="note-cursor"][data-user="bob"] [data-testid="note-cursor-label"]`,
    )?.textContent === name, [id, NAME]);
    const seen = await inspect(a, id);
    const what = `colour ${JSON.stringify(color)}: ${JSON.stringify(seen)}`;
    assert.equal(seen.cursor.position, 'absolute', what);
    assert.equal(seen.cursor.zIndex, 'auto', what);
    assert.ok(seen.cursor.width <= 4, what);
    assert.ok(seen.cursor.inside, what);
    assert.equal(seen.cursor.backgroundImage, 'none', what);
    assert.notEqual(seen.cursor.background, 'rgb(255, 0, 0)', what);
    assert.notEqual(seen.cursor.background, 'rgba(0, 0, 0, 0)', what); // a colour was used: the fallback
    assert.doesNotMatch(seen.cursor.who, /[;:(]|position|url/, what);
    assert.ok(seen.selections.length >= 1, what);
    for (const s of seen.selections) {
      assert.equal(s.position, 'absolute', what);
      assert.ok(s.inside, what);
      assert.equal(s.image, 'none', what);
    }
    assert.equal(seen.headerCovered, false, what);
    assert.equal(seen.injected, 0, what);
    assert.equal(seen.pwned, null, what);
    assert.equal(seen.bodyDisplay, 'block', what);
    assert.ok(seen.avatarBackground && !['rgb(255, 0, 0)', 'rgba(0, 0, 0, 0)'].includes(seen.avatarBackground), what);
    assert.equal(seen.cursor.label, NAME); // the name, as text
  }

  // A well-formed colour is still used, on the caret and the avatar.
  await setBob(b, id, { color: '#0a8' });
  await a.waitForFunction((item) => {
    const el = document.querySelector(`[data-testid="card"][data-id="${item}"] [data-testid="note-cursor"][data-user="bob"]`);
    return el && getComputedStyle(el).backgroundColor === 'rgb(0, 170, 136)';
  }, id);
  assert.equal(await a.locator('[data-testid="presence-user"][data-user="bob"] .avatar')
    .evaluate((el) => getComputedStyle(el).backgroundColor), 'rgb(0, 170, 136)');

  // Caret data that is not a caret draws nothing and breaks nothing.
  for (const bad of [
    { card: id, pos: -1, end: 2, rev: 0 },
    { card: id, pos: 1e300, end: 1e300, rev: 0 },
    { card: id, pos: '1', end: '2', rev: '0' },
    { card: { toString: null }, pos: 0, end: 0, rev: 0 },
    { card: '__proto__', pos: 0, end: 0, rev: 0 },
    'x',
  ]) {
    await setBob(b, id, { note: bad, editing: '__proto__', color: '#0a8' });
    await cursor.waitFor({ state: 'detached' });
  }

  // A title with markup, from bob: shown as text on alice's page.
  await addCard(b, 'doing', TITLE);
  const shown = card(a, TITLE).locator('[data-testid="card-title"]');
  await shown.waitFor();
  assert.equal(await shown.textContent(), TITLE);
  assert.equal(await shown.evaluate((el) => el.childElementCount), 0);
  const final = await inspect(a, id);
  assert.equal(final.injected, 0);
  assert.equal(final.pwned, null);

  assert.deepEqual([...a.problems, ...b.problems], []);
});
