/* auth.h -- identity for wsync: JWT verification and minting, room grants
 * and their patterns, room-name rules.
 *
 * Tokens are HS256 (a shared secret, --auth-secret; libjwt) or signed by an
 * identity provider with RS256, ES256 (P-256) or EdDSA (Ed25519) and checked
 * against the public keys of a JWKS document (--auth-jwks; jose.c on
 * OpenSSL). A key is only ever used with the algorithm of its own type:
 * an RSA key verifies RS256 only, an HS256 token is only ever checked with
 * the secret, never with a public key (no algorithm confusion). `kid` in the
 * header selects the key; without one, the only key of the algorithm's type.
 *
 * Pure: no I/O (callers read files), and the clock is a parameter. A token
 * carries
 *   sub     the user id (1-64 chars of [A-Za-z0-9._@-])
 *   exp     expiry, seconds since the epoch (required)
 *   nbf     not before (optional), seconds since the epoch
 *   iss, aud  checked when the server is configured with an issuer or an
 *           audience (aud may be a string or an array of strings)
 *   grants  an object mapping a room pattern to "r", "w" or "rw";
 *           `*` in a pattern matches any run of characters.
 *   device  optional: the one device id the token may be used from
 * exp and nbf are checked with a leeway for clock skew.
 * The private room user:<sub> is always readable and writable by its user
 * and by nobody else, whatever the grants say.
 *
 * Failures say which check failed (auth_strerror) for the server log; the
 * peer is told only the coarse code (token_invalid / token_expired). */
#ifndef WSY_AUTH_H
#define WSY_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "../common/wsy.h"

enum { AUTH_READ = 1, AUTH_WRITE = 2 };

typedef enum {
  AUTH_OK = 0,
  AUTH_MALFORMED = -1,     /* not a JWT, bad base64/JSON */
  AUTH_BAD_ALG = -2,       /* alg other than HS256 (none included) */
  AUTH_BAD_SIGNATURE = -3,
  AUTH_EXPIRED = -4,
  AUTH_BAD_CLAIMS = -5,    /* sub/exp/grants missing or of the wrong shape */
  AUTH_NO_SECRET = -6,     /* the server has no key for the token's algorithm */
  AUTH_UNKNOWN_KEY = -7,   /* no JWKS key with the token's kid (or no single key of its type) */
  AUTH_NOT_YET = -8,       /* nbf is in the future */
  AUTH_BAD_ISSUER = -9,    /* iss is not the configured issuer */
  AUTH_BAD_AUDIENCE = -10, /* aud does not name the configured audience */
} auth_result;

/* The public keys of a JWKS document (RFC 7517), each bound to one
 * algorithm by its type. Immutable once parsed. */
typedef struct auth_jwks auth_jwks;
/* Parses a JWKS document; keys with "use" other than "sig" are skipped. 0,
 * or WSY_INVAL with err saying which key is wrong and why. */
int auth_jwks_parse(const char *json, size_t len, auth_jwks **out, char *err, size_t errlen);
void auth_jwks_free(auth_jwks *ks);
size_t auth_jwks_count(const auth_jwks *ks);

/* A cache of verified tokens (reference: the whole token, by its SHA-256):
 * a client that reconnects with the same token, or many sessions sharing
 * one, skip the signature check and the payload's parse. Only the
 * signature's verdict is cached: time-bound claims (exp, nbf) and iss/aud
 * are checked again on every use, and tokens that failed are not kept.
 * Fixed size (slots entries, direct mapped: a collision evicts). The
 * payloads are immutable JSON; entries name the secret and key set they
 * were verified with and hit only under the same ones (auth_cache_clear
 * when a key set is replaced). Not thread-safe: one per loop. */
typedef struct auth_cache auth_cache;
auth_cache *auth_cache_new(size_t slots);
void auth_cache_clear(auth_cache *c);
void auth_cache_free(auth_cache *c);
/* Lookups that hit, and that missed (verified the signature). */
void auth_cache_stats(const auth_cache *c, uint64_t *hits, uint64_t *misses);

