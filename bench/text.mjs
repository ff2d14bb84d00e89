// text.mjs -- collaborative text under load (docs/PERFORMANCE.md, "Text
// fields"): E editors on ONE text field of 1 KB, 100 KB and 1 MB, each keeping
// a window of text ops in flight (alternating a one-character insert and a
// one-character delete, so the field keeps its size), counting acked ops per
// second. Run against two binaries in the same run, so the ratio compares
// like with like on this machine at this moment: --before (e.g. a build of
// the commit before the rope) and --after (build/wsync by default).
//
// usage: node bench/text.mjs [--before PATH] [--after PATH] [--sizes 1K,100K,1M]
//          [--editors 8] [--window 8] [--warmup 1] [--duration 5] [--repeat 1]
// The editors run in this one Node.js process: on the 1 KB field the
// generator may be the limit (its CPU % is printed), which makes the ratio
// 1 MB / 1 KB look worse, never better, than the server alone would.
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
const SIZES = optv('sizes', '1K,100K,1M').split(',');
const EDITORS = Number(optv('editors', 8));
const WINDOW = Number(optv('window', 8));
const WARMUP = Number(optv('warmup', 1)) * 1000;
const DURATION = Number(optv('duration', 5)) * 1000;
const REPEAT = Number(optv('repeat', 1));
const binaries = [];
if (optv('before')) binaries.push(['before', path.resolve(optv('before'))]);
binaries.push(['after', path.resolve(optv('after', path.join(root, 'build', 'wsync')))]);

const SECRET = 'bench-text-secret-0123456789abcdef';
const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
function token(sub) {
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600, grants: { '*': 'rw' } })}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}
const bytesOf = (s) => Number(s.replace(/[KM]$/i, '')) * ({ K: 1024, M: 1024 * 1024 }[s.slice(-1).toUpperCase()] || 1);

// Server limits wide enough for a 1 MB field on both binaries (before the
// rope, a text field was limited by --max-field-size and --max-item-size).
const SERVER_ARGS = ['--auth-secret', SECRET, '--rate', '10000000', '--burst', '10000000',
  '--max-field-size', '4M', '--max-item-size', '8M', '--max-message-size', '8M'];

function startServer(bin) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-bench-text-'));
  const proc = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dir, ...SERVER_ARGS],
    { stdio: ['ignore', 'ignore', 'pipe'] });
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

/** A connection with request/reply by id; others: broadcasts (ignored unless asked). */
async function connect(url, name) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  const c = { ws, next: 1, pending: new Map(), onReply: null };
  ws.on('message', (data) => {
    const s = data.toString();
    if (s.startsWith('{"type":"op"')) return; // another editor's op: not needed here
    const m = JSON.parse(s);
    if (m.re === undefined) return;
    const p = c.pending.get(m.re);
    if (p) {
      c.pending.delete(m.re);
      p(m);
    } else if (c.onReply) {
      c.onReply(m);
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

async function runOne(bin, size) {
  const srv = await startServer(bin);
  const room = 'bench:text';
  const setup = await connect(srv.url, 'setup');
  await setup.request({ type: 'join', room });
  const n = bytesOf(size);
  const set = await setup.request({ type: 'op', room, cid: 's.0', op: { kind: 'set', item: 'doc', fields: { body: 'ab'.repeat(n / 2) } } });
  if (set.type !== 'ack') throw new Error(JSON.stringify(set));
  const first = await setup.request({ type: 'op', room, cid: 's.1', op: { kind: 'text', item: 'doc', field: 'body', rev: 0, ops: ['x'] } });
  if (first.type !== 'ack') throw new Error(JSON.stringify(first));
  let rev = first.rev;
  const editors = [];
  for (let i = 0; i < EDITORS; i++) {
    const c = await connect(srv.url, `ed${i}`);
    await c.request({ type: 'join', room });
    editors.push(c);
  }
  let acked = 0, errors = 0, measuring = false, stop = false;
  let k = 0;
  const send = (c) => {
    const id = c.next++;
    const p = 1 + Math.floor(Math.random() * (n / 2));
    const ops = (k++ & 1) ? [p, { d: 1 }] : [p, 'y'];
    c.ws.send(JSON.stringify({ type: 'op', room, id, cid: `c${id}`, op: { kind: 'text', item: 'doc', field: 'body', rev, ops } }));
  };
  for (const c of editors) {
    c.onReply = (m) => {
      if (m.type === 'ack') {
        if (m.rev > rev) rev = m.rev;
        if (measuring) acked++;
      } else {
        errors++;
        if (m.rev > rev) rev = m.rev;
      }
      if (!stop) send(c);
    };
  }
  for (const c of editors) for (let w = 0; w < WINDOW; w++) send(c);
  await new Promise((r) => setTimeout(r, WARMUP));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  measuring = true;
  await new Promise((r) => setTimeout(r, DURATION));
  measuring = false;
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  stop = true;
  await new Promise((r) => setTimeout(r, 300));
  for (const c of [setup, ...editors]) c.ws.terminate();
  await stopServer(srv);
  return { ops_per_s: Math.round(acked / secs), errors, gen_cpu_pct: Math.round((cpu.user + cpu.system) / 1e4 / secs) };
}

const results = {};
for (let r = 0; r < REPEAT; r++) {
  for (const size of SIZES) {
    for (const [key, bin] of binaries) {
      const res = await runOne(bin, size);
      (results[`${key} ${size}`] ||= []).push(res);
      console.error(`${key} ${size}: ${res.ops_per_s} acked ops/s (${res.errors} errors, generator CPU ${res.gen_cpu_pct} %)`);
    }
  }
}
const median = (a) => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)];
const fig = (key, size) => median(results[`${key} ${size}`].map((x) => x.ops_per_s));
const lines = [`| field | ${binaries.map(([k]) => `${k} acked ops/s`).join(' | ')}${binaries.length > 1 ? ' | after / before' : ''} | after / after at ${SIZES[0]} |`,
  `|---|${binaries.map(() => '---:').join('|')}|${binaries.length > 1 ? '---:|' : ''}---:|`];
for (const size of SIZES) {
  const vals = binaries.map(([k]) => fig(k, size));
  const ratio = binaries.length > 1 ? ` ${(fig('after', size) / fig('before', size)).toFixed(2)} |` : '';
  lines.push(`| ${size} | ${vals.join(' | ')} |${ratio} ${(fig('after', size) / fig('after', SIZES[0])).toFixed(2)} |`);
}
console.log(lines.join('\n'));
