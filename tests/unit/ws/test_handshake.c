/* test_handshake.c -- Sec-WebSocket-Key validation and the accept value
 * (src/ws/handshake.c). */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>

#include "../../../src/ws/ws.h"

static int key_ok(const char *k) { return ws_key_valid(k, strlen(k)); }

Test(ws_handshake, rfc6455_sample_accept_key) {
  /* RFC 6455 1.3 and 4.2.2. */
  const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
  char out[29];
  memset(out, 'X', sizeof out);
  ws_accept_key(key, strlen(key), out);
  cr_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  cr_assert(key_ok(key));
}

Test(ws_handshake, accept_key_uses_only_len_bytes) {
  const char *key = "dGhlIHNhbXBsZSBub25jZQ==trailing garbage";
  char out[29];
  ws_accept_key(key, 24, out);
  cr_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/* Accept values computed here independently: SHA-1 of key + GUID, base64. */
Test(ws_handshake, accept_key_matches_sha1_base64_for_random_keys) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned seed = 12345;
  for (int iter = 0; iter < 200; iter++) {
    unsigned char raw[16], key[25], cat[24 + sizeof guid], md[SHA_DIGEST_LENGTH], want[29];
    for (int i = 0; i < 16; i++) {
      seed = seed * 1103515245u + 12345u;
      raw[i] = (unsigned char)(seed >> 16);
    }
    cr_assert_eq(EVP_EncodeBlock(key, raw, 16), 24);
    cr_assert(ws_key_valid((const char *)key, 24), "random key %s refused", key);
    memcpy(cat, key, 24);
    memcpy(cat + 24, guid, sizeof guid - 1);
    cr_assert(EVP_Digest(cat, 24 + sizeof guid - 1, md, NULL, EVP_sha1(), NULL));
    cr_assert_eq(EVP_EncodeBlock(want, md, sizeof md), 28);
    char out[29];
    ws_accept_key((const char *)key, 24, out);
    cr_assert_str_eq(out, (const char *)want);
  }
}

Test(ws_handshake, key_valid_accepts_all_16_byte_encodings) {
  cr_assert(key_ok("AAAAAAAAAAAAAAAAAAAAAA=="));
  cr_assert(key_ok("/////////////////////w=="));
  cr_assert(key_ok("+++++++++++++++++++++g=="));
  cr_assert(key_ok("0123456789abcdefXYZ+/Q=="));
}

