// sync-fallback.test.mjs -- the HTTP fallback transports (docs/PROTOCOL.md
// 2.4, with 3.4-3.5 and 8): upstream by POST /v1/send (hello answered with
// the welcome, every other body 202 with the replies downstream, the 4xx
// answers), downstream by SSE (GET /v1/sse: id = ordinal, one data line,
// replay from last or Last-Event-ID, `: ping`) and long-polling (GET
// /v1/poll: {"messages","last"}), one downstream per session, sessions moving
// between WebSocket and HTTP, replacement and bye seen as `close`, CORS, the
// presence `connected` flag with its 10 s detach grace, a slow SSE reader
// (close 1013), and shutdown (close 1001).
//
// Node has no EventSource: SSE is read from the fetch body with the small
// parser below (SseParser, SseStream). Every request goes through fetch with
// an AbortController, so a test can drop a stream or a pending poll as a
// browser closing a tab would. The 10 s grace is waited for once: the tests
// that need it run side by side, each on its own server.
import assert from 'node:assert/strict';
import test from 'node:test';

import { RawConn, parseHead } from './lib/raw.mjs';
import { WAIT_MS, scale, sleep, waitUntil, withTimeout } from './lib/server.mjs';
import { CLUSTER, SyncClient, closeClients, craftToken, nowS, sessionHome, startSyncServer, token } from './lib/sync.mjs';

const MAX_MESSAGE = 2048;
const GRACE_MS = 10000; // detach grace of HTTP sessions (2.4), fixed in the protocol

let srv; // --auth-secret, --ping-interval 300ms, --max-message-size 2K
test.before(async () => {
  srv = await startSyncServer(null, ['--ping-interval', '300ms', '--max-message-size', `${MAX_MESSAGE}`,
    '--rate', '100000', '--burst', '100000']);
});
test.after(() => srv.stopChecked());

let devN = 0;
const dev = (p = 'dev') => `${p}-${++devN}`;
let cidN = 0;
const cid = () => `fb.${process.pid}.${++cidN}`;
const setOp = (room, item, fields) => ({ type: 'op', room, cid: cid(), op: { kind: 'set', item, fields } });
const presenceOf = (room, user, device, event) => (m) => m.type === 'presence' && m.room === room &&
  m.user === user && m.device === device && (!event || m.event === event);

// ---- HTTP plumbing ----------------------------------------------------------

/** Every fetch still running; each top-level test aborts them when it ends. */
const live = new Set();
function abortLive() {
  for (const ac of live) ac.abort();
  live.clear();
}
test.after(abortLive);
/** A top-level test that drops its leftover streams and polls at its end. */
function ftest(name, opts, fn) {
  if (typeof opts === 'function') [opts, fn] = [{}, opts];
  return test(name, opts, (t) => {
    t.after(abortLive);
    return fn(t);
  });
}

/**
 * A request that may stay pending (a long-poll): {result, abort(), settled}.
 * result resolves {status, headers, text, body} (body: parsed JSON or
 * undefined); it never causes an unhandled rejection on its own.
 */
function request(url, method, path, { headers = {}, body } = {}) {
  const ac = new AbortController();
  live.add(ac);
  const h = { settled: false, abort: () => ac.abort() };
  const init = { method, headers: { ...headers }, signal: ac.signal };
  if (body !== undefined) {
    init.body = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    init.headers['Content-Type'] ??= 'application/json';
  }
  h.result = (async () => {
    try {
      const res = await fetch(url + path, init);
      const text = await res.text();
      let json;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: res.status, headers: res.headers, text, body: json };
    } finally {
      h.settled = true;
      live.delete(ac);
    }
  })();
  h.result.catch(() => {});
  return h;
}

/** A request that must complete promptly. */
const call = (url, method, path, opts) => withTimeout(request(url, method, path, opts).result, WAIT_MS, `${method} ${path}`);

/** POST /v1/send with a body (object, array or raw string) and an optional session. */
const post = (url, body, session, headers = {}) =>
  call(url, 'POST', '/v1/send', { body, headers: session === undefined ? headers : { 'Wsync-Session': session, ...headers } });

/** Asserts an error answer: status, JSON body {type:"error", code, message}. */
function assertError(r, status, code, what) {
  const show = `${what}: ${r.status} ${r.text.slice(0, 300)}`;
  assert.equal(r.status, status, show);
  assert.match(r.headers.get('content-type') || '', /^application\/json/, show);
  assert.equal(r.body?.type, 'error', show);
  assert.equal(r.body.code, code, show);
  assert.equal(typeof r.body.message, 'string', show);
}

/** The access-control-* headers of a response, as [name, value] pairs. */
const corsHeaders = (r) => [...r.headers].filter(([k]) => k.toLowerCase().startsWith('access-control-'));

/** A comma-separated header value as a set of lower-cased tokens. */
const tokens = (v) => new Set((v || '').split(',').map((x) => x.trim().toLowerCase()).filter(Boolean));

/**
 * The event stream format (WHATWG HTML 9.2.6), as far as wsync uses it:
 * events: {id, event, data, dataLines, json} in arrival order (event
 * defaults to "message"; json is the parsed data or undefined); comments:
 * the text after ':' of comment lines.
 */
class SseParser {
  constructor() {
    this.events = [];
    this.comments = [];
    this._buf = '';
    this._cur = null;
  }

  feed(text) {
    this._buf += text;
    let nl;
    while ((nl = this._buf.indexOf('\n')) >= 0) {
      let line = this._buf.slice(0, nl);
      this._buf = this._buf.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      this._line(line);
    }
  }

  _line(line) {
    if (line === '') {
      const c = this._cur;
      this._cur = null;
      if (!c) return;
      const data = c.data.join('\n');
      let json;
      try {
        json = JSON.parse(data);
      } catch {
        json = undefined;
      }
      this.events.push({ id: c.id, event: c.event ?? 'message', data, dataLines: c.data.length, json });
      return;
    }
    if (line.startsWith(':')) {
      this.comments.push(line.slice(1));
      return;
    }
    const i = line.indexOf(':');
    const name = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    this._cur ??= { data: [] };
    if (name === 'data') this._cur.data.push(value);
    else if (name === 'id') this._cur.id = value;
    else if (name === 'event') this._cur.event = value;
  }
}

/**
 * A server-sent event stream read from fetch: events and comments as parsed
 * by SseParser; done: true once the server ended the stream. A response
 * other than 200 is read whole into text and body (the parsed JSON).
 */
class SseStream {
  static async open(url, path, headers = {}) {
    const ac = new AbortController();
    live.add(ac);
    const res = await withTimeout(fetch(url + path, { headers, signal: ac.signal }), WAIT_MS, `GET ${path}`);
    const s = new SseStream(res, ac, path);
    if (res.status !== 200) {
      s.text = await res.text();
      try {
        s.body = JSON.parse(s.text);
      } catch {
        s.body = undefined;
      }
      s.done = true;
      live.delete(ac);
    } else {
      s._pump();
    }
    return s;
  }

  constructor(res, ac, path) {
    this.res = res;
    this.status = res.status;
    this.headers = res.headers;
    this.ac = ac;
    this.path = path;
    this.parser = new SseParser();
    this.done = false;
    this.error = null;
  }

  get events() {
    return this.parser.events;
  }

  get comments() {
    return this.parser.comments;
  }

