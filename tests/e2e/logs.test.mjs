// logs.test.mjs -- what the server log says (stderr): one line per
// connection lifecycle event at info (connect, hello accepted or refused
// with the reason, join, leave, session end, close with its code), each with
// the remote address, user and device; a refused token names the check that
// failed; one line per backend API request; --log-format json gives one JSON
// object per line; ops and publishes are not logged one by one at info.
import assert from 'node:assert/strict';
import test from 'node:test';

import { waitUntil } from './lib/server.mjs';
import { SyncClient, api, craftToken, nowS, startSyncServer, token } from './lib/sync.mjs';

const KEY = 'logs-key-0123456789';

/** The log lines (after the start-up) matching re. */
const lines = (srv, re) => srv.stderr.split('\n').filter((l) => re.test(l));

test('a client session: connect, hello, join, leave, bye and close are each one line with remote, user, device', async (t) => {
  const srv = await startSyncServer(t, ['--api-key', KEY]);
  const c = await SyncClient.connect(srv.url, { token: token('alice'), device: 'laptop-1' });
  await c.join('board:logs');
  await c.expect({ type: 'leave', room: 'board:logs' }, 'left');
  await c.close();
  await waitUntil(() => lines(srv, /\bclose\b.*code=1000/).length > 0, 'close line');
  const remote = /remote=127\.0\.0\.1:\d+/;
  const connect = lines(srv, /info +connect remote=/);
  assert.equal(connect.length, 1, srv.stderr);
  assert.match(connect[0], /transport=ws/);
  const hello = lines(srv, /hello accepted/);
  assert.equal(hello.length, 1);
  assert.match(hello[0], remote);
  assert.match(hello[0], /user=alice device=laptop-1 session=new/);
  assert.match(lines(srv, /info +join /)[0], /remote=127\.0\.0\.1:\d+ user=alice device=laptop-1 room=board:logs/);
  assert.match(lines(srv, /info +leave /)[0], /user=alice device=laptop-1 room=board:logs/);
  assert.match(lines(srv, /session end/)[0], /user=alice device=laptop-1 code=1000 why=bye/);
  assert.match(lines(srv, /info +close /)[0], /user=alice device=laptop-1 code=1000/);
});

