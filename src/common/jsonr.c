/* jsonr.c -- see jsonr.h. A recursive-descent reader of RFC 8259 JSON that
 * builds the jansson tree as it goes; whatever it is not sure about, it
 * declines (NULL), and jansson judges the text. */
#include "jsonr.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonw.h"
#include "utf8.h"

#define KEY_MAX 256 /* a longer member name is left to jansson */

typedef struct {
  const char *p, *end;
  int depth, max_depth;
} reader;

static json_t *value(reader *r);

static void skip_ws(reader *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) r->p++;
}

/* A string's contents after its opening quote, decoded into *out (a
 * pointer into the text when it has no escape, else into dec) and UTF-8
 * checked. 0 to decline: a \u escape (jansson decodes surrogates its own
 * way), a raw control character, an unknown escape, no closing quote,
 * invalid UTF-8, or more than cap bytes once decoded with escapes. */
static int string_body(reader *r, const char **out, size_t *len, char *dec, size_t cap) {
  const char *s = r->p;
  size_t i = 0, n = (size_t)(r->end - s);
  for (;; i++) {
    if (i + 8 <= n) { /* 8 bytes at a time up to a quote, a backslash or a control character */
      unsigned k = jw_plain_prefix8(s + i);
      if (k == 8) {
        i += 7;
        continue;
      }
      i += k;
    }
    if (i >= n) return 0;
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\' || c < 0x20) break;
  }
  if (s[i] == '"') { /* no escape: the text itself */
    if (wsy_utf8_scan((const uint8_t *)s, i, NULL, NULL) != WSY_OK) return 0;
    *out = s, *len = i;
    r->p = s + i + 1;
    return 1;
  }
  if ((unsigned char)s[i] < 0x20) return 0;
  size_t k = 0;
  for (size_t j = 0; j < n; j++) { /* escapes: decoded into dec */
    unsigned char c = (unsigned char)s[j];
    if (c == '"') {
      if (wsy_utf8_scan((const uint8_t *)dec, k, NULL, NULL) != WSY_OK) return 0;
      *out = dec, *len = k;
      r->p = s + j + 1;
      return 1;
    }
    if (c < 0x20 || k == cap) return 0;
    if (c != '\\') {
      dec[k++] = (char)c;
      continue;
    }
    if (++j == n) return 0;
    switch (s[j]) {
      case '"': dec[k++] = '"'; break;
      case '\\': dec[k++] = '\\'; break;
      case '/': dec[k++] = '/'; break;
      case 'b': dec[k++] = '\b'; break;
      case 'f': dec[k++] = '\f'; break;
      case 'n': dec[k++] = '\n'; break;
      case 'r': dec[k++] = '\r'; break;
      case 't': dec[k++] = '\t'; break;
      default: return 0; /* \u, or not an escape */
    }
  }
  return 0;
}

static json_t *string(reader *r) {
  const char *s;
  size_t n;
  char small[512];
  if (string_body(r, &s, &n, small, sizeof small)) return json_stringn_nocheck(s, n);
  /* A long string with escapes: decoded into a buffer of its size. */
  size_t cap = (size_t)(r->end - r->p);
  char *dec = malloc(cap ? cap : 1);
  json_t *v = dec && string_body(r, &s, &n, dec, cap) ? json_stringn_nocheck(s, n) : NULL;
  free(dec);
  return v;
}

static int digit(char c) { return c >= '0' && c <= '9'; }

/* JSON's number grammar; an integer (no fraction, no exponent) beyond
 * int64, or a real beyond a double, is declined (proto.c gives it meaning). */
