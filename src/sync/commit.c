/* commit.c -- the room log (commit.h): admission and dedupe, sequencing,
 * the group commit through the store seam, acks and fan-out after it. */
#include "commit.h"

#include <string.h>

#include "../common/log.h"
#include "api.h"
#include "cluster.h"
#include "hook.h"
#include "proto.h"
#include "room.h"
#include "stream.h"
#include "sess.h"

static void pend_append(engine *e, pend *p) {
  p->next = NULL;
  *e->tail = p;
  e->tail = &p->next;
}

void commit_http_answer(conn **http, const char *api_line, int status, json_t *body) {
  char *text = jw_dumps(body);
  json_decref(body);
  if (api_line) log_info("api %s -> %d%s", api_line, status, *http ? "" : " (client gone)");
  if (*http) httpd_deferred_respond(*http, status, text);
  free(text);
  *http = NULL;
}

json_t *commit_http_stale(void) {
  return json_pack("{s:s,s:s,s:s}", "type", "error", "code", "stale", "message",
                   "another node wrote this room first; send the request again");
}

static void http_answer(pend *p, int status, json_t *body) { commit_http_answer(&p->http, p->api_line, status, body); }

/* A pending entry, its cid and its cid key live in the arena of the batch
 * they ride in (store_batch_alloc): freed with it, after commit_done. */
static pend *pend_alloc(engine *e) {
  pend *p = store_batch_alloc(e->batch, sizeof *p);
  memset(p, 0, sizeof *p);
  return p;
}

static char *pend_strdup(engine *e, const char *s, size_t len) {
  char *c = store_batch_alloc(e->batch, len + 1);
  memcpy(c, s, len);
  c[len] = '\0';
  return c;
}

static void pend_free(engine *e, pend *p) {
  if (p->counted) commit_inflight_done(p->s, p->r);
  json_decref(p->req);
  wsy_free(p->req_text);
  if (p->ckey) map_del_if(&e->cids, p->ckey, p);
  if (p->s) sess_unref(p->s);
  json_decref(p->re);
  wsy_free(p->api_line);
  net_chunk_unref(p->frame);
  net_chunk_unref(p->ev);
  wsy_free(p->item);
}

/* {"type":"ack","re","room","cid","seq","rev","duplicate"}, written directly:
 * one per op, so not worth a jansson object each. */
static net_chunk *ack_frame(engine *e, const pend *p, const room *r) {
  jw *w = &e->frame_text;
  jw_reset(w);
  jw_lit(w, "{\"type\":\"ack\"");
  if (p->re) {
    jw_lit(w, ",\"re\":");
    jw_value(w, p->re);
  }
  jw_lit(w, ",\"room\":");
  jw_cstr(w, r->name);
  if (p->cid) {
    jw_lit(w, ",\"cid\":");
    jw_cstr(w, p->cid);
  }
  jw_lit(w, ",\"seq\":");
  jw_int(w, (int64_t)p->seq);
  if (p->rev) {
    jw_lit(w, ",\"rev\":");
    jw_int(w, (int64_t)p->rev);
  }
  if (p->kind == P_DUP) jw_lit(w, ",\"duplicate\":true");
  jw_lit(w, "}");
  return ws_frame_new(WS_OP_TEXT, w->p, w->len);
}

/* The internal error of an entry whose commit failed: re and for from its
 * request, so the client knows which request to retry (PROTOCOL.md 11.1). */
static json_t *failed_msg(const pend *p, int rc, int clustered) {
  /* In a cluster, a batch fenced out by another node's commit (or holding
   * a cid another node recorded, or rolled back by PostgreSQL to break a
   * deadlock with another node's commit) is not a failure of the store:
   * the op is re-sent at once and decided again on the room's current
   * state. */
  int stale = rc == WSY_STALE || rc == WSY_DUPLICATE || (rc == WSY_AGAIN && clustered);
  json_t *m = json_pack("{s:s}", "type", "error");
  if (p->re) json_object_set(m, "re", p->re);
  if (p->type) json_object_set_new(m, "for", json_string(p->type));
  json_object_set_new(m, "code", json_string(stale ? "stale" : "internal"));
  json_object_set_new(m, "message", json_string(stale ? "another node wrote this room first; re-send"
                                                      : "the change could not be stored; retry"));
  json_object_set_new(m, "room", json_string(p->r->name));
  if (p->cid) json_object_set_new(m, "cid", json_string(p->cid));
  return m;
}

