// helpers.mjs -- shared harness of the browser tests: the real wsync binary
// serving the demo (build/www) with --insecure-demo on a free loopback port,
// one headless Chromium per test file, and board-level actions and waits
// written against the demo's data-testid attributes.
//
// Every wait is a condition polled until it holds (Playwright auto-waiting or
// waitForFunction), bounded by WAIT; nothing sleeps for a fixed time.
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));

// The Makefile passes paths relative to its working directory (this folder);
// lib/server.mjs resolves WSYNC_BIN against tests/e2e. Make it absolute here,
// before server.mjs reads it, so that both conventions find the same binary.
for (const name of ['WSYNC_BIN', 'WSYNC_WWW']) {
  const v = process.env[name];
  if (v && !path.isAbsolute(v) && existsSync(path.resolve(process.cwd(), v))) {
    process.env[name] = path.resolve(process.cwd(), v);
  }
}
const server = await import('../lib/server.mjs');
export const { sleep } = server;

/** The assembled demo (make www): web/ plus clients/js/*.js. */
export const WWW = path.resolve(process.env.WSYNC_WWW || path.join(here, '../../../build/www'));
/** Screenshots go here (git-ignored). */
export const ARTIFACTS = path.resolve(here, '../../artifacts');
/** Bound of one wait: a guard against hangs, never a speed assertion. */
export const WAIT = server.SANITIZED ? 20000 : 10000;

const LAUNCH_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-sync'];

/** Starts wsync serving the demo; stopped (and checked) after the test t. */
export async function startDemoServer(t, extra = []) {
  if (!existsSync(path.join(WWW, 'index.html'))) throw new Error(`no demo at ${WWW}: run make www`);
  if (!existsSync(path.join(WWW, 'wsync.js'))) throw new Error(`no wsync.js in ${WWW}: the JS client is missing`);
  return server.startServer(t, ['--static', WWW, '--insecure-demo', ...extra]);
}

/** One headless Chromium, closed after the test t. */
export async function launchBrowser(t) {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: LAUNCH_ARGS });
  t.after(() => browser.close());
  return browser;
}

/**
 * A fresh browser context (its own localStorage, so its own user and device)
 * with the board of srv opened as `user`. Page errors and console errors are
 * collected in page.problems; a test asserts there are none. setup(context),
 * if given, runs before the page is made.
 */
export async function openBoard(browser, srv, { user, transport, board, viewport, setup } = {}) {
  const context = await browser.newContext({ viewport: viewport || { width: 1100, height: 700 } });
  if (setup) await setup(context); // routes, init scripts: before the page exists
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.problems = [];
  page.on('pageerror', (err) => page.problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    // Offline, failed fetches and WebSocket attempts are logged by Chromium
    // itself (net::ERR_INTERNET_DISCONNECTED); those are expected.
    if (msg.type() === 'error' && !/ERR_INTERNET_DISCONNECTED|Failed to load resource|WebSocket connection/.test(msg.text())) {
      page.problems.push(`console: ${msg.text()}`);
    }
  });
  const q = new URLSearchParams();
  if (user) q.set('user', user);
  if (transport) q.set('transport', transport);
  await page.goto(`${srv.url}/?${q}${board ? `#${board}` : ''}`);
  await page.locator('[data-testid="board"][data-ready="true"]').waitFor();
  await waitStatus(page, 'online');
  return { context, page };
}

export const status = (page) => page.locator('[data-testid="status"]').getAttribute('data-status');

export async function waitStatus(page, want, ms = WAIT) {
  try {
    await page.locator(`[data-testid="status"][data-status="${want}"]`).waitFor({ timeout: ms });
  } catch (err) {
    const now = await page.evaluate(() => ({
      shown: document.querySelector('[data-testid="status"]').dataset.status,
      client: window.wsyncDemo && window.wsyncDemo.client.status,
      history: window.wsyncDemo && window.wsyncDemo.statusHistory,
    }));
    throw new Error(`status indicator not "${want}" within ${ms} ms: ${JSON.stringify(now)}`, { cause: err });
  }
}

/** The card with this title (exact), as a locator. */
export const card = (page, title) => page.locator(`[data-testid="card"][data-title="${title.replace(/"/g, '\\"')}"]`);

/** The card with this id, as a locator (for titles a selector cannot spell, or that change). */
export const cardById = (page, id) => page.locator(`[data-testid="card"][data-id="${id}"]`);

export async function addCard(page, col, title) {
  const column = page.locator(`[data-testid="column"][data-col="${col}"]`);
  await column.locator('[data-testid="add-input"]').fill(title);
  await column.locator('[data-testid="add-button"]').click();
  await card(page, title).waitFor();
  return card(page, title).getAttribute('data-id');
}

/** Opens the title editor of a card, types the new title, saves. */
export async function renameCard(page, title, next) {
  const c = card(page, title);
  await c.locator('[data-testid="card-edit"]').click();
  const input = c.locator('[data-testid="title-input"]');
  await input.waitFor({ state: 'visible' });
  await input.fill(next);
  await c.locator('[data-testid="title-save"]').click();
  await card(page, next).waitFor();
}

export async function moveCard(page, title, dir) {
  await card(page, title).locator(`[data-testid="card-${dir}"]`).click();
}

/** What the page shows: per column, the cards in order as [id, title]. */
export function shownBoard(page) {
  return page.evaluate(() => {
    const out = {};
    for (const col of document.querySelectorAll('[data-testid="column"]')) {
      out[col.dataset.col] = [...col.querySelectorAll('[data-testid="card"]')]
        .map((c) => [c.dataset.id, c.querySelector('[data-testid="card-title"]').textContent]);
    }
    return out;
  });
}

/** Titles only, per column, in order. */
export async function shownTitles(page) {
  const b = await shownBoard(page);
  return Object.fromEntries(Object.entries(b).map(([col, cards]) => [col, cards.map((c) => c[1])]));
}

/**
 * Waits until every page shows the same board, with no card waiting for an
 * ack, and accept(board) holds; returns that board. On timeout the error
 * shows what each page had.
 */
export async function converge(pages, accept = () => true, ms = WAIT) {
  const end = Date.now() + ms;
  let last = [];
  for (;;) {
    last = await Promise.all(pages.map(async (p) => ({
      board: await shownTitles(p),
      pending: await p.locator('[data-testid="card"][data-pending="true"]').count(),
    })));
    const first = JSON.stringify(last[0].board);
    if (last.every((s) => s.pending === 0 && JSON.stringify(s.board) === first) && accept(last[0].board)) {
      return last[0].board;
    }
    if (Date.now() > end) {
      throw new Error(`pages did not converge within ${ms} ms:\n${last.map((s, i) => `page ${i}: ${JSON.stringify(s)}`).join('\n')}`);
    }
    await sleep(25);
  }
}

export function artifactPath(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, name);
}
