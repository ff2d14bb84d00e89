/* test_pg.c -- the store contract (store.h) on the PostgreSQL backend,
 * against a real server: each test in a database of its own (pgtest.h). */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/store/pg_int.h"
#include "pgtest.h"

static pgt T;

static void setup(void) { pgt_setup(&T); }
static void teardown(void) { pgt_teardown(&T); }

TestSuite(pg, .init = setup, .fini = teardown);

static void commit_ok(store *s, store_batch *b) {
  int rc = pgt_commit(&T, s, b, 0);
  cr_assert_eq(rc, 0, "commit: %s: %s", wsy_errname(rc), store_batch_error(b));
  store_batch_free(b);
}

static void create_room(store *s, const char *room, const char *epoch) {
  store_batch *b = store_batch_new();
  store_batch_room_create(b, room, epoch);
  commit_ok(s, b);
}

typedef struct {
  size_t n;
  uint64_t seq[12000];
  char msg[16][256];
} hist;

static int hist_cb(uint64_t seq, const char *msg, size_t len, void *ud) {
  hist *h = ud;
  cr_assert_lt(h->n, 12000);
  cr_assert_eq(strlen(msg), len);
  if (h->n < 16) snprintf(h->msg[h->n], 256, "%s", msg);
  h->seq[h->n++] = seq;
  return 0;
}

static hist *history(store *s, const char *room, uint64_t after, size_t limit) {
  static hist h;
  memset(&h, 0, sizeof h);
  int rc = store_history(s, room, after, limit, hist_cb, &h);
  cr_assert_eq(rc, 0, "history: %s", wsy_errname(rc));
  return &h;
}

typedef struct {
  size_t n;
  char item[16][64], fields[16][256], revs[16][64];
  uint64_t version[16];
} items;

static int items_cb(const char *item, const char *fields, size_t len, const char *revs, uint64_t version,
                    void *ud) {
  items *it = ud;
  cr_assert_lt(it->n, 16);
  cr_assert_eq(strlen(fields), len);
  snprintf(it->item[it->n], 64, "%s", item);
  snprintf(it->fields[it->n], 256, "%s", fields);
  snprintf(it->revs[it->n], 64, "%s", revs ? revs : "(null)");
  it->version[it->n++] = version;
  return 0;
}

static items *get_items(store *s, const char *room) {
  static items it;
  memset(&it, 0, sizeof it);
  cr_assert_eq(store_room_items(s, room, items_cb, &it), 0);
  return &it;
}

/* ---- schema ------------------------------------------------------------------ */

Test(pg, migrates_an_empty_database_once) {
  store *s = pgt_open(&T, T.url);
  store_stats_info st;
  cr_assert_eq(store_stats(s, &st), 0);
  cr_assert_eq(st.schema_version, PG_SCHEMA_VERSION);
  cr_assert_gt(st.db_bytes, 0);
  cr_assert_eq(st.wal_bytes, 0);
  pgt_close(&T, s);
  s = pgt_open(&T, T.url); /* a second open migrates nothing */
  pgt_close(&T, s);
  PGconn *c = pgt_admin(T.url);
  cr_assert_eq(pgt_scalar(c, "SELECT count(*) FROM wsync_schema"), 1);
  cr_assert_eq(pgt_scalar(c, "SELECT version FROM wsync_schema"), PG_SCHEMA_VERSION);
  cr_assert_eq(pgt_scalar(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN"
                             " ('rooms','ops','items','texts','dedupe','cursors','hook_pos')"), 7);
  PQfinish(c);
}

Test(pg, a_newer_schema_is_refused_and_left_alone) {
  store *s = pgt_open(&T, T.url);
  pgt_close(&T, s);
  PGconn *c = pgt_admin(T.url);
  pgt_exec(c, "UPDATE wsync_schema SET version = 99");
  char err[256] = "";
  s = (store *)1;
  int rc = store_pg_open(T.url, 0, &T.loop, &s, err, sizeof err);
  cr_assert_eq(rc, WSY_INVAL);
  cr_assert_null(s);
  cr_assert(strstr(err, "99") && strstr(err, "newer"), "%s", err);
  cr_assert_eq(pgt_scalar(c, "SELECT version FROM wsync_schema"), 99);
  PQfinish(c);
}

Test(pg, a_bad_url_is_an_error_with_a_reason) {
  char err[256] = "";
  store *s = NULL;
  cr_assert_eq(store_pg_open("", 0, &T.loop, &s, err, sizeof err), WSY_INVAL);
  /* a port nobody listens on: refused at once */
  cr_assert_eq(store_pg_open("postgres://nobody@127.0.0.1:1/none", 0, &T.loop, &s, err, sizeof err), WSY_IO);
  cr_assert_null(s);
  cr_assert(strstr(err, "cannot connect"), "%s", err);
}

typedef struct {
  const char *url;
  int rc;
  char err[256];
} opener;

static void *open_thread(void *arg) {
  opener *o = arg;
  store *s = NULL;
  o->rc = store_pg_open(o->url, 0, NULL, &s, o->err, sizeof o->err);
  store_close(s);
  return NULL;
}

