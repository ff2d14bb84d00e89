// http-bodies.test.mjs -- fixed responses carry exactly their text: the
// length comes from the string, never from a number typed beside it (the
// 426 body was announced as 52 bytes and is 53, so its newline was cut), and
// 405 answers are the JSON error object with Allow (PROTOCOL.md 12).
import assert from 'node:assert/strict';
import test from 'node:test';

import { RawConn } from './lib/raw.mjs';
import { startServer } from './lib/server.mjs';

const KEY = 'bodies-api-key-0123456789abcdef';
let srv;
test.before(async () => {
  srv = await startServer(null, ['--api-key', KEY]);
});
test.after(() => srv.stopChecked());

/** Sends the requests on one keep-alive connection and reads one response each. */
async function exchange(...requests) {
  const c = await RawConn.connect(srv.port);
  await c.write(Buffer.from(requests.join(''), 'latin1'));
  const out = [];
  for (let i = 0; i < requests.length; i++) out.push(await c.readResponse());
  c.destroy();
  return out;
}

test('426 without Upgrade: the whole text, newline included', async () => {
  const [r, next] = await exchange('GET /v1/echo HTTP/1.1\r\nHost: x\r\n\r\n', 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal(r.status, 426);
  assert.equal(r.body.toString(), '426 Upgrade Required: this endpoint speaks WebSocket\n');
  assert.equal(Number(r.headers['content-length']), r.body.length);
  assert.equal(next.status, 200, 'the next response on the connection starts where the body ended');
});

test('405 is the JSON error object with Allow, on every route that checks a method', async () => {
  const cases = [
    ['POST /healthz', 'GET, HEAD'],
    ['POST /metrics', 'GET'],
    ['GET /v1/rooms/board:1/ops', 'POST'],
    ['POST /v1/rooms/board:1/history', 'GET'],
    ['GET /v1/send', 'POST, OPTIONS'],
    ['POST /v1/poll', 'GET, OPTIONS'],
  ];
  const reqs = cases.map(([line]) => `${line} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nContent-Length: 0\r\n\r\n`);
  const res = await exchange(...reqs);
  res.forEach((r, i) => {
    const what = cases[i][0];
    assert.equal(r.status, 405, what);
    assert.equal(r.headers.allow, cases[i][1], what);
    assert.match(r.headers['content-type'], /^application\/json/, what);
    assert.equal(Number(r.headers['content-length']), r.body.length, what);
    const b = JSON.parse(r.body.toString());
    assert.equal(b.type, 'error', what);
    assert.equal(b.code, 'method_not_allowed', what);
    assert.equal(typeof b.message, 'string', what);
  });
});
