// lifecycle.test.mjs -- the process from the outside: command line, flags
// and their environment variables, a port already taken, graceful shutdown.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';

import { RawConn, RawWs, OP, frame, closePayload } from './lib/raw.mjs';
import { runCli, startServer, WAIT_MS, withTimeout } from './lib/server.mjs';
import { closed, nextMessage, open } from './lib/wsclient.mjs';

/** Resolves the error code of a TCP connect attempt ('ECONNREFUSED'), or 'connected'. */
function tryConnect(port) {
  return withTimeout(new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e) => resolve(e.code));
  }), WAIT_MS, 'a connect attempt');
}

const FLAGS = ['--listen', '--data-dir', '--static', '--max-message-size', '--max-connections',
  '--max-queued-bytes', '--idle-timeout', '--ping-interval', '--handshake-timeout',
  '--allowed-origins', '--log-level', '--echo-endpoint'];

test('command line', async (t) => {
  await t.test('serve --help exits 0 and lists every flag with its environment variable', () => {
    for (const args of [['serve', '--help'], ['serve', '-h']]) {
      const r = runCli(args);
      assert.equal(r.status, 0, args.join(' '));
      for (const f of FLAGS) {
        assert.ok(r.stdout.includes(f), `${args.join(' ')} lists ${f}`);
        const env = `WSYNC_${f.slice(2).toUpperCase().replaceAll('-', '_')}`;
        assert.ok(r.stdout.includes(env), `${args.join(' ')} names ${env}`);
      }
    }
  });
  await t.test('--version prints the version and exits 0', () => {
    for (const args of [['--version'], ['serve', '--version']]) {
      const r = runCli(args);
      assert.equal(r.status, 0);
      assert.match(r.stdout, /^wsync \d+\.\d+\.\d+/);
    }
  });
  await t.test('an unknown flag exits non-zero and names it', () => {
    const r = runCli(['serve', '--no-such-flag']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /unknown option.*--no-such-flag/);
  });
  await t.test('an unknown command exits non-zero', () => {
    const r = runCli(['frobnicate']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /unknown command/);
  });
  await t.test('no arguments: usage on stderr, non-zero', () => {
    const r = runCli([]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /usage/);
    assert.match(r.stderr, /token/);
  });
  await t.test('--help at the top level lists the commands, not the serve flags', () => {
    for (const args of [['--help'], ['-h'], ['help']]) {
      const r = runCli(args);
      assert.equal(r.status, 0, args.join(' '));
      for (const cmd of ['serve', 'token', 'version']) assert.match(r.stdout, new RegExp(`^  ${cmd} `, 'm'), `${args}: ${cmd}`);
      assert.doesNotMatch(r.stdout, /--max-message-size/);
      assert.notEqual(r.stdout, runCli(['serve', '--help']).stdout);
    }
  });
  await t.test('token --help lists every option with its default', () => {
    const r = runCli(['token', '--help']);
    assert.equal(r.status, 0);
    for (const f of ['--user', '--device', '--grant', '--ttl', '--auth-secret']) assert.ok(r.stdout.includes(f), f);
    assert.match(r.stdout, /--ttl.*default 1h/);
    assert.match(r.stdout, /WSYNC_AUTH_SECRET/);
  });
  const bad = [
    [['--max-message-size', '12Q'], /invalid value '12Q' for --max-message-size/],
    [['--max-message-size', '-5'], /max-message-size/],
    [['--max-queued-bytes', '10'], /max-queued-bytes/],
    [['--max-connections', 'many'], /max-connections/],
    [['--idle-timeout', '5 parsecs'], /idle-timeout/],
    [['--ping-interval', 'soon'], /ping-interval/],
    [['--log-level', 'loud'], /log-level/],
    [['--listen', 'nonsense'], /listen/],
    [['--listen', '127.0.0.1:99999'], /listen/],
    [['--max-message-size'], /needs a value/],
    [['--echo-endpoint=maybe'], /echo-endpoint/],
    [['--dedupe-filter', '10'], /dedupe-filter/],
    [['--dedupe-filter', 'lots'], /dedupe-filter/],
    [['--dedupe-filter', '2000000000'], /dedupe-filter/],
  ];
  for (const [args, re] of bad) {
    await t.test(`bad value: ${args.join(' ')} exits non-zero with a message`, () => {
      const r = runCli(['serve', '--listen', '127.0.0.1:0', ...args]);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, re);
      assert.doesNotMatch(r.stderr, /listening on/);
    });
  }
  await t.test('a --static dir that does not exist exits non-zero', () => {
    const r = runCli(['serve', '--listen', '127.0.0.1:0', '--static', '/nonexistent/wsync-e2e']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--static .*No such file/);
  });
  await t.test('a --data-dir that cannot be created exits non-zero', () => {
    const r = runCli(['serve', '--listen', '127.0.0.1:0', '--data-dir', '/nonexistent/wsync-e2e/data']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--data-dir/);
  });
  await t.test('a bad value in an environment variable is refused too', () => {
    const r = runCli(['serve', '--listen', '127.0.0.1:0'], { env: { WSYNC_MAX_MESSAGE_SIZE: '12Q' } });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /12Q/);
    assert.match(r.stderr, /max-message-size/);
  });
});

