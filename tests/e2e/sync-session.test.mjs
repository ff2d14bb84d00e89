// sync-session.test.mjs -- sessions outliving their connections
// (docs/PROTOCOL.md 3.4-3.6, 8.3): ordinals counted by the client, recv,
// detach (presence connected:false) and resume (the missed messages replayed
// exactly from last + 1, locks and rooms kept, no presence leave or join),
// the ways a resume fails (a new session, the old one ended), one session per
// (user, device) with 4001 for the one replaced, bye, the handshake timeout.
import assert from 'node:assert/strict';
import test from 'node:test';

import { scale, sleep, waitUntil } from './lib/server.mjs';
import { SyncClient, closeClients, restartableServer, snapshotOf, startSyncServer, token } from './lib/sync.mjs';

// Short enough to watch a session expire, long enough for a prompt resume.
const WINDOW = scale(1000, 2500);

let srv;
test.before(async () => {
  // --presence-interval 0: these cases count every message of a session
  // (ordinals, replays) with presence events sent at once, as they come;
  // presence windows have their own suite (sync-presence-batch.test.mjs).
  srv = await startSyncServer(null, ['--resume-window', `${WINDOW}ms`, '--handshake-timeout', '500ms',
    '--rate', '100000', '--burst', '100000', '--presence-interval', '0']);
});
test.after(() => srv.stopChecked());

let devN = 0;
const dev = (p) => `${p}-${++devN}`;
const connect = (user, device = dev(user), grants) => SyncClient.connect(srv.url, { token: token(user, grants), device });
/** A hello resuming c's session after ordinal last (a fresh token of the same user). */
const resumeHello = (c, last, extra = {}) => ({
  token: token(c.welcome.user), device: c.welcome.device, session: c.welcome.session, last, ...extra,
});
const resume = (c, last, extra) => SyncClient.connect(srv.url, resumeHello(c, last, extra), `${c.name}'`);
const presenceOf = (room, c, event) => (m) => m.type === 'presence' && m.room === room &&
  m.user === c.welcome.user && m.device === c.welcome.device && (!event || m.event === event);
const disconnected = (room, c) => (m) => presenceOf(room, c, 'update')(m) && m.connected === false;
const reconnected = (room, c) => (m) => presenceOf(room, c, 'update')(m) && m.connected === true;
const isEntry = (room) => (m) => (m.type === 'op' || m.type === 'message') && m.room === room;
const lockEvent = (room, item, state) => (m) => m.type === 'lock' && m.room === room && m.item === item && m.state === state;

