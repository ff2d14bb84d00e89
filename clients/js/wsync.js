// wsync.js -- the JavaScript client of wsync (docs/PROTOCOL.md).
//
// One Client holds one session with the server over the best transport that
// works (transports.js) and a local replica of each room it has joined. Reads
// are local; writes apply at once (optimistically) and are confirmed by the
// server's `ack` or rolled back on its `error`.
//
// The replica of a room is two things, never mixed:
//
//   _server   the confirmed document: log entries applied in seq order
//             (5.4), deduplicated by seq, replaced by a snapshot (6.3)
//   _pending  our ops not yet seen in the log, in the order made
//
// and what the application reads, `items`, is always _server with every
// pending op re-applied in order (Room._refresh). Rolling back one of several
// pending ops on an item is then just dropping it and recomputing.
//
// Connection life (Client):
//
//   connecting/resuming --welcome--> online --transport closed--> offline
//        ^   | every transport failed        | 4001 (replaced), client.close()
//        |   v                               v
//        +-- offline (backoff, full jitter)  stopped (no reconnect)
//
// After a welcome with resumed:true the rooms stay joined and the server
// replays what the dead connection lost; after resumed:false every room is
// joined again with `since` (catch-up, 6.2). Either way every op without an
// ack is sent again with its cid, which the server's dedupe (5.5) makes safe.
//
// Op kinds are dispatched through one table (defineOpKind); collaborative
// text (5.7, room.text(), at the end of this file) is one such kind, wrapping
// a TextDoc (text.js) per shared field.
//
// Plain ES module, no runtime dependencies; loads unbundled in browsers and
// in Node >= 18 (pass the `ws` package's WebSocket as options.WebSocket).

import { ORDERLY_CLOSES, TRANSPORTS } from './transports.js';
import { PendingStore, deviceId, fileDeviceId, pickStorage, randomId, storageGet, storageSet } from './persist.js';
import { TextDoc, apply as applyText, bindTextarea, diffMinimal } from './text.js';

export { bindTextarea };

const noop = () => {};

// ---- events ----------------------------------------------------------------

/** A minimal event emitter: on/off/once/emit. A throwing listener does not stop the others. */
export class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return this;
  }

  off(event, fn) {
    const s = this._listeners.get(event);
    if (s) s.delete(fn);
    return this;
  }

  once(event, fn) {
    const w = (...args) => {
      this.off(event, w);
      fn(...args);
    };
    return this.on(event, w);
  }

  emit(event, ...args) {
    const s = this._listeners.get(event);
    if (!s) return;
    for (const fn of [...s]) {
      try {
        fn(...args);
      } catch (err) {
        // The replica must stay consistent whatever a listener does: report
        // the exception on a later turn, as an EventTarget would.
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
  }
}

/** An error from the server (err.code = its code, err.details = the error object) or from the client. */
export class WsyncError extends Error {
  constructor(code, message, details) {
    super(message || code);
    this.name = 'WsyncError';
    this.code = code;
    if (details) this.details = details;
  }
}

/**
 * The server refused the hello for good (3.1): err.code is 'token_invalid',
 * 'token_expired', 'unauthorized' (or 'bad_request', 'unsupported_version').
 * The client stopped: `ready`, pending and later writes reject with it.
 */
export class AuthError extends WsyncError {
  constructor(code, message, details) {
    super(code, message, details);
    this.name = 'AuthError';
  }
}

const serverError = (m) => new WsyncError(m.code, m.message || m.code, m);

// ---- op kinds ----------------------------------------------------------------

/*
** The single dispatch point for ops. Every op the room applies -- a log entry
** from the server, a catch-up entry, a pending op re-applied on top of the
** server state -- and every ack and error of one of our ops goes through the
** handler of its kind:
**
**   expand(op)                 -> the single-item ops it consists of (default [op])
**   apply(fields, op, ctx)     -> the item's new fields (undefined: the item is
**                                 gone). Must not modify `fields`: return a new
**                                 object. ctx = {room, seq, local}: local is
**                                 true when a pending op is re-applied.
**   revs(revs, op)             optional: the item's new text revisions (5.7,
**                                 {field: rev}) after a log entry; must not
**                                 modify `revs`. Default: unchanged.
**   onEntry(room, entry)       optional: an entry of this kind was applied to
**                                 the server state (e.g. transform pending ops)
**   onAck(room, rec, ack)      optional: one of our ops was acknowledged
**   onError(room, rec, error)  optional: one of our ops was rejected; return
**                                 'retry' to keep and re-send it, 'keep' to keep
**                                 it unsent, 'drop' to forget it silently (the
**                                 handler dealt with it: no 'error' event),
**                                 anything else rolls it back
**
** `rec` is the pending record: {cid, msg: {type:'op', room, cid, op}, acked,
** seq, sent, ...}. Room._submit(op, cid?) sends an op of any kind with a fresh
** cid (or the one given).
*/
const opKinds = new Map();

/** Registers the handler of an op kind (see above). */
export function defineOpKind(kind, handler) {
  opKinds.set(kind, handler);
}

function expandOp(op) {
  const h = op && opKinds.get(op.kind);
  if (!h) return [];
  return h.expand ? h.expand(op) : [op];
}

defineOpKind('set', {
  apply(fields, op) {
    const out = fields ? { ...fields } : {};
    for (const [k, v] of Object.entries(op.fields || {})) {
      if (v === null) delete out[k];
      else out[k] = v;
    }
    return out;
  },
  // A set that writes or deletes a text field resets it: one more revision
  // (5.7). Fields that never held text have no revision to bump.
  revs(revs, op) {
    if (!revs) return revs;
    let out = revs;
    for (const k of Object.keys(op.fields || {})) {
      if (!Object.prototype.hasOwnProperty.call(revs, k)) continue;
      if (out === revs) out = { ...revs };
      out[k] = revs[k] + 1;
    }
    return out;
  },
});

defineOpKind('del', {
  apply() {
    return undefined;
  },
});

defineOpKind('batch', {
  expand(op) {
    return (op.ops || []).flatMap((sub) => expandOp(sub));
  },
});

// ---- helpers -------------------------------------------------------------------

const jsonClone = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));

function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k) || !deepEqual(a[k], b[k])) return false;
  }
  return true;
}

/**
 * The wait before reconnect attempt n (0, 1, ...): exponential backoff with
 * full jitter, uniform in [0, min(max, base * 2^n)).
 */
export function backoffDelay(n, { base, max }, random = Math.random) {
  return random() * Math.min(max, base * 2 ** Math.min(n, 30));
}

/**
 * Codes that rejecting a hello gives (3.1): never fixed by retrying with the
 * same token. 'forbidden' is the server's authorization hook saying no.
 * (hook_unavailable is not among them: the hook could not answer, and the
 * client backs off and tries again.)
 */
const AUTH_CODES = new Set(['unauthorized', 'token_invalid', 'token_expired', 'unsupported_version', 'bad_request', 'forbidden']);

/** Longest wait between two tries of something the server's hooks could not decide (hook_unavailable). */
const HOOK_RETRY_MAX = 30000;
/** How long a text waits for a del an error said was on its way (_watchStale). */
const STALE_WAIT_MS = 3000;

/** The wait before try n (0, 1, ...) after a hook_unavailable with retry_after: doubling, capped, jittered. */
const hookRetryDelay = (n, retryAfter) => {
  const base = Math.min(HOOK_RETRY_MAX, (retryAfter || 1000) * 2 ** Math.min(n, 10));
  return base / 2 + Math.random() * (base / 2);
};

/** Of those, the ones another token may fix: a token function is asked again. */
const TOKEN_CODES = new Set(['unauthorized', 'token_invalid', 'token_expired']);

/** Refusals in a row after which a token function is not asked again. */
const AUTH_RETRIES = 5;

/**
 * The `device` claim of a JWT (3.1), read without verifying it (the server
 * does), or undefined: a token bound to a device is refused for any other.
 */
export function tokenDevice(token) {
  if (typeof token !== 'string') return undefined;
  const part = token.split('.')[1];
  if (!part || typeof atob !== 'function') return undefined;
  try {
    const bin = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (ch) => ch.charCodeAt(0))));
    const d = claims && claims.device;
    return typeof d === 'string' && /^[A-Za-z0-9._:-]{1,64}$/.test(d) ? d : undefined;
  } catch {
    return undefined;
  }
}

/** 'http://h:p', 'ws://h:p/prefix' -> {http, ws} bases without a trailing slash. */
function baseUrls(url) {
  const u = String(url).replace(/\/+$/, '');
  const m = /^(https?|wss?):\/\/(.*)$/i.exec(u);
  if (!m) throw new TypeError(`wsync: url must start with http://, https://, ws:// or wss://: ${url}`);
  const secure = /^(https|wss)$/i.test(m[1]);
  return { http: `${secure ? 'https' : 'http'}://${m[2]}`, ws: `${secure ? 'wss' : 'ws'}://${m[2]}` };
}

/**
 * p, marked as handled: a rejection is also reported as an 'error' event, so
 * not awaiting a write must not crash the process with an unhandled rejection.
 * The caller still sees the rejection when it awaits p.
 */
function quiet(p) {
  p.catch(noop);
  return p;
}

const rejected = (code, message) => quiet(Promise.reject(new WsyncError(code, message)));

function promiseParts() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A rejection is also reported as an 'error' event, so not awaiting the
  // promise must not crash the process with an unhandled rejection.
  promise.catch(noop);
  return { promise, resolve, reject };
}

// ---- timers ------------------------------------------------------------------

/*
** Every timer of a Client and of its rooms is made here, so that close() can
** end them all at once (stop()) and nothing can be scheduled afterwards: a
** closed client leaves nothing to run later or to keep Node alive. A timer
** may belong to a group (a Room), which clearGroup() ends when the room is
** left. Timers of a transport are the transport's: its close() ends them.
*/
class Timers {
  constructor() {
    this._live = new Map(); // handle -> {group, interval}
    this._stopped = false;
  }

  /** fn once after ms; the handle for clear(), or null once stopped. */
  after(ms, fn, group = null) {
    if (this._stopped) return null;
    const h = setTimeout(() => {
      this._live.delete(h);
      fn();
    }, ms);
    this._live.set(h, { group, interval: false });
    return h;
  }

  /** fn every ms until cleared; the handle, or null once stopped. */
  every(ms, fn, group = null) {
    if (this._stopped) return null;
    const h = setInterval(fn, ms);
    this._live.set(h, { group, interval: true });
    return h;
  }

