/* Unit tests for src/store: the SQLite engine, each test in its own data
 * directory under /tmp (made with mkdtemp, removed after). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../../src/store/store.h"
#include "../../../src/store/sqlite_int.h"
#include "sqtest.h"

static char dir[64];

static void mkdir_tmp(void) { sqt_mkdir(dir, sizeof dir, "store"); }
static void rm_tmp(void) { sqt_rmdir(dir); }

TestSuite(store, .init = mkdir_tmp, .fini = rm_tmp);

/* ---- helpers ---------------------------------------------------------------- */

static store *open_ok(int full) { return sqt_open(dir, full); }
static void commit_ok(store *s, store_batch *b) { sqt_commit(s, b); }

static void add_op(store_batch *b, const char *room, uint64_t seq, const char *item,
                   const char *fields, const char *device, const char *cid) {
  char msg[256];
  snprintf(msg, sizeof msg, "{\"type\":\"op\",\"room\":\"%s\",\"seq\":%llu}", room,
           (unsigned long long)seq);
  store_op op = {.room = room, .seq = seq, .item = item, .fields_json = fields, .version = seq,
                 .dkey = device, .cid = cid, .msg = msg, .msg_len = strlen(msg)};
  store_batch_op(b, &op);
}

static void create_room(store *s, const char *room, const char *epoch) {
  store_batch *b = store_batch_new();
  store_batch_room_create(b, room, epoch);
  commit_ok(s, b);
}

typedef struct {
  size_t n;
  uint64_t seq[4096];
  char msg[64][256];
} hist;

static int hist_cb(uint64_t seq, const char *msg, size_t len, void *ud) {
  hist *h = ud;
  cr_assert_lt(h->n, 4096);
  if (h->n < 64) {
    cr_assert_lt(len, 256);
    memcpy(h->msg[h->n], msg, len);
    h->msg[h->n][len] = '\0';
  }
  h->seq[h->n++] = seq;
  return 0;
}

static hist *history(store *s, const char *room, uint64_t after, size_t limit) {
  static hist h;
  memset(&h, 0, sizeof h);
  cr_assert_eq(store_history(s, room, after, limit, hist_cb, &h), 0);
  return &h;
}

typedef struct {
  size_t n;
  char item[32][64];
  char fields[32][256];
  uint64_t version[32];
} items;

static int items_cb(const char *item, const char *fields, size_t len, const char *revs, uint64_t version,
                    void *ud) {
  (void)revs;
  items *it = ud;
  cr_assert_lt(it->n, 32);
  cr_assert_eq(strlen(fields), len);
  snprintf(it->item[it->n], 64, "%s", item);
  snprintf(it->fields[it->n], 256, "%s", fields);
  it->version[it->n++] = version;
  return 0;
}

static items *get_items(store *s, const char *room) {
  static items it;
  memset(&it, 0, sizeof it);
  cr_assert_eq(store_room_items(s, room, items_cb, &it), 0);
  return &it;
}

static store_room_info room_info(store *s, const char *room) {
  store_room_info ri;
  cr_assert_eq(store_room_get(s, room, &ri), 0);
  return ri;
}

typedef struct {
  size_t len;
  char bytes[64];
} raw_msg;

static int last_cb(uint64_t seq, const char *msg, size_t len, void *ud) {
  raw_msg *g = ud;
  cr_assert_eq(seq, 5);
  cr_assert_leq(len, sizeof g->bytes);
  g->len = len;
  memcpy(g->bytes, msg, len);
  return 0;
}

static int count_cb(const char *u, const char *d, uint64_t q, int64_t t, void *ud) {
  (void)u, (void)d, (void)q, (void)t;
  (*(int *)ud)++;
  return 0;
}

static int stop_at_3(uint64_t seq, const char *m, size_t l, void *ud) {
  (void)seq, (void)m, (void)l;
  return ++*(int *)ud == 3 ? 7 : 0;
}

/* ---- open, close, reopen ------------------------------------------------------ */

Test(store, reopen_restores_rooms_items_and_ops_exactly) {
  store *s = open_ok(0);
  store_room_info ri = room_info(s, "board:1");
  cr_assert_eq(ri.exists, 0);

  store_batch *b = store_batch_new();
  store_batch_room_create(b, "board:1", "e7c1a9");
  add_op(b, "board:1", 1, "card-1", "{\"title\":\"Ship it\"}", "laptop", "laptop:1");
  add_op(b, "board:1", 2, "card-2", "{\"title\":\"caf\xc3\xa9 \\\"q\\\"\"}", "phone", "phone:1");
  add_op(b, "board:1", 3, NULL, NULL, NULL, NULL); /* a publish */
  add_op(b, "board:1", 4, "card-1", "{\"title\":\"Shipped\",\"done\":true}", "laptop", "laptop:2");
  /* exact bytes, including UTF-8 and an embedded NUL, come back */
  static const char odd[] = "{\"t\":\"\xe2\x82\xac\"}\0tail";
  store_op op = {.room = "board:1", .seq = 5, .msg = odd, .msg_len = sizeof odd - 1};
  store_batch_op(b, &op);
  commit_ok(s, b);
  store_close(s);

  s = open_ok(0);
  ri = room_info(s, "board:1");
  cr_assert_eq(ri.exists, 1);
  cr_assert_str_eq(ri.epoch, "e7c1a9");
  cr_assert_eq(ri.seq, 5);
  cr_assert_eq(ri.min_seq, 1);
  cr_assert_gt(ri.created_ms, 1600000000000LL);

  items *it = get_items(s, "board:1");
  cr_assert_eq(it->n, 2);
  cr_assert_str_eq(it->item[0], "card-1");
  cr_assert_str_eq(it->fields[0], "{\"title\":\"Shipped\",\"done\":true}");
  cr_assert_eq(it->version[0], 4);
  cr_assert_str_eq(it->item[1], "card-2");
  cr_assert_str_eq(it->fields[1], "{\"title\":\"caf\xc3\xa9 \\\"q\\\"\"}");
  cr_assert_eq(it->version[1], 2);

  hist *h = history(s, "board:1", 0, 0);
  cr_assert_eq(h->n, 5);
  for (size_t i = 0; i < 5; i++) cr_assert_eq(h->seq[i], i + 1);
  cr_assert_str_eq(h->msg[0], "{\"type\":\"op\",\"room\":\"board:1\",\"seq\":1}");

  raw_msg got = {0};
  cr_assert_eq(store_history(s, "board:1", 4, 0, last_cb, &got), 0);
  cr_assert_eq(got.len, sizeof odd - 1);
  cr_assert_eq(memcmp(got.bytes, odd, sizeof odd - 1), 0);
  store_close(s);
}

