/* Unit tests for src/sync/text.c: the text OT type of PROTOCOL.md 5.7.
 * Hand-written cases (expected values checked against ot-text-unicode 4.0.0),
 * validation, and the convergence properties on seeded random op pairs. The
 * comparison with ot-text-unicode at scale is tests/e2e/text-oracle.test.mjs. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/common/utf8.h"
#include "../../../src/common/wsy.h"
#include "../../../src/sync/text.h"

static const text_limits lim = {.max_components = 16, .max_insert_bytes = 32};

static json_t *J(const char *text) {
  json_error_t e;
  json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
  cr_assert_not_null(j, "bad test JSON %s: %s", text, e.text);
  return j;
}

/* Parses an op that must be valid. */
static text_op *OP(const char *wire) {
  json_t *j = J(wire);
  text_op *op;
  char err[160];
  int rc = text_op_from_json(j, &lim, &op, err, sizeof err);
  cr_assert_eq(rc, WSY_OK, "%s rejected: %s", wire, err);
  json_decref(j);
  return op;
}

/* Compact wire form of op, then frees op; the caller frees the string. */
static char *take_str(text_op *op) {
  json_t *j = text_op_to_json(op);
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  text_op_free(op);
  return s;
}

static void expect_op(text_op *op, const char *want) {
  char *s = take_str(op);
  cr_expect_str_eq(s, want);
  free(s);
}

static void expect_apply(const char *doc, const char *wire, const char *want) {
  text_op *op = OP(wire);
  char *out, err[160];
  size_t outlen;
  cr_assert_eq(text_apply(doc, strlen(doc), op, &out, &outlen, err, sizeof err), WSY_OK, "%s on '%s': %s", wire, doc, err);
  cr_expect_str_eq(out, want, "%s on '%s'", wire, doc);
  cr_expect_eq(outlen, strlen(want));
  wsy_free(out);
  text_op_free(op);
}

static void expect_transform(const char *a, const char *b, int side, const char *want) {
  text_op *x = OP(a), *y = OP(b);
  expect_op(text_transform(x, y, side), want);
  text_op_free(x);
  text_op_free(y);
}

static void expect_compose(const char *a, const char *b, const char *want) {
  text_op *x = OP(a), *y = OP(b);
  expect_op(text_compose(x, y), want);
  text_op_free(x);
  text_op_free(y);
}

/* ---- code points -------------------------------------------------------- */

/* Bytes of all the inserts of op, from its JSON form. */
static size_t inserted_bytes(const text_op *op) {
  json_t *j = text_op_to_json(op), *c;
  size_t i, n = 0;
  json_array_foreach(j, i, c) if (json_is_string(c)) n += json_string_length(c);
  json_decref(j);
  return n;
}

Test(text, counts_code_points_not_bytes_or_utf16_units) {
  cr_expect_eq(text_cp_len("", 0), 0);
  cr_expect_eq(text_cp_len("abc", 3), 3);
  cr_expect_eq(text_cp_len("\xc3\xa9", 2), 1);                   /* é */
  cr_expect_eq(text_cp_len("e\xcc\x81", 3), 2);                  /* e + combining acute */
  cr_expect_eq(text_cp_len("\xe4\xb8\xad", 3), 1);               /* 中 */
  cr_expect_eq(text_cp_len("\xf0\x9f\x98\x85", 4), 1);           /* 😅, two UTF-16 units */
  const char *family = "\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7";
  cr_expect_eq(text_cp_len(family, strlen(family)), 5);            /* 👩‍👩‍👧: one grapheme */
  cr_expect_eq(text_cp_len("a\0b", 3), 3);                         /* NUL is a code point */
}

/* The rule itself is src/common/utf8.h's and tested there
 * (tests/unit/common/test_utf8.c); here, that text applies it to documents
 * and to inserts, and measures documents in code points. */
