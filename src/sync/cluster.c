/* cluster.c -- the order of a room's entries on this node, refills from the
 * store, stale replicas, and the bus between nodes (cluster.h). */
#include "cluster.h"

#include <string.h>
#include <unistd.h>

#include "../common/log.h"
#include "api.h"
#include "commit.h"
#include "fallback.h"
#include "hook.h"
#include "opfwd.h"
#include "proto.h"
#include "room.h"
#include "sess.h"

/* How often loaded rooms are compared with the store, so that a lost last
 * entry is found (docs/CLUSTER.md). */
#define CHECK_MS 1000

typedef struct refill_ctx {
  engine *e;
  room *r;
} refill_ctx;

static void deliver_in_order(engine *e, room *r, const bus_msg *m);

/* The lag of an entry decided on another node: now minus its "ts" (the
 * entry JSON is the engine's own: "ts" follows "seq", and room names hold
 * no quote, so the first ,"ts": is it). */
static void observe_lag(engine *e, const net_chunk *f) {
  size_t len;
  const char *p = (const char *)frame_payload(f, &len);
  static const char key[] = ",\"ts\":";
  const char *end = p + (len < 256 ? len : 256);
  for (const char *q = p; q + sizeof key - 1 < end; q++) {
    if (memcmp(q, key, sizeof key - 1) != 0) continue;
    int64_t ts = 0;
    for (q += sizeof key - 1; q < end && *q >= '0' && *q <= '9'; q++) ts = ts * 10 + (*q - '0');
    int64_t lag = wall_ms() - ts;
    if (ts > 0) api_lag_observed(e, lag > 0 ? (double)lag / 1000.0 : 0.0);
    return;
  }
}

static int refill_one(uint64_t seq, const char *msg, size_t len, void *ud) {
  refill_ctx *c = ud;
  if (seq != c->r->delivered + 1) return WSY_IO; /* the log has a hole: cannot happen while retained */
  net_chunk *f = ws_frame_new(WS_OP_TEXT, msg, len);
  observe_lag(c->e, f);
  bus_msg m = {.room = c->r->name, .epoch = c->r->epoch, .seq = seq, .frame = f};
  room_deliver(c->e, &m);
  c->r->delivered = seq;
  net_chunk_unref(f);
  return 0;
}

/* cluster_refill with the room's row already read. */
static int refill_from(engine *e, room *r, uint64_t upto, const store_room_info *ip) {
  store_room_info info = *ip;
  int rc;
  if (!info.exists || strcmp(info.epoch, r->epoch) != 0) return 0; /* deleted meanwhile: the reload says so */
  if (!r->pending && info.lockver != r->lockver) r->locks_stale = 1; /* a lock event was lost */
  if (info.seq <= r->delivered) return 0;
  if (r->delivered + 1 < info.min_seq) {
    /* Trimmed past what this node's members have: they can only catch up
     * by joining again (as after a long disconnection). */
    log_warn("room %s: entries %llu-%llu were trimmed before this node delivered them", r->name,
             (unsigned long long)r->delivered + 1, (unsigned long long)info.min_seq - 1);
    r->delivered = info.min_seq - 1;
  }
  uint64_t last = upto && upto < info.seq ? upto : info.seq;
  refill_ctx c = {e, r};
  uint64_t before = r->delivered;
  rc = store_history(e->st, r->name, r->delivered, (size_t)(last - r->delivered), refill_one, &c);
  e->refills++;
  e->refilled += r->delivered - before;
  if (r->delivered > r->seq || r->delivered > before) r->stale = 1;
  return rc;
}

int cluster_refill(engine *e, room *r, uint64_t upto) {
  if (upto && upto <= r->delivered) return 0;
  store_room_info info = {0};
  int rc = store_room_get(e->st, r->name, &info);
  return rc != 0 ? rc : refill_from(e, r, upto, &info);
}

/* Every entry passes here on its way to the members: the local commit's
 * (origin NULL) and the other nodes'. */
