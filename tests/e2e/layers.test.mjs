// layers.test.mjs -- the shape of src/ (docs/SERVER.md "Modules"): folders
// include each other in one direction only, transport (net, http, ws)
// includes nothing of sync or of main, and no file grows past what a reader
// can take in at once.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';

const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src');

function sources(dir = src) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (/\.[ch]$/.test(name)) out.push(p);
  }
  return out;
}

const folderOf = (file) => path.relative(src, path.dirname(file)) || '.';

/** folder -> Set of folders it includes headers from (itself excluded). */
function includeGraph() {
  const g = new Map();
  for (const file of sources()) {
    const from = folderOf(file);
    if (!g.has(from)) g.set(from, new Set());
    for (const [, inc] of readFileSync(file, 'utf8').matchAll(/^#include "([^"]+)"/gm)) {
      const to = folderOf(path.resolve(path.dirname(file), inc));
      if (to !== from) g.get(from).add(to);
    }
  }
  return g;
}

test('no folder includes a header from a folder that includes it back', () => {
  const g = includeGraph();
  assert.ok(g.size >= 8, `read ${g.size} folders`);
  const reaches = (a, b, seen = new Set()) => {
    for (const n of g.get(a) || []) {
      if (n === b) return true;
      if (!seen.has(n)) {
        seen.add(n);
        if (reaches(n, b, seen)) return true;
      }
    }
    return false;
  };
  const cycles = [];
  for (const [a, tos] of g) for (const b of tos) if (reaches(b, a)) cycles.push(`${a} -> ${b} -> ... -> ${a}`);
  assert.deepEqual(cycles, []);
});

test('transport includes nothing of sync, store, auth or main', () => {
  const g = includeGraph();
  for (const t of ['net', 'http', 'ws']) {
    const bad = [...(g.get(t) || [])].filter((f) => ['sync', 'store', 'auth', '.', 'config'].includes(f));
    assert.deepEqual(bad, [], `${t} includes ${bad.join(', ')}`);
  }
});

test('no source file is longer than 800 lines', () => {
  const long = sources()
    .map((f) => [path.relative(src, f), readFileSync(f, 'utf8').split('\n').length - 1])
    .filter(([, n]) => n > 800);
  assert.deepEqual(long, []);
});

test('the Yjs codec (src/yjs) includes only src/common', () => {
  const bad = [...(includeGraph().get('yjs') || [])].filter((f) => f !== 'common');
  assert.deepEqual(bad, []);
});
