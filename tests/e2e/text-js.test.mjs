// text-js.test.mjs -- clients/js/text.js without a server: the OT functions
// against the reference (npm ot-text-unicode, whose wire format PROTOCOL.md
// 5.7 adopts) on seeded random cases over ASCII, multi-byte and astral text;
// TP1; UTF-16 <-> code point helpers; the TextDoc state machine driven by an
// in-memory server (N clients, reordered FIFO channels, disconnects,
// snapshots, rejections, field overwrites); bindTextarea on a fake textarea.
// Deterministic: every random case comes from a seed printed on failure.
import assert from 'node:assert/strict';
import test from 'node:test';

import otText from 'ot-text-unicode';

import * as T from '../../clients/js/text.js';
import { FakeTextarea } from './lib/fakes.mjs';
import { rng } from './lib/rng.mjs';

const { type: ref } = otText;

// ---- seeded randomness ------------------------------------------------------

// ASCII, 2- and 3-byte UTF-8, astral (surrogate pairs in JS), a combining mark.
const ALPHABET = ['a', 'b', 'c', 'x', ' ', '\n', 'é', 'ß', '中', '€', '\u0301', '😀', '👍', '𝄞', '🇫'];
const randText = (r, maxCp, alphabet = ALPHABET) => {
  let s = '';
  for (let i = r.int(maxCp + 1); i > 0; i--) s += r.pick(alphabet);
  return s;
};
const nonEmpty = (r, maxCp) => randText(r, Math.max(0, maxCp - 1)) + r.pick(ALPHABET);
const cps = (s) => Array.from(s);
const clone = (x) => JSON.parse(JSON.stringify(x));

/** A random op applying to doc, possibly not normalized (adjacent components of one kind). */
function randOp(r, doc) {
  const n = cps(doc).length;
  const op = [];
  let i = 0;
  for (;;) {
    const k = r.int(3);
    if (k === 0 && i < n) {
      const len = 1 + r.int(Math.min(n - i, 6));
      op.push(len);
      i += len;
    } else if (k === 1) {
      op.push(nonEmpty(r, 4));
    } else if (k === 2 && i < n) {
      const len = 1 + r.int(Math.min(n - i, 6));
      op.push({ d: len });
      i += len;
    }
    if (r.chance(0.2) || (i >= n && r.chance(0.4))) break;
  }
  return op;
}

/** Same effect, noisier spelling: split components, empty components, a trailing retain up to len. */
function noisy(r, op, len = 0) {
  const out = [];
  const empties = [0, '', { d: 0 }];
  for (const c of op) {
    if (r.chance(0.2)) out.push(clone(r.pick(empties)));
    if (typeof c === 'number' && c > 1 && r.chance(0.3)) {
      const k = 1 + r.int(c - 1);
      out.push(k, c - k);
    } else if (typeof c === 'string' && cps(c).length > 1 && r.chance(0.3)) {
      const parts = cps(c);
      const k = 1 + r.int(parts.length - 1);
      out.push(parts.slice(0, k).join(''), parts.slice(k).join(''));
    } else if (typeof c === 'object' && c.d > 1 && r.chance(0.3)) {
      const k = 1 + r.int(c.d - 1);
      out.push({ d: k }, { d: c.d - k });
    } else {
      out.push(clone(c));
    }
  }
  const span = op.reduce((n, c) => n + (typeof c === 'number' ? c : typeof c === 'object' ? c.d : 0), 0);
  if (len > span && r.chance(0.5)) out.push(1 + r.int(len - span));
  return out;
}

const refNorm = (op) => ref.normalize(clone(op)); // the reference mutates its input

// ---- the reference ------------------------------------------------------------

test('normalize: same result as ot-text-unicode, input left untouched', () => {
  for (let seed = 1; seed <= 3000; seed++) {
    const r = rng(seed);
    const doc = randText(r, 20);
    const op = noisy(r, randOp(r, doc), cps(doc).length);
    const before = JSON.stringify(op);
    assert.deepEqual(T.normalize(op), refNorm(op), `seed ${seed}: ${before}`);
    assert.equal(JSON.stringify(op), before, `seed ${seed}: normalize mutated its input`);
  }
  assert.deepEqual(T.normalize([0, '', { d: 0 }, 3]), []);
  assert.deepEqual(T.normalize([{ d: 1 }, { d: 2 }, 'a', 'b', 2, 3]), [{ d: 3 }, 'ab']);
  for (const bad of [[-1], [1.5], [{ d: -1 }], [{ d: 'abc' }], [null], [[1]], [{}], 'abc', [true], ['\ud83d'], [1, 'a\ude00b']]) {
    assert.throws(() => T.normalize(bad), TypeError, JSON.stringify(bad));
  }
  // A lone surrogate is not Unicode: the server could not decode it, and the
  // reference counts it as a pair.
  assert.throws(() => T.apply('ab', [1, '\ud83d']), TypeError);
  assert.equal(T.toWellFormed('a\ud83db😀\ude00'), 'a\ufffdb😀\ufffd');
});

test('apply: same result as ot-text-unicode; reaching past the end throws', () => {
  for (let seed = 1; seed <= 3000; seed++) {
    const r = rng(seed);
    const doc = randText(r, 20);
    const op = randOp(r, doc);
    const want = ref.apply(doc, refNorm(op));
    assert.equal(T.apply(doc, op), want, `seed ${seed}: ${JSON.stringify([doc, op])}`);
    assert.equal(T.apply(doc, noisy(r, op, cps(doc).length)), want, `seed ${seed}: noisy`);
  }
  // The reference throws on a retain past the end but silently truncates a
  // delete; the protocol (5.7, invalid_field) refuses both.
  assert.throws(() => ref.apply('ab😀', [4, 'x']), /too long/);
  assert.equal(ref.apply('ab😀', [2, { d: 5 }]), 'ab');
  assert.throws(() => T.apply('ab😀', [4, 'x']), RangeError);
  assert.throws(() => T.apply('ab😀', [2, { d: 2 }]), RangeError);
  assert.throws(() => T.apply('ab😀', [3, 1]), RangeError);
  assert.equal(T.apply('ab😀', [3, 'x']), 'ab😀x');
  assert.equal(T.apply('ab😀', [2, { d: 1 }]), 'ab');
  assert.equal(T.apply('ab😀', [3]), 'ab😀', 'a trailing retain to the end is fine');
});

