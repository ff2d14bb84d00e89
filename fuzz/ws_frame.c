/* ws_frame.c -- libFuzzer target for the RFC 6455 frame parser (src/ws/frame.c).
 *
 * Besides "no crash", it checks what ws.h promises:
 *  - any split of the input gives the same events: the input is fed whole,
 *    in three pieces cut at data-derived offsets, and (when small) a byte at
 *    a time, each to its own parser on its own copy (the parser unmasks in
 *    place), as a server and (whole and in pieces) as a client; the event log (opcode, length and bytes of every message, ping,
 *    pong and close), the final result and the close code must all agree;
 *  - events respect the limits: messages <= max_message, text is UTF-8,
 *    control payloads <= 125, close codes valid, errors sticky with the close
 *    code that matches the error;
 *  - encoder and parser agree: the input, used as a payload, is framed with
 *    ws_frame_header()/ws_mask() as a fragmented message with a ping between
 *    the fragments and a close after, and must parse back to exactly that;
 *  - compressed-message mode (permessage-deflate agreed): the input is also
 *    parsed by parsers that accept RSV1, with the same split checks, and the
 *    round trip is repeated with the payload deflated (raw, sync flush, tail
 *    removed: RFC 7692 7.2.1) and the compressed bytes fragmented.
 *  fuzz/ws_inflate.c aims at the inflate path itself.
 *
 * Run: make build-fuzz/ws_frame && build-fuzz/ws_frame fuzz/corpus/ws_frame */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "../src/common/utf8.h"
#include "../src/ws/ws.h"

#define MAX_MESSAGE 4096
#define BYTEWISE_MAX 512 /* byte-at-a-time feeding only below this size */

static const ws_limits server_limits = {.max_message = MAX_MESSAGE, .require_mask = 1};
static const ws_limits client_limits = {.max_message = MAX_MESSAGE, .require_mask = 0};

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "ws_frame fuzz: check failed at line %d: %s\n", __LINE__, #cond); \
      __builtin_trap();                                                          \
    }                                                                            \
  } while (0)

/* ---- event log: a running FNV-1a hash plus a count ------------------------ */

typedef struct {
  uint64_t h;
  unsigned n;
  const ws_limits *lim;
} evlog;

static void mix(evlog *e, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) e->h = (e->h ^ b[i]) * 0x100000001b3ull;
}

static void mix_event(evlog *e, char tag, unsigned v, const uint8_t *d, size_t len) {
  uint64_t l = len;
  mix(e, &tag, 1);
  mix(e, &v, sizeof v);
  mix(e, &l, sizeof l);
  mix(e, d, len);
  e->n++;
}

static void evlog_init(evlog *e, const ws_limits *lim) {
  e->h = 0xcbf29ce484222325ull;
  e->n = 0;
  e->lim = lim;
}

/* A message or ping saying "bye" stops the parser, as a connection that
 * starts closing while handling it does. Depends on content only, so every
 * split stops at the same event. */
static int stop_word(const uint8_t *d, size_t len) { return len == 3 && memcmp(d, "bye", 3) == 0; }

static int on_message(void *ctx, int opcode, uint8_t *data, size_t len) {
  evlog *e = ctx;
  CHECK(opcode == WS_OP_TEXT || opcode == WS_OP_BINARY);
  CHECK(len <= e->lim->max_message);
  CHECK(len == 0 || data != NULL);
  if (opcode == WS_OP_TEXT) CHECK(wsy_utf8_scan(data, len, NULL, NULL) == WSY_OK);
  mix_event(e, 'M', (unsigned)opcode, data, len);
  return stop_word(data, len);
}

static int on_ping(void *ctx, const uint8_t *data, size_t len) {
  CHECK(len <= 125);
  mix_event(ctx, 'I', 0, data, len);
  return stop_word(data, len);
}

static int on_pong(void *ctx, const uint8_t *data, size_t len) {
  CHECK(len <= 125);
  mix_event(ctx, 'O', 0, data, len);
  return 0;
}

