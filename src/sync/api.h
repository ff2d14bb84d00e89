/* api.h -- the backend HTTP API (PROTOCOL.md 12: /v1/rooms/{room}[/what],
 * behind --api-key) and /metrics (Prometheus text). Writes go through the
 * same admission, room kind and commit path as a client's; reads come from
 * the store (the committed state) and, for presence, from memory.
 *
 * Loop thread only. Every request gets an answer: now, or after the commit
 * of its write (httpd_defer). Errors are the JSON error object. */
#ifndef WSY_API_H
#define WSY_API_H

#include "engine_int.h"

/* Routes (httpd_handler; ud: engine). */
void api_rooms_route(void *ud, conn *c, httpd_req *r);
void api_metrics_route(void *ud, conn *c, httpd_req *r);
void api_rooms_list_route(void *ud, conn *c, httpd_req *r); /* GET /v1/rooms */
void api_users_route(void *ud, conn *c, httpd_req *r);      /* /v1/users/{user}/disconnect */
/* Ends every session of user on this node (4003, access revoked); how many. */
size_t api_disconnect_local(engine *e, const char *user);
/* {"type":"error","code","message"} with status. */
void api_error(conn *c, int status, const char *code, const char *message);
/* GET /v1/rooms/{room}[/what] once routed and allowed (api_read.c). */
void api_backend_read(engine *e, conn *c, httpd_req *r, const char *name, const char *what);
/* GET /v1/rooms once its parameters are valid (api_read.c): the rooms after
 * the name after, at most limit (1-1000), and whether more follow. */
void api_rooms_list_read(engine *e, conn *c, const char *after, size_t limit);
/* A non-negative integer query parameter: 0 when absent (*out unchanged), 1
 * when set, -1 after answering 400 (not digits, or beyond 2^63). */
int api_query_uint(conn *c, httpd_req *r, const char *name, uint64_t *out);
/* At shutdown: the backend reads still waiting for the store are answered
 * 503 (their fetches are dropped with the store). */
void api_reads_flush(engine *e);
/* A backend write that waited for a fetch of its room
 * (cluster_api_write_wait), its answer deferred: kind API_OPS (POST .../ops,
 * body req), API_PUBLISH (.../publish) or API_DELETE (DELETE, req NULL).
 * Decided on rm now (status 0), or refused with status (rm NULL; e may be
 * NULL): 409 a Yjs room, 500 the room could not be read, 503 shutting
 * down. c NULL: the client is gone (the write is still decided). line: its
 * access log line. */
#define API_OPS 0
#define API_PUBLISH 1
#define API_DELETE 2
struct room;
void api_write_resume(engine *e, conn *c, struct room *rm, json_t *req, int kind, const char *line, int status);
/* DELETE /v1/rooms/{room} in a cluster, the room not loaded here or to be
 * read again (api_read.c): its row is fetched; a room the store does not
 * have is answered 404, one it has is loaded without blocking and deleted
 * (api_delete_go, once the row was read: c is deferred, NULL when gone). */
void api_delete_check(engine *e, conn *c, const char *name);
void api_delete_go(engine *e, conn *c, const char *name, const char *line);
/* Commit figures for wsync_commit_seconds (commit.c records, api.c prints). */
void api_commit_observed(engine *e, double seconds, int failed);
/* An entry decided on another node reached this node's members seconds
 * after its decision (its ts): wsync_bus_lag_seconds. */
void api_lag_observed(engine *e, double seconds);

#endif
