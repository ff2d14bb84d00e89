// install.test.mjs -- `make install` / `make uninstall` (packaging/): the
// files and their modes under a DESTDIR, the installed binary, the man page
// (rendered by man when it is installed, and compared with `serve --help` so
// that the two list the same options), the systemd unit (its hardening, and
// systemd-analyze verify and security when systemd-analyze exists), and the
// example environment file, started with the installed binary to show the
// documented precedence: a flag wins over its WSYNC_* variable.
//
// It installs build/wsync (the release build, which `make e2e` makes) with
// PREFIX=/usr into a temp dir; nothing is written outside it.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { WAIT_MS, WSYNC_BIN, waitUntil } from './lib/server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const PREFIX = '/usr';

/** The environment of a child make: none of the calling make's jobserver or flags. */
function makeEnv() {
  const env = { ...process.env };
  for (const k of ['MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'MAKEOVERRIDES', 'GNUMAKEFLAGS']) delete env[k];
  return env;
}

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60000, ...opts });
  if (r.error) throw r.error;
  return r;
}

const which = (cmd) => sh('sh', ['-c', `command -v ${cmd}`]).stdout.trim();

/** Why the install cannot be tested ('' when it can): build/wsync must exist and be current. */
function cannotInstall() {
  if (!existsSync(path.join(repo, 'build/wsync'))) return 'no build/wsync: run make all (make e2e does)';
  const q = sh('make', ['-q', '-C', repo, 'build/wsync'], { env: makeEnv() });
  if (q.status !== 0) return 'build/wsync is out of date: run make all first (the test does not build)';
  return '';
}

const skipReason = cannotInstall();
let dest = '';
const inDest = (p) => path.join(dest, p);
const files = {
  bin: `${PREFIX}/bin/wsync`,
  man: `${PREFIX}/share/man/man1/wsync.1`,
  unit: `${PREFIX}/lib/systemd/system/wsync.service`,
  env: `${PREFIX}/share/doc/wsync/wsync.env.example`,
};

before(() => {
  if (skipReason) return;
  dest = mkdtempSync(path.join(tmpdir(), 'wsync-install-'));
  const r = sh('make', ['-C', repo, 'install', `DESTDIR=${dest}`, `PREFIX=${PREFIX}`], { env: makeEnv() });
  assert.equal(r.status, 0, `make install failed:\n${r.stdout}\n${r.stderr}`);
});

after(() => {
  if (dest) rmSync(dest, { recursive: true, force: true });
});

/** Every regular file under dir, relative to it. */
function listFiles(dir, base = dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? listFiles(p, base) : ['/' + path.relative(base, p)];
  });
}

/** The options of `serve --help`: [{flag, arg, def, env}]. */
function helpOptions() {
  const r = sh(WSYNC_BIN, ['serve', '--help']);
  assert.equal(r.status, 0);
  const out = [];
  const lines = r.stdout.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^ {2}--([a-z-]+)(?: ([A-Z:=]+))?\s{2,}(.*)$/.exec(lines[i]);
    if (!m) continue;
    const env = /^\s+\[(WSYNC_[A-Z_]+)\]$/.exec(lines[i + 1] || '');
    assert.ok(env, `the line after --${m[1]} names its variable`);
    const def = /\(default ([^)]+)\)$/.exec(m[3]);
    out.push({ flag: m[1], arg: m[2] || null, def: def ? def[1] : null, env: env[1] });
  }
  assert.ok(out.length >= 30, `parsed ${out.length} options from serve --help`);
  return out;
}

/**
 * One line of roff source as the text it prints: escapes and font changes
 * dropped; the arguments of a font macro joined as groff joins them (.B and
 * .I with spaces, the alternating ones such as .BR without).
 */
