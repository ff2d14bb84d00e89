/* fallback.c -- the HTTP transports of a session (fallback.h). */
#include "fallback.h"
#include "hook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "forward.h"
#include "proto.h"
#include "room.h"
#include "sess.h"

/* Where an answer goes: the client's connection, or the node the request
 * came through (forward.h: the session lives here, its client is there). */
typedef struct fb_out {
  conn *c;
  fwd_in *f;
} fb_out;

static void out_respond(fb_out o, int status, const char *ct, const char *hdrs, const void *body, size_t len) {
  if (o.f) fwd_in_answer(o.f, status, ct, hdrs, body, len);
  else httpd_respond(o.c, status, ct, hdrs, body, len);
}

/* A session's downstream is a connection here (s->dn) or one on another
 * node (s->hx->rdn); httpd, or forward.c on a cancel, clears either. */
int fb_has_dn(const sess *s) { return s->dn || (s->hx && s->hx->rdn); }

static int dn_send(sess *s, net_chunk *ch, int force) {
  if (!s->dn) return fwd_in_data(s->hx->rdn, ch->data, ch->len);
  return force ? net_conn_send_force(s->dn, ch) : net_conn_send(s->dn, ch);
}

/* Downstream: an SSE event per message (id = ordinal), or one JSON answer
 * per poll gathering what the loop iteration produced. */

/* One SSE event: "id: N\ndata: <json>\n\n". */
static size_t sse_event(uint8_t *out, uint64_t ordinal, const uint8_t *p, size_t len) {
  int n = sprintf((char *)out, "id: %llu\ndata: ", (unsigned long long)ordinal);
  memcpy(out + n, p, len);
  memcpy(out + n + len, "\n\n", 2);
  return (size_t)n + len + 2;
}

/* The stream could not take more (slow consumer) or failed: it is dropped;
 * the client reconnects with Last-Event-ID and the outbox replays. */
static void sse_abort(sess *s) {
  log_info("sse stream of %s ended: slow consumer", s->dkey);
  fb_end(s, 1013, "slow consumer");
}

static void sse_write(sess *s, net_chunk *ch) {
  s->hx->dn_at = now_ms(s->e);
  if (dn_send(s, ch, 0) != WSY_OK) sse_abort(s);
}

/* Writes the outbox's messages after ordinal `after` as one chunk. */
typedef struct {
  size_t total;
  net_chunk *ch;
} sse_acc;

static void sse_size_one(void *ud, uint64_t ordinal, net_chunk *frame) {
  (void)ordinal;
  size_t len;
  frame_payload(frame, &len);
  ((sse_acc *)ud)->total += len + 32;
}

static void sse_put_one(void *ud, uint64_t ordinal, net_chunk *frame) {
  sse_acc *a = ud;
  size_t len;
  const uint8_t *p = frame_payload(frame, &len);
  a->ch->len += (uint32_t)sse_event(a->ch->data + a->ch->len, ordinal, p, len);
}

static void sse_replay(sess *s, uint64_t after) {
  sse_acc a = {0, NULL};
  sess_ob_each(s, after, sse_size_one, &a);
  if (a.total) {
    a.ch = net_chunk_new(a.total);
    a.ch->len = 0;
    sess_ob_each(s, after, sse_put_one, &a);
    if (a.ch->len) sse_write(s, a.ch);
    net_chunk_unref(a.ch);
  }
  s->hx->dn_upto = s->ob_next - 1;
}

void fb_push(sess *s, net_chunk *frame, uint64_t ordinal) {
  if (s->dn_kind == FB_SSE) {
    size_t len;
    const uint8_t *p = frame_payload(frame, &len);
    net_chunk *ch = net_chunk_new(len + 32);
    ch->len = (uint32_t)sse_event(ch->data, ordinal, p, len);
    sse_write(s, ch);
    net_chunk_unref(ch);
    s->hx->dn_upto = ordinal;
  } else if (!s->due) { /* answered in the check hook, with everything since */
    s->due = 1;
    s->refs++;
    s->hx->due_next = s->e->due;
    s->e->due = s;
  }
}

typedef struct {
  buf *b;
  int ok, n;
} poll_acc;

