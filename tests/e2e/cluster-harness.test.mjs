// cluster-harness.test.mjs -- the cluster harness itself (issue 13): the
// throwaway PostgreSQL and Redis of lib/cluster.mjs with their chaos helpers
// (halt and start, kill -9, SIGSTOP and SIGCONT), the exit hook that leaves
// no daemon behind, nodes started with --store, --bus and --node-id, and the
// round-robin proxy of lib/rrproxy.mjs in front of two plain single-node
// servers: GETs, POST bodies, WebSockets, an SSE stream and a long-poll each
// go to the next server in turn, never sticky, streamed live, closed
// together, 502 from a backend that is gone. What each backend received is
// checked on the backend itself (its rooms, its metrics, its count of open
// connections), not only in the proxy's counters. Last, `make cluster`'s
// script: its URLs work and Ctrl-C leaves nothing running.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import test from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { SseParser } from '../../clients/js/transports.js';
import { descendants, freePort, parseCsv, startCluster, startPostgres, startRedis } from './lib/cluster.mjs';
import { startRrProxy } from './lib/rrproxy.mjs';
import { WAIT_MS, WSYNC_BIN, sleep, waitUntil, withTimeout } from './lib/server.mjs';
import { SyncClient, api, closeClients, fetchMetrics, startSyncServer, token } from './lib/sync.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const KEY = 'cluster-harness-api-key';

/** True while pid exists and is not a zombie. */
function alive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

/** The real uid of pid (from /proc), or null when it has exited meanwhile
 * (a backend of an earlier connection may end between listing and reading). */
function uidOf(pid) {
  try {
    return Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
  } catch (e) {
    if (e.code === 'ENOENT' || e.code === 'ESRCH') return null;
    throw e;
  }
}

