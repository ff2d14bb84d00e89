// client-names.test.mjs -- the JavaScript client calls item ids `item`, as
// the wire protocol does, and keeps `id` as an alias where a member is named
// (clients/js/README.md): batch entries take either, and 'change' events
// carry both, `id` being the one a spread or JSON copy keeps.
import assert from 'node:assert/strict';
import test from 'node:test';

import { SERVER_ARGS, makeClient, serverDoc, settled } from './lib/client-util.mjs';
import { startSyncServer } from './lib/sync.mjs';

test('item and its alias id: batch entries, change events', async (t) => {
  const srv = await startSyncServer(t, SERVER_ARGS);
  const room = 'board:names';
  const a = makeClient(t, srv.url, { user: 'alice', transport: 'ws' });
  const b = makeClient(t, srv.url, { user: 'bob', transport: 'ws' });
  const ra = a.room(room);
  const rb = b.room(room);
  await Promise.all([ra.ready, rb.ready]);
  const local = [];
  const remote = [];
  ra.on('change', (e) => local.push(e));
  rb.on('change', (e) => remote.push(e));

  await ra.batch([
    { kind: 'set', item: 'by-item', fields: { n: 1 } },
    { kind: 'set', id: 'by-id', fields: { n: 2 } },
  ]);
  await ra.set('gone', { n: 3 });
  await ra.batch([{ kind: 'del', id: 'gone' }, { kind: 'delete', item: 'by-item' }]);
  await settled([ra, rb], 3);
  assert.deepEqual(await serverDoc(srv.url, room), { 'by-id': { n: 2 } }, 'both spellings reached the server as items');
  assert.deepEqual(rb.get('by-id'), { n: 2 });
  assert.equal(rb.version('by-id'), 1);

  assert.throws(() => ra.batch([{ kind: 'set', fields: { n: 4 } }]), TypeError, 'an entry naming no item is refused');
  assert.equal(ra.pendingCount, 0, 'and nothing was sent');

  for (const [who, evs] of [['local', local], ['remote', remote]]) {
    assert.deepEqual(new Set(evs.map((e) => e.item)), new Set(['by-item', 'by-id', 'gone']), `${who}: every item changed`);
    for (const e of evs) {
      assert.equal(typeof e.item, 'string', `${who}: item`);
      assert.equal(e.id, e.item, `${who}: id is the same as item`);
      const { item, id } = e;
      assert.equal(item, id, `${who}: both destructure`);
      const copy = { ...e };
      assert.equal(copy.id, e.item, `${who}: a copy keeps id`);
      assert.equal('item' in copy, false, `${who}: item is not enumerated`);
      // The members it always had, and the author and seq of a log entry's change.
      const keys = ['id', 'fields', 'version', 'local', 'removed'];
      assert.deepEqual(Object.keys(e), e.seq === undefined ? keys : [...keys, 'from', 'seq']);
    }
  }
  assert.ok(remote.some((e) => e.item === 'gone' && e.removed && e.id === 'gone'), 'a removal names the item both ways');
});
