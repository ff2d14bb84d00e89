/* handshake.c -- the pieces of the opening handshake that are pure
 * functions: validating Sec-WebSocket-Key and computing the accept value. */
#include "ws.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>

static const char GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"; /* RFC 6455 1.3 */

static int b64char(int c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '+' || c == '/';
}

int ws_key_valid(const char *key, size_t len) {
  /* 16 bytes encode to 22 base64 characters and "==". The last character
   * before the padding carries 2 bits of data and 4 zero bits. */
  if (len != 24 || key[22] != '=' || key[23] != '=') return 0;
  for (size_t i = 0; i < 22; i++)
    if (!b64char((unsigned char)key[i])) return 0;
  return strchr("AQgw", key[21]) != NULL;
}

void ws_accept_key(const char *key, size_t len, char out[29]) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  /* SHA-1 is what RFC 6455 specifies here; OpenSSL 3 still provides it. */
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned int dlen = 0;
  EVP_DigestInit_ex(md, EVP_sha1(), NULL);
  EVP_DigestUpdate(md, key, len);
  EVP_DigestUpdate(md, GUID, sizeof GUID - 1);
  EVP_DigestFinal_ex(md, digest, &dlen);
  EVP_MD_CTX_free(md);
  EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
  out[28] = '\0';
}
