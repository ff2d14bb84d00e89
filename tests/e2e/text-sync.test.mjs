// text-sync.test.mjs -- collaborative text (docs/PROTOCOL.md 5.7) through the
// real server with the JavaScript client's room.text() (clients/js/wsync.js):
// random concurrent typing by five clients over WebSocket, SSE and
// long-polling while their connections are killed and cut off; a crash and
// restart of the server with edits pending; the rev_too_old rebase after more
// than 1024 ops (by resume and by snapshot); a set and a del of the field
// while others type; bad text ops on a raw socket; <textarea> bindings. At
// the end, orderings the server produces only by chance are replayed on a
// room fed by hand.
//
// Edits insert either filler or unique tokens, and delete only filler: every
// token must end up in the text exactly once and whole (no edit lost, none
// applied twice). Random choices come from WSYNC_TEXT_SEED (default fixed),
// printed in every failure message; timing still varies from run to run.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { apply as applyText, normalize, transform } from '../../clients/js/text.js';
import { Room } from '../../clients/js/wsync.js';
import { FakeTextarea, fakeClient } from './lib/fakes.mjs';
import { KEY, SERVER_ARGS, history, makeClient, serverSnapshot, startProxy } from './lib/client-util.mjs';
import { WAIT_MS, scale, sleep, waitUntil } from './lib/server.mjs';
import { CLUSTER, SyncClient, api, restartableServer, startSyncServer, token } from './lib/sync.mjs';
import { rng } from './lib/rng.mjs';

const SEED = Number(process.env.WSYNC_TEXT_SEED) || 20240611;
const LONG = 4 * WAIT_MS; // convergence after chaos: a guard against hangs, not a speed check

// ---- tokens and filler ------------------------------------------------------

// ASCII, 2- to 4-byte UTF-8, astral characters (surrogate pairs in JS) and
// combining marks.
const FILLER = ['a', 'b', 'x', ' ', '\n', 'é', 'ß', '中', '€', '\u0301', '\u0308', '😀', '👍', '𝄞', '🇫'];

// A token is three astral code points (CJK Extension B) of its own: token
// (k, n) is U+20000 + 3i .. + 3i + 2, i = 1000k + n. No two tokens share a
// character, and filler has none of them. Tokens made of shared characters
// would also check where rebased edits land: after a snapshot or a
// rev_too_old, TextDoc.reset rebases local edits through a diff of the old
// and new texts, and a diff may match a character to its twin in another
// token, which puts a rebased insert inside that token (see the report).
// With characters of their own, a diff keeps tokens whole, and the check is
// the one wanted here: no insertion lost, none applied twice.
const TOKEN0 = 0x20000;
const TOKENS = 6000;
const tokenOf = (k, n) => {
  const c = TOKEN0 + 3 * (1000 * k + n);
  return String.fromCodePoint(c, c + 1, c + 2);
};
const isTokenChar = (cp) => cp >= TOKEN0 && cp < TOKEN0 + 3 * TOKENS;
/** 'k.n' for messages. */
const label = (tok) => {
  const i = (tok.codePointAt(0) - TOKEN0) / 3;
  return `${Math.floor(i / 1000)}.${i % 1000}`;
};

/** The whole tokens in s, with their UTF-16 spans. */
function tokensIn(s) {
  const out = [];
  for (let i = 0; i < s.length; i++) {
    const cp = s.codePointAt(i);
    if (isTokenChar(cp) && (cp - TOKEN0) % 3 === 0 && s.codePointAt(i + 2) === cp + 1 && s.codePointAt(i + 4) === cp + 2) {
      out.push({ tok: s.slice(i, i + 6), start: i, end: i + 6 });
      i += 5;
    }
  }
  return out;
}

/** tok -> how often it occurs in s; fails when s holds a broken token (token characters outside whole tokens). */
function tokenCounts(s, ctx) {
  const counts = new Map();
  const found = tokensIn(s);
  for (const { tok } of found) counts.set(tok, (counts.get(tok) || 0) + 1);
  const chars = [...s].filter((ch) => isTokenChar(ch.codePointAt(0))).length;
  assert.equal(chars, 3 * found.length, `${ctx}: a broken token in ${JSON.stringify(s)}`);
  return counts;
}

/** Every token of inserted appears exactly once in s, and nothing else does. */
function assertTokensOnce(s, inserted, ctx) {
  const counts = tokenCounts(s, ctx);
  const lost = inserted.filter((tok) => !counts.has(tok)).map(label);
  const twice = [...counts].filter(([, n]) => n > 1).map(([tok]) => label(tok));
  const alien = [...counts.keys()].filter((tok) => !inserted.includes(tok)).map(label);
  assert.deepEqual({ lost, twice, alien }, { lost: [], twice: [], alien: [] }, `${ctx}: tokens (${inserted.length} inserted)`);
}

/**
 * One random edit of t that never touches a token: insert a token or filler
 * between characters outside tokens, or delete a run of filler. Returns the
 * token inserted, if any. Uses insert/delete and sometimes replace().
 */
function randomEdit(r, t, k, st) {
  const v = t.value;
  const spans = tokensIn(v);
  const bounds = [0];
  for (const ch of v) bounds.push(bounds[bounds.length - 1] + ch.length);
  const inToken = (i) => spans.some((s) => s.start < i && i < s.end);
  const free = bounds.map((b, i) => i).filter((i) => !inToken(bounds[i]));
  const insert = (text) => {
    const at = bounds[r.pick(free)];
    if (r.chance(0.2)) t.replace(v.slice(0, at) + text + v.slice(at), at + text.length);
    else t.insert(at, text);
  };
  const x = r.next();
  if (x < 0.35) {
    const tok = tokenOf(k, st.n++);
    insert(tok);
    return tok;
  }
  if (x < 0.65 || v.length === 0) {
    let s = '';
    for (let i = 1 + r.int(4); i > 0; i--) s += r.pick(FILLER);
    insert(s);
    return undefined;
  }
  // Delete up to 6 code points of filler from a free boundary on.
  const i0 = r.pick(free);
  const want = 1 + r.int(6);
  let i = i0;
  while (i < bounds.length - 1 && i - i0 < want && !spans.some((s) => s.start <= bounds[i] && bounds[i] < s.end)) i++;
  if (i === i0) return undefined;
  const [a, b] = [bounds[i0], bounds[i]];
  if (r.chance(0.2)) t.replace(v.slice(0, a) + v.slice(b), a);
  else t.delete(a, b - a);
  return undefined;
}

