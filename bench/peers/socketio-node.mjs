// socketio-node.mjs -- the Socket.IO peer of wsync's cluster benchmark
// (bench/cluster.mjs): one node of a Socket.IO 4 cluster whose nodes meet in
// Redis through @socket.io/redis-adapter, the documented way to run
// Socket.IO on several processes. Two of these on the same Redis are two
// nodes; a message published on one reaches the room's members on both.
//
// It only relays, so that what is measured is Socket.IO and the adapter:
//   42["join",ROOM] (with an ack id)  socket.join(ROOM), then the ack
//   42["pub",ROOM,PAYLOAD]            io.to(ROOM).emit("msg", PAYLOAD), the
//                                     sender included when it is a member
// Transport: WebSocket only (no HTTP long-polling first), permessage-deflate
// off (Socket.IO's default), i.e. the cheapest Socket.IO setup.
// GET /healthz answers a small JSON.
//
// usage: node socketio-node.mjs --redis redis://HOST:PORT [--listen 127.0.0.1:0] [--node-id NAME]
// prints "listening on http://HOST:PORT" on stderr, like wsync.
import http from 'node:http';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { createClient } from 'redis';

const args = process.argv.slice(2);
const opt = (n, d) => (args.indexOf(n) >= 0 ? args[args.indexOf(n) + 1] : d);
const [host, portStr] = opt('--listen', '127.0.0.1:0').split(':');
const redisUrl = opt('--redis');
const nodeId = opt('--node-id', 'sio');
if (!redisUrl) {
  process.stderr.write('usage: node socketio-node.mjs --redis redis://HOST:PORT [--listen HOST:PORT]\n');
  process.exit(2);
}

const pubClient = createClient({ url: redisUrl });
const subClient = pubClient.duplicate();
for (const c of [pubClient, subClient]) c.on('error', (e) => process.stderr.write(`${nodeId}: redis: ${e.message}\n`));
await Promise.all([pubClient.connect(), subClient.connect()]);

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    const body = JSON.stringify({ status: 'ok', server: 'socket.io', node: nodeId, connections: io.engine.clientsCount });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }
  // anything else: Socket.IO's own handler (or its 400) answers
});
const io = new Server(server, { transports: ['websocket'], adapter: createAdapter(pubClient, subClient) });

io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    if (typeof room !== 'string') return;
    socket.join(room);
    if (typeof ack === 'function') ack();
  });
  socket.on('pub', (room, payload) => {
    if (typeof room === 'string') io.to(room).emit('msg', payload);
  });
});

server.listen(Number(portStr), host, () => {
  const a = server.address();
  process.stderr.write(`listening on http://${a.address}:${a.port}\n`);
});

const stop = () => {
  io.close();
  Promise.allSettled([pubClient.quit(), subClient.quit()]).then(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
