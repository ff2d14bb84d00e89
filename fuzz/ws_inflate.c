/* ws_inflate.c -- libFuzzer target for the inflate path of the frame parser
 * (permessage-deflate, src/ws/frame.c + src/ws/pmd.c).
 *
 * The input's first byte picks the opcode (text or binary) and how the
 * compressed bytes (the rest of the input) are fragmented; the bytes are sent
 * as one compressed message (RSV1 on the first frame, a ping between
 * fragments), masked, and fed whole, in pieces and a byte at a time. Checks:
 *  - every fragmentation and every split gives the same result;
 *  - a message delivered is what zlib itself inflates from the same bytes
 *    plus the 00 00 ff ff tail (RFC 7692 7.2.2), no longer than the limit,
 *    and valid UTF-8 when it is text;
 *  - 1009 only when zlib's output passes the limit (at most limit + 1 bytes
 *    are ever produced: a bomb costs nothing), 1007 only when the data is
 *    invalid, cut short or not UTF-8; the inflate stream is always given back.
 * The same bytes are also read as a Sec-WebSocket-Extensions value: an
 * accepted offer's answer, read back as an offer, is accepted with the same
 * window size (the answer only ever uses parameters valid in an offer).
 *
 * Run: make build-fuzz/ws_inflate && build-fuzz/ws_inflate fuzz/corpus/ws_inflate */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../src/common/utf8.h"
#include "../src/ws/ws.h"

#define MAX_MESSAGE 8192

static const ws_limits lim = {.max_message = MAX_MESSAGE, .require_mask = 1};

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      fprintf(stderr, "ws_inflate fuzz: check failed at line %d: %s\n", __LINE__, #cond); \
      __builtin_trap();                                                               \
    }                                                                                 \
  } while (0)

typedef struct {
  int got;
  int opcode;
  uint8_t *data;
  size_t len;
  unsigned pings;
} msg;

static int on_message(void *ctx, int opcode, uint8_t *data, size_t len) {
  msg *m = ctx;
  CHECK(!m->got);
  CHECK(len <= MAX_MESSAGE);
  if (opcode == WS_OP_TEXT) CHECK(wsy_utf8_scan(data, len, NULL, NULL) == WSY_OK);
  m->got = 1;
  m->opcode = opcode;
  m->data = malloc(len ? len : 1);
  if (len) memcpy(m->data, data, len);
  m->len = len;
  return 0;
}
static int on_ping(void *ctx, const uint8_t *d, size_t n) {
  (void)d;
  (void)n;
  ((msg *)ctx)->pings++;
  return 0;
}
static int on_close(void *ctx, unsigned code, const uint8_t *r, size_t n) {
  (void)ctx, (void)code, (void)r, (void)n;
  return 1;
}
static const ws_parser_cb cbs = {.on_message = on_message, .on_ping = on_ping, .on_close = on_close};

static size_t put_frame(uint8_t *out, int fin, int op, int rsv1, const uint8_t *pl, size_t len) {
  static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
  size_t h = ws_frame_header(out, fin, op, len, key);
  if (rsv1) out[0] |= 0x40;
  memcpy(out + h, pl, len);
  ws_mask(out + h, len, key, 0);
  return h + len;
}

typedef struct {
  int rc;
  unsigned code;
  msg m;
} result;

/* Feeds wire[0..n): whole (step 0), or step bytes at a time. */
static void run(const uint8_t *wire, size_t n, size_t step, result *r) {
  free(r->m.data);
  memset(r, 0, sizeof *r);
  ws_parser p;
  ws_parser_init(&p, &lim, &cbs, &r->m);
  ws_parser_set_deflate(&p, 1);
  int rc = WSY_OK;
  for (size_t at = 0; at < n && rc == WSY_OK;) {
    size_t len = step && n - at > step ? step : n - at;
    uint8_t *piece = malloc(len);
    memcpy(piece, wire + at, len);
    rc = ws_parser_feed(&p, piece, len);
    free(piece);
    at += len;
  }
  r->rc = rc;
  r->code = rc == WSY_OK || rc == WSY_CLOSED ? 0 : ws_parser_close_code(&p);
  ws_parser_deinit(&p);
  CHECK(ws_pmd_stats_get()->inflate_streams == 0);
}

/* The ping between fragments is seen or not depending on where an error is
 * found, so pings are compared only when pings says so. */
