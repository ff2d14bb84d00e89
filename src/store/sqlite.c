/* sqlite.c -- the SQLite storage engine of wsync (see store.h for the
** contract, the schema and the thread rules).
**
** GROUP COMMIT. The loop thread gathers what one loop iteration accepted
** into a batch, hands it to the writer thread, and starts the next batch
** while that one commits. Only when store_batch_commit() has returned 0
** may the ops be acknowledged and broadcast (an ack before COMMIT would
** announce data a crash could still lose). A batch moves through these
** states; the function that makes each transition is named on the arrow:
**
**                  store_batch_commit()               COMMIT ok
**     BUILDING -------------------------> COMMITTING -------------> COMMITTED
**     (loop thread: store_batch_           |     ^
**      room_create, _op, _cursor,          |     | store_batch_commit() again
**      _trim)                an entry or   |     | (retry, same entries)
**                        COMMIT fails:     v     |
**                             ROLLBACK   FAILED -+
**
**     any state -- store_batch_free() --> gone. Adding an entry outside BUILDING
**     aborts: it would miss the transaction the caller then acknowledges.
**
** The write connection, inside store_batch_commit(), has two states:
**
**     IDLE -- BEGIN IMMEDIATE --> WRITING -- entry 1..n applied, COMMIT --> IDLE
**                                    |
**                                    +-- an entry or COMMIT fails --> ROLLBACK --> IDLE
**
** Invariants:
**   1. The database only ever holds whole batches: every entry of a batch
**      or none (one transaction; a failed step rolls it all back).
**   2. BEGIN IMMEDIATE takes the write lock up front, so a batch never fails
**      half-way because another writer got in first (it waits busy_timeout
**      at BEGIN instead, and fails with WSY_AGAIN before changing anything).
**   3. A room's seq is the seq of its last op, and its ops are 1..seq with
**      no gap, minus those below min_seq that a trim dropped. The op row,
**      the item row, the dedupe row and the room's seq change in the same
**      transaction, so a restart finds the document exactly as acked.
**   4. Entries are applied in the order they were added, so a room created
**      in a batch can take ops in that same batch. (A run of ops goes out
**      in multi-row statements, table by table, which leaves the same
**      database: sqlite_rows.c.)
**   5. The write connection is touched only by the thread inside
**      store_batch_commit() and the read connection only by the loop
**      thread; SQLite's WAL gives the reader the last committed snapshot
**      while a commit runs, so neither waits for the other. A third
**      connection, on a thread of its own, checkpoints the WAL beside
**      the commits (sqlite_ckpt.c). */
#include "sqlite_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUSY_TIMEOUT_MS 5000

/* ---- schema -------------------------------------------------------------- */

/* Migration i (0-based) takes the schema from user_version i to i + 1. Only
** ever append: a released step never changes. Lengths are checked in bytes
** (CAST AS BLOB) because readers copy into fixed buffers. */
static const char *const migrations[] = {
  /* 1: everything */
  "CREATE TABLE rooms("
  "  name TEXT NOT NULL PRIMARY KEY CHECK(length(CAST(name AS BLOB)) BETWEEN 1 AND 128),"
  "  epoch TEXT NOT NULL CHECK(length(CAST(epoch AS BLOB)) BETWEEN 1 AND 32),"
  "  seq INTEGER NOT NULL CHECK(seq >= 0),"
  "  min_seq INTEGER NOT NULL CHECK(min_seq BETWEEN 1 AND seq + 1),"
  "  created_at INTEGER NOT NULL"
  ") WITHOUT ROWID, STRICT;"
  "CREATE TABLE ops("
  "  room TEXT NOT NULL,"
  "  seq INTEGER NOT NULL CHECK(seq >= 1),"
  "  item TEXT,"
  "  device TEXT,"
  "  cid TEXT,"
  "  msg TEXT NOT NULL,"
  "  PRIMARY KEY(room, seq)"
  ") WITHOUT ROWID, STRICT;"
  "CREATE TABLE items("
  "  room TEXT NOT NULL,"
  "  item TEXT NOT NULL,"
  "  fields TEXT NOT NULL,"
  "  version INTEGER NOT NULL,"
  "  PRIMARY KEY(room, item)"
  ") WITHOUT ROWID, STRICT;"
  "CREATE TABLE dedupe("
  "  device TEXT NOT NULL,"
  "  cid TEXT NOT NULL,"
  "  room TEXT NOT NULL CHECK(length(CAST(room AS BLOB)) BETWEEN 1 AND 128),"
  "  seq INTEGER NOT NULL,"
  "  PRIMARY KEY(device, cid)"
  ") WITHOUT ROWID, STRICT;"
  "CREATE TABLE cursors("
  "  user TEXT NOT NULL,"
  "  device TEXT NOT NULL,"
  "  room TEXT NOT NULL,"
  "  seq INTEGER NOT NULL,"
  "  updated_at INTEGER NOT NULL,"
  "  PRIMARY KEY(user, device, room)"
  ") WITHOUT ROWID, STRICT;"
  "CREATE INDEX cursors_by_room ON cursors(room, user, device);",
  /* 2: revisions of an item's text fields (PROTOCOL.md 5.7): a JSON object
  ** field -> revision, NULL for an item without text fields */
  "ALTER TABLE items ADD COLUMN revs TEXT;",
  /* 3: webhook positions (docs/HOOKS.md): what each webhook delivered */
  "CREATE TABLE hook_pos("
  "  hook TEXT NOT NULL,"
  "  room TEXT NOT NULL,"
  "  epoch TEXT NOT NULL,"
  "  seq INTEGER NOT NULL CHECK(seq >= 0),"
  "  updated_at INTEGER NOT NULL,"
  "  PRIMARY KEY(hook, room)"
  ") WITHOUT ROWID, STRICT;",
  /* 4: text ops stored as ops since the item's row was written (store.h) */
  "CREATE TABLE texts(room TEXT NOT NULL, item TEXT NOT NULL, field TEXT NOT NULL,"
  "  rev INTEGER NOT NULL, seq INTEGER NOT NULL, ops TEXT NOT NULL,"
  "  PRIMARY KEY(room, item, field, rev)) WITHOUT ROWID, STRICT;",
};

