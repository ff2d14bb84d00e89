// yjs-durability.test.mjs -- what the server keeps of a Yjs room
// (docs/YJS.md): an update is stored before anyone receives it, so a kill -9
// loses nothing a client received; compaction under live edits loses
// nothing and survives a restart; malformed messages close the sender with
// a logged reason and leave the room intact; /metrics counts it all.
import assert from 'node:assert/strict';
import test from 'node:test';
import WebSocket from 'ws';
import * as encoding from 'lib0/encoding';

import { scale, sleep, startServer, waitUntil } from './lib/server.mjs';
import { SECRET, fetchMetrics, restartableServer, startSyncServer } from './lib/sync.mjs';
import { Y, agree, converge, provider, rawYjs, synced, text, ymsg, yToken } from './lib/yjs.mjs';

const KEY = 'yjs-durability-api-key';

/** True when state vector a covers b (every client's clock at least b's). */
function covers(a, b) {
  const A = Y.decodeStateVector(a);
  for (const [client, clock] of Y.decodeStateVector(b)) if ((A.get(client) || 0) < clock) return false;
  return true;
}

test('kill -9 while clients edit: everything a client received is there after the restart', async (t) => {
  const h = await restartableServer(t);
  const at = { wsUrl: `ws://127.0.0.1:${h.port}` };
  const writers = ['ann', 'bob'].map((u) => provider(null, at, 'crash:doc', yToken(u)));
  const watcher = provider(null, at, 'crash:doc', yToken('watcher'));
  await Promise.all([...writers, watcher].map((p) => synced(p)));
  let stop = false;
  const n = scale(400, 80);
  const typing = (async () => {
    for (let i = 0; i < n && !stop; i++) {
      writers[i % 2].doc.getText('t').insert(0, `${i % 2 ? 'b' : 'a'}${i % 10}`);
      if (i % 4 === 0) await sleep(1);
    }
  })();
  await waitUntil(() => text(watcher.doc).length >= scale(100, 20), 'the watcher received edits');
  await h.kill();
  stop = true;
  await typing;
  // What the watcher had received when the server died.
  const seen = Y.encodeStateVector(watcher.doc);
  const seenText = text(watcher.doc);
  for (const p of [...writers, watcher]) p.destroy();
  await h.start();
  const fresh = provider(t, { wsUrl: h.srv.wsUrl }, 'crash:doc', yToken('fresh'));
  await synced(fresh);
  assert.ok(covers(Y.encodeStateVector(fresh.doc), seen), 'the stored document covers what the watcher saw');
  assert.ok(text(fresh.doc).length >= seenText.length);
  // Within the covered part, the same text: every char the watcher had is in the fresh doc.
  const check = new Y.Doc();
  Y.applyUpdate(check, Y.encodeStateAsUpdate(fresh.doc));
  Y.applyUpdate(check, Y.encodeStateAsUpdate(watcher.doc));
  assert.equal(text(check), text(fresh.doc), 'the watcher had nothing the store lacks');
});

test('compaction while clients edit: nothing lost, the log trimmed, the snapshot survives a restart', async (t) => {
  const h = await restartableServer(t, ['--yjs-compact-ops', '8', '--api-key', KEY]);
  const at = { wsUrl: `ws://127.0.0.1:${h.port}` };
  const ps = ['ann', 'bob', 'cy'].map((u) => provider(t, at, 'compact:doc', yToken(u)));
  await Promise.all(ps.map((p) => synced(p)));
  const n = scale(150, 40);
  for (let i = 0; i < n; i++) {
    const d = ps[i % 3].doc.getText('t');
    if (i % 7 === 6 && d.length > 4) d.delete(1, 2);
    else d.insert(d.length ? i % d.length : 0, `${i % 3}${i % 10}`);
    if (i % 3 === 0) await sleep(2);
  }
  // Every edit sequenced (one update each), then every client has them all.
  await waitUntil(async () => (await fetchMetrics(h.url, KEY)).get('wsync_yjs_updates_total') >= n, 'every edit stored');
  const want = await agree(ps.map((p) => p.doc));
  await waitUntil(async () => (await fetchMetrics(h.url, KEY)).get('wsync_yjs_compactions_total') >= 2, 'compactions');
  const m = await fetchMetrics(h.url, KEY);
  assert.ok(m.get('wsync_yjs_updates_total') >= n, `updates ${m.get('wsync_yjs_updates_total')}`);
  assert.equal(m.get('wsync_yjs_rooms'), 1);
  assert.equal(m.get('wsync_yjs_connections'), 3);
  assert.ok(m.get('wsync_yjs_bytes') > 0);
  await h.srv.waitForLog(/Yjs room compact:doc compacted up to seq \d+/);
  const late = provider(t, at, 'compact:doc', yToken('late'));
  await synced(late);
  assert.equal(text(late.doc), want, 'a late joiner after compaction');
  // The trimmed log: history starts above the snapshot's seq.
  const hist = await fetch(`${h.url}/v1/rooms/compact:doc/history?after=0`, { headers: { Authorization: `Bearer ${KEY}` } });
  const hb = await hist.json();
  assert.ok(hb.ops === undefined || hb.ops.length < n, `the log was trimmed: ${JSON.stringify(hb).slice(0, 200)}`);
  for (const p of [...ps, late]) p.destroy();
  await h.stop();
  await h.start();
  const fresh = provider(t, { wsUrl: h.srv.wsUrl }, 'compact:doc', yToken('fresh'));
  await synced(fresh);
  assert.equal(text(fresh.doc), want, 'snapshot + log after a restart');
});

