/* opfwd.c -- a session's ops decided on the room's owner node (opfwd.h). */
#include "opfwd.h"

#include <string.h>

#include "../auth/auth.h"
#include "../common/jsonr.h"
#include "../common/jsonw.h"
#include "../common/log.h"
#include "../ws/ws.h"
#include "cluster.h"
#include "commit.h"
#include "hook.h"
#include "proto.h"
#include "room.h"
#include "sess.h"
#include "sync.h"

/* ---- state ---------------------------------------------------------------- */

/* An op out at another node, waiting for its answer (origin side). */
typedef struct ofw_rec {
  struct ofw_rec *next;
  sess *s;        /* a reference */
  json_t *req;    /* a reference, or NULL and its text (proto_keep) */
  char *text;
  size_t len;
  char *cid;      /* its cid (forwarded ops and publishes have one) */
  uint64_t sent;  /* loop ms */
} ofw_rec;

/* A session's ops out for one room, in the order sent, all at one node. */
typedef struct ofw_stream {
  char node[64];
  ofw_rec *head, **tail;
  unsigned n;
  sess *holding; /* a reference: held (hook.h) by a write that waits for the stream (opfwd_wait) */
} ofw_stream;

/* An answer waiting until the origin has delivered its room up to after. */
typedef struct ofw_held {
  struct ofw_held *next;
  sess *s; /* a reference */
  net_chunk *frame;
  uint64_t after, at;
} ofw_held;

/* The owner's stand-in for (origin node, session, room): a session first,
 * so that a sess pointer is a ghost pointer (sess_unref frees both). */
typedef struct ghost {
  sess s;
  char origin[64];
  char wire[SESS_WIRE_MAX + 1];
  char room[STORE_ROOM_MAX + 1];
  uint64_t last; /* loop ms of its last op or answer */
} ghost;

struct opfwd {
  map streams; /* "<session key>\x1f<room>" -> ofw_stream (origin) */
  map ghosts;  /* "<wire token>\x1f<room>" -> ghost (owner) */
  map suspect; /* node -> loop ms until which it is passed over */
  int link_down;
  jw out;
};

static opfwd *state_of(engine *e) {
  if (!e->ofw) {
    e->ofw = wsy_calloc(1, sizeof *e->ofw);
    map_init(&e->ofw->streams);
    map_init(&e->ofw->ghosts);
    map_init(&e->ofw->suspect);
  }
  return e->ofw;
}

static void pair_key(char *out, size_t n, const char *a, const char *rname) { snprintf(out, n, "%s\x1f%s", a, rname); }
#define PAIR_MAX (SESS_WIRE_MAX + STORE_ROOM_MAX + 2)
static const char EPOCH_KEY[] = "\0epoch"; /* a forwarded request's incarnation (on_forward) */

/* ---- the owner of a room ----------------------------------------------------- */

