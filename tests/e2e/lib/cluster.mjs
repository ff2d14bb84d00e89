// cluster.mjs -- throwaway PostgreSQL, Redis and wsync nodes for the cluster
// tests (issue 13) and `make cluster` (scripts/cluster.mjs).
//
// Everything listens on 127.0.0.1, on a port found free (port 0) just before
// the start, with its files in a temp dir removed at the stop. PostgreSQL and
// Redis cannot take port 0 and report the real one as wsync does, so there is
// a short window between probing a port and binding it: a start that loses
// that race is retried on another port; a restart keeps its port.
//
// PostgreSQL refuses to run as root. Under root the cluster runs as the
// `postgres` system user (Debian's postgresql-common creates it): the temp
// dir is chown'ed to it and initdb, postgres and its files run as that uid
// (node's spawn sets uid, gid and drops the supplementary groups, as setpriv
// would). Otherwise everything runs as the current user.
//
// The chaos helpers act on the whole database server: the postmaster's
// children (one process per connection, the checkpointer, the WAL writer)
// put themselves in their own process groups, so pause(), resume() and
// kill9() find them in /proc by parent pid (Linux only, as the project).
//
// The daemons and the wsync nodes are started in process groups of their
// own, so a terminal's Ctrl-C reaches only the node process, which stops
// them in order. If that
// process exits without stopping them (a crash, process.exit, an uncaught
// error), an exit hook kills every daemon and wsync node still running and
// removes their temp dirs.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { sanitizerReport, sleep, startServer, WAIT_MS, waitUntil, withTimeout } from './server.mjs';
import { SECRET } from './sync.mjs';

/** Longest a daemon may take to start or stop (initdb, crash recovery); a guard, not a measure. */
const DAEMON_MS = Math.max(WAIT_MS, 30000);

// ---- process bookkeeping ----------------------------------------------------

/** What the exit hook still has to kill: entries with a synchronous reap(). */
const reapers = new Set();
let hooked = false;

function reapAll() {
  for (const r of [...reapers]) {
    try {
      r.reap();
    } catch {
      // best effort: the process is exiting
    }
  }
  reapers.clear();
}

/**
 * Registers reap (synchronous: kill, remove files) to run if the process
 * exits first; returns the function that unregisters it. The first call
 * installs an 'exit' hook and, for the termination signals nobody listens
 * to, a one-time handler that reaps and then dies of the same signal.
 */
function onExit(reap) {
  if (!hooked) {
    hooked = true;
    process.on('exit', reapAll);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
      if (process.listenerCount(sig) > 0) continue;
      process.once(sig, () => {
        reapAll();
        process.kill(process.pid, sig);
      });
    }
  }
  const entry = { reap };
  reapers.add(entry);
  return () => reapers.delete(entry);
}

/** Sends sig to pid; false when it no longer exists. */
function signal(pid, sig) {
  try {
    process.kill(pid, sig);
    return true;
  } catch (err) {
    if (err.code === 'ESRCH') return false;
    throw err;
  }
}

/** The live (not zombie) descendants of pid, from /proc: children before grandchildren. */
export function descendants(pid) {
  const kids = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (rest[0] === 'Z' || rest[0] === 'X') continue;
    const ppid = Number(rest[1]);
    if (!kids.has(ppid)) kids.set(ppid, []);
    kids.get(ppid).push(Number(name));
  }
  const out = [];
  for (let i = -1; i < out.length; i++) {
    for (const k of kids.get(i < 0 ? pid : out[i]) || []) out.push(k);
  }
  return out;
}

/** True while pid exists and is not a zombie. */
function alive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** A port that was free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Runs a command to completion without blocking the loop: resolves stdout, rejects with stderr. */
function run(file, args, { timeout = WAIT_MS, ...opts } = {}) {
  return new Promise((resolve, reject) => {
    execFile(file, args, { encoding: 'utf8', timeout, maxBuffer: 64 << 20, ...opts }, (err, stdout, stderr) => {
      if (err) {
        const why = err.killed ? `timed out after ${timeout} ms` : `exit ${err.code ?? err.signal}`;
        reject(new Error(`${path.basename(file)} ${args.join(' ').slice(0, 300)}: ${why}\n${stderr || err.message}`));
      } else {
        resolve(stdout);
      }
    });
  });
}

