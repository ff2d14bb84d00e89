/* ring.h -- a room's resume ring: the frames fanned out in a room, kept
 * once per room (not once per recipient) so that a session can replay what
 * a dead connection lost (PROTOCOL.md 3.4, 3.5).
 *
 * Every frame room_deliver hands to at least one member gets the room's
 * next position (1, 2, ...). The ring keeps the newest frames up to a byte
 * cap (--resume-ring); older ones are evicted whatever the sessions have
 * confirmed, so its memory does not grow with the sessions nor with the
 * messages. Frames every recipient has confirmed go earlier (ring_hold,
 * ring_release), so a room of clients that send recv keeps little. A session's outbox names runs of positions (sess.h); a run
 * whose frames were evicted can no longer be replayed, and a resume that
 * needs them fails (the client joins again with since).
 *
 * Reference counted: the room holds one, and each outbox run one, so a ring
 * outlives its room while a session may still replay from it. Loop thread
 * only. */
#ifndef WSY_RING_H
#define WSY_RING_H

#include <stddef.h>
#include <stdint.h>

#include "../net/net.h"

typedef struct ring ring; /* opaque */

/* A new ring with one reference (the caller's), keeping up to max bytes of
 * frames (at least the newest one). *gauge (may be NULL) tracks the bytes
 * the ring holds: the rings' share of /metrics. */
ring *ring_new(size_t max, size_t *gauge);
ring *ring_ref(ring *rg);
void ring_unref(ring *rg);
/* Appends frame (a reference is taken) and returns its position; evicts
 * the oldest frames over the cap. */
uint64_t ring_push(ring *rg, net_chunk *frame);
/* An outbox names pos / no longer names pos .. pos + n - 1 (positions
 * already evicted are skipped). Frames at the head that no outbox names
 * are evicted at once: once every recipient confirmed a frame, the ring
 * does not keep it. */
void ring_hold(ring *rg, uint64_t pos);
void ring_release(ring *rg, uint64_t pos, uint64_t n);
/* The frame at pos (borrowed), or NULL once evicted (or never pushed). */
net_chunk *ring_get(const ring *rg, uint64_t pos);
/* The oldest position still held (== the next one when empty). */
uint64_t ring_first(const ring *rg);
/* Bytes of frames held. */
size_t ring_bytes(const ring *rg);

#endif
