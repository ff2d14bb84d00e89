// run.mjs -- make bench: every scenario of docs/PERFORMANCE.md against wsync
// and the Node.js `ws` peer, one after the other, repeated; prints medians
// and the ratio wsync/peer per figure, checks the targets of issue 6, and
// writes the results into docs/PERFORMANCE.md between its results markers.
//
// Each run gets a fresh server process (fresh data directory) so runs do not
// share state; the generator (build/wsync-bench) reads the server's CPU and
// RSS from /proc at the edges of the measured interval.
//
// usage: node bench/run.mjs [--repeat 3] [--quick] [--only a,b,...] [--no-doc]
//   --quick     smaller numbers and shorter runs, one repeat (a sanity pass)
//   --only      scenarios to run (a b c-fixed c-max r d e f w g z-sync z-fanout)
//   --no-doc    print the table, leave docs/PERFORMANCE.md alone
// WSYNC_BENCH_UWS=/path/to/uws-peer (optional): a uWebSockets broadcast
// server built outside the project (docs/PERFORMANCE.md, "uWebSockets
// peer"); every scenario that runs the Node peer then runs it too, and the
// table adds its column and the ratio wsync / uWS. Unset: nothing changes.
// Outputs: build/bench/results.json (every run), build/bench/table.md,
// build/bench/*.hist (latency distributions), build/bench/latency.png (if
// gnuplot is installed).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const out = path.join(root, 'build', 'bench');
const WSYNC = path.join(root, 'build', 'wsync');
const BENCH = path.join(root, 'build', 'wsync-bench');
const PEERS = path.join(root, 'bench', 'peers');
const BENCH_KEY = 'bench-api-key-0123456789';
const HOOK_SECRET = 'bench-webhook-secret-0123456789abcdef';
const UWS = process.env.WSYNC_BENCH_UWS ? path.resolve(process.env.WSYNC_BENCH_UWS) : null;

const argv = process.argv.slice(2);
const flag = (n) => argv.includes(`--${n}`);
const optv = (n, d) => {
  const i = argv.indexOf(`--${n}`);
  return i >= 0 ? argv[i + 1] : d;
};
const quick = flag('quick');
const repeat = Number(optv('repeat', quick ? 1 : 3));
const only = optv('only', '') ? optv('only').split(',') : null;
const writeDoc = !flag('no-doc') && !quick;

// ---- scenarios ---------------------------------------------------------------
// Sizes are those of issue 6; --quick divides connections by 10.
const Q = (full, small) => (quick ? small : full);
const timing = quick ? ['--warmup', '0.5', '--duration', '1.5'] : ['--warmup', '2', '--duration', '5'];
const broadcastVariants = (extraSync = []) => [
  { key: 'wsync', server: 'wsync', args: ['--proto', 'broadcast'] },
  { key: 'peer', server: 'node', args: ['--proto', 'broadcast'] },
  { key: 'sync', server: 'wsync', args: ['--proto', 'wsync', '--mode', 'ephemeral', ...extraSync] },
];

const lat = (r, k) => r.latency_us?.[k];
const delivFigures = [
  { name: 'deliveries/s', get: (r) => r.deliveries_per_s, fmt: 'int', better: 'higher' },
  { name: 'server CPU us per delivery', get: (r) => r.server?.cpu_us_per_delivery, fmt: 'f3', better: 'lower' },
  { name: 'server CPU %', get: (r) => r.server?.cpu_pct, fmt: 'int', better: 'info' },
  { name: 'generator CPU %', get: (r) => r.self?.cpu_pct, fmt: 'int', better: 'info' },
  { name: 'softirq CPU % (loopback TCP)', get: (r) => r.machine?.irq_cpu_pct, fmt: 'int', better: 'info' },
  { name: 'other CPU on the machine %', get: (r) => Math.max(0, r.machine?.other_cpu_pct), fmt: 'int', better: 'info' },
  { name: 'latency p50 ms', get: (r) => lat(r, 'p50') / 1e3, fmt: 'f2', better: 'lower' },
  { name: 'latency p99 ms', get: (r) => lat(r, 'p99') / 1e3, fmt: 'f2', better: 'lower' },
  { name: 'server RSS MiB', get: (r) => r.server?.rss_kib / 1024, fmt: 'f1', better: 'lower' },
];

