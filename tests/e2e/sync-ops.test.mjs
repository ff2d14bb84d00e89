// sync-ops.test.mjs -- documents, ops, publish and rate limits of the sync
// protocol (docs/PROTOCOL.md 5, 7, 13.2): ack before broadcast, every member
// gets every entry once in seq order, LWW convergence of concurrent writers,
// preconditions, limits at their boundaries, idempotency by cid, stored and
// ephemeral publishes, rate limiting.
import assert from 'node:assert/strict';
import test from 'node:test';

import { OP, frame } from './lib/raw.mjs';
import { scale, sleep } from './lib/server.mjs';
import { Replica, SyncClient, closeClients, snapshotOf, startSyncServer, token } from './lib/sync.mjs';

let srv;
test.before(async () => {
  srv = await startSyncServer(null, ['--rate', '100000', '--burst', '100000']);
});
test.after(() => srv.stopChecked());

let dev = 0;
const as = (user, grants = { '*': 'rw' }, device = `dev-${++dev}`) => ({ token: token(user, grants), device });
const connect = (user, grants, device) => SyncClient.connect(srv.url, as(user, grants, device));
const isEntry = (room) => (m) => (m.type === 'op' || m.type === 'message') && m.room === room && m.seq !== undefined;
let snapDev = 0;
const snap = (room) => snapshotOf(srv.url, room, as('snapshotter', { '*': 'r' }, `snap-${++snapDev}`));

