/* stream.h -- a large snapshot sent in parts (PROTOCOL.md 6.3): the joined
 * reply carries the first part, "snapshot" messages carry the rest, one
 * part per session per loop turn, so no turn serializes more than about
 * STREAM_PART bytes for it and other rooms' traffic flows in between.
 *
 * The snapshot is frozen when the join is answered (sync.h: doc_frozen;
 * no JSON is built for it: each part is written as text when it is sent),
 * so the parts
 * add up to the state at joined.seq whatever happens meanwhile; entries
 * after that seq reach the member live, between the parts, in seq order,
 * and the client applies them once the last part is in.
 *
 * Loop thread only. A stream holds a reference to its session; it stops
 * when the session ends, when the member leaves or joins the room again,
 * and waits while the connection has more than STREAM_QUEUE bytes queued
 * (or while a WebSocket session is detached; on HTTP transports, until the
 * previous part was handed to a downstream). */
#ifndef WSY_STREAM_H
#define WSY_STREAM_H

#include "../common/jsonw.h"
#include "engine_int.h"

#define STREAM_PART (128 * 1024)  /* encoded bytes of items per part, about */
#define STREAM_QUEUE (1024 * 1024) /* wait while more than this is queued */

/* Splits snap (taken over; NULL: no items) for a joined reply to s in room:
 * writes the first part into first, as a JSON object text of items.
 * When items remain, *more is 1 and the rest follows as "snapshot" messages
 * from the next loop turn on; the caller sends the joined reply now, before
 * returning to the loop. Any stream of s in room still running is cancelled
 * first. */
void stream_snapshot(engine *e, sess *s, const char *name, doc_frozen *snap, jw *first, int *more);
/* A catch-up by ops (PROTOCOL.md 6.2) in parts, as a snapshot is: reads the
 * entries of room after since, up to seq, from the store; *first gets the
 * first part's entries as a JSON array text (about STREAM_PART bytes, at
 * least one entry) for the joined reply. When entries remain, *more is 1
 * and `catchup` messages carry the rest, one part per loop turn, each read
 * from the store then; the log is not trimmed below them meanwhile
 * (stream_log_floor). If the log lost them anyway, the join is answered
 * again without since (a snapshot; re is echoed). 0, or the store's error
 * for the first part (nothing started). Any stream of s in room still
 * running is cancelled first. */
int stream_catchup(engine *e, sess *s, const char *name, json_t *re, uint64_t since, uint64_t seq, jw *first,
                   int *more);
/* A catch-up by ops from src, read at once (a cluster: the snapshot of a
 * fetch, or the shared store), sent in parts as stream_catchup sends them:
 * the entries of room after since, up to seq; *first gets the first part
 * as a JSON array text and, when entries remain, *more is 1 and
 * `catchup` messages carry the rest from memory, one part per loop turn.
 * 0, or src's error (WSY_INVAL: src does not hold them) with nothing
 * written to first and nothing started. Any stream of s in room still
 * running is cancelled when it succeeds. */
int stream_catchup_from(engine *e, sess *s, const char *name, store *src, uint64_t since, uint64_t seq, jw *first,
                        int *more);
/* The lowest seq of room that a catch-up in parts still has to read
 * (UINT64_MAX when none): retention keeps it. */
uint64_t stream_log_floor(engine *e, const char *name);
/* Stops the stream of s in room, if any (a leave). */
void stream_cancel(engine *e, sess *s, const char *name);
void stream_init(engine *e);
/* At shutdown: drops every stream and closes the timer. */
void stream_deinit(engine *e);

#endif
