/* stream.c -- large snapshots in parts (stream.h).
 *
 * One timer drives every stream: each tick sends at most one part per
 * stream, stops after STREAM_TICK_NS, and runs again on the next loop turn
 * (a zero timeout lets the loop poll for I/O first) or, when every stream
 * waits for its connection to drain, 1 ms later. */
#include "stream.h"

#include <string.h>

#include "proto.h"
#include "room.h"
#include "sess.h"

#define STREAM_TICK_NS 2000000 /* 2 ms of parts per tick, then other work */

struct stream {
  stream *next;
  sess *s;      /* a reference */
  char *room;
  json_t *items; /* the frozen snapshot's items (owned) */
  void *it;     /* the next item, NULL when all were sent */
  unsigned part;
};

/* The next part: items from st->it on, up to about STREAM_PART bytes
 * (at least one item). */
static json_t *take_part(stream *st) {
  json_t *part = json_object();
  size_t bytes = 0;
  while (st->it && (bytes < STREAM_PART || json_object_size(part) == 0)) {
    const char *k = json_object_iter_key(st->it);
    json_t *v = json_object_iter_value(st->it);
    bytes += strlen(k) + 4 + sync_encoded_size(v);
    json_object_set(part, k, v);
    st->it = json_object_iter_next(st->items, st->it);
  }
  st->part++;
  return part;
}

static void stream_free(stream *st) {
  sess_unref(st->s);
  json_decref(st->items);
  wsy_free(st->room);
  wsy_free(st);
}

void stream_cancel(engine *e, sess *s, const char *name) {
  for (stream **pp = &e->streams; *pp;) {
    stream *st = *pp;
    if (st->s == s && !strcmp(st->room, name)) {
      *pp = st->next;
      stream_free(st);
    } else {
      pp = &st->next;
    }
  }
}

/* Whether st's connection can take a part now. */
static int ready(const stream *st) {
  /* HTTP: one part at a time, each handed to a downstream (an SSE stream
   * or a poll) before the next, so the outbox never holds many of them. */
  if (st->s->http) return st->s->hx->dn_upto + 1 >= st->s->ob_next;
  if (!st->s->w) return 0;   /* detached: wait for a resume (or the end) */
  return net_conn_queued(ws_conn_net(st->s->w)) <= STREAM_QUEUE;
}

static void on_tick(uv_timer_t *t) {
  engine *e = t->data;
  uint64_t t0 = uv_hrtime();
  int sent = 0;
  for (stream **pp = &e->streams; *pp && uv_hrtime() - t0 < STREAM_TICK_NS;) {
    stream *st = *pp;
    if (st->s->ended || !room_membership(st->s, st->room)) {
      *pp = st->next;
      stream_free(st);
      continue;
    }
    if (!ready(st)) {
      pp = &st->next;
      continue;
    }
    json_t *items = take_part(st);
    int more = st->it != NULL;
    sess_send_json(st->s, json_pack("{s:s,s:s,s:o,s:b}", "type", "snapshot", "room", st->room, "items", items,
                                    "more", more));
    sent = 1;
    if (!more) {
      *pp = st->next;
      stream_free(st);
    } else {
      pp = &st->next;
    }
  }
  if (e->streams) uv_timer_start(&e->stream_timer, on_tick, sent ? 0 : 1, 0);
}

json_t *stream_snapshot(engine *e, sess *s, const char *name, json_t *snap, int *more) {
  stream_cancel(e, s, name);
  stream *st = wsy_calloc(1, sizeof *st);
  st->items = json_incref(json_object_get(snap, "items"));
  json_decref(snap);
  if (!st->items) st->items = json_object();
  st->it = json_object_iter(st->items);
  json_t *first = take_part(st);
  *more = st->it != NULL;
  if (!*more) {
    json_decref(st->items);
    wsy_free(st);
    return first;
  }
  st->s = s;
  s->refs++;
  st->room = wsy_strndup(name, strlen(name));
  st->next = e->streams;
  e->streams = st;
  uv_timer_start(&e->stream_timer, on_tick, 0, 0);
  return first;
}

void stream_init(engine *e) {
  uv_timer_init(e->loop, &e->stream_timer);
  e->stream_timer.data = e;
  uv_unref((uv_handle_t *)&e->stream_timer);
}

void stream_deinit(engine *e) {
  while (e->streams) {
    stream *st = e->streams;
    e->streams = st->next;
    stream_free(st);
  }
  uv_close((uv_handle_t *)&e->stream_timer, NULL);
}
