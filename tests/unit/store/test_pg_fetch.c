/* test_pg_fetch.c -- asynchronous reads of one room (store.h, store_fetch):
 * what a snapshot answers, in what order fetches are answered, and how a
 * fetch fails (a server that stops answering) and recovers. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../../src/store/pg_int.h"
#include "pgtest.h"

static pgt T;
static pid_t stopped;

static void setup(void) { pgt_setup(&T); }
static void teardown(void) {
  if (stopped > 0) kill(stopped, SIGCONT);
  stopped = 0;
  pgt_teardown(&T);
}
TestSuite(pg_fetch, .init = setup, .fini = teardown);

/* What one fetch's callback saw, read from its snapshot during the call. */
typedef struct seen {
  const char *room; /* the room fetched ("r" when NULL) */
  int done, order, rc, items_rc, log_rc;
  store_room_info info;
  int items, texts, cursors, locks, log, other_room_rc, history_before_rc, stats_rc;
  uint64_t first_log, last_log;
  char item0[32], fields0[64];
} seen;

static int order_next;

static int on_item(const char *item, const char *fields, size_t len, const char *revs, uint64_t version, void *ud) {
  seen *s = ud;
  (void)revs, (void)version;
  if (!s->items++) {
    snprintf(s->item0, sizeof s->item0, "%s", item);
    snprintf(s->fields0, sizeof s->fields0, "%.*s", (int)len, fields);
  }
  return 0;
}
static int on_text(const char *i, const char *f, uint64_t rev, uint64_t seq, const char *ops, size_t l, void *ud) {
  (void)i, (void)f, (void)rev, (void)seq, (void)ops, (void)l;
  ((seen *)ud)->texts++;
  return 0;
}
static int on_cursor(const char *u, const char *d, uint64_t q, int64_t t, void *ud) {
  (void)u, (void)d, (void)q, (void)t;
  ((seen *)ud)->cursors++;
  return 0;
}
static int on_lock(const char *i, const char *h, const char *u, const char *d, uint64_t f, int64_t x, uint64_t v,
                   void *ud) {
  (void)i, (void)h, (void)u, (void)d, (void)f, (void)x, (void)v;
  ((seen *)ud)->locks++;
  return 0;
}
static int on_log(uint64_t seq, const char *msg, size_t len, void *ud) {
  seen *s = ud;
  (void)msg, (void)len;
  if (!s->log++) s->first_log = seq;
  s->last_log = seq;
  return 0;
}

static void on_fetch(void *ud, int rc, store *snap) {
  seen *s = ud;
  cr_assert_not(s->done, "answered twice");
  s->done = 1;
  s->order = ++order_next;
  s->rc = rc;
  if (rc) {
    cr_assert_null(snap);
    return;
  }
  const char *room = s->room ? s->room : "r";
  cr_assert_eq(store_read_begin(snap), 0);
  cr_assert_eq(store_room_get(snap, room, &s->info), 0);
  store_room_info other;
  s->other_room_rc = store_room_get(snap, "elsewhere", &other);
  s->items_rc = store_room_items(snap, room, on_item, s);
  int rc2 = store_room_texts(snap, room, on_text, s);
  rc2 |= store_cursors(snap, room, on_cursor, s);
  rc2 |= store_room_locks(snap, room, on_lock, s);
  cr_assert_eq(rc2 != 0, s->items_rc != 0, "state rows come all together, or not at all");
  s->log_rc = store_history(snap, room, 1, 0, on_log, s);
  s->history_before_rc = store_history(snap, room, 0, 0, on_log, NULL);
  store_stats_info st;
  s->stats_rc = store_stats(snap, &st);
  cr_assert_eq(store_read_end(snap), 0);
}

static store *room_with_everything(void) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  for (uint64_t q = 1; q <= 5; q++) pgt_op(b, "r", q, q < 5 ? "card" : "note", "{\"v\":1}", NULL, NULL);
  store_batch_text(b, "r", "note", "body", 1, 5, "[\"x\"]", 5);
  store_batch_cursor(b, "alice", "phone", "r", 3);
  store_batch_lock(b, "r", 0, "card", "n.s", "alice", "phone", 9, 1000);
  cr_assert_eq(pgt_commit(&T, s, b, 1), 0);
  return s;
}

