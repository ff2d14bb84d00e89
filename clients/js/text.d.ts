// text.d.ts -- types of clients/js/text.js: collaborative plain text
// (docs/PROTOCOL.md 5.7). Positions named *16 count UTF-16 units (JS string
// indices); every other position, length and op counts Unicode code points.

/** n > 0 retains n code points, a non-empty string inserts it, {d: n} deletes n code points. */
export type TextOpComponent = number | string | { d: number };
/** The wire form of a text op (the encoding of npm ot-text-unicode); a trailing retain is implicit. */
export type TextOp = TextOpComponent[];
export type Side = 'left' | 'right';

// ---- OT over code points (same results as ot-text-unicode) ----

/** Adjacent components of one kind merged, empty ones and a trailing retain dropped. Throws TypeError on a malformed op. */
export function normalize(op: readonly TextOpComponent[]): TextOp;
export function isNoop(op: readonly TextOpComponent[]): boolean;
/** Throws RangeError when a retain or delete reaches past the end of str. */
export function apply(str: string, op: readonly TextOpComponent[]): string;
/** op rebased to apply after other; side 'left' puts op's insert first on a tie. */
export function transform(op: readonly TextOpComponent[], other: readonly TextOpComponent[], side: Side): TextOp;
/** The op equal to applying a, then b. */
export function compose(a: readonly TextOpComponent[], b: readonly TextOpComponent[]): TextOp;
/** The exact inverse of op, which applies to str. */
export function invert(op: readonly TextOpComponent[], str: string): TextOp;
/** A cursor moved through op; 'left' (default, as ot-text-unicode): an insert at the cursor goes after it. */
export function transformPosition(pos: number, op: readonly TextOpComponent[], side?: Side): number;
export function transformSelection(sel: number, op: readonly TextOpComponent[], side?: Side): number;
export function transformSelection(sel: readonly number[], op: readonly TextOpComponent[], side?: Side): number[];

// ---- UTF-16 <-> code points ----

export function cpLength(s: string): number;
/** Clamped; an index inside a surrogate pair rounds down. */
export function utf16ToCp(str: string, pos16: number): number;
/** Clamped to the end of str. */
export function cpToUtf16(str: string, posCp: number): number;
/** Lone surrogates replaced by U+FFFD. */
export function toWellFormed(s: string): string;
/** Throws RangeError outside str; inside a surrogate pair: before it. */
export function insertOp(str: string, pos16: number, text: string): TextOp;
/** Throws RangeError outside str; a range cutting a surrogate pair deletes the whole character. */
export function deleteOp(str: string, pos16: number, len16: number): TextOp;
/** One changed region (common prefix and suffix); caret16, the caret in b after a user edit, places it. */
export function diff(a: string, b: string, caret16?: number): TextOp;
/** A shortest edit (Myers), or diff(a, b) beyond budget (default 1e6 steps). */
export function diffMinimal(a: string, b: string, budget?: number): TextOp;

// ---- TextDoc ----

export interface InflightOp {
  readonly cid: string;
  /** The revision it was sent against. */
  readonly rev: number;
  /** The op exactly as sent (frozen). */
  readonly ops: TextOp;
}

export interface TextChange {
  /** The new local value (UTF-16 string). */
  value: string;
  /** True for the user's own edits and for the rollback of a refused op. */
  local: boolean;
  /** Code point op taking the previous value to value. */
  ops: TextOp;
  /** doc.rev after the change. */
  rev: number;
  /** Set by reset(). */
  reset?: true;
  /** Set when a refused op is rolled back. */
  rollback?: true;
  /** Set by discard(): why every local edit was dropped ('item_replaced', 'deleted'). */
  reason?: string;
}

export interface TextAck {
  cid: string;
  rev: number;
  /** The uncertain op turned out to be in the text of the last reset (duplicate ack). */
  included?: true;
}

export interface TextError {
  /** A server code (PROTOCOL.md 11.2) or 'rev_mismatch' for an inconsistent ack. */
  code: string;
  message: string;
  cid: string;
  /** The refused op, as sent. */
  ops?: TextOp;
}

export type TextDocState = 'synchronized' | 'awaiting' | 'awaiting-with-buffer';

