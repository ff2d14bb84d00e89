/* proto.c -- the wire side of the sync protocol (proto.h): decoding,
 * dispatch, the rate limit, op/publish/presence/cursor requests, and the
 * WebSocket endpoint. */
#include "proto.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "../common/jsonr.h"
#include "commit.h"
#include "hook.h"
#include "opfwd.h"
#include "room.h"
#include "sess.h"

json_t *proto_reply(json_t *req, const char *type, const room *r) {
  json_t *m = json_pack("{s:s}", "type", type);
  json_t *id = json_object_get(req, "id");
  if (id) json_object_set(m, "re", id);
  json_object_set_new(m, "room", json_string(r->name));
  return m;
}

static int rate_ok(sess *s) {
  const wsy_config *cfg = s->e->cfg;
  uint64_t now = now_ms(s->e);
  s->tokens += (double)(now - s->tokens_ms) * cfg->rate / 1000.0;
  if (s->tokens > cfg->burst) s->tokens = cfg->burst;
  s->tokens_ms = now;
  if (s->tokens < 1) return 0;
  s->tokens -= 1;
  return 1;
}

/* The request's room name, or NULL after answering bad_request/room_invalid. */
const char *proto_room_name(sess *s, json_t *req) {
  const char *name = jstr(req, "room");
  if (!name) {
    sess_error(s, req, "bad_request", "room must be a string", "room", NULL);
    return NULL;
  }
  if (!auth_room_valid(name, strlen(name))) {
    sess_error(s, req, "room_invalid", "room names are 1-128 characters of A-Z a-z 0-9 . _ : @ -", "room", NULL);
    return NULL;
  }
  return name;
}

const char *proto_room_member(sess *s, json_t *req, member **out, int need_write) {
  const char *rname = proto_room_name(s, req);
  if (!rname) return NULL;
  *out = room_membership(s, rname);
  if (!*out) {
    sess_error(s, req, "not_joined", "join the room first", NULL, NULL);
    return NULL;
  }
  if (need_write && !(sess_perms(s, rname) & AUTH_WRITE)) {
    sess_error(s, req, "forbidden", "no write permission for this room", NULL, NULL);
    return NULL;
  }
  return rname;
}

/* A refusal that depends on the room's state (its locks, an item's version,
 * a text's revisions), rather than on the request alone. */
static int refusal_of_state(const char *code) {
  static const char *const codes[] = {"locked", "lock_lost", "conflict", "not_found", "rev_too_old", "item_replaced"};
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
    if (!strcmp(code, codes[i])) return 1;
  return 0;
}

static void op_decide(sess *s, json_t *req, int asked) {
  engine *e = s->e;
  member *m;
  const char *rname = proto_room_member(s, req, &m, 1);
  if (!rname) return;
  const char *cid = jstr(req, "cid");
  if (!cid || !commit_cid_valid(cid)) {
    sess_error(s, req, "bad_request", "cid must be 1-128 characters of A-Z a-z 0-9 . _ : @ -", "cid", NULL);
    return;
  }
  /* An op hook (hook.h) sees the op before the room decides it. */
  if (!asked && e->cfg->op_hooks.n && !s->ghost && ophook_op(s, req, rname)) return;
  /* Decided by the room's owner (opfwd.h); its answer comes back here. */
  if (e->clustered && e->cfg->forward_ops && opfwd_route(s, m, req)) return;
  author au = {e, s, NULL, s->dkey};
  json_t *from = sess_from(s);
  op_refusal why;
  e->looked_up_now = 0;
  if (m->r->kind->apply(&au, req, m->r, json_object_get(req, "op"), cid, 0, from, &why) != 0) {
    /* In a cluster, an op refused on the room's state is decided again on
     * the room as the store holds it now, after a lookup of its cid (both
     * read without blocking), so that the answer depends neither on whether
     * another node's entries or lock changes have reached this node yet (a
     * replica behind the client would answer with a state older than the
     * client's: a rev_too_old with an older text), nor on which node the
     * op was first sent to: a re-sent op that another node applied is a
     * duplicate, never refused (this node's filter of cids holds only its
     * own). */
    int rc = 0;
    if (e->clustered && refusal_of_state(why.err.code) && !(m->r->fresh_pass && e->looked_up_now) &&
        (commit_lookup_session(&au, req, m->r, cid, 1, &rc) == 1 || !m->r->fresh_pass)) {
      json_decref(why.extra);
      if (!strcmp(why.err.code, "locked") || !strcmp(why.err.code, "lock_lost")) m->r->locks_stale = 1;
      if (rc != 0) commit_defer_write(s, req, m->r); /* the lookup could not be sent: the read alone */
      return;
    }
    commit_count_rejection(e, why.err.code);
    json_t *msg = sess_error_msg(req, why.err.code, why.err.message, why.err.field, why.extra);
    room *r = m->r;
    if (r->pending == 0) {
      sess_send_json(s, msg);
      return;
    }
    /* A refusal can carry state (rev_too_old's text and rev, conflict's
     * current item) that includes ops still being stored: it goes out behind
     * their acks and broadcasts, as a duplicate's ack does, so a client never
     * learns of a state before the entries that make it. */
    commit_refusal_in_order(&au, r, msg);
  }
}

