/* store.h -- durable storage for wsync: the rooms, their op logs, the
 * materialized documents, op-id dedupe and device cursors. This is the store
 * SEAM: one interface, several backends behind it (store_int.h):
 *   - SQLite (store_sqlite_open): the embedded default, one database (WAL)
 *     in the data directory; described in detail below;
 *   - fault injection (store_fault_new): wraps another backend and fails
 *     chosen commits or reads, for tests;
 *   - PostgreSQL (store_pg_open): a database shared by several nodes
 *     (cluster mode), the same tables; its commits are FENCED (below);
 *     described after SQLite, at THE POSTGRESQL BACKEND.
 *
 * THE CONTRACT every backend keeps:
 *   - Seqs are gapless per room: an op's seq is the room's seq + 1, in
 *     commit order; a batch that breaks this fails as a whole (WSY_INVAL).
 *   - Dedupe: (dkey = "user:device", cid) is recorded with the op's room and
 *     seq in the op's transaction and is unique; a re-sent cid is found by
 *     store_dedupe_get.
 *   - Epochs: a room's epoch is made once, when the room is created, and
 *     never changes while its history lasts; a deleted room's name may be
 *     created again, with a new epoch.
 *   - Cursors only grow.
 *   - A commit is all or nothing. A failed commit changed nothing: the
 *     caller's in-memory state that assumed it must be rolled back to what
 *     the store holds (every op of the batch is refused).
 *   - Results come back on the loop thread: store_commit's callback runs
 *     there, never inside store_commit itself.
 *
 * No JSON parsing here. JSON (item fields, broadcast
 * messages) is stored as the text the caller produced and handed back
 * byte for byte. Errors are negative wsy_err; ownership is stated per call.
 *
 * READS are synchronous and run on the loop thread: cheap for the embedded
 * store (a local file in the page cache). PostgreSQL's cost one loopback
 * round trip each, bounded by a deadline (below); what a cluster reads in
 * its steady state (a replica made current, a join's check) it reads with
 * store_fetch instead, asynchronously (asynchronous reads of one room, below).
 *
 * THE SQLITE BACKEND.
 * THREADS. The store holds three SQLite connections:
 *   - the WRITE connection, used only by the commit: it runs on libuv's
 *     thread pool (off the event loop, so fsync never blocks it), one
 *     commit at a time, never two threads committing concurrently;
 *   - the READ connection, used by every store_room_*, store_history,
 *     store_dedupe_get, store_cursors, store_read_* and store_stats call:
 *     the loop thread, one call at a time. WAL lets those reads run while
 *     a commit is in progress on the writer thread; they see the last
 *     committed state;
 *   - the CHECKPOINT connection, used only by a thread of its own, which
 *     copies the WAL into the database file beside the commits
 *     (sqlite_ckpt.c); store_close() stops it.
 * store_sqlite_open() and store_close() run when no other call is in progress.
 * Building a batch (store_batch_new ... store_batch_cursor) touches no
 * connection and can happen on the loop thread while the previous batch
 * commits: that is the group commit (see the state diagram in sqlite.c).
 *
 * DURABILITY. Normal: synchronous=NORMAL; a committed batch survives a
 * process crash (SIGKILL) but the last commits may be lost on power loss or
 * OS crash. Full: synchronous=FULL; the WAL is fsynced before the commit
 * reports success.
 *
 * SCHEMA (file <dir>/wsync.db, PRAGMA user_version = schema version,
 * PRAGMA application_id = STORE_APPLICATION_ID; a lock on <dir>/wsync.lock
 * keeps a second process off the same directory):
 *   rooms(name PK, epoch TEXT 1-32 chars, seq INTEGER = last assigned seq
 *         (0: none yet), min_seq = first seq still retained in the log
 *         (1 for a new room; seq+1 when everything was trimmed),
 *         created_at = Unix ms)
 *   ops(room, seq, item NULL for publish, device NULL, cid NULL,
 *       msg TEXT = the exact broadcast JSON, PK(room,seq)) WITHOUT ROWID
 *   items(room, item, fields TEXT JSON, version, revs TEXT JSON or NULL,
 *         PK(room,item)) WITHOUT ROWID
 *       the current document, written in the same transaction as the op;
 *       revs maps each text field to its revision (schema version 2), and
 *       the key "" (never a field name) to the item's generation: the seq
 *       of the entry that created it (PROTOCOL.md 5.7)
 *   texts(room, item, field, rev, seq, ops TEXT JSON, PK(room,item,field,rev))
 *       WITHOUT ROWID (schema version 4): the text ops applied to an item
 *       since its items row was last written, so a text op writes its op,
 *       not the whole field; rev is the field's revision after the op, seq
 *       its entry. Writing or deleting the items row (an op or item entry
 *       naming the item) deletes the item's texts rows: the row then holds
 *       their effect. The item's current state is its row plus its texts
 *       rows replayed in rev order (the caller's: no JSON here).
 *   dedupe(device = "user:device", cid, room, seq, PK(device,cid)) WITHOUT ROWID
 *       one row per op sent with a cid: idempotent re-sends across restarts
 *   cursors(user, device, room, seq, updated_at Unix ms,
 *           PK(user,device,room)) WITHOUT ROWID
 *   hook_pos(hook, room, epoch, seq, updated_at Unix ms, PK(hook,room))
 *           WITHOUT ROWID (schema version 3): the last seq of room (in
 *           that epoch) that webhook `hook` delivered; written only while
 *           the room exists in that epoch, deleted with the room
 * Invariants the store enforces (a batch breaking one fails as a whole):
 * every op's room exists; a room's seqs are gapless (each op's seq is the
 * room's seq + 1); (room,seq) and (device,cid) are unique; epochs are 1-32
 * characters; room names 1-128. Catch-up after seq S is possible from the
 * log iff S + 1 >= min_seq.
 *
 * THE POSTGRESQL BACKEND (pg.c, pg_read.c).
 * SCHEMA: the tables above, same names and meanings (BIGINT seqs, TEXT
 * JSON stored byte for byte, names ordered bytewise by COLLATE "C"), made
 * and migrated by wsync: table wsync_schema holds its own version
 * (PG_SCHEMA_VERSION in pg_int.h, 1 = SQLite's 4), each migration step in
 * a transaction under pg_advisory_xact_lock so that nodes starting at
 * once migrate once; a database of a newer version is refused (WSY_INVAL).
 * One difference: from schema 5 a log row is its op's dedupe record while
 * it lives (unique index ops_dedupe on its device and cid), and the dedupe
 * table holds only the records of trimmed rows (and those written before
 * schema 5); store_dedupe_get and store_dedupe_each read both. From
 * schema 6 a trim reads only the rows it drops (from the room's min_seq).
 * THREADS. Three connections, all used on the loop thread only:
 *   - the COMMIT connection: libpq non-blocking, pipeline mode, driven by
 *     a uv_poll_t; a batch is one pipeline of prepared statements (runs
 *     of log rows and item writes as set-based ones) ending in one Sync:
 *     one round trip, one implicit transaction;
 *   - the READ connection: every read is one round trip sent with the
 *     non-blocking API and waited for with poll(2) against a 2 s deadline,
 *     so a read blocks the loop for at most that long; past it the
 *     connection is dropped and the read returns WSY_IO.
 *     store_read_begin/end is a REPEATABLE READ READ ONLY transaction;
 *   - the FETCH connection (pg_fetch.c): store_fetch's reads, non-blocking
 *     and pipelined like the commit's, each a REPEATABLE READ READ ONLY
 *     transaction, answered in order on the loop.
 * FENCING. For each room with ops in a batch, the room's row must hold the
 * seq just before the room's first op in the batch when the transaction
 * runs (its UPDATE takes the row lock, so commits of several nodes to one
 * room are serialized and seqs stay gapless across nodes). Beside the
 * results of store_commit:
 *   WSY_STALE      the room's seq is not the expected one, or a room being
 *                  created already exists: another node committed first;
 *                  store_batch_error names the room and the seq it holds
 *   WSY_DUPLICATE  a (dkey, cid) of the batch was already committed
 *   WSY_IO         PostgreSQL refused the connection, dropped it, or did not
 *                  answer within 10 s (2 s to connect). When the connection
 *                  broke after the batch was sent the outcome is UNKNOWN:
 *                  check dedupe and the room's seq. The next call
 *                  connects again.
 * DURABILITY. synchronous_commit is on for both settings: an ack means the
 * commit is durable in PostgreSQL. store_stats: the PostgreSQL schema
 * version, db_bytes = pg_database_size, wal_bytes 0. */
