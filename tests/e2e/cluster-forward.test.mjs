// cluster-forward.test.mjs -- `--forward-ops` (src/sync/opfwd.h, CLUSTER.md):
// in a cluster each room has one OWNER node (rendezvous hash over the nodes
// up), a session's op for a room another node owns is forwarded over Redis to
// that owner, decided there by a ghost of the session, and its answer (ack,
// duplicate ack, error) comes back to the session's node, which sends it once
// it has delivered the room up to the seq the owner had delivered when it
// answered. Stored publishes, locks and unlocks of a session wait for its
// forwarded ops of that room. An owner that dies, stalls or goes silent has
// its ops decided again (in order) elsewhere, found by cid if it had stored
// them: never lost, never applied twice.
//
// What is checked:
// 1. rooms written from three nodes at once: every op acked, acks in send
//    order per writer, every ack after the room's earlier entries, history
//    gapless with each cid once, every reader gets every entry once in order
//    and converges on the server's snapshot, no batch fenced out
//    (wsync_stale_commits_total unchanged) and every forwarded op received
//    by an owner (sum of wsync_ops_forwarded_total = sum of
//    wsync_ops_forwarded_in_total, > 0);
// 2. `--forward-ops off`: nothing forwarded, and the fence still makes the
//    same kind of workload converge;
// 3. a session's op, op, stored publish, op (and op, lock, op, unlock, op)
//    sent back to back to a room another node owns are sequenced in that order;
// 4. a lock held by a session of a non-owner node: its forwarded ops are
//    accepted (also with its fence), a wrong fence is lock_lost, other
//    sessions (on the owner and on the third node) get `locked` until the
//    unlock;
// 5. the owner killed (kill -9) while a writer of another node streams ops:
//    every op answered, the history gapless with each cid once, the ops
//    out at the dead owner decided again (wsync_ops_forward_rerouted_total);
// 6. the owner stopped (SIGSTOP) 7 s while ops are out, then continued: its
//    late decisions are duplicates, not second copies (the others take it as
//    gone after 3 s without heartbeat: that is what sends its ops elsewhere);
// 7. the owner up (heartbeats going on) but its answers more than 5 s late
//    (its commit held by a row lock taken with psql): the answer deadline
//    sends the ops elsewhere, and each is still stored once.
//
// The owner of a room is found by watching the metrics: a probe session on a
// node sends one op; if that node's wsync_ops_forwarded_total grew, the owner
// is the node whose wsync_ops_forwarded_in_total grew, else it is the probe's
// node. Tests run one at a time, so nothing else moves these counters.
//
// No wall-clock asserts: waits are bounded guards only. With
// WSYNC_E2E_LOGDIR=DIR every node's log is written to DIR at the end of each
// cluster (add WSYNC_LOG_LEVEL=debug for more).
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ownerOf, startCluster } from './lib/cluster.mjs';
import { cidCounts, history, KEY, SERVER_ARGS, serverDoc, serverSnapshot } from './lib/client-util.mjs';
import { SANITIZED, sanitizerReport, sleep, waitUntil, WAIT_MS } from './lib/server.mjs';
import { api, closeClients, fetchMetrics, Replica, SyncClient, token } from './lib/sync.mjs';

/** A guard on each describe, far above what it needs. */
const SUITE_MS = SANITIZED ? 300000 : 90000;
/** A guard on one answer that may wait for a dead or stopped owner to be noticed and passed over. */
const SLOW_MS = SANITIZED ? 90000 : 30000;

const M = {
  fwd: 'wsync_ops_forwarded_total',
  fwdIn: 'wsync_ops_forwarded_in_total',
  rerouted: 'wsync_ops_forward_rerouted_total',
  stale: 'wsync_stale_commits_total',
};

let n = 0;
const uniq = () => `${process.pid}-${++n}`;

// ---- cluster -----------------------------------------------------------------

/** With WSYNC_E2E_LOGDIR=DIR: every node's log to DIR/fwd-<what>-<node>.log. */
function keepLogs(what, cl) {
  const dir = process.env.WSYNC_E2E_LOGDIR;
  if (!dir || !cl) return;
  mkdirSync(dir, { recursive: true });
  for (const x of cl.nodes) writeFileSync(path.join(dir, `fwd-${what}-${process.pid}-${x.nodeId}.log`), x.stderr);
}

/**
 * Three nodes (extra args for all), every node hearing the two others
 * (wsync_bus_nodes 2) before a test starts: a node that has not heard of
 * another yet would pick another owner. A node that died by itself (not
 * killed by the test: `killed`) fails the suite with its log.
 */
function useCluster(what, extra = []) {
  const h = { cl: null, killed: new Set() };
  before(async () => {
    h.cl = await startCluster(3, { nodeArgs: () => [...SERVER_ARGS, ...extra] });
    await waitUntil(async () => (await values(h.cl.nodes, 'wsync_bus_nodes')).every((v) => v === 2),
      'every node hears the two others', WAIT_MS);
  });
  after(async () => {
    if (!h.cl) return;
    const dead = h.cl.nodes.filter((x) => !x.running && !h.killed.has(x))
      .map((x) => `${x.nodeId} exited (${JSON.stringify(x.srv?.exit)}):\n${sanitizerReport(x.stderr) || x.stderr.slice(-3000)}`);
    for (const x of h.cl.nodes) if (x.pid) try { process.kill(x.pid, 'SIGCONT'); } catch { /* gone */ }
    try {
      await h.cl.stop();
    } finally {
      keepLogs(what, h.cl);
    }
    if (dead.length) throw new Error(`a node died during the tests:\n${dead.join('\n---\n')}`);
  });
  return h;
}

/** One series of /metrics on each node (null for a node not running). */
async function values(nodes, name) {
  return Promise.all(nodes.map(async (x) => {
    if (!x.running) return null;
    return (await fetchMetrics(x.url, KEY)).get(name) ?? 0;
  }));
}

/** {fwd, fwdIn, rerouted, stale}: each an array over the nodes. */
async function counters(nodes) {
  const out = {};
  for (const [k, name] of Object.entries(M)) out[k] = await values(nodes, name);
  return out;
}

const delta = (a, b) => a.map((v, i) => (v === null || b[i] === null ? null : b[i] - v));
const sum = (xs) => xs.reduce((s, v) => s + (v ?? 0), 0);

/** A welcomed client of user on node x (its name says which node). */
function connect(x, user) {
  return SyncClient.connect(x.url, { token: token(user), device: `${user}-${uniq()}` }, `${user}@${x.nodeId}`);
}

/**
 * The owner of room as seen from node nodes[from]: a probe session there
 * joins and sends one op (which creates the room when it is new). Returns
 * {owner (index), forwarded (the probe's op went to another node), ack}.
 */