static void deliver_in_order(engine *e, room *r, const bus_msg *m) {
  if (m->seq <= r->delivered) {
    e->bus_duplicates++;
    return;
  }
  if (m->epoch && strcmp(m->epoch, r->epoch) != 0) {
    r->stale = 1; /* another incarnation of the room: the reload tells */
    return;
  }
  if (m->seq > r->delivered + 1) {
    e->bus_gaps++;
    if (e->clustered) {
      /* Read without blocking: the fetch's log holds the missing entries
       * and this one (committed before it was published), delivered in
       * order when it is answered. */
      r->stale = 1;
      cluster_fetch(e, r, 0);
      return;
    }
    if (cluster_refill(e, r, m->seq - 1) != 0 || r->delivered + 1 != m->seq) {
      log_warn("room %s: entry %llu held back, the store could not fill %llu-%llu yet", r->name,
               (unsigned long long)m->seq, (unsigned long long)r->delivered + 1,
               (unsigned long long)m->seq - 1);
      r->stale = 1;
      return; /* the periodic check delivers it from the store */
    }
  }
  room_deliver(e, m);
  r->delivered = m->seq;
  if (r->fwd_held) opfwd_delivered(e, r); /* answers of forwarded ops that waited for it */
  if (m->origin) {
    r->stale = 1; /* decided elsewhere: this replica is behind */
    observe_lag(e, m->frame);
  }
}

/* The bus's delivery: entries in order, ephemeral traffic as it comes. */
static void on_deliver(void *ud, const bus_msg *m) {
  engine *e = ud;
  room *r = map_get(&e->rooms, m->room);
  if (!r) return;
  if (m->origin) e->bus_received++;
  if (r->loading) { /* no member yet: entries are read after the load */
    if (m->seq > r->load_seen) r->load_seen = m->seq;
    else if (!m->seq) (void)presence_on_ephemeral(e, r, m);
    return;
  }
  if (!m->seq) {
    if (m->origin && m->frame) { /* another node changed a lock: read them again before deciding */
      size_t len;
      const uint8_t *p = frame_payload(m->frame, &len);
      if (room_lock_event(p, len)) r->locks_stale = 1;
    }
    if (!presence_on_ephemeral(e, r, m)) room_deliver(e, m);
    return;
  }
  deliver_in_order(e, r, m);
}

typedef struct check_ctx {
  engine *e;
  map seen; /* rooms the store has: name -> its row (a copy) */
} check_ctx;

static int check_one(const char *name, const store_room_info *info, void *ud) {
  check_ctx *c = ud;
  store_room_info *copy = wsy_malloc(sizeof *copy);
  *copy = *info;
  map_put(&c->seen, name, copy);
  return 0;
}

/* Compares each loaded room with the store, without blocking the loop: the
 * rows of every loaded room in one asynchronous read (store_fetch_rooms:
 * one round trip for PostgreSQL, on the fetch connection), then a fetch of
 * each room found behind (as for a gap on the bus), which delivers what is
 * missing and, when the replica itself is behind, reads its state again.
 * One check at a time: a tick while one is out does nothing. */
static void check_done(void *ud, int rc, store *snap);

static void check_rooms(engine *e) {
  if (e->check_names) return;
  size_t n = 0, cap = map_len(&e->rooms);
  if (!cap) return;
  char **names = wsy_calloc(cap, sizeof *names); /* copies: rooms may unload meanwhile */
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->rooms, &i, &k, &v) && n < cap;) {
    room *r = v;
    if (r->pending && r->delivered == r->seq) continue; /* its own commit is in flight */
    if (r->loading) continue;                           /* its load reads it */
    names[n++] = wsy_strndup(r->name, strlen(r->name));
  }
  e->check_names = names;
  e->check_n = n;
  if (!n) return check_done(e, 0, NULL);
  int rc = store_fetch_rooms(e->st, (const char *const *)names, n, check_done, e);
  if (rc != 0) check_done(e, rc, NULL); /* refused at once (a fault): answered the same way */
}

