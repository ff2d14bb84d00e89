/* engine.c -- the sync protocol: hello, join/leave, op, publish, presence,
 * ping, bye; group commit; fan-out after commit; the backend HTTP API. The
 * HTTP transports of a session are in fallback.c, the structures both use in
 * engine_int.h. See engine.h and docs/PROTOCOL.md (the spec; sections marked
 * planned are not built here).
 *
 * Life of an op:
 *   request -> checks (rate, membership, grant, shape, dedupe, base)
 *           -> applied to the room's in-memory document, given seq = room.seq+1,
 *              added to the current store batch and pending list
 *   end of loop iteration (check hook): if no commit runs, the batch goes to
 *           the thread pool (store_batch_commit)
 *   commit done (loop thread): for each pending entry, in order: ack to the
 *           author, then the broadcast frame to every member whose join
 *           position is below the entry's seq.
 *
 * Join position: `joined` is computed from the store (the committed state,
 * read in one snapshot), and the member is told seq S = the store's seq.
 * Every entry with seq > S is broadcast to it after its commit; entries
 * <= S that are still waiting for their broadcast skip it. So history and
 * live delivery are contiguous and never overlap. */
#include "engine.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../auth/auth.h"
#include "../common/jsonw.h"
#include "../common/log.h"
#include "../common/map.h"
#include "../http/httpd.h"
#include "../store/store.h"
#include "engine_int.h"
#include "sync.h"
#include "text.h"

/* ---- small helpers -------------------------------------------------------- */

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void random_hex(char *out, size_t nbytes) {
  unsigned char b[32];
  if (RAND_bytes(b, (int)nbytes) != 1) abort();
  for (size_t i = 0; i < nbytes; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void ob_clear(sess *s) {
  while (s->ob_len) {
    net_chunk_unref(s->ob[s->ob_head]);
    s->ob_head = (s->ob_head + 1) & (s->ob_cap - 1);
    s->ob_len--;
    s->ob_first++;
  }
  wsy_free(s->ob);
  s->ob = NULL;
  s->ob_cap = s->ob_head = 0;
  s->ob_bytes = 0;
}

void sess_unref(sess *s) {
  if (--s->refs > 0) return;
  ob_clear(s);
  wsy_free(s->dn_headers);
  json_decref(s->from);
  auth_identity_free(&s->id);
  wsy_free(s);
}

static json_t *sess_from(sess *s) {
  if (!s->from) s->from = json_pack("{s:s,s:s}", "user", s->id.user, "device", s->device);
  return s->from;
}

void ob_pop(sess *s) {
  net_chunk *ch = s->ob[s->ob_head];
  s->ob_bytes -= ch->len;
  net_chunk_unref(ch);
  s->ob_head = (s->ob_head + 1) & (s->ob_cap - 1);
  s->ob_len--;
  s->ob_first++;
}

/* Messages outside the ordinals (welcome, and anything before it): written
 * to the WebSocket, or captured as the answer to a POST /v1/send hello. */
static void sess_direct(sess *s, net_chunk *frame) {
  if (s->w) {
    ws_send_frame(s->w, frame);
  } else if (s->e->cap) {
    size_t len;
    const uint8_t *p = frame_payload(frame, &len);
    s->e->cap->text.len = 0;
    if (buf_append(&s->e->cap->text, p, len) != WSY_OK) s->e->cap->text.len = 0;
  }
}

/* The one way a message reaches a session: counted, kept in the outbox,
 * and written to its downstream when there is one. */
static void sess_send(sess *s, net_chunk *frame) {
  if (!s->welcomed) {
    sess_direct(s, frame);
    return;
  }
  if (s->ended) return;
  if (s->ob_len == s->ob_cap) {
    uint32_t cap = s->ob_cap ? s->ob_cap * 2 : 16;
    net_chunk **q = wsy_malloc(cap * sizeof *q);
    for (uint32_t i = 0; i < s->ob_len; i++) q[i] = s->ob[(s->ob_head + i) & (s->ob_cap - 1)];
    wsy_free(s->ob);
    s->ob = q;
    s->ob_cap = cap;
    s->ob_head = 0;
  }
  s->ob[(s->ob_head + s->ob_len) & (s->ob_cap - 1)] = net_chunk_ref(frame);
  s->ob_len++;
  s->ob_next++;
  s->ob_bytes += frame->len;
  /* Over the cap the oldest go, confirmed or not (PROTOCOL.md 3.4). An HTTP
   * session's outbox is also its delivery queue: what no SSE stream or
   * poll answer has carried yet is kept up to --max-queued-bytes more, as a
   * WebSocket's socket queue would hold it, so a burst (or a large joined)
   * between two polls is not lost. */
  const wsy_config *cfg = s->e->app->cfg;
  size_t cap = cfg->max_outbox, hard = cap + (s->http ? cfg->max_queued : 0);
  while (s->ob_len > 1 && (s->ob_bytes > hard || (s->ob_bytes > cap && (!s->http || s->ob_first <= s->dn_upto))))
    ob_pop(s);
  if (s->w) ws_send_frame(s->w, frame);
  else if (s->dn) dn_push(s, frame, s->ob_next - 1);
}

/* Presence's connected flag: a WebSocket, or an HTTP session that has not
 * been without a downstream for the grace period (PROTOCOL.md 2.4). */
static int sess_online(const sess *s) { return s->w || (s->http && !s->detached_at); }

/* The text of the last frame made (frame_json, op_frame, ack_frame), kept
 * for the store and reused: loop thread only. */
static jw frame_text = JW_INIT;

static net_chunk *frame_json(json_t *msg) {
  jw_reset(&frame_text);
  jw_value(&frame_text, msg);
  return ws_frame_new(WS_OP_TEXT, frame_text.p, frame_text.len);
}

/* Sends a JSON value (stolen) to a session, if it is still connected. */
static void send_json(sess *s, json_t *msg) {
  net_chunk *frame = frame_json(msg);
  json_decref(msg);
  sess_send(s, frame);
  net_chunk_unref(frame);
}

/* An error reply: code, message, and the request's id and room when known. */
static json_t *error_msg(json_t *req, const char *code, const char *message, const char *field,
                         json_t *extra) {
  json_t *m = json_pack("{s:s}", "type", "error");
  json_t *id = req ? json_object_get(req, "id") : NULL;
  if (id) json_object_set(m, "re", id);
  json_t *type = req ? json_object_get(req, "type") : NULL;
  if (json_is_string(type)) json_object_set(m, "for", type);
  json_object_set_new(m, "code", json_string(code));
  json_object_set_new(m, "message", json_string(message));
  json_t *jroom = req ? json_object_get(req, "room") : NULL;
  if (json_is_string(jroom)) json_object_set(m, "room", jroom);
  json_t *cid = req ? json_object_get(req, "cid") : NULL;
  if (json_is_string(cid)) json_object_set(m, "cid", cid);
  if (field) json_object_set_new(m, "field", json_string(field));
  if (extra) json_object_update(m, extra);
  json_decref(extra);
  return m;
}

void send_error(sess *s, json_t *req, const char *code, const char *message,
                       const char *field, json_t *extra) {
  send_json(s, error_msg(req, code, message, field, extra));
}

/* Errors before welcome end the connection (PROTOCOL.md 3.3). */
static void refuse(sess *s, json_t *req, const char *code, const char *message) {
  send_error(s, req, code, message, NULL, NULL);
  if (s->e->cap) snprintf(s->e->cap->code, sizeof s->e->cap->code, "%s", code);
  if (s->w) ws_close(s->w, WS_CLOSE_POLICY, code);
}

static int rate_ok(sess *s) {
  const wsy_config *cfg = s->e->app->cfg;
  uint64_t now = now_ms(s->e);
  s->tokens += (double)(now - s->tokens_ms) * cfg->rate / 1000.0;
  if (s->tokens > cfg->burst) s->tokens = cfg->burst;
  s->tokens_ms = now;
  if (s->tokens < 1) return 0;
  s->tokens -= 1;
  return 1;
}

static member *membership(sess *s, const char *rname) {
  for (member *m = s->rooms; m; m = m->snext)
    if (strcmp(m->r->name, rname) == 0) return m;
  return NULL;
}

/* ---- rooms ---------------------------------------------------------------- */

static void locks_free(room *r) {
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&r->locks, &i, &k, &v);) wsy_free(v);
  map_free(&r->locks);
}

static void hist_free(text_hist *h) {
  for (size_t i = 0; i < h->n; i++) text_op_free(h->ops[i]);
  wsy_free(h->ops);
  wsy_free(h);
}

static void texts_free(room *r) {
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&r->texts, &i, &k, &v);) hist_free(v);
  map_free(&r->texts);
}

static void room_free(engine *e, room *r) {
  map_del(&e->rooms, r->name);
  locks_free(r);
  texts_free(r);
  doc_free(&r->d);
  wsy_free(r->name);
  wsy_free(r);
}

static void room_maybe_unload(engine *e, room *r) {
  if (r->nmembers == 0 && r->pending == 0) room_free(e, r);
}

static int load_item(const char *item, const char *fields, size_t len, const char *revs, uint64_t version,
                     void *ud) {
  return doc_load(ud, item, fields, len, revs, version);
}

static void pend_append(engine *e, pend *p) {
  p->next = NULL;
  *e->tail = p;
  e->tail = &p->next;
}

/* The room, loaded from the store (or created) before it is served. */
static room *room_get(engine *e, const char *name, int *err) {
  room *r = map_get(&e->rooms, name);
  if (r) return r;
  store_room_info info;
  if (store_room_get(e->st, name, &info) != 0) {
    *err = WSY_IO;
    return NULL;
  }
  r = wsy_calloc(1, sizeof *r);
  r->name = wsy_strndup(name, strlen(name));
  doc_init(&r->d);
  map_init(&r->locks);
  map_init(&r->texts);
  if (info.exists) {
    memcpy(r->epoch, info.epoch, sizeof r->epoch);
    r->seq = info.seq;
    if (store_room_items(e->st, name, load_item, &r->d) != 0) {
      doc_free(&r->d);
      wsy_free(r->name);
      wsy_free(r);
      *err = WSY_IO;
      return NULL;
    }
  } else {
    /* A new history: a new epoch, made durable with the next batch. The
     * creation counts as pending so the room stays loaded until it is. */
    random_hex(r->epoch, 8);
    store_batch_room_create(e->batch, name, r->epoch);
    pend *p = wsy_calloc(1, sizeof *p);
    p->kind = P_CREATE;
    p->r = r;
    r->pending++;
    pend_append(e, p);
  }
  map_put(&e->rooms, name, r);
  return r;
}

static json_t *presence_entry(member *m) {
  json_t *e = json_pack("{s:s,s:s,s:O,s:b}", "user", m->s->id.user, "device", m->s->device, "state",
                        m->state, "connected", sess_online(m->s));
  if (m->cursor) json_object_set_new(e, "cursor", json_integer((json_int_t)m->cursor));
  return e;
}

