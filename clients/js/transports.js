// transports.js -- the three ways a wsync session's JSON messages travel
// (docs/PROTOCOL.md 2.1, 2.4): WebSocket at /v1/ws, SSE at /v1/sse and
// long-polling at /v1/poll, the last two sending upstream by POST /v1/send.
//
// A transport carries one session over one connection attempt; the client
// makes a new one for every attempt. Lifecycle, the same for all three:
//
//   new T(urls, env, handlers) -> start(hello)
//     -> handlers.welcome(welcome)            at most once: the session is attached
//     -> handlers.message(msg, ordinal?)      every later server message, in order
//     -> handlers.close(info)                 exactly once, unless close() came first
//
// `ordinal` is the session ordinal (3.4) when the wire states it (SSE event
// id, poll answers); on WebSocket it is undefined and the client counts.
// `info` is {code, reason, welcomed, opened, error?, expired?}: `opened` says
// whether the server was reached at all (the fallback decision), `error` is
// the server's refusal of the hello (an error object: authentication, 3.1),
// `expired` that the session is unknown to the server (HTTP 410, 2.4): the
// client must say hello again without it. close() ends the transport without
// calling handlers.close. Nothing here retries: reconnecting, resuming and
// choosing the next transport are the client's business (wsync.js).
//
// Plain ES module, no dependencies: it runs unbundled in browsers and in Node
// (>= 18: global fetch; WebSocket from the `ws` package or the global one).

const OPEN = 1; // WebSocket.OPEN, the same in browsers and in `ws`

/** Codes with which a connection ends "normally": not a sign of a broken transport. */
export const ORDERLY_CLOSES = new Set([1000, 1001, 1013, 4001]);

/** An error's message with its cause (undici hides the socket error there). */
const why = (err) => {
  if (!err) return 'failed';
  const c = err.cause;
  return c ? `${err.message}: ${c.code || c.message || c}` : String(err.message || err);
};

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Calls fn on a later turn (handlers never run inside start()). */
const later = (fn) => setTimeout(fn, 0);

// ---- WebSocket ----------------------------------------------------------

export class WsTransport {
  constructor(urls, env, handlers) {
    this.kind = 'ws';
    this.url = `${urls.ws}/v1/ws`;
    this.env = env;
    this.h = handlers;
    this.ws = null;
    this.opened = false;
    this.welcomed = false;
    this.done = false;
    this.refusal = null; // an error before welcome: the close (1008) follows
  }

  start(hello) {
    let ws;
    try {
      ws = new this.env.WebSocket(this.url);
    } catch (err) {
      later(() => this._end({ code: 1006, reason: String(err && err.message) }));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.opened = true;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => {
      if (this.done) return;
      if (typeof ev.data !== 'string') return; // binary is not protocol v1 (1.1)
      const m = parseJson(ev.data);
      if (!this.welcomed) {
        if (m && m.type === 'welcome') {
          this.welcomed = true;
          this.h.welcome(m);
        } else if (m && m.type === 'error') {
          this.refusal = m;
        }
        return;
      }
      // An unparsable message still took an ordinal: count it, skip it.
      this.h.message(m === undefined ? { type: '<unparsable>' } : m);
    };
    ws.onerror = () => {}; // a close event always follows
    ws.onclose = (ev) => this._end({ code: ev.code, reason: ev.reason });
  }

  send(msg) {
    if (this.done || !this.ws || this.ws.readyState !== OPEN) return false;
    try {
      this.ws.send(JSON.stringify(msg));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Ends the connection; no close handler runs. With bye, the session is
   * ended first (3.6). Resolves once the socket is closed, or soon anyway.
   */
  close({ bye = false } = {}) {
    if (this.done) return Promise.resolve();
    this.done = true;
    const ws = this.ws;
    if (!ws) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(finish, 1000);
      function finish() {
        clearTimeout(timer);
        resolve();
      }
      ws.onmessage = null;
      ws.onopen = null;
      ws.onclose = finish;
      try {
        // After bye the server closes with 1000 itself; waiting for that
        // keeps the bye from racing our own close frame.
        if (bye && this.welcomed && ws.readyState === OPEN) {
          ws.send(JSON.stringify({ type: 'bye' }));
        } else if (typeof ws.terminate === 'function') {
          // `ws` (Node): no close handshake with a peer that may be dead.
          ws.terminate();
          finish();
        } else {
          ws.close();
        }
      } catch {
        finish();
      }
    });
  }

  _end(info) {
    if (this.done) return;
    this.done = true;
    if (this.ws) {
      this.ws.onmessage = this.ws.onclose = this.ws.onopen = null;
    }
    this.h.close({
      code: info.code,
      reason: info.reason || '',
      welcomed: this.welcomed,
      opened: this.opened,
      error: this.welcomed ? undefined : this.refusal || undefined,
    });
  }
}

// ---- HTTP upstream: POST /v1/send ---------------------------------------

/**
 * The upstream of the SSE and long-poll transports. Messages produced in the
 * same turn go as one JSON array, in order; one POST is in flight at a time
 * so that the server sees them in the order sent.
 */
class Upstream {
  constructor(urls, env, onfail, onerror) {
    this.url = `${urls.http}/v1/send`;
    this.env = env;
    this.onfail = onfail;   // ({code, expired}): the session cannot be reached this way
    this.onerror = onerror; // (error object): a refused body (400, 413)
    this.session = null;
    this.maxBytes = 1 << 20;
    this.queue = [];
    this.busy = false;
    this.timer = null;
    this.dead = false;
    this.idle = [];
    this.abort = null; // the POST in flight
  }

