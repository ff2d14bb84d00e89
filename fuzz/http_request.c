/* http_request.c -- libFuzzer target for HTTP/1.1 request parsing
 * (src/http/request.c over http-parser).
 *
 * The input is a byte stream from one connection. It is driven the way
 * httpd's http_on_data() drives it: a request object per request, leftover
 * bytes go to the next one (pipelining), an error or an upgrade ends the
 * stream. Checked, besides "no crash":
 *  - httpd_req_feed() keeps its contract: *used <= len, everything used when
 *    it asks for more (else the caller would spin), a status of 0, 1, 400,
 *    413, 414, 431 or 505, errors sticky;
 *  - the stream fed whole, in two or three pieces cut at data-derived offsets
 *    and (when small) a byte at a time gives the same requests: status,
 *    method, path, query, selected headers and query parameters, body,
 *    upgrade/keep-alive flags, and where in the stream an upgrade ends;
 *  - the accessors hold up on every finished or failed request, and the
 *    WebSocket key of an upgrade goes through ws_key_valid/ws_accept_key as
 *    the server would.
 *
 * Limits are small so that 413, 414 and 431 are reachable (see caps below).
 * Run: make build-fuzz/http_request && build-fuzz/http_request -dict=fuzz/http.dict fuzz/corpus/http_request */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/http/httpd.h"
#include "../src/ws/ws.h"

#define BYTEWISE_MAX 1024

/* KNOWN ISSUE, found by this target: httpd_req_feed() returns 1 for an
 * upgrade request as soon as its headers are complete, even when a body
 * (Content-Length or chunked) is still to come. How much of that body it has
 * consumed -- and so where the WebSocket bytes start -- depends on how the
 * stream was split, and feeding again consumes more. Seed:
 * corpus/http_request/crash-upgrade-with-body-split (and the whole stream may
 * even fail in that body while a split one has already handed it over:
 * crash-upgrade-then-bad-chunk). While set, when either side left such a body
 * unread, that request is not compared (only those before it) and stickiness
 * is not checked; set to 0 once request.c
 * waits for the body (or refuses it); -DTOLERATE_UPGRADE_BODY=0 to see it. */
#ifndef TOLERATE_UPGRADE_BODY
#define TOLERATE_UPGRADE_BODY 0
#endif

/* KNOWN ISSUE, found by this target: a request that is both over a cap and
 * malformed fails with 400 when it arrives in one piece but 414/431 when it
 * is split. http-parser only reports a URL or header span when the span ends
 * or the input does, so the cap is seen early in a split stream, while a
 * whole one hits the bad byte first. Both refuse the request; only the status
 * differs. Seed: corpus/http_request/crash-url-cap-vs-bad-char.
 * While set, a failed request's status may differ this way; set to 0 once
 * request.c counts header bytes itself; -DTOLERATE_CAP_VS_SYNTAX=0 to see it. */
#ifndef TOLERATE_CAP_VS_SYNTAX
#define TOLERATE_CAP_VS_SYNTAX 0
#endif

/* KNOWN BUG, found by this target (heap-buffer-overflow read): when a header
 * name or value pushes the header bytes past max_header, on_header_field /
 * on_header_value have already counted it in the header table, so on the
 * failed (431) request httpd_req_header() compares bytes that were never
 * stored, past the end of the buffer when it is full. httpd does not look up
 * headers of a failed request today. Seed:
 * corpus/http_request/crash-header-lookup-after-431. While set, headers of a
 * failed request are not looked up; -DTOLERATE_HEADER_AFTER_ERROR=0 to see it. */
#ifndef TOLERATE_HEADER_AFTER_ERROR
#define TOLERATE_HEADER_AFTER_ERROR 0
#endif

/* Two sets of caps: the small one lets short inputs reach 413/414/431; the
 * large one leaves room for the decoded-path (2 KiB) and query (1 KiB) caps. */
typedef struct {
  size_t max_header, max_body;
} caps;
static const caps small_caps = {256, 128}, large_caps = {2048, 4096};

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "http_request fuzz: check failed at line %d: %s\n", __LINE__, #cond); \
      __builtin_trap();                                                          \
    }                                                                            \
  } while (0)

typedef struct {
  uint64_t h;
  unsigned n;        /* requests finished or failed */
  int status;        /* last status: 0 when the stream ended mid-request */
  const char *why;   /* httpd_req_error() of a failed request */
  size_t upgrade_at; /* stream offset where an upgrade request ended, or 0 */
  uint64_t upgrade_h;      /* what record() saw of the upgrade request */
  uint64_t upgrade_body_h;
  int upgrade_pending; /* its body was not all read: see TOLERATE_UPGRADE_BODY */
} result;

