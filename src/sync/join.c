/* join.c -- join and leave (PROTOCOL.md 4.1-4.3): the joined reply is the
 * committed state, read from the store in one snapshot, and the member's
 * join position is the store's seq at that moment. Every entry with a
 * greater seq reaches it live after its commit; entries <= that seq still
 * waiting for their broadcast skip it (room_deliver). So history and live
 * delivery are contiguous and never overlap. */
#include <string.h>

#include "proto.h"
#include "room.h"
#include "sess.h"

int join_collect_op(uint64_t seq, const char *msg, size_t len, void *ud) {
  (void)seq;
  json_error_t jerr;
  json_t *v = json_loadb(msg, len, 0, &jerr);
  if (!v) return WSY_IO;
  json_array_append_new(ud, v);
  return 0;
}

int join_collect_item(const char *item, const char *fields, size_t len, const char *revs, uint64_t version,
                        void *ud) {
  json_error_t jerr;
  json_t *f = json_loadb(fields, len, 0, &jerr);
  if (!f) return WSY_IO;
  json_t *it = json_pack("{s:I,s:o}", "version", (json_int_t)version, "fields", f);
  uint64_t gen;
  json_t *rv = doc_revs_split(revs ? json_loads(revs, 0, &jerr) : NULL, &gen); /* as doc_item_json: no gen */
  if (rv) json_object_set_new(it, "revs", rv);
  json_object_set_new(ud, item, it);
  return 0;
}

typedef struct {
  json_t *arr;
  const char *user, *device;
  uint64_t mine; /* the stored cursor of this device */
} cursor_collect;

static int collect_cursor(const char *user, const char *device, uint64_t seq, int64_t updated, void *ud) {
  (void)updated;
  cursor_collect *cc = ud;
  if (strcmp(user, cc->user) != 0) return 0;
  json_array_append_new(cc->arr, json_pack("{s:s,s:I}", "device", device, "seq", (json_int_t)seq));
  if (strcmp(device, cc->device) == 0) cc->mine = seq;
  return 0;
}