Test(pg, nodes_starting_together_migrate_once) {
  opener o[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    o[i] = (opener){.url = T.url};
    cr_assert_eq(pthread_create(&th[i], NULL, open_thread, &o[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    cr_assert_eq(o[i].rc, 0, "node %d: %s", i, o[i].err);
  }
  PGconn *c = pgt_admin(T.url);
  cr_assert_eq(pgt_scalar(c, "SELECT count(*) FROM wsync_schema"), 1);
  PQfinish(c);
}

/* ---- rooms, ops, items, dedupe ------------------------------------------------ */

typedef struct rows_seen {
  int n;
  char name[4][16];
  uint64_t seq[4];
} rows_seen;

static int row_seen(const char *name, const store_room_info *info, void *ud) {
  rows_seen *r = ud;
  cr_assert_lt(r->n, 4);
  cr_assert(info->exists);
  snprintf(r->name[r->n], 16, "%s", name);
  r->seq[r->n++] = info->seq;
  return 0;
}

/* The cluster's periodic check reads every loaded room in one round trip:
 * the rooms that exist come back, with their rows; quotes and backslashes
 * in names are no problem for the array literal. */
Test(pg, several_rooms_are_read_at_once) {
  store *s = pgt_open(&T, T.url);
  create_room(s, "a", "ea");
  create_room(s, "q\"b\\", "eb");
  store_batch *b = store_batch_new();
  pgt_op(b, "a", 1, "i", "{}", NULL, NULL);
  pgt_op(b, "a", 2, "i", "{}", NULL, NULL);
  commit_ok(s, b);
  const char *names[] = {"a", "missing", "q\"b\\"};
  rows_seen r = {0};
  cr_assert_eq(store_rooms_get(s, names, 3, row_seen, &r), 0);
  cr_assert_eq(r.n, 2);
  int ia = strcmp(r.name[0], "a") == 0 ? 0 : 1;
  cr_assert_str_eq(r.name[ia], "a");
  cr_assert_eq(r.seq[ia], 2);
  cr_assert_str_eq(r.name[1 - ia], "q\"b\\");
  cr_assert_eq(r.seq[1 - ia], 0);
  r.n = 0;
  cr_assert_eq(store_rooms_get(s, names, 0, row_seen, &r), 0);
  cr_assert_eq(r.n, 0);
  pgt_close(&T, s);
}

Test(pg, ops_items_and_messages_come_back_byte_for_byte) {
  store *s = pgt_open(&T, T.url);
  store_room_info ri;
  cr_assert_eq(store_room_get(s, "board:1", &ri), 0);
  cr_assert_eq(ri.exists, 0);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "board:1", "ep0ch");
  pgt_op(b, "board:1", 1, "b", "{\"x\":1}", "u:d", "c1");
  pgt_op(b, "board:1", 2, "a", "{\"t\":\"h\\u00e9 \\\"q\\\" \xc3\xa9\"}", "u:d", "c2");
  /* a publish: no item, kept byte for byte (spaces, unicode) */
  const char *pub = "{\"type\":\"message\",  \"data\":\"\xe2\x82\xac\\n\"}";
  store_op op = {.room = "board:1", .seq = 3, .msg = pub, .msg_len = strlen(pub)};
  store_batch_op(b, &op);
  commit_ok(s, b);

  cr_assert_eq(store_room_get(s, "board:1", &ri), 0);
  cr_assert_eq(ri.exists, 1);
  cr_assert_str_eq(ri.epoch, "ep0ch");
  cr_assert_eq(ri.seq, 3);
  cr_assert_eq(ri.min_seq, 1);
  cr_assert_gt(ri.created_ms, 1600000000000LL);
  items *it = get_items(s, "board:1");
  cr_assert_eq(it->n, 2);
  cr_assert_str_eq(it->item[0], "a"); /* ordered by item */
  cr_assert_str_eq(it->fields[0], "{\"t\":\"h\\u00e9 \\\"q\\\" \xc3\xa9\"}");
  cr_assert_str_eq(it->revs[0], "(null)");
  cr_assert_eq(it->version[1], 1);
  hist *h = history(s, "board:1", 0, 0);
  cr_assert_eq(h->n, 3);
  cr_assert_str_eq(h->msg[2], pub);
  h = history(s, "board:1", 1, 1);
  cr_assert_eq(h->n, 1);
  cr_assert_eq(h->seq[0], 2);

  char room[STORE_ROOM_MAX + 1];
  uint64_t seq = 0;
  cr_assert_eq(store_dedupe_get(s, "u:d", "c2", room, &seq), 0);
  cr_assert_str_eq(room, "board:1");
  cr_assert_eq(seq, 2);
  cr_assert_eq(store_dedupe_get(s, "u:d", "nope", room, &seq), WSY_NOT_FOUND);

  /* an item deleted (fields NULL), one replaced with text revisions */
  b = store_batch_new();
  pgt_op(b, "board:1", 4, "b", NULL, NULL, NULL);
  store_op op2 = {.room = "board:1", .seq = 5, .item = "a", .fields_json = "{}", .version = 5,
                  .msg = "{}", .msg_len = 2, .revs_json = "{\"\":2,\"t\":3}"};
  store_batch_op(b, &op2);
  commit_ok(s, b);
  it = get_items(s, "board:1");
  cr_assert_eq(it->n, 1);
  cr_assert_str_eq(it->revs[0], "{\"\":2,\"t\":3}");
  cr_assert_eq(it->version[0], 5);
  pgt_close(&T, s);
}

static int dedupe_count(const char *dkey, const char *cid, void *ud) {
  (void)dkey, (void)cid;
  (*(int *)ud)++;
  return 0;
}

static int stop_at_2(uint64_t seq, const char *m, size_t l, void *ud) {
  (void)seq, (void)m, (void)l;
  return ++*(int *)ud == 2 ? 7 : 0;
}

Test(pg, empty_batch_dedupe_walk_and_callback_stop) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  commit_ok(s, b); /* nothing to do, still answered on the loop */
  b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  for (uint64_t i = 1; i <= 5; i++) {
    char cid[8];
    snprintf(cid, sizeof cid, "c%llu", (unsigned long long)i);
    pgt_op(b, "r", i, NULL, NULL, "u:d", cid);
  }
  commit_ok(s, b);
  int n = 0;
  cr_assert_eq(store_dedupe_each(s, dedupe_count, &n), 0);
  cr_assert_eq(n, 5);
  n = 0;
  cr_assert_eq(store_history(s, "r", 0, 0, stop_at_2, &n), 7);
  pgt_close(&T, s);
}

/* Schema 5: a log row is its op's dedupe record while it lives; a trim
** moves the records of the rows it drops into the dedupe table, so a cid
** stays a duplicate after its op is trimmed. */
static void dup_ok(store *s, const char *cid, const char *room, uint64_t seq) {
  char r[STORE_ROOM_MAX + 1] = "";
  uint64_t q = 0;
  cr_assert_eq(store_dedupe_get(s, "u:d", cid, r, &q), 0, "%s has no dedupe record", cid);
  cr_assert_str_eq(r, room);
  cr_assert_eq(q, seq, "%s: seq %llu", cid, (unsigned long long)q);
}

Test(pg, a_log_row_is_its_dedupe_record_and_a_trim_keeps_the_record) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  pgt_op(b, "r", 1, "i", "{}", "u:d", "c1");
  pgt_op(b, "r", 2, "i", "{}", "u:d", "c2");
  pgt_op(b, "r", 3, NULL, NULL, NULL, NULL);
  commit_ok(s, b);
  PGconn *c = pgt_admin(T.url);
  cr_assert_eq(pgt_scalar(c, "SELECT count(*) FROM dedupe"), 0, "no dedupe row per op");
  dup_ok(s, "c2", "r", 2);
  cr_assert_eq(store_dedupe_get(s, "u:d", "c9", NULL, NULL), WSY_NOT_FOUND);
  /* re-sent while its row lives, and twice in one batch: duplicates */
  b = store_batch_new();
  pgt_op(b, "r", 4, "i", "{}", "u:d", "c2");
  cr_assert_eq(pgt_commit(&T, s, b, 1), WSY_DUPLICATE);
  b = store_batch_new();
  pgt_op(b, "r", 4, "i", "{}", "u:d", "c5");
  pgt_op(b, "r", 5, "i", "{}", "u:d", "c5");
  cr_assert_eq(pgt_commit(&T, s, b, 1), WSY_DUPLICATE);
  cr_assert_eq(pgt_seq(s, "r"), 3);

  b = store_batch_new();
  store_batch_trim(b, "r", 3); /* drops seqs 1 and 2 */
  commit_ok(s, b);
  cr_assert_eq(history(s, "r", 0, 0)->n, 1);
  cr_assert_eq(pgt_scalar(c, "SELECT count(*) FROM dedupe"), 2);
  dup_ok(s, "c1", "r", 1);
  dup_ok(s, "c2", "r", 2);
  int n = 0;
  cr_assert_eq(store_dedupe_each(s, dedupe_count, &n), 0);
  cr_assert_eq(n, 2);
  b = store_batch_new(); /* re-sent after its op was trimmed: still a duplicate */
  pgt_op(b, "r", 4, "i", "{}", "u:d", "c1");
  cr_assert_eq(pgt_commit(&T, s, b, 1), WSY_DUPLICATE);
  cr_assert_eq(pgt_seq(s, "r"), 3);
  b = store_batch_new();
  pgt_op(b, "r", 4, "i", "{}", "u:d", "c4");
  commit_ok(s, b);
  dup_ok(s, "c4", "r", 4);
  b = store_batch_new(); /* a trim of nothing new moves nothing twice */
  store_batch_trim(b, "r", 3);
  commit_ok(s, b);
  cr_assert_eq(pgt_scalar(c, "SELECT count(*) FROM dedupe"), 2);

  b = store_batch_new(); /* a room's delete drops both kinds */
  store_batch_room_delete(b, "r");
  commit_ok(s, b);
  cr_assert_eq(store_dedupe_get(s, "u:d", "c1", NULL, NULL), WSY_NOT_FOUND);
  cr_assert_eq(store_dedupe_get(s, "u:d", "c4", NULL, NULL), WSY_NOT_FOUND);
  PQfinish(c);
  pgt_close(&T, s);
}

