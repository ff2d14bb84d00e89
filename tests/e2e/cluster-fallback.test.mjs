// cluster-fallback.test.mjs -- the HTTP fallbacks with no sticky sessions
// (issue 13, docs/CLUSTER.md): three nodes on one PostgreSQL and one Redis,
// behind the round-robin proxy of lib/rrproxy.mjs, which sends every HTTP
// request to the next node in turn. JS clients forced on SSE or long-poll
// say hello on one node and have their stream, polls and sends served by
// whichever node each request reaches: a node forwards the request of
// another node's session to it over the bus and answers with what comes
// back (src/sync/forward.h). Checked: no client ever starts over while every
// node is up (one welcome each: a request answered 410 or 503 would make it
// say hello again), every node took requests, ops of each client reach the
// other, the replicas equal the store. Then the node a client's session
// lives on is killed (kill -9) mid-way: the client starts over on the
// others (a new session, rooms joined with since) and both converge.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { SERVER_ARGS, docOf, makeClient, serverDoc } from './lib/client-util.mjs';
import { startCluster } from './lib/cluster.mjs';
import { startRrProxy } from './lib/rrproxy.mjs';
import { WAIT_MS, scale, sleep, waitUntil, withTimeout } from './lib/server.mjs';

/** How long a node takes to be declared gone by the others (docs/CLUSTER.md: about 3 s), with room. */
const GONE_MS = 8000;
/** A bound on each test (a guard, not a measure): a client that keeps starting over must fail, not hang. */
const TEST_MS = scale(90000, 240000);

let cl;
let proxy;
/** The balancer's view of node i: itself, or, once it is "taken out" (a health check), the next live one. */
const out = new Set();
const live = (i) => {
  for (let k = 0; k < cl.nodes.length; k++) {
    const j = (i + k) % cl.nodes.length;
    if (!out.has(j)) return cl.nodes[j];
  }
  return cl.nodes[i];
};
let n = 0;

before(async () => {
  cl = await startCluster(3, { nodeArgs: () => SERVER_ARGS });
  const backends = cl.nodes.map((_, i) => ({
    get host() { return '127.0.0.1'; },
    get port() { return live(i).port; },
  }));
  proxy = await startRrProxy({ backends });
  // Each node hears the others' heartbeats within a second or two.
  await sleep(1500);
}, { timeout: TEST_MS });
after(async () => {
  if (proxy) await proxy.close();
  if (cl) await cl.stop();
});

const nodeOf = (c) => (c.session || '').slice(0, (c.session || '').lastIndexOf('.'));

/** Waits until every room has nothing pending, its client is online and all are at one position. */
function settled(rooms, ms = WAIT_MS) {
  return waitUntil(() => {
    const s = rooms[0].position.seq;
    return rooms.every((r) => r.pendingCount === 0 && r.client.status === 'online' && r._state === 'joined' &&
      r.position.seq === s);
  }, `settled: ${rooms.map((r) => `${r.client.device}@${r.position.seq}/${r.pendingCount}/${r.client.status}`).join(' ')}`, ms);
}

async function exchange(t, transport) {
  const room = `fb-${transport}-${process.pid}-${++n}`;
  const a = makeClient(t, proxy.url, { user: `a${n}`, transport });
  const b = makeClient(t, proxy.url, { user: `b${n}`, transport });
  const ra = a.room(room);
  const rb = b.room(room);
  await withTimeout(Promise.all([ra.ready, rb.ready]), WAIT_MS, 'both joined');
  assert.equal(a.transport, transport);
  assert.equal(b.transport, transport);
  for (const c of [a, b]) {
    assert.match(c.session, /^node-[123]\.[0-9a-f]{32}$/, 'the token names the node the session lives on');
  }
  const before = proxy.http.slice();
  for (let k = 0; k < 6; k++) {
    await ra.set(`a${k}`, { k, by: 'a' });
    await rb.set(`b${k}`, { k, by: 'b' });
  }
  await settled([ra, rb]);
  const want = {};
  for (let k = 0; k < 6; k++) {
    want[`a${k}`] = { k, by: 'a' };
    want[`b${k}`] = { k, by: 'b' };
  }
  assert.deepEqual(docOf(ra), want, 'a has its ops and b\'s');
  assert.deepEqual(docOf(rb), want, 'b has its ops and a\'s');
  for (const node of cl.nodes) assert.deepEqual(await serverDoc(node.url, room), want, `the store via ${node.nodeId}`);
  // Round robin: every node served some of these requests, most of them for
  // a session of another node; none was refused, or the client would have
  // said hello again.
  proxy.http.forEach((x, i) => assert.ok(x > before[i], `node ${i + 1} took requests (${before[i]} -> ${x})`));
  assert.equal(a.welcomes.length, 1, `a never started over: ${a.statuses.join(' ')}`);
  assert.equal(b.welcomes.length, 1, `b never started over: ${b.statuses.join(' ')}`);
  // `stale` (another node committed first) is re-sent by the client itself.
  const errs = (c) => c.errors.filter((e) => e.code !== 'stale').map((e) => `${e.code}: ${e.message}`);
  assert.deepEqual(errs(a), []);
  assert.deepEqual(errs(b), []);
  return { a, b, ra, rb, room };
}

test('SSE through a round-robin balancer: hello, join, ops both ways, no restart', { timeout: TEST_MS }, async (t) => {
  await exchange(t, 'sse');
});

