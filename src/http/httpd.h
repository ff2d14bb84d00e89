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

#include "../app.h"
#include "../net/net.h"

/* Bytes of per-connection state httpd keeps inside the conn (net ext). */
size_t httpd_ext_size(void);
/* net accept callback; ud is the struct app. */
void httpd_accept(conn *c, void *ud);

/* ---- request.c: one request, parsed (pure, no I/O) ---------------------- */

typedef struct httpd_req httpd_req;
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
/* An error response with a small text body "<status line>: <message>\n". */
void httpd_error(conn *c, int status, const char *message);
const char *httpd_status_text(int status);
/* True when --allowed-origins is unset, or lists origin (or "*"). */
int httpd_origin_allowed(struct app *app, const char *origin, size_t len);

/* static.c: serves GET/HEAD of path from app->static_root. Returns 0 when a
 * response was queued (2xx/4xx), WSY_NOT_FOUND when there is no such file. */
int httpd_static(struct app *app, conn *c, const httpd_req *r, int head_only);
const char *httpd_content_type(const char *path);

#endif
