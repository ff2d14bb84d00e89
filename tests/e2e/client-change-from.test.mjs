// client-change-from.test.mjs -- 'change' events of the JavaScript client
// (clients/js/wsync.js) say who made the change: `from` ({user, device}, or
// {backend: true} for the backend API) and `seq` of the log entry that
// caused it (docs/PROTOCOL.md 5.4); a change made by this client itself is
// reported at once with `local: true` (and no author: it is not in the log
// yet). One server, every transport.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { KEY, SERVER_ARGS, makeClient, recordRoom, settled } from './lib/client-util.mjs';
import { api, startSyncServer } from './lib/sync.mjs';

const TRANSPORTS = (process.env.WSYNC_CLIENT_TRANSPORTS || 'ws,sse,poll').split(',');

describe('change events carry from and seq', () => {
  let srv;
  test('server', async () => {
    srv = await startSyncServer(null, SERVER_ARGS);
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: remote, own and backend changes`, async (t) => {
      const room = `board:from-${transport}`;
      const a = makeClient(t, srv.url, { user: 'alice', transport });
      const b = makeClient(t, srv.url, { user: 'bob', transport });
      const ra = recordRoom(a.room(room));
      const rb = b.room(room);
      await Promise.all([ra.ready, rb.ready]);
      const changes = (id) => ra.events.filter((e) => e.event === 'change' && e.id === id);

      // bob's write reaches alice with bob as its author and its seq.
      const byBob = await rb.set('card-1', { title: 'from bob' });
      await settled([ra, rb], byBob.seq);
      const remote = changes('card-1');
      assert.equal(remote.length, 1);
      assert.deepEqual(remote[0].from, { user: 'bob', device: b.device });
      assert.equal(remote[0].seq, byBob.seq);
      assert.equal(remote[0].local, false);
      assert.equal(remote[0].version, byBob.seq);

      // alice's own write: reported at once as local, without an author.
      const mine = ra.set('card-2', { title: 'from alice' });
      const own = changes('card-2');
      assert.equal(own.length, 1, 'the optimistic change, at once');
      assert.equal(own[0].local, true);
      assert.equal(own[0].from, undefined);
      assert.equal(own[0].seq, undefined);
      const ack = await mine;
      await settled([ra, rb], ack.seq);
      // Its entry confirms it (the version is known now): the author is alice.
      const confirmed = changes('card-2').filter((e) => !e.local);
      assert.equal(confirmed.length, 1);
      assert.deepEqual(confirmed[0].from, { user: 'alice', device: a.device });
      assert.equal(confirmed[0].seq, ack.seq);

      // A write through the backend API.
      const w = await api(srv.url, 'POST', `/v1/rooms/${room}/ops`, { key: KEY, body: { op: { kind: 'del', item: 'card-1' } } });
      assert.equal(w.status, 200, w.text);
      await settled([ra, rb], w.body.seq);
      const backend = changes('card-1').at(-1);
      assert.equal(backend.removed, true);
      assert.equal(backend.from && backend.from.backend, true);
      assert.equal(backend.seq, w.body.seq);

      // A batch: every item it touched is reported with the batch's seq.
      const batch = await rb.batch([{ kind: 'set', item: 'x', fields: { n: 1 } }, { kind: 'set', item: 'y', fields: { n: 2 } }]);
      await settled([ra, rb], batch.seq);
      for (const id of ['x', 'y']) {
        const e = changes(id).at(-1);
        assert.equal(e.seq, batch.seq, `${id}: seq`);
        assert.equal(e.from.user, 'bob', `${id}: from`);
      }
    });
  }

  test('stop', async () => {
    await srv.stopChecked();
  });
});
