/* room.h -- rooms (PROTOCOL.md 4): the registry of loaded rooms, loading
 * and unloading, membership, presence, item locks, and fan-out through the
 * bus; and the ROOM KIND seam: the hooks through which a kind of room (the
 * document rooms of kind.h today; Yjs rooms next) keeps its own state and
 * rules while sessions, membership, grants, the log and fan-out stay here.
 *
 * Loop thread only. A room is served only once loaded from the store (or
 * created, with a new epoch, made durable with the next batch). It stays
 * loaded while it has members or entries pending in a batch, and unloads
 * when it has neither. Members are intrusive lists (room's and session's),
 * so a member is one allocation (none for a session's first: it lives in
 * the session, room_member_add). A failed commit leaves the room "broken":
 * it refuses writes until its pending entries are done, then reloads its
 * state from the store (room_reload) and serves again. */
#ifndef WSY_ROOM_H
#define WSY_ROOM_H

#include "engine_int.h"
#include "ring.h"

struct member {
  sess *s;
  room *r;
  member *prev, *next; /* room's members */
  member *snext;       /* session's rooms */
  uint64_t from_seq;   /* entries <= this were in its joined */
  uint64_t cursor;     /* highest seq the device says it applied */
  json_t *state;      /* presence state; NULL: {} (most members set none) */
  /* In a cluster: the member's writes not yet answered (pending in a batch,
   * or waiting to be decided again); its leave waits until there are none,
   * so that a write fenced out and decided again still finds it joined. */
  unsigned inflight;
  unsigned leave_waits : 1;
  /* The room's presence changes recorded in the current window when it
   * joined (presence_batch.c): its joined list had their effect, so it
   * gets only the later ones. 0 when it joined before the window opened.
   * In the same word as leave_waits (the member stays 72 bytes); a window
   * never holds 2^31 changes (rate limits). */
  unsigned pgen : 31;
};

/* An item's lock (lock.c). Kept after release (no holder) so fences keep
 * growing. In a cluster another node's session may hold it: rid is then
 * its holder's id in the store ("node.session"), ruser and rdevice point
 * into the same allocation. */
typedef struct lock {
  sess *holder;      /* this node's session holding it, or NULL */
  char *rid;         /* another node's session holding it, or NULL */
  const char *ruser, *rdevice;
  uint64_t fence;
  uint64_t expires;  /* loop ms */
  uint64_t version;  /* in a cluster: its row's version once what was decided here is stored (store.h) */
} lock;

/* The hooks of a kind of room. */
typedef struct room_kind {
  const char *name;
  /* Builds r->ks from the store (inside a read snapshot) when info->exists,
   * or empty. 0, or a negative wsy_err (the room is not served). */
  int (*load)(room *r, store *st, const store_room_info *info);
  /* Frees r->ks. */
  void (*unload)(room *r);
  /* One write (an op request) of a member (a->s) or the backend: checked,
   * decided against the room's state, and sequenced (commit_sequence), or
   * answered as a duplicate. 0 when sequenced or answered; -1 with *why
   * when refused (nothing changed). force: the backend's lock override. */
  int (*apply)(author *a, json_t *req, room *r, json_t *op, const char *cid, int force, json_t *from,
               op_refusal *why);
  /* The committed state for a joiner, from memory or read from the store
   * (inside a read snapshot), frozen into *out (sync.h: doc_frozen; NULL
   * for a kind whose joiners sync otherwise: no items). */
  int (*snapshot)(room *r, store *st, doc_frozen **out);
  /* Optional: reads the kind state again from the store into the loaded
   * r->ks, keeping what survives a reload (room_reload); without it the
   * state is unloaded and loaded. */
  int (*reload)(room *r, store *st, const store_room_info *info);
  /* Optional: as reload, from a snapshot read with STORE_FETCH_CHANGES
   * (cluster.c: a replica that holds the store's state as of some seq,
   * read again): only what changed is loaded again. Any error: the caller
   * reads the state whole. */
  int (*reload_changes)(room *r, store *st, const store_room_info *info);
  /* Optional: the bus's delivery of r's traffic to the kind's own
   * connections (r->peers), after the members got theirs. */
  void (*deliver)(engine *e, room *r, const bus_msg *m);
  /* The first character of the epochs of this kind's rooms, 0 for any:
   * a room's kind is kept in the store as its epoch's first character
   * (doc epochs are hex, Yjs epochs start with 'y'), so a room created
   * as one kind is never opened as another. */
  char epoch_tag;
  /* The kind trims its log itself (Yjs: below a snapshot): --history-ops
   * does not apply, since a trimmed entry would be lost to the document. */
  int own_retention;
} room_kind;

