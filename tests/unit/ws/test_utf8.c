/* test_utf8.c -- the incremental UTF-8 validator (src/ws/utf8.c).
 *
 * Fixed vectors first, then an independent reference decoder written here
 * from RFC 3629 (decode each code point, then check range, overlong and
 * surrogates) compared against ws_utf8_valid() and ws_utf8_feed() over every
 * string of up to two bytes, every code point, and many random strings. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/ws/ws.h"

/* ---- reference ------------------------------------------------------------------ */

/* Length a lead byte announces (1-4, by bit pattern only), 0 for a byte that
 * cannot start a sequence (10xxxxxx, 11111xxx). */
static int ref_seq_len(uint8_t b) {
  if (b < 0x80) return 1;
  if ((b & 0xe0) == 0xc0) return 2;
  if ((b & 0xf0) == 0xe0) return 3;
  if ((b & 0xf8) == 0xf0) return 4;
  return 0;
}

static int ref_cp_ok(uint32_t cp, int len) {
  static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
  return cp >= min[len] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
}

/* 1: complete valid UTF-8. 0: not valid, but every byte so far could still
 * begin valid UTF-8 (ends inside a sequence). -1: no continuation can make it
 * valid. */
static int ref_check(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    int len = ref_seq_len(s[i]);
    if (len == 0) return -1;
    uint32_t cp = len == 1 ? s[i] : (uint32_t)(s[i] & (0x7f >> len));
    int have = 1;
    for (; have < len && i + (size_t)have < n; have++) {
      uint8_t c = s[i + (size_t)have];
      if ((c & 0xc0) != 0x80) return -1;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (have < len) {
      /* Truncated: the completions span [lo, hi]; some must be acceptable. */
      uint32_t lo = cp, hi = cp;
      for (int k = have; k < len; k++) {
        lo = lo << 6;
        hi = (hi << 6) | 0x3f;
      }
      static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
      if (lo < min[len]) lo = min[len];
      if (hi > 0x10ffff) hi = 0x10ffff;
      if (lo > hi) return -1;
      if (lo >= 0xd800 && hi <= 0xdfff) return -1;
      return 0;
    }
    if (!ref_cp_ok(cp, len)) return -1;
    i += (size_t)len;
  }
  return 1;
}

