// yjs-oracle.test.mjs -- src/yjs (the Yjs update v1 codec) against the npm
// package yjs, the reference. Random edit histories from a seeded PRNG
// (Y.Text with formats and embeds, Y.Map, Y.Array, Y.XmlFragment /
// XmlElement / XmlText, nested types, subdocuments, deletions, several clients editing
// offline and syncing now and then, emoji whose UTF-16 halves can be split)
// give update logs; build/yjs-oracle (tests/oracle/yjs_oracle.c, next to
// $WSYNC_BIN) merges, diffs, takes state vectors of and compacts them, and
// every answer is checked against Y.mergeUpdates, Y.diffUpdate and
// Y.encodeStateVectorFromUpdate: the same bytes where Yjs is deterministic,
// and always the same document when applied to a fresh Y.Doc.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import test from 'node:test';

import * as Y from 'yjs';

import { WSYNC_BIN, sanitizerReport, scale } from './lib/server.mjs';
import { rng as makeRng } from './lib/rng.mjs';

const ORACLE = path.join(path.dirname(WSYNC_BIN), 'yjs-oracle');
const SEED = Number(process.env.YJS_ORACLE_SEED || 20261206);
const SEEDS = scale(160, 40); // random histories

const b64 = (u) => Buffer.from(u).toString('base64');
const unb64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));

function runOracle(reqs) {
  assert.ok(existsSync(ORACLE), `${ORACLE} is missing: make ${path.relative(path.resolve('../..'), ORACLE)}`);
  const input = reqs.map((r) => JSON.stringify(r)).join('\n') + '\n';
  const r = spawnSync(ORACLE, [], { input, maxBuffer: 1 << 28, env: process.env, timeout: 120000 });
  assert.equal(r.error, undefined, String(r.error));
  const stderr = r.stderr.toString();
  assert.equal(sanitizerReport(stderr), '', 'sanitizer report from yjs-oracle');
  assert.equal(r.status, 0, `yjs-oracle exited with ${r.status}: ${stderr}`);
  const lines = r.stdout.toString().split('\n');
  assert.equal(lines.pop(), '', 'output ends with a newline');
  assert.equal(lines.length, reqs.length, 'one answer per request');
  return lines.map((l) => JSON.parse(l));
}

// ---- random histories ----------------------------------------------------

const CHARS = [...'abcdefgh xyz\n', 'é', 'ж', '中', '\ufffd', '😀', '🤖', '𝄞', '👍🏽'];
const ROOTS = ['text', 'map', 'array', 'xml'];

function randomString(r, max) {
  let s = '';
  for (let i = 1 + r.int(max); i > 0; i--) s += r.pick(CHARS);
  return s;
}

function randomValue(r, depth = 0) {
  switch (r.int(depth > 1 ? 6 : 9)) {
    case 0: return r.int(1000) - 500;
    case 1: return r.next() * 1e6;
    case 2: return randomString(r, 6);
    case 3: return r.chance(0.5);
    case 4: return null;
    case 5: return new Uint8Array([r.int(256), r.int(256)]);
    case 6: return [randomValue(r, depth + 1), randomValue(r, depth + 1)];
    case 7: return { k: randomValue(r, depth + 1), [randomString(r, 3)]: 2 ** 40 };
    default: return r.int(2 ** 31);
  }
}

// A new shared type to nest, with some content.
function randomType(r) {
  switch (r.int(4)) {
    case 0: { const t = new Y.Text(); t.insert(0, randomString(r, 5)); return t; }
    case 1: { const m = new Y.Map(); m.set('n', randomValue(r)); return m; }
    case 2: { const a = new Y.Array(); a.insert(0, [randomValue(r), randomValue(r)]); return a; }
    default: { const x = new Y.XmlElement('p'); x.setAttribute('class', 'c'); x.insert(0, [new Y.XmlText('in')]); return x; }
  }
}

function editText(r, t) {
  const len = t.length;
  const k = r.int(10);
  if (k < 4 || len === 0) t.insert(r.int(len + 1), randomString(r, 8), r.chance(0.2) ? { bold: true } : undefined);
  else if (k < 7) { const at = r.int(len); t.delete(at, 1 + r.int(Math.min(len - at, 6))); }
  else if (k < 8) { const at = r.int(len); t.format(at, 1 + r.int(len - at), { italic: r.chance(0.5) ? true : null }); }
  else t.insertEmbed(r.int(len + 1), { image: randomString(r, 3) });
}

