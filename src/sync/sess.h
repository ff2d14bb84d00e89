/* sess.h -- sessions of the sync protocol (PROTOCOL.md 3): hello, welcome,
 * resume, the outbox of unconfirmed messages, sending, and expiry.
 *
 * Loop thread only. A session is bound to (user, device), one per pair; it
 * outlives its connection for the resume window. References: the registry
 * (e->sessions) holds one from welcome to its end, its connection one while
 * attached, and anything that may outlive a callback (a pending op, the
 * due list) one more; sess_unref frees at zero. A session whose connection
 * goes away is only marked (e->dead) and reaped in the check hook, when no
 * fan-out walks a room (sess_reap).
 *
 * Errors to the client are messages (sess_error); before welcome they also
 * end the connection (sess_refuse, PROTOCOL.md 3.3). */
#ifndef WSY_SESS_H
#define WSY_SESS_H

#include "engine_int.h"
#include "ring.h"
#include "room.h"

/* An outbox entry: a run of n messages at positions pos.. of rg, or (rg
 * NULL, n 1) one frame addressed to this session alone. */
typedef struct ob_ent {
  ring *rg;
  union {
    net_chunk *ch;
    uint64_t pos;
  } u;
  size_t bytes;      /* of its messages */
  uint32_t n;
} ob_ent;

/* What only a session on HTTP transports needs (fallback.h, PROTOCOL.md
 * 2.4), allocated when it first goes on one (sess_http_on): a WebSocket
 * session does without. */
typedef struct sess_http {
  uint64_t dn_at;    /* loop ms: poll start, or the stream's last write */
  uint64_t dn_lost;  /* loop ms the last downstream went away */
  uint64_t poll_last;/* the pending poll's last */
  uint64_t dn_upto;  /* the highest ordinal handed to a downstream */
  char *dn_headers;  /* CORS headers for the deferred poll answer */
  sess *due_next;    /* on e->due: a pending poll has something to say */
  struct fwd_in *rdn;/* the downstream when it came through another node (forward.h), else NULL */
} sess_http;

/* What only the authorization hook needs (hook.h), allocated on first use
 * (sess_hook_of): a server without --auth-hook makes none. */
typedef struct sess_hook {
  json_t *held;      /* messages queued while s->hold (a JSON array) */
  struct ah_wait *ah;/* the hook's question while held */
  json_t *claims;    /* the token's claims, for the hook's questions (NULL: demo) */
  auth_identity grants; /* grants the hook gave (no user: not for private rooms) */
  char tokh[17];     /* SHA-256 of the hello's token, 16 hex digits ("" in demo mode): the hook cache's key */
} sess_hook;

struct sess {
  engine *e;
  ws_conn *w;        /* NULL once the connection is gone */
  int refs;
  /* Flags in one word: an idle session is mostly this struct, and 10k of
   * them should cost about what 10k raw connections cost (fields are
   * ordered to leave few holes; what only HTTP transports or the
   * authorization hook need is apart, in hx and hk; the struct, with its
   * first membership inside, stays within 320 bytes, a mimalloc size
   * class: sess.c checks). */
  unsigned welcomed : 1;
  unsigned ended : 1;   /* bye, replaced, or expired: no resume */
  unsigned http : 1;    /* the session is on HTTP transports (not WebSocket): hx is set */
  unsigned due : 1;     /* on e->due */
  unsigned ghost : 1;   /* stands on this node for another node's session (opfwd.h) */
  unsigned dn_kind : 4; /* FB_SSE or FB_POLL while dn is set */
  /* Hooks (hook.h): while hold is set the session waits for the
   * authorization hook and its messages queue in hk->held. */
  /* counted: the authorization hook, a join waiting for presence or for a
   * read of its room, each write deferred until its room is read again
   * (cluster.h, commit.h) */
  unsigned hold : 16;
  auth_identity id;
  /* "user:device" (the dedupe key of the store), allocated at welcome;
   * device points into it ("" before). The by_device registry reads its key here:
   * it does not change once welcomed. */
  char *dkey;
  const char *device;
  json_t *from;      /* {"user","device"} of its broadcasts, made on first use */
  member *rooms;
  unsigned nrooms;
  /* Outbox (PROTOCOL.md 3.4): every message after welcome has an ordinal.
   * Room messages are not kept here but once per room, in the room's ring
   * (ring.h): the outbox names runs of ring positions, one entry for any
   * number of consecutive messages of a room. Messages addressed to this
   * session alone (replies, acks, errors, joined) are entries of their own
   * holding the frame. Entries go when the client confirms them with recv,
   * when --max-outbox (counted in message bytes) drops the oldest, or when
   * the ring evicted their frames (such messages cannot be replayed). */
  uint32_t ob_head, ob_len, ob_cap; /* entries */
  ob_ent *ob;
  uint64_t ob_first;   /* ordinal of the first message of ob[head] */
  uint64_t ob_next;    /* ordinal of the next message */
  size_t ob_bytes;     /* message bytes (the --max-outbox cap) */
  size_t ob_own;       /* bytes of its own frames (the --session-queue cap) */
  union {              /* one or the other, by s->welcomed */
    uint64_t opened;      /* before welcome: loop ms of the connection's upgrade */
    uint64_t detached_at; /* once welcomed: loop ms when the connection went away (0: attached) */
  };
  /* HTTP transports: the downstream is an SSE stream or a pending
   * long-poll; httpd clears dn when that connection is freed. The rest is
   * in hx (set whenever http is, or dn). */
  conn *dn;
  sess_http *hx;
  sess_hook *hk;     /* NULL until the authorization hook is involved */
  double tokens;     /* rate limit bucket */
  uint64_t tokens_ms;
  uint64_t born_wall;/* wall-clock ms of its welcome as a new session: orders replacements across nodes */
  /* Its first membership lives here (room.c, room_member_add): most
   * sessions are in one room, and this saves them an allocation. In use
   * while m0.s is set; other rooms' members are allocated. */
  member m0;
  /* The e->sessions registry reads its key here: it does not change once welcomed. */
  char token[33];
};

