// sync-catchup-parts.test.mjs -- a large catch-up by ops is sent in parts,
// as a large snapshot is (docs/PROTOCOL.md 6.2, 6.3; src/sync/stream.c): the
// joined reply (recovered: true) carries the first ops and `more: true`,
// `catchup` messages carry the rest, the last with `more: false`, each part
// read from the store on its own loop turn. Checked on real sockets: the
// parts add up to exactly the entries after since up to joined.seq, once
// each and in order; live entries of the room (after joined.seq) may come
// between the parts, in order, none missing; the log is not trimmed under a
// catch-up being sent (--history-ops); a new join stops the parts of the
// previous one; the JS client assembles the parts and applies the live
// entries after them, over WebSocket, SSE and long-poll.
import assert from 'node:assert/strict';
import test from 'node:test';

import { docOf, KEY, makeClient, online, recordRoom, SERVER_ARGS, serverDoc, startProxy } from './lib/client-util.mjs';
import { waitUntil } from './lib/server.mjs';
import { api, CLUSTER, SyncClient, startSyncServer, token } from './lib/sync.mjs';

const BODY = 1000; // bytes per op: 600 ops make about 0.7 MB, five or six parts

/** n ops of about BODY bytes on items it0..; resolves the acks' last seq. */
async function write(c, room, from, n, tag = 'w') {
  let last = 0;
  for (let i = from; i < from + n; i += 50) {
    const acks = [];
    for (let k = i; k < Math.min(i + 50, from + n); k++) {
      acks.push(c.request({ type: 'op', room, cid: `${tag}.${k}`,
        op: { kind: 'set', item: `it${k % 40}`, fields: { k, body: `${k}:`.padEnd(BODY, 'xyz') } } }));
    }
    for (const a of await Promise.all(acks)) {
      assert.equal(a.type, 'ack', JSON.stringify(a));
      last = Math.max(last, a.seq);
    }
  }
  return last;
}

const entriesOf = (log, room) => log.filter((m) => (m.type === 'op' || m.type === 'message') && m.room === room);

/**
 * A server keeping historyOps entries, a writer that wrote 100 ops to room
 * (since: the last of them) and then n more of about BODY bytes (upto), and
 * a joiner connected before those n: ready to join with since.
 */
async function catchupSetup(t, room, historyOps, n) {
  const srv = await startSyncServer(t, [...SERVER_ARGS, '--rate', '1000000', '--burst', '1000000', '--history-ops', String(historyOps)]);
  const writer = await SyncClient.connect(srv.url, { token: token('writer'), device: 'w' });
  t.after(() => writer.close());
  const j0 = await writer.join(room);
  const since = await write(writer, room, 0, 100, 'a');
  const joiner = await SyncClient.connect(srv.url, { token: token('joiner'), device: 'j' });
  t.after(() => joiner.close());
  const upto = await write(writer, room, 100, n, 'b');
  return { srv, writer, joiner, j0, since, upto };
}

test('a catch-up of 0.7 MB in parts: exact, in order, live entries after it, the log kept meanwhile', async (t) => {
  // --history-ops 700: trimming runs during the catch-up (every 256 seqs);
  // the parts here go out faster than it reaches them. The next test makes
  // the reader slow, which is where the retention floor matters.
  const room = 'doc:catchup';
  const { srv, writer, joiner, j0, since, upto } = await catchupSetup(t, room, 700, 600);

  const mark = joiner.log.length;
  const joined = await joiner.join(room, { since: { epoch: j0.epoch, seq: since } });
  // Live writes, enough to pass two trim points, while the parts go out.
  const live = write(writer, room, 700, 600, 'c');
  assert.equal(joined.recovered, true);
  assert.equal(joined.seq, upto);
  assert.equal(joined.more, true, 'a 0.7 MB catch-up comes in parts');
  await joiner.waitFor((m) => m.type === 'catchup' && m.room === room && m.more === false, 'the last part', 60000);
  const lastLive = await live;
  await waitUntil(() => entriesOf(joiner.log, room).some((m) => m.seq === lastLive), 'the live entries');

  const after = joiner.log.slice(mark);
  const parts = after.filter((m) => m.type === 'catchup' && m.room === room);
  assert.ok(parts.length >= 2, `${parts.length} parts after the joined`);
  assert.equal(parts.filter((m) => m.more === false).length, 1, 'one last part');

  const ops = [...joined.ops, ...parts.flatMap((p) => p.ops)];
  assert.deepEqual(ops.map((o) => o.seq), Array.from({ length: upto - since }, (_, i) => since + 1 + i),
    'every entry after since up to joined.seq, once, in order');
  for (const o of ops) assert.equal(o.op.fields.k, o.seq - 1, `entry ${o.seq} is the op written`);

  const liveSeqs = entriesOf(after, room).map((m) => m.seq);
  assert.deepEqual(liveSeqs, Array.from({ length: lastLive - upto }, (_, i) => upto + 1 + i),
    'live entries: after joined.seq, in order, none missing');
  const iLast = after.findIndex((m) => m.type === 'catchup' && m.more === false);
  t.diagnostic(`${parts.length + 1} parts; ${entriesOf(after.slice(0, iLast), room).length} live entries arrived between them`);

  // The entries the parts read were kept while they were sent (above: all
  // of them arrived); once the catch-up is done, retention trims again.
  const lastD = await write(writer, room, 1300, 300, 'd');
  const h = await api(srv.url, 'GET', `/v1/rooms/${room}/history?limit=1`, { key: KEY });
  assert.equal(h.status, 200, h.text);
  assert.ok(h.body.first > since + 1, `the log was trimmed after the catch-up (first ${h.body.first})`);

  await t.test('a small catch-up keeps the one-message form', async () => {
    const j = await joiner.join(room, { since: { epoch: j0.epoch, seq: lastD - 5 } });
    assert.equal(j.ops.length, 5);
    assert.equal(j.recovered, true);
    assert.equal(j.more, undefined);
  });

  await t.test('a new join stops the parts of the previous one', async () => {
    const c = await SyncClient.connect(srv.url, { token: token('again'), device: 'a' });
    t.after(() => c.close());
    const m0 = c.log.length;
    const first = c.request({ type: 'join', room, since: { epoch: j0.epoch, seq: 900 } });
    const second = c.request({ type: 'join', room });
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.type, 'joined');
    assert.equal(b.type, 'joined');
    await c.ping();
    const log = c.log.slice(m0);
    const iSecond = log.indexOf(b);
    assert.deepEqual(log.slice(iSecond + 1).filter((m) => m.type === 'catchup'), [], 'no part after the new joined');
  });
});

