// sync-locks.test.mjs -- item locks (docs/PROTOCOL.md 9, 5.2 fence, 11.2):
// granted before the held event, renewals keep the fence, new grants get a
// larger one (also across a restart), the effect on other sessions' ops and
// batch sub-ops, fencing, unlock, the TTL range, and every way a lock is
// released (unlock, expiry, leave, bye) -- but not a dropped connection.
import assert from 'node:assert/strict';
import test from 'node:test';

import { sleep } from './lib/server.mjs';
import { SyncClient, closeClients, restartableServer, startSyncServer, token } from './lib/sync.mjs';

let srv;
test.before(async () => {
  srv = await startSyncServer(null, ['--rate', '100000', '--burst', '100000']);
});
test.after(() => srv.stopChecked());

let devN = 0;
const connect = (user, grants, device = `${user}-${++devN}`) => SyncClient.connect(srv.url, { token: token(user, grants), device });
const lockEvent = (room, item, state) => (m) => m.type === 'lock' && m.room === room && m.item === item && (!state || m.state === state);
const setOp = (item, fields = { v: 1 }, extra = {}) => ({ kind: 'set', item, fields, ...extra });
let cidN = 0;
const cid = () => `lk.${++cidN}`;
/** Two sessions in a fresh room: a (alice) and b (bob). */
async function pair(room) {
  const a = await connect('alice');
  const b = await connect('bob');
  await a.join(room);
  await b.join(room);
  return { a, b };
}
const who = (c) => ({ user: c.welcome.user, device: c.welcome.device });

test('lock and granted', async (t) => {
  const room = 'board:lock';
  const { a, b } = await pair(room);
  t.after(() => closeClients(a, b));
  let fence;

  await t.test('granted (fence, ttl) precedes the held event, which every member gets, the holder included', async () => {
    const g = await a.request({ type: 'lock', id: 'l1', room, item: 'card-7', ttl: 30000 });
    assert.equal(typeof g.fence, 'number');
    assert.ok(Number.isInteger(g.fence) && g.fence > 0);
    fence = g.fence;
    assert.deepEqual(g, { type: 'granted', re: 'l1', room, item: 'card-7', fence, ttl: 30000 });
    const ev = await a.waitFor(lockEvent(room, 'card-7'), 'the lock event');
    assert.ok(a.log.indexOf(g) < a.log.indexOf(ev), 'granted first');
    assert.deepEqual(ev, { type: 'lock', room, item: 'card-7', state: 'held', ...who(a), fence, ttl: 30000 });
    assert.deepEqual(await b.waitFor(lockEvent(room, 'card-7'), 'the lock event'), ev);
  });

  await t.test('the item need not exist; locking it again renews: same fence, a held event again', async () => {
    const g = await a.expect({ type: 'lock', room, item: 'card-7', ttl: 20000 }, 'granted');
    assert.equal(g.fence, fence);
    assert.equal(g.ttl, 20000);
    const ev = await b.waitFor(lockEvent(room, 'card-7'), 'the renewal event');
    assert.deepEqual(await a.waitFor(lockEvent(room, 'card-7'), 'the renewal event'), ev);
    assert.equal(ev.state, 'held');
    assert.equal(ev.fence, fence);
    assert.equal(ev.ttl, 20000);
  });

  await t.test('another session, another user: locked, with the lock', async () => {
    const e = await b.expectError({ type: 'lock', room, item: 'card-7', ttl: 5000 }, 'locked');
    assert.equal(e.item, 'card-7');
    assert.equal(e.room, room);
    const { ttl, ...rest } = e.lock;
    assert.deepEqual(rest, { item: 'card-7', ...who(a), fence });
    assert.ok(ttl > 0 && ttl <= 20000, `ttl left: ${ttl}`);
  });

  await t.test('another session of the same user is another session: locked', async () => {
    const a2 = await connect('alice');
    t.after(() => a2.close());
    await a2.join(room);
    assert.equal((await a2.expectError({ type: 'lock', room, item: 'card-7', ttl: 5000 }, 'locked')).lock.device, a.welcome.device);
    assert.equal((await a2.expectError({ type: 'op', room, cid: cid(), op: setOp('card-7') }, 'locked')).lock.fence, fence);
  });

  await t.test('joined.locks lists the held locks with the time left', async () => {
    const c = await connect('carol');
    t.after(() => c.close());
    const j = await c.join(room);
    assert.equal(j.locks.length, 1);
    const { ttl, ...rest } = j.locks[0];
    assert.deepEqual(rest, { item: 'card-7', ...who(a), fence });
    assert.ok(ttl > 0 && ttl <= 20000);
  });

  await t.test('unlock -> unlocked, then a free event (reason unlock) to every member', async () => {
    const u = await a.request({ type: 'unlock', id: 'u1', room, item: 'card-7' });
    assert.deepEqual(u, { type: 'unlocked', re: 'u1', room, item: 'card-7' });
    const ev = await a.waitFor(lockEvent(room, 'card-7', 'free'), 'the free event');
    assert.ok(a.log.indexOf(u) < a.log.indexOf(ev));
    assert.deepEqual(ev, { type: 'lock', room, item: 'card-7', state: 'free', fence, reason: 'unlock' });
    assert.deepEqual(await b.waitFor(lockEvent(room, 'card-7'), 'the free event'), ev);
    const c = await connect('carol');
    t.after(() => c.close());
    assert.deepEqual((await c.join(room)).locks, []);
  });

  await t.test('a new grant after the release has a larger fence; another session may take it now', async () => {
    const g = await b.expect({ type: 'lock', room, item: 'card-7', ttl: 5000 }, 'granted');
    assert.ok(g.fence > fence, `${g.fence} > ${fence}`);
    const ev = await a.waitFor(lockEvent(room, 'card-7', 'held'), 'held by bob');
    assert.equal(ev.user, 'bob');
    await b.expect({ type: 'unlock', room, item: 'card-7' }, 'unlocked');
    const g2 = await a.expect({ type: 'lock', room, item: 'card-7', ttl: 5000 }, 'granted');
    assert.ok(g2.fence > g.fence);
    await a.expect({ type: 'unlock', room, item: 'card-7' }, 'unlocked');
  });

  await t.test('unlock of a free item: unlocked, and no event', async () => {
    await a.ping();
    await b.ping();
    a.drain();
    b.drain();
    await a.expect({ type: 'unlock', room, item: 'never-locked' }, 'unlocked');
    await a.ping();
    await b.ping();
    assert.deepEqual(a.drain(lockEvent(room, 'never-locked')), []);
    assert.deepEqual(b.drain(lockEvent(room, 'never-locked')), []);
  });

  await t.test('unlock by a session that does not hold it: locked, and the lock stays', async () => {
    const g = await a.expect({ type: 'lock', room, item: 'card-8', ttl: 30000 }, 'granted');
    const e = await b.expectError({ type: 'unlock', room, item: 'card-8' }, 'locked');
    assert.equal(e.lock.fence, g.fence);
    assert.equal(e.lock.user, 'alice');
    await b.expectError({ type: 'op', room, cid: cid(), op: setOp('card-8') }, 'locked');
  });
});