async function probeOwner(nodes, room, from, forwarding = true) {
  const before0 = await counters(nodes);
  const c = await connect(nodes[from], 'probe');
  try {
    await c.join(room);
    const ack = await c.request({ type: 'op', room, cid: `probe-${uniq()}`, op: { kind: 'set', item: 'probe', fields: { at: from } } });
    assert.equal(ack.type, 'ack', `probe op in ${room}: ${JSON.stringify(ack)}`);
    const after0 = await counters(nodes);
    const dFwd = delta(before0.fwd, after0.fwd);
    const dIn = delta(before0.fwdIn, after0.fwdIn);
    if (dFwd[from] === 0) {
      assert.deepEqual(dIn, nodes.map(() => 0), `${room}: decided on ${nodes[from].nodeId}, nothing forwarded in anywhere`);
      if (forwarding) assert.equal(ownerOf(room, nodes.map((x) => x.nodeId)), nodes[from].nodeId, `${room}: ownerOf`);
      return { owner: from, forwarded: false, ack };
    }
    assert.deepEqual(dFwd, nodes.map((_, i) => (i === from ? 1 : 0)), `${room}: the probe op forwarded once`);
    const owners = dIn.map((v, i) => (v === 1 ? i : -1)).filter((i) => i >= 0);
    assert.equal(owners.length, 1, `${room}: one node decided the probe op for ${nodes[from].nodeId} (${dIn})`);
    assert.equal(sum(dIn), 1);
    // The tests' own computation of the owner (lib/cluster.mjs) agrees.
    assert.equal(ownerOf(room, nodes.map((x) => x.nodeId)), nodes[owners[0]].nodeId, `${room}: ownerOf`);
    return { owner: owners[0], forwarded: true, ack };
  } finally {
    await c.close();
  }
}

/** A room (named after what) whose owner is not nodes[from], found by probing; {room, owner}. */
async function roomOwnedElsewhere(nodes, what, from) {
  for (let tries = 0; tries < 40; tries++) {
    const room = `fwd-${what}-${uniq()}`;
    const p = await probeOwner(nodes, room, from);
    if (p.forwarded) return { room, owner: p.owner };
  }
  throw new Error(`no room of 40 tried is owned by another node than ${nodes[from].nodeId}`);
}

// ---- what clients received -----------------------------------------------------

/** The room's entries (op and stored message) c received, in arrival order. */
const entriesOf = (c, room) => c.log.filter((m) => (m.type === 'op' || m.type === 'message') && m.room === room && Number.isInteger(m.seq));

/**
 * For every ack of room in c.log (after index `from`): every entry of the
 * room with a seq in (joinedSeq, ack.seq) arrived before it (the ack comes
 * after the entries before its op, PROTOCOL.md 5.4, as on one node). Returns
 * the violations.
 */
function acksAfterEntries(c, room, joinedSeq, from = 0) {
  const bad = [];
  const seen = new Set();
  for (let i = 0; i < c.log.length; i++) {
    const m = c.log[i];
    if (m.room !== room) continue;
    if ((m.type === 'op' || m.type === 'message') && Number.isInteger(m.seq)) seen.add(m.seq);
    if (i < from || m.type !== 'ack' || !Number.isInteger(m.seq)) continue;
    const missing = [];
    for (let s = joinedSeq + 1; s < m.seq; s++) if (!seen.has(s)) missing.push(s);
    if (missing.length) bad.push(`ack ${m.cid} seq ${m.seq}${m.duplicate ? ' (duplicate)' : ''} before entries ${missing.slice(0, 8)}${missing.length > 8 ? `... (${missing.length})` : ''}`);
  }
  return bad;
}

/**
 * A reader's view of room: its joined, then the entries it received, applied
 * in order to a replica (asserting seq + 1 each time: once, in order, no gap).
 */
function replicaOf(rd) {
  const rep = new Replica(rd.joined);
  for (const e of entriesOf(rd.c, rd.room)) rep.apply(e);
  return rep;
}

/** Waits until every reader of rs has received room's entries up to seq. */
async function readersAt(rs, seq, ms = WAIT_MS) {
  await waitUntil(() => rs.every((rd) => {
    const es = entriesOf(rd.c, rd.room);
    return es.length && es.at(-1).seq >= seq;
  }), `readers at seq ${seq}: ${rs.map((rd) => `${rd.c.name}@${entriesOf(rd.c, rd.room).at(-1)?.seq ?? rd.joined.seq}`).join(' ')}`, ms);
}

/** The server's document of room, and each reader's replica equal to it (items with their versions). */
async function assertConverged(url, room, readers) {
  const snap = await serverSnapshot(url, room);
  await readersAt(readers, snap.seq);
  for (const rd of readers) {
    const rep = replicaOf(rd);
    assert.equal(rep.seq, snap.seq, `${rd.c.name}: at the room's seq`);
    assert.deepEqual(rep.items, snap.items, `${rd.c.name}: its document is the server's snapshot`);
  }
  return snap;
}

/**
 * The log of room (backend API): seqs gapless 1..N (N the room's seq), each
 * cid once; every acked op of acks ([cid, seq]) at its acked seq. Returns
 * the entries.
 */
async function assertLog(url, room, acks) {
  const snap = await serverSnapshot(url, room);
  const entries = await history(url, room);
  assert.deepEqual(entries.map((e) => e.seq), Array.from({ length: snap.seq }, (_, i) => i + 1), `${room}: the log's seqs are gapless 1..${snap.seq}`);
  const twice = [...cidCounts(entries)].filter(([, k]) => k !== 1);
  assert.deepEqual(twice, [], `${room}: every cid is in the log once`);
  const at = new Map(entries.map((e) => [e.cid, e.seq]));
  for (const [cid, seq] of acks) assert.equal(at.get(cid), seq, `${room}: acked ${cid} is in the log at its acked seq ${seq}`);
  return entries;
}

/** Asserts that xs (seqs in send order) strictly increase. */
function assertIncreasing(xs, what) {
  for (let i = 1; i < xs.length; i++) {
    assert.ok(xs[i] > xs[i - 1], `${what}: seq ${xs[i]} (send #${i}) follows ${xs[i - 1]} (send #${i - 1}); all: ${xs.join(',')}`);
  }
}

/** The last words of the nodes, for a failure's message. */
const lastWords = (cl) => cl.nodes.map((x) => `[${x.nodeId}] ${x.stderr.slice(-2000)}`).join('\n');

// ---- 1, 3, 4: forwarding on (the default) ---------------------------------------

