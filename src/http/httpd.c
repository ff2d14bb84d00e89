/* httpd.c -- HTTP/1.1 request handling on a net connection.
 *
 * Per connection, while in HTTP: a small httpd_conn inside the conn's ext
 * (last activity, the request in progress). The request itself (http-parser
 * state, URL and header bytes, body) is allocated when its first byte
 * arrives and freed once it is answered, so an idle keep-alive connection
 * holds no request memory.
 *
 * Header bytes are collected in one capped buffer: URL, then each name and
 * value, recorded as offsets; past max_header the request is answered 431
 * and the connection ended. */
#include "httpd.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/log.h"

typedef struct route {
  const char *path;
  int prefix;
  httpd_handler fn;
  httpd_upgrade_handler up;
  void *ud;
} route_t;

struct httpd_server {
  httpd_config cfg;
  route_t *routes;
  size_t nroutes;
  route_t fallback;
  int shutting_down;
  const char *json_prefix[8];  /* paths whose request errors are JSON (httpd_json_errors) */
  size_t njson;
};

typedef struct httpd_conn {
  httpd_req *req;
  uint64_t last_active;
  uint64_t req_started;
  int answered;       /* a request has been answered on this connection */
  int head;           /* the request being routed is a HEAD */
  int keep_after;     /* keep-alive decision of the deferred request */
  conn **waiter;      /* while a response is deferred: the owner's slot */
  int streaming;      /* the deferred response is an open stream (SSE) */
  buf stash;          /* bytes that arrived behind a deferred request */
  int last_status;    /* status of the last response queued (0: none since routing began) */
} httpd_conn;

static const conn_ops http_ops;

size_t httpd_ext_size(void) { return sizeof(httpd_conn); }

static httpd_conn *hc_of(conn *c) { return net_conn_ext(c); }

const char *httpd_status_text(int s) {
  switch (s) {
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 406: return "Not Acceptable";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 412: return "Precondition Failed";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 422: return "Unprocessable Content";
  case 423: return "Locked";
  case 426: return "Upgrade Required";
  case 428: return "Precondition Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  case 507: return "Insufficient Storage";
  default: return "Unknown";
  }
}

/* ---- responses ------------------------------------------------------------ */

static void respond(conn *c, int status, const char *content_type, const char *extra_headers,
                    const void *body, size_t len, int with_body) {
  char head[1024];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nServer: wsync/" WSYNC_VERSION "\r\n"
                   "Content-Length: %zu\r\n%s%s%s%s\r\n",
                   status, httpd_status_text(status), len,
                   content_type ? "Content-Type: " : "", content_type ? content_type : "",
                   content_type ? "\r\n" : "", extra_headers ? extra_headers : "");
  size_t hl = wsy_snlen(n, sizeof head);
  /* A response to HEAD never has a body, whatever the route answered (404,
   * 405, ...): on a keep-alive connection the body would be read as the
   * start of the next response. */
  if (net_conn_ops(c) == &http_ops && hc_of(c)->head) with_body = 0;
  if (net_conn_ops(c) == &http_ops) hc_of(c)->last_status = status;
  size_t blen = with_body ? len : 0;
  net_chunk *ch = net_chunk_new(hl + blen);
  memcpy(ch->data, head, hl);
  if (blen) memcpy(ch->data + hl, body, blen);
  /* Responses are bounded by what the server chooses to send; the cap is
   * for fan-out, and a response that does not fit still must go out. */
  net_conn_send_force(c, ch);
  net_chunk_unref(ch);
}

void httpd_respond(conn *c, int status, const char *content_type, const char *extra_headers,
                   const void *body, size_t len) {
  respond(c, status, content_type, extra_headers, body, len, 1);
}

void httpd_respond_head(conn *c, int status, const char *content_type, const char *extra_headers,
                        size_t len) {
  respond(c, status, content_type, extra_headers, NULL, len, 0);
}

/* "<status> <reason>: <message>\n" as a text response (cut at 511 bytes). */
static void text_error(conn *c, int status, const char *extra_headers, const char *message) {
  char body[512];
  int n = snprintf(body, sizeof body, "%d %s: %s\n", status, httpd_status_text(status), message);
  httpd_respond(c, status, "text/plain; charset=utf-8", extra_headers, body, wsy_snlen(n, sizeof body));
}

