/* text.c -- text ops over code points (text.h): parse, normalize, apply,
 * transform, compose, in the manner of ot-text-unicode 4.x (dist/type.js).
 *
 * Representation: an op is an array of components plus one byte buffer that
 * holds the text of all its inserts, in order. An insert component is a
 * slice of that buffer with its length in code points; retains and deletes
 * carry only their count. Because only inserts write to the buffer, the last
 * insert's bytes are always the buffer's tail, so merging a new insert into
 * it is an append.
 *
 * Transform and compose follow type.js step by step: a reader ("take") walks
 * the first op a piece at a time, and every piece goes through one appender
 * ("makeAppend") that drops empty pieces and merges a piece into the last
 * component when both are of one kind; a final trim drops a trailing retain.
 * The results match type.js exactly only because the same pieces reach the
 * appender in the same order: keep the loops shaped like theirs. */
#include "text.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../common/utf8.h"

enum { RETAIN = TEXT_RETAIN, INSERT = TEXT_INSERT, DELETE = TEXT_DELETE };

typedef struct text_comp {
  int kind;
  size_t n;         /* code points: retained, inserted or deleted */
  size_t off, len;  /* insert only: bytes in op->text */
} text_comp;

struct text_op {
  text_comp *c;
  size_t n, cap;
  char *text;
  size_t text_len, text_cap;
};

/* ---- UTF-8 --------------------------------------------------------------- */

/* Bytes of the sequence a lead byte starts; valid UTF-8 assumed. */
static size_t seq_len(unsigned char b) { return b < 0xc0 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4; }

size_t text_cp_len(const char *s, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) n += ((unsigned char)s[i] & 0xc0) != 0x80;
  return n;
}

/* Bytes taken by the first n code points of s (len bytes, valid UTF-8);
 * all of s when it has fewer. */
static size_t cp_bytes(const char *s, size_t len, size_t n) {
  size_t i = 0;
  while (n > 0 && i < len) {
    i += seq_len((unsigned char)s[i]);
    n--;
  }
  return i < len ? i : len;
}

/* ---- building ops: type.js makeAppend and trim ---------------------------- */

text_op *text_op_new(void) { return wsy_calloc(1, sizeof(text_op)); }

void text_op_free(text_op *op) {
  if (!op) return;
  wsy_free(op->c);
  wsy_free(op->text);
  wsy_free(op);
}

text_op *text_op_clone(const text_op *op) {
  text_op *r = text_op_new();
  if (op->n) {
    r->c = wsy_malloc(op->n * sizeof *r->c);
    memcpy(r->c, op->c, op->n * sizeof *r->c);
    r->n = r->cap = op->n;
  }
  if (op->text_len) {
    r->text = wsy_malloc(op->text_len);
    memcpy(r->text, op->text, op->text_len);
    r->text_len = r->text_cap = op->text_len;
  }
  return r;
}

/* A piece of a component, as the reader hands it out; END past the last. */
typedef struct piece {
  int kind; /* RETAIN, INSERT, DELETE or END */
  size_t n;
  const char *s; /* insert: bytes, len of them */
  size_t len;
} piece;

enum { END = 0 };

static void push(text_op *op, int kind, size_t n) {
  if (op->n == op->cap) {
    op->cap = op->cap ? op->cap * 2 : 8;
    op->c = wsy_realloc(op->c, op->cap * sizeof *op->c);
  }
  op->c[op->n++] = (text_comp){.kind = kind, .n = n, .off = op->text_len, .len = 0};
}

static void append_text(text_op *op, const char *s, size_t len) {
  if (op->text_len + len > op->text_cap) {
    size_t cap = op->text_cap ? op->text_cap : 64;
    while (cap < op->text_len + len) cap *= 2;
    op->text = wsy_realloc(op->text, cap);
    op->text_cap = cap;
  }
  memcpy(op->text + op->text_len, s, len);
  op->text_len += len;
}

/* makeAppend: drop empty pieces, merge into a last component of one kind. */
static void append(text_op *op, int kind, size_t n, const char *s, size_t len) {
  if (n == 0) return;
  if (op->n == 0 || op->c[op->n - 1].kind != kind) push(op, kind, 0);
  text_comp *last = &op->c[op->n - 1];
  last->n += n;
  if (kind == INSERT) {
    append_text(op, s, len); /* the last insert is the buffer's tail */
    last->len += len;
  }
}

static void append_piece(text_op *op, piece p) {
  if (p.kind != END) append(op, p.kind, p.n, p.s, p.len);
}

/* type.js trim: the appender merged retains, so at most one trails. */
static void trim(text_op *op) {
  if (op->n && op->c[op->n - 1].kind == RETAIN) op->n--;
}

/* ---- wire form ----------------------------------------------------------- */

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) WSY_PRINTF(4, 5);
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

