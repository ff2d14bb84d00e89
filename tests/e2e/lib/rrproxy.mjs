// rrproxy.mjs -- a round-robin reverse proxy for the cluster tests and
// `make cluster`: what a plain load balancer without sticky sessions does.
//
// Every HTTP request and every WebSocket upgrade goes to the NEXT backend in
// turn, whatever connection or session it comes from: two requests on one
// keep-alive connection go to two backends. So a session made by a
// `POST /v1/send` hello on one node has its SSE stream or poll on another,
// which is what issue 13 asks the cluster to survive.
//
// - HTTP: the request (method, path, headers but the hop-by-hop ones, body
//   streamed) goes on a connection of its own to the backend; the response
//   is streamed back as it arrives (headers flushed at once, so an SSE
//   stream or a pending long-poll stays open and live), framed as the
//   backend framed it (a body delimited by the connection's close stays
//   so). A client that goes away closes the upstream request; an upstream
//   that dies mid-response ends the client's connection too (a response
//   with a length or chunks is cut short: the client sees an error).
// - WebSocket: the upgrade request is written raw to the backend and the
//   two sockets are piped both ways: the backend's 101 (or its refusal) and
//   then the frames pass untouched. Either side closing closes the other.
// - A backend that refuses the connection gets the client a 502 (HTTP) or a
//   502 response on its socket (upgrade), and counts in refused[].
//
// Backends are given as ports, 'http://host:port' strings or objects with
// port (and host) members read at each pick, so a node restarted on the same
// port (lib/cluster.mjs) stays in the rotation. No dependencies.
import http from 'node:http';
import net from 'node:net';

/** Headers that describe one connection, not the message (RFC 9110 7.6.1). */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer',
  'upgrade', 'proxy-authenticate', 'proxy-authorization']);

/** rawHeaders minus hop-by-hop ones and those the Connection header names, as a flat array. */
function endToEnd(raw) {
  const named = new Set();
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].toLowerCase() === 'connection') {
      for (const n of raw[i + 1].split(',')) named.add(n.trim().toLowerCase());
    }
  }
  const out = [];
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i].toLowerCase();
    if (!HOP.has(k) && !named.has(k)) out.push(raw[i], raw[i + 1]);
  }
  return out;
}

/** A flat raw header array as an object for http.request (repeated names as arrays). */
function headerObject(flat) {
  const h = {};
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i].toLowerCase();
    h[k] = k in h ? [].concat(h[k], flat[i + 1]) : flat[i + 1];
  }
  return h;
}

function backendOf(b) {
  if (typeof b === 'number') return { host: '127.0.0.1', port: b };
  if (typeof b === 'string') {
    const u = new URL(b);
    return { host: u.hostname, port: Number(u.port) || 80 };
  }
  return { host: b.host || '127.0.0.1', port: b.port };
}

const BAD_GATEWAY = (i, why) => JSON.stringify({ type: 'error', code: 'bad_gateway', message: `backend ${i}: ${why}` });

/**
 * Starts the proxy. Options: backends (required, at least one), t (closed
 * after it), host (default 127.0.0.1), port (default 0: a free one).
 *
 * Returns {host, port, url, wsUrl, counts, http, ws, refused, picks, next,
 * active, close()}: counts[i] requests and upgrades sent to backend i,
 * http[i] and ws[i] the same by kind, refused[i] those whose connection to
 * it failed (answered 502); picks the last 10,000 choices in order
 * ({backend, kind, method, path}); next the backend the next request goes
 * to; active the number of exchanges open now (a stream, a pending poll, a
 * WebSocket). close() cuts everything and stops listening.
 */
