// app.js -- the wsync demo: a collaborative board.
//
// Cards are items `card-<random>` of the room `board:demo` (or `board:<name>`
// from the URL hash) with the fields {title, col, order}. Every change goes
// through the JavaScript client (wsync.js), which applies it optimistically,
// sends it, re-sends it after a reconnect and rolls it back if the server
// refuses it; this file only renders room.items and turns clicks into ops.
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

function colorFor(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${h % 360} 55% 42%)`;
}

function initials(name) {
  const parts = name.split(/[._@-]+/).filter(Boolean);
  const s = parts.length > 1 ? parts[0][0] + parts[1][0] : name.slice(0, 2);
  return s.toUpperCase();
}

// ---- toasts ---------------------------------------------------------------

function toast(text, kind = 'warn') {
  const el = document.createElement('div');
  el.className = `toast ${kind}`;
  el.dataset.testid = 'toast';
  el.setAttribute('role', 'alert');
  el.textContent = text;
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'icon';
  close.setAttribute('aria-label', 'Dismiss');
  close.textContent = '\u00d7';
  close.addEventListener('click', () => el.remove());
  el.append(close);
  toastsEl.append(el);
  while (toastsEl.children.length > 4) toastsEl.firstElementChild.remove();
  setTimeout(() => el.remove(), TOAST_MS);
}

const CODE_TEXT = {
  locked: 'someone else is editing it',
  lock_lost: 'your edit lock ran out',
  conflict: 'it changed meanwhile',
  not_found: 'it was deleted meanwhile',
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
try {
  ({ Client } = await import('./wsync.js'));
} catch (err) {
  statusEl.textContent = 'client missing';
  statusEl.dataset.status = 'offline';
  toast(`Could not load wsync.js: ${err.message}`, 'error');
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
  ...(forced ? { transports: [forced] } : {}),
});
const room = client.room(roomId);

let myPresence = { name: user, color: myColor, editing: null };
room.presence.set(myPresence);

function setPresence(patch) {
  myPresence = { ...myPresence, ...patch };
  room.presence.set(myPresence);
}

// Inspection hook for the browser tests and the curious (devtools console).
const statusHistory = [];
window.wsyncDemo = { client, room, user, device, statusHistory, board: () => boardState() };

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

function isCard(id, fields) {
  return id.startsWith('card-') && fields && typeof fields === 'object';
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
  el.draggable = !other && !isEditing;
  const title = $('.card-title', el);
  const text = typeof f.title === 'string' && f.title ? f.title : '(untitled)';
  if (title.textContent !== text) title.textContent = text;
  title.hidden = !!isEditing;
  const badge = $('.card-lock', el);
  badge.hidden = !other;
  if (other) {
    badge.textContent = lk.user === user ? 'editing in your other tab' : `${lk.user} is editing`;
    badge.title = `Locked by ${lk.user} (${lk.device})`;
    badge.style.setProperty('--who', colorFor(lk.user));
  }
  const i = COLUMNS.indexOf(col);
  $('[data-testid="card-left"]', el).disabled = other || i === 0;
  $('[data-testid="card-right"]', el).disabled = other || i === COLUMNS.length - 1;
  $('[data-testid="card-edit"]', el).disabled = !!other || !!isEditing;
  $('[data-testid="card-delete"]', el).disabled = !!other;
}

function render() {
  const active = document.activeElement;
  const sel = active && active.matches && active.matches('.title-input')
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
  track(id, room.set(id, { col, order }));
}

function deleteCard(id) {
  if (editing && editing.id === id) closeEditor(false);
  if (room.get(id)) track(id, room.delete(id));
}

// ---- title editor and locks -----------------------------------------------

async function openEditor(id) {
  if (editing && editing.id === id) return;
  if (editing) closeEditor(false);
  const lk = lockOf(id);
  if (lk && !lk.mine) {
    toast(`${lk.user} is editing this card`, 'info');
    return;
  }
  const ed = { id, held: !!lk, closed: false, renew: null };
  editing = ed;
  const el = cardEls.get(id);
  if (el) el.dataset.editing = 'locking';
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
    if (save && f && title && title !== f.title) track(ed.id, room.set(ed.id, { title }));
  }
  if (ed.held) room.unlock(ed.id).catch(() => {});
  setPresence({ editing: null });
  scheduleRender();
}

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
  if (!card || card.dataset.locked === 'true') return;
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

room.on('change', scheduleRender);

room.on('lock', ({ item }) => {
  const lk = lockOf(item);
  if (editing && editing.id === item && editing.held && !(lk && lk.mine)) editing.held = false;
  scheduleRender();
});

room.on('error', ({ code, message, item, op }) => {
  const f = item && room.get(item);
  const what = f && f.title ? `\u201c${f.title}\u201d` : item ? 'a card' : 'the board';
  if (op) toast(`Change to ${what} rolled back: ${CODE_TEXT[code] || message || code}`, 'warn');
  else if (code === 'lock_lost') toast(`Your edit lock on ${what} was lost`, 'warn');
  else toast(`Error on ${what}: ${message || code}`, 'error');
  scheduleRender();
});

room.on('presence', renderPresence);

room.ready.then(() => {
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
    li.classList.toggle('away', !devices.some((d) => d.connected));
    const avatar = document.createElement('span');
    avatar.className = 'avatar';
    avatar.style.background = typeof state.color === 'string' ? state.color : colorFor(name);
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
      dot.dataset.connected = d.connected ? 'true' : 'false';
      if (d.user === user && d.device === device) dot.classList.add('self');
      const editingCard = d.state && typeof d.state.editing === 'string' ? room.get(d.state.editing) : null;
      dot.title = `${d.device}${d.user === user && d.device === device ? ' (this tab)' : ''}: `
        + `${d.connected ? 'connected' : 'disconnected'}${editingCard ? `, editing \u201c${editingCard.title}\u201d` : ''}`;
      dots.append(dot);
    }
    li.title = `${name}: ${devices.length} device${devices.length > 1 ? 's' : ''}`;
    li.append(avatar, label, dots);
    return li;
  }));
}

client.on('status', renderPresence);
renderPresence();
scheduleRender();

// A page going away for good says bye, so that the others see it leave now
// (and its locks go) instead of after the resume window.
addEventListener('pagehide', (e) => {
  if (!e.persisted) client.close();
});
addEventListener('pageshow', (e) => {
  if (e.persisted) location.reload(); // back from the bfcache with a closed client
});
addEventListener('hashchange', () => location.reload());