/* Stops the parser, as the connection does once the peer has closed. */
static int on_close(void *ctx, unsigned code, const uint8_t *reason, size_t len) {
  CHECK(len <= 123);
  CHECK(code == WS_CLOSE_NO_STATUS ? len == 0 : ws_close_code_valid(code));
  CHECK(wsy_utf8_scan(reason, len, NULL, NULL) == WSY_OK);
  mix_event(ctx, 'C', code, reason, len);
  return 1;
}

static const ws_parser_cb cbs = {
  .on_message = on_message,
  .on_ping = on_ping,
  .on_pong = on_pong,
  .on_close = on_close,
};

/* ---- one parse ------------------------------------------------------------ */

typedef struct {
  evlog ev;
  int rc;
  unsigned close_code;
} result;

static uint64_t fnv(const uint8_t *d, size_t n) {
  evlog e;
  evlog_init(&e, NULL);
  mix(&e, d, n);
  return e.h;
}

/* Feeds d[0..n) in pieces ending at cuts[0..ncut) (ascending, <= n) and then
 * the rest; step > 0 instead feeds step bytes at a time. Each piece is its
 * own heap copy of exactly its size, so a read past a piece is caught. */
static int deflate_mode; /* parsers accept permessage-deflate (RSV1) */

static void parse(const ws_limits *lim, const uint8_t *d, size_t n, const size_t *cuts,
                  size_t ncut, size_t step, result *res) {
  ws_parser p;
  evlog_init(&res->ev, lim);
  ws_parser_init(&p, lim, &cbs, &res->ev);
  ws_parser_set_deflate(&p, deflate_mode);
  int rc = WSY_OK;
  size_t at = 0, k = 0;
  while (rc == WSY_OK) {
    size_t end;
    if (step) end = at + step < n ? at + step : n;
    else end = k < ncut ? cuts[k++] : n;
    size_t len = end - at;
    uint8_t *piece = malloc(len ? len : 1);
    memcpy(piece, d + at, len);
    rc = ws_parser_feed(&p, piece, len);
    free(piece);
    at = end;
    if (at == n && (step || k >= ncut)) break;
  }
  CHECK(ws_parser_buffered(&p) <= lim->max_message + 125);
  if (rc != WSY_OK && rc != WSY_CLOSED) {
    unsigned cc = ws_parser_close_code(&p);
    CHECK((rc == WSY_PROTO && cc == WS_CLOSE_PROTOCOL) ||
          (rc == WSY_BAD_UTF8 && cc == WS_CLOSE_BAD_DATA) ||
          (rc == WSY_TOO_LARGE && cc == WS_CLOSE_TOO_BIG));
    /* The error is sticky: more bytes change nothing and raise no event. */
    uint8_t more[2] = {0x81, 0x80};
    unsigned before = res->ev.n;
    CHECK(ws_parser_feed(&p, more, sizeof more) == rc);
    CHECK(res->ev.n == before);
  }
  res->rc = rc;
  res->close_code = rc == WSY_OK || rc == WSY_CLOSED ? 0 : ws_parser_close_code(&p);
  ws_parser_deinit(&p);
  CHECK(ws_pmd_stats_get()->inflate_streams == 0); /* given back, whatever happened */
}

static void same(const result *a, const result *b, const char *what) {
  if (a->ev.h == b->ev.h && a->ev.n == b->ev.n && a->rc == b->rc &&
      a->close_code == b->close_code)
    return;
  fprintf(stderr,
          "ws_frame fuzz: whole vs %s differ: events %u/%u hash %016llx/%016llx rc %d/%d "
          "close %u/%u\n",
          what, a->ev.n, b->ev.n, (unsigned long long)a->ev.h, (unsigned long long)b->ev.h,
          a->rc, b->rc, a->close_code, b->close_code);
  __builtin_trap();
}

/* ---- encoder round trip --------------------------------------------------- */

static size_t put_frame(uint8_t *out, int fin, int op, const uint8_t *pl, size_t len,
                        const uint8_t *key) {
  size_t h = ws_frame_header(out, fin, op, len, key);
  CHECK(h == (len < 126 ? 2u : len <= 0xffff ? 4u : 10u) + (key ? 4u : 0u));
  memcpy(out + h, pl, len);
  if (key) CHECK(ws_mask(out + h, len, key, 0) == (len & 3));
  return h + len;
}

/* Frames pl[0..n) as [first fragment][ping][continuation][close 1000] and
 * parses it back, masked for a server or unmasked for a client. */
