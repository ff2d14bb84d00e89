/* pg_read.c -- the reads of the PostgreSQL backend (store.h): a second
** connection, separate from the commit's, used only by the loop thread.
**
** The store.h reads are synchronous. Each one is ONE round trip (Parse,
** Bind, Execute, Sync in one write, libpq's extended protocol) sent with
** the non-blocking API and waited for with poll(2) against a deadline
** (PG_READ_MS): the loop can never be held longer than that. Past the
** deadline, or when the connection fails, the connection is dropped (the
** server sees the socket close and ends the query) and the call returns
** WSY_IO; the next read connects again. Results come back as text and are
** copied out, so a callback may do what it likes except read again. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pg_int.h"

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until the read connection's socket is ready for events, or the
** deadline passes (0). */
static int wait_sock(PGconn *c, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - mono_ms();
    if (left <= 0) return 0;
    struct pollfd p = {.fd = PQsocket(c), .events = events};
    if (p.fd < 0) return 0;
    int n = poll(&p, 1, (int)left);
    if (n > 0) return 1;
    if (n < 0 && errno != EINTR) return 0;
  }
}

void pgr_drop(pg_store *s) {
  if (s->rc) PQfinish(s->rc);
  s->rc = NULL;
  s->in_read = 0;
}

int pgr_ensure(pg_store *s) {
  if (s->rc && PQstatus(s->rc) == CONNECTION_OK) return WSY_OK;
  pgr_drop(s);
  PGconn *c = pg_connect_start(s->url, "wsync-read");
  if (!c) return WSY_NOMEM;
  int64_t deadline = mono_ms() + PG_CONNECT_MS;
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
    if (!wait_sock(c, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline)) break;
    st = PQconnectPoll(c);
  }
  if (st != PGRES_POLLING_OK || PQsetnonblocking(c, 1) != 0) {
    snprintf(s->conn_err, sizeof s->conn_err, "%s", st == PGRES_POLLING_OK || st == PGRES_POLLING_FAILED
             ? PQerrorMessage(c) : "no answer within the connect timeout");
    size_t n = strlen(s->conn_err);
    while (n && s->conn_err[n - 1] == '\n') s->conn_err[--n] = '\0';
    PQfinish(c);
    return WSY_IO;
  }
  s->rc = c;
  return WSY_OK;
}

int pgr_exec(pg_store *s, const char *sql, int n, const char *const *vals, unsigned deadline_ms,
             PGresult **out, char *err, size_t errlen) {
  *out = NULL;
  int rc = pgr_ensure(s);
  if (rc) {
    if (err) snprintf(err, errlen, "cannot connect to PostgreSQL");
    return rc;
  }
  int64_t deadline = mono_ms() + deadline_ms;
  PGconn *c = s->rc;
  /* Without parameters the simple protocol, which allows several
  ** statements (the migrations). */
  if (!(vals ? PQsendQueryParams(c, sql, n, NULL, vals, NULL, NULL, 0) : PQsendQuery(c, sql))) goto lost;
  int f;
  while ((f = PQflush(c)) == 1)
    if (!wait_sock(c, POLLIN | POLLOUT, deadline) || !PQconsumeInput(c)) goto lost;
  if (f < 0) goto lost;
  PGresult *first = NULL, *r;
  for (;;) {
    while (PQisBusy(c))
      if (!wait_sock(c, POLLIN, deadline) || !PQconsumeInput(c)) {
        PQclear(first);
        goto lost;
      }
    if (!(r = PQgetResult(c))) break;
    ExecStatusType rs = PQresultStatus(r);
    ExecStatusType fs = first ? PQresultStatus(first) : PGRES_FATAL_ERROR;
    int r_ok = rs == PGRES_TUPLES_OK || rs == PGRES_COMMAND_OK, f_ok = fs == PGRES_TUPLES_OK || fs == PGRES_COMMAND_OK;
    if (!first || (!r_ok && f_ok)) { /* keep the first error */
      PQclear(first);
      first = r;
    } else {
      PQclear(r);
    }
  }
  ExecStatusType es = first ? PQresultStatus(first) : PGRES_FATAL_ERROR;
  if (es == PGRES_TUPLES_OK || es == PGRES_COMMAND_OK) {
    *out = first;
    return WSY_OK;
  }
  if (err) snprintf(err, errlen, "%s", first ? PQresultErrorMessage(first) : PQerrorMessage(c));
  rc = first ? pg_map_result(first) : WSY_IO;
  PQclear(first);
  if (PQstatus(c) != CONNECTION_OK) pgr_drop(s);
  return rc;
lost:
  /* Timed out or broken: the state of the protocol is unknown, so the
  ** connection goes; closing it also ends the query on the server. */
  if (err) snprintf(err, errlen, "PostgreSQL did not answer: %s", PQerrorMessage(c));
  pgr_drop(s);
  return WSY_IO;
}

