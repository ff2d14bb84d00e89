/* stream.c -- large snapshots in parts (stream.h).
 *
 * One timer drives every stream: each tick sends at most one part per
 * stream, stops after STREAM_TICK_NS, and runs again on the next loop turn
 * (a zero timeout lets the loop poll for I/O first) or, when every stream
 * waits for its connection to drain, 1 ms later. */
#include "stream.h"

#include <string.h>

#include "../common/log.h"
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
  /* A catch-up by ops instead (items NULL): the last seq sent, the last
   * to send (joined.seq), and the join's id to echo if it is answered again. */
  int ops;
  uint64_t sent, upto;
  json_t *re;
};

/* The entries of one part as a JSON array text: from after, at least one,
 * until about STREAM_PART bytes or upto. */
typedef struct {
  jw *w;
  uint64_t first, last, upto;
  size_t n;
} ops_part;

#define PART_FULL 1 /* a callback's stop: not an error */

static int collect_part(uint64_t seq, const char *msg, size_t len, void *ud) {
  ops_part *p = ud;
  if (seq > p->upto) return PART_FULL;
  if (!len) return WSY_IO;
  jw_raw(p->w, p->n++ ? "," : "[", 1);
  jw_raw(p->w, msg, len);
  if (!p->first) p->first = seq;
  p->last = seq;
  return p->w->len >= STREAM_PART ? PART_FULL : 0;
}

/* Reads the part after `after` into w; 0 when it holds the entries from
 * after + 1 on (the log still has them), else an error or WSY_NOT_FOUND. */
static int read_ops_part(engine *e, const char *name, uint64_t after, uint64_t upto, jw *w, uint64_t *last) {
  ops_part p = {.w = w, .upto = upto};
  jw_reset(w);
  int rc = store_history(e->st, name, after, 0, collect_part, &p);
  if (rc == PART_FULL) rc = 0;
  if (rc == 0 && (!p.n || p.first != after + 1)) rc = WSY_NOT_FOUND; /* trimmed meanwhile */
  jw_raw(w, "]", 1);
  *last = p.last;
  return rc;
}

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
  json_decref(st->re);
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

/* The next part of a catch-up, read now: {"type":"catchup","room","ops","more"}. */
static int send_ops_part(engine *e, stream *st) {
  jw w = JW_INIT;
  uint64_t last = 0;
  jw_lit(&w, "{\"type\":\"catchup\",\"room\":");
  jw_cstr(&w, st->room);
  jw_lit(&w, ",\"ops\":");
  jw part = JW_INIT;
  int rc = read_ops_part(e, st->room, st->sent, st->upto, &part, &last);
  if (rc == 0) {
    jw_raw(&w, part.p, part.len);
    st->sent = last;
    st->part++;
    if (st->sent < st->upto) jw_lit(&w, ",\"more\":true}");
    else jw_lit(&w, ",\"more\":false}");
    net_chunk *frame = ws_frame_new(WS_OP_TEXT, w.p, w.len);
    sess_send(st->s, frame);
    net_chunk_unref(frame);
  } else {
    log_warn("room %s: a catch-up in parts could not be read on (%s): the join is answered again", st->room,
             wsy_strerror(rc));
  }
  jw_free(&part);
  jw_free(&w);
  return rc;
}

/* The log lost what a catch-up still had to send (or could not be read):
 * the join is answered again, with a snapshot, echoing its id. */
static void rejoin(engine *e, stream *st) {
  (void)e;
  sess *s = st->s;
  json_t *req = json_pack("{s:s,s:s}", "type", "join", "room", st->room);
  if (st->re) json_object_set(req, "id", st->re);
  s->refs++;
  stream_free(st);
  if (!s->ended && room_membership(s, json_string_value(json_object_get(req, "room")))) join_handle_asked(s, req);
  json_decref(req);
  sess_unref(s);
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
    int more;
    if (st->ops) {
      if (send_ops_part(e, st) != 0) { /* answered again instead */
        *pp = st->next;
        rejoin(e, st);
        continue;
      }
      more = st->sent < st->upto;
    } else {
      json_t *items = take_part(st);
      more = st->it != NULL;
      sess_send_json(st->s, json_pack("{s:s,s:s,s:o,s:b}", "type", "snapshot", "room", st->room, "items", items,
                                      "more", more));
    }
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

/* st goes on from the next loop turn, for s (a reference) in room name. */
static void start(engine *e, stream *st, sess *s, const char *name) {
  st->s = s;
  s->refs++;
  st->room = wsy_strndup(name, strlen(name));
  st->next = e->streams;
  e->streams = st;
  uv_timer_start(&e->stream_timer, on_tick, 0, 0);
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
  start(e, st, s, name);
  return first;
}

int stream_catchup(engine *e, sess *s, const char *name, json_t *re, uint64_t since, uint64_t seq, jw *first,
                   int *more) {
  stream_cancel(e, s, name);
  *more = 0;
  uint64_t last = since;
  int rc = since < seq ? read_ops_part(e, name, since, seq, first, &last) : 0;
  if (since >= seq) jw_lit(first, "[]");
  if (rc != 0 || last >= seq) return rc;
  stream *st = wsy_calloc(1, sizeof *st);
  st->ops = 1;
  st->sent = last;
  st->upto = seq;
  st->re = re ? json_incref(re) : NULL;
  start(e, st, s, name);
  *more = 1;
  return 0;
}

uint64_t stream_log_floor(engine *e, const char *name) {
  uint64_t floor = UINT64_MAX;
  for (stream *st = e->streams; st; st = st->next)
    if (st->ops && st->sent + 1 < floor && !strcmp(st->room, name)) floor = st->sent + 1;
  return floor;
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
