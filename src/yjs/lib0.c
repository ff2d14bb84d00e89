/* lib0.c -- lib0 encoding: bounded reads, growable writes (lib0.h). */
#include "lib0.h"

#include <string.h>

#include "../common/utf8.h"

int lib0_read_u8(lib0_rd *r, uint8_t *v) {
  if (r->pos >= r->len) return WSY_INVAL;
  *v = r->p[r->pos++];
  return 0;
}

int lib0_read_varuint(lib0_rd *r, uint64_t *v) {
  uint64_t num = 0;
  /* 8 bytes carry 56 bits: past that the value is above 2^53 anyway. */
  for (unsigned shift = 0; shift < 63 && r->pos < r->len; shift += 7) {
    uint8_t b = r->p[r->pos++];
    num |= (uint64_t)(b & 0x7f) << shift;
    if (num > LIB0_MAX_SAFE) return WSY_INVAL;
    if (b < 0x80) {
      *v = num;
      return 0;
    }
  }
  return WSY_INVAL;
}

int lib0_read_varint(lib0_rd *r, int64_t *v) {
  uint8_t b;
  if (lib0_read_u8(r, &b)) return WSY_INVAL;
  uint64_t num = b & 0x3f;
  int neg = (b & 0x40) != 0;
  for (unsigned shift = 6; b >= 0x80; shift += 7) {
    if (shift > 56 || lib0_read_u8(r, &b)) return WSY_INVAL;
    num |= (uint64_t)(b & 0x7f) << shift;
    if (num > LIB0_MAX_SAFE) return WSY_INVAL;
  }
  *v = neg ? -(int64_t)num : (int64_t)num;
  return 0;
}

int lib0_read_varbytes(lib0_rd *r, const uint8_t **p, size_t *n) {
  uint64_t len;
  if (lib0_read_varuint(r, &len) || len > lib0_rd_left(r)) return WSY_INVAL;
  *p = r->p + r->pos;
  *n = (size_t)len;
  r->pos += (size_t)len;
  return 0;
}

size_t lib0_utf8_offset(const uint8_t *s, size_t n, size_t unit, int *split) {
  size_t i = 0, u = 0;
  *split = 0;
  while (i < n && u < unit) {
    uint8_t c = s[i];
    size_t w = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (w == 4) {
      if (u + 1 == unit) {
        *split = 1;
        return i;
      }
      u += 2;
    } else {
      u++;
    }
    i += w;
  }
  return i;
}

int lib0_read_varstring(lib0_rd *r, const uint8_t **p, size_t *n, size_t *units) {
  if (lib0_read_varbytes(r, p, n)) return WSY_INVAL;
  return wsy_utf8_scan(*p, *n, NULL, units) == WSY_OK ? 0 : WSY_INVAL;
}

static int skip_any(lib0_rd *r, int depth) {
  uint8_t t;
  const uint8_t *p;
  size_t n;
  uint64_t count;
  int64_t iv;
  if (depth > LIB0_ANY_MAX_DEPTH || lib0_read_u8(r, &t)) return WSY_INVAL;
  switch (t) {
    case 127: /* undefined */
    case 126: /* null */
    case 121: /* false */
    case 120: /* true */
      return 0;
    case 125: return lib0_read_varint(r, &iv);
    case 124: n = 4; goto fixed; /* float32 */
    case 123: n = 8; goto fixed; /* float64 */
    case 122: n = 8; goto fixed; /* bigint64 */
    case 119: return lib0_read_varstring(r, &p, &n, NULL);
    case 116: return lib0_read_varbytes(r, &p, &n);
    case 118: /* object: count, then (key string, value) pairs */
    case 117: /* array: count, then values */
      if (lib0_read_varuint(r, &count) || count > lib0_rd_left(r)) return WSY_INVAL;
      for (uint64_t i = 0; i < count; i++) {
        if (t == 118 && lib0_read_varstring(r, &p, &n, NULL)) return WSY_INVAL;
        if (skip_any(r, depth + 1)) return WSY_INVAL;
      }
      return 0;
    default: return WSY_INVAL;
  }
fixed:
  if (lib0_rd_left(r) < n) return WSY_INVAL;
  r->pos += n;
  return 0;
}

int lib0_skip_any(lib0_rd *r) { return skip_any(r, 0); }

void ybuf_free(ybuf *b) {
  wsy_free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

int ybuf_reserve(ybuf *b, size_t n) {
  if (b->cap - b->len >= n) return 0;
  if (n > LIB0_MAX_OUTPUT - b->len) return WSY_TOO_LARGE;
  size_t cap = b->cap ? b->cap : 64;
  while (cap - b->len < n) cap *= 2;
  uint8_t *p = wsy_try_realloc(b->p, cap);
  if (!p) return WSY_NOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

int lib0_write_u8(ybuf *b, uint8_t v) {
  int rc = ybuf_reserve(b, 1);
  if (rc) return rc;
  b->p[b->len++] = v;
  return 0;
}

int lib0_write_bytes(ybuf *b, const void *p, size_t n) {
  int rc = ybuf_reserve(b, n);
  if (rc) return rc;
  if (n) memcpy(b->p + b->len, p, n);
  b->len += n;
  return 0;
}

int lib0_write_varuint(ybuf *b, uint64_t v) {
  int rc = ybuf_reserve(b, 10);
  if (rc) return rc;
  while (v >= 0x80) {
    b->p[b->len++] = (uint8_t)(0x80 | (v & 0x7f));
    v >>= 7;
  }
  b->p[b->len++] = (uint8_t)v;
  return 0;
}

int lib0_write_varint(ybuf *b, int64_t v) {
  int rc = ybuf_reserve(b, 10);
  if (rc) return rc;
  uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  b->p[b->len++] = (uint8_t)((m > 0x3f ? 0x80 : 0) | (v < 0 ? 0x40 : 0) | (m & 0x3f));
  m >>= 6;
  while (m > 0) {
    b->p[b->len++] = (uint8_t)((m > 0x7f ? 0x80 : 0) | (m & 0x7f));
    m >>= 7;
  }
  return 0;
}

int lib0_write_varbytes(ybuf *b, const void *p, size_t n) {
  int rc = lib0_write_varuint(b, n);
  return rc ? rc : lib0_write_bytes(b, p, n);
}
