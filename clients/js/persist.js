// persist.js -- what the wsync client keeps across reloads: the device id and
// the transport memory in a localStorage-like object, and, on request, the
// pending (unacknowledged) ops in IndexedDB so that closing a tab loses no edit.
//
// Plain ES module, no dependencies. Every call degrades to memory when the
// storage is missing or throws (private browsing, quotas, Node).

/** A Map-backed stand-in for localStorage. */
export function memoryStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
    removeItem: (k) => m.delete(k),
  };
}

/** opts.storage, else the browser's localStorage when usable, else memory. */
export function pickStorage(given) {
  if (given) return given;
  try {
    const ls = globalThis.localStorage;
    if (ls) {
      ls.getItem('wsync.device');
      return ls;
    }
  } catch {
    // access denied (sandboxed iframe, privacy mode): fall through
  }
  return memoryStorage();
}

export function storageGet(storage, key) {
  try {
    return storage.getItem(key);
  } catch {
    return null;
  }
}

export function storageSet(storage, key, value) {
  try {
    if (value === null || value === undefined) {
      if (storage.removeItem) storage.removeItem(key);
      else storage.setItem(key, '');
    } else {
      storage.setItem(key, value);
    }
  } catch {
    // quota or privacy mode: the value lives as long as the process
  }
}

/** `n` random characters of [a-z0-9]. */
export function randomId(n) {
  const abc = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = new Uint8Array(n);
  if (globalThis.crypto && globalThis.crypto.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < n; i++) bytes[i] = Math.floor(Math.random() * 256);
  let s = '';
  for (let i = 0; i < n; i++) s += abc[bytes[i] % abc.length];
  return s;
}

/** The persisted device id, made once (PROTOCOL 1.2: 1-64 of A-Z a-z 0-9 . _ : -). */
export function deviceId(storage) {
  const have = storageGet(storage, 'wsync.device');
  if (have && /^[A-Za-z0-9._:-]{1,64}$/.test(have)) return have;
  const d = `d-${randomId(12)}`;
  storageSet(storage, 'wsync.device', d);
  return d;
}

/**
 * The device id kept in a file (Node: options.deviceFile), made on first use:
 * every run of the process is the same device. Needs Node's fs, reached
 * through process.getBuiltinModule (Node >= 20.16, 22.3) so that this module
 * imports nothing and still loads in browsers. Throws when the file cannot
 * be read or written or holds something else than a device id (it is never
 * overwritten).
 */
export function fileDeviceId(file) {
  const proc = globalThis.process;
  const fs = proc && typeof proc.getBuiltinModule === 'function' ? proc.getBuiltinModule('node:fs') : undefined;
  if (!fs) {
    throw new TypeError('wsync: deviceFile needs Node >= 20.16 (process.getBuiltinModule); pass `device` or a `storage` instead');
  }
  const valid = (d) => /^[A-Za-z0-9._:-]{1,64}$/.test(d);
  const read = () => {
    try {
      return fs.readFileSync(file, 'utf8').trim();
    } catch (err) {
      if (err && err.code === 'ENOENT') return '';
      throw new Error(`wsync: deviceFile ${file}: ${err && err.message}`);
    }
  };
  let have = read();
  if (!have) {
    const d = `d-${randomId(12)}`;
    try {
      fs.writeFileSync(file, `${d}\n`, { flag: 'wx' });
      return d;
    } catch (err) {
      // Another process made it first: take its id.
      if (!err || err.code !== 'EEXIST') throw new Error(`wsync: deviceFile ${file}: ${err && err.message}`);
      have = read();
    }
  }
  if (!valid(have)) throw new Error(`wsync: deviceFile ${file} does not hold a device id (1-64 of A-Z a-z 0-9 . _ : -)`);
  return have;
}

// ---- IndexedDB ------------------------------------------------------------

const DB_NAME = 'wsync';
const STORE = 'pending';

function req(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

/**
 * The pending ops of one device in IndexedDB, keyed by (device, cid). Each
 * record: {device, cid, room, order, msg} where msg is the op or publish as
 * it goes on the wire (without `id`). `order` keeps the send order across
 * reloads. A shared text with unconfirmed edits has one more record, under a
 * key no cid can have: {device, cid: 'text\0room\0item\0field', room,
 * order: 0, text: {item, field, state}} (state: TextDoc.save()). Writes are
 * fire-and-forget unless put() is given a callback: IndexedDB runs the
 * transactions of one store in the order they were made, so a delete never
 * overtakes its put. A text op and its text's state go in one transaction,
 * and the op goes to the server only once it is over (Room._enqueue).
 */
export class PendingStore {
  constructor(idb, device) {
    this.idb = idb;
    this.device = device;
    this.db = null;
    this.failed = false;
  }

  /** Opens the database; resolves the device's records in send order ([] on failure). */
  async load() {
    try {
      const open = this.idb.open(DB_NAME, 1);
      open.onupgradeneeded = () => {
        open.result.createObjectStore(STORE, { keyPath: ['device', 'cid'] });
      };
      this.db = await req(open);
      const tx = this.db.transaction(STORE, 'readonly');
      const range = globalThis.IDBKeyRange
        ? globalThis.IDBKeyRange.bound([this.device, ''], [this.device, '\uffff'])
        : undefined;
      const all = await req(tx.objectStore(STORE).getAll(range));
      return all.filter((r) => r.device === this.device).sort((a, b) => a.order - b.order);
    } catch {
      this.failed = true;
      return [];
    }
  }

  /**
   * Stores recs (one record or an array) in one transaction. done(), when
   * given, runs once the transaction is over: committed, failed, or never
   * started (no working store); always later, never inside put().
   */
  put(recs, done) {
    const all = Array.isArray(recs) ? recs : [recs];
    this._write((s) => {
      for (const rec of all) s.put({ device: this.device, ...rec });
    }, done);
  }

  delete(cid) {
    this._write((s) => s.delete([this.device, cid]));
  }

  _write(fn, done) {
    let called = !done;
    const over = () => {
      if (called) return;
      called = true;
      queueMicrotask(done);
    };
    if (!this.db || this.failed) {
      over();
      return;
    }
    try {
      const tx = this.db.transaction(STORE, 'readwrite');
      // A write that fails (quota) leaves changes that a reload would lose:
      // the store no longer counts as working (Client.persistent).
      tx.onabort = () => {
        this.failed = true;
        over();
      };
      tx.oncomplete = over;
      fn(tx.objectStore(STORE));
    } catch {
      // closed database, quota: the op stays in memory only
      this.failed = true;
      over();
    }
  }

  close() {
    if (this.db) this.db.close();
    this.db = null;
  }
}
