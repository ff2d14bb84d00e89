/* cidf.h -- the dedupe filter: which (user:device, cid) keys the store may
 * have recorded, so that nearly every new op skips a store lookup
 * (commit.c: dedupe). A Bloom filter that grows with what it holds.
 *
 * Why it grows: dedupe records are kept for ever (PROTOCOL.md 5.5), and a
 * filter of fixed size fills up. The one it replaces (2^24 bits, 4 probes)
 * answered "maybe" for 7% of new cids after 3 million recorded ones and
 * for most after 10 million; each "maybe" is a store read on the loop
 * thread, so a long-lived node slowed down with its history
 * (docs/PERFORMANCE.md, "The dedupe filter").
 *
 * How: layers of blocked Bloom filters (one 64-byte cache line per key,
 * CIDF_PROBES bits in it, CIDF_BITS_PER_KEY bits per key of capacity). A
 * key goes to the newest layer; when that layer holds its capacity, a new
 * one with twice the capacity follows. A lookup asks every layer (one
 * cache line each): log2 of the growth, a handful at most. Each full layer
 * answers "maybe" for about 0.2% of keys it never saw, so the share adds
 * up with the layers (1.6% after growing 400-fold: tests/unit/sync/
 * test_cidf.c); a filter that grew from 1 million keys to 100 million in
 * one run of the process would have 7 layers, about 1.4%. At start the filter
 * is one layer: --dedupe-filter keys, or, for a store that holds more
 * records, twice their number (commit.c reads them again), so
 * layers pile up only with what one run of the process records.
 *
 * Only the key's 64-bit hash is kept (cidf_hash); the filter never says
 * "no" for a key it was given. Loop thread only. */
#ifndef WSY_CIDF_H
#define WSY_CIDF_H

#include <stddef.h>
#include <stdint.h>

#define CIDF_BITS_PER_KEY 16
#define CIDF_PROBES 6
#define CIDF_MAX_LAYERS 40

typedef struct cidf_layer {
  uint64_t *bits;   /* nblocks blocks of 8 words, 64-byte aligned, in raw */
  void *raw;
  size_t nblocks;
  size_t cap, n;    /* keys it is sized for, keys added */
} cidf_layer;

typedef struct cidf {
  cidf_layer layer[CIDF_MAX_LAYERS];
  int nlayers;
  size_t keys;      /* keys added, over every layer */
} cidf;

/* A filter whose first layer holds cap keys (at least 64). */
void cidf_init(cidf *f, size_t cap);
void cidf_free(cidf *f);
/* The hash of the key "dkey|cid". */
uint64_t cidf_hash(const char *dkey, const char *cid);
void cidf_add(cidf *f, uint64_t h);
/* The same for n keys, faster: their cache lines are fetched together (the
 * keys a node reads at start). */
void cidf_add_many(cidf *f, const uint64_t *h, size_t n);
/* 0: the key was never added; 1: it may have been. */
int cidf_maybe(const cidf *f, uint64_t h);
/* Bytes of the layers' bits (the gauge of /metrics). */
size_t cidf_bytes(const cidf *f);

#endif
