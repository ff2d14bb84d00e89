// sync-incarnation.test.mjs -- text ops and item incarnations (docs/PROTOCOL.md
// 5.7): a text op made for an item that has since been deleted and created
// again is refused with item_replaced (item, field, rev, text), never applied
// to the new item's text; one that is merely too old for the same item is
// still rev_too_old; revisions only grow, across a del and a re-create and
// across a restart (gen and revs are stored with the item); the refusal
// waits behind the entries its text holds.
import assert from 'node:assert/strict';
import test from 'node:test';

import { SyncClient, closeClients, restartableServer, snapshotOf, startSyncServer, token } from './lib/sync.mjs';

let cidN = 0;
const cid = () => `inc.${process.pid}.${++cidN}`;
const textOp = (room, item, field, rev, ops) => ({ type: 'op', room, cid: cid(), op: { kind: 'text', item, field, rev, ops } });

/**
 * The revision of item's field in a fresh snapshot: revs[field], else 0,
 * which names the item's gen for a field that never held text (5.7).
 */
async function revOf(url, room, item, field) {
  const it = (await snapshotOf(url, room)).items[item];
  return it.revs?.[field] ?? 0;
}

/** Types each string of parts at the end of the field, one text op each, from revision rev; returns the last ack. */
async function type(c, room, item, field, rev, parts) {
  let at = 0;
  let ack;
  for (const p of parts) {
    ack = await c.expect(textOp(room, item, field, rev, at ? [at, p] : [p]), 'ack');
    if (rev) assert.equal(ack.rev, rev + 1);
    rev = ack.rev;
    at += [...p].length;
  }
  return ack;
}

let srv;
test.before(async () => {
  srv = await startSyncServer(null, ['--rate', '100000', '--burst', '100000']);
});
test.after(() => srv.stopChecked());

test('an op made before a del lands nowhere: item_replaced with the new text and revision', async (t) => {
  const room = 'board:inc-1';
  const a = await SyncClient.connect(srv.url, { token: token('alice'), device: 'a1' });
  const b = await SyncClient.connect(srv.url, { token: token('bob'), device: 'b1' });
  t.after(() => closeClients(a, b));
  await a.join(room);
  await b.join(room);
  await b.set(room, cid(), 'it', { body: '' });
  const r0 = await revOf(srv.url, room, 'it', 'body');
  const typed = await type(b, room, 'it', 'body', r0, ['a', 'b', 'c']);
  const aRev = typed.rev; // A has seen "abc" at this revision
  await b.expect({ type: 'op', room, cid: cid(), op: { kind: 'del', item: 'it' } }, 'ack');
  await b.set(room, cid(), 'it', { body: '' });
  const r1 = await revOf(srv.url, room, 'it', 'body');
  const last = await type(b, room, 'it', 'body', r1, ['w', 'x', 'y', 'z']);
  assert.ok(last.rev - 4 > aRev, `the new item's revisions (from ${last.rev - 4}) start above the old ones (${aRev})`);
  const e = await a.request(textOp(room, 'it', 'body', aRev, [{ d: 2 }]));
  assert.equal(e.type, 'error', `A's stale op: ${JSON.stringify(e)}`);
  assert.equal(e.code, 'item_replaced', JSON.stringify(e));
  assert.equal(e.item, 'it');
  assert.equal(e.field, 'body');
  assert.equal(e.rev, last.rev);
  assert.equal(e.text, 'wxyz');
  assert.equal(e.room, room);
  const s = await snapshotOf(srv.url, room);
  assert.equal(s.items.it.fields.body, 'wxyz', 'B\'s text is intact');
  // A rebases on the error and goes on.
  const ok = await a.expect(textOp(room, 'it', 'body', e.rev, [4, '!']), 'ack');
  assert.equal(ok.rev, e.rev + 1);
});

