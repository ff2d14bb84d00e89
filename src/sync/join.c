/* join.c -- join and leave (PROTOCOL.md 4.1-4.3): the joined reply is the
 * committed state, and the member's join position is the committed seq at
 * that moment. Every entry with a greater seq reaches it live after its
 * commit; entries <= that seq still waiting for their broadcast skip it
 * (room_deliver). So history and live delivery are contiguous and never
 * overlap.
 *
 * Where the state comes from: a loaded room with nothing pending in a batch
 * is, in memory, exactly what the store holds: its seq, epoch, first
 * retained seq, document and device cursors. A join to it reads no store
 * unless it asks for the log (a catch-up with entries to replay, or
 * `history` messages). With entries pending, memory is ahead of what the
 * client may see; the join waits until nothing of the room is pending
 * (JOIN_WAIT_MS at most; in a cluster around the fetch it waits for
 * anyway), since the other way, reading the whole committed state from the
 * store on the loop, costs as much as the room is large. On one node, after
 * the wait, or with a broken room, the committed state is read from the
 * store in one snapshot. A cluster does not read on the loop: past the
 * wait the room's writes wait behind the join (cluster_joins_starving), and
 * a replica found behind, or a catch-up without its fetch's snapshot, waits
 * for another fetch (cluster_join_refetch). */
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "hook.h"
#include "proto.h"
#include "room.h"
#include "sess.h"
#include "stream.h"

#define JOIN_ASKED 1  /* the authorization hook allowed it */
#define JOIN_WAITED 2 /* it waited for the room's pending entries already */
#define JOIN_FETCHED 4 /* cluster: a fetch started after it arrived was answered */

struct join_hold {
  join_hold *next;
  sess *s; /* a reference */
  json_t *req;
  int flags; /* JOIN_* it goes on with, beside JOIN_ASKED and JOIN_WAITED */
};

static void hold_add(join_hold **q, sess *s, json_t *req, int flags) {
  join_hold *w = wsy_calloc(1, sizeof *w);
  w->flags = flags;
  w->s = s;
  s->refs++;
  s->hold++; /* its later messages wait behind the join (hook.h) */
  w->req = json_incref(req);
  while (*q) q = &(*q)->next;
  *q = w;
}

void join_hold_add(join_hold **q, sess *s, json_t *req) { hold_add(q, s, req, 0); }

static void join_decide(sess *s, json_t *req, int flags);

void join_hold_run(engine *e, room *r, join_hold *q, int waited) {
  r->pins++; /* a message released below (a leave) may empty the room: it stays until the end */
  for (join_hold *w = q, *next; w; w = next) {
    next = w->next;
    if (!w->s->ended) join_decide(w->s, w->req, w->flags | JOIN_ASKED | (waited ? JOIN_WAITED : 0));
    hook_hold_release(w->s);
    sess_unref(w->s);
    json_decref(w->req);
    wsy_free(w);
  }
  r->pins--;
  room_unload_if_idle(e, r);
}

void join_hold_free(join_hold **q) {
  for (join_hold *w = *q, *next; w; w = next) { /* shutdown: unanswered */
    next = w->next;
    if (w->s->hold) w->s->hold--;
    sess_unref(w->s);
    json_decref(w->req);
    wsy_free(w);
  }
  *q = NULL;
}

int join_collect_op(uint64_t seq, const char *msg, size_t len, void *ud) {
  (void)seq;
  json_error_t jerr;
  json_t *v = json_loadb(msg, len, 0, &jerr);
  if (!v) return WSY_IO;
  json_array_append_new(ud, v);
  return 0;
}

/* A catch-up's ops as the store keeps them (compact JSON, written by this
 * server), copied into the joined reply as text, not parsed and written
 * again (that was most of a large catch-up's time): its first part, from
 * stream.h, or "[]" (raw_close) when nothing was read. */
typedef struct {
  jw w;
  size_t n;
} raw_list;

