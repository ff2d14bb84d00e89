// examples.test.mjs -- the token minting examples of docs/TOKENS.md
// (examples/mint-token.mjs, examples/mint_token.py) against the real server:
// mint, hello, welcome; the grants are the ones minted; a device-bound token
// refuses another device.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';

import { SECRET, SyncClient, startSyncServer } from './lib/sync.mjs';

const EX = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../examples');
const hasPython = !spawnSync('python3', ['--version']).error;

const minters = [
  ['node', ['node', [path.join(EX, 'mint-token.mjs')]]],
  ['python', ['python3', [path.join(EX, 'mint_token.py')]], !hasPython && 'no python3'],
];

let srv;
test.before(async () => { srv = await startSyncServer(null); });
test.after(() => srv.stopChecked());

function mint(cmd, args, user, device, grants) {
  const r = spawnSync(cmd, [...args, user, device || '', JSON.stringify(grants)], {
    env: { ...process.env, WSYNC_AUTH_SECRET: SECRET }, encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  const tok = r.stdout.trim();
  assert.match(tok, /^[\w-]+\.[\w-]+\.[\w-]+$/);
  return tok;
}

for (const [name, [cmd, args], skip] of minters) {
  test(`${name} example: the minted token says hello and gets welcome, with its grants`, { skip }, async () => {
    const tok = mint(cmd, args, `ex-${name}`, '', { 'board:*': 'rw', 'chat:lobby': 'r' });
    const c = await SyncClient.connect(srv.url, { token: tok, device: `${name}-dev` });
    assert.equal(c.welcome.type, 'welcome');
    assert.equal(c.welcome.user, `ex-${name}`);
    await c.join('board:ex');
    await c.set('board:ex', 'c1', 'card', { t: 1 });
    await c.join('chat:lobby');
    const w = await c.op('chat:lobby', 'c2', { kind: 'set', item: 'x', fields: {} });
    assert.equal(w.code, 'forbidden');
    await c.expectError({ type: 'join', room: 'other:1' }, 'forbidden');
    await c.close();
  });

  test(`${name} example: a device-bound token refuses another device`, { skip }, async () => {
    const tok = mint(cmd, args, `ex2-${name}`, 'phone-1', {});
    const ok = await SyncClient.connect(srv.url, { token: tok });
    assert.equal(ok.welcome.device, 'phone-1');
    await ok.close();
    await assert.rejects(SyncClient.connect(srv.url, { token: tok, device: 'laptop-2' }), /token_invalid/);
  });
}