test('op, ack and broadcast', async (t) => {
  await t.test('the ack, then the broadcast, with the documented members; base is not broadcast', async () => {
    const room = 'board:ack';
    const a = await connect('alice');
    const b = await connect('bob');
    await a.join(room);
    await b.join(room);
    const ack = await a.request({ type: 'op', id: 'x1', room, cid: 'alice.1', op: { kind: 'set', item: 'card-7', fields: { title: 'Draft' }, base: 0 } });
    assert.deepEqual(ack, { type: 'ack', re: 'x1', room, cid: 'alice.1', seq: 1 });
    const e = await a.entry(room, 1);
    assert.equal(a.log.indexOf(ack) < a.log.indexOf(e), true, 'ack precedes the broadcast');
    assert.equal(typeof e.ts, 'number');
    assert.ok(Number.isInteger(e.ts) && e.ts > 1.5e12, `ts in ms: ${e.ts}`);
    const { ts, ...rest } = e;
    assert.deepEqual(rest, {
      type: 'op', room, seq: 1, from: { user: 'alice', device: a.welcome.device }, cid: 'alice.1',
      op: { kind: 'set', item: 'card-7', fields: { title: 'Draft' } },
    });
    const eb = await b.entry(room, 1);
    assert.deepEqual(eb, e, 'every member gets the same entry');
    await closeClients(a, b);
  });

  await t.test('3 members, pipelined writers: each gets every entry once, in seq order, after its own ack', async () => {
    const room = 'board:fanout';
    const n = scale(40, 20);
    const cs = [await connect('alice'), await connect('alice'), await connect('bob')];
    const reps = [];
    for (const c of cs) reps.push(new Replica(await c.join(room)));
    const acks = await Promise.all(cs.map((c, ci) => Promise.all(Array.from({ length: n }, (_, i) =>
      c.set(room, `f${ci}.${i}`, `item-${i % 7}`, { [`by${ci}`]: i, last: `${ci}.${i}` })))));
    const seqs = acks.flat().map((a) => a.seq).sort((x, y) => x - y);
    assert.deepEqual(seqs, Array.from({ length: 3 * n }, (_, i) => i + 1), 'seqs are gapless, one per op');
    for (const [ci, c] of cs.entries()) {
      // acks of one session arrive in the order its ops were sent
      const mine = acks[ci].map((a) => a.seq);
      assert.deepEqual(mine, [...mine].sort((x, y) => x - y));
      const arrival = acks[ci].map((a) => c.log.indexOf(a));
      assert.deepEqual(arrival, [...arrival].sort((x, y) => x - y), 'acks arrive in the order sent');
      const entries = await c.take(3 * n, isEntry(room), 'entries');
      for (const e of entries) reps[ci].apply(e); // asserts seq = previous + 1
      await c.ping();
      assert.deepEqual(c.drain(isEntry(room)), [], 'no entry twice');
      for (const ack of acks[ci]) {
        const e = entries.find((x) => x.seq === ack.seq);
        assert.equal(e.cid, ack.cid);
        assert.deepEqual(e.from, { user: c.welcome.user, device: c.welcome.device });
        assert.ok(c.log.indexOf(ack) < c.log.indexOf(e), `ack of ${ack.cid} precedes its broadcast`);
      }
    }
    const s = await snap(room);
    for (const r of reps) assert.deepEqual(r.items, s.items);
    await closeClients(cs);
  });

  await t.test('LWW: 3 clients (two devices of one user, another user) write the same fields concurrently', async () => {
    const room = 'board:lww';
    const n = scale(60, 30);
    const cs = [await connect('alice', undefined, 'lww-a1'), await connect('alice', undefined, 'lww-a2'), await connect('bob', undefined, 'lww-b1')];
    const reps = [];
    for (const c of cs) reps.push(new Replica(await c.join(room)));
    // A seeded pseudo-random choice of fields and values (reproducible).
    let seed = 42;
    const rnd = (k) => ((seed = (seed * 1103515245 + 12345) % 2147483648) % k);
    const plans = cs.map((_, ci) => Array.from({ length: n }, (_, i) => {
      const fields = {};
      for (const f of ['a', 'b', 'c', 'd']) {
        const r = rnd(4);
        if (r === 0) fields[f] = null;
        else if (r === 1) fields[f] = `${ci}.${i}`;
        else if (r === 2) fields[f] = { by: ci, i, nested: [ci, i] };
      }
      return { item: rnd(3) === 0 ? 'other' : 'shared', fields };
    }));
    const acks = await Promise.all(cs.map((c, ci) => Promise.all(plans[ci].map((p, i) => c.set(room, `lww${ci}.${i}`, p.item, p.fields)))));
    const total = 3 * n;
    for (const [ci, c] of cs.entries()) for (const e of await c.take(total, isEntry(room), 'entries')) reps[ci].apply(e);
    // Every replica is identical, and equal to what a fresh join sees.
    const s = await snap(room);
    assert.equal(s.seq, total);
    for (const r of reps) assert.deepEqual(r.items, s.items);
    // And the winner of each field is the highest-seq op that named it.
    const bySeq = new Map();
    for (const [ci, list] of acks.entries()) list.forEach((a, i) => bySeq.set(a.seq, plans[ci][i]));
    const expect = {};
    for (let q = 1; q <= total; q++) {
      const p = bySeq.get(q);
      const it = (expect[p.item] ||= { version: 0, fields: {} });
      for (const [k, v] of Object.entries(p.fields)) if (v === null) delete it.fields[k]; else it.fields[k] = v;
      it.version = q;
    }
    assert.deepEqual(s.items, expect);
    await closeClients(cs);
  });

  await t.test('join during a stream of writes: history and live delivery are contiguous', async () => {
    const room = 'board:contiguous';
    const n = scale(300, 120);
    const w = await connect('walt');
    const j0 = await w.join(room);
    let acked = 0;
    const all = Promise.all(Array.from({ length: n }, (_, i) =>
      w.set(room, `cw.${i}`, `it-${i % 10}`, { v: i }).then((a) => { acked++; return a; })));
    while (acked < n / 4) await sleep(1);
    const r1 = await connect('rob');
    const rep1 = new Replica(await r1.join(room)); // snapshot
    const r2 = await connect('rob');
    const j2 = await r2.join(room, { since: { epoch: j0.epoch, seq: 3 } });
    assert.equal(j2.recovered, true);
    const rep2 = new Replica({ epoch: j0.epoch, seq: 3, recovered: false, snapshot: { items: {} } });
    rep2.reset(j2);
    await all;
    for (const [c, rep] of [[r1, rep1], [r2, rep2]]) {
      while (rep.seq < n) rep.apply(await c.waitFor(isEntry(room), `entry after ${rep.seq}`));
      await c.ping();
      assert.deepEqual(c.drain(isEntry(room)), [], 'nothing delivered twice');
    }
    const s = await snap(room);
    assert.deepEqual(rep1.items, s.items);
    // rep2 started from seq 3 with an empty base: compare the items written after 3.
    for (const [id, it] of Object.entries(s.items)) if (it.version > 3) assert.deepEqual(rep2.items[id], it);
    await closeClients(w, r1, r2);
  });
});