static void raw_close(raw_list *l) {
  if (!l->n) jw_lit(&l->w, "[");
  jw_lit(&l->w, "]");
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

/* ---- the room's cursors in memory ------------------------------------------ */

void join_cursor_note(room *r, const char *user, const char *device, uint64_t seq) {
  char key[300];
  snprintf(key, sizeof key, "%s\x1f%s", user, device);
  uint64_t *v = map_get(&r->cursors, key);
  if (!v) {
    v = wsy_calloc(1, sizeof *v);
    map_put(&r->cursors, key, v);
  }
  if (seq > *v) *v = seq; /* cursors only grow */
}

void join_cursors_free(room *r) {
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&r->cursors, &i, &k, &v);) wsy_free(v);
  map_free(&r->cursors);
}

static int load_cursor(const char *user, const char *device, uint64_t seq, int64_t updated, void *ud) {
  (void)updated;
  join_cursor_note(ud, user, device, seq);
  return 0;
}

int join_cursors_load(engine *e, room *r, int exists) {
  join_cursors_free(r); /* a reload starts again from the store */
  map_init(&r->cursors);
  return exists ? store_cursors(e->st, r->name, load_cursor, r) : 0;
}

static int by_device(const void *a, const void *b) {
  return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "device")),
                json_string_value(json_object_get(*(json_t *const *)b, "device")));
}

/* The user's cursors in r, ordered by device as the store orders them. */
static void cursors_from_memory(room *r, cursor_collect *cc) {
  size_t ulen = strlen(cc->user);
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&r->cursors, &i, &k, &v);) {
    if (strncmp(k, cc->user, ulen) != 0 || k[ulen] != '\x1f') continue;
    uint64_t seq = *(uint64_t *)v;
    json_array_append_new(cc->arr, json_pack("{s:s,s:I}", "device", k + ulen + 1, "seq", (json_int_t)seq));
    if (strcmp(k + ulen + 1, cc->device) == 0) cc->mine = seq;
  }
  size_t n = json_array_size(cc->arr);
  if (n < 2) return;
  json_t **tmp = wsy_malloc(n * sizeof *tmp);
  for (size_t i = 0; i < n; i++) tmp[i] = json_incref(json_array_get(cc->arr, i));
  qsort(tmp, n, sizeof *tmp, by_device);
  json_array_clear(cc->arr);
  for (size_t i = 0; i < n; i++) json_array_append_new(cc->arr, tmp[i]);
  wsy_free(tmp);
}

/* A store read snapshot, begun at the first read a join needs. */
static int read_begin(engine *e, int *reading) {
  if (*reading) return 0;
  int rc = store_read_begin(e->st);
  *reading = rc == 0;
  return rc;
}

