// sync-storefault.test.mjs -- what clients see when the store fails
// (docs/PROTOCOL.md 11.1, docs/SERVER.md "a failed commit"): the server runs
// with --store-faults FILE, and a test arms the next N commits, dedupe
// lookups or reads to fail by writing "commit N" (or "dedupe N", "read N")
// into FILE. A failed commit stores nothing: its ops are refused with
// `internal` (with re, for and cid), nobody sees them, and the room serves
// the next op at the seq the store expects.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test from 'node:test';

import { scale } from './lib/server.mjs';
import { SyncClient, api, closeClients, fetchMetrics, snapshotOf, startSyncServer, token } from './lib/sync.mjs';

const KEY = 'storefault-api-key-0123456789';
const faultsDir = mkdtempSync(path.join(tmpdir(), 'wsync-faults-'));
const faults = path.join(faultsDir, 'faults');
const arm = (line) => writeFileSync(faults, `${line}\n`);

let srv;
test.before(async () => {
  srv = await startSyncServer(null, ['--store-faults', faults, '--api-key', KEY, '--rate', '100000', '--burst', '100000']);
});
test.after(async () => {
  try {
    await srv.stopChecked();
  } finally {
    rmSync(faultsDir, { recursive: true, force: true });
  }
});

let dev = 0;
const connect = (user) => SyncClient.connect(srv.url, { token: token(user), device: `d${++dev}` });
const isEntry = (room) => (m) => (m.type === 'op' || m.type === 'message') && m.room === room;
const history = async (room) => {
  const r = await api(srv.url, 'GET', `/v1/rooms/${room}/history?limit=1000`, { key: KEY });
  assert.equal(r.status, 200, r.text);
  return r.body.entries;
};

test('a failed commit: its op is refused with re and for, nobody sees it, and the room serves the next op', async () => {
  const room = 'board:fail1';
  const a = await connect('alice');
  const b = await connect('bob');
  await a.join(room);
  await b.join(room);
  const first = await a.set(room, 'a.1', 'c1', { title: 'one' });
  assert.equal(first.seq, 1);
  const before = await fetchMetrics(srv.url, KEY);

  arm('commit 1');
  const refused = await a.request({ type: 'op', id: 7, room, cid: 'a.2', op: { kind: 'set', item: 'c1', fields: { title: 'two' } } });
  assert.deepEqual(
    { type: refused.type, re: refused.re, for: refused.for, code: refused.code, room: refused.room, cid: refused.cid },
    { type: 'error', re: 7, for: 'op', code: 'internal', room, cid: 'a.2' },
  );

  // Before the fix the room's seq stayed at 2 in memory while the store was
  // at 1, and this op failed with "seq 3 does not follow the room's seq 1".
  const next = await a.set(room, 'a.3', 'c1', { title: 'three' });
  assert.equal(next.seq, 2, 'the failed op used no seq');

  // The failed op is applied once when re-sent with its cid, and a second
  // re-send is a duplicate of that.
  const again = await a.set(room, 'a.2', 'c1', { title: 'two' });
  assert.equal(again.seq, 3);
  assert.equal(again.duplicate, undefined);
  const dup = await a.set(room, 'a.2', 'c1', { title: 'two' });
  assert.deepEqual([dup.seq, dup.duplicate], [3, true]);

  // Bob saw exactly the stored entries, in order, and never the refused op.
  const seen = await b.take(3, isEntry(room), 'three entries');
  assert.deepEqual(seen.map((e) => [e.seq, e.cid, e.op.fields.title]), [[1, 'a.1', 'one'], [2, 'a.3', 'three'], [3, 'a.2', 'two']]);
  assert.equal(b.drain(isEntry(room)).length, 0);
  assert.ok(a.open && b.open, 'members keep their connections');

  assert.deepEqual((await history(room)).map((e) => e.seq), [1, 2, 3]);
  const s = await snapshotOf(srv.url, room);
  assert.deepEqual([s.seq, s.items.c1], [3, { version: 3, fields: { title: 'two' } }]);
  const after = await fetchMetrics(srv.url, KEY);
  assert.equal(after.get('wsync_commit_failures_total') - before.get('wsync_commit_failures_total'), 1);
  await srv.waitForLog(/room board:fail1 reloaded from the store at seq 1/);
  await closeClients(a, b);
});