test('document semantics', async (t) => {
  const room = 'board:semantics';
  const c = await connect('dora');
  t.after(() => c.close());
  await c.join(room);
  let cid = 0;
  const set = (item, fields, extra) => c.set(room, `sem.${++cid}`, item, fields, extra);
  const op = (o) => c.request({ type: 'op', room, cid: `sem.${++cid}`, op: o });
  const item = async (id) => (await snap(room)).items[id];

  await t.test('set merges fields; null deletes one; nested values are replaced whole', async () => {
    const a1 = await set('m', { a: 1, b: { x: 1, y: 2 }, c: 'keep' });
    const a2 = await set('m', { a: null, b: { z: 3 }, d: [1, 2] });
    assert.equal(a2.seq, a1.seq + 1);
    assert.deepEqual(await item('m'), { version: a2.seq, fields: { b: { z: 3 }, c: 'keep', d: [1, 2] } });
  });
  await t.test('the broadcast keeps null values (they mean delete)', async () => {
    const a = await set('m', { c: null });
    const e = await c.entry(room, a.seq);
    assert.deepEqual(e.op.fields, { c: null });
  });
  await t.test('a set that changes nothing still makes a new version', async () => {
    const before = await item('m');
    const a = await set('m', {});
    assert.deepEqual(await item('m'), { version: a.seq, fields: before.fields });
  });
  await t.test('creating with {} or only nulls makes an empty item', async () => {
    const a = await set('empty1', {});
    const b = await set('empty2', { gone: null });
    assert.deepEqual(await item('empty1'), { version: a.seq, fields: {} });
    assert.deepEqual(await item('empty2'), { version: b.seq, fields: {} });
  });
  await t.test('values are kept exactly: unicode, floats, negatives, the integer limits, deep nesting', async () => {
    const fields = {
      s: 'héllo 🌍 \u2028 "q" \\ \t', f: 3.25, neg: -17, big: 2 ** 53 - 1, small: -(2 ** 53 - 1),
      t: true, arr: [], obj: {}, deep16: JSON.parse(`${'['.repeat(15)}1${']'.repeat(15)}`),
      deepObj: JSON.parse(`${'{"k":'.repeat(16)}1${'}'.repeat(16)}`),
      [`${'é'.repeat(64)}`]: 'a 128-byte field name',
    };
    const a = await set('values', fields);
    assert.deepEqual(await item('values'), { version: a.seq, fields });
    const e = await c.entry(room, a.seq);
    assert.deepEqual(e.op.fields, fields);
  });
  await t.test('a field of exactly 64 KiB and 256 fields are accepted', async () => {
    await set('bigfield', { s: 'x'.repeat(65536 - 2) });
    const many = Object.fromEntries(Array.from({ length: 256 }, (_, i) => [`f${i}`, i]));
    await set('many', many);
    assert.equal(Object.keys((await item('many')).fields).length, 256);
  });
  await t.test('an item grows past 256 fields across sets (the limit is per set)', async () => {
    await set('many', Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`g${i}`, i])));
    assert.equal(Object.keys((await item('many')).fields).length, 266);
  });
  await t.test('base 0 creates; base 0 on an existing item is a conflict with the current item', async () => {
    const a = await set('b0', { v: 1 }, { base: 0 });
    const e = await c.expectError({ type: 'op', id: 'c1', room, cid: 'conf.1', op: { kind: 'set', item: 'b0', fields: { v: 2 }, base: 0 } }, 'conflict');
    assert.equal(e.re, 'c1');
    assert.equal(e.for, 'op');
    assert.equal(e.room, room);
    assert.equal(e.cid, 'conf.1');
    assert.equal(e.item, 'b0');
    assert.deepEqual(e.current, { version: a.seq, fields: { v: 1 } });
  });
  await t.test('the right base is accepted; a stale base is a conflict; the item is unchanged', async () => {
    const a1 = await set('bv', { v: 1 });
    const a2 = await set('bv', { v: 2 }, { base: a1.seq });
    const e = await op({ kind: 'set', item: 'bv', fields: { v: 3 }, base: a1.seq });
    assert.equal(e.code, 'conflict');
    assert.deepEqual(e.current, { version: a2.seq, fields: { v: 2 } });
    const e2 = await op({ kind: 'set', item: 'bv', fields: { v: 3 }, base: a2.seq + 1000 });
    assert.equal(e2.code, 'conflict');
    assert.deepEqual(await item('bv'), { version: a2.seq, fields: { v: 2 } });
  });
  await t.test('base n > 0 on a missing item: conflict with current null', async () => {
    const e = await op({ kind: 'set', item: 'nope', fields: { v: 1 }, base: 3 });
    assert.equal(e.code, 'conflict');
    assert.equal(e.current, null);
    assert.equal(await item('nope'), undefined);
  });
  await t.test('del removes an item (no tombstone); with a base; a missing item is not_found', async () => {
    const a = await set('gone', { v: 1 });
    const e = await op({ kind: 'del', item: 'gone', base: a.seq + 5 });
    assert.equal(e.code, 'conflict');
    const d = await op({ kind: 'del', item: 'gone', base: a.seq });
    assert.equal(d.type, 'ack');
    const be = await c.entry(room, d.seq);
    assert.deepEqual(be.op, { kind: 'del', item: 'gone' });
    assert.equal(await item('gone'), undefined);
    const nf = await op({ kind: 'del', item: 'gone' });
    assert.equal(nf.type, 'error');
    assert.equal(nf.code, 'not_found');
    assert.equal(nf.item, 'gone');
    // Recreating it with base 0 works: no tombstone.
    await set('gone', { v: 2 }, { base: 0 });
  });
  await t.test('a rejected op takes no seq', async () => {
    const before = (await snap(room)).seq;
    await op({ kind: 'del', item: 'never-there' });
    const a = await set('after-reject', {});
    assert.equal(a.seq, before + 1);
  });
});

