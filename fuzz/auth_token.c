/* libFuzzer target: token verification on arbitrary input. Invariants: no
 * crash or leak; a token accepted has a valid user id, an exp after the clock
 * it was checked at, is expired at that exp, and never verifies under a
 * different secret; its private room user:<sub> is its own and nobody else's.
 *
 * The clock is taken from the token itself (its iat, else one second before
 * its exp): a fixed clock would sooner or later be past the exp of every
 * signed seed, and then no input would ever verify and every check on an
 * accepted token would be dead code while the run still passed. So that this
 * cannot happen silently again, a fuzzing run in which no input verified
 * fails at exit (see LLVMFuzzerInitialize). The signed seeds in
 * fuzz/corpus/auth_token/ are minted with
 *   build/wsync token --auth-secret fuzz-secret --user U [--device D] [--grant P=rw]...
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "../src/auth/auth.h"

#define SECRET "fuzz-secret"
#define FALLBACK_NOW 1900000000

static unsigned long verified;

/* An integer claim of the token's payload, or 0 when it has none. Lenient:
 * anything odd just means "no such claim", auth_verify judges the token. */
static int payload_int(const char *token, const char *name, int64_t *out) {
  const char *p = strchr(token, '.');
  if (!p) return 0;
  p++;
  const char *end = strchr(p, '.');
  size_t n = end ? (size_t)(end - p) : strlen(p);
  if (n == 0 || n > 4096) return 0;
  char b64[4100];
  unsigned char raw[3080];
  for (size_t i = 0; i < n; i++) b64[i] = p[i] == '-' ? '+' : p[i] == '_' ? '/' : p[i];
  size_t m = n;
  while (m % 4) b64[m++] = '=';
  b64[m] = '\0';
  int rl = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)m);
  if (rl < 0) return 0;
  while (rl > 0 && m > n) { rl--; m--; } /* padding decodes as zero bytes */
  json_error_t jerr;
  json_t *j = json_loadb((const char *)raw, (size_t)rl, 0, &jerr);
  json_t *v = json_is_object(j) ? json_object_get(j, name) : NULL;
  int ok = json_is_integer(v);
  if (ok) *out = json_integer_value(v);
  json_decref(j);
  return ok;
}

/* The clock a token is checked at: its iat, else exp - 1, else a fixed time. */
static int64_t token_clock(const char *token) {
  int64_t t;
  if (payload_int(token, "iat", &t)) return t;
  if (payload_int(token, "exp", &t) && t > INT64_MIN) return t - 1;
  return FALLBACK_NOW;
}

static void check(int ok, const char *what, const char *token) {
  if (ok) return;
  fprintf(stderr, "auth_token: invariant broken: %s\ntoken: %s\n", what, token);
  __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *token = malloc(size + 1);
  memcpy(token, data, size);
  token[size] = '\0';
  int64_t now = token_clock(token);
  auth_identity id;
  if (auth_verify(SECRET, token, now, &id) == AUTH_OK) {
    verified++;
    check(id.user && auth_user_valid(id.user, strlen(id.user)), "accepted token with no valid user", token);
    check(id.exp > now, "accepted token whose exp is not after the clock", token);

    char room[80];
    snprintf(room, sizeof room, "user:%s", id.user);
    check(auth_room_perms(&id, room) == (AUTH_READ | AUTH_WRITE), "user:<sub> is not rw for its user", token);
    const char *other = strcmp(id.user, "x") ? "user:x" : "user:y";
    check(auth_room_perms(&id, other) == 0, "another user's private room is reachable", token);
    auth_room_perms(&id, "board:1");

    auth_identity late;
    check(auth_verify(SECRET, token, id.exp, &late) == AUTH_EXPIRED, "token still valid at its exp", token);
    auth_identity_free(&late);
    auth_identity_free(&id);

    auth_identity other_id;
    check(auth_verify("another-secret", token, now, &other_id) != AUTH_OK, "token verifies under another secret",
          token);
    auth_identity_free(&other_id);
  }
  free(token);
  return 0;
}

static void require_a_verified_token(void) {
  if (verified) return;
  fprintf(stderr,
          "\nauth_token: FAILED: no input verified in this run, so the checks on an accepted token never ran.\n"
          "auth_token: pass the seed corpus (fuzz/corpus/auth_token) and check that its signed seeds are\n"
          "auth_token: minted with the secret \"" SECRET "\" (see the comment at the top of fuzz/auth_token.c).\n");
  _exit(1);
}

/* Armed when libFuzzer fuzzes (a corpus directory, or none at all), not when
 * it only replays files (reproducing a crash) or drives child processes. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  static const char *const no_check[] = {"-fork=", "-jobs=", "-workers=", "-merge=", "-set_cover_merge=",
                                          "-minimize_crash=", "-cleanse_crash=", "-help="};
  int files = 0, dirs = 0;
  for (int i = 1; i < *argc; i++) {
    const char *a = (*argv)[i];
    if (a[0] == '-') {
      for (size_t k = 0; k < sizeof no_check / sizeof *no_check; k++) {
        size_t n = strlen(no_check[k]);
        if (!strncmp(a, no_check[k], n) && strcmp(a + n, "0") != 0) return 0;
      }
      continue;
    }
    struct stat st;
    if (stat(a, &st) == 0 && S_ISDIR(st.st_mode)) dirs++;
    else files++;
  }
  if (files && !dirs) return 0;
  atexit(require_a_verified_token);
  return 0;
}
