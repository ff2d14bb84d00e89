/* api_read.c -- the backend API's reads (api.h): GET /v1/rooms/{room} (the
 * snapshot), /history, /cursors and /presence. On one node they read the
 * store in one read snapshot; in a cluster each is one fetch of the room,
 * the request deferred until it comes, so the loop never waits for
 * PostgreSQL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "api.h"
#include "cluster.h"
#include "kind.h"
#include "proto.h"
#include "room.h"

static int collect_all_cursors(const char *user, const char *device, uint64_t seq, int64_t updated, void *ud) {
  json_array_append_new(ud, json_pack("{s:s,s:s,s:I,s:I}", "user", user, "device", device, "seq",
                                      (json_int_t)seq, "updated", (json_int_t)updated));
  return 0;
}

/* A backend read (GET /v1/rooms/{room}[/history|/cursors|/presence], or
 * GET /v1/rooms: what "list"): what it asks, taken from its request while
 * that is valid. */
typedef struct read_q {
  char name[STORE_ROOM_MAX + 1]; /* "list": the name the rooms come after */
  char what[16];
  uint64_t from, to, limit;
  int to_given, only;
  char user[80];
} read_q;

static json_t *error_body(const char *code, const char *message) {
  return json_pack("{s:s,s:s,s:s}", "type", "error", "code", code, "message", message);
}

static int collect_room(const char *name, const store_room_info *info, void *ud) {
  json_array_append_new(ud, json_pack("{s:s,s:s,s:I,s:I,s:I}", "room", name, "epoch", info->epoch, "seq",
                                      (json_int_t)info->seq, "first", (json_int_t)info->min_seq, "created",
                                      (json_int_t)info->created_ms));
  return 0;
}

/* GET /v1/rooms from st: {rooms, more}. */
static int list_from(store *st, const read_q *q, json_t **out) {
  json_t *arr = json_array();
  int rc = store_rooms_list(st, q->name, (size_t)q->limit + 1, collect_room, arr);
  if (rc != 0) {
    json_decref(arr);
    *out = error_body("internal", "the rooms could not be read");
    return 500;
  }
  int more = json_array_size(arr) > q->limit;
  if (more) json_array_remove(arr, (size_t)q->limit);
  *out = json_pack("{s:o,s:b}", "rooms", arr, "more", more);
  return 200;
}

/* The answer to q read from st (the store, in one read snapshot; or a
 * fetch's snapshot): the HTTP status, and its body in *out. */