/* A database of schema 4 wrote a dedupe row beside every log row: after the
** step to 5 those records still answer, and a trim over them is no error. */
Test(pg, dedupe_records_written_before_schema_5_still_count) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  pgt_op(b, "r", 1, "i", "{}", "u:d", "c1");
  pgt_op(b, "r", 2, "i", "{}", "u:d", "c2");
  commit_ok(s, b);
  pgt_close(&T, s);
  PGconn *c = pgt_admin(T.url);
  pgt_exec(c, "DROP INDEX ops_dedupe; UPDATE wsync_schema SET version = 4;"
              " INSERT INTO dedupe(device, cid, room, seq) VALUES ('u:d', 'c1', 'r', 1), ('u:d', 'c2', 'r', 2),"
              " ('u:d', 'gone', 'r', 0)"); /* the last: an op trimmed under schema 4 */
  s = pgt_open(&T, T.url);
  cr_assert_eq(pgt_scalar(c, "SELECT version FROM wsync_schema"), PG_SCHEMA_VERSION);
  cr_assert_eq(pgt_scalar(c, "SELECT count(*) FROM pg_indexes WHERE indexname = 'ops_dedupe'"), 1);
  dup_ok(s, "c1", "r", 1);
  dup_ok(s, "gone", "r", 0);
  const char *again[] = {"c2", "gone"};
  for (int i = 0; i < 2; i++) {
    b = store_batch_new();
    pgt_op(b, "r", 3, "i", "{}", "u:d", again[i]);
    cr_assert_eq(pgt_commit(&T, s, b, 1), WSY_DUPLICATE, "%s", again[i]);
  }
  b = store_batch_new();
  store_batch_trim(b, "r", 3);
  commit_ok(s, b);
  cr_assert_eq(pgt_scalar(c, "SELECT count(*) FROM dedupe"), 3);
  dup_ok(s, "c2", "r", 2);
  b = store_batch_new();
  pgt_op(b, "r", 3, "i", "{}", "u:d", "c3");
  commit_ok(s, b);
  cr_assert_eq(pgt_seq(s, "r"), 3);
  PQfinish(c);
  pgt_close(&T, s);
}

