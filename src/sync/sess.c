/* sess.c -- sessions (sess.h): the outbox and sending, hello and resume,
 * ending, reaping and expiry. */
#include "sess.h"

#include <string.h>

#include "../common/log.h"
#include "fallback.h"
#include "hook.h"
#include "opfwd.h"
#include "room.h"

/* An idle session is mostly this struct, its first membership included
 * (docs/PERFORMANCE.md, issue 15): 320 bytes is a mimalloc size class; the
 * next is 384. */
_Static_assert(sizeof(struct sess) <= 320, "struct sess grew past its size class");

const char *sess_key_token(const void *s) { return ((const sess *)s)->token; }
const char *sess_key_dkey(const void *s) { return ((const sess *)s)->dkey; }

sess *sess_new(engine *e, ws_conn *w) {
  sess *s = wsy_calloc(1, sizeof *s);
  s->e = e;
  s->w = w;
  s->refs = 1;
  s->device = "";
  s->opened = now_ms(e);
  return s;
}

sess_hook *sess_hook_of(sess *s) {
  if (!s->hk) s->hk = wsy_calloc(1, sizeof *s->hk);
  return s->hk;
}

sess_http *sess_http_on(sess *s) {
  if (!s->hx) {
    s->hx = wsy_calloc(1, sizeof *s->hx);
    s->hx->dn_lost = now_ms(s->e);
  }
  s->http = 1;
  return s->hx;
}

/* ---- the outbox ---------------------------------------------------------- */

/* The bytes sessions hold themselves (their frames and entries), counted
 * for the whole engine only. */
static void ob_mem(sess *s, ptrdiff_t delta) { s->e->outbox_mem += (size_t)delta; }

static ob_ent *ob_at(sess *s, uint32_t i) { return &s->ob[(s->ob_head + i) & (s->ob_cap - 1)]; }

static ob_ent *ob_append(sess *s) {
  if (s->ob_len == s->ob_cap) {
    uint32_t cap = s->ob_cap ? s->ob_cap * 2 : 1;
    ob_ent *q = wsy_malloc(cap * sizeof *q);
    for (uint32_t i = 0; i < s->ob_len; i++) q[i] = *ob_at(s, i);
    wsy_free(s->ob);
    ob_mem(s, (ptrdiff_t)((cap - s->ob_cap) * sizeof *q));
    s->ob = q;
    s->ob_cap = cap;
    s->ob_head = 0;
  }
  s->ob_len++;
  return ob_at(s, s->ob_len - 1);
}

/* Drops the first k messages of the head entry (k <= its n). The bytes of
 * frames a ring evicted are no longer known: those count at the run's
 * average. */
static void ob_drop(sess *s, uint32_t k) {
  ob_ent *h = ob_at(s, 0);
  size_t gone = 0;
  if (k == h->n) {
    gone = h->bytes;
  } else {
    for (uint32_t i = 0; i < k; i++) {
      net_chunk *f = ring_get(h->rg, h->u.pos + i);
      gone += f ? f->len : h->bytes / h->n;
    }
    if (gone > h->bytes) gone = h->bytes;
  }
  h->bytes -= gone;
  s->ob_bytes -= gone;
  s->ob_first += k;
  if (h->rg) {
    ring_release(h->rg, h->u.pos, k);
    h->u.pos += k;
  }
  h->n -= k;
  if (h->n) return;
  if (h->rg) {
    ring_unref(h->rg);
  } else {
    ob_mem(s, -(ptrdiff_t)h->u.ch->len);
    s->ob_own -= h->u.ch->len;
    net_chunk_unref(h->u.ch);
  }
  s->ob_head = (s->ob_head + 1) & (s->ob_cap - 1);
  s->ob_len--;
}

/* An empty outbox holds no array: an idle session whose client confirmed
 * everything (recv) costs nothing here; the next message makes it again. */
static void ob_free_array(sess *s) {
  ob_mem(s, -(ptrdiff_t)(s->ob_cap * sizeof *s->ob));
  wsy_free(s->ob);
  s->ob = NULL;
  s->ob_cap = s->ob_head = 0;
}

static void ob_clear(sess *s) {
  while (s->ob_len) ob_drop(s, ob_at(s, 0)->n);
  ob_free_array(s);
  s->ob_bytes = 0;
}

/* Lost messages at the head (their ring moved on): the common case, cheap
 * enough for every send. */