test('transform: same result as ot-text-unicode, both sides', () => {
  for (let seed = 1; seed <= 4000; seed++) {
    const r = rng(seed);
    const doc = randText(r, r.chance(0.5) ? 4 : 16); // short docs: many ties
    const a = randOp(r, doc);
    const b = randOp(r, doc);
    for (const side of ['left', 'right']) {
      const n = cps(doc).length;
      const got = T.transform(r.chance(0.5) ? a : noisy(r, a, n), r.chance(0.5) ? b : noisy(r, b, n), side);
      assert.deepEqual(got, ref.transform(refNorm(a), refNorm(b), side), `seed ${seed} ${side}: ${JSON.stringify([doc, a, b])}`);
    }
  }
  assert.throws(() => T.transform([1], [1], 'middle'), TypeError);
});

test('compose: same result as ot-text-unicode, and applies as the two ops in a row', () => {
  for (let seed = 1; seed <= 4000; seed++) {
    const r = rng(seed);
    const doc = randText(r, 16);
    const a = randOp(r, doc);
    const mid = T.apply(doc, a);
    const b = randOp(r, mid);
    const got = T.compose(r.chance(0.5) ? a : noisy(r, a, cps(doc).length), r.chance(0.5) ? b : noisy(r, b, cps(mid).length));
    const ctx = `seed ${seed}: ${JSON.stringify([doc, a, b])}`;
    assert.deepEqual(got, ref.compose(refNorm(a), refNorm(b)), ctx);
    assert.equal(T.apply(doc, got), T.apply(mid, b), ctx);
  }
});

test('transformPosition: same as ot-text-unicode; both sides land where an insert at the cursor would', () => {
  const M = '\ue000'; // not in ALPHABET
  for (let seed = 1; seed <= 3000; seed++) {
    const r = rng(seed);
    const doc = randText(r, 10);
    const op = randOp(r, doc);
    const n = cps(doc).length;
    for (let pos = 0; pos <= n + 2; pos++) {
      const ctx = `seed ${seed} pos ${pos}: ${JSON.stringify([doc, op])}`;
      assert.equal(T.transformPosition(pos, op), ref.transformPosition(pos, refNorm(op)), ctx);
      if (pos > n) continue;
      for (const side of ['left', 'right']) {
        const moved = T.transformPosition(pos, op, side);
        const after = T.apply(T.apply(doc, op), T.transform([pos, M], op, side));
        assert.equal(moved, cps(after).indexOf(M), `${ctx} ${side}`);
      }
    }
  }
  assert.equal(T.transformPosition(2, [2, 'xy']), 2);
  assert.equal(T.transformPosition(2, [2, 'xy'], 'right'), 4);
  assert.equal(T.transformPosition(2, [1, { d: 1 }, 'x'], 'right'), 2, 'an insert where a delete ends competes');
  assert.equal(T.transformPosition(2, [1, { d: 2 }, 'x'], 'right'), 1, 'an insert past the deleted cursor does not');
  assert.deepEqual(T.transformSelection([1, 3], [{ d: 2 }]), [0, 1]);
});

test('TP1 on random concurrent ops, and invert', () => {
  for (let seed = 1; seed <= 4000; seed++) {
    const r = rng(seed);
    const doc = randText(r, r.chance(0.5) ? 4 : 16);
    const a = randOp(r, doc);
    const b = randOp(r, doc);
    const ctx = `seed ${seed}: ${JSON.stringify([doc, a, b])}`;
    const viaA = T.apply(T.apply(doc, a), T.transform(b, a, 'right'));
    const viaB = T.apply(T.apply(doc, b), T.transform(a, b, 'left'));
    assert.equal(viaA, viaB, ctx);
    // The reference agrees on the converged text (its own TP1).
    assert.equal(ref.apply(ref.apply(doc, refNorm(a)), ref.transform(refNorm(b), refNorm(a), 'right')), viaA, ctx);
    assert.equal(T.apply(T.apply(doc, a), T.invert(a, doc)), doc, ctx);
  }
});

// ---- UTF-16 <-> code points ------------------------------------------------------

test('UTF-16 <-> code point positions, never inside a surrogate pair', () => {
  const s = 'a😀b𝄞';
  assert.equal(T.cpLength(s), 4);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((i) => T.utf16ToCp(s, i)), [0, 1, 1, 2, 3, 3, 4]);
  assert.deepEqual([0, 1, 2, 3, 4, 9].map((i) => T.cpToUtf16(s, i)), [0, 1, 3, 4, 6, 6]);
  assert.equal(T.utf16ToCp(s, 99), 4);
  assert.equal(T.cpLength('\ud800x'), 2, 'a lone surrogate is one code point');
  for (let seed = 1; seed <= 500; seed++) {
    const r = rng(seed);
    const str = randText(r, 12);
    const n = cps(str).length;
    for (let p = 0; p <= n; p++) {
      const u = T.cpToUtf16(str, p);
      assert.equal(T.utf16ToCp(str, u), p);
      assert.equal(cps(str.slice(0, u)).length, p);
    }
  }
});

test('insertOp, deleteOp: UTF-16 edits as code point ops', () => {
  const s = 'a😀b';
  assert.deepEqual(T.insertOp(s, 3, 'X'), [2, 'X']);
  assert.deepEqual(T.insertOp(s, 2, 'X'), [1, 'X'], 'inside the pair: before it');
  assert.deepEqual(T.insertOp(s, 0, '👍'), ['👍']);
  assert.deepEqual(T.insertOp(s, 1, ''), []);
  assert.deepEqual(T.deleteOp(s, 1, 2), [1, { d: 1 }]);
  assert.deepEqual(T.deleteOp(s, 1, 1), [1, { d: 1 }], 'half a pair deletes the character');
  assert.deepEqual(T.deleteOp(s, 2, 1), [1, { d: 1 }]);
  assert.deepEqual(T.deleteOp(s, 0, 4), [{ d: 3 }]);
  assert.throws(() => T.deleteOp(s, 2, 3), RangeError);
  assert.throws(() => T.insertOp(s, 5, 'x'), RangeError);
  assert.throws(() => T.insertOp(s, -1, 'x'), RangeError);
  for (let seed = 1; seed <= 1000; seed++) {
    const r = rng(seed);
    const str = randText(r, 12);
    const bounds = [0];
    for (const ch of cps(str)) bounds.push(bounds[bounds.length - 1] + ch.length);
    const at = r.pick(bounds);
    const to = r.pick(bounds.filter((b) => b >= at));
    const text = randText(r, 3);
    assert.equal(T.apply(str, T.insertOp(str, at, text)), str.slice(0, at) + text + str.slice(at), `seed ${seed}`);
    assert.equal(T.apply(str, T.deleteOp(str, at, to - at)), str.slice(0, at) + str.slice(to), `seed ${seed}`);
  }
});