/* One read. A connection found broken at once (PostgreSQL restarted since
** the last read) is made again and the read tried once more, unless a read
** snapshot was open on it (that snapshot is gone: the caller starts over). A
** read that timed out is not tried again: the deadline bounds the wait. */
static int q(pg_store *s, const char *sql, int n, const char *const *vals, PGresult **out) {
  int had = s->rc != NULL, in_read = s->in_read;
  s->reads_sync++;
  int64_t t0 = mono_ms();
  int rc = pgr_exec(s, sql, n, vals, s->read_ms, out, NULL, 0);
  if (rc == WSY_IO && had && !in_read && !s->rc && mono_ms() - t0 < (int64_t)s->read_ms / 2)
    rc = pgr_exec(s, sql, n, vals, s->read_ms, out, NULL, 0);
  return rc;
}

static uint64_t u64(const PGresult *r, int row, int col) {
  return (uint64_t)strtoull(PQgetvalue(r, row, col), NULL, 10);
}

static void u64s(char out[24], uint64_t v) {
  snprintf(out, 24, "%" PRIu64, v > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : v);
}

static void copy_epoch(char dst[STORE_EPOCH_MAX + 1], const PGresult *r, int row, int col) {
  int len = PQgetlength(r, row, col);
  if (len > 0 && len <= STORE_EPOCH_MAX) memcpy(dst, PQgetvalue(r, row, col), (size_t)len);
}

#define PG(bs) ((pg_store *)(bs))

/* ---- one room's reads: the SQL (pg_fetch.c sends the same) and the rows -- */

const char *const pg_sql_room[PQ__COUNT] = {
  [PQ_ROOM] = "SELECT epoch, seq, min_seq, created_at, lockver, head FROM rooms WHERE name = $1",
  [PQ_ITEMS] = "SELECT item, fields, version, revs FROM items WHERE room = $1 ORDER BY item",
  [PQ_TEXTS] = "SELECT item, field, rev, seq, ops FROM texts WHERE room = $1 ORDER BY item, field, rev",
  [PQ_CURSORS] = "SELECT \"user\", device, seq, updated_at FROM cursors WHERE room = $1 ORDER BY \"user\", device",
  [PQ_LOCKS] = "SELECT item, holder, \"user\", device, fence, expires, ver FROM locks WHERE room = $1 ORDER BY item",
  [PQ_LOG] = "SELECT seq, msg FROM ops WHERE room = $1 AND seq > $2 ORDER BY seq LIMIT $3",
  /* Publishes are the log entries the engine encodes as type "message",
  ** which it always writes first (as SQLite's query). */
  [PQ_RECENT] = "SELECT seq, msg FROM (SELECT seq, msg FROM ops WHERE room = $1 AND item IS NULL"
                " AND starts_with(msg, '{\"type\":\"message\"') ORDER BY seq DESC LIMIT $2) m ORDER BY seq",
};

/* PQ_ITEMS of a fetch with STORE_FETCH_CHANGES: every item, with its
 * fields and revisions only when written after $2 or named in $3. */
const char pg_sql_items_changed[] =
  "SELECT item, CASE WHEN version > $2 OR item = ANY($3::text[]) THEN fields END, version,"
  " CASE WHEN version > $2 OR item = ANY($3::text[]) THEN revs END FROM items WHERE room = $1 ORDER BY item";