Test(text, validates_utf8_strictly) {
  static const struct { const char *s; size_t len; int ok; size_t cps; } cases[] = {
    {"", 0, 1, 0},
    {"a\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x85", 10, 1, 4},
    {"\xf4\x8f\xbf\xbf", 4, 1, 1},  /* U+10FFFF */
    {"\xed\x9f\xbf", 3, 1, 1},      /* U+D7FF */
    {"\xee\x80\x80", 3, 1, 1},      /* U+E000 */
    {"\x80", 1, 0, 0},              /* stray continuation */
    {"\xc0\xaf", 2, 0, 0},          /* overlong / */
    {"\xc1\xbf", 2, 0, 0},
    {"\xe0\x9f\xbf", 3, 0, 0},      /* overlong U+07FF */
    {"\xf0\x8f\xbf\xbf", 4, 0, 0},  /* overlong U+FFFF */
    {"\xed\xa0\x80", 3, 0, 0},      /* surrogate U+D800 */
    {"\xed\xbf\xbf", 3, 0, 0},      /* surrogate U+DFFF */
    {"\xf4\x90\x80\x80", 4, 0, 0},  /* U+110000 */
    {"\xf5\x80\x80\x80", 4, 0, 0},
    {"\xff", 1, 0, 0},
    {"\xc3", 1, 0, 0},              /* truncated */
    {"\xf0\x9f\x98", 3, 0, 0},
    {"a\xe4\xb8", 3, 0, 0},
    {"\xc3\x28", 2, 0, 0},          /* bad continuation */
  };
  text_op *none = OP("[]");
  for (size_t i = 0; i < WSY_ARRAY_LEN(cases); i++) {
    const char *s = cases[i].s;
    size_t len = cases[i].len, cps = cases[i].cps;
    char *out, err[160];
    size_t outlen;
    /* As a document: refused whole, or measured exactly (deleting every
     * code point applies, one more does not). */
    cr_expect_eq(text_apply(s, len, none, &out, &outlen, err, sizeof err), cases[i].ok ? WSY_OK : WSY_BAD_UTF8,
                 "case %zu", i);
    wsy_free(out);
    if (cases[i].ok && cps) {
      char wire[32];
      snprintf(wire, sizeof wire, "[{\"d\":%zu}]", cps);
      text_op *del = OP(wire);
      cr_expect_eq(text_apply(s, len, del, &out, &outlen, err, sizeof err), WSY_OK, "case %zu: %s", i, err);
      cr_expect_eq(outlen, 0, "case %zu", i);
      wsy_free(out);
      text_op_free(del);
      snprintf(wire, sizeof wire, "[{\"d\":%zu}]", cps + 1);
      del = OP(wire);
      cr_expect_eq(text_apply(s, len, del, &out, &outlen, err, sizeof err), WSY_INVAL, "case %zu", i);
      text_op_free(del);
    }
    /* As an insert (built without jansson's own check). */
    if (len) {
      json_t *ops = json_array();
      json_array_append_new(ops, json_stringn_nocheck(s, len));
      text_op *op = NULL;
      cr_expect_eq(text_op_from_json(ops, &lim, &op, err, sizeof err), cases[i].ok ? WSY_OK : WSY_BAD_UTF8,
                   "case %zu", i);
      text_op_free(op);
      json_decref(ops);
    }
  }
  text_op_free(none);
}

/* ---- parse, normalize, serialize ----------------------------------------- */

Test(text, normalizes_like_type_normalize) {
  expect_op(OP("[]"), "[]");
  expect_op(OP("[5]"), "[]");                       /* a trailing retain is dropped */
  expect_op(OP("[1,2,\"a\",\"b\",{\"d\":1},{\"d\":2},3]"), "[3,\"ab\",{\"d\":3}]");
  expect_op(OP("[\"a\",{\"d\":1},\"b\"]"), "[\"a\",{\"d\":1},\"b\"]"); /* order of ins/del kept */
  expect_op(OP("[{\"d\":1},\"a\"]"), "[{\"d\":1},\"a\"]");
  expect_op(OP("[2,2,\"\xf0\x9f\x98\x85\",1,1]"), "[4,\"\xf0\x9f\x98\x85\"]");
}

Test(text, reports_lengths) {
  text_op *op = OP("[3,\"\xc3\xa9x\",{\"d\":2},4,\"y\"]");
  cr_expect_eq(text_op_base_len(op), 9);
  cr_expect_eq(inserted_bytes(op), 4);
  cr_expect_eq(text_op_count(op), 5);
  text_op *c = text_op_clone(op);
  text_op_free(op);
  expect_op(c, "[3,\"\xc3\xa9x\",{\"d\":2},4,\"y\"]");
  text_op *e = text_op_new();
  cr_expect_eq(text_op_count(e), 0);
  cr_expect_eq(text_op_base_len(e), 0);
  expect_op(text_op_clone(e), "[]");
  expect_op(e, "[]");
}