test('diff: an op from a to b, whole characters, caret-guided', () => {
  for (let seed = 1; seed <= 3000; seed++) {
    const r = rng(seed);
    const a = randText(r, 16);
    const b = T.apply(a, randOp(r, a));
    const op = T.diff(a, b);
    assert.equal(T.apply(a, op), b, `seed ${seed}: ${JSON.stringify([a, b])}`);
    assert.equal(T.apply(a, T.diff(a, b, r.int(b.length + 1))), b, `seed ${seed}: with caret`);
    assert.ok(op.filter((c) => typeof c !== 'number').length <= 2, `seed ${seed}: one delete, one insert`);
  }
  assert.deepEqual(T.diff('aa', 'aaa'), [2, 'a']);
  assert.deepEqual(T.diff('aa', 'aaa', 1), ['a'], 'typed at the start');
  assert.deepEqual(T.diff('aaa', 'aa', 1), [1, { d: 1 }], 'backspace in the middle');
  assert.deepEqual(T.diff('x😀y', 'x😁y'), [1, { d: 1 }, '😁'], 'shared high surrogate');
  assert.deepEqual(T.diff('\ud800\udc00', '\ud801\udc00'), [{ d: 1 }, '\ud801\udc00'], 'shared low surrogate');
  assert.deepEqual(T.diff('same', 'same'), []);
});

test('diffMinimal: a shortest edit between a and b, or one region past its budget', () => {
  // Edit distance (deletes + inserts) by dynamic programming over code points.
  const distance = (a, b) => {
    const x = cps(a);
    const y = cps(b);
    let row = Array.from({ length: y.length + 1 }, (_, j) => j);
    for (let i = 1; i <= x.length; i++) {
      const next = [i];
      for (let j = 1; j <= y.length; j++) {
        next[j] = x[i - 1] === y[j - 1] ? row[j - 1] : 1 + Math.min(row[j], next[j - 1]);
      }
      row = next;
    }
    return row[y.length];
  };
  const cost = (op) => op.reduce((n, c) => n + (typeof c === 'string' ? cps(c).length : typeof c === 'object' ? c.d : 0), 0);
  for (let seed = 1; seed <= 1500; seed++) {
    const r = rng(seed);
    const a = randText(r, 24, ['a', 'b', 'c', '😀', 'é']); // small alphabet: many equal-cost choices
    let b = a;
    for (let k = r.int(4); k >= 0; k--) b = T.apply(b, randOp(r, b));
    const op = T.diffMinimal(a, b);
    const ctx = `seed ${seed}: ${JSON.stringify([a, b, op])}`;
    assert.equal(T.apply(a, op), b, ctx);
    assert.equal(cost(op), distance(a, b), ctx);
    assert.deepEqual(op, T.normalize(op), ctx);
  }
  assert.deepEqual(T.diffMinimal('one two three', 'ONE one two three four'), ['ONE ', 13, ' four']);
  assert.deepEqual(T.diffMinimal('abcdef', 'xbcdey', 1), [{ d: 6 }, 'xbcdey'], 'past the budget: one region');
});

// ---- TextDoc: unit cases ----------------------------------------------------------

function makeDoc(text = '', rev = 0) {
  const sent = [];
  let n = 0;
  const doc = new T.TextDoc({ text, rev, send: (r, ops, cid) => { const c = cid ?? `c${++n}`; sent.push({ cid: c, rev: r, ops: clone(ops) }); return c; } });
  const changes = [];
  const errors = [];
  doc.on('change', (e) => changes.push(e));
  doc.on('error', (e) => errors.push(e));
  return { doc, sent, changes, errors };
}

test('TextDoc: one op in flight, edits buffered and composed, ack sends the buffer', () => {
  const { doc, sent, changes } = makeDoc('héllo', 3);
  assert.equal(doc.state, 'synchronized');
  doc.insert(5, ' 😀');
  assert.equal(doc.value, 'héllo 😀');
  assert.deepEqual(sent, [{ cid: 'c1', rev: 3, ops: [5, ' 😀'] }]);
  assert.equal(doc.state, 'awaiting');
  assert.deepEqual(doc.inflight, { cid: 'c1', rev: 3, ops: [5, ' 😀'] });
  doc.insert(doc.value.length, '!');
  doc.delete(0, 1);
  assert.equal(doc.state, 'awaiting-with-buffer');
  assert.equal(sent.length, 1, 'nothing more sent while one op is in flight');
  assert.deepEqual(doc.buffer, [{ d: 1 }, 6, '!']);
  assert.equal(doc.ack('other', 4), false);
  assert.equal(doc.ack('c1', 4), true);
  assert.equal(doc.rev, 4);
  assert.equal(doc.serverText, 'héllo 😀');
  assert.deepEqual(sent[1], { cid: 'c2', rev: 4, ops: [{ d: 1 }, 6, '!'] });
  doc.remote(3, [1, 'zzz'], 'c1'); // the broadcast of the acked op: already applied
  assert.equal(doc.value, 'éllo 😀!');
  doc.remote(4, ['Q'], 'c2'); // own broadcast first: counts as the ack, content ignored
  assert.equal(doc.state, 'synchronized');
  assert.equal(doc.rev, 5);
  assert.equal(doc.serverText, 'éllo 😀!');
  assert.deepEqual(changes.map((c) => c.local), [true, true, true]);
  doc.replace('éllo 😀!');
  assert.equal(sent.length, 2, 'a replace that changes nothing sends nothing');
});

test('TextDoc: remote ops transform in-flight and buffer; ties go to the server order', () => {
  const { doc, sent, changes } = makeDoc('abc', 0);
  doc.insert(1, 'X'); // in flight: [1, 'X']
  doc.insert(2, 'Y'); // buffer: [2, 'Y']  -> aXYbc
  doc.remote(0, [1, '😀'], 'bob.1'); // concurrent insert at the same spot: server's goes first
  assert.equal(doc.value, 'a😀XYbc');
  assert.deepEqual(changes.at(-1), { value: 'a😀XYbc', local: false, ops: [1, '😀'], rev: 1 });
  assert.deepEqual(doc.pending, [2, 'X']);
  assert.deepEqual(doc.inflight.ops, [1, 'X'], 'the op as sent is kept unchanged for a re-send');
  doc.ack('c1', 2);
  assert.deepEqual(sent[1], { cid: 'c2', rev: 2, ops: [3, 'Y'] });
  assert.equal(doc.serverText, 'a😀Xbc');
});

