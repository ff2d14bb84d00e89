// hooks-op.test.mjs -- the write validation hook (docs/HOOKS.md "Op
// hook", PROTOCOL.md 5.3, 11.2): --op-hook PATTERN=URL sees every op of a
// matching room before it is sequenced: accept, reject with a code and a
// message (relayed as `rejected` with `reason`), accept with the op
// replaced; a timeout or a bad answer is hook_unavailable (retryable, same
// cid); a room's ops keep their order while one waits, batches included;
// ops of other rooms do not wait.
import assert from 'node:assert/strict';
import test from 'node:test';

import { signatureOk, startHookPeer } from './lib/hook-peer.mjs';
import { fetchMetrics, snapshotOf, startSyncServer, SyncClient, token } from './lib/sync.mjs';

const HOOK_SECRET = 'e2e-hook-secret-0123456789abcdef0123';
let devN = 0;
const dev = () => `d${process.pid}-${++devN}`;

function serverFor(t, url, extra = []) {
  return startSyncServer(t, ['--op-hook', `checked:*=${url}`, '--hook-secret', HOOK_SECRET, '--api-key', 'hooks-e2e-api-key-0123',
    '--op-hook-timeout', '400ms', '--rate', '100000', '--burst', '100000', ...extra]);
}

const connect = (url, user = 'alice') => SyncClient.connect(url, { token: token(user), device: dev() });

test('accept: the hook sees the op, signed, and the op is sequenced as sent', async (t) => {
  const peer = await startHookPeer(t, () => ({ body: { result: 'accept' } }));
  const srv = await serverFor(t, peer.url);
  const c = await connect(srv.url);
  await c.join('checked:1');
  const op = { kind: 'set', item: 'card', fields: { title: 'hi' } };
  const ack = await c.request({ type: 'op', room: 'checked:1', cid: 'a1', op });
  assert.equal(ack.type, 'ack');
  assert.equal(ack.seq, 1);
  assert.equal(peer.calls.length, 1);
  const q = peer.calls[0];
  assert.deepEqual(q.body, { action: 'op', room: 'checked:1', user: 'alice', device: c.welcome.device, cid: 'a1', op });
  assert.ok(signatureOk(HOOK_SECRET, q.headers, q.raw));
  // Rooms that match no pattern are not asked.
  await c.join('free:1');
  await c.set('free:1', 'f1', 'x', { v: 1 });
  assert.equal(peer.calls.length, 1);
  await c.close();
});

test('reject: the client gets rejected with the hook\'s code and message; nothing is stored', async (t) => {
  const peer = await startHookPeer(t, (b) => (b.op.fields && b.op.fields.title && b.op.fields.title.length > 5
    ? { body: { result: 'reject', code: 'title_too_long', message: 'titles are at most 5 characters' } }
    : { body: { result: 'accept' } }));
  const srv = await serverFor(t, peer.url);
  const c = await connect(srv.url);
  await c.join('checked:rej');
  const e = await c.request({ type: 'op', id: 9, room: 'checked:rej', cid: 'r1', op: { kind: 'set', item: 'x', fields: { title: 'much too long' } } });
  assert.equal(e.type, 'error');
  assert.equal(e.code, 'rejected');
  assert.equal(e.reason, 'title_too_long');
  assert.equal(e.message, 'titles are at most 5 characters');
  assert.equal(e.re, 9);
  assert.equal(e.for, 'op');
  assert.equal(e.room, 'checked:rej');
  assert.equal(e.cid, 'r1');
  const ok = await c.set('checked:rej', 'r2', 'x', { title: 'ok' });
  assert.equal(ok.seq, 1, 'the rejected op took no seq');
  const snap = await snapshotOf(srv.url, 'checked:rej');
  assert.deepEqual(snap.items.x.fields, { title: 'ok' });
  await c.close();
});

