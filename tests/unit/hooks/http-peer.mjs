// http-peer.mjs -- the HTTP server that tests/unit/hooks/test_hclient.c talks
// to: a real Node http server on a free loopback port. It prints the port on
// one line and exits when its stdin closes (so a crashed test leaves nothing).
//   POST /echo      200, JSON {len, sum, ctype, expect, xtest, port}: what arrived
//   POST /status/N  answers status N with body "status N"
//   POST /slow      never answers (for timeouts and cancels)
//   POST /big       a 100 KiB body (past the client's cap)
//   POST /drop      destroys the connection without an answer
import http from 'node:http';

const srv = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const url = req.url;
    if (url === '/echo') {
      let sum = 0;
      for (const b of body) sum = (sum * 31 + b) >>> 0;
      const out = JSON.stringify({
        len: body.length, sum, method: req.method,
        ctype: req.headers['content-type'] ?? null,
        expect: req.headers['expect'] ?? null,
        xtest: req.headers['x-test'] ?? null,
        port: req.socket.remotePort,
      });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(out);
    } else if (url.startsWith('/status/')) {
      const n = Number(url.slice(8));
      res.writeHead(n);
      res.end(`status ${n}`);
    } else if (url === '/slow') {
      // never answer
    } else if (url === '/big') {
      res.writeHead(200);
      res.end(Buffer.alloc(100 * 1024, 'x'));
    } else if (url === '/drop') {
      req.socket.destroy();
    } else {
      res.writeHead(404);
      res.end();
    }
  });
});
srv.keepAliveTimeout = 30000;
srv.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${srv.address().port}\n`);
});
process.stdin.on('data', () => {});
process.stdin.on('end', () => process.exit(0));
