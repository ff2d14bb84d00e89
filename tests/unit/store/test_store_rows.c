/* Unit tests for src/store/sqlite_rows.c: a run of ops written with
 * multi-row statements leaves exactly what the same entries written one by
 * one leave, and a failure in a run still names the entry at fault. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../../src/store/sqlite_int.h"
#include "../../../src/store/store.h"
#include "sqtest.h"

static char dir[64];

static void mk(void) { sqt_mkdir(dir, sizeof dir, "rows"); }
static void rm(void) { sqt_rmdir(dir); }

TestSuite(rows, .init = mk, .fini = rm);

static store *open_ok(void) { return sqt_open(dir, 0); }
static void commit_ok(store *s, store_batch *b) { sqt_commit(s, b); }

/* ---- a dump of a room: everything the store reads back, as text ---------- */

typedef struct {
  char *p;
  size_t n, cap;
} dumpbuf;

static void put(dumpbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(dumpbuf *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    cr_assert_geq(k, 0);
    if (b->n + (size_t)k < b->cap) {
      b->n += (size_t)k;
      return;
    }
    b->cap = b->cap * 2 + (size_t)k + 64;
    b->p = realloc(b->p, b->cap);
    cr_assert_not_null(b->p);
  }
}

static int hist_cb(uint64_t seq, const char *msg, size_t len, void *ud) {
  put(ud, "op %llu %.*s\n", (unsigned long long)seq, (int)len, msg);
  return 0;
}

static int item_cb(const char *item, const char *fields, size_t len, const char *revs, uint64_t version,
                   void *ud) {
  put(ud, "item %s %.*s %s v%llu\n", item, (int)len, fields, revs ? revs : "-", (unsigned long long)version);
  return 0;
}

static int text_cb(const char *item, const char *field, uint64_t rev, uint64_t seq, const char *ops, size_t len,
                   void *ud) {
  put(ud, "text %s.%s@%llu/%llu %.*s\n", item, field, (unsigned long long)rev, (unsigned long long)seq, (int)len,
      ops);
  return 0;
}

static int cursor_cb(const char *u, const char *d, uint64_t seq, int64_t t, void *ud) {
  (void)t; /* the clock of each commit */
  put(ud, "cursor %s %s %llu\n", u, d, (unsigned long long)seq);
  return 0;
}

/* The room's seq, log, items, texts and cursors, and the dedupe record of
 * each cid c<k> of device dev for k < ncids. */
static char *dump(store *s, const char *room, const char *dev, int ncids) {
  dumpbuf b = {0};
  put(&b, "%s", "");
  store_room_info ri;
  cr_assert_eq(store_room_get(s, room, &ri), 0);
  put(&b, "room %d seq %llu min %llu\n", ri.exists, (unsigned long long)ri.seq, (unsigned long long)ri.min_seq);
  cr_assert_eq(store_history(s, room, 0, 0, hist_cb, &b), 0);
  cr_assert_eq(store_room_items(s, room, item_cb, &b), 0);
  cr_assert_eq(store_room_texts(s, room, text_cb, &b), 0);
  cr_assert_eq(store_cursors(s, room, cursor_cb, &b), 0);
  for (int k = 0; k < ncids; k++) {
    char cid[32], r[STORE_ROOM_MAX + 1] = "";
    uint64_t seq = 0;
    snprintf(cid, sizeof cid, "c%d", k);
    int rc = store_dedupe_get(s, dev, cid, r, &seq);
    /* the room's name differs between the two copies by its first byte */
    put(&b, "cid %s %s %s %llu\n", cid, wsy_errname(rc), rc ? "" : r + 1, (unsigned long long)seq);
  }
  return b.p;
}

/* ---- a batch of every kind of entry, the same for both copies ------------ */

static uint32_t rnd(uint32_t *x) {
  *x = *x * 1103515245u + 12345u;
  return *x >> 8;
}

/* Entries for the rooms <r>0..<r>2 (r is "a" or "b") of a fixed mix: item
 * sets (15 items, so most are set several times), deletes, publishes, the
 * items of batch ops, cursors, texts rows and a trim (in the second half:
 * the first is sets and publishes only, for runs longer than a window);
 * cids counts the cids. */
