/* auth.c -- JWT (HS256 via libjwt), grants, patterns and names. */
#include "auth.h"

#include <jansson.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *auth_strerror(auth_result r) {
  switch (r) {
  case AUTH_OK: return "ok";
  case AUTH_MALFORMED: return "malformed token";
  case AUTH_BAD_ALG: return "algorithm is not HS256";
  case AUTH_BAD_SIGNATURE: return "bad signature";
  case AUTH_EXPIRED: return "token expired";
  case AUTH_BAD_CLAIMS: return "missing or malformed claims (sub, exp, grants)";
  case AUTH_NO_SECRET: return "no --auth-secret configured";
  }
  return "unknown";
}

const char *auth_wire_code(auth_result r) {
  return r == AUTH_EXPIRED ? "token_expired" : "token_invalid";
}

int auth_room_valid(const char *room, size_t len) { return wsy_charset_ok(room, len, 128, "._:@-"); }
int auth_user_valid(const char *user, size_t len) { return wsy_charset_ok(user, len, 64, "._@-"); }
int auth_device_valid(const char *device, size_t len) { return wsy_charset_ok(device, len, 64, "._:-"); }

int auth_pattern_match(const char *p, const char *s) {
  /* Iterative glob with one backtrack point: linear in practice, and never
   * recursive, so a pattern of many stars cannot blow the stack. */
  const char *star = NULL, *resume = NULL;
  while (*s) {
    if (*p == '*') {
      star = p++;
      resume = s;
    } else if (*p == *s) {
      p++;
      s++;
    } else if (star) {
      p = star + 1;
      s = ++resume;
    } else {
      return 0;
    }
  }
  while (*p == '*') p++;
  return *p == '\0';
}

static int perms_parse(const char *v, unsigned *out) {
  if (!strcmp(v, "r")) *out = AUTH_READ;
  else if (!strcmp(v, "w")) *out = AUTH_WRITE;
  else if (!strcmp(v, "rw") || !strcmp(v, "wr")) *out = AUTH_READ | AUTH_WRITE;
  else return -1;
  return 0;
}

static int pattern_valid(const char *p) {
  size_t n = strlen(p);
  if (n == 0 || n > 128) return 0;
  for (size_t i = 0; i < n; i++)
    if (p[i] != '*' && !wsy_charset_ok(p + i, 1, 1, "._:@-")) return 0;
  return 1;
}

int auth_grant_parse(const char *spec, auth_grant *out) {
  const char *eq = strrchr(spec, '=');
  if (!eq) return -1;
  char pat[160];
  size_t pl = (size_t)(eq - spec);
  if (pl == 0 || pl >= sizeof pat) return -1;
  memcpy(pat, spec, pl);
  pat[pl] = '\0';
  unsigned perms;
  if (!pattern_valid(pat) || perms_parse(eq + 1, &perms) != 0) return -1;
  out->pattern = wsy_strndup(pat, pl);
  out->perms = perms;
  return 0;
}

void auth_identity_free(auth_identity *id) {
  wsy_free(id->user);
  wsy_free(id->device);
  for (size_t i = 0; i < id->ngrants; i++) wsy_free(id->grants[i].pattern);
  wsy_free(id->grants);
  memset(id, 0, sizeof *id);
}

void auth_identity_demo(auth_identity *id, const char *user) {
  memset(id, 0, sizeof *id);
  id->user = wsy_strndup(user, strlen(user));
  id->grants = wsy_calloc(1, sizeof *id->grants);
  id->grants[0].pattern = wsy_strndup("*", 1);
  id->grants[0].perms = AUTH_READ | AUTH_WRITE;
  id->ngrants = 1;
}

unsigned auth_room_perms(const auth_identity *id, const char *room) {
  if (strncmp(room, "user:", 5) == 0)
    return id->user && strcmp(room + 5, id->user) == 0 ? AUTH_READ | AUTH_WRITE : 0;
  unsigned perms = 0;
  for (size_t i = 0; i < id->ngrants; i++)
    if (auth_pattern_match(id->grants[i].pattern, room)) perms |= id->grants[i].perms;
  return perms;
}

