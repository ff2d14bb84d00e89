/* test_frame.c -- the RFC 6455 frame parser and encoder (src/ws/frame.c).
 *
 * Inputs are built with ws_frame_header() + ws_mask() as a client would, fed
 * to a parser whose callbacks record every event, and the recorded events are
 * compared with what the bytes mean. Each chunk fed is a fresh heap copy of
 * exactly its size, so ASan reports any read past what the parser was given. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "../../../src/ws/ws.h"

/* ---- recorded events ----------------------------------------------------- */

typedef struct {
  char kind; /* 'M'essage, 'P'ing, p'O'ng, 'C'lose */
  unsigned code; /* opcode for a message, close code for a close */
  uint8_t *data;
  size_t len;
} ev;

typedef struct {
  ev *e;
  size_t n, cap;
  size_t stop_at; /* the callback of event number stop_at returns 1; 0 = never */
} rec;

static void rec_add(rec *r, char kind, unsigned code, const void *d, size_t len) {
  if (r->n == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 8;
    r->e = realloc(r->e, r->cap * sizeof *r->e);
    cr_assert_not_null(r->e);
  }
  ev *e = &r->e[r->n++];
  e->kind = kind;
  e->code = code;
  e->len = len;
  e->data = malloc(len ? len : 1);
  if (len) memcpy(e->data, d, len);
}

static void rec_free(rec *r) {
  for (size_t i = 0; i < r->n; i++) free(r->e[i].data);
  free(r->e);
  memset(r, 0, sizeof *r);
}

static int rec_event(void *ctx, char kind, unsigned code, const uint8_t *d, size_t len) {
  rec *r = ctx;
  rec_add(r, kind, code, d, len);
  return r->stop_at && r->n == r->stop_at;
}
static int cb_message(void *ctx, int op, uint8_t *d, size_t n) {
  return rec_event(ctx, 'M', (unsigned)op, d, n);
}
static int cb_ping(void *ctx, const uint8_t *d, size_t n) { return rec_event(ctx, 'P', 0, d, n); }
static int cb_pong(void *ctx, const uint8_t *d, size_t n) { return rec_event(ctx, 'O', 0, d, n); }
static int cb_close(void *ctx, unsigned code, const uint8_t *d, size_t n) {
  return rec_event(ctx, 'C', code, d, n);
}
static const ws_parser_cb rec_cb = {cb_message, cb_ping, cb_pong, cb_close};

static void assert_same_events(const rec *got, const rec *want, const char *what, size_t at) {
  cr_assert_eq(got->n, want->n, "%s (cut %zu): %zu events, want %zu", what, at, got->n, want->n);
  for (size_t i = 0; i < want->n; i++) {
    const ev *g = &got->e[i], *w = &want->e[i];
    cr_assert_eq(g->kind, w->kind, "%s (cut %zu): event %zu is '%c', want '%c'", what, at, i,
                 g->kind, w->kind);
    cr_assert_eq(g->code, w->code, "%s (cut %zu): event %zu code %u, want %u", what, at, i,
                 g->code, w->code);
    cr_assert_eq(g->len, w->len, "%s (cut %zu): event %zu len %zu, want %zu", what, at, i,
                 g->len, w->len);
    cr_assert(memcmp(g->data, w->data, w->len) == 0, "%s (cut %zu): event %zu payload differs",
              what, at, i);
  }
}

/* ---- building input -------------------------------------------------------- */

typedef struct {
  uint8_t *d;
  size_t n, cap;
} bytes;

static void put(bytes *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    while (b->n + n > b->cap) b->cap = b->cap ? b->cap * 2 : 64;
    b->d = realloc(b->d, b->cap);
    cr_assert_not_null(b->d);
  }
  if (n) memcpy(b->d + b->n, p, n);
  b->n += n;
}
static void put_byte(bytes *b, uint8_t c) { put(b, &c, 1); }
static void bytes_free(bytes *b) {
  free(b->d);
  memset(b, 0, sizeof *b);
}

static const uint8_t KEY[4] = {0x37, 0xfa, 0x21, 0x3d}; /* RFC 6455 5.7 */

/* Appends one frame; masked with mask when it is not NULL, as a client sends. */
static void frame(bytes *b, int fin, int op, const void *payload, size_t len, const uint8_t *mask) {
  uint8_t h[WS_MAX_HEADER];
  size_t hl = ws_frame_header(h, fin, op, len, mask);
  put(b, h, hl);
  size_t at = b->n;
  put(b, payload, len);
  if (mask) ws_mask(b->d + at, len, mask, 0);
}
/* A client frame, masked. */
static void cframe(bytes *b, int fin, int op, const void *payload, size_t len) {
  frame(b, fin, op, payload, len, KEY);
}
static void cframe_str(bytes *b, int fin, int op, const char *s) {
  cframe(b, fin, op, s, strlen(s));
}
/* A masked close frame carrying code and reason. */
static void cclose(bytes *b, unsigned code, const void *reason, size_t rlen) {
  uint8_t p[125];
  p[0] = (uint8_t)(code >> 8);
  p[1] = (uint8_t)code;
  memcpy(p + 2, reason, rlen);
  cframe(b, 1, WS_OP_CLOSE, p, 2 + rlen);
}

static uint8_t *pattern(size_t n, unsigned seed) {
  uint8_t *p = calloc(n ? n : 1, 1);
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 31 + seed + (i >> 8));
  return p;
}

static const ws_limits srv_lim = {.max_message = 1 << 20, .require_mask = 1};
static const ws_limits cli_lim = {.max_message = 1 << 20, .require_mask = 0};

/* ---- feeding ------------------------------------------------------------------ */

static int feed_copy(ws_parser *p, const uint8_t *in, size_t n) {
  uint8_t *c = malloc(n ? n : 1);
  if (n) memcpy(c, in, n);
  int rc = ws_parser_feed(p, n ? c : NULL, n);
  free(c);
  return rc;
}

typedef struct {
  int rc;        /* first non-OK return, or WSY_OK */
  unsigned code; /* ws_parser_close_code() at the end */
} outcome;

/* Feeds in[0..n) in chunks of step bytes after a first chunk of first bytes
 * (first may be 0: an empty feed first). Stops at the first non-OK return. */
static int deflate_on; /* parsers made here accept permessage-deflate */

static outcome run_chunks(const ws_limits *lim, const uint8_t *in, size_t n, size_t first,
                          size_t step, rec *r) {
  ws_parser p;
  ws_parser_init(&p, lim, &rec_cb, r);
  ws_parser_set_deflate(&p, deflate_on);
  outcome o = {WSY_OK, 0};
  size_t i = 0, c = first < n ? first : n;
  for (;;) {
    o.rc = feed_copy(&p, in + i, c);
    i += c;
    if (o.rc != WSY_OK || i >= n) break;
    c = n - i < step ? n - i : step;
  }
  o.code = ws_parser_close_code(&p);
  ws_parser_deinit(&p);
  return o;
}
static outcome run_whole(const ws_limits *lim, const bytes *in, rec *r) {
  return run_chunks(lim, in->d, in->n, in->n, in->n ? in->n : 1, r);
}

/* The same input whole, split in two at every position (0..n), and a byte at
 * a time must give the same events and the same result as `want`. Large
 * inputs are cut at every position of their first and last `edge` bytes and
 * at every 997th in between. */
static void check_all_splits(const ws_limits *lim, const bytes *in, const rec *want, int want_rc,
                             size_t edge) {
  rec r = {0};
  outcome o = run_whole(lim, in, &r);
  cr_assert_eq(o.rc, want_rc, "whole: rc %d (%s), want %d", o.rc, wsy_errname(o.rc), want_rc);
  assert_same_events(&r, want, "whole", in->n);
  rec_free(&r);
  for (size_t k = 0; k <= in->n; k++) {
    if (edge && k > edge && k + edge < in->n && k % 997) continue;
    o = run_chunks(lim, in->d, in->n, k, in->n, &r);
    cr_assert_eq(o.rc, want_rc, "split at %zu: rc %d, want %d", k, o.rc, want_rc);
    assert_same_events(&r, want, "split", k);
    rec_free(&r);
  }
  o = run_chunks(lim, in->d, in->n, 1, 1, &r);
  cr_assert_eq(o.rc, want_rc, "byte at a time: rc %d, want %d", o.rc, want_rc);
  assert_same_events(&r, want, "byte at a time", 1);
  rec_free(&r);
}

