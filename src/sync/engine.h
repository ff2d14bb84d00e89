/* engine.h -- the sync protocol on /v1/ws (docs/PROTOCOL.md): sessions,
 * rooms and membership, ops and publishes sequenced per room, group commit
 * to the store, acknowledgement and fan-out after commit, catch-up on join,
 * presence.
 *
 * Loop thread only, except the commit itself, which runs on libuv's thread
 * pool: the ops accepted during one loop iteration form one store batch;
 * while it commits, the next iteration's ops form the next one. Acks and
 * broadcasts are sent only when the batch holding their op has committed. */
#ifndef WSY_ENGINE_H
#define WSY_ENGINE_H

#include "../app.h"
#include "../ws/ws_conn.h"

typedef struct engine engine;

/* Opens the store in cfg->data_dir. 0, or a negative wsy_err with err set. */
int engine_new(struct app *app, engine **out, char *err, size_t errlen);
/* Waits for an in-flight commit, commits what is pending, closes the store. */
void engine_free(engine *e);

extern const ws_endpoint engine_ws_endpoint;

/* Shutdown begins: SSE streams and pending polls are told 1001. */
void engine_shutdown(engine *e);

typedef struct httpd_req httpd_req;
/* The backend API (/v1/rooms/...) and /metrics; answers every request. */
void engine_http(struct app *app, conn *c, httpd_req *r);

#endif