/* Every member of r leaves it, each told {"type":"left","room","reason"};
 * r must be pinned (pending) so that it does not unload under the walk. */
static void room_remove_members(engine *e, room *r, const char *reason) {
  while (r->members) {
    sess *s = r->members->s;
    s->refs++;
    room_member_remove(e, r->members, "left");
    sess_send_json(s, json_pack("{s:s,s:s,s:s}", "type", "left", "room", r->name, "reason", reason));
    sess_unref(s);
  }
}

void commit_room_members_deleted(engine *e, room *r) {
  r->pins++; /* unloaded, if idle, by whoever reloaded it */
  room_remove_members(e, r, "deleted");
  r->pins--;
}

static void seen_add_key(engine *e, const char *key);

/* In a cluster, a write whose batch another node's commit fenced out is
 * decided again here (on the room read again), up to this many times,
 * before its writer gets `stale` (PROTOCOL.md 11.2). */
#define REDECIDE_MAX 20

/* A batch that failed: the items it changed in memory (store.h). */
static void note_dirty(const char *room_name, const char *item, void *ud) {
  room *r = map_get(&((engine *)ud)->rooms, room_name);
  if (!r) return;
  if (item) map_put(&r->dirty, item, (void *)1);
  else r->dirty_all = 1;
}

static void commit_done(void *ud, int rc) {
  engine *e = ud;
  api_commit_observed(e, (double)(uv_hrtime() - e->batch_started) / 1e9, rc != 0);
  if (rc == WSY_STALE || rc == WSY_DUPLICATE) {
    /* Another node committed first: the rooms reload, writers re-send. */
    e->stale_commits++;
    log_debug("commit fenced out (%s): %s", wsy_strerror(rc), store_batch_error(e->fl_batch));
  } else if (rc == WSY_AGAIN && e->clustered) {
    /* A deadlock (or serialization failure) with another node's commit:
     * nothing was stored and the batch's writes are decided again, as
     * for a fence; the store works. */
    log_warn("commit rolled back by the store (%s), decided again: %s", wsy_strerror(rc),
             store_batch_error(e->fl_batch));
  } else if (rc != 0) {
    log_error("commit failed (%s): %s", wsy_strerror(rc), store_batch_error(e->fl_batch));
    if (!e->store_failing) log_warn("health: degraded until a commit succeeds");
    e->store_failing = 1;
    snprintf(e->store_error, sizeof e->store_error, "commits failing: %s (%s)", wsy_strerror(rc),
             store_batch_error(e->fl_batch));
  }
  if (rc != 0 && e->clustered) store_batch_each_item(e->fl_batch, note_dirty, e);
  if (rc == 0 && store_batch_count(e->fl_batch) > 0 && e->store_failing) {
    e->store_failing = 0;
    e->store_error[0] = '\0';
    log_info("health: ok again (a commit succeeded)");
  }
  /* A committed batch hands the store the next one before its acks and
   * fan-out are written, so the two overlap rather than take turns (bench
   * (e): the commits were idle a quarter of the time). Not after a failure
   * (its rooms are marked first), nor for a batch that stores nothing: it
   * would complete at once, its answers ahead of this batch's. */
  store_batch *done = e->fl_batch;
  pend *head = e->fl_head;
  int early = rc == 0 && store_batch_count(e->batch) > 0;
  if (early) {
    e->fl_batch = NULL;
    e->fl_head = NULL;
    e->busy = 0;
    commit_start(e);
  }
  bus_hold(e->bus); /* the batch's entries: one bus message per room */
  for (pend *p = head, *next; p; p = next) {
    next = p->next;
    room *r = p->r;
    r->pins++; /* a leave let go below (inflight) may empty it: unloaded at the end */
    if (p->kind == P_DELETE && rc == 0) {
      /* Gone from the store: whoever joined while the deletion was pending
       * leaves too, and the room unloads below instead of reloading. */
      room_remove_members(e, r, "deleted");
      r->broken = 0;
      log_info("room %s deleted", r->name);
      cluster_room_deleted(e, r);
      http_answer(p, 200, json_pack("{s:s,s:b}", "room", r->name, "deleted", 1));
    }
    if (p->http && rc == WSY_DUPLICATE && p->cid && e->clustered) {
      commit_lookup_rolled_back(e, p);
    } else if (p->http) {
      if (rc == WSY_STALE || rc == WSY_DUPLICATE || (rc == WSY_AGAIN && e->clustered))
        http_answer(p, 503, commit_http_stale());
      else if (rc != 0)
        http_answer(p, 500, json_pack("{s:s,s:s,s:s}", "type", "error", "code", "internal", "message",
                                      "the change could not be stored; retry"));
      else {
        json_t *b = json_pack("{s:s,s:s}", "room", r->name, "epoch", r->epoch);
        if (p->seq) json_object_set_new(b, "seq", json_integer((json_int_t)p->seq));
        if (p->rev) json_object_set_new(b, "rev", json_integer((json_int_t)p->rev));
        if (p->kind == P_DUP) json_object_set_new(b, "duplicate", json_true());
        http_answer(p, 200, b);
      }
    }
    if (p->kind == P_ERR) {
      if (p->s) sess_send(p->s, p->frame);
    } else if (rc != 0) {
      /* Nothing of the batch was stored: the room's memory ran ahead of
       * the store, and reloads once nothing of it is pending. */
      r->broken = 1;
      json_t *req = (rc == WSY_STALE || rc == WSY_DUPLICATE || rc == WSY_AGAIN) && p->tries < REDECIDE_MAX
                        ? p->req ? json_incref(p->req) : p->req_text ? proto_reread(p->req_text, p->req_len) : NULL
                        : NULL;
      if (req)
        /* Decided again once r is read again. Its cid was sequenced (so the
         * dedupe filter says "maybe"), but a stale or deadlocked batch rolled
         * back whole: the store has not recorded it, no lookup needed. */
        commit_defer_redo(r, p->s, req, p->tries + 1, rc != WSY_DUPLICATE && p->kind != P_DUP); /* a duplicate's original is recorded */
      else if (p->s && p->kind != P_CREATE) sess_send_json(p->s, failed_msg(p, rc, e->clustered));
      json_decref(req);
      /* A release fenced out: made again once r is read again, unless the
       * lock has changed hands meanwhile (room_locks_orphans). */
      if (p->kind == P_LOCK && p->item) map_put(&r->rerelease, p->item, (void *)(uintptr_t)p->seq);
      /* A cid another node recorded: its re-send asks the store. */
      if (rc == WSY_DUPLICATE && p->ckey) seen_add_key(e, p->ckey);
    } else if (p->kind == P_LOCK) {
      if (p->s && p->frame) sess_send(p->s, p->frame);
      if (p->ev) room_publish(e, r, 0, p->ev, NULL, NULL);
    } else if (p->kind == P_OP || p->kind == P_DUP) {
      if (p->s) {
        net_chunk *ack = ack_frame(e, p, r);
        sess_send(p->s, ack);
        net_chunk_unref(ack);
      }
      if (p->kind == P_OP) {
        room_publish(e, r, p->seq, p->frame, NULL, NULL);
        if (e->hooks) {
          size_t len;
          const uint8_t *msg = frame_payload(p->frame, &len);
          webhooks_committed(e->hooks, r->name, r->epoch, p->seq, (const char *)msg, len);
        }
      }
    }
    if (p->kind == P_OP) {
      if (rc != 0) e->ops_failed++;
      else e->ops_committed++;
      /* Fenced: the store was at the seq this batch was decided on, so
       * memory is the store's up to its op now. */
      if (rc == 0 && p->seq > r->synced) r->synced = p->seq;
    }
    r->pending--;
    int created = p->kind == P_CREATE;
    pend_free(e, p);
    if (r->broken && r->pending == 0) { /* else tried again on the next write */
      if (e->clustered) cluster_fetch(e, r, 1);
      else (void)room_reload(e, r);
    }
    if (r->pending == 0) cluster_fetch_if_due(e, r);
    if (created && r->creating) {
      r->creating = 0; /* stored, or another node's room was read instead */
      presence_gate_open(e, r);
    }
    if (r->pend_q) join_pending_done(e, r); /* first: writes may wait behind them (cluster_joins_starving) */
    if (r->defer && r->pending == 0) commit_redecide(e, r);
    r->pins--;
    room_unload_if_idle(e, r);
  }
  bus_release(e->bus);
  store_batch_free(done);
  if (!early) {
    e->fl_batch = NULL;
    e->fl_head = NULL;
    e->busy = 0;
  }
  commit_start(e);
}

