"""mint_token.py -- mint a wsync client token in your backend (Python 3,
standard library only): an HS256 JWT signed with the server's --auth-secret.
docs/TOKENS.md explains the claims and how to map permissions to grants."""
import base64, hashlib, hmac, json, os, sys, time

def mint_token(secret, user, grants=None, ttl_seconds=900, device=None):
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    enc = lambda obj: b64(json.dumps(obj, separators=(",", ":")).encode())
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + ttl_seconds, "grants": grants or {}}
    if device:
        claims["device"] = device
    body = enc({"alg": "HS256", "typ": "JWT"}) + "." + enc(claims)
    return body + "." + b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())

# Command line: WSYNC_AUTH_SECRET=... python3 mint_token.py USER [DEVICE] ['{"board:*":"rw"}']
if __name__ == "__main__":
    user, device, grants = (sys.argv[1:] + [None, None])[:3]
    print(mint_token(os.environ["WSYNC_AUTH_SECRET"], user, json.loads(grants or "{}"), device=device or None))
