// sync-badinput.test.mjs -- a table of malformed requests after welcome: each
// is answered with the error code docs/PROTOCOL.md specifies (11.2), the
// connection stays open, the server stays up, and the document (epoch, seq,
// items) is exactly what it was before.
import assert from 'node:assert/strict';
import test from 'node:test';

import { SyncClient, closeClients, snapshotOf, startSyncServer, token } from './lib/sync.mjs';

const R = 'board:bad';
const OTHER = 'board:bad-other'; // exists, not joined by the client under test

const nest = (n, inner = '1') => `${'['.repeat(n)}${inner}${']'.repeat(n)}`;
const set = (fields, extra = {}) => ({ type: 'op', room: R, cid: 'bad.1', op: { kind: 'set', item: 'keep', fields, ...extra } });
const op = (o) => ({ type: 'op', room: R, cid: 'bad.1', op: o });
const big = (n) => 'x'.repeat(n);
const manyFields = (n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${i}`, i]));

// [name, request (object, or raw JSON text), code, options]: exactly one code
// per case, the one PROTOCOL.md 11.2 gives.
// options.todo: a known server bug, given as a string saying which (node
// counts the case as TODO in the summary, so it is never silently green).
// No case is marked today.
const CASES = [
  // --- join
  ['join without room', { type: 'join' }, 'bad_request'],
  ['join room a number', { type: 'join', room: 42 }, 'bad_request'],
  ['join room null', { type: 'join', room: null }, 'bad_request'],
  ['join room empty', { type: 'join', room: '' }, 'room_invalid'],
  ['join room of 129 characters', { type: 'join', room: big(129) }, 'room_invalid'],
  ['join room of 500 000 characters', { type: 'join', room: big(500000) }, 'room_invalid'],
  ['join room with a slash', { type: 'join', room: 'board/1' }, 'room_invalid'],
  ['join room with a control character', { type: 'join', room: 'board:\u0001' }, 'room_invalid'],
  ['join since a string', { type: 'join', room: R, since: '5' }, 'bad_request'],
  ['join since an array', { type: 'join', room: R, since: [1] }, 'bad_request'],
  ['join since without seq', { type: 'join', room: R, since: { epoch: 'e' } }, 'bad_request'],
  ['join since.epoch a number', { type: 'join', room: R, since: { epoch: 5, seq: 0 } }, 'bad_request'],
  ['join since.seq negative', { type: 'join', room: R, since: { epoch: 'e', seq: -1 } }, 'bad_request'],
  ['join since.seq a string', { type: 'join', room: R, since: { epoch: 'e', seq: '3' } }, 'bad_request'],
  ['join since.seq a fraction', { type: 'join', room: R, since: { epoch: 'e', seq: 1.5 } }, 'bad_request'],
  ['join since.seq 2^53', { type: 'join', room: R, since: { epoch: 'e', seq: 2 ** 53 } }, 'bad_request'],
  ['join presence an array', { type: 'join', room: 'board:bad-third', presence: [] }, 'bad_request'],
  ['join presence a string', { type: 'join', room: 'board:bad-third', presence: 'hi' }, 'bad_request'],
  ['join presence over 2 KiB', { type: 'join', room: 'board:bad-third', presence: { s: big(3000) } }, 'too_large'],
  // --- op: envelope
  ['op without room', { type: 'op', cid: 'c', op: { kind: 'set', item: 'i', fields: {} } }, 'bad_request'],
  ['op room a number', { type: 'op', room: 1, cid: 'c', op: { kind: 'set', item: 'i', fields: {} } }, 'bad_request'],
  ['op room invalid', { type: 'op', room: 'board bad', cid: 'c', op: { kind: 'set', item: 'i', fields: {} } }, 'room_invalid'],
  ['op room not joined', { type: 'op', room: OTHER, cid: 'c', op: { kind: 'set', item: 'i', fields: {} } }, 'not_joined'],
  ['op without cid', { type: 'op', room: R, op: { kind: 'set', item: 'keep', fields: { a: 2 } } }, 'bad_request'],
  ['op cid a number', { type: 'op', room: R, cid: 7, op: { kind: 'set', item: 'keep', fields: { a: 2 } } }, 'bad_request'],
  ['op cid empty', { type: 'op', room: R, cid: '', op: { kind: 'set', item: 'keep', fields: { a: 2 } } }, 'bad_request'],
  ['op cid with a space', { type: 'op', room: R, cid: 'a b', op: { kind: 'set', item: 'keep', fields: { a: 2 } } }, 'bad_request'],
  ['op cid of 129 characters', { type: 'op', room: R, cid: big(129), op: { kind: 'set', item: 'keep', fields: { a: 2 } } }, 'bad_request'],
  ['op cid of 100 000 characters', { type: 'op', room: R, cid: big(100000), op: { kind: 'set', item: 'keep', fields: { a: 2 } } }, 'bad_request'],
  ['op without op', { type: 'op', room: R, cid: 'c' }, 'bad_request'],
  ['op op a string', { type: 'op', room: R, cid: 'c', op: 'set' }, 'bad_request'],
  ['op op an array', { type: 'op', room: R, cid: 'c', op: [] }, 'bad_request'],
  ['op op null', { type: 'op', room: R, cid: 'c', op: null }, 'bad_request'],
  // --- op: the op itself
  ['op without kind', op({ item: 'keep', fields: { a: 2 } }), 'bad_request'],
  ['op kind a number', op({ kind: 1, item: 'keep', fields: { a: 2 } }), 'bad_request'],
  ['op kind unknown', op({ kind: 'upsert', item: 'keep', fields: { a: 2 } }), 'bad_request'],
  ['op kind with another case', op({ kind: 'SET', item: 'keep', fields: { a: 2 } }), 'bad_request'],
  ['set without item', op({ kind: 'set', fields: { a: 2 } }), 'bad_request'],
  ['set item a number', op({ kind: 'set', item: 5, fields: { a: 2 } }), 'bad_request'],
  ['set item empty', op({ kind: 'set', item: '', fields: { a: 2 } }), 'invalid_field'],
  ['set item with a space', op({ kind: 'set', item: 'card 7', fields: { a: 2 } }), 'invalid_field'],
  ['set item with a slash', op({ kind: 'set', item: 'a/b', fields: { a: 2 } }), 'invalid_field'],
  ['set item of 129 characters', op({ kind: 'set', item: big(129), fields: { a: 2 } }), 'invalid_field'],
  ['set item of 100 000 characters', op({ kind: 'set', item: big(100000), fields: { a: 2 } }), 'invalid_field'],
  ['set without fields', op({ kind: 'set', item: 'keep' }), 'bad_request'],
  ['set fields an array', op({ kind: 'set', item: 'keep', fields: [1] }), 'bad_request'],
  ['set fields a string', op({ kind: 'set', item: 'keep', fields: 'a=1' }), 'bad_request'],
  ['set fields null', op({ kind: 'set', item: 'keep', fields: null }), 'bad_request'],
  ['base negative', set({ a: 2 }, { base: -1 }), 'bad_request'],
  ['base a string', set({ a: 2 }, { base: '1' }), 'bad_request'],
  ['base a fraction', set({ a: 2 }, { base: 1.5 }), 'bad_request'],
  ['base 2^53', set({ a: 2 }, { base: 2 ** 53 }), 'bad_request'],
  ['base null', set({ a: 2 }, { base: null }), 'bad_request'],
  ['del item invalid', op({ kind: 'del', item: 'no way' }), 'invalid_field'],
  ['del base a string', op({ kind: 'del', item: 'keep', base: 'x' }), 'bad_request'],
  // --- document content
  ['field name empty', set({ '': 1 }), 'invalid_field'],
  ['field name of 129 bytes', set({ [big(129)]: 1 }), 'invalid_field'],
  ['field name of 129 bytes in UTF-8 (65 characters)', set({ [`${'é'.repeat(64)}a`]: 1 }), 'invalid_field'],
  ['field name of 100 000 characters', set({ [big(100000)]: 1 }), 'invalid_field'],
  ['field name with a newline', set({ 'a\nb': 1 }), 'invalid_field'],
  ['field name with U+001F', set({ 'a\u001fb': 1 }), 'invalid_field'],
  ['field nested 17 arrays deep', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","item":"keep","fields":{"a":${nest(17)}}}}`, 'invalid_field'],
  ['field nested 17 objects deep', set({ a: JSON.parse(`${'{"k":'.repeat(17)}1${'}'.repeat(17)}`) }), 'invalid_field'],
  ['field of 17 nested empty arrays', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","item":"keep","fields":{"a":${nest(17, '')}}}}`, 'invalid_field'],
  ['field of 17 nested empty objects', set({ a: JSON.parse(`${'{"k":'.repeat(16)}{}${'}'.repeat(16)}`) }), 'invalid_field'],
  ['a deep field among good ones', set({ ok: 1, a: JSON.parse(nest(20)), z: 2 }), 'invalid_field'],
  ['integer 2^53', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","item":"keep","fields":{"n":9007199254740992}}}`, 'invalid_field'],
  ['integer -2^53', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","item":"keep","fields":{"n":-9007199254740992}}}`, 'invalid_field'],
  ['integer 2^53+1 nested in an array', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","item":"keep","fields":{"n":[1,{"x":9007199254740993}]}}}`, 'invalid_field'],
  ['integer 2^63 (beyond int64)', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","item":"keep","fields":{"n":9223372036854775808}}}`, 'invalid_field'],
  ['integer 10^20', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","item":"keep","fields":{"n":100000000000000000000}}}`, 'invalid_field'],
  ['field over 64 KiB', set({ a: big(65536 - 1) }), 'too_large'],
  ['field of 1 MiB minus a bit', set({ a: big(1000000) }), 'too_large'],
  ['257 fields in one set', set(manyFields(257)), 'too_large'],
  ['item over 256 KiB', set({ a: big(60000), b: big(60000), c: big(60000), d: big(60000), e: big(60000) }), 'too_large'],
  ['U+0000 in a field value', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","item":"keep","fields":{"a":"x\\u0000y"}}}`, 'bad_json'],
  ['U+0000 in a field name', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","item":"keep","fields":{"a\\u0000":1}}}`, 'bad_json'],
  ['duplicate field names', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","item":"keep","fields":{"a":1,"a":2}}}`, 'bad_json'],
  ['duplicate op member', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","kind":"del","item":"keep","fields":{}}}`, 'bad_json'],
  ['message nested 40 levels', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","item":"keep","fields":{"a":${nest(36)}}}}`, 'bad_json'],
  ['truncated JSON', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set"`, 'bad_json'],
  ['a lone surrogate in a string', `{"type":"op","room":"${R}","cid":"bad.1","op":{"kind":"set","item":"keep","fields":{"a":"\\ud800"}}}`, 'bad_json'],
  ['an op that is a JSON array', `[{"type":"op","room":"${R}","cid":"bad.1"}]`, 'bad_json'],
  // --- rejected by the document
  ['del of a missing item', op({ kind: 'del', item: 'missing' }), 'not_found'],
  ['set base 0 on an existing item', set({ a: 2 }, { base: 0 }), 'conflict'],
  ['set with a stale base', set({ a: 2 }, { base: 1 }), 'conflict'],
  ['set with a future base', set({ a: 2 }, { base: 1000 }), 'conflict'],
  ['del with a stale base', op({ kind: 'del', item: 'keep', base: 1 }), 'conflict'],
  // --- publish
  ['publish without data', { type: 'publish', room: R }, 'bad_request'],
  ['publish room not joined', { type: 'publish', room: OTHER, data: 1 }, 'not_joined'],
  ['publish room invalid', { type: 'publish', room: 'a b', data: 1 }, 'room_invalid'],
  ['publish data over 64 KiB', { type: 'publish', room: R, data: { s: big(70000) } }, 'too_large'],
  ['ephemeral publish data over 64 KiB', { type: 'publish', room: R, data: big(70000), ephemeral: true }, 'too_large'],
  ['publish data nested 17 deep', { type: 'publish', room: R, data: JSON.parse(nest(17)) }, 'invalid_field'],
  ['publish data with integer 2^53', `{"type":"publish","room":"${R}","data":{"n":9007199254740992}}`, 'invalid_field'],
  ['publish cid a number', { type: 'publish', room: R, cid: 5, data: 1 }, 'bad_request'],
  ['publish cid invalid', { type: 'publish', room: R, cid: 'a b', data: 1 }, 'bad_request'],
  ['publish ephemeral a string', { type: 'publish', room: R, data: 1, ephemeral: 'yes' }, 'bad_request'],
  // --- presence, leave
  ['presence without state', { type: 'presence', room: R }, 'bad_request'],
  ['presence state an array', { type: 'presence', room: R, state: [] }, 'bad_request'],
  ['presence state over 2 KiB', { type: 'presence', room: R, state: { s: big(2100) } }, 'too_large'],
  ['presence room not joined', { type: 'presence', room: OTHER, state: {} }, 'not_joined'],
  ['presence room invalid', { type: 'presence', room: '', state: {} }, 'room_invalid'],
  ['leave without room', { type: 'leave' }, 'bad_request'],
  ['leave room a number', { type: 'leave', room: 3 }, 'bad_request'],
  ['leave room invalid', { type: 'leave', room: 'bad room' }, 'room_invalid'],
  // --- messages
  ['type missing', { room: R }, 'unknown_type'],
  ['type an object', { type: { op: 1 } }, 'unknown_type'],
  ['type unknown', { type: 'Op' }, 'unknown_type'],
  ['a second hello', { type: 'hello', user: 'x', device: 'y' }, 'bad_request'],
];

let srv;
let c; // the client under test: joined to R
let w; // another member of R, to see that nothing is broadcast
let before;
test.before(async () => {
  srv = await startSyncServer(null, ['--rate', '100000', '--burst', '100000']);
  const rw = { token: token('writer'), device: 'bad-w' };
  w = await SyncClient.connect(srv.url, rw);
  await w.join(OTHER);
  await w.set(OTHER, 'o1', 'thing', { x: 1 });
  await w.join(R);
  await w.set(R, 'w1', 'keep', { a: 1, nested: { b: [1, 2] } });
  await w.set(R, 'w2', 'keep', { c: 'three' });
  await w.set(R, 'w3', 'other', {});
  await w.expect({ type: 'publish', room: R, data: 'stored' }, 'ack');
  c = await SyncClient.connect(srv.url, { token: token('tester'), device: 'bad-c' });
  await c.join(R);
  await w.entry(R, 4);
  await w.waitFor((m) => m.type === 'presence' && m.event === 'join' && m.user === 'tester', 'tester joins');
  w.drain();
  before = {
    r: await snapshotOf(srv.url, R, { token: token('viewer'), device: 'v1' }),
    other: await snapshotOf(srv.url, OTHER, { token: token('viewer'), device: 'v2' }),
  };
  assert.equal(before.r.seq, 4);
});
test.after(async () => {
  await closeClients(c, w);
  await srv.stopChecked();
});

let n = 0;
/** Sends one case and checks the reply, the open connection and that R took no new entry. */
async function runCase(name, req, code) {
  const id = `bad-${++n}`;
  // A fresh cid per case: a bad request wrongly accepted must not turn the
  // later cases into duplicates of it.
  const cid = `bad.${n}`;
  if (typeof req === 'string') req = req.replace('"cid":"bad.1"', `"cid":"${cid}"`);
  else if (req.cid === 'bad.1') req = { ...req, cid };
  let reply;
  if (typeof req === 'string') {
    // Raw text: put the id first so it can be read when the JSON is.
    const text = req.startsWith('{') ? `{"id":"${id}",${req.slice(1)}` : req;
    const count = c.log.length;
    c.send(text);
    reply = await c.waitFor((m) => m.re === id || (m.type === 'error' && m.re === undefined && c.log.indexOf(m) >= count), `reply to ${name}`);
  } else {
    reply = await c.request({ ...req, id });
  }
  let failed = true;
  try {
    assert.equal(reply.type, 'error', `${name}: ${JSON.stringify(reply).slice(0, 300)}`);
    assert.equal(reply.code, code, `${name}: expected ${code}, got ${JSON.stringify(reply).slice(0, 300)}`);
    assert.equal(typeof reply.message, 'string');
    if (reply.code !== 'bad_json') {
      assert.equal(reply.re, id);
      if (typeof req === 'object' && typeof req.type === 'string') assert.equal(reply.for, req.type);
      if (typeof req === 'object' && typeof req.cid === 'string' && req.cid.length <= 128) assert.equal(reply.cid, req.cid);
    }
    if (reply.code === 'conflict') assert.ok('current' in reply, 'a conflict carries current');
    if (/surrogate/.test(name)) assert.match(reply.message, /^not valid JSON: .*Unicode/i, 'the reason is given');
    failed = false;
  } finally {
    assert.ok(c.open, 'the connection stays open');
    await c.ping();
    // No entry was written to R: a catch-up from the last position is empty.
    const j = await c.join(R, { since: pos });
    assert.equal(j.recovered, true);
    const grew = j.seq !== pos.seq;
    pos = { epoch: j.epoch, seq: j.seq };
    // (Reported only when the reply was right: the first failure says more.)
    if (!failed) assert.equal(grew, false, `${name} wrote to the room: ${JSON.stringify(j.ops).slice(0, 300)}`);
  }
}
let pos;

test('bad requests', async (t) => {
  pos = { epoch: before.r.epoch, seq: before.r.seq };
  for (const [name, req, code, opts = {}] of CASES) {
    if (opts.todo) continue;
    await t.test(`${name} -> ${code}`, () => runCase(name, req, code));
  }
});

test('afterwards: the server is up, nothing was broadcast, the documents are unchanged', async () => {
  assert.ok(c.open);
  const after = await snapshotOf(srv.url, R, { token: token('viewer'), device: 'v3' });
  assert.deepEqual(after, before.r);
  assert.deepEqual(await snapshotOf(srv.url, OTHER, { token: token('viewer'), device: 'v4' }), before.other);
  // A good op still works, and it is the first entry since the table.
  const ack = await c.set(R, 'good.1', 'fresh', { ok: true });
  assert.equal(ack.seq, before.r.seq + 1, 'no bad request took a seq');
  const e = await w.entry(R, ack.seq);
  assert.equal(e.cid, 'good.1');
  await w.ping();
  assert.deepEqual(w.drain((m) => m.type !== 'presence' || m.user !== 'viewer'), [], 'the other member got nothing else');
  // The client under test never got into OTHER.
  const j = await c.join(OTHER);
  assert.deepEqual(j.presence.map((p) => p.user).sort(), ['tester', 'writer']);
  await c.expect({ type: 'leave', room: OTHER }, 'left');
  const res = await fetch(`${srv.url}/healthz`);
  assert.equal(res.status, 200);
  pos = { epoch: before.r.epoch, seq: ack.seq };
});

// Cases the server gets wrong today; run last so that a wrongly accepted one
// cannot disturb the checks above.
test('bad requests the server does not refuse yet', async (t) => {
  for (const [name, req, code, opts = {}] of CASES) {
    if (!opts.todo) continue;
    await t.test(`${name} -> ${code}`, { todo: opts.todo }, () => runCase(name, req, code));
  }
});