  clear(h) {
    const t = h === null || h === undefined ? undefined : this._live.get(h);
    if (!t) return;
    this._live.delete(h);
    if (t.interval) clearInterval(h);
    else clearTimeout(h);
  }

  clearGroup(group) {
    for (const [h, t] of [...this._live]) if (t.group === group) this.clear(h);
  }

  /** Ends every timer; after() and every() do nothing from now on. */
  stop() {
    this._stopped = true;
    for (const h of [...this._live.keys()]) this.clear(h);
  }
}

// ---- Room --------------------------------------------------------------------

/*
** Item ids are called `item` across the API, as on the wire; `id` is the
** alias kept from before. A 'change' event carries both: `id` as its own
** enumerable member (spreading or serializing the event gives what it always
** gave), `item` beside it, not enumerated. A change caused by a log entry
** also carries the entry's `from` (its author, 5.4) and `seq`.
*/
function changeEvent(item, fields, version, local, cause) {
  const ev = { id: item, fields, version, local, removed: fields === undefined };
  if (cause && cause.items.has(item)) {
    ev.from = cause.from;
    ev.seq = cause.seq;
  }
  Object.defineProperty(ev, 'item', { value: item, enumerable: false });
  return ev;
}

const presenceKey = (user, device) => `${user}\u0000${device}`;

class Presence {
  constructor(room) {
    this._room = room;
    this._entries = new Map();
  }

  /** Every member of the room, this client included: {user, device, state, connected, cursor?}. */
  get list() {
    return [...this._entries.values()];
  }

  /** Replaces this client's presence state in the room (8.1); sent when joined. */
  set(state) {
    const room = this._room;
    if (state === null || typeof state !== 'object' || Array.isArray(state)) {
      throw new TypeError('wsync: presence state must be an object');
    }
    room._myState = jsonClone(state);
    room._presenceDirty = true;
    const c = room.client;
    if (c.user && this._entries.has(presenceKey(c.user, c.device))) {
      const e = this._entries.get(presenceKey(c.user, c.device));
      this._entries.set(presenceKey(c.user, c.device), { ...e, state: room._myState });
      room.emit('presence', this.list);
    }
    room._schedulePresence();
  }
}

export class Room extends Emitter {
  constructor(client, name, opts = {}) {
    super();
    this.client = client;
    this.name = name;
    // The client's timers (close() ends them); a room made on a stand-in
    // client without any (unit tests) keeps its own.
    this._timers = client._timers || new Timers();
    this._history = opts.history || 0;
    this._state = 'idle';     // idle | joining | joined | left | failed
    this._parts = null;       // a snapshot arriving in parts (6.3): {joined, req, items, entries}
    this._epoch = null;
    this._seq = 0;
    this._server = new Map(); // id -> {version, fields, revs?}: confirmed state
    this._pending = [];       // our ops and publishes not yet in the log, in order
    this._buffer = new Map(); // seq -> entry that arrived ahead of a gap
    this._shownVersion = new Map();
    this._requests = new Set(); // outstanding room requests (lock, unlock)
    this._held = new Map();   // item -> {fence, ttl, renew, timer}: locks this session holds
    this._myState = opts.presence ? jsonClone(opts.presence) : {};
    this._presenceDirty = false;
    this._presenceTimer = null;
    this._everJoined = false;
    this._hookTries = 0;   // joins in a row the server's authorization hook could not decide
    this._texts = new Map();  // textKey(item, field) -> SharedText
    this._resync = false;     // the replica failed to apply an entry: get a snapshot
    /** Local view: item -> fields (server state plus pending ops). Read-only. */
    this.items = new Map();
    /** Locks held in the room: item -> {user, device, fence, expires}. Read-only. */
    this.locks = new Map();
    this.presence = new Presence(this);
    const r = promiseParts();
    this.ready = r.promise;
    this._readyParts = r;
  }

  /** The item's fields (local view), or undefined. */
  get(item) {
    return this.items.get(item);
  }

  /** The item's version (the seq of the last log entry that changed it) as known locally. */
  version(item) {
    const s = this._server.get(item);
    return s ? s.version : undefined;
  }

  /** The room's position {epoch, seq}: every log entry up to seq is applied. */
  get position() {
    return { epoch: this._epoch, seq: this._seq };
  }

  /** Number of ops and publishes not yet confirmed. */
  get pendingCount() {
    return this._pending.length;
  }

  /**
   * The shared text of item's field (5.7): one SharedText per (item, field),
   * the same object on every call until it is closed and settled.
   */
  text(item, field) {
    item = String(item);
    field = String(field);
    if (!item || !field) throw new TypeError('wsync: text(item, field): both must be non-empty');
    if (this._state === 'left' || this._state === 'failed') {
      throw new WsyncError(this._state === 'left' ? 'left' : 'not_joined', `room ${this.name} is ${this._state}`);
    }
    const k = textKey(item, field);
    let t = this._texts.get(k);
    if (!t) {
      t = new SharedText(this, item, field);
      this._texts.set(k, t);
    }
    t._closed = false;
    return t;
  }

