/* webhook_setup.c -- the webhooks' specs, their start (where each one
 * stopped: stored positions against the rooms), lifecycle events (at most
 * once) and /metrics. The dispatching itself is webhook.c. */
#include "webhook_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"

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

int webhooks_check(const char *const *specs, size_t n, char *err, size_t errlen) {
  char(*ids)[65] = wsy_calloc(n ? n : 1, 65);
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    rc = webhooks_parse_spec(specs[i], ids[i], err, errlen);
    for (size_t j = 0; j < i && !rc; j++)
      if (!strcmp(ids[i], ids[j])) {
        snprintf(err, errlen, "two webhooks have the id %s: give one of them another name=", ids[i]);
        rc = WSY_INVAL;
      }
  }
  wsy_free(ids);
  return rc;
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
  if (wh_post(h, &body, on_event_answer, 1) == 0) h->events_inflight = n;
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
    if (!h->lifecycle || (room && !wh_room_matches(h, room))) continue;
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
    jw_int(e, wh_wall_ms());
    jw_lit(e, ",\"at_most_once\":true}");
    arm_events(h);
  }
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
  int64_t now = wh_wall_ms();
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
  if (info->seq == 0 || !wh_room_matches(h, room)) return 0;
  pos_rec *p = map_get(&sc->pos, room);
  uint64_t delivered = p && !strcmp(p->epoch, info->epoch) ? p->seq : 0;
  if (delivered >= info->seq) return 0; /* caught up: followed from its next entry */
  wroom *r = wh_room_add(h, room, info->epoch, delivered, info->seq);
  wh_enqueue(h, r);
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
    jw_free(&h->live);
    wsy_free(h->live_e);
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
  int rc = webhooks_check(cfg->specs, cfg->nspecs, err, errlen);
  if (rc) return rc;
  spec *specs = wsy_calloc(cfg->nspecs ? cfg->nspecs : 1, sizeof *specs);
  char(*ids)[65] = wsy_calloc(cfg->nspecs ? cfg->nspecs : 1, 65);
  for (size_t i = 0; i < cfg->nspecs; i++) {
    if (parse_spec(cfg->specs[i], &specs[i], err, errlen) || webhooks_parse_spec(cfg->specs[i], ids[i], err, errlen))
      abort(); /* checked just above */
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
      w->hooks[i].live_on = w->hooks[i].backlog == 0;
      wh_kick(&w->hooks[i]);
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
