// text-oracle.test.mjs -- src/sync/text.c against the npm package
// ot-text-unicode, the reference of docs/PROTOCOL.md 5.7. Thousands of random
// inputs from a seeded PRNG go to build/text-oracle (tests/oracle/text_oracle.c,
// next to $WSYNC_BIN) in one run; every answer must equal ot-text-unicode's.
//
// ot-text-unicode is fed normalized ops (its checkOp rejects adjacent and
// trailing retains, and it treats two adjacent inserts as two positions); the
// C side is often fed the raw op, which it must normalize to the same thing,
// as the server does with a client's op. Where the two deliberately differ on
// validity, the difference is asserted explicitly (see "validity" below).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import test from 'node:test';

import { type } from 'ot-text-unicode';

import { WSYNC_BIN, sanitizerReport, scale } from './lib/server.mjs';
import { mulberry32 } from './lib/rng.mjs';

const ORACLE = path.join(path.dirname(WSYNC_BIN), 'text-oracle');
const SEED = Number(process.env.TEXT_ORACLE_SEED || 20240605);
const N = scale(5000, 2000); // random cases per function

const rnd = mulberry32(SEED);
const int = (n) => Math.floor(rnd() * n); // 0..n-1
const pick = (xs) => xs[int(xs.length)];

// Code points by UTF-8 width: ASCII, 2 bytes (incl. combining U+0301), 3 bytes
// (CJK, U+FFFD, U+FEFF), 4 bytes (emoji, U+10FFFF). A ZWJ family is several
// code points that render as one: OT counts code points, not graphemes.
const CHARS = [
  ...'abcxyz 0\n"\\',
  'é', 'ß', 'ж', '\u0301', '\u00a0',
  '中', '語', '\ufffd', '\ufeff', '\u200d',
  '😅', '🤖', '👻', '𝄞', '\u{10ffff}',
];
const cps = (s) => [...s];
const cpLen = (s) => cps(s).length;
const randText = (min, max) => {
  let s = '';
  for (let i = min + int(max - min + 1); i > 0; i--) s += int(8) === 0 ? '👩\u200d👩\u200d👧' : pick(CHARS);
  return s;
};

// A raw op valid for a text of len code points: random components, sometimes
// with adjacent ones of one kind and a trailing retain (the C side normalizes).
function randRawOp(len) {
  const op = [];
  let left = len;
  for (let steps = int(8); steps > 0; steps--) {
    const k = int(10);
    if (k < 4 && left > 0) {
      const n = 1 + int(Math.min(left, 6));
      op.push(n);
      left -= n;
    } else if (k < 7) {
      op.push(randText(1, 3));
    } else if (left > 0) {
      const n = 1 + int(Math.min(left, 6));
      op.push({ d: n });
      left -= n;
    }
  }
  if (left > 0 && int(4) === 0) op.push(1 + int(left));
  return op;
}
const clone = (x) => structuredClone(x); // type.normalize mutates deletes in place
const norm = (op) => type.normalize(clone(op));

// ---- the oracle binary ---------------------------------------------------

function runOracle(reqs) {
  assert.ok(existsSync(ORACLE), `${ORACLE} is missing: make ${path.relative(path.resolve('../..'), ORACLE)}`);
  const input = reqs.map((r) => JSON.stringify(r)).join('\n') + '\n';
  const r = spawnSync(ORACLE, [], { input, maxBuffer: 1 << 28, env: process.env, timeout: 60000 });
  assert.equal(r.error, undefined, String(r.error));
  const stderr = r.stderr.toString();
  assert.equal(sanitizerReport(stderr), '', 'sanitizer report from text-oracle');
  assert.equal(r.status, 0, `text-oracle exited with ${r.status}: ${stderr}`);
  const lines = r.stdout.toString().split('\n');
  assert.equal(lines.pop(), '', 'output ends with a newline');
  assert.equal(lines.length, reqs.length, 'one answer per request');
  return lines.map((l) => JSON.parse(l));
}

// What ot-text-unicode says: {result} or {error} when it throws.
function reference(req) {
  try {
    switch (req.fn) {
      case 'normalize': return { result: type.normalize(clone(req.op)) };
      case 'transform': return { result: type.transform(clone(req.op), clone(req.other), req.side) };
      case 'compose': return { result: type.compose(clone(req.a), clone(req.b)) };
      case 'apply': return { result: type.apply(req.doc, clone(req.op)) };
    }
  } catch (e) {
    return { error: e.message };
  }
  throw new Error(`no reference for ${req.fn}`);
}

// Runs every case through both; fails with the first few differences.
function compare(cases) {
  const got = runOracle(cases.map((c) => c.c));
  const bad = [];
  cases.forEach((c, i) => {
    const want = reference(c.js);
    assert.ok(!('error' in want), `ot-text-unicode threw on a generated case: ${want.error} ${JSON.stringify(c.js)}`);
    try {
      assert.deepStrictEqual(got[i], want);
    } catch {
      bad.push(`C ${JSON.stringify(c.c)}\n  JS ${JSON.stringify(c.js)}\n  C gave ${JSON.stringify(got[i])}\n  JS gave ${JSON.stringify(want)}`);
    }
  });
  assert.equal(bad.length, 0, `${bad.length}/${cases.length} differ (seed ${SEED}):\n${bad.slice(0, 5).join('\n')}`);
}

