// server.mjs -- the Node.js `ws` peer of wsync's benchmark (make bench).
//
// It speaks the plain broadcast protocol exactly as wsync's --echo-endpoint
// does: a WebSocket at /v1/broadcast?room=R (room "default" when absent),
// every message re-sent to every connection of room R, the sender included,
// with the same opcode (text or binary). GET /healthz answers a small JSON.
// The server is written the way the ws documentation shows a broadcast
// (client.send per recipient), with permessage-deflate off and the optional
// native helper bufferutil used when it installed, i.e. ws at its usual best.
//
// With --tls-cert FILE --tls-key FILE it serves HTTPS and wss:// instead
// (node:https, i.e. Node's OpenSSL, default settings), like wsync with the
// same flags, for the TLS comparison (bench/tls.mjs).
//
// usage: node server.mjs [--listen 127.0.0.1:0] [--tls-cert FILE --tls-key FILE]
// prints "listening on http(s)://HOST:PORT" on stderr, like wsync.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { WebSocketServer, WebSocket } from 'ws';

const args = process.argv.slice(2);
const li = args.indexOf('--listen');
const [host, portStr] = (li >= 0 ? args[li + 1] : '127.0.0.1:8090').split(':');

const opt = (n) => (args.indexOf(n) >= 0 ? args[args.indexOf(n) + 1] : undefined);
const tls = opt('--tls-cert') ? { cert: readFileSync(opt('--tls-cert')), key: readFileSync(opt('--tls-key')) } : null;

const rooms = new Map(); // name -> Set of sockets

const handler = (req, res) => {
  if (req.url === '/healthz') {
    const body = JSON.stringify({ status: 'ok', server: 'node-ws', connections: wss.clients.size });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  res.writeHead(404).end();
};
const server = tls ? https.createServer(tls, handler) : http.createServer(handler);

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1 << 20 });

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/v1/broadcast') {
    socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  const name = url.searchParams.get('room') ?? 'default';
  wss.handleUpgrade(req, socket, head, (ws) => {
    let room = rooms.get(name);
    if (!room) rooms.set(name, (room = new Set()));
    room.add(ws);
    ws.on('message', (data, isBinary) => {
      for (const m of room) if (m.readyState === WebSocket.OPEN) m.send(data, { binary: isBinary });
    });
    ws.on('close', () => {
      room.delete(ws);
      if (room.size === 0 && rooms.get(name) === room) rooms.delete(name);
    });
    ws.on('error', () => {});
  });
});

server.listen(Number(portStr), host, () => {
  const a = server.address();
  process.stderr.write(`listening on ${tls ? 'https' : 'http'}://${a.address}:${a.port}\n`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
