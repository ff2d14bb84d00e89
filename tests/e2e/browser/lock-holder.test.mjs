// lock-holder.test.mjs -- a lock outlives its holder's connection (a
// detached session keeps its locks while they have TTL left, PROTOCOL.md 9),
// and presence then shows the holder's device connected: false. The lock
// badge says so: "alice (disconnected) is editing", not "alice is editing";
// when alice is back, it says she is editing again.
//
// Alice's connection is lost with Chromium's offline emulation: her open
// WebSocket stays open but delivers nothing, so the server stops hearing
// pongs to its pings; with a short --ping-interval and --idle-timeout it
// closes the connection soon and detaches her session.
import assert from 'node:assert/strict';
import test from 'node:test';
import { addCard, artifactPath, cardById, launchBrowser, openBoard, startDemoServer, waitStatus } from './helpers.mjs';

const NOTICE_MS = 20000;

test("a lock badge shows the holder disconnected when their device is", { timeout: 60000 }, async (t) => {
  const srv = await startDemoServer(t, ['--ping-interval', '500ms', '--idle-timeout', '2s']);
  const browser = await launchBrowser(t);
  const { context: ctxA, page: a } = await openBoard(browser, srv, { user: 'alice' });
  const { page: b } = await openBoard(browser, srv, { user: 'bob' });

  const id = await addCard(a, 'todo', 'Held');
  const ca = cardById(a, id);
  await ca.locator('[data-testid="card-edit"]').click();
  await ca.locator('[data-testid="title-input"]').waitFor({ state: 'visible' });
  await a.waitForFunction((item) => window.wsyncDemo.room.locks.has(item), id);

  const badge = cardById(b, id).locator('[data-testid="card-lock"]');
  await b.locator(`[data-testid="card"][data-id="${id}"][data-locked="true"]`).waitFor();
  assert.equal(await badge.textContent(), 'alice is editing');

  // Alice's connection goes; the server detaches her session, keeping her lock.
  await ctxA.setOffline(true);
  await b.locator('[data-testid="presence-user"][data-user="alice"] [data-testid="presence-device"][data-connected="false"]')
    .waitFor({ timeout: NOTICE_MS });
  assert.equal(await b.evaluate((item) => window.wsyncDemo.room.locks.get(item)?.user, id), 'alice');
  await b.waitForFunction((item) => /disconnected/.test(
    document.querySelector(`[data-testid="card"][data-id="${item}"] [data-testid="card-lock"]`).textContent,
  ), id).catch(async (err) => {
    throw new Error(`alice's device shows disconnected, the badge says "${await badge.textContent()}"`, { cause: err });
  });
  assert.equal(await badge.textContent(), 'alice (disconnected) is editing');
  assert.equal(await badge.getAttribute('data-holder'), 'disconnected');
  assert.equal(await cardById(b, id).getAttribute('data-locked'), 'true'); // still locked: the server says so
  await b.screenshot({ path: artifactPath('lock-holder-disconnected.png') });

  // Back: her session resumes, the badge says she is editing.
  await ctxA.setOffline(false);
  await waitStatus(a, 'online', NOTICE_MS);
  await b.locator('[data-testid="presence-user"][data-user="alice"] [data-testid="presence-device"][data-connected="true"]')
    .waitFor({ timeout: NOTICE_MS });
  await b.locator(`[data-testid="card"][data-id="${id}"] [data-testid="card-lock"][data-holder="connected"]`).waitFor();
  assert.equal(await badge.textContent(), 'alice is editing');

  assert.deepEqual([...a.problems, ...b.problems], []);
});