// Half the time the C side gets the raw op; the reference always the normal one.
const rawOr = (raw) => (int(2) ? raw : norm(raw));

test('normalize agrees with type.normalize', () => {
  const cases = [];
  for (let i = 0; i < N; i++) {
    const raw = randRawOp(int(30));
    // Adjacent runs of one kind, the thing normalize is for.
    if (int(2)) raw.splice(int(raw.length + 1), 0, pick([1 + int(3), randText(1, 2), { d: 1 + int(3) }]));
    cases.push({ c: { fn: 'normalize', op: raw }, js: { fn: 'normalize', op: raw } });
  }
  compare(cases);
});

test('apply agrees with type.apply', () => {
  const cases = [];
  for (let i = 0; i < N; i++) {
    const doc = randText(0, 24);
    const raw = randRawOp(cpLen(doc));
    cases.push({ c: { fn: 'apply', doc, op: rawOr(raw) }, js: { fn: 'apply', doc, op: norm(raw) } });
  }
  compare(cases);
});

test('transform agrees with type.transform, both sides', () => {
  const cases = [];
  for (let i = 0; i < N; i++) {
    // Mostly two ops on one text; sometimes ops of unrelated lengths (transform is total).
    const len = int(25);
    const a = randRawOp(len), b = randRawOp(int(5) ? len : int(25));
    // Inserts at one position are where the sides matter: make them common.
    if (int(3) === 0) {
      const p = int(len + 1);
      const at = (op) => (p ? [p, randText(1, 2), ...(int(2) ? [{ d: 1 }] : [])] : [randText(1, 2)]);
      if (int(2)) a.splice(0, a.length, ...at(a));
      else b.splice(0, b.length, ...at(b));
    }
    const side = pick(['left', 'right']);
    cases.push({
      c: { fn: 'transform', op: rawOr(a), other: rawOr(b), side },
      js: { fn: 'transform', op: norm(a), other: norm(b), side },
    });
  }
  compare(cases);
});

test('compose agrees with type.compose', () => {
  const cases = [];
  for (let i = 0; i < N; i++) {
    const doc = randText(0, 24);
    const a = randRawOp(cpLen(doc));
    const mid = type.apply(doc, norm(a));
    const b = randRawOp(int(5) ? cpLen(mid) : int(30));
    cases.push({ c: { fn: 'compose', a: rawOr(a), b: rawOr(b) }, js: { fn: 'compose', a: norm(a), b: norm(b) } });
  }
  compare(cases);
});

test('TP1 through the oracle: transformed ops converge, as with ot-text-unicode', () => {
  // The C results, chained: apply(apply(d,a), T(b,a,right)) == apply(apply(d,b), T(a,b,left)).
  const cases = [];
  for (let i = 0; i < N / 5; i++) {
    const doc = randText(0, 20);
    cases.push({ doc, a: norm(randRawOp(cpLen(doc))), b: norm(randRawOp(cpLen(doc))) });
  }
  const tr = runOracle(cases.flatMap(({ a, b }) => [
    { fn: 'transform', op: b, other: a, side: 'right' },
    { fn: 'transform', op: a, other: b, side: 'left' },
  ]));
  const step1 = runOracle(cases.flatMap(({ doc, a, b }) => [{ fn: 'apply', doc, op: a }, { fn: 'apply', doc, op: b }]));
  const step2 = runOracle(cases.flatMap((_, i) => [
    { fn: 'apply', doc: step1[2 * i].result, op: tr[2 * i].result },
    { fn: 'apply', doc: step1[2 * i + 1].result, op: tr[2 * i + 1].result },
  ]));
  cases.forEach(({ doc, a, b }, i) => {
    const left = step2[2 * i].result, right = step2[2 * i + 1].result;
    assert.equal(typeof left, 'string', JSON.stringify(step2[2 * i]));
    assert.equal(left, right, `diverged on ${JSON.stringify({ doc, a, b })}`);
    assert.equal(left, type.apply(type.apply(doc, a), type.transform(b, a, 'right')));
  });
});

test('apply of ops that reach past the end fails, where type.apply throws or clips', () => {
  const reqs = [];
  while (reqs.length < N / 5) {
    const doc = randText(0, 16);
    const op = norm(randRawOp(cpLen(doc) + 1 + int(4)));
    const base = op.reduce((n, c) => n + (typeof c === 'number' ? c : typeof c === 'object' ? c.d : 0), 0);
    if (base > cpLen(doc)) reqs.push({ fn: 'apply', doc, op });
  }
  const got = runOracle(reqs);
  reqs.forEach((req, i) => {
    assert.ok('error' in got[i], `C accepted ${JSON.stringify(req)}: ${JSON.stringify(got[i])}`);
    const js = reference(req);
    // type.apply throws for a retain past the end; a delete past it is clipped.
    if (!('error' in js)) assert.ok(req.op.some((c) => typeof c === 'object'), JSON.stringify(req));
  });
});

