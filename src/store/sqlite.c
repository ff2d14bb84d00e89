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
**      in a batch can take ops in that same batch.
**   5. The write connection is touched only by the thread inside
**      store_batch_commit() and the read connection only by the loop
**      thread; SQLite's WAL gives the reader the last committed snapshot
**      while a commit runs, so neither waits for the other. */
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUSY_TIMEOUT_MS 5000
#define SEQ_MAX ((uint64_t)INT64_MAX)

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
};

/* ---- errors -------------------------------------------------------------- */

/* The one place SQLite result codes become wsy_err. */
static int map_rc(int rc) {
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

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
static int check_version(store *s, int64_t *version, char *err, size_t errlen) {
  int64_t appid = 0;
  int rc = pragma_int(s->wdb, "PRAGMA application_id", &appid);
  if (rc == SQLITE_OK) rc = pragma_int(s->wdb, "PRAGMA user_version", version);
  if (rc != SQLITE_OK) {
    seterr(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->wdb));
    return map_rc(rc);
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
      return map_rc(rc);
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
static int migrate(store *s, char *err, size_t errlen) {
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
  return map_rc(rc);
}

static int open_conn(store *s, sqlite3 **db, int flags, char *err, size_t errlen) {
  int rc = sqlite3_open_v2(s->path, db, flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE, NULL);
  if (rc != SQLITE_OK) {
    seterr(err, errlen, "cannot open %s: %s", s->path,
           *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
    return rc == SQLITE_NOMEM ? WSY_NOMEM : WSY_IO;
  }
  sqlite3_busy_timeout(*db, BUSY_TIMEOUT_MS);
  return WSY_OK;
}

static int exec_checked(store *s, sqlite3 *db, const char *sql, char *err, size_t errlen) {
  char *msg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK)
    seterr(err, errlen, "%s: %s: %s", s->path, sql, msg ? msg : sqlite3_errstr(rc));
  sqlite3_free(msg);
  return map_rc(rc);
}

static int set_wal(store *s, char *err, size_t errlen) {
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
  return map_rc(rc);
}

static int prepare_all(store *s, char *err, size_t errlen) {
  for (int i = 0; i < SW__COUNT; i++) {
    int rc =
        sqlite3_prepare_v3(s->wdb, write_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->w[i], NULL);
    if (rc != SQLITE_OK) {
      seterr(err, errlen, "%s: prepare \"%s\": %s", s->path, write_sql[i], sqlite3_errmsg(s->wdb));
      return map_rc(rc);
    }
  }
  for (int i = 0; i < SR__COUNT; i++) {
    int rc =
        sqlite3_prepare_v3(s->rdb, read_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->r[i], NULL);
    if (rc != SQLITE_OK) {
      seterr(err, errlen, "%s: prepare \"%s\": %s", s->path, read_sql[i], sqlite3_errmsg(s->rdb));
      return map_rc(rc);
    }
  }
  return WSY_OK;
}

/* One wsync per data directory: two writers would hand out the same seqs.
** flock() is per open file, so a second store in this process is refused
** too, and the kernel drops the lock when the process dies (SIGKILL). */
static int lock_dir(store *s, const char *dir, char *err, size_t errlen) {
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

int store_open(const char *dir, int durability_full, store **out, char *err, size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = '\0';
  if (!dir || !*dir) {
    seterr(err, errlen, "no data directory");
    return WSY_INVAL;
  }
  if (!sqlite3_threadsafe()) {
    seterr(err, errlen, "SQLite was built without thread support");
    return WSY_IO;
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    seterr(err, errlen, "cannot create %s: %s", dir, strerror(errno));
    return WSY_IO;
  }
  store *s = wsy_calloc(1, sizeof *s);
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
  if (!rc) rc = open_conn(s, &s->rdb, SQLITE_OPEN_READWRITE, err, errlen);
  if (!rc) rc = exec_checked(s, s->rdb, "PRAGMA query_only = ON", err, errlen);
  if (!rc) rc = prepare_all(s, err, errlen);
  if (rc) {
    store_close(s);
    return rc;
  }
  *out = s;
  return WSY_OK;
}

void store_close(store *s) {
  if (!s) return;
  for (int i = 0; i < SW__COUNT; i++) sqlite3_finalize(s->w[i]);
  for (int i = 0; i < SR__COUNT; i++) sqlite3_finalize(s->r[i]);
  /* Reader first: the writer's close, as the last connection, checkpoints
  ** the WAL into the main file and removes it. */
  sqlite3_close(s->rdb);
  sqlite3_close(s->wdb);
  if (s->lock_fd >= 0) close(s->lock_fd);
  wsy_free(s->path);
  wsy_free(s);
}

/* ---- batches ------------------------------------------------------------- */

enum { E_ROOM, E_OP, E_CURSOR, E_TRIM, E_ITEM };
enum { B_BUILDING, B_COMMITTING, B_COMMITTED, B_FAILED };

typedef struct batch_entry {
  int kind;
  char *mem;                 /* one allocation holding every string below */
  const char *room;
  const char *epoch;         /* E_ROOM */
  const char *item, *fields; /* E_OP, E_ITEM */
  const char *revs;          /* E_OP, E_ITEM: NULL when no text fields */
  const char *device, *cid;  /* E_OP; device also E_CURSOR */
  const char *user;          /* E_CURSOR */
  const char *msg;           /* E_OP, msg_len bytes (+ NUL) */
  size_t msg_len;
  uint64_t seq;              /* E_OP seq, E_CURSOR seq, E_TRIM keep_from */
  uint64_t version;          /* E_OP */
  int64_t now_ms;            /* E_ROOM created_at, E_CURSOR updated_at */
} batch_entry;

struct store_batch {
  batch_entry *e;
  size_t n, cap;
  int state;
  char err[256];
};

store_batch *store_batch_new(void) { return wsy_calloc(1, sizeof(store_batch)); }

void store_batch_free(store_batch *b) {
  if (!b) return;
  for (size_t i = 0; i < b->n; i++) wsy_free(b->e[i].mem);
  wsy_free(b->e);
  wsy_free(b);
}

size_t store_batch_count(const store_batch *b) { return b->n; }

const char *store_batch_error(const store_batch *b) { return b->err; }

static batch_entry *batch_add(store_batch *b, int kind) {
  if (b->state != B_BUILDING) {
    /* A programming error, and a dangerous one: the entry would silently
    ** miss the transaction that the caller then acknowledges. */
    fprintf(stderr, "wsync: store batch changed after store_batch_commit\n");
    abort();
  }
  if (b->n == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 16;
    b->e = wsy_realloc(b->e, b->cap * sizeof *b->e);
  }
  batch_entry *e = &b->e[b->n++];
  memset(e, 0, sizeof *e);
  e->kind = kind;
  return e;
}

/* Copies the strings of one entry into a single allocation. */
typedef struct {
  const char *src;
  size_t len;
  const char **dst;
} pack_item;

static char *pack(pack_item *it, size_t n) {
  size_t total = 1;
  for (size_t i = 0; i < n; i++)
    if (it[i].src) total += it[i].len + 1;
  char *mem = wsy_malloc(total), *p = mem;
  for (size_t i = 0; i < n; i++) {
    if (!it[i].src) {
      *it[i].dst = NULL;
      continue;
    }
    memcpy(p, it[i].src, it[i].len);
    p[it[i].len] = '\0';
    *it[i].dst = p;
    p += it[i].len + 1;
  }
  return mem;
}

static size_t slen(const char *s) { return s ? strlen(s) : 0; }
#define STR(s, dstp) {(s), slen(s), (dstp)}

void store_batch_room_create(store_batch *b, const char *room, const char *epoch) {
  batch_entry *e = batch_add(b, E_ROOM);
  pack_item it[] = {STR(room, &e->room), STR(epoch, &e->epoch)};
  e->mem = pack(it, WSY_ARRAY_LEN(it));
  e->now_ms = wall_ms();
}

void store_batch_op(store_batch *b, const store_op *op) {
  batch_entry *e = batch_add(b, E_OP);
  const char *msg = op->msg ? op->msg : "";
  pack_item it[] = {
    STR(op->room, &e->room),
    STR(op->item, &e->item),
    STR(op->item ? op->fields_json : NULL, &e->fields),
    STR(op->item && op->fields_json ? op->revs_json : NULL, &e->revs),
    STR(op->device, &e->device),
    STR(op->cid, &e->cid),
    {msg, op->msg ? op->msg_len : 0, &e->msg},
  };
  e->mem = pack(it, WSY_ARRAY_LEN(it));
  e->msg_len = op->msg ? op->msg_len : 0;
  e->seq = op->seq;
  e->version = op->version;
}

void store_batch_cursor(store_batch *b, const char *user, const char *device, const char *room,
                        uint64_t seq) {
  batch_entry *e = batch_add(b, E_CURSOR);
  pack_item it[] = {STR(user, &e->user), STR(device, &e->device), STR(room, &e->room)};
  e->mem = pack(it, WSY_ARRAY_LEN(it));
  e->seq = seq;
  e->now_ms = wall_ms();
}

void store_batch_item(store_batch *b, const char *room, const char *item, const char *fields_json,
                      const char *revs_json, uint64_t version) {
  batch_entry *e = batch_add(b, E_ITEM);
  pack_item it[] = {STR(room, &e->room), STR(item, &e->item), STR(fields_json, &e->fields),
                    STR(fields_json ? revs_json : NULL, &e->revs)};
  e->mem = pack(it, WSY_ARRAY_LEN(it));
  e->version = version;
}

void store_batch_trim(store_batch *b, const char *room, uint64_t keep_from_seq) {
  batch_entry *e = batch_add(b, E_TRIM);
  pack_item it[] = {STR(room, &e->room)};
  e->mem = pack(it, WSY_ARRAY_LEN(it));
  e->seq = keep_from_seq;
}

/* ---- commit -------------------------------------------------------------- */

/* Steps a write statement to completion. The batch's error text gets
** SQLite's message on failure; the result is a SQLite code. */
static int wstep(store *s, store_batch *b, sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW)
    snprintf(b->err, sizeof b->err, "%s", sqlite3_errmsg(s->wdb));
  sqlite3_reset(st);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v, size_t len) {
  if (v) sqlite3_bind_text64(st, i, v, len, SQLITE_STATIC, SQLITE_UTF8);
  else sqlite3_bind_null(st, i);
}
static void bind_str(sqlite3_stmt *st, int i, const char *v) { bind_text(st, i, v, slen(v)); }

static int fail(store_batch *b, int err, const char *fmt, ...) WSY_PRINTF(3, 4);
static int fail(store_batch *b, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b->err, sizeof b->err, fmt, ap);
  va_end(ap);
  return err;
}

static int apply_room(store *s, store_batch *b, const batch_entry *e) {
  size_t el = e->epoch ? strlen(e->epoch) : 0;
  if (el == 0 || el > STORE_EPOCH_MAX)
    return fail(b, WSY_INVAL, "epoch must be 1-%d bytes", STORE_EPOCH_MAX);
  sqlite3_stmt *st = s->w[SW_ROOM_INSERT];
  bind_str(st, 1, e->room);
  bind_str(st, 2, e->epoch);
  sqlite3_bind_int64(st, 3, e->now_ms);
  int rc = wstep(s, b, st);
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) return fail(b, WSY_INVAL, "room already exists");
  return map_rc(rc);
}

