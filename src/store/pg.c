/* pg.c -- the PostgreSQL backend of wsync (store.h: the contract; the
** tables mirror SQLite's, see the SCHEMA there): the schema and its
** migrations, and the asynchronous, fenced commit. Reads: pg_read.c; the
** statements a batch becomes: pg_batch.c.
**
** COMMITS run on the loop thread over their own connection, libpq in
** non-blocking mode and PIPELINE mode, driven by a uv_poll_t on the
** connection's socket. A batch is sent as one pipeline of prepared
** statements (set-based ones for runs of log rows and item writes), then
** one Sync. Without an explicit BEGIN, everything
** up to a Sync is ONE implicit transaction: committed at the Sync when
** every step succeeded, rolled back as a whole when one failed (the server
** skips the rest). So a batch is one round trip and all or nothing.
**
** The commit connection:
**
**            store_commit()               connected: PREPAREs + Sync, batch + Sync
**     DOWN ----------------> CONNECTING -------------------------------------> BUSY
**      ^  (refused: deferred      |  no answer in PG_CONNECT_MS                 | |
**      |   WSY_IO)                v                                             | |
**      +------------------------ drop <-----------------------------------------+ |
**      |            timeout (PG_COMMIT_MS), socket error, EOF: WSY_IO             |
**      |                                                                          | final Sync:
**      +------ drop <--- socket readable with an error or EOF --- IDLE <----------+ cb(rc)
**                                                                  |
**                                      store_commit(): batch + Sync +--> BUSY
**
** Invariants:
**   1. FENCING. Each room's seq is checked by the room row's own UPDATE
**      (wsync_advance: seq must be the first op's seq - 1 of that room in
**      the batch; the row lock it takes serializes the commits of several
**      nodes to one room, and the loser sees the winner's seq and fails
**      with WSY_STALE). Ops right after it are checked here before sending
**      (a gap inside the batch is WSY_INVAL, nothing sent) and the row is
**      moved once more at the end, as SQLite's runs.
**   2. A failed batch changed nothing: the implicit transaction rolls back.
**   3. A connection dropped after the batch's Sync went out leaves the
**      outcome unknown: WSY_IO, and the engine checks dedupe and the room's
**      seq. A dropped connection is never reused; the next call connects
**      again and prepares the statements again.
**   4. cb runs from a libuv callback, never inside store_commit. */
#include "pg_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- schema -------------------------------------------------------------- */

