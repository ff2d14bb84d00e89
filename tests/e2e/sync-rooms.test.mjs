// sync-rooms.test.mjs -- rooms of the sync protocol (docs/PROTOCOL.md 4, 6, 8):
// join/joined, grants and private rooms, room names, the room limit, catch-up
// with `since`, leave/left and presence events.
import assert from 'node:assert/strict';
import test from 'node:test';

import { SyncClient, closeClients, startSyncServer, token } from './lib/sync.mjs';

let srv;
let demo;
test.before(async () => {
  srv = await startSyncServer(null, ['--rate', '10000', '--burst', '10000']);
  demo = await startSyncServer(null, ['--insecure-demo']);
});
test.after(() => Promise.all([srv.stopChecked(), demo.stopChecked()]));

let dev = 0;
/** A hello for user with grants, on a fresh device id. */
const as = (user, grants = { '*': 'rw' }) => ({ token: token(user, grants), device: `dev-${++dev}` });
const connect = (user, grants) => SyncClient.connect(srv.url, as(user, grants));

test('joined', async (t) => {
  await t.test('a new room: epoch, seq 0, empty snapshot, the joiner in presence', async () => {
    const c = await connect('alice');
    const j = await c.request({ type: 'join', room: 'board:new-1', id: 'j1' });
    assert.equal(j.type, 'joined');
    assert.equal(j.re, 'j1');
    assert.equal(j.room, 'board:new-1');
    assert.match(j.epoch, /^[a-z0-9]{1,64}$/);
    assert.equal(j.seq, 0);
    assert.equal(j.recovered, false);
    assert.deepEqual(j.snapshot, { items: {} });
    assert.equal(j.ops, undefined);
    assert.equal(j.presence.length, 1);
    assert.equal(j.presence[0].user, 'alice');
    assert.equal(j.presence[0].device, c.welcome.device);
    assert.deepEqual(j.presence[0].state, {});
    assert.equal(j.presence[0].connected, true);
    assert.deepEqual(j.locks, []);
    await c.close();
  });

  await t.test('an existing room: its seq and a snapshot of every item', async () => {
    const w = await connect('alice');
    const j0 = await w.join('board:existing');
    await w.set('board:existing', 'e1', 'card-1', { title: 'A', n: 1 });
    await w.set('board:existing', 'e2', 'card-2', { title: 'B' });
    await w.set('board:existing', 'e3', 'card-1', { n: null, col: 'done' });
    await w.expect({ type: 'op', room: 'board:existing', cid: 'e4', op: { kind: 'del', item: 'card-2' } }, 'ack');
    await w.set('board:existing', 'e5', 'card-3', {});
    const r = await connect('bob');
    const j = await r.join('board:existing');
    assert.equal(j.epoch, j0.epoch);
    assert.equal(j.seq, 5);
    assert.deepEqual(j.snapshot.items, {
      'card-1': { version: 3, fields: { title: 'A', col: 'done' } },
      'card-3': { version: 5, fields: {} },
    });
    assert.deepEqual(j.presence.map((p) => p.user).sort(), ['alice', 'bob']);
    await closeClients(w, r);
  });

  await t.test('the initial presence state given in join', async () => {
    const a = await connect('alice');
    const j = await a.join('board:pres-init', { presence: { name: 'Alice', color: '#d33' } });
    assert.deepEqual(j.presence[0].state, { name: 'Alice', color: '#d33' });
    const b = await connect('bob');
    const jb = await b.join('board:pres-init');
    const alice = jb.presence.find((p) => p.user === 'alice');
    assert.deepEqual(alice.state, { name: 'Alice', color: '#d33' });
    await closeClients(a, b);
  });

  await t.test('joining again answers a new joined without a presence event', async () => {
    const a = await connect('alice');
    const b = await connect('bob');
    const ja = await a.join('board:rejoin');
    await b.join('board:rejoin');
    await a.waitFor((m) => m.type === 'presence' && m.event === 'join' && m.user === 'bob', 'bob joins');
    await b.set('board:rejoin', 'r1', 'x', { v: 1 });
    await a.entry('board:rejoin', 1);
    const again = await b.join('board:rejoin', { since: { epoch: ja.epoch, seq: 0 } });
    assert.equal(again.recovered, true);
    assert.deepEqual(again.ops.map((o) => o.seq), [1]);
    assert.equal(again.presence.length, 2, 'membership unchanged');
    await a.ping();
    assert.deepEqual(a.drain((m) => m.type === 'presence'), [], 'no presence event for a rejoin');
    await closeClients(a, b);
  });
});