Test(pg_fetch, a_snapshot_answers_what_was_fetched_and_nothing_else) {
  store *s = room_with_everything();
  seen a = {0}, b = {0}, c = {.room = "nowhere"};
  cr_assert_eq(store_fetch(s, "r", STORE_FETCH_STATE | STORE_FETCH_LOG, 1, on_fetch, &a), 0);
  cr_assert_not(a.done, "answered inside store_fetch");
  cr_assert_eq(store_fetch(s, "r", 0, 0, on_fetch, &b), 0); /* the row only */
  cr_assert_eq(store_fetch(s, "nowhere", STORE_FETCH_STATE, 0, on_fetch, &c), 0);
  seen *all[] = {&a, &b, &c};
  for (int i = 0; i < 3; i++)
    while (!all[i]->done) uv_run(&T.loop, UV_RUN_ONCE);
  cr_assert(a.order < b.order && b.order < c.order, "answered in the order asked");

  cr_assert_eq(a.rc, 0);
  cr_assert(a.info.exists);
  cr_assert_eq(a.info.seq, 5);
  cr_assert_eq(a.info.lockver, 1);
  cr_assert_eq(a.items, 2);
  cr_assert_str_eq(a.item0, "card");
  cr_assert_str_eq(a.fields0, "{\"v\":1}");
  cr_assert_eq(a.texts, 1);
  cr_assert_eq(a.cursors, 1);
  cr_assert_eq(a.locks, 1);
  cr_assert_eq(a.log, 4, "the log after seq 1");
  cr_assert_eq(a.first_log, 2);
  cr_assert_eq(a.last_log, 5);
  cr_assert_eq(a.other_room_rc, WSY_INVAL, "another room is not in the snapshot");
  cr_assert_eq(a.history_before_rc, WSY_INVAL, "the log before the fetch's seq is not in it");
  cr_assert_eq(a.stats_rc, WSY_INVAL);

  cr_assert_eq(b.rc, 0);
  cr_assert_eq(b.info.seq, 5);
  cr_assert_eq(b.items + b.texts + b.cursors + b.locks + b.log, 0, "a row-only fetch holds no rows of the room");
  cr_assert_eq(b.items_rc, WSY_INVAL);
  cr_assert_eq(b.log_rc, WSY_INVAL);
  cr_assert_eq(a.items_rc, 0);
  cr_assert_eq(a.log_rc, 0);

  cr_assert_eq(c.rc, 0);
  cr_assert_not(c.info.exists);
  cr_assert_eq(c.items, 0);

  uint64_t sync_reads, fetches, failures;
  store_read_counts(s, &sync_reads, &fetches, &failures);
  cr_assert_eq(fetches, 3);
  cr_assert_eq(failures, 0);
  pgt_close(&T, s);
}

Test(pg_fetch, a_server_that_stops_answering_fails_the_fetches_in_flight_and_the_next_ones_work) {
  store *s = room_with_everything();
  pg_store_set_timeouts(s, 1000, 300);
  seen warm = {0};
  cr_assert_eq(store_fetch(s, "r", 0, 0, on_fetch, &warm), 0); /* connects the fetch connection */
  while (!warm.done) uv_run(&T.loop, UV_RUN_ONCE);
  PGconn *admin = pgt_admin(T.url);
  char sql[160];
  snprintf(sql, sizeof sql, "SELECT pid FROM pg_stat_activity WHERE application_name = 'wsync-fetch'"
           " AND datname = current_database()");
  stopped = (pid_t)pgt_scalar(admin, sql);
  cr_assert_gt(stopped, 0);
  cr_assert_eq(kill(stopped, SIGSTOP), 0);
  seen a = {0}, b = {0};
  cr_assert_eq(store_fetch(s, "r", STORE_FETCH_STATE, 0, on_fetch, &a), 0);
  cr_assert_eq(store_fetch(s, "r", 0, 0, on_fetch, &b), 0);
  while (!a.done || !b.done) uv_run(&T.loop, UV_RUN_ONCE);
  cr_assert_eq(a.rc, WSY_IO, "%s", wsy_errname(a.rc));
  cr_assert_eq(b.rc, WSY_IO);
  cr_assert(a.order < b.order);
  kill(stopped, SIGCONT);
  stopped = 0;
  seen c = {0};
  cr_assert_eq(store_fetch(s, "r", STORE_FETCH_STATE, 0, on_fetch, &c), 0); /* a new connection */
  while (!c.done) uv_run(&T.loop, UV_RUN_ONCE);
  cr_assert_eq(c.rc, 0);
  cr_assert_eq(c.info.seq, 5);
  uint64_t sync_reads, fetches, failures;
  store_read_counts(s, &sync_reads, &fetches, &failures);
  cr_assert_eq(fetches, 4);
  cr_assert_eq(failures, 2);
  PQfinish(admin);
  pgt_close(&T, s);
}

