/* bus.h -- the BUS SEAM: carries what happens in a room to every node that
 * has members there. Two kinds of traffic:
 *   - committed entries (ops, stored publishes), tagged (room, epoch, seq):
 *     receivers deliver them in seq order; one lost or late is refilled
 *     from the store, so losing the bus costs latency, never data;
 *   - ephemeral messages (ephemeral publishes, presence, cursor and lock
 *     events): seq 0, best effort.
 * A message is framed once and the same frame (a net_chunk, reference
 * counted) goes to every recipient: no copy and no allocation per
 * recipient, whichever bus carries it.
 *
 * The in-process bus (bus_local_new) is a function call: bus_publish calls
 * the deliver function at once, on the loop thread, before it returns. A
 * bus between nodes (Redis, planned: docs/SERVER.md) publishes the frame's
 * payload and calls deliver on each node from its own loop.
 *
 * Loop thread only. */
#ifndef WSY_BUS_H
#define WSY_BUS_H

#include <stdint.h>

#include "../net/net.h"

typedef struct bus bus; /* opaque */

typedef struct bus_msg {
  const char *room;
  const char *epoch;     /* with seq; NULL for ephemeral traffic */
  uint64_t seq;          /* a committed entry's seq; 0: ephemeral */
  net_chunk *frame;      /* borrowed: receivers take their own references */
  const char *except;    /* "user:device" of the session it must not reach, or NULL */
  const char *only_user; /* only the sessions of this user, or NULL */
} bus_msg;

/* Delivers m to this node's members of m->room. m and what it points to are
 * valid during the call only. */
typedef void (*bus_deliver_fn)(void *ud, const bus_msg *m);

bus *bus_local_new(bus_deliver_fn deliver, void *ud);
/* Hands m to every node with members in m->room, this one included. */
void bus_publish(bus *b, const bus_msg *m);
/* The bus's name ("local"), for logs and /healthz. */
const char *bus_name(const bus *b);
void bus_free(bus *b);

#endif
