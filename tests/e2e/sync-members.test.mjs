// sync-members.test.mjs -- a session's memberships when it is in several
// rooms (docs/PROTOCOL.md 4, 3.5). The server keeps a session's first
// membership inside the session and allocates the others (room.c,
// room_member_add): leaving the first room while staying in the others,
// joining again into the freed place, a resume after that, and the end of
// such a session must all behave as with separate memberships: entries and
// presence per room, welcome's rooms on resume, nothing left behind.
import assert from 'node:assert/strict';
import test from 'node:test';

import { scale } from './lib/server.mjs';
import { SyncClient, closeClients, startSyncServer, token } from './lib/sync.mjs';

const WINDOW = scale(5000, 10000);

let srv;
test.before(async () => {
  srv = await startSyncServer(null, ['--resume-window', `${WINDOW}ms`, '--rate', '100000', '--burst', '100000']);
});
test.after(() => srv.stopChecked());

let devN = 0;
const connect = (user) => SyncClient.connect(srv.url, { token: token(user), device: `${user}-${++devN}` });
const presenceOf = (room, c, event) => (m) => m.type === 'presence' && m.room === room &&
  m.user === c.welcome.user && m.device === c.welcome.device && (!event || m.event === event);
const entryIn = (room, cid) => (m) => m.type === 'op' && m.room === room && m.cid === cid;