test('ordinals, detach and resume', async (t) => {
  const room = 'board:resume';
  const a = await connect('alice', dev('laptop'));
  const b = await connect('bob');
  t.after(() => closeClients(a, b));
  let a2;

  await t.test('every message after welcome has an ordinal: the client counts them all', async () => {
    await a.join(room);
    await b.join(room);
    await a.waitFor(presenceOf(room, b, 'join'), 'bob joins');
    const g = await a.expect({ type: 'lock', room, item: 'card-1', ttl: 60000 }, 'granted');
    await a.waitFor(lockEvent(room, 'card-1', 'held'), 'the lock event');
    await a.set(room, 'a.1', 'card-1', { t: 1 }, { fence: g.fence });
    await a.entry(room, 1);
    await a.ping();
    assert.deepEqual(a.afterWelcome.map((m) => m.type), ['joined', 'presence', 'granted', 'lock', 'ack', 'op', 'pong'],
      'replies, events and entries alike');
    assert.equal(a.log[0], a.welcome, 'the welcome came first and is not counted');
  });

  const confirmed = 7;
  let missed;
  await t.test('dropped without bye: the others see connected:false, no leave', async () => {
    a.send({ type: 'recv', n: confirmed }); // everything so far
    await b.set(room, 'b.2', 'card-2', { t: 2 });
    await a.entry(room, 2); // ordinal 8
    await a.ping(); // ordinal 9
    assert.equal(a.received, 9, 'no error for the recv');
    await a.drop();
    const u = await b.waitFor(presenceOf(room, a), 'alice presence event');
    assert.equal(u.event, 'update');
    assert.equal(u.connected, false);
    assert.deepEqual(u.state, {});
  });

  await t.test('while detached, what others write is stored and queued for the session', async () => {
    const before = b.log.length;
    await b.set(room, 'b.3', 'card-2', { t: 3 });
    await b.entry(room, 3);
    await b.expect({ type: 'publish', room, cid: 'b.4', data: { text: 'while you were out' } }, 'ack');
    await b.entry(room, 4);
    await b.expect({ type: 'publish', room, data: { typing: true }, ephemeral: true }, 'ack');
    await b.waitFor((m) => m.type === 'message' && m.ephemeral, 'the ephemeral message');
    await b.expect({ type: 'op', room, cid: 'b.5', op: { kind: 'del', item: 'card-2' } }, 'ack');
    await b.entry(room, 5);
    // the snapshotter's presence join and leave reach alice's outbox too
    const s = await snapshotOf(srv.url, room, { token: token('snapshotter'), device: 'snap-resume' });
    assert.equal(s.seq, 5);
    assert.deepEqual(Object.keys(s.items), ['card-1']);
    await b.waitFor(presenceOf(room, { welcome: { user: 'snapshotter', device: 'snap-resume' } }, 'leave'), 'the snapshotter leaves');
    // what bob got that was not a reply to him is what alice's session got
    missed = b.log.slice(before).filter((m) => m.re === undefined);
    assert.deepEqual(missed.filter(isEntry(room)).map((m) => m.seq), [3, 4, undefined, 5]);
    assert.deepEqual(missed.map((m) => m.type), ['op', 'message', 'message', 'op', 'presence', 'presence']);
  });

  await t.test('resume within the window: welcome resumed:true with the rooms, then exactly the messages after last', async () => {
    // The client processed up to ordinal 8 (say the pong was lost with the connection).
    a2 = await resume(a, 8);
    assert.equal(a2.welcome.resumed, true);
    assert.equal(a2.welcome.session, a.welcome.session, 'the same session token');
    assert.deepEqual(a2.welcome.rooms, [room]);
    assert.equal(a2.welcome.user, 'alice');
    assert.equal(a2.welcome.device, a.welcome.device);
    assert.equal(a2.log[0], a2.welcome, 'nothing before the welcome');
    await a2.ping();
    const replay = a2.afterWelcome;
    assert.deepEqual(replay.slice(0, -1), [a.afterWelcome[8], ...missed], 'ordinal 9 (seen before), then what was missed, in order');
    assert.equal(replay.at(-1).type, 'pong');
  });

  await t.test('the others saw connected:true, never a leave or a join', async () => {
    const back = await b.waitFor(presenceOf(room, a), 'alice back');
    assert.equal(back.event, 'update');
    assert.equal(back.connected, true);
    await b.ping();
    assert.deepEqual(b.log.filter(presenceOf(room, a)).map((m) => `${m.event}:${m.connected}`), ['update:false', 'update:true']);
  });

  await t.test('the lock held before the drop is still held', async () => {
    const r = await b.request({ type: 'op', room, cid: 'b.6', op: { kind: 'set', item: 'card-1', fields: { x: 1 } } });
    assert.equal(r.code, 'locked');
    assert.equal(r.lock.user, 'alice');
    const ack = await a2.set(room, 'a.7', 'card-1', { t: 7 }, { fence: a.log.find((m) => m.type === 'granted').fence });
    assert.equal(ack.seq, 6);
    await a2.entry(room, 6);
  });

  await t.test('re-sending an op whose ack may have been lost is safe: a duplicate with its seq', async () => {
    const d = await a2.set(room, 'a.1', 'card-1', { t: 1 });
    assert.equal(d.seq, 1);
    assert.equal(d.duplicate, true);
  });

  await t.test('ordinals go on from last across connections: recv of the last one is fine, one more is bad_request', async () => {
    await a2.ping();
    const lastSent = 8 + a2.received;
    a2.send({ type: 'recv', n: lastSent });
    await a2.ping();
    assert.deepEqual(a2.drain((m) => m.type === 'error'), []);
    // the pong above took ordinal lastSent + 1; lastSent + 2 has not been sent
    const e = await a2.expectError({ type: 'recv', n: lastSent + 2 }, 'bad_request');
    assert.equal(e.field, 'n');
    assert.equal(e.for, 'recv');
  });

  await t.test('a second drop and resume, after everything: nothing to replay', async () => {
    await a2.ping();
    const last = 8 + a2.received;
    await a2.drop();
    await b.waitFor(disconnected(room, a), 'alice disconnected again');
    const a3 = await resume(a, last);
    t.after(() => a3.close());
    assert.equal(a3.welcome.resumed, true);
    await a3.ping();
    assert.deepEqual(a3.afterWelcome.map((m) => m.type), ['pong']);
    await b.waitFor(reconnected(room, a), 'alice back again');
  });
});

