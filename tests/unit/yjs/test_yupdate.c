/* test_yupdate.c -- the Yjs update codec (src/yjs/yupdate.c) on updates made
 * by yjs 13.6 (bytes below, with what Y.mergeUpdates, Y.diffUpdate and
 * Y.encodeStateVectorFromUpdate returned for them), malformed updates, every
 * truncation, and (sanitizer builds) every failing allocation. */
#include <criterion/criterion.h>
#include <string.h>

#include "../../../src/yjs/yupdate.h"

/* client 5: text "ab😀c", map k = [1, "x"], "secret" typed then deleted */
static const uint8_t U0[] = {0x01, 0x01, 0x05, 0x00, 0x04, 0x01, 0x01, 0x74, 0x07,
                             0x61, 0x62, 0xf0, 0x9f, 0x98, 0x80, 0x63, 0x00};
static const uint8_t U1[] = {0x01, 0x01, 0x05, 0x05, 0x28, 0x01, 0x01, 0x6d, 0x01, 0x6b,
                             0x01, 0x75, 0x02, 0x7d, 0x01, 0x77, 0x01, 0x78, 0x00};
static const uint8_t U2[] = {0x01, 0x01, 0x05, 0x06, 0x84, 0x05, 0x04, 0x06,
                             0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x00};
static const uint8_t U3[] = {0x00, 0x01, 0x05, 0x01, 0x06, 0x06};
static const uint8_t MERGED[] = {
    0x01, 0x03, 0x05, 0x00, 0x04, 0x01, 0x01, 0x74, 0x07, 0x61, 0x62, 0xf0, 0x9f, 0x98, 0x80,
    0x63, 0x28, 0x01, 0x01, 0x6d, 0x01, 0x6b, 0x01, 0x75, 0x02, 0x7d, 0x01, 0x77, 0x01, 0x78,
    0x84, 0x05, 0x04, 0x06, 0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x01, 0x05, 0x01, 0x06, 0x06};
static const uint8_t SV[] = {0x01, 0x05, 0x0c};
static const uint8_t SV_CUT[] = {0x01, 0x05, 0x03}; /* clock 3: between the emoji's halves */
static const uint8_t DIFF_CUT[] = {
    0x01, 0x03, 0x05, 0x03, 0x84, 0x05, 0x02, 0x04, 0xef, 0xbf, 0xbd, 0x63, 0x28, 0x01,
    0x01, 0x6d, 0x01, 0x6b, 0x01, 0x75, 0x02, 0x7d, 0x01, 0x77, 0x01, 0x78, 0x84, 0x05,
    0x04, 0x06, 0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x01, 0x05, 0x01, 0x06, 0x06};

static const uint8_t *const UPS[] = {U0, U1, U2, U3};
static const size_t LENS[] = {sizeof U0, sizeof U1, sizeof U2, sizeof U3};

static void assert_bytes(const ybuf *b, const uint8_t *want, size_t n) {
  cr_assert_eq(b->len, n, "length %zu, want %zu", b->len, n);
  cr_assert_eq(memcmp(b->p, want, n), 0);
}

Test(yupdate, merge_equals_y_merge_updates) {
  char err[128];
  ybuf out = {0};
  cr_assert_eq(yupdate_merge(UPS, LENS, 4, &out, err, sizeof err), 0, "%s", err);
  assert_bytes(&out, MERGED, sizeof MERGED);
  /* merging the result with its parts again changes nothing */
  const uint8_t *again[] = {MERGED, U1, U2, MERGED};
  size_t again_lens[] = {sizeof MERGED, sizeof U1, sizeof U2, sizeof MERGED};
  cr_assert_eq(yupdate_merge(again, again_lens, 4, &out, err, sizeof err), 0, "%s", err);
  assert_bytes(&out, MERGED, sizeof MERGED);
  /* none: an empty update; one: returned as it is */
  cr_assert_eq(yupdate_merge(NULL, NULL, 0, &out, err, sizeof err), 0);
  assert_bytes(&out, (const uint8_t[]){0, 0}, 2);
  cr_assert_eq(yupdate_merge(UPS, LENS, 1, &out, err, sizeof err), 0);
  assert_bytes(&out, U0, sizeof U0);
  ybuf_free(&out);
}

