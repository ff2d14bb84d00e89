// webhooks.test.mjs -- webhooks that follow the durable log (docs/HOOKS.md):
// the payload (room, epoch, seq and the exact broadcast), the signature, the
// batches, order per room, the room filter; retries after errors and
// timeouts; a receiver down for 30 s of writes; kill -9 of wsync while a
// request is in flight (nothing skipped, duplicates deduped by seq); a
// graceful restart (nothing delivered twice); retention that keeps what a
// webhook has not delivered up to --webhook-retain, then a gap event;
// lifecycle events; /metrics; configuration errors; and the example receiver
// (examples/webhook-receiver.mjs) as its own process.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';

import { createReceiver, verifySignature } from '../../examples/webhook-receiver.mjs';
import { runCli, sleep, waitUntil } from './lib/server.mjs';
import { SyncClient, api, closeClients, fetchMetrics, restartableServer, startSyncServer, token } from './lib/sync.mjs';

const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../examples');
const HOOK_SECRET = 'webhook-e2e-secret-0123456789abcdef';
const KEY = 'webhook-api-key-0123';
const LONG_MS = 60000;

/** A port nobody listens on right now (bound, then released). */
async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/** Listens on port (0: any); resolves the port. */
async function listen(server, port = 0) {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return server.address().port;
}

async function shut(server) {
  server.closeAllConnections?.();
  await new Promise((r) => server.close(r));
}

/**
 * A raw receiver: records every request (headers, raw body, parsed body) and
 * answers with answer(n) = status, or null to never answer (n counts from 0).
 */
async function recorder(t, answer = () => 200, port = 0) {
  const reqs = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const n = reqs.length;
      const status = answer(n);
      reqs.push({ headers: req.headers, raw, body: JSON.parse(raw), status, at: n });
      if (status === null) return; // hang: the client times out
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  const p = await listen(server, port);
  t.after(() => shut(server));
  return { reqs, port: p, url: `http://127.0.0.1:${p}/hook`, server };
}

/** Entries of the requests that got a 2xx, per room: [{seq, msg, epoch}] in arrival order. */
function acked(reqs, event = 'entry') {
  const rooms = new Map();
  for (const r of reqs) {
    if (r.status === null || r.status < 200 || r.status > 299) continue;
    for (const e of r.body.entries) {
      if (e.event !== event) continue;
      if (!rooms.has(e.room)) rooms.set(e.room, []);
      rooms.get(e.room).push(e);
    }
  }
  return rooms;
}

const hookArgs = (spec, extra = []) => ['--api-key', KEY, '--rate', '100000', '--burst', '100000',
  '--webhook', spec, '--webhook-secret', HOOK_SECRET, ...extra];

const write = (url, room, i, pad) => api(url, 'POST', `/v1/rooms/${room}/ops`, {
  key: KEY, body: { op: { kind: 'set', item: `i${i % 7}`, fields: pad ? { n: i, pad } : { n: i } } },
});

async function writeOk(url, room, i, pad) {
  const r = await write(url, room, i, pad);
  assert.equal(r.status, 200, r.text);
  return r.body.seq;
}

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

/** The journal of the example receiver, parsed. */
const journalOf = (file) => {
  try {
    return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  } catch {
    return [];
  }
};

/** Each room of a journal: the seqs applied (not dup) in order, and the duplicates. */
function applied(journal) {
  const out = new Map();
  for (const e of journal) {
    if (e.event !== 'entry') continue;
    if (!out.has(e.room)) out.set(e.room, { seqs: [], dups: 0 });
    const r = out.get(e.room);
    if (e.dup) r.dups++;
    else r.seqs.push(e.seq);
  }
  return out;
}

const mirrorOf = (dir, room) => {
  try {
    return JSON.parse(readFileSync(path.join(dir, `${encodeURIComponent(room)}.json`), 'utf8'));
  } catch {
    return null;
  }
};