const scenarios = [
  {
    id: 'a',
    title: `(a) ${Q(10000, 1000)} idle connections over 100 rooms`,
    args: ['--idle', '--conns', String(Q(10000, 1000)), '--rooms', '100', '--healthz'],
    variants: [
      { key: 'wsync', server: 'wsync', args: ['--proto', 'broadcast'] },
      { key: 'peer', server: 'node', args: ['--proto', 'broadcast'] },
      { key: 'sync', server: 'wsync', args: ['--proto', 'wsync'] },
      // The same sessions, join sent right behind hello (PROTOCOL.md 3.1)
      { key: 'syncpipe', label: 'wsync, sync, join behind hello', server: 'wsync', args: ['--proto', 'wsync', '--pipeline'] },
      // Presence windows that never grow while the rooms fill (PROTOCOL.md
      // 8.3; by default they grow up to 500 ms): what the growth saves
      { key: 'syncflat', label: 'wsync, sync, --presence-max-interval 0', server: 'wsync', args: ['--proto', 'wsync'],
        serverArgs: ['--presence-max-interval', '0'] },
    ],
    figures: [
      { name: 'server RSS bytes per connection', get: (r) => r.idle?.bytes_per_conn, fmt: 'int', better: 'lower' },
      { name: "malloc'd bytes per connection", get: (r) => r.idle?.heap_bytes_per_conn, fmt: 'int', better: 'lower' },
      { name: 'connections set up per s', get: (r) => r.connect_per_s, fmt: 'int', better: 'higher' },
      { name: 'time to connect all, ms', get: (r) => r.connect_ms, fmt: 'int', better: 'lower' },
    ],
  },
  {
    id: 'b',
    title: `(b) fan-out: 1 room x ${Q(1000, 100)} subscribers, 1 publisher at max rate, 64 B`,
    args: ['--conns', String(Q(1000, 100)), '--rooms', '1', '--pubs', '1', '--size', '64', ...timing],
    variants: broadcastVariants(),
    figures: delivFigures,
  },
  {
    id: 'c-fixed',
    title: `(c) ${Q(100, 10)} rooms x 100 subscribers, ${Q(100, 10)} publishers at 10 msg/s each, 64 B`,
    args: ['--conns', String(Q(10000, 1000)), '--rooms', String(Q(100, 10)), '--pubs', String(Q(100, 10)),
      '--rate', '10', '--size', '64', ...timing],
    variants: broadcastVariants(),
    figures: delivFigures,
  },
  {
    id: 'c-max',
    title: `(c) ${Q(100, 10)} rooms x 100 subscribers, ${Q(100, 10)} publishers at max rate, 64 B`,
    args: ['--conns', String(Q(10000, 1000)), '--rooms', String(Q(100, 10)), '--pubs', String(Q(100, 10)),
      '--size', '64', ...timing],
    variants: broadcastVariants(),
    figures: delivFigures,
  },
  {
    // Issue 15: the sync protocol keeps messages for resumes; clients that
    // never confirm (recv) must not make that memory grow with messages.
    id: 'r',
    title: `(r) resume memory: ${Q(100, 10)} rooms x 100 subscribers, ${Q(100, 10)} publishers at max rate, 64 B, sync clients with and without recv`,
    args: ['--conns', String(Q(10000, 1000)), '--rooms', String(Q(100, 10)), '--pubs', String(Q(100, 10)),
      '--size', '64', ...timing],
    variants: [
      ...broadcastVariants(),
      { key: 'norecv', server: 'wsync', args: ['--proto', 'wsync', '--mode', 'ephemeral', '--recv-interval', '0'],
        label: 'wsync, sync protocol, no recv' },
    ],
    figures: [
      { name: 'server RSS MiB', get: (r) => r.server?.rss_kib / 1024, fmt: 'f1', better: 'lower' },
      { name: 'deliveries/s', get: (r) => r.deliveries_per_s, fmt: 'int', better: 'higher' },
      { name: 'server CPU us per delivery', get: (r) => r.server?.cpu_us_per_delivery, fmt: 'f3', better: 'lower' },
      { name: 'time to connect all, ms', get: (r) => r.connect_ms, fmt: 'int', better: 'lower' },
      { name: 'other CPU on the machine %', get: (r) => Math.max(0, r.machine?.other_cpu_pct), fmt: 'int', better: 'info' },
    ],
  },
  {
    id: 'd',
    title: '(d) light load: 1 room x 100 subscribers, 1 publisher at 100 msg/s, 64 B',
    // 100 msg/s: a 5 s run has only 500 messages, and one hiccup delays 100
    // deliveries at once, so p99 would rest on 5 messages: measure 20 s.
    args: ['--conns', '100', '--rooms', '1', '--pubs', '1', '--rate', '100', '--size', '64', '--spin',
      ...(quick ? timing : ['--warmup', '2', '--duration', '20'])],
    variants: [
      ...broadcastVariants(),
      // One helper thread shares the 100 writes of each message
      // (--write-threads, docs/SERVER.md); on a 2-core machine it shares a
      // core with the generator, which busy-polls the other
      { key: 'writers', label: 'wsync, --write-threads 1', server: 'wsync', args: ['--proto', 'broadcast'],
        serverArgs: ['--write-threads', '1'] },
    ],
    hist: true,
    figures: [
      { name: 'latency p50 us', get: (r) => lat(r, 'p50'), fmt: 'int', better: 'lower' },
      { name: 'latency p90 us', get: (r) => lat(r, 'p90'), fmt: 'int', better: 'lower' },
      { name: 'latency p99 us', get: (r) => lat(r, 'p99'), fmt: 'int', better: 'lower' },
      { name: 'latency p99.9 us', get: (r) => lat(r, 'p999'), fmt: 'int', better: 'lower' },
      { name: 'latency max us', get: (r) => lat(r, 'max'), fmt: 'int', better: 'lower' },
      { name: 'server CPU us per delivery', get: (r) => r.server?.cpu_us_per_delivery, fmt: 'f3', better: 'lower' },
      { name: 'softirq CPU % (loopback TCP)', get: (r) => r.machine?.irq_cpu_pct, fmt: 'int', better: 'info' },
      { name: 'other CPU on the machine %', get: (r) => Math.max(0, r.machine?.other_cpu_pct), fmt: 'int', better: 'info' },
    ],
  },
  {
    id: 'e',
    title: '(e) durable ops: 50 writers on 10 rooms at max rate (wsync protocol)',
    args: ['--proto', 'wsync', '--conns', '50', '--rooms', '10', '--pubs', '50', '--size', '64', ...timing],
    variants: [
      { key: 'ephemeral', server: 'wsync', args: ['--mode', 'ephemeral'], label: 'publish, ephemeral (not persisted)' },
      { key: 'stored', server: 'wsync', args: ['--mode', 'stored'], label: 'publish, stored (normal)' },
      { key: 'normal', server: 'wsync', args: ['--mode', 'op'], label: 'op set, --durability normal' },
      { key: 'full', server: 'wsync', args: ['--mode', 'op'], serverArgs: ['--durability', 'full'], label: 'op set, --durability full' },
    ],
    figures: [
      { name: 'acknowledged/s', get: (r) => r.acks_per_s, fmt: 'int', better: 'higher' },
      { name: 'ack latency p50 ms', get: (r) => r.ack_latency_us?.p50 / 1e3, fmt: 'f2', better: 'lower' },
      { name: 'ack latency p99 ms', get: (r) => r.ack_latency_us?.p99 / 1e3, fmt: 'f2', better: 'lower' },
      { name: 'deliveries/s', get: (r) => r.deliveries_per_s, fmt: 'int', better: 'higher' },
      { name: 'server CPU us per ack', get: (r) => (r.server?.cpu_s * 1e6) / r.acks, fmt: 'f2', better: 'lower' },
      { name: 'server CPU %', get: (r) => r.server?.cpu_pct, fmt: 'int', better: 'info' },
      { name: 'other CPU on the machine %', get: (r) => Math.max(0, r.machine?.other_cpu_pct), fmt: 'int', better: 'info' },
    ],
  },
  {
    // The webhook dispatcher's cost on the commit path: the durable ops of
    // (e) with one webhook on a local receiver (bench/peers/webhook-sink.mjs,
    // which verifies every signature) against none, in the same run.
    id: 'w',
    title: '(w) webhook cost: op set (--durability normal), 50 writers on 10 rooms at max rate, without and with one webhook on a local receiver',
    args: ['--proto', 'wsync', '--conns', '50', '--rooms', '10', '--pubs', '50', '--size', '64', '--mode', 'op', ...timing],
    variants: [
      { key: 'none', server: 'wsync', args: [], serverArgs: ['--api-key', BENCH_KEY], label: 'no webhook' },
      { key: 'hook', server: 'wsync', args: [], serverArgs: ['--api-key', BENCH_KEY], webhook: true, label: 'one webhook' },
    ],
    ratioOf: ['hook', 'none'],
    figures: [
      { name: 'acknowledged/s', get: (r) => r.acks_per_s, fmt: 'int', better: 'higher' },
      { name: 'ack latency p50 ms', get: (r) => r.ack_latency_us?.p50 / 1e3, fmt: 'f2', better: 'lower' },
      { name: 'ack latency p99 ms', get: (r) => r.ack_latency_us?.p99 / 1e3, fmt: 'f2', better: 'lower' },
      { name: 'server CPU us per ack', get: (r) => (r.server?.cpu_s * 1e6) / r.acks, fmt: 'f2', better: 'lower' },
      { name: 'server CPU %', get: (r) => r.server?.cpu_pct, fmt: 'int', better: 'info' },
      { name: 'webhook: entries delivered by the end', get: (r) => r.webhook?.delivered, fmt: 'int', better: 'info' },
      { name: 'webhook: lag at the end, entries', get: (r) => r.webhook?.lag, fmt: 'int', better: 'info' },
      { name: 'webhook: requests', get: (r) => r.webhook?.requests, fmt: 'int', better: 'info' },
      { name: 'other CPU on the machine %', get: (r) => Math.max(0, r.machine?.other_cpu_pct), fmt: 'int', better: 'info' },
    ],
  },
  {
    id: 'f',
    title: `(f) catch-up: join with since {epoch, 0} after ${Q(100000, 10000)} ops (wsync protocol)`,
    args: ['--catchup', String(Q(100000, 10000)), '--pubs', '10'],
    variants: [
      { key: 'distinct', server: 'wsync', args: ['--items', String(Q(100000, 10000))], label: 'every op a new item' },
      { key: 'items1k', server: 'wsync', args: ['--items', '1000'], label: '1,000 items, 100 versions each' },
    ],
    figures: [
      { name: 'time to the last part, ms', get: (r) => r.catchup?.catchup_ms, fmt: 'f1', better: 'lower' },
      { name: 'time to joined (the first part), ms', get: (r) => r.catchup?.first_part_ms, fmt: 'f1', better: 'lower' },
      { name: 'bytes, all parts', get: (r) => r.catchup?.joined_bytes, fmt: 'int', better: 'info' },
      { name: 'parts', get: (r) => r.catchup?.parts, fmt: 'int', better: 'info' },
      { name: 'recovered (1) or snapshot (0)', get: (r) => (r.catchup?.recovered ? 1 : 0), fmt: 'int', better: 'info' },
      { name: 'ops written/s (setup)', get: (r) => r.catchup?.write_ops_per_s, fmt: 'int', better: 'info' },
    ],
  },
  {
    // What a large join costs everyone else (issue 15, target 5): the
    // latency of a room of 100 members with one publisher at 100 msg/s,
    // while another connection joins a 100,000-item room (about 11 MB of
    // snapshot) again and again, each join as soon as the one before has its
    // last part; against the same server with the same room, no joins;
    // and the joins again with the large room written meanwhile (200 op
    // set/s by a third generator), which makes every join find entries
    // pending and the snapshot change while it is sent.
    id: 'g',
    title: `(g) large joins and everyone else: 1 room x 100 at 100 msg/s (sync protocol, publish), while a ${Q(100000, 10000)}-item room is joined again and again`,
    args: ['--proto', 'wsync', '--mode', 'ephemeral', '--conns', '100', '--rooms', '1', '--pubs', '1', '--rate', '100',
      '--size', '64', ...(quick ? timing : ['--warmup', '1', '--duration', '10'])],
    variants: [
      { key: 'quiet', server: 'wsync', args: [], joiner: { rejoinFor: 0 }, label: 'no joins' },
      { key: 'joins', server: 'wsync', args: [], joiner: { rejoinFor: quick ? 2.5 : 11.5 }, label: 'joins of the large room, back to back' },
      { key: 'written', server: 'wsync', args: [], joiner: { rejoinFor: quick ? 2.5 : 11.5, writeRate: 200 }, label: 'the same, the large room written at 200 ops/s' },
    ],
    ratioOf: ['written', 'quiet'],
    figures: [
      { name: 'latency p50 ms', get: (r) => lat(r, 'p50') / 1e3, fmt: 'f2', better: 'lower' },
      { name: 'latency p90 ms', get: (r) => lat(r, 'p90') / 1e3, fmt: 'f2', better: 'lower' },
      { name: 'latency p99 ms', get: (r) => lat(r, 'p99') / 1e3, fmt: 'f2', better: 'lower' },
      { name: 'latency p99.9 ms', get: (r) => lat(r, 'p999') / 1e3, fmt: 'f2', better: 'lower' },
      { name: 'latency max ms', get: (r) => lat(r, 'max') / 1e3, fmt: 'f2', better: 'lower' },
      { name: 'joins of the large room', get: (r) => r.joiner?.catchup?.rejoins, fmt: 'int', better: 'info' },
      { name: 'time per join, to its last part, p50 ms', get: (r) => r.joiner?.catchup?.rejoin_ms?.p50, fmt: 'f1', better: 'info' },
      { name: 'bytes per join', get: (r) => (r.joiner?.catchup?.rejoins ? r.joiner.catchup.rejoin_bytes / r.joiner.catchup.rejoins : undefined), fmt: 'int', better: 'info' },
      { name: 'writes to the large room acked/s', get: (r) => r.writer?.acks_per_s, fmt: 'int', better: 'info' },
      { name: 'server CPU %', get: (r) => r.server?.cpu_pct, fmt: 'int', better: 'info' },
    ],
  },
  // permessage-deflate: the same load with the generator offering it (as
  // browsers do) and without; payloads padded with words, not one letter.
  ...['z-sync', 'z-fanout'].map((id) => ({
    id,
    title: id === 'z-sync'
      ? `(z) compression, sync protocol: ${Q(10, 2)} rooms x 50, ${Q(10, 2)} writers of op set at 50/s, ~450-byte op broadcasts`
      : `(z) compression, fan-out: 1 room x ${Q(200, 50)}, 2 publishers at 100 msg/s, 400 B of words`,
    args: id === 'z-sync'
      ? ['--proto', 'wsync', '--mode', 'op', '--conns', String(Q(500, 100)), '--rooms', String(Q(10, 2)),
        '--pubs', String(Q(10, 2)), '--rate', '50', '--size', '300', '--fill', 'words', ...timing]
      : ['--proto', 'broadcast', '--conns', String(Q(200, 50)), '--rooms', '1', '--pubs', '2', '--rate', '100',
        '--size', '400', '--fill', 'words', ...timing],
    variants: [
      { key: 'off', server: 'wsync', args: [], label: 'no compression' },
      { key: 'on', server: 'wsync', args: ['--deflate'], label: 'permessage-deflate' },
    ],
    ratioOf: ['on', 'off'],
    figures: [
      { name: 'bytes on the wire per delivery', get: (r) => r.wire_bytes_per_delivery, fmt: 'f1', better: 'lower' },
      { name: 'server CPU us per delivery', get: (r) => (r.server?.cpu_s * 1e6) / r.deliveries, fmt: 'f3', better: 'lower' },
      { name: 'deliveries/s', get: (r) => r.deliveries_per_s, fmt: 'int', better: 'info' },
      { name: 'latency p50 ms', get: (r) => lat(r, 'p50') / 1e3, fmt: 'f2', better: 'lower' },
      { name: 'latency p99 ms', get: (r) => lat(r, 'p99') / 1e3, fmt: 'f2', better: 'lower' },
      { name: 'server RSS MiB', get: (r) => r.server?.rss_kib / 1024, fmt: 'f1', better: 'lower' },
      { name: 'other CPU on the machine %', get: (r) => Math.max(0, r.machine?.other_cpu_pct), fmt: 'int', better: 'info' },
    ],
  })),
];

