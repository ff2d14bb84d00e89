// editor.js -- the Yjs demo (yjs.html): a collaborative Markdown editor.
//
// The document is a Y.Text ("text") of the Yjs room `yjs:demo` (or
// `yjs:<name>` from the URL hash), synced by the stock y-websocket provider
// with wsync's /v1/yjs endpoint (docs/YJS.md). CodeMirror 6 edits it through
// y-codemirror.next's yCollab, which also draws the others' carets and
// selections from the awareness states (name and colour set here).
//
// Auth, as the board demo (app.js) does it: ?token=JWT is passed on when
// given; otherwise the user name is sent as ?user=NAME, which a server
// running --insecure-demo accepts in place of a token (PROTOCOL.md 3.2).
// ?ws=URL points the provider at another endpoint (e.g. a reference
// y-websocket server: the tests check the page against it too).
//
// Offline: when the browser says it is offline, the provider is disconnected
// (an open WebSocket may survive a network loss unnoticed for a long time) and
// edits stay in the local Y.Doc; back online it reconnects, and the sync
// handshake (step 1 / step 2 both ways) merges what each side missed.
//
// This file is bundled with its npm dependencies by esbuild into
// yjs/editor.bundle.js (Makefile, `www`); the bundle is not in git.
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import { yCollab } from 'y-codemirror.next';
import { EditorView, basicSetup } from 'codemirror';
import { EditorState } from '@codemirror/state';
import { markdown } from '@codemirror/lang-markdown';

const NAME_RE = /^[A-Za-z0-9._@-]{1,64}$/; // user ids (PROTOCOL.md 1.2)
// Caret colours: readable on white, distinct from each other.
const COLOURS = ['#2f6fde', '#c0392b', '#23804f', '#8e44ad', '#b7791f', '#16a085', '#d35400', '#5d6d7e'];

const params = new URLSearchParams(location.search);
const $ = (sel) => document.querySelector(sel);
const statusEl = $('#status');
const syncedEl = $('#synced');
const editorEl = $('#editor');
const peersEl = $('#peers');
const userInput = $('#user-input');
const swatch = $('#user-color');

function storageGet(key) {
  try { return localStorage.getItem(key); } catch { return null; } // storage may be disabled
}

function storageSet(key, value) {
  try { localStorage.setItem(key, value); } catch { /* kept for this page only */ }
}

/** ?user= wins; else the board demo's name from localStorage; else a made-up one. */
function pickUser() {
  const q = params.get('user');
  if (q && NAME_RE.test(q)) return q;
  const kept = storageGet('wsync.demo.user');
  if (kept && NAME_RE.test(kept)) return kept;
  const made = `guest-${Math.floor(Math.random() * 1e4)}`;
  storageSet('wsync.demo.user', made);
  return made;
}

/** A colour that follows the name, so a user keeps theirs across reloads and tabs. */
function colourOf(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return COLOURS[h % COLOURS.length];
}

/** `yjs:<hash>` with the hash reduced to the room alphabet (PROTOCOL.md 4.1). */
function roomName() {
  let raw = '';
  try { raw = decodeURIComponent(location.hash.slice(1)); } catch { raw = location.hash.slice(1); }
  raw = raw.trim().replace(/^yjs:/, '').replace(/[^A-Za-z0-9._:@-]/g, '-').slice(0, 124);
  return `yjs:${raw || 'demo'}`;
}

