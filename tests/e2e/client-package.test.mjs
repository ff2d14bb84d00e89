// client-package.test.mjs -- the JavaScript client as the npm package a user
// installs (clients/js/package.json): `npm pack` into a temp dir, the tarball
// installed into a fresh project (offline: it has no dependencies), and from
// that install
//   - the manifest and the tarball's contents (only the runtime files and
//     their types; every relative import shipped);
//   - the declarations, through a TypeScript application
//     (package-consumer/index.ts) compiled with tsc --strict --noEmit, once
//     as a Node project (nodenext) and once as a bundled browser app;
//   - a sync round trip in Node against the real server (two clients);
//   - the same package bundled by esbuild into a page, served by the server
//     with --static, and a round trip between two headless Chromium contexts;
//   - the size of the minified bundle, raw and gzipped, which the client
//     README's Install section states.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';

import { WAIT_MS, SANITIZED } from './lib/server.mjs';
import { mintToken, startSyncServer } from './lib/sync.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const clientDir = path.join(repo, 'clients/js');
const consumerDir = path.join(here, 'package-consumer');
const nodeBin = (name) => path.join(here, 'node_modules/.bin', name);
const CHROMIUM = '/usr/bin/chromium';
const NAME = '@wsync/client';

/** Runs a command to completion (bounded); fails with its output unless it exits 0. */
function run(cmd, args, { cwd, env = {}, timeout = 120000 } = {}) {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    timeout,
    env: { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false', ...env },
  });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

let work = '';      // temp dir: the tarball, the project
let project = '';   // the fresh project the tarball is installed in
let packed = null;  // npm pack --json's record of the tarball

