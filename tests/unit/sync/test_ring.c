/* Unit tests for src/sync/ring.c: a room's resume ring keeps the newest
 * frames up to its byte cap, positions grow by one per push, evicted
 * positions read as NULL, the gauge follows the bytes held, and every
 * reference the ring took is given back (ASan shows a leak otherwise). */
#include <criterion/criterion.h>

#include "../../../src/sync/ring.h"

static net_chunk *chunk(size_t len) {
  net_chunk *c = net_chunk_new(len);
  memset(c->data, 'x', len);
  return c;
}

Test(ring, positions_and_eviction_by_bytes) {
  size_t gauge = 0;
  ring *rg = ring_new(1000, &gauge);
  net_chunk *held[30];
  for (int i = 0; i < 30; i++) {
    held[i] = chunk(100);
    cr_assert_eq(ring_push(rg, held[i]), (uint64_t)i + 1);
    ring_hold(rg, (uint64_t)i + 1); /* a session's outbox names it */
  }
  /* 30 frames of 100 bytes under a cap of 1000: the newest 10 stay. */
  cr_assert_eq(ring_first(rg), 21);
  cr_assert_eq(ring_bytes(rg), 1000);
  cr_assert_eq(gauge, 1000);
  cr_assert_null(ring_get(rg, 20));
  cr_assert_null(ring_get(rg, 31));
  for (uint64_t p = 21; p <= 30; p++) cr_assert_eq(ring_get(rg, p), held[p - 1]);
  for (int i = 0; i < 30; i++) cr_assert_eq(held[i]->refs, i >= 20 ? 2u : 1u, "frame %d", i);
  ring_unref(rg);
  cr_assert_eq(gauge, 0);
  for (int i = 0; i < 30; i++) {
    cr_assert_eq(held[i]->refs, 1u);
    net_chunk_unref(held[i]);
  }
}

Test(ring, a_frame_larger_than_the_cap_is_still_kept_alone) {
  ring *rg = ring_new(100, NULL);
  net_chunk *a = chunk(50), *big = chunk(500);
  ring_hold(rg, ring_push(rg, a));
  uint64_t p = ring_push(rg, big);
  ring_hold(rg, p);
  cr_assert_eq(ring_first(rg), p);
  cr_assert_eq(ring_get(rg, p), big);
  cr_assert_null(ring_get(rg, p - 1));
  ring_unref(rg);
  net_chunk_unref(a);
  net_chunk_unref(big);
}

Test(ring, outlives_its_room_while_referenced) {
  ring *rg = ring_new(1 << 16, NULL);
  net_chunk *f = chunk(10);
  uint64_t p = ring_push(rg, f);
  ring_hold(rg, p);
  ring *outbox = ring_ref(rg); /* a session's outbox run */
  ring_unref(rg);               /* the room unloads */
  cr_assert_eq(ring_get(outbox, p), f);
  ring_unref(outbox);
  cr_assert_eq(f->refs, 1u);
  net_chunk_unref(f);
}

Test(ring, grows_past_and_shrinks_back_its_slot_array) {
  ring *rg = ring_new(1 << 20, NULL);
  net_chunk *f = chunk(8);
  for (int i = 0; i < 5000; i++) ring_hold(rg, ring_push(rg, f)); /* the same frame: 5000 references */
  cr_assert_eq(f->refs, 5001u);
  for (uint64_t p = 1; p <= 5000; p += 499) cr_assert_eq(ring_get(rg, p), f);
  ring_unref(rg);
  cr_assert_eq(f->refs, 1u);
  net_chunk_unref(f);

  /* Large frames after many small ones: few held, the array shrinks, and
   * every position still held reads back. */
  rg = ring_new(4096, NULL);
  net_chunk *small = chunk(1), *large = chunk(1000);
  for (int i = 0; i < 4000; i++) ring_hold(rg, ring_push(rg, small));
  for (int i = 0; i < 10; i++) ring_hold(rg, ring_push(rg, large));
  cr_assert_eq(ring_first(rg), 4010 - 4 + 1);
  for (uint64_t p = ring_first(rg); p <= 4010; p++) cr_assert_eq(ring_get(rg, p), large);
  ring_unref(rg);
  cr_assert_eq(small->refs, 1u);
  cr_assert_eq(large->refs, 1u);
  net_chunk_unref(small);
  net_chunk_unref(large);
}

Test(ring, frames_every_outbox_released_go_from_the_head) {
  size_t gauge = 0;
  ring *rg = ring_new(1 << 16, &gauge);
  net_chunk *f = chunk(100);
  /* Two sessions got positions 1-10, a third only 6-10. */
  for (uint64_t p = 1; p <= 10; p++) {
    cr_assert_eq(ring_push(rg, f), p);
    ring_hold(rg, p);
    ring_hold(rg, p);
    if (p >= 6) ring_hold(rg, p);
  }
  ring_release(rg, 1, 10); /* the first confirms everything */
  cr_assert_eq(ring_first(rg), 1, "the second still names 1-10");
  ring_release(rg, 1, 7); /* the second confirms up to 7 */
  cr_assert_eq(ring_first(rg), 6, "1-5 are no one's now; 6-7 the third's");
  cr_assert_eq(gauge, 500);
  ring_release(rg, 6, 5); /* the third confirms everything */
  cr_assert_eq(ring_first(rg), 8);
  ring_release(rg, 8, 3);
  cr_assert_eq(ring_first(rg), 11);
  cr_assert_eq(ring_bytes(rg), 0);
  cr_assert_eq(gauge, 0);
  /* A frame nobody was given goes with the next push. */
  ring_push(rg, f);
  ring_hold(rg, ring_push(rg, f));
  cr_assert_eq(ring_first(rg), 12);
  ring_unref(rg);
  cr_assert_eq(f->refs, 1u);
  net_chunk_unref(f);
}
