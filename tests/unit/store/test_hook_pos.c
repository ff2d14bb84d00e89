/* test_hook_pos.c -- webhook positions in the SQLite store (schema 3, table hook_pos):
 * store_batch_hook_pos, store_hook_positions, store_hook_pos_get. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../../src/store/store.h"
#include "sqtest.h"

static char dir[64];

static void mk(void) { sqt_mkdir(dir, sizeof dir, "hookpos"); }
static void rm(void) { sqt_rmdir(dir); }

TestSuite(hook_pos, .init = mk, .fini = rm);

static store *open_ok(void) { return sqt_open(dir, 0); }
static void commit_ok(store *s, store_batch *b) { sqt_commit(s, b); }

static void pos(store *s, const char *hook, const char *room, const char *epoch, uint64_t seq) {
  store_batch *b = store_batch_new();
  store_batch_hook_pos(b, hook, room, epoch, seq);
  commit_ok(s, b);
}

static uint64_t get(store *s, const char *hook, const char *room, const char *epoch) {
  uint64_t seq = 99;
  cr_assert_eq(store_hook_pos_get(s, hook, room, epoch, &seq), 0);
  return seq;
}

typedef struct {
  int n;
  char rooms[8][32];
  uint64_t seqs[8];
} listing;

static int list_cb(const char *room, const char *epoch, uint64_t seq, void *ud) {
  listing *l = ud;
  cr_assert_lt(l->n, 8);
  snprintf(l->rooms[l->n], sizeof l->rooms[0], "%s/%s", room, epoch);
  l->seqs[l->n++] = seq;
  return 0;
}

Test(hook_pos, grows_per_epoch_and_is_listed_per_hook) {
  store *s = open_ok();
  store_batch *b = store_batch_new();
  store_batch_room_create(b, "a", "e1");
  store_batch_room_create(b, "b", "e2");
  commit_ok(s, b);
  cr_assert_eq(get(s, "h1", "a", "e1"), 0); /* nothing stored yet */
  pos(s, "h1", "a", "e1", 5);
  pos(s, "h1", "a", "e1", 3); /* never goes back */
  pos(s, "h2", "a", "e1", 7);
  pos(s, "h1", "b", "e2", 1);
  cr_assert_eq(get(s, "h1", "a", "e1"), 5);
  cr_assert_eq(get(s, "h2", "a", "e1"), 7);
  cr_assert_eq(get(s, "h1", "a", "other-epoch"), 0);
  listing l = {0};
  cr_assert_eq(store_hook_positions(s, "h1", list_cb, &l), 0);
  cr_assert_eq(l.n, 2);
  for (int i = 0; i < 2; i++) {
    if (!strcmp(l.rooms[i], "a/e1")) cr_assert_eq(l.seqs[i], 5);
    else cr_assert_str_eq(l.rooms[i], "b/e2");
  }
  store_close(s);
  s = open_ok(); /* survives a restart */
  cr_assert_eq(get(s, "h1", "a", "e1"), 5);
  store_close(s);
}

Test(hook_pos, dropped_for_a_missing_room_and_deleted_with_the_room) {
  store *s = open_ok();
  pos(s, "h", "ghost", "e", 4); /* no such room: nothing written, no error */
  listing l = {0};
  cr_assert_eq(store_hook_positions(s, "h", list_cb, &l), 0);
  cr_assert_eq(l.n, 0);

  store_batch *b = store_batch_new();
  store_batch_room_create(b, "r", "old");
  commit_ok(s, b);
  pos(s, "h", "r", "old", 9);
  pos(s, "h", "r", "stale-epoch", 20); /* not the room's epoch: ignored */
  cr_assert_eq(get(s, "h", "r", "old"), 9);

  b = store_batch_new();
  store_batch_room_delete(b, "r");
  store_batch_room_create(b, "r", "new");
  commit_ok(s, b);
  cr_assert_eq(get(s, "h", "r", "old"), 0);
  cr_assert_eq(get(s, "h", "r", "new"), 0);
  pos(s, "h", "r", "new", 2);
  cr_assert_eq(get(s, "h", "r", "new"), 2);
  store_close(s);
}
