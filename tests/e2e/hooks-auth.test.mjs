// hooks-auth.test.mjs -- the authorization hook (docs/HOOKS.md,
// PROTOCOL.md 3.1, 4.2, 11.2): --auth-hook asked on hello and on joins
// outside the token's grants (or every join), allow / deny / grants, the TTL
// cache, failing closed (timeout, 5xx, garbage: hook_unavailable, close
// 1013), the held session (its messages wait, other sessions do not), the
// signature, and the hello by POST /v1/send.
import assert from 'node:assert/strict';
import test from 'node:test';

import { signatureOk, startHookPeer } from './lib/hook-peer.mjs';
import { fetchMetrics, startSyncServer, SyncClient, token } from './lib/sync.mjs';

const HOOK_SECRET = 'e2e-hook-secret-0123456789abcdef0123';
const KEY = 'hooks-e2e-api-key-0123';
let devN = 0;
const dev = () => `d${process.pid}-${++devN}`;

/** A server whose --auth-hook is peer (plus extra flags). */
function serverFor(t, peer, extra = []) {
  return startSyncServer(t, ['--auth-hook', peer.url, '--hook-secret', HOOK_SECRET, '--auth-hook-timeout', '500ms',
    '--api-key', KEY,
    '--rate', '10000', '--burst', '10000', ...extra]);
}

/** Opens a connection, says hello with id 'h'; resolves {c, reply}. */
async function hello(url, user, grants, device = dev()) {
  const c = await SyncClient.open(url);
  const reply = await c.request({ type: 'hello', id: 'h', token: token(user, grants), device });
  return { c, reply };
}

test('hello: the hook is asked with the identity and the claims, signed', async (t) => {
  const peer = await startHookPeer(t, () => ({ body: { allow: true } }));
  const srv = await serverFor(t, peer);
  const device = dev();
  const { c, reply } = await hello(srv.url, 'alice', { 'board:*': 'rw' }, device);
  assert.equal(reply.type, 'welcome', JSON.stringify(reply));
  assert.equal(peer.calls.length, 1);
  const q = peer.calls[0];
  assert.equal(q.body.action, 'hello');
  assert.equal(q.body.user, 'alice');
  assert.equal(q.body.device, device);
  assert.equal(q.body.room, undefined);
  assert.equal(q.body.claims.sub, 'alice');
  assert.deepEqual(q.body.claims.grants, { 'board:*': 'rw' });
  assert.equal(q.headers['content-type'], 'application/json');
  assert.ok(signatureOk(HOOK_SECRET, q.headers, q.raw), 'the signature verifies with --hook-secret');
  assert.ok(!signatureOk('another-secret-0123456789abcdef0123', q.headers, q.raw), 'and not with another secret');
  assert.ok(Math.abs(Number(q.headers['wsync-timestamp']) - Date.now() / 1000) < 300, 'a current timestamp');
  await c.join('board:1'); // covered by the token: the hook is not asked
  assert.equal(peer.calls.length, 1);
  await c.close();
});

test('hello: a deny is forbidden with the reason, then close 1008', async (t) => {
  const peer = await startHookPeer(t, (b) => ({ body: { allow: b.user !== 'mallory', reason: 'mallory is suspended' } }));
  const srv = await serverFor(t, peer);
  const { c, reply } = await hello(srv.url, 'mallory');
  assert.equal(reply.type, 'error');
  assert.equal(reply.code, 'forbidden');
  assert.equal(reply.message, 'mallory is suspended');
  assert.equal((await c.closed()).code, 1008);
  const ok = await hello(srv.url, 'alice');
  assert.equal(ok.reply.type, 'welcome');
  await ok.c.close();
});

