// sync-api-admin.test.mjs -- a strict backend API (docs/PROTOCOL.md 12):
// every route checks its method (405 with Allow and the JSON error object),
// oversized bodies get the JSON error object too, bad query numbers are 400,
// statuses carry their reason phrase; and the administrative endpoints: list
// rooms with paging, delete a room (members told `left` with reason
// "deleted"; a later join starts a new epoch), disconnect a user's sessions
// (close 4003).
import assert from 'node:assert/strict';
import test from 'node:test';

import { RawConn } from './lib/raw.mjs';
import { SyncClient, api, closeClients, startSyncServer, token } from './lib/sync.mjs';

const KEY = 'admin-key-0123456789';
let srv;
test.before(async () => {
  srv = await startSyncServer(null, ['--api-key', KEY, '--rate', '100000', '--burst', '100000']);
});
test.after(() => srv.stopChecked());

const call = (method, path, body, opts = {}) => api(srv.url, method, path, { key: KEY, body, ...opts });
const setOp = (room, item, fields = { v: 1 }) => call('POST', `/v1/rooms/${room}/ops`, { op: { kind: 'set', item, fields } });
let devN = 0;
const connect = (user = 'alice', device = `${user}-${++devN}`) => SyncClient.connect(srv.url, { token: token(user), device });

function isError(r, status, code) {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status} ${r.text.slice(0, 300)}`);
  assert.match(r.headers.get('content-type') || '', /^application\/json/);
  assert.equal(r.body.type, 'error');
  assert.equal(r.body.code, code);
  assert.equal(typeof r.body.message, 'string');
  return r.body;
}

test('every route checks its method: 405 with Allow and a JSON error', async () => {
  const cases = [
    ['PUT', '/v1/rooms/board:m', 'GET, DELETE'],
    ['POST', '/v1/rooms/board:m', 'GET, DELETE'],
    ['DELETE', '/v1/rooms/board:m/history', 'GET'],
    ['POST', '/v1/rooms/board:m/presence', 'GET'],
    ['PUT', '/v1/rooms/board:m/cursors', 'GET'],
    ['GET', '/v1/rooms/board:m/ops', 'POST'],
    ['DELETE', '/v1/rooms/board:m/publish', 'POST'],
    ['POST', '/v1/rooms', 'GET'],
    ['GET', '/v1/users/alice/disconnect', 'POST'],
    ['POST', '/metrics', 'GET'],
  ];
  for (const [method, path, allow] of cases) {
    const r = await call(method, path, method === 'GET' ? undefined : {});
    isError(r, 405, 'method_not_allowed');
    assert.equal(r.headers.get('allow'), allow, `${method} ${path}`);
  }
});

test('an unknown sub-resource is 404 whatever the method', async () => {
  isError(await call('GET', '/v1/rooms/board:m/nothing'), 404, 'not_found');
  isError(await call('POST', '/v1/rooms/board:m/nothing', {}), 404, 'not_found');
  isError(await call('GET', '/v1/users/alice'), 404, 'not_found');
});

test('a body over 1 MiB: 413 with the JSON error object', async () => {
  const big = JSON.stringify({ data: 'x'.repeat(1100 * 1024) });
  const r = await call('POST', '/v1/rooms/board:big/publish', big);
  isError(r, 413, 'too_large');
});

test('history: from, to and limit must be non-negative integers (400)', async () => {
  assert.equal((await setOp('board:hq', 'a')).status, 200);
  for (const q of ['from=abc', 'to=abc', 'limit=abc', 'from=-1', 'limit=1x', 'from=', 'to=1.5',
    'from=99999999999999999999999']) {
    isError(await call('GET', `/v1/rooms/board:hq/history?${q}`), 400, 'bad_request');
  }
  assert.equal((await call('GET', '/v1/rooms/board:hq/history?from=1&to=5&limit=10')).status, 200);
});

test('statuses carry their reason phrase (409 Conflict, 423 Locked)', async () => {
  const c = await RawConn.connect(srv.port);
  const body = JSON.stringify({ op: { kind: 'set', item: 'nope', fields: {}, base: 3 } });
  await c.write(`POST /v1/rooms/board:rp/ops HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n`
    + `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  const r = await c.readResponse();
  assert.equal(r.status, 409);
  assert.equal(r.reason, 'Conflict');
  c.destroy();
});

