/* test_lib0.c -- lib0 encoding edge cases (src/yjs/lib0.c): varuint/varint
 * limits, length prefixes against the remaining input, UTF-8 and UTF-16
 * lengths, "any" values, the output buffer's cap. */
#include <criterion/criterion.h>
#include <string.h>

#include "../../../src/yjs/lib0.h"

Test(lib0, varuint_round_trip_at_the_limits) {
  static const uint64_t vals[] = {0, 1, 127, 128, 16383, 16384, 4294967295u, LIB0_MAX_SAFE};
  for (size_t i = 0; i < WSY_ARRAY_LEN(vals); i++) {
    ybuf b = {0};
    cr_assert_eq(lib0_write_varuint(&b, vals[i]), 0);
    lib0_rd r;
    uint64_t v;
    lib0_rd_init(&r, b.p, b.len);
    cr_assert_eq(lib0_read_varuint(&r, &v), 0);
    cr_assert_eq(v, vals[i]);
    cr_assert_eq(lib0_rd_left(&r), 0);
    /* every strict prefix is truncated */
    for (size_t n = 0; n < b.len; n++) {
      lib0_rd_init(&r, b.p, n);
      cr_assert_eq(lib0_read_varuint(&r, &v), WSY_INVAL);
    }
    ybuf_free(&b);
  }
  const uint8_t one28[] = {0x80, 0x01};
  lib0_rd r;
  uint64_t v;
  lib0_rd_init(&r, one28, sizeof one28);
  cr_assert_eq(lib0_read_varuint(&r, &v), 0);
  cr_assert_eq(v, 128);
}

Test(lib0, varuint_above_2_pow_53_or_endless_is_refused) {
  ybuf b = {0};
  cr_assert_eq(lib0_write_varuint(&b, LIB0_MAX_SAFE + 1), 0);
  lib0_rd r;
  uint64_t v;
  lib0_rd_init(&r, b.p, b.len);
  cr_assert_eq(lib0_read_varuint(&r, &v), WSY_INVAL);
  ybuf_free(&b);
  uint8_t endless[32];
  memset(endless, 0x80, sizeof endless);
  lib0_rd_init(&r, endless, sizeof endless);
  cr_assert_eq(lib0_read_varuint(&r, &v), WSY_INVAL);
  cr_assert_leq(r.pos, 9, "gives up within 9 bytes, read %zu", r.pos);
}

Test(lib0, varint_matches_lib0_bytes) {
  static const struct {
    int64_t v;
    uint8_t bytes[4];
    size_t n;
  } cases[] = {
      {0, {0x00}, 1},        {1, {0x01}, 1},         {-1, {0x41}, 1},
      {63, {0x3f}, 1},       {64, {0x80, 0x01}, 2},  {-64, {0xc0, 0x01}, 2},
      {8191, {0xbf, 0x7f}, 2}, {8192, {0x80, 0x80, 0x01}, 3},
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(cases); i++) {
    ybuf b = {0};
    cr_assert_eq(lib0_write_varint(&b, cases[i].v), 0);
    cr_assert_eq(b.len, cases[i].n, "varint %lld", (long long)cases[i].v);
    cr_assert_eq(memcmp(b.p, cases[i].bytes, b.len), 0, "varint %lld", (long long)cases[i].v);
    lib0_rd r;
    int64_t v;
    lib0_rd_init(&r, b.p, b.len);
    cr_assert_eq(lib0_read_varint(&r, &v), 0);
    cr_assert_eq(v, cases[i].v);
    ybuf_free(&b);
  }
  lib0_rd r;
  int64_t v;
  const uint8_t cut[] = {0x80};
  lib0_rd_init(&r, cut, 1);
  cr_assert_eq(lib0_read_varint(&r, &v), WSY_INVAL);
  lib0_rd_init(&r, cut, 0);
  cr_assert_eq(lib0_read_varint(&r, &v), WSY_INVAL);
}

Test(lib0, length_prefix_larger_than_the_input_is_refused) {
  /* 2^40 bytes announced, 3 present: refused before anything is used. */
  const uint8_t huge[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 'a', 'b', 'c'};
  lib0_rd r;
  const uint8_t *p;
  size_t n;
  lib0_rd_init(&r, huge, sizeof huge);
  cr_assert_eq(lib0_read_varbytes(&r, &p, &n), WSY_INVAL);
  const uint8_t four[] = {0x04, 'a', 'b', 'c'};
  lib0_rd_init(&r, four, sizeof four);
  cr_assert_eq(lib0_read_varbytes(&r, &p, &n), WSY_INVAL);
  const uint8_t three[] = {0x03, 'a', 'b', 'c'};
  lib0_rd_init(&r, three, sizeof three);
  cr_assert_eq(lib0_read_varbytes(&r, &p, &n), 0);
  cr_assert_eq(n, 3);
  cr_assert_eq(p, three + 1, "a view into the input, not a copy");
}

