// note.test.mjs -- the shared note of a card (room.text(card, 'note')): two
// users type into it at once, over WebSocket and over the fallback
// transports, and with one of them offline for a while; both pages and the
// server end with the same text, holding everything each typed exactly once.
// Each page shows the other's caret (presence) where the other's caret is.
//
// Where each one types: alice at the start of the note, bob at its end, with
// a separator typed first between them. Their carets never meet, so no two
// inserts tie and the final text is known exactly: alice's words, the
// separator, bob's words. Typos (one an emoji) are typed and erased with
// Backspace on the way. Timing is random (a seeded generator; the seed is
// printed, NOTE_SEED=<n> replays it), never asserted.
import assert from 'node:assert/strict';
import test from 'node:test';
import { addCard, artifactPath, launchBrowser, openBoard, sleep, startDemoServer, WAIT } from './helpers.mjs';
import { mulberry32 } from '../lib/rng.mjs';

const API_KEY = 'note-test-key-0123';
const SEP = '~~~';
const ALICE = ['alpha', 'bravo', 'café', 'naïve', '日本語', 'party🎉', 'zulu'];
const BOB = ['one', 'two', 'über', 'señor', 'smile😀x', 'Ωmega', 'final'];
const ALICE_OFF = ['offline', 'Ärger', 'still🚀'];
const BOB_OFF = ['meanwhile', 'façade', 'more'];

const typed = (words) => words.map((w) => `${w} `).join('');

function seeded(t) {
  const seed = Number(process.env.NOTE_SEED) || Math.floor(Math.random() * 2 ** 31);
  t.diagnostic(`NOTE_SEED=${seed}`);
  return mulberry32(seed);
}

const noteInput = (page, id) => page.locator(`[data-testid="card"][data-id="${id}"] [data-testid="note-input"]`);
const cursorOf = (page, id, who) => page.locator(`[data-testid="card"][data-id="${id}"] [data-testid="note-cursor"][data-user="${who}"]`);

/**
 * Two users on one board; alice makes a card and types the separator in its
 * note; then alice's caret goes to the start, bob's to the end.
 */
async function setup(t, { transports = [] } = {}) {
  const srv = await startDemoServer(t, ['--api-key', API_KEY]);
  const browser = await launchBrowser(t);
  const a = await openBoard(browser, srv, { user: 'alice', transport: transports[0] });
  const b = await openBoard(browser, srv, { user: 'bob', transport: transports[1] });
  const id = await addCard(a.page, 'todo', 'Shared note');
  const na = noteInput(a.page, id);
  const nb = noteInput(b.page, id);
  await na.click();
  await a.page.keyboard.type(SEP);
  await waitNotes([a.page, b.page], id, SEP);
  await a.page.keyboard.press('Control+Home');
  await nb.click();
  await b.page.keyboard.press('Control+End');
  assert.equal(await na.evaluate((el) => el.selectionStart), 0);
  assert.equal(await nb.evaluate((el) => el.selectionStart), SEP.length);
  return { srv, browser, a, b, id };
}

/** Types each word and a space at the caret, with random pauses and a typo fixed now and then. */
async function typeWords(page, words, rnd) {
  for (const w of words) {
    if (rnd() < 0.35) {
      const typo = rnd() < 0.5 ? 'qx' : 'k😬'; // each erased with two Backspaces (the emoji is one character)
      await page.keyboard.type(typo, { delay: Math.floor(rnd() * 8) });
      for (let i = 0; i < 2; i++) await page.keyboard.press('Backspace');
    }
    await page.keyboard.type(`${w} `, { delay: Math.floor(rnd() * 12) });
    await sleep(Math.floor(rnd() * 30));
  }
}

/**
 * Waits until the note of every page shows want with every edit confirmed
 * (state 'synchronized'); on timeout the error shows what each page had.
 */
async function waitNotes(pages, id, want, ms = WAIT) {
  const end = Date.now() + ms;
  for (;;) {
    const seen = await Promise.all(pages.map((p) => p.evaluate((item) => {
      const ta = document.querySelector(`[data-testid="card"][data-id="${item}"] [data-testid="note-input"]`);
      return { shown: ta ? ta.value : null, doc: window.wsyncDemo.note(item) };
    }, id)));
    if (seen.every((s) => s.shown === want && s.doc && s.doc.value === want && s.doc.state === 'synchronized')) return;
    if (Date.now() > end) {
      throw new Error(`notes did not converge to ${JSON.stringify(want)} within ${ms} ms:\n`
        + seen.map((s, i) => `page ${i}: ${JSON.stringify(s)}`).join('\n'));
    }
    await sleep(25);
  }
}

/** The note as the server has it (backend API, PROTOCOL.md 12.3). */
async function serverNote(srv, id) {
  const res = await fetch(`${srv.url}/v1/rooms/board:demo`, { headers: { Authorization: `Bearer ${API_KEY}` } });
  assert.equal(res.status, 200);
  const body = await res.json();
  return body.items[id].fields.note;
}