test('recv', async (t) => {
  const c = await connect('rita');
  t.after(() => c.close());
  await c.join('board:recv');
  await c.ping();
  const n = c.received; // joined, pong

  await t.test('n up to the last ordinal sent is fine; a lower n than before is ignored', async () => {
    c.send({ type: 'recv', n });
    c.send({ type: 'recv', n: 1 });
    c.send({ type: 'recv', n: 0 });
    await c.ping();
    assert.deepEqual(c.drain((m) => m.type === 'error'), []);
  });
  const bad = [
    ['n beyond the messages sent', () => ({ n: c.received + 1 })],
    ['n far beyond', () => ({ n: 1e9 })],
    ['n missing', () => ({})],
    ['n negative', () => ({ n: -1 })],
    ['n a string', () => ({ n: '1' })],
    ['n a fraction', () => ({ n: 1.5 })],
  ];
  for (const [name, body] of bad) {
    await t.test(`${name} -> bad_request`, async () => {
      await c.ping();
      const e = await c.expectError({ type: 'recv', ...body() }, 'bad_request');
      assert.equal(e.field, 'n');
      assert.ok(c.open, 'the connection stays');
    });
  }
});

test('recv frees the outbox: a resume needs last >= the confirmed n', async (t) => {
  const room = 'board:recv-resume';
  const a = await connect('rosa', dev('laptop'));
  const b = await connect('ben');
  t.after(() => closeClients(a, b));
  await a.join(room);
  await b.join(room);
  for (let i = 1; i <= 3; i++) {
    await a.set(room, `r.${i}`, 'x', { i });
    await a.entry(room, i);
  }
  await a.ping();
  assert.equal(a.received, 9); // joined, presence join of ben, 3 x (ack, op), pong
  a.send({ type: 'recv', n: 6 });
  await a.ping();
  await a.drop();
  await b.waitFor(disconnected(room, a), 'rosa disconnected');
  let a2;

  await t.test('last = n: resumed, replay from n + 1', async () => {
    a2 = await resume(a, 6);
    assert.equal(a2.welcome.resumed, true);
    await a2.ping();
    assert.deepEqual(a2.afterWelcome.slice(0, -1), a.afterWelcome.slice(6));
    assert.equal(a2.afterWelcome.length, 5, 'ordinals 7-10, then the new pong');
  });

  await t.test('last < n: the outbox no longer holds last + 1 -> resumed:false, the old session ends', async () => {
    await a2.ping();
    const sent = 6 + a2.received;
    a2.send({ type: 'recv', n: sent });
    await a2.ping();
    await a2.drop();
    await b.waitFor(presenceOf(room, a, 'update'), 'rosa disconnected again');
    const a3 = await resume(a, sent - 1);
    t.after(() => a3.close());
    assert.equal(a3.welcome.resumed, false);
    assert.notEqual(a3.welcome.session, a.welcome.session);
    assert.equal(a3.welcome.rooms, undefined);
    await b.waitFor(presenceOf(room, a, 'leave'), 'the old session leaves');
    await a3.expectError({ type: 'op', room, cid: 'r.9', op: { kind: 'set', item: 'x', fields: {} } }, 'not_joined');
  });
});

