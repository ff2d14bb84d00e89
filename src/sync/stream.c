/* stream.c -- large snapshots in parts (stream.h).
 *
 * One tick drives every stream: it sends at most one part per stream,
 * stops after STREAM_TICK_NS, and runs again on the next loop turn, after
 * the loop polled for I/O (an idle handle), or, when every stream waits
 * for its connection to drain, 1 ms later (a timer). */
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
  doc_frozen *snap; /* the frozen snapshot (owned) */
  size_t at;       /* its next item to send */
  unsigned part;
  /* A catch-up by ops instead (snap NULL): the last seq sent, the last
   * to send (joined.seq), and the join's id to echo if it is answered again.
   * ops is OPS_READ when each part is read from the store when it is sent,
   * OPS_HELD when every entry was read at once (held, from its entry hat). */
  int ops;
  uint64_t sent, upto;
  json_t *re;
  struct held_ops *held;
  size_t hat;
};

#define OPS_READ 1
#define OPS_HELD 2

/* Entries read at once (stream_catchup_from): their texts one after
 * another in w, entry i ending at end[i]. */
typedef struct held_ops {
  jw w;
  size_t *end;
  size_t n, cap;
  uint64_t first, last, upto;
} held_ops;

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

/* The next part into w: {items from st->at on, about STREAM_PART bytes
 * of them (at least one item)}. */
static void take_part(stream *st, jw *w) {
  jw_lit(w, "{");
  st->at = doc_frozen_write(st->snap, st->at, w, STREAM_PART);
  jw_lit(w, "}");
  st->part++;
}

/* A part's message is {"type":type,"room":...,key:<the part>,"more":...}:
 * part_begin writes up to the part, part_send the rest, and sends it. */
static void part_begin(jw *w, const char *type, const stream *st, const char *key) {
  jw_lit(w, "{\"type\":");
  jw_cstr(w, type);
  jw_lit(w, ",\"room\":");
  jw_cstr(w, st->room);
  jw_lit(w, ",");
  jw_cstr(w, key);
  jw_lit(w, ":");
}

static void part_send(const stream *st, jw *w, int more) {
  if (more) jw_lit(w, ",\"more\":true}");
  else jw_lit(w, ",\"more\":false}");
  net_chunk *frame = ws_frame_new(WS_OP_TEXT, w->p, w->len);
  sess_send(st->s, frame);
  net_chunk_unref(frame);
}

/* The next part of a snapshot: {"type":"snapshot","room","items","more"}. */
static int send_items_part(engine *e, stream *st) {
  jw *w = &e->frame_text;
  jw_reset(w);
  part_begin(w, "snapshot", st, "items");
  take_part(st, w);
  int more = st->at < st->snap->n;
  part_send(st, w, more);
  return more;
}

static void held_free(held_ops *h) {
  if (!h) return;
  jw_free(&h->w);
  wsy_free(h->end);
  wsy_free(h);
}

static int collect_held(uint64_t seq, const char *msg, size_t len, void *ud) {
  held_ops *h = ud;
  if (seq > h->upto) return PART_FULL;
  if (!len) return WSY_IO;
  if (h->n == h->cap) {
    h->cap = h->cap ? 2 * h->cap : 64;
    h->end = wsy_realloc(h->end, h->cap * sizeof *h->end);
  }
  jw_raw(&h->w, msg, len);
  h->end[h->n++] = h->w.len;
  if (!h->first) h->first = seq;
  h->last = seq;
  return 0;
}

/* Entries from i on as a JSON array text into w: about STREAM_PART bytes,
 * at least one. Returns the index after the last one written. */
static size_t held_part(const held_ops *h, size_t i, jw *w) {
  size_t from = i ? h->end[i - 1] : 0;
  jw_lit(w, "[");
  for (size_t k = i; k < h->n; k++) {
    size_t b = k ? h->end[k - 1] : 0;
    if (k > i) jw_lit(w, ",");
    jw_raw(w, h->w.p + b, h->end[k] - b);
    if (h->end[k] - from >= STREAM_PART) {
      jw_lit(w, "]");
      return k + 1;
    }
  }
  jw_lit(w, "]");
  return h->n;
}

static void stream_free(stream *st) {
  held_free(st->held);
  sess_unref(st->s);
  doc_frozen_free(st->snap);
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
  part_begin(&w, "catchup", st, "ops");
  jw part = JW_INIT;
  int rc = read_ops_part(e, st->room, st->sent, st->upto, &part, &last);
  if (rc == 0) {
    jw_raw(&w, part.p, part.len);
    st->sent = last;
    st->part++;
    part_send(st, &w, st->sent < st->upto);
  } else {
    log_warn("room %s: a catch-up in parts could not be read on (%s): the join is answered again", st->room,
             wsy_strerror(rc));
  }
  jw_free(&part);
  jw_free(&w);
  return rc;
}

