// idle_memory.mjs -- user-space memory per idle WebSocket connection.
//
// Starts `wsync serve` on a free loopback port, opens N WebSocket
// connections to /v1/echo with raw sockets (a minimal client, so the client
// side stays cheap), waits until the server reports them all, and reads the
// server's resident memory from /proc/<pid>/status before and after:
//   bytes per connection = (VmRSS after - VmRSS before) / N
// Kernel socket buffers are not in VmRSS; this is the server's own memory.
//
// usage: node bench/idle_memory.mjs [--bin build/wsync] [--n 10000]
import { spawn } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import crypto from 'node:crypto';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const bin = opt('bin', new URL('../build/wsync', import.meta.url).pathname);
const N = Number(opt('n', 10000));
const json = args.includes('--json');

function rssKiB(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(s)[1]);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function start() {
  const dir = fs.mkdtempSync('/tmp/wsync-mem-');
  const p = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--echo-endpoint', '--data-dir', dir,
    '--idle-timeout', '10m', '--ping-interval', '10m'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const port = await new Promise((resolve, reject) => {
    p.stderr.on('data', (d) => {
      err += d;
      const m = /listening on http:\/\/[^:]+:(\d+)/.exec(err);
      if (m) resolve(Number(m[1]));
    });
    p.on('exit', (code) => reject(new Error(`server exited ${code}: ${err}`)));
  });
  return { p, port, dir };
}

function connect(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const key = crypto.randomBytes(16).toString('base64');
    let got = '';
    s.on('connect', () => s.write(`GET /v1/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
    const onData = (d) => {
      got += d;
      if (got.includes('\r\n\r\n')) {
        s.off('data', onData);
        if (got.startsWith('HTTP/1.1 101')) resolve(s);
        else reject(new Error(got.split('\r\n')[0]));
      }
    };
    s.on('data', onData);
    s.on('error', reject);
  });
}

async function heap(port) {
  const r = await fetch(`http://127.0.0.1:${port}/healthz`);
  return (await r.json()).heap_bytes;
}

const srv = await start();
await sleep(200);
const before = rssKiB(srv.p.pid);
const heapBefore = await heap(srv.port);
const socks = [];
const t0 = process.hrtime.bigint();
const BATCH = 200;
for (let i = 0; i < N; i += BATCH) {
  const n = Math.min(BATCH, N - i);
  socks.push(...(await Promise.all(Array.from({ length: n }, () => connect(srv.port)))));
}
const connectMs = Number(process.hrtime.bigint() - t0) / 1e6;
// past one server tick, so per-connection leftovers of the handshake are gone
await sleep(1500);
const after = rssKiB(srv.p.pid);
const heapAfter = await heap(srv.port);
const perConn = ((after - before) * 1024) / N;
const res = { server: 'wsync', connections: N, rss_before_kib: before, rss_after_kib: after,
  bytes_per_connection: Math.round(perConn), heap_bytes_per_connection: Math.round((heapAfter - heapBefore) / N),
  connect_ms: Math.round(connectMs) };
console.log(json ? JSON.stringify(res) : `wsync: ${N} idle WebSocket connections: RSS ${before} KiB -> ${after} KiB = ${res.bytes_per_connection} bytes/connection (malloc'd: ${res.heap_bytes_per_connection} bytes/connection; connected in ${res.connect_ms} ms)`);
for (const s of socks) s.destroy();
srv.p.kill('SIGTERM');
await new Promise((r) => srv.p.on('exit', r));
fs.rmSync(srv.dir, { recursive: true, force: true });