/* Why a room's seq did not advance: the room is missing, or seq is not next. */
static int explain_seq(store *s, store_batch *b, const batch_entry *e) {
  sqlite3_stmt *st = s->w[SW_ROOM_SEQ];
  bind_str(st, 1, e->room);
  int rc = sqlite3_step(st);
  int64_t cur = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    snprintf(b->err, sizeof b->err, "%s", sqlite3_errmsg(s->wdb));
  sqlite3_reset(st);
  if (rc == SQLITE_DONE) return fail(b, WSY_NOT_FOUND, "no such room");
  if (rc != SQLITE_ROW) return map_rc(rc);
  return fail(b, WSY_INVAL, "seq %" PRIu64 " does not follow the room's seq %" PRId64, e->seq, cur);
}

/* A room's seq is advanced in SQL by the first op of the room in a batch
** (checked: it must follow the stored seq); the ops right after it are
** checked here and the room's row is written once more at the end, so a
** batch costs two UPDATEs per room rather than one per op. */
typedef struct seq_run {
  const char *room;
  uint64_t first, last; /* seqs already in the room's row / assigned since */
} seq_run;

typedef struct seq_runs {
  seq_run r[16];
  size_t n;
} seq_runs;

static int run_flush(store *s, store_batch *b, seq_run *r) {
  if (r->last == r->first) return WSY_OK;
  sqlite3_stmt *st = s->w[SW_ROOM_JUMP];
  bind_str(st, 1, r->room);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)r->first);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)r->last);
  int rc = wstep(s, b, st);
  if (rc != SQLITE_OK) return map_rc(rc);
  if (sqlite3_changes(s->wdb) == 0) return fail(b, WSY_INVAL, "room %.64s changed under its batch", r->room);
  r->first = r->last;
  return WSY_OK;
}

