/* net.c -- connections, write queues and the loop hooks that flush them.
 *
 * Write path, per connection:
 *   net_conn_send() appends a chunk reference to the ring and puts the conn on
 *   the loop's dirty list (once). The prepare and check hooks -- before and
 *   after each poll -- flush every dirty conn: one uv_try_write (a writev) of
 *   up to NET_IOV_MAX entries. Whatever the kernel does not take is handed to
 *   a single uv_write that owns those entries ("in flight") until its
 *   callback; new chunks queue behind it. So a conn issues one write syscall
 *   per iteration however many messages were queued for it.
 *
 * A TLS connection (tls_conn.c) keeps the same queue of shared plaintext
 * chunks; flush and on_read hand it to net_tls_flush and net_tls_read.
 *
 * Close path: net_conn_end() (graceful: flush, FIN, linger for the peer's
 * FIN) or net_conn_close() (now). Both are idempotent; the conn is freed in
 * uv_close's callback, after every callback up the stack has returned. */
#include "net_int.h"

#include <stdlib.h>
#include <string.h>

#include "../common/log.h"

/* ---- chunks ------------------------------------------------------------ */

net_chunk *net_chunk_new(size_t len) {
  net_chunk *c = wsy_malloc(sizeof *c + len);
  c->refs = 1;
  c->len = (uint32_t)len;
  return c;
}

void net_chunk_unref(net_chunk *c) {
  if (c && --c->refs == 0) wsy_free(c);
}

/* ---- small accessors ---------------------------------------------------- */

void *net_loop_app(net_loop *nl) { return nl->app; }
const net_stats *net_loop_stats(net_loop *nl) { return &nl->st; }
unsigned net_loop_conn_count(net_loop *nl) { return nl->nconns; }
unsigned net_loop_write_threads(net_loop *nl) { return net_writers_count(nl->writers); }
uint64_t net_loop_now(net_loop *nl) { return uv_now(nl->uv); }
void net_conn_set_ops(conn *c, const conn_ops *ops) { c->ops = ops; }
const conn_ops *net_conn_ops(const conn *c) { return c->ops; }
void *net_conn_ext(conn *c) { return c->ext; }
conn *net_conn_from_ext(void *ext) { return wsy_container_of(ext, conn, ext); }
net_loop *net_conn_loop(conn *c) { return conn_nl(c); }
int net_conn_closing(const conn *c) { return (c->flags & (F_CLOSING | F_ENDING)) != 0; }
size_t net_conn_queued(const conn *c) { return c->queued; }

/* A queue never holds 4 GiB: past that (forced sends of huge responses
 * only) the connection is closed rather than its count wrapped. */
#define QUEUED_MAX (UINT32_MAX - (1u << 20))

void net_conn_peer(conn *c, char *out, size_t n) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char host[64] = "?";
  int port = 0;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET) {
      struct sockaddr_in *a = (struct sockaddr_in *)&ss;
      uv_ip4_name(a, host, sizeof host);
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
      uv_ip6_name(a, host, sizeof host);
      port = ntohs(a->sin6_port);
    }
  }
  snprintf(out, n, "%s:%d", host, port);
}

/* ---- queue ---------------------------------------------------------------- */

static void q_grow(conn *c) {
  uint32_t cap = c->q_cap ? c->q_cap * 2 : 8;
  /* A queue of 32 or more chunks is a burst's (a window of presence
   * events, a fan-out to a slow reader) and is freed once written: apart
   * from long-lived blocks (wsy_malloc_apart). */
  net_chunk **nq = cap >= 32 ? wsy_malloc_apart(cap * sizeof *nq) : wsy_malloc(cap * sizeof *nq);
  for (uint32_t i = 0; i < c->q_len; i++) nq[i] = *q_at(c, i);
  wsy_free(c->q);
  c->q = nq;
  c->q_cap = cap;
  c->q_head = 0;
}