/* The records are read in pages of 50,000 keys (pg_read.c), so that a node
 * starts whatever their number: every key of the log and of the table
 * arrives exactly once per place it is in, across page boundaries, the
 * log's then the table's, each in key order (the test database's collation
 * is C: bytewise, as strcmp). */
typedef struct pages_seen {
  long n, descents, both;
  char last[64];
} pages_seen;

static int page_key(const char *dkey, const char *cid, void *ud) {
  pages_seen *p = ud;
  char k[64];
  snprintf(k, sizeof k, "%s|%s", dkey, cid);
  if (p->n && strcmp(p->last, k) >= 0) p->descents++;
  p->both += !strcmp(k, "u:t|c7");
  snprintf(p->last, sizeof p->last, "%s", k);
  p->n++;
  return 0;
}

Test(pg, every_dedupe_record_is_read_once_in_pages) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  char cid[32];
  for (int i = 1; i <= 60001; i++) {
    snprintf(cid, sizeof cid, "c%d", i);
    pgt_op(b, "r", (uint64_t)i, "i", "{}", "u:d", cid);
  }
  pgt_op(b, "r", 60002, "i", "{}", "u:t", "c7"); /* also in the table below */
  commit_ok(s, b);
  PGconn *c = pgt_admin(T.url);
  pgt_exec(c, "INSERT INTO dedupe(device, cid, room, seq)"
              " SELECT 'u:t', 'c' || i, 'r', 1 FROM generate_series(1, 100002) i");
  pages_seen p = {0};
  cr_assert_eq(store_dedupe_each(s, page_key, &p), 0);
  cr_assert_eq(p.n, 60002 + 100002);
  cr_assert_eq(p.descents, 1, "the log's keys, then the table's, each ascending");
  cr_assert_eq(p.both, 2);
  PQfinish(c);
  pgt_close(&T, s);
}

