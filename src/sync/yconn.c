/* yconn.c -- the WebSocket endpoint /v1/yjs/{room}?token=JWT (yroom.h,
 * docs/YJS.md): y-protocols v1 as the stock y-websocket provider speaks it.
 *
 * Every message is binary, lib0-encoded, starting with a varuint type:
 *   0 sync        0 step 1 (state vector) | 1 step 2 (update) | 2 update
 *   1 awareness   varbytes: #entries, (client, clock, state JSON) each
 *   2 auth        0 permission denied + reason (server -> client only)
 *   3 query awareness
 * On open the server sends its sync step 1 (the committed document's state
 * vector) and the room's awareness states; a client's step 1 is answered
 * with step 2 = the committed document diffed against its state vector. A
 * writer's step 2 and updates are validated, stored and relayed after their
 * commit (yroom.c); a reader's updates are answered with permission denied
 * and dropped (its step 2 silently: the provider always sends one).
 *
 * CLOSE CODES: y-websocket 3.x does not reconnect after 4400-4499 (its
 * defaultShouldReconnect) and backs off exponentially on any other code:
 *   4400 malformed message or room name     4401 no or bad token
 *   4403 room not granted                   4409 a document room
 *   4413 awareness state or ids over the limits
 *   4405 a node of a cluster (--bus): Yjs rooms are served by one node only
 *        for now (docs/CLUSTER.md)
 *   1011 the room cannot be loaded, 1013 the room reloaded after a storage
 *   failure (both transient: the provider retries with back-off). */
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "kind.h"
#include "yroom.h"

#define YJS_PREFIX "/v1/yjs/"

enum { MSG_SYNC = 0, MSG_AWARENESS = 1, MSG_AUTH = 2, MSG_QUERY_AWARENESS = 3 };
enum { SYNC_STEP1 = 0, SYNC_STEP2 = 1, SYNC_UPDATE = 2 };

struct ypeer {
  engine *e;
  ws_conn *w;
  room *r;
  ypeer *prev, *next;
  unsigned perms;
  unsigned nids; /* awareness client ids this connection controls */
  char user[72];
};

#define P(r) ((ypeers *)(r)->peers)

static void send_ybuf(ypeer *p, const ybuf *m) { (void)ws_send(p->w, WS_OP_BINARY, m->p, m->len); }

/* Logs why (a warning for a malformed message) and closes with code. */
static void refuse(ws_conn *w, const char *user, const char *rname, unsigned code, const char *reason,
                   const char *detail) {
  char addr[80] = "-", cs[12];
  net_conn_peer(ws_conn_net(w), addr, sizeof addr);
  snprintf(cs, sizeof cs, "%u", code);
  wsy_log_event(code == 4400 ? LOG_WARN : LOG_INFO, "yjs_closed", "remote", addr, "user", user, "room", rname,
                "code", cs, "reason", reason, "detail", detail, (const char *)NULL);
  ws_close(w, code, reason);
}

/* [2, 0, reason]: y-protocols' permission denied. */
static void permission_denied(ypeer *p, const char *reason) {
  ybuf m = {0};
  if (lib0_write_varuint(&m, MSG_AUTH) || lib0_write_varuint(&m, 0) ||
      lib0_write_varbytes(&m, reason, strlen(reason)))
    abort();
  send_ybuf(p, &m);
  ybuf_free(&m);
}

/* [0, type, bytes]. */
static void send_sync(ypeer *p, unsigned type, const uint8_t *b, size_t n) {
  ybuf m = {0};
  if (lib0_write_varuint(&m, MSG_SYNC) || lib0_write_varuint(&m, type) || lib0_write_varbytes(&m, b, n)) abort();
  send_ybuf(p, &m);
  ybuf_free(&m);
}

/* ---- awareness ------------------------------------------------------------- */

/* [1, varbytes(#n, (client, clock, state)...)] of the entries aw[i] for
 * which pick(aw[i], ud) is true; with null_state, their state is "null"
 * and the clock one higher (a removal, as awareness.removeAwarenessStates). */
