/* lock.c -- item locks (PROTOCOL.md 9, room.h): grants, renewals and
 * releases, expiry, the lock grace; in a cluster, kept in the shared store
 * (store.h, ITEM LOCKS) so that every node decides on the same locks. */
#include <string.h>

#include "../common/log.h"
#include "cluster.h"
#include "commit.h"
#include "proto.h"
#include "room.h"
#include "sess.h"

/* Another node's lock left expired this long is released here (its own
 * node releases it at once, unless that node is gone). */
#define LOCK_REMOTE_SLACK_MS 2000

static int lock_is_held(const lock *l) { return l->holder || l->rid; }

static void lock_clear(lock *l) {
  l->holder = NULL;
  wsy_free(l->rid);
  l->rid = NULL;
  l->ruser = l->rdevice = NULL;
}

void room_locks_free(room *r) {
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&r->locks, &i, &k, &v);) {
    lock_clear(v);
    wsy_free(v);
  }
  map_free(&r->locks);
  r->nheld = 0;
}

json_t *room_lock_json(engine *e, const char *item, const lock *l) {
  uint64_t now = now_ms(e);
  return json_pack("{s:s,s:s,s:s,s:I,s:I}", "item", item, "user", l->holder ? l->holder->id.user : l->ruser,
                   "device", l->holder ? l->holder->device : l->rdevice, "fence", (json_int_t)l->fence, "ttl",
                   (json_int_t)(l->expires > now ? l->expires - now : 0));
}

const lock *room_lock_held(room *r, const char *item) {
  lock *l = map_get(&r->locks, item);
  return l && lock_is_held(l) ? l : NULL;
}

static json_t *free_event(room *r, const char *item, const lock *l, const char *reason) {
  return json_pack("{s:s,s:s,s:s,s:s,s:I,s:s}", "type", "lock", "room", r->name, "item", item, "state", "free",
                   "fence", (json_int_t)l->fence, "reason", reason);
}

void room_lock_release(engine *e, room *r, const char *item, lock *l, const char *reason) {
  lock_clear(l);
  r->nheld--;
  json_t *ev = free_event(r, item, l, reason);
  if (e->clustered) commit_lock(e, r, NULL, NULL, item, l, NULL, ev);
  else room_send(e, r, ev);
}

json_t *room_locks_json(engine *e, room *r) {
  json_t *locks = json_array();
  const char *lk;
  void *lv;
  for (size_t i = 0; r->nheld && map_next(&r->locks, &i, &lk, &lv);)
    if (lock_is_held(lv)) json_array_append_new(locks, room_lock_json(e, lk, lv));
  return locks;
}

/* In a cluster, the one node that releases the locks of another node's
 * sessions (gone, or expired there): the first of the live nodes by id,
 * so that the survivors do not fence each other out. */
static int locks_releaser(engine *e) {
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->nodes, &i, &k, &v);)
    if (strcmp(k, e->node_id) < 0) return 0;
  return 1;
}

void room_locks_sweep(engine *e) {
  uint64_t now = now_ms(e);
  int releaser = e->clustered && locks_releaser(e);
  const char *rk, *k;
  void *rv, *v;
  char **fetch = NULL; /* rooms to read first, after the walk (a read may unload rooms) */
  size_t nfetch = 0, cap = 0;
  for (size_t i = 0; map_next(&e->rooms, &i, &rk, &rv);) {
    room *r = rv;
    /* In a cluster a release is fenced by the lock version, so deciding on
     * a stale view costs a retry, never a wrong release; still, what other
     * nodes changed is read first: the room waits for a later sweep, after
     * an asynchronous read (cluster.h) has brought its locks up to date. */
    if (e->clustered && (r->broken || r->loading)) continue; /* read again first; no locks yet */
    if (e->clustered && r->locks_stale && !r->pending) {
      if (!r->fetching) {
        if (nfetch == cap) fetch = wsy_realloc(fetch, (cap = cap ? cap * 2 : 8) * sizeof *fetch);
        fetch[nfetch++] = wsy_strndup(r->name, strlen(r->name));
      }
      continue;
    }
    if (!r->nheld) continue;
    for (size_t j = 0; map_next(&r->locks, &j, &k, &v);) {
      lock *l = v;
      if ((l->holder && l->expires <= now) || (releaser && l->rid && l->expires + LOCK_REMOTE_SLACK_MS <= now))
        room_lock_release(e, r, k, l, "expired");
    }
  }
  for (size_t i = 0; i < nfetch; i++) {
    room *r = map_get(&e->rooms, fetch[i]);
    if (r && !r->fetching) cluster_fetch(e, r, 1);
    wsy_free(fetch[i]);
  }
  wsy_free(fetch);
}

void room_locks_release_by(engine *e, room *r, sess *s, const char *reason) {
  if (!r->nheld) return;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&r->locks, &i, &k, &v);) {
    lock *l = v;
    if (l->holder == s) room_lock_release(e, r, k, l, reason);
  }
}

/* A lock of a gone node released in the store: its room's members on every
 * node hear of it (the event crosses the bus), and this node's replica, if
 * the room is loaded here, reads its locks again. */
