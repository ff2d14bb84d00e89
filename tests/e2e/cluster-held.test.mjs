// cluster-held.test.mjs -- what a node does while one of its commits is out
// for long (a slow database) and another node writes the room
// (docs/CLUSTER.md): a session's writes are decided in the order it sent
// them, even when its batch is fenced out by the other node's commit and
// decided again; and joins never read the store on the loop: a join waits
// for the room's pending entries and, past 250 ms, the room's new writes
// wait behind it; a join that then finds its replica behind, or needs the
// log for its catch-up, waits for another asynchronous read. Node 1 runs
// with --store-faults FILE; "delay MS" in FILE holds its next commit that
// long, so that the other node's commit lands first, deterministically
// ("delay-fetch MS": its next read of a room).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { startCluster } from './lib/cluster.mjs';
import { api, closeClients, fetchMetrics, SyncClient, token } from './lib/sync.mjs';

const KEY = 'cluster-held-api-key';
const faultsDir = mkdtempSync(path.join(tmpdir(), 'wsync-held-'));
const faults = path.join(faultsDir, 'faults');
let cl;
let n = 0;

before(async () => {
  cl = await startCluster(2, {
    // Both nodes decide the ops written through them (fences, held
    // commits: what these tests are about), not their rooms' owners.
    nodeArgs: (i) => ['--api-key', KEY, '--rate', '100000', '--burst', '100000', '--forward-ops', 'off',
      ...(i === 0 ? ['--store-faults', faults] : [])],
  });
});
after(async () => {
  try {
    if (cl) await cl.stop();
  } finally {
    rmSync(faultsDir, { recursive: true, force: true });
  }
});

const connect = (i, user) => SyncClient.connect(cl.nodes[i].url, { token: token(user), device: `${user}-d${++n}` });
const roomName = (what) => `held-${what}-${process.pid}-${++n}`;
const entries = (c, room) => c.log.filter((m) => m.type === 'op' && m.room === room);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const counts = async () => {
  const m = await fetchMetrics(cl.nodes[0].url, KEY);
  return { sync: m.get('wsync_store_reads_total{mode="sync"}'), waited: m.get('wsync_joins_waited_total'),
    refetched: m.get('wsync_joins_refetched_total') };
};
const op = (c, room, cid, fields) => c.request({ type: 'op', room, cid, op: { kind: 'set', item: cid, fields } }, 15000);
/** A room written from both nodes, node 1's replica current at seq 3. */
async function writtenFromBoth(what, user1, user2) {
  const room = roomName(what);
  const a = await connect(0, user1);
  const b = await connect(1, user2);
  const ja = await a.join(room);
  await b.join(room);
  await a.set(room, 'a0', 'a0', { v: 0 });
  await b.set(room, 'b0', 'b0', { v: 0 });
  await a.entry(room, 2);
  await a.set(room, 'a1', 'a1', { v: 1 });
  return { room, a, b, ja };
}