#ifndef WSY_STORE_H
#define WSY_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "../common/wsy.h"

#define STORE_SCHEMA_VERSION 4
#define STORE_APPLICATION_ID 0x77737963 /* "wsyc" */
#define STORE_EPOCH_MAX 32
#define STORE_ROOM_MAX 128
#define STORE_HEAD_MAX 96 /* a room's head token (store_batch_head) */

typedef struct store store;             /* opaque */
typedef struct store_batch store_batch; /* opaque */

/* ---- backends ----------------------------------------------------------- */

/* SQLite: opens (creating when missing) <dir>/wsync.db, and <dir> itself
 * (mode 0700), migrating the schema to STORE_SCHEMA_VERSION. Commits run on
 * loop's thread pool (loop may be NULL when only store_sqlite_commit_sync is
 * used, as unit tests do). On success *out is the caller's, to
 * store_close(). On failure *out is NULL, err (when not NULL) holds a
 * sentence for the operator, and the result is
 *   WSY_INVAL     the database belongs to a newer wsync or another program
 *   WSY_AGAIN     another process holds the data directory
 *   WSY_IO        cannot create/open/migrate the file, or no WAL support
 *   WSY_NOMEM     SQLite ran out of memory */
int store_sqlite_open(const char *dir, int durability_full, uv_loop_t *loop, store **out, char *err,
                      size_t errlen) WSY_WUR;
