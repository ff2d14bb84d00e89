/* room.c -- rooms (room.h): the registry, loading and reloading, members,
 * presence, locks, and fan-out through the bus. */
#include "room.h"

#include <string.h>

#include "../common/log.h"
#include "cluster.h"
#include "commit.h"
#include "kind.h"
#include "opfwd.h"
#include "proto.h"
#include "sess.h"

member *room_membership(sess *s, const char *rname) {
  for (member *m = s->rooms; m; m = m->snext)
    if (strcmp(m->r->name, rname) == 0) return m;
  return NULL;
}

static void room_destroy(engine *e, room *r) {
  opfwd_room_free(r);
  commit_defer_free(r);
  cluster_fetch_q_free(r);
  cluster_room_unloading(e, r);
  room_locks_free(r);
  presence_batch_free(e, r);
  room_presence_list_drop(r);
  map_free(&r->rerelease);
  map_free(&r->dirty);
  join_cursors_free(r);
  join_hold_free(&r->pend_q);
  if (r->kind) r->kind->unload(r);
  if (r->ring) ring_unref(r->ring);
  wsy_free(r->name);
  wsy_free(r);
}

void room_unload_if_idle(engine *e, room *r) {
  if (r->nmembers == 0 && r->npeers == 0 && r->pending == 0 && !r->defer && !r->settle_q && !r->pend_q && !r->fetch_q &&
      !r->pins) {
    /* Its last members' leaves go now (to other nodes: nobody is left
     * here), then it unloads (presence_batch_flush_room calls back). */
    if (r->pch) {
      presence_batch_flush_room(e, r);
      return;
    }
    map_del(&e->rooms, r->name);
    room_destroy(e, r);
  }
}

void room_free_all(engine *e) {
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->rooms, &i, &k, &v);) room_destroy(e, v);
  map_free(&e->rooms);
}

/* The room's seq, epoch and kind state from the store, in one snapshot. A
 * room the store does not have gets a new epoch, created with the next
 * batch (the creation counts as pending, so the room stays loaded until it
 * is durable). */
static int load(engine *e, room *r, int again) {
  store_room_info info = {0};
  int rc = store_read_begin(e->st);
  if (rc != 0) return rc;
  rc = store_room_get(e->st, r->name, &info);
  if (rc == 0 && info.exists && (info.epoch[0] == 'y') != (r->kind->epoch_tag == 'y')) rc = ROOM_WRONG_KIND;
  if (rc == 0 && again && r->reload_changes && r->ks) rc = r->kind->reload_changes(r, e->st, &info);
  else if (rc == 0) rc = again && r->kind->reload && r->ks ? r->kind->reload(r, e->st, &info) : r->kind->load(r, e->st, &info);
  if (rc == 0) rc = join_cursors_load(e, r, info.exists);
  if (rc == 0 && e->clustered) rc = room_locks_load(e, r, info.lockver); /* the store's (cluster) */
  int end = store_read_end(e->st);
  if (rc == 0) rc = end;
  if (rc != 0) {
    if (r->ks) r->kind->unload(r);
    return rc;
  }
  r->min_seq = info.exists ? info.min_seq : 1;
  snprintf(r->head, sizeof r->head, "%s", info.head); /* "" for a new room */
  r->head_batch = 0;
  if (info.exists) {
    memcpy(r->epoch, info.epoch, sizeof r->epoch);
    r->seq = info.seq;
  } else {
    random_hex(r->epoch, 8);
    if (r->kind->epoch_tag) r->epoch[0] = r->kind->epoch_tag;
    r->seq = 0;
    if (again && r->no_create) {
      r->gone = 1;
      opfwd_room_gone(e, r);
    }
    else commit_room_created(e, r);
  }
  r->synced = r->seq;
  if (e->clustered) room_locks_orphans(e, r);
  return 0;
}

static room *room_new(engine *e, const char *name, const room_kind *kind) {
  room *r = wsy_calloc(1, sizeof *r);
  r->name = wsy_strndup(name, strlen(name));
  r->kind = kind;
  r->ring = ring_new(e->cfg->resume_ring, &e->ring_mem);
  map_init(&r->locks);
  map_init(&r->rerelease);
  map_init(&r->dirty);
  map_init(&r->cursors);
  map_init(&r->remote);
  map_init_borrowed(&r->pch_by);
  r->pch_tail = &r->pch;
  return r;
}

/* The end of a loading room's load: its members get entries from its seq
 * on, and the other nodes are asked for theirs (cluster.h). */
static void loaded(engine *e, room *r) {
  r->loading = 0;
  r->delivered = r->seq;
  presence_query(e, r);
}

room *room_open_loading(engine *e, const char *name) {
  room *r = room_new(e, name, room_kind_for(name));
  r->loading = 1;
  map_put(&e->rooms, name, r);
  cluster_room_subscribe(e, r); /* before the fetch reads: nothing falls between */
  return r;
}

