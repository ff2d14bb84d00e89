#!/usr/bin/env node
// webhook-receiver.mjs -- a receiver for wsync's webhooks (docs/HOOKS.md):
// it verifies each request's signature and refuses replays, applies the log
// entries of every room in seq order, skips the ones it already has (wsync
// delivers at least once), and mirrors each room's document into a JSON file.
//
//   WSYNC_WEBHOOK_SECRET=... node examples/webhook-receiver.mjs --port 8787 --dir ./mirror
//   wsync serve --webhook http://127.0.0.1:8787/ --webhook-secret ...
//
// <dir>/<room>.json holds {room, epoch, seq, items: {id: {fields, version}},
// messages: [the last 100 stored publishes], gaps: [...]}. It is written
// (through a rename) before the 2xx answer, so an entry acknowledged is an
// entry mirrored; seq in the file is what makes a re-delivery a no-op.
//
// Options: --port N (0: any; the port is printed), --host H, --dir DIR,
// --tolerance S (largest clock difference accepted, 300), --journal FILE
// (one JSON line per entry or event received, with "dup" for re-deliveries),
// --answer-delay MS (wait before answering: for tests).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const MAX_BODY = 64 * 1024 * 1024;
const KEEP_MESSAGES = 100;

/**
 * Checks the Wsync-Signature of a request: "v1=" + hex HMAC-SHA256 of
 * `${timestamp}.${body}` with the shared secret, and a timestamp within
 * toleranceS of now. Returns null when valid, else why not.
 */
export function verifySignature(secret, headers, body, toleranceS = 300, nowS = Date.now() / 1000) {
  const ts = headers['wsync-timestamp'];
  const sig = headers['wsync-signature'];
  if (!ts || !/^\d+$/.test(ts)) return 'no Wsync-Timestamp';
  if (!sig || !sig.startsWith('v1=')) return 'no Wsync-Signature v1';
  if (Math.abs(nowS - Number(ts)) > toleranceS) return 'timestamp too far from now (a replay?)';
  const want = createHmac('sha256', secret).update(`${ts}.`).update(body).digest();
  const got = Buffer.from(sig.slice(3), 'hex');
  if (got.length !== want.length || !timingSafeEqual(got, want)) return 'bad signature';
  return null;
}

/** Applies one broadcast (docs/PROTOCOL.md 5.4, 5.7, 7) to a room mirror. */
function applyMessage(doc, seq, msg) {
  if (msg.type === 'message') {
    doc.messages.push({ seq, from: msg.from, data: msg.data, ts: msg.ts });
    if (doc.messages.length > KEEP_MESSAGES) doc.messages.shift();
    return;
  }
  const apply = (op) => {
    if (op.kind === 'set') {
      const it = doc.items[op.item] ?? { fields: {}, version: 0 };
      for (const [k, v] of Object.entries(op.fields)) {
        if (v === null) delete it.fields[k];
        else it.fields[k] = v;
      }
      it.version = seq;
      doc.items[op.item] = it;
    } else if (op.kind === 'del') {
      delete doc.items[op.item];
    } else if (op.kind === 'batch') {
      for (const sub of op.ops) apply(sub);
    } else if (op.kind === 'text') {
      const it = doc.items[op.item];
      if (!it) return;
      it.fields[op.field] = applyText(it.fields[op.field] ?? '', op.ops);
      it.version = seq;
    }
  };
  apply(msg.op);
}

/** ot-text-unicode components over code points: n retains, "s" inserts, {d:n} deletes. */
function applyText(text, ops) {
  const cps = [...text];
  const out = [];
  let i = 0;
  for (const c of ops) {
    if (typeof c === 'number') {
      out.push(...cps.slice(i, i + c));
      i += c;
    } else if (typeof c === 'string') {
      out.push(c);
    } else {
      i += c.d;
    }
  }
  out.push(...cps.slice(i));
  return out.join('');
}

/**
 * A receiver: an http.Server (not listening yet) that mirrors rooms into
 * dir. Rooms are loaded from their files on first use, so a restarted
 * receiver dedupes against what it stored before.
 */
