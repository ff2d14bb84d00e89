// tls.test.mjs -- wsync over TLS (--tls-cert/--tls-key, docs/SERVER.md
// "TLS"): HTTPS and wss:// on the one listener with a throwaway self-signed
// certificate made by the openssl CLI; the sync round trips, the backend API
// and SSE over it; start-up errors naming the file; plain HTTP on the port
// (a 400, then a clean close); old protocol versions and ciphers refused;
// SIGHUP reload (new handshakes get the new certificate, open connections
// keep working, a bad pair is not taken); a 1 MiB message, a fan-out to 100
// clients, and a handshake that arrives one byte at a time.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test from 'node:test';
import tls from 'node:tls';

import { runCli, scale, sleep, WAIT_MS, withTimeout } from './lib/server.mjs';
import { SECRET, closeClients, token } from './lib/sync.mjs';
import { httpsRequest, makeCert, replaceFile, startTlsServer, tempDir, wssOpen, wssSync } from './lib/tls.mjs';
import { takeMessages } from './lib/wsclient.mjs';

const KEY = 'backend-key-tls-0123';
let srv;
let dir;
test.before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'wsync-tls-'));
  srv = await startTlsServer(null, ['--auth-secret', SECRET, '--api-key', KEY, '--rate', '100000', '--burst', '100000',
    '--max-message-size', '2M', '--log-level', 'debug'], { dir });
});
test.after(async () => {
  try {
    await srv.stopChecked();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

let devN = 0;
const hello = (user) => ({ token: token(user), device: `${user}-${++devN}` });
const api = (method, p, body) => httpsRequest(srv.url + p, { method, body, key: KEY, ca: srv.ca });

/** Opens a TLS connection with options; resolves {ok, protocol, cipher} or {ok: false, error}. */
function tryTls(port, opts) {
  return withTimeout(new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca: srv.ca, servername: 'localhost', ...opts });
    s.once('secureConnect', () => {
      const r = { ok: true, protocol: s.getProtocol(), cipher: s.getCipher().name };
      s.end();
      resolve(r);
    });
    s.once('error', (error) => resolve({ ok: false, error }));
  }), WAIT_MS, 'a TLS handshake');
}

test('HTTPS: /healthz over TLS 1.3 by default, and over TLS 1.2 with an intermediate suite', async () => {
  const r = await httpsRequest(`${srv.url}/healthz`, { ca: srv.ca });
  assert.equal(r.status, 200);
  assert.equal(r.body.status, 'ok');
  assert.equal(r.protocol, 'TLSv1.3');
  assert.equal(r.fingerprint, srv.tls.fingerprint);
  const r12 = await httpsRequest(`${srv.url}/healthz`, { ca: srv.ca, tls: { maxVersion: 'TLSv1.2' } });
  assert.equal(r12.status, 200);
  assert.equal(r12.protocol, 'TLSv1.2');
  assert.match(r12.cipher, /^ECDHE-ECDSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/);
});

test('TLS 1.2: the client chooses the suite (server preference off); CBC suites are refused', async () => {
  for (const first of ['ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-ECDSA-AES256-GCM-SHA384']) {
    const r = await tryTls(srv.port, { maxVersion: 'TLSv1.2', ciphers: `${first}:ECDHE-ECDSA-AES128-GCM-SHA256` });
    assert.equal(r.ok, true, String(r.error));
    assert.equal(r.cipher, first);
  }
  const cbc = await tryTls(srv.port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384' });
  assert.equal(cbc.ok, false, 'a CBC-only TLS 1.2 client is refused');
});

test('a client offering only TLS 1.0 and 1.1 is refused; the server goes on', async () => {
  const r = await tryTls(srv.port, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' });
  assert.equal(r.ok, false);
  assert.match(`${r.error.code} ${r.error.message}`, /protocol|version|alert/i);
  await srv.waitForLog(/TLS handshake failed: .*unsupported protocol/);
  assert.equal((await httpsRequest(`${srv.url}/healthz`, { ca: srv.ca })).status, 200);
});

test('plain HTTP on the TLS port: a 400 in plain text, then a clean close (logged at debug)', async () => {
  for (const req of ['GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', 'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n']) {
    const s = net.connect(srv.port, '127.0.0.1');
    let data = '';
    s.setEncoding('utf8').on('data', (d) => (data += d));
    s.write(req);
    await withTimeout(new Promise((resolve) => s.on('close', resolve)), WAIT_MS, 'the server to close');
    assert.match(data, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.match(data, /use https:\/\/ or wss:\/\//);
  }
  await srv.waitForLog(/not TLS on the TLS port \(first byte 0x47\)/);
  // A handshake record with garbage inside: closed too, the server unharmed.
  const s = net.connect(srv.port, '127.0.0.1');
  s.on('data', () => {});
  s.write(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x20]), randomBytes(32)]));
  await withTimeout(new Promise((resolve) => s.on('close', resolve)), WAIT_MS, 'the server to close');
  assert.equal((await httpsRequest(`${srv.url}/healthz`, { ca: srv.ca })).status, 200);
});