static size_t encode(uint32_t cp, uint8_t out[4]) {
  if (cp < 0x80) {
    out[0] = (uint8_t)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (uint8_t)(0xc0 | cp >> 6);
    out[1] = (uint8_t)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (uint8_t)(0xe0 | cp >> 12);
    out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (uint8_t)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (uint8_t)(0xf0 | cp >> 18);
  out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
  out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
  out[3] = (uint8_t)(0x80 | (cp & 0x3f));
  return 4;
}

/* Checks ws_utf8_valid and ws_utf8_feed (whole and split at `cut`) against the
 * reference for s[0..n). */
static void check_against_ref(const uint8_t *s, size_t n, size_t cut) {
  int ref = ref_check(s, n);
  int v = ws_utf8_valid(s, n);
  cr_assert_eq(v == WSY_OK, ref == 1, "ws_utf8_valid disagrees (ref %d) on %zu bytes %02x %02x %02x %02x",
               ref, n, n > 0 ? s[0] : 0, n > 1 ? s[1] : 0, n > 2 ? s[2] : 0, n > 3 ? s[3] : 0);
  cr_assert(v == WSY_OK || v == WSY_BAD_UTF8);
  uint32_t st = WS_UTF8_ACCEPT;
  int rc = ws_utf8_feed(&st, s, n);
  cr_assert_eq(rc == WSY_OK, ref >= 0, "ws_utf8_feed disagrees (ref %d) on %zu bytes %02x %02x %02x",
               ref, n, n > 0 ? s[0] : 0, n > 1 ? s[1] : 0, n > 2 ? s[2] : 0);
  cr_assert_eq(rc == WSY_OK && ws_utf8_complete(st), ref == 1);
  cr_assert_eq(rc != WSY_OK, st == WS_UTF8_REJECT, "state and return disagree");
  if (cut > n) cut = n;
  uint32_t s2 = WS_UTF8_ACCEPT;
  int r1 = ws_utf8_feed(&s2, s, cut);
  int r2 = ws_utf8_feed(&s2, s + cut, n - cut);
  cr_assert_eq(r2, rc, "split at %zu of %zu changes the result", cut, n);
  cr_assert_eq(s2, st, "split at %zu of %zu changes the state", cut, n);
  if (r1 != WSY_OK) cr_assert_eq(r2, WSY_BAD_UTF8, "rejection not sticky");
}

/* ---- vectors --------------------------------------------------------------------- */

Test(ws_utf8, valid_vectors) {
  static const char *ok[] = {
    "",
    "hello, world",
    "\x7f",
    "\xc2\x80",                 /* U+0080 */
    "\xc3\xa9",                 /* é */
    "\xdf\xbf",                 /* U+07FF */
    "\xe0\xa0\x80",             /* U+0800 */
    "\xe2\x82\xac",             /* € */
    "\xed\x9f\xbf",             /* U+D7FF, last before the surrogates */
    "\xee\x80\x80",             /* U+E000, first after them */
    "\xef\xbf\xbd",             /* U+FFFD */
    "\xef\xbf\xbf",             /* U+FFFF */
    "\xf0\x90\x80\x80",         /* U+10000 */
    "\xf0\x9f\x98\x80",         /* 😀 */
    "\xf4\x8f\xbf\xbf",         /* U+10FFFF */
    "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", /* κόσμε */
    "mixed \xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e ascii runs long enough for the fast path",
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(ok); i++) {
    size_t n = strlen(ok[i]);
    cr_assert_eq(ws_utf8_valid((const uint8_t *)ok[i], n), WSY_OK, "vector %zu rejected", i);
    uint32_t st = WS_UTF8_ACCEPT;
    cr_assert_eq(ws_utf8_feed(&st, (const uint8_t *)ok[i], n), WSY_OK);
    cr_assert(ws_utf8_complete(st), "vector %zu incomplete", i);
  }
  /* NUL is a valid code point: the validator counts bytes, not C strings. */
  cr_assert_eq(ws_utf8_valid((const uint8_t *)"a\0b", 3), WSY_OK);
}

Test(ws_utf8, invalid_vectors) {
  static const struct {
    const char *s;
    size_t n;
  } bad[] = {
#define V(lit) {lit, sizeof lit - 1}
    V("\xc0\x80"),             /* overlong NUL */
    V("\xc1\xbf"),             /* overlong U+007F */
    V("\xe0\x80\x80"),         /* overlong 3-byte */
    V("\xe0\x9f\xbf"),         /* overlong U+07FF */
    V("\xf0\x80\x80\x80"),     /* overlong 4-byte */
    V("\xf0\x8f\xbf\xbf"),     /* overlong U+FFFF */
    V("\xed\xa0\x80"),         /* U+D800 */
    V("\xed\xad\xbf"),         /* U+DB7F */
    V("\xed\xb0\x80"),         /* U+DC00 */
    V("\xed\xbf\xbf"),         /* U+DFFF */
    V("\xed\xa0\x80\xed\xb0\x80"), /* surrogate pair, CESU-8 */
    V("\xf4\x90\x80\x80"),     /* U+110000 */
    V("\xf5\x80\x80\x80"),
    V("\xf7\xbf\xbf\xbf"),
    V("\xf8\x88\x80\x80\x80"), /* 5-byte form */
    V("\xfc\x84\x80\x80\x80\x80"),
    V("\xfe"),
    V("\xff"),
    V("\x80"),                 /* lone continuation */
    V("\xbf"),
    V("a\x80" "b"),
    V("\xc3\xa9\x80"),         /* continuation after a complete sequence */
    V("\xc2" "A"),             /* lead then ASCII */
    V("\xe2\x82" "A"),
    V("\xf0\x9f\x98" "A"),
    V("\xe2\xc3\xa9"),         /* lead then lead */
  };
#undef V
  for (size_t i = 0; i < WSY_ARRAY_LEN(bad); i++) {
    const uint8_t *s = (const uint8_t *)bad[i].s;
    cr_assert_eq(ws_utf8_valid(s, bad[i].n), WSY_BAD_UTF8, "vector %zu accepted", i);
    uint32_t st = WS_UTF8_ACCEPT;
    cr_assert_eq(ws_utf8_feed(&st, s, bad[i].n), WSY_BAD_UTF8, "vector %zu fed OK", i);
    cr_assert_eq(st, WS_UTF8_REJECT);
  }
}

Test(ws_utf8, truncated_sequence_is_incomplete_not_rejected) {
  static const char *cut[] = {"\xc3", "\xe2", "\xe2\x82", "\xf0", "\xf0\x9f", "\xf0\x9f\x98",
                              "abc\xf4\x8f\xbf", "\xed\x9f", "\xee"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(cut); i++) {
    const uint8_t *s = (const uint8_t *)cut[i];
    size_t n = strlen(cut[i]);
    cr_assert_eq(ws_utf8_valid(s, n), WSY_BAD_UTF8, "truncated %zu valid", i);
    uint32_t st = WS_UTF8_ACCEPT;
    cr_assert_eq(ws_utf8_feed(&st, s, n), WSY_OK, "truncated %zu rejected early", i);
    cr_assert(!ws_utf8_complete(st));
    cr_assert_neq(st, WS_UTF8_REJECT);
  }
}

Test(ws_utf8, bad_first_continuation_fails_at_once) {
  /* The second byte already rules these out; feed must say so before the
   * sequence is complete (a text frame fails fast). */
  static const char *early[] = {"\xe0\x80", "\xe0\x9f", "\xed\xa0", "\xed\xbf", "\xf0\x80",
                                "\xf0\x8f", "\xf4\x90", "\xf4\xbf"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(early); i++) {
    uint32_t st = WS_UTF8_ACCEPT;
    cr_assert_eq(ws_utf8_feed(&st, (const uint8_t *)early[i], 2), WSY_BAD_UTF8, "case %zu", i);
  }
}

Test(ws_utf8, rejection_is_sticky) {
  uint32_t st = WS_UTF8_ACCEPT;
  cr_assert_eq(ws_utf8_feed(&st, (const uint8_t *)"\xff", 1), WSY_BAD_UTF8);
  cr_assert_eq(ws_utf8_feed(&st, (const uint8_t *)"fine", 4), WSY_BAD_UTF8);
  cr_assert_eq(ws_utf8_feed(&st, (const uint8_t *)"", 0), WSY_BAD_UTF8);
  cr_assert_eq(st, WS_UTF8_REJECT);
  cr_assert(!ws_utf8_complete(st));
}

Test(ws_utf8, empty_feed_keeps_state) {
  uint32_t st = WS_UTF8_ACCEPT;
  cr_assert_eq(ws_utf8_feed(&st, (const uint8_t *)"\xf0\x9f", 2), WSY_OK);
  uint32_t before = st;
  cr_assert_eq(ws_utf8_feed(&st, NULL, 0), WSY_OK);
  cr_assert_eq(st, before);
  cr_assert_eq(ws_utf8_feed(&st, (const uint8_t *)"\x98\x80", 2), WSY_OK);
  cr_assert(ws_utf8_complete(st));
  cr_assert_eq(ws_utf8_valid(NULL, 0), WSY_OK);
}

Test(ws_utf8, bad_byte_at_every_offset_of_ascii_run) {
  /* The validator skips ASCII eight bytes at a time: a bad byte anywhere in
   * or after such a run, at any alignment, must still be seen. */
  uint8_t space[64 + 8];
  for (size_t align = 0; align < 8; align++) {
    for (size_t n = 1; n <= 64; n++) {
      for (size_t bad = 0; bad < n; bad++) {
        uint8_t *s = space + align;
        memset(s, 'a', n);
        s[bad] = 0x80;
        cr_assert_eq(ws_utf8_valid(s, n), WSY_BAD_UTF8, "align %zu n %zu bad at %zu", align, n, bad);
        s[bad] = 0xc3; /* a lead byte followed by ASCII (or by the end) */
        cr_assert_eq(ws_utf8_valid(s, n), WSY_BAD_UTF8, "lead at %zu of %zu", bad, n);
        if (bad + 1 < n) {
          s[bad + 1] = 0xa9;
          cr_assert_eq(ws_utf8_valid(s, n), WSY_OK, "é at %zu of %zu", bad, n);
        }
      }
    }
  }
}

/* ---- exhaustive and random ------------------------------------------------------- */

Test(ws_utf8, every_code_point_whole_and_split_at_every_position) {
  uint8_t b[4];
  for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    size_t n = encode(cp, b);
    if (ws_utf8_valid(b, n) != WSY_OK) cr_assert_fail("U+%04X rejected", cp);
    for (size_t k = 1; k < n; k++) {
      uint32_t st = WS_UTF8_ACCEPT;
      int r1 = ws_utf8_feed(&st, b, k);
      int c1 = ws_utf8_complete(st);
      int r2 = ws_utf8_feed(&st, b + k, n - k);
      if (r1 != WSY_OK || c1 || r2 != WSY_OK || !ws_utf8_complete(st))
        cr_assert_fail("U+%04X split at %zu: %d %d %d", cp, k, r1, c1, r2);
    }
  }
  /* Surrogates encoded as if they were code points are all refused. */
  for (uint32_t cp = 0xd800; cp <= 0xdfff; cp++) {
    size_t n = encode(cp, b);
    if (ws_utf8_valid(b, n) != WSY_BAD_UTF8) cr_assert_fail("surrogate U+%04X accepted", cp);
  }
  /* Beyond U+10FFFF, in the 4-byte form. */
  for (uint32_t cp = 0x110000; cp <= 0x1fffff; cp += 0x1001) {
    size_t n = encode(cp, b);
    if (ws_utf8_valid(b, n) != WSY_BAD_UTF8) cr_assert_fail("U+%X accepted", cp);
  }
}

