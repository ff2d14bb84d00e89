/* test_utf8.c -- the UTF-8 validator (src/common/utf8.c): wsy_utf8_scan with
 * its counts, and the incremental wsy_utf8_feed.
 *
 * Fixed vectors first (every boundary of RFC 3629, overlongs, surrogates,
 * bad leads, cut sequences, ASCII runs around the eight-byte fast path), then
 * an independent reference decoder written here from RFC 3629 (decode each
 * code point by its bit pattern, then check range, overlong and surrogates)
 * compared with both forms over every string of up to three bytes, every
 * four-byte string with a lead in F0..F4, every code point, and many random
 * strings fed whole, a byte at a time and in random pieces. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/common/utf8.h"

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

/* 1: complete valid UTF-8, then *cps and *units (either may be NULL) get its
 * code points and UTF-16 code units. 0: not valid, but every byte so far
 * could still begin valid UTF-8 (ends inside a sequence). -1: no
 * continuation can make it valid. */
static int ref_check_counts(const uint8_t *s, size_t n, size_t *cps, size_t *units) {
  size_t i = 0, ncp = 0, nu = 0;
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
    ncp++;
    nu += cp > 0xffff ? 2 : 1;
  }
  if (cps) *cps = ncp;
  if (units) *units = nu;
  return 1;
}

static int ref_check(const uint8_t *s, size_t n) { return ref_check_counts(s, n, NULL, NULL); }

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

/* Checks wsy_utf8_scan (verdict and counts) and wsy_utf8_feed (whole and split at `cut`) against the
 * reference for s[0..n). */
static void check_against_ref(const uint8_t *s, size_t n, size_t cut) {
  size_t rcps = 0, runits = 0, cps = 77, units = 77;
  int ref = ref_check_counts(s, n, &rcps, &runits);
  int v = wsy_utf8_scan(s, n, &cps, &units);
  if (v == WSY_OK) cr_assert(cps == rcps && units == runits, "counts %zu %zu, reference %zu %zu", cps, units, rcps, runits);
  else cr_assert(cps == 77 && units == 77, "counts written on failure");
  cr_assert_eq(v == WSY_OK, ref == 1, "wsy_utf8_scan disagrees (ref %d) on %zu bytes %02x %02x %02x %02x",
               ref, n, n > 0 ? s[0] : 0, n > 1 ? s[1] : 0, n > 2 ? s[2] : 0, n > 3 ? s[3] : 0);
  cr_assert(v == WSY_OK || v == WSY_BAD_UTF8);
  uint32_t st = WSY_UTF8_ACCEPT;
  int rc = wsy_utf8_feed(&st, s, n);
  cr_assert_eq(rc == WSY_OK, ref >= 0, "wsy_utf8_feed disagrees (ref %d) on %zu bytes %02x %02x %02x",
               ref, n, n > 0 ? s[0] : 0, n > 1 ? s[1] : 0, n > 2 ? s[2] : 0);
  cr_assert_eq(rc == WSY_OK && wsy_utf8_complete(st), ref == 1);
  cr_assert_eq(rc != WSY_OK, st == WSY_UTF8_REJECT, "state and return disagree");
  if (cut > n) cut = n;
  uint32_t s2 = WSY_UTF8_ACCEPT;
  int r1 = wsy_utf8_feed(&s2, s, cut);
  int r2 = wsy_utf8_feed(&s2, s + cut, n - cut);
  cr_assert_eq(r2, rc, "split at %zu of %zu changes the result", cut, n);
  cr_assert_eq(s2, st, "split at %zu of %zu changes the state", cut, n);
  if (r1 != WSY_OK) cr_assert_eq(r2, WSY_BAD_UTF8, "rejection not sticky");
}

/* ---- vectors --------------------------------------------------------------------- */