Test(store, data_dir_is_created) {
  char sub[128];
  snprintf(sub, sizeof sub, "%s/sub", dir);
  store *s = NULL;
  cr_assert_eq(store_sqlite_open(sub, 0, NULL, &s, NULL, 0), 0);
  create_room(s, "r", "e1");
  store_close(s);
  cr_assert_eq(access(sub, F_OK), 0);
  char p[256];
  snprintf(p, sizeof p, "%s/wsync.db", sub);
  cr_assert_eq(access(p, F_OK), 0);
  snprintf(p, sizeof p, "%s/wsync.db", sub); unlink(p);
  snprintf(p, sizeof p, "%s/wsync.lock", sub); unlink(p);
  cr_assert_eq(rmdir(sub), 0);
}

Test(store, second_open_of_a_directory_is_refused) {
  store *s = open_ok(0);
  store *t = (store *)1;
  char err[256];
  cr_assert_eq(store_sqlite_open(dir, 0, NULL, &t, err, sizeof err), WSY_AGAIN);
  cr_assert_null(t);
  cr_assert_not_null(strstr(err, "in use"), "%s", err);
  store_close(s);
  s = open_ok(0); /* released on close */
  store_close(s);
}

/* ---- batches --------------------------------------------------------------- */

static int no_lock_expected(const char *i, const char *h, const char *u, const char *d, uint64_t f, int64_t x,
                            uint64_t v, void *ud) {
  (void)i, (void)h, (void)u, (void)d, (void)f, (void)x, (void)v, (void)ud;
  cr_assert_fail("the embedded store keeps no locks");
  return 0;
}

/* One node keeps its locks in memory (store.h, ITEM LOCKS): a lock entry is
 * a caller's mistake, refused whole; reading locks walks nothing. */
Test(store, keeps_no_locks_and_refuses_a_batch_with_one) {
  store *s = open_ok(0);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "a", "ea");
  store_batch_lock(b, "a", 0, "card", "n.s", "alice", "phone", 7, 1000);
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_INVAL);
  cr_assert_not_null(strstr(store_batch_error(b), "lock"), "%s", store_batch_error(b));
  store_batch_free(b);
  cr_assert_eq(room_info(s, "a").exists, 0, "nothing of the batch was stored");
  cr_assert_eq(store_room_locks(s, "a", no_lock_expected, NULL), 0);
  store_close(s);
}

Test(store, batch_with_many_ops_commits_atomically) {
  store *s = open_ok(0);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "a", "ea");
  store_batch_room_create(b, "b", "eb");
  char item[32], fields[64], cid[32];
  for (uint64_t i = 1; i <= 1000; i++) {
    snprintf(item, sizeof item, "it-%03llu", (unsigned long long)(i % 20));
    snprintf(fields, sizeof fields, "{\"n\":%llu}", (unsigned long long)i);
    snprintf(cid, sizeof cid, "c%llu", (unsigned long long)i);
    add_op(b, "a", i, item, fields, "dev", cid);
    if (i <= 10) add_op(b, "b", i, NULL, NULL, NULL, NULL);
  }
  cr_assert_eq(store_batch_count(b), 1012);
  commit_ok(s, b);

  cr_assert_eq(room_info(s, "a").seq, 1000);
  cr_assert_eq(room_info(s, "b").seq, 10);
  cr_assert_eq(history(s, "a", 0, 0)->n, 1000);
  cr_assert_eq(history(s, "b", 0, 0)->n, 10);
  items *it = get_items(s, "a");
  cr_assert_eq(it->n, 20);
  cr_assert_str_eq(it->item[0], "it-000");
  cr_assert_str_eq(it->fields[0], "{\"n\":1000}");
  cr_assert_eq(it->version[0], 1000);
  cr_assert_str_eq(it->fields[19], "{\"n\":999}");
  store_close(s);
}

/* The database after a failed batch: exactly what it was before. */
static void assert_unchanged(store *s) {
  store_room_info ri = room_info(s, "doc");
  cr_assert_eq(ri.seq, 3);
  cr_assert_str_eq(ri.epoch, "e1");
  cr_assert_eq(room_info(s, "new").exists, 0);
  hist *h = history(s, "doc", 0, 0);
  cr_assert_eq(h->n, 3);
  cr_assert_eq(h->seq[2], 3);
  items *it = get_items(s, "doc");
  cr_assert_eq(it->n, 1);
  cr_assert_str_eq(it->fields[0], "{\"v\":3}");
  cr_assert_eq(store_dedupe_get(s, "dev", "c4", NULL, NULL), WSY_NOT_FOUND);
  uint64_t seq = 0;
  cr_assert_eq(store_dedupe_get(s, "dev", "c3", NULL, &seq), 0);
  cr_assert_eq(seq, 3);
  int n = 0;
  cr_assert_eq(store_cursors(s, "doc", count_cb, &n), 0);
  cr_assert_eq(n, 0);
}

static store *doc_with_three_ops(void) {
  store *s = open_ok(0);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "doc", "e1");
  add_op(b, "doc", 1, "x", "{\"v\":1}", "dev", "c1");
  add_op(b, "doc", 2, "x", "{\"v\":2}", "dev", "c2");
  add_op(b, "doc", 3, "x", "{\"v\":3}", "dev", "c3");
  commit_ok(s, b);
  return s;
}

Test(store, duplicate_seq_fails_the_whole_batch) {
  store *s = doc_with_three_ops();
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "new", "e2");
  store_batch_cursor(b, "alice", "dev", "doc", 3);
  add_op(b, "doc", 4, "x", "{\"v\":4}", "dev", "c4");
  store_batch_trim(b, "doc", 4);
  add_op(b, "doc", 4, "y", "{\"v\":44}", "dev", "c44"); /* same seq again */
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_INVAL);
  cr_assert_not_null(strstr(store_batch_error(b), "entry 4"), "%s", store_batch_error(b));
  cr_assert_not_null(strstr(store_batch_error(b), "seq 4"), "%s", store_batch_error(b));
  store_batch_free(b);
  assert_unchanged(s);
  store_close(s);
  s = open_ok(0);
  assert_unchanged(s);
  store_close(s);
}

Test(store, duplicate_seq_already_stored_is_refused) {
  store *s = doc_with_three_ops();
  store_batch *b = store_batch_new();
  add_op(b, "doc", 3, "x", "{\"v\":33}", "dev", "c33");
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_INVAL);
  store_batch_free(b);
  assert_unchanged(s);
  store_close(s);
}

Test(store, gap_in_seq_is_refused) {
  store *s = doc_with_three_ops();
  store_batch *b = store_batch_new();
  add_op(b, "doc", 5, "x", "{\"v\":5}", "dev", "c5");
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_INVAL);
  cr_assert_not_null(strstr(store_batch_error(b), "does not follow the room's seq 3"), "%s",
                     store_batch_error(b));
  store_batch_free(b);
  assert_unchanged(s);
  store_close(s);
}

Test(store, duplicate_cid_fails_the_batch) {
  store *s = doc_with_three_ops();
  store_batch *b = store_batch_new();
  add_op(b, "doc", 4, "x", "{\"v\":4}", "dev", "c2"); /* cid c2 was seq 2 */
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_INVAL);
  cr_assert_not_null(strstr(store_batch_error(b), "cid c2"), "%s", store_batch_error(b));
  store_batch_free(b);
  assert_unchanged(s);
  store_close(s);
}

