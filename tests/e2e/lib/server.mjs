// server.mjs -- runs the real wsync binary for a test: a free loopback port
// (port 0, read back from the "listening on" log line, so no race between
// picking a port and binding it), a temp data dir, and a stop that sends
// SIGTERM, waits for the exit and fails the test when a sanitizer spoke.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const e2eDir = path.resolve(here, '..');

/** Path of the binary under test: $WSYNC_BIN (relative to tests/e2e) or the release build. */
export const WSYNC_BIN = path.resolve(e2eDir, process.env.WSYNC_BIN || '../../build/wsync');
/** Flags every startServer adds last: $WSYNC_E2E_ARGS split on spaces
 * (`make e2e-writers` runs a set of suites with --write-threads). */
export const E2E_ARGS = (process.env.WSYNC_E2E_ARGS || '').split(' ').filter(Boolean);

/** True under the ASan/UBSan build: everything is slower, counts are scaled down. */
export const SANITIZED = !!process.env.WSYNC_SANITIZED;

/** n normally, sanitizedN under sanitizers. */
export const scale = (n, sanitizedN) => (SANITIZED ? sanitizedN : n);

/** Upper bound for any single wait; only a guard against hangs, never an assertion on speed. */
export const WAIT_MS = SANITIZED ? 30000 : 10000;

const SANITIZER_MARKS = ['ERROR: AddressSanitizer', 'runtime error:', 'LeakSanitizer', 'WARNING: ThreadSanitizer'];

/** Rejects with a clear message when p does not settle within ms. */
export function withTimeout(p, ms, what) {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, guard]).finally(() => clearTimeout(timer));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls cond() every few ms until it is true; throws after ms. */
export async function waitUntil(cond, what, ms = WAIT_MS) {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** The sanitizer reports found in a server's stderr ("" when clean). */
export function sanitizerReport(stderr) {
  const i = SANITIZER_MARKS.map((m) => stderr.indexOf(m)).filter((k) => k >= 0);
  if (!i.length) return '';
  const at = Math.min(...i);
  return stderr.slice(Math.max(0, at - 200), at + 3000);
}

/** Runs the binary to completion (CLI tests). Returns {status, stdout, stderr}. */
export function runCli(args, { env = {}, timeout = WAIT_MS } = {}) {
  const r = spawnSync(WSYNC_BIN, args, {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout,
  });
  if (r.error) throw r.error;
  const report = sanitizerReport(r.stderr);
  if (report) throw new Error(`sanitizer report from wsync ${args.join(' ')}:\n${report}`);
  return r;
}

/**
 * Starts `wsync serve --listen 127.0.0.1:0 --echo-endpoint --data-dir <tmp>`
 * plus extraArgs and resolves once it listens. t (a test context) gets an
 * after hook that stops it and fails the test on a sanitizer report, a
 * non-zero exit, or a crash. Options: env (extra environment), echo (default
 * true), listen (instead of 127.0.0.1:0), dataDir (an existing data dir to
 * reuse, for restarts; the caller owns it: it is not removed at the stop),
 * detached (its own process group: a terminal's Ctrl-C then reaches only the
 * node process, which stops it; lib/cluster.mjs).
 */
// The data dirs startServer made and no stopChecked removed yet (a server
// stopped with stop() alone, or one whose start failed): removed when the
// test process exits, after every test is done with them.
const ownDirs = new Set();
process.on('exit', () => {
  for (const d of ownDirs) rmSync(d, { recursive: true, force: true });
});

export async function startServer(t, extraArgs = [], opts = {}) {
  const ownDir = !opts.dataDir;
  const dataDir = opts.dataDir || mkdtempSync(path.join(tmpdir(), 'wsync-e2e-'));
  if (ownDir) ownDirs.add(dataDir);
  const args = ['serve', '--listen', opts.listen || '127.0.0.1:0', '--data-dir', dataDir];
  if (opts.echo !== false) args.push('--echo-endpoint');
  args.push(...extraArgs, ...E2E_ARGS);
  const proc = spawn(WSYNC_BIN, args, {
    env: { ...process.env, ...(opts.env || {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: !!opts.detached,
  });
  let stderr = '';
  let stdout = '';
  proc.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  proc.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => resolve({ code, signal }));
  });
  let exitInfo = null;
  exited.then((e) => (exitInfo = e));
  // 'close' fires once stdio is drained: the whole stderr (sanitizer reports
  // come last) is in hand then.
  const closed = new Promise((resolve) => proc.on('close', resolve));

  const srv = {
    proc,
    pid: proc.pid,
    dataDir,
    host: '127.0.0.1',
    port: 0,
    args,
    get stderr() { return stderr; },
    get stdout() { return stdout; },
    get exit() { return exitInfo; },
    url: '',
    wsUrl: '',
    /** Resolves when the log has a line matching re (checked as lines arrive). */
    waitForLog(re, ms = WAIT_MS) {
      return waitUntil(() => re.test(stderr), `server log ${re}`, ms);
    },
    /** Resolves {code, signal} when the process has exited and its stderr is complete. */
    async waitExit(ms = WAIT_MS) {
      const e = await withTimeout(exited, ms, `wsync pid ${proc.pid} to exit`);
      await withTimeout(closed, ms, 'wsync stdio to close');
      return e;
    },
    /** SIGTERM (or sig), then waits for the exit; SIGKILL if it hangs. */
    async stop(sig = 'SIGTERM') {
      if (!exitInfo) proc.kill(sig);
      try {
        return await srv.waitExit(SANITIZED ? 60000 : 15000);
      } catch (err) {
        proc.kill('SIGKILL');
        await exited;
        throw new Error(`wsync did not exit after ${sig}: ${err.message}\n${stderr.slice(-2000)}`);
      }
    },
  };

  /** Stops the server and throws on a sanitizer report, a crash or a non-zero exit. */
  srv.stopChecked = async () => {
    let e;
    try {
      e = await srv.stop();
    } finally {
      if (ownDir) {
        rmSync(dataDir, { recursive: true, force: true });
        ownDirs.delete(dataDir);
      }
    }
    const report = sanitizerReport(stderr);
    if (report) throw new Error(`sanitizer report from wsync:\n${report}`);
    if (!opts.allowExit && (e.signal || e.code !== 0)) {
      throw new Error(`wsync exited with ${e.signal || e.code}:\n${stderr.slice(-3000)}`);
    }
    return e;
  };
  // Without a test context (file-level before hooks) the caller stops it.
  if (t) t.after(() => srv.stopChecked());

  try {
    await withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          const m = /listening on (?:https?):\/\/([0-9.]+):(\d+)/.exec(stderr);
          if (m) {
            proc.stderr.off('data', check);
            resolve(m);
          }
        };
        proc.stderr.on('data', check);
        proc.on('exit', (code, signal) =>
          reject(new Error(`wsync exited (${signal || code}) before listening:\n${stderr}`)));
        proc.on('error', reject);
        check();
      }),
      WAIT_MS,
      'wsync to listen',
    ).then((m) => {
      srv.host = m[1];
      srv.port = Number(m[2]);
    });
  } catch (err) {
    if (!exitInfo) proc.kill('SIGKILL');
    throw err;
  }
  // With --tls-cert the server speaks HTTPS and wss:// (lib/tls.mjs).
  const tls = args.includes('--tls-cert');
  srv.url = `${tls ? 'https' : 'http'}://${srv.host}:${srv.port}`;
  srv.wsUrl = `${tls ? 'wss' : 'ws'}://${srv.host}:${srv.port}`;
  return srv;
}