function editArray(r, a) {
  const len = a.length;
  const k = r.int(10);
  if (k < 4 || len === 0) a.insert(r.int(len + 1), Array.from({ length: 1 + r.int(4) }, () => randomValue(r)));
  else if (k < 7) { const at = r.int(len); a.delete(at, 1 + r.int(Math.min(len - at, 3))); }
  else a.insert(r.int(len + 1), [randomType(r)]);
}

function editMap(r, m) {
  const key = 'k' + r.int(6);
  const k = r.int(10);
  if (k < 5) m.set(key, r.chance(0.1) ? new Y.Doc({ guid: 'sub' + r.int(1000) }) : randomValue(r));
  else if (k < 7) m.delete(key);
  else m.set(key, randomType(r));
}

function editXml(r, x) {
  const len = x.length;
  const k = r.int(10);
  if (k < 4 || len === 0) {
    const el = r.chance(0.5) ? new Y.XmlElement(r.pick(['div', 'span', 'h1'])) : new Y.XmlText(randomString(r, 5));
    if (el instanceof Y.XmlElement) el.setAttribute('id', randomString(r, 3));
    x.insert(r.int(len + 1), [r.chance(0.1) ? new Y.XmlHook('hook') : el]);
  } else if (k < 6) { const at = r.int(len); x.delete(at, 1); }
  else {
    const child = x.get(r.int(len));
    if (child instanceof Y.XmlText) editText(r, child);
    else if (child instanceof Y.XmlElement) {
      if (r.chance(0.5)) child.setAttribute('a' + r.int(3), randomString(r, 2));
      else child.insert(0, [new Y.XmlText(randomString(r, 4))]);
    }
  }
}

// Something nested somewhere, if there is one.
function editNested(r, doc) {
  const arr = doc.getArray('array').toArray().filter((v) => v instanceof Y.AbstractType);
  const map = [...doc.getMap('map').values()].filter((v) => v instanceof Y.AbstractType);
  const all = arr.concat(map);
  if (!all.length) return false;
  const t = r.pick(all);
  if (t instanceof Y.XmlElement) editXml(r, t);
  else if (t instanceof Y.Text) editText(r, t);
  else if (t instanceof Y.Array) editArray(r, t);
  else if (t instanceof Y.Map) editMap(r, t);
  return true;
}

function edit(r, doc) {
  if (r.chance(0.15) && editNested(r, doc)) return;
  switch (r.pick(ROOTS)) {
    case 'text': editText(r, doc.getText('text')); break;
    case 'map': editMap(r, doc.getMap('map')); break;
    case 'array': editArray(r, doc.getArray('array')); break;
    default: editXml(r, doc.getXmlFragment('xml'));
  }
}

// Peers edit offline, each logging its own updates, and sync with another
// peer now and then; the log is every update any peer produced.
function history(seed) {
  const r = makeRng(seed);
  const peers = Array.from({ length: 1 + r.int(4) }, (_, i) => {
    const doc = new Y.Doc({ gc: r.chance(0.7) });
    doc.clientID = r.chance(0.5) ? 1 + i : 1 + r.int(2 ** 32 - 2);
    return doc;
  });
  const log = [];
  const svs = [];
  for (const doc of peers) doc.on('update', (u, origin) => { if (origin !== 'sync') log.push(u); });
  const steps = 5 + r.int(40);
  for (let s = 0; s < steps; s++) {
    const doc = r.pick(peers);
    if (r.chance(0.3)) doc.transact(() => { for (let i = 1 + r.int(4); i > 0; i--) edit(r, doc); });
    else edit(r, doc);
    if (peers.length > 1 && r.chance(0.15)) {
      const other = r.pick(peers);
      Y.applyUpdate(other, Y.encodeStateAsUpdate(doc, Y.encodeStateVector(other)), 'sync');
    }
    if (r.chance(0.2)) svs.push(Y.encodeStateVector(r.pick(peers)));
  }
  return { r, peers, log, svs };
}

// ---- comparing documents -------------------------------------------------

function contentOf(update) {
  const doc = new Y.Doc();
  Y.applyUpdate(doc, update);
  return JSON.stringify({
    text: doc.getText('text').toDelta(),
    map: [...doc.getMap('map').entries()].sort().map(([k, v]) =>
      [k, v instanceof Y.Doc ? `doc:${v.guid}` : v instanceof Y.AbstractType ? v.toJSON() : v]),
    array: doc.getArray('array').toJSON(),
    xml: doc.getXmlFragment('xml').toString(),
    sv: [...Y.decodeStateVector(Y.encodeStateVector(doc))].sort((a, b) => a[0] - b[0]),
    pending: doc.store.pendingStructs ? [...doc.store.pendingStructs.missing] : null,
  }, (k, v) => (v instanceof Uint8Array ? [...v] : v));
}

