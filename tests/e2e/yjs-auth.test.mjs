// yjs-auth.test.mjs -- who may open a Yjs room (docs/YJS.md, Auth): the
// sync protocol's tokens and grants; a read-only grant syncs and receives
// but its updates are refused (permission denied, never stored or relayed);
// a missing, bad or ungranted token gets no data and a 44xx close code that
// stops y-websocket from reconnecting; a room is either a document room or
// a Yjs room.
import assert from 'node:assert/strict';
import test from 'node:test';

import { sleep, waitUntil } from './lib/server.mjs';
import { SyncClient, craftToken, nowS, startSyncServer, token } from './lib/sync.mjs';
import { converge, provider, rawYjs, synced, text, yToken } from './lib/yjs.mjs';

let srv;
test.before(async () => {
  srv = await startSyncServer(null);
});
test.after(() => srv.stopChecked());

test('a read-only grant syncs and receives; its edits are refused and reach nobody', async (t) => {
  const w = provider(t, srv, 'ro:doc', yToken('writer', { 'ro:*': 'rw' }));
  await synced(w);
  w.doc.getText('t').insert(0, 'written ');
  const r = provider(t, srv, 'ro:doc', yToken('reader', { 'ro:*': 'r' }));
  await synced(r);
  await converge([r.doc], 'written ', 'reader got the document');
  w.doc.getText('t').insert(8, 'more');
  await converge([r.doc], 'written more', 'reader receives live edits');
  r.doc.getText('t').insert(0, 'EVIL ');
  await waitUntil(() => r.denied.length === 1, 'permission denied');
  assert.match(r.denied[0], /read-only/);
  // Not relayed, not stored: the writer and a newcomer never see it, even
  // after the reader reconnects (its step 2 carries the edit again).
  r.disconnect();
  r.connect();
  await synced(r);
  const late = provider(t, srv, 'ro:doc', yToken('late', { 'ro:*': 'r' }));
  await synced(late);
  await sleep(100);
  assert.equal(text(w.doc), 'written more');
  assert.equal(text(late.doc), 'written more');
  assert.equal(r.denied.length, 1, 'a step 2 is dropped quietly');
  assert.ok(r.wsconnected, 'the reader stays connected');
});

/** A provider that must be refused: resolves its close events after a while. */
async function refused(t, room, tok, code) {
  const p = provider(t, srv, room, tok);
  const closed = new Promise((resolve) => p.once('closed', resolve));
  const ev = await closed;
  assert.equal(ev.code, code, `close ${ev.code} ${ev.reason}`);
  // y-websocket treats 4400-4499 as final: no reconnect loop.
  await sleep(700);
  assert.equal(p.closes.length, 1, `reconnected after ${code}: ${JSON.stringify(p.closes)}`);
  assert.equal(p.synced, false);
  assert.equal(text(p.doc), '', 'no data');
  return ev;
}

test('no token, a bad or expired token, an ungranted room: no data, a final close', async (t) => {
  const w = provider(t, srv, 'secret:doc', yToken('owner', { 'secret:*': 'rw' }));
  await synced(w);
  w.doc.getText('t').insert(0, 'classified');
  const p = provider(t, srv, 'secret:doc', undefined);
  const ev = await new Promise((resolve) => p.once('closed', resolve));
  assert.equal(ev.code, 4401);
  assert.match(ev.reason, /token is required/);
  assert.equal((await refused(t, 'secret:doc', 'not.a.jwt', 4401)).reason, 'token_invalid');
  assert.equal((await refused(t, 'secret:doc', token('x', { '*': 'rw' }).slice(0, -3) + 'AAA', 4401)).reason, 'token_invalid');
  const expired = craftToken({ sub: 'old', exp: nowS() - 3600, grants: { '*': 'rw' } });
  assert.equal((await refused(t, 'secret:doc', expired, 4401)).reason, 'token_expired');
  const f = await refused(t, 'secret:doc', yToken('eve', { 'public:*': 'rw' }), 4403);
  assert.match(f.reason, /forbidden/);
  // user:<id> is its user's only, whatever the grants say.
  await refused(t, 'user:owner', yToken('eve', { '*': 'rw' }), 4403);
  const mine = provider(t, srv, 'user:owner', yToken('owner', {}));
  await synced(mine);
  // The refusals are logged with their reason.
  await srv.waitForLog(/yjs_closed .*room=secret:doc code=4403/);
  await srv.waitForLog(/yjs_closed .*code=4401 reason="?token_expired/);
});

test('the ungranted also hear permission denied before the close', async () => {
  const raw = await rawYjs(srv, 'secret:doc', yToken('eve', { 'public:*': 'rw' }));
  const c = await raw.closed;
  assert.equal(c.code, 4403);
  assert.equal(raw.msgs.length, 1, 'one message: permission denied, no document');
  assert.equal(raw.msgs[0][0], 2);
  assert.equal(raw.msgs[0][1], 0);
});

test('a room is a document room or a Yjs room, never both', async (t) => {
  const dev = `d-${process.pid}`;
  const c = await SyncClient.connect(srv.url, { token: token('ann'), device: dev });
  await c.join('kind:doc');
  await refused(t, 'kind:doc', yToken('ann'), 4409);
  const y = provider(t, srv, 'kind:yjs', yToken('ann'));
  await synced(y);
  const j = await c.request({ type: 'join', room: 'kind:yjs', id: 'j2' });
  assert.equal(j.type, 'error');
  assert.equal(j.code, 'bad_request');
  assert.match(j.message, /Yjs room/);
  await c.close();
  // The kind is kept in the store: after the Yjs room unloads it is still one.
  y.destroy();
  await sleep(100);
  const c2 = await SyncClient.connect(srv.url, { token: token('ann'), device: `${dev}-2` });
  const j2 = await c2.request({ type: 'join', room: 'kind:yjs', id: 'j3' });
  assert.equal(j2.type, 'error');
  await c2.close();
});

test('--insecure-demo: ?user= stands in for a token, as hello\'s user does; without it, ?user= is no token', async (t) => {
  const demo = await startSyncServer(t, ['--insecure-demo']);
  const a = provider(t, demo, 'yjs:demo', undefined, { params: { user: 'alice' } });
  const b = provider(t, demo, 'yjs:demo', undefined, { params: { user: 'bob' } });
  await synced(a);
  await synced(b);
  a.doc.getText('t').insert(0, 'hello from alice');
  await converge([a.doc, b.doc], 'hello from alice');
  const bad = provider(t, demo, 'yjs:demo', undefined, { params: { user: 'not a valid name!' } });
  const ev = await new Promise((resolve) => bad.once('closed', resolve));
  assert.equal(ev.code, 4401);
  assert.match(ev.reason, /user must be/);
  // The shared server runs without --insecure-demo: a user is not a token there.
  const p = provider(t, srv, 'yjs:demo', undefined, { params: { user: 'alice' } });
  const ev2 = await new Promise((resolve) => p.once('closed', resolve));
  assert.equal(ev2.code, 4401);
  assert.match(ev2.reason, /token is required/);
});
