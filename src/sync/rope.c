/* rope.c -- a text field in chunks (rope.h).
 *
 * A flat table of chunks rather than a balanced tree: finding a code point
 * walks the table, one 24-byte record per ROPE_CHUNK bytes of text (256 of
 * them for 1 MiB), which costs less than the JSON parse of the op that asked
 * for it, and the structure stays simple enough to check by eye. Each chunk
 * owns a buffer of ROPE_CHUNK bytes, so inserting into a chunk with room is
 * a memmove inside it; one without room is cut into pieces of FILL bytes.
 * Deletes that leave two neighbours small merge them, so a long editing
 * session cannot leave a table of crumbs. */
#include "rope.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define FILL (ROPE_CHUNK * 3 / 4) /* bytes per chunk when text is cut into chunks */

typedef struct chunk {
  char *b;                /* ROPE_CHUNK bytes */
  uint32_t len, cps, esc; /* bytes used, code points, extra bytes JSON escaping adds */
} chunk;

struct rope {
  chunk *c;
  size_t n, cap;
  size_t bytes, cps, esc; /* sums over the chunks */
};

/* ---- byte-level helpers (valid UTF-8 assumed) --------------------------- */

static size_t seq_len(unsigned char b) { return b < 0xc0 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4; }

/* Bytes of the first n code points of s (all of s when it has fewer). */
static size_t cp_bytes(const char *s, size_t len, size_t n) {
  size_t i = 0;
  while (n > 0 && i < len) {
    i += seq_len((unsigned char)s[i]);
    n--;
  }
  return i < len ? i : len;
}

static size_t count_cps(const char *s, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) n += ((unsigned char)s[i] & 0xc0) != 0x80;
  return n;
}

/* What escaping adds inside a JSON string, as src/common/jsonw.c writes it:
 * \b \t \n \f \r \" \\ take one byte more, other controls five (\u00XX). */
static size_t count_esc(const char *s, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\' || c == '\b' || c == '\t' || c == '\n' || c == '\f' || c == '\r') n += 1;
    else if (c < 0x20) n += 5;
  }
  return n;
}

/* ---- the chunk table ----------------------------------------------------- */

/* Opens k empty slots at index at. */
static void table_open(rope *r, size_t at, size_t k) {
  if (r->n + k > r->cap) {
    size_t cap = r->cap ? r->cap : 8;
    while (cap < r->n + k) cap *= 2;
    r->c = wsy_realloc(r->c, cap * sizeof *r->c);
    r->cap = cap;
  }
  memmove(r->c + at + k, r->c + at, (r->n - at) * sizeof *r->c);
  r->n += k;
}

static void table_close(rope *r, size_t at) {
  wsy_free(r->c[at].b);
  memmove(r->c + at, r->c + at + 1, (r->n - at - 1) * sizeof *r->c);
  r->n--;
}

static void chunk_set(chunk *c, const char *s, size_t len) {
  c->b = wsy_malloc(ROPE_CHUNK);
  memcpy(c->b, s, len);
  c->len = (uint32_t)len;
  c->cps = (uint32_t)count_cps(s, len);
  c->esc = (uint32_t)count_esc(s, len);
}

/* Where the next piece of s ends: at most FILL bytes, on a code point. */
static size_t piece_end(const char *s, size_t len) {
  if (len <= FILL) return len;
  size_t k = FILL;
  while (((unsigned char)s[k] & 0xc0) == 0x80) k--;
  return k;
}

/* Puts s into new chunks at index at. The totals are the caller's. */
static void fill(rope *r, size_t at, const char *s, size_t len) {
  if (len == 0) return; /* an empty text has no chunk */
  size_t k = 0;
  for (size_t i = 0; i < len; i += piece_end(s + i, len - i)) k++;
  table_open(r, at, k);
  for (size_t i = 0, p; i < len; i += p) {
    p = piece_end(s + i, len - i);
    chunk_set(&r->c[at++], s + i, p);
  }
}

/* The chunk holding code point pos and the byte offset of pos in it. With
 * at_end, a pos at a chunk's end stays in that chunk (where an insert goes);
 * without, it is the next chunk's start (where a delete begins). */
static size_t locate(const rope *r, size_t pos, int at_end, size_t *off) {
  size_t i = 0;
  while (i < r->n && (at_end ? pos > r->c[i].cps : pos >= r->c[i].cps)) pos -= r->c[i++].cps;
  if (i == r->n) { /* pos is the end of the text */
    *off = i ? r->c[i - 1].len : 0;
    return i ? i - 1 : 0;
  }
  *off = cp_bytes(r->c[i].b, r->c[i].len, pos);
  return i;
}

/* ---- public -------------------------------------------------------------- */

rope *rope_new(const char *s, size_t len) {
  rope *r = wsy_calloc(1, sizeof *r);
  fill(r, 0, s, len);
  r->bytes = len;
  r->cps = count_cps(s, len);
  r->esc = count_esc(s, len);
  return r;
}

void rope_free(rope *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; i++) wsy_free(r->c[i].b);
  wsy_free(r->c);
  wsy_free(r);
}

