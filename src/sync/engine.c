/* engine.c -- the engine's life cycle and its timers (engine.h): the check
 * hook that ends each loop iteration (reap sessions, answer polls, submit
 * the batch) and the periodic sweep (locks, HTTP sessions, expiry). */
#include "engine.h"

#include <stdarg.h>
#include <string.h>

#include "../common/log.h"

#include "api.h"
#include "cluster.h"
#include "commit.h"
#include "engine_int.h"
#include "fallback.h"
#include "forward.h"
#include "hook.h"
#include "opfwd.h"
#include "room.h"
#include "sess.h"
#include "stream.h"

net_chunk *engine_frame(engine *e, json_t *msg) {
  jw_reset(&e->frame_text);
  jw_value(&e->frame_text, msg);
  return ws_frame_new(WS_OP_TEXT, e->frame_text.p, e->frame_text.len);
}

/* The lifecycle events webhooks may ask for (at most once). */
static void hook_event(engine *e, sess *s, const char *event, const char *const *k, const char *const *v) {
  const char *kind = !strcmp(event, "hello accepted") ? "connected"
                     : !strcmp(event, "session end") ? "ended"
                     : !strcmp(event, "join")        ? "join"
                     : !strcmp(event, "leave")       ? "leave"
                                                     : NULL;
  if (!kind) return;
  const char *rn = NULL;
  for (size_t i = 0; i < 8 && k[i]; i++)
    if (!strcmp(k[i], "room")) rn = v[i];
  webhooks_event(e->hooks, kind, rn, s && s->id.user ? s->id.user : NULL, s && s->device[0] ? s->device : NULL);
}

void conn_event(engine *e, sess *s, conn *c, const char *event, ...) {
  if (wsy_log_level < LOG_INFO && !e->hooks) return;
  char remote[80] = "-";
  if (!c && s && s->w) c = ws_conn_net(s->w);
  if (!c) c = e->http_req;
  if (c) net_conn_peer(c, remote, sizeof remote);
  const char *user = s && s->id.user ? s->id.user : NULL;
  const char *device = s && s->device[0] ? s->device : NULL;
  const char *k[8], *v[8];
  size_t n = 0;
  va_list ap;
  va_start(ap, event);
  for (const char *key; n < 8 && (key = va_arg(ap, const char *));) {
    k[n] = key;
    v[n++] = va_arg(ap, const char *);
  }
  va_end(ap);
  for (size_t i = n; i < 8; i++) k[i] = v[i] = NULL;
  if (e->hooks) hook_event(e, s, event, k, v);
  if (wsy_log_level < LOG_INFO) return;
  wsy_log_event(LOG_INFO, event, "remote", remote, "user", user, "device", device, k[0], v[0], k[1], v[1], k[2],
                v[2], k[3], v[3], k[4], v[4], k[5], v[5], k[6], v[6], k[7], v[7], (const char *)NULL);
}

static void on_sweep(uv_timer_t *t) {
  engine *e = t->data;
  /* Sessions closed by these sends are reaped in the check hook, so no
   * room goes away while these walks run. */
  room_locks_sweep(e);
  fb_sweep(e);
  sess_expire(e);
}

static store_batch *hooks_batch(void *ud) { return ((engine *)ud)->batch; }

static void on_check(uv_check_t *h) {
  sess_reap(h->data);
  fb_answer_polls(h->data);
  commit_start(h->data);
}

int engine_new(uv_loop_t *loop, net_loop *net, const wsy_config *cfg, store *st, engine **out, char *err,
               size_t errlen) {
  engine *e = wsy_calloc(1, sizeof *e);
  e->loop = loop;
  e->net = net;
  e->cfg = cfg;
  e->st = st;
  e->auth = (auth_config){.secret = cfg->auth_secret, .issuer = cfg->auth_issuer,
                          .audience = cfg->auth_audience, .leeway_s = cfg->auth_leeway_ms / 1000,
                          .cache = auth_cache_new(4096)};
  map_init(&e->rooms);
  /* Both keyed by strings the session holds for as long as it is in them
   * (its token, its dkey: set before welcome, unchanged after): the maps
   * read the key from the session, a slot is one pointer per session. */
  map_init_keyed(&e->sessions, sess_key_token);
  map_init_keyed(&e->by_device, sess_key_dkey);
  map_init(&e->rejected);
  e->lim = (sync_limits){.max_fields = cfg->max_fields, .max_field_size = cfg->max_field_size,
                         .max_item_size = cfg->max_item_size, .max_depth = (int)cfg->max_depth,
                         .max_room_items = cfg->max_room_items,
                         .max_text_size = cfg->max_text_size};
  int rc = commit_init(e, err, errlen);
  if (rc == 0 && cfg->webhooks.n) {
    webhooks_config hc = {.specs = cfg->webhooks.v, .nspecs = cfg->webhooks.n, .secret = cfg->webhook_secret,
                          .batch_max = cfg->webhook_batch, .delay_ms = cfg->webhook_delay_ms,
                          .timeout_ms = cfg->webhook_timeout_ms, .max_backoff_ms = cfg->webhook_max_backoff_ms,
                          .retain = cfg->webhook_retain};
    rc = webhooks_new(loop, st, &hc, hooks_batch, e, &e->hooks, err, errlen);
  }
  if (rc == 0) rc = hook_init(e, err, errlen);
  if (rc == 0) rc = cluster_init(e, err, errlen); /* the bus: last, nothing after it fails */
  if (rc != 0) {
    hook_deinit(e);
    webhooks_free(e->hooks);
    commit_deinit(e);
    auth_cache_free(e->auth.cache);
    map_free(&e->rooms);
    map_free(&e->sessions);
    map_free(&e->by_device);
    map_free(&e->rejected);
    map_free(&e->opq);
    wsy_free(e);
    return rc;
  }
  uv_check_init(loop, &e->check);
  e->check.data = e;
  uv_check_start(&e->check, on_check);
  uv_unref((uv_handle_t *)&e->check);
  uv_timer_init(loop, &e->sweep);
  e->sweep.data = e;
  uv_timer_start(&e->sweep, on_sweep, 250, 250);
  uv_unref((uv_handle_t *)&e->sweep);
  stream_init(e);
  presence_batch_init(e);
  *out = e;
  return 0;
}