// ---- clients ------------------------------------------------------------------

/**
 * A client for these tests with the shared text of room/item/field open;
 * records problems: the text's and the room's 'error' events, and any
 * 'change' whose ops do not take previous to value.
 */
async function textClient(t, url, { user, transport, room, item = 'note', field = 'body', ...opts }) {
  const c = makeClient(t, url, { user, transport, ...opts });
  const r = c.room(room);
  await r.ready;
  const txt = r.text(item, field);
  c.problems = [];
  c.r = r;
  c.txt = txt;
  c.changes = [];
  r.on('error', (e) => c.problems.push({ room: e.code, message: e.message }));
  txt.on('error', (e) => c.problems.push({ text: e.code, message: e.message }));
  txt.on('change', (ch) => {
    c.changes.push({ local: ch.local, reset: !!ch.reset, rollback: !!ch.rollback });
    let got;
    try {
      got = applyText(ch.previous, ch.ops);
    } catch (err) {
      got = `<${err.message}>`;
    }
    if (got !== ch.value) c.problems.push({ change: 'ops do not take previous to value', ch: JSON.stringify(ch).slice(0, 300) });
  });
  return c;
}

/** The room's view of the field equals the text's value (the optimistic overlay, 5.7 + the room's items). */
function assertView(c, ctx) {
  const view = c.r.get(c.txt.item)?.[c.txt.field];
  assert.equal(view ?? '', c.txt.value, `${ctx}: ${c.user}'s room.items shows the text`);
}

const describeClient = (c) =>
  `${c.user}/${c.transport || '-'}: ${c.status} ${c.r._state} pending ${c.r.pendingCount} ${c.txt.state}` +
  `${c.txt.doc.uncertain ? ' uncertain' : ''} rev ${c.txt.rev} len ${c.txt.value.length}`;

/** Waits until every client is online, joined, with nothing pending, and every text is at the same rev and value. */
async function quiescent(cs, what, ms = LONG) {
  const done = () => cs.every((c) => c.status === 'online' && c.r._state === 'joined' && c.r.pendingCount === 0 &&
      c.txt.state === 'synchronized' && !c.txt.doc.uncertain) &&
    cs.every((c) => c.txt.rev === cs[0].txt.rev && c.txt.value === cs[0].txt.value);
  try {
    await waitUntil(done, what, ms);
  } catch (err) {
    throw new Error(`${err.message}; the clients:\n  ${cs.map(describeClient).join('\n  ')}`);
  }
}

/** The server's text and revision of the field (backend API snapshot, 12.3). */
async function serverText(url, room, item = 'note', field = 'body') {
  const s = await serverSnapshot(url, room);
  const it = s.items[item];
  return { text: it ? it.fields[field] : undefined, rev: it?.revs?.[field] ?? 0, seq: s.seq };
}

/** Creates the item by a set (backend API): text ops do not create items (5.7). */
async function createItem(url, room, item = 'note') {
  const r = await api(url, 'POST', `/v1/rooms/${room}/ops`, { key: KEY, body: { op: { kind: 'set', item, fields: {} } } });
  assert.equal(r.status, 200, r.text);
}

/** Every client holds the server's text at the server's revision, in its text and its room view. */
async function assertConverged(url, room, cs, ctx) {
  const want = await serverText(url, room);
  for (const c of cs) {
    assert.equal(c.txt.value, want.text ?? '', `${ctx}: ${c.user} has the server's text`);
    assert.equal(c.txt.rev, want.rev, `${ctx}: ${c.user} is at the server's revision`);
    assert.equal(c.r.position.seq, want.seq, `${ctx}: ${c.user} is at the server's seq`);
    assertView(c, ctx);
    assert.deepEqual(c.problems, [], `${ctx}: ${c.user} reported no problem`);
  }
  return want;
}

/** Ops refused with code, summed over every node of a cluster (/metrics is per node). */
async function rejectedCount(srv, code) {
  let n = 0;
  for (const url of srv.nodes ? srv.nodes.map((x) => x.url) : [srv.url]) {
    const r = await api(url, 'GET', '/metrics', { key: KEY });
    assert.equal(r.status, 200, r.text);
    const m = new RegExp(`wsync_ops_rejected_total\\{code="${code}"\\} (\\d+)`).exec(r.text);
    n += m ? Number(m[1]) : 0;
  }
  return n;
}

/**
 * The server's OT, checked entry by entry (PROTOCOL.md 5.7): every text op
 * of the log is the op its client sent (the first one sent with its cid,
 * from c.sent: re-sends are unchanged) transformed over the log's entries
 * from the revision it was sent at to the one it was applied at. An op
 * decided on a replica that held an entry never committed (in a cluster, a
 * batch fenced out while the next one was being decided on top of it,
 * docs/CLUSTER.md) breaks this, and the clients' texts and rooms diverge.
 */
