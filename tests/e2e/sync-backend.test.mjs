// sync-backend.test.mjs -- the backend HTTP API and /metrics (docs/PROTOCOL.md
// 12, 5.4, 6.4): the bearer key, ops and publishes written by the backend
// (answered after the commit, broadcast from {backend:true}, deduplicated by
// cid, subject to conflicts and locks unless forced), the error statuses,
// snapshot, history paging, presence, the metrics and their movement,
// pipelined requests, and catch-up once the log has been trimmed.
import assert from 'node:assert/strict';
import test from 'node:test';

import { RawConn } from './lib/raw.mjs';
import { scale } from './lib/server.mjs';
import { SyncClient, api, closeClients, fetchMetrics, snapshotOf, startSyncServer, token } from './lib/sync.mjs';

const KEY = 'backend-key-0123';
let srv;
test.before(async () => {
  srv = await startSyncServer(null, ['--api-key', KEY, '--rate', '100000', '--burst', '100000']);
});
test.after(() => srv.stopChecked());

const call = (method, path, body, opts = {}) => api(srv.url, method, path, { key: KEY, body, ...opts });
const post = (room, what, body) => call('POST', `/v1/rooms/${room}/${what}`, body);
let devN = 0;
const connect = (user = 'alice', device = `${user}-${++devN}`) => SyncClient.connect(srv.url, { token: token(user), device });
const isEntry = (room) => (m) => (m.type === 'op' || m.type === 'message') && m.room === room;
/** The error body of a backend error: {type: error, code, message, ...}. */
function isError(r, status, code) {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status} ${r.text.slice(0, 300)}`);
  assert.equal(r.body.type, 'error');
  assert.equal(r.body.code, code);
  assert.equal(typeof r.body.message, 'string');
  assert.match(r.headers.get('content-type') || '', /^application\/json/);
  return r.body;
}

test('the API key', async (t) => {
  const endpoints = [
    ['GET', '/v1/rooms/board:k'],
    ['GET', '/v1/rooms/board:k/history'],
    ['GET', '/v1/rooms/board:k/presence'],
    ['GET', '/v1/rooms/board:k/cursors'],
    ['POST', '/v1/rooms/board:k/ops', { op: { kind: 'set', item: 'x', fields: {} } }],
    ['POST', '/v1/rooms/board:k/publish', { data: 1 }],
    ['GET', '/metrics'],
  ];
  const wrong = [
    ['no Authorization', { key: undefined }],
    ['a wrong key', { key: 'backend-key-0124' }],
    ['a prefix of the key', { key: KEY.slice(0, -1) }],
    ['the key and more', { key: `${KEY}x` }],
    ['another scheme', { key: undefined, headers: { Authorization: `Basic ${KEY}` } }],
    ['the bare key', { key: undefined, headers: { Authorization: KEY } }],
  ];
  for (const [name, opts] of wrong) {
    await t.test(`${name} -> 401 with WWW-Authenticate: Bearer, on every endpoint`, async () => {
      for (const [method, path, body] of endpoints) {
        const r = await api(srv.url, method, path, { body, ...opts });
        assert.equal(r.status, 401, `${method} ${path}`);
        assert.match(r.headers.get('www-authenticate') || '', /^Bearer/);
        assert.equal(r.body.code, 'unauthorized');
      }
    });
  }
  await t.test('nothing was written by the refused requests', async () => {
    isError(await call('GET', '/v1/rooms/board:k'), 404, 'not_found');
  });
  await t.test('without --api-key every endpoint is 404', async (t2) => {
    const plain = await startSyncServer(t2, []);
    for (const [method, path, body] of endpoints) {
      for (const key of [undefined, KEY]) {
        const r = await api(plain.url, method, path, { body, key });
        assert.equal(r.status, 404, `${method} ${path} with key ${key}`);
      }
    }
  });
});

test('POST /v1/rooms/R/ops', async (t) => {
  const room = 'board:api';
  const c = await connect();
  t.after(() => c.close());
  const j = await c.join(room);

  await t.test('200 {room, epoch, seq} once committed; members get the entry from {backend:true}', async () => {
    const r = await post(room, 'ops', { cid: 'imp-1', op: { kind: 'set', item: 'card-1', fields: { title: 'Imported', gone: null }, base: 0 } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, { room, epoch: j.epoch, seq: 1 });
    const snap = await call('GET', `/v1/rooms/${room}`);
    assert.deepEqual(snap.body.items['card-1'], { version: 1, fields: { title: 'Imported' } }, 'stored when answered');
    const e = await c.entry(room, 1);
    const { ts, ...rest } = e;
    assert.ok(Number.isInteger(ts));
    assert.deepEqual(rest, {
      type: 'op', room, seq: 1, from: { backend: true }, cid: 'imp-1',
      op: { kind: 'set', item: 'card-1', fields: { title: 'Imported', gone: null } },
    });
  });

  await t.test('without cid: the entry has no cid', async () => {
    const r = await post(room, 'ops', { op: { kind: 'set', item: 'card-2', fields: { n: 2 } } });
    assert.equal(r.body.seq, 2);
    const e = await c.entry(room, 2);
    assert.equal('cid' in e, false);
    assert.deepEqual(e.from, { backend: true });
  });

  await t.test('the same cid again: duplicate:true with the original seq, not applied or broadcast again', async () => {
    const r = await post(room, 'ops', { cid: 'imp-1', op: { kind: 'set', item: 'card-1', fields: { title: 'Other' } } });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { room, epoch: j.epoch, seq: 1, duplicate: true });
    await c.ping();
    assert.deepEqual(c.drain(isEntry(room)), []);
    assert.equal((await call('GET', `/v1/rooms/${room}`)).body.items['card-1'].fields.title, 'Imported');
  });

  await t.test('the backend\'s cids are its own: a client may use the same string', async () => {
    const ack = await c.set(room, 'imp-1', 'card-3', {});
    assert.equal(ack.seq, 3);
    assert.equal(ack.duplicate, undefined);
    await c.entry(room, 3);
  });

  await t.test('a batch takes one seq', async () => {
    const r = await post(room, 'ops', { op: { kind: 'batch', ops: [
      { kind: 'set', item: 'card-4', fields: { a: 1 } }, { kind: 'del', item: 'card-3' },
    ] } });
    assert.equal(r.body.seq, 4);
    assert.equal((await c.entry(room, 4)).op.kind, 'batch');
  });

  await t.test('conflict -> 409 with the item and current', async () => {
    const b = isError(await post(room, 'ops', { op: { kind: 'set', item: 'card-1', fields: {}, base: 99 } }), 409, 'conflict');
    assert.equal(b.item, 'card-1');
    assert.deepEqual(b.current, { version: 1, fields: { title: 'Imported' } });
    const b0 = isError(await post(room, 'ops', { op: { kind: 'set', item: 'nope', fields: {}, base: 3 } }), 409, 'conflict');
    assert.equal(b0.current, null);
  });

  await t.test('a locked item -> 423 with the lock; force:true writes anyway', async () => {
    const g = await c.expect({ type: 'lock', room, item: 'card-1', ttl: 60000 }, 'granted');
    const b = isError(await post(room, 'ops', { op: { kind: 'set', item: 'card-1', fields: { x: 1 } } }), 423, 'locked');
    assert.equal(b.item, 'card-1');
    assert.equal(b.lock.fence, g.fence);
    assert.equal(b.lock.user, 'alice');
    isError(await post(room, 'ops', { op: { kind: 'del', item: 'card-1' }, force: false }), 423, 'locked');
    const r = await post(room, 'ops', { op: { kind: 'set', item: 'card-1', fields: { forced: true } }, force: true });
    assert.equal(r.status, 200);
    assert.equal(r.body.seq, 5);
    assert.deepEqual((await c.entry(room, 5)).op.fields, { forced: true });
    // a fence is about a session's lock: the backend holds none
    isError(await post(room, 'ops', { op: { kind: 'set', item: 'card-1', fields: {}, fence: g.fence }, force: true }), 409, 'lock_lost');
    await c.expect({ type: 'unlock', room, item: 'card-1' }, 'unlocked');
  });

  await t.test('del of a missing item -> 404 not_found', async () => {
    isError(await post(room, 'ops', { op: { kind: 'del', item: 'never' } }), 404, 'not_found');
  });

  const badBodies = [
    ['not JSON', 'op: set', 'bad_json'],
    ['an array', '[{"op":{}}]', 'bad_json'],
    ['empty', '', 'bad_json'],
    ['duplicate members', '{"op":{"kind":"set","item":"x","fields":{}},"op":1}', 'bad_json'],
    ['no op', {}, 'bad_request'],
    ['op not an object', { op: 'set' }, 'bad_request'],
    ['an unknown kind', { op: { kind: 'rename', item: 'x' } }, 'bad_request'],
    ['fields missing', { op: { kind: 'set', item: 'x' } }, 'bad_request'],
    ['a bad cid', { cid: 'a b', op: { kind: 'set', item: 'x', fields: {} } }, 'bad_request'],
    ['a nested batch', { op: { kind: 'batch', ops: [{ kind: 'batch', ops: [] }] } }, 'bad_request'],
  ];
  for (const [name, body, code] of badBodies) {
    await t.test(`${name} -> 400 ${code}`, async () => {
      isError(await post(room, 'ops', body), 400, code);
    });
  }
  await t.test('an invalid item id -> 400 invalid_field', async () => {
    isError(await post(room, 'ops', { op: { kind: 'set', item: 'no spaces', fields: {} } }), 400, 'invalid_field');
  });
  await t.test('a field over max_field_size -> 413 too_large', async () => {
    isError(await post(room, 'ops', { op: { kind: 'set', item: 'x', fields: { big: 'x'.repeat(65537) } } }), 413, 'too_large');
  });
  await t.test('a body over 1 MiB -> 413', async () => {
    const r = await post(room, 'ops', { op: { kind: 'set', item: 'x', fields: { a: 'x'.repeat(60000) } }, pad: 'p'.repeat(1100000) });
    assert.equal(r.status, 413);
  });
  await t.test('an invalid room name -> 400 room_invalid', async () => {
    for (const name of ['bad!room', 'bad%20room', 'r'.repeat(129), 'caf%C3%A9']) {
      isError(await post(name, 'ops', { op: { kind: 'set', item: 'x', fields: {} } }), 400, 'room_invalid');
      isError(await call('GET', `/v1/rooms/${name}`), 400, 'room_invalid');
    }
  });
  await t.test('a percent-encoded slash is part of the name (invalid), not a path separator', async () => {
    isError(await post('a%2Fb', 'ops', { op: { kind: 'set', item: 'x', fields: {} } }), 400, 'room_invalid');
    isError(await call('GET', `/v1/rooms/${room}%2Fhistory`), 400, 'room_invalid');
  });
  await t.test('nothing was written by the refused requests', async () => {
    const s = await call('GET', `/v1/rooms/${room}`);
    assert.equal(s.body.seq, 5);
  });
  await t.test('a room that never existed is created', async () => {
    const r = await post('board:api-new', 'ops', { op: { kind: 'set', item: 'x', fields: { v: 1 } } });
    assert.equal(r.status, 200);
    assert.equal(r.body.seq, 1);
    assert.match(r.body.epoch, /^[a-z0-9]{1,64}$/);
    const s = await call('GET', '/v1/rooms/board:api-new');
    assert.equal(s.body.epoch, r.body.epoch);
    assert.equal(s.body.seq, 1);
  });
  await t.test('a percent-encoded room name is decoded', async () => {
    const s = await call('GET', '/v1/rooms/board%3Aapi');
    assert.equal(s.status, 200);
    assert.equal(s.body.room, room);
    assert.equal(s.body.seq, 5);
  });
});

test('POST /v1/rooms/R/publish', async (t) => {
  const room = 'chat:api';
  const c = await connect();
  t.after(() => c.close());
  const j = await c.join(room);

  await t.test('stored: 200 with seq; members get the message from {backend:true}', async () => {
    const r = await post(room, 'publish', { data: { text: 'hello from the backend' }, cid: 'pub-1' });
    assert.deepEqual(r.body, { room, epoch: j.epoch, seq: 1 });
    const m = await c.entry(room, 1);
    const { ts, ...rest } = m;
    assert.deepEqual(rest, { type: 'message', room, seq: 1, from: { backend: true }, cid: 'pub-1', data: { text: 'hello from the backend' } });
    const again = await post(room, 'publish', { data: { text: 'other' }, cid: 'pub-1' });
    assert.deepEqual(again.body, { room, epoch: j.epoch, seq: 1, duplicate: true });
  });

  await t.test('data of any JSON type, explicit ephemeral:false', async () => {
    for (const [i, data] of [[2, 'text'], [3, [1, 2]], [4, null], [5, 0]]) {
      const r = await post(room, 'publish', { data, ephemeral: false });
      assert.equal(r.body.seq, i);
      assert.deepEqual((await c.entry(room, i)).data, data);
    }
  });

  await t.test('ephemeral: 200 without seq; members get it with ephemeral:true, no seq; not stored', async () => {
    const r = await post(room, 'publish', { data: { typing: true }, ephemeral: true });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { room, epoch: j.epoch });
    const m = await c.waitFor((x) => x.type === 'message' && x.ephemeral, 'the ephemeral message');
    const { ts, ...rest } = m;
    assert.deepEqual(rest, { type: 'message', room, from: { backend: true }, data: { typing: true }, ephemeral: true });
    const h = await call('GET', `/v1/rooms/${room}/history`);
    assert.equal(h.body.seq, 5);
    assert.equal(h.body.entries.length, 5);
  });

  await t.test('no data -> 400 bad_request', async () => {
    isError(await post(room, 'publish', { ephemeral: true }), 400, 'bad_request');
    isError(await post(room, 'publish', 'data'), 400, 'bad_json');
  });

  await t.test('data over max_field_size -> 413 too_large', async () => {
    isError(await post(room, 'publish', { data: 'x'.repeat(70000) }), 413, 'too_large');
  });

  await t.test('data nested deeper than max_depth -> 400 invalid_field', async () => {
    let deep = 1;
    for (let i = 0; i < 20; i++) deep = [deep];
    isError(await post(room, 'publish', { data: deep }), 400, 'invalid_field');
  });
});

test('GET snapshot, history, presence', async (t) => {
  const room = 'board:read';
  const c = await connect('carol');
  t.after(() => c.close());
  await c.join(room, { presence: { name: 'Carol' } });
  // 10 entries: sets, a del, publishes
  for (let i = 1; i <= 10; i++) {
    if (i % 4 === 0) await c.expect({ type: 'publish', room, cid: `h.${i}`, data: { i } }, 'ack');
    else if (i === 7) await c.expect({ type: 'op', room, cid: `h.${i}`, op: { kind: 'del', item: 'item-1' } }, 'ack');
    else await c.set(room, `h.${i}`, `item-${i % 3}`, { i, [`f${i}`]: true });
  }
  const entries = await c.take(10, isEntry(room), 'entries');
  const history = (q) => call('GET', `/v1/rooms/${room}/history${q}`);
  const seqs = (r) => r.body.entries.map((e) => e.seq);

  await t.test('the snapshot equals what a client joining sees', async () => {
    const r = await call('GET', `/v1/rooms/${room}`);
    assert.equal(r.status, 200);
    const s = await snapshotOf(srv.url, room);
    assert.deepEqual(r.body, { room, epoch: s.epoch, seq: 10, items: s.items });
  });

  await t.test('a room that never existed: 404 not_found for the snapshot and the history', async () => {
    isError(await call('GET', '/v1/rooms/board:never-was'), 404, 'not_found');
    isError(await call('GET', '/v1/rooms/board:never-was/history'), 404, 'not_found');
  });

  await t.test('a room that never existed: 404 for the presence too', async () => {
    isError(await call('GET', '/v1/rooms/board:never-was/presence'), 404, 'not_found');
  });

  await t.test('history: every entry as broadcast, oldest first; first 1, more false', async () => {
    const r = await history('');
    assert.equal(r.status, 200);
    assert.equal(r.body.room, room);
    assert.equal(r.body.seq, 10);
    assert.equal(r.body.first, 1);
    assert.equal(r.body.more, false);
    assert.deepEqual(r.body.entries, entries);
  });

  const pages = [
    ['?from=3&to=5', [3, 4, 5], false],
    ['?limit=4', [1, 2, 3, 4], true],
    ['?from=5&limit=4', [5, 6, 7, 8], true],
    ['?from=9&limit=4', [9, 10], false],
    ['?from=7&to=8&limit=2', [7, 8], false],
    ['?from=7&to=9&limit=2', [7, 8], true],
    ['?from=10', [10], false],
    ['?from=11', [], false],
    ['?from=6&to=5', [], false],
    ['?to=2', [1, 2], false],
    ['?limit=1000', [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], false],
  ];
  for (const [q, want, more] of pages) {
    await t.test(`history${q} -> ${JSON.stringify(want)}, more ${more}`, async () => {
      const r = await history(q);
      assert.deepEqual(seqs(r), want);
      assert.equal(r.body.more, more);
      assert.deepEqual(r.body.entries, entries.filter((e) => want.includes(e.seq)));
    });
  }

  await t.test('paging with more: from = last + 1 walks the whole log', async () => {
    const got = [];
    let from = 1;
    for (let i = 0; i < 20; i++) {
      const r = await history(`?from=${from}&limit=3`);
      got.push(...r.body.entries);
      if (!r.body.more) break;
      from = r.body.entries.at(-1).seq + 1;
    }
    assert.deepEqual(got, entries);
  });

  await t.test('presence: every member\'s entry', async () => {
    const d = await connect('dan');
    t.after(() => d.close());
    await d.join(room);
    const r = await call('GET', `/v1/rooms/${room}/presence`);
    assert.equal(r.status, 200);
    assert.equal(r.body.room, room);
    const got = [...r.body.presence].sort((x, y) => x.user.localeCompare(y.user));
    assert.deepEqual(got, [
      { user: 'carol', device: c.welcome.device, state: { name: 'Carol' }, connected: true },
      { user: 'dan', device: d.welcome.device, state: {}, connected: true },
    ]);
  });
});

test('/metrics', async (t) => {
  const room = 'board:metrics';
  const metric = (m, name) => {
    assert.ok(m.has(name), `${name} is exported`);
    return m.get(name);
  };

  await t.test('text format 0.0.4 with the documented series', async () => {
    const r = await call('GET', '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
    const m = await fetchMetrics(srv.url, KEY);
    for (const name of ['wsync_connections{transport="ws"}', 'wsync_sessions{state="attached"}', 'wsync_sessions{state="detached"}',
      'wsync_rooms', 'wsync_ops_accepted_total', 'wsync_deliveries_total', 'wsync_bytes_in_total', 'wsync_bytes_out_total',
      'wsync_slow_consumer_closes_total', 'wsync_commit_seconds_bucket{le="+Inf"}', 'wsync_commit_seconds_count', 'wsync_commit_seconds_sum']) {
      const v = metric(m, name);
      assert.ok(Number.isFinite(v) && v >= 0, `${name} = ${v}`);
    }
    assert.match(r.text, /^# TYPE wsync_ops_accepted_total counter$/m);
    assert.match(r.text, /^# TYPE wsync_commit_seconds histogram$/m);
    assert.match(r.text, /^# TYPE wsync_sessions gauge$/m);
  });

  await t.test('the counters move: accepted, rejected by code, deliveries, bytes, commits', async () => {
    const a = await connect('mia');
    const b = await connect('ned');
    t.after(() => closeClients(a, b));
    await a.join(room);
    await b.join(room);
    const m0 = await fetchMetrics(srv.url, KEY);
    for (let i = 1; i <= 3; i++) await a.set(room, `m.${i}`, 'x', { i });
    await a.expect({ type: 'publish', room, cid: 'm.4', data: 'x' }, 'ack');
    await a.expect({ type: 'publish', room, data: 'eph', ephemeral: true }, 'ack');
    await b.expectError({ type: 'op', room, cid: 'm.5', op: { kind: 'set', item: 'x', fields: {}, base: 1 } }, 'conflict');
    await b.expectError({ type: 'op', room, cid: 'm.6', op: { kind: 'del', item: 'none' } }, 'not_found');
    for (const c of [a, b]) await c.take(4, (e) => isEntry(room)(e) && e.seq !== undefined, 'entries');
    const m1 = await fetchMetrics(srv.url, KEY);
    const d = (name) => (m1.get(name) ?? 0) - (m0.get(name) ?? 0);
    assert.equal(d('wsync_ops_accepted_total'), 4, 'three ops and a stored publish');
    assert.equal(d('wsync_ops_rejected_total{code="conflict"}'), 1);
    assert.equal(d('wsync_ops_rejected_total{code="not_found"}'), 1);
    assert.ok(d('wsync_deliveries_total') >= 10, `deliveries +${d('wsync_deliveries_total')}: 5 entries x 2 members`);
    assert.ok(d('wsync_bytes_in_total') > 0);
    assert.ok(d('wsync_bytes_out_total') > 0);
    assert.ok(d('wsync_commit_seconds_count') >= 1);
    assert.ok(d('wsync_commit_seconds_sum') >= 0);
  });

  await t.test('the histogram is cumulative and +Inf equals _count', async () => {
    const m = await fetchMetrics(srv.url, KEY);
    const les = ['0.0005', '0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '+Inf'];
    const vals = les.map((le) => metric(m, `wsync_commit_seconds_bucket{le="${le}"}`));
    for (let i = 1; i < vals.length; i++) assert.ok(vals[i] >= vals[i - 1], `bucket ${les[i]}`);
    assert.equal(vals.at(-1), metric(m, 'wsync_commit_seconds_count'));
    assert.ok(vals.at(-1) > 0);
  });

  await t.test('sessions attached and detached, connections, rooms', async () => {
    const m0 = await fetchMetrics(srv.url, KEY);
    const c = await connect('olga');
    await c.join('board:metrics-new-room');
    const m1 = await fetchMetrics(srv.url, KEY);
    assert.equal(m1.get('wsync_sessions{state="attached"}') - m0.get('wsync_sessions{state="attached"}'), 1);
    assert.equal(m1.get('wsync_rooms') - m0.get('wsync_rooms'), 1);
    assert.ok(m1.get('wsync_connections{transport="ws"}') >= m1.get('wsync_sessions{state="attached"}'));
    await c.drop();
    let m2;
    for (let i = 0; i < 200; i++) {
      m2 = await fetchMetrics(srv.url, KEY);
      if (m2.get('wsync_sessions{state="detached"}') > m0.get('wsync_sessions{state="detached"}')) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(m2.get('wsync_sessions{state="detached"}') - m0.get('wsync_sessions{state="detached"}'), 1);
    assert.equal(m2.get('wsync_sessions{state="attached"}'), m0.get('wsync_sessions{state="attached"}'));
    assert.equal(m2.get('wsync_rooms') - m0.get('wsync_rooms'), 1, 'a detached member keeps its room loaded');
  });
});

test('pipelined requests on one connection are answered in order', async (t) => {
  const room = 'board:pipe';
  const body = (o) => JSON.stringify(o);
  const req = (method, path, b) => `${method} ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n` +
    (b === undefined ? '\r\n' : `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`);
  const conn = await RawConn.connect(srv.port);
  t.after(() => conn.destroy());
  await conn.write(
    req('POST', `/v1/rooms/${room}/ops`, body({ cid: 'pipe-1', op: { kind: 'set', item: 'a', fields: { n: 1 } } })) +
    req('POST', `/v1/rooms/${room}/ops`, body({ cid: 'pipe-2', op: { kind: 'set', item: 'b', fields: { n: 2 } } })) +
    req('GET', `/v1/rooms/${room}`),
  );
  const r1 = await conn.readResponse();
  const r2 = await conn.readResponse();
  const r3 = await conn.readResponse();
  assert.deepEqual([r1.status, r2.status, r3.status], [200, 200, 200]);
  const [b1, b2, b3] = [r1, r2, r3].map((r) => JSON.parse(r.body));
  assert.equal(b1.seq, 1);
  assert.equal(b2.seq, 2);
  assert.equal(b3.seq, 2, 'the GET sees both writes');
  assert.deepEqual(b3.items, { a: { version: 1, fields: { n: 1 } }, b: { version: 2, fields: { n: 2 } } });
  // and again, an error in the middle
  await conn.write(
    req('POST', `/v1/rooms/${room}/ops`, body({ op: { kind: 'del', item: 'zzz' } })) +
    req('POST', `/v1/rooms/${room}/publish`, body({ data: 'p' })) +
    req('GET', `/v1/rooms/${room}/history?from=3`),
  );
  const s = [];
  for (let i = 0; i < 3; i++) s.push(await conn.readResponse());
  assert.deepEqual(s.map((r) => r.status), [404, 200, 200]);
  assert.equal(JSON.parse(s[1].body).seq, 3);
  assert.deepEqual(JSON.parse(s[2].body).entries.map((e) => e.data), ['p']);
  assert.equal(conn.buf.length, 0, 'nothing extra');
});

test('a long pipeline behind deferred answers: read paused past 64 KiB, every request answered in order', async (t) => {
  const room = 'board:pipe-long';
  const req = (i) => {
    const b = JSON.stringify({ cid: `long-${i}`, op: { kind: 'set', item: `i${i % 7}`, fields: { n: i, pad: 'p'.repeat(400) } } });
    return `POST /v1/rooms/${room}/ops HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`;
  };
  // ~1.3 MB of requests: past the 64 KiB where reading pauses, and past the
  // stash's hard cap (1 MiB + headers), which only pausing keeps from closing
  const n = 2600;
  const conn = await RawConn.connect(srv.port);
  t.after(() => conn.destroy());
  await conn.write(Array.from({ length: n }, (_, i) => req(i)).join(''));
  const seqs = [];
  for (let i = 0; i < n; i++) {
    const r = await conn.readResponse();
    assert.equal(r.status, 200, r.body.toString());
    seqs.push(JSON.parse(r.body).seq);
  }
  assert.deepEqual(seqs, Array.from({ length: n }, (_, i) => seqs[0] + i), 'answered in order, one seq each');
});

test('--history-ops 300: after 1000 ops the log is trimmed; an old since gets a snapshot', async (t) => {
  const s = await startSyncServer(t, ['--api-key', KEY, '--history-ops', '300', '--rate', '100000', '--burst', '100000']);
  const room = 'board:trim';
  const c = await SyncClient.connect(s.url, { token: token('trim'), device: 't' });
  t.after(() => c.close());
  const j = await c.join(room);
  const n = 1000;
  const chunk = scale(200, 100);
  for (let i = 0; i < n; i += chunk) {
    await Promise.all(Array.from({ length: Math.min(chunk, n - i) }, (_, k) => c.set(room, `t.${i + k}`, `item-${(i + k) % 10}`, { i: i + k })));
  }
  const h = await api(s.url, 'GET', `/v1/rooms/${room}/history?limit=5`, { key: KEY });
  const { first } = h.body;
  assert.equal(h.body.seq, n);
  assert.ok(first > 1 && first <= n - 300 + 1, `first ${first}: at least the newest 300 are kept, older ones trimmed`);
  assert.deepEqual(h.body.entries.map((e) => e.seq), [first, first + 1, first + 2, first + 3, first + 4], 'from 1: the oldest retained');
  assert.equal(h.body.more, true);

  const since = (seq) => c.join(room, { since: { epoch: j.epoch, seq } });
  const old = await since(100);
  assert.equal(old.recovered, false);
  assert.equal(Object.keys(old.snapshot.items).length, 10);
  assert.deepEqual(old.snapshot.items['item-9'], { version: 1000, fields: { i: 999 } });
  const edge = await since(first - 1);
  assert.equal(edge.recovered, true, 'every entry after first - 1 is retained');
  assert.deepEqual(edge.ops.map((e) => e.seq), Array.from({ length: n - first + 1 }, (_, i) => first + i));
  assert.equal((await since(first - 2)).recovered, false, 'entry first - 1 is gone');
});