static void round_trip(const uint8_t *pl, size_t n, uint64_t seed, size_t max_message) {
  const ws_limits lim = {.max_message = max_message, .require_mask = (int)(seed & 1)};
  uint8_t key[4] = {(uint8_t)(seed >> 8), (uint8_t)(seed >> 16), (uint8_t)(seed >> 24),
                    (uint8_t)(seed >> 32)};
  const uint8_t *kp = lim.require_mask ? key : NULL;
  int op = wsy_utf8_scan(pl, n, NULL, NULL) == WSY_OK ? WS_OP_TEXT : WS_OP_BINARY;
  size_t split = n ? (size_t)(seed >> 40) % (n + 1) : 0;
  size_t ping_len = n < 125 ? n : 125;
  static const uint8_t close_pl[2] = {0x03, 0xe8}; /* 1000 */

  uint8_t *wire = malloc(n + ping_len + 4 * WS_MAX_HEADER + sizeof close_pl);
  size_t w = 0;
  w += put_frame(wire + w, 0, op, pl, split, kp);
  w += put_frame(wire + w, 1, WS_OP_PING, pl, ping_len, kp);
  w += put_frame(wire + w, 1, WS_OP_CONT, pl + split, n - split, kp);
  w += put_frame(wire + w, 1, WS_OP_CLOSE, close_pl, sizeof close_pl, kp);

  /* What the parser must report. */
  result want;
  evlog_init(&want.ev, &lim);
  want.close_code = 0;
  if (split > max_message) {
    want.rc = WSY_TOO_LARGE;
    want.close_code = WS_CLOSE_TOO_BIG;
  } else {
    mix_event(&want.ev, 'I', 0, pl, ping_len);
    want.rc = WSY_CLOSED;
    if (stop_word(pl, ping_len)) {
      /* the handler stopped at the ping */
    } else if (n > max_message) {
      want.rc = WSY_TOO_LARGE;
      want.close_code = WS_CLOSE_TOO_BIG;
    } else {
      mix_event(&want.ev, 'M', (unsigned)op, pl, n);
      if (!stop_word(pl, n)) mix_event(&want.ev, 'C', WS_CLOSE_NORMAL, NULL, 0);
    }
  }

  result got;
  parse(&lim, wire, w, NULL, 0, 0, &got);
  same(&want, &got, "round trip (whole)");
  size_t cut = (size_t)(seed >> 20) % (w + 1);
  parse(&lim, wire, w, &cut, 1, 0, &got);
  same(&want, &got, "round trip (split)");
  free(wire);
}