// A state vector cutting into the middle of items: random clocks per client.
function randomSv(r, update) {
  const sv = new Map();
  for (const [client, clock] of Y.decodeStateVector(Y.encodeStateVectorFromUpdate(update))) {
    if (r.chance(0.8)) sv.set(client, r.int(clock + 2));
  }
  const enc = Y.encodeStateVector(sv);
  return enc;
}

function shuffled(r, xs) {
  const a = xs.slice();
  for (let i = a.length - 1; i > 0; i--) { const j = r.int(i + 1); [a[i], a[j]] = [a[j], a[i]]; }
  return a;
}

// ---- the cases --------------------------------------------------------------

const byteStats = { merge: [0, 0], mergeOverlap: [0, 0], diff: [0, 0], sv: [0, 0] };

test('merge, diff, state vector and compaction agree with yjs on random histories', () => {
  const cases = [];
  for (let i = 0; i < SEEDS; i++) {
    const seed = SEED + i;
    const { r, log, svs } = history(seed);
    if (!log.length) continue;
    const all = Y.mergeUpdates(log);
    // disjoint updates, in log order and shuffled
    cases.push({ seed, kind: 'merge', req: { fn: 'merge', updates: log.map(b64) }, want: all, bytes: 'merge' });
    const sh = shuffled(r, log);
    cases.push({ seed, kind: 'merge', req: { fn: 'merge', updates: sh.map(b64) }, want: Y.mergeUpdates(sh), bytes: 'merge' });
    // overlapping merges of merges: structs sliced where they overlap
    const a = Y.mergeUpdates(log.filter(() => r.chance(0.6)));
    const b = Y.mergeUpdates(log.filter(() => r.chance(0.6)));
    const c = Y.diffUpdate(all, randomSv(r, all));
    cases.push({ seed, kind: 'merge', req: { fn: 'merge', updates: [a, b, c].map(b64) }, want: Y.mergeUpdates([a, b, c]), bytes: 'mergeOverlap' });
    // state vectors
    for (const u of [all, a, c]) cases.push({ seed, kind: 'sv', req: { fn: 'sv', update: b64(u) }, want: Y.encodeStateVectorFromUpdate(u), bytes: 'sv' });
    // diffs against real and cutting state vectors
    const targets = svs.slice(-2).concat([randomSv(r, all), randomSv(r, all), new Uint8Array([0])]);
    for (const sv of targets) {
      cases.push({ seed, kind: 'diff', req: { fn: 'diff', update: b64(all), sv: b64(sv) }, want: Y.diffUpdate(all, sv), bytes: 'diff' });
      cases.push({ seed, kind: 'diff', req: { fn: 'diff', update: b64(a), sv: b64(sv) }, want: Y.diffUpdate(a, sv), bytes: 'diff' });
    }
    // compaction: same document as the log applied update by update
    cases.push({ seed, kind: 'compact', req: { fn: 'compact', updates: log.map(b64) }, want: all });
    cases.push({ seed, kind: 'compact', req: { fn: 'compact', updates: [a, b, c].map(b64) }, want: Y.mergeUpdates([a, b, c]) });
  }
  const got = runOracle(cases.map((c) => c.req));
  const bad = [];
  let compactSmaller = 0;
  let compactCases = 0;
  cases.forEach((c, i) => {
    const g = got[i];
    if (g.error) { bad.push(`seed ${c.seed} ${c.kind}: C error ${g.code}: ${g.error}`); return; }
    const out = unb64(g.result);
    if (c.bytes) {
      const same = Buffer.compare(Buffer.from(out), Buffer.from(c.want)) === 0;
      byteStats[c.bytes][same ? 0 : 1]++;
      if (c.kind === 'sv') {
        if (!same) bad.push(`seed ${c.seed} sv: ${b64(out)} != ${b64(c.want)}`);
        return;
      }
    }
    if (c.kind === 'compact') {
      compactCases++;
      if (out.length < c.want.length) compactSmaller++;
    }
    const wantContent = contentOf(c.want);
    const gotContent = contentOf(out);
    if (wantContent !== gotContent) bad.push(`seed ${c.seed} ${c.kind}: content differs\n  C:   ${gotContent.slice(0, 400)}\n  yjs: ${wantContent.slice(0, 400)}`);
  });
  assert.deepEqual(bad.slice(0, 5), [], `${bad.length} of ${cases.length} cases differ`);
  // Byte equality: every merge of disjoint updates, every diff and every
  // state vector is byte for byte Y's; overlapping merges may only differ
  // in how structs are cut (checked above by content).
  assert.equal(byteStats.merge[1], 0, 'merges of disjoint updates are the same bytes');
  assert.equal(byteStats.diff[1], 0, 'diffs are the same bytes');
  assert.ok(compactCases > 0 && compactSmaller > 0, 'compaction makes some documents smaller');
  console.log(`yjs-oracle: ${cases.length} cases over ${SEEDS} seeds; same bytes: ${JSON.stringify(byteStats)}; compaction smaller in ${compactSmaller}/${compactCases}`);
});