  set(item, fields, opts = {}) {
    if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) {
      throw new TypeError('wsync: set(item, fields): fields must be an object');
    }
    return this._submit(this._withPreconditions({ kind: 'set', item: String(item), fields: jsonClone(fields) }, opts));
  }

  delete(item, opts = {}) {
    return this._submit(this._withPreconditions({ kind: 'del', item: String(item) }, opts));
  }

  /** ops: [{kind: 'set' | 'del', item, fields?, base?, fence?}]; `id` is accepted for `item`. */
  batch(ops) {
    if (!Array.isArray(ops) || !ops.length) throw new TypeError('wsync: batch(ops): a non-empty array');
    const subs = ops.map((o) => {
      const item = o.item ?? o.id;
      if (item === undefined || item === null) throw new TypeError('wsync: batch: every op names its item');
      if (o.kind === 'set') return this._withPreconditions({ kind: 'set', item: String(item), fields: jsonClone(o.fields || {}) }, o);
      if (o.kind === 'del' || o.kind === 'delete') return this._withPreconditions({ kind: 'del', item: String(item) }, o);
      throw new TypeError(`wsync: batch: unknown kind ${o.kind}`);
    });
    return this._submit({ kind: 'batch', ops: subs });
  }

  /** Sends data to the room (7). Non-ephemeral publishes get a cid and are re-sent like ops. */
  publish(data, opts = {}) {
    if (opts.ephemeral) {
      if (!this.client._online() || this._state !== 'joined') {
        return rejected('offline', 'ephemeral publish while not joined');
      }
      const msg = { type: 'publish', room: this.name, data: jsonClone(data), ephemeral: true };
      if (opts.cid) msg.cid = opts.cid;
      return quiet(this.client._request(msg).then(() => ({})));
    }
    const cid = opts.cid || this.client._nextCid();
    return this._enqueue({ type: 'publish', room: this.name, cid, data: jsonClone(data) });
  }

  /** Takes (or renews) the lock on item (9). Resolves {fence, expires}. */
  lock(item, { ttl = 30000, renew = true } = {}) {
    item = String(item);
    return quiet(this._roomRequest({ type: 'lock', room: this.name, item, ttl }).then((g) => {
      const prev = this._held.get(item);
      if (prev) this._timers.clear(prev.timer);
      const held = { fence: g.fence, ttl: g.ttl || ttl, renew, timer: null };
      this._held.set(item, held);
      const expires = Date.now() + held.ttl;
      this.locks.set(item, { user: this.client.user, device: this.client.device, fence: g.fence, expires });
      if (renew) this._scheduleRenew(item, held);
      return { fence: g.fence, expires };
    }));
  }

  unlock(item) {
    item = String(item);
    const held = this._held.get(item);
    if (held) this._timers.clear(held.timer);
    this._held.delete(item);
    return quiet(this._roomRequest({ type: 'unlock', room: this.name, item }).then(() => {
      // `unlocked` comes before the `lock` event (9.4): free in the view at once.
      const l = this.locks.get(item);
      if (l && l.user === this.client.user && l.device === this.client.device) this.locks.delete(item);
    }));
  }

  /** Leaves the room (4.3). Ops not yet confirmed are rejected with code 'left'. */
  leave() {
    const wasIn = this._state === 'joined' || this._state === 'joining';
    this._fail(new WsyncError('left', 'left the room'), { silent: true, state: 'left' });
    if (wasIn && this.client._online()) {
      return this.client._request({ type: 'leave', room: this.name }).then(noop, noop);
    }
    return Promise.resolve();
  }

  // ---- internals: writes ----

  _withPreconditions(op, opts) {
    if (opts.base !== undefined) op.base = opts.base;
    const fence = opts.fence !== undefined ? opts.fence : this._held.get(op.item)?.fence;
    // While we hold the item's lock, ops carry its fence: if the lock was lost
    // meanwhile (expired while offline), the op is refused instead of
    // overwriting the next holder's work (9.2).
    if (fence !== undefined) op.fence = fence;
    return op;
  }

  /** Sends an op of any kind with a fresh cid (or cid); for op-kind modules. */
  _submit(op, cid = this.client._nextCid(), textState) {
    if (!opKinds.has(op.kind)) throw new TypeError(`wsync: unknown op kind ${op.kind}`);
    return this._enqueue({ type: 'op', room: this.name, cid, op }, undefined, textState);
  }

  /**
   * Queues msg and stores it (persist). textState: the state of a shared
   * text once this op is its in-flight op (SharedText._send); stored in the
   * same transaction as the op, and the op waits for that transaction
   * (rec.hold): a reload then finds the op and the text's edits either
   * both as before it was sent or both as after, never the edits twice.
   */
  _enqueue(msg, restored, textState) {
    if (this._state === 'left' || this._state === 'failed') {
      return rejected(this._state === 'left' ? 'left' : 'not_joined', `room ${this.name} is ${this._state}`);
    }
    if (this.client._authError) return quiet(Promise.reject(this.client._authError));
    const p = promiseParts();
    const rec = {
      cid: msg.cid,
      msg,
      order: restored ? restored.order : this.client._nextOrder(),
      id: undefined,
      sentGen: -1,
      sent: !!restored,       // ever handed to a transport (the server may have it; an earlier run's may)
      acked: false,
      seq: undefined,
      retryAt: 0,
      attempts: 0,
      hold: false,            // stored with a text's state: not sent before that transaction is over
      promise: p.promise,
      resolve: p.resolve,
      reject: p.reject,
    };
    this._pending.push(rec);
    if (!restored) this.client._persistPut(this.name, rec, textState);
    if (msg.type === 'op') this._refresh(this._itemsOf(msg.op), true);
    this._flush();
    return rec.promise;
  }

  _itemsOf(op) {
    return new Set(expandOp(op).map((s) => s.item));
  }

  /** Sends what waits: pending ops not sent on this connection, requests, presence. */
  _flush() {
    const c = this.client;
    if (!c._online() || this._state !== 'joined') return;
    const now = Date.now();
    for (const rec of [...this._pending]) {
      if (rec.hold) break; // its transaction first; the ops behind it keep their order
      if (rec.acked || rec.sentGen === c._gen || rec.retryAt > now) continue;
      if (rec.id === undefined) rec.id = c._nextId();
      const msg = { ...rec.msg, id: rec.id };
      if (c._tooLarge(msg)) {
        // The server would close the connection (1009) and the re-send after
        // the reconnect would do it again: refuse it here, as the server would.
        this._onOpError(rec, { type: 'error', code: 'too_large', message: 'message larger than max_message', cid: rec.cid, room: this.name });
        continue;
      }
      rec.sentGen = c._gen;
      rec.sent = true;
      c._send(msg);
    }
    for (const req of this._requests) {
      if (req.sentGen === c._gen || req.retryAt > now) continue;
      req.sentGen = c._gen;
      c._send(req.msg);
    }
    if (this._presenceDirty) this._schedulePresence();
  }

  _schedulePresence() {
    if (this._presenceTimer) return;
    // Coalesce the updates of one turn into one message (the server would
    // coalesce them too, 8.1, but each one costs a rate token).
    this._presenceTimer = this._timers.after(0, () => {
      this._presenceTimer = null;
      if (!this._presenceDirty || !this.client._online() || this._state !== 'joined') return;
      this._presenceDirty = false;
      this.client._send({ type: 'presence', room: this.name, state: this._myState });
    }, this);
  }

  /** A request answered by a reply (lock, unlock): queued until the room is joined. */
  _roomRequest(msg) {
    if (this._state === 'left' || this._state === 'failed') {
      return rejected('not_joined', `room ${this.name} is ${this._state}`);
    }
    if (this.client._authError) return quiet(Promise.reject(this.client._authError));
    const c = this.client;
    const p = promiseParts();
    const req = { id: c._nextId(), sentGen: -1, retryAt: 0, room: this, resolve: p.resolve, reject: p.reject };
    req.msg = { ...msg, id: req.id };
    c._requests.set(req.id, req);
    this._requests.add(req);
    req.done = () => {
      c._requests.delete(req.id);
      this._requests.delete(req);
    };
    this._flush();
    return p.promise;
  }

  _scheduleRenew(item, held) {
    held.timer = this._timers.after(Math.max(500, held.ttl / 2), () => {
      if (this._held.get(item) !== held) return;
      this._roomRequest({ type: 'lock', room: this.name, item, ttl: held.ttl }).then(
        (g) => {
          if (this._held.get(item) !== held) return;
          held.fence = g.fence;
          const l = this.locks.get(item);
          if (l) this.locks.set(item, { ...l, expires: Date.now() + held.ttl });
          this._scheduleRenew(item, held);
        },
        (err) => {
          if (this._held.get(item) !== held) return;
          this._held.delete(item);
          this.emit('error', { code: 'lock_lost', message: `lock on ${item} lost: ${err.code}`, item });
        },
      );
    }, this);
  }

  // ---- internals: the replica ----

  /** The local view of item id: server state with every pending op re-applied in order. */
  _visible(id) {
    let f = this._server.get(id)?.fields;
    for (const rec of this._pending) {
      if (rec.msg.type !== 'op') continue;
      for (const sub of expandOp(rec.msg.op)) {
        if (sub.item === id) f = opKinds.get(sub.kind).apply(f, sub, { room: this, local: true, rec });
      }
    }
    // A shared text ahead of the confirmed state (its edits in flight or
    // buffered, or a revision learnt from an ack or a rev_too_old before the
    // entry itself) shows its value.
    for (const t of this._texts.values()) {
      if (t.item === id && t._ahead()) f = { ...(f || {}), [t.field]: t.value };
    }
    return f;
  }

  /** The confirmed text and revision of item's field (5.7): '' and 0 when absent or not a string. */
  _serverText(item, field) {
    const s = this._server.get(item);
    const v = s && s.fields[field];
    const rev = s && s.revs && Object.prototype.hasOwnProperty.call(s.revs, field) ? s.revs[field] : 0;
    return { text: typeof v === 'string' ? v : '', rev };
  }

  /**
   * Recomputes the local view of ids; emits 'change' for each that changed.
   * cause {from, seq, items}: the log entry applied, author of those items' changes.
   */
  _refresh(ids, local, cause) {
    for (const id of ids) {
      const before = this.items.get(id);
      const after = this._visible(id);
      const version = this.version(id);
      const versionChanged = version !== this._shownVersion.get(id);
      if (after === undefined && before === undefined) {
        this._shownVersion.delete(id);
        continue;
      }
      if (!versionChanged && deepEqual(before, after)) continue;
      if (after === undefined) {
        this.items.delete(id);
        this._shownVersion.delete(id);
      } else {
        this.items.set(id, Object.isFrozen(after) ? after : Object.freeze(after));
        this._shownVersion.set(id, version);
      }
      this.emit('change', changeEvent(id, after, version, local, cause));
    }
  }

  /** Removes a settled record (its effect is in the server state, or it was refused). */
  _drop(rec) {
    const i = this._pending.indexOf(rec);
    if (i >= 0) this._pending.splice(i, 1);
  }

  /** A log entry (op or stored message) or an ephemeral message from the server. */
  _onEntry(m) {
    if (m.seq === undefined) {
      if (m.type === 'message') this.emit('message', { data: m.data, from: m.from, ephemeral: true, ts: m.ts });
      return;
    }
    if (m.seq <= this._seq) return; // already applied (5.4)
    if (m.seq > this._seq + 1) {
      // A hole: keep the entry, and repair by joining again with `since` (4.2).
      this._buffer.set(m.seq, m);
      if (this._state === 'joined') this._sendJoin();
      return;
    }
    this._apply(m);
    this._drain();
  }

  _drain() {
    for (const [s] of this._buffer) if (s <= this._seq) this._buffer.delete(s);
    while (this._buffer.has(this._seq + 1)) {
      const e = this._buffer.get(this._seq + 1);
      this._buffer.delete(this._seq + 1);
      this._apply(e);
    }
  }

  _apply(m) {
    this._seq = m.seq;
    const c = this.client;
    const ours = m.cid !== undefined && m.from && m.from.user === c.user && m.from.device === c.device
      ? this._pending.find((r) => r.cid === m.cid) : undefined;
    const touched = new Set();
    if (m.type === 'op') {
      const overwritten = new Set(); // shared texts a set or del wrote over
      for (const sub of expandOp(m.op)) {
        const h = opKinds.get(sub.kind);
        const cur = this._server.get(sub.item);
        const f = h.apply(cur?.fields, sub, { room: this, seq: m.seq, local: false });
        if (f === undefined) this._server.delete(sub.item);
        else this._server.set(sub.item, { version: m.seq, fields: f, revs: h.revs ? h.revs(cur?.revs, sub) : cur?.revs });
        touched.add(sub.item);
        if (sub.kind !== 'text') {
          for (const t of this._texts.values()) if (t._overwrittenBy(sub)) overwritten.add(t);
        }
      }
      for (const t of overwritten) t._rebase(); // after the whole batch: its final state
      const h = opKinds.get(m.op && m.op.kind);
      if (h && h.onEntry) h.onEntry(this, m);
    }
    if (ours) {
      // Our own op, now in the log: settled even if its ack was lost.
      if (!ours.acked) this._settleAck(ours, { seq: m.seq });
      this._drop(ours);
      if (ours.msg.type === 'op') for (const id of this._itemsOf(ours.msg.op)) touched.add(id);
    }
    // Acked records whose entry is now applied (or was covered by a snapshot).
    for (const rec of [...this._pending]) {
      if (rec.acked && rec.seq !== undefined && rec.seq <= this._seq) {
        this._drop(rec);
        if (rec.msg.type === 'op') for (const id of this._itemsOf(rec.msg.op)) touched.add(id);
      }
    }
    const cause = m.type === 'op' ? { from: m.from, seq: m.seq, items: this._itemsOf(m.op) } : undefined;
    this._refresh(touched, false, cause);
    if (m.type === 'message') this.emit('message', { data: m.data, from: m.from, seq: m.seq, ts: m.ts, cid: m.cid });
    this._resyncIfBroken();
  }

  /**
   * A text waits for a del that an error said was on its way (_stale, the
   * text kind's onError). A server sends the del's entry right behind such
   * an error; one that has not come within STALE_WAIT_MS will not: the
   * copy is not to be trusted, and the room fetches a snapshot (the text
   * is rebased on it, as for a join that does not bring the del).
   */
  _watchStale(t) {
    const gen = (t._staleGen = (t._staleGen || 0) + 1);
    this._timers.after(STALE_WAIT_MS, () => {
      if (!t._stale || t._staleGen !== gen || this._texts.get(textKey(t.item, t.field)) !== t) return;
      this._resync = true; // a join without since once joined (now, or after the join under way)
      this._resyncIfBroken();
    }, this);
  }

  /**
   * An entry did not apply to our copy (a text op reaching past the end of
   * the text): the replica is wrong. Once joined, forget the position: the
   * join that follows gets a snapshot.
   */
  _resyncIfBroken() {
    if (!this._resync || this._state !== 'joined') return;
    this._resync = false;
    this._epoch = null;
    this._sendJoin();
  }

  _settleAck(rec, ack) {
    rec.acked = true;
    rec.seq = ack.seq;
    this.client._persistDelete(rec.cid);
    const h = rec.msg.type === 'op' ? opKinds.get(rec.msg.op.kind) : undefined;
    if (h && h.onAck) h.onAck(this, rec, ack);
    const r = { seq: ack.seq };
    if (ack.duplicate) r.duplicate = true;
    rec.resolve(r);
  }

  _onAck(m) {
    const rec = this._pending.find((r) => r.cid === m.cid);
    if (!rec || rec.acked) return; // a duplicate ack of a settled op
    this._settleAck(rec, m);
    if (m.seq === undefined || m.seq <= this._seq) {
      this._drop(rec);
      if (rec.msg.type === 'op') this._refresh(this._itemsOf(rec.msg.op), false);
    }
  }

  /** An error for one of our ops or publishes (matched by cid). */
  _onOpError(rec, m) {
    const c = this.client;
    if (m.code === 'hook_unavailable') {
      // The server's op hook could not decide (11.2): nothing was applied;
      // the same op (same cid) goes again after a growing wait.
      rec.hookTries = (rec.hookTries || 0) + 1;
      this._retryLater(rec, hookRetryDelay(rec.hookTries - 1, m.retry_after));
      return;
    }
    if (m.code === 'stale' && (rec.staleTries || 0) < 50) {
      // In a cluster another node wrote the room first (11.2): nothing was
      // applied; the same op (same cid) goes again at once, decided on the
      // room as it is now. A short random wait keeps two nodes' writers
      // from colliding again in step.
      rec.staleTries = (rec.staleTries || 0) + 1;
      this._retryLater(rec, Math.floor(Math.random() * 10 * Math.min(rec.staleTries, 10)));
      return;
    }
    if (m.code === 'rate_limited' || (m.code === 'internal' && rec.attempts < 3)) {
      // Not applied; the same op (same cid) goes again later (13.2, 11.2).
      if (m.code === 'internal') rec.attempts++;
      const wait = m.code === 'rate_limited' ? m.retry_after || 1000 : 1000 * rec.attempts;
      this._retryLater(rec, wait);
      return;
    }
    if (m.code === 'not_joined') {
      rec.sentGen = -1;
      this._sendJoin();
      return;
    }
    const h = rec.msg.type === 'op' ? opKinds.get(rec.msg.op.kind) : undefined;
    const verdict = h && h.onError ? h.onError(this, rec, m) : undefined;
    if (verdict === 'retry') {
      this._retryLater(rec, 0);
      return;
    }
    if (verdict === 'keep') return;
    if (verdict === 'drop') {
      this._drop(rec);
      c._persistDelete(rec.cid);
      if (rec.msg.type === 'op') this._refresh(this._itemsOf(rec.msg.op), true);
      rec.reject(serverError(m));
      return;
    }
    this._drop(rec);
    c._persistDelete(rec.cid);
    if (rec.msg.type === 'op') this._refresh(this._itemsOf(rec.msg.op), true);
    const op = rec.msg.type === 'op' ? rec.msg.op : undefined;
    const ev = { ...m, code: m.code, message: m.message, op, item: m.item !== undefined ? m.item : op && op.item };
    delete ev.type;
    if (rec.msg.type === 'publish') ev.data = rec.msg.data;
    this.emit('error', ev);
    rec.reject(serverError(m));
  }

  _retryLater(rec, wait) {
    rec.sentGen = -1;
    rec.retryAt = Date.now() + wait;
    this._timers.after(wait + 1, () => this._flush(), this);
  }

  // ---- internals: membership ----

  _sendJoin() {
    const c = this.client;
    if (!c._online() || this._state === 'left' || this._state === 'failed') return;
    this._state = 'joining';
    const msg = { type: 'join', room: this.name };
    if (this._epoch) msg.since = { epoch: this._epoch, seq: this._seq };
    if (Object.keys(this._myState).length) {
      msg.presence = this._myState;
      this._presenceDirty = false;
    }
    if (!this._everJoined && this._history) msg.history = this._history;
    c._request(msg).catch((err) => {
      if (err.code === 'closed' || err.code === 'disconnected') return; // the next connection joins again
      if (err.code === 'rate_limited') {
        const wait = (err.details && err.details.retry_after) || 1000;
        this._timers.after(wait, () => this._state === 'joining' && this._sendJoin(), this);
        return;
      }
      if (err.code === 'hook_unavailable') {
        // The authorization hook could not answer: said, then tried again later.
        this.emit('error', { code: err.code, message: err.message, ...(err.details || {}) });
        const wait = hookRetryDelay(this._hookTries++, err.details && err.details.retry_after);
        this._timers.after(wait, () => this._state === 'joining' && this._sendJoin(), this);
        return;
      }
      this._fail(err, { state: 'failed' });
    });
  }

  _onJoined(m) {
    if (this._state === 'left' || this._state === 'failed') return;
    this._hookTries = 0;
    if (m.recovered && m.epoch === this._epoch) {
      for (const e of m.ops || []) this._onEntry(e);
    } else {
      this._resetTo(m);
    }
    this._epoch = m.epoch;
    if (this._seq < m.seq) {
      // Cannot happen with a correct server (recovered ops end at seq);
      // position at the join's seq and let the next gap check repair.
      this._seq = m.seq;
    }
    this._drain();
    // A text waiting for a del (see the text kind's onError) that neither the
    // catch-up nor the snapshot brought: the room's state is the server's now.
    for (const t of [...this._texts.values()]) if (t._stale) t._rebase();
    this._setPresence(m.presence || []);
    this._setLocks(m.locks || []);
    if (m.messages) {
      for (const e of m.messages) this.emit('message', { data: e.data, from: e.from, seq: e.seq, ts: e.ts, cid: e.cid, history: true });
    }
    this._state = 'joined';
    this._joinedSession = this.client.session;
    if (!this._everJoined) {
      this._everJoined = true;
      this._readyParts.resolve(this);
    }
    this.emit('joined', { epoch: m.epoch, seq: m.seq, recovered: !!m.recovered });
    this._flush();
    this._resyncIfBroken();
  }

  /** A snapshot (6.3) replaces the confirmed state; pending ops stay on top. */
  _resetTo(m) {
    this._resync = false;
    const ids = new Set([...this.items.keys()]);
    this._server = new Map();
    for (const [id, it] of Object.entries((m.snapshot && m.snapshot.items) || {})) {
      this._server.set(id, { version: it.version, fields: it.fields || {}, revs: it.revs });
      ids.add(id);
    }
    this._epoch = m.epoch;
    this._seq = m.seq;
    for (const rec of [...this._pending]) {
      if (rec.msg.type === 'op') for (const id of this._itemsOf(rec.msg.op)) ids.add(id);
      if (rec.acked && rec.seq !== undefined && rec.seq <= this._seq) this._drop(rec);
    }
    for (const t of [...this._texts.values()]) t._rebase();
    this._refresh(ids, false);
  }

  _setPresence(list) {
    this.presence._entries = new Map();
    for (const e of list) this.presence._entries.set(presenceKey(e.user, e.device), { ...e });
    this.emit('presence', this.presence.list);
  }

  _onPresence(m) {
    const k = presenceKey(m.user, m.device);
    const entries = this.presence._entries;
    if (m.event === 'leave') {
      entries.delete(k);
    } else {
      const e = { user: m.user, device: m.device, state: m.state || {}, connected: m.connected !== false };
      if (m.cursor !== undefined) e.cursor = m.cursor;
      else if (entries.get(k)?.cursor !== undefined) e.cursor = entries.get(k).cursor;
      entries.set(k, e);
    }
    this.emit('presence', this.presence.list);
  }

  _setLocks(list) {
    const now = Date.now();
    const old = this.locks;
    this.locks = new Map();
    const c = this.client;
    for (const l of list) {
      this.locks.set(l.item, { user: l.user, device: l.device, fence: l.fence, expires: now + (l.ttl || 0) });
    }
    for (const [item, held] of [...this._held]) {
      const l = this.locks.get(item);
      if (!l || l.user !== c.user || l.device !== c.device || l.fence !== held.fence) {
        this._timers.clear(held.timer);
        this._held.delete(item);
        this.emit('error', { code: 'lock_lost', message: `lock on ${item} lost`, item });
      }
    }
    for (const item of new Set([...old.keys(), ...this.locks.keys()])) {
      const a = old.get(item);
      const b = this.locks.get(item);
      if (!a || !b || a.fence !== b.fence || a.user !== b.user || a.device !== b.device) this.emit('lock', { item, lock: b });
    }
  }

  _onLock(m) {
    if (m.state === 'held') {
      const lock = { user: m.user, device: m.device, fence: m.fence, expires: Date.now() + (m.ttl || 0) };
      this.locks.set(m.item, lock);
      this.emit('lock', { item: m.item, lock });
    } else {
      const was = this.locks.get(m.item);
      if (was && m.fence !== undefined && was.fence !== m.fence) return; // an older grant's release
      this.locks.delete(m.item);
      const held = this._held.get(m.item);
      if (held && (m.fence === undefined || held.fence === m.fence)) {
        this._timers.clear(held.timer);
        this._held.delete(m.item);
        if (m.reason !== 'unlock') this.emit('error', { code: 'lock_lost', message: `lock on ${m.item} ${m.reason}`, item: m.item, reason: m.reason });
      }
      this.emit('lock', { item: m.item, lock: undefined, reason: m.reason });
    }
  }

  /** The room is over (left, refused, removed by the server): settle everything. */
  _fail(err, { silent = false, state = 'failed' } = {}) {
    this._state = state;
    this.client._rooms.delete(this.name);
    if (!silent) this.emit('error', { code: err.code, message: err.message, ...(err.details || {}) });
    if (!this._everJoined) this._readyParts.reject(err);
    this._timers.clearGroup(this); // lock renewals, re-sends, presence
    this._presenceTimer = null;
    this._held.clear();
    const pending = this._pending;
    this._pending = [];
    for (const rec of pending) {
      this.client._persistDelete(rec.cid);
      if (!rec.acked) rec.reject(new WsyncError(err.code, err.message));
    }
    for (const req of [...this._requests]) {
      req.done();
      req.reject(new WsyncError(err.code, err.message));
    }
    for (const t of this._texts.values()) {
      t._gone = err;
      if (t._saved) this.client._persistTextDelete(this.name, t.item, t.field);
    }
    const ids = [...this.items.keys()];
    this._refresh(ids, true);
  }

  /**
   * The client gave up authenticating (AuthError err): `ready` (if never
   * joined), every write not acknowledged and every request reject with err;
   * the writes are rolled back and reported as 'error' events, as refused ops.
   */
  _authFailed(err) {
    if (!this._everJoined) this._readyParts.reject(err);
    for (const rec of [...this._pending]) {
      if (rec.acked) continue;
      const m = { type: 'error', code: err.code, message: err.message, cid: rec.cid, room: this.name };
      const h = rec.msg.type === 'op' ? opKinds.get(rec.msg.op.kind) : undefined;
      if (h && h.onError) h.onError(this, rec, m); // a text rolls its edit back
      this._drop(rec);
      this.client._persistDelete(rec.cid);
      if (rec.msg.type === 'op') this._refresh(this._itemsOf(rec.msg.op), true);
      const op = rec.msg.type === 'op' ? rec.msg.op : undefined;
      this.emit('error', { code: err.code, message: err.message, cid: rec.cid, op, item: op && op.item });
      rec.reject(err);
    }
    for (const req of [...this._requests]) {
      req.done();
      req.reject(err);
    }
  }

  /** The transport died: requests sent on it may be lost; they go again on the next one. */
  _onDisconnect() {
    if (this._state === 'joined' || this._state === 'joining') this._state = 'idle';
  }
}

