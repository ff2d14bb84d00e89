// text.js -- collaborative plain text for the wsync JS client (docs/PROTOCOL.md 5.7).
//
// Three layers, no dependencies, plain ES module (browsers and Node):
//
//   1. Pure OT over Unicode code points, wire-compatible with the npm package
//      `ot-text-unicode` (the server's reference): an op is a list of
//      components, n > 0 retains n code points, a non-empty string inserts it,
//      {d: n} deletes n code points; a trailing retain is implicit.
//      normalize/apply/transform/compose/transformPosition give the same
//      results as ot-text-unicode's type (tests/e2e/text-js.test.mjs checks
//      this on thousands of random cases), except that every function here
//      accepts non-normalized input (normalizing it first; the reference
//      throws on adjacent retains, empty components and any trailing
//      retain), apply() refuses a delete reaching past the end (the
//      reference silently truncates it), and inserts holding a lone
//      surrogate are refused (the reference miscounts them).
//   2. UTF-16 <-> code point conversions: JS strings index UTF-16 units, the
//      wire counts code points. Positions that would split a surrogate pair
//      are rounded (down for a position, outwards for a deleted range).
//   3. TextDoc, the client state machine of one text field, and
//      bindTextarea(), which keeps a <textarea> and a TextDoc in sync.
//
// Ops are never mutated: every function returns fresh arrays (the reference
// mutates the {d} objects of its input in normalize; we do not).

// ---- code points -----------------------------------------------------------

const isHigh = (u) => u >= 0xd800 && u <= 0xdbff;
const isLow = (u) => u >= 0xdc00 && u <= 0xdfff;
const isCount = (n) => Number.isSafeInteger(n) && n >= 0;

/** Number of code points in s (a lone surrogate counts as one). */
export function cpLength(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++, n++) {
    if (isHigh(s.charCodeAt(i)) && isLow(s.charCodeAt(i + 1))) i++;
  }
  return n;
}

/** UTF-16 index reached from index i after n code points; throws past the end. */
function advance(s, i, n) {
  for (; n > 0; n--) {
    if (i >= s.length) throw new RangeError('text op reaches past the end of the text');
    i += isHigh(s.charCodeAt(i)) && isLow(s.charCodeAt(i + 1)) ? 2 : 1;
  }
  return i;
}

/** Code points from index i to the end of s. */
const cpFrom = (s, i) => (i === 0 ? cpLength(s) : cpLength(s.slice(i)));

/** True when UTF-16 index i of s falls between the halves of a surrogate pair. */
const splitsPair = (s, i) => i > 0 && i < s.length && isHigh(s.charCodeAt(i - 1)) && isLow(s.charCodeAt(i));

/**
 * UTF-16 index -> code point index in str. Clamped to [0, str.length]; an
 * index inside a surrogate pair is rounded down to the pair's start.
 */
export function utf16ToCp(str, pos16) {
  let p = Math.max(0, Math.min(Math.trunc(pos16) || 0, str.length));
  if (splitsPair(str, p)) p--;
  return p === str.length ? cpLength(str) : cpLength(str.slice(0, p));
}

/** Code point index -> UTF-16 index in str. Clamped to [0, cpLength(str)]. */
export function cpToUtf16(str, posCp) {
  let n = Math.max(0, Math.trunc(posCp) || 0);
  let i = 0;
  for (; n > 0 && i < str.length; n--) i += isHigh(str.charCodeAt(i)) && isLow(str.charCodeAt(i + 1)) ? 2 : 1;
  return i;
}

// ---- components -------------------------------------------------------------

const badComponent = (c) => new TypeError(`invalid text op component: ${JSON.stringify(c)}`);

/** Length in code points of a component of the source (retain, delete) or of the result (insert). */
const clen = (c) => (typeof c === 'number' ? c : typeof c === 'string' ? cpLength(c) : c.d);

/**
 * Appends c to the normalized op out, merging it with the last component of
 * the same kind and dropping empty ones. Validates c: the only place that
 * decides what a component is.
 */
function append(out, c) {
  const last = out[out.length - 1];
  if (typeof c === 'number') {
    if (!isCount(c)) throw badComponent(c);
    if (c === 0) return;
    if (typeof last === 'number') out[out.length - 1] = last + c;
    else out.push(c);
  } else if (typeof c === 'string') {
    if (c === '') return;
    if (typeof last === 'string') out[out.length - 1] = last + c;
    else out.push(c);
  } else if (c !== null && typeof c === 'object' && !Array.isArray(c) && isCount(c.d)) {
    if (c.d === 0) return;
    if (typeof last === 'object') out[out.length - 1] = { d: last.d + c.d };
    else out.push({ d: c.d });
  } else {
    throw badComponent(c);
  }
}

/** Drops the trailing retain (there is at most one after append()). */
function trim(out) {
  if (typeof out[out.length - 1] === 'number') out.pop();
  return out;
}

// Index of the first lone surrogate in s, or -1 (a loop, not a regular
// expression: lookbehind is missing from older browsers).
function loneSurrogate(s) {
  for (let i = 0; i < s.length; i++) {
    const u = s.charCodeAt(i);
    if (isHigh(u) && isLow(s.charCodeAt(i + 1))) i++;
    else if (isHigh(u) || isLow(u)) return i;
  }
  return -1;
}