void commit_start(engine *e) {
  if (e->busy || (!e->head && store_batch_count(e->batch) == 0)) return;
  e->fl_batch = e->batch;
  e->fl_head = e->head;
  e->batch = store_batch_new();
  e->batch_no++; /* the next batch's head token (commit_head) */
  e->head = NULL;
  e->tail = &e->head;
  e->busy = 1;
  e->batch_started = uv_hrtime();
  if (store_batch_count(e->fl_batch) == 0) { /* only duplicates: nothing to write */
    commit_done(e, 0);
    return;
  }
  store_commit(e->st, e->fl_batch, commit_done, e);
}

/* A cid: 1-128 characters of A-Z a-z 0-9 . _ : @ - (PROTOCOL.md 5.1). Its
 * own rule, not the room names': the two may change apart. */
int commit_cid_valid(const char *cid) { return wsy_charset_ok(cid, strlen(cid), 128, "._:@-"); }

static pend *pend_new(author *a, int kind, json_t *req, room *r, uint64_t seq, const char *cid) {
  pend *p = pend_alloc(a->e);
  p->kind = kind;
  /* A duplicate's answer riding in a batch that fails is decided again too:
   * its original is stored, the new decision answers it so. */
  if (a->e->clustered && a->s && req && (kind == P_OP || kind == P_LOCK || kind == P_DUP)) {
    p->req = proto_keep(a->e, req, &p->req_text, &p->req_len);
    p->tries = a->e->tries_now;
  }
  p->s = a->s;
  if (a->s) a->s->refs++;
  if (kind == P_OP || kind == P_LOCK || kind == P_DUP) p->counted = commit_inflight_add(a->e, a->s, r);
  p->re = req ? json_incref(json_object_get(req, "id")) : NULL;
  p->type = req && (kind == P_OP || kind == P_DUP) ? (jstr(req, "type") && !strcmp(jstr(req, "type"), "publish") ? "publish" : "op") : NULL;
  if (req && kind == P_LOCK) p->type = jstr(req, "type") && !strcmp(jstr(req, "type"), "unlock") ? "unlock" : "lock";
  p->r = r;
  p->seq = seq;
  p->cid = cid ? pend_strdup(a->e, cid, strlen(cid)) : NULL;
  if (a->http) httpd_defer(a->http, &p->http);
  if (a->http && a->e->api_line) p->api_line = wsy_strndup(a->e->api_line, strlen(a->e->api_line));
  return p;
}

