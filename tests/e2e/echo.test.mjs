// echo.test.mjs -- /v1/echo with a well-behaved client (the `ws` package):
// payloads across every length encoding, the message size limit, ping/pong.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import test from 'node:test';

import { startServer, withTimeout, WAIT_MS } from './lib/server.mjs';
import { closeAll, closed, nextMessage, open } from './lib/wsclient.mjs';

const MiB = 1024 * 1024;
// Boundaries of the 7-bit, 16-bit and 64-bit length encodings, and the default limit.
const SIZES = [0, 1, 125, 126, 65535, 65536, MiB];

/** Valid UTF-8 text of exactly n bytes, not all ASCII where there is room. */
function textOfBytes(n) {
  const unit = 'aé€𝄞'; // 1 + 2 + 3 + 4 = 10 bytes
  let s = unit.repeat(Math.floor(n / 10));
  s += 'x'.repeat(n - Buffer.byteLength(s));
  assert.equal(Buffer.byteLength(s), n);
  return s;
}

test('echo returns text and binary messages of every length encoding unchanged', async (t) => {
  const srv = await startServer(t);
  const ws = await open(`${srv.wsUrl}/v1/echo`);
  for (const n of SIZES) {
    await t.test(`text ${n} bytes`, async () => {
      const s = textOfBytes(n);
      ws.send(s);
      const m = await nextMessage(ws);
      assert.equal(m.isBinary, false);
      assert.equal(m.data.length, n);
      assert.equal(m.data.toString('utf8'), s);
    });
    await t.test(`binary ${n} bytes`, async () => {
      const b = randomBytes(n);
      ws.send(b);
      const m = await nextMessage(ws);
      assert.equal(m.isBinary, true);
      assert.equal(Buffer.compare(m.data, b), 0, 'echoed bytes differ');
    });
  }
  await closeAll([ws]);
});

test('many messages sent back to back come back in order', async (t) => {
  const srv = await startServer(t);
  const ws = await open(`${srv.wsUrl}/v1/echo`);
  const N = 500;
  for (let i = 0; i < N; i++) ws.send(`m${i}`);
  for (let i = 0; i < N; i++) assert.equal((await nextMessage(ws)).data.toString(), `m${i}`);
  await closeAll([ws]);
});

test('a message one byte over the 1 MiB default closes with 1009', async (t) => {
  const srv = await startServer(t);
  const ws = await open(`${srv.wsUrl}/v1/echo`);
  ws.send(Buffer.alloc(MiB + 1));
  const c = await closed(ws);
  assert.equal(c.code, 1009);
  assert.equal(ws.inbox.length, 0, 'nothing was echoed');
});

test('a text message over the limit closes with 1009 too', async (t) => {
  const srv = await startServer(t, ['--max-message-size', '1K']);
  const ws = await open(`${srv.wsUrl}/v1/echo`);
  ws.send('a'.repeat(1024)); // exactly at the limit: fine
  assert.equal((await nextMessage(ws)).data.length, 1024);
  ws.send('a'.repeat(1025));
  assert.equal((await closed(ws)).code, 1009);
});

test('a message larger than --max-queued-bytes is still echoed (an empty queue is not slow)', async (t) => {
  const srv = await startServer(t, ['--max-queued-bytes', '64K']);
  const ws = await open(`${srv.wsUrl}/v1/echo`);
  const b = randomBytes(200 * 1024);
  ws.send(b);
  const m = await nextMessage(ws);
  assert.equal(Buffer.compare(m.data, b), 0);
  assert.doesNotMatch(srv.stderr, /slow consumer/);
  await closeAll([ws]);
});

test('ws.ping() gets a pong with the same payload', async (t) => {
  const srv = await startServer(t);
  const ws = await open(`${srv.wsUrl}/v1/echo`);
  for (const payload of [Buffer.alloc(0), Buffer.from('hello'), randomBytes(125)]) {
    const pong = withTimeout(new Promise((r) => ws.once('pong', r)), WAIT_MS, 'pong');
    ws.ping(payload);
    const got = await pong;
    assert.equal(Buffer.compare(got, payload), 0);
  }
  // The connection is still usable afterwards.
  ws.send('after pings');
  assert.equal((await nextMessage(ws)).data.toString(), 'after pings');
  await closeAll([ws]);
});

test('a client close is answered with the same code', async (t) => {
  const srv = await startServer(t);
  const ws = await open(`${srv.wsUrl}/v1/echo`);
  ws.close(4321, 'bye');
  const c = await closed(ws);
  assert.equal(c.code, 4321);
});