test('failed resumes: a new session, and the old one has ended', async (t) => {
  const room = 'board:fail';
  const b = await connect('bea');
  t.after(() => b.close());
  await b.join(room);

  /** A joined session holding a lock on item, dropped; resolves it once b saw it detach. */
  const detachedHolder = async (user, item) => {
    const a = await connect(user, dev('laptop'));
    await a.join(room);
    await b.waitFor(presenceOf(room, a, 'join'), `${user} joins`);
    await a.expect({ type: 'lock', room, item, ttl: 60000 }, 'granted');
    await b.waitFor(lockEvent(room, item, 'held'), 'the lock');
    await a.ping();
    await a.drop();
    const u = await b.waitFor(presenceOf(room, a), `${user} presence`);
    assert.equal(`${u.event}:${u.connected}`, 'update:false');
    return a;
  };
  /** b sees a leave (not another update first) and a's lock freed at the session's end. */
  const seenEnded = async (a, item) => {
    const m = await b.waitFor(presenceOf(room, a), 'the old session leaves');
    assert.equal(m.event, 'leave');
    const f = await b.waitFor(lockEvent(room, item, 'free'), 'the lock released');
    assert.equal(f.reason, 'session_end');
  };
  const failed = async (a, hello) => {
    const n = await SyncClient.connect(srv.url, hello, `${a.name}'`);
    t.after(() => n.close());
    assert.equal(n.welcome.resumed, false);
    assert.notEqual(n.welcome.session, a.welcome.session);
    assert.equal(n.welcome.rooms, undefined);
    return n;
  };

  await t.test('an unknown session token', async () => {
    const a = await detachedHolder('fay', 'f1');
    const n = await failed(a, resumeHello(a, a.received, { session: 'ffffffffffffffffffffffffffffffff' }));
    await seenEnded(a, 'f1'); // replaced by the new session of its device
    await n.expectError({ type: 'op', room, cid: 'f.1', op: { kind: 'set', item: 'f1', fields: {} } }, 'not_joined');
    await b.set(room, 'b.f1', 'f1', { free: true }); // the lock is gone
  });

  await t.test('last beyond the last message sent', async () => {
    const a = await detachedHolder('gus', 'g1');
    await failed(a, resumeHello(a, a.received + 1));
    await seenEnded(a, 'g1');
  });

  await t.test('the session of another user (even a valid token)', async () => {
    const a = await detachedHolder('hal', 'h1');
    await failed(a, resumeHello(a, a.received, { token: token('mallory') }));
    // hal's session is untouched by this: it is still there, detached, until its window ends
    await seenEnded(a, 'h1');
  });

  await t.test('the session of another device of the same user', async () => {
    const a = await detachedHolder('ida', 'i1');
    await failed(a, resumeHello(a, a.received, { device: 'elsewhere' }));
    await seenEnded(a, 'i1');
  });

  await t.test('after the resume window: the others saw the leave and the lock freed, then the resume fails', async () => {
    const a = await detachedHolder('jan', 'j1');
    await seenEnded(a, 'j1'); // nobody resumed it: the window ran out
    await failed(a, resumeHello(a, a.received));
    await b.ping();
    assert.deepEqual(b.drain(presenceOf(room, a)), [], 'the new session is not in the room');
  });

  await t.test('bye ends the session: close 1000, the others see the leave at once, no resume', async () => {
    const a = await connect('kim', dev('laptop'));
    await a.join(room);
    await b.waitFor(presenceOf(room, a, 'join'), 'kim joins');
    await a.expect({ type: 'lock', room, item: 'k1', ttl: 60000 }, 'granted');
    await b.waitFor(lockEvent(room, 'k1', 'held'), 'the lock');
    await a.ping();
    a.send({ type: 'bye' });
    assert.equal((await a.closed()).code, 1000);
    await seenEnded(a, 'k1');
    await b.ping();
    assert.deepEqual(b.log.filter(presenceOf(room, a)).map((m) => m.event), ['join', 'leave'], 'never shown disconnected');
    await failed(a, resumeHello(a, a.received));
  });
});