void pg_row_room(const PGresult *r, store_room_info *out) {
  memset(out, 0, sizeof *out);
  if (PQntuples(r) != 1) return;
  copy_epoch(out->epoch, r, 0, 0);
  out->seq = u64(r, 0, 1);
  out->min_seq = u64(r, 0, 2);
  out->created_ms = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
  out->lockver = u64(r, 0, 4);
  int hl = PQgetisnull(r, 0, 5) ? 0 : PQgetlength(r, 0, 5);
  if (hl > 0 && hl <= STORE_HEAD_MAX) memcpy(out->head, PQgetvalue(r, 0, 5), (size_t)hl);
  out->exists = 1;
}

int pg_rows_items(const PGresult *r, store_item_cb cb, void *ud) {
  int rc = 0;
  for (int i = 0; !rc && i < PQntuples(r); i++)
    rc = cb(PQgetvalue(r, i, 0), PQgetisnull(r, i, 1) ? NULL : PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1),
            PQgetisnull(r, i, 3) ? NULL : PQgetvalue(r, i, 3), u64(r, i, 2), ud);
  return rc;
}

int pg_rows_texts(const PGresult *r, store_text_cb cb, void *ud) {
  int rc = 0;
  for (int i = 0; !rc && i < PQntuples(r); i++)
    rc = cb(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), u64(r, i, 2), u64(r, i, 3), PQgetvalue(r, i, 4),
            (size_t)PQgetlength(r, i, 4), ud);
  return rc;
}

int pg_rows_cursors(const PGresult *r, store_cursor_cb cb, void *ud) {
  int rc = 0;
  for (int i = 0; !rc && i < PQntuples(r); i++)
    rc = cb(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), u64(r, i, 2), strtoll(PQgetvalue(r, i, 3), NULL, 10), ud);
  return rc;
}

int pg_rows_locks(const PGresult *r, store_lock_cb cb, void *ud) {
  int rc = 0;
  for (int i = 0; !rc && i < PQntuples(r); i++) {
    int held = !PQgetisnull(r, i, 1);
    rc = cb(PQgetvalue(r, i, 0), held ? PQgetvalue(r, i, 1) : NULL, held ? PQgetvalue(r, i, 2) : NULL,
            held ? PQgetvalue(r, i, 3) : NULL, u64(r, i, 4), strtoll(PQgetvalue(r, i, 5), NULL, 10), u64(r, i, 6),
            ud);
  }
  return rc;
}

int pg_rows_log(const PGresult *r, uint64_t after_seq, size_t limit, store_history_cb cb, void *ud) {
  int rc = 0;
  size_t n = 0;
  for (int i = 0; !rc && i < PQntuples(r) && (!limit || n < limit); i++) {
    uint64_t seq = u64(r, i, 0);
    if (seq <= after_seq) continue;
    n++;
    rc = cb(seq, PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1), ud);
  }
  return rc;
}

/* One statement, one transaction: the rows released (their versions
** raised) and their rooms' lock versions raised together (a decision made
** on the old locks elsewhere is fenced out). */
const char pg_sql_release_locks[] =
  "WITH rel AS (UPDATE locks SET holder = NULL, \"user\" = NULL, device = NULL, ver = ver + 1"
  " WHERE starts_with(holder, $1) RETURNING room, item, fence),"
  " bump AS (UPDATE rooms SET lockver = lockver + 1 WHERE name IN (SELECT room FROM rel))"
  " SELECT room, item, fence FROM rel ORDER BY room, item";

int pg_rows_released(const PGresult *r, store_release_cb cb, void *ud) {
  int rc = 0;
  for (int i = 0; !rc && i < PQntuples(r); i++) rc = cb(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), u64(r, i, 2), ud);
  return rc;
}

int pg_release_locks_of(store *bs, const char *prefix, store_release_cb cb, void *ud) {
  if (!prefix || !*prefix || !cb) return WSY_INVAL;
  PGresult *r;
  const char *v[] = {prefix};
  int rc = q(PG(bs), pg_sql_release_locks, 1, v, &r);
  if (!rc) rc = pg_rows_released(r, cb, ud);
  PQclear(r);
  return rc;
}

