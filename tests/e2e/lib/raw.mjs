// raw.mjs -- a WebSocket and HTTP client on bare node:net sockets, for the
// cases a well-behaved library refuses to produce: unmasked, reserved-bit,
// fragmented-control and malformed frames, bytes dribbled one at a time,
// handcrafted handshakes. It parses what the server sends back (frames, close
// codes, HTTP responses) and reports how the TCP connection ended.
import net from 'node:net';
import { randomBytes } from 'node:crypto';

import { WAIT_MS, withTimeout } from './server.mjs';

export const OP = { CONT: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 };

/**
 * Encodes one frame. payload: Buffer or string. Options: fin (true), rsv
 * (0..7), mask (true: a client frame), key (4-byte Buffer), len (override the
 * length field, for lying headers).
 */
export function frame(opcode, payload = Buffer.alloc(0), opts = {}) {
  const { fin = true, rsv = 0, mask = true } = opts;
  const body = Buffer.from(payload);
  const len = opts.len ?? body.length;
  let head;
  if (len < 126) {
    head = Buffer.alloc(2);
    head[1] = len;
  } else if (len <= 0xffff) {
    head = Buffer.alloc(4);
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else {
    head = Buffer.alloc(10);
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  head[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f);
  if (!mask) return Buffer.concat([head, body]);
  head[1] |= 0x80;
  const key = opts.key || randomBytes(4);
  const masked = Buffer.alloc(body.length);
  for (let i = 0; i < body.length; i++) masked[i] = body[i] ^ key[i & 3];
  return Buffer.concat([head, key, masked]);
}

/** Payload of a close frame: 2-byte code and a reason. */
export function closePayload(code, reason = '') {
  const b = Buffer.alloc(2 + Buffer.byteLength(reason));
  b.writeUInt16BE(code, 0);
  b.write(reason, 2);
  return b;
}

/** A fresh, valid Sec-WebSocket-Key. */
export const wsKey = () => randomBytes(16).toString('base64');

/** Parses one HTTP response head at the start of buf; null when incomplete. */
export function parseHead(buf) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/(\d\.\d) (\d{3}) ?(.*)$/.exec(lines[0]);
  if (!m) throw new Error(`not an HTTP status line: ${JSON.stringify(lines[0])}`);
  const headers = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  return { version: m[1], status: Number(m[2]), reason: m[3], headers, headLen: end + 4 };
}

/**
 * A TCP connection that collects every byte and records how it ended.
 * Readers wait on `changed`, which resolves each time data or the end arrives.
 */
export class RawConn {
  /** Every connection still open, so a test can drop them all at its end. */
  static live = new Set();

  /** Destroys every raw connection still open (for after/afterEach hooks). */
  static destroyAll() {
    for (const c of RawConn.live) c.sock.destroy();
    RawConn.live.clear();
  }

  constructor(sock) {
    this.sock = sock;
    RawConn.live.add(this);
    this.buf = Buffer.alloc(0);
    this.ended = false;      // FIN or close seen
    this.error = null;       // e.g. ECONNRESET
    this.bytesIn = 0;
    this._wake = null;
    this.closed = new Promise((resolve) => {
      sock.on('close', () => {
        RawConn.live.delete(this);
        this.ended = true;
        this._notify();
        resolve({ error: this.error });
      });
    });
    sock.on('data', (d) => {
      this.bytesIn += d.length;
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      this._notify();
    });
    sock.on('end', () => {
      this.ended = true;
      this._notify();
    });
    sock.on('error', (e) => {
      this.error = e.code || e.message;
      this.ended = true;
      this._notify();
    });
  }

  static connect(port, host = '127.0.0.1') {
    return withTimeout(
      new Promise((resolve, reject) => {
        const s = net.connect({ port, host });
        s.setNoDelay(true);
        const c = new RawConn(s);
        s.once('connect', () => resolve(c));
        s.once('error', reject);
      }),
      WAIT_MS,
      `TCP connect to ${host}:${port}`,
    );
  }

  _notify() {
    const w = this._wake;
    this._wake = null;
    if (w) w();
  }

  /** Resolves when more data arrives or the connection ends. */
  _changed() {
    return new Promise((r) => (this._wake = r));
  }

  write(data) {
    return new Promise((resolve) => {
      if (this.sock.destroyed) return resolve(false);
      this.sock.write(data, (err) => resolve(!err));
    });
  }

  /** Writes data one byte per write call, each flushed before the next. */
  async dribble(data) {
    for (const b of data) {
      // Each byte is its own write; Nagle is off, so each is its own segment.
      if (!(await this.write(Buffer.from([b])))) return false;
      await new Promise((r) => setImmediate(r));
    }
    return true;
  }

  /** Waits until pred(buf) returns a non-undefined value or the connection ends. */
  async waitFor(pred, what, ms = WAIT_MS) {
    const run = async () => {
      for (;;) {
        const v = pred(this.buf);
        if (v !== undefined) return v;
        if (this.ended) return undefined;
        await this._changed();
      }
    };
    return withTimeout(run(), ms, what);
  }

  /** Resolves {error} when the TCP connection is gone (FIN read, reset or closed). */
  async waitClosed(ms = WAIT_MS) {
    if (this.ended && this.sock.destroyed) return { error: this.error };
    // After the peer's FIN, end our side too so 'close' follows.
    const onEnd = () => this.sock.end();
    this.sock.once('end', onEnd);
    if (this.ended) this.sock.end();
    return withTimeout(this.closed, ms, 'the server to close the TCP connection');
  }

  pause() { this.sock.pause(); }
  resume() { this.sock.resume(); }
  destroy() { this.sock.destroy(); }

  /** Reads one complete HTTP response (Content-Length body, or none for HEAD/1xx). */
  async readResponse({ head = false } = {}) {
    const r = await this.waitFor((b) => {
      const h = parseHead(b);
      if (!h) return undefined;
      const noBody = head || h.status === 101 || h.status === 204 || h.status === 304;
      const len = noBody ? 0 : Number(h.headers['content-length'] || 0);
      if (b.length < h.headLen + len) return undefined;
      return { ...h, body: b.subarray(h.headLen, h.headLen + len), total: h.headLen + len };
    }, 'an HTTP response');
    if (!r) throw new Error(`connection ended before a full response: ${JSON.stringify(this.buf.toString('latin1'))} (${this.error || 'EOF'})`);
    this.buf = this.buf.subarray(r.total);
    return r;
  }
}

/** Sends a raw HTTP request on a new connection and returns the first response plus the conn. */
export async function rawHttp(port, request, opts = {}) {
  const c = await RawConn.connect(port);
  await c.write(Buffer.isBuffer(request) ? request : Buffer.from(request, 'latin1'));
  const res = await c.readResponse(opts);
  return { ...res, conn: c };
}

/** The text of an upgrade request for path; headers override/extend the defaults (null removes). */
export function upgradeRequest(path, headers = {}, { method = 'GET', version = '1.1' } = {}) {
  const h = {
    Host: '127.0.0.1',
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': wsKey(),
    'Sec-WebSocket-Version': '13',
    ...headers,
  };
  let s = `${method} ${path} HTTP/${version}\r\n`;
  for (const [k, v] of Object.entries(h)) if (v !== null && v !== undefined) s += `${k}: ${v}\r\n`;
  return `${s}\r\n`;
}

/** A raw WebSocket client: handshake done by hand, frames read and written as bytes. */
export class RawWs {
  constructor(conn, response) {
    this.conn = conn;
    this.response = response;
  }

  /** Connects and upgrades; throws unless the server answers 101. */
  static async connect(port, path = '/v1/echo', headers = {}) {
    const conn = await RawConn.connect(port);
    await conn.write(upgradeRequest(path, headers));
    const res = await conn.readResponse();
    if (res.status !== 101) throw new Error(`expected 101, got ${res.status}: ${res.body}`);
    return new RawWs(conn, res);
  }

  send(buf) { return this.conn.write(buf); }
  sendFrame(opcode, payload, opts) { return this.conn.write(frame(opcode, payload, opts)); }
  pause() { this.conn.pause(); }
  resume() { this.conn.resume(); }
  destroy() { this.conn.destroy(); }

  /** Next server frame {fin, rsv, opcode, masked, payload, code?, reason?}, or null at EOF. */
  async nextFrame(ms = WAIT_MS) {
    const f = await this.conn.waitFor((b) => {
      if (b.length < 2) return undefined;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return undefined;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return undefined;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      const masked = (b[1] & 0x80) !== 0;
      if (masked) off += 4;
      if (b.length < off + len) return undefined;
      const out = {
        fin: (b[0] & 0x80) !== 0,
        rsv: (b[0] >> 4) & 7,
        opcode: b[0] & 0x0f,
        masked,
        payload: Buffer.from(b.subarray(off, off + len)),
        size: off + len,
      };
      if (out.opcode === OP.CLOSE && len >= 2) {
        out.code = out.payload.readUInt16BE(0);
        out.reason = out.payload.subarray(2).toString('utf8');
      } else if (out.opcode === OP.CLOSE) {
        out.code = 1005;
      }
      return out;
    }, 'a WebSocket frame', ms);
    if (!f) return null;
    this.conn.buf = this.conn.buf.subarray(f.size);
    return f;
  }

  /**
   * Reads frames until a close frame or EOF. Returns {code, frames, tcpClosed}
   * where code is null when the TCP connection ended without a close frame.
   * Then waits for the TCP connection to close.
   */
  async readUntilClose(ms = WAIT_MS) {
    const frames = [];
    let code = null;
    for (;;) {
      const f = await this.nextFrame(ms);
      if (!f) break;
      if (f.opcode === OP.CLOSE) {
        code = f.code;
        frames.push(f);
        break;
      }
      frames.push(f);
    }
    await this.conn.waitClosed(ms);
    return { code, frames, error: this.conn.error };
  }
}