test('TextDoc: ack ahead of missing broadcasts, and out-of-order broadcasts, wait for the gap', () => {
  const { doc } = makeDoc('abc', 0);
  doc.insert(3, '!');
  assert.equal(doc.ack('c1', 3), true); // own op is rev 2 -> 3; revs 0 and 1 not seen yet
  assert.equal(doc.state, 'awaiting');
  assert.equal(doc.remote(1, [{ d: 1 }], 'x.2'), false);
  assert.equal(doc.value, 'abc!');
  assert.equal(doc.remote(0, ['>'], 'x.1'), true);
  assert.equal(doc.state, 'synchronized');
  assert.equal(doc.rev, 3);
  assert.equal(doc.value, 'abc!');
  assert.equal(doc.serverText, 'abc!');
});

test('TextDoc: a duplicate ack waits for the broadcast carrying the cid', () => {
  const { doc } = makeDoc('abc', 0);
  doc.insert(0, 'x');
  doc.ack('c1', undefined);
  assert.equal(doc.state, 'awaiting');
  doc.remote(0, ['y'], 'other');
  doc.remote(1, [1, 'x'], 'c1');
  assert.equal(doc.state, 'synchronized');
  assert.equal(doc.value, 'yxabc');
  assert.equal(doc.rev, 2);
});

test('TextDoc: rejected drops the in-flight op and its effect, keeps and sends the buffer', () => {
  const { doc, sent, changes, errors } = makeDoc('abc😀', 0);
  doc.delete(1, 1); // in flight: [1, {d:1}]  -> ac😀
  doc.insert(4, 'Z'); // buffer: ac😀Z
  doc.insert(1, 'Q'); // buffer: aQc😀Z
  assert.equal(doc.rejected('nope', 'forbidden'), false);
  assert.equal(doc.rejected('c1', 'locked'), true);
  assert.equal(doc.value, 'abQc😀Z', 'the restored text goes first, as server text does');
  assert.equal(doc.serverText, 'abc😀');
  assert.equal(changes.at(-1).local, true);
  assert.equal(changes.at(-1).rollback, true);
  assert.equal(T.apply(changes.at(-2).value, changes.at(-1).ops), doc.value, "the change's ops take the old value to the new");
  assert.deepEqual(errors, [{ code: 'locked', message: 'text op c1 rejected: locked', cid: 'c1', ops: [1, { d: 1 }] }]);
  assert.deepEqual(sent[1], { cid: 'c2', rev: 0, ops: [2, 'Q', 2, 'Z'] });
});

test('TextDoc: item_replaced drops the op in flight and the buffer, and resets to the text it carries', () => {
  const { doc, sent, changes, errors } = makeDoc('old text', 4);
  doc.insert(8, '!');  // in flight
  doc.insert(0, '>');  // buffered
  assert.equal(doc.rejected('c1', 'item_replaced', { text: 'new', rev: 1 }), true);
  assert.deepEqual([doc.value, doc.serverText, doc.rev, doc.state], ['new', 'new', 1, 'synchronized']);
  assert.equal(sent.length, 1, 'nothing of the old item is sent again');
  const last = changes.at(-1);
  assert.deepEqual([last.value, last.reset, last.rollback, last.reason, last.local], ['new', true, true, 'item_replaced', false]);
  assert.equal(T.apply('>old text!', last.ops), 'new', "the change's ops take the old value to the new");
  assert.deepEqual(errors.map((e) => [e.code, e.cid, e.text, e.rev]), [['item_replaced', 'c1', 'new', 1]]);
  doc.insert(3, '?');
  assert.deepEqual(sent.at(-1), { cid: 'c2', rev: 1, ops: [3, '?'] }, 'editing goes on from the new text');
  // Without text and rev it is an ordinary refusal.
  assert.equal(doc.rejected('c2', 'item_replaced'), true);
  assert.equal(doc.value, 'new');
});

test('TextDoc: save() and load() carry the op in flight and the buffer to another doc, uncertain', () => {
  const { doc } = makeDoc('hello', 2);
  doc.insert(5, ' world');            // in flight
  doc.remote(2, ['>'], 'bob.1');      // moves it: pending is transformed
  doc.insert(0, '[');                 // buffered
  const saved = JSON.parse(JSON.stringify(doc.save()));
  assert.deepEqual(saved, { server: '>hello', rev: 3, inflight: { cid: 'c1', rev: 2, ops: [5, ' world'] }, pending: [6, ' world'], buffer: ['['] });
  const { doc: again, sent, changes } = makeDoc('', 0);
  again.load(saved);
  assert.deepEqual([again.value, again.serverText, again.rev, again.state, again.uncertain], ['[>hello world', '>hello', 3, 'awaiting-with-buffer', true]);
  assert.deepEqual(again.inflight, { cid: 'c1', rev: 2, ops: [5, ' world'] });
  assert.deepEqual([sent, changes], [[], []], 'load sends and emits nothing');
  // The answer to the uncertain op decides, as after a snapshot: here a duplicate ack (it was in).
  again.reset('>hello world', 4, { keepInflight: true });
  again.ack('c1', undefined);
  assert.deepEqual([again.value, again.state], ['[>hello world', 'awaiting']);
  assert.equal(sent.length, 1);
  assert.deepEqual([sent[0].rev, sent[0].ops], [4, ['[']], 'then the buffer, on the new revision');
  assert.throws(() => again.load({ server: 'x', rev: 0, inflight: { cid: 'a', rev: 0, ops: ['y'] }, pending: null, buffer: null }), TypeError);
  assert.throws(() => again.load({ server: 'x', rev: 0, inflight: null, pending: null, buffer: [5, 'y'] }));
  assert.equal(again.value, '[>hello world', 'a bad state changes nothing');
});

test('TextDoc: reset rebases local edits on the new text and sends them afresh', () => {
  const { doc, sent, changes } = makeDoc('hello world', 5);
  doc.insert(5, ' big'); // in flight
  doc.insert(0, '>'); // buffer
  doc.reset('hello brave world', 9);
  assert.equal(doc.value, '>hello big brave world');
  assert.equal(doc.rev, 9);
  assert.deepEqual(sent[1], { cid: 'c2', rev: 9, ops: ['>', 5, ' big'] });
  assert.equal(changes.at(-1).reset, true);
  assert.equal(T.apply(changes.at(-2).value, changes.at(-1).ops), doc.value);
  // rejected(rev_too_old) with the error's text is the same reset
  doc.rejected('c2', 'rev_too_old', { text: 'HELLO brave world', rev: 12 });
  assert.equal(doc.value, '>HELLO big brave world');
  assert.deepEqual(sent[2], { cid: 'c3', rev: 12, ops: ['>', 5, ' big'] });
  // a snapshot while nothing is pending just replaces the text
  doc.ack('c3', 13);
  doc.reset('new', 20);
  assert.equal(doc.value, 'new');
  assert.equal(doc.state, 'synchronized');
});