Test(store, room_is_created_exactly_once) {
  store *s = doc_with_three_ops();
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "doc", "e-other");
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_INVAL);
  cr_assert_not_null(strstr(store_batch_error(b), "already exists"), "%s", store_batch_error(b));
  store_batch_free(b);

  b = store_batch_new();
  store_batch_room_create(b, "new", ""); /* an empty epoch never matches: refused */
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_INVAL);
  store_batch_free(b);
  b = store_batch_new();
  store_batch_room_create(b, "new", "123456789012345678901234567890123"); /* 33 */
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_INVAL);
  store_batch_free(b);
  b = store_batch_new();
  char long_room[130];
  memset(long_room, 'r', 129);
  long_room[129] = '\0';
  store_batch_room_create(b, long_room, "e");
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_INVAL);
  store_batch_free(b);
  assert_unchanged(s);
  store_close(s);
}

Test(store, failed_batch_can_be_retried_committed_one_cannot) {
  store *s = open_ok(0);
  store_batch *b = store_batch_new();
  add_op(b, "later", 1, NULL, NULL, NULL, NULL);
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_NOT_FOUND);
  cr_assert_not_null(strstr(store_batch_error(b), "no such room"), "%s", store_batch_error(b));
  create_room(s, "later", "e9");
  cr_assert_eq(store_sqlite_commit_sync(s, b), 0);
  cr_assert_str_eq(store_batch_error(b), "");
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_INVAL); /* not twice */
  store_batch_free(b);
  cr_assert_eq(room_info(s, "later").seq, 1);
  cr_assert_eq(history(s, "later", 0, 0)->n, 1);
  store_close(s);
}

Test(store, empty_batch_commits_nothing) {
  store *s = open_ok(0);
  store_batch *b = store_batch_new();
  cr_assert_eq(store_batch_count(b), 0);
  cr_assert_eq(store_sqlite_commit_sync(s, b), 0);
  store_batch_free(b);
  store_batch_free(NULL);
  store_close(s);
  store_close(NULL);
}

Test(store, batch_copies_its_inputs) {
  store *s = open_ok(0);
  create_room(s, "r", "e");
  char room[8] = "r", item[8] = "it", fields[16] = "{\"a\":1}", dev[8] = "d", cid[8] = "c1";
  char msg[16] = "{\"m\":1}";
  store_op op = {.room = room, .seq = 1, .item = item, .fields_json = fields, .version = 1,
                 .dkey = dev, .cid = cid, .msg = msg, .msg_len = strlen(msg)};
  store_batch *b = store_batch_new();
  store_batch_op(b, &op);
  store_batch_cursor(b, dev, dev, room, 1);
  memset(room, 'X', 7);
  memset(item, 'X', 7);
  memset(fields, 'X', 15);
  memset(dev, 'X', 7);
  memset(cid, 'X', 7);
  memset(msg, 'X', 15);
  commit_ok(s, b);
  items *it = get_items(s, "r");
  cr_assert_eq(it->n, 1);
  cr_assert_str_eq(it->item[0], "it");
  cr_assert_str_eq(it->fields[0], "{\"a\":1}");
  cr_assert_str_eq(history(s, "r", 0, 0)->msg[0], "{\"m\":1}");
  char rname[STORE_ROOM_MAX + 1];
  cr_assert_eq(store_dedupe_get(s, "d", "c1", rname, NULL), 0);
  cr_assert_str_eq(rname, "r");
  store_close(s);
}

/* What a caller keeps with a batch (store_batch_alloc) lives until the
 * batch is freed: blocks of every size, across the arena's chunks and
 * interleaved with entries, keep their bytes and are aligned for any type;
 * the entries commit as copied. */
Test(store, batch_arena_keeps_blocks_until_the_batch_is_freed) {
  store *s = open_ok(0);
  create_room(s, "r", "e");
  store_batch *b = store_batch_new();
  enum { N = 3000 };
  static unsigned char *blk[N];
  static size_t len[N];
  for (size_t i = 0; i < N; i++) {
    len[i] = i % 7 == 0 ? 20000 + i : i % 97; /* some larger than a chunk, some empty */
    blk[i] = store_batch_alloc(b, len[i]);
    cr_assert_not_null(blk[i]);
    cr_assert_eq((uintptr_t)blk[i] % _Alignof(max_align_t), 0, "block %zu misaligned", i);
    memset(blk[i], (int)(i & 0xff), len[i]);
    if (i < 200) {
      char cid[16], msg[32];
      snprintf(cid, sizeof cid, "c%zu", i);
      snprintf(msg, sizeof msg, "{\"m\":%zu}", i);
      store_op op = {.room = "r", .seq = i + 1, .item = "it", .fields_json = "{}", .version = i + 1,
                     .dkey = "d", .cid = cid, .msg = msg, .msg_len = strlen(msg)};
      store_batch_op(b, &op);
    }
  }
  for (size_t i = 0; i < N; i++)
    for (size_t j = 0; j < len[i]; j++)
      cr_assert_eq(blk[i][j], (unsigned char)(i & 0xff), "block %zu byte %zu overwritten", i, j);
  commit_ok(s, b); /* frees b */
  cr_assert_str_eq(history(s, "r", 199, 0)->msg[0], "{\"m\":199}");
  store_close(s);
}

/* ---- history and trim ---------------------------------------------------- */

Test(store, history_order_after_seq_and_limit) {
  store *s = open_ok(0);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "h", "e");
  store_batch_room_create(b, "other", "e");
  for (uint64_t i = 1; i <= 50; i++) {
    add_op(b, "h", i, NULL, NULL, NULL, NULL);
    add_op(b, "other", i, NULL, NULL, NULL, NULL);
  }
  commit_ok(s, b);

  hist *h = history(s, "h", 0, 0);
  cr_assert_eq(h->n, 50);
  for (size_t i = 0; i < h->n; i++) cr_assert_eq(h->seq[i], i + 1);
  cr_assert_str_eq(h->msg[9], "{\"type\":\"op\",\"room\":\"h\",\"seq\":10}");

  h = history(s, "h", 41, 0);
  cr_assert_eq(h->n, 9);
  cr_assert_eq(h->seq[0], 42);
  cr_assert_eq(h->seq[8], 50);

  h = history(s, "h", 10, 5);
  cr_assert_eq(h->n, 5);
  cr_assert_eq(h->seq[0], 11);
  cr_assert_eq(h->seq[4], 15);

  cr_assert_eq(history(s, "h", 50, 0)->n, 0);
  cr_assert_eq(history(s, "h", UINT64_MAX, 0)->n, 0);
  cr_assert_eq(history(s, "nope", 0, 0)->n, 0);

  /* a callback stops the walk with its own value */
  int seen = 0;
  cr_assert_eq(store_history(s, "h", 0, 0, stop_at_3, &seen), 7);
  cr_assert_eq(seen, 3);
  cr_assert_eq(history(s, "h", 0, 0)->n, 50); /* statement reset after the stop */
  store_close(s);
}

