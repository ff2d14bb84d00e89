/* forward.c -- HTTP fallback requests of sessions of another node
 * (forward.h). B is the node a client's request reached, A the node its
 * session lives on. */
#include "forward.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "fallback.h"

/* ---- the wire (pure) ------------------------------------------------------ */

#define FWD_VERSION 1
#define FWD_HEAD 12 /* version, op, id (8), status (2) */

static void put16(uint8_t *p, size_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

int fwd_encode(const fwd_msg *m, buf *out) {
  if (m->ctype_len > 0xffff || m->hdrs_len > 0xffff || m->status > 0xffff || m->op > 0xff) return WSY_INVAL;
  uint8_t h[FWD_HEAD + 2];
  h[0] = FWD_VERSION;
  h[1] = (uint8_t)m->op;
  for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)(m->id >> (56 - 8 * i));
  put16(h + 10, m->status);
  put16(h + 12, m->ctype_len);
  int rc = buf_append(out, h, sizeof h);
  if (!rc && m->ctype_len) rc = buf_append(out, m->ctype, m->ctype_len);
  put16(h, m->hdrs_len);
  if (!rc) rc = buf_append(out, h, 2);
  if (!rc && m->hdrs_len) rc = buf_append(out, m->hdrs, m->hdrs_len);
  if (!rc && m->body_len) rc = buf_append(out, m->body, m->body_len);
  return rc;
}

int fwd_decode(const uint8_t *p, size_t len, fwd_msg *m) {
  memset(m, 0, sizeof *m);
  if (len < FWD_HEAD + 4 || p[0] != FWD_VERSION || p[1] < FWD_REQ || p[1] > FWD_END) return WSY_INVAL;
  m->op = p[1];
  for (int i = 0; i < 8; i++) m->id = m->id << 8 | p[2 + i];
  m->status = (unsigned)p[10] << 8 | p[11];
  size_t at = FWD_HEAD;
  m->ctype_len = (size_t)p[at] << 8 | p[at + 1];
  at += 2;
  if (len - at < m->ctype_len + 2) return WSY_INVAL;
  m->ctype = (const char *)p + at;
  at += m->ctype_len;
  m->hdrs_len = (size_t)p[at] << 8 | p[at + 1];
  at += 2;
  if (len - at < m->hdrs_len) return WSY_INVAL;
  m->hdrs = (const char *)p + at;
  at += m->hdrs_len;
  m->body = p + at;
  m->body_len = len - at;
  return 0;
}

const char *fwd_kind(unsigned op) {
  static const char *const k[] = {"fb", "fb.req", "fb.cancel", "fb.answer", "fb.open", "fb.data", "fb.end"};
  return op < WSY_ARRAY_LEN(k) ? k[op] : "fb";
}

/* The headers fallback.c reads; nothing else of the client's request matters on A. */
static const char *const fwd_headers[] = {"Origin", "Content-Type", "Wsync-Session", "Last-Event-ID"};

int fwd_request_text(httpd_req *r, buf *out) {
  size_t bl;
  const uint8_t *body = httpd_req_body(r, &bl);
  char line[2048];
  int n = snprintf(line, sizeof line, "%s %s HTTP/1.1\r\nHost: wsync\r\n", httpd_req_method(r), httpd_req_url(r));
  if (n < 0 || (size_t)n >= sizeof line) return WSY_INVAL;
  int rc = buf_append(out, line, (size_t)n);
  for (size_t i = 0; !rc && i < WSY_ARRAY_LEN(fwd_headers); i++) {
    size_t vl;
    const char *v = httpd_req_header(r, fwd_headers[i], &vl);
    if (!v) continue;
    rc = buf_append(out, fwd_headers[i], strlen(fwd_headers[i]));
    if (!rc) rc = buf_append(out, ": ", 2);
    if (!rc) rc = buf_append(out, v, vl);
    if (!rc) rc = buf_append(out, "\r\n", 2);
  }
  n = snprintf(line, sizeof line, "Content-Length: %zu\r\n\r\n", bl);
  if (!rc) rc = buf_append(out, line, (size_t)n);
  if (!rc && bl) rc = buf_append(out, body, bl);
  return rc;
}