static json_t *number(reader *r) {
  const char *s = r->p, *p = s, *e = r->end;
  int neg = p < e && *p == '-', real = 0;
  p += neg;
  if (p == e || !digit(*p)) return NULL;
  if (*p == '0') p++;
  else
    while (p < e && digit(*p)) p++;
  const char *int_end = p;
  if (p < e && *p == '.') {
    real = 1;
    if (++p == e || !digit(*p)) return NULL;
    while (p < e && digit(*p)) p++;
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    real = 1;
    if (++p < e && (*p == '+' || *p == '-')) p++;
    if (p == e || !digit(*p)) return NULL;
    while (p < e && digit(*p)) p++;
  }
  r->p = p;
  size_t digits = (size_t)(int_end - s) - (size_t)neg;
  if (!real && digits <= 18) { /* cannot overflow */
    long long acc = 0;
    for (const char *d = s + neg; d < int_end; d++) acc = acc * 10 + (*d - '0');
    return json_integer((json_int_t)(neg ? -acc : acc));
  }
  char num[64];
  size_t n = (size_t)(p - s);
  if (n >= sizeof num) return NULL; /* exotic: jansson decides */
  memcpy(num, s, n);
  num[n] = '\0';
  errno = 0;
  if (!real) {
    long long v = strtoll(num, NULL, 10);
    return errno == ERANGE ? NULL : json_integer((json_int_t)v);
  }
  double d = strtod(num, NULL);
  if ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE) return NULL;
  return json_real(d);
}

static json_t *literal(reader *r, const char *word, size_t n, json_t *v) {
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return NULL;
  r->p += n;
  return v;
}

static json_t *object(reader *r) {
  json_t *o = json_object();
  if (!o) return NULL;
  skip_ws(r);
  if (r->p < r->end && *r->p == '}') {
    r->p++;
    return o;
  }
  for (;;) {
    const char *k;
    size_t kn;
    char kbuf[KEY_MAX];
    if (r->p == r->end || *r->p != '"') break;
    r->p++;
    if (!string_body(r, &k, &kn, kbuf, sizeof kbuf) || kn > KEY_MAX) break;
    skip_ws(r);
    if (r->p == r->end || *r->p != ':') break;
    r->p++;
    skip_ws(r);
    json_t *v = value(r);
    if (!v) break;
    /* A member already there is replaced and the size stays: a duplicate,
     * found with the one hash lookup of the insertion. */
    size_t before = json_object_size(o);
    if (json_object_setn_new_nocheck(o, k, kn, v) != 0 || json_object_size(o) != before + 1) break;
    skip_ws(r);
    if (r->p == r->end) break;
    if (*r->p == '}') {
      r->p++;
      return o;
    }
    if (*r->p != ',') break;
    r->p++;
    skip_ws(r);
  }
  json_decref(o);
  return NULL;
}

static json_t *array(reader *r) {
  json_t *a = json_array();
  if (!a) return NULL;
  skip_ws(r);
  if (r->p < r->end && *r->p == ']') {
    r->p++;
    return a;
  }
  for (;;) {
    json_t *v = value(r);
    if (!v || json_array_append_new(a, v) != 0) break;
    skip_ws(r);
    if (r->p == r->end) break;
    if (*r->p == ']') {
      r->p++;
      return a;
    }
    if (*r->p != ',') break;
    r->p++;
    skip_ws(r);
  }
  json_decref(a);
  return NULL;
}

/* The value at r->p (no whitespace before it). */
static json_t *value(reader *r) {
  if (r->p == r->end) return NULL;
  switch (*r->p) {
    case '{':
    case '[': {
      if (r->depth == r->max_depth) return NULL;
      int open = *r->p++;
      r->depth++;
      json_t *v = open == '{' ? object(r) : array(r);
      r->depth--;
      return v;
    }
    case '"': r->p++; return string(r);
    case 't': return literal(r, "true", 4, json_true());
    case 'f': return literal(r, "false", 5, json_false());
    case 'n': return literal(r, "null", 4, json_null());
    default: return number(r);
  }
}

json_t *jsonr_parse(const char *data, size_t len, int max_depth) {
  reader r = {.p = data, .end = data + len, .max_depth = max_depth < JSONR_MAX_DEPTH ? max_depth : JSONR_MAX_DEPTH};
  skip_ws(&r);
  if (r.p == r.end || (*r.p != '{' && *r.p != '[')) return NULL; /* the top level is an object or an array */
  json_t *v = value(&r);
  if (!v) return NULL;
  skip_ws(&r);
  if (r.p != r.end) { /* only whitespace may follow */
    json_decref(v);
    return NULL;
  }
  return v;
}