test('TextDoc: a reset keeps local edits next to the text they were made in', () => {
  const { doc } = makeDoc('one two three', 1);
  doc.insert(7, ' and a half'); // "one two| three"
  doc.reset('ONE one two three four', 5); // the history in between is unknown
  assert.equal(doc.value, 'ONE one two and a half three four');
});

test('TextDoc: reset with keepInflight; the answer tells whether the snapshot held the op', () => {
  // (1) duplicate ack: the op is in the snapshot already; not applied twice
  {
    const { doc, sent } = makeDoc('abc', 0);
    doc.insert(3, '!'); // c1 in flight, connection lost, reconnect: snapshot
    doc.insert(0, '<'); // buffer
    doc.reset('abc!?', 2, { keepInflight: true });
    assert.equal(doc.state, 'awaiting-with-buffer');
    assert.equal(doc.resend().cid, 'c1');
    assert.deepEqual(sent[1], { cid: 'c1', rev: 0, ops: [3, '!'] }, 'the re-send is the op as first sent');
    doc.ack('c1', undefined);
    assert.equal(doc.value, '<abc!?');
    assert.deepEqual(sent[2], { cid: 'c2', rev: 2, ops: ['<'] });
  }
  // (2) its broadcast after the snapshot: the op as applied replaces ours
  {
    const { doc } = makeDoc('abc', 0);
    doc.insert(3, '!');
    doc.reset('abc?', 1, { keepInflight: true });
    assert.equal(doc.value, 'abc?!');
    doc.ack('c1', 2); // not enough while uncertain
    assert.equal(doc.state, 'awaiting');
    doc.remote(1, [4, '!'], 'c1');
    assert.equal(doc.state, 'synchronized');
    assert.equal(doc.value, 'abc?!');
    assert.equal(doc.serverText, 'abc?!');
  }
  // (3) rev_too_old: it never was applied; rebased and sent with a new cid
  {
    const { doc, sent } = makeDoc('abc', 0);
    doc.insert(3, '!');
    doc.reset('abc?', 1, { keepInflight: true });
    doc.rejected('c1', 'rev_too_old', { text: 'xabc?', rev: 4 });
    assert.equal(doc.value, 'xabc?!');
    assert.deepEqual(sent.at(-1), { cid: 'c2', rev: 4, ops: [5, '!'] });
  }
});

test('TextDoc: inputs are checked before anything changes', () => {
  const { doc, sent } = makeDoc('ab', 0);
  assert.throws(() => doc.insert(3, 'x'), RangeError);
  assert.throws(() => doc.submitOp([3, 'x']), RangeError);
  assert.throws(() => doc.remote(0, [5, 'x'], 'o'), RangeError);
  assert.equal(doc.value, 'ab');
  assert.equal(doc.rev, 0);
  assert.equal(sent.length, 0);
  assert.throws(() => new T.TextDoc({ text: 'x' }), TypeError);
});

// ---- TextDoc against an in-memory server ----------------------------------------------

// Marker k is three astral code points used by no other marker and no
// filler, so that no diff can align a piece of it with other text: a
// marker is either whole or visibly broken (stray marker characters).
const MARK0 = 0xf0000;
const marker = (k) => String.fromCodePoint(MARK0 + 3 * k, MARK0 + 3 * k + 1, MARK0 + 3 * k + 2);
const isMarkChar = (cp) => cp >= MARK0 && cp < MARK0 + 0x10000;
function markersIn(s) {
  const found = [];
  for (let i = 0; i < s.length; i++) {
    const cp = s.codePointAt(i);
    if (isMarkChar(cp) && (cp - MARK0) % 3 === 0) {
      const m = marker((cp - MARK0) / 3);
      if (s.startsWith(m, i)) found.push({ m, start: i, end: i + m.length });
    }
  }
  return found;
}
const markChars = (s) => cps(s).filter((c) => isMarkChar(c.codePointAt(0))).length;
const FILLER = ALPHABET;

/**
 * The server's side of PROTOCOL.md 5.3-5.5 and 5.7 for one text field: text,
 * revision, the retained log (transforms use the reference implementation,
 * incoming op on the right), dedupe by cid, rev_too_old, random refusals,
 * overwrites (a `set` of the field), catch-up or snapshot on join.
 */
class SimServer {
  constructor(r, text, status) {
    this.r = r;
    this.text = text;
    this.rev = 0;
    this.texts = [text]; // every revision's text, to check the clients' view
    this.log = []; // {op, cid} applying to revisions base, base + 1, ...
    this.base = 0;
    this.seen = new Map();
    this.clients = [];
    this.status = status;
    this.rejectRate = 0.03;
  }

  receive(client, m) {
    const reply = (msg) => { if (client.online) client.down.push(msg); };
    if (this.seen.has(m.cid)) return reply({ type: 'ack', cid: m.cid, duplicate: true });
    assert.ok(m.rev <= this.rev, `op ${m.cid} at rev ${m.rev} > ${this.rev}`);
    if (this.r.chance(this.rejectRate)) return reply({ type: 'error', code: 'forbidden', cid: m.cid });
    if (m.rev < this.base) return reply({ type: 'error', code: 'rev_too_old', cid: m.cid, text: this.text, rev: this.rev });
    let op = ref.normalize(clone(m.ops));
    for (let v = m.rev; v < this.rev; v++) op = ref.transform(op, this.log[v - this.base].op, 'right');
    T.apply(this.text, op); // the server refuses ops past the end; the reference would not throw on deletes
    this.text = ref.apply(this.text, op);
    this.log.push({ op, cid: m.cid });
    this.rev++;
    this.texts[this.rev] = this.text;
    this.seen.set(m.cid, this.rev);
    reply({ type: 'ack', cid: m.cid, rev: this.rev });
    for (const c of this.clients) if (c.online) c.down.push({ type: 'op', rev: this.rev - 1, ops: clone(op), cid: m.cid });
  }

  trim(keep) {
    const drop = Math.max(0, this.log.length - keep);
    this.log.splice(0, drop);
    this.base += drop;
  }

