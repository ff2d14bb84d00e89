// sync-hello.test.mjs -- the session handshake of the sync protocol
// (docs/PROTOCOL.md 1.1, 3.1-3.3, 3.6, 11): hello/welcome with tokens and in
// demo mode, every refusal (an error, then close 1008), messages before hello,
// bad JSON and unknown types before and after welcome, binary messages.
import assert from 'node:assert/strict';
import test from 'node:test';

import { startServer } from './lib/server.mjs';
import { startSyncServer, SyncClient, SECRET, craftToken, mintToken, nowS, snapshotOf, token } from './lib/sync.mjs';

let srv; // --auth-secret
let demo; // --auth-secret --insecure-demo
let nosecret; // neither
test.before(async () => {
  srv = await startSyncServer(null, ['--rate', '1000', '--burst', '1000']);
  demo = await startSyncServer(null, ['--insecure-demo']);
  nosecret = await startServer(null, [], { echo: false });
});
test.after(async () => {
  await Promise.all([srv, demo, nosecret].map((s) => s && s.stopChecked()));
});

/** Sends hello (with id 'h') and expects an error `code` followed by close 1008. */
async function refused(url, hello, code) {
  const c = await SyncClient.open(url);
  c.send({ type: 'hello', id: 'h', ...hello });
  const info = await c.closed();
  const errs = c.log.filter((m) => m.type === 'error');
  assert.equal(errs.length, 1, `one error before the close: ${JSON.stringify(c.log)}`);
  assert.equal(errs[0].code, code, JSON.stringify(errs[0]));
  assert.equal(errs[0].re, 'h', 'the error carries the hello id');
  assert.equal(typeof errs[0].message, 'string');
  assert.equal(info.code, 1008, `close code for ${code}`);
  assert.equal(c.log.filter((m) => m.type === 'welcome').length, 0);
  return errs[0];
}

/** Sends a raw message first thing and expects error `code` then close 1008. */
async function refusedRaw(url, data, code) {
  const c = await SyncClient.open(url);
  c.send(data);
  const info = await c.closed();
  const errs = c.log.filter((m) => m.type === 'error');
  assert.equal(errs.length, 1, `one error: ${JSON.stringify(c.log)}`);
  assert.equal(errs[0].code, code, JSON.stringify(errs[0]));
  assert.equal(info.code, 1008);
}