test('the sync round trips over wss://: hello, join, op -> ack -> broadcast, publish, snapshot', async () => {
  const room = 'board:tls';
  const a = await wssSync(srv, hello('alice'));
  const b = await wssSync(srv, hello('bob'));
  assert.equal(a.welcome.type, 'welcome');
  await a.join(room);
  await b.join(room);
  const ack = await a.set(room, 'tls.1', 'card-1', { title: 'over TLS' });
  assert.equal(ack.seq, 1);
  const ea = await a.entry(room, 1);
  const eb = await b.entry(room, 1);
  assert.deepEqual(eb, ea);
  assert.deepEqual(eb.op.fields, { title: 'over TLS' });
  const pub = await b.expect({ type: 'publish', room, cid: 'tls.pub', data: { text: 'hi' } }, 'ack');
  const m = await a.entry(room, pub.seq);
  assert.deepEqual(m.data, { text: 'hi' });
  const c = await wssSync(srv, hello('carol'));
  const j = await c.join(room);
  assert.deepEqual(j.snapshot.items['card-1'].fields, { title: 'over TLS' });
  await closeClients(a, b, c);
});

test('the backend API over HTTPS: an op by POST reaches a wss:// member; the snapshot by GET', async () => {
  const room = 'board:tls-api';
  const c = await wssSync(srv, hello('alice'));
  await c.join(room);
  const r = await api('POST', `/v1/rooms/${room}/ops`, { cid: 'imp-1', op: { kind: 'set', item: 'x', fields: { n: 1 } } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.seq, 1);
  const e = await c.entry(room, 1);
  assert.deepEqual(e.from, { backend: true });
  const snap = await api('GET', `/v1/rooms/${room}`);
  assert.equal(snap.status, 200);
  assert.deepEqual(snap.body.items.x.fields, { n: 1 });
  assert.equal((await httpsRequest(`${srv.url}/v1/rooms/${room}`, { ca: srv.ca })).status, 401, 'no key: 401');
  await closeClients(c);
});

test('SSE over HTTPS: a session by POST /v1/send, its stream carries the entries', async (t) => {
  const room = 'board:tls-sse';
  const w = await httpsRequest(`${srv.url}/v1/send`, { method: 'POST', ca: srv.ca, body: { type: 'hello', v: 1, ...hello('sse') } });
  assert.equal(w.status, 200, w.text);
  assert.equal(w.body.type, 'welcome');
  const session = w.body.session;
  const events = [];
  let wake = () => {};
  const req = https.get(`${srv.url}/v1/sse?session=${encodeURIComponent(session)}`, { ca: srv.ca, agent: false }, (res) => {
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'], /^text\/event-stream/);
    let buf = '';
    res.setEncoding('utf8').on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
        if (data) events.push(JSON.parse(data));
      }
      wake();
    });
    res.on('error', () => {});
  });
  req.on('error', () => {});
  t.after(() => req.destroy());
  const until = (pred, what) => withTimeout(new Promise((resolve) => {
    const check = () => {
      const m = events.find(pred);
      if (m) resolve(m);
    };
    wake = check;
    check();
  }), WAIT_MS, what);
  const j = await httpsRequest(`${srv.url}/v1/send`, { method: 'POST', ca: srv.ca, headers: { 'Wsync-Session': session }, body: { type: 'join', id: 'j1', room } });
  assert.equal(j.status, 202, j.text);
  await until((m) => m.type === 'joined' && m.room === room, 'joined on the stream');
  const c = await wssSync(srv, hello('alice'));
  await c.join(room);
  await c.set(room, 'sse.1', 'card', { via: 'wss' });
  const e = await until((m) => m.type === 'op' && m.room === room, 'the op on the stream');
  assert.deepEqual(e.op.fields, { via: 'wss' });
  await closeClients(c);
});

