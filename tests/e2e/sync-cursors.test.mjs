// sync-cursors.test.mjs -- device cursors (docs/PROTOCOL.md 10, 8.2, 4.2,
// 12.6): sent to the same user's other sessions in the room and nobody else,
// lower values ignored, a value beyond the room's seq refused, shown in
// presence entries, in joined.cursors (the joining user's devices only) and
// by the backend API, and kept across a restart.
import assert from 'node:assert/strict';
import test from 'node:test';

import { waitUntil } from './lib/server.mjs';
import { SyncClient, api, closeClients, restartableServer, token } from './lib/sync.mjs';

const KEY = 'cursor-api-key-0123';
const isCursor = (m) => m.type === 'cursor';
const byDevice = (a, b) => (a.user || '').localeCompare(b.user || '') || a.device.localeCompare(b.device);

test('device cursors', async (t) => {
  const h = await restartableServer(t, ['--api-key', KEY, '--rate', '100000', '--burst', '100000']);
  const connect = (user, device) => SyncClient.connect(h.url, { token: token(user), device });
  const cursors = async (room, query = '') => {
    const r = await api(h.url, 'GET', `/v1/rooms/${room}/cursors${query}`, { key: KEY });
    assert.equal(r.status, 200, r.text);
    return r.body;
  };
  /** Cursor writes go with the next commit: wait until the store has them. */
  const stored = (room, want) => waitUntil(async () => {
    const got = (await cursors(room)).cursors.map(({ user, device, seq }) => `${user}/${device}:${seq}`).sort();
    return JSON.stringify(got) === JSON.stringify([...want].sort());
  }, `cursors ${want}`);

  const room = 'board:cur';
  const t0 = Date.now();
  const laptop = await connect('alice', 'laptop');
  const phone = await connect('alice', 'phone');
  const bob = await connect('bob', 'tab');
  const live = [laptop, phone, bob];
  t.after(() => closeClients(live));
  for (const c of live) await c.join(room);
  for (let i = 1; i <= 4; i++) await laptop.set(room, `c.${i}`, 'item', { i });
  for (const c of live) for (let i = 1; i <= 4; i++) await c.entry(room, i);

  await t.test('the same user\'s other device receives the cursor; another user and the sender do not', async () => {
    laptop.send({ type: 'cursor', room, seq: 2 });
    const m = await phone.waitFor(isCursor, 'the cursor');
    assert.deepEqual(m, { type: 'cursor', room, user: 'alice', device: 'laptop', seq: 2 });
    await laptop.ping();
    await bob.ping();
    assert.deepEqual(bob.drain(isCursor), []);
    assert.deepEqual(laptop.drain(isCursor), []);
    assert.deepEqual(laptop.drain((m) => m.type === 'error'), [], 'no reply, no error');
  });

  await t.test('a lower or equal value is ignored; a higher one goes out', async () => {
    laptop.send({ type: 'cursor', room, seq: 1 });
    laptop.send({ type: 'cursor', room, seq: 2 });
    laptop.send({ type: 'cursor', room, seq: 0 });
    laptop.send({ type: 'cursor', room, seq: 4 }); // the room's seq: the highest allowed
    const m = await phone.waitFor(isCursor, 'the next cursor');
    assert.equal(m.seq, 4);
    await phone.ping();
    assert.deepEqual(phone.drain(isCursor), []);
  });

  await t.test('a seq beyond the room\'s seq, and other bad values -> bad_request (field seq)', async () => {
    for (const seq of [5, 1e9, -1, '3', 2.5, null]) {
      const e = await laptop.expectError({ type: 'cursor', room, seq }, 'bad_request');
      assert.equal(e.field, 'seq', `seq ${JSON.stringify(seq)}`);
      assert.equal(e.room, room);
    }
    assert.equal((await laptop.expectError({ type: 'cursor', room }, 'bad_request')).field, 'seq');
    await laptop.expectError({ type: 'cursor', room: 'board:not-mine', seq: 0 }, 'not_joined');
    await laptop.expectError({ type: 'cursor', room: 'bad room', seq: 0 }, 'room_invalid');
    await phone.ping();
    assert.deepEqual(phone.drain(isCursor), [], 'nothing went out');
  });

  await t.test('a session of the same user that is not in the room gets nothing', async () => {
    const away = await connect('alice', 'away');
    live.push(away);
    await away.join('board:elsewhere');
    phone.send({ type: 'cursor', room, seq: 1 });
    const m = await laptop.waitFor(isCursor, 'the phone\'s cursor');
    assert.deepEqual(m, { type: 'cursor', room, user: 'alice', device: 'phone', seq: 1 });
    await away.ping();
    assert.deepEqual(away.drain(isCursor), []);
  });

  await t.test('presence entries carry the cursor (absent without one)', async () => {
    bob.send({ type: 'cursor', room, seq: 3 });
    await bob.ping();
    const v = await connect('viewer', 'v1');
    live.push(v);
    const j = await v.join(room);
    const entries = Object.fromEntries(j.presence.map((p) => [`${p.user}/${p.device}`, p]));
    assert.equal(entries['alice/laptop'].cursor, 4);
    assert.equal(entries['alice/phone'].cursor, 1);
    assert.equal(entries['bob/tab'].cursor, 3);
    assert.equal('cursor' in entries['viewer/v1'], false);
    const r = await api(h.url, 'GET', `/v1/rooms/${room}/presence`, { key: KEY });
    assert.equal(r.status, 200);
    assert.equal(r.body.presence.find((p) => p.device === 'laptop').cursor, 4);
  });

  await t.test('joined.cursors: the joining user\'s devices only, present or not', async () => {
    await stored(room, ['alice/laptop:4', 'alice/phone:1', 'bob/tab:3']);
    const tablet = await connect('alice', 'tablet');
    live.push(tablet);
    const j = await tablet.join(room);
    assert.deepEqual([...j.cursors].sort(byDevice), [{ device: 'laptop', seq: 4 }, { device: 'phone', seq: 1 }]);
    const bob2 = await connect('bob', 'desk');
    live.push(bob2);
    assert.deepEqual((await bob2.join(room)).cursors, [{ device: 'tab', seq: 3 }]);
    const carol = await connect('carol', 'c');
    live.push(carol);
    assert.deepEqual((await carol.join(room)).cursors, []);
  });

  await t.test('backend GET /v1/rooms/R/cursors lists every cursor with updated in ms; ?user= filters', async () => {
    const all = await cursors(room);
    assert.equal(all.room, room);
    assert.equal(all.seq, 4);
    assert.equal(typeof all.epoch, 'string');
    assert.deepEqual(all.cursors.map(({ updated, ...rest }) => rest).sort(byDevice), [
      { user: 'alice', device: 'laptop', seq: 4 },
      { user: 'alice', device: 'phone', seq: 1 },
      { user: 'bob', device: 'tab', seq: 3 },
    ]);
    for (const c of all.cursors) {
      assert.ok(Number.isInteger(c.updated), `updated ${c.updated}`);
      assert.ok(c.updated >= t0 - 5000 && c.updated <= Date.now() + 5000, `updated ${c.updated} is ms since 1970, around now`);
    }
    const alice = await cursors(room, '?user=alice');
    assert.deepEqual(alice.cursors.map((c) => c.device).sort(), ['laptop', 'phone']);
    assert.deepEqual((await cursors(room, '?user=nobody')).cursors, []);
  });

  await t.test('cursors persist across a restart: a rejoin shows them, and so does the backend', async () => {
    const before = await cursors(room);
    await h.stop();
    for (const c of live) await c.closed();
    live.length = 0;
    await h.start();
    assert.deepEqual(await cursors(room), before);
    const l2 = await connect('alice', 'laptop');
    live.push(l2);
    const j = await l2.join(room);
    assert.deepEqual([...j.cursors].sort(byDevice), [{ device: 'laptop', seq: 4 }, { device: 'phone', seq: 1 }]);
    // and they go on growing
    const p2 = await connect('alice', 'phone');
    live.push(p2);
    await p2.join(room);
    p2.send({ type: 'cursor', room, seq: 2 });
    assert.deepEqual(await l2.waitFor(isCursor, 'the phone\'s cursor'), { type: 'cursor', room, user: 'alice', device: 'phone', seq: 2 });
    await stored(room, ['alice/laptop:4', 'alice/phone:2', 'bob/tab:3']);
  });

  await t.test('a GET for a room that never existed is 404', async () => {
    const r = await api(h.url, 'GET', '/v1/rooms/board:never/cursors', { key: KEY });
    assert.equal(r.status, 404);
    assert.equal(r.body.code, 'not_found');
  });
});