function tmp(t) {
  const d = mkdtempSync(path.join(tmpdir(), 'wsync-hook-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

test('entries arrive signed, batched, in order per room, with room, epoch, seq and the exact broadcast', async (t) => {
  const rec = await recorder(t);
  const srv = await startSyncServer(t, hookArgs(`${rec.url} rooms=board:*`, ['--webhook-batch', '8']));
  const c = await SyncClient.connect(srv.url, { token: token('alice'), device: 'a1' });
  t.after(() => closeClients(c));
  await c.join('board:1');
  const N = 30;
  const epochs = {};
  for (let i = 0; i < N; i++) {
    const r = await write(srv.url, i % 2 ? 'board:1' : 'board:2', i);
    epochs[r.body.room] = r.body.epoch;
  }
  await c.request({ type: 'publish', room: 'board:1', cid: 'a1.p.1', data: { text: 'hi' } });
  await write(srv.url, 'other', 99); // not matched by rooms=board:*
  await waitUntil(() => (acked(rec.reqs).get('board:1')?.length ?? 0) === N / 2 + 1 &&
    (acked(rec.reqs).get('board:2')?.length ?? 0) === N / 2, 'every board entry delivered');

  const byRoom = acked(rec.reqs);
  assert.equal(byRoom.has('other'), false, 'the room filter');
  assert.deepEqual(byRoom.get('board:1').map((e) => e.seq), range(1, N / 2 + 1));
  assert.deepEqual(byRoom.get('board:2').map((e) => e.seq), range(1, N / 2));
  for (const [room, list] of byRoom) for (const e of list) assert.equal(e.epoch, epochs[room]);
  // The exact broadcast the members got, for ops and stored publishes.
  const seen = c.log.filter((m) => (m.type === 'op' || m.type === 'message') && m.room === 'board:1');
  assert.equal(seen.length, N / 2 + 1);
  for (const m of seen) assert.deepEqual(byRoom.get('board:1')[m.seq - 1].msg, m);
  const hist = await api(srv.url, 'GET', '/v1/rooms/board:2/history', { key: KEY });
  assert.deepEqual(byRoom.get('board:2').map((e) => e.msg), hist.body.entries);

  for (const r of rec.reqs) {
    assert.ok(r.body.entries.length >= 1 && r.body.entries.length <= 8, `batch of ${r.body.entries.length}`);
    assert.equal(r.headers['content-type'], 'application/json');
    assert.match(r.headers['wsync-webhook'], /^[0-9a-f]{16}$/);
    assert.equal(r.body.webhook, r.headers['wsync-webhook']);
    const ts = r.headers['wsync-timestamp'];
    assert.ok(Math.abs(Date.now() / 1000 - Number(ts)) < 300);
    const want = createHmac('sha256', HOOK_SECRET).update(`${ts}.`).update(r.raw).digest('hex');
    assert.equal(r.headers['wsync-signature'], `v1=${want}`);
    assert.equal(verifySignature(HOOK_SECRET, r.headers, r.raw), null);
    assert.equal(verifySignature('another-secret-0123456789abcdef0123', r.headers, r.raw), 'bad signature');
    assert.equal(verifySignature(HOOK_SECRET, r.headers, Buffer.concat([r.raw, Buffer.from(' ')])), 'bad signature');
    assert.match(verifySignature(HOOK_SECRET, r.headers, r.raw, 300, Number(ts) + 301), /replay/);
  }
  const m = await fetchMetrics(srv.url, KEY);
  const id = rec.reqs[0].headers['wsync-webhook'];
  assert.equal(m.get(`wsync_webhook_delivered_total{webhook="${id}"}`), N + 1);
  assert.equal(m.get(`wsync_webhook_lag_entries{webhook="${id}"}`), 0);
  assert.equal(m.get(`wsync_webhook_lag_seconds{webhook="${id}"}`), 0);
  assert.equal(m.get(`wsync_webhook_requests_total{webhook="${id}",result="ok"}`), rec.reqs.length);
});

test('errors and timeouts are retried with the same entries; positions advance only on a 2xx', async (t) => {
  // 500, 404, no answer (timeout), then 200 for everything.
  const rec = await recorder(t, (n) => (n === 0 ? 500 : n === 1 ? 404 : n === 2 ? null : 200));
  const srv = await startSyncServer(t, hookArgs(`${rec.url} name=retry`,
    ['--webhook-timeout', '300ms', '--webhook-max-backoff', '500ms']));
  for (let i = 0; i < 5; i++) await writeOk(srv.url, 'r', i);
  await waitUntil(() => (acked(rec.reqs).get('r')?.length ?? 0) >= 5, 'delivered after the failures');
  for (let i = 5; i < 10; i++) await writeOk(srv.url, 'r', i);
  await waitUntil(() => (acked(rec.reqs).get('r')?.length ?? 0) === 10, 'the rest');
  assert.deepEqual(acked(rec.reqs).get('r').map((e) => e.seq), range(1, 10));
  // The failed attempts carried the same first entries as the one that succeeded.
  const first = (r) => r.body.entries.map((e) => e.seq).join(',');
  assert.equal(first(rec.reqs[0]), first(rec.reqs[3]));
  assert.equal(rec.reqs[0].headers['wsync-attempt'], '1');
  assert.equal(rec.reqs[3].headers['wsync-attempt'], '4');
  assert.equal(rec.reqs[0].headers['wsync-webhook'], 'retry');
  const m = await fetchMetrics(srv.url, KEY);
  assert.equal(m.get('wsync_webhook_requests_total{webhook="retry",result="error"}'), 3);
  assert.equal(m.get('wsync_webhook_delivered_total{webhook="retry"}'), 10);
  await srv.waitForLog(/webhook retry: delivery failed/);
  await srv.waitForLog(/webhook retry: delivering again after 3 failed attempts/);
});

test('the receiver is down for 30 s of writes: every entry arrives once it is back, in order, per room, nothing missing', { timeout: 120000 }, async (t) => {
  const dir = tmp(t);
  const journal = path.join(dir, 'journal.jsonl');
  const port = await freePort();
  const srv = await startSyncServer(t, hookArgs(`http://127.0.0.1:${port}/ name=down`, ['--webhook-max-backoff', '2s']));
  const rooms = ['down:a', 'down:b', 'down:c'];
  const last = {};
  const until = Date.now() + 30000;
  let i = 0;
  let lagSeen = false;
  while (Date.now() < until) {
    const room = rooms[i % rooms.length];
    last[room] = await writeOk(srv.url, room, i++);
    await sleep(20);
    if (!lagSeen && i % 100 === 0) {
      const m = await fetchMetrics(srv.url, KEY);
      lagSeen = m.get('wsync_webhook_lag_entries{webhook="down"}') > 0 && m.get('wsync_webhook_lag_seconds{webhook="down"}') > 0;
    }
  }
  assert.ok(i > 300, `${i} writes in 30 s`);
  assert.ok(lagSeen, 'the backlog shows in /metrics while the receiver is down');
  const m = await fetchMetrics(srv.url, KEY);
  assert.equal(m.get('wsync_webhook_lag_entries{webhook="down"}'), i);
  assert.ok(m.get('wsync_webhook_requests_total{webhook="down",result="error"}') >= 3);

  const recv = createReceiver({ secret: HOOK_SECRET, dir, journal, log: () => {} });
  await listen(recv, port);
  t.after(() => shut(recv));
  await waitUntil(() => rooms.every((r) => mirrorOf(dir, r)?.seq === last[r]), 'every room mirrored', LONG_MS);
  const got = applied(journalOf(journal));
  for (const r of rooms) {
    assert.deepEqual(got.get(r).seqs, range(1, last[r]), `${r}: in order, nothing missing`);
    assert.equal(got.get(r).dups, 0, `${r}: nothing twice`);
    const snap = await api(srv.url, 'GET', `/v1/rooms/${r}`, { key: KEY });
    const strip = (items) => Object.fromEntries(Object.entries(items).map(([k, v]) => [k, { version: v.version, fields: v.fields }]));
    assert.deepEqual(strip(mirrorOf(dir, r).items), strip(snap.body.items), `${r}: the mirror is the document`);
  }
  await waitUntil(async () => (await fetchMetrics(srv.url, KEY)).get('wsync_webhook_lag_entries{webhook="down"}') === 0, 'lag back to 0');
});

test('kill -9 of wsync while a request is in flight: nothing skipped, the re-delivered entries deduped by seq', { timeout: 120000 }, async (t) => {
  const dir = tmp(t);
  const journal = path.join(dir, 'journal.jsonl');
  // The receiver applies each batch at once and answers only after 3 s: the
  // kill lands between the two, so wsync never learns that batch arrived.
  let recv = createReceiver({ secret: HOOK_SECRET, dir, journal, answerDelayMs: 3000, log: () => {} });
  const port = await listen(recv);
  const h = await restartableServer(t, hookArgs(`http://127.0.0.1:${port}/ name=crash`, ['--webhook-batch', '20', '--webhook-max-backoff', '1s']));
  const last = {};
  for (let i = 0; i < 100; i++) last[`k:${i % 2}`] = await writeOk(h.url, `k:${i % 2}`, i);
  await waitUntil(() => journalOf(journal).length > 0, 'a first batch applied by the receiver');
  await h.kill();
  await shut(recv);
  recv = createReceiver({ secret: HOOK_SECRET, dir, journal, log: () => {} });
  await listen(recv, port);
  t.after(() => shut(recv));
  await h.start();
  for (let i = 100; i < 140; i++) last[`k:${i % 2}`] = await writeOk(h.url, `k:${i % 2}`, i);
  await waitUntil(() => Object.keys(last).every((r) => mirrorOf(dir, r)?.seq === last[r]), 'every room mirrored', LONG_MS);
  const got = applied(journalOf(journal));
  let dups = 0;
  for (const r of Object.keys(last)) {
    assert.deepEqual(got.get(r).seqs, range(1, last[r]), `${r}: nothing skipped, in order`);
    dups += got.get(r).dups;
  }
  assert.ok(dups > 0, 'the batch in flight at the kill came again (and was deduped)');
});

test('a graceful restart resumes from the stored positions: nothing delivered twice', async (t) => {
  const rec = await recorder(t);
  const h = await restartableServer(t, hookArgs(`${rec.url} name=calm`));
  for (let i = 0; i < 12; i++) await writeOk(h.url, 'calm', i);
  await waitUntil(() => (acked(rec.reqs).get('calm')?.length ?? 0) === 12, 'first twelve');
  await h.stop();
  await h.start();
  for (let i = 12; i < 20; i++) await writeOk(h.url, 'calm', i);
  await waitUntil(() => (acked(rec.reqs).get('calm')?.length ?? 0) >= 20, 'the rest');
  await sleep(200);
  assert.deepEqual(acked(rec.reqs).get('calm').map((e) => e.seq), range(1, 20));
});

test('a room deleted and made again: the webhook follows the new epoch from seq 1', async (t) => {
  const rec = await recorder(t);
  const srv = await startSyncServer(t, hookArgs(`${rec.url} name=epochs`));
  for (let i = 0; i < 3; i++) await writeOk(srv.url, 'phoenix', i);
  await waitUntil(() => (acked(rec.reqs).get('phoenix')?.length ?? 0) === 3, 'first incarnation');
  const del = await api(srv.url, 'DELETE', '/v1/rooms/phoenix', { key: KEY });
  assert.equal(del.status, 200, del.text);
  for (let i = 0; i < 2; i++) await writeOk(srv.url, 'phoenix', i);
  await waitUntil(() => (acked(rec.reqs).get('phoenix')?.length ?? 0) === 5, 'second incarnation');
  const list = acked(rec.reqs).get('phoenix');
  assert.deepEqual(list.map((e) => e.seq), [1, 2, 3, 1, 2]);
  assert.equal(list[0].epoch, list[2].epoch);
  assert.equal(list[3].epoch, list[4].epoch);
  assert.notEqual(list[0].epoch, list[3].epoch);
  const m = await fetchMetrics(srv.url, KEY);
  assert.equal(m.get('wsync_webhook_lag_entries{webhook="epochs"}'), 0);
});

test('retention keeps what a webhook has not delivered, up to --webhook-retain; past it, a gap event', { timeout: 120000 }, async (t) => {
  // history-ops 10: without webhooks a room of 300 entries keeps the last 10
  // or so (trimmed every 256 seqs). Entries of 8 KiB: 600 of them overflow
  // the webhook's live tail (4 MiB), so it reads the log from the store.
  const pad = 'x'.repeat(8192);
  for (const [retain, total, gap] of [[1000, 300, false], [100, 600, true]]) {
    await t.test(`retain ${retain}, ${total} entries while the receiver is down`, async (tt) => {
      const port = await freePort();
      const srv = await startSyncServer(tt, hookArgs(`http://127.0.0.1:${port}/ name=ret`,
        ['--history-ops', '10', '--webhook-retain', String(retain), '--webhook-max-backoff', '500ms']));
      for (let i = 0; i < total; i++) await writeOk(srv.url, 'ret', i, pad);
      // What the store kept meanwhile: all of it for the webhook, or the cap.
      const hist = await api(srv.url, 'GET', '/v1/rooms/ret/history?limit=1', { key: KEY });
      assert.equal(hist.body.first, gap ? 512 - 10 + 1 - 100 : 1);
      const rec = await recorder(tt, () => 200, port);
      await waitUntil(() => (acked(rec.reqs).get('ret')?.at(-1)?.seq ?? 0) === total, 'caught up', LONG_MS);
      const gaps = acked(rec.reqs, 'gap').get('ret') ?? [];
      const seqs = acked(rec.reqs).get('ret').map((e) => e.seq);
      const m = await fetchMetrics(srv.url, KEY);
      if (!gap) {
        assert.equal(gaps.length, 0);
        assert.deepEqual(seqs, range(1, total), 'kept for the webhook: all of them');
        assert.equal(m.get('wsync_webhook_gaps_total{webhook="ret"}'), 0);
      } else {
        assert.equal(gaps.length, 1, JSON.stringify(gaps));
        const g = gaps[0];
        // Trimmed at seq 512: the 10 of --history-ops plus 100 for the webhook.
        assert.equal(g.first, 512 - 10 + 1 - 100);
        // Before it, what the first batch (made before the trim, retried since) held.
        assert.ok(g.after < g.first - 1, JSON.stringify(g));
        assert.deepEqual(seqs, [...range(1, g.after), ...range(g.first, total)], 'the gap, and nothing else missing');
        assert.equal(m.get('wsync_webhook_gaps_total{webhook="ret"}'), 1);
      }
    });
  }
});

test('lifecycle events are sent when asked for, flagged at most once', async (t) => {
  const rec = await recorder(t);
  const srv = await startSyncServer(t, hookArgs(`${rec.url} name=life events=lifecycle rooms=life:*`));
  const c = await SyncClient.connect(srv.url, { token: token('lena'), device: 'lena-1' });
  await c.join('life:1');
  await c.join('quiet:1'); // not matched: no event
  await c.request({ type: 'leave', room: 'life:1' });
  const events = () => rec.reqs.flatMap((r) => r.body.entries).filter((e) => e.event !== 'entry');
  await waitUntil(() => events().some((e) => e.event === 'leave'), 'the leave event');
  const ev = events();
  const connected = ev.find((e) => e.event === 'connected');
  assert.ok(connected, JSON.stringify(ev));
  assert.equal(connected.user, 'lena');
  assert.equal(connected.device, 'lena-1');
  assert.equal(connected.at_most_once, true);
  assert.deepEqual(ev.filter((e) => e.room).map((e) => [e.event, e.room]), [['join', 'life:1'], ['leave', 'life:1']]);
  for (const e of ev) assert.equal(typeof e.ts, 'number');
  await c.close();
  await waitUntil(() => events().some((e) => e.event === 'ended'), 'the session end event');
  const m = await fetchMetrics(srv.url, KEY);
  assert.ok(m.get('wsync_webhook_events_total{webhook="life",result="sent"}') >= 4);
});

test('configuration errors stop the start with a clear message', () => {
  const cases = [
    [['--webhook', 'http://127.0.0.1:1/'], /--webhook needs --webhook-secret/],
    [['--webhook', 'http://127.0.0.1:1/', '--webhook-secret', 'short'], /--webhook-secret is 5 bytes/],
    [['--webhook', 'ftp://x/', '--webhook-secret', HOOK_SECRET], /must be an http:\/\/ or https:\/\/ URL/],
    [['--webhook', 'http://x/ colour=red', '--webhook-secret', HOOK_SECRET], /unknown setting 'colour=red'/],
    [['--webhook', 'http://x/ name=a b', '--webhook-secret', HOOK_SECRET], /unknown setting 'b'/],
    [['--webhook', 'http://x/ name=bad/name', '--webhook-secret', HOOK_SECRET], /name= takes/],
    [['--webhook', 'http://x/ name=same', '--webhook', 'http://y/ name=same', '--webhook-secret', HOOK_SECRET], /two webhooks have the id same/],
    [['--webhook', 'http://x/', '--webhook', 'http://x/', '--webhook-secret', HOOK_SECRET], /two webhooks have the id [0-9a-f]{16}/],
    [['--webhook-batch', '0'], /webhook-batch must be from 1/],
  ];
  for (const [args, re] of cases) {
    const dir = mkdtempSync(path.join(tmpdir(), 'wsync-hookcfg-'));
    try {
      const r = runCli(['serve', '--listen', '127.0.0.1:0', '--data-dir', dir, ...args]);
      assert.equal(r.status, 2, `${args.join(' ')}: exit ${r.status}\n${r.stderr}`);
      assert.match(r.stderr, re, args.join(' '));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('the example receiver, as its own process: verifies, refuses forgeries and replays, mirrors a room into a file', async (t) => {
  const dir = tmp(t);
  const proc = spawn(process.execPath, [path.join(EXAMPLES, 'webhook-receiver.mjs'), '--port', '0', '--dir', dir], {
    env: { ...process.env, WSYNC_WEBHOOK_SECRET: HOOK_SECRET }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => proc.kill('SIGKILL'));
  let out = '';
  let err = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (err += d));
  await waitUntil(() => /listening on http:\/\/127\.0\.0\.1:(\d+)\//.test(out), 'the receiver to listen');
  const url = /listening on (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out)[1];

  const srv = await startSyncServer(t, hookArgs(`${url} rooms=doc:*`));
  const c = await SyncClient.connect(srv.url, { token: token('max'), device: 'max-1' });
  t.after(() => closeClients(c));
  await c.join('doc:1');
  await c.request({ type: 'op', room: 'doc:1', cid: 'm.1', op: { kind: 'set', item: 'card', fields: { title: 'Hello', n: 1 } } });
  await c.request({ type: 'op', room: 'doc:1', cid: 'm.2', op: { kind: 'set', item: 'card', fields: { n: null, body: 'abc' } } });
  await c.request({ type: 'op', room: 'doc:1', cid: 'm.3', op: { kind: 'text', item: 'card', field: 'body', rev: 0, ops: [1, 'XY', { d: 1 }] } });
  await c.request({ type: 'op', room: 'doc:1', cid: 'm.4', op: { kind: 'batch', ops: [{ kind: 'set', item: 'tmp', fields: { a: 1 } }, { kind: 'set', item: 'b', fields: { z: [1] } }] } });
  await c.request({ type: 'op', room: 'doc:1', cid: 'm.5', op: { kind: 'del', item: 'tmp' } });
  await c.request({ type: 'publish', room: 'doc:1', cid: 'm.6', data: { text: 'hi' } });
  await waitUntil(() => mirrorOf(dir, 'doc:1')?.seq === 6, 'the mirror at seq 6');
  const mirror = mirrorOf(dir, 'doc:1');
  const snap = await api(srv.url, 'GET', '/v1/rooms/doc:1', { key: KEY });
  assert.equal(snap.status, 200);
  const fields = Object.fromEntries(Object.entries(mirror.items).map(([k, v]) => [k, v.fields]));
  assert.deepEqual(fields, { card: { title: 'Hello', body: 'aXYc' }, b: { z: [1] } });
  assert.deepEqual(fields, Object.fromEntries(Object.entries(snap.body.items).map(([k, v]) => [k, v.fields])));
  assert.equal(mirror.epoch, snap.body.epoch);
  assert.deepEqual(mirror.messages.map((m) => m.data), [{ text: 'hi' }]);

  // Forged and replayed requests are refused with 401.
  const body = JSON.stringify({ webhook: 'x', entries: [{ event: 'entry', room: 'doc:1', epoch: mirror.epoch, seq: 7, msg: { type: 'message', data: 'evil' } }] });
  const post = (headers) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  const now = Math.floor(Date.now() / 1000);
  const sig = (ts, secret = HOOK_SECRET) => `v1=${createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex')}`;
  assert.equal((await post({})).status, 401);
  assert.equal((await post({ 'wsync-timestamp': String(now), 'wsync-signature': sig(now, 'wrong-secret-0123456789abcdef0123') })).status, 401);
  assert.equal((await post({ 'wsync-timestamp': String(now - 3600), 'wsync-signature': sig(now - 3600) })).status, 401);
  assert.equal(mirrorOf(dir, 'doc:1').seq, 6, 'nothing applied from them');
  assert.match(err, /refused: bad signature/);
  assert.match(err, /refused: timestamp too far/);
});
