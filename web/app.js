// app.js -- the wsync demo: a collaborative board.
//
// Cards are items `card-<random>` of the room `board:demo` (or `board:<name>`
// from the URL hash) with the fields {title, col, order}. Every change goes
// through the JavaScript client (wsync.js), which applies it optimistically,
// sends it, re-sends it after a reconnect and rolls it back if the server
// refuses it; this file only renders room.items and turns clicks into ops.
// Each card also has a note, a text field edited by several people at once
// (room.text()), with the others' carets drawn in it: see "shared notes".
// Card writes carry `base` (the version this tab saw): an edit that lost to
// someone else's meanwhile (typically made offline) is refused, and the
// user is told what won and may keep theirs: see "conflicts". Unsynced
// changes are kept in IndexedDB across reloads (the client's persist).
//
// URL: ?user=NAME picks the user (demo mode: the server runs --insecure-demo),
// ?transport=ws|sse|poll forces one transport, #name picks the board.
// Each tab is its own device (the id lives in sessionStorage), so two tabs of
// one browser show up as two devices of one user.

const COLUMNS = ['todo', 'doing', 'done'];
const LOCK_TTL = 30000; // renewed at half of it while the title editor is open
const LOCK_WAIT = 3000; // online, an editor waits this long for its lock, then opens unlocked
const TOAST_MS = 6000;
const NAME_RE = /^[A-Za-z0-9._@-]{1,64}$/; // user ids (PROTOCOL.md 1.2)
const STATUS_KIND = { online: 'online', offline: 'offline', connecting: 'reconnecting', resuming: 'reconnecting' };

const params = new URLSearchParams(location.search);
const $ = (sel, root = document) => root.querySelector(sel);
const statusEl = $('#status');
const transportEl = $('#transport');
const boardEl = $('#board');
const presenceEl = $('#presence');
const toastsEl = $('#toasts');
const cardTemplate = $('#card-template');

function randomId(n) {
  const bytes = crypto.getRandomValues(new Uint8Array(n));
  return Array.from(bytes, (b) => (b % 36).toString(36)).join('');
}

function storageGet(store, key) {
  try { return store.getItem(key); } catch { return null; } // storage may be disabled
}

function storageSet(store, key, value) {
  try { store.setItem(key, value); } catch { /* the value lives for this page only */ }
}

/** `board:<hash>` with the hash reduced to the room alphabet (PROTOCOL.md 4.1). */
function roomName() {
  let raw = '';
  try { raw = decodeURIComponent(location.hash.slice(1)); } catch { raw = location.hash.slice(1); }
  raw = raw.trim().replace(/^board:/, '').replace(/[^A-Za-z0-9._:@-]/g, '-').slice(0, 122);
  return `board:${raw || 'demo'}`;
}

/** ?user= wins; else a name kept in localStorage, made up on the first visit. */
function pickUser() {
  const q = params.get('user');
  if (q && NAME_RE.test(q)) return q;
  let u = storageGet(localStorage, 'wsync.demo.user');
  if (!u || !NAME_RE.test(u)) {
    u = `guest-${randomId(4)}`;
    storageSet(localStorage, 'wsync.demo.user', u);
  }
  return u;
}

/*
 * One device id per tab: sessionStorage survives reloads (so a reload is the
 * same device) but not new tabs. "Duplicate tab" copies sessionStorage,
 * though, and two live tabs with one device id would replace each other's
 * session (close 4001). So a tab that found an id asks the others on a
 * BroadcastChannel whether it is taken, and takes a new one if it is.
 */
async function pickDevice() {
  let id = storageGet(sessionStorage, 'wsync.demo.device');
  const fresh = !id || !/^[A-Za-z0-9._:-]{1,64}$/.test(id);
  if (fresh) id = `tab-${randomId(8)}`;
  if (typeof BroadcastChannel === 'function') {
    const chan = new BroadcastChannel('wsync-demo-devices');
    if (!fresh) {
      const taken = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), 150);
        chan.onmessage = (e) => {
          if (e.data && e.data.type === 'taken' && e.data.device === id) {
            clearTimeout(timer);
            resolve(true);
          }
        };
        chan.postMessage({ type: 'probe', device: id });
      });
      if (taken) id = `tab-${randomId(8)}`;
    }
    chan.onmessage = (e) => {
      if (e.data && e.data.type === 'probe' && e.data.device === id) chan.postMessage({ type: 'taken', device: id });
    };
  }
  storageSet(sessionStorage, 'wsync.demo.device', id);
  return id;
}

/** A colour of one's own, made from the name: #rrggbb (hsl(h 55% 42%)), so that peerColor() accepts it. */
function colorFor(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  h %= 360;
  const a = 0.55 * Math.min(0.42, 1 - 0.42);
  const part = (n) => {
    const k = (n + h / 30) % 12;
    const v = 0.42 - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(v * 255).toString(16).padStart(2, '0');
  };
  return `#${part(0)}${part(8)}${part(4)}`;
}

/*
 * Everything another user controls (their presence: name, colour, caret; card
 * titles; notes) is data. It goes into the page as text (textContent, <bdi>,
 * attribute values) and into styles one property at a time, never through
 * innerHTML or style.cssText. A colour is used only when it is #rgb or
 * #rrggbb: anything else (say "red;position:fixed" or url(...)) could restyle
 * or fetch, and is replaced by the colour made from the user's name.
 */
const COLOR_RE = /^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i;

function peerColor(value, name) {
  return typeof value === 'string' && COLOR_RE.test(value) ? value : colorFor(name);
}

function initials(name) {
  const parts = name.split(/[._@-]+/).filter(Boolean);
  const s = parts.length > 1 ? parts[0][0] + parts[1][0] : name.slice(0, 2);
  return s.toUpperCase();
}

// ---- user text and bidi ------------------------------------------------------
//
// Text a user wrote (a title, a name) may hold right-to-left script or
// controls such as U+202E RIGHT-TO-LEFT OVERRIDE. Shown among the app's own
// words it is isolated, so that it reorders itself only: in markup in a <bdi>
// (or an element with dir="auto": titles, notes, caret labels), in plain text
// (tooltips) between U+2068 FIRST STRONG ISOLATE and U+2069 POP DIRECTIONAL ISOLATE.

/** User text for a plain-text string (a title attribute): isolated. */
const isolate = (s) => `\u2068${s}\u2069`;

/** User text for toast(): shown in a <bdi>. */
const userText = (s) => ({ user: String(s) });

/** A quoted card title for toast(), or a stand-in when it has none. */
function quoted(f, none) {
  return f && typeof f.title === 'string' && f.title ? ['\u201c', userText(f.title), '\u201d'] : [none];
}

/** Text nodes for strings, a <bdi> for each userText(): the parts of a message. */
function messageNodes(parts) {
  return parts.flat(Infinity).map((p) => {
    if (typeof p !== 'object' || p === null) return document.createTextNode(String(p));
    const bdi = document.createElement('bdi');
    bdi.textContent = p.user;
    return bdi;
  });
}