static void awareness_msg(ybuf *m, const ypeers *ps, const ypeer *only, int null_state) {
  ybuf u = {0};
  size_t n = 0;
  for (size_t i = 0; i < ps->naw; i++) n += !only || ps->aw[i].owner == only;
  int rc = lib0_write_varuint(&u, n);
  for (size_t i = 0; i < ps->naw && rc == 0; i++) {
    const yaware *a = &ps->aw[i];
    if (only && a->owner != only) continue;
    rc = lib0_write_varuint(&u, a->client);
    if (rc == 0) rc = lib0_write_varuint(&u, a->clock + (null_state ? 1 : 0));
    if (rc == 0) rc = null_state ? lib0_write_varbytes(&u, "null", 4) : lib0_write_varbytes(&u, a->state, a->len);
  }
  if (rc == 0) rc = lib0_write_varuint(m, MSG_AWARENESS);
  if (rc == 0) rc = lib0_write_varbytes(m, u.p, u.len);
  if (rc != 0) abort();
  ybuf_free(&u);
}

static void aware_remove(ypeers *ps, size_t i) {
  if (ps->aw[i].owner) ps->aw[i].owner->nids--;
  wsy_free(ps->aw[i].state);
  ps->aw[i] = ps->aw[--ps->naw];
}

/* An awareness message from p: checked whole, then applied to the room's
 * table (who controls which client id, for the removal on close) and
 * relayed to every connection of the room, p included, as the stock server
 * does. 0, or a close code with *why. */
static unsigned on_awareness(ypeer *p, const uint8_t *msg, size_t len, const uint8_t *u, size_t n,
                             const char **why) {
  engine *e = p->e;
  lib0_rd rd;
  lib0_rd_init(&rd, u, n);
  uint64_t count;
  if (lib0_read_varuint(&rd, &count) != 0 || count > n) goto bad;
  /* First pass: the whole update is well-formed and within the limits. */
  for (uint64_t k = 0; k < count; k++) {
    uint64_t client, clock;
    const uint8_t *s;
    size_t sl;
    if (lib0_read_varuint(&rd, &client) || lib0_read_varuint(&rd, &clock) || lib0_read_varstring(&rd, &s, &sl, NULL))
      goto bad;
    if (sl > e->cfg->yjs_max_awareness) {
      *why = "awareness state too large";
      return 4413;
    }
    json_error_t jerr;
    json_t *v = json_loadb((const char *)s, sl, JSON_DECODE_ANY, &jerr);
    if (!v) goto bad;
    json_decref(v);
  }
  if (lib0_rd_left(&rd) != 0) goto bad;
  lib0_rd_init(&rd, u, n);
  if (lib0_read_varuint(&rd, &count)) abort(); /* read whole above */
  /* Second pass: applied as y-protocols' Awareness does (a clock not above
   * the one held is ignored, but a null state at the same clock removes),
   * and only what changed is relayed: providers echo the states they
   * receive, and an echo changes nothing. The connection that adds a
   * client id controls it until the id is removed. */
  ypeers *ps = P(p->r);
  ybuf changed = {0};
  size_t nchanged = 0;
  for (uint64_t k = 0; k < count; k++) {
    uint64_t client, clock;
    const uint8_t *s;
    size_t sl;
    if (lib0_read_varuint(&rd, &client) || lib0_read_varuint(&rd, &clock) || lib0_read_varstring(&rd, &s, &sl, NULL))
      abort(); /* read whole above */
    size_t i = 0;
    while (i < ps->naw && ps->aw[i].client != client) i++;
    int null_state = sl == 4 && memcmp(s, "null", 4) == 0;
    int held = i < ps->naw;
    uint64_t cur = held ? ps->aw[i].clock : 0; /* Awareness: an unknown client is at clock 0 */
    if (!(cur < clock || (held && cur == clock && null_state)) || (null_state && !held)) continue;
    if (lib0_write_varuint(&changed, client) || lib0_write_varuint(&changed, clock) ||
        lib0_write_varbytes(&changed, s, sl))
      abort();
    nchanged++;
    if (null_state) {
      aware_remove(ps, i);
      continue;
    }
    if (!held) {
      if (p->nids >= YROOM_MAX_CLIENT_IDS) {
        ybuf_free(&changed);
        *why = "too many awareness client ids on one connection";
        return 4413;
      }
      if (ps->naw == ps->capaw) {
        ps->capaw = ps->capaw ? 2 * ps->capaw : 8;
        ps->aw = wsy_realloc(ps->aw, ps->capaw * sizeof *ps->aw);
      }
      ps->aw[ps->naw++] = (yaware){.client = client, .owner = p};
      p->nids++;
    }
    yaware *a = &ps->aw[i];
    wsy_free(a->state);
    a->clock = clock;
    a->state = wsy_malloc(sl ? sl : 1);
    memcpy(a->state, s, sl);
    a->len = sl;
  }
  if (nchanged) {
    ybuf m = {0};
    ybuf cu = {0};
    if (lib0_write_varuint(&cu, nchanged) || lib0_write_bytes(&cu, changed.p, changed.len) ||
        lib0_write_varuint(&m, MSG_AWARENESS) || lib0_write_varbytes(&m, cu.p, cu.len))
      abort();
    net_chunk *f = ws_frame_new(WS_OP_BINARY, m.p, m.len);
    room_publish(e, p->r, 0, f, NULL, NULL);
    net_chunk_unref(f);
    ybuf_free(&m);
    ybuf_free(&cu);
  }
  ybuf_free(&changed);
  (void)msg;
  (void)len;
  return 0;
bad:
  *why = "malformed awareness update";
  return 4400;
}