static void mix(result *r, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) r->h = (r->h ^ b[i]) * 0x100000001b3ull;
}

static void mix_str(result *r, const char *s, size_t n) {
  uint64_t l = s ? n : (uint64_t)-1;
  mix(r, &l, sizeof l);
  if (s) mix(r, s, n);
}

static const char *const header_names[] = {
  "Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
  "Origin", "Content-Length", "Transfer-Encoding", "X-Absent", "",
};
static const char *const params[] = {"room", "token", "since", "a", ""};

/* Folds in everything a route could look at, except the body of a finished
 * request, whose hash goes to *body_h for the caller to fold in. */
static void record(result *res, const caps *c, const httpd_req *r, int st, uint64_t *body_h) {
  res->n++;
  res->status = st;
  if (st != 1) {
    /* Status and reason are compared in same(), not hashed. */
    res->why = httpd_req_error(r);
    CHECK(res->why != NULL && strlen(res->why) > 0);
    /* Accessors must hold up on a failed request too. */
    (void)strlen(httpd_req_method(r));
    (void)strlen(httpd_req_path(r));
    (void)strlen(httpd_req_query(r));
    if (!TOLERATE_HEADER_AFTER_ERROR) {
      size_t vl;
      (void)httpd_req_header(r, "Host", &vl);
    }
    return;
  }
  const char *m = httpd_req_method(r), *p = httpd_req_path(r), *q = httpd_req_query(r);
  mix_str(res, m, strlen(m));
  mix_str(res, p, strlen(p));
  mix_str(res, q, strlen(q));
  for (size_t i = 0; i < sizeof header_names / sizeof *header_names; i++) {
    size_t vl = 0;
    const char *v = httpd_req_header(r, header_names[i], &vl);
    CHECK(v == NULL || vl <= c->max_header);
    mix_str(res, v, vl);
    if (v) {
      int t = httpd_header_has_token(v, vl, "upgrade") | httpd_header_has_token(v, vl, "close") << 1 |
              httpd_header_has_token(v, vl, "websocket") << 2 | httpd_header_has_token(v, vl, "") << 3;
      mix(res, &t, sizeof t);
    }
  }
  for (size_t i = 0; i < sizeof params / sizeof *params; i++) {
    char out[64];
    memset(out, 0, sizeof out);
    int found = httpd_req_query_param(r, params[i], out, sizeof out);
    mix(res, &found, sizeof found);
    if (found == 0) mix_str(res, out, strlen(out));
    found = httpd_req_query_param(r, params[i], out, 1); /* room only for the NUL */
    mix(res, &found, sizeof found);
  }
  size_t bl;
  const uint8_t *body = httpd_req_body(r, &bl);
  CHECK(bl <= c->max_body);
  CHECK(bl == 0 || body != NULL);
  result b = {.h = 0xcbf29ce484222325ull};
  mix_str(&b, (const char *)body, bl);
  *body_h = b.h;
  int flags = httpd_req_upgrade(r) | httpd_req_keep_alive(r) << 1 | httpd_req_http11(r) << 2;
  mix(res, &flags, sizeof flags);

  size_t kl;
  const char *key = httpd_req_header(r, "Sec-WebSocket-Key", &kl);
  if (key && ws_key_valid(key, kl)) {
    char accept[29];
    ws_accept_key(key, kl, accept);
    CHECK(strlen(accept) == 28);
    mix(res, accept, 28);
  }
}

/* Feeds d[0..n) in pieces ending at cuts[0..ncut) (ascending, <= n) and then
 * the rest, or step bytes at a time when step > 0. Empty pieces are skipped:
 * a zero-length feed would mean EOF to http-parser, and httpd never makes one. */
