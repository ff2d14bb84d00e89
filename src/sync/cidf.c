/* cidf.c -- the dedupe filter (cidf.h). */
#include "cidf.h"

#include <string.h>

#include "../common/wsy.h"

#define BLOCK_WORDS 8 /* 512 bits: one cache line */

static void layer_new(cidf_layer *l, size_t cap) {
  if (cap < 64) cap = 64;
  l->cap = cap;
  l->n = 0;
  l->nblocks = (cap * CIDF_BITS_PER_KEY + 511) / 512;
  size_t bytes = l->nblocks * BLOCK_WORDS * sizeof(uint64_t);
  l->raw = wsy_calloc(bytes + 64, 1); /* aligned below: a block never straddles two lines */
  l->bits = (uint64_t *)(((uintptr_t)l->raw + 63) & ~(uintptr_t)63);
}

void cidf_init(cidf *f, size_t cap) {
  memset(f, 0, sizeof *f);
  layer_new(&f->layer[0], cap);
  f->nlayers = 1;
}

void cidf_free(cidf *f) {
  for (int i = 0; i < f->nlayers; i++) wsy_free(f->layer[i].raw);
  memset(f, 0, sizeof *f);
}

uint64_t cidf_hash(const char *dkey, const char *cid) {
  /* FNV-1a, then a finalizer that spreads every bit */
  uint64_t h = wsy_fnv1a(wsy_fnv1a_byte(wsy_fnv1a(1469598103934665603ull, dkey), '|'), cid);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

/* The key's block (from the high 32 bits) and its probes in the block
 * (double hashing on the low 18 bits, an odd stride: distinct bits). */
static uint64_t *block_of(const cidf_layer *l, uint64_t h) {
  return l->bits + (size_t)(((h >> 32) * (uint64_t)l->nblocks) >> 32) * BLOCK_WORDS;
}

/* The layer the next key goes to: a new one when the newest is full. */
static cidf_layer *layer_for_add(cidf *f) {
  cidf_layer *l = &f->layer[f->nlayers - 1];
  if (l->n >= l->cap && f->nlayers < CIDF_MAX_LAYERS) {
    layer_new(&f->layer[f->nlayers], l->cap * 2);
    l = &f->layer[f->nlayers++];
  }
  return l;
}

static void set_bits(uint64_t *b, uint64_t h) {
  uint32_t a = (uint32_t)h & 511, s = ((uint32_t)(h >> 9) & 511) | 1;
  for (int i = 0; i < CIDF_PROBES; i++) {
    uint32_t p = (a + (uint32_t)i * s) & 511;
    b[p >> 6] |= 1ull << (p & 63);
  }
}

void cidf_add(cidf *f, uint64_t h) {
  cidf_layer *l = layer_for_add(f);
  set_bits(block_of(l, h), h);
  l->n++;
  f->keys++;
}

void cidf_add_many(cidf *f, const uint64_t *h, size_t n) {
  while (n) {
    cidf_layer *l = layer_for_add(f);
    size_t k = l->n < l->cap ? l->cap - l->n : n; /* the last layer takes the rest */
    if (k > n) k = n;
    if (k > 64) k = 64;
    uint64_t *b[64];
    for (size_t i = 0; i < k; i++) { /* every block's miss under way at once */
      b[i] = block_of(l, h[i]);
      __builtin_prefetch(b[i], 1);
    }
    for (size_t i = 0; i < k; i++) set_bits(b[i], h[i]);
    l->n += k;
    f->keys += k;
    h += k;
    n -= k;
  }
}

int cidf_maybe(const cidf *f, uint64_t h) {
  uint32_t a = (uint32_t)h & 511, s = ((uint32_t)(h >> 9) & 511) | 1;
  for (int j = f->nlayers - 1; j >= 0; j--) { /* the newest first: it holds the most keys */
    const uint64_t *b = block_of(&f->layer[j], h);
    int all = 1;
    for (int i = 0; i < CIDF_PROBES && all; i++) {
      uint32_t p = (a + (uint32_t)i * s) & 511;
      all = (b[p >> 6] >> (p & 63)) & 1;
    }
    if (all) return 1;
  }
  return 0;
}

size_t cidf_bytes(const cidf *f) {
  size_t n = 0;
  for (int i = 0; i < f->nlayers; i++) n += f->layer[i].nblocks * BLOCK_WORDS * sizeof(uint64_t);
  return n;
}
