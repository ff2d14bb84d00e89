/* tls.c -- TLS contexts (certificate, key, protocol settings, reload) and
 * the in-memory BIO that lets net.c run OpenSSL without a socket (tls.h). */
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "../common/log.h"

/* Mozilla's "intermediate" profile (Server Side TLS recommendations,
 * https://wiki.mozilla.org/Security/Server_Side_TLS and the ssl-config
 * generator, version 5.7): TLS 1.2 and 1.3; for TLS 1.2 its ECDHE suites,
 * AES-GCM and CHACHA20-POLY1305, in its order. The profile's three DHE-RSA
 * suites are left out: they need finite-field DH parameters and every client
 * that can use them also offers ECDHE. TLS 1.3 suites are OpenSSL's three,
 * which is what the profile lists. The client chooses (server cipher
 * preference off, as the profile says), e.g. CHACHA20 on hardware without AES
 * instructions. Curves: X25519, P-256, P-384 as the profile has them. */
#define TLS12_CIPHERS                                                                       \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                             \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                             \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS "X25519:prime256v1:secp384r1"

struct net_tls {
  SSL_CTX *ctx;
  char *cert, *key;
  char fp[32 * 3];
};

/* ---- the BIO ------------------------------------------------------------------- */

static BIO_METHOD *bio_meth;

static int bio_write(BIO *b, const char *data, int len) {
  tls_io *io = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (len <= 0) return 0;
  if (io->out_len + (size_t)len > io->out_cap) {
    size_t cap = io->out_cap ? io->out_cap * 2 : 16 * 1024 + 512;
    while (cap < io->out_len + (size_t)len) cap *= 2;
    io->out = wsy_realloc(io->out, cap);
    io->out_cap = cap;
  }
  memcpy(io->out + io->out_len, data, (size_t)len);
  io->out_len += (size_t)len;
  return len;
}

static int bio_read(BIO *b, char *dst, int len) {
  tls_io *io = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (len <= 0) return 0;
  if (!io->in_len) {
    BIO_set_retry_read(b); /* "no more now", not EOF: the next socket read brings more */
    return -1;
  }
  size_t n = io->in_len < (size_t)len ? io->in_len : (size_t)len;
  memcpy(dst, io->in, n);
  io->in += n;
  io->in_len -= n;
  return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  tls_io *io = BIO_get_data(b);
  switch (cmd) {
  case BIO_CTRL_FLUSH: return 1; /* net.c writes out on its own schedule */
  case BIO_CTRL_PENDING: return io ? (long)io->in_len : 0;
  case BIO_CTRL_WPENDING: return 0;
  default: return 0;
  }
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static BIO_METHOD *bio_method(void) {
  if (!bio_meth) {
    bio_meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "wsync-net");
    if (!bio_meth) return NULL;
    BIO_meth_set_write(bio_meth, bio_write);
    BIO_meth_set_read(bio_meth, bio_read);
    BIO_meth_set_ctrl(bio_meth, bio_ctrl);
    BIO_meth_set_create(bio_meth, bio_create);
  }
  return bio_meth;
}

/* ---- per connection ------------------------------------------------------------ */

tls_io *tls_io_new(net_tls *t) {
  BIO_METHOD *m = bio_method();
  if (!m) return NULL;
  tls_io *io = wsy_calloc(1, sizeof *io);
  io->ssl = SSL_new(t->ctx);
  BIO *b = io->ssl ? BIO_new(m) : NULL;
  if (!b) {
    SSL_free(io->ssl);
    wsy_free(io);
    ERR_clear_error();
    return NULL;
  }
  BIO_set_data(b, io);
  SSL_set_bio(io->ssl, b, b); /* one reference, owned by the SSL */
  SSL_set_accept_state(io->ssl);
  return io;
}

void tls_io_free(tls_io *io) {
  if (!io) return;
  SSL_free(io->ssl);
  wsy_free(io->out);
  wsy_free(io->fly);
  wsy_free(io);
}

void tls_io_trim(tls_io *io) {
  if (io->out && !io->out_len) {
    wsy_free(io->out);
    io->out = NULL;
    io->out_cap = 0;
  }
}