test('long-poll through a round-robin balancer: hello, join, ops both ways, no restart', { timeout: TEST_MS }, async (t) => {
  await exchange(t, 'poll');
});

test('a stream cut three times: each resume, wherever its hello lands, finds the session', { timeout: TEST_MS }, async (t) => {
  // The SSE stream's fetch gets a signal of ours, so the test can cut it;
  // the client then says hello again with its session (a resume). Through
  // the round-robin proxy that hello reaches any node; one that is not the
  // session's forwards it there, so every resume succeeds.
  let cut = null;
  const before = (url, init) => {
    if (!url.includes('/v1/sse')) return;
    const ac = new AbortController();
    if (init.signal) init.signal.addEventListener('abort', () => ac.abort());
    init.signal = ac.signal;
    cut = ac;
  };
  const room = `fb-resume-${process.pid}-${++n}`;
  const a = makeClient(t, proxy.url, { user: `ra${n}`, transport: 'sse', fetchHooks: { before } });
  const b = makeClient(t, proxy.url, { user: `rb${n}`, transport: 'poll' });
  const ra = a.room(room);
  const rb = b.room(room);
  await withTimeout(Promise.all([ra.ready, rb.ready]), WAIT_MS, 'both joined');
  const session = a.session;
  for (let k = 0; k < 3; k++) {
    await waitUntil(() => cut && a.status === 'online', 'a stream to cut');
    const mine = cut;
    cut = null;
    mine.abort();
    await waitUntil(() => a.welcomes.length === k + 2, `resume ${k + 1} (${a.statuses.join(' ')})`);
    assert.equal(a.welcomes[k + 1].resumed, true, `resume ${k + 1} found the session`);
    assert.equal(a.session, session);
    await rb.set(`r${k}`, { k });
    await settled([ra, rb]);
    assert.deepEqual(ra.get(`r${k}`), { k }, 'b\'s op reached a on its resumed stream');
  }
  assert.equal(b.welcomes.length, 1);
});

test('the node of a session killed mid-way: the client starts over on the others and converges', { timeout: TEST_MS }, async (t) => {
  // One SSE client, one polling client; the victim is the node of the SSE
  // client's session, the polling client's session lives elsewhere (tried
  // until it does).
  const room = `fb-kill-${process.pid}-${++n}`;
  const a = makeClient(t, proxy.url, { user: `ka${n}`, transport: 'sse' });
  const ra = a.room(room);
  await withTimeout(ra.ready, WAIT_MS, 'a joined');
  let b;
  let rb;
  for (let tries = 0; ; tries++) {
    b = makeClient(t, proxy.url, { user: `kb${n}-${tries}`, transport: 'poll' });
    rb = b.room(room);
    await withTimeout(rb.ready, WAIT_MS, 'b joined');
    if (nodeOf(b) !== nodeOf(a)) break;
    assert.ok(tries < 20, 'round robin puts a session on another node');
    b.close();
  }
  await ra.set('before', { v: 1 });
  await settled([ra, rb]);
  const victimId = nodeOf(a);
  const vi = cl.nodes.findIndex((x) => x.nodeId === victimId);
  assert.ok(vi >= 0, `the node of ${a.session}`);
  const welcomes = a.welcomes.length;
  const oldSession = a.session;

  await cl.nodes[vi].kill9();
  // Writes while the node is dead and being found out; then the balancer's
  // health check takes it out of the rotation, as a real one would.
  const writes = [];
  for (let k = 0; k < 3; k++) {
    writes.push(ra.set(`a-during-${k}`, { k }), rb.set(`b-during-${k}`, { k }));
    await sleep(200);
  }
  out.add(vi);
  for (let k = 0; k < 3; k++) writes.push(ra.set(`a-after-${k}`, { k }), rb.set(`b-after-${k}`, { k }));
  await settled([ra, rb], WAIT_MS + GONE_MS);
  const results = await Promise.allSettled(writes);
  assert.deepEqual(results.filter((x) => x.status === 'rejected').map((x) => String(x.reason)), [], 'every write was acknowledged');

  assert.ok(a.welcomes.length > welcomes, 'a said hello again after its node died');
  assert.notEqual(nodeOf(a), victimId, 'a\'s new session lives on a node that is up');
  assert.equal(a.transport, 'sse');
  assert.equal(b.transport, 'poll');
  const doc = docOf(ra);
  assert.deepEqual(docOf(rb), doc, 'both replicas are the same');
  for (const k of [0, 1, 2]) {
    for (const w of ['a-during', 'b-during', 'a-after', 'b-after']) assert.deepEqual(doc[`${w}-${k}`], { k }, `${w}-${k}`);
  }
  assert.deepEqual(doc.before, { v: 1 });
  const live0 = cl.nodes.find((x, i) => i !== vi);
  assert.deepEqual(await serverDoc(live0.url, room), doc, 'the store has every op once');

  // Straight to a live node: the dead node's session is 503 at once (its
  // node is known gone), a token of no shape is 410 as on one node.
  const poll = (tok) => fetch(`${live0.url}/v1/poll?session=${encodeURIComponent(tok)}&last=0`);
  const r = await poll(oldSession);
  assert.equal(r.status, 503);
  assert.equal((await r.json()).code, 'internal');
  const r2 = await poll('not a token');
  assert.equal(r2.status, 410);
  assert.equal((await r2.json()).code, 'session_expired');
});
