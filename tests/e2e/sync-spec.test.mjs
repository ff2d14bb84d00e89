// sync-spec.test.mjs -- places where docs/PROTOCOL.md and the server
// disagreed: welcome.limits against the limits table of 13.1 and the example
// of 3.3; text ops that change nothing (5.7).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';

import { SyncClient, closeClients, snapshotOf, startSyncServer, token } from './lib/sync.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const R = 'board:spec';

let srv;
let c; // joined to R
test.before(async () => {
  srv = await startSyncServer(null, ['--rate', '100000', '--burst', '100000']);
  c = await SyncClient.connect(srv.url, { token: token('spec'), device: 's1' });
  await c.join(R);
  await c.set(R, 'spec.0', 'it', { body: '' });
});
test.after(async () => {
  await closeClients(c);
  await srv.stopChecked();
});

test('welcome.limits holds exactly the limits members of PROTOCOL.md 13.1, as does the example of 3.3', () => {
  const spec = readFileSync(path.join(here, '../../docs/PROTOCOL.md'), 'utf8');
  const s131 = spec.slice(spec.indexOf('### 13.1'), spec.indexOf('### 13.2'));
  const fromTable = new Set();
  for (const line of s131.split('\n')) {
    const cells = line.split('|').map((x) => x.trim());
    if (cells.length < 5 || !cells[1].startsWith('`--')) continue;
    for (const m of cells[3].matchAll(/`([a-z_]+)`/g)) fromTable.add(m[1]);
  }
  const s33 = spec.slice(spec.indexOf('### 3.3'), spec.indexOf('### 3.4'));
  const example = JSON.parse(s33.match(/```json\n([\s\S]*?)```/)[1]);
  const got = Object.keys(c.welcome.limits).sort();
  assert.deepEqual(got, [...fromTable].sort(), '13.1 table vs welcome.limits');
  assert.deepEqual(Object.keys(example.limits).sort(), got, '3.3 example vs welcome.limits');
});

test('text ops that change nothing are refused and take no revision (5.7)', async () => {
  const first = await c.request({ type: 'op', room: R, cid: 'spec.t0', op: { kind: 'text', item: 'it', field: 'body', rev: 0, ops: ['a'] } });
  assert.equal(first.type, 'ack', JSON.stringify(first));
  const rev = first.rev;
  for (const [i, ops] of [[], [1], [0]].entries()) {
    const e = await c.request({ type: 'op', room: R, cid: `spec.e${i}`, op: { kind: 'text', item: 'it', field: 'body', rev, ops } });
    assert.equal(e.type, 'error', `${JSON.stringify(ops)} -> ${JSON.stringify(e)}`);
    assert.equal(e.code, 'invalid_field', `${JSON.stringify(ops)} -> ${JSON.stringify(e)}`);
    assert.equal(e.field, 'op.ops');
  }
  const a = await c.request({ type: 'op', room: R, cid: 'spec.t1', op: { kind: 'text', item: 'it', field: 'body', rev, ops: ['hi'] } });
  assert.equal(a.type, 'ack', JSON.stringify(a));
  assert.equal(a.rev, rev + 1, 'the refused ones took no revision');
  assert.equal((await snapshotOf(srv.url, R)).items.it.fields.body, 'hia');
});