Test(utf8, valid_vectors) {
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
    cr_assert_eq(wsy_utf8_scan((const uint8_t *)ok[i], n, NULL, NULL), WSY_OK, "vector %zu rejected", i);
    uint32_t st = WSY_UTF8_ACCEPT;
    cr_assert_eq(wsy_utf8_feed(&st, (const uint8_t *)ok[i], n), WSY_OK);
    cr_assert(wsy_utf8_complete(st), "vector %zu incomplete", i);
  }
  /* NUL is a valid code point: the validator counts bytes, not C strings. */
  cr_assert_eq(wsy_utf8_scan((const uint8_t *)"a\0b", 3, NULL, NULL), WSY_OK);
}

Test(utf8, invalid_vectors) {
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
    cr_assert_eq(wsy_utf8_scan(s, bad[i].n, NULL, NULL), WSY_BAD_UTF8, "vector %zu accepted", i);
    uint32_t st = WSY_UTF8_ACCEPT;
    cr_assert_eq(wsy_utf8_feed(&st, s, bad[i].n), WSY_BAD_UTF8, "vector %zu fed OK", i);
    cr_assert_eq(st, WSY_UTF8_REJECT);
  }
}

Test(utf8, truncated_sequence_is_incomplete_not_rejected) {
  static const char *cut[] = {"\xc3", "\xe2", "\xe2\x82", "\xf0", "\xf0\x9f", "\xf0\x9f\x98",
                              "abc\xf4\x8f\xbf", "\xed\x9f", "\xee"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(cut); i++) {
    const uint8_t *s = (const uint8_t *)cut[i];
    size_t n = strlen(cut[i]);
    cr_assert_eq(wsy_utf8_scan(s, n, NULL, NULL), WSY_BAD_UTF8, "truncated %zu valid", i);
    uint32_t st = WSY_UTF8_ACCEPT;
    cr_assert_eq(wsy_utf8_feed(&st, s, n), WSY_OK, "truncated %zu rejected early", i);
    cr_assert(!wsy_utf8_complete(st));
    cr_assert_neq(st, WSY_UTF8_REJECT);
  }
}

Test(utf8, bad_first_continuation_fails_at_once) {
  /* The second byte already rules these out; feed must say so before the
   * sequence is complete (a text frame fails fast). */
  static const char *early[] = {"\xe0\x80", "\xe0\x9f", "\xed\xa0", "\xed\xbf", "\xf0\x80",
                                "\xf0\x8f", "\xf4\x90", "\xf4\xbf"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(early); i++) {
    uint32_t st = WSY_UTF8_ACCEPT;
    cr_assert_eq(wsy_utf8_feed(&st, (const uint8_t *)early[i], 2), WSY_BAD_UTF8, "case %zu", i);
  }
}

Test(utf8, rejection_is_sticky) {
  uint32_t st = WSY_UTF8_ACCEPT;
  cr_assert_eq(wsy_utf8_feed(&st, (const uint8_t *)"\xff", 1), WSY_BAD_UTF8);
  cr_assert_eq(wsy_utf8_feed(&st, (const uint8_t *)"fine", 4), WSY_BAD_UTF8);
  cr_assert_eq(wsy_utf8_feed(&st, (const uint8_t *)"", 0), WSY_BAD_UTF8);
  cr_assert_eq(st, WSY_UTF8_REJECT);
  cr_assert(!wsy_utf8_complete(st));
}

Test(utf8, empty_feed_keeps_state) {
  uint32_t st = WSY_UTF8_ACCEPT;
  cr_assert_eq(wsy_utf8_feed(&st, (const uint8_t *)"\xf0\x9f", 2), WSY_OK);
  uint32_t before = st;
  cr_assert_eq(wsy_utf8_feed(&st, NULL, 0), WSY_OK);
  cr_assert_eq(st, before);
  cr_assert_eq(wsy_utf8_feed(&st, (const uint8_t *)"\x98\x80", 2), WSY_OK);
  cr_assert(wsy_utf8_complete(st));
  cr_assert_eq(wsy_utf8_scan(NULL, 0, NULL, NULL), WSY_OK);
}

