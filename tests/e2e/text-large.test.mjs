// text-large.test.mjs -- text fields past 1 MiB (docs/PROTOCOL.md 5.7,
// --max-text-size) and how the store keeps them (src/store/store.h: texts):
// each text op is stored as an op, and every DOC_SNAPSHOT_OPS (1000) ops
// the item's row is written again (a snapshot) and the ops before it go; a
// restart rebuilds the text from the snapshot plus the ops after it. The
// expected text is kept here as an array of code points, edited op by op
// (a model of PROTOCOL.md 5.7's apply, independent of the server's).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import test from 'node:test';

import { SyncClient, restartableServer, startSyncServer, token } from './lib/sync.mjs';

const ARGS = ['--rate', '100000', '--burst', '100000'];
const SNAPSHOT_OPS = 1000; // DOC_SNAPSHOT_OPS in src/sync/sync.h
const hasSqlite = !spawnSync('sqlite3', ['--version']).error;

/** A string of about n bytes of UTF-8 mixing 1- to 4-byte code points and
 * characters JSON escapes (quote, backslash, newline, a control). */
function filler(n, salt) {
  const parts = ['abc', 'é', '€', '😀', '"', '\\', '\n', '\u0001', String(salt)];
  let s = '';
  for (let i = 0, bytes = 0; bytes < n; i++) {
    const p = parts[(i * 7 + salt) % parts.length];
    s += p;
    bytes += Buffer.byteLength(p);
  }
  return s;
}

/** The expected text: code points, edited by ops as the server must. */
class Model {
  constructor() { this.cps = []; }
  apply(ops) {
    let at = 0;
    for (const c of ops) {
      if (typeof c === 'number') at += c;
      else if (typeof c === 'string') {
        const ins = Array.from(c);
        this.cps.splice(at, 0, ...ins);
        at += ins.length;
      } else {
        assert.ok(at + c.d <= this.cps.length, 'the test made a delete past the end');
        this.cps.splice(at, c.d);
      }
    }
    assert.ok(at <= this.cps.length, 'the test made an op past the end');
  }
  get length() { return this.cps.length; }
  get text() { return this.cps.join(''); }
}

/** Sends text ops on item/field from rev without waiting, then their acks. */
async function textOps(c, room, item, field, rev, opsList, cidPrefix) {
  const replies = opsList.map((ops, i) =>
    c.request({ type: 'op', room, cid: `${cidPrefix}.${i}`, op: { kind: 'text', item, field, rev: rev + i, ops } }));
  const acks = await Promise.all(replies);
  for (const [i, a] of acks.entries()) assert.equal(a.type, 'ack', `op ${i}: ${JSON.stringify(a).slice(0, 300)}`);
  return acks;
}

