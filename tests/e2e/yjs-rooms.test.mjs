// yjs-rooms.test.mjs -- Yjs rooms on /v1/yjs (docs/YJS.md) with the stock
// y-websocket provider: several providers per room converge, late joiners
// get the document, offline edits merge on reconnect, awareness is relayed
// and removed when a connection closes.
import assert from 'node:assert/strict';
import test from 'node:test';

import { scale, sleep, waitUntil } from './lib/server.mjs';
import { startSyncServer } from './lib/sync.mjs';
import { agree, converge, provider, synced, text, Y, yToken } from './lib/yjs.mjs';

test('three providers editing one room converge, and a late joiner gets the document', async (t) => {
  const srv = await startSyncServer(t);
  const ps = ['ann', 'bob', 'cy'].map((u) => provider(t, srv, 'notes', yToken(u)));
  await Promise.all(ps.map((p) => synced(p)));
  const n = scale(30, 8);
  for (let i = 0; i < n; i++) {
    for (const [k, p] of ps.entries()) p.doc.getText('t').insert(0, `${k}${i % 10}`);
    if (i % 5 === 0) await sleep(1);
  }
  await waitUntil(() => ps.every((p) => text(p.doc).length === 6 * n), 'every edit everywhere');
  const want = text(ps[0].doc);
  await converge(ps.map((p) => p.doc), want);
  const late = provider(t, srv, 'notes', yToken('dee'));
  await synced(late);
  await converge([late.doc], want, 'late joiner');
  // Another room is another document.
  const other = provider(t, srv, 'other', yToken('dee'));
  await synced(other);
  assert.equal(text(other.doc), '');
});

test('edits made offline merge on reconnect, both ways', async (t) => {
  const srv = await startSyncServer(t);
  const a = provider(t, srv, 'offline', yToken('ann'));
  const b = provider(t, srv, 'offline', yToken('bob'));
  await Promise.all([synced(a), synced(b)]);
  a.doc.getText('t').insert(0, 'base ');
  await converge([a.doc, b.doc], 'base ');
  b.disconnect();
  await waitUntil(() => !b.wsconnected, 'b offline');
  b.doc.getText('t').insert(5, 'from-b-offline ');
  a.doc.getText('t').insert(0, 'from-a-online ');
  await waitUntil(() => text(a.doc) === 'from-a-online base ', 'a sees only its own edit');
  b.connect();
  await synced(b);
  await agree([a.doc, b.doc]);
  assert.match(text(a.doc), /from-b-offline/);
  assert.match(text(a.doc), /from-a-online/);
  // A doc edited before its first connection sends its edits in step 2.
  const doc = new Y.Doc();
  doc.getMap('m').set('k', 'made before connecting');
  const c = provider(t, srv, 'offline', yToken('cy'), { doc });
  await synced(c);
  await waitUntil(() => a.doc.getMap('m').get('k') === 'made before connecting', 'a got c\'s offline map entry');
  assert.equal(text(c.doc), text(a.doc));
});

test('awareness is relayed, answered on query, and removed when a connection closes', async (t) => {
  const srv = await startSyncServer(t);
  const a = provider(t, srv, 'aware', yToken('ann'));
  a.awareness.setLocalStateField('user', { name: 'ann' });
  await synced(a);
  const b = provider(t, srv, 'aware', yToken('bob'));
  b.awareness.setLocalStateField('user', { name: 'bob' });
  await synced(b);
  // b got a's state on open (the room's states are sent to a newcomer), a got b's.
  await waitUntil(() => b.awareness.getStates().get(a.doc.clientID)?.user?.name === 'ann', 'b sees ann');
  await waitUntil(() => a.awareness.getStates().get(b.doc.clientID)?.user?.name === 'bob', 'a sees bob');
  a.awareness.setLocalStateField('cursor', 7);
  await waitUntil(() => b.awareness.getStates().get(a.doc.clientID)?.cursor === 7, 'b sees a\'s cursor');
  // a goes away without a goodbye of its own (its socket is cut): the
  // server tells b that a's client is gone.
  const c = provider(t, srv, 'aware', yToken('cy'));
  c.awareness.setLocalStateField('user', { name: 'cy' }); // clock 1: a state at clock 0 is ignored by Awareness
  await synced(c);
  await waitUntil(() => c.awareness.getStates().has(a.doc.clientID), 'c sees ann');
  await waitUntil(() => b.awareness.getStates().has(c.doc.clientID), 'b sees c');
  a.shouldConnect = false; // no reconnect: it is gone
  a.ws._socket.destroy();
  await waitUntil(() => !b.awareness.getStates().has(a.doc.clientID), 'b no longer sees ann');
  await waitUntil(() => !c.awareness.getStates().has(a.doc.clientID), 'c no longer sees ann');
  assert.ok(b.awareness.getStates().has(c.doc.clientID), `c is still there: ${JSON.stringify([...b.awareness.getStates()])} c=${c.doc.clientID} a=${a.doc.clientID} b=${b.doc.clientID}`);
  a.destroy();
});
