// client-hooks.test.mjs -- what the JavaScript client (clients/js/wsync.js)
// makes of the server's hooks that decide (docs/HOOKS.md): a hello the
// authorization hook denies stops the client with an AuthError 'forbidden'
// (the hook's reason as message); one it could not decide (hook_unavailable,
// close 1013) is an 'error' event and is tried again; a denied join fails
// the room; an undecided join is retried; an op the op hook rejects is
// rolled back with an 'error' event carrying code 'rejected' and the hook's
// reason; an undecided op is re-sent with the same cid until it is decided.
import assert from 'node:assert/strict';
import test from 'node:test';

import * as wsync from '../../clients/js/wsync.js';
import { docOf, makeClient, online, recordRoom, rejection, SERVER_ARGS, serverDoc } from './lib/client-util.mjs';
import { startHookPeer } from './lib/hook-peer.mjs';
import { waitUntil, withTimeout, WAIT_MS } from './lib/server.mjs';
import { startSyncServer } from './lib/sync.mjs';

function serverFor(t, args) {
  return startSyncServer(t, [...SERVER_ARGS, '--auth-hook-timeout', '300ms', '--op-hook-timeout', '300ms', ...args]);
}

test('a hello the hook denies stops the client with AuthError forbidden and the reason', async (t) => {
  const peer = await startHookPeer(t, () => ({ body: { allow: false, reason: 'account suspended' } }));
  const srv = await serverFor(t, ['--auth-hook', peer.url]);
  const c = makeClient(t, srv.url, { user: 'mallory' });
  const failed = [];
  c.on('authfailed', (e) => failed.push(e));
  const room = c.room('board:1');
  const err = await withTimeout(rejection(room.ready, 'ready'), WAIT_MS, 'ready to reject');
  assert.ok(err instanceof wsync.AuthError, `an AuthError, got ${err && err.name}`);
  assert.equal(err.code, 'forbidden');
  assert.equal(err.message, 'account suspended');
  assert.equal(failed.length, 1);
  assert.equal(c.status, 'offline');
  assert.equal(peer.calls.length, 1, 'not asked again: the client stopped');
});

test('a hello the hook cannot decide is reported and tried again until it is decided', async (t) => {
  let down = 2;
  const peer = await startHookPeer(t, () => (down-- > 0 ? { status: 503 } : { body: { allow: true } }));
  const srv = await serverFor(t, ['--auth-hook', peer.url]);
  const c = makeClient(t, srv.url);
  const room = c.room('board:1');
  await withTimeout(room.ready, WAIT_MS, 'ready after the hook came back');
  await online(c);
  const codes = c.errors.map((e) => e.code);
  assert.deepEqual(codes.filter((x) => x === 'hook_unavailable').length, 2, `errors: ${JSON.stringify(c.errors)}`);
  assert.equal(peer.calls.filter((k) => k.body.action === 'hello').length, 3);
  assert.equal(c.authError, null);
});

test('a denied join fails the room; an undecided join is retried', async (t) => {
  let downJoins = 1;
  const peer = await startHookPeer(t, (b) => {
    if (b.action === 'hello') return { body: { allow: true } };
    if (b.room === 'secret:1') return { body: { allow: false, reason: 'not a member' } };
    if (downJoins-- > 0) return { hang: true };
    return { body: { allow: true } };
  });
  const srv = await serverFor(t, ['--auth-hook', peer.url]);
  const c = makeClient(t, srv.url, { token: (await import('./lib/sync.mjs')).token('alice', { 'board:*': 'rw' }) });
  const denied = recordRoom(c.room('secret:1'));
  const err = await withTimeout(rejection(denied.ready, 'ready'), WAIT_MS, 'ready of the denied room');
  assert.equal(err.code, 'forbidden');
  assert.equal(err.message, 'not a member');
  assert.ok(denied.events.some((e) => e.event === 'error' && e.code === 'forbidden'));
  const later = recordRoom(c.room('team:1'));
  await withTimeout(later.ready, WAIT_MS, 'ready after a join the hook could not decide');
  assert.ok(later.events.some((e) => e.event === 'error' && e.code === 'hook_unavailable'), JSON.stringify(later.events));
  assert.equal(peer.calls.filter((k) => k.body.room === 'team:1').length, 2);
  await later.set('x', { ok: 1 });
});

test('an op the hook rejects is rolled back with rejected and the reason; an undecided op is re-sent', async (t) => {
  let downOps = 2;
  const peer = await startHookPeer(t, (b) => {
    if (b.op.fields && b.op.fields.bad) return { body: { result: 'reject', code: 'no_bad', message: 'bad is not allowed' } };
    if (b.op.item === 'retry' && downOps-- > 0) return { status: 500 };
    return { body: { result: 'accept' } };
  });
  const srv = await serverFor(t, ['--op-hook', `board:*=${peer.url}`]);
  const c = makeClient(t, srv.url);
  const room = recordRoom(c.room('board:ops'));
  await room.ready;
  const bad = room.set('card', { bad: true });
  const e = await withTimeout(rejection(bad, 'the rejected write'), WAIT_MS, 'rejection');
  assert.equal(e.code, 'rejected');
  const ev = room.events.find((x) => x.event === 'error' && x.code === 'rejected');
  assert.ok(ev, JSON.stringify(room.events));
  assert.equal(ev.reason, 'no_bad');
  assert.equal(ev.message, 'bad is not allowed');
  assert.equal(room.get('card'), undefined, 'rolled back');
  await room.set('retry', { n: 1 });
  await waitUntil(() => room.pendingCount === 0, 'nothing pending');
  const cids = peer.calls.filter((k) => k.body.op.item === 'retry').map((k) => k.body.cid);
  assert.equal(cids.length, 3, 'asked three times');
  assert.equal(new Set(cids).size, 1, 'with the same cid');
  assert.deepEqual(await serverDoc(srv.url, 'board:ops'), { retry: { n: 1 } });
  assert.deepEqual(docOf(room), { retry: { n: 1 } });
});
