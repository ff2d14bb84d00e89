/* pg_fetch.c -- asynchronous reads of one room (store.h, store_fetch): a
** third connection, non-blocking in pipeline mode on a uv_poll, so that a
** node of a cluster reads a replica again without blocking its loop.
**
** A fetch is one snapshot: BEGIN REPEATABLE READ READ ONLY, the room's
** row, what its flags ask for (the state a load reads, the log after a
** seq), COMMIT, Sync; the queries are those of the synchronous reads
** (pg_sql_room) and their rows are read by the same walkers. Fetches are
** sent as they come, several in flight at once, and answered in order when
** their Sync arrives: cb gets a read-only store (pg_snap below) answering
** from the results. Deadlines: PG_CONNECT_MS to connect, read_ms for the
** oldest fetch in flight; past it, or when the connection breaks, every
** fetch in flight or waiting fails (WSY_IO) and the next one connects
** again. An idle connection does not keep the loop alive. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

#define NQ (PQ__COUNT + 2) /* the queries of a fetch at most, BEGIN and COMMIT included */

struct pg_fetch {
  struct pg_fetch *next;
  char *room;  /* NULL for a fetch of several rooms' rows (rooms, list) */
  buf rooms;   /* their names as a text[] literal (store_fetch_rooms); store_fetch_changes: its items */
  char *list;  /* store_fetch_list: the name the rooms listed come after */
  char *dkey, *cid; /* store_fetch_dedupe: the record read */
  char *release;    /* store_release_locks_async: the holders' prefix (a write) */
  int flags;
  uint64_t after;
  size_t limit; /* of the log's rows; 0: all */
  store_fetch_cb cb;
  void *ud;
  int kind[NQ];        /* what each query sent is: PQ_*, or -1 (BEGIN, COMMIT) */
  int nq, nres;        /* queries sent, results read */
  PGresult *res[PQ__COUNT];
  int rc;
  char err[160];
};

/* ---- the snapshot: a read-only store over one fetch's results ------------ */

typedef struct pg_snap {
  store base;
  const pg_fetch *f;
} pg_snap;

#define SNAP(bs) (((pg_snap *)(bs))->f)

/* The result of kind k for room, or NULL when the fetch did not read it. */
static const PGresult *snap_res(store *bs, const char *room, int k) {
  const pg_fetch *f = SNAP(bs);
  return room && f->room && !strcmp(room, f->room) ? f->res[k] : NULL;
}