// ---- toasts ---------------------------------------------------------------

/** text: a string, or an array of strings and userText() parts. */
function toast(text, kind = 'warn') {
  const el = document.createElement('div');
  el.className = `toast ${kind}`;
  el.dataset.testid = 'toast';
  el.setAttribute('role', 'alert');
  const body = document.createElement('span');
  body.className = 'toast-text';
  body.append(...messageNodes([text]));
  el.append(body);
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'icon';
  close.setAttribute('aria-label', 'Dismiss');
  close.textContent = '\u00d7';
  close.addEventListener('click', () => el.remove());
  el.append(close);
  toastsEl.append(el);
  trimToasts();
  setTimeout(() => el.remove(), TOAST_MS);
}

/** At most 4 passing toasts; conflict messages stay until answered. */
function trimToasts() {
  const passing = [...toastsEl.children].filter((el) => !el.classList.contains('conflict'));
  for (const el of passing.slice(0, Math.max(0, passing.length - 4))) el.remove();
}

/**
 * A message that stays until the user answers it: text (as for toast()),
 * an action button (label, fn) and a dismiss button. Returns the element.
 */
function ask(text, label, fn) {
  const el = document.createElement('div');
  el.className = 'toast conflict';
  el.dataset.testid = 'conflict';
  el.setAttribute('role', 'alert');
  const body = document.createElement('span');
  body.className = 'toast-text';
  body.append(...messageNodes([text]));
  const actions = document.createElement('span');
  actions.className = 'toast-actions';
  if (label) {
    const act = document.createElement('button');
    act.type = 'button';
    act.className = 'primary';
    act.dataset.testid = 'conflict-keep';
    act.textContent = label;
    act.addEventListener('click', () => {
      el.remove();
      fn();
    });
    actions.append(act);
  }
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'icon';
  close.dataset.testid = 'conflict-dismiss';
  close.setAttribute('aria-label', 'Dismiss');
  close.textContent = '\u00d7';
  close.addEventListener('click', () => el.remove());
  actions.append(close);
  el.append(body, actions);
  toastsEl.append(el);
  return el;
}

const CODE_TEXT = {
  locked: 'someone else is editing it',
  lock_lost: 'your edit lock ran out',
  conflict: 'it changed meanwhile',
  not_found: 'it was deleted meanwhile',
  item_replaced: 'the card was deleted (and made anew) meanwhile',
  forbidden: 'you may not write here',
  rate_limited: 'too many changes at once',
  too_large: 'it is too large',
  invalid_field: 'it is not valid',
};

/** Server codes worth a toast when the client reports them (PROTOCOL.md 11.2). */
const CLIENT_CODES = new Set(['unauthorized', 'token_invalid', 'token_expired', 'forbidden',
  'too_many_rooms', 'room_invalid', 'rate_limited', 'internal', 'replaced']);

// ---- start ----------------------------------------------------------------

let Client;
let compose, invert, transformPosition, utf16ToCp, cpToUtf16, cpLength;
try {
  ({ Client } = await import('./wsync.js'));
  ({ compose, invert, transformPosition, utf16ToCp, cpToUtf16, cpLength } = await import('./text.js'));
} catch (err) {
  statusEl.textContent = 'client missing';
  statusEl.dataset.status = 'offline';
  toast(`Could not load the client (wsync.js, text.js): ${err.message}`, 'error');
  throw err;
}

const user = pickUser();
const device = await pickDevice();
const forced = ['ws', 'sse', 'poll'].includes(params.get('transport')) ? params.get('transport') : null;
const myColor = colorFor(user);
const roomId = roomName();

const client = new Client(location.origin, {
  user,
  device,
  // Unsynced changes (card writes, note edits) go to IndexedDB and come
  // back after a reload; the same tab keeps its device id across reloads.
  persist: 'indexeddb',
  ...(forced ? { transports: [forced] } : {}),
});
const room = client.room(roomId);

let myPresence = { name: user, color: myColor, editing: null, note: null };
room.presence.set(myPresence);

function setPresence(patch) {
  myPresence = { ...myPresence, ...patch };
  room.presence.set(myPresence);
}

// Inspection hook for the browser tests and the curious (devtools console).
const statusHistory = [];
window.wsyncDemo = {
  client, room, user, device, statusHistory,
  board: () => boardState(),
  /** A card's open note: its text, sync state and revision, or null. */
  note: (id) => {
    const n = notes.get(id);
    return n ? { value: n.text.value, state: n.text.state, rev: n.text.rev } : null;
  },
};

$('#room-name').textContent = roomId;
document.title = `${roomId} \u2013 wsync`;

// ---- status indicator ---------------------------------------------------

let everOnline = false;

function showStatus(status = client.status) {
  const kind = STATUS_KIND[status] || 'reconnecting';
  if (kind === 'online') everOnline = true;
  statusEl.dataset.status = kind;
  statusEl.className = `status ${kind}`;
  statusEl.textContent = kind === 'online' ? 'online'
    : kind === 'offline' ? 'offline'
      : everOnline ? 'reconnecting\u2026' : 'connecting\u2026';
  const t = client.transport || '';
  transportEl.dataset.transport = t;
  transportEl.textContent = t ? `${t}${forced ? ' (forced)' : ''}` : '';
  transportEl.hidden = !t;
  if (statusHistory[statusHistory.length - 1] !== kind) statusHistory.push(kind);
  statusEl.dataset.history = statusHistory.join(' ');
  document.body.classList.toggle('is-offline', kind !== 'online');
}

client.on('status', () => showStatus());
client.on('error', (err) => {
  console.warn('wsync client error', err);
  if (err && CLIENT_CODES.has(err.code)) toast(`Connection: ${err.message || err.code}`, 'error');
});
showStatus();

// ---- user switcher --------------------------------------------------------

const userInput = $('#user-input');
userInput.value = user;
$('#user-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = userInput.value.trim();
  if (!NAME_RE.test(name)) {
    toast('A user name is 1-64 of A-Z a-z 0-9 . _ @ -');
    return;
  }
  if (name === user) return;
  storageSet(localStorage, 'wsync.demo.user', name);
  client.close();
  const next = new URL(location.href);
  if (next.searchParams.has('user')) {
    next.searchParams.set('user', name);
    location.assign(next);
  } else {
    location.reload(); // the name is in localStorage now
  }
});

// ---- the board ------------------------------------------------------------

const cardEls = new Map(); // card id -> <li>
const pending = new Map(); // card id -> ops sent and not acked yet
let editing = null; // {id, held, closed, renew}
let renderQueued = false;

// An item with neither title nor column is not a card (another app, or a
// backend, may write other items into the room): it is not shown. (Note
// edits racing a card's delete do not re-create it: the server refuses text
// ops on missing items, PROTOCOL.md 5.7.)
function isCard(id, fields) {
  return id.startsWith('card-') && fields && typeof fields === 'object' && ('title' in fields || 'col' in fields);
}

function cardCol(f) {
  return COLUMNS.includes(f.col) ? f.col : COLUMNS[0];
}

