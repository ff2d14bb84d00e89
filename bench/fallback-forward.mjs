// fallback-forward.mjs -- what forwarding costs the HTTP fallbacks on a
// cluster (src/sync/forward.h): a POST /v1/send sent to the node its session
// lives on, against the same request sent to another node, which forwards
// it over Redis and answers with what comes back. Three nodes on one
// PostgreSQL and one Redis (tests/e2e/lib/cluster.mjs), one session made by
// a hello on node 1; each round sends `n` sequential pings (one request at a
// time, keep-alive) to node 1 (direct) and then to node 2 (forwarded),
// alternating direct and forwarded rounds (A B A B ...) so a change in the
// machine's load hits both alike. Reported: mean and p99 latency of each,
// and the forwarded/direct ratio.
//
// usage: node bench/fallback-forward.mjs [--rounds 4] [--n 500]
// (WSYNC_BIN as for the e2e tests; default build/wsync.)
import http from 'node:http';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
process.env.WSYNC_BIN ||= path.join(root, 'build', 'wsync');
const { startCluster } = await import(path.join(root, 'tests/e2e/lib/cluster.mjs'));
const { token } = await import(path.join(root, 'tests/e2e/lib/sync.mjs'));

const arg = (name, d) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : d;
};
const ROUNDS = arg('rounds', 4);
const N = arg('n', 500);

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function post(port, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(body));
    const req = http.request({ host: '127.0.0.1', port, path: '/v1/send', method: 'POST', agent,
      headers: { 'Content-Type': 'application/json', 'Content-Length': data.length, ...headers } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

async function round(port, session) {
  const times = [];
  for (let i = 0; i < N; i++) {
    const t0 = process.hrtime.bigint();
    const r = await post(port, { type: 'ping', id: i }, { 'Wsync-Session': session });
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (r.status !== 202) throw new Error(`ping: ${r.status} ${r.text}`);
  }
  return times;
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { mean: s.reduce((a, b) => a + b, 0) / s.length, p99: s[Math.floor(s.length * 0.99)] };
};

const cl = await startCluster(3, {});
try {
  await new Promise((r) => setTimeout(r, 1500)); // the nodes hear each other
  const [a, b] = cl.nodes;
  const w = await post(a.port, { type: 'hello', v: 1, token: token('bench'), device: 'bench-1' });
  const session = JSON.parse(w.text).session;
  if (!session.startsWith(`${a.nodeId}.`)) throw new Error(`session ${session} is not node 1's`);
  const direct = [];
  const forwarded = [];
  await round(a.port, session); // warm-up, both ways
  await round(b.port, session);
  for (let k = 0; k < ROUNDS; k++) {
    direct.push(...await round(a.port, session));
    forwarded.push(...await round(b.port, session));
  }
  const d = stats(direct);
  const f = stats(forwarded);
  const ms = (x) => x.toFixed(3);
  console.log(`POST /v1/send ping, ${ROUNDS} x ${N} sequential requests each way`);
  console.log(`direct    (node of the session): mean ${ms(d.mean)} ms, p99 ${ms(d.p99)} ms`);
  console.log(`forwarded (another node, Redis): mean ${ms(f.mean)} ms, p99 ${ms(f.p99)} ms`);
  console.log(`forwarded / direct: mean ${(f.mean / d.mean).toFixed(2)}x, p99 ${(f.p99 / d.p99).toFixed(2)}x`);
} finally {
  agent.destroy();
  await cl.stop().catch((e) => console.error(`cluster stop: ${e.message.split('\n')[0]}`));
}