static int runs_flush(store *s, store_batch *b, seq_runs *runs) {
  int rc = WSY_OK;
  for (size_t i = 0; i < runs->n && !rc; i++) rc = run_flush(s, b, &runs->r[i]);
  runs->n = 0;
  return rc;
}

static int apply_op(store *s, store_batch *b, const batch_entry *e, seq_runs *runs) {
  if (!e->room) return fail(b, WSY_INVAL, "op without a room");
  if (e->seq == 0 || e->seq > SEQ_MAX || e->version > SEQ_MAX)
    return fail(b, WSY_INVAL, "seq/version out of range");

  seq_run *run = NULL;
  for (size_t i = 0; i < runs->n && !run; i++)
    if (!strcmp(runs->r[i].room, e->room)) run = &runs->r[i];
  sqlite3_stmt *st;
  int rc;
  if (run && e->seq == run->last + 1) {
    run->last = e->seq;
  } else {
    if (run && (rc = run_flush(s, b, run)) != WSY_OK) return rc;
    st = s->w[SW_ROOM_ADVANCE];
    bind_str(st, 1, e->room);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)e->seq);
    rc = wstep(s, b, st);
    if (rc != SQLITE_OK) return map_rc(rc);
    if (sqlite3_changes(s->wdb) == 0) return explain_seq(s, b, e);
    if (!run) {
      if (runs->n == WSY_ARRAY_LEN(runs->r) && (rc = runs_flush(s, b, runs)) != WSY_OK) return rc;
      run = &runs->r[runs->n++];
      run->room = e->room;
    }
    run->first = run->last = e->seq;
  }

  st = s->w[SW_OP_INSERT];
  bind_str(st, 1, e->room);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)e->seq);
  bind_str(st, 3, e->item);
  bind_str(st, 4, e->device);
  bind_str(st, 5, e->cid);
  bind_text(st, 6, e->msg, e->msg_len);
  if ((rc = wstep(s, b, st)) != SQLITE_OK) return map_rc(rc);

  if (e->item) {
    st = s->w[e->fields ? SW_ITEM_UPSERT : SW_ITEM_DELETE];
    bind_str(st, 1, e->room);
    bind_str(st, 2, e->item);
    if (e->fields) {
      bind_str(st, 3, e->fields);
      sqlite3_bind_int64(st, 4, (sqlite3_int64)e->version);
      bind_str(st, 5, e->revs);
    }
    if ((rc = wstep(s, b, st)) != SQLITE_OK) return map_rc(rc);
  }

  if (e->device && e->cid) {
    st = s->w[SW_DEDUPE_INSERT];
    bind_str(st, 1, e->device);
    bind_str(st, 2, e->cid);
    bind_str(st, 3, e->room);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)e->seq);
    rc = wstep(s, b, st);
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
      return fail(b, WSY_INVAL, "cid %s of device %s was already committed", e->cid, e->device);
    if (rc != SQLITE_OK) return map_rc(rc);
  }
  return WSY_OK;
}

