/* Unit tests for src/auth: token verification, grants, patterns, names. */
#include <criterion/criterion.h>
#include <jwt.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/auth/auth.h"

static const char *SECRET = "test-secret-of-reasonable-length";
#define NOW 1900000000LL

static char *mint(const char *user, int64_t ttl) {
  const char *grants[] = {"board:*=rw", "chat:lobby=r"};
  char *t = auth_mint(SECRET, user, "dev1", grants, 2, NOW, ttl);
  cr_assert_not_null(t);
  return t;
}

/* base64url without padding, for hand-made tokens */
static void b64url(const char *in, char *out) {
  static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t n = strlen(in), o = 0;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned char)in[i] << 16;
    if (i + 1 < n) v |= (unsigned char)in[i + 1] << 8;
    if (i + 2 < n) v |= (unsigned char)in[i + 2];
    out[o++] = tbl[(v >> 18) & 63];
    out[o++] = tbl[(v >> 12) & 63];
    if (i + 1 < n) out[o++] = tbl[(v >> 6) & 63];
    if (i + 2 < n) out[o++] = tbl[v & 63];
  }
  out[o] = '\0';
}

static char *handmade(const char *header, const char *payload, const char *sig) {
  char h[512], p[1024];
  b64url(header, h);
  b64url(payload, p);
  char *t = malloc(strlen(h) + strlen(p) + strlen(sig) + 3);
  sprintf(t, "%s.%s.%s", h, p, sig);
  return t;
}

Test(auth, valid_token_gives_identity_and_grants) {
  char *t = mint("alice", 3600);
  auth_identity id;
  cr_assert_eq(auth_verify(SECRET, t, NOW, &id), AUTH_OK);
  cr_assert_str_eq(id.user, "alice");
  cr_assert_eq(id.exp, NOW + 3600);
  cr_assert_eq(id.ngrants, 2);
  cr_assert_eq(auth_room_perms(&id, "board:team-a"), AUTH_READ | AUTH_WRITE);
  cr_assert_eq(auth_room_perms(&id, "chat:lobby"), AUTH_READ);
  cr_assert_eq(auth_room_perms(&id, "chat:other"), 0);
  cr_assert_eq(auth_room_perms(&id, "user:alice"), AUTH_READ | AUTH_WRITE);
  cr_assert_eq(auth_room_perms(&id, "user:bob"), 0);
  auth_identity_free(&id);
  free(t);
}

Test(auth, expired_token) {
  char *t = mint("alice", 10);
  auth_identity id;
  cr_assert_eq(auth_verify(SECRET, t, NOW + 10, &id), AUTH_EXPIRED);
  cr_assert_null(id.user);
  cr_assert_str_eq(auth_wire_code(AUTH_EXPIRED), "token_expired");
  free(t);
}

Test(auth, wrong_secret_is_bad_signature) {
  char *t = mint("alice", 3600);
  auth_identity id;
  cr_assert_eq(auth_verify("another-secret", t, NOW, &id), AUTH_BAD_SIGNATURE);
  cr_assert_str_eq(auth_wire_code(AUTH_BAD_SIGNATURE), "token_invalid");
  free(t);
}

Test(auth, tampered_payload_is_rejected) {
  char *t = mint("alice", 3600);
  char *dot = strchr(t, '.');
  /* flip one character of the payload */
  dot[5] = dot[5] == 'A' ? 'B' : 'A';
  auth_identity id;
  cr_assert_neq(auth_verify(SECRET, t, NOW, &id), AUTH_OK);
  free(t);
}

Test(auth, alg_none_is_rejected) {
  char *t = handmade("{\"alg\":\"none\",\"typ\":\"JWT\"}",
                     "{\"sub\":\"alice\",\"exp\":1999999999,\"grants\":{\"*\":\"rw\"}}", "");
  auth_identity id;
  cr_assert_eq(auth_verify(SECRET, t, NOW, &id), AUTH_BAD_ALG);
  free(t);
}