void engine_free(engine *e) {
  if (!e) return;
  /* The hooks' questions are cancelled first: what waits for them is
   * released unanswered (hook.h). */
  hook_deinit(e);
  for (int i = 0; e->hook_inflight && i < 1000; i++) uv_run(e->loop, UV_RUN_ONCE);
  ophook_free_all(e);
  authhook_free(e);
  /* Connections are gone by now; end the detached sessions, then finish
   * what is in flight and pending. */
  sess_reap(e);
  sess_end_all(e);
  fwd_free(e); /* after the sessions: their forwarded streams were ended */
  opfwd_free_streams(e);
  presence_batch_flush_all(e); /* their leaves, before the bus goes */
  /* Requests in flight are canceled: their entries go again after the
   * restart; positions already acknowledged commit below. */
  webhooks_free(e->hooks);
  e->hooks = NULL;
  while (e->busy || e->head || store_batch_count(e->batch) || e->y_jobs) { /* y_jobs: compactions */
    commit_start(e);
    uv_run(e->loop, UV_RUN_ONCE);
  }
  opfwd_free(e); /* the ghosts, once what they wrote has committed */
  stream_deinit(e);
  uv_close((uv_handle_t *)&e->check, NULL);
  uv_close((uv_handle_t *)&e->sweep, NULL);
  presence_batch_deinit(e);
  api_reads_flush(e);
  cluster_deinit(e);
  room_free_all(e);
  map_free(&e->sessions);
  map_free(&e->by_device);
  map_free(&e->rejected);
  commit_deinit(e);
  bus_free(e->bus);
  store_close(e->st); /* may close handles of its own */
  uv_run(e->loop, UV_RUN_NOWAIT);
  jw_free(&e->frame_text);
  auth_cache_free(e->auth.cache);
  wsy_free(e->dead);
  wsy_free(e);
}

void engine_shutdown(engine *e) {
  e->shutting_down = 1;
  /* The hooks' questions in flight would keep the loop running: cancelled,
   * and what waits for them released unanswered (hook.h). */
  hook_deinit(e);
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->sessions, &i, &k, &v);) {
    sess *s = v;
    if (fb_has_dn(s)) fb_end(s, WS_CLOSE_GOING_AWAY, "server shutting down");
  }
  fwd_shutdown(e); /* requests forwarded to other nodes: 503 (forward.h) */
}

void engine_set_jwks(engine *e, const auth_jwks *jwks) {
  auth_cache_clear(e->auth.cache); /* what the old keys verified is not verified by the new ones */
  e->auth.jwks = jwks;
}

void engine_route_fallback(void *ud, conn *c, httpd_req *r) { fb_route(ud, c, r); }
void engine_route_rooms(void *ud, conn *c, httpd_req *r) { api_rooms_route(ud, c, r); }
void engine_route_metrics(void *ud, conn *c, httpd_req *r) { api_metrics_route(ud, c, r); }
void engine_route_rooms_list(void *ud, conn *c, httpd_req *r) { api_rooms_list_route(ud, c, r); }
void engine_route_users(void *ud, conn *c, httpd_req *r) { api_users_route(ud, c, r); }

void engine_health(engine *e, size_t *sessions, size_t *rooms, const char **store_name, const char **bus_out,
                   const char **degraded) {
  *degraded = e->store_failing ? e->store_error : NULL;
  *sessions = map_len(&e->sessions);
  *rooms = map_len(&e->rooms);
  *store_name = store_backend(e->st);
  *bus_out = bus_name(e->bus);
}