/* A frame sequence that must fail with rc/code after `events` events: whole,
 * byte at a time, and the error must stay (a valid frame fed afterwards
 * returns the same error and produces no event). */
static void check_error(const char *what, const ws_limits *lim, const bytes *in, int want_rc,
                        unsigned want_code, size_t want_events) {
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    rec r = {0};
    ws_parser p;
    ws_parser_init(&p, lim, &rec_cb, &r);
    ws_parser_set_deflate(&p, deflate_on);
    int rc = WSY_OK;
    if (bytewise) {
      for (size_t i = 0; i < in->n && rc == WSY_OK; i++) rc = feed_copy(&p, in->d + i, 1);
    } else {
      rc = feed_copy(&p, in->d, in->n);
    }
    cr_assert_eq(rc, want_rc, "%s%s: rc %d (%s), want %d (%s)", what,
                 bytewise ? " (byte at a time)" : "", rc, wsy_errname(rc), want_rc,
                 wsy_errname(want_rc));
    cr_assert_eq(ws_parser_close_code(&p), want_code, "%s%s: close code %u, want %u", what,
                 bytewise ? " (byte at a time)" : "", ws_parser_close_code(&p), want_code);
    cr_assert_eq(r.n, want_events, "%s: %zu events before the error, want %zu", what, r.n,
                 want_events);
    /* Sticky: a perfectly good frame is refused the same way. */
    bytes ok = {0};
    frame(&ok, 1, WS_OP_TEXT, "ok", 2, lim->require_mask ? KEY : NULL);
    cr_assert_eq(feed_copy(&p, ok.d, ok.n), want_rc, "%s: error not sticky", what);
    cr_assert_eq(feed_copy(&p, ok.d, ok.n), want_rc, "%s: error not sticky (2)", what);
    cr_assert_eq(ws_parser_close_code(&p), want_code, "%s: close code changed", what);
    cr_assert_eq(r.n, want_events, "%s: events after the error", what);
    bytes_free(&ok);
    ws_parser_deinit(&p);
    rec_free(&r);
  }
}

/* ---- encoder ------------------------------------------------------------------ */