test('permissions', async (t) => {
  const grants = { 'board:*': 'rw', 'chat:lobby': 'r', 'ro:*': 'r', 'wo:*': 'w', 'mix:*': 'r', 'mix:1': 'w', 'wr:*': 'wr', 'a*c': 'r' };
  const c = await connect('paula', grants);
  t.after(() => c.close());
  await t.test('a grant that matches lets join; r is enough to join', async () => {
    await c.join('board:p1');
    await c.join('chat:lobby');
    await c.join('ro:1');
  });
  await t.test('`*` matches any run, none and `:` included', async () => {
    await c.join('abc');
    await c.join('ac');
    await c.join('a:b:c');
    await c.expectError({ type: 'join', room: 'abcd' }, 'forbidden');
  });
  await t.test('no matching grant -> forbidden', async () => {
    const e = await c.expectError({ type: 'join', room: 'chat:other', id: 5 }, 'forbidden');
    assert.equal(e.re, 5);
    assert.equal(e.for, 'join');
    assert.equal(e.room, 'chat:other');
    await c.expectError({ type: 'join', room: 'doc:1' }, 'forbidden');
    await c.expectError({ type: 'join', room: 'board' }, 'forbidden');
  });
  await t.test('w without r cannot join', async () => {
    await c.expectError({ type: 'join', room: 'wo:1' }, 'forbidden');
  });
  await t.test('writing with an r grant is forbidden; nothing changes', async () => {
    const e = await c.expectError({ type: 'op', room: 'ro:1', cid: 'w1', op: { kind: 'set', item: 'i', fields: { a: 1 } } }, 'forbidden');
    assert.equal(e.cid, 'w1');
    await c.expectError({ type: 'publish', room: 'ro:1', data: { x: 1 } }, 'forbidden');
    await c.expectError({ type: 'publish', room: 'ro:1', data: { x: 1 }, ephemeral: true }, 'forbidden');
    const j = await c.join('ro:1');
    assert.equal(j.seq, 0);
    assert.deepEqual(j.snapshot.items, {});
  });
  await t.test('a reader receives what writers write', async () => {
    const w = await connect('walter', { 'ro:*': 'rw' });
    await w.join('ro:1');
    const ack = await w.set('ro:1', 'w1', 'i', { a: 1 });
    const e = await c.entry('ro:1', ack.seq);
    assert.deepEqual(e.op, { kind: 'set', item: 'i', fields: { a: 1 } });
    await w.close();
  });
  await t.test('permissions are the union of every matching grant; "wr" is "rw"', async () => {
    await c.join('mix:1');
    await c.set('mix:1', 'm1', 'i', { a: 1 });
    await c.join('mix:2');
    await c.expectError({ type: 'op', room: 'mix:2', cid: 'm2', op: { kind: 'set', item: 'i', fields: {} } }, 'forbidden');
    await c.join('wr:1');
    await c.set('wr:1', 'm3', 'i', { a: 1 });
  });
});

test('private rooms', async (t) => {
  await t.test('user:<self> is readable and writable without any grant, across devices', async () => {
    const a1 = await connect('ursula', {});
    const a2 = await connect('ursula', {});
    await a1.join('user:ursula');
    await a2.join('user:ursula');
    const ack = await a1.set('user:ursula', 'p1', 'prefs', { theme: 'dark' });
    const e = await a2.entry('user:ursula', ack.seq);
    assert.deepEqual(e.from, { user: 'ursula', device: a1.welcome.device });
    await closeClients(a1, a2);
  });
  await t.test('user:<other> is forbidden whatever the grants say', async () => {
    const m = await connect('mallory', { '*': 'rw', 'user:*': 'rw', 'user:ursula': 'rw' });
    await m.expectError({ type: 'join', room: 'user:ursula' }, 'forbidden');
    await m.join('user:mallory');
    await m.close();
  });
  await t.test('demo mode: every room but other users\' private rooms', async () => {
    const c = await SyncClient.connect(demo.url, { user: 'victor', device: 'v1' });
    await c.join('anything:at-all');
    await c.join('user:victor');
    await c.expectError({ type: 'join', room: 'user:ursula' }, 'forbidden');
    await c.close();
  });
});

test('room names', async (t) => {
  const c = await connect('nora');
  t.after(() => c.close());
  const bad = ['', 'a'.repeat(129), 'board 1', 'board/1', 'board:é', 'a*b', 'board#1', 'board\n1', 'x'.repeat(200000)];
  for (const room of bad) {
    await t.test(`${JSON.stringify(room.slice(0, 20))}${room.length > 20 ? `... (${room.length})` : ''} -> room_invalid`, async () => {
      const e = await c.expectError({ type: 'join', room }, 'room_invalid');
      assert.equal(e.for, 'join');
    });
  }
  await t.test('128 characters of the whole alphabet are fine', async () => {
    const room = 'AZaz09._:@-'.repeat(12).slice(0, 128);
    assert.equal(room.length, 128);
    await c.join(room);
  });
  await t.test('names are case-sensitive', async () => {
    await c.set((await c.join('board:Case')).room, 'k1', 'i', { a: 1 });
    const j = await c.join('board:case');
    assert.equal(j.seq, 0);
  });
});

