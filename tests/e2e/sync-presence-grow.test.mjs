// sync-presence-grow.test.mjs -- presence windows that lengthen while a
// room's members keep joining and leaving (docs/PROTOCOL.md 8.3,
// --presence-max-interval): each window sent with a join or leave in it
// makes the room's next one twice as long, up to the maximum (500 ms by
// default); a window without one makes the next last --presence-interval
// again, and a state or connection change closes the open window at the
// next tick.
//
// No wall-clock assertion: the server counts the windows it sent and those
// longer than the interval (/metrics), and the cases drive the room until
// the count they need is there. The barrier is the one of
// sync-presence-batch.test.mjs: pat updates its state and obs waits for it,
// so everything of the windows before (and of pat's own) reached obs first.
import assert from 'node:assert/strict';
import test from 'node:test';

import { SyncClient, closeClients, fetchMetrics, startSyncServer, token } from './lib/sync.mjs';

const KEY = 'presence-grow-api-key-0123456789';
const FAST = ['--rate', '100000', '--burst', '100000', '--api-key', KEY];
let srv; // windows of 50 ms that grow up to 400 ms
let flat; // --presence-max-interval 0: windows never grow
let dflt; // no --presence-max-interval: the default, 500 ms
let slow; // windows that grow up to a minute
test.before(async () => {
  srv = await startSyncServer(null, [...FAST, '--presence-interval', '50ms', '--presence-max-interval', '400ms']);
  flat = await startSyncServer(null, [...FAST, '--presence-interval', '50ms', '--presence-max-interval', '0']);
  dflt = await startSyncServer(null, [...FAST, '--presence-interval', '50ms']);
  slow = await startSyncServer(null, [...FAST, '--presence-interval', '50ms', '--presence-max-interval', '60s']);
});
test.after(() => Promise.all([srv, flat, dflt, slow].map((s) => s.stopChecked())));

let dev = 0;
const connect = (server, user) => SyncClient.connect(server.url, { token: token(user), device: `pg-${++dev}` });
const isPres = (m) => m.type === 'presence';
const windows = async (server) => {
  const m = await fetchMetrics(server.url, KEY);
  return { sent: m.get('wsync_presence_windows_total'), long: m.get('wsync_presence_windows_lengthened_total') };
};

/** obs and pat in name; barrier() as in sync-presence-batch.test.mjs, returning the events obs got up to it. */
async function room(t, server, name) {
  const obs = await connect(server, 'obs');
  const pat = await connect(server, 'pat');
  t.after(() => closeClients(obs, pat));
  const joined = await obs.join(name);
  await pat.join(name);
  let tick = 0;
  const barrier = async () => {
    const n = ++tick;
    pat.send({ type: 'presence', room: name, state: { tick: n } });
    const mark = await obs.waitFor((m) => isPres(m) && m.user === 'pat' && m.state?.tick === n, `pat's tick ${n}`);
    return [...obs.drain(isPres), mark];
  };
  return { obs, pat, barrier, joined };
}

/** A member's view, kept from its joined list and the presence events it got after. */
function view(list) {
  const v = new Map();
  for (const p of list) v.set(`${p.user}:${p.device}`, { state: p.state, connected: p.connected });
  const apply = (events) => {
    for (const m of events) {
      const k = `${m.user}:${m.device}`;
      if (m.event === 'leave') {
        assert.ok(v.has(k), `a leave of ${k}, not in the view`);
        v.delete(k);
      } else {
        assert.equal(v.has(k), m.event === 'update', `${m.event} of ${k} with the view ${[...v.keys()]}`);
        v.set(k, { state: m.state, connected: m.connected });
      }
    }
  };
  const sorted = () => [...v.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
  return { apply, sorted };
}

/**
 * Clients that join and leave name in turn, each join with a new state:
 * run(done) goes on until done() holds (checked every 25 requests), or for
 * `count` requests when done is a number.
 */
async function churner(t, server, name) {
  const cs = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => connect(server, `churn${i}`)));
  t.after(() => closeClients(...cs));
  const inside = cs.map(() => false);
  let n = 0;
  const run = async (done, max = 20000) => {
    for (let k = 0; k < max; k++, n++) {
      const i = n % cs.length;
      if (inside[i]) assert.equal((await cs[i].request({ type: 'leave', room: name })).type, 'left');
      else await cs[i].join(name, { presence: { n } });
      inside[i] = !inside[i];
      if (typeof done === 'number' ? k + 1 === done : k % 25 === 24 && (await done())) return;
    }
    assert.fail(`the windows did not lengthen within ${max} joins and leaves`);
  };
  const members = () => cs.map((_, i) => `churn${i}`).filter((_, i) => inside[i]);
  return { run, members };
}

/** The churn of churner(), run once until done() holds. */
async function churn(t, server, name, done) {
  const ch = await churner(t, server, name);
  await ch.run(done);
  return ch;
}

