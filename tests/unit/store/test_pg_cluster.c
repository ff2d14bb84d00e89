/* test_pg_cluster.c -- the PostgreSQL backend as a cluster's shared store:
 * fenced commits of two store objects on one database (two nodes), and
 * failures (a server stopped and restarted, a backend killed in the middle
 * of a commit, a backend that stops answering). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "../../../src/store/pg_int.h"
#include "pgtest.h"

static pgt T;
static pid_t stopped[2];
static char private_dir[256]; /* a test's own server, stopped after it */

static void pgtmp(const char *args, char *out, size_t outlen);

static void setup(void) { pgt_setup(&T); }
static void teardown(void) {
  for (int i = 0; i < 2; i++)
    if (stopped[i] > 0) kill(stopped[i], SIGCONT); /* a failed test must not leave one stopped */
  if (private_dir[0]) {
    char args[300];
    snprintf(args, sizeof args, "stop %s", private_dir);
    private_dir[0] = '\0';
    pgtmp(args, NULL, 0);
  }
  pgt_teardown(&T);
}

TestSuite(pg_fence, .init = setup, .fini = teardown);
TestSuite(pg_fail, .init = setup, .fini = teardown);

static void commit_ok(store *s, store_batch *b) {
  int rc = pgt_commit(&T, s, b, 0);
  cr_assert_eq(rc, 0, "commit: %s: %s", wsy_errname(rc), store_batch_error(b));
  store_batch_free(b);
}

static int count_hist(uint64_t seq, const char *m, size_t l, void *ud) {
  size_t *n = ud;
  (void)m, (void)l;
  cr_assert_eq(seq, *n + 1, "the log has a gap before %llu", (unsigned long long)seq);
  (*n)++;
  return 0;
}

static size_t log_len(store *s, const char *room) {
  size_t n = 0;
  cr_assert_eq(store_history(s, room, 0, 0, count_hist, &n), 0);
  return n;
}

static int count_cursor(const char *u, const char *d, uint64_t q, int64_t t, void *ud) {
  (void)u, (void)d, (void)q, (void)t;
  (*(int *)ud)++;
  return 0;
}

/* ---- fencing ------------------------------------------------------------------- */

Test(pg_fence, a_stale_seq_fails_the_whole_batch_and_names_the_room) {
  store *a = pgt_open(&T, T.url), *b = pgt_open(&T, T.url);
  store_batch *x = store_batch_new();
  store_batch_room_create(x, "r", "e");
  pgt_op(x, "r", 1, "i", "{\"by\":\"a\"}", "u:a", "a1");
  commit_ok(a, x);

  /* node b still believes r is at seq 0 */
  x = store_batch_new();
  store_batch_room_create(x, "other", "e");
  pgt_op(x, "other", 1, NULL, NULL, "u:b", "b0");
  pgt_op(x, "r", 1, "i", "{\"by\":\"b\"}", "u:b", "b1");
  store_batch_cursor(x, "u", "b", "r", 1);
  cr_assert_eq(pgt_commit(&T, b, x, 0), WSY_STALE);
  const char *why = store_batch_error(x);
  cr_assert(strstr(why, "room r") && strstr(why, "holds seq 1"), "%s", why);
  store_batch_free(x);
  /* nothing of it was written */
  store_room_info ri;
  cr_assert_eq(store_room_get(a, "other", &ri), 0);
  cr_assert_eq(ri.exists, 0);
  cr_assert_eq(pgt_seq(a, "r"), 1);
  cr_assert_eq(store_dedupe_get(a, "u:b", "b0", NULL, NULL), WSY_NOT_FOUND);
  int n = 0;
  cr_assert_eq(store_cursors(a, "r", count_cursor, &n), 0);
  cr_assert_eq(n, 0);

  /* b catches up and commits after a */
  x = store_batch_new();
  pgt_op(x, "r", 2, "i", "{\"by\":\"b\"}", "u:b", "b1");
  commit_ok(b, x);
  cr_assert_eq(pgt_seq(a, "r"), 2);
  cr_assert_eq(log_len(a, "r"), 2);
  pgt_close(&T, b);
  pgt_close(&T, a);
}

