// wsync.d.ts -- TypeScript declarations of the wsync JavaScript client (wsync.js).

import type { TextDoc, TextDocState, TextOp, TextOpComponent, TextareaLike, TextSelection } from './text.js';
export { bindTextarea } from './text.js';

export type Status = 'connecting' | 'online' | 'offline' | 'resuming';
export type TransportKind = 'ws' | 'sse' | 'poll';

/** A JSON object: an item's fields, a presence state. */
export interface Fields {
  [field: string]: unknown;
}

/** A localStorage-like store (the browser's localStorage fits). */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem?(key: string): void;
}

export interface ClientOptions {
  /**
   * A JWT, or a function returning one (or a Promise of one); called at every hello.
   * A refused hello (token_invalid, token_expired, unauthorized, or forbidden:
   * the server's authorization hook said no) with a string
   * stops the client with an AuthError; a function is asked again (backoff) and
   * the client gives up when it throws, returns the refused token or is refused
   * 5 times in a row.
   */
  token?: string | (() => string | Promise<string>);
  /** Demo mode only (server --insecure-demo): the user id instead of a token. */
  user?: string;
  /**
   * Device id (1-64 of A-Z a-z 0-9 . _ : -). Default: the token's `device`
   * claim (a token bound to a device is refused for any other, so a given
   * device must equal the claim); else generated once, kept in storage under 'wsync.device'.
   */
  device?: string;
  /**
   * Node: a file holding the device id, made on first use, so that every run
   * of the process is the same device (its session is taken over, its re-sent
   * cids deduplicated). Needs Node >= 20.16; throws if the file holds
   * something else. Default (no device, no claim, no deviceFile): a device
   * kept in `storage`, which in Node is memory: a new device per process.
   */
  deviceFile?: string;
  /** Transports to try, in order. Default ['ws', 'sse', 'poll']; ['poll'] forces long-polling. */
  transports?: TransportKind[];
  /**
   * The WebSocket class; default globalThis.WebSocket (browsers, Node >= 22).
   * In Node < 22 pass the `ws` package's; without one the client uses SSE and
   * says so once with console.warn.
   */
  WebSocket?: unknown;
  /** The EventSource class for SSE; default globalThis.EventSource. Without one (Node), the stream is read with fetch(). null forces fetch(). */
  EventSource?: unknown;
  /** fetch() for the HTTP transports; default globalThis.fetch. */
  fetch?: (input: string, init?: any) => Promise<any>;
  /** false (default) or 'indexeddb': pending ops and unconfirmed text edits are kept in IndexedDB (browsers) and restored on construction. */
  persist?: false | 'indexeddb';
  /** The IndexedDB factory; default globalThis.indexedDB. */
  indexedDB?: unknown;
  /** Reconnect delay: exponential from base, capped at max, full jitter. Default {base: 250, max: 10000} ms. */
  backoff?: { base?: number; max?: number };
  /** Device id and transport memory. Default: localStorage in browsers, memory elsewhere. */
  storage?: StorageLike;
  /**
   * Client heartbeat (PROTOCOL.md 3.7): a `ping` after `interval` ms without any message received; the transport is
   * taken as dead (closed, then reconnect and resume) when nothing arrives within `timeout` ms more. Works on every
   * transport. false: off. Default {interval: 4000, timeout: 4000}: a dead connection is noticed within 10 s.
   */
  heartbeat?: false | { interval?: number; timeout?: number };
  /** Give up one transport's connection attempt after this many ms. Default 10000. */
  connectTimeout?: number;
  /** How long a fallback transport is remembered before WebSocket is tried again. Default 300000 ms. */
  fallbackMemory?: number;
  /** A connection that dies (abnormally) within this many ms of its welcome, or before any message, died "at once". Default 2000. */
  quickDeath?: number;
}

/** A server error object (docs/PROTOCOL.md 11.1), without `type`. */
export interface ServerErrorInfo {
  code: string;
  message: string;
  re?: number | string;
  for?: string;
  room?: string;
  cid?: string;
  item?: string;
  field?: string;
  index?: number;
  current?: { version: number; fields: Fields } | null;
  lock?: { item: string; user: string; device: string; fence: number; ttl: number };
  retry_after?: number;
  /** For rev_too_old and item_replaced (5.7): the field's current text and revision. */
  text?: string;
  rev?: number;
  [member: string]: unknown;
}

/** Rejection reason of the client's promises: code is the server's error code, or 'closed', 'left', 'disconnected', 'offline' ('rebased' for a text op replaced before it was sent). */
export class WsyncError extends Error {
  code: string;
  /** The server's error object, when the server refused. */
  details?: ServerErrorInfo;
}

