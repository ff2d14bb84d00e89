/* test_map.c -- the string map (src/common/map.c): copied keys by default,
 * borrowed keys for registries whose key lives in the value. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "../../../src/common/map.h"

/* A copying map keeps its own key: the caller's buffer may change or go. */
Test(map, copies_keys_by_default) {
  map m;
  map_init(&m);
  char key[16] = "alpha";
  int v = 1;
  cr_assert_null(map_put(&m, key, &v));
  strcpy(key, "beta");
  cr_assert_eq(map_get(&m, "alpha"), &v);
  cr_assert_null(map_get(&m, "beta"));
  const char *k = NULL;
  size_t i = 0;
  cr_assert(map_next(&m, &i, &k, NULL));
  cr_assert_neq(k, key);
  cr_assert_str_eq(k, "alpha");
  map_free(&m);
}

/* A borrowing map keeps the caller's pointer; replacing a key takes the
 * new pointer (the old one may be freed with its value); emptying and
 * freeing keep the kind; many keys survive growth and deletion. */
Test(map, borrows_keys_when_asked) {
  map m;
  map_init_borrowed(&m);
  char a[8] = "k", b[8] = "k";
  int v1 = 1, v2 = 2;
  cr_assert_null(map_put(&m, a, &v1));
  const char *k = NULL;
  size_t i = 0;
  cr_assert(map_next(&m, &i, &k, NULL));
  cr_assert_eq(k, a);
  cr_assert_eq(map_put(&m, b, &v2), &v1);
  i = 0;
  cr_assert(map_next(&m, &i, &k, NULL));
  cr_assert_eq(k, b);
  cr_assert_eq(map_del(&m, "k"), &v2);
  cr_assert_eq(map_len(&m), 0);
  cr_assert(m.borrowed, "emptying the map keeps it borrowing");

  static char keys[300][16];
  static int vals[300];
  for (int n = 0; n < 300; n++) {
    snprintf(keys[n], sizeof keys[n], "s%d", n);
    vals[n] = n;
    cr_assert_null(map_put(&m, keys[n], &vals[n]));
  }
  for (int n = 0; n < 300; n += 2) cr_assert(map_del_if(&m, keys[n], &vals[n]));
  cr_assert_eq(map_len(&m), 150);
  for (int n = 0; n < 300; n++) {
    int *got = map_get(&m, keys[n]);
    if (n % 2) cr_assert(got && *got == n, "key %s", keys[n]);
    else cr_assert_null(got);
  }
  map_free(&m);
  cr_assert(m.borrowed, "map_free keeps it borrowing");
  cr_assert_null(map_put(&m, a, &v1));
  cr_assert_eq(map_get(&m, "k"), &v1);
  map_free(&m);
}

/* A keyed map reads each key from its value: a slot is one pointer, keys
 * survive growth (rehashed from the values), tombstones and reuse, and
 * iteration hands out the values' own keys. */
typedef struct keyed_obj {
  int n;
  char name[16];
} keyed_obj;

static const char *keyed_name(const void *v) { return ((const keyed_obj *)v)->name; }

Test(map, keyed_reads_keys_from_values) {
  map m;
  map_init_keyed(&m, keyed_name);
  static keyed_obj objs[1000];
  for (int n = 0; n < 1000; n++) {
    objs[n].n = n;
    snprintf(objs[n].name, sizeof objs[n].name, "tok%d", n);
    cr_assert_null(map_put(&m, objs[n].name, &objs[n]));
  }
  cr_assert_eq(map_len(&m), 1000);
  cr_assert(m.cap >= 1000 * 4 / 3 && m.cap <= 4096, "cap %zu for 1000 keys", m.cap);
  for (int n = 0; n < 1000; n += 3) cr_assert(map_del_if(&m, objs[n].name, &objs[n]));
  cr_assert_not(map_del_if(&m, objs[1].name, &objs[2]), "another value under that key");
  cr_assert_null(map_del(&m, "tok0"));
  for (int n = 0; n < 1000; n++) {
    keyed_obj *got = map_get(&m, objs[n].name);
    if (n % 3) cr_assert(got == &objs[n], "key %s", objs[n].name);
    else cr_assert_null(got);
  }
  /* the same key again with a new value replaces it */
  static keyed_obj again = {.n = -1, .name = "tok1"};
  cr_assert_eq(map_put(&m, again.name, &again), &objs[1]);
  cr_assert_eq(map_get(&m, "tok1"), &again);
  size_t seen = 0;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&m, &i, &k, &v); seen++) cr_assert_eq(k, ((keyed_obj *)v)->name);
  cr_assert_eq(seen, map_len(&m));
  /* churn: tombstones are dropped by rebuilds, the map does not grow for ever */
  for (int round = 0; round < 50; round++)
    for (int n = 0; n < 1000; n += 3) {
      cr_assert_null(map_put(&m, objs[n].name, &objs[n]));
      cr_assert(map_del_if(&m, objs[n].name, &objs[n]));
    }
  cr_assert(m.cap <= 4096, "cap %zu after churn", m.cap);
  map_free(&m);
  cr_assert_eq(m.key_of, keyed_name, "map_free keeps it keyed");
  cr_assert_null(map_put(&m, objs[5].name, &objs[5]));
  cr_assert_eq(map_get(&m, "tok5"), &objs[5]);
  map_free(&m);
}
