// sync-batch.test.mjs -- batch ops (docs/PROTOCOL.md 5.2, 5.4, 5.5, 11.1)
// and join with history (4.2): a batch is one log entry with one seq, applied
// atomically, its sub-ops in order and each seeing the ones before; broadcast
// normalized; a failing sub-op rejects the whole batch with its index and
// changes nothing; --max-batch; nesting; dedupe. join {history: N} with a
// snapshot brings the latest N stored publishes, oldest first.
import assert from 'node:assert/strict';
import test from 'node:test';

import { Replica, SyncClient, closeClients, startSyncServer, token } from './lib/sync.mjs';

let srv;
test.before(async () => {
  srv = await startSyncServer(null, ['--max-batch', '5', '--rate', '100000', '--burst', '100000']);
});
test.after(() => srv.stopChecked());

let devN = 0;
const connect = (user = 'alice', device = `${user}-${++devN}`) => SyncClient.connect(srv.url, { token: token(user), device });
const isEntry = (room) => (m) => (m.type === 'op' || m.type === 'message') && m.room === room && m.seq !== undefined;
const set = (item, fields, extra = {}) => ({ kind: 'set', item, fields, ...extra });
const del = (item, extra = {}) => ({ kind: 'del', item, ...extra });
const batch = (...ops) => ({ kind: 'batch', ops });
let cidN = 0;
const cid = () => `bt.${++cidN}`;

