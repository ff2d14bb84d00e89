/* app.h -- the server's context: configuration and the objects wired
 * together by main.c. Passed explicitly (no globals), so tests can build two. */
#ifndef WSY_APP_H
#define WSY_APP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/net.h"
#include "ws/ws.h"

#define WSYNC_VERSION "0.1.0"

typedef struct wsy_config {
  char listen_host[64];
  int listen_port;
  const char *data_dir;
  const char *static_dir;
  size_t max_message;        /* bytes */
  size_t max_queued;         /* bytes per connection */
  size_t max_header;         /* HTTP request line + headers */
  size_t max_body;           /* HTTP request body */
  unsigned max_connections;
  unsigned idle_timeout_ms;
  unsigned ping_interval_ms;
  unsigned handshake_timeout_ms;
  unsigned close_timeout_ms; /* wait for the peer's close frame */
  unsigned shutdown_grace_ms;
  const char *allowed_origins; /* comma-separated; NULL or "" = any */
  int log_level;
  int echo_endpoint;
  const char *auth_secret;   /* HS256 key for tokens; NULL: tokens refused */
  int insecure_demo;         /* hello may name a user without a token */
  int durability_full;       /* fsync before ack */
  unsigned resume_window_ms;
  unsigned poll_timeout_ms;  /* long-poll wait (PROTOCOL 2.4) */
  unsigned max_rooms;        /* per session */
  unsigned rate;             /* requests per second per session */
  unsigned burst;
  unsigned max_lock_ttl_ms;
  unsigned history_ops;      /* log entries kept per room */
  unsigned max_batch;        /* sub-ops in one batch op */
  unsigned max_fields;       /* members of one set */
  size_t max_field_size;
  size_t max_item_size;
  unsigned max_depth;
  unsigned max_room_items;
  size_t max_presence_state;
  unsigned max_catchup;      /* ops sent on join before a snapshot is preferred */
  size_t max_outbox;         /* bytes of unconfirmed messages kept per session */
  const char *api_key;       /* backend API bearer key; NULL: API off */
} wsy_config;

typedef struct bcast_registry bcast_registry;

struct app {
  uv_loop_t *loop;
  net_loop *net;
  const wsy_config *cfg;
  ws_limits ws_lim;
  uint64_t started_ms;
  int shutting_down;
  char static_root[4096]; /* realpath of --static, "" when none */
  bcast_registry *bcast;
  struct engine *sync;  /* the sync protocol (/v1/ws) */
};

#endif
