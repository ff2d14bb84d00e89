// compression.test.mjs -- Chromium always offers permessage-deflate: against
// wsync (compression on by default) the extension is agreed, messages go
// both ways compressed (the server's counters show it inflated what the
// browser compressed and compressed its answers), and with --compression off
// the same page talks uncompressed.
import assert from 'node:assert/strict';
import test from 'node:test';
import { launchBrowser, startDemoServer, WAIT } from './helpers.mjs';

const ANSWER = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';

/** In the page: opens /v1/echo, sends each message, collects the echoes. */
function echoInPage(page, msgs) {
  return page.evaluate(async (list) => {
    const ws = new WebSocket(`ws://${location.host}/v1/echo`);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error('websocket error'));
    });
    const got = [];
    const done = new Promise((resolve) => {
      ws.onmessage = (e) => {
        got.push(e.data);
        if (got.length === list.length) resolve();
      };
    });
    for (const m of list) ws.send(m);
    await done;
    const extensions = ws.extensions;
    ws.close(1000);
    return { extensions, got };
  }, msgs);
}

const healthz = async (srv) => (await (await fetch(`${srv.url}/healthz`)).json()).compression;

const messages = () => {
  const op = (i) => JSON.stringify({ type: 'op', room: 'board:b', seq: i, op: { kind: 'set', item: `card-${i}`,
    fields: { title: `Card ${i}`, text: 'words that repeat, words that repeat, words that repeat' } } });
  return ['hi', op(1), op(2).repeat(50), 'é€𝄞'.repeat(2000), 'x'.repeat(200000)];
};

test('Chromium agrees on permessage-deflate and exchanges compressed messages', { timeout: 30000 }, async (t) => {
  const srv = await startDemoServer(t);
  const browser = await launchBrowser(t);
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(WAIT);
  await page.goto(srv.url);
  const before = await healthz(srv);
  const msgs = messages();
  const r = await echoInPage(page, msgs);
  assert.equal(r.extensions, ANSWER, 'the response header as the browser saw it');
  assert.deepEqual(r.got, msgs);
  const after = await healthz(srv);
  assert.ok(after.inflates - before.inflates >= 3, `server inflated ${after.inflates - before.inflates} messages`);
  assert.ok(after.deflates - before.deflates >= 3, `server compressed ${after.deflates - before.deflates} messages`);
  assert.equal(after.inflate_streams, 0);
});

test('with --compression off Chromium talks uncompressed', { timeout: 30000 }, async (t) => {
  const srv = await startDemoServer(t, ['--compression', 'off']);
  const browser = await launchBrowser(t);
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(WAIT);
  await page.goto(srv.url);
  const msgs = messages();
  const r = await echoInPage(page, msgs);
  assert.equal(r.extensions, '');
  assert.deepEqual(r.got, msgs);
  const h = await healthz(srv);
  assert.equal(h.inflates + h.deflates, 0);
});