/* PostgreSQL: connects to url (postgres://USER@HOST:PORT/DB or any libpq
 * connection string), creates or migrates the schema, and commits on loop
 * (which must not be NULL for store_commit). On failure *out is NULL, err
 * holds a sentence, and the result is
 *   WSY_INVAL     no URL, or the database has a newer wsync schema
 *   WSY_IO        cannot connect (2 s), or the migration failed */
int store_pg_open(const char *url, int durability_full, uv_loop_t *loop, store **out, char *err,
                  size_t errlen) WSY_WUR;
/* The SQLite commit itself, synchronous, on the calling thread (the writer
 * thread of store_commit; unit tests). Results as for store_commit. */
int store_sqlite_commit_sync(store *s, store_batch *b) WSY_WUR;

/* Fault injection: a store that forwards every call to inner (which it
 * owns from now on) except those armed to fail. Armed failures return
 * WSY_IO ("injected fault") without calling inner: a failed commit changes
 * nothing, as a real one. */
typedef enum { STORE_FAULT_COMMIT, STORE_FAULT_DEDUPE, STORE_FAULT_READ, STORE_FAULT__COUNT } store_fault_kind;
store *store_fault_new(store *inner, uv_loop_t *loop);
/* The next `skip` calls of that kind succeed, the `count` after them fail. */
void store_fault_arm(store *s, store_fault_kind what, unsigned skip, unsigned count);
/* For end-to-end tests: before each call of a kind not armed by
 * store_fault_arm, the store reads path; lines "commit N", "dedupe N" and
 * "read N" arm the next N calls of that kind to fail (the file is then
 * rewritten with what is left), and a line "delay MS" holds the next
 * commit MS milliseconds before it goes on (as a slow database would),
 * "delay-fetch MS" the next store_fetch (made that much later: it may be
 * answered after fetches made after it). A
 * missing file arms nothing. Use one way of arming per store, not both. */