Test(auth, other_hmac_alg_is_rejected) {
  jwt_t *jwt;
  jwt_new(&jwt);
  jwt_add_grant(jwt, "sub", "alice");
  jwt_add_grant_int(jwt, "exp", NOW + 100);
  jwt_set_alg(jwt, JWT_ALG_HS512, (const unsigned char *)SECRET, (int)strlen(SECRET));
  char *t = jwt_encode_str(jwt);
  jwt_free(jwt);
  auth_identity id;
  cr_assert_eq(auth_verify(SECRET, t, NOW, &id), AUTH_BAD_ALG);
  free(t);
}

Test(auth, malformed_tokens) {
  /* Each token fails at one check, so each has one result. */
  static const struct {
    const char *token;
    auth_result want;
  } bad[] = {
      {"", AUTH_MALFORMED},
      {"abc", AUTH_MALFORMED},
      {"a.b", AUTH_MALFORMED},
      {"a.b.c.d", AUTH_MALFORMED},
      {"....", AUTH_MALFORMED},
      {"!!!.???.***", AUTH_MALFORMED},      /* the header is not base64url */
      {"e30.e30.e30", AUTH_BAD_ALG},         /* header {}: no alg */
      /* header {"alg":"HS256"}, empty payload and signature: libjwt refuses
       * to decode it, which auth_verify reports as a bad signature. */
      {"eyJhbGciOiJIUzI1NiJ9..", AUTH_BAD_SIGNATURE},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    auth_identity id;
    auth_result r = auth_verify(SECRET, bad[i].token, NOW, &id);
    cr_assert_eq(r, bad[i].want, "token '%s' gave %d (%s), want %d (%s)", bad[i].token, r, auth_strerror(r),
                 bad[i].want, auth_strerror(bad[i].want));
  }
  auth_identity id;
  cr_assert_eq(auth_verify(SECRET, NULL, NOW, &id), AUTH_MALFORMED);
  cr_assert_eq(auth_verify(NULL, "a.b.c", NOW, &id), AUTH_NO_SECRET);
}

static char *signed_claims(const char *claims_json) {
  jwt_t *jwt;
  jwt_new(&jwt);
  cr_assert_eq(jwt_add_grants_json(jwt, claims_json), 0, "claims %s", claims_json);
  jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)SECRET, (int)strlen(SECRET));
  char *t = jwt_encode_str(jwt);
  jwt_free(jwt);
  return t;
}

Test(auth, claims_must_have_the_right_shape) {
  const char *bad[] = {
    "{\"exp\":1999999999}",                                   /* no sub */
    "{\"sub\":\"alice\"}",                                     /* no exp */
    "{\"sub\":\"alice\",\"exp\":\"1999999999\"}",              /* exp a string */
    "{\"sub\":\"al ice\",\"exp\":1999999999}",                 /* bad user id */
    "{\"sub\":\"alice\",\"exp\":1999999999,\"grants\":[\"x\"]}",   /* grants not an object */
    "{\"sub\":\"alice\",\"exp\":1999999999,\"grants\":{\"a\":\"x\"}}", /* bad perms */
    "{\"sub\":\"alice\",\"exp\":1999999999,\"grants\":{\"a b\":\"r\"}}", /* bad pattern */
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char *t = signed_claims(bad[i]);
    auth_identity id;
    cr_assert_eq(auth_verify(SECRET, t, NOW, &id), AUTH_BAD_CLAIMS, "claims %s", bad[i]);
    cr_assert_null(id.user);
    free(t);
  }
}

Test(auth, token_without_grants_has_only_own_room) {
  char *t = signed_claims("{\"sub\":\"bob\",\"exp\":1999999999}");
  auth_identity id;
  cr_assert_eq(auth_verify(SECRET, t, NOW, &id), AUTH_OK);
  cr_assert_eq(auth_room_perms(&id, "user:bob"), AUTH_READ | AUTH_WRITE);
  cr_assert_eq(auth_room_perms(&id, "board:1"), 0);
  auth_identity_free(&id);
  free(t);
}

Test(auth, user_room_ignores_grants) {
  char *t = signed_claims("{\"sub\":\"bob\",\"exp\":1999999999,\"grants\":{\"*\":\"rw\"}}");
  auth_identity id;
  cr_assert_eq(auth_verify(SECRET, t, NOW, &id), AUTH_OK);
  cr_assert_eq(auth_room_perms(&id, "user:alice"), 0);
  cr_assert_eq(auth_room_perms(&id, "user:bob"), AUTH_READ | AUTH_WRITE);
  cr_assert_eq(auth_room_perms(&id, "anything:else"), AUTH_READ | AUTH_WRITE);
  auth_identity_free(&id);
  free(t);
}

