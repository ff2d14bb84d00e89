/* Unit tests for the wire of forwarded fallback requests (src/sync/forward.c)
 * and the session token format (sess_token_split, src/sync/sess.c): every
 * field survives encode/decode, every truncation and a wrong version are
 * refused, a request's text parses back into the same request, and a
 * token splits into its node and key (or is refused) at the last dot. */
#include <criterion/criterion.h>
#include <string.h>

#include "../../../src/sync/forward.h"
#include "../../../src/sync/sess.h"

static buf encode(const fwd_msg *m) {
  buf b;
  buf_init(&b, SIZE_MAX);
  cr_assert_eq(fwd_encode(m, &b), 0);
  return b;
}

Test(forward, answer_round_trip) {
  const char body[] = "{\"messages\":[],\"last\":7}";
  fwd_msg m = {.id = 0x0102030405060708ull, .op = FWD_ANSWER, .status = 410, .ctype = "application/json",
               .ctype_len = 16, .hdrs = "Cache-Control: no-store\r\nVary: Origin\r\n", .hdrs_len = 39,
               .body = (const uint8_t *)body, .body_len = sizeof body - 1};
  buf b = encode(&m);
  fwd_msg d;
  cr_assert_eq(fwd_decode(b.data, b.len, &d), 0);
  cr_assert_eq(d.id, m.id);
  cr_assert_eq(d.op, FWD_ANSWER);
  cr_assert_eq(d.status, 410);
  cr_assert_eq(d.ctype_len, 16);
  cr_assert_eq(memcmp(d.ctype, "application/json", 16), 0);
  cr_assert_eq(d.hdrs_len, 39);
  cr_assert_eq(memcmp(d.hdrs, m.hdrs, 39), 0);
  cr_assert_eq(d.body_len, sizeof body - 1);
  cr_assert_eq(memcmp(d.body, body, d.body_len), 0);
  buf_free(&b);
}

Test(forward, empty_fields_and_binary_body) {
  uint8_t bin[300];
  for (size_t i = 0; i < sizeof bin; i++) bin[i] = (uint8_t)(i * 7);
  fwd_msg m = {.id = 1, .op = FWD_DATA, .body = bin, .body_len = sizeof bin};
  buf b = encode(&m);
  fwd_msg d;
  cr_assert_eq(fwd_decode(b.data, b.len, &d), 0);
  cr_assert_eq(d.op, FWD_DATA);
  cr_assert_eq(d.ctype_len, 0);
  cr_assert_eq(d.hdrs_len, 0);
  cr_assert_eq(d.body_len, sizeof bin);
  cr_assert_eq(memcmp(d.body, bin, sizeof bin), 0);
  buf_free(&b);
  fwd_msg c = {.id = 2, .op = FWD_CANCEL};
  b = encode(&c);
  cr_assert_eq(fwd_decode(b.data, b.len, &d), 0);
  cr_assert_eq(d.op, FWD_CANCEL);
  cr_assert_eq(d.id, 2);
  cr_assert_eq(d.body_len, 0);
  buf_free(&b);
}

Test(forward, truncations_and_bad_headers_refused) {
  fwd_msg m = {.id = 9, .op = FWD_OPEN, .status = 200, .ctype = "text/event-stream", .ctype_len = 17,
               .hdrs = "X-Accel-Buffering: no\r\n", .hdrs_len = 23};
  buf b = encode(&m);
  fwd_msg d;
  /* Every prefix that cuts the content type or the headers is refused;
   * the body is the rest, so only the full length reads as m. */
  size_t fixed = b.len; /* no body: every byte is a fixed field */
  for (size_t n = 0; n < fixed; n++) cr_assert_eq(fwd_decode(b.data, n, &d), WSY_INVAL, "prefix %zu", n);
  cr_assert_eq(fwd_decode(b.data, b.len, &d), 0);
  b.data[0] = 2; /* another version */
  cr_assert_eq(fwd_decode(b.data, b.len, &d), WSY_INVAL);
  b.data[0] = 1;
  b.data[1] = 0; /* no such op */
  cr_assert_eq(fwd_decode(b.data, b.len, &d), WSY_INVAL);
  b.data[1] = FWD_END + 1;
  cr_assert_eq(fwd_decode(b.data, b.len, &d), WSY_INVAL);
  b.data[1] = FWD_OPEN;
  b.data[12] = 0xff; /* a content type longer than the message */
  cr_assert_eq(fwd_decode(b.data, b.len, &d), WSY_INVAL);
  buf_free(&b);
  /* Fields too long for their 2-byte length are refused, not cut. */
  static char big[70000];
  fwd_msg l = {.id = 1, .op = FWD_ANSWER, .hdrs = big, .hdrs_len = sizeof big};
  buf_init(&b, SIZE_MAX);
  cr_assert_eq(fwd_encode(&l, &b), WSY_INVAL);
  buf_free(&b);
}

Test(forward, kinds) {
  cr_assert_str_eq(fwd_kind(FWD_REQ), "fb.req");
  cr_assert_str_eq(fwd_kind(FWD_CANCEL), "fb.cancel");
  cr_assert_str_eq(fwd_kind(FWD_END), "fb.end");
  cr_assert_str_eq(fwd_kind(99), "fb");
}

static httpd_req *parse(const char *text, size_t len) {
  httpd_req *r = httpd_req_new(16384, 1 << 20);
  size_t used = 0;
  int st = httpd_req_feed(r, (const uint8_t *)text, len, &used);
  cr_assert_eq(st, 1, "status %d: %s", st, httpd_req_error(r));
  cr_assert_eq(used, len);
  return r;
}