static int read_from(engine *e, store *st, const read_q *q, json_t **out) {
  const char *name = q->name, *what = q->what;
  if (!strcmp(what, "list")) return list_from(st, q, out);
  store_room_info info = {0};
  int rc = store_read_begin(st);
  if (rc != 0) {
    *out = error_body("internal", "the room could not be read");
    return 500;
  }
  rc = store_room_get(st, name, &info);
  if (rc == 0 && !info.exists && !(strcmp(what, "presence") == 0 && room_ready(map_get(&e->rooms, name)))) {
    (void)store_read_end(st);
    *out = error_body("not_found", "no such room");
    return 404;
  }
  json_t *b = json_pack("{s:s}", "room", name);
  if (info.exists) {
    json_object_set_new(b, "epoch", json_string(info.epoch));
    json_object_set_new(b, "seq", json_integer((json_int_t)info.seq));
  }
  if (rc == 0 && !strcmp(what, "")) {
    doc d;
    doc_init(&d);
    rc = doc_room_read(st, name, &d);
    json_t *snap = doc_snapshot(&d);
    doc_free(&d);
    json_object_set(b, "items", json_object_get(snap, "items"));
    json_decref(snap);
  } else if (rc == 0 && !strcmp(what, "history")) {
    uint64_t from = q->from, to = q->to_given ? q->to : info.seq, limit = q->limit;
    json_t *arr = json_array();
    if (to >= from) rc = store_history(st, name, from - 1, (size_t)limit + 1, join_collect_op, arr);
    /* drop entries beyond `to`, and the one fetched to learn about `more` */
    size_t n = json_array_size(arr), keep = 0;
    for (; keep < n; keep++) {
      json_int_t sq = json_integer_value(json_object_get(json_array_get(arr, keep), "seq"));
      if ((uint64_t)sq > to || keep == limit) break;
    }
    int more = keep < n && (uint64_t)json_integer_value(json_object_get(json_array_get(arr, keep), "seq")) <= to;
    while (json_array_size(arr) > keep) json_array_remove(arr, keep);
    json_object_set_new(b, "first", json_integer((json_int_t)info.min_seq));
    json_object_set_new(b, "entries", arr);
    json_object_set_new(b, "more", json_boolean(more));
  } else if (rc == 0 && !strcmp(what, "cursors")) {
    json_t *arr = json_array();
    rc = store_cursors(st, name, collect_all_cursors, arr);
    if (q->only) {
      for (size_t i = json_array_size(arr); i-- > 0;)
        if (strcmp(json_string_value(json_object_get(json_array_get(arr, i), "user")), q->user) != 0)
          json_array_remove(arr, i);
    }
    json_object_set_new(b, "cursors", arr);
  } else if (rc == 0 && !strcmp(what, "presence")) {
    json_t *arr = json_array();
    room *rm = room_ready(map_get(&e->rooms, name));
    for (member *m = rm ? rm->members : NULL; m; m = m->next) json_array_append_new(arr, room_presence_entry(m));
    if (rm) presence_remote_list(rm, arr); /* other nodes' members of a room loaded here */
    json_object_set_new(b, "presence", arr);
  } else if (rc == 0) {
    (void)store_read_end(st);
    json_decref(b);
    *out = error_body("not_found", "no such resource");
    return 404;
  }
  int end = store_read_end(st);
  if (rc == 0) rc = end;
  if (rc != 0) {
    json_decref(b);
    *out = error_body("internal", "the room could not be read");
    return 500;
  }
  *out = b;
  return 200;
}

/* Sends a read's answer (body taken), deferred or not. A room not loaded
 * here: in a cluster, the other nodes are asked for their members first
 * (presence is cluster-wide), answered when they have. */
static void read_answer(engine *e, conn *c, const read_q *q, int status, json_t *b, int deferred) {
  if (status == 200 && !strcmp(q->what, "presence") && !room_ready(map_get(&e->rooms, q->name)) &&
      presence_api_ask(e, c, q->name, b))
    return;
  char *text = jw_dumps(b);
  json_decref(b);
  if (deferred) httpd_deferred_respond(c, status, text);
  else httpd_json(c, status, "", text);
  free(text);
}

/* In a cluster a read does not wait on the loop: it is one fetch of the
 * room (its row, with its state or the part of its log asked for), and the
 * request is answered when it comes (httpd_defer). */
typedef struct read_wait read_wait;
struct read_wait {
  read_wait *next;
  engine *e;
  conn *c; /* NULL once the connection is gone */
  char *line;
  read_q q;
};

static void read_wait_end(read_wait *w, int status) {
  engine *e = w->e;
  for (read_wait **pp = &e->api_reads; *pp; pp = &(*pp)->next)
    if (*pp == w) {
      *pp = w->next;
      break;
    }
  if (w->line) log_info("api %s -> %d%s", w->line, status, w->c ? "" : " (client gone)");
  wsy_free(w->line);
  wsy_free(w);
}

/* A DELETE's row read: a room the store does not have is 404, one it has
 * is deleted (api.c), its answer logged when its commit is. */
static void delete_checked(read_wait *w, int rc, store *snap) {
  store_room_info info = {0};
  if (rc == 0) rc = store_room_get(snap, w->q.name, &info);
  int status = rc != 0 ? 500 : !info.exists ? 404 : 0;
  if (status == 0 && w->c) {
    api_delete_go(w->e, w->c, w->q.name, w->line);
    wsy_free(w->line);
    w->line = NULL;
  } else if (status != 0 && w->c) {
    json_t *b = status == 404 ? error_body("not_found", "no such room") : error_body("internal", "the room could not be read");
    read_answer(w->e, w->c, &w->q, status, b, 1);
  }
  read_wait_end(w, status ? status : 499); /* 499: the client went away before the room was found */
}