void httpd_error(conn *c, int status, const char *message) { text_error(c, status, "", message); }

void httpd_fail_and_end(conn *c, int status, const char *message) {
  text_error(c, status, "Connection: close\r\n", message);
  net_conn_end(c);
}

void httpd_json(conn *c, int status, const char *extra_headers, const char *json) {
  char h[1024];
  int n = snprintf(h, sizeof h, "Cache-Control: no-store\r\n%s", extra_headers ? extra_headers : "");
  if ((size_t)n >= sizeof h) h[0] = '\0'; /* never cut a header line in two */
  httpd_respond(c, status, "application/json", h, json, strlen(json));
}

int httpd_answered_status(conn *c) { return net_conn_ops(c) == &http_ops ? hc_of(c)->last_status : 0; }

void httpd_json_errors(httpd_server *hs, const char *prefix) {
  if (hs->njson < WSY_ARRAY_LEN(hs->json_prefix)) hs->json_prefix[hs->njson++] = prefix;
}

static int wants_json(const httpd_server *hs, const char *path) {
  for (size_t i = 0; i < hs->njson; i++)
    if (strncmp(path, hs->json_prefix[i], strlen(hs->json_prefix[i])) == 0) return 1;
  return 0;
}

/* A request error (400, 413, 414, 431, 505) as the JSON error object, then
 * the connection ends. */
static void json_fail_and_end(conn *c, int status, const char *message) {
  const char *code = status == 413 || status == 414 || status == 431 ? "too_large" : "bad_request";
  char body[512], msg[256];
  size_t o = 0;
  for (const char *p = message; *p && o + 2 < sizeof msg; p++) /* messages are ASCII; keep JSON simple */
    if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f) msg[o++] = *p;
  msg[o] = '\0';
  snprintf(body, sizeof body, "{\"type\":\"error\",\"code\":\"%s\",\"message\":\"%s\"}", code, msg);
  httpd_json(c, status, "Connection: close\r\n", body);
  net_conn_end(c);
}

void httpd_method_not_allowed(conn *c, const char *allow) {
  char h[128];
  snprintf(h, sizeof h, "Allow: %.100s\r\n", allow);
  httpd_json(c, 405, h,
             "{\"type\":\"error\",\"code\":\"method_not_allowed\",\"message\":\"this method is not allowed here\"}");
}

/* ---- routes ---------------------------------------------------------------- */

int httpd_origin_allowed(const char *list, const char *origin, size_t len) {
  if (!list || !*list) return 1;
  if (!origin) return 0;
  while (*list) {
    while (*list == ',' || *list == ' ') list++;
    const char *e = list;
    while (*e && *e != ',') e++;
    size_t l = (size_t)(e - list);
    while (l && list[l - 1] == ' ') l--;
    if (l && ((l == 1 && list[0] == '*') || (l == len && strncasecmp(list, origin, l) == 0)))
      return 1;
    list = e;
  }
  return 0;
}

httpd_server *httpd_new(const httpd_config *cfg) {
  httpd_server *hs = wsy_calloc(1, sizeof *hs);
  hs->cfg = *cfg;
  return hs;
}

void httpd_free(httpd_server *hs) {
  if (!hs) return;
  wsy_free(hs->routes);
  wsy_free(hs);
}

static void add_route(httpd_server *hs, route_t rt) {
  hs->routes = wsy_realloc(hs->routes, (hs->nroutes + 1) * sizeof *hs->routes);
  hs->routes[hs->nroutes++] = rt;
}

void httpd_route(httpd_server *hs, const char *path, httpd_handler fn, void *ud) {
  add_route(hs, (route_t){.path = path, .fn = fn, .ud = ud});
}

void httpd_route_prefix(httpd_server *hs, const char *prefix, httpd_handler fn, void *ud) {
  add_route(hs, (route_t){.path = prefix, .prefix = 1, .fn = fn, .ud = ud});
}

void httpd_route_upgrade(httpd_server *hs, const char *path, httpd_upgrade_handler fn, void *ud) {
  add_route(hs, (route_t){.path = path, .up = fn, .ud = ud});
}