// ---- validity ------------------------------------------------------------

test('validity: where ot-text-unicode throws, the C side reports an error', () => {
  const bad = [
    [0], [-1], [-3, 'a'], [''], ['a', ''], [{ d: 0 }], [{ d: -2 }], [{}], [null], [{ x: 1 }],
    [{ d: null }], [{ d: '' }], [1, {}], [[1]],
  ];
  const reqs = [];
  for (const op of bad) {
    reqs.push({ fn: 'transform', op, other: [1, 'x'], side: 'left' });
    reqs.push({ fn: 'transform', op: ['x'], other: op, side: 'right' });
    reqs.push({ fn: 'compose', a: op, b: [] });
    reqs.push({ fn: 'compose', a: [], b: op });
    reqs.push({ fn: 'apply', doc: 'hello', op });
  }
  reqs.push({ fn: 'transform', op: ['a'], other: ['b'], side: 'middle' });
  reqs.push({ fn: 'transform', op: [true], other: ['b'], side: 'left' });
  reqs.push({ fn: 'apply', doc: 'ab😅', op: [4, 'x'] }); // a retain past the end
  reqs.push({ fn: 'apply', doc: 'ab😅', op: [2, { d: 1 }, 1, 'x'] });
  const got = runOracle(reqs);
  reqs.forEach((req, i) => {
    const js = reference(req);
    assert.ok('error' in js, `ot-text-unicode accepted ${JSON.stringify(req)}`);
    assert.ok('error' in got[i], `C accepted ${JSON.stringify(req)}: ${JSON.stringify(got[i])}`);
  });
});

test('validity: the deliberate differences from ot-text-unicode', () => {
  // 1. Adjacent and trailing retains: checkOp throws, wsync normalizes
  //    (PROTOCOL.md 5.7: "the rest is retained").
  const lenient = [[5], [1, 2, 'a'], ['a', 3], [2, 2]];
  // A trailing retain is dropped before the op meets the text, so even one
  // past the end is harmless: ['x', 7] on "ab" is ['x'].
  const lenientApply = [{ doc: 'ab😅', op: [3, 'x', 1] }, { doc: '', op: [1] }, { doc: 'ab', op: ['x', 7] }];
  // 2. Stricter: non-integer counts, {d:"text"} (invertible deletes), stray
  //    members and types that checkOp lets through.
  //    (type.transform happens to throw on a boolean, type.apply skips it.)
  const strict = [[1.5, 'a'], [{ d: 1.5 }], [{ d: 'abc' }], [{ d: 1, x: 2 }]];
  const strictApply = [{ doc: 'hello', op: [true] }, { doc: 'hello', op: ['a', false] }, { doc: 'hello', op: [1.5, 'a'] }];
  // 3. A delete past the end: type.apply clips it; wsync rejects the op.
  const clipped = [{ doc: 'ab😅', op: [{ d: 4 }] }, { doc: 'ab😅', op: [2, { d: 5 }] }, { doc: '', op: [{ d: 1 }] }];
  const reqs = [
    ...lenient.map((op) => ({ fn: 'transform', op, other: ['x'], side: 'left' })),
    ...strict.map((op) => ({ fn: 'transform', op, other: ['x'], side: 'left' })),
    ...[...strictApply, ...clipped].map(({ doc, op }) => ({ fn: 'apply', doc, op })),
  ];
  const got2 = runOracle(lenientApply.map(({ doc, op }) => ({ fn: 'apply', doc, op })));
  lenientApply.forEach(({ doc, op }, i) => {
    assert.ok('error' in reference({ fn: 'apply', doc, op }), `ot-text-unicode now accepts ${JSON.stringify(op)}`);
    assert.deepStrictEqual(got2[i], { result: type.apply(doc, norm(op)) }, JSON.stringify({ doc, op }));
  });
  const got = runOracle(reqs);
  reqs.forEach((req, i) => {
    const js = reference(req);
    if (i < lenient.length) {
      assert.ok('error' in js, `ot-text-unicode now accepts ${JSON.stringify(req.op)}`);
      const want = type.transform(norm(req.op), req.other, req.side);
      assert.deepStrictEqual(got[i], { result: want }, JSON.stringify(req));
    } else {
      assert.ok('result' in js, `ot-text-unicode now rejects ${JSON.stringify(req)}`);
      assert.ok('error' in got[i], `C accepted ${JSON.stringify(req)}: ${JSON.stringify(got[i])}`);
    }
  });
});

test('the oracle answers malformed requests with an error line', () => {
  const got = runOracle(['nope', { fn: 'frobnicate' }, { fn: 'apply', op: [] }, { fn: 'compose', a: [] }]);
  for (const g of got) assert.equal(typeof g.error, 'string');
});