test('hello: timeout, 5xx and garbage fail closed with hook_unavailable and close 1013', async (t) => {
  const answers = {
    hang: () => ({ hang: true }),
    five: () => ({ status: 503, body: { allow: true } }),
    garbage: () => ({ body: 'allow: yes' }),
    noallow: () => ({ body: { grants: { '*': 'rw' } } }),
    badgrants: () => ({ body: { allow: true, grants: { 'bad pattern': 'rw' } } }),
    notfound: () => ({ status: 404, body: { allow: true } }),
    drop: () => ({ drop: true }),
    huge: () => ({ body: { allow: true, reason: 'x'.repeat(100 * 1024) } }),
    badttl: () => ({ body: { allow: true, ttl: 'forever' } }),
    array: () => ({ body: [true] }),
  };
  const peer = await startHookPeer(t, (b) => answers[b.user]());
  const srv = await serverFor(t, peer);
  for (const user of Object.keys(answers)) {
    const { c, reply } = await hello(srv.url, user);
    assert.equal(reply.type, 'error', `${user}: ${JSON.stringify(reply)}`);
    assert.equal(reply.code, 'hook_unavailable', user);
    assert.equal(reply.re, 'h');
    assert.ok(reply.retry_after > 0, 'retry_after says when to try again');
    assert.equal((await c.closed()).code, 1013, `${user}: close 1013 (try again later)`);
  }
  const m = await fetchMetrics(srv.url, KEY);
  assert.equal(m.get('wsync_hook_failures_total{hook="auth"}'), Object.keys(answers).length);
  // Failures are not cached: the next hello asks again and is let in.
  peer.setHandler(() => ({ body: { allow: true } }));
  const before = peer.calls.length;
  const { c, reply } = await hello(srv.url, 'five');
  assert.equal(reply.type, 'welcome');
  assert.equal(peer.calls.length, before + 1);
  await c.close();
});

test('hello: the session is held until the answer; other sessions are not', async (t) => {
  let release;
  const gate = new Promise((r) => { release = r; });
  const peer = await startHookPeer(t, async (b) => {
    if (b.user === 'slow') await gate;
    return { body: { allow: true } };
  });
  const srv = await serverFor(t, peer, ['--auth-hook-timeout', '10s']);
  const slow = await SyncClient.open(srv.url);
  const device = dev();
  // hello, then at once a join and an op: they wait behind the hello.
  const pHello = slow.request({ type: 'hello', id: 'h', token: token('slow'), device });
  const pJoin = slow.request({ type: 'join', room: 'doc:held' });
  const pOp = slow.request({ type: 'op', room: 'doc:held', cid: 'held-1', op: { kind: 'set', item: 'a', fields: { v: 1 } } });
  await new Promise((r) => setTimeout(r, 50));
  // Meanwhile another session is welcomed, joins and writes.
  const { c: fast, reply } = await hello(srv.url, 'fast');
  assert.equal(reply.type, 'welcome');
  await fast.join('doc:held');
  const ack = await fast.set('doc:held', 'fast-1', 'b', { v: 2 });
  assert.equal(ack.seq, 1);
  assert.equal(slow.log.length, 0, 'nothing was said to the held session yet');
  release();
  assert.equal((await pHello).type, 'welcome');
  assert.equal((await pJoin).type, 'joined');
  const a = await pOp;
  assert.equal(a.type, 'ack', JSON.stringify(a));
  assert.equal(a.seq, 2);
  const kinds = slow.log.map((m) => m.type);
  assert.deepEqual(kinds.slice(0, 2), ['welcome', 'joined'], 'in the order sent');
  await slow.close();
  await fast.close();
});

test('join: rooms outside the grants ask the hook; deny, allow with grants, allow without', async (t) => {
  const peer = await startHookPeer(t, (b) => {
    if (b.action === 'hello') return { body: { allow: true } };
    if (b.room === 'secret:1') return { body: { allow: false, reason: 'not a member of secret:1' } };
    if (b.room === 'team:1') return { body: { allow: true, grants: { 'team:*': 'r' } } };
    return { body: { allow: true } };
  });
  const srv = await serverFor(t, peer);
  const { c, reply } = await hello(srv.url, 'alice', { 'board:*': 'rw' });
  assert.equal(reply.type, 'welcome');
  const denied = await c.expectError({ type: 'join', room: 'secret:1' }, 'forbidden');
  assert.equal(denied.message, 'not a member of secret:1');
  assert.equal(denied.room, 'secret:1');
  const jq = peer.calls.find((k) => k.body.action === 'join');
  assert.equal(jq.body.user, 'alice');
  assert.equal(jq.body.room, 'secret:1');
  assert.equal(jq.body.claims.sub, 'alice');
  // Allowed with read-only grants for team:*: joined, writes refused, and
  // team:2 is then covered without asking.
  await c.join('team:1');
  await c.expectError({ type: 'op', room: 'team:1', cid: 't1', op: { kind: 'set', item: 'x', fields: {} } }, 'forbidden');
  const n = peer.calls.length;
  await c.join('team:2');
  assert.equal(peer.calls.length, n, 'team:2 is covered by the grants the hook gave');
  // Allowed without grants: the room is readable and writable.
  await c.join('misc:1');
  const ack = await c.set('misc:1', 'm1', 'x', { ok: true });
  assert.equal(ack.type, 'ack');
  // The private room is never asked about.
  const before = peer.calls.length;
  await c.join('user:alice');
  await c.expectError({ type: 'join', room: 'user:bob' }, 'forbidden');
  assert.equal(peer.calls.length, before);
  await c.close();
});