Test(store, trim_updates_min_seq_and_history) {
  store *s = open_ok(0);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "t", "e");
  for (uint64_t i = 1; i <= 20; i++) add_op(b, "t", i, "it", "{}", NULL, NULL);
  store_batch_trim(b, "t", 11);
  commit_ok(s, b);

  store_room_info ri = room_info(s, "t");
  cr_assert_eq(ri.seq, 20);
  cr_assert_eq(ri.min_seq, 11);
  hist *h = history(s, "t", 0, 0);
  cr_assert_eq(h->n, 10);
  cr_assert_eq(h->seq[0], 11);
  cr_assert_eq(get_items(s, "t")->n, 1); /* the document is not the log */

  b = store_batch_new();
  store_batch_trim(b, "t", 5); /* min_seq never goes down */
  commit_ok(s, b);
  cr_assert_eq(room_info(s, "t").min_seq, 11);

  b = store_batch_new();
  store_batch_trim(b, "t", 1000); /* clamped to seq + 1: everything dropped */
  commit_ok(s, b);
  ri = room_info(s, "t");
  cr_assert_eq(ri.min_seq, 21);
  cr_assert_eq(history(s, "t", 0, 0)->n, 0);

  b = store_batch_new();
  add_op(b, "t", 21, NULL, NULL, NULL, NULL); /* the log goes on from there */
  commit_ok(s, b);
  h = history(s, "t", 20, 0);
  cr_assert_eq(h->n, 1);
  cr_assert_eq(h->seq[0], 21);

  b = store_batch_new();
  store_batch_trim(b, "ghost", 3);
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_NOT_FOUND);
  store_batch_free(b);
  store_close(s);

  s = open_ok(0);
  ri = room_info(s, "t");
  cr_assert_eq(ri.seq, 21);
  cr_assert_eq(ri.min_seq, 21);
  store_close(s);
}

/* ---- items, dedupe, cursors --------------------------------------------- */

Test(store, item_deleted_when_fields_null) {
  store *s = open_ok(0);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "d", "e");
  add_op(b, "d", 1, "a", "{\"x\":1}", NULL, NULL);
  add_op(b, "d", 2, "b", "{\"x\":2}", NULL, NULL);
  add_op(b, "d", 3, "a", NULL, NULL, NULL); /* del a */
  commit_ok(s, b);
  items *it = get_items(s, "d");
  cr_assert_eq(it->n, 1);
  cr_assert_str_eq(it->item[0], "b");
  cr_assert_eq(history(s, "d", 0, 0)->n, 3); /* the delete is in the log */

  b = store_batch_new();
  add_op(b, "d", 4, "a", "{\"x\":4}", NULL, NULL); /* set creates it again */
  add_op(b, "d", 5, "zz", NULL, NULL, NULL);       /* deleting a missing item is fine */
  commit_ok(s, b);
  it = get_items(s, "d");
  cr_assert_eq(it->n, 2);
  cr_assert_str_eq(it->item[0], "a");
  cr_assert_eq(it->version[0], 4);
  store_close(s);
}

Test(store, dedupe_survives_reopen) {
  store *s = open_ok(0);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "doc:1", "e");
  add_op(b, "doc:1", 1, "a", "{}", "laptop-3f2a", "laptop-3f2a:17");
  add_op(b, "doc:1", 2, "a", "{}", NULL, "no-device"); /* backend-ish: not recorded */
  add_op(b, "doc:1", 3, "a", "{}", "phone", NULL);
  commit_ok(s, b);
  store_close(s);

  s = open_ok(0);
  char room[STORE_ROOM_MAX + 1] = "";
  uint64_t seq = 0;
  cr_assert_eq(store_dedupe_get(s, "laptop-3f2a", "laptop-3f2a:17", room, &seq), 0);
  cr_assert_str_eq(room, "doc:1");
  cr_assert_eq(seq, 1);
  cr_assert_eq(store_dedupe_get(s, "laptop-3f2a", "laptop-3f2a:18", room, &seq), WSY_NOT_FOUND);
  cr_assert_eq(store_dedupe_get(s, "other", "laptop-3f2a:17", NULL, NULL), WSY_NOT_FOUND);
  cr_assert_eq(store_dedupe_get(s, "phone", "", NULL, NULL), WSY_NOT_FOUND);
  cr_assert_eq(store_dedupe_get(s, NULL, "x", NULL, NULL), WSY_INVAL);
  store_close(s);
}

typedef struct {
  int n;
  char who[8][64];
  uint64_t seq[8];
} curs;

static int curs_cb(const char *user, const char *device, uint64_t seq, int64_t updated, void *ud) {
  curs *c = ud;
  cr_assert_gt(updated, 1600000000000LL, "updated is wall-clock ms");
  cr_assert_lt(c->n, 8);
  snprintf(c->who[c->n], 64, "%s/%s", user, device);
  c->seq[c->n++] = seq;
  return 0;
}

Test(store, cursors_keep_the_max) {
  store *s = open_ok(0);
  create_room(s, "r", "e");
  store_batch *b = store_batch_new();
  store_batch_cursor(b, "bob", "tab", "r", 7);
  store_batch_cursor(b, "alice", "phone", "r", 10);
  store_batch_cursor(b, "alice", "laptop", "r", 4);
  store_batch_cursor(b, "alice", "phone", "r", 3); /* older report in the same batch */
  store_batch_cursor(b, "alice", "phone", "other", 99);
  commit_ok(s, b);
  b = store_batch_new();
  store_batch_cursor(b, "alice", "laptop", "r", 12);
  store_batch_cursor(b, "bob", "tab", "r", 2); /* older report, later batch */
  commit_ok(s, b);
  store_close(s);

  s = open_ok(0);
  curs c = {0};
  cr_assert_eq(store_cursors(s, "r", curs_cb, &c), 0);
  cr_assert_eq(c.n, 3);
  cr_assert_str_eq(c.who[0], "alice/laptop");
  cr_assert_eq(c.seq[0], 12);
  cr_assert_str_eq(c.who[1], "alice/phone");
  cr_assert_eq(c.seq[1], 10);
  cr_assert_str_eq(c.who[2], "bob/tab");
  cr_assert_eq(c.seq[2], 7);
  store_close(s);
}

/* ---- threads ---------------------------------------------------------------- */

#define WRITER_BATCHES 150
#define OPS_PER_BATCH 4

typedef struct {
  store *s;
  atomic_int done;
  int rc;
} writer_ctx;

static void *writer(void *arg) {
  writer_ctx *w = arg;
  uint64_t seq = 0;
  char fields[32];
  for (int i = 0; i < WRITER_BATCHES && !w->rc; i++) {
    store_batch *b = store_batch_new();
    for (int k = 0; k < OPS_PER_BATCH; k++) {
      seq++;
      snprintf(fields, sizeof fields, "{\"s\":%llu}", (unsigned long long)seq);
      add_op(b, "live", seq, k % 2 ? "odd" : "even", fields, NULL, NULL);
    }
    w->rc = store_sqlite_commit_sync(w->s, b);
    store_batch_free(b);
  }
  atomic_store(&w->done, 1);
  return NULL;
}