function cardOrder(f) {
  return typeof f.order === 'number' && Number.isFinite(f.order) ? f.order : 0;
}

/** The cards of each column in display order: by order, then by id, so every replica agrees. */
function columns() {
  const cols = Object.fromEntries(COLUMNS.map((c) => [c, []]));
  for (const [id, f] of room.items) {
    if (isCard(id, f)) cols[cardCol(f)].push({ id, f, order: cardOrder(f) });
  }
  for (const c of COLUMNS) cols[c].sort((a, b) => a.order - b.order || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return cols;
}

/** The board as plain data: what both windows of a test must agree on. */
function boardState() {
  const cols = columns();
  return Object.fromEntries(COLUMNS.map((c) => [c, cols[c].map(({ id, f }) => ({ id, title: f.title ?? '' }))]));
}

/**
 * Whether what this page knows of the others is live. Offline (or while it
 * reconnects) presence and locks are as they were when it was last online:
 * the others are shown as unknown, lock badges as stale.
 */
const live = () => client.status === 'online';

/**
 * Whether the device holding lock lk is connected, as presence says:
 * 'connected', 'disconnected' (its session is detached and keeps the lock
 * until its TTL runs out or it comes back), or 'unknown' (offline, or no entry).
 */
function lockHolder(lk) {
  if (!live()) return 'unknown';
  const p = (room.presence.list || []).find((e) => e.user === lk.user && e.device === lk.device);
  return !p ? 'unknown' : p.connected === false ? 'disconnected' : 'connected';
}

/** What a lock badge (what = '') or a message about the card (what = ' this card') says about another's lock lk. */
function lockText(lk, what = '') {
  const mine = lk.user === user;
  if (!live()) return mine ? `was editing${what} in your other tab (you are offline)` : `${lk.user} was editing${what} (you are offline)`;
  const gone = lockHolder(lk) === 'disconnected' ? ' (disconnected)' : '';
  return mine ? `editing${what} in your other tab${gone}` : `${lk.user}${gone} is editing${what}`;
}

function lockOf(id) {
  const lk = room.locks.get(id);
  if (!lk) return null;
  return { ...lk, mine: lk.user === user && lk.device === device };
}

/** Counts an op as pending until the server acks it; its rollback toast comes from room 'error'. */
function track(id, p) {
  pending.set(id, (pending.get(id) || 0) + 1);
  scheduleRender();
  p.catch((err) => console.debug('op rolled back', id, err))
    .finally(() => {
      const n = (pending.get(id) || 1) - 1;
      if (n) pending.set(id, n); else pending.delete(id);
      scheduleRender();
    });
  return p;
}

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    render();
  });
}

function cardEl(id) {
  let el = cardEls.get(id);
  if (!el) {
    el = cardTemplate.content.firstElementChild.cloneNode(true);
    el.dataset.id = id;
    cardEls.set(id, el);
  }
  return el;
}

function updateCard(el, id, f) {
  const col = cardCol(f);
  const lk = lockOf(id);
  const other = lk && !lk.mine;
  const isEditing = editing && editing.id === id;
  el.dataset.col = col;
  el.dataset.title = f.title ?? '';
  el.dataset.locked = other ? 'true' : 'false';
  el.dataset.pending = pending.has(id) ? 'true' : 'false';
  el.dataset.editing = isEditing ? 'true' : 'false';
  el.draggable = !other && !isEditing && noteSelecting !== id;
  updateNote(el, id, other ? lk : null);
  const title = $('.card-title', el);
  const text = typeof f.title === 'string' && f.title ? f.title : '(untitled)';
  if (title.textContent !== text) title.textContent = text;
  title.hidden = !!isEditing && !$('.card-editor', el).hidden; // while the lock is asked for, the title stays
  const badge = $('.card-lock', el);
  badge.hidden = !other;
  if (other) {
    badge.textContent = lockText(lk);
    badge.dataset.stale = live() ? 'false' : 'true';
    badge.dataset.holder = lockHolder(lk);
    badge.title = `Locked by ${lk.user} (${lk.device})${!live() ? ' when this page was last online'
      : badge.dataset.holder === 'disconnected' ? ', whose device is disconnected: the lock lasts until it comes back or runs out' : ''}`;
    badge.style.setProperty('--who', colorFor(lk.user));
  }
  // While its title editor is open (or waiting for the lock), the card stays
  // where it is and stays: the editor would otherwise lose it, or save into a deleted card.
  const held = !!other || !!isEditing;
  const i = COLUMNS.indexOf(col);
  $('[data-testid="card-left"]', el).disabled = held || i === 0;
  $('[data-testid="card-right"]', el).disabled = held || i === COLUMNS.length - 1;
  $('[data-testid="card-edit"]', el).disabled = held;
  $('[data-testid="card-delete"]', el).disabled = held;
}

function render() {
  const active = document.activeElement;
  const sel = active && active.matches && active.matches('.title-input, .note-input')
    ? [active.selectionStart, active.selectionEnd] : null;
  const cols = columns();
  const seen = new Set();
  for (const c of COLUMNS) for (const { id } of cols[c]) seen.add(id);
  // Removals first, so that reordering below never has to move the card
  // whose title editor has the focus past a card that is about to go.
  for (const [id, el] of cardEls) {
    if (seen.has(id)) continue;
    el.remove();
    cardEls.delete(id);
    detachNote(id);
    if (editing && editing.id === id) {
      closeEditor(false);
      toast('The card you were editing was deleted');
    }
  }
  for (const c of COLUMNS) {
    const section = $(`.column[data-col="${c}"]`, boardEl);
    const list = $('.cards', section);
    cols[c].forEach(({ id, f }, i) => {
      const el = cardEl(id);
      updateCard(el, id, f);
      if (list.children[i] !== el) list.insertBefore(el, list.children[i] || null);
    });
    $('.count', section).textContent = cols[c].length ? String(cols[c].length) : '';
  }
  if (sel && document.activeElement !== active && active.isConnected) {
    active.focus();
    active.setSelectionRange(sel[0], sel[1]);
  }
}

// ---- operations -----------------------------------------------------------

function endOrder(col, exceptId) {
  const list = columns()[col].filter((c) => c.id !== exceptId);
  return list.length ? list[list.length - 1].order + 1 : 1;
}

function createCard(col, title) {
  const id = `card-${randomId(10)}`;
  track(id, room.set(id, { title, col, order: endOrder(col) }, { base: 0 }));
  return id;
}

function moveCard(id, col, order) {
  const f = room.get(id);
  if (!f || (cardCol(f) === col && cardOrder(f) === order)) return;
  write(id, { col, order });
}

function deleteCard(id) {
  if (editing && editing.id === id) closeEditor(false);
  if (room.get(id)) remove(id);
}