/* Drops the first n entries (all written), the head's offset included. */
static void q_pop(conn *c, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    net_chunk **slot = q_at(c, 0);
    net_chunk_unref(*slot);
    *slot = NULL;
    c->q_head = (c->q_head + 1) & (c->q_cap - 1);
    c->q_len--;
  }
  conn_nl(c)->st.chunks_out += n;
  if (c->q_len == 0 && c->q_cap > 64) {
    /* A burst is over: do not keep a large ring on an idle connection. */
    wsy_free(c->q);
    c->q = NULL;
    c->q_cap = c->q_head = 0;
  }
}

/* Accounts for w bytes written from the head of the queue. */
void net_q_advance(conn *c, size_t w) {
  c->queued -= w;
  uint32_t done = 0;
  while (w > 0) {
    net_chunk *h = *q_at(c, done);
    size_t left = h->len - c->head_off;
    if (w < left) {
      c->head_off += (uint32_t)w;
      break;
    }
    w -= left;
    c->head_off = 0;
    done++;
  }
  /* zero-length chunks at the head are complete too */
  while (done < c->q_len && c->head_off == 0 && (*q_at(c, done))->len == 0) done++;
  if (done) q_pop(c, done);
}

void net_mark_dirty(conn *c) {
  if (c->flags & F_DIRTY) return;
  c->flags |= F_DIRTY;
  c->dirty_next = conn_nl(c)->dirty;
  conn_nl(c)->dirty = c;
}

static void flush(conn *c);


/* An empty queue takes any one chunk: a consumer with nothing pending is not
 * behind, and a chunk is bounded elsewhere (--max-message-size), so a cap
 * below the message size must not refuse every large message. */
static int over_cap(const conn *c, const net_chunk *ch) {
  return c->queued > 0 && c->queued + ch->len > conn_nl(c)->cfg.max_queued;
}

static int enqueue(conn *c, net_chunk *ch, int force) {
  if (c->flags & F_CLOSING) return WSY_CLOSED;
  if (!force && over_cap(c, ch)) {
    /* The cap is for bytes the peer has not taken, not for bytes queued in
     * this loop turn: one read can carry hundreds of messages to fan out
     * before the prepare/check hooks flush. Offer the queue to the socket
     * first; only when no write is possible is the consumer slow. */
    if (!writing(c)) flush(c);
    if (c->flags & F_CLOSING) return WSY_CLOSED;
    if (over_cap(c, ch)) return WSY_SLOW;
  }
  if ((uint64_t)c->queued + ch->len > QUEUED_MAX) {
    net_conn_close(c);
    return WSY_CLOSED;
  }
  if (c->q_len == c->q_cap) q_grow(c);
  *q_at(c, c->q_len) = net_chunk_ref(ch);
  c->q_len++;
  c->queued += ch->len;
  net_mark_dirty(c);
  return WSY_OK;
}

int net_conn_send(conn *c, net_chunk *ch) {
  if (c->flags & F_ENDING) return WSY_CLOSED;
  return enqueue(c, ch, 0);
}

int net_conn_send_force(conn *c, net_chunk *ch) { return enqueue(c, ch, 1); }

size_t net_conn_discard_pending(conn *c) {
  /* Keep what a write has started on: in-flight entries and a partly written
   * head. Everything behind them is dropped from the tail. */
  uint32_t keep = c->q_inflight;
  if (keep == 0 && c->head_off > 0) keep = 1;
  size_t dropped = 0;
  while (c->q_len > keep) {
    net_chunk **slot = q_at(c, c->q_len - 1);
    dropped += (*slot)->len;
    net_chunk_unref(*slot);
    *slot = NULL;
    c->q_len--;
  }
  c->queued -= dropped;
  return dropped;
}

/* ---- close ---------------------------------------------------------------- */

static void on_closed(uv_handle_t *h) {
  conn *c = wsy_container_of((uv_tcp_t *)h, conn, tcp);
  net_loop *nl = conn_nl(c);
  if (c->flags & F_DIRTY) { /* unlink from the dirty list (rare: closed between flushes) */
    for (conn **pp = &nl->dirty; *pp; pp = &(*pp)->dirty_next)
      if (*pp == c) { *pp = c->dirty_next; break; }
  }
  if (c->prev) c->prev->next = c->next;
  else nl->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  nl->nconns--;
  nl->st.closed++;
  if (c->ops && c->ops->on_free) c->ops->on_free(c);
  while (c->q_len) {
    net_chunk_unref(*q_at(c, 0));
    c->q_head = (c->q_head + 1) & (c->q_cap - 1);
    c->q_len--;
  }
  wsy_free(c->q);
  wsy_free(c->wreq);
  tls_io_free(conn_tls(c));
  wsy_free(c);
}

