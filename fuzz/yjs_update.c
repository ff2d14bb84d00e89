/* yjs_update.c -- libFuzzer target for the Yjs v1 codec (src/yjs).
 *
 * Input: a byte string taken as one update, and also cut into two or three
 * updates at points chosen by its first bytes. Checked:
 *  - validate, state vector, diff, compact and merge never crash, leak or
 *    read out of bounds, and fail only with WSY_INVAL and a message;
 *  - when the whole input is a valid update: its state vector, its diff
 *    against an empty and against its own state vector, its compaction and
 *    its merge with itself all succeed, and each output is valid again;
 *  - a merge of the pieces that succeeds gives a valid update.
 * A failed check aborts.
 *
 * Run: make build-fuzz/yjs_update && build-fuzz/yjs_update fuzz/corpus/yjs_update */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/common/wsy.h"
#include "../src/yjs/yupdate.h"

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "yjs_update fuzz: check failed at line %d: %s\n", __LINE__, #cond); \
      abort();                                                                       \
    }                                                                                \
  } while (0)

static void check_valid_output(int rc, ybuf *out, const char *err) {
  CHECK(rc == 0);
  CHECK(yupdate_validate(out->p, out->len, NULL, 0) == 0);
  (void)err;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  char err[256];
  ybuf out = {0}, sv = {0};
  int rc = yupdate_validate(d, n, err, sizeof err);
  CHECK(rc == 0 || (rc == WSY_INVAL && err[0]));
  if (rc == 0) {
    static const uint8_t empty_sv[] = {0};
    CHECK(yupdate_state_vector(d, n, &sv, err, sizeof err) == 0);
    uint64_t *pairs;
    size_t np;
    CHECK(yupdate_sv_decode(sv.p, sv.len, &pairs, &np, err, sizeof err) == 0);
    wsy_free(pairs);
    check_valid_output(yupdate_diff(d, n, empty_sv, 1, &out, err, sizeof err), &out, err);
    check_valid_output(yupdate_diff(d, n, sv.p, sv.len, &out, err, sizeof err), &out, err);
    check_valid_output(yupdate_compact(d, n, &out, err, sizeof err), &out, err);
    const uint8_t *twice[2] = {d, d};
    size_t lens[2] = {n, n};
    check_valid_output(yupdate_merge(twice, lens, 2, &out, err, sizeof err), &out, err);
  } else {
    CHECK(yupdate_state_vector(d, n, &sv, err, sizeof err) == WSY_INVAL && sv.len == 0);
    CHECK(yupdate_compact(d, n, &out, err, sizeof err) == WSY_INVAL && out.len == 0);
  }
  /* Pieces: cut points from the first two bytes. */
  if (n >= 3) {
    size_t a = 2 + d[0] % (n - 2), b = 2 + d[1] % (n - 2);
    if (a > b) {
      size_t t = a;
      a = b;
      b = t;
    }
    const uint8_t *ups[3] = {d + 2, d + a, d + b};
    size_t lens[3] = {a - 2, b - a, n - b};
    for (size_t k = 2; k <= 3; k++) {
      rc = yupdate_merge(ups, lens, k, &out, err, sizeof err);
      if (rc == 0) CHECK(yupdate_validate(out.p, out.len, NULL, 0) == 0);
      else CHECK(rc == WSY_INVAL && out.len == 0);
    }
    rc = yupdate_diff(d + a, n - a, d + 2, a - 2, &out, err, sizeof err);
    if (rc == 0) CHECK(yupdate_validate(out.p, out.len, NULL, 0) == 0);
  }
  ybuf_free(&out);
  ybuf_free(&sv);
  return 0;
}