static void poll_put_one(void *ud, uint64_t ordinal, net_chunk *frame) {
  (void)ordinal;
  poll_acc *a = ud;
  size_t len;
  const uint8_t *p = frame_payload(frame, &len);
  if (a->ok && a->n++) a->ok = buf_append(a->b, ",", 1) == WSY_OK;
  if (a->ok) a->ok = buf_append(a->b, p, len) == WSY_OK;
}

/* Answers the pending poll with the messages after its last, and `close`
 * when the session's downstream ends for a reason (code != 0). */
static void poll_reply(conn *c, fwd_in *f, int status, const char *hdrs, const void *body, size_t len) {
  if (f) fwd_in_answer(f, status, "application/json", hdrs, body, len);
  else httpd_deferred_answer(c, status, "application/json", hdrs, body, len);
}

static void poll_answer(sess *s, unsigned code, const char *reason, int empty) {
  conn *c = s->dn;
  fwd_in *f = s->hx->rdn;
  s->dn = NULL;
  s->hx->rdn = NULL;
  s->dn_kind = 0;
  s->hx->dn_lost = now_ms(s->e);
  const char *hdrs = s->hx->dn_headers ? s->hx->dn_headers : "Cache-Control: no-store\r\n";
  sess_ob_trim(s);
  if (s->ob_first > s->hx->poll_last + 1) { /* the outbox dropped messages it never delivered */
    const char gone[] = "{\"type\":\"error\",\"code\":\"session_expired\",\"message\":\"messages were lost; say hello again\"}";
    poll_reply(c, f, 410, hdrs, gone, sizeof gone - 1);
  } else {
    buf b;
    buf_init(&b, SIZE_MAX);
    poll_acc a = {&b, 1, 0};
    a.ok = buf_append(&b, "{\"messages\":[", 13) == WSY_OK;
    if (!empty) sess_ob_each(s, 0, poll_put_one, &a);
    int ok = a.ok;
    char tail[256];
    int n = snprintf(tail, sizeof tail, "],\"last\":%llu",
                     (unsigned long long)(empty ? s->hx->poll_last : s->ob_next - 1));
    if (ok) ok = buf_append(&b, tail, (size_t)n) == WSY_OK;
    if (ok && code) {
      json_t *cl = json_pack("{s:i,s:s}", "code", (int)code, "reason", reason ? reason : "");
      char *ct = jw_dumps(cl);
      json_decref(cl);
      ok = buf_append(&b, ",\"close\":", 9) == WSY_OK && buf_append(&b, ct, strlen(ct)) == WSY_OK;
      free(ct);
    }
    if (ok) ok = buf_append(&b, "}", 1) == WSY_OK;
    if (ok) {
      poll_reply(c, f, 200, hdrs, b.data, b.len);
      if (!empty) s->hx->dn_upto = s->ob_next - 1;
    } else if (f) {
      fwd_in_end(f, 1);
    } else {
      httpd_stream_end(c, 1);
    }
    buf_free(&b);
  }
  wsy_free(s->hx->dn_headers);
  s->hx->dn_headers = NULL;
}

void fb_answer_polls(engine *e) {
  while (e->due) {
    sess *s = e->due;
    e->due = s->hx->due_next;
    s->due = 0;
    if (fb_has_dn(s) && s->dn_kind == FB_POLL && sess_ob_count(s)) poll_answer(s, 0, NULL, 0);
    sess_unref(s); /* the due list's reference */
  }
}

net_chunk *fb_close_event(unsigned code, const char *reason) {
  json_t *cl = json_pack("{s:i,s:s}", "code", (int)code, "reason", reason ? reason : "");
  char *ct = jw_dumps(cl);
  json_decref(cl);
  size_t len = strlen(ct);
  net_chunk *ch = net_chunk_new(len + 32);
  int n = sprintf((char *)ch->data, "event: close\ndata: %s\n\n", ct);
  ch->len = (uint32_t)n;
  free(ct);
  return ch;
}

/* The session's downstream ends for a reason a WebSocket would learn from
 * a close code (PROTOCOL.md 2.4). */