/* ---- the state of an engine ------------------------------------------------ */

typedef struct fwd_out { /* B: a request sent to another node */
  char key[24];          /* the id in decimal: e->fwd->out's key */
  uint64_t id;
  char node[64];
  conn *c;               /* the client's connection; NULL once it is freed */
  int streaming, poll;
  uint64_t poll_last;    /* a poll's last, for the answer B gives at its shutdown */
  uint64_t deadline;     /* loop ms: answer, or the stream's next bytes, by then */
  char *cors;            /* CORS header lines of B's own answers (often "") */
} fwd_out;

struct fwd_in {          /* A: a request of another node, run here */
  char key[96];          /* "node/id": e->fwd->in's key */
  uint64_t id;
  char from[64];
  engine *e;
  fwd_in **slot;         /* the session's downstream, while waiting or streaming */
  int done, serving;
};

typedef struct fwd_count {
  size_t out, in;
} fwd_count;

typedef struct fwd_state {
  map out, in;  /* borrowed keys (in the objects) */
  map counts;   /* node -> fwd_count */
  map gone;     /* node -> (non-NULL): reported gone by the bus, not back since */
  map up;       /* node -> (non-NULL): heard from, not gone since */
  uint64_t next_id;
} fwd_state;

static fwd_state *state_of(engine *e) {
  if (!e->fwd) {
    e->fwd = wsy_calloc(1, sizeof *e->fwd);
    map_init_borrowed(&e->fwd->out);
    map_init_borrowed(&e->fwd->in);
    map_init(&e->fwd->counts);
    map_init(&e->fwd->gone);
    map_init(&e->fwd->up);
  }
  return e->fwd;
}

static fwd_count *count_of(fwd_state *st, const char *node) {
  fwd_count *n = map_get(&st->counts, node);
  if (!n) {
    n = wsy_calloc(1, sizeof *n);
    map_put(&st->counts, node, n);
  }
  return n;
}

static void count_drop(fwd_state *st, const char *node, int out) {
  fwd_count *n = map_get(&st->counts, node);
  if (!n) return;
  if (out) n->out--;
  else n->in--;
  if (!n->out && !n->in) {
    map_del(&st->counts, node);
    wsy_free(n);
  }
}

/* Frees node's entry when nothing is counted there. */
static void count_gc(fwd_state *st, const char *node) {
  fwd_count *n = map_get(&st->counts, node);
  if (n && !n->out && !n->in) {
    map_del(&st->counts, node);
    wsy_free(n);
  }
}

static int send_msg(engine *e, const char *node, const fwd_msg *m) {
  buf b;
  buf_init(&b, SIZE_MAX);
  int rc = fwd_encode(m, &b);
  if (!rc) rc = bus_send_node(e->bus, node, fwd_kind(m->op), b.data, b.len);
  buf_free(&b);
  return rc;
}

static void error_text(char *out, size_t n, const char *code, const char *message) {
  json_t *j = json_pack("{s:s,s:s,s:s}", "type", "error", "code", code, "message", message);
  char *t = jw_dumps(j);
  json_decref(j);
  snprintf(out, n, "%s", t);
  free(t);
}

/* ---- B: requests sent to the session's node ------------------------------- */

static void out_done(engine *e, fwd_out *f) {
  map_del(&e->fwd->out, f->key);
  count_drop(e->fwd, f->node, 1);
  wsy_free(f->cors);
  wsy_free(f);
}

/* f fails (node silent, gone, bus down): 503, or the stream ends (the
 * client reconnects, as after a node failure); A is told. At this node's
 * shutdown the client learns close 1001, as from a session of this node. */