static void check_room(engine *e, room *r, const store_room_info *info) {
  if (r->loading || (r->pending && r->delivered == r->seq)) return; /* as when the check began */
  if (!info->exists || strcmp(info->epoch, r->epoch) != 0) return; /* deleted meanwhile: the next decision's reload says so */
  if (!r->pending && info->lockver != r->lockver) r->locks_stale = 1; /* a lock event was lost */
  if (info->seq <= r->delivered) return;
  e->check_behind++;
  if (info->seq > r->seq) r->stale = 1; /* the replica too: writes wait for its state */
  cluster_fetch(e, r, 0);
}

static void check_done(void *ud, int rc, store *snap) {
  engine *e = ud;
  char **names = e->check_names;
  size_t n = e->check_n;
  e->check_names = NULL;
  e->check_n = 0;
  check_ctx c = {.e = e};
  map_init(&c.seen);
  if (rc == 0 && n) rc = store_rooms_get(snap, (const char *const *)names, n, check_one, &c);
  if (rc != 0) log_warn("cluster: cannot compare %zu loaded rooms with the store: %s", n, wsy_strerror(rc));
  /* Rooms are looked up again by name: a fetch answered at once (a fault)
   * may end sessions and unload rooms. */
  for (size_t i = 0; i < n && rc == 0; i++) {
    const char *name = names[i];
    store_room_info *info = map_get(&c.seen, name);
    room *r = map_get(&e->rooms, name);
    if (!r || !info) continue; /* unloaded meanwhile; or deleted: the next decision's reload says so */
    check_room(e, r, info);
    if ((r = map_get(&e->rooms, name))) commit_redecide_deferred(e, r); /* writes left waiting by a reload that failed */
  }
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&c.seen, &i, &k, &v);) wsy_free(v);
  map_free(&c.seen);
  for (size_t i = 0; i < n; i++) wsy_free(names[i]);
  wsy_free(names);
}

static void on_check(uv_timer_t *t) {
  check_rooms(t->data);
  opfwd_sweep(t->data);
}

static void on_link(void *ud, int up) {
  engine *e = ud;
  if (up) {
    log_info("bus: link up, comparing %zu loaded rooms with the store", map_len(&e->rooms));
    check_rooms(e);
  } else {
    log_warn("bus: link down; entries reach this node's members from the store until it is back");
  }
  opfwd_link(e, up);
}

static void on_node(void *ud, const char *node, int up) {
  engine *e = ud;
  log_info("bus: node %s %s", node, up ? "joined" : "is gone (no heartbeat): its members leave");
  fb_node(e, node, up); /* requests forwarded to a node that is gone are answered 503 */
  if (up) {
    map_put(&e->nodes, node, (void *)1);
    return;
  }
  map_del(&e->nodes, node);
  opfwd_node(e, node, up); /* its ops out are decided again where their rooms' owners are now */
  presence_node_gone(e, node);
  room_locks_node_gone(e, node);
}

void cluster_room_deleted(engine *e, room *r) {
  if (!e->clustered) return;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->nodes, &i, &k, &v);)
    if (bus_send_node(e->bus, k, "rdel", r->name, strlen(r->name)) != 0)
      log_debug("bus: node %s not told of room %s's deletion (link down): its check will find it", k, r->name);
}

/* Another node deleted the room: the replica here, if any, is read again
 * (with its state) and nobody waits for it but its members, who leave. */
static void room_deleted_elsewhere(engine *e, const uint8_t *body, size_t len) {
  char name[512];
  if (len >= sizeof name) return;
  memcpy(name, body, len);
  name[len] = '\0';
  room *r = room_ready(map_get(&e->rooms, name)); /* one loading reads it after this anyway */
  if (!r) return;
  r->stale = 1;
  cluster_fetch(e, r, 1);
}

/* Messages to this node alone: presence answers; the HTTP transports'
 * forwarded requests. */
