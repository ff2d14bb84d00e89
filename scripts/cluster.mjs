#!/usr/bin/env node
// cluster.mjs -- `make cluster`: a wsync cluster on this machine, for a
// person to try in a browser (issue 13, docs/CLUSTER.md).
//
// Starts a throwaway PostgreSQL and Redis, three wsync nodes serving the demo
// as `make run` does (--static build/www --echo-endpoint --insecure-demo)
// with --store, --bus and --node-id, each on a free port, and the round-robin
// proxy of tests/e2e/lib/rrproxy.mjs on 127.0.0.1:8080 in front of them:
// every request and WebSocket goes to the next node, never the same one
// twice in a row. Prints the URLs; Ctrl-C stops everything and removes the
// data (temp dirs). Uses the test harness (tests/e2e/lib/cluster.mjs), so it
// needs tests/e2e/node_modules (make www installs it).
//
//   node scripts/cluster.mjs [--listen 127.0.0.1:8080] [--nodes 3]
//                            [--bin build/wsync] [--www build/www] [--verbose]
//                            [-- more wsync serve arguments for every node]
//
// The demo runs with --insecure-demo, which trusts any user name from
// loopback clients only. Behind the proxy every client reaches the nodes
// from 127.0.0.1, so the proxy itself is kept on a loopback address.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const USAGE = `usage: node scripts/cluster.mjs [--listen HOST:PORT] [--nodes N] [--bin PATH] [--www DIR] [--verbose] [-- wsync args]
  --listen HOST:PORT  the round-robin proxy's address, loopback only (default 127.0.0.1:8080)
  --nodes N           how many wsync nodes (default 3)
  --bin PATH          the wsync binary (default build/wsync)
  --www DIR           the demo's files (default build/www, made by make www)
  --verbose           print every node's log, each line prefixed with its node id
  -- ARGS             more arguments for every node's wsync serve`;

function parseArgs(argv) {
  const o = { listen: '127.0.0.1:8080', nodes: 3, bin: 'build/wsync', www: 'build/www', verbose: false, extra: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--') {
      o.extra = argv.slice(i + 1);
      break;
    } else if (a === '--listen') o.listen = value();
    else if (a === '--nodes') o.nodes = Number(value());
    else if (a === '--bin') o.bin = value();
    else if (a === '--www') o.www = value();
    else if (a === '--verbose') o.verbose = true;
    else if (a === '--help' || a === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!Number.isInteger(o.nodes) || o.nodes < 1 || o.nodes > 16) throw new Error('--nodes must be 1 to 16');
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(o.listen);
  if (!m || Number(m[2]) > 65535) throw new Error(`--listen wants HOST:PORT, not ${o.listen}`);
  o.host = m[1].replace(/^\[|\]$/g, '');
  o.port = Number(m[2]);
  if (!/^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(o.host)) {
    throw new Error(`--listen ${o.listen}: the demo trusts loopback clients (--insecure-demo) and every client `
      + 'reaches the nodes from the proxy on 127.0.0.1: keep the proxy on a loopback address');
  }
  return o;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (err) {
  console.error(`cluster: ${err.message}\n${USAGE}`);
  process.exit(2);
}

// Our handlers first: the harness then leaves SIGINT and SIGTERM to us and
// only reaps what is left if this process exits without stopping it.
let cluster = null;
let proxy = null;
let stopping = false;
async function shutdown(why) {
  if (stopping) {
    console.error('cluster: stopping at once');
    process.exit(130); // the harness's exit hook kills what is left
  }
  stopping = true;
  console.error(`\ncluster: ${why}: stopping the proxy, the nodes, Redis and PostgreSQL`);
  let code = 0;
  try {
    if (proxy) {
      console.error(`cluster: requests and WebSockets per node: ${proxy.counts.map((n, i) => `node-${i + 1} ${n}`).join(', ')}`);
      await proxy.close();
    }
    if (cluster) await cluster.stop();
    console.error('cluster: stopped');
  } catch (err) {
    console.error(`cluster: ${err.message}`);
    code = 1;
  }
  process.exit(code);
}
process.on('SIGINT', () => shutdown('Ctrl-C'));
process.on('SIGTERM', () => shutdown('SIGTERM'));

// server.mjs reads WSYNC_BIN (relative to tests/e2e) when it is loaded.
process.env.WSYNC_BIN = path.resolve(opts.bin);
const { startCluster } = await import('../tests/e2e/lib/cluster.mjs');
const { startRrProxy } = await import('../tests/e2e/lib/rrproxy.mjs');

const www = path.resolve(opts.www);
try {
  console.error(`cluster: starting PostgreSQL, Redis and ${opts.nodes} nodes of ${path.relative(repo, process.env.WSYNC_BIN) || process.env.WSYNC_BIN}`);
  cluster = await startCluster(opts.nodes, { args: ['--static', www, '--echo-endpoint', '--insecure-demo', ...opts.extra] });
  proxy = await startRrProxy({ backends: cluster.nodes, host: opts.host, port: opts.port });
} catch (err) {
  console.error(`cluster: ${err.code === 'EADDRINUSE' ? `${opts.listen} is in use (--listen picks another address)` : err.message}`);
  if (cluster) await cluster.stop().catch((e) => console.error(`cluster: ${e.message}`));
  process.exit(1);
}

for (const node of cluster.nodes) {
  const proc = node.srv.proc;
  if (opts.verbose) {
    const prefix = (chunk) => chunk.replace(/^(?=.)/gm, `[${node.nodeId}] `);
    process.stderr.write(prefix(node.stderr));
    proc.stderr.on('data', (d) => process.stderr.write(prefix(d)));
  }
  proc.on('exit', (code, sig) => {
    if (stopping) return;
    console.error(`cluster: ${node.nodeId} exited (${sig || code}); the proxy answers 502 on its turns. Its last log lines:\n`
      + node.stderr.split('\n').slice(-15).join('\n'));
  });
}

const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
const lines = [
  '',
  `  open        http://${host}:${proxy.port}/   (round robin: each request and WebSocket to the next node)`,
  ...cluster.nodes.map((n) => `  ${n.nodeId.padEnd(10)}  ${n.url}/   (pid ${n.pid})`),
  `  postgres    ${cluster.pg.url}   (psql -h 127.0.0.1 -p ${cluster.pg.port} -U ${cluster.pg.user} ${cluster.pg.database})`,
  `  redis       ${cluster.redis.url}   (redis-cli -p ${cluster.redis.port})`,
  '',
  '  Ctrl-C stops everything and removes the data.',
  '',
];
console.log(lines.join('\n'));