/* A count of a retain or a delete: an integer in 1..TEXT_MAX_COUNT. */
static int count_ok(json_t *v, size_t *n) {
  if (!json_is_integer(v)) return 0;
  json_int_t x = json_integer_value(v);
  if (x < 1 || (unsigned long long)x > TEXT_MAX_COUNT) return 0;
  *n = (size_t)x;
  return 1;
}

int text_op_from_json(json_t *ops, const text_limits *lim, text_op **out, char *err, size_t errlen) {
  *out = NULL;
  if (!json_is_array(ops)) return fail(err, errlen, WSY_INVAL, "ops must be an array");
  size_t count = json_array_size(ops);
  if (lim && count > lim->max_components)
    return fail(err, errlen, WSY_TOO_LARGE, "ops has %zu components, more than %zu", count, lim->max_components);
  /* Check everything before building anything: a rejected op costs no
   * allocation, and the limits apply before any copying. */
  size_t bytes = 0, consumed = 0;
  for (size_t i = 0; i < count; i++) {
    json_t *c = json_array_get(ops, i);
    size_t n;
    if (json_is_string(c)) {
      const char *s = json_string_value(c);
      size_t len = json_string_length(c);
      if (len == 0) return fail(err, errlen, WSY_INVAL, "ops[%zu]: an insert must not be empty", i);
      if (wsy_utf8_scan((const uint8_t *)s, len, NULL, NULL) != WSY_OK)
        return fail(err, errlen, WSY_BAD_UTF8, "ops[%zu]: an insert must be UTF-8", i);
      bytes += len;
      if (lim && bytes > lim->max_insert_bytes)
        return fail(err, errlen, WSY_TOO_LARGE, "ops inserts more than %zu bytes", lim->max_insert_bytes);
      continue;
    }
    if (json_is_number(c)) {
      if (!count_ok(c, &n))
        return fail(err, errlen, WSY_INVAL, "ops[%zu]: a retain must be a positive integer below 2^53", i);
    } else if (json_is_object(c)) {
      json_t *d = json_object_get(c, "d");
      if (!d || json_object_size(c) != 1)
        return fail(err, errlen, WSY_INVAL, "ops[%zu]: an object must be a delete {\"d\":n}", i);
      if (!count_ok(d, &n))
        return fail(err, errlen, WSY_INVAL, "ops[%zu]: a delete's d must be a positive integer below 2^53", i);
    } else {
      return fail(err, errlen, WSY_INVAL,
                  "ops[%zu]: a component must be a positive integer, a non-empty string or {\"d\":n}", i);
    }
    if (n > TEXT_MAX_COUNT - consumed)
      return fail(err, errlen, WSY_INVAL, "ops[%zu]: the op spans more than 2^53-1 code points", i);
    consumed += n;
  }

  text_op *op = text_op_new();
  for (size_t i = 0; i < count; i++) {
    json_t *c = json_array_get(ops, i);
    if (json_is_string(c)) {
      const char *s = json_string_value(c);
      size_t len = json_string_length(c);
      append(op, INSERT, text_cp_len(s, len), s, len);
    } else if (json_is_integer(c)) {
      append(op, RETAIN, (size_t)json_integer_value(c), NULL, 0);
    } else {
      append(op, DELETE, (size_t)json_integer_value(json_object_get(c, "d")), NULL, 0);
    }
  }
  trim(op);
  *out = op;
  return WSY_OK;
}

json_t *text_op_to_json(const text_op *op) {
  json_t *a = json_array();
  for (size_t i = 0; i < op->n; i++) {
    const text_comp *c = &op->c[i];
    json_t *v;
    /* Inserts were checked (or cut at code point boundaries) on the way in. */
    if (c->kind == INSERT) v = json_stringn_nocheck(op->text + c->off, c->len);
    else if (c->kind == RETAIN) v = json_integer((json_int_t)c->n);
    else v = json_pack("{s:I}", "d", (json_int_t)c->n);
    json_array_append_new(a, v);
  }
  return a;
}

size_t text_op_base_len(const text_op *op) {
  size_t n = 0;
  for (size_t i = 0; i < op->n; i++)
    if (op->c[i].kind != INSERT) n += op->c[i].n;
  return n;
}

size_t text_op_count(const text_op *op) { return op->n; }

int text_op_comp(const text_op *op, size_t i, size_t *n, const char **s, size_t *len) {
  const text_comp *c = &op->c[i];
  *n = c->n;
  *s = c->kind == INSERT ? op->text + c->off : NULL;
  *len = c->kind == INSERT ? c->len : 0;
  return c->kind;
}

size_t text_op_insert_bytes(const text_op *op) { return op->text_len; }

/* ---- apply ----------------------------------------------------------------- */

