// client-node.test.mjs -- the JavaScript client (clients/js/wsync.js) as a
// Node application uses it, each "run" a fresh process (lib/node-run.mjs):
// the device id persisted in a file (options.deviceFile) is the same in the
// next run, so that run takes over its device's session and a job re-sent
// with the same cid is recognized as a duplicate (PROTOCOL.md 5.5) rather
// than applied twice; without it every run is a new device. And the
// WebSocket in Node: the runtime's global one when it has it, else (no `ws`
// passed) one console.warn saying SSE is used and how to install `ws`.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Client, SERVER_ARGS, makeClient } from './lib/client-util.mjs';
import { WAIT_MS, withTimeout } from './lib/server.mjs';
import { startSyncServer, token } from './lib/sync.mjs';

const RUN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'lib', 'node-run.mjs');

/** Runs lib/node-run.mjs once with opts; resolves its report {device, transport, items, publish, warnings}, plus stderr. */
function run(opts, nodeArgs = []) {
  const child = spawn(process.execPath, [...nodeArgs, RUN, JSON.stringify(opts)], {
    cwd: path.dirname(RUN),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const done = new Promise((resolve) => child.on('close', (code) => resolve(code)));
  return withTimeout(done, WAIT_MS * 2, 'node-run.mjs').then((code) => {
    const line = stdout.split('\n').find((l) => l.startsWith('{'));
    const report = line ? JSON.parse(line) : undefined;
    assert.ok(report && !report.error && code === 0, `node-run.mjs failed (exit ${code}): ${stdout}\n${stderr}`);
    return { ...report, stderr };
  });
}

function tmp(t) {
  const dir = mkdtempSync(path.join(tmpdir(), 'wsync-node-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('the device id across runs', () => {
  let srv;
  test('server', async () => {
    srv = await startSyncServer(null, SERVER_ARGS);
  });

  test('two runs with the same deviceFile: one device; the second catches up and its re-sent job is a duplicate', async (t) => {
    const file = path.join(tmp(t), 'device');
    const base = { url: srv.url, token: token('worker'), room: 'jobs:node', deviceFile: file, ws: true };
    const first = await run({ ...base, set: { a: { n: 1 } }, publishCid: 'job-42' });
    assert.match(first.device, /^[A-Za-z0-9._:-]{1,64}$/);
    assert.equal(readFileSync(file, 'utf8').trim(), first.device, 'the file holds the device id');
    assert.equal(first.publish.duplicate, undefined, 'the job is new');

    // Someone else writes while no run is up.
    const other = makeClient(t, srv.url, { user: 'bob' });
    await other.room('jobs:node').set('b', { n: 2 });

    const second = await run({ ...base, publishCid: 'job-42' });
    assert.equal(second.device, first.device, 'the same device in the next run');
    assert.deepEqual(second.items, { a: { n: 1 }, b: { n: 2 } }, 'it has what happened meanwhile');
    assert.equal(second.publish.duplicate, true, 'the job re-sent with its cid was not applied twice');
    assert.equal(second.publish.seq, first.publish.seq);
  });

  test('without deviceFile every run is a new device (the default in Node)', async () => {
    const base = { url: srv.url, token: token('worker'), room: 'jobs:node2', ws: true };
    const [x, y] = [await run(base), await run(base)];
    assert.notEqual(x.device, y.device);
  });

  test('a deviceFile that holds no device id is refused, not overwritten', async (t) => {
    const file = path.join(tmp(t), 'device');
    writeFileSync(file, 'not a device id!\n');
    assert.throws(() => new Client(srv.url, { token: token('worker'), deviceFile: file }), /deviceFile/);
    assert.equal(readFileSync(file, 'utf8'), 'not a device id!\n');
  });

  test('stop', async () => {
    await srv.stopChecked();
  });
});

describe('WebSocket in Node', () => {
  let srv;
  test('server', async () => {
    srv = await startSyncServer(null, SERVER_ARGS);
  });

  test('no `ws` and no global WebSocket: SSE, and one warning saying so and how to install ws', async () => {
    const r = await run({ url: srv.url, token: token('worker'), room: 'rt:1', clients: 2 });
    if (typeof globalThis.WebSocket === 'function') return; // Node >= 22: covered below
    assert.equal(r.transport, 'sse');
    assert.equal(r.warnings.length, 1, `one warning for two clients: ${JSON.stringify(r.warnings)}`);
    assert.match(r.warnings[0], /SSE/);
    assert.match(r.warnings[0], /npm install ws/);
  });

  test('a runtime with a global WebSocket: used, no warning', async () => {
    const r = await run({ url: srv.url, token: token('worker'), room: 'rt:2', clients: 2 },
      typeof globalThis.WebSocket === 'function' ? [] : ['--experimental-websocket']);
    assert.equal(r.transport, 'ws');
    assert.deepEqual(r.warnings, []);
  });

  test('stop', async () => {
    await srv.stopChecked();
  });
});