/* Migration i (0-based) takes wsync_schema.version from i to i + 1, in its
** own transaction under the advisory lock. Only ever append. Names sort
** bytewise (COLLATE "C"), as SQLite's. The functions raise SQLSTATEs of
** their own: WS001 seq mismatch, WS002 no such room, WS003 room exists. */
static const char *const migrations[] = {
  /* 1: everything SQLite's schema 4 holds, and the fencing functions */
  "CREATE TABLE rooms("
  "  name TEXT COLLATE \"C\" PRIMARY KEY CHECK(octet_length(name) BETWEEN 1 AND 128),"
  "  epoch TEXT NOT NULL CHECK(octet_length(epoch) BETWEEN 1 AND 32),"
  "  seq BIGINT NOT NULL CHECK(seq >= 0),"
  "  min_seq BIGINT NOT NULL CHECK(min_seq BETWEEN 1 AND seq + 1),"
  "  created_at BIGINT NOT NULL);"
  "CREATE TABLE ops(room TEXT COLLATE \"C\" NOT NULL, seq BIGINT NOT NULL CHECK(seq >= 1), item TEXT,"
  "  device TEXT, cid TEXT, msg TEXT NOT NULL, PRIMARY KEY(room, seq));"
  "CREATE TABLE items(room TEXT COLLATE \"C\" NOT NULL, item TEXT COLLATE \"C\" NOT NULL,"
  "  fields TEXT NOT NULL, version BIGINT NOT NULL, revs TEXT, PRIMARY KEY(room, item));"
  "CREATE TABLE texts(room TEXT COLLATE \"C\" NOT NULL, item TEXT COLLATE \"C\" NOT NULL,"
  "  field TEXT COLLATE \"C\" NOT NULL, rev BIGINT NOT NULL, seq BIGINT NOT NULL, ops TEXT NOT NULL,"
  "  PRIMARY KEY(room, item, field, rev));"
  "CREATE TABLE dedupe(device TEXT NOT NULL, cid TEXT NOT NULL,"
  "  room TEXT NOT NULL CHECK(octet_length(room) BETWEEN 1 AND 128), seq BIGINT NOT NULL,"
  "  PRIMARY KEY(device, cid));"
  "CREATE INDEX dedupe_by_room ON dedupe(room);" /* a room's delete */
  "CREATE TABLE cursors(\"user\" TEXT COLLATE \"C\" NOT NULL, device TEXT COLLATE \"C\" NOT NULL,"
  "  room TEXT NOT NULL, seq BIGINT NOT NULL, updated_at BIGINT NOT NULL,"
  "  PRIMARY KEY(\"user\", device, room));"
  "CREATE INDEX cursors_by_room ON cursors(room, \"user\", device);"
  "CREATE TABLE hook_pos(hook TEXT NOT NULL, room TEXT NOT NULL, epoch TEXT NOT NULL,"
  "  seq BIGINT NOT NULL CHECK(seq >= 0), updated_at BIGINT NOT NULL, PRIMARY KEY(hook, room));"
  "CREATE INDEX hook_pos_by_room ON hook_pos(room);"
  "CREATE FUNCTION wsync_advance(r TEXT, expected BIGINT, target BIGINT) RETURNS void LANGUAGE plpgsql AS $f$"
  " DECLARE held BIGINT; BEGIN"
  "  UPDATE rooms SET seq = target WHERE name = r AND seq = expected;"
  "  IF FOUND THEN RETURN; END IF;"
  "  SELECT seq INTO held FROM rooms WHERE name = r;"
  "  IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WS002', MESSAGE = format('no such room %s', r); END IF;"
  "  RAISE EXCEPTION USING ERRCODE = 'WS001',"
  "    MESSAGE = format('room %s: the store holds seq %s, the batch expected %s', r, held, expected);"
  " END $f$;"
  "CREATE FUNCTION wsync_room_create(r TEXT, ep TEXT, created BIGINT) RETURNS void LANGUAGE plpgsql AS $f$"
  " DECLARE held BIGINT; BEGIN"
  "  INSERT INTO rooms(name, epoch, seq, min_seq, created_at) VALUES(r, ep, 0, 1, created)"
  "    ON CONFLICT (name) DO NOTHING;"
  "  IF FOUND THEN RETURN; END IF;"
  "  SELECT seq INTO held FROM rooms WHERE name = r;"
  "  RAISE EXCEPTION USING ERRCODE = 'WS003',"
  "    MESSAGE = format('room %s already exists: the store holds seq %s', r, held);"
  " END $f$;"
  "CREATE FUNCTION wsync_trim(r TEXT, keep BIGINT) RETURNS void LANGUAGE plpgsql AS $f$ BEGIN"
  "  UPDATE rooms SET min_seq = GREATEST(min_seq, LEAST(keep, seq + 1)) WHERE name = r;"
  "  IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WS002', MESSAGE = format('no such room %s', r); END IF;"
  "  DELETE FROM ops WHERE room = r AND seq < (SELECT min_seq FROM rooms WHERE name = r);"
  " END $f$;"
  "CREATE FUNCTION wsync_room_delete(r TEXT) RETURNS void LANGUAGE plpgsql AS $f$ BEGIN"
  "  DELETE FROM rooms WHERE name = r;"
  "  IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WS002', MESSAGE = format('no such room %s', r); END IF;"
  "  DELETE FROM ops WHERE room = r; DELETE FROM items WHERE room = r; DELETE FROM texts WHERE room = r;"
  "  DELETE FROM cursors WHERE room = r; DELETE FROM dedupe WHERE room = r; DELETE FROM hook_pos WHERE room = r;"
  " END $f$;",
  /* 2: item locks (store.h, ITEM LOCKS): a lock version per room, fenced
  ** by the commits that change a lock and by the ops checked against them
  ** (wsync_advance with a version; -1: not checked). */
  "ALTER TABLE rooms ADD COLUMN lockver BIGINT NOT NULL DEFAULT 0;"
  "CREATE TABLE locks(room TEXT COLLATE \"C\" NOT NULL, item TEXT COLLATE \"C\" NOT NULL, holder TEXT,"
  "  \"user\" TEXT, device TEXT, fence BIGINT NOT NULL, expires BIGINT NOT NULL, PRIMARY KEY(room, item));"
  "CREATE FUNCTION wsync_advance(r TEXT, expected BIGINT, target BIGINT, lv BIGINT) RETURNS void"
  " LANGUAGE plpgsql AS $f$ DECLARE held BIGINT; hlv BIGINT; BEGIN"
  "  UPDATE rooms SET seq = target WHERE name = r AND seq = expected AND (lv < 0 OR lockver = lv);"
  "  IF FOUND THEN RETURN; END IF;"
  "  SELECT seq, lockver INTO held, hlv FROM rooms WHERE name = r;"
  "  IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WS002', MESSAGE = format('no such room %s', r); END IF;"
  "  RAISE EXCEPTION USING ERRCODE = 'WS001', MESSAGE = format("
  "    'room %s: the store holds seq %s and lock version %s, the batch expected %s and %s',"
  "    r, held, hlv, expected, CASE WHEN lv < 0 THEN 'any' ELSE lv::text END);"
  " END $f$;"
  "CREATE FUNCTION wsync_lock(r TEXT, lv BIGINT, it TEXT, h TEXT, u TEXT, d TEXT, f BIGINT, ex BIGINT)"
  " RETURNS void LANGUAGE plpgsql AS $f$ DECLARE hlv BIGINT; BEGIN"
  "  UPDATE rooms SET lockver = lv + 1 WHERE name = r AND lockver = lv;"
  "  IF NOT FOUND THEN"
  "    SELECT lockver INTO hlv FROM rooms WHERE name = r;"
  "    IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WS002', MESSAGE = format('no such room %s', r); END IF;"
  "    RAISE EXCEPTION USING ERRCODE = 'WS001', MESSAGE ="
  "      format('room %s: the store holds lock version %s, the batch expected %s', r, hlv, lv);"
  "  END IF;"
  "  INSERT INTO locks(room, item, holder, \"user\", device, fence, expires) VALUES(r, it, h, u, d, f, ex)"
  "    ON CONFLICT (room, item) DO UPDATE SET holder = excluded.holder, \"user\" = excluded.\"user\","
  "    device = excluded.device, fence = excluded.fence, expires = excluded.expires;"
  " END $f$;"
  "CREATE OR REPLACE FUNCTION wsync_room_delete(r TEXT) RETURNS void LANGUAGE plpgsql AS $f$ BEGIN"
  "  DELETE FROM rooms WHERE name = r;"
  "  IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WS002', MESSAGE = format('no such room %s', r); END IF;"
  "  DELETE FROM ops WHERE room = r; DELETE FROM items WHERE room = r; DELETE FROM texts WHERE room = r;"
  "  DELETE FROM cursors WHERE room = r; DELETE FROM dedupe WHERE room = r; DELETE FROM hook_pos WHERE room = r;"
  "  DELETE FROM locks WHERE room = r;"
  " END $f$;",
  /* 3: the head of each room (store.h, store_batch_head): the token of the
  ** batch that last changed it, checked and set by wsync_head. */
  "ALTER TABLE rooms ADD COLUMN head TEXT;"
  "CREATE FUNCTION wsync_head(r TEXT, eh TEXT, nh TEXT) RETURNS void LANGUAGE plpgsql AS $f$"
  " DECLARE held TEXT; BEGIN"
  "  UPDATE rooms SET head = nh WHERE name = r AND head IS NOT DISTINCT FROM eh;"
  "  IF FOUND THEN RETURN; END IF;"
  "  SELECT head INTO held FROM rooms WHERE name = r;"
  "  IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WS002', MESSAGE = format('no such room %s', r); END IF;"
  "  RAISE EXCEPTION USING ERRCODE = 'WS001', MESSAGE = format("
  "    'room %s: its head is %s, the batch expected %s (it was decided on a batch that was not stored)',"
  "    r, coalesce(held, 'none'), coalesce(eh, 'none'));"
  " END $f$;"
  /* the fence of a room's first op and its head in one call */
  "CREATE FUNCTION wsync_advance(r TEXT, expected BIGINT, target BIGINT, lv BIGINT, eh TEXT, nh TEXT)"
  " RETURNS void LANGUAGE plpgsql AS $f$ DECLARE held BIGINT; hlv BIGINT; hh TEXT; BEGIN"
  "  UPDATE rooms SET seq = target, head = nh WHERE name = r AND seq = expected AND (lv < 0 OR lockver = lv)"
  "    AND head IS NOT DISTINCT FROM eh;"
  "  IF FOUND THEN RETURN; END IF;"
  "  SELECT seq, lockver, head INTO held, hlv, hh FROM rooms WHERE name = r;"
  "  IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WS002', MESSAGE = format('no such room %s', r); END IF;"
  "  RAISE EXCEPTION USING ERRCODE = 'WS001', MESSAGE = format("
  "    'room %s: the store holds seq %s, lock version %s, head %s; the batch expected %s, %s, %s',"
  "    r, held, hlv, coalesce(hh, 'none'), expected, CASE WHEN lv < 0 THEN 'any' ELSE lv::text END,"
  "    coalesce(eh, 'none'));"
  " END $f$;",
  /* 4: a version per lock row (store.h, ITEM LOCKS): a lock change is
  ** fenced by its item's row alone, so that changes of different items
  ** made on several nodes at once do not fence each other out; the room's
  ** lock version still rises with every change (for the ops checked
  ** against the locks). The old function and the release of a gone node's
  ** locks raise the row's version too. */
  "ALTER TABLE locks ADD COLUMN ver BIGINT NOT NULL DEFAULT 1;"
  "CREATE FUNCTION wsync_lock_item(r TEXT, iv BIGINT, it TEXT, h TEXT, u TEXT, d TEXT, f BIGINT, ex BIGINT)"
  " RETURNS void LANGUAGE plpgsql AS $f$ DECLARE hv BIGINT; BEGIN"
  "  UPDATE rooms SET lockver = lockver + 1 WHERE name = r;"
  "  IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WS002', MESSAGE = format('no such room %s', r); END IF;"
  "  IF iv = 0 THEN"
  "    INSERT INTO locks(room, item, holder, \"user\", device, fence, expires, ver) VALUES(r, it, h, u, d, f, ex, 1)"
  "      ON CONFLICT (room, item) DO NOTHING;"
  "  ELSE"
  "    UPDATE locks SET holder = h, \"user\" = u, device = d, fence = f, expires = ex, ver = iv + 1"
  "      WHERE room = r AND item = it AND ver = iv;"
  "  END IF;"
  "  IF FOUND THEN RETURN; END IF;"
  "  SELECT ver INTO hv FROM locks WHERE room = r AND item = it;"
  "  RAISE EXCEPTION USING ERRCODE = 'WS001', MESSAGE = format("
  "    'room %s: the lock row of %s is at version %s, the batch expected %s', r, it,"
  "    coalesce(hv::text, 'none'), CASE WHEN iv = 0 THEN 'none' ELSE iv::text END);"
  " END $f$;"
  "CREATE OR REPLACE FUNCTION wsync_lock(r TEXT, lv BIGINT, it TEXT, h TEXT, u TEXT, d TEXT, f BIGINT, ex BIGINT)"
  " RETURNS void LANGUAGE plpgsql AS $f$ DECLARE hlv BIGINT; BEGIN"
  "  UPDATE rooms SET lockver = lv + 1 WHERE name = r AND lockver = lv;"
  "  IF NOT FOUND THEN"
  "    SELECT lockver INTO hlv FROM rooms WHERE name = r;"
  "    IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WS002', MESSAGE = format('no such room %s', r); END IF;"
  "    RAISE EXCEPTION USING ERRCODE = 'WS001', MESSAGE ="
  "      format('room %s: the store holds lock version %s, the batch expected %s', r, hlv, lv);"
  "  END IF;"
  "  INSERT INTO locks(room, item, holder, \"user\", device, fence, expires) VALUES(r, it, h, u, d, f, ex)"
  "    ON CONFLICT (room, item) DO UPDATE SET holder = excluded.holder, \"user\" = excluded.\"user\","
  "    device = excluded.device, fence = excluded.fence, expires = excluded.expires, ver = locks.ver + 1;"
  " END $f$;",
  /* 5: a log row is its op's dedupe record while it lives: a unique index
  ** on the log's (device, cid) instead of a dedupe row and its two index
  ** entries per op. The dedupe table keeps the records of trimmed rows
  ** (wsync_trim moves them there) and those written before this step;
  ** a commit checks its keys against it (PW_OPS). A room's delete drops
  ** both, as before. */
  "CREATE UNIQUE INDEX ops_dedupe ON ops(device, cid) WHERE device IS NOT NULL AND cid IS NOT NULL;"
  "CREATE OR REPLACE FUNCTION wsync_trim(r TEXT, keep BIGINT) RETURNS void LANGUAGE plpgsql AS $f$"
  " DECLARE m BIGINT; BEGIN"
  "  UPDATE rooms SET min_seq = GREATEST(min_seq, LEAST(keep, seq + 1)) WHERE name = r RETURNING min_seq INTO m;"
  "  IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WS002', MESSAGE = format('no such room %s', r); END IF;"
  "  INSERT INTO dedupe(device, cid, room, seq) SELECT device, cid, room, seq FROM ops"
  "    WHERE room = r AND seq < m AND device IS NOT NULL AND cid IS NOT NULL ON CONFLICT DO NOTHING;"
  "  DELETE FROM ops WHERE room = r AND seq < m;"
  " END $f$;",
  /* 6: a trim reads only the rows it drops, from the room's min_seq before
  ** it: with "seq < m" alone each trim's index scan also walked every row
  ** earlier trims had deleted and VACUUM had not yet removed (22,000 index
  ** entries and 1,300 heap pages for 256 rows in a room trimmed at 35,000
  ** ops/s), and trimmed rooms wrote at a third of the rate of new ones.
  ** Below min_seq there is no row: the trim that raised it deleted them. */
  "CREATE OR REPLACE FUNCTION wsync_trim(r TEXT, keep BIGINT) RETURNS void LANGUAGE plpgsql AS $f$"
  " DECLARE lo BIGINT; m BIGINT; BEGIN"
  "  SELECT min_seq INTO lo FROM rooms WHERE name = r FOR UPDATE;"
  "  IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WS002', MESSAGE = format('no such room %s', r); END IF;"
  "  UPDATE rooms SET min_seq = GREATEST(min_seq, LEAST(keep, seq + 1)) WHERE name = r RETURNING min_seq INTO m;"
  "  IF m <= lo THEN RETURN; END IF;"
  "  INSERT INTO dedupe(device, cid, room, seq) SELECT device, cid, room, seq FROM ops"
  "    WHERE room = r AND seq >= lo AND seq < m AND device IS NOT NULL AND cid IS NOT NULL ON CONFLICT DO NOTHING;"
  "  DELETE FROM ops WHERE room = r AND seq >= lo AND seq < m;"
  " END $f$;",
};

