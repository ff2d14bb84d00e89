// handshake.test.mjs -- the opening handshake (RFC 6455 4.2) written by hand:
// every malformed upgrade gets the right HTTP status, a good one gets 101
// with the right accept key and no extension the server does not implement
// (permessage-deflate is the one it does: compression.test.mjs).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import test from 'node:test';

import { RawConn, RawWs, OP, frame, rawHttp, upgradeRequest, wsKey } from './lib/raw.mjs';
import { startServer } from './lib/server.mjs';
import { closeAll, nextMessage, open } from './lib/wsclient.mjs';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const acceptFor = (key) => createHash('sha1').update(key + GUID).digest('base64');

let srv;
test.before(async () => {
  srv = await startServer(null);
});
test.afterEach(() => RawConn.destroyAll());
test.after(() => srv.stopChecked());

/** Sends an upgrade request for /v1/echo built from overrides; returns the response. */
const upgrade = (headers = {}, opts = {}, path = '/v1/echo') =>
  rawHttp(srv.port, upgradeRequest(path, headers, opts));

test('a correct handshake gets 101 with the RFC 6455 accept value', async () => {
  const key = wsKey();
  const res = await upgrade({ 'Sec-WebSocket-Key': key });
  assert.equal(res.status, 101);
  assert.equal(res.headers.upgrade.toLowerCase(), 'websocket');
  assert.match(res.headers.connection, /upgrade/i);
  assert.equal(res.headers['sec-websocket-accept'], acceptFor(key));
  // And it speaks WebSocket right away.
  const ws = new RawWs(res.conn, res);
  await ws.send(frame(OP.TEXT, 'after handshake'));
  const f = await ws.nextFrame();
  assert.equal(f.payload.toString(), 'after handshake');
});