void store_fault_control(store *s, const char *path);

/* ---- the interface ------------------------------------------------------ */

/* The backend's name ("sqlite", "postgres", "fault"). */
const char *store_backend(const store *s);
/* Closes the backend (SQLite: finalizes every statement and closes both
 * connections, which checkpoints the WAL). NULL is allowed. No commit may
 * be in flight. */
void store_close(store *s);

/* ---- reads (loop thread, read connection) ------------------------------- */

typedef struct store_room_info {
  int exists;                        /* 0: no such room, other fields zero */
  char epoch[STORE_EPOCH_MAX + 1];
  uint64_t seq;                      /* last assigned seq, 0 when none */
  uint64_t min_seq;                  /* first seq retained in the log */
  int64_t created_ms;                /* Unix ms */
  uint64_t lockver;                  /* the room's lock version (ITEM LOCKS below); 0 without them */
  char head[STORE_HEAD_MAX + 1];     /* the room's head token (store_batch_head); "" when none */
} store_room_info;

/* Fills *out; a missing room is not an error (exists = 0, returns 0). */
int store_room_get(store *s, const char *room, store_room_info *out) WSY_WUR;

/* Walk callbacks: every pointer is borrowed, valid only during the call.
 * Return 0 to continue; anything else stops the walk and is returned by
 * the walking call (a negative wsy_err, or a positive value of the
 * caller's). A callback must not start another walk of the same kind. */
/* revs_json: the item's text field revisions, NULL when it has none. */
typedef int (*store_item_cb)(const char *item, const char *fields_json, size_t fields_len,
                             const char *revs_json, uint64_t version, void *ud);
typedef int (*store_history_cb)(uint64_t seq, const char *msg, size_t len, void *ud);
/* updated_ms: wall-clock ms of the cursor's last change. */
typedef int (*store_cursor_cb)(const char *user, const char *device, uint64_t seq, int64_t updated_ms,
                               void *ud);

/* The room's current items, ordered by item id (bytewise). */
int store_room_items(store *s, const char *room, store_item_cb cb, void *ud) WSY_WUR;
/* The room's texts rows (see SCHEMA), ordered by item, field, rev. */
typedef int (*store_text_cb)(const char *item, const char *field, uint64_t rev, uint64_t seq,
                             const char *ops_json, size_t len, void *ud);
int store_room_texts(store *s, const char *room, store_text_cb cb, void *ud) WSY_WUR;
/* The retained ops of room with seq > after_seq, in seq order, at most limit
 * of them (0: no limit). Whether the log still reaches back to after_seq
 * is the caller's check against min_seq (store_room_get). */
int store_history(store *s, const char *room, uint64_t after_seq, size_t limit, store_history_cb cb,
                  void *ud) WSY_WUR;
/* The newest `limit` retained publishes of room (log entries whose msg is
 * a JSON object starting with "type":"message"), oldest first. */
int store_recent_messages(store *s, const char *room, size_t limit, store_history_cb cb, void *ud) WSY_WUR;
/* Every recorded (device, cid), in no particular order: to build an
 * in-memory filter at start-up so most lookups never reach SQLite. */
typedef int (*store_dedupe_cb)(const char *dkey, const char *cid, void *ud);
int store_dedupe_each(store *s, store_dedupe_cb cb, void *ud) WSY_WUR;
/* The (room, seq) an op sent by dkey ("user:device") with cid was
 * committed as: 0, or WSY_NOT_FOUND, or another negative wsy_err when the
 * store could not tell (I/O, busy: the caller must not assume "new"). room_out (when not NULL) gets the NUL-terminated room
 * name, seq_out (when not NULL) the seq. */
int store_dedupe_get(store *s, const char *dkey, const char *cid,
                     char room_out[STORE_ROOM_MAX + 1], uint64_t *seq_out) WSY_WUR;