void fb_end(sess *s, unsigned code, const char *reason) {
  if (!fb_has_dn(s)) return;
  if (s->dn_kind == FB_POLL) {
    poll_answer(s, code, reason, 0);
    return;
  }
  net_chunk *ch = fb_close_event(code, reason);
  conn *c = s->dn;
  fwd_in *f = s->hx->rdn;
  char cs[16];
  snprintf(cs, sizeof cs, "%u", code);
  conn_event(s->e, s, c, "close", "transport", "sse", "code", cs, "by", "server", (const char *)NULL);
  (void)dn_send(s, ch, 1);
  s->dn = NULL;
  s->hx->rdn = NULL;
  s->dn_kind = 0;
  s->hx->dn_lost = now_ms(s->e);
  net_chunk_unref(ch);
  if (f) fwd_in_end(f, 0);
  else httpd_stream_end(c, 0);
}

/* Another downstream (or a WebSocket) takes over: an SSE stream is told
 * 4001, a pending poll gets an empty answer. */
void fb_release(sess *s) {
  if (s->dn_kind == FB_SSE) {
    fb_end(s, 4001, "session moved to another downstream");
    return;
  }
  poll_answer(s, 0, NULL, 1); /* the messages go to whichever downstream comes next */
}

/* Keeps time for HTTP sessions: SSE pings, poll timeouts, and detaching a
 * session that has had no downstream for the grace period. */
void fb_sweep(engine *e) {
  uint64_t now = now_ms(e);
  const wsy_config *cfg = e->cfg;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->sessions, &i, &k, &v);) {
    sess *s = v;
    if (!s->http) continue;
    if (!fb_has_dn(s) && s->dn_kind) { /* the peer closed its stream: httpd (or forward.c) cleared it */
      if (s->dn_kind == FB_SSE)
        conn_event(e, s, NULL, "close", "transport", "sse", "by", "client", (const char *)NULL);
      s->dn_kind = 0;
      s->hx->dn_lost = now;
    }
    if (fb_has_dn(s) && s->dn_kind == FB_SSE && now - s->hx->dn_at >= cfg->ping_interval_ms) {
      net_chunk *ch = net_chunk_new(8);
      memcpy(ch->data, ": ping\n\n", 8);
      sse_write(s, ch);
      net_chunk_unref(ch);
    } else if (fb_has_dn(s) && s->dn_kind == FB_POLL && now - s->hx->dn_at >= cfg->poll_timeout_ms) {
      poll_answer(s, 0, NULL, 0);
    } else if (!fb_has_dn(s) && !s->detached_at && now - s->hx->dn_lost >= FB_DETACH_GRACE_MS) {
      s->detached_at = now;
      for (member *m = s->rooms; m; m = m->snext) room_presence_event(e, m, "update");
    }
  }
  fwd_sweep(e);
}

/* CORS headers for the request into out (PROTOCOL.md 2.4); 0 when its
 * Origin is not allowed. */
static int cors(engine *e, httpd_req *r, char *out, size_t n) {
  size_t ol;
  const char *org = httpd_req_header(r, "Origin", &ol);
  const char *list = e->cfg->allowed_origins;
  out[0] = '\0';
  if (!list || !*list || !org) return 1; /* same-origin pages only read the answers */
  if (!httpd_origin_allowed(list, org, ol) || ol > 512) return 0;
  snprintf(out, n, "Access-Control-Allow-Origin: %.*s\r\nVary: Origin\r\n", (int)ol, org);
  return 1;
}

static void fb_error(fb_out c, int status, const char *hdrs, const char *code, const char *message) {
  json_t *b = json_pack("{s:s,s:s,s:s}", "type", "error", "code", code, "message", message);
  char *text = jw_dumps(b);
  json_decref(b);
  char h[1024];
  snprintf(h, sizeof h, "Cache-Control: no-store\r\n%s", hdrs);
  out_respond(c, status, "application/json", h, text, strlen(text));
  free(text);
}