void join_handle(sess *s, json_t *req) {
  engine *e = s->e;
  const char *name = proto_room_name(s, req);
  if (!name) return;
  if (!(auth_room_perms(&s->id, name) & AUTH_READ)) {
    sess_error(s, req, "forbidden", "no read permission for this room", NULL, NULL);
    return;
  }
  json_t *since = json_object_get(req, "since");
  const char *since_epoch = NULL;
  uint64_t since_seq = 0;
  if (since) {
    json_t *se = json_object_get(since, "epoch"), *sq = json_object_get(since, "seq");
    if (!json_is_object(since) || (se && !json_is_string(se)) || !json_is_integer(sq) ||
        json_integer_value(sq) < 0 || json_integer_value(sq) > 9007199254740991LL) {
      sess_error(s, req, "bad_request", "since must be {epoch: string, seq: integer >= 0}", "since", NULL);
      return;
    }
    since_epoch = json_string_value(se);
    since_seq = (uint64_t)json_integer_value(sq);
  }
  json_t *hj = json_object_get(req, "history");
  if (hj && (!json_is_integer(hj) || json_integer_value(hj) < 0 || json_integer_value(hj) > 1000)) {
    sess_error(s, req, "bad_request", "history must be an integer from 0 to 1000", "history", NULL);
    return;
  }
  json_int_t history = hj ? json_integer_value(hj) : 0;
  json_t *pstate = json_object_get(req, "presence");
  if (pstate && !json_is_object(pstate)) {
    sess_error(s, req, "bad_request", "presence must be an object", "presence", NULL);
    return;
  }
  if (pstate && sync_has_number_marker(pstate)) {
    sess_error(s, req, "invalid_field", "presence holds a number out of range", "presence", NULL);
    return;
  }
  if (pstate) {
    if (sync_encoded_size(pstate) > e->cfg->max_presence_state) {
      sess_error(s, req, "too_large", "presence state is too large", "presence", NULL);
      return;
    }
  }
  member *m = room_membership(s, name);
  if (!m && s->nrooms >= e->cfg->max_rooms) {
    sess_error(s, req, "too_many_rooms", "the session has joined the maximum number of rooms", NULL, NULL);
    return;
  }
  int err = 0;
  room *r = room_get(e, name, &err);
  if (!r && err == ROOM_WRONG_KIND) {
    sess_error(s, req, "bad_request", "the room is a Yjs room: open it on /v1/yjs/{room}", "room", NULL);
    return;
  }
  if (!r) {
    sess_error(s, req, "internal", "the room could not be loaded", NULL, NULL);
    return;
  }
  /* What the client gets is the committed state, read in one snapshot. */
  store_room_info info = {0};
  json_t *reply = json_pack("{s:s}", "type", "joined");
  json_t *id = json_object_get(req, "id");
  if (id) json_object_set(reply, "re", id);
  json_object_set_new(reply, "room", json_string(name));
  int rc = store_read_begin(e->st);
  if (rc == 0) rc = store_room_get(e->st, name, &info);
  uint64_t seq = 0;
  if (rc == 0) {
    seq = info.exists ? info.seq : 0;
    const char *epoch = info.exists ? info.epoch : r->epoch;
    json_object_set_new(reply, "epoch", json_string(epoch));
    json_object_set_new(reply, "seq", json_integer((json_int_t)seq));
    int recover = since_epoch && *since_epoch && strcmp(since_epoch, epoch) == 0 && since_seq <= seq &&
                  (!info.exists || since_seq + 1 >= info.min_seq) && seq - since_seq <= e->cfg->max_catchup;
    json_object_set_new(reply, "recovered", json_boolean(recover));
    if (recover) {
      json_t *ops = json_array();
      if (info.exists && seq > since_seq) rc = store_history(e->st, name, since_seq, 0, join_collect_op, ops);
      json_object_set_new(reply, "ops", ops);
    } else {
      json_t *snap = NULL;
      rc = info.exists ? r->kind->snapshot(r, e->st, &snap) : 0;
      json_object_set_new(reply, "snapshot", snap ? snap : json_pack("{s:{}}", "items"));
      if (history > 0 && info.exists && rc == 0) {
        json_t *msgs = json_array();
        rc = store_recent_messages(e->st, name, (size_t)history, join_collect_op, msgs);
        json_object_set_new(reply, "messages", msgs);
      }
    }
  }
  cursor_collect cc = {json_array(), s->id.user, s->device, 0};
  if (rc == 0) rc = store_cursors(e->st, name, collect_cursor, &cc);
  json_t *cursors = cc.arr;
  int end = store_read_end(e->st);
  if (rc == 0) rc = end;
  if (rc != 0) {
    json_decref(cursors);
    json_decref(reply);
    sess_error(s, req, "internal", "the room could not be read", NULL, NULL);
    room_unload_if_idle(e, r);
    return;
  }
  int is_new = !m;
  if (!m) m = room_member_add(r, s, pstate ? json_deep_copy(pstate) : json_object());
  m->from_seq = seq;
  if (cc.mine > m->cursor) m->cursor = cc.mine;
  json_t *pres = json_array();
  for (member *x = r->members; x; x = x->next) json_array_append_new(pres, room_presence_entry(x));
  json_object_set_new(reply, "presence", pres);
  json_object_set_new(reply, "locks", room_locks_json(e, r));
  json_object_set_new(reply, "cursors", cursors);
  sess_send_json(s, reply);
  if (is_new) room_presence_event(e, m, "join");
}

void join_leave(sess *s, json_t *req) {
  const char *name = proto_room_name(s, req);
  if (!name) return;
  member *m = room_membership(s, name);
  json_t *reply = json_pack("{s:s}", "type", "left");
  json_t *id = json_object_get(req, "id");
  if (id) json_object_set(reply, "re", id);
  json_object_set_new(reply, "room", json_string(name));
  sess_send_json(s, reply);
  if (m) room_member_remove(s->e, m, "left");
}