test('the effect on ops, and fencing', async (t) => {
  const room = 'board:fence';
  const { a, b } = await pair(room);
  t.after(() => closeClients(a, b));
  await b.set(room, cid(), 'card', { title: 'Draft' });
  const g = await a.expect({ type: 'lock', room, item: 'card', ttl: 60000 }, 'granted');

  await t.test('another session\'s set and del: locked, with item and lock; nothing changes', async () => {
    for (const op of [setOp('card', { title: 'mine' }), { kind: 'del', item: 'card' }, setOp('card', { x: 1 }, { base: 1 })]) {
      const c = cid();
      const e = await b.expectError({ type: 'op', room, cid: c, op }, 'locked');
      assert.equal(e.item, 'card');
      assert.equal(e.cid, c);
      assert.equal(e.room, room);
      assert.equal(e.for, 'op');
      assert.equal(e.lock.item, 'card');
      assert.equal(e.lock.fence, g.fence);
      assert.deepEqual({ user: e.lock.user, device: e.lock.device }, who(a));
    }
    // locks are checked before base: a wrong base is still 'locked'
    await b.expectError({ type: 'op', room, cid: cid(), op: setOp('card', {}, { base: 99 }) }, 'locked');
    // even with a fence of its own guessing
    await b.expectError({ type: 'op', room, cid: cid(), op: setOp('card', {}, { fence: g.fence }) }, 'locked');
    const j = await b.join(room);
    assert.equal(j.seq, 1);
    assert.deepEqual(j.snapshot.items.card.fields, { title: 'Draft' });
  });

  await t.test('other items are not affected', async () => {
    await b.set(room, cid(), 'other', { ok: true });
  });

  await t.test('the holder writes with and without the fence', async () => {
    await a.set(room, cid(), 'card', { title: 'no fence' });
    await a.set(room, cid(), 'card', { title: 'fenced' }, { fence: g.fence });
    await a.expect({ type: 'op', room, cid: cid(), op: { kind: 'del', item: 'card', fence: g.fence } }, 'ack');
    await a.set(room, cid(), 'card', { title: 'back' }, { fence: g.fence, base: 0 });
  });

  await t.test('the broadcast of a fenced op has no fence', async () => {
    const ack = await a.set(room, cid(), 'card', { n: 5 }, { fence: g.fence });
    const e = await b.entry(room, ack.seq);
    assert.deepEqual(e.op, { kind: 'set', item: 'card', fields: { n: 5 } });
  });

  await t.test('a wrong fence is lock_lost, with the item; nothing changes', async () => {
    const before = (await b.join(room)).seq;
    for (const fence of [g.fence + 1, g.fence - 1, 0]) {
      const e = await a.expectError({ type: 'op', room, cid: cid(), op: setOp('card', { bad: fence }, { fence }) }, 'lock_lost');
      assert.equal(e.item, 'card');
    }
    assert.equal((await b.join(room)).seq, before);
  });

  await t.test('a fence on an item nobody locked is lock_lost', async () => {
    await a.expectError({ type: 'op', room, cid: cid(), op: setOp('other', {}, { fence: g.fence }) }, 'lock_lost');
  });

  await t.test('a stale fence (the lock was released and granted again) is lock_lost', async () => {
    await a.expect({ type: 'unlock', room, item: 'card' }, 'unlocked');
    // after the release, the old fence is lock_lost, and without one the op goes through
    await a.expectError({ type: 'op', room, cid: cid(), op: setOp('card', {}, { fence: g.fence }) }, 'lock_lost');
    const g2 = await a.expect({ type: 'lock', room, item: 'card', ttl: 60000 }, 'granted');
    assert.ok(g2.fence > g.fence);
    await a.expectError({ type: 'op', room, cid: cid(), op: setOp('card', {}, { fence: g.fence }) }, 'lock_lost');
    await a.set(room, cid(), 'card', { fresh: true }, { fence: g2.fence });
  });

  await t.test('a fence is checked against the holder of that item only', async () => {
    const gb = await b.expect({ type: 'lock', room, item: 'other', ttl: 60000 }, 'granted');
    // a writes "other" (held by b): locked, even with b's fence
    await a.expectError({ type: 'op', room, cid: cid(), op: setOp('other', {}, { fence: gb.fence }) }, 'locked');
    // b with a fence that is not its lock's: lock_lost; with its own: accepted.
    // (Fences are per item: a's fence on "card" may even equal gb.fence.)
    await b.expectError({ type: 'op', room, cid: cid(), op: setOp('other', {}, { fence: gb.fence + 1 }) }, 'lock_lost');
    await b.set(room, cid(), 'other', { b: true }, { fence: gb.fence });
  });

  await t.test('batch: a sub-op on an item locked by another session is locked, with its index; nothing applied', async () => {
    const before = await b.join(room);
    const e = await b.expectError({ type: 'op', room, cid: cid(), op: { kind: 'batch', ops: [
      setOp('free-1', { x: 1 }), setOp('other', { mine: true }), setOp('card', { nope: 1 }),
    ] } }, 'locked');
    assert.equal(e.index, 2);
    assert.equal(e.item, 'card');
    assert.equal(e.lock.user, 'alice');
    const after = await b.join(room);
    assert.equal(after.seq, before.seq);
    assert.deepEqual(after.snapshot, before.snapshot);
  });

  await t.test('batch: a wrong fence in a sub-op is lock_lost with its index; the right ones pass', async () => {
    const ga = a.log.filter((m) => m.type === 'granted').at(-1);
    const e = await a.expectError({ type: 'op', room, cid: cid(), op: { kind: 'batch', ops: [
      setOp('card', { a: 1 }, { fence: ga.fence }), setOp('card', { b: 1 }, { fence: ga.fence + 7 }),
    ] } }, 'lock_lost');
    assert.equal(e.index, 1);
    const ack = await a.expect({ type: 'op', room, cid: cid(), op: { kind: 'batch', ops: [
      setOp('card', { a: 2 }, { fence: ga.fence }), setOp('free-2', { b: 2 }),
    ] } }, 'ack');
    const ev = await b.entry(room, ack.seq);
    assert.deepEqual(ev.op.ops, [setOp('card', { a: 2 }), setOp('free-2', { b: 2 })]);
  });
});