test('--max-outbox 1K: a resume fails when the missed messages no longer fit', async (t) => {
  const small = await startSyncServer(t, ['--max-outbox', '1K', '--rate', '100000', '--burst', '100000', '--presence-interval', '0']);
  const room = 'board:outbox';
  const c = (user, device = dev(user)) => SyncClient.connect(small.url, { token: token(user), device });
  const a = await c('lea', 'laptop');
  const b = await c('max');
  t.after(() => closeClients(a, b));
  assert.equal(a.welcome.limits.max_outbox, 1024);
  await a.join(room);
  await b.join(room);
  await a.ping();
  await a.drop();
  await b.waitFor(disconnected(room, a), 'lea disconnected');

  await t.test('a few missed messages fit: resumed', async () => {
    await b.set(room, 'm.1', 'x', { n: 1 });
    await b.entry(room, 1);
    const a2 = await SyncClient.connect(small.url, resumeHello(a, a.received));
    assert.equal(a2.welcome.resumed, true);
    await a2.ping();
    assert.deepEqual(a2.afterWelcome.map((m) => m.type), ['op', 'pong']);
    a.last = a.received + a2.received;
    await a2.drop();
    await b.waitFor(disconnected(room, a), 'lea disconnected again');
  });

  await t.test('30 missed entries of ~100 bytes each do not: resumed:false, the old session ended', async () => {
    for (let i = 0; i < 30; i++) {
      await b.set(room, `m.${i + 2}`, 'x', { pad: 'p'.repeat(60), i });
      await b.entry(room, i + 2);
    }
    const a3 = await SyncClient.connect(small.url, resumeHello(a, a.last));
    t.after(() => a3.close());
    assert.equal(a3.welcome.resumed, false);
    await b.waitFor(presenceOf(room, a, 'leave'), 'the old session ends');
    await b.ping();
    assert.deepEqual(b.log.filter(presenceOf(room, a)).map((m) => `${m.event}:${m.connected}`),
      ['update:false', 'update:true', 'update:false', 'leave:undefined']);
  });
});

test('one session per (user, device)', async (t) => {
  const room = 'board:one';
  const b = await connect('nia');
  t.after(() => b.close());
  await b.join(room);

  await t.test('a new hello (no resume) replaces the session: the old connection is closed with 4001', async () => {
    const a = await connect('otto', 'laptop');
    await a.join(room);
    await a.expect({ type: 'lock', room, item: 'o1', ttl: 60000 }, 'granted');
    await b.waitFor(lockEvent(room, 'o1', 'held'), 'the lock');
    const a2 = await connect('otto', 'laptop');
    t.after(() => a2.close());
    assert.equal(a2.welcome.resumed, false);
    assert.notEqual(a2.welcome.session, a.welcome.session);
    assert.equal((await a.closed()).code, 4001);
    await b.waitFor(presenceOf(room, a, 'leave'), 'otto leaves');
    assert.deepEqual(b.log.filter(presenceOf(room, a)).map((m) => m.event), ['join', 'leave'], 'no update in between');
    assert.equal((await b.waitFor(lockEvent(room, 'o1', 'free'), 'the lock freed')).reason, 'session_end');
    // another device of the same user is a session of its own: untouched
    const other = await connect('otto', 'phone');
    t.after(() => other.close());
    await other.ping();
    assert.ok(a2.open);
  });

  await t.test('a resume while the old connection is still open: the old one is closed with 4001, no detach seen', async () => {
    const a = await connect('pia', 'laptop');
    await a.join(room);
    await a.ping();
    const a2 = await resume(a, a.received);
    t.after(() => a2.close());
    assert.equal(a2.welcome.resumed, true);
    assert.deepEqual(a2.welcome.rooms, [room]);
    assert.equal((await a.closed()).code, 4001);
    const back = await b.waitFor(presenceOf(room, a, 'update'), 'pia resumed');
    assert.equal(back.connected, true);
    await b.set(room, 'n.1', 'y', {});
    const e = await a2.waitFor(isEntry(room), 'the entry on the new connection');
    assert.equal(e.cid, 'n.1');
    await b.ping();
    assert.deepEqual(b.log.filter(presenceOf(room, a)).map((m) => `${m.event}:${m.connected}`), ['join:true', 'update:true']);
  });
});