static int snap_room_get(store *bs, const char *room, store_room_info *out) {
  const PGresult *r = snap_res(bs, room, PQ_ROOM);
  memset(out, 0, sizeof *out);
  if (!r) return WSY_INVAL;
  pg_row_room(r, out);
  return WSY_OK;
}
static int snap_items(store *bs, const char *room, store_item_cb cb, void *ud) {
  const PGresult *r = snap_res(bs, room, PQ_ITEMS);
  return r ? pg_rows_items(r, cb, ud) : WSY_INVAL;
}
static int snap_texts(store *bs, const char *room, store_text_cb cb, void *ud) {
  const PGresult *r = snap_res(bs, room, PQ_TEXTS);
  return r ? pg_rows_texts(r, cb, ud) : WSY_INVAL;
}
static int snap_cursors(store *bs, const char *room, store_cursor_cb cb, void *ud) {
  const PGresult *r = snap_res(bs, room, PQ_CURSORS);
  return r ? pg_rows_cursors(r, cb, ud) : WSY_INVAL;
}
static int snap_locks(store *bs, const char *room, store_lock_cb cb, void *ud) {
  const PGresult *r = snap_res(bs, room, PQ_LOCKS);
  return r ? pg_rows_locks(r, cb, ud) : WSY_INVAL;
}
static int snap_history(store *bs, const char *room, uint64_t after, size_t limit, store_history_cb cb, void *ud) {
  const PGresult *r = snap_res(bs, room, PQ_LOG);
  if (!r || after < SNAP(bs)->after) return WSY_INVAL; /* not in the snapshot */
  return pg_rows_log(r, after, limit, cb, ud);
}
static int snap_rooms_get(store *bs, const char *const *names, size_t n, store_room_cb cb, void *ud) {
  (void)names, (void)n;
  const pg_fetch *f = SNAP(bs);
  return f->room || f->list || !f->res[PQ_ROOM] ? WSY_INVAL : pg_rows_rooms(f->res[PQ_ROOM], cb, ud);
}
static int snap_nothing(store *bs) {
  (void)bs;
  return WSY_OK; /* read_begin/end: it is one snapshot already */
}
/* What a snapshot does not hold. */
static void snap_close(store *bs) { (void)bs; }
static int snap_recent(store *bs, const char *room, size_t limit, store_history_cb cb, void *ud) {
  const PGresult *r = snap_res(bs, room, PQ_RECENT);
  if (!r || limit > STORE_FETCH_RECENT_MAX) return WSY_INVAL; /* not in the snapshot */
  size_t n = (size_t)PQntuples(r);
  if (!limit || n <= limit) return pg_rows_log(r, 0, 0, cb, ud);
  return pg_rows_log(r, strtoull(PQgetvalue(r, (int)(n - limit - 1), 0), NULL, 10), 0, cb, ud); /* the last limit */
}
static int snap_dedupe_each(store *bs, store_dedupe_cb cb, void *ud) {
  (void)bs, (void)cb, (void)ud;
  return WSY_INVAL;
}
static int snap_dedupe_get(store *bs, const char *dkey, const char *cid, char room_out[STORE_ROOM_MAX + 1],
                           uint64_t *seq_out) {
  const pg_fetch *f = SNAP(bs);
  if (!f->dkey || !dkey || !cid || strcmp(dkey, f->dkey) != 0 || strcmp(cid, f->cid) != 0 || !f->res[PQ_ROOM])
    return WSY_INVAL; /* not the record this fetch read */
  return pg_row_dedupe(f->res[PQ_ROOM], room_out, seq_out);
}
static int snap_hook_positions(store *bs, const char *hook, store_hook_pos_cb cb, void *ud) {
  (void)bs, (void)hook, (void)cb, (void)ud;
  return WSY_INVAL;
}
static int snap_hook_pos_get(store *bs, const char *hook, const char *room, const char *epoch, uint64_t *seq_out) {
  (void)bs, (void)hook, (void)room, (void)epoch, (void)seq_out;
  return WSY_INVAL;
}
static int snap_stats(store *bs, store_stats_info *out) {
  (void)bs;
  memset(out, 0, sizeof *out);
  return WSY_INVAL;
}
static int snap_rooms_list(store *bs, const char *after, size_t limit, store_room_cb cb, void *ud) {
  (void)after, (void)limit;
  const pg_fetch *f = SNAP(bs);
  return !f->list || !f->res[PQ_ROOM] ? WSY_INVAL : pg_rows_rooms(f->res[PQ_ROOM], cb, ud);
}
static int snap_release_locks_of(store *bs, const char *prefix, store_release_cb cb, void *ud) {
  const pg_fetch *f = SNAP(bs);
  if (!f->release || !prefix || strcmp(prefix, f->release) != 0 || !f->res[PQ_ROOM]) return WSY_INVAL;
  return pg_rows_released(f->res[PQ_ROOM], cb, ud);
}
static void snap_commit(store *bs, store_batch *b, store_commit_cb cb, void *ud) {
  (void)bs, (void)b, (void)cb, (void)ud;
  abort(); /* a snapshot is read-only: a caller committing to it is a bug */
}

static const store_ops snap_ops = {
  .name = "postgres-snapshot",
  .close = snap_close,
  .room_get = snap_room_get,
  .room_items = snap_items,
  .room_texts = snap_texts,
  .history = snap_history,
  .recent_messages = snap_recent,
  .dedupe_each = snap_dedupe_each,
  .dedupe_get = snap_dedupe_get,
  .cursors = snap_cursors,
  .hook_positions = snap_hook_positions,
  .hook_pos_get = snap_hook_pos_get,
  .read_begin = snap_nothing,
  .read_end = snap_nothing,
  .stats = snap_stats,
  .room_locks = snap_locks,
  .rooms_list = snap_rooms_list,
  .release_locks_of = snap_release_locks_of,
  .rooms_get = snap_rooms_get,
  .commit = snap_commit,
};

/* ---- the connection ------------------------------------------------------- */