/* Where the direct answers to a hello sent by POST /v1/send go. */
struct capture {
  buf text;          /* the last message: welcome or error */
  sess *welcomed;    /* the session that said welcome */
  char code[32];     /* the error code of a refusal */
};

/* TOKENS. A session's registry key (s->token) is SESS_KEY_LEN random hex
 * digits. The token its client is given (welcome's `session`) is the key
 * alone on a single node, "<node-id>.<key>" on a cluster (e->clustered),
 * so that any node can tell where a session lives (fallback.h, forward.h)
 * without asking. A node id in a token is 1 to SESS_NODE_MAX characters of
 * [A-Za-z0-9._-] (left as they are in a URL); a node whose id has others
 * gives tokens without it, that no other node can forward. */
#define SESS_KEY_LEN 32
#define SESS_NODE_MAX 63
#define SESS_WIRE_MAX (SESS_NODE_MAX + 1 + SESS_KEY_LEN)
enum { SESS_TOKEN_BAD = -1, SESS_TOKEN_HERE = 0, SESS_TOKEN_NODE = 1 };
/* The token of s for its client into out (SESS_WIRE_MAX + 1 bytes). */
void sess_token_wire(const sess *s, char *out, size_t n);
/* Splits a client's token (len bytes, not NUL-terminated): node gets the
 * node id ("" when there is none), key the registry key. 0, or -1 when
 * tok is not a token's shape. Pure. */
int sess_token_split(const char *tok, size_t len, char key[SESS_KEY_LEN + 1], char node[SESS_NODE_MAX + 1]);
/* Where tok's session lives: SESS_TOKEN_HERE (look key up), SESS_TOKEN_NODE
 * (another node: node), SESS_TOKEN_BAD (no session: 410). */
int sess_token_where(const engine *e, const char *tok, size_t len, char key[SESS_KEY_LEN + 1],
                     char node[SESS_NODE_MAX + 1]);

/* The keys of the registries (map_init_keyed): e->sessions by token,
 * e->by_device by dkey. */
const char *sess_key_token(const void *s);
const char *sess_key_dkey(const void *s);

/* A fresh session for a new connection (w) or a hello by POST (w NULL),
 * with one reference, the caller's. */
sess *sess_new(engine *e, ws_conn *w);
/* Puts s on HTTP transports (s->http), with its sess_http made on first
 * use (dn_lost: now); returns s->hx. */
sess_http *sess_http_on(sess *s);
/* s->hk, made on first use. */
sess_hook *sess_hook_of(sess *s);
void sess_unref(sess *s);

/* The one way a message reaches a session: counted, kept in the outbox,
 * and written to its downstream when there is one. frame is borrowed.
 * sess_send is for messages addressed to s alone (kept by the session);
 * sess_send_ring for a room message at position pos of the room's ring
 * rg (kept by the ring, named by position). */