async function assertOtFollowsLog(url, room, cs, ctx) {
  const entries = (await history(url, room)).filter((e) => e.op?.kind === 'text');
  const byRev = new Map(entries.map((e) => [e.op.rev, e]));
  const sent = new Map();
  for (const c of cs) {
    for (const m of c.sent) if (m.type === 'op' && m.op?.kind === 'text' && !sent.has(m.cid)) sent.set(m.cid, m.op);
  }
  const wrong = [];
  for (const e of entries) {
    const mine = sent.get(e.cid);
    if (!mine) continue;
    let op = mine.ops;
    for (let rev = mine.rev; op && rev < e.op.rev; rev++) {
      const x = byRev.get(rev);
      op = x ? transform(op, x.op.ops, 'right') : null; // an entry trimmed away: not checked
    }
    if (op && JSON.stringify(normalize(op)) !== JSON.stringify(normalize(e.op.ops))) {
      wrong.push(`seq ${e.seq} (${e.cid}): sent at rev ${mine.rev} as ${JSON.stringify(mine.ops)}, ` +
        `applied at rev ${e.op.rev} as ${JSON.stringify(e.op.ops)}, the log makes it ${JSON.stringify(op)}`);
    }
  }
  assert.deepEqual(wrong.slice(0, 3), [], `${ctx}: ${wrong.length} text ops were not transformed over the log`);
}

// ---- (a) random concurrent typing with connections killed and cut -------------

// On a cluster this found writes decided on top of a batch that was then
// fenced out being committed by the next batch (fixed: each batch checks the
// room's head, store.h); assertOtFollowsLog names the op that would show it.
test('five clients type at random over ws, sse and poll while connections die: one text, every token once', async (t) => {
  const seed = SEED;
  const ctx = `seed ${seed} (WSYNC_TEXT_SEED)`;
  // A small outbox and catch-up limit: longer outages end in a failed resume
  // and a catch-up by snapshot, with an op possibly in flight (5.7, 6.2).
  const srv = await startSyncServer(t, [...SERVER_ARGS, '--max-outbox', '12K', '--max-catchup', '30']);
  const room = 'doc:fuzz';
  const seeded = await api(srv.url, 'POST', `/v1/rooms/${room}/ops`, {
    key: KEY, body: { op: { kind: 'set', item: 'note', fields: { body: 'seed text 😀 ', title: 'x' } } },
  });
  assert.equal(seeded.status, 200, seeded.text);
  const transports = ['ws', 'sse', 'poll', 'ws', 'sse'];
  const proxies = await Promise.all(transports.map(() => startProxy(t, srv.port)));
  const cs = await Promise.all(transports.map((transport, k) =>
    textClient(t, proxies[k].url, { user: `u${k}`, transport, room })));
  for (const c of cs) assert.equal(c.txt.value, 'seed text 😀 ', `${ctx}: the text starts as the snapshot's`);
  const N = scale(120, 50);
  const inserted = [];
  const r = rng(seed);
  const stats = { kills: 0, outages: 0, clean: 0 };
  let typing = cs.length;

  const typist = async (c, k) => {
    const rr = rng(seed * 31 + k);
    const st = { n: 0 };
    try {
      for (let i = 0; i < N; i++) {
        const tok = randomEdit(rr, c.txt, k, st);
        if (tok) inserted.push(tok);
        assertView(c, `${ctx} client ${k} edit ${i}`);
        await sleep(rr.int(40));
      }
    } finally {
      typing--; // a failed typist must not keep the chaos going
    }
  };
  const chaos = async () => {
    while (typing > 0) {
      await sleep(20 + r.int(80));
      const k = r.int(cs.length);
      const c = cs[k];
      const p = proxies[k];
      const x = r.next();
      if (x < 0.4) {
        p.cut(); // the connection dies; the client reconnects at once
        stats.kills++;
      } else if (x < 0.75) {
        p.block(); // an outage: killed, and no way back for a while
        p.cut();
        stats.outages++;
        await sleep(100 + r.int(400));
        p.unblock();
      } else {
        // A clean offline period: the transport is closed in order (as when
        // the browser reports 'offline'), the network stays down a while.
        p.block();
        c._onBrowserOffline();
        stats.clean++;
        await sleep(100 + r.int(400));
        p.unblock();
        c._onBrowserOnline();
      }
    }
  };
  // A divergence shows first in a typist's check; the log then says which op.
  const typed = await Promise.all([...cs.map(typist), chaos()]).then(() => null, (err) => err);
  for (const p of proxies) p.unblock();
  if (typed) {
    await assertOtFollowsLog(srv.url, room, cs, ctx);
    throw typed;
  }
  await quiescent(cs, `${ctx}: convergence`);
  await assertOtFollowsLog(srv.url, room, cs, ctx);
  t.diagnostic(`${ctx}: ${inserted.length} tokens, rev ${cs[0].txt.rev}, ${JSON.stringify(stats)}, ` +
    `resets ${cs.map((c) => c.changes.filter((x) => x.reset).length).join('/')}, ` +
    `welcomes ${cs.map((c) => c.welcomes.map((w) => (w.resumed ? 'r' : 'n')).join('')).join('/')}`);

  const want = await assertConverged(srv.url, room, cs, ctx);
  assertTokensOnce(want.text, inserted, ctx);
  for (const c of cs) assert.equal(c.r.get('note').title, 'x', `${ctx}: the other field is untouched`);
  // A newcomer reads the same text by snapshot.
  const fresh = await textClient(t, srv.url, { user: 'late', transport: 'ws', room });
  assert.equal(fresh.txt.value, want.text, `${ctx}: a fresh client`);
  assert.equal(fresh.txt.rev, want.rev);
  // Each accepted text op is one log entry with its own cid.
  const entries = (await history(srv.url, room)).filter((e) => e.op?.kind === 'text');
  // Revisions start at the item's gen (5.7), which the first entry applied to.
  const gen = entries[0].op.rev;
  assert.equal(entries.length, want.rev - gen, `${ctx}: one entry per revision`);
  assert.equal(new Set(entries.map((e) => e.cid)).size, entries.length, `${ctx}: no cid twice in the log`);
  assert.deepEqual(entries.map((e) => e.op.rev), Array.from({ length: entries.length }, (_, i) => gen + i), `${ctx}: revisions in order`);
});

// ---- (b) the server crashes with edits pending ----------------------------------