// ---- Client ------------------------------------------------------------------

const DEFAULTS = {
  transports: ['ws', 'sse', 'poll'],
  backoff: { base: 250, max: 10000 },
  // A dead connection (no FIN, no RST: packets silently dropped) is found out
  // within interval + timeout + two ticks of the check (1/8 of the smaller):
  // at most 9 s by default. Only silence costs a ping (3.7).
  heartbeat: { interval: 4000, timeout: 4000 },
  connectTimeout: 10000,
  fallbackMemory: 5 * 60 * 1000,
  quickDeath: 2000,
};

const MEMORY_KEY = 'wsync.transport';

let warnedNoWebSocket = false;

/** Once per process: WebSocket was wanted, the runtime has none (Node < 22) and none was passed. */
function warnNoWebSocket(used) {
  if (warnedNoWebSocket || typeof console === 'undefined' || typeof console.warn !== 'function') return;
  warnedNoWebSocket = true;
  const node = globalThis.process && globalThis.process.versions && globalThis.process.versions.node;
  const name = used === 'sse' ? 'SSE' : used === 'poll' ? 'long-polling' : used;
  console.warn(`wsync: no WebSocket in this runtime${node ? ` (Node ${node})` : ''}: using ${name} instead. ` +
    "For WebSocket, run 'npm install ws' and pass it: new Client(url, { WebSocket: (await import('ws')).default, ... })" +
    (node ? ', or use Node >= 22, whose global WebSocket is used.' : '.'));
}