/* "user:device|cid", the key of e->cids: dkey is at most 139 bytes, a cid
 * at most 128 (both checked on the way in). */
#define CID_KEY_MAX 272

static size_t cid_key(char key[CID_KEY_MAX], const char *dkey, const char *cid) {
  size_t a = strlen(dkey), b = strlen(cid);
  memcpy(key, dkey, a);
  key[a] = '|';
  memcpy(key + a + 1, cid, b + 1);
  return a + 1 + b;
}

/* The dedupe filter (cidf.h) holds every cid the store has recorded
 * (loaded at start, then fed as entries are sequenced). A cid it has never
 * seen -- nearly every op -- skips the store lookup; a false positive only
 * costs that lookup (counted: wsync_dedupe_lookups_total). */
static void seen_add(engine *e, const char *dkey, const char *cid) { cidf_add(&e->seen, cidf_hash(dkey, cid)); }

static int seen_maybe(engine *e, const char *dkey, const char *cid) {
  return cidf_maybe(&e->seen, cidf_hash(dkey, cid));
}

/* The same for a key of e->cids ("user:device|cid"). */
static void seen_add_key(engine *e, const char *key) {
  const char *bar = strrchr(key, '|');
  if (!bar) return;
  char dkey[CID_KEY_MAX];
  memcpy(dkey, key, (size_t)(bar - key));
  dkey[bar - key] = '\0';
  seen_add(e, dkey, bar + 1);
}

/* The records' hashes go to the filter 256 at a time (cidf_add_many). */
typedef struct seen_loader {
  cidf *f;
  size_t max;   /* more records than this: only counted (the filter is made again) */
  size_t total; /* records read */
  size_t n;
  uint64_t h[256];
} seen_loader;

