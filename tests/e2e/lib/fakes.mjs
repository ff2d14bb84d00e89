// fakes.mjs -- stand-ins for unit-level client tests: a textarea for
// bindTextarea (text.js) and a Client for a Room driven by hand (wsync.js).

/** Just enough of HTMLTextAreaElement: setting value puts the caret at the end, as browsers do. */
export class FakeTextarea {
  #value = '';
  selectionStart = 0;
  selectionEnd = 0;
  selectionDirection = 'none';
  listeners = new Map();
  get value() { return this.#value; }
  set value(v) {
    this.#value = String(v);
    this.selectionStart = this.selectionEnd = this.#value.length;
  }
  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
  }
  removeEventListener(type, fn) { this.listeners.get(type)?.delete(fn); }
  setSelectionRange(s, e, dir = 'none') {
    const n = this.#value.length;
    this.selectionStart = Math.min(Math.max(0, s), n);
    this.selectionEnd = Math.min(Math.max(this.selectionStart, e), n);
    this.selectionDirection = dir;
  }
  dispatch(type, extra = {}) { for (const fn of [...(this.listeners.get(type) ?? [])]) fn({ type, target: this, ...extra }); }
  get listenerCount() { return [...this.listeners.values()].reduce((n, s) => n + s.size, 0); }
  select(s, e = s) {
    this.setSelectionRange(s, e);
    this.dispatch('select');
  }
  // The user replaces the selection by text (no event unless asked).
  edit(text, { event = true } = {}) {
    const v = this.#value;
    const s = this.selectionStart;
    this.#value = v.slice(0, s) + text + v.slice(this.selectionEnd);
    this.selectionStart = this.selectionEnd = s + text.length;
    if (event) this.dispatch('input');
  }
  backspace() {
    if (this.selectionStart === this.selectionEnd && this.selectionStart > 0) {
      const low = this.#value.charCodeAt(this.selectionStart - 1);
      this.selectionStart -= low >= 0xdc00 && low <= 0xdfff ? 2 : 1;
    }
    this.edit('');
  }
  /** The user puts the caret at s and types text, one character (code point) per input event. */
  type(s, text) {
    this.select(s);
    for (const ch of text) this.edit(ch);
  }
}

/** A stand-in for the Client: records what the room sends, always online. */
export function fakeClient() {
  let n = 0;
  const c = {
    user: 'alice',
    device: 'dev1',
    session: 's1',
    _gen: 1,
    _rooms: new Map(),
    sent: [],
    _online: () => true,
    _nextId: () => ++n,
    _nextCid: () => `dev1.rnd.${++n}`,
    _nextOrder: () => ++n,
    _send: (m) => c.sent.push(m),
    _request: (m) => {
      c.sent.push(m);
      return new Promise(() => {});
    },
    _persistPut: () => {},
    _persistDelete: () => {},
    _tooLarge: () => false,
  };
  return c;
}