_Static_assert(WSY_ARRAY_LEN(migrations) == STORE_SCHEMA_VERSION,
               "one migration step per schema version");

static const char *const write_sql[SW__COUNT] = {
  [SW_BEGIN] = "BEGIN IMMEDIATE",
  [SW_COMMIT] = "COMMIT",
  [SW_ROLLBACK] = "ROLLBACK",
  [SW_ROOM_INSERT] = ("INSERT INTO rooms(name, epoch, seq, min_seq, created_at)"
                      " VALUES(?1, ?2, 0, 1, ?3)"),
  [SW_ROOM_ADVANCE] = "UPDATE rooms SET seq = ?2 WHERE name = ?1 AND seq = ?2 - 1",
  [SW_ROOM_JUMP] = "UPDATE rooms SET seq = ?3 WHERE name = ?1 AND seq = ?2",
  [SW_ROOM_SEQ] = "SELECT seq FROM rooms WHERE name = ?1",
  [SW_OP_INSERT] = ("INSERT INTO ops(room, seq, item, device, cid, msg)"
                    " VALUES(?1, ?2, ?3, ?4, ?5, ?6)"),
  [SW_ITEM_UPSERT] = ("INSERT INTO items(room, item, fields, version, revs) VALUES(?1, ?2, ?3, ?4, ?5)"
                      " ON CONFLICT(room, item) DO UPDATE SET fields = excluded.fields,"
                      " version = excluded.version, revs = excluded.revs"),
  [SW_ITEM_DELETE] = "DELETE FROM items WHERE room = ?1 AND item = ?2",
  [SW_DEDUPE_INSERT] = "INSERT INTO dedupe(device, cid, room, seq) VALUES(?1, ?2, ?3, ?4)",
  [SW_CURSOR_UPSERT] = ("INSERT INTO cursors(user, device, room, seq, updated_at)"
                        " VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(user, device, room) DO UPDATE SET"
                        " seq = max(seq, excluded.seq), updated_at = excluded.updated_at"),
  [SW_TRIM_OPS] = ("DELETE FROM ops WHERE room = ?1"
                   " AND seq < (SELECT min_seq FROM rooms WHERE name = ?1)"),
  [SW_TRIM_ROOM] = "UPDATE rooms SET min_seq = max(min_seq, min(?2, seq + 1)) WHERE name = ?1",
  [SW_DEL_ROOM] = "DELETE FROM rooms WHERE name = ?1",
  [SW_DEL_OPS] = "DELETE FROM ops WHERE room = ?1",
  [SW_DEL_ITEMS] = "DELETE FROM items WHERE room = ?1",
  [SW_DEL_CURSORS] = "DELETE FROM cursors WHERE room = ?1",
  /* No index by room: a scan of dedupe, acceptable for a rare operation. */
  [SW_DEL_DEDUPE] = "DELETE FROM dedupe WHERE room = ?1",
  /* Only for the room's current incarnation; a new epoch replaces the seq. */
  [SW_HOOK_POS_UPSERT] = ("INSERT INTO hook_pos(hook, room, epoch, seq, updated_at) SELECT ?1, ?2, ?3, ?4, ?5"
                          " WHERE EXISTS(SELECT 1 FROM rooms WHERE name = ?2 AND epoch = ?3)"
                          " ON CONFLICT(hook, room) DO UPDATE SET"
                          " seq = CASE WHEN epoch = excluded.epoch THEN max(seq, excluded.seq) ELSE excluded.seq END,"
                          " epoch = excluded.epoch, updated_at = excluded.updated_at"),
  /* No index by room: a scan, like the dedupe rows, for a rare operation. */
  [SW_DEL_HOOK_POS] = "DELETE FROM hook_pos WHERE room = ?1",
  [SW_TEXT_INSERT] = "INSERT INTO texts(room, item, field, rev, seq, ops) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
  [SW_TEXT_CLEAR] = "DELETE FROM texts WHERE room = ?1 AND item = ?2",
  [SW_DEL_TEXTS] = "DELETE FROM texts WHERE room = ?1",
};

