// sync-restart.test.mjs -- durability of the sync core across restarts
// (docs/PROTOCOL.md 5.3, 5.5, 6): a graceful restart keeps epoch, seq, the
// document, the log and the dedupe records exactly; and a crash test: a
// client streams ops while the server is SIGKILLed three times, re-sends what
// was not acknowledged, and in the end every acknowledged op is in the log
// exactly once, gapless, and every replica converges.
import assert from 'node:assert/strict';
import test from 'node:test';

import { scale } from './lib/server.mjs';
import { Replica, SyncClient, closeClients, restartableServer, snapshotOf, token } from './lib/sync.mjs';

const isEntry = (room) => (m) => (m.type === 'op' || m.type === 'message') && m.room === room && m.seq !== undefined;
let snapN = 0;
const snap = (h, room) => snapshotOf(h.url, room, { token: token('viewer', { '*': 'r' }), device: `view-${++snapN}` });

test('a graceful restart (SIGTERM) keeps epoch, seq, document, log and dedupe records', async (t) => {
  const h = await restartableServer(t, ['--rate', '100000', '--burst', '100000']);
  const room = 'board:restart';
  const hello = { token: token('alice'), device: 'laptop' };
  const a = await SyncClient.connect(h.url, hello);
  const j0 = await a.join(room);
  const acks = [];
  acks.push(await a.set(room, 'k.1', 'card-1', { title: 'One', tags: ['a', 'b'] }));
  acks.push(await a.set(room, 'k.2', 'card-2', { title: 'Two', n: 2.5 }));
  acks.push(await a.set(room, 'k.3', 'card-1', { title: null, col: 'done' }));
  acks.push(await a.expect({ type: 'publish', room, cid: 'k.4', data: { text: 'hi' } }, 'ack'));
  acks.push(await a.expect({ type: 'op', room, cid: 'k.5', op: { kind: 'del', item: 'card-2' } }, 'ack'));
  acks.push(await a.set(room, 'k.6', 'card-3', { deep: { a: [1, { b: null }] } }));
  assert.deepEqual(acks.map((x) => x.seq), [1, 2, 3, 4, 5, 6]);
  for (let q = 1; q <= 6; q++) await a.entry(room, q);
  const pre = await snap(h, room);
  const history = (await a.joinWhole(room, { since: { epoch: j0.epoch, seq: 0 } })).ops;
  assert.equal(history.length, 6);

  await h.stop();
  assert.equal((await a.closed()).code, 1001, 'clients are told the server is going away');
  await h.start();

  await t.test('the snapshot is the same', async () => {
    assert.deepEqual(await snap(h, room), pre);
  });
  const b = await SyncClient.connect(h.url, hello); // the same device, a new session
  t.after(() => b.close());
  await t.test('since the old position -> recovered, no ops', async () => {
    const j = await b.joinWhole(room, { since: { epoch: pre.epoch, seq: pre.seq } });
    assert.equal(j.recovered, true);
    assert.equal(j.epoch, pre.epoch);
    assert.equal(j.seq, pre.seq);
    assert.deepEqual(j.ops, []);
  });
  await t.test('since 0 -> the same log, entry for entry', async () => {
    const j = await b.joinWhole(room, { since: { epoch: pre.epoch, seq: 0 } });
    assert.equal(j.recovered, true);
    assert.deepEqual(j.ops, history);
  });
  await t.test('re-sent cids are duplicates with their original seq, not broadcast again', async () => {
    const d1 = await b.op(room, 'k.1', { kind: 'set', item: 'card-1', fields: { title: 'One', tags: ['a', 'b'] } });
    assert.deepEqual(d1, { type: 'ack', re: d1.re, room, cid: 'k.1', seq: 1, duplicate: true });
    const d5 = await b.op(room, 'k.5', { kind: 'del', item: 'card-2' });
    assert.equal(d5.seq, 5);
    assert.equal(d5.duplicate, true, 'the retry of an applied del is not not_found');
    const d4 = await b.expect({ type: 'publish', room, cid: 'k.4', data: { text: 'hi' } }, 'ack');
    assert.equal(d4.seq, 4);
    assert.equal(d4.duplicate, true);
    // The next new entry takes seq 7, and is the only one broadcast.
    const n = await b.set(room, 'k.7', 'card-4', {});
    assert.equal(n.seq, 7);
    await b.entry(room, 7);
    await b.ping();
    assert.deepEqual(b.drain(isEntry(room)), []);
  });
  await t.test('a second restart, this time a crash (SIGKILL), keeps it all too', async () => {
    const pre2 = await snap(h, room);
    assert.equal(pre2.seq, 7);
    await h.kill();
    await b.closed();
    await h.start();
    assert.deepEqual(await snap(h, room), pre2);
    const c = await SyncClient.connect(h.url, { token: token('alice'), device: 'laptop' });
    const j = await c.joinWhole(room, { since: { epoch: pre.epoch, seq: 6 } });
    assert.equal(j.recovered, true);
    assert.deepEqual(j.ops.map((o) => o.cid), ['k.7']);
    const d = await c.set(room, 'k.7', 'card-4', {});
    assert.equal(d.duplicate, true);
    assert.equal(d.seq, 7);
    await c.close();
  });
});

