/* auth_int.h -- private to src/auth: the JOSE pieces behind auth_verify_cfg
 * and auth_mint_pem (jose.c). */
#ifndef WSY_AUTH_INT_H
#define WSY_AUTH_INT_H

#include "auth.h"

/* The algorithms a token may name; everything else is AUTH_BAD_ALG. */
typedef enum { AUTH_ALG_NONE = 0, AUTH_ALG_HS256, AUTH_ALG_RS256, AUTH_ALG_ES256, AUTH_ALG_EDDSA } auth_alg;

auth_alg auth_alg_parse(const char *name);
const char *auth_alg_name(auth_alg a);

/* base64url without padding (RFC 7515 2). decode: a new buffer (wsy_free)
 * and its length, or NULL when in[0..n) is not base64url. */
uint8_t *auth_b64url_decode(const char *in, size_t n, size_t *outlen);
char *auth_b64url_encode(const uint8_t *in, size_t n);

/* Checks sig over signing_input with the JWKS key for (alg, kid): AUTH_OK,
 * AUTH_BAD_SIGNATURE, AUTH_UNKNOWN_KEY (no such kid, or no single key of
 * alg's type without one) or AUTH_BAD_ALG (the kid names a key of another
 * type). */
auth_result auth_jws_verify(const auth_jwks *ks, auth_alg alg, const char *kid, const char *signing_input,
                            size_t input_len, const uint8_t *sig, size_t sig_len);
/* header.payload.signature for payload_json, signed with the PEM private
 * key (RSA -> RS256, EC P-256 -> ES256, Ed25519 -> EdDSA). malloc'd, or
 * NULL with err set. */
char *auth_jws_sign_pem(const char *pem, size_t pem_len, const char *kid, const char *payload_json, char *err,
                        size_t errlen);

#endif
