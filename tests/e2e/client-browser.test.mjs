// client-browser.test.mjs -- the JavaScript client loaded unbundled as ES
// modules by Chromium (playwright-core), against the real server serving
// clients/js with --static: the browser's own WebSocket, EventSource (SSE)
// and fetch (long-poll), and persist:'indexeddb': edits made offline survive
// a page reload and are sent once when the network is back.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { SERVER_ARGS, cidCounts, docOf, history, makeClient, serverDoc, startProxy } from './lib/client-util.mjs';
import { WAIT_MS, waitUntil } from './lib/server.mjs';
import { startSyncServer, token } from './lib/sync.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLIENT_DIR = path.resolve(here, '../../clients/js');
// Chromium is a tool of the machine (scripts/deps.sh installs Debian's), not
// of this repository: where it is missing the two browser tests are skipped
// with the reason ('no Chromium at ...'), which node counts in the summary.
// (make browser, tests/e2e/browser, needs it and fails without it.)
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

let browser;
test.before(async () => {
  if (existsSync(CHROMIUM)) browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});
test.after(() => browser && browser.close());

/** A page on the server's origin with the client module loaded as window.wsync. */
async function openPage(t, srv) {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  // The browser logs failed connections itself (expected while offline), and
  // the favicon it asks for is a 404;
  // anything else on the console is a problem.
  page.on('console', (m) => m.type() === 'error' && !/net::ERR_|WebSocket connection to|Failed to load resource/.test(m.text()) &&
    problems.push(m.text()));
  page.problems = problems;
  page.load = async () => {
    await page.goto(`${srv.url}/wsync.js`); // any page of the server's origin
    await page.evaluate(async () => {
      window.wsync = await import('/wsync.js');
    });
  };
  await page.load();
  return page;
}

const pendingInIdb = (page) => page.evaluate(() => new Promise((resolve, reject) => {
  const open = indexedDB.open('wsync', 1);
  open.onsuccess = () => {
    const req = open.result.transaction('pending', 'readonly').objectStore('pending').getAll();
    req.onsuccess = () => {
      open.result.close();
      resolve(req.result.map((r) => ({ cid: r.cid, room: r.room, kind: r.msg.op ? r.msg.op.kind : r.msg.type })));
    };
    req.onerror = () => reject(req.error);
  };
  open.onerror = () => reject(open.error);
}));

