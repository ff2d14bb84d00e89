// client-sync.test.mjs -- the JavaScript client (clients/js/wsync.js) against
// the real server, the same suite once per forced transport (WebSocket, SSE,
// long-polling; docs/PROTOCOL.md 2.1, 2.4): convergence of three replicas,
// optimistic writes and their rollback, offline edits, a crash of the server
// with writes in flight, resume versus catch-up, presence, locks, publish,
// and the replaced session (4001).
//
// WSYNC_CLIENT_TRANSPORTS=ws,sse (comma-separated) runs a subset.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  KEY, SERVER_ARGS, cidCounts, docOf, history, makeClient, online, recordRoom, rejection, sentOf,
  serverDoc, serverSnapshot, serverVersions, settled, startProxy,
} from './lib/client-util.mjs';
import { WAIT_MS, scale, sleep, waitUntil } from './lib/server.mjs';
import { CLUSTER, api, restartableServer, startSyncServer } from './lib/sync.mjs';

const TRANSPORTS = (process.env.WSYNC_CLIENT_TRANSPORTS || 'ws,sse,poll').split(',');

/** Everything a client reported as an error, except the expected codes. */
function unexpectedErrors(c, ...allowed) {
  return c.errors.filter((e) => !allowed.includes(e.code));
}

function syncSuite(transport) {
  const mk = (t, url, opts) => makeClient(t, url, { transport, ...opts });
  /**
   * alice behind a proxy the test can cut, bob straight on the server, both
   * in room and ready; `record` says whose room events are recorded.
   */
  const pair = async (t, srv, room, { record = 'alice', bob = {} } = {}) => {
    // On a cluster a WebSocket resume works on the session's node only (a
    // resume reaching another node starts a new session, PROTOCOL.md 3.5):
    // alice's WebSocket goes to one node through her proxy; the HTTP
    // transports go through the round-robin proxy, each request to another
    // node (forwarded to the session's).
    const proxy = await startProxy(t, CLUSTER && transport === 'ws' ? srv.nodes[0].port : srv.port);
    const a = mk(t, proxy.url, { user: 'alice' });
    const b = mk(t, srv.url, { user: 'bob', ...bob });
    const ra = record === 'alice' ? recordRoom(a.room(room)) : a.room(room);
    const rb = record === 'bob' ? recordRoom(b.room(room)) : b.room(room);
    await Promise.all([ra.ready, rb.ready]);
    return { proxy, a, b, ra, rb };
  };

  test('three clients converge: sets, deletes, batch, concurrent writes', async (t) => {
    const srv = await startSyncServer(t, SERVER_ARGS);
    const room = 'board:sync';
    const [a, b, c] = ['alice', 'bob', 'carol'].map((user) => mk(t, srv.url, { user }));
    const [ra, rb, rc] = [a, b, c].map((cl) => recordRoom(cl.room(room)));
    await Promise.all([ra.ready, rb.ready, rc.ready]);
    assert.deepEqual([a, b, c].map((cl) => cl.transport), [transport, transport, transport]);
    assert.equal(a.status, 'online');

    const acks = await Promise.all([
      ra.set('card-1', { title: 'One', col: 'todo' }),
      rb.set('card-2', { title: 'Two', tags: ['x', 'y'] }),
      rc.batch([{ kind: 'set', item: 'card-3', fields: { n: 3 } }, { kind: 'set', item: 'card-4', fields: { n: 4 } }]),
    ]);
    assert.deepEqual(acks.map((x) => x.seq).sort(), [1, 2, 3], 'one seq per op, the batch included');
    await settled([ra, rb, rc], 3);
    assert.deepEqual(rb.get('card-1'), { title: 'One', col: 'todo' });
    assert.equal(rb.version('card-3'), rb.version('card-4'), 'a batch gives every item the same version');

    // A second round, with two writers on one field at once.
    const second = [
      rb.delete('card-3'),
      ra.set('card-1', { col: 'done', title: null }),
      rc.batch([{ kind: 'del', item: 'card-4' }, { kind: 'set', item: 'card-5', fields: { nested: { a: [1, { b: 2 }] } } }]),
      ra.set('card-2', { owner: 'alice' }),
      rb.set('card-2', { owner: 'bob' }),
      rc.set('card-2', { owner: 'carol' }),
    ];
    await Promise.all(second);
    await settled([ra, rb, rc], 9);

    const want = await serverDoc(srv.url, room);
    assert.deepEqual(Object.keys(want), ['card-1', 'card-2', 'card-5']);
    assert.deepEqual(want['card-1'], { col: 'done' }, 'null deletes a field');
    for (const r of [ra, rb, rc]) assert.deepEqual(docOf(r), want, `${r.client.user} has the server's document`);
    const versions = await serverVersions(srv.url, room);
    for (const r of [ra, rb, rc]) {
      for (const [id, v] of Object.entries(versions)) assert.equal(r.version(id), v, `${r.client.user}: version of ${id}`);
    }
    // A fresh client gets the same document by snapshot.
    const d = mk(t, srv.url, { user: 'dave' });
    const rd = d.room(room);
    await rd.ready;
    assert.deepEqual(docOf(rd), want);
    assert.equal(rd.position.seq, 9);

    // Remote changes were reported as such, with their versions.
    const remote = rb.events.filter((e) => e.event === 'change' && e.id === 'card-1' && !e.local);
    assert.deepEqual(remote.at(-1), {
      event: 'change', id: 'card-1', fields: { col: 'done' }, version: versions['card-1'], local: false, removed: false,
      from: { user: 'alice', device: a.device }, seq: versions['card-1'],
    });
    assert.ok(rb.events.some((e) => e.event === 'change' && e.id === 'card-4' && e.removed), 'the batch del reached bob');
    for (const cl of [a, b, c, d]) assert.deepEqual(unexpectedErrors(cl), [], `${cl.user}: no error`);
  });

  test('optimistic writes apply at once; a conflict rolls back only the refused op', async (t) => {
    const srv = await startSyncServer(t, SERVER_ARGS);
    const room = 'board:rollback';
    const a = mk(t, srv.url, { user: 'alice' });
    const b = mk(t, srv.url, { user: 'bob' });
    const ra = recordRoom(a.room(room));
    const rb = b.room(room);
    await Promise.all([ra.ready, rb.ready]);
    await ra.set('x', { f: 0 });
    await rb.set('x', { by: 'bob' });
    await rb.set('z', { owner: 'bob' });
    await rb.set('w', { k: 1 });
    await settled([ra, rb], 4);

    // Four ops sent together on two items; the 2nd and the 4th are refused.
    const p1 = ra.set('x', { f: 1 });
    const p2 = ra.set('x', { g: 2 }, { base: 2 }); // x is at version 2, but p1 comes first
    const p3 = ra.set('x', { h: 3 });
    const p4 = ra.set('z', { owner: 'alice' }, { base: 0 }); // "must not exist"
    const p5 = ra.delete('w', { base: 999 });
    assert.deepEqual(ra.get('x'), { f: 1, by: 'bob', g: 2, h: 3 }, 'every pending op is visible at once');
    assert.deepEqual(ra.get('z'), { owner: 'alice' });
    assert.equal(ra.get('w'), undefined, 'the optimistic delete');
    assert.equal(ra.pendingCount, 5);

    const [r1, r3] = await Promise.all([p1, p3]);
    assert.ok(r3.seq > r1.seq);
    const e2 = await rejection(p2, 'the set with a stale base');
    const e4 = await rejection(p4, 'the set with base 0 on an existing item');
    const e5 = await rejection(p5, 'the delete with a wrong base');
    assert.deepEqual([e2.code, e4.code, e5.code], ['conflict', 'conflict', 'conflict']);
    assert.equal(e2.details.current.version, r1.seq, 'the server says which version it has: after p1');
    await settled([ra, rb]);

    assert.deepEqual(ra.get('x'), { f: 1, by: 'bob', h: 3 }, 'g rolled back, f and h kept');
    assert.deepEqual(ra.get('z'), { owner: 'bob' }, 'z restored');
    assert.deepEqual(ra.get('w'), { k: 1 }, 'w back after the refused delete');
    assert.deepEqual(docOf(ra), await serverDoc(srv.url, room));
    assert.deepEqual(docOf(rb), docOf(ra));

    const errs = ra.events.filter((e) => e.event === 'error');
    assert.deepEqual(errs.map((e) => [e.code, e.item]), [['conflict', 'x'], ['conflict', 'z'], ['conflict', 'w']]);
    assert.deepEqual(errs[0].op, { kind: 'set', item: 'x', fields: { g: 2 }, base: 2 });
    const rollback = ra.events.filter((e) => e.event === 'change' && e.id === 'x' && e.local);
    assert.deepEqual(rollback.at(-1).fields, { f: 1, by: 'bob', h: 3 }, 'the rollback is a local change');
    assert.deepEqual(unexpectedErrors(a), []);
  });

  test('edits made offline are kept, sent on reconnect, and seen once by the others', async (t) => {
    const srv = await startSyncServer(t, SERVER_ARGS);
    const room = 'board:offline';
    const { proxy, a, b, ra, rb } = await pair(t, srv, room, { record: 'bob' });
    await ra.set('keep', { v: 1 });
    await ra.set('gone', { v: 1 });

    proxy.block();
    proxy.cut();
    await waitUntil(() => a.status !== 'online', 'alice offline');
    const ops = [
      ra.set('off-1', { v: 1 }),
      ra.set('keep', { v: 2 }),
      ra.delete('gone'),
      ra.batch([{ kind: 'set', item: 'off-2', fields: { v: 2 } }, { kind: 'set', item: 'off-3', fields: { v: 3 } }]),
      ra.publish({ text: 'written offline' }),
      ra.set('off-1', { w: 1 }),
    ];
    assert.deepEqual(docOf(ra), {
      keep: { v: 2 }, 'off-1': { v: 1, w: 1 }, 'off-2': { v: 2 }, 'off-3': { v: 3 },
    }, 'offline edits are visible locally');
    assert.equal(ra.pendingCount, 6);
    const before = await history(srv.url, room);
    assert.equal(before.length, 2, 'nothing reached the server while offline');

    proxy.unblock();
    const acks = await Promise.all(ops);
    await settled([ra, rb], 8);
    assert.deepEqual(acks.map((x) => x.seq), [3, 4, 5, 6, 7, 8], 'sent in the order made');
    const entries = await history(srv.url, room);
    assert.equal(entries.length, 8);
    const counts = cidCounts(entries);
    assert.ok([...counts.values()].every((n) => n === 1), 'each op once in the log');
    assert.deepEqual(docOf(rb), docOf(ra));
    assert.deepEqual(docOf(rb), await serverDoc(srv.url, room));
    assert.deepEqual(rb.events.filter((e) => e.event === 'message').map((e) => e.data), [{ text: 'written offline' }],
      'the publish reached bob once');
    assert.ok(a.statuses.includes(`online:${transport}`));
    assert.deepEqual(unexpectedErrors(a), []);
    assert.deepEqual(unexpectedErrors(b), []);
  });

  test('the server is killed and restarted with writes in flight: no op lost or doubled', async (t) => {
    const h = await restartableServer(t, SERVER_ARGS);
    const room = 'board:crash';
    const users = ['alice', 'bob', 'carol'];
    const clients = users.map((user) => mk(t, h.url, { user }));
    const rooms = clients.map((c) => c.room(room));
    await Promise.all(rooms.map((r) => r.ready));
    const N1 = scale(40, 15);
    const N2 = scale(10, 5);
    const all = [];
    const write = (r, u, i) => {
      const p = i % 7 === 6 ? r.delete(`${u}-${(i - 1) % 5}`) : r.set(`${u}-${i % 5}`, { i, u });
      all.push(p);
      return p;
    };
    // Ops stream from three clients; the server dies in the middle of it.
    const streams = users.map(async (u, k) => {
      for (let i = 0; i < N1; i++) {
        write(rooms[k], u, i);
        if (i % 4 === 3) await sleep(1);
      }
    });
    await sleep(5);
    let ackedAtKill = 0;
    all.forEach((p) => p.then(() => ackedAtKill++, () => {}));
    await h.kill();
    t.diagnostic(`${ackedAtKill} of ${all.length} ops acked when the server was killed`);
    await Promise.all(streams);
    // More ops while the server is down.
    await waitUntil(() => clients.every((c) => c.status !== 'online'), 'every client noticed');
    users.forEach((u, k) => {
      for (let i = N1; i < N1 + N2; i++) write(rooms[k], u, i);
    });
    await h.start();
    const results = await Promise.allSettled(all);
    const failed = results.filter((x) => x.status === 'rejected');
    assert.deepEqual(failed.map((x) => x.reason.code), [], 'every op accepted');
    const total = all.length;
    await settled(rooms, total);

    const entries = await history(h.url, room);
    assert.equal(entries.length, total, 'one log entry per accepted op');
    assert.deepEqual(entries.map((e) => e.seq), Array.from({ length: total }, (_, i) => i + 1));
    const counts = cidCounts(entries);
    assert.equal(counts.size, total);
    assert.ok([...counts.values()].every((n) => n === 1), 'no cid twice');
    const acked = results.filter((x) => x.status === 'fulfilled').map((x) => x.value.seq);
    assert.equal(new Set(acked).size, total, 'every ack names its own seq');
    const want = await serverDoc(h.url, room);
    for (const r of rooms) assert.deepEqual(docOf(r), want, `${r.client.user} converged`);
    for (const c of clients) {
      assert.ok(c.welcomes.some((w) => !w.resumed) && c.welcomes.length >= 2, 'a new session after the restart');
      assert.deepEqual(unexpectedErrors(c), []);
    }
  });

  test('a short network cut resumes the session: no rejoin, the missed entries replayed', async (t) => {
    const srv = await startSyncServer(t, SERVER_ARGS);
    const room = 'board:resume';
    const { proxy, a, b, ra, rb } = await pair(t, srv, room);
    await ra.set('a', { v: 1 });
    await settled([ra, rb], 1);
    const session = a.session;
    const sentBefore = a.sent.length;
    const joinedBefore = ra.events.filter((e) => e.event === 'joined').length;

    proxy.block();
    proxy.cut();
    await waitUntil(() => a.status !== 'online', 'alice offline');
    await rb.set('b', { v: 2 }); // while alice is away
    await rb.publish({ text: 'missed' });
    proxy.unblock();
    await online(a);
    await settled([ra, rb], 3);

    assert.equal(a.welcomes.at(-1).resumed, true, 'welcome.resumed');
    assert.equal(a.session, session, 'the same session');
    assert.ok(a.statuses.includes('resuming'), a.statuses.join());
    assert.deepEqual(sentOf(a, 'join', sentBefore), [], 'no join after a resume');
    assert.equal(ra.events.filter((e) => e.event === 'joined').length, joinedBefore);
    const hello = sentOf(a, 'hello').at(-1);
    assert.equal(hello.session, session);
    assert.equal(typeof hello.last, 'number');
    assert.deepEqual(ra.get('b'), { v: 2 }, 'the entry written during the cut arrived');
    assert.deepEqual(ra.events.filter((e) => e.event === 'message').map((e) => e.data), [{ text: 'missed' }]);
    if (transport !== 'poll') {
      // recv confirms every processed message, about once a second (3.4).
      await waitUntil(() => sentOf(a, 'recv').some((m) => m.n === a._last), 'a recv of the last ordinal');
    }
    assert.deepEqual(unexpectedErrors(a), [], 'no error: in particular no bad_request for a recv beyond the ordinals');
  });

  test('after a server restart the resume fails: the room catches up by since', async (t) => {
    const h = await restartableServer(t, SERVER_ARGS);
    const proxy = await startProxy(t, h.port);
    const room = 'board:catchup';
    const a = mk(t, proxy.url, { user: 'alice' });
    const ra = recordRoom(a.room(room));
    await ra.ready;
    await ra.set('a', { v: 1 });
    await ra.set('b', { v: 1 });
    await settled([ra], 2);
    const epoch = ra.position.epoch;

    proxy.block();
    await h.kill();
    await waitUntil(() => a.status !== 'online', 'alice offline');
    await h.start();
    // Written by a backend while alice cannot reach the server.
    const w = await api(h.url, 'POST', `/v1/rooms/${room}/ops`, { key: KEY, body: { op: { kind: 'set', item: 'c', fields: { v: 3 } } } });
    assert.equal(w.status, 200, w.text);
    const sentBefore = a.sent.length;
    proxy.unblock();
    await online(a);
    await waitUntil(() => ra.position.seq === 3, 'the catch-up');

    assert.equal(a.welcomes.at(-1).resumed, false, 'sessions do not survive a restart');
    const join = sentOf(a, 'join', sentBefore);
    assert.equal(join.length, 1);
    assert.deepEqual(join[0].since, { epoch, seq: 2 }, 'joined again from the position held');
    const joined = ra.events.filter((e) => e.event === 'joined').at(-1);
    assert.equal(joined.recovered, true, 'ops, not a snapshot');
    assert.deepEqual(docOf(ra), { a: { v: 1 }, b: { v: 1 }, c: { v: 3 } });
    assert.deepEqual(docOf(ra), await serverDoc(h.url, room));
    assert.deepEqual(unexpectedErrors(a), []);
  });

  test('an expired session (short --resume-window) falls back to catch-up, with pending ops re-sent', async (t) => {
    const WINDOW = scale(300, 1000);
    const srv = await startSyncServer(t, [...SERVER_ARGS, '--resume-window', `${WINDOW}ms`]);
    const room = 'board:expire';
    const { proxy, a, b, ra, rb } = await pair(t, srv, room);
    await ra.set('a', { v: 1 });
    await settled([ra, rb], 1);
    const session = a.session;
    // Presence events go out per --presence-interval: bob must have seen
    // alice join before her leave can tell that her session ended.
    await waitUntil(() => rb.presence.list.some((p) => p.user === 'alice'), 'bob sees alice');

    const cutAt = a.sent.length;
    const welcomesAt = a.welcomes.length;
    proxy.block();
    proxy.cut();
    // The session's end is visible to bob: alice's presence leaves (3.5).
    // Without a downstream an HTTP session is detached only after 10 s (2.4).
    const detach = transport === 'ws' ? 0 : 10000;
    await waitUntil(() => !rb.presence.list.some((p) => p.user === 'alice'), 'alice gone from presence',
      detach + WINDOW + WAIT_MS);
    await rb.set('b', { v: 2 });
    const mine = ra.set('c', { v: 3 });
    const sentBefore = a.sent.length;
    proxy.unblock();
    assert.equal((await mine).seq, 3);
    await settled([ra, rb], 3);

    assert.equal(sentOf(a, 'hello', cutAt)[0].session, session, 'the resume was tried');
    assert.equal(a.welcomes[welcomesAt].resumed, false, 'the session had ended');
    assert.notEqual(a.session, session, 'a new session');
    assert.deepEqual(sentOf(a, 'join', sentBefore).map((j) => j.since.seq), [1]);
    assert.equal(ra.events.filter((e) => e.event === 'joined').at(-1).recovered, true);
    assert.deepEqual(docOf(ra), await serverDoc(srv.url, room));
    await waitUntil(() => rb.presence.list.some((p) => p.user === 'alice'), 'alice is back'); // within --presence-interval
    assert.deepEqual(unexpectedErrors(a), []);
  });

  test('a resume the outbox cannot serve (small --max-outbox) falls back to a join with since; a snapshot replaces the replica', async (t) => {
    // --max-catchup 5: the 60 entries missed come as a snapshot (6.2). SSE
    // and poll sessions keep undelivered messages up to --max-queued-bytes
    // beyond --max-outbox (PROTOCOL 3.4): 8K + 8K is still less than the
    // ~20 KiB burst, so the resume fails on every transport.
    const srv = await startSyncServer(t, [...SERVER_ARGS, '--max-outbox', '8K', '--max-queued-bytes', '8K',
      '--max-catchup', '5']);
    const room = 'board:outbox';
    const { proxy, a, ra, rb } = await pair(t, srv, room, { bob: { transport: 'ws' } }); // bob only writes here
    await ra.set('a', { v: 1 });
    await ra.set('gone', { v: 1 });
    await settled([ra, rb], 2);
    const session = a.session;

    const cutAt = a.sent.length;
    const welcomesAt = a.welcomes.length;
    proxy.block();
    proxy.cut();
    await waitUntil(() => a.status !== 'online', 'alice offline');
    // ~20 KiB of entries for alice's outbox while she is away: the oldest go.
    const pad = 'x'.repeat(300);
    await Promise.all(Array.from({ length: 60 }, (_, i) => rb.set(`b-${i % 10}`, { i, pad })));
    await rb.delete('gone');
    const mine = ra.set('mine', { v: 1 }); // pending across the new session
    const sentBefore = a.sent.length;
    proxy.unblock();
    await mine;
    await settled([ra, rb], 64);

    assert.equal(sentOf(a, 'hello', cutAt)[0].session, session, 'the resume was tried');
    assert.equal(a.welcomes[welcomesAt].resumed, false, 'the outbox lost messages after last: no resume');
    assert.notEqual(a.welcomes[welcomesAt].session, session);
    assert.deepEqual(sentOf(a, 'join', sentBefore).map((j) => j.since), [{ epoch: ra.position.epoch, seq: 2 }],
      'joined again from the position held');
    assert.equal(ra.events.filter((e) => e.event === 'joined').at(-1).recovered, false, 'a snapshot');
    assert.deepEqual(docOf(ra), await serverDoc(srv.url, room));
    assert.equal(ra.get('gone'), undefined, 'the snapshot removed what was deleted meanwhile');
    assert.ok(ra.events.some((e) => e.event === 'change' && e.id === 'gone' && e.removed && !e.local));
    assert.deepEqual(unexpectedErrors(a), []);
  });

  test('presence, locks and publish', async (t) => {
    const srv = await startSyncServer(t, SERVER_ARGS);
    const room = 'board:together';
    const a = mk(t, srv.url, { user: 'alice' });
    const ra = recordRoom(a.room(room, { presence: { name: 'Alice' } }));
    await ra.ready;
    // On a cluster bob's requests land on any node: locks are cluster-wide.
    const b = mk(t, srv.url, { user: 'bob' });
    const rb = recordRoom(b.room(room));
    await rb.ready;
    const entry = (r, user) => r.presence.list.find((p) => p.user === user);

    // presence
    assert.deepEqual(entry(rb, 'alice').state, { name: 'Alice' }, 'the state given at join');
    await waitUntil(() => entry(ra, 'bob'), 'alice sees bob join');
    ra.presence.set({ name: 'Alice', editing: 'card-1' });
    assert.deepEqual(entry(ra, 'alice').state, { name: 'Alice', editing: 'card-1' }, 'own entry updated at once');
    await waitUntil(() => entry(rb, 'alice')?.state.editing === 'card-1', 'bob sees the update');
    assert.equal(entry(rb, 'alice').connected, true);
    assert.ok(rb.events.some((e) => e.event === 'presence' && e.list.some((p) => p.state.editing === 'card-1')));

    // locks
    await ra.set('card-1', { title: 'T' });
    const g = await ra.lock('card-1', { ttl: 5000 });
    assert.equal(typeof g.fence, 'number');
    assert.ok(g.expires > Date.now() - 1000);
    await waitUntil(() => rb.locks.get('card-1')?.user === 'alice', 'bob sees the lock');
    assert.equal(rb.locks.get('card-1').fence, g.fence);
    const refused = rb.set('card-1', { title: 'Bob was here' });
    assert.equal(rb.get('card-1').title, 'Bob was here', 'optimistic');
    const e = await rejection(refused, 'a write to a locked item');
    assert.equal(e.code, 'locked');
    assert.equal(rb.get('card-1').title, 'T', 'rolled back');
    assert.equal(rb.events.filter((x) => x.event === 'error').at(-1).lock.user, 'alice');
    const own = await ra.set('card-1', { title: 'Mine' });
    const entries = await history(srv.url, room);
    assert.equal(entries.at(-1).seq, own.seq, 'the holder writes (with its fence)');
    assert.equal(sentOf(a, 'op').at(-1).op.fence, g.fence, 'the op carried the fence of the held lock');
    const again = await ra.lock('card-1', { ttl: 5000 });
    assert.equal(again.fence, g.fence, 'a renewal keeps the fence');
    await ra.unlock('card-1');
    await waitUntil(() => !rb.locks.has('card-1'), 'bob sees the release');
    assert.deepEqual(rb.events.filter((x) => x.event === 'lock').at(-1), { event: 'lock', item: 'card-1', lock: undefined, reason: 'unlock' });
    assert.equal((await rb.set('card-1', { title: 'Bob' })).seq, own.seq + 1);

    // publish
    const pub = await ra.publish({ text: 'hello' });
    assert.equal(typeof pub.seq, 'number');
    await waitUntil(() => rb.events.some((x) => x.event === 'message' && x.seq === pub.seq), 'bob gets the message');
    const msg = rb.events.find((x) => x.event === 'message' && x.seq === pub.seq);
    assert.deepEqual(msg.data, { text: 'hello' });
    assert.equal(msg.from.user, 'alice');
    await ra.publish({ typing: true }, { ephemeral: true });
    await waitUntil(() => rb.events.some((x) => x.event === 'message' && x.ephemeral), 'the ephemeral message');
    assert.deepEqual(rb.events.find((x) => x.event === 'message' && x.ephemeral).data, { typing: true });
    assert.equal(rb.position.seq, pub.seq, 'an ephemeral message does not move the position');

    // leave
    await rb.leave();
    await waitUntil(() => !entry(ra, 'bob'), 'bob left');
    assert.deepEqual(unexpectedErrors(a), []);
    assert.deepEqual(unexpectedErrors(b), []);
  });

  test('a second client of the same user and device replaces the first (4001): it goes offline for good', async (t) => {
    const srv = await startSyncServer(t, SERVER_ARGS);
    const device = `twin-${transport}`;
    const a1 = mk(t, srv.url, { user: 'alice', device });
    await a1.room('board:twin').ready;
    const a2 = mk(t, srv.url, { user: 'alice', device });
    await a2.room('board:twin').ready;
    await waitUntil(() => a1.errors.some((e) => e.code === 'replaced'), 'the first one is told');
    assert.equal(a1.status, 'offline');
    const statuses = a1.statuses.length;
    await a2.room('board:twin').set('x', { v: 1 }); // a round trip on the winner
    await sleep(200);
    assert.equal(a1.status, 'offline', 'no reconnect');
    assert.equal(a1.statuses.length, statuses);
    assert.equal(a2.status, 'online');
    assert.deepEqual(unexpectedErrors(a2), []);
  });
}

for (const transport of TRANSPORTS) {
  describe(`client over ${transport}`, () => syncSuite(transport));
}

// Locks are cluster-wide (docs/CLUSTER.md): the JS client's lock taken
// through one node refuses another node's client.
test('on a cluster, a lock held on one node refuses a write through another', {
  skip: !CLUSTER && 'needs WSYNC_E2E_CLUSTER',
}, async (t) => {
  const srv = await startSyncServer(t, SERVER_ARGS);
  const room = 'board:locks-across';
  const a = makeClient(t, srv.nodes[0].url, { user: 'alice', transport: 'ws' });
  const b = makeClient(t, srv.nodes[1].url, { user: 'bob', transport: 'ws' });
  const [ra, rb] = [a.room(room), b.room(room)];
  await Promise.all([ra.ready, rb.ready]);
  await ra.set('card', { title: 'T' });
  await ra.lock('card', { ttl: 5000 });
  await waitUntil(() => rb.locks.get('card')?.user === 'alice', 'bob sees the lock');
  const e = await rejection(rb.set('card', { title: 'Bob was here' }), 'a write to an item locked on another node');
  assert.equal(e.code, 'locked');
});