test('a 1 MiB message over wss:// comes back intact (echo) and fans out intact (broadcast)', async () => {
  const big = randomBytes(1024 * 1024);
  const ws = await wssOpen(`${srv.wsUrl}/v1/echo`, srv.ca);
  ws.send(big);
  const [m] = await takeMessages(ws, 1);
  assert.equal(Buffer.compare(m.data, big), 0);
  ws.close();
  const members = await Promise.all(Array.from({ length: 5 }, () => wssOpen(`${srv.wsUrl}/v1/broadcast?room=big`, srv.ca)));
  members[0].send(big);
  for (const x of members) assert.equal(Buffer.compare((await takeMessages(x, 1))[0].data, big), 0);
  for (const x of members) x.close();
});

test('fan-out to 100 clients over TLS: every client gets every message, in order, intact', async () => {
  const n = 100;
  const msgs = scale(30, 10);
  const clients = [];
  for (let i = 0; i < n; i += 20) {
    clients.push(...await Promise.all(Array.from({ length: Math.min(20, n - i) }, () => wssOpen(`${srv.wsUrl}/v1/broadcast?room=fan100`, srv.ca))));
  }
  const sent = Array.from({ length: msgs }, (_, i) => randomBytes(1 + ((i * 7919) % 20000)));
  for (const b of sent) clients[0].send(b);
  const got = await Promise.all(clients.map((c) => takeMessages(c, msgs)));
  for (const list of got) list.forEach((m, i) => assert.equal(Buffer.compare(m.data, sent[i]), 0, `message ${i}`));
  for (const c of clients) c.close();
});