static void on_direct(void *ud, const char *from, const char *kind, const uint8_t *body, size_t len) {
  engine *e = ud;
  if (!strcmp(kind, "presence")) presence_on_answer(e, from, body, len);
  else if (!strcmp(kind, "presq")) presence_on_query(e, from, body, len);
  else if (!strncmp(kind, "fb", 2)) fb_direct(e, from, kind, body, len);
  else if (!strcmp(kind, "rdel")) room_deleted_elsewhere(e, body, len);
  else if (!strcmp(kind, "op.f") || !strcmp(kind, "op.r")) opfwd_direct(e, from, kind, body, len);
  else if (!strcmp(kind, "udisc")) cluster_on_disconnect(e, from, body, len);
  else if (!strcmp(kind, "udisc.r")) cluster_on_disconnected(e, body, len);
  else log_warn("bus: message of unknown kind %s from node %s dropped", kind, from);
}

int cluster_init(engine *e, char *err, size_t errlen) {
  const wsy_config *cfg = e->cfg;
  if (cfg->node_id && *cfg->node_id) {
    snprintf(e->node_id, sizeof e->node_id, "%s", cfg->node_id);
  } else {
    char host[64] = "node", rnd[9];
    (void)gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    for (char *p = host; *p; p++) /* a node id's characters (bus.h) */
      if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("._:@-", *p)))
        *p = '-';
    random_hex(rnd, 4);
    snprintf(e->node_id, sizeof e->node_id, "%.40s-%s", host, rnd);
  }
  if (cfg->bus_url && *cfg->bus_url) {
    bus_events ev = {.deliver = on_deliver, .direct = on_direct, .link = on_link, .node = on_node, .ud = e};
    int rc = bus_redis_new(e->loop, cfg->bus_url, e->node_id, &ev, &e->bus, err, errlen);
    if (rc != 0) return rc; /* nothing made yet */
    e->clustered = 1;
  } else {
    e->bus = bus_local_new(on_deliver, e);
  }
  map_init(&e->nodes);
  uv_timer_init(e->loop, &e->settle_timer);
  e->settle_timer.data = e;
  uv_unref((uv_handle_t *)&e->settle_timer);
  uv_timer_init(e->loop, &e->cluster_timer);
  e->cluster_timer.data = e;
  if (e->clustered) {
    uv_timer_start(&e->cluster_timer, on_check, CHECK_MS, CHECK_MS);
    uv_unref((uv_handle_t *)&e->cluster_timer);
    log_info("cluster: node %s on bus %s", e->node_id, cfg->bus_url);
  }
  return 0;
}

void cluster_deinit(engine *e) {
  presence_api_flush(e);
  /* A check still out is dropped with the store (store.h): its names go here. */
  for (size_t i = 0; i < e->check_n; i++) wsy_free(e->check_names[i]);
  wsy_free(e->check_names);
  e->check_names = NULL;
  e->check_n = 0;
  uv_close((uv_handle_t *)&e->cluster_timer, NULL);
  uv_close((uv_handle_t *)&e->settle_timer, NULL);
  map_free(&e->nodes);
}

void cluster_room_subscribe(engine *e, room *r) {
  if (r->subscribed) return;
  r->delivered = r->seq;
  r->subscribed = 1;
  r->subscribed_cluster = e->clustered;
  bus_subscribe(e->bus, r->name);
}

void cluster_room_loaded(engine *e, room *r) {
  if (r->subscribed) return;
  cluster_room_subscribe(e, r);
  presence_query(e, r);
}

void cluster_room_unloading(engine *e, room *r) {
  if (r->subscribed) bus_unsubscribe(e->bus, r->name);
  r->subscribed = 0;
  presence_room_free(r);
}