test('a write fenced out by another node goes again before its session\'s later writes that waited meanwhile', async () => {
  const room = roomName('fenced');
  const a = await connect(0, 'alice'); // node 1: its commit is held
  const b = await connect(1, 'bob'); // node 2: commits first
  await a.join(room);
  await b.join(room);
  await a.set(room, 'a0', 'x', { v: 0 });
  await b.set(room, 'b0', 'y', { v: 0 });
  await a.entry(room, 2);
  // Alice's node reads bob's write before deciding hers: her replica is
  // current when W comes.
  await a.set(room, 'a1', 'x', { v: 1 });
  const m0 = await fetchMetrics(cl.nodes[0].url, KEY);

  // Node 1's next commit (alice's W) is held 1.5 s ...
  writeFileSync(faults, 'delay 1500\n');
  a.send({ type: 'op', room, id: 'w', cid: 'a-w', op: { kind: 'set', item: 'x', fields: { v: 'w' } } });
  // ... while bob's op commits on node 2 and reaches node 1 over the bus:
  // alice's replica is stale with W pending, ...
  const bAck = await b.set(room, 'b1', 'y', { v: 1 });
  assert.equal(bAck.seq, 4);
  await a.entry(room, 4);
  // ... so her next writes wait for W's outcome. W is fenced out (bob took
  // seq 4 first) and decided again: before them, as she sent it.
  a.send({ type: 'op', room, id: 'x1', cid: 'a-x1', op: { kind: 'set', item: 'x', fields: { v: 'x1' } } });
  a.send({ type: 'op', room, id: 'x2', cid: 'a-x2', op: { kind: 'set', item: 'x', fields: { v: 'x2' } } });
  const replies = [];
  for (const id of ['w', 'x1', 'x2']) replies.push(await a.waitFor((m) => m.re === id, `the reply to ${id}`, 10000));
  assert.deepEqual(replies.map((r) => [r.re, r.type, r.seq]), [['w', 'ack', 5], ['x1', 'ack', 6], ['x2', 'ack', 7]],
    JSON.stringify(replies));
  assert.ok(a.log.indexOf(replies[0]) < a.log.indexOf(replies[1]) && a.log.indexOf(replies[1]) < a.log.indexOf(replies[2]),
    'answered in the order sent');
  // Every member sees one gapless order, W before X1 before X2.
  for (const c of [a, b]) {
    await c.entry(room, 7);
    assert.deepEqual(entries(c, room).map((m) => `${m.seq}:${m.cid}`), ['1:a0', '2:b0', '3:a1', '4:b1', '5:a-w', '6:a-x1', '7:a-x2'],
      `${c.name}: one order`);
  }
  const m1 = await fetchMetrics(cl.nodes[0].url, KEY);
  const fenced = [m0, m1].map((m) => m.get('wsync_stale_commits_total'));
  assert.ok(fenced[1] > fenced[0], `node 1: W's batch was fenced out (stale commits ${fenced})`);
  await closeClients([a, b]);
});

test('a write waiting for its dedupe lookup holds back its session\'s next request, even one with nothing to look up', async () => {
  const room = roomName('lookup');
  const first = await connect(1, 'carol');
  await first.join(room);
  const orig = await first.set(room, 'once', 'k', { v: 1 });
  const device = first.welcome.device;
  await first.close();
  // The same device on node 1, which has never seen the cid: its batch (the
  // re-send and a lock request sent behind it) meets node 2's record and
  // rolls back; the cid is looked up, and the lock waits for that answer.
  const c = await SyncClient.connect(cl.nodes[0].url, { token: token('carol'), device });
  await c.join(room);
  c.send({ type: 'op', room, id: 'r1', cid: 'once', op: { kind: 'set', item: 'k', fields: { v: 1 } } });
  c.send({ type: 'lock', room, id: 'r2', item: 'k', ttl: 60000 });
  const r1 = await c.waitFor((m) => m.re === 'r1', 'the re-send answered', 10000);
  const r2 = await c.waitFor((m) => m.re === 'r2', 'the lock behind it answered', 10000);
  assert.deepEqual([r1.type, r1.duplicate, r1.seq], ['ack', true, orig.seq], JSON.stringify(r1));
  assert.equal(r2.type, 'granted', JSON.stringify(r2));
  assert.ok(c.log.indexOf(r1) < c.log.indexOf(r2), `answered in the order sent: ${JSON.stringify([r1, r2])}`);
  await c.close();
});

test('a join behind a commit held past 250 ms waits for it, and the room\'s later writes wait behind the join', async () => {
  const room = roomName('pending');
  const a = await connect(0, 'ann');
  await a.join(room);
  await a.set(room, 'a0', 'a0', { v: 0 });
  const c0 = await counts();
  writeFileSync(faults, 'delay 1500\n');
  const w1 = op(a, room, 'w1', { v: 1 }); // its batch is held
  await sleep(50);
  const w2 = op(a, room, 'w2', { v: 2 }); // the next batch, waiting for the held one
  const c = await connect(0, 'cid');
  const joined = c.request({ type: 'join', room }, 15000);
  await sleep(600); // past the join's 250 ms
  const w3 = op(a, room, 'w3', { v: 3 }); // waits behind the join
  const j = await joined;
  assert.equal(j.type, 'joined', JSON.stringify(j).slice(0, 300));
  const acks = await Promise.all([w1, w2, w3]);
  assert.deepEqual(acks.map((r) => [r.type, r.seq]), [['ack', 2], ['ack', 3], ['ack', 4]], JSON.stringify(acks));
  // The committed state when the join was served: w1 and w2, not w3, which
  // reaches the member live.
  assert.equal(j.seq, 3, JSON.stringify(j).slice(0, 300));
  assert.deepEqual(Object.keys(j.snapshot.items).sort(), ['a0', 'w1', 'w2']);
  await c.entry(room, 4);
  assert.deepEqual(entries(c, room).map((m) => m.seq), [4]);
  const c1 = await counts();
  assert.ok(c1.waited > c0.waited, 'the join waited for the pending entries');
  assert.equal(c1.sync - c0.sync, 0, 'node 1: no synchronous read');
  await closeClients([a, c]);
});