_Static_assert(WSY_ARRAY_LEN(migrations) == PG_SCHEMA_VERSION, "one migration step per schema version");

#define T 25 /* text */
#define I 20 /* int8 */
typedef struct {
  const char *sql;
  int n;
  Oid types[8];
} pg_stmt;

static const pg_stmt write_sql[PW__COUNT] = {
  [PW_ADVANCE] = {"SELECT wsync_advance($1, $2, $3, $4)", 4, {T, I, I, I}},
  [PW_LOCK] = {"SELECT wsync_lock_item($1, $2, $3, $4, $5, $6, $7, $8)", 8, {T, I, T, T, T, T, I, I}},
  [PW_HEAD] = {"SELECT wsync_head($1, $2, $3)", 3, {T, T, T}},
  /* a head moved only if it is the one expected (store_batch_head, soft) */
  [PW_HEAD_SOFT] = {"UPDATE rooms SET head = $3 WHERE name = $1 AND head IS NOT DISTINCT FROM $2", 3, {T, T, T}},
  [PW_ADVANCE_HEAD] = {"SELECT wsync_advance($1, $2, $3, $4, $5, $6)", 6, {T, I, I, I, T, T}},
  [PW_ROOM_CREATE] = {"SELECT wsync_room_create($1, $2, $3)", 3, {T, T, I}},
  /* A run of ops in one set-based statement, the columns as binary arrays
  ** (pg_batch.c). A (device, cid) already in the log fails on ops_dedupe;
  ** one in the dedupe table (a trimmed op's, or from before schema 5) is
  ** inserted there again, which fails on dedupe_pkey: both WSY_DUPLICATE. */
  [PW_OPS] = {"WITH o AS (INSERT INTO ops(room, seq, item, device, cid, msg)"
              " SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[])"
              " RETURNING room, seq, device, cid)"
              " INSERT INTO dedupe(device, cid, room, seq) SELECT o.device, o.cid, o.room, o.seq FROM o"
              " WHERE o.device IS NOT NULL AND o.cid IS NOT NULL"
              " AND EXISTS(SELECT 1 FROM dedupe d WHERE d.device = o.device AND d.cid = o.cid)",
              6, {1009, 1016, 1009, 1009, 1009, 1009}},
  /* A run of item writes, each (room, item) once (see items_add): rows
  ** with fields are upserted, those without deleted, and writing or deleting
  ** an item's row drops its texts rows (store.h). */
  [PW_ITEMS] = {"WITH w AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[])"
                " AS w(room, item, fields, version, revs)),"
                " t AS (DELETE FROM texts USING w WHERE texts.room = w.room AND texts.item = w.item),"
                " d AS (DELETE FROM items USING w WHERE w.fields IS NULL AND items.room = w.room"
                " AND items.item = w.item)"
                " INSERT INTO items(room, item, fields, version, revs)"
                " SELECT room, item, fields, version, revs FROM w WHERE fields IS NOT NULL"
                " ON CONFLICT (room, item) DO UPDATE SET fields = excluded.fields,"
                " version = excluded.version, revs = excluded.revs", 5, {1009, 1009, 1009, 1016, 1009}},
  [PW_TEXT_INSERT] = {"INSERT INTO texts(room, item, field, rev, seq, ops) VALUES($1, $2, $3, $4, $5, $6)", 6,
                      {T, T, T, I, I, T}},
  [PW_CURSOR_UPSERT] = {"INSERT INTO cursors(\"user\", device, room, seq, updated_at) VALUES($1, $2, $3, $4, $5)"
                        " ON CONFLICT (\"user\", device, room) DO UPDATE SET"
                        " seq = GREATEST(cursors.seq, excluded.seq), updated_at = excluded.updated_at", 5,
                        {T, T, T, I, I}},
  [PW_TRIM] = {"SELECT wsync_trim($1, $2)", 2, {T, I}},
  [PW_DELETE] = {"SELECT wsync_room_delete($1)", 1, {T}},
  /* Only for the room's current incarnation; a new epoch replaces the seq. */
  [PW_HOOK_POS] = {"INSERT INTO hook_pos(hook, room, epoch, seq, updated_at) SELECT $1, $2, $3, $4, $5"
                   " WHERE EXISTS(SELECT 1 FROM rooms WHERE name = $2 AND epoch = $3)"
                   " ON CONFLICT (hook, room) DO UPDATE SET seq = CASE WHEN hook_pos.epoch = excluded.epoch"
                   " THEN GREATEST(hook_pos.seq, excluded.seq) ELSE excluded.seq END,"
                   " epoch = excluded.epoch, updated_at = excluded.updated_at", 5, {T, T, T, I, I}},
};
#undef T
#undef I