test('--max-rooms 2', async (t) => {
  const small = await startSyncServer(t, ['--max-rooms', '2']);
  const c = await SyncClient.connect(small.url, as('mia'));
  t.after(() => c.close());
  assert.equal(c.welcome.limits.max_rooms, 2);
  await c.join('board:1');
  await c.join('board:2');
  const e = await c.expectError({ type: 'join', room: 'board:3', id: 'third' }, 'too_many_rooms');
  assert.equal(e.re, 'third');
  await c.join('board:1'); // already a member: allowed
  await c.expect({ type: 'leave', room: 'board:2' }, 'left');
  await c.join('board:3');
  // Another session has its own count.
  const d = await SyncClient.connect(small.url, as('mia'));
  await d.join('board:1');
  await d.join('board:2');
  await d.close();
});

test('catch-up with since', async (t) => {
  const w = await connect('sam');
  const room = 'board:since';
  const j0 = await w.join(room);
  const live = [];
  for (let i = 1; i <= 5; i++) {
    const ack = await w.set(room, `s${i}`, `it-${i % 3}`, { v: i });
    live.push(await w.entry(room, ack.seq));
  }
  const { epoch } = j0;
  const r = await connect('rita');
  t.after(() => closeClients(w, r));

  await t.test('same epoch, seq 2 -> recovered with exactly entries 3..5, as broadcast', async () => {
    const j = await r.join(room, { since: { epoch, seq: 2 } });
    assert.equal(j.recovered, true);
    assert.equal(j.epoch, epoch);
    assert.equal(j.seq, 5);
    assert.equal(j.snapshot, undefined);
    assert.deepEqual(j.ops, live.slice(2));
  });
  await t.test('seq 0 -> every entry', async () => {
    const j = await r.join(room, { since: { epoch, seq: 0 } });
    assert.equal(j.recovered, true);
    assert.deepEqual(j.ops, live);
  });
  await t.test('the current seq -> recovered with no ops', async () => {
    const j = await r.join(room, { since: { epoch, seq: 5 } });
    assert.equal(j.recovered, true);
    assert.deepEqual(j.ops, []);
  });
  const snapshotCase = async (since) => {
    const j = await r.join(room, since === undefined ? {} : { since });
    assert.equal(j.recovered, false, JSON.stringify(since));
    assert.equal(j.ops, undefined);
    assert.equal(j.epoch, epoch);
    assert.equal(j.seq, 5);
    assert.deepEqual(j.snapshot.items, {
      'it-0': { version: 3, fields: { v: 3 } },
      'it-1': { version: 4, fields: { v: 4 } },
      'it-2': { version: 5, fields: { v: 5 } },
    });
  };
  await t.test('another epoch -> snapshot', () => snapshotCase({ epoch: 'ffffffffffffffff', seq: 2 }));
  await t.test('an epoch that is a prefix -> snapshot', () => snapshotCase({ epoch: epoch.slice(0, -1), seq: 2 }));
  await t.test('empty epoch -> snapshot', () => snapshotCase({ epoch: '', seq: 2 }));
  await t.test('no epoch -> snapshot', () => snapshotCase({ seq: 2 }));
  await t.test('seq beyond the room -> snapshot', () => snapshotCase({ epoch, seq: 6 }));
  await t.test('no since -> snapshot', () => snapshotCase(undefined));
  await t.test('an empty room: since {epoch, 0} -> recovered with no ops', async () => {
    const a = await connect('sam');
    const j1 = await a.join('board:empty-since');
    assert.equal(j1.seq, 0);
    const b = await connect('rita');
    const j2 = await b.join('board:empty-since', { since: { epoch: j1.epoch, seq: 0 } });
    assert.equal(j2.recovered, true);
    assert.equal(j2.epoch, j1.epoch);
    assert.equal(j2.seq, 0);
    assert.deepEqual(j2.ops, []);
    await closeClients(a, b);
  });
  await t.test('after joined, live entries continue exactly at joined.seq + 1', async () => {
    const j = await r.join(room, { since: { epoch, seq: 5 } });
    const ack = await w.set(room, 's6', 'it-0', { v: 6 });
    assert.equal(ack.seq, j.seq + 1);
    const e = await r.entry(room, 6);
    assert.equal(e.cid, 's6');
  });
});