describe('forwarded ops: one decider per room', { timeout: SUITE_MS }, () => {
  const h = useCluster('on');
  const ROOMS = 6;
  const PER = SANITIZED ? 20 : 60;

  test('rooms written from three nodes at once are decided on one node each: no fenced-out batch', async (t) => {
    const { nodes } = h.cl;
    const rooms = [];
    for (let r = 0; r < ROOMS; r++) {
      const room = `fwd-many-${uniq()}`;
      const p = await probeOwner(nodes, room, r % 3); // creates the room: seq 1
      rooms.push({ room, owner: p.owner });
    }
    t.diagnostic(`owners: ${rooms.map((r) => `${r.room}@${nodes[r.owner].nodeId}`).join(' ')}`);
    const clients = [];
    t.after(() => closeClients(clients));
    const readers = [];
    const writers = [];
    for (const { room } of rooms) {
      for (const x of nodes) {
        const rc = await connect(x, 'reader');
        clients.push(rc);
        readers.push({ c: rc, room, joined: await rc.join(room) });
        const wc = await connect(x, 'writer');
        clients.push(wc);
        writers.push({ c: wc, room, joined: await wc.join(room), node: x.nodeId });
      }
    }
    for (const x of [...readers, ...writers]) assert.equal(x.joined.seq, 1, `${x.c.name} joined ${x.room} at seq 1`);
    // Settled: the once-a-second check and the creations behind us.
    await sleep(1200);
    const c0 = await counters(nodes);

    // Every writer pipelines PER sets, all at once; half of the items are shared.
    const sends = writers.map((w) => Array.from({ length: PER }, (_, k) => {
      const who = w.c.welcome.device;
      const item = k % 2 ? `own-${who}-${k % 3}` : `shared-${k % 4}`;
      return { type: 'op', room: w.room, cid: `${who}.${k}`, op: { kind: 'set', item, fields: { [w.node]: k, by: who } } };
    }));
    const replies = await Promise.all(writers.map((w, i) => Promise.all(sends[i].map((m) => w.c.request(m, SLOW_MS)))))
      .catch((err) => { throw new Error(`${err.message}\n${lastWords(h.cl)}`); });

    for (const [i, w] of writers.entries()) {
      const bad = replies[i].filter((r) => r.type !== 'ack');
      assert.deepEqual(bad, [], `${w.c.name} in ${w.room}: every op acked`);
      replies[i].forEach((r, k) => assert.equal(r.cid, sends[i][k].cid, 'the ack names its op'));
      assertIncreasing(replies[i].map((r) => r.seq), `${w.c.name} in ${w.room}: acks in send order`);
    }
    for (const { room } of rooms) {
      const acks = writers.flatMap((w, i) => (w.room === room ? replies[i].map((r) => [r.cid, r.seq]) : []));
      const entries = await assertLog(nodes[0].url, room, acks);
      assert.equal(entries.length, 1 + 3 * PER, `${room}: the probe op and every writer's ops`);
      const snap = await assertConverged(nodes[1].url, room, readers.filter((rd) => rd.room === room));
      assert.equal(snap.seq, 1 + 3 * PER);
    }
    for (const w of writers) {
      assert.deepEqual(acksAfterEntries(w.c, w.room, w.joined.seq), [], `${w.c.name} in ${w.room}: every ack after the entries before its seq`);
    }

    const c1 = await counters(nodes);
    const dStale = delta(c0.stale, c1.stale);
    const dFwd = delta(c0.fwd, c1.fwd);
    const dIn = delta(c0.fwdIn, c1.fwdIn);
    t.diagnostic(`forwarded ${dFwd}, forwarded in ${dIn}, rerouted ${delta(c0.rerouted, c1.rerouted)}, stale commits ${dStale}`);
    assert.deepEqual(dStale, [0, 0, 0], 'no batch fenced out on any node (wsync_stale_commits_total)');
    assert.ok(sum(dFwd) > 0, 'ops were forwarded');
    assert.equal(sum(dFwd), sum(dIn), 'every op forwarded was received by an owner');
    // Each room's writers on the two other nodes forwarded every op of theirs.
    assert.equal(sum(dFwd), rooms.length * 2 * PER, 'the ops of the non-owners\' writers, exactly, were forwarded');
    for (const [i, x] of nodes.entries()) {
      const owned = rooms.filter((r) => r.owner === i).length;
      assert.equal(dIn[i], owned * 2 * PER, `${x.nodeId} decided the forwarded ops of the ${owned} rooms it owns`);
      assert.equal(dFwd[i], (rooms.length - owned) * PER, `${x.nodeId} forwarded its writers' ops of the rooms it does not own`);
    }
    assert.deepEqual(delta(c0.rerouted, c1.rerouted), [0, 0, 0], 'nothing decided again elsewhere');
  });

  test('a session\'s writes keep their order across kinds (op, publish, lock, unlock) on a room another node owns', async (t) => {
    const { nodes } = h.cl;
    const W = 0;
    const { room, owner } = await roomOwnedElsewhere(nodes, 'order', W);
    t.diagnostic(`${room}: owner ${nodes[owner].nodeId}, writer on ${nodes[W].nodeId}`);
    const w = await connect(nodes[W], 'orderer');
    const other = nodes.findIndex((_, i) => i !== W && i !== owner);
    const rd = await connect(nodes[other], 'order-reader');
    t.after(() => closeClients(w, rd));
    const wj = await w.join(room);
    const reader = { c: rd, room, joined: await rd.join(room) };
    const c0 = await counters(nodes);
    const sent = [];
    const op = (k) => {
      const cid = `ord-${uniq()}`;
      sent.push(cid);
      return w.request({ type: 'op', room, cid, op: { kind: 'set', item: `it${k % 2}`, fields: { k } } }, SLOW_MS);
    };
    const publish = (k) => {
      const cid = `pub-${uniq()}`;
      sent.push(cid);
      return w.request({ type: 'publish', room, cid, data: { k }, ephemeral: false }, SLOW_MS);
    };
    const ROUNDS = 5;
    let k = 0;
    for (let round = 0; round < ROUNDS; round++) {
      // op, op, stored publish, op: back to back, no wait.
      const rs = await Promise.all([op(k++), op(k++), publish(k++), op(k++)]);
      for (const r of rs) assert.equal(r.type, 'ack', `round ${round}: ${JSON.stringify(r)}`);
      assert.equal(typeof rs[2].seq, 'number', `a stored publish's ack has its seq: ${JSON.stringify(rs[2])}`);
      assertIncreasing(rs.map((r) => r.seq), `round ${round}: op, op, publish, op`);
      assert.deepEqual(rs.map((r) => r.cid), sent.slice(-4), 'each ack names its request');
    }
    // A stored publish without a cid cannot be forwarded (it could not be
    // decided again safely): it waits for the writes out, then is decided here.
    const nc = await Promise.all([op(k++), w.request({ type: 'publish', room, data: { nocid: true }, ephemeral: false }, SLOW_MS),
      op(k++)]);
    for (const r of nc) assert.equal(r.type, 'ack', JSON.stringify(r));
    assertIncreasing(nc.map((r) => r.seq), 'op, publish without a cid, op');
    // op, lock, op, unlock, op on one item: back to back.
    const item = 'locked-item';
    const [a1, g, a2, u, a3] = await Promise.all([
      w.request({ type: 'op', room, cid: `ol1-${uniq()}`, op: { kind: 'set', item, fields: { step: 1 } } }, SLOW_MS),
      w.request({ type: 'lock', room, item, ttl: 30000 }, SLOW_MS),
      w.request({ type: 'op', room, cid: `ol2-${uniq()}`, op: { kind: 'set', item, fields: { step: 2 } } }, SLOW_MS),
      w.request({ type: 'unlock', room, item }, SLOW_MS),
      w.request({ type: 'op', room, cid: `ol3-${uniq()}`, op: { kind: 'set', item, fields: { step: 3 } } }, SLOW_MS),
    ]);
    assert.equal(a1.type, 'ack', JSON.stringify(a1));
    assert.equal(g.type, 'granted', JSON.stringify(g));
    assert.equal(a2.type, 'ack', `the holder's op after its lock: ${JSON.stringify(a2)}`);
    assert.equal(u.type, 'unlocked', JSON.stringify(u));
    assert.equal(a3.type, 'ack', JSON.stringify(a3));
    assertIncreasing([a1.seq, a2.seq, a3.seq], 'op, lock, op, unlock, op');
    const order = [a1, g, a2, u, a3].map((m) => w.log.indexOf(m));
    assertIncreasing(order, 'the replies of op, lock, op, unlock, op arrive in send order');
    // The lock events come in the room's order, between the entries.
    const held = w.log.findIndex((m) => m.type === 'lock' && m.room === room && m.item === item && m.state === 'held');
    const free = w.log.findIndex((m) => m.type === 'lock' && m.room === room && m.item === item && m.state === 'free');
    assert.ok(held >= 0 && free > held, 'held then free');

    // The log holds the writes in send order too, and the reader got them once, in order.
    const entries = await assertLog(nodes[2].url, room, []);
    const mine = entries.filter((e) => sent.includes(e.cid)).map((e) => e.cid);
    assert.deepEqual(mine, sent, 'the log has the session\'s writes once each, in send order');
    await assertConverged(nodes[1].url, room, [reader]);
    assert.deepEqual(acksAfterEntries(w, room, wj.seq), [], 'every ack after the entries before its seq');
    const c1 = await counters(nodes);
    const dFwd = delta(c0.fwd, c1.fwd);
    t.diagnostic(`forwarded ${dFwd}, forwarded in ${delta(c0.fwdIn, c1.fwdIn)}`);
    assert.ok(dFwd[W] >= ROUNDS * 4 + 1, `the writer's ops and stored publishes with a cid went to the owner (${dFwd[W]} forwarded)`);
    assert.ok(c1.fwdIn[owner] - c0.fwdIn[owner] >= ROUNDS * 2, 'the owner decided them');
    assert.deepEqual(delta(c0.stale, c1.stale), [0, 0, 0], 'no batch fenced out');
  });

  test('a lock held by a session of a non-owner node: its forwarded ops pass, others are locked until the unlock', async (t) => {
    const { nodes } = h.cl;
    const A = 1;
    const { room, owner } = await roomOwnedElsewhere(nodes, 'lock', A);
    const B = nodes.findIndex((_, i) => i !== A && i !== owner);
    t.diagnostic(`${room}: owner ${nodes[owner].nodeId}, holder on ${nodes[A].nodeId}, third node ${nodes[B].nodeId}`);
    const s1 = await connect(nodes[A], 'holder');
    const s2 = await connect(nodes[owner], 'rival-owner');
    const s3 = await connect(nodes[B], 'rival-third');
    t.after(() => closeClients(s1, s2, s3));
    for (const c of [s1, s2, s3]) await c.join(room);
    const item = 'card';
    const c0 = await counters(nodes);
    const g = await s1.request({ type: 'lock', room, item, ttl: 60000 });
    assert.equal(g.type, 'granted', JSON.stringify(g));
    const set = (c, fields, extra = {}) => c.request({ type: 'op', room, cid: `lk-${uniq()}`, op: { kind: 'set', item, fields, ...extra } }, SLOW_MS);

    const a1 = await set(s1, { by: 'holder', n: 1 });
    assert.equal(a1.type, 'ack', `the holder's op: ${JSON.stringify(a1)}`);
    const a2 = await set(s1, { by: 'holder', n: 2 }, { fence: g.fence });
    assert.equal(a2.type, 'ack', `the holder's op with its fence: ${JSON.stringify(a2)}`);
    const lost = await set(s1, { by: 'holder', n: 3 }, { fence: g.fence + 1 });
    assert.equal(lost.type, 'error', JSON.stringify(lost));
    assert.equal(lost.code, 'lock_lost', `a wrong fence: ${JSON.stringify(lost)}`);
    const c1 = await counters(nodes);
    assert.equal(c1.fwd[A] - c0.fwd[A], 3, 'the holder\'s three ops were forwarded');
    assert.equal(c1.fwdIn[owner] - c0.fwdIn[owner], 3, 'and decided on the owner');

    for (const c of [s2, s3]) {
      const e = await set(c, { by: c.name });
      assert.equal(e.type, 'error', `${c.name}: ${JSON.stringify(e)}`);
      assert.equal(e.code, 'locked', `${c.name}: ${JSON.stringify(e)}`);
      assert.equal(e.lock?.fence, g.fence, `${c.name}: the lock named: ${JSON.stringify(e)}`);
      assert.equal(e.lock?.device, s1.welcome.device, `${c.name}: held by the holder: ${JSON.stringify(e)}`);
    }
    const u = await s1.request({ type: 'unlock', room, item });
    assert.equal(u.type, 'unlocked', JSON.stringify(u));
    const b2 = await set(s2, { by: 'rival-owner' });
    assert.equal(b2.type, 'ack', `on the owner after the unlock: ${JSON.stringify(b2)}`);
    const b3 = await set(s3, { by: 'rival-third' });
    assert.equal(b3.type, 'ack', `on the third node after the unlock: ${JSON.stringify(b3)}`);
    // The old fence is no key any more.
    const stale = await set(s1, { by: 'holder', n: 4 }, { fence: g.fence });
    assert.equal(stale.code, 'lock_lost', `the holder's fence after its unlock: ${JSON.stringify(stale)}`);
    const entries = await assertLog(nodes[0].url, room, [[a1.cid, a1.seq], [a2.cid, a2.seq], [b2.cid, b2.seq], [b3.cid, b3.seq]]);
    assert.deepEqual(entries.at(-1).op.fields, { by: 'rival-third' });
    assert.ok(a1.seq < a2.seq && a2.seq < b2.seq && b2.seq < b3.seq);
  });

  test('an op written by hand (spaces, escapes, nested fields) reaches the owner as it was sent', async (t) => {
    const { nodes } = h.cl;
    const A = 0;
    const { room, owner } = await roomOwnedElsewhere(nodes, 'raw', A);
    const w = await connect(nodes[A], 'raw-writer');
    const rd = await connect(nodes[owner], 'raw-reader');
    t.after(() => closeClients(w, rd));
    await w.join(room);
    await rd.join(room);
    const c0 = await counters(nodes);
    // The node forwards the text as the client wrote it; the owner reads it
    // into the same values a JSON.stringify of them would give.
    const id = 'raw-1';
    const cid = `raw-${uniq()}`;
    const text = `{ "type" : "op",\n "id":"${id}", "room":"${room}" ,"cid":"${cid}", ` +
      '"op":{"kind":"set","item":"raw","fields":{"e":"r\\u00e9","t":"a\\"b\\\\c\\n\\u2603 \\ud83d\\ude00","n":[1,-2.5e3,{"x":null}],"b":true}}  }';
    w.send(text);
    await waitUntil(() => w.log.some((m) => m.re === id), WAIT_MS, `the answer to ${text}`);
    const ack = w.log.find((m) => m.re === id);
    assert.equal(ack.type, 'ack', JSON.stringify(ack));
    const c1 = await counters(nodes);
    assert.equal(c1.fwd[A] - c0.fwd[A], 1, 'forwarded');
    assert.equal(c1.fwdIn[owner] - c0.fwdIn[owner], 1, 'decided on the owner');
    const want = { e: 'r\u00e9', t: 'a"b\\c\n\u2603 \ud83d\ude00', n: [1, -2500, { x: null }], b: true };
    await waitUntil(() => entriesOf(rd, room).some((m) => m.cid === cid), WAIT_MS, 'the entry on the owner');
    const entry = entriesOf(rd, room).find((m) => m.cid === cid);
    assert.equal(entry.op.item, 'raw');
    assert.deepEqual(entry.op.fields, want);
    await waitUntil(() => entriesOf(w, room).some((m) => m.cid === cid), WAIT_MS, 'the entry on the writer');
    assert.deepEqual(entriesOf(w, room).find((m) => m.cid === cid).op.fields, want);
    assert.deepEqual((await serverDoc(nodes[A].url, room)).raw, want, 'the document, read on the node it came to');
  });
});