test('--listen takes a host name: localhost:0 resolves and listens', async (t) => {
  const srv = await startServer(t, [], { listen: 'localhost:0' });
  const h = await fetch(`${srv.url}/healthz`).then((x) => x.json());
  assert.equal(h.status, 'ok');
});

test('--listen with a name that does not resolve exits non-zero and says so', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-e2e-'));
  try {
    const r = runCli(['serve', '--listen', 'no-such-host.invalid:0', '--data-dir', dir]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /cannot resolve 'no-such-host\.invalid'/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('secrets: a short --auth-secret or --api-key is refused unless --allow-weak-secrets', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-e2e-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const base = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dir];
  let r = runCli([...base, '--auth-secret', 'x']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--auth-secret is 1 bytes; it must be at least 32/);
  assert.doesNotMatch(r.stderr, /listening on/);
  r = runCli(base, { env: { WSYNC_AUTH_SECRET: 'a'.repeat(31) } });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /at least 32/);
  r = runCli([...base, '--api-key', '12345']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--api-key is 5 bytes; it must be at least 16/);
  // The override works, and says so loudly.
  const srv = await startServer(t, ['--auth-secret', 'x', '--api-key', '12345', '--allow-weak-secrets']);
  assert.match(srv.stderr, /--allow-weak-secrets/);
  // 32 bytes and 16 bytes are enough.
  await startServer(t, ['--auth-secret', 'a'.repeat(32), '--api-key', 'k'.repeat(16)]);
});

test('--insecure-demo beyond loopback needs --insecure-demo-public', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-e2e-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const listen of ['0.0.0.0:0', '[::]:0']) {
    const r = runCli(['serve', '--listen', listen, '--data-dir', dir, '--insecure-demo']);
    assert.equal(r.status, 2, listen);
    assert.match(r.stderr, /--insecure-demo-public/);
    assert.doesNotMatch(r.stderr, /listening on/);
  }
  // Loopback is fine alone; with the second flag any address is.
  await startServer(t, ['--insecure-demo'], { listen: 'localhost:0' });
  const pub = await startServer(t, ['--insecure-demo', '--insecure-demo-public'], { listen: '0.0.0.0:0' });
  assert.match(pub.stderr, /reachable beyond this machine/);
});

test('a port already in use: the second server exits non-zero and says why', async (t) => {
  const first = await startServer(t);
  const otherDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-e2e-'));
  t.after(() => fs.rmSync(otherDir, { recursive: true, force: true }));
  const r = runCli(['serve', '--listen', `127.0.0.1:${first.port}`, '--data-dir', otherDir]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /address already in use/i);
  // The first one is unharmed.
  const h = await fetch(`${first.url}/healthz`).then((x) => x.json());
  assert.equal(h.status, 'ok');
});

test('a data directory in use by another server is refused', async (t) => {
  const first = await startServer(t);
  const r = runCli(['serve', '--listen', '127.0.0.1:0', '--data-dir', first.dataDir]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /in use/i);
  const h = await fetch(`${first.url}/healthz`).then((x) => x.json());
  assert.equal(h.status, 'ok');
});

