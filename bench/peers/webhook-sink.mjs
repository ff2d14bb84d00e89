// webhook-sink.mjs -- the receiver of bench scenario (w): a Node http server
// that verifies each webhook request's signature (HMAC-SHA256, as a real
// receiver must), parses the body, counts the entries and answers 200. It
// keeps nothing, so its own cost stays small and constant; it shares the
// machine with wsync and the generator like any local receiver would.
// usage: WSYNC_WEBHOOK_SECRET=... node webhook-sink.mjs [--port 0]; prints
// "listening on http://127.0.0.1:PORT/" on stderr, and on SIGTERM the totals.
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';

const secret = process.env.WSYNC_WEBHOOK_SECRET;
if (!secret) {
  console.error('webhook-sink: WSYNC_WEBHOOK_SECRET is required');
  process.exit(2);
}
const i = process.argv.indexOf('--port');
const port = i > 0 ? Number(process.argv[i + 1]) : 0;
let requests = 0;
let entries = 0;
let refused = 0;

const srv = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const ts = req.headers['wsync-timestamp'] ?? '';
    const sig = Buffer.from((req.headers['wsync-signature'] ?? '').slice(3), 'hex');
    const want = createHmac('sha256', secret).update(`${ts}.`).update(body).digest();
    if (sig.length !== want.length || !timingSafeEqual(sig, want)) {
      refused++;
      res.writeHead(401);
      res.end();
      return;
    }
    entries += JSON.parse(body).entries.length;
    requests++;
    res.writeHead(200);
    res.end();
  });
});
srv.keepAliveTimeout = 60000;
srv.listen(port, '127.0.0.1', () => console.error(`listening on http://127.0.0.1:${srv.address().port}/`));
process.on('SIGTERM', () => {
  console.error(JSON.stringify({ requests, entries, refused }));
  process.exit(0);
});
