// yjs.mjs -- the stock Yjs client side for the yjs-* tests: y-websocket's
// WebsocketProvider on `ws` against /v1/yjs, plus a raw y-protocols socket
// for what a provider would never send (malformed messages).
import WebSocket from 'ws';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import * as encoding from 'lib0/encoding';
import * as decoding from 'lib0/decoding';

import { waitUntil, withTimeout, WAIT_MS } from './server.mjs';
import { token } from './sync.mjs';

export { Y };

/**
 * A provider for room on srv's /v1/yjs with tok (a fresh Y.Doc unless doc is
 * given). Every close event it sees is kept in p.closes, every
 * permission-denied reason in p.denied. t gets an after hook that destroys it.
 */
export function provider(t, srv, room, tok, { doc = new Y.Doc(), connect = true, params = {} } = {}) {
  const p = new WebsocketProvider(`${srv.wsUrl}/v1/yjs`, room, doc, {
    params: tok === undefined ? { ...params } : { ...params, token: tok },
    WebSocketPolyfill: WebSocket,
    connect,
    disableBc: true,
  });
  p.closes = [];
  p.denied = [];
  p.on('connection-close', (ev) => ev && p.closes.push({ code: ev.code, reason: ev.reason }));
  // y-websocket's permission-denied handler only warns: count the reasons.
  const auth = p.messageHandlers[2];
  p.messageHandlers[2] = (enc, dec, prov, emit, type) => {
    const d = decoding.clone(dec);
    if (decoding.readVarUint(d) === 0) p.denied.push(decoding.readVarString(d));
    const warn = console.warn;
    console.warn = () => {};
    try {
      auth(enc, dec, prov, emit, type);
    } finally {
      console.warn = warn;
    }
  };
  // The provider leaves its Awareness (and that one's 3 s interval, which
  // keeps node alive) to its creator: destroy both.
  const destroy = p.destroy.bind(p);
  p.destroy = () => {
    destroy();
    p.awareness.destroy();
  };
  if (t) t.after(() => p.destroy());
  return p;
}

/** Resolves once p has synced with the server. */
export function synced(p, what = 'provider sync') {
  return waitUntil(() => p.synced, what);
}

/** A read-write token for everything, or the grants given. */
export const yToken = (user, grants = { '*': 'rw' }) => token(user, grants);

/** Text of doc's Y.Text "t". */
export const text = (doc) => doc.getText('t').toString();

/** Waits until every doc's text equals want. */
export function converge(docs, want, what = 'convergence') {
  return waitUntil(() => docs.every((d) => text(d) === want), `${what}: ${JSON.stringify(docs.map(text))} -> ${JSON.stringify(want)}`);
}

/** Waits until every doc has the same text; resolves it. */
export async function agree(docs, what = 'agreement') {
  await waitUntil(() => docs.every((d) => text(d) === text(docs[0])), `${what}: ${JSON.stringify(docs.map(text))}`);
  return text(docs[0]);
}

/**
 * A raw WebSocket to /v1/yjs/room: resolves {ws, msgs (Buffers received),
 * closed (a promise of {code, reason})} once open.
 */
export async function rawYjs(srv, room, tok) {
  const ws = new WebSocket(`${srv.wsUrl}/v1/yjs/${room}?token=${tok}`);
  const msgs = [];
  ws.on('message', (m) => msgs.push(Buffer.from(m)));
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  await withTimeout(new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  }), WAIT_MS, 'raw yjs socket open');
  return { ws, msgs, closed };
}

/** The bytes of a y-protocols message written by fn(encoder). */
export function ymsg(fn) {
  const e = encoding.createEncoder();
  fn(e);
  return encoding.toUint8Array(e);
}