int pg_room_get(store *bs, const char *room, store_room_info *out) {
  memset(out, 0, sizeof *out);
  if (!room) return WSY_INVAL;
  PGresult *r;
  const char *v[] = {room};
  int rc = q(PG(bs), pg_sql_room[PQ_ROOM], 1, v, &r);
  if (rc) return rc;
  pg_row_room(r, out);
  PQclear(r);
  return WSY_OK;
}

/* One room's rows of kind k, handed to walk. */
#define ROOM_ROWS(k, walk)                                                                                       \
  do {                                                                                                           \
    if (!room || !cb) return WSY_INVAL;                                                                          \
    PGresult *r;                                                                                                 \
    const char *v[] = {room};                                                                                    \
    int rc = q(PG(bs), pg_sql_room[k], 1, v, &r);                                                                \
    if (!rc) rc = walk(r, cb, ud);                                                                               \
    PQclear(r);                                                                                                  \
    return rc;                                                                                                   \
  } while (0)

int pg_room_locks(store *bs, const char *room, store_lock_cb cb, void *ud) { ROOM_ROWS(PQ_LOCKS, pg_rows_locks); }
int pg_room_items(store *bs, const char *room, store_item_cb cb, void *ud) { ROOM_ROWS(PQ_ITEMS, pg_rows_items); }
int pg_room_texts(store *bs, const char *room, store_text_cb cb, void *ud) { ROOM_ROWS(PQ_TEXTS, pg_rows_texts); }

/* Hands each (seq, msg) row to cb. */
static int walk_log(pg_store *s, const char *sql, int n, const char *const *v, store_history_cb cb, void *ud) {
  PGresult *r;
  int rc = q(s, sql, n, v, &r);
  if (!rc) rc = pg_rows_log(r, 0, 0, cb, ud);
  PQclear(r);
  return rc;
}

int pg_history(store *bs, const char *room, uint64_t after_seq, size_t limit, store_history_cb cb, void *ud) {
  if (!room || !cb) return WSY_INVAL;
  char after[24], lim[24];
  u64s(after, after_seq);
  u64s(lim, limit);
  const char *v[] = {room, after, limit ? lim : NULL}; /* LIMIT NULL: no limit */
  return walk_log(PG(bs), pg_sql_room[PQ_LOG], 3, v, cb, ud);
}

int pg_recent_messages(store *bs, const char *room, size_t limit, store_history_cb cb, void *ud) {
  if (!room || !cb) return WSY_INVAL;
  char lim[24];
  u64s(lim, limit);
  const char *v[] = {room, lim};
  return walk_log(PG(bs), pg_sql_room[PQ_RECENT], 2, v, cb, ud);
}

/* The records come in pages of PG_DEDUPE_PAGE keys in key order, each page
** its own read (and deadline): a node starts whatever the number of
** records, where one read of them all failed its deadline past a few
** million and held them all in one result. The log's records (schema 5)
** first, then the table's: a key may be in both. */
#define PG_DEDUPE_PAGE "50000"
static const char *const dedupe_pages[2][2] = {
  {"SELECT device, cid FROM ops WHERE device IS NOT NULL AND cid IS NOT NULL"
   " ORDER BY device, cid LIMIT " PG_DEDUPE_PAGE,
   "SELECT device, cid FROM ops WHERE device IS NOT NULL AND cid IS NOT NULL AND (device, cid) > ($1, $2)"
   " ORDER BY device, cid LIMIT " PG_DEDUPE_PAGE},
  {"SELECT device, cid FROM dedupe ORDER BY device, cid LIMIT " PG_DEDUPE_PAGE,
   "SELECT device, cid FROM dedupe WHERE (device, cid) > ($1, $2) ORDER BY device, cid LIMIT " PG_DEDUPE_PAGE},
};

