// cluster-locks.test.mjs -- item locks across three nodes on one PostgreSQL
// and one Redis (issue 13; docs/PROTOCOL.md 9 and 5.2 `fence`, CLUSTER.md):
// a lock taken on one node is one lock for the whole cluster. Every other
// node refuses the item's writes (set, del, batch sub-ops, text ops) and its
// lock to every session but the holder, lists it in `joined.locks`, and gets
// its `lock` events; two nodes asked for the same free item at the same
// moment grant it once; fences grow whichever node grants; a stale fence is
// `lock_lost` also after a takeover through another node; unlock, leave, bye
// and the TTL free it for every node; a dead node's locks are taken over
// well before their TTL; and rooms unloaded between pipelined requests
// (join, lock, leave) answer the lock while joined and keep the nodes up.
//
// What a single node does (sync-locks.test.mjs) applies on every node: the
// lock check comes before the fence check, so a fenced op on an item another
// session now holds is `locked`, and `lock_lost` once the item is free or is
// held by the same session under another fence.
//
// No wall-clock asserts: waits are bounded (WAIT_MS) and only say "by then".
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startCluster } from './lib/cluster.mjs';
import { SANITIZED, sanitizerReport, sleep, waitUntil, WAIT_MS } from './lib/server.mjs';
import { api, closeClients, fetchMetrics, SyncClient, token } from './lib/sync.mjs';

const KEY = 'cluster-locks-api-key';
/** A guard on each test, far above what it needs: a hang fails, it never waits forever. */
const TEST_MS = SANITIZED ? 300000 : 120000;
/** Reasons a `lock` event of state free may give (PROTOCOL.md 9.4). */
const FREE_REASONS = ['unlock', 'expired', 'left', 'session_end', 'disconnected'];

let cl;
let n = 0;

before(async () => {
  cl = await startCluster(3, { nodeArgs: () => ['--api-key', KEY, '--rate', '100000', '--burst', '100000'] });
});
// A node that died on its own (not killed by a test) fails the file, with
// its sanitizer report or the end of its log: stopping it would say nothing.
after(async () => {
  if (!cl) return;
  const dead = cl.nodes.filter((x) => !x.running)
    .map((x) => `${x.nodeId} exited (${JSON.stringify(x.srv?.exit)}):\n${sanitizerReport(x.stderr) || x.stderr.slice(-3000)}`);
  await cl.stop();
  if (dead.length) throw new Error(`a node died during the tests:\n${dead.join('\n---\n')}`);
});

const url = (i) => cl.nodes[i % cl.nodes.length].url;
const roomName = (what) => `lk-${what}-${process.pid}-${++n}`;
const cid = () => `lk.${process.pid}.${++n}`;

/** A welcomed client of user on node i (its name says which node). */
function connect(i, user, device = `${user}-d${++n}`) {
  return SyncClient.connect(url(i), { token: token(user), device }, `${user}@node-${(i % 3) + 1}`);
}

/** Clients [user, node] joined to room, in the order given. */
async function members(room, spec) {
  const cs = [];
  for (const [user, i] of spec) {
    const c = await connect(i, user);
    await c.join(room);
    cs.push(c);
  }
  return cs;
}

const who = (c) => ({ user: c.welcome.user, device: c.welcome.device });
const lockEvent = (room, item, state, fence) => (m) => m.type === 'lock' && m.room === room && m.item === item &&
  (!state || m.state === state) && (fence === undefined || m.fence === fence);
const setOp = (item, fields = { v: 1 }, extra = {}) => ({ kind: 'set', item, fields, ...extra });
const lock = (c, room, item, ttl = 60000) => c.request({ type: 'lock', room, item, ttl });

/** A lock that must be granted; checks the reply's shape. */
async function grant(c, room, item, ttl = 60000) {
  const g = await lock(c, room, item, ttl);
  assert.equal(g.type, 'granted', `${c.name}: lock ${item} -> ${JSON.stringify(g)}`);
  const { re, ...rest } = g;
  assert.equal(typeof re, 'number');
  assert.deepEqual(rest, { type: 'granted', room, item, fence: g.fence, ttl });
  assert.ok(Number.isSafeInteger(g.fence) && g.fence > 0, `fence ${g.fence}`);
  return g;
}

/** A lock that must be refused with `locked`, naming holder (a client) and fence. */
async function refused(c, room, item, holder, fence, ttl = 60000) {
  const e = await lock(c, room, item, ttl);
  assert.equal(e.type, 'error', `${c.name}: lock ${item} must be refused: ${JSON.stringify(e)}`);
  assert.equal(e.code, 'locked', JSON.stringify(e));
  assertLock(e, item, holder, fence);
  return e;
}

/** e.item and e.lock name the lock of holder with fence (ttl: some time left). */
function assertLock(e, item, holder, fence, maxTtl = 300000) {
  assert.equal(e.item, item, JSON.stringify(e));
  assert.ok(e.lock, `a lock attached: ${JSON.stringify(e)}`);
  const { ttl, ...rest } = e.lock;
  assert.deepEqual(rest, { item, ...who(holder), fence }, JSON.stringify(e));
  assert.ok(Number.isInteger(ttl) && ttl > 0 && ttl <= maxTtl, `ttl left: ${ttl}`);
}

