/* net_int.h -- inside src/net only: the connection and loop structures and
 * the queue helpers that net.c (plain sockets) and tls_conn.c (the TLS read
 * and flush paths) share. */
#ifndef WSY_NET_INT_H
#define WSY_NET_INT_H

#include "net.h"
#include "tls.h"

#define NET_READ_BUF (256 * 1024)
#define NET_IOV_MAX 1024
/* Largest plaintext of one TLS record (the size of net_loop.gbuf). */
#define TLS_RECORD 16384

enum {
  F_DIRTY = 1 << 0,
  F_CLOSING = 1 << 1,  /* uv_close called */
  F_ENDING = 1 << 2,   /* graceful end requested */
  F_SHUT = 1 << 3,     /* uv_shutdown issued */
  F_PAUSED = 1 << 4,
};

struct conn {
  uv_tcp_t tcp;        /* tcp.data holds the net_loop */
  const conn_ops *ops;
  conn *prev, *next;   /* every connection of the loop */
  conn *dirty_next;
  net_chunk **q;       /* ring of queued chunks, capacity a power of two */
  uv_write_t *wreq;    /* allocated while a write is in flight */
  uint32_t q_head, q_len, q_cap, q_inflight;
  uint32_t head_off;   /* bytes of the head chunk already written */
  uint32_t flags;
  uint32_t deadline;   /* while ending: close at this loop time (ms, wrapping) at the latest */
  uint32_t queued;     /* bytes queued and not yet written (capped below 4 GiB) */
  _Alignas(8) unsigned char ext[];
};

/* Kept small: every idle connection costs sizeof(conn) + the protocol's ext. */
static inline net_loop *conn_nl(const conn *c) { return c->tcp.data; }

typedef struct net_writers net_writers;

struct net_loop {
  uv_loop_t *uv;
  net_config cfg;
  void *app;
  uv_tcp_t listener;
  int listening;
  net_accept_cb accept_cb;
  void *accept_ud;
  uv_prepare_t prep;
  uv_check_t check;
  uv_timer_t tick;
  conn *conns;
  unsigned nconns;
  conn *dirty;
  net_stats st;
  uint8_t *rbuf;
  net_tls *tls;
  uint8_t *pbuf;       /* decrypted bytes handed to on_data (TLS only) */
  uint8_t *gbuf;       /* TLS_RECORD bytes: small chunks gathered for one SSL_write */
  net_writers *writers; /* --write-threads helpers, or NULL */
  uv_buf_t iov[NET_IOV_MAX];
};

static inline net_chunk **q_at(conn *c, uint32_t i) { return &c->q[(c->q_head + i) & (c->q_cap - 1)]; }

/* A TLS listener's connections carry their tls_io pointer after the
 * protocol's ext, so a plain connection does not pay 8 bytes for it (which
 * would move every idle connection to the allocator's next size class). */
static inline size_t conn_tls_off(const net_loop *nl) { return (nl->cfg.ext_size + 7) & ~(size_t)7; }
static inline tls_io **conn_tls_slot(conn *c) { return (tls_io **)(void *)(c->ext + conn_tls_off(conn_nl(c))); }
/* The connection's TLS state, or NULL (a plain loop, or TLS given up). */
static inline tls_io *conn_tls(const conn *c) {
  const net_loop *nl = conn_nl(c);
  return nl->tls ? *(tls_io *const *)(const void *)(c->ext + conn_tls_off(nl)) : NULL;
}

/* A write the socket has not finished owns part of the output. */
static inline int writing(const conn *c) {
  const tls_io *io = conn_tls(c);
  return c->q_inflight || (io && io->fly);
}

/* net.c */
void net_mark_dirty(conn *c);            /* flush at the end of this iteration */
void net_q_advance(conn *c, size_t w);   /* w bytes from the head are done */
void net_maybe_shutdown(conn *c);        /* FIN once an ending conn has nothing left */
/* Points iov at the first queued entries (NET_IOV_MAX at most); returns how
 * many, their bytes in *total. Reads the queue only: safe on a helper thread
 * while the loop thread waits. */
uint32_t net_fill_iov(const conn *c, uv_buf_t *iov, size_t *total);
/* The result of a writev of what net_fill_iov offered (total bytes): r bytes
 * written, or a negative errno. Accounts for it; a partial write hands the
 * rest to one uv_write, an error closes. 0 when all was written. Loop thread. */
int net_write_done(conn *c, ssize_t r, size_t total);

/* writers.c: the write calls of a large flush spread over helper threads. */
/* NULL when n is 0 or none started; min: see net_config.write_min. */
net_writers *net_writers_new(unsigned n, unsigned min);
void net_writers_free(net_writers *w);
unsigned net_writers_count(const net_writers *w);
/* Writes every eligible dirty conn once, on the helpers and this thread,
 * when there are enough of them; they stay on the dirty list. */
void net_writers_flush(net_loop *nl, net_writers *w);

/* tls_conn.c */
void net_tls_read(conn *c, uint8_t *data, size_t len);
void net_tls_flush(conn *c);

#endif