/* ---- the room's connections ----------------------------------------------- */

void yconn_send_all(engine *e, room *r, net_chunk *frame) {
  ypeers *ps = P(r);
  for (ypeer *p = ps ? ps->head : NULL, *next; p; p = next) {
    next = p->next;
    (void)ws_send_frame(p->w, frame);
    e->deliveries++;
  }
}

void yconn_close_all(room *r, unsigned code, const char *reason) {
  ypeers *ps = P(r);
  if (!ps) return;
  /* ws_close runs y_close at once, which unlinks the peer (and frees ps
   * with the last one): close from a copy. The pin keeps r loaded (this
   * runs inside a reload); the caller unloads it when idle. */
  size_t n = 0;
  ws_conn **ws = wsy_malloc(r->npeers * sizeof *ws);
  for (ypeer *p = ps->head; p; p = p->next) ws[n++] = p->w;
  r->pending++;
  for (size_t i = 0; i < n; i++) ws_close(ws[i], code, reason);
  r->pending--;
  wsy_free(ws);
}

static void detach(ypeer *p) {
  room *r = p->r;
  ypeers *ps = P(r);
  engine *e = p->e;
  if (p->prev) p->prev->next = p->next;
  else ps->head = p->next;
  if (p->next) p->next->prev = p->prev;
  r->npeers--;
  /* The others hear that its clients are gone (null states, clock + 1). */
  if (p->nids) {
    ybuf m = {0};
    awareness_msg(&m, ps, p, 1);
    for (size_t i = ps->naw; i-- > 0;)
      if (ps->aw[i].owner == p) aware_remove(ps, i);
    net_chunk *f = ws_frame_new(WS_OP_BINARY, m.p, m.len);
    ybuf_free(&m);
    room_publish(e, r, 0, f, NULL, NULL);
    net_chunk_unref(f);
  }
  if (r->npeers == 0) {
    for (size_t i = 0; i < ps->naw; i++) wsy_free(ps->aw[i].state);
    wsy_free(ps->aw);
    wsy_free(ps);
    r->peers = NULL;
  }
  room_unload_if_idle(e, r);
}

/* ---- the endpoint ------------------------------------------------------------ */