static void expect_invalid(json_t *j, int rc, const char *msg_part) {
  text_op *op = (text_op *)1;
  char err[160] = "";
  char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
  cr_expect_eq(text_op_from_json(j, &lim, &op, err, sizeof err), rc, "%s", s);
  cr_expect_null(op, "%s", s);
  cr_expect_not_null(strstr(err, msg_part), "%s: message '%s' lacks '%s'", s, err, msg_part);
  free(s);
  json_decref(j);
}

Test(text, rejects_malformed_ops_with_a_message) {
  static const struct { const char *wire; int rc; const char *msg; } cases[] = {
    {"{\"d\":1}", WSY_INVAL, "must be an array"},
    {"\"abc\"", WSY_INVAL, "must be an array"},
    {"null", WSY_INVAL, "must be an array"},
    {"[0]", WSY_INVAL, "ops[0]: a retain must be a positive integer"},
    {"[1,-2]", WSY_INVAL, "ops[1]: a retain"},
    {"[1.5]", WSY_INVAL, "ops[0]: a retain"},
    {"[2.0]", WSY_INVAL, "ops[0]: a retain"},
    {"[9007199254740992]", WSY_INVAL, "below 2^53"},
    {"[\"a\",\"\"]", WSY_INVAL, "ops[1]: an insert must not be empty"},
    {"[{\"d\":0}]", WSY_INVAL, "ops[0]: a delete's d"},
    {"[{\"d\":-1}]", WSY_INVAL, "a delete's d"},
    {"[{\"d\":\"abc\"}]", WSY_INVAL, "a delete's d"},
    {"[{\"d\":1.0}]", WSY_INVAL, "a delete's d"},
    {"[{\"d\":null}]", WSY_INVAL, "a delete's d"},
    {"[{}]", WSY_INVAL, "must be a delete"},
    {"[{\"x\":1}]", WSY_INVAL, "must be a delete"},
    {"[{\"d\":1,\"x\":1}]", WSY_INVAL, "must be a delete"},
    {"[null]", WSY_INVAL, "ops[0]: a component must be"},
    {"[true]", WSY_INVAL, "a component must be"},
    {"[[1]]", WSY_INVAL, "a component must be"},
    {"[9007199254740991,{\"d\":1}]", WSY_INVAL, "ops[1]: the op spans more than 2^53-1"},
    {"[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]", WSY_TOO_LARGE, "17 components, more than 16"},
    {"[\"0123456789abcdef\",\"0123456789abcdef!\"]", WSY_TOO_LARGE, "more than 32 bytes"},
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(cases); i++) expect_invalid(J(cases[i].wire), cases[i].rc, cases[i].msg);
  /* At the limits exactly: fine. */
  text_op_free(OP("[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]"));
  text_op_free(OP("[\"0123456789abcdef\",\"0123456789abcdef\"]"));
  text_op_free(OP("[9007199254740990,{\"d\":1}]"));
}

Test(text, rejects_inserts_that_are_not_utf8) {
  /* jansson checks what it parses; strings built without the check are not. */
  static const char *bad[] = {"\xff", "a\xed\xa0\x80", "\xc0\x80", "\xf0\x9f\x98"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(bad); i++) {
    json_t *j = json_pack("[i,o]", 1, json_stringn_nocheck(bad[i], strlen(bad[i])));
    expect_invalid(j, WSY_BAD_UTF8, "ops[1]: an insert must be UTF-8");
  }
  json_error_t e;
  json_t *j = json_loads("[\"a\\u0000b\"]", JSON_ALLOW_NUL, &e); /* a NUL is a code point */
  text_op *op;
  cr_assert_eq(text_op_from_json(j, NULL, &op, NULL, 0), WSY_OK);
  cr_expect_eq(inserted_bytes(op), 3);
  char *out;
  size_t outlen;
  cr_assert_eq(text_apply("z", 1, op, &out, &outlen, NULL, 0), WSY_OK);
  cr_expect_eq(outlen, 4);
  cr_expect_eq(memcmp(out, "a\0bz", 5), 0);
  wsy_free(out);
  text_op_free(op);
  json_decref(j);
}

/* ---- apply --------------------------------------------------------------- */

