/* pmd.c -- permessage-deflate (RFC 7692): the offer parser, the answer, and
 * the zlib streams.
 *
 * No connection owns a zlib stream. Messages are compressed without context
 * takeover in both directions (wsync's answer always says so), hence:
 *   - deflate: one stream for the whole process, reset between messages; a
 *     broadcast frame is compressed once (ws_conn.c shares the result);
 *   - inflate: a parser borrows a stream from a small pool when a compressed
 *     message starts and gives it back when it ends.
 * zlib allocates through zalloc/zfree below, which count its bytes
 * (ws_pmd_stats.zlib_bytes) for the memory figures of docs/PERFORMANCE.md. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "ws.h"
#include "ws_pmd.h"

static ws_pmd_stats stats;

const ws_pmd_stats *ws_pmd_stats_get(void) { return &stats; }

/* ---- negotiation ----------------------------------------------------------- */

static int tchar(int c) { /* RFC 9110 5.6.2 token */
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int ows(int c) { return c == ' ' || c == '\t'; }

/* One element of the list, v[0..n): "name *(; param [= value])". Returns 1
 * and fills *out when it is a permessage-deflate offer wsync accepts. */
static int offer(const char *v, size_t n, ws_pmd *out) {
  size_t i = 0, s;
  while (i < n && ows(v[i])) i++;
  s = i;
  while (i < n && tchar((unsigned char)v[i])) i++;
  if (i - s != 18 || memcmp(v + s, "permessage-deflate", 18) != 0) return 0;
  int seen_snct = 0, seen_cnct = 0, seen_smwb = 0, seen_cmwb = 0;
  ws_pmd a = {.server_max_window_bits = 15};
  for (;;) {
    while (i < n && ows(v[i])) i++;
    if (i == n) break;
    if (v[i] != ';') return 0;
    i++;
    while (i < n && ows(v[i])) i++;
    const char *name = v + i;
    s = i;
    while (i < n && tchar((unsigned char)v[i])) i++;
    size_t nl = i - s;
    if (nl == 0) return 0;
    while (i < n && ows(v[i])) i++;
    char val[8];
    size_t vl = 0;
    int has_val = 0;
    if (i < n && v[i] == '=') {
      has_val = 1;
      i++;
      while (i < n && ows(v[i])) i++;
      if (i < n && v[i] == '"') { /* quoted-string; unescaped it must be a token */
        i++;
        for (;;) {
          if (i == n) return 0;
          char c = v[i++];
          if (c == '"') break;
          if (c == '\\') {
            if (i == n) return 0;
            c = v[i++];
          }
          if (!tchar((unsigned char)c) || vl == sizeof val) return 0;
          val[vl++] = c;
        }
      } else {
        while (i < n && tchar((unsigned char)v[i])) {
          if (vl == sizeof val) return 0;
          val[vl++] = v[i++];
        }
      }
      if (vl == 0) return 0;
    }
#define IS(lit) (nl == sizeof lit - 1 && memcmp(name, lit, nl) == 0)
    if (IS("server_no_context_takeover") || IS("client_no_context_takeover")) {
      int *seen = IS("server_no_context_takeover") ? &seen_snct : &seen_cnct;
      if (*seen || has_val) return 0;
      *seen = 1;
    } else if (IS("server_max_window_bits") || IS("client_max_window_bits")) {
      int server = IS("server_max_window_bits");
      int *seen = server ? &seen_smwb : &seen_cmwb;
      if (*seen) return 0;
      *seen = 1;
      if (!has_val) {
        if (server) return 0; /* 7.1.2.1: a value is required */
        continue;             /* 7.1.2.2: the client may say it supports it */
      }
      /* 1*DIGIT without leading zeros, 8 to 15 */
      if (vl > 2 || val[0] < '1' || val[0] > '9' || (vl == 2 && (val[1] < '0' || val[1] > '9'))) return 0;
      int bits = vl == 1 ? val[0] - '0' : (val[0] - '0') * 10 + (val[1] - '0');
      if (bits < 8 || bits > 15) return 0;
      if (server) {
        a.server_max_window_bits = (uint8_t)bits;
        a.asked_server_bits = 1;
      }
      /* client_max_window_bits=N: a hint wsync may ignore (7.1.2.2). It
       * inflates with a 32 KiB window, which reads any smaller one. */
    } else {
      return 0; /* not defined for an offer: decline it (7.1) */
    }
#undef IS
  }
  *out = a;
  return 1;
}

int ws_pmd_negotiate(const char *v, size_t len, ws_pmd *out) {
  size_t i = 0;
  while (i < len) {
    /* The element runs to the next comma outside a quoted string. */
    size_t s = i;
    int q = 0;
    while (i < len && (q || v[i] != ',')) {
      if (q && v[i] == '\\' && i + 1 < len) i++;
      else if (v[i] == '"') q = !q;
      i++;
    }
    if (offer(v + s, i - s, out)) return 1;
    if (i < len) i++; /* the comma */
  }
  return 0;
}

size_t ws_pmd_response(const ws_pmd *a, char *out, size_t n) {
  int k;
  if (a->asked_server_bits)
    k = snprintf(out, n, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                         "server_max_window_bits=%u",
                 a->server_max_window_bits);
  else k = snprintf(out, n, "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
  return wsy_snlen(k, n);
}

/* ---- zlib allocation ------------------------------------------------------- */

typedef struct {
  size_t n;
  max_align_t pad[];
} zhdr;

static voidpf zalloc_counted(voidpf opaque, uInt items, uInt size) {
  (void)opaque;
  size_t n = (size_t)items * size;
  zhdr *h = wsy_try_malloc(sizeof *h + n);
  if (!h) return Z_NULL;
  h->n = n;
  stats.zlib_bytes += n;
  return h->pad;
}

static void zfree_counted(voidpf opaque, voidpf p) {
  (void)opaque;
  if (!p) return;
  zhdr *h = (zhdr *)((char *)p - offsetof(zhdr, pad));
  stats.zlib_bytes -= h->n;
  wsy_free(h);
}

/* ---- inflate pool ---------------------------------------------------------- */

/* A few streams are kept (with their 32 KiB windows, once used) so that a
 * busy server does not set one up per message; they belong to no
 * connection. */
#define POOL_MAX 4
typedef struct {
  z_stream z; /* first: a zin is handed out as its z_stream */
  uint64_t wire;
} zin;
static zin *pool[POOL_MAX];
static unsigned pool_n;

z_stream *ws_pmd_inflate_get(void) {
  zin *s;
  if (pool_n) {
    s = pool[--pool_n];
  } else {
    s = wsy_try_malloc(sizeof *s);
    if (!s) return NULL;
    memset(s, 0, sizeof *s);
    s->z.zalloc = zalloc_counted;
    s->z.zfree = zfree_counted;
    /* Raw deflate (no zlib header), the largest window: reads data made
     * with any client_max_window_bits. */
    if (inflateInit2(&s->z, -15) != Z_OK) {
      wsy_free(s);
      return NULL;
    }
    stats.zlib_bytes += sizeof *s;
  }
  s->wire = 0;
  stats.inflate_streams++;
  return &s->z;
}

uint64_t *ws_pmd_inflate_wire(z_stream *z) { return &((zin *)(void *)z)->wire; }

void ws_pmd_inflate_put(z_stream *z) {
  if (!z) return;
  zin *s = (zin *)(void *)z;
  stats.inflate_streams--;
  if (pool_n < POOL_MAX && inflateReset(z) == Z_OK) {
    pool[pool_n++] = s;
    return;
  }
  inflateEnd(z);
  stats.zlib_bytes -= sizeof *s;
  wsy_free(s);
}

void ws_pmd_count_inflate(size_t in, size_t out) {
  stats.inflates++;
  stats.inflate_in += in;
  stats.inflate_out += out;
}

/* ---- deflate ------------------------------------------------------------- */

/* One stream per window size ever asked for (15 for nearly every client). */
static z_stream *dstream[16];

#define LEVEL 6 /* zlib's default; see docs/PERFORMANCE.md, compression */

static z_stream *deflater(int wbits) {
  if (dstream[wbits]) return dstream[wbits];
  z_stream *z = wsy_try_malloc(sizeof *z);
  if (!z) return NULL;
  memset(z, 0, sizeof *z);
  z->zalloc = zalloc_counted;
  z->zfree = zfree_counted;
  /* memLevel 8 is zlib's default: 128 KiB of hash tables plus the window's
   * 2 x 2^wbits; one such stream serves the whole process. */
  if (deflateInit2(z, LEVEL, Z_DEFLATED, -wbits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    wsy_free(z);
    return NULL;
  }
  stats.zlib_bytes += sizeof *z;
  return dstream[wbits] = z;
}

int ws_pmd_deflate(const uint8_t *in, size_t len, int wbits, buf *out) {
  if (wbits < 9 || wbits > 15) return WSY_PROTO;
  z_stream *z = deflater(wbits);
  if (!z) return WSY_NOMEM;
  size_t start = out->len;
  z->next_in = (Bytef *)(uintptr_t)in;
  z->avail_in = (uInt)len;
  int rc;
  do {
    uint8_t tmp[4096];
    z->next_out = tmp;
    z->avail_out = sizeof tmp;
    rc = deflate(z, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_BUF_ERROR) break;
    int arc = buf_append(out, tmp, sizeof tmp - z->avail_out);
    if (arc != WSY_OK) {
      deflateReset(z);
      return arc;
    }
  } while (z->avail_out == 0);
  deflateReset(z); /* no context takeover: the next message starts afresh */
  if (rc != Z_OK && rc != Z_BUF_ERROR) return WSY_NOMEM;
  /* RFC 7692 7.2.1: the sync flush ends in an empty stored block whose
   * 00 00 ff ff is removed; the receiver puts it back. */
  if (out->len - start < 4 || memcmp(out->data + out->len - 4, "\x00\x00\xff\xff", 4) != 0)
    return WSY_PROTO;
  out->len -= 4;
  stats.deflates++;
  stats.deflate_in += len;
  stats.deflate_out += out->len - start;
  return WSY_OK;
}

void ws_pmd_count_shared(uint64_t hits, uint64_t skipped) {
  stats.shared_hits += hits;
  stats.deflate_skipped += skipped;
}

void ws_pmd_set_cached(unsigned n) { stats.cached_frames = n; }

void ws_pmd_release(void) {
  while (pool_n) {
    zin *s = pool[--pool_n];
    inflateEnd(&s->z);
    stats.zlib_bytes -= sizeof *s;
    wsy_free(s);
  }
  for (int i = 0; i < 16; i++)
    if (dstream[i]) {
      deflateEnd(dstream[i]);
      stats.zlib_bytes -= sizeof *dstream[i];
      wsy_free(dstream[i]);
      dstream[i] = NULL;
    }
}
