/* engine_int.h -- what the modules of src/sync share: the engine (one per
 * event loop), the forward names of its objects, and a few helpers. Internal
 * to src/sync; main goes through engine.h.
 *
 * The modules, each with one header stating its contract:
 *   sess.h      sessions: hello/welcome/resume, the outbox, sending, expiry
 *   ring.h      a room's resume ring: recent frames kept once per room
 *   room.h      rooms: load/unload, membership, presence, locks, fan-out,
 *               and the room-kind hooks (kind.h: the document kind)
 *   commit.h    the log: admission, dedupe, sequencing, group commit, acks
 *   proto.h     the wire: decoding a message, dispatch, join/leave
 *   fallback.h  the HTTP transports of a session (SSE, long-poll, send)
 *   forward.h   those requests for another node's session, over the bus
 *   api.h       the backend HTTP API and /metrics
 *   bus.h       the bus seam: committed entries and ephemeral traffic of a
 *               room to every node (in-process, or Redis between nodes)
 *   cluster.h   several nodes: entries in seq order, refills from the
 *               store, stale replicas
 * Loop thread only, everything. */
#ifndef WSY_ENGINE_INT_H
#define WSY_ENGINE_INT_H

#include <jansson.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../auth/auth.h"
#include "../common/jsonw.h"
#include "../common/map.h"
#include "../config/config.h"
#include "cidf.h"
#include "../hooks/webhook.h"
#include "../http/httpd.h"
#include "../store/store.h"
#include "../ws/ws_conn.h"
#include "bus.h"
#include "engine.h"
#include "sync.h"

typedef struct sess sess;
typedef struct room room;
typedef struct opfwd opfwd;
typedef struct member member;
typedef struct pend pend;
typedef struct capture capture;
typedef struct author author;
typedef struct op_refusal op_refusal;
typedef struct hclient hclient;
typedef struct authhook authhook;
typedef struct stream stream;
typedef struct join_hold join_hold;
typedef struct defwrite defwrite;