test('welcome', async (t) => {
  await t.test('a token minted by `wsync token` is welcomed with the documented members', async () => {
    const tok = mintToken({ user: 'alice', device: 'd1', grants: ['board:*=rw'] });
    const c = await SyncClient.open(srv.url);
    const w = await c.request({ type: 'hello', v: 1, token: tok, device: 'd1', id: 17 });
    assert.equal(w.type, 'welcome');
    assert.equal(w.re, 17);
    assert.equal(w.v, 1);
    assert.equal(w.user, 'alice');
    assert.equal(w.device, 'd1');
    assert.equal(w.resumed, false);
    assert.equal(w.insecure, undefined, 'a token session is not insecure');
    assert.match(w.session, /^[A-Za-z0-9._-]{1,128}$/);
    assert.match(w.server, /^wsync\//);
    assert.equal(typeof w.limits, 'object');
    assert.equal(w.limits.max_message, 1048576);
    assert.equal(w.limits.max_rooms, 100);
    assert.equal(w.limits.max_fields, 256);
    assert.equal(w.limits.max_field_size, 65536);
    assert.equal(w.limits.max_item_size, 262144);
    assert.equal(w.limits.max_text_size, 4194304);
    assert.equal(w.limits.max_depth, 16);
    assert.equal(w.limits.max_presence_state, 2048);
    assert.equal(w.limits.rate, 1000);
    assert.equal(w.limits.burst, 1000);
    await c.close();
  });

  await t.test('v defaults to 1; sessions are distinct per hello', async () => {
    const a = await SyncClient.connect(srv.url, { token: token('bob'), device: 'x1', v: undefined });
    const b = await SyncClient.connect(srv.url, { token: token('bob'), device: 'x2' });
    assert.notEqual(a.welcome.session, b.welcome.session);
    await Promise.all([a.close(), b.close()]);
  });

  await t.test('a device-bound token: hello without device takes the claim; the same device is fine', async () => {
    const tok = token('carol', {}, { device: 'phone-1' });
    const a = await SyncClient.connect(srv.url, { token: tok });
    assert.equal(a.welcome.device, 'phone-1');
    await a.close();
    const b = await SyncClient.connect(srv.url, { token: tok, device: 'phone-1' });
    assert.equal(b.welcome.device, 'phone-1');
    await b.close();
  });

  await t.test('a hello that names a session to resume gets a new session (resumed:false)', async () => {
    const c = await SyncClient.connect(srv.url, { token: token('dave'), device: 'r1', session: 's_nosuchsession', last: 3 });
    assert.equal(c.welcome.resumed, false);
    assert.notEqual(c.welcome.session, 's_nosuchsession');
    await c.close();
  });

  await t.test('ids are echoed unchanged in re: strings and the largest integer', async () => {
    const c = await SyncClient.connect(srv.url, { token: token('erin'), device: 'e1' });
    for (const id of ['abc', 'x'.repeat(64), 0, 2 ** 53 - 1]) {
      const r = await c.request({ type: 'ping', id });
      assert.equal(r.type, 'pong');
      assert.equal(r.re, id);
    }
    await c.close();
  });

  await t.test('ping -> pong; bye -> close 1000', async () => {
    const c = await SyncClient.connect(srv.url, { token: token('erin'), device: 'e2' });
    await c.ping();
    c.send({ type: 'bye' });
    const info = await c.closed();
    assert.equal(info.code, 1000);
  });

  await t.test('a second hello is bad_request and the session goes on', async () => {
    const c = await SyncClient.connect(srv.url, { token: token('frank'), device: 'f1' });
    const e = await c.expectError({ type: 'hello', token: token('frank'), device: 'f1' }, 'bad_request');
    assert.equal(e.for, 'hello');
    await c.ping();
    const j = await c.join('board:second-hello');
    assert.equal(j.presence.length, 1);
    assert.equal(j.presence[0].user, 'frank');
    await c.close();
  });
});

test('insecure demo mode', async (t) => {
  await t.test('hello with user is welcomed and marked insecure', async () => {
    const c = await SyncClient.connect(demo.url, { user: 'demo-user', device: 'd' });
    assert.equal(c.welcome.user, 'demo-user');
    assert.equal(c.welcome.insecure, true);
    await c.join('any:room');
    await c.set('any:room', 'c1', 'it', { a: 1 });
    await c.close();
  });
  await t.test('a token wins over user', async () => {
    const c = await SyncClient.connect(demo.url, { user: 'mallory', token: token('trent'), device: 'd' });
    assert.equal(c.welcome.user, 'trent');
    assert.notEqual(c.welcome.insecure, true);
    await c.close();
  });
  await t.test('a bad token is refused even with user', async () => {
    await refused(demo.url, { user: 'mallory', token: token('trent').slice(0, -2) + 'xx', device: 'd' }, 'token_invalid');
  });
  await t.test('a bad user id is bad_request', async () => {
    await refused(demo.url, { user: 'bad user', device: 'd' }, 'bad_request');
  });
  await t.test('without --insecure-demo, user instead of token is unauthorized', async () => {
    await refused(srv.url, { user: 'alice', device: 'd' }, 'unauthorized');
  });
});

test('refused hellos: an error, then close 1008', async (t) => {
  const exp = nowS() + 3600;
  const cases = [
    ['no token', srv, { device: 'd' }, 'unauthorized'],
    ['a token but the server has no auth secret', nosecret, { token: token('alice'), device: 'd' }, 'unauthorized'],
    ['bad signature (another secret)', srv, { token: craftToken({ sub: 'a', exp }, { secret: 'other' }), device: 'd' }, 'token_invalid'],
    ['signature of another payload', srv, { token: `${craftToken({ sub: 'a', exp }).split('.').slice(0, 2).join('.')}.${craftToken({ sub: 'b', exp }).split('.')[2]}`, device: 'd' }, 'token_invalid'],
    ['alg none, empty signature', srv, { token: craftToken({ sub: 'a', exp }, { header: { alg: 'none', typ: 'JWT' }, sig: '' }), device: 'd' }, 'token_invalid'],
    ['alg none with an HS256 signature', srv, { token: (() => { const good = craftToken({ sub: 'a', exp }).split('.'); return craftToken({ sub: 'a', exp }, { header: { alg: 'none', typ: 'JWT' }, sig: good[2] }); })(), device: 'd' }, 'token_invalid'],
    ['HS512 with the right secret', srv, { token: craftToken({ sub: 'a', exp }, { header: { alg: 'HS512', typ: 'JWT' } }), device: 'd' }, 'token_invalid'],
    ['no alg', srv, { token: craftToken({ sub: 'a', exp }, { header: { typ: 'JWT' } }), device: 'd' }, 'token_invalid'],
    ['malformed: one word', srv, { token: 'notajwt', device: 'd' }, 'token_invalid'],
    ['malformed: two segments', srv, { token: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0', device: 'd' }, 'token_invalid'],
    ['malformed: garbage segments', srv, { token: '!!!.@@@.###', device: 'd' }, 'token_invalid'],
    ['malformed: payload not JSON', srv, { token: craftToken('not json'), device: 'd' }, 'token_invalid'],
    ['empty token', srv, { token: '', device: 'd' }, 'token_invalid'],
    ['token over 8192 bytes', srv, { token: craftToken({ sub: 'a', exp, pad: 'x'.repeat(9000) }), device: 'd' }, 'token_invalid'],
    ['no sub', srv, { token: craftToken({ exp }), device: 'd' }, 'token_invalid'],
    ['sub not a string', srv, { token: craftToken({ sub: 42, exp }), device: 'd' }, 'token_invalid'],
    ['sub with a bad character', srv, { token: craftToken({ sub: 'a:b', exp }), device: 'd' }, 'token_invalid'],
    ['sub of 65 characters', srv, { token: craftToken({ sub: 'a'.repeat(65), exp }), device: 'd' }, 'token_invalid'],
    ['no exp', srv, { token: craftToken({ sub: 'a' }), device: 'd' }, 'token_invalid'],
    ['exp a string', srv, { token: craftToken({ sub: 'a', exp: String(exp) }), device: 'd' }, 'token_invalid'],
    ['grants not an object', srv, { token: craftToken({ sub: 'a', exp, grants: ['board:*'] }), device: 'd' }, 'token_invalid'],
    ['grant value not r/w/rw', srv, { token: craftToken({ sub: 'a', exp, grants: { 'board:*': 'admin' } }), device: 'd' }, 'token_invalid'],
    ['grant pattern with a bad character', srv, { token: craftToken({ sub: 'a', exp, grants: { 'board 1': 'rw' } }), device: 'd' }, 'token_invalid'],
    ['token bound to another device', srv, { token: token('a', {}, { device: 'phone-1' }), device: 'laptop' }, 'token_invalid'],
    ['expired token', srv, { token: craftToken({ sub: 'a', exp: nowS() - 60 }), device: 'd' }, 'token_expired'],
    ['exp equal to now', srv, { token: craftToken({ sub: 'a', exp: nowS() }), device: 'd' }, 'token_expired'],
    ['v: 2', srv, { v: 2, token: token('a'), device: 'd' }, 'unsupported_version'],
    ['v: 0', srv, { v: 0, token: token('a'), device: 'd' }, 'unsupported_version'],
    ['v: "1"', srv, { v: '1', token: token('a'), device: 'd' }, 'unsupported_version'],
    ['device missing (token has no device claim)', srv, { token: token('a') }, 'bad_request'],
    ['device empty', srv, { token: token('a'), device: '' }, 'bad_request'],
    ['device with a space', srv, { token: token('a'), device: 'my phone' }, 'bad_request'],
    ['device with @', srv, { token: token('a'), device: 'a@b' }, 'bad_request'],
    ['device of 65 characters', srv, { token: token('a'), device: 'd'.repeat(65) }, 'bad_request'],
    ['device a number', srv, { token: token('a'), device: 7 }, 'bad_request'],
  ];
  for (const [name, server, hello, code] of cases) {
    await t.test(`${name} -> ${code}`, () => refused(server.url, hello, code));
  }
  // A device id of exactly 64 characters is fine (the boundary of the rule above).
  await t.test('device of 64 characters is welcomed', async () => {
    const c = await SyncClient.connect(srv.url, { token: token('a'), device: 'd'.repeat(64) });
    await c.close();
  });
});

test('hello members of the wrong type are bad_request', async (t) => {
  /** The first reply to the hello must be bad_request (fails fast when it is a welcome). */
  async function firstReply(hello) {
    const c = await SyncClient.open(srv.url);
    const r = await c.request({ type: 'hello', ...hello });
    c.ws.terminate();
    assert.equal(r.type, 'error', JSON.stringify(r));
    assert.equal(r.code, 'bad_request');
  }
  await t.test('session not a string', () =>
    firstReply({ token: token('a'), device: 'd', session: 5 }));
  await t.test('last not an integer', () =>
    firstReply({ token: token('a'), device: 'd', session: 's_x', last: 'many' }));
});

test('before welcome every error closes with 1008', async (t) => {
  await t.test('join before hello -> unauthorized', () => refusedRaw(srv.url, { type: 'join', room: 'board:1', id: 1 }, 'unauthorized'));
  await t.test('op before hello -> unauthorized', () =>
    refusedRaw(srv.url, { type: 'op', room: 'board:1', cid: 'c', op: { kind: 'set', item: 'a', fields: {} } }, 'unauthorized'));
  await t.test('ping before hello -> unauthorized', () => refusedRaw(srv.url, { type: 'ping', id: 1 }, 'unauthorized'));
  await t.test('not JSON -> bad_json', () => refusedRaw(srv.url, 'hello?', 'bad_json'));
  await t.test('an array -> bad_json', () => refusedRaw(srv.url, '[{"type":"hello"}]', 'bad_json'));
  await t.test('duplicate members -> bad_json', () =>
    refusedRaw(srv.url, `{"type":"hello","token":"${token('a')}","device":"d","device":"e"}`, 'bad_json'));
  // The type is judged before the welcome check, as for a missing type below.
  await t.test('unknown type -> unknown_type', () => refusedRaw(srv.url, { type: 'helo' }, 'unknown_type'));
  await t.test('no type -> unknown_type', () => refusedRaw(srv.url, { token: token('a'), device: 'd' }, 'unknown_type'));
  await t.test('a binary message -> close 1003', async () => {
    const c = await SyncClient.open(srv.url);
    c.send(Buffer.from(JSON.stringify({ type: 'hello', token: token('a'), device: 'd' })), { binary: true });
    assert.equal((await c.closed()).code, 1003);
  });
});

// PROTOCOL.md 3.1: a client need not wait for welcome. Each case writes its
// frames in one TCP write (the socket corked), so the server reads them in
// one pass.
function sendCorked(c, msgs) {
  const sock = c.ws._socket;
  sock.cork();
  for (const m of msgs) c.send(m);
  process.nextTick(() => sock.uncork());
}

test('messages right behind hello, before its welcome (3.1)', async (t) => {
  await t.test('hello, join and op in one write: welcome, joined, ack, in order', async () => {
    const c = await SyncClient.open(srv.url);
    sendCorked(c, [
      { type: 'hello', id: 'h', token: token('pipe'), device: 'p1' },
      { type: 'join', id: 'j', room: 'board:pipe' },
      { type: 'op', id: 'o', room: 'board:pipe', cid: 'pipe-1', op: { kind: 'set', item: 'a', fields: { v: 1 } } },
    ]);
    const got = await c.take(3, () => true, 'welcome, joined and ack');
    assert.deepEqual(got.map((m) => [m.type, m.re]), [['welcome', 'h'], ['joined', 'j'], ['ack', 'o']], JSON.stringify(got));
    assert.equal(got[2].seq, got[1].seq + 1, 'the op follows the state joined gave');
    const snap = await snapshotOf(srv.url, 'board:pipe');
    assert.deepEqual(snap.items.a?.fields, { v: 1 }, JSON.stringify(snap.items));
    await c.close();
  });
  await t.test('a refused hello takes the messages behind it along: one error, close 1008, nothing applied', async () => {
    const c = await SyncClient.open(srv.url);
    sendCorked(c, [
      { type: 'hello', id: 'h', token: 'not.a.token', device: 'p2' },
      { type: 'join', id: 'j', room: 'board:pipe-refused' },
      { type: 'op', id: 'o', room: 'board:pipe-refused', cid: 'pipe-2', op: { kind: 'set', item: 'a', fields: { v: 2 } } },
      { type: 'ping', id: 'p' },
    ]);
    const info = await c.closed();
    assert.equal(info.code, 1008);
    assert.deepEqual(c.log.map((m) => [m.type, m.re]), [['error', 'h']], JSON.stringify(c.log));
    const snap = await snapshotOf(srv.url, 'board:pipe-refused');
    assert.deepEqual(snap.items, {}, 'the op behind the refused hello was not applied');
    assert.equal(snap.seq, 0);
  });
});

test('after welcome, bad messages are answered and the connection stays', async (t) => {
  const c = await SyncClient.connect(srv.url, { token: token('gina'), device: 'g1' });
  t.after(() => c.close());
  const badJson = [
    ['not JSON', '{"type":"ping"'],
    ['plain text', 'ping'],
    ['an array', '[{"type":"ping"}]'],
    ['a string', '"ping"'],
    ['a number', '42'],
    ['null', 'null'],
    ['empty', ''],
    ['duplicate members', '{"type":"ping","id":1,"id":2}'],
    ['duplicate type', '{"type":"ping","type":"pong"}'],
    ['U+0000 in a string', '{"type":"ping","x":"a\\u0000b"}'],
    ['trailing garbage', '{"type":"ping"} x'],
  ];
  for (const [name, data] of badJson) {
    await t.test(`${name} -> bad_json`, async () => {
      const before = c.log.length;
      c.send(data);
      const e = await c.waitFor((m) => m.type === 'error', 'bad_json error');
      assert.equal(e.code, 'bad_json', JSON.stringify(e));
      assert.equal(c.log.length - before, 1, 'exactly one reply');
      await c.ping();
      assert.ok(c.open);
    });
  }
  await t.test('nesting deeper than 32 levels -> bad_json', async () => {
    c.send(`{"type":"ping","id":"deep","x":${'['.repeat(40)}${']'.repeat(40)}}`);
    const r = await c.waitFor((m) => m.re === 'deep' || (m.type === 'error' && m.code === 'bad_json'), 'reply to the deep message');
    assert.equal(r.type, 'error');
    assert.equal(r.code, 'bad_json');
    await c.ping();
  });
  await t.test('nesting of exactly 32 levels is accepted', async () => {
    // The message object is level 1, so 31 nested arrays make 32 levels.
    c.send(`{"type":"ping","id":"d32","x":${'['.repeat(31)}${']'.repeat(31)}}`);
    const r = await c.waitFor((m) => m.re === 'd32' || m.type === 'error', 'reply to the 32-level message');
    assert.equal(r.type, 'pong', JSON.stringify(r));
  });
  for (const [name, msg] of [['unknown type', { type: 'frobnicate', id: 'u1' }], ['type missing', { id: 'u2' }],
    ['type a number', { type: 7, id: 'u3' }], ['type null', { type: null, id: 'u4' }]]) {
    await t.test(`${name} -> unknown_type with re`, async () => {
      const e = await c.request(msg);
      assert.equal(e.type, 'error');
      assert.equal(e.code, 'unknown_type');
      assert.equal(e.re, msg.id);
      if (typeof msg.type === 'string') assert.equal(e.for, msg.type);
      await c.ping();
    });
  }
  await t.test('unknown members are ignored', async () => {
    const r = await c.request({ type: 'ping', future: { x: [1, 2] }, another: 'y' });
    assert.equal(r.type, 'pong');
  });
  await t.test('a binary message after welcome closes with 1003', async () => {
    const d = await SyncClient.connect(srv.url, { token: token('gina'), device: 'g2' });
    d.send(Buffer.from('{"type":"ping"}'), { binary: true });
    assert.equal((await d.closed()).code, 1003);
  });
});
