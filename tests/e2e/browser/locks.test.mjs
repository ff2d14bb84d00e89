// locks.test.mjs -- while one user edits a card's title, the card is locked
// for everybody else: they see who holds it and cannot edit, move or delete
// it; a write that reaches the server anyway is rolled back with a toast.
import assert from 'node:assert/strict';
import test from 'node:test';
import { addCard, card, converge, launchBrowser, openBoard, startDemoServer } from './helpers.mjs';

test('a card being edited is locked for the others', { timeout: 30000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const { page: a } = await openBoard(browser, srv, { user: 'alice' });
  const { page: b } = await openBoard(browser, srv, { user: 'bob' });

  const id = await addCard(a, 'todo', 'Contested');
  await card(b, 'Contested').waitFor();

  // Alice opens the title editor: it opens once her lock is granted.
  const ca = card(a, 'Contested');
  await ca.locator('[data-testid="card-edit"]').click();
  await ca.locator('[data-testid="title-input"]').waitFor({ state: 'visible' });
  await a.waitForFunction((item) => window.wsyncDemo.room.locks.has(item), id);

  // Bob sees it locked by alice, with every control that would write disabled.
  const cb = card(b, 'Contested');
  await b.locator(`[data-testid="card"][data-id="${id}"][data-locked="true"]`).waitFor();
  assert.match(await cb.locator('[data-testid="card-lock"]').textContent(), /alice/);
  for (const control of ['card-edit', 'card-delete', 'card-right']) {
    assert.equal(await cb.locator(`[data-testid="${control}"]`).isDisabled(), true, `${control} enabled on a locked card`);
  }
  // Clicking the title does not open the editor; a toast says who edits it.
  await cb.locator('[data-testid="card-title"]').click();
  await b.locator('[data-testid="toast"]', { hasText: 'alice is editing' }).waitFor();
  assert.equal(await cb.locator('[data-testid="title-input"]').isVisible(), false);
  // Alice's own card is not shown locked to her.
  assert.equal(await ca.getAttribute('data-locked'), 'false');

  // A write that gets past the UI (straight through the client) is refused by
  // the server and rolled back on Bob's side, with a toast.
  const refused = await b.evaluate((item) => window.wsyncDemo.room.set(item, { title: 'Bob was here' })
    .then(() => 'accepted', (err) => err.code || String(err)), id);
  assert.equal(refused, 'locked');
  await b.locator('[data-testid="toast"]', { hasText: 'rolled back' }).waitFor();
  await card(b, 'Contested').waitFor();

  // Alice saves: the new title reaches Bob and the lock is gone.
  await ca.locator('[data-testid="title-input"]').fill('Settled by Alice');
  await ca.locator('[data-testid="title-save"]').click();
  await b.locator(`[data-testid="card"][data-id="${id}"][data-title="Settled by Alice"][data-locked="false"]`).waitFor();

  // Now Bob can edit, and Alice sees his lock; he cancels and it is released.
  const cb2 = card(b, 'Settled by Alice');
  await cb2.locator('[data-testid="card-edit"]').click();
  await cb2.locator('[data-testid="title-input"]').waitFor({ state: 'visible' });
  await a.locator(`[data-testid="card"][data-id="${id}"][data-locked="true"]`).waitFor();
  assert.match(await card(a, 'Settled by Alice').locator('[data-testid="card-lock"]').textContent(), /bob/);
  await cb2.locator('[data-testid="title-cancel"]').click();
  await a.locator(`[data-testid="card"][data-id="${id}"][data-locked="false"]`).waitFor();

  await converge([a, b], (s) => s.todo.length === 1 && s.todo[0] === 'Settled by Alice');
  assert.deepEqual([...a.problems, ...b.problems], []);
});