static void hello_answer(fb_out o, capture *cap, sess *n, const char *hdrs, int deferred) {
  conn *c = o.c;
  char h[1024];
  snprintf(h, sizeof h, "Cache-Control: no-store\r\n%s", hdrs);
  int st = 200;
  if (!cap->welcomed)
    st = !strcmp(cap->code, "unauthorized") || !strncmp(cap->code, "token_", 6) ? 401
         : !strcmp(cap->code, "forbidden")                                     ? 403
         : !strcmp(cap->code, "hook_unavailable")                              ? 503
                                                                                : 400;
  if (o.f) {
    const char *refused = "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"hello refused\"}";
    if (cap->text.len) fwd_in_answer(o.f, st, "application/json", h, cap->text.data, cap->text.len);
    else fwd_in_answer(o.f, 400, "application/json", h, refused, strlen(refused));
  } else if (c && cap->text.len) {
    if (deferred) httpd_deferred_answer(c, st, "application/json", h, cap->text.data, cap->text.len);
    else httpd_respond(c, st, "application/json", h, cap->text.data, cap->text.len);
  } else if (c) {
    const char *body = "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"hello refused\"}";
    if (deferred) httpd_deferred_answer(c, 400, "application/json", h, body, strlen(body));
    else fb_error((fb_out){c, NULL}, 400, hdrs, "bad_request", "hello refused");
  }
  /* A new session keeps the registry's reference; a resume took n already. */
  if (!cap->welcomed || cap->welcomed == n) sess_unref(n);
}

void fb_hello_answer(engine *e, conn *c, capture *cap, sess *n, const char *hdrs, int deferred) {
  (void)e;
  hello_answer((fb_out){c, NULL}, cap, n, hdrs, deferred);
}

/* POST /v1/send with a hello: the answer is the welcome (or the error), or
 * later when the authorization hook is asked (authhook_defer_http). */
static void send_hello(engine *e, fb_out o, json_t *req, const char *hdrs) {
  sess *n = sess_new(e, NULL); /* this request's reference */
  capture cap = {0};
  buf_init(&cap.text, SIZE_MAX);
  e->cap = &cap;
  n->refs++; /* a resume drops the request's reference to n, which is read below */
  proto_dispatch(n, req);
  e->cap = NULL;
  if (n->hold) authhook_defer_http(n, o.c, hdrs); /* never forwarded (fb_send): o.c is set */
  else hello_answer(o, &cap, n, hdrs, 0);
  sess_unref(n);
  buf_free(&cap.text);
}

/* Which session the client's token names: 1 with s (NULL: none here), or 0
 * when the request was forwarded to the session's node (answered later). */
static int find_sess(engine *e, fb_out o, httpd_req *r, const char *tok, size_t len, const char *hdrs, sess **s) {
  char key[SESS_KEY_LEN + 1], node[SESS_NODE_MAX + 1];
  int where = tok ? sess_token_where(e, tok, len, key, node) : SESS_TOKEN_BAD;
  *s = where == SESS_TOKEN_HERE ? map_get(&e->sessions, key) : NULL;
  if (where != SESS_TOKEN_NODE || o.f) return 1; /* a node forwards only what arrived on a socket */
  fwd_request(e, o.c, r, node, hdrs);
  return 0;
}