test('joins and leaves in window after window lengthen the windows, and every view stays exact', async (t) => {
  const name = 'pg:storm';
  const before = await windows(srv);
  const { obs, barrier, joined } = await room(t, srv, name);
  const v = view(joined.presence);
  const ch = await churner(t, srv, name);
  // Enough lengthened windows that the longest length was reached (100, 200, 400, 400).
  await ch.run(async () => (await windows(srv)).long - before.long >= 4);
  // A member that joins in the middle of a long window, while the churn goes on.
  const mid = await connect(srv, 'mid');
  t.after(() => closeClients(mid));
  const vm = view((await mid.join(name)).presence);
  await ch.run(150);
  v.apply(await barrier());
  const mark = await mid.waitFor((m) => isPres(m) && m.user === 'pat' && m.state?.tick === 1, "pat's tick on mid");
  vm.apply([...mid.drain(isPres), mark]);
  // What obs and mid pieced together is what a member joining now is told.
  const late = await connect(srv, 'late');
  t.after(() => closeClients(late));
  const now = view((await late.join(name)).presence);
  const others = now.sorted().filter(([k]) => !k.startsWith('late:'));
  assert.deepEqual(v.sorted(), others);
  assert.deepEqual(vm.sorted(), others);
  const members = v.sorted().map(([k]) => k.split(':')[0]).filter((u) => u.startsWith('churn')).sort();
  assert.deepEqual(members, ch.members());
  const after = await windows(srv);
  assert.ok(after.sent > after.long, `windows ${JSON.stringify(after)}`);
});

test('a window without joins or leaves makes the next one last the interval again', async (t) => {
  const name = 'pg:calm';
  const { barrier } = await room(t, srv, name);
  const before = await windows(srv);
  await churn(t, srv, name, async () => (await windows(srv)).long - before.long >= 3);
  // The first barrier's window may hold the last joins and leaves (a
  // window still open), and then the second's is a long one; that one holds
  // an update alone, so every window after it lasts the interval: state
  // updates (cursors, typing) never lengthen them.
  await barrier();
  await barrier();
  const settled = (await windows(srv)).long;
  for (let i = 0; i < 5; i++) await barrier();
  const end = await windows(srv);
  assert.equal(end.long, settled, `windows ${JSON.stringify(end)}`);
});

test('by default the windows lengthen too', async (t) => {
  const name = 'pg:default';
  const { barrier } = await room(t, dflt, name);
  const before = await windows(dflt);
  await churn(t, dflt, name, async () => (await windows(dflt)).long - before.long >= 3);
  await barrier();
  assert.ok((await windows(dflt)).long >= 3);
});

// The one wall-clock figure of these tests is the semantics, not a speed:
// a window opened after five lengthened ones lasts 50 ms << 6 = 3.2 s or
// more, and a state change in it must go out at the next tick (50 ms)
// instead. The bound asserted is half that window.
test('a state change in a long window goes out within the interval, with the joins before it', async (t) => {
  const name = 'pg:live';
  const { obs, pat } = await room(t, slow, name);
  const before = await windows(slow);
  await churn(t, slow, name, async () => (await windows(slow)).long - before.long >= 5);
  // One more join, seen by obs: its window has just been sent, so the
  // change below is the first of a new, longer window.
  const x = await connect(slow, 'xlast');
  t.after(() => closeClients(x));
  await x.join(name);
  await obs.waitFor((m) => isPres(m) && m.user === 'xlast' && m.event === 'join', "xlast's join", 20000);
  obs.drain(isPres);
  const y = await connect(slow, 'ylast');
  t.after(() => closeClients(y));
  await y.join(name); // a join in the same window: it goes out with the change
  const t0 = Date.now();
  pat.send({ type: 'presence', room: name, state: { live: true } });
  await obs.waitFor((m) => isPres(m) && m.user === 'pat' && m.state?.live === true, "pat's change", 20000);
  const waited = Date.now() - t0;
  assert.ok(waited < 1600, `the change waited ${waited} ms: a long window held it`);
  const got = obs.drain(isPres).map((m) => `${m.user} ${m.event}`);
  assert.ok(got.includes('ylast join'), `the window's join went with it: ${got}`);
});

test('with --presence-max-interval 0 no window is lengthened', async (t) => {
  const name = 'pg:flat';
  const { barrier } = await room(t, flat, name);
  const before = await windows(flat);
  let sent = 0;
  await churn(t, flat, name, async () => (sent = (await windows(flat)).sent - before.sent) >= 8);
  await barrier();
  const end = await windows(flat);
  assert.ok(sent >= 8);
  assert.equal(end.long, 0);
});

test('a quiet moment after long windows: the next window lasts the interval', async (t) => {
  const name = 'pg:quiet';
  const { barrier } = await room(t, srv, name);
  const before = await windows(srv);
  await churn(t, srv, name, async () => (await windows(srv)).long - before.long >= 3);
  await barrier(); // its window most likely held the last joins and leaves: the next one would be long
  await new Promise((r) => setTimeout(r, 1000)); // quiet for more than the longest window and an interval
  const settled = (await windows(srv)).long;
  const x = await connect(srv, 'xena');
  t.after(() => closeClients(x));
  await x.join(name);
  const got = await barrier();
  assert.deepEqual(got.filter((m) => m.user === 'xena').map((m) => m.event), ['join']);
  assert.equal((await windows(srv)).long, settled);
});
