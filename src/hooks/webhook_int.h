/* webhook_int.h -- private to src/hooks/webhook*.c: the dispatcher's
 * structures (webhook.c draws its states) and the helpers the files share. */
#ifndef WSY_WEBHOOK_INT_H
#define WSY_WEBHOOK_INT_H

#include <openssl/evp.h>
#include <time.h>

#include "../common/jsonw.h"
#include "../common/map.h"
#include "hclient.h"
#include "webhook.h"

enum { H_IDLE, H_WAIT, H_SEND, H_BACKOFF };

#define URL_MAX 2048
#define PATTERN_MAX 256
#define NAME_MAX_LEN 64
#define BACKOFF_BASE_MS 250

typedef struct wroom wroom;
struct wroom {
  char name[STORE_ROOM_MAX + 1];
  char epoch[STORE_EPOCH_MAX + 1];
  uint64_t delivered, head;
  int64_t since_ms; /* wall ms of the oldest undelivered entry; 0: not known yet */
  wroom *qnext;
  int queued, sending;
};

/* One room's part of the request being sent. */
typedef struct sent {
  wroom *r;
  char epoch[STORE_EPOCH_MAX + 1];
  uint64_t to;       /* delivered becomes this on a 2xx */
  uint64_t entries;  /* entries of the room in the request */
  int gap;
  int64_t last_ts;   /* ts of its last entry */
} sent;

/* An entry of the live tail (rendered at commit time, see webhook.c). */
typedef struct live_ent {
  wroom *r;
  char epoch[STORE_EPOCH_MAX + 1];
  uint64_t seq;
  size_t end;  /* offset in hook.live just past its element and comma */
  int64_t ts;
} live_ent;

/* Rendered entries a live tail holds at most; past it the webhook falls
 * back to reading the log from the store. */
#define WEBHOOK_LIVE_MAX (4 * 1024 * 1024)

typedef struct hook {
  webhooks *w;
  char id[65];
  char *url;
  char *pattern; /* NULL: every room */
  int lifecycle;
  map rooms;     /* name -> wroom* */
  wroom *qhead, *qtail;
  size_t nqueued;
  uint64_t backlog;
  int state, armed_now;
  uv_timer_t timer;
  unsigned attempt;
  sent *sent;
  size_t nsent, capsent;
  size_t nbody;  /* elements in body's entries array */
  jw body;
  /* the live tail: while on, every entry committed since the webhook was
   * last caught up, rendered, in commit order: exactly what is undelivered */
  int live_on, live_batch;
  jw live;
  size_t live_off;           /* bytes of live already delivered */
  live_ent *live_e;
  size_t live_head, live_n, live_cap, live_taken;
  /* lifecycle events: queued text of comma-separated objects, one request
   * in flight at most, never retried */
  jw events;
  unsigned nevents, events_inflight;
  uv_timer_t evtimer;
  int ev_armed;
  /* figures (/metrics) */
  uint64_t n_delivered, n_ok, n_fail, n_gaps, n_events, n_events_dropped;
  int failing;
} hook;

struct webhooks {
  uv_loop_t *loop;
  store *st;
  webhooks_config cfg;
  webhooks_batch_fn batch;
  void *batch_ud;
  hclient *http;
  EVP_MAC *mac;
  hook *hooks;
  size_t n;
  unsigned open_handles;
  int closing;
  uint64_t rng;
};

#define LAG(r) ((r)->head > (r)->delivered ? (r)->head - (r)->delivered : 0)

static inline int64_t wh_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* webhook.c: rooms, the ready queue, scheduling, signed requests. */
int wh_room_matches(const hook *h, const char *room);
wroom *wh_room_add(hook *h, const char *name, const char *epoch, uint64_t delivered, uint64_t head);
void wh_enqueue(hook *h, wroom *r);
void wh_kick(hook *h);
int wh_post(hook *h, const jw *body, hclient_cb cb, unsigned attempt);

#endif