static uint64_t score(const char *node, const char *rname) {
  /* FNV-1a, then a 64-bit finalizer */
  uint64_t h = wsy_fnv1a(wsy_fnv1a_byte(wsy_fnv1a(WSY_FNV1A_BASIS, node), 0x1f), rname);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

static int suspect(engine *e, const char *node) {
  void *until = map_get(&e->ofw->suspect, node);
  return until && (uint64_t)(uintptr_t)until > now_ms(e);
}

/* The node that owns rname now, or NULL when it is this one. */
static const char *owner_of(engine *e, const char *rname) {
  const char *best = e->node_id, *k;
  uint64_t top = score(e->node_id, rname);
  void *v;
  for (size_t i = 0; map_next(&e->nodes, &i, &k, &v);) {
    if (suspect(e, k)) continue;
    uint64_t sc = score(k, rname);
    if (sc > top || (sc == top && strcmp(k, best) < 0)) {
      top = sc;
      best = k;
    }
  }
  return best == e->node_id ? NULL : best;
}

/* ---- origin ------------------------------------------------------------------- */

static void reroute_node(engine *e, const char *node);
static void stream_reroute(engine *e, const char *key);

/* Forgets the stream; the session it held (or NULL) is returned, to be
 * let go (stream_release) once the caller is done with the map. */
static sess *stream_drop(opfwd *st, const char *key, ofw_stream *fs) {
  sess *held = fs->holding;
  map_del(&st->streams, key);
  wsy_free(fs);
  return held;
}

static void stream_release(sess *held) {
  if (!held) return;
  hook_hold_release(held); /* the write that waited goes first, then what queued behind it */
  sess_unref(held);
}

int opfwd_wait(sess *s, const char *type, json_t *req) {
  opfwd *st = s->e->ofw;
  const char *rname = jstr(req, "room");
  if (!st || !rname || s->ghost) return 0;
  /* A stored publish with a cid joins the stream instead (proto.c). */
  if (!strcmp(type, "publish") && jstr(req, "cid") && !json_is_true(json_object_get(req, "ephemeral"))) return 0;
  char key[PAIR_MAX];
  pair_key(key, sizeof key, s->token, rname);
  ofw_stream *fs = map_get(&st->streams, key);
  if (!fs || !fs->n || fs->holding) return 0;
  fs->holding = s;
  s->refs++;
  hook_hold_front(s, req); /* held: its later messages queue behind it */
  return 1;
}

int opfwd_route(sess *s, member *m, json_t *req) {
  engine *e = s->e;
  opfwd *st = state_of(e);
  if (st->link_down || s->ghost) return 0;
  char key[PAIR_MAX];
  pair_key(key, sizeof key, s->token, m->r->name);
  ofw_stream *fs = map_get(&st->streams, key);
  const char *to;
  if (fs && fs->n) {
    to = fs->node;
  } else {
    if (m->inflight) return 0; /* its writes being decided here go first */
    to = owner_of(e, m->r->name);
    if (!to) return 0;
  }
  /* A marker for a number jansson cannot hold (proto.c) has no JSON text:
   * such a rare op is decided here (a walk of the request only for ops
   * that would go out, not for those decided here anyway). The ops of
   * its stream still out are taken back first, to keep the order. */
  if (sync_has_number_marker(req)) {
    if (fs && fs->n) stream_reroute(e, key);
    return 0;
  }
  char wire[SESS_WIRE_MAX + 1];
  sess_token_wire(s, wire, sizeof wire);
  jw *w = &st->out;
  jw_reset(w);
  jw_raw(w, wire, strlen(wire));
  jw_raw(w, "\n", 1);
  jw_raw(w, m->r->name, strlen(m->r->name));
  jw_raw(w, "\n", 1);
  jw_raw(w, m->r->epoch, strlen(m->r->epoch));
  jw_raw(w, "\n", 1);
  jw_raw(w, s->id.user, strlen(s->id.user));
  jw_raw(w, "\n", 1);
  jw_raw(w, s->dkey, strlen(s->dkey));
  jw_raw(w, "\n", 1);
  if (e->raw_of == req) jw_raw(w, e->raw, e->raw_len); /* as it came: the fast reader took it */
  else jw_value(w, req);
  if (bus_send_node(e->bus, to, "op.f", w->p, w->len) != 0) {
    /* Out of reach (the link is down, or its queue full): what is out
     * there is decided again first, then this op, here. */
    if (fs && fs->n) reroute_node(e, to);
    return 0;
  }
  if (!fs) {
    fs = wsy_calloc(1, sizeof *fs);
    fs->tail = &fs->head;
    map_put(&st->streams, key, fs);
  }
  if (!fs->n) snprintf(fs->node, sizeof fs->node, "%s", to);
  ofw_rec *rec = wsy_calloc(1, sizeof *rec);
  rec->s = s;
  s->refs++;
  rec->req = proto_keep(e, req, &rec->text, &rec->len);
  const char *cid = jstr(req, "cid");
  rec->cid = cid ? wsy_strndup(cid, strlen(cid)) : NULL;
  rec->sent = now_ms(e);
  *fs->tail = rec;
  fs->tail = &rec->next;
  fs->n++;
  commit_inflight_add(e, s, m->r); /* a leave waits for the answer */
  e->ops_forwarded++;
  return 1;
}

/* One rec answered or taken back: no longer counted in its member. */
static void rec_done(engine *e, ofw_rec *rec, const char *room_name) {
  (void)e;
  member *m = room_membership(rec->s, room_name);
  if (m) commit_inflight_done(rec->s, m->r);
}

static void rec_free(ofw_rec *rec) {
  sess_unref(rec->s);
  json_decref(rec->req);
  wsy_free(rec->text);
  wsy_free(rec->cid);
  wsy_free(rec);
}

/* The stream's ops are decided again, in order, here (the node they were
 * at is gone, late, or out of reach). */
static void stream_reroute(engine *e, const char *key) {
  opfwd *st = e->ofw;
  ofw_stream *fs = map_get(&st->streams, key);
  if (!fs) return;
  const char *sep = strchr(key, '\x1f');
  char room_name[STORE_ROOM_MAX + 1];
  snprintf(room_name, sizeof room_name, "%s", sep ? sep + 1 : "");
  ofw_rec *list = fs->head;
  sess *held = stream_drop(st, key, fs);
  for (ofw_rec *rec = list, *next; rec; rec = next) {
    next = rec->next;
    e->ops_rerouted++;
    /* Decided before it stops counting: a leave waiting for it would
     * otherwise go first, and the op would never be answered. Still
     * counted, it is decided here (opfwd_route), not sent on. */
    if (!rec->s->ended && room_membership(rec->s, room_name)) { /* op or publish */
      json_t *req = rec->req ? json_incref(rec->req) : proto_reread(rec->text, rec->len);
      if (req) proto_redecide(rec->s, req);
      else sess_error(rec->s, NULL, "internal", "out of memory: the write was not decided; retry", NULL, NULL);
      json_decref(req);
    }
    rec_done(e, rec, room_name);
    rec_free(rec);
  }
  stream_release(held);
}

/* Every stream out at node (NULL: every stream). */
static void reroute_node(engine *e, const char *node_in) {
  opfwd *st = e->ofw;
  if (!st) return;
  /* A copy: node_in may be a stream's own name, freed with it below. */
  char node[64];
  snprintf(node, sizeof node, "%s", node_in ? node_in : "");
  /* The keys first, in one pass (deciding again may change the map), then
   * each stream still out there: linear in the streams, not quadratic. */
  size_t n = 0, cap = map_len(&st->streams);
  char **keys = cap ? wsy_malloc(cap * sizeof *keys) : NULL;
  const char *k;
  void *v;
  for (size_t i = 0; n < cap && map_next(&st->streams, &i, &k, &v);) {
    ofw_stream *fs = v;
    if (fs->n && (!node_in || !strcmp(fs->node, node))) keys[n++] = wsy_strndup(k, strlen(k));
  }
  for (size_t i = 0; i < n; i++) {
    ofw_stream *fs = map_get(&st->streams, keys[i]);
    if (fs && fs->n && (!node_in || !strcmp(fs->node, node))) stream_reroute(e, keys[i]);
    wsy_free(keys[i]);
  }
  wsy_free(keys);
}

static void held_send(ofw_held *h) {
  if (!h->s->ended) sess_send(h->s, h->frame);
  sess_unref(h->s);
  net_chunk_unref(h->frame);
  wsy_free(h);
}

void opfwd_delivered(engine *e, room *r) {
  (void)e;
  while (r->fwd_held && r->fwd_held->after <= r->delivered) {
    ofw_held *h = r->fwd_held;
    r->fwd_held = h->next;
    held_send(h);
  }
}

/* The first `"cid":"` of an answer is its own (acks and errors put it
 * before any nested object; a cid has no characters that need escaping). */
static int answer_cid_is(const char *p, size_t len, const char *cid) {
  static const char pat[] = "\"cid\":\"";
  size_t pl = sizeof pat - 1, cl = strlen(cid);
  for (size_t i = 0; i + pl <= len; i++)
    if (!memcmp(p + i, pat, pl)) return i + pl + cl < len && !memcmp(p + i + pl, cid, cl) && p[i + pl + cl] == '"';
  return 0;
}

/* "op.r": <wire>\n<room>\n<after>\n<the message> */
static void on_answer(engine *e, const char *from, const uint8_t *body, size_t len) {
  opfwd *st = state_of(e);
  const char *p = (const char *)body, *end = p + len, *f[3];
  size_t fl[3];
  for (int i = 0; i < 3; i++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return;
    f[i] = p;
    fl[i] = (size_t)(nl - p);
    p = nl + 1;
  }
  char tkey[SESS_KEY_LEN + 1], node[SESS_NODE_MAX + 1], room_name[STORE_ROOM_MAX + 1], key[PAIR_MAX];
  if (sess_token_split(f[0], fl[0], tkey, node) != 0 || fl[1] > STORE_ROOM_MAX || fl[2] > 20) return;
  memcpy(room_name, f[1], fl[1]);
  room_name[fl[1]] = '\0';
  uint64_t after = strtoull(f[2], NULL, 10);
  pair_key(key, sizeof key, tkey, room_name);
  ofw_stream *fs = map_get(&st->streams, key);
  ofw_rec *rec = fs ? fs->head : NULL;
  const char *cid = rec ? rec->cid : NULL;
  if (!rec || strcmp(fs->node, from) != 0 || !cid || !answer_cid_is(p, (size_t)(end - p), cid)) {
    /* Taken back meanwhile (decided again elsewhere): its answer is that one's. */
    log_debug("forwarded op: a late answer from node %s for room %s dropped", from, room_name);
    return;
  }
  fs->head = rec->next;
  if (!fs->head) fs->tail = &fs->head;
  sess *held = --fs->n == 0 ? stream_drop(st, key, fs) : NULL;
  net_chunk *frame = ws_frame_new(WS_OP_TEXT, p, (size_t)(end - p));
  member *m = room_membership(rec->s, room_name);
  room *r = m ? m->r : room_ready(map_get(&e->rooms, room_name));
  if (!rec->s->ended) {
    if (r && (r->fwd_held || r->delivered < after)) {
      ofw_held *h = wsy_calloc(1, sizeof *h);
      h->s = rec->s;
      rec->s->refs++;
      h->frame = net_chunk_ref(frame);
      h->after = after;
      h->at = now_ms(e);
      ofw_held **pp = &r->fwd_held;
      while (*pp) pp = &(*pp)->next;
      *pp = h;
    } else {
      sess_send(rec->s, frame);
    }
  }
  net_chunk_unref(frame);
  rec_done(e, rec, room_name); /* last: a leave that waited for it may go on now */
  rec_free(rec);
  stream_release(held);
}

/* ---- owner ---------------------------------------------------------------------- */

int opfwd_ghost_is(const sess *g, const char *rid) { return g->ghost && !strcmp(((const ghost *)g)->wire, rid); }

void opfwd_ghost_send(sess *gs, net_chunk *frame) {
  ghost *g = (ghost *)gs;
  engine *e = gs->e;
  opfwd *st = state_of(e);
  room *r = map_get(&e->rooms, g->room);
  size_t len;
  const uint8_t *msg = frame_payload(frame, &len);
  char head[SESS_WIRE_MAX + STORE_ROOM_MAX + 32];
  int hl = snprintf(head, sizeof head, "%s\n%s\n%llu\n", g->wire, g->room,
                    (unsigned long long)(r ? r->delivered : 0));
  jw *w = &st->out;
  jw_reset(w);
  jw_raw(w, head, (size_t)hl);
  jw_raw(w, (const char *)msg, len);
  g->last = now_ms(e);
  if (bus_send_node(e->bus, g->origin, "op.r", w->p, w->len) != 0)
    log_debug("forwarded op: the answer to node %s is lost (link down): it decides the op again", g->origin);
}

static ghost *ghost_get(engine *e, const char *origin, const char *wire, const char *room_name, const char *user,
                        const char *dkey) {
  opfwd *st = state_of(e);
  char key[PAIR_MAX];
  pair_key(key, sizeof key, wire, room_name);
  ghost *g = map_get(&st->ghosts, key);
  if (g) return g;
  g = wsy_calloc(1, sizeof *g);
  sess *s = &g->s;
  s->e = e;
  s->refs = 1;
  s->welcomed = 1;
  s->ghost = 1;
  s->id.user = wsy_strndup(user, strlen(user));
  s->dkey = wsy_strndup(dkey, strlen(dkey));
  s->device = s->dkey + strlen(user) + 1;
  char tkey[SESS_KEY_LEN + 1], node[SESS_NODE_MAX + 1];
  if (sess_token_split(wire, strlen(wire), tkey, node) == 0) snprintf(s->token, sizeof s->token, "%s", tkey);
  snprintf(g->origin, sizeof g->origin, "%s", origin);
  snprintf(g->wire, sizeof g->wire, "%s", wire);
  snprintf(g->room, sizeof g->room, "%s", room_name);
  map_put(&st->ghosts, key, g);
  return g;
}

void opfwd_ghost_go(sess *gs, json_t *req) {
  ghost *g = (ghost *)gs;
  engine *e = gs->e;
  g->last = now_ms(e);
  room *r = room_ready(map_get(&e->rooms, g->room));
  if (!r) {
    if (cluster_join_load(e, g->room, gs, req)) return; /* read without blocking; then here again */
    sess_error(gs, req, "internal", "the room could not be loaded", NULL, NULL);
    return;
  }
  if (r->gone) { /* deleted through another node: its members have left, as the session has */
    sess_error(gs, req, "not_joined", "join the room first", NULL, NULL);
    return;
  }
  /* Sent for another incarnation of the room than this replica's: read
   * the room again (this node may be behind); still another one after
   * that read, the session's was deleted (it is told so on its node). */
  json_t *ej = json_object_getn(req, EPOCH_KEY, sizeof EPOCH_KEY - 1);
  if (json_is_string(ej) && strcmp(json_string_value(ej), r->epoch) != 0) {
    if (r->fresh_pass) sess_error(gs, req, "not_joined", "join the room first", NULL, NULL);
    else cluster_join_refetch(e, r, gs, req, 0);
    return;
  }
  if (!room_membership(gs, r->name)) {
    member *m = &gs->m0; /* one room per ghost; not in r's member list */
    memset(m, 0, sizeof *m);
    m->s = gs;
    m->r = r;
    gs->rooms = m;
    gs->nrooms = 1;
    r->pins++;
  }
  /* Only ops and stored publishes are forwarded (opfwd_route's callers). */
  const char *type = jstr(req, "type");
  if (type && !strcmp(type, "publish")) proto_redecide(gs, req);
  else if (type && !strcmp(type, "op")) proto_op_decided(gs, req);
  else sess_error(gs, req, "bad_request", "only ops and stored publishes are decided for another node", "type", NULL);
}

/* "op.f": <wire>\n<room>\n<epoch>\n<user>\n<dkey>\n<the request> */
static void on_forward(engine *e, const char *from, const uint8_t *body, size_t len) {
  const char *p = (const char *)body, *end = p + len, *f[5];
  size_t fl[5];
  for (int i = 0; i < 5; i++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) goto bad;
    f[i] = p;
    fl[i] = (size_t)(nl - p);
    p = nl + 1;
  }
  char wire[SESS_WIRE_MAX + 1], room_name[STORE_ROOM_MAX + 1], epoch[STORE_EPOCH_MAX + 1], user[256], dkey[512];
  char tkey[SESS_KEY_LEN + 1], node[SESS_NODE_MAX + 1];
  if (fl[0] > SESS_WIRE_MAX || sess_token_split(f[0], fl[0], tkey, node) != 0 || strcmp(node, from) != 0 ||
      fl[1] > STORE_ROOM_MAX || !auth_room_valid(f[1], fl[1]) || !fl[2] || fl[2] > STORE_EPOCH_MAX ||
      memchr(f[2], '\0', fl[2]) || !fl[3] || fl[3] >= sizeof user || fl[4] >= sizeof dkey || fl[4] <= fl[3] ||
      memcmp(f[4], f[3], fl[3]) != 0 || f[4][fl[3]] != ':')
    goto bad;
  /* The client's text, which the origin's fast reader took, or jw_value
   * of the origin's tree (which holds no marker, opfwd_route): read back
   * as it was. */
  json_t *req = jsonr_parse(p, (size_t)(end - p), JSONR_MAX_DEPTH);
  if (!json_is_object(req)) {
    json_error_t jerr;
    json_decref(req);
    req = json_loadb(p, (size_t)(end - p), 0, &jerr); /* what jsonr leaves to jansson */
  }
  if (!json_is_object(req)) {
    json_decref(req);
    goto bad; /* its origin decides it again when the answer is late */
  }
  memcpy(wire, f[0], fl[0]);
  wire[fl[0]] = '\0';
  memcpy(room_name, f[1], fl[1]);
  room_name[fl[1]] = '\0';
  memcpy(epoch, f[2], fl[2]);
  epoch[fl[2]] = '\0';
  memcpy(user, f[3], fl[3]);
  user[fl[3]] = '\0';
  memcpy(dkey, f[4], fl[4]);
  dkey[fl[4]] = '\0';
  /* The incarnation the session's member joined, under a name no client
   * can send (proto.c refuses U+0000): checked when it is decided. */
  json_object_setn_new_nocheck(req, EPOCH_KEY, sizeof EPOCH_KEY - 1, json_string(epoch));
  ghost *g = ghost_get(e, from, wire, room_name, user, dkey);
  e->ops_forwarded_in++;
  g->last = now_ms(e);
  if (hook_held(&g->s)) hook_hold_push(&g->s, req); /* behind its op waiting for the room */
  else opfwd_ghost_go(&g->s, req);
  json_decref(req);
  return;
bad:
  log_warn("bus: a malformed forwarded op from node %s dropped", from);
}

