// client-replaced.test.mjs -- text edits made for an item that was deleted
// and re-created meanwhile (another incarnation) must not land on the new
// item. The server refuses such an op with `item_replaced` (not retryable;
// with item, field, rev and text, as rev_too_old). Until every server sends
// it, the WebSocket below stands in for one: the real server answers the
// stale op (its rev is beyond the new item's) with rev_too_old, and the
// client under test receives that answer as item_replaced. The client rolls
// the edits back (in flight and buffered), the field shows the server's
// text, and the app hears of it: SharedText 'error' and a 'change' with
// reset and reason 'item_replaced', a room 'error'.
import assert from 'node:assert/strict';
import test from 'node:test';

import { SERVER_ARGS, history, makeClient, online, serverSnapshot, spyWebSocket, startProxy, waitUntil } from './lib/client-util.mjs';
import { scale } from './lib/server.mjs';
import { startSyncServer } from './lib/sync.mjs';

/**
 * A WebSocket (the `ws` package, recording what the client sends into sink)
 * that hands the client the rev_too_old errors of the text ops in cids as
 * item_replaced: what a server with the item_replaced check answers (one
 * that sends it itself is let through unchanged). The
 * message count stays the server's (one message in, one out), so resume
 * ordinals hold. With hold.on, room entries are held back until that error
 * has been delivered: an error that overtakes the broadcasts before it
 * (errors go out at once), here the del.
 */
function replacingWebSocket(cids, seen, sink, hold) {
  return class extends spyWebSocket(sink) {
    emit(event, ...args) {
      if (event !== 'message') return super.emit(event, ...args);
      let m;
      try {
        m = JSON.parse(String(args[0]));
      } catch {
        return super.emit(event, ...args);
      }
      if (m.type === 'error' && (m.code === 'rev_too_old' || m.code === 'item_replaced') && cids.has(m.cid)) {
        if (m.code === 'rev_too_old') { // a server without the check; one with it needs no help
          m.code = 'item_replaced';
          m.message = 'the item was deleted and created again since this op\'s revision';
        }
        seen.push(m);
        const r = super.emit(event, Buffer.from(JSON.stringify(m)), ...args.slice(1));
        // The error went out at once; the broadcasts it overtook follow.
        if (hold.on) {
          hold.on = false;
          for (const q of hold.queue.splice(0)) super.emit(event, ...q);
        }
        return r;
      }
      if (hold.on && m.type === 'op') {
        hold.queue.push(args);
        return true;
      }
      return super.emit(event, ...args);
    }
  };
}

/** Text ops of the client's device in flight: their cids, as the room holds them. */
const textCids = (room) => room._pending.filter((r) => r.msg.type === 'op' && r.msg.op.kind === 'text').map((r) => r.cid);

async function setup(t, srv, room) {
  const proxy = await startProxy(t, srv.port);
  const cids = new Set();
  const seen = [];
  const sink = [];
  const hold = { on: false, queue: [] };
  const a = makeClient(t, proxy.url, { user: 'alice', transport: 'ws', WebSocket: replacingWebSocket(cids, seen, sink, hold) });
  a.sent = sink;
  const b = makeClient(t, srv.url, { user: 'bob' });
  const ra = a.room(room);
  const rb = b.room(room);
  await Promise.all([ra.ready, rb.ready]);
  await rb.set('card', { title: 'first' });
  await waitUntil(() => ra.get('card')?.title === 'first', 'alice sees the card');
  const ta = ra.text('card', 'note');
  const events = { change: [], error: [], roomError: [] };
  ta.on('change', (e) => events.change.push(e));
  ta.on('error', (e) => events.error.push(e));
  ra.on('error', (e) => events.roomError.push(e));
  // Three confirmed edits, one revision each. Revisions start at the item's
  // generation (PROTOCOL.md 5.7), not at 0: only the steps are fixed.
  const revs = [];
  for (const s of ['a', 'b', 'c']) {
    ta.insert(ta.value.length, s);
    await waitUntil(() => ta.state === 'synchronized', 'edit confirmed');
    revs.push(ta.rev);
  }
  assert.deepEqual(revs, [revs[0], revs[0] + 1, revs[0] + 2]);
  return { proxy, cids, seen, hold, a, b, ra, rb, ta, events };
}

/** Bob deletes the card and makes a new one under the same id, with a note of its own (revision 1). */
async function replace(rb) {
  await rb.delete('card');
  await rb.set('card', { title: 'second' });
  const tb = rb.text('card', 'note');
  tb.insert(0, 'fresh');
  await waitUntil(() => tb.state === 'synchronized', 'bob\'s note confirmed');
}

/**
 * The stale edits are gone everywhere, and alice's app heard of it once:
 * reason 'item_replaced' (the server's answer came first: SharedText and
 * room 'error' item_replaced) or 'deleted' (the del came first: SharedText
 * 'error' not_found; the answer that follows is dropped quietly).
 */
