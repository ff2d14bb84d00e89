/* wsy.c -- error table, allocator wrapper and byte buffers. */
#include "wsy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WSY_TEXT(name, val, text) case val: return text;
#define WSY_NAME(name, val, text) case val: return #name;
const char *wsy_strerror(int err) {
  switch (err) { WSY_ERRORS(WSY_TEXT) default: return "unknown error"; }
}
const char *wsy_errname(int err) {
  switch (err) { WSY_ERRORS(WSY_NAME) default: return "UNKNOWN"; }
}

static void oom(size_t n) {
  fprintf(stderr, "wsync: out of memory allocating %zu bytes\n", n);
  abort();
}

#ifdef WSY_MIMALLOC
#include <mimalloc.h>

void *wsy_malloc_apart(size_t n) {
  static _Thread_local mi_heap_t *apart;
  if (!apart && !(apart = mi_heap_new())) oom(n);
  void *p = mi_heap_malloc(apart, n ? n : 1);
  if (!p) oom(n);
  return p;
}
#else
void *wsy_malloc_apart(size_t n) { return wsy_malloc(n); }
#endif

void *wsy_malloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) oom(n);
  return p;
}

void *wsy_calloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) oom(n * size);
  return p;
}

void *wsy_realloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) oom(n);
  return q;
}

char *wsy_strndup(const char *s, size_t n) {
  char *d = wsy_malloc(n + 1);
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

void wsy_free(void *p) { free(p); }

#ifdef WSY_ALLOC_TESTING
static unsigned long fail_at, fallible;
unsigned long wsy_alloc_fail_at(unsigned long n) {
  unsigned long ran = fallible;
  fail_at = n;
  fallible = 0;
  return ran;
}
static int injected(void) {
  fallible++;
  return fail_at && fallible == fail_at;
}
#else
static int injected(void) { return 0; }
#endif

void *wsy_try_realloc(void *p, size_t n) { return injected() ? NULL : realloc(p, n ? n : 1); }
void *wsy_try_malloc(size_t n) { return injected() ? NULL : malloc(n ? n : 1); }

void buf_init(buf *b, size_t max) {
  b->data = NULL;
  b->len = b->cap = 0;
  b->max = max;
}

int buf_append(buf *b, const void *p, size_t n) {
  if (n > b->max - b->len) return WSY_TOO_LARGE;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap = cap > b->max / 2 ? b->max : cap * 2;
    uint8_t *d = wsy_try_realloc(b->data, cap);
    if (!d) return WSY_NOMEM;
    b->data = d;
    b->cap = cap;
  }
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return WSY_OK;
}

void buf_reset(buf *b) { b->len = 0; }

void buf_free(buf *b) {
  wsy_free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

uint64_t wsy_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int wsy_charset_ok(const char *s, size_t len, size_t max, const char *extra) {
  if (len == 0 || len > max) return 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) continue;
    if (ch && strchr(extra, ch)) continue;
    return 0;
  }
  return 1;
}