  overwrite(text) {
    for (const { m } of markersIn(this.text)) this.status.set(m, 'wiped');
    this.text = text;
    this.rev++;
    this.texts[this.rev] = text;
    this.log = [];
    this.base = this.rev;
    for (const c of this.clients) if (c.online) c.down.push({ type: 'reset', text, rev: this.rev });
  }

  join(client) {
    const since = client.doc.rev;
    if (since >= this.base && since <= this.rev && this.r.chance(0.6)) {
      const ops = this.log.slice(since - this.base).map((e, i) => ({ rev: since + i, ops: clone(e.op), cid: e.cid }));
      client.down.push({ type: 'joined', ops });
    } else {
      client.down.push({ type: 'joined', snapshot: { text: this.text, rev: this.rev } });
    }
  }
}

/** A client: the room's part (channels, cids, routing answers) around a TextDoc. */
class SimClient {
  constructor(id, r, server, status) {
    this.id = id;
    this.r = r;
    this.server = server;
    this.status = status; // marker -> 'live' | 'deleted' | 'dropped' | 'maybe' | 'wiped'
    this.online = true;
    this.sentHere = new Set(); // cids sent on the current connection
    this.up = [];
    this.down = [];
    this.n = 0;
    this.untagged = { ins: [], del: [] }; // marker edits not sent yet
    this.tags = new Map(); // cid -> marker edits carried by that op
    this.errors = [];
    this.doc = new T.TextDoc({ text: server.text, rev: server.rev, send: (rev, ops, cid) => this.send(rev, ops, cid) });
    this.stats = { snapshots: 0, revTooOld: 0, included: 0, echoes: 0 };
    this.doc.on('ack', ({ cid, included }) => {
      this.tags.delete(cid);
      if (included) this.stats.included++;
    });
    this.doc.on('error', (e) => this.errors.push(e));
    server.clients.push(this);
  }

  send(rev, ops, cid) {
    if (cid === undefined) {
      // A fresh op carries everything not confirmed: the buffer, and any
      // earlier op a reset folded into it.
      cid = `c${this.id}.${++this.n}`;
      const tag = this.untagged;
      for (const t of this.tags.values()) {
        tag.ins.push(...t.ins);
        tag.del.push(...t.del);
      }
      this.tags = new Map([[cid, tag]]);
      this.untagged = { ins: [], del: [] };
    }
    if (this.online) {
      this.up.push({ cid, rev, ops: clone(ops) });
      this.sentHere.add(cid);
    }
    return cid;
  }

  // A reset rebases by diffing texts: a pending delete of text the diff
  // deletes and re-inserts is lost, so such markers may come back.
  reset(text, rev, opts, how = () => this.doc.reset(text, rev, opts)) {
    for (const t of [this.untagged, ...this.tags.values()]) {
      for (const m of t.del) if (this.status.get(m) === 'deleted') this.status.set(m, 'maybe');
    }
    how();
  }

  receive(m) {
    const { doc } = this;
    switch (m.type) {
      case 'ack': doc.ack(m.cid, m.duplicate ? undefined : m.rev); break;
      case 'op':
        if (doc.uncertain && m.cid === doc.inflight.cid && m.rev === doc.rev) this.stats.echoes++;
        doc.remote(m.rev, m.ops, m.cid);
        break;
      case 'reset': this.reset(m.text, m.rev, { keepInflight: true }); break;
      case 'error':
        if (doc.inflight?.cid !== m.cid) break; // an older op's answer
        if (m.code === 'rev_too_old') {
          // Either way in: the doc's own route, or the brief's (reset).
          this.stats.revTooOld++;
          if (this.r.chance(0.5)) {
            this.reset(m.text, m.rev);
          } else {
            this.reset(m.text, m.rev, {}, () => doc.rejected(m.cid, m.code, m));
          }
        } else {
          // The op is rolled back before the buffer goes out as a new op.
          const tag = this.tags.get(m.cid);
          this.tags.delete(m.cid);
          for (const x of tag?.ins ?? []) this.status.set(x, 'dropped');
          for (const x of tag?.del ?? []) if (this.status.get(x) === 'deleted') this.status.set(x, 'maybe');
          doc.rejected(m.cid, m.code);
        }
        break;
      case 'joined':
        if (m.snapshot) {
          this.stats.snapshots += doc.inflight ? 1 : 0;
          this.reset(m.snapshot.text, m.snapshot.rev, { keepInflight: true });
        }
        else for (const e of m.ops) doc.remote(e.rev, e.ops, e.cid);
        // Re-send what the old connection may have lost, not an op sent on
        // this one: if one copy were refused and the other accepted, the
        // rolled back op would come back as someone else's.
        if (doc.inflight && !this.sentHere.has(doc.inflight.cid)) doc.resend();
        break;
      default: throw new Error(`unknown message ${m.type}`);
    }
  }

  /** A random local edit that never cuts a marker: insert a marker or filler, delete filler or a whole marker. */
  edit() {
    const { r, doc } = this;
    const v = doc.value;
    const marks = markersIn(v);
    const bounds = [0];
    for (const ch of cps(v)) bounds.push(bounds[bounds.length - 1] + ch.length);
    const free = bounds.filter((b) => !marks.some((k) => k.start < b && b < k.end));
    const insert = (text) => {
      const at = r.pick(free);
      const how = r.int(3);
      if (how === 0) doc.insert(at, text);
      else if (how === 1) doc.replace(v.slice(0, at) + text + v.slice(at), at + text.length);
      else doc.submitOp(T.insertOp(v, at, text));
    };
    const remove = (at, len) => {
      if (r.chance(0.5)) return doc.delete(at, len); // widens a range ending inside a pair
      if (/[\udc00-\udfff]/.test(v[at + len] ?? '')) len++; // a replace must not cut a pair
      return doc.replace(v.slice(0, at) + v.slice(at + len), at);
    };
    const x = r.next();
    if (x < 0.35) {
      const m = marker(this.status.size);
      this.status.set(m, 'live');
      this.untagged.ins.push(m);
      insert(m);
    } else if (x < 0.6) {
      insert(randText(r, 3, FILLER) || 'z');
    } else if (x < 0.85 || marks.length === 0) {
      const at = r.pick(free);
      const next = marks.find((k) => k.start >= at);
      const room = (next ? next.start : v.length) - at;
      if (room > 0) remove(at, 1 + r.int(Math.min(room, 6)));
    } else {
      const k = r.pick(marks);
      // Shown twice while an uncertain op is resolved (reset with
      // keepInflight): deleting one copy may delete the phantom.
      this.status.set(k.m, marks.filter((x) => x.m === k.m).length > 1 ? 'maybe' : 'deleted');
      this.untagged.del.push(k.m);
      remove(k.start, k.end - k.start);
    }
  }
}

