/* tls_conn.c -- the TLS read and flush paths of one connection (net_int.h),
 * OpenSSL running over tls.c's in-memory BIO.
 *
 * Writes: the queue still holds the shared plaintext chunks. A flush first
 * encrypts what is queued (up to TLS_BATCH bytes) into the conn's ciphertext
 * buffer, then offers that buffer to the socket with one uv_try_write; a
 * remainder becomes the in-flight buffer of one uv_write, and nothing more is
 * encrypted until it is written, so plaintext waits in the queue (where the
 * cap counts it) instead of piling up as ciphertext.
 *
 * Reads: a socket read is fed to OpenSSL whole; complete records are
 * decrypted into the loop's plaintext buffer and handed to on_data. */
#include "net_int.h"

#include <string.h>

#include <openssl/err.h>

#include "../common/log.h"

/* Plaintext encrypted per write: 16 full TLS records. */
#define TLS_BATCH (256 * 1024)
/* Queued chunks smaller than this are copied together into one record
 * rather than each getting a record (and a MAC, and the client's per-record
 * work) of its own. */
#define TLS_GATHER 4096

void net_loop_set_tls(net_loop *nl, net_tls *t) {
  nl->tls = t;
  if (t && !nl->pbuf) {
    nl->pbuf = wsy_malloc(NET_READ_BUF);
    nl->gbuf = wsy_malloc(TLS_RECORD);
  }
}

static void on_tls_write(uv_write_t *req, int status) {
  conn *c = req->data;
  tls_io *io = conn_tls(c);
  size_t n = io->fly_len - io->fly_off;
  wsy_free(io->fly);
  io->fly = NULL;
  io->fly_off = io->fly_len = 0;
  if (status < 0) {
    log_debug("write failed: %s", uv_strerror(status));
    net_conn_close(c);
    return;
  }
  conn_nl(c)->st.bytes_out += n;
  conn_nl(c)->st.writes++;
  if (!(c->flags & F_CLOSING)) net_mark_dirty(c);
}

static int tls_write(conn *c, const uint8_t *p, size_t n) {
  if (!n) return 0;
  int r = SSL_write(conn_tls(c)->ssl, p, (int)n);
  if (r == (int)n) return 0;
  char e[200]; /* our BIO takes everything: only a broken session fails */
  log_debug("TLS write failed: %s", tls_last_error(e, sizeof e));
  return -1;
}

/* Encrypts up to TLS_BATCH queued bytes into io->out; -1 on an error. A
 * large chunk is encrypted where it is; runs of small ones (fan-out of short
 * messages) are gathered into the loop's record buffer first. */
static int tls_encrypt(conn *c) {
  tls_io *io = conn_tls(c);
  uint8_t *g = conn_nl(c)->gbuf;
  size_t done = 0;
  while (c->q_len && done < TLS_BATCH) {
    net_chunk *h = *q_at(c, 0);
    size_t n = h->len - c->head_off;
    if (n >= TLS_GATHER) {
      if (n > TLS_BATCH - done) n = TLS_BATCH - done;
      if (tls_write(c, h->data + c->head_off, n)) return -1;
    } else {
      n = 0;
      for (uint32_t i = 0; i < c->q_len; i++) {
        net_chunk *ch = *q_at(c, i);
        size_t off = i ? 0 : c->head_off, a = ch->len - off;
        if (n + a > TLS_RECORD) break;
        memcpy(g + n, ch->data + off, a);
        n += a;
      }
      if (tls_write(c, g, n)) return -1;
    }
    net_q_advance(c, n);
    done += n;
  }
  if ((c->flags & F_ENDING) && !c->q_len && !io->closed) {
    io->closed = 1;
    SSL_shutdown(io->ssl); /* close_notify into out, before our FIN */
    ERR_clear_error();
  }
  return 0;
}

