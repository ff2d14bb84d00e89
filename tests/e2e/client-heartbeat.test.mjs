// client-heartbeat.test.mjs -- a network that silently drops packets (no FIN,
// no RST: a dead Wi-Fi, a NAT that forgot the flow) is noticed by the
// client's own heartbeat (a `ping` after a quiet interval, PROTOCOL.md 3.7)
// within 10 s with the default settings, on every transport; the client
// goes offline, and comes back, resuming its session, once packets flow
// again. The network is a loopback TCP proxy that stops forwarding.
import assert from 'node:assert/strict';
import test from 'node:test';

import { SERVER_ARGS, makeClient, online, sentOf, startProxy, waitUntil } from './lib/client-util.mjs';
import { scale } from './lib/server.mjs';
import { startSyncServer } from './lib/sync.mjs';

// The promise of the default heartbeat: a dead connection is found out
// within 10 s. The slack covers timer granularity and a loaded machine.
const DETECT_MS = 10000;
const SLACK_MS = scale(1500, 3000);
// Once packets flow again, the attempt waiting in the proxy goes through
// (or the next one, after a backoff of at most 400 ms in these tests).
const BACK_MS = scale(5000, 15000);

for (const transport of ['ws', 'sse', 'poll']) {
  test(`${transport}: a silently dead network is noticed within ${DETECT_MS / 1000} s and the session resumes after it`, { timeout: 40000 }, async (t) => {
    const srv = await startSyncServer(t, SERVER_ARGS);
    const proxy = await startProxy(t, srv.port);
    const a = makeClient(t, proxy.url, { user: 'alice', transport }); // default heartbeat
    const b = makeClient(t, srv.url, { user: 'bob' });
    const ra = a.room('hb:1');
    const rb = b.room('hb:1');
    await Promise.all([ra.ready, rb.ready]);
    await ra.set('x', { n: 1 });
    await waitUntil(() => rb.get('x')?.n === 1, 'bob sees x');
    const welcomes = a.welcomes.length;

    proxy.blackhole();
    const t0 = Date.now();
    await waitUntil(() => a.status !== 'online', `${transport} client noticing the dead network (status ${a.status})`, DETECT_MS + SLACK_MS);
    const noticed = Date.now() - t0;
    t.diagnostic(`${transport}: offline after ${noticed} ms`);
    assert.ok(sentOf(a, 'ping').length >= 1, 'the client sent pings');
    assert.ok(sentOf(a, 'ping').every((m) => m.id !== undefined), 'every ping has an id, for the pong to name');

    // Both write while the network is dead.
    await rb.set('y', { from: 'bob' });
    const mine = ra.set('z', { from: 'alice' });

    proxy.forward();
    const t1 = Date.now();
    await online(a, `${transport} client back online`);
    t.diagnostic(`${transport}: online ${Date.now() - t1} ms after the network came back`);
    assert.ok(Date.now() - t1 <= BACK_MS, `back online within ${BACK_MS} ms, took ${Date.now() - t1}`);
    await mine;
    await waitUntil(() => ra.get('y')?.from === 'bob' && rb.get('z')?.from === 'alice', 'both writes on both sides');
    assert.ok(a.welcomes.length > welcomes, 'a new welcome');
    assert.equal(a.welcomes.at(-1).resumed, true, 'the session was resumed');
  });
}

test('heartbeat: the interval and timeout are configurable, and false turns it off', { timeout: 30000 }, async (t) => {
  const srv = await startSyncServer(t, SERVER_ARGS);
  const proxy = await startProxy(t, srv.port);
  const fast = makeClient(t, proxy.url, { user: 'alice', heartbeat: { interval: 300, timeout: 300 } });
  const off = makeClient(t, proxy.url, { user: 'carol', heartbeat: false });
  await Promise.all([fast.room('hb:2').ready, off.room('hb:2').ready]);
  const pings = sentOf(off, 'ping').length;
  proxy.blackhole();
  const t0 = Date.now();
  await waitUntil(() => fast.status !== 'online', 'the fast heartbeat noticing', 3000);
  t.diagnostic(`interval 300 + timeout 300: offline after ${Date.now() - t0} ms`);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(off.status, 'online', 'without a heartbeat nothing is noticed');
  assert.equal(sentOf(off, 'ping').length, pings, 'and no ping is sent');
  proxy.forward();
  await online(fast);
});