static int y_open(ws_conn *w, const httpd_req *req) {
  engine *e = ws_conn_ud(w);
  const char *name = httpd_req_path(req) + strlen(YJS_PREFIX);
  if (e->clustered) {
    refuse(w, NULL, NULL, 4405, "Yjs rooms are not served in cluster mode yet (docs/CLUSTER.md)", NULL);
    return 0;
  }
  if (!auth_room_valid(name, strlen(name))) {
    refuse(w, NULL, NULL, 4400, "the room name must be 1-128 characters of A-Z a-z 0-9 . _ : @ -", NULL);
    return 0;
  }
  auth_identity id = {0};
  char token[8192];
  char why[200] = "";
  char user[80];
  int has_token = httpd_req_query_param(req, "token", token, sizeof token) == 0;
  auth_result ar = AUTH_OK;
  if (!has_token && e->cfg->insecure_demo && httpd_req_query_param(req, "user", user, sizeof user) == 0) {
    /* --insecure-demo, as hello's "user": whoever the client says it is,
     * with the demo's grants (docs/YJS.md). */
    if (!auth_user_valid(user, strlen(user))) {
      refuse(w, NULL, name, 4401, "user must be 1-64 characters of A-Z a-z 0-9 . _ @ -", NULL);
      return 0;
    }
    auth_identity_demo(&id, user);
  } else if (!has_token) {
    refuse(w, NULL, name, 4401, "a token is required (?token=JWT)", NULL);
    return 0;
  } else {
    ar = auth_verify_cfg_why(&e->auth, token, (int64_t)time(NULL), &id, why, sizeof why);
  }
  if (ar != AUTH_OK) {
    refuse(w, NULL, name, 4401,
           ar == AUTH_NO_SECRET ? "this server accepts no tokens" : ar == AUTH_EXPIRED ? "token_expired" : "token_invalid",
           why);
    return 0;
  }
  unsigned perms = auth_room_perms(&id, name);
  if (!(perms & AUTH_READ)) {
    /* Told in y-protocols first, so the app's permission-denied handler
     * runs, then closed for good (4403). */
    ypeer tmp = {.w = w};
    permission_denied(&tmp, "the token does not grant this room");
    refuse(w, id.user, name, 4403, "forbidden: the token does not grant this room", NULL);
    auth_identity_free(&id);
    return 0;
  }
  int err = 0;
  room *r = room_open(e, name, &yjs_room_kind, &err);
  if (!r) {
    if (err == ROOM_WRONG_KIND) refuse(w, id.user, name, 4409, "the room is a document room: use /v1/ws", NULL);
    else refuse(w, id.user, name, WS_CLOSE_INTERNAL, "the room could not be loaded", wsy_strerror(err));
    auth_identity_free(&id);
    return 0;
  }
  ypeer *p = wsy_calloc(1, sizeof *p);
  p->e = e;
  p->w = w;
  p->r = r;
  p->perms = perms;
  snprintf(p->user, sizeof p->user, "%s", id.user);
  auth_identity_free(&id);
  if (!r->peers) r->peers = wsy_calloc(1, sizeof(ypeers));
  ypeers *ps = P(r);
  p->next = ps->head;
  if (ps->head) ps->head->prev = p;
  ps->head = p;
  r->npeers++;
  ws_conn_set_user(w, p);
  char addr[80] = "-";
  net_conn_peer(ws_conn_net(w), addr, sizeof addr);
  wsy_log_event(LOG_INFO, "yjs_open", "remote", addr, "user", p->user, "room", name, "grant",
                perms & AUTH_WRITE ? "rw" : "r", (const char *)NULL);
  /* The server's step 1: clients send what the committed document lacks. */
  const ybuf *d = yroom_doc(e, r, &err);
  ybuf sv = {0};
  if (!d || yupdate_state_vector(d->p, d->len, &sv, why, sizeof why) != 0) {
    ybuf_free(&sv);
    ws_close(w, WS_CLOSE_INTERNAL, "the document could not be read");
    return 0;
  }
  send_sync(p, SYNC_STEP1, sv.p, sv.len);
  ybuf_free(&sv);
  if (ps->naw) {
    ybuf m = {0};
    awareness_msg(&m, ps, NULL, 0);
    send_ybuf(p, &m);
    ybuf_free(&m);
  }
  return 0;
}

