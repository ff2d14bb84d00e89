/* presence.c -- presence across nodes (cluster.h): the members other nodes
 * have in a room, as this node learned them from their presence events on
 * the bus, from their answers when this node loaded the room, and dropped
 * when their node stops sending heartbeats. */
#include <string.h>

#include "../common/log.h"
#include "api.h"
#include "cluster.h"
#include "hook.h"
#include "proto.h"
#include "room.h"
#include "sess.h"

/* One member of another node. */
typedef struct rmember {
  char *node;
  json_t *entry; /* {user, device, state, connected[, cursor]} as a joined list shows it */
} rmember;

/* How long a join to a room just loaded here waits for the other nodes'
 * answers at most (a node that does not answer in time is one that is
 * going away: its members would leave within the heartbeat TTL anyway). */
#define SETTLE_MS 200

/* An API request waiting for the other nodes' answers: a room's presence,
 * or a user's disconnect (user set; room then names the user). */
typedef struct pask {
  struct pask *next;
  conn *http;        /* NULL once the client went away */
  int user;
  char *room;
  json_t *body;      /* the reply; its "presence" collects the answers */
  unsigned left;
  uint64_t until;    /* loop ms */
} pask;

static void key_of(char *key, size_t n, const char *node, const char *user, const char *device) {
  snprintf(key, n, "%s\x1f%s\x1f%s", node, user, device);
}

static void rmember_free(rmember *x) {
  if (!x) return;
  wsy_free(x->node);
  json_decref(x->entry);
  wsy_free(x);
}

void presence_room_free(room *r) {
  join_hold_free(&r->settle_q);
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&r->remote, &i, &k, &v);) rmember_free(v);
  map_free(&r->remote);
}

void presence_remote_list(room *r, json_t *arr) {
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&r->remote, &i, &k, &v);) json_array_append(arr, ((rmember *)v)->entry);
}

/* Tells this node's members of r (but no one else) what happened to a member
 * of another node, as that node's own event would have. */
static void tell_local(engine *e, room *r, const char *event, json_t *entry) {
  json_t *msg = json_pack("{s:s,s:s,s:s,s:O,s:O}", "type", "presence", "room", r->name, "event", event, "user",
                          json_object_get(entry, "user"), "device", json_object_get(entry, "device"));
  if (strcmp(event, "leave") != 0) {
    json_object_set(msg, "state", json_object_get(entry, "state"));
    json_object_set(msg, "connected", json_object_get(entry, "connected"));
  }
  net_chunk *f = engine_frame(e, msg);
  json_decref(msg);
  bus_msg m = {.room = r->name, .frame = f};
  room_deliver(e, &m);
  net_chunk_unref(f);
}

/* Records (or drops, for leave) the member of node described by entry.
 * Returns 1 when it was not known before. */
static int remember(room *r, const char *node, const char *event, json_t *entry) {
  const char *user = json_string_value(json_object_get(entry, "user"));
  const char *device = json_string_value(json_object_get(entry, "device"));
  if (!user || !device) return 0;
  char key[400];
  key_of(key, sizeof key, node, user, device);
  rmember *x = map_get(&r->remote, key);
  if (!strcmp(event, "leave")) {
    if (x) {
      map_del(&r->remote, key); /* key is this function's buffer, not the map's */
      rmember_free(x);
    }
    return 0;
  }
  json_t *copy = json_pack("{s:s,s:s,s:O,s:O}", "user", user, "device", device, "state",
                           json_object_get(entry, "state") ? json_object_get(entry, "state") : json_object(),
                           "connected", json_object_get(entry, "connected") ? json_object_get(entry, "connected")
                                                                            : json_true());
  json_t *cur = json_object_get(entry, "cursor");
  if (json_is_integer(cur)) json_object_set(copy, "cursor", cur);
  if (x) {
    json_decref(x->entry);
    x->entry = copy;
    return 0;
  }
  x = wsy_calloc(1, sizeof *x);
  x->node = wsy_strndup(node, strlen(node));
  x->entry = copy;
  map_put(&r->remote, key, x);
  return 1;
}

/* Another node loaded name and asks for this node's members of it: the
 * answer is sent even when there are none, so that it can stop waiting. */