static int apply_cursor(store *s, store_batch *b, const batch_entry *e) {
  if (!e->user || !e->device || !e->room)
    return fail(b, WSY_INVAL, "cursor needs user, device and room");
  sqlite3_stmt *st = s->w[SW_CURSOR_UPSERT];
  bind_str(st, 1, e->user);
  bind_str(st, 2, e->device);
  bind_str(st, 3, e->room);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)(e->seq > SEQ_MAX ? SEQ_MAX : e->seq));
  sqlite3_bind_int64(st, 5, e->now_ms);
  return map_rc(wstep(s, b, st));
}

static int apply_trim(store *s, store_batch *b, const batch_entry *e) {
  if (!e->room) return fail(b, WSY_INVAL, "trim without a room");
  sqlite3_stmt *st = s->w[SW_TRIM_ROOM];
  bind_str(st, 1, e->room);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)(e->seq > SEQ_MAX ? SEQ_MAX : e->seq));
  int rc = wstep(s, b, st);
  if (rc != SQLITE_OK) return map_rc(rc);
  if (sqlite3_changes(s->wdb) == 0) return fail(b, WSY_NOT_FOUND, "no such room");
  st = s->w[SW_TRIM_OPS];
  bind_str(st, 1, e->room);
  return map_rc(wstep(s, b, st));
}

