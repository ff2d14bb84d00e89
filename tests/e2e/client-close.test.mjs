// client-close.test.mjs -- after client.close() the JavaScript client
// (clients/js/wsync.js) leaves nothing behind: no timer (a re-send after
// rate_limited, a presence update, a reconnect attempt's timeout), no request
// in flight, no listener on an EventSource. Each case runs a child Node
// process (lib/close-child.mjs) that brings a client into a state against
// a real server, closes it, and reports which of the client's timers were
// still scheduled; the process must then exit by itself, promptly, rather
// than be killed. The bound (5 s) only guards against a hang: the leaks it
// catches last 10 s (the connect timeout) to 60 s (a retry_after).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { SERVER_ARGS } from './lib/client-util.mjs';
import { WAIT_MS, withTimeout } from './lib/server.mjs';
import { startSyncServer } from './lib/sync.mjs';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'lib', 'close-child.mjs');
const EXIT_MS = 5000;

/**
 * A loopback TCP proxy to port; hold() cuts every connection and from then
 * on accepts new ones without ever answering (a network that drops packets).
 */
async function holdingProxy(t, port) {
  const socks = new Set();
  let holding = false;
  const server = net.createServer((sock) => {
    socks.add(sock);
    sock.on('error', () => {}).on('close', () => socks.delete(sock));
    if (holding) return;
    const up = net.connect(port, '127.0.0.1');
    socks.add(up);
    up.on('error', () => {}).on('close', () => socks.delete(up));
    sock.pipe(up);
    up.pipe(sock);
    sock.on('close', () => up.destroy());
    up.on('close', () => sock.destroy());
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const p = {
    url: `http://127.0.0.1:${server.address().port}`,
    hold() {
      holding = true;
      for (const s of [...socks]) s.destroy();
    },
    close() {
      for (const s of [...socks]) s.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
  t.after(() => p.close());
  return p;
}

/**
 * Runs the child for a case; onStep(step) sees its progress lines. Resolves
 * {report, exitedIn} once it exited, or {report, hung: true} when it was
 * still running EXIT_MS after reporting (it is killed then).
 */
function runChild(url, transport, kase, onStep = () => {}) {
  const child = spawn(process.execPath, [CHILD, url, transport, kase], {
    cwd: path.dirname(CHILD),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let report = null;
  let reportedAt = 0;
  let onReport;
  const reported = new Promise((r) => (onReport = r));
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  child.stdout.setEncoding('utf8').on('data', (d) => {
    stdout += d;
    let i;
    while ((i = stdout.indexOf('\n')) >= 0) {
      const line = stdout.slice(0, i);
      stdout = stdout.slice(i + 1);
      const m = JSON.parse(line);
      if (m.step === 'closed') {
        report = m;
        reportedAt = Date.now();
        onReport();
      }
      onStep(m.step);
    }
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return (async () => {
    // Setting the case up is bounded by WAIT_MS; exiting after close() by EXIT_MS.
    await withTimeout(Promise.race([exited, reported]), WAIT_MS * 2, `${kase}: the child to close its client`)
      .catch((err) => {
        child.kill('SIGKILL');
        throw new Error(`${err.message}\n${stderr}`);
      });
    if (!report) {
      const e = await exited;
      throw new Error(`child ${kase} exited (${e.signal || e.code}) without closing:\n${stderr}`);
    }
    let timer;
    const bound = new Promise((r) => (timer = setTimeout(r, Math.max(0, reportedAt + EXIT_MS - Date.now()), 'hung')));
    const e = await Promise.race([exited, bound]);
    clearTimeout(timer);
    if (e === 'hung') {
      child.kill('SIGKILL');
      await exited;
      return { report, hung: true, stderr };
    }
    return { report, exit: e, exitedIn: Date.now() - reportedAt, stderr };
  })();
}

/** Everything the case left behind, as one assertion (so a failure lists it all). */
function checkClean(kase, r) {
  const problems = [];
  if (r.hung) problems.push(`the process was still running ${EXIT_MS} ms after close() resolved (killed)`);
  else if (r.exit.code !== 0) problems.push(`the process exited with ${r.exit.signal || r.exit.code}:\n${r.stderr}`);
  const { atCall, afterClose, afterPoke, listeners } = r.report;
  if (atCall.length) problems.push(`wsync.js timers still scheduled as close() returned: ${atCall.join(', ')}`);
  if (afterClose.length) problems.push(`timers still scheduled after close() resolved: ${afterClose.join(', ')}`);
  if (afterPoke.length) problems.push(`timers scheduled by presence.set() after close(): ${afterPoke.join(', ')}`);
  if (listeners) problems.push(`${listeners} EventSource listener(s) left`);
  assert.deepEqual(problems, [], `${kase}: the closed client left work behind`);
}

for (const transport of ['ws', 'sse', 'poll']) {
  describe(`close() over ${transport}`, () => {
    test('with ops waiting to be re-sent after rate_limited', async (t) => {
      const srv = await startSyncServer(t, ['--rate', '1', '--burst', '4']);
      checkClean('rate_limited', await runChild(srv.url, transport, 'rate_limited'));
    });

    test('with a presence update scheduled', async (t) => {
      const srv = await startSyncServer(t, SERVER_ARGS);
      checkClean('presence', await runChild(srv.url, transport, 'presence'));
    });

    test('offline, with a reconnect attempt hanging on a silent network', async (t) => {
      const srv = await startSyncServer(t, SERVER_ARGS);
      const proxy = await holdingProxy(t, srv.port);
      checkClean('offline', await runChild(proxy.url, transport, 'offline', (step) => step === 'online' && proxy.hold()));
    });
  });
}

test('close() over SSE through an EventSource removes every listener it added', async (t) => {
  const srv = await startSyncServer(t, SERVER_ARGS);
  checkClean('eventsource', await runChild(srv.url, 'sse', 'eventsource'));
});