/* Sets why (when given) and returns r. */
static auth_result fail_why(auth_result r, char *why, size_t n, const char *fmt, ...) WSY_PRINTF(4, 5);
static auth_result fail_why(auth_result r, char *why, size_t n, const char *fmt, ...) {
  if (why && n) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
  }
  return r;
}

static auth_result claims(jwt_t *jwt, int64_t now_s, auth_identity *id, char *why, size_t wn) {
  const char *sub = jwt_get_grant(jwt, "sub");
  if (!sub) return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim sub is missing or not a string");
  if (!auth_user_valid(sub, strlen(sub)))
    return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim sub is not a valid user id (1-64 of A-Z a-z 0-9 . _ @ -)");
  /* exp must be a number: jwt_get_grant_int sets errno to ENOENT when absent. */
  char *exp_json = jwt_get_grants_json(jwt, "exp");
  if (!exp_json) return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim exp is missing (sub %s)", sub);
  json_error_t jerr;
  json_t *ej = json_loads(exp_json, JSON_DECODE_ANY, &jerr);
  free(exp_json);
  if (!ej || !json_is_integer(ej)) {
    json_decref(ej);
    return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim exp is not an integer (sub %s)", sub);
  }
  int64_t exp = json_integer_value(ej);
  json_decref(ej);
  if (exp <= now_s)
    return fail_why(AUTH_EXPIRED, why, wn, "claim exp %lld is %lld s in the past (sub %s)", (long long)exp,
                    (long long)(now_s - exp), sub);

  char *gj = jwt_get_grants_json(jwt, "grants");
  json_t *g = gj ? json_loads(gj, JSON_DECODE_ANY, &jerr) : NULL;
  free(gj);
  if (g && !json_is_object(g)) {
    json_decref(g);
    return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim grants is not an object (sub %s)", sub);
  }
  size_t n = g ? json_object_size(g) : 0;
  if (n > 256) {
    json_decref(g);
    return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim grants has %zu entries, more than 256 (sub %s)", n, sub);
  }
  id->grants = n ? wsy_calloc(n, sizeof *id->grants) : NULL;
  const char *pat;
  json_t *val;
  if (g) {
    json_object_foreach(g, pat, val) {
      unsigned perms;
      if (!json_is_string(val) || !pattern_valid(pat) ||
          perms_parse(json_string_value(val), &perms) != 0) {
        auth_result r = fail_why(AUTH_BAD_CLAIMS, why, wn, "claim grants: %s '%.64s' is invalid (sub %s)",
                                 pattern_valid(pat) ? "the permission of" : "the room pattern", pat, sub);
        json_decref(g);
        auth_identity_free(id);
        return r;
      }
      id->grants[id->ngrants].pattern = wsy_strndup(pat, strlen(pat));
      id->grants[id->ngrants].perms = perms;
      id->ngrants++;
    }
  }
  json_decref(g);
  const char *dev = jwt_get_grant(jwt, "device");
  if (dev) {
    if (!auth_device_valid(dev, strlen(dev))) {
      auth_identity_free(id);
      return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim device is not a valid device id (sub %s)", sub);
    }
    id->device = wsy_strndup(dev, strlen(dev));
  }
  id->user = wsy_strndup(sub, strlen(sub));
  id->exp = exp;
  return AUTH_OK;
}

/* The header's alg, read before libjwt verifies anything: libjwt picks the
 * algorithm from the token itself, so a token is refused on its alg alone
 * (none, HS512, RS256 ...) before any key is applied to it. */
