// sync.mjs -- a small client for the wsync JSON protocol (docs/PROTOCOL.md)
// over the `ws` package, plus tokens and a document replica for the sync-*
// tests. Every message the server sends is kept in c.log (arrival order);
// replies to requests made with c.request() resolve that request (matched by
// `re`), everything else waits in c.queue until c.waitFor() takes it.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import WebSocket from 'ws';

import { runCli, sanitizerReport, startServer, WAIT_MS, withTimeout } from './server.mjs';

/** The HS256 secret the sync tests run their servers with. */
export const SECRET = 'e2e-sync-secret-0123456789abcdef';

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/**
 * A hand-made JWT: header and payload objects (or raw strings), signed with
 * HMAC-SHA256 (or sha512 for alg HS512) unless sig is given.
 */
export function craftToken(payload, { header = { alg: 'HS256', typ: 'JWT' }, secret = SECRET, sig } = {}) {
  const head = `${b64url(header)}.${b64url(payload)}`;
  if (sig !== undefined) return `${head}.${sig}`;
  const alg = typeof header === 'object' && header.alg === 'HS512' ? 'sha512' : 'sha256';
  return `${head}.${createHmac(alg, secret).update(head).digest('base64url')}`;
}

/** Seconds since the epoch. */
export const nowS = () => Math.floor(Date.now() / 1000);

/** A valid token made by hand: sub, grants, optional device, an hour to live. */
export function token(sub, grants = { '*': 'rw' }, extra = {}) {
  return craftToken({ sub, exp: nowS() + 3600, grants, ...extra });
}

