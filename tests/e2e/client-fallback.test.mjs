// client-fallback.test.mjs -- how the JavaScript client picks its transport
// (docs/PROTOCOL.md 2.4): WebSocket first; SSE when WebSocket cannot connect
// or opens and dies at once twice; long-polling when SSE fails too; the
// choice remembered in `storage` for a while, WebSocket tried again after it;
// forced transports; and what a refused hello does (3.1). The server is real;
// the failures are made on the client's side of the wire (a WebSocket class
// aimed elsewhere or killing its socket, a fetch that fails for /v1/sse).
import assert from 'node:assert/strict';
import test from 'node:test';

import { SERVER_ARGS, docOf, makeClient, online, sentOf, settled } from './lib/client-util.mjs';
import { waitUntil } from './lib/server.mjs';
import { startSyncServer, token } from './lib/sync.mjs';

function mapStorage() {
  const m = new Map();
  return {
    map: m,
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
    removeItem: (k) => m.delete(k),
  };
}

const memoryOf = (storage) => {
  const raw = storage.getItem('wsync.transport');
  return raw ? JSON.parse(raw) : null;
};

/** Two clients write and each sees the other's item. */
async function exchange(ra, rb, tag) {
  await ra.set(`${tag}-a`, { from: 'a' });
  await rb.set(`${tag}-b`, { from: 'b' });
  await settled([ra, rb]);
  assert.deepEqual(ra.get(`${tag}-b`), { from: 'b' });
  assert.deepEqual(rb.get(`${tag}-a`), { from: 'a' });
  assert.deepEqual(docOf(ra), docOf(rb));
}

let srv;
test.before(async () => {
  srv = await startSyncServer(null, SERVER_ARGS);
});
test.after(() => srv.stopChecked());

test('WebSocket cannot connect: SSE, remembered in storage; a later client skips WebSocket', async (t) => {
  const storage = mapStorage();
  let wsMade = 0;
  const broken = { url: (u) => u.replace('/v1/ws', '/v1/no-websocket-here'), created: () => wsMade++ };
  const a = makeClient(t, srv.url, { user: 'alice', storage, ws: broken, fallbackMemory: 60000 });
  const b = makeClient(t, srv.url, { user: 'bob' });
  const ra = a.room('board:fb1');
  const rb = b.room('board:fb1');
  await Promise.all([ra.ready, rb.ready]);
  assert.equal(b.transport, 'ws');
  assert.equal(a.transport, 'sse');
  assert.equal(wsMade, 1, 'WebSocket was tried first');
  const mem = memoryOf(storage);
  assert.equal(mem.transport, 'sse');
  assert.ok(mem.until > Date.now() + 30000 && mem.until <= Date.now() + 60000, `remembered for fallbackMemory: ${mem.until - Date.now()} ms`);
  await exchange(ra, rb, 'fb1');

  // The same storage (a reload): straight to SSE.
  await a.close();
  const a2 = makeClient(t, srv.url, { user: 'alice', storage, ws: broken, fallbackMemory: 60000 });
  await a2.room('board:fb1').ready;
  assert.equal(a2.transport, 'sse');
  assert.equal(wsMade, 1, 'no WebSocket attempt while the fallback is remembered');
  assert.deepEqual(a2.errors, []);
});

test('WebSocket opens and dies at once, twice: SSE; WebSocket is tried again once the memory ends', async (t) => {
  const storage = mapStorage();
  let flaky = true;
  let wsMade = 0;
  const hooks = {
    created: () => wsMade++,
    // A proxy that lets the upgrade through and kills the connection right
    // after the first message (the welcome).
    open: (ws) => flaky && ws.once('message', () => setTimeout(() => ws.terminate(), 5)),
  };
  const a = makeClient(t, srv.url, { user: 'alice', storage, ws: hooks, fallbackMemory: 1500 });
  const b = makeClient(t, srv.url, { user: 'bob' });
  const ra = a.room('board:fb2');
  const rb = b.room('board:fb2');
  await rb.ready;
  await waitUntil(() => a.transport === 'sse', `alice on SSE (now ${a.transport}, ${a.statuses.join(' ')})`);
  assert.equal(wsMade, 2, 'two quick deaths, then no more WebSocket');
  assert.equal(memoryOf(storage).transport, 'sse');
  await ra.ready;
  await exchange(ra, rb, 'fb2');

  // The proxy is fixed; when the memory runs out the client moves back.
  flaky = false;
  await waitUntil(() => a.transport === 'ws' && a.status === 'online', `alice back on WebSocket (now ${a.transport})`);
  assert.equal(memoryOf(storage), null, 'the memory is cleared once WebSocket works');
  assert.ok(a.welcomes.at(-1).resumed, 'moving between transports is a resume (2.4)');
  await exchange(ra, rb, 'fb2b');
  assert.deepEqual(a.errors, []);
});