const char *tls_last_error(char *msg, size_t n) {
  unsigned long e = ERR_get_error();
  if (!e) snprintf(msg, n, "%s", errno ? strerror(errno) : "unknown error");
  else ERR_error_string_n(e, msg, n);
  ERR_clear_error();
  return msg;
}

/* ---- contexts ------------------------------------------------------------------ */

/* A key file with a passphrase must fail, never prompt on the terminal. */
static int no_passphrase(char *pw, int size, int rw, void *ud) {
  (void)pw, (void)size, (void)rw, (void)ud;
  return 0;
}

static int readable(const char *flag, const char *file, char *err, size_t errlen) {
  FILE *f = fopen(file, "rb");
  if (!f) {
    snprintf(err, errlen, "%s %s: %s", flag, file, strerror(errno));
    return -1;
  }
  fclose(f);
  return 0;
}

static SSL_CTX *ctx_load(const char *cert, const char *key, char fp[static 32 * 3], char *err, size_t errlen) {
  char e[256];
  if (readable("--tls-cert", cert, err, errlen) || readable("--tls-key", key, err, errlen)) return NULL;
  ERR_clear_error();
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    snprintf(err, errlen, "TLS: %s", tls_last_error(e, sizeof e));
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
  SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* No session cache and no TLS 1.3 tickets: nothing kept per client, and
   * nothing to invalidate when the certificate is reloaded. */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
  if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 || SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1 ||
      SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1) {
    snprintf(err, errlen, "TLS settings: %s", tls_last_error(e, sizeof e));
    goto fail;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    snprintf(err, errlen, "--tls-cert %s: not a usable PEM certificate (%s)", cert, tls_last_error(e, sizeof e));
    goto fail;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    unsigned long last = ERR_peek_last_error();
    if (ERR_GET_LIB(last) == ERR_LIB_X509 && ERR_GET_REASON(last) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      snprintf(err, errlen, "--tls-key %s does not match the certificate in --tls-cert %s", key, cert);
      goto fail;
    }
    snprintf(err, errlen, "--tls-key %s: not a usable PEM private key (%s)", key, tls_last_error(e, sizeof e));
    goto fail;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    snprintf(err, errlen, "--tls-key %s does not match the certificate in --tls-cert %s", key, cert);
    goto fail;
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  X509 *x = SSL_CTX_get0_certificate(ctx);
  fp[0] = '\0';
  if (x && X509_digest(x, EVP_sha256(), md, &mdlen) == 1)
    for (unsigned i = 0; i < mdlen && i < 32; i++) snprintf(fp + 3 * i, 4, i + 1 < mdlen ? "%02X:" : "%02X", md[i]);
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

net_tls *net_tls_new(const char *cert_file, const char *key_file, char *err, size_t errlen) {
  net_tls *t = wsy_calloc(1, sizeof *t);
  t->ctx = ctx_load(cert_file, key_file, t->fp, err, errlen);
  if (!t->ctx || !bio_method()) {
    if (t->ctx) snprintf(err, errlen, "TLS: cannot make the I/O method");
    SSL_CTX_free(t->ctx);
    wsy_free(t);
    return NULL;
  }
  t->cert = wsy_strndup(cert_file, strlen(cert_file));
  t->key = wsy_strndup(key_file, strlen(key_file));
  return t;
}

int net_tls_reload(net_tls *t, char *err, size_t errlen) {
  char fp[sizeof t->fp];
  SSL_CTX *ctx = ctx_load(t->cert, t->key, fp, err, errlen);
  if (!ctx) return WSY_IO;
  /* Each SSL holds a reference to the context it was made from: connections
   * keep the old pair, the old context goes with the last of them. */
  SSL_CTX_free(t->ctx);
  t->ctx = ctx;
  memcpy(t->fp, fp, sizeof fp);
  return WSY_OK;
}

const char *net_tls_fingerprint(const net_tls *t) { return t->fp; }

void net_tls_free(net_tls *t) {
  if (!t) return;
  SSL_CTX_free(t->ctx);
  wsy_free(t->cert);
  wsy_free(t->key);
  wsy_free(t);
  BIO_meth_free(bio_meth);
  bio_meth = NULL;
}