/* The ghost is no longer a member: its room is let go (NULL), or handed
 * back to the caller to unload if idle. */
static room *ghost_leave(sess *s) {
  member *m = s->rooms;
  if (!m) return NULL;
  room *r = m->r;
  s->rooms = NULL;
  s->nrooms = 0;
  m->s = NULL;
  r->pins--;
  return r;
}

static void ghost_free(engine *e, const char *key, ghost *g) {
  map_del(&e->ofw->ghosts, key);
  room *r = ghost_leave(&g->s);
  if (r) room_unload_if_idle(e, r);
  sess_unref(&g->s);
}

void opfwd_room_gone(engine *e, room *r) {
  const char *k;
  void *v;
  if (!e->ofw) return;
  for (size_t i = 0; map_next(&e->ofw->ghosts, &i, &k, &v);) {
    ghost *g = v;
    if (g->s.rooms && g->s.rooms->r == r) (void)ghost_leave(&g->s); /* r unloads when its reload is done */
  }
}

static int ghost_idle(engine *e, ghost *g, uint64_t now) {
  (void)e;
  return g->s.refs == 1 && !g->s.hold && (!g->s.rooms || !g->s.rooms->inflight) && now - g->last >= OPFWD_GHOST_IDLE_MS;
}

/* ---- events ------------------------------------------------------------------------ */