test('SSE fails too: long-polling', async (t) => {
  const storage = mapStorage();
  const a = makeClient(t, srv.url, {
    user: 'alice',
    storage,
    ws: { url: (u) => u.replace('/v1/ws', '/v1/nope') },
    fetchHooks: {
      before: (url) => {
        if (url.includes('/v1/sse')) throw new TypeError('fetch failed (test: no event streams on this network)');
      },
    },
  });
  const b = makeClient(t, srv.url, { user: 'bob' });
  const ra = a.room('board:fb3');
  const rb = b.room('board:fb3');
  await Promise.all([ra.ready, rb.ready]);
  assert.equal(a.transport, 'poll');
  assert.equal(memoryOf(storage).transport, 'poll');
  await exchange(ra, rb, 'fb3');
  assert.deepEqual(a.errors, []);
});

test('forced transports are used alone', async (t) => {
  for (const transport of ['poll', 'sse', 'ws']) {
    let wsMade = 0;
    const c = makeClient(t, srv.url, { user: 'carol', transport, ws: { created: () => wsMade++ } });
    await c.room('board:forced').ready;
    assert.equal(c.transport, transport);
    assert.equal(wsMade, transport === 'ws' ? 1 : 0);
    await c.close();
  }
});

test('a refused hello: error event, offline, no retry with the same token', async (t) => {
  const a = makeClient(t, srv.url, { user: 'alice', token: 'not.a.jwt', transport: 'ws' });
  await waitUntil(() => a.errors.length > 0, 'the error');
  assert.equal(a.errors[0].code, 'token_invalid');
  await waitUntil(() => a.status === 'offline', 'offline');
  const hellos = sentOf(a, 'hello').length;
  // The room waits; nothing is retried until the application acts.
  const r = a.room('board:refused');
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(sentOf(a, 'hello').length, hellos);
  assert.equal(r.pendingCount, 0);
});

test('a token function is called at every hello (a reconnect gets a fresh one)', async (t) => {
  let calls = 0;
  const a = makeClient(t, srv.url, {
    user: 'alice',
    transport: 'ws',
    token: async () => {
      calls++;
      return token('alice');
    },
  });
  const ra = a.room('board:tokfn');
  await ra.ready;
  assert.equal(calls, 1);
  // Kill the socket under the client: it reconnects and resumes.
  const before = a.welcomes.length;
  a._current.ws.terminate();
  await waitUntil(() => a.welcomes.length > before && a.status === 'online', 'reconnected');
  await online(a);
  assert.equal(calls, 2);
  assert.equal(a.welcomes.at(-1).resumed, true);
});

test('an op over max_message is refused by the client itself, without losing the connection', async (t) => {
  const a = makeClient(t, srv.url, { user: 'alice', transport: 'ws' });
  const ra = a.room('board:big');
  await ra.ready;
  const welcomes = a.welcomes.length;
  const big = ra.set('big', { blob: 'x'.repeat(a.limits.max_message + 1) });
  const err = await big.then(() => assert.fail('resolved'), (e) => e);
  assert.equal(err.code, 'too_large');
  assert.equal(ra.get('big'), undefined, 'rolled back');
  assert.equal((await ra.set('small', { v: 1 })).seq, 1, 'the connection still works');
  assert.equal(a.welcomes.length, welcomes, 'no reconnect');
  assert.equal(sentOf(a, 'op').length, 1, 'the big op never went out');
});

test('a held lock is renewed at half its TTL; one taken with renew:false expires', async (t) => {
  const a = makeClient(t, srv.url, { user: 'alice', transport: 'ws' });
  const ra = a.room('board:renew');
  await ra.ready;
  const errors = [];
  ra.on('error', (e) => errors.push(e));
  const kept = await ra.lock('kept', { ttl: 1000 });
  await ra.lock('lapsed', { ttl: 1000, renew: false });
  await waitUntil(() => !ra.locks.has('lapsed'), 'the unrenewed lock expires', 10000);
  assert.deepEqual(errors.map((e) => [e.code, e.item, e.reason]), [['lock_lost', 'lapsed', 'expired']]);
  const renewals = () => sentOf(a, 'lock').filter((m) => m.item === 'kept').length - 1;
  await waitUntil(() => renewals() >= 3, 'three renewals');
  assert.equal(ra.locks.get('kept')?.user, 'alice', 'still held, long after its first TTL');
  assert.equal(ra.locks.get('kept').fence, kept.fence, 'renewals keep the fence');
  await ra.unlock('kept');
  assert.equal(ra.locks.has('kept'), false);
  const n = renewals();
  await new Promise((r) => setTimeout(r, 800));
  assert.equal(renewals(), n, 'no renewal after unlock');
});
