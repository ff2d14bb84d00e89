// timeouts.test.mjs -- pings keep a live client connected; a silent one is
// closed at the idle timeout; idle HTTP keep-alive connections are closed.
import assert from 'node:assert/strict';
import test from 'node:test';

import { RawConn, RawWs, OP, frame } from './lib/raw.mjs';
import { sleep, startServer } from './lib/server.mjs';
import { closeAll, nextMessage, open } from './lib/wsclient.mjs';

test('--ping-interval 200ms --idle-timeout 1s: pongs keep a client, silence closes one', async (t) => {
  const srv = await startServer(t, ['--ping-interval', '200ms', '--idle-timeout', '1s']);

  // The ws package answers every ping with a pong on its own.
  const live = await open(`${srv.wsUrl}/v1/echo`);
  let pings = 0;
  live.on('ping', () => pings++);

  // The raw client reads but never answers and never sends.
  const silent = await RawWs.connect(srv.port, '/v1/echo');
  const silentResult = silent.readUntilClose();

  await sleep(2000); // two idle timeouts
  const r = await silentResult;
  const pingFrames = r.frames.filter((f) => f.opcode === OP.PING);
  assert.ok(pingFrames.length >= 1, 'the server pinged the silent client');
  for (const f of pingFrames) {
    assert.equal(f.masked, false);
    assert.ok(f.payload.length <= 125);
  }
  assert.deepEqual(r.frames.filter((f) => f.opcode !== OP.PING && f.opcode !== OP.CLOSE), [],
    'only pings before the close');
  // The idle timeout sends a close frame (1001 Going Away) before ending the
  // TCP connection; code null would mean the socket was just dropped.
  assert.equal(r.code, 1001, `silent client closed with ${r.code}`);

  assert.ok(pings >= 2, `the live client was pinged (${pings} times)`);
  assert.equal(live.closeInfo, null, 'the live client is still connected');
  live.send('still alive');
  assert.equal((await nextMessage(live)).data.toString(), 'still alive');
  await closeAll([live]);
});

test('a client that keeps sending data is not pinged off', async (t) => {
  const srv = await startServer(t, ['--ping-interval', '200ms', '--idle-timeout', '600ms']);
  const ws = await RawWs.connect(srv.port, '/v1/echo');
  // Traffic every 100 ms for 1.5 s: longer than the idle timeout in total.
  for (let i = 0; i < 15; i++) {
    await ws.send(frame(OP.TEXT, `tick ${i}`));
    let f;
    do f = await ws.nextFrame(); while (f && f.opcode === OP.PING);
    assert.ok(f, 'connection still open');
    assert.equal(f.payload.toString(), `tick ${i}`);
    await sleep(100);
  }
  ws.destroy();
});

test('an idle keep-alive HTTP connection is closed after --idle-timeout', async (t) => {
  const srv = await startServer(t, ['--idle-timeout', '500ms']);
  const c = await RawConn.connect(srv.port);
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal((await c.readResponse()).status, 200);
  await c.waitClosed();
  assert.equal(c.buf.length, 0, 'closed without another response');
});
