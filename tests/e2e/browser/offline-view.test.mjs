// offline-view.test.mjs -- while this page is offline it cannot know who is
// online or who still edits what: the others are shown as unknown (not
// online), and lock badges as stale ("was editing", not "is editing"). Back
// online, both are live again.
import assert from 'node:assert/strict';
import test from 'node:test';
import { addCard, artifactPath, cardById, launchBrowser, openBoard, startDemoServer, waitStatus } from './helpers.mjs';

const NOTICE_MS = 20000; // as offline.test.mjs: the client notices on its own

test('offline, the others show as unknown and lock badges as stale', { timeout: 60000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const { context: ctxA, page: a } = await openBoard(browser, srv, { user: 'alice' });
  const { page: b } = await openBoard(browser, srv, { user: 'bob' });

  const id = await addCard(a, 'todo', 'Busy');
  const cb = cardById(b, id);
  await cb.locator('[data-testid="card-edit"]').click();
  await cb.locator('[data-testid="title-input"]').waitFor({ state: 'visible' });

  const badge = cardById(a, id).locator('[data-testid="card-lock"]');
  const bobDot = a.locator('[data-testid="presence-user"][data-user="bob"] [data-testid="presence-device"]');
  const bobUser = a.locator('[data-testid="presence-user"][data-user="bob"]');
  await a.locator(`[data-testid="card"][data-id="${id}"][data-locked="true"]`).waitFor();
  assert.equal(await badge.textContent(), 'bob is editing');
  await a.locator('[data-testid="presence-user"][data-user="bob"] [data-testid="presence-device"][data-connected="true"]').waitFor();

  await ctxA.setOffline(true);
  await waitStatus(a, 'offline', NOTICE_MS);
  // Stale: the badge says what was known, not that bob is editing now.
  await a.waitForFunction((item) => !/is editing/.test(
    document.querySelector(`[data-testid="card"][data-id="${item}"] [data-testid="card-lock"]`).textContent,
  ), id).catch(async (err) => {
    throw new Error(`offline, the lock badge still says "${await badge.textContent()}"`, { cause: err });
  });
  assert.equal(await badge.getAttribute('data-stale'), 'true');
  const text = await badge.textContent();
  assert.doesNotMatch(text, /is editing/, text);
  assert.match(text, /bob/);
  assert.match(text, /was editing/);
  // Bob: not shown online, his device's state unknown.
  assert.equal(await bobDot.getAttribute('data-connected'), 'unknown');
  assert.match(await bobDot.getAttribute('title'), /unknown/);
  assert.equal(await bobUser.evaluate((el) => el.classList.contains('unknown')), true);
  await a.screenshot({ path: artifactPath('offline-view.png') });
  // Alice's own device shows disconnected.
  assert.equal(await a.locator('[data-testid="presence-user"][data-user="alice"] [data-testid="presence-device"]').getAttribute('data-connected'), 'false');

  await ctxA.setOffline(false);
  await waitStatus(a, 'online', NOTICE_MS);
  await a.locator(`[data-testid="card"][data-id="${id}"] [data-testid="card-lock"][data-stale="false"]`).waitFor();
  assert.equal(await badge.textContent(), 'bob is editing');
  await a.locator('[data-testid="presence-user"][data-user="bob"] [data-testid="presence-device"][data-connected="true"]').waitFor();
  assert.equal(await bobUser.evaluate((el) => el.classList.contains('unknown')), false);

  assert.deepEqual([...a.problems, ...b.problems], []);
});