test('the RFC 6455 sample key gives the sample accept value', async () => {
  const res = await upgrade({ 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' });
  assert.equal(res.status, 101);
  assert.equal(res.headers['sec-websocket-accept'], 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
});

test('header names and tokens are case-insensitive; Connection may list several tokens', async () => {
  const key = wsKey();
  const req =
    'GET /v1/echo HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: WebSocket\r\n' +
    'connection: keep-alive, Upgrade\r\n' +
    `sec-websocket-key: ${key}\r\nsec-websocket-version: 13\r\n\r\n`;
  const res = await rawHttp(srv.port, req);
  assert.equal(res.status, 101);
  assert.equal(res.headers['sec-websocket-accept'], acceptFor(key));
});

test('frames sent right behind the request (same packet) are not lost', async () => {
  const c = await RawConn.connect(srv.port);
  await c.write(Buffer.concat([Buffer.from(upgradeRequest('/v1/echo')), frame(OP.TEXT, 'eager')]));
  const res = await c.readResponse();
  assert.equal(res.status, 101);
  const ws = new RawWs(c, res);
  const f = await ws.nextFrame();
  assert.equal(f.opcode, OP.TEXT);
  assert.equal(f.payload.toString(), 'eager');
});

test('an upgrade pipelined behind plain requests: answers in order, then WebSocket', async () => {
  const c = await RawConn.connect(srv.port);
  await c.write(Buffer.concat([
    Buffer.from('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'),
    Buffer.from('GET /v1/echo HTTP/1.1\r\nHost: x\r\n\r\n'), // no Upgrade: 426, keep-alive
    Buffer.from(upgradeRequest('/v1/echo')),
    frame(OP.TEXT, 'piped'),
  ]));
  assert.equal((await c.readResponse()).status, 200);
  assert.equal((await c.readResponse()).status, 426);
  const up = await c.readResponse();
  assert.equal(up.status, 101);
  const f = await new RawWs(c, up).nextFrame();
  assert.equal(f.payload.toString(), 'piped');
});

test('permessage-deflate offered: 101 with the answer (compression.test.mjs has the rest)', async () => {
  const res = await upgrade({
    'Sec-WebSocket-Extensions': 'permessage-deflate; client_max_window_bits',
  });
  assert.equal(res.status, 101);
  assert.equal(res.headers['sec-websocket-extensions'],
    'permessage-deflate; server_no_context_takeover; client_no_context_takeover');
  const ws = await open(`${srv.wsUrl}/v1/echo`, { perMessageDeflate: true });
  assert.equal(ws.extensions, 'permessage-deflate');
  ws.send('x'.repeat(1000));
  assert.equal((await nextMessage(ws)).data.toString(), 'x'.repeat(1000));
  await closeAll([ws]);
});

test('no extension but permessage-deflate is ever answered', async () => {
  const res = await upgrade({ 'Sec-WebSocket-Extensions': 'x-webkit-deflate-frame, mux, deflate-frame' });
  assert.equal(res.status, 101);
  assert.equal(res.headers['sec-websocket-extensions'], undefined);
});

test('bad handshakes get the right HTTP status', async (t) => {
  const cases = [
    ['missing Sec-WebSocket-Key', { 'Sec-WebSocket-Key': null }, {}, 400],
    ['empty Sec-WebSocket-Key', { 'Sec-WebSocket-Key': '' }, {}, 400],
    ['key that is not base64 of 16 bytes', { 'Sec-WebSocket-Key': 'not-a-valid-key' }, {}, 400],
    ['key of 15 bytes', { 'Sec-WebSocket-Key': Buffer.alloc(15, 1).toString('base64') }, {}, 400],
    ['key of 17 bytes', { 'Sec-WebSocket-Key': Buffer.alloc(17, 1).toString('base64') }, {}, 400],
    ['key with a bad character', { 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25j*Q==' }, {}, 400],
    ['POST with upgrade', {}, { method: 'POST' }, 400],
    ['HTTP/1.0 upgrade', {}, { version: '1.0' }, 400],
    ['missing Host', { Host: null }, {}, 400],
    ['Connection without Upgrade token', { Connection: 'keep-alive' }, {}, 400],
  ];
  for (const [name, headers, opts, status] of cases) {
    await t.test(`${name} -> ${status}`, async () => {
      const res = await upgrade(headers, opts);
      assert.equal(res.status, status, `body: ${res.body}`);
      assert.equal(res.headers['sec-websocket-accept'], undefined);
      // The connection does not turn into a WebSocket: the server closes it.
      await res.conn.waitClosed();
    });
  }

  await t.test('Sec-WebSocket-Version 8 -> 426 with Sec-WebSocket-Version: 13', async () => {
    const res = await upgrade({ 'Sec-WebSocket-Version': '8' });
    assert.equal(res.status, 426);
    assert.equal(res.headers['sec-websocket-version'], '13');
  });

  await t.test('missing Sec-WebSocket-Version -> 426 with Sec-WebSocket-Version: 13', async () => {
    const res = await upgrade({ 'Sec-WebSocket-Version': null });
    assert.equal(res.status, 426);
    assert.equal(res.headers['sec-websocket-version'], '13');
  });

  await t.test('no Upgrade header (plain GET of a WS endpoint) -> 426', async () => {
    const res = await upgrade({ Upgrade: null, Connection: null });
    assert.equal(res.status, 426);
    assert.equal(res.headers['sec-websocket-version'], '13');
    assert.match(res.headers.upgrade || '', /websocket/i);
  });

  await t.test('Upgrade to another protocol -> 426', async () => {
    const res = await upgrade({ Upgrade: 'h2c', Connection: 'Upgrade' });
    assert.equal(res.status, 426);
  });

  await t.test('/v1/ws upgrades to the sync protocol', async () => {
    const res = await upgrade({}, {}, '/v1/ws');
    assert.equal(res.status, 101);
  });

  await t.test('upgrade on an unknown path -> 404', async () => {
    const res = await upgrade({}, {}, '/v1/nope');
    assert.equal(res.status, 404);
  });
});

test('--allowed-origins', async (t) => {
  const osrv = await startServer(t, ['--allowed-origins', 'https://good.example, http://also.example:8080']);
  const up = (headers) => rawHttp(osrv.port, upgradeRequest('/v1/echo', headers));

  await t.test('an Origin in the list -> 101', async () => {
    assert.equal((await up({ Origin: 'https://good.example' })).status, 101);
    assert.equal((await up({ Origin: 'http://also.example:8080' })).status, 101);
  });
  await t.test('Origin comparison ignores case', async () => {
    assert.equal((await up({ Origin: 'HTTPS://GOOD.EXAMPLE' })).status, 101);
  });
  await t.test('an Origin not in the list -> 403', async () => {
    for (const o of ['https://evil.example', 'https://good.example.evil', 'https://good.exampl', 'null']) {
      const res = await up({ Origin: o });
      assert.equal(res.status, 403, `origin ${o}`);
      assert.equal(res.headers['sec-websocket-accept'], undefined);
    }
  });
  await t.test('no Origin at all when a list is configured -> 403', async () => {
    assert.equal((await up({})).status, 403);
  });
  await t.test('the ws package with an allowed origin connects', async () => {
    const ws = await open(`${osrv.wsUrl}/v1/echo`, { origin: 'https://good.example' });
    ws.send('hi');
    assert.equal((await nextMessage(ws)).data.toString(), 'hi');
    await closeAll([ws]);
  });
  t.after(() => RawConn.destroyAll());
});

test('handshake timeout: a partial request gets 408, then the close', async (t) => {
  const tsrv = await startServer(t, ['--handshake-timeout', '300ms']);
  const c = await RawConn.connect(tsrv.port);
  await c.write('GET /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n');
  // Never finish the request; the server must give up on its own.
  await c.waitClosed();
  const text = c.buf.toString('latin1');
  assert.match(text, /^HTTP\/1\.1 408 /, `unexpected response: ${text}`);
  assert.doesNotMatch(text, / 101 /);
});

test('handshake timeout: a connection that sends nothing is closed too', async (t) => {
  const tsrv = await startServer(t, ['--handshake-timeout', '300ms']);
  const c = await RawConn.connect(tsrv.port);
  await c.waitClosed();
  // No request was started, so there is nothing to answer: closed silently.
  assert.equal(c.buf.toString('latin1'), '', 'closed without a response');
});