/* ---- errors and connections ---------------------------------------------- */

int pg_map_result(const PGresult *r) {
  const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  if (!st || strlen(st) != 5) return WSY_IO;
  if (!strcmp(st, "WS001") || !strcmp(st, "WS003")) return WSY_STALE;
  if (!strcmp(st, "WS002")) return WSY_NOT_FOUND;
  if (!strcmp(st, "23505")) {
    const char *c = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
    return c && (!strcmp(c, "dedupe_pkey") || !strcmp(c, "ops_dedupe")) ? WSY_DUPLICATE : WSY_INVAL;
  }
  if (!strncmp(st, "23", 2) || !strncmp(st, "22", 2)) return WSY_INVAL;
  if (!strcmp(st, "40001") || !strcmp(st, "40P01") || !strcmp(st, "55P03")) return WSY_AGAIN;
  if (!strncmp(st, "54", 2)) return WSY_TOO_LARGE;
  if (!strcmp(st, "53200")) return WSY_NOMEM;
  return WSY_IO; /* connection, shutdown, cancel, disk full, ... */
}

/* Notices (e.g. "relation already exists, skipping") are not for stderr. */
static void quiet(void *arg, const char *msg) { (void)arg, (void)msg; }

PGconn *pg_connect_start(const char *url, const char *app) {
  /* The URL first (expand_dbname); the keywords after it win over it. */
  const char *const keys[] = {"dbname", "connect_timeout", "application_name", "client_encoding", NULL};
  const char *const vals[] = {url, "2", app, "UTF8", NULL};
  PGconn *c = PQconnectStartParams(keys, vals, 1);
  if (c) PQsetNoticeProcessor(c, quiet, NULL);
  return c;
}