static int check_items_cb(const char *item, const char *fields, size_t len, const char *revs,
                          uint64_t version, void *ud) {
  (void)revs;
  (void)item, (void)len;
  char want[32];
  snprintf(want, sizeof want, "{\"s\":%llu}", (unsigned long long)version);
  cr_assert_str_eq(fields, want); /* item row and version from the same op */
  *(uint64_t *)ud = version > *(uint64_t *)ud ? version : *(uint64_t *)ud;
  return 0;
}

Test(store, commit_on_another_thread_while_reading) {
  store *s = open_ok(0);
  create_room(s, "live", "e");
  writer_ctx w = {.s = s};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, writer, &w), 0);
  int reads = 0;
  uint64_t last = 0;
  while (!atomic_load(&w.done) || reads < 10) {
    /* one snapshot: the room's seq, its log and its items agree */
    cr_assert_eq(store_read_begin(s), 0);
    store_room_info ri = room_info(s, "live");
    hist *h = history(s, "live", 0, 0);
    uint64_t maxv = 0;
    cr_assert_eq(store_room_items(s, "live", check_items_cb, &maxv), 0);
    cr_assert_eq(store_read_end(s), 0);
    cr_assert_eq(ri.seq % OPS_PER_BATCH, 0, "saw half a batch: seq %llu",
                 (unsigned long long)ri.seq);
    cr_assert_eq(h->n, ri.seq);
    if (h->n) cr_assert_eq(h->seq[h->n - 1], ri.seq);
    cr_assert_eq(maxv, ri.seq);
    cr_assert_geq(ri.seq, last);
    last = ri.seq;
    reads++;
  }
  pthread_join(t, NULL);
  cr_assert_eq(w.rc, 0, "writer: %s", wsy_errname(w.rc));
  cr_assert_eq(room_info(s, "live").seq, WRITER_BATCHES * OPS_PER_BATCH);
  store_close(s);
}

/* ---- schema and pragmas ----------------------------------------------------- */