function sql(dataDir, query) {
  const r = spawnSync('sqlite3', [path.join(dataDir, 'wsync.db'), query], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

test('a text field grows past 1 MiB; the store keeps ops plus a snapshot; a restart rebuilds the text', async (t) => {
  const h = await restartableServer(t, ARGS);
  const room = 'doc:large';
  const a = await SyncClient.connect(h.url, { token: token('alice'), device: 'a' });
  t.after(() => a.close());
  await a.join(room);
  const created = await a.set(room, 'c.0', 'doc', { title: 'big', body: '' });
  let rev = created.seq; // a field that never held text is at the item's gen
  const text = new Model();

  // 1. Past 1 MiB in inserts of 60 kB (under the 64 kB insert limit of one op).
  const big = [];
  for (let i = 0; i < 20; i++) {
    const ins = filler(60000, i);
    const at = Math.floor(text.length / 2);
    const ops = at ? [at, ins] : [ins];
    big.push(ops);
    text.apply(ops);
  }
  let acks = await textOps(a, room, 'doc', 'body', rev, big, 'big');
  rev = acks.at(-1).rev;
  assert.ok(Buffer.byteLength(text.text) > 1024 * 1024, `${Buffer.byteLength(text.text)} bytes`);

  // 2. Small edits all over it, enough to pass one snapshot: inserts and
  // deletes at positions spread over the text.
  const small = [];
  const total = SNAPSHOT_OPS + 30 - big.length;
  for (let i = 0; i < total; i++) {
    const at = (i * 7919) % (text.length - 10);
    const ops = i % 3 === 2 ? [at + 1, { d: 3 }] : [at + 1, `é${i % 10}😀`];
    small.push(ops);
    text.apply(ops);
  }
  acks = await textOps(a, room, 'doc', 'body', rev, small, 'small');
  rev = acks.at(-1).rev;

  // 3. The item size limit (256K by default) does not count the text field.
  const other = await a.set(room, 'c.1', 'doc', { title: 'still big' });
  assert.equal(other.type, 'ack');

  const b = await SyncClient.connect(h.url, { token: token('bob'), device: 'b' });
  const j = await b.join(room);
  assert.equal(j.snapshot.items.doc.fields.body, text.text, 'the joined snapshot holds the edited text');
  assert.equal(j.snapshot.items.doc.fields.title, 'still big');
  assert.equal(j.snapshot.items.doc.revs.body, rev);
  await b.close();

  // 4. After a graceful stop: the set wrote the item's row, so no texts rows
  // are left; a few more text ops leave exactly their rows.
  const more = [[5, 'after the set'], [1, { d: 2 }], [100, 'x']];
  for (const ops of more) text.apply(ops);
  acks = await textOps(a, room, 'doc', 'body', rev, more, 'more');
  rev = acks.at(-1).rev;
  await h.stop();
  await a.closed();
  if (hasSqlite) {
    assert.equal(sql(h.dataDir, "SELECT count(*) FROM texts WHERE room = 'doc:large' AND item = 'doc'"), '3',
      'the ops since the last row write, one row each');
    const stored = JSON.parse(sql(h.dataDir, "SELECT revs FROM items WHERE room = 'doc:large' AND item = 'doc'"));
    assert.equal(stored.body, rev - 3, 'the row holds the text as of the set');
  }

  // 5. A restart rebuilds the text from the row and the three ops.
  await h.start();
  const c = await SyncClient.connect(h.url, { token: token('carol'), device: 'c' });
  t.after(() => c.close());
  const j2 = await c.join(room);
  assert.equal(j2.snapshot.items.doc.fields.body, text.text);
  assert.equal(j2.snapshot.items.doc.revs.body, rev);
  // The revisions continue where they were: an op at rev applies.
  const last = await c.request({ type: 'op', room, cid: 'after.0', op: { kind: 'text', item: 'doc', field: 'body', rev, ops: [{ d: 4 }] } });
  assert.equal(last.type, 'ack', JSON.stringify(last).slice(0, 300));
  assert.equal(last.rev, rev + 1);
  text.apply([{ d: 4 }]);

  // 6. Enough ops after the restart for a snapshot without any set: the
  // rows before it are gone, the row holds the text.
  const rest = [];
  for (let i = 0; i < SNAPSHOT_OPS + 5; i++) {
    const ops = [(i * 31) % 5000 + 1, 'y'];
    rest.push(ops);
    text.apply(ops);
  }
  acks = await textOps(c, room, 'doc', 'body', rev + 1, rest, 'rest');
  rev = acks.at(-1).rev;
  await h.kill(); // a crash: what was acknowledged is committed
  await c.closed();
  if (hasSqlite) {
    // Loading replayed the 3 rows (counted as ops since the row write),
    // after.0 made 4: the snapshot came with the 1000th, the rows after it
    // remain.
    const rows = Number(sql(h.dataDir, "SELECT count(*) FROM texts WHERE room = 'doc:large'"));
    assert.equal(rows, 3 + 1 + rest.length - SNAPSHOT_OPS);
    assert.ok(rows < SNAPSHOT_OPS, `${rows} rows left`);
  }
  await h.start();
  const d = await SyncClient.connect(h.url, { token: token('dave'), device: 'd' });
  t.after(() => d.close());
  const j3 = await d.join(room);
  assert.equal(j3.snapshot.items.doc.fields.body, text.text);
  assert.equal(j3.snapshot.items.doc.revs.body, rev);
});

test('a text field stops at --max-text-size with too_large and stays as it was', async (t) => {
  const srv = await startSyncServer(t, [...ARGS, '--max-text-size', '100K']);
  const room = 'doc:limit';
  const a = await SyncClient.connect(srv.url, { token: token('alice'), device: 'a' });
  t.after(() => a.close());
  await a.join(room);
  const created = await a.set(room, 'c.0', 'doc', { body: '' });
  const first = filler(60000, 1);
  const ok = await a.request({ type: 'op', room, cid: 't.1', op: { kind: 'text', item: 'doc', field: 'body', rev: created.seq, ops: [first] } });
  assert.equal(ok.type, 'ack');
  const over = await a.request({ type: 'op', room, cid: 't.2', op: { kind: 'text', item: 'doc', field: 'body', rev: ok.rev, ops: [filler(60000, 2)] } });
  assert.equal(over.type, 'error');
  assert.equal(over.code, 'too_large');
  assert.equal(over.field, 'op.ops');
  const j = await a.join(room);
  assert.equal(j.snapshot.items.doc.fields.body, first);
  assert.equal(j.snapshot.items.doc.revs.body, ok.rev);
});