export class Client extends Emitter {
  constructor(url, opts = {}) {
    super();
    this.urls = baseUrls(url);
    this.url = url;
    this._opts = opts;
    this._storage = pickStorage(opts.storage);
    this.device = opts.device || tokenDevice(opts.token) || (opts.deviceFile ? fileDeviceId(opts.deviceFile) : deviceId(this._storage));
    this.user = opts.user || null;
    this.session = null;
    this.status = 'connecting';
    this.transport = null;
    this._env = {
      WebSocket: opts.WebSocket || globalThis.WebSocket,
      EventSource: opts.EventSource !== undefined ? opts.EventSource : globalThis.EventSource,
      fetch: opts.fetch || (globalThis.fetch ? globalThis.fetch.bind(globalThis) : undefined),
    };
    const want = opts.transports || DEFAULTS.transports;
    this._transports = want.filter((k) => TRANSPORTS[k] && (k === 'ws' ? !!this._env.WebSocket : !!this._env.fetch));
    if (!this._transports.length) throw new TypeError(`wsync: no usable transport among ${want.join(', ')}`);
    if (want.includes('ws') && !this._env.WebSocket) warnNoWebSocket(this._transports[0]);
    this._backoff = { ...DEFAULTS.backoff, ...(opts.backoff || {}) };
    this._heartbeat = opts.heartbeat === false ? null : { ...DEFAULTS.heartbeat, ...(opts.heartbeat || {}) };
    this._connectTimeout = opts.connectTimeout || DEFAULTS.connectTimeout;
    this._fallbackMemory = opts.fallbackMemory !== undefined ? opts.fallbackMemory : DEFAULTS.fallbackMemory;
    this._rand = randomId(8);  // drawn once per client: cids stay unique across reloads (5.5)
    this._counter = 0;
    this._ids = 0;
    this._orderBase = Date.now();
    this._rooms = new Map();
    this._requests = new Map();
    this._gen = 0;           // connection generation: bumped at every welcome
    this._current = null;    // the transport with a welcome
    this._attempt = null;    // the transport being tried
    this._last = 0;          // ordinal of the last message processed (3.4)
    this._recvSent = 0;
    this._timers = new Timers(); // every timer of this client and its rooms
    this._recvTimer = null;
    this._retries = 0;
    this._retryTimer = null;
    this._stopped = false;   // close(), replaced, refused: no reconnect
    this._closed = false;    // close(): final
    this._preparing = false; // a hello is being made (token function)
    this._authError = null;  // the AuthError the client gave up with
    this._refused = null;    // the last refused hello {error, token}, until a welcome
    this._authFails = 0;     // refused hellos in a row (token function)
    this._quick = { ws: 0, sse: 0, poll: 0 };
    this._onlineSince = 0;
    this._rx = 0;
    this._lastRx = 0;
    this._hbTimer = null;
    this._upgradeTimer = null;
    this._bucket = null;
    this._outq = [];
    this._pumpTimer = null;
    this._restored = new Map(); // room -> records loaded from IndexedDB, until the room is opened
    this._store = null;
    this.limits = null;

    let loading = Promise.resolve();
    const idb = opts.indexedDB || globalThis.indexedDB;
    if (opts.persist === 'indexeddb' && idb) {
      this._store = new PendingStore(idb, this.device);
      loading = this._store.load().then((recs) => this._restore(recs));
    }
    // The browser says the network is back: skip the rest of the backoff wait
    // (never a restart after close() or a 4001).
    this._onBrowserOnline = () => {
      if (!this._stopped && !this._current && !this._attempt) this._connect();
    };
    // The browser says the network is gone: an open socket may stay silent
    // for a long time (Chromium holds it), so drop it now and go offline.
    this._onBrowserOffline = () => {
      const t = this._current;
      if (this._stopped || !t) return;
      t.close();
      this._onLost(t, { code: 1006, reason: 'browser offline' });
    };
    if (typeof globalThis.addEventListener === 'function' && typeof globalThis.navigator === 'object') {
      globalThis.addEventListener('online', this._onBrowserOnline);
      globalThis.addEventListener('offline', this._onBrowserOffline);
    }
    loading.then(() => this._connect());
  }

  // ---- public ----

  /** The AuthError the client gave up with (its hello refused for good), or null. */
  get authError() {
    return this._authError;
  }

  /** The room object for name (one per name); joins now or when online, and after every reconnect. */
  room(name, opts) {
    let r = this._rooms.get(name);
    if (r) return r;
    r = new Room(this, name, opts);
    this._rooms.set(name, r);
    if (this._authError) r._readyParts.reject(this._authError);
    this._adoptRestored(r);
    if (this._online()) r._sendJoin();
    return r;
  }