static void seterr(char *err, size_t errlen, const char *fmt, ...) WSY_PRINTF(3, 4);
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  size_t n = strlen(err); /* libpq's messages end with a newline */
  while (n && (err[n - 1] == '\n' || err[n - 1] == ' ')) err[--n] = '\0';
}

/* ---- open: connect, check the version, migrate ---------------------------- */

#define MIGRATE_MS 60000 /* waits for another node's migration */

static int exec_txt(pg_store *s, const char *sql, PGresult **out, char *err, size_t errlen) {
  PGresult *r = NULL;
  char why[256] = "";
  int rc = pgr_exec(s, sql, 0, NULL, MIGRATE_MS, &r, why, sizeof why);
  if (rc) seterr(err, errlen, "PostgreSQL: %s", why);
  if (out) *out = r;
  else PQclear(r);
  return rc;
}

/* One step per transaction, each under the advisory lock so that nodes
** starting together migrate once; the version is read under the lock. */
static int migrate(pg_store *s, char *err, size_t errlen) {
  for (int step = 0;; step++) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "BEGIN; SELECT pg_advisory_xact_lock(%d);"
             " CREATE TABLE IF NOT EXISTS wsync_schema(version INT NOT NULL);", PG_MIGRATE_LOCK);
    PGresult *r;
    int rc = exec_txt(s, sql, NULL, err, errlen);
    if (!rc) rc = exec_txt(s, "SELECT coalesce(max(version), 0) FROM wsync_schema", &r, err, errlen);
    if (rc) {
      pgr_drop(s); /* whatever was open goes with the connection */
      return rc;
    }
    long version = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (version > PG_SCHEMA_VERSION) {
      seterr(err, errlen,
             "the PostgreSQL database has wsync schema version %ld, newer than this wsync knows (%d):"
             " upgrade wsync or use another database", version, PG_SCHEMA_VERSION);
      pgr_drop(s);
      return WSY_INVAL;
    }
    if (version == PG_SCHEMA_VERSION) return exec_txt(s, "COMMIT", NULL, err, errlen);
    if (exec_txt(s, migrations[version], NULL, err, errlen) == WSY_OK) {
      snprintf(sql, sizeof sql, "DELETE FROM wsync_schema; INSERT INTO wsync_schema VALUES(%ld); COMMIT",
               version + 1);
      if (exec_txt(s, sql, NULL, err, errlen) == WSY_OK) continue;
    }
    char keep[256];
    snprintf(keep, sizeof keep, "%s", err ? err : "");
    seterr(err, errlen, "migration to PostgreSQL schema %ld failed: %s", version + 1, keep);
    pgr_drop(s);
    return WSY_IO;
  }
}