test('a refusal carrying state waits behind the entries that state includes', async (t) => {
  // Two messages in one TCP segment, so the server reads both before the
  // first one's commit: the second is refused with state that includes the
  // first (the text, the current item), and must reach the client after the
  // first one's ack and broadcast, never before.
  const send2 = (c, m1, m2) => c.ws._socket.write(Buffer.concat([m1, m2].map((m) => frame(OP.TEXT, JSON.stringify(m)))));
  const a = await connect('alice');
  t.after(() => closeClients(a));

  await t.test('rev_too_old behind the text op it reports', async () => {
    const room = 'board:order-text';
    await a.join(room);
    await a.expect({ type: 'op', room, cid: 'ord.t0', op: { kind: 'set', item: 'n', fields: {} } }, 'ack');
    send2(a,
      { type: 'op', id: 't1', room, cid: 'ord.t1', op: { kind: 'text', item: 'n', field: 'body', rev: 0, ops: ['hello'] } },
      { type: 'op', id: 't2', room, cid: 'ord.t2', op: { kind: 'text', item: 'n', field: 'body', rev: 7, ops: ['x'] } });
    const err = await a.waitFor((m) => m.re === 't2', 'the refusal');
    assert.equal(err.code, 'rev_too_old', JSON.stringify(err));
    assert.equal(err.text, 'hello');
    assert.equal(err.rev, 2, 'revisions start at the item\'s gen, 1 (5.7)');
    const ack = a.log.find((m) => m.re === 't1');
    const entry = a.log.find((m) => m.type === 'op' && m.room === room && m.seq === 2);
    assert.ok(ack && entry, 'the ack and the broadcast of the first op arrived');
    assert.ok(a.log.indexOf(ack) < a.log.indexOf(err) && a.log.indexOf(entry) < a.log.indexOf(err),
      `order: ${a.log.filter((m) => m.room === room).map((m) => m.type).join(', ')}`);
  });

  await t.test('conflict behind the set whose item it reports', async () => {
    const room = 'board:order-conflict';
    await a.join(room);
    send2(a,
      { type: 'op', id: 'c1', room, cid: 'ord.c1', op: { kind: 'set', item: 'x', fields: { v: 1 }, base: 0 } },
      { type: 'op', id: 'c2', room, cid: 'ord.c2', op: { kind: 'set', item: 'x', fields: { v: 2 }, base: 0 } });
    const err = await a.waitFor((m) => m.re === 'c2', 'the refusal');
    assert.equal(err.code, 'conflict');
    assert.deepEqual(err.current?.fields, { v: 1 });
    const entry = a.log.find((m) => m.type === 'op' && m.room === room && m.seq === 1);
    assert.ok(entry && a.log.indexOf(entry) < a.log.indexOf(err), 'the broadcast of v:1 came first');
  });

  await t.test('with nothing pending a refusal is immediate, and the connection goes on', async () => {
    const room = 'board:order-text';
    const e = await a.expectError({ type: 'op', room, cid: 'ord.t3', op: { kind: 'text', item: 'n', field: 'body', rev: 9, ops: ['y'] } }, 'rev_too_old');
    assert.equal(e.text, 'hello');
    await a.ping();
  });
});