/* Sends msg (stolen) to every member of r with a connection. */
static void room_send(engine *e, room *r, json_t *msg) {
  net_chunk *frame = frame_json(msg);
  json_decref(msg);
  for (member *m = r->members, *next; m; m = next) {
    next = m->next;
    sess_send(m->s, frame);
    e->deliveries++;
  }
  net_chunk_unref(frame);
}

/* ---- locks ---------------------------------------------------------------- */

static json_t *lock_json(engine *e, const char *item, const lock *l) {
  uint64_t now = now_ms(e);
  return json_pack("{s:s,s:s,s:s,s:I,s:I}", "item", item, "user", l->holder->id.user, "device",
                   l->holder->device, "fence", (json_int_t)l->fence, "ttl",
                   (json_int_t)(l->expires > now ? l->expires - now : 0));
}

static const lock *lock_held(room *r, const char *item) {
  lock *l = map_get(&r->locks, item);
  return l && l->holder ? l : NULL;
}

static void lock_release(engine *e, room *r, const char *item, lock *l, const char *reason) {
  l->holder = NULL;
  r->nheld--;
  room_send(e, r, json_pack("{s:s,s:s,s:s,s:s,s:I,s:s}", "type", "lock", "room", r->name, "item", item,
                            "state", "free", "fence", (json_int_t)l->fence, "reason", reason));
}

/* Releases every lock s holds in r (all sessions when s is NULL and only
 * expired ones are wanted: see lock_sweep). */
static void locks_release_by(engine *e, room *r, sess *s, const char *reason) {
  if (!r->nheld) return;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&r->locks, &i, &k, &v);) {
    lock *l = v;
    if (l->holder == s) lock_release(e, r, k, l, reason);
  }
}

static void expire_sessions(engine *e);

static void lock_sweep(uv_timer_t *t) {
  engine *e = t->data;
  uint64_t now = now_ms(e);
  const char *rk, *k;
  void *rv, *v;
  for (size_t i = 0; map_next(&e->rooms, &i, &rk, &rv);) {
    room *r = rv;
    if (!r->nheld) continue;
    for (size_t j = 0; map_next(&r->locks, &j, &k, &v);) {
      lock *l = v;
      if (l->holder && l->expires <= now) lock_release(e, r, k, l, "expired");
    }
  }
  /* Sessions closed by these sends are reaped in the check hook, so no
   * room goes away while this walk runs. */
  http_sweep(e);
  expire_sessions(e);
}

/* A presence event to every member but the one it is about. */
void presence_event(engine *e, member *about, const char *event) {
  json_t *msg = json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", "presence", "room", about->r->name,
                          "event", event, "user", about->s->id.user, "device", about->s->device);
  if (strcmp(event, "leave") != 0) {
    json_object_set(msg, "state", about->state);
    json_object_set_new(msg, "connected", json_boolean(sess_online(about->s)));
  }
  net_chunk *frame = frame_json(msg);
  json_decref(msg);
  for (member *m = about->r->members, *next; m; m = next) {
    next = m->next;
    if (m != about) {
      sess_send(m->s, frame);
      e->deliveries++;
    }
  }
  net_chunk_unref(frame);
}

static void member_remove(engine *e, member *m, const char *reason) {
  room *r = m->r;
  sess *s = m->s;
  if (m->prev) m->prev->next = m->next;
  else r->members = m->next;
  if (m->next) m->next->prev = m->prev;
  r->nmembers--;
  for (member **pp = &s->rooms; *pp; pp = &(*pp)->snext)
    if (*pp == m) {
      *pp = m->snext;
      break;
    }
  s->nrooms--;
  /* After the unlink: the remaining members hear of the freed locks, the
   * session that leaves does not. */
  locks_release_by(e, r, s, reason);
  presence_event(e, m, "leave");
  json_decref(m->state);
  wsy_free(m);
  room_maybe_unload(e, r);
}

/* ---- group commit ------------------------------------------------------- */

static void commit_work(uv_work_t *w) {
  engine *e = w->data;
  e->fl_rc = store_batch_commit(e->st, e->fl_batch);
}

static void http_answer(pend *p, int status, json_t *body) {
  conn *c = p->http;
  char *text = jw_dumps(body);
  json_decref(body);
  if (c) httpd_deferred_respond(c, status, text);
  free(text);
  p->http = NULL;
}

static void pend_free(engine *e, pend *p) {
  if (p->ckey) {
    map_del_if(&e->cids, p->ckey, p);
    wsy_free(p->ckey);
  }
  if (p->s) sess_unref(p->s);
  json_decref(p->re);
  wsy_free(p->cid);
  net_chunk_unref(p->frame);
  wsy_free(p);
}

static void start_commit(engine *e);

/* {"type":"ack","re","room","cid","seq","rev","duplicate"}, written directly:
 * one per op, so not worth a jansson object each. */