static void handle_op(sess *s, json_t *req) { op_decide(s, req, 0); }

void proto_op_decided(sess *s, json_t *req) { op_decide(s, req, 1); }

static void handle_publish(sess *s, json_t *req);

void proto_redecide(sess *s, json_t *req) {
  const char *type = jstr(req, "type");
  if (type && !strcmp(type, "publish")) handle_publish(s, req);
  else if (type && !strcmp(type, "lock")) room_handle_lock(s, req);
  else if (type && !strcmp(type, "unlock")) room_handle_unlock(s, req);
  else op_decide(s, req, 1);
}

static void handle_publish(sess *s, json_t *req) {
  engine *e = s->e;
  member *m;
  if (!proto_room_member(s, req, &m, 1)) return;
  room *r = m->r;
  json_t *data = json_object_get(req, "data");
  if (!data) {
    sess_error(s, req, "bad_request", "data is required", "data", NULL);
    return;
  }
  if (sync_encoded_size(data) > e->lim.max_field_size) {
    sess_error(s, req, "too_large", "data is too large", "data", NULL);
    return;
  }
  if (!sync_value_ok(data, e->lim.max_depth)) {
    sess_error(s, req, "invalid_field", "data nests too deep or holds a number out of range", "data", NULL);
    return;
  }
  json_t *eph = json_object_get(req, "ephemeral");
  if (eph && !json_is_boolean(eph)) {
    sess_error(s, req, "bad_request", "ephemeral must be a boolean", "ephemeral", NULL);
    return;
  }
  const char *cid = jstr(req, "cid");
  if (json_object_get(req, "cid") && (!cid || !commit_cid_valid(cid))) {
    sess_error(s, req, "bad_request", "cid must be 1-128 characters of A-Z a-z 0-9 . _ : @ -", "cid", NULL);
    return;
  }
  if (json_is_true(eph)) {
    json_t *msg = json_pack("{s:s,s:s,s:I,s:{s:s,s:s},s:O,s:b}", "type", "message", "room", r->name,
                            "ts", (json_int_t)wall_ms(), "from", "user", s->id.user, "device",
                            s->device, "data", data, "ephemeral", 1);
    json_t *ack = json_pack("{s:s,s:s}", "type", "ack", "room", r->name);
    json_t *id = json_object_get(req, "id");
    if (id) json_object_set(ack, "re", id);
    sess_send_json(s, ack);
    room_send(e, r, msg);
    return;
  }
  /* Stored with a cid: decided by the room's owner, as ops (opfwd.h); one
   * without a cid could not be decided again safely if the owner failed. */
  if (cid && e->clustered && e->cfg->forward_ops && opfwd_route(s, m, req)) return;
  author au = {e, s, NULL, s->dkey};
  op_refusal why;
  int adm = commit_admit(&au, req, r, cid, &why);
  if (adm > 0) return;
  if (adm < 0) {
    commit_count_rejection(e, why.err.code);
    sess_send_json(s, sess_error_msg(req, why.err.code, why.err.message, NULL, why.extra));
    return;
  }
  r->seq++;
  commit_sequence(&au, req, r, commit_entry_frame(e, r, COMMIT_MESSAGE, sess_from(s), cid, data), NULL, NULL, NULL, NULL, 0, cid);
}