static int released_of_node(const char *name, const char *item, uint64_t fence, void *ud) {
  engine *e = ud;
  room *r = map_get(&e->rooms, name);
  if (r) r->locks_stale = 1;
  json_t *ev = json_pack("{s:s,s:s,s:s,s:s,s:I,s:s}", "type", "lock", "room", name, "item", item, "state", "free",
                         "fence", (json_int_t)fence, "reason", "disconnected");
  net_chunk *frame = engine_frame(e, ev);
  json_decref(ev);
  bus_msg m = {.room = name, .frame = frame};
  bus_publish(e->bus, &m);
  net_chunk_unref(frame);
  return 0;
}

typedef struct release_ctx {
  engine *e;
  char prefix[80];
} release_ctx;

static void released(void *ud, int rc, store *snap) {
  release_ctx *c = ud;
  if (rc == 0) rc = store_release_locks_of(snap, c->prefix, released_of_node, c->e);
  if (rc != 0)
    log_warn("the locks of node %.*s could not be released: %s (they expire)", (int)strlen(c->prefix) - 1, c->prefix,
             wsy_strerror(rc));
  wsy_free(c);
}

void room_locks_node_gone(engine *e, const char *node) {
  if (!locks_releaser(e)) return;
  /* In the store, not in this node's replicas: a room not loaded here, or
   * whose lock events have not arrived yet, is released all the same. One
   * statement on the fetch connection, answered without blocking. */
  release_ctx *c = wsy_calloc(1, sizeof *c);
  c->e = e;
  snprintf(c->prefix, sizeof c->prefix, "%s.", node);
  int rc = store_release_locks_async(e->st, c->prefix, released, c);
  if (rc == WSY_INVAL) { /* a store without asynchronous releases */
    rc = store_release_locks_of(e->st, c->prefix, released_of_node, e);
    if (rc != 0) log_warn("the locks of node %s could not be released: %s (they expire)", node, wsy_strerror(rc));
    wsy_free(c);
  } else if (rc != 0) {
    released(c, rc, NULL);
  }
}

int room_lock_event(const uint8_t *payload, size_t len) {
  static const char pre[] = "{\"type\":\"lock\",";
  return len >= sizeof pre - 1 && !memcmp(payload, pre, sizeof pre - 1);
}

/* ---- the store's locks (cluster) ------------------------------------------- */

typedef struct load_ctx {
  engine *e;
  room *r;
  map fresh;
  uint64_t now, wall;
} load_ctx;

static int load_one(const char *item, const char *holder, const char *user, const char *device, uint64_t fence,
                    int64_t expires_ms, uint64_t version, void *ud) {
  load_ctx *c = ud;
  lock *l = wsy_calloc(1, sizeof *l);
  l->fence = fence;
  l->version = version;
  l->expires = c->now + (expires_ms > (int64_t)c->wall ? (uint64_t)expires_ms - c->wall : 0);
  if (holder) {
    size_t nn = strlen(c->e->node_id), hl = strlen(holder), ul = strlen(user), dl = strlen(device);
    sess *s = NULL;
    if (!strncmp(holder, c->e->node_id, nn) && holder[nn] == '.') s = map_get(&c->e->sessions, holder + nn + 1);
    if (s && !s->ended) {
      l->holder = s; /* still ours; one no longer a member is released below */
    } else {
      l->rid = wsy_malloc(hl + ul + dl + 3);
      memcpy(l->rid, holder, hl + 1);
      l->ruser = memcpy(l->rid + hl + 1, user, ul + 1);
      l->rdevice = memcpy(l->rid + hl + ul + 2, device, dl + 1);
    }
  }
  if (fence > c->e->last_fence) c->e->last_fence = fence;
  map_put(&c->fresh, item, l);
  return 0;
}

/* A lock the store says this node's session holds, when that session is
 * gone or no longer a member (its release was fenced out, or the node
 * restarted under the same id): released again. */
static int orphaned(engine *e, room *r, const lock *l) {
  size_t nn = strlen(e->node_id);
  if (l->rid) return !strncmp(l->rid, e->node_id, nn) && l->rid[nn] == '.';
  return l->holder && !room_membership(l->holder, r->name);
}

int room_locks_load(engine *e, room *r, uint64_t lockver) {
  load_ctx c = {.e = e, .r = r, .now = now_ms(e), .wall = (uint64_t)wall_ms()};
  map_init(&c.fresh);
  int rc = store_room_locks(e->st, r->name, load_one, &c);
  if (rc != 0) {
    room_locks_free(&(room){.locks = c.fresh});
    return rc;
  }
  room_locks_free(r);
  r->locks = c.fresh;
  r->lockver = lockver;
  r->locks_stale = 0;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&r->locks, &i, &k, &v);) r->nheld += lock_is_held(v);
  return 0;
}