test('a join behind a commit held past 250 ms: the room\'s later backend writes wait behind the join too', async () => {
  const room = roomName('pending-api');
  const a = await connect(0, 'abe');
  await a.join(room);
  await a.set(room, 'a0', 'a0', { v: 0 });
  writeFileSync(faults, 'delay 1500\n');
  const w1 = op(a, room, 'w1', { v: 1 }); // its batch is held
  const c = await connect(0, 'cbe');
  const joined = c.request({ type: 'join', room }, 15000);
  await sleep(600); // past the join's 250 ms
  const w2 = api(cl.nodes[0].url, 'POST', `/v1/rooms/${room}/ops`, {
    key: KEY, body: { cid: 'api-w2', op: { kind: 'set', item: 'w2', fields: { v: 2 } } },
  }); // waits behind the join
  const j = await joined;
  assert.equal(j.type, 'joined', JSON.stringify(j).slice(0, 300));
  const [r1, r2] = await Promise.all([w1, w2]);
  assert.deepEqual([r1.type, r1.seq], ['ack', 2], JSON.stringify(r1));
  assert.equal(r2.status, 200, r2.text);
  assert.equal(r2.body.seq, 3, r2.text);
  // The committed state when the join was served: w1, not the backend
  // write, which reaches the member live.
  assert.equal(j.seq, 2, JSON.stringify(j).slice(0, 300));
  assert.deepEqual(Object.keys(j.snapshot.items).sort(), ['a0', 'w1']);
  await c.entry(room, 3);
  assert.deepEqual(entries(c, room).map((m) => m.seq), [3]);
  await closeClients([a, c]);
});

test('a catch-up join on a replica another node wrote while this node\'s commit was held: read again without blocking', async () => {
  const { room, a, b, ja } = await writtenFromBoth('behind', 'amy', 'bea');
  const c0 = await counts();
  writeFileSync(faults, 'delay 1500\n');
  const w = op(a, room, 'w', { v: 'w' }); // node 1's batch held ...
  assert.equal((await b.set(room, 'b1', 'b1', { v: 1 })).seq, 4); // ... while node 2 takes seq 4
  await a.entry(room, 4); // node 1 has heard: its replica is behind, with w pending
  // A backend write and a catch-up join on node 1 meanwhile.
  const posted = api(cl.nodes[0].url, 'POST', `/v1/rooms/${room}/ops`,
    { key: KEY, body: { cid: 'api-1', op: { kind: 'set', item: 'api', fields: { v: 1 } } } });
  const d = await connect(0, 'dot');
  const j = await d.request({ type: 'join', room, since: { epoch: ja.epoch, seq: 1 } }, 15000);
  assert.equal(j.type, 'joined', JSON.stringify(j).slice(0, 300));
  assert.equal(j.recovered, true, JSON.stringify(j).slice(0, 300));
  const p = await posted;
  assert.equal(p.status, 200, p.text);
  const wa = await w;
  assert.equal(wa.type, 'ack', JSON.stringify(wa));
  // Everything after seq 1 exactly once, in order: from the catch-up, then live.
  const last = Math.max(wa.seq, p.body.seq);
  assert.equal(last, 6);
  await d.waitFor(() => j.seq === last || entries(d, room).some((m) => m.seq === last), `seq ${last} at dot`, 10000);
  const seen = [...j.ops.map((o) => o.seq), ...entries(d, room).map((m) => m.seq)];
  assert.deepEqual(seen, [2, 3, 4, 5, 6], JSON.stringify(j).slice(0, 400));
  const c1 = await counts();
  assert.equal(c1.sync - c0.sync, 0, 'node 1: no synchronous read');
  await closeClients([a, b, d]);
});