/* How tokens are verified. */
typedef struct auth_config {
  const char *secret;        /* HS256 key; NULL or "": HS256 tokens refused */
  const auth_jwks *jwks;     /* public keys; NULL: RS256/ES256/EdDSA refused */
  const char *issuer;        /* NULL: iss not checked */
  const char *audience;      /* NULL: aud not checked */
  unsigned leeway_s;         /* allowed clock skew for exp and nbf */
  auth_cache *cache;         /* NULL: every token's signature is checked */
} auth_config;

typedef struct auth_grant {
  char *pattern;
  unsigned perms;
} auth_grant;

typedef struct auth_identity {
  char *user;
  int64_t exp;            /* 0 in insecure demo mode: never expires */
  char *device;           /* the token's device claim, NULL when absent */
  auth_grant *grants;
  size_t ngrants;
} auth_identity;

const char *auth_strerror(auth_result r);
/* Wire error code for a failed verification: "token_expired" or "token_invalid". */
const char *auth_wire_code(auth_result r);

/* Verifies token as cfg says at time now_s and fills *id (owned by the
 * caller: auth_identity_free). On failure *id is left empty. */
auth_result auth_verify_cfg(const auth_config *cfg, const char *token, int64_t now_s, auth_identity *id);
/* The same with only an HS256 secret. */
auth_result auth_verify(const char *secret, const char *token, int64_t now_s, auth_identity *id);
/* The same, with why (whylen bytes, may be NULL) set on failure to the check
 * or claim that failed, for the server log: "claim exp 1718000000 is 30 s in
 * the past (sub alice)", "claim sub is missing or not a string", ... */
auth_result auth_verify_why(const char *secret, const char *token, int64_t now_s, auth_identity *id, char *why,
                            size_t whylen);
/* auth_verify_cfg, with why as in auth_verify_why. */
auth_result auth_verify_cfg_why(const auth_config *cfg, const char *token, int64_t now_s, auth_identity *id,
                                char *why, size_t whylen);
void auth_identity_free(auth_identity *id);
/* The claims (the payload's JSON text) of a token that auth_verify_* has
 * accepted, decoded from its second segment: malloc'd (wsy_free), *len set;
 * NULL when the token has no such segment. Not a check: verify first. */
char *auth_token_claims(const char *token, size_t *len);
/* Identity of the insecure demo mode: user, every room readable and
 * writable. Its grants are one shared, read-only "*=rw" (freed by
 * auth_identity_free as such): never change them in place. */
void auth_identity_demo(auth_identity *id, const char *user);

/* Permissions (AUTH_READ | AUTH_WRITE) of id on room. */
unsigned auth_room_perms(const auth_identity *id, const char *room);
/* Glob match where `*` matches any run of characters (none included). */
int auth_pattern_match(const char *pattern, const char *name);

/* Parses "board:*=rw" into a grant; 0 or -1. */
int auth_grant_parse(const char *spec, auth_grant *out);
/* Mints an HS256 token for development (`wsync token`). Returns a malloc'd
 * string or NULL. grants are "pattern=perms" specs (already validated). */
char *auth_mint(const char *secret, const char *user, const char *device, const char *const *grants,
                size_t ngrants, int64_t now_s, int64_t ttl_s);
/* The same claims signed with a PEM private key (RSA -> RS256, EC P-256 ->
 * ES256, Ed25519 -> EdDSA), kid in the header when not NULL. NULL with err
 * set when the key will not do. */
char *auth_mint_pem(const char *pem, size_t pem_len, const char *kid, const char *user, const char *device,
                    const char *const *grants, size_t ngrants, int64_t now_s, int64_t ttl_s, char *err,
                    size_t errlen);

/* Names: rooms are 1-128 chars of [A-Za-z0-9._:@-]; user ids 1-64 chars of
 * [A-Za-z0-9._@-]; device ids 1-64 chars of [A-Za-z0-9._:-]. */
int auth_room_valid(const char *room, size_t len);
int auth_user_valid(const char *user, size_t len);
int auth_device_valid(const char *device, size_t len);

#endif
