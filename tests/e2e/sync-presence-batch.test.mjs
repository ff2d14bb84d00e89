// sync-presence-batch.test.mjs -- presence windows (docs/PROTOCOL.md 8.3,
// --presence-interval): a room's presence changes of one interval go out
// together, those of one member merged into their net effect; a session
// that joins during a window gets only the changes after its joined list.
//
// No wall-clock assertion: the server's one presence timer stops once no
// window is open, so a window opens at the first change after a quiet
// moment and lasts the interval (1 s here, far longer than the few requests
// of a case on loopback). Each case starts after a barrier (a presence
// update of `pat` that `obs` waits for: the window before it was sent) and
// ends with one (its update is the window's last entry, so everything of
// the window reached obs before it, in the same flush).
import assert from 'node:assert/strict';
import test from 'node:test';

import { SyncClient, closeClients, startSyncServer, token } from './lib/sync.mjs';

const INTERVAL = '1s';
let srv;
let plain; // --presence-interval 0: each change at once, as before windows
test.before(async () => {
  srv = await startSyncServer(null, ['--rate', '10000', '--burst', '10000', '--presence-interval', INTERVAL]);
  plain = await startSyncServer(null, ['--rate', '10000', '--burst', '10000', '--presence-interval', '0']);
});
test.after(() => Promise.all([srv.stopChecked(), plain.stopChecked()]));

let dev = 0;
const connect = (server, user) => SyncClient.connect(server.url, { token: token(user), device: `pb-${++dev}` });
const isPres = (m) => m.type === 'presence';
/** What c got of presence so far, reduced to [event, user, state?, connected?]. */
const brief = (list) => list.map((m) => [m.event, m.user, ...(m.event === 'leave' ? [] : [m.state, m.connected])]);

/**
 * A room with an observer (obs) and a pacer (pat) that marks the windows:
 * barrier() makes pat update its state and waits until obs has it, then
 * returns (and removes) the presence events obs got before it.
 */
async function room(t, server, name) {
  const obs = await connect(server, 'obs');
  const pat = await connect(server, 'pat');
  t.after(() => closeClients(obs, pat));
  await obs.join(name);
  await pat.join(name);
  let tick = 0;
  const barrier = async () => {
    const n = ++tick;
    pat.send({ type: 'presence', room: name, state: { tick: n } });
    await obs.waitFor((m) => isPres(m) && m.user === 'pat' && m.state?.tick === n, `pat's tick ${n}`);
    const got = obs.drain(isPres);
    return got.filter((m) => m.user !== 'pat');
  };
  await barrier(); // pat's join and the first tick: nothing is open now
  return { obs, pat, barrier };
}

test('a join then a leave within one window: nobody sees either', async (t) => {
  const name = 'pb:join-leave';
  const { barrier } = await room(t, srv, name);
  const x = await connect(srv, 'xena');
  t.after(() => closeClients(x));
  await x.join(name, { presence: { here: 1 } });
  assert.equal((await x.request({ type: 'leave', room: name })).type, 'left');
  assert.deepEqual(brief(await barrier()), []);
});

test('updates within one window: one update with the last state', async (t) => {
  const name = 'pb:updates';
  const { barrier } = await room(t, srv, name);
  const x = await connect(srv, 'xena');
  t.after(() => closeClients(x));
  await x.join(name, { presence: { n: 0 } });
  assert.deepEqual(brief(await barrier()), [['join', 'xena', { n: 0 }, true]]);
  for (let n = 1; n <= 5; n++) x.send({ type: 'presence', room: name, state: { n } });
  await x.ping(); // the server has them all
  assert.deepEqual(brief(await barrier()), [['update', 'xena', { n: 5 }, true]]);
  await x.ping();
  assert.deepEqual(x.drain(isPres).filter((m) => m.user === 'xena'), [], 'never its own events');
});

test('a join then updates within one window: one join with the last state', async (t) => {
  const name = 'pb:join-updates';
  const { barrier } = await room(t, srv, name);
  const x = await connect(srv, 'xena');
  t.after(() => closeClients(x));
  await x.join(name, { presence: { n: 0 } });
  x.send({ type: 'presence', room: name, state: { n: 1 } });
  x.send({ type: 'presence', room: name, state: { n: 2 } });
  await x.ping();
  assert.deepEqual(brief(await barrier()), [['join', 'xena', { n: 2 }, true]]);
});

test('updates then a leave within one window: the leave alone', async (t) => {
  const name = 'pb:updates-leave';
  const { barrier } = await room(t, srv, name);
  const x = await connect(srv, 'xena');
  t.after(() => closeClients(x));
  await x.join(name);
  await barrier();
  x.send({ type: 'presence', room: name, state: { n: 1 } });
  assert.equal((await x.request({ type: 'leave', room: name })).type, 'left');
  assert.deepEqual(brief(await barrier()), [['leave', 'xena']]);
});

test('a leave then a join again within one window: a leave, then a join with the new state', async (t) => {
  const name = 'pb:rejoin';
  const { barrier } = await room(t, srv, name);
  const x = await connect(srv, 'xena');
  t.after(() => closeClients(x));
  await x.join(name, { presence: { v: 1 } });
  await barrier();
  assert.equal((await x.request({ type: 'leave', room: name })).type, 'left');
  await x.join(name, { presence: { v: 2 } });
  assert.deepEqual(brief(await barrier()), [['leave', 'xena'], ['join', 'xena', { v: 2 }, true]]);
});