static const char *const read_sql[SR__COUNT] = {
  [SR_BEGIN] = "BEGIN DEFERRED",
  [SR_END] = "COMMIT",
  [SR_ROOM_GET] = "SELECT epoch, seq, min_seq, created_at FROM rooms WHERE name = ?1",
  [SR_ITEMS] = "SELECT item, fields, version, revs FROM items WHERE room = ?1 ORDER BY item",
  [SR_HISTORY] = "SELECT seq, msg FROM ops WHERE room = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
  /* Publishes are the log entries the engine encodes as type "message",
  ** which it always writes first. */
  [SR_RECENT_MESSAGES] = ("SELECT seq, msg FROM (SELECT seq, msg FROM ops WHERE room = ?1"
                          " AND item IS NULL AND msg LIKE '{\"type\":\"message\"%'"
                          " ORDER BY seq DESC LIMIT ?2) ORDER BY seq"),
  [SR_DEDUPE] = "SELECT room, seq FROM dedupe WHERE device = ?1 AND cid = ?2",
  [SR_DEDUPE_ALL] = "SELECT device, cid FROM dedupe",
  [SR_CURSORS] = "SELECT user, device, seq, updated_at FROM cursors WHERE room = ?1 ORDER BY user, device",
  [SR_PAGES] = ("SELECT (SELECT page_count FROM pragma_page_count())"
                " * (SELECT page_size FROM pragma_page_size())"),
  [SR_ROOMS_LIST] = ("SELECT name, epoch, seq, min_seq, created_at FROM rooms WHERE name > ?1"
                     " ORDER BY name LIMIT ?2"),
  [SR_HOOK_POS] = "SELECT room, epoch, seq FROM hook_pos WHERE hook = ?1",
  [SR_HOOK_POS_GET] = "SELECT epoch, seq FROM hook_pos WHERE hook = ?1 AND room = ?2",
  [SR_TEXTS] = "SELECT item, field, rev, seq, ops FROM texts WHERE room = ?1 ORDER BY item, field, rev",
};

/* ---- errors -------------------------------------------------------------- */

/* The one place SQLite result codes become wsy_err. */
int sq_map_rc(int rc) {
  switch (rc & 0xff) {
  case SQLITE_OK:
  case SQLITE_ROW:
  case SQLITE_DONE: return WSY_OK;
  case SQLITE_BUSY:
  case SQLITE_LOCKED: return WSY_AGAIN;
  case SQLITE_NOMEM: return WSY_NOMEM;
  case SQLITE_TOOBIG: return WSY_TOO_LARGE;
  case SQLITE_CONSTRAINT:
  case SQLITE_MISMATCH:
  case SQLITE_RANGE:
  case SQLITE_MISUSE: return WSY_INVAL;
  default: return WSY_IO; /* IOERR, FULL, CORRUPT, CANTOPEN, READONLY, NOTADB... */
  }
}

static void seterr(char *err, size_t errlen, const char *fmt, ...) WSY_PRINTF(3, 4);
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}


/* ---- open / close -------------------------------------------------------- */

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *out = sqlite3_column_int64(st, 0);
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc;
}

/* Refuses files that are not ours or are from a newer wsync. Runs before
** anything is written, so a refused file is left exactly as it was. */
static int check_version(sq_store *s, int64_t *version, char *err, size_t errlen) {
  int64_t appid = 0;
  int rc = pragma_int(s->wdb, "PRAGMA application_id", &appid);
  if (rc == SQLITE_OK) rc = pragma_int(s->wdb, "PRAGMA user_version", version);
  if (rc != SQLITE_OK) {
    seterr(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->wdb));
    return sq_map_rc(rc);
  }
  if (appid != 0 && appid != STORE_APPLICATION_ID) {
    seterr(err, errlen, "%s is not a wsync database (application_id %" PRId64 ")", s->path, appid);
    return WSY_INVAL;
  }
  if (*version > STORE_SCHEMA_VERSION) {
    seterr(err, errlen,
           "%s has schema version %" PRId64 ", newer than this wsync knows (%d): "
           "upgrade wsync or use another --data-dir",
           s->path, *version, STORE_SCHEMA_VERSION);
    return WSY_INVAL;
  }
  int64_t objects = 0;
  if (appid == 0 && *version == 0) {
    rc = pragma_int(s->wdb, "SELECT count(*) FROM sqlite_schema", &objects);
    if (rc != SQLITE_OK) {
      seterr(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->wdb));
      return sq_map_rc(rc);
    }
  }
  if (appid == 0 && (*version > 0 || objects > 0)) {
    /* Never migrate into somebody else's database. */
    seterr(err, errlen, "%s is not a wsync database (no application_id, user_version %" PRId64
           ", %" PRId64 " schema objects)", s->path, *version, objects);
    return WSY_INVAL;
  }
  return WSY_OK;
}