static void fetch_free(pg_fetch *f) {
  for (int k = 0; k < PQ__COUNT; k++) PQclear(f->res[k]);
  if (!f->room || f->rooms.data) buf_free(&f->rooms);
  wsy_free(f->room);
  wsy_free(f->list);
  wsy_free(f->dkey);
  wsy_free(f->release);
  wsy_free(f->cid);
  wsy_free(f);
}

/* Answers f (taken off every list) and frees it. */
static void answer(pg_store *s, pg_fetch *f) {
  s->fetches++;
  if (f->rc) {
    s->fetch_failures++;
    f->cb(f->ud, f->rc, NULL);
  } else {
    pg_snap snap = {.base = {.ops = &snap_ops}, .f = f};
    f->cb(f->ud, 0, &snap.base);
  }
  fetch_free(f);
}

static void free_fpoll(uv_handle_t *h) { wsy_free(h); }

static void fc_drop(pg_store *s) {
  if (s->fpoll) {
    uv_poll_stop(s->fpoll);
    uv_close((uv_handle_t *)s->fpoll, free_fpoll);
    s->fpoll = NULL;
  }
  if (s->fc) PQfinish(s->fc);
  s->fc = NULL;
  s->fstate = PC_DOWN;
  uv_timer_stop(&s->ftimer);
}

/* Every fetch in flight or waiting fails with rc (the connection goes). */
static void fail_all(pg_store *s, int rc, const char *why) {
  fc_drop(s);
  pg_fetch *list = s->ff_head;
  pg_fetch **tail = list ? s->ff_tail : &list;
  *tail = s->fq_head; /* in flight first, then waiting: their order */
  s->ff_head = s->fq_head = NULL;
  s->ff_tail = &s->ff_head;
  s->fq_tail = &s->fq_head;
  for (pg_fetch *f = list, *next; f; f = next) {
    next = f->next;
    f->rc = rc;
    snprintf(f->err, sizeof f->err, "%s", why);
    answer(s, f);
  }
}

static void on_fpoll(uv_poll_t *h, int status, int events);

static int fc_watch(pg_store *s, int events) {
  int fd = PQsocket(s->fc);
  uv_os_fd_t cur = -1;
  if (s->fpoll && (uv_fileno((uv_handle_t *)s->fpoll, &cur) != 0 || cur != fd)) {
    uv_poll_stop(s->fpoll);
    uv_close((uv_handle_t *)s->fpoll, free_fpoll);
    s->fpoll = NULL;
  }
  if (fd < 0) return WSY_IO;
  if (!s->fpoll) {
    s->fpoll = wsy_calloc(1, sizeof *s->fpoll);
    if (uv_poll_init_socket(s->loop, s->fpoll, fd) != 0) {
      wsy_free(s->fpoll);
      s->fpoll = NULL;
      return WSY_IO;
    }
    s->fpoll->data = s;
  }
  if (s->fstate == PC_IDLE) uv_unref((uv_handle_t *)s->fpoll);
  else uv_ref((uv_handle_t *)s->fpoll);
  return uv_poll_start(s->fpoll, events, on_fpoll) ? WSY_IO : WSY_OK;
}

static void on_ftimer(uv_timer_t *t) {
  pg_store *s = t->data;
  fail_all(s, WSY_IO, s->fstate == PC_CONNECTING ? "cannot connect to PostgreSQL (timed out)"
                                                 : "PostgreSQL did not answer a read in time");
}

