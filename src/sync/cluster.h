/* cluster.h -- several nodes sharing rooms (docs/CLUSTER.md): the bus
 * between nodes, the order in which a room's entries reach its members, and
 * keeping each node's loaded rooms in step with the shared store.
 *
 * Any node may write any room. A node's loaded room is a REPLICA of the
 * room's log: the node decides an op against it (LWW, base checks, locks,
 * OT) and commits it with the seqs it assigned; the store FENCES the commit
 * by the room's seq (store.h: WSY_STALE when another node committed first),
 * so a decision is only ever stored if it was made on the room's current
 * state. Entries committed by other nodes arrive over the bus; they are
 * delivered to this node's members and make the replica STALE: it is read
 * again from the store (room_reload) before the next decision or join needs
 * it. A failed (stale) commit is refused to its writers with `stale`, to be
 * re-sent with the same cid (PROTOCOL.md 11.2).
 *
 * ORDER. Per room, r->delivered is the last seq handed to this node's
 * members. An entry (local commit, bus, refill) with seq <= delivered is a
 * duplicate and dropped; one past delivered + 1 first refills the missing
 * entries from the store, in order. Rooms are also checked against the
 * store every --cluster-check (and at once when the bus link comes back),
 * so a lost last entry is found. So no duplicate, no gap and no reorder
 * reaches a member, whatever the bus does; losing the bus costs latency.
 *
 * With one node (no --bus) the same code runs over the in-process bus:
 * entries are committed and delivered in seq order, nothing is ever stale.
 *
 * Loop thread only. */
#ifndef WSY_CLUSTER_H
#define WSY_CLUSTER_H

#include "engine_int.h"

/* Makes e->bus (Redis with cfg->bus_url, else in-process) and e->node_id.
 * 0, or a wsy_err with a sentence in err. */
int cluster_init(engine *e, char *err, size_t errlen);
/* Stops the timer; the bus itself is freed by the engine. */
void cluster_deinit(engine *e);

/* Subscribes r on the bus (cluster_room_loaded without asking the other
 * nodes for their members: for a room still loading, room.h). */
void cluster_room_subscribe(engine *e, room *r);
/* A room was loaded (first time: delivered = its seq) or is unloading. */
void cluster_room_loaded(engine *e, room *r);
void cluster_room_unloading(engine *e, room *r);
/* r's deletion was stored here: the other nodes are told (a direct message
 * to each), so that their replicas are read again at once and their
 * members leave (room.c, room_reload); without the message the periodic
 * check finds it within a second or two. */
void cluster_room_deleted(engine *e, room *r);

/* Before a decision or a join served from memory: a stale replica with
 * nothing pending is read again from the store. 0 when r is fresh (or not
 * stale), else a wsy_err (reload failed) or WSY_STALE (entries pending:
 * the caller refuses with `stale`). */
int cluster_fresh(engine *e, room *r);

/* ---- replicas made current without blocking the loop (store_fetch) ----
 * A session's write to a stale, broken or lock-stale replica waits
 * (commit.h, deferred) for a fetch of the room, then is decided on the
 * room as read; a join first waits for a fetch STARTED AFTER IT ARRIVED
 * (its row and the entries past what was delivered, and the whole state
 * when the replica is behind), so it sees every entry acknowledged before
 * it, on any node, as a join on one node does. Several joins share a
 * fetch. A failed fetch refuses them (internal, retryable). */
/* 1 when s's join of r waits (held; run again later), 0 to go on now.
 * waited: it has waited for r's pending entries already (join.c), so it
 * goes before the backend writes queued behind waiting joins. */
int cluster_join_wait(engine *e, room *r, sess *s, json_t *req, int waited);
/* A backend write (POST .../ops or .../publish) to the room name: in a
 * cluster, when the room is not loaded here (or still loading), or its
 * replica must be read again, or joins of it have waited JOIN_WAIT_MS
 * (cluster_joins_starving: it waits behind them), the request is deferred
 * and waits, as a
 * join does, for a fetch with the room's state started after it arrived
 * (the room loaded without blocking), then goes on in api_write_resume.
 * 1 when it waits, 0 to go on now. */