Test(ws_utf8, every_overlong_encoding_refused) {
  uint8_t b[4];
  for (uint32_t cp = 0; cp < 0x80; cp++) { /* as 2 bytes */
    b[0] = (uint8_t)(0xc0 | cp >> 6);
    b[1] = (uint8_t)(0x80 | (cp & 0x3f));
    cr_assert_eq(ws_utf8_valid(b, 2), WSY_BAD_UTF8, "overlong 2-byte U+%04X", cp);
  }
  for (uint32_t cp = 0; cp < 0x800; cp++) { /* as 3 bytes */
    b[0] = 0xe0;
    b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    b[2] = (uint8_t)(0x80 | (cp & 0x3f));
    cr_assert_eq(ws_utf8_valid(b, 3), WSY_BAD_UTF8, "overlong 3-byte U+%04X", cp);
  }
  for (uint32_t cp = 0; cp < 0x10000; cp += 7) { /* as 4 bytes */
    b[0] = 0xf0;
    b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    b[3] = (uint8_t)(0x80 | (cp & 0x3f));
    cr_assert_eq(ws_utf8_valid(b, 4), WSY_BAD_UTF8, "overlong 4-byte U+%04X", cp);
  }
}

Test(ws_utf8, all_strings_up_to_two_bytes_match_reference) {
  uint8_t s[2];
  for (unsigned a = 0; a < 256; a++) {
    s[0] = (uint8_t)a;
    check_against_ref(s, 1, 0);
    check_against_ref(s, 1, 1);
    for (unsigned b = 0; b < 256; b++) {
      s[1] = (uint8_t)b;
      check_against_ref(s, 2, 1);
    }
  }
}