/**
 * An op request; resolves the reply. A `stale` answer (PROTOCOL.md 11.2: fenced
 * out by other nodes' commits 20 times in a row) is re-sent with the same
 * cid, as the JavaScript client does: it is no answer about locks.
 */
async function sendOp(c, room, id, op) {
  for (let tries = 0; ; tries++) {
    const r = await c.op(room, id, op);
    if (r.type !== 'error' || r.code !== 'stale') return r;
    assert.ok(tries < 50, `${c.name}: stale retries end`);
  }
}

/** An op request that must be refused with code; resolves the error. */
async function opError(c, room, op, code) {
  const id = cid();
  const e = await sendOp(c, room, id, op);
  assert.equal(e.type, 'error', `${c.name}: ${JSON.stringify(op)} must fail with ${code}: ${JSON.stringify(e)}`);
  assert.equal(e.code, code, `${c.name}: ${JSON.stringify(op)} -> ${JSON.stringify(e)}`);
  assert.equal(e.room, room);
  assert.equal(e.cid, id);
  return e;
}

/** An op that must be acked. */
async function opAck(c, room, op) {
  const r = await sendOp(c, room, cid(), op);
  assert.equal(r.type, 'ack', `${c.name}: ${JSON.stringify(op)} -> ${JSON.stringify(r)}`);
  return r;
}

/** The room as the backend API of node i sees it. */
async function snapshot(i, room) {
  const r = await api(url(i), 'GET', `/v1/rooms/${room}`, { key: KEY });
  assert.equal(r.status, 200, r.text);
  return r.body;
}

/** A fresh session on node i joins room and leaves again: its joined.locks, sorted by item. */
async function locksSeenFrom(i, room) {
  const c = await connect(i, 'looker');
  try {
    const j = await c.join(room);
    return [...j.locks].sort((x, y) => (x.item < y.item ? -1 : x.item > y.item ? 1 : 0));
  } finally {
    await c.close();
  }
}