/* Queues f's queries and its Sync on the connection. */
static int send_fetch(pg_store *s, pg_fetch *f) {
  char after[24], limit[24];
  snprintf(after, sizeof after, "%" PRIu64, f->after > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : f->after);
  snprintf(limit, sizeof limit, "%zu", f->limit);
  const char *v[] = {f->room, after, f->limit ? limit : NULL}; /* LIMIT NULL: all */
  f->nq = 0;
  /* One snapshot for the reads of a fetch; the release of a gone node's
   * locks is the one write made on this connection. */
  const char *begin = f->release ? "BEGIN" : "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
  if (!PQsendQueryParams(s->fc, begin, 0, NULL, NULL, NULL, NULL, 0)) return WSY_IO;
  f->kind[f->nq++] = -1;
  if (f->release) { /* the rows released, kept where one room's row goes */
    const char *pv[] = {f->release};
    if (!PQsendQueryParams(s->fc, pg_sql_release_locks, 1, NULL, pv, NULL, NULL, 0)) return WSY_IO;
    f->kind[f->nq++] = PQ_ROOM;
  } else if (f->dkey) { /* a dedupe record, kept where one room's row goes */
    const char *dv[] = {f->dkey, f->cid};
    if (!PQsendQueryParams(s->fc, pg_sql_dedupe_get, 2, NULL, dv, NULL, NULL, 0)) return WSY_IO;
    f->kind[f->nq++] = PQ_ROOM;
  } else if (f->list) { /* rooms by name, kept where one room's row goes */
    const char *lv[] = {f->list, limit};
    if (!PQsendQueryParams(s->fc, pg_sql_rooms_list, 2, NULL, lv, NULL, NULL, 0)) return WSY_IO;
    f->kind[f->nq++] = PQ_ROOM;
  } else if (!f->room) { /* several rooms' rows, kept where one room's row goes */
    const char *rv[] = {(const char *)f->rooms.data};
    if (!PQsendQueryParams(s->fc, pg_sql_rooms, 1, NULL, rv, NULL, NULL, 0)) return WSY_IO;
    f->kind[f->nq++] = PQ_ROOM;
  }
  for (int k = 0; k < PQ__COUNT && f->room; k++) {
    int want = k == PQ_ROOM || (k == PQ_LOG      ? (f->flags & STORE_FETCH_LOG)
                                : k == PQ_RECENT ? (f->flags & STORE_FETCH_RECENT)
                                                 : (f->flags & STORE_FETCH_STATE));
    if (!want) continue;
    int changes = k == PQ_ITEMS && (f->flags & STORE_FETCH_CHANGES);
    const char *cv[] = {f->room, after, f->rooms.data ? (const char *)f->rooms.data : "{}"};
    const char *rv[] = {f->room, STORE_FETCH_RECENT_MAX_S};
    const char *sql = changes ? pg_sql_items_changed : pg_sql_room[k];
    const char *const *pv = changes ? cv : k == PQ_RECENT ? rv : v;
    if (!PQsendQueryParams(s->fc, sql, k == PQ_LOG || changes ? 3 : k == PQ_RECENT ? 2 : 1, NULL, pv, NULL, NULL, 0))
      return WSY_IO;
    f->kind[f->nq++] = k;
  }
  if (!PQsendQueryParams(s->fc, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) || !PQpipelineSync(s->fc)) return WSY_IO;
  f->kind[f->nq++] = -1;
  return WSY_OK;
}

/* Sends every waiting fetch; watches for their answers. */
static void send_waiting(pg_store *s) {
  int sent = 0;
  while (s->fq_head) {
    pg_fetch *f = s->fq_head;
    if (send_fetch(s, f)) return fail_all(s, WSY_IO, "cannot send a read to PostgreSQL");
    s->fq_head = f->next;
    if (!s->fq_head) s->fq_tail = &s->fq_head;
    f->next = NULL;
    *s->ff_tail = f;
    s->ff_tail = &f->next;
    sent = 1;
  }
  if (!sent) return;
  int fl = PQflush(s->fc);
  s->fstate = PC_BUSY;
  if (fl < 0 || fc_watch(s, UV_READABLE | (fl ? UV_WRITABLE : 0)))
    return fail_all(s, WSY_IO, "cannot send a read to PostgreSQL");
  if (!uv_is_active((uv_handle_t *)&s->ftimer)) {
    uv_update_time(s->loop);
    uv_timer_start(&s->ftimer, on_ftimer, s->read_ms, 0);
  }
}

static void fc_connect(pg_store *s) {
  s->fc = pg_connect_start(s->url, "wsync-fetch");
  if (!s->fc || PQstatus(s->fc) == CONNECTION_BAD) return fail_all(s, WSY_IO, "cannot connect to PostgreSQL");
  s->fstate = PC_CONNECTING;
  if (fc_watch(s, UV_WRITABLE)) return fail_all(s, WSY_IO, "cannot watch the PostgreSQL connection");
  uv_update_time(s->loop);
  uv_timer_start(&s->ftimer, on_ftimer, PG_CONNECT_MS, 0);
}