static void fill(store_batch *b, const char *r, const char *dev, uint64_t seq[3], int *cids, int entries) {
  uint32_t x = 7;
  char room[3][16];
  for (int i = 0; i < 3; i++) snprintf(room[i], sizeof room[i], "%s%d", r, i);
  for (int n = 0; n < entries; n++) {
    int ri = (int)(rnd(&x) % 3);
    const char *rm = room[ri];
    char item[16], fields[64], revs[32], cid[16], msg[96];
    snprintf(item, sizeof item, "i%u", rnd(&x) % 15);
    snprintf(fields, sizeof fields, "{\"n\":%d,\"s\":\"%u\"}", n, rnd(&x));
    snprintf(revs, sizeof revs, "{\"s\":%d}", n);
    snprintf(cid, sizeof cid, "c%d", *cids);
    uint64_t q = ++seq[ri];
    snprintf(msg, sizeof msg, "{\"type\":\"op\",\"n\":%d,\"seq\":%llu}", n, (unsigned long long)q);
    store_op op = {.room = rm, .seq = q, .version = q, .msg = msg, .msg_len = strlen(msg)};
    unsigned k = rnd(&x) % 100;
    if (n < entries / 2 && k >= 55 && k < 90) k = 95; /* a first half of long runs */
    if (k < 55) { /* a set, with a cid most of the time, text revisions now and then */
      op.item = item, op.fields_json = fields;
      if (k < 10) op.revs_json = revs;
    } else if (k < 62) { /* a delete: ends a run */
      op.item = item;
    } else if (k < 72) { /* a publish */
    } else if (k < 82) { /* a batch op: its items follow, without log entries of their own */
      store_batch_op(b, &op);
      for (unsigned j = 0, m = 1 + rnd(&x) % 3; j < m; j++) {
        snprintf(item, sizeof item, "i%u", rnd(&x) % 15);
        store_batch_item(b, rm, item, j == 2 ? NULL : fields, NULL, q);
      }
      continue;
    } else if (k < 86) { /* a cursor: ends a run */
      store_batch_op(b, &op);
      store_batch_cursor(b, "u", "d", rm, q);
      continue;
    } else if (k < 89) { /* a text op: a texts row (ends a run) */
      store_batch_op(b, &op);
      store_batch_text(b, rm, item, "s", (uint64_t)n + 1, q, "[\"t\"]", 5);
      continue;
    } else if (k < 90 && q > 20) { /* a trim: ends a run */
      store_batch_op(b, &op);
      store_batch_trim(b, rm, q - 10);
      continue;
    } else {
      op.item = item, op.fields_json = fields;
    }
    if (k % 4) op.dkey = dev, op.cid = cid, ++*cids;
    store_batch_op(b, &op);
  }
}

/* The state of the two copies: their rooms' seqs and cids used so far. */
typedef struct {
  uint64_t sa[3], sb[3];
  int ca, cb;
} copies;

/* batches batches of entries each, written to the "a" rooms in runs and to
 * the "b" rooms entry by entry; then the two dumps must be the same. */
static void commit_both(store *s, copies *c, int entries, int batches) {
  sq_store *q = (sq_store *)s;
  store_batch *b;
  if (!c->sa[0]) {
    b = store_batch_new();
    for (int i = 0; i < 3; i++) {
      char r[16];
      snprintf(r, sizeof r, "a%d", i), store_batch_room_create(b, r, "e");
      snprintf(r, sizeof r, "b%d", i), store_batch_room_create(b, r, "e");
    }
    commit_ok(s, b);
  }
  for (int i = 0; i < batches; i++) {
    b = store_batch_new();
    fill(b, "a", "dev-a", c->sa, &c->ca, entries);
    q->rows_off = 0;
    commit_ok(s, b);
    b = store_batch_new();
    fill(b, "b", "dev-b", c->sb, &c->cb, entries);
    q->rows_off = 1;
    commit_ok(s, b);
    q->rows_off = 0;
  }
  cr_assert_eq(c->ca, c->cb);
  cr_assert(q->rows[SQ_T_OPS][0] && q->rows[SQ_T_ITEMS][1] && q->rows[SQ_T_DEDUPE][0],
            "the multi-row statements were used");
  for (int i = 0; i < 3; i++) {
    char ra[16], rb[16];
    snprintf(ra, sizeof ra, "a%d", i), snprintf(rb, sizeof rb, "b%d", i);
    char *da = dump(s, ra, "dev-a", c->ca + 5), *db = dump(s, rb, "dev-b", c->ca + 5);
    cr_assert_gt(strlen(da), 1000);
    cr_assert_str_eq(da, db, "room %d: multi-row and entry by entry differ", i);
    free(da), free(db);
  }
}

