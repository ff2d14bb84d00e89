/* tls.h -- inside src/net only: one connection's TLS state (tls.c), driven
 * by net.c's read and flush paths.
 *
 * OpenSSL talks to a BIO of our own instead of a socket: reads take the
 * ciphertext of the current socket read (in/in_len, pointing into the loop's
 * read buffer for the length of one on_read), writes append ciphertext to
 * out. net.c writes out with one uv_try_write; what the socket does not take
 * moves to fly for a uv_write to own. Neither buffer outlives its use by
 * more than a tick, and OpenSSL drops its record buffers while idle
 * (SSL_MODE_RELEASE_BUFFERS), so an idle TLS connection holds its SSL
 * object and nothing else. */
#ifndef WSY_NET_TLS_H
#define WSY_NET_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "net.h"

typedef struct tls_io {
  SSL *ssl;
  const uint8_t *in;    /* ciphertext not yet taken by OpenSSL (this read only) */
  size_t in_len;
  uint8_t *out;         /* ciphertext produced, not yet offered to the socket */
  size_t out_len, out_cap;
  uint8_t *fly;         /* ciphertext a uv_write owns */
  size_t fly_off, fly_len;
  unsigned seen : 1;    /* the first byte has been checked */
  unsigned failed : 1;  /* handshake or record error: send the alert, no close_notify */
  unsigned closed : 1;  /* close_notify produced */
} tls_io;

/* A server-side SSL on t's current context, in accept state. */
tls_io *tls_io_new(net_tls *t);
void tls_io_free(tls_io *io);
/* Frees out when empty (idle connections keep no buffer). */
void tls_io_trim(tls_io *io);
/* The last OpenSSL error as text (clears the queue), for logs. */
const char *tls_last_error(char *msg, size_t n);

#endif
