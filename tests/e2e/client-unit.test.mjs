// client-unit.test.mjs -- pieces of the JavaScript client checked without a
// server: the SSE stream parser (any split of the input), the backoff bounds,
// and the room replica driven by hand-made server messages (dedupe by seq,
// entries ahead of a gap, rollback among several pending ops on one item, an
// extension op kind going through the single dispatch point).
import assert from 'node:assert/strict';
import test from 'node:test';

import { SseParser } from '../../clients/js/transports.js';
import { Room, backoffDelay, defineOpKind } from '../../clients/js/wsync.js';
import { fakeClient } from './lib/fakes.mjs';

const STREAM = ': ping\r\n\r\nid: 1\ndata: {"type":"joined"}\n\n' +
  'id: 2\r\nevent: message\r\ndata: {"a":\r\ndata: 1}\r\n\r\n' +
  'retry: 10\rid: 3\rdata:{"x":"é ✓"}\r\r' +
  'event: close\ndata: {"code":4001,"reason":"replaced"}\n\n' +
  'data: incomplete';

const WANT = [
  { event: 'message', data: '{"type":"joined"}', id: '1' },
  { event: 'message', data: '{"a":\n1}', id: '2' },
  { event: 'message', data: '{"x":"é ✓"}', id: '3' },
  { event: 'close', data: '{"code":4001,"reason":"replaced"}', id: '3' },
];

test('SSE parser: the same events for every split of the stream', () => {
  const whole = [];
  new SseParser((e) => whole.push(e)).feed(STREAM);
  assert.deepEqual(whole, WANT, 'in one piece');
  for (let cut = 1; cut < STREAM.length; cut++) {
    const got = [];
    const p = new SseParser((e) => got.push(e));
    p.feed(STREAM.slice(0, cut));
    p.feed(STREAM.slice(cut));
    assert.deepEqual(got, WANT, `split at ${cut}`);
  }
  const bytewise = [];
  const p = new SseParser((e) => bytewise.push(e));
  for (const ch of STREAM) p.feed(ch);
  assert.deepEqual(bytewise, WANT, 'one character at a time');
});

test('backoff: full jitter under an exponential cap', () => {
  const o = { base: 250, max: 10000 };
  assert.equal(backoffDelay(0, o, () => 0), 0);
  assert.equal(backoffDelay(0, o, () => 0.999999) < 250, true);
  assert.equal(backoffDelay(3, o, () => 0.5), 1000);
  assert.equal(backoffDelay(6, o, () => 0.5), 5000, 'base * 2^6 = 16000, capped at 10000');
  assert.equal(backoffDelay(500, o, () => 0.5), 5000, 'no overflow for large n');
});

function joinedRoom() {
  const c = fakeClient();
  const r = new Room(c, 'board:u');
  c._rooms.set('board:u', r);
  r._onJoined({
    type: 'joined', room: 'board:u', epoch: 'e1', seq: 2, recovered: false,
    snapshot: { items: { x: { version: 2, fields: { a: 1 } } } }, presence: [], locks: [],
  });
  return { c, r };
}

const entry = (seq, op, extra = {}) => ({ type: 'op', room: 'board:u', seq, from: { user: 'bob', device: 'b' }, op, ...extra });

test('replica: entries deduplicated by seq; an entry ahead of a gap waits and a join with since repairs it', () => {
  const { c, r } = joinedRoom();
  const changes = [];
  r.on('change', (ch) => changes.push(ch));
  r._onEntry(entry(3, { kind: 'set', item: 'x', fields: { b: 2 } }));
  r._onEntry(entry(3, { kind: 'set', item: 'x', fields: { b: 99 } })); // a duplicate
  assert.deepEqual(r.get('x'), { a: 1, b: 2 });
  assert.equal(r.version('x'), 3);
  r._onEntry(entry(5, { kind: 'del', item: 'x' })); // 4 is missing
  assert.deepEqual(r.get('x'), { a: 1, b: 2 }, 'not applied across the gap');
  const join = c.sent.find((m) => m.type === 'join');
  assert.deepEqual(join.since, { epoch: 'e1', seq: 3 }, 'repair by join with since');
  r._onJoined({ type: 'joined', room: 'board:u', epoch: 'e1', seq: 4, recovered: true, presence: [], locks: [],
    ops: [entry(4, { kind: 'set', item: 'y', fields: { n: 4 } })] });
  assert.equal(r.get('x'), undefined, 'the waiting entry 5 applied after 4');
  assert.deepEqual(r.get('y'), { n: 4 });
  assert.equal(r.position.seq, 5);
  assert.deepEqual(changes.map((ch) => [ch.id, ch.version, ch.removed]), [['x', 3, false], ['y', 4, false], ['x', undefined, true]]);
});

