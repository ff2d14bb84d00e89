/* lookup.c -- dedupe lookups read without blocking, in a cluster (commit.h:
 * commit_lookup_*, commit_backend_lookup): a cid the in-memory filter cannot
 * rule out is looked up with one fetch of its record (store_fetch_dedupe),
 * and the write waits for the answer: a session's in its room's deferred
 * writes (commit.c decides it again on the answer, e->lookup_now), a
 * backend write's HTTP answer deferred. */
#include "commit.h"

#include <string.h>

#include "../common/log.h"
#include "api.h"
#include "cluster.h"
#include "room.h"

/* A dedupe lookup in flight (store_fetch_dedupe): the deferred write it
 * answers is found by room and id, if it is still there; or (http set) the
 * deferred answer of a backend write whose batch another node's record of
 * a cid rolled back. */
typedef struct dedupe_ask {
  struct dedupe_ask *next, **prev;
  engine *e;
  char *room, *dkey, *cid;
  uint64_t id;
  conn *http;            /* NULL once its connection is gone */
  char *epoch, *api_line;
  json_t *req;           /* a backend write waiting for its lookup (commit_backend_lookup) */
  int kind;              /* its API_* kind */
} dedupe_ask;

static dedupe_ask *ask_new(engine *e, const char *rname, const char *dkey, const char *cid) {
  dedupe_ask *q = wsy_calloc(1, sizeof *q);
  q->e = e;
  q->room = wsy_strndup(rname, strlen(rname));
  q->dkey = wsy_strndup(dkey, strlen(dkey));
  q->cid = wsy_strndup(cid, strlen(cid));
  q->id = ++e->lookup_ids;
  q->next = e->asks;
  if (q->next) q->next->prev = &q->next;
  q->prev = &e->asks;
  e->asks = q;
  return q;
}

static void ask_free(dedupe_ask *q) {
  if (q->next) q->next->prev = q->prev;
  *q->prev = q->next;
  wsy_free(q->epoch);
  wsy_free(q->api_line);
  json_decref(q->req);
  wsy_free(q->room);
  wsy_free(q->dkey);
  wsy_free(q->cid);
  wsy_free(q);
}


/* The answer to a backend write whose batch rolled back on another node's
 * record of a cid: a duplicate when the record is its cid's, in its room
 * (as the same write on the node that recorded it is answered); else 503
 * stale, as for a fenced-out batch. */
static void http_dup_answer(dedupe_ask *q, int rc, uint64_t seq, const char *room_out) {
  int status = 503;
  json_t *b;
  if (rc == 0 && !strcmp(room_out, q->room)) {
    status = 200;
    b = json_pack("{s:s,s:s,s:I,s:b}", "room", q->room, "epoch", q->epoch, "seq", (json_int_t)seq, "duplicate", 1);
  } else if (rc == 0) {
    status = 400;
    b = json_pack("{s:s,s:s,s:s}", "type", "error", "code", "bad_request", "message",
                  "this cid was already used in another room");
  } else if (rc != WSY_NOT_FOUND) {
    status = 500;
    log_error("dedupe lookup of :backend|%s failed: %s", q->cid, wsy_strerror(rc));
    commit_store_unreadable(q->e, q->room, rc);
    b = json_pack("{s:s,s:s,s:s}", "type", "error", "code", "internal", "message",
                  "the store could not check this cid; retry");
  } else {
    b = commit_http_stale();
  }
  commit_http_answer(&q->http, q->api_line, status, b);
}

static void http_dup_fetched(void *ud, int rc, store *snap) {
  dedupe_ask *q = ud;
  char room_out[STORE_ROOM_MAX + 1] = "";
  uint64_t seq = 0;
  if (rc == 0) rc = store_dedupe_get(snap, q->dkey, q->cid, room_out, &seq);
  http_dup_answer(q, rc, seq, room_out);
  ask_free(q);
}

/* p's batch rolled back on a cid another node recorded: p's own cid is
 * looked up (without blocking) before its deferred answer is given. */
void commit_lookup_rolled_back(engine *e, pend *p) {
  dedupe_ask *q = ask_new(e, p->r->name, ":backend", p->cid);
  q->epoch = wsy_strndup(p->r->epoch, strlen(p->r->epoch));
  q->api_line = p->api_line;
  p->api_line = NULL;
  httpd_defer(p->http, &q->http); /* the deferred answer is q's now */
  p->http = NULL;
  e->dedupe_fetches++;
  int rc = store_fetch_dedupe(e->st, q->dkey, q->cid, http_dup_fetched, q);
  if (rc != 0) http_dup_fetched(q, rc, NULL);
}