static void set_pragma(const char *sql) {
  char p[128];
  snprintf(p, sizeof p, "%s/wsync.db", dir);
  sqlite3 *db;
  cr_assert_eq(sqlite3_open(p, &db), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
}

static int64_t get_pragma(const char *sql) {
  char p[128];
  snprintf(p, sizeof p, "%s/wsync.db", dir);
  sqlite3 *db;
  sqlite3_stmt *st;
  cr_assert_eq(sqlite3_open(p, &db), SQLITE_OK);
  cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

Test(store, schema_is_versioned) {
  store *s = open_ok(0);
  store_close(s);
  cr_assert_eq(get_pragma("PRAGMA user_version"), STORE_SCHEMA_VERSION);
  cr_assert_eq(get_pragma("PRAGMA application_id"), STORE_APPLICATION_ID);
  s = open_ok(0); /* reopening at the current version migrates nothing */
  store_close(s);
  cr_assert_eq(get_pragma("PRAGMA user_version"), STORE_SCHEMA_VERSION);
}

Test(store, newer_schema_is_refused_and_left_alone) {
  store *s = open_ok(0);
  create_room(s, "r", "e");
  store_close(s);
  set_pragma("PRAGMA user_version = 99");
  char err[256];
  s = (store *)1;
  cr_assert_eq(store_sqlite_open(dir, 0, NULL, &s, err, sizeof err), WSY_INVAL);
  cr_assert_null(s);
  cr_assert_not_null(strstr(err, "schema version 99, newer than this wsync"), "%s", err);
  cr_assert_eq(get_pragma("PRAGMA user_version"), 99);
  cr_assert_eq(get_pragma("SELECT count(*) FROM rooms"), 1);
}

Test(store, foreign_database_is_refused) {
  set_pragma("PRAGMA application_id = 1234; CREATE TABLE t(x)");
  char err[256];
  store *s = NULL;
  cr_assert_eq(store_sqlite_open(dir, 0, NULL, &s, err, sizeof err), WSY_INVAL);
  cr_assert_not_null(strstr(err, "not a wsync database"), "%s", err);
  set_pragma("PRAGMA application_id = 0; PRAGMA user_version = 1");
  cr_assert_eq(store_sqlite_open(dir, 0, NULL, &s, err, sizeof err), WSY_INVAL);
  cr_assert_not_null(strstr(err, "not a wsync database"), "%s", err);
  set_pragma("PRAGMA user_version = 0"); /* unmarked, but with a table of its own */
  cr_assert_eq(store_sqlite_open(dir, 0, NULL, &s, err, sizeof err), WSY_INVAL);
  cr_assert_not_null(strstr(err, "not a wsync database"), "%s", err);
  cr_assert_eq(get_pragma("SELECT count(*) FROM sqlite_schema"), 1); /* left alone */
  set_pragma("DROP TABLE t"); /* an empty database is fine: migrated */
  cr_assert_eq(store_sqlite_open(dir, 0, NULL, &s, err, sizeof err), 0, "%s", err);
  store_close(s);
  cr_assert_eq(get_pragma("PRAGMA application_id"), STORE_APPLICATION_ID);
}

Test(store, not_a_database_is_an_io_error) {
  char p[128];
  snprintf(p, sizeof p, "%s/wsync.db", dir);
  FILE *f = fopen(p, "w");
  cr_assert_not_null(f);
  for (int i = 0; i < 64; i++) fputs("this is not an sqlite file ", f);
  fclose(f);
  char err[256];
  store *s = NULL;
  cr_assert_eq(store_sqlite_open(dir, 0, NULL, &s, err, sizeof err), WSY_IO);
  cr_assert_gt(strlen(err), 0);
  cr_assert_null(s);
}

static int64_t conn_pragma(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st;
  cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

Test(store, durability_sets_synchronous_and_wal) {
  store *s = open_ok(1);
  cr_assert_eq(conn_pragma(((sq_store *)s)->wdb, "PRAGMA synchronous"), 2); /* FULL */
  sqlite3_stmt *st;
  cr_assert_eq(sqlite3_prepare_v2(((sq_store *)s)->wdb, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
  cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
  cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
  sqlite3_finalize(st);
  store_stats_info si;
  cr_assert_eq(store_stats(s, &si), 0);
  cr_assert_eq(si.durability_full, 1);
  cr_assert_eq(si.schema_version, STORE_SCHEMA_VERSION);
  cr_assert_gt(si.db_bytes, 0);
  store_close(s);

  s = open_ok(0);
  cr_assert_eq(conn_pragma(((sq_store *)s)->wdb, "PRAGMA synchronous"), 1); /* NORMAL */
  cr_assert_eq(conn_pragma(((sq_store *)s)->rdb, "PRAGMA query_only"), 1);
  store_close(s);
}

/* ---- the interface: asynchronous commit, and the fault-injecting store ---- */

typedef struct {
  int calls, rc;
} commit_result;

static void on_commit(void *ud, int rc) {
  commit_result *r = ud;
  r->calls++;
  r->rc = rc;
}

/* Submits b and runs the loop until its callback came; returns its rc. */
static int commit_async(uv_loop_t *loop, store *s, store_batch *b) {
  commit_result r = {0};
  store_commit(s, b, on_commit, &r);
  cr_assert_eq(r.calls, 0, "the callback never runs inside store_commit");
  while (r.calls == 0) uv_run(loop, UV_RUN_ONCE);
  cr_assert_eq(r.calls, 1);
  return r.rc;
}

static store *open_async(uv_loop_t *loop) {
  store *s = NULL;
  char err[256];
  int rc = store_sqlite_open(dir, 0, loop, &s, err, sizeof err);
  cr_assert_eq(rc, 0, "store_sqlite_open: %s (%s)", wsy_errname(rc), err);
  cr_assert_str_eq(store_backend(s), "sqlite");
  return s;
}

static int room_exists(store *s, const char *room) {
  store_room_info info;
  cr_assert_eq(store_room_get(s, room, &info), 0);
  return info.exists;
}

Test(store, async_commit_reports_on_the_loop) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  store *s = open_async(&loop);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e1");
  add_op(b, "r", 1, "a", "{\"x\":1}", "u:d", "c1");
  cr_assert_eq(commit_async(&loop, s, b), 0);
  store_batch_free(b);
  cr_assert(room_exists(s, "r"));
  b = store_batch_new();
  add_op(b, "r", 3, "a", "{\"x\":1}", NULL, NULL); /* a gap: refused as a whole */
  cr_assert_eq(commit_async(&loop, s, b), WSY_INVAL);
  cr_assert(strstr(store_batch_error(b), "does not follow"), "%s", store_batch_error(b));
  store_batch_free(b);
  store_close(s);
  cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(store, fault_store_fails_armed_commits_and_stores_nothing) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  store *s = store_fault_new(open_async(&loop), &loop);
  cr_assert_str_eq(store_backend(s), "fault");
  store_fault_arm(s, STORE_FAULT_COMMIT, 1, 1); /* the second commit fails */
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e1");
  cr_assert_eq(commit_async(&loop, s, b), 0);
  store_batch_free(b);
  b = store_batch_new();
  add_op(b, "r", 1, "a", "{\"x\":1}", "u:d", "c1");
  cr_assert_eq(commit_async(&loop, s, b), WSY_IO);
  cr_assert(strstr(store_batch_error(b), "injected"), "%s", store_batch_error(b));
  store_room_info info;
  cr_assert_eq(store_room_get(s, "r", &info), 0);
  cr_assert_eq(info.seq, 0, "a failed commit changed nothing");
  cr_assert_eq(store_dedupe_get(s, "u:d", "c1", NULL, NULL), WSY_NOT_FOUND);
  /* A failed batch may be committed again. */
  cr_assert_eq(commit_async(&loop, s, b), 0);
  store_batch_free(b);
  cr_assert_eq(store_room_get(s, "r", &info), 0);
  cr_assert_eq(info.seq, 1);
  store_close(s);
  uv_run(&loop, UV_RUN_DEFAULT); /* the fault store's handle closes */
  cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(store, fault_store_fails_reads_and_dedupe_lookups) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  store *s = store_fault_new(open_async(&loop), &loop);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e1");
  add_op(b, "r", 1, "a", "{\"x\":1}", "u:d", "c1");
  cr_assert_eq(commit_async(&loop, s, b), 0);
  store_batch_free(b);
  store_fault_arm(s, STORE_FAULT_DEDUPE, 0, 2);
  uint64_t seq = 0;
  cr_assert_eq(store_dedupe_get(s, "u:d", "c1", NULL, &seq), WSY_IO);
  cr_assert_eq(store_dedupe_get(s, "u:d", "c1", NULL, &seq), WSY_IO);
  cr_assert_eq(store_dedupe_get(s, "u:d", "c1", NULL, &seq), 0);
  cr_assert_eq(seq, 1);
  store_fault_arm(s, STORE_FAULT_READ, 0, 1);
  store_room_info info;
  cr_assert_eq(store_room_get(s, "r", &info), WSY_IO);
  cr_assert_eq(store_room_get(s, "r", &info), 0);
  cr_assert(info.exists);
  store_close(s);
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_assert_eq(uv_loop_close(&loop), 0);
}

/* Writes text into the fault store's control file ctl. */
static void write_ctl(const char *ctl, const char *text) {
  FILE *f = fopen(ctl, "w");
  cr_assert_not_null(f);
  fputs(text, f);
  fclose(f);
}

/* A fault store over a new asynchronous store on *loop (initialized here),
 * controlled by the file ctl names (DIR/faults). */
static store *fault_store_controlled(uv_loop_t *loop, char ctl[512]) {
  uv_loop_init(loop);
  store *s = store_fault_new(open_async(loop), loop);
  snprintf(ctl, 512, "%s/faults", dir);
  store_fault_control(s, ctl);
  return s;
}

Test(store, fault_store_control_file) {
  uv_loop_t loop;
  char ctl[512];
  store *s = fault_store_controlled(&loop, ctl);
  write_ctl(ctl, "commit 2\nread 1\n");
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e1");
  cr_assert_eq(commit_async(&loop, s, b), WSY_IO);
  FILE *f = fopen(ctl, "r");
  cr_assert_not_null(f, "what is left stays in the file");
  char line[64] = "";
  cr_assert_not_null(fgets(line, sizeof line, f));
  fclose(f);
  cr_assert_str_eq(line, "commit 1\n");
  cr_assert_eq(commit_async(&loop, s, b), WSY_IO);
  store_room_info info;
  cr_assert_eq(store_room_get(s, "r", &info), WSY_IO);
  cr_assert_eq(access(ctl, F_OK), -1, "nothing left: the file is gone");
  cr_assert_eq(commit_async(&loop, s, b), 0);
  store_batch_free(b);
  cr_assert(room_exists(s, "r"));
  store_close(s);
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_assert_eq(uv_loop_close(&loop), 0);
}

/* "delay MS" holds the next commit that long, then it goes on (through the
 * commit faults armed, if any); a store closed with a commit held drops it. */
Test(store, fault_store_delay_holds_the_next_commit) {
  uv_loop_t loop;
  char ctl[512];
  store *s = fault_store_controlled(&loop, ctl);
  write_ctl(ctl, "delay 1\n");
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e1");
  cr_assert_eq(commit_async(&loop, s, b), 0, "held, then committed");
  store_batch_free(b);
  cr_assert(room_exists(s, "r"));
  cr_assert_eq(access(ctl, F_OK), -1, "the delay was taken: the file is gone");
  /* held a minute: not answered, not stored, and dropped by the close */
  write_ctl(ctl, "delay 60000\ncommit 1\n");
  b = store_batch_new();
  store_batch_room_create(b, "q", "e1");
  commit_result r = {0};
  store_commit(s, b, on_commit, &r);
  for (int i = 0; i < 10; i++) uv_run(&loop, UV_RUN_NOWAIT);
  cr_assert_eq(r.calls, 0, "held");
  cr_assert(!room_exists(s, "q"));
  FILE *f = fopen(ctl, "r");
  cr_assert_not_null(f, "the commit fault is still armed");
  char line[64] = "";
  cr_assert_not_null(fgets(line, sizeof line, f));
  fclose(f);
  cr_assert_str_eq(line, "commit 1\n");
  store_close(s);
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_assert_eq(r.calls, 0, "a commit held at close is never answered");
  store_batch_free(b);
  cr_assert_eq(uv_loop_close(&loop), 0);
}

typedef struct {
  int calls, rc;
} fetch_result;

static void on_fetch(void *ud, int rc, store *snap) {
  fetch_result *r = ud;
  r->calls++;
  r->rc = rc;
  cr_assert_null(snap);
}

/* "delay-fetch MS" makes the next store_fetch later: accepted at once, and
 * answered as the inner store answers it then (SQLite refuses fetches:
 * WSY_INVAL, through the callback now); a store closed first drops it. */
Test(store, fault_store_delay_fetch_makes_the_next_fetch_later) {
  uv_loop_t loop;
  char ctl[512];
  store *s = fault_store_controlled(&loop, ctl);
  cr_assert_eq(store_fetch(s, "r", STORE_FETCH_LOG, 0, on_fetch, NULL), WSY_INVAL, "not armed: as the inner store");
  write_ctl(ctl, "delay-fetch 1\n");
  fetch_result r = {0};
  cr_assert_eq(store_fetch(s, "r", STORE_FETCH_LOG, 0, on_fetch, &r), 0);
  cr_assert_eq(r.calls, 0);
  cr_assert_eq(access(ctl, F_OK), -1, "the delay was taken: the file is gone");
  while (r.calls == 0) uv_run(&loop, UV_RUN_ONCE);
  cr_assert_eq(r.rc, WSY_INVAL);
  write_ctl(ctl, "delay-fetch 60000\n");
  fetch_result held = {0};
  cr_assert_eq(store_fetch(s, "r", STORE_FETCH_LOG, 0, on_fetch, &held), 0);
  for (int i = 0; i < 10; i++) uv_run(&loop, UV_RUN_NOWAIT);
  cr_assert_eq(held.calls, 0, "held");
  store_close(s);
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_assert_eq(held.calls, 0, "a fetch held at close is never answered");
  cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ---- listing and deleting rooms ------------------------------------------------ */

typedef struct {
  int n;
  char name[16][64];
  store_room_info info[16];
} room_list;

static int list_cb(const char *room, const store_room_info *info, void *ud) {
  room_list *l = ud;
  cr_assert_lt(l->n, 16);
  snprintf(l->name[l->n], 64, "%s", room);
  l->info[l->n++] = *info;
  return 0;
}

static room_list *list_rooms(store *s, const char *after, size_t limit) {
  static room_list l;
  memset(&l, 0, sizeof l);
  cr_assert_eq(store_rooms_list(s, after, limit, list_cb, &l), 0);
  return &l;
}

Test(store, rooms_list_in_name_order_with_paging) {
  store *s = open_ok(0);
  cr_assert_eq(list_rooms(s, NULL, 0)->n, 0);
  create_room(s, "c", "ec");
  create_room(s, "a", "ea");
  create_room(s, "b:1", "eb");
  store_batch *b = store_batch_new();
  add_op(b, "a", 1, "x", "{}", NULL, NULL);
  add_op(b, "a", 2, "x", "{}", NULL, NULL);
  commit_ok(s, b);

  room_list *l = list_rooms(s, NULL, 0);
  cr_assert_eq(l->n, 3);
  cr_assert_str_eq(l->name[0], "a");
  cr_assert_str_eq(l->name[1], "b:1");
  cr_assert_str_eq(l->name[2], "c");
  cr_assert_eq(l->info[0].exists, 1);
  cr_assert_str_eq(l->info[0].epoch, "ea");
  cr_assert_eq(l->info[0].seq, 2);
  cr_assert_eq(l->info[0].min_seq, 1);
  cr_assert_gt(l->info[0].created_ms, 1600000000000LL);

  l = list_rooms(s, "", 2);
  cr_assert_eq(l->n, 2);
  cr_assert_str_eq(l->name[1], "b:1");
  l = list_rooms(s, "b:1", 2);
  cr_assert_eq(l->n, 1);
  cr_assert_str_eq(l->name[0], "c");
  cr_assert_eq(list_rooms(s, "c", 2)->n, 0);
  l = list_rooms(s, "aa", 0); /* after a name that is not a room */
  cr_assert_eq(l->n, 2);
  cr_assert_str_eq(l->name[0], "b:1");
  store_close(s);
}

static int stop_list(const char *room, const store_room_info *info, void *ud) {
  (void)room, (void)info;
  return ++*(int *)ud == 2 ? 9 : 0;
}

Test(store, rooms_list_callback_stops_the_walk) {
  store *s = open_ok(0);
  create_room(s, "a", "e");
  create_room(s, "b", "e");
  create_room(s, "c", "e");
  int n = 0;
  cr_assert_eq(store_rooms_list(s, NULL, 0, stop_list, &n), 9);
  cr_assert_eq(n, 2);
  store_close(s);
}

Test(store, room_delete_removes_log_items_cursors_and_dedupe) {
  store *s = open_ok(0);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "doc:1", "old");
  store_batch_room_create(b, "doc:2", "keep");
  add_op(b, "doc:1", 1, "a", "{\"v\":1}", "alice:laptop", "c1");
  add_op(b, "doc:2", 1, "a", "{\"v\":2}", "alice:laptop", "c2");
  store_batch_cursor(b, "alice", "laptop", "doc:1", 1);
  store_batch_cursor(b, "alice", "laptop", "doc:2", 1);
  commit_ok(s, b);

  b = store_batch_new();
  store_batch_room_delete(b, "doc:1");
  commit_ok(s, b);
  cr_assert_eq(room_info(s, "doc:1").exists, 0);
  cr_assert_eq(history(s, "doc:1", 0, 0)->n, 0);
  cr_assert_eq(get_items(s, "doc:1")->n, 0);
  int nc = 0;
  cr_assert_eq(store_cursors(s, "doc:1", count_cb, &nc), 0);
  cr_assert_eq(nc, 0);
  cr_assert_eq(store_dedupe_get(s, "alice:laptop", "c1", NULL, NULL), WSY_NOT_FOUND);
  /* the other room is untouched */
  cr_assert_eq(room_info(s, "doc:2").exists, 1);
  cr_assert_eq(history(s, "doc:2", 0, 0)->n, 1);
  cr_assert_eq(get_items(s, "doc:2")->n, 1);
  cr_assert_eq(store_dedupe_get(s, "alice:laptop", "c2", NULL, NULL), 0);
  nc = 0;
  cr_assert_eq(store_cursors(s, "doc:2", count_cb, &nc), 0);
  cr_assert_eq(nc, 1);
  room_list *l = list_rooms(s, NULL, 0);
  cr_assert_eq(l->n, 1);
  cr_assert_str_eq(l->name[0], "doc:2");

  /* The name can be created again: a new room, seq from 1, the old cid is new. */
  b = store_batch_new();
  store_batch_room_create(b, "doc:1", "new");
  add_op(b, "doc:1", 1, "b", "{}", "alice:laptop", "c1");
  commit_ok(s, b);
  store_room_info ri = room_info(s, "doc:1");
  cr_assert_str_eq(ri.epoch, "new");
  cr_assert_eq(ri.seq, 1);
  cr_assert_eq(get_items(s, "doc:1")->n, 1);
  store_close(s);
}

Test(store, room_delete_of_a_missing_room_fails_the_batch) {
  store *s = open_ok(0);
  create_room(s, "r", "e");
  store_batch *b = store_batch_new();
  add_op(b, "r", 1, "a", "{}", NULL, NULL);
  store_batch_room_delete(b, "nope");
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_NOT_FOUND);
  cr_assert(strstr(store_batch_error(b), "room_delete"), "%s", store_batch_error(b));
  store_batch_free(b);
  cr_assert_eq(room_info(s, "r").seq, 0, "the whole batch failed");
  store_close(s);
}

Test(store, room_delete_and_recreate_in_one_batch) {
  store *s = open_ok(0);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "one");
  add_op(b, "r", 1, "a", "{}", NULL, NULL);
  add_op(b, "r", 2, "a", "{}", NULL, NULL);
  store_batch_room_delete(b, "r");
  store_batch_room_create(b, "r", "two");
  add_op(b, "r", 1, "z", "{}", NULL, NULL);
  commit_ok(s, b);
  store_room_info ri = room_info(s, "r");
  cr_assert_str_eq(ri.epoch, "two");
  cr_assert_eq(ri.seq, 1);
  items *it = get_items(s, "r");
  cr_assert_eq(it->n, 1);
  cr_assert_str_eq(it->item[0], "z");
  store_close(s);
}

Test(store, fault_store_forwards_and_fails_rooms_list) {
  store *inner = open_ok(0);
  create_room(inner, "a", "e");
  store *s = store_fault_new(inner, NULL);
  cr_assert_eq(list_rooms(s, NULL, 0)->n, 1);
  store_fault_arm(s, STORE_FAULT_READ, 0, 1);
  room_list l = {0};
  cr_assert_eq(store_rooms_list(s, NULL, 0, list_cb, &l), WSY_IO);
  cr_assert_eq(l.n, 0);
  cr_assert_eq(list_rooms(s, NULL, 0)->n, 1, "one failure armed");
  store_close(s);
}

/* ---- texts rows (schema 3) ------------------------------------------------------ */

typedef struct {
  size_t n;
  char line[16][128];
} texts;

static int texts_cb(const char *item, const char *field, uint64_t rev, uint64_t seq, const char *ops, size_t len,
                    void *ud) {
  texts *t = ud;
  cr_assert_lt(t->n, 16);
  snprintf(t->line[t->n++], sizeof t->line[0], "%s.%s@%llu/%llu %.*s", item, field, (unsigned long long)rev,
           (unsigned long long)seq, (int)len, ops);
  return 0;
}

static texts *get_texts(store *s, const char *room) {
  static texts t;
  t.n = 0;
  cr_assert_eq(store_room_texts(s, room, texts_cb, &t), 0);
  return &t;
}

Test(store, text_ops_are_rows_until_the_item_is_written_again) {
  store *s = open_ok(0);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "t", "e");
  add_op(b, "t", 1, "a", "{\"f\":\"\"}", NULL, NULL);
  add_op(b, "t", 2, NULL, NULL, NULL, NULL); /* a text op's entry names no item */
  store_batch_text(b, "t", "a", "f", 2, 2, "[\"hi\"]", 6);
  add_op(b, "t", 3, NULL, NULL, NULL, NULL);
  store_batch_text(b, "t", "a", "f", 3, 3, "[2,\"!\"]", 7);
  add_op(b, "t", 4, "b", "{}", NULL, NULL);    /* another item's row leaves a's rows */
  commit_ok(s, b);
  texts *t = get_texts(s, "t");
  cr_assert_eq(t->n, 2);
  cr_assert_str_eq(t->line[0], "a.f@2/2 [\"hi\"]");
  cr_assert_str_eq(t->line[1], "a.f@3/3 [2,\"!\"]");
  items *it = get_items(s, "t");
  cr_assert_eq(it->n, 2, "the item rows are as the set left them");
  cr_assert_eq(it->version[0], 1);

  /* A snapshot of the item (an item entry) replaces its rows. */
  b = store_batch_new();
  add_op(b, "t", 5, NULL, NULL, NULL, NULL);
  store_batch_text(b, "t", "a", "f", 4, 5, "[{\"d\":1}]", 9);
  store_batch_item(b, "t", "a", "{\"f\":\"i!\"}", "{\"f\":4}", 5);
  commit_ok(s, b);
  cr_assert_eq(get_texts(s, "t")->n, 0);

  /* Rows survive a reopen; deleting the item or the room drops them. */
  b = store_batch_new();
  add_op(b, "t", 6, NULL, NULL, NULL, NULL);
  store_batch_text(b, "t", "a", "f", 5, 6, "[\"x\"]", 5);
  commit_ok(s, b);
  store_close(s);
  s = open_ok(0);
  cr_assert_eq(get_texts(s, "t")->n, 1);
  b = store_batch_new();
  add_op(b, "t", 7, "a", NULL, NULL, NULL); /* del a */
  commit_ok(s, b);
  cr_assert_eq(get_texts(s, "t")->n, 0);
  b = store_batch_new();
  add_op(b, "t", 8, NULL, NULL, NULL, NULL);
  store_batch_text(b, "t", "b", "g", 9, 8, "[\"y\"]", 5);
  store_batch_room_delete(b, "t");
  commit_ok(s, b);
  cr_assert_eq(get_texts(s, "t")->n, 0);
  store_close(s);
}

Test(store, a_text_row_needs_item_field_and_rev) {
  store *s = open_ok(0);
  create_room(s, "t", "e");
  store_batch *b = store_batch_new();
  add_op(b, "t", 1, NULL, NULL, NULL, NULL);
  store_batch_text(b, "t", "a", "f", 0, 1, "[\"x\"]", 5);
  cr_assert_eq(store_sqlite_commit_sync(s, b), WSY_INVAL);
  cr_assert(strstr(store_batch_error(b), "text entry needs"), "%s", store_batch_error(b));
  store_batch_free(b);
  cr_assert_eq(room_info(s, "t").seq, 0, "nothing of the failed batch was stored");
  store_close(s);
}