static const store_ops pg_ops;
static void pg_close(store *bs);

int store_pg_open(const char *url, int durability_full, uv_loop_t *loop, store **out, char *err,
                  size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = '\0';
  if (!url || !*url) {
    seterr(err, errlen, "no PostgreSQL URL");
    return WSY_INVAL;
  }
  pg_store *s = wsy_calloc(1, sizeof *s);
  s->base.ops = &pg_ops;
  s->url = wsy_strndup(url, strlen(url));
  s->durability_full = durability_full ? 1 : 0;
  s->loop = loop;
  s->commit_ms = PG_COMMIT_MS;
  s->read_ms = PG_READ_MS;
  s->fail_slot = -1;
  if (pgr_ensure(s) != WSY_OK) {
    seterr(err, errlen, "cannot connect to PostgreSQL: %s", s->conn_err);
    pg_close(&s->base);
    return WSY_IO;
  }
  int rc = migrate(s, err, errlen);
  if (rc) {
    pg_close(&s->base);
    return rc;
  }
  s->fq_tail = &s->fq_head;
  s->ff_tail = &s->ff_head;
  if (loop) {
    uv_timer_init(loop, &s->timer);
    uv_timer_init(loop, &s->defer);
    uv_timer_init(loop, &s->ftimer);
    s->timer.data = s->defer.data = s->ftimer.data = s;
    s->handles_open = 3;
  }
  *out = &s->base;
  return WSY_OK;
}

void pg_store_set_timeouts(store *bs, unsigned commit_ms, unsigned read_ms) {
  pg_store *s = (pg_store *)bs;
  s->commit_ms = commit_ms;
  s->read_ms = read_ms;
}

static void free_poll(uv_handle_t *h) { wsy_free(h); }

static void handle_closed(uv_handle_t *h) {
  pg_store *s = h->data;
  if (--s->handles_open == 0) wsy_free(s);
}

/* Forgets the commit connection (never reused once in doubt). */
static void wc_drop(pg_store *s) {
  if (s->wpoll) {
    uv_poll_stop(s->wpoll);
    uv_close((uv_handle_t *)s->wpoll, free_poll);
    s->wpoll = NULL;
  }
  if (s->wc) PQfinish(s->wc);
  s->wc = NULL;
  s->wstate = PC_DOWN;
  if (s->handles_open) uv_timer_stop(&s->timer); /* initialized only once open succeeded */
}

static void pg_close(store *bs) {
  pg_store *s = (pg_store *)bs;
  if (!s) return;
  if (s->committing) abort(); /* the contract: no commit in flight */
  wc_drop(s);
  pgr_drop(s);
  pg_fetch_close(s);
  wsy_free(s->url);
  wsy_free(s->slot_entry);
  if (!s->handles_open) {
    wsy_free(s);
    return;
  }
  uv_close((uv_handle_t *)&s->timer, handle_closed);
  uv_close((uv_handle_t *)&s->defer, handle_closed);
  uv_close((uv_handle_t *)&s->ftimer, handle_closed);
}

/* ---- the commit ---------------------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events);

/* Watches the commit socket for events (it may change while connecting). */
static int wc_watch(pg_store *s, int events) {
  int fd = PQsocket(s->wc);
  uv_os_fd_t cur = -1;
  if (s->wpoll && (uv_fileno((uv_handle_t *)s->wpoll, &cur) != 0 || cur != fd)) {
    uv_poll_stop(s->wpoll);
    uv_close((uv_handle_t *)s->wpoll, free_poll);
    s->wpoll = NULL;
  }
  if (fd < 0) return WSY_IO;
  if (!s->wpoll) {
    s->wpoll = wsy_calloc(1, sizeof *s->wpoll);
    if (uv_poll_init_socket(s->loop, s->wpoll, fd) != 0) {
      wsy_free(s->wpoll); /* never initialized: nothing to close */
      s->wpoll = NULL;
      return WSY_IO;
    }
    s->wpoll->data = s;
  }
  /* Watching an idle connection (for a drop) must not keep the loop alive:
   * a server shutting down exits once nothing is in flight. */
  if (s->wstate == PC_IDLE) uv_unref((uv_handle_t *)s->wpoll);
  else uv_ref((uv_handle_t *)s->wpoll);
  return uv_poll_start(s->wpoll, events, on_poll) ? WSY_IO : WSY_OK;
}

static void finish(pg_store *s, int rc) {
  store_batch *b = s->committing;
  store_commit_cb cb = s->cb;
  void *ud = s->cb_ud;
  uv_timer_stop(&s->timer);
  b->state = rc ? B_FAILED : B_COMMITTED;
  s->committing = NULL;
  s->cb = NULL;
  cb(ud, rc);
}

static void on_defer(uv_timer_t *t) {
  pg_store *s = t->data;
  finish(s, s->fail_rc);
}

/* A failure known before anything reached the server: answered from the
** loop, never inside store_commit. */
static void fail_soon(pg_store *s, int rc) {
  s->fail_rc = rc;
  uv_timer_start(&s->defer, on_defer, 0, 0);
}