void net_conn_close(conn *c) {
  if (c->flags & F_CLOSING) return;
  c->flags |= F_CLOSING;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  conn *c = req->data;
  wsy_free(req);
  if (status < 0 || (c->flags & F_CLOSING)) {
    net_conn_close(c);
    return;
  }
  /* FIN sent: wait for the peer's (read returns EOF) until the deadline. */
  uint32_t lin = (uint32_t)(uv_now(conn_nl(c)->uv) + conn_nl(c)->cfg.linger_ms);
  if ((int32_t)(lin - c->deadline) < 0) c->deadline = lin;
}

void net_maybe_shutdown(conn *c) {
  if (!(c->flags & F_ENDING) || (c->flags & (F_SHUT | F_CLOSING)) || c->q_len) return;
  if (conn_tls(c) && (conn_tls(c)->fly || conn_tls(c)->out_len)) return;
  c->flags |= F_SHUT;
  uv_shutdown_t *req = wsy_malloc(sizeof *req);
  req->data = c;
  if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    wsy_free(req);
    net_conn_close(c);
  }
}

void net_conn_end(conn *c) {
  if (c->flags & (F_ENDING | F_CLOSING)) return;
  c->flags |= F_ENDING;
  /* Bounded: a peer that reads nothing cannot hold the conn open. */
  c->deadline = (uint32_t)(uv_now(conn_nl(c)->uv) + 2 * (uint64_t)conn_nl(c)->cfg.linger_ms);
  if (c->flags & F_PAUSED) net_conn_resume(c); /* to see the peer's FIN */
  net_mark_dirty(c);
}

/* ---- write ---------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status) {
  conn *c = req->data;
  uint32_t n = c->q_inflight;
  c->q_inflight = 0;
  if (status < 0) {
    log_debug("write failed: %s", uv_strerror(status));
    net_conn_close(c);
    return;
  }
  size_t bytes = 0;
  for (uint32_t i = 0; i < n; i++) bytes += (*q_at(c, i))->len;
  bytes -= c->head_off;
  conn_nl(c)->st.bytes_out += bytes;
  conn_nl(c)->st.writes++;
  c->queued -= bytes;
  c->head_off = 0;
  q_pop(c, n);
  if (!(c->flags & F_CLOSING)) net_mark_dirty(c); /* more may have queued meanwhile */
}

uint32_t net_fill_iov(const conn *c, uv_buf_t *iov, size_t *total) {
  uint32_t n = c->q_len < NET_IOV_MAX ? c->q_len : NET_IOV_MAX;
  size_t t = 0;
  for (uint32_t i = 0; i < n; i++) {
    const net_chunk *ch = c->q[(c->q_head + i) & (c->q_cap - 1)];
    size_t off = i == 0 ? c->head_off : 0;
    iov[i] = uv_buf_init((char *)ch->data + off, (unsigned)(ch->len - off));
    t += ch->len - off;
  }
  *total = t;
  return n;
}

int net_write_done(conn *c, ssize_t r, size_t total) {
  net_loop *nl = conn_nl(c);
  if (r == UV_EAGAIN) r = 0;
  if (r < 0) {
    log_debug("write failed: %s", uv_strerror((int)r));
    net_conn_close(c);
    return -1;
  }
  nl->st.writes++;
  nl->st.bytes_out += (size_t)r;
  net_q_advance(c, (size_t)r);
  if ((size_t)r == total) return 0;
  /* The socket buffer is full: let one uv_write own the rest of this batch
   * and wake us when it is written. */
  uint32_t n = net_fill_iov(c, nl->iov, &total);
  if (!c->wreq) c->wreq = wsy_malloc(sizeof *c->wreq);
  c->wreq->data = c;
  c->q_inflight = n;
  if (uv_write(c->wreq, (uv_stream_t *)&c->tcp, nl->iov, n, on_write) < 0) {
    c->q_inflight = 0;
    net_conn_close(c);
    return -1;
  }
  return 1;
}

