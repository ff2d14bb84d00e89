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