Test(pg_fence, a_cid_committed_by_another_node_is_a_duplicate) {
  store *a = pgt_open(&T, T.url), *b = pgt_open(&T, T.url);
  store_batch *x = store_batch_new();
  store_batch_room_create(x, "r", "e");
  pgt_op(x, "r", 1, "i", "{}", "alice:phone", "cid-7");
  commit_ok(a, x);
  x = store_batch_new(); /* the client re-sent cid-7 to node b */
  pgt_op(x, "r", 2, "i", "{}", "alice:phone", "cid-7");
  cr_assert_eq(pgt_commit(&T, b, x, 0), WSY_DUPLICATE);
  const char *why = store_batch_error(x);
  cr_assert(strstr(why, "cid-7") && strstr(why, "alice:phone"), "%s", why);
  store_batch_free(x);
  cr_assert_eq(pgt_seq(b, "r"), 1);
  char room[STORE_ROOM_MAX + 1];
  uint64_t seq = 0;
  cr_assert_eq(store_dedupe_get(b, "alice:phone", "cid-7", room, &seq), 0);
  cr_assert_eq(seq, 1);
  pgt_close(&T, b);
  pgt_close(&T, a);
}

typedef struct lock_rows {
  int n;
  char item[4][16], holder[4][32], user[4][16];
  uint64_t fence[4], version[4];
  int64_t expires[4];
} lock_rows;

static int lock_row(const char *i, const char *h, const char *u, const char *d, uint64_t f, int64_t x, uint64_t v,
                    void *ud) {
  lock_rows *r = ud;
  cr_assert_lt(r->n, 4);
  snprintf(r->item[r->n], 16, "%s", i);
  snprintf(r->holder[r->n], 32, "%s", h ? h : "(free)");
  snprintf(r->user[r->n], 16, "%s", u ? u : "(free)");
  cr_assert_eq(!h, !d, "user and device go with the holder");
  r->fence[r->n] = f;
  r->expires[r->n] = x;
  r->version[r->n] = v;
  r->n++;
  return 0;
}

static lock_rows locks_of(store *s, const char *room) {
  lock_rows r = {0};
  cr_assert_eq(store_room_locks(s, room, lock_row, &r), 0);
  return r;
}

static uint64_t lockver_of(store *s, const char *room) {
  store_room_info info;
  cr_assert_eq(store_room_get(s, room, &info), 0);
  return info.lockver;
}

static void op_at(store_batch *x, const char *room, uint64_t seq, uint64_t locks_at) {
  store_op op = {.room = room, .seq = seq, .item = "card", .fields_json = "{}", .version = seq, .msg = "{}",
                 .msg_len = 2, .locks_at = locks_at};
  store_batch_op(x, &op);
}

/* Two nodes deciding on the same lock: the second, decided on the item's
 * row before the first's grant, is fenced out; so is an op checked against
 * the locks before that grant; an op that names no version is not; and a
 * change of another item, decided on the same old view, is not either. */