static int seen_load(const char *dkey, const char *cid, void *ud) {
  seen_loader *l = ud;
  if (++l->total > l->max) return 0;
  l->h[l->n++] = cidf_hash(dkey, cid);
  if (l->n == 256) {
    cidf_add_many(l->f, l->h, l->n);
    l->n = 0;
  }
  return 0;
}

/* Reads the records into e->seen; when there are more than max, only
 * counts the rest. Sets *total. */
static int seen_load_all(engine *e, size_t max, size_t *total) {
  seen_loader *l = wsy_calloc(1, sizeof *l);
  l->f = &e->seen;
  l->max = max;
  int rc = store_dedupe_each(e->st, seen_load, l);
  cidf_add_many(l->f, l->h, l->n);
  *total = l->total;
  wsy_free(l);
  return rc;
}

int commit_init(engine *e, char *err, size_t errlen) {
  map_init_borrowed(&e->cids); /* the keys are the entries' own (p->ckey); tagged slots (map.c) */
  random_hex(e->incarnation, 8);
  e->batch_no = 1;
  e->batch = store_batch_new();
  e->tail = &e->head;
  /* The filter starts at --dedupe-filter cids. A store that holds more
   * is read a second time (the first reading only counts past the filter's
   * size) into one layer sized for twice its records (cidf.h): a new cid
   * then costs one cache line, not one per layer a growing filter would
   * have. Twice the reading rather than the records' hashes kept aside (8
   * bytes each, 160 MB for 20 million) while the filter is sized; a larger
   * --dedupe-filter reads once. */
  size_t n;
  cidf_init(&e->seen, e->cfg->dedupe_filter);
  int rc = seen_load_all(e, e->cfg->dedupe_filter, &n);
  if (rc == 0 && n > e->cfg->dedupe_filter) {
    cidf_free(&e->seen);
    cidf_init(&e->seen, 2 * n);
    rc = seen_load_all(e, SIZE_MAX, &n);
  }
  if (rc != 0) {
    snprintf(err, errlen, "cannot read the dedupe records of the store");
    return WSY_IO;
  }
  return 0;
}

void commit_deinit(engine *e) {
  commit_lookup_deinit(e);
  map_free(&e->cids);
  cidf_free(&e->seen);
  store_batch_free(e->batch);
  e->batch = NULL;
}

void commit_room_created(engine *e, room *r) {
  store_batch_room_create(e->batch, r->name, r->epoch);
  r->creating = 1;
  pend *p = pend_alloc(e);
  p->kind = P_CREATE;
  p->r = r;
  r->pending++;
  pend_append(e, p);
}

void commit_room_delete(author *a, room *r) {
  engine *e = a->e;
  r->pending++; /* pins the room until the deletion is done */
  room_remove_members(e, r, "deleted");
  r->broken = 1; /* refuses writes meanwhile (commit_admit) */
  store_batch_room_delete(e->batch, r->name);
  pend_append(e, pend_new(a, P_DELETE, NULL, r, 0, NULL));
}

void commit_refusal_in_order(author *a, room *r, json_t *msg) {
  pend *p = pend_new(a, P_ERR, NULL, r, 0, NULL);
  p->frame = engine_frame(a->e, msg);
  json_decref(msg);
  r->pending++;
  pend_append(a->e, p);
}

jw *commit_entry_begin(engine *e, const room *r, int type, const json_t *from, const char *cid) {
  jw *w = &e->frame_text;
  jw_reset(w);
  if (type == COMMIT_OP) jw_lit(w, "{\"type\":\"op\",\"room\":");
  else jw_lit(w, "{\"type\":\"message\",\"room\":");
  jw_cstr(w, r->name);
  jw_lit(w, ",\"seq\":");
  jw_int(w, (int64_t)r->seq);
  jw_lit(w, ",\"ts\":");
  jw_int(w, (int64_t)wall_ms());
  jw_lit(w, ",\"from\":");
  jw_value(w, from);
  if (cid) {
    jw_lit(w, ",\"cid\":");
    jw_cstr(w, cid);
  }
  if (type == COMMIT_OP) jw_lit(w, ",\"op\":");
  else jw_lit(w, ",\"data\":");
  return w;
}

net_chunk *commit_entry_end(jw *w) {
  jw_lit(w, "}");
  return ws_frame_new(WS_OP_TEXT, w->p, w->len);
}

net_chunk *commit_entry_frame(engine *e, const room *r, int type, const json_t *from, const char *cid,
                              const json_t *v) {
  jw *w = commit_entry_begin(e, r, type, from, cid);
  jw_value(w, v);
  return commit_entry_end(w);
}