test('rewrite: an accept with an op replaces the op before the room decides it', async (t) => {
  const peer = await startHookPeer(t, (b) => {
    if (b.op.kind !== 'set') return { body: { result: 'accept' } };
    const fields = { ...b.op.fields, title: String(b.op.fields.title).trim().toUpperCase(), by: b.user };
    return { body: { result: 'accept', op: { ...b.op, fields } } };
  });
  const srv = await serverFor(t, peer.url);
  const a = await connect(srv.url);
  const b = await connect(srv.url, 'bob');
  await a.join('checked:rw');
  await b.join('checked:rw');
  const ack = await a.set('checked:rw', 'w1', 'card', { title: '  ship it ' });
  const entry = await b.entry('checked:rw', ack.seq);
  assert.deepEqual(entry.op.fields, { title: 'SHIP IT', by: 'alice' }, 'the broadcast carries the changed fields');
  const snap = await snapshotOf(srv.url, 'checked:rw');
  assert.deepEqual(snap.items.card.fields, { title: 'SHIP IT', by: 'alice' });
  // A replacement the room refuses is refused like the client's own op.
  peer.setHandler(() => ({ body: { result: 'accept', op: { kind: 'del', item: 'nope' } } }));
  const e = await a.request({ type: 'op', room: 'checked:rw', cid: 'w2', op: { kind: 'set', item: 'y', fields: {} } });
  assert.equal(e.code, 'not_found');
  await a.close();
  await b.close();
});

test('failure: a timeout, a 5xx or a bad answer is hook_unavailable; the same cid is applied once later', async (t) => {
  const modes = ['hang', '500', 'garbage', 'badcode', 'nonobject'];
  let mode = 'hang';
  const peer = await startHookPeer(t, () => {
    switch (mode) {
      case 'hang': return { hang: true };
      case '500': return { status: 500, body: { result: 'accept' } };
      case 'garbage': return { body: 'accept' };
      case 'badcode': return { body: { result: 'reject', code: 'Has Spaces' } };
      case 'nonobject': return { body: { result: 'accept', op: 'set' } };
      default: return { body: { result: 'accept' } };
    }
  });
  const srv = await serverFor(t, peer.url);
  const c = await connect(srv.url);
  await c.join('checked:fail');
  const op = { kind: 'set', item: 'x', fields: { n: 1 } };
  for (mode of modes) {
    const e = await c.request({ type: 'op', room: 'checked:fail', cid: 'same', op });
    assert.equal(e.type, 'error', mode);
    assert.equal(e.code, 'hook_unavailable', `${mode}: ${JSON.stringify(e)}`);
    assert.ok(e.retry_after > 0);
    assert.equal(e.cid, 'same');
  }
  mode = 'ok';
  const ack = await c.request({ type: 'op', room: 'checked:fail', cid: 'same', op });
  assert.equal(ack.type, 'ack');
  assert.equal(ack.seq, 1);
  const dup = await c.request({ type: 'op', room: 'checked:fail', cid: 'same', op });
  assert.equal(dup.type, 'ack');
  assert.equal(dup.seq, 1, 'a re-sent cid is answered with its seq');
  const m = await fetchMetrics(srv.url, 'hooks-e2e-api-key-0123');
  assert.equal(m.get('wsync_hook_failures_total{hook="op"}'), modes.length);
  assert.equal(m.get('wsync_ops_rejected_total{code="hook_unavailable"}'), modes.length);
  await c.close();
});

test('order: a room\'s ops keep their order while one waits, batches included', async (t) => {
  // The first op's answer is held until every later op has been asked
  // about, so the later answers all arrive before the first one.
  const N = 20;
  let release;
  const gate = new Promise((r) => { release = r; });
  const peer = await startHookPeer(t, async (b) => {
    if (b.cid === 'o0') await gate;
    return { body: { result: 'accept' } };
  });
  const srv = await serverFor(t, peer.url, ['--op-hook-timeout', '10s']);
  const a = await connect(srv.url);
  const b = await connect(srv.url, 'bob');
  await a.join('checked:order');
  await b.join('checked:order');
  const ps = [];
  for (let i = 0; i < N; i++) {
    const op = i % 5 === 4
      ? { kind: 'batch', ops: [{ kind: 'set', item: `i${i}`, fields: { i } }, { kind: 'set', item: 'last', fields: { i } }] }
      : { kind: 'set', item: 'last', fields: { i } };
    ps.push(a.request({ type: 'op', room: 'checked:order', cid: `o${i}`, op }));
  }
  const { waitUntil } = await import('./lib/server.mjs');
  await waitUntil(() => peer.calls.length === N, 'every op asked about (their questions go out together)');
  release();
  const acks = await Promise.all(ps);
  assert.deepEqual(acks.map((x) => x.type), Array(N).fill('ack'));
  assert.deepEqual(acks.map((x) => x.seq), Array.from({ length: N }, (_, i) => i + 1), 'seqs follow arrival order');
  const seen = await b.take(N, (m) => m.type === 'op' && m.room === 'checked:order', 'broadcasts');
  assert.deepEqual(seen.map((m) => m.cid), Array.from({ length: N }, (_, i) => `o${i}`), 'another member sees them in that order');
  const snap = await snapshotOf(srv.url, 'checked:order');
  assert.deepEqual(snap.items.last.fields, { i: N - 1 });
  await a.close();
  await b.close();
});

