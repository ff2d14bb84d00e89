/* proto.c -- the wire side of the sync protocol (proto.h): decoding,
 * dispatch, the rate limit, op/publish/presence/cursor requests, and the
 * WebSocket endpoint. */
#include "proto.h"

#include <string.h>

#include "commit.h"
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
  if (need_write && !(auth_room_perms(&s->id, rname) & AUTH_WRITE)) {
    sess_error(s, req, "forbidden", "no write permission for this room", NULL, NULL);
    return NULL;
  }
  return rname;
}

static void handle_op(sess *s, json_t *req) {
  engine *e = s->e;
  member *m;
  if (!proto_room_member(s, req, &m, 1)) return;
  const char *cid = jstr(req, "cid");
  if (!cid || !commit_cid_valid(cid)) {
    sess_error(s, req, "bad_request", "cid must be 1-128 characters of A-Z a-z 0-9 . _ : @ -", "cid", NULL);
    return;
  }
  author au = {e, s, NULL, s->dkey};
  json_t *from = sess_from(s);
  op_refusal why;
  if (m->r->kind->apply(&au, req, m->r, json_object_get(req, "op"), cid, 0, from, &why) != 0) {
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
    sess_error(s, req, "invalid_field", "data nests too deep or holds an integer beyond 2^53", "data", NULL);
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
  if (sync_encoded_size(state) > e->cfg->max_presence_state) {
    sess_error(s, req, "too_large", "presence state is too large", "state", NULL);
    return;
  }
  json_decref(m->state);
  m->state = json_deep_copy(state);
  room_presence_event(s->e, m, "update");
}

static void handle_cursor(sess *s, json_t *req) {
  engine *e = s->e;
  member *m;
  if (!proto_room_member(s, req, &m, 0)) return;
  json_t *sq = json_object_get(req, "seq");
  if (!json_is_integer(sq) || json_integer_value(sq) < 0 ||
      (uint64_t)json_integer_value(sq) > m->r->seq) {
    sess_error(s, req, "bad_request", "seq must be an integer no greater than the room's seq", "seq", NULL);
    return;
  }
  uint64_t seq = (uint64_t)json_integer_value(sq);
  if (seq <= m->cursor) return;
  m->cursor = seq;
  /* Batched with the next commit: a cursor may lag after a crash, never lead. */
  store_batch_cursor(e->batch, s->id.user, s->device, m->r->name, seq);
  json_t *msg = json_pack("{s:s,s:s,s:s,s:s,s:I}", "type", "cursor", "room", m->r->name, "user",
                          s->id.user, "device", s->device, "seq", (json_int_t)seq);
  net_chunk *frame = engine_frame(e, msg);
  json_decref(msg);
  room_publish(e, m->r, 0, frame, s->dkey, s->id.user); /* the user's other devices */
  net_chunk_unref(frame);
}

void proto_dispatch(sess *s, json_t *req) {
  const char *type = jstr(req, "type");
  if (!type) {
    if (!s->welcomed) sess_refuse(s, req, "unknown_type", "type must be a string");
    else sess_error(s, req, "unknown_type", "type must be a string", "type", NULL);
    return;
  }
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
    while (s->ob_len && s->ob_first <= (uint64_t)json_integer_value(nj)) sess_ob_pop(s);
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
  for (size_t i = 0; i < WSY_ARRAY_LEN(handlers); i++) {
    if (strcmp(type, handlers[i].type) != 0) continue;
    if (!rate_ok(s)) {
      const wsy_config *cfg = s->e->cfg;
      if (handlers[i].rated == 1)
        sess_error(s, req, "rate_limited", "too many requests", NULL,
                   json_pack("{s:i}", "retry_after", (int)(1000 / (cfg->rate ? cfg->rate : 1)) + 1));
      return;
    }
    /* join and leave are lifecycle events: logged when membership changed. */
    const char *rn = !strcmp(type, "join") || !strcmp(type, "leave") ? jstr(req, "room") : NULL;
    member *before = rn ? room_membership(s, rn) : NULL;
    handlers[i].fn(s, req);
    if (rn && !before != !room_membership(s, rn))
      conn_event(s->e, s, NULL, before ? "leave" : "join", "room", rn, (const char *)NULL);
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
  if (s && !s->welcomed && now - s->opened >= s->e->cfg->handshake_timeout_ms)
    sess_refuse(s, NULL, "unauthorized", "no hello in time");
}

/* Nesting depth of a JSON value, counting only while it is at most limit. */
int proto_too_deep(json_t *v, int depth, int limit) {
  if (depth > limit) return 1;
  const char *k;
  json_t *x;
  size_t i;
  if (json_is_object(v)) {
    json_object_foreach(v, k, x) if (proto_too_deep(x, depth + 1, limit)) return 1;
  } else if (json_is_array(v)) {
    json_array_foreach(v, i, x) if (proto_too_deep(x, depth + 1, limit)) return 1;
  }
  return 0;
}

json_t *proto_decode(sess *s, const char *data, size_t len) {
  json_error_t jerr;
  json_t *req = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!req && s->welcomed && strstr(jerr.text, "too big")) {
    /* jansson refuses integers beyond int64 while parsing; the message is
     * JSON, only a number in it is out of range (PROTOCOL.md 1.1). */
    json_t *as_real = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    sess_error(s, json_is_object(as_real) ? as_real : NULL, "invalid_field", "an integer is beyond 2^53-1", NULL, NULL);
    json_decref(as_real);
    return NULL;
  }
  if (!req || !json_is_object(req) || proto_too_deep(req, 1, 32)) {
    /* Say what was wrong: jansson's reason (an invalid \u escape such as a
     * lone surrogate, a duplicate member, ...) when it did not parse. */
    char why[200];
    if (!req) snprintf(why, sizeof why, "not valid JSON: %s at byte %d", jerr.text, jerr.position);
    else snprintf(why, sizeof why, "%s", json_is_object(req) ? "a message nests deeper than 32 levels"
                                                              : "a message must be one JSON object");
    json_decref(req);
    if (!s->welcomed) sess_refuse(s, NULL, "bad_json", why);
    else sess_error(s, NULL, "bad_json", why, NULL, NULL);
    return NULL;
  }
  return req;
}

static void ws_message(ws_conn *w, int opcode, uint8_t *data, size_t len) {
  sess *s = ws_conn_user(w);
  if (opcode != WS_OP_TEXT) {
    ws_close(w, WS_CLOSE_UNSUPPORTED, "binary messages are not part of protocol version 1");
    return;
  }
  json_t *req = proto_decode(s, (const char *)data, len);
  if (!req) return;
  proto_dispatch(s, req);
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
