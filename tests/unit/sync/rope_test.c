/* Unit tests for src/sync/rope.c: a text field edited in place must hold
 * exactly what text_apply() makes of the same text and ops (the reference,
 * itself checked against ot-text-unicode), across chunk boundaries, with
 * multi-byte code points and characters JSON escapes. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/common/jsonw.h"
#include "../../../src/common/wsy.h"
#include "../../../src/sync/rope.h"
#include "../../../src/sync/text.h"

static text_op *OP(json_t *j) {
  text_op *op;
  char err[160];
  cr_assert_eq(text_op_from_json(j, NULL, &op, err, sizeof err), WSY_OK, "%s", err);
  json_decref(j);
  return op;
}

/* Pieces of text that exercise the counting: 1-4 byte code points and
 * characters that JSON escapes with 2 and 6 bytes. */
static const char *const atoms[] = {"a", "b", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\"", "\n", "\x01", "\\"};

static void rand_text(uint64_t *seed, char *out, size_t atoms_n, size_t *len) {
  size_t w = 0;
  for (size_t i = 0; i < atoms_n; i++) {
    *seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
    const char *a = atoms[(*seed >> 33) % WSY_ARRAY_LEN(atoms)];
    memcpy(out + w, a, strlen(a));
    w += strlen(a);
  }
  *len = w;
}

static uint64_t next(uint64_t *seed, uint64_t mod) {
  *seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
  return (*seed >> 33) % mod;
}

/* A random op over a text of cps code points: retains, inserts, deletes. */
static json_t *rand_op(uint64_t *seed, size_t cps) {
  json_t *a = json_array();
  size_t at = 0;
  static char ins[4 * 6000];
  while (at < cps && json_array_size(a) < 12) {
    size_t left = cps - at;
    switch (next(seed, 3)) {
    case 0: {
      size_t n = 1 + next(seed, left < 9000 ? left : 9000);
      json_array_append_new(a, json_integer((json_int_t)n));
      at += n;
      break;
    }
    case 1: {
      size_t len;
      rand_text(seed, ins, 1 + next(seed, next(seed, 4) ? 20 : 6000), &len);
      json_array_append_new(a, json_stringn(ins, len));
      break;
    }
    default: {
      size_t n = 1 + next(seed, left < 5000 ? left : 5000);
      json_array_append_new(a, json_pack("{s:I}", "d", (json_int_t)n));
      at += n;
    }
    }
  }
  if (json_array_size(a) == 0) json_array_append_new(a, json_string("x"));
  return a;
}

static size_t json_size_of(const char *s, size_t len) {
  json_t *j = json_stringn(s, len);
  size_t n = jw_size(j);
  json_decref(j);
  return n;
}

Test(rope, edits_match_text_apply_across_chunks) {
  static char start[4 * 20000];
  for (uint64_t s0 = 1; s0 <= 6; s0++) {
    uint64_t seed = s0;
    size_t len;
    rand_text(&seed, start, s0 * 3000, &len);
    char *ref = wsy_strndup(start, len);
    size_t ref_len = len;
    rope *r = rope_new(start, len);
    for (int step = 0; step < 300; step++) {
      size_t cps = text_cp_len(ref, ref_len);
      cr_assert_eq(rope_cps(r), cps);
      text_op *op = OP(rand_op(&seed, cps));
      char *out, err[160];
      size_t out_len;
      cr_assert_eq(text_apply(ref, ref_len, op, &out, &out_len, err, sizeof err), WSY_OK, "%s", err);
      cr_assert_eq(rope_apply(r, op, SIZE_MAX, err, sizeof err), WSY_OK, "%s", err);
      text_op_free(op);
      wsy_free(ref);
      ref = out, ref_len = out_len;
      size_t dump_len;
      char *dump = rope_dump(r, &dump_len);
      cr_assert_eq(dump_len, ref_len, "seed %llu step %d", (unsigned long long)s0, step);
      cr_assert(memcmp(dump, ref, ref_len) == 0, "seed %llu step %d: texts differ", (unsigned long long)s0, step);
      wsy_free(dump);
      cr_assert_eq(rope_bytes(r), ref_len);
      cr_assert_eq(rope_json_size(r), json_size_of(ref, ref_len));
      cr_assert(rope_chunks(r) <= 2 + 2 * ref_len / (ROPE_CHUNK / 4), "%zu chunks for %zu bytes", rope_chunks(r), ref_len);
    }
    wsy_free(ref);
    rope_free(r);
  }
}

Test(rope, deleting_everything_leaves_an_empty_rope_that_takes_inserts) {
  rope *r = rope_new("h\xc3\xa9llo", 6);
  char err[160];
  text_op *all = OP(json_pack("[{s:i}]", "d", 5));
  cr_assert_eq(rope_apply(r, all, SIZE_MAX, err, sizeof err), WSY_OK);
  text_op_free(all);
  cr_assert_eq(rope_bytes(r), 0);
  cr_assert_eq(rope_chunks(r), 0);
  cr_assert_eq(rope_json_size(r), 2);
  text_op *op = OP(json_pack("[s]", "\xe2\x82\xac!"));
  cr_assert_eq(rope_apply(r, op, SIZE_MAX, err, sizeof err), WSY_OK);
  text_op_free(op);
  size_t len;
  char *s = rope_dump(r, &len);
  cr_assert_str_eq(s, "\xe2\x82\xac!");
  wsy_free(s);
  rope_free(r);
}

Test(rope, refuses_past_the_end_and_over_the_limit_without_changing) {
  rope *r = rope_new("abc", 3);
  char err[160];
  text_op *op = OP(json_pack("[i,{s:i}]", 2, "d", 2));
  cr_assert_eq(rope_apply(r, op, SIZE_MAX, err, sizeof err), WSY_INVAL);
  cr_assert(strstr(err, "spans 4 code points"), "%s", err);
  text_op_free(op);
  /* "abc" is 5 bytes of JSON; inserting a quote adds 2, deleting "b" takes 1. */
  op = OP(json_pack("[i,s,{s:i}]", 1, "\"", "d", 1));
  cr_assert_eq(rope_apply(r, op, 5, err, sizeof err), WSY_TOO_LARGE);
  cr_assert_eq(rope_json_size(r), 5);
  cr_assert_eq(rope_apply(r, op, 6, err, sizeof err), WSY_OK);
  text_op_free(op);
  char *s = rope_dump(r, NULL);
  cr_assert_str_eq(s, "a\"c");
  cr_assert_eq(rope_json_size(r), 6);
  wsy_free(s);
  rope_free(r);
}