test('malformed messages close the sender (4400, logged); the room stays intact', async (t) => {
  const srv = await startSyncServer(t, ['--yjs-max-awareness', '1K']);
  const good = provider(t, srv, 'bad:doc', yToken('ann'));
  await synced(good);
  good.doc.getText('t').insert(0, 'intact');
  await waitUntil(async () => {
    const l = provider(null, srv, 'bad:doc', yToken('probe'));
    await synced(l);
    const ok = text(l.doc) === 'intact';
    l.destroy();
    return ok;
  }, 'stored');
  const cases = [
    ['a broken update', ymsg((e) => { encoding.writeVarUint(e, 0); encoding.writeVarUint(e, 2); encoding.writeVarUint8Array(e, new Uint8Array([1, 1, 5, 0, 99, 7])); }), /malformed Yjs update/],
    ['a truncated step 2', ymsg((e) => { encoding.writeVarUint(e, 0); encoding.writeVarUint(e, 1); encoding.writeVarUint(e, 50); encoding.writeUint8(e, 1); }), /malformed sync message/],
    ['an unknown sync type', ymsg((e) => { encoding.writeVarUint(e, 0); encoding.writeVarUint(e, 7); encoding.writeVarUint8Array(e, new Uint8Array([0, 0])); }), /malformed sync message/],
    ['an unknown message type', ymsg((e) => encoding.writeVarUint(e, 9)), /unknown message type/],
    ['bytes after a message', ymsg((e) => { encoding.writeVarUint(e, 0); encoding.writeVarUint(e, 2); encoding.writeVarUint8Array(e, new Uint8Array([0, 0])); encoding.writeUint8(e, 0); }), /malformed sync message/],
    ['a bad state vector', ymsg((e) => { encoding.writeVarUint(e, 0); encoding.writeVarUint(e, 0); encoding.writeVarUint8Array(e, new Uint8Array([3, 1])); }), /malformed state vector/],
    ['awareness that is not JSON', ymsg((e) => { encoding.writeVarUint(e, 1); encoding.writeVarUint8Array(e, ymsg((u) => { encoding.writeVarUint(u, 1); encoding.writeVarUint(u, 5); encoding.writeVarUint(u, 1); encoding.writeVarString(u, '{oops'); })); }), /malformed awareness/],
    ['an empty message', new Uint8Array(0), /malformed message/],
    ['a text message', 'hello', /binary/],
  ];
  for (const [what, bytes, re] of cases) {
    const raw = await rawYjs(srv, 'bad:doc', yToken('mallory'));
    raw.ws.send(bytes);
    const c = await raw.closed;
    assert.equal(c.code, 4400, `${what}: ${c.code} ${c.reason}`);
    assert.match(c.reason, re, what);
  }
  await srv.waitForLog(/warn .*yjs_closed .*user=mallory .*code=4400 reason="malformed Yjs update"/);
  // Awareness over --yjs-max-awareness: 4413.
  const big = await rawYjs(srv, 'bad:doc', yToken('mallory'));
  big.ws.send(ymsg((e) => { encoding.writeVarUint(e, 1); encoding.writeVarUint8Array(e, ymsg((u) => { encoding.writeVarUint(u, 1); encoding.writeVarUint(u, 123); encoding.writeVarUint(u, 1); encoding.writeVarString(u, JSON.stringify({ pad: 'x'.repeat(2000) })); })); }));
  assert.equal((await big.closed).code, 4413);
  // The room: still served, still writable, nothing of mallory in it.
  good.doc.getText('t').insert(6, '!');
  const late = provider(t, srv, 'bad:doc', yToken('late'));
  await synced(late);
  await converge([late.doc, good.doc], 'intact!');
  assert.ok(good.wsconnected);
});

test('/v1/yjs without a room, or with a bad room name, is refused', async (t) => {
  const srv = await startSyncServer(t);
  const ws = new WebSocket(`${srv.wsUrl}/v1/yjs/bad%20name?token=${yToken('ann')}`);
  const c = await new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  assert.equal(c.code, 4400);
  assert.match(c.reason, /room name/);
  const r = await fetch(`${srv.url}/v1/yjs/x`);
  assert.equal(r.status, 426, 'a plain GET is not an upgrade');
});
