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

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/log.h"
#include "../ws/ws_conn.h"

#define MAX_HEADERS 64

typedef struct {
  uint32_t name_off, name_len, val_off, val_len;
} hdr;

struct httpd_req {
  http_parser parser;
  conn *c;
  struct app *app;
  buf raw;            /* url, then header names and values */
  buf body;
  uint32_t url_len;
  hdr h[MAX_HEADERS];
  unsigned nh;
  int last_was_value;
  int complete;       /* on_message_complete seen */
  int error_status;   /* set by a callback that refuses the request */
  char path[2048];    /* decoded path */
  const char *query;
  char method[16];
};

typedef struct httpd_conn {
  httpd_req *req;
  uint64_t last_active;
  uint64_t req_started;
} httpd_conn;

static const conn_ops http_ops;

size_t httpd_ext_size(void) { return sizeof(httpd_conn); }

static httpd_conn *hc_of(conn *c) { return net_conn_ext(c); }

const char *httpd_status_text(int s) {
  switch (s) {
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 204: return "No Content";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 426: return "Upgrade Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  default: return "Unknown";
  }
}

/* ---- request accessors ---------------------------------------------------- */

const char *httpd_req_method(const httpd_req *r) { return r->method; }
const char *httpd_req_path(const httpd_req *r) { return r->path; }
const char *httpd_req_query(const httpd_req *r) { return r->query ? r->query : ""; }

const char *httpd_req_header(const httpd_req *r, const char *name, size_t *len) {
  size_t nl = strlen(name);
  for (unsigned i = 0; i < r->nh; i++) {
    const hdr *h = &r->h[i];
    if (h->name_len == nl && strncasecmp((const char *)r->raw.data + h->name_off, name, nl) == 0) {
      if (len) *len = h->val_len;
      return (const char *)r->raw.data + h->val_off;
    }
  }
  return NULL;
}

int httpd_req_query_param(const httpd_req *r, const char *name, char *out, size_t n) {
  const char *q = r->query;
  size_t nl = strlen(name);
  while (q && *q) {
    const char *end = strchr(q, '&');
    size_t seg = end ? (size_t)(end - q) : strlen(q);
    if (seg > nl && strncmp(q, name, nl) == 0 && q[nl] == '=') {
      size_t vl = seg - nl - 1;
      if (vl >= n) return -1;
      memcpy(out, q + nl + 1, vl);
      out[vl] = '\0';
      return 0;
    }
    q = end ? end + 1 : NULL;
  }
  return -1;
}

