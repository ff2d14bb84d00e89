/* pgtest.c -- helpers of the PostgreSQL store tests (pgtest.h). */
#include "pgtest.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *admin_url(void) {
  const char *u = getenv("WSYNC_TEST_PG");
  if (!u || !*u)
    cr_assert_fail("WSYNC_TEST_PG is unset: the pg tests need a PostgreSQL server. Run them through `make unit`"
            " (which starts one), or start one with `tests/lib/pgtmp.sh start` and export WSYNC_TEST_PG=URL");
  if (!u || !*u) abort();
  return u;
}

static void quiet(void *arg, const char *msg) { (void)arg, (void)msg; }

PGconn *pgt_admin(const char *url) {
  PGconn *c = PQconnectdb(url);
  cr_assert_eq(PQstatus(c), CONNECTION_OK, "connect %s: %s", url, PQerrorMessage(c));
  PQsetNoticeProcessor(c, quiet, NULL);
  return c;
}

void pgt_exec(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  ExecStatusType st = PQresultStatus(r);
  cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
  PQclear(r);
}

long long pgt_scalar(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
  long long v = PQntuples(r) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
  PQclear(r);
  return v;
}

void pgt_setup(pgt *t) {
  const char *admin = admin_url();
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(t->name, sizeof t->name, "wsync_t_%d_%ld", (int)getpid(), (long)(ts.tv_nsec % 1000000));
  const char *slash = strrchr(admin, '/');
  cr_assert(slash && slash > admin + 2 && slash[-1] != '/', "WSYNC_TEST_PG must end in /DATABASE: %s", admin);
  snprintf(t->url, sizeof t->url, "%.*s/%s", (int)(slash - admin), admin, t->name);
  PGconn *c = pgt_admin(admin);
  char sql[128];
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", t->name);
  pgt_exec(c, sql);
  PQfinish(c);
  cr_assert_eq(uv_loop_init(&t->loop), 0);
}

void pgt_teardown(pgt *t) {
  if (!t->name[0]) return;
  uv_run(&t->loop, UV_RUN_NOWAIT);
  int rc = uv_loop_close(&t->loop);
  PGconn *c = pgt_admin(admin_url());
  char sql[128];
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", t->name);
  pgt_exec(c, sql);
  PQfinish(c);
  cr_assert_eq(rc, 0, "a handle was left open on the loop");
}

store *pgt_open(pgt *t, const char *url) {
  store *s = NULL;
  char err[256] = "";
  int rc = store_pg_open(url, 0, &t->loop, &s, err, sizeof err);
  cr_assert_eq(rc, 0, "store_pg_open: %s (%s)", wsy_errname(rc), err);
  cr_assert_not_null(s);
  cr_assert_str_eq(store_backend(s), "postgres");
  return s;
}

static void on_commit(void *ud, int rc) {
  pgt_pending *w = ud;
  cr_assert(w->returned, "the callback ran inside store_commit");
  cr_assert_not(w->done, "the callback ran twice");
  w->done = 1;
  w->rc = rc;
  uv_stop(w->loop); /* the store's idle connection keeps the loop alive */
}

void pgt_submit(pgt *t, store *s, store_batch *b, pgt_pending *p) {
  *p = (pgt_pending){.loop = &t->loop};
  store_commit(s, b, on_commit, p);
  p->returned = 1;
}

int pgt_wait(pgt *t, pgt_pending *p) {
  while (!p->done) uv_run(&t->loop, UV_RUN_DEFAULT);
  return p->rc;
}

int pgt_commit(pgt *t, store *s, store_batch *b, int free_it) {
  pgt_pending w;
  pgt_submit(t, s, b, &w);
  int rc = pgt_wait(t, &w);
  if (free_it) store_batch_free(b);
  return rc;
}

void pgt_close(pgt *t, store *s) {
  store_close(s);
  /* one turn runs the close callbacks; another store may still be open */
  uv_run(&t->loop, UV_RUN_NOWAIT);
}

void pgt_op(store_batch *b, const char *room, uint64_t seq, const char *item, const char *fields,
            const char *dkey, const char *cid) {
  char msg[256];
  snprintf(msg, sizeof msg, "{\"type\":\"op\",\"room\":\"%s\",\"seq\":%llu}", room, (unsigned long long)seq);
  store_op op = {.room = room, .seq = seq, .item = item, .fields_json = fields, .version = seq,
                 .dkey = dkey, .cid = cid, .msg = msg, .msg_len = strlen(msg)};
  store_batch_op(b, &op);
}

uint64_t pgt_seq(store *s, const char *room) {
  store_room_info ri;
  cr_assert_eq(store_room_get(s, room, &ri), 0);
  return ri.exists ? ri.seq : (uint64_t)-1;
}