// ---- writes with base, and conflicts ------------------------------------
//
// Every write to an existing card says which version of it this tab saw
// (`base`, PROTOCOL.md 5.6). If the card moved since -- typically someone
// else's edit while this tab was offline -- the server refuses with
// `conflict` and the card as it is now, and the client rolls the write
// back. Then, field by field:
//   - the field already has our value: nothing lost;
//   - nobody else changed it (it is still what this tab showed when the
//     edit was made; the version moved for another field or the note):
//     written again on the new version, silently;
//   - someone else changed it: their value stays, and we say so, with both
//     values and a button that writes ours on top ("Keep mine").
// A card deleted meanwhile is not written back by itself: we say so, and
// "Restore it" makes it again with all its fields. A delete that lost to an
// edit asks "Delete anyway". What this tab showed is kept in sessionStorage
// beside the writes the client keeps in IndexedDB, so that writes restored
// after a reload are judged the same way (without it, any difference counts).
// (The version also moves for one's own note edits, whose entries may come
// after the write was made: those, too, are merged silently.)

const BEFORE_KEY = 'wsync.demo.before';
const shownBefore = loadBefore(); // opKey -> the card's fields when the write was made

function loadBefore() {
  try {
    return new Map(Object.entries(JSON.parse(storageGet(sessionStorage, BEFORE_KEY) || '{}')));
  } catch {
    return new Map();
  }
}

function saveBefore() {
  storageSet(sessionStorage, BEFORE_KEY, JSON.stringify(Object.fromEntries(shownBefore)));
}

/** Nothing pending any more: what was kept for writes (restored ones included) can go. */
function pruneBefore() {
  if (!shownBefore.size || room.pendingCount) return;
  queueMicrotask(() => { // after the 'error' of the write being settled, which reads it
    if (!shownBefore.size || room.pendingCount) return;
    shownBefore.clear();
    saveBefore();
  });
}

const opKey = (kind, item, base, fields) => JSON.stringify([kind, item, base ?? null, fields ?? null]);

/** Keeps what the card showed (f) before a write; forgotten once the write p is settled. Returns p. */
function remember(key, f, p) {
  if (f) shownBefore.set(key, f);
  saveBefore();
  const forget = () => {
    if (shownBefore.delete(key)) saveBefore();
  };
  // 'closed': the page is going away (pagehide closes the client); the
  // write stays in IndexedDB for the next load, and so does this.
  p.then(forget, (err) => { if (!err || err.code !== 'closed') forget(); });
  return p;
}

function write(id, fields, base = room.version(id)) {
  const before = room.get(id); // read before the write shows
  return remember(opKey('set', id, base, fields), before, track(id, room.set(id, fields, base !== undefined ? { base } : {})));
}

function remove(id, base = room.version(id)) {
  const before = room.get(id);
  return remember(opKey('del', id, base), before, track(id, room.delete(id, base !== undefined ? { base } : {})));
}