int room_load_from(engine *e, room *r, store *st) {
  store *was = e->st;
  e->st = st;
  int rc = load(e, r, 0);
  e->st = was;
  if (rc == 0) loaded(e, r);
  return rc;
}

room *room_ready(room *r) { return r && !r->loading ? r : NULL; }

room *room_get(engine *e, const char *name, int *err) { return room_open(e, name, room_kind_for(name), err); }

room *room_open(engine *e, const char *name, const room_kind *want, int *err) {
  room *r = map_get(&e->rooms, name);
  if (r && r->kind != want) {
    *err = ROOM_WRONG_KIND;
    return NULL;
  }
  if (r && r->gone) {
    r->gone = 0; /* deleted elsewhere, asked for again before it unloaded */
    commit_room_created(e, r);
  }
  if (r && r->loading) {
    /* Asked for now: loaded here (its fetch, when answered, reads it again). */
    int rc = load(e, r, 0);
    if (rc != 0) {
      if (rc != ROOM_WRONG_KIND) log_error("room %s could not be loaded: %s", name, wsy_strerror(rc));
      *err = rc;
      return NULL;
    }
    loaded(e, r);
  }
  if (r) return r;
  r = room_new(e, name, want);
  int rc = load(e, r, 0);
  if (rc == ROOM_WRONG_KIND) {
    room_destroy(e, r);
    *err = rc;
    return NULL;
  }
  if (rc != 0) {
    log_error("room %s could not be loaded: %s", name, wsy_strerror(rc));
    room_destroy(e, r);
    *err = rc;
    return NULL;
  }
  map_put(&e->rooms, name, r);
  cluster_room_loaded(e, r);
  return r;
}

int room_reload_from(engine *e, room *r, store *st) {
  store *was = e->st;
  e->st = st; /* load() reads e->st: the snapshot answers the same reads */
  int rc = room_reload(e, r);
  e->st = was;
  return rc;
}

int room_reload(engine *e, room *r) {
  char was[sizeof r->epoch];
  memcpy(was, r->epoch, sizeof was);
  int was_stored = !r->creating;
  if (!r->kind->reload) r->kind->unload(r);
  int rc = load(e, r, 1);
  const char *why = r->broken ? "after a failed commit" : "after other nodes wrote it";
  if (rc != 0) {
    log_error("room %s could not be reloaded %s: %s", r->name, why, wsy_strerror(rc));
    return rc;
  }
  if (e->clustered && was_stored && strcmp(was, r->epoch) != 0) {
    /* The incarnation its members joined was deleted through another node
     * (and maybe made again since): they are told as that node's were. */
    log_info("room %s was deleted through another node: its %u members here leave", r->name, r->nmembers);
    commit_room_members_deleted(e, r);
    opfwd_room_gone(e, r); /* and the ghosts of other nodes' members (opfwd.h) */
  }
  if (r->broken && !e->clustered) log_info("room %s reloaded from the store at seq %llu %s", r->name, (unsigned long long)r->seq, why);
  else log_debug("room %s reloaded from the store at seq %llu %s", r->name, (unsigned long long)r->seq, why);
  r->broken = 0;
  map_free(&r->dirty); /* memory is the store's again */
  map_init(&r->dirty);
  r->dirty_all = 0;
  return 0;
}

/* A session's first membership is the one inside it (s->m0) whenever that
 * is free: a session in one room makes no allocation for it; the others'
 * are allocated. */
member *room_member_add(room *r, sess *s, json_t *state) {
  member *m = s->m0.s ? wsy_calloc(1, sizeof *m) : &s->m0;
  m->s = s;
  m->r = r;
  m->state = state;
  m->next = r->members;
  if (r->members) r->members->prev = m;
  r->members = m;
  r->nmembers++;
  m->snext = s->rooms;
  s->rooms = m;
  s->nrooms++;
  return m;
}

json_t *room_presence_entry(member *m) {
  json_t *e = json_pack("{s:s,s:s,s:o,s:b}", "user", m->s->id.user, "device", m->s->device, "state",
                        m->state ? json_incref(m->state) : json_object(), "connected", sess_online(m->s));
  if (m->cursor) json_object_set_new(e, "cursor", json_integer((json_int_t)m->cursor));
  return e;
}

static void presence_entry_text(jw *w, const member *m) {
  jw_lit(w, "{\"user\":");
  jw_cstr(w, m->s->id.user);
  jw_lit(w, ",\"device\":");
  jw_cstr(w, m->s->device);
  jw_lit(w, ",\"state\":");
  if (m->state) jw_value(w, m->state);
  else jw_lit(w, "{}");
  if (sess_online(m->s)) jw_lit(w, ",\"connected\":true");
  else jw_lit(w, ",\"connected\":false");
  if (m->cursor) {
    jw_lit(w, ",\"cursor\":");
    jw_int(w, (int64_t)m->cursor);
  }
  jw_lit(w, "}");
}

void room_presence_list_drop(room *r) {
  jw_free(&r->pl);
  r->pl_valid = 0;
  r->pl_head = NULL;
}

