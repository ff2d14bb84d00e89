// sync-lockgrace.test.mjs -- locks of a holder whose connection is gone
// (docs/PROTOCOL.md 9.4, 3.5): the session stays for the resume window, but
// its locks only for the lock grace (--lock-grace, shorter): then they are
// released with reason "disconnected", and every member sees it. A session
// that resumes within the grace keeps its locks (same fence).
import assert from 'node:assert/strict';
import test from 'node:test';

import { sleep } from './lib/server.mjs';
import { SyncClient, closeClients, startSyncServer, token } from './lib/sync.mjs';

const GRACE = 1000;
let srv; // --lock-grace 1s, --resume-window 30s
let dflt; // the defaults
test.before(async () => {
  srv = await startSyncServer(null, ['--lock-grace', '1s', '--resume-window', '30s', '--rate', '100000', '--burst', '100000']);
  dflt = await startSyncServer(null, []);
});
test.after(async () => {
  await srv.stopChecked();
  await dflt.stopChecked();
});

let devN = 0;
let cidN = 0;
const cid = () => `lg.${++cidN}`;
const lockEvent = (room, item, state) => (m) => m.type === 'lock' && m.room === room && m.item === item && m.state === state;

async function pair(room) {
  const hello = { token: token('alice'), device: `a-${++devN}` };
  const a = await SyncClient.connect(srv.url, hello);
  const b = await SyncClient.connect(srv.url, { token: token('bob'), device: `b-${++devN}` });
  await a.join(room);
  await b.join(room);
  return { a, b, hello };
}

test('welcome.limits.lock_grace: 10000 by default, the flag otherwise', async () => {
  const c = await SyncClient.connect(dflt.url, { token: token('x'), device: 'x1' });
  assert.equal(c.welcome.limits.lock_grace, 10000);
  assert.equal(c.welcome.limits.resume_window, 60000);
  await c.close();
  const d = await SyncClient.connect(srv.url, { token: token('x'), device: 'x2' });
  assert.equal(d.welcome.limits.lock_grace, GRACE);
  await d.close();
});

test('a detached holder loses its locks after the grace (reason disconnected), long before the resume window', async (t) => {
  const room = 'board:lg-1';
  const { a, b } = await pair(room);
  t.after(() => closeClients(a, b));
  const g = await a.expect({ type: 'lock', room, item: 'x', ttl: 60000 }, 'granted');
  await a.expect({ type: 'lock', room, item: 'y', ttl: 60000 }, 'granted');
  const t0 = Date.now();
  await a.drop();
  const u = await b.waitFor((m) => m.type === 'presence' && m.user === 'alice', 'alice detached');
  assert.equal(u.connected, false);
  await b.expectError({ type: 'op', room, cid: cid(), op: { kind: 'set', item: 'x', fields: {} } }, 'locked');
  const ev = await b.waitFor(lockEvent(room, 'x', 'free'), 'x released');
  const took = Date.now() - t0;
  assert.equal(ev.reason, 'disconnected');
  assert.equal(ev.fence, g.fence);
  assert.ok(took >= GRACE - 100, `not before the grace (${took} ms)`);
  assert.ok(took < GRACE + 3000, `soon after it (${took} ms)`);
  assert.equal((await b.waitFor(lockEvent(room, 'y', 'free'), 'y released')).reason, 'disconnected');
  await b.set(room, cid(), 'x', { mine: true });
  // The session itself is still there: presence shows it, disconnected.
  const c = await SyncClient.connect(srv.url, { token: token('carol'), device: `c-${++devN}` });
  t.after(() => c.close());
  const j = await c.join(room);
  assert.deepEqual(j.locks, []);
  assert.ok(j.presence.some((p) => p.user === 'alice' && p.connected === false), JSON.stringify(j.presence));
});

test('a holder that resumes within the grace keeps its locks, with the same fence', async (t) => {
  const room = 'board:lg-2';
  const { a, b, hello } = await pair(room);
  t.after(() => closeClients(b));
  const g = await a.expect({ type: 'lock', room, item: 'x', ttl: 60000 }, 'granted');
  await b.waitFor(lockEvent(room, 'x', 'held'), 'held');
  const last = a.received;
  await a.drop();
  await sleep(GRACE / 4);
  const a2 = await SyncClient.connect(srv.url, { ...hello, session: a.welcome.session, last });
  t.after(() => a2.close());
  assert.equal(a2.welcome.resumed, true);
  await sleep(GRACE * 2);
  await b.ping();
  assert.deepEqual(b.drain(lockEvent(room, 'x', 'free')), [], 'no release');
  const e = await b.expectError({ type: 'op', room, cid: cid(), op: { kind: 'set', item: 'x', fields: {} } }, 'locked');
  assert.equal(e.lock.fence, g.fence);
  await a2.set(room, cid(), 'x', { v: 1 }, { fence: g.fence });
  // A later drop starts the grace afresh.
  await a2.drop();
  const ev = await b.waitFor(lockEvent(room, 'x', 'free'), 'released after the second drop');
  assert.equal(ev.reason, 'disconnected');
});

test('a holder that resumes after the grace finds its locks gone: its fence is lock_lost', async (t) => {
  const room = 'board:lg-3';
  const { a, b, hello } = await pair(room);
  t.after(() => closeClients(b));
  const g = await a.expect({ type: 'lock', room, item: 'x', ttl: 60000 }, 'granted');
  const last = a.received;
  await a.drop();
  await b.waitFor(lockEvent(room, 'x', 'free'), 'released');
  const a2 = await SyncClient.connect(srv.url, { ...hello, session: a.welcome.session, last });
  t.after(() => a2.close());
  assert.equal(a2.welcome.resumed, true, 'the session itself lives on');
  const ev = await a2.waitFor(lockEvent(room, 'x', 'free'), 'the release, replayed');
  assert.equal(ev.reason, 'disconnected');
  const e = await a2.request({ type: 'op', room, cid: cid(), op: { kind: 'set', item: 'x', fields: {}, fence: g.fence } });
  assert.equal(e.code, 'lock_lost', JSON.stringify(e));
});