export async function startRrProxy({ backends, t = null, host = '127.0.0.1', port = 0 } = {}) {
  if (!backends || !backends.length) throw new Error('rrproxy: no backends');
  const n = backends.length;
  let turn = 0;
  const exchanges = new Set(); // {cut()} of every open exchange
  const p = {
    host,
    port: 0,
    get url() { return `http://${host}:${p.port}`; },
    get wsUrl() { return `ws://${host}:${p.port}`; },
    counts: new Array(n).fill(0),
    http: new Array(n).fill(0),
    ws: new Array(n).fill(0),
    refused: new Array(n).fill(0),
    picks: [],
    get next() { return turn % n; },
    get active() { return exchanges.size; },
  };

  const pick = (kind, req) => {
    const i = turn++ % n;
    p.counts[i]++;
    p[kind][i]++;
    p.picks.push({ backend: i, kind, method: req.method, path: req.url });
    if (p.picks.length > 10000) p.picks.splice(0, p.picks.length - 10000);
    return [i, backendOf(backends[i])];
  };

  const server = http.createServer({ requestTimeout: 0, headersTimeout: 60000, keepAliveTimeout: 5000 });

  server.on('request', (req, res) => {
    const [i, b] = pick('http', req);
    const up = http.request({
      host: b.host, port: b.port, method: req.method, path: req.url,
      headers: headerObject(endToEnd(req.rawHeaders)), agent: false, setHost: false,
    });
    const ex = { cut() { up.destroy(); res.destroy(); } };
    exchanges.add(ex);
    const done = () => exchanges.delete(ex);
    up.on('response', (ur) => {
      // A body that ends when the connection closes (wsync's SSE streams)
      // is passed on the same way, not re-framed as chunks: the client then
      // sees what it would see from the backend itself, an end of stream.
      const framed = ur.headers['content-length'] !== undefined || ur.headers['transfer-encoding'] !== undefined;
      const bodiless = req.method === 'HEAD' || ur.statusCode === 204 || ur.statusCode === 304;
      const headers = endToEnd(ur.rawHeaders);
      if (!framed && !bodiless) {
        res.useChunkedEncodingByDefault = false;
        headers.push('Connection', 'close');
      } else if (/\bclose\b/i.test(ur.headers.connection || '')) {
        // The backend ends the connection after this response (a 413 before
        // reading the body): so does the proxy, and the client, told so,
        // does not send its next request on a connection about to close.
        headers.push('Connection', 'close');
      }
      res.writeHead(ur.statusCode, ur.statusMessage, headers);
      res.flushHeaders();
      ur.pipe(res);
      // An upstream that dies mid-body must not look like a clean end.
      ur.on('close', () => { if (!ur.complete) res.destroy(); });
      ur.on('error', () => res.destroy());
    });
    up.on('error', (err) => {
      if (!res.headersSent) {
        p.refused[i]++;
        const body = BAD_GATEWAY(i, err.code || err.message);
        res.writeHead(502, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
        res.end(body);
      } else {
        res.destroy();
      }
      done();
    });
    req.on('error', () => up.destroy());
    // The client went away or the response is complete: the upstream goes too.
    res.on('close', () => {
      up.destroy();
      done();
    });
    req.pipe(up);
  });

  server.on('upgrade', (req, sock, head) => {
    const [i, b] = pick('ws', req);
    const up = net.connect(b.port, b.host);
    let connected = false;
    const ex = {
      cut() {
        up.destroy();
        sock.destroy();
      },
    };
    exchanges.add(ex);
    // One side closed: the other gets what is still queued for it, then a
    // FIN, and is destroyed a second later whatever the peer does.
    const end = () => {
      if (!exchanges.delete(ex)) return;
      for (const s of [up, sock]) {
        s.end();
        setTimeout(() => s.destroy(), 1000).unref();
      }
    };
    sock.setNoDelay(true);
    up.setNoDelay(true);
    up.on('connect', () => {
      connected = true;
      let h = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
      for (let k = 0; k < req.rawHeaders.length; k += 2) h += `${req.rawHeaders[k]}: ${req.rawHeaders[k + 1]}\r\n`;
      up.write(`${h}\r\n`);
      if (head && head.length) up.write(head);
      up.pipe(sock);
      sock.pipe(up);
    });
    up.on('error', (err) => {
      if (!connected && sock.writable) {
        p.refused[i]++;
        const body = BAD_GATEWAY(i, err.code || err.message);
        sock.end(`HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
        up.destroy();
        exchanges.delete(ex);
        setTimeout(() => sock.destroy(), 1000).unref();
        return;
      }
      ex.cut();
      exchanges.delete(ex);
    });
    up.on('close', () => { if (connected) end(); });
    sock.on('error', () => {
      ex.cut();
      exchanges.delete(ex);
    });
    sock.on('close', end);
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  p.port = server.address().port;
  let closing = null;
  p.close = () => {
    closing ??= new Promise((resolve) => {
      for (const ex of [...exchanges]) ex.cut();
      exchanges.clear();
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return closing;
  };
  if (t) t.after(() => p.close());
  return p;
}