export interface TextDocOptions {
  /** The field's text at rev (default ''). */
  text?: string;
  /** The field's revision (default 0). */
  rev?: number;
  /**
   * Sends {"type":"op", ..., "op":{"kind":"text", item, field, rev, ops}} and
   * returns its cid: a fresh one, or cid itself when given (resend()).
   */
  send(rev: number, ops: TextOp, cid?: string): string;
}

export class TextDoc {
  constructor(options: TextDocOptions);
  /** The local text, pending local edits included. */
  readonly value: string;
  /** The last server revision known. */
  readonly rev: number;
  readonly state: TextDocState;
  /** The op in flight, exactly as sent, or null. */
  readonly inflight: InflightOp | null;
  /** The server's text at rev. */
  readonly serverText: string;
  /** The in-flight op transformed to apply to serverText. */
  readonly pending: TextOp | null;
  /** Local edits not sent yet, applying after pending. */
  readonly buffer: TextOp | null;
  /** True while the in-flight op may already be in serverText (reset with keepInflight). */
  readonly uncertain: boolean;

  insert(pos16: number, text: string): TextOp;
  delete(pos16: number, len16: number): TextOp;
  /** Diffs value -> newValue (one region, placed by caret16 when given). */
  replace(newValue: string, caret16?: number): TextOp;
  /** A local edit as a code point op against value. */
  submitOp(ops: readonly TextOpComponent[]): TextOp;

  /** The in-flight op was accepted at rev; rev undefined for a duplicate ack. False if cid is not in flight. */
  ack(cid: string, rev?: number | null): boolean;
  /** A broadcast text op applying to revision rev. True if applied now (older: ignored; newer: kept until the gap fills). */
  remote(rev: number, ops: readonly TextOpComponent[], cid?: string | null): boolean;
  /**
   * Authoritative text at rev; local edits are rebased on it and sent as a new op.
   * keepInflight: the in-flight op may already be in text (snapshot after a
   * reconnect): it stays in flight under its cid, to be re-sent.
   */
  reset(text: string, rev: number, options?: { keepInflight?: boolean }): void;
  /**
   * Authoritative text at rev with every local edit void (made for an item that is gone): the in-flight op and the
   * buffer are dropped, not rebased. Emits 'change' {reset, rollback, reason} when the value changes, then 'error'
   * with the payload given. Returns the in-flight op dropped, or null.
   */
  discard(text: string, rev: number, options?: { reason?: string; error?: object }): InflightOp | null;
  /**
   * The in-flight op was refused. rev_too_old with text and rev rebases (reset); item_replaced with text and rev
   * discards every local edit (discard, reason 'item_replaced'); other codes roll back and emit 'error'.
   */
  rejected(cid: string, code: string, details?: { text?: string; rev?: number; message?: string }): boolean;
  /** What the doc knows, as plain JSON, to keep unconfirmed edits across a reload. */
  save(): { server: string; rev: number; inflight: { cid: string; rev: number; ops: TextOp } | null; pending: TextOp | null; buffer: TextOp | null };
  /** Takes back what save() gave; the in-flight op is uncertain until answered. Emits nothing. */
  load(saved: ReturnType<TextDoc['save']>): void;
  /** Re-sends the in-flight op unchanged via send(rev, ops, cid); returns it. */
  resend(): InflightOp | null;

  on(event: 'change', fn: (change: TextChange) => void): this;
  on(event: 'ack', fn: (ack: TextAck) => void): this;
  on(event: 'error', fn: (err: TextError) => void): this;
  off(event: 'change' | 'ack' | 'error', fn: (...args: any[]) => void): this;
}

// ---- <textarea> ----

export interface TextSelection {
  /** Code points, for presence. */
  start: number;
  end: number;
  /** UTF-16 units. */
  start16: number;
  end16: number;
  direction: 'forward' | 'backward' | 'none';
}

/** The part of HTMLTextAreaElement the binding uses. */
export interface TextareaLike {
  value: string;
  selectionStart: number | null;
  selectionEnd: number | null;
  selectionDirection?: 'forward' | 'backward' | 'none' | null;
  setSelectionRange(start: number, end: number, direction?: 'forward' | 'backward' | 'none'): void;
  addEventListener(type: string, fn: (ev: any) => void): void;
  removeEventListener(type: string, fn: (ev: any) => void): void;
}

/** Keeps textarea and doc in sync; returns the function that unbinds. */
export function bindTextarea(
  textarea: TextareaLike,
  doc: TextDoc,
  options?: { onSelection?: (sel: TextSelection) => void },
): () => void;