test('a handshake (and a request) arriving one byte at a time', async (t) => {
  // A proxy that passes the client's bytes on one per write, with a pause
  // between them, so that the server reads the ClientHello in pieces.
  const proxy = net.createServer((down) => {
    const up = net.connect(srv.port, '127.0.0.1');
    up.setNoDelay(true);
    const queue = [];
    let busy = false;
    const pump = async () => {
      if (busy) return;
      busy = true;
      while (queue.length) {
        up.write(queue.shift());
        await sleep(1);
      }
      busy = false;
    };
    down.on('data', (d) => {
      for (const byte of d) queue.push(Buffer.from([byte]));
      pump();
    });
    up.on('data', (d) => down.write(d));
    up.on('close', () => down.destroy());
    down.on('close', () => up.destroy());
    down.on('error', () => {});
    up.on('error', () => {});
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  t.after(() => proxy.close());
  const url = `https://127.0.0.1:${proxy.address().port}/healthz`;
  const r = await withTimeout(httpsRequest(url, { ca: srv.ca }), WAIT_MS * 3, 'the byte-by-byte request');
  assert.equal(r.status, 200);
  assert.equal(r.body.status, 'ok');
});

test('start-up errors: a missing, unreadable or mismatched certificate or key names the file and exits non-zero', async (t) => {
  const d = tempDir(t);
  const a = makeCert(d, 'a');
  const b = makeCert(d, 'b');
  const junk = path.join(d, 'junk.pem');
  writeFileSync(junk, '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n');
  const missing = path.join(d, 'missing.pem');
  const cases = [
    ['a missing certificate', a.key, missing, [missing, /No such file/]],
    ['a missing key', missing, a.cert, [missing, /No such file/]],
    ['a certificate that is not one', a.key, junk, [junk, /--tls-cert/]],
    ['a key that is not one', junk, a.cert, [junk, /--tls-key/]],
    ['a key that is not the certificate\'s', b.key, a.cert, [b.key, /does not match/]],
  ];
  for (const [what, key, cert, [file, re]] of cases) {
    const r = runCli(['serve', '--listen', '127.0.0.1:0', '--data-dir', path.join(d, 'data'), '--tls-cert', cert, '--tls-key', key]);
    assert.notEqual(r.status, 0, what);
    assert.ok(r.stderr.includes(file), `${what}: ${r.stderr}`);
    assert.match(r.stderr, re, what);
    assert.doesNotMatch(r.stderr, /listening/, what);
  }
  const half = runCli(['serve', '--listen', '127.0.0.1:0', '--data-dir', path.join(d, 'data'), '--tls-cert', a.cert]);
  assert.notEqual(half.status, 0);
  assert.match(half.stderr, /--tls-cert needs --tls-key/);
});

test('SIGHUP reloads the certificate: new handshakes see the new one, open connections go on, a bad pair is not taken', async (t) => {
  const d = tempDir(t);
  const first = makeCert(d, 'live');
  const live = { cert: first.cert, key: first.key };
  const s = await startTlsServer(t, ['--auth-secret', SECRET, '--echo-endpoint'], { dir: d, cert: first });
  const room = 'board:reload';
  const old = await wssSync(s, hello('alice'));
  await old.join(room);
  const oldEcho = await wssOpen(`${s.wsUrl}/v1/echo`, first.pem);

  const nd = tempDir(t);
  const second = makeCert(nd, 'next', { kind: 'rsa' });
  replaceFile(live.key, readFileSync(second.key));
  replaceFile(live.cert, readFileSync(second.cert));
  s.proc.kill('SIGHUP');
  await s.waitForLog(/SIGHUP: TLS certificate reloaded/);
  assert.ok(s.stderr.includes(second.fingerprint), 'the log names the new fingerprint');

  const r = await httpsRequest(`${s.url}/healthz`, { ca: second.pem });
  assert.equal(r.status, 200);
  assert.equal(r.fingerprint, second.fingerprint);
  await assert.rejects(httpsRequest(`${s.url}/healthz`, { ca: first.pem }), 'the old certificate is no longer served');

  // The connections made before the reload still work both ways.
  await old.ping();
  const ack = await old.set(room, 'reload.1', 'card', { after: 'reload' });
  await old.entry(room, ack.seq);
  oldEcho.send('still here');
  assert.equal((await takeMessages(oldEcho, 1))[0].data.toString(), 'still here');

  // A reload that fails keeps the pair in use.
  replaceFile(live.cert, 'garbage\n');
  s.proc.kill('SIGHUP');
  await s.waitForLog(/TLS certificate not reloaded, keeping the old one: --tls-cert/);
  replaceFile(live.cert, first.pem); // the key is still the second one's
  s.proc.kill('SIGHUP');
  await s.waitForLog(/not reloaded, keeping the old one: .*does not match/);
  const r2 = await httpsRequest(`${s.url}/healthz`, { ca: second.pem });
  assert.equal(r2.fingerprint, second.fingerprint);
  await old.ping();
  oldEcho.close();
  await closeClients(old);
});

test('back-pressure over TLS: a wss:// client that stops reading is closed as a slow consumer; the others get everything', async (t) => {
  const s = await startTlsServer(t, ['--max-queued-bytes', '64K']);
  const url = `${s.wsUrl}/v1/broadcast?room=bp`;
  const normal = await Promise.all(Array.from({ length: 3 }, () => wssOpen(url, s.ca)));
  const publisher = await wssOpen(url, s.ca);
  const slow = await wssOpen(url, s.ca);
  const slowPort = slow._socket.localPort;
  slow.pause(); // stops reading the TLS socket, hence the TCP socket under it
  const slowLogged = new RegExp(`slow consumer 127\\.0\\.0\\.1:${slowPort}\\b`);
  const payload = (i) => `m-${String(i).padStart(6, '0')}`.padEnd(1024, '.');
  const WINDOW = 64;
  let sent = 0;
  let acked = 0;
  while (sent < 1000 || !slowLogged.test(s.stderr)) {
    assert.ok(sent < 40000, `no slow consumer reported after ${sent} messages`);
    if (sent - acked >= WINDOW) {
      for (const m of await takeMessages(publisher, WINDOW / 2)) assert.equal(m.data.toString(), payload(acked++));
    }
    publisher.send(payload(sent++));
  }
  slow.resume();
  for (const m of await takeMessages(publisher, sent - acked)) assert.equal(m.data.toString(), payload(acked++));
  for (const ws of normal) {
    const got = await takeMessages(ws, sent, WAIT_MS * 3);
    got.forEach((m, i) => assert.equal(m.data.toString(), payload(i)));
    assert.equal(ws.closeInfo, null);
  }
  const info = await withTimeout(slow.closedPromise, WAIT_MS, 'the slow client to be closed');
  assert.ok([1013, 1006].includes(info.code), `close code ${info.code}`);
  assert.ok(slow.inbox.length < sent, 'the slow client was cut off');
  slow.inbox.forEach((m, i) => assert.equal(m.data.toString(), payload(i), `slow client message ${i}: a prefix, in order`));
  for (const ws of [...normal, publisher]) ws.close();
});