static void out_fail(engine *e, fwd_out *f, const char *why) {
  if (f->c && f->streaming) {
    if (e->shutting_down) {
      net_chunk *ch = fb_close_event(1001, why);
      (void)net_conn_send_force(f->c, ch);
      net_chunk_unref(ch);
    }
    httpd_stream_end(f->c, 0);
  } else if (f->c && f->poll && e->shutting_down) {
    char h[800], t[256];
    snprintf(h, sizeof h, "Cache-Control: no-store\r\n%s", f->cors);
    snprintf(t, sizeof t, "{\"messages\":[],\"last\":%" PRIu64 ",\"close\":{\"code\":1001,\"reason\":\"%s\"}}",
             f->poll_last, why);
    httpd_deferred_answer(f->c, 200, "application/json", h, t, strlen(t));
  } else if (f->c) {
    char h[800], t[256];
    snprintf(h, sizeof h, "Cache-Control: no-store\r\n%s", f->cors);
    error_text(t, sizeof t, "internal", why);
    httpd_deferred_answer(f->c, 503, "application/json", h, t, strlen(t));
  }
  fwd_msg m = {.id = f->id, .op = FWD_CANCEL};
  (void)send_msg(e, f->node, &m);
  out_done(e, f);
}

void fwd_request(engine *e, conn *c, httpd_req *r, const char *node, const char *cors) {
  fwd_state *st = state_of(e);
  fwd_count *n = count_of(st, node);
  char h[800], t[256];
  snprintf(h, sizeof h, "Cache-Control: no-store\r\n%s", cors);
  if (map_get(&st->gone, node)) {
    count_gc(st, node);
    error_text(t, sizeof t, "internal", "the session's node is gone; say hello again");
    httpd_respond(c, 503, "application/json", h, t, strlen(t));
    return;
  }
  if (n->out >= FWD_MAX_PER_NODE(e) || map_len(&st->out) >= FWD_MAX_OUT(e)) {
    count_gc(st, node);
    error_text(t, sizeof t, "internal", "too many requests in flight to the session's node; try again");
    httpd_respond(c, 503, "application/json", h, t, strlen(t));
    return;
  }
  buf req;
  buf_init(&req, SIZE_MAX);
  fwd_msg m = {.id = ++st->next_id, .op = FWD_REQ};
  int rc = fwd_request_text(r, &req);
  m.body = req.data;
  m.body_len = req.len;
  if (!rc) rc = send_msg(e, node, &m);
  buf_free(&req);
  if (rc) {
    count_gc(st, node);
    error_text(t, sizeof t, "internal",
               rc == WSY_AGAIN ? "the bus between nodes is down; try again" : "the session's node cannot be reached");
    httpd_respond(c, 503, "application/json", h, t, strlen(t));
    return;
  }
  fwd_out *f = wsy_calloc(1, sizeof *f);
  f->id = m.id;
  snprintf(f->key, sizeof f->key, "%" PRIu64, f->id);
  snprintf(f->node, sizeof f->node, "%s", node);
  size_t cl = strlen(cors) + 1;
  f->cors = memcpy(wsy_malloc(cl), cors, cl);
  f->poll = !strcmp(strrchr(httpd_req_path(r), '/'), "/poll");
  char lastv[24];
  if (f->poll && httpd_req_query_param(r, "last", lastv, sizeof lastv) == 0 && lastv[0] != '-') {
    char *end;
    unsigned long long l = strtoull(lastv, &end, 10);
    if (!*end) f->poll_last = l;
  }
  f->deadline = now_ms(e) + FWD_ANSWER_MS + (f->poll ? e->cfg->poll_timeout_ms : 0);
  n->out++;
  map_put(&st->out, f->key, f);
  httpd_defer(c, &f->c);
}

