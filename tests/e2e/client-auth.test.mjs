// client-auth.test.mjs -- what the JavaScript client (clients/js/wsync.js)
// does when the server refuses its hello for good (docs/PROTOCOL.md 3.1:
// token_invalid, token_expired, unauthorized, close 1008): `ready`, every
// pending write and every later write reject with an AuthError carrying the
// code, an 'authfailed' event is emitted, and no reconnect loop runs; a
// token function is asked again (with backoff) and the client gives up when
// it throws or hands back the refused token. Also: a client made without
// `device` takes the token's `device` claim. Every case runs against a real
// server; connection attempts are counted by the hellos the client sent.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import * as wsync from '../../clients/js/wsync.js';
import { Client, SERVER_ARGS, rejection, spyFetch, spyWebSocket } from './lib/client-util.mjs';
import { sleep, startServer, withTimeout } from './lib/server.mjs';
import { SECRET, craftToken, mintToken, nowS, startSyncServer, token } from './lib/sync.mjs';

/** How long a refusal may take to reach `ready`: far below the hang it used to be. */
const BOUND_MS = 3000;
/** How long to watch for a reconnect loop after the refusal (backoff 20-200 ms: ~10 attempts if it looped). */
const WATCH_MS = 1000;

/**
 * A client with a short backoff that records what it sends (c.sent), its
 * 'error' and 'authfailed' events; `device` only when given (undefined: the
 * client picks it).
 */
function mk(t, url, opts = {}) {
  const sent = [];
  const c = new Client(url, {
    WebSocket: spyWebSocket(sent),
    fetch: spyFetch(sent),
    backoff: { base: 20, max: 200 },
    ...opts,
  });
  c.sent = sent;
  c.errors = [];
  c.authFailures = [];
  c.on('error', (e) => c.errors.push(e));
  c.on('authfailed', (e) => c.authFailures.push(e));
  t.after(() => c.close());
  return c;
}

const hellos = (c) => c.sent.filter((m) => m.type === 'hello').length;

/** Asserts that p rejects with an AuthError of code within BOUND_MS. */
async function rejectsWith(p, code, what) {
  const err = await withTimeout(rejection(p, what), BOUND_MS, `${what} to reject with ${code}`);
  assert.ok(wsync.AuthError && err instanceof wsync.AuthError, `${what}: an AuthError (got ${err && err.name}: ${err && err.message})`);
  assert.ok(err instanceof wsync.WsyncError, `${what}: an AuthError is a WsyncError`);
  assert.equal(err.code, code, `${what}: code`);
  return err;
}

/**
 * The static-token case: ready, a write made before the refusal and one made
 * after it reject with code; one hello only, an 'authfailed' event, offline.
 */
async function refusedForGood(t, url, opts, code) {
  const c = mk(t, url, opts);
  const room = c.room('board:auth');
  const early = room.set('card', { n: 1 });
  await rejectsWith(room.ready, code, 'ready');
  await rejectsWith(early, code, 'a write made before the refusal');
  assert.equal(room.pendingCount, 0, 'the refused write is no longer pending');
  assert.equal(room.get('card'), undefined, 'and rolled back from the view');
  await rejectsWith(room.set('card', { n: 2 }), code, 'a write made after the refusal');
  await rejectsWith(c.room('board:later').ready, code, 'ready of a room opened after the refusal');
  assert.equal(c.status, 'offline');
  assert.equal(c.authFailures.length, 1, "one 'authfailed' event");
  assert.equal(c.authFailures[0].code, code);
  assert.ok(c.authError instanceof wsync.AuthError && c.authError.code === code, 'client.authError');
  await sleep(WATCH_MS);
  assert.equal(hellos(c), 1, 'one connection attempt: no reconnect loop');
  return c;
}