  async _pump() {
    const reader = this.res.body.getReader();
    const dec = new TextDecoder();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        this.parser.feed(dec.decode(value, { stream: true }));
      }
      this.parser.feed(dec.decode());
    } catch (e) {
      this.error = e;
    } finally {
      this.done = true;
      live.delete(this.ac);
    }
  }

  /** The message events (not `close`). */
  get messages() {
    return this.events.filter((e) => e.event === 'message');
  }

  /** Resolves once at least n message events arrived; returns them all. */
  async waitMessages(n, ms = WAIT_MS) {
    await waitUntil(() => this.messages.length >= n || this.done, `${this.path}: ${n} events`, ms);
    assert.ok(this.messages.length >= n,
      `${this.path}: ${n} events expected, stream ended after ${JSON.stringify(this.events).slice(0, 1000)}`);
    return this.messages;
  }

  /** Resolves the data of the `close` event, after checking that the stream ended with it. */
  async closed(ms = WAIT_MS) {
    await waitUntil(() => this.done || this.events.some((e) => e.event === 'close'), `${this.path}: event close`, ms);
    await waitUntil(() => this.done, `${this.path}: the end of the stream after event close`, ms);
    return closeEventOf(this.events, this.path);
  }

  abort() {
    this.ac.abort();
  }
}

/** Checks that events end with one `close` event of one JSON data line; returns its data. */
function closeEventOf(events, what) {
  const ev = events.find((e) => e.event === 'close');
  const tail = events.slice(-3).map((e) => ({ id: e.id, event: e.event, data: e.data.length > 120 ? `${e.data.slice(0, 120)}... (${e.data.length} bytes)` : e.data }));
  assert.ok(ev, `${what}: the stream ended without a close event; last events: ${JSON.stringify(tail)}`);
  assert.equal(ev.dataLines, 1, 'the close event has one data line');
  assert.ok(ev.json && typeof ev.json === 'object', `close data is JSON: ${ev.data}`);
  assert.equal(typeof ev.json.code, 'number', `close code: ${ev.data}`);
  assert.equal(typeof ev.json.reason, 'string', `close reason: ${ev.data}`);
  assert.equal(events.at(-1), ev, 'the close event is the last one');
  return ev.json;
}

/** An HTTP session: the welcome of a hello by POST and the session token. */
class HttpSession {
  static async hello(url, hello) {
    const r = await post(url, { type: 'hello', v: 1, ...hello });
    assert.equal(r.status, 200, `hello by POST: ${r.status} ${r.text.slice(0, 300)}`);
    assert.equal(r.body?.type, 'welcome', r.text.slice(0, 300));
    return new HttpSession(url, r.body);
  }

  /** A new session for (user, device) with a fresh token. */
  static open(url, user, device = dev(user)) {
    return HttpSession.hello(url, { token: token(user), device });
  }

  constructor(url, welcome) {
    this.url = url;
    this.welcome = welcome;
    this.session = welcome.session;
    this.user = welcome.user;
    this.device = welcome.device;
  }

  /** POST /v1/send with this session's header; asserts 202. */
  async send(body) {
    const r = await post(this.url, body, this.session);
    assert.equal(r.status, 202, `POST ${JSON.stringify(body).slice(0, 200)}: ${r.status} ${r.text.slice(0, 300)}`);
    assert.equal(r.text, '', 'a 202 has an empty body');
    return r;
  }

  /** GET /v1/poll (pending until answered): a request handle. */
  poll(last, headers = {}) {
    const q = last === undefined ? '' : `&last=${last}`;
    return request(this.url, 'GET', `/v1/poll?session=${encodeURIComponent(this.session)}${q}`, { headers });
  }

  /** A poll that must be answered promptly with 200; resolves the body. */
  async pollNow(last) {
    const r = await withTimeout(this.poll(last).result, WAIT_MS, `poll last=${last}`);
    assert.equal(r.status, 200, `poll last=${last}: ${r.status} ${r.text.slice(0, 300)}`);
    return r.body;
  }

  /** GET /v1/sse. */
  sse(last, headers = {}) {
    const q = last === undefined ? '' : `&last=${last}`;
    return SseStream.open(this.url, `/v1/sse?session=${encodeURIComponent(this.session)}${q}`, headers);
  }

  /** Opens an SSE stream and asserts 200. */
  async stream(last, headers) {
    const s = await this.sse(last, headers);
    assert.equal(s.status, 200, `sse last=${last}: ${s.status} ${s.text}`);
    return s;
  }
}

/** Records when each message of a SyncClient arrived: a map message -> Date.now(). */
function stampArrivals(c) {
  const at = new WeakMap();
  c.ws.on('message', () => at.set(c.log.at(-1), Date.now())); // runs after the client's own listener
  return at;
}

/** Checks a poll answer: messages numbered last+1..M; returns the body. */
function assertPoll(body, last, types) {
  assert.ok(body && Array.isArray(body.messages), `a poll answer: ${JSON.stringify(body).slice(0, 300)}`);
  assert.deepEqual(body.messages.map((m) => m.type), types, JSON.stringify(body).slice(0, 1500));
  assert.equal(body.last, last + types.length, `last = ${last} + ${types.length}: ${JSON.stringify(body).slice(0, 500)}`);
  return body;
}

/** Asserts that a request is still pending after a round trip with the server and a short pause. */
async function assertPending(h, what, url = srv.url) {
  await call(url, 'GET', '/healthz');
  await sleep(scale(150, 400));
  assert.equal(h.settled, false, `${what} is still pending`);
}

// ---- POST /v1/send ---------------------------------------------------------

ftest('POST /v1/send: hello', async (t) => {
  await t.test('a hello is answered 200 with the welcome object as the body', async () => {
    const device = dev('laptop');
    const r = await post(srv.url, { type: 'hello', v: 1, id: 'h1', token: token('alice'), device });
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers.get('content-type') || '', /^application\/json/);
    const w = r.body;
    assert.equal(w.type, 'welcome');
    assert.equal(w.re, 'h1');
    assert.equal(w.v, 1);
    assert.equal(w.user, 'alice');
    assert.equal(w.device, device);
    assert.equal(w.resumed, false);
    assert.match(w.session, /^[A-Za-z0-9._-]{1,128}$/);
    assert.equal(w.limits.max_message, MAX_MESSAGE);
    // the session works over HTTP at once
    const h = new HttpSession(srv.url, w);
    await h.send({ type: 'ping', id: 1 });
    assertPoll(await h.pollNow(0), 0, ['pong']);
  });

  await t.test('a refused token is 401 with the error: unauthorized, token_invalid, token_expired', async () => {
    const device = dev();
    assertError(await post(srv.url, { type: 'hello', device }), 401, 'unauthorized', 'no token, no user');
    assertError(await post(srv.url, { type: 'hello', device, user: 'alice' }), 401, 'unauthorized', 'user without demo mode');
    assertError(await post(srv.url, { type: 'hello', device, token: craftToken({ sub: 'alice', exp: nowS() + 60 }, { secret: 'wrong' }) }),
      401, 'token_invalid', 'bad signature');
    assertError(await post(srv.url, { type: 'hello', device, token: 'not-a-jwt' }), 401, 'token_invalid', 'not a JWT');
    assertError(await post(srv.url, { type: 'hello', device, token: craftToken({ sub: 'alice', exp: nowS() - 10 }) }),
      401, 'token_expired', 'expired');
    const e = await post(srv.url, { type: 'hello', id: 9, device, token: 'x.y.z' });
    assertError(e, 401, 'token_invalid', 'with an id');
    assert.equal(e.body.re, 9, 'the error carries re');
  });

  await t.test('any other refusal is 400: bad device, missing device, version, session of the wrong type', async () => {
    assertError(await post(srv.url, { type: 'hello', token: token('alice'), device: 'bad device!' }), 400, 'bad_request', 'bad device');
    assertError(await post(srv.url, { type: 'hello', token: token('alice'), device: 'x'.repeat(65) }), 400, 'bad_request', 'long device');
    assertError(await post(srv.url, { type: 'hello', token: token('alice') }), 400, 'bad_request', 'no device');
    assertError(await post(srv.url, { type: 'hello', v: 2, token: token('alice'), device: dev() }), 400, 'unsupported_version', 'v 2');
    assertError(await post(srv.url, { type: 'hello', token: token('alice'), device: dev(), session: 5 }), 400, 'bad_request', 'session not a string');
  });
});

