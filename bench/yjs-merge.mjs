// yjs-merge.mjs -- the Yjs update codec (src/yjs) against Y.mergeUpdates on
// the paper editing trace (../shared/data/paper-editing-trace.json.gz,
// 259,778 single-character edits): one Y.Doc makes one update per edit,
// then Node's Y.mergeUpdates and the C yupdate_merge (through
// build/yjs-oracle's bench_merge, which times only the merge calls) merge
// the same updates in the same run. Prints the median of each, their ratio,
// whether the merged bytes are equal, and the sizes of the merged and the
// compacted document (both checked to hold the trace's final text).
//
// usage: make build/yjs-oracle && node bench/yjs-merge.mjs [--rounds 3] [--edits N]
//        [--node-sizes 2500,5000,10000]
//        [--trace FILE] (default ../shared/data/...; or $WSYNC_TRACE; a git worktree
//        elsewhere passes the path)
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import zlib from 'node:zlib';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const Y = createRequire(path.join(root, 'bench', 'peers', 'package.json'))('yjs');
const ORACLE = path.join(root, 'build', 'yjs-oracle');
const argv = (name) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const arg = (name, dflt) => (argv(name) === undefined ? dflt : Number(argv(name)));
const TRACE = argv('--trace') || process.env.WSYNC_TRACE ||
  path.join(root, '..', 'shared', 'data', 'paper-editing-trace.json.gz');
const ROUNDS = arg('--rounds', 3);
const median = (xs) => xs.slice().sort((a, b) => a - b)[xs.length >> 1];
const b64 = (u) => Buffer.from(u).toString('base64');

if (!fs.existsSync(ORACLE)) throw new Error(`${ORACLE} is missing: make build/yjs-oracle`);
if (!fs.existsSync(TRACE)) throw new Error(`${TRACE} is missing (the shared data directory beside the repository)`);
const trace = JSON.parse(zlib.gunzipSync(fs.readFileSync(TRACE)));
const edits = trace.edits.slice(0, arg('--edits', trace.edits.length));

// One update per edit, as a live editor would send them.
const doc = new Y.Doc();
doc.clientID = 1;
const text = doc.getText('text');
const updates = [];
doc.on('update', (u) => updates.push(u));
let t0 = performance.now();
for (const [pos, ndel, ins] of edits) {
  if (ndel) text.delete(pos, ndel);
  if (ins) text.insert(pos, ins);
}
const buildMs = performance.now() - t0;
const final = text.toString();
if (edits.length === trace.edits.length && final !== trace.final) throw new Error('replay does not give the final text');
const bytesIn = updates.reduce((n, u) => n + u.length, 0);

// Y.mergeUpdates sorts all its readers before every struct it writes: on
// updates of one struct each that is quadratic (10,000 updates take seconds,
// the whole trace would take about an hour), so Node runs on prefixes of the
// log and C on the same prefixes and on the whole log. For the whole log the
// ratio printed is a lower bound: Node's time at the largest prefix scaled
// linearly, though it grows faster.
const SIZES = (argv('--node-sizes') || '2500,5000,10000').split(',').map(Number)
  .filter((n) => n > 0 && n <= updates.length);
const nodeMs = new Map();
const nodeMerged = new Map();
for (const n of SIZES) {
  const part = updates.slice(0, n);
  const ms = [];
  for (let i = 0; i < ROUNDS; i++) {
    t0 = performance.now();
    nodeMerged.set(n, Y.mergeUpdates(part));
    ms.push(performance.now() - t0);
  }
  nodeMs.set(n, ms);
}

// C: the merge timed inside the oracle, on each prefix and on the whole log;
// then the compaction of the whole log.
const all = [...SIZES, updates.length];
const reqs = all.map((n) => ({ fn: 'bench_merge', updates: updates.slice(0, n).map(b64), rounds: ROUNDS }));
reqs.push({ fn: 'compact', updates: updates.map(b64) });
t0 = performance.now();
const r = spawnSync(ORACLE, [], { input: reqs.map((q) => JSON.stringify(q)).join('\n') + '\n', maxBuffer: 1 << 30 });
const oracleMs = performance.now() - t0;
if (r.status !== 0) throw new Error(`yjs-oracle failed: ${r.stderr}`);
const answers = r.stdout.toString().trim().split('\n').map((l) => JSON.parse(l));
for (const a of answers) if (a.error) throw new Error(`yjs-oracle: ${a.error}`);
const cp = answers.pop();
const cMs = new Map(all.map((n, i) => [n, answers[i].ns.map((ns) => ns / 1e6)]));
const cMerged = new Map(all.map((n, i) => [n, Buffer.from(answers[i].result, 'base64')]));
const compacted = Buffer.from(cp.result, 'base64');

const textOf = (u) => {
  const d = new Y.Doc();
  Y.applyUpdate(d, u);
  return d.getText('text').toString();
};
const merged = cMerged.get(updates.length);
if (textOf(merged) !== final) throw new Error('C merge does not hold the final text');
if (textOf(compacted) !== final) throw new Error('C compaction does not hold the final text');
const snapshot = Y.encodeStateAsUpdate(doc);

const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
const fmt = (xs) => `median ${median(xs).toFixed(1)} ms [${xs.map((x) => x.toFixed(1)).join(', ')}]`;
console.log(`paper trace: ${edits.length} edits -> ${updates.length} updates, ${kb(bytesIn)} (built in ${buildMs.toFixed(0)} ms), Node ${process.version}`);
for (const n of SIZES) {
  const same = Buffer.compare(cMerged.get(n), Buffer.from(nodeMerged.get(n))) === 0;
  console.log(`first ${n} updates: Y.mergeUpdates ${fmt(nodeMs.get(n))}; yupdate_merge ${fmt(cMs.get(n))}; ` +
    `ratio ${(median(nodeMs.get(n)) / median(cMs.get(n))).toFixed(0)}x; same bytes: ${same}`);
}
const big = SIZES[SIZES.length - 1];
const cAll = median(cMs.get(updates.length));
console.log(`all ${updates.length} updates: yupdate_merge ${fmt(cMs.get(updates.length))}` +
  (big ? `; ratio >= ${((median(nodeMs.get(big)) * updates.length / big) / cAll).toFixed(0)}x ` +
    `(Y.mergeUpdates at ${big} scaled linearly)` : ''));
console.log(`whole oracle run incl. base64/JSON and compaction: ${oracleMs.toFixed(0)} ms`);
console.log(`merged: ${kb(merged.length)}; compacted: ${kb(compacted.length)}; ` +
  `Y.encodeStateAsUpdate of the live doc: ${kb(snapshot.length)}`);
