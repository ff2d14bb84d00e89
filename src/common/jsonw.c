/* jsonw.c -- see jsonw.h. */
#include "jsonw.h"

#include <stdlib.h>
#include <string.h>

#include "wsy.h"

void jw_free(jw *w) {
  free(w->p);
  w->p = NULL;
  w->len = w->cap = 0;
}

void jw_grow(jw *w, size_t more) {
  size_t cap = w->cap ? w->cap : 128;
  while (cap - w->len < more) cap *= 2;
  char *p = wsy_realloc(w->p, cap); /* aborts on failure, like every small allocation */
  w->p = p;
  w->cap = cap;
}

/* Bytes each byte takes inside a JSON string: 1, 2 (\n, \", ...) or 6 (\u001F). */
static const uint8_t esc_len[256] = {
  6, 6, 6, 6, 6, 6, 6, 6, 2, 2, 2, 6, 2, 2, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
  1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

static size_t str_size(const char *s, size_t n) {
  size_t t = 2 + n;
  for (size_t i = 0; i < n;) {
    if (i + 8 <= n) { /* 8 bytes at a time up to one that needs an escape */
      unsigned k = jw_plain_prefix8(s + i);
      i += k;
      if (k == 8) continue;
    }
    t += esc_len[(unsigned char)s[i++]] - 1u;
  }
  return t;
}

void jw_str(jw *w, const char *s, size_t n) {
  /* Worst case 6 bytes per input byte; strings here are bounded (field
   * values <= 64 KiB), so reserve once and write without checks. */
  if (w->cap - w->len < 6 * n + 3) jw_grow(w, 6 * n + 3);
  char *o = w->p + w->len;
  *o++ = '"';
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    if (i + 8 <= n) { /* 8 bytes at a time up to one that needs an escape */
      unsigned k = jw_plain_prefix8(s + i);
      if (k == 8) {
        i += 7;
        continue;
      }
      i += k;
    }
    unsigned char c = (unsigned char)s[i];
    if (esc_len[c] == 1) continue;
    memcpy(o, s + run, i - run);
    o += i - run;
    run = i + 1;
    *o++ = '\\';
    switch (c) {
      case '"': *o++ = '"'; break;
      case '\\': *o++ = '\\'; break;
      case '\b': *o++ = 'b'; break;
      case '\f': *o++ = 'f'; break;
      case '\n': *o++ = 'n'; break;
      case '\r': *o++ = 'r'; break;
      case '\t': *o++ = 't'; break;
      default:
        *o++ = 'u';
        *o++ = '0';
        *o++ = '0';
        *o++ = "0123456789ABCDEF"[c >> 4];
        *o++ = "0123456789ABCDEF"[c & 15];
    }
  }
  memcpy(o, s + run, n - run);
  o += n - run;
  *o++ = '"';
  *o = '\0';
  w->len = (size_t)(o - w->p);
}

/* Two digits per division: "00" to "99". */
static const char digit_pairs[201] =
  "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
  "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
  "8081828384858687888990919293949596979899";

static size_t int_text(char out[24], int64_t v) {
  char tmp[24], *e = tmp + sizeof tmp, *p = e;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  while (u >= 100) {
    p -= 2;
    memcpy(p, digit_pairs + 2 * (u % 100), 2);
    u /= 100;
  }
  if (u >= 10) {
    p -= 2;
    memcpy(p, digit_pairs + 2 * u, 2);
  } else {
    *--p = (char)('0' + u);
  }
  size_t k = 0;
  if (v < 0) out[k++] = '-';
  memcpy(out + k, p, (size_t)(e - p));
  return k + (size_t)(e - p);
}

void jw_int(jw *w, int64_t v) {
  char t[24];
  jw_raw(w, t, int_text(t, v));
}

static void real_text(jw *w, const json_t *v) {
  char t[64];
  size_t n = json_dumpb(v, t, sizeof t, JSON_COMPACT | JSON_ENCODE_ANY);
  if (n <= sizeof t) jw_raw(w, t, n);
  else {
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    jw_raw(w, s, strlen(s));
    free(s);
  }
}

void jw_value(jw *w, const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT: {
      jw_lit(w, "{");
      int first = 1;
      for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
        if (!first) jw_lit(w, ",");
        first = 0;
        jw_str(w, json_object_iter_key(it), json_object_iter_key_len(it));
        jw_lit(w, ":");
        jw_value(w, json_object_iter_value(it));
      }
      jw_lit(w, "}");
      break;
    }
    case JSON_ARRAY: {
      jw_lit(w, "[");
      size_t n = json_array_size(v);
      for (size_t i = 0; i < n; i++) {
        if (i) jw_lit(w, ",");
        jw_value(w, json_array_get(v, i));
      }
      jw_lit(w, "]");
      break;
    }
    case JSON_STRING: jw_str(w, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: jw_int(w, json_integer_value(v)); break;
    case JSON_REAL: real_text(w, v); break;
    case JSON_TRUE: jw_lit(w, "true"); break;
    case JSON_FALSE: jw_lit(w, "false"); break;
    case JSON_NULL: jw_lit(w, "null"); break;
  }
}

char *jw_steal(jw *w) {
  if (!w->p) jw_grow(w, 1);
  w->p[w->len] = '\0';
  char *s = w->p;
  w->p = NULL;
  w->len = w->cap = 0;
  return s;
}

char *jw_dumps(const json_t *v) {
  jw w = JW_INIT;
  jw_value(&w, v);
  return jw_steal(&w);
}

size_t jw_size(const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT: {
      size_t t = 2, n = 0;
      for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it), n++)
        t += str_size(json_object_iter_key(it), json_object_iter_key_len(it)) + 1 +
             jw_size(json_object_iter_value(it));
      return t + (n ? n - 1 : 0);
    }
    case JSON_ARRAY: {
      size_t n = json_array_size(v), t = 2 + (n ? n - 1 : 0);
      for (size_t i = 0; i < n; i++) t += jw_size(json_array_get(v, i));
      return t;
    }
    case JSON_STRING: return str_size(json_string_value(v), json_string_length(v));
    case JSON_INTEGER: {
      char t[24];
      return int_text(t, json_integer_value(v));
    }
    case JSON_REAL: return json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
    case JSON_TRUE: return 4;
    case JSON_FALSE: return 5;
    case JSON_NULL: return 4;
  }
  return 0;
}