int pg_dedupe_each(store *bs, store_dedupe_cb cb, void *ud) {
  if (!cb) return WSY_INVAL;
  int rc = 0;
  for (int t = 0; t < 2 && !rc; t++) {
    char *after[2] = {NULL, NULL};
    for (int more = 1; more && !rc;) {
      PGresult *r;
      rc = after[0] ? q(PG(bs), dedupe_pages[t][1], 2, (const char *const *)after, &r)
                    : q(PG(bs), dedupe_pages[t][0], 0, NULL, &r);
      if (rc) break;
      int n = PQntuples(r);
      for (int i = 0; !rc && i < n; i++) rc = cb(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), ud);
      more = n == atoi(PG_DEDUPE_PAGE);
      if (n > 0) {
        for (int c = 0; c < 2; c++) {
          free(after[c]);
          after[c] = strdup(PQgetvalue(r, n - 1, c));
          if (!after[c]) rc = WSY_NOMEM;
        }
      }
      PQclear(r);
    }
    free(after[0]);
    free(after[1]);
  }
  return rc;
}

const char pg_sql_dedupe_get[] = "SELECT room, seq FROM ops WHERE device = $1 AND cid = $2"
                                 " UNION ALL SELECT room, seq FROM dedupe WHERE device = $1 AND cid = $2 LIMIT 1";

int pg_row_dedupe(const PGresult *r, char room_out[STORE_ROOM_MAX + 1], uint64_t *seq_out) {
  if (PQntuples(r) == 0) return WSY_NOT_FOUND;
  int len = PQgetlength(r, 0, 0);
  if (len <= 0 || len > STORE_ROOM_MAX) return WSY_IO; /* the schema's CHECK forbids it */
  if (room_out) {
    memcpy(room_out, PQgetvalue(r, 0, 0), (size_t)len);
    room_out[len] = '\0';
  }
  if (seq_out) *seq_out = u64(r, 0, 1);
  return WSY_OK;
}

int pg_dedupe_get(store *bs, const char *dkey, const char *cid, char room_out[STORE_ROOM_MAX + 1],
                  uint64_t *seq_out) {
  if (!dkey || !cid) return WSY_INVAL;
  PGresult *r;
  const char *v[] = {dkey, cid};
  int rc = q(PG(bs), pg_sql_dedupe_get, 2, v, &r);
  if (rc) return rc;
  rc = pg_row_dedupe(r, room_out, seq_out);
  PQclear(r);
  return rc;
}

int pg_cursors(store *bs, const char *room, store_cursor_cb cb, void *ud) { ROOM_ROWS(PQ_CURSORS, pg_rows_cursors); }

int pg_hook_positions(store *bs, const char *hook, store_hook_pos_cb cb, void *ud) {
  if (!hook || !cb) return WSY_INVAL;
  PGresult *r;
  const char *v[] = {hook};
  int rc = q(PG(bs), "SELECT room, epoch, seq FROM hook_pos WHERE hook = $1", 1, v, &r);
  for (int i = 0; !rc && i < PQntuples(r); i++) rc = cb(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), u64(r, i, 2), ud);
  PQclear(r);
  return rc;
}

int pg_hook_pos_get(store *bs, const char *hook, const char *room, const char *epoch, uint64_t *seq_out) {
  *seq_out = 0;
  if (!hook || !room || !epoch) return WSY_INVAL;
  PGresult *r;
  const char *v[] = {hook, room};
  int rc = q(PG(bs), "SELECT epoch, seq FROM hook_pos WHERE hook = $1 AND room = $2", 2, v, &r);
  if (rc) return rc;
  if (PQntuples(r) == 1 && !strcmp(PQgetvalue(r, 0, 0), epoch)) *seq_out = u64(r, 0, 1);
  PQclear(r);
  return WSY_OK;
}

/* A snapshot: REPEATABLE READ takes it at the first read after BEGIN. */
int pg_read_begin(store *bs) {
  pg_store *s = PG(bs);
  if (s->in_read) return WSY_INVAL; /* not nested */
  PGresult *r;
  int rc = q(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, &r);
  if (rc) return rc;
  PQclear(r);
  s->in_read = 1;
  return WSY_OK;
}

int pg_read_end(store *bs) {
  pg_store *s = PG(bs);
  if (!s->in_read) return WSY_OK; /* the connection dropped meanwhile: nothing is open */
  s->in_read = 0;
  PGresult *r;
  int rc = q(s, "COMMIT", 0, NULL, &r);
  if (!rc) PQclear(r);
  return rc;
}

