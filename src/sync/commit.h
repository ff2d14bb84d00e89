/* commit.h -- the room log: admission of writes, dedupe by client op id,
 * sequencing, the group commit, and what follows a commit (acks, fan-out,
 * refusals). The path of one write:
 *
 *   request -> admit (dedupe by (user:device, cid); a broken room refuses)
 *           -> the room kind decides and applies it in memory
 *           -> commit_sequence: seq = room.seq + 1, broadcast framed once,
 *              entry added to the batch being filled and to the pending list
 *   check hook (end of loop iteration): commit_start submits the batch to
 *           the store (store_commit) unless one is committing
 *   commit done (loop thread), per pending entry in order: ack to the
 *           author, then the entry to the room's members over the bus; or,
 *           when the commit failed, an internal error to each author (with
 *           the request's re and for) and the room reloads from the store.
 *
 * Loop thread only. Acks and broadcasts are sent only when the batch holding
 * their entry has committed: an ack announces durable data. */
#ifndef WSY_COMMIT_H
#define WSY_COMMIT_H

#include "engine_int.h"

/* Who wrote an entry: a session, or the backend API (s NULL, http set). */
struct author {
  engine *e;
  sess *s;
  conn *http;
  const char *dkey; /* dedupe key: "user:device", or ":backend" */
};

/* Why an op was refused, for the caller to report on its transport. */
struct op_refusal {
  sync_err err;
  json_t *extra; /* members to add to the error (item, current, lock, index); owned */
};

/* P_ERR: a refusal sent in order behind pending commits; P_LOCK: a lock
 * change (cluster). */
enum { P_OP, P_DUP, P_CREATE, P_ERR, P_DELETE, P_LOCK };

struct pend {
  pend *next;
  int kind;
  sess *s;           /* author (a reference), NULL for room creation */
  json_t *re;        /* the request's id */
  const char *type;  /* the request's type ("op", "publish"), for an error's for */
  room *r;
  char *cid;
  char *ckey;        /* key in e->cids while pending */
  uint64_t seq;
  uint64_t rev;      /* a text op's new revision, for its ack (0: none) */
  net_chunk *frame;  /* the broadcast, framed once; P_LOCK: the reply to s (or NULL) */
  net_chunk *ev;     /* P_LOCK: the lock event to the room */
  char *item;        /* P_LOCK release: its item (seq: its fence), released again if fenced out */
  conn *http;        /* backend request waiting for the commit, or NULL */
  json_t *req;       /* in a cluster: a session's op, publish or lock request, decided again if fenced out */
  char *req_text;    /* ... or its text, when it came as one (proto_keep): read again only then */
  size_t req_len;
  unsigned tries;    /* times it was decided before (cluster.h) */
  int counted;       /* counted in its member's inflight (room.h) */
  char *api_line;    /* its access log line (e->api_line when deferred), or NULL */
};

/* A session's write waiting for its room to be read again (cluster.h): a
 * batch was fenced out, or the replica is stale with entries pending.
 * Decided again, in arrival order, once nothing of the room is pending. */
typedef struct defwrite {
  struct defwrite *next;
  sess *s;        /* a reference */
  json_t *req;    /* a reference */
  unsigned tries;
  int unrecorded; /* its cid is known not to be in the store (its batch rolled back) */
  int counted;    /* counted in its member's inflight (room.h) */
  uint64_t need;  /* decided only after this fetch of the room (cluster.h), 0: any */
  int redo;       /* from a batch that failed: it goes before its session's later writes */
  /* Its cid's dedupe record, read without blocking (cluster): 0 not asked,
   * DEDUPE_ASKED waiting for the answer (it and the writes behind it are not
   * decided before), DEDUPE_KNOWN answered, with the answer below. */
  int lookup;
  int lookup_rc;       /* 0 found, WSY_NOT_FOUND, or why it could not be read */
  uint64_t lookup_id;  /* matches the answer to this write */
  uint64_t lookup_seq;
  char *lookup_room;   /* of the record found */
} defwrite;
enum { DEDUPE_ASKED = 1, DEDUPE_KNOWN = 2 };