/** A token minted by the binary itself: `wsync token ...`. */
export function mintToken({ user, device, grants = [], ttl = '1h', secret = SECRET }) {
  const args = ['token', '--user', user, '--ttl', ttl, '--auth-secret', secret];
  if (device) args.push('--device', device);
  for (const g of grants) args.push('--grant', g);
  const r = runCli(args);
  assert.equal(r.status, 0, `wsync token failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** WSYNC_E2E_CLUSTER=N (N > 0): startSyncServer starts N nodes behind a round-robin proxy. */
export const CLUSTER = Number(process.env.WSYNC_E2E_CLUSTER || 0) > 0;

/**
 * Where a session lives, for the checks that need that node itself (a
 * WebSocket resume, PROTOCOL.md 3.5: a resume reaching another node starts a
 * new session): on one server srv itself; on a cluster (startSyncServer with
 * WSYNC_E2E_CLUSTER) the node its token names, with url, wsUrl and port.
 */
export function sessionHome(srv, session) {
  return srv.nodeOf ? srv.nodeOf(session) : srv;
}

/** Starts a server with the sync flags the tests use by default (auth secret). */
export async function startSyncServer(t, extraArgs = [], opts = {}) {
  // WSYNC_E2E_CLUSTER=N: the same suite against N nodes behind a round-robin
  // proxy (lib/cluster.mjs, make e2e-cluster).
  const n = Number(process.env.WSYNC_E2E_CLUSTER || 0);
  if (CLUSTER) {
    const { startProxiedCluster } = await import('./cluster.mjs');
    return startProxiedCluster(t, n, ['--auth-secret', SECRET, ...extraArgs], { echo: opts.echo === true });
  }
  return startServer(t, ['--auth-secret', SECRET, ...extraArgs], { echo: false, ...opts });
}

/**
 * A sync server that can be stopped and started again on the same data dir
 * and port: kill() (SIGKILL, a crash), stop() (SIGTERM, must exit 0) and
 * start(). Every generation's stderr is checked for sanitizer reports. t gets
 * an after hook that stops the running generation and removes the data dir.
 */
export async function restartableServer(t, extraArgs = []) {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'wsync-e2e-'));
  const args = ['--auth-secret', SECRET, ...extraArgs];
  let cur = null;
  let running = false;
  const check = (gen) => {
    const report = sanitizerReport(gen.stderr);
    if (report) throw new Error(`sanitizer report from wsync:\n${report}`);
  };
  const h = {
    dataDir,
    port: 0,
    url: '',
    generations: 0,
    get srv() { return cur; },
    async start() {
      cur = await startServer(null, args, { echo: false, dataDir, listen: h.port ? `127.0.0.1:${h.port}` : undefined });
      running = true;
      h.generations++;
      if (!h.port) {
        h.port = cur.port;
        h.url = cur.url;
      }
      assert.equal(cur.port, h.port, 'restarted on the same port');
      return h;
    },
    /** SIGKILL: no chance to flush or say goodbye. */
    async kill() {
      running = false;
      const e = await cur.stop('SIGKILL');
      check(cur);
      return e;
    },
    /** SIGTERM: a graceful stop, exit code 0. */
    async stop() {
      running = false;
      const e = await cur.stop('SIGTERM');
      check(cur);
      if (e.signal || e.code !== 0) throw new Error(`wsync exited with ${e.signal || e.code}:\n${cur.stderr.slice(-3000)}`);
      return e;
    },
  };
  t.after(async () => {
    try {
      if (running) await cur.stopChecked();
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
  return h.start();
}

let connSeq = 0;

export class SyncClient {
  constructor(ws, name) {
    this.ws = ws;
    this.name = name;
    this.log = [];       // every parsed message, in arrival order
    this.queue = [];     // messages no request claimed, not yet taken
    this.pending = new Map(); // id -> {resolve, reject, msg}
    this.waiters = new Set();
    this.nextId = 1;
    this.closeInfo = null;
    this.welcome = null;
    this.closedPromise = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        for (const p of this.pending.values()) p.reject(new Error(`${this.name}: closed (${code}) before the reply to ${JSON.stringify(p.msg).slice(0, 200)}`));
        this.pending.clear();
        this._wake();
        resolve(this.closeInfo);
      });
    });
    ws.on('error', (e) => { this.lastError = e; });
    ws.on('message', (data, isBinary) => {
      let m;
      try {
        m = JSON.parse(data.toString());
      } catch {
        m = { type: '<unparsable>', raw: data.toString(), isBinary };
      }
      this.log.push(m);
      const p = m.re !== undefined ? this.pending.get(keyOf(m.re)) : undefined;
      if (p) {
        this.pending.delete(keyOf(m.re));
        p.resolve(m);
      } else {
        this.queue.push(m);
      }
      this._wake();
    });
  }

  _wake() {
    for (const w of [...this.waiters]) w();
  }

  /** Opens a WebSocket to /v1/ws (no hello). */
  static async open(url, name = `c${++connSeq}`, wsOpts = {}) {
    const ws = new WebSocket(`${url}/v1/ws`, { perMessageDeflate: false, ...wsOpts });
    const c = new SyncClient(ws, name);
    await withTimeout(new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
    }), WAIT_MS, `${name}: WebSocket open`);
    return c;
  }

  /**
   * Opens a connection and says hello; resolves the client once welcomed,
   * rejects with the error otherwise. hello: the members of the hello
   * ({token, device} or {user, device}).
   */
  static async connect(url, hello, name, wsOpts = {}) {
    const c = await SyncClient.open(url, name || `${hello.user || 'tok'}/${hello.device}`, wsOpts);
    const r = await c.request({ type: 'hello', v: 1, ...hello });
    if (r.type !== 'welcome') {
      c.ws.terminate();
      throw new Error(`hello refused: ${JSON.stringify(r)}`);
    }
    c.welcome = r;
    return c;
  }

  get open() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * The messages received after this connection's welcome, in order: on a
   * new session element i has the session ordinal i + 1 (3.4); on a resumed
   * one, ordinal last + i + 1. Everything when there was no welcome.
   */
  get afterWelcome() {
    return this.log.slice(this.log.indexOf(this.welcome) + 1);
  }

  /** How many messages arrived after the welcome (the ordinals counted on this connection). */
  get received() {
    return this.afterWelcome.length;
  }

  /** Sends a message object (or a raw string / Buffer) without waiting. */
  send(msg, opts) {
    const data = typeof msg === 'string' || Buffer.isBuffer(msg) ? msg : JSON.stringify(msg);
    this.ws.send(data, opts, () => {});
  }

  /**
   * Sends msg with a fresh integer id (unless it has one) and resolves the
   * reply (the message whose `re` equals the id: a reply or an error).
   */
  request(msg, ms = WAIT_MS) {
    const m = msg.id === undefined ? { ...msg, id: this.nextId++ } : msg;
    if (this.closeInfo) return Promise.reject(new Error(`${this.name}: closed (${this.closeInfo.code})`));
    const p = new Promise((resolve, reject) => this.pending.set(keyOf(m.id), { resolve, reject, msg: m }));
    this.send(m);
    return withTimeout(p, ms, `${this.name}: reply to ${JSON.stringify(m).slice(0, 200)}`);
  }

  /** A request whose reply must have type `type`; resolves it. */
  async expect(msg, type) {
    const r = await this.request(msg);
    assert.equal(r.type, type, `${this.name}: ${JSON.stringify(msg).slice(0, 200)} -> ${JSON.stringify(r).slice(0, 500)}`);
    return r;
  }

  /** A request that must fail with `code`; resolves the error. */
  async expectError(msg, code) {
    const r = await this.request(msg);
    assert.equal(r.type, 'error', `${this.name}: expected error ${code} for ${JSON.stringify(msg).slice(0, 200)}, got ${JSON.stringify(r).slice(0, 500)}`);
    assert.equal(r.code, code, `${this.name}: ${JSON.stringify(msg).slice(0, 200)} -> ${JSON.stringify(r).slice(0, 500)}`);
    return r;
  }

  /**
   * Takes (removes and resolves) the first queued message matching pred,
   * waiting for it if needed. Rejects when the connection closes first.
   */
  waitFor(pred, what = 'a message', ms = WAIT_MS) {
    const run = new Promise((resolve, reject) => {
      const check = () => {
        const i = this.queue.findIndex(pred);
        if (i >= 0) {
          this.waiters.delete(check);
          resolve(this.queue.splice(i, 1)[0]);
          return;
        }
        if (this.closeInfo) {
          this.waiters.delete(check);
          reject(new Error(`${this.name}: closed (${this.closeInfo.code} ${this.closeInfo.reason}) while waiting for ${what}`));
        }
      };
      this.waiters.add(check);
      check();
    });
    return withTimeout(run, ms, `${this.name}: ${what}`).catch((e) => {
      throw new Error(`${e.message}; queue: ${JSON.stringify(this.queue.slice(-5)).slice(0, 1500)}`);
    });
  }

  /** Takes n queued messages matching pred, in arrival order. */
  async take(n, pred, what = 'messages', ms = WAIT_MS) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(await this.waitFor(pred, `${what} (${i + 1} of ${n})`, ms));
    return out;
  }

  /** Queued messages matching pred, removed from the queue. */
  drain(pred = () => true) {
    const out = this.queue.filter(pred);
    this.queue = this.queue.filter((m) => !pred(m));
    return out;
  }

  /**
   * A round trip: ping/pong. Everything the server sent this session before
   * answering the ping (synchronous replies, presence) is in the queue then.
   * Acks and broadcasts wait for the disk, so this is no barrier for them.
   */
  async ping() {
    const r = await this.request({ type: 'ping' });
    assert.equal(r.type, 'pong');
  }

  /** Resolves {code, reason} when the connection has closed. */
  closed(ms = WAIT_MS) {
    return withTimeout(this.closedPromise, ms, `${this.name}: close`);
  }

  /**
   * Ends the session (bye: the server closes with 1000) and waits for the
   * close; terminates the socket if that stalls. A plain close would only
   * detach the session (3.5), leaving its presence behind for the resume window.
   */
  async close() {
    if (this.ws.readyState === WebSocket.OPEN) this.send({ type: 'bye' });
    await this.closed().catch(() => this.ws.terminate());
  }

  /** Drops the TCP connection without a close handshake (the session detaches). */
  drop() {
    this.ws.terminate();
    return this.closed();
  }

  // ---- protocol shortcuts ----------------------------------------------

  /** join -> joined (asserted); extra: since, presence, ... */
  join(room, extra = {}) {
    return this.expect({ type: 'join', room, ...extra }, 'joined');
  }

  /**
   * join -> the whole joined: when it comes in parts (PROTOCOL.md 6.3, `more`),
   * waits for the `snapshot` or `catchup` messages up to the last and
   * returns the joined with every item or op in it (and no `more`).
   */
  async joinWhole(room, extra = {}) {
    const mark = this.log.length;
    const j = await this.join(room, extra);
    if (!j.more) return j;
    const type = j.recovered ? 'catchup' : 'snapshot';
    await this.waitFor((m) => m.type === type && m.room === room && m.more === false, `the last ${type} part`, 120000);
    const parts = this.log.slice(mark).filter((m) => m.type === type && m.room === room);
    const whole = { ...j };
    delete whole.more;
    if (j.recovered) whole.ops = [...j.ops, ...parts.flatMap((p) => p.ops)];
    else whole.snapshot = { items: Object.assign({}, j.snapshot.items, ...parts.map((p) => p.items)) };
    return whole;
  }

  /** An op request; resolves the reply (ack or error). */
  op(room, cid, op) {
    return this.request({ type: 'op', room, cid, op });
  }

  /** set -> ack (asserted). */
  async set(room, cid, item, fields, extra = {}) {
    return this.expect({ type: 'op', room, cid, op: { kind: 'set', item, fields, ...extra } }, 'ack');
  }

  /** Waits for the broadcast entry of room with this seq. */
  entry(room, seq) {
    return this.waitFor((m) => (m.type === 'op' || m.type === 'message') && m.room === room && m.seq === seq,
      `entry ${room}#${seq}`);
  }
}