Test(pg_fetch, fetches_unanswered_at_close_are_dropped) {
  store *s = room_with_everything();
  seen a = {0};
  cr_assert_eq(store_fetch(s, "r", STORE_FETCH_STATE, 0, on_fetch, &a), 0);
  pgt_close(&T, s); /* before any answer: cb never runs, nothing leaks (ASan) */
  for (int i = 0; i < 5; i++) uv_run(&T.loop, UV_RUN_NOWAIT);
  cr_assert_not(a.done);
}

/* ---- several rooms' rows (store_fetch_rooms: the cluster's periodic check) */

typedef struct rows_seen {
  int done, order, rc, rows, room_get_rc, items_rc;
  store_room_info r, quoted;
  int has_r, has_quoted, has_missing;
} rows_seen;

static int on_row(const char *name, const store_room_info *info, void *ud) {
  rows_seen *s = ud;
  s->rows++;
  if (!strcmp(name, "r")) s->r = *info, s->has_r = 1;
  else if (!strcmp(name, "q\"u\\o,t{e}")) s->quoted = *info, s->has_quoted = 1;
  else if (!strcmp(name, "missing")) s->has_missing = 1;
  return 0;
}

static void on_rows(void *ud, int rc, store *snap) {
  rows_seen *s = ud;
  cr_assert_not(s->done, "answered twice");
  s->done = 1;
  s->order = ++order_next;
  s->rc = rc;
  if (rc) return;
  const char *any[] = {"ignored"};
  cr_assert_eq(store_rooms_get(snap, any, 1, on_row, s), 0);
  store_room_info info;
  s->room_get_rc = store_room_get(snap, "r", &info);
  s->items_rc = store_room_items(snap, "r", on_item, &(seen){0});
}

Test(pg_fetch, several_rooms_rows_in_one_read_in_order_with_the_others) {
  store *s = room_with_everything();
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "q\"u\\o,t{e}", "e2");
  pgt_op(b, "q\"u\\o,t{e}", 1, "card", "{}", NULL, NULL);
  cr_assert_eq(pgt_commit(&T, s, b, 1), 0);
  const char *names[] = {"r", "missing", "q\"u\\o,t{e}"};
  seen before = {0};
  rows_seen rows = {0};
  cr_assert_eq(store_fetch(s, "r", 0, 0, on_fetch, &before), 0);
  cr_assert_eq(store_fetch_rooms(s, names, 3, on_rows, &rows), 0);
  cr_assert_not(rows.done, "answered inside store_fetch_rooms");
  while (!before.done || !rows.done) uv_run(&T.loop, UV_RUN_ONCE);
  cr_assert(before.order < rows.order, "answered in the order asked");
  cr_assert_eq(rows.rc, 0);
  cr_assert_eq(rows.rows, 2, "the rooms that exist");
  cr_assert(rows.has_r && rows.has_quoted && !rows.has_missing);
  cr_assert_eq(rows.r.seq, 5);
  cr_assert_eq(rows.r.lockver, 1);
  cr_assert_str_eq(rows.r.epoch, "e");
  cr_assert_eq(rows.quoted.seq, 1);
  cr_assert_str_eq(rows.quoted.epoch, "e2");
  cr_assert_eq(rows.room_get_rc, WSY_INVAL, "only the rows: not one room's reads");
  cr_assert_eq(rows.items_rc, WSY_INVAL);
  cr_assert_eq(store_fetch_rooms(s, names, 0, on_rows, &rows), WSY_INVAL, "no rooms: nothing to read");
  uint64_t sync_reads, fetches, failures;
  store_read_counts(s, &sync_reads, &fetches, &failures);
  cr_assert_eq(fetches, 2);
  cr_assert_eq(sync_reads, 0, "nothing read on the loop");
  pgt_close(&T, s);
}