// Two updates holding the same client's structs cut differently (one peer
// saw "hello😀 world" as one item, another had it split by a later insert):
// which reader Yjs takes first at a tie decides the bytes.
test('overlapping updates cut at different places merge to the bytes of Y.mergeUpdates', () => {
  const d1 = new Y.Doc();
  d1.clientID = 7;
  d1.getText('text').insert(0, 'hello😀 world');
  const whole = Y.encodeStateAsUpdate(d1);
  const d2 = new Y.Doc();
  d2.clientID = 3;
  Y.applyUpdate(d2, whole);
  d2.getText('text').insert(3, 'X');
  d2.getText('text').insert(9, 'Y');
  const cut = Y.encodeStateAsUpdate(d2);
  const onlyCut = Y.diffUpdate(cut, Y.encodeStateVector(new Map([[3, 1]])));
  // A reader that reaches a tie by moving on from a higher client wins it,
  // also against an earlier input that has not moved (empty inputs shift
  // the initial order).
  const d3 = new Y.Doc();
  d3.clientID = 9;
  Y.applyUpdate(d3, whole);
  d3.getText('text').insert(4, 'Q');
  const higher = Y.encodeStateAsUpdate(d3); // client 9, then client 7 cut at 4
  const empty = Y.encodeStateAsUpdate(new Y.Doc());
  const orders = [[whole, cut], [cut, whole], [whole, onlyCut, cut], [onlyCut, whole], [cut, onlyCut, whole, cut],
    [whole, empty, empty, higher], [empty, whole, empty, empty, higher, empty]];
  const got = runOracle(orders.map((ups) => ({ fn: 'merge', updates: ups.map(b64) })));
  orders.forEach((ups, i) => {
    assert.equal(got[i].error, undefined, got[i].error);
    assert.equal(got[i].result, b64(Y.mergeUpdates(ups)), `order ${i}`);
    assert.equal(contentOf(unb64(got[i].result)), contentOf(Y.mergeUpdates(ups)));
  });
});

test('malformed updates are refused with a message, valid ones accepted', () => {
  const d = new Y.Doc();
  d.getText('text').insert(0, 'a😀b');
  d.getMap('map').set('k', [1, 'x', { y: null }]);
  d.getText('text').delete(0, 1);
  const u = Y.encodeStateAsUpdate(d);
  const reqs = [{ fn: 'validate', update: b64(u) }];
  for (let n = 0; n < u.length; n++) reqs.push({ fn: 'validate', update: b64(u.subarray(0, n)) });
  reqs.push({ fn: 'validate', update: b64(Buffer.concat([u, Buffer.from([0])])) });
  const got = runOracle(reqs);
  assert.equal(got[0].result, true);
  for (let i = 1; i < got.length; i++) {
    assert.equal(got[i].code, 'INVAL', `case ${i}: ${JSON.stringify(got[i])}`);
    assert.match(got[i].error, /update 0: .* byte \d+/);
  }
});

// Compaction joins an item with its continuation only when both have the
// same right origin: here "y" was typed after "x" but before "Z", which a
// client with a lower ID had put after "x"; joined into "xy" (right origin
// "q"), "Z" would come before "y".
test('compaction keeps items apart whose right origins differ', () => {
  const a = new Y.Doc();
  a.clientID = 10;
  const b = new Y.Doc();
  b.clientID = 2;
  const log = [];
  a.on('update', (u, origin) => { if (origin !== 'sync') log.push(u); });
  b.on('update', (u, origin) => { if (origin !== 'sync') log.push(u); });
  const sync = (from, to) => Y.applyUpdate(to, Y.encodeStateAsUpdate(from, Y.encodeStateVector(to)), 'sync');
  a.getText('text').insert(0, 'pq');
  a.getText('text').insert(1, 'x');
  sync(a, b);
  b.getText('text').insert(2, 'Z');
  sync(b, a);
  a.getText('text').insert(2, 'y');
  assert.equal(a.getText('text').toString(), 'pxyZq');
  const got = runOracle([{ fn: 'compact', updates: log.map(b64) }]);
  assert.equal(got[0].error, undefined, got[0].error);
  assert.equal(contentOf(unb64(got[0].result)), contentOf(Y.mergeUpdates(log)));
  assert.match(contentOf(unb64(got[0].result)), /pxyZq/);
});