describe('one lock for the whole cluster', { timeout: TEST_MS }, () => {
  test('a grant on one node: held events on every node, its writes refused on the others', async (t) => {
    const room = roomName('held');
    const [a, b, c] = await members(room, [['alice', 0], ['bob', 1], ['carol', 2]]);
    t.after(() => closeClients(a, b, c));
    await opAck(a, room, setOp('card', { note: 'hello', n: 0 }));
    const made = await snapshot(2, room);
    let g;

    await t.test('granted precedes the holder\'s held event; members on the other nodes get the same event', async () => {
      g = await grant(a, room, 'card', 30000);
      const ev = await a.waitFor(lockEvent(room, 'card', 'held'), 'the held event (holder)');
      assert.ok(a.log.indexOf(g) < a.log.indexOf(ev), 'granted first');
      assert.deepEqual(ev, { type: 'lock', room, item: 'card', state: 'held', ...who(a), fence: g.fence, ttl: 30000 });
      assert.deepEqual(await b.waitFor(lockEvent(room, 'card', 'held'), 'held on node 2'), ev);
      assert.deepEqual(await c.waitFor(lockEvent(room, 'card', 'held'), 'held on node 3'), ev);
    });

    await t.test('another node refuses the lock to another session: locked, with the holder', async () => {
      await refused(b, room, 'card', a, g.fence, 5000);
      await refused(c, room, 'card', a, g.fence, 5000);
    });

    await t.test('another session of the same user, on another node, is another session', async () => {
      const a2 = await connect(1, 'alice');
      t.after(() => a2.close());
      await a2.join(room);
      await refused(a2, room, 'card', a, g.fence);
      assertLock(await opError(a2, room, setOp('card'), 'locked'), 'card', a, g.fence);
    });

    await t.test('set, del, batch sub-op and text op from other nodes: locked, with item and lock', async () => {
      for (const [cl2, op] of [
        [b, setOp('card', { n: 1 })],
        [c, setOp('card', { n: 2 })],
        [b, { kind: 'del', item: 'card' }],
        [c, setOp('card', { n: 3 }, { base: made.items.card.version })],
        [b, setOp('card', { n: 4 }, { fence: g.fence })], // a guessed fence is no key
        [c, { kind: 'text', item: 'card', field: 'note', rev: 0, ops: [5, '!'] }],
      ]) {
        const e = await opError(cl2, room, op, 'locked');
        assert.equal(e.for, 'op');
        assertLock(e, 'card', a, g.fence);
      }
      const e = await opError(b, room, { kind: 'batch', ops: [setOp('free-1'), setOp('card', { n: 5 })] }, 'locked');
      assert.equal(e.index, 1);
      assertLock(e, 'card', a, g.fence);
      const now = await snapshot(1, room);
      assert.equal(now.seq, made.seq, 'nothing was applied');
      assert.deepEqual(now.items, made.items);
    });

    await t.test('other items stay writable from every node', async () => {
      await opAck(b, room, setOp('other', { by: 'bob' }));
      await opAck(c, room, setOp('other', { by: 'carol' }));
    });

    await t.test('the holder writes the item, with and without its fence; every node sees it', async () => {
      await opAck(a, room, setOp('card', { n: 10 }));
      await opAck(a, room, setOp('card', { n: 11 }, { fence: g.fence }));
      await opAck(a, room, { kind: 'text', item: 'card', field: 'note', rev: 0, ops: [5, '!'], fence: g.fence });
      const last = await opAck(a, room, { kind: 'batch', ops: [setOp('card', { n: 12 }, { fence: g.fence }), setOp('free-2')] });
      await b.entry(room, last.seq);
      await c.entry(room, last.seq);
      const s = await snapshot(2, room);
      assert.equal(s.items.card.fields.n, 12);
      assert.equal(s.items.card.fields.note, 'hello!');
    });

    await t.test('backend writes on another node: 423 locked, unless force', async () => {
      const post = (i, body) => api(url(i), 'POST', `/v1/rooms/${room}/ops`, { key: KEY, body });
      for (const i of [1, 2]) {
        const r = await post(i, { op: setOp('card', { backend: i }) });
        assert.equal(r.status, 423, r.text);
        assert.equal(r.body.code, 'locked');
        assertLock(r.body, 'card', a, g.fence);
      }
      const forced = await post(2, { op: setOp('card', { backend: 'forced' }), force: true });
      assert.equal(forced.status, 200, forced.text);
      assert.equal((await b.entry(room, forced.body.seq)).op.fields.backend, 'forced');
    });

    await t.test('unlock from another node by a non-holder: locked, and the lock stays', async () => {
      const e = await b.request({ type: 'unlock', room, item: 'card' });
      assert.equal(e.type, 'error', JSON.stringify(e));
      assert.equal(e.code, 'locked');
      assertLock(e, 'card', a, g.fence);
      await opError(c, room, setOp('card'), 'locked');
    });

    await t.test('unlock: unlocked, then a free event on every node; the item is writable at once', async () => {
      const u = await a.request({ type: 'unlock', room, item: 'card' });
      const { re, ...rest } = u;
      assert.equal(typeof re, 'number');
      assert.deepEqual(rest, { type: 'unlocked', room, item: 'card' });
      const ev = await a.waitFor(lockEvent(room, 'card', 'free'), 'the free event (holder)');
      assert.ok(a.log.indexOf(u) < a.log.indexOf(ev), 'unlocked first');
      assert.deepEqual(ev, { type: 'lock', room, item: 'card', state: 'free', fence: g.fence, reason: 'unlock' });
      // No waiting for the event on the other nodes: the release is committed
      // before `unlocked`, so their next decision sees it.
      await opAck(c, room, setOp('card', { by: 'carol' }));
      assert.deepEqual(await b.waitFor(lockEvent(room, 'card', 'free'), 'free on node 2'), ev);
      assert.deepEqual(await c.waitFor(lockEvent(room, 'card', 'free'), 'free on node 3'), ev);
    });
  });

  test('one session, nobody else: lock requests for 10 items sent at once are all granted', async (t) => {
    // No contention at all: each grant waits for the one before it to be
    // stored, never for another node.
    const room = roomName('pipelined');
    const [a, b] = await members(room, [['alice', 0], ['bob', 1]]);
    t.after(() => closeClients(a, b));
    const items = Array.from({ length: 10 }, (_, k) => `p${k}`);
    const rs = await Promise.all(items.map((item) => lock(a, room, item)));
    assert.deepEqual(rs.map((r) => (r.type === 'error' ? r.code : r.type)), items.map(() => 'granted'), JSON.stringify(rs.filter((r) => r.type !== 'granted')).slice(0, 600));
    const us = await Promise.all(items.map((item) => a.request({ type: 'unlock', room, item })));
    assert.deepEqual(us.map((r) => (r.type === 'error' ? r.code : r.type)), items.map(() => 'unlocked'));
  });

  test('joined.locks on any node lists the locks held on every node', async (t) => {
    const room = roomName('joined');
    const [a, b] = await members(room, [['alice', 0], ['bob', 1]]);
    t.after(() => closeClients(a, b));
    const ga = await grant(a, room, 'x');
    const gb = await grant(b, room, 'y', 30000);
    const expected = [
      { item: 'x', ...who(a), fence: ga.fence },
      { item: 'y', ...who(b), fence: gb.fence },
    ];
    // node 3 has not loaded the room; nodes 1 and 2 have, each holding one.
    for (const i of [2, 0, 1]) {
      const locks = await locksSeenFrom(i, room);
      assert.deepEqual(locks.map(({ ttl, ...rest }) => rest), expected, `joined.locks on node ${i + 1}`);
      assert.ok(locks[0].ttl > 0 && locks[0].ttl <= 60000, `x: ttl left ${locks[0].ttl}`);
      assert.ok(locks[1].ttl > 0 && locks[1].ttl <= 30000, `y: ttl left ${locks[1].ttl}`);
    }
    // A join right after another node's unlocked or granted sees it: the
    // change was committed before the reply.
    await a.expect({ type: 'unlock', room, item: 'x' }, 'unlocked');
    for (const i of [2, 1]) {
      assert.deepEqual((await locksSeenFrom(i, room)).map((l) => l.item), ['y'], `after the unlock, node ${i + 1}`);
    }
    const gz = await grant(a, room, 'z');
    for (const i of [2, 1]) {
      const locks = await locksSeenFrom(i, room);
      assert.deepEqual(locks.map((l) => [l.item, l.user, l.fence]), [['y', 'bob', gb.fence], ['z', 'alice', gz.fence]],
        `after the grant, node ${i + 1}`);
    }
  });

  test('simultaneous requests on three nodes: exactly one grant per item', async (t) => {
    const room = roomName('race');
    const cs = await members(room, [['alice', 0], ['bob', 1], ['carol', 2]]);
    t.after(() => closeClients(cs));
    const ITEMS = 30;
    const items = Array.from({ length: ITEMS }, (_, k) => `it-${k}`);
    const previous = new Map(); // item -> fence of the last round
    const tally = [];

    // Round 1: every request of every session leaves in the same tick, so
    // each node decides its 30 at once, against the others' 30. Rounds 2
    // and 3: item by item, a loop turn apart, the first sender rotating, so
    // that the nodes' decisions on each item interleave.
    for (let round = 1; round <= 3; round++) {
      await t.test(`round ${round}: ${ITEMS} items, every session asks for each at once`, async () => {
        try {
          const asked = [];
          for (const [k, item] of items.entries()) {
            const order = round === 1 ? cs : [...cs.slice(k % 3), ...cs.slice(0, k % 3)];
            const sent = new Map(order.map((c) => [c, lock(c, room, item, 60000)]));
            asked.push(cs.map((c) => sent.get(c)));
            if (round > 1) await new Promise((resolve) => setImmediate(resolve));
          }
          const replies = await Promise.all(asked.map((r) => Promise.all(r)));
          // First the whole picture (how many items got which answers), then each item.
          const outcomes = {};
          for (const got of replies) {
            const key = got.map((r) => (r.type === 'error' ? r.code : r.type)).sort().join(',');
            outcomes[key] = (outcomes[key] || 0) + 1;
          }
          assert.deepEqual(outcomes, { 'granted,locked,locked': ITEMS }, `answers per item: ${JSON.stringify(outcomes)}`);
          const winners = new Map(); // item -> {c, fence}
          items.forEach((item, k) => {
            const got = replies[k];
            const granted = got.map((r, i) => [r, cs[i]]).filter(([r]) => r.type === 'granted');
            assert.equal(granted.length, 1, `${item}: exactly one grant, got ${JSON.stringify(got)}`);
            const [g, holder] = granted[0];
            assert.equal(g.item, item);
            if (previous.has(item)) assert.ok(g.fence > previous.get(item), `${item}: fence ${g.fence} after ${previous.get(item)}`);
            winners.set(item, { c: holder, fence: g.fence });
            got.forEach((r, i) => {
              if (cs[i] === holder) return;
              assert.equal(r.type, 'error', `${item}: ${cs[i].name} -> ${JSON.stringify(r)}`);
              assert.equal(r.code, 'locked', `${item}: ${cs[i].name} -> ${JSON.stringify(r)}`);
              assertLock(r, item, holder, g.fence, 60000);
            });
          });
          tally.push(cs.map((c) => [...winners.values()].filter((w) => w.c === c).length));

          // Each item's writes: the holder's acked, the others' locked.
          await Promise.all(items.map(async (item) => {
            const w = winners.get(item);
            for (const c of cs) {
              if (c === w.c) await opAck(c, room, setOp(item, { round, by: c.welcome.user }, { fence: w.fence }));
              else assertLock(await opError(c, room, setOp(item, { round, by: c.welcome.user }), 'locked'), item, w.c, w.fence, 60000);
            }
          }));

          // joined.locks anywhere lists exactly the winners.
          for (const i of [0, 1, 2]) {
            const locks = await locksSeenFrom(i, room);
            assert.deepEqual(locks.map((l) => [l.item, l.user, l.device, l.fence]).sort(),
              items.map((item) => { const w = winners.get(item); return [item, w.c.welcome.user, w.c.welcome.device, w.fence]; }).sort(),
              `joined.locks on node ${i + 1}`);
          }

          // Every member, on every node, got one held event per item: the winner's.
          for (const c of cs) {
            await waitUntil(() => items.every((item) => c.log.some(lockEvent(room, item, 'held', winners.get(item).fence))),
              `${c.name}: a held event for every item`);
            const held = c.log.filter((m) => m.type === 'lock' && m.room === room && m.state === 'held' &&
              m.fence > (previous.get(m.item) ?? 0));
            assert.deepEqual(held.map((ev) => ev.item).sort(), [...items].sort(), `${c.name}: one held event per item`);
            for (const ev of held) {
              const w = winners.get(ev.item);
              assert.deepEqual(ev, { type: 'lock', room, item: ev.item, state: 'held', ...who(w.c), fence: w.fence, ttl: 60000 },
                `${c.name}: only the winner's grant is announced`);
            }
          }

          // Every holder unlocks, all at once, for the next round.
          await Promise.all(items.map((item) => winners.get(item).c.expect({ type: 'unlock', room, item }, 'unlocked')));
          for (const item of items) previous.set(item, winners.get(item).fence);
          assert.deepEqual(await locksSeenFrom(1, room), [], 'everything released');
        } finally {
          // Whatever happened, nothing of this round is held in the next:
          // every session gives up every item (unlock of a free item or of
          // another's is harmless here).
          await Promise.all(cs.flatMap((c) => items.map((item) => c.request({ type: 'unlock', room, item }))));
        }
      });
    }
    t.diagnostic(`grants per session (alice@1, bob@2, carol@3) by round: ${JSON.stringify(tally)}`);
  });

  test('fences grow whichever node grants; a renewal keeps its fence', async (t) => {
    const room = roomName('fences');
    const cs = await members(room, [['alice', 0], ['bob', 1], ['carol', 2]]);
    t.after(() => closeClients(cs));
    const fences = [];
    for (let k = 0; k < 9; k++) {
      const c = cs[k % 3];
      const g = await grant(c, room, 'f', 20000);
      const renewed = await grant(c, room, 'f', 30000);
      assert.equal(renewed.fence, g.fence, 'a renewal keeps the fence');
      fences.push(g.fence);
      await c.expect({ type: 'unlock', room, item: 'f' }, 'unlocked');
    }
    for (let k = 1; k < fences.length; k++)
      assert.ok(fences[k] > fences[k - 1], `grant ${k} (node ${(k % 3) + 1}): fence ${fences[k]} after ${fences[k - 1]}: ${fences}`);
    // Every member saw the same story: per grant a held event (and its
    // renewal, same fence), then a free one, in the order they happened.
    for (const c of cs) {
      await waitUntil(() => c.log.filter(lockEvent(room, 'f', 'free')).length === fences.length, `${c.name}: every release`);
      const seen = c.log.filter(lockEvent(room, 'f')).map((m) => `${m.state}:${m.fence}`);
      assert.deepEqual(seen, fences.flatMap((f) => [`held:${f}`, `held:${f}`, `free:${f}`]), `${c.name}: the lock events in order`);
    }
  });

  test('a stale fence is lock_lost, also after a takeover through another node', async (t) => {
    const room = roomName('stale');
    const [a, b] = await members(room, [['alice', 0], ['bob', 1]]);
    t.after(() => closeClients(a, b));
    const g1 = await grant(a, room, 'doc');
    await opAck(a, room, setOp('doc', { v: 1 }, { fence: g1.fence }));
    await a.expect({ type: 'unlock', room, item: 'doc' }, 'unlocked');

    // Taken over on node 2 right after the release on node 1.
    const g2 = await grant(b, room, 'doc');
    assert.ok(g2.fence > g1.fence, `${g2.fence} > ${g1.fence}`);
    // held by another session: locked (the lock is checked before the fence)
    assertLock(await opError(a, room, setOp('doc', { v: 'old' }, { fence: g1.fence }), 'locked'), 'doc', b, g2.fence);
    assertLock(await opError(a, room, setOp('doc', { v: 'theirs' }, { fence: g2.fence }), 'locked'), 'doc', b, g2.fence);
    // the new holder with a fence that is not its lock's: lock_lost
    for (const fence of [g1.fence, g2.fence + 1]) {
      assert.equal((await opError(b, room, setOp('doc', {}, { fence }), 'lock_lost')).item, 'doc');
    }
    const e = await opError(b, room, { kind: 'batch', ops: [setOp('doc', { a: 1 }, { fence: g2.fence }), setOp('doc', { b: 1 }, { fence: g1.fence })] }, 'lock_lost');
    assert.equal(e.index, 1);
    await opAck(b, room, setOp('doc', { v: 2 }, { fence: g2.fence }));
    await b.expect({ type: 'unlock', room, item: 'doc' }, 'unlocked');

    // Free again: every old fence is lock_lost on both nodes.
    for (const [c, fence] of [[a, g1.fence], [a, g2.fence], [b, g2.fence], [b, g1.fence]]) {
      assert.equal((await opError(c, room, setOp('doc', {}, { fence }), 'lock_lost')).item, 'doc');
    }
    // Node 1 grants it again: larger than node 2's, and only that fence is a's.
    const g3 = await grant(a, room, 'doc');
    assert.ok(g3.fence > g2.fence, `${g3.fence} > ${g2.fence}`);
    await opError(a, room, setOp('doc', {}, { fence: g1.fence }), 'lock_lost');
    await opError(a, room, setOp('doc', {}, { fence: g2.fence }), 'lock_lost');
    const last = await opAck(a, room, setOp('doc', { v: 3 }, { fence: g3.fence }));
    await b.entry(room, last.seq);
    assert.deepEqual((await snapshot(2, room)).items.doc.fields, { v: 3 }, 'only the current holders\' writes were applied');
  });

  test('every decision sees the lock changes acknowledged before it on other nodes (40 rounds)', async (t) => {
    // A lock change is committed before its reply, so the next request, on
    // any node, is decided on it: refusing on a lock another node already
    // released (or answering from before a takeover) breaks the lock's order.
    // Each step once is a race with the bus; 40 rounds make a stale view show.
    const room = roomName('order');
    const [a, b] = await members(room, [['alice', 0], ['bob', 1]]);
    t.after(() => closeClients(a, b));
    const ROUNDS = 40;
    const seen = { relock: {}, oldFenceAfterTakeover: {}, writeAfterRelease: {}, oldFenceWhenFree: {}, lockAfterRelease: {} };
    const count = (what, r) => {
      const k = r.type === 'error' ? r.code : r.type;
      seen[what][k] = (seen[what][k] || 0) + 1;
      return r;
    };
    const lockOf = (c, item) => c.request({ type: 'lock', room, item, ttl: 60000 });
    const unlock = (c, item) => c.expect({ type: 'unlock', room, item }, 'unlocked');
    for (let k = 0; k < ROUNDS; k++) {
      const item = `o${k}`;
      assert.equal((await lockOf(b, item)).type, 'granted');
      await unlock(b, item);
      // 1. node 2 released it: node 1 grants it
      const ga = count('relock', await lockOf(a, item));
      if (ga.type !== 'granted') continue;
      await unlock(a, item);
      // 2. node 2 took it over: a's old fence on node 1 meets b's lock (locked: the lock is checked first)
      const gb = await lockOf(b, item);
      assert.equal(gb.type, 'granted', `${item}: ${JSON.stringify(gb)}`);
      const e = count('oldFenceAfterTakeover', await a.op(room, cid(), setOp(item, { k }, { fence: ga.fence })));
      if (e.code === 'locked') assert.equal(e.lock.fence, gb.fence);
      await unlock(b, item);
      // 3. node 2 released it: node 1 writes it, an old fence is lock_lost, a lock is granted
      count('writeAfterRelease', await a.op(room, cid(), setOp(item, { k })));
      count('oldFenceWhenFree', await a.op(room, cid(), setOp(item, { k }, { fence: gb.fence })));
      const g3 = count('lockAfterRelease', await lockOf(a, item));
      if (g3.type === 'granted') await unlock(a, item);
    }
    assert.deepEqual(seen, {
      relock: { granted: ROUNDS },
      oldFenceAfterTakeover: { locked: ROUNDS },
      writeAfterRelease: { ack: ROUNDS },
      oldFenceWhenFree: { lock_lost: ROUNDS },
      lockAfterRelease: { granted: ROUNDS },
    }, `the answers of ${ROUNDS} rounds, per step: ${JSON.stringify(seen)}`);
  });

  test('a lock taken over after its TTL ran out on another node: the old holder\'s fence is refused', async (t) => {
    const room = roomName('ttl-takeover');
    const [a, b] = await members(room, [['alice', 0], ['bob', 1]]);
    t.after(() => closeClients(a, b));
    const g1 = await grant(a, room, 'doc', 1000);
    await b.waitFor(lockEvent(room, 'doc', 'free', g1.fence), 'the expiry on node 2');
    const g2 = await grant(b, room, 'doc');
    assert.ok(g2.fence > g1.fence);
    assertLock(await opError(a, room, setOp('doc', {}, { fence: g1.fence }), 'locked'), 'doc', b, g2.fence);
    await b.expect({ type: 'unlock', room, item: 'doc' }, 'unlocked');
    await opError(a, room, setOp('doc', {}, { fence: g1.fence }), 'lock_lost');
  });
});