int text_apply(const char *doc, size_t len, const text_op *op, char **out, size_t *outlen, char *err,
               size_t errlen) {
  *out = NULL;
  if (outlen) *outlen = 0;
  size_t doc_cps;
  if (wsy_utf8_scan((const uint8_t *)doc, len, &doc_cps, NULL) != WSY_OK)
    return fail(err, errlen, WSY_BAD_UTF8, "the text is not UTF-8");
  size_t need = text_op_base_len(op);
  if (need > doc_cps)
    return fail(err, errlen, WSY_INVAL, "the op spans %zu code points, the text has %zu", need, doc_cps);
  char *r = wsy_malloc(len + op->text_len + 1);
  size_t at = 0, w = 0; /* bytes read from doc, written to r */
  for (size_t i = 0; i < op->n; i++) {
    const text_comp *c = &op->c[i];
    if (c->kind == INSERT) {
      memcpy(r + w, op->text + c->off, c->len);
      w += c->len;
      continue;
    }
    size_t b = cp_bytes(doc + at, len - at, c->n);
    if (c->kind == RETAIN) {
      memcpy(r + w, doc + at, b);
      w += b;
    }
    at += b;
  }
  memcpy(r + w, doc + at, len - at);
  w += len - at;
  r[w] = '\0';
  *out = r;
  if (outlen) *outlen = w;
  return WSY_OK;
}

/* ---- the reader: type.js makeTake ------------------------------------------ */

typedef struct reader {
  const text_op *op;
  size_t i;   /* the next component */
  size_t at;  /* code points of it already taken */
  size_t bat; /* insert: bytes of it already taken */
} reader;

#define WHOLE SIZE_MAX /* take(-1): the rest of the next component */

/* Takes up to n code points from the front of the op. An insert when
 * keep == INSERT, or a delete when keep == DELETE, comes out whole however
 * long (type.js "indivisableField"). Past the last component the op retains
 * forever, and take(WHOLE) is END. */
static piece take(reader *r, size_t n, int keep) {
  if (r->i == r->op->n) return n == WHOLE ? (piece){.kind = END} : (piece){.kind = RETAIN, .n = n};
  const text_comp *c = &r->op->c[r->i];
  size_t rest = c->n - r->at;
  piece p = {.kind = c->kind, .n = rest};
  if (c->kind == INSERT) {
    p.s = r->op->text + c->off + r->bat;
    p.len = c->len - r->bat;
  }
  if (n == WHOLE || rest <= n || keep == c->kind) {
    r->i++;
    r->at = r->bat = 0;
    return p;
  }
  p.n = n;
  r->at += n;
  if (c->kind == INSERT) {
    p.len = cp_bytes(p.s, p.len, n);
    r->bat += p.len;
  }
  return p;
}

static int peek_is_insert(const reader *r) { return r->i < r->op->n && r->op->c[r->i].kind == INSERT; }

/* ---- transform and compose: type.js transform() and compose() --------------- */

text_op *text_transform(const text_op *op, const text_op *other, int side) {
  text_op *out = text_op_new();
  reader r = {.op = op};
  for (size_t i = 0; i < other->n; i++) {
    const text_comp *c2 = &other->c[i];
    size_t length = c2->n;
    piece p;
    switch (c2->kind) {
    case RETAIN:
      while (length > 0) {
        p = take(&r, length, INSERT);
        append_piece(out, p);
        if (p.kind != INSERT) length -= p.n;
      }
      break;
    case INSERT:
      /* The left insert goes first, but only when it is op's very next
       * component: after a delete it is not "at the same position". */
      if (side == TEXT_LEFT && peek_is_insert(&r)) append_piece(out, take(&r, WHOLE, 0));
      append(out, RETAIN, c2->n, NULL, 0);
      break;
    case DELETE:
      while (length > 0) {
        p = take(&r, length, INSERT);
        if (p.kind == INSERT) append_piece(out, p); /* text inserted in deleted text survives */
        else length -= p.n; /* a retain is deleted now; a delete already happened */
      }
      break;
    }
  }
  for (piece p; (p = take(&r, WHOLE, 0)).kind != END;) append_piece(out, p);
  trim(out);
  return out;
}

text_op *text_compose(const text_op *a, const text_op *b) {
  text_op *out = text_op_new();
  reader r = {.op = a};
  for (size_t i = 0; i < b->n; i++) {
    const text_comp *c2 = &b->c[i];
    size_t length = c2->n, offset = 0;
    piece p;
    switch (c2->kind) {
    case RETAIN:
      while (length > 0) {
        p = take(&r, length, DELETE);
        append_piece(out, p);
        if (p.kind != DELETE) length -= p.n; /* a's deletes take no room in its result */
      }
      break;
    case INSERT:
      append(out, INSERT, c2->n, b->text + c2->off, c2->len);
      break;
    case DELETE:
      while (offset < length) {
        p = take(&r, length - offset, DELETE);
        if (p.kind == RETAIN) {
          append(out, DELETE, p.n, NULL, 0);
          offset += p.n;
        } else if (p.kind == INSERT) {
          offset += p.n; /* b deletes what a inserted: neither survives */
        } else {
          append_piece(out, p);
        }
      }
      break;
    }
  }
  for (piece p; (p = take(&r, WHOLE, 0)).kind != END;) append_piece(out, p);
  trim(out);
  return out;
}
