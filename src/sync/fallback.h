/* fallback.h -- the HTTP transports of a session (PROTOCOL.md 2.4): POST
 * /v1/send upstream, GET /v1/sse and GET /v1/poll downstream. The session
 * and its outbox are sess.h's; only the way messages leave differs: an SSE
 * event per message (id = ordinal), or one JSON answer per poll gathering
 * what a loop iteration produced.
 *
 * Loop thread only. No sticky state outside the session: a downstream can
 * be replaced at any time (the previous one is told 4001 or answered).
 *
 * On a cluster a session lives on the node that welcomed it (its token
 * names that node, sess_token_where); a request for it reaching another
 * node is forwarded there over the bus and answered from there
 * (forward.h): the balancer in front need not be sticky. */
#ifndef WSY_FALLBACK_H
#define WSY_FALLBACK_H

#include "engine_int.h"

enum { FB_SSE = 1, FB_POLL };
#define FB_DETACH_GRACE_MS 10000 /* no downstream this long: detached (2.4) */

/* The route of /v1/send, /v1/sse and /v1/poll (httpd_handler; ud: engine). */
void fb_route(void *ud, conn *c, httpd_req *r);
/* A message with its ordinal for the session's downstream. */
void fb_push(sess *s, net_chunk *frame, uint64_t ordinal);
/* The downstream ends for a reason a WebSocket would learn from a close code. */
void fb_end(sess *s, unsigned code, const char *reason);
/* Another downstream (or a WebSocket) takes over. */
void fb_release(sess *s);
/* Answers the polls that have something to say (check hook). */
void fb_answer_polls(engine *e);
/* Keeps time for HTTP sessions: SSE pings, poll timeouts, detaching. */
void fb_sweep(engine *e);
/* The answer to a hello by POST /v1/send, from what it captured: the
 * welcome (200) or the error (401, 403, 503, 400). Takes the request's
 * reference to n. deferred: the answer was deferred (httpd_defer); c may
 * then be NULL (the client went away). */
void fb_hello_answer(engine *e, conn *c, capture *cap, sess *n, const char *hdrs, int deferred);

/* An SSE close event (PROTOCOL.md 2.4), with one reference for the caller. */
net_chunk *fb_close_event(unsigned code, const char *reason);
/* The session has a downstream: a connection here, or one on another node. */
int fb_has_dn(const sess *s);
/* Runs a request another node forwarded (forward.c); its answer goes to f. */
typedef struct fwd_in fwd_in;
void fb_serve(engine *e, fwd_in *f, httpd_req *r);
/* THE BUS'S DIRECT CALLBACK for kinds starting with "fb" (bus_events.direct):
 * a forwarded request, its answer, stream bytes or a cancel; or a session
 * replaced by a new one on another node (SESS_REPLACE_KIND, sess.h). */
void fb_direct(engine *e, const char *from_node, const char *kind, const uint8_t *body, size_t len);
/* The bus's node callback: a node gone (up 0) fails what was forwarded to
 * it and drops what it forwarded here; back (up 1), it is forwarded to again. */
void fb_node(engine *e, const char *node, int up);

#endif