test('a field that never held text is at the gen: the seq of the entry that created the item', async (t) => {
  const room = 'board:inc-2';
  const a = await SyncClient.connect(srv.url, { token: token('alice'), device: 'a2' });
  t.after(() => closeClients(a));
  await a.join(room);
  await a.set(room, cid(), 'it', { body: 'old' });
  const old = await a.expect(textOp(room, 'it', 'body', 0, [3, '.']), 'ack');
  await a.expect({ type: 'op', room, cid: cid(), op: { kind: 'del', item: 'it' } }, 'ack');
  const set = await a.set(room, cid(), 'it', { body: 'new' });
  assert.equal((await snapshotOf(srv.url, room)).items.it.revs, undefined, 'no text field yet');
  const e = await a.request(textOp(room, 'it', 'body', old.rev, [{ d: 3 }]));
  assert.equal(e.code, 'item_replaced', JSON.stringify(e));
  assert.equal(e.rev, set.seq, 'the field is at gen');
  assert.equal(e.text, 'new');
  const ack = await a.expect(textOp(room, 'it', 'body', set.seq, [3, '!']), 'ack');
  assert.equal(ack.rev, set.seq + 1);
  assert.deepEqual((await snapshotOf(srv.url, room)).items.it.revs, { body: set.seq + 1 });
  const e2 = await a.request(textOp(room, 'it', 'body', set.seq - 1, ['x']));
  assert.equal(e2.code, 'item_replaced', 'any revision below gen');
});

test('too old for the same item is still rev_too_old; beyond the revision too', async (t) => {
  const room = 'board:inc-3';
  const a = await SyncClient.connect(srv.url, { token: token('alice'), device: 'a3' });
  t.after(() => closeClients(a));
  await a.join(room);
  const created = await a.set(room, cid(), 'it', { body: '' });
  const typed = await type(a, room, 'it', 'body', created.seq, ['a', 'b']);
  // A set of the field resets it: ops made before it are too old, not replaced.
  await a.set(room, cid(), 'it', { body: 'reset' });
  const e = await a.request(textOp(room, 'it', 'body', typed.rev, ['x']));
  assert.equal(e.code, 'rev_too_old', JSON.stringify(e));
  assert.equal(e.rev, typed.rev + 1);
  assert.equal(e.text, 'reset');
  const f = await a.request(textOp(room, 'it', 'body', typed.rev + 5, ['x']));
  assert.equal(f.code, 'rev_too_old', JSON.stringify(f));
});

test('item_replaced waits behind the entries its text holds', async (t) => {
  const room = 'board:inc-4';
  const a = await SyncClient.connect(srv.url, { token: token('alice'), device: 'a4' });
  t.after(() => closeClients(a));
  await a.join(room);
  const set0 = await a.set(room, cid(), 'it', { body: '' });
  const typed = await type(a, room, 'it', 'body', await revOf(srv.url, room, 'it', 'body'), ['a', 'b', 'c']);
  await a.entry(room, typed.seq);
  a.drain();
  // Pipelined on one connection: del, re-create, four text ops, then the
  // stale op. Each is sequenced before the next is read; the error carries
  // "wxyz" and must not overtake the entries that made it.
  const base = typed.seq;
  a.send({ type: 'op', id: 'p0', room, cid: cid(), op: { kind: 'del', item: 'it' } });
  a.send({ type: 'op', id: 'p1', room, cid: cid(), op: { kind: 'set', item: 'it', fields: { body: '' } } });
  const gen = base + 2;
  let rev = gen;
  for (const [i, ch] of ['w', 'x', 'y', 'z'].entries()) a.send({ ...textOp(room, 'it', 'body', rev++, i ? [i, ch] : [ch]), id: `p${2 + i}` });
  a.send({ ...textOp(room, 'it', 'body', typed.rev, [{ d: 1 }]), id: 'stale' });
  const e = await a.waitFor((m) => m.re === 'stale', 'the refusal');
  assert.equal(e.code, 'item_replaced', JSON.stringify(e));
  assert.equal(e.text, 'wxyz');
  assert.equal(e.rev, gen + 4);
  const i = a.log.indexOf(e);
  for (let s = base + 1; s <= base + 6; s++) {
    const at = a.log.findIndex((m) => m.type === 'op' && m.seq === s);
    assert.ok(at >= 0 && at < i, `entry ${s} arrives before the refusal`);
  }
  assert.ok(set0.seq < gen);
});

