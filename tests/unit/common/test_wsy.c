/* test_wsy.c -- error table, capped buffers and FNV-1a (src/common/wsy.c, wsy.h). */
#include <criterion/criterion.h>
#include <string.h>

#include "../../../src/common/wsy.h"

Test(wsy, strerror_and_errname_from_one_table) {
  static const struct {
    int err;
    const char *name, *text;
  } cases[] = {
    {WSY_OK, "OK", "ok"},
    {WSY_AGAIN, "AGAIN", "would block"},
    {WSY_NOMEM, "NOMEM", "out of memory"},
    {WSY_TOO_LARGE, "TOO_LARGE", "too large"},
    {WSY_PROTO, "PROTO", "protocol error"},
    {WSY_SLOW, "SLOW", "slow consumer"},
    {WSY_BAD_UTF8, "BAD_UTF8", "invalid UTF-8"},
    {WSY_INVAL, "INVAL", "invalid argument"},
    {WSY_IO, "IO", "input/output error"},
    {WSY_CLOSED, "CLOSED", "connection closed"},
    {WSY_NOT_FOUND, "NOT_FOUND", "not found"},
    {WSY_LIMIT, "LIMIT", "limit reached"},
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(cases); i++) {
    cr_assert_str_eq(wsy_strerror(cases[i].err), cases[i].text);
    cr_assert_str_eq(wsy_errname(cases[i].err), cases[i].name);
  }
  cr_assert_eq(WSY_OK, 0);
  cr_assert_str_eq(wsy_strerror(-12345), "unknown error");
  cr_assert_str_eq(wsy_strerror(1), "unknown error");
  cr_assert_str_eq(wsy_errname(-12345), "UNKNOWN");
}

Test(buf, append_up_to_the_cap) {
  buf b;
  buf_init(&b, 10);
  cr_assert_eq(b.len, 0);
  cr_assert_eq(buf_append(&b, "hello", 5), WSY_OK);
  cr_assert_eq(buf_append(&b, "world", 5), WSY_OK);
  cr_assert_eq(b.len, 10);
  cr_assert(memcmp(b.data, "helloworld", 10) == 0);
  cr_assert_eq(buf_append(&b, "!", 1), WSY_TOO_LARGE);
  cr_assert_eq(buf_append(&b, "", 0), WSY_OK, "nothing more always fits");
  cr_assert_eq(b.len, 10, "a refused append changed the length");
  cr_assert(memcmp(b.data, "helloworld", 10) == 0, "a refused append changed the bytes");
  buf_reset(&b);
  cr_assert_eq(b.len, 0);
  cr_assert_eq(buf_append(&b, "0123456789A", 11), WSY_TOO_LARGE);
  cr_assert_eq(b.len, 0);
  cr_assert_eq(buf_append(&b, "0123456789", 10), WSY_OK);
  buf_free(&b);
  cr_assert_null(b.data);
  cr_assert_eq(b.len, 0);
  /* Usable again after free, with the same cap. */
  cr_assert_eq(buf_append(&b, "abc", 3), WSY_OK);
  cr_assert_eq(buf_append(&b, "0123456789", 10), WSY_TOO_LARGE);
  buf_free(&b);
}

Test(buf, refuses_sizes_that_would_overflow) {
  buf b;
  buf_init(&b, 100);
  cr_assert_eq(buf_append(&b, "x", 1), WSY_OK);
  cr_assert_eq(buf_append(&b, "x", SIZE_MAX), WSY_TOO_LARGE);
  cr_assert_eq(buf_append(&b, "x", SIZE_MAX - 1), WSY_TOO_LARGE);
  cr_assert_eq(b.len, 1);
  buf_free(&b);
  buf_init(&b, 0);
  cr_assert_eq(buf_append(&b, "x", 1), WSY_TOO_LARGE);
  cr_assert_eq(buf_append(&b, "", 0), WSY_OK);
  buf_free(&b);
}