static void handle_presence(sess *s, json_t *req) {
  engine *e = s->e;
  member *m;
  if (!proto_room_member(s, req, &m, 0)) return;
  json_t *state = json_object_get(req, "state");
  if (!json_is_object(state)) {
    sess_error(s, req, "bad_request", "state must be an object", "state", NULL);
    return;
  }
  if (sync_has_number_marker(state)) {
    sess_error(s, req, "invalid_field", "state holds a number out of range", "state", NULL);
    return;
  }
  if (sync_encoded_size(state) > e->cfg->max_presence_state) {
    sess_error(s, req, "too_large", "presence state is too large", "state", NULL);
    return;
  }
  json_decref(m->state);
  m->state = json_object_size(state) ? json_deep_copy(state) : NULL;
  room_presence_event(s->e, m, "update");
}

static void handle_cursor(sess *s, json_t *req) {
  engine *e = s->e;
  member *m;
  if (!proto_room_member(s, req, &m, 0)) return;
  json_t *sq = json_object_get(req, "seq");
  if (!json_is_integer(sq) || json_integer_value(sq) < 0 ||
      (uint64_t)json_integer_value(sq) > (m->r->seq > m->r->delivered ? m->r->seq : m->r->delivered)) {
    sess_error(s, req, "bad_request", "seq must be an integer no greater than the room's seq", "seq", NULL);
    return;
  }
  uint64_t seq = (uint64_t)json_integer_value(sq);
  if (seq <= m->cursor) return;
  m->cursor = seq;
  m->r->pl_valid = 0; /* the joined list shows it */
  /* Batched with the next commit: a cursor may lag after a crash, never lead. */
  store_batch_cursor(e->batch, s->id.user, s->device, m->r->name, seq);
  join_cursor_note(m->r, s->id.user, s->device, seq);
  json_t *msg = json_pack("{s:s,s:s,s:s,s:s,s:I}", "type", "cursor", "room", m->r->name, "user",
                          s->id.user, "device", s->device, "seq", (json_int_t)seq);
  net_chunk *frame = engine_frame(e, msg);
  json_decref(msg);
  room_publish(e, m->r, 0, frame, s->dkey, s->id.user); /* the user's other devices */
  net_chunk_unref(frame);
}

