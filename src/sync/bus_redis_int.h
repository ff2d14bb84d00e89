/* bus_redis_int.h -- private to the Redis bus (bus_redis.c,
** bus_redis_gather.c): its state and the helpers they share. */
#ifndef WSY_BUS_REDIS_INT_H
#define WSY_BUS_REDIS_INT_H

#include <hiredis/async.h>

#include "../common/map.h"
#include "bus_int.h"

#define RB_VERSION 1
#define RB_GATHERED 2           /* several room messages in one (rb_hold) */
#define RB_GATHER_MAX (256u << 10) /* bytes gathered for a room before they go at once */
#define RB_BEAT_MS 250          /* the timer's grain: every figure is checked this often */
#define RB_MAX_OUTBUF (64u << 20) /* unsent bytes on CMD before publishes are dropped */
#define RB_RESUB_BATCH 256      /* channels per SUBSCRIBE when resubscribing */
#define RB_ROOM_PREFIX "wsync:r:"
#define RB_NODE_PREFIX "wsync:n:"
#define RB_HB_CHANNEL "wsync:hb"

typedef struct rnode {
  uint64_t seen; /* loop time the node was last heard from */
  char inc[17];  /* its incarnation */
} rnode;

typedef struct rbus {
  bus base;
  uv_loop_t *loop;
  char *host;
  int port;
  int db; /* -1: none given */
  char *node;
  char *node_chan;
  char inc[17];     /* this node's incarnation (the heartbeat) */
  redisAsyncContext *cmd, *sub;
  int cmd_ready, sub_ready;
  int up;       /* ev.link(1) reported and not taken back */
  int ever_up;
  int freeing;  /* bus_free called: no callback from now on */
  int warned;   /* a failure was logged at warn since the link was last up */
  int open_handles;
  uint64_t attempt_at; /* the current connection attempt began (0: not connecting) */
  uint64_t ping_at;    /* a PING is outstanding since (0: none) */
  uint64_t last_reply; /* CMD last answered anything */
  uint64_t next_ping, next_hb;
  unsigned backoff_ms;
  uv_timer_t beat, retry;
  map rooms; /* room -> count of bus_subscribe, as a pointer-sized integer */
  map nodes; /* node id -> rnode */
  uint64_t received, dropped, reconnects, malformed;
  char *out; /* the command being formatted (RESP), reused */
  size_t out_cap;
  char *strs; /* NUL-terminated copies of a received message's strings */
  size_t strs_cap;
  /* A hold (rb_hold): each room's messages, gathered until it ends. */
  int holding;
  map gather_at; /* room -> index + 1 into gather */
  struct gathered {
    char *room;
    uint8_t *data; /* u8 RB_GATHERED, then (u32 length, message)* */
    size_t len, cap;
    unsigned n;
  } *gather;
  size_t ngather, gather_cap;
} rbus;

/* Formatting (bus_redis.c): a u16-length string; strlen or 0 for NULL; a
 * PUBLISH of mlen bytes whose message the caller writes at *msg (returns
 * the command's length); queuing it on CMD (0, or -1: not sent). */
size_t rb_put_str(uint8_t *p, const char *s, size_t n);
size_t rb_slen(const char *s);
size_t rb_format_publish(rbus *b, const char *prefix, const char *name, size_t mlen, uint8_t **msg);
int rb_send_cmd(rbus *b, size_t len);

/* Room messages (bus_redis_gather.c): the length of m's version-1 message
 * with a payload of plen bytes, and the message written at p. */
size_t rb_room_msg_len(const rbus *b, const bus_msg *m, size_t plen);
void rb_room_msg_write(const rbus *b, const bus_msg *m, const uint8_t *payload, size_t plen, uint8_t *p);
/* m's message added to its room's gathered ones (mlen bytes; what was
 * gathered goes first when the room's would pass RB_GATHER_MAX). */
void rb_gather_add(rbus *b, const bus_msg *m, const uint8_t *payload, size_t plen, size_t mlen);
/* Publishes a room's gathered messages now. */
void rb_gather_send(rbus *b, struct gathered *g);
/* bus_ops.hold; the end of the outermost hold publishes every room's. */
void rb_hold(bus *base, int on);
void rb_gather_free(rbus *b);

#endif
