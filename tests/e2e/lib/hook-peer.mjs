// hook-peer.mjs -- a programmable HTTP receiver for the tests of the hooks
// that decide (--auth-hook, --op-hook; docs/HOOKS.md): it listens on a
// free loopback port, records every request (parsed body, headers, whether
// its signature verifies) and answers with what the test's handler returns:
// {status, body} (body: an object, sent as JSON, or a string sent as is),
// {hang: true} (never answers; the socket is destroyed when the peer
// closes), {drop: true} (the connection is closed without an answer), or a
// promise of any of them (a slow hook).
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';

/** Whether req's Wsync-Signature is the HMAC-SHA256 of "<Wsync-Timestamp>.<body>" with secret. */
export function signatureOk(secret, headers, raw) {
  const ts = headers['wsync-timestamp'];
  const sig = headers['wsync-signature'];
  if (!ts || !sig || !sig.startsWith('v1=')) return false;
  const want = createHmac('sha256', secret).update(`${ts}.`).update(raw).digest('hex');
  const got = sig.slice(3);
  return got.length === want.length && timingSafeEqual(Buffer.from(got), Buffer.from(want));
}

/**
 * Starts a hook peer; handler(body, req) -> answer (see above). Resolves
 * {url, calls, setHandler(fn), close()}: calls is every request received,
 * {body, headers, raw, at} in arrival order. t (when given) closes it after the test.
 */
export async function startHookPeer(t, handler) {
  const calls = [];
  const sockets = new Set();
  let h = handler;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const raw = Buffer.concat(chunks);
      let body;
      try {
        body = JSON.parse(raw.toString());
      } catch {
        body = { unparsable: raw.toString() };
      }
      const call = { body, headers: req.headers, raw, at: calls.length };
      calls.push(call);
      let a;
      try {
        a = await h(body, call);
      } catch (e) {
        a = { status: 500, body: { error: String(e) } };
      }
      if (!a || a.hang) return; // the request stays open until the client gives up
      if (a.drop) {
        req.socket.destroy(); // the connection goes away without an answer
        return;
      }
      const text = typeof a.body === 'string' ? a.body : JSON.stringify(a.body ?? {});
      res.writeHead(a.status || 200, { 'Content-Type': 'application/json' });
      res.end(text);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const peer = {
    url: `http://127.0.0.1:${server.address().port}/hook`,
    calls,
    setHandler(fn) { h = fn; },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  if (t) t.after(() => peer.close());
  return peer;
}