/* Device cursors of room (the highest seq each device applied), ordered by
 * user then device. */
int store_cursors(store *s, const char *room, store_cursor_cb cb, void *ud) WSY_WUR;

/* ITEM LOCKS (PROTOCOL.md 9) are kept by a store shared by several nodes
 * (PostgreSQL), so that every node decides on the same ones. Each lock row
 * has a VERSION that every change of it raises by one: a change names the
 * version of its item's row it was decided on (0: no row yet), so that
 * changes of different items, decided on several nodes at once, never
 * fence each other out. Each room has a LOCK VERSION too
 * (store_room_info.lockver), which every lock change raises by one: an op
 * may name it (store_op.locks_at), so that an op checked against the locks
 * is only stored if no lock of its room changed meanwhile. A released
 * lock keeps its row (holder NULL) so that its fence keeps growing. The
 * embedded store keeps none: a single node holds its locks in memory;
 * store_room_locks walks nothing there and a batch with a lock entry fails
 * (WSY_INVAL). */
typedef int (*store_lock_cb)(const char *item, const char *holder, const char *user, const char *device,
                             uint64_t fence, int64_t expires_ms, uint64_t version, void *ud);
/* The room's lock rows, ordered by item; holder, user and device are NULL
 * for a released one; expires_ms is Unix ms; version is the row's (1 or
 * more). */
int store_room_locks(store *s, const char *room, store_lock_cb cb, void *ud) WSY_WUR;
/* Releases, in one transaction, every lock whose holder starts with
 * prefix (the sessions of a node that is gone: "node."), raising the lock
 * version of each room concerned; cb gets each (room, item, fence)
 * released. Synchronous (store_release_locks_async is not). 0, doing
 * nothing, for a store that keeps no locks. */
typedef int (*store_release_cb)(const char *room, const char *item, uint64_t fence, void *ud);
int store_release_locks_of(store *s, const char *prefix, store_release_cb cb, void *ud) WSY_WUR;

/* Webhook positions (docs/HOOKS.md): each (room, epoch, seq) stored for
 * hook, in no particular order. */
typedef int (*store_hook_pos_cb)(const char *room, const char *epoch, uint64_t seq, void *ud);
int store_hook_positions(store *s, const char *hook, store_hook_pos_cb cb, void *ud) WSY_WUR;
/* The position of hook in room: *seq_out is the stored seq when its epoch
 * is epoch, else 0 (none stored, or one of an earlier incarnation). */
int store_hook_pos_get(store *s, const char *hook, const char *room, const char *epoch,
                       uint64_t *seq_out) WSY_WUR;

/* Groups the reads between them into one snapshot of the database, e.g. to
 * load a room (store_room_get + store_room_items) that a commit might touch
 * meanwhile. Keep it short: an open snapshot stops WAL checkpoints from
 * completing. Not nested; every begin that returns 0 needs an end. */
int store_read_begin(store *s) WSY_WUR;
int store_read_end(store *s);

/* Rooms in name order (bytewise), those after `after` ("" or NULL: from the
 * first), at most limit of them (0: no limit). info->exists is 1. */
typedef int (*store_room_cb)(const char *room, const store_room_info *info, void *ud);
int store_rooms_list(store *s, const char *after, size_t limit, store_room_cb cb, void *ud) WSY_WUR;

/* The rows of the named rooms that exist (in no particular order), read in
 * one snapshot: for PostgreSQL one round trip, whatever n (the cluster's
 * periodic check of every loaded room). */
int store_rooms_get(store *s, const char *const *names, size_t n, store_room_cb cb, void *ud) WSY_WUR;

typedef struct store_stats_info {
  int schema_version;
  int durability_full;
  uint64_t db_bytes;   /* main file: page_count * page_size */
  uint64_t wal_bytes;  /* size of wsync.db-wal, 0 when absent */
} store_stats_info;