int cluster_fresh(engine *e, room *r) {
  if (!r->stale && !r->locks_stale) return 0;
  if (r->pending) return WSY_STALE;
  if (!r->stale) { /* only the locks changed: they alone are read again */
    int rc = room_locks_reload(e, r);
    if (rc != 0 || !r->stale) return rc;
  }
  int rc = room_reload(e, r);
  if (rc != 0) return rc;
  /* What the store holds beyond what the members have: delivered now, so
   * that the next local entry follows it. */
  if (r->seq > r->delivered) rc = cluster_refill(e, r, r->seq);
  r->stale = 0;
  e->reloads++;
  return rc;
}

/* ---- replicas made current without blocking (cluster.h) ----------------- */

/* A join waiting for a fetch started after it arrived (fetch number need);
 * or a backend API write (s NULL, http set: cluster_api_write_wait). */
typedef struct fwait {
  struct fwait *next;
  sess *s;
  conn *http;     /* a backend write's deferred request; NULL once its connection is gone */
  char *line;     /* a backend write's access log line */
  int kind;       /* a backend write: API_OPS, API_PUBLISH or API_DELETE (api.h) */
  int unrecorded; /* a backend write whose cid the store was found not to have (lookup.c) */
  json_t *req;
  uint64_t need;
  uint64_t since; /* the join's since seq (its catch-up reads the log after it), else UINT64_MAX */
  int history;    /* the join asks for the room's last stored publishes (the fetch reads them) */
  int behind;     /* a backend write queued behind joins that had waited JOIN_WAIT_MS */
} fwait;

typedef struct fetch_ctx {
  engine *e;
  char *name;
  uint64_t id, no;
  int state;
  int changes;  /* the state as changes after the replica's seq (STORE_FETCH_CHANGES) */
  size_t dirty; /* then: the replica's dirty items, read whole */
} fetch_ctx;

static void on_fetched(void *ud, int rc, store *snap);

void cluster_fetch(engine *e, room *r, int state) {
  if (!e->clustered) return;
  if (r->fetching) {
    r->fetch_again = 1;
    r->fetch_state |= state;
    return;
  }
  if (r->pending) { /* a snapshot now might predate them: after they are done */
    r->fetch_after_commit = 1;
    r->fetch_state |= state;
    return;
  }
  state |= r->fetch_state || r->stale || r->locks_stale || r->broken;
  r->fetch_state = r->fetch_again = r->fetch_after_commit = 0;
  fetch_ctx *c = wsy_calloc(1, sizeof *c);
  c->e = e;
  c->name = wsy_strndup(r->name, strlen(r->name));
  c->id = ++e->fetch_ids;
  c->no = ++r->fetch_started;
  c->state = state;
  r->fetching = 1;
  r->fetch_id = c->id;
  /* The log from what was delivered here, or from the oldest since of the
   * joins waiting (their catch-ups come from the snapshot too). */
  uint64_t after = r->delivered;
  int recent = 0;
  for (fwait *w = r->fetch_q; w; w = w->next) {
    if (w->since < after && after - w->since <= e->cfg->max_catchup) after = w->since;
    recent |= w->history;
  }
  /* A loaded replica reads only the items written since its seq, and
   * those that batches which failed changed in memory (r->dirty): a room
   * read again after each of another node's commits costs what changed,
   * not what it holds. */
  c->changes = state && r->kind->reload_changes && !r->loading && !r->pending && !r->dirty_all;
  int rc;
  if (c->changes) {
    if (r->synced < after) after = r->synced;
    c->dirty = map_len(&r->dirty);
    const char **items = c->dirty ? wsy_malloc(c->dirty * sizeof *items) : NULL;
    const char *k;
    void *v;
    size_t n = 0;
    for (size_t i = 0; map_next(&r->dirty, &i, &k, &v);) items[n++] = k;
    rc = store_fetch_changes(e->st, r->name, recent ? STORE_FETCH_RECENT : 0, after, items, n, on_fetched, c);
    wsy_free(items);
  } else {
    rc = store_fetch(e->st, r->name,
                     STORE_FETCH_LOG | (state ? STORE_FETCH_STATE : 0) | (recent ? STORE_FETCH_RECENT : 0), after,
                     on_fetched, c);
  }
  if (rc != 0) on_fetched(c, rc, NULL); /* refused at once (a fault): answered the same way */
}

