/* jsonr.c -- see jsonr.h. */
#include "jsonr.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "utf8.h"

typedef struct {
  yajl_handle h;
  size_t end; /* where the top-level value ends in the text */
  json_t *root;
  json_t *stack[JSONR_MAX_DEPTH]; /* the open containers, innermost last */
  int depth, max_depth;
  size_t key_len; /* the member name a value in an object goes under: */
  char key[256];  /* copied, since yajl decodes escapes into a buffer it reuses */
} reader;

/* Places v (stolen) where the text has it: the root, the next element of
 * the open array, or the member named by the last key. 0 (yajl: stop) on a
 * duplicate member or a scalar at the top level. */
static int place(reader *r, json_t *v) {
  if (!v) return 0;
  if (!r->depth) {
    if (r->root || !(json_is_object(v) || json_is_array(v))) {
      json_decref(v);
      return 0;
    }
    r->root = v;
    return 1;
  }
  json_t *p = r->stack[r->depth - 1];
  if (json_is_array(p)) return json_array_append_new(p, v) == 0;
  /* A member already there is replaced and the size stays: a duplicate,
   * found with the one hash lookup of the insertion. */
  size_t before = json_object_size(p);
  return json_object_setn_new_nocheck(p, r->key, r->key_len, v) == 0 && json_object_size(p) == before + 1;
}

static int on_null(void *ctx) { return place(ctx, json_null()); }
static int on_bool(void *ctx, int b) { return place(ctx, json_boolean(b)); }

/* The number's text as yajl lexed it (JSON's grammar). Integers are those
 * without fraction or exponent, as in jansson; one out of range, or a real
 * that overflows a double, is left to jansson (proto.c gives it meaning). */
static int on_number(void *ctx, const char *s, size_t n) {
  /* The common case first: an integer of at most 18 digits (yajl checked
   * the grammar), which cannot overflow. */
  size_t neg = n && s[0] == '-', i = neg;
  long long acc = 0;
  while (i < n && i - neg < 18 && s[i] >= '0' && s[i] <= '9') acc = acc * 10 + (s[i++] - '0');
  if (i == n && n > neg && n - neg <= 18) return place(ctx, json_integer((json_int_t)(neg ? -acc : acc)));
  char num[64];
  if (n >= sizeof num) return 0; /* exotic: jansson decides */
  memcpy(num, s, n);
  num[n] = '\0';
  errno = 0;
  if (!memchr(s, '.', n) && !memchr(s, 'e', n) && !memchr(s, 'E', n)) {
    long long v = strtoll(num, NULL, 10);
    if (errno == ERANGE) return 0;
    return place(ctx, json_integer((json_int_t)v));
  }
  double d = strtod(num, NULL);
  if ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE) return 0;
  return place(ctx, json_real(d));
}

/* Strings and member names are UTF-8 as jansson checks them (utf8.h). */
static int on_string(void *ctx, const unsigned char *s, size_t n) {
  if (wsy_utf8_scan(s, n, NULL, NULL) != WSY_OK) return 0;
  return place(ctx, json_stringn_nocheck((const char *)s, n));
}

static int on_key(void *ctx, const unsigned char *s, size_t n) {
  reader *r = ctx;
  if (n > sizeof r->key) return 0; /* a longer name: jansson decides */
  if (wsy_utf8_scan(s, n, NULL, NULL) != WSY_OK) return 0;
  memcpy(r->key, s, n);
  r->key_len = n;
  return 1;
}

static int open_container(reader *r, json_t *c) {
  if (!c || r->depth == r->max_depth) {
    json_decref(c);
    return 0;
  }
  if (!place(r, c)) return 0;  /* c is freed */
  r->stack[r->depth++] = c; /* borrowed: its parent (or the root) owns it */
  return 1;
}

static int on_start_map(void *ctx) { return open_container(ctx, json_object()); }
static int on_start_array(void *ctx) { return open_container(ctx, json_array()); }

static int on_end(void *ctx) {
  reader *r = ctx;
  if (--r->depth == 0) r->end = yajl_get_bytes_consumed(r->h);
  return 1;
}

static const yajl_callbacks callbacks = {
  .yajl_null = on_null,
  .yajl_boolean = on_bool,
  .yajl_number = on_number,
  .yajl_string = on_string,
  .yajl_start_map = on_start_map,
  .yajl_map_key = on_key,
  .yajl_end_map = on_end,
  .yajl_start_array = on_start_array,
  .yajl_end_array = on_end,
};

json_t *jsonr_parse(const char *data, size_t len, int max_depth) {
  /* yajl also takes \v and \f for whitespace; JSON (and jansson) do not. */
  if (!len || memchr(data, '\v', len) || memchr(data, '\f', len)) return NULL;
  for (const char *b = data, *end = data + len; b < end && (b = memchr(b, '\\', (size_t)(end - b))); b += 2)
    if (b + 1 < end && b[1] == 'u') return NULL;
  reader r = {.max_depth = max_depth < JSONR_MAX_DEPTH ? max_depth : JSONR_MAX_DEPTH};
  yajl_handle h = r.h = yajl_alloc(&callbacks, NULL, &r);
  if (!h) return NULL;
  int ok = yajl_parse(h, (const unsigned char *)data, len) == yajl_status_ok &&
           yajl_complete_parse(h) == yajl_status_ok && r.root && r.depth == 0;
  yajl_free(h);
  /* yajl keeps an unfinished token after the value (a string left open, a
   * number) for more input and then forgets it: only whitespace may follow. */
  for (size_t i = r.end; ok && i < len; i++) ok = data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r';
  if (!ok) {
    json_decref(r.root);
    return NULL;
  }
  return r.root;
}