/* Joins to a room filling up list nearly the same members again and
 * again: the entries are kept as text, and only the members added since
 * the last list are written, in front (the order stays newest first). */
void room_presence_list_text(room *r, jw *w) {
  if (!r->pl_valid) {
    jw_reset(&r->pl);
    r->pl_head = NULL;
    r->pl_valid = 1;
  }
  if (r->pl_head != r->members) {
    jw fresh = JW_INIT;
    for (member *m = r->members; m != r->pl_head; m = m->next) { /* pl_head is a member (removals invalidate) */
      if (fresh.len) jw_lit(&fresh, ",");
      presence_entry_text(&fresh, m);
    }
    if (!r->pl.len) {
      jw_raw(&r->pl, fresh.p, fresh.len);
    } else { /* in front of the text kept, in place */
      size_t add = fresh.len + 1;
      if (r->pl.cap - r->pl.len < add + 1) jw_grow(&r->pl, add + 1);
      memmove(r->pl.p + add, r->pl.p, r->pl.len + 1);
      memcpy(r->pl.p, fresh.p, fresh.len);
      r->pl.p[fresh.len] = ',';
      r->pl.len += add;
    }
    jw_free(&fresh);
    r->pl_head = r->members;
  }
  jw_lit(w, "[");
  if (r->pl.len) jw_raw(w, r->pl.p, r->pl.len);
  json_t *remote = json_array();
  presence_remote_list(r, remote); /* other nodes' members (cluster.h) */
  size_t i;
  json_t *x;
  json_array_foreach(remote, i, x) {
    if (r->members || i) jw_lit(w, ",");
    jw_value(w, x);
  }
  json_decref(remote);
  jw_lit(w, "]");
}

/* ---- fan-out ---------------------------------------------------------------- */

void room_publish(engine *e, const room *r, uint64_t seq, net_chunk *frame, const char *except,
                  const char *only_user) {
  bus_msg m = {.room = r->name, .epoch = seq ? r->epoch : NULL, .seq = seq, .frame = frame,
               .except = except, .only_user = only_user};
  bus_publish(e->bus, &m);
}

void room_send(engine *e, room *r, json_t *msg) {
  net_chunk *frame = engine_frame(e, msg);
  json_decref(msg);
  room_publish(e, r, 0, frame, NULL, NULL);
  net_chunk_unref(frame);
}

/* An entry reaches the members whose join position is below its seq (the
 * others had it in their joined); ephemeral traffic every member the
 * filters let through. One frame for all, kept once in the room's ring:
 * the outboxes name its position, they hold no reference of their own. */
void room_deliver(void *ud, const bus_msg *m) {
  engine *e = ud;
  room *r = map_get(&e->rooms, m->room);
  if (!r) return;
  uint64_t pos = m->pres_pos; /* else in the ring once the first recipient is found */
  for (member *x = r->members, *next; x; x = next) {
    next = x->next;
    if (m->seq && m->seq <= x->from_seq) continue;
    if (m->pres_pos && x->pgen) continue; /* joined during the window: gets its own (presence_batch.c) */
    if (m->except && strcmp(x->s->dkey, m->except) == 0) continue;
    if (m->only_user && strcmp(x->s->id.user, m->only_user) != 0) continue;
    if (!pos) pos = ring_push(r->ring, m->frame);
    sess_send_ring(x->s, r->ring, pos, m->frame);
    e->deliveries++;
  }
  if (r->kind->deliver) r->kind->deliver(e, r, m);
}

void room_presence_event(engine *e, member *about, const char *event) {
  if (strcmp(event, "join") != 0) about->r->pl_valid = 0; /* a state, a connection, a member gone */
  if (e->cfg->presence_interval_ms) presence_batch_note(e, about, event);
  else room_presence_send(e, about, event);
}

/* A presence event to every member but the one it is about. */
void room_presence_send(engine *e, member *about, const char *event) {
  json_t *msg = json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", "presence", "room", about->r->name,
                          "event", event, "user", about->s->id.user, "device", about->s->device);
  if (strcmp(event, "leave") != 0) {
    json_object_set_new(msg, "state", about->state ? json_incref(about->state) : json_object());
    json_object_set_new(msg, "connected", json_boolean(sess_online(about->s)));
  }
  net_chunk *frame = engine_frame(e, msg);
  json_decref(msg);
  room_publish(e, about->r, 0, frame, about->s->dkey, NULL);
  net_chunk_unref(frame);
}

void room_member_remove(engine *e, member *m, const char *reason) {
  room *r = m->r;
  sess *s = m->s;
  r->pl_valid = 0; /* before anything: it may list m */
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
  room_locks_release_by(e, r, s, reason);
  room_presence_event(e, m, "leave");
  json_decref(m->state);
  if (m == &s->m0) memset(m, 0, sizeof *m); /* free for the next join */
  else wsy_free(m);
  room_unload_if_idle(e, r);
}