void cluster_fetch_if_due(engine *e, room *r) {
  if (r->fetch_after_commit && !r->pending) cluster_fetch(e, r, 0);
}

static void fwait_free(fwait *w) {
  if (w->s) {
    hook_hold_release(w->s);
    sess_unref(w->s);
  }
  json_decref(w->req);
  wsy_free(w->line);
  wsy_free(w);
}

void cluster_fetch_q_free(room *r) {
  for (fwait *w = r->fetch_q, *next; w; w = next) {
    next = w->next;
    if (!w->s) api_write_resume(NULL, w->http, NULL, w->req, w->kind, w->line, 503);
    fwait_free(w);
  }
  r->fetch_q = NULL;
}

int cluster_api_write_needs_fetch(engine *e, const char *name) {
  room *r = map_get(&e->rooms, name);
  /* Behind joins that have waited JOIN_WAIT_MS too, as a session's writes
   * (commit_admit): a steady stream of backend writes would keep the room
   * pending, and so the joins waiting. */
  return e->clustered &&
         !(r && !r->loading && !r->broken && !r->stale && !r->locks_stale && !r->fetching && !cluster_joins_starving(e, r));
}

int cluster_api_write_wait(engine *e, conn *c, const char *name, json_t *req, int kind) {
  if (!cluster_api_write_needs_fetch(e, name)) return 0;
  room *r = map_get(&e->rooms, name);
  int behind = r && cluster_joins_starving(e, r);
  if (!r) r = room_open_loading(e, name);
  fwait *w = wsy_calloc(1, sizeof *w);
  w->behind = behind;
  w->req = req ? json_incref(req) : NULL;
  w->kind = kind;
  w->unrecorded = e->unrecorded_now;
  w->need = r->fetch_started + 1; /* the next fetch to start */
  w->since = UINT64_MAX;
  if (e->api_line) w->line = wsy_strndup(e->api_line, strlen(e->api_line));
  if (c) httpd_defer(c, &w->http);
  if (!r->fetch_q) r->fetch_q_until = now_ms(e) + JOIN_WAIT_MS;
  fwait **pp = &r->fetch_q;
  while (*pp) pp = &(*pp)->next;
  *pp = w;
  e->api_writes_waited++;
  cluster_fetch(e, r, 1);
  return 1;
}

static void join_wait_push(engine *e, room *r, sess *s, json_t *req, int state, int waited);

void cluster_join_refetch(engine *e, room *r, sess *s, json_t *req, int waited) {
  join_wait_push(e, r, s, req, 0, waited);
}

int cluster_joins_starving(engine *e, room *r) {
  if (!e->clustered || (!r->pend_q && !r->fetch_q)) return 0;
  uint64_t now = now_ms(e);
  return (r->pend_q && now >= r->pend_q_until) || (r->fetch_q && now >= r->fetch_q_until);
}

int cluster_join_wait(engine *e, room *r, sess *s, json_t *req, int waited) {
  if (!e->clustered || r->fresh_pass || r->pending) return 0; /* with entries pending the join waits for them first (join.c) */
  join_wait_push(e, r, s, req, 0, waited);
  return 1;
}

int cluster_join_load(engine *e, const char *name, sess *s, json_t *req) {
  if (!e->clustered) return 0;
  room *r = map_get(&e->rooms, name);
  if (r && !r->loading) return 0;
  if (!r) r = room_open_loading(e, name);
  join_wait_push(e, r, s, req, 1, 0);
  return 1;
}

/* The join waits (its session held) for a fetch started after it arrived
 * (with the room's state: state set). */