/* In a cluster, the first entry of r in the batch being filled checks and
 * moves r's head (store.h, store_batch_head): a batch decided on top of
 * one that is then fenced out fails with it. Lock changes are fenced by
 * their rows instead: as long as the batch has nothing else of r, its head
 * is soft, so that the lock changes of several nodes at once do not fence
 * each other out (a node's later batch still expects this one's head). */
static void commit_head(engine *e, room *r, int soft) {
  if (!e->clustered) return;
  if (r->head_batch == e->batch_no) {
    if (!soft && r->head_soft) store_batch_head_strict(e->batch, r->head_entry);
    r->head_soft = r->head_soft && soft;
    return;
  }
  char token[STORE_HEAD_MAX + 1];
  snprintf(token, sizeof token, "%.63s:%s:%llu", e->node_id, e->incarnation, (unsigned long long)e->batch_no);
  r->head_entry = store_batch_head(e->batch, r->name, r->head[0] ? r->head : NULL, token, soft);
  snprintf(r->head, sizeof r->head, "%s", token);
  r->head_batch = e->batch_no;
  r->head_soft = soft;
}

pend *commit_sequence(author *a, json_t *req, room *r, net_chunk *frame, const char *item,
                      const char *fields_json, const char *revs_json, const sync_change *changes,
                      size_t nchanges, const char *cid) {
  engine *e = a->e;
  commit_head(e, r, 0);
  pend *p = pend_new(a, P_OP, req, r, r->seq, cid);
  p->frame = frame;
  store_op so = {
    .room = r->name,
    .seq = r->seq,
    .item = item,
    .fields_json = fields_json,
    .version = r->seq,
    .dkey = cid ? a->dkey : NULL,
    .cid = cid,
    .msg = e->frame_text.p,
    .msg_len = e->frame_text.len,
    .revs_json = revs_json,
    .locks_at = e->clustered ? r->lockver + 1 : 0, /* locks were checked as they are now */
  };
  store_batch_op(e->batch, &so);
  for (size_t i = 0; i < nchanges; i++)
    store_batch_item(e->batch, r->name, changes[i].item, changes[i].fields_json, changes[i].revs_json,
                     r->seq);
  if (cid) {
    char key[CID_KEY_MAX];
    p->ckey = pend_strdup(e, key, cid_key(key, a->dkey, cid));
    map_put(&e->cids, p->ckey, p);
    seen_add(e, a->dkey, cid);
  }
  r->pending++;
  pend_append(e, p);
  e->ops_accepted++;
  /* Retention: keep the newest history_ops entries (trimmed in steps),
   * and those a webhook has not delivered yet, up to its cap. */
  uint64_t keep = e->cfg->history_ops;
  if (keep && !r->kind->own_retention && r->seq > keep && r->seq % 256 == 0) {
    uint64_t from = webhooks_trim_point(e->hooks, r->name, r->epoch, r->seq - keep + 1, r->seq);
    uint64_t floor = stream_log_floor(e, r->name); /* a catch-up in parts still reads from there */
    if (from > floor) from = floor;
    if (from > 1) {
      store_batch_trim(e->batch, r->name, from);
      if (r->min_seq < from) r->min_seq = from; /* joins check it (join.c) */
    }
  }
  return p;
}

/* An op refused because the store could not be read (its room again, or
 * its cid's dedupe record) makes the node degraded, as a failed commit
 * does: in a cluster, a room other nodes write is read again before every
 * decision, so with the store down most ops never reach a commit. The next
 * commit that stores something clears it (commit_done). */
void commit_store_unreadable(engine *e, const char *name, int rc) {
  if (!e->store_failing) log_warn("health: degraded until a commit succeeds (room %s cannot be read: %s)", name,
                                  wsy_strerror(rc));
  e->store_failing = 1;
  snprintf(e->store_error, sizeof e->store_error, "store reads failing: %s (room %s)", wsy_strerror(rc), name);
}

int commit_cid_maybe_stored(engine *e, const char *dkey, const char *cid) {
  char key[CID_KEY_MAX];
  cid_key(key, dkey, cid);
  return !map_get(&e->cids, key) && seen_maybe(e, dkey, cid);
}