Test(rows, runs_leave_what_entry_by_entry_leaves) {
  store *s = open_ok();
  copies c = {0};
  commit_both(s, &c, 700, 1);
  store_close(s);
}

/* Windows of 64 and the 8- and 1-row tails, over several batches, and a
 * reopen in between (the texts flag is read again at open). */
Test(rows, runs_of_every_length_over_several_batches) {
  store *s = open_ok();
  copies c = {0};
  commit_both(s, &c, 131, 3);
  store_close(s);
  s = open_ok();
  commit_both(s, &c, 150, 1);
  store_close(s);
}

/* The same item set twice in one statement, and in two windows: the
 * later set is what stays. */
Test(rows, an_item_set_again_in_a_batch_keeps_the_later_set) {
  store *s = open_ok();
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  char fields[32], msg[32];
  for (uint64_t q = 1; q <= 200; q++) {
    snprintf(fields, sizeof fields, "{\"v\":%llu}", (unsigned long long)q);
    snprintf(msg, sizeof msg, "{\"seq\":%llu}", (unsigned long long)q);
    store_op op = {.room = "r", .seq = q, .item = q % 2 ? "odd" : "even", .fields_json = fields, .version = q,
                   .msg = msg, .msg_len = strlen(msg)};
    store_batch_op(b, &op);
  }
  commit_ok(s, b);
  char *d = dump(s, "r", "x", 0);
  cr_assert(strstr(d, "item even {\"v\":200} - v200\n"), "%s", d);
  cr_assert(strstr(d, "item odd {\"v\":199} - v199\n"), "%s", d);
  free(d);
  store_close(s);
}

/* A texts row written before a restart is cleared by a set after it: the
 * store finds at open that the texts table has rows. */
Test(rows, texts_rows_found_at_open_are_cleared_by_a_set) {
  store *s = open_ok();
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "t", "e");
  store_op op = {.room = "t", .seq = 1, .version = 1, .msg = "{}", .msg_len = 2};
  store_batch_op(b, &op);
  store_batch_text(b, "t", "a", "f", 1, 1, "[\"hi\"]", 6);
  commit_ok(s, b);
  store_close(s);
  s = open_ok();
  cr_assert_eq(((sq_store *)s)->texts_rows, 1);
  char *d = dump(s, "t", "x", 0);
  cr_assert(strstr(d, "text a.f@1/1"), "%s", d);
  free(d);
  b = store_batch_new();
  store_op set = {.room = "t", .seq = 2, .item = "a", .fields_json = "{\"f\":\"hi\"}", .version = 2,
                  .msg = "{}", .msg_len = 2};
  store_batch_op(b, &set);
  commit_ok(s, b);
  d = dump(s, "t", "x", 0);
  cr_assert_null(strstr(d, "text "), "%s", d);
  free(d);
  store_close(s);
  s = open_ok();
  cr_assert_eq(((sq_store *)s)->texts_rows, 0, "no texts rows are left");
  store_close(s);
}

/* A cid already committed, in the middle of a run of 300: the batch fails
 * as a whole, and the error names the entry, as entry by entry would. */