  /** Ends the session (bye), closes the transport; no reconnect. Pending ops are rejected with 'closed' (but stay in IndexedDB). */
  async close() {
    if (this._closed) return;
    this._closed = true;
    this._stopped = true;
    this._timers.stop(); // nothing of this client runs later
    this._stopTimers();
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this._onBrowserOnline);
      globalThis.removeEventListener('offline', this._onBrowserOffline);
    }
    const t = this._current || this._attempt;
    this._current = null;
    this._attempt = null;
    if (t) await t.close({ bye: true });
    this.session = null;
    this._setStatus('offline', null);
    const err = new WsyncError('closed', 'client closed');
    for (const req of [...this._requests.values()]) {
      if (req.done) req.done();
      else this._requests.delete(req.id);
      req.reject(err);
    }
    for (const r of [...this._rooms.values()]) {
      for (const rec of r._pending) if (!rec.acked) rec.reject(err);
      r._pending = [];
      r._presenceTimer = null;
    }
    if (this._store) this._store.close();
  }

  /** Connects now: after 4001 (replaced) by the user's action, or to skip a backoff wait. */
  reconnect() {
    if (this._closed || this._current || this._attempt || this._preparing) return;
    this._stopped = false;
    this._authError = null;
    this._refused = null;
    this._authFails = 0;
    this._timers.clear(this._retryTimer);
    this._connect();
  }

  // ---- connection ----

  _online() {
    return this._current !== null;
  }

  _setStatus(status, transport) {
    this.transport = transport === undefined ? this.transport : transport;
    if (this.status === status) return;
    this.status = status;
    this.emit('status', status, { transport: this.transport });
  }

  _memory() {
    const raw = storageGet(this._storage, MEMORY_KEY);
    if (!raw) return null;
    try {
      const m = JSON.parse(raw);
      return m && m.until > Date.now() ? m : null;
    } catch {
      return null;
    }
  }

  _remember(kind) {
    if (kind === this._transports[0]) storageSet(this._storage, MEMORY_KEY, null);
    else storageSet(this._storage, MEMORY_KEY, JSON.stringify({ transport: kind, until: Date.now() + this._fallbackMemory }));
  }

  /** The transports to try, in order: a remembered fallback skips the ones before it. */
  _order() {
    const list = this._transports;
    const mem = this._memory();
    if (mem) {
      const i = list.indexOf(mem.transport);
      if (i > 0) return list.slice(i);
    }
    return list;
  }

  async _helloMsg() {
    const o = this._opts;
    const tok = typeof o.token === 'function' ? await o.token() : o.token;
    // Without a `device` option the token's claim is the device (a token
    // function may bind its tokens to one): a new device, a new session.
    const claimed = o.device ? undefined : tokenDevice(tok);
    if (claimed && claimed !== this.device) {
      this.device = claimed;
      this.session = null;
    }
    const hello = { type: 'hello', v: 1, device: this.device };
    if (tok) hello.token = tok;
    else if (o.user) hello.user = o.user;
    if (this.session) {
      hello.session = this.session;
      hello.last = this._last;
    }
    return hello;
  }

  async _connect() {
    if (this._stopped || this._current || this._attempt || this._preparing) return;
    this._timers.clear(this._retryTimer);
    this._retryTimer = null;
    this._setStatus(this.session ? 'resuming' : 'connecting', null);
    let hello;
    // A token function may take a while: one attempt at a time meanwhile.
    this._preparing = true;
    try {
      hello = await this._helloMsg();
    } catch (err) {
      this.emit('error', { code: 'token', message: `token(): ${err && err.message}` });
      // After a refusal, a throwing token function has no new token to give.
      if (this._refused) this._authFailed(this._refused.error, `token(): ${err && err.message}`);
      else this._scheduleRetry();
      return;
    } finally {
      this._preparing = false;
    }
    if (this._stopped || this._current || this._attempt) return;
    if (this._refused && hello.token === this._refused.token) {
      this._authFailed(this._refused.error, 'token() returned the refused token again');
      return;
    }
    this._try(this._order(), 0, hello);
  }

  _try(order, i, hello) {
    const kind = order[i];
    const handlers = {};
    const t = new TRANSPORTS[kind](this.urls, this._env, handlers);
    this._attempt = t;
    const timer = this._timers.after(this._connectTimeout, () => {
      if (this._attempt !== t) return;
      t.close();
      this._attempt = null;
      this._attemptFailed(order, i, hello, { code: 1006, reason: 'connect timeout', opened: t.opened });
    });
    handlers.welcome = (w) => {
      this._timers.clear(timer);
      if (this._attempt !== t) return;
      this._attempt = null;
      this._onWelcome(t, w, hello, order, i);
    };
    handlers.message = (m, ord) => this._onMessage(t, m, ord);
    handlers.error = (e) => this.emit('error', e);
    handlers.close = (info) => {
      this._timers.clear(timer);
      if (this._attempt === t) {
        this._attempt = null;
        this._attemptFailed(order, i, hello, info);
      } else if (this._current === t) {
        this._onLost(t, info);
      }
    };
    t.start(hello);
  }

  _attemptFailed(order, i, hello, info) {
    if (this._stopped) return;
    if (info.error) {
      // The server refused the hello (3.1).
      const e = { ...info.error };
      delete e.type;
      this.emit('error', e);
      if (AUTH_CODES.has(e.code)) {
        // The same token would be refused again: only a token function can
        // give another one; it is asked again after the backoff wait.
        if (typeof this._opts.token !== 'function' || !TOKEN_CODES.has(e.code) || ++this._authFails >= AUTH_RETRIES) {
          this._authFailed(e);
          return;
        }
        this._refused = { error: e, token: hello.token };
      }
      // hook_unavailable (the server's authorization hook could not answer,
      // close 1013): not before its retry_after, then the usual backoff.
      this._scheduleRetry(e.code === 'hook_unavailable' ? e.retry_after || 0 : 0);
      return;
    }
    if (info.expired) {
      // The session is gone, not the transport: say hello again, anew.
      this.session = null;
      this._scheduleRetry();
      return;
    }
    if (order[i] === 'ws' && info.opened) this._countQuick('ws');
    if (i + 1 < order.length) {
      this._try(order, i + 1, hello);
      return;
    }
    this._scheduleRetry();
  }

  /**
   * Authentication failed for good (refusal e, 3.1): stop, reject `ready`
   * and every write with an AuthError, and say so ('authfailed'). Nothing is
   * retried until reconnect().
   */
  _authFailed(e, why) {
    const msg = e.message || e.code;
    const err = new AuthError(e.code, why ? `${msg} (${why})` : msg, e);
    this._authError = err;
    this._refused = null;
    this._stopped = true;
    this._timers.clear(this._retryTimer);
    this._retryTimer = null;
    this._setStatus('offline', null);
    for (const r of [...this._rooms.values()]) r._authFailed(err);
    this.emit('authfailed', err);
  }

  /** Reconnects after the backoff wait, plus `after` ms (a server's retry_after). */
  _scheduleRetry(after = 0) {
    if (this._stopped) return;
    this._setStatus('offline', null);
    const delay = after + backoffDelay(this._retries++, this._backoff);
    this._timers.clear(this._retryTimer);
    this._retryTimer = this._timers.after(delay, () => this._connect());
  }

  _countQuick(kind) {
    this._quick[kind] = (this._quick[kind] || 0) + 1;
    if (this._quick[kind] >= 2) {
      // "Opened, then died at once, twice": the next transport for a while.
      const i = this._transports.indexOf(kind);
      if (i >= 0 && i + 1 < this._transports.length) this._remember(this._transports[i + 1]);
      this._quick[kind] = 0;
    }
  }

  _onWelcome(t, w, hello, order, i) {
    const resumed = !!w.resumed && !!hello.session && w.session === hello.session;
    this._current = t;
    this._refused = null;
    this._authFails = 0;
    this._gen++;
    this.session = w.session;
    this.user = w.user;
    this.limits = w.limits || null;
    this._last = resumed ? hello.last || 0 : 0;
    this._recvSent = this._last;
    this._onlineSince = Date.now();
    this._rx = 0;
    this._lastRx = Date.now();
    this._healthy = false;
    const lim = w.limits || {};
    const burst = lim.burst || 200;
    const rate = lim.rate || 100;
    // Our own copy of the server's token bucket (13.2): a message the server
    // would refuse for the rate is held back instead, which keeps ops in order.
    this._bucket = { tokens: resumed ? Math.max(1, burst / 2) : burst - 1, cap: Math.max(1, burst - 1), rate, at: Date.now() };
    this._outq = [];
    if (i > 0 && this._transports.includes(order[0])) this._remember(t.kind);
    else if (t.kind === this._transports[0]) this._remember(t.kind);
    this._setStatus('online', t.kind);
    this.emit('welcome', { resumed, session: w.session, transport: t.kind });
    this._startTimers(t);
    const serverRooms = new Set(resumed ? w.rooms || [] : []);
    for (const r of this._rooms.values()) {
      if (resumed && serverRooms.has(r.name) && r._state === 'idle' && r._joinedSession === w.session) {
        // Still a member: the server replays what was lost (3.5).
        r._state = 'joined';
        r._flush();
      } else {
        r._sendJoin();
      }
    }
    for (const name of serverRooms) {
      if (!this._rooms.has(name)) this._send({ type: 'leave', room: name });
    }
    // Send a ping at once: a transport that delivers nothing is found out
    // within the heartbeat timeout, not after the next interval.
    if (this._heartbeat) this._ping();
  }

  _onLost(t, info) {
    this._current = null;
    this._stopTimers();
    this._outq = [];
    const lived = Date.now() - this._onlineSince;
    for (const req of [...this._requests.values()]) {
      if (!req.room) {
        this._requests.delete(req.id);
        req.reject(new WsyncError('disconnected', 'connection lost'));
      }
    }
    for (const r of this._rooms.values()) r._onDisconnect();
    if (info.code === 4001) {
      this._stopped = true;
      this._setStatus('offline', null);
      this.emit('error', { code: 'replaced', message: 'session replaced by another connection of this device (4001); not reconnecting' });
      return;
    }
    if (info.expired) this.session = null;
    if (!ORDERLY_CLOSES.has(info.code) && (lived < this._quickMs() || this._rx === 0)) this._countQuick(t.kind);
    else this._quick[t.kind] = 0;
    if (lived > this._quickMs()) this._retries = 0;
    if (this._stopped) return;
    this._scheduleRetry();
  }

  _quickMs() {
    return this._opts.quickDeath || DEFAULTS.quickDeath;
  }

  _startTimers(t) {
    this._stopTimers();
    const hb = this._heartbeat;
    if (hb) {
      this._hbTimer = this._timers.every(Math.max(100, Math.min(hb.interval, hb.timeout) / 8), () => {
        if (this._current !== t) return;
        const now = Date.now();
        if (this._pingSent && this._pingSent > this._lastRx && now - this._pingSent > hb.timeout) {
          // No message since the ping: the connection is dead (3.7).
          t.close();
          this._onLost(t, { code: 1006, reason: 'heartbeat timeout' });
          return;
        }
        if (now - this._lastRx >= hb.interval && !(this._pingSent > this._lastRx)) this._ping();
      });
    }
    const mem = this._memory();
    if (mem && t.kind !== this._transports[0]) {
      // WebSocket (or SSE) is tried again once the memory of its failure ends.
      this._upgradeTimer = this._timers.after(Math.max(0, mem.until - Date.now()) + 10, () => {
        if (this._current !== t) return;
        t.close();
        this._onLost(t, { code: 1000, reason: 'retrying the preferred transport' });
      });
    }
  }

  _stopTimers() {
    for (const h of [this._hbTimer, this._upgradeTimer, this._recvTimer, this._pumpTimer]) this._timers.clear(h);
    this._hbTimer = this._upgradeTimer = this._recvTimer = this._pumpTimer = null;
    this._pingSent = 0;
  }

  _ping() {
    this._pingSent = Date.now();
    this._request({ type: 'ping' }).catch(noop);
  }

  _send(msg) {
    const t = this._current;
    if (!t) return;
    if (msg.type === 'recv' || msg.type === 'ping' || msg.type === 'bye') {
      t.send(msg);
      return;
    }
    this._outq.push(msg);
    this._pump();
  }

  /** Whether msg is over the server's max_message (1.1). */
  _tooLarge(msg) {
    const max = this.limits && this.limits.max_message;
    if (!max) return false;
    const text = JSON.stringify(msg);
    if (text.length * 3 <= max) return false;
    return new TextEncoder().encode(text).length > max;
  }

  _pump() {
    const t = this._current;
    const b = this._bucket;
    if (!t || !b) return;
    const now = Date.now();
    b.tokens = Math.min(b.cap, b.tokens + ((now - b.at) * b.rate) / 1000);
    b.at = now;
    while (this._outq.length && b.tokens >= 1) {
      b.tokens -= 1;
      t.send(this._outq.shift());
    }
    if (this._outq.length && !this._pumpTimer) {
      this._pumpTimer = this._timers.after(Math.ceil(((1 - b.tokens) * 1000) / b.rate) + 1, () => {
        this._pumpTimer = null;
        this._pump();
      });
    }
  }

  /** A client-level request with a reply; rejected when the connection is lost. */
  _request(msg) {
    if (!this._online()) return rejected('disconnected', 'not connected');
    const p = promiseParts();
    const req = { id: this._nextId(), msg, resolve: p.resolve, reject: p.reject };
    this._requests.set(req.id, req);
    this._send({ ...msg, id: req.id });
    return p.promise;
  }

  _onMessage(t, m, ord) {
    if (this._current !== t) return;
    if (ord !== undefined) {
      if (ord <= this._last) return; // replayed twice
      this._last = ord;
    } else {
      this._last++;
    }
    this._rx++;
    this._lastRx = Date.now();
    if (!this._healthy && this._lastRx - this._onlineSince > this._quickMs()) {
      this._healthy = true;
      this._quick[t.kind] = 0;
    }
    if (t.kind !== 'poll' && !this._recvTimer) {
      // Confirm progress about once a second while messages arrive (3.4).
      this._recvTimer = this._timers.after(1000, () => {
        this._recvTimer = null;
        if (this._current === t && this._last > this._recvSent) {
          this._recvSent = this._last;
          t.send({ type: 'recv', n: this._last });
        }
      });
    }
    this._dispatch(m);
  }

  _dispatch(m) {
    const req = m.re !== undefined ? this._requests.get(m.re) : undefined;
    const room = m.room !== undefined ? this._rooms.get(m.room) : undefined;
    switch (m.type) {
      case 'op':
      case 'message':
        // While a snapshot arrives in parts (6.3), the room's live entries
        // (all after joined.seq) wait for its last part.
        if (room && room._parts) room._parts.entries.push(m);
        else if (room) room._onEntry(m);
        return;
      case 'ack':
        if (req) this._settle(req, m);
        if (room && m.cid !== undefined) room._onAck(m);
        return;
      case 'joined':
        if (room) room._parts = null; // a new join: parts of an earlier one are void
        if (room && m.more) {
          room._parts = { joined: m, req, items: { ...((m.snapshot && m.snapshot.items) || {}) },
            ops: [...(m.ops || [])], entries: [] };
          return;
        }
        if (req) this._settle(req, m);
        if (room) room._onJoined(m);
        return;
      case 'snapshot':
      case 'catchup': {
        // A part of a large snapshot or catch-up (6.3); the last has more: false.
        const p = room && room._parts;
        if (!p) return;
        if (m.type === 'snapshot') Object.assign(p.items, m.items || {});
        else for (const e of m.ops || []) p.ops.push(e);
        if (m.more) return;
        room._parts = null;
        const full = p.joined.recovered ? { ...p.joined, ops: p.ops } : { ...p.joined, snapshot: { items: p.items } };
        delete full.more;
        if (p.req) this._settle(p.req, full);
        room._onJoined(full);
        for (const e of p.entries) room._onEntry(e);
        return;
      }
      case 'presence':
        if (room) room._onPresence(m);
        return;
      case 'lock':
        if (room) room._onLock(m);
        return;
      case 'cursor':
        if (room) room.emit('cursor', { user: m.user, device: m.device, seq: m.seq });
        return;
      case 'left':
        if (req) this._settle(req, m);
        else if (room && !req) room._fail(new WsyncError(m.reason || 'left', `removed from room ${m.room}: ${m.reason || 'left'}`));
        return;
      case 'error':
        this._onError(m, req, room);
        return;
      default:
        if (req) this._settle(req, m); // pong, granted, unlocked
    }
  }

  _settle(req, m) {
    if (req.done) req.done();
    else this._requests.delete(req.id);
    req.resolve(m);
  }

  _onError(m, req, room) {
    if ((m.for === 'op' || m.for === 'publish') && room && m.cid !== undefined) {
      const rec = room._pending.find((r) => r.cid === m.cid);
      if (rec) {
        room._onOpError(rec, m);
        return;
      }
    }
    if (req) {
      if (m.code === 'rate_limited' && req.room) {
        req.sentGen = -1;
        req.retryAt = Date.now() + (m.retry_after || 1000);
        this._timers.after((m.retry_after || 1000) + 1, () => req.room._flush(), req.room);
        return;
      }
      if (req.done) req.done();
      else this._requests.delete(req.id);
      req.reject(serverError(m));
      return;
    }
    const ev = { ...m };
    delete ev.type;
    if (room) room.emit('error', ev);
    else this.emit('error', ev);
  }

  // ---- ids, persistence ----

  _nextId() {
    return ++this._ids;
  }

  /** `<device>.<random>.<counter>` (5.5): unique per device across reloads. */
  _nextCid() {
    return `${this.device}.${this._rand}.${++this._counter}`;
  }

  _nextOrder() {
    return this._orderBase + ++this._counter / 1e6;
  }

  /**
   * Whether unconfirmed changes survive a reload: persist is on and its
   * IndexedDB store works. False before the store has opened, and where it
   * failed (no IndexedDB, private mode, quota).
   */
  get persistent() {
    return !!(this._store && this._store.db && !this._store.failed);
  }

  _persistPut(room, rec, textState) {
    if (!this._store) return;
    const r = { cid: rec.cid, room, order: rec.order, msg: rec.msg };
    if (!textState) {
      this._store.put(r);
      return;
    }
    const { item, field } = rec.msg.op;
    rec.hold = true;
    this._store.put([r, textRecord(room, item, field, textState)], () => {
      rec.hold = false;
      const rm = this._rooms.get(room);
      if (rm && rm._pending.includes(rec)) rm._flush();
    });
  }

  _persistDelete(cid) {
    if (this._store && cid !== undefined) this._store.delete(cid);
  }

  /** A shared text's unconfirmed edits (TextDoc.save()): one record per text, under a key no cid has. */
  _persistText(room, item, field, state) {
    if (this._store) this._store.put(textRecord(room, item, field, state));
  }

  _persistTextDelete(room, item, field) {
    if (this._store) this._store.delete(textRecordKey(room, item, field));
  }

  _restore(recs) {
    const ops = recs.filter((r) => r.msg);
    if (ops.length) this._orderBase = Math.max(this._orderBase, Math.ceil(ops[ops.length - 1].order) + 1);
    for (const rec of recs) {
      if (!rec.msg && !rec.text) continue;
      if (!this._restored.has(rec.room)) this._restored.set(rec.room, []);
      this._restored.get(rec.room).push(rec);
    }
    for (const r of this._rooms.values()) this._adoptRestored(r);
  }

  /**
   * Pending ops of an earlier run go first, before anything made in this
   * one; a shared text with unconfirmed edits comes back as it was (the
   * app's room.text() gets that object).
   */
  _adoptRestored(room) {
    const recs = this._restored.get(room.name);
    if (!recs) return;
    this._restored.delete(room.name);
    const mine = room._pending;
    room._pending = [];
    for (const rec of recs) {
      if (!rec.msg) continue;
      room._enqueue(rec.msg, rec).catch(noop);
    }
    room._pending.push(...mine);
    const ids = new Set();
    for (const rec of room._pending) if (rec.msg.type === 'op') for (const id of room._itemsOf(rec.msg.op)) ids.add(id);
    for (const rec of recs) {
      if (!rec.text || typeof rec.text.item !== 'string' || typeof rec.text.field !== 'string') continue;
      const { item, field, state } = rec.text;
      const k = textKey(item, field);
      const open = room._texts.get(k);
      if (open) {
        // Opened in this run before the store had loaded: it takes back the
        // kept edits unless edited already (then its edits win).
        if (!open.doc.inflight && !open.doc.buffer && open._adopt(state)) ids.add(item);
        else this._persistTextDelete(room.name, item, field);
        continue;
      }
      const t = new SharedText(room, item, field, state);
      if (!t._saved) {
        this._persistTextDelete(room.name, item, field);
        continue;
      }
      t._closed = true; // nobody listens yet; room.text() opens it, or it is forgotten once confirmed
      room._texts.set(k, t);
      ids.add(item);
    }
    room._refresh(ids, true);
  }
}

