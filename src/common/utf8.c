/* utf8.c -- the UTF-8 validator (utf8.h): one loop for both forms.
 *
 * The state packs what the next bytes must be: bits 0-1 hold how many
 * continuation bytes are still expected, bits 8-15 the lowest and bits 16-23
 * the highest value allowed for the very next one. Only the first
 * continuation byte has a narrowed range (that is where overlongs, surrogates
 * and values above U+10FFFF are excluded); later ones are always 80..BF:
 *
 *   ACCEPT --lead--> need 1..3, [lo, hi] --cont--> need - 1, [80, BF] ... --> ACCEPT
 *   any --a byte out of range--> REJECT (sticky)
 *
 *   lead   E0     ED     E1..EC, EE, EF   F0     F1..F3   F4     C2..DF
 *   need   2      2      2                3      3        3      1
 *   range  A0-BF  80-9F  80-BF            90-BF  80-BF    80-8F  80-BF
 *
 * The loop walks that machine only where a code point is cut by the end of
 * the input (or was cut by the previous call's). Everywhere else it checks a
 * whole sequence at once, and skips ASCII sixteen and eight bytes at a time:
 * most text on the wire is ASCII (JSON syntax, ids), and this check runs
 * over every text message and every string in it. The word loops start only
 * at an ASCII byte, so text without ASCII (CJK) never pays for them. */
#include "utf8.h"

#include <string.h>

#define ST(need, lo, hi) ((uint32_t)(need) | ((uint32_t)(lo) << 8) | ((uint32_t)(hi) << 16))
#define NEED(s) ((s) & 3u)
#define LO(s) ((uint8_t)((s) >> 8))
#define HI(s) ((uint8_t)((s) >> 16))
#define HIGH_BITS 0x8080808080808080ull

/* Where the ASCII loops fall relative to the CPU's 32-byte fetch windows
 * changed their speed by up to 2x between two links of the same code: the
 * two entry points start on 64 bytes, so that every link runs the layout
 * that was measured. run() is inlined into both, so the counts stay in
 * registers and feed's vanish. */
#if defined(__GNUC__)
#define HOT __attribute__((aligned(64)))
#define INLINE __attribute__((always_inline)) inline
#else
#define HOT
#define INLINE inline
#endif

/* The state after a byte >= 0x80 in ACCEPT. */
static uint32_t lead(uint8_t b) {
  if (b >= 0xC2 && b <= 0xDF) return ST(1, 0x80, 0xBF);
  if (b == 0xE0) return ST(2, 0xA0, 0xBF);            /* no overlong 3-byte */
  if (b == 0xED) return ST(2, 0x80, 0x9F);            /* no surrogates */
  if (b >= 0xE1 && b <= 0xEF) return ST(2, 0x80, 0xBF);
  if (b == 0xF0) return ST(3, 0x90, 0xBF);            /* no overlong 4-byte */
  if (b >= 0xF1 && b <= 0xF3) return ST(3, 0x80, 0xBF);
  if (b == 0xF4) return ST(3, 0x80, 0x8F);            /* <= U+10FFFF */
  return WSY_UTF8_REJECT;                              /* 80..C1, F5..FF */
}

/* The state after continuation byte b in state s (not ACCEPT, not REJECT). */
static uint32_t cont(uint32_t s, uint8_t b) {
  if (b < LO(s) || b > HI(s)) return WSY_UTF8_REJECT;
  return NEED(s) > 1 ? ST(NEED(s) - 1, 0x80, 0xBF) : WSY_UTF8_ACCEPT;
}

/* Runs p[0..n) from state s and returns the state after it. *extra grows by
 * the continuation bytes and *four by the 4-byte sequences whose lead byte
 * is in p: for a whole valid buffer, code points are n - extra and UTF-16
 * units code points + four, with nothing counted on the ASCII path. */
static INLINE uint32_t run(uint32_t s, const uint8_t *p, size_t n, size_t *extra, size_t *four) {
  size_t i = 0;
  if (s == WSY_UTF8_REJECT) return s;
  while (s != WSY_UTF8_ACCEPT && i < n) /* a code point the last call cut */
    if ((s = cont(s, p[i++])) == WSY_UTF8_REJECT) return s;
  while (i < n) {
    if (p[i] < 0x80) { /* an ASCII run: 16, then 8 bytes at a time, then the rest */
      uint64_t w, v;
      for (; i + 16 <= n; i += 16) {
        memcpy(&w, p + i, 8);
        memcpy(&v, p + i + 8, 8);
        if ((w | v) & HIGH_BITS) break;
      }
      for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        if (w & HIGH_BITS) break;
      }
      while (i < n && p[i] < 0x80) i++;
      if (i == n) break;
    }
    s = lead(p[i++]);
    if (s == WSY_UTF8_REJECT) return s;
    size_t need = NEED(s);
    *extra += need;
    *four += need == 3;
    if (n - i < need) { /* cut by the end: the machine carries it */
      while (i < n)
        if ((s = cont(s, p[i++])) == WSY_UTF8_REJECT) return s;
      return s;
    }
    if (p[i] < LO(s) || p[i] > HI(s)) return WSY_UTF8_REJECT;
    for (size_t k = 1; k < need; k++)
      if ((p[i + k] & 0xC0) != 0x80) return WSY_UTF8_REJECT;
    i += need;
    s = WSY_UTF8_ACCEPT;
  }
  return s;
}

HOT int wsy_utf8_scan(const uint8_t *s, size_t n, size_t *cps, size_t *units) {
  size_t extra = 0, four = 0;
  if (run(WSY_UTF8_ACCEPT, s, n, &extra, &four) != WSY_UTF8_ACCEPT) return WSY_BAD_UTF8;
  if (cps) *cps = n - extra;
  if (units) *units = n - extra + four;
  return WSY_OK;
}

HOT int wsy_utf8_feed(uint32_t *state, const uint8_t *p, size_t n) {
  size_t extra = 0, four = 0; /* unused: counts are for whole buffers */
  *state = run(*state, p, n, &extra, &four);
  return *state == WSY_UTF8_REJECT ? WSY_BAD_UTF8 : WSY_OK;
}