static void join_wait_push(engine *e, room *r, sess *s, json_t *req, int state, int waited) {
  fwait *w = wsy_calloc(1, sizeof *w);
  w->s = s;
  s->refs++;
  s->hold++; /* its later messages wait behind the join (hook.h) */
  w->req = json_incref(req);
  w->need = r->fetch_started + 1; /* the next fetch to start */
  json_t *since = json_object_get(req, "since");
  json_t *sq = json_object_get(since, "seq");
  w->since = json_is_integer(sq) && json_integer_value(sq) >= 0 ? (uint64_t)json_integer_value(sq) : UINT64_MAX;
  json_t *h = json_object_get(req, "history");
  w->history = json_is_integer(h) && json_integer_value(h) > 0;
  if (!r->fetch_q) r->fetch_q_until = now_ms(e) + JOIN_WAIT_MS;
  /* Last; but a join that has waited for the room's pending entries goes
   * before the backend writes queued behind waiting joins (it is one of
   * them): they go after it, on the same fetch. */
  fwait **pp = &r->fetch_q;
  while (*pp && !(waited && (*pp)->behind)) pp = &(*pp)->next;
  for (fwait *b = *pp; b; b = b->next)
    if (b->behind && b->need < w->need) b->need = w->need;
  w->next = *pp;
  *pp = w;
  cluster_fetch(e, r, state);
}

/* The joins whose fetch has been answered go on (r fresh as of then), in
 * order; with failed set they are refused instead (JOIN_WRONG_KIND: the
 * room a join loaded is a Yjs room). */
#define JOIN_WRONG_KIND 2
static void release_joins(engine *e, room *r, int failed, store *snap) {
  fwait *go = NULL, **gt = &go;
  for (fwait **pp = &r->fetch_q; *pp;) {
    fwait *w = *pp;
    if (failed || w->need <= r->fetch_done) {
      *pp = w->next;
      w->next = NULL;
      *gt = w;
      gt = &w->next;
    } else {
      pp = &w->next;
    }
  }
  r->fresh_pass = !failed;
  e->join_snap = snap;
  for (fwait *w = go, *next; w; w = next) {
    next = w->next;
    if (!w->s) { /* a backend write */
      int was = e->unrecorded_now;
      e->unrecorded_now = w->unrecorded;
      api_write_resume(e, w->http, failed ? NULL : r, w->req, w->kind, w->line, failed == JOIN_WRONG_KIND ? 409 : failed ? 500 : 0);
      e->unrecorded_now = was;
    } else if (!w->s->ended) {
      if (failed == JOIN_WRONG_KIND)
        sess_error(w->s, w->req, "bad_request", "the room is a Yjs room: open it on /v1/yjs/{room}", "room", NULL);
      else if (failed) sess_error(w->s, w->req, "internal", "the room could not be read", NULL, NULL);
      else if (w->s->ghost) opfwd_ghost_go(w->s, w->req); /* a forwarded op waited for the room's load */
      else join_handle_asked(w->s, w->req);
    }
    fwait_free(w);
  }
  e->join_snap = NULL;
  r->fresh_pass = 0;
}

/* Brings r up to date from a fetch's snapshot: the state when it was read
 * (or when the row shows the replica behind: then 1, another fetch with
 * the state is needed), and the entries past what was delivered. */
