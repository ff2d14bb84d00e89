/* webhook.c -- the webhook dispatchers (webhook.h; the wire format and the
 * guarantees are in docs/HOOKS.md).
 *
 * Per webhook, per room it follows (wroom): `delivered`, the last seq a 2xx
 * acknowledged (stored through the group commit), and `head`, the last seq
 * known committed. A room with head > delivered is behind and waits in the
 * webhook's ready queue (FIFO, each room once), unless its entries are in
 * the request being sent. backlog = sum of (head - delivered): the lag.
 *
 * A dispatcher's states; the function that makes each move is named:
 *
 *            kick (backlog, or delay_ms)          send_batch: post
 *   IDLE ------------------------------> WAIT -----------------------> SEND
 *    ^                                                                |  |
 *    |  on_answer 2xx: positions advance; more behind -> WAIT (now)   |  |
 *    +----------------------------------------------------------------+  |
 *                       on_answer error/non-2xx: attempt++               |
 *   BACKOFF <------------------------------------------------------------+
 *      |  timer (exponential, jittered): the same body again  -> SEND
 *
 * A batch takes rooms from the front of the ready queue: for each, in one
 * read snapshot, the room's row (epoch, min_seq, seq) then up to the rest of
 * batch_max entries after `delivered`. A room deleted meanwhile is dropped;
 * one of a new epoch starts again from 0; entries trimmed before delivery
 * become one `gap` event. */
#include "webhook.h"

#include <fnmatch.h>
#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/jsonw.h"
#include "../common/log.h"
#include "../common/map.h"
#include "hclient.h"

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

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- specs ---------------------------------------------------------------- */

typedef struct spec {
  char url[URL_MAX];
  char pattern[PATTERN_MAX];
  char name[NAME_MAX_LEN + 1];
  int lifecycle;
} spec;