test('a commit failing under a burst: every op is answered, acked seqs are gapless, re-sends apply each once', async () => {
  const room = 'board:burst';
  const a = await connect('carol');
  const b = await connect('dave');
  await a.join(room);
  await b.join(room);
  const n = scale(300, 80);
  const send = (i) => a.request({ type: 'op', room, cid: `c.${i}`, op: { kind: 'set', item: `i${i % 7}`, fields: { n: i } } });
  const head = await Promise.all(Array.from({ length: 20 }, (_, i) => send(i)));
  arm('commit 1');
  const tail = await Promise.all(Array.from({ length: n - 20 }, (_, i) => send(20 + i)));
  const replies = [...head, ...tail];
  const failed = replies.map((r, i) => [r, i]).filter(([r]) => r.type === 'error');
  assert.ok(failed.length > 0, 'the armed commit failed some ops');
  for (const [r] of failed) assert.equal(r.code, 'internal', JSON.stringify(r));
  for (const r of replies) assert.ok(r.type === 'ack' || r.type === 'error', JSON.stringify(r));
  const acked = replies.filter((r) => r.type === 'ack').map((r) => r.seq).sort((x, y) => x - y);
  assert.deepEqual(acked, acked.map((_, i) => i + 1), 'acked seqs are 1..k with no gap');

  for (const [, i] of failed) {
    const r = await send(i);
    assert.equal(r.type, 'ack', JSON.stringify(r));
  }
  const h = await history(room);
  assert.deepEqual(h.map((e) => e.seq), h.map((_, i) => i + 1), 'the log is gapless');
  assert.equal(h.length, n, 'every op is stored once');
  assert.deepEqual(new Set(h.map((e) => e.cid)).size, n);
  // The other member received the stored entries exactly, in order.
  const seen = await b.take(n, isEntry(room), `${n} entries`);
  assert.deepEqual(seen.map((e) => e.seq), h.map((e) => e.seq));
  assert.deepEqual(seen.map((e) => e.cid), h.map((e) => e.cid));
  await closeClients(a, b);
});

test('a dedupe lookup the store cannot answer refuses the re-sent op instead of applying it twice', async () => {
  const room = 'board:dedupe';
  const a = await connect('erin');
  await a.join(room);
  const orig = await a.set(room, 'e.1', 'x', { v: 1 });
  const before = await fetchMetrics(srv.url, KEY);
  arm('dedupe 1');
  // The cid is committed (not pending any more): only the store can tell.
  const r = await a.request({ type: 'op', id: 'r1', room, cid: 'e.1', op: { kind: 'set', item: 'x', fields: { v: 1 } } });
  assert.deepEqual([r.type, r.code, r.re, r.cid], ['error', 'internal', 'r1', 'e.1']);
  assert.deepEqual((await history(room)).map((e) => e.seq), [orig.seq], 'nothing was applied');
  // Refused before it was sequenced: had it been taken for new, only the
  // store's unique (device, cid) would have stopped it, failing a whole
  // batch (and every other op in it).
  const after = await fetchMetrics(srv.url, KEY);
  assert.equal(after.get('wsync_commit_failures_total'), before.get('wsync_commit_failures_total'), 'no commit failed');
  const dup = await a.set(room, 'e.1', 'x', { v: 1 });
  assert.deepEqual([dup.seq, dup.duplicate], [orig.seq, true]);
  await closeClients(a);
});

// While a batch commits, the next one fills; once the first is committed,
// the next goes to the store before the first's acks are written
// (commit.c). A next batch that stores nothing (only a duplicate) would
// complete at once: its answer must still come after its original's ack.
test('a duplicate sent while its original commits is answered after the original, and before the writes behind it', async () => {
  const room = 'board:order';
  const a = await connect('gina');
  await a.join(room);
  const pause = (ms) => new Promise((r) => setTimeout(r, ms));
  const op = (cid, v) => ({ type: 'op', room, cid, op: { kind: 'set', item: 'x', fields: { v } } });
  const acks = (n) => a.take(n, (m) => m.type === 'ack' && m.room === room, 'acks');
  const view = (m) => [m.cid, m.seq, m.duplicate === true];

  arm('delay 400'); // the next commit is held
  a.send(op('g.1', 1));
  await pause(150);
  a.send(op('g.1', 1)); // its batch stores nothing
  assert.deepEqual((await acks(2)).map(view), [['g.1', 1, false], ['g.1', 1, true]]);

  arm('delay 400');
  a.send(op('g.2', 2));
  await pause(150);
  a.send(op('g.2', 2));
  a.send(op('g.3', 3)); // this batch stores something: it goes to the store early
  assert.deepEqual((await acks(3)).map(view), [['g.2', 2, false], ['g.2', 2, true], ['g.3', 3, false]]);
  assert.deepEqual((await history(room)).map((e) => [e.seq, e.cid]), [[1, 'g.1'], [2, 'g.2'], [3, 'g.3']]);
  await closeClients(a);
});

test('a failed read: join and the backend API answer internal, and serve again after it', async () => {
  const a = await connect('frank');
  arm('read 1');
  const e = await a.expectError({ type: 'join', room: 'board:read' }, 'internal');
  assert.ok(e.re !== undefined);
  await a.join('board:read');
  await a.set('board:read', 'f.1', 'x', { v: 1 });

  arm('read 1');
  const r = await api(srv.url, 'GET', '/v1/rooms/board:read', { key: KEY });
  assert.equal(r.status, 500, r.text);
  assert.deepEqual([r.body.type, r.body.code], ['error', 'internal']);
  assert.equal(r.body.epoch, undefined, 'no epoch from an uninitialized read');
  const ok = await api(srv.url, 'GET', '/v1/rooms/board:read', { key: KEY });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.body.seq, 1);
  assert.equal(typeof ok.body.epoch, 'string');
  await closeClients(a);
});