/**
 * One run of a daemon in its own process group, its output kept (the last
 * 256 KiB). Resolves once a line matches ready; rejects when it exits first
 * (err.busy when its output matches busy: the port was taken) or after
 * DAEMON_MS. The caller owns the process.
 */
async function launch(what, file, args, { ready, busy, uid, gid, env, unref = false, pdeath = 'SIGKILL' }) {
  // The daemon gets pdeath if this process dies without its exit hook
  // (SIGKILL, a runner killed by a timeout): util-linux's setpriv sets the
  // parent-death signal and execs it in place (same pid).
  if (SETPRIV) [file, args] = [SETPRIV, ['--pdeathsig', pdeath, '--', file, ...args]];
  const proc = spawn(file, args, {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LC_ALL: 'C', ...env },
    ...(uid !== undefined ? { uid, gid } : {}),
  });
  const d = { what, proc, pid: proc.pid, log: '', exit: null };
  const take = (chunk) => {
    d.log += chunk;
    if (d.log.length > 512 << 10) d.log = d.log.slice(-(256 << 10));
  };
  proc.stdout.setEncoding('utf8').on('data', take);
  proc.stderr.setEncoding('utf8').on('data', take);
  d.exited = new Promise((resolve) => proc.on('exit', (code, sig) => resolve((d.exit = { code, signal: sig }))));
  d.closed = new Promise((resolve) => proc.on('close', resolve));
  let spawnError = null;
  proc.on('error', (err) => { spawnError = err; });
  try {
    await waitUntil(() => ready.test(d.log) || d.exit || spawnError, `${what} to be ready`, DAEMON_MS);
    if (spawnError) throw new Error(`${what}: ${spawnError.message}`);
    if (d.exit) {
      // Its last words (the reason) may still be in the pipe.
      await withTimeout(d.closed, WAIT_MS, `${what} output`).catch(() => {});
      const err = new Error(`${what} exited (${d.exit.signal || d.exit.code}) before it was ready:\n${d.log.slice(-3000)}`);
      err.busy = !!(busy && busy.test(d.log));
      throw err;
    }
  } catch (err) {
    if (!d.exit && !spawnError) signal(proc.pid, 'SIGKILL');
    throw err;
  }
  if (unref) {
    // A daemon shared by a whole test file: it does not keep the process
    // alive; the exit hook stops it.
    proc.unref();
    proc.stdout.unref();
    proc.stderr.unref();
  }
  return d;
}

/** util-linux's setpriv (Debian's util-linux is essential), or null without it. */
const SETPRIV = (() => {
  try {
    return execFileSync('sh', ['-c', 'command -v setpriv'], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
})();

/** Waits for a launched daemon to exit; SIGKILL (whole group and descendants) after ms. */
async function waitGone(d, ms = DAEMON_MS) {
  try {
    await withTimeout(d.exited, ms, `${d.what} (pid ${d.pid}) to exit`);
  } catch (err) {
    killTree(d.pid);
    await d.exited;
    throw new Error(`${err.message}; killed\n${d.log.slice(-2000)}`);
  }
}

/** SIGKILL to pid and every live descendant, parent first so it spawns no more. */
function killTree(pid) {
  signal(pid, 'SIGSTOP');
  const kids = descendants(pid);
  signal(pid, 'SIGKILL');
  for (const k of kids) signal(k, 'SIGKILL');
  return kids;
}

/** Sends sig to pid and its descendants (SIGSTOP: the parent first; SIGCONT: the parent last). */
function signalTree(pid, sig) {
  if (sig === 'SIGCONT') {
    for (const k of descendants(pid)) signal(k, sig);
    signal(pid, sig);
  } else {
    signal(pid, sig);
    for (const k of descendants(pid)) signal(k, sig);
  }
}

/** The uid and gid to run PostgreSQL as: null when not root. */
function pgOwner() {
  if (process.getuid() !== 0) return null;
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  if (!line) {
    throw new Error('PostgreSQL refuses to run as root and there is no `postgres` user to run it as: '
      + 'install postgresql-common (scripts/deps.sh) or run the tests as an unprivileged user');
  }
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]), name: 'postgres' };
}