Test(pg_fence, lock_changes_are_fenced_by_their_row_and_the_ops_checked_against_them_by_the_lock_version) {
  store *a = pgt_open(&T, T.url), *b = pgt_open(&T, T.url);
  store_batch *x = store_batch_new();
  store_batch_room_create(x, "r", "e");
  commit_ok(a, x);
  cr_assert_eq(lockver_of(b, "r"), 0);

  x = store_batch_new(); /* node a grants card to alice's phone */
  store_batch_lock(x, "r", 0, "card", "na.s1", "alice", "phone", 100, 5000);
  commit_ok(a, x);
  cr_assert_eq(lockver_of(b, "r"), 1);
  lock_rows l = locks_of(b, "r");
  cr_assert_eq(l.n, 1);
  cr_assert_str_eq(l.item[0], "card");
  cr_assert_str_eq(l.holder[0], "na.s1");
  cr_assert_str_eq(l.user[0], "alice");
  cr_assert_eq(l.fence[0], 100);
  cr_assert_eq(l.expires[0], 5000);
  cr_assert_eq(l.version[0], 1);

  x = store_batch_new(); /* node b decided on no row: card looked free */
  store_batch_lock(x, "r", 0, "card", "nb.s2", "bob", "tab", 101, 6000);
  cr_assert_eq(pgt_commit(&T, b, x, 0), WSY_STALE);
  cr_assert_not_null(strstr(store_batch_error(x), "lock row of card is at version 1, the batch expected none"), "%s",
                     store_batch_error(x));
  cr_assert_not_null(strstr(store_batch_error(x), "(lock, room r"), "%s", store_batch_error(x));
  store_batch_free(x);
  x = store_batch_new(); /* and wrote card, checked against lock version 0 */
  op_at(x, "r", 1, 0 + 1);
  cr_assert_eq(pgt_commit(&T, b, x, 0), WSY_STALE);
  store_batch_free(x);
  cr_assert_eq(pgt_seq(b, "r"), 0, "nothing of either batch was stored");
  cr_assert_str_eq(locks_of(b, "r").holder[0], "na.s1");
  cr_assert_eq(lockver_of(b, "r"), 1);

  x = store_batch_new(); /* pen, on the same old view: no other change of pen, stored */
  store_batch_lock(x, "r", 0, "pen", "nb.s2", "bob", "tab", 101, 6000);
  commit_ok(b, x);
  cr_assert_eq(lockver_of(a, "r"), 2, "every lock change moves the room's lock version");
  l = locks_of(a, "r");
  cr_assert_eq(l.n, 2);
  cr_assert_str_eq(l.item[1], "pen");
  cr_assert_str_eq(l.holder[1], "nb.s2");
  cr_assert_eq(l.version[1], 1);

  x = store_batch_new(); /* checked against lock version 1, the view before pen: fenced out */
  op_at(x, "r", 1, 1 + 1);
  cr_assert_eq(pgt_commit(&T, b, x, 0), WSY_STALE);
  store_batch_free(x);
  x = store_batch_new(); /* checked against version 2, or not against locks: stored */
  op_at(x, "r", 1, 2 + 1);
  op_at(x, "r", 2, 0);
  commit_ok(b, x);
  cr_assert_eq(pgt_seq(a, "r"), 2);

  x = store_batch_new(); /* a releases: the row stays, with its fence, and no holder */
  store_batch_lock(x, "r", 1, "card", NULL, "ignored", "ignored", 100, 0);
  commit_ok(a, x);
  l = locks_of(b, "r");
  cr_assert_eq(l.n, 2);
  cr_assert_str_eq(l.holder[0], "(free)");
  cr_assert_eq(l.fence[0], 100);
  cr_assert_eq(l.version[0], 2);
  cr_assert_eq(lockver_of(b, "r"), 3);
  x = store_batch_new(); /* a release decided before that one: fenced out by the row */
  store_batch_lock(x, "r", 1, "card", NULL, NULL, NULL, 100, 0);
  cr_assert_eq(pgt_commit(&T, b, x, 0), WSY_STALE);
  store_batch_free(x);
  cr_assert_eq(lockver_of(b, "r"), 3, "a fenced-out change moves nothing");

  x = store_batch_new(); /* a lock in a room that does not exist */
  store_batch_lock(x, "nowhere", 0, "card", "na.s1", "alice", "phone", 1, 1);
  cr_assert_eq(pgt_commit(&T, a, x, 0), WSY_NOT_FOUND);
  store_batch_free(x);

  x = store_batch_new(); /* deleting the room deletes its locks; made again, it starts at version 0 */
  store_batch_room_delete(x, "r");
  store_batch_room_create(x, "r", "e2");
  commit_ok(a, x);
  cr_assert_eq(locks_of(b, "r").n, 0);
  cr_assert_eq(lockver_of(b, "r"), 0);
  x = store_batch_new(); /* a change decided on the old incarnation's row */
  store_batch_lock(x, "r", 2, "card", "na.s1", "alice", "phone", 102, 5000);
  cr_assert_eq(pgt_commit(&T, a, x, 0), WSY_STALE);
  cr_assert_not_null(strstr(store_batch_error(x), "is at version none"), "%s", store_batch_error(x));
  store_batch_free(x);
  pgt_close(&T, b);
  pgt_close(&T, a);
}