function checkClient(c, server, ctx) {
  const { doc } = c;
  let v = doc.serverText;
  if (doc.pending) v = T.apply(v, doc.pending);
  if (doc.buffer) v = T.apply(v, doc.buffer);
  assert.equal(doc.value, v, `${ctx}: value = server text + pending + buffer`);
  assert.equal(doc.serverText, server.texts[doc.rev], `${ctx}: the client's server text at rev ${doc.rev}`);
}

function simulate(seed, { clients = 3, steps = 300, calm = false } = {}) {
  const r = rng(seed);
  const status = new Map();
  const server = new SimServer(r, randText(r, 12, FILLER), status);
  const cs = Array.from({ length: clients }, (_, i) => new SimClient(i, r, server, status));
  const deliverUp = () => {
    const c = r.pick(cs.filter((x) => x.up.length));
    if (c) server.receive(c, c.up.shift());
    return c;
  };
  const deliverDown = () => {
    const c = r.pick(cs.filter((x) => x.down.length));
    if (c) c.receive(c.down.shift());
    return c;
  };
  const stats = { overwrites: 0, disconnects: 0, rejected: 0 };
  for (let step = 0; step < steps; step++) {
    const x = r.next();
    const ctx = `seed ${seed} step ${step}`;
    const rare = calm ? r.chance(0.1) : true; // calm runs: long histories, more concurrency
    if (x < 0.3) r.pick(cs).edit();
    else if (x < 0.6) deliverUp();
    else if (x < 0.9 || !rare) deliverDown();
    else if (x < 0.94) {
      const c = r.pick(cs.filter((k) => k.online));
      if (c) { // the connection dies: whatever is on the wire is lost
        c.online = false;
        c.sentHere.clear();
        c.up = [];
        c.down = [];
        stats.disconnects++;
      }
    } else if (x < 0.97) {
      const c = r.pick(cs.filter((k) => !k.online));
      if (c) {
        c.online = true;
        server.join(c);
      }
    } else if (x < 0.99) {
      server.trim(r.int(6));
    } else {
      server.overwrite(randText(r, 10, FILLER));
      stats.overwrites++;
    }
    for (const c of cs) checkClient(c, server, `${ctx} client ${c.id}`);
  }
  // Heal: everyone online, every message delivered, no refusals.
  server.rejectRate = 0;
  for (const c of cs) {
    if (!c.online) {
      c.online = true;
      server.join(c);
    }
  }
  for (let guard = 0; deliverUp() || deliverDown(); guard++) assert.ok(guard < 100000, `seed ${seed}: does not settle`);
  for (const c of cs) {
    const ctx = `seed ${seed} client ${c.id}`;
    checkClient(c, server, ctx);
    assert.equal(c.doc.state, 'synchronized', ctx);
    assert.equal(c.doc.rev, server.rev, ctx);
    assert.equal(c.doc.value, server.text, ctx);
    for (const e of c.errors) assert.equal(e.code, 'forbidden', `${ctx}: unexpected error ${JSON.stringify(e)}`);
    stats.rejected += c.errors.length;
    for (const [k, n] of Object.entries(c.stats)) stats[k] = (stats[k] ?? 0) + n;
  }
  const found = new Map();
  for (const { m } of markersIn(server.text)) found.set(m, (found.get(m) ?? 0) + 1);
  const whole = [...found.values()].reduce((n, k) => n + k, 0);
  assert.equal(markChars(server.text), 3 * whole, `seed ${seed}: no broken marker`);
  for (const [m, st] of status) {
    const n = found.get(m) ?? 0;
    if (st === 'live') assert.equal(n, 1, `seed ${seed}: marker ${m} survives exactly once`);
    else if (st === 'maybe') assert.ok(n <= 1, `seed ${seed}: marker ${m} at most once`);
    else assert.equal(n, 0, `seed ${seed}: marker ${m} (${st}) is gone`);
  }
  for (const m of found.keys()) assert.ok(status.has(m), `seed ${seed}: ${m} is not a marker anyone inserted`);
  return { rev: server.rev, markers: found.size, ...stats };
}

test('TextDoc x N clients against an in-memory server: convergence, markers survive', () => {
  const total = {};
  for (let seed = 1; seed <= 120; seed++) {
    const s = simulate(seed, { clients: 2 + (seed % 4), steps: 250 + (seed % 5) * 50, calm: seed % 3 === 0 });
    for (const [k, n] of Object.entries(s)) total[k] = (total[k] ?? 0) + n;
  }
  // The runs exercised what they are meant to: snapshots with an op in
  // flight, resolved by a duplicate ack (in the snapshot) or by its
  // broadcast (applied after it), rev_too_old rebases, overwrites, refusals.
  const least = { rev: 3000, markers: 1000, overwrites: 100, disconnects: 500, rejected: 20, snapshots: 50, included: 10, echoes: 10, revTooOld: 50 };
  for (const [k, n] of Object.entries(least)) assert.ok(total[k] >= n, `${k}: ${JSON.stringify(total)}`);
});

// ---- bindTextarea ----------------------------------------------------------------

function bound(text = '', rev = 0, opts) {
  const d = makeDoc(text, rev);
  const ta = new FakeTextarea();
  const selections = [];
  const unbind = T.bindTextarea(ta, d.doc, { onSelection: (s) => selections.push(s), ...opts });
  return { ...d, ta, unbind, selections };
}

test('bindTextarea: typing becomes ops in code points', () => {
  const { doc, ta, sent, selections } = bound('hello', 0);
  assert.equal(ta.value, 'hello');
  ta.select(5);
  ta.edit(' wörld');
  ta.edit('😀');
  ta.backspace();
  ta.backspace();
  ta.edit('!');
  assert.equal(doc.value, 'hello wörl!');
  assert.deepEqual(sent, [{ cid: 'c1', rev: 0, ops: [5, ' wörld'] }]);
  assert.deepEqual(doc.buffer, [10, '!', { d: 1 }]);
  ta.select(0, 5);
  ta.edit('👋');
  assert.equal(doc.value, '👋 wörl!');
  assert.deepEqual(selections.at(-1), { start: 1, end: 1, start16: 2, end16: 2, direction: 'none' });
  // "aa" -> "aaa" typed at the start is an insert at 0, not at the end
  const b = bound('aa', 0);
  b.ta.select(0);
  b.ta.edit('a');
  assert.deepEqual(b.sent[0].ops, ['a']);
});

