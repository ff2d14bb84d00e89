/* test_jsonw.c -- jw_dumps/jw_size write exactly what jansson's json_dumps
 * writes (src/common/jsonw.c): fixed edge cases, then random trees. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/common/jsonw.h"

static void same_as_jansson(const json_t *v) {
  char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  char *got = jw_dumps(v);
  cr_assert_not_null(want);
  cr_assert_str_eq(got, want);
  cr_assert_eq(jw_size(v), strlen(want), "size %zu for %s", jw_size(v), want);
  free(want);
  free(got);
}

Test(jsonw, every_byte_of_a_string) {
  /* All control characters, quote, backslash, slash, DEL, and UTF-8 of
   * 2, 3 and 4 bytes including U+2028 (jansson leaves it unescaped). */
  char s[64];
  for (int c = 1; c < 0x20; c++) s[c - 1] = (char)c;
  const char tail[] = "\"\\/\x7f\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80 end";
  memcpy(s + 31, tail, sizeof tail);
  json_t *v = json_string(s);
  cr_assert_not_null(v);
  same_as_jansson(v);
  json_decref(v);
}

Test(jsonw, scalars_and_empty_containers) {
  json_t *vals[] = {
    json_integer(0), json_integer(-1), json_integer(9007199254740991LL), json_integer(-9223372036854775807LL - 1),
    json_integer(9223372036854775807LL), json_real(0.1), json_real(-2.5e-300), json_real(3.0), json_real(1e21),
    json_real(123456789.123), json_true(), json_false(), json_null(), json_string(""), json_object(), json_array(),
  };
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    same_as_jansson(vals[i]);
    json_decref(vals[i]);
  }
}

Test(jsonw, member_order_and_escaped_keys) {
  json_t *o = json_object();
  json_object_set_new(o, "z", json_integer(1));
  json_object_set_new(o, "a\"b\n", json_array());
  json_object_set_new(o, "m", json_pack("{s:[i,s,{}],s:n}", "x", 1, "two", "y"));
  json_object_set_new(o, "\xe2\x82\xac", json_false());
  same_as_jansson(o);
  json_decref(o);
}

Test(jsonw, writer_pieces_compose_into_json) {
  jw w = JW_INIT;
  jw_lit(&w, "{\"a\":");
  jw_int(&w, -42);
  jw_lit(&w, ",\"b\":");
  jw_cstr(&w, "x\"y");
  jw_lit(&w, "}");
  cr_assert_str_eq(w.p, "{\"a\":-42,\"b\":\"x\\\"y\"}");
  json_error_t err;
  json_t *back = json_loadb(w.p, w.len, 0, &err);
  cr_assert_not_null(back, "%s", err.text);
  json_decref(back);
  char *s = jw_steal(&w);
  cr_assert_null(w.p);
  cr_assert_eq(w.len, 0);
  free(s);
  s = jw_steal(&w); /* empty writer: an empty string, not NULL */
  cr_assert_str_eq(s, "");
  free(s);
  jw_free(&w);
}

/* ---- random trees ---------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

static json_t *rand_string(void) {
  static const char *pieces[] = {"a", "Z", " ", "\"", "\\", "/", "\n", "\t", "\x01", "\x1f", "\x7f",
                                 "\xc3\xa9", "\xe2\x80\xa8", "\xf0\x9f\x98\x80", "0", "{", "}"};
  char s[200];
  size_t n = 0, k = next() % 12;
  for (size_t i = 0; i < k; i++) {
    const char *p = pieces[next() % (sizeof pieces / sizeof pieces[0])];
    size_t l = strlen(p);
    memcpy(s + n, p, l);
    n += l;
  }
  s[n] = '\0';
  return json_string(s);
}

static json_t *rand_value(int depth) {
  switch (next() % (depth > 4 ? 6 : 8)) {
    case 0: return json_integer((json_int_t)(int32_t)next() * (next() % 3 ? 1 : 1000003));
    case 1: return json_real((double)(int32_t)next() / (double)(next() % 1000 + 1));
    case 2: return rand_string();
    case 3: return json_boolean(next() & 1);
    case 4: return json_null();
    case 5: return json_integer(next() % 100);
    case 6: {
      json_t *a = json_array();
      for (int i = (int)(next() % 5); i > 0; i--) json_array_append_new(a, rand_value(depth + 1));
      return a;
    }
    default: {
      json_t *o = json_object();
      for (int i = (int)(next() % 5); i > 0; i--) {
        json_t *k = rand_string();
        json_object_set_new(o, json_string_value(k), rand_value(depth + 1));
        json_decref(k);
      }
      return o;
    }
  }
}

Test(jsonw, random_trees_match_jansson) {
  for (int i = 0; i < 5000; i++) {
    json_t *v = rand_value(0);
    same_as_jansson(v);
    json_decref(v);
  }
}

/* Strings are scanned 8 bytes at a time while no byte needs an escape:
 * each byte that does (every control character, quote, backslash), and
 * the bytes next to it in value (0x1f/0x20, 0x21/0x23, 0x5b/0x5d), at every
 * offset of strings up to 40 bytes, among plain ASCII and UTF-8, gives
 * jansson's text and size. */
Test(jsonw, escapes_at_every_offset_of_a_word) {
  const unsigned char special[] = {0x01, 0x08, 0x0a, 0x1f, 0x20, 0x21, '"', 0x23, 0x5b, '\\', 0x5d, 0x7f, 0x80, 0xc3};
  for (size_t len = 1; len <= 40; len++)
    for (size_t at = 0; at < len; at++)
      for (size_t k = 0; k < sizeof special; k++)
        for (int filler = 0; filler < 2; filler++) {
          char s[48];
          for (size_t i = 0; i < len; i++) s[i] = filler ? "\xc3\xa9"[i % 2] : (char)('a' + i % 26);
          if (filler && len % 2) s[len - 1] = 'z'; /* no cut UTF-8 sequence at the end */
          s[len] = '\0';
          unsigned char c = special[k];
          if (c >= 0x80) { /* a two-byte sequence of its own, where it fits */
            if (at + 1 >= len) continue;
            s[at] = (char)0xc3, s[at + 1] = (char)0xa9;
            if (filler && (at % 2)) continue; /* would split a filler sequence */
          } else {
            if (filler && ((at % 2) || at + 1 >= len)) continue; /* keep the fillers whole */
            s[at] = (char)c;
            if (filler) s[at + 1] = 'y';
          }
          json_t *v = json_string(s);
          cr_assert_not_null(v, "len %zu at %zu byte %02x", len, at, c);
          same_as_jansson(v);
          json_decref(v);
        }
}

/* Integers are written two digits at a time: every length, each side of a
 * power of ten, both signs, and int64's ends give jansson's text. */
Test(jsonw, integers_of_every_length) {
  for (int k = 0; k <= 18; k++) {
    long long p = 1;
    for (int j = 0; j < k; j++) p *= 10;
    long long nines = k < 18 ? 10 * p - 1 : 9 * p; /* 10^19 - 1 is beyond int64 */
    long long vals[] = {p, p - 1, p + 1, 2 * p, nines, -p, -(p - 1), -(p + 1)};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
      json_t *v = json_integer(vals[i]);
      same_as_jansson(v);
      json_decref(v);
    }
  }
  json_t *ends[] = {json_integer(9223372036854775807LL), json_integer(-9223372036854775807LL - 1)};
  for (size_t i = 0; i < 2; i++) {
    same_as_jansson(ends[i]);
    json_decref(ends[i]);
  }
}