/* ---- asynchronous reads of one room ---------------------------------------
 * A store over the network (PostgreSQL) reads a room without blocking the
 * loop: store_fetch reads, in one snapshot, the room's row (store_room_get),
 * with STORE_FETCH_STATE what loading it reads (items, texts, cursors,
 * locks), with STORE_FETCH_LOG its log after after_seq; then cb(ud, rc,
 * snap) runs on the loop thread (never inside store_fetch), in the order
 * the fetches were made. snap, valid only during cb (NULL when rc != 0), is
 * a read-only store answering those reads about that room from the
 * snapshot: store_room_get, store_room_items, store_room_texts,
 * store_cursors, store_room_locks, store_history (after_seq at or past the
 * fetch's), store_read_begin/end (nothing to do); any other call fails
 * (WSY_INVAL). Failures as for reads (WSY_IO: connection, deadline).
 * store_fetch returns 0 when cb will run, or a wsy_err without calling it:
 * WSY_INVAL when the backend reads synchronously only (SQLite: a local file
 * is read where it is needed). Fetches not answered by store_close are
 * dropped and their cb never runs. */
#define STORE_FETCH_STATE 1
#define STORE_FETCH_LOG 2
/* With STORE_FETCH_STATE: the snapshot's store_room_items hands every item
 * of the room, but those not written after after_seq (their row's version
 * at most after_seq) with fields_json and revs_json NULL: the caller has
 * them already (a replica read again, only what changed). */
#define STORE_FETCH_CHANGES 4
/* The room's last STORE_FETCH_RECENT_MAX stored publishes: the snapshot
 * answers store_recent_messages with a limit up to that. */
#define STORE_FETCH_RECENT 8
#define STORE_FETCH_RECENT_MAX 1000
#define STORE_FETCH_RECENT_MAX_S "1000" 
typedef void (*store_fetch_cb)(void *ud, int rc, store *snap);
int store_fetch(store *s, const char *room, int flags, uint64_t after_seq, store_fetch_cb cb, void *ud) WSY_WUR;
/* The rows of the named rooms that exist, as store_rooms_get reads them,
 * read the same way as store_fetch (in its order, on its connection): snap
 * answers store_rooms_get with those rows (whatever names it is given) and
 * nothing else. n must be at least 1. Returns as store_fetch. */
int store_fetch_rooms(store *s, const char *const *names, size_t n, store_fetch_cb cb, void *ud) WSY_WUR;
/* store_fetch(s, room, STORE_FETCH_LOG, after_seq, ...) reading at most
 * limit entries of the log (0: all of them). */
int store_fetch_log(store *s, const char *room, uint64_t after_seq, size_t limit, store_fetch_cb cb,
                    void *ud) WSY_WUR;
/* The rooms after the name after (by name, at most limit; limit >= 1), as
 * store_rooms_list reads them, read the same way as store_fetch: snap
 * answers store_rooms_list with those rows (whatever it is given) and
 * nothing else. Returns as store_fetch. */
int store_fetch_list(store *s, const char *after, size_t limit, store_fetch_cb cb, void *ud) WSY_WUR;
/* The dedupe record of (dkey, cid), as store_dedupe_get reads it, read the
 * same way as store_fetch: snap answers store_dedupe_get for that record
 * (WSY_NOT_FOUND when the store has none) and nothing else. Returns as
 * store_fetch; WSY_INVAL from a store that reads only on the loop. */
int store_fetch_dedupe(store *s, const char *dkey, const char *cid, store_fetch_cb cb, void *ud) WSY_WUR;
/* store_fetch(s, room, flags | STORE_FETCH_STATE | STORE_FETCH_LOG |
 * STORE_FETCH_CHANGES, after_seq, ...), where the n items named are handed
 * with their fields whatever their version: items of a replica that may
 * have run ahead of the store (a batch that failed changed them in memory).
 * Returns as store_fetch. */
int store_fetch_changes(store *s, const char *room, int flags, uint64_t after_seq, const char *const *items,
                        size_t n, store_fetch_cb cb, void *ud) WSY_WUR;
