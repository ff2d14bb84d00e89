/* writers.c -- the write system calls of a large flush, shared with helper
 * threads (--write-threads).
 *
 * A broadcast leaves one chunk queued on many connections, and the loop then
 * issues one writev per connection, one after another: on loopback and on a
 * real NIC alike, most of a fan-out's time is the kernel's side of those
 * calls, and the last member of a room waits for all the others. With
 * helpers, the calls of one flush are spread over the loop thread and the
 * helpers.
 *
 * Fork-join, nothing else shared: the loop thread still owns every
 * connection. It publishes the batch (connection, descriptor), wakes the
 * helpers and writes alongside them, each thread claiming one connection at
 * a time; it then waits until every claimed call has returned. Only then
 * does it read the results, advance the queues and release the chunks, so
 * queues, chunks and libuv's handles are touched by the loop thread alone.
 * Each connection's bytes are written by one thread, in queue order, once
 * per flush: what a peer receives is what it would receive without helpers.
 *
 * The claim word holds the batch's generation, its size and the next index,
 * so a helper that wakes late, after its batch has ended, finds a
 * generation that is not its own (or nothing left) and claims nothing. */
#include "net_int.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../common/log.h"

/* Below this many connections to write (--write-threads-min), the loop
 * writes them alone: waking a helper costs about what a few calls do. */
#define PAR_MIN 8
/* Connections in one batch (the index and size fields of the claim word);
 * more wait for the loop thread's own pass. */
#define PAR_MAX 0xffffu

typedef struct wjob {
  conn *c;
  int fd;
  size_t total;       /* bytes offered */
  ssize_t res;        /* bytes written, or -errno */
  uint8_t helped;     /* written by a helper thread */
} wjob;

struct net_writers {
  unsigned n;
  uint32_t min;            /* fewest connections a batch is made for */
  pthread_t *th;
  _Atomic uint64_t claim;  /* generation << 32 | size << 16 | next */
  _Atomic uint32_t wake;   /* futex word: the generation last published */
  _Atomic uint32_t done;   /* jobs of the current batch written (futex word) */
  _Atomic uint32_t waiting; /* the loop sleeps on done */
  _Atomic int stop;
  uint32_t gen;
  wjob *jobs;
  uint32_t cap;
};

static long futex(_Atomic uint32_t *w, int op, uint32_t val) {
  return syscall(SYS_futex, (uint32_t *)w, op, val, NULL, NULL, 0);
}

/* Claims and writes connections of batch gen until none is left. */
static void run(net_writers *w, uint32_t gen, uv_buf_t *iov, uint8_t helper) {
  for (;;) {
    uint64_t v = atomic_load(&w->claim);
    do {
      if ((uint32_t)(v >> 32) != gen || (v & 0xffffu) >= ((v >> 16) & 0xffffu)) return;
    } while (!atomic_compare_exchange_weak(&w->claim, &v, v + 1));
    wjob *j = &w->jobs[v & 0xffffu];
    size_t total;
    uint32_t n = net_fill_iov(j->c, iov, &total);
    ssize_t r;
    do r = writev(j->fd, (const struct iovec *)iov, (int)n);
    while (r < 0 && errno == EINTR);
    j->total = total;
    j->res = r < 0 ? -errno : r;
    j->helped = helper;
    atomic_fetch_add(&w->done, 1);
    if (helper && atomic_load(&w->waiting)) futex(&w->done, FUTEX_WAKE_PRIVATE, 1);
  }
}

static void *helper_main(void *arg) {
  net_writers *w = arg;
  uv_buf_t *iov = wsy_malloc(NET_IOV_MAX * sizeof *iov);
  uint32_t seen = atomic_load(&w->wake);
  for (;;) {
    uint32_t g;
    while ((g = atomic_load(&w->wake)) == seen && !atomic_load(&w->stop))
      futex(&w->wake, FUTEX_WAIT_PRIVATE, seen);
    if (atomic_load(&w->stop)) break;
    seen = g;
    run(w, g, iov, 1);
  }
  wsy_free(iov);
  return NULL;
}

net_writers *net_writers_new(unsigned n, unsigned min) {
  if (n == 0) return NULL;
  net_writers *w = wsy_calloc(1, sizeof *w);
  w->min = min < 2 ? PAR_MIN : min;
  w->th = wsy_calloc(n, sizeof *w->th);
  /* Signals are the loop's business: helpers start with all blocked. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  for (unsigned i = 0; i < n; i++) {
    int rc = pthread_create(&w->th[i], NULL, helper_main, w);
    if (rc) {
      log_warn("--write-threads: could not start a helper thread (%s); %u running", strerror(rc), w->n);
      break;
    }
    w->n++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (w->n == 0) {
    net_writers_free(w);
    return NULL;
  }
  return w;
}

void net_writers_free(net_writers *w) {
  if (!w) return;
  atomic_store(&w->stop, 1);
  atomic_fetch_add(&w->wake, 1);
  futex(&w->wake, FUTEX_WAKE_PRIVATE, INT32_MAX);
  for (unsigned i = 0; i < w->n; i++) pthread_join(w->th[i], NULL);
  wsy_free(w->th);
  wsy_free(w->jobs);
  wsy_free(w);
}

unsigned net_writers_count(const net_writers *w) { return w ? w->n : 0; }

/* The connections a helper may write: plain sockets with queued bytes that
 * no uv_write owns. TLS connections encrypt as they flush, on the loop. */
static int eligible(const conn *c) {
  return !(c->flags & F_CLOSING) && c->q_len && !c->q_inflight && !conn_tls(c);
}

void net_writers_flush(net_loop *nl, net_writers *w) {
  uint32_t k = 0;
  for (conn *c = nl->dirty; c && k < PAR_MAX; c = c->dirty_next) {
    uv_os_fd_t fd;
    if (!eligible(c) || uv_fileno((const uv_handle_t *)&c->tcp, &fd) != 0) continue;
    if (k == w->cap) {
      w->cap = w->cap ? w->cap * 2 : 64;
      w->jobs = wsy_realloc(w->jobs, w->cap * sizeof *w->jobs);
    }
    w->jobs[k++] = (wjob){.c = c, .fd = fd};
  }
  if (k < w->min) return;
  uint32_t gen = ++w->gen;
  if (gen == 0) gen = ++w->gen; /* 0 is the helpers' first "seen" */
  /* Publish the jobs, then the claim word, then wake the helpers. */
  atomic_store(&w->done, 0);
  atomic_store(&w->claim, (uint64_t)gen << 32 | (uint64_t)k << 16);
  atomic_store(&w->wake, gen);
  futex(&w->wake, FUTEX_WAKE_PRIVATE, INT32_MAX);
  run(w, gen, nl->iov, 0);
  /* Every job is claimed; wait for the calls still running (one per
   * helper at most). A helper that woke too late claimed nothing and is not
   * waited for. A short spin covers a call under way; past it the helper
   * was likely preempted, and the loop sleeps until its last call returns
   * rather than burn the core it may need. */
  uint32_t d;
  for (unsigned spins = 0; (d = atomic_load(&w->done)) != k && spins < 2000; spins++) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  if (d != k) {
    atomic_store(&w->waiting, 1);
    while ((d = atomic_load(&w->done)) != k) futex(&w->done, FUTEX_WAIT_PRIVATE, d);
    atomic_store(&w->waiting, 0);
  }
  for (uint32_t i = 0; i < k; i++) {
    wjob *j = &w->jobs[i];
    if (j->helped) nl->st.writes_helped++;
    net_write_done(j->c, j->res, j->total);
  }
}