Test(ws_utf8, three_byte_strings_from_lead_bytes_match_reference) {
  uint8_t s[3];
  for (unsigned a = 0xc0; a < 0x100; a++) {
    for (unsigned b = 0x70; b < 0xd0; b++) {
      for (unsigned c = 0x70; c < 0xd0; c++) {
        s[0] = (uint8_t)a;
        s[1] = (uint8_t)b;
        s[2] = (uint8_t)c;
        int ref = ref_check(s, 3);
        uint32_t st = WS_UTF8_ACCEPT;
        int rc = ws_utf8_feed(&st, s, 3);
        if ((rc == WSY_OK) != (ref >= 0) || (rc == WSY_OK && ws_utf8_complete(st)) != (ref == 1))
          cr_assert_fail("%02x %02x %02x: ref %d, rc %d", a, b, c, ref, rc);
      }
    }
  }
}

static uint64_t rng;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

static uint8_t rnd_byte(void) {
  /* Mostly the bytes where UTF-8 has its edges. */
  static const uint8_t edge[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf,
                                 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee,
                                 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xf7, 0xf8, 0xff};
  switch (rnd() % 8) {
  case 0: return (uint8_t)(rnd() % 0x80);
  case 1:
  case 2: return edge[rnd() % sizeof edge];
  case 3:
  case 4: return (uint8_t)(0xc0 + rnd() % 0x40); /* lead bytes */
  default: return (uint8_t)(0x80 + rnd() % 0x40); /* continuation bytes */
  }
}

