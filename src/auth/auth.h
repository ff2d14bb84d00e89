/* auth.h -- identity for wsync: HS256 JWT verification and minting
 * (libjwt), room grants and their patterns, room-name rules.
 *
 * Pure: no I/O, and the clock is a parameter. A token carries
 *   sub     the user id (1-64 chars of [A-Za-z0-9._@-])
 *   exp     expiry, seconds since the epoch (required)
 *   grants  an object mapping a room pattern to "r", "w" or "rw";
 *           `*` in a pattern matches any run of characters.
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
  AUTH_NO_SECRET = -6,     /* the server has no secret configured */
} auth_result;

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

/* Verifies token with secret at time now_s and fills *id (owned by the
 * caller: auth_identity_free). On failure *id is left empty. */
auth_result auth_verify(const char *secret, const char *token, int64_t now_s, auth_identity *id);
/* The same, with why (whylen bytes, may be NULL) set on failure to the check
 * or claim that failed, for the server log: "claim exp 1718000000 is 30 s in
 * the past (sub alice)", "claim sub is missing or not a string", ... */
auth_result auth_verify_why(const char *secret, const char *token, int64_t now_s, auth_identity *id, char *why,
                            size_t whylen);
void auth_identity_free(auth_identity *id);
/* Identity of the insecure demo mode: user, every room readable and writable. */
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

/* Names: rooms are 1-128 chars of [A-Za-z0-9._:@-]; user ids 1-64 chars of
 * [A-Za-z0-9._@-]; device ids 1-64 chars of [A-Za-z0-9._:-]. */
int auth_room_valid(const char *room, size_t len);
int auth_user_valid(const char *user, size_t len);
int auth_device_valid(const char *device, size_t len);

#endif