Test(pg, a_broken_batch_changes_nothing_and_can_be_fixed) {
  store *s = pgt_open(&T, T.url);
  create_room(s, "r", "e");
  store_batch *b = store_batch_new();
  pgt_op(b, "r", 1, "x", "{}", NULL, NULL);
  pgt_op(b, "r", 3, "y", "{}", NULL, NULL); /* a gap inside the batch */
  cr_assert_eq(pgt_commit(&T, s, b, 1), WSY_INVAL);
  b = store_batch_new();
  pgt_op(b, "ghost", 1, NULL, NULL, NULL, NULL);
  cr_assert_eq(pgt_commit(&T, s, b, 0), WSY_NOT_FOUND);
  cr_assert(strstr(store_batch_error(b), "ghost"), "%s", store_batch_error(b));
  store_batch_free(b);
  b = store_batch_new();
  store_batch_room_create(b, "r2", "");
  cr_assert_eq(pgt_commit(&T, s, b, 1), WSY_INVAL); /* empty epoch */
  cr_assert_eq(pgt_seq(s, "r"), 0);
  cr_assert_eq(get_items(s, "r")->n, 0);
  /* a committed batch cannot be committed again */
  b = store_batch_new();
  pgt_op(b, "r", 1, "x", "{}", NULL, NULL);
  cr_assert_eq(pgt_commit(&T, s, b, 0), 0);
  cr_assert_eq(pgt_commit(&T, s, b, 1), WSY_INVAL);
  cr_assert_eq(pgt_seq(s, "r"), 1);
  pgt_close(&T, s);
}

/* ---- texts, cursors, trim, delete, hook positions ------------------------------ */

typedef struct {
  int n;
  char row[8][128];
} texts;

static int text_cb(const char *item, const char *field, uint64_t rev, uint64_t seq, const char *ops, size_t len,
                   void *ud) {
  texts *t = ud;
  cr_assert_lt(t->n, 8);
  cr_assert_eq(strlen(ops), len);
  snprintf(t->row[t->n++], 128, "%s/%s/%llu/%llu/%s", item, field, (unsigned long long)rev,
           (unsigned long long)seq, ops);
  return 0;
}

Test(pg, text_rows_until_the_item_is_written_again) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  pgt_op(b, "r", 1, "doc", "{\"t\":\"\"}", NULL, NULL);
  pgt_op(b, "r", 2, NULL, NULL, NULL, NULL);
  store_batch_text(b, "r", "doc", "t", 1, 2, "[\"ab\"]", 6);
  pgt_op(b, "r", 3, NULL, NULL, NULL, NULL);
  store_batch_text(b, "r", "doc", "t", 2, 3, "[2,\"c\"]", 7);
  commit_ok(s, b);
  texts t = {0};
  cr_assert_eq(store_room_texts(s, "r", text_cb, &t), 0);
  cr_assert_eq(t.n, 2);
  cr_assert_str_eq(t.row[0], "doc/t/1/2/[\"ab\"]");
  cr_assert_str_eq(t.row[1], "doc/t/2/3/[2,\"c\"]");
  b = store_batch_new(); /* the batch's item entry writes the row: texts go */
  pgt_op(b, "r", 4, NULL, NULL, NULL, NULL);
  store_batch_item(b, "r", "doc", "{\"t\":\"abc\"}", "{\"t\":2}", 4);
  commit_ok(s, b);
  t.n = 0;
  cr_assert_eq(store_room_texts(s, "r", text_cb, &t), 0);
  cr_assert_eq(t.n, 0);
  cr_assert_str_eq(get_items(s, "r")->fields[0], "{\"t\":\"abc\"}");
  pgt_close(&T, s);
}

typedef struct {
  int n;
  char who[8][32];
  uint64_t seq[8];
} curs;

static int cursor_cb(const char *user, const char *device, uint64_t seq, int64_t ms, void *ud) {
  curs *c = ud;
  cr_assert_gt(ms, 0);
  snprintf(c->who[c->n], 32, "%s/%s", user, device);
  c->seq[c->n++] = seq;
  return 0;
}

Test(pg, cursors_only_grow) {
  store *s = pgt_open(&T, T.url);
  create_room(s, "r", "e");
  store_batch *b = store_batch_new();
  store_batch_cursor(b, "bob", "d1", "r", 5);
  store_batch_cursor(b, "alice", "d2", "r", 3);
  commit_ok(s, b);
  b = store_batch_new();
  store_batch_cursor(b, "bob", "d1", "r", 2); /* lower: kept at 5 */
  store_batch_cursor(b, "alice", "d2", "r", 9);
  commit_ok(s, b);
  curs c = {0};
  cr_assert_eq(store_cursors(s, "r", cursor_cb, &c), 0);
  cr_assert_eq(c.n, 2);
  cr_assert_str_eq(c.who[0], "alice/d2");
  cr_assert_eq(c.seq[0], 9);
  cr_assert_eq(c.seq[1], 5);
  pgt_close(&T, s);
}

