/* jose.c -- the public-key side of tokens (auth.h): JWKS documents parsed
 * into OpenSSL keys, signatures checked and made for RS256, ES256 and
 * EdDSA (Ed25519), and base64url.
 *
 * Written here rather than taken from libjwt: Debian's libjwt (1.10) has
 * no JWKS and no EdDSA, and picks the algorithm from the token it is
 * given. The cryptography is OpenSSL's; this file only maps JOSE's
 * encodings onto it (RFC 7515, 7517, 7518, 8037). Each key is bound to one
 * algorithm by its type, so a token can never choose how its key is used. */
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_int.h"

/* ---- base64url ------------------------------------------------------------ */

uint8_t *auth_b64url_decode(const char *in, size_t n, size_t *outlen) {
  if (n > 65536) return NULL;
  char *b64 = wsy_malloc(n + 4);
  for (size_t i = 0; i < n; i++) {
    char c = in[i];
    if (c == '+' || c == '/' || c == '=') { /* standard alphabet or padding: not base64url */
      wsy_free(b64);
      return NULL;
    }
    b64[i] = c == '-' ? '+' : c == '_' ? '/' : c;
  }
  size_t m = n;
  if (m % 4 == 1) {
    wsy_free(b64);
    return NULL;
  }
  while (m % 4) b64[m++] = '=';
  uint8_t *out = wsy_malloc(m / 4 * 3 + 1);
  int rl = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)m);
  wsy_free(b64);
  if (rl < 0) {
    wsy_free(out);
    return NULL;
  }
  *outlen = (size_t)rl - (m - n); /* EVP_DecodeBlock counts padding as zero bytes */
  return out;
}

char *auth_b64url_encode(const uint8_t *in, size_t n) {
  char *out = wsy_malloc((n + 2) / 3 * 4 + 1);
  int l = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
  while (l > 0 && out[l - 1] == '=') l--;
  out[l] = '\0';
  for (int i = 0; i < l; i++) out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
  return out;
}

/* A base64url member of a JWK, decoded; NULL when absent or malformed. */
static uint8_t *jwk_bytes(json_t *jwk, const char *name, size_t *len) {
  const char *v = json_string_value(json_object_get(jwk, name));
  return v ? auth_b64url_decode(v, strlen(v), len) : NULL;
}

/* ---- JWKS ----------------------------------------------------------------- */

typedef struct jwks_key {
  char *kid;       /* NULL when the JWK has none */
  auth_alg alg;
  EVP_PKEY *pkey;
} jwks_key;

struct auth_jwks {
  jwks_key *keys;
  size_t n;
};

static EVP_PKEY *rsa_key(json_t *jwk) {
  size_t nl, el;
  uint8_t *n = jwk_bytes(jwk, "n", &nl), *e = jwk_bytes(jwk, "e", &el);
  EVP_PKEY *pkey = NULL;
  if (n && e && nl >= 256 && nl <= 1024) { /* 2048 to 8192-bit moduli */
    BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (bn && be && bld && ctx && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) && (params = OSSL_PARAM_BLD_to_param(bld)) &&
        EVP_PKEY_fromdata_init(ctx) == 1)
      (void)EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    BN_free(bn);
    BN_free(be);
  }
  wsy_free(n);
  wsy_free(e);
  return pkey;
}

static EVP_PKEY *ec_key(json_t *jwk) {
  size_t xl, yl;
  uint8_t *x = jwk_bytes(jwk, "x", &xl), *y = jwk_bytes(jwk, "y", &yl);
  EVP_PKEY *pkey = NULL;
  if (x && y && xl == 32 && yl == 32) {
    uint8_t point[65];
    point[0] = 0x04; /* uncompressed */
    memcpy(point + 1, x, 32);
    memcpy(point + 33, y, 32);
    OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point),
      OSSL_PARAM_construct_end(),
    };
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (ctx && EVP_PKEY_fromdata_init(ctx) == 1) (void)EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(ctx);
  }
  wsy_free(x);
  wsy_free(y);
  return pkey;
}

static EVP_PKEY *okp_key(json_t *jwk) {
  size_t xl;
  uint8_t *x = jwk_bytes(jwk, "x", &xl);
  EVP_PKEY *pkey = x && xl == 32 ? EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xl) : NULL;
  wsy_free(x);
  return pkey;
}

static const char *const alg_names[] = {[AUTH_ALG_HS256] = "HS256", [AUTH_ALG_RS256] = "RS256",
                                        [AUTH_ALG_ES256] = "ES256", [AUTH_ALG_EDDSA] = "EdDSA"};

auth_alg auth_alg_parse(const char *name) {
  for (int a = AUTH_ALG_HS256; a <= AUTH_ALG_EDDSA; a++)
    if (name && !strcmp(name, alg_names[a])) return (auth_alg)a;
  return AUTH_ALG_NONE;
}