test('GET /v1/rooms lists rooms in name order, paged by after and limit', async () => {
  for (const room of ['list:c', 'list:a', 'list:b', 'list:d']) assert.equal((await setOp(room, 'x')).status, 200);
  const all = await call('GET', '/v1/rooms?after=list:&limit=1000');
  assert.equal(all.status, 200);
  const names = all.body.rooms.map((r) => r.room).filter((n) => n.startsWith('list:'));
  assert.deepEqual(names, ['list:a', 'list:b', 'list:c', 'list:d']);
  const a = all.body.rooms.find((r) => r.room === 'list:a');
  assert.equal(a.seq, 1);
  assert.equal(typeof a.epoch, 'string');
  assert.equal(a.first, 1);
  assert.equal(typeof a.created, 'number');

  const p1 = await call('GET', '/v1/rooms?after=list:&limit=2');
  assert.deepEqual(p1.body.rooms.map((r) => r.room), ['list:a', 'list:b']);
  assert.equal(p1.body.more, true);
  const p2 = await call('GET', `/v1/rooms?after=${encodeURIComponent('list:b')}&limit=2`);
  assert.deepEqual(p2.body.rooms.map((r) => r.room).slice(0, 2), ['list:c', 'list:d']);
  for (const q of ['limit=abc', 'limit=-1', 'after=bad%20name']) isError(await call('GET', `/v1/rooms?${q}`), 400, 'bad_request');
  // The key is required.
  assert.equal((await api(srv.url, 'GET', '/v1/rooms')).status, 401);
});

test('DELETE /v1/rooms/{room}: data gone, members told left/deleted, a later join starts a new epoch', async () => {
  const room = 'board:del';
  const a = await connect('alice');
  const b = await connect('bob');
  const j1 = await a.join(room);
  await b.join(room);
  await a.set(room, 'c1', 'card', { t: 1 });
  await a.set(room, 'c2', 'card', { t: 2 });
  await b.entry(room, 2);
  const before = await call('GET', `/v1/rooms/${room}`);
  assert.equal(before.status, 200);
  assert.equal(before.body.seq, 2);

  const d = await call('DELETE', `/v1/rooms/${room}`);
  assert.equal(d.status, 200, d.text);
  assert.equal(d.body.room, room);
  assert.equal(d.body.deleted, true);
  for (const c of [a, b]) {
    const left = await c.waitFor((m) => m.type === 'left' && m.room === room, 'left');
    assert.equal(left.reason, 'deleted');
  }
  isError(await call('GET', `/v1/rooms/${room}`), 404, 'not_found');
  isError(await call('GET', `/v1/rooms/${room}/history`), 404, 'not_found');
  isError(await call('DELETE', `/v1/rooms/${room}`), 404, 'not_found');
  // Writes to the room are refused for a member no more: a's op says not_member.
  const r = await a.op(room, 'c3', { kind: 'set', item: 'card', fields: {} });
  assert.equal(r.type, 'error');
  // A join creates it again: a new epoch, nothing in it; the old cid is new again.
  const j2 = await a.join(room);
  assert.notEqual(j2.epoch, j1.epoch);
  assert.equal(j2.seq, 0);
  const ack = await a.set(room, 'c1', 'card', { t: 9 });
  assert.equal(ack.seq, 1);
  assert.equal(ack.duplicate, undefined);
  // Cursors of the old room are gone.
  const cur = await call('GET', `/v1/rooms/${room}/cursors`);
  assert.equal(cur.status, 200);
  await closeClients(a, b);
});

test('DELETE of a room loaded with pending nothing and no members; and of a room never seen', async () => {
  assert.equal((await setOp('board:del2', 'x')).status, 200);
  assert.equal((await call('DELETE', '/v1/rooms/board:del2')).status, 200);
  assert.equal((await call('GET', '/v1/rooms?after=board:del1&limit=1')).body.rooms[0]?.room !== 'board:del2', true);
  isError(await call('DELETE', '/v1/rooms/board:never'), 404, 'not_found');
  // The name may be written again by the backend: a new room.
  const w = await setOp('board:del2', 'y');
  assert.equal(w.status, 200);
  assert.equal(w.body.seq, 1);
});

test('POST /v1/users/{user}/disconnect ends that user\'s sessions with 4003', async () => {
  const a1 = await connect('carol');
  const a2 = await connect('carol');
  const b = await connect('dave');
  await a1.join('board:dc');
  await b.join('board:dc');
  const r = await call('POST', '/v1/users/carol/disconnect');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body, { user: 'carol', sessions: 2 });
  for (const c of [a1, a2]) {
    const info = await c.closed();
    assert.equal(info.code, 4003);
  }
  // dave sees carol leave the room, and stays connected.
  await b.waitFor((m) => m.type === 'presence' && m.event === 'leave', 'presence leave');
  await b.ping();
  // The ended session cannot be resumed.
  const again = await SyncClient.connect(srv.url, { token: token('carol'), device: a1.welcome.device, session: a1.welcome.session, last: 0 });
  assert.equal(again.welcome.resumed, false);
  // Nobody connected: 0 sessions; a bad user name is 400.
  assert.deepEqual((await call('POST', '/v1/users/nobody/disconnect')).body, { user: 'nobody', sessions: 0 });
  isError(await call('POST', '/v1/users/bad%20name/disconnect'), 400, 'bad_request');
  await closeClients(b, again);
});
