// client-persist-text.test.mjs -- a shared text's unconfirmed edits kept in
// IndexedDB (persist: 'indexeddb') survive a page that dies at any moment,
// and come back once: never lost when acked, never applied twice.
//
// The client writes an op's record and its text's state (TextDoc.save())
// to IndexedDB and sends the op over the network; a page can die between
// any two IndexedDB commits, with whatever it sent until then already at
// the server. A fake IndexedDB (lib/fake-idb.mjs) that dies after its k-th
// commit runs the same typing for every k against the real server, then a
// new client (the reloaded page) takes over from what was committed. The
// text must end as a prefix of what was typed, the same on the server and
// on the client. Before the fix, a buffer whose op had been sent but whose
// state after the send was not committed was sent again under a new cid
// (the browser note test saw the last typed run twice after a reload).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import WebSocket from 'ws';

import { apply as applyText } from '../../clients/js/text.js';

import { Client, SERVER_ARGS, makeClient, serverDoc } from './lib/client-util.mjs';
import { FakeIDB } from './lib/fake-idb.mjs';
import { WAIT_MS, sleep, waitUntil } from './lib/server.mjs';
import { startSyncServer, token } from './lib/sync.mjs';

const TYPED = ['one ', 'two ', 'three'];
const OUTCOMES = TYPED.map((_, i) => TYPED.slice(0, i).join('')).concat(TYPED.join(''));
const MAX_COMMITS = 40; // a full run commits far fewer: the loop ends before

/**
 * A WebSocket that drops what is sent after the page died and checks, for
 * every text op sent, that its record and its text's state with the op in
 * flight are committed already (write-ahead).
 */
function pageSocket(page, everSent) {
  return class PageSocket extends WebSocket {
    constructor(url) {
      super(url);
      page.sockets.push(this);
      if (process.env.DBG) this.on("message", (d) => console.log(page.device, "RECV", String(d).slice(0, 300)));
    }

    send(data, ...rest) {
      if (page.dead) return undefined;
      if (process.env.DBG) console.log(page.device, "SEND", data, JSON.stringify([...page.idb.data.values()].map((r) => r.text ? ["T", r.text.state] : ["R", r.cid])));
      const m = JSON.parse(data);
      if (m.type === 'op' && m.op.kind === 'text') {
        page.textOpsSent++;
        const rec = page.idb.get(page.device, m.cid);
        const st = page.idb.get(page.device, `text\u0000${m.room}\u0000${m.op.item}\u0000${m.op.field}`);
        if (!rec) page.violations.push(`${m.cid} sent before its record was committed`);
        else if (!everSent.has(m.cid) && st?.text?.state?.inflight?.cid !== m.cid) {
          page.violations.push(`${m.cid} sent first while the stored text state has ${JSON.stringify(st?.text?.state)}`);
        }
        everSent.add(m.cid); // a re-send (after a reconnect, a reload) finds the text moved on, maybe
      }
      return super.send(data, ...rest);
    }
  };
}

/** The text with the edits the store kept (TextDoc.save(): server, pending, buffer), '' without a record. */
function keptText(idb) {
  const st = [...idb.data.values()].find((r) => r.text)?.text.state;
  if (!st) return '';
  let v = st.server;
  if (st.pending) v = applyText(v, st.pending);
  if (st.buffer) v = applyText(v, st.buffer);
  return v;
}

function openPage(url, device, idb, everSent) {
  const page = { device, idb, dead: false, sockets: [], violations: [], textOpsSent: 0 };
  page.client = new Client(url, {
    token: token('alice'),
    device,
    WebSocket: pageSocket(page, everSent),
    transports: ['ws'],
    persist: 'indexeddb',
    indexedDB: idb,
    backoff: { base: 50, max: 200 },
  });
  page.client.on("error", (e) => { if (process.env.DBG) console.log(device, "ERROR", e); });
  return page;
}

/** The page dies: nothing more leaves it, its connections drop a moment later (what was sent still arrives). */
async function kill(page) {
  page.dead = true;
  await sleep(50);
  for (const s of page.sockets) s.terminate();
  page.client.close();
}

for (const early of [false, true]) {
  const when = early ? 'opened at once (before the store has loaded)' : 'opened once the room is ready';
  test(`a text whose page dies after any IndexedDB commit comes back once, ${when}: every edit at most once, acked ones kept`, { timeout: 8 * WAIT_MS }, async (t) => {
    const srv = await startSyncServer(t, SERVER_ARGS);
    const w = makeClient(t, srv.url, { user: 'bob' });
    let complete = false;
    let diedAfterSending = 0;
    let runs = 0;
    for (let k = 0; k < MAX_COMMITS && !complete; k++) {
      runs++;
      const room = `persist-text-${k}`;
      const device = `d-persist-${process.pid}-${k}`;
      // ---- the first page types, and dies at its (k+1)-th commit ----
      await w.room(room).set('n', { body: '' }); // text ops edit an item that exists
      const everSent = new Set();
      const idb = new FakeIDB({ crashAfter: k, delayMs: 3 });
      const a = openPage(srv.url, device, idb, everSent);
      idb.onCrash = () => { a.dead = true; };
      const ra = a.client.room(room);
      const ta = ra.text('n', 'body');
      await ra.ready;
      ta.insert(0, TYPED[0]);
      ta.insert(TYPED[0].length, TYPED[1]); // buffered behind the first op
      await waitUntil(() => a.dead || ta.state === 'awaiting' || ta.state === 'synchronized', `k=${k}: the buffer sent`);
      if (!a.dead) ta.insert(ta.value.length, TYPED[2]); // buffered behind the second
      await waitUntil(() => a.dead || (ta.state === 'synchronized' && ra.pendingCount === 0 && idb.idle),
        `k=${k}: page A dead or done (state ${ta.state}, pending ${ra.pendingCount})`);
      complete = !a.dead;
      if (a.dead) await kill(a);
      else a.client.close();
      assert.deepEqual(a.violations, [], `k=${k}: write-ahead`);
      if (a.dead && a.textOpsSent > 0) diedAfterSending++;

      // ---- the reloaded page: what was committed ----
      const kept = keptText(idb);
      const b = openPage(srv.url, device, idb.reloaded(), everSent);
      const rb = b.client.room(room);
      let tb = early ? rb.text('n', 'body') : null; // starts empty, takes back what the store kept
      await rb.ready;
      tb ??= rb.text('n', 'body');
      await waitUntil(() => tb.state === 'synchronized' && rb.pendingCount === 0 && b.idb.idle,
        `k=${k}: page B settled (state ${tb.state}, pending ${rb.pendingCount})`);
      const server = (await serverDoc(srv.url, room)).n?.body ?? '';
      assert.ok(OUTCOMES.includes(server), `k=${k}: the server's text ${JSON.stringify(server)} is not a prefix of what was typed`);
      assert.equal(tb.value, server, `k=${k}: the reloaded page shows the server's text`);
      assert.ok(server.startsWith(kept), `k=${k}: the edits the store kept (${JSON.stringify(kept)}) are in the text (${JSON.stringify(server)})`);
      if (complete) assert.equal(server, TYPED.join(''), 'a page that did not die delivered everything');
      assert.deepEqual(b.violations, [], `k=${k}: write-ahead after the reload`);
      b.client.close();
    }
    t.diagnostic(`${runs} runs; pages died after sending text ops in ${diedAfterSending}`);
    assert.ok(complete, `a run with ${MAX_COMMITS} commits allowed completes`);
    assert.ok(diedAfterSending >= 3, `pages died after sending text ops in ${diedAfterSending} runs`);
  });
}