test('leave and presence', async (t) => {
  const room = 'board:presence';
  const a = await connect('anna');
  const b = await connect('ben');
  t.after(() => closeClients(a, b));
  await a.join(room, { presence: { s: 1 } });

  await t.test('join: the others get a presence join event, the joiner does not', async () => {
    await b.join(room, { presence: { name: 'Ben' } });
    const ev = await a.waitFor((m) => m.type === 'presence' && m.event === 'join', 'presence join');
    assert.deepEqual(ev, { type: 'presence', room, event: 'join', user: 'ben', device: b.welcome.device, state: { name: 'Ben' }, connected: true });
    await b.ping();
    assert.deepEqual(b.drain((m) => m.type === 'presence'), []);
  });
  await t.test('presence state: an update event with the whole entry to the others only', async () => {
    b.send({ type: 'presence', room, state: { name: 'Ben', editing: 'card-7' } });
    const ev = await a.waitFor((m) => m.type === 'presence' && m.event === 'update', 'presence update');
    assert.deepEqual(ev, { type: 'presence', room, event: 'update', user: 'ben', device: b.welcome.device, state: { name: 'Ben', editing: 'card-7' }, connected: true });
    await b.ping();
    assert.deepEqual(b.drain((m) => m.type === 'presence'), [], 'no event to the sender');
    assert.deepEqual(b.drain((m) => m.type === 'error'), [], 'no reply to a good presence');
    const c = await connect('cleo');
    const j = await c.join(room);
    assert.deepEqual(j.presence.find((p) => p.user === 'ben').state, { name: 'Ben', editing: 'card-7' });
    // A join and a leave within one --presence-interval are not seen at all (8.3): her join first.
    await a.waitFor((m) => m.type === 'presence' && m.event === 'join' && m.user === 'cleo', 'cleo joins');
    await b.waitFor((m) => m.type === 'presence' && m.event === 'join' && m.user === 'cleo', 'cleo joins');
    c.send({ type: 'bye' }); // ends the session: a closed connection alone only detaches it (3.5)
    await a.waitFor((m) => m.type === 'presence' && m.event === 'leave' && m.user === 'cleo', 'cleo leaves');
    await b.waitFor((m) => m.type === 'presence' && m.event === 'leave' && m.user === 'cleo', 'cleo leaves');
    a.drain((m) => m.type === 'presence');
    b.drain((m) => m.type === 'presence');
  });
  await t.test('presence errors: not_joined, bad_request, too_large', async () => {
    await b.expectError({ type: 'presence', room: 'board:elsewhere', state: {} }, 'not_joined');
    await b.expectError({ type: 'presence', room, state: 'x' }, 'bad_request');
    await b.expectError({ type: 'presence', room }, 'bad_request');
    await b.expectError({ type: 'presence', room, state: { big: 'x'.repeat(2100) } }, 'too_large');
    b.send({ type: 'presence', room, state: { ok: 'x'.repeat(2000) } }); // under 2 KiB encoded
    await a.waitFor((m) => m.type === 'presence' && m.event === 'update', 'the accepted update');
  });
  await t.test('leave -> left; the others see a presence leave; ops are then not_joined', async () => {
    const l = await b.request({ type: 'leave', room, id: 'bye' });
    assert.deepEqual(l, { type: 'left', re: 'bye', room });
    const ev = await a.waitFor((m) => m.type === 'presence' && m.event === 'leave', 'presence leave');
    assert.deepEqual(ev, { type: 'presence', room, event: 'leave', user: 'ben', device: b.welcome.device });
    await b.expectError({ type: 'op', room, cid: 'x', op: { kind: 'set', item: 'i', fields: {} } }, 'not_joined');
    await b.expectError({ type: 'publish', room, data: 1 }, 'not_joined');
    // b no longer receives the room's entries.
    const ack = await a.set(room, 'after-leave', 'i', { v: 1 });
    await a.entry(room, ack.seq);
    await b.ping();
    assert.deepEqual(b.drain((m) => m.type === 'op'), []);
  });
  await t.test('leaving a room the session is not in is answered with left', async () => {
    const l = await b.request({ type: 'leave', room: 'board:never-joined' });
    assert.equal(l.type, 'left');
    assert.equal(l.room, 'board:never-joined');
  });
  await t.test('bye ends the session: the others see it leave', async () => {
    const d = await connect('dora');
    await d.join(room);
    await a.waitFor((m) => m.type === 'presence' && m.event === 'join' && m.user === 'dora', 'dora joins');
    await d.close();
    const ev = await a.waitFor((m) => m.type === 'presence' && m.user === 'dora', 'dora goes');
    assert.equal(ev.event, 'leave');
  });
});