// ---- 2: forwarding off ------------------------------------------------------------

describe('--forward-ops off', { timeout: SUITE_MS }, () => {
  const h = useCluster('off', ['--forward-ops', 'off']);

  test('nothing is forwarded and rooms written from three nodes still converge (the fence settles it)', async (t) => {
    const { nodes } = h.cl;
    const ROOMS = 3;
    const PER = SANITIZED ? 10 : 30;
    const clients = [];
    t.after(() => closeClients(clients));
    const rooms = [];
    const readers = [];
    const writers = [];
    const c0 = await counters(nodes);
    for (let r = 0; r < ROOMS; r++) {
      const room = `fwd-off-${uniq()}`;
      const p = await probeOwner(nodes, room, r % 3, false);
      assert.equal(p.forwarded, false, `${room}: the probe's op decided on its own node`);
      rooms.push(room);
      for (const x of nodes) {
        const rc = await connect(x, 'reader');
        clients.push(rc);
        readers.push({ c: rc, room, joined: await rc.join(room) });
        const wc = await connect(x, 'writer');
        clients.push(wc);
        writers.push({ c: wc, room, node: x.nodeId });
        await wc.join(room);
      }
    }
    // Pipelined, all at once; a `stale` answer (fenced out 20 times) is sent again with its cid.
    const acks = await Promise.all(writers.map(async (w) => {
      const who = w.c.welcome.device;
      const msgs = Array.from({ length: PER }, (_, k) => ({
        type: 'op', room: w.room, cid: `${who}.${k}`, op: { kind: 'set', item: `shared-${k % 4}`, fields: { [w.node]: k } },
      }));
      const out = await Promise.all(msgs.map(async (m) => {
        for (let tries = 0; ; tries++) {
          const r = await w.c.request(m, SLOW_MS);
          if (r.type === 'ack') return [m.cid, r.seq];
          assert.equal(r.code, 'stale', `${w.c.name}: only a fenced-out op may be refused: ${JSON.stringify(r)}`);
          assert.ok(tries < 100, 'stale retries end');
        }
      }));
      return out;
    }));
    for (const room of rooms) {
      const mine = writers.flatMap((w, i) => (w.room === room ? acks[i] : []));
      const entries = await assertLog(nodes[2].url, room, mine);
      assert.equal(entries.length, 1 + 3 * PER, `${room}: the probe op and every writer's ops, once each`);
      await assertConverged(nodes[0].url, room, readers.filter((rd) => rd.room === room));
    }
    const c1 = await counters(nodes);
    t.diagnostic(`stale commits ${delta(c0.stale, c1.stale)} (the fence at work)`);
    // The control for the first test: without forwarding, such a workload
    // does collide (a dozen fenced-out batches in a usual run), so the zero
    // seen there is forwarding's doing.
    assert.ok(sum(delta(c0.stale, c1.stale)) > 0, 'without forwarding, batches of different nodes were fenced out');
    assert.deepEqual(c1.fwd, [0, 0, 0], 'wsync_ops_forwarded_total stays 0 on every node');
    assert.deepEqual(c1.fwdIn, [0, 0, 0], 'wsync_ops_forwarded_in_total stays 0 on every node');
    assert.deepEqual(c1.rerouted, [0, 0, 0], 'wsync_ops_forward_rerouted_total stays 0 on every node');
  });
});