Test(auth, pattern_matching) {
  struct { const char *p, *s; int m; } v[] = {
    {"board:*", "board:1", 1},   {"board:*", "board:", 1},      {"board:*", "boards:1", 0},
    {"*", "x", 1},               {"*:lobby", "chat:lobby", 1},  {"*:lobby", "chat:lobby2", 0},
    {"a*b*c", "aXXbYYc", 1},     {"a*b*c", "aXXbYY", 0},        {"doc:42", "doc:42", 1},
    {"doc:42", "doc:420", 0},    {"**", "", 1},                 {"a*", "b", 0},
    {"*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0},
  };
  for (size_t i = 0; i < sizeof v / sizeof *v; i++)
    cr_assert_eq(auth_pattern_match(v[i].p, v[i].s), v[i].m, "%s vs %s", v[i].p, v[i].s);
}

Test(auth, grant_specs) {
  auth_grant g;
  cr_assert_eq(auth_grant_parse("board:*=rw", &g), 0);
  cr_assert_str_eq(g.pattern, "board:*");
  cr_assert_eq(g.perms, AUTH_READ | AUTH_WRITE);
  free(g.pattern);
  cr_assert_eq(auth_grant_parse("chat:1=r", &g), 0);
  cr_assert_eq(g.perms, AUTH_READ);
  free(g.pattern);
  cr_assert_eq(auth_grant_parse("board:*", &g), -1);
  cr_assert_eq(auth_grant_parse("=rw", &g), -1);
  cr_assert_eq(auth_grant_parse("board:*=x", &g), -1);
  cr_assert_eq(auth_grant_parse("bo ard=r", &g), -1);
}

Test(auth, names) {
  cr_assert(auth_room_valid("board:team-a", 12));
  cr_assert(auth_room_valid("user:alice@example.com", 22));
  cr_assert_not(auth_room_valid("", 0));
  cr_assert_not(auth_room_valid("has space", 9));
  cr_assert_not(auth_room_valid("semi;colon", 10));
  char big[130];
  memset(big, 'a', sizeof big);
  cr_assert(auth_room_valid(big, 128));
  cr_assert_not(auth_room_valid(big, 129));
  cr_assert(auth_user_valid("alice", 5));
  cr_assert_not(auth_user_valid("ali:ce", 6));
  cr_assert(auth_device_valid("laptop-3f2a", 11));
  cr_assert_not(auth_device_valid("laptop/3f2a", 11));
  cr_assert_not(auth_device_valid("\xc3\xa9", 2));
}

Test(auth, demo_identity) {
  auth_identity id;
  auth_identity_demo(&id, "carol");
  cr_assert_eq(auth_room_perms(&id, "board:x"), AUTH_READ | AUTH_WRITE);
  cr_assert_eq(auth_room_perms(&id, "user:carol"), AUTH_READ | AUTH_WRITE);
  cr_assert_eq(auth_room_perms(&id, "user:dave"), 0);
  auth_identity_free(&id);
}

Test(auth, verify_why_names_the_failed_check) {
  const char *secret = "0123456789abcdef0123456789abcdef";
  char why[200];
  auth_identity id;
  char *t = auth_mint(secret, "alice", NULL, NULL, 0, 1000, 60);
  cr_assert_eq(auth_verify_why(secret, t, 2000, &id, why, sizeof why), AUTH_EXPIRED);
  cr_assert(strstr(why, "claim exp 1060 is 940 s in the past (sub alice)"), "%s", why);
  cr_assert_eq(auth_verify_why("another secret, also 32 bytes!!!", t, 1001, &id, why, sizeof why),
               AUTH_BAD_SIGNATURE);
  cr_assert(strstr(why, "bad signature"), "%s", why);
  cr_assert_eq(auth_verify_why(secret, "a.b", 1001, &id, why, sizeof why), AUTH_MALFORMED);
  cr_assert(strstr(why, "1 dots"), "%s", why);
  cr_assert_eq(auth_verify_why(secret, t, 1001, &id, why, sizeof why), AUTH_OK);
  cr_assert_str_eq(id.user, "alice");
  auth_identity_free(&id);
  cr_assert_eq(auth_verify_why(secret, t, 1001, &id, NULL, 0), AUTH_OK, "why may be NULL");
  auth_identity_free(&id);
  free(t);
}

/* ---- the cache of verified tokens ------------------------------------------ */

Test(auth_cache, second_use_of_a_token_hits_and_gives_the_same_identity) {
  char *t = mint("alice", 3600);
  auth_cache *c = auth_cache_new(64);
  auth_config cfg = {.secret = SECRET, .cache = c};
  auth_identity a, b;
  uint64_t hits, misses;
  cr_assert_eq(auth_verify_cfg(&cfg, t, NOW, &a), AUTH_OK);
  auth_cache_stats(c, &hits, &misses);
  cr_assert_eq(hits, 0);
  cr_assert_eq(misses, 1);
  cr_assert_eq(auth_verify_cfg(&cfg, t, NOW + 1, &b), AUTH_OK);
  auth_cache_stats(c, &hits, &misses);
  cr_assert_eq(hits, 1);
  cr_assert_str_eq(b.user, a.user);
  cr_assert_eq(b.ngrants, a.ngrants);
  cr_assert_eq(auth_room_perms(&b, "board:x"), AUTH_READ | AUTH_WRITE);
  auth_identity_free(&a);
  auth_identity_free(&b);
  auth_cache_free(c);
  free(t);
}

Test(auth_cache, expiry_is_checked_again_on_a_hit) {
  char *t = mint("alice", 10);
  auth_cache *c = auth_cache_new(64);
  auth_config cfg = {.secret = SECRET, .cache = c};
  auth_identity id;
  cr_assert_eq(auth_verify_cfg(&cfg, t, NOW, &id), AUTH_OK);
  auth_identity_free(&id);
  cr_assert_eq(auth_verify_cfg(&cfg, t, NOW + 10, &id), AUTH_EXPIRED);
  uint64_t hits, misses;
  auth_cache_stats(c, &hits, &misses);
  cr_assert_eq(hits, 1); /* served from the cache, and still refused */
  auth_cache_free(c);
  free(t);
}

Test(auth_cache, a_token_with_a_cached_signature_but_another_payload_is_checked) {
  char *t = mint("alice", 3600);
  auth_cache *c = auth_cache_new(64);
  auth_config cfg = {.secret = SECRET, .cache = c};
  auth_identity id;
  cr_assert_eq(auth_verify_cfg(&cfg, t, NOW, &id), AUTH_OK);
  auth_identity_free(&id);
  /* The same signature over another payload: not the cached token. */
  char *forged = handmade("{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                          "{\"sub\":\"mallory\",\"exp\":1999999999,\"grants\":{\"*\":\"rw\"}}", strrchr(t, '.') + 1);
  cr_assert_eq(auth_verify_cfg(&cfg, forged, NOW, &id), AUTH_BAD_SIGNATURE);
  cr_assert_eq(auth_verify_cfg(&cfg, forged, NOW, &id), AUTH_BAD_SIGNATURE); /* failures are not cached */
  auth_cache_free(c);
  free(forged);
  free(t);
}

Test(auth_cache, an_entry_hits_only_under_the_keys_that_verified_it) {
  char *t = mint("alice", 3600);
  auth_cache *c = auth_cache_new(64);
  auth_config cfg = {.secret = SECRET, .cache = c};
  auth_identity id;
  cr_assert_eq(auth_verify_cfg(&cfg, t, NOW, &id), AUTH_OK);
  auth_identity_free(&id);
  auth_config other = {.secret = "another-secret-of-reasonable-len", .cache = c};
  cr_assert_eq(auth_verify_cfg(&other, t, NOW, &id), AUTH_BAD_SIGNATURE);
  auth_cache_clear(c);
  uint64_t hits, misses;
  cr_assert_eq(auth_verify_cfg(&cfg, t, NOW, &id), AUTH_OK);
  auth_identity_free(&id);
  auth_cache_stats(c, &hits, &misses);
  cr_assert_eq(hits, 0);
  cr_assert_eq(misses, 3);
  auth_cache_free(c);
  free(t);
}