size_t rope_bytes(const rope *r) { return r->bytes; }
size_t rope_cps(const rope *r) { return r->cps; }
size_t rope_json_size(const rope *r) { return 2 + r->bytes + r->esc; }
size_t rope_chunks(const rope *r) { return r->n; }

static void insert(rope *r, size_t pos, const char *s, size_t len, size_t cps) {
  size_t esc = count_esc(s, len);
  r->bytes += len, r->cps += cps, r->esc += esc;
  if (r->n == 0) {
    fill(r, 0, s, len);
    return;
  }
  size_t off, i = locate(r, pos, 1, &off);
  chunk *c = &r->c[i];
  if (c->len + len <= ROPE_CHUNK) {
    memmove(c->b + off + len, c->b + off, c->len - off);
    memcpy(c->b + off, s, len);
    c->len += (uint32_t)len, c->cps += (uint32_t)cps, c->esc += (uint32_t)esc;
    return;
  }
  /* No room: the chunk and the insert become new chunks in its place. */
  size_t total = c->len + len;
  char *tmp = wsy_malloc(total);
  memcpy(tmp, c->b, off);
  memcpy(tmp + off, s, len);
  memcpy(tmp + off + len, c->b + off, c->len - off);
  table_close(r, i);
  fill(r, i, tmp, total);
  wsy_free(tmp);
}

/* Merges chunk i into chunk i - 1 when both are small, so deletes do not
 * leave crumbs behind. */
static void merge_small(rope *r, size_t i) {
  if (i == 0 || i >= r->n) return;
  chunk *a = &r->c[i - 1], *b = &r->c[i];
  if (a->len + b->len > ROPE_CHUNK / 2) return;
  memcpy(a->b + a->len, b->b, b->len);
  a->len += b->len, a->cps += b->cps, a->esc += b->esc;
  table_close(r, i);
}

static void delete(rope *r, size_t pos, size_t n) {
  size_t off, i = locate(r, pos, 0, &off), first = i;
  while (n > 0 && i < r->n) {
    chunk *c = &r->c[i];
    size_t k = cp_bytes(c->b + off, c->len - off, n);
    if (k == 0) break; /* the end of the text: rope_apply checked the op's span */
    size_t cps = count_cps(c->b + off, k), esc = count_esc(c->b + off, k);
    memmove(c->b + off, c->b + off + k, c->len - off - k);
    c->len -= (uint32_t)k, c->cps -= (uint32_t)cps, c->esc -= (uint32_t)esc;
    r->bytes -= k, r->cps -= cps, r->esc -= esc;
    n -= cps;
    if (c->len == 0) table_close(r, i);
    else i++;
    off = 0;
  }
  merge_small(r, first + 1);
  merge_small(r, first);
}

/* Bytes and escaping of the n code points from pos, without changing them. */
static void measure(const rope *r, size_t pos, size_t n, size_t *bytes, size_t *esc) {
  size_t off, i = locate(r, pos, 0, &off);
  for (; n > 0 && i < r->n; i++, off = 0) {
    const chunk *c = &r->c[i];
    size_t k = cp_bytes(c->b + off, c->len - off, n);
    n -= count_cps(c->b + off, k);
    *bytes += k;
    *esc += count_esc(c->b + off, k);
  }
}

int rope_apply(rope *r, const text_op *op, size_t max_json, char *err, size_t errlen) {
  size_t need = text_op_base_len(op);
  if (need > r->cps) {
    if (err && errlen) snprintf(err, errlen, "the op spans %zu code points, the text has %zu", need, r->cps);
    return WSY_INVAL;
  }
  /* Pass 1, in the positions of the text as it is: the size it would have. */
  size_t count = text_op_count(op), at = 0, add = 0, gone = 0;
  for (size_t i = 0; i < count; i++) {
    size_t n, len;
    const char *s;
    int kind = text_op_comp(op, i, &n, &s, &len);
    if (kind == TEXT_INSERT) add += len + count_esc(s, len);
    else if (kind == TEXT_DELETE) measure(r, at, n, &gone, &gone);
    if (kind != TEXT_INSERT) at += n;
  }
  if (rope_json_size(r) + add - gone > max_json) {
    if (err && errlen) snprintf(err, errlen, "the text would take %zu bytes, more than %zu",
                                rope_json_size(r) + add - gone, max_json);
    return WSY_TOO_LARGE;
  }
  /* Pass 2, in the positions of the text as it becomes. */
  at = 0;
  for (size_t i = 0; i < count; i++) {
    size_t n, len;
    const char *s;
    int kind = text_op_comp(op, i, &n, &s, &len);
    if (kind == TEXT_INSERT) insert(r, at, s, len, n);
    else if (kind == TEXT_DELETE) delete(r, at, n);
    if (kind != TEXT_DELETE) at += n;
  }
  return WSY_OK;
}

char *rope_dump(const rope *r, size_t *len) {
  char *out = wsy_malloc(r->bytes + 1), *p = out;
  for (size_t i = 0; i < r->n; i++) {
    memcpy(p, r->c[i].b, r->c[i].len);
    p += r->c[i].len;
  }
  *p = '\0';
  if (len) *len = r->bytes;
  return out;
}