Test(utf8, bad_byte_at_every_offset_of_ascii_run) {
  /* The validator skips ASCII eight bytes at a time: a bad byte anywhere in
   * or after such a run, at any alignment, must still be seen. */
  uint8_t space[64 + 8];
  for (size_t align = 0; align < 8; align++) {
    for (size_t n = 1; n <= 64; n++) {
      for (size_t bad = 0; bad < n; bad++) {
        uint8_t *s = space + align;
        memset(s, 'a', n);
        s[bad] = 0x80;
        cr_assert_eq(wsy_utf8_scan(s, n, NULL, NULL), WSY_BAD_UTF8, "align %zu n %zu bad at %zu", align, n, bad);
        s[bad] = 0xc3; /* a lead byte followed by ASCII (or by the end) */
        cr_assert_eq(wsy_utf8_scan(s, n, NULL, NULL), WSY_BAD_UTF8, "lead at %zu of %zu", bad, n);
        if (bad + 1 < n) {
          s[bad + 1] = 0xa9;
          cr_assert_eq(wsy_utf8_scan(s, n, NULL, NULL), WSY_OK, "é at %zu of %zu", bad, n);
        }
      }
    }
  }
}

/* Each boundary of RFC 3629, on both sides, with its counts. */
Test(utf8, every_boundary_both_sides_with_counts) {
  static const struct {
    const char *s;
    size_t n;
    int ok;
    size_t cps, units;
  } v[] = {
#define V(lit, ok, cps, units) {lit, sizeof lit - 1, ok, cps, units}
    V("\x7f", 1, 1, 1),                  /* U+007F, the last 1-byte */
    V("\xc2\x80", 1, 1, 1),              /* U+0080, the first 2-byte */
    V("\xc1\xbf", 0, 0, 0),              /* U+007F as 2 bytes */
    V("\xdf\xbf", 1, 1, 1),              /* U+07FF, the last 2-byte */
    V("\xe0\xa0\x80", 1, 1, 1),          /* U+0800, the first 3-byte */
    V("\xe0\x9f\xbf", 0, 0, 0),          /* U+07FF as 3 bytes */
    V("\xed\x9f\xbf", 1, 1, 1),          /* U+D7FF, before the surrogates */
    V("\xed\xa0\x80", 0, 0, 0),          /* U+D800, the first surrogate */
    V("\xed\xbf\xbf", 0, 0, 0),          /* U+DFFF, the last surrogate */
    V("\xee\x80\x80", 1, 1, 1),          /* U+E000, after them */
    V("\xef\xbf\xbf", 1, 1, 1),          /* U+FFFF, the last 3-byte: one unit */
    V("\xf0\x90\x80\x80", 1, 1, 2),      /* U+10000, the first 4-byte: two units */
    V("\xf0\x8f\xbf\xbf", 0, 0, 0),      /* U+FFFF as 4 bytes */
    V("\xf4\x8f\xbf\xbf", 1, 1, 2),      /* U+10FFFF, the last code point */
    V("\xf4\x90\x80\x80", 0, 0, 0),      /* U+110000 */
    V("a\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",
      1, 10, 12),                        /* all the valid ones in a row */
#undef V
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(v); i++) {
    const uint8_t *p = (const uint8_t *)v[i].s;
    size_t cps = 99, units = 99;
    cr_assert_eq(wsy_utf8_scan(p, v[i].n, &cps, &units), v[i].ok ? WSY_OK : WSY_BAD_UTF8, "vector %zu", i);
    cr_assert_eq(cps, v[i].ok ? v[i].cps : 99, "vector %zu: %zu code points", i, cps);
    cr_assert_eq(units, v[i].ok ? v[i].units : 99, "vector %zu: %zu units", i, units);
    /* Either count alone. */
    cps = units = 99;
    cr_assert_eq(wsy_utf8_scan(p, v[i].n, &cps, NULL), v[i].ok ? WSY_OK : WSY_BAD_UTF8);
    cr_assert_eq(wsy_utf8_scan(p, v[i].n, NULL, &units), v[i].ok ? WSY_OK : WSY_BAD_UTF8);
    cr_assert_eq(cps, v[i].ok ? v[i].cps : 99);
    cr_assert_eq(units, v[i].ok ? v[i].units : 99);
    uint32_t st = WSY_UTF8_ACCEPT;
    cr_assert_eq(wsy_utf8_feed(&st, p, v[i].n), v[i].ok ? WSY_OK : WSY_BAD_UTF8, "vector %zu fed", i);
    cr_assert_eq(wsy_utf8_complete(st), v[i].ok);
  }
}