/** PostgreSQL's server binaries: $PG_BINDIR, Debian's PostgreSQL 15, or pg_config --bindir. */
export function pgBinDir() {
  if (process.env.PG_BINDIR) return process.env.PG_BINDIR;
  const debian = '/usr/lib/postgresql/15/bin';
  if (existsSync(path.join(debian, 'postgres'))) return debian;
  try {
    return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('PostgreSQL not found: no /usr/lib/postgresql/15/bin and no pg_config (scripts/deps.sh installs it)');
  }
}

/**
 * Parses psql's --csv output (RFC 4180: quoted fields may hold commas,
 * quotes doubled, newlines) into rows of strings.
 */
export function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  let any = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c === '"') {
      quoted = true;
      any = true;
    } else if (c === ',') {
      row.push(field);
      field = '';
      any = true;
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      if (any || field) {
        row.push(field);
        rows.push(row);
      }
      row = [];
      field = '';
      any = false;
    } else {
      field += c;
      any = true;
    }
  }
  if (any || field) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

// ---- PostgreSQL -------------------------------------------------------------

/**
 * A throwaway PostgreSQL: initdb (--no-sync, trust, user and database
 * `wsync`, UTF8, locale C) into a temp dir, then `postgres` on 127.0.0.1 at
 * a free port with its socket in that dir, fsync on, 16 MB of shared
 * buffers. Resolves once the database exists. Options: t (a test context:
 * stop() runs after it), user, database.
 *
 * Returns {url ('postgres://wsync@127.0.0.1:PORT/wsync'), host, port, user,
 * database, dir, dataDir, pid (the postmaster's, null while down), log (the
 * server's output so far), running, psql(sql), stop(), halt(), start(),
 * restart(downMs), kill9(), pause(), resume()}:
 * - psql(sql, {database}) runs sql with the psql client (ON_ERROR_STOP) and
 *   resolves the rows of its result as objects keyed by column name, values
 *   as text ('' for NULL); statements before the last that return rows
 *   would mix their rows in: give those one statement at a time.
 * - halt() is a fast shutdown (SIGINT: running transactions roll back); the
 *   files stay. start() starts it again on the same port and dir (crash
 *   recovery after kill9()). restart(downMs) is halt, downMs of absence
 *   (default 5000: issue 13's "stop PostgreSQL for 5 s"), start.
 * - kill9() kills the postmaster and every backend at once (SIGKILL), as a
 *   power cut would; what was committed survives (fsync is on).
 * - pause() stops every process of the server (SIGSTOP): connections and
 *   queries hang, new connections wait in the backlog; resume() continues.
 * - stop() is the end: resumes if paused, halts, removes the dir. Idempotent.
 */
