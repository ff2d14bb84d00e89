/* pgtest.h -- helpers of the PostgreSQL store tests (suites pg*): a
 * database of its own per test on the server WSYNC_TEST_PG names (the
 * Makefile's unit runs start one with tests/lib/pgtmp.sh), a loop to
 * commit on, and blocking admin connections to look behind the store. */
#ifndef WSY_PGTEST_H
#define WSY_PGTEST_H

#include <libpq-fe.h>
#include <uv.h>

#include "../../../src/store/store.h"

typedef struct pgt {
  char url[512];   /* the test's own database */
  char name[64];
  uv_loop_t loop;
} pgt;

/* Creates the test's database (fails the test when WSYNC_TEST_PG is unset). */
void pgt_setup(pgt *t);
/* Drops it (the loop must have no handles left). */
void pgt_teardown(pgt *t);
/* A blocking admin connection to url. */
PGconn *pgt_admin(const char *url);
void pgt_exec(PGconn *c, const char *sql);
/* The first column of the first row as a number (-1 when no row). */
long long pgt_scalar(PGconn *c, const char *sql);
store *pgt_open(pgt *t, const char *url);
/* Commits b on the loop and waits for its callback, checking it did not
 * run inside store_commit. Frees b when free_it. */
int pgt_commit(pgt *t, store *s, store_batch *b, int free_it);
/* A commit in flight: pgt_submit starts it, pgt_wait runs the loop until
 * its callback and returns its result (b stays the caller's). */
typedef struct pgt_pending {
  int returned, done, rc;
  uv_loop_t *loop;
} pgt_pending;
void pgt_submit(pgt *t, store *s, store_batch *b, pgt_pending *p);
int pgt_wait(pgt *t, pgt_pending *p);
/* Closes s and runs the loop until its handles are closed. */
void pgt_close(pgt *t, store *s);
/* An op with a small message naming its room and seq. */
void pgt_op(store_batch *b, const char *room, uint64_t seq, const char *item, const char *fields,
            const char *dkey, const char *cid);
uint64_t pgt_seq(store *s, const char *room);

#endif