Test(text, applies_over_code_points) {
  expect_apply("", "[]", "");
  expect_apply("", "[\"hi\"]", "hi");
  expect_apply("hello", "[5,\" world\"]", "hello world");
  expect_apply("hello", "[1,{\"d\":3},\"ipp\"]", "hippo");
  expect_apply("hello", "[{\"d\":5}]", "");
  /* é is one code point of two bytes; the emoji one of four. */
  expect_apply("caf\xc3\xa9!", "[4,{\"d\":1},\"s\"]", "caf\xc3\xa9s");
  expect_apply("a\xf0\x9f\x98\x85" "b", "[1,{\"d\":1},\"\xf0\x9f\xa4\x96\"]", "a\xf0\x9f\xa4\x96" "b");
  expect_apply("\xf0\x9f\x98\x85\xf0\x9f\x98\x85", "[1,\"x\"]", "\xf0\x9f\x98\x85x\xf0\x9f\x98\x85");
  /* e + U+0301 is two code points: a retain of 1 splits them. */
  expect_apply("e\xcc\x81t\xc3\xa9", "[1,{\"d\":1},1,\"\xcc\x81\"]", "et\xcc\x81\xc3\xa9");
  /* 👩‍👩‍👧 is five code points; delete the middle woman and her joiner. */
  expect_apply("\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7", "[1,{\"d\":2}]",
               "\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7");
  /* A trailing retain to the very end, or past it, is normalized away. */
  expect_apply("ab", "[2]", "ab");
  expect_apply("ab", "[\"x\",7]", "xab");
}

static void expect_apply_fails(const char *doc, size_t len, const char *wire, int rc, const char *msg) {
  text_op *op = OP(wire);
  char *out = (char *)1, err[160] = "";
  size_t outlen = 7;
  cr_expect_eq(text_apply(doc, len, op, &out, &outlen, err, sizeof err), rc, "%s", wire);
  cr_expect_null(out);
  cr_expect_eq(outlen, 0);
  cr_expect_not_null(strstr(err, msg), "'%s' lacks '%s'", err, msg);
  text_op_free(op);
}

Test(text, apply_fails_past_the_end_or_on_bad_text) {
  /* 3 code points, 6 bytes: counts are code points, never bytes. */
  const char *doc = "a\xc3\xa9\xf0\x9f\x98\x85"; /* 7 bytes */
  expect_apply_fails(doc, 7, "[4,\"x\"]", WSY_INVAL, "spans 4 code points, the text has 3");
  expect_apply_fails(doc, 7, "[{\"d\":4}]", WSY_INVAL, "spans 4");  /* type.apply would clip */
  expect_apply_fails(doc, 7, "[2,{\"d\":2}]", WSY_INVAL, "spans 4");
  expect_apply_fails("", 0, "[{\"d\":1}]", WSY_INVAL, "spans 1");
  expect_apply_fails("a\xff", 2, "[\"x\"]", WSY_BAD_UTF8, "not UTF-8");
  expect_apply_fails("\xed\xa0\x80", 3, "[]", WSY_BAD_UTF8, "not UTF-8");
  expect_apply(doc, "[3,\"x\"]", "a\xc3\xa9\xf0\x9f\x98\x85x"); /* exactly to the end */
  expect_apply(doc, "[1,{\"d\":2}]", "a");
}

/* ---- transform ------------------------------------------------------------ */

Test(text, transform_breaks_ties_by_side) {
  expect_transform("[2,\"x\"]", "[2,\"y\"]", TEXT_LEFT, "[2,\"x\"]");
  expect_transform("[2,\"x\"]", "[2,\"y\"]", TEXT_RIGHT, "[3,\"x\"]");
  expect_transform("[\"\xf0\x9f\x98\x85\"]", "[\"\xc3\xa9\xc3\xa9\"]", TEXT_RIGHT, "[2,\"\xf0\x9f\x98\x85\"]");
  /* Inserts at different positions: sides do not matter. */
  expect_transform("[\"e\xcc\x81\"]", "[1,\"\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7\"]", TEXT_RIGHT,
                   "[\"e\xcc\x81\"]");
  expect_transform("[3,\"x\"]", "[1,\"\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7\"]", TEXT_LEFT, "[6,\"x\"]");
}

Test(text, transform_left_insert_first_only_when_it_is_next) {
  /* ot-text-unicode: after a delete at p, an insert is no longer "at p". */
  expect_transform("[2,{\"d\":1},\"x\"]", "[2,\"y\"]", TEXT_LEFT, "[3,{\"d\":1},\"x\"]");
  expect_transform("[\"x\",{\"d\":1}]", "[\"y\"]", TEXT_LEFT, "[\"x\",1,{\"d\":1}]");
}

