// cluster-presence-batch.test.mjs -- presence windows across nodes
// (docs/PROTOCOL.md 8.3, CLUSTER.md "Presence"): a member's changes are
// merged on its own node and published merged when that node's window
// ends, so another node's members get the net effect, never the changes
// in between; a session joining on another node during the window gets
// them after its joined list, once.
//
// Two nodes (PostgreSQL and Redis started by the harness), each with
// --presence-interval 1s. As in sync-presence-batch.test.mjs, windows are
// marked by a pacer (pat, on the node of the changes): its update is the
// last entry of the window, so what the window sends reaches the observer
// (obs, on the other node) before it. No wall-clock assertion.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startCluster } from './lib/cluster.mjs';
import { closeClients, SyncClient, token } from './lib/sync.mjs';

let cl;
before(async () => {
  cl = await startCluster(2, { nodeArgs: () => ['--rate', '100000', '--burst', '100000', '--presence-interval', '1s'] });
});
after(() => cl?.stop());

let n = 0;
const connect = (i, user) => SyncClient.connect(cl.nodes[i].url, { token: token(user), device: `${user}-c${++n}` });
const isPres = (m) => m.type === 'presence';
const brief = (list) => list.map((m) => [m.event, m.user, ...(m.event === 'leave' ? [] : [m.state, m.connected])]);

/** obs on node 1, pat on node 0, both in name; barrier() as in sync-presence-batch.test.mjs. */
async function room(t, name) {
  const obs = await connect(1, 'obs');
  const pat = await connect(0, 'pat');
  t.after(() => closeClients(obs, pat));
  await obs.join(name);
  await pat.join(name);
  let tick = 0;
  const barrier = async () => {
    const k = ++tick;
    pat.send({ type: 'presence', room: name, state: { tick: k } });
    await obs.waitFor((m) => isPres(m) && m.user === 'pat' && m.state?.tick === k, `pat's tick ${k}`);
    return obs.drain(isPres).filter((m) => m.user !== 'pat');
  };
  await barrier();
  return { obs, pat, barrier };
}

test('another node gets the net effect of a window: join + updates = one join; join + leave = nothing', async (t) => {
  const name = 'cpb:merge';
  const { barrier } = await room(t, name);
  const x = await connect(0, 'xena');
  const y = await connect(0, 'yuri');
  t.after(() => closeClients(x, y));
  await x.join(name, { presence: { n: 0 } });
  x.send({ type: 'presence', room: name, state: { n: 1 } });
  x.send({ type: 'presence', room: name, state: { n: 2 } });
  await y.join(name);
  assert.equal((await y.request({ type: 'leave', room: name })).type, 'left');
  await x.ping();
  assert.deepEqual(brief(await barrier()), [['join', 'xena', { n: 2 }, true]]);
});

test('a session joining on another node during the window: the changes after its joined list, once', async (t) => {
  const name = 'cpb:late';
  const { barrier } = await room(t, name);
  const x = await connect(0, 'xena');
  const late = await connect(1, 'lena');
  t.after(() => closeClients(x, late));
  await x.join(name, { presence: { a: 1 } });
  await x.ping();
  const j = await late.join(name); // node 1 has not heard of xena yet: her window is open on node 0
  assert.deepEqual(j.presence.map((p) => p.user).sort(), ['lena', 'obs', 'pat']);
  x.send({ type: 'presence', room: name, state: { a: 2 } });
  await x.ping();
  // (lena's own join comes with node 1's window, whenever that ends.)
  assert.deepEqual(brief((await barrier()).filter((m) => m.user !== 'lena')), [['join', 'xena', { a: 2 }, true]]);
  await late.waitFor((m) => isPres(m) && m.user === 'pat', 'the window reaches lena');
  assert.deepEqual(brief(late.drain(isPres)), [['join', 'xena', { a: 2 }, true]]);
});