static net_chunk *ack_frame(const pend *p, const room *r) {
  jw *w = &frame_text;
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

static void commit_done(uv_work_t *w, int status) {
  engine *e = w->data;
  int rc = status ? WSY_IO : e->fl_rc;
  static const double bounds[12] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  double secs = (double)(uv_hrtime() - e->batch_started) / 1e9;
  int bi = 0;
  while (bi < 12 && secs > bounds[bi]) bi++;
  e->commit_hist[bi]++;
  e->commit_sum += secs;
  e->commits++;
  if (rc != 0)
    log_error("commit failed (%s): %s", wsy_strerror(rc), store_batch_error(e->fl_batch));
  for (pend *p = e->fl_head, *next; p; p = next) {
    next = p->next;
    room *r = p->r;
    if (p->http) {
      if (rc != 0)
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
      r->broken = 1;
      if (p->s && p->kind != P_CREATE)
        send_error(p->s, NULL, "internal", "the change could not be stored; retry", NULL,
                   json_pack("{s:s,s:s?}", "room", r->name, "cid", p->cid));
    } else if (p->kind == P_OP || p->kind == P_DUP) {
      if (p->s) {
        net_chunk *ack = ack_frame(p, r);
        sess_send(p->s, ack);
        net_chunk_unref(ack);
      }
      if (p->kind == P_OP) {
        for (member *m = r->members, *mn; m; m = mn) {
          mn = m->next;
          if (p->seq > m->from_seq) {
            sess_send(m->s, p->frame);
            e->deliveries++;
          }
        }
      }
    }
    r->pending--;
    pend_free(e, p);
    if (r->broken && r->pending == 0) {
      /* The in-memory room ran ahead of the store: drop it and let its
       * members rejoin (they catch up from what was stored). */
      for (member *m = r->members, *mn; m; m = mn) {
        mn = m->next;
        if (m->s->w) ws_close(m->s->w, WS_CLOSE_INTERNAL, "storage failure");
        else if (m->s->dn) dn_end(m->s, WS_CLOSE_INTERNAL, "storage failure");
      }
      if (map_get(&e->rooms, r->name) == r && r->nmembers == 0) room_free(e, r);
    } else {
      room_maybe_unload(e, r);
    }
  }
  store_batch_free(e->fl_batch);
  e->fl_batch = NULL;
  e->fl_head = NULL;
  e->busy = 0;
  start_commit(e);
}

static void start_commit(engine *e) {
  if (e->busy || (!e->head && store_batch_count(e->batch) == 0)) return;
  e->fl_batch = e->batch;
  e->fl_head = e->head;
  e->batch = store_batch_new();
  e->head = NULL;
  e->tail = &e->head;
  e->busy = 1;
  e->work.data = e;
  e->batch_started = uv_hrtime();
  if (store_batch_count(e->fl_batch) == 0) { /* only duplicates: nothing to write */
    e->fl_rc = 0;
    commit_done(&e->work, 0);
    return;
  }
  uv_queue_work(e->app->loop, &e->work, commit_work, commit_done);
}

static void reap(engine *e);

static void on_check(uv_check_t *h) {
  reap(h->data);
  polls_answer(h->data);
  start_commit(h->data);
}

/* ---- handlers ----------------------------------------------------------- */

static const char *str_member(json_t *req, const char *name) {
  return json_string_value(json_object_get(req, name));
}

/* welcome is not counted in the session's ordinals: written directly. */
static void send_welcome(sess *s, json_t *req, int resumed, int insecure) {
  engine *e = s->e;
  const wsy_config *cfg = e->app->cfg;
  json_t *w = json_pack(
      "{s:s,s:i,s:s,s:s,s:s,s:b,s:s,s:{s:I,s:i,s:I,s:I,s:I,s:i,s:i,s:i,s:i,s:I,s:I}}", "type", "welcome",
      "v", 1, "session", s->token, "user", s->id.user, "device", s->device, "resumed", resumed,
      "server", "wsync/" WSYNC_VERSION, "limits", "max_message", (json_int_t)cfg->max_message,
      "max_rooms", (int)cfg->max_rooms, "max_fields", (json_int_t)e->lim.max_fields, "max_field_size",
      (json_int_t)e->lim.max_field_size, "max_item_size", (json_int_t)e->lim.max_item_size,
      "max_depth", e->lim.max_depth, "max_presence_state", MAX_PRESENCE_STATE, "rate",
      (int)cfg->rate, "burst", (int)cfg->burst, "resume_window", (json_int_t)cfg->resume_window_ms,
      "max_outbox", (json_int_t)cfg->max_outbox);
  json_object_set_new(json_object_get(w, "limits"), "max_batch", json_integer((json_int_t)cfg->max_batch));
  json_object_set_new(json_object_get(w, "limits"), "max_lock_ttl", json_integer((json_int_t)cfg->max_lock_ttl_ms));
  if (insecure) json_object_set_new(w, "insecure", json_true());
  if (resumed) {
    json_t *rooms = json_array();
    for (member *m = s->rooms; m; m = m->snext) json_array_append_new(rooms, json_string(m->r->name));
    json_object_set_new(w, "rooms", rooms);
  }
  json_t *id = json_object_get(req, "id");
  if (id) json_object_set(w, "re", id);
  net_chunk *frame = frame_json(w);
  json_decref(w);
  sess_direct(s, frame);
  net_chunk_unref(frame);
  if (e->cap) e->cap->welcomed = s;
}

/* Ends a session (bye, replaced, expired): its locks and presence go, its
 * connection (if any) is closed with code, and it can no longer resume. */
static void end_session(sess *s, unsigned code, const char *why) {
  engine *e = s->e;
  if (s->ended) return;
  s->ended = 1;
  if (map_get(&e->sessions, s->token) == s) map_del(&e->sessions, s->token);
  if (map_get(&e->by_device, s->dkey) == s) map_del(&e->by_device, s->dkey);
  while (s->rooms) member_remove(e, s->rooms, "session_end");
  if (s->dn) dn_end(s, code, why);
  ob_clear(s);
  if (s->w) ws_close(s->w, code, why);
  sess_unref(s); /* the registry's reference */
}

/* Moves the new connection (carried by the fresh session n) onto the
 * existing session s and replays what the client has not processed. */

/* Takes the session off its current transport: a WebSocket is closed with
 * 4001, an SSE stream ends with a close event 4001, a pending poll is
 * answered (PROTOCOL.md 2.4: one downstream per session). */
void detach_transport(sess *s, const char *why) {
  if (s->w) { /* e.g. a half-open connection */
    ws_conn *ow = s->w;
    ws_conn_set_user(ow, NULL);
    s->w = NULL;
    s->refs--; /* that connection's reference */
    ws_close(ow, 4001, why);
  }
  if (s->dn) dn_release(s);
}

/* Moves the new client (carried by the fresh session n: a WebSocket, or
 * none for a hello by POST /v1/send) onto the existing session s and
 * replays what the client has not processed. */
static void resume(sess *n, sess *s, json_t *req, uint64_t last, int insecure) {
  engine *e = s->e;
  ws_conn *w = n->w;
  detach_transport(s, "session resumed on another connection");
  auth_identity_free(&s->id);
  s->id = n->id;
  memset(&n->id, 0, sizeof n->id);
  if (w) ws_conn_set_user(w, s);
  n->w = NULL;
  sess_unref(n);
  s->w = w;
  if (w) s->refs++; /* the connection's reference */
  s->http = !w;
  s->dn_lost = now_ms(e);
  s->detached_at = 0;
  while (s->ob_len && s->ob_first <= last) ob_pop(s); /* confirmed by last */
  /* The new token's grants apply from now on: rooms it may not read are
   * left (welcome lists the others; the client is told after the replay). */
  json_t *revoked = json_array();
  for (member *m = s->rooms, *next; m; m = next) {
    next = m->snext;
    if (!(auth_room_perms(&s->id, m->r->name) & AUTH_READ)) {
      json_array_append_new(revoked, json_string(m->r->name));
      member_remove(e, m, "left");
    }
  }
  send_welcome(s, req, 1, insecure);
  /* Over HTTP, the downstream opened next replays from its own last. */
  if (w)
    for (uint32_t i = 0; i < s->ob_len; i++) ws_send_frame(w, s->ob[(s->ob_head + i) & (s->ob_cap - 1)]);
  size_t ri;
  json_t *rn;
  json_array_foreach(revoked, ri, rn)
    send_json(s, json_pack("{s:s,s:O,s:s}", "type", "left", "room", rn, "reason", "forbidden"));
  json_decref(revoked);
  for (member *m = s->rooms; m; m = m->snext) presence_event(e, m, "update");
  log_debug("session of %s resumed after ordinal %llu", s->dkey, (unsigned long long)last);
}

static void handle_hello(sess *s, json_t *req) {
  engine *e = s->e;
  const wsy_config *cfg = e->app->cfg;
  if (s->welcomed) {
    send_error(s, req, "bad_request", "this connection already has a session", NULL, NULL);
    return;
  }
  json_t *v = json_object_get(req, "v");
  if (v && (!json_is_integer(v) || json_integer_value(v) != 1)) {
    refuse(s, req, "unsupported_version", "only protocol version 1 exists");
    return;
  }
  const char *token = str_member(req, "token"), *user = str_member(req, "user");
  const char *device = str_member(req, "device");
  if (json_object_get(req, "device") && (!device || !auth_device_valid(device, strlen(device)))) {
    refuse(s, req, "bad_request", "device must be 1-64 characters of A-Z a-z 0-9 . _ : -");
    return;
  }
  if (token) {
    auth_result ar = auth_verify(cfg->auth_secret, token, (int64_t)time(NULL), &s->id);
    if (ar == AUTH_NO_SECRET) {
      refuse(s, req, "unauthorized", "this server accepts no tokens (no --auth-secret)");
      return;
    }
    if (ar != AUTH_OK) {
      log_info("hello refused: %s", auth_strerror(ar));
      refuse(s, req, auth_wire_code(ar), ar == AUTH_EXPIRED ? "the token has expired" : "the token is not valid");
      return;
    }
    if (s->id.device && device && strcmp(s->id.device, device) != 0) {
      log_info("hello refused: token bound to device %s, hello says %s", s->id.device, device);
      auth_identity_free(&s->id);
      refuse(s, req, "token_invalid", "the token is bound to another device");
      return;
    }
    if (!device) device = s->id.device;
  } else if (user && cfg->insecure_demo) {
    if (!auth_user_valid(user, strlen(user))) {
      refuse(s, req, "bad_request", "user must be 1-64 characters of A-Z a-z 0-9 . _ @ -");
      return;
    }
    auth_identity_demo(&s->id, user);
  } else {
    refuse(s, req, "unauthorized", "a token is required");
    return;
  }
  if (!device) {
    auth_identity_free(&s->id);
    refuse(s, req, "bad_request", "device is required");
    return;
  }
  json_t *stokj = json_object_get(req, "session"), *lastj = json_object_get(req, "last");
  if ((stokj && !json_is_string(stokj)) || (lastj && (!json_is_integer(lastj) || json_integer_value(lastj) < 0))) {
    auth_identity_free(&s->id);
    refuse(s, req, "bad_request", "session must be a string and last a non-negative integer");
    return;
  }
  char dkey[sizeof s->dkey];
  snprintf(dkey, sizeof dkey, "%s:%s", s->id.user, device);
  uint64_t last = lastj ? (uint64_t)json_integer_value(lastj) : 0;
  sess *old = stokj ? map_get(&e->sessions, json_string_value(stokj)) : NULL;
  if (old && !old->ended && strcmp(old->dkey, dkey) == 0 && last + 1 <= old->ob_next &&
      old->ob_first <= last + 1) {
    resume(s, old, req, last, !token);
    return;
  }
  /* A new session; one per (user, device): an older one is replaced. */
  sess *prev = map_get(&e->by_device, dkey);
  if (prev) end_session(prev, 4001, "replaced by a new session of this device");
  snprintf(s->device, sizeof s->device, "%s", device);
  memcpy(s->dkey, dkey, sizeof dkey);
  random_hex(s->token, 16);
  s->welcomed = 1;
  s->ob_first = s->ob_next = 1;
  s->refs++; /* the registry's reference */
  map_put(&e->sessions, s->token, s);
  map_put(&e->by_device, s->dkey, s);
  s->tokens = cfg->burst;
  s->tokens_ms = now_ms(e);
  s->http = !s->w;
  s->dn_lost = now_ms(e);
  send_welcome(s, req, 0, !token);
}

/* The request's room name, or NULL after answering bad_request/room_invalid. */
static const char *room_name_or_error(sess *s, json_t *req) {
  const char *name = str_member(req, "room");
  if (!name) {
    send_error(s, req, "bad_request", "room must be a string", "room", NULL);
    return NULL;
  }
  if (!auth_room_valid(name, strlen(name))) {
    send_error(s, req, "room_invalid", "room names are 1-128 characters of A-Z a-z 0-9 . _ : @ -", "room", NULL);
    return NULL;
  }
  return name;
}

static const char *room_member_or_error(sess *s, json_t *req, member **out, int need_write) {
  const char *rname = room_name_or_error(s, req);
  if (!rname) return NULL;
  *out = membership(s, rname);
  if (!*out) {
    send_error(s, req, "not_joined", "join the room first", NULL, NULL);
    return NULL;
  }
  if (need_write && !(auth_room_perms(&s->id, rname) & AUTH_WRITE)) {
    send_error(s, req, "forbidden", "no write permission for this room", NULL, NULL);
    return NULL;
  }
  return rname;
}

typedef struct {
  json_t *arr;
} collect;

static int collect_op(uint64_t seq, const char *msg, size_t len, void *ud) {
  (void)seq;
  json_error_t jerr;
  json_t *v = json_loadb(msg, len, 0, &jerr);
  if (!v) return WSY_IO;
  json_array_append_new(((collect *)ud)->arr, v);
  return 0;
}

static int collect_item(const char *item, const char *fields, size_t len, const char *revs, uint64_t version,
                        void *ud) {
  json_error_t jerr;
  json_t *f = json_loadb(fields, len, 0, &jerr);
  if (!f) return WSY_IO;
  json_t *it = json_pack("{s:I,s:o}", "version", (json_int_t)version, "fields", f);
  json_t *rv = revs ? json_loads(revs, 0, &jerr) : NULL;
  if (rv) json_object_set_new(it, "revs", rv);
  json_object_set_new(ud, item, it);
  return 0;
}

typedef struct {
  json_t *arr;
  const char *user, *device;
  uint64_t mine; /* the stored cursor of this device */
} cursor_collect;

static int collect_cursor(const char *user, const char *device, uint64_t seq, int64_t updated, void *ud) {
  (void)updated;
  cursor_collect *cc = ud;
  if (strcmp(user, cc->user) != 0) return 0;
  json_array_append_new(cc->arr, json_pack("{s:s,s:I}", "device", device, "seq", (json_int_t)seq));
  if (strcmp(device, cc->device) == 0) cc->mine = seq;
  return 0;
}

static int collect_all_cursors(const char *user, const char *device, uint64_t seq, int64_t updated, void *ud) {
  json_array_append_new(ud, json_pack("{s:s,s:s,s:I,s:I}", "user", user, "device", device, "seq",
                                      (json_int_t)seq, "updated", (json_int_t)updated));
  return 0;
}

static void handle_join(sess *s, json_t *req) {
  engine *e = s->e;
  const char *name = room_name_or_error(s, req);
  if (!name) return;
  if (!(auth_room_perms(&s->id, name) & AUTH_READ)) {
    send_error(s, req, "forbidden", "no read permission for this room", NULL, NULL);
    return;
  }
  json_t *since = json_object_get(req, "since");
  const char *since_epoch = NULL;
  uint64_t since_seq = 0;
  if (since) {
    json_t *se = json_object_get(since, "epoch"), *sq = json_object_get(since, "seq");
    if (!json_is_object(since) || (se && !json_is_string(se)) || !json_is_integer(sq) ||
        json_integer_value(sq) < 0 || json_integer_value(sq) > 9007199254740991LL) {
      send_error(s, req, "bad_request", "since must be {epoch: string, seq: integer >= 0}", "since", NULL);
      return;
    }
    since_epoch = json_string_value(se);
    since_seq = (uint64_t)json_integer_value(sq);
  }
  json_t *hj = json_object_get(req, "history");
  if (hj && (!json_is_integer(hj) || json_integer_value(hj) < 0 || json_integer_value(hj) > 1000)) {
    send_error(s, req, "bad_request", "history must be an integer from 0 to 1000", "history", NULL);
    return;
  }
  json_int_t history = hj ? json_integer_value(hj) : 0;
  json_t *pstate = json_object_get(req, "presence");
  if (pstate && !json_is_object(pstate)) {
    send_error(s, req, "bad_request", "presence must be an object", "presence", NULL);
    return;
  }
  if (pstate) {
    if (sync_encoded_size(pstate) > MAX_PRESENCE_STATE) {
      send_error(s, req, "too_large", "presence state is too large", "presence", NULL);
      return;
    }
  }
  member *m = membership(s, name);
  if (!m && s->nrooms >= e->app->cfg->max_rooms) {
    send_error(s, req, "too_many_rooms", "the session has joined the maximum number of rooms", NULL, NULL);
    return;
  }
  int err = 0;
  room *r = room_get(e, name, &err);
  if (!r) {
    send_error(s, req, "internal", "the room could not be loaded", NULL, NULL);
    return;
  }
  /* What the client gets is the committed state, read in one snapshot. */
  store_room_info info;
  json_t *reply = json_pack("{s:s}", "type", "joined");
  json_t *id = json_object_get(req, "id");
  if (id) json_object_set(reply, "re", id);
  json_object_set_new(reply, "room", json_string(name));
  int rc = store_read_begin(e->st);
  if (rc == 0) rc = store_room_get(e->st, name, &info);
  uint64_t seq = 0;
  if (rc == 0) {
    seq = info.exists ? info.seq : 0;
    const char *epoch = info.exists ? info.epoch : r->epoch;
    json_object_set_new(reply, "epoch", json_string(epoch));
    json_object_set_new(reply, "seq", json_integer((json_int_t)seq));
    int recover = since_epoch && *since_epoch && strcmp(since_epoch, epoch) == 0 && since_seq <= seq &&
                  (!info.exists || since_seq + 1 >= info.min_seq) && seq - since_seq <= MAX_CATCHUP;
    json_object_set_new(reply, "recovered", json_boolean(recover));
    if (recover) {
      collect c = {json_array()};
      if (info.exists && seq > since_seq) rc = store_history(e->st, name, since_seq, 0, collect_op, &c);
      json_object_set_new(reply, "ops", c.arr);
    } else {
      json_t *items = json_object();
      if (info.exists) rc = store_room_items(e->st, name, collect_item, items);
      json_object_set_new(reply, "snapshot", json_pack("{s:o}", "items", items));
      if (history > 0 && info.exists && rc == 0) {
        collect c = {json_array()};
        rc = store_recent_messages(e->st, name, (size_t)history, collect_op, &c);
        json_object_set_new(reply, "messages", c.arr);
      }
    }
  }
  cursor_collect cc = {json_array(), s->id.user, s->device, 0};
  if (rc == 0) rc = store_cursors(e->st, name, collect_cursor, &cc);
  json_t *cursors = cc.arr;
  store_read_end(e->st);
  if (rc != 0) {
    json_decref(cursors);
    json_decref(reply);
    send_error(s, req, "internal", "the room could not be read", NULL, NULL);
    room_maybe_unload(e, r);
    return;
  }
  int is_new = !m;
  if (!m) {
    m = wsy_calloc(1, sizeof *m);
    m->s = s;
    m->r = r;
    m->state = pstate ? json_deep_copy(pstate) : json_object();
    m->next = r->members;
    if (r->members) r->members->prev = m;
    r->members = m;
    r->nmembers++;
    m->snext = s->rooms;
    s->rooms = m;
    s->nrooms++;
  }
  m->from_seq = seq;
  if (cc.mine > m->cursor) m->cursor = cc.mine;
  json_t *pres = json_array();
  for (member *x = r->members; x; x = x->next) json_array_append_new(pres, presence_entry(x));
  json_object_set_new(reply, "presence", pres);
  json_t *locks = json_array();
  const char *lk;
  void *lv;
  for (size_t i = 0; r->nheld && map_next(&r->locks, &i, &lk, &lv);)
    if (((lock *)lv)->holder) json_array_append_new(locks, lock_json(e, lk, lv));
  json_object_set_new(reply, "locks", locks);
  json_object_set_new(reply, "cursors", cursors);
  send_json(s, reply);
  if (is_new) presence_event(e, m, "join");
}

static void handle_leave(sess *s, json_t *req) {
  const char *name = room_name_or_error(s, req);
  if (!name) return;
  member *m = membership(s, name);
  json_t *reply = json_pack("{s:s}", "type", "left");
  json_t *id = json_object_get(req, "id");
  if (id) json_object_set(reply, "re", id);
  json_object_set_new(reply, "room", json_string(name));
  send_json(s, reply);
  if (m) member_remove(s->e, m, "left");
}

static int cid_valid(const char *cid) { return auth_room_valid(cid, strlen(cid)); }

/* Who wrote an entry: a session, or the backend API (s NULL, http set). */
typedef struct author {
  engine *e;
  sess *s;
  conn *http;
  const char *dkey; /* dedupe key: "user:device", or ":backend" */
} author;

static void http_error(conn *c, int status, const char *code, const char *message) {
  json_t *b = json_pack("{s:s,s:s,s:s}", "type", "error", "code", code, "message", message);
  char *text = jw_dumps(b);
  json_decref(b);
  httpd_respond(c, status, "application/json", "", text, strlen(text));
  free(text);
}

static pend *pend_new(author *a, int kind, json_t *req, room *r, uint64_t seq, const char *cid) {
  pend *p = wsy_calloc(1, sizeof *p);
  p->kind = kind;
  p->s = a->s;
  if (a->s) a->s->refs++;
  p->re = req ? json_incref(json_object_get(req, "id")) : NULL;
  p->r = r;
  p->seq = seq;
  p->cid = cid ? wsy_strndup(cid, strlen(cid)) : NULL;
  if (a->http) httpd_defer(a->http, &p->http);
  return p;
}

/* "user:device|cid", the key of e->cids: dkey is at most 139 bytes, a cid
 * at most 128 (both checked on the way in). */
#define CID_KEY_MAX 272
static void cid_key(char key[CID_KEY_MAX], const char *dkey, const char *cid) {
  size_t a = strlen(dkey), b = strlen(cid);
  memcpy(key, dkey, a);
  key[a] = '|';
  memcpy(key + a + 1, cid, b + 1);
}

/* The dedupe filter: a Bloom filter over every cid the store has recorded
 * (loaded at start, then fed as entries are sequenced). A cid it has never
 * seen -- nearly every op -- skips the SQLite lookup; a false positive only
 * costs that lookup. 2^24 bits, 4 probes: under 1% false positives up to
 * about 1.7 million cids. */
#define SEEN_BITS (1u << 24)

static void seen_probe(const char *dkey, const char *cid, uint32_t pos[4]) {
  uint64_t h = 1469598103934665603ull;
  for (const char *p = dkey; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
  h = (h ^ '|') * 1099511628211ull;
  for (const char *p = cid; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
  uint32_t h1 = (uint32_t)h, h2 = (uint32_t)(h >> 32) | 1;
  for (int i = 0; i < 4; i++) pos[i] = (h1 + (uint32_t)i * h2) & (SEEN_BITS - 1);
}

static void seen_add(engine *e, const char *dkey, const char *cid) {
  uint32_t pos[4];
  seen_probe(dkey, cid, pos);
  for (int i = 0; i < 4; i++) e->seen[pos[i] >> 3] |= (uint8_t)(1u << (pos[i] & 7));
}

static int seen_maybe(engine *e, const char *dkey, const char *cid) {
  uint32_t pos[4];
  seen_probe(dkey, cid, pos);
  for (int i = 0; i < 4; i++)
    if (!(e->seen[pos[i] >> 3] & (1u << (pos[i] & 7)))) return 0;
  return 1;
}

static int seen_load(const char *device, const char *cid, void *ud) {
  seen_add(ud, device, cid);
  return 0;
}

enum { E_OP, E_MESSAGE };

/* The broadcast of an entry: {"type":"op","room","seq","ts","from","cid","op"},
 * or a stored publish: {"type":"message",...,"data"}. entry_begin writes up
 * to the value, which the caller appends; entry_end closes and frames it. */
static jw *entry_begin(const room *r, int type, const json_t *from, const char *cid) {
  jw *w = &frame_text;
  jw_reset(w);
  if (type == E_OP) jw_lit(w, "{\"type\":\"op\",\"room\":");
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
  if (type == E_OP) jw_lit(w, ",\"op\":");
  else jw_lit(w, ",\"data\":");
  return w;
}

static net_chunk *entry_end(jw *w) {
  jw_lit(w, "}");
  return ws_frame_new(WS_OP_TEXT, w->p, w->len);
}

static net_chunk *entry_frame(const room *r, int type, const json_t *from, const char *cid, const json_t *v) {
  jw *w = entry_begin(r, type, from, cid);
  jw_value(w, v);
  return entry_end(w);
}

/* Sequences an accepted entry (r->seq already advanced to it): its
 * broadcast (made by entry_end or entry_frame just before, whose text is
 * still in frame_text; taken over), store op, pending ack. */
static pend *sequence(author *a, json_t *req, room *r, net_chunk *frame, const char *item,
                      const char *fields_json, const char *revs_json, const sync_change *changes,
                      size_t nchanges, const char *cid) {
  engine *e = a->e;
  pend *p = pend_new(a, P_OP, req, r, r->seq, cid);
  p->frame = frame;
  store_op so = {
    .room = r->name,
    .seq = r->seq,
    .item = item,
    .fields_json = fields_json,
    .version = r->seq,
    .device = cid ? a->dkey : NULL,
    .cid = cid,
    .msg = frame_text.p,
    .msg_len = frame_text.len,
    .revs_json = revs_json,
  };
  store_batch_op(e->batch, &so);
  for (size_t i = 0; i < nchanges; i++)
    store_batch_item(e->batch, r->name, changes[i].item, changes[i].fields_json, changes[i].revs_json,
                     r->seq);
  if (cid) {
    char key[CID_KEY_MAX];
    cid_key(key, a->dkey, cid);
    p->ckey = wsy_strndup(key, strlen(key));
    map_put(&e->cids, key, p);
    seen_add(e, a->dkey, cid);
  }
  r->pending++;
  pend_append(e, p);
  e->ops_accepted++;
  /* Retention: keep the newest history_ops entries (trimmed in steps). */
  uint64_t keep = e->app->cfg->history_ops;
  if (keep && r->seq > keep && r->seq % 256 == 0) store_batch_trim(e->batch, r->name, r->seq - keep + 1);
  return p;
}

/* A re-sent entry (same user, device, cid): answered with the original seq.
 * Returns 1 when req was a duplicate and has been answered. */
static int dedupe(author *a, json_t *req, room *r, const char *cid) {
  engine *e = a->e;
  char key[CID_KEY_MAX];
  cid_key(key, a->dkey, cid);
  pend *orig = map_get(&e->cids, key);
  uint64_t seq = 0;
  int found = 0;
  if (orig) {
    if (orig->r != r) goto other_room;
    seq = orig->seq;
    found = 1;
  } else if (seen_maybe(e, a->dkey, cid)) {
    char room_out[STORE_ROOM_MAX + 1];
    int rc = store_dedupe_get(e->st, a->dkey, cid, room_out, &seq);
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
  if (a->s) send_error(a->s, req, "bad_request", "this cid was already used in another room", "cid", NULL);
  else http_error(a->http, 400, "bad_request", "this cid was already used in another room");
  return 1;
}

/* Why an op was refused, for the caller to report on its transport. */
typedef struct op_refusal {
  sync_err err;
  json_t *extra; /* members to add to the error (item, current, lock, index) */
} op_refusal;

static void count_rejection(engine *e, const char *code) {
  map_put(&e->rejected, code, (void *)((uintptr_t)map_get(&e->rejected, code) + 1));
}

static int refuse_op(engine *e, op_refusal *why, const char *code, const char *msg, json_t *extra) {
  why->err.code = code;
  why->err.field = NULL;
  snprintf(why->err.message, sizeof why->err.message, "%s", msg);
  why->extra = extra;
  return -1;
}

/* May the author write item now? Locks (unless force) and the fence. */
static int lock_ok(engine *e, room *r, sess *s, json_t *subj, const char *item, int force, op_refusal *why) {
  const lock *l = lock_held(r, item);
  if (l && l->holder != s && !force)
    return refuse_op(e, why, "locked", "the item is locked by another session",
                     json_pack("{s:s,s:o}", "item", item, "lock", lock_json(e, item, l)));
  json_t *fence = json_object_get(subj, "fence");
  if (fence && (!s || !json_is_integer(fence) || !l || l->holder != s ||
                (json_int_t)l->fence != json_integer_value(fence)))
    return refuse_op(e, why, "lock_lost", "the op's fence is not a lock this session holds",
                     json_pack("{s:s}", "item", item));
  return 0;
}

/* The checks every op passes first: 1 when it is a re-sent cid (answered
 * here with the original seq), -1 when the room cannot take writes (*why
 * set), 0 to go on. */
static int admit(author *a, json_t *req, room *r, const char *cid, op_refusal *why) {
  if (cid && dedupe(a, req, r, cid)) return 1;
  if (r->broken) {
    refuse_op(a->e, why, "internal", "the room is recovering from a storage failure; retry", NULL);
    return -1;
  }
  return 0;
}

/* An op request through every check, then applied and sequenced: the one
 * path for client and backend ops. 0 when sequenced or answered (a
 * duplicate); -1 with *why when refused. */
/* A text op (PROTOCOL.md 5.7): transformed against the ops accepted on
 * its field since its revision, applied, sequenced like any op. */
static int run_text_op(author *a, json_t *req, room *r, json_t *opj, const char *cid, int force,
                       json_t *from, op_refusal *why) {
  engine *e = a->e;
  sync_text t;
  if (sync_text_parse(opj, &e->lim, &t, &why->err) != 0) {
    if (t.item) why->extra = json_pack("{s:s}", "item", t.item);
    return -1;
  }
  int rc = -1;
  text_op *op = NULL;
  char *fields_json = NULL, *revs_json = NULL;
  int adm = admit(a, req, r, cid, why);
  if (adm != 0) {
    rc = adm > 0 ? 0 : -1;
    goto out;
  }
  if (lock_ok(e, r, a->s, opj, t.item, force, why) != 0) goto out;
  if (!doc_get(&r->d, t.item)) {
    /* Text edits do not create items: one racing the item's del would bring
     * it back holding only that field. The del wins (PROTOCOL.md 5.7). */
    refuse_op(e, why, "not_found", "the item does not exist; a set creates it",
              json_pack("{s:s,s:s}", "item", t.item, "field", t.field));
    goto out;
  }
  /* The field's history, started afresh when the field was reset (a set,
   * a delete) or the room was loaded since it was last written. */
  char key[300];
  snprintf(key, sizeof key, "%s\x1f%s", t.item, t.field);
  uint64_t cur = doc_text_rev(&r->d, t.item, t.field);
  text_hist *h = map_get(&r->texts, key);
  if (h && h->base + h->n != cur) {
    hist_free(map_del(&r->texts, key));
    h = NULL;
  }
  if (t.rev > cur || t.rev < (h ? h->base : cur)) {
    const doc_item *it = doc_get(&r->d, t.item);
    json_t *txt = it ? json_object_get(it->fields, t.field) : NULL;
    json_t *tv = json_is_string(txt) ? json_incref(txt) : json_string("");
    refuse_op(e, why, "rev_too_old",
              t.rev > cur ? "rev is beyond the field's revision" : "the ops after rev are no longer kept; rebase on text",
              json_pack("{s:s,s:s,s:I,s:o}", "item", t.item, "field", t.field, "rev", (json_int_t)cur, "text", tv));
    goto out;
  }
  op = text_op_clone(t.op);
  for (uint64_t i = t.rev - (h ? h->base : cur); h && i < h->n; i++) {
    text_op *x = text_transform(op, h->ops[i], TEXT_RIGHT);
    text_op_free(op);
    op = x;
  }
  if (sync_text_apply(&r->d, &t, op, r->seq + 1, &e->lim, &fields_json, &why->err) != 0) {
    why->extra = json_pack("{s:s}", "item", t.item);
    goto out;
  }
  if (!h) {
    h = wsy_calloc(1, sizeof *h);
    h->base = cur;
    map_put(&r->texts, key, h);
  }
  if (h->n == TEXT_HISTORY) { /* the oldest revision is no longer reachable */
    text_op_free(h->ops[0]);
    memmove(h->ops, h->ops + 1, (h->n - 1) * sizeof *h->ops);
    h->n--;
    h->base++;
  }
  if (h->n == h->cap) {
    h->cap = h->cap ? h->cap * 2 : 8;
    h->ops = wsy_realloc(h->ops, h->cap * sizeof *h->ops);
  }
  h->ops[h->n++] = text_op_clone(op);
  r->seq++;
  json_t *opv = json_pack("{s:s,s:s,s:s,s:I,s:o}", "kind", "text", "item", t.item, "field", t.field, "rev",
                           (json_int_t)cur, "ops", text_op_to_json(op));
  revs_json = doc_item_revs_json(doc_get(&r->d, t.item));
  pend *p = sequence(a, req, r, entry_frame(r, E_OP, from, cid, opv), t.item, fields_json, revs_json, NULL, 0, cid);
  json_decref(opv);
  p->rev = cur + 1;
  rc = 0;
out:
  text_op_free(op);
  text_op_free(t.op);
  free(fields_json);
  free(revs_json);
  return rc;
}

static int run_op(author *a, json_t *req, room *r, json_t *opj, const char *cid, int force,
                  json_t *from, op_refusal *why) {
  engine *e = a->e;
  why->extra = NULL;
  const char *kind = json_string_value(json_object_get(opj, "kind"));
  if (kind && !strcmp(kind, "text") && json_is_object(opj)) return run_text_op(a, req, r, opj, cid, force, from, why);
  int is_batch = kind && !strcmp(kind, "batch");
  sync_op one, *subs = NULL;
  size_t n = 0, index = SIZE_MAX;
  if (is_batch ? sync_batch_parse(opj, &e->lim, e->app->cfg->max_batch, &subs, &n, &why->err, &index)
               : sync_op_parse(opj, &e->lim, &one, &why->err)) {
    if (is_batch && index != SIZE_MAX) why->extra = json_pack("{s:I}", "index", (json_int_t)index);
    else if (!is_batch && one.item) why->extra = json_pack("{s:s}", "item", one.item);
    return -1;
  }
  if (!is_batch) {
    subs = &one;
    n = 1;
  }
  int rc = -1;
  int adm = admit(a, req, r, cid, why);
  if (adm != 0) {
    rc = adm > 0 ? 0 : -1;
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    json_t *subj = is_batch ? json_array_get(json_object_get(opj, "ops"), i) : opj;
    if (lock_ok(e, r, a->s, subj, subs[i].item, force, why) != 0) {
      if (is_batch) json_object_set_new(why->extra, "index", json_integer((json_int_t)i));
      goto out;
    }
  }
  char *fields_json = NULL;
  sync_change *changes = NULL;
  size_t nchanges = 0;
  int arc = is_batch ? sync_batch_apply(&r->d, subs, n, r->seq + 1, &e->lim, &changes, &nchanges,
                                        &why->err, &index)
                     : sync_apply(&r->d, &one, r->seq + 1, &e->lim, &fields_json, &why->err);
  if (arc != 0) {
    const char *item = is_batch ? subs[index].item : one.item;
    why->extra = json_pack("{s:s}", "item", item);
    if (is_batch) json_object_set_new(why->extra, "index", json_integer((json_int_t)index));
    if (!strcmp(why->err.code, "conflict"))
      json_object_set_new(why->extra, "current", doc_item_json(doc_get(&r->d, item)));
    goto out;
  }
  r->seq++;
  char *revs_json = is_batch ? NULL : doc_item_revs_json(doc_get(&r->d, one.item));
  jw *w = entry_begin(r, E_OP, from, cid);
  if (is_batch) sync_batch_write(w, subs, n);
  else sync_op_write(w, &one);
  sequence(a, req, r, entry_end(w), is_batch ? NULL : one.item, fields_json, revs_json, changes, nchanges, cid);
  free(fields_json);
  free(revs_json);
  sync_changes_free(changes, nchanges);
  rc = 0;
out:
  if (is_batch) wsy_free(subs);
  return rc;
}

static void handle_op(sess *s, json_t *req) {
  engine *e = s->e;
  member *m;
  if (!room_member_or_error(s, req, &m, 1)) return;
  const char *cid = str_member(req, "cid");
  if (!cid || !cid_valid(cid)) {
    send_error(s, req, "bad_request", "cid must be 1-128 characters of A-Z a-z 0-9 . _ : @ -", "cid", NULL);
    return;
  }
  author au = {e, s, NULL, s->dkey};
  json_t *from = sess_from(s);
  op_refusal why;
  if (run_op(&au, req, m->r, json_object_get(req, "op"), cid, 0, from, &why) != 0) {
    count_rejection(e, why.err.code);
    json_t *msg = error_msg(req, why.err.code, why.err.message, why.err.field, why.extra);
    room *r = m->r;
    if (r->pending == 0) {
      send_json(s, msg);
      return;
    }
    /* A refusal can carry state (rev_too_old's text and rev, conflict's
     * current item) that includes ops still being stored: it goes out behind
     * their acks and broadcasts, as a duplicate's ack does, so a client never
     * learns of a state before the entries that make it. */
    pend *p = pend_new(&au, P_ERR, NULL, r, 0, NULL);
    p->frame = frame_json(msg);
    json_decref(msg);
    r->pending++;
    pend_append(e, p);
  }
}

static void handle_publish(sess *s, json_t *req) {
  engine *e = s->e;
  member *m;
  if (!room_member_or_error(s, req, &m, 1)) return;
  room *r = m->r;
  json_t *data = json_object_get(req, "data");
  if (!data) {
    send_error(s, req, "bad_request", "data is required", "data", NULL);
    return;
  }
  if (sync_encoded_size(data) > e->lim.max_field_size) {
    send_error(s, req, "too_large", "data is too large", "data", NULL);
    return;
  }
  if (!sync_value_ok(data, e->lim.max_depth)) {
    send_error(s, req, "invalid_field", "data nests too deep or holds an integer beyond 2^53", "data", NULL);
    return;
  }
  json_t *eph = json_object_get(req, "ephemeral");
  if (eph && !json_is_boolean(eph)) {
    send_error(s, req, "bad_request", "ephemeral must be a boolean", "ephemeral", NULL);
    return;
  }
  const char *cid = str_member(req, "cid");
  if (json_object_get(req, "cid") && (!cid || !cid_valid(cid))) {
    send_error(s, req, "bad_request", "cid must be 1-128 characters of A-Z a-z 0-9 . _ : @ -", "cid", NULL);
    return;
  }
  if (json_is_true(eph)) {
    json_t *msg = json_pack("{s:s,s:s,s:I,s:{s:s,s:s},s:O,s:b}", "type", "message", "room", r->name,
                            "ts", (json_int_t)wall_ms(), "from", "user", s->id.user, "device",
                            s->device, "data", data, "ephemeral", 1);
    net_chunk *frame = frame_json(msg);
    json_decref(msg);
    json_t *ack = json_pack("{s:s,s:s}", "type", "ack", "room", r->name);
    json_t *id = json_object_get(req, "id");
    if (id) json_object_set(ack, "re", id);
    send_json(s, ack);
    for (member *x = r->members, *next; x; x = next) {
      next = x->next;
      sess_send(x->s, frame);
      e->deliveries++;
    }
    net_chunk_unref(frame);
    return;
  }
  author au = {e, s, NULL, s->dkey};
  if (cid && dedupe(&au, req, r, cid)) return;
  if (r->broken) {
    send_error(s, req, "internal", "the room is recovering from a storage failure; retry", NULL, NULL);
    return;
  }
  r->seq++;
  sequence(&au, req, r, entry_frame(r, E_MESSAGE, sess_from(s), cid, data), NULL, NULL, NULL, NULL, 0, cid);
}

static void handle_presence(sess *s, json_t *req) {
  engine *e = s->e;
  member *m;
  if (!room_member_or_error(s, req, &m, 0)) return;
  json_t *state = json_object_get(req, "state");
  if (!json_is_object(state)) {
    send_error(s, req, "bad_request", "state must be an object", "state", NULL);
    return;
  }
  if (sync_encoded_size(state) > MAX_PRESENCE_STATE) {
    send_error(s, req, "too_large", "presence state is too large", "state", NULL);
    return;
  }
  json_decref(m->state);
  m->state = json_deep_copy(state);
  presence_event(s->e, m, "update");
}

static json_t *reply_to(json_t *req, const char *type, room *r) {
  json_t *m = json_pack("{s:s}", "type", type);
  json_t *id = json_object_get(req, "id");
  if (id) json_object_set(m, "re", id);
  json_object_set_new(m, "room", json_string(r->name));
  return m;
}

/* The common part of lock and unlock: a member with write permission
 * naming a valid item that no other session holds. 0 when it may go on. */
static int lock_target(sess *s, json_t *req, room **r, const char **item, lock **l) {
  member *m;
  if (!room_member_or_error(s, req, &m, 1)) return -1;
  *r = m->r;
  *item = str_member(req, "item");
  if (!*item || !sync_item_id_valid(*item)) {
    send_error(s, req, "bad_request", "item must be a valid item id", "item", NULL);
    return -1;
  }
  *l = map_get(&(*r)->locks, *item);
  if (*l && (*l)->holder && (*l)->holder != s) {
    send_error(s, req, "locked", "the item is locked by another session", NULL,
               json_pack("{s:s,s:o}", "item", *item, "lock", lock_json(s->e, *item, *l)));
    return -1;
  }
  return 0;
}

static void handle_lock(sess *s, json_t *req) {
  engine *e = s->e;
  room *r;
  const char *item;
  lock *l;
  if (lock_target(s, req, &r, &item, &l) != 0) return;
  json_t *ttlj = json_object_get(req, "ttl");
  json_int_t ttl = json_is_integer(ttlj) ? json_integer_value(ttlj) : -1;
  if (ttl < 1000 || ttl > (json_int_t)e->app->cfg->max_lock_ttl_ms) {
    send_error(s, req, "bad_request", "ttl must be an integer from 1000 to max_lock_ttl ms", "ttl", NULL);
    return;
  }
  if (!l) {
    l = wsy_calloc(1, sizeof *l);
    map_put(&r->locks, item, l);
  }
  if (!l->holder) {
    /* A new grant: the fence grows past every earlier one, across restarts
     * too, since it starts from the wall clock in ms. */
    uint64_t f = (uint64_t)wall_ms();
    uint64_t floor = (l->fence > e->last_fence ? l->fence : e->last_fence) + 1;
    l->fence = e->last_fence = f > floor ? f : floor;
    l->holder = s;
    r->nheld++;
  }
  l->expires = now_ms(e) + (uint64_t)ttl;
  json_t *g = reply_to(req, "granted", r);
  json_object_set_new(g, "item", json_string(item));
  json_object_set_new(g, "fence", json_integer((json_int_t)l->fence));
  json_object_set_new(g, "ttl", json_integer(ttl));
  send_json(s, g);
  room_send(e, r, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I}", "type", "lock", "room", r->name,
                            "item", item, "state", "held", "user", s->id.user, "device", s->device,
                            "fence", (json_int_t)l->fence, "ttl", (json_int_t)ttl));
}

static void handle_unlock(sess *s, json_t *req) {
  room *r;
  const char *item;
  lock *l;
  if (lock_target(s, req, &r, &item, &l) != 0) return;
  json_t *u = reply_to(req, "unlocked", r);
  json_object_set_new(u, "item", json_string(item));
  send_json(s, u);
  if (l && l->holder) lock_release(s->e, r, item, l, "unlock");
}

static void handle_cursor(sess *s, json_t *req) {
  engine *e = s->e;
  member *m;
  if (!room_member_or_error(s, req, &m, 0)) return;
  json_t *sq = json_object_get(req, "seq");
  if (!json_is_integer(sq) || json_integer_value(sq) < 0 ||
      (uint64_t)json_integer_value(sq) > m->r->seq) {
    send_error(s, req, "bad_request", "seq must be an integer no greater than the room's seq", "seq", NULL);
    return;
  }
  uint64_t seq = (uint64_t)json_integer_value(sq);
  if (seq <= m->cursor) return;
  m->cursor = seq;
  /* Batched with the next commit: a cursor may lag after a crash, never lead. */
  store_batch_cursor(e->batch, s->id.user, s->device, m->r->name, seq);
  json_t *msg = json_pack("{s:s,s:s,s:s,s:s,s:I}", "type", "cursor", "room", m->r->name, "user",
                          s->id.user, "device", s->device, "seq", (json_int_t)seq);
  net_chunk *frame = frame_json(msg);
  json_decref(msg);
  for (member *x = m->r->members; x; x = x->next)
    if (x->s != s && strcmp(x->s->id.user, s->id.user) == 0) sess_send(x->s, frame);
  net_chunk_unref(frame);
}

void dispatch(sess *s, json_t *req) {
  const char *type = str_member(req, "type");
  if (!type) {
    if (!s->welcomed) refuse(s, req, "unknown_type", "type must be a string");
    else send_error(s, req, "unknown_type", "type must be a string", "type", NULL);
    return;
  }
  json_t *id = json_object_get(req, "id");
  if (id && !(json_is_integer(id) && json_integer_value(id) >= 0 &&
              json_integer_value(id) <= 9007199254740991LL) &&
      !(json_is_string(id) && json_string_length(id) <= 64)) {
    /* Not echoed: an id of any other shape could be arbitrarily large. */
    json_object_del(req, "id");
    if (!s->welcomed) refuse(s, req, "bad_request", "id must be an integer or a string of at most 64 bytes");
    else send_error(s, req, "bad_request", "id must be an integer or a string of at most 64 bytes", "id", NULL);
    return;
  }
  if (!strcmp(type, "hello")) {
    handle_hello(s, req);
    return;
  }
  if (!s->welcomed) {
    static const char *const known[] = {"join", "leave", "op", "publish", "presence", "lock",
                                        "unlock", "cursor", "recv", "ping", "bye"};
    int is_known = 0;
    for (size_t i = 0; i < WSY_ARRAY_LEN(known); i++) is_known |= !strcmp(type, known[i]);
    if (is_known) refuse(s, req, "unauthorized", "say hello first");
    else refuse(s, req, "unknown_type", "unknown message type");
    return;
  }
  if (!strcmp(type, "ping")) {
    json_t *pong = json_pack("{s:s}", "type", "pong");
    if (id) json_object_set(pong, "re", id);
    send_json(s, pong);
    return;
  }
  if (!strcmp(type, "recv")) {
    json_t *nj = json_object_get(req, "n");
    if (!json_is_integer(nj) || json_integer_value(nj) < 0 || (uint64_t)json_integer_value(nj) >= s->ob_next) {
      send_error(s, req, "bad_request", "n must be an ordinal the server has sent", "n", NULL);
      return;
    }
    while (s->ob_len && s->ob_first <= (uint64_t)json_integer_value(nj)) ob_pop(s);
    return;
  }
  if (!strcmp(type, "bye")) {
    end_session(s, WS_CLOSE_NORMAL, "bye");
    return;
  }
  /* rated: 1 = answered with rate_limited when over the rate, 2 = dropped
   * silently (no reply is expected), PROTOCOL.md 13.2. */
  static const struct {
    const char *type;
    void (*fn)(sess *, json_t *);
    int rated;
  } handlers[] = {
    {"join", handle_join, 1},         {"leave", handle_leave, 1}, {"op", handle_op, 1},
    {"publish", handle_publish, 1},   {"presence", handle_presence, 2},
    {"lock", handle_lock, 1},         {"unlock", handle_unlock, 1},
    {"cursor", handle_cursor, 2},
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(handlers); i++) {
    if (strcmp(type, handlers[i].type) != 0) continue;
    if (!rate_ok(s)) {
      const wsy_config *cfg = s->e->app->cfg;
      if (handlers[i].rated == 1)
        send_error(s, req, "rate_limited", "too many requests", NULL,
                   json_pack("{s:i}", "retry_after", (int)(1000 / (cfg->rate ? cfg->rate : 1)) + 1));
      return;
    }
    handlers[i].fn(s, req);
    return;
  }
  send_error(s, req, "unknown_type", "unknown message type", "type", NULL);
}

/* ---- WebSocket endpoint ---------------------------------------------------- */

static int ws_open(ws_conn *w, const void *req_ctx) {
  (void)req_ctx;
  engine *e = ws_conn_app(w)->sync;
  sess *s = wsy_calloc(1, sizeof *s);
  s->e = e;
  s->w = w;
  s->refs = 1;
  s->opened = now_ms(e);
  e->ws_conns++;
  ws_conn_set_user(w, s);
  return 0;
}

/* A connection that has not said hello within the handshake timeout is
 * refused (PROTOCOL.md 13.1). */
static void ws_tick(ws_conn *w, uint64_t now) {
  sess *s = ws_conn_user(w);
  if (s && !s->welcomed && now - s->opened >= s->e->app->cfg->handshake_timeout_ms)
    refuse(s, NULL, "unauthorized", "no hello in time");
}

/* Nesting depth of a JSON value, counting only while it is at most limit. */
int too_deep(json_t *v, int depth, int limit) {
  if (depth > limit) return 1;
  const char *k;
  json_t *x;
  size_t i;
  if (json_is_object(v)) {
    json_object_foreach(v, k, x) if (too_deep(x, depth + 1, limit)) return 1;
  } else if (json_is_array(v)) {
    json_array_foreach(v, i, x) if (too_deep(x, depth + 1, limit)) return 1;
  }
  return 0;
}

static void ws_message(ws_conn *w, int opcode, uint8_t *data, size_t len) {
  sess *s = ws_conn_user(w);
  if (opcode != WS_OP_TEXT) {
    ws_close(w, WS_CLOSE_UNSUPPORTED, "binary messages are not part of protocol version 1");
    return;
  }
  json_error_t jerr;
  json_t *req = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!req && s->welcomed && strstr(jerr.text, "too big")) {
    /* jansson refuses integers beyond int64 while parsing; the message is
     * JSON, only a number in it is out of range (PROTOCOL.md 1.1). */
    json_t *as_real = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    send_error(s, json_is_object(as_real) ? as_real : NULL, "invalid_field", "an integer is beyond 2^53-1", NULL, NULL);
    json_decref(as_real);
    return;
  }
  if (!req || !json_is_object(req) || too_deep(req, 1, 32)) {
    /* Say what was wrong: jansson's reason (an invalid \u escape such as a
     * lone surrogate, a duplicate member, ...) when it did not parse. */
    char why[200];
    if (!req) snprintf(why, sizeof why, "not valid JSON: %s at byte %d", jerr.text, jerr.position);
    else snprintf(why, sizeof why, "%s", json_is_object(req) ? "a message nests deeper than 32 levels"
                                                              : "a message must be one JSON object");
    json_decref(req);
    if (!s->welcomed) refuse(s, NULL, "bad_json", why);
    else send_error(s, NULL, "bad_json", why, NULL, NULL);
    return;
  }
  dispatch(s, req);
  json_decref(req);
}

/* A connection can go away in the middle of a fan-out (a slow consumer is
 * closed by the send itself), with callers up the stack still walking a
 * room: the session is only marked here and taken out of its rooms in the
 * check hook, when no walk is in progress. */
static void ws_gone(ws_conn *w) {
  ws_conn_app(w)->sync->ws_conns--;
  sess *s = ws_conn_user(w);
  if (!s) return;
  ws_conn_set_user(w, NULL);
  s->w = NULL;
  s->dead_next = s->e->dead;
  s->e->dead = s;
}

static void reap(engine *e) {
  while (e->dead) {
    sess *s = e->dead;
    e->dead = s->dead_next;
    if (s->welcomed && !s->ended && !s->w) {
      /* Detached: it stays in its rooms, with its locks, for the resume
       * window; the others see it disconnected, not gone. */
      s->detached_at = now_ms(e);
      for (member *m = s->rooms; m; m = m->snext) presence_event(e, m, "update");
    }
    sess_unref(s); /* the connection's reference */
  }
}

static void expire_sessions(engine *e) {
  uint64_t now = now_ms(e), window = e->app->cfg->resume_window_ms;
  sess *due[64];
  size_t n = 0;
  const char *k;
  void *v;
  for (size_t i = 0; n < WSY_ARRAY_LEN(due) && map_next(&e->sessions, &i, &k, &v);) {
    sess *s = v;
    if (!s->w && !s->dn && s->detached_at && now - s->detached_at >= window) due[n++] = s;
  }
  for (size_t i = 0; i < n; i++) end_session(due[i], WS_CLOSE_GOING_AWAY, "session expired");
}

const ws_endpoint engine_ws_endpoint = {
  .name = "sync",
  .on_open = ws_open,
  .on_message = ws_message,
  .on_close = ws_gone,
  .on_tick = ws_tick,
};

/* ---- life cycle ------------------------------------------------------------ */

int engine_new(struct app *app, engine **out, char *err, size_t errlen) {
  engine *e = wsy_calloc(1, sizeof *e);
  e->app = app;
  int rc = store_open(app->cfg->data_dir, app->cfg->durability_full, &e->st, err, errlen);
  if (rc != 0) {
    wsy_free(e);
    return rc;
  }
  map_init(&e->rooms);
  map_init(&e->cids);
  e->seen = wsy_calloc(SEEN_BITS / 8, 1);
  if (store_dedupe_each(e->st, seen_load, e) != 0) {
    snprintf(err, errlen, "cannot read the dedupe records of the store");
    wsy_free(e->seen);
    store_close(e->st);
    wsy_free(e);
    return WSY_IO;
  }
  map_init(&e->sessions);
  map_init(&e->by_device);
  map_init(&e->rejected);
  const wsy_config *cfg = app->cfg;
  e->lim = (sync_limits){.max_fields = cfg->max_fields, .max_field_size = cfg->max_field_size,
                         .max_item_size = cfg->max_item_size, .max_depth = (int)cfg->max_depth,
                         .max_room_items = cfg->max_room_items};
  e->batch = store_batch_new();
  e->tail = &e->head;
  uv_check_init(app->loop, &e->check);
  e->check.data = e;
  uv_check_start(&e->check, on_check);
  uv_unref((uv_handle_t *)&e->check);
  uv_timer_init(app->loop, &e->lock_timer);
  e->lock_timer.data = e;
  uv_timer_start(&e->lock_timer, lock_sweep, 250, 250);
  uv_unref((uv_handle_t *)&e->lock_timer);
  *out = e;
  return 0;
}

void engine_free(engine *e) {
  if (!e) return;
  /* Connections are gone by now; end the detached sessions, then finish
   * what is in flight and pending. */
  reap(e);
  for (;;) {
    size_t i = 0;
    const char *k;
    void *v;
    if (!map_next(&e->sessions, &i, &k, &v)) break;
    end_session(v, WS_CLOSE_GOING_AWAY, "server shutting down");
  }
  while (e->busy || e->head || store_batch_count(e->batch)) {
    start_commit(e);
    uv_run(e->app->loop, UV_RUN_ONCE);
  }
  uv_close((uv_handle_t *)&e->check, NULL);
  uv_close((uv_handle_t *)&e->lock_timer, NULL);
  uv_run(e->app->loop, UV_RUN_NOWAIT);
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->rooms, &i, &k, &v);) {
    room *r = v;
    locks_free(r);
    texts_free(r);
    doc_free(&r->d);
    wsy_free(r->name);
    wsy_free(r);
  }
  map_free(&e->rooms);
  map_free(&e->cids);
  wsy_free(e->seen);
  map_free(&e->sessions);
  map_free(&e->by_device);
  map_free(&e->rejected);
  store_batch_free(e->batch);
  store_close(e->st);
  wsy_free(e);
}

