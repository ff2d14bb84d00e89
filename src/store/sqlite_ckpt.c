/* sqlite_ckpt.c -- WAL checkpoints on a thread of their own.
**
** SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL
** past 1,000 frames: it copies the WAL's pages into the database file and
** syncs both, on the committing thread. Commits are one chain (one at a
** time, each batch waiting for the one before), so every checkpoint's
** copying and fsync waits were the chain's. Here:
**   - the write connection's WAL hook, after each commit, wakes the
**     checkpoint thread once the WAL holds CKPT_START frames or more; that
**     thread checkpoints PASSIVE on its own connection (copying what was
**     committed when it started, never waiting for the writer);
**   - SQLite starts the WAL over at the beginning of a write transaction
**     only when everything in it was copied at that moment, which a
**     checkpoint running beside a busy writer rarely allows. So once the
**     WAL holds CKPT_WRITER frames, the thread starts no new checkpoint,
**     and the committing thread, after letting one under way finish,
**     checkpoints itself (PASSIVE) until everything is copied; its next
**     write then starts the WAL over. It waits on a condition variable,
**     never in SQLite's busy handler, which sleeps in steps of
**     milliseconds (that doubled the acks' p99 in a first version).
**     The WAL thus stays under CKPT_WRITER frames plus a batch (while no
**     reader holds on to older frames), and the
**     chain pays for a checkpoint once per CKPT_WRITER frames, mostly
**     copied already, instead of once per 1,000.
** A checkpoint never changes what a reader sees, and one that fails leaves
** the WAL as it was (the next commit tries again), so a failure here is
** logged and changes nothing else. */
#include "sqlite_int.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"

#define CKPT_START 1000
#define CKPT_WRITER 8000

struct sq_ckpt {
  sqlite3 *db;            /* the checkpoint thread's connection */
  pthread_t thr;
  pthread_mutex_t mu;
  pthread_cond_t cv;      /* to the thread: want or stop */
  pthread_cond_t idle_cv; /* from the thread: running went to 0 */
  int want, stop;         /* under mu */
  int running;            /* under mu: the thread is in a checkpoint */
  int writer_turn;        /* under mu: the committing thread checkpoints next */
  uint64_t runs;          /* under mu: the thread's checkpoints that copied the whole WAL */
  uint64_t writer_runs;   /* the committing thread's (only it writes this) */
  int warned;             /* the thread logged a failure (once: they repeat) */
};

static void *ckpt_main(void *arg) {
  sq_ckpt *c = arg;
  pthread_mutex_lock(&c->mu);
  for (;;) {
    while ((!c->want || c->writer_turn) && !c->stop) pthread_cond_wait(&c->cv, &c->mu);
    if (c->stop) break;
    c->want = 0;
    c->running = 1;
    pthread_mutex_unlock(&c->mu);
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY && !c->warned) {
      c->warned = 1;
      log_warn("store: WAL checkpoint on its thread failed: %s (the committing thread still checkpoints at "
               "%d frames)", sqlite3_errmsg(c->db), CKPT_WRITER);
    }
    pthread_mutex_lock(&c->mu);
    c->running = 0;
    pthread_cond_signal(&c->idle_cv);
    if (rc == SQLITE_OK && log > 0 && done == log) c->runs++;
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* After each commit of the write connection, on the committing thread. */
static int wal_hook(void *ud, sqlite3 *db, const char *name, int frames) {
  sq_ckpt *c = ud;
  if (frames < CKPT_START) return SQLITE_OK;
  pthread_mutex_lock(&c->mu);
  /* The writer's turn: the thread starts no new checkpoint, nor one asked
  ** for before, which would take the WAL's locks while the next write
  ** tries to start the WAL over (and then the WAL keeps growing). */
  if (frames >= CKPT_WRITER) c->writer_turn = 1, c->want = 0;
  else c->want = 1, pthread_cond_signal(&c->cv);
  int mine = c->writer_turn;
  /* A checkpoint of the thread's that is under way is let finish (on a
  ** condition variable, not SQLite's busy handler, which sleeps in steps
  ** of milliseconds); meanwhile this commit's frames wait in the WAL. */
  while (mine && c->running) pthread_cond_wait(&c->idle_cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
  if (!mine) return SQLITE_OK;
  /* PASSIVE: takes no lock it would wait for. When it cannot copy
  ** everything (a reader still on older frames), or fails, the WAL stays
  ** as it is and the next commit tries again. */
  int log = 0, done = 0;
  if (sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, &log, &done) == SQLITE_OK && done == log) {
    pthread_mutex_lock(&c->mu);
    c->writer_turn = 0;
    pthread_mutex_unlock(&c->mu);
    c->writer_runs++;
  }
  return SQLITE_OK;
}

int sq_ckpt_start(sq_store *s, sqlite3 *db, char *err, size_t errlen) {
  /* A connection learns that the file is in WAL mode when it first reads
  ** it; until then its checkpoints do nothing (and say so only with -1s). */
  char *msg = NULL;
  if (sqlite3_exec(db, "SELECT count(*) FROM sqlite_schema", NULL, NULL, &msg) != SQLITE_OK) {
    if (err && errlen) snprintf(err, errlen, "checkpoint connection: %s", msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    sqlite3_close(db);
    return WSY_IO;
  }
  sq_ckpt *c = wsy_calloc(1, sizeof *c);
  c->db = db;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  pthread_cond_init(&c->idle_cv, NULL);
  int e = pthread_create(&c->thr, NULL, ckpt_main, c);
  if (e) {
    if (err && errlen) snprintf(err, errlen, "cannot start the checkpoint thread: %s", strerror(e));
    pthread_cond_destroy(&c->cv);
    pthread_cond_destroy(&c->idle_cv);
    pthread_mutex_destroy(&c->mu);
    wsy_free(c);
    sqlite3_close(db);
    return WSY_NOMEM;
  }
  s->ckpt = c;
  /* Replaces the automatic checkpoint (which is a WAL hook too). */
  sqlite3_wal_hook(s->wdb, wal_hook, c);
  return WSY_OK;
}

void sq_ckpt_counts(sq_store *s, uint64_t *runs, uint64_t *writer_runs) {
  sq_ckpt *c = s->ckpt;
  *runs = *writer_runs = 0;
  if (!c) return;
  pthread_mutex_lock(&c->mu);
  *runs = c->runs;
  pthread_mutex_unlock(&c->mu);
  *writer_runs = c->writer_runs; /* the committing thread's: read between commits */
}

void sq_ckpt_stop(sq_store *s) {
  sq_ckpt *c = s->ckpt;
  if (!c) return;
  if (s->wdb) sqlite3_wal_hook(s->wdb, NULL, NULL);
  pthread_mutex_lock(&c->mu);
  c->stop = 1;
  pthread_cond_signal(&c->cv);
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->thr, NULL);
  sqlite3_close(c->db);
  pthread_cond_destroy(&c->cv);
  pthread_cond_destroy(&c->idle_cv);
  pthread_mutex_destroy(&c->mu);
  wsy_free(c);
  s->ckpt = NULL;
}