/* store_release_locks_of, asynchronously, in the order and the way of
 * store_fetch (on its connection, never blocking the loop): cb(ud, rc, snap)
 * on the loop thread, where store_release_locks_of(snap, prefix, ...) walks
 * the locks it released (nothing else is answered). WSY_INVAL from a store
 * that keeps no locks or releases them synchronously only. */
int store_release_locks_async(store *s, const char *prefix, store_fetch_cb cb, void *ud) WSY_WUR;
/* Counters of a network store's reads, without asking it anything: reads
 * that waited on the loop, and fetches answered, and failed; all 0 for a
 * backend that does not count them (SQLite). */
void store_read_counts(store *s, uint64_t *sync_reads, uint64_t *fetches, uint64_t *fetch_failures);
int store_stats(store *s, store_stats_info *out) WSY_WUR;

/* ---- group commit (batch built on the loop thread, committed anywhere) --- */

/* One accepted op. For a publish item is NULL (fields_json, version
 * ignored). fields_json is the item's full fields after the op, or NULL when
 * the op deleted the item; version is the item's new version (by the house
 * rule, the op's seq). dkey and cid are NULL for backend ops; when both
 * are set they are recorded for dedupe. msg/msg_len is the broadcast JSON
 * stored in the log and replayed by store_history. */
typedef struct store_op {
  const char *room;
  uint64_t seq;
  const char *item;
  const char *fields_json;
  uint64_t version;
  const char *dkey;         /* "user:device", with cid: recorded for dedupe */
  const char *cid;
  const char *msg;
  size_t msg_len;
  const char *revs_json; /* the item's text field revisions after the op, or NULL */
  /* A store with ITEM LOCKS: the room's lock version the op was decided
   * on, plus one (0: not checked); checked with the seq fence of the
   * room's first op in the batch (WSY_STALE when it moved). */
  uint64_t locks_at;
} store_op;

/* A new, empty batch owned by the caller (store_batch_free). Every
 * store_batch_* call below copies the strings it is given: the caller keeps
 * its inputs. Entries are applied in the order they were added. A batch may
 * only be added to before its first store_batch_commit(). */
store_batch *store_batch_new(void);
/* Creates room with epoch (1-32 chars), seq 0, min_seq 1. The room must not
 * exist: re-creating one fails the commit (epochs are made exactly once). */
void store_batch_room_create(store_batch *b, const char *room, const char *epoch);
/* Appends op to the room's log, applies it to the items, records the dedupe
 * row, and advances the room's seq to op->seq (which must be seq + 1). */
void store_batch_op(store_batch *b, const store_op *op);
/* Device cursor upsert; the stored seq only grows (max of old and new). */
void store_batch_cursor(store_batch *b, const char *user, const char *device, const char *room,
                        uint64_t seq);
/* Sets (fields_json) or deletes (NULL) one item without a log entry of its
 * own: the items of an op that touches several (a batch), logged by the
 * store_batch_op before it with item NULL. */
void store_batch_item(store_batch *b, const char *room, const char *item, const char *fields_json,
                      const char *revs_json, uint64_t version);
/* A texts row (see SCHEMA): the op ops_json (len bytes) took field of item
 * to revision rev in the entry seq. Added after that entry's store_batch_op
 * (which names no item: the items row stays as it is). */
void store_batch_text(store_batch *b, const char *room, const char *item, const char *field, uint64_t rev,
                      uint64_t seq, const char *ops_json, size_t len);
/* Drops the room's ops with seq < keep_from_seq and raises min_seq to
 * keep_from_seq (clamped to seq + 1; min_seq never goes down). */
void store_batch_trim(store_batch *b, const char *room, uint64_t keep_from_seq);
/* Deletes the room and everything of it: its log, items, device cursors,
 * webhook positions and dedupe rows. The room must exist (else the commit fails with
 * WSY_NOT_FOUND). A room of the same name created afterwards (even in the
 * same batch) is a new room: new epoch, seq from 1. */
