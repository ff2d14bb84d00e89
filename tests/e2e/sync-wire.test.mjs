// sync-wire.test.mjs -- message-level rules of docs/PROTOCOL.md 1.1 that
// outside testing found broken: request ids are checked before anything
// else; unknown members are ignored whatever number they hold (integers
// beyond int64, reals beyond a double), while an out-of-range number in a
// member a request uses is refused by that member's rule; ids come back
// byte for byte; the nesting limit of 32 levels (containers, not scalars)
// over WebSocket and POST /v1/send.
import assert from 'node:assert/strict';
import test from 'node:test';

import { SyncClient, closeClients, snapshotOf, startSyncServer, token } from './lib/sync.mjs';
import { WAIT_MS, waitUntil, withTimeout } from './lib/server.mjs';

const R = 'board:wire';

let srv;
let c; // joined to R
let raw = []; // the text of every message c received, in order
test.before(async () => {
  srv = await startSyncServer(null, ['--rate', '100000', '--burst', '100000']);
  c = await SyncClient.connect(srv.url, { token: token('wire'), device: 'w1' });
  c.ws.on('message', (d) => raw.push(d.toString()));
  await c.join(R);
  await c.set(R, 'wire.0', 'it', { body: '' });
});
test.after(async () => {
  await closeClients(c);
  await srv.stopChecked();
});

/**
 * Sends raw text; resolves the first message after it (and that message's
 * text) that replies to id, or is an error without re. Reads c.log, so a
 * timed-out wait leaves nothing behind to steal later replies.
 */
async function rawRequest(text, id) {
  const from = c.log.length;
  const rawFrom = raw.length;
  c.send(text);
  const match = (x) => (id !== undefined && x.re === id) || (x.type === 'error' && x.re === undefined);
  await waitUntil(() => c.log.slice(from).some(match), `reply to ${text.slice(0, 120)}`);
  const i = c.log.findIndex((x, k) => k >= from && match(x));
  return { m: c.log[i], text: raw[rawFrom + (i - from)] };
}