/* ---- dedupe lookups without blocking (cluster; lookup.c) ----------------
 * In a cluster, a backend write (API_* kind, body req, to r loaded and
 * current) whose cid the in-memory filter cannot rule out: its dedupe
 * record is read without blocking, its answer (on c) deferred, and the
 * write answered as a duplicate or decided on the answer. 1 when it waits;
 * 0 when no lookup is needed or none could be started (dedupe() reads it). */
int commit_backend_lookup(engine *e, conn *c, room *r, json_t *req, int kind);
/* A session's write (req, cid) to r whose cid must be looked up: it waits
 * in r's deferred writes for a fetch of the record, and is decided again on
 * the answer; with fresh set, on the answer of a read of r sent after the
 * lookup too (so decided with r fresh: r->fresh_pass). 1 when it waits; 0
 * when the store reads only on the loop; -1 with *err when the fetch was
 * refused at once. */
int commit_lookup_session(author *a, json_t *req, room *r, const char *cid, int fresh, int *err);
/* p (a backend write) is in a batch rolled back on a cid another node
 * recorded: its own cid is looked up, and its deferred answer given from
 * the record (the duplicate, another room's cid) or 503 stale. */
void commit_lookup_rolled_back(engine *e, pend *p);
/* The lookups still unanswered, freed (the engine goes away). */
void commit_lookup_deinit(engine *e);
/* A deferred HTTP answer given (nothing sent when *http is NULL: its client
 * is gone), logged with api_line when set; steals body; *http becomes NULL. */
void commit_http_answer(conn **http, const char *api_line, int status, json_t *body);
/* The body of a backend write's 503 stale answer (PROTOCOL.md 11.2). */
json_t *commit_http_stale(void);
/* commit.c's filter of cids (for lookup.c). */
int commit_cid_maybe_stored(engine *e, const char *dkey, const char *cid);

/* ---- deferred writes (cluster; defer.c) ---------------------------------
 * A session's write to r that waits (its session held) on r's list, in
 * order: decided again by commit_redecide once r is ready. */
defwrite *commit_defer_push(room *r, sess *s, json_t *req, unsigned tries, int unrecorded);
/* The same for a write of a batch that failed: before the later writes of
 * its session already on the list, after those of earlier failed batches. */
void commit_defer_redo(room *r, sess *s, json_t *req, unsigned tries, int unrecorded);
/* The same, decided only on r as read by a fetch started from now on. */
void commit_defer_fresh(room *r, sess *s, json_t *req, unsigned tries, int unrecorded);
/* Decides r's deferred writes again, in order (r has nothing pending); in
 * a cluster, after a fetch first if r's replica must be read again. */
void commit_redecide(engine *e, room *r);
/* A member's writes in flight (room.h; cluster only): 1 when counted. The
 * last one done lets a leave that waited go on (the caller pins r). */
int commit_inflight_add(engine *e, sess *s, room *r);
void commit_inflight_done(sess *s, room *r);

/* Frees r's deferred writes unanswered (the room is freed at shutdown). */
void commit_defer_free(room *r);
/* Decides r's deferred writes again when nothing of r is pending (the
 * cluster's periodic check: a reload that failed with the store down is
 * otherwise retried only after a commit of r, and none comes while every
 * write to r waits in the deferred list). */
void commit_redecide_deferred(engine *e, room *r);

/* Loads the dedupe filter from the store. 0 or a wsy_err. */
int commit_init(engine *e, char *err, size_t errlen);
void commit_deinit(engine *e);
/* Submits the batch being filled, unless a commit is in flight or there is
 * nothing to do (called by the check hook and at shutdown). */
void commit_start(engine *e);