test('a connection lost is an update (connected false), merged like the others', async (t) => {
  const name = 'pb:connected';
  const { barrier } = await room(t, srv, name);
  const x = await connect(srv, 'xena');
  await x.join(name, { presence: { v: 1 } });
  await barrier();
  await x.drop(); // the session stays for the resume window, disconnected
  assert.deepEqual(brief(await barrier()), [['update', 'xena', { v: 1 }, false]]);
});

test('a session that joins during a window: no event it already had in joined, every one after it', async (t) => {
  const name = 'pb:late';
  const { obs, barrier } = await room(t, srv, name);
  const [x, z, w, late, y] = await Promise.all(['xena', 'zoe', 'walt', 'lena', 'yuri'].map((u) => connect(srv, u)));
  t.after(() => closeClients(x, z, w, late, y));
  await z.join(name);
  await w.join(name);
  await barrier();
  // The window: before lena joins...
  await x.join(name, { presence: { a: 1 } });
  x.send({ type: 'presence', room: name, state: { a: 2 } });
  assert.equal((await z.request({ type: 'leave', room: name })).type, 'left');
  await x.ping();
  const j = await late.join(name);
  const listed = Object.fromEntries(j.presence.map((p) => [p.user, p.state]));
  assert.deepEqual(listed.xena, { a: 2 }, 'joined has xena as she is now');
  assert.equal(listed.zoe, undefined, 'and no zoe');
  // ... and after.
  x.send({ type: 'presence', room: name, state: { a: 3 } });
  assert.equal((await w.request({ type: 'leave', room: name })).type, 'left');
  await y.join(name, { presence: { y: 1 } });
  await x.ping();
  const seenByObs = await barrier();
  assert.deepEqual(brief(seenByObs), [
    ['join', 'xena', { a: 3 }, true],
    ['leave', 'zoe'],
    ['join', 'lena', {}, true],
    ['leave', 'walt'],
    ['join', 'yuri', { y: 1 }, true],
  ]);
  // lena had xena's join and zoe's leave in her joined: she gets what came after, in one go.
  await late.waitFor((m) => isPres(m) && m.user === 'pat', 'the window reaches lena');
  assert.deepEqual(brief(late.drain(isPres)), [
    ['update', 'xena', { a: 3 }, true],
    ['leave', 'walt'],
    ['join', 'yuri', { y: 1 }, true],
  ]); // pat's update came last (the wait above took it)
  // The next window reaches her like everyone else.
  x.send({ type: 'presence', room: name, state: { a: 4 } });
  await x.ping();
  assert.deepEqual(brief(await barrier()), [['update', 'xena', { a: 4 }, true]]);
  await late.waitFor((m) => isPres(m) && m.user === 'pat' && m.state.tick === 4, 'the next window reaches lena');
  assert.deepEqual(brief(late.drain(isPres)), [['update', 'xena', { a: 4 }, true]]);
  await obs.ping();
  assert.deepEqual(obs.drain(isPres), []);
});

test('a member that leaves during a window gets none of its events', async (t) => {
  const name = 'pb:leaver';
  const { barrier } = await room(t, srv, name);
  const [x, m] = await Promise.all(['xena', 'mo'].map((u) => connect(srv, u)));
  t.after(() => closeClients(x, m));
  await x.join(name);
  await m.join(name);
  await barrier();
  m.drain(isPres);
  x.send({ type: 'presence', room: name, state: { n: 1 } });
  await x.ping();
  assert.equal((await m.request({ type: 'leave', room: name })).type, 'left');
  assert.deepEqual(brief(await barrier()), [['update', 'xena', { n: 1 }, true], ['leave', 'mo']]);
  await m.ping();
  assert.deepEqual(m.drain(isPres), []);
});

test('--presence-interval 0: every change at once, none merged', async (t) => {
  const name = 'pb:plain';
  const obs = await connect(plain, 'obs');
  const x = await connect(plain, 'xena');
  t.after(() => closeClients(obs, x));
  await obs.join(name);
  await x.join(name, { presence: { n: 0 } });
  x.send({ type: 'presence', room: name, state: { n: 1 } });
  x.send({ type: 'presence', room: name, state: { n: 2 } });
  assert.equal((await x.request({ type: 'leave', room: name })).type, 'left');
  const got = await obs.take(4, isPres, 'presence events');
  assert.deepEqual(brief(got), [
    ['join', 'xena', { n: 0 }, true],
    ['update', 'xena', { n: 1 }, true],
    ['update', 'xena', { n: 2 }, true],
    ['leave', 'xena'],
  ]);
  // A join while the others' events are on their way: joined has the state, the events follow as sent.
  const y = await connect(plain, 'yuri');
  t.after(() => closeClients(y));
  await x.join(name, { presence: { n: 3 } });
  const j = await y.join(name);
  assert.deepEqual(j.presence.find((p) => p.user === 'xena').state, { n: 3 });
  await obs.take(2, isPres, 'xena and yuri join');
});
