// frames.test.mjs -- RFC 6455 framing against /v1/echo with handcrafted
// frames (ported from the Autobahn case groups: framing, fragmentation,
// control frames, UTF-8, close). Each violation must get the right close code
// from the server, followed by the server closing the TCP connection.
import assert from 'node:assert/strict';
import test from 'node:test';

import { RawConn, RawWs, OP, frame, closePayload } from './lib/raw.mjs';
import { startServer } from './lib/server.mjs';

// One server for the whole file: every case opens its own connection.
let srv;
test.before(async () => {
  srv = await startServer(null);
});
test.afterEach(() => RawConn.destroyAll());
test.after(() => srv.stopChecked());

const connect = () => RawWs.connect(srv.port, '/v1/echo');

/** Asserts the next frame from the server is an unmasked data frame with this payload. */
async function expectData(ws, opcode, payload) {
  const f = await ws.nextFrame();
  assert.ok(f, 'connection ended instead of a frame');
  assert.equal(f.opcode, opcode, `opcode (payload ${f.payload.toString('latin1').slice(0, 40)})`);
  assert.equal(f.fin, true);
  assert.equal(f.masked, false, 'server frames are never masked');
  assert.equal(f.rsv, 0);
  assert.equal(Buffer.compare(f.payload, Buffer.from(payload)), 0, 'payload');
}

/** Sends bytes and asserts: a close frame with code, nothing else before it, then TCP close. */
async function expectViolation(bytes, code) {
  const ws = await connect();
  await ws.send(Buffer.concat([].concat(bytes)));
  const r = await ws.readUntilClose();
  assert.equal(r.code, code, `close code (frames: ${r.frames.map((f) => f.opcode)})`);
  assert.equal(r.frames.length, 1, 'only the close frame is sent');
}

test('fragmentation', async (t) => {
  await t.test('text in 3 fragments with a ping in between is reassembled; the pong comes first', async () => {
    const ws = await connect();
    await ws.send(frame(OP.TEXT, 'Hello, ', { fin: false }));
    await ws.send(frame(OP.CONT, 'fragmented ', { fin: false }));
    await ws.send(frame(OP.PING, 'mid-message'));
    await ws.send(frame(OP.CONT, 'world'));
    const pong = await ws.nextFrame();
    assert.equal(pong.opcode, OP.PONG);
    assert.equal(pong.payload.toString(), 'mid-message');
    await expectData(ws, OP.TEXT, 'Hello, fragmented world');
  });

  await t.test('binary in many fragments, some empty', async () => {
    const ws = await connect();
    const parts = [Buffer.from([0, 1]), Buffer.alloc(0), Buffer.from([2, 255]), Buffer.alloc(300, 7)];
    await ws.send(Buffer.concat([
      frame(OP.BINARY, parts[0], { fin: false }),
      frame(OP.CONT, parts[1], { fin: false }),
      frame(OP.CONT, parts[2], { fin: false }),
      frame(OP.CONT, parts[3]),
    ]));
    await expectData(ws, OP.BINARY, Buffer.concat(parts));
  });

  await t.test('a UTF-8 character split across fragments is valid', async () => {
    const ws = await connect();
    const clef = Buffer.from('a𝄞b'); // 61 F0 9D 84 9E 62
    await ws.send(frame(OP.TEXT, clef.subarray(0, 2), { fin: false }));
    await ws.send(frame(OP.CONT, clef.subarray(2, 4), { fin: false }));
    await ws.send(frame(OP.CONT, clef.subarray(4)));
    await expectData(ws, OP.TEXT, clef);
  });

  await t.test('two fragmented messages back to back, each with a ping inside', async () => {
    const ws = await connect();
    await ws.send(Buffer.concat([
      frame(OP.TEXT, 'one-', { fin: false }),
      frame(OP.PING, 'p1'),
      frame(OP.CONT, 'a'),
      frame(OP.BINARY, 'two-', { fin: false }),
      frame(OP.PING, 'p2'),
      frame(OP.CONT, 'b'),
    ]));
    const got = [];
    for (let i = 0; i < 4; i++) got.push(await ws.nextFrame());
    assert.deepEqual(got.map((f) => [f.opcode, f.payload.toString()]), [
      [OP.PONG, 'p1'], [OP.TEXT, 'one-a'], [OP.PONG, 'p2'], [OP.BINARY, 'two-b'],
    ]);
  });

  await t.test('a fragmented message over --max-message-size in total closes with 1009', async () => {
    // 1 MiB default: two fragments of 600 KiB.
    const ws = await connect();
    await ws.send(frame(OP.BINARY, Buffer.alloc(600 * 1024), { fin: false }));
    await ws.send(frame(OP.CONT, Buffer.alloc(600 * 1024)));
    const r = await ws.readUntilClose();
    assert.equal(r.code, 1009);
  });
});