void proto_dispatch(sess *s, json_t *req) {
  /* A session waiting for the authorization hook: everything waits, in order. */
  if (hook_held(s)) {
    hook_hold_push(s, req);
    return;
  }
  if (s->ghost) { /* only ever sent ops (opfwd.h) */
    opfwd_ghost_go(s, req);
    return;
  }
  /* The id first (PROTOCOL.md 1.1): every later answer echoes it. */
  json_t *id = json_object_get(req, "id");
  if (id && !(json_is_integer(id) && json_integer_value(id) >= 0 &&
              json_integer_value(id) <= 9007199254740991LL) &&
      !(json_is_string(id) && json_string_length(id) <= 64)) {
    /* Not echoed: an id of any other shape could be arbitrarily large. */
    json_object_del(req, "id");
    if (!s->welcomed) sess_refuse(s, req, "bad_request", "id must be an integer or a string of at most 64 bytes");
    else sess_error(s, req, "bad_request", "id must be an integer or a string of at most 64 bytes", "id", NULL);
    return;
  }
  const char *type = jstr(req, "type");
  if (!type) {
    if (!s->welcomed) sess_refuse(s, req, "unknown_type", "type must be a string");
    else sess_error(s, req, "unknown_type", "type must be a string", "type", NULL);
    return;
  }
  if (!strcmp(type, "hello")) {
    sess_hello(s, req);
    return;
  }
  if (!s->welcomed) {
    static const char *const known[] = {"join", "leave", "op", "publish", "presence", "lock",
                                        "unlock", "cursor", "recv", "ping", "bye"};
    int is_known = 0;
    for (size_t i = 0; i < WSY_ARRAY_LEN(known); i++) is_known |= !strcmp(type, known[i]);
    if (is_known) sess_refuse(s, req, "unauthorized", "say hello first");
    else sess_refuse(s, req, "unknown_type", "unknown message type");
    return;
  }
  if (!strcmp(type, "ping")) {
    json_t *pong = json_pack("{s:s}", "type", "pong");
    if (id) json_object_set(pong, "re", id);
    sess_send_json(s, pong);
    return;
  }
  if (!strcmp(type, "recv")) {
    json_t *nj = json_object_get(req, "n");
    if (!json_is_integer(nj) || json_integer_value(nj) < 0 || (uint64_t)json_integer_value(nj) >= s->ob_next) {
      sess_error(s, req, "bad_request", "n must be an ordinal the server has sent", "n", NULL);
      return;
    }
    sess_ob_confirm(s, (uint64_t)json_integer_value(nj));
    return;
  }
  if (!strcmp(type, "bye")) {
    sess_end(s, WS_CLOSE_NORMAL, "bye");
    return;
  }
  /* rated: 1 = answered with rate_limited when over the rate, 2 = dropped
   * silently (no reply is expected), PROTOCOL.md 13.2. */
  static const struct {
    const char *type;
    void (*fn)(sess *, json_t *);
    int rated;
  } handlers[] = {
    {"join", join_handle, 1},         {"leave", join_leave, 1}, {"op", handle_op, 1},
    {"publish", handle_publish, 1},   {"presence", handle_presence, 2},
    {"lock", room_handle_lock, 1},    {"unlock", room_handle_unlock, 1},
    {"cursor", handle_cursor, 2},
  };
  /* A write that must not overtake the session's ops out at the room's
   * owner (opfwd.h) waits for their answers. */
  if (s->e->ofw && (!strcmp(type, "publish") || !strcmp(type, "lock") || !strcmp(type, "unlock")) &&
      opfwd_wait(s, type, req))
    return;
  for (size_t i = 0; i < WSY_ARRAY_LEN(handlers); i++) {
    if (strcmp(type, handlers[i].type) != 0) continue;
    if (!rate_ok(s)) {
      const wsy_config *cfg = s->e->cfg;
      if (handlers[i].rated == 1)
        sess_error(s, req, "rate_limited", "too many requests", NULL,
                   json_pack("{s:i}", "retry_after", (int)(1000 / (cfg->rate ? cfg->rate : 1)) + 1));
      return;
    }
    /* join and leave are lifecycle events: logged when membership changed
     * (a join where it makes the member: it may be answered later). */
    const char *rn = !strcmp(type, "leave") ? jstr(req, "room") : NULL;
    member *before = rn ? room_membership(s, rn) : NULL;
    handlers[i].fn(s, req);
    if (before && !room_membership(s, rn)) conn_event(s->e, s, NULL, "leave", "room", rn, (const char *)NULL);
    return;
  }
  sess_error(s, req, "unknown_type", "unknown message type", "type", NULL);
}

static int ws_open(ws_conn *w, const httpd_req *r) {
  (void)r;
  engine *e = ws_conn_ud(w);
  sess *s = sess_new(e, w);
  e->ws_conns++;
  ws_conn_set_user(w, s);
  conn_event(e, s, NULL, "connect", "transport", "ws", (const char *)NULL);
  return 0;
}

/* A connection that has not said hello within the handshake timeout is
 * refused (PROTOCOL.md 13.1). */
static void ws_tick(ws_conn *w, uint64_t now) {
  sess *s = ws_conn_user(w);
  if (s && !s->welcomed && !s->hold && now - s->opened >= s->e->cfg->handshake_timeout_ms)
    sess_refuse(s, NULL, "unauthorized", "no hello in time");
}

/* Nesting depth of a JSON value (PROTOCOL.md 1.1): containers count, one
 * level each, scalars do not; v is at level depth. Walks only while the
 * depth is at most limit. */