function plain(line) {
  const unescape = (t) => t.replace(/\\f[BIRP]/g, '').replace(/\\-/g, '-').replace(/\\&/g, '').replace(/\\e/g, '\\')
    .replace(/\\\(aq/g, "'");
  const m = /^\.(B|I|BI|IB|BR|RB|IR|RI)(?:\s+(.*))?$/.exec(line);
  if (!m) return unescape(line);
  const args = [...(m[2] || '').matchAll(/"([^"]*)"|(\S+)/g)].map((a) => a[1] ?? a[2]);
  return unescape(args.join(m[1].length === 1 ? ' ' : ''));
}

/** The man page's entries of one section: {"--flag": {arg, text}} from .TP paragraphs. */
function manEntries(src, section) {
  const body = src.split(/^\.SH /m).find((s) => s.startsWith(section + '\n'));
  assert.ok(body, `the man page has a ${section} section`);
  const entries = {};
  for (const para of body.split(/^\.TP\n/m).slice(1)) {
    const [head, ...rest] = para.split('\n');
    const m = /^--([a-z-]+)(?: (.+))?$/.exec(/^\.(?:BI|B) /.test(head) ? plain(head) : '');
    if (!m) continue;
    entries[m[1]] = {
      arg: m[2] || null,
      text: rest.map(plain).join(' ').replace(/\s+/g, ' '),
    };
  }
  return entries;
}

test('make install puts the binary, man page, unit and example environment in DESTDIR with their modes', { skip: skipReason || false }, () => {
  assert.deepEqual(listFiles(dest).sort(), Object.values(files).sort(), 'exactly these files, nothing else');
  const mode = (p) => statSync(inDest(p)).mode & 0o7777;
  assert.equal(mode(files.bin), 0o755);
  for (const f of [files.man, files.unit, files.env]) assert.equal(mode(f), 0o644, f);
  assert.ok(readFileSync(inDest(files.bin)).equals(readFileSync(path.join(repo, 'build/wsync'))), 'the release binary');

  const unit = readFileSync(inDest(files.unit), 'utf8');
  assert.match(unit, /^ExecStart=\/usr\/bin\/wsync serve --data-dir \$\{STATE_DIRECTORY\}$/m, 'ExecStart names the installed binary');
  const man = readFileSync(inDest(files.man), 'utf8');
  assert.ok(man.includes('/usr/share/doc/wsync/wsync.env.example') && man.includes('/usr/lib/systemd/system/wsync.service'),
    "the man page's paths follow PREFIX");
  for (const [f, text] of [[files.unit, unit], [files.man, man]]) assert.doesNotMatch(text, /\/usr\/local/, `${f}: no /usr/local left`);
});

test('the installed binary runs: --version and serve --help', { skip: skipReason || false }, () => {
  const v = sh(inDest(files.bin), ['--version']);
  assert.equal(v.status, 0, v.stderr);
  assert.match(v.stdout, /^wsync \d+\.\d+\.\d+\n$/);
  const h = sh(inDest(files.bin), ['serve', '--help']);
  assert.equal(h.status, 0);
  assert.match(h.stdout, /--data-dir DIR/);
  // The man page's header carries the same version.
  const man = readFileSync(path.join(repo, 'packaging/wsync.1'), 'utf8');
  assert.match(man, new RegExp(`^\\.TH WSYNC 1 \\S+ "${v.stdout.trim()}"`, 'm'), 'the man page names the version');
});

test('the man page lists every option of serve --help with its argument, default and variable, and the token options', () => {
  const src = readFileSync(path.join(repo, 'packaging/wsync.1'), 'utf8');
  const entries = manEntries(src, 'OPTIONS');
  const opts = helpOptions();
  const documented = Object.keys(entries).filter((f) => !['help', 'version'].includes(f));
  assert.deepEqual(documented, opts.map((o) => o.flag), 'the same options, in the order of --help');
  for (const o of opts) {
    const e = entries[o.flag];
    assert.equal(e.arg, o.arg, `--${o.flag}: argument`);
    assert.ok(e.text.includes(`Environment: ${o.env}.`), `--${o.flag}: names ${o.env}`);
    if (o.def) assert.ok(e.text.includes(`Default: ${o.def}`), `--${o.flag}: default ${o.def} (man: ${e.text})`);
    else assert.match(e.text, /Default: /, `--${o.flag}: says what happens without it`);
  }
  const usage = sh(WSYNC_BIN, ['token', '--help']).stdout;
  const tokenFlags = [...usage.matchAll(/--([a-z-]+)/g)].map((m) => m[1]);
  assert.deepEqual(Object.keys(manEntries(src, 'TOKEN OPTIONS')).sort(), [...new Set(tokenFlags)].sort(), 'token options');
  // The precedence, stated where the user looks for it.
  const envSection = src.split(/^\.SH /m).find((s) => s.startsWith('ENVIRONMENT\n')).split('\n').map(plain).join(' ');
  assert.match(envSection, /There is no configuration file/);
  assert.match(envSection, /an option on the command line/);
});

test('man renders the installed page without warnings', { skip: skipReason || (!which('man') && 'man is not installed (Debian package man-db)') }, () => {
  const r = sh('man', ['--warnings', '-l', inDest(files.man)], {
    env: { ...process.env, MANPAGER: 'cat', PAGER: 'cat', MANWIDTH: '100', LC_ALL: 'C' },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '', 'no groff warnings');
  assert.match(r.stdout, /^WSYNC\(1\)/);
  for (const o of helpOptions()) assert.ok(r.stdout.includes(`--${o.flag}`), `rendered page shows --${o.flag}`);
  assert.match(r.stdout, /ENVIRONMENT[\s\S]*There is no configuration file/);
});

test('the unit carries the hardening and runs serve on the state directory', () => {
  const unit = readFileSync(path.join(repo, 'packaging/wsync.service'), 'utf8');
  const keys = new Map();
  for (const line of unit.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) keys.set(m[1], [...(keys.get(m[1]) || []), m[2]]);
  }
  const want = {
    DynamicUser: 'yes', StateDirectory: 'wsync', ProtectSystem: 'strict', ProtectHome: 'yes', PrivateTmp: 'yes',
    NoNewPrivileges: 'yes', CapabilityBoundingSet: '', RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX',
    SystemCallFilter: '@system-service', EnvironmentFile: '-/etc/wsync/wsync.env',
    ExecStart: '/usr/local/bin/wsync serve --data-dir ${STATE_DIRECTORY}',
  };
  for (const [k, v] of Object.entries(want)) assert.ok((keys.get(k) || []).includes(v), `${k}=${v}`);
  assert.match((keys.get('LimitNOFILE') || [''])[0], /^\d+$/, 'LimitNOFILE');
});

test('systemd-analyze verify accepts the installed unit, and its exposure is low', { skip: skipReason || (!which('systemd-analyze') && 'systemd-analyze is not installed (Debian package systemd)') }, () => {
  // verify checks that ExecStart's binary exists and that the man page of
  // Documentation= is found: a copy of the unit points at the binary in
  // DESTDIR, and MANPATH at its man pages.
  const dir = mkdtempSync(path.join(tmpdir(), 'wsync-unit-'));
  try {
    const unitPath = path.join(dir, 'wsync.service');
    writeFileSync(unitPath, readFileSync(inDest(files.unit), 'utf8').replaceAll(`${PREFIX}/bin/wsync`, inDest(files.bin)));
    const env = { ...process.env, MANPATH: inDest(`${PREFIX}/share/man`), SYSTEMD_LOG_COLOR: '0' };
    const r = sh('systemd-analyze', ['verify', unitPath], { env, cwd: dir });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    assert.equal(`${r.stdout}${r.stderr}`, '', 'no warnings (verify exits 0 on unknown keys and bad values, but says so)');

    // Exposure 0..10 as systemd scores it (threshold is in tenths): 2.5 or
    // less is "OK". --offline needs systemd 250.
    const s = sh('systemd-analyze', ['security', '--offline=true', '--threshold=25', '--no-pager', unitPath], { env, cwd: dir });
    if (/unrecognized option|--offline/.test(s.stderr) && s.status !== 0 && !/Overall exposure/.test(s.stdout)) {
      console.log(`# systemd-analyze security --offline unsupported here: ${s.stderr.trim()}`);
    } else {
      const level = /Overall exposure level for wsync\.service: ([\d.]+)/.exec(s.stdout);
      assert.ok(level, `security printed an exposure level:\n${s.stdout}${s.stderr}`);
      assert.equal(s.status, 0, `exposure ${level[1]} is above 2.5`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Starts the installed binary; resolves {url, stop()} once it listens. */
async function startInstalled(args, env) {
  const proc = spawn(inDest(files.bin), ['serve', ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  let done = null;
  exited.then((e) => (done = e));
  await waitUntil(() => /listening on http:\/\/[0-9.]+:\d+/.test(stderr) || done, 'the installed wsync to listen');
  if (done) throw new Error(`the installed wsync exited (${done.signal || done.code}):\n${stderr}`);
  const url = /listening on (http:\/\/[0-9.]+:\d+)/.exec(stderr)[1];
  return {
    url,
    get stderr() { return stderr; },
    async stop() {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), WAIT_MS);
      const e = await exited;
      clearTimeout(t);
      return e;
    },
  };
}

test('the example environment: every variable is an option; the installed binary starts with it; a flag wins over a variable', { skip: skipReason || false }, async () => {
  const text = readFileSync(inDest(files.env), 'utf8');
  const known = new Set(helpOptions().map((o) => o.env));
  const named = [...text.matchAll(/^#?(WSYNC_[A-Z_]+)=/gm)].map((m) => m[1]);
  assert.ok(named.length >= 5);
  for (const v of named) assert.ok(known.has(v), `${v} is the variable of an option`);
  const set = Object.fromEntries([...text.matchAll(/^(WSYNC_[A-Z_]+)=(.*)$/gm)].map((m) => [m[1], m[2]]));
  assert.ok(set.WSYNC_LISTEN, 'the example sets WSYNC_LISTEN');

  const data = mkdtempSync(path.join(tmpdir(), 'wsync-installed-data-'));
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('WSYNC_')));
  try {
    // As under the unit: the file's variables, and flags on the command line
    // (--listen and --data-dir here). Were the variables to win, the server
    // would listen on the file's fixed port, and fail to create its data dir.
    const srv = await startInstalled(['--listen', '127.0.0.1:0', '--data-dir', data], {
      ...base, ...set, WSYNC_DATA_DIR: '/nonexistent/wsync-data', WSYNC_API_KEY: 'key-from-env-0123456789',
    });
    try {
      assert.notEqual(new URL(srv.url).port, new URL(`http://${set.WSYNC_LISTEN}`).port, '--listen wins over WSYNC_LISTEN');
      assert.ok(existsSync(path.join(data, 'wsync.db')), '--data-dir wins over WSYNC_DATA_DIR');
      const metrics = await fetch(`${srv.url}/metrics`, { headers: { authorization: 'Bearer key-from-env-0123456789' } });
      assert.equal(metrics.status, 200, 'a variable without its flag applies (WSYNC_API_KEY)');
      const health = await (await fetch(`${srv.url}/healthz`)).json();
      assert.equal(health.status, 'ok');
    } finally {
      const e = await srv.stop();
      assert.deepEqual(e, { code: 0, signal: null }, srv.stderr);
    }

    const flagged = await startInstalled(['--listen', '127.0.0.1:0', '--data-dir', data, '--api-key', 'key-from-flag-0123456789'], {
      ...base, WSYNC_API_KEY: 'key-from-env-0123456789',
    });
    try {
      const get = (key) => fetch(`${flagged.url}/metrics`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.status);
      assert.equal(await get('key-from-flag-0123456789'), 200);
      assert.equal(await get('key-from-env-0123456789'), 401, '--api-key wins over WSYNC_API_KEY');
    } finally {
      assert.equal((await flagged.stop()).code, 0);
    }
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
});

test('make uninstall removes every installed file', { skip: skipReason || false }, () => {
  const r = sh('make', ['-C', repo, 'uninstall', `DESTDIR=${dest}`, `PREFIX=${PREFIX}`], { env: makeEnv() });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.deepEqual(listFiles(dest), []);
});