/**
 * The server refused the hello for good (3.1) and the client stopped: code
 * 'token_invalid', 'token_expired', 'unauthorized', 'forbidden' (the
 * server's authorization hook denied the session; the error's message is
 * the hook's reason) (or 'bad_request', 'unsupported_version'). A hello the
 * hook could not decide (hook_unavailable) is an 'error' event and is tried
 * again after retry_after and the backoff. `ready`, unconfirmed writes and later writes
 * reject with it; the 'authfailed' event carries it.
 */
export class AuthError extends WsyncError {
  code: 'token_invalid' | 'token_expired' | 'unauthorized' | 'forbidden' | 'bad_request' | 'unsupported_version' | string;
}

/** The `device` claim of a JWT, read without verifying it; undefined when absent. */
export function tokenDevice(token: unknown): string | undefined;

export interface SetOp { kind: 'set'; item: string; fields: Fields; base?: number; fence?: number }
export interface DelOp { kind: 'del'; item: string; base?: number; fence?: number }
export interface BatchOp { kind: 'batch'; ops: Array<SetOp | DelOp> }
/** A text op (5.7): ops in code points against revision rev of the field. */
export interface TextFieldOp { kind: 'text'; item: string; field: string; rev: number; ops: TextOp; fence?: number }
export type Op = SetOp | DelOp | BatchOp | TextFieldOp | { kind: string; item?: string; [member: string]: unknown };

export interface WriteOptions {
  /** Version check: 0 = the item must not exist, n = the item must be at version n. */
  base?: number;
  /** Fencing token of a held lock. Default: the fence of this client's lock on the item, if it holds one. */
  fence?: number;
}

/** One op of a batch; the item is named by `item` (or its alias `id`). */
export type BatchEntry = {
  kind: 'set' | 'del' | 'delete';
  fields?: Fields;
  base?: number;
  fence?: number;
} & ({ item: string; id?: string } | { /** Alias of item. */ id: string; item?: undefined });

export interface WriteResult {
  seq: number;
  /** true when the server had already applied this op (a re-send, 5.5). */
  duplicate?: boolean;
}

export interface ChangeEvent {
  /** The item that changed (not enumerated: spread or JSON copies carry only `id`). */
  item: string;
  /** Alias of item, its earlier name; kept, and the one that spreading or serializing the event copies. */
  id: string;
  /** The item's fields in the local view; undefined when removed. */
  fields: Fields | undefined;
  /** The confirmed version (seq), undefined for an item that exists only locally. */
  version: number | undefined;
  /** true for an optimistic apply or a rollback (this client's own write, not in the log yet), false for a change from the server. */
  local: boolean;
  removed: boolean;
  /**
   * The author of the log entry that made the change (5.4): {user, device},
   * this client's own when its write is confirmed, or {backend: true} for the
   * backend API. Absent for local changes and snapshots.
   */
  from?: { user: string; device: string } | { backend: true };
  /** The seq of that log entry; absent when from is. */
  seq?: number;
}

export interface RoomMessageEvent {
  data: unknown;
  from?: { user?: string; device?: string; backend?: boolean };
  /** Absent for ephemeral messages. */
  seq?: number;
  ts?: number;
  cid?: string;
  ephemeral?: boolean;
  /** true for the stored publishes sent with a snapshot (room option `history`). */
  history?: boolean;
}

export interface PresenceEntry {
  user: string;
  device: string;
  state: Fields;
  connected: boolean;
  cursor?: number;
}

export interface Lock {
  user: string;
  device: string;
  fence: number;
  /** Local clock (ms since 1970) when the lease runs out, as last reported. */
  expires: number;
}

export interface LockEvent {
  item: string;
  /** undefined when the lock was released. */
  lock: Lock | undefined;
  reason?: 'unlock' | 'expired' | 'left' | 'session_end';
}

export interface RoomErrorEvent extends ServerErrorInfo {
  /** The rolled-back op, for a refused op. */
  op?: Op;
  /** The data of a refused publish. */
  data?: unknown;
}

export interface JoinedEvent {
  epoch: string;
  seq: number;
  /** true: caught up by ops since the position held; false: a snapshot replaced the replica. */
  recovered: boolean;
}

export interface RoomOptions {
  /** Presence state sent with the join. */
  presence?: Fields;
  /** With a snapshot, also receive up to this many stored publishes (as 'message' events with history: true). */
  history?: number;
}

export class Emitter {
  on(event: string, fn: (...args: any[]) => void): this;
  off(event: string, fn: (...args: any[]) => void): this;
  once(event: string, fn: (...args: any[]) => void): this;
  emit(event: string, ...args: unknown[]): void;
}

