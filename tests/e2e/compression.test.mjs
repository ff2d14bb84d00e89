// compression.test.mjs -- permessage-deflate (RFC 7692): the offer and the
// answer written by hand, compressed frames written by hand (Autobahn-style
// cases 12/13 adapted: fragmented compressed messages, control frames in
// between, RSV1 where it does not belong, a decompression bomb), the `ws`
// package with perMessageDeflate on (echo, sync, large and fragmented
// messages) and a broadcast to 50 compressing clients that must get one
// compressed frame, byte for byte the same, compressed once.
import assert from 'node:assert/strict';
import test from 'node:test';
import zlib from 'node:zlib';

import { RawConn, RawWs, OP, frame, rawHttp, upgradeRequest } from './lib/raw.mjs';
import { scale, startServer, waitUntil } from './lib/server.mjs';
import { SyncClient, closeClients, startSyncServer, token } from './lib/sync.mjs';
import { closeAll, nextMessage, open } from './lib/wsclient.mjs';

const PMD = 'permessage-deflate';
const ANSWER = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** A message compressed as a client does (RFC 7692 7.2.1): sync flush, 00 00 ff ff removed. */
const deflate = (data) => {
  const z = zlib.deflateRawSync(Buffer.from(data), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  assert.deepEqual(z.subarray(-4), TAIL);
  return z.subarray(0, -4);
};
/** The payload of a compressed server message, inflated (7.2.2). */
const inflate = (payload) =>
  zlib.inflateRawSync(Buffer.concat([payload, TAIL]), { finishFlush: zlib.constants.Z_SYNC_FLUSH });

/** A JSON op like the sync protocol's broadcasts (~400 bytes). */
const jsonOp = (i) => JSON.stringify({
  type: 'op', room: 'board:compression', seq: 1000 + i, ts: 1765000000000 + i, cid: `alice.${i}`,
  op: { kind: 'set', item: `card-${i}`, fields: { title: `Card number ${i}`, x: 120 + i, y: 80 + 2 * i,
    color: '#ffcc00', text: 'Some text on the card, with a few words that repeat: card, board, room.',
    tags: ['todo', 'review'], assignee: 'alice@example.com' } },
  from: { user: 'alice', device: 'laptop-1' },
});

let srv;
test.before(async () => {
  srv = await startServer(null);
});
test.afterEach(() => RawConn.destroyAll());
test.after(() => srv.stopChecked());

const upgrade = (ext, port = srv.port, path = '/v1/echo') =>
  rawHttp(port, upgradeRequest(path, ext === undefined ? {} : { 'Sec-WebSocket-Extensions': ext }));

/** Connects to /v1/echo offering permessage-deflate; asserts it was accepted. */
async function connectZ(path = '/v1/echo', offer = PMD, answer = ANSWER) {
  const ws = await RawWs.connect(srv.port, path, { 'Sec-WebSocket-Extensions': offer });
  assert.equal(ws.response.headers['sec-websocket-extensions'], answer);
  return ws;
}

/** Sends bytes on a compressing connection and asserts the close code, then TCP close. */
async function expectViolation(bytes, code, { negotiate = true } = {}) {
  const ws = negotiate ? await connectZ() : await RawWs.connect(srv.port, '/v1/echo');
  await ws.send(Buffer.concat([].concat(bytes)));
  const r = await ws.readUntilClose();
  assert.equal(r.code, code, `close code (frames: ${r.frames.map((f) => f.opcode)})`);
  assert.equal(r.frames.length, 1, 'only the close frame is sent');
}

async function healthz(port = srv.port) {
  const res = await fetch(`http://127.0.0.1:${port}/healthz`);
  return (await res.json()).compression;
}

test('negotiation (RFC 7692 7.1)', async (t) => {
  await t.test('offers that are accepted get the answer with both no_context_takeover', async () => {
    for (const offer of [
      PMD,
      'permessage-deflate; client_max_window_bits',
      'permessage-deflate; client_max_window_bits=10; server_no_context_takeover',
      'permessage-deflate; client_no_context_takeover',
      'x-webkit-deflate-frame, permessage-deflate',
      'permessage-deflate; server_max_window_bits=16, permessage-deflate', // first declined
    ]) {
      const res = await upgrade(offer);
      assert.equal(res.status, 101, offer);
      assert.equal(res.headers['sec-websocket-extensions'], ANSWER, offer);
    }
  });

  await t.test('server_max_window_bits is echoed (quoted or not)', async () => {
    for (const [offer, bits] of [
      ['permessage-deflate; server_max_window_bits=10', 10],
      ['permessage-deflate; server_max_window_bits="12"; client_max_window_bits', 12],
      ['permessage-deflate; server_max_window_bits=8', 8],
    ]) {
      const res = await upgrade(offer);
      assert.equal(res.status, 101);
      assert.equal(res.headers['sec-websocket-extensions'], `${ANSWER}; server_max_window_bits=${bits}`);
    }
  });

  await t.test('invalid or unknown offers are declined, never a failed handshake', async () => {
    for (const offer of [
      'permessage-deflate; server_max_window_bits',
      'permessage-deflate; server_max_window_bits=7',
      'permessage-deflate; client_max_window_bits=010',
      'permessage-deflate; server_no_context_takeover=yes',
      'permessage-deflate; server_no_context_takeover; server_no_context_takeover',
      'permessage-deflate; foo',
      'permessage-deflate; client_max_window_bits="1',
      'permessage-deflate junk',
      'deflate-frame',
      ';;;,,,"',
    ]) {
      const res = await upgrade(offer);
      assert.equal(res.status, 101, offer);
      assert.equal(res.headers['sec-websocket-extensions'], undefined, offer);
      // And the connection speaks plain WebSocket: RSV1 is refused.
      const ws = new RawWs(res.conn, res);
      await ws.send(frame(OP.TEXT, deflate('hello'), { rsv: 4 }));
      assert.equal((await ws.readUntilClose()).code, 1002);
    }
  });

  await t.test('no offer: no extension', async () => {
    const res = await upgrade();
    assert.equal(res.status, 101);
    assert.equal(res.headers['sec-websocket-extensions'], undefined);
  });

  await t.test('offers in a second Sec-WebSocket-Extensions header are read too', async () => {
    const req = upgradeRequest('/v1/echo', { 'Sec-WebSocket-Extensions': 'x-unknown' })
      .replace(/\r\n\r\n$/, '\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n');
    const res = await rawHttp(srv.port, req);
    assert.equal(res.status, 101);
    assert.equal(res.headers['sec-websocket-extensions'], ANSWER);
  });

  await t.test('--compression off: offers are declined', async (tt) => {
    const off = await startServer(tt, ['--compression', 'off']);
    const res = await upgrade(PMD, off.port);
    assert.equal(res.status, 101);
    assert.equal(res.headers['sec-websocket-extensions'], undefined);
    const ws = await open(`${off.wsUrl}/v1/echo`, { perMessageDeflate: {} });
    assert.equal(ws.extensions, '');
    ws.send('x'.repeat(2000));
    assert.equal((await nextMessage(ws)).data.toString(), 'x'.repeat(2000));
    await closeAll([ws]);
  });
});

test('compressed frames by hand', async (t) => {
  await t.test('a compressed message is echoed compressed; a small one plain', async () => {
    const ws = await connectZ();
    const msg = jsonOp(1);
    await ws.send(frame(OP.TEXT, deflate(msg), { rsv: 4 }));
    const f = await ws.nextFrame();
    assert.equal(f.opcode, OP.TEXT);
    assert.equal(f.rsv, 4, 'RSV1 set');
    // One op on its own (no context takeover) deflates by about a third.
    assert.ok(f.payload.length < msg.length * 0.8, `${f.payload.length} bytes for ${msg.length}`);
    assert.equal(inflate(f.payload).toString(), msg);
    // Under WS_PMD_MIN_SIZE (128): sent as it is, even though it came compressed.
    await ws.send(frame(OP.TEXT, deflate('short one'), { rsv: 4 }));
    const s = await ws.nextFrame();
    assert.equal(s.rsv, 0);
    assert.equal(s.payload.toString(), 'short one');
    // An uncompressed message on the same connection is fine too.
    await ws.send(frame(OP.BINARY, Buffer.alloc(50, 1)));
    assert.deepEqual((await ws.nextFrame()).payload, Buffer.alloc(50, 1));
  });

  await t.test('a fragmented compressed message with a ping and a pong in between', async () => {
    const ws = await connectZ();
    const msg = jsonOp(2).repeat(5);
    const z = deflate(msg);
    const a = Math.floor(z.length / 3);
    const b = Math.floor((2 * z.length) / 3);
    await ws.send(Buffer.concat([
      frame(OP.TEXT, z.subarray(0, a), { fin: false, rsv: 4 }),
      frame(OP.PING, 'between'),
      frame(OP.CONT, z.subarray(a, b), { fin: false }),
      frame(OP.PONG, 'unasked'),
      frame(OP.CONT, z.subarray(b)),
    ]));
    const pong = await ws.nextFrame();
    assert.equal(pong.opcode, OP.PONG);
    assert.equal(pong.rsv, 0, 'control frames are never compressed');
    assert.equal(pong.payload.toString(), 'between');
    const f = await ws.nextFrame();
    assert.equal(f.rsv, 4);
    assert.equal(inflate(f.payload).toString(), msg);
  });

  await t.test('the same message dribbled a byte at a time', async () => {
    const ws = await connectZ();
    const msg = jsonOp(3);
    const bytes = frame(OP.TEXT, deflate(msg), { rsv: 4 });
    for (let i = 0; i < bytes.length; i++) await ws.send(bytes.subarray(i, i + 1));
    assert.equal(inflate((await ws.nextFrame()).payload).toString(), msg);
  });

  await t.test('RSV1 on a continuation frame: 1002', async () => {
    const z = deflate(jsonOp(4));
    await expectViolation([
      frame(OP.TEXT, z.subarray(0, 10), { fin: false, rsv: 4 }),
      frame(OP.CONT, z.subarray(10), { rsv: 4 }),
    ], 1002);
  });

  await t.test('RSV1 on a control frame: 1002', async () => {
    await expectViolation(frame(OP.PING, 'x', { rsv: 4 }), 1002);
    await expectViolation(frame(OP.CLOSE, Buffer.from([3, 232]), { rsv: 4 }), 1002);
  });

  await t.test('RSV1 without negotiation: 1002', async () => {
    await expectViolation(frame(OP.TEXT, deflate(jsonOp(5)), { rsv: 4 }), 1002, { negotiate: false });
  });

  await t.test('RSV2 or RSV3 with compression on: 1002', async () => {
    await expectViolation(frame(OP.TEXT, deflate(jsonOp(5)), { rsv: 6 }), 1002);
    await expectViolation(frame(OP.TEXT, 'plain', { rsv: 1 }), 1002);
  });

  await t.test('invalid deflate data: 1007', async () => {
    await expectViolation(frame(OP.BINARY, Buffer.from([0xff, 0xff, 0xff]), { rsv: 4 }), 1007);
    const z = deflate(jsonOp(6));
    await expectViolation(frame(OP.BINARY, z.subarray(0, z.length - 3), { rsv: 4 }), 1007);
  });

  await t.test('text that inflates to invalid UTF-8: 1007', async () => {
    await expectViolation(frame(OP.TEXT, deflate(Buffer.from([0x41, 0xc3, 0x28, 0x42])), { rsv: 4 }), 1007);
  });

  await t.test('a decompression bomb (10 MB of zeros, ~10 KB deflated) closes with 1009', async () => {
    const bomb = deflate(Buffer.alloc(10 * 1000 * 1000));
    assert.ok(bomb.length < 20000, `${bomb.length} bytes`);
    const before = await healthz();
    await expectViolation(frame(OP.BINARY, bomb, { rsv: 4 }), 1009);
    const after = await healthz();
    assert.equal(after.inflate_streams, 0, 'no inflate stream left lent');
    assert.equal(after.inflates, before.inflates, 'the bomb was never delivered');
  });

  await t.test('a compressed message exactly at --max-message-size is delivered', async (tt) => {
    const small = await startServer(tt, ['--max-message-size', '64K']);
    const ws = await RawWs.connect(small.port, '/v1/echo', { 'Sec-WebSocket-Extensions': PMD });
    await ws.send(frame(OP.BINARY, deflate(Buffer.alloc(65536, 7)), { rsv: 4 }));
    const f = await ws.nextFrame();
    assert.deepEqual(inflate(f.payload), Buffer.alloc(65536, 7));
    await ws.send(frame(OP.BINARY, deflate(Buffer.alloc(65537, 7)), { rsv: 4 }));
    assert.equal((await ws.readUntilClose()).code, 1009);
  });

  await t.test('a client that asked for a small window gets messages it can inflate', async () => {
    const ws = await connectZ('/v1/echo', 'permessage-deflate; server_max_window_bits=9',
      `${ANSWER}; server_max_window_bits=9`);
    const msg = Buffer.from(Array.from({ length: 40 }, (_, i) => jsonOp(i)).join('\n'));
    await ws.send(frame(OP.BINARY, msg));
    const f = await ws.nextFrame();
    assert.equal(f.rsv, 4);
    const out = zlib.inflateRawSync(Buffer.concat([f.payload, TAIL]), {
      finishFlush: zlib.constants.Z_SYNC_FLUSH, windowBits: 9,
    });
    assert.deepEqual(out, msg);
  });
});

test('the ws package with perMessageDeflate', async (t) => {
  const z = { perMessageDeflate: { threshold: 0 } };

  await t.test('echo round trips: small, JSON, large, binary', async () => {
    const ws = await open(`${srv.wsUrl}/v1/echo`, z);
    assert.equal(ws.extensions, PMD);
    const msgs = ['', 'a', jsonOp(7), 'é€𝄞'.repeat(300), Buffer.alloc(300000, 5),
      Buffer.from(Array.from({ length: 2000 }, (_, i) => jsonOp(i)).join(',')).subarray(0, 900 * 1024)];
    for (const m of msgs) {
      ws.send(m);
      const r = await nextMessage(ws);
      assert.equal(Buffer.compare(Buffer.from(r.data), Buffer.from(m)), 0, `length ${m.length}`);
    }
    await closeAll([ws]);
  });

  await t.test('fragmented messages (each fragment sync-flushed by ws)', async () => {
    const ws = await open(`${srv.wsUrl}/v1/echo`, z);
    const parts = [jsonOp(1), jsonOp(2), 'tail'];
    parts.forEach((p, i) => ws.send(p, { fin: i === parts.length - 1 }));
    assert.equal((await nextMessage(ws)).data.toString(), parts.join(''));
    await closeAll([ws]);
  });

  await t.test('a message inflating past --max-message-size closes with 1009', async () => {
    const ws = await open(`${srv.wsUrl}/v1/echo`, z);
    ws.send(Buffer.alloc(1024 * 1024 + 1));
    const info = await ws.closedPromise;
    assert.equal(info.code, 1009);
  });

  await t.test('sync protocol: hello, join, op, ack and broadcast, all compressed', async (tt) => {
    const sync = await startSyncServer(tt);
    const hello = (u) => ({ token: token(u), device: `${u}-dev` });
    const a = await SyncClient.connect(sync.url, hello('alice'), 'alice', z);
    const b = await SyncClient.connect(sync.url, hello('bob'), 'bob', z);
    assert.equal(a.ws.extensions, PMD);
    const room = 'board:z';
    await a.join(room);
    await b.join(room);
    const text = 'Some text on the card that is long enough to be compressed. '.repeat(4);
    for (let i = 1; i <= 5; i++) {
      const ack = await a.request({ type: 'op', room, cid: `alice.${i}`, op: { kind: 'set', item: `card-${i}`, fields: { text } } });
      assert.equal(ack.type, 'ack');
      const e = await b.entry(room, ack.seq);
      assert.equal(e.op.fields.text, text);
    }
    await closeClients(a, b);
  });
});

test('broadcast to 50 compressing clients: one compression, one shared frame', async () => {
  const n = scale(50, 20);
  const room = `z${process.pid}`;
  const path = `/v1/broadcast?room=${room}`;
  const raws = [];
  for (let i = 0; i < n; i++) raws.push(await connectZ(path));
  // Two clients without compression in the same room get the plain frame.
  const plain = [await RawWs.connect(srv.port, path), await RawWs.connect(srv.port, path)];
  // And a few ws clients that inflate for real.
  const clients = [];
  for (let i = 0; i < 3; i++) clients.push(await open(`${srv.wsUrl}${path}`, { perMessageDeflate: {} }));
  const before = await healthz();
  const msg = jsonOp(42);
  assert.ok(msg.length > 300 && msg.length < 500, `${msg.length} bytes`);
  await raws[0].send(frame(OP.TEXT, msg));
  const frames = await Promise.all(raws.map((w) => w.nextFrame()));
  const first = frames[0];
  assert.equal(first.rsv, 4);
  assert.equal(inflate(first.payload).toString(), msg);
  for (const f of frames) assert.deepEqual(f.payload, first.payload, 'the same compressed bytes');
  for (const p of plain) {
    const f = await p.nextFrame();
    assert.equal(f.rsv, 0);
    assert.equal(f.payload.toString(), msg);
  }
  for (const c of clients) assert.equal((await nextMessage(c)).data.toString(), msg);
  const after = await healthz();
  assert.equal(after.deflates - before.deflates, 1, 'compressed once');
  assert.equal(after.shared - before.shared, n + clients.length - 1, 'reused by every other recipient');
  // Once every queue has written it, the shared frame leaves the cache at
  // the next tick, even though no other broadcast comes.
  await waitUntil(async () => (await healthz()).cached_frames === 0, 'the compressed frame to be released');
  await closeAll(clients);
});

test('an idle compressing connection holds no zlib stream', async (tt) => {
  const s = await startServer(tt);
  const ws = [];
  for (let i = 0; i < 20; i++) ws.push(await open(`${s.wsUrl}/v1/echo`, { perMessageDeflate: { threshold: 0 } }));
  for (const w of ws) w.send(jsonOp(1));
  for (const w of ws) await nextMessage(w);
  await waitUntil(async () => (await healthz(s.port)).inflates >= 20, 'inflates counted');
  const h = await healthz(s.port);
  assert.equal(h.inflate_streams, 0);
  // The process-wide deflater and at most a pool of 4 inflate streams: a
  // constant, not 20 connections' worth.
  assert.ok(h.zlib_bytes < 450 * 1024, `${h.zlib_bytes} zlib bytes`);
  await closeAll(ws);
});