/**
 * Streams PER_ROUND new ops per round (plus the re-sends) while the server is
 * SIGKILLed after KILL_AFTER[i] acks of round i; the round after the last kill
 * finishes cleanly. Then audits the log and the replicas.
 */
async function crashRun(t, { args = [], PER_ROUND, KILL_AFTER }) {
  const h = await restartableServer(t, ['--rate', '1000000', '--burst', '1000000', ...args]);
  const room = 'board:crash';
  const ROUNDS = KILL_AFTER.length + 1;
  const WINDOW = 64; // ops in flight at most
  const writerHello = { token: token('writer'), device: 'w1' };

  const ops = new Map(); // cid -> op, in send order
  const acked = new Map(); // cid -> seq
  let duplicates = 0;
  let epoch;
  let k = 0;
  const readers = []; // {hello, rep, c}

  /** Connects a reader and (re)joins with since its position (or fresh). */
  async function attach(r) {
    r.c = await SyncClient.connect(h.url, r.hello);
    if (!r.rep) {
      r.rep = new Replica(await r.c.join(room));
      return;
    }
    const j = await r.c.joinWhole(room, { since: r.rep.position });
    assert.equal(j.recovered, true, `reader rejoin at ${JSON.stringify(r.rep.position)} recovers`);
    r.rep.reset(j);
  }
  /** Applies what a reader received live before its connection died. */
  const absorb = (r) => { for (const e of r.c.drain(isEntry(room))) r.rep.apply(e); };

  for (let round = 0; round < ROUNDS; round++) {
    const w = await SyncClient.connect(h.url, writerHello);
    const jw = await w.join(room);
    if (epoch === undefined) epoch = jw.epoch;
    assert.equal(jw.epoch, epoch, `the epoch survives crash ${round}`);
    if (round === 0 || round === 1) readers.push({ hello: { token: token(`reader${round}`, { '*': 'r' }), device: `r${round}` } });
    for (const r of readers) await attach(r);

    // Re-send what was never acknowledged (same cid, same op), then new ops.
    const toSend = [...ops.keys()].filter((cid) => !acked.has(cid));
    for (let i = 0; i < PER_ROUND; i++, k++) {
      const cid = `w1.crash.${k}`;
      ops.set(cid, { kind: 'set', item: `it-${k}`, fields: { v: k, round } });
      toSend.push(cid);
    }
    const killAfter = KILL_AFTER[round] ?? Infinity;
    let inflight = 0;
    let roundAcks = 0;
    let lastFreshSeq = 0;
    let killing = null;
    let wake = null;
    const unexpected = [];
    const done = [];
    for (const cid of toSend) {
      while (inflight >= WINDOW && !w.closeInfo) await new Promise((r) => (wake = r));
      if (w.closeInfo) break;
      inflight++;
      done.push(w.request({ type: 'op', room, cid, op: ops.get(cid) }).then((r) => {
        if (r.type !== 'ack') {
          unexpected.push(r);
          return;
        }
        assert.ok(Number.isInteger(r.seq) && r.seq > 0);
        if (acked.has(cid)) assert.equal(r.seq, acked.get(cid), `${cid} keeps its seq`);
        acked.set(cid, r.seq);
        if (r.duplicate) duplicates++;
        else {
          assert.ok(r.seq > lastFreshSeq, 'acks of new entries come in seq order');
          lastFreshSeq = r.seq;
        }
        if (++roundAcks === killAfter) killing = h.kill();
      }, () => { /* the connection died with the server */ }).finally(() => {
        inflight--;
        if (wake) wake();
      }));
    }
    await Promise.all(done);
    assert.deepEqual(unexpected, [], 'every reply is an ack');
    if (round < ROUNDS - 1) {
      assert.ok(killing, `round ${round} was cut by a kill`);
      await killing;
      await w.closed();
      for (const r of readers) {
        await r.c.closed();
        absorb(r);
      }
      await h.start();
    } else {
      assert.equal(roundAcks, toSend.length, 'the last round acknowledges everything');
      await w.close();
    }
  }
  t.diagnostic(`${ops.size} ops, ${duplicates} duplicate acks after crashes, ${h.generations} server generations`);
  assert.equal(acked.size, ops.size, 'every op was acknowledged in the end');

  // The log: gapless 1..N, each cid once, at the seq its ack said, as sent.
  const auditor = await SyncClient.connect(h.url, { token: token('auditor', { '*': 'r' }), device: 'a1' });
  t.after(() => auditor.close());
  const j = await auditor.joinWhole(room, { since: { epoch, seq: 0 } }); // in parts when large (6.3)
  assert.equal(j.epoch, epoch, 'the epoch is unchanged');
  assert.equal(j.recovered, true);
  assert.equal(j.seq, ops.size, 'one entry per op: nothing lost, nothing doubled');
  assert.deepEqual(j.ops.map((e) => e.seq), Array.from({ length: ops.size }, (_, i) => i + 1), 'seqs are gapless');
  const seen = new Set();
  for (const e of j.ops) {
    assert.ok(!seen.has(e.cid), `cid ${e.cid} appears once`);
    seen.add(e.cid);
    assert.equal(acked.get(e.cid), e.seq, `${e.cid} is at the seq of its ack`);
    assert.deepEqual(e.op, ops.get(e.cid));
    assert.deepEqual(e.from, { user: 'writer', device: 'w1' });
  }
  const fromLog = new Replica({ epoch, seq: 0, recovered: false, snapshot: { items: {} } });
  fromLog.reset(j);

  // The readers catch up with since and converge with each other, the log and a fresh snapshot.
  const fresh = await snap(h, room);
  assert.equal(fresh.seq, ops.size);
  for (const [ri, r] of readers.entries()) {
    while (r.rep.seq < ops.size) r.rep.apply(await r.c.waitFor(isEntry(room), `reader ${ri} entry ${r.rep.seq + 1}`));
    const again = await r.c.joinWhole(room, { since: r.rep.position });
    assert.equal(again.recovered, true);
    assert.deepEqual(again.ops, []);
    assert.deepEqual(r.rep.items, fresh.items, `reader ${ri} converges`);
  }
  assert.deepEqual(fromLog.items, fresh.items);
  assert.equal(Object.keys(fresh.items).length, ops.size);
  await closeClients(readers.map((r) => r.c));
}

test('crash test: SIGKILL three times while a client streams ops', (t) =>
  crashRun(t, { PER_ROUND: scale(300, 150), KILL_AFTER: [scale(40, 20), scale(150, 70), scale(260, 130)] }));

test('crash test with --durability full', (t) =>
  crashRun(t, { args: ['--durability', 'full'], PER_ROUND: scale(100, 60), KILL_AFTER: [scale(50, 30)] }));