test('request ids (1.1)', async (t) => {
  await t.test('a badly shaped id is bad_request without re, checked before type', async () => {
    for (const text of ['{"type":5,"id":1.5}', '{"id":1.5}', '{"type":"frob","id":-1}', '{"type":"ping","id":[1]}',
      '{"type":"ping","id":9007199254740992}', '{"type":"ping","id":100000000000000000000}', '{"type":"ping","id":1e400}',
      `{"type":"ping","id":"${'x'.repeat(65)}"}`]) {
      const { m } = await rawRequest(text);
      assert.equal(m.type, 'error', text);
      assert.equal(m.code, 'bad_request', `${text} -> ${JSON.stringify(m)}`);
      assert.equal('re' in m, false, `${text}: no re`);
      assert.equal(m.field, 'id', text);
    }
    await c.ping();
  });

  await t.test('an unknown member holding any number is ignored; the id comes back unchanged', async () => {
    for (const z of ['100000000000000000000', '-100000000000000000000', '1e400', '-1e400', '1E+999', '9223372036854775808',
      '123456789012345678901234567890.5e300', '[1e400,{"y":100000000000000000000}]']) {
      const text = `{"type":"ping","id":1,"z":${z}}`;
      const { m, text: got } = await rawRequest(text, 1);
      assert.equal(m.type, 'pong', `${text} -> ${JSON.stringify(m)}`);
      assert.equal(got, '{"type":"pong","re":1}', `${text}: the id byte for byte`);
    }
    const { text: got } = await rawRequest('{"z":1e400,"type":"ping","id":9007199254740991}', 9007199254740991);
    assert.equal(got, '{"type":"pong","re":9007199254740991}');
  });

  await t.test('unknown members inside known ones are ignored too', async () => {
    const { m } = await rawRequest(`{"type":"op","id":"u1","room":"${R}","cid":"wire.u1","op":{"kind":"set","item":"u","fields":{"a":1},"z":1e400}}`, 'u1');
    assert.equal(m.type, 'ack', JSON.stringify(m));
    const j = await rawRequest(`{"type":"join","id":"u2","room":"${R}","since":{"epoch":"x","seq":0,"z":100000000000000000000}}`, 'u2');
    assert.equal(j.m.type, 'joined', JSON.stringify(j.m));
  });

  await t.test('a number out of range in a member the request uses is refused by that member\'s rule', async () => {
    const cases = [
      // document content: invalid_field (5.1)
      [`{"type":"op","id":"n1","room":"${R}","cid":"wire.n1","op":{"kind":"set","item":"it","fields":{"a":100000000000000000000}}}`, 'invalid_field', 'op.fields'],
      [`{"type":"op","id":"n2","room":"${R}","cid":"wire.n2","op":{"kind":"set","item":"it","fields":{"a":[1,{"b":1e400}]}}}`, 'invalid_field', 'op.fields'],
      [`{"type":"op","id":"n3","room":"${R}","cid":"wire.n3","op":{"kind":"batch","ops":[{"kind":"set","item":"it","fields":{"a":-1e400}}]}}`, 'invalid_field', 'op.fields'],
      [`{"type":"publish","id":"n4","room":"${R}","data":{"n":100000000000000000000}}`, 'invalid_field', 'data'],
      [`{"type":"publish","id":"n5","room":"${R}","data":1e400,"ephemeral":true}`, 'invalid_field', 'data'],
      [`{"type":"op","id":"n6","room":"${R}","cid":"wire.n6","op":{"kind":"text","item":"it","field":"body","rev":0,"ops":[100000000000000000000]}}`, 'invalid_field', 'op.ops'],
      [`{"type":"presence","id":"n7","room":"${R}","state":{"x":1e400}}`, 'invalid_field', 'state'],
      // protocol integers: bad_request (1.1: 0..2^53-1)
      [`{"type":"recv","id":"n8","n":100000000000000000000}`, 'bad_request', 'n'],
      [`{"type":"recv","id":"n9","n":1e400}`, 'bad_request', 'n'],
      [`{"type":"lock","id":"n10","room":"${R}","item":"it","ttl":100000000000000000000}`, 'bad_request', 'ttl'],
      [`{"type":"cursor","id":"n11","room":"${R}","seq":100000000000000000000}`, 'bad_request', 'seq'],
      [`{"type":"op","id":"n12","room":"${R}","cid":"wire.n12","op":{"kind":"set","item":"it","fields":{},"base":100000000000000000000}}`, 'bad_request', 'op.base'],
      [`{"type":"op","id":"n13","room":"${R}","cid":"wire.n13","op":{"kind":"text","item":"it","field":"body","rev":1e400,"ops":["x"]}}`, 'bad_request', 'op.rev'],
      [`{"type":"join","id":"n14","room":"${R}","since":{"epoch":"x","seq":100000000000000000000}}`, 'bad_request', 'since'],
      [`{"type":"join","id":"n17","room":"board:wire-p","presence":{"x":100000000000000000000}}`, 'invalid_field', 'presence'],
      // a string member: bad_request as for any other wrong type
      [`{"type":"op","id":"n15","room":100000000000000000000,"cid":"wire.n15","op":{"kind":"set","item":"it","fields":{}}}`, 'bad_request', 'room'],
      [`{"type":1e400,"id":"n16"}`, 'unknown_type', 'type'],
    ];
    for (const [text, code, field] of cases) {
      const id = JSON.parse(text.replace(/1e400/g, '0').replace(/100000000000000000000/g, '0')).id;
      const { m } = await rawRequest(text, id);
      assert.equal(m.type, 'error', `${text} -> ${JSON.stringify(m)}`);
      assert.equal(m.code, code, `${text} -> ${JSON.stringify(m)}`);
      assert.equal(m.re, id);
      if (code !== 'unknown_type') assert.equal(m.field, field, `${text} -> ${JSON.stringify(m)}`);
    }
    assert.ok(c.open);
  });

  await t.test('the document was not touched by any of them', async () => {
    const s = await snapshotOf(srv.url, R);
    assert.deepEqual(s.items.it.fields, { body: '' });
    assert.deepEqual(s.items.u.fields, { a: 1 });
  });

  await t.test('before welcome: a hello with a big unknown member is welcomed; a big id is bad_request (1008)', async () => {
    const h = await SyncClient.open(srv.url);
    h.send(`{"type":"hello","id":"h","token":"${token('wire')}","device":"w2","z":100000000000000000000,"q":[1e400]}`);
    const w = await h.waitFor((m) => m.re === 'h', 'welcome');
    assert.equal(w.type, 'welcome', JSON.stringify(w));
    await h.close();
    const b = await SyncClient.open(srv.url);
    b.send(`{"type":"hello","id":1e400,"token":"${token('wire')}","device":"w3"}`);
    const info = await b.closed();
    assert.equal(info.code, 1008);
    assert.equal(b.log.length, 1);
    assert.equal(b.log[0].code, 'bad_request');
    assert.equal('re' in b.log[0], false);
  });

  await t.test('a bad number does not hide bad JSON after it', async () => {
    for (const text of ['{"type":"ping","id":"j1","z":1e400,', '{"type":"ping","id":"j2","z":1e400,"y":"\\u0000"}',
      '{"type":"ping","id":"j3","z":1e400,"id":2}', '{"type":"ping","id":"j4","z":100000000000000000000} x']) {
      const { m } = await rawRequest(text);
      assert.equal(m.type, 'error', text);
      assert.equal(m.code, 'bad_json', `${text} -> ${JSON.stringify(m)}`);
    }
    await c.ping();
  });
});