void pg_read_counts(store *bs, uint64_t *sync_reads, uint64_t *fetches, uint64_t *fetch_failures) {
  pg_store *s = PG(bs);
  *sync_reads = s->reads_sync;
  *fetches = s->fetches;
  *fetch_failures = s->fetch_failures;
}

int pg_stats(store *bs, store_stats_info *out) {
  pg_store *s = PG(bs);
  memset(out, 0, sizeof *out);
  out->durability_full = s->durability_full;
  PGresult *r;
  int rc = q(s, "SELECT (SELECT max(version) FROM wsync_schema), pg_database_size(current_database())", 0, NULL, &r);
  if (rc) return rc;
  out->schema_version = (int)u64(r, 0, 0);
  out->db_bytes = u64(r, 0, 1);
  PQclear(r);
  return WSY_OK;
}

/* Rooms' rows as store_rooms_get and store_rooms_list give them. */
#define ROOM_COLS "name, epoch, seq, min_seq, created_at, lockver, head"

int pg_rows_rooms(const PGresult *r, store_room_cb cb, void *ud) {
  int rc = 0;
  for (int i = 0; !rc && i < PQntuples(r); i++) {
    store_room_info info = {.exists = 1};
    copy_epoch(info.epoch, r, i, 1);
    info.seq = u64(r, i, 2);
    info.min_seq = u64(r, i, 3);
    info.created_ms = strtoll(PQgetvalue(r, i, 4), NULL, 10);
    info.lockver = u64(r, i, 5);
    int hl = PQgetisnull(r, i, 6) ? 0 : PQgetlength(r, i, 6);
    if (hl > 0 && hl <= STORE_HEAD_MAX) memcpy(info.head, PQgetvalue(r, i, 6), (size_t)hl);
    rc = cb(PQgetvalue(r, i, 0), &info, ud);
  }
  return rc;
}

const char pg_sql_rooms[] = "SELECT " ROOM_COLS " FROM rooms WHERE name = ANY($1::text[])";
const char pg_sql_rooms_list[] = "SELECT " ROOM_COLS " FROM rooms WHERE name > $1 ORDER BY name LIMIT $2";

/* names as one text[] literal, NUL-terminated, in lit (initialized here;
 * the caller frees it, also on failure). */
int pg_rooms_literal(const char *const *names, size_t n, buf *lit) {
  buf_init(lit, (size_t)64 << 20);
  int rc = buf_append(lit, "{", 1);
  for (size_t i = 0; i < n && !rc; i++) {
    rc = buf_append(lit, i ? ",\"" : "\"", i ? 2 : 1);
    for (const char *p = names[i]; *p && !rc; p++) {
      if (*p == '"' || *p == '\\') rc = buf_append(lit, "\\", 1);
      if (!rc) rc = buf_append(lit, p, 1);
    }
    if (!rc) rc = buf_append(lit, "\"", 1);
  }
  if (!rc) rc = buf_append(lit, "}", 2); /* with the NUL */
  return rc;
}

/* Several rooms' rows in one round trip: names as one text[] literal. */
int pg_rooms_get(store *bs, const char *const *names, size_t n, store_room_cb cb, void *ud) {
  if (!cb || (n && !names)) return WSY_INVAL;
  if (!n) return WSY_OK;
  buf lit;
  int rc = pg_rooms_literal(names, n, &lit);
  PGresult *r = NULL;
  const char *v[] = {(const char *)lit.data};
  if (!rc) rc = q(PG(bs), pg_sql_rooms, 1, v, &r);
  buf_free(&lit);
  if (!rc) rc = pg_rows_rooms(r, cb, ud);
  PQclear(r);
  return rc;
}

int pg_rooms_list(store *bs, const char *after, size_t limit, store_room_cb cb, void *ud) {
  if (!cb) return WSY_INVAL;
  char lim[24];
  u64s(lim, limit);
  const char *v[] = {after ? after : "", limit ? lim : NULL};
  PGresult *r;
  int rc = q(PG(bs), pg_sql_rooms_list, 2, v, &r);
  if (!rc) rc = pg_rows_rooms(r, cb, ud);
  PQclear(r);
  return rc;
}