static void answer_query(engine *e, const char *name, const char *asker) {
  room *r = map_get(&e->rooms, name);
  if (r && r->pch) presence_batch_flush_room(e, r); /* what it hears of them on the bus follows this answer */
  r = map_get(&e->rooms, name);                     /* (sending it may have unloaded an idle r) */
  json_t *list = json_array();
  for (member *x = r ? r->members : NULL; x; x = x->next) json_array_append_new(list, room_presence_entry(x));
  json_t *body = json_pack("{s:s,s:o}", "room", name, "members", list);
  char *text = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  if (text && bus_send_node(e->bus, asker, "presence", text, strlen(text)) != 0)
    log_warn("presence: cannot answer node %s about room %s (bus down)", asker, name);
  free(text);
}

void presence_on_query(engine *e, const char *node, const uint8_t *body, size_t len) {
  char name[STORE_ROOM_MAX + 1];
  if (len == 0 || len > STORE_ROOM_MAX || memchr(body, 0, len)) return;
  memcpy(name, body, len);
  name[len] = '\0';
  answer_query(e, name, node);
}

/* The joins that waited for r's answers (and for its creation) go on, in
 * order, once neither is awaited. */
void presence_gate_open(engine *e, room *r) {
  if (r->settle_left || r->creating || !r->settle_q) return;
  join_hold *q = r->settle_q;
  r->settle_q = NULL;
  join_hold_run(e, r, q, 0);
}

static int pasks_settle(engine *e, int all);

static void on_settle_timer(uv_timer_t *t) {
  engine *e = t->data;
  uint64_t now = now_ms(e);
  int waiting = 0;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->rooms, &i, &k, &v);) {
    room *r = v;
    if (!r->settle_left) continue;
    if (now < r->settle_until) {
      waiting = 1;
      continue;
    }
    log_warn("presence: room %s: %u nodes did not answer within %d ms; joins go on without their members",
             r->name, r->settle_left, SETTLE_MS);
    r->settle_left = 0;
    presence_gate_open(e, r);
    i = 0; /* the room may have unloaded: walk again */
  }
  if (pasks_settle(e, 0)) waiting = 1;
  if (!waiting) uv_timer_stop(t);
}

int presence_settling(const room *r) { return r->settle_left > 0 || (r->creating && r->subscribed_cluster); }

void presence_hold_join(engine *e, room *r, sess *s, json_t *req) {
  (void)e;
  join_hold_add(&r->settle_q, s, req);
}

int presence_on_ephemeral(engine *e, room *r, const bus_msg *m) {
  (void)e;
  size_t len;
  const uint8_t *p = frame_payload(m->frame, &len);
  if (!m->origin) return 0;
  int pres = len > 18 && !memcmp(p, "{\"type\":\"presence\"", 18);
  int cursor = len > 16 && !memcmp(p, "{\"type\":\"cursor\"", 16);
  if (!pres && !cursor) return 0;
  json_t *v = json_loadb((const char *)p, len, 0, NULL);
  if (!v) return 0;
  if (pres) {
    const char *event = json_string_value(json_object_get(v, "event"));
    if (event) (void)remember(r, m->origin, event, v);
  } else {
    const char *user = json_string_value(json_object_get(v, "user"));
    const char *device = json_string_value(json_object_get(v, "device"));
    json_t *sq = json_object_get(v, "seq");
    if (user && device && json_is_integer(sq) && json_integer_value(sq) > 0)
      join_cursor_note(r, user, device, (uint64_t)json_integer_value(sq));
  }
  json_decref(v);
  return 0;
}

void presence_query(engine *e, room *r) {
  if (!e->clustered) return;
  const char *k;
  void *v;
  unsigned asked = 0;
  for (size_t i = 0; map_next(&e->nodes, &i, &k, &v);)
    if (bus_send_node(e->bus, k, "presq", r->name, strlen(r->name)) == 0) asked++;
  if (!asked) return;
  r->settle_left = asked;
  r->settle_until = now_ms(e) + SETTLE_MS;
  if (!uv_is_active((uv_handle_t *)&e->settle_timer)) uv_timer_start(&e->settle_timer, on_settle_timer, 20, 20);
}

static void pask_answer(pask *a) {
  if (a->http) {
    char *text = jw_dumps(a->body);
    httpd_deferred_respond(a->http, 200, text);
    free(text);
  }
  json_decref(a->body);
  wsy_free(a->room);
  wsy_free(a);
}

/* Answers the API requests whose nodes all answered (all: those due). */
static int pasks_settle(engine *e, int all) {
  uint64_t now = now_ms(e);
  int waiting = 0;
  for (pask **pp = &e->pasks; *pp;) {
    pask *a = *pp;
    if (a->left && !all && now < a->until) {
      waiting = 1;
      pp = &a->next;
      continue;
    }
    if (a->left) log_warn("%s: %u nodes did not answer about %s %s within %d ms", a->user ? "disconnect" : "presence",
                          a->left, a->user ? "user" : "room", a->room, SETTLE_MS);
    *pp = a->next;
    pask_answer(a);
  }
  return waiting;
}

