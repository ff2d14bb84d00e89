/* jsonw.h -- compact JSON text from jansson values, and a small writer for
 * messages built by hand.
 *
 * Why not json_dumps(): the op path encodes every accepted op three or four
 * times (size check, the item for the store, the broadcast, the ack), and
 * jansson's encoder goes through a callback per fragment and snprintf per
 * number, which made it a quarter of the loop thread's CPU in bench (e).
 * jw_value() writes the very same bytes as json_dumps(v, JSON_COMPACT |
 * JSON_ENCODE_ANY) (checked by tests/unit/common/jsonw_test.c and the
 * sync_op fuzzer): members in insertion order, UTF-8 kept as is, control
 * characters, '"' and '\\' escaped the way jansson escapes them, reals
 * formatted by jansson itself.
 *
 * A jw is a growable string; it aborts on allocation failure like every
 * wsy_malloc. Values fed to it are bounded by the protocol's size limits. */
#ifndef WSY_JSONW_H
#define WSY_JSONW_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
  char *p;
  size_t len, cap;
} jw;

#define JW_INIT {NULL, 0, 0}

void jw_free(jw *w);
static inline void jw_reset(jw *w) { w->len = 0; }
void jw_grow(jw *w, size_t more);

static inline void jw_raw(jw *w, const char *s, size_t n) {
  if (w->cap - w->len < n + 1) jw_grow(w, n + 1);
  memcpy(w->p + w->len, s, n);
  w->len += n;
  w->p[w->len] = '\0';
}
/* A string literal, copied as is (it must already be JSON). Only a literal:
 * the length is its sizeof (a pointer would give 8), which the "" "" concatenation
 * below enforces at compile time. */
#define jw_lit(w, s) jw_raw((w), "" s "", sizeof(s) - 1)

void jw_str(jw *w, const char *s, size_t n); /* quoted and escaped */
static inline void jw_cstr(jw *w, const char *s) { jw_str(w, s, strlen(s)); }
void jw_int(jw *w, int64_t v);
void jw_value(jw *w, const json_t *v);

/* The text so far as a NUL-terminated string of malloc(), which the caller
 * frees with free(); the writer is left empty. */
char *jw_steal(jw *w);

/* Drop-in for json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY): free() it. */
char *jw_dumps(const json_t *v);
/* Its length, without keeping the text. Loop thread or not: no shared state. */
size_t jw_size(const json_t *v);

/* How many of the 8 bytes at s lead without one that needs an escape in a
 * JSON string (below 0x20, a quote, a backslash): 8 when none does, else
 * the index of the first that does. The three tests are exact for "some
 * byte is" (the "haszero" bit trick: a borrow starts only at a byte that
 * matches), and the lowest flagged byte of a little-endian word is the
 * first match; bytes from 0x80 up never match. Elsewhere 0 stands for
 * "look byte by byte". The writer copies such runs as they are, the reader
 * (jsonr.c) skips them. */
static inline unsigned jw_plain_prefix8(const char *s) {
  const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
  uint64_t x, q, b, m;
  memcpy(&x, s, 8);
  q = x ^ (ones * '"');
  b = x ^ (ones * '\\');
  m = (((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return m ? (unsigned)__builtin_ctzll(m) / 8 : 8;
#else
  return m ? 0 : 8;
#endif
}

#endif