function endpoint() {
  const given = params.get('ws');
  if (given) return given.replace(/\/+$/, '');
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/yjs`;
}

// ---- state ------------------------------------------------------------------

let user = pickUser();
const room = roomName();
const doc = new Y.Doc();
const ytext = doc.getText('text');
const token = params.get('token');
const provider = new WebsocketProvider(endpoint(), room, doc, {
  params: token ? { token } : { user },
  // Tabs of one browser sync through the server like anyone else, so what a
  // tab shows as "synced" is what the server has, not what a sibling tab has.
  disableBc: true,
});
const awareness = provider.awareness;

/** Shown status: connecting | online | offline | denied; kept for tests and diagnostics. */
const statusHistory = [];
function showStatus(kind, text = kind) {
  if (statusEl.dataset.status === kind && statusEl.textContent === text) return;
  statusEl.dataset.status = kind;
  statusEl.textContent = text;
  statusEl.className = `status ${kind === 'online' ? 'online' : kind === 'connecting' ? 'reconnecting' : 'offline'}`;
  statusHistory.push(kind);
}

function showSynced(on) {
  syncedEl.dataset.synced = String(on);
  syncedEl.textContent = on ? 'synced' : 'not synced';
}

function setUser(name) {
  user = name;
  userInput.value = name;
  const colour = colourOf(name);
  swatch.style.background = colour;
  swatch.dataset.color = colour;
  // yCollab reads name, color and colorLight (the selection background).
  awareness.setLocalStateField('user', { name, color: colour, colorLight: `${colour}33` });
}

// ---- connection ---------------------------------------------------------------

provider.on('status', ({ status }) => {
  if (!navigator.onLine) return; // 'offline' says more than 'disconnected'
  if (status === 'connected') showStatus('online');
  else if (status === 'connecting' || status === 'disconnected') showStatus('connecting');
});
provider.on('sync', (synced) => {
  showSynced(synced);
  if (synced) {
    editorEl.dataset.ready = 'true';
    editorEl.setAttribute('aria-busy', 'false');
  }
});
// A close code the provider treats as final (4400-4499): the server refused
// this document (no or bad token, room outside the grants). Say so instead of
// showing "connecting" for ever.
provider.on('closed', ({ code, reason }) => {
  showStatus('denied', `refused (${code}${reason ? `: ${reason}` : ''})`);
});

addEventListener('offline', () => {
  showStatus('offline');
  showSynced(false);
  provider.disconnect();
});
addEventListener('online', () => {
  showStatus('connecting');
  provider.connect();
});
if (!navigator.onLine) {
  showStatus('offline');
  provider.disconnect();
}

// ---- presence -------------------------------------------------------------------

function renderPeers() {
  const items = [];
  for (const [id, state] of awareness.getStates()) {
    const u = state && state.user;
    if (!u || typeof u.name !== 'string') continue;
    const li = document.createElement('li');
    li.className = `peer${id === doc.clientID ? ' self' : ''}`;
    li.dataset.testid = 'peer';
    li.dataset.name = u.name;
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.style.background = typeof u.color === 'string' && /^#[0-9a-f]{6}$/i.test(u.color) ? u.color : '#5f6b7a';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = u.name; // text, never HTML: names come from other clients
    li.append(dot, name);
    items.push(li);
  }
  peersEl.replaceChildren(...items);
}
awareness.on('change', renderPeers);

$('#user-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = userInput.value.trim();
  if (!NAME_RE.test(name)) return;
  storageSet('wsync.demo.user', name);
  setUser(name);
  // The name is the identity the server checks in demo mode: reconnect as it.
  if (!token) {
    provider.params = { user: name };
    if (navigator.onLine) {
      provider.disconnect();
      provider.connect();
    }
  }
  renderPeers();
});

// ---- editor -----------------------------------------------------------------------

$('#room-name').textContent = room;
setUser(user);
showStatus(navigator.onLine ? 'connecting' : 'offline');
showSynced(false);

const undoManager = new Y.UndoManager(ytext);
const view = new EditorView({
  parent: editorEl,
  state: EditorState.create({
    doc: ytext.toString(),
    extensions: [
      basicSetup,
      markdown(),
      EditorView.lineWrapping,
      EditorView.contentAttributes.of({ 'data-testid': 'editor-content', 'aria-label': 'Shared document' }),
      yCollab(ytext, awareness, { undoManager }),
    ],
  }),
});
addEventListener('hashchange', () => location.reload()); // another document: start over

// For tests and the console: the live objects.
window.wsyncYjs = { doc, ytext, provider, awareness, view, statusHistory, room };