/* Applies the missing migration steps, all in one transaction with the new
** user_version, so a crash mid-way leaves the old version intact. */
static int migrate(sq_store *s, char *err, size_t errlen) {
  char *msg = NULL;
  int64_t version = 0;
  int rc = sqlite3_exec(s->wdb, "BEGIN IMMEDIATE", NULL, NULL, &msg);
  if (rc == SQLITE_OK) {
    int wrc = check_version(s, &version, err, errlen); /* again, under the lock */
    if (wrc) {
      sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
      return wrc;
    }
  }
  for (int64_t v = version; rc == SQLITE_OK && v < STORE_SCHEMA_VERSION; v++) {
    char set[96];
    rc = sqlite3_exec(s->wdb, migrations[v], NULL, NULL, &msg);
    if (rc == SQLITE_OK && v == 0) {
      snprintf(set, sizeof set, "PRAGMA application_id = %d", STORE_APPLICATION_ID);
      rc = sqlite3_exec(s->wdb, set, NULL, NULL, &msg);
    }
    if (rc == SQLITE_OK) {
      snprintf(set, sizeof set, "PRAGMA user_version = %" PRId64, v + 1);
      rc = sqlite3_exec(s->wdb, set, NULL, NULL, &msg);
    }
    if (rc != SQLITE_OK) {
      seterr(err, errlen, "%s: migration to schema %" PRId64 " failed: %s", s->path, v + 1,
             msg ? msg : sqlite3_errstr(rc));
    }
  }
  if (rc == SQLITE_OK) rc = sqlite3_exec(s->wdb, "COMMIT", NULL, NULL, &msg);
  if (rc != SQLITE_OK) {
    if (err && !err[0]) seterr(err, errlen, "%s: %s", s->path, msg ? msg : sqlite3_errstr(rc));
    if (!sqlite3_get_autocommit(s->wdb)) sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
  }
  sqlite3_free(msg);
  return sq_map_rc(rc);
}

static int open_conn(sq_store *s, sqlite3 **db, int flags, char *err, size_t errlen) {
  int rc = sqlite3_open_v2(s->path, db, flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE, NULL);
  if (rc != SQLITE_OK) {
    seterr(err, errlen, "cannot open %s: %s", s->path,
           *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
    return rc == SQLITE_NOMEM ? WSY_NOMEM : WSY_IO;
  }
  sqlite3_busy_timeout(*db, BUSY_TIMEOUT_MS);
  return WSY_OK;
}

static int exec_checked(sq_store *s, sqlite3 *db, const char *sql, char *err, size_t errlen) {
  char *msg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK)
    seterr(err, errlen, "%s: %s: %s", s->path, sql, msg ? msg : sqlite3_errstr(rc));
  sqlite3_free(msg);
  return sq_map_rc(rc);
}

static int set_wal(sq_store *s, char *err, size_t errlen) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->wdb, "PRAGMA journal_mode = WAL", -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (rc == SQLITE_ROW && (!mode || strcmp(mode, "wal") != 0)) {
      seterr(err, errlen, "%s: WAL journal not available here (journal_mode %s)", s->path,
             mode ? mode : "?");
      sqlite3_finalize(st);
      return WSY_IO;
    }
    rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
    sqlite3_finalize(st);
  }
  if (rc != SQLITE_OK)
    seterr(err, errlen, "%s: journal_mode=WAL: %s", s->path, sqlite3_errmsg(s->wdb));
  return sq_map_rc(rc);
}

static int prepare_all(sq_store *s, char *err, size_t errlen) {
  for (int i = 0; i < SW__COUNT; i++) {
    int rc =
        sqlite3_prepare_v3(s->wdb, write_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->w[i], NULL);
    if (rc != SQLITE_OK) {
      seterr(err, errlen, "%s: prepare \"%s\": %s", s->path, write_sql[i], sqlite3_errmsg(s->wdb));
      return sq_map_rc(rc);
    }
  }
  for (int i = 0; i < SR__COUNT; i++) {
    int rc =
        sqlite3_prepare_v3(s->rdb, read_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->r[i], NULL);
    if (rc != SQLITE_OK) {
      seterr(err, errlen, "%s: prepare \"%s\": %s", s->path, read_sql[i], sqlite3_errmsg(s->rdb));
      return sq_map_rc(rc);
    }
  }
  return WSY_OK;
}