void presence_api_flush(engine *e) { (void)pasks_settle(e, 1); }

static int api_ask(engine *e, conn *c, const char *kind, const char *name, json_t *body) {
  if (!e->clustered) return 0;
  const char *k;
  void *v;
  unsigned asked = 0;
  for (size_t i = 0; map_next(&e->nodes, &i, &k, &v);)
    if (bus_send_node(e->bus, k, kind, name, strlen(name)) == 0) asked++;
  if (!asked) return 0;
  pask *a = wsy_calloc(1, sizeof *a);
  a->user = !strcmp(kind, "udisc");
  a->room = wsy_strndup(name, strlen(name));
  a->body = body;
  a->left = asked;
  a->until = now_ms(e) + SETTLE_MS;
  httpd_defer(c, &a->http);
  a->next = e->pasks;
  e->pasks = a;
  if (!uv_is_active((uv_handle_t *)&e->settle_timer)) uv_timer_start(&e->settle_timer, on_settle_timer, 20, 20);
  return 1;
}

int presence_api_ask(engine *e, conn *c, const char *name, json_t *body) { return api_ask(e, c, "presq", name, body); }

int cluster_api_disconnect(engine *e, conn *c, const char *user, json_t *body) {
  return api_ask(e, c, "udisc", user, body);
}

void cluster_on_disconnect(engine *e, const char *node, const uint8_t *body, size_t len) {
  char user[512];
  if (len >= sizeof user) return;
  memcpy(user, body, len);
  user[len] = '\0';
  size_t n = api_disconnect_local(e, user);
  json_t *answer = json_pack("{s:s,s:I}", "user", user, "sessions", (json_int_t)n);
  char *text = jw_dumps(answer);
  json_decref(answer);
  if (text && bus_send_node(e->bus, node, "udisc.r", text, strlen(text)) != 0)
    log_warn("bus: could not answer node %s about user %s's disconnect", node, user);
  free(text);
}

void cluster_on_disconnected(engine *e, const uint8_t *body, size_t len) {
  json_t *v = json_loadb((const char *)body, len, 0, NULL);
  const char *user = json_string_value(json_object_get(v, "user"));
  json_t *n = json_object_get(v, "sessions");
  for (pask *a = user && json_is_integer(n) ? e->pasks : NULL; a; a = a->next) {
    if (!a->user || strcmp(a->room, user) != 0 || !a->left) continue;
    json_t *total = json_object_get(a->body, "sessions");
    json_integer_set(total, json_integer_value(total) + json_integer_value(n));
    a->left--;
    break; /* one answer per question asked */
  }
  json_decref(v);
  (void)pasks_settle(e, 0);
}

/* An answer about name: to the API requests asking about it. */
static void pasks_on_answer(engine *e, const char *name, json_t *list) {
  for (pask *a = e->pasks; a; a = a->next) {
    if (a->user || strcmp(a->room, name) != 0 || !a->left) continue;
    json_t *arr = json_object_get(a->body, "presence");
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x) if (json_is_object(x)) json_array_append(arr, x);
    a->left--;
    break; /* one answer per question asked */
  }
  (void)pasks_settle(e, 0);
}

void presence_on_answer(engine *e, const char *node, const uint8_t *body, size_t len) {
  json_t *v = json_loadb((const char *)body, len, 0, NULL);
  const char *name = json_string_value(json_object_get(v, "room"));
  if (name && e->pasks && json_is_array(json_object_get(v, "members"))) pasks_on_answer(e, name, json_object_get(v, "members"));
  room *r = name ? map_get(&e->rooms, name) : NULL;
  json_t *list = json_object_get(v, "members");
  if (r && json_is_array(list)) {
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x) if (remember(r, node, "join", x)) tell_local(e, r, "join", x);
  }
  json_decref(v);
  if (r && r->settle_left && --r->settle_left == 0) presence_gate_open(e, r);
}

void presence_node_gone(engine *e, const char *node) {
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->rooms, &i, &k, &v);) {
    room *r = v;
    for (size_t j = 0; map_next(&r->remote, &j, &k, &v);) {
      rmember *x = v;
      if (strcmp(x->node, node) != 0) continue;
      tell_local(e, r, "leave", x->entry);
      char key[400];
      snprintf(key, sizeof key, "%s", k);
      map_del(&r->remote, key);
      rmember_free(x);
      j = 0; /* the map changed: walk again from the start */
    }
  }
}