/* ---- a page of the rooms by name (store_fetch_list: GET /v1/rooms) -------- */

typedef struct list_seen {
  int done, rc, rows, rooms_get_rc;
  char names[4][32];
  uint64_t seq0;
} list_seen;

static int on_listed(const char *name, const store_room_info *info, void *ud) {
  list_seen *s = ud;
  if (s->rows == 0) s->seq0 = info->seq;
  if (s->rows < 4) snprintf(s->names[s->rows], sizeof s->names[0], "%s", name);
  s->rows++;
  return 0;
}

static void on_list(void *ud, int rc, store *snap) {
  list_seen *s = ud;
  cr_assert_not(s->done, "answered twice");
  s->done = 1;
  s->rc = rc;
  if (rc) return;
  cr_assert_eq(store_rooms_list(snap, "ignored", 1, on_listed, s), 0);
  const char *any[] = {"r"};
  s->rooms_get_rc = store_rooms_get(snap, any, 1, on_listed, &(list_seen){0});
}

Test(pg_fetch, a_page_of_rooms_by_name_in_one_read) {
  store *s = room_with_everything();
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "a", "ea");
  store_batch_room_create(b, "s", "es");
  store_batch_room_create(b, "t", "et");
  cr_assert_eq(pgt_commit(&T, s, b, 1), 0);
  list_seen first = {0}, after_r = {0}, none = {0};
  cr_assert_eq(store_fetch_list(s, "", 2, on_list, &first), 0);
  cr_assert_eq(store_fetch_list(s, "r", 5, on_list, &after_r), 0);
  cr_assert_eq(store_fetch_list(s, "t", 5, on_list, &none), 0);
  cr_assert_not(first.done, "answered inside store_fetch_list");
  while (!first.done || !after_r.done || !none.done) uv_run(&T.loop, UV_RUN_ONCE);
  cr_assert_eq(first.rc, 0);
  cr_assert_eq(first.rows, 2, "limit rows");
  cr_assert_str_eq(first.names[0], "a");
  cr_assert_str_eq(first.names[1], "r");
  cr_assert_eq(after_r.rows, 2, "the rooms after r, by name");
  cr_assert_str_eq(after_r.names[0], "s");
  cr_assert_str_eq(after_r.names[1], "t");
  cr_assert_eq(none.rows, 0);
  cr_assert_eq(first.rooms_get_rc, WSY_INVAL, "only the list: not the rows of named rooms");
  cr_assert_eq(store_fetch_list(s, "", 0, on_list, &none), WSY_INVAL, "limit 0: nothing to read");
  uint64_t sync_reads, fetches, failures;
  store_read_counts(s, &sync_reads, &fetches, &failures);
  cr_assert_eq(fetches, 3);
  cr_assert_eq(sync_reads, 0, "nothing read on the loop");
  pgt_close(&T, s);
}

/* What a dedupe fetch's callback saw. */
typedef struct dedupe_seen {
  const char *dkey, *cid;
  int done, rc, get_rc, other_rc, room_rc;
  char room[STORE_ROOM_MAX + 1];
  uint64_t seq;
} dedupe_seen;

static void on_dedupe(void *ud, int rc, store *snap) {
  dedupe_seen *s = ud;
  cr_assert_not(s->done, "answered twice");
  s->done = 1;
  s->rc = rc;
  if (rc) return;
  s->get_rc = store_dedupe_get(snap, s->dkey, s->cid, s->room, &s->seq);
  s->other_rc = store_dedupe_get(snap, s->dkey, "another-cid", NULL, NULL);
  store_room_info info;
  s->room_rc = store_room_get(snap, "r", &info);
}

