// stream.mjs -- what a big snapshot costs everybody else (docs/PERFORMANCE.md,
// "Large snapshots"): 20 other rooms each have a sender and a receiver
// exchanging ephemeral publishes (one every 10 ms per room; the latency is
// send -> receipt by the other connection); meanwhile one client joins a
// room holding 10 MB (200 items of 50 kB) again and again (in a process of
// its own), reading every
// snapshot to its end. Latency percentiles of the other rooms, with the
// joins and without them (the baseline), for each binary given.
//
// usage: node bench/stream.mjs [--before PATH] [--after PATH] [--duration 5] [--repeat 1]
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const require = createRequire(path.join(root, 'tests', 'e2e', 'package.json'));
const WebSocket = require('ws');

const argv = process.argv.slice(2);
const optv = (n, d) => {
  const i = argv.indexOf(`--${n}`);
  return i >= 0 ? argv[i + 1] : d;
};
const DURATION = Number(optv('duration', 5)) * 1000;
const REPEAT = Number(optv('repeat', 1));
const ROOMS = 20;
const binaries = [];
if (optv('before')) binaries.push(['before', path.resolve(optv('before'))]);
binaries.push(['after', path.resolve(optv('after', path.join(root, 'build', 'wsync')))]);

const SECRET = 'bench-stream-secret-0123456789abcdef';
const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
function token(sub) {
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600, grants: { '*': 'rw' } })}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

function startServer(bin) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-bench-stream-'));
  const proc = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dir, '--auth-secret', SECRET,
    '--rate', '10000000', '--burst', '10000000', '--max-queued-bytes', '64M'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  return new Promise((resolve, reject) => {
    proc.stderr.setEncoding('utf8').on('data', (d) => {
      err += d;
      const m = /listening on https?:\/\/([0-9.]+):(\d+)/.exec(err);
      if (m) resolve({ proc, dir, url: `ws://${m[1]}:${m[2]}/v1/ws` });
    });
    proc.on('exit', (code) => reject(new Error(`${bin} exited (${code}):\n${err}`)));
  });
}

async function stopServer(s) {
  s.proc.removeAllListeners('exit');
  const done = new Promise((r) => s.proc.on('exit', r));
  s.proc.kill('SIGTERM');
  await done;
  fs.rmSync(s.dir, { recursive: true, force: true });
}

async function connect(url, name) {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  const c = { ws, next: 1, pending: new Map(), on: null };
  ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    const p = m.re !== undefined && c.pending.get(m.re);
    if (p) {
      c.pending.delete(m.re);
      p(m);
    } else if (c.on) {
      c.on(m);
    }
  });
  c.request = (msg) => new Promise((res) => {
    const id = c.next++;
    c.pending.set(id, res);
    ws.send(JSON.stringify({ ...msg, id }));
  });
  const w = await c.request({ type: 'hello', v: 1, token: token(name), device: name });
  if (w.type !== 'welcome') throw new Error(JSON.stringify(w));
  return c;
}

const pct = (a, p) => a[Math.min(a.length - 1, Math.floor(p * a.length))];

async function runOne(bin, withJoins) {
  const srv = await startServer(bin);
  const big = 'doc:big';
  const filler = await connect(srv.url, 'filler');
  await filler.request({ type: 'join', room: big });
  for (let i = 0; i < 200; i += 20) {
    const acks = [];
    for (let k = i; k < i + 20; k++) {
      acks.push(filler.request({ type: 'op', room: big, cid: `f${k}`, op: { kind: 'set', item: `item-${k}`, fields: { body: 'x'.repeat(50000) } } }));
    }
    await Promise.all(acks);
  }
  filler.ws.terminate();
  const pairs = [];
  for (let i = 0; i < ROOMS; i++) {
    const room = `chat:${i}`;
    const a = await connect(srv.url, `s${i}`);
    const b = await connect(srv.url, `r${i}`);
    await a.request({ type: 'join', room });
    await b.request({ type: 'join', room });
    pairs.push({ a, b, room });
  }
  const lat = [];
  let stop = false, measuring = false, joins;
  // Each room: one ephemeral publish every 10 ms (2,000 messages/s in all),
  // a light load whose own latency is well below a millisecond.
  const timers = [];
  for (const [i, p] of pairs.entries()) {
    p.b.on = (m) => {
      if (m.type === 'message' && measuring) lat.push(performance.now() - m.data.t);
    };
    setTimeout(() => timers.push(setInterval(() => {
      p.a.ws.send(JSON.stringify({ type: 'publish', room: p.room, ephemeral: true, data: { t: performance.now() } }));
    }, 10)), i / 2);
  }
  // The joiner runs in a process of its own: parsing 10 MB of JSON would
  // otherwise stall this process's clocks and charge the server for it.
  const child = withJoins
    ? spawn(process.execPath, [new URL(import.meta.url).pathname, '--joiner', srv.url], { stdio: ['ignore', 'pipe', 'inherit'] })
    : null;
  const childOut = child ? new Promise((res) => {
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    child.on('exit', () => res(out));
  }) : Promise.resolve('0');
  await new Promise((r) => setTimeout(r, 1000));
  measuring = true;
  await new Promise((r) => setTimeout(r, DURATION));
  measuring = false;
  stop = true;
  for (const t of timers) clearInterval(t);
  if (child) child.kill('SIGTERM');
  joins = Number((await childOut).trim().split('\n').pop()) || 0;
  for (const p of pairs) { p.a.ws.terminate(); p.b.ws.terminate(); }
  await stopServer(srv);
  lat.sort((x, y) => x - y);
  return { n: lat.length, joins, p50: pct(lat, 0.5), p99: pct(lat, 0.99), max: lat[lat.length - 1] };
}

if (optv('joiner')) {
  // The child: join the big room again and again, print the count on
  // SIGTERM. Big messages are not parsed (only searched), so that this
  // process takes as little of the machine's CPU from the server as it can.
  const ws = new WebSocket(optv('joiner'), { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  let joins = 0, next = null;
  process.on('SIGTERM', () => {
    process.stdout.write(`${joins}\n`, () => process.exit(0));
  });
  ws.on('message', (data) => {
    const head = data.subarray(0, 40).toString();
    let done = false;
    if (head.startsWith('{"type":"joined"')) done = !data.includes('"more":true');
    else if (head.startsWith('{"type":"snapshot"')) done = data.includes('"more":false');
    else if (head.startsWith('{"type":"welcome"') || head.startsWith('{"type":"left"')) done = true;
    if (done && next) {
      const n = next;
      next = null;
      n();
    }
  });
  const step = (msg) => new Promise((res) => {
    next = res;
    ws.send(JSON.stringify(msg));
  });
  await step({ type: 'hello', v: 1, token: token('joiner'), device: 'joiner' });
  for (;;) {
    await step({ type: 'join', room: 'doc:big' });
    joins++;
    await step({ type: 'leave', room: 'doc:big' });
  }
}

const rows = [];
for (let r = 0; r < REPEAT; r++) {
  for (const [key, bin] of binaries) {
    for (const withJoins of [false, true]) {
      const res = await runOne(bin, withJoins);
      const label = `${key}, ${withJoins ? 'joining the 10 MB room in a loop' : 'no big joins'}`;
      rows.push([label, res]);
      console.error(`${label}: ${JSON.stringify(res)}`);
    }
  }
}
console.log('| server, load | other rooms\' messages | big joins | p50 ms | p99 ms | max ms |');
console.log('|---|---:|---:|---:|---:|---:|');
for (const [label, r] of rows) {
  console.log(`| ${label} | ${r.n} | ${r.joins} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.max.toFixed(2)} |`);
}