static void ob_trim_head(sess *s) {
  while (s->ob_len) {
    ob_ent *h = ob_at(s, 0);
    if (!h->rg) return;
    uint64_t first = ring_first(h->rg);
    if (h->u.pos >= first) return;
    ob_drop(s, first - h->u.pos >= h->n ? h->n : (uint32_t)(first - h->u.pos));
  }
}

void sess_ob_trim(sess *s) {
  uint64_t ord = s->ob_first, lost = 0; /* the newest lost ordinal */
  for (uint32_t i = 0; i < s->ob_len; i++) {
    ob_ent *x = ob_at(s, i);
    if (x->rg && x->u.pos < ring_first(x->rg)) {
      uint64_t k = ring_first(x->rg) - x->u.pos;
      lost = ord + (k < x->n ? k : x->n) - 1;
    }
    ord += x->n;
  }
  if (lost) sess_ob_confirm(s, lost);
}

void sess_ob_confirm(sess *s, uint64_t n) {
  while (s->ob_len && s->ob_first <= n) {
    uint64_t k = n - s->ob_first + 1;
    uint32_t hn = ob_at(s, 0)->n;
    ob_drop(s, k < hn ? (uint32_t)k : hn);
  }
  if (!s->ob_len && s->ob) ob_free_array(s);
}

void sess_ob_each(sess *s, uint64_t after, sess_ob_fn fn, void *ud) {
  sess_ob_trim(s);
  uint64_t ord = s->ob_first;
  for (uint32_t i = 0; i < s->ob_len; i++) {
    ob_ent *x = ob_at(s, i);
    for (uint32_t j = 0; j < x->n; j++, ord++) {
      if (ord <= after) continue;
      net_chunk *f = x->rg ? ring_get(x->rg, x->u.pos + j) : x->u.ch;
      if (f) fn(ud, ord, f);
    }
  }
}

void sess_unref(sess *s) {
  if (--s->refs > 0) return;
  ob_clear(s);
  if (s->hx) wsy_free(s->hx->dn_headers);
  wsy_free(s->hx);
  json_decref(s->from);
  if (s->hk) {
    json_decref(s->hk->held);
    json_decref(s->hk->claims);
    auth_identity_free(&s->hk->grants);
    wsy_free(s->hk);
  }
  auth_identity_free(&s->id);
  wsy_free(s->dkey);
  wsy_free(s);
}

json_t *sess_from(sess *s) {
  if (!s->from) s->from = json_pack("{s:s,s:s}", "user", s->id.user, "device", s->device);
  return s->from;
}

/* Messages outside the ordinals (welcome, and anything before it): written
 * to the WebSocket, or captured as the answer to a POST /v1/send hello. */
static void sess_direct(sess *s, net_chunk *frame) {
  if (s->w) {
    ws_send_frame(s->w, frame);
  } else if (s->e->cap) {
    size_t len;
    const uint8_t *p = frame_payload(frame, &len);
    s->e->cap->text.len = 0;
    if (buf_append(&s->e->cap->text, p, len) != WSY_OK) s->e->cap->text.len = 0;
  }
}

/* Messages to this session alone are kept up to --session-queue bytes: the
 * oldest goes, and with it every earlier message (a resume replays from
 * one ordinal on). A large one (a joined with a big snapshot) is not kept
 * at all once it is delivered: the client that lost it joins again with
 * since. What an HTTP session has not delivered yet stays. */
static void ob_trim_own(sess *s) {
  while (s->ob_own > s->e->cfg->session_queue) {
    uint64_t ord = s->ob_first;
    uint32_t i = 0;
    for (; i < s->ob_len && ob_at(s, i)->rg; i++) ord += ob_at(s, i)->n;
    if (i == s->ob_len || (s->http && ord > s->hx->dn_upto)) return;
    sess_ob_confirm(s, ord);
  }
}

