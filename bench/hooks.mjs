// hooks.mjs -- the cost of the write validation hook (docs/PERFORMANCE.md
// "Op hook"): durable ops through wsync with --op-hook '*=URL' pointing at a
// local Node receiver that verifies each request's signature and accepts
// it, against the same server without a hook, in the same run, alternating
// (A B A B ...) so a change in the machine's load hits both alike.
//
//   max rate:   50 writers on 10 rooms, op set, --durability normal, each
//               writer at most 64 ops in flight (wsync-bench --window):
//               acknowledged ops/s and ack latency.
//   fixed rate: the same writers at 40 ops/s each (2,000 ops/s in all, a
//               load both variants carry): ack latency p50/p99 at equal load.
// Each with no hook, an op hook asked once per op, and an op hook asked
// about up to 64 waiting ops of a room at once (--op-hook-batch 64).
//
// The receiver runs in this process (node:http, keep-alive), the generator
// is build/wsync-bench; on a 2-core machine the three compete, which is the
// honest cost of a local hook: its CPU is part of the price.
//
// usage: node bench/hooks.mjs [--repeat 3] [--quick] [--no-doc]
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const WSYNC = path.join(root, 'build', 'wsync');
const BENCH = path.join(root, 'build', 'wsync-bench');
const DOC = path.join(root, 'docs', 'PERFORMANCE.md');
const argv = process.argv.slice(2);
const flag = (n) => argv.includes(`--${n}`);
const optv = (n, d) => (argv.indexOf(`--${n}`) >= 0 ? argv[argv.indexOf(`--${n}`) + 1] : d);
const quick = flag('quick');
const repeat = Number(optv('repeat', quick ? 1 : 3));
const timing = quick ? ['--warmup', '1', '--duration', '2'] : ['--warmup', '2', '--duration', '5'];
const SECRET = 'bench-hook-secret-0123456789abcdef0123';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The receiver: checks the signature, answers accept. Counts what it saw. */
async function startReceiver() {
  const seen = { requests: 0, badSignature: 0 };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const want = createHmac('sha256', SECRET).update(`${req.headers['wsync-timestamp']}.`).update(raw).digest('hex');
      seen.requests++;
      if (req.headers['wsync-signature'] !== `v1=${want}`) {
        seen.badSignature++;
        res.writeHead(401).end();
        return;
      }
      const q = JSON.parse(raw); // as a receiver would, to look at the ops
      res.writeHead(200, { 'Content-Type': 'application/json' });
      if (q.action === 'ops') res.end(JSON.stringify({ results: q.ops.map(() => ({ result: 'accept' })) }));
      else res.end('{"result":"accept"}');
    });
  });
  server.keepAliveTimeout = 60000;
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}/hook`, seen, close: () => server.close() };
}

async function startWsync(extra) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-bench-hooks-'));
  const p = spawn(WSYNC, ['serve', '--listen', '127.0.0.1:0', '--data-dir', path.join(dir, 'db'), '--insecure-demo',
    '--rate', '1000000000', '--burst', '1000000000', '--idle-timeout', '10m', '--ping-interval', '10m',
    '--hook-secret', SECRET, ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const port = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`wsync did not start: ${err}`)), 10000);
    p.stderr.on('data', (d) => {
      err += d;
      const m = /listening on http:\/\/[^:]+:(\d+)/.exec(err);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    p.on('exit', (code) => reject(new Error(`wsync exited ${code}: ${err}`)));
  });
  await sleep(300);
  return {
    pid: p.pid,
    port,
    log: () => err,
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

function runBench(args) {
  return new Promise((resolve, reject) => {
    const p = spawn(BENCH, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let so = '';
    let se = '';
    p.stdout.on('data', (d) => (so += d));
    p.stderr.on('data', (d) => (se += d));
    p.on('exit', (code) => {
      try {
        const r = JSON.parse(so.trim().split('\n').pop());
        r.exit = code;
        resolve(r);
      } catch {
        reject(new Error(`wsync-bench ${args.join(' ')} failed (${code}): ${se}${so}`));
      }
    });
  });
}

const SHAPES = [
  { key: 'max', label: 'max rate (window 64 per writer)', args: [] },
  { key: 'fixed', label: 'fixed 40 ops/s per writer (2,000/s)', args: ['--rate', '40'] },
];

async function one(shape, withHook, recv) {
  const srv = await startWsync(withHook ? ['--op-hook', `*=${recv.url}`, ...(withHook === 'batch' ? ['--op-hook-batch', '64'] : [])] : []);
  try {
    const r = await runBench(['--port', String(srv.port), '--server-pid', String(srv.pid), '--json', '--quiet', '--check',
      '--proto', 'wsync', '--mode', 'op', '--conns', '50', '--rooms', '10', '--pubs', '50', '--size', '64',
      ...timing, ...shape.args]);
    if (r.exit !== 0) throw new Error(`wsync-bench --check failed (${withHook ? 'hook' : 'no hook'}): ${JSON.stringify(r).slice(0, 500)}`);
    return r;
  } finally {
    await srv.stop();
  }
}

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : undefined;
};

async function main() {
  if (!fs.existsSync(WSYNC) || !fs.existsSync(BENCH)) throw new Error('build first: make build/wsync build/wsync-bench');
  const recv = await startReceiver();
  const runs = {};
  for (const shape of SHAPES) {
    const variants = ['none', 'hook', 'batch'];
    for (const v of variants) runs[`${shape.key}/${v}`] = [];
    for (let i = 0; i < repeat; i++) {
      for (const v of i % 2 ? [...variants].reverse() : variants) {
        const r = await one(shape, v === 'none' ? false : v, recv);
        runs[`${shape.key}/${v}`].push(r);
        console.error(`hooks: ${shape.key} ${v} run ${i + 1}: ${Math.round(r.acks_per_s)} acks/s, p99 ${(r.ack_latency_us.p99 / 1e3).toFixed(2)} ms`);
      }
    }
  }
  recv.close();
  if (recv.seen.badSignature) throw new Error(`${recv.seen.badSignature} requests had a bad signature`);
  const figs = [
    { name: 'acknowledged ops/s', get: (r) => r.acks_per_s, fmt: (x) => Math.round(x).toLocaleString('en-US') },
    { name: 'ack latency p50 ms', get: (r) => r.ack_latency_us.p50 / 1e3, fmt: (x) => x.toFixed(2) },
    { name: 'ack latency p99 ms', get: (r) => r.ack_latency_us.p99 / 1e3, fmt: (x) => x.toFixed(2) },
    { name: 'wsync CPU us per ack', get: (r) => (r.server.cpu_s * 1e6) / r.acks, fmt: (x) => x.toFixed(2) },
  ];
  const lines = [];
  const cpu = os.cpus();
  lines.push(`Run of ${new Date().toISOString().slice(0, 10)}: ${cpu.length} cores (${cpu[0].model.trim()}), Node ${process.version}; medians of ${repeat} run(s) per variant, alternating. 50 writers on 10 rooms, op set, 64 B, --durability normal.`);
  lines.push('');
  lines.push('| load | figure | no hook | op hook (local Node) | hook / no hook | op hook, --op-hook-batch 64 | batched / no hook |');
  lines.push('|---|---|---|---|---|---|---|');
  for (const shape of SHAPES) {
    for (const f of figs) {
      const a = median(runs[`${shape.key}/none`].map(f.get));
      const b = median(runs[`${shape.key}/hook`].map(f.get));
      const c = median(runs[`${shape.key}/batch`].map(f.get));
      lines.push(`| ${shape.label} | ${f.name} | ${f.fmt(a)} | ${f.fmt(b)} | ${(b / a).toFixed(2)} | ${f.fmt(c)} | ${(c / a).toFixed(2)} |`);
    }
  }
  lines.push(`\nThe receiver answered ${recv.seen.requests.toLocaleString('en-US')} requests, every signature valid.`);
  const block = lines.join('\n');
  console.log(block);
  fs.mkdirSync(path.join(root, 'build', 'bench'), { recursive: true });
  fs.writeFileSync(path.join(root, 'build', 'bench', 'hooks.json'), JSON.stringify(runs, null, 1));
  if (!flag('no-doc')) {
    const doc = fs.readFileSync(DOC, 'utf8');
    const b = '<!-- bench:hooks:begin -->';
    const e = '<!-- bench:hooks:end -->';
    if (doc.includes(b)) {
      fs.writeFileSync(DOC, doc.slice(0, doc.indexOf(b) + b.length) + '\n' + block + '\n' + doc.slice(doc.indexOf(e)));
    }
  }
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