static void fail_io(pg_store *s, const char *what) {
  store_batch *b = s->committing;
  char why[160];
  snprintf(why, sizeof why, "%s", s->wc ? PQerrorMessage(s->wc) : "");
  size_t n = strlen(why);
  while (n && why[n - 1] == '\n') why[--n] = '\0';
  store_batch_fail(b, WSY_IO, "%s%s%s", what, n ? ": " : "", why);
  wc_drop(s);
  fail_soon(s, WSY_IO); /* from store_commit too, so never inside it */
}

static void on_timeout(uv_timer_t *t) {
  pg_store *s = t->data;
  if (s->wstate == PC_CONNECTING) fail_io(s, "cannot connect to PostgreSQL (timed out)");
  else fail_io(s, "PostgreSQL did not answer the commit in time; the outcome is unknown");
}

static void slot_add(pg_store *s, int entry) {
  if (s->nslots == s->slot_cap) {
    s->slot_cap = s->slot_cap ? s->slot_cap * 2 : 256;
    s->slot_entry = wsy_realloc(s->slot_entry, s->slot_cap * sizeof *s->slot_entry);
  }
  s->slot_entry[s->nslots++] = entry;
}

static void stmt_name(char name[16], int st) { snprintf(name, 16, "w%d", st); }

int pg_send_stmt(pg_store *s, int st, int entry, const char *const *vals) {
  char name[16];
  int lens[8] = {0}; /* text params: libpq ignores the lengths */
  stmt_name(name, st);
  if (!PQsendQueryPrepared(s->wc, name, write_sql[st].n, vals, lens, NULL, 0)) return WSY_IO;
  slot_add(s, entry);
  return WSY_OK;
}

int pg_send_stmt_bin(pg_store *s, int st, int entry, const char *const *vals, const int *lens, const int *fmts) {
  char name[16];
  stmt_name(name, st);
  if (!PQsendQueryPrepared(s->wc, name, write_sql[st].n, vals, lens, fmts, 0)) return WSY_IO;
  slot_add(s, entry);
  return WSY_OK;
}


static int send_prepares(pg_store *s) {
  /* An ack means durable in PostgreSQL, whatever the server's default. */
  if (!PQsendQueryParams(s->wc, "SET synchronous_commit TO on", 0, NULL, NULL, NULL, NULL, 0)) return WSY_IO;
  slot_add(s, -1);
  for (int i = 0; i < PW__COUNT; i++) {
    char name[16];
    stmt_name(name, i);
    if (!PQsendPrepare(s->wc, name, write_sql[i].sql, write_sql[i].n, write_sql[i].types)) return WSY_IO;
    slot_add(s, -1);
  }
  if (!PQpipelineSync(s->wc)) return WSY_IO;
  s->syncs_left++;
  return WSY_OK;
}

/* Sends what libpq holds; watches for the answer (and for writability
** while some is left). */
static int flush_and_watch(pg_store *s) {
  int f = PQflush(s->wc);
  if (f < 0) return WSY_IO;
  return wc_watch(s, UV_READABLE | (f ? UV_WRITABLE : 0));
}

static void start_batch(pg_store *s, int prepare) {
  s->nslots = s->slot_at = 0;
  s->syncs_left = 0;
  s->fail_rc = 0;
  s->fail_slot = -1;
  s->fail_msg[0] = '\0';
  s->sent_commit = 0;
  s->wstate = PC_BUSY;
  int rc = prepare ? send_prepares(s) : WSY_OK;
  if (!rc) rc = pg_send_batch(s);
  if (rc == WSY_TOO_LARGE || rc == WSY_NOMEM) {
    /* nothing reached the server as a whole batch: its Sync was never sent,
    ** and the statements queued so far go with the connection */
    wc_drop(s);
    return fail_soon(s, rc);
  }
  if (rc || flush_and_watch(s)) {
    fail_io(s, "cannot send the commit to PostgreSQL");
    return;
  }
  uv_update_time(s->loop); /* the loop's clock may be stale (a slow read just ran): a deadline from now */
  uv_timer_start(&s->timer, on_timeout, s->commit_ms, 0);
}

static const char *const kind_name[] = {"room_create", "op", "cursor", "trim", "item", "room_delete", "hook_pos",
                                        "text", "lock", "head"};
_Static_assert(WSY_ARRAY_LEN(kind_name) == E_HEAD + 1, "a name per batch entry kind");

/* The first failed statement decides the batch's result. */
static void record_failure(pg_store *s, const PGresult *r) {
  if (s->fail_rc) return;
  int entry = s->slot_at < s->nslots ? s->slot_entry[s->slot_at] : -1;
  store_batch *b = s->committing;
  const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  s->fail_rc = pg_map_result(r);
  if (entry < 0) { /* a PREPARE: this connection is unusable */
    s->fail_rc = WSY_IO;
    s->fail_slot = -2;
    store_batch_fail(b, WSY_IO, "cannot prepare the commit statements: %s", msg ? msg : "");
    return;
  }
  const batch_entry *e = &b->e[entry];
  const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
  if (s->fail_rc == WSY_DUPLICATE) /* the detail names them: Key (device, cid)=(dkey, cid) already exists. */
    store_batch_fail(b, WSY_DUPLICATE, "the ops from entry %d (room %.64s, seq %" PRIu64 "): a cid was already"
                     " committed: %.160s", entry, e->room, e->seq, detail ? detail : "");
  else
    store_batch_fail(b, s->fail_rc, "entry %d (%s, room %.64s, seq %" PRIu64 "): %s", entry, kind_name[e->kind],
                     e->room ? e->room : "(null)", e->seq, msg ? msg : "failed");
}