test('refusals carry the remote address, the claimed device and the failed check', async (t) => {
  const srv = await startSyncServer(t);
  const cases = [
    [craftToken({ sub: 'bob', exp: nowS() + 60, grants: {} }, { secret: 'another-secret-of-32-bytes-long!' }), /code=token_invalid reason="bad signature/],
    [craftToken({ sub: 'bob', exp: nowS() - 30, grants: {} }), /code=token_expired reason="claim exp \d+ is \d+ s in the past \(sub bob\)"/],
    [craftToken({ exp: nowS() + 60, grants: {} }), /code=token_invalid reason="claim sub is missing/],
    [craftToken({ sub: 'bob', grants: {} }), /reason="claim exp is missing \(sub bob\)"/],
    [craftToken({ sub: 'bob', exp: nowS() + 60, grants: { 'a b': 'rw' } }), /reason="claim grants: the room pattern 'a b' is invalid/],
    [craftToken({ sub: 'bob', exp: nowS() + 60, grants: {} }, { header: { alg: 'HS512', typ: 'JWT' } }), /reason="header alg HS512 is not accepted/],
    ['not-a-token', /reason="malformed token: 0 dots/],
  ];
  for (const [tok, re] of cases) {
    const c = await SyncClient.open(srv.url);
    const r = await c.request({ type: 'hello', v: 1, token: tok, device: 'phone-9' });
    assert.equal(r.type, 'error');
    await c.closed();
    await waitUntil(() => lines(srv, re).length > 0, `a refusal line matching ${re}\n${srv.stderr.slice(-1500)}`);
    const l = lines(srv, re)[0];
    assert.match(l, /info +hello refused remote=127\.0\.0\.1:\d+/);
    assert.match(l, /claimed_device=phone-9/);
  }
  // The refused connection's close is logged with its code.
  assert.ok(lines(srv, /info +close remote=.*code=1008/).length >= cases.length);
});

test('one line per backend API request, with its status (writes: after the commit)', async (t) => {
  const srv = await startSyncServer(t, ['--api-key', KEY]);
  await api(srv.url, 'GET', '/v1/rooms/board:none', { key: KEY });
  await api(srv.url, 'POST', '/v1/rooms/board:w/ops', { key: KEY, body: { op: { kind: 'set', item: 'a', fields: {} } } });
  await api(srv.url, 'GET', '/v1/rooms/board:w', { key: 'wrong-key-0123456789' });
  await waitUntil(() => lines(srv, /info +api /).length >= 3, 'api lines');
  assert.equal(lines(srv, /api GET \/v1\/rooms\/board:none from 127\.0\.0\.1:\d+ -> 404/).length, 1);
  assert.equal(lines(srv, /api POST \/v1\/rooms\/board:w\/ops from 127\.0\.0\.1:\d+ -> 200/).length, 1);
  assert.equal(lines(srv, /api GET \/v1\/rooms\/board:w from .* -> 401/).length, 1);
});

test('ops and publishes are not logged one by one at info', async (t) => {
  const srv = await startSyncServer(t, ['--rate', '100000', '--burst', '100000']);
  const a = await SyncClient.connect(srv.url, { token: token('carol'), device: 'd1' });
  const b = await SyncClient.connect(srv.url, { token: token('dave'), device: 'd2' });
  await a.join('board:hot');
  await b.join('board:hot');
  const before = srv.stderr.split('\n').length;
  for (let i = 0; i < 50; i++) await a.set('board:hot', `c${i}`, `i${i}`, { n: i });
  for (let i = 0; i < 20; i++) await a.expect({ type: 'publish', room: 'board:hot', data: { i } }, 'ack').catch(() => {});
  await b.entry('board:hot', 50);
  const after = srv.stderr.split('\n').length;
  assert.ok(after - before < 5, `${after - before} lines for 70 writes:\n${srv.stderr.split('\n').slice(before - 1).join('\n')}`);
  await a.close();
  await b.close();
});

test('--log-format json: every line is one JSON object with ts, level and msg; fields are members', async (t) => {
  const srv = await startSyncServer(t, ['--log-format', 'json']);
  const c = await SyncClient.connect(srv.url, { token: token('erin'), device: 'tab' });
  await c.close();
  await waitUntil(() => /"msg":"close"/.test(srv.stderr), 'the close line');
  const objs = srv.stderr.trim().split('\n').map((l) => JSON.parse(l));
  for (const o of objs) {
    assert.match(o.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(['error', 'warn', 'info', 'debug'].includes(o.level));
    assert.equal(typeof o.msg, 'string');
  }
  assert.match(objs.find((o) => /listening on/.test(o.msg)).msg, /pid \d+; store sqlite in .* \(schema \d+, durability normal\); auth token; backend API off; origins any/);
  const hello = objs.find((o) => o.msg === 'hello accepted');
  assert.equal(hello.user, 'erin');
  assert.equal(hello.device, 'tab');
  assert.match(hello.remote, /^127\.0\.0\.1:\d+$/);
  assert.equal(objs.find((o) => o.msg === 'close').code, '1000');
});

// The loop holds its info lines until it is about to wait, so a turn that
// serves many sessions writes their lines at once (SERVER.md, Logs). Nothing
// may be lost, cut, merged or reordered by that, and the lines of the last
// turns must be written when the server stops.
test('a crowd of sessions at once: every line whole and in order, and the last ones written at shutdown', async (t) => {
  const srv = await startSyncServer(t, ['--log-format', 'json']);
  const N = 120;
  const clients = await Promise.all(
    Array.from({ length: N }, (_, i) => SyncClient.connect(srv.url, { token: token(`crowd${i}`), device: `d${i}` })),
  );
  await Promise.all(clients.map((c, i) => c.join(`board:crowd${i % 4}`)));
  await waitUntil(() => (srv.stderr.match(/"msg":"join"/g) || []).length === N, 'a join line per session');
  await srv.stop();
  const objs = srv.stderr.trim().split('\n').map((l) => JSON.parse(l));
  // Per session (its remote port): connect, hello accepted, join, then the
  // close the shutdown made, once each and in that order.
  const seen = new Map();
  for (const o of objs) {
    if (!o.remote) continue;
    const evs = seen.get(o.remote) || [];
    evs.push(o.msg);
    seen.set(o.remote, evs);
  }
  // (Other remotes: the harness's readiness probe.)
  const sessions = [...seen].filter(([, evs]) => evs.includes('hello accepted'));
  assert.equal(sessions.length, N);
  for (const [remote, evs] of sessions) {
    assert.deepEqual(evs.slice(0, 3), ['connect', 'hello accepted', 'join'], `${remote}: ${evs}`);
    assert.equal(evs.filter((m) => m === 'close').length, 1, `${remote}: ${evs}`);
  }
  const users = objs.filter((o) => o.msg === 'hello accepted').map((o) => o.user).sort();
  assert.deepEqual(users, Array.from({ length: N }, (_, i) => `crowd${i}`).sort());
  // The shutdown's lines, held on the loop until the process ended, are there.
  const msgs = objs.map((o) => o.msg);
  const down = msgs.findIndex((m) => /shutting down/.test(m));
  assert.ok(down > 0, msgs.slice(-5).join('\n'));
  assert.equal(msgs.at(-1), 'stopped');
  for (const o of objs) assert.ok(Date.parse(o.ts) > 0);
  for (let i = 1; i < objs.length; i++) assert.ok(objs[i].ts >= objs[i - 1].ts, `${objs[i - 1].ts} then ${objs[i].ts}`);
});

test('--log-format with an unknown value is refused', async () => {
  const { runCli } = await import('./lib/server.mjs');
  const r = runCli(['serve', '--listen', '127.0.0.1:0', '--log-format', 'xml']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /invalid value 'xml' for --log-format \(text or json\)/);
});