ftest('POST /v1/send: bodies and sessions', async (t) => {
  const h = await HttpSession.open(srv.url, 'alice');

  await t.test('a hello inside an array is 400 bad_request', async () => {
    const hello = { type: 'hello', token: token('alice'), device: dev() };
    assertError(await post(srv.url, [hello], h.session), 400, 'bad_request', '[hello]');
    assertError(await post(srv.url, [{ type: 'ping' }, hello], h.session), 400, 'bad_request', '[ping, hello]');
  });

  await t.test('a body that is not JSON, or not an object or array, is 400 bad_json', async () => {
    for (const body of ['{"type":', 'hello', '42', '"ping"', 'true', 'null', '']) {
      assertError(await post(srv.url, body, h.session), 400, 'bad_json', `body ${JSON.stringify(body)}`);
    }
    assertError(await post(srv.url, '{"type":"ping","type":"ping"}', h.session), 400, 'bad_json', 'duplicate member');
  });

  await t.test('nothing of the refused bodies reached the session', async () => {
    await h.send({ type: 'ping', id: 'after' });
    const b = await h.pollNow(0);
    assertPoll(b, 0, ['pong']);
    assert.equal(b.messages[0].re, 'after');
  });

  await t.test('a body of --max-message-size bytes is accepted, one more byte is 413', async () => {
    const fill = (n) => {
      const base = JSON.stringify({ type: 'ping', id: 'big', pad: '' });
      return JSON.stringify({ type: 'ping', id: 'big', pad: 'x'.repeat(n - base.length) });
    };
    assert.equal(Buffer.byteLength(fill(MAX_MESSAGE)), MAX_MESSAGE);
    const ok = await post(srv.url, fill(MAX_MESSAGE), h.session);
    assert.equal(ok.status, 202, ok.text);
    const big = await post(srv.url, fill(MAX_MESSAGE + 1), h.session);
    assert.equal(big.status, 413, big.text);
    const hello = JSON.stringify({ type: 'hello', token: token('alice'), device: dev(), pad: 'x'.repeat(MAX_MESSAGE) });
    assert.equal((await post(srv.url, hello)).status, 413, 'a hello is limited as well');
    // only the first one arrived
    const b = await h.pollNow(1);
    assertPoll(b, 1, ['pong']);
  });

  await t.test('a missing or unknown Wsync-Session is 410 session_expired', async () => {
    assertError(await post(srv.url, { type: 'ping' }), 410, 'session_expired', 'no header');
    assertError(await post(srv.url, { type: 'ping' }, 's_nosuchsession0000000000'), 410, 'session_expired', 'unknown');
    assertError(await post(srv.url, { type: 'ping' }, ''), 410, 'session_expired', 'empty');
    assertError(await post(srv.url, [{ type: 'ping' }], `${h.session}x`), 410, 'session_expired', 'array, unknown');
  });

  await t.test('an array is processed in order; an element that is not an object gets bad_json downstream', async () => {
    await h.send([{ type: 'ping', id: 'p1' }, 7, { type: 'ping', id: 'p2' }, 'x', { type: 'nope', id: 'p3' }]);
    const b = await h.pollNow(2);
    assertPoll(b, 2, ['pong', 'error', 'pong', 'error', 'error']);
    assert.deepEqual(b.messages.map((m) => m.re ?? m.code), ['p1', 'bad_json', 'p2', 'bad_json', 'p3']);
    assert.equal(b.messages[4].code, 'unknown_type');
  });

  await t.test('GET /v1/send is 405', async () => {
    const r = await call(srv.url, 'GET', '/v1/send', { headers: { 'Wsync-Session': h.session } });
    assert.equal(r.status, 405, r.text);
    const p = await call(srv.url, 'PUT', '/v1/send', { body: { type: 'ping' }, headers: { 'Wsync-Session': h.session } });
    assert.equal(p.status, 405, p.text);
  });
});

ftest('POST /v1/send from a session attached to a WebSocket: the replies travel on the WebSocket', async (t) => {
  const w = await SyncClient.connect(srv.url, { token: token('carol'), device: dev('tab') });
  t.after(() => closeClients(w));
  const room = 'board:fb-wspost';
  const r = await post(srv.url, [{ type: 'join', id: 'j', room }, { type: 'ping', id: 'p' }], w.welcome.session);
  assert.equal(r.status, 202, r.text);
  const joined = await w.waitFor((m) => m.re === 'j', 'the joined');
  assert.equal(joined.type, 'joined');
  const pong = await w.waitFor((m) => m.re === 'p', 'the pong');
  assert.equal(pong.type, 'pong');
  assert.deepEqual(w.afterWelcome.map((m) => m.type), ['joined', 'pong'], 'in order');
  assert.equal(w.open, true, 'the WebSocket stays the session\'s transport');
});

ftest('CORS with --allowed-origins', async (t) => {
  const origin = 'https://app.example';
  const c = await startSyncServer(t, ['--allowed-origins', `${origin},https://other.example`]);
  await t.test('OPTIONS from a listed origin: 204 allowing GET, POST and the headers', async () => {
    for (const path of ['/v1/send', '/v1/sse?session=x&last=0', '/v1/poll?session=x&last=0']) {
      const r = await call(c.url, 'OPTIONS', path, {
        headers: { Origin: origin, 'Access-Control-Request-Method': path === '/v1/send' ? 'POST' : 'GET',
          'Access-Control-Request-Headers': 'content-type, wsync-session, last-event-id' },
      });
      assert.equal(r.status, 204, `${path}: ${r.status} ${r.text}`);
      assert.equal(r.headers.get('access-control-allow-origin'), origin, path);
      assert.ok(tokens(r.headers.get('vary')).has('origin'), `${path}: Vary: Origin`);
      const methods = tokens(r.headers.get('access-control-allow-methods'));
      assert.ok(methods.has('get') && methods.has('post'), `${path}: methods ${[...methods]}`);
      const hdrs = tokens(r.headers.get('access-control-allow-headers'));
      for (const hn of ['content-type', 'wsync-session', 'last-event-id']) assert.ok(hdrs.has(hn), `${path}: allows ${hn}: ${[...hdrs]}`);
    }
  });

  await t.test('requests from a listed origin get Access-Control-Allow-Origin with that origin', async () => {
    const other = 'https://other.example';
    const r = await post(c.url, { type: 'hello', token: token('alice'), device: dev() }, undefined, { Origin: other });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('access-control-allow-origin'), other);
    assert.ok(tokens(r.headers.get('vary')).has('origin'));
    const s = r.body.session;
    const p = await post(c.url, { type: 'ping', id: 1 }, s, { Origin: origin });
    assert.equal(p.status, 202);
    assert.equal(p.headers.get('access-control-allow-origin'), origin);
    const poll = await call(c.url, 'GET', `/v1/poll?session=${s}&last=0`, { headers: { Origin: origin } });
    assert.equal(poll.status, 200, poll.text);
    assert.equal(poll.headers.get('access-control-allow-origin'), origin, 'on a poll answer');
    assert.deepEqual(poll.body.messages.map((m) => m.type), ['pong']);
    const sse = await SseStream.open(c.url, `/v1/sse?session=${s}&last=1`, { Origin: origin });
    assert.equal(sse.status, 200);
    assert.equal(sse.headers.get('access-control-allow-origin'), origin, 'on an SSE stream');
    sse.abort();
  });

  await t.test('an unlisted origin gets 403 on every endpoint, preflight included', async () => {
    const bad = { Origin: 'https://evil.example' };
    const opt = await call(c.url, 'OPTIONS', '/v1/send', { headers: { ...bad, 'Access-Control-Request-Method': 'POST' } });
    assert.equal(opt.status, 403, opt.text);
    assert.equal(opt.headers.get('access-control-allow-origin'), null);
    const hello = await post(c.url, { type: 'hello', token: token('alice'), device: dev() }, undefined, bad);
    assert.equal(hello.status, 403, hello.text);
    assert.equal(hello.headers.get('access-control-allow-origin'), null);
    const h = await HttpSession.open(c.url, 'alice');
    assert.equal((await post(c.url, { type: 'ping' }, h.session, bad)).status, 403);
    assert.equal((await call(c.url, 'GET', `/v1/poll?session=${h.session}&last=0`, { headers: bad })).status, 403);
    const sse = await SseStream.open(c.url, `/v1/sse?session=${h.session}&last=0`, bad);
    assert.equal(sse.status, 403);
  });
});