/* Reads every result that has arrived; the final Sync ends the commit. */
static void drain(pg_store *s) {
  int nulls = 0;
  while (!PQisBusy(s->wc)) {
    PGresult *r = PQgetResult(s->wc);
    if (!r) {
      if (++nulls > 1) break; /* nothing more queued yet */
      s->slot_at++;
      continue;
    }
    nulls = 0;
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_PIPELINE_SYNC) {
      PQclear(r);
      if (--s->syncs_left == 0) {
        int rc = s->fail_rc;
        if (s->fail_slot == -2) {
          wc_drop(s); /* its statements are not all prepared */
        } else {
          s->wstate = PC_IDLE;
          if (wc_watch(s, UV_READABLE)) wc_drop(s);
        }
        finish(s, rc);
        return;
      }
      continue;
    }
    if (st == PGRES_FATAL_ERROR) record_failure(s, r);
    PQclear(r);
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  pg_store *s = h->data;
  if (s->wstate == PC_CONNECTING) {
    PostgresPollingStatusType ps = PQconnectPoll(s->wc);
    if (ps == PGRES_POLLING_FAILED) return fail_io(s, "cannot connect to PostgreSQL");
    if (ps == PGRES_POLLING_OK) {
      uv_timer_stop(&s->timer);
      if (PQsetnonblocking(s->wc, 1) || !PQenterPipelineMode(s->wc))
        return fail_io(s, "cannot set up the PostgreSQL connection");
      return start_batch(s, 1);
    }
    if (wc_watch(s, ps == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE))
      fail_io(s, "cannot watch the PostgreSQL connection");
    return;
  }
  if (status < 0 || !PQconsumeInput(s->wc)) {
    if (s->wstate == PC_BUSY) return fail_io(s, "lost the PostgreSQL connection during a commit; the outcome is unknown");
    wc_drop(s); /* idle: the next commit connects again */
    return;
  }
  if (s->wstate == PC_IDLE) {
    if (PQstatus(s->wc) != CONNECTION_OK) wc_drop(s);
    return;
  }
  if (events & UV_WRITABLE) {
    int f = PQflush(s->wc);
    if (f < 0) return fail_io(s, "lost the PostgreSQL connection during a commit; the outcome is unknown");
    if (wc_watch(s, UV_READABLE | (f ? UV_WRITABLE : 0)))
      return fail_io(s, "cannot watch the PostgreSQL connection");
  }
  drain(s);
  if (s->wstate == PC_BUSY && PQstatus(s->wc) == CONNECTION_BAD)
    fail_io(s, "lost the PostgreSQL connection during a commit; the outcome is unknown");
}

static void pg_commit(store *bs, store_batch *b, store_commit_cb cb, void *ud) {
  pg_store *s = (pg_store *)bs;
  if (s->committing || !s->loop) abort(); /* the contract: one at a time, with a loop */
  s->committing = b;
  s->cb = cb;
  s->cb_ud = ud;
  if (b->state == B_COMMITTED || b->state == B_COMMITTING) {
    store_batch_fail(b, WSY_INVAL, "batch already committed");
    s->fail_rc = WSY_INVAL;
    uv_timer_start(&s->defer, on_defer, 0, 0);
    return;
  }
  b->err[0] = '\0';
  b->state = B_COMMITTING;
  int rc = b->n == 0 ? WSY_OK : pg_validate(b);
  if (rc || b->n == 0) return fail_soon(s, rc);
  if (s->wstate == PC_IDLE && PQstatus(s->wc) == CONNECTION_OK) return start_batch(s, 0);
  wc_drop(s);
  s->wc = pg_connect_start(s->url, "wsync");
  if (!s->wc || PQstatus(s->wc) == CONNECTION_BAD || PQsocket(s->wc) < 0) {
    char why[160];
    snprintf(why, sizeof why, "%s", s->wc ? PQerrorMessage(s->wc) : "out of memory");
    wc_drop(s);
    store_batch_fail(b, WSY_IO, "cannot connect to PostgreSQL: %s", why);
    return fail_soon(s, WSY_IO);
  }
  s->wstate = PC_CONNECTING;
  if (wc_watch(s, UV_WRITABLE)) {
    store_batch_fail(b, WSY_IO, "cannot watch the PostgreSQL connection");
    wc_drop(s);
    return fail_soon(s, WSY_IO);
  }
  uv_update_time(s->loop); /* as in start_batch */
  uv_timer_start(&s->timer, on_timeout, PG_CONNECT_MS, 0);
}

static const store_ops pg_ops = {
  .name = "postgres",
  .close = pg_close,
  .room_get = pg_room_get,
  .room_items = pg_room_items,
  .room_texts = pg_room_texts,
  .history = pg_history,
  .recent_messages = pg_recent_messages,
  .dedupe_each = pg_dedupe_each,
  .dedupe_get = pg_dedupe_get,
  .cursors = pg_cursors,
  .hook_positions = pg_hook_positions,
  .hook_pos_get = pg_hook_pos_get,
  .read_begin = pg_read_begin,
  .read_end = pg_read_end,
  .stats = pg_stats,
  .rooms_list = pg_rooms_list,
  .room_locks = pg_room_locks,
  .rooms_get = pg_rooms_get,
  .release_locks_of = pg_release_locks_of,
  .fetch = pg_fetch_start,
  .fetch_rooms = pg_fetch_rooms,
  .fetch_log = pg_fetch_log,
  .fetch_list = pg_fetch_list,
  .fetch_dedupe = pg_fetch_dedupe,
  .fetch_changes = pg_fetch_changes,
  .release_locks_async = pg_release_locks_async,
  .read_counts = pg_read_counts,
  .commit = pg_commit,
};
