// sync-ring.test.mjs -- resume buffers shared per room (docs/PROTOCOL.md 3.4,
// 3.5): room messages are kept once, in the room's ring (--resume-ring), and
// a session's outbox names runs of ring positions plus a small queue of its
// own messages (--session-queue). A resume replays the interleaving of
// several rooms and its own replies exactly; a session further behind than
// a ring holds gets resumed:false and catches up by join with since; clients
// that never send recv do not make the server's memory grow with messages,
// and what every recipient confirmed is not kept.
import assert from 'node:assert/strict';
import test from 'node:test';

import { SyncClient, closeClients, fetchMetrics, startSyncServer, token } from './lib/sync.mjs';

const KEY = 'ring-test-api-key-0123456789';
const FAST = ['--rate', '100000', '--burst', '100000', '--api-key', KEY];

let devN = 0;
const dev = (p) => `${p}-${++devN}`;
const connect = (srv, user, device = dev(user)) => SyncClient.connect(srv.url, { token: token(user), device });
const resumeHello = (c, last) => ({
  token: token(c.welcome.user), device: c.welcome.device, session: c.welcome.session, last,
});
const isEntry = (m) => m.type === 'op' || m.type === 'message';
const disconnected = (room, c) => (m) => m.type === 'presence' && m.room === room && m.event === 'update' &&
  m.device === c.welcome.device && m.connected === false;
const memOf = async (srv) => {
  const m = await fetchMetrics(srv.url, KEY);
  return { outbox: m.get('wsync_outbox_bytes'), ring: m.get('wsync_resume_ring_bytes') };
};

test('a session resumed after falling behind replays two rooms and its own replies in their first order', async (t) => {
  const srv = await startSyncServer(t, FAST);
  const [r1, r2] = ['board:ring-1', 'board:ring-2'];
  const a = await connect(srv, 'ana', 'laptop');
  const b = await connect(srv, 'ben');
  t.after(() => closeClients(a, b));
  for (const c of [a, b]) {
    await c.join(r1);
    await c.join(r2);
  }
  // Interleaved: room entries of both rooms, ephemeral publishes, and
  // replies to ana alone (acks, pongs); ana never confirms any of it.
  let seq1 = 0;
  let seq2 = 0;
  for (let i = 0; i < 12; i++) {
    await b.set(r1, `b1.${i}`, 'x', { i });
    await a.entry(r1, ++seq1);
    await b.expect({ type: 'publish', room: r2, data: { i }, ephemeral: true }, 'ack');
    await a.waitFor((m) => m.type === 'message' && m.room === r2 && m.data?.i === i, `ephemeral ${i}`);
    if (i % 3 === 0) await a.ping();
    if (i % 4 === 1) {
      await a.set(r2, `a2.${i}`, 'y', { i });
      await a.entry(r2, ++seq2);
    }
    await b.set(r2, `b2.${i}`, 'z', { i });
    await a.entry(r2, ++seq2);
  }
  await a.ping();
  const seen = a.afterWelcome;
  const last = 9; // somewhere inside the first runs
  await a.drop();
  await b.waitFor(disconnected(r1, a), 'ana disconnected');
  // While detached, more of both rooms.
  for (let i = 0; i < 5; i++) {
    await b.set(r1, `b1.late.${i}`, 'x', { late: i });
    await b.set(r2, `b2.late.${i}`, 'z', { late: i });
  }
  const a2 = await SyncClient.connect(srv.url, resumeHello(a, last), 'ana2');
  t.after(() => a2.close());
  assert.equal(a2.welcome.resumed, true);
  await a2.ping();
  const replay = a2.afterWelcome;
  assert.deepEqual(replay.slice(0, seen.length - last), seen.slice(last),
    'what the first connection got after last, in the same order, byte for byte');
  const missed = replay.slice(seen.length - last);
  assert.deepEqual(missed.filter(isEntry).map((m) => `${m.room}#${m.seq}`),
    [0, 1, 2, 3, 4].flatMap((i) => [`${r1}#${seq1 + i + 1}`, `${r2}#${seq2 + i + 1}`]), 'then the missed entries');
  assert.equal(missed.at(-1).type, 'pong');
});

