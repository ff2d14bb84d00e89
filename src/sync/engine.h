/* engine.h -- the sync protocol (docs/PROTOCOL.md) as main sees it: one
 * engine per event loop, built on a store (the durable log, store.h) and a
 * bus (bus.h), serving the WebSocket endpoint /v1/ws, the HTTP transports
 * (/v1/send, /v1/sse, /v1/poll), the backend API (/v1/rooms/...) and
 * /metrics. main registers those routes with httpd; the engine knows no
 * paths but its own sub-resources. docs/SERVER.md draws the modules and the
 * path of one op.
 *
 * Loop thread only; the store commits off the loop and reports back. Acks
 * and broadcasts are sent only when the batch holding their op has
 * committed. */
#ifndef WSY_ENGINE_H
#define WSY_ENGINE_H

#include "../auth/auth.h"
#include "../config/config.h"
#include "../http/httpd.h"
#include "../store/store.h"
#include "../ws/ws_conn.h"

typedef struct engine engine;

/* Takes the store (closed by engine_free). 0, or a negative wsy_err with
 * err set. */
int engine_new(uv_loop_t *loop, net_loop *net, const wsy_config *cfg, store *st, engine **out, char *err,
               size_t errlen);
/* Ends every session, waits for an in-flight commit, commits what is
 * pending, closes the store. NULL is allowed. */
void engine_free(engine *e);
/* Shutdown begins: SSE streams and pending polls are told 1001, HTTP
 * requests get 503. */
void engine_shutdown(engine *e);

/* The WebSocket endpoint of /v1/ws (its route's ud: the engine). */
extern const ws_endpoint engine_ws_endpoint;
/* The WebSocket endpoint of /v1/yjs/{room} (its route's ud: the engine):
 * Yjs rooms over y-protocols (docs/YJS.md). Register it on the prefix
 * "/v1/yjs/" (httpd_route_upgrade_prefix): the rest of the path is the room. */
extern const ws_endpoint engine_yjs_endpoint;
/* HTTP routes (httpd_handler; ud: the engine). */
void engine_route_fallback(void *ud, conn *c, httpd_req *r);  /* /v1/send, /v1/sse, /v1/poll */
void engine_route_rooms(void *ud, conn *c, httpd_req *r);     /* /v1/rooms/ (prefix) */
void engine_route_metrics(void *ud, conn *c, httpd_req *r);   /* /metrics */
/* The keys tokens are verified with from now on (a reloaded JWKS document;
 * NULL: none). Borrowed: the caller keeps jwks alive until the next call or
 * engine_free. Sessions already welcomed keep their identity. */
void engine_set_jwks(engine *e, const auth_jwks *jwks);
void engine_route_rooms_list(void *ud, conn *c, httpd_req *r); /* /v1/rooms (exact) */
void engine_route_users(void *ud, conn *c, httpd_req *r);     /* /v1/users/ (prefix) */
/* For /healthz: live sessions, loaded rooms, the store's and bus's names;
 * *degraded is NULL when healthy, else why not (the last commit failed: a
 * full disk, an I/O error; cleared by the next commit that succeeds). */
void engine_health(engine *e, size_t *sessions, size_t *rooms, const char **store_name, const char **bus_out,
                   const char **degraded);

#endif