static const char *head_of(store *s, const char *room, char out[STORE_HEAD_MAX + 1]) {
  store_room_info info;
  cr_assert_eq(store_room_get(s, room, &info), 0);
  memcpy(out, info.head, STORE_HEAD_MAX + 1);
  return out;
}

/* Node a's batch 1 is fenced out; its batch 2, decided on top of batch 1,
 * expects batch 1's head and fails too, although node b's commit left the
 * room at exactly the seq batch 2 expects. */
/* Two nodes' stores, a and b, and room r that a made, its head a:1. */
static void room_made_by_a(store **a, store **b) {
  *a = pgt_open(&T, T.url);
  *b = pgt_open(&T, T.url);
  store_batch *x = store_batch_new();
  store_batch_room_create(x, "r", "e");
  store_batch_head(x, "r", NULL, "a:1", 0);
  commit_ok(*a, x);
}

Test(pg_fence, a_batch_decided_on_a_fenced_out_one_fails_with_it) {
  store *a, *b;
  room_made_by_a(&a, &b);
  char h[STORE_HEAD_MAX + 1];
  cr_assert_str_eq(head_of(b, "r", h), "a:1");

  store_batch *x = store_batch_new(); /* b commits seq 1-2 first */
  store_batch_head(x, "r", "a:1", "b:1", 0);
  pgt_op(x, "r", 1, "i", "{\"by\":\"b\"}", NULL, NULL);
  pgt_op(x, "r", 2, "i", "{\"by\":\"b\"}", NULL, NULL);
  commit_ok(b, x);

  x = store_batch_new(); /* a's batch 2: seq 1-2 on a:1 */
  store_batch_head(x, "r", "a:1", "a:2", 0);
  pgt_op(x, "r", 1, "i", "{\"by\":\"a\"}", NULL, NULL);
  pgt_op(x, "r", 2, "i", "{\"by\":\"a\"}", NULL, NULL);
  cr_assert_eq(pgt_commit(&T, a, x, 0), WSY_STALE);
  store_batch_free(x);
  x = store_batch_new(); /* a's batch 3, decided on batch 2: seq 3, which matches the store */
  store_batch_head(x, "r", "a:2", "a:3", 0);
  pgt_op(x, "r", 3, "i", "{\"by\":\"a\"}", NULL, NULL);
  cr_assert_eq(pgt_commit(&T, a, x, 0), WSY_STALE);
  cr_assert_not_null(strstr(store_batch_error(x), "b:1"), "%s", store_batch_error(x));
  store_batch_free(x);
  cr_assert_eq(pgt_seq(a, "r"), 2, "nothing of batches 2 and 3 was stored");
  cr_assert_str_eq(head_of(a, "r", h), "b:1");

  x = store_batch_new(); /* read again: decided on b:1 */
  store_batch_head(x, "r", "b:1", "a:4", 0);
  pgt_op(x, "r", 3, "i", "{\"by\":\"a\"}", NULL, NULL);
  commit_ok(a, x);
  x = store_batch_new();
  store_batch_head(x, "nowhere", NULL, "a:5", 0);
  cr_assert_eq(pgt_commit(&T, a, x, 0), WSY_NOT_FOUND);
  store_batch_free(x);
  pgt_close(&T, b);
  pgt_close(&T, a);
}

/* A batch of lock changes only has a soft head: it moves the head when it
 * is the one expected, and fails nothing when it is not (the rows fence
 * the changes); the node's next batch expects that head, so it is fenced
 * out when the head did not move. Made strict (an op joined the batch), it
 * fails as any head. */