static void dedupe_fetched(void *ud, int rc, store *snap) {
  dedupe_ask *q = ud;
  engine *e = q->e;
  room *r = map_get(&e->rooms, q->room);
  defwrite *d = r ? r->defer : NULL;
  while (d && d->lookup_id != q->id) d = d->next;
  if (d && d->lookup == DEDUPE_ASKED) {
    char room_out[STORE_ROOM_MAX + 1];
    d->lookup = DEDUPE_KNOWN;
    d->lookup_rc = rc != 0 ? rc : store_dedupe_get(snap, q->dkey, q->cid, room_out, &d->lookup_seq);
    if (d->lookup_rc == 0) d->lookup_room = wsy_strndup(room_out, strlen(room_out));
    ask_free(q);
    r->pins++;
    commit_redecide_deferred(e, r); /* once nothing of r is pending */
    r->pins--;
    room_unload_if_idle(e, r);
    return;
  }
  ask_free(q); /* its write is gone (its room unloaded, its session ended) */
}

/* In a cluster, the lookup of a session's cid the in-memory filter cannot
 * rule out is read without blocking: the write waits in r's deferred
 * writes (those after it behind it) until the answer decides it again.
 * 1 when it waits; 0 when the store reads only on the loop; -1 with *err
 * when the read was refused at once. */
int commit_lookup_session(author *a, json_t *req, room *r, const char *cid, int fresh, int *err) {
  engine *e = a->e;
  dedupe_ask *q = ask_new(e, r->name, a->dkey, cid);
  int rc = store_fetch_dedupe(e->st, a->dkey, cid, dedupe_fetched, q);
  if (rc != 0) { /* WSY_INVAL: a store without fetches reads where it is needed */
    ask_free(q);
    *err = rc;
    return rc == WSY_INVAL ? 0 : -1;
  }
  defwrite *d = commit_defer_push(r, a->s, req, e->tries_now, e->unrecorded_now);
  d->lookup = DEDUPE_ASKED;
  d->lookup_id = q->id;
  e->dedupe_fetches++;
  if (fresh) { /* and a read of the room, sent after the lookup: answered after it */
    d->need = r->fetch_started + 1;
    cluster_fetch(e, r, 1);
  }
  return 1;
}

static void backend_looked_up(void *ud, int rc, store *snap) {
  dedupe_ask *q = ud;
  engine *e = q->e;
  char room_out[STORE_ROOM_MAX + 1] = "";
  uint64_t seq = 0;
  if (rc == 0) rc = store_dedupe_get(snap, q->dkey, q->cid, room_out, &seq);
  if (rc == WSY_NOT_FOUND && q->http) {
    /* Not recorded: decided now, as new (a record made meanwhile still
     * rolls its batch back: then commit_lookup_rolled_back answers), on
     * its room read first if it must be. The write answers q's connection
     * or defers it again. */
    conn *c = q->http;
    int was = e->unrecorded_now;
    const char *line = e->api_line;
    e->unrecorded_now = 1;
    e->api_line = q->api_line;
    if (!cluster_api_write_wait(e, c, q->room, q->req, q->kind))
      api_write_resume(e, c, map_get(&e->rooms, q->room), q->req, q->kind, q->api_line, 0);
    e->unrecorded_now = was;
    e->api_line = line;
  } else {
    http_dup_answer(q, rc, seq, room_out); /* a duplicate, another room's cid, or unreadable */
  }
  ask_free(q);
}

int commit_backend_lookup(engine *e, conn *c, room *r, json_t *req, int kind) {
  const char *cid = jstr(req, "cid");
  if (!e->clustered || !cid || !c || e->unrecorded_now || !commit_cid_maybe_stored(e, ":backend", cid)) return 0;
  dedupe_ask *q = ask_new(e, r->name, ":backend", cid);
  q->epoch = wsy_strndup(r->epoch, strlen(r->epoch));
  q->req = json_incref(req);
  q->kind = kind;
  if (e->api_line) q->api_line = wsy_strndup(e->api_line, strlen(e->api_line));
  if (store_fetch_dedupe(e->st, ":backend", cid, backend_looked_up, q) != 0) {
    ask_free(q); /* refused at once: dedupe() reads it where it is needed */
    return 0;
  }
  httpd_defer(c, &q->http);
  e->dedupe_fetches++;
  return 1;
}


void commit_lookup_deinit(engine *e) {
  while (e->asks) ask_free(e->asks); /* dropped unanswered by the store */
}