/* True when the comma-separated header value contains token (any case). */
static int header_has_token(const char *v, size_t len, const char *token) {
  size_t tl = strlen(token), i = 0;
  while (i < len) {
    while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    size_t s = i;
    while (i < len && v[i] != ',') i++;
    size_t e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
    if (e - s == tl && strncasecmp(v + s, token, tl) == 0) return 1;
  }
  return 0;
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
  if (n < 0 || (size_t)n >= sizeof head) n = (int)strlen(head);
  size_t blen = with_body ? len : 0;
  net_chunk *ch = net_chunk_new((size_t)n + blen);
  memcpy(ch->data, head, (size_t)n);
  if (blen) memcpy(ch->data + n, body, blen);
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

void httpd_error(conn *c, int status, const char *message) {
  char body[512];
  int n = snprintf(body, sizeof body, "%d %s: %s\n", status, httpd_status_text(status), message);
  httpd_respond(c, status, "text/plain; charset=utf-8", "", body, (size_t)n);
}

/* Answers with an error and ends the connection after the response. */
static void fail_and_end(conn *c, int status, const char *message) {
  char extra[64] = "Connection: close\r\n";
  char body[512];
  int n = snprintf(body, sizeof body, "%d %s: %s\n", status, httpd_status_text(status), message);
  httpd_respond(c, status, "text/plain; charset=utf-8", extra, body, (size_t)n);
  net_conn_end(c);
}

/* ---- parser callbacks ---------------------------------------------------- */

static int raw_add(httpd_req *r, const char *at, size_t len) {
  if (buf_append(&r->raw, at, len) != WSY_OK) {
    r->error_status = 431;
    return -1;
  }
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  httpd_req *r = p->data;
  if (raw_add(r, at, len)) {
    r->error_status = 414;
    return -1;
  }
  r->url_len += (uint32_t)len;
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  httpd_req *r = p->data;
  if (r->nh == 0 || r->last_was_value) {
    if (r->nh == MAX_HEADERS) {
      r->error_status = 431;
      return -1;
    }
    hdr *h = &r->h[r->nh++];
    h->name_off = (uint32_t)r->raw.len;
    h->name_len = 0;
    h->val_off = 0;
    h->val_len = 0;
    r->last_was_value = 0;
  }
  r->h[r->nh - 1].name_len += (uint32_t)len;
  return raw_add(r, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  httpd_req *r = p->data;
  hdr *h = &r->h[r->nh - 1];
  if (!r->last_was_value) {
    h->val_off = (uint32_t)r->raw.len;
    r->last_was_value = 1;
  }
  h->val_len += (uint32_t)len;
  return raw_add(r, at, len);
}

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Decodes the path part of the URL into r->path; 0 on success. A decoded NUL
 * or a path too long is an error (400/414). */
static int decode_path(httpd_req *r) {
  const char *u = (const char *)r->raw.data;
  size_t ul = r->url_len, o = 0;
  struct http_parser_url pu;
  http_parser_url_init(&pu);
  if (http_parser_parse_url(u, ul, 0, &pu) != 0 || !(pu.field_set & (1 << UF_PATH))) return 400;
  const char *s = u + pu.field_data[UF_PATH].off;
  size_t sl = pu.field_data[UF_PATH].len;
  for (size_t i = 0; i < sl; i++) {
    int ch = (unsigned char)s[i];
    if (ch == '%') {
      if (i + 2 >= sl) return 400;
      int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
      if (hi < 0 || lo < 0) return 400;
      ch = hi * 16 + lo;
      i += 2;
      if (ch == 0) return 400;
    }
    if (o + 1 >= sizeof r->path) return 414;
    r->path[o++] = (char)ch;
  }
  r->path[o] = '\0';
  r->query = NULL;
  if (pu.field_set & (1 << UF_QUERY)) {
    size_t qo = pu.field_data[UF_QUERY].off, ql = pu.field_data[UF_QUERY].len;
    if (ql >= 1024) return 414;
    char *q = wsy_strndup(u + qo, ql);
    r->query = q;
  }
  return 0;
}

static int on_headers_complete(http_parser *p) {
  httpd_req *r = p->data;
  snprintf(r->method, sizeof r->method, "%s", http_method_str((enum http_method)p->method));
  int st = decode_path(r);
  if (st) {
    r->error_status = st;
    return -1;
  }
  if (p->content_length != ULLONG_MAX && p->content_length > r->app->cfg->max_body) {
    r->error_status = 413;
    return -1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  httpd_req *r = p->data;
  if (buf_append(&r->body, at, len) != WSY_OK) {
    r->error_status = 413;
    return -1;
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  httpd_req *r = p->data;
  r->complete = 1;
  /* Stop after each request: it is answered before the next one is parsed. */
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
  .on_url = on_url,
  .on_header_field = on_header_field,
  .on_header_value = on_header_value,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

static httpd_req *req_new(struct app *app, conn *c) {
  httpd_req *r = wsy_calloc(1, sizeof *r);
  http_parser_init(&r->parser, HTTP_REQUEST);
  r->parser.data = r;
  r->c = c;
  r->app = app;
  buf_init(&r->raw, app->cfg->max_header);
  buf_init(&r->body, app->cfg->max_body);
  return r;
}

static void req_free(httpd_req *r) {
  if (!r) return;
  buf_free(&r->raw);
  buf_free(&r->body);
  wsy_free((void *)r->query);
  wsy_free(r);
}

/* ---- routes ---------------------------------------------------------------- */

static void healthz(struct app *app, conn *c, int head_only) {
  char body[256];
  uint64_t up = (wsy_now_ms() - app->started_ms) / 1000;
  int n = snprintf(body, sizeof body,
                   "{\"status\":\"ok\",\"version\":\"%s\",\"uptime_s\":%llu,\"connections\":%u}\n",
                   WSYNC_VERSION, (unsigned long long)up, net_loop_conn_count(app->net));
  respond(c, 200, "application/json", "Cache-Control: no-store\r\n", body, (size_t)n, !head_only);
}

static int origin_allowed(struct app *app, const char *origin, size_t len) {
  const char *list = app->cfg->allowed_origins;
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

/* Validates an upgrade request (RFC 6455 4.2.1) and hands the connection to
 * ws. Returns 1 when the conn is now WebSocket (caller stops parsing). */
static int ws_route(struct app *app, conn *c, httpd_req *r, const ws_endpoint *ep, uint8_t *rest,
                    size_t rest_len) {
  size_t ul, cl, kl, vl, ol;
  const char *upg = httpd_req_header(r, "Upgrade", &ul);
  const char *con = httpd_req_header(r, "Connection", &cl);
  const char *key = httpd_req_header(r, "Sec-WebSocket-Key", &kl);
  const char *ver = httpd_req_header(r, "Sec-WebSocket-Version", &vl);
  const char *org = httpd_req_header(r, "Origin", &ol);
  if (!upg || !header_has_token(upg, ul, "websocket")) {
    httpd_respond(c, 426, "text/plain; charset=utf-8",
                  "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
                  "426 Upgrade Required: this endpoint speaks WebSocket\n", 52);
    return 0;
  }
  if (strcmp(r->method, "GET") != 0) {
    fail_and_end(c, 400, "WebSocket upgrade must use GET");
    return 0;
  }
  if (r->parser.http_major < 1 || (r->parser.http_major == 1 && r->parser.http_minor < 1)) {
    fail_and_end(c, 400, "WebSocket upgrade needs HTTP/1.1");
    return 0;
  }
  if (!httpd_req_header(r, "Host", NULL)) {
    fail_and_end(c, 400, "missing Host header");
    return 0;
  }
  if (!con || !header_has_token(con, cl, "upgrade")) {
    fail_and_end(c, 400, "Connection header must contain Upgrade");
    return 0;
  }
  if (!ver || vl != 2 || memcmp(ver, "13", 2) != 0) {
    const char msg[] = "426 Upgrade Required: Sec-WebSocket-Version 13 is supported\n";
    httpd_respond(c, 426, "text/plain; charset=utf-8",
                  "Sec-WebSocket-Version: 13\r\nConnection: close\r\n", msg, sizeof msg - 1);
    net_conn_end(c);
    return 0;
  }
  if (!key || !ws_key_valid(key, kl)) {
    fail_and_end(c, 400, "missing or malformed Sec-WebSocket-Key");
    return 0;
  }
  if (!origin_allowed(app, org, org ? ol : 0)) {
    log_info("websocket refused: origin %.*s not allowed", org ? (int)ol : 6, org ? org : "(none)");
    fail_and_end(c, 403, "origin not allowed");
    return 0;
  }
  char accept[29];
  ws_accept_key(key, kl, accept);
  ws_conn_upgrade(app, c, accept, ep, r, rest, rest_len);
  return 1;
}

/* Routes one complete request. Returns 1 when the connection left HTTP. */
static int route(struct app *app, conn *c, httpd_req *r, uint8_t *rest, size_t rest_len) {
  const char *path = r->path;
  int is_get = strcmp(r->method, "GET") == 0, is_head = strcmp(r->method, "HEAD") == 0;
  const ws_endpoint *ep = NULL;
  if (strcmp(path, "/v1/ws") == 0) {
    /* The sync protocol arrives with the sync core; until then the route
     * exists and says so. */
    fail_and_end(c, 503, "the sync endpoint is not available in this build");
    return 0;
  }
  if (app->cfg->echo_endpoint && strcmp(path, "/v1/echo") == 0) ep = &ws_echo_endpoint;
  if (app->cfg->echo_endpoint && strcmp(path, "/v1/broadcast") == 0) ep = &ws_broadcast_endpoint;
  if (ep) return ws_route(app, c, r, ep, rest, rest_len);
  if (strcmp(path, "/healthz") == 0) {
    if (!is_get && !is_head) httpd_respond(c, 405, "text/plain", "Allow: GET, HEAD\r\n", "405 Method Not Allowed\n", 23);
    else healthz(app, c, is_head);
    return 0;
  }
  if (app->static_root[0]) {
    if (!is_get && !is_head) {
      httpd_respond(c, 405, "text/plain", "Allow: GET, HEAD\r\n", "405 Method Not Allowed\n", 23);
      return 0;
    }
    if (httpd_static(app, c, r, is_head) == 0) return 0;
  }
  httpd_error(c, 404, "no such resource");
  return 0;
}

/* ---- connection ops ------------------------------------------------------ */

static void http_on_data(conn *c, uint8_t *data, size_t len) {
  struct app *app = net_loop_app(net_conn_loop(c));
  httpd_conn *hc = hc_of(c);
  hc->last_active = net_loop_now(net_conn_loop(c));
  while (len > 0 && !net_conn_closing(c)) {
    if (!hc->req) {
      hc->req = req_new(app, c);
      hc->req_started = hc->last_active;
    }
    httpd_req *r = hc->req;
    size_t n = http_parser_execute(&r->parser, &settings, (const char *)data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&r->parser);
    if (r->error_status || (err != HPE_OK && err != HPE_PAUSED)) {
      int st = r->error_status ? r->error_status : 400;
      const char *why = r->error_status == 431 ? "request headers too large"
                        : r->error_status == 413 ? "request body too large"
                        : r->error_status == 414 ? "request URI too long"
                        : err == HPE_HEADER_OVERFLOW ? "request headers too large"
                        : http_errno_description(err);
      if (err == HPE_HEADER_OVERFLOW) st = 431;
      log_debug("bad request (%d): %s", st, why);
      req_free(r);
      hc->req = NULL;
      fail_and_end(c, st, why);
      return;
    }
    data += n;
    len -= n;
    if (!r->complete && !r->parser.upgrade) continue; /* needs more bytes */
    int keep = http_should_keep_alive(&r->parser);
    int left_http;
    if (r->parser.upgrade) {
      left_http = route(app, c, r, data, len);
      if (!left_http && !net_conn_closing(c)) net_conn_end(c); /* cannot resume HTTP after an upgrade request's bytes */
      len = 0;
    } else {
      left_http = route(app, c, r, NULL, 0);
      if (!keep && !left_http) net_conn_end(c);
    }
    if (left_http) {
      /* The ext now belongs to ws; the request memory is ours to free. */
      req_free(r);
      return;
    }
    req_free(r);
    hc->req = NULL;
  }
}

static void http_on_tick(conn *c, uint64_t now) {
  struct app *app = net_loop_app(net_conn_loop(c));
  httpd_conn *hc = hc_of(c);
  if (hc->req && now - hc->req_started >= app->cfg->handshake_timeout_ms) {
    log_debug("request timeout");
    req_free(hc->req);
    hc->req = NULL;
    fail_and_end(c, 408, "request not completed in time");
  } else if (!hc->req && now - hc->last_active >= app->cfg->idle_timeout_ms) {
    net_conn_end(c);
  }
}

static void http_on_free(conn *c) {
  httpd_conn *hc = hc_of(c);
  req_free(hc->req);
  hc->req = NULL;
}

static const conn_ops http_ops = {
  .name = "http",
  .on_data = http_on_data,
  .on_tick = http_on_tick,
  .on_free = http_on_free,
};

void httpd_accept(conn *c, void *ud) {
  struct app *app = ud;
  httpd_conn *hc = hc_of(c);
  hc->last_active = net_loop_now(app->net);
  if (app->shutting_down) {
    fail_and_end(c, 503, "server shutting down");
    return;
  }
  net_conn_set_ops(c, &http_ops);
}
