/* hook.h -- the engine's side of the backend hooks that decide (HOOKS.md,
 * "Authorization hook" and "Op hook"): the authorization hook asked on
 * hello and on joins (authhook.c) and the write validation hook asked
 * before an op is sequenced (ophook.c). Both POST signed JSON with the
 * shared HTTP client (src/hooks/hclient.h), which never blocks the loop.
 *
 * Loop thread only. Who waits:
 *  - a session waiting for the authorization hook is HELD: every message it
 *    sends meanwhile is queued (in order, hook_hold_push) and dispatched once
 *    the answer is applied. Other sessions never wait.
 *  - an op waiting for the op hook waits in its ROOM's queue: every later op
 *    of that room (any author) queues behind it, so a room's ops are decided
 *    in the order they arrived; their hook requests go out at once (up to a
 *    window per room) and the answers are applied in arrival order. Ops of
 *    other rooms never wait.
 * Every waiting request holds a session reference and its request (json)
 * reference, so a session that goes away meanwhile is still valid when the
 * answer comes; the answer is then dropped if the session has ended.
 *
 * Failure is closed: a timeout, a transport error, a status other than 2xx,
 * or an answer that is not the documented JSON refuses the hello, join or
 * op with hook_unavailable (retryable, retry_after), never lets it through. */
#ifndef WSY_HOOK_H
#define WSY_HOOK_H

#include "engine_int.h"
#include "sess.h"

/* Sets up the hooks the configuration names (none: nothing to do). 0 or a
 * wsy_err with err set. */
int hook_init(engine *e, char *err, size_t errlen);
/* Cancels what is in flight (the waiting sessions and ops are released
 * without an answer; later questions fail at once with hook_unavailable);
 * at shutdown, before sessions end. Idempotent. */
void hook_deinit(engine *e);

/* POSTs body (a JSON object, borrowed) to url, signed with --hook-secret
 * when set (Wsync-Timestamp, Wsync-Signature). cb runs later, on the loop.
 * 0 or a wsy_err (then cb never runs). */
typedef struct hclient_resp hclient_resp;
int hook_post(engine *e, const char *url, json_t *body, unsigned timeout_ms,
              void (*cb)(void *ud, const hclient_resp *r), void *ud);
/* The JSON object of a hook's answer: a 2xx with a JSON object body, or
 * NULL (why says what was wrong, for the log). New reference. */
json_t *hook_answer_json(const hclient_resp *r, char *why, size_t whylen);

/* Held sessions: a session waiting for the authorization hook. */
static inline int hook_held(const sess *s) { return s->hold; }
/* Queues req (a reference is taken) behind the session's hold; when too
 * many are queued, answers it with rate_limited instead. */
void hook_hold_push(sess *s, json_t *req);
/* Ends the hold and dispatches what was queued, in order, until one of the
 * messages holds the session again. */
void hook_hold_release(sess *s);
/* Holds s and puts req back first in its queue (the message being handled
 * waits for something: hook_hold_release handles it again). */
void hook_hold_front(sess *s, json_t *req);

/* authhook.c. hello: 1 when the hello waits for the hook (the session is
 * held; the answer continues it with sess_hello_finish or refuses it), 0 to
 * go on at once (a cached allow; its grants are applied), -1 when it was
 * refused (a cached deny). */
int authhook_hello(sess *s, json_t *req, const char *token);
/* join of room name: 1 when it waits for the hook (the answer continues it
 * with join_handle_asked or refuses it), 0 to go on, -1 when refused. */
int authhook_join(sess *s, json_t *req, const char *name);
/* A hello by POST /v1/send that waits (s is held): its answer is deferred
 * on c (hdrs: the CORS headers) and given when the hook has answered. */
void authhook_defer_http(sess *s, conn *c, const char *hdrs);
/* Frees the cache (at shutdown). */
void authhook_free(engine *e);
/* Whether a join of name asks the hook (configured, and the room is not
 * readable by the session's grants or every join asks; never a private room). */
int authhook_join_asks(sess *s, const char *name);

/* ophook.c: 1 when the op of room name waits (the op hook of the first
 * matching --op-hook pattern, or an earlier op of the room still waiting);
 * its answer runs proto_op_decided. 0: no hook for this room, go on. */
int ophook_op(sess *s, json_t *req, const char *name);
/* Frees the room queues (at shutdown, after hook_deinit cancelled them). */
void ophook_free_all(engine *e);

#endif