test('ring overflow: a session further behind than --resume-ring holds gets resumed:false and catches up by since', async (t) => {
  const srv = await startSyncServer(t, [...FAST, '--resume-ring', '2K']);
  const room = 'board:ring-overflow';
  const a = await connect(srv, 'cai', 'phone');
  const b = await connect(srv, 'dee');
  t.after(() => closeClients(a, b));
  const joined = await a.join(room);
  await b.join(room);
  await b.set(room, 'd.0', 'x', { n: 0 });
  await a.entry(room, 1);
  const pos = { epoch: joined.epoch, seq: 1 };

  await t.test('behind within the ring: resumed', async () => {
    await a.drop();
    await b.waitFor(disconnected(room, a), 'cai disconnected');
    await b.set(room, 'd.1', 'x', { n: 1 });
    const a2 = await SyncClient.connect(srv.url, resumeHello(a, a.received), 'cai2');
    assert.equal(a2.welcome.resumed, true);
    await a2.entry(room, 2);
    a.last = a.received + a2.received;
    pos.seq = 2;
    await a2.drop();
    await b.waitFor((m) => disconnected(room, a)(m) && b.log.filter(disconnected(room, a)).length === 2, 'cai disconnected again');
  });

  await t.test('40 entries of ~120 bytes later the ring has moved on: resumed:false', async () => {
    for (let i = 0; i < 40; i++) await b.set(room, `d.${i + 2}`, 'x', { pad: 'p'.repeat(60), i });
    const mem = await memOf(srv);
    assert.ok(mem.ring <= 2048 + 200, `the ring keeps about --resume-ring bytes: ${mem.ring}`);
    const a3 = await SyncClient.connect(srv.url, resumeHello(a, a.last), 'cai3');
    t.after(() => a3.close());
    assert.equal(a3.welcome.resumed, false, 'told to start over');
    // The documented way back: join again with since; the entries come from the store.
    const j = await a3.join(room, { since: pos });
    assert.equal(j.recovered, true);
    assert.deepEqual(j.ops.map((o) => o.seq), Array.from({ length: 40 }, (_, i) => i + 3));
  });
});

test('--session-queue: a joined larger than the queue is not kept, a small reply is', async (t) => {
  const srv = await startSyncServer(t, [...FAST, '--session-queue', '1K']);
  const room = 'board:ring-queue';
  const w = await connect(srv, 'writer');
  t.after(() => closeClients(w));
  await w.join(room);
  for (let i = 0; i < 8; i++) await w.set(room, `w.${i}`, `item-${i}`, { text: 'q'.repeat(150) });
  const a = await connect(srv, 'eve', 'tablet');
  const j = await a.join(room); // ordinal 1, about 1.5 KB: over the queue
  assert.ok(JSON.stringify(j).length > 1024);
  await a.ping(); // ordinal 2
  await a.drop();
  const gone = await SyncClient.connect(srv.url, resumeHello(a, 0), 'eve-from-0');
  t.after(() => gone.close());
  assert.equal(gone.welcome.resumed, false, 'the joined was not kept: a resume before it fails');

  const b = await connect(srv, 'fay', 'desk');
  t.after(() => closeClients(b));
  await b.join(room); // ordinal 1, not kept
  await b.ping(); // ordinal 2, kept
  await b.drop();
  const b2 = await SyncClient.connect(srv.url, resumeHello(b, 1), 'fay2');
  t.after(() => b2.close());
  assert.equal(b2.welcome.resumed, true, 'after the joined, the small reply is still there');
  await b2.ping();
  assert.deepEqual(b2.afterWelcome.map((m) => m.type), ['pong', 'pong']);
});

test('clients that never send recv: the memory the server holds for resumes does not grow with messages', async (t) => {
  const srv = await startSyncServer(t, [...FAST, '--resume-ring', '4K']);
  const room = 'board:ring-norecv';
  const subs = [];
  for (let i = 0; i < 20; i++) subs.push(await connect(srv, `sub${i}`));
  const p = await connect(srv, 'pub');
  t.after(() => closeClients(p, ...subs));
  for (const c of subs) await c.join(room);
  await p.join(room);
  const publish = async (from, n) => {
    for (let i = from; i < from + n; i++) {
      await p.expect({ type: 'publish', room, cid: `p.${i}`, data: { n: String(i).padStart(6, '0'), pad: 'm'.repeat(80) } }, 'ack');
    }
    await p.ping();
    await Promise.all(subs.map((c) => c.waitFor((m) => m.type === 'message' && m.cid === `p.${from + n - 1}`, 'the last message')));
  };
  await publish(0, 100);
  const m1 = await memOf(srv);
  await publish(100, 400);
  const m2 = await memOf(srv);
  const mps = 400 * 150; // what 400 more messages of ~150 bytes would cost one session that copied them
  assert.ok(m2.ring <= 4096 + 300, `ring bounded: ${m2.ring}`);
  assert.ok(m2.outbox <= m1.outbox + 2048, `outboxes do not grow with messages: ${m1.outbox} -> ${m2.outbox}`);
  assert.ok(m2.outbox + m2.ring < mps, `far below one copy per session: ${m2.outbox} + ${m2.ring}`);
  // Every subscriber still got every message, in order (the ring is for resumes, not delivery).
  for (const c of subs) {
    const ns = c.log.filter((m) => m.type === 'message').map((m) => Number(m.data.n));
    assert.deepEqual(ns, Array.from({ length: 500 }, (_, i) => i));
  }
  // Once every recipient confirmed them, the ring does not keep them.
  for (const c of [...subs, p]) c.send({ type: 'recv', n: c.received });
  await Promise.all([...subs, p].map((c) => c.ping()));
  const m3 = await memOf(srv);
  assert.equal(m3.ring, 0, 'every room message confirmed: nothing kept');
});
