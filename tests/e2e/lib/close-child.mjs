// close-child.mjs -- run by client-close.test.mjs as a child process: brings
// one Client (clients/js/wsync.js) into a state, closes it, and reports on
// stdout what of the client was still scheduled. The parent then checks that
// this process exits by itself: a timer, socket or request the closed client
// left behind keeps it alive.
//
//   node close-child.mjs <url> <transport> <case>
//
// Cases:
//   rate_limited  ops refused with rate_limited: their re-send is pending
//   presence      presence.set() in the same turn as close(): its timer runs
//   offline       online, then the network drops every packet (the parent's
//                 proxy holds connections): offline, a reconnect attempt hangs
//   eventsource   SSE through an EventSource (options.EventSource): its
//                 listeners must all be gone after close()
//
// stdout, one JSON object a line: {step: 'online'} once joined, then
// {step: 'closed', atCall, afterClose, afterPoke, listeners} where the
// arrays list timers made by clients/js still scheduled: atCall those of
// wsync.js right after close() is called (the transport may still be saying
// bye), afterClose all of them once it resolved, afterPoke after
// presence.set() on the closed client's room.
import WebSocket from 'ws';

import { Client } from '../../../clients/js/wsync.js';
import { SseParser } from '../../../clients/js/transports.js';
import { token } from './sync.mjs';

const [url, transport, kase] = process.argv.slice(2);
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

// ---- timers made by the client's modules (the caller's frame is in clients/js) ----

const live = new Map(); // handle -> "wsync.js:123 (Room._retryLater)"
const real = { setTimeout, clearTimeout, setInterval, clearInterval };

function caller() {
  const line = (new Error().stack || '').split('\n')[3] || '';
  const m = /clients\/js\/([\w.]+:\d+)/.exec(line);
  if (!m) return null;
  const fn = /at (?:async )?([\w.<>$]+) \(/.exec(line);
  return `${m[1]}${fn ? ` (${fn[1]})` : ''}`;
}

function track(kind) {
  return function (fn, ms, ...args) {
    const where = caller();
    const once = kind === 'setTimeout';
    const h = real[kind](function (...a) {
      if (once) live.delete(h);
      return fn.apply(this, a);
    }, ms, ...args);
    if (where) live.set(h, where);
    return h;
  };
}
globalThis.setTimeout = track('setTimeout');
globalThis.setInterval = track('setInterval');
globalThis.clearTimeout = (h) => {
  live.delete(h);
  return real.clearTimeout(h);
};
globalThis.clearInterval = (h) => {
  live.delete(h);
  return real.clearInterval(h);
};
/** The timers scheduled (of file, or all), as ['wsync.js:745 (Room._retryLater) x17', ...]. */
function pending(file) {
  const n = new Map();
  for (const w of live.values()) if (!file || w.startsWith(file)) n.set(w, (n.get(w) || 0) + 1);
  return [...n].map(([w, k]) => (k > 1 ? `${w} x${k}` : w));
}

// ---- what the server says, as a server with other limits would say it ----

/*
** The server's retry_after is 1000/rate + 1 ms, at most ~1 s: too short to
** tell a timer left behind from a slow exit. Coming in, it is made 60 s (any
** value is valid, 13.2), and the welcome's burst large so that the client's
** own pacing sends more than the server takes: the surplus is refused.
*/
let rateLimited = 0;
function rewrite(m) {
  if (!m || typeof m !== 'object') return m;
  if (m.type === 'welcome' && m.limits) m.limits = { ...m.limits, burst: 100000, rate: 100000 };
  if (m.type === 'error' && m.code === 'rate_limited') {
    m.retry_after = 60000;
    rateLimited++;
  }
  return m;
}

function rewriteText(text) {
  let v;
  try {
    v = JSON.parse(text);
  } catch {
    return text;
  }
  if (Array.isArray(v)) v.forEach(rewrite);
  else if (v && Array.isArray(v.messages)) v.messages.forEach(rewrite);
  else rewrite(v);
  return JSON.stringify(v);
}

class RewritingWebSocket extends WebSocket {
  set onmessage(fn) {
    super.onmessage = fn && ((ev) => fn({ data: typeof ev.data === 'string' ? rewriteText(ev.data) : ev.data }));
  }

  get onmessage() {
    return super.onmessage;
  }
}

/** An SSE body rewritten line by line (data lines are whole JSON messages). */
function sseRewriter() {
  const dec = new TextDecoder();
  const enc = new TextEncoder();
  let buf = '';
  const line = (l) => (l.startsWith('data: ') ? `data: ${rewriteText(l.slice(6))}` : l);
  return new TransformStream({
    transform(chunk, ctl) {
      buf += dec.decode(chunk, { stream: true });
      const i = buf.lastIndexOf('\n');
      if (i < 0) return;
      ctl.enqueue(enc.encode(buf.slice(0, i + 1).split('\n').map(line).join('\n')));
      buf = buf.slice(i + 1);
    },
    flush(ctl) {
      if (buf) ctl.enqueue(enc.encode(line(buf)));
    },
  });
}

async function rewritingFetch(u, init) {
  const res = await fetch(u, init);
  const s = String(u);
  if (s.includes('/v1/sse') && res.body) {
    return new Response(res.body.pipeThrough(sseRewriter()), { status: res.status, headers: res.headers });
  }
  if (s.includes('/v1/poll') || s.endsWith('/v1/send')) {
    const text = await res.text();
    return new Response(text && rewriteText(text), { status: res.status, headers: res.headers });
  }
  return res;
}

// ---- a minimal EventSource over fetch, counting its listeners ----

let lastEs = null;
class CountingEventSource {
  constructor(u) {
    lastEs = this;
    this.listeners = new Map(); // type -> Set
    this.onopen = this.onmessage = this.onerror = null;
    this.ctl = new AbortController();
    this._run(u);
  }

  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
  }

  removeEventListener(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }

  /** Listeners and on* handlers still set. */
  get count() {
    let n = [this.onopen, this.onmessage, this.onerror].filter(Boolean).length;
    for (const s of this.listeners.values()) n += s.size;
    return n;
  }

  close() {
    this.ctl.abort();
  }

  async _run(u) {
    try {
      const res = await fetch(u, { headers: { Accept: 'text/event-stream' }, signal: this.ctl.signal });
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      this.onopen?.({});
      const parser = new SseParser((ev) => {
        if (ev.event === 'message') this.onmessage?.({ data: ev.data, lastEventId: ev.id || '' });
        else for (const fn of this.listeners.get(ev.event) || []) fn({ data: ev.data });
      });
      const dec = new TextDecoder();
      for await (const chunk of res.body) parser.feed(dec.decode(chunk, { stream: true }));
      throw new Error('ended');
    } catch {
      if (!this.ctl.signal.aborted) this.onerror?.({});
    }
  }
}