const nestArr = (n, leaf = '1') => `${'['.repeat(n)}${leaf}${']'.repeat(n)}`;
const nestObj = (n, leaf = '1') => `${'{"k":'.repeat(n)}${leaf}${'}'.repeat(n)}`;

test('nesting: 32 levels of objects and arrays, the message object included, pass; 33 do not (1.1)', async (t) => {
  // The message object is level 1; every array or object inside adds one;
  // a scalar adds none.
  const cases = [
    ['31 arrays holding a scalar', `{"type":"ping","id":"a32","x":${nestArr(31)}}`, 'pong'],
    ['31 arrays, the innermost empty', `{"type":"ping","id":"e32","x":${nestArr(31, '')}}`, 'pong'],
    ['31 objects holding a scalar', `{"type":"ping","id":"o32","x":${nestObj(31)}}`, 'pong'],
    ['32 arrays holding a scalar', `{"type":"ping","id":"a33","x":${nestArr(32)}}`, 'bad_json'],
    ['32 arrays, the innermost empty', `{"type":"ping","id":"e33","x":${nestArr(32, '')}}`, 'bad_json'],
    ['32 objects holding a scalar', `{"type":"ping","id":"o33","x":${nestObj(32)}}`, 'bad_json'],
  ];
  for (const [name, text, want] of cases) {
    const id = text.match(/"id":"(\w+)"/)[1];
    await t.test(`WebSocket: ${name} -> ${want}`, async () => {
      const { m } = await rawRequest(text, want === 'pong' ? id : undefined);
      if (want === 'pong') assert.equal(m.type, 'pong', JSON.stringify(m));
      else assert.equal(m.code, 'bad_json', JSON.stringify(m));
    });
    await t.test(`POST /v1/send, alone and in an array: ${name} -> ${want === 'pong' ? 202 : '400 bad_json'}`, async () => {
      for (const body of [text, `[${text}]`]) {
        const from = c.log.length;
        const res = await withTimeout(fetch(`${srv.url}/v1/send`, {
          method: 'POST', headers: { 'Content-Type': 'application/json', 'Wsync-Session': c.welcome.session }, body,
        }), WAIT_MS, 'POST /v1/send');
        const rt = await res.text();
        if (want === 'pong') {
          assert.equal(res.status, 202, rt);
          const p = await c.waitFor((m) => m.re === id, 'the pong on the WebSocket');
          assert.equal(p.type, 'pong');
        } else {
          assert.equal(res.status, 400, rt);
          assert.equal(JSON.parse(rt).code, 'bad_json', rt);
          await c.ping();
          assert.equal(c.log.slice(from).filter((m) => m.re === id).length, 0);
        }
      }
    });
  }
});

test('POST /v1/send: an unknown member with a big number is ignored; one the request uses is refused', async () => {
  const post = (body) => withTimeout(fetch(`${srv.url}/v1/send`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', 'Wsync-Session': c.welcome.session }, body,
  }), WAIT_MS, 'POST /v1/send');
  let res = await post('[{"type":"ping","id":"pp1","z":100000000000000000000},{"type":"ping","id":"pp2","z":1e400}]');
  assert.equal(res.status, 202, await res.text());
  assert.equal((await c.waitFor((m) => m.re === 'pp1', 'pong 1')).type, 'pong');
  assert.equal((await c.waitFor((m) => m.re === 'pp2', 'pong 2')).type, 'pong');
  res = await post(`{"type":"publish","id":"pp3","room":"${R}","data":100000000000000000000}`);
  assert.equal(res.status, 202, await res.text());
  const e = await c.waitFor((m) => m.re === 'pp3', 'the refusal');
  assert.equal(e.code, 'invalid_field', JSON.stringify(e));
});