/* After a message joined the outbox: the caps, then the downstream. */
static void ob_sent(sess *s, net_chunk *frame) {
  s->ob_next++;
  s->ob_bytes += frame->len;
  ob_trim_head(s);
  /* Over the cap the oldest go, confirmed or not (PROTOCOL.md 3.4). An HTTP
   * session's outbox is also its delivery queue: what no SSE stream or
   * poll answer has carried yet is kept up to --max-queued-bytes more, as a
   * WebSocket's socket queue would hold it, so a burst (or a large joined)
   * between two polls is not lost. */
  const wsy_config *cfg = s->e->cfg;
  size_t cap = cfg->max_outbox, hard = cap + (s->http ? cfg->max_queued : 0);
  while (sess_ob_count(s) > 1 &&
         (s->ob_bytes > hard || (s->ob_bytes > cap && (!s->http || s->ob_first <= s->hx->dn_upto))))
    ob_drop(s, 1);
  ob_trim_own(s);
  if (s->w) ws_send_frame(s->w, frame);
  else if (fb_has_dn(s)) fb_push(s, frame, s->ob_next - 1);
}

/* A message addressed to this session alone: the outbox holds the frame. */
void sess_send(sess *s, net_chunk *frame) {
  if (s->ghost) {
    opfwd_ghost_send(s, frame);
    return;
  }
  if (!s->welcomed) {
    sess_direct(s, frame);
    return;
  }
  if (s->ended) return;
  ob_ent *x = ob_append(s);
  x->rg = NULL;
  x->u.ch = net_chunk_ref(frame);
  x->bytes = frame->len;
  x->n = 1;
  ob_mem(s, frame->len);
  s->ob_own += frame->len;
  ob_sent(s, frame);
}

/* A room message: the ring holds the frame; the outbox extends its last
 * run when the message follows it in the same ring, so a session in one
 * room costs one entry however many messages it has not confirmed. */
void sess_send_ring(sess *s, ring *rg, uint64_t pos, net_chunk *frame) {
  if (!s->welcomed || s->ended) return;
  ob_ent *t = s->ob_len ? ob_at(s, s->ob_len - 1) : NULL;
  ring_hold(rg, pos);
  if (t && t->rg == rg && t->u.pos + t->n == pos && t->n < UINT32_MAX) {
    t->n++;
    t->bytes += frame->len;
  } else {
    ob_ent *x = ob_append(s);
    x->rg = ring_ref(rg);
    x->u.pos = pos;
    x->bytes = frame->len;
    x->n = 1;
  }
  ob_sent(s, frame);
}

/* Presence's connected flag: a WebSocket, or an HTTP session that has not
 * been without a downstream for the grace period (PROTOCOL.md 2.4). */
int sess_online(const sess *s) { return s->w || (s->http && !s->detached_at); }

/* Sends a JSON value (stolen) to a session, if it is still connected. */
void sess_send_json(sess *s, json_t *msg) {
  net_chunk *frame = engine_frame(s->e, msg);
  json_decref(msg);
  sess_send(s, frame);
  net_chunk_unref(frame);
}

/* An error reply: code, message, and the request's id and room when known. */
json_t *sess_error_msg(json_t *req, const char *code, const char *message, const char *field,
                         json_t *extra) {
  json_t *m = json_pack("{s:s}", "type", "error");
  json_t *id = req ? json_object_get(req, "id") : NULL;
  if (id) json_object_set(m, "re", id);
  json_t *type = req ? json_object_get(req, "type") : NULL;
  if (json_is_string(type)) json_object_set(m, "for", type);
  json_object_set_new(m, "code", json_string(code));
  json_object_set_new(m, "message", json_string(message));
  json_t *jroom = req ? json_object_get(req, "room") : NULL;
  if (json_is_string(jroom)) json_object_set(m, "room", jroom);
  json_t *cid = req ? json_object_get(req, "cid") : NULL;
  if (json_is_string(cid)) json_object_set(m, "cid", cid);
  if (field) json_object_set_new(m, "field", json_string(field));
  if (extra) json_object_update(m, extra);
  json_decref(extra);
  return m;
}

void sess_error(sess *s, json_t *req, const char *code, const char *message,
                       const char *field, json_t *extra) {
  sess_send_json(s, sess_error_msg(req, code, message, field, extra));
}

/* Why the hello being refused was refused, when the wire message does not
 * say it all (a token's failed check): for the log line only. */
static const char *refuse_detail;

/* Errors before welcome end the connection (PROTOCOL.md 3.3). */
void sess_refuse(sess *s, json_t *req, const char *code, const char *message) {
  conn_event(s->e, s, NULL, "hello refused", "code", code, "reason", refuse_detail ? refuse_detail : message,
             "claimed_user", s->id.user ? NULL : jstr(req, "user"), "claimed_device",
             s->device[0] ? NULL : jstr(req, "device"), (const char *)NULL);
  refuse_detail = NULL;
  sess_error(s, req, code, message, NULL, NULL);
  if (s->e->cap) snprintf(s->e->cap->code, sizeof s->e->cap->code, "%s", code);
  if (s->w) ws_close(s->w, WS_CLOSE_POLICY, code);
}

