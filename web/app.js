// Demo of the server core's fan-out: a tiny broadcast chat over /v1/broadcast.
const me = (localStorage.wsyncDemoName ||= `guest-${Math.random().toString(36).slice(2, 6)}`);
const statusEl = document.getElementById('status');
const log = document.getElementById('log');
let ws;
let delay = 500;

function setStatus(s) {
  statusEl.textContent = s;
  statusEl.className = `status ${s}`;
}

function show(msg) {
  const li = document.createElement('li');
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = msg.from;
  li.append(who, document.createTextNode(msg.text));
  log.append(li);
  li.scrollIntoView({ block: 'nearest' });
}

function connect() {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  ws = new WebSocket(`${proto}://${location.host}/v1/broadcast?room=demo`);
  setStatus('connecting');
  ws.onopen = () => { delay = 500; setStatus('online'); };
  ws.onmessage = (e) => {
    try { show(JSON.parse(e.data)); } catch { /* not ours */ }
  };
  ws.onclose = () => {
    setStatus('offline');
    // exponential backoff with full jitter, capped at 10 s
    setTimeout(connect, Math.random() * delay);
    delay = Math.min(delay * 2, 10000);
  };
}

document.getElementById('form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = document.getElementById('text');
  if (ws && ws.readyState === WebSocket.OPEN && input.value) {
    ws.send(JSON.stringify({ from: me, text: input.value }));
    input.value = '';
  }
});

connect();