/* One wsync per data directory: two writers would hand out the same seqs.
** flock() is per open file, so a second store in this process is refused
** too, and the kernel drops the lock when the process dies (SIGKILL). */
static int lock_dir(sq_store *s, const char *dir, char *err, size_t errlen) {
  size_t n = strlen(dir) + sizeof "/wsync.lock";
  char *lp = wsy_malloc(n);
  snprintf(lp, n, "%s/wsync.lock", dir);
  s->lock_fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  int rc = WSY_OK;
  if (s->lock_fd < 0) {
    seterr(err, errlen, "cannot open %s: %s", lp, strerror(errno));
    rc = WSY_IO;
  } else if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    seterr(err, errlen, "%s: %s", lp,
           e == EWOULDBLOCK ? "data directory in use by another wsync" : strerror(e));
    rc = e == EWOULDBLOCK ? WSY_AGAIN : WSY_IO;
  }
  wsy_free(lp);
  return rc;
}

static const store_ops sq_ops;
static void sq_close(store *bs);

static void sq_config_once(void) { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }

int store_sqlite_open(const char *dir, int durability_full, uv_loop_t *loop, store **out, char *err,
                      size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = '\0';
  if (!dir || !*dir) {
    seterr(err, errlen, "no data directory");
    return WSY_INVAL;
  }
  /* SQLite's allocation counters take a global mutex on every malloc and
  ** free (about 27 per op); nothing here reads them. Only takes effect
  ** before SQLite initializes, so it is set once, ahead of any open. */
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, sq_config_once);
  if (!sqlite3_threadsafe()) {
    seterr(err, errlen, "SQLite was built without thread support");
    return WSY_IO;
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    seterr(err, errlen, "cannot create %s: %s", dir, strerror(errno));
    return WSY_IO;
  }
  sq_store *s = wsy_calloc(1, sizeof *s);
  s->base.ops = &sq_ops;
  s->loop = loop;
  s->lock_fd = -1;
  s->durability_full = durability_full ? 1 : 0;
  size_t n = strlen(dir) + sizeof "/wsync.db";
  s->path = wsy_malloc(n);
  snprintf(s->path, n, "%s/wsync.db", dir);

  int64_t version = 0;
  int rc = lock_dir(s, dir, err, errlen);
  if (!rc) rc = open_conn(s, &s->wdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, err, errlen);
  if (!rc) rc = check_version(s, &version, err, errlen);
  if (!rc) rc = set_wal(s, err, errlen);
  if (!rc)
    rc = exec_checked(s, s->wdb,
                      durability_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                      err, errlen);
  /* Keeps the WAL file from staying huge after a burst is checkpointed. */
  if (!rc) rc = exec_checked(s, s->wdb, "PRAGMA journal_size_limit = 67108864", err, errlen);
  if (!rc) rc = migrate(s, err, errlen);
  /* Without texts rows, an item written needs none cleared (item_write);
  ** the flag is set again by the first text row. Unknown counts as rows. */
  int64_t texts = 1;
  if (!rc) pragma_int(s->wdb, "SELECT EXISTS(SELECT 1 FROM texts)", &texts);
  s->texts_rows = texts != 0;
  if (!rc) rc = open_conn(s, &s->rdb, SQLITE_OPEN_READWRITE, err, errlen);
  if (!rc) rc = exec_checked(s, s->rdb, "PRAGMA query_only = ON", err, errlen);
  if (!rc) rc = prepare_all(s, err, errlen);
  if (!rc) {
    sqlite3 *cdb = NULL;
    rc = open_conn(s, &cdb, SQLITE_OPEN_READWRITE, err, errlen);
    if (!rc) rc = sq_ckpt_start(s, cdb, err, errlen); /* closes cdb when it fails */
    else sqlite3_close(cdb);
  }
  if (rc) {
    sq_close(&s->base);
    return rc;
  }
  *out = &s->base;
  return WSY_OK;
}

static void sq_close(store *bs) {
  sq_store *s = (sq_store *)bs;
  if (!s) return;
  for (int i = 0; i < SW__COUNT; i++) sqlite3_finalize(s->w[i]);
  for (int i = 0; i < SR__COUNT; i++) sqlite3_finalize(s->r[i]);
  sq_rows_close(s);
  sq_ckpt_stop(s);
  /* Reader first: the writer's close, as the last connection, checkpoints
  ** the WAL into the main file and removes it. */
  sqlite3_close(s->rdb);
  sqlite3_close(s->wdb);
  if (s->lock_fd >= 0) close(s->lock_fd);
  wsy_free(s->path);
  wsy_free(s);
}