/* C0 and C1 can only start overlongs, F5..FF only values above U+10FFFF or
 * forms RFC 3629 removed: refused as the lead arrives, whatever follows. */
Test(utf8, c0_c1_and_f5_to_ff_leads_refused_at_once) {
  static const uint8_t leads[] = {0xc0, 0xc1, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff};
  for (size_t i = 0; i < sizeof leads; i++) {
    for (unsigned c = 0x80; c <= 0xbf; c++) {
      uint8_t s[6] = {'x', leads[i], (uint8_t)c, 0x80, 0x80, 0x80};
      for (size_t n = 2; n <= sizeof s; n++)
        cr_assert_eq(wsy_utf8_scan(s, n, NULL, NULL), WSY_BAD_UTF8, "%02x %02x, %zu bytes", leads[i], c, n);
    }
    uint32_t st = WSY_UTF8_ACCEPT;
    cr_assert_eq(wsy_utf8_feed(&st, (const uint8_t *)"ok", 2), WSY_OK);
    cr_assert_eq(wsy_utf8_feed(&st, &leads[i], 1), WSY_BAD_UTF8, "lead %02x alone", leads[i]);
    cr_assert_eq(st, WSY_UTF8_REJECT);
  }
}

/* A continuation byte where a code point should start: first, after ASCII
 * (in and after an eight-byte run), after a complete sequence, one too many. */