// ---- 5, 6: the owner fails while a writer of another node streams ops ----------

/**
 * Streams count sets into room from client c, at most `window` unanswered at
 * once, item `s${k % 5}` field v = k. onAnswer(reply, k, st) runs at each
 * answer (before the next op is sent). Resolves {replies (by k), cids}.
 */
async function stream(c, room, count, { window = 30, onAnswer = () => {}, tag = 's' } = {}) {
  const st = { replies: new Array(count), cids: [], answered: 0, sent: 0 };
  let wake = null;
  const ops = [];
  while (st.sent < count) {
    if (st.sent - st.answered >= window) {
      await new Promise((resolve) => { wake = resolve; });
      continue;
    }
    const k = st.sent++;
    const cid = `${tag}-${c.welcome.device}.${k}`;
    st.cids.push(cid);
    ops.push(c.request({ type: 'op', room, cid, op: { kind: 'set', item: `s${k % 5}`, fields: { v: k } } }, SLOW_MS).then((r) => {
      st.replies[k] = r;
      st.answered++;
      onAnswer(r, k, st);
      if (wake) {
        const w = wake;
        wake = null;
        w();
      }
    }));
  }
  await Promise.all(ops);
  return st;
}

/** The document a stream of count sets leaves (items s0..s4, v the last k of each). */
function streamDoc(count) {
  const doc = {};
  for (let k = 0; k < count; k++) doc[`s${k % 5}`] = { v: k };
  return doc;
}

/** The verdict of a stream: every op acked, in send order, once in the log at its seq, readers converged. */
async function streamVerdict(t, url, room, w, wj, st, readers, expectDoc) {
  const bad = st.replies.map((r, k) => [k, r]).filter(([, r]) => r?.type !== 'ack');
  assert.deepEqual(bad, [], 'every op acked (or acked as a duplicate)');
  st.replies.forEach((r, k) => assert.equal(r.cid, st.cids[k], 'each ack names its op'));
  assertIncreasing(st.replies.map((r) => r.seq), `${w.name}: acks in send order`);
  const entries = await assertLog(url, room, st.replies.map((r) => [r.cid, r.seq]));
  const logged = new Set(entries.map((e) => e.cid));
  for (const cid of st.cids) assert.ok(logged.has(cid), `${cid} is in the log`);
  const snap = await assertConverged(url, room, readers);
  const doc = Object.fromEntries(Object.entries(snap.items).filter(([id]) => id !== 'probe').map(([id, it]) => [id, it.fields]));
  assert.deepEqual(doc, expectDoc, 'the document is what the writer\'s last ops set');
  assert.deepEqual(acksAfterEntries(w, room, wj.seq), [], `${w.name}: every ack after the entries before its seq`);
  const dups = st.replies.filter((r) => r.duplicate).length;
  t.diagnostic(`${room}: ${st.cids.length} ops, seq ${snap.seq}, ${dups} answered as duplicates`);
  return snap;
}

/**
 * The set-up of the failure tests: a room owned by another node than
 * nodes[A], a streaming writer on nodes[A], a reader there and one on the
 * third node (B), all joined; the counters before.
 */
async function failureSetup(t, nodes, what, A) {
  const { room, owner } = await roomOwnedElsewhere(nodes, what, A);
  const B = nodes.findIndex((_, i) => i !== A && i !== owner);
  t.diagnostic(`${room}: owner ${nodes[owner].nodeId} (${what}), writer on ${nodes[A].nodeId}, reader on ${nodes[B].nodeId}`);
  const w = await connect(nodes[A], 'streamer');
  const rB = await connect(nodes[B], 'reader-b');
  const rA = await connect(nodes[A], 'reader-a');
  t.after(() => closeClients(w, rB, rA));
  const wj = await w.join(room);
  const readers = [{ c: rB, room, joined: await rB.join(room) }, { c: rA, room, joined: await rA.join(room) }];
  return { room, owner, B, w, wj, readers, c0: await counters(nodes) };
}