static void hex_id(const char *url, char out[65]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  if (!EVP_Digest(url, strlen(url), md, &mdlen, EVP_sha256(), NULL)) abort();
  for (int i = 0; i < 8; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static int parse_spec(const char *text, spec *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  const char *p = text;
  int first = 1;
  while (*p) {
    while (*p == ' ' || *p == '\t') p++;
    if (!*p) break;
    const char *end = p;
    while (*end && *end != ' ' && *end != '\t') end++;
    size_t n = (size_t)(end - p);
    if (first) {
      if (n >= URL_MAX || !((n > 7 && !strncmp(p, "http://", 7)) || (n > 8 && !strncmp(p, "https://", 8)))) {
        snprintf(err, errlen, "--webhook '%.80s': the first word must be an http:// or https:// URL", text);
        return WSY_INVAL;
      }
      memcpy(out->url, p, n);
      first = 0;
    } else if (n > 6 && !strncmp(p, "rooms=", 6)) {
      if (n - 6 >= PATTERN_MAX) {
        snprintf(err, errlen, "--webhook '%.80s': rooms= pattern longer than %d bytes", text, PATTERN_MAX - 1);
        return WSY_INVAL;
      }
      memcpy(out->pattern, p + 6, n - 6);
    } else if (n > 5 && !strncmp(p, "name=", 5)) {
      if (!wsy_charset_ok(p + 5, n - 5, NAME_MAX_LEN, "._-")) {
        snprintf(err, errlen, "--webhook '%.80s': name= takes 1-%d characters of A-Z a-z 0-9 . _ -", text,
                 NAME_MAX_LEN);
        return WSY_INVAL;
      }
      memcpy(out->name, p + 5, n - 5);
    } else if (n == 16 && !strncmp(p, "events=lifecycle", 16)) {
      out->lifecycle = 1;
    } else if (n == 11 && !strncmp(p, "events=none", 11)) {
      out->lifecycle = 0;
    } else {
      snprintf(err, errlen, "--webhook '%.80s': unknown setting '%.*s' (rooms=GLOB, name=NAME, events=lifecycle)",
               text, (int)(n > 40 ? 40 : n), p);
      return WSY_INVAL;
    }
    p = end;
  }
  if (first) {
    snprintf(err, errlen, "--webhook needs a URL");
    return WSY_INVAL;
  }
  return 0;
}

int webhooks_parse_spec(const char *text, char id_out[65], char *err, size_t errlen) {
  spec s;
  int rc = parse_spec(text, &s, err, errlen);
  if (rc == 0 && id_out) {
    if (s.name[0]) snprintf(id_out, 65, "%s", s.name);
    else hex_id(s.url, id_out);
  }
  return rc;
}

/* ---- rooms, queue, lag ----------------------------------------------------- */

static int room_matches(const hook *h, const char *room) {
  return !h->pattern || fnmatch(h->pattern, room, 0) == 0;
}

static wroom *room_add(hook *h, const char *name, const char *epoch, uint64_t delivered, uint64_t head) {
  wroom *r = wsy_calloc(1, sizeof *r);
  snprintf(r->name, sizeof r->name, "%s", name);
  snprintf(r->epoch, sizeof r->epoch, "%s", epoch);
  r->delivered = delivered;
  r->head = head;
  h->backlog += LAG(r);
  map_put(&h->rooms, r->name, r);
  return r;
}

static void set_head(hook *h, wroom *r, uint64_t head) {
  if (head <= r->head) return;
  if (LAG(r) == 0) r->since_ms = wall_ms();
  h->backlog -= LAG(r);
  r->head = head;
  h->backlog += LAG(r);
}

static void set_delivered(hook *h, wroom *r, uint64_t to) {
  h->backlog -= LAG(r);
  r->delivered = to;
  h->backlog += LAG(r);
}

/* The room's name was deleted and made again: follow the new incarnation. */
static void set_epoch(hook *h, wroom *r, const char *epoch) {
  h->backlog -= LAG(r);
  snprintf(r->epoch, sizeof r->epoch, "%s", epoch);
  r->delivered = r->head = 0;
  r->since_ms = 0;
}

static void enqueue(hook *h, wroom *r) {
  if (r->queued || r->sending || LAG(r) == 0) return;
  r->queued = 1;
  r->qnext = NULL;
  if (h->qtail) h->qtail->qnext = r;
  else h->qhead = r;
  h->qtail = r;
  h->nqueued++;
}

static wroom *dequeue(hook *h) {
  wroom *r = h->qhead;
  if (!r) return NULL;
  h->qhead = r->qnext;
  if (!h->qhead) h->qtail = NULL;
  r->qnext = NULL;
  r->queued = 0;
  h->nqueued--;
  return r;
}

/* ---- sending --------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

/* Schedules a batch when something is behind and nothing is in flight:
 * at once when a full batch waits, else after delay_ms. */
static void kick(hook *h) {
  webhooks *w = h->w;
  if (w->closing || h->state == H_SEND || h->state == H_BACKOFF || !h->qhead) return;
  if (h->backlog >= w->cfg.batch_max || w->cfg.delay_ms == 0) {
    if (h->state == H_WAIT && h->armed_now) return;
    h->armed_now = 1;
    uv_timer_start(&h->timer, on_timer, 0, 0);
  } else if (h->state == H_IDLE) {
    uv_timer_start(&h->timer, on_timer, w->cfg.delay_ms, 0);
  }
  h->state = H_WAIT;
}

static void sign(webhooks *w, const char *ts, const char *body, size_t len, char hex[65]) {
  EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(w->mac);
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                         OSSL_PARAM_construct_end()};
  unsigned char out[32];
  size_t outlen = 0;
  if (!ctx || !EVP_MAC_init(ctx, (const unsigned char *)w->cfg.secret, strlen(w->cfg.secret), params) ||
      !EVP_MAC_update(ctx, (const unsigned char *)ts, strlen(ts)) ||
      !EVP_MAC_update(ctx, (const unsigned char *)".", 1) ||
      !EVP_MAC_update(ctx, (const unsigned char *)body, len) || !EVP_MAC_final(ctx, out, &outlen, sizeof out) ||
      outlen != sizeof out) {
    log_error("webhook: HMAC-SHA256 failed");
    abort();
  }
  EVP_MAC_CTX_free(ctx);
  for (size_t i = 0; i < sizeof out; i++) snprintf(hex + 2 * i, 3, "%02x", out[i]);
}

/* POSTs body with the signature headers. 0 or hclient_post's error. */
static int post(hook *h, const jw *body, hclient_cb cb, unsigned attempt) {
  webhooks *w = h->w;
  char ts[24], hex[65], h_ts[48], h_sig[96], h_id[96], h_try[48];
  snprintf(ts, sizeof ts, "%lld", (long long)(wall_ms() / 1000));
  sign(w, ts, body->p, body->len, hex);
  snprintf(h_ts, sizeof h_ts, "Wsync-Timestamp: %s", ts);
  snprintf(h_sig, sizeof h_sig, "Wsync-Signature: v1=%s", hex);
  snprintf(h_id, sizeof h_id, "Wsync-Webhook: %s", h->id);
  snprintf(h_try, sizeof h_try, "Wsync-Attempt: %u", attempt);
  const char *headers[] = {h_ts, h_sig, h_id, h_try, NULL};
  return hclient_post(w->http, h->url, headers, body->p, body->len, w->cfg.timeout_ms, cb, h);
}

static int64_t entry_ts(const char *msg) {
  const char *p = strstr(msg, ",\"ts\":"); /* room names cannot hold a quote: the first is the entry's */
  return p ? strtoll(p + 6, NULL, 10) : 0;
}

typedef struct fill {
  hook *h;
  wroom *r;
  sent *s;
  size_t limit;
} fill;

static void elem_begin(hook *h) {
  if (h->nbody++) jw_lit(&h->body, ",");
}

static int add_entry(uint64_t seq, const char *msg, size_t len, void *ud) {
  fill *f = ud;
  hook *h = f->h;
  if (f->s->entries >= f->limit || (h->body.len + len > WEBHOOK_MAX_BODY && h->nbody > 0)) return 1;
  elem_begin(h);
  jw_lit(&h->body, "{\"event\":\"entry\",\"room\":");
  jw_cstr(&h->body, f->r->name);
  jw_lit(&h->body, ",\"epoch\":");
  jw_cstr(&h->body, f->r->epoch);
  jw_lit(&h->body, ",\"seq\":");
  jw_int(&h->body, (int64_t)seq);
  jw_lit(&h->body, ",\"msg\":");
  jw_raw(&h->body, msg, len); /* the exact broadcast JSON, as stored */
  jw_lit(&h->body, "}");
  int64_t ts = entry_ts(msg);
  if (f->s->entries == 0 && ts) f->r->since_ms = ts;
  f->s->last_ts = ts;
  f->s->entries++;
  f->s->to = seq;
  return 0;
}

static void drop_room(hook *h, wroom *r) {
  h->backlog -= LAG(r);
  map_del(&h->rooms, r->name);
  wsy_free(r);
}

/* Adds up to limit entries of r (taken off the queue) to the body: the
 * number added (r then waits in the sent list, or is at rest, or was
 * dropped and freed: its room is gone), or -1 when the store could not be
 * read (r untouched, to be queued again). */
static long add_room(hook *h, wroom *r, size_t limit) {
  webhooks *w = h->w;
  store_room_info info;
  int rc = store_read_begin(w->st);
  if (rc != 0) goto failed;
  if ((rc = store_room_get(w->st, r->name, &info)) != 0) goto failed_end;
  if (!info.exists) {
    (void)store_read_end(w->st);
    drop_room(h, r); /* deleted: its positions went with it */
    return 0;
  }
  if (strcmp(info.epoch, r->epoch) != 0) set_epoch(h, r, info.epoch);
  set_head(h, r, info.seq);
  if (LAG(r) == 0) {
    (void)store_read_end(w->st);
    return 0;
  }
  if (h->nsent == h->capsent) {
    h->capsent = h->capsent ? 2 * h->capsent : 8;
    h->sent = wsy_realloc(h->sent, h->capsent * sizeof *h->sent);
  }
  sent *s = &h->sent[h->nsent];
  memset(s, 0, sizeof *s);
  s->r = r;
  snprintf(s->epoch, sizeof s->epoch, "%s", r->epoch);
  s->to = r->delivered;
  uint64_t from = r->delivered + 1;
  size_t mark_len = h->body.len, mark_n = h->nbody;
  if (info.min_seq > from) { /* trimmed before this webhook had them */
    elem_begin(h);
    jw_lit(&h->body, "{\"event\":\"gap\",\"room\":");
    jw_cstr(&h->body, r->name);
    jw_lit(&h->body, ",\"epoch\":");
    jw_cstr(&h->body, r->epoch);
    jw_lit(&h->body, ",\"after\":");
    jw_int(&h->body, (int64_t)r->delivered);
    jw_lit(&h->body, ",\"first\":");
    jw_int(&h->body, (int64_t)info.min_seq);
    jw_lit(&h->body, "}");
    s->gap = 1;
    s->to = info.min_seq - 1;
    from = info.min_seq;
  }
  fill f = {h, r, s, limit};
  rc = store_history(w->st, r->name, from - 1, limit, add_entry, &f);
  if (rc > 0) rc = 0; /* add_entry stopped the walk: the batch is full */
  if (rc != 0) {
    h->body.len = mark_len; /* nothing of this room goes in this batch */
    h->body.p[mark_len] = '\0';
    h->nbody = mark_n;
    goto failed_end;
  }
  (void)store_read_end(w->st);
  if (s->to > r->head) set_head(h, r, s->to);
  if (!s->entries && !s->gap) return 0;
  r->sending = 1;
  h->nsent++;
  return (long)s->entries;
failed_end:
  (void)store_read_end(w->st);
failed:
  log_warn("webhook %s: cannot read room %s from the store: %s", h->id, r->name, wsy_strerror(rc));
  return -1;
}

static void on_answer(void *ud, const hclient_resp *resp);

static void start_backoff(hook *h) {
  webhooks *w = h->w;
  h->attempt++;
  uint64_t d = BACKOFF_BASE_MS;
  for (unsigned i = 1; i < h->attempt && d < w->cfg.max_backoff_ms; i++) d *= 2;
  if (d > w->cfg.max_backoff_ms) d = w->cfg.max_backoff_ms;
  /* full jitter over the upper half: retries of many servers spread out */
  w->rng ^= w->rng << 13;
  w->rng ^= w->rng >> 7;
  w->rng ^= w->rng << 17;
  d = d / 2 + (d > 1 ? w->rng % (d / 2 + 1) : 0);
  h->state = H_BACKOFF;
  uv_timer_start(&h->timer, on_timer, d, 0);
}

static void send_batch(hook *h) {
  webhooks *w = h->w;
  if (h->nsent == 0) { /* a new batch; else the one that failed goes again */
    jw_reset(&h->body);
    h->nbody = 0;
    jw_lit(&h->body, "{\"webhook\":");
    jw_cstr(&h->body, h->id);
    jw_lit(&h->body, ",\"entries\":[");
    size_t count = 0, rounds = h->nqueued;
    wroom *r;
    while (rounds-- && count < w->cfg.batch_max && h->body.len < WEBHOOK_MAX_BODY && (r = dequeue(h))) {
      long n = add_room(h, r, w->cfg.batch_max - count);
      if (n < 0) enqueue(h, r); /* the store failed: at the back, for a later batch */
      else count += (size_t)n;
    }
    jw_lit(&h->body, "]}");
    if (h->nsent == 0) {
      h->state = H_IDLE;
      if (h->qhead) start_backoff(h); /* only rooms the store failed to read: try later */
      return;
    }
  }
  h->state = H_SEND;
  if (post(h, &h->body, on_answer, h->attempt + 1) != 0) start_backoff(h);
}

static void on_timer(uv_timer_t *t) {
  hook *h = t->data;
  h->armed_now = 0;
  if (h->w->closing) return;
  if (h->state == H_WAIT || h->state == H_BACKOFF) send_batch(h);
}

static void on_answer(void *ud, const hclient_resp *resp) {
  hook *h = ud;
  webhooks *w = h->w;
  if (w->closing) return;
  int ok = resp->rc == 0 && resp->status >= 200 && resp->status <= 299;
  if (!ok) {
    h->n_fail++;
    if (!h->failing)
      log_warn("webhook %s: delivery failed (%s); retrying with backoff", h->id,
               resp->rc ? wsy_strerror(resp->rc) : "non-2xx status");
    if (resp->rc == 0) log_debug("webhook %s: status %ld", h->id, resp->status);
    h->failing = 1;
    start_backoff(h);
    return;
  }
  if (h->failing) log_info("webhook %s: delivering again after %u failed attempts", h->id, h->attempt);
  h->failing = 0;
  h->attempt = 0;
  h->n_ok++;
  store_batch *b = w->batch(w->batch_ud);
  for (size_t i = 0; i < h->nsent; i++) {
    sent *s = &h->sent[i];
    wroom *r = s->r;
    r->sending = 0;
    if (s->gap) h->n_gaps++;
    h->n_delivered += s->entries;
    if (strcmp(r->epoch, s->epoch) == 0 && s->to > r->delivered) {
      set_delivered(h, r, s->to);
      store_batch_hook_pos(b, h->id, r->name, r->epoch, r->delivered);
      if (LAG(r)) r->since_ms = s->last_ts ? s->last_ts : wall_ms();
    }
    enqueue(h, r);
  }
  h->nsent = 0;
  h->state = H_IDLE;
  kick(h);
}

/* ---- lifecycle events (at most once) --------------------------------------- */

static void on_event_answer(void *ud, const hclient_resp *resp);

static void send_events(uv_timer_t *t) {
  hook *h = t->data;
  h->ev_armed = 0;
  if (h->w->closing || h->events_inflight || !h->nevents) return;
  jw body = JW_INIT;
  jw_lit(&body, "{\"webhook\":");
  jw_cstr(&body, h->id);
  jw_lit(&body, ",\"entries\":[");
  jw_raw(&body, h->events.p, h->events.len);
  jw_lit(&body, "]}");
  unsigned n = h->nevents;
  jw_reset(&h->events);
  h->nevents = 0;
  if (post(h, &body, on_event_answer, 1) == 0) h->events_inflight = n;
  else h->n_events_dropped += n;
  jw_free(&body);
}

static void arm_events(hook *h) {
  if (h->ev_armed || h->events_inflight || !h->nevents) return;
  h->ev_armed = 1;
  uv_timer_start(&h->evtimer, send_events, h->w->cfg.delay_ms, 0);
}

static void on_event_answer(void *ud, const hclient_resp *resp) {
  hook *h = ud;
  if (h->w->closing) return;
  if (resp->rc != 0 || resp->status < 200 || resp->status > 299) h->n_events_dropped += h->events_inflight;
  else h->n_events += h->events_inflight;
  h->events_inflight = 0;
  arm_events(h);
}

void webhooks_event(webhooks *w, const char *kind, const char *room, const char *user, const char *device) {
  if (!w || w->closing) return;
  for (size_t i = 0; i < w->n; i++) {
    hook *h = &w->hooks[i];
    if (!h->lifecycle || (room && !room_matches(h, room))) continue;
    if (h->nevents + h->events_inflight >= WEBHOOK_MAX_EVENTS) {
      h->n_events_dropped++;
      continue;
    }
    jw *e = &h->events;
    if (h->nevents++) jw_lit(e, ",");
    jw_lit(e, "{\"event\":");
    jw_cstr(e, kind);
    if (room) {
      jw_lit(e, ",\"room\":");
      jw_cstr(e, room);
    }
    if (user) {
      jw_lit(e, ",\"user\":");
      jw_cstr(e, user);
    }
    if (device) {
      jw_lit(e, ",\"device\":");
      jw_cstr(e, device);
    }
    jw_lit(e, ",\"ts\":");
    jw_int(e, wall_ms());
    jw_lit(e, ",\"at_most_once\":true}");
    arm_events(h);
  }
}

/* ---- the commit path and retention ----------------------------------------- */

void webhooks_committed(webhooks *w, const char *room, const char *epoch, uint64_t seq) {
  if (!w || w->closing) return;
  for (size_t i = 0; i < w->n; i++) {
    hook *h = &w->hooks[i];
    wroom *r = map_get(&h->rooms, room);
    if (!r) {
      if (!room_matches(h, room)) continue;
      /* Not followed since the start: it was caught up then (rooms behind
       * at start are all in the map), and every entry committed since was
       * reported in order, so all before seq are delivered. */
      r = room_add(h, room, epoch, seq - 1, seq - 1);
    } else if (strcmp(r->epoch, epoch) != 0) {
      set_epoch(h, r, epoch);
    }
    set_head(h, r, seq);
    enqueue(h, r);
    kick(h);
  }
}

uint64_t webhooks_trim_point(webhooks *w, const char *room, const char *epoch, uint64_t want, uint64_t head) {
  if (!w) return want;
  uint64_t keep = want;
  for (size_t i = 0; i < w->n; i++) {
    wroom *r = map_get(&w->hooks[i].rooms, room);
    if (!r) continue; /* caught up (or not matching) */
    uint64_t first_needed = strcmp(r->epoch, epoch) == 0 ? r->delivered + 1 : 1;
    if (first_needed < keep) keep = first_needed;
  }
  uint64_t floor = want > w->cfg.retain ? want - w->cfg.retain : 1; /* the cap: retain beyond want */
  if (keep < floor) keep = floor;
  return keep < want ? keep : want;
}

/* ---- metrics ---------------------------------------------------------------- */

void webhooks_metrics(webhooks *w, buf *out) {
  if (!w) return;
  char line[512];
#define EMIT(...)                                                          \
  do {                                                                     \
    int n_ = snprintf(line, sizeof line, __VA_ARGS__);                      \
    if (buf_append(out, line, wsy_snlen(n_, sizeof line)) != WSY_OK) return; \
  } while (0)
  static const char *const help[][3] = {
    {"wsync_webhook_lag_entries", "gauge", "Committed log entries a webhook has not delivered yet."},
    {"wsync_webhook_lag_seconds", "gauge", "Age of the oldest log entry a webhook has not delivered (0: caught up)."},
    {"wsync_webhook_delivered_total", "counter", "Log entries acknowledged by a webhook's receiver (2xx)."},
    {"wsync_webhook_requests_total", "counter", "Requests of log entries to a webhook, by result."},
    {"wsync_webhook_gaps_total", "counter", "Gap events: entries trimmed from the log before a webhook had them."},
    {"wsync_webhook_events_total", "counter", "Lifecycle events, by result (at most once: dropped ones are not retried)."},
  };
  int64_t now = wall_ms();
  for (size_t k = 0; k < WSY_ARRAY_LEN(help); k++) {
    EMIT("# HELP %s %s\n# TYPE %s %s\n", help[k][0], help[k][2], help[k][0], help[k][1]);
    for (size_t i = 0; i < w->n; i++) {
      hook *h = &w->hooks[i];
      switch (k) {
      case 0: EMIT("%s{webhook=\"%s\"} %" PRIu64 "\n", help[k][0], h->id, h->backlog); break;
      case 1: {
        int64_t oldest = 0;
        const char *key;
        void *v;
        for (size_t j = 0; h->backlog && map_next(&h->rooms, &j, &key, &v);) {
          wroom *r = v;
          if (LAG(r) && r->since_ms && (!oldest || r->since_ms < oldest)) oldest = r->since_ms;
        }
        EMIT("%s{webhook=\"%s\"} %.3f\n", help[k][0], h->id, oldest && now > oldest ? (now - oldest) / 1000.0 : 0.0);
        break;
      }
      case 2: EMIT("%s{webhook=\"%s\"} %" PRIu64 "\n", help[k][0], h->id, h->n_delivered); break;
      case 3:
        EMIT("%s{webhook=\"%s\",result=\"ok\"} %" PRIu64 "\n%s{webhook=\"%s\",result=\"error\"} %" PRIu64 "\n",
             help[k][0], h->id, h->n_ok, help[k][0], h->id, h->n_fail);
        break;
      case 4: EMIT("%s{webhook=\"%s\"} %" PRIu64 "\n", help[k][0], h->id, h->n_gaps); break;
      default:
        EMIT("%s{webhook=\"%s\",result=\"sent\"} %" PRIu64 "\n%s{webhook=\"%s\",result=\"dropped\"} %" PRIu64 "\n",
             help[k][0], h->id, h->n_events, help[k][0], h->id, h->n_events_dropped);
      }
    }
  }
#undef EMIT
}

/* ---- life cycle -------------------------------------------------------------- */

typedef struct scan {
  hook *h;
  map pos;              /* room -> stored "epoch\0seq" (a pos_rec) */
  char after[STORE_ROOM_MAX + 1];
  size_t seen;
} scan;

typedef struct pos_rec {
  char epoch[STORE_EPOCH_MAX + 1];
  uint64_t seq;
} pos_rec;

static int scan_pos(const char *room, const char *epoch, uint64_t seq, void *ud) {
  scan *sc = ud;
  pos_rec *p = wsy_calloc(1, sizeof *p);
  snprintf(p->epoch, sizeof p->epoch, "%s", epoch);
  p->seq = seq;
  wsy_free(map_put(&sc->pos, room, p));
  return 0;
}

static int scan_room(const char *room, const store_room_info *info, void *ud) {
  scan *sc = ud;
  hook *h = sc->h;
  snprintf(sc->after, sizeof sc->after, "%s", room);
  sc->seen++;
  if (info->seq == 0 || !room_matches(h, room)) return 0;
  pos_rec *p = map_get(&sc->pos, room);
  uint64_t delivered = p && !strcmp(p->epoch, info->epoch) ? p->seq : 0;
  if (delivered >= info->seq) return 0; /* caught up: followed from its next entry */
  wroom *r = room_add(h, room, info->epoch, delivered, info->seq);
  enqueue(h, r);
  return 0;
}

/* Where this webhook stopped: its stored positions against every room. */
static int hook_load(hook *h, char *err, size_t errlen) {
  webhooks *w = h->w;
  scan sc = {.h = h};
  map_init(&sc.pos);
  int rc = store_hook_positions(w->st, h->id, scan_pos, &sc);
  while (rc == 0) {
    size_t before = sc.seen;
    rc = store_rooms_list(w->st, sc.after, 1024, scan_room, &sc);
    if (sc.seen == before) break;
  }
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&sc.pos, &i, &k, &v);) wsy_free(v);
  map_free(&sc.pos);
  if (rc != 0) snprintf(err, errlen, "webhook %s: cannot read its positions from the store: %s", h->id, wsy_strerror(rc));
  return rc;
}