int sq_wstep(sq_store *s, store_batch *b, sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW)
    snprintf(b->err, sizeof b->err, "%s", sqlite3_errmsg(s->wdb));
  sqlite3_reset(st);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

void sq_bind_text(sqlite3_stmt *st, int i, const char *v, size_t len) {
  if (v) sqlite3_bind_text64(st, i, v, len, SQLITE_STATIC, SQLITE_UTF8);
  else sqlite3_bind_null(st, i);
}
void sq_bind_str(sqlite3_stmt *st, int i, const char *v) { sq_bind_text(st, i, v, v ? strlen(v) : 0); }


static int apply_room(sq_store *s, store_batch *b, const batch_entry *e) {
  size_t el = e->epoch ? strlen(e->epoch) : 0;
  if (el == 0 || el > STORE_EPOCH_MAX)
    return store_batch_fail(b, WSY_INVAL, "epoch must be 1-%d bytes", STORE_EPOCH_MAX);
  sqlite3_stmt *st = s->w[SW_ROOM_INSERT];
  sq_bind_str(st, 1, e->room);
  sq_bind_str(st, 2, e->epoch);
  sqlite3_bind_int64(st, 3, e->now_ms);
  int rc = sq_wstep(s, b, st);
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) return store_batch_fail(b, WSY_INVAL, "room already exists");
  return sq_map_rc(rc);
}

/* Writes (fields) or deletes an item's row; its texts rows go either way,
** since the row now holds their effect (store.h: texts). */
static int item_write(sq_store *s, store_batch *b, const batch_entry *e) {
  sqlite3_stmt *st = s->w[e->fields ? SW_ITEM_UPSERT : SW_ITEM_DELETE];
  sq_bind_str(st, 1, e->room);
  sq_bind_str(st, 2, e->item);
  if (e->fields) {
    sq_bind_str(st, 3, e->fields);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)(e->version > SEQ_MAX ? SEQ_MAX : e->version));
    sq_bind_str(st, 5, e->revs);
  }
  int rc = sq_wstep(s, b, st);
  if (rc != SQLITE_OK || !s->texts_rows) return sq_map_rc(rc);
  st = s->w[SW_TEXT_CLEAR];
  sq_bind_str(st, 1, e->room);
  sq_bind_str(st, 2, e->item);
  return sq_map_rc(sq_wstep(s, b, st));
}

/* A text op kept as an op (store.h: texts). */
static int apply_text(sq_store *s, store_batch *b, const batch_entry *e) {
  if (!e->room || !e->item || !e->fields || e->version == 0 || e->version > SEQ_MAX || e->seq == 0 || e->seq > SEQ_MAX)
    return store_batch_fail(b, WSY_INVAL, "text entry needs room, item, field and a rev");
  s->texts_rows = 1;
  sqlite3_stmt *st = s->w[SW_TEXT_INSERT];
  sq_bind_str(st, 1, e->room);
  sq_bind_str(st, 2, e->item);
  sq_bind_str(st, 3, e->fields);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)e->version);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)e->seq);
  sq_bind_text(st, 6, e->msg, e->msg_len);
  return sq_map_rc(sq_wstep(s, b, st));
}

static int apply_op(sq_store *s, store_batch *b, const batch_entry *e, seq_runs *runs) {
  int rc = sq_op_seq(s, b, e, runs);
  if (rc) return rc;
  sqlite3_stmt *st = s->w[SW_OP_INSERT];
  sq_bind_str(st, 1, e->room);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)e->seq);
  sq_bind_str(st, 3, e->item);
  sq_bind_str(st, 4, e->device);
  sq_bind_str(st, 5, e->cid);
  sq_bind_text(st, 6, e->msg, e->msg_len);
  if ((rc = sq_wstep(s, b, st)) != SQLITE_OK) return sq_map_rc(rc);

  if (e->item && (rc = item_write(s, b, e)) != WSY_OK) return rc;

  if (e->device && e->cid) {
    st = s->w[SW_DEDUPE_INSERT];
    sq_bind_str(st, 1, e->device);
    sq_bind_str(st, 2, e->cid);
    sq_bind_str(st, 3, e->room);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)e->seq);
    rc = sq_wstep(s, b, st);
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
      return store_batch_fail(b, WSY_INVAL, "cid %s of device %s was already committed", e->cid, e->device);
    if (rc != SQLITE_OK) return sq_map_rc(rc);
  }
  return WSY_OK;
}

