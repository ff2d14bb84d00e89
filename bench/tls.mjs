// tls.mjs -- make bench, the TLS scenario (docs/PERFORMANCE.md "TLS"):
// wsync with --tls-cert/--tls-key against the Node `ws` peer over node:https
// (bench/peers/server.mjs --tls-cert/--tls-key), same certificate (ECDSA
// P-256, made here with the openssl CLI), same machine, in the same run.
//
//   fan-out: 1 room x 200 subscribers on /v1/broadcast plus 1 publisher (a
//            member too: it gets its own message back), 64 B binary
//            messages, at most WINDOW messages ahead of the slowest member.
//            Deliveries/s counted by the clients, server CPU (utime+stime
//            from /proc) per delivery over the measured interval.
//   idle:    2,000 wss:// connections open and silent; server RSS growth
//            per connection (plain ws:// to wsync as a reference row).
//
// The clients are Node (this process: `ws` over node:tls); wsync-bench, the
// C generator of the other scenarios, has no TLS. With 2 cores the clients'
// decryption competes with the server, so deliveries/s is a property of the
// pair; CPU per delivery is the server's own figure.
//
// usage: node bench/tls.mjs [--repeat 3] [--quick] [--no-doc]
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const out = path.join(root, 'build', 'bench');
const WSYNC = path.join(root, 'build', 'wsync');
const PEERS = path.join(root, 'bench', 'peers');
const WebSocket = createRequire(path.join(PEERS, 'package.json'))('ws');

const argv = process.argv.slice(2);
const flag = (n) => argv.includes(`--${n}`);
const optv = (n, d) => (argv.indexOf(`--${n}`) >= 0 ? argv[argv.indexOf(`--${n}`) + 1] : d);
const quick = flag('quick');
const repeat = Number(optv('repeat', quick ? 1 : 3));
const SUBS = 200;
const IDLE = quick ? 500 : 2000;
const WINDOW = 64;
const WARMUP_MS = quick ? 500 : 2000;
const MEASURE_MS = quick ? 1500 : 5000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