void httpd_route_upgrade_prefix(httpd_server *hs, const char *prefix, httpd_upgrade_handler fn, void *ud) {
  add_route(hs, (route_t){.path = prefix, .prefix = 1, .up = fn, .ud = ud});
}

void httpd_route_default(httpd_server *hs, httpd_handler fn, void *ud) {
  hs->fallback = (route_t){.fn = fn, .ud = ud};
}

void httpd_shutdown(httpd_server *hs) { hs->shutting_down = 1; }
int httpd_shutting_down(const httpd_server *hs) { return hs->shutting_down; }

/* Routes one complete request, first match in registration order. Returns
 * 1 when the connection left HTTP. */
static int route(httpd_server *hs, conn *c, httpd_req *r, uint8_t *rest, size_t rest_len) {
  const char *path = httpd_req_path(r);
  for (size_t i = 0; i < hs->nroutes; i++) {
    const route_t *rt = &hs->routes[i];
    if (rt->prefix ? strncmp(path, rt->path, strlen(rt->path)) != 0 : strcmp(path, rt->path) != 0) continue;
    if (rt->up) return rt->up(rt->ud, c, r, rest, rest_len);
    rt->fn(rt->ud, c, r);
    return 0;
  }
  if (hs->fallback.fn) hs->fallback.fn(hs->fallback.ud, c, r);
  else httpd_error(c, 404, "no such resource");
  return 0;
}

/* ---- connection ops ------------------------------------------------------ */

/* Bytes stashed behind a deferred answer before reading pauses. */
#define STASH_PAUSE (64 * 1024)

static void http_on_data(conn *c, uint8_t *data, size_t len) {
  httpd_server *hs = net_loop_app(net_conn_loop(c));
  httpd_conn *hc = hc_of(c);
  hc->last_active = net_loop_now(net_conn_loop(c));
  if (hc->streaming) return;
  if (hc->waiter) {
    /* A request behind one whose answer is deferred waits, in order, for
     * it. Reading goes on meanwhile so that a peer closing the connection
     * (a cut long-poll) is noticed at once, not when the answer is due;
     * a peer pipelining more than STASH_PAUSE bytes is paused instead
     * (TCP pushes back), as a deferred request used to pause it. */
    if (buf_append(&hc->stash, data, len) != WSY_OK) net_conn_close(c);
    else if (hc->stash.len > STASH_PAUSE) net_conn_pause(c);
    return;
  }
  while (len > 0 && !net_conn_closing(c)) {
    if (!hc->req) {
      hc->req = httpd_req_new(hs->cfg.max_header, hs->cfg.max_body);
      hc->req_started = hc->last_active;
    }
    httpd_req *r = hc->req;
    size_t used;
    int st = httpd_req_feed(r, data, len, &used);
    data += used;
    len -= used;
    if (st == 0) continue; /* consumed everything; needs more bytes */
    if (st != 1) {
      log_debug("bad request (%d): %s", st, httpd_req_error(r));
      if (wants_json(hs, httpd_req_path(r))) json_fail_and_end(c, st, httpd_req_error(r));
      else httpd_fail_and_end(c, st, httpd_req_error(r));
      httpd_req_free(r);
      hc->req = NULL;
      return;
    }
    hc->req = NULL;
    hc->head = strcmp(httpd_req_method(r), "HEAD") == 0;
    if (httpd_req_upgrade(r)) {
      /* The bytes after an upgrade request belong to the new protocol; if
       * the route does not take the connection, HTTP cannot resume. */
      if (!route(hs, c, r, data, len) && !net_conn_closing(c)) net_conn_end(c);
      httpd_req_free(r);
      return;
    }
    int keep = httpd_req_keep_alive(r);
    hc->answered = 1;
    /* Set before routing: a deferred answer can come within route() itself
     * (a long-poll with messages already waiting). */
    hc->keep_after = keep;
    hc->last_status = 0;
    route(hs, c, r, NULL, 0);
    hc->head = 0;
    httpd_req_free(r);
    if (hc->waiter) {
      /* The answer comes later (after a commit): later requests wait, in
       * order, behind it. */
      buf_init(&hc->stash, hs->cfg.max_header + hs->cfg.max_body);
      if (len && buf_append(&hc->stash, data, len) != WSY_OK) net_conn_close(c);
      else if (hc->stash.len > STASH_PAUSE) net_conn_pause(c);
      return;
    }
    if (!keep) net_conn_end(c);
  }
}