test('a batch is one entry, applied atomically', async (t) => {
  const room = 'board:batch';
  const a = await connect('alice');
  const b = await connect('bob');
  t.after(() => closeClients(a, b));
  const ra = new Replica(await a.join(room));
  const rb = new Replica(await b.join(room));
  const sync = async () => {
    const seq = (await b.join(room)).seq; // joining again: the position, nothing else changes
    for (const [c, r] of [[a, ra], [b, rb]]) while (r.seq < seq) r.apply(await c.waitFor(isEntry(room), `entry ${r.seq + 1}`));
  };
  const view = async () => {
    const j = await b.join(room);
    return { seq: j.seq, items: j.snapshot.items };
  };
  await a.set(room, cid(), 'keep', { v: 1, w: 1 });
  await a.set(room, cid(), 'gone', { x: 1 });
  await sync();
  assert.equal(a.welcome.limits.max_batch, 5);

  await t.test('one seq for all; the ack, then one broadcast of kind batch with normalized sub-ops', async () => {
    const c = cid();
    const ack = await a.expect({ type: 'op', room, cid: c, op: batch(
      set('card-1', { title: 'A', col: 'todo' }, { base: 0 }),
      set('card-1', { col: 'done' }),
      del('gone', { base: 2 }),
      set('keep', { v: null, w: 2 }, { base: 1 }),
      set('card-2', {}),
    ) }, 'ack');
    assert.equal(ack.seq, 3);
    assert.equal(ack.cid, c);
    const e = await a.entry(room, 3);
    assert.ok(a.log.indexOf(ack) < a.log.indexOf(e));
    const { ts, ...rest } = e;
    assert.deepEqual(rest, {
      type: 'op', room, seq: 3, from: { user: 'alice', device: a.welcome.device }, cid: c,
      op: { kind: 'batch', ops: [
        set('card-1', { title: 'A', col: 'todo' }),
        set('card-1', { col: 'done' }),
        del('gone'),
        set('keep', { v: null, w: 2 }),
        set('card-2', {}),
      ] },
    });
    assert.deepEqual(await b.entry(room, 3), e, 'the same entry for every member');
    ra.apply(e);
    rb.apply(e);
  });

  await t.test('every touched item has the batch\'s seq as version; replicas agree with a fresh join', async () => {
    const v = await view();
    assert.deepEqual(v, {
      seq: 3,
      items: {
        'card-1': { version: 3, fields: { title: 'A', col: 'done' } },
        'card-2': { version: 3, fields: {} },
        keep: { version: 3, fields: { w: 2 } },
      },
    });
    assert.deepEqual(ra.items, v.items);
    assert.deepEqual(rb.items, v.items);
  });

  await t.test('sub-ops see the ones before them: del then set recreates; a base after a set sees its version', async () => {
    await a.expect({ type: 'op', room, cid: cid(), op: batch(
      del('card-2'),
      set('card-2', { fresh: true }, { base: 0 }),
      set('keep', { w: 3 }),
      set('keep', { w: 4 }, { base: 4 }), // the version the set just before gave it
    ) }, 'ack');
    const c = cid();
    const e = await a.expectError({ type: 'op', room, cid: c, op: batch(set('new-1', { a: 1 }, { base: 0 }), set('new-1', { b: 2 }, { base: 0 })) }, 'conflict');
    assert.equal(e.index, 1, 'the second create conflicts with the first');
    assert.equal(e.item, 'new-1');
    await sync();
    const v = await view();
    assert.equal(v.seq, 4);
    assert.deepEqual(v.items['card-2'], { version: 4, fields: { fresh: true } });
    assert.deepEqual(v.items.keep, { version: 4, fields: { w: 4 } });
    assert.equal(v.items['new-1'], undefined);
    assert.deepEqual(ra.items, v.items);
  });

  const failing = [
    ['del of a missing item', [set('card-9', { a: 1 }), set('card-1', { col: 'x' }), del('missing')], 'not_found', 2, 'missing'],
    ['a stale base', [set('card-1', { z: 1 }), set('keep', {}, { base: 1 })], 'conflict', 1, 'keep'],
    ['an item touched twice, then a failure', [set('card-1', { col: 'rolled' }), del('card-1'), del('card-1')], 'not_found', 2, 'card-1'],
    ['a new item, then a failure', [set('brand-new', { a: 1 }), del('brand-new'), set('x', {}, { base: 7 })], 'conflict', 2, 'x'],
    ['an invalid item id', [set('ok', {}), set('not ok', {})], 'invalid_field', 1],
    ['an unknown kind', [set('ok', {}), { kind: 'rename', item: 'ok' }], 'bad_request', 1],
    ['a text op (not allowed in a batch)', [set('ok', {}), { kind: 'text', item: 'ok', field: 'f', rev: 0, ops: ['x'] }], 'bad_request', 1],
    ['a field over max_field_size', [set('ok', {}), set('ok', { big: 'x'.repeat(65537) })], 'too_large', 1],
    ['a nested batch', [set('ok', {}), batch(set('inner', {}))], 'bad_request', 1],
  ];
  for (const [name, ops, code, index, item] of failing) {
    await t.test(`${name}: ${code} with index ${index}; nothing applied, no seq taken, nothing broadcast`, async () => {
      const before = await view();
      const c = cid();
      const e = await a.expectError({ type: 'op', room, cid: c, op: batch(...ops) }, code);
      assert.equal(e.index, index);
      assert.equal(e.cid, c);
      assert.equal(e.room, room);
      if (item) assert.equal(e.item, item);
      if (code === 'conflict') assert.deepEqual(e.current, before.items[item] ?? null, 'current: the item as it is');
      assert.deepEqual(await view(), before);
      await a.ping();
      await b.ping();
      assert.deepEqual(a.drain(isEntry(room)), []);
      assert.deepEqual(b.drain(isEntry(room)), []);
    });
  }

  await t.test('the next accepted op takes the next seq', async () => {
    const ack = await a.set(room, cid(), 'after', {});
    assert.equal(ack.seq, 5);
    await sync();
  });

  await t.test('a rejected batch is not recorded: re-sent with the same cid it is evaluated afresh', async () => {
    const c = cid();
    await a.expectError({ type: 'op', room, cid: c, op: batch(set('later', { n: 1 }), del('later-2')) }, 'not_found');
    await a.set(room, cid(), 'later-2', {});
    const ack = await a.expect({ type: 'op', room, cid: c, op: batch(set('later', { n: 1 }), del('later-2')) }, 'ack');
    assert.equal(ack.seq, 7);
    assert.equal(ack.duplicate, undefined);
    await sync();
  });

  await t.test('a re-sent accepted batch is a duplicate: same seq, not applied or broadcast again', async () => {
    const c = cid();
    const ack = await a.expect({ type: 'op', room, cid: c, op: batch(set('dup', { n: 1 }), set('dup', { m: 2 })) }, 'ack');
    await sync();
    const again = await a.expect({ type: 'op', room, cid: c, op: batch(set('dup', { n: 1 }), set('dup', { m: 2 })) }, 'ack');
    assert.equal(again.seq, ack.seq);
    assert.equal(again.duplicate, true);
    await a.ping();
    assert.deepEqual(a.drain(isEntry(room)), []);
    assert.deepEqual((await view()).items.dup, { version: ack.seq, fields: { n: 1, m: 2 } });
  });

  await t.test('replicas that applied every entry equal a fresh join', async () => {
    await sync();
    const v = await view();
    assert.deepEqual(ra.items, v.items);
    assert.deepEqual(rb.items, v.items);
  });
});