static void fb_send(engine *e, fb_out c, httpd_req *r, const char *hdrs) {
  size_t len;
  const uint8_t *body = httpd_req_body(r, &len);
  if (len > e->cfg->max_message) {
    fb_error(c, 413, hdrs, "too_large", "the body is larger than --max-message-size");
    return;
  }
  json_error_t jerr;
  json_t *j = len ? proto_parse((const char *)body, len, &jerr) : NULL; /* big numbers: PROTOCOL.md 1.1 */
  if (!j || (!json_is_object(j) && !json_is_array(j)) || proto_too_deep(j, json_is_array(j) ? 0 : 1, 32)) {
    json_decref(j);
    fb_error(c, 400, hdrs, "bad_json", "the body must be a JSON object or an array of objects");
    return;
  }
  if (json_is_object(j) && json_is_string(json_object_get(j, "type")) &&
      !strcmp(json_string_value(json_object_get(j, "type")), "hello")) {
    /* A new session lives where its hello arrived; a resume goes to the
     * node of the session, while that node is up (else: a new session
     * here). Not with --auth-hook: its answer may come later, to a
     * connection (authhook_defer_http). */
    const char *stok = json_string_value(json_object_get(j, "session"));
    char key[SESS_KEY_LEN + 1], node[SESS_NODE_MAX + 1];
    if (!c.f && stok && !e->cfg->auth_hook && sess_token_where(e, stok, strlen(stok), key, node) == SESS_TOKEN_NODE &&
        fwd_node_up(e, node)) {
      json_decref(j);
      fwd_request(e, c.c, r, node, hdrs);
      return;
    }
    if (c.f && e->cfg->auth_hook) fb_error(c, 400, hdrs, "bad_request", "a hello is answered by the node it reaches");
    else send_hello(e, c, j, hdrs);
    json_decref(j);
    return;
  }
  size_t i;
  json_t *m;
  if (json_is_array(j)) {
    json_array_foreach(j, i, m) {
      json_t *t = json_object_get(m, "type");
      if (json_is_string(t) && !strcmp(json_string_value(t), "hello")) {
        json_decref(j);
        fb_error(c, 400, hdrs, "bad_request", "a hello must be sent alone");
        return;
      }
    }
  }
  size_t sl;
  const char *tok = httpd_req_header(r, "Wsync-Session", &sl);
  sess *s;
  if (!find_sess(e, c, r, tok, sl, hdrs, &s)) {
    json_decref(j);
    return;
  }
  if (!s || s->ended) {
    json_decref(j);
    fb_error(c, 410, hdrs, "session_expired", "no such session; say hello again");
    return;
  }
  s->refs++; /* a bye in the body ends the session under this loop */
  if (json_is_object(j)) {
    proto_dispatch(s, j);
  } else {
    json_array_foreach(j, i, m) {
      if (s->ended) break;
      if (json_is_object(m)) proto_dispatch(s, m);
      else sess_error(s, NULL, "bad_json", "a message must be one JSON object", NULL, NULL);
    }
  }
  sess_unref(s);
  json_decref(j);
  char h[1024];
  snprintf(h, sizeof h, "Cache-Control: no-store\r\n%s", hdrs);
  out_respond(c, 202, NULL, h, "", 0);
}

/* GET /v1/sse and /v1/poll: opens the session's downstream. */
static void fb_down(engine *e, fb_out c, httpd_req *r, int kind, const char *hdrs) {
  char token[SESS_WIRE_MAX + 1], lastv[24] = "";
  sess *s = NULL;
  int has = httpd_req_query_param(r, "session", token, sizeof token) == 0;
  if (!find_sess(e, c, r, has ? token : NULL, has ? strlen(token) : 0, hdrs, &s)) return;
  if (!s || s->ended) {
    fb_error(c, 410, hdrs, "session_expired", "no such session; say hello again");
    return;
  }
  size_t ll;
  const char *lei = kind == FB_SSE ? httpd_req_header(r, "Last-Event-ID", &ll) : NULL;
  if (lei && ll < sizeof lastv) {
    memcpy(lastv, lei, ll);
    lastv[ll] = '\0';
  } else if (httpd_req_query_param(r, "last", lastv, sizeof lastv) != 0) {
    lastv[0] = '\0';
  }
  char *end;
  unsigned long long last = strtoull(lastv, &end, 10);
  if (!lastv[0] || *end || lastv[0] == '-') last = 0;
  if (last >= s->ob_next) {
    fb_error(c, 400, hdrs, "bad_request", "last is beyond the last message sent");
    return;
  }
  sess_ob_trim(s);
  if (s->ob_first > last + 1) {
    fb_error(c, 410, hdrs, "session_expired", "messages after last were dropped; say hello again");
    return;
  }
  sess_ob_confirm(s, last); /* confirmed by last */
  sess_detach(s, "session moved to another downstream");
  sess_http_on(s);
  s->dn_kind = kind;
  s->hx->dn_at = now_ms(e);
  if (s->detached_at) {
    s->detached_at = 0;
    for (member *m = s->rooms; m; m = m->snext) room_presence_event(e, m, "update");
  }
  char h[1280];
  if (kind == FB_SSE) {
    snprintf(h, sizeof h, "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n%s", hdrs);
    if (c.f) fwd_in_open(c.f, &s->hx->rdn, "text/event-stream", h);
    else httpd_stream_begin(c.c, &s->dn, "text/event-stream", h);
    conn_event(e, s, c.c, "connect", "transport", "sse", "via", c.f ? "node" : NULL, (const char *)NULL);
    net_chunk *hi = net_chunk_new(10);
    memcpy(hi->data, ": hello\n\n", 9);
    hi->len = 9;
    sse_write(s, hi);
    net_chunk_unref(hi);
    if (fb_has_dn(s)) sse_replay(s, last);
    return;
  }
  s->hx->poll_last = last;
  snprintf(h, sizeof h, "Cache-Control: no-store\r\n%s", hdrs);
  size_t hl = strlen(h) + 1;
  wsy_free(s->hx->dn_headers); /* a previous poll cut by its client left its own */
  s->hx->dn_headers = memcpy(wsy_malloc(hl), h, hl);
  if (c.f) fwd_in_defer(c.f, &s->hx->rdn);
  else httpd_defer(c.c, &s->dn);
  if (sess_ob_count(s)) poll_answer(s, 0, NULL, 0);
}