/* The next part of a catch-up read at once. Returns whether more follow. */
static int send_held_part(engine *e, stream *st) {
  jw *w = &e->frame_text;
  jw_reset(w);
  part_begin(w, "catchup", st, "ops");
  st->hat = held_part(st->held, st->hat, w);
  st->part++;
  int more = st->hat < st->held->n;
  part_send(st, w, more);
  return more;
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

static void on_idle(uv_idle_t *h);
static void on_timer(uv_timer_t *t);

static void tick(engine *e) {
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
    if (st->ops == OPS_HELD) {
      more = send_held_part(e, st);
    } else if (st->ops) {
      if (send_ops_part(e, st) != 0) { /* answered again instead */
        *pp = st->next;
        rejoin(e, st);
        continue;
      }
      more = st->sent < st->upto;
    } else {
      more = send_items_part(e, st);
    }
    sent = 1;
    if (!more) {
      *pp = st->next;
      stream_free(st);
    } else {
      pp = &st->next;
    }
  }
  /* A part went: again on the next turn, after the loop polled for I/O
   * (an idle handle: a timer due now would run again before the poll).
   * Every stream waits for its connection: look again in 1 ms. */
  if (e->streams && sent) {
    uv_idle_start(&e->stream_idle, on_idle);
  } else {
    uv_idle_stop(&e->stream_idle);
    if (e->streams) uv_timer_start(&e->stream_timer, on_timer, 1, 0);
  }
}

static void on_idle(uv_idle_t *h) { tick(h->data); }
static void on_timer(uv_timer_t *t) { tick(t->data); }

/* st goes on from the next loop turn, for s (a reference) in room name. */
static void start(engine *e, stream *st, sess *s, const char *name) {
  st->s = s;
  s->refs++;
  st->room = wsy_strndup(name, strlen(name));
  st->next = e->streams;
  e->streams = st;
  uv_timer_stop(&e->stream_timer);
  uv_idle_start(&e->stream_idle, on_idle);
}

void stream_snapshot(engine *e, sess *s, const char *name, doc_frozen *snap, jw *first, int *more) {
  stream_cancel(e, s, name);
  *more = 0;
  if (!snap) {
    jw_lit(first, "{}");
    return;
  }
  stream *st = wsy_calloc(1, sizeof *st);
  st->snap = snap;
  take_part(st, first);
  *more = st->at < snap->n;
  if (!*more) {
    doc_frozen_free(snap);
    wsy_free(st);
    return;
  }
  start(e, st, s, name);
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
  st->ops = OPS_READ;
  st->sent = last;
  st->upto = seq;
  st->re = re ? json_incref(re) : NULL;
  start(e, st, s, name);
  *more = 1;
  return 0;
}

int stream_catchup_from(engine *e, sess *s, const char *name, store *src, uint64_t since, uint64_t seq, jw *first,
                        int *more) {
  *more = 0;
  if (since >= seq) {
    stream_cancel(e, s, name);
    jw_lit(first, "[]");
    return 0;
  }
  held_ops *h = wsy_calloc(1, sizeof *h);
  h->w = (jw)JW_INIT;
  h->upto = seq;
  int rc = store_history(src, name, since, (size_t)(seq - since), collect_held, h);
  if (rc == PART_FULL) rc = 0;
  if (rc != 0) {
    held_free(h);
    return rc;
  }
  stream_cancel(e, s, name);
  size_t next = held_part(h, 0, first);
  if (next >= h->n) {
    held_free(h);
    return 0;
  }
  stream *st = wsy_calloc(1, sizeof *st);
  st->ops = OPS_HELD;
  st->held = h;
  st->hat = next;
  start(e, st, s, name);
  *more = 1;
  return 0;
}

uint64_t stream_log_floor(engine *e, const char *name) {
  uint64_t floor = UINT64_MAX;
  for (stream *st = e->streams; st; st = st->next)
    if (st->ops == OPS_READ && st->sent + 1 < floor && !strcmp(st->room, name)) floor = st->sent + 1;
  return floor;
}

void stream_init(engine *e) {
  uv_timer_init(e->loop, &e->stream_timer);
  e->stream_timer.data = e;
  uv_unref((uv_handle_t *)&e->stream_timer);
  uv_idle_init(e->loop, &e->stream_idle);
  e->stream_idle.data = e;
  uv_unref((uv_handle_t *)&e->stream_idle);
}

void stream_deinit(engine *e) {
  while (e->streams) {
    stream *st = e->streams;
    e->streams = st->next;
    stream_free(st);
  }
  uv_close((uv_handle_t *)&e->stream_timer, NULL);
  uv_close((uv_handle_t *)&e->stream_idle, NULL);
}