static void flush(conn *c) {
  net_loop *nl = conn_nl(c);
  if (conn_tls(c)) {
    net_tls_flush(c);
    return;
  }
  while (c->q_len && !c->q_inflight && !(c->flags & F_CLOSING)) {
    size_t total;
    uint32_t n = net_fill_iov(c, nl->iov, &total);
    if (net_write_done(c, uv_try_write((uv_stream_t *)&c->tcp, nl->iov, n), total) != 0) return;
  }
  if (!c->q_len && !c->q_inflight && c->wreq) {
    wsy_free(c->wreq);
    c->wreq = NULL;
  }
  net_maybe_shutdown(c);
}

void net_loop_flush(net_loop *nl) {
  if (nl->writers) net_writers_flush(nl, nl->writers);
  while (nl->dirty) {
    conn *c = nl->dirty;
    nl->dirty = c->dirty_next;
    c->dirty_next = NULL;
    c->flags &= ~(uint32_t)F_DIRTY;
    if (!(c->flags & F_CLOSING)) flush(c);
  }
}

static void on_prepare(uv_prepare_t *h) {
  net_loop_flush(h->data);
  wsy_log_loop_wait();
}
static void on_check(uv_check_t *h) { net_loop_flush(h->data); }

/* ---- read ----------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  conn *c = wsy_container_of((uv_tcp_t *)h, conn, tcp);
  b->base = (char *)conn_nl(c)->rbuf;
  b->len = NET_READ_BUF;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  conn *c = wsy_container_of((uv_tcp_t *)s, conn, tcp);
  if (nread > 0) {
    conn_nl(c)->st.bytes_in += (uint64_t)nread;
    if (c->flags & (F_ENDING | F_CLOSING)) return; /* draining until the peer's FIN */
    if (conn_tls(c)) {
      net_tls_read(c, (uint8_t *)b->base, (size_t)nread);
      return;
    }
    c->ops->on_data(c, (uint8_t *)b->base, (size_t)nread);
    return;
  }
  if (nread == 0) return;
  if (!(c->flags & (F_ENDING | F_CLOSING)) && c->ops->on_eof) c->ops->on_eof(c);
  net_conn_close(c);
}

void net_conn_pause(conn *c) {
  if (c->flags & (F_PAUSED | F_CLOSING)) return;
  c->flags |= F_PAUSED;
  uv_read_stop((uv_stream_t *)&c->tcp);
}