/* A re-sent entry (same user, device, cid): answered with the original seq.
 * 1 when req was a duplicate (or a cid of another room) and has been
 * answered, or (cluster) waits for its record to be read; -1 (*why set)
 * when the store cannot tell: the op is refused rather than risk applying
 * it twice; 0 when it is new. */
static int dedupe(author *a, json_t *req, room *r, const char *cid, op_refusal *why) {
  engine *e = a->e;
  char key[CID_KEY_MAX];
  cid_key(key, a->dkey, cid);
  pend *orig = map_get(&e->cids, key);
  uint64_t seq = 0;
  int found = 0;
  /* Read while it waited (commit_lookup_session): asked because the filter
   * could not rule it out, or because a refusal waited for it (in a
   * cluster the filter holds only the cids this node sequenced). */
  defwrite *known = e->lookup_now && e->lookup_now->req == req ? e->lookup_now : NULL;
  if (orig) {
    if (orig->r != r) goto other_room;
    seq = orig->seq;
    found = 1;
  } else if (known || (!e->unrecorded_now && seen_maybe(e, a->dkey, cid))) {
    char room_out[STORE_ROOM_MAX + 1];
    int rc = 0, asked = 0;
    if (known) {
      e->lookup_now = NULL;
      e->looked_up_now = 1;
      rc = known->lookup_rc;
      seq = known->lookup_seq;
      snprintf(room_out, sizeof room_out, "%s", known->lookup_room ? known->lookup_room : "");
    } else if (e->clustered && a->s && req && (asked = commit_lookup_session(a, req, r, cid, 0, &rc)) == 1) {
      return 1;
    } else if (asked == 0) {
      e->dedupe_lookups++;
      rc = store_dedupe_get(e->st, a->dkey, cid, room_out, &seq);
    }
    if (rc != 0 && rc != WSY_NOT_FOUND) {
      log_error("dedupe lookup of %s|%s failed: %s", a->dkey, cid, wsy_strerror(rc));
      commit_store_unreadable(e, r->name, rc);
      return commit_refuse(why, "internal", "the store could not check this cid; retry", NULL);
    }
    if (rc == 0 && strcmp(room_out, r->name) != 0) goto other_room;
    found = rc == 0;
  }
  if (!found) return 0;
  /* The ack waits for the original's commit (and for the ones queued
   * before it), so it never claims what is not yet stored. */
  r->pending++; /* pins the room until the answer is sent */
  pend_append(e, pend_new(a, P_DUP, req, r, seq, cid));
  return 1;
other_room:
  if (a->s) sess_error(a->s, req, "bad_request", "this cid was already used in another room", "cid", NULL);
  else api_error(a->http, 400, "bad_request", "this cid was already used in another room");
  return 1;
}

void commit_count_rejection(engine *e, const char *code) {
  map_put(&e->rejected, code, (void *)((uintptr_t)map_get(&e->rejected, code) + 1));
}

int commit_refuse(op_refusal *why, const char *code, const char *msg, json_t *extra) {
  why->err.code = code;
  why->err.field = NULL;
  snprintf(why->err.message, sizeof why->err.message, "%s", msg);
  why->extra = extra;
  return -1;
}

