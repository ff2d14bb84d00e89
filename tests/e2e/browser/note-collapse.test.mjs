// note-collapse.test.mjs -- a card whose note is empty shows a small "add a
// note" line instead of an empty note box; clicking it opens the editor; a
// note with text is shown in full, on every page; emptied and left, it folds
// up again.
import assert from 'node:assert/strict';
import test from 'node:test';
import { addCard, artifactPath, cardById, launchBrowser, openBoard, startDemoServer } from './helpers.mjs';

const noteOf = (page, id) => cardById(page, id).locator('[data-testid="note-input"]');
const height = (loc) => loc.evaluate((el) => el.getBoundingClientRect().height);

/** Waits until the note's box is collapsed (small) or open (a full editor). */
async function waitNote(page, id, open) {
  await page.waitForFunction(([item, want]) => {
    const ta = document.querySelector(`[data-testid="card"][data-id="${item}"] [data-testid="note-input"]`);
    const h = ta && ta.getBoundingClientRect().height;
    return ta && (want ? h >= 40 : h > 0 && h <= 26);
  }, [id, open]);
}

test('empty notes are collapsed to an "add a note" line; notes with text are shown', { timeout: 40000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const { page: a } = await openBoard(browser, srv, { user: 'alice' });
  const { page: b } = await openBoard(browser, srv, { user: 'bob' });

  const ids = [];
  for (let i = 1; i <= 7; i++) ids.push(await addCard(a, 'todo', `Card ${i}`));
  await cardById(b, ids[6]).waitFor();

  // Seven cards, every note empty: each shows a one-line affordance, not a box.
  for (const p of [a, b]) {
    for (const id of ids) {
      const ta = noteOf(p, id);
      const h = await height(ta);
      assert.ok(h > 0 && h <= 26, `empty note of ${id} is ${h} px high`);
      assert.match(await ta.getAttribute('placeholder'), /add a note/i);
    }
  }
  await a.screenshot({ path: artifactPath('notes-collapsed.png') });

  // Clicking it opens the editor, focused; text typed there shows on both pages in full.
  const [first, second] = ids;
  await noteOf(a, first).click();
  await waitNote(a, first, true);
  assert.equal(await noteOf(a, first).evaluate((el) => el === document.activeElement), true);
  await a.keyboard.type('Remember the milk');
  await b.waitForFunction((item) => window.wsyncDemo.note(item)?.value === 'Remember the milk', first);
  await waitNote(b, first, true);
  // Left with text, it stays open.
  await noteOf(a, second).click();
  await waitNote(a, second, true);
  await waitNote(a, first, true);
  const open = await cardById(a, first).evaluate((el) => el.getBoundingClientRect().height);
  const folded = await cardById(a, ids[2]).evaluate((el) => el.getBoundingClientRect().height);
  assert.ok(folded + 20 <= open, `a card with an empty note (${folded} px) should be well shorter than one with a note (${open} px)`);

  // Opened and left empty, it folds up again.
  await a.locator('[data-testid="board"] h2').first().click();
  await waitNote(a, second, false);

  // Bob empties the first note: on alice's page (not in it) it folds up.
  await noteOf(b, first).click();
  await b.keyboard.press('Control+A');
  await b.keyboard.press('Backspace');
  await a.waitForFunction((item) => window.wsyncDemo.note(item)?.value === '', first);
  await waitNote(a, first, false);
  await waitNote(b, first, true); // bob is still in it
  await b.locator('[data-testid="board"] h2').first().click();
  await waitNote(b, first, false);

  assert.deepEqual([...a.problems, ...b.problems], []);
});