function assertOnce(text, words) {
  for (const w of words) assert.equal(text.split(w).length - 1, 1, `${JSON.stringify(w)} should occur once in ${JSON.stringify(text)}`);
}

for (const transports of [[], ['sse', 'poll']]) {
  const how = transports.length ? `alice over ${transports[0]}, bob over ${transports[1]}` : 'both over WebSocket';
  test(`two users type into one note at once (${how})`, { timeout: 30000 }, async (t) => {
    const rnd = seeded(t);
    const { srv, a, b, id } = await setup(t, { transports });
    if (transports.length) {
      assert.equal(await a.page.evaluate(() => window.wsyncDemo.client.transport), transports[0]);
      assert.equal(await b.page.evaluate(() => window.wsyncDemo.client.transport), transports[1]);
    }
    await Promise.all([typeWords(a.page, ALICE, rnd), typeWords(b.page, BOB, rnd)]);

    const want = `${typed(ALICE)}${SEP}${typed(BOB)}`;
    await waitNotes([a.page, b.page], id, want);
    assertOnce(want, [...ALICE, ...BOB]);
    assert.equal(await serverNote(srv, id), want);
    // The note is its own field: the card's other fields are untouched.
    assert.equal(await a.page.locator(`[data-testid="card"][data-id="${id}"]`).getAttribute('data-title'), 'Shared note');
    // A reload opens the note with its text, all of it in view (the textarea fits it).
    await b.page.reload();
    await b.page.locator('[data-testid="board"][data-ready="true"]').waitFor();
    await waitNotes([b.page], id, want);
    const fit = await noteInput(b.page, id).evaluate((el) => ({ scroll: el.scrollHeight, client: el.clientHeight }));
    assert.ok(fit.scroll <= fit.client, `note text overflows its textarea after a reload: ${JSON.stringify(fit)}`);
    assert.deepEqual([...a.page.problems, ...b.page.problems], []);
  });
}

test('a note edited offline by one and online by the other converges', { timeout: 45000 }, async (t) => {
  const rnd = seeded(t);
  const { srv, a, b, id } = await setup(t);
  await Promise.all([typeWords(a.page, ALICE.slice(0, 3), rnd), typeWords(b.page, BOB.slice(0, 3), rnd)]);

  await a.context.setOffline(true);
  await a.page.locator('[data-testid="status"][data-status="offline"]').waitFor({ timeout: 20000 });
  await Promise.all([typeWords(a.page, ALICE_OFF, rnd), typeWords(b.page, BOB_OFF, rnd)]);
  // Bob does not see what alice typed offline; alice's own edits wait unconfirmed.
  assert.equal((await noteInput(b.page, id).inputValue()).includes('offline'), false);
  assert.notEqual((await a.page.evaluate((item) => window.wsyncDemo.note(item), id)).state, 'synchronized');
  await a.context.setOffline(false);
  await a.page.locator('[data-testid="status"][data-status="online"]').waitFor({ timeout: 20000 });

  const want = `${typed([...ALICE.slice(0, 3), ...ALICE_OFF])}${SEP}${typed([...BOB.slice(0, 3), ...BOB_OFF])}`;
  await waitNotes([a.page, b.page], id, want, 20000);
  assertOnce(want, [...ALICE.slice(0, 3), ...ALICE_OFF, ...BOB.slice(0, 3), ...BOB_OFF]);
  assert.equal(await serverNote(srv, id), want);
  assert.deepEqual([...a.page.problems, ...b.page.problems], []);
});

/**
 * Where page shows other's caret: the marker's indices and whether it lies
 * inside the textarea (null when there is none). Read in one evaluate: the
 * overlay is redrawn at every change.
 */
function marker(page, id, other) {
  return page.evaluate(([item, who]) => {
    const wrap = document.querySelector(`[data-testid="card"][data-id="${item}"] .note-wrap`);
    const el = wrap && wrap.querySelector(`[data-testid="note-cursor"][data-user="${who}"]`);
    if (!el) return null;
    const ta = wrap.querySelector('textarea').getBoundingClientRect();
    const r = el.getBoundingClientRect();
    return {
      pos16: Number(el.dataset.pos16),
      start16: Number(el.dataset.start16),
      end16: Number(el.dataset.end16),
      label: el.textContent,
      inside: r.left >= ta.left && r.right <= ta.right && r.top >= ta.top && r.bottom <= ta.bottom && r.height > 0,
    };
  }, [id, other]);
}

const selection = (page, id) => noteInput(page, id).evaluate((el) => ({ start: el.selectionStart, end: el.selectionEnd }));

/** Waits until page's marker of other's caret sits where other's selection is. */
async function waitMarkerAt(page, id, other, otherPage) {
  const end = Date.now() + WAIT;
  for (;;) {
    const [m, sel] = await Promise.all([marker(page, id, other), selection(otherPage, id)]);
    if (m && m.start16 === sel.start && m.end16 === sel.end && m.inside) return m;
    if (Date.now() > end) throw new Error(`${other}'s caret not shown at ${JSON.stringify(sel)}: ${JSON.stringify(m)}`);
    await sleep(25);
  }
}

