// yjs-load.mjs -- the load generator of the Yjs benchmark (bench/yjs.mjs
// runs it; it lives here to resolve yjs, y-websocket, y-protocols, lib0, ws
// and the Hocuspocus provider from bench/peers/node_modules). One scenario
// per run; prints one JSON object on stdout.
//
// Servers (--kind): wsync (/v1/yjs/{room}?token=JWT), y-websocket (the
// reference @y/websocket-server; same wire), hocuspocus (its own provider).
// The generator is the same for all three: stock providers where a real
// client is meant, and for the many-rooms run raw `ws` sockets speaking
// y-protocols (see "rooms").
//
//   trace   --trace FILE [--edits N] [--window BYTES]
//           one writer applies the editing trace to a Y.Text one edit at a
//           time (one transaction, so one Yjs update, per edit); its provider
//           sends each update at once, and the writer waits whenever more than
//           --window bytes are buffered on its socket (bufferedAmount), i.e.
//           it goes as fast as the server takes them. An observer (a second
//           provider) applies what the server relays. Measured: time until the
//           observer's text equals the trace's final text, server CPU over
//           that interval (/proc/PID/stat), server RSS, the document's size.
//   seed    --docs M [--trace FILE --edits N]: rooms seed-0..M-1 each get the
//           final document as one update (pushed by a provider, which then
//           waits until the server answers a fresh client with it).
//   load    --docs M: cold load after a restart: a fresh provider syncs the
//           trace room (timed), then one provider per seeded room stays open;
//           RSS before and after gives memory per loaded document.
//   rooms   --rooms R --clients C --rate U --duration S [--workers W]: R rooms
//           x C raw clients, each sending U single-character Yjs updates per
//           second; every receiver measures the relay latency of the others'
//           updates. The rooms are split between W worker threads (2).
//
// Common: --kind K --url ws://HOST:PORT --pid SERVER_PID [--secret S] [--api-key K (wsync /metrics)]
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { gunzipSync } from 'node:zlib';
import { createHmac } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import WebSocket from 'ws';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import { HocuspocusProvider } from '@hocuspocus/provider';
import * as encoding from 'lib0/encoding';
import * as decoding from 'lib0/decoding';

const argv = process.argv.slice(2);
const scenario = argv[0];
const opt = (n, d) => (argv.indexOf(`--${n}`) >= 0 ? argv[argv.indexOf(`--${n}`) + 1] : d);
const kind = opt('kind', 'wsync');
const base = opt('url', 'ws://127.0.0.1:8080').replace(/\/+$/, '');
const pid = Number(opt('pid', 0));
const secret = opt('secret', '');
const WAIT_MS = Number(opt('wait', 600000)); // guard against a hang, never a speed assertion

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const tick = () => new Promise((r) => setImmediate(r));

// ---- the server process, from /proc -------------------------------------------
const CLK_TCK = 100; // Linux USER_HZ on every platform it runs on
function serverStat() {
  if (!pid) return null;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k) => Number((new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status) || [])[1] || 0);
  return { cpu_s: (Number(f[11]) + Number(f[12])) / CLK_TCK, rss_kib: kib('VmRSS'), t: performance.now() };
}

// ---- auth: wsync wants a JWT; the peers take anything --------------------------
const b64url = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
function jwt(sub) {
  const head = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub, exp: Math.floor(Date.now() / 1000) + 86400, grants: { 'yjs:*': 'rw' } })}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}
const TOKEN = kind === 'wsync' ? jwt('bench') : 'bench';
const roomName = (r) => `yjs:${r}`;
const rawUrl = (room) => (kind === 'wsync' ? `${base}/v1/yjs/${room}?token=${TOKEN}` : `${base}/v1/yjs/${room}`);