static void join_decide(sess *s, json_t *req, int flags) {
  engine *e = s->e;
  const char *name = proto_room_name(s, req);
  if (!name) return;
  /* The authorization hook decides joins the grants do not cover (or all). */
  if (!(flags & JOIN_ASKED) && authhook_join_asks(s, name) && authhook_join(s, req, name) != 0) return;
  if (!(sess_perms(s, name) & AUTH_READ)) {
    sess_error(s, req, "forbidden", "no read permission for this room", NULL, NULL);
    return;
  }
  json_t *since = json_object_get(req, "since");
  const char *since_epoch = NULL;
  uint64_t since_seq = 0;
  if (since) {
    json_t *se = json_object_get(since, "epoch"), *sq = json_object_get(since, "seq");
    if (!json_is_object(since) || (se && !json_is_string(se)) || !json_is_integer(sq) ||
        json_integer_value(sq) < 0 || json_integer_value(sq) > 9007199254740991LL) {
      sess_error(s, req, "bad_request", "since must be {epoch: string, seq: integer >= 0}", "since", NULL);
      return;
    }
    since_epoch = json_string_value(se);
    since_seq = (uint64_t)json_integer_value(sq);
  }
  json_t *hj = json_object_get(req, "history");
  if (hj && (!json_is_integer(hj) || json_integer_value(hj) < 0 || json_integer_value(hj) > 1000)) {
    sess_error(s, req, "bad_request", "history must be an integer from 0 to 1000", "history", NULL);
    return;
  }
  json_int_t history = hj ? json_integer_value(hj) : 0;
  json_t *pstate = json_object_get(req, "presence");
  if (pstate && !json_is_object(pstate)) {
    sess_error(s, req, "bad_request", "presence must be an object", "presence", NULL);
    return;
  }
  if (pstate && sync_has_number_marker(pstate)) {
    sess_error(s, req, "invalid_field", "presence holds a number out of range", "presence", NULL);
    return;
  }
  if (pstate) {
    if (sync_encoded_size(pstate) > e->cfg->max_presence_state) {
      sess_error(s, req, "too_large", "presence state is too large", "presence", NULL);
      return;
    }
  }
  member *m = room_membership(s, name);
  if (!m && s->nrooms >= e->cfg->max_rooms) {
    sess_error(s, req, "too_many_rooms", "the session has joined the maximum number of rooms", NULL, NULL);
    return;
  }
  /* In a cluster a room not loaded here is loaded without blocking the
   * loop: the join waits for it (cluster.h). */
  if (cluster_join_load(e, name, s, req)) return;
  int err = 0;
  int loading = !map_get(&e->rooms, name); /* then the load below is the read a join needs */
  room *r = room_get(e, name, &err);
  if (!r && err == ROOM_WRONG_KIND) {
    sess_error(s, req, "bad_request", "the room is a Yjs room: open it on /v1/yjs/{room}", "room", NULL);
    return;
  }
  if (!r) {
    sess_error(s, req, "internal", "the room could not be loaded", NULL, NULL);
    return;
  }
  /* A room just loaded in a cluster: the join waits for the other nodes'
   * members (cluster.h), so that joined lists them. */
  if (presence_settling(r)) {
    presence_hold_join(e, r, s, req);
    return;
  }
  /* In a cluster, a join sees every entry committed before it, on any
   * node: it waits for a read of the store started after it arrived
   * (asynchronous; shared by the joins of the moment), which also brings a
   * replica another node wrote up to date (cluster.h). Not with entries
   * pending (a fetch waits for them): then the join waits for them first,
   * below, and for the fetch after. */
  if (r->fresh_pass) flags |= JOIN_FETCHED;
  if (!loading && !(flags & JOIN_FETCHED) && cluster_join_wait(e, r, s, req, (flags & JOIN_WAITED) != 0)) return;
  /* Entries pending: memory is ahead of the store. The join waits until
   * none is (JOIN_WAIT_MS at most), then is served from memory; on one
   * node at once, in a cluster after the fetch above if it had none yet.
   * On one node, past the wait, or when entries came again meanwhile, it
   * reads the store below. A cluster never reads on the loop: the room's
   * writes wait behind the join past JOIN_WAIT_MS (cluster_joins_starving),
   * and a replica found behind is fetched again. */
  if (e->clustered ? r->pending != 0 : !(flags & JOIN_WAITED) && r->pending && !r->broken && !r->stale) {
    e->joins_waited++;
    if (!r->pend_q) r->pend_q_until = now_ms(e) + JOIN_WAIT_MS;
    hold_add(&r->pend_q, s, req, flags & JOIN_FETCHED);
    return;
  }
  if (e->clustered && !r->fresh_pass) {
    /* Memory is not what the store holds (another node wrote the room
     * while the join waited), or the join needs the log (a catch-up that
     * waited for pending entries after its fetch, `history` messages): a
     * fetch brings them. */
    int behind = r->broken || r->stale;
    int log = since_epoch && !strcmp(since_epoch, r->epoch) && since_seq < r->seq && since_seq + 1 >= r->min_seq &&
              r->seq - since_seq <= e->cfg->max_catchup;
    if (behind || log || history > 0) {
      e->joins_refetched++;
      cluster_join_refetch(e, r, s, req, (flags & JOIN_WAITED) != 0);
      return;
    }
  }
  /* What the client gets is the committed state: from memory when nothing
   * of the room is pending, else read from the store in one snapshot. */
  store_room_info info = {0};
  json_t *reply = json_pack("{s:s}", "type", "joined");
  json_t *id = json_object_get(req, "id");
  if (id) json_object_set(reply, "re", id);
  json_object_set_new(reply, "room", json_string(name));
  int mem = r->pending == 0 && !r->broken && !r->stale, reading = 0, rc = 0;
  if (mem) {
    info.exists = 1; /* loaded, and its creation is not pending */
    memcpy(info.epoch, r->epoch, sizeof info.epoch);
    info.seq = r->seq;
    info.min_seq = r->min_seq;
  } else {
    rc = read_begin(e, &reading);
    if (rc == 0) rc = store_room_get(e->st, name, &info);
  }
  uint64_t seq = 0;
  doc_frozen *snap = NULL; /* the snapshot, sent (in parts when large) once all went well */
  int with_snap = 0;
  raw_list ops = {JW_INIT, 0};
  int with_ops = 0, ops_closed = 0, ops_more = 0;
  if (rc == 0) {
    seq = info.exists ? info.seq : 0;
    const char *epoch = info.exists ? info.epoch : r->epoch;
    json_object_set_new(reply, "epoch", json_string(epoch));
    json_object_set_new(reply, "seq", json_integer((json_int_t)seq));
    int recover = since_epoch && *since_epoch && strcmp(since_epoch, epoch) == 0 && since_seq <= seq &&
                  (!info.exists || since_seq + 1 >= info.min_seq) && seq - since_seq <= e->cfg->max_catchup;
    json_object_set_new(reply, "recovered", json_boolean(recover));
    if (recover) {
      /* Up to seq and no further: in a cluster the store may already hold
       * newer entries of another node that the replica has not delivered
       * yet; they reach the member live, after seq (from_seq below). */
      /* In a cluster, right after a fetch, from its snapshot when it holds
       * them (it read the log from the oldest since of the joins waiting):
       * read at once, sent in parts from memory (stream.h). */
      int from_snap = e->join_snap && seq > since_seq &&
                      stream_catchup_from(e, s, name, e->join_snap, since_seq, seq, &ops.w, &ops_more) == 0;
      if (from_snap) ops_closed = 1;
      else stream_cancel(e, s, name); /* parts of an earlier join of the room stop (6.3) */
      if (!from_snap && info.exists && seq > since_seq && (rc = read_begin(e, &reading)) == 0) {
        /* One node: in parts, read from the store a part per loop turn
         * (stream.h). A cluster reads PostgreSQL: all at once here (it is
         * rare: a join's catch-up normally comes from its fetch), then in
         * parts from memory. */
        if (!e->clustered) rc = stream_catchup(e, s, name, json_object_get(req, "id"), since_seq, seq, &ops.w, &ops_more);
        else rc = stream_catchup_from(e, s, name, e->st, since_seq, seq, &ops.w, &ops_more);
        ops_closed = 1;
      }
      if (!ops_closed) raw_close(&ops);
      with_ops = 1;
    } else {
      if (info.exists && !mem) rc = read_begin(e, &reading);
      if (info.exists && rc == 0) rc = r->kind->snapshot(r, e->st, &snap);
      with_snap = 1;
      if (history > 0 && info.exists && rc == 0) {
        json_t *msgs = json_array();
        /* In a cluster, from the fetch's snapshot: it read them (cluster.c). */
        if (e->join_snap && store_recent_messages(e->join_snap, name, (size_t)history, join_collect_op, msgs) == 0)
          rc = 0;
        else if (json_array_clear(msgs), (rc = read_begin(e, &reading)) == 0)
          rc = store_recent_messages(e->st, name, (size_t)history, join_collect_op, msgs);
        json_object_set_new(reply, "messages", msgs);
      }
    }
  }
  cursor_collect cc = {json_array(), s->id.user, s->device, 0};
  if (rc == 0 && mem) cursors_from_memory(r, &cc);
  else if (rc == 0) rc = store_cursors(e->st, name, collect_cursor, &cc);
  json_t *cursors = cc.arr;
  int end = reading ? store_read_end(e->st) : 0;
  if (rc == 0) rc = end;
  if (rc != 0) {
    doc_frozen_free(snap);
    json_decref(cursors);
    json_decref(reply);
    jw_free(&ops.w);
    sess_error(s, req, "internal", "the room could not be read", NULL, NULL);
    room_unload_if_idle(e, r);
    return;
  }
  int is_new = !m;
  if (!m) m = room_member_add(r, s, json_object_size(pstate) ? json_deep_copy(pstate) : NULL);
  m->from_seq = seq;
  if (cc.mine > m->cursor) {
    m->cursor = cc.mine;
    if (!is_new) r->pl_valid = 0; /* a new member is not in the list's text yet */
  }
  presence_batch_joined(m); /* the list below has the window's changes so far */
  json_object_set_new(reply, "locks", room_locks_json(e, r));
  json_object_set_new(reply, "cursors", cursors);
  jw first = JW_INIT; /* the snapshot's first part, written as text below */
  if (with_snap) {
    int more;
    stream_snapshot(e, s, name, snap, &first, &more);
    if (more) json_object_set_new(reply, "more", json_true());
  }
  if (ops_more) json_object_set_new(reply, "more", json_true()); /* `catchup` parts follow (6.3) */
  /* The snapshot's first part, the catch-up's ops and the presence list go
   * last, written as text: the items from the frozen document (sync.h), the
   * ops as stored (stream.h), the presence list without a tree per member
   * (room.h); each was the largest cost of its kind of join. */
  jw *w = &e->frame_text;
  jw_reset(w);
  jw_value(w, reply);
  json_decref(reply);
  w->len--; /* the reply's closing brace */
  if (with_snap) {
    jw_lit(w, ",\"snapshot\":{\"items\":");
    jw_raw(w, first.p, first.len);
    jw_lit(w, "}");
  }
  jw_free(&first);
  if (with_ops) {
    jw_lit(w, ",\"ops\":");
    jw_raw(w, ops.w.p, ops.w.len);
  }
  jw_free(&ops.w);
  jw_lit(w, ",\"presence\":");
  room_presence_list_text(r, w);
  jw_lit(w, "}");
  net_chunk *frame = ws_frame_new(WS_OP_TEXT, w->p, w->len);
  sess_send(s, frame);
  net_chunk_unref(frame);
  if (is_new) {
    room_presence_event(e, m, "join");
    conn_event(e, s, NULL, "join", "room", name, (const char *)NULL);
  }
  if (!r->pch) room_presence_list_drop(r); /* kept while a presence window is open (presence_batch.c) */
}

void join_handle(sess *s, json_t *req) { join_decide(s, req, 0); }

void join_handle_asked(sess *s, json_t *req) { join_decide(s, req, JOIN_ASKED); }

void join_pending_done(engine *e, room *r) {
  if (!r->pend_q || (r->pending && (e->clustered || now_ms(e) < r->pend_q_until))) return;
  join_hold *q = r->pend_q;
  r->pend_q = NULL;
  join_hold_run(e, r, q, 1);
}

void join_leave(sess *s, json_t *req) {
  const char *name = proto_room_name(s, req);
  if (!name) return;
  member *m = room_membership(s, name);
  if (m && m->inflight) { /* cluster: after its writes are answered (room.h) */
    m->leave_waits = 1;
    hook_hold_front(s, req);
    return;
  }
  json_t *reply = json_pack("{s:s}", "type", "left");
  json_t *id = json_object_get(req, "id");
  if (id) json_object_set(reply, "re", id);
  json_object_set_new(reply, "room", json_string(name));
  sess_send_json(s, reply);
  stream_cancel(s->e, s, name);
  if (m) room_member_remove(s->e, m, "left");
}