static int node_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

static int node_ok(const char *p, size_t n) {
  if (n < 1 || n > SESS_NODE_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (!node_char(p[i])) return 0;
  return 1;
}

void sess_token_wire(const sess *s, char *out, size_t n) {
  const engine *e = s->e;
  if (e->clustered && node_ok(e->node_id, strlen(e->node_id))) snprintf(out, n, "%s.%s", e->node_id, s->token);
  else snprintf(out, n, "%s", s->token);
}

int sess_token_split(const char *tok, size_t len, char key[SESS_KEY_LEN + 1], char node[SESS_NODE_MAX + 1]) {
  size_t dot = len;
  for (size_t i = len; i > 0; i--) /* the key has no dot; a node id may */
    if (tok[i - 1] == '.') {
      dot = i - 1;
      break;
    }
  size_t kl = dot == len ? len : len - dot - 1;
  const char *k = dot == len ? tok : tok + dot + 1;
  if (kl < 1 || kl > SESS_KEY_LEN || (dot != len && !node_ok(tok, dot))) return -1;
  for (size_t i = 0; i < kl; i++)
    if (!((k[i] >= '0' && k[i] <= '9') || (k[i] >= 'a' && k[i] <= 'f'))) return -1;
  memcpy(key, k, kl);
  key[kl] = '\0';
  size_t nl = dot == len ? 0 : dot;
  memcpy(node, tok, nl);
  node[nl] = '\0';
  return 0;
}

int sess_token_where(const engine *e, const char *tok, size_t len, char key[SESS_KEY_LEN + 1],
                     char node[SESS_NODE_MAX + 1]) {
  if (sess_token_split(tok, len, key, node)) return SESS_TOKEN_BAD;
  if (!node[0] || !strcmp(node, e->node_id)) return SESS_TOKEN_HERE;
  return e->clustered ? SESS_TOKEN_NODE : SESS_TOKEN_BAD;
}

/* welcome is not counted in the session's ordinals: written directly. */
static void send_welcome(sess *s, json_t *req, int resumed, int insecure) {
  engine *e = s->e;
  const wsy_config *cfg = e->cfg;
  char wire[SESS_WIRE_MAX + 1];
  sess_token_wire(s, wire, sizeof wire);
  json_t *w = json_pack(
      "{s:s,s:i,s:s,s:s,s:s,s:b,s:s,s:{s:I,s:i,s:I,s:I,s:I,s:i,s:i,s:i,s:i,s:I,s:I}}", "type", "welcome",
      "v", 1, "session", wire, "user", s->id.user, "device", s->device, "resumed", resumed,
      "server", "wsync/" WSYNC_VERSION, "limits", "max_message", (json_int_t)cfg->max_message,
      "max_rooms", (int)cfg->max_rooms, "max_fields", (json_int_t)e->lim.max_fields, "max_field_size",
      (json_int_t)e->lim.max_field_size, "max_item_size", (json_int_t)e->lim.max_item_size,
      "max_depth", e->lim.max_depth, "max_presence_state", (int)e->cfg->max_presence_state, "rate",
      (int)cfg->rate, "burst", (int)cfg->burst, "resume_window", (json_int_t)cfg->resume_window_ms,
      "max_outbox", (json_int_t)cfg->max_outbox);
  json_object_set_new(json_object_get(w, "limits"), "max_batch", json_integer((json_int_t)cfg->max_batch));
  json_object_set_new(json_object_get(w, "limits"), "max_text_size", json_integer((json_int_t)e->lim.max_text_size));
  json_object_set_new(json_object_get(w, "limits"), "max_lock_ttl", json_integer((json_int_t)cfg->max_lock_ttl_ms));
  json_object_set_new(json_object_get(w, "limits"), "lock_grace", json_integer((json_int_t)cfg->lock_grace_ms));
  if (insecure) json_object_set_new(w, "insecure", json_true());
  if (resumed) {
    json_t *rooms = json_array();
    for (member *m = s->rooms; m; m = m->snext) json_array_append_new(rooms, json_string(m->r->name));
    json_object_set_new(w, "rooms", rooms);
  }
  json_t *id = json_object_get(req, "id");
  if (id) json_object_set(w, "re", id);
  net_chunk *frame = engine_frame(e, w);
  json_decref(w);
  sess_direct(s, frame);
  net_chunk_unref(frame);
  if (e->cap) e->cap->welcomed = s;
  conn_event(e, s, NULL, "hello accepted", "session", resumed ? "resumed" : "new", "transport",
             s->w ? "ws" : "http", "auth", insecure ? "insecure-demo" : "token", (const char *)NULL);
}

/* Ends a session (bye, replaced, expired): its locks and presence go, its
 * connection (if any) is closed with code, and it can no longer resume. */
void sess_end(sess *s, unsigned code, const char *why) {
  engine *e = s->e;
  if (s->ended) return;
  s->ended = 1;
  char cs[16];
  snprintf(cs, sizeof cs, "%u", code);
  conn_event(e, s, NULL, "session end", "code", cs, "why", why, (const char *)NULL);
  if (map_get(&e->sessions, s->token) == s) map_del(&e->sessions, s->token);
  if (s->dkey && map_get(&e->by_device, s->dkey) == s) map_del(&e->by_device, s->dkey);
  while (s->rooms) room_member_remove(e, s->rooms, "session_end");
  if (fb_has_dn(s)) fb_end(s, code, why);
  ob_clear(s);
  if (s->w) ws_close(s->w, code, why);
  sess_unref(s); /* the registry's reference */
}

/* Takes the session off its current transport: a WebSocket is closed with
 * 4001, an SSE stream ends with a close event 4001, a pending poll is
 * answered (PROTOCOL.md 2.4: one downstream per session). */
void sess_detach(sess *s, const char *why) {
  if (s->w) { /* e.g. a half-open connection */
    ws_conn *ow = s->w;
    ws_conn_set_user(ow, NULL);
    s->w = NULL;
    s->refs--; /* that connection's reference */
    ws_close(ow, 4001, why);
  }
  if (fb_has_dn(s)) fb_release(s);
}

static void replay_one(void *ud, uint64_t ordinal, net_chunk *frame) {
  (void)ordinal;
  ws_send_frame(ud, frame);
}

/* Moves the new client (carried by the fresh session n: a WebSocket, or
 * none for a hello by POST /v1/send) onto the existing session s and
 * replays what the client has not processed. */
static void resume(sess *n, sess *s, json_t *req, uint64_t last, int insecure) {
  engine *e = s->e;
  ws_conn *w = n->w;
  sess_detach(s, "session resumed on another connection");
  auth_identity_free(&s->id);
  s->id = n->id;
  memset(&n->id, 0, sizeof n->id);
  if (s->hk || n->hk) { /* the new hello's claims and token hash */
    sess_hook *h = sess_hook_of(s);
    json_decref(h->claims);
    h->claims = n->hk ? n->hk->claims : NULL;
    if (n->hk) n->hk->claims = NULL;
    memcpy(h->tokh, n->hk ? n->hk->tokh : "", n->hk ? sizeof h->tokh : 1);
  }
  /* The hook's grants of the new hello join those its joins were given. */
  if (n->hk && n->hk->grants.ngrants) { /* the new hello's grants (few: one answer's) */
    const auth_identity *ng = &n->hk->grants;
    json_t *g = json_object();
    for (size_t i = 0; i < ng->ngrants; i++) {
      unsigned p = ng->grants[i].perms;
      json_object_set_new(g, ng->grants[i].pattern,
                          json_string(p == (AUTH_READ | AUTH_WRITE) ? "rw" : p == AUTH_READ ? "r" : "w"));
    }
    sess_add_grants(s, g);
    json_decref(g);
  }
  if (w) ws_conn_set_user(w, s);
  n->w = NULL;
  sess_unref(n);
  s->w = w;
  if (w) s->refs++; /* the connection's reference */
  s->http = 0;
  if (!w) sess_http_on(s)->dn_lost = now_ms(e);
  s->detached_at = 0;
  sess_ob_confirm(s, last);
  /* The new token's grants apply from now on: rooms it may not read are
   * left (welcome lists the others; the client is told after the replay). */
  json_t *revoked = json_array();
  for (member *m = s->rooms, *next; m; m = next) {
    next = m->snext;
    if (!(sess_perms(s, m->r->name) & AUTH_READ)) {
      json_array_append_new(revoked, json_string(m->r->name));
      room_member_remove(e, m, "left");
    }
  }
  send_welcome(s, req, 1, insecure);
  /* Over HTTP, the downstream opened next replays from its own last. */
  if (w) sess_ob_each(s, last, replay_one, w);
  size_t ri;
  json_t *rn;
  json_array_foreach(revoked, ri, rn)
    sess_send_json(s, json_pack("{s:s,s:O,s:s}", "type", "left", "room", rn, "reason", "forbidden"));
  json_decref(revoked);
  for (member *m = s->rooms; m; m = m->snext) room_presence_event(e, m, "update");
  log_debug("session of %s resumed after ordinal %llu", s->dkey, (unsigned long long)last);
}

void sess_hello(sess *s, json_t *req) {
  engine *e = s->e;
  const wsy_config *cfg = e->cfg;
  if (s->welcomed) {
    sess_error(s, req, "bad_request", "this connection already has a session", NULL, NULL);
    return;
  }
  json_t *v = json_object_get(req, "v");
  if (v && (!json_is_integer(v) || json_integer_value(v) != 1)) {
    sess_refuse(s, req, "unsupported_version", "only protocol version 1 exists");
    return;
  }
  const char *token = jstr(req, "token"), *user = jstr(req, "user");
  const char *device = jstr(req, "device");
  if (json_object_get(req, "device") && (!device || !auth_device_valid(device, strlen(device)))) {
    sess_refuse(s, req, "bad_request", "device must be 1-64 characters of A-Z a-z 0-9 . _ : -");
    return;
  }
  if (token) {
    char why[200];
    auth_result ar = auth_verify_cfg_why(&e->auth, token, (int64_t)time(NULL), &s->id, why, sizeof why);
    if (ar == AUTH_NO_SECRET) {
      sess_refuse(s, req, "unauthorized", "this server accepts no tokens (no --auth-secret or --auth-jwks)");
      return;
    }
    if (ar != AUTH_OK) {
      refuse_detail = why;
      sess_refuse(s, req, auth_wire_code(ar), ar == AUTH_EXPIRED ? "the token has expired" : "the token is not valid");
      return;
    }
    if (s->id.device && device && strcmp(s->id.device, device) != 0) {
      snprintf(why, sizeof why, "the token is bound to device %s, the hello says %s", s->id.device, device);
      refuse_detail = why;
      auth_identity_free(&s->id);
      sess_refuse(s, req, "token_invalid", "the token is bound to another device");
      return;
    }
    if (!device) device = s->id.device;
  } else if (user && cfg->insecure_demo) {
    if (!auth_user_valid(user, strlen(user))) {
      sess_refuse(s, req, "bad_request", "user must be 1-64 characters of A-Z a-z 0-9 . _ @ -");
      return;
    }
    auth_identity_demo(&s->id, user);
  } else {
    sess_refuse(s, req, "unauthorized", "a token is required");
    return;
  }
  if (!device) {
    auth_identity_free(&s->id);
    sess_refuse(s, req, "bad_request", "device is required");
    return;
  }
  json_t *stokj = json_object_get(req, "session"), *lastj = json_object_get(req, "last");
  if ((stokj && !json_is_string(stokj)) || (lastj && (!json_is_integer(lastj) || json_integer_value(lastj) < 0))) {
    auth_identity_free(&s->id);
    sess_refuse(s, req, "bad_request", "session must be a string and last a non-negative integer");
    return;
  }
  /* "user:device", kept from here on: the hook's questions name the device */
  size_t ul = strlen(s->id.user), dl = strlen(device);
  wsy_free(s->dkey);
  s->dkey = wsy_malloc(ul + dl + 2);
  memcpy(s->dkey, s->id.user, ul);
  s->dkey[ul] = ':';
  memcpy(s->dkey + ul + 1, device, dl + 1);
  s->device = s->dkey + ul + 1;
  /* The claims are kept only for the authorization hook's questions. */
  if (token && e->cfg->auth_hook) {
    size_t cl;
    char *ct = auth_token_claims(token, &cl);
    json_error_t jerr;
    sess_hook_of(s)->claims = ct ? json_loadb(ct, cl, 0, &jerr) : NULL;
    wsy_free(ct);
  }
  /* The authorization hook (hook.h) decides before anything is created. */
  int asked = e->cfg->auth_hook ? authhook_hello(s, req, token) : 0;
  if (asked == 0) sess_hello_finish(s, req);
}

/* Tells every other node heard from that dkey has a new session here,
 * welcomed at wall-clock ms at (sess.h). */
static void replace_announce(engine *e, const char *dkey, uint64_t at) {
  size_t dl = strlen(dkey);
  uint8_t body[8 + 200];
  if (dl > sizeof body - 8) return; /* "user:device" is at most 129 bytes */
  for (int i = 0; i < 8; i++) body[i] = (uint8_t)(at >> (56 - 8 * i));
  memcpy(body + 8, dkey, dl);
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->nodes, &i, &k, &v);)
    if (bus_send_node(e->bus, k, SESS_REPLACE_KIND, body, 8 + dl) != 0)
      log_debug("session of %s: node %s not told of the replacement (bus down)", dkey, k);
}