test('join: --auth-hook-joins all asks for every join, covered or not; failure is hook_unavailable', async (t) => {
  let down = false;
  const peer = await startHookPeer(t, (b) => {
    if (b.action === 'join' && down) return { hang: true };
    return { body: { allow: b.action === 'hello' || b.room !== 'board:2' } };
  });
  const srv = await serverFor(t, peer, ['--auth-hook-joins', 'all', '--auth-hook-timeout', '300ms']);
  const { c } = await hello(srv.url, 'alice', { 'board:*': 'rw' });
  await c.join('board:1');
  await c.expectError({ type: 'join', room: 'board:2' }, 'forbidden');
  assert.deepEqual(peer.calls.filter((k) => k.body.action === 'join').map((k) => k.body.room), ['board:1', 'board:2']);
  down = true;
  const e = await c.expectError({ type: 'join', room: 'board:3' }, 'hook_unavailable');
  assert.ok(e.retry_after > 0);
  await c.ping(); // the session goes on
  down = false;
  await c.join('board:3');
  await c.close();
});

test('cache: an answer is reused for its TTL, per user, device, token and room', async (t) => {
  const peer = await startHookPeer(t, (b) => ({ body: { allow: true, ttl: b.user === 'nottl' ? 0 : 60 } }));
  const srv = await serverFor(t, peer);
  const count = (pred) => peer.calls.filter((k) => pred(k.body)).length;
  const device = dev();
  const tok = token('alice', { 'board:*': 'rw' });
  for (let i = 0; i < 3; i++) {
    const c = await SyncClient.open(srv.url);
    assert.equal((await c.request({ type: 'hello', token: tok, device })).type, 'welcome');
    await c.join('other:1');
    await c.close();
  }
  assert.equal(count((b) => b.user === 'alice' && b.action === 'hello'), 1, 'one hello question for three hellos');
  assert.equal(count((b) => b.user === 'alice' && b.action === 'join'), 1, 'one join question for three joins');
  // Another device, another token: asked again.
  const c2 = await SyncClient.open(srv.url);
  assert.equal((await c2.request({ type: 'hello', token: tok, device: dev() })).type, 'welcome');
  await c2.close();
  assert.equal(count((b) => b.user === 'alice' && b.action === 'hello'), 2);
  const c3 = await SyncClient.open(srv.url);
  assert.equal((await c3.request({ type: 'hello', token: token('alice', { x: 'r' }), device })).type, 'welcome');
  await c3.close();
  assert.equal(count((b) => b.user === 'alice' && b.action === 'hello'), 3);
  // ttl 0 (or none): never cached.
  for (let i = 0; i < 2; i++) {
    const { c } = await hello(srv.url, 'nottl', {}, device);
    await c.close();
  }
  assert.equal(count((b) => b.user === 'nottl'), 2);
  const m = await fetchMetrics(srv.url, KEY);
  assert.equal(m.get('wsync_hook_requests_total{hook="auth"}'), peer.calls.length, 'every question counted');
  assert.equal(m.get('wsync_auth_hook_cache_hits_total'), 4, 'two hellos and two joins answered from the cache');
  assert.equal(m.get('wsync_hook_failures_total{hook="auth"}'), 0);
});

test('cache: a cached deny refuses without asking; the cache is bounded', async (t) => {
  const peer = await startHookPeer(t, (b) => ({ body: { allow: b.user !== 'eve', ttl: 60 } }));
  const srv = await serverFor(t, peer, ['--auth-hook-cache', '2']);
  const device = dev();
  const tok = token('eve');
  for (let i = 0; i < 2; i++) {
    const c = await SyncClient.open(srv.url);
    const r = await c.request({ type: 'hello', token: tok, device });
    assert.equal(r.code, 'forbidden');
    await c.closed();
  }
  assert.equal(peer.calls.length, 1);
  // Two more answers push eve's out of a cache of two: asked again.
  for (const u of ['u1', 'u2']) {
    const { c } = await hello(srv.url, u);
    await c.close();
  }
  const c = await SyncClient.open(srv.url);
  assert.equal((await c.request({ type: 'hello', token: tok, device })).code, 'forbidden');
  assert.equal(peer.calls.filter((k) => k.body.user === 'eve').length, 2);
});