Test(pg, trim_raises_min_seq_never_lowers_it) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  for (uint64_t i = 1; i <= 10; i++) pgt_op(b, "r", i, NULL, NULL, NULL, NULL);
  store_batch_trim(b, "r", 4); /* in the same batch: the row's seq is current */
  commit_ok(s, b);
  store_room_info ri;
  cr_assert_eq(store_room_get(s, "r", &ri), 0);
  cr_assert_eq(ri.min_seq, 4);
  hist *h = history(s, "r", 0, 0);
  cr_assert_eq(h->n, 7);
  cr_assert_eq(h->seq[0], 4);
  b = store_batch_new();
  store_batch_trim(b, "r", 2); /* lower: no change */
  commit_ok(s, b);
  cr_assert_eq(store_room_get(s, "r", &ri), 0);
  cr_assert_eq(ri.min_seq, 4);
  b = store_batch_new();
  store_batch_trim(b, "r", 100); /* clamped to seq + 1 */
  commit_ok(s, b);
  cr_assert_eq(store_room_get(s, "r", &ri), 0);
  cr_assert_eq(ri.min_seq, 11);
  cr_assert_eq(history(s, "r", 0, 0)->n, 0);
  b = store_batch_new();
  store_batch_trim(b, "ghost", 2);
  cr_assert_eq(pgt_commit(&T, s, b, 1), WSY_NOT_FOUND);
  pgt_close(&T, s);
}

/* A fence moves its room's row to the last op of the run at once; the
** runs end where a trim reads the row's seq, and go on after it. */
Test(pg, a_fence_moves_to_its_runs_end_and_a_trim_between_runs_sees_the_seq_so_far) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "a", "e");
  store_batch_room_create(b, "b", "e");
  commit_ok(s, b);
  b = store_batch_new();
  pgt_op(b, "a", 1, "i", "{}", NULL, NULL);
  pgt_op(b, "b", 1, "i", "{}", NULL, NULL);
  pgt_op(b, "a", 2, "i", "{}", NULL, NULL);
  pgt_op(b, "a", 3, "i", "{}", NULL, NULL);
  store_batch_trim(b, "a", 100); /* clamped to the seq then: 3 + 1 */
  pgt_op(b, "a", 4, "i", "{}", NULL, NULL);
  pgt_op(b, "b", 2, "i", "{}", NULL, NULL);
  pgt_op(b, "a", 5, "i", "{}", NULL, NULL);
  commit_ok(s, b);
  cr_assert_eq(pgt_seq(s, "a"), 5);
  cr_assert_eq(pgt_seq(s, "b"), 2);
  store_room_info ri;
  cr_assert_eq(store_room_get(s, "a", &ri), 0);
  cr_assert_eq(ri.min_seq, 4, "the trim saw seq %" PRIu64, ri.min_seq - 1);
  hist *h = history(s, "a", 0, 0);
  cr_assert_eq(h->n, 2);
  cr_assert_eq(h->seq[0], 4);
  /* the next batch follows on; one that starts from an old seq is fenced out whole */
  b = store_batch_new();
  pgt_op(b, "a", 6, "i", "{}", NULL, NULL);
  pgt_op(b, "b", 3, "i", "{}", NULL, NULL);
  commit_ok(s, b);
  b = store_batch_new();
  pgt_op(b, "b", 4, "i", "{}", NULL, NULL);
  pgt_op(b, "a", 6, "j", "{}", NULL, NULL);
  pgt_op(b, "a", 7, "j", "{}", NULL, NULL);
  cr_assert_eq(pgt_commit(&T, s, b, 1), WSY_STALE);
  cr_assert_eq(pgt_seq(s, "a"), 6);
  cr_assert_eq(pgt_seq(s, "b"), 3);
  pgt_close(&T, s);
}

static uint64_t hook_get(store *s, const char *hook, const char *room, const char *epoch) {
  uint64_t seq = 99;
  cr_assert_eq(store_hook_pos_get(s, hook, room, epoch, &seq), 0);
  return seq;
}

static int hook_count(const char *room, const char *epoch, uint64_t seq, void *ud) {
  (void)room, (void)epoch, (void)seq;
  (*(int *)ud)++;
  return 0;
}

Test(pg, delete_removes_everything_and_a_new_room_starts_over) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "old");
  store_batch_room_create(b, "keep", "k");
  pgt_op(b, "r", 1, "x", "{}", "u:d", "c1");
  pgt_op(b, "r", 2, NULL, NULL, NULL, NULL);
  store_batch_text(b, "r", "x", "t", 1, 2, "[]", 2);
  store_batch_cursor(b, "u", "d", "r", 2);
  store_batch_hook_pos(b, "h", "r", "old", 2);
  store_batch_hook_pos(b, "h", "r", "other", 7); /* not its epoch: dropped */
  store_batch_hook_pos(b, "h", "ghost", "e", 7);  /* no such room: dropped */
  pgt_op(b, "keep", 1, "y", "{}", "u:d", "c9");
  commit_ok(s, b);
  cr_assert_eq(hook_get(s, "h", "r", "old"), 2);
  cr_assert_eq(hook_get(s, "h", "r", "other"), 0);
  b = store_batch_new();
  store_batch_hook_pos(b, "h", "r", "old", 1); /* never goes back */
  commit_ok(s, b);
  cr_assert_eq(hook_get(s, "h", "r", "old"), 2);

  b = store_batch_new();
  store_batch_room_delete(b, "r");
  store_batch_room_create(b, "r", "new");
  pgt_op(b, "r", 1, NULL, NULL, NULL, NULL);
  commit_ok(s, b);
  store_room_info ri;
  cr_assert_eq(store_room_get(s, "r", &ri), 0);
  cr_assert_str_eq(ri.epoch, "new");
  cr_assert_eq(ri.seq, 1);
  cr_assert_eq(get_items(s, "r")->n, 0);
  curs c = {0};
  cr_assert_eq(store_cursors(s, "r", cursor_cb, &c), 0);
  cr_assert_eq(c.n, 0);
  cr_assert_eq(store_dedupe_get(s, "u:d", "c1", NULL, NULL), WSY_NOT_FOUND);
  cr_assert_eq(store_dedupe_get(s, "u:d", "c9", NULL, NULL), 0); /* another room's */
  int n = 0;
  cr_assert_eq(store_hook_positions(s, "h", hook_count, &n), 0);
  cr_assert_eq(n, 0);
  texts t = {0};
  cr_assert_eq(store_room_texts(s, "r", text_cb, &t), 0);
  cr_assert_eq(t.n, 0);
  b = store_batch_new();
  store_batch_room_delete(b, "ghost");
  cr_assert_eq(pgt_commit(&T, s, b, 1), WSY_NOT_FOUND);
  pgt_close(&T, s);
}