test('a catch-up join released behind a backend write waits for another read for its log, not the store on the loop', async () => {
  const { room, a, b, ja } = await writtenFromBoth('refetch', 'abe', 'ben');
  const c0 = await counts();
  assert.equal((await b.set(room, 'b1', 'b1', { v: 1 })).seq, 4);
  await a.entry(room, 4); // node 1's replica is behind
  writeFileSync(faults, 'delay-fetch 800\n');
  const w = op(a, room, 'w', { v: 'w' }); // waits for a read of the room, made 800 ms later
  await sleep(50);
  // Both wait for the read after that one: the backend write first, so the
  // join, released right after it is decided, finds it pending and waits,
  // and then needs the log for its catch-up.
  const posted = api(cl.nodes[0].url, 'POST', `/v1/rooms/${room}/ops`,
    { key: KEY, body: { cid: 'api-2', op: { kind: 'set', item: 'api', fields: { v: 2 } } } });
  await sleep(50);
  const d = await connect(0, 'dan');
  const j = await d.request({ type: 'join', room, since: { epoch: ja.epoch, seq: 1 } }, 15000);
  assert.equal(j.type, 'joined', JSON.stringify(j).slice(0, 300));
  assert.equal(j.recovered, true, JSON.stringify(j).slice(0, 300));
  const [wa, p] = await Promise.all([w, posted]);
  assert.deepEqual([wa.type, wa.seq], ['ack', 5], JSON.stringify(wa));
  assert.deepEqual([p.status, p.body.seq], [200, 6], p.text);
  if (j.seq < 6) await d.entry(room, 6);
  const seen = [...j.ops.map((o) => o.seq), ...entries(d, room).map((m) => m.seq)];
  assert.deepEqual(seen, [2, 3, 4, 5, 6], JSON.stringify(j).slice(0, 400));
  const c1 = await counts();
  assert.equal(c1.sync - c0.sync, 0, 'node 1: no synchronous read');
  assert.ok(c1.refetched > c0.refetched, `the join waited for another read (${c0.refetched} -> ${c1.refetched})`);
  await closeClients([a, b, d]);
});

test('a replica read again after its batch was fenced out drops what the batch changed, even items no one else wrote', async () => {
  const room = roomName('dirty');
  const a = await connect(0, 'ada');
  const b = await connect(1, 'bo');
  await a.join(room);
  await b.join(room);
  const z = await a.set(room, 'z0', 'z', { v: 0 });
  await a.set(room, 'm0', 'm', { x: 0 });
  await b.entry(room, 2);
  const m0 = await fetchMetrics(cl.nodes[0].url, KEY);
  writeFileSync(faults, 'delay 1500\n');
  // One batch on node 1, held: z (checked against its version), m changed, n made ...
  const held = a.request({ type: 'op', room, cid: 'a-batch', op: { kind: 'batch', ops: [
    { kind: 'set', item: 'z', fields: { v: 1 }, base: z.seq },
    { kind: 'set', item: 'm', fields: { x: 9 } },
    { kind: 'set', item: 'n', fields: { new: true } },
  ] } }, 15000);
  await sleep(50);
  // ... while node 2 writes z: the batch is fenced out, and decided again it
  // conflicts, so none of it may stay in node 1's memory.
  assert.equal((await b.set(room, 'b-z', 'z', { v: 2 })).seq, 3);
  const r = await held;
  assert.deepEqual([r.type, r.code], ['error', 'conflict'], JSON.stringify(r));
  const c = await connect(0, 'cy'); // served from node 1's memory
  const j = await c.join(room);
  const s = await api(cl.nodes[1].url, 'GET', `/v1/rooms/${room}`, { key: KEY }); // the store
  assert.equal(s.status, 200, s.text);
  assert.equal(j.seq, 3);
  assert.deepEqual(j.snapshot.items, s.body.items, 'node 1\'s memory is the store\'s state');
  assert.deepEqual(Object.keys(j.snapshot.items).sort(), ['m', 'z']);
  assert.deepEqual(j.snapshot.items.m.fields, { x: 0 });
  const m1 = await fetchMetrics(cl.nodes[0].url, KEY);
  const changes = [m0, m1].map((m) => m.get('wsync_room_reloads_changes_total'));
  assert.ok(changes[1] > changes[0], `read again as changes (${changes})`);
  await closeClients([a, b, c]);
});