function sameValue(a, b) {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/** A lost write in words: a title quoted, a move by its column; card: the card's fields for its name. */
function writeWords(fields, card) {
  if ('title' in fields) return ['Your title ', ...quoted(fields, '(none)')];
  if ('col' in fields) return ['Your move of ', ...quoted(card, 'a card'), ` to ${columnName(fields.col)}`];
  return ['Your change to ', ...quoted(card, 'a card')];
}

function columnName(col) {
  const h = $(`.column[data-col="${col}"] h2`, boardEl);
  return h ? h.firstChild.textContent.trim() : String(col);
}

function onConflict(op, current) {
  const id = op.item;
  const before = shownBefore.get(opKey(op.kind, id, op.base, op.fields));
  if (op.kind === 'del') {
    if (!current) return; // gone already, as wanted
    ask([...quoted(before || current.fields, 'A card'), ' was not deleted: it was changed meanwhile',
      ...('title' in current.fields && before && !sameValue(before.title, current.fields.title)
        ? [' (now ', ...quoted(current.fields, ''), ')'] : []), '.'],
    'Delete anyway', () => remove(id, room.version(id) ?? current.version));
    return;
  }
  if (op.kind !== 'set') return;
  if (!current) {
    const mine = { ...(before || {}), ...op.fields };
    for (const k of Object.keys(mine)) if (mine[k] === null) delete mine[k];
    const whole = typeof mine.title === 'string' && COLUMNS.includes(mine.col);
    ask([...writeWords(op.fields, mine), ' was not saved: the card was deleted meanwhile.'],
    whole ? 'Restore it' : null, () => write(id, mine, 0));
    return;
  }
  const now = current.fields;
  const again = {};
  const lost = {};
  for (const [k, v] of Object.entries(op.fields)) {
    if (sameValue(now[k], v)) continue;
    if (before && sameValue(now[k], before[k])) again[k] = v;
    else lost[k] = v;
  }
  if (Object.keys(again).length) write(id, again, current.version);
  if (!Object.keys(lost).length) return;
  const theirs = 'title' in lost ? ['changed it to ', ...quoted(now, '(no title)')]
    : 'col' in lost ? [`moved it to ${columnName(cardCol(now))}`] : ['changed it'];
  ask([...writeWords(lost, before || now), ' was not saved: meanwhile someone else ', ...theirs, '.'],
  'Keep mine', () => write(id, lost, room.version(id) ?? current.version));
}

// ---- title length ---------------------------------------------------------
//
// A title input's maxlength (200) is the limit; the browser cuts typed and
// pasted text at it without a word. Near it a counter shows under the input;
// at it, or when text was cut, a message says so.

const LIMIT_NEAR = 20; // the counter shows from this many characters before the limit

function showLimit(input) {
  const out = input.form && $('.title-limit', input.form);
  if (!out) return;
  const max = input.maxLength;
  const len = input.value.length;
  if (len < max) delete input.dataset.cut;
  const state = max <= 0 || len < max - LIMIT_NEAR ? ''
    : input.dataset.cut ? 'cut' : len >= max ? 'full' : 'near';
  out.hidden = !state;
  out.dataset.state = state;
  out.textContent = state === 'cut' ? `${len}/${max}: a title holds at most ${max} characters; the rest was cut`
    : state === 'full' ? `${len}/${max}: the limit of ${max} characters is reached`
      : state ? `${len}/${max}` : '';
}

/** Text about to go into input that does not fit: it will be cut (the event comes before the browser cuts). */
function noteOverflow(input, inserted) {
  const max = input.maxLength;
  if (max <= 0 || typeof inserted !== 'string') return;
  const selected = (input.selectionEnd ?? 0) - (input.selectionStart ?? 0);
  if (input.value.length - selected + inserted.length > max) {
    input.dataset.cut = 'true';
    setTimeout(() => showLimit(input)); // also when nothing at all went in (no input event then)
  }
}

const isTitleInput = (el) => el instanceof HTMLInputElement && (el.matches('.title-input') || el.matches('.add input'));

boardEl.addEventListener('beforeinput', (e) => {
  if (isTitleInput(e.target) && e.inputType.startsWith('insert')) {
    noteOverflow(e.target, e.data ?? e.dataTransfer?.getData('text/plain'));
  }
});
boardEl.addEventListener('paste', (e) => {
  if (isTitleInput(e.target)) noteOverflow(e.target, e.clipboardData?.getData('text/plain'));
});
boardEl.addEventListener('input', (e) => {
  if (isTitleInput(e.target)) showLimit(e.target);
});

// ---- title editor and locks -----------------------------------------------

async function openEditor(id) {
  if (editing && editing.id === id) return;
  if (editing) closeEditor(false);
  const lk = lockOf(id);
  if (lk && !lk.mine) {
    toast(lockText(lk, ' this card'), 'info');
    return;
  }
  const ed = { id, held: !!lk, closed: false, renew: null };
  editing = ed;
  const el = cardEls.get(id);
  // Its move and delete buttons go off now, while the lock is asked for.
  if (el && room.get(id)) updateCard(el, id, room.get(id));
  // Online, the editor opens once the lock is ours, so two people never
  // type into one card. Offline (or when the lock does not come in time)
  // it opens anyway: the client queues the edit, and should someone else
  // hold the lock by then, the server refuses it and the rollback toast says so.
  if (!ed.held && client.status === 'online') {
    const req = room.lock(id, { ttl: LOCK_TTL });
    req.then(() => {
      ed.held = true;
      if (ed.closed) room.unlock(id).catch(() => {});
    }, () => {});
    try {
      await Promise.race([req, new Promise((resolve) => setTimeout(resolve, LOCK_WAIT))]);
    } catch (err) {
      if (err && (err.code === 'locked' || err.code === 'forbidden')) {
        if (editing === ed) editing = null;
        ed.closed = true;
        const lk = err.lock || (err.details && err.details.lock);
        const who = lk && lk.user;
        toast(who ? `${who} is editing this card` : `Cannot edit: ${err.message || err.code}`, 'info');
        scheduleRender();
        return;
      }
      console.warn('lock failed; editing without it', err);
    }
  }
  if (ed.closed || editing !== ed) return;
  const card = cardEls.get(id);
  if (!card || !room.get(id)) {
    closeEditor(false);
    return;
  }
  const form = $('.card-editor', card);
  const input = $('.title-input', card);
  input.value = room.get(id).title ?? '';
  delete input.dataset.cut;
  showLimit(input);
  form.hidden = false;
  updateCard(card, id, room.get(id));
  input.focus();
  input.select();
  setPresence({ editing: id });
  ed.renew = setInterval(() => {
    if (client.status !== 'online') return;
    room.lock(id, { ttl: LOCK_TTL }).then(() => { ed.held = true; }, (err) => {
      if (err && (err.code === 'locked' || err.code === 'lock_lost')) {
        ed.held = false;
        toast('Your lock on this card was lost; saving may be refused', 'warn');
      }
    });
  }, LOCK_TTL / 2);
}

function closeEditor(save) {
  const ed = editing;
  if (!ed) return;
  editing = null;
  ed.closed = true;
  clearInterval(ed.renew);
  const card = cardEls.get(ed.id);
  if (card) {
    const form = $('.card-editor', card);
    const title = $('.title-input', card).value.trim();
    form.hidden = true;
    const f = room.get(ed.id);
    // Sent before the unlock: the server sequences the set while the lock is still ours.
    if (save && f && title && title !== f.title) write(ed.id, { title });
  }
  if (ed.held) room.unlock(ed.id).catch(() => {});
  setPresence({ editing: null });
  scheduleRender();
}

// ---- shared notes and remote carets -----------------------------------------
//
// Each card has a note: the text field `note` of its item, edited by everyone
// at once through room.text(id, 'note') (PROTOCOL.md 5.7). bindTextarea()
// applies typing at once, sends it, and keeps this textarea's caret on its
// character when others' edits come in. The others' carets are drawn over
// the textarea (a textarea holds no markup) at places measured in a hidden
// copy of its text box.
//
// A caret travels in presence, apart from the text ops, so it must say which
// text it points into:
//   sender    its caret in its own text (which has its unconfirmed edits) is
//             mapped back to the server's text at revision rev, a text every
//             peer had: presence {note: {card, pos, end, rev}}, code points.
//   receiver  the note's log holds, for each revision this tab reached, its
//             own unconfirmed edits at that moment (m: server text -> what
//             it showed), then every change shown since. pos goes through the
//             m of rev, then through the later changes: exact whether the
//             presence arrives before or after the ops it has seen. While the
//             sender has edits in flight its caret shows at their start; its
//             next update (after the ack) puts it back at its end.

const NOTE_PRESENCE_MS = 100; // at most one caret update per this, the last one always sent
const NOTE_LOG = 300; // changes and revisions remembered per note

const notes = new Map(); // card id -> {id, text, textarea, overlay, log, cursors, onAck}
let roomReady = false;
let noteFocus = null; // the card whose note has the focus
let noteSelecting = null; // the card whose note the mouse is selecting text in: not draggable
let notePresenceAt = 0;
let notePresenceTimer = null;
let cursorsQueued = false;
const cursorsToDraw = new Set();
const resizes = typeof ResizeObserver === 'function'
  ? new ResizeObserver((entries) => {
    for (const e of entries) {
      const note = notes.get(e.target.closest('.card')?.dataset.id);
      if (note) queueCursors(note);
    }
  })
  : null;

/** The op taking doc.serverText to doc.value (its unconfirmed edits), or null. */
function unconfirmed(doc) {
  const { pending, buffer } = doc;
  return pending && buffer ? compose(pending, buffer) : pending || buffer;
}

function logPush(note, entry) {
  note.log.push(entry);
  if (note.log.length > NOTE_LOG) note.log.splice(0, note.log.length - NOTE_LOG);
}

/** This tab reached the note's current revision: remember what it showed on top of it. */
function markRev(note) {
  logPush(note, { rev: note.text.rev, m: unconfirmed(note.text.doc) });
}

/** The card's note (opened once the room is ready); read-only while another holds the card's lock. */
function updateNote(el, id, lock) {
  if (!roomReady) return;
  const note = notes.get(id) || attachNote(el, id);
  const ta = note.textarea;
  // The server refuses text ops on a locked item (9.2): typing would be rolled back.
  ta.readOnly = !!lock;
  ta.title = lock ? lockText(lock, ' this card') : '';
}

function attachNote(el, id) {
  const wrap = document.createElement('div');
  wrap.className = 'note-wrap';
  const ta = document.createElement('textarea');
  ta.className = 'note-input';
  ta.dataset.testid = 'note-input';
  ta.rows = 2;
  ta.dir = 'auto'; // its direction from its own text
  ta.placeholder = 'Note (shared)';
  ta.setAttribute('aria-label', 'Shared note');
  const overlay = document.createElement('div');
  overlay.className = 'note-overlay';
  overlay.dataset.testid = 'note-overlay';
  overlay.setAttribute('aria-hidden', 'true');
  wrap.append(ta, overlay);
  $('.card-note', el).replaceChildren(wrap);

  const text = room.text(id, 'note');
  const note = { id, text, textarea: ta, overlay, log: [], cursors: new Map(), onAck: null };
  notes.set(id, note);
  markRev(note);
  text.bind(ta, {
    // After typing, selection moves and remote writes (the caret moved, or its revision did).
    onSelection: () => { if (noteFocus === id) publishNoteSoon(); },
  });
  // Registered after bind(): the textarea already shows the change when this runs.
  text.on('change', (ch) => {
    logPush(note, { ops: ch.ops });
    if (text.rev !== lastRev(note)) markRev(note);
    foldNote(note);
    queueCursors(note);
  });
  note.onAck = () => {
    markRev(note);
    if (noteFocus === id) publishNoteSoon(); // the same caret, now at the new revision
  };
  text.doc.on('ack', note.onAck);
  ta.addEventListener('focus', () => {
    noteFocus = id;
    foldNote(note);
    publishNoteSoon();
  });
  ta.addEventListener('blur', () => {
    foldNote(note);
    if (noteFocus !== id) return;
    noteFocus = null;
    clearTimeout(notePresenceTimer);
    notePresenceTimer = null;
    if (myPresence.note) setPresence({ note: null });
  });
  // A press in the focused note selects text; in a note without the focus it
  // focuses it, or drags the card if the pointer moves (as anywhere on a card).
  ta.addEventListener('mousedown', () => {
    if (document.activeElement !== ta) return;
    noteSelecting = id;
    el.draggable = false; // now: the browser decides at this press
    addEventListener('mouseup', () => {
      noteSelecting = null;
      scheduleRender();
    }, { once: true });
  });
  ta.addEventListener('scroll', () => queueCursors(note));
  if (resizes) resizes.observe(ta);
  foldNote(note);
  queueMicrotask(() => fitNote(ta)); // once render() has put a new card in the page
  queueCursors(note);
  return note;
}

function lastRev(note) {
  for (let i = note.log.length - 1; i >= 0; i--) if (note.log[i].rev !== undefined) return note.log[i].rev;
  return undefined;
}

/** The card went away: the text is closed (edits made still go out), the caret withdrawn. */
function detachNote(id) {
  const note = notes.get(id);
  if (!note) return;
  notes.delete(id);
  cursorsToDraw.delete(note);
  if (resizes) resizes.unobserve(note.textarea);
  note.text.doc.off('ack', note.onAck);
  note.text.close(); // unbinds the textarea
  if (noteFocus === id) {
    noteFocus = null;
    setPresence({ note: null });
  }
}

/*
 * An empty note that does not have the focus is folded up to one line, its
 * placeholder "+ Add a note" (CSS: .card-note[data-folded]), so that a board
 * of cards without notes is not a column of empty boxes. Focusing it (a
 * click, Tab) opens the editor; a note with text, from anyone, is shown.
 */
function foldNote(note) {
  const ta = note.textarea;
  const folded = ta.value === '' && document.activeElement !== ta;
  const box = ta.closest('.card-note');
  if (box && box.dataset.folded !== String(folded)) {
    box.dataset.folded = String(folded);
    ta.placeholder = folded ? '+ Add a note' : 'Note (shared)';
  }
  fitNote(ta);
}

/** Grows the textarea with its text (up to the CSS max-height), so that no caret hides below. */
function fitNote(ta) {
  if (!ta.isConnected) return;
  if (ta.closest('.card-note')?.dataset.folded === 'true') {
    ta.style.height = ''; // the CSS height of a folded note
    return;
  }
  ta.style.height = 'auto';
  ta.style.height = `${ta.scrollHeight + ta.offsetHeight - ta.clientHeight}px`;
}

// ---- publishing this tab's caret ----

/** This tab's caret in the focused note, in the server's text at its revision (see above). */
function noteCaret() {
  const note = noteFocus && notes.get(noteFocus);
  if (!note) return null;
  const ta = note.textarea;
  const doc = note.text.doc;
  if (ta.value !== doc.value) return myPresence.note; // mid-composition (IME): not in the doc yet
  let pos = utf16ToCp(ta.value, ta.selectionStart);
  let end = utf16ToCp(ta.value, ta.selectionEnd);
  const mine = unconfirmed(doc);
  if (mine) {
    const back = invert(mine, doc.serverText); // value -> serverText
    pos = transformPosition(pos, back);
    end = Math.max(pos, transformPosition(end, back));
  }
  const caret = { card: note.id, pos, end, rev: doc.rev };
  if (ta.selectionDirection === 'backward' && end > pos) caret.back = true;
  return caret;
}

function publishNoteSoon() {
  if (notePresenceTimer) return;
  const wait = Math.max(0, notePresenceAt + NOTE_PRESENCE_MS - Date.now());
  notePresenceTimer = setTimeout(() => {
    notePresenceTimer = null;
    notePresenceAt = Date.now();
    const note = noteCaret();
    if (JSON.stringify(note) !== JSON.stringify(myPresence.note)) setPresence({ note });
  }, wait);
}

// ---- drawing the others' carets ----

/** A peer's caret position (code points of the server text at rev) in this tab's text now. */
function localPos(note, pos, rev) {
  const { log } = note;
  let i = log.length - 1;
  while (i >= 0 && !(log[i].rev !== undefined && log[i].rev <= rev)) i--;
  if (i < 0) i = log.findIndex((e) => e.rev !== undefined); // older than the log: the best guess
  if (i < 0) return pos;
  if (log[i].m) pos = transformPosition(pos, log[i].m);
  for (let k = i + 1; k < log.length; k++) if (log[k].ops) pos = transformPosition(pos, log[k].ops);
  return pos;
}

function queueCursors(note) {
  cursorsToDraw.add(note);
  if (cursorsQueued) return;
  cursorsQueued = true;
  queueMicrotask(() => {
    cursorsQueued = false;
    const list = [...cursorsToDraw];
    cursorsToDraw.clear();
    for (const n of list) if (notes.get(n.id) === n) drawCursors(n);
  });
}

const isCount = (n) => Number.isSafeInteger(n) && n >= 0;

// Markers are kept per peer and moved, not redrawn: the name label shows
// for a few seconds after its caret moved (CSS), then leaves the text readable.
function drawCursors(note) {
  const ta = note.textarea;
  const peers = (room.presence.list || []).filter((p) => {
    const n = p.state && p.state.note;
    return p.connected && !(p.user === user && p.device === device) && n && n.card === note.id
      && isCount(n.pos) && isCount(n.end) && isCount(n.rev);
  });
  const shown = new Set();
  const selections = [];
  const value = note.text.value;
  const len = cpLength(value);
  const layout = peers.length && ta.isConnected ? textLayout(ta) : null;
  for (const p of layout ? peers : []) {
    const n = p.state.note;
    const key = `${p.user}\u0000${p.device}`;
    const color = peerColor(p.state.color, p.user);
    const start = Math.min(localPos(note, n.pos, n.rev), len);
    const end = Math.max(start, Math.min(localPos(note, n.end, n.rev), len));
    const start16 = cpToUtf16(value, start);
    const end16 = cpToUtf16(value, end);
    const at16 = n.back ? start16 : end16;
    for (const r of start16 < end16 ? layout.rects(start16, end16) : []) {
      const sel = document.createElement('div');
      sel.className = 'note-selection';
      placeBox(sel, color, r.x, r.y, r.h, r.w);
      selections.push(sel);
    }
    let el = note.cursors.get(key);
    if (!el) {
      el = document.createElement('div');
      el.className = 'note-cursor';
      el.dataset.testid = 'note-cursor';
      el.dataset.user = p.user;
      el.dataset.device = p.device;
      const label = document.createElement('span');
      label.className = 'note-cursor-label';
      label.dir = 'auto'; // a name, isolated from the caret's surroundings
      label.dataset.testid = 'note-cursor-label';
      el.append(label);
      note.cursors.set(key, el);
      note.overlay.append(el);
    }
    shown.add(key);
    const c = layout.caret(at16);
    el.dataset.pos = String(n.back ? start : end); // code points of this tab's text
    el.dataset.pos16 = String(at16); // UTF-16 units, as selectionStart counts
    el.dataset.start16 = String(start16);
    el.dataset.end16 = String(end16);
    placeBox(el, color, c.x, c.y, c.h);
    el.hidden = c.y + c.h < ta.clientTop || c.y > ta.clientTop + ta.clientHeight; // scrolled out of view
    const name = typeof p.state.name === 'string' && p.state.name ? p.state.name : p.user;
    const place = `${c.x},${c.y}`;
    if (el.dataset.place !== place || el.firstChild.textContent !== name) {
      el.dataset.place = place;
      const label = el.firstChild.cloneNode(false); // a new element: its fade starts again
      label.textContent = name;
      el.firstChild.replaceWith(label);
    }
  }
  for (const [key, el] of note.cursors) {
    if (shown.has(key)) continue;
    el.remove();
    note.cursors.delete(key);
  }
  for (const old of note.overlay.querySelectorAll('.note-selection')) old.remove();
  note.overlay.prepend(...selections);
}

/** Positions a caret marker or selection box: numbers measured here, a colour checked by peerColor(). */
function placeBox(el, color, x, y, h, w) {
  el.style.setProperty('--who', color);
  el.style.left = `${x}px`;
  el.style.top = `${y}px`;
  el.style.height = `${h}px`;
  if (w !== undefined) el.style.width = `${w}px`;
}

// The copy of a textarea's text box that carets are measured in: the same
// font, padding, wrapping and width (clientWidth: without border and scroll
// bar), its text plus one zero-width character, so that the end of the text
// (even after a final line break) is the start of a character too.
const MIRRORED = ['fontFamily', 'fontSize', 'fontStyle', 'fontVariant', 'fontWeight', 'fontStretch',
  'fontKerning', 'fontFeatureSettings', 'lineHeight', 'letterSpacing', 'wordSpacing', 'textTransform',
  'textIndent', 'textAlign', 'tabSize', 'whiteSpace', 'overflowWrap', 'wordBreak', 'direction',
  'paddingTop', 'paddingRight', 'paddingBottom', 'paddingLeft'];
let mirror = null;

/** Boxes of UTF-16 offsets of ta.value, in px from ta's border box (scrolling included). */
function textLayout(ta) {
  if (!mirror) {
    mirror = document.createElement('div');
    mirror.className = 'note-mirror';
    mirror.setAttribute('aria-hidden', 'true');
    document.body.append(mirror);
  }
  const cs = getComputedStyle(ta);
  for (const k of MIRRORED) mirror.style[k] = cs[k];
  mirror.style.width = `${ta.clientWidth}px`;
  mirror.textContent = `${ta.value}\u200b`;
  const node = mirror.firstChild;
  const box = mirror.getBoundingClientRect();
  const dx = ta.clientLeft - ta.scrollLeft - box.left;
  const dy = ta.clientTop - ta.scrollTop - box.top;
  const range = document.createRange();
  const last = ta.value.length; // offsets past it (the doc ahead of the textarea, mid-composition) clamp
  const boxes = (a, b) => {
    range.setStart(node, Math.min(a, last));
    range.setEnd(node, Math.min(b, last + 1));
    return [...range.getClientRects()].filter((r) => r.height > 0)
      .map((r) => ({ x: r.left + dx, y: r.top + dy, w: r.width, h: r.height }));
  };
  return {
    // The box of the character at i16 (there always is one): where a caret before it shows,
    // on the next line when i16 is where a line wraps, as the textarea's own caret does.
    caret(i16) {
      i16 = Math.min(i16, last);
      const code = node.data.charCodeAt(i16);
      const r = boxes(i16, i16 + (code >= 0xd800 && code <= 0xdbff ? 2 : 1))[0];
      return r || { x: ta.clientLeft + parseFloat(cs.paddingLeft), y: ta.clientTop + parseFloat(cs.paddingTop), h: parseFloat(cs.fontSize) * 1.2 };
    },
    rects: boxes,
  };
}

addEventListener('resize', () => {
  for (const note of notes.values()) {
    fitNote(note.textarea); // the width changed, and with it the wrapping
    queueCursors(note);
  }
});

// ---- events ---------------------------------------------------------------

boardEl.addEventListener('submit', (e) => {
  e.preventDefault();
  const form = e.target;
  if (form.matches('.add')) {
    const input = form.elements.title;
    const title = input.value.trim();
    if (!title) return;
    createCard(form.closest('.column').dataset.col, title);
    input.value = '';
    showLimit(input);
    input.focus();
  } else if (form.matches('.card-editor')) {
    closeEditor(true);
  }
});

boardEl.addEventListener('click', (e) => {
  const btn = e.target.closest('button');
  const card = e.target.closest('.card');
  if (!card) return;
  const id = card.dataset.id;
  if (!btn) {
    if (e.target.closest('.card-title')) openEditor(id);
    return;
  }
  switch (btn.dataset.testid) {
    case 'card-edit': openEditor(id); break;
    case 'card-delete': deleteCard(id); break;
    case 'title-cancel': closeEditor(false); break;
    case 'card-left':
    case 'card-right': {
      const f = room.get(id);
      const col = f && COLUMNS[COLUMNS.indexOf(cardCol(f)) + Number(btn.dataset.move)];
      if (col) moveCard(id, col, endOrder(col, id));
      break;
    }
    default: break;
  }
});

boardEl.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && e.target.matches('.title-input')) closeEditor(false);
  else if (e.key === 'Enter' && e.target.matches('.card-title')) openEditor(e.target.closest('.card').dataset.id);
});