test('lock requests that are refused', async (t) => {
  const room = 'board:lock-bad';
  const { a, b } = await pair(room);
  t.after(() => closeClients(a, b));
  assert.equal(a.welcome.limits.max_lock_ttl, 300000, 'the default: 5 min');
  const bad = [
    ['ttl 999', { ttl: 999 }],
    ['ttl 500', { ttl: 500 }],
    ['ttl 0', { ttl: 0 }],
    ['ttl negative', { ttl: -1000 }],
    ['ttl above max_lock_ttl', { ttl: 300001 }],
    ['ttl missing', {}],
    ['ttl a string', { ttl: '30000' }],
    ['ttl a fraction', { ttl: 1000.5 }],
  ];
  for (const [name, extra] of bad) {
    await t.test(`${name} -> bad_request (field ttl)`, async () => {
      const e = await a.expectError({ type: 'lock', room, item: 'x', ...extra }, 'bad_request');
      assert.equal(e.field, 'ttl');
    });
  }
  await t.test('the bounds are accepted: 1000 and max_lock_ttl', async () => {
    assert.equal((await a.expect({ type: 'lock', room, item: 'lo', ttl: 1000 }, 'granted')).ttl, 1000);
    assert.equal((await a.expect({ type: 'lock', room, item: 'hi', ttl: 300000 }, 'granted')).ttl, 300000);
  });
  await t.test('no item, or an invalid item id -> bad_request', async () => {
    assert.equal((await a.expectError({ type: 'lock', room, ttl: 5000 }, 'bad_request')).field, 'item');
    await a.expectError({ type: 'lock', room, item: 'bad item', ttl: 5000 }, 'bad_request');
    await a.expectError({ type: 'unlock', room }, 'bad_request');
  });
  await t.test('a room not joined -> not_joined; a read-only grant -> forbidden', async () => {
    await a.expectError({ type: 'lock', room: 'board:elsewhere', item: 'x', ttl: 5000 }, 'not_joined');
    await a.expectError({ type: 'unlock', room: 'board:elsewhere', item: 'x' }, 'not_joined');
    const r = await connect('reader', { 'board:*': 'r' });
    t.after(() => r.close());
    await r.join(room);
    await r.expectError({ type: 'lock', room, item: 'x', ttl: 5000 }, 'forbidden');
    await r.expectError({ type: 'unlock', room, item: 'x' }, 'forbidden');
  });
  await t.test('--max-lock-ttl 2s: welcome says so, 2000 is granted, 2001 is bad_request', async (t2) => {
    const s2 = await startSyncServer(t2, ['--max-lock-ttl', '2s']);
    const c = await SyncClient.connect(s2.url, { token: token('zoe'), device: 'z' });
    t2.after(() => c.close());
    assert.equal(c.welcome.limits.max_lock_ttl, 2000);
    await c.join(room);
    await c.expectError({ type: 'lock', room, item: 'x', ttl: 2001 }, 'bad_request');
    await c.expect({ type: 'lock', room, item: 'x', ttl: 2000 }, 'granted');
  });
});