export async function startPostgres({ t = null, user = 'wsync', database = 'wsync', unref = false } = {}) {
  const bin = pgBinDir();
  const owner = pgOwner();
  const ids = owner ? { uid: owner.uid, gid: owner.gid } : {};
  const dir = mkdtempSync(path.join(tmpdir(), 'wsync-pg-'));
  const dataDir = path.join(dir, 'data');
  let d = null; // the running postmaster
  let paused = false;
  let stopped = false;
  const unhook = onExit(() => {
    if (d && !d.exit) killTree(d.pid);
    rmSync(dir, { recursive: true, force: true });
  });
  const pg = {
    host: '127.0.0.1',
    port: 0,
    user,
    database,
    dir,
    dataDir,
    runAs: owner ? owner.name : null,
    get url() { return `postgres://${user}@127.0.0.1:${pg.port}/${database}`; },
    get pid() { return d && !d.exit ? d.pid : null; },
    get running() { return !!d && !d.exit; },
    get log() { return d ? d.log : ''; },

    async psql(sql, { database: db = database, timeout = WAIT_MS } = {}) {
      const out = await run(path.join(bin, 'psql'), [
        '-X', '-q', '--csv', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(pg.port),
        '-U', user, '-d', db, '-c', sql,
      ], { timeout, env: { ...process.env, PGCONNECT_TIMEOUT: '5', PGAPPNAME: 'wsync-harness' } });
      const rows = parseCsv(out);
      if (!rows.length) return [];
      const [head, ...body] = rows;
      return body.map((r) => Object.fromEntries(head.map((k, i) => [k, r[i] ?? ''])));
    },

    async start() {
      if (stopped) throw new Error('postgres: start() after stop()');
      if (pg.running) throw new Error('postgres: already running');
      // A fresh start may lose the race for its probed port (another helper
      // bound it meanwhile): it then takes another. A restart keeps its port
      // and only waits for it.
      const fresh = !pg.port;
      for (let attempt = 1; ; attempt++) {
        if (fresh) pg.port = await freePort();
        try {
          d = await launch('postgres', path.join(bin, 'postgres'), [
            '-D', dataDir,
            '-c', 'listen_addresses=127.0.0.1', '-c', `port=${pg.port}`,
            '-c', `unix_socket_directories=${dir}`,
            '-c', 'fsync=on', '-c', 'shared_buffers=16MB', '-c', 'max_connections=200',
            '-c', 'huge_pages=off',
          ], {
            ready: /database system is ready to accept connections/,
            busy: /could not bind|could not create any TCP\/IP sockets|Address already in use/,
            unref,
            pdeath: 'SIGINT', // a fast shutdown: sessions ended, nothing left behind
            ...ids,
          });
          paused = false;
          return pg;
        } catch (err) {
          d = null;
          if (!err.busy || attempt >= 5) throw err;
          if (fresh) pg.port = 0;
          await sleep(200 * attempt);
        }
      }
    },

    async halt() {
      if (!pg.running) return;
      if (paused) await pg.resume();
      signal(d.pid, 'SIGINT');
      await waitGone(d);
    },

    async restart(downMs = 5000) {
      await pg.halt();
      if (downMs > 0) await sleep(downMs);
      return pg.start();
    },

    async kill9() {
      if (!pg.running) return;
      const kids = killTree(d.pid);
      await waitGone(d, WAIT_MS);
      // The backends are gone too before a start() may reuse their shared memory.
      await waitUntil(() => !kids.some(alive), 'postgres backends to die', WAIT_MS);
      paused = false;
    },

    async pause() {
      if (!pg.running) throw new Error('postgres: pause() while not running');
      signalTree(d.pid, 'SIGSTOP');
      paused = true;
    },

    async resume() {
      if (!pg.running) return;
      signalTree(d.pid, 'SIGCONT');
      paused = false;
    },

    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await pg.halt();
      } finally {
        unhook();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };

  try {
    if (owner) chownSync(dir, owner.uid, owner.gid);
    await run(path.join(bin, 'initdb'), [
      '-D', dataDir, '--no-sync', '-A', 'trust', '-U', user, '-E', 'UTF8', '--locale=C', '--no-instructions',
    ], { ...ids, timeout: DAEMON_MS, cwd: dir, env: { ...process.env, LC_ALL: 'C' } });
    await pg.start();
    await pg.psql(`CREATE DATABASE "${database}"`, { database: 'postgres' });
  } catch (err) {
    await pg.stop().catch(() => {});
    throw err;
  }
  if (t) t.after(() => pg.stop());
  return pg;
}

// ---- Redis ------------------------------------------------------------------

/**
 * A throwaway Redis: redis-server on 127.0.0.1 at a free port, no
 * persistence (no RDB, no AOF), its working dir a temp dir. Options: t.
 *
 * Returns {url ('redis://127.0.0.1:PORT'), host, port, dir, pid, log,
 * running, cli(args), stop(), halt(), start(), restart(downMs), kill9(),
 * pause(), resume()}: cli runs redis-cli with args (an array) and resolves
 * its trimmed output; halt() is SIGTERM (a clean shutdown, nothing saved),
 * start() again on the same port, empty; restart(downMs) halt, downMs of
 * absence (default 0), start; kill9() SIGKILL; pause() SIGSTOP
 * (commands and publishes hang, connections stay open), resume() SIGCONT;
 * stop() the end (removes the dir).
 */