/** s with every lone surrogate replaced by U+FFFD (String.prototype.toWellFormed). */
export function toWellFormed(s) {
  if (loneSurrogate(s) < 0) return s;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const u = s.charCodeAt(i);
    if (isHigh(u) && isLow(s.charCodeAt(i + 1))) out += s[i] + s[++i];
    else out += isHigh(u) || isLow(u) ? '\ufffd' : s[i];
  }
  return out;
}

/**
 * The canonical form of op: adjacent components of one kind merged, empty
 * components (0, '', {d: 0}) and a trailing retain dropped. Throws TypeError
 * on anything that is not a component (negative or fractional counts,
 * {d: "text"}, which the wire does not allow, ...) and on inserts holding a
 * lone surrogate (not Unicode: the server could not decode the op).
 */
export function normalize(op) {
  if (!Array.isArray(op)) throw new TypeError('a text op must be an array');
  const out = [];
  for (const c of op) append(out, wellFormed(c));
  return trim(out);
}

function wellFormed(c) {
  if (typeof c === 'string' && loneSurrogate(c) >= 0) throw new TypeError(`insert with a lone surrogate: ${JSON.stringify(c)}`);
  return c;
}

/** True when op changes nothing. */
export const isNoop = (op) => normalize(op).length === 0;

/**
 * Applies op to str. Throws RangeError when a retain or delete reaches past
 * the end of str (PROTOCOL.md 5.7: invalid_field), TypeError on a malformed op.
 */
export function apply(str, op) {
  if (typeof str !== 'string') throw new TypeError('text must be a string');
  if (!Array.isArray(op)) throw new TypeError('a text op must be an array');
  const parts = [];
  let i = 0;
  for (const c of op) {
    append([], wellFormed(c)); // validates
    if (typeof c === 'number') {
      const j = advance(str, i, c);
      parts.push(str.slice(i, j));
      i = j;
    } else if (typeof c === 'string') {
      parts.push(c);
    } else {
      i = advance(str, i, c.d);
    }
  }
  parts.push(str.slice(i));
  return parts.join('');
}

/**
 * A cursor over a normalized op that hands out pieces of its components,
 * as the reference's makeTake does (same splitting rules, so the same
 * output): take(n) returns at most n code points of the next component
 * (a retain count, an insert string, a {d} object), or the whole remainder
 * of the component with n = -1, or the whole component when it is of the
 * indivisible kind ('i' inserts, 'd' deletes). Past the end the op retains
 * for ever: take(n) returns n, take(-1) null.
 */
function cursor(op) {
  let idx = 0;
  let off = 0; // into op[idx]: code points for retains and deletes, UTF-16 units for inserts
  const take = (n, indivisible) => {
    if (idx === op.length) return n === -1 ? null : n;
    const c = op[idx];
    if (typeof c === 'number') {
      if (n === -1 || c - off <= n) {
        const part = c - off;
        idx++;
        off = 0;
        return part;
      }
      off += n;
      return n;
    }
    if (typeof c === 'string') {
      if (n === -1 || indivisible === 'i' || cpFrom(c, off) <= n) {
        const part = c.slice(off);
        idx++;
        off = 0;
        return part;
      }
      const end = advance(c, off, n);
      const part = c.slice(off, end);
      off = end;
      return part;
    }
    if (n === -1 || indivisible === 'd' || c.d - off <= n) {
      const part = { d: c.d - off };
      idx++;
      off = 0;
      return part;
    }
    off += n;
    return { d: n };
  };
  const peek = () => op[idx];
  return { take, peek };
}

/**
 * Transforms op against other, both applying to the same text, so that the
 * result applies after other. side breaks ties between inserts at the same
 * position: 'left' puts op's insert first, 'right' other's. For two
 * concurrent ops a, b: apply(apply(s, a), transform(b, a, 'right')) equals
 * apply(apply(s, b), transform(a, b, 'left')) (TP1). The server transforms an
 * incoming op with side 'right' against the ops sequenced before it.
 */
export function transform(op, other, side) {
  if (side !== 'left' && side !== 'right') throw new TypeError(`side must be 'left' or 'right', not ${side}`);
  const a = normalize(op);
  const b = normalize(other);
  const out = [];
  const { take, peek } = cursor(a);
  for (const c2 of b) {
    if (typeof c2 === 'number') {
      let len = c2;
      while (len > 0) {
        const c1 = take(len, 'i');
        append(out, c1);
        if (typeof c1 !== 'string') len -= clen(c1);
      }
    } else if (typeof c2 === 'string') {
      // Only an insert that starts exactly here competes for the spot; an
      // insert of op after a delete of op at this position does not.
      if (side === 'left' && typeof peek() === 'string') append(out, take(-1));
      append(out, cpLength(c2));
    } else {
      let len = c2.d;
      while (len > 0) {
        const c1 = take(len, 'i');
        if (typeof c1 === 'number') len -= c1;
        else if (typeof c1 === 'string') append(out, c1); // inserts survive a concurrent delete
        else len -= c1.d; // deleted by both: once is enough
      }
    }
  }
  for (let c; (c = take(-1)) !== null;) append(out, c);
  return trim(out);
}