void opfwd_direct(engine *e, const char *from, const char *kind, const uint8_t *body, size_t len) {
  if (e->shutting_down) return; /* its sessions are gone; the origin decides again when it hears nothing */
  if (!strcmp(kind, "op.f")) on_forward(e, from, body, len);
  else on_answer(e, from, body, len);
}

void opfwd_node(engine *e, const char *node, int up) {
  if (up || !e->ofw) return;
  reroute_node(e, node);
}

void opfwd_link(engine *e, int up) {
  opfwd *st = state_of(e);
  if (up) {
    st->link_down = 0;
    return;
  }
  if (st->link_down) return;
  st->link_down = 1;
  reroute_node(e, NULL);
}

void opfwd_sweep(engine *e) {
  opfwd *st = e->ofw;
  if (!st) return;
  uint64_t now = now_ms(e);
  /* Answers late: the node is passed over for a while, its streams go again. */
  for (;;) {
    char late[64] = "";
    const char *k;
    void *v;
    for (size_t i = 0; map_next(&st->streams, &i, &k, &v);) {
      ofw_stream *fs = v;
      if (fs->n && now - fs->head->sent >= OPFWD_ANSWER_MS) {
        snprintf(late, sizeof late, "%s", fs->node);
        break;
      }
    }
    if (!late[0]) break;
    log_warn("forwarded ops: node %s has not answered for %d ms; its rooms are decided elsewhere for %d s", late,
             OPFWD_ANSWER_MS, OPFWD_SUSPECT_MS / 1000);
    map_put(&st->suspect, late, (void *)(uintptr_t)(now + OPFWD_SUSPECT_MS));
    reroute_node(e, late);
  }
  char gone[PAIR_MAX];
  for (;;) { /* expired suspicions, idle ghosts: one at a time (the maps change) */
    const char *k;
    void *v;
    gone[0] = '\0';
    for (size_t i = 0; map_next(&st->suspect, &i, &k, &v);)
      if ((uint64_t)(uintptr_t)v <= now) {
        snprintf(gone, sizeof gone, "%s", k);
        break;
      }
    if (!gone[0]) break;
    map_del(&st->suspect, gone);
  }
  { /* idle ghosts: their keys in one pass, then each (freeing changes the map) */
    size_t n = 0, cap = map_len(&st->ghosts);
    char **keys = cap ? wsy_malloc(cap * sizeof *keys) : NULL;
    const char *k;
    void *v;
    for (size_t i = 0; n < cap && map_next(&st->ghosts, &i, &k, &v);)
      if (ghost_idle(e, v, now)) keys[n++] = wsy_strndup(k, strlen(k));
    for (size_t i = 0; i < n; i++) {
      ghost *g = map_get(&st->ghosts, keys[i]);
      if (g && ghost_idle(e, g, now)) ghost_free(e, keys[i], g);
      wsy_free(keys[i]);
    }
    wsy_free(keys);
  }
  /* Answers whose "after" the room has not reached in time (a refill that
   * keeps failing): sent anyway rather than never. */
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->rooms, &i, &k, &v);) {
    room *r = v;
    while (r->fwd_held && now - r->fwd_held->at >= OPFWD_HELD_MS) {
      ofw_held *h = r->fwd_held;
      r->fwd_held = h->next;
      log_warn("room %s: an answer of a forwarded op waited %d ms for seq %llu (delivered %llu): sent", r->name,
               OPFWD_HELD_MS, (unsigned long long)h->after, (unsigned long long)r->delivered);
      held_send(h);
    }
  }
}