test('other rooms do not wait for a room\'s slow hook', async (t) => {
  let release;
  const gate = new Promise((r) => { release = r; });
  const peer = await startHookPeer(t, async (b) => {
    if (b.room === 'checked:slow') await gate;
    return { body: { result: 'accept' } };
  });
  const srv = await serverFor(t, peer.url, ['--op-hook-timeout', '10s']);
  const c = await connect(srv.url);
  for (const r of ['checked:slow', 'checked:fast', 'free:1']) await c.join(r);
  let slowDone = false;
  const slow = c.op('checked:slow', 's1', { kind: 'set', item: 'x', fields: {} }).then((m) => { slowDone = true; return m; });
  const fast = await c.op('checked:fast', 'f1', { kind: 'set', item: 'x', fields: {} });
  assert.equal(fast.type, 'ack');
  const free = await c.op('free:1', 'u1', { kind: 'set', item: 'x', fields: {} });
  assert.equal(free.type, 'ack');
  await c.ping();
  assert.equal(slowDone, false, 'the slow room\'s op is still waiting while the others were acked');
  release();
  assert.equal((await slow).type, 'ack');
  await c.close();
});

test('a session that ends or leaves while its op waits: the op is not applied', async (t) => {
  let release;
  const gate = new Promise((r) => { release = r; });
  const peer = await startHookPeer(t, async () => {
    await gate;
    return { body: { result: 'accept' } };
  });
  const srv = await serverFor(t, peer.url, ['--op-hook-timeout', '10s']);
  const a = await connect(srv.url);
  const b = await connect(srv.url, 'bob');
  await a.join('checked:gone');
  await b.join('checked:gone');
  a.send({ type: 'op', room: 'checked:gone', cid: 'g1', op: { kind: 'set', item: 'x', fields: { v: 1 } } });
  b.send({ type: 'op', room: 'checked:gone', cid: 'g2', op: { kind: 'set', item: 'y', fields: { v: 2 } } });
  const { waitUntil } = await import('./lib/server.mjs');
  await waitUntil(() => peer.calls.length === 2, 'both asked');
  await a.close(); // bye: the session ends; its op is dropped
  b.send({ type: 'leave', room: 'checked:gone' }); // not held: leaves now
  release();
  const e = await b.waitFor((m) => m.type === 'error' && m.cid === 'g2', 'the refusal of g2');
  assert.equal(e.code, 'not_joined', 'decided when the answer came: b had left');
  const snap = await snapshotOf(srv.url, 'checked:gone');
  assert.equal(snap.seq, 0);
  await b.close();
});

test('shutdown while a hello, a join and ops wait for their hooks: a clean exit', async () => {
  const peer = await startHookPeer(null, (b) => (b.action === 'hello' && b.user === 'alice' ? { body: { allow: true } } : { hang: true }));
  const srv = await startSyncServer(null, ['--op-hook', `checked:*=${peer.url}`, '--auth-hook', peer.url,
    '--auth-hook-timeout', '30s', '--op-hook-timeout', '30s']);
  try {
    const c = await connect(srv.url);
    c.send({ type: 'join', room: 'user:alice' }); // a private room: not asked
    c.send({ type: 'op', room: 'user:alice', cid: 'x0', op: { kind: 'set', item: 'x', fields: {} } });
    await c.waitFor((m) => m.type === 'ack', 'the private room works');
    const c2 = await connect(srv.url);
    c2.send({ type: 'join', room: 'checked:1' }); // held: the join question hangs
    c2.send({ type: 'op', room: 'checked:1', cid: 'y', op: { kind: 'set', item: 'x', fields: {} } });
    const held = await SyncClient.open(srv.url);
    held.send({ type: 'hello', token: token('bob'), device: dev() }); // hangs
    const byPost = fetch(`${srv.url}/v1/send`, { // hangs too, its answer deferred
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ type: 'hello', token: token('carol'), device: dev() }),
    }).then((r) => r.status, () => 'gone');
    const { waitUntil } = await import('./lib/server.mjs');
    await waitUntil(() => peer.calls.length >= 5, 'the questions asked');
    const stopping = srv.stopChecked(); // exit 0, and no sanitizer report (leaks included)
    const st = await byPost;
    assert.equal(st, 503, 'the deferred hello is answered 503 at shutdown');
    await stopping;
  } finally {
    await srv.stopChecked();
    await peer.close();
  }
});