ftest('without --allowed-origins no CORS header is sent', async () => {
  const origin = { Origin: 'https://app.example' };
  const hello = await post(srv.url, { type: 'hello', token: token('alice'), device: dev() }, undefined, origin);
  assert.equal(hello.status, 200, hello.text);
  const s = hello.body.session;
  const answers = {
    hello,
    send: await post(srv.url, { type: 'ping', id: 1 }, s, origin),
    poll: await call(srv.url, 'GET', `/v1/poll?session=${s}&last=0`, { headers: origin }),
    error: await post(srv.url, { type: 'ping' }, undefined, origin),
    options: await call(srv.url, 'OPTIONS', '/v1/send', { headers: { ...origin, 'Access-Control-Request-Method': 'POST' } }),
  };
  const sse = await SseStream.open(srv.url, `/v1/sse?session=${s}&last=1`, origin);
  assert.equal(sse.status, 200);
  sse.abort();
  for (const [what, r] of Object.entries({ ...answers, sse })) {
    assert.deepEqual(corsHeaders(r), [], `${what} (${r.status}): no access-control-* header`);
  }
});

// ---- long-polling -------------------------------------------------------------

ftest('poll: ordered answers with last, waiting for a broadcast, a lost answer replayed', async (t) => {
  const room = 'board:fb-poll';
  const w = await SyncClient.connect(srv.url, { token: token('bob'), device: dev('ws') });
  t.after(() => closeClients(w));
  await w.join(room);
  const h = await HttpSession.open(srv.url, 'alice');
  let first;

  await t.test('join and op by POST are 202; GET /v1/poll last=0 returns joined, ack, op in order', async () => {
    await h.send({ type: 'join', id: 'j', room });
    await h.send({ ...setOp(room, 'card-1', { t: 1 }), id: 'o' });
    const entry = await w.entry(room, 1); // committed and broadcast: the session's outbox holds ack and op
    // ... on one node. In a cluster the op is decided by the room's owner
    // (CLUSTER.md), and the session's node may hear of it after w's did:
    // polled again (last=0 confirms nothing) until both are there.
    let r;
    await waitUntil(async () => {
      r = await withTimeout(h.poll(0).result, WAIT_MS, 'poll 0');
      return r.status !== 200 || !CLUSTER || r.body.messages.length >= 3;
    }, 'the ack and the op in the session\'s outbox');
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers.get('content-type') || '', /^application\/json/);
    assert.match(r.headers.get('cache-control') || '', /no-store/);
    first = assertPoll(r.body, 0, ['joined', 'ack', 'op']);
    const [joined, ack, op] = first.messages;
    assert.equal(joined.re, 'j');
    assert.equal(joined.room, room);
    assert.equal(ack.re, 'o');
    assert.equal(ack.seq, 1);
    assert.deepEqual(op, entry, 'the broadcast as every member gets it');
    assert.equal(first.last, 3);
  });

  await t.test('polling again with the same last (the answer was lost) returns the same messages', async () => {
    assert.deepEqual(await h.pollNow(0), first);
  });

  let second;
  await t.test('a poll with last=M waits, and is answered by a write of another client', async () => {
    const p = h.poll(3);
    await assertPending(p, 'the poll with nothing to say');
    await w.set(room, cid(), 'card-2', { by: 'bob' });
    const entry = await w.entry(room, 2);
    const r = await withTimeout(p.result, WAIT_MS, 'the waiting poll');
    assert.equal(r.status, 200, r.text);
    second = assertPoll(r.body, 3, ['op']);
    assert.deepEqual(second.messages[0], entry);
  });

  await t.test('a lost answer is replayed again; messages up to a polled last are gone (410)', async () => {
    assert.deepEqual(await h.pollNow(3), second);
    const p = h.poll(4); // confirms up to 4
    await assertPending(p, 'poll 4');
    p.abort();
    const r = await call(srv.url, 'GET', `/v1/poll?session=${h.session}&last=0`);
    assertError(r, 410, 'session_expired', 'last=0 after last=4 was polled');
  });

  await t.test('a last beyond the last message sent is 400 bad_request', async () => {
    assertError(await withTimeout(h.poll(5).result, WAIT_MS, 'poll 5'), 400, 'bad_request', 'last=5 of 4');
    assertError(await withTimeout(h.poll(1000).result, WAIT_MS, 'poll 1000'), 400, 'bad_request', 'last=1000');
  });

  await t.test('an unknown session is 410 session_expired', async () => {
    assertError(await call(srv.url, 'GET', '/v1/poll?session=s_nosuch&last=0'), 410, 'session_expired', 'unknown');
    assertError(await call(srv.url, 'GET', '/v1/poll?last=0'), 410, 'session_expired', 'no session');
  });

  await t.test('messages produced by one POST are gathered into one answer', async () => {
    const p = h.poll(4);
    await assertPending(p, 'poll 4');
    await h.send([{ type: 'ping', id: 'a' }, { type: 'ping', id: 'b' }, { type: 'ping', id: 'c' }]);
    const r = await withTimeout(p.result, WAIT_MS, 'the poll');
    assertPoll(r.body, 4, ['pong', 'pong', 'pong']);
  });
});

ftest('poll: a missing or malformed last counts as 0', async () => {
  const h = await HttpSession.open(srv.url, 'alice');
  await h.send([{ type: 'ping', id: 1 }, { type: 'ping', id: 2 }]);
  for (const q of ['', '&last=', '&last=abc', '&last=-1']) {
    const r = await call(srv.url, 'GET', `/v1/poll?session=${h.session}${q}`);
    assert.equal(r.status, 200, `${q}: ${r.text}`);
    assertPoll(r.body, 0, ['pong', 'pong']);
  }
});