static void on_read(void *ud, int rc, store *snap) {
  read_wait *w = ud;
  if (!strcmp(w->q.what, "delete")) {
    delete_checked(w, rc, snap);
    return;
  }
  json_t *b;
  int status = 500;
  if (rc != 0) b = error_body("internal", "the room could not be read");
  else status = read_from(w->e, snap, &w->q, &b);
  if (w->c) read_answer(w->e, w->c, &w->q, status, b, 1);
  else json_decref(b);
  read_wait_end(w, status);
}

/* 1 when q is being read without blocking (or was answered already). */
static int read_later(engine *e, conn *c, const read_q *q) {
  read_wait *w = wsy_calloc(1, sizeof *w);
  w->e = e;
  w->q = *q;
  int rc;
  if (!strcmp(q->what, "list"))
    rc = store_fetch_list(e->st, q->name, (size_t)q->limit + 1, on_read, w);
  else if (!strcmp(q->what, "delete"))
    rc = store_fetch(e->st, q->name, 0, 0, on_read, w);
  else if (!strcmp(q->what, "history"))
    rc = store_fetch_log(e->st, q->name, q->from - 1, (size_t)q->limit + 1, on_read, w);
  else
    rc = store_fetch(e->st, q->name, strcmp(q->what, "presence") ? STORE_FETCH_STATE : 0, 0, on_read, w);
  if (rc == WSY_INVAL) { /* a store without asynchronous reads: read at once */
    wsy_free(w);
    return 0;
  }
  if (rc != 0) {
    wsy_free(w);
    api_error(c, 500, "internal", "the room could not be read");
    return 1;
  }
  if (e->api_line) w->line = wsy_strndup(e->api_line, strlen(e->api_line));
  w->next = e->api_reads;
  e->api_reads = w;
  httpd_defer(c, &w->c);
  return 1;
}

void api_reads_flush(engine *e) {
  while (e->api_reads) {
    read_wait *w = e->api_reads;
    if (w->c) httpd_deferred_respond(w->c, 503, "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"server shutting down\"}");
    read_wait_end(w, 503);
  }
}

void api_delete_check(engine *e, conn *c, const char *name) {
  read_q q = {0};
  snprintf(q.name, sizeof q.name, "%s", name);
  snprintf(q.what, sizeof q.what, "delete");
  if (!read_later(e, c, &q)) api_error(c, 500, "internal", "the room could not be read");
}

void api_rooms_list_read(engine *e, conn *c, const char *after, size_t limit) {
  read_q q = {.limit = limit};
  snprintf(q.name, sizeof q.name, "%s", after);
  snprintf(q.what, sizeof q.what, "list");
  if (e->clustered && read_later(e, c, &q)) return;
  json_t *b;
  int status = read_from(e, e->st, &q, &b);
  read_answer(e, c, &q, status, b, 0);
}

void api_backend_read(engine *e, conn *c, httpd_req *r, const char *name, const char *what) {
  read_q q = {.from = 1, .limit = 100};
  snprintf(q.name, sizeof q.name, "%s", name);
  snprintf(q.what, sizeof q.what, "%s", what);
  if (!strcmp(what, "history")) {
    int to;
    if (api_query_uint(c, r, "from", &q.from) < 0 || (to = api_query_uint(c, r, "to", &q.to)) < 0 ||
        api_query_uint(c, r, "limit", &q.limit) < 0)
      return;
    q.to_given = to > 0;
    if (q.limit == 0 || q.limit > 1000) q.limit = q.limit ? 1000 : 1;
    if (q.from == 0) q.from = 1;
  } else if (!strcmp(what, "cursors")) {
    q.only = httpd_req_query_param(r, "user", q.user, sizeof q.user) == 0;
  }
  if (e->clustered && read_later(e, c, &q)) return;
  json_t *b;
  int status = read_from(e, e->st, &q, &b);
  read_answer(e, c, &q, status, b, 0);
}

