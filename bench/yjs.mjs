// yjs.mjs -- make bench, the Yjs part: wsync's /v1/yjs against the two usual
// Node.js Yjs servers, the reference @y/websocket-server ("y-websocket") and
// Hocuspocus, one server at a time (the machine has 2 cores), with the same
// generator (bench/peers/yjs-load.mjs) for all three. Prints a table with the
// ratio of each peer to wsync and writes it into docs/PERFORMANCE.md between
// its yjs markers (and docs/YJS.md's, if that file has them).
//
// Per server:
//   1. seed --docs rooms with the final document; then the trace: the paper
//      editing trace (259,778 single-character edits), one update per edit,
//      writer and observer; stop the server (SIGTERM: peers flush stores).
//   2. the same data directory, a fresh process: cold load of the trace room,
//      then one client per seeded room: memory per loaded document. Stop.
//   3. a fresh server: --rooms x --clients raw clients, --rate updates a
//      second each, for --duration seconds: relay latency, CPU, RSS.
//
// usage: node bench/yjs.mjs [--kinds wsync,y-websocket,hocuspocus] [--edits N]
//          [--docs 20] [--rooms 1000] [--clients 10] [--rate 1] [--duration 60]
//          [--only trace,rooms] [--trace FILE] [--quick] [--no-doc] [--merge] [--table]
//   --quick   20,000 edits, 5 documents, 100 rooms for 10 s (a sanity pass)
//   --merge   keep build/bench/yjs.json's other results, replace what runs now
//   --table   no run: table and docs from build/bench/yjs.json
// Outputs: build/bench/yjs.json (every result), build/bench/yjs.md (the table).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const out = path.join(root, 'build', 'bench');
const WSYNC = path.join(root, 'build', 'wsync');
const PEERS = path.join(root, 'bench', 'peers');
const SECRET = 'bench-yjs-secret-0123456789abcdef0123';
const API_KEY = 'bench-yjs-api-key-0123';

const argv = process.argv.slice(2);
const flag = (n) => argv.includes(`--${n}`);
const optv = (n, d) => (argv.indexOf(`--${n}`) >= 0 ? argv[argv.indexOf(`--${n}`) + 1] : d);
const quick = flag('quick');
const Q = (full, small) => String(optv(full[0], quick ? small : full[1]));
const kinds = optv('kinds', 'wsync,y-websocket,hocuspocus').split(',');
const only = optv('only', 'trace,rooms').split(',');
const edits = Q(['edits', 'all'], 20000);
const docs = Q(['docs', 20], 5);
const roomsN = Q(['rooms', 1000], 100);
const clients = Q(['clients', 10], 10);
const rate = Q(['rate', 1], 1);
const duration = Q(['duration', 60], 10);
const writeDoc = !flag('no-doc') && !quick;

/** The trace: --trace, else shared/data/ beside the checkout or one of its parents. */
function traceFile() {
  const given = optv('trace');
  if (given) return path.resolve(given);
  for (let dir = root; ; dir = path.dirname(dir)) {
    const f = path.join(dir, '..', 'shared', 'data', 'paper-editing-trace.json.gz');
    if (fs.existsSync(f)) return path.resolve(f);
    if (dir === path.dirname(dir)) throw new Error('no paper-editing-trace.json.gz in ../shared/data: pass --trace FILE');
  }
}

async function startServer(kind, dataDir) {
  const args = kind === 'wsync'
    ? ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--auth-secret', SECRET, '--api-key', API_KEY,
      '--rate', '1000000000', '--burst', '1000000000', '--idle-timeout', '10m', '--ping-interval', '10m']
    : [path.join(PEERS, 'yjs-server.mjs'), '--kind', kind, '--listen', '127.0.0.1:0', '--data', dataDir];
  const p = spawn(kind === 'wsync' ? WSYNC : process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const exited = new Promise((r) => p.on('exit', r));
  const port = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${kind} did not start: ${err}`)), 10000);
    p.stderr.on('data', (d) => {
      err += d;
      if (err.length > 1e6) err = err.slice(-1e5); // a chatty server must not grow us
      const m = /listening on http:\/\/[^:]+:(\d+)/.exec(err);
      if (m) { clearTimeout(t); resolve(Number(m[1])); }
    });
    p.on('exit', (code) => reject(new Error(`${kind} exited ${code}: ${err}`)));
  });
  await new Promise((r) => setTimeout(r, 300)); // start-up settles before any baseline
  return {
    pid: p.pid,
    url: `ws://127.0.0.1:${port}`,
    log: () => err,
    /** SIGTERM; resolves with the ms the server took to exit (it may flush stores first). */
    async stop() {
      const t0 = Date.now();
      p.kill('SIGTERM');
      let killed = false;
      const t = setTimeout(() => { killed = true; p.kill('SIGKILL'); }, 300000);
      await exited;
      clearTimeout(t);
      if (killed) console.error(`bench yjs: ${kind} did not exit within 300 s of SIGTERM: killed`);
      return Date.now() - t0;
    },
  };
}

