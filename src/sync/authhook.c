/* authhook.c -- the authorization hook (hook.h; HOOKS.md): --auth-hook
 * is asked on every hello and on the joins the token's grants do not cover
 * (or on every join, --auth-hook-joins all), and answers allow or deny,
 * with grants for the session and a TTL for which the answer is cached.
 *
 * The question: {"action":"hello"|"join","user","device","room"(join),
 * "claims": the token's claims or null (demo mode)}. The answer: a 2xx with
 * {"allow": bool, "grants": {pattern: perms}?, "ttl": seconds?, "reason":
 * string?}. Anything else fails closed (hook_unavailable).
 *
 * The cache: (action, room, user, device, token) -> the answer, for its
 * TTL, at most --auth-hook-cache entries; when full, the oldest entry goes
 * (a ring of keys in insertion order). A failure is never cached. */
#include <openssl/sha.h>
#include <string.h>

#include "../common/log.h"
#include "../hooks/hclient.h"
#include "commit.h"
#include "fallback.h"
#include "hook.h"
#include "proto.h"
#include "room.h"

typedef struct ah_entry {
  int allow;
  json_t *grants;   /* validated, or NULL */
  char *reason;     /* or NULL */
  uint64_t expires; /* loop ms */
  size_t slot;      /* its key's position in the ring */
} ah_entry;

struct authhook {
  map cache;        /* key -> ah_entry* */
  char **ring;      /* keys, oldest at head */
  size_t cap, head, len;
};

enum { AH_HELLO, AH_JOIN };

typedef struct ah_wait {
  engine *e;
  sess *s;          /* a reference */
  json_t *req;      /* a reference */
  int action;
  char key[400];
  int http;         /* a hello by POST /v1/send: answered on http */
  conn *http_conn;  /* the deferred request; NULL once it went away */
  char *http_hdrs;
} ah_wait;

#define MAX_TTL_S 86400
#define RETRY_AFTER_MS 1000

static authhook *ah_get(engine *e) {
  if (!e->ah) {
    e->ah = wsy_calloc(1, sizeof *e->ah);
    map_init(&e->ah->cache);
    e->ah->cap = e->cfg->auth_hook_cache;
    e->ah->ring = e->ah->cap ? wsy_calloc(e->ah->cap, sizeof(char *)) : NULL;
  }
  return e->ah;
}

static void entry_free(ah_entry *en) {
  json_decref(en->grants);
  wsy_free(en->reason);
  wsy_free(en);
}

void authhook_free(engine *e) {
  authhook *ah = e->ah;
  if (!ah) return;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&ah->cache, &i, &k, &v);) entry_free(v);
  map_free(&ah->cache);
  for (size_t i = 0; i < ah->len; i++) wsy_free(ah->ring[(ah->head + i) % ah->cap]);
  wsy_free(ah->ring);
  wsy_free(ah);
  e->ah = NULL;
}

static void cache_put(engine *e, const char *key, int allow, json_t *grants, const char *reason, unsigned ttl_s) {
  authhook *ah = ah_get(e);
  if (!ah->cap || ttl_s == 0) return;
  ah_entry *old = map_del(&ah->cache, key);
  if (old) { /* its ring slot stays, and no longer matches an entry */
    wsy_free(ah->ring[old->slot]);
    ah->ring[old->slot] = NULL;
    entry_free(old);
  }
  if (ah->len == ah->cap) { /* full: the oldest goes */
    char *k = ah->ring[ah->head];
    if (k) entry_free(map_del(&ah->cache, k));
    wsy_free(k);
    ah->head = (ah->head + 1) % ah->cap;
    ah->len--;
  }
  ah_entry *en = wsy_calloc(1, sizeof *en);
  en->allow = allow;
  en->grants = grants ? json_incref(grants) : NULL;
  en->reason = reason ? wsy_strndup(reason, strlen(reason)) : NULL;
  en->expires = now_ms(e) + (uint64_t)ttl_s * 1000;
  en->slot = (ah->head + ah->len) % ah->cap;
  ah->ring[en->slot] = wsy_strndup(key, strlen(key));
  ah->len++;
  map_put(&ah->cache, key, en);
}

static ah_entry *cache_get(engine *e, const char *key) {
  authhook *ah = ah_get(e);
  ah_entry *en = map_get(&ah->cache, key);
  if (!en) return NULL;
  if (en->expires <= now_ms(e)) { /* expired: gone now; its ring slot is freed when reached */
    map_del(&ah->cache, key);
    wsy_free(ah->ring[en->slot]);
    ah->ring[en->slot] = NULL;
    entry_free(en);
    return NULL;
  }
  return en;
}

/* A grants object as a token's (HOOKS.md): 1 when well-formed. */
static int grants_ok(json_t *g) {
  if (!json_is_object(g) || json_object_size(g) > 256) return 0;
  const char *k;
  json_t *v;
  json_object_foreach(g, k, v) {
    char spec[200];
    auth_grant ag;
    if (!json_is_string(v) || strlen(k) > 128 || json_string_length(v) > 2) return 0;
    snprintf(spec, sizeof spec, "%s=%s", k, json_string_value(v));
    if (auth_grant_parse(spec, &ag) != 0) return 0;
    wsy_free(ag.pattern);
  }
  return 1;
}