test('the server is killed (SIGKILL) and restarted while three clients type: converged, every token once', async (t) => {
  const ctx = `seed ${SEED}`;
  const h = await restartableServer(t, SERVER_ARGS);
  const room = 'doc:crash';
  await createItem(h.url, room);
  const cs = await Promise.all(['ws', 'sse', 'poll'].map((transport, k) =>
    textClient(t, h.url, { user: `w${k}`, transport, room })));
  const inserted = [];
  const N1 = scale(40, 20);
  const N2 = scale(20, 10);
  let edits = 0;
  const type = async (n, phase) => Promise.all(cs.map(async (c, k) => {
    const rr = rng(SEED * 7 + k + phase);
    const st = (c.st ||= { n: 0 });
    for (let i = 0; i < n; i++) {
      const tok = randomEdit(rr, c.txt, k, st);
      if (tok) inserted.push(tok);
      edits++;
      await sleep(rr.int(4));
    }
  }));
  const first = type(N1, 0);
  // The crash lands in the middle of the typing.
  await waitUntil(() => edits >= (cs.length * N1) / 2, 'half of the first edits');
  const unconfirmed = cs.map((c) => c.txt.state);
  await h.kill();
  await first;
  await waitUntil(() => cs.every((c) => c.status !== 'online'), 'every client noticed the crash');
  await type(N2, 1); // typed while the server is down
  assert.ok(cs.every((c) => c.txt.state !== 'synchronized'), 'edits wait for the server');
  await h.start();
  await quiescent(cs, `${ctx}: convergence after the restart`);
  t.diagnostic(`${ctx}: states at the kill ${unconfirmed.join('/')}, ${inserted.length} tokens, rev ${cs[0].txt.rev}`);
  const want = await assertConverged(h.url, room, cs, ctx);
  assertTokensOnce(want.text, inserted, ctx);
  for (const c of cs) assert.ok(c.welcomes.some((w) => !w.resumed) && c.welcomes.length >= 2, `${c.user}: a new session after the restart`);
  const entries = (await history(h.url, room)).filter((e) => e.op?.kind === 'text');
  assert.equal(new Set(entries.map((e) => e.cid)).size, entries.length, 'no cid twice in the log');
});

// ---- (c) rev_too_old: more than 1024 ops while a client is away ------------------

/** A raw session that appends n ops to the field at once, each on the revision before it (no transform needed). */
async function hammer(url, room, n, item = 'note', field = 'body') {
  const w = await SyncClient.connect(url.replace(/^http/, 'ws'), { token: token('hammer'), device: `hammer-${process.pid}-${Date.now()}` });
  const j = await w.request({ type: 'join', room });
  let rev = j.snapshot?.items?.[item]?.revs?.[field] ?? 0;
  const acks = [];
  for (let i = 0; i < n; i++) {
    acks.push(w.request({ type: 'op', room, cid: `h${process.pid}.${Date.now()}.${i}`, op: { kind: 'text', item, field, rev: rev++, ops: ['y'] } }));
  }
  const answers = await Promise.all(acks);
  w.ws.close();
  assert.deepEqual(answers.filter((a) => a.type !== 'ack').slice(0, 3), [], 'the hammer ops are accepted');
  return rev;
}

for (const variant of ['resume', 'snapshot']) {
  test(`an op sent at a revision more than 1024 ops old is refused (rev_too_old) and rebased, after a ${variant}`, async (t) => {
    const ctx = `${variant}, seed ${SEED}`;
    // snapshot: the outbox cannot hold what was missed (the resume fails) and
    // the catch-up is a snapshot; resume: the outbox replays it all (1100 ops
    // of ~150 bytes: more than the room's default resume ring of 64K holds,
    // so the ring is made as large as the default outbox).
    const extra = variant === 'snapshot' ? ['--max-outbox', '64K', '--max-catchup', '100'] : ['--resume-ring', '1M'];
    const srv = await startSyncServer(t, [...SERVER_ARGS, ...extra]);
    // On a cluster xavier's WebSocket stays on one node, where a resume can
    // find his session (PROTOCOL.md 3.5).
    const proxy = await startProxy(t, CLUSTER ? srv.nodes[0].port : srv.port);
    const room = `doc:old-${variant}`;
    await createItem(srv.url, room);
    const x = await textClient(t, proxy.url, { user: 'xavier', transport: 'ws', room });
    const z = await textClient(t, srv.url, { user: 'zoe', transport: 'sse', room });
    const inserted = [tokenOf(1, 0), tokenOf(2, 0)];
    x.txt.insert(0, `${inserted[0]} start `);
    z.txt.insert(0, inserted[1]);
    await quiescent([x, z], `${ctx}: first edits`);
    const rev0 = x.txt.rev;
    const rejectedBefore = await rejectedCount(srv, 'rev_too_old');

    // Cut off, and an edit sent into the dead connection before the client
    // notices: in flight at rev0, never received by the server.
    proxy.block();
    proxy.cut();
    const sentAt = x.sent.length;
    inserted.push(tokenOf(1, 1));
    x.txt.insert(x.txt.value.length, inserted.at(-1));
    const lost = x.sent.slice(sentAt).find((m) => m.type === 'op');
    assert.ok(lost, `${ctx}: the op went to the transport`);
    assert.equal(lost.op.rev, rev0);
    await waitUntil(() => x.status !== 'online', 'xavier offline');
    // More edits offline, buffered behind it; the others write 1100 ops.
    inserted.push(tokenOf(1, 2));
    x.txt.insert(0, inserted.at(-1));
    x.txt.insert(inserted.at(-1).length, ' ü👍 ');
    const N = 1100;
    const revAfter = await hammer(srv.url, room, N);
    inserted.push(tokenOf(2, 1));
    z.txt.insert(0, inserted.at(-1));
    assert.equal(x.txt.rev, rev0, 'xavier saw none of it');

    const sentBefore = x.sent.length;
    proxy.unblock();
    await quiescent([x, z], `${ctx}: convergence`);
    const want = await assertConverged(srv.url, room, [x, z], ctx);
    assertTokensOnce(want.text, inserted, ctx);
    assert.equal([...want.text].filter((ch) => ch === 'y').length, N, `${ctx}: every hammer insert once`);

    const after = x.sent.slice(sentBefore).filter((m) => m.type === 'op');
    assert.equal(after[0].cid, lost.cid, `${ctx}: the op in flight is re-sent first, same cid`);
    assert.deepEqual(after[0].op, lost.op, `${ctx}: unchanged`);
    assert.equal(after.filter((m) => m.cid === lost.cid).length, 1, `${ctx}: once on the new connection`);
    const rebased = after.find((m) => m.cid !== lost.cid);
    assert.ok(rebased && rebased.op.rev >= revAfter, `${ctx}: then the rebased edits as a new op at a recent rev (${rebased?.op.rev} >= ${revAfter})`);
    assert.ok(await rejectedCount(srv, 'rev_too_old') > rejectedBefore, `${ctx}: the server said rev_too_old`);
    const cids = new Set((await history(srv.url, room)).map((e) => e.cid));
    assert.ok(!cids.has(lost.cid), `${ctx}: the refused op is not in the log`);
    const w = x.welcomes.at(-1);
    assert.equal(w.resumed, variant === 'resume', `${ctx}: welcome.resumed`);
    if (variant === 'snapshot') assert.ok(x.changes.some((ch) => ch.reset), `${ctx}: the text was reset from a snapshot`);
  });
}