function load(scenario, kind, srv, extra) {
  return new Promise((resolve, reject) => {
    const args = [path.join(PEERS, 'yjs-load.mjs'), scenario, '--kind', kind, '--url', srv.url, '--pid', String(srv.pid),
      '--secret', SECRET, '--api-key', API_KEY, '--wait', '180000', ...extra];
    const p = spawn(process.execPath, args, { cwd: PEERS, stdio: ['ignore', 'pipe', 'pipe'] });
    let so = '';
    let se = '';
    p.stdout.on('data', (d) => (so += d));
    p.stderr.on('data', (d) => (se += d));
    p.on('exit', (code) => {
      if (code !== 0) reject(new Error(`yjs-load ${scenario} ${kind} failed (${code}): ${se}\nserver log: ${srv.log().slice(-2000)}`));
      else resolve(JSON.parse(so.trim().split('\n').pop()));
    });
  });
}

function du(dir) {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const f = path.join(dir, e.name);
    n += e.isDirectory() ? du(f) : fs.statSync(f).size;
  }
  return n;
}

async function runKind(kind, trace) {
  const r = { kind };
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `wsync-bench-yjs-${kind}-`));
  const editArgs = ['--trace', trace, ...(edits === 'all' ? [] : ['--edits', edits])];
  try {
    if (only.includes('trace')) {
      const dataDir = path.join(tmp, 'data');
      let srv = await startServer(kind, dataDir);
      try {
        // Seeds first: the reference server binds a document to LevelDB only
        // once its write queue is empty, and an update that arrives before
        // that (behind the trace's 259,778 queued writes) is not stored.
        console.error(`bench yjs: ${kind}: seed ${docs} documents`);
        r.seed = await load('seed', kind, srv, [...editArgs, '--docs', docs]);
        console.error(`bench yjs: ${kind}: trace`);
        r.trace = await load('trace', kind, srv, editArgs);
      } finally { r.stop_ms = await srv.stop(); }
      r.disk_bytes = du(dataDir);
      srv = await startServer(kind, dataDir);
      try {
        console.error(`bench yjs: ${kind}: cold load`);
        r.load = await load('load', kind, srv, [...editArgs, '--docs', docs]);
      } finally { await srv.stop(); }
    }
    if (only.includes('rooms')) {
      const srv = await startServer(kind, path.join(tmp, 'rooms'));
      try {
        console.error(`bench yjs: ${kind}: ${roomsN} rooms x ${clients} clients, ${duration} s`);
        r.rooms = await load('rooms', kind, srv, ['--rooms', roomsN, '--clients', clients, '--rate', rate, '--duration', duration]);
      } finally { await srv.stop(); }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.error(`bench yjs: ${kind}: ${JSON.stringify(r)}`);
  return r;
}

// ---- table --------------------------------------------------------------------------
// The latency histogram ends at 10 s; nothing delivered, no latency.
const capped = (ms, rooms) => (!rooms.deliveries ? 'none delivered' : ms >= 10000 ? '>= 10 s' : ms);
const FIGURES = [
  ['trace: time until the observer has the final text, s', (r) => r.trace && r.trace.converged_ms / 1000, 2, 'lower'],
  ['trace: updates/s end to end', (r) => r.trace && r.trace.updates_per_s, 0, 'higher'],
  ['trace: server CPU us per update', (r) => r.trace && r.trace.server_cpu_us_per_update, 2, 'lower'],
  ['trace: server updates per CPU-second', (r) => r.trace && 1e6 / r.trace.server_cpu_us_per_update, 0, 'higher'],
  ['trace: generator CPU s (both clients)', (r) => r.trace && r.trace.generator_cpu_s, 2, 'info'],
  ['trace: server RSS growth, MiB', (r) => r.trace && r.trace.server_rss_growth_kib / 1024, 1, 'lower'],
  ['document: Y.encodeStateAsUpdate bytes (client side)', (r) => r.trace && r.trace.doc_bytes, 0, 'info'],
  ['document: data directory after the run, KiB', (r) => r.disk_bytes && r.disk_bytes / 1024, 0, 'lower'],
  ['cold load of the trace document, ms', (r) => r.load && r.load.cold_load_ms, 1, 'lower'],
  ['memory per loaded document, KiB (server RSS growth / documents)', (r) => r.load && r.load.kib_per_loaded_doc, 1, 'lower'],
  ['wsync: document bytes held per loaded room (/metrics wsync_yjs_bytes)', (r) => r.load && r.load.wsync_bytes_per_loaded_doc, 0, 'info'],
  ['rooms: relay latency p50, ms', (r) => r.rooms && capped(r.rooms.latency_ms.p50, r.rooms), 2, 'lower'],
  ['rooms: relay latency p99, ms', (r) => r.rooms && capped(r.rooms.latency_ms.p99, r.rooms), 2, 'lower'],
  ['rooms: deliveries seen / expected', (r) => r.rooms && r.rooms.deliveries / r.rooms.deliveries_expected, 3, 'info'],
  ['rooms: updates sent / intended (below 1: the generator fell behind)', (r) => r.rooms && r.rooms.updates_intended && r.rooms.updates_sent / r.rooms.updates_intended, 3, 'info'],
  ['rooms: generator event-loop delay p50 / p99, ms', (r) => r.rooms && r.rooms.generator_loop_delay_ms && `${r.rooms.generator_loop_delay_ms.p50.toFixed(1)} / ${r.rooms.generator_loop_delay_ms.p99.toFixed(1)}`, 0, 'info'],
  ['rooms: server CPU %', (r) => r.rooms && r.rooms.server_cpu_pct, 0, 'info'],
  ['rooms: server CPU us per delivery (window CPU / deliveries seen)', (r) => r.rooms && r.rooms.deliveries && (r.rooms.server_cpu_pct * r.rooms.duration_s * 1e4) / r.rooms.deliveries, 2, 'lower'],
  ['rooms: server RSS, MiB', (r) => r.rooms && r.rooms.server_rss_peak_kib / 1024, 1, 'lower'],
  ['rooms: generator CPU %', (r) => r.rooms && r.rooms.generator_cpu_pct, 0, 'info'],
];

function table(results) {
  const ws = results.find((r) => r.kind === 'wsync');
  const peers = results.filter((r) => r.kind !== 'wsync');
  const fmt = (v, d) => (typeof v === 'string' ? v : v === undefined || v === null || Number.isNaN(v) ? '-'
    : Number(v).toFixed(d).replace(/\B(?=(\d{3})+(?!\d))/g, ','));
  // The last columns: how many times better wsync is than each peer on that
  // figure (peer/wsync where lower is better, wsync/peer where higher is).
  const head = ['figure', ...results.map((r) => r.kind), ...(ws ? peers.map((p) => `wsync vs ${p.kind}`) : [])];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const [name, get, d, better] of FIGURES) {
    const vals = results.map((r) => get(r));
    if (vals.every((v) => v === undefined || v === 0)) continue;
    const ratios = ws ? peers.map((p) => {
      const a = get(p);
      const b = get(ws);
      if (better === 'info' || !a || !b || typeof a === 'string' || typeof b === 'string' || !Number.isFinite(a / b)) return '-';
      return `${(better === 'lower' ? a / b : b / a).toFixed(2)}x`;
    }) : [];
    lines.push(`| ${name} | ${vals.map((v) => fmt(v, d)).join(' | ')} | ${ratios.join(' | ')}${ratios.length ? ' |' : ''}`.replace(/ \| $/, ' |'));
  }
  return lines.join('\n');
}