/* ---- listings, snapshots, stats ------------------------------------------------ */

typedef struct {
  int n;
  char names[8][16];
} names;

static int room_cb(const char *room, const store_room_info *info, void *ud) {
  names *l = ud;
  cr_assert_eq(info->exists, 1);
  cr_assert_str_eq(info->epoch, "e");
  snprintf(l->names[l->n++], 16, "%s", room);
  return 0;
}

Test(pg, rooms_list_bytewise_with_paging_and_recent_messages) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  const char *rooms[] = {"b", "a", "B", "c", "\xc3\xa9"};
  for (int i = 0; i < 5; i++) store_batch_room_create(b, rooms[i], "e");
  for (uint64_t i = 1; i <= 6; i++) {
    char msg[64];
    snprintf(msg, sizeof msg, "{\"type\":\"message\",\"n\":%llu}", (unsigned long long)i);
    store_op op = {.room = "a", .seq = i, .msg = msg, .msg_len = strlen(msg)};
    if (i == 3) op.msg = "{\"type\":\"op\"}", op.msg_len = 13;
    store_batch_op(b, &op);
  }
  commit_ok(s, b);
  names l = {0};
  cr_assert_eq(store_rooms_list(s, NULL, 0, room_cb, &l), 0);
  cr_assert_eq(l.n, 5);
  cr_assert_str_eq(l.names[0], "B"); /* bytewise: upper case first */
  cr_assert_str_eq(l.names[4], "\xc3\xa9");
  memset(&l, 0, sizeof l);
  cr_assert_eq(store_rooms_list(s, "a", 2, room_cb, &l), 0);
  cr_assert_eq(l.n, 2);
  cr_assert_str_eq(l.names[0], "b");
  cr_assert_str_eq(l.names[1], "c");
  static hist h;
  memset(&h, 0, sizeof h);
  cr_assert_eq(store_recent_messages(s, "a", 3, hist_cb, &h), 0);
  cr_assert_eq(h.n, 3);
  cr_assert_eq(h.seq[0], 4); /* the newest 3 publishes, oldest first; 3 is no message */
  cr_assert_eq(h.seq[2], 6);
  pgt_close(&T, s);
}

Test(pg, a_read_snapshot_does_not_see_later_commits) {
  store *s = pgt_open(&T, T.url);
  store *other = pgt_open(&T, T.url);
  create_room(s, "r", "e");
  cr_assert_eq(store_read_begin(s), 0);
  cr_assert_eq(pgt_seq(s, "r"), 0);
  store_batch *b = store_batch_new();
  pgt_op(b, "r", 1, "x", "{}", NULL, NULL);
  commit_ok(other, b);
  cr_assert_eq(pgt_seq(s, "r"), 0);         /* same snapshot */
  cr_assert_eq(get_items(s, "r")->n, 0);
  cr_assert_eq(store_read_end(s), 0);
  cr_assert_eq(pgt_seq(s, "r"), 1);
  pgt_close(&T, other);
  pgt_close(&T, s);
}

/* ---- a big batch --------------------------------------------------------------- */

Test(pg, ten_thousand_ops_in_one_batch) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  for (int r = 0; r < 10; r++) {
    char room[16];
    snprintf(room, sizeof room, "r%d", r);
    store_batch_room_create(b, room, "e");
  }
  for (uint64_t i = 0; i < 10000; i++) {
    char room[16], item[24], cid[24];
    snprintf(room, sizeof room, "r%d", (int)(i % 10));
    snprintf(item, sizeof item, "i%llu", (unsigned long long)(i % 7));
    snprintf(cid, sizeof cid, "c%llu", (unsigned long long)i);
    pgt_op(b, room, i / 10 + 1, item, "{\"v\":1}", "u:d", cid);
  }
  commit_ok(s, b);
  for (int r = 0; r < 10; r++) {
    char room[16];
    snprintf(room, sizeof room, "r%d", r);
    cr_assert_eq(pgt_seq(s, room), 1000);
  }
  hist *h = history(s, "r3", 0, 0);
  cr_assert_eq(h->n, 1000);
  for (size_t i = 0; i < h->n; i++) cr_assert_eq(h->seq[i], i + 1);
  int n = 0;
  cr_assert_eq(store_dedupe_each(s, dedupe_count, &n), 0);
  cr_assert_eq(n, 10000);
  pgt_close(&T, s);
}

