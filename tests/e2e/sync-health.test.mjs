// sync-health.test.mjs -- /healthz and /metrics while the store fails
// (docs/PROTOCOL.md 2.3, 12.7): with every commit failing (the fault store,
// --store-faults), /healthz says "degraded" with a reason and 503 (or the
// status of --degraded-status), /metrics counts the failed entries apart from
// the committed ones; the next successful commit brings "ok" back.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';

import { api, fetchMetrics, startSyncServer } from './lib/sync.mjs';

const KEY = 'health-key-0123456789';

async function setup(t, extra = []) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-faults-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const faults = path.join(dir, 'faults');
  const srv = await startSyncServer(t, ['--api-key', KEY, '--store-faults', faults, ...extra]);
  const post = (room, item) => api(srv.url, 'POST', `/v1/rooms/${room}/ops`,
    { key: KEY, body: { op: { kind: 'set', item, fields: { v: 1 } } } });
  const health = async () => {
    const r = await fetch(`${srv.url}/healthz`);
    return { status: r.status, body: await r.json() };
  };
  return { srv, faults, post, health };
}

test('commits failing: /healthz degraded with a reason and 503, then ok again', async (t) => {
  const { faults, post, health, srv } = await setup(t);
  assert.equal((await post('board:h', 'a')).status, 200);
  let h = await health();
  assert.equal(h.status, 200);
  assert.equal(h.body.status, 'ok');

  fs.writeFileSync(faults, 'commit 3\n');
  for (const item of ['b', 'c', 'd']) assert.equal((await post('board:h', item)).status, 500);
  h = await health();
  assert.equal(h.status, 503);
  assert.equal(h.body.status, 'degraded');
  assert.match(h.body.reason, /commit/);
  assert.match(h.body.reason, /injected fault/);

  const m = await fetchMetrics(srv.url, KEY);
  assert.equal(m.get('wsync_ops_committed_total'), 1);
  assert.equal(m.get('wsync_ops_failed_total'), 3);
  assert.equal(m.get('wsync_ops_accepted_total'), 4, 'accepted counts sequencing: committed + failed');

  // The next commit that succeeds ends the degraded state.
  assert.equal((await post('board:h', 'e')).status, 200);
  h = await health();
  assert.equal(h.status, 200);
  assert.equal(h.body.status, 'ok');
  assert.equal(h.body.reason, undefined);
  const m2 = await fetchMetrics(srv.url, KEY);
  assert.equal(m2.get('wsync_ops_committed_total'), 2);
  assert.equal(m2.get('wsync_ops_failed_total'), 3);
  // HEAD gives the same status.
  fs.writeFileSync(faults, 'commit 1\n');
  assert.equal((await post('board:h', 'f')).status, 500);
  assert.equal((await fetch(`${srv.url}/healthz`, { method: 'HEAD' })).status, 503);
});

test('--degraded-status 200: degraded is reported in the body only', async (t) => {
  const { faults, post, health } = await setup(t, ['--degraded-status', '200']);
  assert.equal((await post('board:h2', 'first')).status, 200);
  fs.writeFileSync(faults, 'commit 1\n');
  assert.equal((await post('board:h2', 'a')).status, 500);
  const h = await health();
  assert.equal(h.status, 200);
  assert.equal(h.body.status, 'degraded');
});

test('/metrics: the help texts say what each op counter counts', async (t) => {
  const { srv } = await setup(t);
  const text = await (await fetch(`${srv.url}/metrics`, { headers: { Authorization: `Bearer ${KEY}` } })).text();
  assert.match(text, /# HELP wsync_ops_committed_total .*committed/);
  assert.match(text, /# HELP wsync_ops_failed_total .*not stored|failed/);
  assert.match(text, /# TYPE wsync_ops_committed_total counter/);
  assert.match(text, /# TYPE wsync_ops_failed_total counter/);
});
