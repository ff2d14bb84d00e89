// node-run.mjs -- one "run" of a Node application using the JavaScript client
// (clients/js/wsync.js), for client-node.test.mjs: a fresh process each time,
// as a CLI tool or a worker restarted by its supervisor would be.
//
//   node [--experimental-websocket] node-run.mjs '<json options>'
//
// Options: url, token, room; deviceFile (passed to the Client); ws (true:
// pass the `ws` package as WebSocket, else the client picks); clients (how
// many Clients to make, default 1); set ({item: fields} written and acked);
// publishCid (a stored publish with that cid, acked). stdout: one JSON line
// {device, transport, items, publish, warnings}; then the process exits
// without close() (no bye: as a crash would), leaving its session detached.
const opts = JSON.parse(process.argv[2]);

const warnings = [];
const warn = console.warn;
console.warn = (...args) => {
  warnings.push(args.map(String).join(' '));
  warn(...args);
};

const { Client } = await import('../../../clients/js/wsync.js');
const WebSocket = opts.ws ? (await import('ws')).default : undefined;

const clients = [];
for (let i = 0; i < (opts.clients || 1); i++) {
  clients.push(new Client(opts.url, {
    token: opts.token,
    deviceFile: opts.deviceFile,
    ...(i > 0 ? { device: `extra-${i}` } : {}),
    ...(WebSocket ? { WebSocket } : {}),
  }));
}
const c = clients[0];
const room = c.room(opts.room);
const guard = setTimeout(() => {
  process.stdout.write(`${JSON.stringify({ error: `timeout (status ${c.status})` })}\n`);
  process.exit(2);
}, 8000);
await room.ready;
for (const [item, fields] of Object.entries(opts.set || {})) await room.set(item, fields);
const publish = opts.publishCid ? await room.publish({ job: opts.publishCid }, { cid: opts.publishCid }) : undefined;
clearTimeout(guard);
process.stdout.write(`${JSON.stringify({
  device: c.device,
  transport: c.transport,
  items: Object.fromEntries(room.items),
  publish,
  warnings,
})}\n`);
process.exit(0);