static void handle_closed(uv_handle_t *hd) {
  webhooks *w = ((hook *)hd->data)->w;
  if (--w->open_handles) return;
  for (size_t i = 0; i < w->n; i++) {
    hook *h = &w->hooks[i];
    const char *k;
    void *v;
    for (size_t j = 0; map_next(&h->rooms, &j, &k, &v);) wsy_free(v);
    map_free(&h->rooms);
    jw_free(&h->body);
    jw_free(&h->events);
    wsy_free(h->sent);
    wsy_free(h->url);
    wsy_free(h->pattern);
  }
  wsy_free(w->hooks);
  EVP_MAC_free(w->mac);
  wsy_free(w);
}

int webhooks_new(uv_loop_t *loop, store *st, const webhooks_config *cfg, webhooks_batch_fn batch, void *batch_ud,
                 webhooks **out, char *err, size_t errlen) {
  *out = NULL;
  if (!cfg->secret || strlen(cfg->secret) == 0) {
    snprintf(err, errlen, "--webhook needs --webhook-secret (the key receivers verify signatures with)");
    return WSY_INVAL;
  }
  spec *specs = wsy_calloc(cfg->nspecs ? cfg->nspecs : 1, sizeof *specs);
  char (*ids)[65] = wsy_calloc(cfg->nspecs ? cfg->nspecs : 1, 65);
  int rc = 0;
  for (size_t i = 0; i < cfg->nspecs && !rc; i++) {
    rc = parse_spec(cfg->specs[i], &specs[i], err, errlen);
    if (!rc) rc = webhooks_parse_spec(cfg->specs[i], ids[i], err, errlen);
    for (size_t j = 0; j < i && !rc; j++)
      if (!strcmp(ids[i], ids[j])) {
        snprintf(err, errlen, "two webhooks have the id %s: give one of them another name=", ids[i]);
        rc = WSY_INVAL;
      }
  }
  if (rc) {
    wsy_free(specs);
    wsy_free(ids);
    return rc;
  }
  webhooks *w = wsy_calloc(1, sizeof *w);
  w->loop = loop;
  w->st = st;
  w->cfg = *cfg;
  if (w->cfg.batch_max == 0) w->cfg.batch_max = 1;
  if (w->cfg.max_backoff_ms < BACKOFF_BASE_MS) w->cfg.max_backoff_ms = BACKOFF_BASE_MS;
  w->batch = batch;
  w->batch_ud = batch_ud;
  w->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
  w->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  if (!w->mac) abort();
  w->n = cfg->nspecs;
  w->hooks = wsy_calloc(w->n ? w->n : 1, sizeof *w->hooks);
  for (size_t i = 0; i < w->n; i++) {
    hook *h = &w->hooks[i];
    h->w = w;
    snprintf(h->id, sizeof h->id, "%s", ids[i]);
    h->url = wsy_strndup(specs[i].url, strlen(specs[i].url));
    h->pattern = specs[i].pattern[0] ? wsy_strndup(specs[i].pattern, strlen(specs[i].pattern)) : NULL;
    h->lifecycle = specs[i].lifecycle;
    map_init(&h->rooms);
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    uv_timer_init(loop, &h->evtimer);
    h->evtimer.data = h;
    w->open_handles += 2;
  }
  wsy_free(specs);
  wsy_free(ids);
  w->http = hclient_new(loop);
  for (size_t i = 0; i < w->n && !rc; i++) {
    rc = hook_load(&w->hooks[i], err, errlen);
    if (!rc) {
      log_info("webhook %s: %s%s%s, %" PRIu64 " entries to deliver", w->hooks[i].id, w->hooks[i].url,
               w->hooks[i].pattern ? " rooms " : "", w->hooks[i].pattern ? w->hooks[i].pattern : "",
               w->hooks[i].backlog);
      kick(&w->hooks[i]);
    }
  }
  if (rc) {
    webhooks_free(w);
    return rc;
  }
  *out = w;
  return 0;
}

void webhooks_free(webhooks *w) {
  if (!w || w->closing) return;
  w->closing = 1;
  hclient_close(w->http); /* answers in flight come back as errors, ignored */
  if (w->open_handles == 0) {
    wsy_free(w->hooks);
    EVP_MAC_free(w->mac);
    wsy_free(w);
    return;
  }
  for (size_t i = 0; i < w->n; i++) {
    uv_close((uv_handle_t *)&w->hooks[i].timer, handle_closed);
    uv_close((uv_handle_t *)&w->hooks[i].evtimer, handle_closed);
  }
}