int cluster_api_write_wait(engine *e, conn *c, const char *name, json_t *req, int kind);
/* Whether cluster_api_write_wait would wait for the room name now. */
int cluster_api_write_needs_fetch(engine *e, const char *name);
/* A join to the room name that is not loaded here (or still loading): in a
 * cluster the room is loaded without blocking (room.h, loading) and the
 * join waits, like the one above, for a fetch with the room's state started
 * after it arrived. 1 when it waits so, 0 outside a cluster or when the
 * room is loaded. */
int cluster_join_load(engine *e, const char *name, sess *s, json_t *req);
/* Starts a fetch of r (with its state when state) unless one is in flight
 * (then the next one gets the state); its answer brings r up to date and
 * decides r's deferred writes again. */
void cluster_fetch(engine *e, room *r, int state);
/* After r's pending entries are done: a fetch answered meanwhile was set
 * aside (it may predate them); another starts now. */
void cluster_fetch_if_due(engine *e, room *r);
/* A join that found r's replica not readable from memory (stale, broken),
 * or that needs r's log, waits (its session held) for a fetch started
 * after now, and is decided again from its answer (cluster.h). */
void cluster_join_refetch(engine *e, room *r, sess *s, json_t *req, int waited);
/* 1 when joins of r have waited JOIN_WAIT_MS (join.c) for r's pending
 * entries or for a fetch: then r's writes wait behind them, so that r has
 * nothing pending for a moment and the joins are served from memory
 * rather than read from the store on the loop. */
int cluster_joins_starving(engine *e, room *r);
/* Frees the joins waiting for r's fetch (r is going away: they end). */
void cluster_fetch_q_free(room *r);

/* Reads the entries of r after r->delivered up to upto (0: the store's
 * last) from the store and delivers them. 0 or a wsy_err. */
int cluster_refill(engine *e, room *r, uint64_t upto);

/* ---- presence across nodes (presence.c) ---------------------------------- */

/* Another node's ephemeral message for r (or this node's own, origin NULL):
 * presence and cursor events update what this node knows of the other
 * nodes' members. 1 when the message is for nodes only (not delivered). */
int presence_on_ephemeral(engine *e, room *r, const bus_msg *m);
/* Asks every other node for its members of r (r was just loaded here):
 * their answers (presence_on_answer) add them, each announced to this
 * node's members with a join event. Joins meanwhile wait (the session is
 * held) until every node asked has answered, at most 200 ms, so that their
 * joined lists every member of the cluster. */
void presence_query(engine *e, room *r);
void presence_on_query(engine *e, const char *node, const uint8_t *body, size_t len);
void presence_on_answer(engine *e, const char *node, const uint8_t *body, size_t len);
/* The backend API's presence of a room not loaded here (body has the
 * reply so far, with an empty "presence"): in a cluster the other nodes are
 * asked, and c is answered 200 with their members once all have answered,
 * at most 200 ms later. 1 when deferred so (body is taken), 0 when there
 * is nobody to ask (the caller answers). */
int presence_api_ask(engine *e, conn *c, const char *name, json_t *body);
/* POST /v1/users/{user}/disconnect in a cluster (body: the reply with this
 * node's count): every other node ends the user's sessions there and
 * answers with its count, added to "sessions"; c is answered once all
 * have answered, at most 200 ms later. 1 when deferred so (body is
 * taken), 0 when there is nobody to ask (the caller answers). */
int cluster_api_disconnect(engine *e, conn *c, const char *user, json_t *body);
void cluster_on_disconnect(engine *e, const char *node, const uint8_t *body, size_t len);
void cluster_on_disconnected(engine *e, const uint8_t *body, size_t len);
/* Answers every waiting presence or disconnect API request (shutdown). */
void presence_api_flush(engine *e);
int presence_settling(const room *r);
/* Lets the joins held for r go on once nothing is awaited (the answers,
 * r's creation: in a cluster a join to a room this node is creating waits
 * for the commit, since another node may create it first with another
 * epoch). */
void presence_gate_open(engine *e, room *r);
void presence_hold_join(engine *e, room *r, sess *s, json_t *req);
/* A node stopped sending heartbeats: its members leave every room here. */
void presence_node_gone(engine *e, const char *node);
/* Appends the other nodes' members of r, as joined lists show members. */
void presence_remote_list(room *r, json_t *arr);
void presence_room_free(room *r);

#endif
