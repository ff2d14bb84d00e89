// client-util.mjs -- helpers for the tests of the JavaScript client
// (clients/js/wsync.js) against the real server: clients that record what
// they send and the errors they report, a loopback TCP proxy that can cut
// and block the network, waits on replica state, and the backend API views
// (snapshot, history) the replicas are compared with.
import assert from 'node:assert/strict';
import net from 'node:net';

import WebSocket from 'ws';

import { Client } from '../../../clients/js/wsync.js';
import { waitUntil, WAIT_MS } from './server.mjs';
import { api, token } from './sync.mjs';

export { Client };

/** The backend API key the client tests run their servers with. */
export const KEY = 'client-e2e-api-key';

/** Server flags every client test uses: the backend API, no rate limit in the way. */
export const SERVER_ARGS = ['--api-key', KEY, '--rate', '100000', '--burst', '100000'];

let devN = 0;

/**
 * A WebSocket class (the `ws` package) that records every message the
 * client sends into sink. hooks.open(ws) runs at each open (tests use it to
 * kill connections); hooks.url(url) may rewrite the URL.
 */
export function spyWebSocket(sink, hooks = {}) {
  return class SpyWebSocket extends WebSocket {
    constructor(url) {
      super(hooks.url ? hooks.url(url) : url);
      if (hooks.created) hooks.created(this);
      if (hooks.open) this.on('open', () => hooks.open(this));
    }

    send(data, ...rest) {
      try {
        sink.push(JSON.parse(data));
      } catch {
        sink.push({ raw: String(data) });
      }
      return super.send(data, ...rest);
    }
  };
}

/** A fetch that records the messages POSTed to /v1/send; hooks.before(url, init) may throw to fail a request. */
export function spyFetch(sink, hooks = {}) {
  return async (url, init = {}) => {
    if (hooks.before) await hooks.before(String(url), init);
    if (init.method === 'POST' && String(url).endsWith('/v1/send') && typeof init.body === 'string') {
      const b = JSON.parse(init.body);
      for (const m of Array.isArray(b) ? b : [b]) sink.push(m);
    }
    return fetch(url, init);
  };
}

/**
 * A client for tests: a token for user (grants everything), a fresh device
 * unless given, short backoff, the transport forced when given. Records
 * c.sent (messages sent, any transport), c.errors ('error' events),
 * c.statuses and c.welcomes. Closed (bye) after the test.
 */
export function makeClient(t, url, { user = 'alice', device, transport, ws = {}, fetchHooks = {}, ...opts } = {}) {
  const sent = [];
  const c = new Client(url, {
    token: token(user),
    device: device || `${user}-${process.pid}-${++devN}`,
    WebSocket: spyWebSocket(sent, ws),
    fetch: spyFetch(sent, fetchHooks),
    transports: transport ? [transport] : undefined,
    backoff: { base: 50, max: 400 },
    ...opts,
  });
  c.sent = sent;
  c.errors = [];
  c.statuses = [];
  c.welcomes = [];
  c.on('error', (e) => c.errors.push(e));
  c.on('status', (s, info) => c.statuses.push(`${s}${info.transport ? `:${info.transport}` : ''}`));
  c.on('welcome', (w) => c.welcomes.push(w));
  if (t) t.after(() => c.close());
  return c;
}

/** Records a room's events: r.events = [{event, ...payload}]. */
export function recordRoom(room) {
  const events = [];
  for (const ev of ['change', 'message', 'presence', 'lock', 'error', 'joined']) {
    room.on(ev, (p) => events.push({ event: ev, ...(Array.isArray(p) ? { list: p } : p) }));
  }
  room.events = events;
  return room;
}

