/* fallback.c -- the HTTP transports of a session (fallback.h). */
#include "fallback.h"
#include "hook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "proto.h"
#include "room.h"
#include "sess.h"

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
  if (net_conn_send(s->dn, ch) != WSY_OK) sse_abort(s);
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
static void poll_answer(sess *s, unsigned code, const char *reason, int empty) {
  conn *c = s->dn;
  s->dn = NULL;
  s->dn_kind = 0;
  s->hx->dn_lost = now_ms(s->e);
  const char *hdrs = s->hx->dn_headers ? s->hx->dn_headers : "Cache-Control: no-store\r\n";
  sess_ob_trim(s);
  if (s->ob_first > s->hx->poll_last + 1) { /* the outbox dropped messages it never delivered */
    const char gone[] = "{\"type\":\"error\",\"code\":\"session_expired\",\"message\":\"messages were lost; say hello again\"}";
    httpd_deferred_answer(c, 410, "application/json", hdrs, gone, sizeof gone - 1);
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
      httpd_deferred_answer(c, 200, "application/json", hdrs, b.data, b.len);
      if (!empty) s->hx->dn_upto = s->ob_next - 1;
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
    if (s->dn && s->dn_kind == FB_POLL && sess_ob_count(s)) poll_answer(s, 0, NULL, 0);
    sess_unref(s); /* the due list's reference */
  }
}

/* The session's downstream ends for a reason a WebSocket would learn from
 * a close code (PROTOCOL.md 2.4). */
void fb_end(sess *s, unsigned code, const char *reason) {
  if (!s->dn) return;
  if (s->dn_kind == FB_POLL) {
    poll_answer(s, code, reason, 0);
    return;
  }
  json_t *cl = json_pack("{s:i,s:s}", "code", (int)code, "reason", reason ? reason : "");
  char *ct = jw_dumps(cl);
  json_decref(cl);
  size_t len = strlen(ct);
  net_chunk *ch = net_chunk_new(len + 32);
  int n = sprintf((char *)ch->data, "event: close\ndata: %s\n\n", ct);
  ch->len = (uint32_t)n;
  free(ct);
  conn *c = s->dn;
  char cs[16];
  snprintf(cs, sizeof cs, "%u", code);
  conn_event(s->e, s, c, "close", "transport", "sse", "code", cs, "by", "server", (const char *)NULL);
  s->dn = NULL;
  s->dn_kind = 0;
  s->hx->dn_lost = now_ms(s->e);
  (void)net_conn_send_force(c, ch);
  net_chunk_unref(ch);
  httpd_stream_end(c, 0);
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
    if (!s->dn && s->dn_kind) { /* the peer closed its stream: httpd cleared dn */
      if (s->dn_kind == FB_SSE)
        conn_event(e, s, NULL, "close", "transport", "sse", "by", "client", (const char *)NULL);
      s->dn_kind = 0;
      s->hx->dn_lost = now;
    }
    if (s->dn && s->dn_kind == FB_SSE && now - s->hx->dn_at >= cfg->ping_interval_ms) {
      net_chunk *ch = net_chunk_new(8);
      memcpy(ch->data, ": ping\n\n", 8);
      sse_write(s, ch);
      net_chunk_unref(ch);
    } else if (s->dn && s->dn_kind == FB_POLL && now - s->hx->dn_at >= cfg->poll_timeout_ms) {
      poll_answer(s, 0, NULL, 0);
    } else if (!s->dn && !s->detached_at && now - s->hx->dn_lost >= FB_DETACH_GRACE_MS) {
      s->detached_at = now;
      for (member *m = s->rooms; m; m = m->snext) room_presence_event(e, m, "update");
    }
  }
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

static void fb_error(conn *c, int status, const char *hdrs, const char *code, const char *message) {
  json_t *b = json_pack("{s:s,s:s,s:s}", "type", "error", "code", code, "message", message);
  char *text = jw_dumps(b);
  json_decref(b);
  char h[1024];
  snprintf(h, sizeof h, "Cache-Control: no-store\r\n%s", hdrs);
  httpd_respond(c, status, "application/json", h, text, strlen(text));
  free(text);
}

void fb_hello_answer(engine *e, conn *c, capture *cap, sess *n, const char *hdrs, int deferred) {
  (void)e;
  char h[1024];
  snprintf(h, sizeof h, "Cache-Control: no-store\r\n%s", hdrs);
  int st = 200;
  if (!cap->welcomed)
    st = !strcmp(cap->code, "unauthorized") || !strncmp(cap->code, "token_", 6) ? 401
         : !strcmp(cap->code, "forbidden")                                     ? 403
         : !strcmp(cap->code, "hook_unavailable")                              ? 503
                                                                                : 400;
  if (c && cap->text.len) {
    if (deferred) httpd_deferred_answer(c, st, "application/json", h, cap->text.data, cap->text.len);
    else httpd_respond(c, st, "application/json", h, cap->text.data, cap->text.len);
  } else if (c) {
    const char *body = "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"hello refused\"}";
    if (deferred) httpd_deferred_answer(c, 400, "application/json", h, body, strlen(body));
    else fb_error(c, 400, hdrs, "bad_request", "hello refused");
  }
  /* A new session keeps the registry's reference; a resume took n already. */
  if (!cap->welcomed || cap->welcomed == n) sess_unref(n);
}