/* pl[0..n) deflated as a client sends it; returns the length (malloc'd *out). */
static size_t zmsg(const uint8_t *pl, size_t n, uint8_t **out) {
  z_stream z;
  memset(&z, 0, sizeof z);
  CHECK(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  size_t cap = deflateBound(&z, n) + 16;
  *out = malloc(cap);
  z.next_in = (Bytef *)(uintptr_t)pl;
  z.avail_in = (uInt)n;
  z.next_out = *out;
  z.avail_out = (uInt)cap;
  CHECK(deflate(&z, Z_SYNC_FLUSH) == Z_OK && z.avail_in == 0);
  size_t len = cap - z.avail_out;
  deflateEnd(&z);
  CHECK(len >= 4 && memcmp(*out + len - 4, "\x00\x00\xff\xff", 4) == 0);
  return len - 4;
}

/* pl[0..n) compressed and sent as [RSV1 first fragment][ping][continuation]
 * [close 1000], cut at a seed-derived point of the compressed bytes: must
 * give back pl exactly (or 1009 when it inflates past max_message). */
static void round_trip_deflated(const uint8_t *pl, size_t n, uint64_t seed, size_t max_message) {
  const ws_limits lim = {.max_message = max_message, .require_mask = 1};
  uint8_t key[4] = {(uint8_t)(seed >> 3), (uint8_t)(seed >> 11), (uint8_t)(seed >> 19), (uint8_t)(seed >> 27)};
  uint8_t *z;
  size_t zn = zmsg(pl, n, &z);
  int op = wsy_utf8_scan(pl, n, NULL, NULL) == WSY_OK ? WS_OP_TEXT : WS_OP_BINARY;
  size_t split = (size_t)(seed >> 36) % (zn + 1);
  static const uint8_t ping[4] = "ping", close_pl[2] = {0x03, 0xe8};
  uint8_t *wire = malloc(zn + sizeof ping + 4 * WS_MAX_HEADER + sizeof close_pl);
  size_t w = 0, first = 0;
  w += put_frame(wire + w, 0, op, z, split, key);
  wire[first] |= 0x40; /* RSV1 */
  w += put_frame(wire + w, 1, WS_OP_PING, ping, sizeof ping, key);
  w += put_frame(wire + w, 1, WS_OP_CONT, z + split, zn - split, key);
  w += put_frame(wire + w, 1, WS_OP_CLOSE, close_pl, sizeof close_pl, key);

  result want;
  evlog_init(&want.ev, &lim);
  want.close_code = 0;
  if (split > max_message) {
    want.rc = WSY_TOO_LARGE;
    want.close_code = WS_CLOSE_TOO_BIG;
  } else {
    mix_event(&want.ev, 'I', 0, ping, sizeof ping);
    want.rc = WSY_CLOSED;
    if (n > max_message || zn > max_message) {
      want.rc = WSY_TOO_LARGE;
      want.close_code = WS_CLOSE_TOO_BIG;
    } else {
      mix_event(&want.ev, 'M', (unsigned)op, pl, n);
      if (!stop_word(pl, n)) mix_event(&want.ev, 'C', WS_CLOSE_NORMAL, NULL, 0);
    }
  }
  deflate_mode = 1;
  result got;
  parse(&lim, wire, w, NULL, 0, 0, &got);
  /* Past the limit, the point where it is seen depends on the data, not on
   * the split: compare the results with each other only. */
  if (want.rc != WSY_TOO_LARGE || split > max_message) same(&want, &got, "deflated round trip (whole)");
  else CHECK(got.rc == WSY_TOO_LARGE && got.close_code == WS_CLOSE_TOO_BIG);
  result other;
  size_t cut = (size_t)(seed >> 14) % (w + 1);
  parse(&lim, wire, w, &cut, 1, 0, &other);
  same(&got, &other, "deflated round trip (split)");
  deflate_mode = 0;
  free(wire);
  free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint64_t h = fnv(data, size);

  result whole, other;
  parse(&server_limits, data, size, NULL, 0, 0, &whole);

  size_t cuts[2];
  cuts[0] = (size_t)(h % (size + 1));
  cuts[1] = cuts[0] + (size_t)((h >> 32) % (size - cuts[0] + 1));
  parse(&server_limits, data, size, cuts, 2, 0, &other);
  same(&whole, &other, "three pieces");

  if (size <= BYTEWISE_MAX) {
    parse(&server_limits, data, size, NULL, 0, 1, &other);
    same(&whole, &other, "byte by byte");
  }

  /* The same bytes as a client reads them (server frames are unmasked). */
  parse(&client_limits, data, size, NULL, 0, 0, &whole);
  parse(&client_limits, data, size, cuts, 2, 0, &other);
  same(&whole, &other, "three pieces (client)");

  /* The same bytes with permessage-deflate agreed: RSV1 now means
   * "compressed", and any split must still agree. */
  deflate_mode = 1;
  parse(&server_limits, data, size, NULL, 0, 0, &whole);
  parse(&server_limits, data, size, cuts, 2, 0, &other);
  same(&whole, &other, "three pieces (deflate)");
  if (size <= BYTEWISE_MAX) {
    parse(&server_limits, data, size, NULL, 0, 1, &other);
    same(&whole, &other, "byte by byte (deflate)");
  }
  deflate_mode = 0;

  round_trip(data, size, h, 1024);
  round_trip_deflated(data, size, h, 1024);
  /* Now and then a payload past 64 KiB, for the 8-byte length form. */
  if (size && (h & 0xf00) == 0) {
    size_t big = 65536 + (size_t)(h >> 52);
    uint8_t *pl = malloc(big);
    for (size_t i = 0; i < big; i += size) memcpy(pl + i, data, big - i < size ? big - i : size);
    round_trip(pl, big, h, 1u << 17);
    free(pl);
  }
  return 0;
}