int proto_too_deep(json_t *v, int depth, int limit) {
  if ((!json_is_object(v) && !json_is_array(v)) || sync_is_number_marker(v)) return 0; /* a marker: a number */
  if (depth > limit) return 1;
  const char *k;
  json_t *x;
  size_t i;
  if (json_is_object(v)) {
    json_object_foreach(v, k, x) if (proto_too_deep(x, depth + 1, limit)) return 1;
  } else {
    json_array_foreach(v, i, x) if (proto_too_deep(x, depth + 1, limit)) return 1;
  }
  return 0;
}

/* 1 when the number token t (n bytes) is one jansson refuses to hold: an
 * integer beyond int64, or a real whose magnitude overflows a double (an
 * underflow is 0 to jansson, and here). The same library calls jansson
 * makes (strtoll, strtod), so the two agree on every token. */
static int number_overflows(const char *t, size_t n) {
  char small[64], *b = n < sizeof small ? small : wsy_malloc(n + 1);
  memcpy(b, t, n);
  b[n] = '\0';
  int real = strpbrk(b, ".eE") != NULL, over;
  errno = 0;
  if (real) {
    double d = strtod(b, NULL);
    over = errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL);
  } else {
    (void)strtoll(b, NULL, 10);
    over = errno == ERANGE;
  }
  if (b != small) wsy_free(b);
  return over;
}

/* Puts a marker (sync_number_marker) wherever the re-parse left a
 * placeholder: a string that is exactly U+0000, which no message holds
 * (refused before the re-parse). */
static void place_markers(json_t *v) {
  if (json_is_object(v)) {
    for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
      json_t *x = json_object_iter_value(it);
      if (json_is_string(x) && json_string_length(x) == 1 && json_string_value(x)[0] == '\0')
        json_object_iter_set_new(v, it, sync_number_marker());
      else place_markers(x);
    }
  } else if (json_is_array(v)) {
    for (size_t i = 0; i < json_array_size(v); i++) {
      json_t *x = json_array_get(v, i);
      if (json_is_string(x) && json_string_length(x) == 1 && json_string_value(x)[0] == '\0')
        json_array_set_new(v, i, sync_number_marker());
      else place_markers(x);
    }
  }
}

/* PROTOCOL.md 1.1: members a receiver does not know are ignored, whatever
 * number they hold, but jansson refuses the whole text when one number does
 * not fit an int64 or a double. So on that error (and only then) the text
 * is scanned once, token by token (strings are skipped whole), and every
 * such number is replaced by a placeholder, the string "\u0000"; the text
 * is parsed again with U+0000 allowed, and each placeholder becomes a
 * marker that no JSON text can produce (sync_number_marker). What the
 * marker means is decided where the member is used: a handler that reads
 * an integer or a string finds the wrong type (bad_request, or unknown_type
 * for type), document values and presence states refuse it
 * (invalid_field), an id is badly shaped (bad_request without re), and a
 * member nobody reads is ignored. Linear in the text; a message that has no
 * such number is parsed once, as before. A real "\u0000" in the text is
 * still bad_json (found by the scan, since the re-parse would accept it). */
static json_t *parse_slow(const char *data, size_t len, json_error_t *jerr);

json_t *proto_parse(const char *data, size_t len, json_error_t *jerr) {
  json_t *j = jsonr_parse(data, len, JSONR_MAX_DEPTH); /* the common case, faster (jsonr.h) */
  return j ? j : parse_slow(data, len, jerr);
}

static json_t *parse_slow(const char *data, size_t len, json_error_t *jerr) {
  json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, jerr);
  if (j || json_error_code(jerr) != json_error_numeric_overflow) return j;
  static const char ph[] = "\"\\u0000\"";
  char *out = wsy_malloc(2 * len + sizeof ph);
  size_t o = 0, i = 0;
  int nul = 0;
  while (i < len) {
    char ch = data[i];
    if (ch == '"') {
      out[o++] = data[i++];
      while (i < len && data[i] != '"') {
        if (data[i] == '\\' && i + 1 < len) {
          if (i + 5 < len && data[i + 1] == 'u' && !memcmp(data + i + 2, "0000", 4)) nul = 1;
          out[o++] = data[i++];
        }
        out[o++] = data[i++];
      }
      if (i < len) out[o++] = data[i++];
    } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
      size_t st = i;
      while (i < len && data[i] && strchr("+-.0123456789eE", data[i])) i++;
      if (number_overflows(data + st, i - st)) {
        memcpy(out + o, ph, sizeof ph - 1);
        o += sizeof ph - 1;
      } else {
        memcpy(out + o, data + st, i - st);
        o += i - st;
      }
    } else {
      out[o++] = data[i++];
    }
  }
  if (nul) {
    wsy_free(out);
    snprintf(jerr->text, sizeof jerr->text, "\\u0000 is not allowed");
    jerr->position = -1;
    return NULL;
  }
  j = json_loadb(out, o, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, jerr);
  wsy_free(out);
  if (!j) {
    jerr->position = -1; /* a position in the re-written text: not told */
    return NULL;
  }
  place_markers(j);
  return j;
}