describe('release frees a lock for every node', { timeout: TEST_MS }, () => {
  test('leave releases the session\'s locks in that room (reason left); another node takes them', async (t) => {
    const room = roomName('leave');
    const other = roomName('leave-other');
    const [a, b, c] = await members(room, [['alice', 0], ['bob', 1], ['carol', 2]]);
    t.after(() => closeClients(a, b, c));
    await a.join(other);
    await b.join(other);
    const g1 = await grant(a, room, 'l1');
    const g2 = await grant(a, room, 'l2');
    const go = await grant(a, other, 'l1');
    await a.expect({ type: 'leave', room }, 'left');
    for (const m of [b, c]) {
      for (const g of [g1, g2]) {
        const ev = await m.waitFor(lockEvent(room, g.item, 'free', g.fence), `${m.name}: ${g.item} freed`);
        assert.deepEqual(ev, { type: 'lock', room, item: g.item, state: 'free', fence: g.fence, reason: 'left' });
      }
    }
    const t1 = await grant(b, room, 'l1');
    assert.ok(t1.fence > g1.fence);
    await opAck(c, room, setOp('l2'));
    // the lock in the other room stays
    assertLock(await opError(b, other, setOp('l1'), 'locked'), 'l1', a, go.fence);
  });

  test('bye releases them (reason session_end); another node takes them', async (t) => {
    const room = roomName('bye');
    const [a, b, c] = await members(room, [['alice', 0], ['bob', 1], ['carol', 2]]);
    t.after(() => closeClients(b, c));
    const g = await grant(a, room, 'b1');
    await a.close();
    for (const m of [b, c]) {
      const ev = await m.waitFor(lockEvent(room, 'b1', 'free', g.fence), `${m.name}: b1 freed`);
      assert.equal(ev.reason, 'session_end');
    }
    const g2 = await grant(c, room, 'b1');
    assert.ok(g2.fence > g.fence);
    assertLock(await opError(b, room, setOp('b1'), 'locked'), 'b1', c, g2.fence);
  });

  test('ttl 1000 runs out: free everywhere (reason expired), another node can take it', async (t) => {
    const room = roomName('expire');
    const [a, b, c] = await members(room, [['alice', 0], ['bob', 1], ['carol', 2]]);
    t.after(() => closeClients(a, b, c));
    const g = await grant(a, room, 'e', 1000);
    assertLock(await opError(b, room, setOp('e'), 'locked'), 'e', a, g.fence, 1000);
    await sleep(2500); // well past the ttl
    const g2 = await grant(b, room, 'e');
    assert.ok(g2.fence > g.fence);
    for (const m of [a, b, c]) {
      const ev = await m.waitFor(lockEvent(room, 'e', 'free', g.fence), `${m.name}: the expiry`);
      assert.deepEqual(ev, { type: 'lock', room, item: 'e', state: 'free', fence: g.fence, reason: 'expired' });
      await m.waitFor(lockEvent(room, 'e', 'held', g2.fence), `${m.name}: the new grant`);
    }
    assertLock(await opError(c, room, setOp('e'), 'locked'), 'e', b, g2.fence);
  });

  test('a renewal restarts the ttl on every node and keeps the fence', async (t) => {
    const room = roomName('renew');
    const [a, b, c] = await members(room, [['alice', 0], ['bob', 1], ['carol', 2]]);
    t.after(() => closeClients(a, b, c));
    const g = await grant(a, room, 'r', 1000);
    const r = await grant(a, room, 'r', 30000);
    assert.equal(r.fence, g.fence);
    for (const m of [b, c]) {
      const evs = await m.take(2, lockEvent(room, 'r', 'held'), `${m.name}: grant and renewal`);
      assert.deepEqual(evs.map((e) => [e.fence, e.ttl]), [[g.fence, 1000], [g.fence, 30000]]);
    }
    await sleep(1500); // well past the first ttl, far from the second
    for (const m of [b, c]) {
      const e = await refused(m, room, 'r', a, g.fence);
      assert.ok(e.lock.ttl > 1000, `ttl left ${e.lock.ttl}: the renewal counts everywhere`);
      assertLock(await opError(m, room, setOp('r'), 'locked'), 'r', a, g.fence);
      assert.deepEqual(m.drain(lockEvent(room, 'r', 'free')), [], 'no release');
    }
    await opAck(a, room, setOp('r', {}, { fence: g.fence }));
  });
});