// ---- (d) set and del of the field while others type ------------------------------

test('a set, a del and a set of the field by another client while two type: all converge; later tokens stay', async (t) => {
  const ctx = `seed ${SEED}`;
  const srv = await startSyncServer(t, SERVER_ARGS);
  const room = 'doc:overwrite';
  await createItem(srv.url, room);
  const a = await textClient(t, srv.url, { user: 'ann', transport: 'ws', room });
  const b = await textClient(t, srv.url, { user: 'ben', transport: 'poll', room });
  const c = await textClient(t, srv.url, { user: 'cat', transport: 'sse', room });
  const inserted = [];
  let typing = 2;
  const typist = async (cl, k) => {
    const rr = rng(SEED * 13 + k);
    const st = { n: 0 };
    try {
      for (let i = 0; i < scale(80, 40); i++) {
        const tok = randomEdit(rr, cl.txt, k, st);
        if (tok) inserted.push(tok);
        await sleep(rr.int(6));
      }
    } finally {
      typing--;
    }
  };
  const writes = [];
  const overwriter = async () => {
    await sleep(40);
    writes.push(await c.r.set('note', { body: 'SET-1 ⚡ ' }));
    await sleep(60);
    writes.push(await c.r.delete('note'));
    await sleep(60);
    writes.push(await c.r.set('note', { body: 'SET-2 ', other: 1 }));
    while (typing > 0) await sleep(10);
  };
  await Promise.all([typist(a, 1), typist(b, 2), overwriter()]);
  await quiescent([a, b, c], `${ctx}: convergence`);
  // Between the del and the second set the item does not exist: edits made
  // then are refused (not_found) and rolled back, the del wins (5.7).
  for (const cl of [a, b, c]) {
    assert.deepEqual(cl.problems.filter((p) => (p.text ?? p.room) !== 'not_found'), [], `${ctx}: ${cl.user}: only not_found`);
    cl.problems.length = 0;
  }
  let want = await assertConverged(srv.url, room, [a, b, c], ctx);
  // Wiped or not, no token twice and none broken.
  for (const [tok, n] of tokenCounts(want.text, ctx)) assert.equal(n, 1, `${ctx}: ${label(tok)} once`);
  for (const cl of [a, b]) {
    assert.ok(cl.changes.some((ch) => ch.reset && !ch.local), `${ctx}: ${cl.user}'s text was reset by the overwrites`);
  }
  assert.equal(writes.length, 3);
  // Typing goes on after the overwrites: these tokens must all stay.
  const later = [tokenOf(1, 900), tokenOf(2, 900), tokenOf(3, 900)];
  a.txt.insert(0, later[0]);
  b.txt.insert(b.txt.value.length, later[1]);
  c.txt.insert(0, later[2]);
  await quiescent([a, b, c], `${ctx}: convergence after the last edits`);
  want = await assertConverged(srv.url, room, [a, b, c], ctx);
  const counts = tokenCounts(want.text, ctx);
  for (const tok of later) assert.equal(counts.get(tok), 1, `${ctx}: ${label(tok)} once`);
  assert.equal(a.r.get('note').other, 1, 'the set\'s other field');
});

// ---- (e) bad text ops on a raw socket -----------------------------------------

