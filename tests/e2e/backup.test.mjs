// backup.test.mjs -- scripts/backup.sh (docs/DEPLOY.md): an online backup of
// a live server under a steady stream of writes, restored into a new data
// directory and served by a second server: the restored room is a prefix of
// the original's log (same epoch, same entries, the items of exactly that
// prefix), at least as long as what was acknowledged before the backup began.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';

import { startServer, WAIT_MS, withTimeout } from './lib/server.mjs';
import { api } from './lib/sync.mjs';

const SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../scripts/backup.sh');
const KEY = 'backup-key-0123456789';
const ROOM = 'board:backup';

function run(args) {
  return withTimeout(new Promise((resolve, reject) => {
    const p = spawn('bash', [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('exit', (code) => resolve({ code, out, err }));
  }), WAIT_MS * 3, `backup.sh ${args[0]}`);
}

async function history(url, room) {
  const out = [];
  for (let from = 1; ;) {
    const r = await api(url, 'GET', `/v1/rooms/${room}/history?from=${from}&limit=1000`, { key: KEY });
    assert.equal(r.status, 200, r.text);
    out.push(...r.body.entries);
    if (!r.body.more) return out;
    from = r.body.entries.at(-1).seq + 1;
  }
}

test('backup of a live server under writes, restored into a new server', { skip: spawnSync('sqlite3', ['--version']).error ? 'no sqlite3 shell' : false }, async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-backup-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const srv = await startServer(t, ['--api-key', KEY], { echo: false });

  // A writer that never stops until told: one set per op, item i<k> = {n: k}.
  let acked = 0;
  let stop = false;
  const writer = (async () => {
    for (let k = 1; !stop; k++) {
      const r = await api(srv.url, 'POST', `/v1/rooms/${ROOM}/ops`, { key: KEY, body: { op: { kind: 'set', item: `i${k}`, fields: { n: k, pad: 'x'.repeat(200) } } } });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.seq, k);
      acked = k;
    }
  })();
  while (acked < 200) await new Promise((r) => setTimeout(r, 10));

  const file = path.join(tmp, 'wsync-backup.db');
  const ackedBefore = acked;
  const b = await run(['backup', srv.dataDir, file]);
  const ackedAfter = acked;
  assert.equal(b.code, 0, b.err);
  assert.match(b.out, /bytes, schema \d+/);
  assert.ok(ackedAfter > ackedBefore, 'writes went on during the backup');
  // A second backup to the same name is refused (nothing overwritten).
  const again = await run(['backup', srv.dataDir, file]);
  assert.notEqual(again.code, 0);
  assert.match(again.err, /exists/);
  for (let n = acked; acked < n + 50;) await new Promise((r) => setTimeout(r, 10));
  stop = true;
  await writer;

  const restored = path.join(tmp, 'restored');
  const r = await run(['restore', file, restored]);
  assert.equal(r.code, 0, r.err);
  assert.equal(fs.statSync(restored).mode & 0o777, 0o700);
  const refused = await run(['restore', file, restored]);
  assert.notEqual(refused.code, 0, 'a restore never overwrites a database');

  const srv2 = await startServer(t, ['--api-key', KEY], { echo: false, dataDir: restored });
  const orig = (await api(srv.url, 'GET', `/v1/rooms/${ROOM}`, { key: KEY })).body;
  const copy = (await api(srv2.url, 'GET', `/v1/rooms/${ROOM}`, { key: KEY })).body;
  assert.equal(copy.epoch, orig.epoch);
  assert.ok(copy.seq >= ackedBefore && copy.seq <= orig.seq, `restored seq ${copy.seq} in [${ackedBefore}, ${orig.seq}]`);
  // The items are exactly those of the prefix 1..seq.
  assert.equal(Object.keys(copy.items).length, copy.seq);
  for (let k = 1; k <= copy.seq; k++) assert.equal(copy.items[`i${k}`].fields.n, k);
  // The log is the original's prefix, entry for entry.
  const h1 = await history(srv.url, ROOM);
  const h2 = await history(srv2.url, ROOM);
  assert.equal(h2.length, copy.seq);
  assert.deepEqual(h2, h1.slice(0, copy.seq));
  // The restored server takes writes after the restored prefix.
  const w = await api(srv2.url, 'POST', `/v1/rooms/${ROOM}/ops`, { key: KEY, body: { op: { kind: 'set', item: 'after', fields: {} } } });
  assert.equal(w.body.seq, copy.seq + 1);
  assert.equal(w.body.epoch, orig.epoch);
});

test('backup.sh refuses what is not a wsync database, and bad usage', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wsync-backup-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  assert.notEqual((await run([])).code, 0);
  assert.match((await run(['backup', path.join(tmp, 'none'), path.join(tmp, 'x.db')])).err, /no such database/);
  fs.writeFileSync(path.join(tmp, 'junk.db'), 'not a database at all, just text');
  const r = await run(['restore', path.join(tmp, 'junk.db'), path.join(tmp, 'd')]);
  assert.notEqual(r.code, 0);
  assert.ok(!fs.existsSync(path.join(tmp, 'd', 'wsync.db')));
});