// The optional uWebSockets peer speaks the same broadcast protocol as the
// Node peer: it runs, with the same generator arguments, right after it.
if (UWS) {
  for (const s of scenarios) {
    const i = s.variants.findIndex((v) => v.key === 'peer');
    if (i >= 0) s.variants.splice(i + 1, 0, { ...s.variants[i], key: 'uws', server: 'uws' });
  }
}

// ---- servers ------------------------------------------------------------------

function ensurePeer() {
  if (fs.existsSync(path.join(PEERS, 'node_modules', 'ws'))) return;
  console.error('bench: installing the Node peer (npm, bench/peers)');
  const cmd = fs.existsSync(path.join(PEERS, 'package-lock.json')) ? ['ci'] : ['install'];
  const r = spawnSync('npm', [...cmd, '--no-audit', '--no-fund', '--silent'], { cwd: PEERS, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('npm install in bench/peers failed');
}

async function startServer(kind, extra = []) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-bench-'));
  const args = kind === 'wsync'
    ? ['serve', '--listen', '127.0.0.1:0', '--data-dir', path.join(dir, 'db'), '--echo-endpoint', '--insecure-demo',
      '--rate', '1000000000', '--burst', '1000000000', '--idle-timeout', '10m', '--ping-interval', '10m', ...extra]
    : kind === 'uws'
      ? ['--listen', '127.0.0.1:0']
      : [path.join(PEERS, 'server.mjs'), '--listen', '127.0.0.1:0'];
  const bin = { wsync: WSYNC, uws: UWS }[kind] ?? process.execPath;
  // stderr goes to a file, as a server's log would: through a pipe, the
  // server's writes would wait for this process to read them, and wsync
  // logs three lines per sync session (scenario (a)).
  const errPath = path.join(dir, 'stderr');
  const errFd = fs.openSync(errPath, 'w');
  const p = spawn(bin, args, { stdio: ['ignore', 'ignore', errFd] });
  fs.closeSync(errFd);
  const err = () => fs.readFileSync(errPath, 'utf8');
  const port = await new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      clearInterval(poll);
      reject(new Error(`${kind} did not start: ${err()}`));
    }, 10000);
    const poll = setInterval(() => {
      const m = /listening on http:\/\/[^:]+:(\d+)/.exec(err());
      if (m) {
        clearTimeout(t);
        clearInterval(poll);
        resolve(Number(m[1]));
      }
    }, 20);
    p.on('exit', (code) => {
      clearTimeout(t);
      clearInterval(poll);
      reject(new Error(`${kind} exited ${code}: ${err()}`));
    });
  });
  // settle: let the runtime finish starting (JIT, first GC) before the baseline
  await new Promise((r) => setTimeout(r, 300));
  return {
    pid: p.pid,
    port,
    log: err,
    async stop() {
      const done = new Promise((r) => p.on('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(t);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The local webhook receiver of scenario (w). */
async function startSink() {
  const p = spawn(process.execPath, [path.join(PEERS, 'webhook-sink.mjs')], {
    stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, WSYNC_WEBHOOK_SECRET: HOOK_SECRET },
  });
  let err = '';
  const url = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`webhook sink did not start: ${err}`)), 10000);
    p.stderr.on('data', (d) => {
      err += d;
      const m = /listening on (http:\/\/\S+)/.exec(err);
      if (m) {
        clearTimeout(t);
        resolve(m[1]);
      }
    });
  });
  return {
    url,
    async stop() {
      const done = new Promise((r) => p.on('exit', r));
      p.kill('SIGTERM');
      await done;
      try {
        return JSON.parse(err.trim().split('\n').pop());
      } catch {
        return null;
      }
    },
  };
}