test('a session in several rooms: leaving the first, joining again, resuming', async (t) => {
  const rooms = ['board:m-first', 'board:m-second', 'board:m-third'];
  const [r1, r2, r3] = rooms;
  const r4 = 'board:m-fourth';
  const a = await connect('alice');
  const b = await connect('bob');
  let a2;
  t.after(() => closeClients(a, b, ...(a2 ? [a2] : [])));

  await t.test('three rooms: each delivers its own entries once', async () => {
    for (const r of rooms) await a.join(r);
    for (const r of rooms) {
      await b.join(r);
      await a.waitFor(presenceOf(r, b, 'join'), `bob joins ${r}`);
    }
    for (const [i, r] of rooms.entries()) await b.set(r, `b.${i}`, 'card', { n: i });
    for (const [i, r] of rooms.entries()) await a.waitFor(entryIn(r, `b.${i}`), `bob's entry in ${r}`);
    await a.ping();
    for (const r of rooms) assert.equal(a.log.filter((m) => m.type === 'op' && m.room === r).length, 1, r);
  });

  await t.test('leaving the first room: the others stay, its presence says leave', async () => {
    const left = await a.expect({ type: 'leave', room: r1 }, 'left');
    assert.equal(left.room, r1);
    await b.waitFor(presenceOf(r1, a, 'leave'), 'alice leaves the first room');
    await b.set(r1, 'b.after1', 'card', { n: 10 });
    await b.set(r2, 'b.after2', 'card', { n: 20 });
    await b.set(r3, 'b.after3', 'card', { n: 30 });
    await a.waitFor(entryIn(r2, 'b.after2'), 'the second room still delivers');
    await a.waitFor(entryIn(r3, 'b.after3'), 'the third room still delivers');
    await a.ping();
    assert.equal(a.log.filter(entryIn(r1, 'b.after1')).length, 0, 'nothing from the room left');
    // a newcomer sees alice in the rooms she stayed in only
    const c = await connect('carol');
    const j1 = await c.join(r1);
    const j2 = await c.join(r2);
    assert.deepEqual(j1.presence.map((p) => p.user).sort(), ['bob', 'carol']);
    assert.deepEqual(j2.presence.map((p) => p.user).sort(), ['alice', 'bob', 'carol']);
    await c.close();
    // leaving again is harmless
    const again = await a.expect({ type: 'leave', room: r1 }, 'left');
    assert.equal(again.room, r1);
  });

  await t.test('joining a fourth room and the first again: every room delivers', async () => {
    await a.join(r4);
    const j = await a.join(r1);
    assert.deepEqual(j.presence.map((p) => p.user).sort(), ['alice', 'bob']);
    await b.join(r4);
    for (const r of [r1, r2, r3, r4]) await b.set(r, `b.all.${r}`, 'card', { all: true });
    for (const r of [r1, r2, r3, r4]) await a.waitFor(entryIn(r, `b.all.${r}`), `the entry in ${r}`);
  });

  await t.test('a resume after that: welcome lists the four rooms, the missed entries of each are replayed', async () => {
    await a.ping();
    const last = a.received;
    await a.drop();
    // Presence comes in windows (PROTOCOL.md 8.3): alice's rejoin of the first
    // room and her going away may merge into one `join` with connected false.
    const away = (r) => (m) => (presenceOf(r, a, 'update')(m) || presenceOf(r, a, 'join')(m)) && m.connected === false;
    for (const r of [r1, r2, r3, r4]) await b.waitFor(away(r), `alice away in ${r}`);
    for (const r of [r1, r2, r3, r4]) await b.set(r, `b.missed.${r}`, 'card', { missed: true });
    a2 = await SyncClient.connect(srv.url, { token: token('alice'), device: a.welcome.device,
      session: a.welcome.session, last }, 'alice-2');
    assert.equal(a2.welcome.resumed, true);
    assert.deepEqual([...a2.welcome.rooms].sort(), [r1, r2, r3, r4].sort());
    for (const r of [r1, r2, r3, r4]) await a2.waitFor(entryIn(r, `b.missed.${r}`), `the missed entry of ${r}`);
    await a2.ping();
    for (const r of [r1, r2, r3, r4]) assert.equal(a2.log.filter(entryIn(r, `b.missed.${r}`)).length, 1, r);
  });

  await t.test('after the resume: leaving rooms one by one down to none, then joining again', async () => {
    for (const r of [r2, r1, r4]) {
      await a2.expect({ type: 'leave', room: r }, 'left');
      await b.waitFor(presenceOf(r, a2, 'leave'), `alice leaves ${r}`);
    }
    await b.set(r3, 'b.last3', 'card', { last: true });
    await a2.waitFor(entryIn(r3, 'b.last3'), 'the one room left delivers');
    await a2.expect({ type: 'leave', room: r3 }, 'left');
    await b.waitFor(presenceOf(r3, a2, 'leave'), 'alice leaves the last room');
    const j = await a2.join(r2);
    assert.deepEqual(j.presence.map((p) => p.user).sort(), ['alice', 'bob']);
    await b.set(r2, 'b.back2', 'card', { back: true });
    await a2.waitFor(entryIn(r2, 'b.back2'), 'the room joined again delivers');
  });

  await t.test('ending such a session leaves every room', async () => {
    await a2.join(r3);
    // Her joins reach bob first: a join and a leave within one presence
    // window would show him nothing (PROTOCOL.md 8.3).
    await b.waitFor(presenceOf(r2, a2, 'join'), 'alice back in the second room');
    await b.waitFor(presenceOf(r3, a2, 'join'), 'alice back in the third room');
    await a2.close();
    await b.waitFor(presenceOf(r2, a2, 'leave'), 'alice leaves the second room on bye');
    await b.waitFor(presenceOf(r3, a2, 'leave'), 'alice leaves the third room on bye');
  });
});

test('many sessions join and leave the same rooms in turn', async () => {
  // Sessions whose first room differs, leaving in a different order than
  // they joined: each room's member list stays right (presence lists).
  const rooms = ['board:turn-a', 'board:turn-b', 'board:turn-c'];
  const cs = [];
  for (let i = 0; i < 6; i++) cs.push(await connect(`u${i}`));
  for (const [i, c] of cs.entries()) for (let k = 0; k < 3; k++) await c.join(rooms[(i + k) % 3]);
  for (const [i, c] of cs.entries()) if (i % 2) await c.expect({ type: 'leave', room: rooms[i % 3] }, 'left');
  const probe = await connect('probe');
  for (const [k, r] of rooms.entries()) {
    const j = await probe.join(r);
    const expected = cs.map((c, i) => (i % 2 && i % 3 === k ? null : c.welcome.user)).filter(Boolean);
    assert.deepEqual(j.presence.map((p) => p.user).filter((u) => u !== 'probe').sort(), expected.sort(), r);
  }
  await closeClients(probe, ...cs);
});