/* room_open's *err when the room exists as another kind. */
#define ROOM_WRONG_KIND 1

struct room {
  char *name;
  char epoch[STORE_EPOCH_MAX + 1];
  uint64_t seq;      /* last seq assigned (committed or not) */
  const room_kind *kind;
  void *ks;          /* the kind's state */
  member *members;
  unsigned nmembers;
  unsigned pending;  /* entries of this room in batches not yet done */
  map locks;         /* item -> lock* */
  unsigned nheld;
  uint64_t lockver;  /* in a cluster: the lock version as decided here (store.h, ITEM LOCKS) */
  char head[STORE_HEAD_MAX + 1]; /* in a cluster: the head the store holds once what was decided here is stored */
  uint64_t head_batch;           /* the batch whose head entry for r was added (commit.c) */
  size_t head_entry;             /* that entry's index in the batch */
  int head_soft;                 /* and it is soft: the batch has only lock changes of r so far */
  int locks_stale;   /* in a cluster: another node changed a lock; read them again before deciding */
  map rerelease;     /* in a cluster: item -> fence of releases fenced out, made again after the reload */
  int broken;        /* a commit failed: refuse writes until reloaded */
  uint64_t min_seq;  /* the first seq the log holds, as loaded and trimmed since (store.h) */
  map cursors;       /* "user\x1fdevice" -> uint64_t*: device cursors, as loaded and recorded since */
  ring *ring;        /* the frames fanned out here, kept once for resumes (ring.h) */
  uint64_t delivered;/* the last seq handed to this node's members (cluster.h) */
  int stale;         /* entries decided elsewhere were delivered: reload before deciding */
  int subscribed;    /* on the bus */
  struct ofw_held *fwd_held;      /* answers of forwarded ops waiting for delivered (opfwd.h) */
  defwrite *defer, **defer_tail; /* writes to decide again (commit.h), in order; keep the room loaded */
  uint64_t deferrals;             /* writes put on that list so far (defer.c) */
  int creating;            /* its creation is pending in a batch */
  /* In a cluster: a reload may find r deleted by another node. no_create
   * (set by the caller) says nobody here needs it any more: it is not made
   * again, gone says so, and it unloads (room_open makes it again if it is
   * asked for before that). */
  int no_create, gone;
  /* In a cluster, a room a join asked for is loaded without blocking: it is
   * in the rooms map, subscribed, but loading (no state yet) until its
   * first fetch is answered (cluster.c); the entries the bus brought
   * meanwhile are counted up to load_seen (read again after the load). */
  int loading;
  uint64_t load_seen;
  int subscribed_cluster;  /* loaded on a node of a cluster (joins wait for its creation) */
  unsigned settle_left;    /* nodes asked for their members that have not answered yet (presence.c) */
  uint64_t settle_until;   /* loop ms: joins stop waiting for them then */
  join_hold *settle_q;     /* joins waiting meanwhile, in order (proto.h) */
  join_hold *pend_q;       /* joins waiting for nothing of the room to be pending (join.c) */
  uint64_t pend_q_until;   /* loop ms: then they go on anyway; in a cluster the room's writes wait instead */
  map remote;        /* other nodes' members: "node\x1fuser\x1fdevice" -> their entry (presence.c) */
  /* In a cluster, the replica made current without blocking (cluster.c):
   * a fetch in flight (its id), fetches started and answered, whether
   * another is due when it is answered (and with the state), joins
   * waiting for one started after them, and whether r is being decided
   * right after one (nothing to read again then). */
  int fetching, fetch_again, fetch_state, fetch_after_commit, fresh_pass;
  int reload_changes; /* the reload under way reads a snapshot of changes (room_kind.reload_changes) */
  /* Items that batches which failed changed in memory (the replica ran
   * ahead of the store there), until the next reload; dirty_all: the room
   * itself (a deletion). A read of changes reads them whole (cluster.c). */
  map dirty;
  int dirty_all;
  uint64_t synced; /* memory (but for dirty items) is the store's state as of this seq */
  unsigned pins;     /* kept loaded while a fetch's answer is being applied */
  uint64_t fetch_id, fetch_started, fetch_done;
  struct fwait *fetch_q;
  uint64_t fetch_q_until; /* loop ms: from then on the room's writes wait behind the joins of fetch_q */
  void *peers;       /* the kind's own connections (Yjs), kept across reloads */
  unsigned npeers;   /* they keep the room loaded as members do */
  /* Presence changes not sent yet (presence_batch.c): the window's
   * changes, one entry per member in the order of their first change, the
   * same by dkey, the changes recorded in the window, and the next room
   * with a window open (engine's list). A room that goes idle sends its
   * window first (its members' leaves, for other nodes). The window
   * lasts --presence-interval << pshift (at most --presence-max-interval):
   * pshift grows by one at each window sent with a join or leave in it and
   * is 0 again after a window without, or a quiet interval between
   * windows; pdue: loop ms the open window is due (0: at the next tick,
   * as any state or connection change makes it), pflushed: when the last
   * one was sent. */
  struct pchange *pch, **pch_tail;
  map pch_by;
  /* The joined list's text of this node's members (room_presence_list_text),
   * pl_valid: it lists the members from pl_head on (r->members order,
   * newest first); a member added since is put in front at the next list.
   * Any change but a join makes it invalid; its memory goes with the
   * room's presence window (room_presence_list_drop), so an idle room
   * keeps none. */
  jw pl;
  member *pl_head;
  int pl_valid;
  uint32_t pgen;
  unsigned pshift;
  uint64_t pdue, pflushed;
  room *pnext;
};

