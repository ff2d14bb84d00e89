// sync-join-memory.test.mjs -- a join to a loaded room with nothing pending
// is served from memory (src/sync/join.c; PERFORMANCE.md issue 15): its seq,
// epoch, document and device cursors, with no store read on the loop. Proved
// with the fault-injecting store: the next store reads are armed to fail
// ("read N" in the --store-faults file), and joins to the loaded room still
// succeed with the right state, while a join that must read (a room not
// loaded, a catch-up with entries to replay) fails with `internal`, which
// shows the reads were armed.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test from 'node:test';

import { SyncClient, fetchMetrics, startSyncServer, token } from './lib/sync.mjs';

const KEY = 'join-memory-key-0123';

const faultsDir = mkdtempSync(path.join(tmpdir(), 'wsync-faults-'));
const faults = path.join(faultsDir, 'faults');
test.after(() => rmSync(faultsDir, { recursive: true, force: true }));
const arm = (line) => writeFileSync(faults, line ? `${line}\n` : '');

test('joins to a loaded room read nothing from the store', async (t) => {
  arm('');
  const srv = await startSyncServer(t, ['--store-faults', faults, '--rate', '100000', '--burst', '100000', '--api-key', KEY]);
  const room = 'board:mem';
  const laptop = await SyncClient.connect(srv.url, { token: token('alice'), device: 'laptop' });
  t.after(() => laptop.close());
  const j0 = await laptop.join(room);
  await laptop.set(room, 'l.1', 'card-1', { title: 'one' });
  await laptop.set(room, 'l.2', 'card-2', { title: 'two', body: '' });
  const text = await laptop.request({ type: 'op', room, cid: 'l.3', op: { kind: 'text', item: 'card-2', field: 'body', rev: 0, ops: ['hello'] } });
  assert.equal(text.type, 'ack');
  laptop.send({ type: 'cursor', room, seq: 2 });
  // A ping round trip: the cursor was handled; one more op commits it with its batch.
  const last = await laptop.set(room, 'l.4', 'card-1', { title: 'one!' });
  assert.equal(last.seq, 4);

  arm('read 1000');
  const phone = await SyncClient.connect(srv.url, { token: token('alice'), device: 'phone' });
  t.after(() => phone.close());

  await t.test('a snapshot join: seq, epoch, document and cursors from memory', async () => {
    const j = await phone.join(room);
    assert.equal(j.epoch, j0.epoch);
    assert.equal(j.seq, 4);
    assert.equal(j.recovered, false);
    assert.deepEqual(j.snapshot.items['card-1'].fields, { title: 'one!' });
    assert.deepEqual(j.snapshot.items['card-2'].fields, { title: 'two', body: 'hello' });
    assert.equal(j.snapshot.items['card-2'].revs.body, text.rev);
    assert.deepEqual(j.cursors, [{ device: 'laptop', seq: 2 }]);
  });

  await t.test('a catch-up with nothing to replay', async () => {
    const j = await phone.join(room, { since: { epoch: j0.epoch, seq: 4 } });
    assert.equal(j.recovered, true);
    assert.deepEqual(j.ops, []);
  });

  await t.test('live entries still reach the new member after such a join', async () => {
    const n = await laptop.set(room, 'l.5', 'card-3', { title: 'three' });
    const e = await phone.entry(room, n.seq);
    assert.equal(e.op.item, 'card-3');
  });

  await t.test('the reads were armed: a join that must read fails with internal', async () => {
    const r1 = await phone.request({ type: 'join', room, since: { epoch: j0.epoch, seq: 1 } });
    assert.equal(r1.type, 'error');
    assert.equal(r1.code, 'internal');
    const r2 = await phone.request({ type: 'join', room: 'board:not-loaded' });
    assert.equal(r2.type, 'error');
    assert.equal(r2.code, 'internal');
  });

  await t.test('a join while entries of the room are pending waits for them, and still reads nothing', async () => {
    // Bursts of writes, each followed at once by a join from another
    // connection, until a join found the room's entries pending (the
    // metric counts it); with the reads armed, a join that read the store
    // instead would get internal.
    let waited = 0;
    let round = 0;
    for (; round < 40 && waited === 0; round++) {
      const acks = [];
      for (let i = 0; i < 40; i++) {
        acks.push(laptop.request({ type: 'op', room, cid: `b.${round}.${i}`, op: { kind: 'set', item: `burst-${i}`, fields: { round, pad: 'x'.repeat(2000) } } }));
      }
      const j = await phone.request({ type: 'join', room });
      assert.equal(j.type, 'joined', JSON.stringify(j).slice(0, 300));
      assert.equal(j.more, undefined, 'one part');
      const done = await Promise.all(acks);
      for (const a of done) assert.equal(a.type, 'ack');
      // The state is the committed one: every op of the burst the server
      // had before the join is in it (seq order: those up to joined.seq).
      done.forEach((a, i) => {
        if (a.seq <= j.seq) assert.equal(j.snapshot.items[`burst-${i}`]?.fields.round, round, `burst-${i}`);
      });
      waited = (await fetchMetrics(srv.url, KEY)).get('wsync_joins_waited_total');
    }
    assert.ok(waited > 0, `no join found entries pending in ${round} rounds`);
  });

  arm('');
  await t.test('with the store back, the catch-up reads the log', async () => {
    const j = await phone.join(room, { since: { epoch: j0.epoch, seq: 1 } });
    assert.equal(j.recovered, true);
    assert.deepEqual(j.ops.map((o) => o.seq), Array.from({ length: j.seq - 1 }, (_, i) => i + 2));
  });
});