static void make_key(sess *s, int action, const char *rname, char *out, size_t n) {
  snprintf(out, n, "%s\x1f%s\x1f%s\x1f%s\x1f%s", action == AH_HELLO ? "hello" : "join", rname ? rname : "",
           s->id.user, s->device, s->hk ? s->hk->tokh : "");
}

/* The hello refused because the hook could not answer: retryable, so the
 * connection closes with 1013 (try again later), not 1008. */
static void refuse_unavailable(sess *s, json_t *req) {
  conn_event(s->e, s, NULL, "hello refused", "code", "hook_unavailable", (const char *)NULL);
  sess_error(s, req, "hook_unavailable", "the authorization hook did not answer; retry later", NULL,
             json_pack("{s:i}", "retry_after", RETRY_AFTER_MS));
  if (s->e->cap) snprintf(s->e->cap->code, sizeof s->e->cap->code, "%s", "hook_unavailable");
  if (s->w) ws_close(s->w, WS_CLOSE_TRY_AGAIN_LATER, "hook_unavailable");
}

/* Applies a decision (allow 1, deny 0, failure -1) to the waiting request. */
static void decide(sess *s, json_t *req, int action, int allow, json_t *grants, const char *reason) {
  if (action == AH_HELLO) {
    if (allow > 0) {
      if (grants) sess_add_grants(s, grants);
      sess_hello_finish(s, req);
    } else if (allow == 0) {
      sess_refuse(s, req, "forbidden", reason ? reason : "the authorization hook denied this session");
    } else {
      refuse_unavailable(s, req);
    }
    return;
  }
  const char *rname = jstr(req, "room");
  if (allow > 0) {
    if (grants) sess_add_grants(s, grants);
    if (!(sess_perms(s, rname) & AUTH_READ)) { /* allowed, and no grant said how: read and write */
      json_t *g = json_pack("{s:s}", rname, "rw");
      sess_add_grants(s, g);
      json_decref(g);
    }
    int was = room_membership(s, rname) != NULL;
    join_handle_asked(s, req);
    if (!was && room_membership(s, rname)) /* as proto_dispatch logs the joins it sees through */
      conn_event(s->e, s, NULL, "join", "room", rname, "by", "auth-hook", (const char *)NULL);
  } else if (allow == 0) {
    sess_error(s, req, "forbidden", reason ? reason : "the authorization hook denied this join", NULL, NULL);
  } else {
    sess_error(s, req, "hook_unavailable", "the authorization hook did not answer; retry later", NULL,
               json_pack("{s:i}", "retry_after", RETRY_AFTER_MS));
  }
}

static void wait_free(ah_wait *w) {
  if (w->s->hk && w->s->hk->ah == w) w->s->hk->ah = NULL;
  sess_unref(w->s);
  json_decref(w->req);
  wsy_free(w->http_hdrs);
  wsy_free(w);
}

static void on_answer(void *ud, const hclient_resp *r) {
  ah_wait *w = ud;
  engine *e = w->e;
  sess *s = w->s;
  e->hook_inflight--;
  if (e->hooks_closing) {
    if (w->http_conn) { /* answered, so that the connection lets go of w->http_conn */
      static const char body[] = "{\"type\":\"error\",\"code\":\"hook_unavailable\",\"message\":\"the server is "
                                 "shutting down\",\"retry_after\":1000}";
      char h[1100];
      snprintf(h, sizeof h, "Cache-Control: no-store\r\n%s", w->http_hdrs);
      httpd_deferred_answer(w->http_conn, 503, "application/json", h, body, sizeof body - 1);
    }
    if (w->http) sess_unref(s); /* the request's reference */
    wait_free(w);
    return;
  }
  char why[160] = "";
  json_t *a = hook_answer_json(r, why, sizeof why);
  json_t *allowj = json_object_get(a, "allow"), *grants = json_object_get(a, "grants");
  json_t *ttlj = json_object_get(a, "ttl"), *reasonj = json_object_get(a, "reason");
  int allow = -1;
  if (a && !json_is_boolean(allowj)) snprintf(why, sizeof why, "allow is not a boolean");
  else if (a && grants && !grants_ok(grants)) snprintf(why, sizeof why, "grants is malformed");
  else if (a && ttlj && (!json_is_integer(ttlj) || json_integer_value(ttlj) < 0))
    snprintf(why, sizeof why, "ttl is not a non-negative integer");
  else if (a && reasonj && (!json_is_string(reasonj) || json_string_length(reasonj) > 200))
    snprintf(why, sizeof why, "reason is not a string of at most 200 bytes");
  else if (a) allow = json_is_true(allowj);
  const char *reason = json_string_value(reasonj);
  if (allow < 0) {
    e->hook_failures++;
    log_warn("auth hook: %s for %s of %s:%s%s%s: refused with hook_unavailable", why,
             w->action == AH_HELLO ? "hello" : "join", s->id.user, s->device, w->action == AH_JOIN ? " in " : "",
             w->action == AH_JOIN ? jstr(w->req, "room") : "");
  } else {
    json_int_t ttl = ttlj ? json_integer_value(ttlj) : 0;
    cache_put(e, w->key, allow, grants, reason, (unsigned)(ttl > MAX_TTL_S ? MAX_TTL_S : ttl));
  }
  /* A hello whose client went away meanwhile is not continued. */
  int gone = s->ended || (w->action == AH_HELLO && (w->http ? !w->http_conn : !s->w));
  if (!gone && w->http) {
    capture cap = {0};
    buf_init(&cap.text, SIZE_MAX);
    e->cap = &cap;
    decide(s, w->req, w->action, allow, grants, reason);
    e->cap = NULL;
    fb_hello_answer(e, w->http_conn, &cap, s, w->http_hdrs, 1); /* takes the request's reference */
    buf_free(&cap.text);
  } else if (!gone) {
    decide(s, w->req, w->action, allow, grants, reason);
  } else if (w->http) {
    sess_unref(s);
  }
  json_decref(a);
  s->refs++;
  wait_free(w);
  hook_hold_release(s);
  sess_unref(s);
}