test('control frames', async (t) => {
  await t.test('ping gets a pong with the same payload', async () => {
    const ws = await connect();
    for (const p of ['', 'x', 'payload-of-a-ping', 'z'.repeat(125)]) {
      await ws.send(frame(OP.PING, p));
      const f = await ws.nextFrame();
      assert.equal(f.opcode, OP.PONG);
      assert.equal(f.masked, false);
      assert.equal(f.payload.toString(), p);
    }
  });

  await t.test('a binary ping payload comes back byte for byte', async () => {
    const ws = await connect();
    const p = Buffer.from([0, 0xff, 0x80, 0xc0, 10, 13]);
    await ws.send(frame(OP.PING, p));
    const f = await ws.nextFrame();
    assert.equal(f.opcode, OP.PONG);
    assert.equal(Buffer.compare(f.payload, p), 0);
  });

  await t.test('an unsolicited pong is ignored', async () => {
    const ws = await connect();
    await ws.send(frame(OP.PONG, 'unasked'));
    await ws.send(frame(OP.TEXT, 'still here'));
    await expectData(ws, OP.TEXT, 'still here');
  });

  await t.test('a valid close is echoed with the same code, then the server closes TCP', async () => {
    for (const code of [1000, 1001, 3000, 4999]) {
      const ws = await connect();
      await ws.send(frame(OP.CLOSE, closePayload(code, 'done')));
      const r = await ws.readUntilClose();
      assert.equal(r.code, code);
    }
  });

  await t.test('an empty close is answered with a close frame and TCP close', async () => {
    const ws = await connect();
    await ws.send(frame(OP.CLOSE));
    const r = await ws.readUntilClose();
    assert.notEqual(r.code, null, 'a close frame was sent');
    // Answered with the same code (PROTOCOL.md 2.2): none, so an empty close
    // frame, which the reader reports as 1005.
    assert.equal(r.code, 1005, `code ${r.code}`);
    assert.equal(r.frames.at(-1).payload.length, 0, 'an empty close payload');
  });

  await t.test('data after the close frame is not echoed', async () => {
    const ws = await connect();
    await ws.send(Buffer.concat([frame(OP.CLOSE, closePayload(1000)), frame(OP.TEXT, 'late')]));
    const r = await ws.readUntilClose();
    assert.equal(r.code, 1000);
    assert.equal(r.frames.length, 1);
  });
});