describe('a dead node', { timeout: TEST_MS }, () => {
  test('kill -9 of the holder\'s node: another node takes the lock well before its ttl', async (t) => {
    const room = roomName('dead');
    const [b, c] = await members(room, [['bob', 0], ['carol', 1]]);
    t.after(() => closeClients(b, c));
    const victim = cl.nodes[2];
    const v = await connect(2, 'victor');
    await v.join(room);
    const g = await grant(v, room, 'd', 60000);
    await refused(b, room, 'd', v, g.fence);
    await c.waitFor(lockEvent(room, 'd', 'held', g.fence), 'held on node 2');

    await victim.kill9();
    const killed = Date.now();
    try {
      // The node is missed after its heartbeat TTL (3 s) and a sweep; the
      // lock's own ttl (60 s) is far beyond this wait.
      let g2 = null;
      let asks = 0;
      await waitUntil(async () => {
        asks++;
        const r = await lock(b, room, 'd', 60000);
        if (r.type === 'granted') {
          g2 = r;
          return true;
        }
        assert.equal(r.code, 'locked', `while the dead node's lock stands, only locked: ${JSON.stringify(r)}`);
        assert.equal(r.lock.fence, g.fence);
        await sleep(200);
        return false;
      }, 'the dead node\'s lock to be released', WAIT_MS + 5000);
      assert.ok(g2.fence > g.fence, `${g2.fence} > ${g.fence}`);
      t.diagnostic(`granted after ${asks} lock requests, 200 ms apart, ${Date.now() - killed} ms after the kill (not asserted)`);
      const ev = await c.waitFor(lockEvent(room, 'd', 'free', g.fence), 'the release on node 2');
      assert.ok(FREE_REASONS.includes(ev.reason), `reason ${ev.reason}`);
      t.diagnostic(`the dead holder's lock was freed with reason ${ev.reason}`);
      await c.waitFor(lockEvent(room, 'd', 'held', g2.fence), 'the takeover on node 2');
      assertLock(await opError(c, room, setOp('d'), 'locked'), 'd', b, g2.fence);
      const locks = await locksSeenFrom(1, room);
      assert.deepEqual(locks.map((l) => [l.item, l.user, l.fence]), [['d', 'bob', g2.fence]]);
    } finally {
      await v.closed().catch(() => {});
      await victim.start();
    }
  });
});