Test(buf, grows_and_keeps_contents) {
  buf b;
  buf_init(&b, 1 << 20);
  uint8_t chunk[333];
  for (size_t i = 0; i < 3000; i++) {
    for (size_t k = 0; k < sizeof chunk; k++) chunk[k] = (uint8_t)(i + k);
    size_t n = i % sizeof chunk;
    size_t before = b.len;
    if (buf_append(&b, chunk, n) != WSY_OK) {
      cr_assert_gt(before + n, (size_t)1 << 20, "refused below the cap at %zu", before);
      break;
    }
    cr_assert_leq(b.len, b.cap);
    cr_assert_leq(b.cap, (size_t)1 << 20, "capacity %zu beyond the cap", b.cap);
  }
  /* Re-check everything appended, byte for byte. */
  size_t at = 0;
  for (size_t i = 0; at < b.len; i++) {
    size_t n = i % sizeof chunk;
    for (size_t k = 0; k < n && at < b.len; k++, at++)
      cr_assert_eq(b.data[at], (uint8_t)(i + k), "byte %zu", at);
  }
  buf_free(&b);
}

/* The published FNV-1a 64-bit test vectors, and a hash that goes on over
 * several strings and separators as the callers use it (opfwd.c's owner
 * choice must not change across versions: its formula is built from these). */
Test(fnv1a, matches_the_published_vectors_and_composes) {
  cr_assert_eq(wsy_fnv1a(WSY_FNV1A_BASIS, ""), 0xcbf29ce484222325ull);
  cr_assert_eq(wsy_fnv1a(WSY_FNV1A_BASIS, "a"), 0xaf63dc4c8601ec8cull);
  cr_assert_eq(wsy_fnv1a(WSY_FNV1A_BASIS, "foobar"), 0x85944171f73967e8ull);
  cr_assert_eq(wsy_fnv1a(wsy_fnv1a(WSY_FNV1A_BASIS, "foo"), "bar"), wsy_fnv1a(WSY_FNV1A_BASIS, "foobar"));
  cr_assert_eq(wsy_fnv1a_byte(wsy_fnv1a(WSY_FNV1A_BASIS, "fooba"), 'r'), wsy_fnv1a(WSY_FNV1A_BASIS, "foobar"));
  /* bytes above 0x7f count as unsigned */
  uint64_t h = WSY_FNV1A_BASIS;
  h = (h ^ 0xe9) * WSY_FNV1A_PRIME;
  cr_assert_eq(wsy_fnv1a(WSY_FNV1A_BASIS, "\xe9"), h);
}

/* wsy_malloc_apart: blocks of bursts kept out of the pages of long-lived
 * blocks. With mimalloc (release builds) they come from a heap of the
 * thread's own, so the default heap does not hold them; anywhere they are
 * usable, and freed with wsy_free, from the thread or another one. */
#ifdef WSY_MIMALLOC
#include <mimalloc.h>
#endif
#include <pthread.h>

static void *free_elsewhere(void *p) {
  wsy_free(p);
  return NULL;
}

Test(alloc_apart, apart_from_the_default_heap_and_freed_anywhere) {
  enum { N = 64 };
  unsigned char *apart[N], *plain[N];
  for (int i = 0; i < N; i++) {
    size_t n = 256u << (i % 4); /* the sizes a write queue of 32 to 256 chunks takes */
    apart[i] = wsy_malloc_apart(n);
    plain[i] = wsy_malloc(n);
    memset(apart[i], i, n);
    memset(plain[i], ~i, n);
  }
  for (int i = 0; i < N; i++) {
    size_t n = 256u << (i % 4);
    cr_assert_eq(apart[i][0], (unsigned char)i);
    cr_assert_eq(apart[i][n - 1], (unsigned char)i);
    cr_assert_eq(plain[i][n - 1], (unsigned char)~i);
#ifdef WSY_MIMALLOC
    cr_assert(!mi_heap_contains_block(mi_heap_get_default(), apart[i]), "block %d is in the default heap", i);
    cr_assert(mi_heap_contains_block(mi_heap_get_default(), plain[i]));
    cr_assert(mi_is_in_heap_region(apart[i]));
#endif
  }
  /* Half freed here, half by another thread, as a connection's queue may
   * be given back by whichever thread ends it. */
  for (int i = 0; i < N / 2; i++) wsy_free(apart[i]);
  for (int i = N / 2; i < N; i++) {
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, free_elsewhere, apart[i]), 0);
    pthread_join(t, NULL);
  }
  for (int i = 0; i < N; i++) wsy_free(plain[i]);
  /* A zero-byte request still gives a block of its own. */
  void *z = wsy_malloc_apart(0);
  cr_assert_not_null(z);
  wsy_free(z);
}