/* ---- backend HTTP API and metrics (PROTOCOL.md 12) ----------------------- */

static int api_key_ok(struct app *app, conn *c, httpd_req *r) {
  const char *key = app->cfg->api_key;
  if (!key || !*key) {
    httpd_error(c, 404, "no such resource (the backend API needs --api-key)");
    return 0;
  }
  size_t hl = 0;
  const char *h = httpd_req_header(r, "Authorization", &hl);
  size_t kl = strlen(key);
  int ok = h && hl == kl + 7 && strncmp(h, "Bearer ", 7) == 0 && CRYPTO_memcmp(h + 7, key, kl) == 0;
  if (!ok) {
    json_t *b = json_pack("{s:s,s:s,s:s}", "type", "error", "code", "unauthorized", "message",
                          "Authorization: Bearer <api key> required");
    char *text = jw_dumps(b);
    json_decref(b);
    httpd_respond(c, 401, "application/json", "WWW-Authenticate: Bearer\r\n", text, strlen(text));
    free(text);
  }
  return ok;
}

static void http_json(conn *c, int status, json_t *body) {
  char *text = jw_dumps(body);
  json_decref(body);
  httpd_respond(c, status, "application/json", "Cache-Control: no-store\r\n", text, strlen(text));
  free(text);
}