/* An item of an entry already logged (the items of a batch op). */
static int apply_item(store *s, store_batch *b, const batch_entry *e) {
  if (!e->room || !e->item) return fail(b, WSY_INVAL, "item entry needs room and item");
  sqlite3_stmt *st = s->w[e->fields ? SW_ITEM_UPSERT : SW_ITEM_DELETE];
  bind_str(st, 1, e->room);
  bind_str(st, 2, e->item);
  if (e->fields) {
    bind_str(st, 3, e->fields);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)(e->version > SEQ_MAX ? SEQ_MAX : e->version));
    bind_str(st, 5, e->revs);
  }
  return map_rc(wstep(s, b, st));
}

static const char *const kind_name[] = {"room_create", "op", "cursor", "trim", "item"};

int store_batch_commit(store *s, store_batch *b) {
  if (b->state == B_COMMITTED || b->state == B_COMMITTING)
    return fail(b, WSY_INVAL, "batch already committed");
  b->err[0] = '\0';
  if (b->n == 0) {
    b->state = B_COMMITTED;
    return WSY_OK;
  }
  b->state = B_COMMITTING;
  int rc = map_rc(wstep(s, b, s->w[SW_BEGIN]));
  if (rc) {
    b->state = B_FAILED;
    return rc;
  }
  seq_runs runs = {.n = 0};
  for (size_t i = 0; i < b->n && !rc; i++) {
    const batch_entry *e = &b->e[i];
    /* A trim reads the room's seq: the row must be current. */
    if (e->kind == E_TRIM || e->kind == E_ROOM) rc = runs_flush(s, b, &runs);
    if (rc) break;
    switch (e->kind) {
    case E_ROOM: rc = apply_room(s, b, e); break;
    case E_OP: rc = apply_op(s, b, e, &runs); break;
    case E_CURSOR: rc = apply_cursor(s, b, e); break;
    case E_ITEM: rc = apply_item(s, b, e); break;
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
  if (!rc) rc = runs_flush(s, b, &runs);
  if (!rc) rc = map_rc(wstep(s, b, s->w[SW_COMMIT]));
  if (rc) {
    /* Some errors (IOERR, FULL, NOMEM) make SQLite roll back by itself. */
    if (!sqlite3_get_autocommit(s->wdb)) {
      char keep[sizeof b->err];
      snprintf(keep, sizeof keep, "%s", b->err);
      wstep(s, b, s->w[SW_ROLLBACK]);
      snprintf(b->err, sizeof b->err, "%s", keep);
    }
    b->state = B_FAILED;
    return rc;
  }
  b->state = B_COMMITTED;
  return WSY_OK;
}

/* ---- reads --------------------------------------------------------------- */

/* Ends a walk or lookup: resets st and turns the last step's code into the
** result (cb_rc, when the callback stopped the walk). */
static int rdone(sqlite3_stmt *st, int rc, int cb_rc) {
  sqlite3_reset(st);
  if (cb_rc) return cb_rc;
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? WSY_OK : map_rc(rc);
}

static sqlite3_int64 clamp64(uint64_t v) { return (sqlite3_int64)(v > SEQ_MAX ? SEQ_MAX : v); }

int store_room_get(store *s, const char *room, store_room_info *out) {
  memset(out, 0, sizeof *out);
  if (!room) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_ROOM_GET];
  bind_str(st, 1, room);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const char *ep = (const char *)sqlite3_column_text(st, 0);
    int len = sqlite3_column_bytes(st, 0);
    if (ep && len > 0 && len <= STORE_EPOCH_MAX) memcpy(out->epoch, ep, (size_t)len);
    out->seq = (uint64_t)sqlite3_column_int64(st, 1);
    out->min_seq = (uint64_t)sqlite3_column_int64(st, 2);
    out->created_ms = sqlite3_column_int64(st, 3);
    out->exists = 1;
  }
  return rdone(st, rc, 0);
}

int store_room_items(store *s, const char *room, store_item_cb cb, void *ud) {
  if (!room || !cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_ITEMS];
  bind_str(st, 1, room);
  int rc = SQLITE_OK, cb_rc = 0;
  while (!cb_rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *fields = (const char *)sqlite3_column_text(st, 1);
    size_t flen = (size_t)sqlite3_column_bytes(st, 1);
    cb_rc = cb((const char *)sqlite3_column_text(st, 0), fields ? fields : "", flen,
               (const char *)sqlite3_column_text(st, 3), (uint64_t)sqlite3_column_int64(st, 2), ud);
  }
  return rdone(st, rc, cb_rc);
}