/** The op equal to applying a, then b. */
export function compose(a, b) {
  const first = normalize(a);
  const second = normalize(b);
  const out = [];
  const { take } = cursor(first);
  for (const c of second) {
    if (typeof c === 'number') {
      let len = c;
      while (len > 0) {
        const chunk = take(len, 'd');
        append(out, chunk);
        if (typeof chunk !== 'object') len -= clen(chunk);
      }
    } else if (typeof c === 'string') {
      append(out, c);
    } else {
      let done = 0;
      while (done < c.d) {
        const chunk = take(c.d - done, 'd');
        if (typeof chunk === 'number') {
          append(out, { d: chunk });
          done += chunk;
        } else if (typeof chunk === 'string') {
          done += cpLength(chunk); // inserted by a, deleted by b: gone
        } else {
          append(out, chunk);
        }
      }
    }
  }
  for (let ch; (ch = take(-1)) !== null;) append(out, ch);
  return trim(out);
}

/**
 * The exact inverse of op, which applied to str: apply(apply(str, op),
 * invert(op, str)) === str. Deleted text is read back from str.
 */
export function invert(op, str) {
  const out = [];
  let i = 0;
  for (const c of normalize(op)) {
    if (typeof c === 'number') {
      i = advance(str, i, c);
      append(out, c);
    } else if (typeof c === 'string') {
      append(out, { d: cpLength(c) });
    } else {
      const j = advance(str, i, c.d);
      append(out, str.slice(i, j));
      i = j;
    }
  }
  return trim(out);
}

/**
 * Moves a cursor (a code point position) through op: the result is where an
 * insert made at the cursor lands after transform(insert, op, side).
 * side 'left' (default, the reference's behaviour): an insert of op exactly
 * at the cursor goes after it, the cursor stays. 'right': the cursor moves
 * past such an insert (for the start of a selection that should not grow).
 * A cursor inside a deleted range goes to its start.
 */
export function transformPosition(pos, op, side = 'left') {
  if (side !== 'left' && side !== 'right') throw new TypeError(`side must be 'left' or 'right', not ${side}`);
  let src = 0; // position in the text op applies to
  let dst = 0; // the same place in the result
  for (const c of normalize(op)) {
    if (typeof c === 'number') {
      if (pos < src + c) break;
      src += c;
      dst += c;
    } else if (typeof c === 'string') {
      if (src === pos && side === 'left') return dst;
      dst += cpLength(c);
    } else {
      if (pos < src + c.d) return dst;
      src += c.d;
    }
  }
  return dst + (pos - src);
}

/** transformPosition for a number or an [anchor, focus] pair. */
export function transformSelection(sel, op, side = 'left') {
  return typeof sel === 'number' ? transformPosition(sel, op, side) : sel.map((s) => transformPosition(s, op, side));
}

// ---- ops from UTF-16 edits ----------------------------------------------------------

function checkPos16(str, pos16, what) {
  if (!Number.isSafeInteger(pos16) || pos16 < 0 || pos16 > str.length) {
    throw new RangeError(`${what} ${pos16} is outside the text (length ${str.length})`);
  }
}

/** The op inserting text at UTF-16 index pos16 of str (inside a surrogate pair: before it). */
export function insertOp(str, pos16, text) {
  checkPos16(str, pos16, 'position');
  if (typeof text !== 'string') throw new TypeError('inserted text must be a string');
  return normalize([utf16ToCp(str, pos16), text]);
}

/**
 * The op deleting len16 UTF-16 units of str at pos16. A range cutting a
 * surrogate pair is widened to delete the whole character.
 */
export function deleteOp(str, pos16, len16) {
  checkPos16(str, pos16, 'position');
  if (!Number.isSafeInteger(len16) || len16 < 0) throw new RangeError(`length ${len16} is not a count`);
  checkPos16(str, pos16 + len16, 'end');
  let end = pos16 + len16;
  if (len16 > 0 && splitsPair(str, end)) end++;
  const start = utf16ToCp(str, pos16);
  return normalize([start, { d: utf16ToCp(str, end) - start }]);
}

/**
 * An op turning a into b: one delete and one insert between the common
 * prefix and suffix, never inside a surrogate pair. caret16 (optional) is the
 * collapsed caret in b after the edit; it resolves ambiguous cases ("aa" ->
 * "aaa": which a was typed?) the way the user made them: the changed region
 * of b ends at the caret when it can (typing, backspace, paste).
 */
export function diff(a, b, caret16) {
  if (typeof a !== 'string' || typeof b !== 'string') throw new TypeError('diff takes two strings');
  if (a === b) return [];
  const min = Math.min(a.length, b.length);
  const commonPrefix = (limit) => {
    let n = 0;
    while (n < limit && a.charCodeAt(n) === b.charCodeAt(n)) n++;
    return n;
  };
  const commonSuffix = (limit) => {
    let n = 0;
    while (n < limit && a.charCodeAt(a.length - 1 - n) === b.charCodeAt(b.length - 1 - n)) n++;
    return n;
  };
  let prefix;
  let suffix;
  if (Number.isSafeInteger(caret16) && caret16 >= 0 && caret16 <= b.length) {
    suffix = commonSuffix(Math.min(min, b.length - caret16));
    prefix = commonPrefix(min - suffix);
  } else {
    prefix = commonPrefix(min);
    suffix = commonSuffix(min - prefix);
  }
  // a[0, prefix) === b[0, prefix): a high surrogate at its end would be cut
  // from its low half; a low surrogate opening the suffix likewise.
  if (prefix > 0 && isHigh(a.charCodeAt(prefix - 1))) prefix--;
  if (suffix > 0 && isLow(a.charCodeAt(a.length - suffix))) suffix--;
  const del = cpLength(a.slice(prefix, a.length - suffix));
  return normalize([cpLength(a.slice(0, prefix)), { d: del }, b.slice(prefix, b.length - suffix)]);
}