Test(utf8, lone_continuation_bytes_refused) {
  static const char *before[] = {"", "a", "abcdefgh", "abcdefghi", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
  for (unsigned c = 0x80; c <= 0xbf; c++) {
    for (size_t i = 0; i < WSY_ARRAY_LEN(before); i++) {
      uint8_t s[16];
      size_t n = strlen(before[i]);
      memcpy(s, before[i], n);
      s[n++] = (uint8_t)c;
      cr_assert_eq(wsy_utf8_scan(s, n, NULL, NULL), WSY_BAD_UTF8, "%02x after \"%s\"", c, before[i]);
      uint32_t st = WSY_UTF8_ACCEPT;
      cr_assert_eq(wsy_utf8_feed(&st, s, n), WSY_BAD_UTF8);
      s[n++] = 'z'; /* what follows does not matter */
      cr_assert_eq(wsy_utf8_scan(s, n, NULL, NULL), WSY_BAD_UTF8);
    }
  }
}

/* Every code point of every length, cut before its last byte at the end of
 * the input, alone and after ASCII runs of 0..17 bytes: the scan refuses it,
 * the feed keeps it open, and the missing bytes complete it. */
Test(utf8, sequences_cut_at_the_end) {
  static const uint32_t cps[] = {0x80, 0x7ff, 0x800, 0xd7ff, 0xe000, 0xffff, 0x10000, 0x10ffff, 0x1f600};
  uint8_t s[32];
  for (size_t i = 0; i < WSY_ARRAY_LEN(cps); i++) {
    for (size_t run = 0; run < 18; run++) {
      memset(s, 'a', run);
      size_t len = encode(cps[i], s + run);
      for (size_t keep = 1; keep < len; keep++) {
        size_t n = run + keep;
        cr_assert_eq(wsy_utf8_scan(s, n, NULL, NULL), WSY_BAD_UTF8, "U+%04X cut to %zu after %zu", cps[i], keep, run);
        uint32_t st = WSY_UTF8_ACCEPT;
        cr_assert_eq(wsy_utf8_feed(&st, s, n), WSY_OK);
        cr_assert(!wsy_utf8_complete(st));
        cr_assert_eq(wsy_utf8_feed(&st, s + n, len - keep), WSY_OK);
        cr_assert(wsy_utf8_complete(st), "U+%04X cut to %zu after %zu not completed", cps[i], keep, run);
      }
    }
  }
}

/* Counts on mixed text: ASCII, 2-, 3- and 4-byte sequences, a NUL. */
Test(utf8, counts_code_points_and_utf16_units) {
  static const struct {
    const char *s;
    size_t n, cps, units;
  } v[] = {
#define V(lit, cps, units) {lit, sizeof lit - 1, cps, units}
    V("", 0, 0),
    V("a\0b", 3, 3),
    V("caf\xc3\xa9", 4, 4),
    V("\xe4\xb8\xad\xe6\x96\x87", 2, 2),                                  /* 中文 */
    V("\xf0\x9f\x98\x80", 1, 2),                                          /* 😀 */
    V("a\xf0\x9f\x98\x80" "b", 3, 4),
    V("\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7", 5, 8), /* 👩‍👩‍👧 */
    V("{\"t\":\"na\xc3\xafve \xe2\x82\xac 12 \xf0\x9d\x84\x9e clef, \xf0\x9f\x98\x80\xf0\x9f\x98\x80!\"}", 30, 33),
#undef V
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(v); i++) {
    size_t cps = 99, units = 99;
    cr_assert_eq(wsy_utf8_scan((const uint8_t *)v[i].s, v[i].n, &cps, &units), WSY_OK, "vector %zu", i);
    cr_assert_eq(cps, v[i].cps, "vector %zu: %zu code points", i, cps);
    cr_assert_eq(units, v[i].units, "vector %zu: %zu units", i, units);
  }
}

/* The fast path takes ASCII eight bytes at a time: a sequence of each length
 * placed after ASCII runs of 0..24 bytes, followed by runs of 0..17, at
 * every alignment, is accepted and counted; a bad byte in its place is seen. */
Test(utf8, ascii_runs_around_eight_bytes) {
  static const char *seqs[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
  uint8_t space[8 + 24 + 4 + 17];
  for (size_t align = 0; align < 8; align++) {
    uint8_t *s = space + align;
    for (size_t k = 0; k < WSY_ARRAY_LEN(seqs); k++) {
      size_t len = strlen(seqs[k]);
      for (size_t pre = 0; pre <= 24; pre++) {
        for (size_t post = 0; post <= 17; post++) {
          memset(s, 'q', pre);
          memcpy(s + pre, seqs[k], len);
          memset(s + pre + len, 'r', post);
          size_t n = pre + len + post, cps = 0, units = 0;
          cr_assert_eq(wsy_utf8_scan(s, n, &cps, &units), WSY_OK, "align %zu seq %zu at %zu+%zu", align, k, pre, post);
          cr_assert_eq(cps, pre + 1 + post);
          cr_assert_eq(units, pre + (len == 4 ? 2 : 1) + post);
          s[pre + len - 1] = 'x'; /* cut short: a lead, then ASCII */
          cr_assert_eq(wsy_utf8_scan(s, n, NULL, NULL), WSY_BAD_UTF8, "align %zu seq %zu at %zu", align, k, pre);
          s[pre + len - 1] = 0xff;
          cr_assert_eq(wsy_utf8_scan(s, n, NULL, NULL), WSY_BAD_UTF8);
        }
      }
    }
  }
}

/* ---- exhaustive and random ------------------------------------------------------- */

Test(utf8, every_code_point_whole_and_split_at_every_position) {
  uint8_t b[4];
  for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    size_t n = encode(cp, b);
    if (wsy_utf8_scan(b, n, NULL, NULL) != WSY_OK) cr_assert_fail("U+%04X rejected", cp);
    for (size_t k = 1; k < n; k++) {
      uint32_t st = WSY_UTF8_ACCEPT;
      int r1 = wsy_utf8_feed(&st, b, k);
      int c1 = wsy_utf8_complete(st);
      int r2 = wsy_utf8_feed(&st, b + k, n - k);
      if (r1 != WSY_OK || c1 || r2 != WSY_OK || !wsy_utf8_complete(st))
        cr_assert_fail("U+%04X split at %zu: %d %d %d", cp, k, r1, c1, r2);
    }
  }
  /* Surrogates encoded as if they were code points are all refused. */
  for (uint32_t cp = 0xd800; cp <= 0xdfff; cp++) {
    size_t n = encode(cp, b);
    if (wsy_utf8_scan(b, n, NULL, NULL) != WSY_BAD_UTF8) cr_assert_fail("surrogate U+%04X accepted", cp);
  }
  /* Beyond U+10FFFF, in the 4-byte form. */
  for (uint32_t cp = 0x110000; cp <= 0x1fffff; cp += 0x1001) {
    size_t n = encode(cp, b);
    if (wsy_utf8_scan(b, n, NULL, NULL) != WSY_BAD_UTF8) cr_assert_fail("U+%X accepted", cp);
  }
}

Test(utf8, every_overlong_encoding_refused) {
  uint8_t b[4];
  for (uint32_t cp = 0; cp < 0x80; cp++) { /* as 2 bytes */
    b[0] = (uint8_t)(0xc0 | cp >> 6);
    b[1] = (uint8_t)(0x80 | (cp & 0x3f));
    cr_assert_eq(wsy_utf8_scan(b, 2, NULL, NULL), WSY_BAD_UTF8, "overlong 2-byte U+%04X", cp);
  }
  for (uint32_t cp = 0; cp < 0x800; cp++) { /* as 3 bytes */
    b[0] = 0xe0;
    b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    b[2] = (uint8_t)(0x80 | (cp & 0x3f));
    cr_assert_eq(wsy_utf8_scan(b, 3, NULL, NULL), WSY_BAD_UTF8, "overlong 3-byte U+%04X", cp);
  }
  for (uint32_t cp = 0; cp < 0x10000; cp += 7) { /* as 4 bytes */
    b[0] = 0xf0;
    b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    b[3] = (uint8_t)(0x80 | (cp & 0x3f));
    cr_assert_eq(wsy_utf8_scan(b, 4, NULL, NULL), WSY_BAD_UTF8, "overlong 4-byte U+%04X", cp);
  }
}

Test(utf8, all_strings_up_to_two_bytes_match_reference) {
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

/* Every string of one, two and three bytes: the verdict of both forms and
 * the counts, against the reference. */
Test(utf8, every_string_up_to_three_bytes_matches_reference) {
  uint8_t s[3];
  for (uint32_t v = 0; v < (1u << 24); v++) {
    s[0] = (uint8_t)(v >> 16);
    s[1] = (uint8_t)(v >> 8);
    s[2] = (uint8_t)v;
    /* The 1- and 2-byte strings are the prefixes of the 3-byte ones: each
     * is checked once, with the bytes after it zero. */
    for (size_t n = 1; n <= 3; n++) {
      if ((n == 1 && (v & 0xffff)) || (n == 2 && (v & 0xff))) continue;
      size_t rcps = 0, runits = 0, cps = 0, units = 0;
      int ref = ref_check_counts(s, n, &rcps, &runits);
      int rc = wsy_utf8_scan(s, n, &cps, &units);
      uint32_t st = WSY_UTF8_ACCEPT;
      int rf = wsy_utf8_feed(&st, s, n);
      if ((rc == WSY_OK) != (ref == 1) || (rf == WSY_OK) != (ref >= 0) ||
          (rf == WSY_OK && wsy_utf8_complete(st)) != (ref == 1) ||
          (ref == 1 && (cps != rcps || units != runits)))
        cr_assert_fail("%zu bytes %02x %02x %02x: ref %d, scan %d, feed %d, counts %zu %zu", n, s[0], s[1],
                       s[2], ref, rc, rf, cps, units);
    }
  }
}

/* Every four-byte string whose first byte is F0..F4 (the 4-byte leads, and
 * everything after them: continuations, ASCII, other leads). Such a string
 * is never a valid prefix cut short, so the scan's verdict says it all. */
Test(utf8, every_four_byte_string_with_lead_f0_to_f4_matches_reference) {
  uint8_t s[4];
  size_t valid = 0;
  for (unsigned lead = 0xf0; lead <= 0xf4; lead++) {
    s[0] = (uint8_t)lead;
    for (uint32_t v = 0; v < (1u << 24); v++) {
      s[1] = (uint8_t)(v >> 16);
      s[2] = (uint8_t)(v >> 8);
      s[3] = (uint8_t)v;
      size_t rcps = 0, runits = 0, cps = 0, units = 0;
      int ref = ref_check_counts(s, 4, &rcps, &runits);
      int rc = wsy_utf8_scan(s, 4, &cps, &units);
      if ((rc == WSY_OK) != (ref == 1) || (ref == 1 && (cps != rcps || units != runits)))
        cr_assert_fail("%02x %02x %02x %02x: ref %d, scan %d, counts %zu %zu", s[0], s[1], s[2], s[3], ref, rc,
                       cps, units);
      valid += rc == WSY_OK;
    }
  }
  /* Exactly the code points U+10000..U+10FFFF, each once. */
  cr_assert_eq(valid, 0x100000);
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

Test(utf8, random_strings_match_reference) {
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

Test(utf8, byte_at_a_time_equals_whole) {
  rng = 0x1234567887654321ull;
  uint8_t s[40];
  for (int iter = 0; iter < 20000; iter++) {
    size_t n = rnd() % sizeof s;
    for (size_t i = 0; i < n; i++) s[i] = rnd() % 3 ? rnd_byte() : (uint8_t)('a' + rnd() % 26);
    uint32_t whole = WSY_UTF8_ACCEPT, bytes = WSY_UTF8_ACCEPT;
    int rw = wsy_utf8_feed(&whole, s, n), rb = WSY_OK;
    for (size_t i = 0; i < n; i++) rb = wsy_utf8_feed(&bytes, s + i, 1);
    cr_assert_eq(rb, rw);
    cr_assert_eq(bytes, whole);
  }
}

/* Random text cut into 1..8 pieces at random places, each piece its own
 * exact-size copy (so a read past a piece is caught under ASan): the state
 * after each piece is the state after the whole prefix, and the end agrees
 * with one scan. */
Test(utf8, random_pieces_equal_one_call) {
  rng = 0x9e3779b97f4a7c15ull;
  uint8_t s[64];
  int valid = 0;
  for (int iter = 0; iter < 20000; iter++) {
    size_t n = 0;
    while (n < sizeof s - 4) { /* mostly valid text with ASCII runs, sometimes damaged */
      uint32_t r = rnd() % 8;
      if (r < 4) s[n++] = (uint8_t)('a' + rnd() % 26);
      else if (r < 7) {
        uint32_t cp = rnd() % 0x110000;
        if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xe9;
        n += encode(cp, s + n);
      } else if (rnd() % 4 == 0) s[n++] = rnd_byte();
      if (rnd() % 16 == 0) break;
    }
    size_t cuts[9], ncut = 1 + rnd() % 8;
    for (size_t k = 0; k + 1 < ncut; k++) cuts[k] = n ? rnd() % (n + 1) : 0;
    cuts[ncut - 1] = n;
    for (size_t a = 0; a < ncut; a++) /* sorted, so pieces follow each other */
      for (size_t b = a + 1; b < ncut; b++)
        if (cuts[b] < cuts[a]) {
          size_t t = cuts[a];
          cuts[a] = cuts[b];
          cuts[b] = t;
        }
    uint32_t st = WSY_UTF8_ACCEPT;
    size_t at = 0;
    int rc = WSY_OK;
    for (size_t k = 0; k < ncut; k++) {
      size_t len = cuts[k] - at;
      uint8_t *piece = malloc(len ? len : 1);
      memcpy(piece, s + at, len);
      rc = wsy_utf8_feed(&st, piece, len);
      free(piece);
      at = cuts[k];
      uint32_t one = WSY_UTF8_ACCEPT;
      int r1 = wsy_utf8_feed(&one, s, at);
      cr_assert(rc == r1 && st == one, "iter %d: after %zu of %zu bytes in %zu pieces", iter, at, n, k + 1);
    }
    int whole = wsy_utf8_scan(s, n, NULL, NULL);
    cr_assert_eq(rc == WSY_OK && wsy_utf8_complete(st), whole == WSY_OK, "iter %d", iter);
    valid += whole == WSY_OK;
  }
  cr_assert(valid > 2000 && valid < 18000, "%d of 20000 valid: the generator says little", valid);
}