Test(yupdate, state_vector_and_diff_equal_yjs) {
  char err[128];
  ybuf out = {0};
  cr_assert_eq(yupdate_state_vector(MERGED, sizeof MERGED, &out, err, sizeof err), 0, "%s", err);
  assert_bytes(&out, SV, sizeof SV);
  cr_assert_eq(yupdate_diff(MERGED, sizeof MERGED, SV_CUT, sizeof SV_CUT, &out, err, sizeof err),
               0, "%s", err);
  assert_bytes(&out, DIFF_CUT, sizeof DIFF_CUT); /* the emoji's right half became U+FFFD */
  /* against its own state vector: no structs, the delete set stays */
  cr_assert_eq(yupdate_diff(MERGED, sizeof MERGED, SV, sizeof SV, &out, err, sizeof err), 0);
  assert_bytes(&out, (const uint8_t[]){0x00, 0x01, 0x05, 0x01, 0x06, 0x06}, 6);
  ybuf_free(&out);
}

Test(yupdate, compaction_drops_deleted_content_and_keeps_the_rest) {
  char err[128];
  ybuf out = {0};
  cr_assert_eq(yupdate_compact_many(UPS, LENS, 4, &out, err, sizeof err), 0, "%s", err);
  cr_assert_eq(yupdate_validate(out.p, out.len, err, sizeof err), 0, "%s", err);
  cr_assert_lt(out.len, sizeof MERGED);
  cr_assert_null(memmem(out.p, out.len, "secret", 6), "deleted text is gone");
  cr_assert_not_null(memmem(out.p, out.len, "ab\xf0\x9f\x98\x80" "c", 7), "live text stays");
  /* the deleted item stays as Deleted(6) with its origin (5, 5) */
  cr_assert_not_null(memmem(out.p, out.len, (const uint8_t[]){0x81, 0x05, 0x04, 0x06}, 4));
  ybuf sv = {0};
  cr_assert_eq(yupdate_state_vector(out.p, out.len, &sv, err, sizeof err), 0);
  assert_bytes(&sv, SV, sizeof SV); /* same clocks */
  ybuf_free(&sv);
  ybuf_free(&out);
}

Test(yupdate, every_truncation_is_invalid_with_a_message) {
  char err[128];
  ybuf out = {0};
  for (size_t n = 0; n < sizeof MERGED; n++) {
    err[0] = '\0';
    cr_assert_eq(yupdate_validate(MERGED, n, err, sizeof err), WSY_INVAL, "cut at %zu", n);
    cr_assert_neq(err[0], '\0', "cut at %zu: no message", n);
    cr_assert_not_null(strstr(err, "update 0"), "%s", err);
    cr_assert_eq(yupdate_state_vector(MERGED, n, &out, NULL, 0), WSY_INVAL);
    cr_assert_eq(out.len, 0);
    cr_assert_eq(yupdate_diff(MERGED, n, SV_CUT, sizeof SV_CUT, &out, err, sizeof err), WSY_INVAL);
    cr_assert_eq(out.len, 0);
    cr_assert_eq(yupdate_compact(MERGED, n, &out, err, sizeof err), WSY_INVAL);
    cr_assert_eq(out.len, 0);
    const uint8_t *two[] = {U0, MERGED};
    size_t lens[] = {sizeof U0, n};
    cr_assert_eq(yupdate_merge(two, lens, 2, &out, err, sizeof err), WSY_INVAL);
    cr_assert_not_null(strstr(err, "update 1"), "the message names the input: %s", err);
    cr_assert_eq(out.len, 0);
  }
  for (size_t n = 0; n < sizeof SV; n++)
    cr_assert_eq(yupdate_diff(MERGED, sizeof MERGED, SV, n, &out, err, sizeof err), WSY_INVAL);
  ybuf_free(&out);
}

