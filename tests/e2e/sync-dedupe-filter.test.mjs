// sync-dedupe-filter.test.mjs -- the dedupe filter grows with the cids it
// holds (src/sync/cidf.h): with --dedupe-filter 64 (a first layer of 64
// cids), 3,000 new ops still skip the store lookup nearly always
// (wsync_dedupe_lookups_total), where a filter of fixed size would have
// sent nearly every op to the store. Re-sent cids are duplicates with their
// original seq before and after a restart, and after the restart the filter
// is sized for twice the records the store holds.
import assert from 'node:assert/strict';
import test from 'node:test';

import { SyncClient, fetchMetrics, restartableServer, token } from './lib/sync.mjs';

const KEY = 'dedupe-filter-e2e-key';
const N = 3000;

const figures = async (url) => {
  const m = await fetchMetrics(url, KEY);
  return { lookups: m.get('wsync_dedupe_lookups_total'), bytes: m.get('wsync_dedupe_filter_bytes') };
};

/** Sends the ops of cids [from, to) pipelined; resolves their acks in order. */
const writeAll = (c, room, from, to) => {
  const out = [];
  for (let i = from; i < to; i++) {
    out.push(c.request({ type: 'op', room, cid: `f.${i}`, op: { kind: 'set', item: `it-${i % 50}`, fields: { n: i } } }));
  }
  return Promise.all(out);
};

test('the dedupe filter grows with its cids, and re-sent cids stay duplicates across a restart', async (t) => {
  const h = await restartableServer(t, ['--rate', '1000000', '--burst', '1000000', '--api-key', KEY, '--dedupe-filter', '64']);
  const room = 'board:filter';
  const hello = { token: token('alice'), device: 'tablet' };
  let c = await SyncClient.connect(h.url, hello);
  await c.join(room);

  const f0 = await figures(h.url);
  assert.equal(f0.lookups, 0);
  assert.ok(f0.bytes >= 128 && f0.bytes < 1024, `a first layer of 64 cids: ${f0.bytes} bytes`);

  const acks = await writeAll(c, room, 0, N);
  acks.forEach((a, i) => assert.deepEqual([a.type, a.cid, a.seq, a.duplicate], ['ack', `f.${i}`, i + 1, undefined]));
  const f1 = await figures(h.url);
  // 2 bytes per cid of capacity, layers doubling from 64: at least the N held.
  assert.ok(f1.bytes >= 2 * N, `the filter grew to hold ${N} cids: ${f1.bytes} bytes`);
  // About 0.2% per full layer (6 here); a filter that kept its 64-cid size
  // would answer "maybe" for nearly every one of them.
  assert.ok(f1.lookups < N * 0.03, `${f1.lookups} store lookups for ${N} new cids`);

  await t.test('re-sent cids are duplicates with their original seq', async () => {
    for (const i of [0, 1, 63, 64, 1000, N - 1]) {
      const d = await c.request({ type: 'op', room, cid: `f.${i}`, op: { kind: 'set', item: `it-${i % 50}`, fields: { n: i } } });
      assert.deepEqual([d.type, d.seq, d.duplicate], ['ack', i + 1, true], JSON.stringify(d));
    }
  });

  await c.close();
  await h.stop();
  await h.start();
  c = await SyncClient.connect(h.url, hello);
  t.after(() => c.close());
  await c.join(room);

  await t.test('after a restart the filter is one layer sized for twice the records', async () => {
    const f = await figures(h.url);
    assert.equal(f.lookups, 0);
    // 2 * N cids of capacity at 2 bytes each, rounded up to 64-byte blocks.
    assert.ok(f.bytes >= 4 * N && f.bytes < 4 * N + 64, `${f.bytes} bytes`);
  });

  await t.test('every old cid is still a duplicate, each found by a store lookup', async () => {
    const dups = await writeAll(c, room, 0, N);
    dups.forEach((d, i) => assert.deepEqual([d.type, d.seq, d.duplicate], ['ack', i + 1, true], JSON.stringify(d)));
    const f = await figures(h.url);
    assert.equal(f.lookups, N, 'the filter held every recorded cid: each re-send was read from the store');
  });

  await t.test('new cids after the restart mostly skip the store', async () => {
    const before = (await figures(h.url)).lookups;
    const fresh = await writeAll(c, room, N, 2 * N);
    fresh.forEach((a, i) => assert.deepEqual([a.type, a.seq, a.duplicate], ['ack', N + i + 1, undefined]));
    const f = await figures(h.url);
    assert.ok(f.lookups - before < N * 0.03, `${f.lookups - before} store lookups for ${N} new cids`);
  });
});