void store_batch_room_delete(store_batch *b, const char *room);
/* Webhook hook has delivered room (in epoch) up to seq: the stored seq
 * only grows within an epoch and is replaced by one of a new epoch. Written
 * only if the room exists with that epoch at commit time (a position of a
 * deleted room is dropped, not an error). */
void store_batch_hook_pos(store_batch *b, const char *hook, const char *room, const char *epoch,
                          uint64_t seq);
/* A lock change of item in room (ITEM LOCKS above): holder ("node.session",
 * NULL for a release, user and device then ignored), its fence and expiry
 * (Unix ms). Fenced: the item's lock row must be at version expect_version
 * (0: no row), and becomes expect_version + 1 (else WSY_STALE; a missing
 * room WSY_NOT_FOUND). The room's lock version rises by one, whatever it
 * was. */
void store_batch_lock(store_batch *b, const char *room, uint64_t expect_version, const char *item,
                      const char *holder, const char *user, const char *device, uint64_t fence,
                      int64_t expires_ms);
/* A store shared by several nodes: the room's HEAD, a token naming the
 * batch that last changed the room, must be expect (NULL: none yet) and
 * becomes head (1-STORE_HEAD_MAX bytes), else WSY_STALE (WSY_NOT_FOUND: no
 * such room). A node names each of its batches and chains them: a batch
 * decided on top of one that was then fenced out expects that one's token
 * and so fails too, even where another node's commits left the room at the
 * seq and lock version it expects. The embedded store fails it (WSY_INVAL). */
size_t store_batch_head(store_batch *b, const char *room, const char *expect, const char *head, int soft);
/* A SOFT head (soft set above) moves the head only if it is expect, and
 * fails nothing otherwise: the head of a batch whose entries of the room
 * are all lock changes, which their lock rows fence (ITEM LOCKS above); the
 * node's next batch then expects head, and is fenced out if it was not
 * moved. Made strict again (the batch gained an op of the room) by the
 * index store_batch_head returned. */
void store_batch_head_strict(store_batch *b, size_t entry);
/* Entries of every kind added so far; 0 means committing does nothing. */
size_t store_batch_count(const store_batch *b);
/* Hands cb each (room, item) whose item or text rows b writes, item NULL
 * for a room b deletes (its items all go). */
void store_batch_each_item(const store_batch *b, void (*cb)(const char *room, const char *item, void *ud), void *ud);

/* The result of a commit, on the loop thread: 0, or what
 * store_sqlite_commit_sync describes. */
typedef void (*store_commit_cb)(void *ud, int rc);
/* Submits b: applies every entry in ONE transaction, then calls cb(ud, rc)
 * on the loop thread (never before store_commit returns). The caller must
 * not touch b until then, and submits one batch at a time. All or nothing:
 * on failure the database is unchanged and store_batch_error() says which
 * entry failed and why. Results:
 *   0            committed (durable per the durability setting)
 *   WSY_INVAL    an invariant was broken (duplicate seq or cid, gap in seq,
 *                re-created room, bad epoch or name); retrying won't help
 *   WSY_NOT_FOUND  an op or trim names a room that does not exist
 *   WSY_AGAIN    database locked by another connection (busy timeout)
 *   WSY_IO, WSY_NOMEM, WSY_TOO_LARGE   I/O, memory or size failure
 * A failed batch may be committed again (e.g. after WSY_AGAIN/WSY_IO); a
 * committed one may not (WSY_INVAL). */
void store_commit(store *s, store_batch *b, store_commit_cb cb, void *ud);
/* Why the last commit of b failed ("" when it did not); owned by b. */
const char *store_batch_error(const store_batch *b);
/* Frees b and every copy it holds. NULL is allowed. */
void store_batch_free(store_batch *b);
/* n bytes (suitably aligned for any type) that live until b is freed: what
 * the caller keeps per entry, allocated per batch rather than one by one. */
void *store_batch_alloc(store_batch *b, size_t n);

#endif