test('gen and revisions survive a restart; the distinction too', async (t) => {
  const h = await restartableServer(t);
  const room = 'board:inc-restart';
  const hello = { token: token('alice'), device: 'r1' };
  let a = await SyncClient.connect(h.url, hello);
  await a.join(room);
  await a.set(room, cid(), 'it', { body: '', other: 1 });
  const typed = await type(a, room, 'it', 'body', await revOf(h.url, room, 'it', 'body'), ['a', 'b', 'c']);
  await a.expect({ type: 'op', room, cid: cid(), op: { kind: 'del', item: 'it' } }, 'ack');
  const set = await a.set(room, cid(), 'it', { body: '', other: 2 });
  const typed2 = await type(a, room, 'it', 'body', set.seq, ['q', 'r']);
  const before = (await snapshotOf(h.url, room)).items.it;
  assert.deepEqual(before.revs, { body: typed2.rev });
  await h.stop();
  await a.closed();
  await h.start();
  a = await SyncClient.connect(h.url, hello);
  t.after(() => a.close());
  await a.join(room);
  assert.deepEqual((await snapshotOf(h.url, room)).items.it, before, 'the same item and revs after the restart');
  const e = await a.request(textOp(room, 'it', 'body', typed.rev, ['x']));
  assert.equal(e.code, 'item_replaced', JSON.stringify(e));
  assert.equal(e.rev, typed2.rev);
  assert.equal(e.text, 'qr');
  const f = await a.request(textOp(room, 'it', 'body', set.seq, ['x']));
  assert.equal(f.code, 'rev_too_old', `same item, history not kept across the restart: ${JSON.stringify(f)}`);
  const g = await a.expect(textOp(room, 'it', 'body', typed2.rev, [2, 's']), 'ack');
  assert.equal(g.rev, typed2.rev + 1);
  // A field that never held text starts at gen after the restart as well.
  const x = await a.request(textOp(room, 'it', 'note', set.seq, ['n']));
  assert.equal(x.type, 'ack', JSON.stringify(x));
  assert.equal(x.rev, set.seq + 1);
});

test('compatibility: rev 0 on a field that never held text is taken as the item\'s gen', async (t) => {
  const room = 'board:inc-zero';
  const a = await SyncClient.connect(srv.url, { token: token('alice'), device: 'a5' });
  const b = await SyncClient.connect(srv.url, { token: token('bob'), device: 'b5' });
  t.after(() => closeClients(a, b));
  await a.join(room);
  await b.join(room);
  await a.set(room, cid(), 'pad', { n: 1 });
  const set = await a.set(room, cid(), 'it', { body: 'hi' });
  // Two first edits at once, both at 0: the second is transformed against the first.
  a.send({ ...textOp(room, 'it', 'body', 0, [2, '!']), id: 'z1' });
  b.send({ ...textOp(room, 'it', 'body', 0, ['>']), id: 'z2' });
  const [x, y] = [await a.waitFor((m) => m.re === 'z1', 'ack 1'), await b.waitFor((m) => m.re === 'z2', 'ack 2')];
  assert.deepEqual([x.type, y.type], ['ack', 'ack'], JSON.stringify([x, y]));
  assert.deepEqual([x.rev, y.rev].sort(), [set.seq + 1, set.seq + 2]);
  const s = (await snapshotOf(srv.url, room)).items.it;
  assert.equal(s.fields.body, '>hi!');
  assert.deepEqual(s.revs, { body: set.seq + 2 });
  const first = x.seq < y.seq ? x : y;
  const e = await a.entry(room, first.seq);
  assert.equal(e.op.rev, set.seq, 'the broadcast names the revision it applied to: gen');
});