describe('the owner killed (kill -9) mid-stream', { timeout: SUITE_MS }, () => {
  const h = useCluster('kill');

  test('every op of a writer on another node is answered, once in the log; the ops out are decided again', async (t) => {
    const { nodes } = h.cl;
    const A = 0;
    const { room, owner, B, w, wj, readers, c0 } = await failureSetup(t, nodes, 'kill', A);
    const victim = nodes[owner];
    const COUNT = SANITIZED ? 120 : 300;
    const KILL_AT = Math.floor(COUNT / 3);
    let killed = null;
    let outAtKill = 0;
    const st = await stream(w, room, COUNT, {
      window: 30,
      onAnswer: (r, k, s) => {
        // At the KILL_AT-th answer, at once (the ops out then, and the next
        // ones sent, can only be answered by deciding them again elsewhere).
        if (!killed && s.answered >= KILL_AT) {
          outAtKill = s.sent - s.answered;
          h.killed.add(victim);
          killed = victim.kill9();
        }
      },
    }).catch((err) => { throw new Error(`${err.message}\n${lastWords(h.cl)}`); });
    assert.ok(killed, 'the owner was killed mid-stream');
    await killed;
    assert.equal(victim.running, false);
    assert.ok(nodes[A].running, 'the writer\'s node stays up');
    await w.ping();
    await streamVerdict(t, nodes[A].url, room, w, wj, st, readers, streamDoc(COUNT));
    const c1 = await counters(nodes);
    const rerouted = c1.rerouted[A] - c0.rerouted[A];
    t.diagnostic(`ops out at the kill: ${outAtKill}; forwarded ${delta(c0.fwd, c1.fwd)}, rerouted ${delta(c0.rerouted, c1.rerouted)}`);
    assert.ok(c1.fwd[A] - c0.fwd[A] >= KILL_AT, 'the writer\'s ops were forwarded to the owner');
    assert.ok(rerouted > 0, `the ops out at the dead owner were decided again (wsync_ops_forward_rerouted_total ${rerouted})`);
    // A new writer on the writer's node, after the owner is gone: its ops are decided by a node up.
    const w2 = await connect(nodes[A], 'after-kill');
    t.after(() => w2.close());
    await w2.join(room);
    const late = await w2.request({ type: 'op', room, cid: `after-${uniq()}`, op: { kind: 'set', item: 'after', fields: { ok: true } } }, SLOW_MS);
    assert.equal(late.type, 'ack', JSON.stringify(late));
    await readersAt(readers, late.seq);
  });
});

describe('the owner stopped (SIGSTOP) 7 s with ops out, then continued', { timeout: SUITE_MS }, () => {
  const h = useCluster('stop');

  test('the ops out are decided again; the owner\'s late decisions are duplicates, not second copies', async (t) => {
    const { nodes } = h.cl;
    const A = 2;
    const { room, owner, B, w, wj, readers, c0 } = await failureSetup(t, nodes, 'stop', A);
    const victim = nodes[owner];
    const COUNT = SANITIZED ? 60 : 120;
    const STOP_AT = Math.floor(COUNT / 4);
    let stoppedAt = 0;
    let outAtStop = 0;
    let answeredAfterMs = 0;
    let st;
    try {
      st = await stream(w, room, COUNT, {
        window: 20,
        onAnswer: (r, k, s) => {
          if (!stoppedAt && s.answered >= STOP_AT) {
            outAtStop = s.sent - s.answered;
            process.kill(victim.pid, 'SIGSTOP');
            stoppedAt = Date.now();
          }
        },
      });
      // The stream ended while the owner was still stopped: its ops out were
      // decided again elsewhere (the SIGCONT comes only below).
      assert.ok(stoppedAt, 'the owner was stopped mid-stream');
      answeredAfterMs = Date.now() - stoppedAt;
      const wait = 7000 - (Date.now() - stoppedAt);
      if (wait > 0) await sleep(wait);
    } catch (err) {
      throw new Error(`${err.message}\n${lastWords(h.cl)}`);
    } finally {
      if (victim.pid) process.kill(victim.pid, 'SIGCONT');
    }
    const answeredWhileStopped = st.answered;
    // The owner is back: it reads the ops that waited for it on the bus and
    // decides them (as duplicates). Then the same writer streams again.
    await waitUntil(async () => (await values(nodes, 'wsync_bus_nodes')).every((v) => v === 2),
      'the nodes hear each other again', SLOW_MS);
    const more = await stream(w, room, COUNT / 2, { window: 20, tag: 'more' })
      .catch((err) => { throw new Error(`${err.message}\n${lastWords(h.cl)}`); });
    // Everything forwarded was received by some owner (the stopped one included, late).
    await waitUntil(async () => {
      const c = await counters(nodes);
      return sum(delta(c0.fwd, c.fwd)) === sum(delta(c0.fwdIn, c.fwdIn));
    }, 'every forwarded op received by a node', SLOW_MS);
    // Give the late decisions time to reach the store, were they stored twice.
    await sleep(1500);
    const all = {
      replies: [...st.replies, ...more.replies],
      cids: [...st.cids, ...more.cids],
    };
    // Stream 2 set the same items after stream 1: the final values are the last ones of stream 2.
    await streamVerdict(t, nodes[B].url, room, w, wj, all, readers, streamDoc(COUNT / 2));
    const c1 = await counters(nodes);
    t.diagnostic(`ops out at the stop: ${outAtStop}; all ${answeredWhileStopped}/${COUNT} answered ${answeredAfterMs} ms into the stop; ` +
      `forwarded ${delta(c0.fwd, c1.fwd)}, in ${delta(c0.fwdIn, c1.fwdIn)}, rerouted ${delta(c0.rerouted, c1.rerouted)}, ` +
      `stale ${delta(c0.stale, c1.stale)}`);
    assert.ok(c1.rerouted[A] - c0.rerouted[A] > 0, 'the ops out at the stopped owner were decided again (wsync_ops_forward_rerouted_total)');
    assert.ok(victim.running, 'the stopped owner is still running');
  });

  // A leave waits for the member's writes in flight, forwarded ones too.
  // When they are taken back from a stopped owner and decided here, the
  // op is answered first, then the leave.
  test('a leave behind an op out at a stopped owner: the op is answered, then the leave', async (t) => {
    const { nodes } = h.cl;
    const A = 1;
    const { room, owner } = await roomOwnedElsewhere(nodes, 'leave', A);
    const victim = nodes[owner];
    const w = await connect(nodes[A], 'leaver');
    t.after(() => closeClients(w));
    await w.join(room);
    process.kill(victim.pid, 'SIGSTOP');
    let op;
    let left;
    try {
      op = w.request({ type: 'op', room, cid: `leave-${uniq()}`, op: { kind: 'set', item: 'l', fields: { v: 1 } } }, SLOW_MS);
      left = w.request({ type: 'leave', room }, SLOW_MS);
      const [a, l] = await Promise.all([op, left]);
      assert.equal(a.type, 'ack', JSON.stringify(a));
      assert.equal(l.type, 'left', JSON.stringify(l));
      const order = w.log.filter((m) => m.re !== undefined && (m.type === 'ack' || m.type === 'left')).map((m) => m.type);
      assert.deepEqual(order.slice(-2), ['ack', 'left'], 'the op answered before the leave');
    } finally {
      process.kill(victim.pid, 'SIGCONT');
    }
    const cids = (await history(nodes[A].url, room)).map((x) => x.cid);
    assert.equal(cids.filter((c) => c.startsWith('leave-')).length, 1, 'the op stored once');
    await waitUntil(async () => (await values(nodes, 'wsync_bus_nodes')).every((v) => v === 2), 'the owner is heard again', SLOW_MS);
  });
});