/** The webhook's figures from /metrics (scenario (w)). */
async function webhookFigures(port) {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { Authorization: `Bearer ${BENCH_KEY}` } });
  const text = await res.text();
  const get = (name) => {
    const m = new RegExp(`^${name}\\{webhook="[^"]+"(?:,result="ok")?\\} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  };
  return { delivered: get('wsync_webhook_delivered_total'), lag: get('wsync_webhook_lag_entries'),
    requests: get('wsync_webhook_requests_total') };
}

function runBench(args, onStderr) {
  return new Promise((resolve, reject) => {
    const p = spawn(BENCH, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let so = '';
    let se = '';
    p.stdout.on('data', (d) => (so += d));
    p.stderr.on('data', (d) => {
      se += d;
      onStderr?.(se);
    });
    p.on('exit', (code) => {
      try {
        const r = JSON.parse(so.trim().split('\n').pop());
        r.exit = code;
        r.stderr = se.trim();
        resolve(r);
      } catch {
        reject(new Error(`wsync-bench ${args.join(' ')} failed (${code}): ${se}${so}`));
      }
    });
  });
}

// ---- run ------------------------------------------------------------------------

// Busy CPU of the whole machine, in cores, over ms milliseconds (/proc/stat).
async function machineBusy(ms) {
  const read = () => {
    const v = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    return { busy: v[0] + v[1] + v[2] + v[5] + v[6] + v[7], all: v.slice(0, 8).reduce((a, b) => a + b, 0) };
  };
  const a = read();
  await new Promise((r) => setTimeout(r, ms));
  const b = read();
  return ((b.busy - a.busy) / (b.all - a.all)) * os.cpus().length;
}

// The machine may be shared (other builds and test runs): before each run,
// wait up to 60 s for it to be quiet, and record what was running anyway.
async function waitQuiet() {
  const t0 = Date.now();
  let busy = await machineBusy(400);
  while (busy > 0.15 && Date.now() - t0 < 60000) busy = await machineBusy(1000);
  return { busy_cores_before: Math.round(busy * 100) / 100, waited_ms: Date.now() - t0 };
}

const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return undefined;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
const fmt = (v, f) => {
  if (v === undefined || v === null || !Number.isFinite(v)) return '-';
  if (f === 'int') return Math.round(v).toLocaleString('en-US');
  if (f === 'f1') return v.toFixed(1);
  if (f === 'f2') return v.toFixed(2);
  return v.toFixed(3);
};
const ratio = (a, b) => (a === undefined || b === undefined || !b ? undefined : a / b);
const fmtRatio = (r) => (r === undefined ? '-' : r >= 10 ? `${r.toFixed(1)}x` : r >= 0.1 ? `${r.toFixed(2)}x` : `${r.toFixed(3)}x`);

async function main() {
  if (!fs.existsSync(WSYNC) || !fs.existsSync(BENCH)) throw new Error('build first: make build/wsync build/wsync-bench');
  if (UWS) {
    try {
      fs.accessSync(UWS, fs.constants.X_OK);
    } catch {
      throw new Error(`WSYNC_BENCH_UWS=${process.env.WSYNC_BENCH_UWS}: not an executable file`);
    }
  }
  fs.mkdirSync(out, { recursive: true });
  const chosen = scenarios.filter((s) => !only || only.includes(s.id));
  if (chosen.some((s) => s.variants.some((v) => v.server === 'node'))) ensurePeer();
  const results = { started: new Date().toISOString(), machine: machineInfo(), repeat, quick, runs: [] };
  if (UWS) results.uws_peer = UWS;
  const t0 = Date.now();
  for (const s of chosen) {
    for (let rep = 0; rep < repeat; rep++) {
      for (const v of s.variants) {
        const quiet = await waitQuiet();
        const sink = v.webhook ? await startSink() : null;
        const hookArgs = sink ? ['--webhook', `${sink.url} name=bench`, '--webhook-secret', HOOK_SECRET] : [];
        const srv = await startServer(v.server, [...(v.serverArgs ?? []), ...hookArgs]);
        const hist = s.hist ? path.join(out, `${s.id}-${v.key}-${rep}.hist`) : null;
        const args = ['--port', String(srv.port), '--server-pid', String(srv.pid), '--json', '--quiet',
          '--prefix', `${s.id}${rep}`, ...s.args, ...v.args, ...(hist ? ['--hist', hist] : [])];
        let r;
        try {
          // (g): a second generator writes the large room, then joins it
          // again and again while this one measures.
          let joiner = null;
          if (v.joiner) {
            const n = String(Q(100000, 10000));
            let ready;
            const written = new Promise((res) => (ready = res));
            joiner = runBench(['--port', String(srv.port), '--json', '--prefix', `${s.id}${rep}big`, '--catchup', n,
              '--items', n, '--pubs', '10', '--rejoin-for', String(v.joiner.rejoinFor)],
            (err) => /joining with since/.test(err) && ready());
            await Promise.race([written, joiner]);
          }
          const writer = v.joiner?.writeRate
            ? runBench(['--port', String(srv.port), '--json', '--quiet', '--prefix', `${s.id}${rep}big`, '--proto', 'wsync',
              '--mode', 'op', '--conns', '1', '--rooms', '1', '--pubs', '1', '--rate', String(v.joiner.writeRate),
              '--items', String(Q(100000, 10000)), '--warmup', '0', '--duration', String(v.joiner.rejoinFor)])
            : null;
          r = await runBench(args);
          if (joiner) r.joiner = await joiner;
          if (writer) r.writer = await writer;
        } catch (e) {
          r = { error: String(e.message ?? e) };
        }
        if (sink) {
          try {
            r.webhook = await webhookFigures(srv.port);
          } catch (e) {
            r.webhook = { error: String(e.message ?? e) };
          }
        }
        await srv.stop();
        if (sink) r.webhook.sink = await sink.stop();
        r.scenario = s.id;
        r.variant = v.key;
        r.rep = rep;
        r.quiet = quiet;
        results.runs.push(r);
        console.error(`bench: ${s.id} ${v.key} #${rep + 1}: ${summary(s, r)}`);
      }
    }
  }
  results.seconds = Math.round((Date.now() - t0) / 1000);
  fs.writeFileSync(path.join(out, 'results.json'), JSON.stringify(results, null, 1));
  const md = render(chosen, results);
  fs.writeFileSync(path.join(out, 'table.md'), md);
  console.log(md);
  const chart = drawChart(results);
  if (chart) console.error(`bench: latency chart ${path.relative(root, chart)}`);
  if (writeDoc) updateDoc(md);
}