/* The request r, from a client's connection or from another node. */
static void serve(engine *e, fb_out o, httpd_req *r) {
  const char *what = strrchr(httpd_req_path(r), '/') + 1; /* registered for /v1/send, /v1/sse, /v1/poll */
  const char *method = httpd_req_method(r);
  char hdrs[640];
  if (!cors(e, r, hdrs, sizeof hdrs)) {
    fb_error(o, 403, "", "forbidden", "origin not allowed");
    return;
  }
  if (!strcmp(method, "OPTIONS") && !o.f) {
    if (!hdrs[0]) { /* no --allowed-origins, or no Origin: nothing to allow */
      httpd_respond(o.c, 204, NULL, "Allow: GET, POST, OPTIONS\r\n", "", 0);
      return;
    }
    char h[1024];
    snprintf(h, sizeof h,
             "%sAccess-Control-Allow-Methods: GET, POST\r\n"
             "Access-Control-Allow-Headers: Content-Type, Wsync-Session, Last-Event-ID\r\n"
             "Access-Control-Max-Age: 600\r\n", hdrs);
    httpd_respond(o.c, 204, NULL, h, "", 0);
    return;
  }
  int is_send = !strcmp(what, "send");
  if (strcmp(method, is_send ? "POST" : "GET") != 0) {
    if (!o.f) httpd_method_not_allowed(o.c, is_send ? "POST, OPTIONS" : "GET, OPTIONS");
    else fb_error(o, 405, hdrs, "bad_request", "method not allowed");
    return;
  }
  if (e->shutting_down) {
    fb_error(o, 503, hdrs, "internal", "server shutting down");
    return;
  }
  e->http_req = o.c; /* the remote address of the log lines of this request */
  if (is_send) fb_send(e, o, r, hdrs);
  else fb_down(e, o, r, !strcmp(what, "sse") ? FB_SSE : FB_POLL, hdrs);
  e->http_req = NULL;
}

void fb_route(void *ud, conn *c, httpd_req *r) { serve(ud, (fb_out){c, NULL}, r); }

void fb_serve(engine *e, fwd_in *f, httpd_req *r) {
  const char *p = httpd_req_path(r);
  const char *what = strrchr(p, '/');
  if (!what || (strcmp(p, "/v1/send") && strcmp(p, "/v1/sse") && strcmp(p, "/v1/poll"))) {
    fwd_in_answer(f, 404, NULL, "", "", 0);
    return;
  }
  serve(e, (fb_out){NULL, f}, r);
}

void fb_direct(engine *e, const char *from_node, const char *kind, const uint8_t *body, size_t len) {
  /* A session of this node replaced by one of another (sess.h); for the
   * rest the op is in the body (forward.h). */
  if (!strcmp(kind, SESS_REPLACE_KIND)) sess_replace_notice(e, from_node, body, len);
  else fwd_direct(e, from_node, body, len);
}

void fb_node(engine *e, const char *node, int up) { fwd_node(e, node, up); }