export class Room extends Emitter {
  readonly client: Client;
  readonly name: string;
  /** Resolved after the first `joined` (a snapshot or catch-up sent in parts: after its last part); rejected if the join is refused. */
  readonly ready: Promise<Room>;
  /** The local view: item -> fields (confirmed state with pending ops on top). Read-only. */
  readonly items: Map<string, Readonly<Fields>>;
  /** Locks held in the room. Read-only. */
  readonly locks: Map<string, Lock>;
  readonly presence: {
    /** Every member, this client included. */
    readonly list: PresenceEntry[];
    /** Replaces this client's presence state (8.1). */
    set(state: Fields): void;
  };
  /** The room's position: every log entry up to seq is applied. */
  readonly position: { epoch: string | null; seq: number };
  /** Ops and publishes not yet confirmed. */
  readonly pendingCount: number;

  /** Item ids are called `item` throughout (as in the wire protocol); `id` is an accepted alias where a member is named (ChangeEvent, BatchEntry). */
  get(item: string): Readonly<Fields> | undefined;
  version(item: string): number | undefined;
  /**
   * The shared text of item's field (5.7): the same object for every call
   * with the same item and field (until closed and settled). Open it after
   * `ready` to start from the room's text; before, it starts empty and the
   * snapshot rebases what was typed. With `persist`, unconfirmed edits a
   * reload kept come back into it, also when it is opened before the store
   * has loaded, unless it was edited before that. Throws if the room was left.
   */
  text(item: string, field: string): SharedText;
  set(item: string, fields: Fields, opts?: WriteOptions): Promise<WriteResult>;
  delete(item: string, opts?: WriteOptions): Promise<WriteResult>;
  batch(ops: BatchEntry[]): Promise<WriteResult>;
  /** Non-ephemeral publishes get a cid (or the one given) and are re-sent like ops; ephemeral ones resolve {} and need the room joined. */
  publish(data: unknown, opts?: { cid?: string; ephemeral?: boolean }): Promise<WriteResult | {}>;
  /** Takes or renews a lock (ttl default 30000 ms); renewed automatically at half the TTL unless renew is false. */
  lock(item: string, opts?: { ttl?: number; renew?: boolean }): Promise<{ fence: number; expires: number }>;
  unlock(item: string): Promise<void>;
  leave(): Promise<void>;

  on(event: 'change', fn: (e: ChangeEvent) => void): this;
  on(event: 'message', fn: (e: RoomMessageEvent) => void): this;
  on(event: 'presence', fn: (list: PresenceEntry[]) => void): this;
  on(event: 'lock', fn: (e: LockEvent) => void): this;
  on(event: 'error', fn: (e: RoomErrorEvent) => void): this;
  on(event: 'joined', fn: (e: JoinedEvent) => void): this;
  on(event: 'cursor', fn: (e: { user: string; device: string; seq: number }) => void): this;
  on(event: string, fn: (...args: any[]) => void): this;

  /** For op-kind modules (see defineOpKind): sends an op of any registered kind with a fresh cid (or cid). */
  _submit(op: Op, cid?: string): Promise<WriteResult>;
}

export interface SharedTextChange {
  item: string;
  field: string;
  /** The new value (UTF-16 string). */
  value: string;
  /** The value before this change. */
  previous: string;
  /**
   * Code point op taking previous to value: move a cursor with
   * cpToUtf16(value, transformPosition(utf16ToCp(previous, pos16), ops)) (text.js).
   */
  ops: TextOp;
  /** true for this client's edits (and the rollback of a refused one), false for others' edits and resets. */
  local: boolean;
  /** The field's revision known after the change. */
  rev: number;
  /** The text was replaced from the server (snapshot, a set or del of the field, rev_too_old); local edits rebased on it. */
  reset?: true;
  /** A refused edit was undone. */
  rollback?: true;
  /**
   * Every unconfirmed edit of the field was dropped, not rebased, because it was made for an item that is gone:
   * 'item_replaced' (the server refused an edit made before the item was deleted and created again; value is the
   * new item's text) or 'deleted' (the item's del, or a snapshot without it, arrived first). With reset and rollback.
   */
  reason?: 'item_replaced' | 'deleted';
}

export interface SharedTextError {
  /**
   * The server's code (11.2), or 'rev_mismatch'. 'item_replaced': the edits were made for a deleted incarnation of
   * the item, and text/rev are the field of the new one; 'not_found' also when the client saw the item deleted.
   */
  code: string;
  message: string;
  cid: string;
  item: string;
  field: string;
  /** The refused op, as sent. */
  ops?: TextOp;
  /** With item_replaced: the field's text and revision now (value is reset to them). */
  text?: string;
  rev?: number;
}

