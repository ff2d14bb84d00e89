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
 * Where a batch's entries come from:
 *   - LIVE (the steady state): once a webhook is caught up (backlog 0), each
 *     entry committed after is rendered at commit time into its live tail,
 *     in commit order (so in seq order per room), and a batch is one slice
 *     of it: no store read. The tail is exactly what is undelivered; if it
 *     passes WEBHOOK_LIVE_MAX (a slow or dead receiver) it is dropped and
 *     the webhook reads from the store until it has caught up again.
 *   - STORE: a batch takes rooms from the front of the ready queue: for
 *     each, in one read snapshot, the room's row (epoch, min_seq, seq) then
 *     up to the rest of batch_max entries after `delivered`. A room deleted
 *     meanwhile is dropped; one of a new epoch starts again from 0; entries
 *     trimmed before delivery become one `gap` event. */
#include "webhook_int.h"

#include <fnmatch.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"

/* ---- rooms, queue, lag ----------------------------------------------------- */

int wh_room_matches(const hook *h, const char *room) {
  return !h->pattern || fnmatch(h->pattern, room, 0) == 0;
}

wroom *wh_room_add(hook *h, const char *name, const char *epoch, uint64_t delivered, uint64_t head) {
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
  if (LAG(r) == 0) r->since_ms = wh_wall_ms();
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

void wh_enqueue(hook *h, wroom *r) {
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
void wh_kick(hook *h) {
  webhooks *w = h->w;
  if (w->closing || h->state == H_SEND || h->state == H_BACKOFF || h->backlog == 0) return;
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
int wh_post(hook *h, const jw *body, hclient_cb cb, unsigned attempt) {
  webhooks *w = h->w;
  char ts[24], hex[65], h_ts[48], h_sig[96], h_id[96], h_try[48];
  snprintf(ts, sizeof ts, "%lld", (long long)(wh_wall_ms() / 1000));
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

static void live_drop(hook *h) {
  h->live_on = 0;
  jw_reset(&h->live);
  h->live_off = h->live_head = h->live_n = 0;
}

/* Renders one committed entry into the live tail. */
static void live_add(hook *h, wroom *r, uint64_t seq, const char *msg, size_t len) {
  if (h->live.len - h->live_off + len > WEBHOOK_LIVE_MAX) { /* the receiver fell behind: read the store */
    live_drop(h);
    return;
  }
  jw *b = &h->live;
  jw_lit(b, "{\"event\":\"entry\",\"room\":");
  jw_cstr(b, r->name);
  jw_lit(b, ",\"epoch\":");
  jw_cstr(b, r->epoch);
  jw_lit(b, ",\"seq\":");
  jw_int(b, (int64_t)seq);
  jw_lit(b, ",\"msg\":");
  jw_raw(b, msg, len);
  jw_lit(b, "},");
  if (h->live_n == h->live_cap) {
    h->live_cap = h->live_cap ? 2 * h->live_cap : 256;
    h->live_e = wsy_realloc(h->live_e, h->live_cap * sizeof *h->live_e);
  }
  live_ent *e = &h->live_e[h->live_n++];
  e->r = r;
  memcpy(e->epoch, r->epoch, sizeof e->epoch);
  e->seq = seq;
  e->end = b->len;
  e->ts = wh_wall_ms();
}

/* The next batch from the live tail into h->body and h->sent. */
static void live_batch(hook *h) {
  webhooks *w = h->w;
  size_t start = h->live_off, k = 0;
  while (h->live_head + k < h->live_n && k < w->cfg.batch_max &&
         (k == 0 || h->live_e[h->live_head + k].end - start <= WEBHOOK_MAX_BODY)) {
    live_ent *e = &h->live_e[h->live_head + k++];
    sent *s = NULL;
    for (size_t i = h->nsent; i-- > 0 && !s;) /* the room's record, most likely the last one */
      if (h->sent[i].r == e->r && !strcmp(h->sent[i].epoch, e->epoch)) s = &h->sent[i];
    if (!s) {
      if (h->nsent == h->capsent) {
        h->capsent = h->capsent ? 2 * h->capsent : 8;
        h->sent = wsy_realloc(h->sent, h->capsent * sizeof *h->sent);
      }
      s = &h->sent[h->nsent++];
      memset(s, 0, sizeof *s);
      s->r = e->r;
      memcpy(s->epoch, e->epoch, sizeof s->epoch);
      e->r->sending = 1;
    }
    s->to = e->seq;
    s->entries++;
    s->last_ts = e->ts;
  }
  size_t end = h->live_e[h->live_head + k - 1].end;
  jw_raw(&h->body, h->live.p + start, end - start - 1); /* without the last comma */
  h->live_taken = k;
  h->live_batch = 1;
}

/* After a 2xx: the entries of the batch leave the live tail. */
static void live_pop(hook *h) {
  if (!h->live_batch || !h->live_on) return;
  h->live_head += h->live_taken;
  h->live_off = h->live_e[h->live_head - 1].end;
  if (h->live_head == h->live_n) {
    jw_reset(&h->live);
    h->live_off = h->live_head = h->live_n = 0;
  } else if (h->live_off > h->live.len / 2) { /* compact */
    size_t off = h->live_off;
    memmove(h->live.p, h->live.p + off, h->live.len - off);
    h->live.len -= off;
    h->live.p[h->live.len] = '\0';
    memmove(h->live_e, h->live_e + h->live_head, (h->live_n - h->live_head) * sizeof *h->live_e);
    h->live_n -= h->live_head;
    h->live_head = 0;
    for (size_t i = 0; i < h->live_n; i++) h->live_e[i].end -= off;
    h->live_off = 0;
  }
}

static void send_batch(hook *h) {
  webhooks *w = h->w;
  if (h->nsent == 0 && h->live_on) {
    jw_reset(&h->body);
    jw_lit(&h->body, "{\"webhook\":");
    jw_cstr(&h->body, h->id);
    jw_lit(&h->body, ",\"entries\":[");
    if (h->live_head == h->live_n) {
      h->state = H_IDLE;
      return;
    }
    live_batch(h);
    jw_lit(&h->body, "]}");
  } else if (h->nsent == 0) { /* a new batch from the store; else the one that failed goes again */
    h->live_batch = 0;
    jw_reset(&h->body);
    h->nbody = 0;
    jw_lit(&h->body, "{\"webhook\":");
    jw_cstr(&h->body, h->id);
    jw_lit(&h->body, ",\"entries\":[");
    size_t count = 0, rounds = h->nqueued;
    wroom *r;
    while (rounds-- && count < w->cfg.batch_max && h->body.len < WEBHOOK_MAX_BODY && (r = dequeue(h))) {
      long n = add_room(h, r, w->cfg.batch_max - count);
      if (n < 0) wh_enqueue(h, r); /* the store failed: at the back, for a later batch */
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
  if (wh_post(h, &h->body, on_answer, h->attempt + 1) != 0) start_backoff(h);
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
      if (LAG(r)) r->since_ms = s->last_ts ? s->last_ts : wh_wall_ms();
    }
    wh_enqueue(h, r);
  }
  live_pop(h);
  h->live_batch = 0;
  h->nsent = 0;
  h->state = H_IDLE;
  if (!h->live_on && h->backlog == 0) h->live_on = 1; /* caught up: follow from memory again */
  wh_kick(h);
}

/* ---- the commit path and retention ----------------------------------------- */

void webhooks_committed(webhooks *w, const char *room, const char *epoch, uint64_t seq, const char *msg,
                        size_t len) {
  if (!w || w->closing) return;
  for (size_t i = 0; i < w->n; i++) {
    hook *h = &w->hooks[i];
    wroom *r = map_get(&h->rooms, room);
    if (!r) {
      if (!wh_room_matches(h, room)) continue;
      /* Not followed since the start: it was caught up then (rooms behind
       * at start are all in the map), and every entry committed since was
       * reported in order, so all before seq are delivered. */
      r = wh_room_add(h, room, epoch, seq - 1, seq - 1);
    } else if (strcmp(r->epoch, epoch) != 0) {
      set_epoch(h, r, epoch);
    }
    set_head(h, r, seq);
    if (h->live_on) live_add(h, r, seq, msg, len);
    wh_enqueue(h, r);
    wh_kick(h);
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

