// tls.mjs -- what the TLS tests need: throwaway self-signed certificates made
// with the openssl CLI in a temp dir, a wsync started with --tls-cert and
// --tls-key, HTTPS requests and wss:// sync clients that trust exactly that
// certificate (passed as the CA, never rejectUnauthorized: false).
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { startServer, WAIT_MS, withTimeout } from './server.mjs';
import { SyncClient } from './sync.mjs';
import { WebSocket, open } from './wsclient.mjs';

/** A temp dir removed when t ends. */
export function tempDir(t, prefix = 'wsync-tls-') {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A self-signed certificate for 127.0.0.1 and localhost: {cert, key} file
 * paths under dir (named after name), the PEM text and the SHA-256
 * fingerprint as Node prints it (AB:CD:...). kind: 'ec' (P-256) or 'rsa'.
 */
export function makeCert(dir, name = 'server', { kind = 'ec', cn = `wsync-test-${name}` } = {}) {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  const alg = kind === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  execFileSync('openssl', ['req', '-x509', ...alg, '-nodes', '-keyout', key, '-out', cert, '-days', '2',
    '-subj', `/CN=${cn}`, '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'pipe' });
  const pem = readFileSync(cert, 'utf8');
  return { cert, key, pem, fingerprint: new X509Certificate(pem).fingerprint256 };
}

/** Writes a file through a rename, so the server never reads half of it. */
export function replaceFile(file, data) {
  writeFileSync(`${file}.tmp`, data);
  renameSync(`${file}.tmp`, file);
}

/**
 * Starts wsync over TLS with a fresh certificate in a temp dir: resolves the
 * server (srv.url is https://, srv.wsUrl wss://) with srv.tls = the
 * certificate ({cert, key, pem, fingerprint}) and srv.ca (the PEM to trust).
 */
export async function startTlsServer(t, extraArgs = [], opts = {}) {
  const dir = opts.dir || tempDir(t);
  const c = opts.cert || makeCert(dir);
  const srv = await startServer(t, ['--tls-cert', c.cert, '--tls-key', c.key, ...extraArgs], opts);
  srv.tls = c;
  srv.ca = c.pem;
  srv.dir = dir;
  return srv;
}

/**
 * One HTTPS request trusting ca: resolves {status, headers, text, body, socket
 * facts: {protocol, cipher, fingerprint}}; body is the parsed JSON or undefined.
 */
export function httpsRequest(url, { method = 'GET', headers = {}, body, ca, key, tls = {} } = {}) {
  const h = { ...headers };
  if (key !== undefined) h.Authorization = `Bearer ${key}`;
  let payload;
  if (body !== undefined) {
    payload = typeof body === 'string' ? body : JSON.stringify(body);
    h['Content-Type'] ??= 'application/json';
  }
  const p = new Promise((resolve, reject) => {
    const req = https.request(url, { method, headers: h, ca, agent: false, ...tls }, (res) => {
      const s = res.socket;
      const facts = { protocol: s.getProtocol(), cipher: s.getCipher().name, fingerprint: s.getPeerCertificate().fingerprint256 };
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => {
        let json;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, body: json, ...facts });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
  return withTimeout(p, WAIT_MS, `${method} ${url}`);
}

/** A wss:// WebSocket trusting ca, as lib/wsclient.mjs open() makes them (inbox, takeMessages). */
export function wssOpen(url, ca, opts = {}) {
  return open(url, { ca, ...opts });
}

/** A sync client over wss:// (lib/sync.mjs SyncClient), welcomed after hello. */
export async function wssSync(srv, hello, name = `${hello.user || 'tok'}/${hello.device}`) {
  const ws = new WebSocket(`${srv.wsUrl}/v1/ws`, { perMessageDeflate: false, ca: srv.ca });
  await withTimeout(new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  }), WAIT_MS, `${name}: wss open`);
  const c = new SyncClient(ws, name);
  const r = await c.request({ type: 'hello', v: 1, ...hello });
  if (r.type !== 'welcome') {
    ws.terminate();
    throw new Error(`hello refused: ${JSON.stringify(r)}`);
  }
  c.welcome = r;
  return c;
}