/** The room's local view as a plain object {id: fields}. */
export const docOf = (room) => Object.fromEntries([...room.items].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

/** Waits until the client is online. */
export const online = (c, what = 'online') => waitUntil(() => c.status === 'online', `${what} (status ${c.status})`);

/**
 * Waits until every room has nothing pending, its client is online and all
 * rooms are at the same position (and at seq when given).
 */
export async function settled(rooms, seq) {
  await waitUntil(() => {
    const s = rooms[0].position.seq;
    return rooms.every((r) => r.pendingCount === 0 && r.client.status === 'online' && r._state === 'joined' &&
      r.position.seq === s && (seq === undefined || s === seq));
  }, `rooms settled: ${rooms.map((r) => `${r.client.device}@${r.position.seq}/${r.pendingCount}/${r.client.status}`).join(' ')}`);
}

/** GET /v1/rooms/{room}: {epoch, seq, items: {id: {version, fields}}}. */
export async function serverSnapshot(url, room) {
  const r = await api(url, 'GET', `/v1/rooms/${room}`, { key: KEY });
  assert.equal(r.status, 200, `snapshot of ${room}: ${r.status} ${r.text}`);
  return r.body;
}

/** The server's document as {id: fields}, comparable with docOf(). */
export async function serverDoc(url, room) {
  const s = await serverSnapshot(url, room);
  const out = {};
  for (const id of Object.keys(s.items).sort()) out[id] = s.items[id].fields;
  return out;
}

/** Every entry of the room's log (GET /v1/rooms/{room}/history, paged). */
export async function history(url, room) {
  const out = [];
  let from = 1;
  for (;;) {
    const r = await api(url, 'GET', `/v1/rooms/${room}/history?from=${from}&limit=1000`, { key: KEY });
    assert.equal(r.status, 200, `history of ${room}: ${r.status} ${r.text}`);
    out.push(...r.body.entries);
    if (!r.body.more || !r.body.entries.length) return out;
    from = r.body.entries.at(-1).seq + 1;
  }
}

/** cid -> number of log entries carrying it. */
export function cidCounts(entries) {
  const m = new Map();
  for (const e of entries) if (e.cid !== undefined) m.set(e.cid, (m.get(e.cid) || 0) + 1);
  return m;
}

/** The server-side view of the versions: {id: version}. */
export async function serverVersions(url, room) {
  const s = await serverSnapshot(url, room);
  return Object.fromEntries(Object.entries(s.items).map(([id, it]) => [id, it.version]));
}

/**
 * A loopback TCP proxy to 127.0.0.1:port. cut() drops every connection at
 * once (both sides see a reset: a network failure, no close handshake);
 * block() makes new connections fail at once until unblock(). blackhole()
 * is a network that silently drops packets: nothing is forwarded either way
 * and nobody is told (no FIN, no RST), new connections are accepted but get
 * nowhere; forward() ends it and, as TCP retransmission would, delivers what
 * was held back and connects what was waiting. Closed after the test.
 */
export async function startProxy(t, port) {
  const conns = new Set();
  let blocked = false;
  let holes = false;
  const waiting = new Set(); // sockets accepted during a blackhole, not connected yet
  const join = (sock) => {
    const up = net.connect(port, '127.0.0.1');
    const pair = { sock, up };
    conns.add(pair);
    const kill = () => {
      sock.destroy();
      up.destroy();
      conns.delete(pair);
    };
    sock.on('error', kill).on('close', kill);
    up.on('error', kill).on('close', kill);
    sock.pipe(up);
    up.pipe(sock);
  };
  // Held: nothing read is passed on (what arrives stays buffered).
  const hold = ({ sock, up }) => {
    sock.unpipe(up);
    up.unpipe(sock);
    sock.pause();
    up.pause();
  };
  const release = ({ sock, up }) => {
    sock.pipe(up);
    up.pipe(sock);
  };
  const server = net.createServer((sock) => {
    if (blocked) {
      sock.destroy();
      return;
    }
    if (holes) {
      sock.pause();
      sock.on('error', () => sock.destroy());
      waiting.add(sock);
      sock.on('close', () => waiting.delete(sock));
      return;
    }
    join(sock);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const p = {
    port: server.address().port,
    get url() { return `http://127.0.0.1:${p.port}`; },
    get connections() { return conns.size; },
    cut() {
      for (const { sock, up } of [...conns]) {
        sock.destroy();
        up.destroy();
      }
      conns.clear();
      for (const sock of [...waiting]) sock.destroy();
      waiting.clear();
    },
    block() { blocked = true; },
    unblock() { blocked = false; },
    blackhole() {
      holes = true;
      for (const pair of conns) hold(pair);
    },
    forward() {
      holes = false;
      for (const pair of conns) release(pair);
      const list = [...waiting];
      waiting.clear();
      for (const sock of list) if (!sock.destroyed) join(sock);
    },
    close() {
      p.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
  if (t) t.after(() => p.close());
  return p;
}

/** Resolves the promise's rejection error; fails when it resolves. */
export async function rejection(p, what = 'the promise') {
  try {
    const v = await p;
    assert.fail(`${what} resolved (${JSON.stringify(v)}) instead of being rejected`);
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    return err;
  }
}

/** The messages of type in c.sent (optionally after index from). */
export const sentOf = (c, type, from = 0) => c.sent.slice(from).filter((m) => m.type === type);

export { WAIT_MS, waitUntil };
