// sync-presence-list.test.mjs -- the presence list of `joined`
// (PROTOCOL.md 7) while the server keeps its text between joins: joins to
// a room filling up only add the new members' entries in front, and any
// other change (a state, a cursor, a connection lost, a member gone) makes
// it write the list again. Each step below is followed by a join whose
// list must be exactly the model's, entries and order (newest member
// first), with windows long enough (--presence-interval 1s) that the text
// is kept across the steps, and again with --presence-interval 0 (no
// window: nothing kept).
import assert from 'node:assert/strict';
import test from 'node:test';

import { SyncClient, closeClients, startSyncServer, token } from './lib/sync.mjs';

let kept;
let plain;
test.before(async () => {
  kept = await startSyncServer(null, ['--rate', '10000', '--burst', '10000', '--presence-interval', '1s']);
  plain = await startSyncServer(null, ['--rate', '10000', '--burst', '10000', '--presence-interval', '0']);
});
test.after(() => Promise.all([kept.stopChecked(), plain.stopChecked()]));

let dev = 0;

async function scenario(t, server, name) {
  const clients = [];
  t.after(() => closeClients(...clients.map((c) => c.c)));
  const model = []; // newest first: {user, device, state, connected, cursor?}
  const entry = (x) => {
    const e = { user: x.user, device: x.device, state: x.state, connected: x.connected };
    if (x.cursor) e.cursor = x.cursor;
    return e;
  };
  const join = async (user, state) => {
    const c = await SyncClient.connect(server.url, { token: token(user), device: `pl-${++dev}` });
    const j = await c.join(name, state ? { presence: state } : {});
    const x = { c, user, device: c.welcome.device, state: state ?? {}, connected: true };
    clients.push(x);
    model.unshift(x);
    assert.deepEqual(j.presence, model.map(entry), `the list of ${user}'s join`);
    return x;
  };
  for (let i = 0; i < 6; i++) await join(`m${i}`, i % 2 ? { i } : undefined);
  // A state changes: the text is written again.
  const m2 = model.find((x) => x.user === 'm2');
  m2.c.send({ type: 'presence', room: name, state: { now: 'busy' } });
  await m2.c.ping();
  m2.state = { now: 'busy' };
  await join('after-state');
  // A cursor moves (a write first, so the room has a seq to point at).
  const m1 = model.find((x) => x.user === 'm1');
  const ack = await m1.c.set(name, `c${dev}`, 'i1', { a: 1 });
  assert.ok(ack.seq >= 1, JSON.stringify(ack));
  m1.c.send({ type: 'cursor', room: name, seq: ack.seq });
  await m1.c.ping();
  m1.cursor = ack.seq;
  await join('after-cursor');
  // A member leaves, from the middle of the list.
  const m3 = model.find((x) => x.user === 'm3');
  assert.equal((await m3.c.request({ type: 'leave', room: name })).type, 'left');
  model.splice(model.indexOf(m3), 1);
  await join('after-leave');
  // The newest member leaves (the one the kept text starts with).
  const newest = model[0];
  assert.equal((await newest.c.request({ type: 'leave', room: name })).type, 'left');
  model.shift();
  await join('after-newest-left');
  await join('and-one-more');
  // A connection is lost: the session stays, shown disconnected.
  const m4 = model.find((x) => x.user === 'm4');
  m4.c.ws.terminate();
  m4.connected = false;
  const watcher = model.find((x) => x.user === 'm0');
  await watcher.c.waitFor((m) => m.type === 'presence' && m.user === 'm4' && m.connected === false, 'm4 shown disconnected');
  await join('after-disconnect');
}

test('joined lists the room exactly while its text is kept between joins', async (t) => {
  await scenario(t, kept, 'pl:kept');
});

test('joined lists the room exactly with no presence window', async (t) => {
  await scenario(t, plain, 'pl:plain');
});