/**
 * An op turning a into b with as few code points deleted and inserted as
 * possible (Myers' O(ND) diff over code points, after the common prefix and
 * suffix), so that edits rebased on it stay next to the text they were made
 * in. Beyond `budget` steps of work (about the square of the edit distance
 * plus the text length times it) it gives up and returns diff(a, b): one
 * changed region.
 */
export function diffMinimal(a, b, budget = 1e6) {
  const coarse = diff(a, b);
  if (coarse.filter((c) => typeof c !== 'number').length < 2) return coarse; // a pure insert or delete is minimal
  const head = typeof coarse[0] === 'number' ? coarse[0] : 0;
  const start = cpToUtf16(a, head);
  const del = coarse.find((c) => typeof c === 'object').d;
  const ins = coarse.find((c) => typeof c === 'string');
  const A = Array.from(a.slice(start, advance(a, start, del)), (c) => c.codePointAt(0));
  const B = Array.from(ins, (c) => c.codePointAt(0));
  const script = myers(A, B, budget);
  if (!script) return coarse;
  const out = head ? [head] : [];
  let dels = 0;
  let text = '';
  const flush = () => {
    append(out, { d: dels });
    append(out, text);
    dels = 0;
    text = '';
  };
  for (const [kind, v] of script) {
    if (kind === '=') {
      flush();
      append(out, v);
    } else if (kind === '-') {
      dels++;
    } else {
      text += String.fromCodePoint(v);
    }
  }
  flush();
  return trim(out);
}

// Myers' greedy forward search with the V vector of every round kept for
// the walk back. Returns [['=', n] | ['-', cp] | ['+', cp], ...] turning A
// into B, or null past budget.
function myers(A, B, budget) {
  const n = A.length;
  const m = B.length;
  const max = n + m;
  const off = max + 1;
  const v = new Int32Array(2 * max + 3);
  const trace = [];
  let work = 0;
  let end = -1;
  for (let d = 0; d <= max && end < 0; d++) {
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[off + k - 1] < v[off + k + 1]) ? v[off + k + 1] : v[off + k - 1] + 1;
      let y = x - k;
      const x0 = x;
      while (x < n && y < m && A[x] === B[y]) {
        x++;
        y++;
      }
      work += 1 + x - x0;
      v[off + k] = x;
      if (x >= n && y >= m) {
        end = d;
        break;
      }
    }
    trace.push(v.slice(off - d, off + d + 1)); // v[k] for k in [-d, d]
    if (work > budget) return null;
  }
  const script = [];
  let x = n;
  let y = m;
  for (let d = end; d > 0; d--) {
    const prev = trace[d - 1]; // prev[k + d - 1] is v[k] after round d - 1
    const k = x - y;
    const down = k === -d || (k !== d && prev[k - 1 + d - 1] < prev[k + 1 + d - 1]);
    const pk = down ? k + 1 : k - 1;
    const px = prev[pk + d - 1];
    const py = px - pk;
    const mx = down ? px : px + 1; // after the edit, before the snake
    if (x > mx) script.push(['=', x - mx]);
    script.push(down ? ['+', B[py]] : ['-', A[px]]);
    x = px;
    y = py;
  }
  if (x > 0) script.push(['=', x]);
  return script.reverse();
}

// ---- TextDoc ----------------------------------------------------------------------

/*
 * TextDoc is the client side of one text field (ot.js style, one op in flight):
 *
 *                 local edit                      local edit
 *   synchronized ------------> awaiting ------------------------> awaiting-with-buffer
 *        ^                      |    ^                                    |
 *        +------- ack ----------+    +----- ack: the buffer is sent ------+
 *
 * It holds, in code points:
 *   server    the text at rev, as the server has it
 *   pending   the in-flight op, transformed so that it applies to server
 *   buffer    local edits made since, applying to apply(server, pending)
 *   value     apply(apply(server, pending), buffer): what the user sees
 * and inflight = {cid, rev, ops}, the op exactly as sent (a re-send repeats
 * it unchanged, PROTOCOL.md 5.5; the server transforms it from its rev).
 *
 * A remote op r (already sequenced: 'left') moves every layer:
 *   server' = apply(server, r); pending' = T(pending, r, right); r' = T(r, pending, left);
 *   buffer' = T(buffer, r', right); r'' = T(r', buffer, left); value' = apply(value, r'').
 * The ack of the in-flight op applies pending to server (the server computed
 * the same transform); the broadcast of one's own op counts as its ack.
 *
 * Uncertain in-flight op (reset with keepInflight, after a reconnect that
 * ended in a snapshot): the op may or may not be in the snapshot. pending is
 * rebased on it as if not, the op stays in flight under its cid for the room
 * to re-send, and the answer decides: its broadcast (the op as applied after
 * the snapshot) replaces pending; a duplicate ack means it is in the snapshot
 * already (pending is dropped); rev_too_old means it never was (rebased and
 * sent afresh).
 */

