// cluster.mjs -- make bench, cluster part (issue 13): two wsync nodes on one
// PostgreSQL and one Redis against two Socket.IO 4 nodes on the same Redis
// (@socket.io/redis-adapter, bench/peers/socketio-node.mjs), with the same
// load generator (build/wsync-bench), one pair of nodes at a time.
//
//   (a) cross-node fan-out: 1 publisher on node A, N subscribers on node B
//       (the publisher is a member too), ephemeral publish: deliveries/s at
//       max rate, latency p50/p99 at 100 msg/s, CPU per delivery (both
//       nodes' CPU from /proc/PID/stat over the measured interval, summed;
//       Redis's CPU is shown apart).
//   (b) durable ops through PostgreSQL: 50 writers on 10 rooms (op set, up to
//       --op-window ops in flight each),
//       four times: every room's writers spread over both nodes (each
//       room's ops decided on its owner node, --forward-ops on, the
//       default), each room whole on one node (--alt-rooms), again
//       spread over both nodes on two fresh nodes with --forward-ops off
//       (every node decides, the fence settles collisions), and each room
//       on one node of two fresh nodes with --history-ops 1000 (every room
//       trimmed every 256 entries, as on a node that has run a while);
//       acked ops/s, ack p50/p99,
//       PostgreSQL transactions/s (pg_stat_database.xact_commit, and the
//       writing ones exactly by transaction id, over the measured
//       interval), PostgreSQL's CPU, and the nodes' cluster counters from
//       /metrics per acked op; beside it one wsync without cluster options
//       (SQLite) under the same generator.
//
// Prints one table per part with the ratios of this run and the issue's
// targets, and writes build/bench/cluster.json. Nothing goes into docs/. A
// run with losses, duplicates, reorders, errors or a stall keeps its figures
// out of the tables (listed under problems); a part that fails (a node that
// does not start or does not stop) is listed under failed, and the others
// still run. About 90 s (plus 15 s when a node does not exit on SIGTERM).
//
// usage: node bench/cluster.mjs [--quick] [--check] [--only a,b] [--perf]
//   --quick   200 subscribers, shorter runs (a sanity pass, ~35 s)
//   --check   the self-check: tiny runs (50 subscribers, 1 s), exit 1 on any
//             loss, duplicate, reorder, error, stall or failed part (for
//             bench/smoke.sh; ~15 s, plus 15 s for a node that hangs on exit)
//             (Socket.IO runs in it only when bench/peers has it installed)
//   --only    a (fan-out), b (ops), or both (default)
//   --perf    perf record on both nodes and PostgreSQL during (b); the top
//             entries are printed
//   --op-window W  ops in flight per writer in (b) (default 64, the
//             generator's max rate elsewhere too)
//   --inject-dup N   every generator doubles its Nth delivery: the check
//             must then fail (a test of the check itself)
// PostgreSQL, Redis and the wsync nodes come from tests/e2e/lib/cluster.mjs.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'build', 'bench');
const BENCH = path.join(root, 'build', 'wsync-bench');
const PEERS = path.join(root, 'bench', 'peers');
process.env.WSYNC_BIN ||= path.join(root, 'build', 'wsync'); // read by tests/e2e/lib/server.mjs
const lib = await import(pathToFileURL(path.join(root, 'tests', 'e2e', 'lib', 'cluster.mjs')).href);
const { startServer } = await import(pathToFileURL(path.join(root, 'tests', 'e2e', 'lib', 'server.mjs')).href);

const argv = process.argv.slice(2);
const flag = (n) => argv.includes(`--${n}`);
const optv = (n, d) => (argv.indexOf(`--${n}`) >= 0 ? argv[argv.indexOf(`--${n}`) + 1] : d);
const check = flag('check');
const quick = flag('quick') || check;
const only = optv('only', 'a,b').split(',');
const wantPerf = flag('perf');
const inject = optv('inject-dup') ? ['--inject-dup', optv('inject-dup')] : [];
const peerInstalled = fs.existsSync(path.join(PEERS, 'node_modules', 'socket.io', 'package.json'));
const runPeer = only.includes('a') && (!check || peerInstalled);

