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
 * the deliver function at once, on the loop thread, before it returns. The
 * bus between nodes (Redis, bus_redis.c, docs/CLUSTER.md) also delivers to
 * this node at once, then publishes the frame's payload on the room's
 * channel; each other node subscribed to the room builds one frame from it
 * and calls deliver from its own loop. It also carries messages to one
 * node (a channel per node) and a heartbeat per node, so that a node that
 * dies is noticed within a TTL.
 *
 * Loop thread only. */
#ifndef WSY_BUS_H
#define WSY_BUS_H

#include <stdint.h>

#include <uv.h>

#include "../common/wsy.h"
#include "../net/net.h"

typedef struct bus bus; /* opaque */

typedef struct bus_msg {
  const char *room;
  const char *epoch;     /* with seq; NULL for ephemeral traffic */
  uint64_t seq;          /* a committed entry's seq; 0: ephemeral */
  net_chunk *frame;      /* borrowed: receivers take their own references */
  const char *except;    /* "user:device" of the session it must not reach, or NULL */
  const char *only_user; /* only the sessions of this user, or NULL */
  const char *origin;    /* on delivery: the node that published it (NULL: this node) */
  /* A presence window's merged event (room.h), already in the room's ring
   * at this position: on this node it skips the members that joined during
   * the window (they get theirs apart, from the same positions where they
   * can). 0 otherwise; not carried to other nodes. */
  uint64_t pres_pos;
} bus_msg;

/* Delivers m to this node's members of m->room. m and what it points to are
 * valid during the call only. */
typedef void (*bus_deliver_fn)(void *ud, const bus_msg *m);

/* What a bus between nodes reports, on the loop thread. Every callback but
 * deliver may be NULL. */
typedef struct bus_events {
  bus_deliver_fn deliver;
  /* A message sent to this node alone (bus_send_node): kind and body as
   * given by the sender (body is not NUL-terminated; len bytes). */
  void (*direct)(void *ud, const char *from_node, const char *kind, const uint8_t *body, size_t len);
  /* Another node was heard from for the first time (up 1), or was not
   * heard from for the heartbeat TTL (up 0: it is gone). */
  void (*node)(void *ud, const char *node, int up);
  /* The link to the bus came up (up 1: subscriptions are in place again,
   * whatever was published meanwhile may be lost: refill from the store)
   * or went down (up 0). */
  void (*link)(void *ud, int up);
  void *ud;
} bus_events;

/* Figures for /metrics. */
typedef struct bus_stats {
  uint64_t published;   /* messages handed to the bus */
  uint64_t received;    /* messages delivered from other nodes */
  uint64_t dropped;     /* publishes lost because the link was down */
  uint64_t reconnects;  /* times the link came back */
  uint64_t malformed;   /* messages from the bus that did not parse, dropped */
  int up;               /* link up now (the local bus: always) */
  unsigned nodes;       /* other nodes heard from within the TTL */
} bus_stats;

bus *bus_local_new(bus_deliver_fn deliver, void *ud);
/* A bus over Redis (bus_redis.c, which also gives the channels and the wire
 * format): url "redis://HOST:PORT[/DB]" (HOST a name, IPv4 or [IPv6]; no
 * credentials), node_id names this node on the bus (1-128 characters of
 * A-Z a-z 0-9 . _ : @ -; two nodes must not share one: each ignores what
 * the other publishes). Connects in the background (the link event says
 * when it is up) and reconnects by itself. 0, or WSY_INVAL with a sentence
 * in err (bad url or node id). The DB is SELECTed on the command
 * connection, but Redis pub/sub is global to a server, not per DB: two
 * clusters need two Redis servers, not two DBs.
 *
 * Its figures (checked on a 250 ms timer, so each may be late by that):
 * each node publishes a heartbeat every BUS_REDIS_HEARTBEAT_MS; a node not
 * heard from for BUS_REDIS_NODE_TTL_MS is reported gone (node event up 0;
 * while this node's own link is down nobody is reported gone, and each
 * known node gets a full TTL again once it is back up). A PING goes to
 * Redis every BUS_REDIS_PING_MS; when Redis answers nothing for
 * BUS_REDIS_PING_TIMEOUT_MS with a PING out (a stopped or unreachable
 * server: noticed within PING_MS + PING_TIMEOUT_MS + 250 ms of it
 * stopping; replies to publishes count as answers, so a long queue ahead
 * of the PING is not taken for a dead server), or a connection attempt is not up within
 * BUS_REDIS_CONNECT_TIMEOUT_MS, the link is dropped (link event up 0,
 * once) and reconnected after BUS_REDIS_BACKOFF_MIN_MS, doubling up to
 * BUS_REDIS_BACKOFF_MAX_MS between attempts. While the link is down,
 * bus_publish still delivers to this node and counts the publish as
 * dropped; bus_send_node returns WSY_AGAIN. */
#define BUS_REDIS_HEARTBEAT_MS 1000
#define BUS_REDIS_NODE_TTL_MS 3000
#define BUS_REDIS_PING_MS 1000
#define BUS_REDIS_PING_TIMEOUT_MS 2000
#define BUS_REDIS_CONNECT_TIMEOUT_MS 2000
#define BUS_REDIS_BACKOFF_MIN_MS 100
#define BUS_REDIS_BACKOFF_MAX_MS 2000
int bus_redis_new(uv_loop_t *loop, const char *url, const char *node_id, const bus_events *ev, bus **out,
                  char *err, size_t errlen) WSY_WUR;
/* Hands m to every node with members in m->room: this node's members at
 * once (deliver is called before bus_publish returns), the others' when
 * the message reaches them. */
void bus_publish(bus *b, const bus_msg *m);
/* Between bus_hold and bus_release (nested: the outermost counts), what is
 * published for other nodes is gathered and goes at the release, one
 * message per room carrying its messages in order (a commit's entries,
 * commit.c): fewer messages for the bus and every receiver to handle.
 * This node's deliveries stay immediate; the local bus ignores both.
 * bus_send_node is never gathered: a commit's answers to forwarded ops go
 * at once, ahead of its entries (opfwd.c: an ack before its entry). */
void bus_hold(bus *b);
void bus_release(bus *b);
/* This node has members in room (counted: one unsubscribe per subscribe):
 * other nodes' traffic of the room is delivered here from now on. */
void bus_subscribe(bus *b, const char *room);
void bus_unsubscribe(bus *b, const char *room);
/* Sends body to node alone (its direct callback). 0, or WSY_AGAIN when the
 * link is down, WSY_INVAL on the local bus (there is no other node). */
int bus_send_node(bus *b, const char *node, const char *kind, const void *body, size_t len) WSY_WUR;
void bus_get_stats(const bus *b, bus_stats *out);
/* The bus's name ("local", "redis"), for logs and /healthz. */
const char *bus_name(const bus *b);
/* Closes the bus's connections and frees it; callbacks are not called
 * once it returns. NULL is allowed. */
void bus_free(bus *b);

#endif