const char *auth_alg_name(auth_alg a) { return a >= AUTH_ALG_HS256 && a <= AUTH_ALG_EDDSA ? alg_names[a] : "?"; }

void auth_jwks_free(auth_jwks *ks) {
  if (!ks) return;
  for (size_t i = 0; i < ks->n; i++) {
    wsy_free(ks->keys[i].kid);
    EVP_PKEY_free(ks->keys[i].pkey);
  }
  wsy_free(ks->keys);
  wsy_free(ks);
}

size_t auth_jwks_count(const auth_jwks *ks) { return ks ? ks->n : 0; }

int auth_jwks_parse(const char *text, size_t len, auth_jwks **out, char *err, size_t errlen) {
  *out = NULL;
  json_error_t jerr;
  json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  json_t *keys = json_object_get(doc, "keys");
  if (!json_is_array(keys)) {
    snprintf(err, errlen, "not a JWKS document (an object with a \"keys\" array)%s%s", doc ? "" : ": ",
             doc ? "" : jerr.text);
    json_decref(doc);
    return WSY_INVAL;
  }
  auth_jwks *ks = wsy_calloc(1, sizeof *ks);
  ks->keys = wsy_calloc(json_array_size(keys) + 1, sizeof *ks->keys);
  size_t i;
  json_t *jwk;
  json_array_foreach(keys, i, jwk) {
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    const char *use = json_string_value(json_object_get(jwk, "use"));
    const char *alg = json_string_value(json_object_get(jwk, "alg"));
    json_t *kid = json_object_get(jwk, "kid");
    auth_alg a = AUTH_ALG_NONE;
    EVP_PKEY *pkey = NULL;
    if (use && strcmp(use, "sig") != 0) continue; /* an encryption key: not for tokens */
    if (kty && !strcmp(kty, "RSA")) a = AUTH_ALG_RS256, pkey = rsa_key(jwk);
    else if (kty && !strcmp(kty, "EC") && crv && !strcmp(crv, "P-256")) a = AUTH_ALG_ES256, pkey = ec_key(jwk);
    else if (kty && !strcmp(kty, "OKP") && crv && !strcmp(crv, "Ed25519")) a = AUTH_ALG_EDDSA, pkey = okp_key(jwk);
    else {
      snprintf(err, errlen, "key %zu: unsupported key type (RSA, EC P-256 and OKP Ed25519 are)", i);
      auth_jwks_free(ks);
      json_decref(doc);
      return WSY_INVAL;
    }
    if (!pkey || (alg && auth_alg_parse(alg) != a) || (kid && !json_is_string(kid))) {
      snprintf(err, errlen, "key %zu (%s%s%s): %s", i, kty, kid ? " " : "", kid ? json_string_value(kid) : "",
               !pkey ? "malformed or too small key" : alg && auth_alg_parse(alg) != a ? "alg does not fit the key type"
                                                                                        : "kid is not a string");
      EVP_PKEY_free(pkey);
      auth_jwks_free(ks);
      json_decref(doc);
      return WSY_INVAL;
    }
    jwks_key *k = &ks->keys[ks->n++];
    k->alg = a;
    k->pkey = pkey;
    k->kid = kid ? wsy_strndup(json_string_value(kid), json_string_length(kid)) : NULL;
  }
  json_decref(doc);
  if (ks->n == 0) {
    snprintf(err, errlen, "no signing key in the JWKS document");
    auth_jwks_free(ks);
    return WSY_INVAL;
  }
  *out = ks;
  return 0;
}

/* The key for a token's alg and kid: with a kid, the key of that kid, which
 * must be of alg's type; without one, the only key of alg's type. */
static const jwks_key *find_key(const auth_jwks *ks, auth_alg alg, const char *kid, auth_result *why) {
  const jwks_key *found = NULL;
  size_t matches = 0;
  for (size_t i = 0; ks && i < ks->n; i++) {
    const jwks_key *k = &ks->keys[i];
    if (kid) {
      if (!k->kid || strcmp(k->kid, kid) != 0) continue;
      if (k->alg != alg) {
        *why = AUTH_BAD_ALG; /* the kid names a key of another type: never mixed */
        return NULL;
      }
      return k;
    }
    if (k->alg == alg) found = k, matches++;
  }
  *why = AUTH_UNKNOWN_KEY;
  return matches == 1 ? found : NULL;
}

/* ES256 signatures are r || s, 32 bytes each (RFC 7518 3.4); OpenSSL
 * speaks DER. */
