// persist.test.mjs -- changes made while the server is unreachable survive a
// reload: the demo keeps every unconfirmed change in IndexedDB (the client's
// persist option), note edits included, and sends them once it is back.
//
// The page must load while the sync endpoints stay unreachable: Chromium's
// offline emulation would stop the reload itself, so after the edits the
// test cuts only /v1/ws, /v1/sse, /v1/poll and /v1/send (routes), brings the
// context back online, lets the page reload from the server, and opens the
// routes again later.
import assert from 'node:assert/strict';
import test from 'node:test';
import {
  addCard, card, converge, launchBrowser, openBoard, renameCard, startDemoServer, waitStatus, WAIT,
} from './helpers.mjs';

const NOTICE_MS = 20000;
const SYNC = /\/v1\/(ws|sse|poll|send)/;

/**
 * Routes the sync endpoints (not the static files) of a context through a
 * switch: cut() makes them fail like an unreachable server, reopen() lets
 * them through again. Set up before the page exists (Playwright patches a
 * page's WebSocket when it is made).
 */
async function syncSwitch(context) {
  let cut = false;
  await context.routeWebSocket(SYNC, (ws) => {
    if (cut) ws.close({ code: 1011, reason: 'cut by the test' });
    else ws.connectToServer();
  });
  await context.route(SYNC, (route) => (cut ? route.abort('connectionrefused') : route.continue()));
  return { cut: () => { cut = true; }, reopen: () => { cut = false; } };
}

const noteOf = (page, id) => page.evaluate((cid) => window.wsyncDemo.note(cid), id);

test('offline title and note edits survive a reload and reach the server', { timeout: 90000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  let sw;
  const { context: ctxA, page: a } = await openBoard(browser, srv, { user: 'alice', setup: async (c) => { sw = await syncSwitch(c); } });
  const { page: b } = await openBoard(browser, srv, { user: 'bob' });
  await addCard(a, 'todo', 'Before');
  await converge([a, b], (s) => s.todo.length === 1);
  const id = await card(a, 'Before').getAttribute('data-id');
  const note = a.locator(`[data-testid="card"][data-id="${id}"] [data-testid="note-input"]`);
  await note.click();
  await note.pressSequentially('online. ');
  await b.waitForFunction((cid) => window.wsyncDemo.note(cid)?.value === 'online. ', id, { timeout: WAIT });

  await ctxA.setOffline(true);
  await waitStatus(a, 'offline', NOTICE_MS);
  // The note first: its op goes first and moves the card's version, so the
  // rename (made on the version before) is refused as a conflict with her
  // own edit, and must be written again silently, after the reload too.
  await note.click();
  await note.press('End');
  await note.pressSequentially('typed offline');
  await renameCard(a, 'Before', 'Renamed offline');
  assert.equal((await noteOf(a, id)).value, 'online. typed offline');
  assert.notEqual((await noteOf(a, id)).state, 'synchronized');
  assert.equal(await card(a, 'Renamed offline').getAttribute('data-pending'), 'true');

  // The page reloads while the sync server stays unreachable.
  sw.cut();
  await ctxA.setOffline(false);
  await a.reload();
  await a.locator('[data-testid="status"]').waitFor();
  await a.waitForFunction(() => window.wsyncDemo && window.wsyncDemo.client.status !== 'online', null, { timeout: WAIT });
  // Nothing reached the server meanwhile.
  assert.deepEqual(await converge([b], (s) => s.todo.length === 1), { todo: ['Before'], doing: [], done: [] });
  assert.equal((await noteOf(b, id)).value, 'online. ');

  sw.reopen();
  await waitStatus(a, 'online', NOTICE_MS);
  const final = await converge([a, b], (s) => s.todo.includes('Renamed offline')).catch(async (err) => {
    const toasts = await a.locator('[data-testid="toasts"]').textContent();
    throw new Error(`${err.message}\nalice's messages: ${toasts}`, { cause: err });
  });
  assert.deepEqual(final, { todo: ['Renamed offline'], doing: [], done: [] });
  await b.waitForFunction((cid) => window.wsyncDemo.note(cid)?.value === 'online. typed offline', id, { timeout: WAIT })
    .catch(async (err) => { throw new Error(`bob's note: ${JSON.stringify(await noteOf(b, id))}`, { cause: err }); });
  await a.waitForFunction((cid) => window.wsyncDemo.note(cid)?.state === 'synchronized', id, { timeout: WAIT });
  assert.equal((await noteOf(a, id)).value, 'online. typed offline', 'once, not twice');
  assert.equal(await a.locator('[data-testid="conflict"]').count(), 0, 'no conflict with her own note edit');
  assert.deepEqual([...a.problems, ...b.problems], []);
});

test('a page that cannot keep unsynced changes asks before it is left', { timeout: 60000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const context = await browser.newContext();
  // No IndexedDB here (as in some private modes): nothing can be kept.
  await context.addInitScript(() => {
    Object.defineProperty(window, 'indexedDB', { get() { return undefined; }, configurable: true });
  });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  await page.goto(`${srv.url}/?user=carol`);
  await page.locator('[data-testid="board"][data-ready="true"]').waitFor();
  await waitStatus(page, 'online');
  const asks = () => page.evaluate(() => {
    const e = new Event('beforeunload', { cancelable: true });
    dispatchEvent(e);
    return e.defaultPrevented;
  });
  await addCard(page, 'todo', 'Synced');
  await converge([page], (s) => s.todo.length === 1);
  assert.equal(await asks(), false, 'nothing unsynced: no question');
  await context.setOffline(true);
  await waitStatus(page, 'offline', NOTICE_MS);
  await renameCard(page, 'Synced', 'Unsynced');
  assert.equal(await asks(), true, 'unsynced and not kept: the page asks');
  await context.setOffline(false);
  await waitStatus(page, 'online', NOTICE_MS);
  await converge([page], (s) => s.todo.includes('Unsynced'));
  assert.equal(await asks(), false, 'synced again: no question');

  // With IndexedDB (the other test's pages), unsynced changes are kept: no question.
  const { context: ctxD, page: d } = await openBoard(browser, srv, { user: 'dave' });
  await ctxD.setOffline(true);
  await waitStatus(d, 'offline', NOTICE_MS);
  await renameCard(d, 'Unsynced', 'Kept');
  const dAsks = await d.evaluate(() => {
    const e = new Event('beforeunload', { cancelable: true });
    dispatchEvent(e);
    return e.defaultPrevented;
  });
  assert.equal(dAsks, false, 'kept in IndexedDB: no question');
  await ctxD.setOffline(false);
});