void opfwd_room_free(room *r) {
  for (ofw_held *h = r->fwd_held, *next; h; h = next) {
    next = h->next;
    sess_unref(h->s);
    net_chunk_unref(h->frame);
    wsy_free(h);
  }
  r->fwd_held = NULL;
}

void opfwd_free_streams(engine *e) {
  opfwd *st = e->ofw;
  if (!st) return;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&st->streams, &i, &k, &v);) {
    ofw_stream *fs = v;
    for (ofw_rec *rec = fs->head, *next; rec; rec = next) {
      next = rec->next;
      rec_free(rec); /* its session has ended: the client sends it again after a restart */
    }
    if (fs->holding) sess_unref(fs->holding);
    wsy_free(fs);
  }
  map_free(&st->streams);
  map_init(&st->streams);
}

void opfwd_free(engine *e) {
  opfwd *st = e->ofw;
  if (!st) return;
  opfwd_free_streams(e);
  for (;;) {
    const char *k;
    void *v;
    size_t i = 0;
    if (!map_next(&st->ghosts, &i, &k, &v)) break;
    char key[PAIR_MAX];
    snprintf(key, sizeof key, "%s", k);
    ghost_free(e, key, v);
  }
  map_free(&st->ghosts);
  map_free(&st->suspect);
  jw_free(&st->out);
  wsy_free(st);
  e->ofw = NULL;
}