// ---- collaborative text (5.7) ------------------------------------------------

const textKey = (item, field) => `${item}\u0000${field}`;
/** The store key of a text's saved state: never a cid (cids have no NUL). */
const textRecordKey = (room, item, field) => `text\u0000${room}\u0000${item}\u0000${field}`;
const textRecord = (room, item, field, state) => ({ cid: textRecordKey(room, item, field), room, order: 0, text: { item, field, state } });

/*
** A SharedText is one text field of one item, edited by many: a TextDoc
** (text.js) driven by its room. The doc keeps at most one op in flight; the
** room keeps that op as a pending record like any other (re-sent unchanged,
** same cid, once per connection after each reconnect; retried on
** rate_limited and internal; persisted with IndexedDB) and routes to the doc:
**
**   our ack with rev                  doc.ack(cid, rev)
**   a duplicate ack (no rev)          doc.ack(cid, undefined)
**   a text entry of the field         doc.remote(rev, ops, cid if ours)
**   rev_too_old with text and rev     doc.rejected(): rebased, sent anew (new cid)
**   any other refusal                 doc.rejected(): rolled back, 'error'
**   a snapshot; a set or del of       doc.reset(text, rev, {keepInflight})
**   the field or item                 from the confirmed state
**
** keepInflight: an op that may have reached the server stays in flight under
** its cid and is re-sent; its answer tells whether the new text held it
** (text.js). An op never handed to a transport cannot be there: the doc
** rebases it and sends it afresh instead, and its record is dropped. That
** also keeps an op made offline from carrying a revision from before a del,
** after which the field's revisions start again at 0.
**
** The room's view (items) shows the doc's value whenever the doc is ahead of
** the confirmed state (Room._visible); once everything is confirmed both are
** the server's text.
*/
export class SharedText extends Emitter {
  constructor(room, item, field, saved) {
    super();
    this.room = room;
    this.item = item;
    this.field = field;
    this._closed = false;
    this._gone = null;      // why the room ended (left, refused)
    this._unbinds = new Set();
    this._stale = false;    // entries of the field are from before a del not yet seen: skip them
    this._saveQueued = false;
    this._saved = false;    // a state of this text is in the client's store
    const { text, rev } = room._serverText(item, field);
    /** The TextDoc underneath (text.js); read it, drive it through this object. */
    this.doc = new TextDoc({ text, rev, send: (r, ops, cid) => this._send(r, ops, cid) });
    if (saved) {
      // Unconfirmed edits of an earlier run (persist): the next join's
      // snapshot or catch-up rebases them like after any reconnect.
      try {
        this.doc.load(saved);
        this._saved = true;
      } catch {
        // a state that does not hold together: start from the server's text
      }
    }
    this._shown = this.doc.value; // the value the last 'change' reported
    this.doc.on('change', (ch) => this._onChange(ch));
    this.doc.on('ack', () => {
      this._saveSoon();
      this._forgetIfDone();
    });
    this.doc.on('error', (e) => {
      this._saveSoon();
      if (!this._closed) this.emit('error', { ...e, item, field });
    });
  }

  /** The local text (UTF-16), unconfirmed edits included. */
  get value() {
    return this.doc.value;
  }