Test(pg_fence, a_soft_head_moves_when_it_can_and_fails_nothing) {
  store *a, *b;
  room_made_by_a(&a, &b);
  char h[STORE_HEAD_MAX + 1];

  store_batch *x = store_batch_new(); /* a's lock on its own head: moved */
  store_batch_head(x, "r", "a:1", "a:2", 1);
  store_batch_lock(x, "r", 0, "card", "a.s1", "alice", "phone", 10, 5000);
  commit_ok(a, x);
  cr_assert_str_eq(head_of(b, "r", h), "a:2");

  x = store_batch_new(); /* b's lock on a head it has not seen: stored, the head stays */
  store_batch_head(x, "r", "a:1", "b:1", 1);
  store_batch_lock(x, "r", 0, "pen", "b.s1", "bob", "tab", 11, 5000);
  commit_ok(b, x);
  cr_assert_str_eq(head_of(a, "r", h), "a:2");
  cr_assert_eq(locks_of(a, "r").n, 2);
  x = store_batch_new(); /* b's next batch expects b:1: fenced out */
  store_batch_head(x, "r", "b:1", "b:2", 0);
  pgt_op(x, "r", 1, "i", "{}", NULL, NULL);
  cr_assert_eq(pgt_commit(&T, b, x, 0), WSY_STALE);
  store_batch_free(x);

  x = store_batch_new(); /* a soft head made strict by the op that followed */
  size_t k = store_batch_head(x, "r", "a:1", "b:3", 1);
  store_batch_lock(x, "r", 1, "pen", NULL, NULL, NULL, 11, 0);
  pgt_op(x, "r", 1, "i", "{}", NULL, NULL);
  store_batch_head_strict(x, k);
  cr_assert_eq(pgt_commit(&T, b, x, 0), WSY_STALE);
  cr_assert_not_null(strstr(store_batch_error(x), "its head is a:2"), "%s", store_batch_error(x));
  store_batch_free(x);
  cr_assert_eq(locks_of(a, "r").version[1], 1, "nothing of the strict batch was stored");

  x = store_batch_new(); /* on the right head, with an op after the lock: both stored */
  k = store_batch_head(x, "r", "a:2", "b:4", 1);
  store_batch_lock(x, "r", 1, "pen", NULL, NULL, NULL, 11, 0);
  pgt_op(x, "r", 1, "i", "{}", NULL, NULL);
  store_batch_head_strict(x, k);
  commit_ok(b, x);
  cr_assert_str_eq(head_of(a, "r", h), "b:4");
  cr_assert_eq(pgt_seq(a, "r"), 1);
  pgt_close(&T, b);
  pgt_close(&T, a);
}

static int released(const char *room, const char *item, uint64_t fence, void *ud) {
  int *n = ud;
  cr_assert_str_eq(room, "r");
  cr_assert_str_eq(item, "a");
  cr_assert_eq(fence, 11);
  (*n)++;
  return 0;
}

/* A node is gone: its sessions' locks are released in one transaction and
 * the room's lock version moves (decisions on the old locks fence out);
 * another node's lock, and a node whose id merely starts the same, stay. */
Test(pg_fence, the_locks_of_a_gone_node_are_released_at_once) {
  store *a = pgt_open(&T, T.url);
  store_batch *x = store_batch_new();
  store_batch_room_create(x, "r", "e");
  store_batch_lock(x, "r", 0, "a", "n1.s1", "alice", "phone", 11, 5000);
  store_batch_lock(x, "r", 0, "b", "n2.s2", "bob", "tab", 12, 5000);
  store_batch_lock(x, "r", 0, "c", "n10.s3", "carol", "pc", 13, 5000);
  commit_ok(a, x);
  int n = 0;
  cr_assert_eq(store_release_locks_of(a, "n1.", released, &n), 0);
  cr_assert_eq(n, 1);
  cr_assert_eq(lockver_of(a, "r"), 4);
  lock_rows l = locks_of(a, "r");
  cr_assert_eq(l.n, 3);
  cr_assert_str_eq(l.holder[0], "(free)");
  cr_assert_eq(l.fence[0], 11, "the fence stays with the row");
  cr_assert_eq(l.version[0], 2, "the row's version moved");
  cr_assert_eq(l.version[1], 1);
  cr_assert_str_eq(l.holder[1], "n2.s2");
  cr_assert_str_eq(l.holder[2], "n10.s3");
  n = 0;
  cr_assert_eq(store_release_locks_of(a, "n1.", released, &n), 0);
  cr_assert_eq(n, 0, "nothing left to release");
  cr_assert_eq(lockver_of(a, "r"), 4, "and no version moved");
  x = store_batch_new(); /* a decision on the row before the release */
  store_batch_lock(x, "r", 1, "a", "n2.s9", "bob", "tab", 14, 5000);
  cr_assert_eq(pgt_commit(&T, a, x, 0), WSY_STALE);
  store_batch_free(x);
  pgt_close(&T, a);
}