void sess_send(sess *s, net_chunk *frame);
void sess_send_ring(sess *s, ring *rg, uint64_t pos, net_chunk *frame);
/* Sends msg (stolen). */
void sess_send_json(sess *s, json_t *msg);
/* {"type":"error","re","for","code","message","room","cid","field",...extra}:
 * re/for/room/cid are taken from req when it has them; extra is stolen. */
json_t *sess_error_msg(json_t *req, const char *code, const char *message, const char *field,
                       json_t *extra);
void sess_error(sess *s, json_t *req, const char *code, const char *message, const char *field,
                json_t *extra);
/* An error before welcome: sent, then the connection ends (1008). */
void sess_refuse(sess *s, json_t *req, const char *code, const char *message);
/* {"user","device"} of the session's broadcasts (owned by s). */
json_t *sess_from(sess *s);
/* Presence's connected flag (PROTOCOL.md 2.4). */
int sess_online(const sess *s);
/* Messages in the outbox (ordinals ob_first .. ob_next - 1). */
static inline uint64_t sess_ob_count(const sess *s) { return s->ob_next - s->ob_first; }
/* Drops the messages up to ordinal n (confirmed by recv or by a last). */
void sess_ob_confirm(sess *s, uint64_t n);
/* Drops every message up to the newest one a ring has evicted: afterwards
 * the outbox can replay every message from ob_first on. Call before
 * checking a client's last against ob_first. */
void sess_ob_trim(sess *s);
/* Calls fn for every message of the outbox with an ordinal above after, in
 * order (after sess_ob_trim). The frame is borrowed. */
typedef void (*sess_ob_fn)(void *ud, uint64_t ordinal, net_chunk *frame);
void sess_ob_each(sess *s, uint64_t after, sess_ob_fn fn, void *ud);

/* hello (PROTOCOL.md 3.1-3.3): a new session, a resume, or a refusal. */
void sess_hello(sess *s, json_t *req);
/* The rest of a hello whose identity and device (s->id, s->device) are
 * checked and that the authorization hook allowed: a resume or a new session. */
void sess_hello_finish(sess *s, json_t *req);
/* Permissions of s on room: its token's grants and the hook's. */
unsigned sess_perms(const sess *s, const char *name);
/* Adds grants (a JSON object pattern -> "r" | "w" | "rw", as a token's) to
 * the session's hook grants; 0, or -1 when one is malformed (none added). */
int sess_add_grants(sess *s, json_t *grants);
/* Ends a session (bye, replaced, expired): its locks and presence go, its
 * connection (if any) is closed with code, and it can no longer resume. */
void sess_end(sess *s, unsigned code, const char *why);
/* REPLACEMENT ACROSS NODES. One session per (user, device) holds in a
 * cluster too (PROTOCOL.md 3.5): a node that welcomes a new session tells
 * every other node it has heard from (bus_send_node, kind SESS_REPLACE_KIND,
 * body: the welcome's wall-clock ms as 8 bytes big endian, then "user:device"),
 * and each ends its session of that (user, device) with 4001 if it was
 * welcomed before that time. The time keeps a notice that the bus delayed
 * (the client has meanwhile moved on to a newer session here) from ending
 * the newer session; it assumes clocks agree to better than the time a
 * client takes to move between nodes. Best effort: a node not yet heard
 * from, or the bus down, misses the notice (its session then ends by its
 * resume window, as a dead node's do). */
#define SESS_REPLACE_KIND "fb.replace"
/* A notice of another node (body, len bytes): see above. */
void sess_replace_notice(engine *e, const char *from_node, const uint8_t *body, size_t len);

/* Takes the session off its current transport (PROTOCOL.md 2.4: one
 * downstream per session): a WebSocket is closed with 4001, an SSE stream
 * gets a close event 4001, a pending poll is answered. */
void sess_detach(sess *s, const char *why);
/* The connection of s went away: reaped later, in the check hook. */
void sess_gone(sess *s);
/* Reaps the sessions whose connection went away: detached ones stay in
 * their rooms (seen disconnected) for the resume window. */
void sess_reap(engine *e);
/* Releases the locks of sessions detached for longer than the lock grace
 * (reason "disconnected"), and ends those detached for longer than the
 * resume window. */
void sess_expire(engine *e);
/* At shutdown: ends every session. */
void sess_end_all(engine *e);

#endif