static int status_of(const char *code) {
  if (!strcmp(code, "conflict") || !strcmp(code, "lock_lost")) return 409;
  if (!strcmp(code, "too_large")) return 413;
  if (!strcmp(code, "locked")) return 423;
  if (!strcmp(code, "not_found")) return 404;
  if (!strcmp(code, "internal")) return 500;
  return 400;
}

static void metrics(engine *e, conn *c) {
  const net_stats *ns = net_loop_stats(e->app->net);
  size_t nsess = 0;
  const char *k;
  void *v;
  buf b;
  buf_init(&b, 1 << 20);
  char line[512];
#define EMIT(...)                                                            \
  do {                                                                       \
    int n_ = snprintf(line, sizeof line, __VA_ARGS__);                        \
    if (n_ > 0 && buf_append(&b, line, (size_t)n_) != WSY_OK) break;          \
  } while (0)
  unsigned conns = e->ws_conns;
  for (size_t i = 0; map_next(&e->rooms, &i, &k, &v);) nsess += ((room *)v)->nmembers;
  EMIT("# HELP wsync_connections Open client connections.\n# TYPE wsync_connections gauge\n");
  EMIT("wsync_connections{transport=\"ws\"} %u\n", conns);
  EMIT("# HELP wsync_rooms Rooms loaded in memory.\n# TYPE wsync_rooms gauge\nwsync_rooms %zu\n",
       map_len(&e->rooms));
  EMIT("# HELP wsync_room_members Session memberships of loaded rooms.\n# TYPE wsync_room_members gauge\n"
       "wsync_room_members %zu\n", nsess);
  EMIT("# HELP wsync_ops_accepted_total Log entries sequenced (ops and stored publishes).\n"
       "# TYPE wsync_ops_accepted_total counter\nwsync_ops_accepted_total %llu\n",
       (unsigned long long)e->ops_accepted);
  EMIT("# HELP wsync_ops_rejected_total Rejected ops, by error code.\n# TYPE wsync_ops_rejected_total counter\n");
  for (size_t i = 0; map_next(&e->rejected, &i, &k, &v);)
    EMIT("wsync_ops_rejected_total{code=\"%s\"} %llu\n", k, (unsigned long long)(uintptr_t)v);
  size_t attached = 0, detached = 0;
  for (size_t i = 0; map_next(&e->sessions, &i, &k, &v);) {
    if (sess_online(v)) attached++;
    else detached++;
  }
  EMIT("# HELP wsync_sessions Live sessions.\n# TYPE wsync_sessions gauge\n"
       "wsync_sessions{state=\"attached\"} %zu\nwsync_sessions{state=\"detached\"} %zu\n", attached, detached);
  EMIT("# HELP wsync_deliveries_total Messages queued to sessions by fan-out.\n"
       "# TYPE wsync_deliveries_total counter\nwsync_deliveries_total %llu\n",
       (unsigned long long)e->deliveries);
  EMIT("# HELP wsync_bytes_in_total Bytes received.\n# TYPE wsync_bytes_in_total counter\n"
       "wsync_bytes_in_total %llu\n", (unsigned long long)ns->bytes_in);
  EMIT("# HELP wsync_bytes_out_total Bytes sent.\n# TYPE wsync_bytes_out_total counter\n"
       "wsync_bytes_out_total %llu\n", (unsigned long long)ns->bytes_out);
  EMIT("# HELP wsync_slow_consumer_closes_total Connections closed with 1013.\n"
       "# TYPE wsync_slow_consumer_closes_total counter\nwsync_slow_consumer_closes_total %llu\n",
       (unsigned long long)ns->slow_closes);
  EMIT("# HELP wsync_commit_seconds Time a batch takes to commit durably.\n"
       "# TYPE wsync_commit_seconds histogram\n");
  static const char *const le[12] = {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
                                     "0.05",   "0.1",   "0.25",   "0.5",   "1",    "2.5"};
  uint64_t cum = 0;
  for (int i = 0; i < 12; i++) {
    cum += e->commit_hist[i];
    EMIT("wsync_commit_seconds_bucket{le=\"%s\"} %llu\n", le[i], (unsigned long long)cum);
  }
  cum += e->commit_hist[12];
  EMIT("wsync_commit_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
  EMIT("wsync_commit_seconds_sum %.6f\nwsync_commit_seconds_count %llu\n", e->commit_sum,
       (unsigned long long)e->commits);
#undef EMIT
  httpd_respond(c, 200, "text/plain; version=0.0.4", "Cache-Control: no-store\r\n", b.data, b.len);
  buf_free(&b);
}

static json_t *parse_body(conn *c, httpd_req *r) {
  size_t len;
  const uint8_t *body = httpd_req_body(r, &len);
  json_error_t jerr;
  json_t *j = len ? json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
  if (!j || !json_is_object(j)) {
    json_decref(j);
    http_error(c, 400, "bad_json", "the body must be one JSON object");
    return NULL;
  }
  return j;
}

static void backend_write(engine *e, conn *c, httpd_req *r, const char *name, int is_publish) {
  json_t *req = parse_body(c, r);
  if (!req) return;
  const char *cid = str_member(req, "cid");
  if (json_object_get(req, "cid") && (!cid || !cid_valid(cid))) {
    http_error(c, 400, "bad_request", "cid must be 1-128 characters of A-Z a-z 0-9 . _ : @ -");
    goto out;
  }
  json_t *data = json_object_get(req, "data");
  if (!is_publish && !json_is_object(json_object_get(req, "op"))) {
    http_error(c, 400, "bad_request", "op must be an object");
    goto out;
  }
  if (is_publish && !data) {
    http_error(c, 400, "bad_request", "data is required");
    goto out;
  }
  if (is_publish) {
    if (sync_encoded_size(data) > e->lim.max_field_size) {
      http_error(c, 413, "too_large", "data is too large");
      goto out;
    }
    if (!sync_value_ok(data, e->lim.max_depth)) {
      http_error(c, 400, "invalid_field", "data nests too deep or holds an integer beyond 2^53");
      goto out;
    }
    json_t *eph = json_object_get(req, "ephemeral");
    if (eph && !json_is_boolean(eph)) {
      http_error(c, 400, "bad_request", "ephemeral must be a boolean");
      goto out;
    }
  }
  int lerr = 0;
  room *rm = room_get(e, name, &lerr);
  if (!rm) {
    http_error(c, 500, "internal", "the room could not be loaded");
    goto out;
  }
  author au = {e, NULL, c, ":backend"};
  json_t *from = json_pack("{s:b}", "backend", 1);
  if (!is_publish) {
    op_refusal why;
    if (run_op(&au, NULL, rm, json_object_get(req, "op"), cid, json_is_true(json_object_get(req, "force")),
               from, &why) != 0) {
      count_rejection(e, why.err.code);
      json_t *b = json_pack("{s:s,s:s,s:s}", "type", "error", "code", why.err.code, "message", why.err.message);
      if (why.extra) json_object_update(b, why.extra);
      json_decref(why.extra);
      http_json(c, status_of(why.err.code), b);
    }
    json_decref(from);
    goto out_room;
  }
  if (cid && dedupe(&au, req, rm, cid)) {
    json_decref(from);
    goto out_room;
  }
  if (rm->broken) {
    json_decref(from);
    http_error(c, 500, "internal", "the room is recovering from a storage failure; retry");
    goto out_room;
  }
  if (json_is_true(json_object_get(req, "ephemeral"))) {
    room_send(e, rm, json_pack("{s:s,s:s,s:I,s:o,s:O,s:b}", "type", "message", "room", rm->name,
                               "ts", (json_int_t)wall_ms(), "from", from, "data", data,
                               "ephemeral", 1));
    http_json(c, 200, json_pack("{s:s,s:s}", "room", rm->name, "epoch", rm->epoch));
    goto out_room;
  }
  rm->seq++;
  sequence(&au, NULL, rm, entry_frame(rm, E_MESSAGE, from, cid, data), NULL, NULL, NULL, NULL, 0, cid);
  json_decref(from);
out_room:
  room_maybe_unload(e, rm);
out:
  json_decref(req);
}

static void backend_read(engine *e, conn *c, httpd_req *r, const char *name, const char *what) {
  store_room_info info;
  int rc = store_read_begin(e->st);
  if (rc == 0) rc = store_room_get(e->st, name, &info);
  if (rc == 0 && !info.exists && !(strcmp(what, "presence") == 0 && map_get(&e->rooms, name))) {
    store_read_end(e->st);
    http_error(c, 404, "not_found", "no such room");
    return;
  }
  json_t *b = json_pack("{s:s}", "room", name);
  if (info.exists) {
    json_object_set_new(b, "epoch", json_string(info.epoch));
    json_object_set_new(b, "seq", json_integer((json_int_t)info.seq));
  }
  if (rc == 0 && !strcmp(what, "")) {
    json_t *items = json_object();
    rc = store_room_items(e->st, name, collect_item, items);
    json_object_set_new(b, "items", items);
  } else if (rc == 0 && !strcmp(what, "history")) {
    char v[32];
    uint64_t from = 1, to = info.seq, limit = 100;
    if (httpd_req_query_param(r, "from", v, sizeof v) == 0) from = strtoull(v, NULL, 10);
    if (httpd_req_query_param(r, "to", v, sizeof v) == 0) to = strtoull(v, NULL, 10);
    if (httpd_req_query_param(r, "limit", v, sizeof v) == 0) limit = strtoull(v, NULL, 10);
    if (limit == 0 || limit > 1000) limit = limit ? 1000 : 1;
    if (from == 0) from = 1;
    collect col = {json_array()};
    if (to >= from) rc = store_history(e->st, name, from - 1, (size_t)limit + 1, collect_op, &col);
    /* drop entries beyond `to`, and the one fetched to learn about `more` */
    size_t n = json_array_size(col.arr), keep = 0;
    for (; keep < n; keep++) {
      json_int_t sq = json_integer_value(json_object_get(json_array_get(col.arr, keep), "seq"));
      if ((uint64_t)sq > to || keep == limit) break;
    }
    int more = keep < n && (uint64_t)json_integer_value(json_object_get(json_array_get(col.arr, keep), "seq")) <= to;
    while (json_array_size(col.arr) > keep) json_array_remove(col.arr, keep);
    json_object_set_new(b, "first", json_integer((json_int_t)info.min_seq));
    json_object_set_new(b, "entries", col.arr);
    json_object_set_new(b, "more", json_boolean(more));
  } else if (rc == 0 && !strcmp(what, "cursors")) {
    json_t *arr = json_array();
    char user[80] = "";
    int only = httpd_req_query_param(r, "user", user, sizeof user) == 0;
    rc = store_cursors(e->st, name, collect_all_cursors, arr);
    if (only) {
      for (size_t i = json_array_size(arr); i-- > 0;)
        if (strcmp(json_string_value(json_object_get(json_array_get(arr, i), "user")), user) != 0)
          json_array_remove(arr, i);
    }
    json_object_set_new(b, "cursors", arr);
  } else if (rc == 0 && !strcmp(what, "presence")) {
    json_t *arr = json_array();
    room *rm = map_get(&e->rooms, name);
    for (member *m = rm ? rm->members : NULL; m; m = m->next) json_array_append_new(arr, presence_entry(m));
    json_object_set_new(b, "presence", arr);
  } else if (rc == 0) {
    store_read_end(e->st);
    json_decref(b);
    httpd_error(c, 404, "no such resource");
    return;
  }
  store_read_end(e->st);
  if (rc != 0) {
    json_decref(b);
    http_error(c, 500, "internal", "the room could not be read");
    return;
  }
  http_json(c, 200, b);
}

void engine_shutdown(engine *e) {
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->sessions, &i, &k, &v);) {
    sess *s = v;
    if (s->dn) dn_end(s, WS_CLOSE_GOING_AWAY, "server shutting down");
  }
}

