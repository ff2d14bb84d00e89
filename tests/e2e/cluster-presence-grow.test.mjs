// cluster-presence-grow.test.mjs -- presence windows that lengthen while
// members keep joining and leaving (--presence-max-interval, PROTOCOL.md
// 8.3), across nodes: each node lengthens its own windows and publishes
// them merged; a member on another node still ends with the exact view.
//
// Two nodes (PostgreSQL and Redis started by the harness), windows of
// 50 ms growing up to 400 ms. Clients join and leave on both nodes in turn
// until both nodes have sent lengthened windows (/metrics); then a pacer
// on each node marks the end of its node's window (as in
// cluster-presence-batch.test.mjs) and the views of the observer (node 1,
// joined before) and of a member that joined on node 0 in the middle of
// the long windows, each pieced together from its joined list and the
// events after it, must be what a session joining now is told. No
// wall-clock assertion.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startCluster } from './lib/cluster.mjs';
import { closeClients, fetchMetrics, SyncClient, token } from './lib/sync.mjs';

const KEY = 'cluster-presence-grow-key-0123456789';
let cl;
before(async () => {
  cl = await startCluster(2, {
    nodeArgs: () => ['--rate', '100000', '--burst', '100000', '--api-key', KEY,
      '--presence-interval', '50ms', '--presence-max-interval', '400ms'],
  });
});
after(() => cl?.stop());

let n = 0;
const connect = (i, user) => SyncClient.connect(cl.nodes[i].url, { token: token(user), device: `${user}-g${++n}` });
const isPres = (m) => m.type === 'presence';
const lengthened = async (i) => (await fetchMetrics(cl.nodes[i].url, KEY)).get('wsync_presence_windows_lengthened_total');

test('joins and leaves on both nodes lengthen both nodes\' windows, and a member on either sees the exact room', async (t) => {
  const name = 'cpg:storm';
  const obs = await connect(1, 'obs');
  const pats = [await connect(0, 'pat0'), await connect(1, 'pat1')];
  t.after(() => closeClients(obs, ...pats));
  const view = new Map();
  const key = (p) => `${p.user}:${p.device}`;
  for (const p of (await obs.join(name)).presence) view.set(key(p), p.state);
  for (const p of pats) await p.join(name);
  const apply = (events) => {
    for (const m of events) {
      if (m.event === 'leave') {
        assert.ok(view.has(key(m)), `a leave of ${key(m)}, not in the view`);
        view.delete(key(m));
      } else {
        assert.equal(view.has(key(m)), m.event === 'update', `${m.event} of ${key(m)}`);
        view.set(key(m), m.state);
      }
    }
  };
  let tick = 0;
  const barrier = async () => {
    const k = ++tick;
    for (const p of pats) p.send({ type: 'presence', room: name, state: { tick: k } });
    const isTick = (m, u) => isPres(m) && m.user === u && m.state?.tick === k;
    const marks = [];
    for (const u of ['pat0', 'pat1']) marks.push(await obs.waitFor((m) => isTick(m, u), `${u}'s tick ${k}`));
    apply([...obs.drain(isPres), ...marks]);
  };
  const base = [await lengthened(0), await lengthened(1)];
  const cs = [];
  for (let i = 0; i < 6; i++) cs.push(await connect(i % 2, `churn${i}`));
  t.after(() => closeClients(...cs));
  const inside = cs.map(() => false);
  let k = 0;
  const step = async () => {
    const i = k % cs.length;
    if (inside[i]) assert.equal((await cs[i].request({ type: 'leave', room: name })).type, 'left');
    else await cs[i].join(name, { presence: { k } });
    inside[i] = !inside[i];
    k++;
  };
  let grown = false;
  while (k < 20000 && !grown) {
    await step();
    if (k % 25 === 0) grown = (await lengthened(0)) - base[0] >= 3 && (await lengthened(1)) - base[1] >= 3;
  }
  assert.ok(grown, 'both nodes lengthened their windows');
  // A member joining on node 0 in the middle of long windows, the churn going on.
  const mid = await connect(0, 'mid');
  t.after(() => closeClients(mid));
  const midView = new Map((await mid.join(name)).presence.map((p) => [key(p), p.state]));
  for (let j = 0; j < 150; j++) await step();
  await barrier();
  const marks = [];
  for (const u of ['pat0', 'pat1']) {
    marks.push(await mid.waitFor((m) => isPres(m) && m.user === u && m.state?.tick === tick, `${u}'s tick on mid`));
  }
  for (const m of [...mid.drain(isPres), ...marks]) {
    if (m.event === 'leave') {
      assert.ok(midView.delete(key(m)), `mid: a leave of ${key(m)}, not in its view`);
    } else {
      assert.equal(midView.has(key(m)), m.event === 'update', `mid: ${m.event} of ${key(m)}`);
      midView.set(key(m), m.state);
    }
  }
  // A session joining on obs's node now: node 1's members as they are, and
  // node 0's as node 1 knows them, which is up to pat0's tick obs just got.
  const late = await connect(1, 'late');
  t.after(() => closeClients(late));
  const now = new Map((await late.join(name)).presence.filter((p) => p.user !== 'late').map((p) => [key(p), p.state]));
  const sorted = (m) => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
  assert.deepEqual(sorted(view), sorted(now));
  assert.deepEqual(sorted(midView), sorted(now));
  const churners = [...view.keys()].map((k) => k.split(':')[0]).filter((u) => u.startsWith('churn')).sort();
  assert.deepEqual(churners, cs.map((_, i) => `churn${i}`).filter((_, i) => inside[i]));
});