/** Resolves true when a TCP connection to port is accepted, false when refused. */
function accepts(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** {settled, value, error} of a promise, updated as it settles. */
function watch(p) {
  const w = { settled: false, value: undefined, error: undefined };
  w.done = p.then((v) => { w.value = v; }, (e) => { w.error = e; }).finally(() => { w.settled = true; });
  return w;
}

/** A pause long enough for a live server to answer a local query many times over. */
const PAUSE_PROBE_MS = 400;

test('parseCsv reads psql --csv: quotes, commas, newlines, empty fields', () => {
  assert.deepEqual(parseCsv('a,b\n1,"x,""y""\nz"\n,\n'), [['a', 'b'], ['1', 'x,"y"\nz'], ['', '']]);
  assert.deepEqual(parseCsv(''), []);
  assert.deepEqual(parseCsv('n\r\n3\r\n'), [['n'], ['3']]);
});

test('PostgreSQL: unprivileged, psql, data kept across halt/start, restart, kill -9; pause and resume', async (t) => {
  const pg = await startPostgres({ t });
  assert.match(pg.url, /^postgres:\/\/wsync@127\.0\.0\.1:\d+\/wsync$/);
  assert.equal(new URL(pg.url).port, String(pg.port));
  assert.ok(await accepts(pg.port), 'listening on its port');

  // As root it runs as the postgres user, never as root; otherwise as us.
  const procs = [pg.pid, ...descendants(pg.pid)];
  assert.ok(procs.length >= 3, `postmaster and its helpers: ${procs}`);
  let checked = 0;
  for (const p of procs) {
    const uid = uidOf(p);
    if (uid === null) continue;
    checked++;
    if (process.getuid() === 0) assert.notEqual(uid, 0, `pid ${p} runs as root`);
    else assert.equal(uid, process.getuid());
  }
  assert.ok(checked >= 1 && uidOf(pg.pid) !== null, 'the postmaster itself was checked');

  await pg.psql('CREATE TABLE t (k int PRIMARY KEY, v text)');
  await pg.psql(`INSERT INTO t VALUES (1, 'a,"b"' || chr(10) || 'c'), (2, NULL)`);
  const want = [{ k: '1', v: 'a,"b"\nc' }, { k: '2', v: '' }];
  assert.deepEqual(await pg.psql('SELECT k, v FROM t ORDER BY k'), want);
  await assert.rejects(pg.psql('SELECT nope FROM t'), /nope/, 'an SQL error rejects with its message');

  // halt: the port refuses, psql fails; start: same port, same data.
  const port = pg.port;
  const pid1 = pg.pid;
  await pg.halt();
  assert.equal(pg.running, false);
  assert.equal(alive(pid1), false);
  assert.equal(await accepts(port), false, 'nothing listens while halted');
  await assert.rejects(pg.psql('SELECT 1'));
  await pg.start();
  assert.equal(pg.port, port);
  assert.notEqual(pg.pid, pid1);
  assert.deepEqual(await pg.psql('SELECT k, v FROM t ORDER BY k'), want);

  await pg.restart(200);
  assert.equal(pg.port, port);
  assert.deepEqual(await pg.psql('SELECT k, v FROM t ORDER BY k'), want);

  // kill -9: postmaster and backends die at once; what was committed survives.
  await pg.psql('INSERT INTO t VALUES (3, $$committed just before the crash$$)');
  const before = [pg.pid, ...descendants(pg.pid)];
  await pg.kill9();
  for (const p of before) assert.equal(alive(p), false, `pid ${p} survived kill9`);
  assert.equal(await accepts(port), false);
  await pg.start();
  assert.deepEqual((await pg.psql('SELECT k FROM t ORDER BY k')).map((r) => r.k), ['1', '2', '3']);

  // pause: a query waits (it cannot be answered by a stopped server), then
  // completes on resume.
  await pg.pause();
  const q = watch(pg.psql('SELECT count(*) AS n FROM t'));
  await sleep(PAUSE_PROBE_MS);
  assert.equal(q.settled, false, 'a query was answered while paused');
  await pg.resume();
  await withTimeout(q.done, WAIT_MS, 'the query after resume');
  assert.ifError(q.error);
  assert.deepEqual(q.value, [{ n: '3' }]);

  const dir = pg.dir;
  await pg.stop();
  assert.equal(existsSync(dir), false, 'temp dir removed');
  assert.equal(await accepts(port), false);
});

test('Redis: cli, kill -9 and start on the same port (empty: no persistence), restart, pause and resume', async (t) => {
  const redis = await startRedis({ t });
  assert.match(redis.url, /^redis:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(await redis.cli(['PING']), 'PONG');
  assert.equal(await redis.cli(['SET', 'k', 'v1']), 'OK');
  assert.equal(await redis.cli(['GET', 'k']), 'v1');

  const port = redis.port;
  const pid1 = redis.pid;
  await redis.kill9();
  assert.equal(alive(pid1), false);
  assert.equal(await accepts(port), false, 'nothing listens after kill9');
  await redis.start();
  assert.equal(redis.port, port);
  assert.equal(await redis.cli(['PING']), 'PONG');
  assert.equal(await redis.cli(['GET', 'k']), '', 'nothing persisted');

  await redis.cli(['SET', 'k', 'v2']);
  await redis.restart(100);
  assert.equal(redis.port, port);
  assert.equal(await redis.cli(['EXISTS', 'k']), '0', 'nothing saved at a clean shutdown either');

  await redis.pause();
  const q = watch(redis.cli(['PING']));
  await sleep(PAUSE_PROBE_MS);
  assert.equal(q.settled, false, 'answered while paused');
  await redis.resume();
  await withTimeout(q.done, WAIT_MS, 'PING after resume');
  assert.ifError(q.error);
  assert.equal(q.value, 'PONG');

  const dir = redis.dir;
  await redis.stop();
  assert.equal(existsSync(dir), false);
  assert.equal(await accepts(port), false);
});

test('a restart whose port was taken meanwhile fails with the reason, and works once it is free', async (t) => {
  const [pg, redis] = await Promise.all([startPostgres({ t }), startRedis({ t })]);
  for (const [d, re] of [[pg, /could not (bind|create)/i], [redis, /Address already in use|Could not create server TCP/i]]) {
    await d.halt();
    const squatter = net.createServer();
    await new Promise((resolve, reject) => squatter.once('error', reject).listen(d.port, '127.0.0.1', resolve));
    try {
      await assert.rejects(d.start(), re);
      assert.equal(d.running, false);
    } finally {
      await new Promise((resolve) => squatter.close(resolve));
    }
    await d.start();
    assert.ok(await accepts(d.port));
  }
  assert.deepEqual(await pg.psql('SELECT 1 AS one'), [{ one: '1' }]);
  assert.equal(await redis.cli(['PING']), 'PONG');
});

test('a process that exits without stopping its cluster leaves no daemon, node or temp dir behind', async () => {
  const lib = pathToFileURL(path.join(here, 'lib', 'cluster.mjs')).href;
  const code = `
    import { descendants, startCluster } from ${JSON.stringify(lib)};
    const c = await startCluster(1);
    console.log(JSON.stringify({
      pids: [c.pg.pid, ...descendants(c.pg.pid), c.redis.pid, c.nodes[0].pid],
      dirs: [c.pg.dir, c.redis.dir, c.nodes[0].dataDir],
      ports: [c.pg.port, c.redis.port, c.nodes[0].port],
    }));
    process.exit(3);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { cwd: here, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
  const exit = await withTimeout(new Promise((r) => child.on('close', r)), 60000, 'the child');
  assert.equal(exit, 3, `child failed:\n${err}`);
  const info = JSON.parse(out);
  assert.ok(info.pids.length >= 5, `postmaster, its helpers, redis, wsync: ${info.pids}`);
  await waitUntil(() => info.pids.every((p) => !alive(p)), 'every process of the child to be gone');
  for (const d of info.dirs) assert.equal(existsSync(d), false, `${d} left behind`);
  for (const p of info.ports) assert.equal(await accepts(p), false, `port ${p} still open`);
});

test('startCluster: nodes run with --store, --bus and --node-id; kill -9 and restart of a node; stop cleans up', async (t) => {
  const c = await startCluster(2, { t, args: ['--auth-secret', 'cluster-harness-secret-0123456789ab', '--api-key', KEY] });
  assert.equal(c.nodes.length, 2);
  assert.deepEqual(c.urls(), c.nodes.map((n) => `http://127.0.0.1:${n.port}`));
  for (const [i, n] of c.nodes.entries()) {
    assert.equal(n.nodeId, `node-${i + 1}`);
    const args = n.srv.args;
    const at = (opt) => args[args.indexOf(opt) + 1];
    assert.equal(at('--store'), c.pg.url);
    assert.equal(at('--bus'), c.redis.url);
    assert.equal(at('--node-id'), n.nodeId);
    const cmdline = readFileSync(`/proc/${n.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(cmdline.includes(c.pg.url) && cmdline.includes(c.redis.url), 'the process got the URLs');
    const h = await api(n.url, 'GET', '/healthz');
    assert.equal(h.status, 200);
    assert.equal(h.body.status, 'ok');
  }
  const [n1] = c.nodes;
  const port = n1.port;
  const e = await n1.kill9();
  assert.equal(e.signal, 'SIGKILL');
  assert.equal(n1.running, false);
  assert.equal(await accepts(port), false);
  await n1.start();
  assert.equal(n1.port, port, 'restarted on its port');
  assert.equal((await api(n1.url, 'GET', '/healthz')).status, 200);

  const dirs = [c.pg.dir, c.redis.dir, ...c.nodes.map((n) => n.dataDir)];
  const ports = [c.pg.port, c.redis.port, ...c.nodes.map((n) => n.port)];
  await c.stop();
  for (const d of dirs) assert.equal(existsSync(d), false, `${d} left behind`);
  for (const p of ports) assert.equal(await accepts(p), false, `port ${p} still open`);
});

test('cluster nodes connect to the shared PostgreSQL and Redis', async (t) => {
  const c = await startCluster(2, { t });
  const ms = WAIT_MS;
  await waitUntil(async () => {
    const [{ n }] = await c.pg.psql("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = 'wsync' AND pid <> pg_backend_pid()");
    return Number(n) >= 2;
  }, 'a PostgreSQL connection per node', ms);
  await waitUntil(async () => {
    const list = await c.redis.cli(['CLIENT', 'LIST']);
    return list.split('\n').filter((l) => !/cmd=client/.test(l)).length >= 2;
  }, 'a Redis connection per node', ms);
});

// ---- the round-robin proxy ------------------------------------------------

/** Two plain single-node servers (own SQLite each) with the backend API on, behind one proxy. */
async function pair(t) {
  const args = ['--api-key', KEY, '--rate', '100000', '--burst', '100000'];
  const servers = await Promise.all([startSyncServer(t, args), startSyncServer(t, args)]);
  const proxy = await startRrProxy({ t, backends: servers });
  return { servers, proxy };
}

/** The names of the rooms a backend's store holds (12.8). */
async function roomsOf(url) {
  const r = await api(url, 'GET', '/v1/rooms', { key: KEY });
  assert.equal(r.status, 200, r.text);
  return r.body.rooms.map((x) => x.room).sort();
}

/** Sends GET /healthz through the proxy until its next pick is backend i. */
async function alignTo(proxy, i) {
  while (proxy.next !== i) await api(proxy.url, 'GET', '/healthz');
}

/**
 * A request on a connection of its own, closed after the answer (fetch
 * would keep it open in its pool, and the server would count it).
 * Resolves {status, body (parsed JSON), text}.
 */
function once(url, method, p, { body, headers = {} } = {}) {
  const data = body === undefined ? undefined : JSON.stringify(body);
  return withTimeout(new Promise((resolve, reject) => {
    const r = http.request(`${url}${p}`, {
      method, agent: false,
      headers: { Connection: 'close', ...(data ? { 'Content-Type': 'application/json' } : {}), ...headers },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d) => (text += d)).on('end', () => {
        let json;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, body: json, text });
      });
    });
    r.on('error', reject);
    r.end(data);
  }), WAIT_MS, `${method} ${p}`);
}

/** The TCP connections a server has open besides the one asking (healthz `connections`). */
const connsOf = async (url) => (await once(url, 'GET', '/healthz')).body.connections - 1;

test('proxy: GETs and POST bodies alternate between two servers, never sticky', async (t) => {
  const { servers, proxy } = await pair(t);
  // Each server gets a room of its own, written directly: it tells them apart.
  for (const [i, s] of servers.entries()) {
    assert.equal((await api(s.url, 'POST', `/v1/rooms/mark-${i}/ops`, { key: KEY, body: { op: { kind: 'set', item: 'x', fields: { i } } } })).status, 200);
  }
  for (let k = 0; k < 4; k++) {
    const h = await api(proxy.url, 'GET', '/healthz');
    assert.equal(h.status, 200);
    assert.equal(h.body.status, 'ok');
  }
  assert.deepEqual(proxy.counts, [2, 2]);
  // Who answered: the server the proxy says it picked, turn by turn.
  const seen = [];
  for (let k = 0; k < 4; k++) {
    const r = await api(proxy.url, 'GET', '/v1/rooms', { key: KEY });
    assert.equal(r.status, 200, r.text);
    const marks = r.body.rooms.map((x) => x.room).filter((n) => n.startsWith('mark-'));
    assert.deepEqual(marks, [`mark-${proxy.picks.at(-1).backend}`]);
    seen.push(marks[0]);
  }
  assert.deepEqual(seen, ['mark-0', 'mark-1', 'mark-0', 'mark-1']);
  // POST bodies pass whole: each write creates its room on the server it reached.
  for (let k = 0; k < 4; k++) {
    const big = 'y'.repeat(20000 + k);
    const r = await api(proxy.url, 'POST', `/v1/rooms/post-${k}/ops`, { key: KEY, body: { op: { kind: 'set', item: 'x', fields: { big } } } });
    assert.equal(r.status, 200, r.text);
  }
  assert.deepEqual(await roomsOf(servers[0].url), ['mark-0', 'post-0', 'post-2']);
  assert.deepEqual(await roomsOf(servers[1].url), ['mark-1', 'post-1', 'post-3']);
  const snap = await api(servers[1].url, 'GET', '/v1/rooms/post-3', { key: KEY });
  assert.equal(snap.body.items.x.fields.big.length, 20003);
  assert.deepEqual(proxy.http, [6, 6]);
  assert.deepEqual(proxy.ws, [0, 0]);
});

test('proxy: WebSockets alternate, piped both ways, closed together', async (t) => {
  const { servers, proxy } = await pair(t);
  const clients = [];
  for (let k = 0; k < 4; k++) {
    const c = await SyncClient.connect(proxy.wsUrl, { token: token(`u${k}`), device: `d${k}` });
    clients.push(c);
    await c.join('ws-room');
    await c.set('ws-room', `cid-${k}`, `item-${k}`, { k, pad: 'z'.repeat(30000) });
  }
  assert.deepEqual(proxy.ws, [2, 2]);
  // Each server holds the items of the two clients it was given.
  for (const [i, s] of servers.entries()) {
    const snap = await api(s.url, 'GET', '/v1/rooms/ws-room', { key: KEY });
    assert.deepEqual(Object.keys(snap.body.items).sort(), [`item-${i}`, `item-${i + 2}`]);
    const m = await fetchMetrics(s.url, KEY);
    assert.equal(m.get('wsync_connections{transport="ws"}'), 2);
  }
  // A client sees the broadcasts of its own server only (no cluster here).
  const c0 = clients[0];
  await clients[2].set('ws-room', 'cid-late', 'late', { v: 1 });
  await c0.waitFor((m) => m.type === 'op' && m.op?.item === 'late', 'the broadcast from a client on the same server');
  assert.equal(proxy.active, 4);
  await closeClients(...clients);
  await waitUntil(() => proxy.active === 0, 'the proxy to drop the closed pairs');
  for (const s of servers) {
    await waitUntil(async () => (await fetchMetrics(s.url, KEY)).get('wsync_connections{transport="ws"}') === 0,
      'the server to see its WebSockets closed');
  }
  // A client that drops its TCP connection: the server's side goes too.
  const d = await SyncClient.connect(proxy.wsUrl, { token: token('dropper'), device: 'dd' });
  const on = proxy.picks.at(-1).backend;
  await waitUntil(async () => (await fetchMetrics(servers[on].url, KEY)).get('wsync_connections{transport="ws"}') === 1, 'the upstream');
  await d.drop();
  await waitUntil(async () => (await fetchMetrics(servers[on].url, KEY)).get('wsync_connections{transport="ws"}') === 0,
    'the upstream closed with the client');
});

/** An SSE stream read with fetch through an AbortController: events as they arrive. */
async function openSse(url) {
  const ac = new AbortController();
  const res = await withTimeout(fetch(url, { signal: ac.signal }), WAIT_MS, `GET ${url}`);
  const s = { res, status: res.status, events: [], done: false, failed: null, abort: () => ac.abort() };
  if (res.status !== 200) {
    s.body = await res.json();
    return s;
  }
  const parser = new SseParser((ev) => s.events.push({ ...ev, json: JSON.parse(ev.data) }));
  (async () => {
    const dec = new TextDecoder();
    try {
      for await (const chunk of res.body) parser.feed(dec.decode(chunk, { stream: true }));
      s.done = true;
    } catch (err) {
      s.failed = err;
    }
  })();
  return s;
}

test('proxy: SSE and long-poll streams go to the next server, stay open and live, close with the client', async (t) => {
  const { servers, proxy } = await pair(t);
  const post = (url, body, session) => api(url, 'POST', '/v1/send', { body, headers: session ? { 'Wsync-Session': session } : {} });

  // hello by POST through the proxy: the session lives on the server that got it.
  const hello = await post(proxy.url, { type: 'hello', v: 1, token: token('sse-user'), device: 'sse-dev' });
  assert.equal(hello.status, 200, hello.text);
  const session = hello.body.session;
  const home = proxy.picks.at(-1).backend;
  const other = 1 - home;

  // The very next request goes to the other server, which has no such session.
  assert.equal(proxy.next, other);
  const miss = await openSse(`${proxy.url}/v1/sse?session=${session}&last=0`);
  assert.equal(miss.status, 410);
  assert.equal(miss.body.code, 'session_expired');
  assert.equal(proxy.picks.at(-1).backend, other, 'not sticky');

  await alignTo(proxy, home);
  const sse = await openSse(`${proxy.url}/v1/sse?session=${session}&last=0`);
  assert.equal(sse.status, 200);
  assert.match(sse.res.headers.get('content-type'), /^text\/event-stream/);
  const srv = servers[home];
  await waitUntil(async () => (await connsOf(srv.url)) === 1, 'the stream and nothing else on its server');

  // Upstream straight to the home server; the replies come down through the proxy, live.
  const sent = await once(srv.url, 'POST', '/v1/send', {
    body: [{ type: 'join', id: 'j', room: 'sse-room' }, { type: 'ping', id: 'p' }], headers: { 'Wsync-Session': session },
  });
  assert.equal(sent.status, 202, sent.text);
  await waitUntil(() => sse.events.some((e) => e.json.type === 'pong'), 'pong on the stream');
  assert.ok(sse.events.some((e) => e.json.type === 'joined' && e.json.room === 'sse-room'));
  const w = await SyncClient.connect(srv.wsUrl, { token: token('writer'), device: 'w1' });
  t.after(() => w.close());
  await w.join('sse-room');
  for (let k = 1; k <= 3; k++) {
    await w.set('sse-room', `sse-${k}`, `it-${k}`, { k });
    await waitUntil(() => sse.events.some((e) => e.json.type === 'op' && e.json.op?.item === `it-${k}`), `op ${k} streamed`);
  }
  assert.equal(sse.done, false, 'the stream is still open');
  const ids = sse.events.map((e) => Number(e.id));
  assert.deepEqual(ids, ids.map((_, i) => i + 1), 'event ids are the session ordinals, in order');
  assert.equal(proxy.active, 1);
  assert.equal(await connsOf(srv.url), 2, 'the stream and the writer');

  // The client goes away: the proxy closes its upstream, the server sees it.
  sse.abort();
  await waitUntil(() => proxy.active === 0, 'the proxy to drop the stream');
  await waitUntil(async () => (await connsOf(srv.url)) === 1, 'the server to see the stream closed');

  // Long-poll: pending through the proxy on the home server, answered by a write.
  const last = ids.at(-1);
  await alignTo(proxy, home);
  const poll = watch(api(proxy.url, 'GET', `/v1/poll?session=${session}&last=${last}`));
  await waitUntil(async () => (await connsOf(srv.url)) === 2, 'the pending poll on the server');
  assert.equal(poll.settled, false, 'nothing to answer yet');
  await w.set('sse-room', 'poll-1', 'polled', { v: 1 });
  await withTimeout(poll.done, WAIT_MS, 'the poll answer');
  assert.ifError(poll.error);
  assert.equal(poll.value.status, 200, poll.value.text);
  assert.ok(poll.value.body.messages.some((m) => m.type === 'op' && m.op?.item === 'polled'));
  assert.equal(poll.value.body.last, last + poll.value.body.messages.length);
  await waitUntil(async () => (await connsOf(srv.url)) === 1, 'the answered poll closed');
  // The same poll on the other server: that one does not know the session.
  await alignTo(proxy, other);
  assert.equal((await api(proxy.url, 'GET', `/v1/poll?session=${session}&last=${poll.value.body.last}`)).status, 410);
});

test('proxy: a backend that is gone gets 502 (HTTP and upgrade); one dying mid-stream cuts its clients', async (t) => {
  const live = await startSyncServer(t);
  const doomed = await startSyncServer(null);
  t.after(() => doomed.stop('SIGKILL'));
  const closedPort = await freePort();
  const proxy = await startRrProxy({ t, backends: [live, closedPort, doomed] });

  assert.equal((await api(proxy.url, 'GET', '/healthz')).status, 200);
  const r1 = await api(proxy.url, 'GET', '/healthz');
  assert.equal(r1.status, 502);
  assert.equal(r1.body.code, 'bad_gateway');
  assert.deepEqual(proxy.refused, [0, 1, 0]);

  // An upgrade to the closed port: a 502 on the socket, nothing hangs.
  await alignTo(proxy, 1);
  await assert.rejects(SyncClient.open(proxy.wsUrl), /unexpected response 502/);
  assert.deepEqual(proxy.refused, [0, 2, 0]);

  // An SSE stream and a WebSocket on the doomed backend, through the proxy.
  await alignTo(proxy, 2);
  const hello = await api(proxy.url, 'POST', '/v1/send', { body: { type: 'hello', v: 1, token: token('x'), device: 'dx' } });
  assert.equal(hello.status, 200, hello.text);
  await alignTo(proxy, 2);
  const sse = await openSse(`${proxy.url}/v1/sse?session=${hello.body.session}&last=0`);
  assert.equal(sse.status, 200);
  await alignTo(proxy, 2);
  const ws = await SyncClient.connect(proxy.wsUrl, { token: token('y'), device: 'dy' });
  assert.equal(proxy.active, 2);

  await doomed.stop('SIGKILL');
  // wsync's SSE body ends with its connection: the proxied one ends as well.
  await waitUntil(() => sse.failed || sse.done, 'the stream through the proxy to end');
  assert.equal((await ws.closed()).code, 1006, 'an abnormal close: the backend vanished');
  await waitUntil(() => proxy.active === 0, 'the proxy to drop both');
  await alignTo(proxy, 2);
  assert.equal((await api(proxy.url, 'GET', '/healthz')).status, 502);
  assert.equal(proxy.refused[2], 1, 'the dead backend refused once');
  assert.equal(proxy.refused[0], 0, 'the live one never');
});

test('scripts/cluster.mjs (make cluster): prints the URLs, serves the demo through the proxy, Ctrl-C stops everything', async () => {
  const repo = path.resolve(here, '..', '..');
  const child = spawn(process.execPath, [
    path.join(repo, 'scripts', 'cluster.mjs'), '--listen', '127.0.0.1:0', '--nodes', '2',
    '--bin', WSYNC_BIN, '--www', path.join(repo, 'web'),
  ], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
  const exited = new Promise((r) => child.on('exit', (code, sig) => r({ code, sig })));
  try {
    await waitUntil(() => /Ctrl-C stops everything/.test(out) || child.exitCode !== null, 'the URLs', 60000);
    assert.match(out, /Ctrl-C stops everything/, `no URLs:\n${out}\n${err}`);
    const proxyUrl = /open\s+(http:\/\/127\.0\.0\.1:\d+)\//.exec(out)[1];
    const nodes = [...out.matchAll(/(node-\d+)\s+(http:\/\/127\.0\.0\.1:\d+)\/\s+\(pid (\d+)\)/g)].map((m) => ({ id: m[1], url: m[2], pid: Number(m[3]) }));
    assert.deepEqual(nodes.map((n) => n.id), ['node-1', 'node-2']);
    const pgPort = Number(/postgres\s+postgres:\/\/wsync@127\.0\.0\.1:(\d+)\/wsync/.exec(out)[1]);
    const redisPort = Number(/redis\s+redis:\/\/127\.0\.0\.1:(\d+)/.exec(out)[1]);
    for (let k = 0; k < 2; k++) {
      const r = await once(proxyUrl, 'GET', '/');
      assert.equal(r.status, 200);
      assert.match(r.text, /<html/i, 'the demo page');
    }
    for (const n of nodes) assert.equal((await once(n.url, 'GET', '/healthz')).status, 200);
    assert.ok(await accepts(pgPort) && await accepts(redisPort));

    child.kill('SIGINT');
    const e = await withTimeout(exited, 60000, 'the script to stop');
    assert.equal(e.code, 0, `exit ${e.code ?? e.sig}:\n${err}`);
    assert.match(err, /node-1 1, node-2 1/, 'one page load per node');
    assert.match(err, /cluster: stopped/);
    for (const n of nodes) assert.equal(alive(n.pid), false, `${n.id} still runs`);
    for (const p of [pgPort, redisPort]) assert.equal(await accepts(p), false, `port ${p} still open`);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});