// Drag and drop: a card dropped into a column lands between its neighbours
// (order = the midpoint of theirs), so nothing else has to be renumbered.
let dragId = null;

function dropIndex(list, y) {
  let i = 0;
  for (const el of list.children) {
    if (el.dataset.id === dragId) continue;
    const r = el.getBoundingClientRect();
    if (y < r.top + r.height / 2) break;
    i++;
  }
  return i;
}

function clearDropMarks() {
  for (const el of boardEl.querySelectorAll('.drop-before, .drop-end')) el.classList.remove('drop-before', 'drop-end');
}

boardEl.addEventListener('dragstart', (e) => {
  const card = e.target.closest && e.target.closest('.card');
  if (!card || card.dataset.locked === 'true' || e.target.closest('.card-note')) return;
  dragId = card.dataset.id;
  e.dataTransfer.effectAllowed = 'move';
  e.dataTransfer.setData('text/plain', dragId);
  card.classList.add('dragging');
});

boardEl.addEventListener('dragend', () => {
  for (const el of boardEl.querySelectorAll('.dragging')) el.classList.remove('dragging');
  clearDropMarks();
  dragId = null;
});

boardEl.addEventListener('dragover', (e) => {
  const section = e.target.closest('.column');
  if (!dragId || !section) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = 'move';
  const list = $('.cards', section);
  const i = dropIndex(list, e.clientY);
  const others = [...list.children].filter((el) => el.dataset.id !== dragId);
  clearDropMarks();
  if (others[i]) others[i].classList.add('drop-before'); else list.classList.add('drop-end');
});