Test(ws_utf8, random_strings_match_reference) {
  rng = 0x2545f4914f6cdd1dull;
  uint8_t s[24];
  int valid = 0;
  for (int iter = 0; iter < 100000; iter++) {
    size_t n = rnd() % sizeof s;
    for (size_t i = 0; i < n; i++) s[i] = rnd_byte();
    /* Half the time start from a valid string and damage at most one byte,
     * so valid inputs and near misses are both common. */
    if (iter & 1) {
      size_t k = 0;
      while (k + 4 <= sizeof s && k < n) {
        uint32_t cp = rnd() % 4 == 0 ? rnd() % 0x80 : rnd() % 0x110000;
        if (cp >= 0xd800 && cp <= 0xdfff) continue;
        k += encode(cp, s + k);
      }
      n = k;
      if (n && rnd() % 2) s[rnd() % n] = rnd_byte();
    }
    valid += ref_check(s, n) == 1;
    check_against_ref(s, n, n ? rnd() % (n + 1) : 0);
  }
  /* The generator must produce both outcomes in bulk, or the test says little. */
  cr_assert_gt(valid, 20000, "only %d valid strings", valid);
  cr_assert_lt(valid, 80000, "%d valid strings", valid);
}

Test(ws_utf8, byte_at_a_time_equals_whole) {
  rng = 0x1234567887654321ull;
  uint8_t s[40];
  for (int iter = 0; iter < 20000; iter++) {
    size_t n = rnd() % sizeof s;
    for (size_t i = 0; i < n; i++) s[i] = rnd() % 3 ? rnd_byte() : (uint8_t)('a' + rnd() % 26);
    uint32_t whole = WS_UTF8_ACCEPT, bytes = WS_UTF8_ACCEPT;
    int rw = ws_utf8_feed(&whole, s, n), rb = WSY_OK;
    for (size_t i = 0; i < n; i++) rb = ws_utf8_feed(&bytes, s + i, 1);
    cr_assert_eq(rb, rw);
    cr_assert_eq(bytes, whole);
  }
}
