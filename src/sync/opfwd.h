/* opfwd.h -- a session's ops decided on the room's OWNER node (cluster,
 * --forward-ops; docs/CLUSTER.md, "One decider per room").
 *
 * Without it any node decides any room's ops, and the fence (cluster.h)
 * settles collisions: when two nodes write one room at once, one batch is
 * fenced out, its node reads the room again and decides its ops again.
 * With it, each room has one OWNER among the nodes up: the highest of a
 * hash of (node, room) over this node and the nodes heard from on the bus
 * (rendezvous hashing, so a node joining or leaving moves only its share
 * of the rooms). A session's op (or stored publish with a cid) for a room
 * another node owns is sent
 * there (bus_send_node, kind "op.f": the session's wire token, the room and
 * the epoch its member joined, its user and dedupe key, the request) and decided there, on behalf of
 * the session, by a GHOST: a session with no connection that stands for
 * (origin node, session, room) on the owner. A ghost is a member of its
 * room without being in its member list (no presence, no broadcasts), has
 * write permission (the origin checked it), and runs the session's own
 * code for ops: deferrals, dedupe lookups, refusals in order behind
 * pending entries, locks held by the origin session (by its wire token,
 * lock.c). Every message the ghost is sent (ack, duplicate ack, error) goes
 * back to the origin ("op.r") with the seq its room had delivered on the
 * owner when it was sent ("after"). The fence stays as the safety net:
 * two nodes that disagree about the owner for a moment (one has not heard
 * of a node yet) are settled by it as before.
 *
 * ORDER. A session's ops for one room are a STREAM. While some are out at
 * a node, the next go to the same node (Redis keeps one node's messages to
 * another in order, and the ghost decides them in order), whatever the
 * owner is now; while some are being decided here (the member's inflight),
 * the next are decided here. An answer reaches the session only once the
 * origin has delivered the room up to its "after", so the session sees an
 * ack after every entry before its op, as on one node, and a refusal's
 * state never ahead of the entries it has.
 *
 * FAILURES. An owner gone (no heartbeat), the bus link down, or an answer
 * late by OPFWD_ANSWER_MS (the owner is then passed over for
 * OPFWD_SUSPECT_MS): the stream's ops are decided again, in order, here
 * (the session's later ops go to the owner chosen then). An op the first owner had stored is found by
 * its cid (every op has one): answered as a duplicate with its seq. So an
 * op is never lost and never applied twice; a late answer of the first
 * owner is dropped.
 *
 * Loop thread only. */
#ifndef WSY_OPFWD_H
#define WSY_OPFWD_H

#include "engine_int.h"

#define OPFWD_ANSWER_MS 5000
#define OPFWD_SUSPECT_MS 30000
#define OPFWD_GHOST_IDLE_MS 30000
#define OPFWD_HELD_MS 5000 /* an answer waits at most this long for its "after" */

/* The origin: 1 when s's op or stored publish req (for m's room) went to
 * another node, to be answered from there; 0 when it is decided here. */
int opfwd_route(sess *s, member *m, json_t *req);
/* The origin: 1 when s's write req of type (a publish not stored or
 * without a cid, a lock, an unlock) must wait for the ops s has out for its
 * room: s is held (hook.h) with req first in line until the last of them
 * is answered. */
int opfwd_wait(sess *s, const char *type, json_t *req);
/* Direct bus messages "op.f" (owner) and "op.r" (origin). */
void opfwd_direct(engine *e, const char *from, const char *kind, const uint8_t *body, size_t len);
/* A ghost's message (sess_send): back to its origin. */
void opfwd_ghost_send(sess *g, net_chunk *frame);
/* A ghost's op, taken up again after a wait (proto_dispatch, release of a
 * room load): decided now, the room loaded first if it is not. */
void opfwd_ghost_go(sess *g, json_t *req);
/* 1 when g stands for the session whose wire token is rid. */
int opfwd_ghost_is(const sess *g, const char *rid);
/* r delivered up to r->delivered: the answers waiting for it go. */
void opfwd_delivered(engine *e, room *r);
/* Node events, the bus link, the periodic sweep (cluster.c). */
void opfwd_node(engine *e, const char *node, int up);
void opfwd_link(engine *e, int up);
void opfwd_sweep(engine *e);
/* r was found deleted through another node (r->gone): the ghosts let it
 * go, so that it unloads; their later ops are refused with not_joined. */
void opfwd_room_gone(engine *e, room *r);
/* r is being freed: its waiting answers are dropped. */
void opfwd_room_free(room *r);
/* Shutdown: streams are answered by deciding here (opfwd_free_streams,
 * before the last commits), ghosts let go (opfwd_free, after them). */
void opfwd_free_streams(engine *e);
void opfwd_free(engine *e);

#endif
