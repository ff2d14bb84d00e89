// fanout.test.mjs -- /v1/broadcast: every member of a room gets every
// message in order, rooms are isolated, and one consumer that stops reading
// is closed (1013, logged) without holding up the others.
import assert from 'node:assert/strict';
import test from 'node:test';

import { RawConn, RawWs, OP, closePayload, frame } from './lib/raw.mjs';
import { scale, startServer, WAIT_MS } from './lib/server.mjs';
import { closeAll, closed, open, takeMessages } from './lib/wsclient.mjs';

test('broadcast reaches every member of the room, the sender included', async (t) => {
  const srv = await startServer(t);
  const room = await Promise.all([1, 2, 3].map(() => open(`${srv.wsUrl}/v1/broadcast?room=a`)));
  const other = await open(`${srv.wsUrl}/v1/broadcast?room=b`);
  room[1].send('from one');
  for (const ws of room) assert.equal((await takeMessages(ws, 1))[0].data.toString(), 'from one');
  // "b" saw nothing: it gets its own message back first.
  other.send('only b');
  assert.equal((await takeMessages(other, 1))[0].data.toString(), 'only b');
  room[0].send('still a');
  for (const ws of room) assert.equal((await takeMessages(ws, 1))[0].data.toString(), 'still a');
  await closeAll([...room, other]);
});

test('a room name too long to keep is refused (1008), not mixed into another room', async (t) => {
  const srv = await startServer(t);
  const dflt = await open(`${srv.wsUrl}/v1/broadcast`);
  for (const name of ['a'.repeat(64), 'a'.repeat(100), 'b'.repeat(100)]) {
    const long = await open(`${srv.wsUrl}/v1/broadcast?room=${name}`);
    assert.equal((await closed(long)).code, 1008, `room of ${name.length} chars`);
  }
  // 63 bytes is the longest name kept; two that differ only at the end are two rooms.
  const r1 = await open(`${srv.wsUrl}/v1/broadcast?room=${'a'.repeat(62)}1`);
  const r2 = await open(`${srv.wsUrl}/v1/broadcast?room=${'a'.repeat(62)}2`);
  r1.send('one');
  assert.equal((await takeMessages(r1, 1))[0].data.toString(), 'one');
  r2.send('two');
  assert.equal((await takeMessages(r2, 1))[0].data.toString(), 'two');
  dflt.send('marker');
  assert.equal((await takeMessages(dflt, 1))[0].data.toString(), 'marker', 'default room saw only its own');
  r1.send('one-again');
  assert.equal((await takeMessages(r1, 1))[0].data.toString(), 'one-again', 'r1 saw nothing of r2');
  await closeAll([dflt, r1, r2]);
});

test('fan-out with a slow consumer: it is closed, everyone else gets everything in order', async (t) => {
  const MIN_MSGS = 2000;
  // Loopback sockets absorb a few MiB (send buffer autotuning) before the
  // server's own queue for a non-reading client starts to grow, so the
  // publisher goes on past MIN_MSGS until the server reports the slow
  // consumer -- bounded, and failing if it never does.
  const MAX_MSGS = 40000;
  const SIZE = 1024;
  const NORMAL = 5;
  const srv = await startServer(t, ['--max-queued-bytes', '64K']);
  const url = `${srv.wsUrl}/v1/broadcast?room=x`;

  const normal = [];
  for (let i = 0; i < NORMAL; i++) normal.push(await open(url));
  const publisher = await open(url);
  const outsider = await open(`${srv.wsUrl}/v1/broadcast?room=y`);

  // The slow consumer: completes the handshake, then never reads again.
  const slow = await RawWs.connect(srv.port, '/v1/broadcast?room=x');
  const slowPort = slow.conn.sock.localPort;
  slow.pause();
  const slowLogged = new RegExp(`slow consumer 127\\.0\\.0\\.1:${slowPort}\\b`);

  const payload = (i) => {
    const b = Buffer.alloc(SIZE, 0x2e);
    b.write(`x-${String(i).padStart(6, '0')}`);
    return b.toString('latin1');
  };
  // The publisher keeps a bounded window of messages in flight (its own copy
  // coming back is its ack), like a real producer; the window (64 KiB) is
  // what a burst can put into one read on the server.
  const WINDOW = 64;
  let acked = 0;
  let sent = 0;
  const ack = async (n) => {
    for (const x of await takeMessages(publisher, n)) {
      assert.equal(x.data.toString('latin1'), payload(acked++), 'publisher copy');
    }
  };
  while (sent < MIN_MSGS || !slowLogged.test(srv.stderr)) {
    assert.ok(sent < MAX_MSGS, `no slow consumer reported after ${sent} messages`);
    if (sent - acked >= WINDOW) await ack(WINDOW / 2);
    publisher.send(payload(sent++));
  }
  // Reading again at once: the server flushes what a write had started on,
  // then the 1013 close frame, but gives a peer that reads nothing only
  // 2 x linger (4 s) before it drops the connection without them. Resumed
  // now, the client drains in time even under sanitizers, so the close frame
  // is required below; its frames are buffered until they are checked.
  slow.resume();
  await ack(sent - acked);
  const MSGS = sent;
  // Every normal client: all messages, in order, nothing else.
  for (const [k, ws] of normal.entries()) {
    const got = await takeMessages(ws, MSGS, WAIT_MS * 3);
    got.forEach((m, i) => {
      assert.equal(m.isBinary, false);
      assert.equal(m.data.toString('latin1'), payload(i), `client ${k} message ${i}`);
    });
    assert.equal(ws.closeInfo, null, `client ${k} still open`);
  }

  // The server gave up on the slow one (and said so: the loop above waited
  // for that line), and on nobody else.
  assert.doesNotMatch(srv.stderr, new RegExp(`slow consumer 127\\.0\\.0\\.1:(?!${slowPort}\\b)`),
    'only the slow one');

  // It got a prefix of the stream (in order), the 1013 close frame, and then
  // the end of the connection.
  let n = 0;
  let closeCode = null;
  for (;;) {
    const f = await slow.nextFrame();
    if (!f) break;
    if (f.opcode === OP.CLOSE) {
      closeCode = f.code;
      break;
    }
    assert.equal(f.opcode, OP.TEXT);
    assert.equal(f.payload.toString('latin1'), payload(n), `slow client message ${n}`);
    n++;
  }
  await slow.conn.waitClosed();
  assert.ok(n < MSGS, `the slow client got ${n} of ${MSGS} messages: it was cut off`);
  assert.equal(closeCode, 1013, `close code ${closeCode} (null: no close frame before the end)`);

  // Room isolation: y's message is processed before x's marker is sent, so
  // had it leaked into x it would arrive before the marker.
  outsider.send('y-only');
  assert.equal((await takeMessages(outsider, 1))[0].data.toString(), 'y-only');
  publisher.send('x-end');
  for (const ws of [...normal, publisher]) {
    const [m] = await takeMessages(ws, 1);
    assert.equal(m.data.toString(), 'x-end', 'nothing from room y arrived in room x');
  }
  assert.equal(outsider.inbox.length, 0, 'nothing from room x arrived in room y');

  await closeAll([...normal, publisher, outsider]);
  RawConn.destroyAll();
});

