// mint-token.mjs -- mint a wsync client token in your backend (Node >= 16,
// no dependencies): an HS256 JWT signed with the server's --auth-secret.
// docs/TOKENS.md explains the claims and how to map permissions to grants.
import { createHmac } from 'node:crypto';

export function mintToken(secret, { user, grants = {}, ttlSeconds = 900, device } = {}) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: user, iat: now, exp: now + ttlSeconds, grants, ...(device ? { device } : {}) };
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

// Command line: WSYNC_AUTH_SECRET=... node mint-token.mjs USER [DEVICE] ['{"board:*":"rw"}']
if (import.meta.url === `file://${process.argv[1]}`) {
  const [user, device, grants] = process.argv.slice(2);
  console.log(mintToken(process.env.WSYNC_AUTH_SECRET, { user, device: device || undefined, grants: JSON.parse(grants || '{}') }));
}