test('bindTextarea: remote ops before, after, around and at the selection', () => {
  const { doc, ta, selections } = bound('hello world', 0);
  const remote = (ops) => doc.remote(doc.rev, ops, `bob.${doc.rev}`);
  ta.select(6, 11); // "world"
  remote(['😀 ']); // before: shifts by 2 code points, 3 UTF-16 units
  assert.equal(ta.value, '😀 hello world');
  assert.deepEqual([ta.selectionStart, ta.selectionEnd], [9, 14]);
  assert.deepEqual(selections.at(-1), { start: 8, end: 13, start16: 9, end16: 14, direction: 'none' });
  remote([13, '!']); // after: unchanged
  assert.deepEqual([ta.selectionStart, ta.selectionEnd], [9, 14]);
  remote([6, { d: 4 }]); // "o wo" across the start: "😀 hellrld!"
  assert.equal(ta.value, '😀 hellrld!');
  assert.equal(ta.value.slice(ta.selectionStart, ta.selectionEnd), 'rld');
  remote([6, 'X', 3, 'Y']); // at both ends: the selection does not swallow them
  assert.equal(ta.value, '😀 hellXrldY!');
  assert.equal(ta.value.slice(ta.selectionStart, ta.selectionEnd), 'rld');
  ta.select(7); // caret before "X"
  remote([6, 'Z']); // at the caret: the caret stays before the remote text
  assert.equal(ta.value, '😀 hellZXrldY!');
  assert.equal(ta.selectionStart, 7);
  assert.equal(ta.selectionEnd, 7);
  remote([{ d: 13 }]); // everything: caret at 0
  assert.equal(ta.value, '');
  assert.deepEqual([ta.selectionStart, ta.selectionEnd], [0, 0]);
});

test('bindTextarea: emoji around the caret', () => {
  const { doc, ta } = bound('😀😀😀', 0);
  ta.select(4); // after the second emoji
  doc.remote(0, [1, { d: 1 }], 'bob.1');
  assert.equal(ta.value, '😀😀');
  assert.equal(ta.selectionStart, 2);
  doc.remote(1, ['👍👍'], 'bob.2');
  assert.equal(ta.selectionStart, 6);
  ta.edit('🙂');
  assert.equal(doc.value, '👍👍😀🙂😀');
  assert.deepEqual(doc.inflight.ops, [3, '🙂']);
});

test('bindTextarea: input not reported yet and IME composition are merged, not overwritten', () => {
  const { doc, ta } = bound('abc', 0);
  ta.select(3);
  ta.edit('d', { event: false }); // typed, its input event not dispatched yet
  doc.remote(0, ['>'], 'bob.1');
  assert.equal(doc.value, '>abcd');
  assert.equal(ta.value, '>abcd');
  assert.equal(ta.selectionStart, 5);
  ta.dispatch('compositionstart');
  ta.edit('か', { event: false });
  ta.dispatch('input', { isComposing: true });
  doc.remote(1, ['<'], 'bob.2');
  assert.equal(ta.value, '>abcdか', 'the composition is left alone');
  assert.equal(doc.value, '<>abcd');
  ta.dispatch('compositionend');
  assert.equal(ta.value, '<>abcdか');
  assert.equal(doc.value, '<>abcdか');
  assert.equal(ta.selectionStart, 7);
});

test('bindTextarea: a lone surrogate in the textarea becomes U+FFFD', () => {
  const { doc, ta, sent } = bound('ab', 0);
  ta.select(1);
  ta.edit('\ud83d');
  assert.equal(ta.value, 'a\ufffdb');
  assert.equal(doc.value, 'a\ufffdb');
  assert.deepEqual(sent[0].ops, [1, '\ufffd']);
  assert.equal(ta.selectionStart, 2);
});

test('bindTextarea: unbind removes every listener', () => {
  const { doc, ta, unbind } = bound('abc', 0);
  assert.ok(ta.listenerCount > 0);
  unbind();
  assert.equal(ta.listenerCount, 0);
  ta.select(0);
  ta.edit('x');
  assert.equal(doc.value, 'abc');
  doc.remote(0, ['y'], 'bob.1');
  assert.equal(ta.value, 'xabc');
});

test('bindTextarea: two textareas, random typing and remote interleaving, converge', () => {
  for (let seed = 1; seed <= 40; seed++) {
    const r = rng(seed);
    const status = new Map();
    const server = new SimServer(r, 'hello 😀 world', status);
    server.rejectRate = 0;
    const cs = [0, 1].map((i) => new SimClient(i, r, server, status));
    const tas = cs.map((c) => {
      const ta = new FakeTextarea();
      T.bindTextarea(ta, c.doc);
      return ta;
    });
    for (let step = 0; step < 200; step++) {
      const i = r.int(2);
      const ta = tas[i];
      const x = r.next();
      if (x < 0.4) {
        const bounds = [0];
        for (const ch of cps(ta.value)) bounds.push(bounds[bounds.length - 1] + ch.length);
        const a = r.pick(bounds);
        const b = r.pick(bounds);
        ta.select(Math.min(a, b), r.chance(0.7) ? Math.min(a, b) : Math.max(a, b));
        if (r.chance(0.3)) ta.backspace();
        else ta.edit(randText(r, 3) || 'q', { event: r.chance(0.8) });
      } else if (x < 0.7) {
        const c = cs[i];
        if (c.up.length) server.receive(c, c.up.shift());
      } else {
        const c = cs[i];
        if (c.down.length) c.receive(c.down.shift());
      }
      if (r.chance(0.1)) ta.dispatch('input');
      for (const [k, t] of tas.entries()) {
        if (t.value === cs[k].doc.value) continue;
        // only an edit whose input event is still to come may differ
        t.dispatch('input');
        assert.equal(t.value, cs[k].doc.value, `seed ${seed} step ${step}`);
      }
    }
    for (const t of tas) t.dispatch('input');
    for (let more = true; more;) {
      more = false;
      for (const c of cs) {
        if (c.up.length) { server.receive(c, c.up.shift()); more = true; }
        if (c.down.length) { c.receive(c.down.shift()); more = true; }
      }
    }
    for (const [k, t] of tas.entries()) {
      assert.equal(t.value, server.text, `seed ${seed}: textarea ${k}`);
      assert.equal(cs[k].doc.state, 'synchronized');
    }
  }
});
