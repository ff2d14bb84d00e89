/* ws_conn.h -- a WebSocket connection on top of net: the upgrade, message
 * delivery to an endpoint, pings and idle timeout, the close handshake, and
 * sending (one frame encoded once, shared by every recipient).
 *
 * Loop thread only. The conn's protocol ops are swapped from HTTP to these at
 * the upgrade; the state lives inside the conn (net ext), no extra
 * allocation while the connection idles. */
#ifndef WSY_WS_CONN_H
#define WSY_WS_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "../http/httpd.h"
#include "../net/net.h"
#include "ws.h"

typedef struct ws_conn ws_conn;

/* Settings shared by the connections of a route (main fills them). */
typedef struct ws_config {
  ws_limits lim;
  unsigned close_timeout_ms;   /* wait for the peer's close frame */
  unsigned idle_timeout_ms;    /* silent longer: close 1001 (0: never) */
  unsigned ping_interval_ms;   /* silent this long: ping (0: never) */
  const char *allowed_origins; /* httpd_origin_allowed() list; NULL: any */
  int compression;             /* accept permessage-deflate offers (--compression) */
} ws_config;

/* What a WebSocket route does with its connections. */
typedef struct ws_endpoint {
  const char *name;
  /* Right after the 101 response; may send. r is the upgrade request, valid
   * during the call only. Non-zero refuses (close 1008). */
  int (*on_open)(ws_conn *w, const httpd_req *r);
  /* A complete, validated message (text is valid UTF-8). The payload is
   * valid during the call only. */
  void (*on_message)(ws_conn *w, int opcode, uint8_t *data, size_t len);
  /* The connection is going away (any reason); release endpoint state. */
  void (*on_close)(ws_conn *w);
  /* Optional: called on the loop's tick while the connection is open. */
  void (*on_tick)(ws_conn *w, uint64_t now_ms);
} ws_endpoint;

/* A WebSocket route: registered by main with httpd_route_upgrade(hs, path,
 * ws_http_upgrade, &route). It must outlive its connections. */
typedef struct ws_route {
  const ws_endpoint *ep;
  void *ud;               /* the endpoint's context: ws_conn_ud() */
  const ws_config *cfg;
} ws_route;

size_t ws_conn_ext_size(void);

/* httpd_upgrade_handler for a ws_route (route): validates the opening
 * handshake (RFC 6455 4.2.1: 426 without Upgrade or version 13, 400 for a
 * malformed one, 403 for an origin not allowed), sends 101, switches the
 * conn to WebSocket and feeds rest[0..rest_len) to the frame parser. */
int ws_http_upgrade(void *route, conn *c, httpd_req *r, uint8_t *rest, size_t rest_len);

/* Returns the frame for payload as a chunk with one reference, owned by the
 * caller; send it to any number of connections with ws_send_frame().
 *
 * With permessage-deflate agreed, ws_send_frame() sends a data frame of
 * WS_PMD_MIN_SIZE bytes or more compressed: the compressed frame is made
 * once per frame (and window size) and shared by every recipient, held in
 * a small cache keyed by the frame for as long as someone else holds the
 * frame. Control frames and small messages go out as they are. */
net_chunk *ws_frame_new(int opcode, const void *payload, size_t len);
/* Queues a shared frame. A consumer over its queue cap is closed with 1013
 * (logged, counted) and WSY_SLOW returned; others keep receiving. */
int ws_send_frame(ws_conn *w, net_chunk *frame);
/* Frames and queues one message (a copy of payload). */
int ws_send(ws_conn *w, int opcode, const void *payload, size_t len);
/* Starts the close handshake with code and reason (reason <= 123 bytes). */
void ws_close(ws_conn *w, unsigned code, const char *reason);

/* True when permessage-deflate was agreed with this connection. */
int ws_conn_compressed(const ws_conn *w);
/* Drops the shared compressed frames and zlib streams (at exit). */
void ws_conn_pmd_release(void);

conn *ws_conn_net(ws_conn *w);
/* The route's ud: the endpoint's context. */
void *ws_conn_ud(ws_conn *w);
/* One pointer of endpoint state per connection. */
void *ws_conn_user(ws_conn *w);
void ws_conn_set_user(ws_conn *w, void *user);
/* One integer of endpoint state per connection, e.g. its index in an
 * array of a room's members (no separate allocation per member). */
uint32_t ws_conn_slot(const ws_conn *w);
void ws_conn_set_slot(ws_conn *w, uint32_t slot);
/* The close code of w: the first one sent or received (*by_peer, when not
 * NULL, says whose), or 1006 when the connection went away without one. */
unsigned ws_conn_close_code(const ws_conn *w, int *by_peer);
/* The ws_conn of a conn, or NULL when the conn does not speak WebSocket. */
ws_conn *ws_conn_of(conn *c);

/* Endpoints built into the server core. */
extern const ws_endpoint ws_echo_endpoint;      /* /v1/echo: each message back */
/* /v1/broadcast?room=R: to all in R. Its route's ud is a bcast_registry. */
extern const ws_endpoint ws_broadcast_endpoint;
typedef struct bcast_registry bcast_registry;
bcast_registry *ws_bcast_new(void);
void ws_bcast_free(bcast_registry *reg);

#endif