// In a cluster a catch-up is read at once and sent from memory (nothing to
// keep in the log for it), and its join is answered after a fetch, by which
// time these writes may have trimmed what it asked for (then: a snapshot).
test('the log is not trimmed under a catch-up whose reader is slow (--history-ops)', {
  skip: CLUSTER && 'one node: a cluster reads a catch-up at once',
}, async (t) => {
  // A 10 MB catch-up for a joiner that stops reading: once the socket
  // buffers are full the parts wait for its connection (stream.h), while
  // 8,000 small writes move the trim point far past what was sent;
  // retention keeps the entries not sent yet until they are.
  const room = 'doc:slow';
  const { srv, writer, joiner, j0, since, upto } = await catchupSetup(t, room, 10100, 10000);
  const mark = joiner.log.length;
  const pending = joiner.request({ type: 'join', room, since: { epoch: j0.epoch, seq: since } }, 120000);
  joiner.ws._socket.pause(); // a slow reader, from the start
  let lastLive = upto;
  for (let k = 0; k < 8000; k += 200) {
    const acks = [];
    for (let i = k; i < k + 200; i++) acks.push(writer.request({ type: 'op', room, cid: `c.${i}`, op: { kind: 'set', item: 'small', fields: { i } } }));
    for (const a of await Promise.all(acks)) lastLive = Math.max(lastLive, a.seq);
  }
  const first = await api(srv.url, 'GET', `/v1/rooms/${room}/history?limit=1`, { key: KEY });
  t.diagnostic(`while the reader was paused the log started at ${first.body.first} (the catch-up began at ${since + 1})`);
  joiner.ws._socket.resume();
  const joined = await pending;
  assert.equal(joined.type, 'joined');
  assert.equal(joined.more, true);
  await joiner.waitFor((m) => m.type === 'catchup' && m.room === room && m.more === false, 'the last part', 120000);
  await waitUntil(() => entriesOf(joiner.log, room).some((m) => m.seq === lastLive), 'the live entries', 60000);
  const after = joiner.log.slice(mark);
  assert.equal(after.filter((m) => m.type === 'joined').length, 1, 'not answered again');
  const ops = [...joined.ops, ...after.filter((m) => m.type === 'catchup').flatMap((p) => p.ops)];
  assert.deepEqual(ops.map((o) => o.seq), Array.from({ length: upto - since }, (_, i) => since + 1 + i),
    'every entry of the catch-up arrived, once, in order');
  const live = entriesOf(after, room).map((m) => m.seq);
  assert.deepEqual(live, Array.from({ length: lastLive - upto }, (_, i) => upto + 1 + i), 'then the live ones');
});

for (const transport of ['ws', 'sse', 'poll']) {
  test(`the JS client over ${transport}: a reconnect's catch-up in parts, live entries after it`, async (t) => {
    const srv = await startSyncServer(t, [...SERVER_ARGS, '--rate', '1000000', '--burst', '1000000', '--resume-window', '200ms']);
    const room = `doc:js-${transport}`;
    const writer = await SyncClient.connect(srv.url, { token: token('writer'), device: 'w' });
    t.after(() => writer.close());
    await writer.join(room);
    await write(writer, room, 0, 10, 'a');
    const proxy = await startProxy(t, srv.port);
    const c = makeClient(t, proxy.url, { user: 'js', transport });
    const r = c.room(room);
    const rr = recordRoom(r);
    await r.ready;
    proxy.block();
    proxy.cut();
    await waitUntil(() => c.status !== 'online', 'offline');
    // Past the resume window, 600 ops more: the client's join gets a catch-up in parts.
    await new Promise((res) => setTimeout(res, 600));
    const upto = await write(writer, room, 10, 600, 'b');
    proxy.unblock();
    await online(c);
    await waitUntil(() => r.position.seq >= upto, 'the catch-up applied', 60000);
    const w = await writer.set(room, 'late', 'it0', { late: true });
    await waitUntil(() => r.position.seq >= w.seq, 'a live entry after it');
    const joins = rr.events.filter((e) => e.event === 'joined');
    assert.equal(joins.at(-1).recovered, true, 'the reconnect caught up by ops (in parts: about 0.6 MB)');
    const doc = docOf(r);
    assert.equal(Object.keys(doc).length, 40);
    assert.equal(doc.it0.late, true);
    assert.equal(doc.it39.k, 599);
    assert.deepEqual(doc, await serverDoc(srv.url, room), 'the client has the server\'s document');
  });
}
