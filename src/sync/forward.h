/* forward.h -- HTTP fallback requests of sessions that live on another node
 * (PROTOCOL.md 2.4, docs/CLUSTER.md): no sticky sessions.
 *
 * A session token names its node (sess_token_split): a POST /v1/send, GET
 * /v1/poll or GET /v1/sse reaching node B for a session of node A is
 * FORWARDED over the bus (bus_send_node, kinds "fb.*"): B sends the request
 * (method, target, the headers that matter, body) with a request id; A
 * parses it as if it had arrived on a socket and runs it through the same
 * code (fallback.c), its answer going back to B instead of to a connection:
 *   - an answer (status, content type, headers, body): send, poll, errors;
 *   - a stream: open (headers), data (each chunk A would write), end.
 * B answers its client with what comes back. A poll is held on A as usual;
 * an SSE stream lives on A, B only copies its bytes.
 *
 * FAILURES. The bus down (bus_send_node fails): 503 at once. A silent (no
 * answer within FWD_ANSWER_MS, a poll's timeout plus that margin, or an SSE
 * stream quiet for two ping intervals plus that margin) or gone (fb_node):
 * 503, or the stream ends; the client resumes or starts over, as after a
 * node failure. B's client gone: A is told (cancel) and drops the
 * downstream. B gone: A drops its downstreams of B (fb_node); until then a
 * stream writes into the bus, which is bounded by FWD_MAX_PER_NODE.
 *
 * MEMORY. At most FWD_MAX_PER_NODE requests in flight per node, both ways
 * (B: to one node; A: from one node), FWD_MAX_OUT in all: past it 503. A
 * request in flight costs a record of about 200 bytes on each side.
 *
 * HELLO. A new session lives where its hello arrives. A hello resuming a
 * session of another node is forwarded there while that node is up (heard
 * from, fwd_node_up), so the resume works through any node; a node never
 * heard from or gone gets a new session here (the client joins with since).
 * Not with --auth-hook (its answer may come later, to a connection).
 *
 * NODES. A token names a node; B does not know which nodes exist (the bus
 * reports a node when first heard from, which may come after a client's
 * first request): it forwards to any well-formed name, and a node that does
 * not answer costs FWD_ANSWER_MS, then 503. A node reported gone (fwd_node)
 * is answered 503 at once until it is heard from again.
 *
 * WIRE. Every message is one fwd_msg (fwd_encode): version byte 1, op, the
 * request id (8 bytes, big endian), status (2), content type and headers
 * (2-byte length, then bytes), body (the rest). A request's body is the
 * HTTP/1.1 request text itself (request line, headers, Content-Length, body).
 *
 * Loop thread only. */
#ifndef WSY_FORWARD_H
#define WSY_FORWARD_H

#include "engine_int.h"

/* An SSE stream or a poll is in flight as long as it is open: the caps are
 * the connections a node may hold (--max-connections), so that they bound
 * memory without refusing what one node could serve itself. */
#define FWD_MAX_PER_NODE(e) ((size_t)(e)->cfg->max_connections)
#define FWD_MAX_OUT(e) ((size_t)(e)->cfg->max_connections)
#define FWD_MAX_NODES 4096 /* nodes remembered as up or gone */
#define FWD_ANSWER_MS 10000 /* what a node has to answer in, beyond a poll's wait */

enum {
  FWD_REQ = 1, /* B -> A: run this request */
  FWD_CANCEL,  /* B -> A: the client went away */
  FWD_ANSWER,  /* A -> B: the whole answer */
  FWD_OPEN,    /* A -> B: a stream begins (status 200, headers) */
  FWD_DATA,    /* A -> B: stream bytes */
  FWD_END,     /* A -> B: the stream ends (status 1: at once, 0: gracefully) */
};

typedef struct fwd_msg {
  uint64_t id;
  unsigned op;
  unsigned status;
  const char *ctype; /* not NUL-terminated; ctype_len bytes */
  size_t ctype_len;
  const char *hdrs;  /* CRLF-terminated header lines; hdrs_len bytes */
  size_t hdrs_len;
  const uint8_t *body;
  size_t body_len;
} fwd_msg;

/* Appends m's encoding to out. 0, or WSY_INVAL (a field too long) or
 * buf_append's error. */
int fwd_encode(const fwd_msg *m, buf *out) WSY_WUR;
/* Parses p; m's pointers point into p. 0, or WSY_INVAL (not a fwd_msg). */
int fwd_decode(const uint8_t *p, size_t len, fwd_msg *m) WSY_WUR;
/* The HTTP/1.1 text of a request to forward into out: method, target,
 * the headers in names[] present in r, Content-Length and the body. */
int fwd_request_text(httpd_req *r, buf *out) WSY_WUR;
/* The kind on the bus of an op ("fb.req", ...). */
const char *fwd_kind(unsigned op);

/* A forwarded request on the node that runs it (A). Opaque outside
 * forward.c; fallback.c answers through these. */
typedef struct fwd_in fwd_in;
/* The whole answer; f is freed (the slot it occupies, if any, is cleared
 * by the caller). */
void fwd_in_answer(fwd_in *f, int status, const char *ctype, const char *hdrs, const void *body, size_t len);
/* The answer comes later: *slot is set to f, and cleared if B cancels. */
void fwd_in_defer(fwd_in *f, fwd_in **slot);
/* A stream begins: *slot is set to f, and cleared if B cancels. */
void fwd_in_open(fwd_in *f, fwd_in **slot, const char *ctype, const char *hdrs);
/* Stream bytes; 0 or WSY_AGAIN (the bus is down: the stream must end). */
int fwd_in_data(fwd_in *f, const void *p, size_t len);
/* The stream ends; f is freed. */
void fwd_in_end(fwd_in *f, int abort);

/* B: forwards the request r, which arrived on c for a session of node, to
 * that node, and answers c when the answer comes (or 503). cors: the CORS
 * header lines for B's own error answers. */
void fwd_request(engine *e, conn *c, httpd_req *r, const char *node, const char *cors);

/* Both: a message of kind "fb.*" from another node (the bus's direct
 * callback); a node gone (up 0); time (every sweep); shutdown (every
 * forwarded request answered 503 or ended); teardown. */
void fwd_direct(engine *e, const char *from, const uint8_t *body, size_t len);
void fwd_node(engine *e, const char *node, int up);
/* node was heard from (fwd_node) and not reported gone since. */
int fwd_node_up(engine *e, const char *node);
void fwd_sweep(engine *e);
void fwd_shutdown(engine *e);
void fwd_free(engine *e);

#endif