describe('refused static tokens', () => {
  let srv;
  test('server', async (t) => {
    srv = await startSyncServer(null, SERVER_ARGS);
  });

  test('a token bound to another device: token_invalid', async (t) => {
    const tok = mintToken({ user: 'alice', device: 'laptop', grants: ['*=rw'] });
    await refusedForGood(t, srv.url, { token: tok, device: 'desktop', transports: ['ws'] }, 'token_invalid');
  });

  test('a token signed with another secret: token_invalid', async (t) => {
    const tok = craftToken({ sub: 'alice', exp: nowS() + 3600, grants: { '*': 'rw' } }, { secret: `${SECRET}-not-it` });
    await refusedForGood(t, srv.url, { token: tok, device: 'd1', transports: ['ws'] }, 'token_invalid');
  });

  test('a malformed token: token_invalid', async (t) => {
    await refusedForGood(t, srv.url, { token: 'not-a-jwt', device: 'd2', transports: ['ws'] }, 'token_invalid');
  });

  test('an expired token: token_expired', async (t) => {
    const tok = token('alice', { '*': 'rw' }, { exp: nowS() - 60 });
    await refusedForGood(t, srv.url, { token: tok, device: 'd3', transports: ['ws'] }, 'token_expired');
  });

  test('an expired token over long-polling (the hello is a POST): token_expired', async (t) => {
    const tok = token('alice', { '*': 'rw' }, { exp: nowS() - 60 });
    await refusedForGood(t, srv.url, { token: tok, device: 'd4', transports: ['poll'] }, 'token_expired');
  });

  test('no token at all: unauthorized', async (t) => {
    await refusedForGood(t, srv.url, { device: 'd5', transports: ['ws'] }, 'unauthorized');
  });

  test('a shared text: its unsent edit is rolled back, later edits throw the AuthError', async (t) => {
    const tok = token('alice', { '*': 'rw' }, { exp: nowS() - 60 });
    const c = mk(t, srv.url, { token: tok, device: 'd6', transports: ['ws'] });
    const room = c.room('doc:auth');
    const text = room.text('page', 'body');
    const changes = [];
    text.on('change', (ch) => changes.push(ch));
    text.insert(0, 'hello');
    assert.equal(text.value, 'hello');
    await rejectsWith(room.ready, 'token_expired', 'ready');
    assert.equal(text.value, '', 'the edit was rolled back');
    assert.equal(changes.at(-1).rollback, true);
    assert.equal(text.state, 'synchronized', 'nothing left in flight');
    assert.throws(() => text.insert(0, 'x'), (err) => err instanceof wsync.AuthError && err.code === 'token_expired');
    assert.equal(room.pendingCount, 0);
  });

  test('a client made without `device` takes the token\'s device claim', async (t) => {
    const tok = mintToken({ user: 'alice', device: 'laptop', grants: ['*=rw'] });
    const c = mk(t, srv.url, { token: tok, transports: ['ws'] });
    assert.equal(c.device, 'laptop', 'the device is the claim, before any connection');
    const room = c.room('board:claim');
    await withTimeout(room.ready, BOUND_MS, 'ready');
    const ack = await room.set('card', { n: 1 });
    assert.ok(ack.seq >= 1);
    assert.equal(c.sent.find((m) => m.type === 'hello').device, 'laptop');
    assert.deepEqual(c.errors, []);
  });

  test('stop', async () => {
    await srv.stopChecked();
  });
});

describe('token functions', () => {
  let srv;
  test('server', async (t) => {
    srv = await startSyncServer(null, SERVER_ARGS);
  });

  test('an expired token, then a good one: retried once, then online', async (t) => {
    let calls = 0;
    const c = mk(t, srv.url, {
      device: 'f1',
      transports: ['ws'],
      token: () => (++calls === 1 ? token('alice', { '*': 'rw' }, { exp: nowS() - 60 }) : token('alice')),
    });
    const room = c.room('board:fn');
    const w = room.set('card', { n: 1 });
    await withTimeout(room.ready, BOUND_MS, 'ready after the second token');
    const ack = await withTimeout(w, BOUND_MS, 'the write');
    assert.ok(ack.seq >= 1);
    assert.equal(calls, 2, 'the function was asked again after token_expired');
    assert.equal(hellos(c), 2);
    assert.deepEqual(c.errors.map((e) => e.code), ['token_expired']);
    assert.deepEqual(c.authFailures, []);
    assert.equal(c.authError, null);
  });

  test('a function whose tokens are bound to a device, no `device` option: the claim is the device', async (t) => {
    const tok = mintToken({ user: 'alice', device: 'phone-7', grants: ['*=rw'] });
    const c = mk(t, srv.url, { transports: ['ws'], token: async () => tok });
    const room = c.room('board:fn-claim');
    await withTimeout(room.ready, BOUND_MS, 'ready');
    assert.equal(c.device, 'phone-7');
    assert.deepEqual(c.sent.filter((m) => m.type === 'hello').map((m) => m.device), ['phone-7']);
    assert.deepEqual(c.errors, []);
  });

  test('a function that throws after a refusal: the client gives up with the refusal', async (t) => {
    let calls = 0;
    const c = mk(t, srv.url, {
      device: 'f2',
      transports: ['ws'],
      token: async () => {
        if (++calls === 1) return token('alice', { '*': 'rw' }, { exp: nowS() - 60 });
        throw new Error('the login expired');
      },
    });
    const room = c.room('board:fn');
    const w = room.set('card', { n: 1 });
    const err = await rejectsWith(room.ready, 'token_expired', 'ready');
    assert.match(err.message, /the login expired/, 'the function\'s error is in the message');
    await rejectsWith(w, 'token_expired', 'the write');
    assert.equal(c.authFailures.length, 1);
    await sleep(WATCH_MS);
    assert.equal(calls, 2, 'not called again after it threw');
    assert.equal(hellos(c), 1);
  });

  test('a function that returns the refused token again: the client gives up', async (t) => {
    let calls = 0;
    const tok = mintToken({ user: 'alice', device: 'laptop', grants: ['*=rw'] });
    const c = mk(t, srv.url, {
      device: 'desktop',
      transports: ['ws'],
      token: () => {
        calls++;
        return tok;
      },
    });
    const room = c.room('board:fn');
    await rejectsWith(room.ready, 'token_invalid', 'ready');
    await sleep(WATCH_MS);
    assert.equal(calls, 2, 'asked once more, then given up');
    assert.equal(hellos(c), 1, 'the same token is not sent again');
  });

  test('stop', async () => {
    await srv.stopChecked();
  });
});

test('a server without any auth key refuses every token: unauthorized', async (t) => {
  const srv = await startServer(t, [...SERVER_ARGS], { echo: false });
  await refusedForGood(t, srv.url, { token: token('alice'), device: 'u1', transports: ['ws'] }, 'unauthorized');
});