typedef struct release_seen {
  int done, rc, n, other_rc, room_rc;
} release_seen;

static void on_released(void *ud, int rc, store *snap) {
  release_seen *r = ud;
  cr_assert_not(r->done, "answered twice");
  r->done = 1;
  r->rc = rc;
  if (rc) return;
  r->rc = store_release_locks_of(snap, "n1.", released, &r->n);
  r->other_rc = store_release_locks_of(snap, "n2.", released, &r->n);
  store_room_info info;
  r->room_rc = store_room_get(snap, "r", &info);
}

/* The same release without blocking: one statement on the read connection,
 * its rows walked from the answer, the lock version moved as above. */
Test(pg_fence, the_locks_of_a_gone_node_are_released_without_blocking) {
  store *a = pgt_open(&T, T.url);
  store_batch *x = store_batch_new();
  store_batch_room_create(x, "r", "e");
  store_batch_lock(x, "r", 0, "a", "n1.s1", "alice", "phone", 11, 5000);
  store_batch_lock(x, "r", 0, "b", "n2.s2", "bob", "tab", 12, 5000);
  commit_ok(a, x);
  release_seen r = {0}, again = {0};
  cr_assert_eq(store_release_locks_async(a, "n1.", on_released, &r), 0);
  cr_assert_eq(store_release_locks_async(a, "n1.", on_released, &again), 0);
  cr_assert_not(r.done, "answered inside store_release_locks_async");
  while (!r.done || !again.done) uv_run(&T.loop, UV_RUN_ONCE);
  cr_assert_eq(r.rc, 0);
  cr_assert_eq(r.n, 1, "the released row walked from the answer");
  cr_assert_eq(r.other_rc, WSY_INVAL, "only the prefix released");
  cr_assert_eq(r.room_rc, WSY_INVAL, "no room row in the answer");
  cr_assert_eq(again.rc, 0);
  cr_assert_eq(again.n, 0, "nothing left the second time");
  cr_assert_eq(lockver_of(a, "r"), 3, "moved once, by the release that released");
  lock_rows l = locks_of(a, "r");
  cr_assert_str_eq(l.holder[0], "(free)");
  cr_assert_str_eq(l.holder[1], "n2.s2");
  cr_assert_eq(store_release_locks_async(a, "", on_released, &r), WSY_INVAL);
  uint64_t sync_reads, fetches, failures;
  store_read_counts(a, &sync_reads, &fetches, &failures);
  cr_assert_eq(fetches, 2);
  pgt_close(&T, a);
}

Test(pg_fence, two_nodes_racing_to_create_a_room_one_wins) {
  store *a = pgt_open(&T, T.url), *b = pgt_open(&T, T.url);
  for (int round = 0; round < 5; round++) {
    char room[16];
    snprintf(room, sizeof room, "race%d", round);
    store_batch *x = store_batch_new(), *y = store_batch_new();
    store_batch_room_create(x, room, "ea");
    pgt_op(x, room, 1, NULL, NULL, NULL, NULL);
    store_batch_room_create(y, room, "eb");
    pgt_op(y, room, 1, NULL, NULL, NULL, NULL);
    pgt_pending px, py;
    pgt_submit(&T, a, x, &px); /* both in flight at once */
    pgt_submit(&T, b, y, &py);
    int ra = pgt_wait(&T, &px), rb = pgt_wait(&T, &py);
    cr_assert((ra == 0 && rb == WSY_STALE) || (ra == WSY_STALE && rb == 0), "round %d: %s / %s", round,
              wsy_errname(ra), wsy_errname(rb));
    const char *why = store_batch_error(ra ? x : y);
    cr_assert(strstr(why, "already exists"), "%s", why);
    store_room_info ri;
    cr_assert_eq(store_room_get(a, room, &ri), 0);
    cr_assert_str_eq(ri.epoch, ra == 0 ? "ea" : "eb");
    cr_assert_eq(ri.seq, 1);
    store_batch_free(x);
    store_batch_free(y);
  }
  pgt_close(&T, b);
  pgt_close(&T, a);
}

