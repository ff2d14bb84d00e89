/* engine_int.h -- what engine.c (the protocol engine) and fallback.c (its
 * HTTP transports, PROTOCOL.md 2.4) share: the session, room and engine
 * structures and the few functions each calls in the other. Internal to
 * src/sync; everything else goes through engine.h. */
#ifndef WSY_ENGINE_INT_H
#define WSY_ENGINE_INT_H

#include <jansson.h>
#include <stdint.h>

#include "../auth/auth.h"
#include "../common/jsonw.h"
#include "../common/map.h"
#include "../http/httpd.h"
#include "../store/store.h"
#include "engine.h"
#include "sync.h"
#include "text.h"


#define MAX_CATCHUP (e->app->cfg->max_catchup)
#define MAX_PRESENCE_STATE (e->app->cfg->max_presence_state)

typedef struct sess sess;
typedef struct room room;

typedef struct member {
  sess *s;
  room *r;
  struct member *prev, *next; /* room's members */
  struct member *snext;       /* session's rooms */
  uint64_t from_seq;          /* entries <= this were in its joined */
  uint64_t cursor;            /* highest seq the device says it applied */
  json_t *state;
} member;

/* An item's lock. Kept after release (holder NULL) so fences keep growing. */
/* The text ops accepted on one field, newest last: ops[i] took the field
 * from revision base + i to base + i + 1. An op made at revision R is
 * transformed against ops[R - base ...] (PROTOCOL.md 5.7). */
typedef struct text_hist {
  uint64_t base;
  text_op **ops;
  size_t n, cap;
} text_hist;

#define TEXT_HISTORY 1024 /* ops kept per field; older revisions: rev_too_old */

typedef struct lock {
  sess *holder;
  uint64_t fence;
  uint64_t expires;  /* loop ms */
} lock;

struct room {
  char *name;
  char epoch[STORE_EPOCH_MAX + 1];
  uint64_t seq;      /* last seq assigned (committed or not) */
  doc d;
  member *members;
  unsigned nmembers;
  unsigned pending;  /* entries of this room in batches not yet done */
  map locks;         /* item -> lock* */
  map texts;         /* "item\x1ffield" -> text_hist*: recent text ops, for OT */
  unsigned nheld;
  int broken;        /* a commit failed: refuse writes, reload when idle */
};

struct sess {
  engine *e;
  ws_conn *w;        /* NULL once the connection is gone */
  int refs;
  int welcomed;
  auth_identity id;
  char device[65];
  char dkey[140];    /* "user:device": the dedupe key of the store */
  json_t *from;      /* {"user","device"} of its broadcasts, made on first use */
  char token[33];
  member *rooms;
  unsigned nrooms;
  sess *dead_next;  /* on e->dead once its connection is gone */
  int ended;         /* bye, replaced, or expired: no resume */
  uint64_t detached_at; /* loop ms when the connection went away (0: attached) */
  /* Outbox (PROTOCOL.md 3.4): every message after welcome has an ordinal;
   * the frames (shared with the broadcast, not copied) are kept until the
   * client confirms them with recv or the byte cap drops the oldest. */
  net_chunk **ob;
  uint32_t ob_head, ob_len, ob_cap;
  uint64_t ob_first;   /* ordinal of ob[head] */
  uint64_t ob_next;    /* ordinal of the next message */
  size_t ob_bytes;
  uint64_t opened;   /* loop ms of the connection's upgrade */
  /* HTTP transports (PROTOCOL.md 2.4): the downstream is an SSE stream or a
   * pending long-poll; httpd clears dn when that connection is freed. */
  int http;          /* the session is on HTTP transports (not WebSocket) */
  conn *dn;
  int dn_kind;       /* DN_SSE or DN_POLL while dn is set */
  uint64_t dn_at;    /* loop ms: poll start, or the stream's last write */
  uint64_t dn_lost;  /* loop ms the last downstream went away */
  uint64_t poll_last;/* the pending poll's last */
  uint64_t dn_upto;  /* HTTP: the highest ordinal handed to a downstream */
  char *dn_headers;  /* CORS headers for the deferred poll answer */
  sess *due_next;    /* on e->due: a pending poll has something to say */
  int due;
  double tokens;     /* rate limit bucket */
  uint64_t tokens_ms;
};