test('bad text ops get clear errors and leave the connection usable', async (t) => {
  const srv = await startSyncServer(t, SERVER_ARGS);
  const room = 'doc:bad';
  const c = await SyncClient.connect(srv.wsUrl, { token: token('mallory'), device: 'm1' });
  await c.request({ type: 'join', room });
  let n = 0;
  const send = (op) => c.request({ type: 'op', room, cid: `bad.${++n}`, op });
  // Text ops edit items, they do not create them: a set does (5.7).
  const missing = await send({ kind: 'text', item: 'a', field: 'f', rev: 0, ops: ['x'] });
  assert.deepEqual([missing.code, missing.item, missing.field], ['not_found', 'a', 'f'], JSON.stringify(missing));
  const created = await send({ kind: 'set', item: 'a', fields: {} });
  assert.equal(created.type, 'ack');
  // A field that never held text is at the item's gen, the seq that created
  // it, and may be addressed as 0 (5.7).
  const gen = created.seq;
  const ok = await send({ kind: 'text', item: 'a', field: 'f', rev: 0, ops: ['héllo😀'] });
  assert.deepEqual([ok.type, ok.rev], ['ack', gen + 1]);
  const R1 = ok.rev;
  assert.equal((await send({ kind: 'set', item: 'b', fields: { num: 5 } })).type, 'ack');
  const text = (rev, ops, more = {}) => ({ kind: 'text', item: 'a', field: 'f', rev, ops, ...more });
  const cases = [
    ['ops not an array', text(R1, 'x'), 'invalid_field', 'op.ops'],
    ['ops an object', text(R1, { 0: 'x' }), 'invalid_field', 'op.ops'],
    ['retain 0', text(R1, [0, 'x']), 'invalid_field', 'op.ops'],
    ['negative retain', text(R1, [-1]), 'invalid_field', 'op.ops'],
    ['fractional retain', text(R1, [1.5, 'x']), 'invalid_field', 'op.ops'],
    ['empty insert', text(R1, ['']), 'invalid_field', 'op.ops'],
    ['delete of 0', text(R1, [{ d: 0 }]), 'invalid_field', 'op.ops'],
    ['delete of a string', text(R1, [{ d: 'hé' }]), 'invalid_field', 'op.ops'],
    ['null component', text(R1, [null]), 'invalid_field', 'op.ops'],
    ['nested array', text(R1, [[1]]), 'invalid_field', 'op.ops'],
    ['unknown object', text(R1, [{ i: 'x' }]), 'invalid_field', 'op.ops'],
    ['retain past the end (6 code points, text has 6)', text(R1, [7, 'x']), 'invalid_field', 'op.ops'],
    ['delete past the end', text(R1, [3, { d: 4 }]), 'invalid_field', 'op.ops'],
    ['too many components', text(R1, Array(9000).fill(1)), 'too_large', 'op.ops'],
    ['negative rev', text(-1, ['x']), 'bad_request', 'op.rev'],
    ['fractional rev', text(0.5, ['x']), 'bad_request', 'op.rev'],
    ['string rev', text('1', ['x']), 'bad_request', 'op.rev'],
    ['no rev', { kind: 'text', item: 'a', field: 'f', ops: ['x'] }, 'bad_request', 'op.rev'],
    ['no field', { kind: 'text', item: 'a', rev: 1, ops: ['x'] }, 'bad_request', 'op.field'],
    ['empty field name', { kind: 'text', item: 'a', field: '', rev: 1, ops: ['x'] }, 'invalid_field', 'op.field'],
    ['no item', { kind: 'text', field: 'f', rev: 1, ops: ['x'] }, 'bad_request', 'op.item'],
    ['base on a text op', text(R1, ['x'], { base: 1 }), 'bad_request', 'op.base'],
    ['a field that is not a string', { kind: 'text', item: 'b', field: 'num', rev: 0, ops: ['x'] }, 'invalid_field', 'op.field'],
  ];
  for (const [what, op, code, field] of cases) {
    const e = await send(op);
    assert.equal(e.type, 'error', `${what}: ${JSON.stringify(e)}`);
    assert.equal(e.code, code, `${what}: ${JSON.stringify(e)}`);
    assert.equal(e.field, field, `${what}: field`);
    assert.equal(e.for, 'op');
    assert.equal(e.cid, `bad.${n}`, `${what}: cid`);
    assert.ok(e.message.length > 0);
  }
  // A rev beyond the field's: rev_too_old with the text to rebase on.
  const beyond = await send(text(R1 + 4, ['x']));
  assert.deepEqual([beyond.code, beyond.item, beyond.field, beyond.rev, beyond.text], ['rev_too_old', 'a', 'f', R1, 'héllo😀']);
  // A text op inside a batch.
  const batch = await send({ kind: 'batch', ops: [{ kind: 'set', item: 'c', fields: { v: 1 } }, text(R1, ['x'])] });
  assert.equal(batch.code, 'bad_request', JSON.stringify(batch));
  assert.equal(batch.index, 1, 'the failing sub-op');
  // Lone surrogates are legal JSON escapes but not Unicode: the message is refused.
  for (const s of ['\\ud800', 'a\\udc00', '\\ud83d']) {
    const raw = `{"type":"op","id":"raw","room":"${room}","cid":"raw.${s.length}","op":{"kind":"text","item":"a","field":"f","rev":1,"ops":["${s}"]}}`;
    const before = c.log.length;
    c.ws.send(raw);
    await waitUntil(() => c.log.length > before, 'an answer to the lone surrogate');
    assert.equal(c.log.at(-1).code, 'bad_json', `lone surrogate ${s}: ${JSON.stringify(c.log.at(-1))}`);
  }
  // Nothing changed, and the connection still works.
  assert.equal((await c.request({ type: 'ping' })).type, 'pong');
  const good = await send(text(R1, [6, '!']));
  assert.deepEqual([good.type, good.rev], ['ack', R1 + 1], JSON.stringify(good));
  const s = await serverSnapshot(srv.url, room);
  assert.deepEqual(s.items.a, { version: good.seq, fields: { f: 'héllo😀!' }, revs: { f: R1 + 1 } });
  assert.equal(s.items.c, undefined, 'the refused batch left nothing');
  assert.ok(c.open, 'still open');
  c.ws.close();
});

// ---- (f) the client API: one object per field, locks, textareas -----------------