function summary(s, r) {
  if (r.error) return `ERROR ${r.error.slice(0, 300)}`;
  const other = r.machine?.other_cpu_pct > 10 ? ` [other load ${Math.round(r.machine.other_cpu_pct)}% of a core]` : '';
  const bad = r.ok ? '' : ` NOT OK (losses ${r.losses}, dups ${r.duplicates}, ooo ${r.out_of_order}, errors ${r.errors}, closes ${r.server_closes}${r.stalled ? ', stalled' : ''})`;
  return s.figures.slice(0, 3).map((f) => `${f.name} ${fmt(f.get(r), f.fmt)}`).join(', ') + bad + other;
}

function machineInfo() {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    model: cpus[0]?.model,
    kernel: os.release(),
    memory_gib: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
  };
}

// ---- table ---------------------------------------------------------------------------

function render(chosen, results) {
  const runs = results.runs;
  const m = results.machine;
  const lines = [];
  lines.push(`Run of ${results.started.slice(0, 10)}: ${m.cpus} cores (${m.model}), Linux ${m.kernel}, Node ${m.node}; ` +
    `medians of ${results.repeat} run(s) each, ${results.seconds} s in all${results.quick ? ' (--quick: reduced sizes)' : ''}.`);
  lines.push('');
  const med = {};
  for (const s of chosen) {
    med[s.id] = {};
    lines.push(`**${s.title}**`);
    lines.push('');
    // Each peer's column is followed by the ratio wsync / that peer.
    const peerRatio = { peer: 'wsync / ws', uws: 'wsync / uWS' };
    const iw = s.variants.findIndex((v) => v.key === 'wsync');
    const withRatios = (xs, ratioCell) => s.variants.flatMap((v, i) => (iw >= 0 && peerRatio[v.key] ? [xs[i], ratioCell(i, v)] : [xs[i]]));
    const cols = s.variants.map((v) => v.label ?? { wsync: 'wsync', peer: 'ws (Node)', uws: 'uWebSockets', sync: 'wsync, sync protocol' }[v.key]);
    const head = ['figure', ...withRatios(cols, (i, v) => peerRatio[v.key])];
    const ro = s.ratioOf?.map((k) => s.variants.findIndex((v) => v.key === k));
    if (ro) head.push(`${s.ratioOf[0]} / ${s.ratioOf[1]}`);
    lines.push(`| ${head.join(' | ')} |`);
    lines.push(`|${head.map((h, i) => (i === 0 ? '---' : '---:')).join('|')}|`);
    for (const f of s.figures) {
      const vals = s.variants.map((v) => median(runs.filter((r) => r.scenario === s.id && r.variant === v.key && !r.error).map(f.get)));
      s.variants.forEach((v, i) => {
        med[s.id][v.key] ??= {};
        med[s.id][v.key][f.name] = vals[i];
      });
      if (vals.every((x) => x === undefined)) continue;
      const cells = [f.name, ...withRatios(vals.map((x) => fmt(x, f.fmt)), (i) => (f.better === 'info' ? '' : fmtRatio(ratio(vals[iw], vals[i]))))];
      if (ro) cells.push(f.better === 'info' ? '' : fmtRatio(ratio(vals[ro[0]], vals[ro[1]])));
      lines.push(`| ${cells.join(' | ')} |`);
    }
    const bad = runs.filter((r) => r.scenario === s.id && (r.error || !r.ok));
    if (bad.length)
      lines.push('', `Runs with errors or a failed check: ${bad.map((r) => `${r.variant} #${r.rep + 1} (${r.error ? 'error' : `losses ${r.losses}, closes ${r.server_closes}, errors ${r.errors}`})`).join(', ')}.`);
    lines.push('');
  }
  runsOf = Object.fromEntries(chosen.map((s) => [s.id, runs.filter((r) => r.scenario === s.id)]));
  lines.push(...targets(med));
  return lines.join('\n') + '\n';
}

/** Per repetition, f(variant a) / f(variant b) of the same scenario. */
function pairedRatios(runs, a, b, f) {
  const out = [];
  for (const ra of runs.filter((r) => r.variant === a && !r.error)) {
    const rb = runs.find((r) => r.variant === b && r.rep === ra.rep && !r.error);
    const x = rb ? ratio(f(ra), f(rb)) : undefined;
    if (x !== undefined && Number.isFinite(x)) out.push(x);
  }
  return out;
}

let runsOf = {};

function targets(med) {
  const rows = [];
  const g = (s, v, f) => med[s]?.[v]?.[f];
  const add = (name, value, ok) => rows.push(`| ${name} | ${value} | ${ok === undefined ? '-' : ok ? 'met' : '**missed**'} |`);
  const r = (s, f) => ratio(g(s, 'wsync', f), g(s, 'peer', f));
  if (med.a) {
    const x = r('a', 'server RSS bytes per connection');
    add('(a) memory per idle connection <= 1/12 of the peer', `${fmtRatio(x)} (${fmt(g('a', 'wsync', 'server RSS bytes per connection'), 'int')} vs ${fmt(g('a', 'peer', 'server RSS bytes per connection'), 'int')} B)`, x === undefined ? undefined : x <= 1 / 12);
  }
  for (const s of ['b', 'c-max']) {
    if (!med[s]) continue;
    const d = r(s, 'deliveries/s');
    add(`(${s}) deliveries/s >= 30x the peer`, fmtRatio(d), d === undefined ? undefined : d >= 30);
    const c = r(s, 'server CPU us per delivery');
    add(`(${s}) server CPU per delivery <= 1/30 of the peer`, `${fmtRatio(c)} (${fmt(g(s, 'wsync', 'server CPU us per delivery'), 'f3')} vs ${fmt(g(s, 'peer', 'server CPU us per delivery'), 'f3')} us)`, c === undefined ? undefined : c <= 1 / 30);
  }
  if (med.d) {
    const x = r('d', 'latency p99 us');
    add('(d) p99 latency <= 1/2 of the peer', `${fmtRatio(x)} (${fmt(g('d', 'wsync', 'latency p99 us'), 'int')} vs ${fmt(g('d', 'peer', 'latency p99 us'), 'int')} us)`, x === undefined ? undefined : x <= 0.5);
  }
  if (med.e) {
    const n = g('e', 'normal', 'acknowledged/s');
    const eph = g('e', 'ephemeral', 'acknowledged/s');
    add('(e) durable acked ops/s >= 100,000 (normal)', fmt(n, 'int'), n === undefined ? undefined : n >= 100000);
    const x = ratio(eph, n);
    add("(e) within 2x of wsync's own non-persisted publish rate", `ephemeral ${fmt(eph, 'int')}/s = ${fmtRatio(x)} the op rate`, x === undefined ? undefined : x <= 2);
  }
  if (med.w) {
    // On a shared machine the load drifts between runs: the ratio of each
    // repetition's adjacent pair (with, without) is steadier than the ratio
    // of the medians, so the target is judged on the median of those.
    const x = median(pairedRatios(runsOf.w ?? [], 'hook', 'none', (r) => r.acks_per_s));
    const c = median(pairedRatios(runsOf.w ?? [], 'hook', 'none', (r) => (r.server?.cpu_s * 1e6) / r.acks));
    add('(w) one webhook costs at most 10% of durable op throughput', `${fmtRatio(x)} the acked ops/s without, median of the runs' pairs (medians ${fmt(g('w', 'hook', 'acknowledged/s'), 'int')} vs ${fmt(g('w', 'none', 'acknowledged/s'), 'int')}); server CPU per ack ${fmtRatio(c)}`, x === undefined ? undefined : x >= 0.9);
  }
  if (med.f) {
    const x = g('f', 'distinct', 'time to the last part, ms');
    add('(f) catch-up of 100,000 ops well under a second', `${fmt(x, 'f1')} ms to the last part (every op a new item); ${fmt(g('f', 'items1k', 'time to the last part, ms'), 'f1')} ms (1,000 items)`, x === undefined ? undefined : x < 500);
  }
  if (med.g) {
    for (const [k, what] of [['joins', ''], ['written', ', the large room written']]) {
      const x = g('g', k, 'latency p99 ms');
      add(`(g) other rooms p99 < 5 ms while large snapshots are sent${what} (issue 15)`, `${fmt(x, 'f2')} ms (${fmt(g('g', 'quiet', 'latency p99 ms'), 'f2')} ms without the joins, ${fmtRatio(ratio(x, g('g', 'quiet', 'latency p99 ms')))}); max ${fmt(g('g', k, 'latency max ms'), 'f2')} ms`, x === undefined ? undefined : x < 5);
    }
  }
  if (med.a?.sync) {
    const b = g('a', 'sync', 'server RSS bytes per connection');
    add('(a) sync session after hello + join <= 1 KB idle (issue 15)', `${fmt(b, 'int')} B = ${fmtRatio(ratio(b, g('a', 'wsync', 'server RSS bytes per connection')))} the raw endpoint`, b === undefined ? undefined : b <= 1024);
    const x = ratio(g('a', 'sync', 'time to connect all, ms'), g('a', 'wsync', 'time to connect all, ms'));
    add('(a) opening sync sessions (hello + join) <= 2x the raw endpoint (issue 15)', fmtRatio(x), x === undefined ? undefined : x <= 2);
    const xp = ratio(g('a', 'syncpipe', 'time to connect all, ms'), g('a', 'wsync', 'time to connect all, ms'));
    add('(a) the same, join sent right behind hello <= 2x the raw endpoint (issue 15)', fmtRatio(xp), xp === undefined ? undefined : xp <= 2);
    const xg = ratio(g('a', 'syncflat', 'time to connect all, ms'), g('a', 'wsync', 'time to connect all, ms'));
    const bg = g('a', 'syncflat', 'server RSS bytes per connection');
    add('(a) the same, windows that never grow (--presence-max-interval 0) <= 2x the raw endpoint (issue 15)', `${fmtRatio(xg)}, ${fmt(bg, 'int')} B idle`, xg === undefined ? undefined : xg <= 2);
  }
  if (med.r) {
    for (const [k, what] of [['sync', 'with recv'], ['norecv', 'without recv']]) {
      const x = ratio(g('r', k, 'server RSS MiB'), g('r', 'wsync', 'server RSS MiB'));
      add(`(r) server RSS at max rate, sync clients ${what} <= 2x the raw endpoint (issue 15)`, `${fmtRatio(x)} (${fmt(g('r', k, 'server RSS MiB'), 'f1')} vs ${fmt(g('r', 'wsync', 'server RSS MiB'), 'f1')} MiB)`, x === undefined ? undefined : x <= 2);
    }
  }
  if (!rows.length) return [];
  return ['**Targets (issues 6, 15)**', '', '| target | measured | |', '|---|---|---|', ...rows, ''];
}

// ---- chart -----------------------------------------------------------------------------

function drawChart(results) {
  const has = spawnSync('sh', ['-c', 'command -v gnuplot'], { encoding: 'utf8' });
  if (has.status !== 0) {
    console.error('bench: gnuplot not installed (Debian: gnuplot-nox); no latency chart');
    return null;
  }
  const series = [
    ['wsync', 'wsync'],
    ['peer', 'ws (Node)'],
    ['uws', 'uWebSockets'],
    ['sync', 'wsync, sync protocol'],
  ].map(([k, t]) => [path.join(out, `d-${k}-0.hist`), t]).filter(([f]) => fs.existsSync(f));
  if (!series.length) return null;
  const png = path.join(out, 'latency.png');
  // x: percentile on a 1/(1-q) log axis, so the tail is spread out (as HdrHistogram plots)
  const plot = series.map(([f, t]) => `'${f}' using (1/(1-($2<0.999999?$2:0.999999))):1 with steps lw 2 title '${t}'`).join(', ');
  const script = `set terminal pngcairo size 900,520 font ',10'
set output '${png}'
set title 'Scenario (d): end-to-end latency, 100 subscribers, 100 msg/s, 64 B'
set logscale x
set logscale y
set xlabel 'percentile'
set ylabel 'latency (us)'
set xtics ('0%%' 1, '90%%' 10, '99%%' 100, '99.9%%' 1000, '99.99%%' 10000, '99.999%%' 100000)
set grid
set key top left
plot ${plot}
`; // tic labels are format strings in gnuplot: %% is a literal percent
  const r = spawnSync('gnuplot', [], { input: script, encoding: 'utf8' });
  if (r.status !== 0) {
    console.error(`bench: gnuplot failed: ${r.stderr}`);
    return null;
  }
  return png;
}

function updateDoc(md) {
  const doc = path.join(root, 'docs', 'PERFORMANCE.md');
  if (!fs.existsSync(doc)) return;
  const text = fs.readFileSync(doc, 'utf8');
  const b = '<!-- bench:results:begin -->';
  const e = '<!-- bench:results:end -->';
  const i = text.indexOf(b);
  const j = text.indexOf(e);
  if (i < 0 || j < i) {
    console.error('bench: docs/PERFORMANCE.md has no results markers; table left in build/bench/table.md');
    return;
  }
  fs.writeFileSync(doc, `${text.slice(0, i + b.length)}\n${md}${text.slice(j)}`);
  console.error('bench: docs/PERFORMANCE.md updated');
}

main().catch((e) => {
  console.error(`bench: ${e.stack ?? e}`);
  process.exit(1);
});