Test(pg_fetch, a_dedupe_record_in_one_read) {
  store *s = room_with_everything();
  store_batch *b = store_batch_new();
  pgt_op(b, "r", 6, "card", "{\"v\":2}", "alice:phone", "c-6");
  cr_assert_eq(pgt_commit(&T, s, b, 1), 0);
  dedupe_seen found = {.dkey = "alice:phone", .cid = "c-6"};
  dedupe_seen missing = {.dkey = "alice:phone", .cid = "c-7"};
  dedupe_seen other_device = {.dkey = "alice:laptop", .cid = "c-6"};
  cr_assert_eq(store_fetch_dedupe(s, found.dkey, found.cid, on_dedupe, &found), 0);
  cr_assert_eq(store_fetch_dedupe(s, missing.dkey, missing.cid, on_dedupe, &missing), 0);
  cr_assert_eq(store_fetch_dedupe(s, other_device.dkey, other_device.cid, on_dedupe, &other_device), 0);
  cr_assert_not(found.done, "answered inside store_fetch_dedupe");
  while (!found.done || !missing.done || !other_device.done) uv_run(&T.loop, UV_RUN_ONCE);
  cr_assert_eq(found.rc, 0);
  cr_assert_eq(found.get_rc, 0);
  cr_assert_str_eq(found.room, "r");
  cr_assert_eq(found.seq, 6);
  cr_assert_eq(found.other_rc, WSY_INVAL, "only the record read");
  cr_assert_eq(found.room_rc, WSY_INVAL, "no room row in a dedupe fetch");
  cr_assert_eq(missing.rc, 0);
  cr_assert_eq(missing.get_rc, WSY_NOT_FOUND);
  cr_assert_eq(other_device.get_rc, WSY_NOT_FOUND, "the record is per device");
  cr_assert_eq(store_fetch_dedupe(s, NULL, "c", on_dedupe, &missing), WSY_INVAL);
  uint64_t sync_reads, fetches, failures;
  store_read_counts(s, &sync_reads, &fetches, &failures);
  cr_assert_eq(fetches, 3);
  cr_assert_eq(sync_reads, 0, "nothing read on the loop");
  pgt_close(&T, s);
}

/* ---- a replica read again: only the items changed, or named ---------------- */

typedef struct changed_seen {
  uint64_t after; /* the fetch's */
  int done, rc, n;
  char rows[8][48]; /* "item:version:fields" ("-" for fields not handed) */
  int log;
} changed_seen;

static int on_changed_item(const char *item, const char *fields, size_t len, const char *revs, uint64_t version,
                           void *ud) {
  changed_seen *c = ud;
  (void)revs;
  cr_assert_lt(c->n, 8);
  snprintf(c->rows[c->n++], sizeof c->rows[0], "%s:%llu:%.*s", item, (unsigned long long)version,
           fields ? (int)len : 1, fields ? fields : "-");
  return 0;
}

static int count_log(uint64_t seq, const char *msg, size_t len, void *ud) {
  (void)seq, (void)msg, (void)len;
  ((changed_seen *)ud)->log++;
  return 0;
}

static void on_changes(void *ud, int rc, store *snap) {
  changed_seen *c = ud;
  c->done = 1;
  c->rc = rc;
  if (rc) return;
  cr_assert_eq(store_room_items(snap, "r", on_changed_item, c), 0);
  cr_assert_eq(store_history(snap, "r", c->after, 0, count_log, c), 0);
}