boardEl.addEventListener('drop', (e) => {
  const section = e.target.closest('.column');
  if (!dragId || !section) return;
  e.preventDefault();
  const col = section.dataset.col;
  const i = dropIndex($('.cards', section), e.clientY);
  const list = columns()[col].filter((c) => c.id !== dragId);
  const prev = list[i - 1];
  const next = list[i];
  const order = !prev && !next ? 1 : !prev ? next.order - 1 : !next ? prev.order + 1 : (prev.order + next.order) / 2;
  moveCard(dragId, col, order);
  clearDropMarks();
});

// ---- room events ----------------------------------------------------------

room.on('change', () => {
  scheduleRender();
  pruneBefore();
});

room.on('lock', ({ item }) => {
  const lk = lockOf(item);
  if (editing && editing.id === item && editing.held && !(lk && lk.mine)) editing.held = false;
  scheduleRender();
});

room.on('error', ({ code, message, item, op, current }) => {
  if (code === 'conflict' && op && (op.kind === 'set' || op.kind === 'del')) {
    onConflict(op, current);
    scheduleRender();
    return;
  }
  const f = item && room.get(item);
  const what = quoted(f, item ? 'a card' : 'the board');
  if (op) toast(['Change to ', what, ` rolled back: ${CODE_TEXT[code] || message || code}`], 'warn');
  else if (code === 'lock_lost') toast(['Your edit lock on ', what, ' was lost'], 'warn');
  else toast(['Error on ', what, `: ${message || code}`], 'error');
  scheduleRender();
});