test('a rejoining device: the stored cursor counts', async (t) => {
  const h = await restartableServer(t, ['--api-key', KEY, '--rate', '100000', '--burst', '100000']);
  const connect = (user, device) => SyncClient.connect(h.url, { token: token(user), device });
  const room = 'board:rejoin';
  const laptop = await connect('alice', 'laptop');
  const phone = await connect('alice', 'phone');
  t.after(() => closeClients(laptop, phone));
  await laptop.join(room);
  await phone.join(room);
  for (let i = 1; i <= 5; i++) await laptop.set(room, `r.${i}`, 'item', { i });
  laptop.send({ type: 'cursor', room, seq: 5 });
  assert.equal((await phone.waitFor(isCursor, 'cursor 5')).seq, 5);
  await waitUntil(async () => (await api(h.url, 'GET', `/v1/rooms/${room}/cursors`, { key: KEY })).body.cursors.length === 1, 'stored');
  await laptop.expect({ type: 'leave', room }, 'left');
  const j = await laptop.join(room);
  assert.deepEqual(j.cursors, [{ device: 'laptop', seq: 5 }], 'joined.cursors has it');

  await t.test('the presence entry of the rejoined device shows its stored cursor', async () => {
    const v = await connect('viewer', 'v');
    t.after(() => v.close());
    const entry = (await v.join(room)).presence.find((p) => p.device === 'laptop');
    assert.equal(entry.cursor, 5);
  });

  await t.test('a value lower than the stored one is ignored after the rejoin', async () => {
    laptop.send({ type: 'cursor', room, seq: 2 });
    await laptop.ping();
    await phone.ping();
    assert.deepEqual(phone.drain(isCursor), []);
  });

  await t.test('the backend keeps the highest value in any case', async () => {
    laptop.send({ type: 'cursor', room, seq: 3 });
    await laptop.set(room, 'r.6', 'item', { i: 6 }); // commits the cursor write with it
    const r = await api(h.url, 'GET', `/v1/rooms/${room}/cursors`, { key: KEY });
    assert.deepEqual(r.body.cursors.map((c) => c.seq), [5]);
  });
});