/* The document room, loaded from the store (or created) before it is
 * served; NULL when the store cannot be read (*err a wsy_err) or when the
 * room is of another kind (*err ROOM_WRONG_KIND). */
room *room_get(engine *e, const char *name, int *err);
/* The same for a room of kind want (created as that kind when new). */
room *room_open(engine *e, const char *name, const room_kind *want, int *err);
/* In a cluster: the document room name, put in the rooms map and subscribed
 * to at once but loading (above); room_load_from ends it with a fetch's
 * snapshot. room_open on a loading room loads it there and then (a read on
 * the loop, as for a room not loaded). */
room *room_open_loading(engine *e, const char *name);
int room_load_from(engine *e, room *r, store *st);
/* r, or NULL while it is loading: what a caller that reads a loaded room's
 * memory (presence, its members) must use. */
room *room_ready(room *r);
/* Unloads r when it has no member, no peer and nothing pending. */
void room_unload_if_idle(engine *e, room *r);
/* After a failed commit, once nothing of r is pending: its seq, epoch and
 * kind state are read again from the store (what the failed batch assumed
 * is gone). 0, or a wsy_err (r stays broken; tried again on the next write). */
int room_reload(engine *e, room *r);
/* The same from st (a fetch's snapshot, store.h) instead of the store. */
int room_reload_from(engine *e, room *r, store *st);
/* Frees every room (shutdown). */
void room_free_all(engine *e);

/* s's membership of the room named rname, or NULL. */
member *room_membership(sess *s, const char *rname);
/* Adds s to r with its presence state (stolen; NULL: {}). */
member *room_member_add(room *r, sess *s, json_t *state);
/* Removes m: its locks are released and the others told it left. */
void room_member_remove(engine *e, member *m, const char *reason);

/* Fan-out through the bus: every member (minus the filters of bus_msg).
 * room_send steals msg. */
void room_send(engine *e, room *r, json_t *msg);
void room_publish(engine *e, const room *r, uint64_t seq, net_chunk *frame, const char *except,
                  const char *only_user);
/* The bus's delivery to this node's members (bus_deliver_fn; ud: engine):
 * the frame goes into the room's ring once, and each recipient's outbox
 * names its position (sess_send_ring). */
void room_deliver(void *ud, const bus_msg *m);