Test(pg_fence, two_nodes_racing_on_one_room_keep_the_log_gapless) {
  store *a = pgt_open(&T, T.url), *b = pgt_open(&T, T.url);
  store_batch *x = store_batch_new();
  store_batch_room_create(x, "r", "e");
  commit_ok(a, x);
  uint64_t seq = 0;
  int wins[2] = {0, 0};
  for (int round = 0; round < 30; round++) {
    /* both nodes assign the next seq from the same replica state */
    store_batch *bx = store_batch_new(), *by = store_batch_new();
    char ca[16], cb[16];
    snprintf(ca, sizeof ca, "a%d", round);
    snprintf(cb, sizeof cb, "b%d", round);
    pgt_op(bx, "r", seq + 1, "i", "{\"n\":\"a\"}", "u:a", ca);
    pgt_op(bx, "r", seq + 2, NULL, NULL, NULL, NULL);
    pgt_op(by, "r", seq + 1, "i", "{\"n\":\"b\"}", "u:b", cb);
    pgt_pending px, py;
    if (round % 2) {
      pgt_submit(&T, b, by, &py);
      pgt_submit(&T, a, bx, &px);
    } else {
      pgt_submit(&T, a, bx, &px);
      pgt_submit(&T, b, by, &py);
    }
    int ra = pgt_wait(&T, &px), rb = pgt_wait(&T, &py);
    cr_assert((ra == 0) != (rb == 0), "round %d: exactly one wins (%s / %s)", round, wsy_errname(ra),
              wsy_errname(rb));
    cr_assert_eq(ra ? ra : rb, WSY_STALE);
    wins[ra == 0 ? 0 : 1]++;
    seq += ra == 0 ? 2 : 1;
    cr_assert_eq(pgt_seq(a, "r"), seq);
    store_batch_free(bx);
    store_batch_free(by);
  }
  cr_assert_eq(log_len(b, "r"), seq);
  cr_assert_gt(wins[0] + wins[1], 0);
  pgt_close(&T, b);
  pgt_close(&T, a);
}

/* ---- failures -------------------------------------------------------------------- */

/* The pid of the backend serving one of the store's connections. */
static pid_t backend_of(PGconn *admin, const char *app) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = '%s'", app);
  long long pid = pgt_scalar(admin, sql);
  cr_assert_gt(pid, 0, "no backend for %s", app);
  return (pid_t)pid;
}

Test(pg_fail, a_backend_killed_in_the_middle_of_a_commit) {
  store *s = pgt_open(&T, T.url);
  store_batch *x = store_batch_new();
  store_batch_room_create(x, "r", "e");
  commit_ok(s, x);
  PGconn *admin = pgt_admin(T.url);
  pgt_exec(admin, "BEGIN");
  pgt_exec(admin, "SELECT * FROM rooms WHERE name = 'r' FOR UPDATE"); /* the commit will wait on it */

  x = store_batch_new();
  pgt_op(x, "r", 1, "i", "{}", "u:d", "c1");
  pgt_pending p;
  pgt_submit(&T, s, x, &p);
  PGconn *watch = pgt_admin(T.url);
  long long waiting = 0;
  for (int i = 0; i < 500 && waiting <= 0; i++) {
    waiting = pgt_scalar(watch, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                " AND application_name = 'wsync' AND wait_event_type = 'Lock'");
    if (waiting <= 0) usleep(10000);
  }
  cr_assert_eq(waiting, 1, "the commit never reached the lock");
  pgt_exec(watch, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                  " AND application_name = 'wsync'");
  cr_assert_eq(pgt_wait(&T, &p), WSY_IO, "%s", store_batch_error(x));
  pgt_exec(admin, "ROLLBACK");
  cr_assert_eq(pgt_seq(s, "r"), 0); /* killed before its COMMIT: nothing */

  /* the same batch again, over a new connection with its statements re-made */
  commit_ok(s, x);
  cr_assert_eq(pgt_seq(s, "r"), 1);
  PQfinish(watch);
  PQfinish(admin);
  pgt_close(&T, s);
}