void httpd_defer(conn *c, conn **slot) {
  httpd_conn *hc = hc_of(c);
  hc->waiter = slot;
  *slot = c;
}

void httpd_deferred_respond(conn *c, int status, const char *json_body) {
  httpd_deferred_answer(c, status, "application/json", "", json_body, strlen(json_body));
}

void httpd_deferred_answer(conn *c, int status, const char *content_type, const char *extra_headers,
                           const void *body, size_t len) {
  httpd_conn *hc = hc_of(c);
  httpd_respond(c, status, content_type, extra_headers, body, len);
  hc->waiter = NULL;
  if (!hc->keep_after) {
    buf_free(&hc->stash);
    net_conn_end(c);
    return;
  }
  if (hc->stash.len) {
    buf st = hc->stash;
    buf_init(&hc->stash, 0);
    http_on_data(c, st.data, st.len);
    buf_free(&st);
  }
  /* Read again unless the requests still stashed behind a new deferred
   * answer are already over the pause mark. */
  if (!hc->waiter || hc->stash.len <= STASH_PAUSE) net_conn_resume(c);
}

void httpd_stream_begin(conn *c, conn **slot, const char *content_type, const char *extra_headers) {
  httpd_conn *hc = hc_of(c);
  char head[1024];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 200 OK\r\nServer: wsync/" WSYNC_VERSION "\r\nContent-Type: %s\r\n"
                   "Connection: close\r\n%s\r\n",
                   content_type, extra_headers ? extra_headers : "");
  size_t hl = wsy_snlen(n, sizeof head);
  net_chunk *ch = net_chunk_new(hl);
  memcpy(ch->data, head, hl);
  net_conn_send_force(c, ch);
  net_chunk_unref(ch);
  hc->waiter = slot;
  hc->streaming = 1;
  *slot = c;
  /* Reading goes on, so that a peer closing the stream is noticed at once;
   * what it sends is ignored (the response never ends to make room). */
}

void httpd_stream_end(conn *c, int abort) {
  httpd_conn *hc = hc_of(c);
  hc->waiter = NULL;
  if (abort) net_conn_close(c);
  else net_conn_end(c);
}

static void http_on_tick(conn *c, uint64_t now) {
  const httpd_config *cfg = &((httpd_server *)net_loop_app(net_conn_loop(c)))->cfg;
  httpd_conn *hc = hc_of(c);
  if (hc->waiter) return; /* the owner of a deferred answer or stream keeps time */
  if (hc->req && now - hc->req_started >= cfg->handshake_timeout_ms) {
    log_debug("request timeout");
    httpd_req_free(hc->req);
    hc->req = NULL;
    httpd_fail_and_end(c, 408, "request not completed in time");
  } else if (!hc->req && !hc->answered && now - hc->last_active >= cfg->handshake_timeout_ms) {
    /* Not one byte since accept: the first request is as late as a partial
     * one, and the idle timeout (meant for keep-alive) would let a silent
     * peer hold a connection slot far longer. */
    log_debug("no request in time");
    net_conn_end(c);
  } else if (!hc->req && now - hc->last_active >= cfg->idle_timeout_ms) {
    net_conn_end(c);
  }
}

static void http_on_free(conn *c) {
  httpd_conn *hc = hc_of(c);
  httpd_req_free(hc->req);
  hc->req = NULL;
  if (hc->waiter) *hc->waiter = NULL; /* the owner must not answer a freed conn */
  hc->waiter = NULL;
  buf_free(&hc->stash);
}

static const conn_ops http_ops = {
  .name = "http",
  .on_data = http_on_data,
  .on_tick = http_on_tick,
  .on_free = http_on_free,
};

void httpd_accept(conn *c, void *ud) {
  httpd_server *hs = ud;
  httpd_conn *hc = hc_of(c);
  hc->last_active = net_loop_now(net_conn_loop(c));
  if (hs->shutting_down) {
    httpd_fail_and_end(c, 503, "server shutting down");
    return;
  }
  net_conn_set_ops(c, &http_ops);
}
