/* hook.c -- what the authorization hook and the op hook share (hook.h):
 * the client, the signed POST, reading an answer, and the hold of a
 * session whose messages wait for the authorization hook. */
#include "hook.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "../common/log.h"
#include "../hooks/hclient.h"
#include "proto.h"

int hook_init(engine *e, char *err, size_t errlen) {
  const wsy_config *cfg = e->cfg;
  map_init(&e->opq);
  if (!cfg->auth_hook && cfg->op_hooks.n == 0) return 0;
  e->hc = hclient_new(e->loop);
  if (!e->hc) {
    snprintf(err, errlen, "the HTTP client of the hooks could not be made");
    return WSY_IO;
  }
  return 0;
}

void hook_deinit(engine *e) {
  e->hooks_closing = 1; /* what is cancelled now is released, not decided */
  if (e->hc) hclient_close(e->hc);
  e->hc = NULL;
}

/* The signature a receiver recomputes (HOOKS.md): HMAC-SHA256 with the
 * secret over "<timestamp>.<body>", hex. The timestamp is signed with the
 * body so an old request cannot be replayed with a new time. */
static void sign(const char *secret, const char *ts, const char *body, size_t len, char out[65]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  size_t tl = strlen(ts);
  char *msg = wsy_malloc(tl + 1 + len);
  memcpy(msg, ts, tl);
  msg[tl] = '.';
  memcpy(msg + tl + 1, body, len);
  HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, tl + 1 + len, md, &mdlen);
  wsy_free(msg);
  for (unsigned i = 0; i < mdlen && i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

int hook_post(engine *e, const char *url, json_t *body, unsigned timeout_ms,
              void (*cb)(void *ud, const hclient_resp *r), void *ud) {
  if (!e->hc || e->hooks_closing) return WSY_CLOSED;
  char *text = jw_dumps(body);
  size_t len = strlen(text);
  char ts[32], hts[64], hsig[128];
  const char *hdrs[3]; /* hclient adds Content-Type: application/json */
  size_t n = 0;
  const char *secret = e->cfg->hook_secret;
  if (secret && *secret) {
    char sig[65] = "";
    snprintf(ts, sizeof ts, "%lld", (long long)(wall_ms() / 1000));
    sign(secret, ts, text, len, sig);
    snprintf(hts, sizeof hts, "Wsync-Timestamp: %s", ts);
    snprintf(hsig, sizeof hsig, "Wsync-Signature: v1=%s", sig);
    hdrs[n++] = hts;
    hdrs[n++] = hsig;
  }
  hdrs[n] = NULL;
  int rc = hclient_post(e->hc, url, hdrs, text, len, timeout_ms, cb, ud);
  free(text);
  return rc;
}

json_t *hook_answer_json(const hclient_resp *r, char *why, size_t whylen) {
  if (r->rc != 0) {
    snprintf(why, whylen, "no answer: %s", wsy_strerror(r->rc));
    return NULL;
  }
  if (r->status < 200 || r->status > 299) {
    snprintf(why, whylen, "status %ld", r->status);
    return NULL;
  }
  json_error_t jerr;
  json_t *j = r->body_len ? json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
  if (!json_is_object(j)) {
    json_decref(j);
    snprintf(why, whylen, "the answer is not a JSON object");
    return NULL;
  }
  return j;
}

/* At most this many messages wait behind a held session: a client that
 * sends more while one of its messages waits (for the authorization hook,
 * its room's presence, a read of its room, a commit in flight) is refused
 * them. Past HOLD_PAUSE waiting, the session's WebSocket is not read until
 * they have gone on: a pipelining client is slowed by TCP, not refused. */
#define HOLD_MAX 4096
#define HOLD_PAUSE 64

void hook_hold_push(sess *s, json_t *req) {
  sess_hook *h = sess_hook_of(s);
  if (!h->held) h->held = json_array();
  if (s->w && json_array_size(h->held) >= HOLD_PAUSE) net_conn_pause(ws_conn_net(s->w));
  if (json_array_size(h->held) >= HOLD_MAX) {
    if (s->welcomed)
      sess_error(s, req, "rate_limited", "too many messages while waiting for the session's earlier ones", NULL,
                 json_pack("{s:i}", "retry_after", 1000));
    return;
  }
  json_array_append(h->held, req);
}

void hook_hold_front(sess *s, json_t *req) {
  sess_hook *h = sess_hook_of(s);
  if (!h->held) h->held = json_array();
  json_array_insert(h->held, 0, req);
  s->hold++;
}

void hook_hold_release(sess *s) {
  if (s->hold) s->hold--;
  s->refs++; /* a bye among the messages ends the session under this loop */
  while (!s->hold && s->hk && s->hk->held && json_array_size(s->hk->held) && !s->ended &&
         !s->e->hooks_closing) {
    if (!s->welcomed) break; /* the hello was refused: what followed it is dropped */
    json_t *m = json_incref(json_array_get(s->hk->held, 0));
    json_array_remove(s->hk->held, 0);
    proto_dispatch(s, m);
    json_decref(m);
  }
  if (!s->hold && s->hk && s->hk->held) json_array_clear(s->hk->held);
  if (s->w && !s->ended && (!s->hk || !s->hk->held || json_array_size(s->hk->held) < HOLD_PAUSE / 2))
    net_conn_resume(ws_conn_net(s->w));
  sess_unref(s);
}