Test(pg_fail, a_backend_that_stops_answering_fails_commit_and_read) {
  store *s = pgt_open(&T, T.url);
  pg_store_set_timeouts(s, 1000, 500);
  store_batch *x = store_batch_new();
  store_batch_room_create(x, "r", "e");
  commit_ok(s, x);
  cr_assert_eq(pgt_seq(s, "r"), 0);
  PGconn *admin = pgt_admin(T.url);
  stopped[0] = backend_of(admin, "wsync");
  stopped[1] = backend_of(admin, "wsync-read");
  cr_assert_eq(kill(stopped[0], SIGSTOP), 0);
  cr_assert_eq(kill(stopped[1], SIGSTOP), 0);

  x = store_batch_new();
  pgt_op(x, "r", 1, NULL, NULL, "u:d", "c1");
  cr_assert_eq(pgt_commit(&T, s, x, 0), WSY_IO);
  cr_assert(strstr(store_batch_error(x), "unknown"), "%s", store_batch_error(x));
  store_room_info ri;
  cr_assert_eq(store_room_get(s, "r", &ri), WSY_IO);

  pid_t old = stopped[0];
  for (int i = 0; i < 2; i++) kill(stopped[i], SIGCONT), stopped[i] = 0;
  /* The outcome of the timed-out commit is unknown: the backend may run
  ** it once continued, before it notices its client is gone. Once it has
  ** exited, the engine's check tells: dedupe and the room's seq. */
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", (int)old);
  for (int i = 0; i < 500 && pgt_scalar(admin, sql) > 0; i++) usleep(10000);
  cr_assert_eq(pgt_scalar(admin, sql), 0, "the continued backend did not exit");
  uint64_t seq = 0;
  int found = store_dedupe_get(s, "u:d", "c1", NULL, &seq);
  cr_assert(found == 0 || found == WSY_NOT_FOUND, "%s", wsy_errname(found));
  uint64_t now = pgt_seq(s, "r");
  cr_assert_eq(now, found == 0 ? 1 : 0);
  store_batch *y = store_batch_new();
  pgt_op(y, "r", now + 1, NULL, NULL, "u:d", "c2");
  commit_ok(s, y);
  cr_assert_eq(pgt_seq(s, "r"), now + 1);
  store_batch_free(x);
  PQfinish(admin);
  pgt_close(&T, s);
}

/* A private server for the test, stopped and started again. */
static void pgtmp(const char *args, char *out, size_t outlen) {
  const char *script = getenv("WSYNC_PGTMP");
  char cmd[512];
  snprintf(cmd, sizeof cmd, "%s %s", script && *script ? script : "tests/lib/pgtmp.sh", args);
  FILE *f = popen(cmd, "r");
  cr_assert_not_null(f);
  size_t n = out ? fread(out, 1, outlen - 1, f) : 0;
  if (out) out[n] = '\0';
  cr_assert_eq(pclose(f), 0, "%s failed (run from the repository root or set WSYNC_PGTMP)", cmd);
}

Test(pg_fail, a_stopped_server_fails_fast_and_a_restarted_one_works_again) {
  char lines[1024], url[512], dir[256];
  pgtmp("start", lines, sizeof lines);
  cr_assert_eq(sscanf(lines, "%511s %255s", url, dir), 2, "%s", lines);
  snprintf(private_dir, sizeof private_dir, "%s", dir);
  store *s = pgt_open(&T, url);
  store_batch *x = store_batch_new();
  store_batch_room_create(x, "r", "e");
  commit_ok(s, x);

  char args[300];
  snprintf(args, sizeof args, "halt %s", dir);
  pgtmp(args, NULL, 0);
  for (int i = 0; i < 3; i++) { /* each fails, whether the loss is seen yet or not */
    x = store_batch_new();
    pgt_op(x, "r", 1, NULL, NULL, NULL, NULL);
    cr_assert_eq(pgt_commit(&T, s, x, 1), WSY_IO);
    store_room_info ri;
    cr_assert_eq(store_room_get(s, "r", &ri), WSY_IO);
  }

  snprintf(args, sizeof args, "resume %s", dir);
  pgtmp(args, NULL, 0);
  x = store_batch_new();
  pgt_op(x, "r", 1, NULL, NULL, NULL, NULL);
  commit_ok(s, x);
  cr_assert_eq(pgt_seq(s, "r"), 1);
  pgt_close(&T, s); /* teardown stops the server */
}