void engine_http(struct app *app, conn *c, httpd_req *r) {
  engine *e = app->sync;
  const char *path = httpd_req_path(r), *method = httpd_req_method(r);
  if (!strncmp(path, "/v1/", 4) && (!strcmp(path + 4, "send") || !strcmp(path + 4, "sse") || !strcmp(path + 4, "poll"))) {
    fallback_http(e, c, r, path + 4);
    return;
  }
  if (!api_key_ok(app, c, r)) return;
  if (!strcmp(path, "/metrics")) {
    if (strcmp(method, "GET")) httpd_respond(c, 405, "text/plain", "Allow: GET\r\n", "405 Method Not Allowed\n", 23);
    else metrics(e, c);
    return;
  }
  /* /v1/rooms/{room}[/what]: a slash is never part of a room name, so an
   * encoded one must not turn into a path separator. */
  const char *url = httpd_req_url(r);
  if (strstr(url, "%2F") || strstr(url, "%2f")) {
    http_error(c, 400, "room_invalid", "room names are 1-128 characters of A-Z a-z 0-9 . _ : @ -");
    return;
  }
  const char *rest = path + 10;
  const char *slash = strchr(rest, '/');
  char name[STORE_ROOM_MAX + 1];
  size_t nl = slash ? (size_t)(slash - rest) : strlen(rest);
  const char *what = slash ? slash + 1 : "";
  if (nl == 0 || nl > STORE_ROOM_MAX) {
    http_error(c, 400, "room_invalid", "room names are 1-128 characters of A-Z a-z 0-9 . _ : @ -");
    return;
  }
  memcpy(name, rest, nl);
  name[nl] = '\0';
  if (!auth_room_valid(name, nl)) {
    http_error(c, 400, "room_invalid", "room names are 1-128 characters of A-Z a-z 0-9 . _ : @ -");
    return;
  }
  int is_post = !strcmp(method, "POST");
  int is_write = !strcmp(what, "ops") || !strcmp(what, "publish");
  if (is_write != is_post) {
    httpd_respond(c, 405, "text/plain", is_write ? "Allow: POST\r\n" : "Allow: GET\r\n",
                  "405 Method Not Allowed\n", 23);
    return;
  }
  if (app->shutting_down) {
    http_error(c, 503, "internal", "server shutting down");
    return;
  }
  if (is_write) backend_write(e, c, r, name, !strcmp(what, "publish"));
  else backend_read(e, c, r, name, what);
}
