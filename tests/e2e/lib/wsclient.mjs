// wsclient.mjs -- small promise helpers around the `ws` package, the
// well-behaved client: open, receive the next message(s), wait for the close.
import WebSocket from 'ws';

import { WAIT_MS, withTimeout } from './server.mjs';

export { WebSocket };

/**
 * Opens a client and resolves once it is OPEN. Messages that arrive before
 * anyone asks are kept in ws.inbox ({data, isBinary}), so none is missed;
 * ws.closeInfo is set at 'close'.
 */
export function open(url, opts = {}) {
  const ws = new WebSocket(url, { perMessageDeflate: false, ...opts });
  ws.inbox = [];
  ws.waiters = [];
  ws.closeInfo = null;
  ws.closedPromise = new Promise((resolve) => {
    ws.on('close', (code, reason) => {
      ws.closeInfo = { code, reason: reason.toString() };
      for (const w of ws.waiters.splice(0)) w();
      resolve(ws.closeInfo);
    });
  });
  ws.on('message', (data, isBinary) => {
    ws.inbox.push({ data, isBinary });
    for (const w of ws.waiters.splice(0)) w();
  });
  ws.on('error', (e) => {
    ws.lastError = e;
  });
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) =>
        reject(new Error(`unexpected response ${res.statusCode}`)));
    }),
    WAIT_MS,
    `WebSocket open ${url}`,
  );
}

/** Resolves with the next message {data, isBinary}; rejects if the socket closes first. */
export function nextMessage(ws, ms = WAIT_MS) {
  return takeMessages(ws, 1, ms).then((m) => m[0]);
}

/** Resolves with the next n messages in arrival order. */
export function takeMessages(ws, n, ms = WAIT_MS) {
  const run = async () => {
    while (ws.inbox.length < n) {
      if (ws.closeInfo) {
        throw new Error(`closed (${ws.closeInfo.code}) after ${ws.inbox.length} of ${n} messages`);
      }
      await new Promise((r) => ws.waiters.push(r));
    }
    return ws.inbox.splice(0, n);
  };
  return withTimeout(run(), ms, `${n} message(s)`);
}

/** Resolves {code, reason} at the 'close' event. */
export function closed(ws, ms = WAIT_MS) {
  return withTimeout(ws.closedPromise, ms, 'WebSocket close');
}

/** Closes politely (if still open) and waits for the close handshake. */
export async function closeAll(clients, code = 1000) {
  for (const ws of clients) {
    if (ws.readyState === WebSocket.OPEN) ws.close(code);
  }
  await Promise.all(clients.map((ws) => closed(ws).catch(() => ws.terminate())));
}