/* Decodes one message of len bytes: a JSON object, or NULL after answering
 * bad_json (then s may be closing). Sets *fast when the fast reader took
 * it: its text reads back the same on any node (opfwd.c forwards it as it
 * came). */
static json_t *decode(sess *s, const char *data, size_t len, int *fast) {
  /* Read fast and known to nest at most 32 levels: the common case. */
  json_t *req = jsonr_parse(data, len, 32);
  *fast = req && json_is_object(req);
  if (*fast) return req;
  json_decref(req);
  json_error_t jerr;
  req = parse_slow(data, len, &jerr);
  if (!req || !json_is_object(req) || proto_too_deep(req, 1, 32)) {
    /* Say what was wrong: jansson's reason (an invalid \u escape such as a
     * lone surrogate, a duplicate member, ...) when it did not parse. */
    char why[200];
    if (!req && jerr.position >= 0) snprintf(why, sizeof why, "not valid JSON: %s at byte %d", jerr.text, jerr.position);
    else if (!req) snprintf(why, sizeof why, "not valid JSON: %s", jerr.text);
    else snprintf(why, sizeof why, "%s", json_is_object(req) ? "a message nests deeper than 32 levels"
                                                              : "a message must be one JSON object");
    json_decref(req);
    if (!s->welcomed) sess_refuse(s, NULL, "bad_json", why);
    else sess_error(s, NULL, "bad_json", why, NULL, NULL);
    return NULL;
  }
  return req;
}

json_t *proto_keep(engine *e, json_t *req, char **text, size_t *len) {
  *text = NULL;
  *len = 0;
  if (e->raw_of != req) return json_incref(req);
  *text = wsy_malloc(e->raw_len);
  memcpy(*text, e->raw, e->raw_len);
  *len = e->raw_len;
  return NULL;
}

json_t *proto_reread(const char *text, size_t len) { return jsonr_parse(text, len, 32); }

static void ws_message(ws_conn *w, int opcode, uint8_t *data, size_t len) {
  sess *s = ws_conn_user(w);
  if (opcode != WS_OP_TEXT) {
    ws_close(w, WS_CLOSE_UNSUPPORTED, "binary messages are not part of protocol version 1");
    return;
  }
  int fast;
  json_t *req = decode(s, (const char *)data, len, &fast);
  if (!req) return;
  engine *e = s->e;
  if (fast) {
    e->raw_of = req;
    e->raw = (const char *)data;
    e->raw_len = len;
  }
  proto_dispatch(s, req);
  e->raw_of = NULL;
  json_decref(req);
}

static void ws_gone(ws_conn *w) {
  ((engine *)ws_conn_ud(w))->ws_conns--;
  sess *s = ws_conn_user(w);
  int by_peer;
  char code[16];
  snprintf(code, sizeof code, "%u", ws_conn_close_code(w, &by_peer));
  conn_event(ws_conn_ud(w), s, ws_conn_net(w), "close", "code", code, "by", by_peer ? "client" : "server",
             (const char *)NULL);
  if (!s) return;
  ws_conn_set_user(w, NULL);
  sess_gone(s);
}

const ws_endpoint engine_ws_endpoint = {
  .name = "sync",
  .on_open = ws_open,
  .on_message = ws_message,
  .on_close = ws_gone,
  .on_tick = ws_tick,
};