/* ---- the set-based statements keep the entries' order (pg_batch.c) ------------- */

Test(pg, runs_of_items_and_log_rows_apply_as_one_by_one) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  /* names and JSON that an array literal must escape, kept byte for byte */
  const char *odd[] = {"NULL", "", "a,b", "{x}", "q\"uote", "back\\slash", "\xc3\xa9 \"\\\"\""};
  for (int i = 0; i < 7; i++) {
    char fields[64];
    snprintf(fields, sizeof fields, "{\"k\":\"%s\\\\\"}", i == 4 ? "\\\"" : "v");
    store_op op = {.room = "r", .seq = (uint64_t)i + 1, .item = odd[i], .fields_json = fields,
                   .version = (uint64_t)i + 1, .msg = odd[i], .msg_len = strlen(odd[i])};
    store_batch_op(b, &op);
  }
  pgt_op(b, "r", 8, "w", "{\"n\":1}", NULL, NULL);
  pgt_op(b, "r", 9, "w", NULL, NULL, NULL);        /* deleted ... */
  pgt_op(b, "r", 10, "w", "{\"n\":3}", NULL, NULL); /* ... and written again: the last wins */
  pgt_op(b, "r", 11, "gone", "{}", NULL, NULL);
  pgt_op(b, "r", 12, "gone", NULL, NULL, NULL);
  pgt_op(b, "r", 13, "t", "{\"s\":\"\"}", NULL, NULL);
  store_batch_text(b, "r", "t", "s", 1, 13, "[\"x\"]", 5); /* follows the write before it */
  pgt_op(b, "r", 14, "u", "{\"s\":\"\"}", NULL, NULL);
  store_batch_text(b, "r", "u", "s", 1, 14, "[\"y\"]", 5);
  store_batch_item(b, "r", "u", "{\"s\":\"y\"}", NULL, 14); /* written after its text: the text goes */
  commit_ok(s, b);

  items *it = get_items(s, "r");
  cr_assert_eq(it->n, 10, "%zu items", it->n);
  int seen = 0;
  for (size_t i = 0; i < it->n; i++) {
    if (!strcmp(it->item[i], "w")) {
      cr_assert_str_eq(it->fields[i], "{\"n\":3}");
      seen++;
    }
    if (!strcmp(it->item[i], "NULL")) {
      cr_assert_eq(it->version[i], 1);
      seen++;
    }
    if (!strcmp(it->item[i], "q\"uote")) {
      cr_assert_str_eq(it->fields[i], "{\"k\":\"\\\"\\\\\"}");
      seen++;
    }
    cr_assert_str_neq(it->item[i], "gone");
  }
  cr_assert_eq(seen, 3);
  cr_assert_str_eq(it->item[0], ""); /* bytewise order: "" first */
  hist *h = history(s, "r", 0, 7);
  for (int i = 0; i < 7; i++) cr_assert_str_eq(h->msg[i], odd[i]);
  texts t = {0};
  cr_assert_eq(store_room_texts(s, "r", text_cb, &t), 0);
  cr_assert_eq(t.n, 1);
  cr_assert_str_eq(t.row[0], "t/s/1/13/[\"x\"]");

  /* log rows before a delete in the same batch go with the room */
  b = store_batch_new();
  pgt_op(b, "r", 15, "z", "{}", "u:d", "c15");
  store_batch_room_delete(b, "r");
  store_batch_room_create(b, "r", "e2");
  pgt_op(b, "r", 1, "z", "{\"new\":1}", "u:d", "c16");
  commit_ok(s, b);
  h = history(s, "r", 0, 0);
  cr_assert_eq(h->n, 1);
  cr_assert_eq(store_dedupe_get(s, "u:d", "c15", NULL, NULL), WSY_NOT_FOUND);
  it = get_items(s, "r");
  cr_assert_eq(it->n, 1);
  cr_assert_str_eq(it->fields[0], "{\"new\":1}");

  /* the same cid twice in one batch: refused, nothing written */
  b = store_batch_new();
  pgt_op(b, "r", 2, NULL, NULL, "u:d", "twice");
  pgt_op(b, "r", 3, NULL, NULL, "u:d", "twice");
  cr_assert_eq(pgt_commit(&T, s, b, 1), WSY_DUPLICATE);
  cr_assert_eq(pgt_seq(s, "r"), 1);
  pgt_close(&T, s);
}