Test(ws_handshake, key_valid_rejects_bad_keys) {
  static const char *bad[] = {
    "",
    "dGhlIHNhbXBsZSBub25jZQ=",      /* 23 chars */
    "dGhlIHNhbXBsZSBub25jZQ===",    /* 25 chars */
    "dGhlIHNhbXBsZSBub25jZQ",       /* padding missing */
    "dGhlIHNhbXBsZSBub25jZQAA",     /* 24 chars, no padding: 18 bytes */
    "dGhlIHNhbXBsZSBub25jZQA=",     /* one '=': 17 bytes */
    "dGhlIHNhbXBsZSBub25jZ===",     /* three '=' */
    "dGhlIHNhbXBsZSBub25jZR==",     /* leftover bits set: not a canonical 16 bytes */
    "dGhlIHNhbXBsZSBub25jZf==",
    "dGhlIHNhbXBsZSBub25jZ/==",
    "dGhlIHNhbXBsZSBub25j=Q==",     /* '=' inside */
    "dGhlIHNhbXBsZSBub25jZ-==",     /* base64url alphabet is not base64 */
    "dGhlIHNhbXBsZSBub25j_Q==",
    "dGhlIHNhbXBsZSB-b25jZQ==",
    "dGhl_HNhbXBsZSBub25jZQ==",
    "dGhlIHNhbXBsZSB.b25jZQ==",
    "dGhlIHNhbXBsZSBub25jZQ==\r",
    " dGhlIHNhbXBsZSBub25jZQ=",
    "dGhlIHNhbXBs ZSBub25jZQ=",
    "dGhlIHNhbXBsZSBu!25jZQ==",
    "dGhlIHNhbXBsZSBub25jZQ\xc3\xa9",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* 32 chars: 24 bytes */
    "AAAAAAAAAAAAAAAAAAAA",         /* 20 chars: 15 bytes */
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", /* 22 bytes */
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(bad); i++)
    cr_assert(!key_ok(bad[i]), "key %zu \"%s\" accepted", i, bad[i]);
  /* An embedded NUL within the stated length. */
  cr_assert(!ws_key_valid("dGhlIHNhbXBsZSB\0b25jZQ==", 24));
  /* The length given is what counts, not the NUL. */
  cr_assert(!ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==", 23));
}

Test(ws_handshake, key_valid_last_char_table) {
  /* Only A, Q, g, w leave the 4 spare bits zero. */
  char k[25] = "dGhlIHNhbXBsZSBub25jZQ==";
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  int n = 0;
  for (const char *c = b64; *c; c++) {
    k[21] = *c;
    int want = *c == 'A' || *c == 'Q' || *c == 'g' || *c == 'w';
    cr_assert_eq(!!ws_key_valid(k, 24), want, "last char '%c'", *c);
    n += want;
  }
  cr_assert_eq(n, 4);
}

/* ---- permessage-deflate offers (RFC 7692 7.1) ------------------------------- */

/* 1 when v has an acceptable offer; *bits gets its server_max_window_bits
 * and *asked whether the answer must carry it. */
static int neg(const char *v, int *bits, int *asked) {
  ws_pmd a;
  memset(&a, 0xAA, sizeof a);
  int ok = ws_pmd_negotiate(v, strlen(v), &a);
  if (ok) {
    if (bits) *bits = a.server_max_window_bits;
    if (asked) *asked = a.asked_server_bits;
  }
  return ok;
}

Test(ws_pmd_negotiate, accepted_offers) {
  static const char *ok[] = {
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",  /* what Chromium and Firefox send */
    "permessage-deflate;client_max_window_bits",
    "permessage-deflate ; client_max_window_bits = 10",
    "permessage-deflate; client_max_window_bits=15; server_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_max_window_bits=\"8\"",
    "permessage-deflate; server_max_window_bits=\"1\\2\"",
    "  permessage-deflate\t;\tserver_no_context_takeover  ",
    "x-webkit-deflate-frame, permessage-deflate",
    ", , permessage-deflate,",
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(ok); i++) cr_assert(neg(ok[i], NULL, NULL), "declined: %s", ok[i]);
}

Test(ws_pmd_negotiate, declined_offers) {
  static const char *bad[] = {
    "",
    "deflate-frame",
    "permessage-deflatex",
    "Permessage-Deflate",                                  /* tokens compare exactly */
    "permessage-deflate; unknown_param",
    "permessage-deflate; server_no_context_takeover=1",   /* no value allowed */
    "permessage-deflate; client_no_context_takeover=\"\"",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
    "permessage-deflate; server_max_window_bits",         /* needs a value */
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=010",     /* leading zero */
    "permessage-deflate; server_max_window_bits=08",
    "permessage-deflate; client_max_window_bits=0",
    "permessage-deflate; client_max_window_bits=1a",
    "permessage-deflate; client_max_window_bits=\"10",    /* unterminated quote */
    "permessage-deflate; client_max_window_bits=\"1 0\"", /* unquoted, not a token */
    "permessage-deflate; client_max_window_bits=",
    "permessage-deflate; =10",
    "permessage-deflate;",
    "permessage-deflate; ;",
    "permessage-deflate junk",
    "permessage-deflate; client_max_window_bits 10",
    "permessage-deflate; client_max_window_bits=10 junk",
    "permessage-deflate; server_max_window_bits=123456789012",
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(bad); i++) cr_assert(!neg(bad[i], NULL, NULL), "accepted: %s", bad[i]);
}

Test(ws_pmd_negotiate, first_acceptable_offer_wins) {
  int bits = 0, asked = 0;
  cr_assert(neg("permessage-deflate; server_max_window_bits=10, permessage-deflate", &bits, &asked));
  cr_assert_eq(bits, 10);
  cr_assert_eq(asked, 1);
  /* An invalid first offer is declined; the fallback is taken. */
  cr_assert(neg("permessage-deflate; server_max_window_bits=99, permessage-deflate; client_max_window_bits",
                &bits, &asked));
  cr_assert_eq(bits, 15);
  cr_assert_eq(asked, 0);
  /* A comma inside a quoted value does not split the list. */
  cr_assert(neg("foo; bar=\"a,b\", permessage-deflate; server_max_window_bits=\"12\"", &bits, &asked));
  cr_assert_eq(bits, 12);
  cr_assert(!neg("permessage-deflate; client_max_window_bits=\"1,0\"", NULL, NULL));
}

Test(ws_pmd_negotiate, window_bits_values) {
  for (int b = 8; b <= 15; b++) {
    char v[80];
    int bits = 0, asked = 0;
    snprintf(v, sizeof v, "permessage-deflate; server_max_window_bits=%d", b);
    cr_assert(neg(v, &bits, &asked), "%s", v);
    cr_assert_eq(bits, b);
    cr_assert_eq(asked, 1);
    snprintf(v, sizeof v, "permessage-deflate; client_max_window_bits=%d", b);
    cr_assert(neg(v, &bits, &asked), "%s", v);
    cr_assert_eq(bits, 15);
    cr_assert_eq(asked, 0);
  }
}

Test(ws_pmd_negotiate, response_text) {
  char out[160];
  ws_pmd a = {.server_max_window_bits = 15};
  size_t n = ws_pmd_response(&a, out, sizeof out);
  cr_assert_str_eq(out, "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
  cr_assert_eq(n, strlen(out));
  a = (ws_pmd){.server_max_window_bits = 10, .asked_server_bits = 1};
  ws_pmd_response(&a, out, sizeof out);
  cr_assert_str_eq(out, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                        "server_max_window_bits=10");
}
