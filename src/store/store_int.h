/* store_int.h -- private to src/store and its unit tests: the store's
 * layout, so a test can ask the write connection for its pragmas. */
#ifndef WSY_STORE_INT_H
#define WSY_STORE_INT_H

#include <sqlite3.h>

#include "store.h"

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
  SR__COUNT
};

struct store {
  sqlite3 *wdb;                 /* write connection: the committing thread */
  sqlite3 *rdb;                 /* read connection: the loop thread */
  sqlite3_stmt *w[SW__COUNT];   /* prepared once in store_open, owned here */
  sqlite3_stmt *r[SR__COUNT];
  int durability_full;
  int lock_fd;                  /* flock'ed <dir>/wsync.lock */
  char *path;                   /* <dir>/wsync.db */
};

#endif