ftest('poll: answers keep the connection alive, whether messages were waiting or came later', async () => {
  const h = await HttpSession.open(srv.url, 'alice');
  await h.send([{ type: 'ping', id: 1 }, { type: 'ping', id: 2 }]);
  const raw = await RawConn.connect(srv.port);
  const get = (last) => raw.write(`GET /v1/poll?session=${h.session}&last=${last} HTTP/1.1\r\nHost: x\r\n\r\n`);
  // answered at once (messages already waiting), then on the same connection
  // one that waits for a message
  await get(0);
  const a = await raw.readResponse();
  assert.equal(a.status, 200);
  assertPoll(JSON.parse(a.body.toString()), 0, ['pong', 'pong']);
  assert.notEqual(a.headers.connection, 'close');
  await get(2);
  await sleep(scale(100));
  assert.equal(raw.ended, false, 'the connection is still open after the first answer');
  await h.send({ type: 'ping', id: 3 });
  const b = await raw.readResponse();
  assert.equal(b.status, 200);
  assertPoll(JSON.parse(b.body.toString()), 2, ['pong']);
  // and a third request still finds it open
  await raw.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal((await raw.readResponse()).status, 200);
  raw.destroy();
});

ftest('poll: with --poll-timeout 500ms an idle poll is answered {"messages":[],"last":M}', async (t) => {
  const s = await startSyncServer(t, ['--poll-timeout', '500ms']);
  const h = await HttpSession.open(s.url, 'alice');
  await h.send({ type: 'ping', id: 1 });
  assertPoll(await h.pollNow(0), 0, ['pong']);
  const t0 = Date.now();
  const r = await withTimeout(h.poll(1).result, WAIT_MS, 'the idle poll');
  const took = Date.now() - t0;
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body, { messages: [], last: 1 });
  assert.match(r.headers.get('cache-control') || '', /no-store/);
  assert.ok(took >= 400, `answered after ${took} ms, not before the timeout`);
  // and the session goes on
  await h.send({ type: 'ping', id: 2 });
  assertPoll(await h.pollNow(1), 1, ['pong']);
});

// ---- SSE ----------------------------------------------------------------------

ftest('SSE: events, replay, Last-Event-ID, live events, ping', async (t) => {
  const room = 'board:fb-sse';
  const w = await SyncClient.connect(srv.url, { token: token('bob'), device: dev('ws') });
  t.after(() => closeClients(w));
  await w.join(room);
  const h = await HttpSession.open(srv.url, 'alice');
  await h.send([{ type: 'join', id: 'j', room }, { ...setOp(room, 'c', { n: 1 }), id: 'o' }]);
  const e1 = await w.entry(room, 1);
  let s1;
  let e2;

  await t.test('200 text/event-stream, Cache-Control: no-store, no Content-Length', async () => {
    s1 = await h.stream(0);
    assert.match(s1.headers.get('content-type') || '', /^text\/event-stream/);
    assert.match(s1.headers.get('cache-control') || '', /no-store/);
    assert.equal(s1.headers.get('content-length'), null);
  });

  await t.test('every message is one event: id = ordinal, one data line of compact JSON', async () => {
    const ev = await s1.waitMessages(3);
    assert.deepEqual(ev.map((e) => e.id), ['1', '2', '3']);
    assert.deepEqual(ev.map((e) => e.json?.type), ['joined', 'ack', 'op']);
    for (const e of ev) {
      assert.equal(e.dataLines, 1, `one data line: ${e.data}`);
      assert.equal(e.data, JSON.stringify(e.json), 'compact JSON');
    }
    assert.equal(ev[0].json.re, 'j');
    assert.equal(ev[1].json.re, 'o');
    assert.deepEqual(ev[2].json, e1);
  });

  await t.test('live: a write by another client arrives as the next event', async () => {
    await w.set(room, cid(), 'c', { n: 2 });
    e2 = await w.entry(room, 2);
    const ev = await s1.waitMessages(4);
    assert.equal(ev[3].id, '4');
    assert.deepEqual(ev[3].json, e2);
  });

  await t.test('a silent stream gets a `: ping` comment', async () => {
    await waitUntil(() => s1.comments.includes(' ping') || s1.done, 'a : ping comment');
    assert.ok(s1.comments.includes(' ping'), `comments: ${JSON.stringify(s1.comments)}`);
    assert.equal(s1.messages.length, 4, 'a ping is no event');
  });

  await t.test('a stream opened with last=2 replays the messages after 2', async () => {
    const s2 = await h.stream(2);
    const ev = await s2.waitMessages(2);
    assert.deepEqual(ev.map((e) => e.id), ['3', '4']);
    assert.deepEqual(ev.map((e) => e.data), s1.messages.slice(2).map((e) => e.data), 'the same bytes');
    const cl = await s1.closed();
    assert.equal(cl.code, 4001, 'the first stream was replaced');
    s2.abort();
  });

  await t.test('Last-Event-ID wins over the query last', async () => {
    const s3 = await h.stream(2, { 'Last-Event-ID': '3' });
    await w.set(room, cid(), 'c', { n: 3 });
    const e3 = await w.entry(room, 3);
    const ev = await s3.waitMessages(2);
    assert.deepEqual(ev.map((e) => e.id), ['4', '5'], 'replay from 3, not from 2');
    assert.deepEqual(ev[0].json, e2);
    assert.deepEqual(ev[1].json, e3);
    s3.abort();
  });

  await t.test('an unknown session is 410; a last beyond is 400', async () => {
    const u = await SseStream.open(srv.url, '/v1/sse?session=s_nosuch&last=0');
    assert.equal(u.status, 410, u.text);
    assert.equal(u.body?.code, 'session_expired');
    const b = await h.sse(99);
    assert.equal(b.status, 400, b.text);
    assert.equal(b.body?.code, 'bad_request');
  });
});

// ---- one downstream per session ----------------------------------------------

ftest('one downstream per session', async (t) => {
  const h = await HttpSession.open(srv.url, 'alice');
  await h.send({ type: 'ping', id: 1 }); // ordinal 1
  let b;
  let c;

  await t.test('a second SSE stream ends the first with event: close 4001', async () => {
    const a = await h.stream(0);
    await a.waitMessages(1);
    b = await h.stream(1);
    const cl = await a.closed();
    assert.equal(cl.code, 4001);
    await h.send({ type: 'ping', id: 2 }); // ordinal 2, on the new stream
    const ev = await b.waitMessages(1);
    assert.equal(ev[0].id, '2');
    assert.equal(ev[0].json.re, 2);
    assert.equal(a.messages.length, 1, 'nothing more on the old stream');
  });

  await t.test('a poll opened while an SSE stream is open ends the stream with close 4001', async () => {
    const p = h.poll(2);
    const cl = await b.closed();
    assert.equal(cl.code, 4001);
    assert.equal(p.settled, false, 'the poll waits');
    await h.send({ type: 'ping', id: 3 });
    const r = await withTimeout(p.result, WAIT_MS, 'the poll');
    assertPoll(r.body, 2, ['pong']);
  });

  await t.test('a pending poll is answered with an empty list when an SSE stream opens', async () => {
    const p = h.poll(3);
    await assertPending(p, 'the poll');
    c = await h.stream(3);
    const r = await withTimeout(p.result, WAIT_MS, 'the displaced poll');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.messages, [], JSON.stringify(r.body));
    assert.equal(r.body.last, 3);
    await h.send({ type: 'ping', id: 4 });
    assert.equal((await c.waitMessages(1))[0].id, '4', 'the stream took over');
  });

  await t.test('a pending poll is answered with an empty list when another poll opens', async () => {
    const p1 = h.poll(4);
    assert.equal((await c.closed()).code, 4001);
    await assertPending(p1, 'the first poll');
    const p2 = h.poll(4);
    const r = await withTimeout(p1.result, WAIT_MS, 'the displaced poll');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.messages, []);
    assert.equal(r.body.last, 4);
    await h.send({ type: 'ping', id: 5 });
    const r2 = await withTimeout(p2.result, WAIT_MS, 'the second poll');
    assertPoll(r2.body, 4, ['pong']);
  });
});

// ---- moving between transports ------------------------------------------------

