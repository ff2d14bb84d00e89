/* utf8.c -- libFuzzer target for the UTF-8 validator (src/common/utf8.c).
 *
 * The validator is compared with a slow reference written here from RFC 3629
 * (decode each code point, then reject overlongs, surrogates and values above
 * U+10FFFF), which says for every prefix of the input whether it is invalid,
 * a valid prefix that ends inside a code point, or complete, and counts the
 * code points and UTF-16 code units of the whole. Checked:
 *  - wsy_utf8_scan(whole) agrees with the reference, and so do its counts
 *    (and it writes none when it refuses);
 *  - fed in 2-3 pieces cut at data-derived offsets, every intermediate result
 *    (WSY_OK means "still a valid prefix") and the final complete state agree;
 *  - fed a byte at a time, the state after every byte agrees, and once
 *    rejected stays rejected;
 *  - the result does not depend on the buffer's alignment (the validator
 *    reads eight bytes at a time).
 *
 * Run: make build-fuzz/utf8 && build-fuzz/utf8 fuzz/corpus/utf8 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/common/utf8.h"

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "utf8 fuzz: check failed at line %d: %s\n", __LINE__, #cond); \
      __builtin_trap();                                                          \
    }                                                                            \
  } while (0)

enum { BAD = 0, PARTIAL = 1, COMPLETE = 2 };

/* True when some code point of a len-byte sequence lies in [lo, hi]. */
static int range_ok(int len, uint32_t lo, uint32_t hi) {
  uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
  uint32_t max = len == 2 ? 0x7ff : len == 3 ? 0xffff : 0x10ffff;
  if (lo < min) lo = min;
  if (hi > max) hi = max;
  if (lo > hi) return 0;
  /* Surrogates D800..DFFF: fine only if part of [lo, hi] lies outside them. */
  return lo < 0xd800 || hi > 0xdfff;
}

/* st[i] for i = 0..n: what the prefix p[0..i) is. When st[n] is COMPLETE,
 * *cps and *units are the code points and UTF-16 units of p[0..n). */
static void reference(const uint8_t *p, size_t n, uint8_t *st, size_t *cps, size_t *units) {
  size_t i = 0;
  *cps = *units = 0;
  st[0] = COMPLETE;
  while (i < n) {
    uint8_t b = p[i];
    int len;
    uint32_t cp;
    if (b < 0x80) {
      st[++i] = COMPLETE;
      ++*cps, ++*units;
      continue;
    } else if ((b & 0xe0) == 0xc0) {
      len = 2, cp = b & 0x1f;
    } else if ((b & 0xf0) == 0xe0) {
      len = 3, cp = b & 0x0f;
    } else if ((b & 0xf8) == 0xf0) {
      len = 4, cp = b & 0x07;
    } else {
      break; /* a stray continuation byte or F8..FF */
    }
    /* After k bytes of the sequence, the code point lies in [lo, hi]. */
    int k;
    for (k = 1; k <= len; k++) {
      if (k > 1) {
        if (i + k > n || (p[i + k - 1] & 0xc0) != 0x80) break;
        cp = (cp << 6) | (p[i + k - 1] & 0x3f);
      }
      if (i + k > n) break;
      unsigned rest = 6u * (unsigned)(len - k);
      uint32_t lo = cp << rest, hi = lo | ((1u << rest) - 1);
      if (!range_ok(len, lo, hi)) break;
      st[i + k] = k == len ? COMPLETE : PARTIAL;
    }
    if (k <= len) {
      /* Stopped early: out of input (done) or an invalid byte at i+k-1. */
      if (i + k > n) return;
      i += (size_t)k - 1;
      break;
    }
    i += (size_t)len;
    ++*cps;
    *units += cp > 0xffff ? 2 : 1;
  }
  for (; i < n; i++) st[i + 1] = BAD;
}

static int state_class(int rc, uint32_t state) {
  if (rc != WSY_OK) return BAD;
  return wsy_utf8_complete(state) ? COMPLETE : PARTIAL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *st = malloc(size + 1);
  size_t rcps, runits;
  reference(data, size, st, &rcps, &runits);

  /* One shot, at every alignment modulo 8. */
  size_t cps = SIZE_MAX, units = SIZE_MAX;
  int whole = wsy_utf8_scan(data, size, &cps, &units);
  CHECK(whole == WSY_OK || whole == WSY_BAD_UTF8);
  CHECK((whole == WSY_OK) == (st[size] == COMPLETE));
  if (whole == WSY_OK) CHECK(cps == rcps && units == runits);
  else CHECK(cps == SIZE_MAX && units == SIZE_MAX);
  uint8_t *shifted = malloc(size + 8);
  for (size_t off = 1; off < 8; off++) {
    memcpy(shifted + off, data, size);
    size_t c2 = SIZE_MAX, u2 = SIZE_MAX;
    CHECK(wsy_utf8_scan(shifted + off, size, &c2, &u2) == whole && c2 == cps && u2 == units);
  }
  free(shifted);

  /* Two or three pieces; each is its own exact-size copy. */
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 0x100000001b3ull;
  size_t cuts[3];
  cuts[0] = (size_t)(h % (size + 1));
  cuts[1] = (h >> 40) & 1 ? cuts[0] + (size_t)((h >> 16) % (size - cuts[0] + 1)) : cuts[0];
  cuts[2] = size;
  uint32_t s = WSY_UTF8_ACCEPT;
  size_t at = 0;
  for (int k = 0; k < 3; k++) {
    size_t len = cuts[k] - at;
    uint8_t *piece = malloc(len ? len : 1);
    memcpy(piece, data + at, len);
    int rc = wsy_utf8_feed(&s, piece, len);
    free(piece);
    at = cuts[k];
    CHECK(state_class(rc, s) == st[at]);
  }

  /* A byte at a time. */
  s = WSY_UTF8_ACCEPT;
  for (size_t i = 0; i < size; i++) {
    int rc = wsy_utf8_feed(&s, data + i, 1);
    if (state_class(rc, s) != st[i + 1]) {
      fprintf(stderr, "utf8 fuzz: after byte %zu (0x%02x): validator %d, reference %d\n", i,
              data[i], state_class(rc, s), st[i + 1]);
      __builtin_trap();
    }
    /* An empty feed changes nothing. */
    uint32_t s2 = s;
    CHECK(wsy_utf8_feed(&s2, data + i, 0) == rc && s2 == s);
  }

  free(st);
  return 0;
}
