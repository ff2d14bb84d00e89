/* auth.c -- tokens (HS256 via libjwt; public-key algorithms via jose.c),
 * claims, grants, patterns and names. */
#include "auth.h"

#include <jansson.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_int.h"

const char *auth_strerror(auth_result r) {
  switch (r) {
  case AUTH_OK: return "ok";
  case AUTH_MALFORMED: return "malformed token";
  case AUTH_BAD_ALG: return "algorithm not accepted (HS256 with --auth-secret; RS256, ES256, EdDSA with --auth-jwks)";
  case AUTH_BAD_SIGNATURE: return "bad signature";
  case AUTH_EXPIRED: return "token expired";
  case AUTH_BAD_CLAIMS: return "missing or malformed claims (sub, exp, grants)";
  case AUTH_NO_SECRET: return "no --auth-secret or --auth-jwks configured";
  case AUTH_UNKNOWN_KEY: return "no key in the JWKS for the token's kid";
  case AUTH_NOT_YET: return "token not valid yet (nbf)";
  case AUTH_BAD_ISSUER: return "iss is not the configured issuer";
  case AUTH_BAD_AUDIENCE: return "aud does not name the configured audience";
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

/* The demo identity's one grant, shared by all of them (read only): an
 * idle demo session does not carry a copy of "*=rw". */
static auth_grant demo_grant = {.pattern = (char *)"*", .perms = AUTH_READ | AUTH_WRITE};

void auth_identity_free(auth_identity *id) {
  wsy_free(id->user);
  wsy_free(id->device);
  if (id->grants != &demo_grant) {
    for (size_t i = 0; i < id->ngrants; i++) wsy_free(id->grants[i].pattern);
    wsy_free(id->grants);
  }
  memset(id, 0, sizeof *id);
}

char *auth_token_claims(const char *token, size_t *len) {
  const char *d1 = strchr(token, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
  if (!d2) return NULL;
  return (char *)auth_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), len);
}

void auth_identity_demo(auth_identity *id, const char *user) {
  memset(id, 0, sizeof *id);
  id->user = wsy_strndup(user, strlen(user));
  id->grants = &demo_grant;
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

/* The claims of a verified token's payload p (borrowed); why says which
 * claim failed, for the log. */
static auth_result claims(json_t *p, const auth_config *cfg, int64_t now_s, auth_identity *id, char *why, size_t wn) {
  if (!json_is_object(p)) return fail_why(AUTH_BAD_CLAIMS, why, wn, "the payload is not a JSON object");
  const char *sub = json_string_value(json_object_get(p, "sub"));
  if (!sub) return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim sub is missing or not a string");
  if (!auth_user_valid(sub, strlen(sub)))
    return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim sub is not a valid user id (1-64 of A-Z a-z 0-9 . _ @ -)");
  json_t *ej = json_object_get(p, "exp"), *nj = json_object_get(p, "nbf");
  if (!ej) return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim exp is missing (sub %s)", sub);
  if (!json_is_integer(ej)) return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim exp is not an integer (sub %s)", sub);
  if (nj && !json_is_integer(nj)) return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim nbf is not an integer (sub %s)", sub);
  int64_t exp = json_integer_value(ej), leeway = cfg->leeway_s;
  if (exp + leeway <= now_s)
    return fail_why(AUTH_EXPIRED, why, wn, "claim exp %lld is %lld s in the past (sub %s)", (long long)exp,
                    (long long)(now_s - exp), sub);
  if (nj && json_integer_value(nj) - leeway > now_s)
    return fail_why(AUTH_NOT_YET, why, wn, "token not valid yet: claim nbf is %lld s ahead (sub %s)",
                    (long long)(json_integer_value(nj) - now_s), sub);
  if (cfg->issuer) {
    const char *iss = json_string_value(json_object_get(p, "iss"));
    if (!iss || strcmp(iss, cfg->issuer) != 0)
      return fail_why(AUTH_BAD_ISSUER, why, wn, "iss is not the configured issuer: '%.100s' (sub %s)",
                      iss ? iss : "(none)", sub);
  }
  if (cfg->audience) {
    json_t *aud = json_object_get(p, "aud"), *x;
    size_t i;
    int found = json_is_string(aud) && !strcmp(json_string_value(aud), cfg->audience);
    if (json_is_array(aud)) json_array_foreach(aud, i, x) found |= json_is_string(x) && !strcmp(json_string_value(x), cfg->audience);
    if (!found) return fail_why(AUTH_BAD_AUDIENCE, why, wn, "aud does not name the configured audience (sub %s)", sub);
  }
  json_t *g = json_object_get(p, "grants");
  if (g && !json_is_object(g)) return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim grants is not an object (sub %s)", sub);
  size_t n = g ? json_object_size(g) : 0;
  if (n > 256)
    return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim grants has %zu entries, more than 256 (sub %s)", n, sub);
  id->grants = n ? wsy_calloc(n, sizeof *id->grants) : NULL;
  const char *pat;
  json_t *val;
  if (g) {
    json_object_foreach(g, pat, val) {
      unsigned perms;
      if (!json_is_string(val) || !pattern_valid(pat) ||
          perms_parse(json_string_value(val), &perms) != 0) {
        auth_identity_free(id);
        return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim grants: %s '%.64s' is invalid (sub %s)",
                        pattern_valid(pat) ? "the permission of" : "the room pattern", pat, sub);
      }
      id->grants[id->ngrants].pattern = wsy_strndup(pat, strlen(pat));
      id->grants[id->ngrants].perms = perms;
      id->ngrants++;
    }
  }
  json_t *devj = json_object_get(p, "device");
  if (devj && !json_is_string(devj)) {
    auth_identity_free(id);
    return fail_why(AUTH_BAD_CLAIMS, why, wn, "claim device is not a string (sub %s)", sub);
  }
  const char *dev = json_string_value(devj);
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

/* The header's alg (and kid), read before any key is applied: a token is
 * refused on its alg alone (none, HS512, ...) and never chooses how a key
 * is used. */
static auth_result header(const char *token, auth_alg *alg, char *kid, size_t kidlen, char *algname,
                          size_t alglen) {
  const char *dot = strchr(token, '.');
  size_t n = dot ? (size_t)(dot - token) : 0, rl;
  if (n == 0 || n > 1024) return AUTH_MALFORMED;
  uint8_t *raw = auth_b64url_decode(token, n, &rl);
  if (!raw) return AUTH_MALFORMED;
  json_error_t jerr;
  json_t *h = json_loadb((const char *)raw, rl, 0, &jerr);
  wsy_free(raw);
  if (!h || !json_is_object(h)) {
    json_decref(h);
    return AUTH_MALFORMED;
  }
  const char *an = json_string_value(json_object_get(h, "alg"));
  snprintf(algname, alglen, "%s", an ? an : "(none)");
  *alg = auth_alg_parse(an);
  json_t *k = json_object_get(h, "kid");
  kid[0] = '\0';
  auth_result r = *alg == AUTH_ALG_NONE ? AUTH_BAD_ALG : AUTH_OK;
  if (k && (!json_is_string(k) || json_string_length(k) >= kidlen || json_string_length(k) == 0)) r = AUTH_MALFORMED;
  else if (k) memcpy(kid, json_string_value(k), json_string_length(k) + 1);
  json_decref(h);
  return r;
}

/* HS256 through libjwt: the payload, verified, or NULL. */
static json_t *hs256_payload(const char *secret, const char *token) {
  jwt_t *jwt = NULL;
  if (jwt_decode(&jwt, token, (const unsigned char *)secret, (int)strlen(secret)) != 0 || !jwt ||
      jwt_get_alg(jwt) != JWT_ALG_HS256) {
    jwt_free(jwt);
    return NULL;
  }
  char *pj = jwt_get_grants_json(jwt, NULL);
  jwt_free(jwt);
  json_error_t jerr;
  json_t *p = pj ? json_loads(pj, 0, &jerr) : NULL;
  free(pj);
  return p;
}

/* RS256, ES256, EdDSA through jose.c: the payload, verified, or NULL with *why. */
static json_t *jws_payload(const auth_jwks *ks, auth_alg alg, const char *kid, const char *token, auth_result *why) {
  const char *d1 = strchr(token, '.'), *d2 = strchr(d1 + 1, '.');
  size_t sl, pl;
  uint8_t *sig = auth_b64url_decode(d2 + 1, strlen(d2 + 1), &sl);
  if (!sig) {
    *why = AUTH_MALFORMED;
    return NULL;
  }
  *why = auth_jws_verify(ks, alg, *kid ? kid : NULL, token, (size_t)(d2 - token), sig, sl);
  wsy_free(sig);
  if (*why != AUTH_OK) return NULL;
  uint8_t *raw = auth_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &pl);
  json_error_t jerr;
  json_t *p = raw ? json_loadb((const char *)raw, pl, 0, &jerr) : NULL;
  wsy_free(raw);
  if (!p) *why = AUTH_MALFORMED;
  return p;
}

/* ---- the cache of verified tokens ------------------------------------------ */

typedef struct cache_ent {
  uint8_t digest[SHA256_DIGEST_LENGTH]; /* of the whole token */
  json_t *payload;                      /* NULL: empty */
  const char *secret;                   /* what verified it */
  const auth_jwks *jwks;
} cache_ent;

struct auth_cache {
  cache_ent *slot;
  size_t n;
  uint64_t hits, misses;
};

auth_cache *auth_cache_new(size_t slots) {
  auth_cache *c = wsy_calloc(1, sizeof *c);
  c->n = slots ? slots : 1;
  c->slot = wsy_calloc(c->n, sizeof *c->slot);
  return c;
}

void auth_cache_clear(auth_cache *c) {
  if (!c) return;
  for (size_t i = 0; i < c->n; i++) {
    json_decref(c->slot[i].payload);
    c->slot[i].payload = NULL;
  }
}

void auth_cache_free(auth_cache *c) {
  if (!c) return;
  auth_cache_clear(c);
  wsy_free(c->slot);
  wsy_free(c);
}

void auth_cache_stats(const auth_cache *c, uint64_t *hits, uint64_t *misses) {
  *hits = c ? c->hits : 0;
  *misses = c ? c->misses : 0;
}

static cache_ent *cache_slot(auth_cache *c, const char *token, uint8_t digest[SHA256_DIGEST_LENGTH]) {
  SHA256((const unsigned char *)token, strlen(token), digest);
  uint64_t h;
  memcpy(&h, digest, sizeof h);
  return &c->slot[h % c->n];
}

/* The payload of a token verified before under the same keys (a new
 * reference), or NULL. */
static json_t *cache_get(const auth_config *cfg, const char *token) {
  uint8_t d[SHA256_DIGEST_LENGTH];
  cache_ent *x = cache_slot(cfg->cache, token, d);
  if (x->payload && memcmp(x->digest, d, sizeof d) == 0 && x->secret == cfg->secret && x->jwks == cfg->jwks) {
    cfg->cache->hits++;
    return json_incref(x->payload);
  }
  cfg->cache->misses++;
  return NULL;
}

static void cache_put(const auth_config *cfg, const char *token, json_t *payload) {
  uint8_t d[SHA256_DIGEST_LENGTH];
  cache_ent *x = cache_slot(cfg->cache, token, d);
  json_decref(x->payload);
  memcpy(x->digest, d, sizeof d);
  x->payload = json_incref(payload);
  x->secret = cfg->secret;
  x->jwks = cfg->jwks;
}

auth_result auth_verify_cfg_why(const auth_config *cfg, const char *token, int64_t now_s, auth_identity *id,
                                char *why, size_t wn) {
  memset(id, 0, sizeof *id);
  if (why && wn) why[0] = '\0';
  int has_secret = cfg->secret && *cfg->secret;
  if (!has_secret && !cfg->jwks) return fail_why(AUTH_NO_SECRET, why, wn, "%s", auth_strerror(AUTH_NO_SECRET));
  if (!token || strlen(token) > 8192)
    return fail_why(AUTH_MALFORMED, why, wn, "malformed token: %s", token ? "longer than 8192 bytes" : "none");
  int dots = 0;
  for (const char *p = token; *p; p++) dots += *p == '.';
  if (dots != 2) return fail_why(AUTH_MALFORMED, why, wn, "malformed token: %d dots, a JWT has 2", dots);
  json_t *payload = cfg->cache ? cache_get(cfg, token) : NULL;
  if (payload) {
    auth_result r = claims(payload, cfg, now_s, id, why, wn);
    json_decref(payload);
    return r;
  }
  auth_alg alg;
  char kid[256], algname[32];
  auth_result r = header(token, &alg, kid, sizeof kid, algname, sizeof algname);
  if (r == AUTH_MALFORMED) return fail_why(r, why, wn, "malformed token: the header is not base64url JSON");
  if (r != AUTH_OK)
    return fail_why(r, why, wn, "header alg %.32s is not accepted (HS256 with --auth-secret; RS256, ES256, EdDSA "
                                "with --auth-jwks)", algname);
  if (alg == AUTH_ALG_HS256) {
    /* Only ever the secret: a public key is never an HMAC key here. */
    if (!has_secret) return fail_why(AUTH_BAD_ALG, why, wn, "HS256, but this server has no --auth-secret");
    payload = hs256_payload(cfg->secret, token);
    r = payload ? AUTH_OK : AUTH_BAD_SIGNATURE;
    if (!payload) fail_why(r, why, wn, "bad signature (signed with another secret, or the payload is not JSON)");
  } else {
    if (!cfg->jwks) return fail_why(AUTH_BAD_ALG, why, wn, "%s, but this server has no --auth-jwks", auth_alg_name(alg));
    payload = jws_payload(cfg->jwks, alg, kid, token, &r);
    if (!payload)
      fail_why(r, why, wn, "%s (%s, kid %s)", auth_strerror(r), auth_alg_name(alg), *kid ? kid : "none");
  }
  if (r == AUTH_OK && cfg->cache) cache_put(cfg, token, payload);
  if (r == AUTH_OK) r = claims(payload, cfg, now_s, id, why, wn);
  json_decref(payload);
  return r;
}

auth_result auth_verify_cfg(const auth_config *cfg, const char *token, int64_t now_s, auth_identity *id) {
  return auth_verify_cfg_why(cfg, token, now_s, id, NULL, 0);
}

auth_result auth_verify_why(const char *secret, const char *token, int64_t now_s, auth_identity *id, char *why,
                            size_t whylen) {
  auth_config cfg = {.secret = secret};
  return auth_verify_cfg_why(&cfg, token, now_s, id, why, whylen);
}

auth_result auth_verify(const char *secret, const char *token, int64_t now_s, auth_identity *id) {
  return auth_verify_why(secret, token, now_s, id, NULL, 0);
}

/* The claims `wsync token` puts in a token, as compact JSON (free()). */
static char *mint_claims(const char *user, const char *device, const char *const *grants, size_t ngrants,
                         int64_t now_s, int64_t ttl_s) {
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
  return cj;
}

char *auth_mint(const char *secret, const char *user, const char *device, const char *const *grants,
                size_t ngrants, int64_t now_s, int64_t ttl_s) {
  jwt_t *jwt = NULL;
  if (jwt_new(&jwt) != 0) return NULL;
  char *cj = mint_claims(user, device, grants, ngrants, now_s, ttl_s);
  char *out = NULL;
  if (cj && jwt_add_grants_json(jwt, cj) == 0 &&
      jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) == 0)
    out = jwt_encode_str(jwt);
  free(cj);
  jwt_free(jwt);
  return out;
}

char *auth_mint_pem(const char *pem, size_t pem_len, const char *kid, const char *user, const char *device,
                    const char *const *grants, size_t ngrants, int64_t now_s, int64_t ttl_s, char *err,
                    size_t errlen) {
  char *cj = mint_claims(user, device, grants, ngrants, now_s, ttl_s);
  char *out = cj ? auth_jws_sign_pem(pem, pem_len, kid, cj, err, errlen) : NULL;
  free(cj);
  return out;
}