function writeInto(file, begin, end, text) {
  if (!fs.existsSync(file)) return false;
  const s = fs.readFileSync(file, 'utf8');
  const i = s.indexOf(begin);
  const j = s.indexOf(end);
  if (i < 0 || j < i) return false;
  fs.writeFileSync(file, `${s.slice(0, i + begin.length)}\n${text}\n${s.slice(j)}`);
  return true;
}

// --merge: the scenarios run now replace theirs in the previous
// build/bench/yjs.json, the rest is kept (e.g. --only rooms --merge).
// --table: no run, the table and docs from build/bench/yjs.json.
const jsonFile = path.join(out, 'yjs.json');
const previous = flag('merge') || flag('table') ? JSON.parse(fs.readFileSync(jsonFile, 'utf8')) : [];
let results = previous;
if (!flag('table')) {
  const trace = traceFile();
  for (const pkg of ['@y/websocket-server', '@hocuspocus/server', '@hocuspocus/provider', 'y-websocket', 'yjs', 'ws']) {
    if (!fs.existsSync(path.join(PEERS, 'node_modules', pkg))) throw new Error(`bench/peers has no ${pkg}: run npm ci in bench/peers (make bench does)`);
  }
  if (kinds.includes('wsync') && !fs.existsSync(WSYNC)) throw new Error('no build/wsync: make build/wsync');
  for (const kind of kinds) {
    const r = await runKind(kind, trace);
    r.load_avg = os.loadavg()[0];
    const old = results.find((p) => p.kind === kind);
    if (old) Object.assign(old, r); else results.push(r);
  }
}
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(jsonFile, `${JSON.stringify(results, null, 1)}\n`);
const cpu = os.cpus();
const stamp = `${new Date().toISOString().slice(0, 16)} UTC, ${cpu.length} x ${cpu[0] ? cpu[0].model.trim() : 'cpu'}, Node ${process.version}, `
  + `1-minute load average at the end of each server's runs ${results.map((r) => (r.load_avg || 0).toFixed(1)).join(', ')}; `
  + `edits ${edits}, ${docs} seeded documents, ${roomsN} rooms x ${clients} clients at ${rate}/s for ${duration} s`;
const md = `${stamp}\n\n${table(results)}`;
fs.writeFileSync(path.join(out, 'yjs.md'), `${md}\n`);
console.log(md);
if (writeDoc) {
  for (const f of ['PERFORMANCE.md', 'YJS.md']) {
    const ok = writeInto(path.join(root, 'docs', f), '<!-- bench:yjs:begin -->', '<!-- bench:yjs:end -->', md);
    console.error(`bench yjs: docs/${f} ${ok ? 'updated' : 'has no bench:yjs markers, left alone'}`);
  }
}
