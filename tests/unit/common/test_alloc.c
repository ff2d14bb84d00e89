/* test_alloc.c -- allocation failure at every point, for the code that
 * allocates what a peer controls (buffers that grow with its input, JSON
 * built from it): each run fails the nth fallible allocation, for n = 1,
 * 2, ... until a run completes without reaching n. Every failing run must
 * end in a clean error (WSY_NOMEM, close 1011, HTTP 503, a NULL from
 * jansson) and, under ASan, leak nothing. Only test builds have the hook
 * (WSY_ALLOC_TESTING: the ASan build of make test). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/common/wsy.h"
#include "../../../src/http/httpd.h"
#include "../../../src/ws/ws.h"

#ifdef WSY_ALLOC_TESTING

Test(alloc, buf_append_fails_cleanly) {
  buf b;
  buf_init(&b, 1 << 20);
  cr_assert_eq(buf_append(&b, "abc", 3), WSY_OK);
  char big[4096] = {0};
  wsy_alloc_fail_at(1);
  cr_assert_eq(buf_append(&b, big, sizeof big), WSY_NOMEM);
  cr_assert_eq(b.len, 3, "a failed append leaves the buffer as it was");
  cr_assert_eq(memcmp(b.data, "abc", 3), 0);
  wsy_alloc_fail_at(0);
  cr_assert_eq(buf_append(&b, big, sizeof big), WSY_OK);
  cr_assert_eq(b.len, 3 + sizeof big);
  buf_free(&b);
}

typedef struct {
  int messages;
  size_t len;
} got;

static int on_msg(void *ctx, int opcode, uint8_t *data, size_t len) {
  (void)opcode;
  (void)data;
  got *g = ctx;
  g->messages++;
  g->len = len;
  return 0;
}
static int on_ctl(void *ctx, const uint8_t *d, size_t n) { return (void)ctx, (void)d, (void)n, 0; }
static int on_close(void *ctx, unsigned c, const uint8_t *r, size_t n) { return (void)ctx, (void)c, (void)r, (void)n, 0; }

/* A masked client frame (mask key 0, so the payload reads as it is). */
static size_t frame(uint8_t *out, int fin, int opcode, const char *p, size_t n) {
  out[0] = (uint8_t)((fin ? 0x80 : 0) | opcode);
  out[1] = (uint8_t)(0x80 | n);
  memset(out + 2, 0, 4);
  memcpy(out + 6, p, n);
  return 6 + n;
}

Test(alloc, ws_parser_reassembly_at_every_failure_point) {
  static const ws_limits lim = {.max_message = 1 << 20, .require_mask = 1};
  static const ws_parser_cb cb = {on_msg, on_ctl, on_ctl, on_close};
  char part[100];
  memset(part, 'x', sizeof part);
  uint8_t in[1024];
  size_t n = 0;
  n += frame(in + n, 0, WS_OP_TEXT, part, sizeof part);
  n += frame(in + n, 0, WS_OP_CONT, part, sizeof part);
  n += frame(in + n, 1, WS_OP_CONT, part, sizeof part);
  int failed = 0;
  for (unsigned long k = 1;; k++) {
    uint8_t copy[sizeof in];
    memcpy(copy, in, n);
    got g = {0};
    ws_parser p;
    ws_parser_init(&p, &lim, &cb, &g);
    wsy_alloc_fail_at(k);
    int rc = ws_parser_feed(&p, copy, n);
    unsigned long ran = wsy_alloc_fail_at(0);
    ws_parser_deinit(&p);
    if (ran < k) { /* the failure point was never reached: a clean run */
      cr_assert_eq(rc, WSY_OK);
      cr_assert_eq(g.messages, 1);
      cr_assert_eq(g.len, 3 * sizeof part);
      break;
    }
    cr_assert_eq(rc, WSY_NOMEM, "failure at allocation %lu gave %s", k, wsy_errname(rc));
    cr_assert_eq(ws_parser_close_code(&p), WS_CLOSE_INTERNAL);
    cr_assert_eq(g.messages, 0);
    failed++;
  }
  cr_assert_gt(failed, 0, "no allocation of the reassembly was fallible");
}

Test(alloc, http_request_at_every_failure_point) {
  char req[4096];
  char body[2000];
  memset(body, 'b', sizeof body);
  int hl = snprintf(req, sizeof req, "POST /v1/send HTTP/1.1\r\nHost: h\r\nContent-Length: %zu\r\n\r\n", sizeof body);
  memcpy(req + hl, body, sizeof body);
  size_t n = (size_t)hl + sizeof body;
  int failed = 0;
  for (unsigned long k = 1;; k++) {
    httpd_req *r = httpd_req_new(16 * 1024, 1 << 20);
    wsy_alloc_fail_at(k);
    size_t used = 0;
    int st = httpd_req_feed(r, (const uint8_t *)req, n, &used);
    unsigned long ran = wsy_alloc_fail_at(0);
    if (ran < k) {
      cr_assert_eq(st, 1, "a clean run completes the request");
      size_t bl;
      httpd_req_body(r, &bl);
      cr_assert_eq(bl, sizeof body);
      httpd_req_free(r);
      break;
    }
    cr_assert_eq(st, 503, "failure at allocation %lu gave status %d", k, st);
    cr_assert_str_eq(httpd_req_error(r), "out of memory");
    httpd_req_free(r);
    failed++;
  }
  cr_assert_gt(failed, 0);
}

Test(alloc, json_from_a_peer_at_every_failure_point) {
  json_set_alloc_funcs(wsy_try_malloc, free);
  const char *msg = "{\"type\":\"op\",\"id\":7,\"room\":\"board:1\",\"cid\":\"d:1\","
                    "\"op\":{\"kind\":\"set\",\"item\":\"c1\",\"fields\":{\"title\":\"Ship it\",\"n\":[1,2,3]}}}";
  int failed = 0;
  for (unsigned long k = 1;; k++) {
    json_error_t err;
    wsy_alloc_fail_at(k);
    json_t *v = json_loads(msg, JSON_REJECT_DUPLICATES, &err);
    unsigned long ran = wsy_alloc_fail_at(0);
    if (ran < k) {
      cr_assert_not_null(v, "a clean run parses: %s", err.text);
      cr_assert_str_eq(json_string_value(json_object_get(json_object_get(json_object_get(v, "op"), "fields"), "title")),
                       "Ship it");
      json_decref(v);
      break;
    }
    cr_assert_null(v, "failure at allocation %lu still gave a value", k);
    failed++;
  }
  json_set_alloc_funcs(malloc, free);
  cr_assert_gt(failed, 0);
}

#endif
