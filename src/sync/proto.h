/* proto.h -- the wire side of the sync protocol (PROTOCOL.md 1, 3-9):
 * decoding a message (one JSON object, nesting and number limits), request
 * ids, the rate limit, dispatch to the handlers, and the requests that are
 * about membership (join, leave) and about a member's writes (op, publish,
 * presence, cursor). The WebSocket endpoint (engine_ws_endpoint) lives here;
 * the HTTP transports feed the same dispatch (fallback.h).
 *
 * Loop thread only. A handler answers every request it is given: a reply,
 * an error message with the request's id as re, or (after welcome) nothing
 * for the kinds that expect no reply (presence, cursor). */
#ifndef WSY_PROTO_H
#define WSY_PROTO_H

#include "engine_int.h"

/* Parses JSON text as the protocol does (duplicate members refused): a
 * number jansson cannot hold (an integer beyond int64, a real beyond a
 * double) does not fail the text but becomes a marker (sync.h:
 * sync_number_marker) that the member's user refuses or ignores
 * (PROTOCOL.md 1.1). NULL with *jerr when the text is not JSON; then
 * jerr->position is -1 when it would not point into data. */
json_t *proto_parse(const char *data, size_t len, json_error_t *jerr);
/* A request kept until later (a cluster decides it again if its batch is
 * fenced out): its text when req is the message being dispatched and the
 * fast reader took it (*text set, NULL returned: a copy is cheaper to keep
 * and to free than a tree), else req itself (a reference). */
json_t *proto_keep(engine *e, json_t *req, char **text, size_t *len);
/* The tree of a text proto_keep kept (NULL: out of memory). */
json_t *proto_reread(const char *text, size_t len);
/* Handles one decoded message (borrowed). */
void proto_dispatch(sess *s, json_t *req);
/* Nesting of a JSON value beyond limit: v is at level depth, each array or
 * object inside adds one, scalars (and number markers) add none. */
int proto_too_deep(json_t *v, int depth, int limit);

/* The request's room name, or NULL after answering bad_request/room_invalid. */
const char *proto_room_name(sess *s, json_t *req);
/* The request's room, of which s must be a member (with write permission
 * when need_write); NULL after answering. */
const char *proto_room_member(sess *s, json_t *req, member **out, int need_write);
/* {"type": type, "re": req.id, "room": r.name}. */
json_t *proto_reply(json_t *req, const char *type, const room *r);

/* join.c: join (with catch-up) and leave. */
void join_handle(sess *s, json_t *req);
/* A join the authorization hook has allowed (it is not asked again). */
void join_handle_asked(sess *s, json_t *req);
/* An op that its op hook accepted (req's op possibly replaced): decided by
 * the room as any op, without asking again. */
void proto_op_decided(sess *s, json_t *req);
/* A session's op or publish deferred by commit_admit (cluster.h), decided
 * again: past the op hook, which already decided it. */
void proto_redecide(sess *s, json_t *req);
void join_leave(sess *s, json_t *req);
/* The device cursors of a loaded room, kept in memory so that a join to
 * it reads no store (room.cursors): loaded with the room (exists: the store
 * has the room; else there are none), noted as recorded. 0 or a wsy_err. */
int join_cursors_load(engine *e, room *r, int exists);
void join_cursor_note(room *r, const char *user, const char *device, uint64_t seq);
void join_cursors_free(room *r);
/* Joins of r waiting for its pending entries (join.c) go on when nothing
 * of r is pending or, on one node, at the latest at the first entry done
 * after JOIN_WAIT_MS (then read from the store; in a cluster r's writes
 * wait behind them from then on instead, cluster_joins_starving): called
 * whenever an entry of r is done. */
#define JOIN_WAIT_MS 250
void join_pending_done(engine *e, room *r);
/* A queue of joins held until something of their room is ready (a room's
 * pend_q, settle_q), in order; the session's later messages wait behind
 * them (hook.h). */
void join_hold_add(join_hold **q, sess *s, json_t *req);
/* Answers the joins of q (taken over) in order; waited: they waited for
 * the room's pending entries (pend_q). */
void join_hold_run(engine *e, room *r, join_hold *q, int waited);
/* Frees the joins of *q unanswered (the room is freed at shutdown). */
void join_hold_free(join_hold **q);
/* Store walk callback: log entries into a JSON array (ud: json_t *). */
int join_collect_op(uint64_t seq, const char *msg, size_t len, void *ud);

#endif