  send(msg) {
    if (this.dead) return false;
    this.queue.push(JSON.stringify(msg));
    if (!this.busy && !this.timer) this.timer = setTimeout(() => this._flush(), 0);
    return true;
  }

  /** Resolves when everything queued so far has been posted (or failed). */
  drained() {
    if (!this.busy && !this.queue.length && !this.timer) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  /**
   * Sends nothing more and abandons the POST in flight: what it carried is
   * re-sent on the next connection if it matters (ops and publishes, with
   * their cids), as when a connection dies.
   */
  stop() {
    this.dead = true;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.abort) this.abort.abort();
    this.queue = [];
    this._wakeIdle();
  }

  _wakeIdle() {
    const w = this.idle;
    this.idle = [];
    for (const f of w) f();
  }

  async _flush() {
    this.timer = null;
    if (this.busy || this.dead) return;
    if (!this.queue.length) {
      this._wakeIdle();
      return;
    }
    // As many messages as fit in one body (the server's max_message).
    let n = 0;
    let size = 2;
    while (n < this.queue.length && (n === 0 || size + this.queue[n].length + 1 <= this.maxBytes)) {
      size += this.queue[n].length + 1;
      n++;
    }
    const body = `[${this.queue.splice(0, n).join(',')}]`;
    this.busy = true;
    this.abort = new AbortController();
    let res;
    try {
      res = await fetchRetry(this.env, this.url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Wsync-Session': this.session },
        body,
        cache: 'no-store',
        signal: this.abort.signal,
      });
    } catch (err) {
      this.busy = false;
      if (!this.dead) this.onfail({ code: 1006, reason: `POST /v1/send: ${why(err)}` });
      this.stop();
      return;
    }
    const text = await res.text().catch(() => '');
    this.busy = false;
    if (this.dead) return;
    if (res.status === 410) {
      this.onfail({ code: 1006, reason: 'session expired', expired: true });
      this.stop();
      return;
    }
    if (res.status !== 202 && res.status !== 200) {
      const e = parseJson(text);
      this.onerror(e && e.type === 'error' ? e
        : { type: 'error', code: res.status === 413 ? 'too_large' : 'http', message: `POST /v1/send: HTTP ${res.status}` });
      if (res.status >= 500 || res.status === 404) {
        this.onfail({ code: 1006, reason: `POST /v1/send: HTTP ${res.status}` });
        this.stop();
        return;
      }
    }
    this._flush();
  }
}

/**
 * fetch(), tried a second time at once when it fails before any answer. A
 * kept-alive connection may have been closed by the server just as it was
 * reused (the request then never reached it); a fresh one usually works. What
 * goes by these requests is safe to repeat: ops and publishes with a cid are
 * deduplicated (5.5), the others are idempotent, a poll names its `last`.
 */
async function fetchRetry(env, url, init) {
  try {
    return await env.fetch(url, init);
  } catch (err) {
    if (init.signal && init.signal.aborted) throw err;
    return env.fetch(url, init);
  }
}

/**
 * Says hello by POST /v1/send (2.4). Resolves {welcome} or {error} (the
 * server refused: 400, 401) or {unreachable, reason} (network, 404, 5xx).
 */
