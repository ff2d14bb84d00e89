/* utf8.c -- incremental UTF-8 validation (RFC 3629 ranges).
 *
 * The state packs what the next bytes must be: bits 0-1 hold how many
 * continuation bytes are still expected, bits 8-15 the lowest and bits 16-23
 * the highest value allowed for the very next one. Only the first
 * continuation byte has a narrowed range (that is where overlongs, surrogates
 * and values above U+10FFFF are excluded); later ones are always 80..BF. */
#include "ws.h"

#include <string.h>

#define ST(need, lo, hi) ((uint32_t)(need) | ((uint32_t)(lo) << 8) | ((uint32_t)(hi) << 16))

static uint32_t lead(uint8_t b) {
  if (b < 0x80) return WS_UTF8_ACCEPT;
  if (b >= 0xC2 && b <= 0xDF) return ST(1, 0x80, 0xBF);
  if (b == 0xE0) return ST(2, 0xA0, 0xBF);            /* no overlong 3-byte */
  if (b == 0xED) return ST(2, 0x80, 0x9F);            /* no surrogates */
  if (b >= 0xE1 && b <= 0xEF) return ST(2, 0x80, 0xBF);
  if (b == 0xF0) return ST(3, 0x90, 0xBF);            /* no overlong 4-byte */
  if (b >= 0xF1 && b <= 0xF3) return ST(3, 0x80, 0xBF);
  if (b == 0xF4) return ST(3, 0x80, 0x8F);            /* <= U+10FFFF */
  return WS_UTF8_REJECT;                               /* 80..C1, F5..FF */
}

int ws_utf8_feed(uint32_t *state, const uint8_t *p, size_t n) {
  uint32_t s = *state;
  if (s == WS_UTF8_REJECT) return WSY_BAD_UTF8;
  size_t i = 0;
  while (i < n) {
    if (s == WS_UTF8_ACCEPT) {
      /* ASCII runs are the common case: skip them eight bytes at a time. */
      while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w & 0x8080808080808080ull) break;
        i += 8;
      }
      if (i == n) break;
      s = lead(p[i++]);
      if (s == WS_UTF8_REJECT) break;
      continue;
    }
    uint8_t b = p[i++];
    uint8_t lo = (uint8_t)(s >> 8), hi = (uint8_t)(s >> 16);
    if (b < lo || b > hi) {
      s = WS_UTF8_REJECT;
      break;
    }
    uint32_t need = (s & 3u) - 1;
    s = need ? ST(need, 0x80, 0xBF) : WS_UTF8_ACCEPT;
  }
  *state = s;
  return s == WS_UTF8_REJECT ? WSY_BAD_UTF8 : WSY_OK;
}

int ws_utf8_valid(const uint8_t *p, size_t n) {
  uint32_t s = WS_UTF8_ACCEPT;
  if (ws_utf8_feed(&s, p, n) != WSY_OK || !ws_utf8_complete(s)) return WSY_BAD_UTF8;
  return WSY_OK;
}
