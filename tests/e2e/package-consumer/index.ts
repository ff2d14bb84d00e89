// index.ts -- an application written against @wsync/client as a user would,
// through the package name and its exports map. It is only type-checked
// (tsc --strict --noEmit, see tsconfig*.json); client-package.test.mjs runs
// the same calls for real. The @ts-expect-error lines are misuses the
// declarations must refuse: if they stopped being errors (types gone `any`),
// tsc reports the unused directive and the check fails.

import WsyncDefault, {
  Client, WsyncError, bindTextarea, defineOpKind,
  type ChangeEvent, type ClientOptions, type Fields, type PresenceEntry, type Room, type SharedText,
  type Status, type TransportKind, type WriteResult,
} from '@wsync/client';
import { TextDoc, apply, cpLength, type TextOp } from '@wsync/client/text';

// The default export is the Client class.
const SameClient: typeof Client = WsyncDefault;

const options: ClientOptions = {
  token: async () => 'jwt',
  transports: ['ws', 'sse', 'poll'],
  backoff: { base: 100, max: 5000 },
  heartbeat: false,
};
const client = new SameClient('http://127.0.0.1:8080', options);
const demo = new Client('ws://127.0.0.1:8080/prefix', { user: 'alice', device: 'laptop-1' });

// @ts-expect-error the transport list takes only 'ws' | 'sse' | 'poll'
new Client('http://x', { transports: ['carrier-pigeon'] });
// @ts-expect-error a token is a string or a function returning one
new Client('http://x', { token: 42 });

client.on('status', (status: Status, info: { transport: TransportKind | null }) => {
  const s: string = `${status} over ${info.transport ?? 'nothing'}`;
  void s;
});
client.on('error', (err) => {
  const code: string = err.code;
  const retry: number | undefined = err.retry_after;
  void code, retry;
});
client.on('welcome', ({ resumed, session }) => {
  const r: boolean = resumed;
  const id: string = session;
  void r, id;
});

async function work(): Promise<void> {
  const room: Room = client.room('board:team-a', { presence: { name: 'Alice' }, history: 10 });
  const joined: Room = await room.ready;
  void joined;

  room.on('change', (e: ChangeEvent) => {
    const fields: Fields | undefined = e.fields;
    const v: number | undefined = e.version;
    const gone: boolean = e.removed;
    void fields, v, gone, e.item, e.local;
  });
  room.on('presence', (list: PresenceEntry[]) => list.map((m) => m.user));
  room.on('message', ({ data, from, seq }) => void [data, from?.user, seq]);
  room.on('lock', ({ item, lock, reason }) => void [item, lock?.fence, reason]);
  room.on('joined', ({ epoch, seq, recovered }) => void [epoch, seq, recovered]);
  room.on('error', ({ code, op }) => void [code, op?.kind]);

  const ack: WriteResult = await room.set('card-1', { title: 'One', col: 'todo' });
  const seq: number = ack.seq;
  const dup: boolean | undefined = ack.duplicate;
  void seq, dup;
  await room.set('card-1', { col: 'done' }, { base: room.version('card-1') ?? 0 });
  const card: Readonly<Fields> | undefined = room.get('card-1');
  void card?.['title'];
  // @ts-expect-error the local view is read-only
  room.get('card-1')!['title'] = 'changed in place';
  // @ts-expect-error item ids are strings
  await room.set(7, { title: 'x' });

  await room.batch([{ kind: 'set', item: 'a', fields: { n: 1 } }, { kind: 'del', id: 'b' }]);
  await room.delete('card-9');
  await room.publish({ hello: 'world' }, { ephemeral: true });
  const { fence } = await room.lock('card-1', { ttl: 10000 });
  await room.set('card-1', { title: 'Mine' }, { fence });
  await room.unlock('card-1');
  room.presence.set({ caret: [1, 2] });
  for (const [id, fields] of room.items) void [id, fields];
  const pos: { epoch: string | null; seq: number } = room.position;
  void pos, room.pendingCount;

  const body: SharedText = room.text('page-1', 'body');
  const op: TextOp = body.insert(0, 'hello ');
  body.delete(0, 1);
  body.replace('new text', 8);
  body.on('change', ({ value, previous, ops, local, reset }) => void [value, previous, ops, local, reset]);
  body.on('error', ({ code, cid }) => void [code, cid]);
  const state: 'synchronized' | 'awaiting' | 'awaiting-with-buffer' = body.state;
  void op, state, body.rev, cpLength(body.value), apply(body.value, op);
  body.close();

  try {
    await room.set('card-2', { title: 'Two' }, { base: 0 });
  } catch (err) {
    if (err instanceof WsyncError) {
      const code: string = err.code;
      void code, err.details?.current?.version;
    }
  }
  await room.leave();
  await client.close();
  await demo.close();
}

// The text module on its own: a TextDoc with an app-provided sender, bound to
// anything shaped like a <textarea>.
const doc = new TextDoc({ text: 'abc', rev: 3, send: (rev: number, ops: TextOp, cid?: string) => cid ?? `${rev}:${ops.length}` });
doc.insert(1, 'x');
const area = {
  value: '', selectionStart: 0, selectionEnd: 0,
  setSelectionRange(start: number, end: number) { this.selectionStart = start; this.selectionEnd = end; },
  addEventListener() {}, removeEventListener() {},
};
const unbind: () => void = bindTextarea(area, doc, { onSelection: ({ start, end }) => void [start, end] });
unbind();

defineOpKind('counter', {
  apply: (fields, op) => {
    const by = 'by' in op && typeof op.by === 'number' ? op.by : 1;
    return { ...fields, n: Number(fields?.['n'] ?? 0) + by };
  },
});

void work;