async function check(t, srv, room, { ta, ra, events, seen, cids }, reason) {
  await waitUntil(() => seen.length > 0, 'the item_replaced answer');
  await waitUntil(() => ta.state === 'synchronized' && ra.pendingCount === 0 && ta.value === 'fresh',
    `alice settled (${ta.state}, ${ra.pendingCount} pending, ${JSON.stringify(ta.value)})`);
  assert.equal(ta.value, 'fresh', 'the field shows the new item\'s text: the stale edits are gone');
  assert.equal(ra.get('card').note, 'fresh');
  assert.equal(ra.get('card').title, 'second');
  const snap = await serverSnapshot(srv.url, room);
  assert.equal(snap.items.card.fields.note, 'fresh', 'nothing of the stale edits reached the new item');
  const log = await history(srv.url, room);
  const del = log.findIndex((e) => e.op && e.op.kind === 'del');
  const after = log.slice(del + 1).filter((e) => e.from && e.from.user === 'alice');
  assert.deepEqual(after, [], 'no entry of alice after the del');

  const code = reason === 'item_replaced' ? 'item_replaced' : 'not_found';
  assert.equal(events.error.length, 1, `one text error: ${JSON.stringify(events.error)}`);
  assert.equal(events.error[0].code, code);
  assert.ok(cids.has(events.error[0].cid));
  const reset = events.change.filter((c) => c.reason);
  assert.equal(reset.length, 1, `one change with a reason: ${JSON.stringify(events.change)}`);
  assert.equal(reset[0].reason, reason);
  assert.equal(reset[0].reset, true);
  assert.equal(reset[0].rollback, true);
  const roomErr = events.roomError.filter((e) => e.code === 'item_replaced' || e.code === 'not_found');
  if (reason === 'item_replaced') {
    assert.equal(roomErr.length, 1, `one room error: ${JSON.stringify(events.roomError)}`);
    assert.equal(roomErr[0].code, 'item_replaced');
    assert.equal(roomErr[0].item, 'card');
    assert.equal(roomErr[0].field, 'note');
    assert.equal(roomErr[0].text, 'fresh');
    assert.equal(reset[0].value, 'fresh');
  } else {
    assert.deepEqual(roomErr, [], 'no server refusal to report');
  }

  // The note goes on normally on the new item.
  ta.insert(0, '>');
  await waitUntil(() => ta.state === 'synchronized', 'a new edit confirmed');
  assert.equal((await serverSnapshot(srv.url, room)).items.card.fields.note, '>fresh');
}

/** Alice's next edits leave but the network holds them (no reset: she stays online) while Bob replaces the card. */
async function staleEditsWhileReplaced(s) {
  const { proxy, ta, ra, rb } = s;
  proxy.blackhole();
  ta.insert(3, 'X');                 // in flight
  ta.insert(4, 'Y');                 // buffered behind it
  for (const c of textCids(ra)) s.cids.add(c);
  assert.equal(s.cids.size, 1);
  assert.equal(ta.state, 'awaiting-with-buffer');
  await replace(rb);
}

test('item_replaced before the del arrives: the edit in flight and the edits buffered behind it are rolled back; the field resets to the server text', { timeout: 30000 }, async (t) => {
  const srv = await startSyncServer(t, SERVER_ARGS);
  const room = 'rp:overtaken';
  const s = await setup(t, srv, room);
  await staleEditsWhileReplaced(s);
  s.hold.on = true;
  s.proxy.forward();                 // the op reaches the server after the del and the new set
  await check(t, srv, room, s, 'item_replaced');
});

test('the del arrives first: the edits die with the item, and the server\'s answer is dropped quietly', { timeout: 30000 }, async (t) => {
  const srv = await startSyncServer(t, SERVER_ARGS);
  const room = 'rp:live';
  const s = await setup(t, srv, room);
  await staleEditsWhileReplaced(s);
  s.proxy.forward();
  await check(t, srv, room, s, 'deleted');
});

for (const catchup of ['ops', 'snapshot']) {
  test(`after an expired session (catch-up by ${catchup}): the client joins again with since, re-sends its op, and rolls back`, { timeout: 40000 }, async (t) => {
    const WINDOW = scale(300, 1000);
    const srv = await startSyncServer(t, [...SERVER_ARGS, '--resume-window', `${WINDOW}ms`,
      ...(catchup === 'snapshot' ? ['--max-catchup', '1'] : [])]);
    const room = `rp:expired-${catchup}`;
    const s = await setup(t, srv, room);
    const { proxy, a, ta, ra, rb } = s;
    const session = a.session;
    // Presence events go out per --presence-interval: bob must have seen
    // alice join before her leave can tell that her session ended.
    await waitUntil(() => rb.presence.list.some((p) => p.user === 'alice'), 'bob sees alice');

    // The op leaves into a dead network, which then fails for good: sent,
    // never received, never answered.
    proxy.blackhole();
    ta.insert(3, 'X');
    ta.insert(4, 'Y');
    for (const c of textCids(ra)) s.cids.add(c);
    proxy.block();
    proxy.cut();
    proxy.forward(); // nothing to forward: connections are refused until unblock()
    await waitUntil(() => a.status !== 'online', 'alice offline');
    // Her session ends (presence leaves once the resume window is over).
    await waitUntil(() => !rb.presence.list.some((p) => p.user === 'alice'), 'alice\'s session over', WINDOW + 10000);
    await replace(rb);
    const sentAt = a.sent.length;
    proxy.unblock();
    await online(a);
    // By ops, the del comes before the answer; a snapshot has no del in it,
    // only the new item: the server's answer tells.
    await check(t, srv, room, s, catchup === 'ops' ? 'deleted' : 'item_replaced');
    assert.notEqual(a.session, session, 'a new session');
    assert.equal(a.welcomes.at(-1).resumed, false);
    const joins = a.sent.slice(sentAt).filter((m) => m.type === 'join');
    assert.ok(joins.length >= 1 && joins[0].since, 'joined again with since');
    const resent = a.sent.slice(sentAt).filter((m) => m.type === 'op' && s.cids.has(m.cid));
    assert.equal(resent.length, 1, 'the pending op was sent again, with its cid');
  });
}