/* Hands each (seq, msg) row of a bound statement to cb. */
static int walk_log(sqlite3_stmt *st, store_history_cb cb, void *ud) {
  int rc = SQLITE_OK, cb_rc = 0;
  while (!cb_rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *msg = (const char *)sqlite3_column_text(st, 1);
    size_t len = (size_t)sqlite3_column_bytes(st, 1);
    cb_rc = cb((uint64_t)sqlite3_column_int64(st, 0), msg ? msg : "", len, ud);
  }
  return rdone(st, rc, cb_rc);
}

int store_history(store *s, const char *room, uint64_t after_seq, size_t limit, store_history_cb cb,
                  void *ud) {
  if (!room || !cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_HISTORY];
  bind_str(st, 1, room);
  sqlite3_bind_int64(st, 2, clamp64(after_seq));
  sqlite3_bind_int64(st, 3, limit == 0 ? -1 : clamp64(limit));
  return walk_log(st, cb, ud);
}

int store_recent_messages(store *s, const char *room, size_t limit, store_history_cb cb, void *ud) {
  if (!room || !cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_RECENT_MESSAGES];
  bind_str(st, 1, room);
  sqlite3_bind_int64(st, 2, clamp64(limit));
  return walk_log(st, cb, ud);
}

int store_dedupe_each(store *s, store_dedupe_cb cb, void *ud) {
  if (!cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_DEDUPE_ALL];
  int rc = SQLITE_OK, cb_rc = 0;
  while (!cb_rc && (rc = sqlite3_step(st)) == SQLITE_ROW)
    cb_rc = cb((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1), ud);
  return rdone(st, rc, cb_rc);
}

int store_dedupe_get(store *s, const char *device, const char *cid,
                     char room_out[STORE_ROOM_MAX + 1], uint64_t *seq_out) {
  if (!device || !cid) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_DEDUPE];
  bind_str(st, 1, device);
  bind_str(st, 2, cid);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) {
    sqlite3_reset(st);
    return WSY_NOT_FOUND;
  }
  if (rc == SQLITE_ROW) {
    const char *room = (const char *)sqlite3_column_text(st, 0);
    int len = sqlite3_column_bytes(st, 0);
    if (!room || len <= 0 || len > STORE_ROOM_MAX) { /* the schema's CHECK forbids it */
      sqlite3_reset(st);
      return WSY_IO;
    }
    if (room_out) {
      memcpy(room_out, room, (size_t)len);
      room_out[len] = '\0';
    }
    if (seq_out) *seq_out = (uint64_t)sqlite3_column_int64(st, 1);
  }
  return rdone(st, rc, 0);
}

int store_cursors(store *s, const char *room, store_cursor_cb cb, void *ud) {
  if (!room || !cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_CURSORS];
  bind_str(st, 1, room);
  int rc = SQLITE_OK, cb_rc = 0;
  while (!cb_rc && (rc = sqlite3_step(st)) == SQLITE_ROW)
    cb_rc = cb((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
               (uint64_t)sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3), ud);
  return rdone(st, rc, cb_rc);
}

int store_read_begin(store *s) {
  sqlite3_stmt *st = s->r[SR_BEGIN];
  return rdone(st, sqlite3_step(st), 0);
}

int store_read_end(store *s) {
  sqlite3_stmt *st = s->r[SR_END];
  return rdone(st, sqlite3_step(st), 0);
}

int store_stats(store *s, store_stats_info *out) {
  memset(out, 0, sizeof *out);
  out->schema_version = STORE_SCHEMA_VERSION;
  out->durability_full = s->durability_full;
  sqlite3_stmt *st = s->r[SR_PAGES];
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) out->db_bytes = (uint64_t)sqlite3_column_int64(st, 0);
  rc = rdone(st, rc, 0);
  size_t n = strlen(s->path) + sizeof "-wal";
  char *wal = wsy_malloc(n);
  snprintf(wal, n, "%s-wal", s->path);
  struct stat sb;
  if (stat(wal, &sb) == 0) out->wal_bytes = (uint64_t)sb.st_size;
  wsy_free(wal);
  return rc;
}
