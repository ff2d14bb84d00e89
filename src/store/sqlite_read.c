/* sqlite_read.c -- the reads of the SQLite backend (store.h): the loop
** thread's connection, one call at a time, each a prepared statement made
** once by store_sqlite_open. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sqlite_int.h"

/* ---- reads --------------------------------------------------------------- */

/* Ends a walk or lookup: resets st and turns the last step's code into the
** result (cb_rc, when the callback stopped the walk). */
static int rdone(sqlite3_stmt *st, int rc, int cb_rc) {
  sqlite3_reset(st);
  if (cb_rc) return cb_rc;
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? WSY_OK : sq_map_rc(rc);
}

static sqlite3_int64 clamp64(uint64_t v) { return (sqlite3_int64)(v > SEQ_MAX ? SEQ_MAX : v); }

int sq_room_get(store *bs, const char *room, store_room_info *out) {
  sq_store *s = (sq_store *)bs;
  memset(out, 0, sizeof *out);
  if (!room) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_ROOM_GET];
  sq_bind_str(st, 1, room);
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

int sq_room_items(store *bs, const char *room, store_item_cb cb, void *ud) {
  sq_store *s = (sq_store *)bs;
  if (!room || !cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_ITEMS];
  sq_bind_str(st, 1, room);
  int rc = SQLITE_OK, cb_rc = 0;
  while (!cb_rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *fields = (const char *)sqlite3_column_text(st, 1);
    size_t flen = (size_t)sqlite3_column_bytes(st, 1);
    cb_rc = cb((const char *)sqlite3_column_text(st, 0), fields ? fields : "", flen,
               (const char *)sqlite3_column_text(st, 3), (uint64_t)sqlite3_column_int64(st, 2), ud);
  }
  return rdone(st, rc, cb_rc);
}

int sq_room_texts(store *bs, const char *room, store_text_cb cb, void *ud) {
  sq_store *s = (sq_store *)bs;
  if (!room || !cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_TEXTS];
  sq_bind_str(st, 1, room);
  int rc = SQLITE_OK, cb_rc = 0;
  while (!cb_rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *ops = (const char *)sqlite3_column_text(st, 4);
    cb_rc = cb((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
               (uint64_t)sqlite3_column_int64(st, 2), (uint64_t)sqlite3_column_int64(st, 3), ops ? ops : "[]",
               ops ? (size_t)sqlite3_column_bytes(st, 4) : 2, ud);
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

int sq_history(store *bs, const char *room, uint64_t after_seq, size_t limit, store_history_cb cb,
                  void *ud) {
  sq_store *s = (sq_store *)bs;
  if (!room || !cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_HISTORY];
  sq_bind_str(st, 1, room);
  sqlite3_bind_int64(st, 2, clamp64(after_seq));
  sqlite3_bind_int64(st, 3, limit == 0 ? -1 : clamp64(limit));
  return walk_log(st, cb, ud);
}

int sq_recent_messages(store *bs, const char *room, size_t limit, store_history_cb cb, void *ud) {
  sq_store *s = (sq_store *)bs;
  if (!room || !cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_RECENT_MESSAGES];
  sq_bind_str(st, 1, room);
  sqlite3_bind_int64(st, 2, clamp64(limit));
  return walk_log(st, cb, ud);
}

int sq_dedupe_each(store *bs, store_dedupe_cb cb, void *ud) {
  sq_store *s = (sq_store *)bs;
  if (!cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_DEDUPE_ALL];
  int rc = SQLITE_OK, cb_rc = 0;
  while (!cb_rc && (rc = sqlite3_step(st)) == SQLITE_ROW)
    cb_rc = cb((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1), ud);
  return rdone(st, rc, cb_rc);
}

int sq_dedupe_get(store *bs, const char *dkey, const char *cid,
                     char room_out[STORE_ROOM_MAX + 1], uint64_t *seq_out) {
  sq_store *s = (sq_store *)bs;
  if (!dkey || !cid) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_DEDUPE];
  sq_bind_str(st, 1, dkey);
  sq_bind_str(st, 2, cid);
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

int sq_cursors(store *bs, const char *room, store_cursor_cb cb, void *ud) {
  sq_store *s = (sq_store *)bs;
  if (!room || !cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_CURSORS];
  sq_bind_str(st, 1, room);
  int rc = SQLITE_OK, cb_rc = 0;
  while (!cb_rc && (rc = sqlite3_step(st)) == SQLITE_ROW)
    cb_rc = cb((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
               (uint64_t)sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3), ud);
  return rdone(st, rc, cb_rc);
}

int sq_read_begin(store *bs) {
  sq_store *s = (sq_store *)bs;
  sqlite3_stmt *st = s->r[SR_BEGIN];
  return rdone(st, sqlite3_step(st), 0);
}

int sq_read_end(store *bs) {
  sq_store *s = (sq_store *)bs;
  sqlite3_stmt *st = s->r[SR_END];
  return rdone(st, sqlite3_step(st), 0);
}

int sq_stats(store *bs, store_stats_info *out) {
  sq_store *s = (sq_store *)bs;
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

int sq_rooms_list(store *bs, const char *after, size_t limit, store_room_cb cb, void *ud) {
  sq_store *s = (sq_store *)bs;
  if (!cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_ROOMS_LIST];
  sq_bind_str(st, 1, after ? after : "");
  sqlite3_bind_int64(st, 2, limit == 0 ? -1 : clamp64(limit));
  int rc = SQLITE_OK, cb_rc = 0;
  while (!cb_rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    store_room_info info = {.exists = 1};
    const char *ep = (const char *)sqlite3_column_text(st, 1);
    int len = sqlite3_column_bytes(st, 1);
    if (ep && len > 0 && len <= STORE_EPOCH_MAX) memcpy(info.epoch, ep, (size_t)len);
    info.seq = (uint64_t)sqlite3_column_int64(st, 2);
    info.min_seq = (uint64_t)sqlite3_column_int64(st, 3);
    info.created_ms = sqlite3_column_int64(st, 4);
    cb_rc = cb((const char *)sqlite3_column_text(st, 0), &info, ud);
  }
  return rdone(st, rc, cb_rc);
}

int sq_hook_positions(store *bs, const char *hook, store_hook_pos_cb cb, void *ud) {
  sq_store *s = (sq_store *)bs;
  if (!hook || !cb) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_HOOK_POS];
  sq_bind_str(st, 1, hook);
  int rc = SQLITE_OK, cb_rc = 0;
  while (!cb_rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *room = (const char *)sqlite3_column_text(st, 0);
    const char *epoch = (const char *)sqlite3_column_text(st, 1);
    cb_rc = cb(room ? room : "", epoch ? epoch : "", (uint64_t)sqlite3_column_int64(st, 2), ud);
  }
  return rdone(st, rc, cb_rc);
}

int sq_hook_pos_get(store *bs, const char *hook, const char *room, const char *epoch, uint64_t *seq_out) {
  sq_store *s = (sq_store *)bs;
  *seq_out = 0;
  if (!hook || !room || !epoch) return WSY_INVAL;
  sqlite3_stmt *st = s->r[SR_HOOK_POS_GET];
  sq_bind_str(st, 1, hook);
  sq_bind_str(st, 2, room);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const char *ep = (const char *)sqlite3_column_text(st, 0);
    if (ep && !strcmp(ep, epoch)) *seq_out = (uint64_t)sqlite3_column_int64(st, 1);
  }
  return rdone(st, rc, 0);
}