Test(lib0, strings_must_be_utf8_and_count_utf16_units) {
  static const struct {
    const char *s;
    int ok;
    size_t units;
  } cases[] = {
      {"", 1, 0},
      {"abc", 1, 3},
      {"\xc3\xa9", 1, 1},              /* é */
      {"\xe4\xb8\xad", 1, 1},          /* 中 */
      {"a\xf0\x9f\x98\x80" "b", 1, 4}, /* a😀b: the emoji is a surrogate pair */
      {"\xef\xbf\xbd", 1, 1},          /* U+FFFD */
      {"\xc0\x80", 0, 0},              /* overlong NUL */
      {"\xe0\x80\x80", 0, 0},          /* overlong */
      {"\xed\xa0\x80", 0, 0},          /* a UTF-16 surrogate, CESU-8 style */
      {"\xf4\x90\x80\x80", 0, 0},      /* above U+10FFFF */
      {"\xf0\x9f\x98", 0, 0},          /* cut */
      {"\x80", 0, 0},                  /* continuation byte first */
      {"\xff", 0, 0},
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(cases); i++) {
    /* As lib0 writes a string: its byte length, then the bytes. */
    size_t len = strlen(cases[i].s);
    ybuf b = {0};
    cr_assert_eq(lib0_write_varbytes(&b, cases[i].s, len), 0);
    lib0_rd r;
    lib0_rd_init(&r, b.p, b.len);
    const uint8_t *p = NULL;
    size_t n = 99, units = 99;
    int rc = lib0_read_varstring(&r, &p, &n, &units);
    cr_assert_eq(rc, cases[i].ok ? 0 : WSY_INVAL, "case %zu", i);
    if (cases[i].ok) {
      cr_assert_eq(units, cases[i].units, "case %zu", i);
      cr_assert_eq(n, len);
      cr_assert_eq(p, b.p + b.len - len, "a view into the input");
    }
    ybuf_free(&b);
  }
}

Test(lib0, utf16_offsets_and_split_surrogates) {
  const uint8_t *s = (const uint8_t *)"a\xf0\x9f\x98\x80" "b";
  int split;
  cr_assert_eq(lib0_utf8_offset(s, 6, 0, &split), 0);
  cr_assert_eq(split, 0);
  cr_assert_eq(lib0_utf8_offset(s, 6, 1, &split), 1);
  cr_assert_eq(split, 0);
  cr_assert_eq(lib0_utf8_offset(s, 6, 2, &split), 1); /* between the halves */
  cr_assert_eq(split, 1);
  cr_assert_eq(lib0_utf8_offset(s, 6, 3, &split), 5);
  cr_assert_eq(split, 0);
  cr_assert_eq(lib0_utf8_offset(s, 6, 4, &split), 6);
}

Test(lib0, any_values_of_every_type_and_nesting_limit) {
  static const uint8_t ok[] = {
      127, 126, 121, 120,                    /* undefined null false true */
      125, 0xc0, 0x01,                       /* varint -64 */
      124, 0, 0, 0x80, 0x3f,                 /* float32 1.0 */
      123, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f,     /* float64 1.0 */
      122, 1, 2, 3, 4, 5, 6, 7, 8,           /* bigint64 */
      119, 2, 'h', 'i',                      /* string */
      116, 1, 0xff,                          /* bytes */
      118, 1, 1, 'k', 117, 2, 120, 126,      /* {k: [true, null]} */
  };
  lib0_rd r;
  lib0_rd_init(&r, ok, sizeof ok);
  int values = 0;
  while (lib0_rd_left(&r)) {
    cr_assert_eq(lib0_skip_any(&r), 0, "value %d at %zu", values, r.pos);
    values++;
  }
  cr_assert_eq(values, 11);
  const size_t obj = sizeof ok - 8; /* the last value, the object: cut anywhere */
  for (size_t n = 0; n < 8; n++) {
    lib0_rd_init(&r, ok + obj, n);
    cr_assert_eq(lib0_skip_any(&r), WSY_INVAL, "cut at %zu", n);
  }
  const uint8_t bad_type[] = {115};
  lib0_rd_init(&r, bad_type, 1);
  cr_assert_eq(lib0_skip_any(&r), WSY_INVAL);
  /* arrays nested one deeper than allowed, then as deep as allowed */
  uint8_t deep[2 * (LIB0_ANY_MAX_DEPTH + 2) + 1];
  size_t k = 0;
  for (int i = 0; i <= LIB0_ANY_MAX_DEPTH + 1; i++) deep[k++] = 117, deep[k++] = 1;
  deep[k++] = 126;
  lib0_rd_init(&r, deep, k);
  cr_assert_eq(lib0_skip_any(&r), WSY_INVAL);
  lib0_rd_init(&r, deep + 4, k - 4);
  cr_assert_eq(lib0_skip_any(&r), 0);
  /* a count larger than the input cannot make us loop for long */
  const uint8_t many[] = {117, 0xff, 0xff, 0xff, 0x0f, 126};
  lib0_rd_init(&r, many, sizeof many);
  cr_assert_eq(lib0_skip_any(&r), WSY_INVAL);
}

Test(lib0, output_cap_is_too_large_not_an_allocation) {
  ybuf b = {0};
  cr_assert_eq(ybuf_reserve(&b, LIB0_MAX_OUTPUT + 1), WSY_TOO_LARGE);
  cr_assert_null(b.p);
  cr_assert_eq(lib0_write_bytes(&b, "xy", 2), 0);
  cr_assert_eq(ybuf_reserve(&b, LIB0_MAX_OUTPUT - 1), WSY_TOO_LARGE);
  cr_assert_eq(b.len, 2);
  ybuf_free(&b);
  cr_assert_null(b.p);
}