void sess_replace_notice(engine *e, const char *from_node, const uint8_t *body, size_t len) {
  char dkey[200];
  if (len < 8 + 3 || len - 8 >= sizeof dkey) {
    log_info("replacement notice from node %s dropped: not readable", from_node ? from_node : "?");
    return;
  }
  uint64_t at = 0;
  for (int i = 0; i < 8; i++) at = at << 8 | body[i];
  memcpy(dkey, body + 8, len - 8);
  dkey[len - 8] = '\0';
  sess *s = map_get(&e->by_device, dkey);
  if (!s || s->ended) return;
  if (s->born_wall >= at) { /* newer than the notice: the client moved here since */
    log_debug("session of %s kept: newer than node %s's replacement", dkey, from_node);
    return;
  }
  sess_end(s, 4001, "replaced by a new session of this device on another node");
}

void sess_hello_finish(sess *s, json_t *req) {
  engine *e = s->e;
  const wsy_config *cfg = e->cfg;
  int insecure = s->id.exp == 0; /* a demo identity never expires; a token's always does */
  json_t *stokj = json_object_get(req, "session"), *lastj = json_object_get(req, "last");
  const char *dkey = s->dkey;
  uint64_t last = lastj ? (uint64_t)json_integer_value(lastj) : 0;
  const char *stok = json_string_value(stokj);
  char okey[SESS_KEY_LEN + 1], onode[SESS_NODE_MAX + 1];
  /* A token of another node's session starts a new session here. */
  sess *old = stok && sess_token_where(e, stok, strlen(stok), okey, onode) == SESS_TOKEN_HERE
                  ? map_get(&e->sessions, okey)
                  : NULL;
  /* A room's ring may have evicted messages the client has not seen: then
   * the outbox cannot replay them and the client joins again with since. */
  if (old) sess_ob_trim(old);
  if (old && !old->ended && strcmp(old->dkey, dkey) == 0 && last + 1 <= old->ob_next &&
      old->ob_first <= last + 1) {
    resume(s, old, req, last, insecure);
    return;
  }
  /* A new session; one per (user, device): an older one is replaced, here
   * and on the other nodes (sess.h: REPLACEMENT ACROSS NODES). */
  sess *prev = map_get(&e->by_device, dkey);
  if (prev) sess_end(prev, 4001, "replaced by a new session of this device");
  s->born_wall = (uint64_t)wall_ms();
  if (e->clustered) replace_announce(e, dkey, s->born_wall);
  random_hex(s->token, 16);
  s->welcomed = 1;
  s->detached_at = 0; /* was opened */
  s->ob_first = s->ob_next = 1;
  s->refs++; /* the registry's reference */
  map_put(&e->sessions, s->token, s);
  map_put(&e->by_device, s->dkey, s);
  s->tokens = cfg->burst;
  s->tokens_ms = now_ms(e);
  if (!s->w) sess_http_on(s);
  send_welcome(s, req, 0, insecure);
}