test('a slow consumer in one room does not affect another room', async (t) => {
  const srv = await startServer(t, ['--max-queued-bytes', '16K']);
  const slow = await RawWs.connect(srv.port, '/v1/broadcast?room=busy');
  slow.pause();
  const pub = await open(`${srv.wsUrl}/v1/broadcast?room=busy`);
  const calm = await open(`${srv.wsUrl}/v1/broadcast?room=calm`);
  const big = 'b'.repeat(8 * 1024);
  // 32 messages of 8 KiB per round trip: each burst is 16 times the cap, so
  // the publisher's own queue overflows too unless the server writes before
  // it judges. Bounded: fails if the slow one is never reported.
  for (let i = 0; !/slow consumer/.test(srv.stderr); i++) {
    assert.ok(i < 200, 'no slow consumer reported after 200 bursts');
    for (let k = 0; k < 32; k++) pub.send(big);
    await takeMessages(pub, 32);
  }
  assert.equal(pub.closeInfo, null, 'the publisher, which reads, was not closed');
  calm.send('calm message');
  assert.equal((await takeMessages(calm, 1))[0].data.toString(), 'calm message');
  await closeAll([pub, calm]);
  slow.destroy();
});

test('members leaving abruptly during fan-out do not disturb the others', async (t) => {
  const srv = await startServer(t, ['--max-queued-bytes', '256K']);
  const url = `${srv.wsUrl}/v1/broadcast?room=churn`;
  const stayers = [];
  for (let i = 0; i < 5; i++) stayers.push(await open(url));
  // Leavers: raw clients that go away in different ways while messages flow.
  const LEAVERS = scale(30, 12);
  const leavers = [];
  for (let i = 0; i < LEAVERS; i++) leavers.push(await RawWs.connect(srv.port, '/v1/broadcast?room=churn'));
  const publisher = stayers[0];
  const MSGS = scale(600, 240);
  const every = Math.floor(MSGS / LEAVERS);
  for (let i = 0; i < MSGS; i++) {
    publisher.send(`m${i} ${'p'.repeat(i % 500)}`);
    if (i % every === every - 1 && leavers.length) {
      const l = leavers.pop();
      switch (leavers.length % 4) {
        case 0: l.conn.sock.resetAndDestroy(); break;                    // RST
        case 1: l.conn.sock.end(); break;                                // FIN, no close frame
        case 2: await l.send(frame(OP.CLOSE, closePayload(1000))); break; // polite close
        default: await l.send(frame(OP.TEXT, 'bad', { mask: false }));   // violation
      }
    }
    if (i % 50 === 49) await takeMessages(publisher, 50); // keep the publisher within a window
  }
  const rest = await takeMessages(publisher, MSGS % 50);
  assert.equal(rest.length, MSGS % 50);
  for (const ws of stayers.slice(1)) {
    const got = await takeMessages(ws, MSGS);
    got.forEach((m, i) => assert.equal(m.data.toString(), `m${i} ${'p'.repeat(i % 500)}`));
  }
  await closeAll(stayers);
  RawConn.destroyAll();
  const h = await fetch(`${srv.url}/healthz`).then((r) => r.json());
  assert.ok(h.connections >= 1);
});