const SUBS = check ? 50 : quick ? 200 : 1000;
const timing = check
  ? ['--warmup', '0.3', '--duration', '1', '--drain', '5']
  : quick ? ['--warmup', '0.5', '--duration', '2'] : ['--warmup', '2', '--duration', '5'];
const WARMUP = Number(timing[1]);
const DURATION = Number(timing[3]);
// Rate limits off: the generator is the only client.
const API_KEY = 'bench-api-key-0123456789';
const WSYNC_ARGS = ['--insecure-demo', '--rate', '1000000000', '--burst', '1000000000', '--idle-timeout', '10m',
  '--ping-interval', '10m', '--api-key', API_KEY];
// The cluster's counters in /metrics, summed over the nodes.
const COUNTERS = ['wsync_room_reloads_total', 'wsync_room_reloads_changes_total', 'wsync_room_reloads_whole_total',
  'wsync_refills_total', 'wsync_refilled_entries_total',
  'wsync_stale_commits_total', 'wsync_bus_gaps_total', 'wsync_ops_forwarded_total'];
async function counters(nodes) {
  const sum = Object.fromEntries(COUNTERS.map((k) => [k, 0]));
  for (const n of nodes) {
    const text = await (await fetch(`${n.url}/metrics`, { headers: { authorization: `Bearer ${API_KEY}` } })).text();
    for (const k of COUNTERS) {
      const m = new RegExp(`^${k} (\\d+)$`, 'm').exec(text);
      if (m) sum[k] += Number(m[1]);
    }
  }
  return sum;
}

// ---- processes ---------------------------------------------------------------

const cleanups = [];
const cpuOf = (pid) => {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, clock ticks (USER_HZ 100)
  } catch {
    return 0;
  }
};
// PostgreSQL: the postmaster and its backends.
const pgCpu = (pg) => (pg?.pid ? [pg.pid, ...lib.descendants(pg.pid)].reduce((a, p) => a + cpuOf(p), 0) : 0);

async function startPeer(redis, nodeId) {
  const p = spawn(process.execPath, [path.join(PEERS, 'socketio-node.mjs'), '--redis', redis.url, '--node-id', nodeId],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`socketio-node ${nodeId} did not listen: ${err}`)), 15000);
    p.stderr.on('data', (d) => {
      err += d;
      const m = /listening on http:\/\/[0-9.]+:(\d+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    p.on('exit', (code) => reject(new Error(`socketio-node ${nodeId} exited (${code}): ${err}`)));
  });
  const stop = () => new Promise((resolve) => {
    if (p.exitCode !== null || p.signalCode) return resolve();
    p.once('exit', resolve);
    p.kill('SIGTERM');
    setTimeout(() => p.kill('SIGKILL'), 3000).unref();
  });
  cleanups.push(stop);
  return { port, pid: p.pid, stop };
}