Test(forward, request_text_parses_back) {
  const char in[] = "POST /v1/send?x=1 HTTP/1.1\r\nHost: lb\r\nOrigin: https://app.example\r\n"
                    "Cookie: secret\r\nContent-Type: application/json\r\nWsync-Session: n1.0123abcd\r\n"
                    "Content-Length: 26\r\n\r\n[{\"type\":\"ping\",\"id\":\"a\"}]";
  httpd_req *r = parse(in, sizeof in - 1);
  buf b;
  buf_init(&b, SIZE_MAX);
  cr_assert_eq(fwd_request_text(r, &b), 0);
  httpd_req *f = parse((const char *)b.data, b.len);
  cr_assert_str_eq(httpd_req_method(f), "POST");
  cr_assert_str_eq(httpd_req_path(f), "/v1/send");
  cr_assert_str_eq(httpd_req_query(f), "x=1");
  size_t l;
  const char *v = httpd_req_header(f, "Origin", &l);
  cr_assert(v && l == 19 && !memcmp(v, "https://app.example", 19));
  v = httpd_req_header(f, "Wsync-Session", &l);
  cr_assert(v && l == 11 && !memcmp(v, "n1.0123abcd", 11));
  cr_assert_null(httpd_req_header(f, "Cookie", &l)); /* only what fallback.c reads goes */
  const uint8_t *body = httpd_req_body(f, &l);
  cr_assert_eq(l, 26);
  cr_assert_eq(memcmp(body, "[{\"type\":\"ping\",\"id\":\"a\"}]", 26), 0);
  httpd_req_free(f);
  httpd_req_free(r);
  buf_free(&b);
}

Test(forward, get_request_text_has_no_body) {
  const char in[] = "GET /v1/sse?session=n2.ab&last=3 HTTP/1.1\r\nHost: lb\r\nLast-Event-ID: 5\r\n\r\n";
  httpd_req *r = parse(in, sizeof in - 1);
  buf b;
  buf_init(&b, SIZE_MAX);
  cr_assert_eq(fwd_request_text(r, &b), 0);
  httpd_req *f = parse((const char *)b.data, b.len);
  char s[64];
  cr_assert_eq(httpd_req_query_param(f, "session", s, sizeof s), 0);
  cr_assert_str_eq(s, "n2.ab");
  size_t l;
  const char *v = httpd_req_header(f, "Last-Event-ID", &l);
  cr_assert(v && l == 1 && v[0] == '5');
  httpd_req_body(f, &l);
  cr_assert_eq(l, 0);
  httpd_req_free(f);
  httpd_req_free(r);
  buf_free(&b);
}

static int split(const char *tok, char *key, char *node) {
  return sess_token_split(tok, strlen(tok), key, node);
}

Test(forward, token_split) {
  char key[SESS_KEY_LEN + 1], node[SESS_NODE_MAX + 1];
  const char *hex = "0123456789abcdef0123456789abcdef";
  cr_assert_eq(split(hex, key, node), 0); /* one node: the key alone */
  cr_assert_str_eq(key, hex);
  cr_assert_str_eq(node, "");
  char t[200];
  snprintf(t, sizeof t, "node-1.%s", hex);
  cr_assert_eq(split(t, key, node), 0);
  cr_assert_str_eq(node, "node-1");
  cr_assert_str_eq(key, hex);
  snprintf(t, sizeof t, "host.example.com-4f2a.%s", hex); /* dots in a node id: the last one splits */
  cr_assert_eq(split(t, key, node), 0);
  cr_assert_str_eq(node, "host.example.com-4f2a");
  cr_assert_str_eq(key, hex);
  /* Not a token: no key, a key too long or not lowercase hex, no node
   * before the dot, a node too long or with characters a URL would change. */
  cr_assert_eq(split("", key, node), -1);
  cr_assert_eq(split("n1.", key, node), -1);
  snprintf(t, sizeof t, ".%s", hex);
  cr_assert_eq(split(t, key, node), -1);
  snprintf(t, sizeof t, "n1.%s0", hex);
  cr_assert_eq(split(t, key, node), -1);
  cr_assert_eq(split("n1.0123ABCD", key, node), -1);
  cr_assert_eq(split("n 1.0123", key, node), -1);
  cr_assert_eq(split("n%3A1.0123", key, node), -1);
  cr_assert_eq(split("n/1.0123", key, node), -1);
  char longnode[SESS_NODE_MAX + 40];
  memset(longnode, 'a', SESS_NODE_MAX + 1);
  snprintf(longnode + SESS_NODE_MAX + 1, 34, ".%s", "0123");
  cr_assert_eq(split(longnode, key, node), -1);
  memset(longnode, 'a', SESS_NODE_MAX); /* exactly SESS_NODE_MAX characters */
  snprintf(longnode + SESS_NODE_MAX, 34, ".%s", "0123");
  cr_assert_eq(split(longnode, key, node), 0);
  cr_assert_eq(strlen(node), SESS_NODE_MAX);
  /* len counts: the bytes after it are not read */
  snprintf(t, sizeof t, "n1.%sGARBAGE", hex);
  cr_assert_eq(sess_token_split(t, 3 + SESS_KEY_LEN, key, node), 0);
  cr_assert_str_eq(node, "n1");
}