Test(text, transform_deletes) {
  /* An insert inside text the other deleted survives. */
  expect_transform("[1,\"\xf0\x9f\x98\x85\"]", "[{\"d\":3}]", TEXT_LEFT, "[\"\xf0\x9f\x98\x85\"]");
  /* Overlapping deletes: only the part not deleted yet. */
  expect_transform("[{\"d\":2}]", "[1,{\"d\":2}]", TEXT_LEFT, "[{\"d\":1}]");
  expect_transform("[1,{\"d\":2}]", "[{\"d\":2}]", TEXT_RIGHT, "[{\"d\":1}]");
  expect_transform("[{\"d\":2}]", "[{\"d\":2}]", TEXT_RIGHT, "[]");
  /* A delete spanning the other's insert is split around it. */
  expect_transform("[1,{\"d\":3}]", "[2,\"ab\"]", TEXT_LEFT, "[1,{\"d\":1},2,{\"d\":2}]");
  /* Against nothing, or a longer op, the op is unchanged but padded. */
  expect_transform("[1,\"a\"]", "[]", TEXT_LEFT, "[1,\"a\"]");
  expect_transform("[]", "[5,\"a\"]", TEXT_LEFT, "[]");
}

/* ---- compose ---------------------------------------------------------------- */

Test(text, composes_like_type_compose) {
  expect_compose("[\"abc\"]", "[1,{\"d\":1}]", "[\"ac\"]");
  expect_compose("[{\"d\":2}]", "[\"x\"]", "[\"x\",{\"d\":2}]");
  expect_compose("[\"\xf0\x9f\x98\x85\xf0\x9f\xa4\x96\"]", "[1,\"\xc3\xa9\"]",
                 "[\"\xf0\x9f\x98\x85\xc3\xa9\xf0\x9f\xa4\x96\"]");
  expect_compose("[3,\"x\"]", "[{\"d\":5}]", "[{\"d\":4}]");
  expect_compose("[1,{\"d\":1}]", "[2,{\"d\":1}]", "[1,{\"d\":1},1,{\"d\":1}]");
  expect_compose("[\"ab\",{\"d\":1}]", "[2,\"c\"]", "[\"abc\",{\"d\":1}]");
  expect_compose("[\"ab\",{\"d\":1}]", "[1,\"c\"]", "[\"acb\",{\"d\":1}]");
  expect_compose("[\"ab\"]", "[5,{\"d\":1}]", "[\"ab\",3,{\"d\":1}]"); /* b past a's end */
  expect_compose("[]", "[]", "[]");
  expect_compose("[2,\"x\"]", "[]", "[2,\"x\"]");
}

/* ---- properties on random ops -------------------------------------------------- */

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) { /* splitmix64, 0..n-1 */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return (uint32_t)((z ^ (z >> 31)) % n);
}

static const char *const CPS[] = {"a", "b", "z", " ", "\n", "\xc3\xa9", "\xcc\x81", "\xd0\xb6", "\xe4\xb8\xad",
                                  "\xe2\x80\x8d", "\xef\xbf\xbd", "\xf0\x9f\x98\x85", "\xf0\x9f\x91\xa9",
                                  "\xf4\x8f\xbf\xbf"};

static void rand_text(char *s, size_t *len, size_t *cps, size_t max_cps) {
  size_t n = rnd((uint32_t)max_cps + 1);
  *len = 0;
  for (size_t i = 0; i < n; i++) {
    const char *c = CPS[rnd(WSY_ARRAY_LEN(CPS))];
    memcpy(s + *len, c, strlen(c));
    *len += strlen(c);
  }
  s[*len] = '\0';
  *cps = n;
}

/* A random op valid for a text of len code points, unnormalized. */
static text_op *rand_op(size_t len) {
  json_t *a = json_array();
  for (int steps = (int)rnd(8); steps > 0; steps--) {
    uint32_t k = rnd(10);
    if (k < 4 && len > 0) {
      size_t n = 1 + rnd((uint32_t)(len < 6 ? len : 6));
      json_array_append_new(a, json_integer((json_int_t)n));
      len -= n;
    } else if (k < 7) {
      char s[64];
      size_t bytes, cps;
      do rand_text(s, &bytes, &cps, 3);
      while (cps == 0);
      json_array_append_new(a, json_stringn(s, bytes));
    } else if (len > 0) {
      size_t n = 1 + rnd((uint32_t)(len < 6 ? len : 6));
      json_array_append_new(a, json_pack("{s:I}", "d", (json_int_t)n));
      len -= n;
    }
  }
  text_op *op;
  cr_assert_eq(text_op_from_json(a, NULL, &op, NULL, 0), WSY_OK);
  json_decref(a);
  return op;
}