test('hello by POST /v1/send waits for the hook: 200 welcome, 403 forbidden, 503 hook_unavailable', async (t) => {
  const peer = await startHookPeer(t, async (b) => {
    await new Promise((r) => setTimeout(r, 30));
    if (b.user === 'down') return { status: 500 };
    return { body: { allow: b.user !== 'mallory' } };
  });
  const srv = await serverFor(t, peer);
  const post = (user, grants) => fetch(`${srv.url}/v1/send`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ type: 'hello', token: token(user, grants), device: dev() }),
  });
  const ok = await post('alice', { 'board:*': 'rw' });
  assert.equal(ok.status, 200);
  const w = await ok.json();
  assert.equal(w.type, 'welcome');
  const no = await post('mallory');
  assert.equal(no.status, 403);
  assert.equal((await no.json()).code, 'forbidden');
  const down = await post('down');
  assert.equal(down.status, 503);
  assert.equal((await down.json()).code, 'hook_unavailable');
  // The welcomed session works over the HTTP transport; a join the hook is
  // asked about (a slow answer) is answered on the downstream, in order
  // with what the same POST carried after it.
  peer.setHandler(async (b) => {
    await new Promise((r) => setTimeout(r, 100));
    return { body: { allow: b.room !== 'secret:1' } };
  });
  const r = await fetch(`${srv.url}/v1/send`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'Wsync-Session': w.session },
    body: JSON.stringify([{ type: 'join', id: 1, room: 'secret:1' }, { type: 'join', id: 2, room: 'other:1' },
      { type: 'ping', id: 3 }]),
  });
  assert.equal(r.status, 202, 'the POST is not held: its replies travel the downstream');
  const got = [];
  let last = 0;
  while (got.length < 3) {
    const p = await fetch(`${srv.url}/v1/poll?session=${encodeURIComponent(w.session)}&last=${last}`);
    assert.equal(p.status, 200);
    const body = await p.json();
    got.push(...body.messages);
    last = body.last;
  }
  assert.deepEqual(got.map((m) => [m.type, m.re, m.code]), [['error', 1, 'forbidden'], ['joined', 2, undefined], ['pong', 3, undefined]]);
});

test('options: bad --auth-hook, --auth-hook-joins and --hook-secret are refused at start', async () => {
  const { runCli } = await import('./lib/server.mjs');
  for (const [args, what] of [
    [['--auth-hook', 'ftp://x'], '--auth-hook'],
    [['--auth-hook', 'http://127.0.0.1:9/h', '--auth-hook-joins', 'some'], '--auth-hook-joins'],
    [['--hook-secret', 'short'], '--hook-secret'],
    [['--op-hook', 'nopattern'], '--op-hook'],
    [['--op-hook', 'bad pattern=http://127.0.0.1:9/'], '--op-hook'],
  ]) {
    const r = runCli(['serve', '--listen', '127.0.0.1:0', ...args]);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(what));
  }
});

test('resume: rooms the hook let the session into stay joined; the new hello is asked too', async (t) => {
  const peer = await startHookPeer(t, () => ({ body: { allow: true } }));
  const srv = await serverFor(t, peer);
  const device = dev();
  const tok = token('alice', { 'board:*': 'rw' });
  const c = await SyncClient.connect(srv.url, { token: tok, device });
  await c.join('team:9'); // outside the token's grants: the hook allowed it
  await c.set('team:9', 't1', 'x', { v: 1 });
  await c.drop();
  const c2 = await SyncClient.open(srv.url);
  const w = await c2.request({ type: 'hello', token: tok, device, session: c.welcome.session, last: c.received });
  assert.equal(w.type, 'welcome', JSON.stringify(w));
  assert.equal(w.resumed, true);
  assert.deepEqual(w.rooms, ['team:9'], 'still a member: the grant the hook gave outlives the connection');
  await c2.ping();
  assert.equal(c2.queue.filter((m) => m.type === 'left').length, 0, 'not removed as forbidden');
  const ack = await c2.set('team:9', 't2', 'x', { v: 2 });
  assert.equal(ack.type, 'ack');
  assert.equal(peer.calls.filter((k) => k.body.action === 'hello').length, 2, 'the resume asked the hook');
  await c2.close();
});