export function createReceiver({ secret, dir, toleranceS = 300, journal = null, answerDelayMs = 0, log = console.error }) {
  if (!secret) throw new Error('a secret is required (the --webhook-secret of wsync)');
  mkdirSync(dir, { recursive: true });
  const rooms = new Map();
  const fileOf = (room) => path.join(dir, `${encodeURIComponent(room)}.json`);
  const load = (room) => {
    if (!rooms.has(room)) {
      let doc;
      try {
        doc = JSON.parse(readFileSync(fileOf(room), 'utf8'));
      } catch {
        doc = { room, epoch: null, seq: 0, items: {}, messages: [], gaps: [] };
      }
      rooms.set(room, doc);
    }
    return rooms.get(room);
  };
  const save = (doc) => {
    const f = fileOf(doc.room);
    writeFileSync(`${f}.tmp`, JSON.stringify(doc));
    renameSync(`${f}.tmp`, f);
  };
  const note = (obj) => { if (journal) appendFileSync(journal, `${JSON.stringify(obj)}\n`); };

  // Each request is handled whole before the next (a promise chain), so the
  // files never see two requests interleaved.
  let chain = Promise.resolve();
  const handle = (req, res, body) => {
    const why = verifySignature(secret, req.headers, body, toleranceS);
    if (why) {
      log(`webhook-receiver: refused: ${why}`);
      res.writeHead(401, { 'content-type': 'text/plain' });
      res.end(why);
      return;
    }
    let batch;
    try {
      batch = JSON.parse(body);
    } catch {
      res.writeHead(400);
      res.end('not JSON');
      return;
    }
    const touched = new Set();
    for (const e of batch.entries ?? []) {
      if (e.event === 'entry' || e.event === 'gap') {
        const doc = load(e.room);
        if (doc.epoch !== e.epoch) {
          // A new incarnation of the room (deleted and made again): start over.
          Object.assign(doc, { epoch: e.epoch, seq: 0, items: {}, messages: [], gaps: [] });
        }
        if (e.event === 'gap') {
          const dup = e.first - 1 <= doc.seq;
          note({ event: 'gap', room: e.room, epoch: e.epoch, after: e.after, first: e.first, dup });
          if (!dup) {
            doc.gaps.push({ after: doc.seq, first: e.first });
            doc.seq = e.first - 1; // the mirror misses these: fetch a snapshot to repair it
          }
        } else {
          const dup = e.seq <= doc.seq;
          note({ event: 'entry', room: e.room, epoch: e.epoch, seq: e.seq, dup });
          if (dup) continue; // delivered before: at least once means maybe twice
          if (e.seq !== doc.seq + 1) log(`webhook-receiver: ${e.room}: seq ${e.seq} after ${doc.seq}`);
          applyMessage(doc, e.seq, e.msg);
          doc.seq = e.seq;
        }
        touched.add(doc);
      } else {
        note({ ...e }); // lifecycle: at most once, nothing to dedupe
      }
    }
    for (const doc of touched) save(doc);
    const answer = () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    };
    if (answerDelayMs) return new Promise((r) => setTimeout(() => { answer(); r(); }, answerDelayMs));
    answer();
  };

  return http.createServer((req, res) => {
    if (req.method !== 'POST') {
      res.writeHead(405, { allow: 'POST' });
      res.end();
      return;
    }
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      chain = chain.then(() => handle(req, res, body)).catch((err) => {
        log(`webhook-receiver: ${err.stack || err}`);
        if (!res.headersSent) {
          res.writeHead(500);
          res.end();
        }
      });
    });
  });
}

function main(argv) {
  const opt = { port: '8787', host: '127.0.0.1', dir: 'mirror', tolerance: '300', journal: null, 'answer-delay': '0' };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in opt) || i + 1 >= argv.length) {
      console.error(`usage: webhook-receiver.mjs [--port N] [--host H] [--dir DIR] [--tolerance S] [--journal FILE] [--answer-delay MS]
(the secret comes from WSYNC_WEBHOOK_SECRET)`);
      process.exit(2);
    }
    opt[k] = argv[i + 1];
  }
  const secret = process.env.WSYNC_WEBHOOK_SECRET;
  if (!secret) {
    console.error('webhook-receiver: set WSYNC_WEBHOOK_SECRET to the --webhook-secret of wsync');
    process.exit(2);
  }
  const srv = createReceiver({
    secret, dir: opt.dir, toleranceS: Number(opt.tolerance), journal: opt.journal, answerDelayMs: Number(opt['answer-delay']),
  });
  srv.listen(Number(opt.port), opt.host, () => {
    console.log(`webhook-receiver listening on http://${opt.host}:${srv.address().port}/ mirroring into ${opt.dir}`);
  });
  const stop = () => srv.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main(process.argv.slice(2));