enum { P_OP, P_DUP, P_CREATE, P_ERR }; /* P_ERR: a refusal sent in order behind pending commits */
enum { DN_SSE = 1, DN_POLL };
#define DETACH_GRACE_MS 10000 /* no downstream this long: detached (2.4) */

/* Where the direct answers to a hello sent by POST /v1/send go. */
typedef struct capture {
  buf text;          /* the last message: welcome or error */
  sess *welcomed;    /* the session that said welcome */
  char code[32];     /* the error code of a refusal */
} capture;

typedef struct pend {
  struct pend *next;
  int kind;
  sess *s;           /* author (a reference), NULL for room creation */
  json_t *re;
  room *r;
  char *cid;
  char *ckey;        /* key in e->cids while pending */
  uint64_t seq;
  uint64_t rev;      /* a text op's new revision, for its ack (0: none) */
  net_chunk *frame;  /* the broadcast, framed once */
  conn *http;        /* backend request waiting for the commit, or NULL */
} pend;

struct engine {
  struct app *app;
  store *st;
  map rooms;          /* name -> room* */
  map cids;           /* "user:device|cid" -> pend* of entries not yet committed */
  uint8_t *seen;      /* Bloom filter of every recorded "user:device|cid" */
  sync_limits lim;
  store_batch *batch; /* being filled */
  pend *head, **tail;
  store_batch *fl_batch; /* committing */
  pend *fl_head;
  int fl_rc;
  int busy;
  uv_work_t work;
  uv_check_t check;
  uv_timer_t lock_timer;
  sess *dead;         /* sessions whose connection went away, cleaned up in the check hook */
  map sessions;       /* session token -> sess* (welcomed, not ended) */
  map by_device;      /* "user:device" -> sess* */
  uint64_t ops_accepted, deliveries, commits;
  uint64_t last_fence;       /* fences never repeat, even after a room unloads */
  unsigned ws_conns;
  map rejected;              /* error code -> count (uintptr_t) */
  uint64_t commit_hist[13];  /* wsync_commit_seconds buckets, +Inf last */
  double commit_sum;
  uint64_t batch_started;    /* loop ms when the committing batch left */
  capture *cap;              /* set while a hello from POST /v1/send runs */
  sess *due;                 /* sessions whose pending poll can be answered */
};

/* ---- engine.c, used by fallback.c ---------------------------------------- */

/* Loop time, ms. */
static inline uint64_t now_ms(engine *e) { return uv_now(e->app->loop); }

/* The payload of a frame made by ws_frame_new (unmasked, one frame). */
static inline const uint8_t *frame_payload(const net_chunk *f, size_t *len) {
  uint8_t l7 = f->data[1] & 0x7f;
  size_t hdr = l7 < 126 ? 2 : l7 == 126 ? 4 : 10;
  *len = f->len - hdr;
  return f->data + hdr;
}

void detach_transport(sess *s, const char *why);
void dispatch(sess *s, json_t *req);
void ob_pop(sess *s);
void presence_event(engine *e, member *about, const char *event);
void send_error(sess *s, json_t *req, const char *code, const char *message, const char *field,
                json_t *extra);
void sess_unref(sess *s);
int too_deep(json_t *v, int depth, int limit);

/* ---- fallback.c, used by engine.c ---------------------------------------- */

void dn_end(sess *s, unsigned code, const char *reason);
void dn_push(sess *s, net_chunk *frame, uint64_t ordinal);
void dn_release(sess *s);
void http_sweep(engine *e);
void polls_answer(engine *e);
void fallback_http(engine *e, conn *c, httpd_req *r, const char *what);

#endif
