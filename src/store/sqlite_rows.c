/* sqlite_rows.c -- a batch's ops: their rooms' seqs, and their rows written
** with multi-row statements.
**
** Entry by entry, an op costs four statements: its ops row, its items row,
** the clearing of the item's texts rows, and its dedupe row. Each statement
** pays SQLite's fixed cost (a cursor opened and closed, a statement
** savepoint, the halt and reset) on top of its B-tree work, and that fixed
** cost was a quarter of the committing thread's instructions. Here a run of
** consecutive entries that only add rows (ops, and item sets) goes out
** table by table, in windows of SQ_ROWS_BIG rows, each in as few
** statements as the prepared sizes allow (SQ_ROWS_BIG, SQ_ROWS_SMALL, then
** single rows). And:
**   - an item's row is written once per run, with its last set: every
**     write in a run sets the whole row (an item deleted ends the run), so
**     the earlier ones would only be overwritten;
**   - an item's texts rows are cleared only when the store has any
**     (s->texts_rows, read at open and set by the first text row).
**
** What stays the same as entry by entry:
**   - a room's seq is checked and advanced op by op, in order (sq_op_seq);
**   - each table's rows go in the order of the entries;
**   - the tables are independent of each other, so their relative order
**     does not matter, and everything else (a trim, a room created or
**     deleted, an item deleted, a text row, a cursor) ends the run;
**   - all of it is one transaction.
** What differs is only the error: a failed multi-row statement cannot say
** which row failed, so sqlite.c rolls back and applies the batch entry by
** entry, which names the entry (s->rows_failed). test_store_rows.c checks
** that both ways leave the same database. */
#include "sqlite_int.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- a room's seq, op by op --------------------------------------------- */

/* Why a room's seq did not advance: the room is missing, or seq is not next. */
static int explain_seq(sq_store *s, store_batch *b, const batch_entry *e) {
  sqlite3_stmt *st = s->w[SW_ROOM_SEQ];
  sq_bind_str(st, 1, e->room);
  int rc = sqlite3_step(st);
  int64_t cur = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    snprintf(b->err, sizeof b->err, "%s", sqlite3_errmsg(s->wdb));
  sqlite3_reset(st);
  if (rc == SQLITE_DONE) return store_batch_fail(b, WSY_NOT_FOUND, "no such room");
  if (rc != SQLITE_ROW) return sq_map_rc(rc);
  return store_batch_fail(b, WSY_INVAL, "seq %" PRIu64 " does not follow the room's seq %" PRId64, e->seq, cur);
}

static int run_flush(sq_store *s, store_batch *b, seq_run *r) {
  if (r->last == r->first) return WSY_OK;
  sqlite3_stmt *st = s->w[SW_ROOM_JUMP];
  sq_bind_str(st, 1, r->room);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)r->first);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)r->last);
  int rc = sq_wstep(s, b, st);
  if (rc != SQLITE_OK) return sq_map_rc(rc);
  if (sqlite3_changes(s->wdb) == 0) return store_batch_fail(b, WSY_INVAL, "room %.64s changed under its batch", r->room);
  r->first = r->last;
  return WSY_OK;
}

int sq_runs_flush(sq_store *s, store_batch *b, seq_runs *runs) {
  int rc = WSY_OK;
  for (size_t i = 0; i < runs->n && !rc; i++) rc = run_flush(s, b, &runs->r[i]);
  runs->n = 0;
  return rc;
}

int sq_op_seq(sq_store *s, store_batch *b, const batch_entry *e, seq_runs *runs) {
  if (!e->room) return store_batch_fail(b, WSY_INVAL, "op without a room");
  if (e->seq == 0 || e->seq > SEQ_MAX || e->version > SEQ_MAX)
    return store_batch_fail(b, WSY_INVAL, "seq/version out of range");

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
    sq_bind_str(st, 1, e->room);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)e->seq);
    rc = sq_wstep(s, b, st);
    if (rc != SQLITE_OK) return sq_map_rc(rc);
    if (sqlite3_changes(s->wdb) == 0) return explain_seq(s, b, e);
    if (!run) {
      if (runs->n == WSY_ARRAY_LEN(runs->r) && (rc = sq_runs_flush(s, b, runs)) != WSY_OK) return rc;
      run = &runs->r[runs->n++];
      run->room = e->room;
    }
    run->first = run->last = e->seq;
  }
  return WSY_OK;
}

/* ---- rows ---------------------------------------------------------------- */