test('idempotency by cid', async (t) => {
  const room = 'board:dedupe';
  const a = await connect('ida', undefined, 'ida-1');
  const b = await connect('ben');
  t.after(() => closeClients(a, b));
  await a.join(room);
  await b.join(room);
  let marker = 0;
  /** Writes a marker and waits for its entry on both: anything broadcast before it has arrived. */
  const barrier = async () => {
    const m = await a.set(room, `marker.${++marker}`, 'marker', { n: marker });
    await a.entry(room, m.seq);
    await b.entry(room, m.seq);
  };
  const entriesWith = (c, cid) => c.drain((m) => isEntry(room)(m) && m.cid === cid);

  await t.test('a re-sent op: same seq, duplicate:true, no second broadcast, nothing applied', async () => {
    const ack = await a.set(room, 'ida.1', 'x', { v: 1 });
    await barrier();
    assert.equal(entriesWith(a, 'ida.1').length, 1);
    assert.equal(entriesWith(b, 'ida.1').length, 1);
    const dup = await a.request({ type: 'op', id: 'again', room, cid: 'ida.1', op: { kind: 'set', item: 'x', fields: { v: 1 } } });
    assert.deepEqual(dup, { type: 'ack', re: 'again', room, cid: 'ida.1', seq: ack.seq, duplicate: true });
    await barrier();
    assert.deepEqual(entriesWith(a, 'ida.1'), []);
    assert.deepEqual(entriesWith(b, 'ida.1'), []);
    assert.deepEqual((await snap(room)).items.x, { version: ack.seq, fields: { v: 1 } });
  });
  await t.test('the content of a duplicate is not compared', async () => {
    const ack = await a.set(room, 'ida.2', 'y', { v: 1 });
    const dup = await a.op(room, 'ida.2', { kind: 'set', item: 'y', fields: { v: 999 } });
    assert.equal(dup.seq, ack.seq);
    assert.equal(dup.duplicate, true);
    assert.deepEqual((await snap(room)).items.y.fields, { v: 1 });
  });
  await t.test('a retry of an accepted base:0 create is a duplicate, not a conflict', async () => {
    const o = { kind: 'set', item: 'created', fields: { v: 1 }, base: 0 };
    const ack = await a.op(room, 'ida.3', o);
    assert.equal(ack.type, 'ack');
    const dup = await a.op(room, 'ida.3', o);
    assert.equal(dup.type, 'ack', JSON.stringify(dup));
    assert.equal(dup.seq, ack.seq);
    assert.equal(dup.duplicate, true);
    const dd = { kind: 'del', item: 'created' };
    const del = await a.op(room, 'ida.4', dd);
    const deldup = await a.op(room, 'ida.4', dd);
    assert.equal(deldup.seq, del.seq);
    assert.equal(deldup.duplicate, true, 'the retry of a del is not not_found');
  });
  await t.test('a duplicate sent right behind the original (still in flight)', async () => {
    const o = { kind: 'set', item: 'z', fields: { v: 1 } };
    const [first, second] = await Promise.all([a.op(room, 'ida.5', o), a.op(room, 'ida.5', o)]);
    assert.equal(first.type, 'ack');
    assert.equal(first.duplicate, undefined);
    assert.deepEqual(second, { ...first, re: second.re, duplicate: true });
    await barrier();
    assert.equal(entriesWith(a, 'ida.5').length, 1);
    assert.equal(entriesWith(b, 'ida.5').length, 1);
  });
  await t.test('a rejected op is not recorded: re-sent later it is evaluated afresh', async () => {
    const e = await a.op(room, 'ida.6', { kind: 'del', item: 'later' });
    assert.equal(e.code, 'not_found');
    await a.set(room, 'ida.7', 'later', { v: 1 });
    const ok = await a.op(room, 'ida.6', { kind: 'del', item: 'later' });
    assert.equal(ok.type, 'ack');
    assert.equal(ok.duplicate, undefined);
  });
  await t.test('the key includes user and device: the same cid elsewhere is a new op', async () => {
    const a2 = await connect('ida', undefined, 'ida-2');
    await a2.join(room);
    const b1 = await a.set(room, 'shared-cid', 'w', { by: 'ida-1' });
    const b2 = await a2.set(room, 'shared-cid', 'w', { by: 'ida-2' });
    const b3 = await b.set(room, 'shared-cid', 'w', { by: 'ben' });
    assert.equal(b2.duplicate, undefined);
    assert.equal(b3.duplicate, undefined);
    assert.deepEqual([b2.seq - b1.seq, b3.seq - b2.seq], [1, 1]);
    // A later session of the same device is the same key.
    await a2.close();
    const a2again = await connect('ida', undefined, 'ida-2');
    await a2again.join(room);
    const d = await a2again.set(room, 'shared-cid', 'w', { by: 'ida-2 again' });
    assert.equal(d.seq, b2.seq);
    assert.equal(d.duplicate, true);
    await a2again.close();
  });
  await t.test('a stored publish with a cid is deduplicated too', async () => {
    const p = await a.expect({ type: 'publish', room, cid: 'ida.pub', data: { text: 'hi' } }, 'ack');
    const d = await a.expect({ type: 'publish', room, cid: 'ida.pub', data: { text: 'hi' } }, 'ack');
    assert.equal(d.seq, p.seq);
    assert.equal(d.duplicate, true);
    await barrier();
    assert.equal(entriesWith(b, 'ida.pub').length, 1);
  });
});

