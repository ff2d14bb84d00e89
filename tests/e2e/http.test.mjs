// http.test.mjs -- the HTTP/1.1 side: /healthz, keep-alive and pipelining,
// errors and limits, static files with their types, no way out of the static
// root, HEAD without a body.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test from 'node:test';

import { RawConn, rawHttp } from './lib/raw.mjs';
import { runCli, startServer } from './lib/server.mjs';

const SECRET = 'TOP-SECRET-0f9e8d7c';

// Layout in a temp dir:
//   www/            the --static root
//   www-private/    a sibling whose name starts with the root's name
//   secret.txt      outside the root
const base = mkdtempSync(path.join(tmpdir(), 'wsync-static-'));
const root = path.join(base, 'www');
const files = {
  'index.html': '<!doctype html><title>wsync</title><h1>home</h1>\n',
  'app.js': 'export const answer = 42;\n',
  'style.css': 'body { color: #333; }\n',
  'data.json': '{"items":[1,2,3]}\n',
  'sub/index.html': '<p>sub index</p>\n',
  'sub/page.html': '<p>sub page</p>\n',
  'noext': 'plain bytes',
  'with space.txt': 'space in the name\n',
};
mkdirSync(path.join(root, 'sub'), { recursive: true });
mkdirSync(path.join(root, 'empty-dir'));
for (const [name, body] of Object.entries(files)) writeFileSync(path.join(root, name), body);
writeFileSync(path.join(base, 'secret.txt'), SECRET);
mkdirSync(path.join(base, 'www-private'));
writeFileSync(path.join(base, 'www-private', 'secret.txt'), SECRET);
symlinkSync(path.join(base, 'secret.txt'), path.join(root, 'link-out.txt'));
symlinkSync(base, path.join(root, 'link-dir'));
symlinkSync('/etc', path.join(root, 'etc-link'));
symlinkSync(path.join(root, 'app.js'), path.join(root, 'link-in.js'));