const keyOf = (id) => `${typeof id}:${id}`;

/** Closes every client given (ignores the ones already gone). */
export async function closeClients(...clients) {
  await Promise.all(clients.flat().filter(Boolean).map((c) => c.close()));
}

/**
 * A room replica as a client keeps one: items {id: {version, fields}}, and
 * the position {epoch, seq}. apply() checks that entries come gapless.
 */
export class Replica {
  constructor(joined) {
    this.items = {};
    this.epoch = joined.epoch;
    this.seq = 0;
    this.entries = [];
    this.reset(joined);
  }

  /** Applies a joined: a snapshot replaces the replica, ops are applied. */
  reset(joined) {
    assert.equal(typeof joined.epoch, 'string');
    assert.equal(typeof joined.seq, 'number');
    if (joined.recovered) {
      assert.ok(Array.isArray(joined.ops), 'recovered joined has ops');
      assert.equal(joined.snapshot, undefined, 'recovered joined has no snapshot');
      assert.equal(joined.epoch, this.epoch, 'recovered joined keeps the epoch');
      for (const e of joined.ops) this.apply(e);
      assert.equal(this.seq, joined.seq, 'ops of a recovered joined end at its seq');
    } else {
      assert.ok(joined.snapshot && typeof joined.snapshot.items === 'object', 'joined has a snapshot');
      assert.equal(joined.ops, undefined, 'a snapshot joined has no ops');
      this.items = structuredClone(joined.snapshot.items);
      this.epoch = joined.epoch;
      this.seq = joined.seq;
    }
  }

