/* Unit tests for src/sync/cidf.c, the dedupe filter: it never forgets a
 * key it was given, it grows by layers as keys arrive so that its false
 * "maybe" answers stay rare however many keys it holds, and its memory
 * follows what it holds. A filter of fixed size (what it replaced) answers
 * "maybe" for a growing share of new keys as it fills: the second test
 * shows the difference on the same keys. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "../../../src/sync/cidf.h"

static uint64_t key(const char *dev, unsigned long i) {
  char cid[32];
  snprintf(cid, sizeof cid, "c%lu", i);
  return cidf_hash(dev, cid);
}

/* Share of n keys never added that the filter calls "maybe". */
static double false_maybe(const cidf *f, unsigned long n) {
  unsigned long fp = 0;
  for (unsigned long i = 0; i < n; i++) fp += (unsigned long)cidf_maybe(f, key("other:dev", i));
  return (double)fp / (double)n;
}

Test(cidf, every_key_added_is_maybe_and_new_keys_mostly_are_not) {
  cidf f;
  cidf_init(&f, 100000);
  for (unsigned long i = 0; i < 100000; i++) cidf_add(&f, key("alice:phone", i));
  cr_assert_eq(f.nlayers, 1);
  for (unsigned long i = 0; i < 100000; i++) cr_assert(cidf_maybe(&f, key("alice:phone", i)), "key %lu", i);
  double fp = false_maybe(&f, 200000);
  cr_assert_lt(fp, 0.005, "false maybe %.4f at capacity", fp);
  cr_assert_gt(fp, 0.0, "a Bloom filter at capacity has some false positives; none means it is not one");
  cidf_free(&f);
}

Test(cidf, grows_by_layers_and_keeps_false_maybes_rare) {
  /* 1,000 keys of capacity, then 400 times as many keys. */
  cidf f;
  cidf_init(&f, 1000);
  size_t first = cidf_bytes(&f);
  for (unsigned long i = 0; i < 400000; i++) cidf_add(&f, key("bob:laptop", i));
  cr_assert_eq(f.keys, 400000);
  /* 1,000 + 2,000 + ... + 256,000 = 511,000 >= 400,000: nine layers. */
  cr_assert_eq(f.nlayers, 9, "layers %d", f.nlayers);
  for (unsigned long i = 0; i < 400000; i++) cr_assert(cidf_maybe(&f, key("bob:laptop", i)), "key %lu", i);
  double fp = false_maybe(&f, 200000);
  /* Each full layer adds about 0.2% (cidf.h): 1.6% here, deterministic
   * (fixed keys, fixed hash). */
  cr_assert_lt(fp, 0.02, "false maybe %.4f after growing", fp);
  /* Memory follows the keys: 2 bytes per key of capacity, and at most
   * twice the keys held in capacity. */
  size_t bytes = cidf_bytes(&f);
  cr_assert_gt(bytes, first * 100);
  cr_assert_leq(bytes, 2 * 2 * 400000 + 64 * 9, "bytes %zu", bytes);

  /* The same keys in one layer that does not grow (its capacity made
   * unreachable), as large as the first layer above: nearly every new key
   * is "maybe", each a store lookup in the server. */
  cidf fixed;
  cidf_init(&fixed, 1000);
  fixed.layer[0].cap = (size_t)-1;
  for (unsigned long i = 0; i < 400000; i++) cidf_add(&fixed, key("bob:laptop", i));
  cr_assert_eq(fixed.nlayers, 1);
  double fixed_fp = false_maybe(&fixed, 20000);
  cr_assert_gt(fixed_fp, 0.9, "fixed filter false maybe %.4f", fixed_fp);
  cidf_free(&fixed);
  cidf_free(&f);
}

Test(cidf, the_hash_is_of_the_whole_key) {
  /* A cid never holds '|' (PROTOCOL.md 1.2), so "dkey|cid" names one key. */
  cr_assert_neq(cidf_hash("u:d", "c1"), cidf_hash("u:d", "c2"));
  cr_assert_neq(cidf_hash("u:d1", "c"), cidf_hash("u:d2", "c"));
  cr_assert_eq(cidf_hash("auth0|7:d", "c1"), cidf_hash("auth0|7:d", "c1"));
}

Test(cidf, adding_many_at_once_sets_the_same_bits_as_one_by_one) {
  /* Across layer boundaries: 64 keys of first capacity, 5,000 keys in
   * batches of 37 (not a divisor of any layer's capacity). */
  cidf one, many;
  cidf_init(&one, 64);
  cidf_init(&many, 64);
  uint64_t h[37];
  for (unsigned long i = 0; i < 5000;) {
    size_t n = 0;
    for (; n < 37 && i < 5000; n++, i++) {
      h[n] = key("carol:pc", i);
      cidf_add(&one, h[n]);
    }
    cidf_add_many(&many, h, n);
  }
  cr_assert_eq(many.keys, 5000);
  cr_assert_eq(many.nlayers, one.nlayers);
  for (int j = 0; j < one.nlayers; j++) {
    cr_assert_eq(many.layer[j].n, one.layer[j].n, "layer %d", j);
    cr_assert_eq(many.layer[j].nblocks, one.layer[j].nblocks, "layer %d", j);
    cr_assert_eq(memcmp(many.layer[j].bits, one.layer[j].bits, one.layer[j].nblocks * 64), 0, "layer %d", j);
  }
  cidf_free(&one);
  cidf_free(&many);
}
