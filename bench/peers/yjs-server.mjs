// yjs-server.mjs -- the Yjs peers of wsync's benchmark (bench/yjs.mjs) and of
// the Yjs editor's browser test: the two usual Node.js Yjs servers, as their
// packages publish them, on a port chosen by the OS.
//
//   --kind y-websocket   @y/websocket-server: its own setupWSConnection (the
//                        code of its bin, server.js), every path a document.
//                        With --data DIR it persists to LevelDB (y-leveldb), the
//                        package's YPERSISTENCE mode: every update stored.
//   --kind hocuspocus    @hocuspocus/server 4 with its defaults. With --data DIR
//                        its onLoadDocument/onStoreDocument hooks keep each
//                        document as one Yjs update in a file (what its
//                        database extension does with a table): stored
//                        debounced, 2 s after the last change, as by default.
//
// usage: node yjs-server.mjs --kind y-websocket|hocuspocus [--listen 127.0.0.1:0] [--data DIR]
// prints "listening on http://HOST:PORT" on stderr, like wsync.
import { mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const args = process.argv.slice(2);
const opt = (n, d) => (args.indexOf(n) >= 0 ? args[args.indexOf(n) + 1] : d);
const kind = opt('--kind', 'y-websocket');
const [host, portStr] = opt('--listen', '127.0.0.1:0').split(':');
const dataDir = opt('--data');

const announce = (port) => process.stderr.write(`listening on http://${host}:${port}\n`);

if (kind === 'y-websocket') {
  // utils.js reads YPERSISTENCE when it is first imported.
  if (dataDir) process.env.YPERSISTENCE = dataDir;
  const { WebSocketServer } = await import('ws');
  const { setupWSConnection, getPersistence } = await import('@y/websocket-server/utils');
  const wss = new WebSocketServer({ noServer: true });
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('okay');
  });
  wss.on('connection', setupWSConnection);
  server.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  server.listen(Number(portStr), host, () => announce(server.address().port));
  // LevelDB writes are queued behind the relay: on SIGTERM, let them finish
  // (y-leveldb's destroy waits for its queue) so that a restart finds them.
  process.on('SIGTERM', async () => {
    const p = getPersistence();
    try { if (p) await p.provider.destroy(); } finally { process.exit(0); }
  });
} else if (kind === 'hocuspocus') {
  const { Server } = await import('@hocuspocus/server');
  const Y = await import('yjs');
  const fileOf = (name) => path.join(dataDir, `${encodeURIComponent(name)}.yjs`);
  if (dataDir) mkdirSync(dataDir, { recursive: true });
  const server = new Server({
    address: host,
    port: Number(portStr),
    quiet: true,
    ...(dataDir ? {
      async onLoadDocument({ documentName, document }) {
        let bytes = null;
        try { bytes = readFileSync(fileOf(documentName)); } catch { /* a new document */ }
        if (bytes) Y.applyUpdate(document, new Uint8Array(bytes));
        return document;
      },
      async onStoreDocument({ documentName, document }) {
        const tmp = `${fileOf(documentName)}.tmp`;
        writeFileSync(tmp, Y.encodeStateAsUpdate(document));
        renameSync(tmp, fileOf(documentName));
      },
    } : {}),
  });
  await server.listen();
  announce(server.address.port);
  // Hocuspocus stores debounced: on SIGTERM, store what is pending first.
  process.on('SIGTERM', async () => {
    try { await server.destroy(); } finally { process.exit(0); }
  });
} else {
  process.stderr.write(`unknown --kind ${kind} (y-websocket or hocuspocus)\n`);
  process.exit(2);
}
