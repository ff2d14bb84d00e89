// writers.test.mjs -- --write-threads: helper threads share the write calls
// of a large flush with the event loop (docs/SERVER.md). What a peer
// receives must not change: every member gets every message, in order,
// once, on the raw broadcast endpoint and on the sync protocol; the helpers
// must really have written (the server's /metrics counts their calls); the
// server stops cleanly in the middle of a fan-out; bad values are refused.
// `make e2e-writers` runs other suites (fan-out with a slow consumer, frames,
// sync) again with helpers.
import assert from 'node:assert/strict';
import test from 'node:test';

import { SyncClient, closeClients, fetchMetrics, startSyncServer, token } from './lib/sync.mjs';
import { runCli, startServer } from './lib/server.mjs';
import { closeAll, open } from './lib/wsclient.mjs';

const KEY = 'writers-test-api-key-0123456789';
const HELPED = ['--write-threads', '2', '--write-threads-min', '2', '--api-key', KEY];

const helped = async (srv) => {
  const m = await fetchMetrics(srv.url, KEY);
  return { helped: m.get('wsync_write_calls_helped_total'), all: m.get('wsync_write_calls_total') };
};

// Resolves once ws has received n messages; they are in got.
const collect = (ws, n) => {
  const got = [];
  const done = new Promise((resolve, reject) => {
    ws.on('message', (d) => {
      got.push(d.toString());
      if (got.length === n) resolve(got);
    });
    ws.on('close', () => reject(new Error(`closed after ${got.length} of ${n} messages`)));
  });
  return { got, done };
};

test('broadcast with helpers: every member gets every message once, each publisher in order', async (t) => {
  const srv = await startServer(t, HELPED);
  const MEMBERS = 48;
  const PUBS = 4;
  const EACH = 250;
  const url = `${srv.wsUrl}/v1/broadcast?room=w`;
  const members = [];
  for (let i = 0; i < MEMBERS; i++) members.push(await open(url));
  const inbox = members.map((ws) => collect(ws, PUBS * EACH));
  // Publishers are members too (the sender gets its own copy); they send
  // in bursts so that one read carries several messages to fan out.
  for (let k = 0; k < EACH; k += 25) {
    for (let p = 0; p < PUBS; p++) {
      for (let i = k; i < k + 25; i++) members[p].send(`p${p}-${String(i).padStart(4, '0')}-${'x'.repeat(i % 97)}`);
    }
    await new Promise((r) => setImmediate(r));
  }
  await Promise.all(inbox.map((x) => x.done));
  for (const [m, { got }] of inbox.entries()) {
    for (let p = 0; p < PUBS; p++) {
      const mine = got.filter((s) => s.startsWith(`p${p}-`)).map((s) => Number(s.slice(s.indexOf('-') + 1, s.indexOf('-') + 5)));
      assert.deepEqual(mine, [...Array(EACH).keys()], `member ${m}, publisher ${p}: all, once, in order`);
    }
    assert.equal(got.length, PUBS * EACH, `member ${m}: nothing else`);
  }
  const { helped: h, all } = await helped(srv);
  assert.ok(h > 0, `helpers made ${h} of ${all} write calls`);
  assert.ok(h < all, `the loop thread wrote too (${h} of ${all} by helpers)`);
  await closeAll(members);
});

test('sync protocol with helpers: every session sees the same entries, seq without gaps', async (t) => {
  const srv = await startSyncServer(t, [...HELPED, '--rate', '100000', '--burst', '100000']);
  const room = 'board:writers';
  const SESSIONS = 24;
  const WRITERS = 4;
  const OPS = 60;
  const clients = [];
  for (let i = 0; i < SESSIONS; i++) {
    const c = await SyncClient.connect(srv.url, { token: token(`u${i}`), device: `d${i}` });
    await c.join(room);
    clients.push(c);
  }
  t.after(() => closeClients(...clients));
  const acks = [];
  for (let i = 0; i < OPS; i++) {
    for (let w = 0; w < WRITERS; w++) {
      acks.push(clients[w].set(room, `w${w}-${i}`, `item-${i % 7}`, { by: w, n: i }));
    }
  }
  const seqs = (await Promise.all(acks)).map((a) => a.seq).sort((a, b) => a - b);
  const first = seqs[0];
  assert.deepEqual(seqs, seqs.map((_, i) => first + i), 'acks name consecutive seqs');
  const total = OPS * WRITERS;
  const seen = await Promise.all(clients.map((c) =>
    c.take(total, (m) => m.type === 'op' && m.room === room, 'ops', 30000)));
  const ref = seen[0].map((m) => `${m.seq}:${m.cid}`);
  assert.deepEqual(seen[0].map((m) => m.seq), seqs, 'session 0: every seq, in order');
  for (const [i, s] of seen.entries()) {
    assert.deepEqual(s.map((m) => `${m.seq}:${m.cid}`), ref, `session ${i} saw what session 0 saw`);
  }
  const { helped: h, all } = await helped(srv);
  assert.ok(h > 0, `helpers made ${h} of ${all} write calls`);
});

test('a server with helpers stops cleanly in the middle of a fan-out', async (t) => {
  const srv = await startServer(t, HELPED);
  const url = `${srv.wsUrl}/v1/broadcast?room=s`;
  const members = [];
  for (let i = 0; i < 32; i++) members.push(await open(url));
  let sending = true;
  const pump = (async () => {
    while (sending) {
      for (let i = 0; i < 50; i++) members[0].send('y'.repeat(200));
      await new Promise((r) => setImmediate(r));
    }
  })();
  await new Promise((r) => setTimeout(r, 300));
  const { helped: h } = await helped(srv);
  assert.ok(h > 0, 'the helpers were writing when the stop came');
  const e = await srv.stopChecked();
  sending = false;
  await pump;
  assert.equal(e.code, 0);
  assert.match(srv.stderr, /stopped/);
  for (const ws of members) ws.terminate();
});

test('bad --write-threads values are refused with a message', () => {
  for (const [args, re] of [
    [['--write-threads', '65'], /--write-threads must be from 0 to 64/],
    [['--write-threads', '-1'], /--write-threads/],
    [['--write-threads', 'two'], /--write-threads/],
    [['--write-threads-min', '1'], /--write-threads-min must be from 2/],
  ]) {
    const r = runCli(['serve', '--listen', '127.0.0.1:0', '--data-dir', '/nonexistent-wsync-dir', ...args]);
    assert.notEqual(r.status, 0, `${args.join(' ')} accepted`);
    assert.match(r.stderr, re, `${args.join(' ')}: ${r.stderr}`);
  }
});