/* What A sent back about request m.id. */
static void out_reply(engine *e, const char *from, const fwd_msg *m) {
  char key[24];
  snprintf(key, sizeof key, "%" PRIu64, m->id);
  fwd_out *f = map_get(&e->fwd->out, key);
  if (!f || strcmp(f->node, from) != 0) return; /* answered already (timeout, client gone) */
  char ct[128], h[2048];
  snprintf(ct, sizeof ct, "%.*s", (int)m->ctype_len, m->ctype);
  snprintf(h, sizeof h, "%.*s", (int)m->hdrs_len, m->hdrs);
  if (!f->c) { /* the client went away meanwhile */
    if (m->op != FWD_ANSWER && m->op != FWD_END) {
      fwd_msg cm = {.id = f->id, .op = FWD_CANCEL};
      (void)send_msg(e, f->node, &cm);
    }
    out_done(e, f);
    return;
  }
  switch (m->op) {
  case FWD_ANSWER:
    if (f->streaming) httpd_stream_end(f->c, 1);
    else httpd_deferred_answer(f->c, (int)m->status, ct[0] ? ct : NULL, h, m->body, m->body_len);
    out_done(e, f);
    return;
  case FWD_OPEN:
    if (f->streaming) return;
    httpd_stream_begin(f->c, &f->c, ct[0] ? ct : "text/event-stream", h);
    f->streaming = 1;
    break;
  case FWD_DATA: {
    if (!f->streaming || !m->body_len) break;
    net_chunk *ch = net_chunk_new(m->body_len);
    memcpy(ch->data, m->body, m->body_len);
    int rc = net_conn_send(f->c, ch);
    net_chunk_unref(ch);
    if (rc != WSY_OK) { /* a slow consumer: told so as by A (fallback.c), then the client reconnects */
      log_info("forwarded sse stream of node %s ended: slow consumer", f->node);
      ch = fb_close_event(1013, "slow consumer");
      (void)net_conn_send_force(f->c, ch);
      net_chunk_unref(ch);
      httpd_stream_end(f->c, 0);
      fwd_msg cm = {.id = f->id, .op = FWD_CANCEL};
      (void)send_msg(e, f->node, &cm);
      out_done(e, f);
      return;
    }
    break;
  }
  case FWD_END:
    if (f->streaming) {
      httpd_stream_end(f->c, m->status != 0);
      out_done(e, f);
    } else {
      out_fail(e, f, "the session's node ended the request");
    }
    return;
  default:
    return;
  }
  /* A stream stays while A is heard from: SSE pings every ping interval. */
  f->deadline = now_ms(e) + 2 * (uint64_t)e->cfg->ping_interval_ms + FWD_ANSWER_MS;
}

/* ---- A: requests of another node, run here --------------------------------- */

static void in_free(engine *e, fwd_in *f) {
  map_del(&e->fwd->in, f->key);
  count_drop(e->fwd, f->from, 0);
  wsy_free(f);
}

static void in_finish(fwd_in *f) {
  if (f->slot && *f->slot == f) *f->slot = NULL;
  f->slot = NULL;
  if (f->serving) f->done = 1; /* freed when run_in returns */
  else in_free(f->e, f);
}

void fwd_in_answer(fwd_in *f, int status, const char *ctype, const char *hdrs, const void *body, size_t len) {
  fwd_msg m = {.id = f->id, .op = FWD_ANSWER, .status = (unsigned)status, .ctype = ctype ? ctype : "",
               .ctype_len = ctype ? strlen(ctype) : 0, .hdrs = hdrs ? hdrs : "", .hdrs_len = hdrs ? strlen(hdrs) : 0,
               .body = body, .body_len = len};
  if (send_msg(f->e, f->from, &m)) log_debug("forwarded answer to %s lost", f->from);
  in_finish(f);
}

void fwd_in_defer(fwd_in *f, fwd_in **slot) {
  f->slot = slot;
  *slot = f;
}