/**
 * One text field of one item, edited by many (room.text()). Positions and
 * lengths are UTF-16 units of value, as a <textarea> counts them; the wire
 * counts code points. Edits apply at once; at most one op is in flight, the
 * rest is buffered, sent after its ack, and kept across reconnects.
 */
export class SharedText extends Emitter {
  readonly room: Room;
  readonly item: string;
  readonly field: string;
  /** The TextDoc underneath (text.js). Read it; edit through this object. */
  readonly doc: TextDoc;
  /** The local text, unconfirmed edits included ('' when the field is missing or not a string). */
  readonly value: string;
  /** The field's revision last known. */
  readonly rev: number;
  /** 'synchronized' once every edit is confirmed. */
  readonly state: TextDocState;

  /** Each returns the op made (code points), [] for no change. Throw after close(), once the room is left, or with the client's AuthError. */
  insert(pos16: number, text: string): TextOp;
  delete(pos16: number, len16: number): TextOp;
  /** value becomes newValue by one change; caret16 (the caret after the edit) places an ambiguous one. */
  replace(newValue: string, caret16?: number): TextOp;
  submitOp(ops: readonly TextOpComponent[]): TextOp;
  /** bindTextarea(textarea, this, options); returns the unbind function (close() unbinds too). */
  bind(textarea: TextareaLike, options?: { onSelection?: (sel: TextSelection) => void }): () => void;
  /** Unbinds, drops listeners; later edits throw. Edits made are still delivered. */
  close(): void;

  on(event: 'change', fn: (e: SharedTextChange) => void): this;
  /** A refused edit (locked, forbidden, invalid_field, too_large, item_replaced, ...), already rolled back. */
  on(event: 'error', fn: (e: SharedTextError) => void): this;
  on(event: string, fn: (...args: any[]) => void): this;
  off(event: string, fn: (...args: any[]) => void): this;
}

export class Client extends Emitter {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly status: Status;
  readonly transport: TransportKind | null;
  /** Known after the first welcome (or the `user` option). */
  readonly user: string | null;
  readonly device: string;
  readonly session: string | null;
  /** The server's limits from the last welcome. */
  readonly limits: Record<string, number> | null;
  /**
   * True when unconfirmed changes (ops, text edits) survive a reload: `persist` is on and its IndexedDB store has
   * opened and not failed. False before it opened, without IndexedDB, after a failed write (quota).
   */
  readonly persistent: boolean;
  /** The AuthError the client stopped with (hello refused for good), or null; reconnect() clears it. */
  readonly authError: AuthError | null;

  /** The room (one object per name); joined now or when online, and again after reconnects. */
  room(name: string, options?: RoomOptions): Room;
  /**
   * Sends bye, ends the session; no reconnect. Unconfirmed ops are rejected with 'closed' (persisted ones stay in IndexedDB).
   * Every timer, request and listener of the client ends with it (re-sends, reconnects, presence): nothing runs afterwards.
   */
  close(): Promise<void>;
  /** Connects now: after a 4001 replacement or a refused token (the user's action), or to skip a backoff wait. */
  reconnect(): void;

  on(event: 'status', fn: (status: Status, info: { transport: TransportKind | null }) => void): this;
  on(event: 'error', fn: (err: ServerErrorInfo) => void): this;
  on(event: 'welcome', fn: (w: { resumed: boolean; session: string; transport: TransportKind }) => void): this;
  /** Authentication failed for good: the client stopped (offline) until reconnect(). */
  on(event: 'authfailed', fn: (err: AuthError) => void): this;
  on(event: string, fn: (...args: any[]) => void): this;
}

/** The handler of an op kind: the single dispatch point for entries, pending ops, acks and errors. */
export interface OpKindHandler {
  /** The single-item ops it consists of (default [op]). */
  expand?(op: Op): Op[];
  /** The item's new fields (undefined: removed). Must not modify `fields`. */
  apply?(fields: Readonly<Fields> | undefined, op: Op, ctx: { room: Room; seq?: number; local: boolean }): Fields | undefined;
  onEntry?(room: Room, entry: object): void;
  onAck?(room: Room, rec: object, ack: object): void;
  /** 'retry': re-send; 'keep': keep unsent; 'drop': forget it silently (handled); anything else rolls it back. */
  onError?(room: Room, rec: object, error: ServerErrorInfo): 'retry' | 'keep' | 'drop' | void;
  /** The item's text revisions after an entry of this kind (5.7); must not modify revs. */
  revs?(revs: Readonly<Record<string, number>> | undefined, op: Op): Record<string, number> | undefined;
}

export function defineOpKind(kind: string, handler: OpKindHandler): void;

/** The wait before reconnect attempt n: uniform in [0, min(max, base * 2^n)). */
export function backoffDelay(n: number, backoff: { base: number; max: number }, random?: () => number): number;

export default Client;