describe('the owner up but late (its commit held by a row lock for 9 s)', { timeout: SUITE_MS }, () => {
  const h = useCluster('late');

  // SIGSTOP also stops the owner's heartbeats, so the others see it gone
  // after 3 s and that, not the 5 s answer deadline, is what sends its ops
  // elsewhere. Here the owner stays up (its loop and heartbeats go on) but
  // its commit to the room waits for a row lock a psql session holds: its
  // answers are more than 5 s late, the writer's node passes it over and
  // decides the ops again elsewhere; when the lock goes, both decisions
  // reach the store and one of them must turn out a duplicate.
  test('answers later than 5 s: the ops are decided again elsewhere, each stored once', async (t) => {
    const { nodes, pg } = h.cl;
    const A = 1;
    const { room, owner, B, w, wj, readers, c0 } = await failureSetup(t, nodes, 'late', A);
    const logMark = nodes[A].stderr.length;
    const HOLD_S = 9;
    const holding = pg.psql(`BEGIN; SELECT 1 FROM rooms WHERE name = '${room}' FOR UPDATE; SELECT pg_sleep(${HOLD_S}); COMMIT;`,
      { timeout: (HOLD_S + 20) * 1000 });
    let held = false;
    try {
      await waitUntil(async () => (await pg.psql("SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event = 'PgSleep'"))[0].n === '1',
        'the row lock held');
      held = true;
      const COUNT = SANITIZED ? 30 : 60;
      const st = await stream(w, room, COUNT, { window: 20 })
        .catch((err) => { throw new Error(`${err.message}\n${lastWords(h.cl)}`); });
      await holding;
      await waitUntil(async () => {
        const c = await counters(nodes);
        return sum(delta(c0.fwd, c.fwd)) === sum(delta(c0.fwdIn, c.fwdIn));
      }, 'every forwarded op received by a node', SLOW_MS);
      await sleep(1500); // the owner's late decisions in the store, were they stored twice
      await streamVerdict(t, nodes[B].url, room, w, wj, st, readers, streamDoc(COUNT));
      const c1 = await counters(nodes);
      t.diagnostic(`forwarded ${delta(c0.fwd, c1.fwd)}, in ${delta(c0.fwdIn, c1.fwdIn)}, ` +
        `rerouted ${delta(c0.rerouted, c1.rerouted)}, stale ${delta(c0.stale, c1.stale)}`);
      assert.ok(c1.fwdIn[owner] - c0.fwdIn[owner] > 0, 'the owner got the writer\'s ops');
      assert.ok(c1.rerouted[A] - c0.rerouted[A] > 0, 'the late ops were decided again elsewhere (wsync_ops_forward_rerouted_total)');
      const said = nodes[A].stderr.slice(logMark);
      assert.doesNotMatch(said, new RegExp(`node ${nodes[owner].nodeId} is gone`), 'the owner was never taken as gone: the deadline did it');
      assert.ok(nodes.every((x) => x.running), 'every node is up');
    } finally {
      if (!held) await holding.catch(() => {});
    }
  });
});

// ---- bad input from the bus ---------------------------------------------------

/** PUBLISH of raw bytes on Redis (RESP over a socket of its own). */
function publishRaw(port, channel, payload) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const parts = [Buffer.from(`*3\r\n$7\r\nPUBLISH\r\n$${Buffer.byteLength(channel)}\r\n${channel}\r\n$${payload.length}\r\n`),
      payload, Buffer.from('\r\n')];
    let got = '';
    sock.on('data', (d) => {
      got += d;
      if (got.endsWith('\r\n')) {
        sock.end();
        resolve(got.trim());
      }
    });
    sock.on('error', reject);
    sock.write(Buffer.concat(parts));
  });
}

/** A message on a node's channel as another node sends it (bus_redis.c): version, from, kind, body. */
function nodeMessage(from, kind, body) {
  const str = (s) => {
    const b = Buffer.from(s);
    const l = Buffer.alloc(2);
    l.writeUInt16BE(b.length);
    return Buffer.concat([l, b]);
  };
  return Buffer.concat([Buffer.from([1]), str(from), str(kind), Buffer.isBuffer(body) ? body : Buffer.from(body)]);
}