test('release: expiry, leave, bye; a dropped holder keeps its lock', async (t) => {
  await t.test('ttl 1000 runs out: a free event with reason expired, then others can write', async () => {
    const room = 'board:expire';
    const { a, b } = await pair(room);
    t.after(() => closeClients(a, b));
    const g = await a.expect({ type: 'lock', room, item: 'e', ttl: 1000 }, 'granted');
    await b.expectError({ type: 'op', room, cid: cid(), op: setOp('e') }, 'locked');
    const ev = await b.waitFor(lockEvent(room, 'e', 'free'), 'the expiry');
    assert.deepEqual(ev, { type: 'lock', room, item: 'e', state: 'free', fence: g.fence, reason: 'expired' });
    assert.deepEqual(await a.waitFor(lockEvent(room, 'e', 'free'), 'the expiry, to the holder too'), ev);
    await b.set(room, cid(), 'e', { mine: true });
    // the expired holder's fence is no good any more
    await a.expectError({ type: 'op', room, cid: cid(), op: setOp('e', {}, { fence: g.fence }) }, 'lock_lost');
    assert.deepEqual((await b.join(room)).locks, []);
  });

  await t.test('a renewal restarts the ttl', async () => {
    const room = 'board:renew';
    const { a, b } = await pair(room);
    t.after(() => closeClients(a, b));
    await a.expect({ type: 'lock', room, item: 'r', ttl: 1000 }, 'granted');
    await a.expect({ type: 'lock', room, item: 'r', ttl: 30000 }, 'granted');
    await sleep(1500); // well past the first ttl, far from the second
    await b.expectError({ type: 'op', room, cid: cid(), op: setOp('r') }, 'locked');
    assert.deepEqual(b.drain(lockEvent(room, 'r', 'free')), []);
  });

  await t.test('leave releases the session\'s locks in that room (reason left)', async () => {
    const room = 'board:leave';
    const { a, b } = await pair(room);
    t.after(() => closeClients(a, b));
    await a.join('board:leave-other');
    await b.join('board:leave-other');
    const g1 = await a.expect({ type: 'lock', room, item: 'l1', ttl: 60000 }, 'granted');
    await a.expect({ type: 'lock', room, item: 'l2', ttl: 60000 }, 'granted');
    await a.expect({ type: 'lock', room: 'board:leave-other', item: 'l1', ttl: 60000 }, 'granted');
    await a.expect({ type: 'leave', room }, 'left');
    const evs = [await b.waitFor(lockEvent(room, 'l1', 'free'), 'l1 freed'), await b.waitFor(lockEvent(room, 'l2', 'free'), 'l2 freed')];
    assert.deepEqual(evs.map((e) => e.reason), ['left', 'left']);
    assert.equal(evs[0].fence, g1.fence);
    await b.set(room, cid(), 'l1', {});
    // the lock in the other room stays
    await b.expectError({ type: 'op', room: 'board:leave-other', cid: cid(), op: setOp('l1') }, 'locked');
  });

  await t.test('bye releases them (reason session_end)', async () => {
    const room = 'board:bye';
    const { a, b } = await pair(room);
    t.after(() => closeClients(a, b));
    await a.expect({ type: 'lock', room, item: 'b1', ttl: 60000 }, 'granted');
    await a.close();
    const ev = await b.waitFor(lockEvent(room, 'b1', 'free'), 'b1 freed');
    assert.equal(ev.reason, 'session_end');
    await b.set(room, cid(), 'b1', {});
  });

  await t.test('a dropped (detached) holder keeps the lock until its ttl runs out', async () => {
    const room = 'board:detached';
    const { a, b } = await pair(room);
    t.after(() => closeClients(a, b));
    const g = await a.expect({ type: 'lock', room, item: 'd1', ttl: 1500 }, 'granted');
    await a.drop();
    const u = await b.waitFor((m) => m.type === 'presence' && m.user === 'alice', 'alice detached');
    assert.equal(u.connected, false);
    const e = await b.expectError({ type: 'op', room, cid: cid(), op: setOp('d1') }, 'locked');
    assert.equal(e.lock.fence, g.fence);
    const c = await connect('carol');
    t.after(() => c.close());
    assert.equal((await c.join(room)).locks.length, 1, 'still listed');
    const ev = await b.waitFor(lockEvent(room, 'd1', 'free'), 'd1 expires');
    assert.equal(ev.reason, 'expired');
    await b.set(room, cid(), 'd1', {});
  });
});

