// conflict.test.mjs -- offline edits that lose to others' edits are not lost
// silently. Alice goes offline and renames two cards; meanwhile Bob renames
// one of them and deletes the other. When Alice is back, Bob's edits stand
// (the demo writes with `base`, the version it saw, and the server refuses
// what moved since: `conflict` with the current item), Alice is told what
// happened, with Bob's value, and can keep hers; the deleted card does not
// come back by itself (before, it came back holding only a title, in
// another column). A reload afterwards shows the same board.
import assert from 'node:assert/strict';
import test from 'node:test';
import {
  addCard, card, converge, launchBrowser, moveCard, openBoard, renameCard, startDemoServer, waitStatus, WAIT,
} from './helpers.mjs';

const NOTICE_MS = 20000;

const conflicts = (page) => page.locator('[data-testid="conflict"]');

test('offline edit vs an online rename and delete: the loser is told, with the other value, and can keep theirs', { timeout: 90000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const { context: ctxA, page: a } = await openBoard(browser, srv, { user: 'alice' });
  const { page: b } = await openBoard(browser, srv, { user: 'bob' });

  await addCard(a, 'todo', 'Plan');
  await addCard(a, 'doing', 'Wash');
  await addCard(a, 'done', 'Calm');
  await converge([a, b], (s) => s.todo.length === 1 && s.doing.length === 1 && s.done.length === 1);
  const washId = await card(a, 'Wash').getAttribute('data-id');

  await ctxA.setOffline(true);
  await waitStatus(a, 'offline', NOTICE_MS);
  await renameCard(a, 'Plan', 'Plan by Alice');
  await renameCard(a, 'Wash', 'Wash by Alice');
  await moveCard(a, 'Calm', 'left'); // nobody else touches this one: it goes through
  assert.equal(await card(a, 'Plan by Alice').getAttribute('data-pending'), 'true');

  // Bob, online, renames the first card and deletes the second.
  await renameCard(b, 'Plan', 'Plan by Bob');
  await card(b, 'Wash').locator('[data-testid="card-delete"]').click();
  await card(b, 'Wash').waitFor({ state: 'detached' });
  await converge([b], (s) => s.todo.includes('Plan by Bob') && s.doing.length === 0);

  await ctxA.setOffline(false);
  await waitStatus(a, 'online', NOTICE_MS);

  // Bob's edits stand on both screens; Alice's non-conflicting move went through.
  let final = await converge([a, b], (s) => s.todo.includes('Plan by Bob') && s.doing.includes('Calm'));
  assert.deepEqual(final, { todo: ['Plan by Bob'], doing: ['Calm'], done: [] }, 'the deleted card did not come back');
  assert.equal(await b.locator(`[data-testid="card"][data-id="${washId}"]`).count(), 0);

  // Alice is told, once per lost edit, with the other value; Bob is told nothing.
  await conflicts(a).nth(1).waitFor();
  assert.equal(await conflicts(a).count(), 2);
  const renamed = conflicts(a).filter({ hasText: 'Plan by Bob' });
  assert.equal(await renamed.count(), 1, 'a message about the rename names the winning title');
  assert.match(await renamed.textContent(), /Plan by Alice/, 'and her own');
  const deleted = conflicts(a).filter({ hasText: 'deleted' });
  assert.equal(await deleted.count(), 1, 'a message about the deleted card');
  assert.match(await deleted.textContent(), /Wash by Alice/);
  assert.equal(await conflicts(b).count(), 0);

  // She keeps her title: it is written on top of Bob's, for both.
  await renamed.locator('[data-testid="conflict-keep"]').click();
  await renamed.waitFor({ state: 'detached' });
  final = await converge([a, b], (s) => s.todo.includes('Plan by Alice'));
  assert.deepEqual(final, { todo: ['Plan by Alice'], doing: ['Calm'], done: [] });
  // The deleted card's message is dismissed: the card stays deleted.
  await deleted.locator('[data-testid="conflict-dismiss"]').click();
  await deleted.waitFor({ state: 'detached' });

  await a.reload();
  await a.locator('[data-testid="board"][data-ready="true"]').waitFor({ timeout: WAIT });
  await waitStatus(a, 'online');
  final = await converge([a, b], (s) => s.todo.length === 1);
  assert.deepEqual(final, { todo: ['Plan by Alice'], doing: ['Calm'], done: [] }, 'after a reload too');
  assert.deepEqual([...a.problems, ...b.problems], []);
});

test('a card deleted meanwhile can be restored by the one whose edit lost, with all its fields', { timeout: 60000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const { context: ctxA, page: a } = await openBoard(browser, srv, { user: 'alice' });
  const { page: b } = await openBoard(browser, srv, { user: 'bob' });
  await addCard(a, 'doing', 'Keep');
  await converge([a, b], (s) => s.doing.length === 1);
  const id = await card(a, 'Keep').getAttribute('data-id');

  await ctxA.setOffline(true);
  await waitStatus(a, 'offline', NOTICE_MS);
  await renameCard(a, 'Keep', 'Keep it');
  await card(b, 'Keep').locator('[data-testid="card-delete"]').click();
  await converge([b], (s) => s.doing.length === 0);
  await ctxA.setOffline(false);
  await waitStatus(a, 'online', NOTICE_MS);

  const msg = conflicts(a).filter({ hasText: 'deleted' });
  await msg.waitFor();
  await converge([a, b], (s) => s.doing.length === 0);
  await msg.locator('[data-testid="conflict-keep"]').click();
  const final = await converge([a, b], (s) => s.doing.length === 1);
  assert.deepEqual(final, { todo: [], doing: ['Keep it'], done: [] }, 'back in its column, with her title');
  assert.equal(await card(b, 'Keep it').getAttribute('data-id'), id);
  assert.deepEqual([...a.problems, ...b.problems], []);
});