test('replica: rollback of the middle of three pending ops on one item recomputes from the server state', () => {
  const { c, r } = joinedRoom();
  r.set('x', { p: 1 });
  r.set('x', { q: 2 }, { base: 1 });
  r.set('x', { p: 3, a: null });
  assert.deepEqual(r.get('x'), { p: 3, q: 2 });
  const ops = c.sent.filter((m) => m.type === 'op');
  assert.equal(ops.length, 3);
  // The server: 1st accepted, 2nd refused, 3rd accepted; a remote write in between.
  r._onAck({ type: 'ack', room: 'board:u', cid: ops[0].cid, seq: 3 });
  r._onEntry({ ...entry(3, ops[0].op), from: { user: 'alice', device: 'dev1' }, cid: ops[0].cid });
  r._onEntry(entry(4, { kind: 'set', item: 'x', fields: { remote: true } }));
  const errors = [];
  r.on('error', (e) => errors.push(e));
  r._onOpError(r._pending.find((p) => p.cid === ops[1].cid), { type: 'error', code: 'conflict', message: 'no', cid: ops[1].cid, item: 'x' });
  assert.deepEqual(r.get('x'), { p: 3, remote: true }, 'q gone; p:3 and a:null still pending on top');
  assert.equal(errors[0].code, 'conflict');
  assert.deepEqual(errors[0].op, ops[1].op);
  r._onAck({ type: 'ack', room: 'board:u', cid: ops[2].cid, seq: 5 });
  assert.equal(r.pendingCount, 1, 'acked, its entry not yet applied: still on top');
  r._onEntry({ ...entry(5, ops[2].op), from: { user: 'alice', device: 'dev1' }, cid: ops[2].cid });
  assert.equal(r.pendingCount, 0);
  assert.deepEqual(r.get('x'), { p: 3, remote: true });
  assert.equal(r.version('x'), 5);
});

test('replica: an extension op kind goes through the one dispatch point', () => {
  const seen = [];
  defineOpKind('append', {
    apply(fields, op) {
      const out = { ...(fields || {}) };
      out[op.field] = (out[op.field] || '') + op.text;
      return out;
    },
    onEntry: (room, e) => seen.push(['entry', e.seq]),
    onAck: (room, rec, ack) => seen.push(['ack', ack.seq]),
    onError: (room, rec, err) => {
      seen.push(['error', err.code]);
      return err.code === 'rev_too_old' ? 'keep' : undefined;
    },
  });
  const { c, r } = joinedRoom();
  r._submit({ kind: 'append', item: 'x', field: 's', text: 'ab' });
  assert.deepEqual(r.get('x'), { a: 1, s: 'ab' }, 'applied optimistically');
  const op = c.sent.find((m) => m.type === 'op');
  r._onEntry(entry(3, { kind: 'append', item: 'x', field: 's', text: 'Z' }));
  assert.deepEqual(r.get('x'), { a: 1, s: 'Zab' }, 'remote first, pending re-applied on top');
  r._onOpError(r._pending[0], { type: 'error', code: 'rev_too_old', cid: op.cid });
  assert.equal(r.pendingCount, 1, "the handler kept it ('keep')");
  r._onAck({ type: 'ack', room: 'board:u', cid: op.cid, seq: 4 });
  r._onEntry({ ...entry(4, op.op), from: { user: 'alice', device: 'dev1' }, cid: op.cid });
  assert.deepEqual(r.get('x'), { a: 1, s: 'Zab' });
  assert.deepEqual(seen, [['entry', 3], ['error', 'rev_too_old'], ['ack', 4], ['entry', 4]]);
});