// ---- the case ----

const sleep = (ms) => new Promise((r) => real.setTimeout(r, ms));

async function until(cond, what, ms = 10000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const statuses = [];
const client = new Client(url, {
  token: token('closer'),
  device: `closer-${process.pid}`,
  transports: [transport],
  WebSocket: RewritingWebSocket,
  fetch: rewritingFetch,
  EventSource: kase === 'eventsource' ? CountingEventSource : null,
  backoff: { base: 50, max: 100 },
  // The poll transport notices a silent network only by the heartbeat.
  heartbeat: kase === 'offline' ? { interval: 300, timeout: 300 } : undefined,
});
client.on('status', (s) => statuses.push(s));
client.on('error', () => {});
const room = client.room('board:close', { presence: { name: 'closer' } });
room.on('error', () => {});
await room.ready;
say({ step: 'online' });

if (kase === 'rate_limited') {
  for (let i = 0; i < 20; i++) room.set(`card-${i}`, { n: i });
  await until(() => rateLimited > 0, 'a rate_limited reply');
  await sleep(50); // processed: the re-send waits 60 s
} else if (kase === 'offline') {
  // The parent makes the network drop everything once it reads 'online'.
  await until(() => statuses.includes('offline'), 'going offline');
  await until(() => statuses.lastIndexOf('resuming') > statuses.indexOf('offline'), 'a reconnect attempt');
  await sleep(200); // the attempt hangs: nothing answers
} else if (kase === 'presence') {
  room.presence.set({ caret: 1 });
} else if (kase !== 'eventsource') {
  throw new Error(`unknown case ${kase}`);
}

const closing = client.close();
const atCall = pending('wsync.js');
await closing;
const afterClose = pending();
room.presence.set({ caret: 2 });
const afterPoke = pending();
say({ step: 'closed', atCall, afterClose, afterPoke, listeners: lastEs ? lastEs.count : 0, status: client.status });