async function postHello(urls, env, hello, signal) {
  let res;
  try {
    res = await fetchRetry(env, `${urls.http}/v1/send`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(hello),
      cache: 'no-store',
      signal,
    });
  } catch (err) {
    return { unreachable: true, reason: `POST /v1/send (hello): ${why(err)}` };
  }
  const text = await res.text().catch(() => '');
  const body = parseJson(text);
  if (res.status === 200 && body && body.type === 'welcome') return { welcome: body };
  if ((res.status === 400 || res.status === 401) && body && body.type === 'error') return { error: body };
  return { unreachable: true, reason: `POST /v1/send (hello): HTTP ${res.status}` };
}

/** The common part of the SSE and long-poll transports. */
class HttpTransport {
  constructor(urls, env, handlers) {
    this.urls = urls;
    this.env = env;
    this.h = handlers;
    this.opened = false;
    this.welcomed = false;
    this.done = false;
    this.session = null;
    this.abort = null;
    this.up = new Upstream(urls, env, (info) => this._end(info), (e) => this.h.error && this.h.error(e));
  }

  async start(hello) {
    // close() or _end() aborts the hello too (a silent network holds it).
    this.abort = new AbortController();
    const r = await postHello(this.urls, this.env, hello, this.abort.signal);
    if (this.done) return;
    if (r.error) {
      this.opened = true;
      this._end({ code: 1008, reason: r.error.code, error: r.error });
      return;
    }
    if (r.unreachable) {
      this._end({ code: 1006, reason: r.reason });
      return;
    }
    const w = r.welcome;
    this.session = w.session;
    this.up.session = w.session;
    if (w.limits && w.limits.max_message) this.up.maxBytes = w.limits.max_message;
    // The downstream replays from its own `last` (2.4): after a resume the
    // client's count, after a new session 0.
    const last = w.resumed && hello.session === w.session ? hello.last || 0 : 0;
    this._downstream(w, last);
  }

  send(msg) {
    if (this.done || !this.welcomed) return false;
    return this.up.send(msg);
  }

  async close({ bye = false } = {}) {
    if (this.done) return;
    this.done = true;
    if (this.abort) this.abort.abort();
    this._closeDownstream();
    if (bye && this.welcomed) {
      this.up.send({ type: 'bye' });
      // Let the bye (and what was queued before it) reach the server.
      let timer;
      await Promise.race([this.up.drained(), new Promise((r) => (timer = setTimeout(r, 2000)))]);
      clearTimeout(timer);
    }
    this.up.stop();
  }

  _attach(welcome) {
    this.opened = true;
    this.welcomed = true;
    this.h.welcome(welcome);
  }

  _closeDownstream() {}

  _end(info) {
    if (this.done) return;
    this.done = true;
    if (this.abort) this.abort.abort();
    this._closeDownstream();
    this.up.stop();
    this.h.close({
      code: info.code,
      reason: info.reason || '',
      welcomed: this.welcomed,
      opened: this.opened || this.welcomed,
      error: info.error,
      expired: !!info.expired,
    });
  }

  _query(last) {
    return `session=${encodeURIComponent(this.session)}&last=${last}`;
  }
}

// ---- SSE ----------------------------------------------------------------

/**
 * An incremental text/event-stream parser (the WHATWG "event stream
 * interpretation"): feed() it text in any split, it calls onevent({event,
 * data, id}) for each complete event. Comments and `retry:` are skipped.
 */
export class SseParser {
  constructor(onevent) {
    this.onevent = onevent;
    this.buf = '';
    this.data = [];
    this.event = '';
    this.id = undefined;
    this.sawCr = false;
  }

  feed(text) {
    let s = this.buf + text;
    // A CR at the end of the previous chunk ended a line; its LF may start this one.
    if (this.sawCr && s.startsWith('\n')) s = s.slice(1);
    this.sawCr = false;
    let start = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this._line(s.slice(start, i));
      if (c === 13) {
        if (i + 1 < s.length) {
          if (s.charCodeAt(i + 1) === 10) i++;
        } else {
          this.sawCr = true;
        }
      }
      start = i + 1;
    }
    this.buf = s.slice(start);
  }

  _line(line) {
    if (line === '') {
      if (this.data.length) {
        const ev = { event: this.event || 'message', data: this.data.join('\n'), id: this.id };
        this.data = [];
        this.event = '';
        this.onevent(ev);
      } else {
        this.event = '';
      }
      return;
    }
    if (line.charCodeAt(0) === 58) return; // ':' comment (the server's ": ping")
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}

export class SseTransport extends HttpTransport {
  constructor(urls, env, handlers) {
    super(urls, env, handlers);
    this.kind = 'sse';
    this.es = null;
    this.esClose = null; // the listener of the server's `close` event
  }

