// transports.test.mjs -- the board with the transport forced by ?transport=:
// SSE and long-polling (PROTOCOL.md 2.4), each beside a WebSocket peer.
import assert from 'node:assert/strict';
import test from 'node:test';
import { addCard, card, converge, launchBrowser, moveCard, openBoard, renameCard, startDemoServer } from './helpers.mjs';

/**
 * The fallback endpoint answers: every build has /v1/sse and /v1/poll, and an
 * unknown session there is 410 session_expired (PROTOCOL.md 2.4). A 404 means
 * the route is gone, which must fail the test, not skip it.
 */
async function assertEndpoint(srv, p) {
  const res = await fetch(`${srv.url}${p}?session=x&last=0`);
  const body = await res.text();
  assert.equal(res.status, 410, `${p} with an unknown session: ${res.status} ${body.slice(0, 200)}`);
  assert.match(body, /session_expired/, `${p} with an unknown session`);
}

for (const transport of ['sse', 'poll']) {
  test(`the board works with ?transport=${transport}`, { timeout: 30000 }, async (t) => {
    const srv = await startDemoServer(t);
    const endpoint = transport === 'sse' ? '/v1/sse' : '/v1/poll';
    await assertEndpoint(srv, endpoint);
    const browser = await launchBrowser(t);
    const { page: a } = await openBoard(browser, srv, { user: 'alice', transport });
    const { page: b } = await openBoard(browser, srv, { user: 'bob' });

    assert.equal(await a.evaluate(() => window.wsyncDemo.client.transport), transport);
    assert.match(await a.locator('[data-testid="transport"]').textContent(), new RegExp(`^${transport}`));
    assert.equal(await b.evaluate(() => window.wsyncDemo.client.transport), 'ws');

    // Both directions, and presence across transports.
    await addCard(a, 'todo', `via ${transport}`);
    await card(b, `via ${transport}`).waitFor();
    await addCard(b, 'todo', 'via ws');
    await card(a, 'via ws').waitFor();
    await renameCard(a, 'via ws', 'via ws, renamed over the fallback');
    await moveCard(b, `via ${transport}`, 'right');
    await a.locator(`[data-testid="column"][data-col="doing"] [data-testid="card"][data-title="via ${transport}"]`).waitFor();
    await b.locator('[data-testid="presence-user"][data-user="alice"] [data-testid="presence-device"][data-connected="true"]').waitFor();

    // Locks travel over the fallback too.
    const cb = card(b, 'via ws, renamed over the fallback');
    await cb.locator('[data-testid="card-edit"]').click();
    await cb.locator('[data-testid="title-input"]').waitFor({ state: 'visible' });
    await a.locator('[data-testid="card"][data-title="via ws, renamed over the fallback"][data-locked="true"]').waitFor();
    await cb.locator('[data-testid="title-cancel"]').click();
    await a.locator('[data-testid="card"][data-title="via ws, renamed over the fallback"][data-locked="false"]').waitFor();

    await converge([a, b], (s) => s.todo.length === 1 && s.doing.length === 1);
    assert.deepEqual([...a.problems, ...b.problems], []);
  });
}