  // The unconfirmed edits of an earlier run, into a text with none (opened
  // before the store had loaded): reported as a change. False when the
  // state does not hold together.
  _adopt(saved) {
    const d = this.doc;
    const before = d.value;
    try {
      d.load(saved);
    } catch {
      return false;
    }
    this._saved = true;
    if (d.value !== before) {
      this._onChange({ value: d.value, local: false, ops: Object.freeze(diffMinimal(before, d.value)), rev: d.rev, reset: true });
    }
    return true;
  }

  /** The field's last revision known (5.7). */
  get rev() {
    return this.doc.rev;
  }

  /** 'synchronized' (nothing unconfirmed), 'awaiting' or 'awaiting-with-buffer'. */
  get state() {
    return this.doc.state;
  }

  /** Positions and lengths in UTF-16 units of value, as a textarea counts. Return the op made (code points). */
  insert(pos16, text) {
    this._writable();
    return this.doc.insert(pos16, text);
  }

  delete(pos16, len16) {
    this._writable();
    return this.doc.delete(pos16, len16);
  }

  /** Makes value newValue with one change; caret16, the caret after the edit, places an ambiguous one. */
  replace(newValue, caret16) {
    this._writable();
    return this.doc.replace(newValue, caret16);
  }

  /** A local edit as a code point op against value. */
  submitOp(ops) {
    this._writable();
    return this.doc.submitOp(ops);
  }

  /** bindTextarea(textarea, this, options); close() unbinds too. Returns the unbind function. */
  bind(textarea, options) {
    const unbind = bindTextarea(textarea, this, options);
    const u = () => {
      if (this._unbinds.delete(u)) unbind();
    };
    this._unbinds.add(u);
    return u;
  }

  /**
   * Unbinds textareas, drops the listeners; edits afterwards throw. Edits
   * already made are still delivered: the room forgets the text once they
   * are confirmed (room.text() before that revives this object).
   */
  close() {
    if (this._closed) return;
    for (const u of [...this._unbinds]) u();
    this._closed = true;
    this._listeners.clear();
    this._forgetIfDone();
  }

  _writable() {
    if (this._closed) throw new WsyncError('closed', `text ${this.item}.${this.field} is closed`);
    if (this._gone) throw new WsyncError(this._gone.code, `room ${this.room.name}: ${this._gone.message}`);
    if (this.room.client._authError) throw this.room.client._authError; // as set() rejects: nothing would send it
  }

  // The doc's send(): a fresh op becomes a pending record of the room. A
  // re-send (cid given, doc.resend()) is the room's business: it re-sends
  // every record after a reconnect by itself.
  _send(rev, ops, cid) {
    if (cid !== undefined && cid !== null) return cid;
    const op = { kind: 'text', item: this.item, field: this.field, rev, ops: [...ops] };
    const fence = this.room._held.get(this.item)?.fence;
    if (fence !== undefined) op.fence = fence; // as for set/del (9.2)
    const c = this.room.client;
    const id = c._nextCid();
    let state;
    if (c._store) {
      // The doc's state once this op is in flight (the doc sends its whole
      // buffer): stored with the op, in one transaction (Room._enqueue).
      state = { ...this.doc.save(), inflight: { cid: id, rev, ops: [...ops] }, pending: [...ops], buffer: null };
      this._saved = true;
    }
    this.room._submit(op, id, state);
    return id;
  }

  /**
   * With persist, the doc's unconfirmed edits (the op in flight and the
   * edits buffered behind it) are stored after every change, as one record
   * per text; once all are confirmed the record goes. Once per turn, after
   * the doc has sent what it sends (the op's own record is stored then).
   */
  _saveSoon() {
    if (this._saveQueued || !this.room.client._store) return;
    this._saveQueued = true;
    queueMicrotask(() => {
      this._saveQueued = false;
      this._save();
    });
  }

  _save() {
    const room = this.room;
    if (room._state === 'left' || room._state === 'failed') return;
    const d = this.doc;
    if (d.inflight || d.buffer) {
      room.client._persistText(room.name, this.item, this.field, d.save());
      this._saved = true;
    } else if (this._saved) {
      room.client._persistTextDelete(room.name, this.item, this.field);
      this._saved = false;
    }
  }

  _onChange(ch) {
    this._saveSoon();
    const previous = this._shown;
    this._shown = ch.value;
    this.room._refresh(new Set([this.item]), ch.local);
    if (!this._closed) this.emit('change', { ...ch, previous, item: this.item, field: this.field });
    this._forgetIfDone();
  }

  _forgetIfDone() {
    const k = textKey(this.item, this.field);
    if (this._closed && !this.doc.inflight && !this.doc.buffer && this.room._texts.get(k) === this) {
      this.room._texts.delete(k);
    }
  }

  /** True when the doc knows more than the confirmed state: the view shows its value. */
  _ahead() {
    const d = this.doc;
    return !!(d.inflight || d.buffer) || d.rev !== this.room._serverText(this.item, this.field).rev;
  }

  /** Whether sub (a set or del applied to the confirmed state) wrote over this field. */
  _overwrittenBy(sub) {
    if (sub.item !== this.item) return false;
    if (sub.kind === 'del') return true;
    return sub.kind === 'set' && !!sub.fields && Object.prototype.hasOwnProperty.call(sub.fields, this.field);
  }

  /** The confirmed state replaced the field's text (snapshot, set, del): the doc follows it. */
  _rebase() {
    const after = this._stale; // the doc holds a text from after this del already (an error overtook it)
    this._stale = false;
    const room = this.room;
    const d = this.doc;
    const { text, rev } = room._serverText(this.item, this.field);
    const inf = d.inflight;
    const rec = inf ? room._pending.find((r) => r.cid === inf.cid) : undefined;
    if (!after && !room._server.has(this.item) && (inf || d.buffer)) {
      // The item is gone (a del, or a snapshot without it): every edit not
      // confirmed was made for it and dies with it -- rebased, it would land
      // on an item created again under the same id. An op that may be at
      // the server stays a record of the room, detached from the doc: its
      // answer (not_found, item_replaced, a duplicate ack) is then dropped
      // quietly; one never sent goes now. (Edits made on a text learnt
      // from an error that overtook the del are for what came after it.)
      if (rec && !rec.sent) {
        room._drop(rec);
        room.client._persistDelete(rec.cid);
        rec.reject(new WsyncError('not_found', 'the item was deleted before the edit was sent'));
      }
      d.discard(text, rev, {
        reason: 'deleted',
        error: { code: 'not_found', message: `${this.item} was deleted: unconfirmed edits of ${this.field} were rolled back`, cid: inf ? inf.cid : undefined, ops: inf ? inf.ops : undefined },
      });
      return;
    }
    if (rec && !rec.sent) {
      room._drop(rec);
      room.client._persistDelete(rec.cid);
      rec.reject(new WsyncError('rebased', 'rebased on a new text before it was sent'));
      d.reset(text, rev);
      return;
    }
    if (!inf && !d.buffer && d.rev === rev && d.serverText === text) return;
    d.reset(text, rev, { keepInflight: true });
    // Settled by the room (its entry is at or below the position): in the text.
    if (inf && (!rec || (rec.acked && rec.seq !== undefined && rec.seq <= room._seq))) d.ack(inf.cid, undefined);
  }
}

defineOpKind('text', {
  apply(fields, op, ctx) {
    if (ctx.local) {
      const t = ctx.room._texts.get(textKey(op.item, op.field));
      return t ? { ...(fields || {}), [op.field]: t.value } : fields;
    }
    const cur = fields && typeof fields[op.field] === 'string' ? fields[op.field] : '';
    let next = cur;
    try {
      next = applyText(cur, op.ops);
    } catch {
      ctx.room._resync = true; // our copy of the text is not the server's
    }
    return { ...(fields || {}), [op.field]: next };
  },
  revs(revs, op) {
    return { ...(revs || {}), [op.field]: op.rev + 1 };
  },
  onEntry(room, m) {
    const op = m.op;
    const t = room._texts.get(textKey(op.item, op.field));
    if (!t) return;
    if (t._stale) return;
    const c = room.client;
    const mine = m.cid !== undefined && m.from && m.from.user === c.user && m.from.device === c.device;
    try {
      t.doc.remote(op.rev, op.ops, mine ? m.cid : undefined);
    } catch {
      t._rebase(); // the doc and the confirmed state disagree: the latter wins
      return;
    }
    // The doc trails the confirmed state only if the two copies disagree.
    if (t.doc.rev < room._serverText(op.item, op.field).rev) t._rebase();
  },
  onAck(room, rec, ack) {
    const op = rec.msg.op;
    const t = room._texts.get(textKey(op.item, op.field));
    if (!t) return;
    if (ack.duplicate) t.doc.ack(rec.cid, undefined);
    else if (ack.rev !== undefined) t.doc.ack(rec.cid, ack.rev);
    // (an entry settling its own record passes {seq}: the doc had it from onEntry)
  },
  onError(room, rec, err) {
    const op = rec.msg.op;
    const t = room._texts.get(textKey(op.item, op.field));
    if (!t || !t.doc.inflight || t.doc.inflight.cid !== rec.cid) return 'drop'; // nothing left to undo
    if (err.code === 'rev_too_old' && typeof err.text === 'string' && Number.isSafeInteger(err.rev)) {
      // The error is sent at once and may overtake the broadcasts of entries
      // its text already holds; those carry lower revisions and are ignored,
      // unless a del among them started the revisions again at 0: then a
      // revision below the confirmed one says so, and the field's entries are
      // skipped until that del arrives and rebases the text (_rebase).
      const stale = err.rev < room._serverText(op.item, op.field).rev;
      t.doc.rejected(rec.cid, err.code, { text: err.text, rev: err.rev });
      t._stale = stale;
      if (stale) room._watchStale(t);
      return 'drop';
    }
    if (err.code === 'item_replaced' && typeof err.text === 'string' && Number.isSafeInteger(err.rev)) {
      // The op (and the edits buffered behind it) were made for an
      // incarnation of the item that was deleted since: they are void, the
      // field is the new item's text. As with rev_too_old, the error may
      // overtake the del: then the field's entries wait for it (_stale).
      const stale = err.rev < room._serverText(op.item, op.field).rev;
      t.doc.rejected(rec.cid, err.code, { text: err.text, rev: err.rev, message: err.message });
      t._stale = stale;
      if (stale) room._watchStale(t);
      return undefined; // the room drops the record and reports it ('error' with text and rev)
    }
    t.doc.rejected(rec.cid, err.code, { message: err.message });
    return undefined; // the room rolls the record back and reports it
  },
});

export default Client;