let srv;
test.before(async () => {
  srv = await startServer(null, ['--static', root]);
});
test.afterEach(() => RawConn.destroyAll());
test.after(async () => {
  try {
    await srv.stopChecked();
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

const get = (p, extra = '') => rawHttp(srv.port, `GET ${p} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`);

test('/healthz returns JSON with status, version, uptime_s and connections', async () => {
  const res = await get('/healthz');
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /^application\/json/);
  const h = JSON.parse(res.body.toString());
  assert.equal(h.status, 'ok');
  const cliVersion = runCli(['--version']).stdout.trim();
  assert.equal(`wsync ${h.version}`, cliVersion);
  assert.equal(typeof h.uptime_s, 'number');
  assert.ok(Number.isInteger(h.uptime_s) && h.uptime_s >= 0);
  assert.ok(Number.isInteger(h.connections) && h.connections >= 1, 'counts at least this one');
});

test('/healthz counts open connections', async () => {
  const before = JSON.parse((await get('/healthz')).body).connections;
  const extra = await Promise.all([1, 2, 3].map(() => RawConn.connect(srv.port)));
  const res = await get('/healthz');
  const now = JSON.parse(res.body).connections;
  assert.ok(now >= before + 3, `${before} -> ${now}`);
  extra.forEach((c) => c.destroy());
});

test('keep-alive: two requests on one connection', async () => {
  const c = await RawConn.connect(srv.port);
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  const a = await c.readResponse();
  assert.equal(a.status, 200);
  await c.write('GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n');
  const b = await c.readResponse();
  assert.equal(b.status, 200);
  assert.equal(b.body.toString(), files['app.js']);
  assert.equal(c.ended, false, 'still open');
});

test('Connection: close ends the connection after the response', async () => {
  const c = await RawConn.connect(srv.port);
  await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.equal((await c.readResponse()).status, 200);
  await c.waitClosed();
});

test('HTTP/1.0 without keep-alive is answered and closed', async () => {
  const c = await RawConn.connect(srv.port);
  await c.write('GET /data.json HTTP/1.0\r\n\r\n');
  const r = await c.readResponse();
  assert.equal(r.status, 200);
  assert.equal(r.body.toString(), files['data.json']);
  await c.waitClosed();
});

test('pipelined requests are answered in order', async () => {
  const c = await RawConn.connect(srv.port);
  await c.write(
    'GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n' +
    'GET /missing HTTP/1.1\r\nHost: x\r\n\r\n' +
    'HEAD /style.css HTTP/1.1\r\nHost: x\r\n\r\n' +
    'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n' +
    'POST /data.json HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello' +
    'GET /data.json HTTP/1.1\r\nHost: x\r\n\r\n',
  );
  const r1 = await c.readResponse();
  assert.equal(r1.status, 200);
  assert.equal(r1.body.toString(), files['app.js']);
  assert.equal((await c.readResponse()).status, 404);
  const r3 = await c.readResponse({ head: true });
  assert.equal(r3.status, 200);
  assert.equal(Number(r3.headers['content-length']), files['style.css'].length);
  const r4 = await c.readResponse();
  assert.equal(r4.status, 200);
  assert.equal(JSON.parse(r4.body).status, 'ok');
  assert.equal((await c.readResponse()).status, 405);
  const r6 = await c.readResponse();
  assert.equal(r6.status, 200);
  assert.equal(r6.body.toString(), files['data.json']);
  assert.equal(c.buf.length, 0, 'nothing extra');
});

test('a request sent one byte at a time is answered', async () => {
  const c = await RawConn.connect(srv.port);
  await c.dribble(Buffer.from('GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n'));
  const r = await c.readResponse();
  assert.equal(r.status, 200);
  assert.equal(r.body.toString(), files['style.css']);
});

test('unknown path -> 404', async () => {
  for (const p of ['/nope', '/sub/nope.html', '/empty-dir/', '/v1/echo-not']) {
    assert.equal((await get(p)).status, 404, p);
  }
});

test('static files: content and Content-Type', async (t) => {
  const want = [
    ['/index.html', 'index.html', /^text\/html/],
    ['/', 'index.html', /^text\/html/],
    ['/app.js', 'app.js', /^(text|application)\/javascript/],
    ['/style.css', 'style.css', /^text\/css/],
    ['/data.json', 'data.json', /^application\/json/],
    ['/sub/', 'sub/index.html', /^text\/html/],
    ['/sub/page.html', 'sub/page.html', /^text\/html/],
    ['/noext', 'noext', /^application\/octet-stream/],
    ['/with%20space.txt', 'with space.txt', /^text\/plain/],
    ['/link-in.js', 'app.js', /javascript/],
    ['/app.js?v=123', 'app.js', /javascript/],
  ];
  for (const [url, file, type] of want) {
    await t.test(url, async () => {
      const r = await get(url);
      assert.equal(r.status, 200);
      assert.match(r.headers['content-type'], type);
      assert.equal(Number(r.headers['content-length']), Buffer.byteLength(files[file]));
      assert.equal(r.body.toString(), files[file]);
    });
  }
  await t.test('a directory without the slash redirects to it', async () => {
    const r = await get('/sub');
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, '/sub/');
  });
});

test('path traversal never leaves the static root', async (t) => {
  const attempts = [
    '/../secret.txt',
    '/../../../../../../etc/passwd',
    '/sub/../../secret.txt',
    '/%2e%2e/secret.txt',
    '/%2E%2E/secret.txt',
    '/.%2e/secret.txt',
    '/%2e%2e%2fsecret.txt',
    '/..%2fsecret.txt',
    '/sub%2f..%2f..%2fsecret.txt',
    '/..%5csecret.txt',
    '/../www-private/secret.txt',
    '/%2e%2e/www-private/secret.txt',
    '/link-out.txt',
    '/link-dir/secret.txt',
    '/link-dir/www-private/secret.txt',
    '/etc-link/passwd',
    '/etc-link/hostname',
    '//etc/passwd',
  ];
  for (const p of attempts) {
    await t.test(p, async () => {
      const r = await get(p);
      assert.ok(r.status === 404 || r.status === 400, `status ${r.status}`);
      const text = r.body.toString('latin1');
      assert.doesNotMatch(text, new RegExp(SECRET));
      assert.doesNotMatch(text, /root:/);
    });
  }
  await t.test('an encoded NUL is refused', async () => {
    const r = await get('/app.js%00.html');
    assert.ok(r.status === 400 || r.status === 404, `status ${r.status}`);
  });
});

test('methods other than GET/HEAD on static files -> 405 with Allow', async () => {
  for (const m of ['POST', 'PUT', 'DELETE', 'PATCH']) {
    const r = await rawHttp(srv.port, `${m} /app.js HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi`);
    assert.equal(r.status, 405, m);
    assert.match(r.headers.allow || '', /GET/);
  }
  const r = await rawHttp(srv.port, 'POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n');
  assert.equal(r.status, 405);
});

test('HEAD returns the headers of GET with Content-Length but no body', async () => {
  const c = await RawConn.connect(srv.port);
  // A HEAD followed by a GET on the same connection: any body after the HEAD
  // response would show up where the GET's status line should be.
  await c.write('HEAD /app.js HTTP/1.1\r\nHost: x\r\n\r\nGET /style.css HTTP/1.1\r\nHost: x\r\n\r\n');
  const h = await c.readResponse({ head: true });
  assert.equal(h.status, 200);
  assert.equal(Number(h.headers['content-length']), files['app.js'].length);
  assert.match(h.headers['content-type'], /javascript/);
  const g = await c.readResponse();
  assert.equal(g.status, 200, 'the HEAD response carried no body');
  assert.equal(g.body.toString(), files['style.css']);
});

test('HEAD of /healthz and of a missing file carry no body', async () => {
  const c = await RawConn.connect(srv.port);
  await c.write(
    'HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n' +
    'HEAD /missing.txt HTTP/1.1\r\nHost: x\r\n\r\n' +
    'GET /data.json HTTP/1.1\r\nHost: x\r\n\r\n',
  );
  const a = await c.readResponse({ head: true });
  assert.equal(a.status, 200);
  assert.ok(Number(a.headers['content-length']) > 0);
  const b = await c.readResponse({ head: true });
  assert.equal(b.status, 404);
  const g = await c.readResponse();
  assert.equal(g.status, 200, 'no body after the HEAD responses');
  assert.equal(g.body.toString(), files['data.json']);
});

test('limits and malformed requests', async (t) => {
  await t.test('headers over 16 KiB -> 431', async () => {
    const r = await get('/healthz', `X-Big: ${'a'.repeat(17 * 1024)}\r\n`);
    assert.equal(r.status, 431);
    await r.conn.waitClosed();
  });
  await t.test('many small headers over 16 KiB in total -> 431', async () => {
    let h = '';
    for (let i = 0; h.length < 20 * 1024; i++) h += `X-H${i}: ${'v'.repeat(200)}\r\n`;
    const r = await get('/healthz', h);
    assert.equal(r.status, 431);
  });
  await t.test('headers just under the limit are fine', async () => {
    const r = await get('/healthz', `X-Big: ${'a'.repeat(15 * 1024)}\r\n`);
    assert.equal(r.status, 200);
  });
  await t.test('body over 1 MiB (Content-Length) -> 413', async () => {
    const c = await RawConn.connect(srv.port);
    await c.write(`POST /app.js HTTP/1.1\r\nHost: x\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n`);
    const r = await c.readResponse();
    assert.equal(r.status, 413);
    await c.waitClosed();
  });
  await t.test('chunked body over 1 MiB -> 413', async () => {
    const c = await RawConn.connect(srv.port);
    await c.write('POST /app.js HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
    const chunk = `${(64 * 1024).toString(16)}\r\n${'z'.repeat(64 * 1024)}\r\n`;
    for (let i = 0; i < 20 && !c.ended && c.buf.length === 0; i++) await c.write(chunk);
    const r = await c.readResponse();
    assert.equal(r.status, 413);
  });
  await t.test('URI over the limit -> 414', async () => {
    const r = await get(`/${'a'.repeat(20 * 1024)}`);
    assert.equal(r.status, 414);
  });
  await t.test('decoded path over 2 KiB -> 414', async () => {
    const r = await get(`/${'b'.repeat(3000)}`);
    assert.equal(r.status, 414);
  });
  await t.test('garbage instead of a request line -> 400', async () => {
    const r = await rawHttp(srv.port, 'THIS IS NOT HTTP\r\n\r\n');
    assert.equal(r.status, 400);
    await r.conn.waitClosed();
  });
  await t.test('bad percent-encoding -> 400', async () => {
    assert.equal((await get('/%zz')).status, 400);
  });
  await t.test('odd request targets', async () => {
    const cases = [
      ['GET http://example.com/app.js HTTP/1.1', 200], // absolute-form
      ['GET http://example.com HTTP/1.1', 400],
      ['GET app.js HTTP/1.1', 400],
      ['GET * HTTP/1.1', 404],
      ['CONNECT 127.0.0.1:80 HTTP/1.1', 400],
      ['GET /app.js#frag HTTP/1.1', 200],
    ];
    for (const [line, status] of cases) {
      const r = await rawHttp(srv.port, `${line}\r\nHost: x\r\n\r\n`);
      assert.equal(r.status, status, line);
    }
  });
  await t.test('ambiguous message length (request smuggling) -> 400', async () => {
    for (const h of ['Content-Length: 5\r\nTransfer-Encoding: chunked', 'Content-Length: 1\r\nContent-Length: 2']) {
      const r = await rawHttp(srv.port, `POST /app.js HTTP/1.1\r\nHost: x\r\n${h}\r\n\r\nhello`);
      assert.equal(r.status, 400, h);
      await r.conn.waitClosed();
    }
  });
  await t.test('a bad request after a good one on the same connection', async () => {
    const c = await RawConn.connect(srv.port);
    await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/9.9 x\r\n\r\n');
    assert.equal((await c.readResponse()).status, 200);
    assert.equal((await c.readResponse()).status, 400);
    await c.waitClosed();
  });
});

test('query cap: 1023 bytes are served, 1024 -> 414', async () => {
  // The cap is on the query alone (after '?', before '#'), far below the
  // 16 KiB header cap, so this is the check that answers.
  const ok = await get(`/app.js?${'q'.repeat(1023)}`);
  assert.equal(ok.status, 200);
  assert.equal(ok.body.toString(), files['app.js']);
  const okFrag = await get(`/app.js?${'q'.repeat(1023)}#${'f'.repeat(100)}`);
  assert.equal(okFrag.status, 200);
  const over = await get(`/app.js?${'q'.repeat(1024)}`);
  assert.equal(over.status, 414);
  assert.match(over.body.toString(), /URI too long/);
  await over.conn.waitClosed();
});

// RFC 9112: what the parser used to let through.
test('strict HTTP/1.1 framing: Host, version, line folding', async (t) => {
  const refused = async (req, status, reason) => {
    const r = await rawHttp(srv.port, req);
    assert.equal(r.status, status, JSON.stringify(req));
    if (reason) assert.match(r.body.toString(), reason);
    await r.conn.waitClosed();
  };
  await t.test('HTTP/1.1 without Host -> 400', async () => {
    await refused('GET /healthz HTTP/1.1\r\n\r\n', 400, /Host/);
    await refused('POST /app.js HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi', 400, /Host/);
  });
  await t.test('HTTP/1.0 without Host is still served', async () => {
    const r = await rawHttp(srv.port, 'GET /healthz HTTP/1.0\r\n\r\n');
    assert.equal(r.status, 200);
  });
  await t.test('two Host headers -> 400', async () => {
    await refused('GET /healthz HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n', 400, /Host/);
    await refused('GET /healthz HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n', 400, /Host/);
    await refused('GET /healthz HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n', 400, /Host/);
  });
  await t.test('unsupported HTTP versions -> 505', async () => {
    for (const v of ['9.9', '2.0', '3.0', '0.9']) {
      await refused(`GET /healthz HTTP/${v}\r\nHost: x\r\n\r\n`, 505, /version/);
    }
    // Version syntax that is not HTTP-version at all stays a plain 400.
    await refused('GET /healthz HTTP/10.1\r\nHost: x\r\n\r\n', 400);
  });
  await t.test('505 after a good request on the same connection', async () => {
    const c = await RawConn.connect(srv.port);
    await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/2.0\r\nHost: x\r\n\r\n');
    assert.equal((await c.readResponse()).status, 200);
    assert.equal((await c.readResponse()).status, 505);
    await c.waitClosed();
  });
  await t.test('obsolete line folding -> 400', async () => {
    await refused('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n b\r\n\r\n', 400, /fold/);
    await refused('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n\tb\r\n\r\n', 400, /fold/);
    // Sent a byte at a time, so the fold arrives in a read of its own.
    const c = await RawConn.connect(srv.port);
    await c.dribble(Buffer.from('GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n'));
    const r = await c.readResponse();
    assert.equal(r.status, 400);
    assert.match(r.body.toString(), /fold/);
  });
  await t.test('whitespace inside a header value is fine', async () => {
    assert.equal((await get('/healthz', 'X-Spaced: a \t b\r\n')).status, 200);
  });
});