test('batch shape and size', async (t) => {
  const room = 'board:batch-shape';
  const a = await connect('carol');
  t.after(() => a.close());
  await a.join(room);
  const n = (k) => Array.from({ length: k }, (_, i) => set(`i${i}`, { i }));

  await t.test('--max-batch 5: 5 sub-ops are fine', async () => {
    const ack = await a.expect({ type: 'op', room, cid: cid(), op: batch(...n(5)) }, 'ack');
    assert.equal(ack.seq, 1);
  });
  await t.test('6 sub-ops -> too_large (field op.ops), nothing applied', async () => {
    const e = await a.expectError({ type: 'op', room, cid: cid(), op: batch(...n(6).map((o) => ({ ...o, fields: { changed: true } }))) }, 'too_large');
    assert.equal(e.field, 'op.ops');
    const j = await a.join(room);
    assert.equal(j.seq, 1);
    assert.deepEqual(j.snapshot.items.i0.fields, { i: 0 });
  });
  const shapes = [
    ['ops empty', { kind: 'batch', ops: [] }],
    ['ops missing', { kind: 'batch' }],
    ['ops not an array', { kind: 'batch', ops: { 0: set('x', {}) } }],
    ['a sub-op not an object', { kind: 'batch', ops: ['set'] }],
    ['a nested batch first', { kind: 'batch', ops: [batch(set('x', {}))] }],
  ];
  for (const [name, op] of shapes) {
    await t.test(`${name} -> bad_request`, async () => {
      await a.expectError({ type: 'op', room, cid: cid(), op }, 'bad_request');
    });
  }
  await t.test('nothing was applied by any of them', async () => {
    assert.equal((await a.join(room)).seq, 1);
  });
});

test('join with history: the latest stored publishes, oldest first', async (t) => {
  const room = 'chat:history';
  const w = await connect('writer');
  t.after(() => w.close());
  await w.join(room);
  // publishes interleaved with ops, a batch and an ephemeral publish
  const plan = [
    ['pub', { text: 'one' }], ['op'], ['pub', { text: 'two' }], ['eph'], ['batch'],
    ['pub', 'three'], ['op'], ['pub', [4]], ['pub', { text: 'five' }], ['op'],
  ];
  let k = 0;
  for (const [kind, data] of plan) {
    k++;
    if (kind === 'pub') await w.expect({ type: 'publish', room, cid: `h.${k}`, data }, 'ack');
    else if (kind === 'eph') await w.expect({ type: 'publish', room, data: 'typing', ephemeral: true }, 'ack');
    else if (kind === 'op') await w.set(room, `h.${k}`, 'doc', { k });
    else await w.expect({ type: 'op', room, cid: `h.${k}`, op: batch(set('b1', {}), set('b2', {})) }, 'ack');
  }
  const entries = await w.take(9, isEntry(room), 'entries');
  const publishes = entries.filter((e) => e.type === 'message');
  assert.equal(publishes.length, 5);
  const joinWith = async (extra) => {
    const r = await connect('reader');
    try {
      return await r.join(room, extra);
    } finally {
      await r.close();
    }
  };

  await t.test('history 3 with a snapshot: the last 3 publishes, as broadcast, oldest first; no ops', async () => {
    const j = await joinWith({ history: 3 });
    assert.equal(j.recovered, false);
    assert.equal(j.seq, 9);
    assert.ok(j.snapshot.items.doc);
    assert.deepEqual(j.messages, publishes.slice(-3));
  });

  await t.test('history larger than what there is: every stored publish, no ephemeral one', async () => {
    const j = await joinWith({ history: 1000 });
    assert.deepEqual(j.messages, publishes);
    assert.deepEqual(j.messages.map((m) => m.data), [{ text: 'one' }, { text: 'two' }, 'three', [4], { text: 'five' }]);
  });

  await t.test('history 1: the newest', async () => {
    assert.deepEqual((await joinWith({ history: 1 })).messages, publishes.slice(-1));
  });

  await t.test('history 0 or absent: no messages member', async () => {
    assert.equal('messages' in (await joinWith({ history: 0 })), false);
    assert.equal('messages' in (await joinWith({})), false);
  });

  await t.test('with a since that recovers: ops, and no messages', async () => {
    const j0 = await joinWith({});
    const j = await joinWith({ history: 3, since: { epoch: j0.epoch, seq: 5 } });
    assert.equal(j.recovered, true);
    assert.equal('messages' in j, false);
    assert.deepEqual(j.ops, entries.slice(5));
  });

  for (const [name, history] of [['1001', 1001], ['-1', -1], ['a string', '3'], ['a fraction', 2.5]]) {
    await t.test(`history ${name} -> bad_request (field history)`, async () => {
      const r = await connect('reader');
      t.after(() => r.close());
      const e = await r.expectError({ type: 'join', room, history }, 'bad_request');
      assert.equal(e.field, 'history');
    });
  }
});