static void same(const result *a, const result *b, const char *what, int pings) {
  int ok = a->rc == b->rc && a->code == b->code && a->m.got == b->m.got && (!pings || a->m.pings == b->m.pings);
  if (ok && a->m.got)
    ok = a->m.opcode == b->m.opcode && a->m.len == b->m.len && memcmp(a->m.data, b->m.data, a->m.len) == 0;
  if (ok) return;
  fprintf(stderr, "ws_inflate fuzz: %s differs: rc %d/%d code %u/%u got %d/%d len %zu/%zu\n", what, a->rc,
          b->rc, a->code, b->code, a->m.got, b->m.got, a->m.len, b->m.len);
  __builtin_trap();
}

/* zlib's own reading of z[0..n) + tail, at most MAX_MESSAGE + 1 bytes. */
static size_t reference(const uint8_t *z, size_t n, uint8_t *out, int *zrc) {
  z_stream s;
  memset(&s, 0, sizeof s);
  CHECK(inflateInit2(&s, -15) == Z_OK);
  uint8_t *in = malloc(n + 4);
  memcpy(in, z, n);
  memcpy(in + n, "\x00\x00\xff\xff", 4);
  s.next_in = in;
  s.avail_in = (uInt)(n + 4);
  s.next_out = out;
  s.avail_out = MAX_MESSAGE + 1;
  *zrc = inflate(&s, Z_SYNC_FLUSH);
  size_t got = MAX_MESSAGE + 1 - s.avail_out;
  inflateEnd(&s);
  free(in);
  return got;
}

static void negotiation(const uint8_t *data, size_t size) {
  ws_pmd a, b;
  if (!ws_pmd_negotiate((const char *)data, size, &a)) return;
  CHECK(a.server_max_window_bits >= 8 && a.server_max_window_bits <= 15);
  CHECK(a.asked_server_bits || a.server_max_window_bits == 15);
  char resp[160];
  size_t n = ws_pmd_response(&a, resp, sizeof resp);
  CHECK(n > 0 && n < sizeof resp);
  CHECK(ws_pmd_negotiate(resp, n, &b));
  CHECK(b.server_max_window_bits == a.server_max_window_bits && b.asked_server_bits == a.asked_server_bits);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  negotiation(data, size);
  if (size < 1) return 0;
  uint8_t sel = data[0];
  const uint8_t *z = data + 1;
  size_t zn = size - 1;
  int op = sel & 1 ? WS_OP_TEXT : WS_OP_BINARY;

  /* Three fragmentations of the compressed bytes: one frame; two frames with
   * a ping between; a frame every `k` bytes. */
  uint8_t *wire = malloc(zn + (zn + 2) * (WS_MAX_HEADER + 6) + 64);
  result base = {0}, other = {0};
  size_t w = put_frame(wire, 1, op, 1, z, zn);
  run(wire, w, 0, &base);
  if (w <= 4096) {
    run(wire, w, 1, &other);
    same(&base, &other, "byte at a time", 1);
  }

  size_t cut = zn ? (size_t)(sel >> 1) * 7919 % (zn + 1) : 0;
  w = put_frame(wire, 0, op, 1, z, cut);
  w += put_frame(wire + w, 1, WS_OP_PING, 0, (const uint8_t *)"p", 1);
  w += put_frame(wire + w, 1, WS_OP_CONT, 0, z + cut, zn - cut);
  run(wire, w, 0, &other);
  same(&base, &other, "two fragments", 0);
  CHECK(other.m.pings == 1 || other.rc != WSY_OK);
  result third = {0};
  run(wire, w, 3, &third);
  same(&other, &third, "two fragments, 3 bytes at a time", 1);
  free(third.m.data);

  size_t k = 1 + (sel >> 4);
  w = 0;
  for (size_t at = 0; at < zn || at == 0; at += k) {
    size_t len = zn - at < k ? zn - at : k;
    w += put_frame(wire + w, at + len >= zn, at == 0 ? op : WS_OP_CONT, at == 0, z + at, len);
    if (at + len >= zn) break;
  }
  run(wire, w, 0, &other);
  same(&base, &other, "many fragments", 1);
  free(wire);

  /* Against zlib. */
  uint8_t *ref = malloc(MAX_MESSAGE + 1);
  int zrc;
  size_t rn = reference(z, zn, ref, &zrc);
  if (base.m.got) {
    CHECK(base.m.opcode == op);
    CHECK(rn == base.m.len && memcmp(ref, base.m.data, rn) == 0);
  } else if (base.code == WS_CLOSE_TOO_BIG) {
    CHECK(rn > MAX_MESSAGE || zn > MAX_MESSAGE);
  } else {
    CHECK(base.code == WS_CLOSE_BAD_DATA || base.code == WS_CLOSE_INTERNAL);
    /* zlib read it fine and it is not too big: then it is text that is not
     * UTF-8, data cut mid-block, or bytes after a final block. */
  }
  free(ref);
  free(base.m.data);
  free(other.m.data);
  return 0;
}
