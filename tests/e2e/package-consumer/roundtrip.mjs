// roundtrip.mjs -- run by client-package.test.mjs with node, from a fresh
// project where the npm tarball of clients/js was installed: everything of
// the client comes through the package name, as in an application. Two
// clients (alice over WebSocket with the `ws` package, bob over SSE with
// Node's fetch) share a room: a set by one is seen by the other, both ways,
// and a shared text edit too. Prints one JSON line with what it saw.
//
// Environment: WSYNC_URL (the server), WS_MODULE (file URL of the `ws`
// package; the project does not install it), TOKEN_ALICE, TOKEN_BOB.
import { Client } from '@wsync/client';
import { apply, cpLength } from '@wsync/client/text';

const { default: WebSocket } = await import(process.env.WS_MODULE);
const url = process.env.WSYNC_URL;
const room = 'board:package';

const guard = setTimeout(() => {
  console.error('roundtrip: timed out');
  process.exit(3);
}, Number(process.env.ROUNDTRIP_TIMEOUT_MS || 15000));

/** Resolves when room has an item for which pred(fields) holds. */
const seen = (r, item, pred) => new Promise((resolve) => {
  const check = () => {
    const f = r.get(item);
    if (f && pred(f)) {
      r.off('change', check);
      resolve(f);
    }
  };
  r.on('change', check);
  check();
});

let deepImport = 'allowed';
try {
  await import('@wsync/client/transports.js');
} catch (err) {
  deepImport = err.code;
}

const alice = new Client(url, { token: process.env.TOKEN_ALICE, WebSocket, transports: ['ws'] });
const bob = new Client(url, { token: process.env.TOKEN_BOB, transports: ['sse'] });
const ra = alice.room(room);
const rb = bob.room(room);
await Promise.all([ra.ready, rb.ready]);

const bobSees = seen(rb, 'card-1', (f) => f.title === 'from alice');
const ack = await ra.set('card-1', { title: 'from alice', n: 1 });
const atBob = await bobSees;

const aliceSees = seen(ra, 'card-1', (f) => f.reply === 'from bob');
await rb.set('card-1', { reply: 'from bob' });
const atAlice = await aliceSees;

const ta = ra.text('card-1', 'note');
const tb = rb.text('card-1', 'note');
const textAtBob = new Promise((resolve) => tb.on('change', ({ value }) => value === 'héllo 👋' && resolve(value)));
ta.insert(0, 'héllo 👋');
const text = await textAtBob;

const out = {
  transports: [alice.transport, bob.transport],
  users: [alice.user, bob.user],
  ackSeq: ack.seq,
  atBob,
  atAlice,
  text,
  textCodePoints: cpLength(text),
  textModule: apply('ab', [1, 'X']),
  deepImport,
};
await Promise.all([alice.close(), bob.close()]);
clearTimeout(guard);
console.log(JSON.stringify(out));