static char *must_apply(const char *doc, const text_op *op) {
  char *out, err[160];
  size_t outlen;
  cr_assert_eq(text_apply(doc, strlen(doc), op, &out, &outlen, err, sizeof err), WSY_OK, "%s", err);
  cr_assert_eq(wsy_utf8_scan((const uint8_t *)out, outlen, NULL, NULL), WSY_OK);
  return out;
}

static char *wire(const text_op *op) {
  json_t *j = text_op_to_json(op);
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  return s;
}

Test(text, tp1_and_compose_hold_on_random_ops) {
  rng_state = 0x5eed;
  for (int i = 0; i < 4000; i++) {
    char doc[256];
    size_t bytes, cps;
    rand_text(doc, &bytes, &cps, 20);
    text_op *a = rand_op(cps), *b = rand_op(cps);

    /* TP1, the server's way (a sequenced first, wins ties) and the other. */
    for (int side = TEXT_LEFT; side <= TEXT_RIGHT; side++) {
      text_op *b2 = text_transform(b, a, side), *a2 = text_transform(a, b, !side);
      char *da = must_apply(doc, a), *db = must_apply(doc, b);
      char *dab = must_apply(da, b2), *dba = must_apply(db, a2);
      if (strcmp(dab, dba)) {
        char *wa = wire(a), *wb = wire(b);
        cr_assert_fail("TP1 fails: doc '%s' a %s b %s side %d: '%s' vs '%s'", doc, wa, wb, side, dab, dba);
      }
      /* The same, composed: a then b' is b then a'. */
      text_op *c1 = text_compose(a, b2), *c2 = text_compose(b, a2);
      char *d1 = must_apply(doc, c1), *d2 = must_apply(doc, c2);
      cr_assert_str_eq(d1, dab);
      cr_assert_str_eq(d2, dab);
      wsy_free(d1), wsy_free(d2), wsy_free(da), wsy_free(db), wsy_free(dab), wsy_free(dba);
      text_op_free(c1), text_op_free(c2), text_op_free(a2), text_op_free(b2);
    }

    /* Compose: apply(apply(d,a),c) == apply(d, compose(a,c)) with c made on a's result. */
    char *da = must_apply(doc, a);
    text_op *c = rand_op(text_cp_len(da, strlen(da)));
    text_op *ac = text_compose(a, c);
    char *two = must_apply(da, c), *one = must_apply(doc, ac);
    cr_assert_str_eq(one, two);
    cr_assert_leq(text_op_base_len(ac), cps);

    /* Normal forms are fixed points: to_json -> from_json -> to_json. */
    char *w1 = wire(ac);
    json_t *j = J(w1);
    text_op *back;
    cr_assert_eq(text_op_from_json(j, NULL, &back, NULL, 0), WSY_OK);
    json_decref(j);
    char *w2 = wire(back);
    cr_assert_str_eq(w1, w2);
    free(w1), free(w2);
    text_op_free(back);

    wsy_free(da), wsy_free(two), wsy_free(one);
    text_op_free(ac), text_op_free(c), text_op_free(a), text_op_free(b);
  }
}

Test(text, is_linear_in_component_count) {
  /* 20000 alternating components against 20000 more: quadratic work would
   * show as seconds here, linear work is milliseconds. */
  enum { N = 20000 };
  text_op *x, *y;
  json_t *a = json_array(), *b = json_array();
  for (int i = 0; i < N; i++) {
    json_array_append_new(a, i % 2 ? json_integer(1) : json_string("\xf0\x9f\x98\x85"));
    json_array_append_new(b, i % 2 ? json_pack("{s:i}", "d", 1) : json_string("xy"));
  }
  cr_assert_eq(text_op_from_json(a, NULL, &x, NULL, 0), WSY_OK);
  cr_assert_eq(text_op_from_json(b, NULL, &y, NULL, 0), WSY_OK);
  text_op *t1 = text_transform(x, y, TEXT_LEFT), *t2 = text_transform(y, x, TEXT_RIGHT);
  text_op *c = text_compose(x, y);
  cr_expect_eq(inserted_bytes(t1), inserted_bytes(x));
  cr_expect_eq(inserted_bytes(t2), inserted_bytes(y));
  text_op_free(t1), text_op_free(t2), text_op_free(c), text_op_free(x), text_op_free(y);
  json_decref(a), json_decref(b);
}