test('resume with a token that may no longer read a joined room', async (t) => {
  const a = await connect('quinn', 'laptop');
  t.after(() => a.close());
  await a.join('board:revoked');
  await a.join('doc:kept');
  await a.ping();
  await a.drop();
  const a2 = await SyncClient.open(srv.url);
  t.after(() => a2.close());
  const w = await a2.request({ type: 'hello', ...resumeHello(a, a.received, { token: token('quinn', { 'doc:*': 'rw' }) }) });
  assert.equal(w.resumed, true);
  assert.deepEqual(w.rooms, ['doc:kept']);
  await a2.ping();
  assert.equal(a2.log[0], w, 'nothing before the welcome (3.3)');
  assert.deepEqual(a2.log.slice(1).map((m) => `${m.type}:${m.room ?? ''}:${m.reason ?? ''}`),
    ['left:board:revoked:forbidden', 'pong::'], 'one left, after the welcome');
});

test('a connection that says no hello within --handshake-timeout 500ms: error unauthorized, close 1008', async () => {
  const c = await SyncClient.open(srv.url);
  const { code } = await c.closed();
  assert.equal(code, 1008);
  assert.equal(c.log.length, 1);
  assert.equal(c.log[0].type, 'error');
  assert.equal(c.log[0].code, 'unauthorized');
});

test('a connection that says hello in time is not cut by the handshake timeout', async () => {
  const c = await connect('sam');
  await sleep(800);
  await c.ping();
  assert.ok(c.open);
  await c.close();
});

test('joined.presence shows a detached session connected:false, and true again after its resume', async (t) => {
  const room = 'board:entry';
  const a = await connect('tia', 'laptop');
  await a.join(room);
  await a.ping();
  await a.drop();
  const v = await connect('uma');
  t.after(() => v.close());
  let entry;
  await waitUntil(async () => {
    entry = (await v.join(room)).presence.find((p) => p.user === 'tia');
    return entry && entry.connected === false;
  }, 'tia shown disconnected');
  assert.deepEqual(entry, { user: 'tia', device: 'laptop', state: {}, connected: false });
  const a2 = await resume(a, a.received);
  t.after(() => a2.close());
  assert.equal(a2.welcome.resumed, true);
  const now = (await v.join(room)).presence.find((p) => p.user === 'tia');
  assert.equal(now.connected, true);
});

test('sessions live in memory: after a restart a resume gets a new session', async (t) => {
  const h = await restartableServer(t);
  const hello = { token: token('vera'), device: 'laptop' };
  const a = await SyncClient.connect(h.url, hello);
  await a.join('board:restart-session');
  await a.ping();
  await h.stop();
  assert.equal((await a.closed()).code, 1001);
  await h.start();
  const a2 = await SyncClient.connect(h.url, { ...hello, session: a.welcome.session, last: a.received });
  t.after(() => a2.close());
  assert.equal(a2.welcome.resumed, false);
  assert.notEqual(a2.welcome.session, a.welcome.session);
  await a2.expectError({ type: 'op', room: 'board:restart-session', cid: 'v.1', op: { kind: 'set', item: 'x', fields: {} } }, 'not_joined');
});