test('publish', async (t) => {
  const room = 'chat:pub';
  const a = await connect('pia');
  const b = await connect('pete');
  t.after(() => closeClients(a, b));
  const j0 = await a.join(room);
  await b.join(room);

  await t.test('stored: ack with seq, a message to every member, recoverable via since, no document change', async () => {
    const ack = await a.request({ type: 'publish', id: 'p1', room, cid: 'pia.1', data: { text: 'hello everyone' } });
    assert.deepEqual(ack, { type: 'ack', re: 'p1', room, cid: 'pia.1', seq: 1 });
    const m = await a.entry(room, 1);
    assert.ok(a.log.indexOf(ack) < a.log.indexOf(m), 'ack precedes the message');
    const { ts, ...rest } = m;
    assert.equal(typeof ts, 'number');
    assert.deepEqual(rest, { type: 'message', room, seq: 1, from: { user: 'pia', device: a.welcome.device }, cid: 'pia.1', data: { text: 'hello everyone' } });
    assert.deepEqual(await b.entry(room, 1), m);
    const s = await snap(room);
    assert.equal(s.seq, 1);
    assert.deepEqual(s.items, {});
    const c = await connect('carl');
    const j = await c.join(room, { since: { epoch: j0.epoch, seq: 0 } });
    assert.equal(j.recovered, true);
    assert.deepEqual(j.ops, [m]);
    await c.close();
  });
  await t.test('data may be any JSON value; a publish without cid has none', async () => {
    for (const data of ['text', 42, [1, 'a', null], null, true]) {
      const ack = await a.expect({ type: 'publish', room, data }, 'ack');
      assert.equal(ack.cid, undefined);
      const m = await b.entry(room, ack.seq);
      assert.deepEqual(m.data, data);
      assert.equal(m.cid, undefined);
    }
  });
  await t.test('ops and publishes share one gapless seq', async () => {
    const p = await a.expect({ type: 'publish', room, data: 1 }, 'ack');
    const o = await a.set(room, 'pia.op', 'i', { v: 1 });
    const q = await a.expect({ type: 'publish', room, data: 2 }, 'ack');
    assert.deepEqual([o.seq - p.seq, q.seq - o.seq], [1, 1]);
  });
  await t.test('ephemeral: ack without seq, a message without seq to every member, not stored', async () => {
    const before = await snap(room);
    a.drain();
    b.drain();
    const ack = await a.request({ type: 'publish', id: 'e1', room, data: { typing: true }, ephemeral: true });
    assert.equal(ack.type, 'ack');
    assert.equal(ack.re, 'e1');
    assert.equal(ack.seq, undefined);
    for (const c of [a, b]) {
      const m = await c.waitFor((x) => x.type === 'message' && x.room === room, 'the ephemeral message');
      assert.equal(m.seq, undefined);
      assert.equal(m.ephemeral, true);
      assert.deepEqual(m.data, { typing: true });
      assert.deepEqual(m.from, { user: 'pia', device: a.welcome.device });
    }
    const after = await snap(room);
    assert.equal(after.seq, before.seq, 'no seq taken');
    const c = await connect('carl');
    const j = await c.join(room, { since: { epoch: j0.epoch, seq: 0 } });
    assert.equal(j.ops.filter((x) => x.ephemeral || x.seq === undefined).length, 0, 'not in catch-up');
    assert.equal(j.ops.length, before.seq);
    await c.close();
  });
  await t.test('ephemeral messages reach only current members', async () => {
    const c = await connect('carl');
    a.send({ type: 'publish', room, data: 'early', ephemeral: true });
    await a.waitFor((x) => x.type === 'message' && x.data === 'early', 'own ephemeral');
    await c.join(room);
    await c.ping();
    assert.deepEqual(c.drain((x) => x.type === 'message'), []);
    await c.close();
  });
});

