// sync-stream.test.mjs -- a large snapshot is sent in parts (docs/PROTOCOL.md
// 6.3, src/sync/stream.h): the joined reply carries the first part and
// `more: true`, `snapshot` messages carry the rest, the last with `more:
// false`. Checked here, on real sockets: the parts add up to exactly the
// state at joined.seq; the room's live entries (all after joined.seq, in seq
// order, none missing) and other rooms' traffic reach the joiner between the
// parts; the JS client assembles the parts and applies the entries after
// them; small snapshots keep the one-message form.
import assert from 'node:assert/strict';
import test from 'node:test';

import { docOf, makeClient, SERVER_ARGS, settled } from './lib/client-util.mjs';
import { SyncClient, startSyncServer, token } from './lib/sync.mjs';

const ITEMS = 200;
const FIELD = 50000; // 200 x 50 kB: a 10 MB snapshot

/** Fills room with ITEMS items of about FIELD bytes; returns the expected items. */
async function fill(c, room) {
  const want = {};
  for (let i = 0; i < ITEMS; i += 20) { // 1 MB at a time: the writer gets every set back as a broadcast
    const acks = [];
    for (let k = i; k < i + 20; k++) {
      const id = `item-${String(k).padStart(3, '0')}`;
      const fields = { n: k, body: `${k}:`.padEnd(FIELD, 'abcdefghij') };
      want[id] = fields;
      acks.push(c.request({ type: 'op', room, cid: `f.${k}`, op: { kind: 'set', item: id, fields } }));
    }
    for (const a of await Promise.all(acks)) assert.equal(a.type, 'ack');
  }
  return want;
}

test('a 10 MB snapshot in parts, with live entries and other rooms in between', async (t) => {
  const srv = await startSyncServer(t, ['--rate', '1000000', '--burst', '1000000']);
  const big = 'doc:big';
  const other = 'chat:other';
  const writer = await SyncClient.connect(srv.url, { token: token('writer'), device: 'w' });
  t.after(() => writer.close());
  await writer.join(big);
  await writer.join(other);
  const want = await fill(writer, big);

  const joiner = await SyncClient.connect(srv.url, { token: token('joiner'), device: 'j' });
  t.after(() => joiner.close());
  await joiner.join(other);

  // Traffic in the other room (and live writes in the big one) until the
  // joiner has the last part.
  let done = false;
  let published = 0;
  let written = 0;
  const pump = (async () => {
    while (!done) {
      const a = await writer.request({ type: 'publish', room: other, cid: `p.${published}`, data: { k: published } });
      assert.equal(a.type, 'ack');
      published++;
    }
  })();

  const mark = joiner.log.length;
  const joined = await joiner.join(big);
  const writes = (async () => {
    while (!done) {
      const a = await writer.request({ type: 'op', room: big, cid: `live.${written}`, op: { kind: 'set', item: 'item-000', fields: { live: written } } });
      assert.equal(a.type, 'ack');
      written++;
    }
  })();
  assert.equal(joined.more, true, 'a 10 MB snapshot comes in parts');
  await joiner.waitFor((m) => m.type === 'snapshot' && m.room === big && m.more === false, 'the last part', 60000);
  done = true;
  await Promise.all([pump, writes]);
  await writer.ping();
  await joiner.ping();

  const after = joiner.log.slice(mark);
  const iJoined = after.indexOf(joined);
  const iLast = after.findIndex((m) => m.type === 'snapshot' && m.more === false);
  const parts = after.filter((m) => m.type === 'snapshot');
  assert.ok(parts.length >= 2, `${parts.length} parts after the joined`);
  assert.equal(parts.filter((m) => m.more === false).length, 1, 'one last part');
  assert.ok(iJoined < iLast);

  await t.test('the parts add up to the state at joined.seq', () => {
    const items = { ...joined.snapshot.items };
    for (const p of parts) {
      for (const id of Object.keys(p.items)) assert.equal(items[id], undefined, `${id} sent twice`);
      Object.assign(items, p.items);
    }
    assert.deepEqual(Object.keys(items).sort(), Object.keys(want).sort());
    for (const [id, f] of Object.entries(want)) assert.deepEqual(items[id].fields, f, id);
    assert.equal(joined.seq, ITEMS);
  });

  await t.test('live entries of the room: after joined.seq, in order, none missing', () => {
    const seqs = after.filter((m) => m.type === 'op' && m.room === big).map((m) => m.seq);
    assert.ok(seqs.length >= 1);
    assert.deepEqual(seqs, seqs.map((_, i) => joined.seq + 1 + i));
  });

  await t.test("the other room's traffic arrived between the parts, complete and in order", () => {
    const msgs = after.filter((m) => m.type === 'message' && m.room === other);
    const between = after.slice(iJoined + 1, iLast).filter((m) => m.type === 'message' && m.room === other);
    assert.ok(between.length >= 1, 'other rooms flow while the snapshot is sent');
    const ks = msgs.map((m) => m.data.k);
    assert.deepEqual(ks, ks.map((_, i) => ks[0] + i), 'no message of the other room lost or reordered');
  });

  await t.test('a small snapshot keeps the one-message form', async () => {
    const j = await joiner.join(other);
    assert.equal(j.more, undefined);
  });

  await t.test('the JS client assembles the parts and applies live entries after them', async () => {
    const c = makeClient(t, srv.url, { user: 'js' });
    const room = c.room(big);
    await room.ready;
    const w = await writer.set(big, 'after.1', 'item-001', { late: true });
    await settled([room], w.seq);
    const doc = docOf(room);
    assert.equal(Object.keys(doc).length, ITEMS);
    assert.deepEqual(doc['item-001'], { late: true, n: 1, body: want['item-001'].body });
    assert.deepEqual(doc['item-000'].live, written - 1);
    assert.deepEqual(doc['item-150'], want['item-150']);
  });

  for (const transport of ['sse', 'poll']) {
    await t.test(`over ${transport}: every part arrives and the client assembles them`, async () => {
      const c = makeClient(t, srv.url, { user: `js-${transport}`, transport });
      const room = c.room(big);
      await room.ready;
      const doc = docOf(room);
      assert.equal(Object.keys(doc).length, ITEMS);
      assert.deepEqual(doc['item-150'], want['item-150']);
      assert.deepEqual(doc['item-199'], want['item-199']);
    });
  }
});
