/* sqlite_int.h -- private to sqlite.c and its unit tests: the SQLite
 * backend's layout, so a test can ask the write connection for its pragmas. */
#ifndef WSY_SQLITE_INT_H
#define WSY_SQLITE_INT_H

#include <sqlite3.h>
#include <uv.h>

#include "store_int.h"

/* Statements of the write connection, used only inside store_batch_commit()
 * (and store_open's migration, which uses sqlite3_exec). */
enum {
  SW_BEGIN,
  SW_COMMIT,
  SW_ROLLBACK,
  SW_ROOM_INSERT,
  SW_ROOM_ADVANCE,
  SW_ROOM_JUMP,
  SW_ROOM_SEQ,
  SW_OP_INSERT,
  SW_ITEM_UPSERT,
  SW_ITEM_DELETE,
  SW_DEDUPE_INSERT,
  SW_CURSOR_UPSERT,
  SW_TRIM_OPS,
  SW_TRIM_ROOM,
  SW_DEL_ROOM,
  SW_DEL_OPS,
  SW_DEL_ITEMS,
  SW_DEL_CURSORS,
  SW_DEL_DEDUPE,
  SW_HOOK_POS_UPSERT,
  SW_DEL_HOOK_POS,
  SW_TEXT_INSERT,
  SW_TEXT_CLEAR,
  SW_DEL_TEXTS,
  SW__COUNT
};

/* Statements of the read connection (loop thread). */
enum {
  SR_BEGIN,
  SR_END,
  SR_ROOM_GET,
  SR_ITEMS,
  SR_HISTORY,
  SR_DEDUPE_ALL,
  SR_RECENT_MESSAGES,
  SR_DEDUPE,
  SR_CURSORS,
  SR_PAGES,
  SR_ROOMS_LIST,
  SR_HOOK_POS,
  SR_HOOK_POS_GET,
  SR_TEXTS,
  SR__COUNT
};

/* sqlite_rows.c: the tables a run of ops writes with multi-row statements,
 * and the run sizes prepared for each (SQ_ROWS_BIG, SQ_ROWS_SMALL rows). */
enum { SQ_T_OPS, SQ_T_ITEMS, SQ_T_DEDUPE, SQ_T_TCLEAR, SQ_T__COUNT };
#define SQ_ROWS_BIG 64
#define SQ_ROWS_SMALL 8

typedef struct sq_ckpt sq_ckpt; /* sqlite_ckpt.c */

typedef struct sq_store {
  store base;                   /* ops: the SQLite backend */
  sqlite3 *wdb;                 /* write connection: the committing thread */
  sqlite3 *rdb;                 /* read connection: the loop thread */
  sqlite3_stmt *w[SW__COUNT];   /* prepared once in store_open, owned here */
  sqlite3_stmt *r[SR__COUNT];
  sqlite3_stmt *rows[SQ_T__COUNT][2]; /* multi-row statements, prepared at first use */
  int texts_rows;               /* the texts table may have rows (else no clearing) */
  int rows_failed;              /* a multi-row write failed: the batch is redone entry by entry */
  int rows_off;                 /* entry by entry only (a unit test compares the two ways) */
  sq_ckpt *ckpt;                /* the checkpoint thread (sqlite_ckpt.c) */
  int durability_full;
  int lock_fd;                  /* flock'ed <dir>/wsync.lock */
  char *path;                   /* <dir>/wsync.db */
  uv_loop_t *loop;              /* commits are queued on its thread pool */
  uv_work_t work;
  store_batch *committing;      /* at most one commit at a time */
  store_commit_cb cb;
  void *cb_ud;
  int commit_rc;
} sq_store;

#define SEQ_MAX ((uint64_t)INT64_MAX)

/* A room's seq is advanced in SQL by the first op of the room in a batch
 * (checked: it must follow the stored seq); the ops right after it are
 * checked in memory and the room's row is written once more at the end, so
 * a batch costs two UPDATEs per room rather than one per op. */
typedef struct seq_run {
  const char *room;
  uint64_t first, last; /* seqs already in the room's row / assigned since */
} seq_run;

typedef struct seq_runs {
  seq_run r[16];
  size_t n;
} seq_runs;

/* sqlite.c: the step of a write statement (its error text into b->err). */
int sq_wstep(sq_store *s, store_batch *b, sqlite3_stmt *st);

/* sqlite_rows.c: an op's checks and its room's seq (above); the rooms'
 * rows written (before anything that reads a room's seq, and at the end). */
int sq_op_seq(sq_store *s, store_batch *b, const batch_entry *e, seq_runs *runs);
int sq_runs_flush(sq_store *s, store_batch *b, seq_runs *runs);

/* sqlite_rows.c: writes entries [0, n) of a run, E_OP entries and the
 * E_ITEM entries that set an item, whose ops rows, items rows, dedupe rows
 * and texts clearing go out in multi-row statements. Sets s->rows_failed on
 * any failure: the caller rolls back and applies the batch entry by entry,
 * which names the entry at fault. sq_rows_takes: whether e may be in a run. */
int sq_rows_takes(const batch_entry *e);
int sq_rows_run(sq_store *s, store_batch *b, const batch_entry *e, size_t n, seq_runs *runs);
void sq_rows_close(sq_store *s);

/* sqlite_ckpt.c: WAL checkpoints on a thread of their own, with db, a
 * connection of its own (taken over, closed by sq_ckpt_stop; closed on a
 * failure too); stop joins the thread. */
int sq_ckpt_start(sq_store *s, sqlite3 *db, char *err, size_t errlen);
void sq_ckpt_stop(sq_store *s);
/* Checkpoints so far that copied the whole WAL: by the thread, and by the
 * committing thread (read it between commits). */
void sq_ckpt_counts(sq_store *s, uint64_t *runs, uint64_t *writer_runs);

/* sqlite.c: SQLite result codes to wsy_err (the one place); binding text. */
int sq_map_rc(int rc);
void sq_bind_text(sqlite3_stmt *st, int i, const char *v, size_t len);
void sq_bind_str(sqlite3_stmt *st, int i, const char *v);

/* sqlite_read.c: the store_ops reads, as store.h describes them. */
int sq_room_get(store *bs, const char *room, store_room_info *out);
int sq_room_items(store *bs, const char *room, store_item_cb cb, void *ud);
int sq_room_texts(store *bs, const char *room, store_text_cb cb, void *ud);
int sq_history(store *bs, const char *room, uint64_t after_seq, size_t limit, store_history_cb cb, void *ud);
int sq_recent_messages(store *bs, const char *room, size_t limit, store_history_cb cb, void *ud);
int sq_dedupe_each(store *bs, store_dedupe_cb cb, void *ud);
int sq_dedupe_get(store *bs, const char *dkey, const char *cid, char room_out[STORE_ROOM_MAX + 1],
                  uint64_t *seq_out);
int sq_cursors(store *bs, const char *room, store_cursor_cb cb, void *ud);
int sq_hook_positions(store *bs, const char *hook, store_hook_pos_cb cb, void *ud);
int sq_hook_pos_get(store *bs, const char *hook, const char *room, const char *epoch, uint64_t *seq_out);
int sq_read_begin(store *bs);
int sq_read_end(store *bs);
int sq_stats(store *bs, store_stats_info *out);
int sq_rooms_list(store *bs, const char *after, size_t limit, store_room_cb cb, void *ud);

#endif