fs.mkdirSync(out, { recursive: true });
const certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-bench-tls-'));
const cert = path.join(certDir, 'cert.pem');
const key = path.join(certDir, 'key.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
  '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'pipe' });
const ca = fs.readFileSync(cert);

async function startServer(kind, tls = true) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-bench-'));
  const t = tls ? ['--tls-cert', cert, '--tls-key', key] : [];
  const args = kind === 'wsync'
    ? ['serve', '--listen', '127.0.0.1:0', '--data-dir', path.join(dir, 'db'), '--echo-endpoint', '--insecure-demo',
      '--idle-timeout', '10m', '--ping-interval', '10m', '--max-connections', '100000', ...t]
    : [path.join(PEERS, 'server.mjs'), '--listen', '127.0.0.1:0', ...t];
  const p = spawn(kind === 'wsync' ? WSYNC : process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${kind} did not start: ${err}`)), 10000);
    p.stderr.on('data', (d) => {
      err += d;
      const m = /listening on https?:\/\/[^:]+:(\d+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    p.on('exit', (code) => reject(new Error(`${kind} exited ${code}: ${err}`)));
  });
  await sleep(300);
  return {
    pid: p.pid,
    url: `${tls ? 'wss' : 'ws'}://127.0.0.1:${port}`,
    async stop() {
      const done = new Promise((r) => p.on('exit', r));
      p.kill('SIGTERM');
      const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(timer);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const TICK_US = 1e6 / 100; // USER_HZ
function cpuUs(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_US;
}
function rssKiB(pid) {
  return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
}

function connect(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, ca });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}
async function connectMany(url, n, batch = 50) {
  const all = [];
  for (let i = 0; i < n; i += batch) all.push(...await Promise.all(Array.from({ length: Math.min(batch, n - i) }, () => connect(url))));
  return all;
}

async function fanout(kind) {
  const srv = await startServer(kind);
  try {
    const url = `${srv.url}/v1/broadcast?room=fan`;
    const subs = await connectMany(url, SUBS);
    const pub = await connect(url);
    const members = [...subs, pub];
    const counts = new Array(members.length).fill(0);
    let sent = 0;
    let total = 0;
    let running = true;
    let scheduled = false;
    const payload = Buffer.alloc(64, 7);
    const pump = () => {
      scheduled = false;
      if (!running) return;
      let min = Infinity;
      for (const c of counts) if (c < min) min = c;
      while (sent - min < WINDOW) {
        pub.send(payload, { binary: true });
        sent++;
      }
    };
    members.forEach((ws, i) => ws.on('message', () => {
      counts[i]++;
      total++;
      if (!scheduled) {
        scheduled = true;
        setImmediate(pump);
      }
    }));
    pump();
    await sleep(WARMUP_MS);
    const d0 = total;
    const c0 = cpuUs(srv.pid);
    const t0 = process.hrtime.bigint();
    await sleep(MEASURE_MS);
    const d1 = total;
    const c1 = cpuUs(srv.pid);
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    running = false;
    for (const ws of members) ws.terminate();
    const deliveries = d1 - d0;
    return { kind, deliveries_per_s: deliveries / secs, cpu_us_per_delivery: (c1 - c0) / deliveries, server_cpu_pct: (c1 - c0) / 1e4 / secs };
  } finally {
    await srv.stop();
  }
}

async function idle(kind, tls) {
  const srv = await startServer(kind, tls);
  try {
    const url = `${srv.url}/v1/broadcast?room=idle`;
    const warm = await connectMany(url, 20);
    await sleep(1500);
    const r0 = rssKiB(srv.pid);
    const conns = await connectMany(url, IDLE, 100);
    await sleep(2500); // past a tick: per-connection write buffers are trimmed
    const r1 = rssKiB(srv.pid);
    for (const ws of [...warm, ...conns]) ws.terminate();
    return { kind, tls, bytes_per_conn: ((r1 - r0) * 1024) / IDLE };
  } finally {
    await srv.stop();
  }
}

const median = (xs) => {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return v.length % 2 ? v[v.length >> 1] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};

const runs = { fan: { wsync: [], node: [] }, idle: { wsync: [], node: [], plain: [] } };
for (let i = 0; i < repeat; i++) {
  for (const kind of ['wsync', 'node']) {
    const r = await fanout(kind);
    runs.fan[kind].push(r);
    console.error(`tls fan-out ${kind}: ${Math.round(r.deliveries_per_s)} deliveries/s, ${r.cpu_us_per_delivery.toFixed(3)} us CPU each`);
  }
  for (const [k, kind, tls] of [['wsync', 'wsync', true], ['node', 'node', true], ['plain', 'wsync', false]]) {
    const r = await idle(kind, tls);
    runs.idle[k].push(r);
    console.error(`idle ${k}: ${Math.round(r.bytes_per_conn)} bytes per connection`);
  }
}
fs.rmSync(certDir, { recursive: true, force: true });

const med = (list, f) => median(list.map(f));
const F = {
  dps: (k) => med(runs.fan[k], (r) => r.deliveries_per_s),
  cpu: (k) => med(runs.fan[k], (r) => r.cpu_us_per_delivery),
  pct: (k) => med(runs.fan[k], (r) => r.server_cpu_pct),
  idle: (k) => med(runs.idle[k], (r) => r.bytes_per_conn),
};
const int = (v) => Math.round(v).toLocaleString('en-US');
const m = { cpus: os.cpus().length, model: os.cpus()[0]?.model?.trim(), kernel: os.release(), node: process.version };
const lines = [
  `Run of ${new Date().toISOString().slice(0, 10)}: ${m.cpus} cores (${m.model}), Linux ${m.kernel}, Node ${m.node}; ` +
    `medians of ${repeat} run(s)${quick ? ' (--quick: reduced sizes)' : ''}. Clients: Node \`ws\` over node:tls in one process.`,
  '',
  '| figure | wsync (TLS) | Node ws peer (TLS) | wsync / peer |',
  '|---|---|---|---|',
  `| fan-out 1 x ${SUBS} (+1 publisher), 64 B: deliveries/s | ${int(F.dps('wsync'))} | ${int(F.dps('node'))} | ${(F.dps('wsync') / F.dps('node')).toFixed(2)} |`,
  `| server CPU us per delivery | ${F.cpu('wsync').toFixed(3)} | ${F.cpu('node').toFixed(3)} | ${(F.cpu('wsync') / F.cpu('node')).toFixed(2)} |`,
  `| server CPU % during the run | ${int(F.pct('wsync'))} | ${int(F.pct('node'))} | - |`,
  `| idle: server RSS bytes per TLS connection (${int(IDLE)} open) | ${int(F.idle('wsync'))} | ${int(F.idle('node'))} | ${(F.idle('wsync') / F.idle('node')).toFixed(2)} |`,
  `| idle: wsync RSS bytes per plain ws:// connection, for reference | ${int(F.idle('plain'))} | | |`,
];
const md = lines.join('\n');
console.log(md);
fs.writeFileSync(path.join(out, 'tls-results.json'), JSON.stringify({ machine: m, repeat, quick, runs }, null, 1));
fs.writeFileSync(path.join(out, 'tls-table.md'), `${md}\n`);
if (!flag('no-doc') && !quick) {
  const doc = path.join(root, 'docs', 'PERFORMANCE.md');
  const b = '<!-- bench:tls:begin -->';
  const e = '<!-- bench:tls:end -->';
  const text = fs.readFileSync(doc, 'utf8');
  if (text.includes(b) && text.includes(e)) {
    fs.writeFileSync(doc, `${text.slice(0, text.indexOf(b) + b.length)}\n${md}\n${text.slice(text.indexOf(e))}`);
  } else {
    console.error('bench: docs/PERFORMANCE.md has no TLS markers; table left in build/bench/tls-table.md');
  }
}
