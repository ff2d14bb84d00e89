/* hclient.h -- the HTTP client of wsync's hooks: POST a body, get the answer
 * back on the loop. Shared by the webhook dispatcher and the auth/op hooks.
 *
 * Threads: loop thread only. libcurl's multi interface is driven by the
 * libuv loop (uv_poll per socket, one uv_timer for curl's timeouts), so no
 * call here ever blocks: name resolution runs in curl's resolver thread,
 * connects, TLS and transfers are non-blocking. Connections are kept alive
 * and reused across requests to the same host (curl's connection cache).
 * Schemes: http:// and https:// only; redirects are not followed (a 3xx is
 * an answer like any other status).
 *
 * Ownership: hclient_post copies the URL, the headers and the body, so the
 * caller's buffers are free the moment it returns. The response handed to a
 * callback is borrowed and valid only during the call.
 *
 * Errors (hclient_resp.rc): 0 when an HTTP answer came, whatever its status;
 * WSY_TOO_LARGE when the answer's body passed HCLIENT_MAX_BODY; WSY_IO for
 * everything else (refused, reset, DNS, TLS, timeout, and requests canceled
 * by hclient_close). hclient_post itself returns WSY_INVAL for a URL that is
 * not http(s) and WSY_CLOSED after hclient_close. */
#ifndef WSY_HCLIENT_H
#define WSY_HCLIENT_H

#include <stddef.h>
#include <uv.h>

#include "../common/wsy.h"

/* Larger response bodies fail with WSY_TOO_LARGE: hooks answer with small
 * JSON, and a receiver must not make wsync buffer without bound. */
#define HCLIENT_MAX_BODY (64 * 1024)

typedef struct hclient hclient;

typedef struct hclient_resp {
  int rc;           /* 0 or a negative wsy_err, see above */
  long status;      /* HTTP status when rc == 0, else 0 */
  const char *body; /* rc == 0: the body, NUL-terminated (not counted) */
  size_t body_len;
} hclient_resp;

/* Runs later on the loop thread, never inside hclient_post; r is borrowed. */
typedef void (*hclient_cb)(void *ud, const hclient_resp *r);

/* A client on loop. Aborts only if libcurl cannot be set up at all. */
hclient *hclient_new(uv_loop_t *loop);

/* POST len bytes of body to url with the extra headers (NULL-terminated
 * "Name: value" strings; NULL for none) and a whole-request timeout in ms
 * (0: no timeout). Sends "Content-Type: application/json" unless headers
 * name another one. Returns 0 and calls cb exactly once later, or returns a
 * negative wsy_err and never calls cb. */
int hclient_post(hclient *c, const char *url, const char *const *headers, const char *body,
                 size_t len, unsigned timeout_ms, hclient_cb cb, void *ud) WSY_WUR;

/* Requests in flight (not answered yet). */
size_t hclient_pending(const hclient *c);

/* Cancels every request in flight: each cb runs with rc WSY_IO before
 * hclient_close returns (so a caller may call it from inside a cb and still
 * see every other cb first). c is freed once the loop has closed its
 * handles; the loop must run once more for that. NULL is a no-op. */
void hclient_close(hclient *c);

#endif