/** Runs the generator (JSON on stdout); onReady(ms) when every connection is ready. */
function runBench(args, onReady) {
  return new Promise((resolve, reject) => {
    const p = spawn(BENCH, ['--json', ...args, ...inject], { stdio: ['ignore', 'pipe', 'pipe'] });
    let so = '';
    let se = '';
    p.stdout.on('data', (d) => (so += d));
    p.stderr.on('data', (d) => {
      se += d;
      if (onReady && /connections ready/.test(se)) {
        onReady();
        onReady = null;
      }
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

/** The generator with an outside sampler at the edges of its measured interval. */
async function measured(args, sampler) {
  const samples = [];
  const timers = [];
  const at = (ms) => timers.push(setTimeout(() => samples.push(sampler()), ms));
  const r = await runBench(args, () => {
    at(WARMUP * 1000);
    at((WARMUP + DURATION) * 1000);
  });
  timers.forEach(clearTimeout);
  const [s0, s1] = await Promise.all(samples);
  r.outside = s0 && s1 ? { s0, s1 } : null;
  return r;
}
const problems = [];
function note(name, r) {
  // After a stale re-send, a publisher's later op may come first; the room's
  // seq order (room_seq_breaks) is what must hold then.
  const keys = ['losses', 'duplicates', 'room_seq_breaks', 'errors', 'server_closes', 'foreign', 'unexpected'];
  if (!r.stale_resends) keys.push('out_of_order');
  const bad = keys.filter((k) => r[k]).map((k) => `${k} ${r[k]}`);
  if (r.stalled) bad.push('stalled');
  if (r.exit !== 0) bad.push(`exit ${r.exit}`);
  r.failed = bad.length > 0; // its figures stay out of the table and the ratios
  if (bad.length) problems.push(`${name}: ${bad.join(', ')}${r.first_error ? ` (first error: ${r.first_error})` : ''}` +
    `${r.first_out_of_order && !r.stale_resends ? ` (first out of order: ${r.first_out_of_order})` : ''}`);
  const lat = r.mode === 'op' ? r.ack_latency_us : r.latency_us;
  process.stderr.write(`cluster: ${name}: ${r.mode === 'op' ? `${r.acks_per_s} acked ops/s` : `${r.deliveries_per_s} deliveries/s`}, ` +
    `p50 ${(lat.p50 / 1e3).toFixed(2)} ms, p99 ${(lat.p99 / 1e3).toFixed(2)} ms${bad.length ? `; ${bad.join(', ')}` : ''}\n`);
}

// ---- scenarios ---------------------------------------------------------------

const fanArgs = ['--conns', String(SUBS + 1), '--rooms', '1', '--pubs', '1', '--size', '64', '--check', ...timing];
const results = {};

async function fanout(label, proto, ports, pids, redis) {
  const base = ['--proto', proto, ...(proto === 'wsync' ? ['--mode', 'ephemeral'] : []), '--port', String(ports[1]),
    '--pub-port', String(ports[0]), ...pids.flatMap((p) => ['--server-pid', String(p)]), ...fanArgs];
  const sampler = async () => ({ redis: cpuOf(redis.pid) });
  const max = await measured([...base, '--prefix', `${label}max`, '--window', '64'], sampler);
  note(`${label} fan-out, max rate`, max);
  const paced = await measured([...base, '--prefix', `${label}rate`, '--rate', '100', '--window', '256'], sampler);
  note(`${label} fan-out, 100 msg/s`, paced);
  return { max, paced };
}

// Max rate as everywhere in make bench: each writer keeps up to 64 ops in
// flight (--op-window), the generator's own default. Up to 2026-12-07 this
// part used 16: each PostgreSQL transaction then carried about 170 ops
// instead of about 630, at a higher cost per op, and the acks came 3x
// sooner (docs/PERFORMANCE.md, cluster section, "ops in flight").
const OP_WINDOW = String(Number(optv('op-window', '64')) || 64);
const opArgs = ['--proto', 'wsync', '--mode', 'op', '--conns', '50', '--rooms', '10', '--pubs', '50', '--window', OP_WINDOW,
  '--items', '1000', '--size', '64', '--check', ...timing];

// A part that fails (a node that does not start, a generator that dies) is
// reported and the other parts still run.
const failures = [];
async function part(name, fn) {
  try {
    await fn();
  } catch (err) {
    const lines = err.message.split('\n');
    failures.push(`${name}: ${lines[0]}${lines.length > 1 ? ' (the rest is in the log above)' : ''}`);
    process.stderr.write(`cluster: ${name} failed: ${err.stack || err}\n`);
  }
}

async function socketioPart(redis) {
  const a = await startPeer(redis, 'sio-a');
  const b = await startPeer(redis, 'sio-b');
  try {
    results.sio = await fanout('sio', 'socketio', [a.port, b.port], [a.pid, b.pid], redis);
  } finally {
    await a.stop();
    await b.stop();
  }
}

async function clusterPart(redis) {
  const pg = await lib.startPostgres();
  cleanups.push(() => pg.stop());
  try {
    await withNodes(pg, redis, ['a', 'b'], [], async (nodes) => {
      const ports = nodes.map((n) => n.port);
      const pids = nodes.map((n) => n.pid);
      if (only.includes('a')) await part('wsync cluster fan-out', async () => {
        results.wsync = await fanout('wsync', 'wsync', ports, pids, redis);
      });
      if (only.includes('b')) await part('wsync cluster ops', () => clusterOps(pg, redis, nodes));
    });
    // Two other nodes (the first two are gone: no node counts them as up),
    // every node deciding every room it is written through.
    if (only.includes('b')) {
      await withNodes(pg, redis, ['c', 'd'], ['--forward-ops', 'off'], (nodes) =>
        part('wsync cluster ops, --forward-ops off', async () => {
          results.opsNoFwd = await measured([...opBase(nodes), '--prefix', 'opsn'], opSampler(pg, nodes));
          note('wsync cluster ops, every room on both nodes, --forward-ops off', results.opsNoFwd);
        }));
      // Rooms past --history-ops, trimmed every 256 entries as on a node
      // that has run for a while (the runs above never reach 100,000).
      await withNodes(pg, redis, ['e', 'f'], ['--history-ops', '1000'], (nodes) =>
        part('wsync cluster ops, rooms being trimmed', async () => {
          results.opsTrim = await measured([...opBase(nodes), '--alt-rooms', '--prefix', 'opst'], opSampler(pg, nodes));
          note('wsync cluster ops, each room on one node, rooms being trimmed', results.opsTrim);
        }));
    }
  } finally {
    await pg.stop();
  }
}

async function withNodes(pg, redis, ids, extra, fn) {
  const nodes = [];
  try {
    for (const id of ids) {
      const n = await lib.startNode({ pg, redis, nodeId: `bench-${id}`, args: [...WSYNC_ARGS, ...extra] });
      cleanups.push(() => n.close());
      nodes.push(n);
    }
    await fn(nodes);
  } finally {
    // Both at once: a node that does not exit on SIGTERM costs the
    // harness's 15 s wait (then SIGKILL) once, not once per node.
    const closed = await Promise.allSettled(nodes.map((n) => n.close()));
    const refused = closed.filter((c) => c.status === 'rejected');
    if (refused.length) throw refused[0].reason;
  }
}

const opBase = (nodes) => ['--port', String(nodes[0].port), '--alt-port', String(nodes[1].port),
  ...nodes.flatMap((n) => ['--server-pid', String(n.pid)]), ...opArgs];

function opSampler(pg, nodes) {
  // xact_commit counts every transaction, but backends report it up to a
  // second late; the transaction id counts only writing ones, exactly.
  const xacts = async () => (await pg.psql('SELECT xact_commit, pg_current_xact_id()::text AS xid ' +
    'FROM pg_stat_database WHERE datname = current_database()'))[0];
  return async () => {
    const t = process.hrtime.bigint();
    const x = await xacts();
    return { t, xact: Number(x.xact_commit), xid: Number(x.xid), pg: pgCpu(pg), redis: cpuOf(redis_.pid),
      metrics: await counters(nodes) };
  };
}

async function clusterOps(pg, redis, nodes) {
  const pids = nodes.map((n) => n.pid);
  const sampler = opSampler(pg, nodes);
  // perf: both nodes and PostgreSQL's backends (the generator's connections
  // exist only once it runs, so the backends of the wsync nodes' pools),
  // over both runs of (b); self time by process, library and symbol.
  let perf = null;
  const perfData = path.join(out, 'cluster-perf.data');
  if (wantPerf) {
    const who = [...pids, pg.pid, ...lib.descendants(pg.pid)].join(',');
    perf = spawn('perf', ['record', '-F', '499', '-o', perfData, '-p', who], { stdio: 'ignore' });
  }
  const base = opBase(nodes);
  try {
    results.ops = await measured([...base, '--prefix', 'opsm'], sampler);
    note('wsync cluster ops, every room on both nodes', results.ops);
    results.opsSplit = await measured([...base, '--alt-rooms', '--prefix', 'opsr'], sampler);
    note('wsync cluster ops, each room on one node', results.opsSplit);
  } finally {
    if (perf) await new Promise((resolve) => { perf.once('exit', resolve); perf.kill('SIGINT'); });
  }
  if (perf) {
    const rep = spawnSync('perf', ['report', '-i', perfData, '--stdio', '--sort', 'comm,dso,symbol',
      '--percent-limit', '0.7'], { encoding: 'utf8', maxBuffer: 64 << 20 });
    results.perf = rep.stdout.split('\n').filter((l) => /^\s+\d/.test(l)).map((l) => l.replace(/(\s+-)+\s*$/, '')).slice(0, 30);
  }
}

async function sqlitePart() {
  const single = await startServer(null, WSYNC_ARGS, { echo: false });
  cleanups.push(() => single.stop());
  try {
    results.sqlite = await measured(['--port', String(single.port), '--server-pid', String(single.pid),
      '--prefix', 'ops1', ...opArgs], async () => null);
    note('wsync single node (SQLite) ops', results.sqlite);
  } finally {
    await single.stopChecked();
  }
}

let redis_ = null; // for the samplers' Redis CPU

async function main() {
  if (!fs.existsSync(BENCH)) throw new Error(`${BENCH} is missing: make build/wsync-bench`);
  fs.mkdirSync(out, { recursive: true });
  const t0 = Date.now();
  const redis = await lib.startRedis();
  redis_ = redis;
  cleanups.push(() => redis.stop());
  try {
    if (runPeer) await part('Socket.IO fan-out', () => socketioPart(redis));
    await part('wsync cluster', () => clusterPart(redis));
    if (only.includes('b')) await part('wsync single node', sqlitePart);
  } finally {
    await redis.stop();
  }
  results.elapsed_s = (Date.now() - t0) / 1e3;
}

// ---- report --------------------------------------------------------------------

const fmt = (v, d = 0) => (v == null || Number.isNaN(v) ? '-' : Number(v).toLocaleString('en-US', {
  minimumFractionDigits: d, maximumFractionDigits: d }));
const ms = (us) => (us == null ? null : us / 1e3);

// The machine's busy CPU that is none of ours (not the generator, the nodes,
// PostgreSQL or Redis, nor interrupts): other work on a shared machine.
function foreign(r) {
  const o = r?.machine?.other_cpu_pct;
  if (o == null) return null;
  const x = r.outside;
  const secs = x?.s1.t ? Number(x.s1.t - x.s0.t) / 1e9 : DURATION;
  const pgPct = x?.s1.pg != null ? (x.s1.pg - x.s0.pg) / secs * 100 : 0;
  const redisPct = x?.s1.redis != null ? (x.s1.redis - x.s0.redis) / secs * 100 : 0;
  return Math.max(0, o - pgPct - redisPct);
}

function table() {
  const rows = [];
  // A run that lost, doubled or reordered messages has no figures here.
  const good = (r) => (r && !r.failed ? r : null);
  const pair = (x) => (x && (good(x.max) || good(x.paced)) ? { max: good(x.max), paced: good(x.paced) } : null);
  const w = pair(results.wsync);
  const s = pair(results.sio);
  const row = (name, a, b, d, better) => {
    const ratio = a != null && b != null && b !== 0 && better !== 'noise' ? a / b : null;
    rows.push(`| ${name} | ${fmt(a, d)} | ${fmt(b, d)} | ${ratio == null ? '-' : `${ratio.toFixed(2)}x`}${
      better ? ` (${better})` : ''} |`);
    return ratio;
  };
  const out = [];
  let target = [];
  if (w || s) {
    out.push(`(a) cross-node fan-out: 1 publisher on node A, ${SUBS} subscribers on node B, 64 B ephemeral`);
    out.push('| figure | wsync | Socket.IO + redis-adapter | wsync / Socket.IO |', '|---|---:|---:|---:|');
    const r1 = row('deliveries/s, max rate', w?.max?.deliveries_per_s, s?.max?.deliveries_per_s, 0, 'higher is better');
    const cpu = (r) => r?.server?.cpu_us_per_delivery;
    row('nodes CPU us per delivery, max rate', cpu(w?.max), cpu(s?.max), 3, 'lower is better');
    const redisUs = (r) => (r?.outside && r.deliveries ? (r.outside.s1.redis - r.outside.s0.redis) * 1e6 / r.deliveries : null);
    row('Redis CPU us per delivery, max rate', redisUs(w?.max), redisUs(s?.max), 3, 'lower is better');
    row('latency p50 ms at 100 msg/s', ms(w?.paced?.latency_us.p50), ms(s?.paced?.latency_us.p50), 2, 'lower is better');
    const r2 = row('latency p99 ms at 100 msg/s', ms(w?.paced?.latency_us.p99), ms(s?.paced?.latency_us.p99), 2, 'lower is better');
    row('nodes CPU us per delivery at 100 msg/s', cpu(w?.paced), cpu(s?.paced), 3, 'lower is better');
    row('CPU % of processes outside the benchmark, max rate', foreign(w?.max), foreign(s?.max), 0, 'noise');
    rows.forEach((r) => out.push(r));
    rows.length = 0;
    if (r1 != null) target.push(`deliveries/s >= 10x Socket.IO: ${r1.toFixed(2)}x ${r1 >= 10 ? 'MET' : 'NOT MET'}`);
    if (r2 != null) target.push(`p99 at 100 msg/s <= 0.5x Socket.IO: ${r2.toFixed(2)}x ${r2 <= 0.5 ? 'MET' : 'NOT MET'}`);
  }
  const o = good(results.ops);
  const o2 = good(results.opsSplit);
  const oN = good(results.opsNoFwd);
  const oT = good(results.opsTrim);
  const q = good(results.sqlite);
  if (o || o2 || oN || oT || q) {
    out.push('', `(b) durable ops (op set, 64 B), 50 writers on 10 rooms, ${OP_WINDOW} ops in flight each; cluster: PostgreSQL store, Redis bus, 2 nodes`);
    out.push('| figure | cluster, every room on both nodes | cluster, each room on one node |' +
      ' cluster, every room on both nodes, --forward-ops off | cluster, each room on one node, rooms being trimmed (--history-ops 1000) |' +
      ' single node (SQLite) | cluster (both) / single | cluster (one) / single | cluster (both, off) / single |' +
      ' cluster (one, trimmed) / single |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    const row3 = (name, get, d, noRatio = false) => {
      const [a, b, n, t, c] = [o, o2, oN, oT, q].map((r) => (r ? get(r) : null));
      const ratio = (x) => (x != null && c && !noRatio ? `${(x / c).toFixed(2)}x` : '-');
      out.push(`| ${name} | ${fmt(a, d)} | ${fmt(b, d)} | ${fmt(n, d)} | ${fmt(t, d)} | ${fmt(c, d)} | ${ratio(a)} | ${ratio(b)} |` +
        ` ${ratio(n)} | ${ratio(t)} |`);
    };
    row3('acked ops/s', (r) => r.acks_per_s, 0);
    row3('ack latency p50 ms', (r) => ms(r.ack_latency_us.p50), 2);
    row3('ack latency p99 ms', (r) => ms(r.ack_latency_us.p99), 2);
    row3('deliveries/s (ops to the rooms\' members)', (r) => r.deliveries_per_s, 0);
    row3('wsync CPU us per acked op (all nodes)', (r) => r.server?.cpu_us_per_delivery, 3);
    row3('ops re-sent after stale', (r) => r.stale_resends ?? 0, 0);
    const x = (r) => r.outside;
    const secs = (r) => (x(r) ? Number(x(r).s1.t - x(r).s0.t) / 1e9 : 0);
    const tps = (r) => (x(r) && secs(r) ? (x(r).s1.xact - x(r).s0.xact) / secs(r) : null);
    row3('PostgreSQL transactions/s (xact_commit, reported up to 1 s late)', tps, 0);
    const wtps = (r) => (x(r) && secs(r) ? (x(r).s1.xid - x(r).s0.xid - 1) / secs(r) : null);
    row3('PostgreSQL writing transactions/s (transaction ids)', wtps, 0);
    row3('acked ops per writing transaction', (r) => (wtps(r) ? r.acks_per_s / wtps(r) : null), 1);
    row3('PostgreSQL transactions per acked op', (r) => (tps(r) && r.acks_per_s ? tps(r) / r.acks_per_s : null), 3);
    row3('PostgreSQL CPU us per acked op (all backends)',
      (r) => (x(r) && r.acks_per_s ? (x(r).s1.pg - x(r).s0.pg) * 1e6 / (r.acks_per_s * secs(r)) : null), 3);
    const perOp = (k) => (r) => (x(r)?.s1.metrics && r.acks_per_s && secs(r)
      ? (x(r).s1.metrics[k] - x(r).s0.metrics[k]) / (r.acks_per_s * secs(r)) : null);
    row3('rooms read again (reloads) per acked op', perOp('wsync_room_reloads_total'), 3);
    row3('  of which only the items changed since', perOp('wsync_room_reloads_changes_total'), 3);
    row3('  changes read but not usable (read whole again)', perOp('wsync_room_reloads_whole_total'), 3);
    row3('refills from the store per acked op', perOp('wsync_refills_total'), 3);
    row3('entries delivered from the store, not the bus, per acked op', perOp('wsync_refilled_entries_total'), 3);
    row3('batches fenced out (stale) per acked op', perOp('wsync_stale_commits_total'), 4);
    row3('ops forwarded to their room\'s owner per acked op', perOp('wsync_ops_forwarded_total'), 3);
    row3('CPU % of processes outside the benchmark (noise)', foreign, 0, true);
    for (const [name, r] of [['every room on both nodes', o], ['each room on one node', o2],
      ['every room on both nodes, --forward-ops off', oN], ['each room on one node, rooms being trimmed', oT]]) {
      if (r) target.push(`acked ops/s >= 50,000 (cluster, ${name}): ${fmt(r.acks_per_s)} ${r.acks_per_s >= 50000 ? 'MET' : 'NOT MET'}`);
    }
  }
  out.push('', '-: not run, or the run failed (see problems below)');
  if (quick) out.push('', 'targets of issue 13: judged on the full run only (this one is --quick or --check)');
  else if (target.length) out.push('', 'targets of issue 13:', ...target.map((t) => `  ${t}`));
  if (results.perf) out.push('', 'perf during (b), both nodes and PostgreSQL, share of samples (self):', ...results.perf);
  return out.join('\n');
}

function machine() {
  const cpus = os.cpus();
  return `${cpus.length} x ${cpus[0]?.model || '?'}, Linux ${os.release()}, node ${process.version}; load before: ${
    os.loadavg().map((l) => l.toFixed(2)).join(' ')}`;
}

let failed = false;
const head = machine();
try {
  await main();
} catch (err) {
  failed = true;
  process.stderr.write(`cluster: ${err.stack || err}\n`);
} finally {
  for (const c of cleanups.reverse()) await Promise.resolve().then(c).catch(() => {});
}
const text = table();
console.log(`${head}\n\n${text}`);
if (failures.length) console.log(`\nfailed:\n${failures.map((p) => `  ${p}`).join('\n')}`);
if (problems.length) console.log(`\nproblems:\n${problems.map((p) => `  ${p}`).join('\n')}`);
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(path.join(out, 'cluster.json'), `${JSON.stringify({ machine: head, subs: SUBS, opWindow: Number(OP_WINDOW), ...results }, (k, v) =>
  (typeof v === 'bigint' ? Number(v) : v), 2)}\n`);
const bad = failed || failures.length > 0 || problems.length > 0;
if (check) console.log(`cluster check: ${bad ? 'FAILED' : 'ok'}`);
process.exit(failed || (check && bad) ? 1 : 0);