test('--op-hook-batch: waiting ops of a room go in one request, answered one by one, in order', async (t) => {
  let release;
  const gate = new Promise((r) => { release = r; });
  let broken = false;
  const peer = await startHookPeer(t, async (b) => {
    assert.equal(b.action, 'ops');
    if (b.ops[0].cid === 'b0') await gate; // the first request is held: the others gather behind it
    if (broken) return { body: { results: [] } }; // not one answer per op
    return {
      body: {
        results: b.ops.map((o) => (o.op.fields.n % 5 === 3
          ? { result: 'reject', code: 'no_threes', message: `${o.op.fields.n} is refused` }
          : o.op.fields.n % 5 === 4 ? { result: 'accept', op: { ...o.op, fields: { n: o.op.fields.n, by: o.user } } }
            : { result: 'accept' })),
      },
    };
  });
  const srv = await serverFor(t, peer.url, ['--op-hook-batch', '8', '--op-hook-timeout', '10s']);
  const a = await connect(srv.url);
  await a.join('checked:batch');
  const N = 30;
  const ps = [];
  for (let i = 0; i < N; i++) {
    ps.push(a.request({ type: 'op', room: 'checked:batch', cid: `b${i}`, op: { kind: 'set', item: `i${i}`, fields: { n: i } } }));
  }
  const { waitUntil } = await import('./lib/server.mjs');
  await waitUntil(() => peer.calls.length >= 1, 'the first request');
  release();
  const out = await Promise.all(ps);
  const q = peer.calls.map((k) => k.body);
  assert.ok(q.length < N, `fewer requests (${q.length}) than ops (${N})`);
  assert.ok(q.every((b) => b.room === 'checked:batch' && b.ops.length >= 1 && b.ops.length <= 8), 'at most 8 ops each');
  // Requests go out together (several in flight), so they may reach the
  // receiver in any order; each holds consecutive ops of the queue.
  const idx = (c) => Number(c.slice(1));
  const sorted = [...q].sort((x, y) => idx(x.ops[0].cid) - idx(y.ops[0].cid));
  assert.deepEqual(sorted.flatMap((b) => b.ops.map((o) => o.cid)), Array.from({ length: N }, (_, i) => `b${i}`), 'each op asked once, consecutive ops together');
  assert.deepEqual(sorted[0].ops[0], { room: 'checked:batch', user: 'alice', device: a.welcome.device, cid: 'b0', op: { kind: 'set', item: 'i0', fields: { n: 0 } } });
  let seq = 0;
  for (let i = 0; i < N; i++) {
    if (i % 5 === 3) {
      assert.equal(out[i].code, 'rejected', JSON.stringify(out[i]));
      assert.equal(out[i].reason, 'no_threes');
      assert.equal(out[i].message, `${i} is refused`);
    } else {
      assert.equal(out[i].type, 'ack', JSON.stringify(out[i]));
      assert.equal(out[i].seq, ++seq, 'seqs in arrival order, none used by a rejected op');
    }
  }
  const snap = await snapshotOf(srv.url, 'checked:batch');
  assert.deepEqual(snap.items.i4.fields, { n: 4, by: 'alice' }, 'a replacement from a batch answer');
  assert.equal(snap.items.i3, undefined);
  broken = true;
  const e = await a.request({ type: 'op', room: 'checked:batch', cid: 'x', op: { kind: 'set', item: 'x', fields: { n: 0 } } });
  assert.equal(e.code, 'hook_unavailable', 'results of the wrong length: no answer for any op');
  await a.close();
});