test("each page shows the other's caret in the note, on the right character", { timeout: 30000 }, async (t) => {
  const rnd = seeded(t);
  const { a, b, id } = await setup(t);
  const pa = a.page;
  const pb = b.page;
  // While both type, each sees the other's caret.
  await Promise.all([
    typeWords(pa, ALICE.slice(0, 4), rnd),
    typeWords(pb, BOB.slice(0, 4), rnd),
    cursorOf(pa, id, 'bob').waitFor(),
    cursorOf(pb, id, 'alice').waitFor(),
  ]);
  await waitNotes([pa, pb], id, `${typed(ALICE.slice(0, 4))}${SEP}${typed(BOB.slice(0, 4))}`);
  // Idle: each marker sits where the other's caret is, inside the textarea, named.
  const ma = await waitMarkerAt(pa, id, 'bob', pb);
  const mb = await waitMarkerAt(pb, id, 'alice', pa);
  assert.equal(ma.label, 'bob');
  assert.equal(mb.label, 'alice');
  assert.equal(mb.pos16, typed(ALICE.slice(0, 4)).length);

  // Alice types before bob's caret: on her page his marker moves with the
  // text at once, from the log of changes, before bob says anything new.
  const before = (await marker(pa, id, 'bob')).pos16;
  await pa.keyboard.type('ñé');
  assert.equal((await marker(pa, id, 'bob')).pos16, before + 2);
  await waitMarkerAt(pa, id, 'bob', pb);

  // A selection shows as a range; the marker at its focus end.
  await pb.keyboard.press('Shift+ArrowLeft');
  await pb.keyboard.press('Shift+ArrowLeft');
  await pb.keyboard.press('Shift+ArrowLeft');
  const sel = await waitMarkerAt(pa, id, 'bob', pb);
  assert.equal(sel.end16 - sel.start16, 3);
  assert.equal(sel.pos16, sel.start16); // selected backwards: the caret is at the start
  assert.ok(await pa.locator(`[data-testid="card"][data-id="${id}"] .note-selection`).count() >= 1);

  // Alice types before bob's selection: on bob's page it stays on the same
  // characters, backwards still (bindTextarea); on alice's, the marker follows.
  const selected = (el) => ({ text: el.value.slice(el.selectionStart, el.selectionEnd), start: el.selectionStart, dir: el.selectionDirection });
  const was = await noteInput(pb, id).evaluate(selected);
  await pa.keyboard.type('Ü');
  await waitNotes([pa, pb], id, `${typed(ALICE.slice(0, 4))}ñéÜ${SEP}${typed(BOB.slice(0, 4))}`);
  assert.deepEqual(await noteInput(pb, id).evaluate(selected), { ...was, start: was.start + 1 });
  await waitMarkerAt(pa, id, 'bob', pb);
  await pb.keyboard.press('ArrowRight'); // collapses to the end
  await waitMarkerAt(pa, id, 'bob', pb);

  await pa.screenshot({ path: artifactPath('note-alice.png') });
  await sideBySide(t, [[pa, id, 'alice'], [pb, id, 'bob']], 'note-cursors.png');

  // Blur withdraws the caret.
  await noteInput(pb, id).evaluate((el) => el.blur());
  await cursorOf(pa, id, 'bob').waitFor({ state: 'detached' });
  assert.equal(await cursorOf(pb, id, 'alice').count(), 1);

  // In the focused note a mouse drag selects text; it does not drag the card
  // (from a note without the focus it would, as board.test.mjs does).
  const box = await noteInput(pa, id).boundingBox();
  await pa.mouse.move(box.x + 8, box.y + 12);
  await pa.mouse.down();
  await pa.mouse.move(box.x + 90, box.y + 12, { steps: 5 });
  await pa.mouse.up();
  const dragged = await selection(pa, id);
  assert.ok(dragged.end > dragged.start, `no text selected: ${JSON.stringify(dragged)}`);
  assert.equal(await pa.locator(`[data-testid="card"][data-id="${id}"]`).getAttribute('data-col'), 'todo');
  assert.equal(await pa.locator(`[data-testid="card"][data-id="${id}"]`).getAttribute('draggable'), 'true');
  assert.deepEqual([...pa.problems, ...pb.problems], []);
});

/** One picture of the card as each page shows it, side by side (tests/artifacts/name). */
async function sideBySide(t, shots, name) {
  const imgs = [];
  for (const [page, id, who] of shots) {
    const png = await page.locator(`[data-testid="card"][data-id="${id}"]`).screenshot();
    imgs.push(`<figure><figcaption>${who}'s page</figcaption><img src="data:image/png;base64,${png.toString('base64')}"></figure>`);
  }
  const page = await shots[0][0].context().browser().newPage({ viewport: { width: 900, height: 400 } });
  t.after(() => page.close());
  await page.setContent(`<body style="margin:0;padding:12px;display:flex;gap:24px;font:14px system-ui;background:#f3f5f8">${imgs.join('')}</body>`);
  await page.locator('body').screenshot({ path: artifactPath(name) });
}