void room_locks_orphans(engine *e, room *r) {
  const char *k;
  void *v;
  for (size_t i = 0; r->nheld && map_next(&r->locks, &i, &k, &v);) {
    lock *l = v;
    void *rf = map_get(&r->rerelease, k);
    if (orphaned(e, r, l)) {
      log_info("room %s: the lock on %s of a session no longer here is released", r->name, k);
      room_lock_release(e, r, k, l, "left");
    } else if (rf && l->holder && (uint64_t)(uintptr_t)rf == l->fence) {
      room_lock_release(e, r, k, l, "left"); /* its release was fenced out: made again */
    }
  }
  map_free(&r->rerelease);
  map_init(&r->rerelease);
}

int room_locks_reload(engine *e, room *r) {
  store_room_info info = {0};
  int rc = store_read_begin(e->st);
  if (rc != 0) return rc;
  rc = store_room_get(e->st, r->name, &info);
  int same = rc == 0 && info.exists && !strcmp(info.epoch, r->epoch);
  if (same) rc = room_locks_load(e, r, info.lockver);
  int end = store_read_end(e->st);
  if (rc == 0) rc = end;
  if (rc == 0 && !same) r->stale = 1; /* deleted or made again: the full reload tells */
  if (rc == 0 && same) room_locks_orphans(e, r);
  return rc;
}

/* ---- requests ------------------------------------------------------------ */

/* The common part of lock and unlock: a member with write permission
 * naming a valid item that no other session holds. 0 when it may go on,
 * 1 when it waits for the room to be read again (cluster), -1 refused. */
static int lock_target(sess *s, json_t *req, room **r, const char **item, lock **l) {
  member *m;
  if (!proto_room_member(s, req, &m, 1)) return -1;
  *r = m->r;
  *item = jstr(req, "item");
  if (!*item || !sync_item_id_valid(*item)) {
    sess_error(s, req, "bad_request", "item must be a valid item id", "item", NULL);
    return -1;
  }
  if (s->e->clustered) {
    /* Decided on the store's locks, read now, not on what the bus has told
     * this node so far: a lock released or taken through another node a
     * moment ago counts, as it would on one node. */
    if (!(*r)->fresh_pass) (*r)->locks_stale = 1;
    int a = commit_lock_admit(s, req, *r);
    if (a != 0) return a;
  }
  *l = map_get(&(*r)->locks, *item);
  if (*l && lock_is_held(*l) && (*l)->holder != s) {
    sess_error(s, req, "locked", "the item is locked by another session", NULL,
               json_pack("{s:s,s:o}", "item", *item, "lock", room_lock_json(s->e, *item, *l)));
    return -1;
  }
  return 0;
}

void room_handle_lock(sess *s, json_t *req) {
  engine *e = s->e;
  room *r;
  const char *item;
  lock *l;
  json_t *ttlj = json_object_get(req, "ttl");
  json_int_t ttl = json_is_integer(ttlj) ? json_integer_value(ttlj) : -1;
  if (lock_target(s, req, &r, &item, &l) != 0) return;
  if (ttl < 1000 || ttl > (json_int_t)e->cfg->max_lock_ttl_ms) {
    sess_error(s, req, "bad_request", "ttl must be an integer from 1000 to max_lock_ttl ms", "ttl", NULL);
    return;
  }
  if (!l) {
    l = wsy_calloc(1, sizeof *l);
    map_put(&r->locks, item, l);
  }
  if (!lock_is_held(l)) {
    /* A new grant: the fence grows past every earlier one, across restarts
     * too, since it starts from the wall clock in ms (in a cluster the
     * item's last fence is the store's, checked by the lock version). */
    uint64_t f = (uint64_t)wall_ms();
    uint64_t floor = (l->fence > e->last_fence ? l->fence : e->last_fence) + 1;
    l->fence = e->last_fence = f > floor ? f : floor;
    l->holder = s;
    r->nheld++;
  }
  l->expires = now_ms(e) + (uint64_t)ttl;
  json_t *g = proto_reply(req, "granted", r);
  json_object_set_new(g, "item", json_string(item));
  json_object_set_new(g, "fence", json_integer((json_int_t)l->fence));
  json_object_set_new(g, "ttl", json_integer(ttl));
  json_t *ev = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I}", "type", "lock", "room", r->name, "item", item,
                         "state", "held", "user", s->id.user, "device", s->device, "fence", (json_int_t)l->fence,
                         "ttl", (json_int_t)ttl);
  if (e->clustered) {
    commit_lock(e, r, s, req, item, l, g, ev);
    return;
  }
  sess_send_json(s, g);
  room_send(e, r, ev);
}

void room_handle_unlock(sess *s, json_t *req) {
  room *r;
  const char *item;
  lock *l;
  if (lock_target(s, req, &r, &item, &l) != 0) return;
  json_t *u = proto_reply(req, "unlocked", r);
  json_object_set_new(u, "item", json_string(item));
  if (!l || !l->holder) {
    sess_send_json(s, u);
    return;
  }
  lock_clear(l);
  r->nheld--;
  json_t *ev = free_event(r, item, l, "unlock");
  if (s->e->clustered) {
    commit_lock(s->e, r, s, req, item, l, u, ev);
    return;
  }
  sess_send_json(s, u);
  room_send(s->e, r, ev);
}