test('fences are never reused, also across a restart', async (t) => {
  const h = await restartableServer(t);
  const room = 'board:fence-restart';
  const hello = { token: token('alice'), device: 'laptop' };
  const a = await SyncClient.connect(h.url, hello);
  await a.join(room);
  const g1 = await a.expect({ type: 'lock', room, item: 'x', ttl: 60000 }, 'granted');
  await h.stop();
  await a.closed();
  await h.start();
  const a2 = await SyncClient.connect(h.url, hello);
  t.after(() => a2.close());
  const j = await a2.join(room);
  assert.deepEqual(j.locks, [], 'locks live in memory: gone with the sessions');
  const g2 = await a2.expect({ type: 'lock', room, item: 'x', ttl: 60000 }, 'granted');
  assert.ok(g2.fence > g1.fence, `${g2.fence} > ${g1.fence}`);
  // the fence of the old generation is lock_lost
  await a2.expectError({ type: 'op', room, cid: 'fr.1', op: setOp('x', {}, { fence: g1.fence }) }, 'lock_lost');
});

test('fences keep growing when the room is unloaded between grants', async (t) => {
  // join, lock, leave, pipelined: the room has no member left after each
  // leave and is unloaded (with its lock table); the next grant is a new one.
  const a = await connect('alice');
  t.after(() => a.close());
  const room = 'board:unloaded';
  const fences = [];
  for (let i = 0; i < 50; i++) {
    a.send({ type: 'join', room });
    a.send({ type: 'lock', room, item: 'x', ttl: 5000 });
    a.send({ type: 'leave', room });
    fences.push((await a.waitFor((m) => m.type === 'granted', `grant ${i}`)).fence);
  }
  for (let i = 1; i < fences.length; i++) assert.ok(fences[i] > fences[i - 1], `grant ${i}: fence ${fences[i]} after ${fences[i - 1]}`);
});
