/* pg_int.h -- private to pg.c, pg_read.c and their unit tests: the
 * PostgreSQL backend's layout (store.h describes the contract). */
#ifndef WSY_PG_INT_H
#define WSY_PG_INT_H

#include <libpq-fe.h>
#include <uv.h>

#include "store_int.h"

/* The PostgreSQL schema's own version (table wsync_schema), independent of
 * the SQLite file's user_version: version 1 holds what SQLite's 4 holds. */
#define PG_SCHEMA_VERSION 6
/* pg_advisory_xact_lock key serializing migrations of several nodes. */
#define PG_MIGRATE_LOCK 0x77737963
#define PG_CONNECT_MS 2000 /* a connection attempt, either connection */
#define PG_COMMIT_MS 10000 /* a commit unanswered this long is dropped: WSY_IO */
#define PG_READ_MS 2000    /* a read unanswered this long is dropped: WSY_IO */

/* Prepared statements of the commit connection, made again on each new
 * connection (their text is in pg.c). */
enum {
  PW_ADVANCE,
  PW_ROOM_CREATE,
  PW_OPS,
  PW_ITEMS,
  PW_TEXT_INSERT,
  PW_CURSOR_UPSERT,
  PW_TRIM,
  PW_DELETE,
  PW_HOOK_POS,
  PW_LOCK,
  PW_HEAD,
  PW_HEAD_SOFT,
  PW_ADVANCE_HEAD,
  PW__COUNT
};

/* The commit connection's states (see the diagram in pg.c). */
enum { PC_DOWN, PC_CONNECTING, PC_IDLE, PC_BUSY };

typedef struct pg_fetch pg_fetch; /* pg_fetch.c */

typedef struct pg_store {
  store base;                /* ops: the PostgreSQL backend */
  char *url;
  int durability_full;
  uv_loop_t *loop;
  /* commit connection: loop thread, libpq non-blocking, pipeline mode */
  PGconn *wc;
  int wstate;
  uv_poll_t *wpoll;          /* on PQsocket(wc); allocated, freed in its close callback */
  int wpoll_events;
  uv_timer_t timer;          /* connect and commit deadlines */
  uv_timer_t defer;          /* answers a commit that failed before reaching the server */
  unsigned commit_ms;
  /* the batch in flight */
  store_batch *committing;
  store_commit_cb cb;
  void *cb_ud;
  int *slot_entry;           /* per queued statement: entry index; -1: a PREPARE */
  size_t nslots, slot_cap, slot_at;
  int syncs_left;            /* PGRES_PIPELINE_SYNCs still to come */
  int fail_rc;               /* first failure seen in the batch's results */
  char fail_msg[200];
  int fail_slot;
  int sent_commit;           /* the batch's Sync went out: a drop is ambiguous */
  /* read connection: loop thread, synchronous calls bounded by poll(2) */
  PGconn *rc;
  int in_read;               /* inside store_read_begin ... end */
  char conn_err[200];        /* why the last connection attempt failed */
  unsigned read_ms;
  uint64_t reads_sync;       /* reads made on the read connection (store_stats) */
  /* fetch connection (pg_fetch.c): loop thread, non-blocking, pipeline mode */
  PGconn *fc;
  int fstate;                /* PC_DOWN, PC_CONNECTING, PC_IDLE, PC_BUSY */
  uv_poll_t *fpoll;
  uv_timer_t ftimer;         /* connect deadline, then the oldest fetch's */
  pg_fetch *fq_head, **fq_tail; /* waiting to be sent (while connecting) */
  pg_fetch *ff_head, **ff_tail; /* sent, answered in this order */
  uint64_t fetches, fetch_failures;
  int handles_open;          /* uv handles still to close before freeing */
} pg_store;

/* pg.c: connection parameters, error mapping */
PGconn *pg_connect_start(const char *url, const char *app);
/* Maps a failed result (or a NULL one: connection lost) to wsy_err. */
int pg_map_result(const PGresult *r);

/* pg.c: queues prepared statement st of the commit connection for batch
 * entry `entry` (the one a failure of it is blamed on). */
int pg_send_stmt(pg_store *s, int st, int entry, const char *const *vals);
/* The same with each parameter's length and format (1: binary). */
int pg_send_stmt_bin(pg_store *s, int st, int entry, const char *const *vals, const int *lens, const int *fmts);
/* pg_batch.c: the checks made before sending anything (sets b->err), and
 * the batch's statements and Sync queued on the commit connection. */
int pg_validate(store_batch *b);
int pg_send_batch(pg_store *s);

/* pg_read.c: the read connection and the store_ops reads (store.h) */
int pgr_ensure(pg_store *s);
void pgr_drop(pg_store *s);
/* Runs sql with text params on the read connection within the read
 * deadline; *out (on 0) is the caller's, to PQclear. */
int pgr_exec(pg_store *s, const char *sql, int n, const char *const *vals, unsigned deadline_ms,
             PGresult **out, char *err, size_t errlen);