void net_conn_resume(conn *c) {
  if (!(c->flags & F_PAUSED) || (c->flags & F_CLOSING)) return;
  c->flags &= ~(uint32_t)F_PAUSED;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- accept and tick ------------------------------------------------------ */

static void on_connection(uv_stream_t *server, int status) {
  net_loop *nl = server->data;
  if (status < 0) {
    log_warn("accept: %s", uv_strerror(status));
    return;
  }
  conn *c = wsy_calloc(1, sizeof *c + (nl->tls ? conn_tls_off(nl) + sizeof(tls_io *) : nl->cfg.ext_size));
  c->tcp.data = nl;
  uv_tcp_init(nl->uv, &c->tcp);
  c->next = nl->conns;
  if (nl->conns) nl->conns->prev = c;
  nl->conns = c;
  nl->nconns++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    net_conn_close(c);
    return;
  }
  if (nl->cfg.max_connections && nl->nconns > nl->cfg.max_connections) {
    nl->st.rejected++;
    log_warn("connection refused: --max-connections %u reached", nl->cfg.max_connections);
    net_conn_close(c);
    return;
  }
  if (nl->tls && !(*conn_tls_slot(c) = tls_io_new(nl->tls))) {
    char e[200];
    log_warn("TLS: cannot start a connection: %s", tls_last_error(e, sizeof e));
    net_conn_close(c);
    return;
  }
  nl->st.accepted++;
  uv_tcp_nodelay(&c->tcp, 1);
  nl->accept_cb(c, nl->accept_ud);
  if (!(c->flags & F_CLOSING)) uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_tick(uv_timer_t *t) {
  net_loop *nl = t->data;
  uint64_t now = uv_now(nl->uv);
  for (conn *c = nl->conns; c; c = c->next) {
    if (c->flags & F_CLOSING) continue;
    if (c->flags & F_ENDING) {
      if ((int32_t)((uint32_t)now - c->deadline) >= 0) net_conn_close(c);
      continue;
    }
    if (c->q_len == 0 && c->q && !c->q_inflight) {
      /* Idle: the ring is made again by the next send. */
      wsy_free(c->q);
      c->q = NULL;
      c->q_cap = c->q_head = 0;
    }
    if (conn_tls(c)) tls_io_trim(conn_tls(c));
    if (c->ops && c->ops->on_tick) c->ops->on_tick(c, now);
  }
}

net_loop *net_loop_new(uv_loop_t *uv, const net_config *cfg, void *app) {
  net_loop *nl = wsy_calloc(1, sizeof *nl);
  nl->uv = uv;
  nl->cfg = *cfg;
  nl->app = app;
  nl->rbuf = wsy_malloc(NET_READ_BUF);
  uv_prepare_init(uv, &nl->prep);
  nl->prep.data = nl;
  uv_prepare_start(&nl->prep, on_prepare);
  uv_check_init(uv, &nl->check);
  nl->check.data = nl;
  uv_check_start(&nl->check, on_check);
  uv_timer_init(uv, &nl->tick);
  nl->tick.data = nl;
  uv_timer_start(&nl->tick, on_tick, cfg->tick_ms, cfg->tick_ms);
  nl->writers = net_writers_new(cfg->write_threads, cfg->write_min);
  /* The hooks alone must not keep the loop alive. */
  uv_unref((uv_handle_t *)&nl->prep);
  uv_unref((uv_handle_t *)&nl->check);
  uv_unref((uv_handle_t *)&nl->tick);
  return nl;
}

int net_listen(net_loop *nl, const char *host, int port, net_accept_cb cb, void *ud) {
  struct sockaddr_storage ss;
  int rc = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
                             : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
  if (rc) return rc;
  uv_tcp_init(nl->uv, &nl->listener);
  nl->listener.data = nl;
  nl->accept_cb = cb;
  nl->accept_ud = ud;
  nl->listening = 1;
  if ((rc = uv_tcp_bind(&nl->listener, (struct sockaddr *)&ss, 0)) == 0)
    rc = uv_listen((uv_stream_t *)&nl->listener, 4096, on_connection);
  if (rc) net_stop_listening(nl);
  return rc;
}

int net_listen_port(net_loop *nl) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (!nl->listening || uv_tcp_getsockname(&nl->listener, (struct sockaddr *)&ss, &len)) return -1;
  if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

void net_stop_listening(net_loop *nl) {
  if (!nl->listening) return;
  nl->listening = 0;
  uv_close((uv_handle_t *)&nl->listener, NULL);
}

void net_loop_foreach(net_loop *nl, void (*fn)(conn *c, void *ud), void *ud) {
  for (conn *c = nl->conns; c; c = c->next)
    if (!(c->flags & F_CLOSING)) fn(c, ud);
}

void net_loop_free(net_loop *nl) {
  /* Called after the loop has run dry of connections; the hooks are closed
   * here and the caller runs the loop once more to finish closing them. */
  net_stop_listening(nl);
  uv_close((uv_handle_t *)&nl->prep, NULL);
  uv_close((uv_handle_t *)&nl->check, NULL);
  uv_close((uv_handle_t *)&nl->tick, NULL);
  uv_run(nl->uv, UV_RUN_DEFAULT);
  wsy_log_flush();
  net_writers_free(nl->writers);
  wsy_free(nl->rbuf);
  wsy_free(nl->pbuf);
  wsy_free(nl->gbuf);
  wsy_free(nl);
}