before(() => {
  work = mkdtempSync(path.join(tmpdir(), 'wsync-package-'));
  const r = run('npm', ['pack', '--json', '--pack-destination', work], { cwd: clientDir });
  [packed] = JSON.parse(r.stdout.slice(r.stdout.indexOf('[')));
  project = path.join(work, 'app');
  mkdirSync(project);
  writeFileSync(path.join(project, 'package.json'),
    JSON.stringify({ name: 'wsync-package-app', private: true, type: 'module' }, null, 2));
  // The tarball has no dependencies (and ws is an optional peer), so nothing
  // is fetched: --offline keeps the test off the network.
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', path.join(work, packed.filename)], { cwd: project });
  for (const f of ['index.ts', 'tsconfig.json', 'tsconfig.bundler.json', 'roundtrip.mjs', 'page.js']) {
    copyFileSync(path.join(consumerDir, f), path.join(project, f));
  }
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

const installed = () => path.join(project, 'node_modules', NAME);

test('the manifest: ESM, exports with types, no dependencies, a license consistent with the repository', () => {
  const pkg = JSON.parse(readFileSync(path.join(clientDir, 'package.json'), 'utf8'));
  assert.equal(pkg.name, NAME);
  assert.match(pkg.version, /^\d+\.\d+\.\d+$/);
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.sideEffects, false);
  assert.ok(pkg.engines && pkg.engines.node, 'engines.node');
  assert.equal(pkg.dependencies, undefined, 'no runtime dependencies');
  assert.equal(pkg.peerDependenciesMeta?.ws?.optional, true, 'ws is an optional peer (Node only)');
  // Every export target (and the top-level types) is a file that is shipped.
  const targets = [pkg.types, pkg.main];
  for (const [sub, e] of Object.entries(pkg.exports)) {
    if (typeof e === 'string') targets.push(e);
    else {
      assert.deepEqual(Object.keys(e), ['types', 'default'], `${sub}: types must come first`);
      targets.push(e.types, e.default);
    }
  }
  for (const t of targets) {
    assert.ok(existsSync(path.join(clientDir, t)), `${t} exists`);
    assert.ok(t === './package.json' || pkg.files.includes(t.replace(/^\.\//, '')), `${t} is in files`);
  }
  // No LICENSE in the repository: nobody is granted a license, and the
  // manifest must not claim one.
  const licensed = ['LICENSE', 'LICENSE.md', 'LICENSE.txt', 'COPYING'].find((f) => existsSync(path.join(repo, f)));
  if (!licensed) assert.equal(pkg.license, 'UNLICENSED');
  else assert.notEqual(pkg.license, 'UNLICENSED', `${licensed} exists: name its license`);
});

test('the tarball holds the runtime modules, their types, README and manifest; every relative import is shipped', () => {
  const files = packed.files.map((f) => f.path).sort();
  assert.deepEqual(files, ['README.md', 'package.json', 'persist.js', 'text.d.ts', 'text.js', 'transports.js', 'wsync.d.ts', 'wsync.js']);
  for (const f of files.filter((n) => /\.(js|d\.ts)$/.test(n))) {
    const src = readFileSync(path.join(installed(), f), 'utf8');
    for (const m of src.matchAll(/(?:^|\s)(?:import|export)\b[^'";]*?from\s*['"](\.[^'"]+)['"]/gm)) {
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(f), m[1]));
      const shipped = target.endsWith('.js') && f.endsWith('.d.ts') ? target.replace(/\.js$/, '.d.ts') : target;
      assert.ok(files.includes(shipped), `${f} imports ${m[1]}, which the tarball lacks (add it to "files")`);
    }
  }
});

test('types: a TypeScript application compiles with tsc --strict --noEmit (nodenext and bundler resolution)', () => {
  for (const config of ['tsconfig.json', 'tsconfig.bundler.json']) {
    run(nodeBin('tsc'), ['-p', config, '--strict', '--noEmit'], { cwd: project, timeout: 120000 });
  }
});

test('Node: the installed package syncs through a real server (ws and SSE clients, a set each way, a text edit)', async (t) => {
  const srv = await startSyncServer(t);
  const require = createRequire(import.meta.url);
  const r = run(process.execPath, ['roundtrip.mjs'], {
    cwd: project,
    timeout: WAIT_MS * 3,
    env: {
      WSYNC_URL: srv.url,
      WS_MODULE: pathToFileURL(require.resolve('ws')).href,
      TOKEN_ALICE: mintToken({ user: 'alice', grants: ['board:*=rw'] }),
      TOKEN_BOB: mintToken({ user: 'bob', grants: ['board:*=rw'] }),
      ROUNDTRIP_TIMEOUT_MS: String(WAIT_MS * 2),
    },
  });
  const out = JSON.parse(r.stdout.trim().split('\n').pop());
  assert.deepEqual(out.transports, ['ws', 'sse']);
  assert.deepEqual(out.users, ['alice', 'bob']);
  assert.ok(out.ackSeq >= 1);
  assert.deepEqual(out.atBob, { title: 'from alice', n: 1 });
  assert.deepEqual(out.atAlice, { title: 'from alice', n: 1, reply: 'from bob' });
  assert.equal(out.text, 'héllo 👋');
  assert.equal(out.textCodePoints, 7);
  assert.equal(out.textModule, 'aXb', '@wsync/client/text works on its own');
  assert.equal(out.deepImport, 'ERR_PACKAGE_PATH_NOT_EXPORTED', 'internal modules are not importable');
});

/** esbuild bundles entry (a path in the project) for browsers, minified; returns the output bytes. */
async function bundle(esbuild, entry, outfile) {
  const res = await esbuild.build({
    absWorkingDir: project,
    entryPoints: [entry],
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2020',
    outfile,
    logLevel: 'silent',
  });
  assert.deepEqual(res.errors, []);
  assert.deepEqual(res.warnings, []);
  return readFileSync(outfile);
}

test('the bundle size, minified and gzipped, is what the client README says', async (t) => {
  const esbuild = await import('esbuild');
  writeFileSync(path.join(project, 'size-client.js'), `export { Client } from '${NAME}';\n`);
  writeFileSync(path.join(project, 'size-all.js'), `export * from '${NAME}';\nexport * as text from '${NAME}/text';\n`);
  const sizes = {};
  for (const which of ['client', 'all']) {
    const code = await bundle(esbuild, `size-${which}.js`, path.join(work, `size-${which}.min.js`));
    sizes[which] = { min: code.length, gzip: gzipSync(code, { level: 9 }).length };
    t.diagnostic(`${which}: ${code.length} bytes minified, ${sizes[which].gzip} bytes gzipped`);
  }
  // The README rounds to 0.1 kB; the check tolerates what a few edits of the
  // client add or remove, and fails when the figure has gone stale.
  const readme = readFileSync(path.join(clientDir, 'README.md'), 'utf8');
  const m = /minified: ([\d.]+) kB, gzipped: ([\d.]+) kB/.exec(readme);
  assert.ok(m, 'the README states "minified: N kB, gzipped: N kB"');
  const [min, gz] = [Number(m[1]) * 1000, Number(m[2]) * 1000];
  const near = (stated, actual) => Math.abs(stated - actual) / actual <= 0.15;
  assert.ok(near(min, sizes.client.min) && near(gz, sizes.client.gzip),
    `README says ${m[1]} kB / ${m[2]} kB; the bundle is now ${(sizes.client.min / 1000).toFixed(1)} kB minified, ` +
    `${(sizes.client.gzip / 1000).toFixed(1)} kB gzipped: update the Install section of clients/js/README.md`);
});

test('Chromium: the installed package, bundled by esbuild, syncs between two browser contexts', { skip: !existsSync(CHROMIUM) && `no ${CHROMIUM}` }, async (t) => {
  const esbuild = await import('esbuild');
  const { launchBrowser } = await import('./browser/helpers.mjs');
  const www = path.join(work, 'www');
  mkdirSync(www, { recursive: true });
  await bundle(esbuild, 'page.js', path.join(www, 'app.js'));
  copyFileSync(path.join(consumerDir, 'index.html'), path.join(www, 'index.html'));
  const srv = await startSyncServer(t, ['--static', www]);
  const browser = await launchBrowser(t);
  const wait = SANITIZED ? 30000 : 10000;

  const open = async (user) => {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(wait);
    page.problems = [];
    page.on('pageerror', (err) => page.problems.push(`pageerror: ${err.message}`));
    page.on('console', (msg) => msg.type() === 'error' && page.problems.push(`console: ${msg.text()}`));
    await page.goto(`${srv.url}/index.html`);
    await page.waitForFunction(() => document.body.dataset.ready === 'true' && window.wsyncPackage);
    const transport = await page.evaluate(async (token) => {
      const client = new window.wsyncPackage.Client(location.origin, { token });
      const room = client.room('board:browser-package');
      await room.ready;
      Object.assign(window, { client, room });
      return client.transport;
    }, mintToken({ user, grants: ['board:*=rw'] }));
    assert.equal(transport, 'ws');
    return page;
  };
  const alice = await open('alice');
  const bob = await open('bob');

  await alice.evaluate(() => window.room.set('card-1', { title: 'from alice' }));
  await bob.waitForFunction(() => window.room.get('card-1')?.title === 'from alice');
  await bob.evaluate(() => window.room.set('card-1', { reply: 'from bob' }));
  await alice.waitForFunction(() => window.room.get('card-1')?.reply === 'from bob');
  assert.deepEqual(await alice.evaluate(() => window.room.get('card-1')), { title: 'from alice', reply: 'from bob' });

  for (const page of [alice, bob]) {
    await page.evaluate(() => window.client.close());
    assert.deepEqual(page.problems, []);
  }
});