int commit_admit(author *a, json_t *req, room *r, const char *cid, op_refusal *why) {
  why->extra = NULL;
  /* In a cluster, a session's write to a room waiting to be read again
   * (a fenced-out batch, a stale replica with entries pending), or behind
   * writes deferred before it, or (outside a pass deciding deferred writes
   * again) behind joins that have waited JOIN_WAIT_MS, waits its turn
   * rather than being refused. */
  int starving = 0;
  if (a->e->clustered && a->s && req &&
      (r->defer ? a->e->redeciding != r
                : r->fetching || (r->pending != 0 && (r->broken || r->stale || r->locks_stale)) ||
                      (starving = a->e->redeciding != r && cluster_joins_starving(a->e, r)))) {
    commit_defer_push(r, a->s, req, a->e->tries_now, a->e->unrecorded_now);
    if (starving && !r->pending && !r->fetching) cluster_fetch(a->e, r, 0); /* decided after the joins' fetch */
    return 1;
  }
  /* A session's write to a replica that must be read again waits for an
   * asynchronous read (cluster.h), rather than the loop waiting for it. */
  if (a->e->clustered && a->s && req && !r->fresh_pass && (r->broken || r->stale || r->locks_stale)) {
    commit_defer_push(r, a->s, req, a->e->tries_now, a->e->unrecorded_now);
    cluster_fetch(a->e, r, 1);
    return 1;
  }
  int d = cid ? dedupe(a, req, r, cid, why) : 0;
  if (d) return d;
  /* A room whose reload failed tries again when nothing of it is pending. */
  int rl = 0;
  if (r->broken && (r->pending != 0 || (rl = room_reload(a->e, r)) != 0)) {
    if (rl != 0) commit_store_unreadable(a->e, r->name, rl);
    return commit_refuse(why, "internal", "the room is recovering from a storage failure; retry", NULL);
  }
  /* Another node wrote the room: decided on its current state only. A
   * session's write that finds the replica stale with entries pending (in
   * a pass deciding deferred writes again) waits for the next read rather
   * than being refused: `stale` means 20 fences in a row (PROTOCOL.md 11.1). */
  int fr = cluster_fresh(a->e, r);
  if (fr == WSY_STALE && a->s && req) {
    a->e->stale_deferred++;
    commit_defer_fresh(r, a->s, req, a->e->tries_now, a->e->unrecorded_now);
    return 1;
  }
  if (fr == WSY_STALE) return commit_refuse(why, "stale", "another node wrote this room first; re-send", NULL);
  if (fr != 0) {
    commit_store_unreadable(a->e, r->name, fr);
    return commit_refuse(why, "internal", "the room could not be read from the store; retry", NULL);
  }
  if (a->s && !room_membership(a->s, r->name)) /* the reload found it deleted elsewhere: members left */
    return commit_refuse(why, "not_joined", "join the room first", NULL);
  return 0;
}

void commit_lock(engine *e, room *r, sess *s, json_t *req, const char *item, lock *l, json_t *reply,
                 json_t *event) {
  char holder[SESS_WIRE_MAX + 1];
  if (l->holder) sess_token_wire(l->holder, holder, sizeof holder);
  commit_head(e, r, 1);
  uint64_t now = now_ms(e);
  int64_t expires = wall_ms() + (int64_t)(l->expires > now ? l->expires - now : 0);
  store_batch_lock(e->batch, r->name, l->version, item, l->holder ? holder : NULL,
                   l->holder ? l->holder->id.user : NULL, l->holder ? l->holder->device : NULL, l->fence, expires);
  l->version++;
  r->lockver++; /* as the store's, unless another node changed a lock meanwhile */
  author a = {.e = e, .s = s};
  pend *p = pend_new(&a, P_LOCK, req, r, 0, NULL);
  if (!l->holder && !req) { /* a release nobody asked for (leave, expiry, grace): kept to redo */
    p->item = wsy_strndup(item, strlen(item));
    p->seq = l->fence;
  }
  if (reply) p->frame = engine_frame(e, reply);
  if (event) p->ev = engine_frame(e, event);
  json_decref(reply);
  json_decref(event);
  r->pending++;
  pend_append(e, p);
}

int commit_lock_admit(sess *s, json_t *req, room *r) {
  engine *e = s->e;
  if (r->defer ? e->redeciding != r
               : r->fetching || (r->pending != 0 && (r->broken || r->stale || r->locks_stale)) ||
                     (e->redeciding != r && cluster_joins_starving(e, r))) {
    if (r->fresh_pass) commit_defer_push(r, s, req, e->tries_now, 0);
    else commit_defer_fresh(r, s, req, e->tries_now, 0);
    return 1;
  }
  if (!r->fresh_pass && (r->broken || r->stale || r->locks_stale)) { /* read without blocking first */
    commit_defer_fresh(r, s, req, e->tries_now, 0);
    return 1;
  }
  int rc = r->broken ? room_reload(e, r) : 0;
  if (rc == 0) rc = cluster_fresh(e, r);
  if (rc == 0 && !room_membership(s, r->name)) { /* the reload found it deleted elsewhere */
    sess_error(s, req, "not_joined", "join the room first", NULL, NULL);
    return -1;
  }
  if (rc == 0) return 0;
  if (rc == WSY_STALE) { /* as in commit_admit: waits for the next read */
    e->stale_deferred++;
    commit_defer_fresh(r, s, req, e->tries_now, 0);
    return 1;
  }
  commit_store_unreadable(e, r->name, rc);
  sess_error(s, req, "internal", "the room could not be read from the store; retry", NULL, NULL);
  return -1;
}