/* Presence (PROTOCOL.md 7): one entry of a joined or presence list; an
 * event ("join", "update" or "leave") to every member but the one it is
 * about: at once with --presence-interval 0, else recorded in the room's
 * window and sent, merged, when the window closes (presence_batch.c). */
json_t *room_presence_entry(member *m);
/* The joined list of r's presence (this node's members, then the others'
 * of cluster.h) appended to w as JSON text: the same bytes as jw_value of
 * an array of room_presence_entry, without a JSON tree per entry (a join
 * to a room of n members writes n entries). */
void room_presence_list_text(room *r, jw *w);
/* Frees the text room_presence_list_text keeps between joins. */
void room_presence_list_drop(room *r);
void room_presence_event(engine *e, member *about, const char *event);
/* The event as one message to every member but the one it is about, now
 * (with --presence-interval 0, and for what is not batched). */
void room_presence_send(engine *e, member *about, const char *event);

/* Presence windows (presence_batch.c, PROTOCOL.md 8.3). A room's presence
 * changes of one --presence-interval are gathered and sent together, one
 * engine timer for every room: per member (user, device) the changes of
 * the window merge into at most a leave and a join (the state and
 * connected flag of the last change), each still one message of today's
 * form. A member that joined during the window had their effect in its
 * joined list and gets only the changes after it (member.pgen). In a
 * cluster the merged events go over the bus, so other nodes' members get
 * them like this node's members that joined before the window. */
void presence_batch_note(engine *e, member *about, const char *event);
/* A member joins or joins again (its joined list is being sent): from now
 * on it gets the window's later changes only. */
void presence_batch_joined(member *m);
/* Sends r's window now (another node asks for r's members: what it hears
 * from this node must be what the answer follows). */
void presence_batch_flush_room(engine *e, room *r);
/* Sends every window (shutdown, before the bus goes). */
void presence_batch_flush_all(engine *e);
/* Drops r's window unsent (the room goes). */
void presence_batch_free(engine *e, room *r);
void presence_batch_init(engine *e);
void presence_batch_deinit(engine *e);

/* Locks (PROTOCOL.md 9; lock.c). On one node they live in memory and
 * every change is immediate. In a cluster (e->clustered) they live in the
 * shared store: a grant, renewal or release is made in memory, committed
 * with the next batch fenced by the room's lock version, and its reply and
 * event go out after the commit; a fenced-out lock request is decided
 * again like an op (commit.h). Other nodes' lock events make the replica's
 * locks stale (read again before the next decision). */
const lock *room_lock_held(room *r, const char *item);
json_t *room_lock_json(engine *e, const char *item, const lock *l);
/* The locks held in r, as the joined reply lists them. */
json_t *room_locks_json(engine *e, room *r);
void room_lock_release(engine *e, room *r, const char *item, lock *l, const char *reason);
/* Releases every lock s holds in r, with reason. */
void room_locks_release_by(engine *e, room *r, sess *s, const char *reason);
/* Releases expired locks of every room. In a cluster also those of
 * another node's session expired for LOCK_REMOTE_SLACK_MS (its node may be
 * gone), by one node only (locks_releaser). */
void room_locks_sweep(engine *e);
/* Frees r's locks (unload). */
void room_locks_free(room *r);
/* In a cluster: r's locks and lock version read from the store (inside a
 * read snapshot), replacing the replica's. 0 or a wsy_err. */
int room_locks_load(engine *e, room *r, uint64_t lockver);
/* After a load: releases r's locks held by a session of this node that is
 * gone or no longer r's member (a release fenced out, a restart under the
 * same node id). */
void room_locks_orphans(engine *e, room *r);
/* The same outside a load: reads the room's lock version and locks in one
 * snapshot; a room of another epoch marks r stale instead. */
int room_locks_reload(engine *e, room *r);
/* A node is gone: the locks its sessions held are released (by one node). */
void room_locks_node_gone(engine *e, const char *node);
/* 1 when the frame payload (len bytes) is a lock event. */
int room_lock_event(const uint8_t *payload, size_t len);
/* lock and unlock requests. */
void room_handle_lock(sess *s, json_t *req);
void room_handle_unlock(sess *s, json_t *req);

#endif