test('WSYNC_MAX_MESSAGE_SIZE=1K: a 2 KiB message closes with 1009', async (t) => {
  const srv = await startServer(t, [], { env: { WSYNC_MAX_MESSAGE_SIZE: '1K' } });
  const ws = await open(`${srv.wsUrl}/v1/echo`);
  ws.send(Buffer.alloc(1024, 1));
  assert.equal((await nextMessage(ws)).data.length, 1024);
  ws.send(Buffer.alloc(2048, 2));
  assert.equal((await closed(ws)).code, 1009);
});

test('a flag wins over its environment variable', async (t) => {
  const srv = await startServer(t, ['--max-message-size', '4K'],
    { env: { WSYNC_MAX_MESSAGE_SIZE: '1K' } });
  const ws = await open(`${srv.wsUrl}/v1/echo`);
  ws.send(Buffer.alloc(2048, 3));
  assert.equal((await nextMessage(ws)).data.length, 2048);
  ws.send(Buffer.alloc(4097, 4));
  assert.equal((await closed(ws)).code, 1009);
});

test('environment variables for boolean and duration flags', async (t) => {
  const srv = await startServer(t, [], {
    echo: false,
    env: { WSYNC_ECHO_ENDPOINT: '1', WSYNC_HANDSHAKE_TIMEOUT: '300ms' },
  });
  const ws = await open(`${srv.wsUrl}/v1/echo`);
  ws.send('env on');
  assert.equal((await nextMessage(ws)).data.toString(), 'env on');
  ws.close();
  await closed(ws);
  const c = await RawConn.connect(srv.port);
  await c.write('GET /healthz HTTP/1.1\r\n');
  await c.waitClosed();
});

test('without --echo-endpoint the test endpoints do not exist', async (t) => {
  const srv = await startServer(t, [], { echo: false });
  const r = await fetch(`${srv.url}/v1/echo`);
  assert.equal(r.status, 404);
});

test('SIGTERM: every WebSocket gets 1001, the process exits 0, new connections are refused', async (t) => {
  const srv = await startServer(t);
  const clients = [
    await open(`${srv.wsUrl}/v1/echo`),
    await open(`${srv.wsUrl}/v1/echo`),
    await open(`${srv.wsUrl}/v1/broadcast?room=r`),
  ];
  for (const ws of clients) {
    ws.send('before');
    assert.equal((await nextMessage(ws)).data.toString(), 'before');
  }
  // A raw client sees the close frame itself and answers when it chooses,
  // which keeps the server draining while we try to connect.
  const raw = await RawWs.connect(srv.port, '/v1/echo');
  // An idle keep-alive HTTP connection is closed too.
  const idle = await RawConn.connect(srv.port);
  await idle.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal((await idle.readResponse()).status, 200);

  srv.proc.kill('SIGTERM');
  const codes = await Promise.all(clients.map((ws) => closed(ws)));
  for (const c of codes) assert.equal(c.code, 1001);

  const f = await raw.nextFrame();
  assert.equal(f.opcode, OP.CLOSE);
  assert.equal(f.code, 1001);
  assert.equal(await tryConnect(srv.port), 'ECONNREFUSED', 'not accepting while draining');
  await raw.send(frame(OP.CLOSE, closePayload(1001)));
  await raw.conn.waitClosed();
  await idle.waitClosed();

  const e = await srv.waitExit();
  assert.deepEqual(e, { code: 0, signal: null });
  assert.match(srv.stderr, /SIGTERM: shutting down/);
  assert.equal(await tryConnect(srv.port), 'ECONNREFUSED', 'refused after exit');
});

test('SIGINT shuts down the same way', async (t) => {
  const srv = await startServer(t);
  const ws = await open(`${srv.wsUrl}/v1/echo`);
  srv.proc.kill('SIGINT');
  assert.equal((await closed(ws)).code, 1001);
  assert.deepEqual(await srv.waitExit(), { code: 0, signal: null });
});

test('shutdown does not wait forever for a client that never answers the close', async (t) => {
  const srv = await startServer(t);
  const raw = await RawWs.connect(srv.port, '/v1/echo');
  srv.proc.kill('SIGTERM');
  const r = await raw.readUntilClose();
  assert.equal(r.code, 1001);
  assert.deepEqual(await srv.waitExit(), { code: 0, signal: null });
});