static const struct {
  const char *head, *row, *tail;
  int single; /* the one-row statement of sqlite.c, same parameter order */
} tables[SQ_T__COUNT] = {
  [SQ_T_OPS] = {"INSERT INTO ops(room, seq, item, device, cid, msg) VALUES", "(?,?,?,?,?,?)", "",
                SW_OP_INSERT},
  [SQ_T_ITEMS] = {"INSERT INTO items(room, item, fields, version, revs) VALUES", "(?,?,?,?,?)",
                  " ON CONFLICT(room, item) DO UPDATE SET fields = excluded.fields,"
                  " version = excluded.version, revs = excluded.revs",
                  SW_ITEM_UPSERT},
  [SQ_T_DEDUPE] = {"INSERT INTO dedupe(device, cid, room, seq) VALUES", "(?,?,?,?)", "", SW_DEDUPE_INSERT},
  [SQ_T_TCLEAR] = {"DELETE FROM texts WHERE (room, item) IN (VALUES", "(?,?)", ")", SW_TEXT_CLEAR},
};

static const int sizes[2] = {SQ_ROWS_BIG, SQ_ROWS_SMALL};

int sq_rows_takes(const batch_entry *e) {
  if (e->kind == E_OP) return !e->item || e->fields; /* an item deleted ends a run */
  return e->kind == E_ITEM && e->room && e->item && e->fields;
}

/* The statement of table t for sizes[z] rows, prepared on first use (on the
** committing thread, the one that uses the write connection). */
static sqlite3_stmt *rows_stmt(sq_store *s, store_batch *b, int t, int z) {
  if (s->rows[t][z]) return s->rows[t][z];
  size_t hl = strlen(tables[t].head), rl = strlen(tables[t].row), tl = strlen(tables[t].tail);
  size_t n = (size_t)sizes[z];
  char *sql = sqlite3_malloc64(hl + n * (rl + 1) + tl + 1);
  if (!sql) return NULL;
  char *p = sql;
  memcpy(p, tables[t].head, hl), p += hl;
  for (size_t i = 0; i < n; i++) {
    if (i) *p++ = ',';
    memcpy(p, tables[t].row, rl), p += rl;
  }
  memcpy(p, tables[t].tail, tl + 1);
  int rc = sqlite3_prepare_v3(s->wdb, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->rows[t][z], NULL);
  if (rc != SQLITE_OK) {
    snprintf(b->err, sizeof b->err, "prepare a %zu-row statement: %s", n, sqlite3_errmsg(s->wdb));
    s->rows[t][z] = NULL;
  }
  sqlite3_free(sql);
  return s->rows[t][z];
}

/* Binds entry e as the row of table t whose parameters start after at. */
static void bind_row(sqlite3_stmt *st, int t, int at, const batch_entry *e) {
  switch (t) {
  case SQ_T_OPS:
    sq_bind_str(st, at + 1, e->room);
    sqlite3_bind_int64(st, at + 2, (sqlite3_int64)e->seq);
    sq_bind_str(st, at + 3, e->item);
    sq_bind_str(st, at + 4, e->device);
    sq_bind_str(st, at + 5, e->cid);
    sq_bind_text(st, at + 6, e->msg, e->msg_len);
    break;
  case SQ_T_ITEMS:
    sq_bind_str(st, at + 1, e->room);
    sq_bind_str(st, at + 2, e->item);
    sq_bind_str(st, at + 3, e->fields);
    sqlite3_bind_int64(st, at + 4, (sqlite3_int64)(e->version > SEQ_MAX ? SEQ_MAX : e->version));
    sq_bind_str(st, at + 5, e->revs);
    break;
  case SQ_T_DEDUPE:
    sq_bind_str(st, at + 1, e->device);
    sq_bind_str(st, at + 2, e->cid);
    sq_bind_str(st, at + 3, e->room);
    sqlite3_bind_int64(st, at + 4, (sqlite3_int64)e->seq);
    break;
  default: /* SQ_T_TCLEAR */
    sq_bind_str(st, at + 1, e->room);
    sq_bind_str(st, at + 2, e->item);
    break;
  }
}