export async function startRedis({ t = null } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'wsync-redis-'));
  let d = null;
  let stopped = false;
  let paused = false;
  const unhook = onExit(() => {
    if (d && !d.exit) signal(d.pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const redis = {
    host: '127.0.0.1',
    port: 0,
    dir,
    get url() { return `redis://127.0.0.1:${redis.port}`; },
    get pid() { return d && !d.exit ? d.pid : null; },
    get running() { return !!d && !d.exit; },
    get log() { return d ? d.log : ''; },

    cli(args, { timeout = WAIT_MS } = {}) {
      return run('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), ...args], { timeout })
        .then((out) => out.trim());
    },

    async start() {
      if (stopped) throw new Error('redis: start() after stop()');
      if (redis.running) throw new Error('redis: already running');
      const fresh = !redis.port;
      for (let attempt = 1; ; attempt++) {
        if (fresh) redis.port = await freePort();
        try {
          d = await launch('redis-server', 'redis-server', [
            '--bind', '127.0.0.1', '--port', String(redis.port), '--dir', dir,
            '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--logfile', '',
            '--databases', '16', '--loglevel', 'notice',
          ], {
            ready: /Ready to accept connections/,
            busy: /Address already in use|Could not create server TCP listening socket/,
          });
          paused = false;
          return redis;
        } catch (err) {
          d = null;
          if (!err.busy || attempt >= 5) throw err;
          if (fresh) redis.port = 0;
          await sleep(200 * attempt);
        }
      }
    },

    async halt() {
      if (!redis.running) return;
      if (paused) await redis.resume();
      signal(d.pid, 'SIGTERM');
      await waitGone(d);
    },

    async restart(downMs = 0) {
      await redis.halt();
      if (downMs > 0) await sleep(downMs);
      return redis.start();
    },

    async kill9() {
      if (!redis.running) return;
      signal(d.pid, 'SIGKILL');
      await waitGone(d, WAIT_MS);
      paused = false;
    },

    async pause() {
      if (!redis.running) throw new Error('redis: pause() while not running');
      signal(d.pid, 'SIGSTOP');
      paused = true;
    },

    async resume() {
      if (!redis.running) return;
      signal(d.pid, 'SIGCONT');
      paused = false;
    },

    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await redis.halt();
      } finally {
        unhook();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  try {
    await redis.start();
  } catch (err) {
    await redis.stop().catch(() => {});
    throw err;
  }
  if (t) t.after(() => redis.stop());
  return redis;
}

// ---- wsync nodes ------------------------------------------------------------

/**
 * A wsync node of a cluster: `wsync serve --store <pg.url> --bus <redis.url>
 * --node-id <nodeId>` plus args (default: --auth-secret of lib/sync.mjs),
 * through server.mjs's startServer (free port, own temp data dir, sanitizer
 * checks). Options: t, pg, redis (or store/bus URLs), nodeId, args, echo
 * (--echo-endpoint, default false), env.
 *
 * Returns a handle that survives restarts: {nodeId, host, port, url, wsUrl,
 * srv (the current process's server.mjs object), pid, stderr, running,
 * start() (again, on the same port and data dir), stop() (SIGTERM, must exit
 * 0), kill9() (SIGKILL: no goodbye), restart(), close() (the end: stops the
 * running process with every check, removes the data dir)}. Every stop
 * throws on a sanitizer report of the process it stopped.
 */
export async function startNode({ t = null, pg, redis, store, bus, nodeId = 'node-1', args, echo = false, env } = {}) {
  const storeUrl = store || pg?.url;
  const busUrl = bus || redis?.url;
  const clusterArgs = [];
  if (storeUrl) clusterArgs.push('--store', storeUrl);
  if (busUrl) clusterArgs.push('--bus', busUrl);
  clusterArgs.push('--node-id', nodeId);
  const fullArgs = [...clusterArgs, ...(args || ['--auth-secret', SECRET])];
  const dataDir = mkdtempSync(path.join(tmpdir(), `wsync-${nodeId}-`));
  let cur = null;
  let closed = false;
  const unhook = onExit(() => {
    if (cur && !cur.exit) cur.proc.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });
  const checked = (srv) => {
    const report = sanitizerReport(srv.stderr);
    if (report) throw new Error(`sanitizer report from wsync ${nodeId}:\n${report}`);
  };
  const node = {
    nodeId,
    host: '127.0.0.1',
    port: 0,
    dataDir,
    args: fullArgs,
    get url() { return `http://127.0.0.1:${node.port}`; },
    get wsUrl() { return `ws://127.0.0.1:${node.port}`; },
    get srv() { return cur; },
    get pid() { return cur && !cur.exit ? cur.pid : null; },
    get running() { return !!cur && !cur.exit; },
    get stderr() { return cur ? cur.stderr : ''; },

    async start() {
      if (closed) throw new Error(`${nodeId}: start() after close()`);
      if (node.running) throw new Error(`${nodeId}: already running`);
      cur = await startServer(null, fullArgs, {
        echo, env, dataDir, listen: node.port ? `127.0.0.1:${node.port}` : undefined, detached: true,
      });
      if (!node.port) node.port = cur.port;
      return node;
    },

    async stop() {
      if (!node.running) return cur?.exit;
      const e = await cur.stop('SIGTERM');
      checked(cur);
      if (e.signal || e.code !== 0) throw new Error(`wsync ${nodeId} exited with ${e.signal || e.code}:\n${cur.stderr.slice(-3000)}`);
      return e;
    },

    async kill9() {
      if (!node.running) return cur?.exit;
      const e = await cur.stop('SIGKILL');
      checked(cur);
      return e;
    },

    async restart() {
      await node.stop();
      return node.start();
    },

    async close() {
      if (closed) return;
      closed = true;
      try {
        await node.stop();
      } finally {
        unhook();
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
  };
  try {
    await node.start();
  } catch (err) {
    await node.close().catch(() => {});
    throw err;
  }
  if (t) t.after(() => node.close());
  return node;
}

/**
 * PostgreSQL, Redis and n wsync nodes (node-1 ... node-n) on them. Options:
 * t, args (every node's extra arguments, default --auth-secret of
 * lib/sync.mjs), nodeArgs(i) (more arguments for node i, from 0), echo, env.
 * Returns {pg, redis, nodes, urls, stop()}: stop() closes the nodes, then
 * Redis, then PostgreSQL, and throws the first failure (a sanitizer report,
 * an unclean exit) once everything is down.
 */
export async function startCluster(n = 3, { t = null, args, nodeArgs = () => [], echo = false, env } = {}) {
  const c = { pg: null, redis: null, nodes: [] };
  c.urls = () => c.nodes.map((x) => x.url);
  c.stop = async () => {
    const errors = [];
    const settle = async (fn) => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    };
    await Promise.all(c.nodes.map((x) => settle(() => x.close())));
    if (c.redis) await settle(() => c.redis.stop());
    if (c.pg) await settle(() => c.pg.stop());
    if (errors.length === 1) throw errors[0];
    if (errors.length) throw new AggregateError(errors, errors.map((e) => e.message).join('\n---\n'));
  };
  try {
    const [pg, redis] = await Promise.allSettled([startPostgres(), startRedis()]);
    if (pg.status === 'fulfilled') c.pg = pg.value;
    if (redis.status === 'fulfilled') c.redis = redis.value;
    if (pg.status === 'rejected') throw pg.reason;
    if (redis.status === 'rejected') throw redis.reason;
    const started = await Promise.allSettled(Array.from({ length: n }, (_, i) => startNode({
      pg: c.pg, redis: c.redis, nodeId: `node-${i + 1}`,
      args: [...(args || ['--auth-secret', SECRET]), ...nodeArgs(i)], echo, env,
    })));
    for (const s of started) if (s.status === 'fulfilled') c.nodes.push(s.value);
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (err) {
    await c.stop().catch(() => {});
    throw err;
  }
  if (t) t.after(() => c.stop());
  return c;
}

// ---- existing suites against a cluster -------------------------------------
// With WSYNC_E2E_CLUSTER=N in the environment, lib/sync.mjs's startSyncServer
// starts N nodes (one PostgreSQL per test process, a fresh database and a
// fresh Redis per server) behind the round-robin proxy, and hands the test a
// server-like object whose url is the proxy's: consecutive connections and
// HTTP requests of a test land on different nodes, so a suite written for
// one node checks that the cluster behaves as one.

let sharedPg = null;
let dbSeq = 0;

/** The shared PostgreSQL of this test process (started on first use, stopped at exit). */
function clusterPg() {
  if (!sharedPg) sharedPg = startPostgres({ unref: true });
  return sharedPg;
}

/**
 * With WSYNC_E2E_LOGDIR=DIR, each node's whole stderr is written to
 * DIR/<database>-<node>.log when the cluster stops (once), headed by the
 * test's name: the way to read what the nodes said about a failing test
 * (add WSYNC_LOG_LEVEL=debug for more).
 */
function keepLogs(t, db, nodes) {
  const dir = process.env.WSYNC_E2E_LOGDIR;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  for (const x of nodes) {
    const file = path.join(dir, `${db}-${x.nodeId}.log`);
    if (!existsSync(file)) writeFileSync(file, `# ${t?.fullName ?? t?.name ?? '(no test)'}\n${x.stderr}`);
  }
}

/** N nodes with args behind a round-robin proxy; resolves an object shaped like startServer's. */
export async function startProxiedCluster(t, n, args, { echo = true } = {}) {
  const { startRrProxy } = await import('./rrproxy.mjs');
  const pg = await clusterPg();
  const db = `suite_${process.pid}_${++dbSeq}`;
  await pg.psql(`CREATE DATABASE ${db}`);
  const store = pg.url.replace(/\/[^/]*$/, `/${db}`);
  const redis = await startRedis();
  const nodes = [];
  try {
    for (let i = 0; i < n; i++)
      nodes.push(await startNode({ pg: { url: store }, redis, nodeId: `n${i + 1}`, args, echo }));
  } catch (err) {
    await Promise.all(nodes.map((x) => x.close().catch(() => {})));
    await redis.stop().catch(() => {});
    throw err;
  }
  const proxy = await startRrProxy({ backends: nodes.map((x) => x.port) });
  const srv = {
    nodes, redis, proxy, store,
    host: '127.0.0.1',
    port: proxy.port,
    url: proxy.url,
    wsUrl: proxy.wsUrl,
    get stderr() { return nodes.map((x) => x.stderr).join('\n'); },
    /** The node a session lives on: its token is "<node-id>.<key>" (docs/CLUSTER.md). */
    nodeOf(session) {
      const node = nodes.find((x) => typeof session === 'string' && session.startsWith(`${x.nodeId}.`));
      if (!node) throw new Error(`no node of this cluster holds session ${session}`);
      return node;
    },
    waitForLog(re, ms = WAIT_MS) {
      return waitUntil(() => re.test(srv.stderr), `cluster log ${re}`, ms);
    },
    async stop() {
      await proxy.close();
      try {
        await Promise.all(nodes.map((x) => x.close()));
      } finally {
        keepLogs(t, db, nodes);
      }
      await redis.stop();
      return { code: 0, signal: null };
    },
  };
  srv.stopChecked = srv.stop;
  if (t) t.after(() => srv.stop());
  return srv;
}

// ---- room owners (--forward-ops, src/sync/opfwd.c) ---------------------------

const M64 = (1n << 64n) - 1n;

/** The server's score of (node, room): FNV-1a over both, then a 64-bit finalizer. */
function ownerScore(node, room) {
  let h = 14695981039346656037n;
  const mix = (b) => { h = ((h ^ BigInt(b)) * 1099511628211n) & M64; };
  for (const b of Buffer.from(node)) mix(b);
  mix(0x1f);
  for (const b of Buffer.from(room)) mix(b);
  h ^= h >> 33n;
  h = (h * 0xff51afd7ed558ccdn) & M64;
  h ^= h >> 33n;
  h = (h * 0xc4ceb9fe1a85ec53n) & M64;
  h ^= h >> 33n;
  return h;
}

/**
 * The node id that owns room among nodeIds (all up and heard from by each
 * other): the one whose ops for the room every node forwards there.
 */
export function ownerOf(room, nodeIds) {
  let best = null;
  let top = -1n;
  for (const id of nodeIds) {
    const s = ownerScore(id, room);
    if (s > top || (s === top && id < best)) {
      top = s;
      best = id;
    }
  }
  return best;
}

/** A room name made by make(k), k = 0, 1, ..., whose owner among nodeIds is want. */
export function roomOwnedBy(want, nodeIds, make) {
  for (let k = 0; k < 10000; k++) {
    const name = make(k);
    if (ownerOf(name, nodeIds) === want) return name;
  }
  throw new Error(`no room owned by ${want} in 10000 names`);
}