test('rate limiting: --rate 5 --burst 5', async (t) => {
  const slow = await startSyncServer(t, ['--rate', '5', '--burst', '5']);
  const c = await SyncClient.connect(slow.url, as('rick'));
  t.after(() => c.close());
  assert.equal(c.welcome.limits.rate, 5);
  assert.equal(c.welcome.limits.burst, 5);
  const room = 'board:rate';
  await c.join(room);
  const N = 50;
  const replies = await Promise.all(Array.from({ length: N }, (_, i) => c.op(room, `rate.${i}`, { kind: 'set', item: `i${i}`, fields: { v: i } })));
  const acks = replies.filter((r) => r.type === 'ack');
  const limited = replies.filter((r) => r.type === 'error');
  assert.equal(acks.length + limited.length, N);
  assert.ok(acks.length >= 4, `the burst (minus the join) is accepted: ${acks.length}`);
  assert.ok(limited.length >= 1, 'a quick stream of 50 is limited');
  for (const e of limited) {
    assert.equal(e.code, 'rate_limited');
    assert.ok(Number.isInteger(e.retry_after) && e.retry_after > 0, JSON.stringify(e));
    assert.equal(e.room, room);
    assert.match(e.cid, /^rate\.\d+$/);
  }
  // Acked ops are in the document, limited ones are not.
  const s = await snapshotOf(slow.url, room, as('viewer', { '*': 'r' }));
  assert.deepEqual(Object.keys(s.items).sort(), acks.map((a) => `i${a.cid.split('.')[1]}`).sort());
  assert.equal(s.seq, acks.length);
  // ping is not limited
  for (let i = 0; i < 10; i++) await c.ping();
  // After retry_after, the same cid goes through.
  const e = limited[0];
  await sleep(e.retry_after + 300);
  const retry = await c.op(room, e.cid, { kind: 'set', item: `i${e.cid.split('.')[1]}`, fields: { v: 0 } });
  assert.equal(retry.type, 'ack', JSON.stringify(retry));
  assert.equal(retry.duplicate, undefined);
});

test('rate limiting of messages without a reply', async (t) => {
  const slow = await startSyncServer(t, ['--rate', '5', '--burst', '5']);
  const c = await SyncClient.connect(slow.url, as('rosa'));
  const o = await SyncClient.connect(slow.url, as('otto'));
  t.after(() => closeClients(c, o));
  const room = 'board:rate-presence';
  await c.join(room);
  await o.join(room);
  await t.test('presence over the rate is dropped silently', async () => {
    for (let i = 0; i < 30; i++) c.send({ type: 'presence', room, state: { i } });
    await c.ping();
    assert.deepEqual(c.drain((m) => m.type === 'error'), []);
  });
  await t.test('others see some of the updates', async () => {
    await o.waitFor((m) => m.type === 'presence' && m.event === 'update', 'an update');
  });
});
