/* httpd.h -- HTTP/1.1 on a net connection: request parsing (http-parser),
 * routing, responses, static files, and the hand-over to WebSocket.
 *
 * Loop thread only. A connection starts here (httpd_accept) and stays in
 * HTTP until a route upgrades it; keep-alive and pipelining are supported,
 * requests are capped (headers: max_header -> 431; body: max_body -> 413),
 * and a connection that does not finish a request within the handshake
 * timeout, or idles longer than the idle timeout between requests, is
 * closed. */
#ifndef WSY_HTTPD_H
#define WSY_HTTPD_H

#include <stddef.h>

#include "../net/net.h"

/* ---- the server: settings and routes -------------------------------------- */

typedef struct httpd_server httpd_server; /* opaque */
typedef struct httpd_req httpd_req;

typedef struct httpd_config {
  size_t max_header;                 /* request line + headers; past it 431 */
  size_t max_body;                   /* past it 413 */
  unsigned handshake_timeout_ms;     /* a request must complete within it (408) */
  unsigned idle_timeout_ms;          /* keep-alive idle between requests */
} httpd_config;

/* Answers r on c, at once or later (httpd_defer, httpd_stream_begin). r is
 * valid during the call only. */
typedef void (*httpd_handler)(void *ud, conn *c, httpd_req *r);
/* A route that may take the connection out of HTTP, e.g. a WebSocket
 * upgrade: rest[0..rest_len) are the bytes that followed the request (they
 * belong to the new protocol). Returns 1 when c left HTTP; 0 when it
 * answered in HTTP (an upgrade request answered so ends the connection). */
typedef int (*httpd_upgrade_handler)(void *ud, conn *c, httpd_req *r, uint8_t *rest, size_t rest_len);

/* Routes are registered by the program (main), never by httpd: transport
 * knows paths and callbacks only. cfg is copied. */
httpd_server *httpd_new(const httpd_config *cfg);
void httpd_free(httpd_server *hs);
/* Exact path. */
void httpd_route(httpd_server *hs, const char *path, httpd_handler fn, void *ud);
/* Every path that starts with prefix. */
void httpd_route_prefix(httpd_server *hs, const char *prefix, httpd_handler fn, void *ud);
/* Exact path, for requests that may upgrade the connection. */
void httpd_route_upgrade(httpd_server *hs, const char *path, httpd_upgrade_handler fn, void *ud);
/* Every path that starts with prefix, for requests that may upgrade the
 * connection (the rest of the path names what to open, e.g. a room). */
void httpd_route_upgrade_prefix(httpd_server *hs, const char *prefix, httpd_upgrade_handler fn, void *ud);
/* What no route matched; without one, 404. */
void httpd_route_default(httpd_server *hs, httpd_handler fn, void *ud);
/* From now on new connections are answered 503 and closed. */
void httpd_shutdown(httpd_server *hs);
int httpd_shutting_down(const httpd_server *hs);

/* Bytes of per-connection state httpd keeps inside the conn (net ext). */
size_t httpd_ext_size(void);
/* net accept callback; ud is the httpd_server, which must also be the net
 * loop's user pointer (net_loop_new). */
void httpd_accept(conn *c, void *ud);

/* ---- request.c: one request, parsed (pure, no I/O) ---------------------- */

/* A new request parser; headers (with the request line) are capped at
 * max_header bytes, the body at max_body. Owned by the caller. */
httpd_req *httpd_req_new(size_t max_header, size_t max_body);
void httpd_req_free(httpd_req *r);
/* Feeds bytes; *used gets how many were consumed (the rest belongs to the
 * next request, or to the new protocol after an upgrade). Returns 0 when
 * more bytes are needed, 1 when the request is complete (or is an upgrade
 * request whose headers are complete), or an HTTP error status (400, 413,
 * 414, 431, 505), sticky, with httpd_req_error() saying why. */