void net_tls_flush(conn *c) {
  net_loop *nl = conn_nl(c);
  tls_io *io = conn_tls(c);
  if (!io->failed && !SSL_is_init_finished(io->ssl) && (c->flags & F_ENDING))
    io->failed = 1; /* ending before the handshake finished (a timeout, a refusal at accept) */
  if (io->failed && c->q_len) net_conn_discard_pending(c); /* no session to send plaintext in */
  while (!(c->flags & F_CLOSING) && !io->fly) {
    if (!io->out_len && !io->failed && SSL_is_init_finished(io->ssl) && tls_encrypt(c) != 0) {
      net_conn_close(c);
      return;
    }
    if (!io->out_len) break;
    uv_buf_t b = uv_buf_init((char *)io->out, (unsigned)io->out_len);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == UV_EAGAIN) r = 0;
    if (r < 0) {
      log_debug("write failed: %s", uv_strerror(r));
      net_conn_close(c);
      return;
    }
    nl->st.writes++;
    nl->st.bytes_out += (size_t)r;
    if ((size_t)r == io->out_len) {
      io->out_len = 0;
      continue; /* more only when over TLS_BATCH was queued */
    }
    /* The socket is full: the rest of this buffer goes to one uv_write and
     * new ciphertext starts a buffer of its own. */
    io->fly = io->out;
    io->fly_off = (size_t)r;
    io->fly_len = io->out_len;
    io->out = NULL;
    io->out_len = io->out_cap = 0;
    if (!c->wreq) c->wreq = wsy_malloc(sizeof *c->wreq);
    c->wreq->data = c;
    b = uv_buf_init((char *)io->fly + io->fly_off, (unsigned)(io->fly_len - io->fly_off));
    if (uv_write(c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_tls_write) < 0) {
      wsy_free(io->fly);
      io->fly = NULL;
      net_conn_close(c);
    }
    return;
  }
  if (!io->fly && !c->q_len && c->wreq) {
    wsy_free(c->wreq);
    c->wreq = NULL;
  }
  net_maybe_shutdown(c);
}

/* Plain text where a TLS handshake record (0x16) should start: a browser or
 * curl sent http:// to the TLS port. Answer a short 400 in plain text and
 * end the connection; the protocol above never sees it. */
static void plain_on_tls_port(conn *c, uint8_t first) {
  static const char reply[] = "HTTP/1.1 400 Bad Request\r\n"
                              "Content-Type: text/plain\r\n"
                              "Content-Length: 46\r\n"
                              "Connection: close\r\n\r\n"
                              "This port speaks TLS: use https:// or wss://.\n";
  char peer[80];
  net_conn_peer(c, peer, sizeof peer);
  log_debug("%s: not TLS on the TLS port (first byte 0x%02x): answered 400, closing", peer, first);
  tls_io_free(conn_tls(c));
  *conn_tls_slot(c) = NULL;
  net_chunk *ch = net_chunk_new(sizeof reply - 1);
  memcpy(ch->data, reply, sizeof reply - 1);
  (void)net_conn_send_force(c, ch);
  net_chunk_unref(ch);
  net_conn_end(c);
}

/* One socket read of ciphertext: the handshake, then every complete record
 * decrypted into the loop's plaintext buffer and handed to on_data. */
void net_tls_read(conn *c, uint8_t *data, size_t len) {
  net_loop *nl = conn_nl(c);
  tls_io *io = conn_tls(c);
  char e[200];
  if (!io->seen) {
    io->seen = 1;
    if (data[0] != 0x16) {
      plain_on_tls_port(c, data[0]);
      return;
    }
  }
  io->in = data;
  io->in_len = len;
  if (!SSL_is_init_finished(io->ssl)) {
    int r = SSL_do_handshake(io->ssl);
    if (r != 1) {
      if (SSL_get_error(io->ssl, r) != SSL_ERROR_WANT_READ) {
        char peer[80];
        net_conn_peer(c, peer, sizeof peer);
        log_debug("%s: TLS handshake failed: %s", peer, tls_last_error(e, sizeof e));
        io->failed = 1;
        net_conn_end(c); /* the alert, then FIN */
      }
      goto out;
    }
  }
  for (;;) {
    size_t got = 0;
    int r = 0, err = SSL_ERROR_NONE;
    while (got < NET_READ_BUF) {
      r = SSL_read(io->ssl, nl->pbuf + got, (int)(NET_READ_BUF - got));
      if (r <= 0) {
        err = SSL_get_error(io->ssl, r);
        break;
      }
      got += (size_t)r;
    }
    if (got) c->ops->on_data(c, nl->pbuf, got);
    if (c->flags & (F_ENDING | F_CLOSING)) goto out;
    if (err == SSL_ERROR_NONE) continue; /* the buffer was full */
    if (err == SSL_ERROR_WANT_READ) break;
    if (err == SSL_ERROR_ZERO_RETURN) { /* close_notify: the peer is done, as at EOF */
      ERR_clear_error();
      if (c->ops->on_eof) c->ops->on_eof(c);
    } else {
      log_debug("TLS read failed: %s", tls_last_error(e, sizeof e));
      io->failed = 1;
    }
    net_conn_close(c);
    goto out;
  }
out:
  io->in = NULL;
  io->in_len = 0;
  if (io->out_len && !(c->flags & F_CLOSING)) net_mark_dirty(c);
}