static auth_result header_alg(const char *token) {
  const char *dot = strchr(token, '.');
  size_t n = dot ? (size_t)(dot - token) : 0;
  if (n == 0 || n > 1024) return AUTH_MALFORMED;
  /* base64url -> base64 with padding, for OpenSSL's decoder */
  char b64[1032];
  unsigned char raw[800];
  for (size_t i = 0; i < n; i++) b64[i] = token[i] == '-' ? '+' : token[i] == '_' ? '/' : token[i];
  size_t m = n;
  while (m % 4) b64[m++] = '=';
  b64[m] = '\0';
  int rl = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)m);
  if (rl < 0) return AUTH_MALFORMED;
  while (rl > 0 && m > n) { rl--; m--; } /* EVP_DecodeBlock counts padding as zero bytes */
  json_error_t jerr;
  json_t *h = json_loadb((const char *)raw, (size_t)rl, 0, &jerr);
  if (!h || !json_is_object(h)) {
    json_decref(h);
    return AUTH_MALFORMED;
  }
  json_t *alg = json_object_get(h, "alg");
  int ok = json_is_string(alg) && strcmp(json_string_value(alg), "HS256") == 0;
  json_decref(h);
  return ok ? AUTH_OK : AUTH_BAD_ALG;
}

auth_result auth_verify_why(const char *secret, const char *token, int64_t now_s, auth_identity *id, char *why,
                            size_t wn) {
  memset(id, 0, sizeof *id);
  if (why && wn) why[0] = '\0';
  if (!secret || !*secret) return fail_why(AUTH_NO_SECRET, why, wn, "%s", auth_strerror(AUTH_NO_SECRET));
  if (!token || strlen(token) > 8192)
    return fail_why(AUTH_MALFORMED, why, wn, "malformed token: %s", token ? "longer than 8192 bytes" : "none");
  int dots = 0;
  for (const char *p = token; *p; p++) dots += *p == '.';
  if (dots != 2) return fail_why(AUTH_MALFORMED, why, wn, "malformed token: %d dots, a JWT has 2", dots);
  auth_result r = header_alg(token);
  if (r == AUTH_MALFORMED) return fail_why(r, why, wn, "malformed token: the header is not base64url JSON");
  if (r != AUTH_OK) return fail_why(r, why, wn, "header alg is not HS256");
  jwt_t *jwt = NULL;
  if (jwt_decode(&jwt, token, (const unsigned char *)secret, (int)strlen(secret)) != 0 || !jwt) {
    jwt_free(jwt);
    return fail_why(AUTH_BAD_SIGNATURE, why, wn,
                    "bad signature (signed with another secret, or the payload is not JSON)");
  }
  if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
    jwt_free(jwt);
    return fail_why(AUTH_BAD_ALG, why, wn, "header alg is not HS256");
  }
  r = claims(jwt, now_s, id, why, wn);
  jwt_free(jwt);
  return r;
}

auth_result auth_verify(const char *secret, const char *token, int64_t now_s, auth_identity *id) {
  return auth_verify_why(secret, token, now_s, id, NULL, 0);
}

char *auth_mint(const char *secret, const char *user, const char *device, const char *const *grants,
                size_t ngrants, int64_t now_s, int64_t ttl_s) {
  jwt_t *jwt = NULL;
  if (jwt_new(&jwt) != 0) return NULL;
  json_t *claims_obj = json_object();
  json_object_set_new(claims_obj, "sub", json_string(user));
  if (device) json_object_set_new(claims_obj, "device", json_string(device));
  json_object_set_new(claims_obj, "iat", json_integer(now_s));
  json_object_set_new(claims_obj, "exp", json_integer(now_s + ttl_s));
  json_t *g = json_object();
  for (size_t i = 0; i < ngrants; i++) {
    auth_grant gr;
    if (auth_grant_parse(grants[i], &gr) != 0) continue;
    json_object_set_new(g, gr.pattern, json_string(gr.perms == (AUTH_READ | AUTH_WRITE) ? "rw"
                                                   : gr.perms == AUTH_READ        ? "r"
                                                                                   : "w"));
    wsy_free(gr.pattern);
  }
  json_object_set_new(claims_obj, "grants", g);
  char *cj = json_dumps(claims_obj, JSON_COMPACT);
  json_decref(claims_obj);
  char *out = NULL;
  if (cj && jwt_add_grants_json(jwt, cj) == 0 &&
      jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) == 0)
    out = jwt_encode_str(jwt);
  free(cj);
  jwt_free(jwt);
  return out;
}