static uint8_t *es256_to_der(const uint8_t *sig, size_t *len) {
  ECDSA_SIG *es = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
  uint8_t *der = NULL;
  if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
    r = s = NULL; /* owned by es now */
    int n = i2d_ECDSA_SIG(es, NULL);
    if (n > 0) {
      der = wsy_malloc((size_t)n);
      uint8_t *p = der;
      *len = (size_t)i2d_ECDSA_SIG(es, &p);
    }
  }
  BN_free(r);
  BN_free(s);
  ECDSA_SIG_free(es);
  return der;
}

auth_result auth_jws_verify(const auth_jwks *ks, auth_alg alg, const char *kid, const char *signing_input,
                            size_t input_len, const uint8_t *sig, size_t sig_len) {
  auth_result why;
  const jwks_key *k = find_key(ks, alg, kid, &why);
  if (!k) return why;
  uint8_t *der = NULL;
  if (alg == AUTH_ALG_ES256) {
    if (sig_len != 64) return AUTH_BAD_SIGNATURE;
    der = es256_to_der(sig, &sig_len);
    if (!der) return AUTH_BAD_SIGNATURE;
    sig = der;
  } else if (alg == AUTH_ALG_EDDSA && sig_len != 64) {
    return AUTH_BAD_SIGNATURE;
  }
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, alg == AUTH_ALG_EDDSA ? NULL : EVP_sha256(), NULL, k->pkey) == 1 &&
           EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)signing_input, input_len) == 1;
  EVP_MD_CTX_free(ctx);
  wsy_free(der);
  return ok ? AUTH_OK : AUTH_BAD_SIGNATURE;
}

/* ---- signing (wsync token --key) ------------------------------------------ */

char *auth_jws_sign_pem(const char *pem, size_t pem_len, const char *kid, const char *payload_json, char *err,
                        size_t errlen) {
  BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
  EVP_PKEY *pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  BIO_free(bio);
  if (!pkey) {
    snprintf(err, errlen, "not a PEM private key");
    return NULL;
  }
  auth_alg alg = EVP_PKEY_is_a(pkey, "RSA")       ? AUTH_ALG_RS256
                 : EVP_PKEY_is_a(pkey, "ED25519") ? AUTH_ALG_EDDSA
                 : EVP_PKEY_is_a(pkey, "EC")      ? AUTH_ALG_ES256
                                                  : AUTH_ALG_NONE;
  char group[32] = "";
  if (alg == AUTH_ALG_ES256 &&
      (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL) ||
       strcmp(group, "prime256v1") != 0))
    alg = AUTH_ALG_NONE;
  if (alg == AUTH_ALG_NONE) {
    snprintf(err, errlen, "the key must be RSA, EC P-256 or Ed25519");
    EVP_PKEY_free(pkey);
    return NULL;
  }
  json_t *h = json_pack("{s:s,s:s}", "alg", auth_alg_name(alg), "typ", "JWT");
  if (kid) json_object_set_new(h, "kid", json_string(kid));
  char *hj = json_dumps(h, JSON_COMPACT);
  json_decref(h);
  char *h64 = auth_b64url_encode((const uint8_t *)hj, strlen(hj));
  char *p64 = auth_b64url_encode((const uint8_t *)payload_json, strlen(payload_json));
  free(hj);
  size_t il = strlen(h64) + 1 + strlen(p64);
  char *input = wsy_malloc(il + 1);
  snprintf(input, il + 1, "%s.%s", h64, p64);
  wsy_free(h64);
  wsy_free(p64);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  size_t sl = 0;
  uint8_t *sig = NULL;
  char *out = NULL;
  if (ctx && EVP_DigestSignInit(ctx, NULL, alg == AUTH_ALG_EDDSA ? NULL : EVP_sha256(), NULL, pkey) == 1 &&
      EVP_DigestSign(ctx, NULL, &sl, (const unsigned char *)input, il) == 1) {
    sig = wsy_malloc(sl);
    if (EVP_DigestSign(ctx, sig, &sl, (const unsigned char *)input, il) != 1) sl = 0;
  }
  if (sl && alg == AUTH_ALG_ES256) { /* DER -> r || s */
    const uint8_t *p = sig;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sl);
    uint8_t rs[64];
    sl = es && BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32) == 32 && BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32) == 32
             ? 64
             : 0;
    if (sl) memcpy(sig, rs, 64);
    ECDSA_SIG_free(es);
  }
  if (sl) {
    char *s64 = auth_b64url_encode(sig, sl);
    size_t ol = il + 1 + strlen(s64) + 1;
    out = malloc(ol);
    if (out) snprintf(out, ol, "%s.%s", input, s64);
    wsy_free(s64);
  } else {
    snprintf(err, errlen, "could not sign with the key");
  }
  wsy_free(sig);
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pkey);
  wsy_free(input);
  return out;
}