Test(yupdate, malformed_updates_are_refused) {
  static const struct {
    const char *why;
    uint8_t u[16];
    size_t n;
  } cases[] = {
      {"unknown content ref", {1, 1, 5, 0, 0x0b, 1, 1, 't', 0, 0}, 10},
      {"unknown type ref", {1, 1, 5, 0, 0x07, 1, 1, 't', 7, 0}, 10},
      {"zero-length struct", {1, 1, 5, 0, 0x00, 0, 0}, 7},
      {"empty string", {1, 1, 5, 0, 0x04, 1, 1, 't', 0, 0}, 10},
      {"invalid UTF-8", {1, 1, 5, 0, 0x04, 1, 1, 't', 2, 0xc0, 0x80, 0}, 12},
      {"clock overflow", {1, 1, 5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 5, 0}, 14},
      {"bytes after the delete set", {0, 0, 0}, 3},
      {"client count past the input", {0xff, 0xff, 0xff, 0xff, 0x0f, 0}, 6},
      {"struct count past the input", {1, 0xff, 0xff, 0x03, 5, 0, 0}, 7},
      {"delete ranges past the input", {0, 1, 5, 0xff, 0x7f, 0, 1}, 7},
  };
  char err[128];
  for (size_t i = 0; i < WSY_ARRAY_LEN(cases); i++) {
    err[0] = '\0';
    cr_assert_eq(yupdate_validate(cases[i].u, cases[i].n, err, sizeof err), WSY_INVAL, "%s",
                 cases[i].why);
    cr_assert_neq(err[0], '\0', "%s", cases[i].why);
  }
  /* and a valid one of the same shapes */
  const uint8_t ok[] = {1, 1, 5, 0, 0x04, 1, 1, 't', 2, 0xc3, 0xa9, 0};
  cr_assert_eq(yupdate_validate(ok, sizeof ok, err, sizeof err), 0, "%s", err);
  /* a message never overruns a small buffer */
  char tiny[8];
  cr_assert_eq(yupdate_validate(cases[0].u, cases[0].n, tiny, sizeof tiny), WSY_INVAL);
  cr_assert_eq(strlen(tiny), sizeof tiny - 1);
}

Test(yupdate, state_vector_decoding) {
  char err[128];
  uint64_t *pairs;
  size_t n;
  const uint8_t sv[] = {3, 9, 1, 2, 5, 9, 7}; /* client 9 twice: the last one wins */
  cr_assert_eq(yupdate_sv_decode(sv, sizeof sv, &pairs, &n, err, sizeof err), 0, "%s", err);
  cr_assert_eq(n, 2);
  cr_assert_eq(pairs[0], 2);
  cr_assert_eq(pairs[1], 5);
  cr_assert_eq(pairs[2], 9);
  cr_assert_eq(pairs[3], 7);
  wsy_free(pairs);
  const uint8_t lying[] = {0xff, 0xff, 0xff, 0x7f, 1, 1};
  cr_assert_eq(yupdate_sv_decode(lying, sizeof lying, &pairs, &n, err, sizeof err), WSY_INVAL);
  cr_assert_null(pairs);
}

#ifdef WSY_ALLOC_TESTING
/* Every allocation of a merge, a diff and a compaction failing in turn: a
 * clean WSY_NOMEM, an empty output, no leak (LeakSanitizer). */
Test(yupdate, failing_allocations_give_nomem) {
  char err[128];
  int done[3] = {0, 0, 0};
  for (unsigned long k = 1; k < 200 && !(done[0] && done[1] && done[2]); k++) {
    ybuf out = {0};
    for (int f = 0; f < 3; f++) {
      if (done[f]) continue;
      wsy_alloc_fail_at(k);
      int rc = f == 0   ? yupdate_merge(UPS, LENS, 4, &out, err, sizeof err)
               : f == 1 ? yupdate_diff(MERGED, sizeof MERGED, SV_CUT, sizeof SV_CUT, &out, err,
                                       sizeof err)
                        : yupdate_compact_many(UPS, LENS, 4, &out, err, sizeof err);
      unsigned long ran = wsy_alloc_fail_at(0);
      if (rc == 0) {
        cr_assert_leq(ran, k, "succeeded although allocation %lu failed", k);
        done[f] = 1;
      } else {
        cr_assert_eq(rc, WSY_NOMEM, "fn %d, allocation %lu: %d %s", f, k, rc, err);
        cr_assert_eq(out.len, 0);
      }
      ybuf_free(&out);
    }
  }
  cr_assert(done[0] && done[1] && done[2]);
}
#endif

/* Found by the fuzzer: an empty delete range (Yjs keeps them) inside an
 * item made compaction write a zero-length struct. */
Test(yupdate, compaction_ignores_empty_delete_ranges) {
  const uint8_t u[] = {1, 1, 5, 0, 0x04, 1, 1, 't', 4, 'a', 'b', 'w', 'd', /* "abwd" */
                       1, 5, 2, 1, 0, 2, 1};                              /* (1,0) (2,1) */
  char err[128];
  ybuf out = {0};
  cr_assert_eq(yupdate_compact(u, sizeof u, &out, err, sizeof err), 0, "%s", err);
  cr_assert_eq(yupdate_validate(out.p, out.len, err, sizeof err), 0, "%s", err);
  cr_assert_not_null(memmem(out.p, out.len, "ab", 2));
  cr_assert_null(memmem(out.p, out.len, "w", 1), "the deleted unit is gone");
  cr_assert_not_null(memmem(out.p, out.len, "d", 1));
  ybuf_free(&out);
}
