/* defer.c -- a room's deferred writes in a cluster (commit.h): session
 * writes that wait for the room to be read again (a fenced-out batch, a
 * stale replica, a dedupe lookup, joins that waited long), decided again in
 * the order their sessions sent them. */
#include "commit.h"

#include "cluster.h"
#include "hook.h"
#include "proto.h"
#include "room.h"
#include "sess.h"

/* A member's writes in flight (room.h): counted in a cluster only. */
int commit_inflight_add(engine *e, sess *s, room *r) {
  member *m = e->clustered && s ? room_membership(s, r->name) : NULL;
  if (m) m->inflight++;
  return m != NULL;
}

/* One fewer; the last lets a leave that waited go on (the caller pins r). */
void commit_inflight_done(sess *s, room *r) {
  member *m = room_membership(s, r->name);
  if (!m || !m->inflight || --m->inflight || !m->leave_waits) return;
  m->leave_waits = 0;
  hook_hold_release(s);
}

/* The session is held meanwhile (hook.h): its later messages wait, so that
 * none of them (a leave, another write) overtakes the deferred one. */
defwrite *commit_defer_push(room *r, sess *s, json_t *req, unsigned tries, int unrecorded) {
  defwrite *d = wsy_calloc(1, sizeof *d);
  d->unrecorded = unrecorded;
  d->s = s;
  s->refs++;
  s->hold++;
  d->req = json_incref(req);
  d->tries = tries;
  d->counted = commit_inflight_add(s->e, s, r);
  r->deferrals++;
  if (!r->defer) r->defer_tail = &r->defer;
  *r->defer_tail = d;
  r->defer_tail = &d->next;
  return d;
}

/* A write of a batch that failed, to decide again. Its session was not held
 * while the batch was out, so a later write of it may be deferred already
 * (the replica went stale meanwhile): this one goes before the first such,
 * after the writes of earlier failed batches, so that the session's writes
 * are decided again in the order it sent them. */
void commit_defer_redo(room *r, sess *s, json_t *req, unsigned tries, int unrecorded) {
  defwrite *d = commit_defer_push(r, s, req, tries, unrecorded); /* last on the list */
  d->redo = 1;
  defwrite **pp = &r->defer;
  while (*pp != d && !((*pp)->s == s && !(*pp)->redo)) pp = &(*pp)->next;
  if (*pp == d) return;
  defwrite **before = &r->defer; /* unlink d from the end ... */
  while ((*before)->next != d) before = &(*before)->next;
  (*before)->next = NULL;
  r->defer_tail = &(*before)->next;
  d->next = *pp; /* ... and put it before the session's first later write */
  *pp = d;
}

static void defwrite_free(defwrite *d) {
  sess_unref(d->s);
  json_decref(d->req);
  wsy_free(d->lookup_room);
  wsy_free(d);
}

/* Decides r's deferred writes again, in order, now that nothing of r is
 * pending: r is read again from the store first. A write deferred anew
 * meanwhile (the room is not ready yet) goes back on the list in order. */
void commit_redecide(engine *e, room *r) {
  if (e->clustered && !r->fresh_pass && (r->broken || r->stale || r->locks_stale || r->fetching)) {
    cluster_fetch(e, r, 1); /* its answer decides them again */
    return;
  }
  if (r->broken && room_reload(e, r) != 0) return; /* tried again after the next commit */
  defwrite *list = r->defer;
  r->defer = NULL;
  r->defer_tail = &r->defer;
  room *outer = e->redeciding;
  e->redeciding = r;
  r->pins++; /* a message released below (a leave) may empty the room: the caller unloads it */
  for (defwrite *d = list, *next; d; d = next) {
    next = d->next;
    if (d->need > r->fetch_done) {
      /* It waits for a read started after it arrived (and so do those
       * after it, in order): back first on the list, before any write
       * deferred anew meanwhile. */
      defwrite **tail = &d->next;
      while (*tail) tail = &(*tail)->next;
      *tail = r->defer;
      if (!r->defer) r->defer_tail = tail;
      r->defer = d;
      cluster_fetch(e, r, 1);
      break;
    }
    if (d->lookup == DEDUPE_ASKED) {
      /* Its dedupe record is being read: it (and those after it, in
       * order) waits for the answer, which decides them again. */
      defwrite **tail = &d->next;
      while (*tail) tail = &(*tail)->next;
      *tail = r->defer;
      if (!r->defer) r->defer_tail = tail;
      r->defer = d;
      break;
    }
    int again = 0;
    if (!d->s->ended) {
      e->tries_now = d->tries;
      e->unrecorded_now = d->unrecorded;
      defwrite *outer_lookup = e->lookup_now;
      e->lookup_now = d->lookup == DEDUPE_KNOWN ? d : NULL;
      e->redecided++;
      uint64_t deferrals = r->deferrals;
      proto_redecide(d->s, d->req);
      again = r->deferrals != deferrals; /* deferred anew: the room is not ready for it */
      e->tries_now = 0;
      e->unrecorded_now = 0;
      e->lookup_now = outer_lookup;
    }
    hook_hold_release(d->s); /* its messages that waited behind it, in order */
    if (d->counted) commit_inflight_done(d->s, r);
    defwrite_free(d);
    if (again && next) {
      /* Nor for those after it: they wait behind it, in order (a later
       * write of its session decided now would overtake it). */
      if (!r->defer) r->defer_tail = &r->defer; /* (the list may have been answered meanwhile) */
      *r->defer_tail = next;
      while (*r->defer_tail) r->defer_tail = &(*r->defer_tail)->next;
      break;
    }
  }
  r->pins--;
  e->redeciding = outer;
}

void commit_redecide_deferred(engine *e, room *r) {
  if (r->defer && r->pending == 0 && e->redeciding != r) commit_redecide(e, r);
  room_unload_if_idle(e, r);
}

void commit_defer_fail(engine *e, room *r, int rc) {
  defwrite *list = r->defer;
  r->defer = NULL;
  r->defer_tail = &r->defer;
  for (defwrite *d = list, *next; d; d = next) {
    next = d->next;
    if (!d->s->ended) sess_error(d->s, d->req, "internal", "the room could not be read from the store; retry", NULL, NULL);
    hook_hold_release(d->s);
    if (d->counted) commit_inflight_done(d->s, r);
    defwrite_free(d);
  }
  if (list) commit_store_unreadable(e, r->name, rc);
}

void commit_defer_free(room *r) {
  for (defwrite *d = r->defer, *next; d; d = next) {
    next = d->next;
    if (d->s->hold) d->s->hold--; /* the room goes away with the engine: nothing to dispatch */
    defwrite_free(d);
  }
  r->defer = NULL;
}

/* A write to decide on the room as read after now: the next fetch. */
void commit_defer_fresh(room *r, sess *s, json_t *req, unsigned tries, int unrecorded) {
  commit_defer_push(r, s, req, tries, unrecorded)->need = r->fetch_started + 1;
  cluster_fetch(s->e, r, 1);
}

void commit_defer_write(sess *s, json_t *req, room *r) { commit_defer_fresh(r, s, req, s->e->tries_now, s->e->unrecorded_now); }