Test(pg_fetch, changes_hand_the_fields_of_items_written_since_or_named_only) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  pgt_op(b, "r", 1, "a", "{\"v\":1}", NULL, NULL);
  pgt_op(b, "r", 2, "b", "{\"v\":2}", NULL, NULL);
  pgt_op(b, "r", 3, "c", "{\"v\":3}", NULL, NULL);
  cr_assert_eq(pgt_commit(&T, s, b, 1), 0);
  const char *named[] = {"a", "nowhere"};
  changed_seen x = {.after = 2}, y = {.after = 3};
  cr_assert_eq(store_fetch_changes(s, "r", 0, 2, named, 2, on_changes, &x), 0);
  cr_assert_eq(store_fetch_changes(s, "r", 0, 3, NULL, 0, on_changes, &y), 0);
  while (!x.done || !y.done) uv_run(&T.loop, UV_RUN_ONCE);
  cr_assert_eq(x.rc, 0);
  cr_assert_eq(x.n, 3, "every item, by name");
  cr_assert_str_eq(x.rows[0], "a:1:{\"v\":1}", "named: handed whole");
  cr_assert_str_eq(x.rows[1], "b:2:-", "written at the seq asked from: not handed");
  cr_assert_str_eq(x.rows[2], "c:3:{\"v\":3}", "written after it: handed");
  cr_assert_eq(x.log, 1, "the log after seq 2");
  cr_assert_eq(y.rc, 0);
  cr_assert_eq(y.n, 3);
  cr_assert_eq(y.log, 0);
  for (int i = 0; i < 3; i++) cr_assert(strstr(y.rows[i], ":-"), "nothing changed after seq 3: %s", y.rows[i]);
  pgt_close(&T, s);
}

/* ---- a join's history: the last stored publishes, in the snapshot ---------- */

static int on_recent(uint64_t seq, const char *msg, size_t len, void *ud) {
  changed_seen *c = ud;
  cr_assert_lt(c->n, 8);
  snprintf(c->rows[c->n++], sizeof c->rows[0], "%llu:%.*s", (unsigned long long)seq, (int)(len > 17 ? 17 : len), msg);
  return 0;
}

static void on_recent_fetch(void *ud, int rc, store *snap) {
  changed_seen *c = ud;
  c->done = 1;
  c->rc = rc;
  if (rc) return;
  cr_assert_eq(store_recent_messages(snap, "r", 2, on_recent, c), 0);
  cr_assert_eq(store_recent_messages(snap, "r", STORE_FETCH_RECENT_MAX + 1, on_recent, c), WSY_INVAL,
               "more than the snapshot read");
  cr_assert_eq(store_recent_messages(snap, "elsewhere", 2, on_recent, c), WSY_INVAL);
}

static void on_fetch_norecent(void *ud, int rc, store *snap) {
  changed_seen *c = ud;
  c->done = 1;
  c->rc = rc;
  if (!rc) cr_assert_eq(store_recent_messages(snap, "r", 2, on_recent, c), WSY_INVAL, "not asked for: not read");
}

Test(pg_fetch, the_last_stored_publishes_in_one_read) {
  store *s = pgt_open(&T, T.url);
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "e");
  for (uint64_t q = 1; q <= 5; q++) {
    char msg[64];
    snprintf(msg, sizeof msg, "{\"type\":\"message\",\"n\":%llu}", (unsigned long long)q);
    /* publishes at 1, 2, 4; ops (with an item) at 3 and 5 */
    store_op op = {.room = "r", .seq = q, .item = q == 3 || q == 5 ? "x" : NULL, .fields_json = "{}", .version = q,
                   .msg = msg, .msg_len = strlen(msg)};
    store_batch_op(b, &op);
  }
  cr_assert_eq(pgt_commit(&T, s, b, 1), 0);
  changed_seen x = {0}, y = {0};
  cr_assert_eq(store_fetch(s, "r", STORE_FETCH_RECENT, 0, on_recent_fetch, &x), 0);
  cr_assert_eq(store_fetch(s, "r", STORE_FETCH_LOG, 0, on_fetch_norecent, &y), 0);
  while (!x.done || !y.done) uv_run(&T.loop, UV_RUN_ONCE);
  cr_assert_eq(x.rc, 0);
  cr_assert_eq(x.n, 2);
  cr_assert_str_eq(x.rows[0], "2:{\"type\":\"message\"", "the last two publishes, oldest first");
  cr_assert_str_eq(x.rows[1], "4:{\"type\":\"message\"");
  cr_assert_eq(y.rc, 0);
  pgt_close(&T, s);
}