const STATES = ['synchronized', 'awaiting', 'awaiting-with-buffer'];
const freezeOp = (op) => Object.freeze(op.map((c) => (typeof c === 'object' ? Object.freeze(c) : c)));

export class TextDoc {
  #send;
  #server;
  #rev;
  #value;
  #inflight = null; // {cid, rev, ops} as sent
  #pending = null; // the in-flight op, applying to #server
  #buffer = null; // local edits not sent yet, applying to apply(#server, #pending)
  #ackRev; // rev announced by the ack of the in-flight op, waiting for #rev to reach rev - 1
  #uncertain = false; // the in-flight op may already be in #server (see above)
  #future = new Map(); // rev -> {ops, cid}: remote ops that arrived before their predecessors
  #listeners = new Map();

  /**
   * text, rev: the field's text and revision as the server has them.
   * send(rev, ops, cid?) -> cid: sends a text op for this field and returns
   * its cid; a fresh cid unless cid is given (resend()).
   */
  constructor({ text = '', rev = 0, send } = {}) {
    if (typeof text !== 'string') throw new TypeError('text must be a string');
    if (!isCount(rev)) throw new TypeError('rev must be a non-negative integer');
    if (typeof send !== 'function') throw new TypeError('send must be a function');
    this.#send = send;
    this.#server = text;
    this.#rev = rev;
    this.#value = text;
  }