/* A cid: 1-128 characters of A-Z a-z 0-9 . _ : @ - (PROTOCOL.md 5.1). */
int commit_cid_valid(const char *cid);
/* The checks every write passes first: 1 when it is a re-sent cid
 * (answered with the original seq, or refused when the store cannot tell),
 * -1 when the room cannot take writes (*why set), 0 to go on. */
int commit_admit(author *a, json_t *req, room *r, const char *cid, op_refusal *why);
/* Fills *why; returns -1. extra is stolen. */
int commit_refuse(op_refusal *why, const char *code, const char *msg, json_t *extra);
void commit_count_rejection(engine *e, const char *code);

/* The broadcast of an entry: {"type":"op","room","seq","ts","from","cid","op"}
 * (COMMIT_OP) or a stored publish {"type":"message",...,"data"}
 * (COMMIT_MESSAGE), for seq r->seq. commit_entry_begin writes up to the
 * value, which the caller appends; commit_entry_end closes and frames it. */
enum { COMMIT_OP, COMMIT_MESSAGE };
jw *commit_entry_begin(engine *e, const room *r, int type, const json_t *from, const char *cid);
net_chunk *commit_entry_end(jw *w);
net_chunk *commit_entry_frame(engine *e, const room *r, int type, const json_t *from, const char *cid,
                              const json_t *v);
/* Sequences an accepted entry (r->seq already advanced to it): frame (made
 * just before by commit_entry_*, its text still in e->frame_text) is taken
 * over; the store op (item, fields, revs, the items a batch op changed) goes
 * into the batch; the ack waits for the commit. */
pend *commit_sequence(author *a, json_t *req, room *r, net_chunk *frame, const char *item,
                      const char *fields_json, const char *revs_json, const sync_change *changes,
                      size_t nchanges, const char *cid);
/* A refusal that must not overtake the room's pending entries (it carries
 * state that includes them): queued behind them. msg is stolen. */
void commit_refusal_in_order(author *a, room *r, json_t *msg);
/* The room is new: its creation goes into the batch; r stays loaded until
 * it is committed. */
void commit_room_created(engine *e, room *r);
/* DELETE /v1/rooms/{room} (a->http, answered after the commit): r (loaded,
 * existing in the store or about to) loses its members, each told
 * {"type":"left","room","reason":"deleted"}; writes are refused until the
 * deletion, queued behind the room's pending entries, has committed; then
 * whoever joined meanwhile is removed the same way and the room unloads. A
 * later join creates it anew (new epoch). */
void commit_room_delete(author *a, room *r);
/* r was deleted through another node (cluster.h): its members here leave
 * with `left` reason deleted, as on that node. */
void commit_room_members_deleted(engine *e, room *r);

struct lock;
/* In a cluster (room.h, locks): commits the change of item's lock, already
 * made in memory (*l is its new state; no holder: a release), with the next
 * batch, fenced by the version of the item's lock row (raised here, as is
 * r's lock version: store.h, ITEM LOCKS). After the commit, reply
 * (when set) goes to s and event (when set) to the room; fenced out, req
 * (when set) is decided again like an op, and r is read again, which
 * releases once more a lock its holder gave up (room_locks_orphans).
 * Steals reply and event. */
void commit_lock(engine *e, room *r, sess *s, json_t *req, const char *item, struct lock *l, json_t *reply,
                 json_t *event);
/* Before a session's lock or unlock in a cluster: 0 when r is fresh and it
 * may be decided, 1 when it waits for r to be read again (decided later,
 * in order), -1 when refused (answered). */
int commit_lock_admit(sess *s, json_t *req, room *r);
/* In a cluster: s's write req waits for r to be read again (a fetch is
 * started), then is decided again, in order (the session is held). */
void commit_defer_write(sess *s, json_t *req, room *r);
/* r's deferred writes are refused (internal): the room could not be read. */
void commit_defer_fail(engine *e, room *r, int rc);
/* A store read failed for room name: health is degraded until a commit
 * succeeds. */
void commit_store_unreadable(engine *e, const char *name, int rc);

#endif