test('protocol violations close with the right code', async (t) => {
  const cases = [
    ['unmasked frame', frame(OP.TEXT, 'hi', { mask: false }), 1002],
    ['RSV1 set without permessage-deflate agreed', frame(OP.TEXT, 'hi', { rsv: 4 }), 1002],
    ['RSV2 set', frame(OP.TEXT, 'hi', { rsv: 2 }), 1002],
    ['RSV3 set on a ping', frame(OP.PING, 'hi', { rsv: 1 }), 1002],
    ['reserved data opcode 3', frame(3, 'hi'), 1002],
    ['reserved data opcode 7', frame(7, ''), 1002],
    ['reserved control opcode 0xB', frame(0xb, ''), 1002],
    ['reserved control opcode 0xF', frame(0xf, 'x'), 1002],
    ['continuation without a start', frame(OP.CONT, 'orphan'), 1002],
    ['final continuation without a start', frame(OP.CONT, 'orphan', { fin: true }), 1002],
    ['new text frame inside a fragmented message',
      [frame(OP.TEXT, 'a', { fin: false }), frame(OP.TEXT, 'b')], 1002],
    ['fragmented ping', frame(OP.PING, 'frag', { fin: false }), 1002],
    ['fragmented close', frame(OP.CLOSE, closePayload(1000), { fin: false }), 1002],
    ['ping payload of 126 bytes', frame(OP.PING, Buffer.alloc(126, 0x61)), 1002],
    ['close payload of 126 bytes', frame(OP.CLOSE, Buffer.concat([closePayload(1000), Buffer.alloc(124, 0x61)])), 1002],
    // 126 announces a 16-bit length, which must then be >= 126 (RFC 6455 5.2).
    ['non-minimal 16-bit length',
      Buffer.concat([Buffer.from([0x81, 0x80 | 126, 0x00, 0x05, 0, 0, 0, 0]), Buffer.from('short')]), 1002],
    ['non-minimal 64-bit length',
      Buffer.concat([Buffer.from([0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0]), Buffer.from('short')]), 1002],
    ['invalid UTF-8 text', frame(OP.TEXT, Buffer.from([0x48, 0xff, 0x49])), 1007],
    ['overlong UTF-8 (C0 80)', frame(OP.TEXT, Buffer.from([0xc0, 0x80])), 1007],
    ['UTF-16 surrogate in text (ED A0 80)', frame(OP.TEXT, Buffer.from([0xed, 0xa0, 0x80])), 1007],
    ['code point above U+10FFFF (F4 90 80 80)', frame(OP.TEXT, Buffer.from([0xf4, 0x90, 0x80, 0x80])), 1007],
    ['text ending in a truncated sequence', frame(OP.TEXT, Buffer.from([0x61, 0xe2, 0x82])), 1007],
    ['invalid UTF-8 in the second fragment',
      [frame(OP.TEXT, 'valid start ', { fin: false }), frame(OP.CONT, Buffer.from([0x61, 0xfe]), { fin: false })], 1007],
    ['fragmented text ending mid-character',
      [frame(OP.TEXT, Buffer.from([0xe2, 0x82]), { fin: false }), frame(OP.CONT, Buffer.alloc(0))], 1007],
    ['close with invalid code 999', frame(OP.CLOSE, closePayload(999)), 1002],
    ['close with invalid code 1004', frame(OP.CLOSE, closePayload(1004)), 1002],
    ['close with invalid code 1005', frame(OP.CLOSE, closePayload(1005)), 1002],
    ['close with invalid code 1006', frame(OP.CLOSE, closePayload(1006)), 1002],
    ['close with invalid code 1015', frame(OP.CLOSE, closePayload(1015)), 1002],
    ['close with invalid code 2000', frame(OP.CLOSE, closePayload(2000)), 1002],
    ['close with invalid code 5000', frame(OP.CLOSE, closePayload(5000)), 1002],
    ['close with a 1-byte payload', frame(OP.CLOSE, Buffer.from([0x03])), 1002],
    ['close reason that is not UTF-8',
      frame(OP.CLOSE, Buffer.concat([closePayload(1000), Buffer.from([0xff])])), 1007],
  ];
  for (const [name, bytes, code] of cases) {
    await t.test(`${name} -> ${code}`, () => expectViolation(bytes, code));
  }

  await t.test('a violation after a good message: the good one is echoed, then the close', async () => {
    const ws = await connect();
    await ws.send(Buffer.concat([frame(OP.TEXT, 'good'), frame(OP.TEXT, 'bad', { mask: false })]));
    await expectData(ws, OP.TEXT, 'good');
    const r = await ws.readUntilClose();
    assert.equal(r.code, 1002);
  });

  await t.test('a frame header claiming a 2^63 length closes with 1002', async () => {
    const ws = await connect();
    const head = Buffer.from([0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
    await ws.send(head);
    const r = await ws.readUntilClose();
    // The most significant bit of a 64-bit length must be 0 (RFC 6455 5.2):
    // a framing error (1002), refused before the size limit (1009) applies.
    assert.equal(r.code, 1002, `code ${r.code}`);
  });

  await t.test('a frame header claiming 4 GiB closes with 1009 before any payload', async () => {
    const ws = await connect();
    const head = Buffer.from([0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]);
    await ws.send(head);
    const r = await ws.readUntilClose();
    assert.equal(r.code, 1009);
  });
});

test('bytes arriving one at a time', async (t) => {
  await t.test('a masked text frame sent byte by byte is echoed', async () => {
    const ws = await connect();
    await ws.conn.dribble(frame(OP.TEXT, 'dribbled €𝄞 text'));
    await expectData(ws, OP.TEXT, 'dribbled €𝄞 text');
  });

  await t.test('a 16-bit-length binary frame and a ping, byte by byte', async () => {
    const ws = await connect();
    const payload = Buffer.alloc(300);
    for (let i = 0; i < payload.length; i++) payload[i] = i & 0xff;
    await ws.conn.dribble(Buffer.concat([frame(OP.BINARY, payload), frame(OP.PING, 'pp')]));
    await expectData(ws, OP.BINARY, payload);
    const f = await ws.nextFrame();
    assert.equal(f.opcode, OP.PONG);
    assert.equal(f.payload.toString(), 'pp');
  });

  await t.test('fragments with a ping inside, byte by byte', async () => {
    const ws = await connect();
    const clef = Buffer.from('x𝄞y');
    await ws.conn.dribble(Buffer.concat([
      frame(OP.TEXT, clef.subarray(0, 3), { fin: false }),
      frame(OP.PING, 'inside'),
      frame(OP.CONT, clef.subarray(3)),
    ]));
    const pong = await ws.nextFrame();
    assert.equal(pong.opcode, OP.PONG);
    assert.equal(pong.payload.toString(), 'inside');
    await expectData(ws, OP.TEXT, clef);
  });

  await t.test('a close frame byte by byte is echoed', async () => {
    const ws = await connect();
    await ws.conn.dribble(frame(OP.CLOSE, closePayload(1000, 'slowly')));
    const r = await ws.readUntilClose();
    assert.equal(r.code, 1000);
  });

  await t.test('invalid UTF-8 byte by byte fails on the bad byte', async () => {
    const ws = await connect();
    // The frame claims 100 bytes; the bad byte comes third. The server must
    // close without waiting for the other 97 (which are never sent).
    const f = frame(OP.TEXT, Buffer.concat([Buffer.from([0x61, 0x62, 0xff]), Buffer.alloc(97, 0x61)]));
    await ws.conn.dribble(f.subarray(0, 2 + 4 + 3));
    const r = await ws.readUntilClose();
    assert.equal(r.code, 1007);
  });
});
