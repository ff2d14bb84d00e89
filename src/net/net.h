/* net.h -- wsync's event loop layer: listener, connections, the shared read
 * buffer, reference-counted outgoing chunks, per-connection write queues
 * flushed with one writev per loop iteration, and a coarse tick for timeouts.
 *
 * Loop thread only. A connection is driven by a protocol (conn_ops: HTTP,
 * then WebSocket after an upgrade) that can be swapped in place. Data handed
 * to on_data lives in the loop's shared read buffer and is valid only during
 * the call (the protocol may modify it, e.g. unmask in place).
 *
 * Outgoing data is a net_chunk: bytes framed once, shared by every recipient
 * queue that holds a reference. Queues never copy and never allocate per
 * message; each is capped in bytes (max_queued), and a send past the cap
 * fails with WSY_SLOW so the protocol can close the slow consumer. */
#ifndef WSY_NET_H
#define WSY_NET_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../common/wsy.h"

typedef struct net_loop net_loop;
typedef struct conn conn;

/* ---- chunks ------------------------------------------------------------ */

typedef struct net_chunk {
  uint32_t refs;
  uint32_t len;
  uint8_t data[];
} net_chunk;

/* Returns a chunk of len bytes (uninitialised) with one reference, owned by
 * the caller. Every queue that takes it adds its own reference. */
net_chunk *net_chunk_new(size_t len);
static inline net_chunk *net_chunk_ref(net_chunk *c) { c->refs++; return c; }
void net_chunk_unref(net_chunk *c); /* frees on the last reference */

/* ---- protocol callbacks ------------------------------------------------ */

typedef struct conn_ops {
  const char *name;
  /* Bytes received. May call net_conn_close()/net_conn_end() or swap ops. */
  void (*on_data)(conn *c, uint8_t *data, size_t len);
  /* The peer closed its side or the socket failed; net closes afterwards. */
  void (*on_eof)(conn *c);
  /* About once per tick interval, for timeouts and pings. */
  void (*on_tick)(conn *c, uint64_t now_ms);
  /* The connection is about to be freed: release protocol state. */
  void (*on_free)(conn *c);
} conn_ops;

/* ---- loop ---------------------------------------------------------------- */

typedef struct net_config {
  size_t max_queued;       /* bytes queued per connection before WSY_SLOW */
  unsigned max_connections;
  size_t ext_size;         /* bytes of protocol state inside each conn */
  unsigned tick_ms;        /* on_tick period */
  unsigned linger_ms;      /* wait for the peer's FIN after ours */
  unsigned write_threads;  /* helper threads that share a large flush's writes (0: none) */
  unsigned write_min;      /* ... when this many connections write (0: 8) */
} net_config;

typedef struct net_stats {
  uint64_t accepted, rejected, closed;
  uint64_t bytes_in, bytes_out;
  uint64_t writes;        /* write syscalls (writev) issued */
  uint64_t writes_helped; /* ... of which by --write-threads helpers */
  uint64_t chunks_out;    /* queue entries completed */
  uint64_t slow_closes;
} net_stats;

/* Called for each accepted connection: set the protocol with net_conn_set_ops. */
typedef void (*net_accept_cb)(conn *c, void *ud);

net_loop *net_loop_new(uv_loop_t *uv, const net_config *cfg, void *app);
void net_loop_free(net_loop *nl); /* after every connection and listener closed */
void *net_loop_app(net_loop *nl);
const net_stats *net_loop_stats(net_loop *nl);
unsigned net_loop_conn_count(net_loop *nl);
unsigned net_loop_write_threads(net_loop *nl); /* helper threads running */
uint64_t net_loop_now(net_loop *nl);

/* Binds and listens on host:port; returns 0 or a negative libuv error. */
int net_listen(net_loop *nl, const char *host, int port, net_accept_cb cb, void *ud) WSY_WUR;
/* Port actually bound (useful with port 0). */
int net_listen_port(net_loop *nl);
/* Stops accepting new connections. */
void net_stop_listening(net_loop *nl);
/* Calls fn for every open connection (fn may close it). */
void net_loop_foreach(net_loop *nl, void (*fn)(conn *c, void *ud), void *ud);
/* Flushes every dirty queue now (also done on every loop iteration). */
void net_loop_flush(net_loop *nl);

/* ---- TLS (tls.c) ------------------------------------------------------------
 * A listener with TLS speaks it on every connection: the handshake and the
 * record layer run inside net over OpenSSL with in-memory I/O (no blocking
 * call), and the protocols above see plaintext through the same conn_ops and
 * net_conn_send. Queued chunks stay plaintext and shared; each connection
 * encrypts what is queued for it when it flushes (one write per iteration). */

typedef struct net_tls net_tls;

/* Loads a PEM certificate chain and its private key. NULL with a message
 * naming the file in err when either cannot be read or parsed or when the
 * key does not match the certificate. */
net_tls *net_tls_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
/* Loads the same files again; new handshakes use the new pair, existing
 * connections keep theirs. On failure the old pair stays and err says why. */
int net_tls_reload(net_tls *t, char *err, size_t errlen) WSY_WUR;
/* SHA-256 fingerprint of the current certificate, "AB:CD:...". */
const char *net_tls_fingerprint(const net_tls *t);
void net_tls_free(net_tls *t);
/* Every connection accepted from now on speaks TLS with t (owned by the caller,
 * kept until net_loop_free). */
void net_loop_set_tls(net_loop *nl, net_tls *t);

/* ---- connections --------------------------------------------------------- */

void net_conn_set_ops(conn *c, const conn_ops *ops);
const conn_ops *net_conn_ops(const conn *c);
void *net_conn_ext(conn *c);          /* ext_size bytes, zeroed at accept */
conn *net_conn_from_ext(void *ext);
net_loop *net_conn_loop(conn *c);
int net_conn_closing(const conn *c);
size_t net_conn_queued(const conn *c);
/* Peer address as text ("127.0.0.1:5555") into out. */
void net_conn_peer(conn *c, char *out, size_t n);

/* Queues the chunk (takes a new reference; the caller keeps its own). The
 * queue is flushed at the end of this loop iteration. WSY_SLOW when the queue
 * would exceed max_queued even after offering it to the socket now (nothing
 * queued; an empty queue always takes one chunk), WSY_CLOSED when closing. */
int net_conn_send(conn *c, net_chunk *ch) WSY_WUR;
/* Like net_conn_send, but ignores the cap: for the small final frames that
 * end a connection (close frames, error responses). */
int net_conn_send_force(conn *c, net_chunk *ch);
/* Drops queued chunks that no write has started on. Returns bytes dropped. */
size_t net_conn_discard_pending(conn *c);
/* Stops reading new bytes (e.g. while a response is pending); resume later. */
void net_conn_pause(conn *c);
void net_conn_resume(conn *c);

/* Graceful end: stop delivering data to the protocol, flush the queue, send
 * FIN, wait up to linger_ms for the peer's FIN, then close. Idempotent. */
void net_conn_end(conn *c);
/* Immediate close (queued data is dropped). Deferred and idempotent: the conn
 * is freed in the close callback, never under a caller's feet. */
void net_conn_close(conn *c);

#endif