unsigned sess_perms(const sess *s, const char *name) {
  if (s->ghost) return AUTH_READ | AUTH_WRITE; /* its node checked them */
  return auth_room_perms(&s->id, name) | (s->hk ? auth_room_perms(&s->hk->grants, name) : 0);
}

#define SESS_HOOK_GRANTS_MAX 1024

int sess_add_grants(sess *s, json_t *grants) {
  if (!json_is_object(grants) || json_object_size(grants) > 256) return -1;
  auth_grant *g = wsy_calloc(json_object_size(grants) + 1, sizeof *g);
  size_t n = 0;
  const char *k;
  json_t *v;
  json_object_foreach(grants, k, v) {
    char spec[200];
    int ok = json_is_string(v) && strlen(k) <= 128 && json_string_length(v) <= 2;
    if (ok) snprintf(spec, sizeof spec, "%s=%s", k, json_string_value(v));
    if (!ok || auth_grant_parse(spec, &g[n]) != 0) {
      for (size_t i = 0; i < n; i++) wsy_free(g[i].pattern);
      wsy_free(g);
      return -1;
    }
    n++;
  }
  /* Joins of many rooms (or the same one again) must not grow this without
   * bound: a grant already held is not added twice, and past the cap the
   * oldest go (a session that joined over 1024 rooms by the hook's leave
   * may lose the earliest; its next join there asks again). */
  auth_identity *hg = &sess_hook_of(s)->grants;
  for (size_t i = 0; i < n; i++) {
    int dup = 0;
    for (size_t j = 0; j < hg->ngrants && !dup; j++)
      dup = hg->grants[j].perms == g[i].perms && !strcmp(hg->grants[j].pattern, g[i].pattern);
    if (dup) {
      wsy_free(g[i].pattern);
      continue;
    }
    if (hg->ngrants == SESS_HOOK_GRANTS_MAX) {
      wsy_free(hg->grants[0].pattern);
      memmove(hg->grants, hg->grants + 1, (hg->ngrants - 1) * sizeof *g);
      hg->ngrants--;
    }
    hg->grants = wsy_realloc(hg->grants, (hg->ngrants + 1) * sizeof *g);
    hg->grants[hg->ngrants++] = g[i];
  }
  wsy_free(g);
  return 0;
}