  /** Applies one log entry (op or stored message); asserts seq = seq + 1. */
  apply(e) {
    assert.equal(e.seq, this.seq + 1, `entry seq ${e.seq} follows ${this.seq}: ${JSON.stringify(e).slice(0, 300)}`);
    this.seq = e.seq;
    this.entries.push(e);
    if (e.type !== 'op') return;
    if (e.op.kind === 'batch') {
      for (const sub of e.op.ops) {
        assert.ok(sub.kind === 'set' || sub.kind === 'del', `batch sub-op kind ${sub.kind}`);
        this._applyOne(sub, e.seq);
      }
    } else {
      this._applyOne(e.op, e.seq);
    }
  }

  /** Applies one set or del with version seq (5.4). */
  _applyOne(op, seq) {
    if (op.kind === 'del') {
      delete this.items[op.item];
    } else if (op.kind === 'set') {
      const it = this.items[op.item] || { version: 0, fields: {} };
      for (const [k, v] of Object.entries(op.fields)) {
        if (v === null) delete it.fields[k];
        else it.fields[k] = structuredClone(v);
      }
      it.version = seq;
      this.items[op.item] = it;
    } else {
      throw new Error(`unexpected op kind ${op.kind}`);
    }
  }

  get position() {
    return { epoch: this.epoch, seq: this.seq };
  }
}

/** A fresh connection's view of a room: {epoch, seq, items}. */
let snapSeq = 0;
export async function snapshotOf(url, room, hello = { token: token('snapshotter'), device: `snap-${process.pid}-${++snapSeq}` }) {
  const c = await SyncClient.connect(url, hello);
  try {
    const j = await c.join(room);
    assert.equal(j.recovered, false);
    return { epoch: j.epoch, seq: j.seq, items: j.snapshot.items };
  } finally {
    await c.close();
  }
}

/**
 * A backend API request (PROTOCOL.md 12): method, path and options key (the
 * bearer key; none when absent), body (an object is sent as JSON, a string
 * as it is), headers. Resolves {status, headers, text, body} where body is
 * the parsed JSON (undefined when the text is not JSON).
 */
export async function api(url, method, path, { key, body, headers = {} } = {}) {
  const h = { ...headers };
  if (key !== undefined) h.Authorization = `Bearer ${key}`;
  let payload;
  if (body !== undefined) {
    payload = typeof body === 'string' ? body : JSON.stringify(body);
    h['Content-Type'] ??= 'application/json';
  }
  const res = await withTimeout(fetch(url + path, { method, headers: h, body: payload }), WAIT_MS, `${method} ${path}`);
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, body: json };
}

/**
 * Parses the Prometheus text format into a Map from the series as written
 * (`name` or `name{label="v",...}`) to its value; comments are skipped.
 */
export function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (!m) throw new Error(`not a metrics line: ${JSON.stringify(line)}`);
    out.set(m[1], Number(m[2]));
  }
  return out;
}

/** GET /metrics with the key; resolves the parsed series (asserts 200). */
export async function fetchMetrics(url, key) {
  const r = await api(url, 'GET', '/metrics', { key });
  assert.equal(r.status, 200, `GET /metrics -> ${r.status} ${r.text.slice(0, 300)}`);
  return parseMetrics(r.text);
}