  _downstream(welcome, last) {
    const url = `${this.urls.http}/v1/sse?${this._query(last)}`;
    if (this.env.EventSource) this._eventSource(url, welcome);
    else this._fetchStream(url, welcome);
  }

  _event(ev) {
    if (this.done) return;
    if (ev.event === 'close') {
      const c = parseJson(ev.data) || {};
      this._end({ code: c.code || 1006, reason: c.reason || '' });
      return;
    }
    if (ev.event !== 'message') return;
    const m = parseJson(ev.data);
    const ord = ev.id !== undefined && ev.id !== '' ? Number(ev.id) : undefined;
    this.h.message(m === undefined ? { type: '<unparsable>' } : m, Number.isFinite(ord) ? ord : undefined);
  }

  /** Browsers: EventSource. Its own reconnect is not used: the client resumes. */
  _eventSource(url, welcome) {
    const es = new this.env.EventSource(url);
    this.es = es;
    es.onopen = () => {
      if (!this.welcomed) this._attach(welcome);
    };
    es.onmessage = (e) => this._event({ event: 'message', data: e.data, id: e.lastEventId });
    this.esClose = (e) => this._event({ event: 'close', data: e.data });
    es.addEventListener('close', this.esClose);
    es.onerror = () => this._end({ code: 1006, reason: 'event stream failed' });
  }

  /** Node (no EventSource): fetch() and read the stream. */
  async _fetchStream(url, welcome) {
    this.abort = new AbortController();
    let res;
    try {
      res = await this.env.fetch(url, {
        headers: { Accept: 'text/event-stream' },
        signal: this.abort.signal,
        cache: 'no-store',
      });
    } catch (err) {
      this._end({ code: 1006, reason: `GET /v1/sse: ${why(err)}` });
      return;
    }
    if (this.done) return;
    if (res.status !== 200 || !res.body) {
      // 410: the session is gone (2.4); 400: `last` beyond what was sent. Both
      // leave only a new hello.
      const expired = res.status === 410 || res.status === 400;
      res.body && res.body.cancel().catch(() => {});
      this._end({ code: 1006, reason: `GET /v1/sse: HTTP ${res.status}`, expired });
      return;
    }
    this._attach(welcome);
    const parser = new SseParser((ev) => this._event(ev));
    const decoder = new TextDecoder();
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (this.done) break;
        if (done) break;
        parser.feed(decoder.decode(value, { stream: true }));
      }
    } catch (err) {
      this._end({ code: 1006, reason: `event stream: ${why(err)}` });
      return;
    }
    this._end({ code: 1006, reason: 'event stream ended' });
  }

  _closeDownstream() {
    if (this.es) {
      this.es.onopen = this.es.onmessage = this.es.onerror = null;
      this.es.removeEventListener('close', this.esClose);
      this.es.close();
      this.es = null;
    }
  }
}

// ---- long-polling ---------------------------------------------------------

export class PollTransport extends HttpTransport {
  constructor(urls, env, handlers) {
    super(urls, env, handlers);
    this.kind = 'poll';
  }

  _downstream(welcome, last) {
    // Nothing to open: the endpoint answered the hello, and the first poll
    // may legitimately wait for --poll-timeout.
    this._attach(welcome);
    this._loop(last);
  }

  async _loop(last) {
    while (!this.done) {
      this.abort = new AbortController();
      let res;
      let body;
      try {
        res = await fetchRetry(this.env, `${this.urls.http}/v1/poll?${this._query(last)}`, {
          signal: this.abort.signal,
          cache: 'no-store',
        });
        body = parseJson(await res.text());
      } catch (err) {
        this._end({ code: 1006, reason: `GET /v1/poll: ${why(err)}` });
        return;
      }
      if (this.done) return;
      if (res.status !== 200 || !body || !Array.isArray(body.messages)) {
        const expired = res.status === 410 || res.status === 400;
        this._end({ code: 1006, reason: `GET /v1/poll: HTTP ${res.status}`, expired });
        return;
      }
      const first = typeof body.last === 'number' ? body.last - body.messages.length + 1 : last + 1;
      for (let i = 0; i < body.messages.length && !this.done; i++) {
        this.h.message(body.messages[i], first + i);
      }
      if (typeof body.last === 'number') last = body.last;
      else last += body.messages.length;
      if (body.close) {
        this._end({ code: body.close.code || 1006, reason: body.close.reason || '' });
        return;
      }
    }
  }
}

export const TRANSPORTS = { ws: WsTransport, sse: SseTransport, poll: PollTransport };