// ---- one stock provider ----------------------------------------------------------
/** A provider of the server's kind on room for doc; .synced resolves on the first sync. */
function connect(room, doc) {
  if (kind === 'hocuspocus') {
    let done;
    const synced = new Promise((r) => { done = r; });
    const p = new HocuspocusProvider({ url: base, name: room, document: doc, token: TOKEN, WebSocketPolyfill: WebSocket, onSynced: () => done() });
    return { synced, socket: () => p.configuration.websocketProvider.webSocket, destroy: () => { p.destroy(); p.configuration.websocketProvider.destroy(); } };
  }
  const p = new WebsocketProvider(`${base}/v1/yjs`, room, doc, {
    WebSocketPolyfill: WebSocket, disableBc: true, params: kind === 'wsync' ? { token: TOKEN } : {},
  });
  const synced = new Promise((r) => { if (p.synced) r(); else p.on('sync', (s) => s && r()); });
  return { synced, socket: () => p.ws, destroy: () => p.destroy() };
}

function withTimeout(p, what, ms = WAIT_MS) {
  let timer;
  return Promise.race([p, new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out: ${what}`)), ms); })])
    .finally(() => clearTimeout(timer));
}

function loadTrace() {
  const file = opt('trace');
  const t = JSON.parse(gunzipSync(readFileSync(file)).toString('utf8'));
  const n = Math.min(Number(opt('edits', t.edits.length)), t.edits.length);
  let final = t.final;
  if (n < t.edits.length) { // the text after the first n edits
    const d = new Y.Doc();
    const s = d.getText('t');
    for (let i = 0; i < n; i++) { const [pos, del, ins] = t.edits[i]; if (del) s.delete(pos, del); if (ins) s.insert(pos, ins); }
    final = s.toString();
  }
  return { edits: t.edits.slice(0, n), final };
}

// ---- trace --------------------------------------------------------------------------
async function trace() {
  const { edits, final } = loadTrace();
  const window = Number(opt('window', 256 * 1024));
  const room = roomName('trace');
  const wdoc = new Y.Doc();
  const odoc = new Y.Doc();
  const wtext = wdoc.getText('text');
  const otext = odoc.getText('text');
  const writer = connect(room, wdoc);
  const observer = connect(room, odoc);
  await withTimeout(Promise.all([writer.synced, observer.synced]), 'both providers synced');
  let converged;
  const done = new Promise((r) => { converged = r; });
  odoc.on('update', () => {
    if (otext.length === final.length && otext.toString() === final) converged(performance.now());
  });
  const s0 = serverStat();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let waits = 0;
  for (let i = 0; i < edits.length; i++) {
    const [pos, del, ins] = edits[i];
    if (del) wtext.delete(pos, del); // each call its own transaction: one update per edit
    if (ins) wtext.insert(pos, ins);
    const ws = writer.socket();
    if (ws && ws.bufferedAmount > window) {
      waits++;
      while (ws.bufferedAmount > window && ws.readyState === WebSocket.OPEN) await tick();
    } else if ((i & 255) === 255) {
      await tick(); // let the observer's socket be read
    }
  }
  const tSent = performance.now();
  const tDone = await withTimeout(done, 'the observer to hold the final text');
  const s1 = serverStat();
  const c1 = process.cpuUsage(c0);
  const out = {
    scenario: 'trace', kind, edits: edits.length, final_chars: final.length,
    sent_ms: tSent - t0, converged_ms: tDone - t0, window_waits: waits,
    updates_per_s: edits.length / ((tDone - t0) / 1000),
    doc_bytes: Y.encodeStateAsUpdate(odoc).length,
    generator_cpu_s: (c1.user + c1.system) / 1e6,
  };
  if (s0) {
    out.server_cpu_s = s1.cpu_s - s0.cpu_s;
    out.server_cpu_us_per_update = (out.server_cpu_s * 1e6) / edits.length;
    out.server_rss_kib = s1.rss_kib;
    out.server_rss_growth_kib = s1.rss_kib - s0.rss_kib;
  }
  writer.destroy();
  observer.destroy();
  return out;
}

// ---- seed / load ------------------------------------------------------------------
async function seed() {
  const { final } = loadTrace();
  const src = new Y.Doc();
  src.getText('text').insert(0, final);
  const update = Y.encodeStateAsUpdate(src);
  const docs = Number(opt('docs', 20));
  for (let i = 0; i < docs; i++) {
    const d = new Y.Doc();
    const c = connect(roomName(`seed-${i}`), d);
    await withTimeout(c.synced, `seed-${i} synced`);
    Y.applyUpdate(d, update);
    // Stored and served: a fresh client gets it.
    for (;;) {
      const check = new Y.Doc();
      const cc = connect(roomName(`seed-${i}`), check);
      await withTimeout(cc.synced, `seed-${i} check synced`);
      let ok = true;
      await hasChars(check, final.length, 'seed check', 5000).catch(() => { ok = false; });
      cc.destroy();
      if (ok) break;
      await sleep(50);
    }
    c.destroy();
  }
  return { scenario: 'seed', kind, docs, update_bytes: update.length };
}

/**
 * Resolves when doc's text has n characters. A provider's "synced" may come
 * before the document: the reference server answers a sync with what it has
 * in memory while it still reads the stored document, which follows as an update.
 */
function hasChars(doc, n, what, ms = WAIT_MS) {
  const text = doc.getText('text');
  if (text.length === n) return Promise.resolve();
  return withTimeout(new Promise((resolve) => {
    const on = () => { if (text.length === n) { doc.off('update', on); resolve(); } };
    doc.on('update', on);
  }), what, ms);
}

async function load() {
  const { final } = loadTrace();
  const docs = Number(opt('docs', 20));
  await sleep(500); // the server's own start-up settles
  const s0 = serverStat();
  const t0 = performance.now();
  const d = new Y.Doc();
  const first = connect(roomName('trace'), d);
  await withTimeout(first.synced, 'cold load of the trace room');
  await hasChars(d, final.length, 'the trace document after a cold load');
  const coldMs = performance.now() - t0;
  const ok = d.getText('text').toString() === final;
  const open = [first];
  for (let i = 0; i < docs; i++) {
    const sd = new Y.Doc();
    const c = connect(roomName(`seed-${i}`), sd);
    await withTimeout(c.synced, `seed-${i} cold load`);
    await hasChars(sd, final.length, `seed-${i} after a cold load`);
    open.push(c);
  }
  await sleep(1000); // anything the server does after a sync (stores, timers) happens now
  const s1 = serverStat();
  const out = { scenario: 'load', kind, cold_load_ms: coldMs, cold_load_ok: ok, docs_loaded: docs + 1 };
  if (kind === 'wsync' && opt('api-key')) {
    // What wsync says it holds: the document bytes of its loaded Yjs rooms.
    const r = await fetch(`${base.replace(/^ws/, 'http')}/metrics`, { headers: { Authorization: `Bearer ${opt('api-key')}` } });
    const text = await r.text();
    const metric = (name) => Number((new RegExp(`^${name} (\\d+)`, 'm').exec(text) || [])[1]);
    out.wsync_yjs_rooms = metric('wsync_yjs_rooms');
    out.wsync_yjs_bytes = metric('wsync_yjs_bytes');
    out.wsync_bytes_per_loaded_doc = out.wsync_yjs_bytes / out.wsync_yjs_rooms;
  }
  if (s0) {
    out.server_rss_base_kib = s0.rss_kib;
    out.server_rss_loaded_kib = s1.rss_kib;
    out.kib_per_loaded_doc = (s1.rss_kib - s0.rss_kib) / (docs + 1);
  }
  for (const c of open) c.destroy();
  return out;
}

// ---- rooms: raw sockets ---------------------------------------------------------------
// A raw client is a WebSocket from `ws` and a hand-encoded Yjs update per
// send: a one-character insert into Y.Text "text" by this client at clock k,
// whose left origin is its own previous character (checked byte for byte
// against Yjs at start-up). Receivers read (client, clock) from the update's
// first struct to find its send time: no Y.Doc per client, so ten thousand
// clients cost the generator little.
function rawUpdate(client, clock) {
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, 1); // clients in the update
  encoding.writeVarUint(e, 1); // structs of this client
  encoding.writeVarUint(e, client);
  encoding.writeVarUint(e, clock);
  if (clock === 0) {
    encoding.writeUint8(e, 4); // ContentString, no origins: parent follows
    encoding.writeVarUint(e, 1); // parent is a root type, by name
    encoding.writeVarString(e, 'text');
  } else {
    encoding.writeUint8(e, 0x84); // ContentString with a left origin
    encoding.writeVarUint(e, client);
    encoding.writeVarUint(e, clock - 1);
  }
  encoding.writeVarString(e, String.fromCharCode(97 + (clock % 26)));
  encoding.writeVarUint(e, 0); // empty delete set
  return encoding.toUint8Array(e);
}

/**
 * [client, clock, length] of each run of characters in an update. The usual
 * case, one update as a client sent it, is read directly; anything else (a
 * server that merges updates before relaying) goes through Y.decodeUpdate.
 */
function charsOf(u) {
  const d = decoding.createDecoder(u);
  if (decoding.readVarUint(d) === 1 && decoding.readVarUint(d) === 1) {
    const client = decoding.readVarUint(d);
    const clock = decoding.readVarUint(d);
    const info = decoding.readUint8(d);
    if (info === 0x84 || info === 4) {
      if (info === 0x84) { decoding.readVarUint(d); decoding.readVarUint(d); } else { decoding.readVarUint(d); decoding.readVarString(d); }
      const len = decoding.readVarString(d).length;
      if (decoding.readVarUint(d) === 0 && !decoding.hasContent(d)) return [[client, clock, len]];
    }
  }
  const runs = [];
  for (const st of Y.decodeUpdate(u).structs) {
    if (st instanceof Y.Item) runs.push([st.id.client, st.id.clock, st.length]);
  }
  return runs;
}

function checkRawUpdate() {
  const d = new Y.Doc();
  d.clientID = 123456;
  const got = [];
  d.on('update', (u) => got.push(u));
  for (let k = 0; k < 3; k++) d.getText('text').insert(k, String.fromCharCode(97 + k));
  for (let k = 0; k < 3; k++) {
    if (Buffer.compare(Buffer.from(got[k]), Buffer.from(rawUpdate(123456, k))) !== 0) {
      throw new Error(`hand-encoded update ${k} differs from Yjs: ${Buffer.from(rawUpdate(123456, k)).toString('hex')} vs ${Buffer.from(got[k]).toString('hex')}`);
    }
  }
}

const syncMsg = (sub, payload) => {
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, 0);
  encoding.writeVarUint(e, sub);
  encoding.writeVarUint8Array(e, payload);
  return encoding.toUint8Array(e);
};
// Hocuspocus frames every message with the document name first, and wants an
// auth message (token, then the provider's version) before anything else.
const hpFrame = (room, body) => {
  const e = encoding.createEncoder();
  encoding.writeVarString(e, room);
  encoding.writeUint8Array(e, body);
  return encoding.toUint8Array(e);
};
const hpAuth = () => {
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, 2); // MessageType.Auth
  encoding.writeVarUint(e, 0); // AuthMessageType.Token
  encoding.writeVarString(e, TOKEN);
  return encoding.toUint8Array(e);
};

// The rooms are split between --workers threads (default 2), each with its
// own event loop, so that receiving 90,000 messages a second is not one
// loop's job; the main thread only starts, stops and reads /proc. A room's
// clients all live in one thread, so each latency is read on one clock.
const R = Number(opt('rooms', 1000));
const C = Number(opt('clients', 10));
const RATE = Number(opt('rate', 1));
const HIST = 200001; // 50 us buckets up to 10 s, then the last one

async function roomsPart(rFrom, rTo, port) {
  checkRawUpdate();
  const duration = Number(opt('duration', 60));
  const warmup = Number(opt('warmup', 5));
  const perClient = Math.ceil((duration + warmup + 10) * RATE) + 2;
  const hist = new Uint32Array(HIST);
  // Counted: deliveries of the updates sent in [winFrom, winTo), however late
  // they arrive (sending stops at winTo, then the generator drains).
  let received = 0;
  let sent = 0;
  let measuring = false;
  let winFrom = Infinity;
  let winTo = Infinity;
  let lastRecv = 0;
  const msgTypes = {}; // messages received in the window, by y-protocols type: a diagnostic
  const clients = [];
  const byId = new Map();
  const EMPTY_SV = new Uint8Array([0]);
  const EMPTY_UPDATE = new Uint8Array([0, 0]);
  const next = (what) => new Promise((resolve) => {
    const on = (m) => { if (m === what) { port.off('message', on); resolve(); } };
    port.on('message', on);
  });

  const open = (r, c) => new Promise((resolve, reject) => {
    const room = roomName(`r${r}`);
    const ws = new WebSocket(rawUrl(room), { perMessageDeflate: false });
    const cl = { ws, room, id: 1 + r * C + c, clock: 0, sentAt: new Float64Array(perClient) };
    const frame = kind === 'hocuspocus' ? (body) => hpFrame(room, body) : (body) => body;
    cl.frame = frame;
    ws.binaryType = 'nodebuffer';
    ws.on('open', () => {
      if (kind === 'hocuspocus') ws.send(frame(hpAuth()));
      ws.send(frame(syncMsg(0, EMPTY_SV)));
      resolve(cl);
    });
    ws.on('error', reject);
    ws.on('message', (buf) => {
      const d = decoding.createDecoder(buf);
      if (kind === 'hocuspocus') decoding.readVarString(d);
      const type = decoding.readVarUint(d);
      if (type !== 0) { // awareness, auth, ...
        if (measuring) msgTypes[`t${type}`] = (msgTypes[`t${type}`] || 0) + 1;
        return;
      }
      const sub = decoding.readVarUint(d);
      if (measuring) msgTypes[`sync${sub}`] = (msgTypes[`sync${sub}`] || 0) + 1;
      if (sub === 0) { ws.send(frame(syncMsg(1, EMPTY_UPDATE))); return; } // the server's step 1
      if (sub !== 2) return; // step 2: the room so far
      const now = performance.now();
      for (const [from, clock, len] of charsOf(decoding.readVarUint8Array(d))) {
        if (from === cl.id) continue; // its own, echoed by some servers
        const src = byId.get(from);
        if (!src) continue;
        for (let k = clock; k < clock + len; k++) {
          const at = src.sentAt[k];
          if (!(at >= winFrom && at < winTo)) continue; // sent outside the measured window
          received++;
          lastRecv = now;
          hist[Math.min(HIST - 1, Math.floor(((now - at) * 1000) / 50))]++;
        }
      }
    });
  });

  const tOpen0 = performance.now();
  for (let r = rFrom; r < rTo; r++) {
    const batch = [];
    for (let c = 0; c < C; c++) batch.push(open(r, c));
    for (const cl of await withTimeout(Promise.all(batch), `room ${r} connected`)) { clients.push(cl); byId.set(cl.id, cl); }
  }
  port.postMessage({ ready: true, connect_ms: performance.now() - tOpen0 });
  await next('go');

  // Each client sends `rate` updates a second, at its own phase in the second.
  const period = 1000 / RATE;
  const timers = [];
  const sendOne = (cl) => {
    if (cl.ws.readyState !== WebSocket.OPEN || cl.clock >= perClient) return;
    const k = cl.clock++;
    cl.sentAt[k] = performance.now();
    cl.ws.send(cl.frame(syncMsg(2, rawUpdate(cl.id, k))));
    if (measuring) sent++;
  };
  for (const cl of clients) {
    timers.push(setTimeout(() => { sendOne(cl); timers.push(setInterval(() => sendOne(cl), period)); }, Math.random() * period));
  }
  await next('measure');
  measuring = true;
  winFrom = performance.now();
  // This thread's event-loop delay: when it is of the order of the latencies
  // measured, those are the generator's, not the server's.
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  await next('stop');
  measuring = false;
  winTo = performance.now();
  lag.disable();
  for (const t of timers) { clearTimeout(t); clearInterval(t); }
  // Drain: what the window sent may still be on its way; wait until all of
  // it came or nothing came for 2 s (the count says which).
  const drainEnd = performance.now() + Number(opt('drain', 30)) * 1000;
  while (received < sent * (C - 1) && performance.now() < drainEnd
    && performance.now() - Math.max(lastRecv, winTo) < 2000) await sleep(50);
  const closed = clients.filter((cl) => cl.ws.readyState !== WebSocket.OPEN).length;
  for (const cl of clients) cl.ws.terminate();
  port.postMessage({
    result: {
      sent, received, hist, msgTypes, closed, lag_p50: lag.percentile(50) / 1e6, lag_p99: lag.percentile(99) / 1e6,
    },
  }, [hist.buffer]);
}

async function rooms() {
  const W = Math.max(1, Math.min(Number(opt('workers', 2)), R));
  const duration = Number(opt('duration', 60));
  const warmup = Number(opt('warmup', 5));
  const workers = [];
  const ready = [];
  const results = [];
  for (let i = 0; i < W; i++) {
    const w = new Worker(new URL(import.meta.url), {
      argv: process.argv.slice(2), workerData: { rFrom: Math.floor((R * i) / W), rTo: Math.floor((R * (i + 1)) / W) },
    });
    let failed;
    const error = new Promise((_, rej) => { failed = rej; });
    w.on('error', (e) => failed(e));
    ready.push(Promise.race([new Promise((r) => w.on('message', (m) => m.ready && r(m))), error]));
    results.push(Promise.race([new Promise((r) => w.on('message', (m) => m.result && r(m.result))), error]));
    workers.push(w);
  }
  const readies = await withTimeout(Promise.all(ready), 'every room connected');
  const all = (m) => { for (const w of workers) w.postMessage(m); };
  all('go');
  await sleep(warmup * 1000);
  const s0 = serverStat();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  all('measure');
  let peak = s0 ? s0.rss_kib : 0;
  while (performance.now() - t0 < duration * 1000) {
    await sleep(Math.min(500, Math.max(1, duration * 1000 - (performance.now() - t0))));
    const s = serverStat();
    if (s) peak = Math.max(peak, s.rss_kib);
  }
  all('stop');
  const elapsed = (performance.now() - t0) / 1000;
  const s1 = serverStat();
  const c1 = process.cpuUsage(c0); // every thread of this process
  const parts = await withTimeout(Promise.all(results), 'every worker drained');
  for (const w of workers) w.terminate();
  const hist = new Uint32Array(HIST);
  let sent = 0;
  let received = 0;
  let closed = 0;
  const msgTypes = {};
  for (const p of parts) {
    sent += p.sent;
    received += p.received;
    closed += p.closed;
    for (let i = 0; i < HIST; i++) hist[i] += p.hist[i];
    for (const [k, v] of Object.entries(p.msgTypes)) msgTypes[k] = (msgTypes[k] || 0) + v;
  }
  const pct = (q) => {
    const want = Math.ceil(received * q);
    let acc = 0;
    for (let i = 0; i < HIST; i++) { acc += hist[i]; if (acc >= want) return (i + 0.5) * 0.05; }
    return NaN;
  };
  const out = {
    scenario: 'rooms', kind, rooms: R, clients_per_room: C, rate: RATE, duration_s: elapsed, workers: W,
    connect_ms: Math.max(...readies.map((r) => r.connect_ms)),
    updates_sent: sent, deliveries: received, deliveries_expected: sent * (C - 1), closed_clients: closed,
    latency_ms: { p50: pct(0.5), p99: pct(0.99), max_bucket: pct(1) },
    generator_cpu_pct: ((c1.user + c1.system) / 1e4) / elapsed,
    updates_intended: Math.round(R * C * RATE * elapsed),
    messages_received: msgTypes,
    generator_loop_delay_ms: { p50: Math.max(...parts.map((p) => p.lag_p50)), p99: Math.max(...parts.map((p) => p.lag_p99)) },
    machine_load_avg: os.loadavg()[0],
  };
  if (s0) {
    out.server_cpu_pct = ((s1.cpu_s - s0.cpu_s) * 100) / elapsed;
    out.server_rss_kib = s1.rss_kib;
    out.server_rss_peak_kib = peak;
  }
  return out;
}

if (!isMainThread) {
  await roomsPart(workerData.rFrom, workerData.rTo, parentPort);
  await new Promise(() => {}); // the main thread terminates this worker
}

const run = { trace, seed, load, rooms }[scenario];
if (!run) {
  process.stderr.write('usage: node yjs-load.mjs trace|seed|load|rooms --kind wsync|y-websocket|hocuspocus --url ws://HOST:PORT [--pid N] ...\n');
  process.exit(2);
}
try {
  const out = await run();
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
} catch (err) {
  process.stderr.write(`yjs-load ${scenario} (${kind}): ${err.stack || err}\n`);
  process.exit(1);
}
