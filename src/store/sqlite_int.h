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

typedef struct sq_store {
  store base;                   /* ops: the SQLite backend */
  sqlite3 *wdb;                 /* write connection: the committing thread */
  sqlite3 *rdb;                 /* read connection: the loop thread */
  sqlite3_stmt *w[SW__COUNT];   /* prepared once in store_open, owned here */
  sqlite3_stmt *r[SR__COUNT];
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