void fwd_in_open(fwd_in *f, fwd_in **slot, const char *ctype, const char *hdrs) {
  fwd_msg m = {.id = f->id, .op = FWD_OPEN, .status = 200, .ctype = ctype, .ctype_len = strlen(ctype),
               .hdrs = hdrs, .hdrs_len = strlen(hdrs)};
  (void)send_msg(f->e, f->from, &m); /* if lost, the first data fails too */
  fwd_in_defer(f, slot);
}

int fwd_in_data(fwd_in *f, const void *p, size_t len) {
  fwd_msg m = {.id = f->id, .op = FWD_DATA, .body = p, .body_len = len};
  return send_msg(f->e, f->from, &m) ? WSY_AGAIN : 0;
}

void fwd_in_end(fwd_in *f, int abort) {
  fwd_msg m = {.id = f->id, .op = FWD_END, .status = abort ? 1 : 0};
  (void)send_msg(f->e, f->from, &m);
  in_finish(f);
}

static void answer_now(engine *e, const char *from, uint64_t id, int status, const char *code, const char *why) {
  char t[256];
  error_text(t, sizeof t, code, why);
  fwd_msg m = {.id = id, .op = FWD_ANSWER, .status = (unsigned)status, .ctype = "application/json",
               .ctype_len = 16, .hdrs = "Cache-Control: no-store\r\n", .hdrs_len = 25,
               .body = (const uint8_t *)t, .body_len = strlen(t)};
  (void)send_msg(e, from, &m);
}

static void run_in(engine *e, const char *from, const fwd_msg *m) {
  fwd_state *st = e->fwd;
  fwd_count *n = count_of(st, from);
  if (n->in >= FWD_MAX_PER_NODE(e)) {
    answer_now(e, from, m->id, 503, "internal", "too many requests in flight from the client's node; try again");
    return;
  }
  httpd_req *r = httpd_req_new(e->cfg->max_header, e->cfg->max_body);
  size_t used = 0;
  int st_feed = httpd_req_feed(r, m->body, m->body_len, &used);
  if (st_feed != 1 || used != m->body_len) {
    httpd_req_free(r);
    answer_now(e, from, m->id, 400, "bad_request", "the forwarded request could not be read");
    count_gc(st, from);
    return;
  }
  fwd_in *f = wsy_calloc(1, sizeof *f);
  f->id = m->id;
  f->e = e;
  snprintf(f->from, sizeof f->from, "%s", from);
  snprintf(f->key, sizeof f->key, "%s/%" PRIu64, from, m->id);
  if (map_get(&st->in, f->key)) { /* the same request twice: the first goes on */
    wsy_free(f);
    httpd_req_free(r);
    count_gc(st, from);
    return;
  }
  n->in++;
  map_put(&st->in, f->key, f);
  f->serving = 1;
  fb_serve(e, f, r);
  f->serving = 0;
  httpd_req_free(r);
  if (!f->done && !f->slot) { /* fallback.c neither answered nor kept it: cannot happen */
    fwd_in_answer(f, 500, NULL, "", "", 0);
    return;
  }
  if (f->done) in_free(e, f);
}

/* B cancelled (its client went away): the session's downstream is gone, as
 * when httpd frees a connection (fallback.c notices on its sweep). */
static void cancel_in(engine *e, const char *from, uint64_t id) {
  char key[96];
  snprintf(key, sizeof key, "%s/%" PRIu64, from, id);
  fwd_in *f = map_get(&e->fwd->in, key);
  if (!f) return;
  if (f->slot && *f->slot == f) *f->slot = NULL;
  in_free(e, f);
}

/* ---- both ------------------------------------------------------------------ */

void fwd_direct(engine *e, const char *from, const uint8_t *body, size_t len) {
  fwd_msg m;
  if (!from || fwd_decode(body, len, &m)) {
    log_info("forwarded message from %s dropped: not readable", from ? from : "?");
    return;
  }
  state_of(e);
  if (m.op == FWD_REQ) {
    if (e->shutting_down) answer_now(e, from, m.id, 503, "internal", "server shutting down");
    else run_in(e, from, &m);
  } else if (m.op == FWD_CANCEL) {
    cancel_in(e, from, m.id);
  } else {
    out_reply(e, from, &m);
  }
}

