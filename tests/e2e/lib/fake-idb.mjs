// fake-idb.mjs -- an in-memory IndexedDB with just what the client's
// PendingStore (clients/js/persist.js) uses, that can crash: readwrite
// transactions commit one after another, delayMs apart, in the order they
// were made, and the one after the first `crashAfter` commits never commits
// (nor does any later one). onCrash() runs at that moment. reloaded() is the
// database a new run finds: the committed records only.
//
// Keys follow the keyPath ['device', 'cid'] of the client's object store.

const keyOf = (v) => JSON.stringify(v);

function request(run) {
  const r = { result: undefined, error: null, onsuccess: null, onerror: null, onupgradeneeded: null };
  setTimeout(() => run(r), 0);
  return r;
}

export class FakeIDB {
  constructor({ data = new Map(), delayMs = 1, crashAfter = Infinity, onCrash = () => {} } = {}) {
    this.data = data; // key -> record, committed
    this.delayMs = delayMs;
    this.crashAfter = crashAfter;
    this.onCrash = onCrash;
    this.commits = 0;
    this.crashed = false;
    this.exists = data.size > 0;
    this._queue = []; // readwrite transactions waiting to commit, in order
    this._timer = null;
  }

  /** What a reload finds: the committed records, in a database that does not crash. */
  reloaded() {
    return new FakeIDB({ data: new Map(this.data), delayMs: this.delayMs });
  }

  /** The committed record of (device, cid), or undefined. */
  get(device, cid) {
    return this.data.get(keyOf([device, cid]));
  }

  /** No transaction waits to commit. */
  get idle() {
    return this._queue.length === 0;
  }

  open() {
    return request((r) => {
      const db = this._db();
      r.result = db;
      if (!this.exists) {
        this.exists = true;
        if (r.onupgradeneeded) r.onupgradeneeded();
      }
      if (r.onsuccess) r.onsuccess();
    });
  }

  _db() {
    return {
      createObjectStore: () => ({}),
      close: () => {},
      transaction: (_store, mode = 'readonly') => this._tx(mode),
    };
  }

  _tx(mode) {
    const ops = [];
    const tx = { oncomplete: null, onabort: null, onerror: null };
    tx.objectStore = () => ({
      put: (rec) => {
        if (mode !== 'readwrite') throw new Error('put in a readonly transaction');
        ops.push(['put', keyOf([rec.device, rec.cid]), structuredClone(rec)]);
        return {};
      },
      delete: (key) => {
        if (mode !== 'readwrite') throw new Error('delete in a readonly transaction');
        ops.push(['delete', keyOf(key)]);
        return {};
      },
      getAll: () => request((r) => {
        r.result = [...this.data.values()].map((v) => structuredClone(v));
        if (r.onsuccess) r.onsuccess();
      }),
    });
    if (mode === 'readwrite') {
      this._queue.push({ tx, ops });
      this._pump();
    }
    return tx;
  }

  _pump() {
    if (this._timer || this.crashed || !this._queue.length) return;
    this._timer = setTimeout(() => {
      this._timer = null;
      if (this.crashed) return;
      if (this.commits >= this.crashAfter) {
        this.crashed = true;
        this.onCrash();
        return;
      }
      const { tx, ops } = this._queue.shift();
      for (const [op, key, rec] of ops) {
        if (op === 'put') this.data.set(key, rec);
        else this.data.delete(key);
      }
      this.commits++;
      if (tx.oncomplete) tx.oncomplete();
      this._pump();
    }, this.delayMs);
  }
}