static int apply_fetch(engine *e, room *r, store *snap, int state, int changes, size_t dirty) {
  if (r->loading) { /* its first load (room.h) */
    if (!state) return 1;
    int rc = room_load_from(e, r, snap);
    if (rc != 0) return rc;
    e->reloads++;
    r->stale = 0;
    /* Entries the bus brought while it loaded, past the snapshot: read next. */
    if (r->load_seen > r->seq) r->fetch_again = 1;
    return 0;
  }
  store_room_info info;
  int rc = store_room_get(snap, r->name, &info);
  if (rc != 0) return rc;
  int behind = !info.exists || strcmp(info.epoch, r->epoch) != 0 || info.seq > r->seq || info.lockver != r->lockver;
  if (!state && (behind || r->stale || r->locks_stale || r->broken)) {
    r->stale = r->stale || behind;
    return 1;
  }
  if (state && changes &&
      (r->dirty_all || map_len(&r->dirty) != dirty || !info.exists || strcmp(info.epoch, r->epoch) != 0)) {
    /* Not the replica the changes were read for (run ahead of the store
     * since, or another incarnation of the room): read whole. */
    r->broken = r->dirty_all = 1;
    e->reloads_whole++;
    return 1;
  }
  if (state) {
    /* Deleted elsewhere, and nobody here but its members wants it: not made again. */
    r->no_create = !info.exists && !r->fetch_q && !r->defer && !r->settle_q && !r->npeers;
    r->reload_changes = changes;
    rc = room_reload_from(e, r, snap);
    r->reload_changes = 0;
    r->no_create = 0;
    if (rc != 0 && changes && rc != ROOM_WRONG_KIND) { /* memory was not what the store held: read whole */
      log_warn("room %s: its changes could not be applied (%s): it is read again whole", r->name, wsy_strerror(rc));
      r->broken = r->dirty_all = 1;
      e->reloads_whole++;
      return 1;
    }
    if (rc != 0) return rc;
    if (changes) e->reloads_changes++;
    e->reloads++;
    if (!info.exists) { /* deleted by another node and made again here: nothing to deliver */
      r->stale = 0;
      return 0;
    }
  }
  store *was = e->st;
  e->st = snap; /* the entries past r->delivered, from the snapshot */
  rc = refill_from(e, r, 0, &info);
  e->st = was;
  if (rc == 0 && r->delivered > r->seq) {
    /* Entries past the snapshot reached the members meanwhile (another
     * node's, over the bus, before this answer): the state is older than
     * what they were sent, and a join served from it would miss them.
     * Read again; the waiters wait for that read. */
    r->stale = 1;
    return 1;
  }
  if (rc == 0) r->stale = 0;
  return rc;
}

static void fetched(fetch_ctx *c, room *r, int rc, store *snap);

static void on_fetched(void *ud, int rc, store *snap) {
  fetch_ctx *c = ud;
  room *r = map_get(&c->e->rooms, c->name);
  if (r && r->fetching && r->fetch_id == c->id) { /* else unloaded meanwhile */
    r->pins++; /* joins and writes decided below may leave it: it stays until the end */
    fetched(c, r, rc, snap);
    r->pins--;
    room_unload_if_idle(c->e, r);
  }
  wsy_free(c->name);
  wsy_free(c);
}

static void fetched(fetch_ctx *c, room *r, int rc, store *snap) {
  engine *e = c->e;
  uint64_t no = c->no;
  int state = c->state;
  r->fetching = 0;
  if (rc != 0) {
    log_warn("room %s: cannot read it from the store: %s", r->name, wsy_strerror(rc));
    r->fetch_done = no;
    release_joins(e, r, 1, NULL);
    commit_defer_fail(e, r, rc);
    if (r->fetch_again && !r->fetching) cluster_fetch(e, r, 0);
    return;
  }
  if (r->pending) { /* it may predate them: again once they are done */
    r->fetch_after_commit = 1;
    r->fetch_state |= state;
    return;
  }
  int a = apply_fetch(e, r, snap, state, c->changes, c->dirty);
  if (a == 1) { /* behind: the state is needed too; the waiters wait for it */
    r->fetch_again = 0;
    cluster_fetch(e, r, 1);
    return;
  }
  if (a != 0) {
    if (a != ROOM_WRONG_KIND) log_warn("room %s: cannot bring it up to date: %s", r->name, wsy_strerror(a));
    r->fetch_done = no;
    release_joins(e, r, a == ROOM_WRONG_KIND ? JOIN_WRONG_KIND : 1, NULL);
    commit_defer_fail(e, r, a);
    return;
  }
  r->fetch_done = no;
  release_joins(e, r, 0, snap);
  if (r->defer && !r->pending && !r->fetching) {
    r->fresh_pass = 1;
    commit_redecide_deferred(e, r);
    r->fresh_pass = 0;
  }
  if (r->fetch_again && !r->fetching) cluster_fetch(e, r, 0);
}