/* Collects up to cap values of a map that pass keep (every one: NULL); the
 * map must not change while walked, so callers act on what was collected. */
static size_t collect(map *mp, void **v, size_t cap, int (*keep)(void *val, const void *arg), const void *arg) {
  const char *k;
  void *x;
  size_t n = 0;
  for (size_t i = 0; n < cap && map_next(mp, &i, &k, &x);)
    if (!keep || keep(x, arg)) v[n++] = x;
  return n;
}

static int out_of(void *v, const void *node) { return !strcmp(((fwd_out *)v)->node, node); }
static int in_of(void *v, const void *node) { return !strcmp(((fwd_in *)v)->from, node); }

void fwd_node(engine *e, const char *node, int up) {
  fwd_state *st = state_of(e);
  if (up) {
    map_del(&st->gone, node);
    if (map_len(&st->up) < FWD_MAX_NODES) map_put(&st->up, node, st);
    return;
  }
  map_del(&st->up, node);
  if (map_len(&st->gone) < FWD_MAX_NODES) map_put(&st->gone, node, st);
  void *v[256];
  size_t n;
  /* In rounds: each handled entry leaves the map. */
  while ((n = collect(&st->out, v, WSY_ARRAY_LEN(v), out_of, node)) > 0)
    for (size_t i = 0; i < n; i++) out_fail(e, v[i], "the session's node is gone; say hello again");
  while ((n = collect(&st->in, v, WSY_ARRAY_LEN(v), in_of, node)) > 0)
    for (size_t i = 0; i < n; i++) cancel_in(e, node, ((fwd_in *)v[i])->id);
}

int fwd_node_up(engine *e, const char *node) { return e->fwd && map_get(&e->fwd->up, node) != NULL; }

static int out_due(void *v, const void *now) { /* the client went away, or the node is late */
  fwd_out *f = v;
  return !f->c || *(const uint64_t *)now >= f->deadline;
}

void fwd_sweep(engine *e) {
  if (!e->fwd) return;
  uint64_t now = now_ms(e);
  void *v[256];
  size_t n = collect(&e->fwd->out, v, WSY_ARRAY_LEN(v), out_due, &now); /* the rest at the next sweep */
  for (size_t i = 0; i < n; i++) {
    fwd_out *f = v[i];
    if (!f->c) {
      fwd_msg m = {.id = f->id, .op = FWD_CANCEL};
      (void)send_msg(e, f->node, &m);
      out_done(e, f);
    } else {
      out_fail(e, f, "the session's node did not answer in time; try again");
    }
  }
}

void fwd_shutdown(engine *e) {
  if (!e->fwd) return;
  void *v[256];
  size_t n;
  while ((n = collect(&e->fwd->out, v, WSY_ARRAY_LEN(v), NULL, NULL)) > 0)
    for (size_t i = 0; i < n; i++) out_fail(e, v[i], "server shutting down");
}

void fwd_free(engine *e) {
  fwd_state *st = e->fwd;
  if (!st) return;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&st->out, &i, &k, &v);) {
    fwd_out *f = v;
    if (f->c) httpd_stream_end(f->c, 1); /* releases httpd's pointer to f->c */
    wsy_free(f->cors);
    wsy_free(f);
  }
  for (size_t i = 0; map_next(&st->in, &i, &k, &v);) {
    fwd_in *f = v;
    if (f->slot && *f->slot == f) *f->slot = NULL;
    wsy_free(f);
  }
  for (size_t i = 0; map_next(&st->counts, &i, &k, &v);) wsy_free(v);
  map_free(&st->out);
  map_free(&st->in);
  map_free(&st->counts);
  map_free(&st->gone);
  map_free(&st->up);
  wsy_free(st);
  e->fwd = NULL;
}