/* Reads every result that has arrived; each Sync answers the oldest fetch. */
static void fdrain(pg_store *s) {
  int nulls = 0;
  while (s->fc && !PQisBusy(s->fc)) {
    PGresult *r = PQgetResult(s->fc);
    if (!r) {
      if (++nulls > 1) break; /* nothing more arrived yet */
      continue;
    }
    nulls = 0;
    pg_fetch *f = s->ff_head;
    if (!f) { /* cannot happen: an answer nobody asked for */
      PQclear(r);
      return fail_all(s, WSY_IO, "PostgreSQL answered a read that was not sent");
    }
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_PIPELINE_SYNC) {
      PQclear(r);
      s->ff_head = f->next;
      if (!s->ff_head) s->ff_tail = &s->ff_head;
      if (!f->rc && f->nres != f->nq) {
        f->rc = WSY_IO;
        snprintf(f->err, sizeof f->err, "%d answers to %d queries", f->nres, f->nq);
      }
      uv_timer_stop(&s->ftimer);
      if (s->ff_head) uv_timer_start(&s->ftimer, on_ftimer, s->read_ms, 0);
      answer(s, f); /* may send another fetch: the lists are consistent */
      continue;
    }
    int k = f->nres < f->nq ? f->kind[f->nres] : -1;
    f->nres++;
    if ((st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED) && !f->rc) {
      f->rc = st == PGRES_FATAL_ERROR ? pg_map_result(r) : WSY_IO;
      snprintf(f->err, sizeof f->err, "%s", PQresultErrorMessage(r));
    }
    if (st == PGRES_TUPLES_OK && k >= 0 && !f->res[k]) f->res[k] = r;
    else PQclear(r);
  }
  if (s->fc && !s->ff_head) {
    s->fstate = PC_IDLE;
    if (fc_watch(s, UV_READABLE)) fc_drop(s);
  }
}

static void on_fpoll(uv_poll_t *h, int status, int events) {
  pg_store *s = h->data;
  if (s->fstate == PC_CONNECTING) {
    PostgresPollingStatusType ps = PQconnectPoll(s->fc);
    if (ps == PGRES_POLLING_FAILED) return fail_all(s, WSY_IO, "cannot connect to PostgreSQL");
    if (ps == PGRES_POLLING_OK) {
      uv_timer_stop(&s->ftimer);
      if (PQsetnonblocking(s->fc, 1) || !PQenterPipelineMode(s->fc))
        return fail_all(s, WSY_IO, "cannot set up the PostgreSQL connection");
      s->fstate = PC_IDLE;
      if (fc_watch(s, UV_READABLE)) return fail_all(s, WSY_IO, "cannot watch the PostgreSQL connection");
      return send_waiting(s);
    }
    if (fc_watch(s, ps == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE))
      fail_all(s, WSY_IO, "cannot watch the PostgreSQL connection");
    return;
  }
  if (status < 0 || !PQconsumeInput(s->fc)) {
    if (s->ff_head) return fail_all(s, WSY_IO, "lost the PostgreSQL connection during a read");
    fc_drop(s); /* idle: the next fetch connects again */
    return;
  }
  if (events & UV_WRITABLE) {
    int fl = PQflush(s->fc);
    if (fl < 0 || fc_watch(s, UV_READABLE | (fl ? UV_WRITABLE : 0)))
      return fail_all(s, WSY_IO, "lost the PostgreSQL connection during a read");
  }
  fdrain(s);
}

/* f goes behind the fetches waiting, and out as soon as it can. */
static void enqueue(pg_store *s, pg_fetch *f, store_fetch_cb cb, void *ud) {
  f->cb = cb;
  f->ud = ud;
  *s->fq_tail = f;
  s->fq_tail = &f->next;
  if (s->fstate == PC_DOWN) fc_connect(s);
  else if (s->fstate != PC_CONNECTING) send_waiting(s);
}

static int fetch_start(store *bs, const char *room, int flags, uint64_t after, size_t limit, store_fetch_cb cb,
                       void *ud) {
  pg_store *s = (pg_store *)bs;
  if (!room || !cb || !s->loop || !s->handles_open) return WSY_INVAL;
  pg_fetch *f = wsy_calloc(1, sizeof *f);
  f->room = wsy_strndup(room, strlen(room));
  f->flags = flags;
  f->after = after;
  f->limit = limit;
  enqueue(s, f, cb, ud);
  return WSY_OK;
}