test('room.text: one object per field; textareas bound to it converge; a locked item refuses and rolls back', async (t) => {
  const ctx = `seed ${SEED}`;
  const srv = await startSyncServer(t, SERVER_ARGS);
  const room = 'doc:api';
  await createItem(srv.url, room);
  const a = await textClient(t, srv.url, { user: 'ada', transport: 'ws', room });
  // On a cluster bo's requests land on any node: locks are cluster-wide.
  const b = await textClient(t, srv.url, { user: 'bo', transport: 'sse', room });
  assert.equal(a.r.text('note', 'body'), a.txt, 'the same object for the same field');
  assert.notEqual(a.r.text('note', 'title'), a.txt, 'another for another field');
  assert.throws(() => a.r.text('', 'body'), TypeError);

  const [ta, tb] = [new FakeTextarea(), new FakeTextarea()];
  const unbindA = a.txt.bind(ta);
  b.txt.bind(tb);
  const r = rng(SEED);
  for (let i = 0; i < 40; i++) {
    const [ta1, c] = r.chance(0.5) ? [ta, a] : [tb, b];
    const bounds = [0];
    for (const ch of ta1.value) bounds.push(bounds[bounds.length - 1] + ch.length);
    ta1.type(r.pick(bounds), r.pick(['ab', '😀', 'é', '中x', ' ', '🇫🇷']));
    assert.equal(ta1.value, c.txt.value, `${ctx}: step ${i}: the textarea shows the text`);
    await sleep(r.int(5));
  }
  await quiescent([a, b], `${ctx}: textareas`);
  assert.equal(ta.value, a.txt.value);
  assert.equal(tb.value, b.txt.value);
  await assertConverged(srv.url, room, [a, b], ctx);

  // The item locked by ada: bo's edit is refused (locked) and undone.
  await a.r.lock('note', { ttl: 10000 });
  await waitUntil(() => b.r.locks.has('note'), 'bo sees the lock');
  const before = b.txt.value;
  const errs = [];
  b.txt.on('error', (e) => errs.push(e));
  b.problems.length = 0;
  tb.type(0, 'Z');
  assert.equal(b.txt.value, `Z${before}`, 'applied at once');
  await waitUntil(() => errs.length === 1, 'the refusal');
  assert.deepEqual([errs[0].code, errs[0].item, errs[0].field], ['locked', 'note', 'body']);
  assert.equal(b.txt.value, before, 'rolled back');
  assert.equal(tb.value, before, 'in the textarea too');
  assert.ok(b.changes.at(-1).rollback);
  assert.deepEqual(b.problems.map((p) => p.room || p.text), ['locked', 'locked'], 'reported on the room and the text');
  b.problems.length = 0;
  a.txt.insert(0, '🔒'); // the holder writes (with its fence)
  await quiescent([a, b], `${ctx}: the holder's edit`);
  assert.equal(a.sent.filter((m) => m.type === 'op' && m.op.kind === 'text').at(-1).op.fence !== undefined, true, 'with the fence');
  await assertConverged(srv.url, room, [a, b], ctx);

  // close(): unbound, later edits throw; the room forgets it, a new call gives a new one.
  unbindA();
  assert.equal(ta.listenerCount, 0);
  a.txt.close();
  assert.throws(() => a.txt.insert(0, 'x'), (e) => e.code === 'closed');
  const again = a.r.text('note', 'body');
  assert.notEqual(again, a.txt, 'a settled, closed text is forgotten');
  assert.equal(again.value, b.txt.value);
});

// ---- orderings the server produces by chance, replayed by hand --------------------

function handRoom(body, rev, seq) {
  const c = fakeClient();
  const r = new Room(c, 'doc:hand');
  c._rooms.set(r.name, r);
  r._onJoined({
    type: 'joined', room: r.name, epoch: 'e1', seq, recovered: false, presence: [], locks: [],
    snapshot: { items: { note: { version: seq, fields: { body }, revs: { body: rev } } } },
  });
  const t = r.text('note', 'body');
  const values = [];
  t.on('change', (ch) => values.push(ch.value));
  return { c, r, t, values, ops: () => c.sent.filter((m) => m.type === 'op') };
}

const bob = (seq, op, cid = `bob.${seq}`) => ({ type: 'op', room: 'doc:hand', seq, from: { user: 'bob', device: 'b' }, cid, op });
const mine = (seq, op, cid) => ({ type: 'op', room: 'doc:hand', seq, from: { user: 'alice', device: 'dev1' }, cid, op });

test('by hand: a rev_too_old that overtakes a del (revisions start again at 0) is not undone by the entries before the del', () => {
  const { r, t, values, ops } = handRoom('abc', 5, 10);
  t.insert(3, 'X');
  const first = ops().at(-1);
  assert.equal(first.op.rev, 5);
  // The server sequenced bob's op (11) and a del (12), then refused ours
  // with the text after the del; the error comes before both broadcasts.
  r._onOpError(r._pending.find((p) => p.cid === first.cid), {
    type: 'error', code: 'rev_too_old', message: 'beyond', room: r.name, cid: first.cid, item: 'note', field: 'body', text: '', rev: 0,
  });
  assert.equal(t.value, 'X', 'rebased on the empty text');
  const second = ops().at(-1);
  assert.deepEqual([second.op.rev, second.op.ops], [0, ['X']], 'sent anew at revision 0');
  r._onEntry(bob(11, { kind: 'text', item: 'note', field: 'body', rev: 5, ops: ['Q'] }));
  assert.equal(t.value, 'X', "bob's op from before the del is not applied to the text after it");
  assert.equal(r.get('note').body, 'X', 'the view shows the text');
  r._onEntry(bob(12, { kind: 'del', item: 'note' }));
  assert.equal(t.value, 'X');
  r._onAck({ type: 'ack', room: r.name, cid: second.cid, seq: 13, rev: 1 });
  r._onEntry(mine(13, { kind: 'text', item: 'note', field: 'body', rev: 0, ops: ['X'] }, second.cid));
  assert.deepEqual([t.value, t.rev, t.state, r.pendingCount], ['X', 1, 'synchronized', 0]);
  assert.deepEqual(r.get('note'), { body: 'X' });
  assert.deepEqual(values, ['abcX', 'X'], 'never back to a text from before the del');
  assert.equal(ops().length, 2);
});