Test(rows, a_failure_in_a_run_names_the_entry_and_stores_nothing) {
  store *s = open_ok();
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  store_op op = {.room = "r", .seq = 1, .item = "x", .fields_json = "{}", .version = 1, .dkey = "d",
                 .cid = "dup", .msg = "{}", .msg_len = 2};
  store_batch_op(b, &op);
  commit_ok(s, b);
  b = store_batch_new();
  char cid[16];
  for (uint64_t q = 2; q <= 301; q++) {
    snprintf(cid, sizeof cid, "c%llu", (unsigned long long)q);
    if (q == 200) snprintf(cid, sizeof cid, "dup");
    store_op o = {.room = "r", .seq = q, .item = "x", .fields_json = "{}", .version = q, .dkey = "d", .cid = cid,
                  .msg = "{}", .msg_len = 2};
    store_batch_op(b, &o);
  }
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_INVAL);
  const char *e = store_batch_error(b);
  cr_assert(strstr(e, "entry 198 (op, room r, seq 200)") && strstr(e, "cid dup of device d was already committed"),
            "%s", e);
  store_batch_free(b);
  store_room_info ri;
  cr_assert_eq(store_room_get(s, "r", &ri), 0);
  cr_assert_eq(ri.seq, 1, "nothing of the failed batch was stored");
  cr_assert_eq(store_dedupe_get(s, "d", "c2", NULL, NULL), WSY_NOT_FOUND);
  store_close(s);
}

/* ---- sqlite_ckpt.c: checkpoints beside the commits ------------------------ */

static long long file_size(const char *name) {
  char p[128];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  struct stat st;
  return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

static int count_cb(uint64_t seq, const char *msg, size_t len, void *ud) {
  (void)seq, (void)msg, (void)len;
  ++*(size_t *)ud;
  return 0;
}

static size_t log_len(store *s, const char *room) {
  size_t n = 0;
  cr_assert_eq(store_history(s, room, 0, 0, count_cb, &n), 0);
  return n;
}

/* About 80 MB of ops, commit after commit: the checkpoint thread copies the
 * WAL into the database while they run, the committing thread takes over
 * at the bound (8,000 frames of 4 KB pages), and the WAL starts over
 * instead of growing: its file holds at most the bound plus a commit or
 * two (a batch here is about 250 frames). This writer is faster than the
 * checkpoint thread, which is what a first version got wrong: the WAL grew
 * past 70 MB while the committing thread waited for its turn. */
Test(rows, the_wal_is_checkpointed_beside_the_commits_and_stays_bounded, .timeout = 120) {
  store *s = open_ok();
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  commit_ok(s, b);
  char msg[1024], cid[24], item[16];
  memset(msg, 'm', sizeof msg - 1);
  msg[sizeof msg - 1] = '\0';
  uint64_t q = 0;
  long long max_wal = 0;
  for (int k = 0; k < 400; k++) {
    b = store_batch_new();
    for (int i = 0; i < 200; i++) {
      q++;
      snprintf(cid, sizeof cid, "c%llu", (unsigned long long)q);
      snprintf(item, sizeof item, "i%llu", (unsigned long long)(q % 50));
      store_op op = {.room = "r", .seq = q, .item = item, .fields_json = "{\"v\":1}", .version = q,
                     .dkey = "d", .cid = cid, .msg = msg, .msg_len = sizeof msg - 1};
      store_batch_op(b, &op);
    }
    commit_ok(s, b);
    long long w = file_size("wsync.db-wal");
    if (w > max_wal) max_wal = w;
  }
  uint64_t bg = 0, wr = 0;
  sq_ckpt_counts((sq_store *)s, &bg, &wr);
  cr_assert_gt(bg, 0, "the checkpoint thread copied the WAL");
  cr_assert_gt(wr, 0, "the committing thread checkpointed at the bound");
  cr_assert_gt(file_size("wsync.db"), 80ll << 20, "the ops reached the database file");
  cr_assert_lt(max_wal, 9000ll * 4120, "the WAL started over: at most %lld bytes", max_wal);
  cr_assert_eq(log_len(s, "r"), 80000);
  store_close(s);
  cr_assert_eq(file_size("wsync.db-wal"), -1, "closing checkpoints and removes the WAL");
  s = open_ok();
  cr_assert_eq(log_len(s, "r"), 80000);
  uint64_t seq = 0;
  cr_assert_eq(store_dedupe_get(s, "d", "c79999", NULL, &seq), 0);
  cr_assert_eq(seq, 79999);
  store_close(s);
}