static void run(const caps *c, const uint8_t *d, size_t n, const size_t *cuts, size_t ncut, size_t step,
                result *res) {
  memset(res, 0, sizeof *res);
  res->h = 0xcbf29ce484222325ull;
  httpd_req *r = NULL;
  size_t at = 0, k = 0;
  int done = 0;
  while (!done && at < n) {
    size_t end = step ? (at + step < n ? at + step : n) : k < ncut ? cuts[k++] : n;
    size_t len = end - at;
    if (!len) continue;
    uint8_t *piece = malloc(len);
    memcpy(piece, d + at, len);
    const uint8_t *p = piece;
    size_t left = len;
    while (left > 0 && !done) {
      if (!r) r = httpd_req_new(c->max_header, c->max_body);
      size_t used = (size_t)-1;
      int st = httpd_req_feed(r, p, left, &used);
      CHECK(used <= left);
      CHECK(st == 0 || st == 1 || st == 400 || st == 413 || st == 414 || st == 431 || st == 505);
      p += used;
      left -= used;
      if (st == 0) {
        CHECK(left == 0); /* http_on_data would feed the same bytes again, forever */
        /* No bytes is no progress, not end of stream. */
        size_t used0 = (size_t)-1;
        CHECK(httpd_req_feed(r, p, 0, &used0) == 0 && used0 == 0);
        continue;
      }
      uint64_t body_h = 0, h_before = res->h;
      record(res, c, r, st, &body_h);
      /* A finished or failed request answers the same again and takes no
       * more bytes (probed with one byte when none are left). */
      static const uint8_t probe[1] = {0x81};
      size_t used2 = (size_t)-1;
      int st2 = httpd_req_feed(r, left ? p : probe, left ? left : 1, &used2);
      int exempt = TOLERATE_UPGRADE_BODY && st == 1 && httpd_req_upgrade(r) &&
                   !(st2 == 1 && used2 == 0);
      if (!exempt) CHECK(st2 == st && used2 == 0);
      if (st != 1) {
        done = 1;
      } else if (httpd_req_upgrade(r)) {
        /* The rest of the stream is WebSocket: compared in same(). */
        res->upgrade_at = at + (size_t)(p - piece);
        res->upgrade_h = res->h;
        res->h = h_before;
        res->upgrade_body_h = body_h;
        res->upgrade_pending = exempt;
        done = 1;
      } else {
        mix(res, &body_h, sizeof body_h);
      }
      httpd_req_free(r);
      r = NULL;
    }
    free(piece);
    at = end;
  }
  if (r) {
    res->status = 0; /* the stream ended inside a request */
    (void)strlen(httpd_req_path(r));
    httpd_req_free(r);
  }
}

static int is_cap(int st) { return st == 414 || st == 431; }

static void same(const result *a, const result *b, const char *what) {
  int status_ok = a->status == b->status;
  if (status_ok && a->status > 1) status_ok = strcmp(a->why, b->why) == 0;
  if (!status_ok && TOLERATE_CAP_VS_SYNTAX && a->status > 1 && b->status > 1 &&
      (is_cap(a->status) || is_cap(b->status)))
    status_ok = 1;
  int upgrade_ok = a->upgrade_at == b->upgrade_at && a->upgrade_h == b->upgrade_h &&
                   a->upgrade_body_h == b->upgrade_body_h;
  if (TOLERATE_UPGRADE_BODY && (a->upgrade_pending || b->upgrade_pending)) {
    /* One side returned the upgrade before reading its body; the other read
     * that body -- and any chunked trailers, which join the headers -- or
     * failed inside it. Only the requests before it are compared. */
    status_ok = upgrade_ok = 1;
  }
  if (a->h == b->h && a->n == b->n && status_ok && upgrade_ok) return;
  fprintf(stderr,
          "http_request fuzz: whole vs %s differ: requests %u/%u hash %016llx/%016llx "
          "status %d/%d (%s/%s) upgrade_at %zu/%zu\n",
          what, a->n, b->n, (unsigned long long)a->h, (unsigned long long)b->h, a->status,
          b->status, a->why ? a->why : "-", b->why ? b->why : "-", a->upgrade_at, b->upgrade_at);
  __builtin_trap();
}

static void check_caps(const caps *c, const uint8_t *data, size_t size, uint64_t h) {
  result whole, other;
  run(c, data, size, NULL, 0, 0, &whole);

  size_t cuts[2];
  cuts[0] = (size_t)(h % (size + 1));
  cuts[1] = cuts[0] + (size_t)((h >> 32) % (size - cuts[0] + 1));
  run(c, data, size, cuts, 2, 0, &other);
  same(&whole, &other, "three pieces");

  if (size <= BYTEWISE_MAX) {
    run(c, data, size, NULL, 0, 1, &other);
    same(&whole, &other, "byte by byte");
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 0x100000001b3ull;
  check_caps(&small_caps, data, size, h);
  check_caps(&large_caps, data, size, h);
  return 0;
}