test('by hand: a del an error said was coming that never comes: the room fetches a snapshot, and the text follows it', async () => {
  const { c, r, t, ops } = handRoom('abc', 5, 10);
  const joins = () => c.sent.filter((m) => m.type === 'join');
  const before = joins().length;
  t.insert(3, 'X');
  const first = ops().at(-1);
  // A refusal with a revision below the confirmed one: a del is said to be
  // on its way, and the field's entries wait for it. It never comes.
  r._onOpError(r._pending.find((p) => p.cid === first.cid), {
    type: 'error', code: 'rev_too_old', message: 'beyond', room: r.name, cid: first.cid, item: 'note', field: 'body', text: '', rev: 0,
  });
  const second = ops().at(-1); // sent anew on the empty text
  assert.deepEqual([second.op.rev, second.op.ops], [0, ['X']]);
  r._onEntry(bob(11, { kind: 'set', item: 'other', fields: { a: 1 } }));
  r._onAck({ type: 'ack', room: r.name, cid: second.cid, seq: 13, rev: 1 });
  assert.equal(joins().length, before, 'not at once');
  await waitUntil(() => joins().length === before + 1, 'a join for a snapshot once the del is overdue', 10000);
  assert.equal(joins().at(-1).since, undefined, 'without since: a snapshot');
  r._onJoined({
    type: 'joined', room: r.name, epoch: 'e1', seq: 14, recovered: false, presence: [], locks: [],
    snapshot: { items: { note: { version: 14, fields: { body: 'Xyz' }, revs: { body: 3 } } } },
  });
  assert.deepEqual([t.value, t.rev], ['Xyz', 3], 'the text is the snapshot\'s');
  r._onEntry(bob(15, { kind: 'text', item: 'note', field: 'body', rev: 3, ops: [3, '!'] }));
  assert.equal(t.value, 'Xyz!', "the field's entries apply again");
  assert.equal(joins().length, before + 1, 'once');
  r._timers.stop();
});

test('by hand: after a reconnect, a snapshot already holding the op in flight; the duplicate ack leaves it once', () => {
  const { c, r, t, values, ops } = handRoom('hello', 3, 7);
  t.insert(5, ' world');
  t.insert(0, '>'); // buffered behind the op in flight
  const inflight = ops().at(-1);
  assert.equal(ops().length, 1);
  // The connection dies after the server applied the op (seq 8, rev 4);
  // the new session's join gets a snapshot.
  r._onDisconnect();
  c._gen++;
  r._sendJoin();
  r._onJoined({
    type: 'joined', room: r.name, epoch: 'e1', seq: 8, recovered: false, presence: [], locks: [],
    snapshot: { items: { note: { version: 8, fields: { body: 'hello world' }, revs: { body: 4 } } } },
  });
  assert.ok(t.doc.uncertain, 'in flight, maybe in the snapshot');
  const resent = ops().at(-1);
  assert.equal(ops().length, 2, 're-sent once on the new connection');
  assert.deepEqual(resent, inflight, 'unchanged, same cid');
  assert.equal(r.get('note').body, t.value, 'the view shows the text');
  r._onAck({ type: 'ack', room: r.name, cid: inflight.cid, seq: 8, duplicate: true });
  assert.equal(t.value, '>hello world', 'in the snapshot: once');
  const buffered = ops().at(-1);
  assert.deepEqual([buffered.op.rev, buffered.op.ops], [4, ['>']], 'then the buffer, on the snapshot revision');
  r._onAck({ type: 'ack', room: r.name, cid: buffered.cid, seq: 9, rev: 5 });
  r._onEntry(mine(9, buffered.op, buffered.cid));
  assert.deepEqual([t.value, t.rev, t.state, r.pendingCount], ['>hello world', 5, 'synchronized', 0]);
  assert.deepEqual(r.get('note'), { body: '>hello world' });
  assert.equal(values.at(-1), '>hello world');
});

test('by hand: a text entry that does not apply to the local copy makes the room fetch a snapshot', () => {
  const { c, r, t } = handRoom('abc', 1, 4);
  const joins = () => c.sent.filter((m) => m.type === 'join');
  const before = joins().length;
  r._onEntry(bob(5, { kind: 'text', item: 'note', field: 'body', rev: 1, ops: [10, '!'] })); // past the end of 'abc'
  const join = joins().at(-1);
  assert.equal(joins().length, before + 1, 'joined again');
  assert.equal(join.since, undefined, 'without since: a snapshot');
  r._onJoined({
    type: 'joined', room: r.name, epoch: 'e1', seq: 5, recovered: false, presence: [], locks: [],
    snapshot: { items: { note: { version: 5, fields: { body: 'abcdefghij!' }, revs: { body: 2 } } } },
  });
  assert.deepEqual([t.value, t.rev, r.get('note').body], ['abcdefghij!', 2, 'abcdefghij!']);
  assert.equal(joins().length, before + 1, 'once');
});

test('by hand: rate_limited and internal re-send the op in flight unchanged; the text keeps the edit', async () => {
  const { r, t, ops } = handRoom('abc', 1, 4);
  t.insert(0, '>');
  t.insert(0, '<'); // buffered
  const first = ops().at(-1);
  const rec = () => r._pending.find((p) => p.cid === first.cid);
  r._onOpError(rec(), { type: 'error', code: 'rate_limited', message: 'slow down', cid: first.cid, retry_after: 20 });
  assert.equal(t.value, '<>abc', 'not rolled back');
  await waitUntil(() => ops().length === 2, 'the retry');
  r._onOpError(rec(), { type: 'error', code: 'internal', message: 'storage', cid: first.cid });
  await waitUntil(() => ops().length === 3, 'the second retry', 3000);
  assert.ok(ops().every((m) => m.cid === first.cid && m.op.rev === 1), 'the same op and cid each time');
  r._onAck({ type: 'ack', room: r.name, cid: first.cid, seq: 5, rev: 2 });
  const next = ops().at(-1);
  assert.deepEqual([next.op.rev, next.op.ops], [2, ['<']], 'then the buffer');
  assert.equal(t.value, '<>abc');
});