int pg_fetch_start(store *bs, const char *room, int flags, uint64_t after, store_fetch_cb cb, void *ud) {
  return fetch_start(bs, room, flags, after, 0, cb, ud);
}

int pg_fetch_changes(store *bs, const char *room, int flags, uint64_t after, const char *const *items, size_t n,
                     store_fetch_cb cb, void *ud) {
  pg_store *s = (pg_store *)bs;
  if (!room || !cb || (n && !items) || !s->loop || !s->handles_open) return WSY_INVAL;
  pg_fetch *f = wsy_calloc(1, sizeof *f);
  f->room = wsy_strndup(room, strlen(room));
  f->flags = flags | STORE_FETCH_STATE | STORE_FETCH_LOG | STORE_FETCH_CHANGES;
  f->after = after;
  int rc = n ? pg_rooms_literal(items, n, &f->rooms) : 0; /* any names: the same text[] literal */
  if (rc != 0) {
    fetch_free(f);
    return rc;
  }
  enqueue(s, f, cb, ud);
  return WSY_OK;
}

int pg_fetch_log(store *bs, const char *room, uint64_t after, size_t limit, store_fetch_cb cb, void *ud) {
  return fetch_start(bs, room, STORE_FETCH_LOG, after, limit, cb, ud);
}

int pg_fetch_rooms(store *bs, const char *const *names, size_t n, store_fetch_cb cb, void *ud) {
  pg_store *s = (pg_store *)bs;
  if (!names || !n || !cb || !s->loop || !s->handles_open) return WSY_INVAL;
  pg_fetch *f = wsy_calloc(1, sizeof *f);
  int rc = pg_rooms_literal(names, n, &f->rooms);
  if (rc != 0) {
    fetch_free(f);
    return rc;
  }
  enqueue(s, f, cb, ud);
  return WSY_OK;
}

int pg_fetch_list(store *bs, const char *after, size_t limit, store_fetch_cb cb, void *ud) {
  pg_store *s = (pg_store *)bs;
  if (!limit || !cb || !s->loop || !s->handles_open) return WSY_INVAL;
  pg_fetch *f = wsy_calloc(1, sizeof *f);
  f->list = wsy_strndup(after ? after : "", after ? strlen(after) : 0);
  f->limit = limit;
  enqueue(s, f, cb, ud);
  return WSY_OK;
}

int pg_fetch_dedupe(store *bs, const char *dkey, const char *cid, store_fetch_cb cb, void *ud) {
  pg_store *s = (pg_store *)bs;
  if (!dkey || !cid || !cb || !s->loop || !s->handles_open) return WSY_INVAL;
  pg_fetch *f = wsy_calloc(1, sizeof *f);
  f->dkey = wsy_strndup(dkey, strlen(dkey));
  f->cid = wsy_strndup(cid, strlen(cid));
  enqueue(s, f, cb, ud);
  return WSY_OK;
}

int pg_release_locks_async(store *bs, const char *prefix, store_fetch_cb cb, void *ud) {
  pg_store *s = (pg_store *)bs;
  if (!prefix || !*prefix || !cb || !s->loop || !s->handles_open) return WSY_INVAL;
  pg_fetch *f = wsy_calloc(1, sizeof *f);
  f->release = wsy_strndup(prefix, strlen(prefix));
  enqueue(s, f, cb, ud);
  return WSY_OK;
}

void pg_fetch_close(pg_store *s) {
  /* Dropped unanswered: the caller is going away (store.h). */
  pg_fetch *lists[] = {s->ff_head, s->fq_head};
  for (int k = 0; k < 2; k++)
    for (pg_fetch *l = lists[k], *next; l; l = next) {
      next = l->next;
      fetch_free(l);
    }
  s->ff_head = s->fq_head = NULL;
  s->ff_tail = &s->ff_head;
  s->fq_tail = &s->fq_head;
  if (s->fc || s->fpoll) fc_drop(s); /* both exist only with a loop: its timer is initialized */
}