test('browser: offline edits kept in IndexedDB survive a reload and are sent once', { skip: !existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM}` }, async (t) => {
  const srv = await startSyncServer(t, [...SERVER_ARGS, '--static', CLIENT_DIR]);
  const proxy = await startProxy(t, srv.port); // the page's network to the sync endpoint
  const room = 'board:browser';
  const page = await openPage(t, srv);
  const opts = { proxy: proxy.url, tok: token('alice'), room };
  const start = () => page.evaluate(async ({ proxy: url, tok, room: name }) => {
    window.client = new window.wsync.Client(url, {
      token: tok, persist: 'indexeddb', transports: ['ws'], backoff: { base: 50, max: 300 },
    });
    window.room = window.client.room(name);
  }, opts);
  await start();
  await page.waitForFunction(() => window.client.status === 'online', null, { timeout: WAIT_MS });
  await page.evaluate(() => window.room.set('a1', { v: 1 }));
  const device = await page.evaluate(() => window.client.device);
  assert.equal(await page.evaluate(() => localStorage.getItem('wsync.device')), device, 'the device id is persisted');
  assert.equal(await page.evaluate(() => window.client.transport), 'ws', "the browser's WebSocket");

  // The network goes away; the user edits on.
  proxy.block();
  proxy.cut();
  await page.waitForFunction(() => window.client.status !== 'online', null, { timeout: WAIT_MS });
  await page.evaluate(() => {
    window.room.set('off-1', { v: 1 });
    window.room.set('off-2', { v: 2 });
    window.room.delete('a1');
  });
  assert.deepEqual(await page.evaluate(() => Object.fromEntries(window.room.items)), { 'off-1': { v: 1 }, 'off-2': { v: 2 } });
  // (the IndexedDB writes are asynchronous)
  await waitUntil(async () => (await pendingInIdb(page)).length >= 3, 'three records in IndexedDB');
  const stored = await pendingInIdb(page);
  assert.deepEqual(stored.map((r) => `${r.room}/${r.kind}`).sort(), [`${room}/del`, `${room}/set`, `${room}/set`]);

  // The tab is reloaded while still offline: nothing is lost.
  await page.reload();
  await page.load();
  await start();
  assert.equal(await page.evaluate(() => window.client.device), device, 'the same device after the reload');
  await page.waitForFunction(() => window.room.pendingCount === 3, null, { timeout: WAIT_MS });
  assert.deepEqual(await page.evaluate(() => Object.fromEntries(window.room.items)), { 'off-1': { v: 1 }, 'off-2': { v: 2 } },
    'the restored ops show before any answer from the server');
  assert.equal((await history(srv.url, room)).length, 1, 'still nothing sent');

  proxy.unblock();
  await page.waitForFunction(() => window.client.status === 'online' && window.room.pendingCount === 0, null, { timeout: WAIT_MS });
  const entries = await history(srv.url, room);
  assert.equal(entries.length, 4);
  assert.deepEqual([...cidCounts(entries).keys()].slice(1).sort(), stored.map((r) => r.cid).sort(), 'the stored cids, each once');
  assert.deepEqual(await serverDoc(srv.url, room), { 'off-1': { v: 1 }, 'off-2': { v: 2 } });
  assert.deepEqual(await page.evaluate(() => Object.fromEntries(window.room.items)), { 'off-1': { v: 1 }, 'off-2': { v: 2 } });
  await waitUntil(async () => (await pendingInIdb(page)).length === 0, 'IndexedDB emptied once acknowledged');
  await page.evaluate(() => window.client.close());
  assert.deepEqual(page.problems, []);
  await page.context().close(); // before the server stops: it waits for open connections
});

test('browser: EventSource (SSE) and fetch long-polling, in sync with a Node client', { skip: !existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM}` }, async (t) => {
  const srv = await startSyncServer(t, [...SERVER_ARGS, '--static', CLIENT_DIR]);
  const room = 'board:browser-http';
  const page = await openPage(t, srv);
  const node = makeClient(t, srv.url, { user: 'nora' });
  const rn = node.room(room);
  await rn.ready;
  await page.evaluate(async ({ url, tokens, name }) => {
    window.clients = ['sse', 'poll'].map((tr, i) => new window.wsync.Client(url, {
      token: tokens[i], device: `tab-${tr}`, transports: [tr], backoff: { base: 50, max: 300 },
    }));
    window.rooms = window.clients.map((c) => c.room(name));
    await Promise.all(window.rooms.map((r) => r.ready));
  }, { url: srv.url, tokens: [token('sam'), token('paula')], name: room });
  assert.deepEqual(await page.evaluate(() => window.clients.map((c) => c.transport)), ['sse', 'poll']);
  assert.equal(await page.evaluate(() => typeof EventSource), 'function', 'the browser path: EventSource');

  await page.evaluate(() => Promise.all([
    window.rooms[0].set('from-sse', { v: 1 }),
    window.rooms[1].set('from-poll', { v: 2 }),
  ]));
  await rn.set('from-node', { v: 3 });
  const want = { 'from-node': { v: 3 }, 'from-poll': { v: 2 }, 'from-sse': { v: 1 } };
  await page.waitForFunction((n) => window.rooms.every((r) => r.items.size === n && r.pendingCount === 0), 3, { timeout: WAIT_MS });
  for (const i of [0, 1]) {
    assert.deepEqual(await page.evaluate((k) => Object.fromEntries([...window.rooms[k].items].sort()), i), want);
  }
  await waitUntil(() => rn.items.size === 3, 'the node client has all three');
  assert.deepEqual(docOf(rn), want);
  assert.deepEqual(await serverDoc(srv.url, room), want);
  await page.evaluate(() => Promise.all(window.clients.map((c) => c.close())));
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
