// load.test.mjs -- many connections at once, and the connection limit.
import assert from 'node:assert/strict';
import test from 'node:test';

import { RawConn, upgradeRequest } from './lib/raw.mjs';
import { scale, startServer, waitUntil } from './lib/server.mjs';
import { closeAll, nextMessage, open } from './lib/wsclient.mjs';

test('1,000 concurrent clients on /v1/echo each get their own message back', async (t) => {
  const N = scale(1000, 200);
  const srv = await startServer(t);
  const clients = [];
  // Open in batches so the listen backlog is never the thing under test.
  for (let i = 0; i < N; i += 100) {
    const batch = [];
    for (let k = i; k < Math.min(N, i + 100); k++) batch.push(open(`${srv.wsUrl}/v1/echo`));
    clients.push(...(await Promise.all(batch)));
  }
  assert.equal(clients.length, N);
  const h = await fetch(`${srv.url}/healthz`).then((r) => r.json());
  assert.ok(h.connections >= N, `healthz counts ${h.connections} connections`);

  // Everyone sends at once, then everyone must get exactly its own message.
  clients.forEach((ws, i) => ws.send(`client ${i} says ${'x'.repeat(i % 200)}`));
  const got = await Promise.all(clients.map((ws) => nextMessage(ws)));
  got.forEach((m, i) => assert.equal(m.data.toString(), `client ${i} says ${'x'.repeat(i % 200)}`));

  // A second round on the same connections, binary this time.
  clients.forEach((ws, i) => {
    const b = Buffer.alloc(8);
    b.writeUInt32BE(i, 0);
    b.writeUInt32BE(~i >>> 0, 4);
    ws.send(b);
  });
  const got2 = await Promise.all(clients.map((ws) => nextMessage(ws)));
  got2.forEach((m, i) => {
    assert.equal(m.isBinary, true);
    assert.equal(m.data.readUInt32BE(0), i);
    assert.equal(m.data.readUInt32BE(4), ~i >>> 0);
  });

  await closeAll(clients);
  // The server lets go of every one of them.
  await waitUntil(async () => {
    const hz = await fetch(`${srv.url}/healthz`).then((r) => r.json());
    return hz.connections <= 1;
  }, 'connections to drain');
});

test('--max-connections 5: the 6th connection is refused while the first 5 work', async (t) => {
  const srv = await startServer(t, ['--max-connections', '5']);
  const clients = [];
  for (let i = 0; i < 5; i++) clients.push(await open(`${srv.wsUrl}/v1/echo`));

  // The 6th: TCP may be accepted by the kernel, but the server closes it
  // without ever answering the upgrade.
  const c = await RawConn.connect(srv.port);
  await c.write(upgradeRequest('/v1/echo'));
  await c.waitClosed();
  assert.equal(c.buf.toString('latin1'), '', 'closed at accept, without any response');
  await srv.waitForLog(/max-connections 5/);

  // The first five are unaffected.
  clients.forEach((ws, i) => ws.send(`still ${i}`));
  const got = await Promise.all(clients.map((ws) => nextMessage(ws)));
  got.forEach((m, i) => assert.equal(m.data.toString(), `still ${i}`));

  // The ws package sees the refusal as a failed open.
  await assert.rejects(open(`${srv.wsUrl}/v1/echo`));

  // Once one leaves, a new connection is accepted again.
  await closeAll([clients.pop()]);
  await waitUntil(async () => {
    try {
      clients.push(await open(`${srv.wsUrl}/v1/echo`));
      return true;
    } catch {
      return false;
    }
  }, 'a free slot');
  const last = clients[clients.length - 1];
  last.send('new one');
  assert.equal((await nextMessage(last)).data.toString(), 'new one');
  await closeAll(clients);
});