ftest('a session started over WebSocket resumes over HTTP', async (t) => {
  const room = 'board:fb-ws2http';
  const x = await SyncClient.connect(srv.url, { token: token('bob'), device: dev('x') });
  const device = dev('laptop');
  const w = await SyncClient.connect(srv.url, { token: token('alice'), device });
  t.after(() => closeClients(x, w));
  await x.join(room);
  await w.join(room); // 1
  await w.set(room, cid(), 'k', { v: 1 }); // ack 2
  await w.entry(room, 1); // op 3
  await x.set(room, cid(), 'k', { v: 2 });
  await w.entry(room, 2); // op 4
  await w.ping(); // pong 5
  assert.equal(w.received, 5);

  // The client processed up to ordinal 2 only, then moved to HTTP.
  const r = await post(srv.url, { type: 'hello', token: token('alice'), device, session: w.welcome.session, last: 2 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.type, 'welcome');
  assert.equal(r.body.resumed, true);
  assert.equal(r.body.session, w.welcome.session);
  assert.deepEqual(r.body.rooms, [room]);
  const cl = await w.closed();
  assert.equal(cl.code, 4001, 'the WebSocket is closed with 4001');

  // written while the session has no downstream at all
  await x.set(room, cid(), 'k', { v: 3 });
  const e3 = await x.entry(room, 3);
  const h = new HttpSession(srv.url, r.body);
  const s = await h.stream(2);
  const ev = await s.waitMessages(4);
  assert.deepEqual(ev.map((e) => e.id), ['3', '4', '5', '6']);
  assert.deepEqual(ev.slice(0, 3).map((e) => e.json), w.afterWelcome.slice(2), 'what the WebSocket had sent after 2');
  assert.deepEqual(ev[3].json, e3, 'then what it missed');
  // and it goes on over HTTP
  await h.send({ ...setOp(room, 'k', { v: 4 }), id: 'http' });
  const more = await s.waitMessages(6);
  assert.deepEqual(more.slice(4).map((e) => [e.id, e.json.type, e.json.seq]), [['7', 'ack', 4], ['8', 'op', 4]]);
  s.abort();
});

// In a cluster the WebSocket goes to the session's node: a WebSocket resume
// reaching another node starts a new session there (PROTOCOL.md 3.5), which
// is what a client then gets; only the HTTP transports are forwarded.
ftest('an HTTP session resumes over WebSocket: its SSE stream or pending poll is ended', async (t) => {
  const room = 'board:fb-http2ws';
  const x = await SyncClient.connect(srv.url, { token: token('bob'), device: dev('x') });
  t.after(() => closeClients(x));
  await x.join(room);

  await t.test('SSE stream: event close 4001; the WebSocket replays after last', async () => {
    const h = await HttpSession.open(srv.url, 'alice');
    await h.send({ type: 'join', id: 'j', room });
    const s = await h.stream(0);
    await s.waitMessages(1); // joined
    await x.set(room, cid(), 'a', { v: 1 });
    const e = await x.entry(room, 1);
    const ev = await s.waitMessages(2);
    assert.deepEqual(ev[1].json, e);
    const w = await SyncClient.connect(sessionHome(srv, h.session).url, { token: token('alice'), device: h.device, session: h.session, last: 1 });
    t.after(() => closeClients(w));
    assert.equal(w.welcome.resumed, true);
    assert.deepEqual(w.welcome.rooms, [room]);
    const cl = await s.closed();
    assert.equal(cl.code, 4001);
    await w.ping();
    assert.deepEqual(w.afterWelcome.map((m) => m.type), ['op', 'pong']);
    assert.deepEqual(w.afterWelcome[0], e, 'ordinal 2 again, on the WebSocket');
    // an SSE for the session now takes it back from the WebSocket
    const s2 = await h.stream(3);
    assert.equal((await w.closed()).code, 4001, 'the WebSocket is closed with 4001');
    s2.abort();
  });

  await t.test('pending poll: answered with an empty list', async () => {
    const h = await HttpSession.open(srv.url, 'alice');
    await h.send({ type: 'ping', id: 1 });
    assertPoll(await h.pollNow(0), 0, ['pong']);
    const p = h.poll(1);
    await assertPending(p, 'the poll');
    const w = await SyncClient.connect(sessionHome(srv, h.session).url, { token: token('alice'), device: h.device, session: h.session, last: 1 });
    t.after(() => closeClients(w));
    assert.equal(w.welcome.resumed, true);
    const r = await withTimeout(p.result, WAIT_MS, 'the poll');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.messages, [], r.text);
    await w.ping();
    assert.deepEqual(w.afterWelcome.map((m) => m.type), ['pong'], 'the replies now go to the WebSocket');
  });
});

// ---- replacement, bye ---------------------------------------------------------

ftest('a (user, device) replaced by a new session: close 4001 on the old downstream', async (t) => {
  await t.test('SSE: event close with code 4001, then the old session is gone (410)', async () => {
    const h = await HttpSession.open(srv.url, 'dave');
    await h.send({ type: 'ping', id: 1 });
    const s = await h.stream(0);
    await s.waitMessages(1);
    const h2 = await HttpSession.open(srv.url, 'dave', h.device);
    assert.equal(h2.welcome.resumed, false);
    assert.notEqual(h2.session, h.session);
    const cl = await s.closed();
    assert.equal(cl.code, 4001);
    assertError(await post(srv.url, { type: 'ping' }, h.session), 410, 'session_expired', 'POST for the replaced session');
    assertError(await withTimeout(h.poll(1).result, WAIT_MS, 'poll'), 410, 'session_expired', 'poll for the replaced session');
  });

  await t.test('pending poll: answered with a member close, code 4001', async () => {
    const h = await HttpSession.open(srv.url, 'dave');
    await h.send({ type: 'ping', id: 1 });
    assertPoll(await h.pollNow(0), 0, ['pong']);
    const p = h.poll(1);
    await assertPending(p, 'the poll');
    const w = await SyncClient.connect(srv.url, { token: token('dave'), device: h.device });
    t.after(() => closeClients(w));
    assert.equal(w.welcome.resumed, false);
    const r = await withTimeout(p.result, WAIT_MS, 'the poll');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.messages, [], r.text);
    assert.equal(r.body.close?.code, 4001, r.text);
    assert.equal(typeof r.body.close.reason, 'string');
  });
});