struct engine {
  uv_loop_t *loop;
  net_loop *net;
  const wsy_config *cfg;
  int shutting_down;
  store *st;
  bus *bus;
  /* several nodes (cluster.h) */
  char node_id[64];
  char incarnation[17];  /* random per start: batch heads never repeat across restarts */
  uint64_t batch_no;     /* the number of the batch being filled (its head token, commit.c) */
  int clustered;      /* a bus between nodes (--bus) */
  struct fwd_state *fwd; /* fallback requests forwarded between nodes (forward.h); NULL until one */
  struct opfwd *ofw;     /* ops decided on their room's owner (opfwd.h); NULL until one */
  uint64_t ops_forwarded, ops_forwarded_in, ops_rerouted;
  /* The text of the message being dispatched and its tree, while it is
   * (proto.c): forwarded as it came rather than written again (opfwd.c). */
  const json_t *raw_of;
  const char *raw;
  size_t raw_len;
  uv_timer_t cluster_timer;
  uint64_t refills, refilled, bus_duplicates, bus_gaps, bus_received, reloads, stale_commits, redecided;
  uint64_t stale_deferred; /* session writes that found the replica stale with entries pending: deferred */
  uint64_t reloads_changes, reloads_whole; /* replicas read again as changes; changes that could not be used */
  uint64_t dedupe_fetches;  /* dedupe lookups read without blocking (commit.c) */
  uint64_t dedupe_lookups;  /* dedupe lookups read on the loop thread: the filter said maybe (commit.c) */
  uint64_t lookup_ids;
  defwrite *lookup_now;     /* the answered lookup of the write being decided again */
  int looked_up_now;        /* ... and dedupe() used it (the cid is not recorded) */
  struct dedupe_ask *asks;  /* lookups in flight (freed unanswered with the engine) */
  uint64_t fetch_ids;  /* the last store_fetch made (cluster.c) */
  char **check_names;  /* the periodic check out (cluster.c): the rooms it compares */
  size_t check_n;
  uint64_t check_behind;/* rooms it found behind the store (then fetched) */
  store *join_snap;    /* while joins go on after a fetch: its snapshot (a catch-up's entries, cluster.c) */
  unsigned tries_now;  /* while a deferred write is decided again: its tries (commit.c) */
  int unrecorded_now;  /* ... and its cid is known not to be stored: no store lookup */
  room *redeciding;    /* the room whose deferred writes are being decided again */
  map nodes;           /* the other nodes heard from (bus heartbeats) */
  uv_timer_t settle_timer; /* joins waiting for other nodes' presence answers (presence.c) */
  struct pask *pasks;      /* presence API requests waiting for them (presence.c) */
  struct read_wait *api_reads; /* backend reads waiting for their fetch (api.c) */
  room *pres_open;         /* rooms with a presence window open (presence_batch.c) */
  uv_timer_t pres_timer;   /* closes those due, every --presence-interval */
  uint64_t pres_windows, pres_windows_long; /* windows sent; of them, longer than the interval */
  webhooks *hooks;    /* NULL without --webhook */
  jw frame_text;      /* the text of the last frame made: reused, kept for the store */
  auth_config auth;   /* how hello verifies tokens (secret, JWKS, iss, aud, leeway) */
  /* rooms (room.c) */
  map rooms;          /* name -> room* */
  uint64_t last_fence;/* fences never repeat, even after a room unloads */
  uv_timer_t sweep;   /* lock expiry, HTTP sessions, session expiry */
  /* sessions (sess.c) */
  map sessions;       /* session token -> sess* (welcomed, not ended) */
  map by_device;      /* "user:device" -> sess* */
  sess **dead;        /* sessions whose connection went away, reaped in the check hook */
  size_t ndead, dead_cap;
  sess *due;          /* HTTP sessions whose pending poll can be answered */
  capture *cap;       /* set while a hello from POST /v1/send runs */
  unsigned ws_conns;
  /* the log (commit.c) */
  sync_limits lim;
  map cids;           /* "user:device|cid" -> pend* of entries not yet committed */
  cidf seen;          /* the dedupe filter: every recorded "user:device|cid" */
  store_batch *batch; /* being filled */
  pend *head, **tail;
  store_batch *fl_batch; /* committing */
  pend *fl_head;
  int busy;
  uv_check_t check;
  /* snapshots sent in parts (stream.c) */
  stream *streams;
  uv_timer_t stream_timer; /* streams waiting for their connections to drain */
  uv_idle_t stream_idle;   /* streams with parts to send: once per loop turn */
  uint64_t batch_started;    /* uv_hrtime when the committing batch left */
  /* figures (api.c: /metrics) */
  uint64_t ops_accepted, deliveries, commits, commit_failures;
  uint64_t ops_committed, ops_failed; /* entries of committed / failed batches */
  uint64_t joins_waited;              /* joins that waited for their room's pending entries (join.c) */
  uint64_t joins_refetched;           /* cluster: joins that waited for another fetch rather than read (join.c) */
  uint64_t api_writes_waited;         /* cluster: backend writes that waited for a fetch of their room */
  size_t outbox_mem;  /* bytes the sessions' outboxes hold themselves (sess.h) */
  size_t ring_mem;    /* bytes of frames the rooms' resume rings hold (ring.h) */
  uint64_t y_updates, y_compactions;  /* Yjs updates sequenced, compactions written */
  unsigned y_jobs;                    /* Yjs compactions on the thread pool */
  /* Health (/healthz): set when a commit fails, cleared by the next one
   * that stores something. */
  const char *api_line;      /* while a backend request is routed: its log line (api.c) */
  conn *http_req;            /* while an HTTP-transport request is routed (fallback.c) */
  int store_failing;
  char store_error[200];
  map rejected;              /* error code -> count (uintptr_t) */
  /* the hooks that decide (hook.h) */
  hclient *hc;               /* NULL: no --auth-hook nor --op-hook */
  authhook *ah;              /* the authorization hook's cache and figures */
  map opq;                   /* room name -> its queue of ops waiting for an op hook */
  int hooks_closing;         /* answers (cancellations) are dropped, not applied */
  unsigned hook_inflight;    /* hook requests whose callback has not run */
  uint64_t hook_calls, hook_cache_hits, hook_failures, ophook_calls, ophook_failures;
  uint64_t commit_hist[16];  /* wsync_commit_seconds buckets (api.c's bounds), +Inf last */
  double commit_sum;
  uint64_t lag_hist[16];     /* wsync_bus_lag_seconds buckets (the same bounds) */
  double lag_sum;
  uint64_t lag_count;
};

/* Loop time, ms. */
static inline uint64_t now_ms(const engine *e) { return uv_now(e->loop); }

static inline int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* nbytes (at most 32) random bytes as hex into out (2 * nbytes + 1). */
static inline void random_hex(char *out, size_t nbytes) {
  unsigned char b[32];
  if (RAND_bytes(b, (int)nbytes) != 1) abort();
  for (size_t i = 0; i < nbytes; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* A string member of a JSON object, or NULL. */
static inline const char *jstr(json_t *obj, const char *name) {
  return json_string_value(json_object_get(obj, name));
}

/* The payload of a frame made by ws_frame_new (unmasked, one frame). */
static inline const uint8_t *frame_payload(const net_chunk *f, size_t *len) {
  uint8_t l7 = f->data[1] & 0x7f;
  size_t hdr = l7 < 126 ? 2 : l7 == 126 ? 4 : 10;
  *len = f->len - hdr;
  return f->data + hdr;
}

/* engine.c: one log line (info) about a client connection or session: the
 * event, then remote (of c, else of s's WebSocket, else of the HTTP request
 * being routed), user and device (of s when known), then pairs of (key,
 * string value) ending with NULL. Lifecycle events only: never per message. */
void conn_event(engine *e, sess *s, conn *c, const char *event, ...);

/* engine.c: msg (borrowed) as one text frame; its text stays in
 * e->frame_text until the next frame is made. */
net_chunk *engine_frame(engine *e, json_t *msg);

#endif