describe('forwarded ops and answers that do not parse', { timeout: SUITE_MS }, () => {
  const h = useCluster('bad');

  test('are dropped with a warning; the node keeps deciding and answering real ones', async (t) => {
    const nodes = h.cl.nodes;
    const [target, other] = [nodes[0], nodes[1]];
    const { room } = await roomOwnedElsewhere(nodes, 'bad', 1); // owned by another node than nodes[1]
    const mark = target.stderr.length;
    const c = await connect(other, 'badw');
    t.after(() => closeClients([c]));
    await c.join(room);
    const wire = `${other.nodeId}.${'a'.repeat(32)}`;
    const head = (tok = wire, rm = room, user = 'mallory', dkey = 'mallory:dev', epoch = 'e0') =>
      `${tok}\n${rm}\n${epoch}\n${user}\n${dkey}\n`;
    const forwards = [
      '', 'no newline at all', `${wire}\n${room}\n`, head() + 'not json', head() + '[1,2,3]', head() + '{"type":"op"',
      head(`elsewhere.${'b'.repeat(32)}`) + '{}', // a token of another node than the sender
      head('bad token!') + '{}', head(wire, 'bad room name!') + '{}', head(wire, room, 'mallory', 'eve:dev') + '{}',
      head(wire, room, '', ':dev') + '{}', head(wire, room, 'u'.repeat(300), `${'u'.repeat(300)}:d`) + '{}',
      head() + '{"type":"op","room":"' + room + '","op":{"kind":"set","item":"x","fields":{}}}', // no cid
      head() + '{"type":"op","room":"' + room + '","cid":"bad cid!","op":{}}',
      head() + '{"type":"op","room":"' + room + '","cid":"ok-1","op":{"kind":"nope"}}',
      head() + '{"type":"op","room":"other-room","cid":"ok-2","op":{"kind":"set","item":"x","fields":{}}}',
      head() + 'x'.repeat(200000), head(wire, room, 'mallory', 'mallory:dev', '') + '{}',
      head(wire, room, 'mallory', 'mallory:dev', 'e'.repeat(40)) + '{}',
    ];
    const answers = [
      '', 'x', `${wire}\n${room}\n`, `${wire}\n${room}\nnot-a-number\n{}`, `${wire}\n${room}\n1\n{"cid":"nobody"}`,
      `bad token!\n${room}\n1\n{}`, `${wire}\n${'r'.repeat(400)}\n1\n{}`, `${wire}\n${room}\n${'9'.repeat(40)}\n{}`,
    ];
    const chan = `wsync:n:${target.nodeId}`;
    for (const body of forwards) await publishRaw(h.cl.redis.port, chan, nodeMessage(other.nodeId, 'op.f', body));
    for (const body of answers) await publishRaw(h.cl.redis.port, chan, nodeMessage(other.nodeId, 'op.r', body));
    // A message of a kind, version or shape the bus does not know.
    await publishRaw(h.cl.redis.port, chan, Buffer.from([1, 0, 3]));
    await publishRaw(h.cl.redis.port, chan, nodeMessage(other.nodeId, 'op.zz', 'x'));
    await waitUntil(() => (target.stderr.slice(mark).match(/malformed forwarded op/g) || []).length >= 15,
      'the malformed forwarded ops logged');
    // Still up, and real forwarded ops in both directions are decided and answered.
    assert.equal((await fetch(`${target.url}/healthz`)).status, 200);
    for (let k = 0; k < 5; k++) {
      const ack = await c.request({ type: 'op', room, cid: `after-bad-${k}`, op: { kind: 'set', item: 'x', fields: { k } } });
      assert.equal(ack.type, 'ack', JSON.stringify(ack));
    }
    const tc = await connect(target, 'badt');
    t.after(() => closeClients([tc]));
    const room2 = (await roomOwnedElsewhere(nodes, 'bad2', 0)).room;
    await tc.join(room2);
    const ack2 = await tc.request({ type: 'op', room: room2, cid: 'after-bad-t', op: { kind: 'set', item: 'y', fields: {} } });
    assert.equal(ack2.type, 'ack', JSON.stringify(ack2));
    assert.ok(nodes.every((x) => x.running), 'every node is up');
    assert.equal(sanitizerReport(target.stderr), '', 'no sanitizer report');
  });

  // A forwarded op names the incarnation of the room its session joined
  // (the room's epoch on its node): a room deleted and made again on the
  // owner, while the session's node has not heard of it yet, does not take
  // the op meant for the deleted one.
  test('an op forwarded for another incarnation of the room is refused after a read, not applied', async () => {
    const nodes = h.cl.nodes;
    const [owner, other] = [nodes[0], nodes[1]];
    const room = `fwd-epoch-${uniq()}`;
    const c = await connect(owner, 'ep');
    await c.join(room);
    const first = await c.request({ type: 'op', room, cid: 'ep-first', op: { kind: 'set', item: 'a', fields: { v: 1 } } });
    assert.equal(first.type, 'ack', JSON.stringify(first));
    const info = await api(owner.url, 'GET', `/v1/rooms/${room}`, { key: KEY });
    assert.equal(info.status, 200, info.text);
    const epoch = info.body.epoch;
    const wire = `${other.nodeId}.${'c'.repeat(32)}`;
    const forward = (cid, ep) => nodeMessage(other.nodeId, 'op.f', `${wire}\n${room}\n${ep}\nmallory\nmallory:dev\n` +
      JSON.stringify({ type: 'op', room, cid, op: { kind: 'set', item: cid, fields: { by: 'forwarded' } } }));
    await publishRaw(h.cl.redis.port, `wsync:n:${owner.nodeId}`, forward('ep-stale', 'not-this-one'));
    await publishRaw(h.cl.redis.port, `wsync:n:${owner.nodeId}`, forward('ep-current', epoch));
    await waitUntil(async () => (await history(owner.url, room)).some((x) => x.cid === 'ep-current'),
      'the op for the current incarnation applied');
    // The stale one came first from the same session: decided (refused) before it.
    const cids = (await history(owner.url, room)).map((x) => x.cid);
    assert.deepEqual(cids, ['ep-first', 'ep-current'], 'the op for another incarnation was not applied');
    const snap = await serverSnapshot(owner.url, room);
    assert.equal(snap.items['ep-stale'], undefined);
    assert.deepEqual(snap.items['ep-current'].fields, { by: 'forwarded' });
    await closeClients([c]);
  });
});

// ---- a deadlock with another node's commit ----------------------------------------

describe('a commit PostgreSQL rolls back to break a deadlock', { timeout: SUITE_MS }, () => {
  const h = useCluster('deadlock', ['--forward-ops', 'off']);

  // A psql session stands for another node's commit: it holds room R's row,
  // waits until the node's batch (an op of Q, then one of R) holds Q's row
  // and waits for R's, then asks for Q's row. The node waited first, so its
  // transaction is the victim (the session's own deadlock check is set to
  // come much later): its writes are decided again and acked, and the node
  // does not call itself degraded for a conflict that is not a failure.
  test('the writes of the victim batch are decided again and acked; health stays ok', async (t) => {
    const { nodes, pg } = h.cl;
    const x = nodes[0];
    const Q = `dlq-${uniq()}`;
    const R = `dlr-${uniq()}`;
    const c = await connect(x, 'deadlock');
    t.after(() => closeClients(c));
    const set = (room, n) => ({ type: 'op', room, cid: `dl-${uniq()}`, op: { kind: 'set', item: 'i', fields: { n } } });
    for (const room of [Q, R]) {
      await c.join(room);
      const a = await c.request(set(room, 0));
      assert.equal(a.type, 'ack', JSON.stringify(a));
    }
    const logMark = x.stderr.length;
    const session = pg.psql("SET deadlock_timeout = '20s'; BEGIN; " +
      `SELECT 1 FROM rooms WHERE name = '${R}' FOR UPDATE; ` +
      "DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' " +
      "AND pid <> pg_backend_pid()) LOOP PERFORM pg_sleep(0.02); END LOOP; END $$; " +
      `SELECT 1 FROM rooms WHERE name = '${Q}' FOR UPDATE; COMMIT;`, { timeout: 30000 });
    await waitUntil(async () => (await pg.psql('SELECT count(*) AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation ' +
      "WHERE c.relname = 'rooms' AND l.mode = 'RowShareLock' AND l.granted"))[0].n !== '0', 'the session holds its row');
    // Both ops in one write, so that one read, one loop turn and one batch take them.
    const q = set(Q, 1);
    const r = set(R, 1);
    q.id = 'dl-q';
    r.id = 'dl-r';
    const sock = c.ws._socket;
    sock.cork();
    c.send(q);
    c.send(r);
    sock.uncork();
    await session;
    await waitUntil(() => c.log.some((m) => m.re === 'dl-q') && c.log.some((m) => m.re === 'dl-r'), SLOW_MS, 'both answers');
    for (const id of ['dl-q', 'dl-r']) {
      const a = c.log.find((m) => m.re === id);
      assert.equal(a.type, 'ack', `${id}: ${JSON.stringify(a)}`);
    }
    const said = x.stderr.slice(logMark);
    assert.match(said, /commit rolled back by the store \(would block\), decided again: .*deadlock detected/,
      `the node was the deadlock's victim:\n${said.slice(-2000)}`);
    assert.doesNotMatch(said, /health: degraded/, 'a deadlock is a conflict, not a failure of the store');
    const hz = await api(x.url, 'GET', '/healthz');
    assert.equal(hz.status, 200, JSON.stringify(hz.body));
    for (const room of [Q, R]) {
      const entries = await history(x.url, room);
      assert.deepEqual(entries.map((e) => e.op.fields.n), [0, 1], `${room}: each write stored once`);
    }
  });
});