/* The rows v[0..n) of table t, in order. */
static int rows_write(sq_store *s, store_batch *b, int t, const batch_entry *const *v, size_t n) {
  size_t i = 0;
  while (i < n) {
    int z = n - i >= SQ_ROWS_BIG ? 0 : n - i >= SQ_ROWS_SMALL ? 1 : -1;
    sqlite3_stmt *st = z < 0 ? s->w[tables[t].single] : rows_stmt(s, b, t, z);
    if (!st) return WSY_NOMEM;
    size_t k = z < 0 ? 1 : (size_t)sizes[z];
    int cols = sqlite3_bind_parameter_count(st) / (int)k;
    for (size_t j = 0; j < k; j++) bind_row(st, t, (int)j * cols, v[i + j]);
    int rc = sq_wstep(s, b, st);
    if (rc != SQLITE_OK) return sq_map_rc(rc);
    i += k;
  }
  return WSY_OK;
}

/* Seqs, ops rows and dedupe rows of the run, in windows of SQ_ROWS_BIG rows. */
static int ops_rows(sq_store *s, store_batch *b, const batch_entry *e, size_t n, seq_runs *runs) {
  const batch_entry *ops[SQ_ROWS_BIG], *dd[SQ_ROWS_BIG];
  size_t no = 0, nd = 0;
  int rc = WSY_OK;
  for (size_t i = 0; i < n && !rc; i++) {
    const batch_entry *x = &e[i];
    if (x->kind != E_OP) continue;
    if ((rc = sq_op_seq(s, b, x, runs)) != WSY_OK) break;
    ops[no++] = x;
    if (x->device && x->cid) dd[nd++] = x;
    /* Each table fills its own windows: they are independent of each other. */
    if (no == SQ_ROWS_BIG) rc = rows_write(s, b, SQ_T_OPS, ops, no), no = 0;
    if (nd == SQ_ROWS_BIG && !rc) rc = rows_write(s, b, SQ_T_DEDUPE, dd, nd), nd = 0;
  }
  if (!rc && no) rc = rows_write(s, b, SQ_T_OPS, ops, no);
  if (!rc && nd) rc = rows_write(s, b, SQ_T_DEDUPE, dd, nd);
  return rc;
}

/* The items rows of the run: every write in a run sets the whole row
** (an item deleted ends the run), so only the last write of each item
** counts, and an item set again and again in one batch is written once.
** Its texts rows are cleared once too, when the store has any. */
static int item_rows(sq_store *s, store_batch *b, const batch_entry *e, size_t n) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++) m += e[i].item != NULL;
  if (!m) return WSY_OK;
  size_t cap = 16;
  while (cap < 2 * m) cap *= 2;
  uint32_t *seen = wsy_calloc(cap, sizeof *seen); /* entry index + 1; 0: empty */
  const batch_entry *v[SQ_ROWS_BIG];
  size_t nv = 0;
  int rc = WSY_OK;
  for (size_t i = n; i-- > 0 && !rc;) {
    const batch_entry *x = &e[i];
    if (!x->item) continue;
    size_t h = (size_t)wsy_fnv1a(wsy_fnv1a(WSY_FNV1A_BASIS, x->room) ^ 0xff, x->item) & (cap - 1);
    int dup = 0;
    for (; seen[h]; h = (h + 1) & (cap - 1)) {
      const batch_entry *y = &e[seen[h] - 1];
      if (!strcmp(y->item, x->item) && !strcmp(y->room, x->room)) {
        dup = 1;
        break;
      }
    }
    if (dup) continue;
    seen[h] = (uint32_t)i + 1;
    v[nv++] = x;
    if (nv == SQ_ROWS_BIG) {
      rc = rows_write(s, b, SQ_T_ITEMS, v, nv);
      if (!rc && s->texts_rows) rc = rows_write(s, b, SQ_T_TCLEAR, v, nv);
      nv = 0;
    }
  }
  if (!rc && nv) rc = rows_write(s, b, SQ_T_ITEMS, v, nv);
  if (!rc && nv && s->texts_rows) rc = rows_write(s, b, SQ_T_TCLEAR, v, nv);
  wsy_free(seen);
  return rc;
}

int sq_rows_run(sq_store *s, store_batch *b, const batch_entry *e, size_t n, seq_runs *runs) {
  int rc = ops_rows(s, b, e, n, runs);
  if (!rc) rc = item_rows(s, b, e, n);
  if (rc) s->rows_failed = 1;
  return rc;
}

void sq_rows_close(sq_store *s) {
  for (int t = 0; t < SQ_T__COUNT; t++)
    for (int z = 0; z < 2; z++) {
      sqlite3_finalize(s->rows[t][z]);
      s->rows[t][z] = NULL;
    }
}