/* Asks the hook; 1 (waiting), or -1 after refusing (the hook cannot be asked). */
static int ask(sess *s, json_t *req, int action, const char *rname, const char *key) {
  engine *e = s->e;
  json_t *q = json_pack("{s:s,s:s,s:s}", "action", action == AH_HELLO ? "hello" : "join", "user", s->id.user,
                        "device", s->device);
  if (rname) json_object_set_new(q, "room", json_string(rname));
  json_t *claims = s->hk ? s->hk->claims : NULL;
  json_object_set(q, "claims", claims ? claims : json_null());
  ah_wait *w = wsy_calloc(1, sizeof *w);
  w->e = e;
  w->s = s;
  s->refs++;
  w->req = json_incref(req);
  w->action = action;
  snprintf(w->key, sizeof w->key, "%s", key);
  e->hook_calls++;
  int rc = hook_post(e, e->cfg->auth_hook, q, e->cfg->auth_hook_timeout_ms, on_answer, w);
  json_decref(q);
  if (rc != 0) {
    e->hook_failures++;
    wait_free(w);
    decide(s, req, action, -1, NULL, NULL);
    return -1;
  }
  e->hook_inflight++;
  s->hold++;
  sess_hook_of(s)->ah = w;
  return 1;
}

int authhook_hello(sess *s, json_t *req, const char *token) {
  if (token) {
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)token, strlen(token), md);
    char *tokh = sess_hook_of(s)->tokh;
    for (int i = 0; i < 8; i++) snprintf(tokh + 2 * i, 3, "%02x", md[i]);
  }
  char key[400];
  make_key(s, AH_HELLO, NULL, key, sizeof key);
  ah_entry *en = cache_get(s->e, key);
  if (en) {
    s->e->hook_cache_hits++;
    if (en->allow && en->grants) sess_add_grants(s, en->grants);
    if (en->allow) return 0;
    decide(s, req, AH_HELLO, 0, NULL, en->reason);
    return -1;
  }
  return ask(s, req, AH_HELLO, NULL, key);
}

int authhook_join_asks(sess *s, const char *name) {
  const wsy_config *cfg = s->e->cfg;
  if (!cfg->auth_hook || !strncmp(name, "user:", 5)) return 0;
  return cfg->auth_hook_all_joins || !(sess_perms(s, name) & AUTH_READ);
}

int authhook_join(sess *s, json_t *req, const char *name) {
  char key[400];
  make_key(s, AH_JOIN, name, key, sizeof key);
  ah_entry *en = cache_get(s->e, key);
  if (en) {
    s->e->hook_cache_hits++;
    if (en->allow) {
      json_t *g = en->grants ? json_incref(en->grants) : NULL; /* the entry may go while applying */
      if (g) sess_add_grants(s, g);
      json_decref(g);
      if (!(sess_perms(s, name) & AUTH_READ)) {
        json_t *rw = json_pack("{s:s}", name, "rw");
        sess_add_grants(s, rw);
        json_decref(rw);
      }
      return 0;
    }
    sess_error(s, req, "forbidden", en->reason ? en->reason : "the authorization hook denied this join", NULL,
               NULL);
    return -1;
  }
  return ask(s, req, AH_JOIN, name, key);
}

void authhook_defer_http(sess *s, conn *c, const char *hdrs) {
  ah_wait *w = s->hk ? s->hk->ah : NULL;
  if (!w) return;
  w->http = 1;
  w->http_hdrs = wsy_strndup(hdrs, strlen(hdrs));
  httpd_defer(c, &w->http_conn);
}