void sess_reap(engine *e) {
  while (e->ndead) { /* what these sends close is pushed and reaped too */
    sess *s = e->dead[--e->ndead];
    if (s->welcomed && !s->ended && !s->w) {
      /* Detached: it stays in its rooms, with its locks, for the resume
       * window; the others see it disconnected, not gone. */
      s->detached_at = now_ms(e);
      for (member *m = s->rooms; m; m = m->snext) room_presence_event(e, m, "update");
    }
    sess_unref(s); /* the connection's reference */
  }
  if (e->dead_cap > 64) { /* after a burst of closes: not kept for ever */
    wsy_free(e->dead);
    e->dead = NULL;
    e->dead_cap = 0;
  }
}

void sess_expire(engine *e) {
  uint64_t now = now_ms(e), window = e->cfg->resume_window_ms, grace = e->cfg->lock_grace_ms;
  sess *due[64];
  size_t n = 0;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->sessions, &i, &k, &v);) {
    sess *s = v;
    if (s->w || fb_has_dn(s) || !s->detached_at) continue;
    /* A holder that may have crashed does not block others for the whole
     * resume window: its locks go after the lock grace (PROTOCOL.md 9.4).
     * Releasing sends, but only marks sessions (sess_gone): the registry
     * is not changed under this walk. */
    if (now - s->detached_at >= grace)
      for (member *m = s->rooms; m; m = m->snext) room_locks_release_by(e, m->r, s, "disconnected");
    if (n < WSY_ARRAY_LEN(due) && now - s->detached_at >= window) due[n++] = s;
  }
  for (size_t i = 0; i < n; i++) sess_end(due[i], WS_CLOSE_GOING_AWAY, "session expired");
}

/* A connection can go away in the middle of a fan-out (a slow consumer is
 * closed by the send itself), with callers up the stack still walking a
 * room: the session is only marked here and taken out of its rooms in the
 * check hook, when no walk is in progress. */
void sess_gone(sess *s) {
  s->w = NULL;
  engine *e = s->e;
  if (e->ndead == e->dead_cap) {
    e->dead_cap = e->dead_cap ? 2 * e->dead_cap : 16;
    e->dead = wsy_realloc(e->dead, e->dead_cap * sizeof *e->dead);
  }
  e->dead[e->ndead++] = s;
}

void sess_end_all(engine *e) {
  for (;;) {
    size_t i = 0;
    const char *k;
    void *v;
    if (!map_next(&e->sessions, &i, &k, &v)) break;
    sess_end(v, WS_CLOSE_GOING_AWAY, "server shutting down");
  }
}