describe('rooms unloaded between requests', { timeout: TEST_MS }, () => {
  // A room whose last member leaves is unloaded with its lock table; the
  // next join loads it again from the store. Pipelined, the leave arrives
  // while the join (the room's creation, its presence question to the
  // other nodes) and the lock's commit are still under way. Each node locks
  // its own item: changes of different items never fence each other out,
  // so no lock is ever answered `stale` (before lock rows had versions of
  // their own, the three nodes' changes fenced each other out all the time,
  // and about 1 lock in 100 got `stale` after 20 fences in a row).
  test('join, lock, leave pipelined on three nodes at once: each lock granted while joined, fences keep growing', async (t) => {
    const cs = await Promise.all([0, 1, 2].map((i) => connect(i, `unl${i}`)));
    t.after(() => closeClients(cs));
    const room = roomName('unloaded');
    const fences = await Promise.all(cs.map(async (c, k) => {
      const out = [];
      for (let i = 0; i < 40; i++) {
        const item = `x${k}`;
        c.send({ type: 'join', room });
        c.send({ type: 'lock', id: `lk${i}`, room, item, ttl: 5000 });
        c.send({ type: 'leave', room });
        const r = await c.waitFor((m) => m.re === `lk${i}`, `${c.name}: the answer to lock ${i}`);
        assert.equal(r.type, 'granted', `${c.name}: a lock sent between join and leave: ${JSON.stringify(r)}`);
        out.push(r.fence);
        await c.waitFor((m) => m.type === 'left' && m.room === room, `${c.name}: left ${i}`);
      }
      return out;
    }));
    fences.forEach((f, k) => {
      for (let i = 1; i < f.length; i++) assert.ok(f[i] > f[i - 1], `node ${k + 1}, grant ${i}: ${f}`);
    });
  });

  // The same on a room that exists already (no creation race): not one
  // batch of any node is fenced out, however the three nodes' commits
  // interleave. Before lock rows had versions of their own, every lock
  // change moved the room's head and lock version, and each node's changes
  // were fenced out by the others' about 3 times per round.
  test('locks of different items changed on three nodes at once never fence each other out', async (t) => {
    const cs = await Promise.all([0, 1, 2].map((i) => connect(i, `dif${i}`)));
    t.after(() => closeClients(cs));
    const room = roomName('items');
    await cs[0].join(room);
    cs[0].send({ type: 'leave', room });
    await cs[0].waitFor((m) => m.type === 'left' && m.room === room, 'left after creating the room');
    const fenced = async () => (await Promise.all(cl.nodes.map((x) => fetchMetrics(x.url, KEY))))
      .map((m) => m.get('wsync_stale_commits_total'));
    const before = await fenced();
    await Promise.all(cs.map(async (c, k) => {
      for (let i = 0; i < 40; i++) {
        c.send({ type: 'join', room });
        c.send({ type: 'lock', id: `li${i}`, room, item: `y${k}`, ttl: 5000 });
        c.send({ type: 'leave', room });
        const r = await c.waitFor((m) => m.re === `li${i}`, `${c.name}: the answer to lock ${i}`);
        assert.equal(r.type, 'granted', `${c.name}: ${JSON.stringify(r)}`);
        await c.waitFor((m) => m.type === 'left' && m.room === room, `${c.name}: left ${i}`);
      }
    }));
    const now = await fenced();
    assert.deepEqual(now.map((v, k) => v - before[k]), [0, 0, 0], 'batches fenced out on each node');
  });

  test('join, leave pipelined in new rooms on every node: the nodes stay up', async (t) => {
    const cs = await Promise.all([0, 1, 2].map((i) => connect(i, `jl${i}`)));
    t.after(() => closeClients(cs));
    await Promise.all(cs.map(async (c) => {
      for (let i = 0; i < 10; i++) {
        const fresh = roomName('jl');
        c.send({ type: 'join', room: fresh });
        c.send({ type: 'leave', room: fresh });
        await c.waitFor((m) => m.type === 'left' && m.room === fresh, `${c.name}: left ${fresh}`);
      }
    }));
    for (const node of cl.nodes) assert.ok(node.running, `${node.nodeId} is up: ${node.srv.exit && JSON.stringify(node.srv.exit)}`);
  });
});