/* POST /v1/send with a hello: the answer is the welcome (or the error), or
 * later when the authorization hook is asked (authhook_defer_http). */
static void send_hello(engine *e, conn *c, json_t *req, const char *hdrs) {
  sess *n = sess_new(e, NULL); /* this request's reference */
  capture cap = {0};
  buf_init(&cap.text, SIZE_MAX);
  e->cap = &cap;
  n->refs++; /* a resume drops the request's reference to n, which is read below */
  proto_dispatch(n, req);
  e->cap = NULL;
  if (n->hold) authhook_defer_http(n, c, hdrs); /* the request's reference goes with it */
  else fb_hello_answer(e, c, &cap, n, hdrs, 0);
  sess_unref(n);
  buf_free(&cap.text);
}

static void fb_send(engine *e, conn *c, httpd_req *r, const char *hdrs) {
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
    send_hello(e, c, j, hdrs);
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
  char token[sizeof ((sess *)0)->token];
  sess *s = NULL;
  if (tok && sl < sizeof token) {
    memcpy(token, tok, sl);
    token[sl] = '\0';
    s = map_get(&e->sessions, token);
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
  httpd_respond(c, 202, NULL, h, "", 0);
}

/* GET /v1/sse and /v1/poll: opens the session's downstream. */
static void fb_down(engine *e, conn *c, httpd_req *r, int kind, const char *hdrs) {
  char token[sizeof ((sess *)0)->token], lastv[24] = "";
  sess *s = NULL;
  if (httpd_req_query_param(r, "session", token, sizeof token) == 0) s = map_get(&e->sessions, token);
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
    httpd_stream_begin(c, &s->dn, "text/event-stream", h);
    conn_event(e, s, c, "connect", "transport", "sse", (const char *)NULL);
    net_chunk *hi = net_chunk_new(10);
    memcpy(hi->data, ": hello\n\n", 9);
    hi->len = 9;
    sse_write(s, hi);
    net_chunk_unref(hi);
    if (s->dn) sse_replay(s, last);
    return;
  }
  s->hx->poll_last = last;
  snprintf(h, sizeof h, "Cache-Control: no-store\r\n%s", hdrs);
  size_t hl = strlen(h) + 1;
  wsy_free(s->hx->dn_headers); /* a previous poll cut by its client left its own */
  s->hx->dn_headers = memcpy(wsy_malloc(hl), h, hl);
  httpd_defer(c, &s->dn);
  if (sess_ob_count(s)) poll_answer(s, 0, NULL, 0);
}

void fb_route(void *ud, conn *c, httpd_req *r) {
  engine *e = ud;
  const char *what = strrchr(httpd_req_path(r), '/') + 1; /* registered for /v1/send, /v1/sse, /v1/poll */
  const char *method = httpd_req_method(r);
  char hdrs[640];
  if (!cors(e, r, hdrs, sizeof hdrs)) {
    fb_error(c, 403, "", "forbidden", "origin not allowed");
    return;
  }
  if (!strcmp(method, "OPTIONS")) {
    if (!hdrs[0]) { /* no --allowed-origins, or no Origin: nothing to allow */
      httpd_respond(c, 204, NULL, "Allow: GET, POST, OPTIONS\r\n", "", 0);
      return;
    }
    char h[1024];
    snprintf(h, sizeof h,
             "%sAccess-Control-Allow-Methods: GET, POST\r\n"
             "Access-Control-Allow-Headers: Content-Type, Wsync-Session, Last-Event-ID\r\n"
             "Access-Control-Max-Age: 600\r\n", hdrs);
    httpd_respond(c, 204, NULL, h, "", 0);
    return;
  }
  int is_send = !strcmp(what, "send");
  if (strcmp(method, is_send ? "POST" : "GET") != 0) {
    httpd_method_not_allowed(c, is_send ? "POST, OPTIONS" : "GET, OPTIONS");
    return;
  }
  if (e->shutting_down) {
    fb_error(c, 503, hdrs, "internal", "server shutting down");
    return;
  }
  e->http_req = c; /* the remote address of the log lines of this request */
  if (is_send) fb_send(e, c, r, hdrs);
  else fb_down(e, c, r, !strcmp(what, "sse") ? FB_SSE : FB_POLL, hdrs);
  e->http_req = NULL;
}