Test(ws_encoder, header_bytes_for_each_length_form) {
  static const struct {
    uint64_t len;
    size_t hl;
    uint8_t h[10];
  } cases[] = {
    {0, 2, {0x82, 0x00}},
    {1, 2, {0x82, 0x01}},
    {125, 2, {0x82, 0x7d}},
    {126, 4, {0x82, 0x7e, 0x00, 0x7e}},
    {127, 4, {0x82, 0x7e, 0x00, 0x7f}},
    {256, 4, {0x82, 0x7e, 0x01, 0x00}},
    {65535, 4, {0x82, 0x7e, 0xff, 0xff}},
    {65536, 10, {0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}},
    {0x0102030405060708ull, 10, {0x82, 0x7f, 1, 2, 3, 4, 5, 6, 7, 8}},
    {0x7fffffffffffffffull, 10, {0x82, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
  };
  static const uint8_t mask[4] = {0xde, 0xad, 0xbe, 0xef};
  for (size_t i = 0; i < WSY_ARRAY_LEN(cases); i++) {
    uint8_t out[WS_MAX_HEADER + 4];
    memset(out, 0xcc, sizeof out);
    size_t n = ws_frame_header(out, 1, WS_OP_BINARY, cases[i].len, NULL);
    cr_assert_eq(n, cases[i].hl, "len %llu: header %zu bytes, want %zu",
                 (unsigned long long)cases[i].len, n, cases[i].hl);
    cr_assert(memcmp(out, cases[i].h, n) == 0, "len %llu: header bytes differ",
              (unsigned long long)cases[i].len);
    cr_assert_eq(out[n], 0xcc, "wrote past the header");

    memset(out, 0xcc, sizeof out);
    n = ws_frame_header(out, 1, WS_OP_BINARY, cases[i].len, mask);
    cr_assert_eq(n, cases[i].hl + 4, "masked len %llu: %zu bytes", (unsigned long long)cases[i].len,
                 n);
    cr_assert_eq(out[0], cases[i].h[0]);
    cr_assert_eq(out[1], cases[i].h[1] | 0x80, "mask bit not set");
    cr_assert(memcmp(out + 2, cases[i].h + 2, cases[i].hl - 2) == 0);
    cr_assert(memcmp(out + cases[i].hl, mask, 4) == 0, "masking key not after the length");
    cr_assert_eq(out[n], 0xcc, "wrote past the header");
  }
}

Test(ws_encoder, first_byte_fin_and_opcode) {
  uint8_t out[WS_MAX_HEADER];
  cr_assert_eq(ws_frame_header(out, 1, WS_OP_TEXT, 5, NULL), 2);
  cr_assert_eq(out[0], 0x81);
  cr_assert_eq(out[1], 0x05);
  cr_assert_eq(ws_frame_header(out, 0, WS_OP_TEXT, 5, NULL), 2);
  cr_assert_eq(out[0], 0x01);
  ws_frame_header(out, 0, WS_OP_CONT, 5, NULL);
  cr_assert_eq(out[0], 0x00);
  ws_frame_header(out, 1, WS_OP_CLOSE, 2, NULL);
  cr_assert_eq(out[0], 0x88);
  ws_frame_header(out, 1, WS_OP_PING, 0, NULL);
  cr_assert_eq(out[0], 0x89);
  ws_frame_header(out, 1, WS_OP_PONG, 0, NULL);
  cr_assert_eq(out[0], 0x8a);
}

Test(ws_encoder, rfc6455_masked_hello) {
  /* RFC 6455 5.7: a single-frame masked text message "Hello". */
  static const uint8_t want[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
  bytes b = {0};
  cframe_str(&b, 1, WS_OP_TEXT, "Hello");
  cr_assert_eq(b.n, sizeof want);
  cr_assert(memcmp(b.d, want, sizeof want) == 0);
  bytes_free(&b);
}

Test(ws_encoder, mask_matches_plain_xor_at_any_offset_and_alignment) {
  static const uint8_t key[4] = {0x01, 0x80, 0x7f, 0xfe};
  uint8_t src[80], a[96], want[80];
  for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 7 + 3);
  for (unsigned pos = 0; pos < 8; pos++) {
    for (size_t align = 0; align < 8; align++) {
      for (size_t n = 0; n <= 70; n++) {
        memcpy(a + align, src, n);
        for (size_t i = 0; i < n; i++) want[i] = src[i] ^ key[(pos + i) & 3];
        unsigned next = ws_mask(a + align, n, key, pos);
        cr_assert(memcmp(a + align, want, n) == 0, "pos %u align %zu n %zu", pos, align, n);
        cr_assert_eq(next, (pos + n) & 3, "pos %u n %zu: returned %u", pos, n, next);
      }
    }
  }
}

Test(ws_encoder, mask_in_pieces_equals_mask_at_once) {
  uint8_t *whole = pattern(1000, 5), *pieces = pattern(1000, 5);
  ws_mask(whole, 1000, KEY, 0);
  unsigned pos = 0;
  size_t i = 0, step = 1;
  while (i < 1000) {
    size_t n = 1000 - i < step ? 1000 - i : step;
    pos = ws_mask(pieces + i, n, KEY, pos);
    i += n;
    step = step * 3 % 37 + 1;
  }
  cr_assert(memcmp(whole, pieces, 1000) == 0);
  free(whole);
  free(pieces);
}

/* ---- length forms ------------------------------------------------------------ */

static void check_length(size_t len, int masked) {
  uint8_t *pl = pattern(len, (unsigned)len);
  bytes in = {0};
  frame(&in, 1, WS_OP_BINARY, pl, len, masked ? KEY : NULL);
  size_t hl = (len < 126 ? 2 : len <= 0xffff ? 4 : 10) + (masked ? 4 : 0);
  cr_assert_eq(in.n, hl + len, "len %zu: frame is %zu bytes", len, in.n);
  if (masked && len) cr_assert(memcmp(in.d + hl, pl, len) != 0, "payload not masked on the wire");
  rec want = {0};
  rec_add(&want, 'M', WS_OP_BINARY, pl, len);
  check_all_splits(masked ? &srv_lim : &cli_lim, &in, &want, WSY_OK, 24);
  rec_free(&want);
  bytes_free(&in);
  free(pl);
}

Test(ws_parser, length_7bit_boundaries) {
  check_length(0, 1);
  check_length(1, 1);
  check_length(125, 1);
  check_length(0, 0);
  check_length(125, 0);
}

Test(ws_parser, length_16bit_boundaries) {
  check_length(126, 1);
  check_length(127, 1);
  check_length(65535, 1);
  check_length(126, 0);
  check_length(65535, 0);
}

Test(ws_parser, length_64bit_boundaries) {
  check_length(65536, 1);
  check_length(65537, 1);
  check_length(65536, 0);
  check_length(200000, 1);
}

Test(ws_parser, rfc6455_examples) {
  /* 5.7: unmasked "Hello", as a client parses it. */
  static const uint8_t hello[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
  /* 5.7: fragmented unmasked text "Hel" + "lo". */
  static const uint8_t frag[] = {0x01, 0x03, 'H', 'e', 'l', 0x80, 0x02, 'l', 'o'};
  /* 5.7: unmasked ping, then masked pong (server side) with "Hello". */
  static const uint8_t ping[] = {0x89, 0x05, 'H', 'e', 'l', 'l', 'o'};
  static const uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
  static const uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
  struct {
    const uint8_t *d;
    size_t n;
    const ws_limits *lim;
    char kind;
    unsigned code;
  } cases[] = {
    {hello, sizeof hello, &cli_lim, 'M', WS_OP_TEXT},
    {frag, sizeof frag, &cli_lim, 'M', WS_OP_TEXT},
    {ping, sizeof ping, &cli_lim, 'P', 0},
    {pong, sizeof pong, &srv_lim, 'O', 0},
    {masked, sizeof masked, &srv_lim, 'M', WS_OP_TEXT},
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(cases); i++) {
    bytes in = {0};
    put(&in, cases[i].d, cases[i].n);
    rec want = {0};
    rec_add(&want, cases[i].kind, cases[i].code, "Hello", 5);
    check_all_splits(cases[i].lim, &in, &want, WSY_OK, 0);
    rec_free(&want);
    bytes_free(&in);
  }
}

Test(ws_parser, rfc6455_long_lengths) {
  /* 5.7: 256 bytes in one unmasked binary frame, and 64 KiB. */
  static const uint8_t h256[] = {0x82, 0x7e, 0x01, 0x00};
  static const uint8_t h64k[] = {0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00};
  for (int big = 0; big < 2; big++) {
    size_t len = big ? 65536 : 256;
    uint8_t *pl = pattern(len, 9);
    bytes in = {0};
    put(&in, big ? h64k : h256, big ? sizeof h64k : sizeof h256);
    put(&in, pl, len);
    rec r = {0};
    outcome o = run_whole(&cli_lim, &in, &r);
    cr_assert_eq(o.rc, WSY_OK);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.e[0].code, WS_OP_BINARY);
    cr_assert_eq(r.e[0].len, len);
    cr_assert(memcmp(r.e[0].data, pl, len) == 0);
    rec_free(&r);
    bytes_free(&in);
    free(pl);
  }
}

/* ---- splitting --------------------------------------------------------------- */

/* A conversation exercising every kind of frame, and the events it means. */
static void conversation(bytes *in, rec *want) {
  static const char utf8[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9ez"; /* a é € 𝄞 z */
  uint8_t *bin = pattern(300, 1);
  cframe_str(in, 1, WS_OP_TEXT, "Hello");
  rec_add(want, 'M', WS_OP_TEXT, "Hello", 5);
  cframe(in, 1, WS_OP_BINARY, bin, 300);
  rec_add(want, 'M', WS_OP_BINARY, bin, 300);
  /* A text message in three fragments, code points cut across them, with a
   * ping and a pong between the fragments. */
  cframe(in, 0, WS_OP_TEXT, utf8, 2);
  cframe_str(in, 1, WS_OP_PING, "ping!");
  rec_add(want, 'P', 0, "ping!", 5);
  cframe(in, 0, WS_OP_CONT, utf8 + 2, 6);
  cframe(in, 1, WS_OP_PONG, NULL, 0);
  rec_add(want, 'O', 0, NULL, 0);
  cframe(in, 1, WS_OP_CONT, utf8 + 8, sizeof utf8 - 1 - 8);
  rec_add(want, 'M', WS_OP_TEXT, utf8, sizeof utf8 - 1);
  cframe(in, 1, WS_OP_TEXT, NULL, 0);
  rec_add(want, 'M', WS_OP_TEXT, NULL, 0);
  /* A fragmented binary message of a 7-bit and a 16-bit fragment. */
  cframe(in, 0, WS_OP_BINARY, bin, 100);
  cframe(in, 1, WS_OP_CONT, bin + 100, 200);
  rec_add(want, 'M', WS_OP_BINARY, bin, 300);
  uint8_t ping125[125];
  memset(ping125, 'x', sizeof ping125);
  cframe(in, 1, WS_OP_PING, ping125, sizeof ping125);
  rec_add(want, 'P', 0, ping125, sizeof ping125);
  cclose(in, 1000, "bye \xe2\x9c\x93", 7);
  rec_add(want, 'C', 1000, "bye \xe2\x9c\x93", 7);
  free(bin);
}

Test(ws_parser, conversation_split_at_every_byte) {
  bytes in = {0};
  rec want = {0};
  conversation(&in, &want);
  check_all_splits(&srv_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
}

Test(ws_parser, conversation_in_every_chunk_size) {
  bytes in = {0};
  rec want = {0};
  conversation(&in, &want);
  for (size_t step = 1; step <= 40; step++) {
    for (size_t first = 0; first < step; first++) {
      rec r = {0};
      outcome o = run_chunks(&srv_lim, in.d, in.n, first, step, &r);
      cr_assert_eq(o.rc, WSY_OK, "step %zu first %zu", step, first);
      assert_same_events(&r, &want, "chunks", step);
      rec_free(&r);
    }
  }
  rec_free(&want);
  bytes_free(&in);
}

Test(ws_parser, empty_feeds_change_nothing) {
  bytes in = {0};
  rec want = {0}, r = {0};
  conversation(&in, &want);
  ws_parser p;
  ws_parser_init(&p, &srv_lim, &rec_cb, &r);
  for (size_t i = 0; i < in.n; i++) {
    cr_assert_eq(feed_copy(&p, in.d + i, 0), WSY_OK);
    cr_assert_eq(feed_copy(&p, in.d + i, 1), WSY_OK);
  }
  cr_assert_eq(feed_copy(&p, NULL, 0), WSY_OK);
  assert_same_events(&r, &want, "empty feeds", 0);
  ws_parser_deinit(&p);
  rec_free(&r);
  rec_free(&want);
  bytes_free(&in);
}

/* ---- fragmentation -------------------------------------------------------------- */

Test(ws_parser, text_one_byte_per_fragment_with_pings_between) {
  static const char s[] = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf!";
  size_t n = sizeof s - 1;
  bytes in = {0};
  rec want = {0};
  for (size_t i = 0; i < n; i++) {
    cframe(&in, i + 1 == n, i == 0 ? WS_OP_TEXT : WS_OP_CONT, s + i, 1);
    if (i + 1 < n) {
      uint8_t pl = (uint8_t)i;
      cframe(&in, 1, WS_OP_PING, &pl, 1);
      rec_add(&want, 'P', 0, &pl, 1);
    }
  }
  rec_add(&want, 'M', WS_OP_TEXT, s, n);
  check_all_splits(&srv_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
}

Test(ws_parser, text_in_three_fragments_cut_anywhere) {
  static const char s[] = "\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\xed\x9f\xbf\xee\x80\x80";
  size_t n = sizeof s - 1;
  for (size_t a = 0; a <= n; a++) {
    for (size_t b = a; b <= n; b++) {
      bytes in = {0};
      rec want = {0}, r = {0};
      cframe(&in, 0, WS_OP_TEXT, s, a);
      cframe_str(&in, 1, WS_OP_PING, "");
      rec_add(&want, 'P', 0, NULL, 0);
      cframe(&in, 0, WS_OP_CONT, s + a, b - a);
      cframe(&in, 1, WS_OP_CONT, s + b, n - b);
      rec_add(&want, 'M', WS_OP_TEXT, s, n);
      outcome o = run_whole(&srv_lim, &in, &r);
      cr_assert_eq(o.rc, WSY_OK, "cuts %zu,%zu: %s", a, b, wsy_errname(o.rc));
      assert_same_events(&r, &want, "three fragments", a * 100 + b);
      rec_free(&r);
      o = run_chunks(&srv_lim, in.d, in.n, 1, 1, &r);
      cr_assert_eq(o.rc, WSY_OK);
      assert_same_events(&r, &want, "three fragments bytewise", a * 100 + b);
      rec_free(&r);
      rec_free(&want);
      bytes_free(&in);
    }
  }
}

Test(ws_parser, messages_follow_each_other_after_fragmentation) {
  bytes in = {0};
  rec want = {0};
  for (int round = 0; round < 3; round++) {
    cframe_str(&in, 0, WS_OP_BINARY, "ab");
    cframe_str(&in, 0, WS_OP_CONT, "");
    cframe_str(&in, 1, WS_OP_CONT, "cd");
    rec_add(&want, 'M', WS_OP_BINARY, "abcd", 4);
    cframe_str(&in, 1, WS_OP_TEXT, "next");
    rec_add(&want, 'M', WS_OP_TEXT, "next", 4);
    cframe_str(&in, 0, WS_OP_TEXT, "");
    cframe_str(&in, 1, WS_OP_CONT, "xy");
    rec_add(&want, 'M', WS_OP_TEXT, "xy", 2);
  }
  check_all_splits(&srv_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
}

Test(ws_parser, close_during_fragmented_message) {
  bytes in = {0};
  rec want = {0};
  cframe_str(&in, 0, WS_OP_TEXT, "part");
  cclose(&in, 1001, "", 0);
  rec_add(&want, 'C', 1001, NULL, 0);
  check_all_splits(&srv_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
}

Test(ws_parser, buffered_counts_a_message_in_progress) {
  rec r = {0};
  ws_parser p;
  ws_parser_init(&p, &srv_lim, &rec_cb, &r);
  cr_assert_eq(ws_parser_buffered(&p), 0);
  bytes in = {0};
  uint8_t *pl = pattern(5000, 3);
  cframe(&in, 0, WS_OP_BINARY, pl, 5000);
  cr_assert_eq(feed_copy(&p, in.d, in.n), WSY_OK);
  cr_assert_geq(ws_parser_buffered(&p), 5000);
  cr_assert_eq(r.n, 0);
  in.n = 0;
  cframe(&in, 1, WS_OP_CONT, NULL, 0);
  cr_assert_eq(feed_copy(&p, in.d, in.n), WSY_OK);
  cr_assert_eq(r.n, 1);
  cr_assert_eq(r.e[0].len, 5000);
  cr_assert(memcmp(r.e[0].data, pl, 5000) == 0);
  /* An idle parser does not hold on to a large message's reassembly buffer. */
  cr_assert_lt(ws_parser_buffered(&p), 5000, "%zu bytes kept", ws_parser_buffered(&p));
  ws_parser_deinit(&p);
  rec_free(&r);
  bytes_free(&in);
  free(pl);
}

/* ---- protocol errors ----------------------------------------------------------- */

Test(ws_parser, rejects_unmasked_client_frame) {
  bytes in = {0};
  put(&in, (const uint8_t[]){0x81, 0x02, 'h', 'i'}, 4);
  check_error("unmasked", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
  bytes_free(&in);
  /* Also after a good frame: the good one is delivered first. */
  cframe_str(&in, 1, WS_OP_TEXT, "fine");
  frame(&in, 1, WS_OP_TEXT, "hi", 2, NULL);
  check_error("unmasked second", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 1);
  bytes_free(&in);
}

Test(ws_parser, client_rejects_masked_server_frame) {
  bytes in = {0};
  cframe_str(&in, 1, WS_OP_TEXT, "hi");
  check_error("masked to client", &cli_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
  bytes_free(&in);
}

Test(ws_parser, rejects_rsv_bits) {
  for (unsigned rsv = 1; rsv < 8; rsv++) {
    for (int op = 0; op < 3; op++) {
      static const int ops[] = {WS_OP_TEXT, WS_OP_BINARY, WS_OP_PING};
      bytes in = {0};
      cframe_str(&in, 1, ops[op], "x");
      in.d[0] |= (uint8_t)(rsv << 4);
      check_error("rsv", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
      bytes_free(&in);
    }
  }
}

Test(ws_parser, rejects_reserved_opcodes) {
  static const int ops[] = {3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf};
  for (size_t i = 0; i < WSY_ARRAY_LEN(ops); i++) {
    for (int fin = 0; fin < 2; fin++) {
      /* The payload would be a valid close frame, or a valid text message. */
      bytes in = {0};
      cframe_str(&in, fin, ops[i], "\x03\xe8");
      check_error("reserved opcode", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
      bytes_free(&in);
    }
    /* Inside a fragmented message too. */
    bytes in = {0};
    cframe_str(&in, 0, WS_OP_TEXT, "a");
    cframe_str(&in, 1, ops[i], "\x03\xe8");
    check_error("reserved opcode mid-message", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
    bytes_free(&in);
  }
}

Test(ws_parser, rejects_continuation_without_start) {
  for (int fin = 0; fin < 2; fin++) {
    bytes in = {0};
    cframe_str(&in, fin, WS_OP_CONT, "x");
    check_error("lone continuation", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
    bytes_free(&in);
    /* After a complete message, a continuation has nothing to continue. */
    cframe_str(&in, 0, WS_OP_TEXT, "a");
    cframe_str(&in, 1, WS_OP_CONT, "b");
    cframe_str(&in, fin, WS_OP_CONT, "c");
    check_error("continuation after end", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 1);
    bytes_free(&in);
  }
}

Test(ws_parser, rejects_new_data_frame_inside_fragmented_message) {
  static const int first[] = {WS_OP_TEXT, WS_OP_BINARY};
  for (int a = 0; a < 2; a++) {
    for (int b = 0; b < 2; b++) {
      for (int fin = 0; fin < 2; fin++) {
        bytes in = {0};
        cframe_str(&in, 0, first[a], "ab");
        cframe_str(&in, 0, WS_OP_CONT, "cd");
        cframe_str(&in, 1, WS_OP_PING, "");
        cframe_str(&in, fin, first[b], "new");
        check_error("data frame mid-message", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 1);
        bytes_free(&in);
      }
    }
  }
}

Test(ws_parser, rejects_fragmented_control_frames) {
  static const int ops[] = {WS_OP_PING, WS_OP_PONG, WS_OP_CLOSE};
  for (size_t i = 0; i < WSY_ARRAY_LEN(ops); i++) {
    bytes in = {0};
    uint8_t pl[2] = {0x03, 0xe8};
    cframe(&in, 0, ops[i], pl, 2);
    check_error("fragmented control", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
    bytes_free(&in);
  }
}

Test(ws_parser, control_payload_limit_is_125) {
  static const int ops[] = {WS_OP_PING, WS_OP_PONG, WS_OP_CLOSE};
  uint8_t pl[200];
  memset(pl, 'a', sizeof pl);
  pl[0] = 0x03; /* close code 1000 */
  pl[1] = 0xe8;
  for (size_t i = 0; i < WSY_ARRAY_LEN(ops); i++) {
    for (size_t len = 126; len <= 200; len += 74) {
      bytes in = {0};
      cframe(&in, 1, ops[i], pl, len);
      check_error("control > 125", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
      bytes_free(&in);
    }
    bytes in = {0};
    rec want = {0};
    cframe(&in, 1, ops[i], pl, 125);
    rec_add(&want, "POC"[i], i == 2 ? 1000 : 0, i == 2 ? pl + 2 : pl, i == 2 ? 123 : 125);
    check_all_splits(&srv_lim, &in, &want, WSY_OK, 0);
    rec_free(&want);
    bytes_free(&in);
  }
}

Test(ws_parser, rejects_non_minimal_lengths) {
  /* 16-bit form carrying values the 7-bit form could hold. */
  static const uint16_t l16[] = {0, 1, 125};
  for (size_t i = 0; i < WSY_ARRAY_LEN(l16); i++) {
    bytes in = {0};
    put(&in, (const uint8_t[]){0x82, 0x80 | 126, (uint8_t)(l16[i] >> 8), (uint8_t)l16[i]}, 4);
    put(&in, KEY, 4);
    for (unsigned k = 0; k < l16[i]; k++) put_byte(&in, 0);
    check_error("non-minimal 16-bit", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
    bytes_free(&in);
  }
  /* 64-bit form carrying values the shorter forms could hold. */
  static const uint64_t l64[] = {0, 5, 125, 126, 65535};
  for (size_t i = 0; i < WSY_ARRAY_LEN(l64); i++) {
    bytes in = {0};
    put_byte(&in, 0x82);
    put_byte(&in, 0x80 | 127);
    for (int k = 0; k < 8; k++) put_byte(&in, (uint8_t)(l64[i] >> (56 - 8 * k)));
    put(&in, KEY, 4);
    check_error("non-minimal 64-bit", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
    bytes_free(&in);
  }
}

Test(ws_parser, rejects_64bit_length_with_top_bit) {
  static const uint64_t lens[] = {0x8000000000000000ull, 0x8000000000010000ull,
                                  0xffffffffffffffffull};
  for (size_t i = 0; i < WSY_ARRAY_LEN(lens); i++) {
    ws_limits huge = {.max_message = SIZE_MAX, .require_mask = 1};
    bytes in = {0};
    put_byte(&in, 0x82);
    put_byte(&in, 0x80 | 127);
    for (int k = 0; k < 8; k++) put_byte(&in, (uint8_t)(lens[i] >> (56 - 8 * k)));
    check_error("64-bit top bit", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
    check_error("64-bit top bit, no size limit", &huge, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
    bytes_free(&in);
  }
}

Test(ws_parser, close_frame_payloads) {
  bytes in = {0};
  rec want = {0};
  /* Empty close: no status. */
  cframe(&in, 1, WS_OP_CLOSE, NULL, 0);
  rec_add(&want, 'C', WS_CLOSE_NO_STATUS, NULL, 0);
  check_all_splits(&srv_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
  /* One byte: half a code. */
  cframe(&in, 1, WS_OP_CLOSE, "\x03", 1);
  check_error("close 1 byte", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
  bytes_free(&in);
  /* Code with a 123-byte reason. */
  char reason[123];
  memset(reason, 'r', sizeof reason);
  cclose(&in, 4000, reason, sizeof reason);
  rec_add(&want, 'C', 4000, reason, sizeof reason);
  check_all_splits(&srv_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
}

Test(ws_parser, close_codes_invalid_on_the_wire) {
  static const unsigned bad[] = {0,    1,    999,  1004, 1005, 1006, 1015, 1016,
                                 1100, 2000, 2999, 5000, 6000, 65535};
  for (size_t i = 0; i < WSY_ARRAY_LEN(bad); i++) {
    for (int with_reason = 0; with_reason < 2; with_reason++) {
      bytes in = {0};
      cclose(&in, bad[i], "why", with_reason ? 3 : 0);
      check_error("bad close code", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
      bytes_free(&in);
    }
  }
}

Test(ws_parser, close_codes_valid_on_the_wire) {
  static const unsigned good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                  1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
  for (size_t i = 0; i < WSY_ARRAY_LEN(good); i++) {
    bytes in = {0};
    rec want = {0}, r = {0};
    cclose(&in, good[i], "bye", 3);
    rec_add(&want, 'C', good[i], "bye", 3);
    outcome o = run_whole(&srv_lim, &in, &r);
    cr_assert_eq(o.rc, WSY_OK, "code %u refused", good[i]);
    assert_same_events(&r, &want, "close code", good[i]);
    rec_free(&r);
    rec_free(&want);
    bytes_free(&in);
  }
}

Test(ws_parser, close_reason_must_be_utf8) {
  static const char *bad[] = {"\xff", "ok\xc0\x80", "\xed\xa0\x80", "trunc\xe2\x82"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(bad); i++) {
    bytes in = {0};
    cclose(&in, 1000, bad[i], strlen(bad[i]));
    check_error("close reason utf-8", &srv_lim, &in, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA, 0);
    bytes_free(&in);
  }
  bytes in = {0};
  rec want = {0};
  cclose(&in, 1000, "\xf0\x9f\x91\x8b", 4);
  rec_add(&want, 'C', 1000, "\xf0\x9f\x91\x8b", 4);
  check_all_splits(&srv_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
}

Test(ws_parser, text_must_be_utf8) {
  static const char *bad[] = {"\xff", "abc\x80", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
                              "\xf4\x90\x80\x80", "ends mid-sequence \xe2\x82"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(bad); i++) {
    bytes in = {0};
    cframe_str(&in, 1, WS_OP_TEXT, bad[i]);
    check_error("text utf-8", &srv_lim, &in, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA, 0);
    bytes_free(&in);
    /* The same bytes as binary are fine. */
    rec want = {0};
    cframe_str(&in, 1, WS_OP_BINARY, bad[i]);
    rec_add(&want, 'M', WS_OP_BINARY, bad[i], strlen(bad[i]));
    check_all_splits(&srv_lim, &in, &want, WSY_OK, 0);
    rec_free(&want);
    bytes_free(&in);
  }
}

Test(ws_parser, fragmented_text_ending_mid_code_point) {
  bytes in = {0};
  cframe_str(&in, 0, WS_OP_TEXT, "ok \xe2");
  cframe_str(&in, 1, WS_OP_CONT, "\x82");
  check_error("message ends mid code point", &srv_lim, &in, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA, 0);
  bytes_free(&in);
}

Test(ws_parser, bad_utf8_fails_before_the_message_ends) {
  /* Single frame announcing 100 bytes: the bad byte fails the feed that
   * carries it, with 90 bytes of the frame still to come. */
  uint8_t pl[100];
  memset(pl, 'a', sizeof pl);
  pl[5] = 0xc0;
  bytes in = {0};
  cframe(&in, 1, WS_OP_TEXT, pl, sizeof pl);
  size_t hl = in.n - sizeof pl;
  rec r = {0};
  ws_parser p;
  ws_parser_init(&p, &srv_lim, &rec_cb, &r);
  cr_assert_eq(feed_copy(&p, in.d, hl + 5), WSY_OK);
  cr_assert_eq(feed_copy(&p, in.d + hl + 5, 5), WSY_BAD_UTF8);
  cr_assert_eq(ws_parser_close_code(&p), WS_CLOSE_BAD_DATA);
  cr_assert_eq(r.n, 0);
  ws_parser_deinit(&p);
  bytes_free(&in);

  /* Fragmented: the first fragment already rules the message out, and a
   * surrogate cut across fragments fails on the fragment that completes it. */
  cframe_str(&in, 0, WS_OP_TEXT, "fine \xed");
  size_t first = in.n;
  cframe_str(&in, 0, WS_OP_CONT, "\xa0\x80 more");
  ws_parser_init(&p, &srv_lim, &rec_cb, &r);
  cr_assert_eq(feed_copy(&p, in.d, first), WSY_OK);
  cr_assert_eq(feed_copy(&p, in.d + first, in.n - first), WSY_BAD_UTF8);
  cr_assert_eq(ws_parser_close_code(&p), WS_CLOSE_BAD_DATA);
  cr_assert_eq(r.n, 0);
  ws_parser_deinit(&p);
  bytes_free(&in);

  cframe_str(&in, 0, WS_OP_TEXT, "\xf8 never valid");
  ws_parser_init(&p, &srv_lim, &rec_cb, &r);
  cr_assert_eq(feed_copy(&p, in.d, in.n), WSY_BAD_UTF8, "non-final fragment not checked");
  cr_assert_eq(ws_parser_close_code(&p), WS_CLOSE_BAD_DATA);
  ws_parser_deinit(&p);
  bytes_free(&in);
  rec_free(&r);
}

/* ---- size limit ------------------------------------------------------------- */

static const ws_limits small_lim = {.max_message = 1000, .require_mask = 1};

Test(ws_parser, message_size_limit_single_frame) {
  uint8_t *pl = pattern(70000, 2);
  bytes in = {0};
  rec want = {0};
  cframe(&in, 1, WS_OP_BINARY, pl, 1000);
  rec_add(&want, 'M', WS_OP_BINARY, pl, 1000);
  check_all_splits(&small_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
  static const size_t over[] = {1001, 65535, 70000};
  for (size_t i = 0; i < WSY_ARRAY_LEN(over); i++) {
    cframe(&in, 1, WS_OP_BINARY, pl, over[i]);
    check_error("too big", &small_lim, &in, WSY_TOO_LARGE, WS_CLOSE_TOO_BIG, 0);
    /* The header alone is enough to refuse it. */
    size_t hl = in.n - over[i];
    rec r = {0};
    ws_parser p;
    ws_parser_init(&p, &small_lim, &rec_cb, &r);
    cr_assert_eq(feed_copy(&p, in.d, hl), WSY_TOO_LARGE, "not refused at the header");
    cr_assert_eq(ws_parser_close_code(&p), WS_CLOSE_TOO_BIG);
    ws_parser_deinit(&p);
    rec_free(&r);
    bytes_free(&in);
  }
  /* A length far beyond memory, top bit clear: a size error, not a crash. */
  put(&in, (const uint8_t[]){0x82, 0xff, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00}, 10);
  put(&in, KEY, 4);
  check_error("2^40 bytes", &small_lim, &in, WSY_TOO_LARGE, WS_CLOSE_TOO_BIG, 0);
  check_error("2^40 bytes, 1M limit", &srv_lim, &in, WSY_TOO_LARGE, WS_CLOSE_TOO_BIG, 0);
  bytes_free(&in);
  free(pl);
}

Test(ws_parser, message_size_limit_across_fragments) {
  uint8_t *pl = pattern(1000, 4);
  bytes in = {0};
  rec want = {0};
  /* 600 + ping + 400: exactly the limit; control frames do not count. */
  memset(pl, 'q', 1000);
  cframe(&in, 0, WS_OP_TEXT, pl, 600);
  cframe_str(&in, 1, WS_OP_PING, "p");
  rec_add(&want, 'P', 0, "p", 1);
  cframe(&in, 1, WS_OP_CONT, pl + 600, 400);
  rec_add(&want, 'M', WS_OP_TEXT, pl, 1000);
  check_all_splits(&small_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
  /* 600 + 401: refused at the second header, before its payload. */
  cframe(&in, 0, WS_OP_BINARY, pl, 600);
  size_t first = in.n;
  cframe(&in, 1, WS_OP_CONT, pl, 401);
  check_error("fragments too big", &small_lim, &in, WSY_TOO_LARGE, WS_CLOSE_TOO_BIG, 0);
  rec r = {0};
  ws_parser p;
  ws_parser_init(&p, &small_lim, &rec_cb, &r);
  cr_assert_eq(feed_copy(&p, in.d, first), WSY_OK);
  cr_assert_eq(feed_copy(&p, in.d + first, 6), WSY_TOO_LARGE);
  ws_parser_deinit(&p);
  rec_free(&r);
  bytes_free(&in);
  /* Many small fragments adding up. */
  cframe(&in, 0, WS_OP_BINARY, pl, 100);
  for (int i = 0; i < 9; i++) cframe(&in, 0, WS_OP_CONT, pl, 100);
  cframe(&in, 1, WS_OP_CONT, pl, 1);
  check_error("many fragments too big", &small_lim, &in, WSY_TOO_LARGE, WS_CLOSE_TOO_BIG, 0);
  bytes_free(&in);
  /* The limit is per message: the next message starts from zero. */
  cframe(&in, 0, WS_OP_BINARY, pl, 999);
  cframe(&in, 1, WS_OP_CONT, pl, 1);
  rec_add(&want, 'M', WS_OP_BINARY, pl, 1000);
  cframe(&in, 1, WS_OP_BINARY, pl, 1000);
  rec_add(&want, 'M', WS_OP_BINARY, pl, 1000);
  check_all_splits(&small_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
  free(pl);
}

/* ---- callbacks stopping the parser ---------------------------------------------- */

Test(ws_parser, callback_non_zero_stops_feeding) {
  bytes in = {0};
  cframe_str(&in, 1, WS_OP_TEXT, "one");
  cframe_str(&in, 1, WS_OP_PING, "two");
  cframe_str(&in, 1, WS_OP_PONG, "three");
  cframe_str(&in, 0, WS_OP_BINARY, "fo");
  cframe_str(&in, 1, WS_OP_CONT, "ur");
  cclose(&in, 1000, "five", 4);
  cframe_str(&in, 1, WS_OP_TEXT, "six");
  for (size_t stop = 1; stop <= 6; stop++) {
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      rec r = {.stop_at = stop};
      ws_parser p;
      ws_parser_init(&p, &srv_lim, &rec_cb, &r);
      int rc = WSY_OK;
      if (bytewise) {
        for (size_t i = 0; i < in.n && rc == WSY_OK; i++) rc = feed_copy(&p, in.d + i, 1);
      } else {
        rc = feed_copy(&p, in.d, in.n);
      }
      cr_assert_eq(rc, WSY_CLOSED, "stop at %zu: rc %d", stop, rc);
      cr_assert_eq(r.n, stop, "stop at %zu: %zu events, callbacks went on", stop, r.n);
      ws_parser_deinit(&p);
      rec_free(&r);
    }
  }
  bytes_free(&in);
}

/* ---- round trip -------------------------------------------------------------- */

static uint64_t rng_state;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 11);
}

static size_t rnd_len(void) {
  static const size_t edges[] = {0, 1, 125, 126, 127, 65535, 65536};
  switch (rnd() % 4) {
  case 0: return edges[rnd() % WSY_ARRAY_LEN(edges)];
  case 1: return rnd() % 2000;
  default: return rnd() % 130;
  }
}

Test(ws_parser, encoder_parser_round_trip) {
  rng_state = 0x9e3779b97f4a7c15ull;
  uint8_t *pl = malloc(70000);
  for (int iter = 0; iter < 60; iter++) {
    int server = rnd() & 1; /* 1: client frames to a server (masked) */
    const ws_limits *lim = server ? &srv_lim : &cli_lim;
    bytes in = {0};
    rec want = {0};
    int msgs = 1 + (int)(rnd() % 6);
    for (int m = 0; m < msgs; m++) {
      uint8_t key[4] = {(uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd()};
      const uint8_t *mask = server ? key : NULL;
      size_t len = rnd_len();
      int op = rnd() % 2 ? WS_OP_TEXT : WS_OP_BINARY;
      for (size_t i = 0; i < len; i++)
        pl[i] = op == WS_OP_TEXT ? (uint8_t)(' ' + rnd() % 95) : (uint8_t)rnd();
      int frags = rnd() % 3 ? 1 : 1 + (int)(rnd() % 4);
      size_t at = 0;
      for (int f = 0; f < frags; f++) {
        size_t n = f + 1 == frags ? len - at : (len - at) / 2;
        frame(&in, f + 1 == frags, f == 0 ? op : WS_OP_CONT, pl + at, n, mask);
        at += n;
        if (f + 1 == frags) rec_add(&want, 'M', (unsigned)op, pl, len);
        if (rnd() % 3 == 0) { /* a control frame between fragments or messages */
          size_t cl = rnd() % 126;
          uint8_t c[125];
          for (size_t i = 0; i < cl; i++) c[i] = (uint8_t)rnd();
          int ping = rnd() & 1;
          frame(&in, 1, ping ? WS_OP_PING : WS_OP_PONG, c, cl, mask);
          rec_add(&want, ping ? 'P' : 'O', 0, c, cl);
        }
      }
    }
    size_t first = in.n ? rnd() % in.n : 0, step = 1 + rnd() % 3000;
    rec r = {0};
    outcome o = run_chunks(lim, in.d, in.n, first, step, &r);
    cr_assert_eq(o.rc, WSY_OK, "iteration %d: %s", iter, wsy_errname(o.rc));
    assert_same_events(&r, &want, "round trip", (size_t)iter);
    rec_free(&r);
    o = run_whole(lim, &in, &r);
    cr_assert_eq(o.rc, WSY_OK);
    assert_same_events(&r, &want, "round trip whole", (size_t)iter);
    rec_free(&r);
    rec_free(&want);
    bytes_free(&in);
  }
  free(pl);
}

/* ---- close codes ---------------------------------------------------------------- */

Test(ws_close_code, table) {
  static const struct {
    unsigned code;
    int valid;
  } cases[] = {
    {0, 0},    {999, 0},  {1000, 1}, {1001, 1}, {1002, 1}, {1003, 1}, {1004, 0}, {1005, 0},
    {1006, 0}, {1007, 1}, {1008, 1}, {1009, 1}, {1010, 1}, {1011, 1}, {1012, 1}, {1013, 1},
    {1014, 1}, {1015, 0}, {1016, 0}, {1999, 0}, {2000, 0}, {2999, 0}, {3000, 1}, {3001, 1},
    {3999, 1}, {4000, 1}, {4999, 1}, {5000, 0}, {65535, 0}, {65536 + 1000, 0}, {~0u, 0},
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(cases); i++)
    cr_assert_eq(!!ws_close_code_valid(cases[i].code), cases[i].valid, "code %u", cases[i].code);
  unsigned count = 0;
  for (unsigned c = 0; c <= 70000; c++) count += !!ws_close_code_valid(c);
  cr_assert_eq(count, 4 + 8 + 2000, "%u valid codes", count);
}

/* ---- permessage-deflate (RFC 7692) ------------------------------------------ */

/* in[0..n) deflated as a client sends one message: raw deflate, sync flush,
 * the trailing 00 00 ff ff removed. */
static void zmsg(bytes *out, const void *in, size_t n) {
  z_stream z = {0};
  cr_assert_eq(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  size_t cap = deflateBound(&z, n) + 16;
  uint8_t *o = malloc(cap);
  z.next_in = (Bytef *)(uintptr_t)in;
  z.avail_in = (uInt)n;
  z.next_out = o;
  z.avail_out = (uInt)cap;
  cr_assert_eq(deflate(&z, Z_SYNC_FLUSH), Z_OK);
  size_t len = cap - z.avail_out;
  cr_assert(len >= 4 && memcmp(o + len - 4, "\x00\x00\xff\xff", 4) == 0);
  put(out, o, len - 4);
  deflateEnd(&z);
  free(o);
}

/* A compressed client frame: RSV1 on when rsv1. */
static void zframe(bytes *b, int fin, int op, int rsv1, const void *payload, size_t len) {
  size_t at = b->n;
  cframe(b, fin, op, payload, len);
  if (rsv1) b->d[at] |= 0x40;
}

Test(ws_pmd, compressed_text_and_binary_any_split) {
  deflate_on = 1;
  const char *text = "{\"op\":\"set\",\"room\":\"board:1\",\"item\":\"note-42\",\"fields\":{\"x\":10,\"y\":20,"
                     "\"text\":\"h\xc3\xa9llo h\xc3\xa9llo h\xc3\xa9llo h\xc3\xa9llo\"}}";
  uint8_t *bin = pattern(5000, 3);
  bytes z1 = {0}, z2 = {0}, in = {0};
  zmsg(&z1, text, strlen(text));
  zmsg(&z2, bin, 5000);
  zframe(&in, 1, WS_OP_TEXT, 1, z1.d, z1.n);
  cframe_str(&in, 1, WS_OP_TEXT, "plain in between");
  zframe(&in, 1, WS_OP_BINARY, 1, z2.d, z2.n);
  rec want = {0};
  rec_add(&want, 'M', WS_OP_TEXT, text, strlen(text));
  rec_add(&want, 'M', WS_OP_TEXT, "plain in between", 16);
  rec_add(&want, 'M', WS_OP_BINARY, bin, 5000);
  check_all_splits(&srv_lim, &in, &want, WSY_OK, 64);
  rec_free(&want);
  bytes_free(&in);
  bytes_free(&z1);
  bytes_free(&z2);
  free(bin);
}

Test(ws_pmd, fragmented_compressed_message_with_control_frames_between) {
  deflate_on = 1;
  uint8_t *pl = pattern(3000, 9);
  bytes z = {0}, in = {0};
  zmsg(&z, pl, 3000);
  size_t a = z.n / 3, b2 = 2 * z.n / 3;
  zframe(&in, 0, WS_OP_BINARY, 1, z.d, a);
  cframe_str(&in, 1, WS_OP_PING, "p");
  zframe(&in, 0, WS_OP_CONT, 0, z.d + a, b2 - a);
  cframe_str(&in, 1, WS_OP_PONG, "o");
  zframe(&in, 1, WS_OP_CONT, 0, z.d + b2, z.n - b2);
  rec want = {0};
  rec_add(&want, 'P', 0, "p", 1);
  rec_add(&want, 'O', 0, "o", 1);
  rec_add(&want, 'M', WS_OP_BINARY, pl, 3000);
  check_all_splits(&srv_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
  bytes_free(&z);
  free(pl);
}

Test(ws_pmd, empty_compressed_message_and_final_block) {
  deflate_on = 1;
  bytes in = {0};
  /* An empty message: 00 (RFC 7692 7.2.3.6), an empty fixed block 02 00, or
   * no bytes at all. */
  zframe(&in, 1, WS_OP_TEXT, 1, (const uint8_t[]){0x00}, 1);
  zframe(&in, 1, WS_OP_TEXT, 1, (const uint8_t[]){0x02, 0x00}, 2);
  zframe(&in, 1, WS_OP_BINARY, 1, "", 0);
  /* "abc" in a final fixed block (BFINAL = 1): ends the data early. */
  z_stream z = {0};
  uint8_t o[64];
  cr_assert_eq(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  z.next_in = (Bytef *)"abc";
  z.avail_in = 3;
  z.next_out = o;
  z.avail_out = sizeof o;
  cr_assert_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
  zframe(&in, 1, WS_OP_TEXT, 1, o, sizeof o - z.avail_out);
  deflateEnd(&z);
  rec want = {0};
  rec_add(&want, 'M', WS_OP_TEXT, "", 0);
  rec_add(&want, 'M', WS_OP_TEXT, "", 0);
  rec_add(&want, 'M', WS_OP_BINARY, "", 0);
  rec_add(&want, 'M', WS_OP_TEXT, "abc", 3);
  check_all_splits(&srv_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
}

Test(ws_pmd, rsv1_without_negotiation_or_on_continuation_or_control_is_1002) {
  bytes z = {0}, in = {0};
  zmsg(&z, "hello hello hello", 17);
  deflate_on = 0;
  zframe(&in, 1, WS_OP_TEXT, 1, z.d, z.n);
  check_error("rsv1 not agreed", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
  bytes_free(&in);
  deflate_on = 1;
  zframe(&in, 0, WS_OP_TEXT, 1, z.d, 3);
  zframe(&in, 1, WS_OP_CONT, 1, z.d + 3, z.n - 3);
  check_error("rsv1 on a continuation", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
  bytes_free(&in);
  zframe(&in, 0, WS_OP_TEXT, 0, "ab", 2);
  zframe(&in, 1, WS_OP_CONT, 1, "cd", 2);
  check_error("rsv1 on the continuation of a plain message", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
  bytes_free(&in);
  static const int ctl[] = {WS_OP_PING, WS_OP_PONG, WS_OP_CLOSE};
  for (int i = 0; i < 3; i++) {
    zframe(&in, 1, ctl[i], 1, "", 0);
    check_error("rsv1 on a control frame", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
    bytes_free(&in);
  }
  /* RSV2 and RSV3 stay refused with compression on. */
  zframe(&in, 1, WS_OP_TEXT, 1, z.d, z.n);
  in.d[0] |= 0x20;
  check_error("rsv1+rsv2", &srv_lim, &in, WSY_PROTO, WS_CLOSE_PROTOCOL, 0);
  bytes_free(&in);
  bytes_free(&z);
}

Test(ws_pmd, invalid_deflate_data_is_1007) {
  deflate_on = 1;
  bytes in = {0};
  /* BTYPE 11 is reserved. */
  zframe(&in, 1, WS_OP_BINARY, 1, (const uint8_t[]){0xff, 0xff, 0xff}, 3);
  check_error("reserved block type", &srv_lim, &in, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA, 0);
  bytes_free(&in);
  bytes z = {0};
  zmsg(&z, "abcdefabcdefabcdefabcdef", 24);
  /* Cut short: the data stops in the middle of a block. */
  zframe(&in, 1, WS_OP_BINARY, 1, z.d, z.n - 2);
  check_error("cut short", &srv_lim, &in, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA, 0);
  bytes_free(&in);
  /* Bytes after a final block. */
  zframe(&in, 1, WS_OP_BINARY, 1, (const uint8_t[]){0x03, 0x00, 0x41}, 3);
  check_error("after the final block", &srv_lim, &in, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA, 0);
  bytes_free(&in);
  /* A stored block whose NLEN is not the complement of LEN. */
  zframe(&in, 1, WS_OP_BINARY, 1, (const uint8_t[]){0x00, 0x01, 0x00, 0x00, 0x00, 0x41}, 6);
  check_error("bad stored length", &srv_lim, &in, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA, 0);
  bytes_free(&in);
  bytes_free(&z);
}

Test(ws_pmd, utf8_is_checked_on_the_inflated_text) {
  deflate_on = 1;
  bytes z = {0}, in = {0};
  const char bad[] = "valid so far \xc3\x28 then not";
  zmsg(&z, bad, sizeof bad - 1);
  zframe(&in, 1, WS_OP_TEXT, 1, z.d, z.n);
  check_error("bad utf-8 inside", &srv_lim, &in, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA, 0);
  bytes_free(&in);
  bytes_free(&z);
  /* A code point cut at the end of the message. */
  zmsg(&z, "ends in \xe2\x82", 10);
  zframe(&in, 1, WS_OP_TEXT, 1, z.d, z.n);
  check_error("truncated code point", &srv_lim, &in, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA, 0);
  bytes_free(&in);
  bytes_free(&z);
  /* The same bytes as binary are fine. */
  rec want = {0};
  zmsg(&z, bad, sizeof bad - 1);
  zframe(&in, 1, WS_OP_BINARY, 1, z.d, z.n);
  rec_add(&want, 'M', WS_OP_BINARY, bad, sizeof bad - 1);
  check_all_splits(&srv_lim, &in, &want, WSY_OK, 0);
  rec_free(&want);
  bytes_free(&in);
  bytes_free(&z);
}

static const ws_limits bomb_lim = {.max_message = 64 * 1024, .require_mask = 1};

Test(ws_pmd, decompression_bomb_stops_at_the_limit) {
  deflate_on = 1;
  /* 10 MB of zeros deflate to about 10 KB: a 64 KiB limit is crossed early. */
  size_t n = 10 * 1000 * 1000;
  uint8_t *zeros = calloc(n, 1);
  bytes z = {0}, in = {0};
  zmsg(&z, zeros, n);
  cr_assert_lt(z.n, 20000, "bomb is %zu bytes", z.n);
  zframe(&in, 1, WS_OP_BINARY, 1, z.d, z.n);
  check_error("bomb", &bomb_lim, &in, WSY_TOO_LARGE, WS_CLOSE_TOO_BIG, 0);
  /* It stopped early: 64 KiB of output come from the first few hundred
   * bytes, so feeding only those already fails. */
  rec r = {0};
  ws_parser p;
  ws_parser_init(&p, &bomb_lim, &rec_cb, &r);
  ws_parser_set_deflate(&p, 1);
  cr_assert_eq(feed_copy(&p, in.d, 14 + 200), WSY_TOO_LARGE);
  ws_parser_deinit(&p);
  rec_free(&r);
  /* And exactly at the limit is fine; one byte more is not. */
  bytes_free(&z);
  bytes_free(&in);
  rec want = {0};
  zmsg(&z, zeros, 64 * 1024);
  zframe(&in, 1, WS_OP_TEXT, 1, z.d, z.n);
  rec_add(&want, 'M', WS_OP_TEXT, zeros, 64 * 1024);
  check_all_splits(&bomb_lim, &in, &want, WSY_OK, 16);
  rec_free(&want);
  bytes_free(&z);
  bytes_free(&in);
  zmsg(&z, zeros, 64 * 1024 + 1);
  zframe(&in, 1, WS_OP_TEXT, 1, z.d, z.n);
  check_error("limit + 1", &bomb_lim, &in, WSY_TOO_LARGE, WS_CLOSE_TOO_BIG, 0);
  bytes_free(&z);
  bytes_free(&in);
  free(zeros);
}

Test(ws_pmd, compressed_bytes_count_against_the_limit_too) {
  deflate_on = 1;
  /* Endless empty stored blocks inflate to nothing: the wire bytes stop them. */
  bytes in = {0}, blocks = {0};
  for (int i = 0; i < 20000; i++) put(&blocks, (const uint8_t[]){0x00, 0x00, 0x00, 0xff, 0xff}, 5);
  zframe(&in, 0, WS_OP_BINARY, 1, blocks.d, blocks.n);
  zframe(&in, 1, WS_OP_CONT, 0, blocks.d, blocks.n);
  check_error("empty blocks", &bomb_lim, &in, WSY_TOO_LARGE, WS_CLOSE_TOO_BIG, 0);
  bytes_free(&in);
  bytes_free(&blocks);
}

Test(ws_pmd, no_inflate_stream_is_held_between_messages) {
  deflate_on = 1;
  bytes z = {0}, in = {0};
  uint8_t *pl = pattern(2000, 1);
  zmsg(&z, pl, 2000);
  zframe(&in, 0, WS_OP_BINARY, 1, z.d, 10);
  rec r = {0};
  ws_parser p;
  ws_parser_init(&p, &srv_lim, &rec_cb, &r);
  ws_parser_set_deflate(&p, 1);
  unsigned base = ws_pmd_stats_get()->inflate_streams;
  cr_assert_eq(feed_copy(&p, in.d, in.n), WSY_OK);
  cr_assert_eq(ws_pmd_stats_get()->inflate_streams, base + 1, "lent while the message is open");
  bytes_free(&in);
  zframe(&in, 1, WS_OP_CONT, 0, z.d + 10, z.n - 10);
  cr_assert_eq(feed_copy(&p, in.d, in.n), WSY_OK);
  cr_assert_eq(r.n, 1);
  cr_assert_eq(ws_pmd_stats_get()->inflate_streams, base, "given back at the end");
  cr_assert_null(p.z);
  cr_assert_null(p.msg);
  /* A parser that fails mid-message gives it back too. */
  bytes_free(&in);
  zframe(&in, 0, WS_OP_BINARY, 1, z.d, 10);
  cframe_str(&in, 1, WS_OP_TEXT, "new message inside: 1002");
  cr_assert_eq(feed_copy(&p, in.d, in.n), WSY_PROTO);
  cr_assert_eq(ws_pmd_stats_get()->inflate_streams, base);
  ws_parser_deinit(&p);
  ws_pmd_release();
  cr_assert_eq(ws_pmd_stats_get()->zlib_bytes, 0, "%zu zlib bytes left", ws_pmd_stats_get()->zlib_bytes);
  rec_free(&r);
  bytes_free(&in);
  bytes_free(&z);
  free(pl);
}