  /** The local text (UTF-16), pending local edits included. */
  get value() { return this.#value; }
  /** The last server revision known. */
  get rev() { return this.#rev; }
  get state() { return STATES[this.#inflight ? (this.#buffer ? 2 : 1) : this.#buffer ? 1 : 0]; }
  /** The op in flight exactly as sent, {cid, rev, ops} (frozen), or null. */
  get inflight() { return this.#inflight; }
  /** The server's text at rev. */
  get serverText() { return this.#server; }
  /** The in-flight op transformed to apply to serverText, or null. */
  get pending() { return this.#pending && freezeOp(this.#pending); }
  /** Local edits not sent yet, applying after pending, or null. */
  get buffer() { return this.#buffer && freezeOp(this.#buffer); }
  /** True while the in-flight op may already be in serverText (reset with keepInflight). */
  get uncertain() { return this.#uncertain; }

  on(event, fn) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(fn);
    return this;
  }

  off(event, fn) {
    this.#listeners.get(event)?.delete(fn);
    return this;
  }

  // Every listener runs even if one throws; the first error is rethrown
  // afterwards, when the doc's state is already consistent.
  #emit(event, arg) {
    let failure;
    for (const fn of [...(this.#listeners.get(event) ?? [])]) {
      try {
        fn(arg);
      } catch (e) {
        failure ??= { e };
      }
    }
    if (failure) throw failure.e;
  }

  // ---- local edits (positions in UTF-16 units of value) ----

  insert(pos16, text) { return this.submitOp(insertOp(this.#value, pos16, text)); }

  delete(pos16, len16) { return this.submitOp(deleteOp(this.#value, pos16, len16)); }

  /** Replaces value by newValue (one diff); caret16 as in diff(). */
  replace(newValue, caret16) { return this.submitOp(diff(this.#value, newValue, caret16)); }

  /** A local edit as an op in code points against value. Returns the normalized op. */
  submitOp(ops) {
    const op = freezeOp(normalize(ops));
    if (op.length === 0) return op;
    const value = apply(this.#value, op); // throws before anything changes
    const buffer = this.#buffer ? compose(this.#buffer, op) : op;
    this.#value = value;
    this.#buffer = buffer.length ? buffer : null;
    this.#flush();
    this.#emit('change', { value, local: true, ops: op, rev: this.#rev });
    return op;
  }

  // Sends the buffer when nothing is in flight. If send() throws, the edits
  // stay in the buffer and go with the next edit or ack.
  #flush() {
    if (this.#inflight || !this.#buffer) return;
    const ops = freezeOp(this.#buffer);
    const cid = this.#send(this.#rev, ops);
    if (cid === undefined || cid === null) throw new TypeError('send() must return the cid of the op it sent');
    this.#inflight = Object.freeze({ cid, rev: this.#rev, ops });
    this.#pending = ops;
    this.#buffer = null;
    this.#ackRev = undefined;
    this.#uncertain = false;
  }

  // Tells the listeners what just happened ([event, arg] pairs, falsy ones
  // skipped), then sends the buffer if nothing is in flight: a room hears of
  // an ack or a rollback before the op that follows it.
  #settle(...events) {
    try {
      for (const e of events) if (e) this.#emit(e[0], e[1]);
    } finally {
      this.#flush();
    }
  }

  // ---- from the server ----

  /**
   * The in-flight op was accepted: its revision is rev (the field's revision
   * after it). rev undefined (a duplicate ack): the broadcast carrying the
   * cid confirms it, or, when the op was uncertain, it is known to be in the
   * text of the last reset. Returns false when cid is not in flight.
   */
  ack(cid, rev) {
    const inf = this.#inflight;
    if (!inf || cid !== inf.cid) return false;
    if (rev === undefined || rev === null) {
      if (this.#uncertain) this.#settle(...this.#drop('included'));
      return true;
    }
    if (!isCount(rev) || rev < 1) throw new TypeError('ack rev must be a positive integer');
    if (this.#uncertain) return true; // its broadcast carries the op as applied: wait for it
    if (rev - 1 < this.#rev) {
      this.#emit('error', { code: 'rev_mismatch', message: `ack of ${cid} at rev ${rev}, but rev ${this.#rev} is already applied`, cid });
      return false;
    }
    this.#ackRev = rev;
    this.#drain();
    return true;
  }

  /**
   * A broadcast text op applying to revision rev. Entries below rev are
   * ignored (already applied); entries above it wait until the gap is filled.
   * The broadcast of the in-flight op (same cid) acknowledges it.
   * Returns true when it was applied now.
   */
  remote(rev, ops, cid) {
    if (!isCount(rev)) throw new TypeError('rev must be a non-negative integer');
    if (rev < this.#rev) return false;
    if (rev > this.#rev) {
      this.#future.set(rev, { ops: normalize(ops), cid });
      return false;
    }
    this.#remoteNow(ops, cid);
    this.#drain();
    return true;
  }

  #drain() {
    for (;;) {
      if (this.#inflight && !this.#uncertain && this.#ackRev === this.#rev + 1) {
        this.#confirm();
        continue;
      }
      const next = this.#future.get(this.#rev);
      if (next) {
        this.#future.delete(this.#rev);
        this.#remoteNow(next.ops, next.cid);
        continue;
      }
      break;
    }
    for (const r of this.#future.keys()) if (r < this.#rev) this.#future.delete(r);
  }

  #remoteNow(ops, cid) {
    const inf = this.#inflight;
    if (inf && cid !== undefined && cid !== null && cid === inf.cid) {
      if (this.#uncertain) this.#confirmAs(normalize(ops));
      else this.#confirm();
      return;
    }
    let op = normalize(ops);
    const server = apply(this.#server, op);
    let pending = this.#pending;
    let buffer = this.#buffer;
    if (pending) {
      const p = transform(pending, op, 'right');
      op = transform(op, pending, 'left');
      pending = p;
    }
    if (buffer) {
      const b = transform(buffer, op, 'right');
      op = transform(op, buffer, 'left');
      buffer = b.length ? b : null;
    }
    const value = apply(this.#value, op);
    this.#server = server;
    this.#rev++;
    this.#pending = pending;
    this.#buffer = buffer;
    this.#value = value;
    this.#emit('change', { value, local: false, ops: freezeOp(op), rev: this.#rev });
  }

  // The in-flight op is at the server as pending says: it joins server.
  #confirm() {
    const { cid } = this.#inflight;
    this.#server = apply(this.#server, this.#pending);
    this.#rev++;
    this.#inflight = null;
    this.#pending = null;
    this.#ackRev = undefined;
    this.#settle(['ack', { cid, rev: this.#rev }]);
  }

  // The uncertain in-flight op was applied as applied (its broadcast): the
  // server's version replaces ours; the buffer follows the difference.
  #confirmAs(applied) {
    const { cid } = this.#inflight;
    const ours = apply(this.#server, this.#pending);
    const server = apply(this.#server, applied);
    this.#rev++;
    this.#inflight = null;
    this.#pending = null;
    this.#uncertain = false;
    this.#ackRev = undefined;
    const change = this.#rebaseBuffer(diffMinimal(ours, server), server, false);
    this.#settle(change && ['change', change], ['ack', { cid, rev: this.#rev }]);
  }

  // With pending gone: server := server, buffer transformed against d, which
  // takes the old apply(server, pending) to the new server. Returns the
  // 'change' event to emit, or null when value is unchanged.
  #rebaseBuffer(d, server, local) {
    const buffer = this.#buffer;
    const b = buffer ? transform(buffer, d, 'right') : null;
    const ops = buffer ? transform(d, buffer, 'left') : d;
    const value = b ? apply(server, b) : server;
    this.#server = server;
    this.#buffer = b && b.length ? b : null;
    if (value === this.#value) return null;
    this.#value = value;
    return { value, local, ops, rev: this.#rev };
  }

  // Drops the in-flight op and its effect: 'included' (it is in server
  // already) or 'rejected' (refused by the server: a local rollback).
  // Returns the events for #settle().
  #drop(why) {
    const { cid } = this.#inflight;
    const inv = invert(this.#pending, this.#server);
    this.#inflight = null;
    this.#pending = null;
    this.#uncertain = false;
    this.#ackRev = undefined;
    const change = this.#rebaseBuffer(inv, this.#server, why === 'rejected');
    return [
      change && ['change', why === 'rejected' ? { ...change, rollback: true } : change],
      why === 'included' && ['ack', { cid, rev: this.#rev, included: true }],
    ];
  }

  /**
   * Authoritative text at rev (a snapshot, the text of a rev_too_old error, a
   * set that overwrote the field). Local edits are rebased on it: the
   * difference old server text -> text is computed, the pending edits are
   * transformed against it and sent again as a new op (new cid).
   * keepInflight: the in-flight op's fate is unknown (reconnected, got a
   * snapshot): it stays in flight under its cid, for the room to re-send
   * (resend()); its answer tells whether text already held it.
   */
  reset(text, rev, { keepInflight = false } = {}) {
    if (typeof text !== 'string') throw new TypeError('text must be a string');
    if (!isCount(rev)) throw new TypeError('rev must be a non-negative integer');
    const d = diffMinimal(this.#server, text);
    const before = this.#value;
    let ops;
    if (keepInflight && this.#inflight) {
      const p = transform(this.#pending, d, 'right');
      const d1 = transform(d, this.#pending, 'left');
      const b = this.#buffer ? transform(this.#buffer, d1, 'right') : null;
      ops = this.#buffer ? transform(d1, this.#buffer, 'left') : d1;
      this.#pending = p;
      this.#buffer = b && b.length ? b : null;
      this.#uncertain = true;
    } else {
      const p = this.#pending;
      const local = p ? (this.#buffer ? compose(p, this.#buffer) : p) : this.#buffer;
      const l = local ? transform(local, d, 'right') : null;
      ops = local ? transform(d, local, 'left') : d;
      this.#inflight = null;
      this.#pending = null;
      this.#buffer = l && l.length ? l : null;
      this.#uncertain = false;
    }
    this.#server = text;
    this.#rev = rev;
    this.#ackRev = undefined;
    this.#future.clear();
    let value = text;
    if (this.#pending) value = apply(value, this.#pending);
    if (this.#buffer) value = apply(value, this.#buffer);
    this.#value = value;
    this.#flush();
    if (value !== before) this.#emit('change', { value, local: false, ops, rev, reset: true });
  }

  /**
   * Authoritative text at rev, and every local edit void (the item they
   * were made for is gone): the in-flight op and the buffer are dropped, not
   * rebased, and value becomes text. Emits 'change' {reset, rollback, reason}
   * when value changes, then 'error' when given (error: its payload).
   * Returns the in-flight op dropped, or null.
   */
  discard(text, rev, { reason, error } = {}) {
    if (typeof text !== 'string') throw new TypeError('text must be a string');
    if (!isCount(rev)) throw new TypeError('rev must be a non-negative integer');
    const inf = this.#inflight;
    const before = this.#value;
    this.#server = text;
    this.#rev = rev;
    this.#value = text;
    this.#inflight = null;
    this.#pending = null;
    this.#buffer = null;
    this.#ackRev = undefined;
    this.#uncertain = false;
    this.#future.clear();
    const change = before === text ? null
      : { value: text, local: false, ops: freezeOp(diffMinimal(before, text)), rev, reset: true, rollback: true, ...(reason ? { reason } : {}) };
    this.#settle(change && ['change', change], error && ['error', error]);
    return inf;
  }

  /**
   * The in-flight op cid was refused with code. rev_too_old with {text, rev}
   * is reset(text, rev); item_replaced with {text, rev} is discard(text, rev):
   * the op and the buffer were made for a deleted incarnation of the item.
   * Any other code drops the op and its effect (value
   * becomes server text + buffer, the buffer is sent) and emits 'error'
   * {code, message, cid, ops}. Returns false when cid is not in flight.
   */
  rejected(cid, code, { text, rev, message } = {}) {
    const inf = this.#inflight;
    if (!inf || cid !== inf.cid) return false;
    if (code === 'rev_too_old' && typeof text === 'string' && isCount(rev)) {
      this.reset(text, rev);
      return true;
    }
    if (code === 'item_replaced' && typeof text === 'string' && isCount(rev)) {
      // Made for an incarnation of the item that was deleted: every local
      // edit (in flight and buffered) was typed into that text, so none of
      // them is rebased onto the new one.
      const msg = message ?? `text op ${cid} rejected: the item was deleted and created again`;
      this.discard(text, rev, { reason: code, error: { code, message: msg, cid, ops: inf.ops, text, rev } });
      return true;
    }
    this.#settle(...this.#drop('rejected'), ['error', { code, message: message ?? `text op ${cid} rejected: ${code}`, cid, ops: inf.ops }]);
    return true;
  }

  /**
   * What the doc knows, as plain JSON, for keeping unconfirmed edits across
   * a reload: {server, rev, inflight, pending, buffer}. load() takes it back.
   */
  save() {
    const inf = this.#inflight;
    return {
      server: this.#server,
      rev: this.#rev,
      inflight: inf ? { cid: inf.cid, rev: inf.rev, ops: [...inf.ops] } : null,
      pending: this.#pending ? [...this.#pending] : null,
      buffer: this.#buffer ? [...this.#buffer] : null,
    };
  }

  /**
   * Takes back what save() gave (another run, the server not heard yet):
   * the in-flight op may or may not have reached the server, so it is
   * uncertain (see above) until answered. Emits nothing. Throws, changing
   * nothing, on a state that does not hold together.
   */
  load(saved) {
    const { server, rev, inflight, pending, buffer } = saved || {};
    if (typeof server !== 'string' || !isCount(rev)) throw new TypeError('saved: server text and rev required');
    if (!inflight !== !pending) throw new TypeError('saved: inflight and pending go together');
    let value = server;
    if (pending) value = apply(value, normalize(pending));
    if (buffer) value = apply(value, normalize(buffer));
    this.#server = server;
    this.#rev = rev;
    this.#inflight = inflight ? Object.freeze({ cid: inflight.cid, rev: inflight.rev, ops: freezeOp(normalize(inflight.ops)) }) : null;
    this.#pending = pending ? freezeOp(normalize(pending)) : null;
    this.#buffer = buffer && normalize(buffer).length ? freezeOp(normalize(buffer)) : null;
    this.#value = value;
    this.#ackRev = undefined;
    this.#uncertain = !!inflight;
    this.#future.clear();
  }

  /**
   * After a reconnect: sends the in-flight op again, unchanged, through
   * send(rev, ops, cid) (the room must keep the cid). Returns the in-flight
   * op or null. A room may instead re-send doc.inflight itself.
   */
  resend() {
    const inf = this.#inflight;
    if (inf) this.#send(inf.rev, inf.ops, inf.cid);
    return inf;
  }
}

// ---- <textarea> binding ---------------------------------------------------------

/**
 * Keeps textarea (value, selectionStart/End, setSelectionRange,
 * add/removeEventListener) and doc in sync: input events become local edits,
 * doc changes are written to the textarea with the selection carried
 * through them. onSelection({start, end, start16, end16, direction}) is
 * called after input, selection moves and remote writes (start/end in code
 * points, for presence). Returns the function that unbinds.
 */
export function bindTextarea(textarea, doc, { onSelection } = {}) {
  let synced = doc.value; // the doc value the textarea content was last reconciled with
  let behind = null; // doc ops since synced, not yet shown (during IME composition)
  let composing = false;
  let busy = false;

  const selection = () => {
    const v = textarea.value;
    const start16 = textarea.selectionStart ?? v.length;
    const end16 = textarea.selectionEnd ?? start16;
    return {
      start: utf16ToCp(v, start16),
      end: utf16ToCp(v, end16),
      start16,
      end16,
      direction: textarea.selectionDirection ?? 'none',
    };
  };
  const report = () => { if (onSelection) onSelection(selection()); };

  // Writes value into the textarea; ops (code points) take the current
  // textarea text to value and carry the selection. A caret stays before
  // an insert made at it; a selection does not grow to swallow one.
  const show = (value, ops) => {
    const old = textarea.value;
    const { start, end, direction } = selection();
    let s = start;
    let e = end;
    if (ops) {
      if (s === e) {
        s = e = transformPosition(s, ops, 'left');
      } else {
        s = transformPosition(s, ops, 'right');
        e = transformPosition(e, ops, 'left');
        if (s > e) s = e;
      }
    }
    if (old !== value) textarea.value = value;
    textarea.setSelectionRange(cpToUtf16(value, s), cpToUtf16(value, e), direction);
  };

  // Folds the textarea's edits into the doc; shows doc changes it missed.
  const reconcile = () => {
    let local = textarea.value;
    if (toWellFormed(local) !== local) {
      // Never seen from a keyboard, but a lone surrogate cannot go on the
      // wire: U+FFFD keeps every UTF-16 index, so the selection stands.
      const { selectionStart: s, selectionEnd: e, selectionDirection: dir } = textarea;
      textarea.value = local = toWellFormed(local);
      textarea.setSelectionRange(s, e, dir);
    }
    const caret = textarea.selectionStart === textarea.selectionEnd ? textarea.selectionEnd : undefined;
    busy = true;
    try {
      if (!behind) {
        if (local !== doc.value) doc.replace(local, caret);
      } else {
        // Both moved since synced: the textarea by l, the doc by behind
        // (already sequenced or sent, so it goes first on ties).
        const l = diff(synced, local, caret);
        const ahead = behind;
        behind = null;
        doc.submitOp(transform(l, ahead, 'right'));
        show(doc.value, transform(ahead, l, 'left')); // local text -> doc.value
      }
    } finally {
      busy = false;
      synced = doc.value;
    }
  };

  const onChange = ({ value, ops }) => {
    if (busy) return;
    if (textarea.value === value) {
      synced = value;
      behind = null;
      return;
    }
    behind = behind ? compose(behind, ops) : ops;
    if (composing) return;
    if (textarea.value !== synced) {
      reconcile(); // input the textarea has not reported yet
    } else {
      show(value, behind);
      behind = null;
      synced = value;
    }
    report();
  };

  const onInput = (ev) => {
    if (composing || ev?.isComposing) return;
    reconcile();
    report();
  };
  const onCompositionStart = () => { composing = true; };
  const onCompositionEnd = () => {
    composing = false;
    reconcile();
    report();
  };

  if (textarea.value !== doc.value) textarea.value = doc.value;
  const events = [
    ['input', onInput], ['compositionstart', onCompositionStart], ['compositionend', onCompositionEnd],
    ['select', report], ['keyup', report], ['mouseup', report], ['focus', report],
  ];
  for (const [name, fn] of events) textarea.addEventListener(name, fn);
  doc.on('change', onChange);
  return () => {
    for (const [name, fn] of events) textarea.removeEventListener(name, fn);
    doc.off('change', onChange);
  };
}