room.on('presence', () => {
  renderPresence();
  if (room.locks.size) scheduleRender(); // lock badges name a disconnected holder
  for (const note of notes.values()) queueCursors(note);
});

room.ready.then(() => {
  roomReady = true; // notes open now, from the room's text (room.text() before ready starts empty)
  boardEl.setAttribute('aria-busy', 'false');
  boardEl.dataset.ready = 'true';
  scheduleRender();
  renderPresence();
}, (err) => toast(`Could not join ${roomId}: ${err.message || err.code || err}`, 'error'));

// ---- presence -------------------------------------------------------------

function renderPresence() {
  const entries = [...(room.presence.list || [])];
  if (!entries.some((p) => p.user === user && p.device === device)) {
    entries.push({ user, device, state: myPresence, connected: client.status === 'online' });
  }
  const users = new Map();
  for (const p of entries) {
    if (!users.has(p.user)) users.set(p.user, []);
    users.get(p.user).push(p);
  }
  const names = [...users.keys()].sort((a, b) => (a === user ? -1 : b === user ? 1 : a < b ? -1 : a > b ? 1 : 0));
  presenceEl.replaceChildren(...names.map((name) => {
    const devices = users.get(name).sort((a, b) => (a.device < b.device ? -1 : a.device > b.device ? 1 : 0));
    const state = devices.find((d) => d.state && d.state.color)?.state || {};
    const li = document.createElement('li');
    li.className = 'person';
    li.dataset.testid = 'presence-user';
    li.dataset.user = name;
    // Offline, whether the others are connected is unknown (and this tab is not).
    const conn = (d) => (d.user === user && d.device === device ? String(live()) : !live() ? 'unknown' : String(!!d.connected));
    const states = devices.map(conn);
    li.classList.toggle('away', !states.includes('true') && !states.includes('unknown'));
    li.classList.toggle('unknown', !states.includes('true') && states.includes('unknown'));
    const avatar = document.createElement('span');
    avatar.className = 'avatar';
    avatar.style.backgroundColor = peerColor(state.color, name);
    avatar.textContent = initials(typeof state.name === 'string' && state.name ? state.name : name);
    const label = document.createElement('span');
    label.className = 'person-name';
    label.textContent = name === user ? `${name} (you)` : name;
    const dots = document.createElement('span');
    dots.className = 'devices';
    for (const d of devices) {
      const dot = document.createElement('span');
      dot.className = 'device';
      dot.dataset.testid = 'presence-device';
      dot.dataset.device = d.device;
      dot.dataset.connected = conn(d);
      if (d.user === user && d.device === device) dot.classList.add('self');
      const editingCard = d.state && typeof d.state.editing === 'string' ? room.get(d.state.editing) : null;
      const noteCard = d.state && d.state.note && typeof d.state.note.card === 'string' ? room.get(d.state.note.card) : null;
      dot.title = `${d.device}${d.user === user && d.device === device ? ' (this tab)' : ''}: `
        + `${{ true: 'connected', false: 'disconnected', unknown: 'unknown (you are offline)' }[conn(d)]}`
        + `${editingCard ? `, editing \u201c${isolate(editingCard.title)}\u201d` : ''}`
        + `${noteCard ? `, writing in the note of \u201c${isolate(noteCard.title)}\u201d` : ''}`;
      dots.append(dot);
    }
    li.title = `${name}: ${devices.length} device${devices.length > 1 ? 's' : ''}`;
    li.append(avatar, label, dots);
    return li;
  }));
}

client.on('status', () => {
  renderPresence();
  scheduleRender(); // lock badges: live or stale
});
renderPresence();
scheduleRender();

/** Whether this tab has changes the server has not confirmed: writes, note edits. */
function unsynced() {
  if (room.pendingCount > 0) return true;
  for (const note of notes.values()) if (note.text.state !== 'synchronized') return true;
  return false;
}

// Unsynced changes survive a reload in IndexedDB; where it cannot keep them
// (no IndexedDB, private mode, a full disk) leaving the page loses them, so
// the browser asks first.
addEventListener('beforeunload', (e) => {
  if (client.persistent || !unsynced()) return;
  e.preventDefault();
  e.returnValue = ''; // older browsers ask only when this is set
});

// A page going away for good says bye, so that the others see it leave now
// (and its locks go) instead of after the resume window.
addEventListener('pagehide', (e) => {
  if (!e.persisted) client.close();
});
addEventListener('pageshow', (e) => {
  if (e.persisted) location.reload(); // back from the bfcache with a closed client
});
addEventListener('hashchange', () => location.reload());