/* One sync message; 0 or a close code with *why. */
static unsigned on_sync(ypeer *p, lib0_rd *rd, const char **why, char *detail, size_t dlen) {
  engine *e = p->e;
  uint64_t type;
  const uint8_t *b;
  size_t n;
  if (lib0_read_varuint(rd, &type) || type > SYNC_UPDATE || lib0_read_varbytes(rd, &b, &n) || lib0_rd_left(rd)) {
    *why = "malformed sync message";
    return 4400;
  }
  if (type == SYNC_STEP1) {
    int err = 0;
    const ybuf *d = yroom_doc(e, p->r, &err);
    ybuf diff = {0};
    if (!d) {
      *why = "the document could not be read";
      return WS_CLOSE_INTERNAL;
    }
    if (yupdate_diff(d->p, d->len, b, n, &diff, detail, dlen) != 0) {
      ybuf_free(&diff);
      *why = "malformed state vector";
      return 4400;
    }
    send_sync(p, SYNC_STEP2, diff.p, diff.len);
    ybuf_free(&diff);
    return 0;
  }
  if (yupdate_validate(b, n, detail, dlen) != 0) {
    *why = "malformed Yjs update";
    return 4400;
  }
  if (!(p->perms & AUTH_WRITE)) {
    /* Read-only: never applied, stored or relayed. Its step 2 (sent on
     * every connect) is dropped quietly; an edit is answered. */
    if (type == SYNC_UPDATE) permission_denied(p, "read-only: this token may not change the room");
    return 0;
  }
  if (yroom_update(e, p->r, b, n) != 0) {
    *why = "the room is recovering from a storage failure";
    return WS_CLOSE_TRY_AGAIN_LATER;
  }
  return 0;
}

static void y_message(ws_conn *w, int opcode, uint8_t *data, size_t len) {
  ypeer *p = ws_conn_user(w);
  if (!p) return; /* refused, closing */
  const char *why = NULL;
  char detail[200] = "";
  unsigned code = 0;
  lib0_rd rd;
  lib0_rd_init(&rd, data, len);
  uint64_t type;
  if (opcode != WS_OP_BINARY) {
    why = "y-protocols messages are binary";
    code = 4400;
  } else if (lib0_read_varuint(&rd, &type) != 0) {
    why = "malformed message";
    code = 4400;
  } else if (type == MSG_SYNC) {
    code = on_sync(p, &rd, &why, detail, sizeof detail);
  } else if (type == MSG_AWARENESS) {
    const uint8_t *u;
    size_t n;
    if (lib0_read_varbytes(&rd, &u, &n) || lib0_rd_left(&rd)) {
      why = "malformed awareness message";
      code = 4400;
    } else {
      code = on_awareness(p, data, len, u, n, &why);
    }
  } else if (type == MSG_QUERY_AWARENESS) {
    ybuf m = {0};
    awareness_msg(&m, P(p->r), NULL, 0);
    send_ybuf(p, &m);
    ybuf_free(&m);
  } else if (type != MSG_AUTH) { /* auth from a client means nothing: ignored */
    why = "unknown message type";
    code = 4400;
  }
  /* A reload (a write to a broken room) may have closed w already. */
  if (code && ws_conn_user(w) == p) refuse(w, p->user, p->r->name, code, why, detail[0] ? detail : NULL);
}

/* Runs once, when w leaves OPEN: inside ws_close too. */
static void y_close(ws_conn *w) {
  ypeer *p = ws_conn_user(w);
  if (!p) return;
  char addr[80] = "-", cs[12];
  net_conn_peer(ws_conn_net(w), addr, sizeof addr);
  snprintf(cs, sizeof cs, "%u", ws_conn_close_code(w, NULL));
  wsy_log_event(LOG_INFO, "yjs_close", "remote", addr, "user", p->user, "room", p->r->name, "code", cs,
                (const char *)NULL);
  ws_conn_set_user(w, NULL);
  detach(p);
  wsy_free(p);
}

const ws_endpoint engine_yjs_endpoint = {
  .name = "yjs",
  .on_open = y_open,
  .on_message = y_message,
  .on_close = y_close,
};
