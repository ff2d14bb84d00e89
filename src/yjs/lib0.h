/* lib0.h -- the lib0 binary encoding that Yjs and y-protocols are written in:
 * varuint, varint, var uint8array, var string (UTF-8), and the "any" value
 * format, read over a bounded reader and written into a growable ybuf.
 *
 * THE READER never reads past its end. Every read returns 0 or WSY_INVAL
 * (truncated input, a varuint above 2^53 - 1 as lib0 refuses, a length
 * prefix larger than what remains, invalid UTF-8 in a string, an "any" value
 * nested deeper than LIB0_ANY_MAX_DEPTH); on failure the reader's position is
 * unspecified and the caller abandons the input. A length prefix is checked
 * against the remaining input before anything is used, so it can never make
 * a caller allocate more than the input's size: views are borrowed, not
 * copied.
 *
 * THE WRITER (ybuf) is owned by the caller, starts zeroed ({0}) and is
 * released with ybuf_free(); writes return 0, WSY_NOMEM (growth failed, the
 * buffer keeps its old bytes) or WSY_TOO_LARGE (past LIB0_MAX_OUTPUT).
 *
 * Loop thread or any thread: no state outside the reader and the buffer.
 * Uses src/common only. */
#ifndef WSY_LIB0_H
#define WSY_LIB0_H

#include <stddef.h>
#include <stdint.h>

#include "../common/wsy.h"

#define LIB0_MAX_SAFE 9007199254740991ULL /* 2^53 - 1: JavaScript's integers */
#define LIB0_ANY_MAX_DEPTH 64             /* nesting of any arrays/objects */
#define LIB0_MAX_OUTPUT ((size_t)1 << 31) /* 2 GiB: no update we write is larger */

/* A bounded reader: p[pos..len) is what remains. Borrowed bytes. */
typedef struct lib0_rd {
  const uint8_t *p;
  size_t len, pos;
} lib0_rd;

static inline void lib0_rd_init(lib0_rd *r, const uint8_t *p, size_t n) {
  r->p = p;
  r->len = n;
  r->pos = 0;
}
static inline size_t lib0_rd_left(const lib0_rd *r) { return r->len - r->pos; }

int lib0_read_u8(lib0_rd *r, uint8_t *v) WSY_WUR;
/* Unsigned LEB128 as lib0 writes it, at most 2^53 - 1. */
int lib0_read_varuint(lib0_rd *r, uint64_t *v) WSY_WUR;
/* lib0's signed varint: first byte = continue bit, sign bit, 6 value bits;
 * then 7 value bits per byte. Magnitude at most 2^53 - 1. */
int lib0_read_varint(lib0_rd *r, int64_t *v) WSY_WUR;
/* A varuint length then that many bytes: *p points into the reader's input. */
int lib0_read_varbytes(lib0_rd *r, const uint8_t **p, size_t *n) WSY_WUR;
/* The same, and the bytes must be valid UTF-8 (no surrogates, no overlongs:
 * what a JavaScript TextEncoder produces). *units (may be NULL) gets the
 * string's length in UTF-16 code units, JavaScript's String.length. */
int lib0_read_varstring(lib0_rd *r, const uint8_t **p, size_t *n, size_t *units) WSY_WUR;
/* Skips one lib0 "any" value (type byte 116..127), checking it whole. */
int lib0_skip_any(lib0_rd *r) WSY_WUR;

/* Byte offset in valid UTF-8 s[0..n) of UTF-16 unit offset `unit`. When the
 * offset falls between the two halves of a surrogate pair (inside a 4-byte
 * sequence), returns the offset of that sequence and sets *split = 1. */
size_t lib0_utf8_offset(const uint8_t *s, size_t n, size_t unit, int *split);

/* Output buffer, owned by the caller; {0} is an empty buffer. */
typedef struct ybuf {
  uint8_t *p;
  size_t len, cap;
} ybuf;
void ybuf_free(ybuf *b);
/* Room for n more bytes (0, WSY_NOMEM, WSY_TOO_LARGE). */
int ybuf_reserve(ybuf *b, size_t n) WSY_WUR;

int lib0_write_u8(ybuf *b, uint8_t v) WSY_WUR;
int lib0_write_bytes(ybuf *b, const void *p, size_t n) WSY_WUR;
int lib0_write_varuint(ybuf *b, uint64_t v) WSY_WUR;
int lib0_write_varint(ybuf *b, int64_t v) WSY_WUR;
/* varuint length + bytes: lib0's writeVarUint8Array and, for UTF-8, writeVarString. */
int lib0_write_varbytes(ybuf *b, const void *p, size_t n) WSY_WUR;

#endif