int pg_room_get(store *bs, const char *room, store_room_info *out);
int pg_room_locks(store *bs, const char *room, store_lock_cb cb, void *ud);
int pg_release_locks_of(store *bs, const char *prefix, store_release_cb cb, void *ud);
int pg_room_items(store *bs, const char *room, store_item_cb cb, void *ud);
int pg_room_texts(store *bs, const char *room, store_text_cb cb, void *ud);
int pg_history(store *bs, const char *room, uint64_t after_seq, size_t limit, store_history_cb cb, void *ud);
int pg_recent_messages(store *bs, const char *room, size_t limit, store_history_cb cb, void *ud);
int pg_dedupe_each(store *bs, store_dedupe_cb cb, void *ud);
int pg_dedupe_get(store *bs, const char *dkey, const char *cid, char room_out[STORE_ROOM_MAX + 1],
                  uint64_t *seq_out);
int pg_cursors(store *bs, const char *room, store_cursor_cb cb, void *ud);
int pg_hook_positions(store *bs, const char *hook, store_hook_pos_cb cb, void *ud);
int pg_hook_pos_get(store *bs, const char *hook, const char *room, const char *epoch, uint64_t *seq_out);
int pg_read_begin(store *bs);
int pg_read_end(store *bs);
int pg_stats(store *bs, store_stats_info *out);
void pg_read_counts(store *bs, uint64_t *sync_reads, uint64_t *fetches, uint64_t *fetch_failures);
int pg_rooms_list(store *bs, const char *after, size_t limit, store_room_cb cb, void *ud);
extern const char pg_sql_rooms_list[];
/* A dedupe record by (device, cid): the SQL and the reading of its row,
 * for pg_dedupe_get and its fetch (WSY_NOT_FOUND without one). */
extern const char pg_sql_dedupe_get[];
/* The release of a gone node's locks (pg_release_locks_of) and the walk of
 * the rows it released. */
extern const char pg_sql_release_locks[];
int pg_rows_released(const PGresult *r, store_release_cb cb, void *ud);
int pg_row_dedupe(const PGresult *r, char room_out[STORE_ROOM_MAX + 1], uint64_t *seq_out);
int pg_rooms_get(store *bs, const char *const *names, size_t n, store_room_cb cb, void *ud);

/* One room's reads (pg_read.c), shared by the synchronous calls and the
 * asynchronous fetch (pg_fetch.c): their SQL ($1 the room; PQ_LOG: $2
 * after seq, $3 limit or NULL; PQ_RECENT: $2 limit) and the walkers of
 * their rows. */
enum { PQ_ROOM, PQ_ITEMS, PQ_TEXTS, PQ_CURSORS, PQ_LOCKS, PQ_LOG, PQ_RECENT, PQ__COUNT };
extern const char *const pg_sql_room[PQ__COUNT];
extern const char pg_sql_items_changed[]; /* PQ_ITEMS of STORE_FETCH_CHANGES: $2 the fetch's after, $3 items */
void pg_row_room(const PGresult *r, store_room_info *out);
int pg_rows_items(const PGresult *r, store_item_cb cb, void *ud);
int pg_rows_texts(const PGresult *r, store_text_cb cb, void *ud);
int pg_rows_cursors(const PGresult *r, store_cursor_cb cb, void *ud);
int pg_rows_locks(const PGresult *r, store_lock_cb cb, void *ud);
/* The log rows with seq > after_seq, at most limit (0: all). */
int pg_rows_log(const PGresult *r, uint64_t after_seq, size_t limit, store_history_cb cb, void *ud);
/* Several rooms' rows (store_rooms_get): the query, its one parameter (the
 * names as a text[] literal, pg_rooms_literal) and the walker of its rows. */
extern const char pg_sql_rooms[];
int pg_rooms_literal(const char *const *names, size_t n, buf *lit);
int pg_rows_rooms(const PGresult *r, store_room_cb cb, void *ud);
int pg_fetch_rooms(store *bs, const char *const *names, size_t n, store_fetch_cb cb, void *ud);
int pg_fetch_log(store *bs, const char *room, uint64_t after, size_t limit, store_fetch_cb cb, void *ud);
int pg_fetch_list(store *bs, const char *after, size_t limit, store_fetch_cb cb, void *ud);
int pg_fetch_dedupe(store *bs, const char *dkey, const char *cid, store_fetch_cb cb, void *ud);
int pg_fetch_changes(store *bs, const char *room, int flags, uint64_t after, const char *const *items, size_t n,
                     store_fetch_cb cb, void *ud);
int pg_release_locks_async(store *bs, const char *prefix, store_fetch_cb cb, void *ud);

/* pg_fetch.c: store_fetch; pg_fetch_close drops what is unanswered. */
int pg_fetch_start(store *bs, const char *room, int flags, uint64_t after, store_fetch_cb cb, void *ud);
void pg_fetch_close(pg_store *s);

/* For tests: shorter deadlines than PG_COMMIT_MS / PG_READ_MS. */
void pg_store_set_timeouts(store *bs, unsigned commit_ms, unsigned read_ms);

#endif
