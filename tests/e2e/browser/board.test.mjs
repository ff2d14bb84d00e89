// board.test.mjs -- two browsers on one board: what one does, the other sees;
// concurrent edits from both converge to the same board; presence shows both.
import assert from 'node:assert/strict';
import test from 'node:test';
import {
  addCard, artifactPath, card, converge, launchBrowser, moveCard, openBoard, renameCard,
  shownBoard, shownTitles, startDemoServer,
} from './helpers.mjs';

test('two contexts: create, edit, move, delete, concurrent edits converge', { timeout: 40000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const { page: a } = await openBoard(browser, srv, { user: 'alice' });
  const { page: b } = await openBoard(browser, srv, { user: 'bob' });

  // Presence: each sees both users, each with one connected device.
  for (const p of [a, b]) {
    for (const u of ['alice', 'bob']) {
      await p.locator(`[data-testid="presence-user"][data-user="${u}"] [data-testid="presence-device"][data-connected="true"]`).waitFor();
    }
  }

  // Alice creates and edits; Bob sees it.
  await addCard(a, 'todo', 'Write the spec');
  await addCard(a, 'todo', 'Build the server');
  await addCard(a, 'doing', 'Draft');
  await card(b, 'Build the server').waitFor();
  await renameCard(a, 'Draft', 'Draft v2');
  await card(b, 'Draft v2').waitFor();
  await moveCard(a, 'Write the spec', 'right');
  await b.locator('[data-testid="column"][data-col="doing"] [data-testid="card"][data-title="Write the spec"]').waitFor();
  await converge([a, b], (s) => s.todo.length === 1 && s.doing.length === 2);

  // Bob deletes a card; Alice sees it go.
  await card(b, 'Draft v2').locator('[data-testid="card-delete"]').click();
  await card(a, 'Draft v2').waitFor({ state: 'detached' });

  // Drag and drop: Alice drags "Build the server" onto the done column.
  await card(a, 'Build the server').dragTo(a.locator('[data-testid="column"][data-col="done"] [data-testid="cards"]'));
  await b.locator('[data-testid="column"][data-col="done"] [data-testid="card"][data-title="Build the server"]').waitFor();

  // Both at once: each adds cards, renames, and both move the same card in
  // opposite directions (where it ends depends on the interleaving; the
  // server's order decides, the same on both).
  await Promise.all([
    (async () => {
      await addCard(a, 'todo', 'A1');
      await addCard(a, 'done', 'A2');
      await moveCard(a, 'Write the spec', 'right'); // doing -> done
      await renameCard(a, 'A1', 'A1 renamed');
    })(),
    (async () => {
      await addCard(b, 'todo', 'B1');
      await addCard(b, 'doing', 'B2');
      await moveCard(b, 'Write the spec', 'left'); // doing -> todo
      await renameCard(b, 'B2', 'B2 renamed');
    })(),
  ]);
  const final = await converge([a, b], (s) => Object.values(s).flat().length === 6);
  const titles = Object.values(final).flat().sort();
  assert.deepEqual(titles, ['A1 renamed', 'A2', 'B1', 'B2 renamed', 'Build the server', 'Write the spec']);
  // Same ids in the same order, not only the same titles.
  assert.deepEqual(await shownBoard(a), await shownBoard(b));

  // A reload keeps the board (it comes from the server) and the device (sessionStorage).
  const device = await a.evaluate(() => window.wsyncDemo.device);
  await a.reload();
  await a.locator('[data-testid="board"][data-ready="true"]').waitFor();
  await converge([a, b], (s) => Object.values(s).flat().length === 6);
  assert.equal(await a.evaluate(() => window.wsyncDemo.device), device);

  await a.screenshot({ path: artifactPath('board.png') });
  await a.setViewportSize({ width: 380, height: 800 });
  await a.screenshot({ path: artifactPath('board-narrow.png'), fullPage: true });
  // Narrow: the columns stack, none is cut off horizontally.
  const overflow = await a.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.equal(overflow, 0, 'horizontal overflow in a 380 px wide window');

  assert.deepEqual([...a.problems, ...b.problems], []);
  assert.deepEqual(await shownTitles(b), final);
});

test('two tabs of one browser are two devices of one user', { timeout: 20000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const { context, page: one } = await openBoard(browser, srv, { user: 'carol' });
  const two = await context.newPage();
  await two.goto(`${srv.url}/?user=carol`);
  await two.locator('[data-testid="board"][data-ready="true"]').waitFor();
  const devices = await Promise.all([one, two].map((p) => p.evaluate(() => window.wsyncDemo.device)));
  assert.notEqual(devices[0], devices[1]);
  for (const p of [one, two]) {
    for (const d of devices) {
      await p.locator(`[data-testid="presence-user"][data-user="carol"] [data-testid="presence-device"][data-device="${d}"][data-connected="true"]`).waitFor();
    }
  }
  // Closing one tab: the other sees that device go (bye on pagehide).
  await two.close();
  await one.locator(`[data-testid="presence-device"][data-device="${devices[1]}"]`).waitFor({ state: 'detached' });
  assert.deepEqual(one.problems, []);
});