ftest('a resume by POST of a session with an open SSE stream ends that stream with 4001', async () => {
  const h = await HttpSession.open(srv.url, 'erin');
  await h.send([{ type: 'ping', id: 1 }, { type: 'ping', id: 2 }]);
  const s = await h.stream(0);
  await s.waitMessages(2);
  const r = await post(srv.url, { type: 'hello', token: token('erin'), device: h.device, session: h.session, last: 1 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.resumed, true);
  assert.equal(r.body.session, h.session);
  assert.equal((await s.closed()).code, 4001);
  const s2 = await h.stream(1);
  const ev = await s2.waitMessages(1);
  assert.deepEqual(ev.map((e) => [e.id, e.json.re]), [['2', 2]], 'the next downstream replays from its last');
});

ftest('a burst over --max-outbox between two polls is delivered, not dropped', async (t) => {
  const s = await startSyncServer(t, ['--max-outbox', '1K']);
  const h = await HttpSession.open(s.url, 'alice');
  await h.send({ type: 'ping', id: 'first' });
  assertPoll(await h.pollNow(0), 0, ['pong']);
  const pings = Array.from({ length: 40 }, (_, i) => ({ type: 'ping', id: `ping-${i}-${'x'.repeat(40)}` }));
  await h.send(pings); // about 2.4 KB of pongs that no poll has carried yet
  const b = await h.pollNow(1);
  assertPoll(b, 1, pings.map(() => 'pong'));
  assert.deepEqual(b.messages.map((m) => m.re), pings.map((p) => p.id));
  // delivered, they count against --max-outbox again: the next burst keeps them only while unconfirmed
  await h.send(pings.slice(0, 2));
  assertPoll(await h.pollNow(41), 41, ['pong', 'pong']);
});

ftest('a last older than the outbox still holds (--max-outbox overflow) is 410 session_expired', async (t) => {
  // Undelivered messages of an HTTP session are kept up to --max-queued-bytes
  // beyond --max-outbox: with both at 1K a 2.4 KB burst loses its oldest.
  const s = await startSyncServer(t, ['--max-outbox', '1K', '--max-queued-bytes', '1K']);
  const h = await HttpSession.open(s.url, 'alice');
  const pings = Array.from({ length: 40 }, (_, i) => ({ type: 'ping', id: `ping-${i}-${'x'.repeat(40)}` }));
  await h.send(pings); // about 2.4 KB of pongs, no downstream: the oldest are dropped
  assertError(await withTimeout(h.poll(0).result, WAIT_MS, 'poll 0'), 410, 'session_expired', 'poll last=0');
  const sse = await h.sse(0);
  assert.equal(sse.status, 410, sse.text);
  assert.equal(sse.body?.code, 'session_expired');
  // the newest are still there
  const b = await withTimeout(h.poll(39).result, WAIT_MS, 'poll 39');
  assert.equal(b.status, 200, b.text);
  assertPoll(b.body, 39, ['pong']);
  assert.equal(b.body.messages[0].re, pings[39].id);
  // and a resume from an ordinal the outbox lost starts a new session (3.5)
  const r = await post(s.url, { type: 'hello', token: token('alice'), device: h.device, session: h.session, last: 0 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.resumed, false);
});

ftest('bye by POST ends the session: its SSE gets close 1000, later requests 410', async (t) => {
  const room = 'board:fb-bye';
  const x = await SyncClient.connect(srv.url, { token: token('bob'), device: dev('x') });
  t.after(() => closeClients(x));
  await x.join(room);
  const h = await HttpSession.open(srv.url, 'alice');
  await h.send({ type: 'join', id: 'j', room });
  await x.waitFor(presenceOf(room, 'alice', h.device, 'join'), 'alice joins');
  const s = await h.stream(0);
  await s.waitMessages(1);
  await h.send({ type: 'bye' });
  const cl = await s.closed();
  assert.equal(cl.code, 1000);
  await x.waitFor(presenceOf(room, 'alice', h.device, 'leave'), 'alice leaves');
  assertError(await post(srv.url, { type: 'ping' }, h.session), 410, 'session_expired', 'POST after bye');
  assertError(await withTimeout(h.poll(1).result, WAIT_MS, 'poll'), 410, 'session_expired', 'poll after bye');
  const s2 = await h.sse(1);
  assert.equal(s2.status, 410);
  assert.equal(s2.body?.code, 'session_expired');
  // a resume of the ended session starts a new one
  const r = await post(srv.url, { type: 'hello', token: token('alice'), device: h.device, session: h.session, last: 1 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.resumed, false);

  await t.test('a pending poll of a session saying bye is answered with close 1000', async () => {
    const g = await HttpSession.open(srv.url, 'alice');
    await g.send({ type: 'ping', id: 1 });
    assertPoll(await g.pollNow(0), 0, ['pong']);
    const p = g.poll(1);
    await assertPending(p, 'the poll');
    await g.send({ type: 'bye' });
    const a = await withTimeout(p.result, WAIT_MS, 'the poll');
    assert.equal(a.status, 200, a.text);
    assert.deepEqual(a.body.messages, [], a.text);
    assert.equal(a.body.close?.code, 1000, a.text);
  });
});

ftest('SSE slow consumer: the stream ends with event close 1013', async (t) => {
  const s = await startSyncServer(t, ['--max-queued-bytes', '64K', '--rate', '100000', '--burst', '100000']);
  const room = 'chat:fb-slow';
  const pub = await SyncClient.connect(s.url, { token: token('bob'), device: dev('pub') });
  t.after(() => closeClients(pub));
  await pub.join(room);
  const h = await HttpSession.open(s.url, 'alice');
  await h.send({ type: 'join', id: 'j', room });
  // A reader that takes the response head, then stops reading.
  const raw = await RawConn.connect(s.port);
  t.after(() => raw.destroy());
  await raw.write(`GET /v1/sse?session=${h.session}&last=0 HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\n\r\n`);
  const head = await raw.waitFor((b) => parseHead(b) ?? undefined, 'the SSE response head');
  assert.equal(head.status, 200);
  raw.pause();
  // Ephemeral publishes of 30 KB: loopback buffers absorb a few MiB, then
  // the server's queue (64 KiB) overflows. Bounded; the log line is only
  // the signal to stop early.
  const data = 'x'.repeat(30000);
  const MAX = scale(1200, 800);
  let sent = 0;
  while (sent < MAX && !/slow consumer/.test(s.stderr)) {
    await Promise.all(Array.from({ length: 16 }, () =>
      pub.expect({ type: 'publish', room, data, ephemeral: true }, 'ack')));
    sent += 16;
    pub.drain();
  }
  raw.resume();
  await withTimeout(raw.waitClosed(WAIT_MS), WAIT_MS * 2, 'the end of the slow stream');
  const parser = new SseParser();
  parser.feed(raw.buf.subarray(head.headLen).toString('utf8'));
  const msgs = parser.events.filter((e) => e.event === 'message');
  assert.ok(msgs.length < sent + 1, `the slow stream was cut off (${msgs.length} events of ${sent + 1})`);
  const partial = parser._buf.length + (parser._cur ? 1 : 0) ? `, then ${parser._buf.length} bytes of an unfinished event` : '';
  const cl = closeEventOf(parser.events, `slow SSE stream (${msgs.length} of ${sent + 1} events${partial}, TCP ${raw.error || 'FIN'})`);
  assert.equal(cl.code, 1013);
});

ftest('recv by POST confirms messages: they are freed and cannot be replayed', async () => {
  const h = await HttpSession.open(srv.url, 'alice');
  await h.send([{ type: 'ping', id: 1 }, { type: 'ping', id: 2 }, { type: 'ping', id: 3 }]);
  assertPoll(await h.pollNow(0), 0, ['pong', 'pong', 'pong']);
  assertPoll(await h.pollNow(0), 0, ['pong', 'pong', 'pong']); // still held: nothing confirmed yet
  await h.send({ type: 'recv', n: 2 });
  assertError(await withTimeout(h.poll(0).result, WAIT_MS, 'poll 0'), 410, 'session_expired', 'last=0 after recv 2');
  assertPoll(await h.pollNow(2), 2, ['pong']);
  await h.send({ type: 'recv', n: 10, id: 'r' });
  const b = await h.pollNow(3);
  assertPoll(b, 3, ['error']);
  assert.equal(b.messages[0].code, 'bad_request', 'recv beyond the messages sent');
});

// ---- presence and the detach grace ---------------------------------------------

ftest('presence connected flag of HTTP sessions and the 10 s detach grace', { concurrency: true }, async (t) => {
  // The three parts run side by side, each on its own server: the grace is
  // waited for once.
  const parts = [];

  parts.push(t.test('poll member: connected:true, false only after 10 s without a downstream, true again', async (tt) => {
    const s = await startSyncServer(tt);
    const room = 'board:fb-grace';
    const w = await SyncClient.connect(s.url, { token: token('bob'), device: dev('w') });
    tt.after(() => closeClients(w));
    await w.join(room);
    const p = await HttpSession.open(s.url, 'alice');
    const p0 = p.poll(0); // on poll transport before it joins
    await assertPending(p0, 'the first poll', s.url);
    await p.send({ type: 'join', id: 'j', room, presence: { name: 'Alice' } });
    const join = await w.waitFor(presenceOf(room, 'alice', p.device, 'join'), 'alice joins');
    assert.equal(join.connected, true, 'a session on poll transport is connected');
    const r0 = await withTimeout(p0.result, WAIT_MS, 'the first poll');
    assertPoll(r0.body, 0, ['joined']);
    const t0 = Date.now(); // no downstream from here
    const y = await SyncClient.connect(s.url, { token: token('carol'), device: dev('y') });
    tt.after(() => closeClients(y));
    const jy = await y.join(room);
    assert.equal(jy.presence.find((e) => e.user === 'alice').connected, true, 'in joined.presence too');
    const off = await w.waitFor(presenceOf(room, 'alice', p.device), 'alice disconnected', GRACE_MS + WAIT_MS);
    const after = Date.now() - t0;
    assert.equal(off.event, 'update', JSON.stringify(off));
    assert.equal(off.connected, false, JSON.stringify(off));
    assert.deepEqual(off.state, { name: 'Alice' });
    assert.ok(after >= GRACE_MS - 500, `connected:false after ${after} ms; the grace is ${GRACE_MS} ms`);
    const z = await SyncClient.connect(s.url, { token: token('erin'), device: dev('z') });
    tt.after(() => closeClients(z));
    const jz = await z.join(room);
    assert.equal(jz.presence.find((e) => e.user === 'alice').connected, false, 'joined.presence shows it detached');
    const again = p.poll(1);
    const on = await w.waitFor(presenceOf(room, 'alice', p.device), 'alice back');
    assert.equal(on.event, 'update');
    assert.equal(on.connected, true);
    again.abort();
  }));

  parts.push(t.test('a stream or a poll held open longer than the grace: the grace starts when it closes', async (tt) => {
    const s = await startSyncServer(tt);
    const room = 'board:fb-held';
    const w = await SyncClient.connect(s.url, { token: token('bob'), device: dev('w') });
    tt.after(() => closeClients(w));
    const arrived = stampArrivals(w);
    await w.join(room);
    const a = await HttpSession.open(s.url, 'alice'); // on SSE
    const sse = await a.stream(0);
    await a.send({ type: 'join', room });
    await sse.waitMessages(1);
    const c = await HttpSession.open(s.url, 'carol'); // on long-poll
    const c0 = c.poll(0);
    await assertPending(c0, 'carol\'s first poll', s.url);
    await c.send({ type: 'join', room });
    assertPoll((await withTimeout(c0.result, WAIT_MS, 'carol\'s first poll')).body, 0, ['joined']);
    for (const m of [a, c]) {
      const j = await w.waitFor(presenceOf(room, m.user, m.device, 'join'), `${m.user} joins`);
      assert.equal(j.connected, true, `${m.user}: connected`);
    }
    const poll = c.poll(1); // pending for the whole wait (--poll-timeout is 25 s)
    await sleep(GRACE_MS + 1000); // the scenario: both downstreams stay open past the grace
    const early = w.queue.filter((m) => m.type === 'presence' && m.event === 'update');
    assert.deepEqual(early, [], 'an open SSE stream or pending poll keeps the member connected');
    assert.equal(poll.settled, false);
    sse.abort();
    poll.abort();
    const closedAt = Date.now();
    // Now without a downstream: connected:false is due 10 s from here, not at once.
    const window = scale(2000, 3000);
    await sleep(window);
    const off = w.queue.filter((m) => m.type === 'presence' && m.event === 'update' && m.connected === false)
      .map((m) => `${m.user} (${m.user === 'alice' ? 'SSE' : 'poll'}) shown connected:false ${arrived.get(m) - closedAt} ms after its downstream closed`);
    assert.deepEqual(off, [], `no connected:false within ${window} ms of the downstream closing (grace ${GRACE_MS} ms)`);
    // ... and it is due then: the cut poll is noticed when it is cut, not
    // when its answer would have been due (--poll-timeout, 25 s from its start)
    const due = closedAt + GRACE_MS + WAIT_MS / 2;
    for (const m of [a, c]) {
      const gone = await w.waitFor((x) => presenceOf(room, m.user, m.device)(x) && x.connected === false,
        `${m.user} connected:false`, Math.max(1, due - Date.now()));
      assert.equal(gone.event, 'update');
    }
  }));

  parts.push(t.test('with a short --resume-window the detached session ends: presence leave, then 410', async (tt) => {
    const window = scale(1000, 2000);
    const s = await startSyncServer(tt, ['--resume-window', `${window}ms`]);
    const room = 'board:fb-expire';
    const w = await SyncClient.connect(s.url, { token: token('bob'), device: dev('w') });
    tt.after(() => closeClients(w));
    await w.join(room);
    const p = await HttpSession.open(s.url, 'alice');
    await p.send({ type: 'join', room });
    await w.waitFor(presenceOf(room, 'alice', p.device, 'join'), 'alice joins');
    assertPoll(await p.pollNow(0), 0, ['joined']);
    const off = await w.waitFor(presenceOf(room, 'alice', p.device), 'alice disconnected', GRACE_MS + WAIT_MS);
    assert.equal(off.event, 'update');
    assert.equal(off.connected, false);
    const offAt = Date.now();
    const leave = await w.waitFor(presenceOf(room, 'alice', p.device), 'alice gone', window + WAIT_MS);
    assert.equal(leave.event, 'leave', JSON.stringify(leave));
    const took = Date.now() - offAt;
    assert.ok(took >= window - 300, `the session ended ${took} ms after it was detached; window ${window} ms`);
    assertError(await post(s.url, { type: 'ping' }, p.session), 410, 'session_expired', 'POST after expiry');
    assertError(await withTimeout(p.poll(1).result, WAIT_MS, 'poll'), 410, 'session_expired', 'poll after expiry');
  }));

  await Promise.all(parts);
});

// ---- shutdown -----------------------------------------------------------------

ftest('SIGTERM: an open SSE stream gets event close 1001 and ends; a pending poll gets close 1001', async (t) => {
  const s = await startSyncServer(t);
  const a = await HttpSession.open(s.url, 'alice');
  await a.send({ type: 'ping', id: 1 });
  const sse = await a.stream(0);
  await sse.waitMessages(1);
  const b = await HttpSession.open(s.url, 'bob');
  await b.send({ type: 'ping', id: 1 });
  assertPoll(await b.pollNow(0), 0, ['pong']);
  const p = b.poll(1);
  await assertPending(p, 'the poll', s.url);
  // On a cluster the nodes the two sessions live on are stopped: the stream
  // and the poll may reach them through another node (forwarded), which
  // passes their close on (docs/CLUSTER.md).
  const stopped = CLUSTER ? [...new Set([a.session, b.session].map((x) => s.nodeOf(x).srv))] : [s];
  for (const x of stopped) x.proc.kill('SIGTERM');
  const cl = await sse.closed(WAIT_MS * 2);
  assert.equal(cl.code, 1001);
  const r = await withTimeout(p.result, WAIT_MS * 2, 'the poll at shutdown');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body.messages, []);
  assert.equal(r.body.close?.code, 1001, r.text);
  for (const x of stopped) {
    const e = await x.waitExit(WAIT_MS * 3);
    assert.equal(e.code, 0, `exit ${JSON.stringify(e)}`);
  }
});