static int apply_cursor(sq_store *s, store_batch *b, const batch_entry *e) {
  if (!e->user || !e->device || !e->room)
    return store_batch_fail(b, WSY_INVAL, "cursor needs user, device and room");
  sqlite3_stmt *st = s->w[SW_CURSOR_UPSERT];
  sq_bind_str(st, 1, e->user);
  sq_bind_str(st, 2, e->device);
  sq_bind_str(st, 3, e->room);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)(e->seq > SEQ_MAX ? SEQ_MAX : e->seq));
  sqlite3_bind_int64(st, 5, e->now_ms);
  return sq_map_rc(sq_wstep(s, b, st));
}

static int apply_trim(sq_store *s, store_batch *b, const batch_entry *e) {
  if (!e->room) return store_batch_fail(b, WSY_INVAL, "trim without a room");
  sqlite3_stmt *st = s->w[SW_TRIM_ROOM];
  sq_bind_str(st, 1, e->room);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)(e->seq > SEQ_MAX ? SEQ_MAX : e->seq));
  int rc = sq_wstep(s, b, st);
  if (rc != SQLITE_OK) return sq_map_rc(rc);
  if (sqlite3_changes(s->wdb) == 0) return store_batch_fail(b, WSY_NOT_FOUND, "no such room");
  st = s->w[SW_TRIM_OPS];
  sq_bind_str(st, 1, e->room);
  return sq_map_rc(sq_wstep(s, b, st));
}

/* A room and everything of it. The room row goes first: its absence is
** the error, and the other tables follow it. */
static int apply_delete(sq_store *s, store_batch *b, const batch_entry *e) {
  if (!e->room) return store_batch_fail(b, WSY_INVAL, "delete without a room");
  sqlite3_stmt *st = s->w[SW_DEL_ROOM];
  sq_bind_str(st, 1, e->room);
  int rc = sq_wstep(s, b, st);
  if (rc != SQLITE_OK) return sq_map_rc(rc);
  if (sqlite3_changes(s->wdb) == 0) return store_batch_fail(b, WSY_NOT_FOUND, "no such room");
  static const int rest[] = {SW_DEL_OPS, SW_DEL_ITEMS, SW_DEL_CURSORS, SW_DEL_DEDUPE, SW_DEL_HOOK_POS, SW_DEL_TEXTS};
  for (size_t i = 0; i < WSY_ARRAY_LEN(rest); i++) {
    st = s->w[rest[i]];
    sq_bind_str(st, 1, e->room);
    if ((rc = sq_wstep(s, b, st)) != SQLITE_OK) return sq_map_rc(rc);
  }
  return WSY_OK;
}

/* An item of an entry already logged (the items of a batch op). */
static int apply_item(sq_store *s, store_batch *b, const batch_entry *e) {
  if (!e->room || !e->item) return store_batch_fail(b, WSY_INVAL, "item entry needs room and item");
  return item_write(s, b, e);
}

static int apply_hook_pos(sq_store *s, store_batch *b, const batch_entry *e) {
  if (!e->hook || !e->room || !e->epoch)
    return store_batch_fail(b, WSY_INVAL, "webhook position needs hook, room and epoch");
  sqlite3_stmt *st = s->w[SW_HOOK_POS_UPSERT];
  sq_bind_str(st, 1, e->hook);
  sq_bind_str(st, 2, e->room);
  sq_bind_str(st, 3, e->epoch);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)(e->seq > SEQ_MAX ? SEQ_MAX : e->seq));
  sqlite3_bind_int64(st, 5, e->now_ms);
  return sq_map_rc(sq_wstep(s, b, st));
}

static const char *const kind_name[] = {"room_create", "op",          "cursor",  "trim",
                                        "item",        "room_delete", "hook_pos", "text", "lock", "head"};
_Static_assert(WSY_ARRAY_LEN(kind_name) == E_HEAD + 1, "a name per batch entry kind");

