/* ring.c -- the resume ring of a room (ring.h): a power-of-two array of
 * frame references indexed by position, grown while the byte cap allows
 * more frames than it has slots, with a count per slot of the outbox runs
 * naming it. */
#include "ring.h"

#include "../common/wsy.h"

struct ring {
  int refs;
  net_chunk **slot;
  uint32_t *held;      /* per slot: outbox runs that name the position */
  uint32_t cap;        /* slots, a power of two (0 before the first push) */
  uint64_t first;      /* position of the oldest frame held */
  uint64_t next;       /* position the next push gets */
  size_t bytes, max;
  size_t *gauge;
};

ring *ring_new(size_t max, size_t *gauge) {
  ring *rg = wsy_calloc(1, sizeof *rg);
  rg->refs = 1;
  rg->first = rg->next = 1;
  rg->max = max;
  rg->gauge = gauge;
  return rg;
}

ring *ring_ref(ring *rg) {
  rg->refs++;
  return rg;
}

static void evict(ring *rg) {
  net_chunk *ch = rg->slot[rg->first & (rg->cap - 1)];
  rg->held[rg->first & (rg->cap - 1)] = 0;
  rg->bytes -= ch->len;
  if (rg->gauge) *rg->gauge -= ch->len;
  net_chunk_unref(ch);
  rg->first++;
}

void ring_unref(ring *rg) {
  if (--rg->refs > 0) return;
  while (rg->first < rg->next) evict(rg);
  wsy_free(rg->slot);
  wsy_free(rg->held);
  wsy_free(rg);
}

/* Frames no outbox names any more are of no use for a resume: they go
 * from the head as soon as the sessions that got them confirmed them. */
static void evict_unheld(ring *rg) {
  while (rg->first < rg->next && !rg->held[rg->first & (rg->cap - 1)]) evict(rg);
}

static void resize(ring *rg, uint32_t cap) {
  net_chunk **s = wsy_malloc(cap * sizeof *s);
  uint32_t *h = wsy_malloc(cap * sizeof *h);
  for (uint64_t p = rg->first; p < rg->next; p++) {
    s[p & (cap - 1)] = rg->slot[p & (rg->cap - 1)];
    h[p & (cap - 1)] = rg->held[p & (rg->cap - 1)];
  }
  wsy_free(rg->slot);
  wsy_free(rg->held);
  rg->slot = s;
  rg->held = h;
  rg->cap = cap;
}

void ring_hold(ring *rg, uint64_t pos) {
  if (pos >= rg->first && pos < rg->next) rg->held[pos & (rg->cap - 1)]++;
}

void ring_release(ring *rg, uint64_t pos, uint64_t n) {
  uint64_t a = pos > rg->first ? pos : rg->first, b = pos + n < rg->next ? pos + n : rg->next;
  for (uint64_t p = a; p < b; p++) rg->held[p & (rg->cap - 1)]--;
  evict_unheld(rg);
}

uint64_t ring_push(ring *rg, net_chunk *frame) {
  evict_unheld(rg);
  if (rg->next - rg->first == rg->cap) resize(rg, rg->cap ? rg->cap * 2 : 16);
  uint64_t pos = rg->next++;
  rg->slot[pos & (rg->cap - 1)] = net_chunk_ref(frame);
  rg->held[pos & (rg->cap - 1)] = 0;
  rg->bytes += frame->len;
  if (rg->gauge) *rg->gauge += frame->len;
  while (rg->bytes > rg->max && rg->next - rg->first > 1) evict(rg);
  /* Shrink back once a burst of small frames has passed, so an idle room
   * does not keep a large slot array. */
  if (rg->cap > 64 && rg->next - rg->first < rg->cap / 8) resize(rg, rg->cap / 4);
  return pos;
}

net_chunk *ring_get(const ring *rg, uint64_t pos) {
  if (pos < rg->first || pos >= rg->next) return NULL;
  return rg->slot[pos & (rg->cap - 1)];
}

uint64_t ring_first(const ring *rg) { return rg->first; }
size_t ring_bytes(const ring *rg) { return rg->bytes; }