int httpd_req_feed(httpd_req *r, const uint8_t *data, size_t len, size_t *used) WSY_WUR;
const char *httpd_req_error(const httpd_req *r);
int httpd_req_upgrade(const httpd_req *r);
int httpd_req_keep_alive(const httpd_req *r);
int httpd_req_http11(const httpd_req *r);  /* HTTP/1.1 or later */
const uint8_t *httpd_req_body(const httpd_req *r, size_t *len);
/* True when the comma-separated header value contains token (any case). */
int httpd_header_has_token(const char *v, size_t len, const char *token);
const char *httpd_req_method(const httpd_req *r);
const char *httpd_req_path(const httpd_req *r);   /* decoded path, NUL-terminated */
const char *httpd_req_query(const httpd_req *r);  /* raw query or "" */
const char *httpd_req_url(const httpd_req *r);    /* request target as received */
/* Header value by case-insensitive name, NULL when absent; *len gets its size. */
const char *httpd_req_header(const httpd_req *r, const char *name, size_t *len);
/* The same for the nth header of that name (0: the first), for list-valued
 * headers a client may send more than once (Sec-WebSocket-Extensions). */
const char *httpd_req_header_nth(const httpd_req *r, const char *name, unsigned nth, size_t *len);
/* Query parameter value (first match, undecoded) into out; 0 when found. */
int httpd_req_query_param(const httpd_req *r, const char *name, char *out, size_t n);

/* Queues a complete response. extra_headers is "" or CRLF-terminated lines. */
void httpd_respond(conn *c, int status, const char *content_type, const char *extra_headers,
                   const void *body, size_t len);
/* The response to a HEAD: the headers of the GET (Content-Length: len), no body. */
void httpd_respond_head(conn *c, int status, const char *content_type, const char *extra_headers,
                        size_t len);
/* Defers the answer to the request being routed: reading pauses, later
 * pipelined requests wait, and *slot is set to c until the connection is
 * freed (then *slot becomes NULL, and nobody may answer). */
void httpd_defer(conn *c, conn **slot);
/* The deferred answer (a JSON body); reading and pipelining resume. */
void httpd_deferred_respond(conn *c, int status, const char *json_body);
/* The deferred answer with any content type and extra headers. */
void httpd_deferred_answer(conn *c, int status, const char *content_type, const char *extra_headers,
                           const void *body, size_t len);
/* Answers the request being routed with an endless 200 response (no
 * Content-Length; the body ends when the connection closes), e.g. an SSE
 * stream: the caller then queues body bytes with net_conn_send. *slot is
 * set to c until the connection is freed (then NULL). Later bytes from the
 * peer are ignored; no timeout applies. */
void httpd_stream_begin(conn *c, conn **slot, const char *content_type, const char *extra_headers);
/* Ends a stream: flushed and closed gracefully, or at once with abort. The
 * slot is released (not written again). */
void httpd_stream_end(conn *c, int abort);
/* An error response with a small text body "<status> <reason>: <message>\n". */
void httpd_error(conn *c, int status, const char *message);
/* The same, then the connection ends after the response. */
void httpd_fail_and_end(conn *c, int status, const char *message);
/* A JSON body (the caller's text, NUL-terminated) with Cache-Control: no-store
 * and extra_headers ("" or CRLF-terminated lines). */
void httpd_json(conn *c, int status, const char *extra_headers, const char *json);
/* The status of the response queued on c since its request was routed, 0
 * when none yet (the answer is deferred): for an access log line. */
int httpd_answered_status(conn *c);
/* Requests whose path starts with prefix get their request errors (400,
 * 413, 414, 431) as the JSON error object of PROTOCOL.md 12 instead of
 * text. prefix is kept (not copied); at most 8 prefixes. */
void httpd_json_errors(httpd_server *hs, const char *prefix);
/* 405 with Allow: allow, and the JSON error object of PROTOCOL.md 12. */
void httpd_method_not_allowed(conn *c, const char *allow);
const char *httpd_status_text(int status);
/* True when list (comma-separated origins, as --allowed-origins) is NULL or
 * empty, or lists origin (or "*"). */
int httpd_origin_allowed(const char *list, const char *origin, size_t len);

/* static.c: serves GET/HEAD of path from root (a realpath). Returns 0 when a
 * response was queued (2xx/4xx), WSY_NOT_FOUND when there is no such file. */
int httpd_static(const char *root, conn *c, const httpd_req *r, int head_only);
const char *httpd_content_type(const char *path);

#endif