/* One transaction of the batch's entries. With rows, a run of ops goes
** out in multi-row statements (sqlite_rows.c); without, entry by entry. */
static int commit_entries(sq_store *s, store_batch *b, int rows) {
  b->err[0] = '\0';
  b->state = B_COMMITTING;
  s->rows_failed = 0;
  int rc = sq_map_rc(sq_wstep(s, b, s->w[SW_BEGIN]));
  if (rc) {
    b->state = B_FAILED;
    return rc;
  }
  seq_runs runs = {.n = 0};
  for (size_t i = 0; i < b->n && !rc; i++) {
    const batch_entry *e = &b->e[i];
    if (rows && sq_rows_takes(e)) {
      size_t j = i + 1;
      while (j < b->n && sq_rows_takes(&b->e[j])) j++;
      rc = sq_rows_run(s, b, e, j - i, &runs);
      i = j - 1;
      continue;
    }
    /* A trim reads the room's seq: the row must be current. */
    if (e->kind == E_TRIM || e->kind == E_ROOM || e->kind == E_DELETE || e->kind == E_HOOK_POS)
      rc = sq_runs_flush(s, b, &runs);
    if (rc) break;
    switch (e->kind) {
    case E_ROOM: rc = apply_room(s, b, e); break;
    case E_OP: rc = apply_op(s, b, e, &runs); break;
    case E_CURSOR: rc = apply_cursor(s, b, e); break;
    case E_ITEM: rc = apply_item(s, b, e); break;
    case E_DELETE: rc = apply_delete(s, b, e); break;
    case E_HOOK_POS: rc = apply_hook_pos(s, b, e); break;
    case E_TEXT: rc = apply_text(s, b, e); break;
    case E_HEAD: /* one node needs no chain of batches (store.h) */
    case E_LOCK: /* one node keeps its locks in memory (store.h, ITEM LOCKS) */
      rc = store_batch_fail(b, WSY_INVAL, "the embedded store keeps no %s", e->kind == E_LOCK ? "locks" : "heads");
      break;
    default: rc = apply_trim(s, b, e); break;
    }
    if (rc) {
      /* Prefix which entry failed to the reason already in b->err. */
      char why[sizeof b->err];
      memcpy(why, b->err, sizeof why);
      int n = snprintf(b->err, sizeof b->err, "entry %zu (%s, room %.64s, seq %" PRIu64 "): ", i,
                       kind_name[e->kind], e->room ? e->room : "(null)", e->seq);
      size_t used = n < 0 ? 0 : (size_t)n >= sizeof b->err ? sizeof b->err - 1 : (size_t)n;
      size_t wl = strnlen(why, sizeof why - 1);
      if (wl > sizeof b->err - 1 - used) wl = sizeof b->err - 1 - used;
      memcpy(b->err + used, why, wl);
      b->err[used + wl] = '\0';
    }
  }
  if (!rc) rc = sq_runs_flush(s, b, &runs);
  if (!rc) rc = sq_map_rc(sq_wstep(s, b, s->w[SW_COMMIT]));
  if (rc) {
    /* Some errors (IOERR, FULL, NOMEM) make SQLite roll back by itself. */
    if (!sqlite3_get_autocommit(s->wdb)) {
      char keep[sizeof b->err];
      snprintf(keep, sizeof keep, "%s", b->err);
      sq_wstep(s, b, s->w[SW_ROLLBACK]);
      snprintf(b->err, sizeof b->err, "%s", keep);
    }
    b->state = B_FAILED;
    return rc;
  }
  b->state = B_COMMITTED;
  return WSY_OK;
}

int store_sqlite_commit_sync(store *bs, store_batch *b) {
  sq_store *s = (sq_store *)bs;
  if (b->state == B_COMMITTED || b->state == B_COMMITTING)
    return store_batch_fail(b, WSY_INVAL, "batch already committed");
  b->err[0] = '\0';
  if (b->n == 0) {
    b->state = B_COMMITTED;
    return WSY_OK;
  }
  int rc = commit_entries(s, b, !s->rows_off);
  /* Rolled back: once more entry by entry, for the error of the entry at
  ** fault (or, after a passing failure, the commit). */
  if (rc && s->rows_failed) rc = commit_entries(s, b, 0);
  return rc;
}

/* ---- asynchronous commit (store.h: store_commit) ------------------------- */

static void commit_work(uv_work_t *w) {
  sq_store *s = w->data;
  s->commit_rc = store_sqlite_commit_sync(&s->base, s->committing);
}

static void commit_after(uv_work_t *w, int status) {
  sq_store *s = w->data;
  store_batch *b = s->committing;
  int rc = status ? store_batch_fail(b, WSY_IO, "the commit was cancelled") : s->commit_rc;
  store_commit_cb cb = s->cb;
  void *ud = s->cb_ud;
  s->committing = NULL;
  s->cb = NULL;
  cb(ud, rc);
}

static void sq_commit(store *bs, store_batch *b, store_commit_cb cb, void *ud) {
  sq_store *s = (sq_store *)bs;
  if (s->committing) abort(); /* the contract: one commit at a time */
  s->committing = b;
  s->cb = cb;
  s->cb_ud = ud;
  s->work.data = s;
  uv_queue_work(s->loop, &s->work, commit_work, commit_after);
}

static const store_ops sq_ops = {
  .name = "sqlite",
  .close = sq_close,
  .room_get = sq_room_get,
  .room_items = sq_room_items,
  .room_texts = sq_room_texts,
  .history = sq_history,
  .recent_messages = sq_recent_messages,
  .dedupe_each = sq_dedupe_each,
  .dedupe_get = sq_dedupe_get,
  .cursors = sq_cursors,
  .hook_positions = sq_hook_positions,
  .hook_pos_get = sq_hook_pos_get,
  .read_begin = sq_read_begin,
  .read_end = sq_read_end,
  .stats = sq_stats,
  .rooms_list = sq_rooms_list,
  .commit = sq_commit,
};
