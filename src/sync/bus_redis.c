/* bus_redis.c -- the bus between nodes (bus.h) over Redis pub/sub, with
** hiredis 0.14's async API and its libuv adapter on the engine's loop.
**
** Two connections to one Redis: CMD carries PUBLISH, SELECT and the PING
** watchdog; SUB carries SUBSCRIBE and the messages. A connection in
** subscribed mode can send nothing else, hence two.
**
** Channels (pub/sub is global to a Redis server: the DB of the URL is
** SELECTed on CMD but does not separate two clusters on one server; give
** them different servers):
**   wsync:r:<room>   the room's entries and ephemeral messages; subscribed
**                    while this node has members there (counted);
**   wsync:n:<node>   messages to one node (bus_send_node);
**   wsync:hb         heartbeats: each node publishes its id every second.
**
** Wire format (version 1), big-endian, strings as a u16 length then bytes,
** length 0 for an absent one (NULL):
**   room channel:  u8 1 | str origin | str room | str epoch | u64 seq |
**                  str except | str only_user | payload (the JSON text of
**                  the frame, to the end of the message)
**                  or, for several entries of one room gathered during a
**                  hold (bus_hold, one loop turn's commit): u8 2, then per
**                  message a u32 length and a version-1 message, in order
**   node channel:  u8 1 | str from | str kind | body (to the end)
**   heartbeat:     the node id, a space, and the node's incarnation (16
**                  random hex digits made at start), as text: a node that
**                  restarts under the same id within the TTL is seen gone
**                  (its old members leave, its locks go) and back at once
** A message that does not parse (version, lengths, NUL in a string, room not
** the channel's, payload not UTF-8) is counted (bus_stats.malformed) and
** dropped. A node ignores its own messages (same origin).
**
** The link, drawn (each arrow names the function that takes it):
**
**   DOWN --rb_connect--> CONNECTING --rb_maybe_up--> UP
**     ^                      |                        |
**     +------rb_drop---------+--------rb_drop---------+
**
**   CONNECTING: both contexts made; CMD has SELECT (when a DB is given) and
**   a PING queued, SUB the SUBSCRIBEs of every counted room, then of the
**   heartbeat and node channels. UP when CMD's PING has answered and SUB's
**   node channel is confirmed (Redis answers in order, so every room before
**   it is subscribed too): ev.link(1). rb_drop frees both contexts, reports
**   ev.link(0) if the link had been reported up, and arms the retry timer
**   (backoff 100 ms doubling to 2 s, back to 100 ms once up). A connection
**   attempt not UP within BUS_REDIS_CONNECT_TIMEOUT_MS is dropped too.
**
** Contexts are freed only by rb_drop and bus_free, which first clear the
** pointer in rbus: every hiredis callback compares its context with the
** current one and ignores a stale one (hiredis calls pending callbacks with
** a NULL reply while freeing). The rbus itself lives until its two timers
** are closed, after any free hiredis deferred to the end of a callback. */
#include "bus_int.h"

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/map.h"
#include "../common/utf8.h"
#include "../ws/ws.h"
#include "../ws/ws_conn.h"

#include "bus_redis_int.h"

static void rb_connect(rbus *b);

static uint64_t rb_now(const rbus *b) { return uv_now(b->loop); }

/* ---- formatting: commands are written as RESP straight into b->out ---------- */

static char *out_reserve(rbus *b, size_t n) {
  if (n > b->out_cap) {
    b->out_cap = n + n / 2 + 256;
    b->out = wsy_realloc(b->out, b->out_cap);
  }
  return b->out;
}

static size_t put_u16(uint8_t *p, size_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
  return 2;
}

size_t rb_put_str(uint8_t *p, const char *s, size_t n) {
  put_u16(p, n);
  if (n) memcpy(p + 2, s, n);
  return 2 + n;
}

size_t rb_slen(const char *s) { return s ? strlen(s) : 0; }

/* PUBLISH chan_prefix+chan_name, with the message's room for mlen bytes
 * written by the caller at *msg. Returns the command's length; the caller
 * fills [*msg, *msg + mlen) then hands b->out to hiredis. */
size_t rb_format_publish(rbus *b, const char *prefix, const char *name, size_t mlen, uint8_t **msg) {
  size_t plen = strlen(prefix), nlen = strlen(name), clen = plen + nlen;
  char *o = out_reserve(b, 64 + clen + mlen);
  int h = sprintf(o, "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n", clen);
  memcpy(o + h, prefix, plen);
  memcpy(o + h + plen, name, nlen);
  size_t at = (size_t)h + clen;
  at += (size_t)sprintf(o + at, "\r\n$%zu\r\n", mlen);
  *msg = (uint8_t *)o + at;
  memcpy(o + at + mlen, "\r\n", 2);
  return at + mlen + 2;
}

static void on_cmd_reply(redisAsyncContext *ac, void *reply, void *priv) {
  rbus *b = priv;
  if (reply && ac == b->cmd) b->last_reply = rb_now(b);
}

/* Queues the formatted command on CMD; 0 or -1 (not sent). */
int rb_send_cmd(rbus *b, size_t len) {
  if (!b->up || !b->cmd) return -1;
  /* Redis not reading (stopped, saturated): bounded memory until the
   * watchdog drops the link. */
  if (sdslen(b->cmd->c.obuf) > RB_MAX_OUTBUF) return -1;
  return redisAsyncFormattedCommand(b->cmd, on_cmd_reply, b, b->out, len) == REDIS_OK ? 0 : -1;
}

/* The payload of a frame made by ws_frame_new (one unmasked frame). */
static const uint8_t *frame_text(const net_chunk *f, size_t *len) {
  uint8_t l7 = f->data[1] & 0x7f;
  size_t hdr = l7 < 126 ? 2 : l7 == 126 ? 4 : 10;
  *len = f->len - hdr;
  return f->data + hdr;
}

/* ---- the bus operations -------------------------------------------------------- */

static void rb_publish(bus *base, const bus_msg *m) {
  rbus *b = (rbus *)base;
  b->base.ev.deliver(b->base.ev.ud, m);
  if (b->freeing) return;
  size_t plen;
  const uint8_t *payload = frame_text(m->frame, &plen);
  size_t rlen = strlen(m->room);
  if (!b->up || rlen == 0 || rlen > 0xffff || rb_slen(m->epoch) > 0xffff || rb_slen(m->except) > 0xffff ||
      rb_slen(m->only_user) > 0xffff) {
    b->dropped++;
    return;
  }
  size_t mlen = rb_room_msg_len(b, m, plen);
  if (b->holding && mlen <= RB_GATHER_MAX) {
    rb_gather_add(b, m, payload, plen, mlen);
    return;
  }
  uintptr_t at = b->holding ? (uintptr_t)map_get(&b->gather_at, m->room) : 0;
  if (at) rb_gather_send(b, &b->gather[at - 1]); /* what came before it first */
  uint8_t *p;
  size_t len = rb_format_publish(b, RB_ROOM_PREFIX, m->room, mlen, &p);
  rb_room_msg_write(b, m, payload, plen, p);
  if (rb_send_cmd(b, len) != 0) b->dropped++;
}

static int rb_send_node(bus *base, const char *node, const char *kind, const void *body, size_t len) {
  rbus *b = (rbus *)base;
  size_t nlen = rb_slen(node), klen = rb_slen(kind), flen = strlen(b->node);
  if (nlen == 0 || klen > 0xffff || (len && !body)) return WSY_INVAL;
  if (!b->up) return WSY_AGAIN;
  uint8_t *p;
  size_t clen = rb_format_publish(b, RB_NODE_PREFIX, node, 1 + 2 + flen + 2 + klen + len, &p);
  *p++ = RB_VERSION;
  p += rb_put_str(p, b->node, flen);
  p += rb_put_str(p, kind, klen);
  if (len) memcpy(p, body, len);
  return rb_send_cmd(b, clen) == 0 ? 0 : WSY_AGAIN;
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv);

static void sub_command(rbus *b, const char *verb, const char *room) {
  if (!b->sub) return;
  size_t clen = sizeof RB_ROOM_PREFIX - 1 + strlen(room);
  char *o = out_reserve(b, 64 + clen);
  int n = sprintf(o, "*2\r\n$%zu\r\n%s\r\n$%zu\r\n" RB_ROOM_PREFIX "%s\r\n", strlen(verb), verb, clen, room);
  /* An error means the context is going away: the next connection
   * resubscribes every counted room. */
  (void)redisAsyncFormattedCommand(b->sub, on_sub_reply, b, o, (size_t)n);
}

static void rb_subscribe(bus *base, const char *room) {
  rbus *b = (rbus *)base;
  uintptr_t n = (uintptr_t)map_get(&b->rooms, room);
  map_put(&b->rooms, room, (void *)(n + 1));
  if (n == 0) sub_command(b, "SUBSCRIBE", room);
}

static void rb_unsubscribe(bus *base, const char *room) {
  rbus *b = (rbus *)base;
  uintptr_t n = (uintptr_t)map_get(&b->rooms, room);
  if (n == 0) return; /* not subscribed: the caller's bug, nothing to undo */
  if (n > 1) {
    map_put(&b->rooms, room, (void *)(n - 1));
    return;
  }
  map_del(&b->rooms, room);
  sub_command(b, "UNSUBSCRIBE", room);
}

static void rb_stats(const bus *base, bus_stats *out) {
  const rbus *b = (const rbus *)base;
  out->received = b->received;
  out->dropped = b->dropped;
  out->reconnects = b->reconnects;
  out->malformed = b->malformed;
  out->up = b->up;
  out->nodes = (unsigned)map_len(&b->nodes);
}

/* ---- the link ------------------------------------------------------------------- */

static void free_ctx(redisAsyncContext **pac) {
  redisAsyncContext *ac = *pac;
  *pac = NULL; /* first: the callbacks run while freeing see a stale context */
  if (ac) redisAsyncFree(ac);
}

/* The link failed (why: for the log): both connections go, the retry timer
 * is armed, and the engine hears of it once if it had been told it was up. */
static void rb_drop(rbus *b, const char *why) {
  free_ctx(&b->cmd);
  free_ctx(&b->sub);
  b->cmd_ready = b->sub_ready = 0;
  b->attempt_at = b->ping_at = 0;
  if (b->freeing) return;
  uv_timer_stop(&b->retry);
  if (b->up) {
    b->up = 0;
    b->warned = 1;
    log_warn("bus: the link to redis://%s:%d went down (%s); reconnecting", b->host, b->port, why);
    if (b->base.ev.link) b->base.ev.link(b->base.ev.ud, 0);
    if (b->freeing) return;
  } else if (!b->warned) {
    /* Once per outage at warn (Redis down at start, refusing us): the
     * retries every few seconds after it go to debug. */
    b->warned = 1;
    log_warn("bus: cannot reach redis://%s:%d (%s); retrying", b->host, b->port, why);
  } else {
    log_debug("bus: redis://%s:%d: %s; retrying in %u ms", b->host, b->port, why, b->backoff_ms);
  }
}

static void on_retry(uv_timer_t *t) {
  rbus *b = t->data;
  if (!b->freeing && !b->cmd && !b->sub) rb_connect(b);
}

static void rb_fail(rbus *b, const char *why) {
  rb_drop(b, why);
  if (b->freeing) return;
  uv_timer_start(&b->retry, on_retry, b->backoff_ms, 0);
  b->backoff_ms = b->backoff_ms * 2 > BUS_REDIS_BACKOFF_MAX_MS ? BUS_REDIS_BACKOFF_MAX_MS : b->backoff_ms * 2;
}

static void send_heartbeat(rbus *b) {
  uint8_t *p;
  size_t nlen = strlen(b->node);
  size_t len = rb_format_publish(b, RB_HB_CHANNEL, "", nlen + 1 + 16, &p);
  memcpy(p, b->node, nlen);
  p[nlen] = ' ';
  memcpy(p + nlen + 1, b->inc, 16);
  (void)rb_send_cmd(b, len);
  b->next_hb = rb_now(b) + BUS_REDIS_HEARTBEAT_MS;
}

static void rb_maybe_up(rbus *b) {
  if (b->up || !b->cmd_ready || !b->sub_ready) return;
  uint64_t now = rb_now(b);
  b->up = 1;
  b->warned = 0;
  b->attempt_at = 0;
  b->backoff_ms = BUS_REDIS_BACKOFF_MIN_MS;
  if (b->ever_up) b->reconnects++;
  /* Nobody could be heard while the link was down: every known node gets a
   * full TTL from now to be heard again before it is reported gone. */
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&b->nodes, &i, &k, &v);) ((rnode *)v)->seen = now;
  send_heartbeat(b);
  b->next_ping = now + BUS_REDIS_PING_MS;
  if (b->ever_up) log_info("bus: the link to redis://%s:%d is up again", b->host, b->port);
  b->ever_up = 1;
  if (b->base.ev.link) b->base.ev.link(b->base.ev.ud, 1);
}

static void on_pong(redisAsyncContext *ac, void *reply, void *priv) {
  rbus *b = priv;
  redisReply *r = reply;
  if (!r || ac != b->cmd) return;
  if (r->type == REDIS_REPLY_ERROR) { /* NOAUTH, LOADING, ...: not usable yet */
    char why[160];
    snprintf(why, sizeof why, "PING: %s", r->str);
    rb_fail(b, why);
    return;
  }
  b->ping_at = 0;
  b->last_reply = rb_now(b);
  if (!b->cmd_ready) {
    b->cmd_ready = 1;
    rb_maybe_up(b);
  }
}

static void on_select(redisAsyncContext *ac, void *reply, void *priv) {
  rbus *b = priv;
  redisReply *r = reply;
  if (!r || ac != b->cmd) return;
  if (r->type == REDIS_REPLY_ERROR) {
    char why[160];
    snprintf(why, sizeof why, "SELECT %d: %s", b->db, r->str);
    rb_fail(b, why);
  }
}

static void send_ping(rbus *b) {
  if (redisAsyncCommand(b->cmd, on_pong, b, "PING") == REDIS_OK) b->ping_at = rb_now(b);
}

static void on_connected(const redisAsyncContext *ac, int status) {
  rbus *b = ac->data;
  if (status == REDIS_OK) return;
  /* hiredis frees ac once this returns: forget it, and do not free it here
   * (hiredis is not inside a callback as far as its flags go). */
  if (ac == b->cmd) b->cmd = NULL;
  else if (ac == b->sub) b->sub = NULL;
  else return;
  rb_fail(b, ac->errstr ? ac->errstr : "connect failed");
}

static void on_disconnected(const redisAsyncContext *ac, int status) {
  rbus *b = ac->data;
  if (ac == b->cmd) b->cmd = NULL;
  else if (ac == b->sub) b->sub = NULL;
  else return; /* freed by us: already handled */
  rb_fail(b, ac->errstr && ac->err ? ac->errstr : "connection closed");
}

static redisAsyncContext *rb_open(rbus *b) {
  redisAsyncContext *ac = redisAsyncConnect(b->host, b->port);
  if (!ac) return NULL;
  if (ac->err) {
    log_debug("bus: redis://%s:%d: %s", b->host, b->port, ac->errstr);
    redisAsyncFree(ac);
    return NULL;
  }
  ac->data = b;
  if (redisLibuvAttach(ac, b->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    return NULL;
  }
  /* The bus never keeps the loop alive by itself: a server that is shutting
   * down exits once its connections are gone (the engine frees the bus). */
  uv_unref((uv_handle_t *)&((redisLibuvEvents *)ac->ev.data)->handle);
  redisAsyncSetConnectCallback(ac, on_connected);
  redisAsyncSetDisconnectCallback(ac, on_disconnected);
  return ac;
}

/* Subscribes SUB to every counted room (in batches), then to the heartbeat
 * and node channels, whose confirmation says all of it is in place. */
static void resubscribe(rbus *b) {
  const char *argv[RB_RESUB_BATCH + 1];
  char *chans[RB_RESUB_BATCH];
  size_t n = 0;
  const char *k;
  void *v;
  argv[0] = "SUBSCRIBE";
  for (size_t i = 0;;) {
    int more = map_next(&b->rooms, &i, &k, &v);
    if (more) {
      size_t kl = strlen(k);
      chans[n] = wsy_malloc(sizeof RB_ROOM_PREFIX + kl);
      memcpy(chans[n], RB_ROOM_PREFIX, sizeof RB_ROOM_PREFIX - 1);
      memcpy(chans[n] + sizeof RB_ROOM_PREFIX - 1, k, kl + 1);
      argv[1 + n] = chans[n];
      n++;
    }
    if (n == RB_RESUB_BATCH || (!more && n)) {
      (void)redisAsyncCommandArgv(b->sub, on_sub_reply, b, (int)n + 1, argv, NULL);
      for (size_t j = 0; j < n; j++) wsy_free(chans[j]);
      n = 0;
    }
    if (!more) break;
  }
  (void)redisAsyncCommand(b->sub, on_sub_reply, b, "SUBSCRIBE %s %s", RB_HB_CHANNEL, b->node_chan);
}

static void rb_connect(rbus *b) {
  b->attempt_at = rb_now(b);
  b->cmd_ready = b->sub_ready = 0;
  b->cmd = rb_open(b);
  b->sub = b->cmd ? rb_open(b) : NULL;
  if (!b->cmd || !b->sub) {
    rb_fail(b, "cannot connect");
    return;
  }
  /* Queued now, written once connected. */
  if (b->db >= 0) (void)redisAsyncCommand(b->cmd, on_select, b, "SELECT %d", b->db);
  send_ping(b);
  resubscribe(b);
}

/* ---- what SUB receives ---------------------------------------------------------- */

typedef struct reader {
  const uint8_t *p, *end;
  int bad;
} reader;

/* The next string, copied NUL-terminated into dst (which must hold it):
 * NULL when absent (length 0). */
static const char *read_str(reader *r, char **dst) {
  if (r->bad || r->end - r->p < 2) {
    r->bad = 1;
    return NULL;
  }
  size_t n = (size_t)r->p[0] << 8 | r->p[1];
  r->p += 2;
  if ((size_t)(r->end - r->p) < n || memchr(r->p, 0, n)) {
    r->bad = 1;
    return NULL;
  }
  if (n == 0) return NULL;
  char *s = *dst;
  memcpy(s, r->p, n);
  s[n] = 0;
  *dst += n + 1;
  r->p += n;
  return s;
}

static char *strs_reserve(rbus *b, size_t n) {
  if (n > b->strs_cap) {
    b->strs_cap = n + 256;
    b->strs = wsy_realloc(b->strs, b->strs_cap);
  }
  return b->strs;
}

static void on_room_message(rbus *b, const char *chan_room, size_t crlen, const uint8_t *msg, size_t len);

/* Several room messages in one (RB_GATHERED): each in turn, until one
 * does not fit in what is left. */
static void on_gathered(rbus *b, const char *chan_room, size_t crlen, const uint8_t *msg, size_t len) {
  const uint8_t *p = msg + 1, *end = msg + len;
  while (p < end) {
    if (end - p < 4) break;
    size_t n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    p += 4;
    if (n < 1 || (size_t)(end - p) < n || p[0] != RB_VERSION) break;
    on_room_message(b, chan_room, crlen, p, n);
    p += n;
  }
  if (p != end) b->malformed++;
}

static void on_room_message(rbus *b, const char *chan_room, size_t crlen, const uint8_t *msg, size_t len) {
  if (len >= 1 && msg[0] == RB_GATHERED) {
    on_gathered(b, chan_room, crlen, msg, len);
    return;
  }
  reader r = {msg + 1, msg + len, len < 1 || msg[0] != RB_VERSION};
  char *dst = strs_reserve(b, len + 8); /* every string fits, with its NUL */
  const char *origin = read_str(&r, &dst), *room = read_str(&r, &dst), *epoch = read_str(&r, &dst);
  uint64_t seq = 0;
  if (!r.bad && r.end - r.p >= 8)
    for (int i = 0; i < 8; i++) seq = seq << 8 | *r.p++;
  else r.bad = 1;
  const char *except = read_str(&r, &dst), *only_user = read_str(&r, &dst);
  if (r.bad || !origin || !room || strlen(room) != crlen || memcmp(room, chan_room, crlen) != 0 ||
      wsy_utf8_scan(r.p, (size_t)(r.end - r.p), NULL, NULL) != WSY_OK) {
    b->malformed++;
    return;
  }
  if (strcmp(origin, b->node) == 0) return; /* our own, delivered when published */
  if (!map_get(&b->rooms, room)) return;   /* unsubscribed while it travelled */
  net_chunk *frame = ws_frame_new(WS_OP_TEXT, r.p, (size_t)(r.end - r.p));
  bus_msg m = {.room = room, .epoch = epoch, .seq = seq, .frame = frame, .except = except,
               .only_user = only_user, .origin = origin};
  b->received++;
  b->base.ev.deliver(b->base.ev.ud, &m);
  net_chunk_unref(frame);
}

static void on_direct_message(rbus *b, const uint8_t *msg, size_t len) {
  reader r = {msg + 1, msg + len, len < 1 || msg[0] != RB_VERSION};
  char *dst = strs_reserve(b, len + 8);
  const char *from = read_str(&r, &dst), *kind = read_str(&r, &dst);
  if (r.bad || !from) {
    b->malformed++;
    return;
  }
  b->received++;
  if (b->base.ev.direct) b->base.ev.direct(b->base.ev.ud, from, kind ? kind : "", r.p, (size_t)(r.end - r.p));
}

static void on_heartbeat(rbus *b, const char *id, size_t len) {
  if (len == 0 || len > 0xffff || memchr(id, 0, len)) {
    b->malformed++;
    return;
  }
  char *name = strs_reserve(b, len + 1);
  memcpy(name, id, len);
  name[len] = 0;
  char inc[17] = "";
  char *sp = strrchr(name, ' ');
  if (sp) { /* "<node> <incarnation>" */
    snprintf(inc, sizeof inc, "%s", sp + 1);
    *sp = 0;
  }
  if (!*name) {
    b->malformed++;
    return;
  }
  if (strcmp(name, b->node) == 0) return;
  rnode *n = map_get(&b->nodes, name);
  if (n && strcmp(n->inc, inc) == 0) {
    n->seen = rb_now(b);
    return;
  }
  if (n) { /* restarted under the same id: what it had before is gone */
    log_info("bus: node %s restarted (incarnation %s, was %s)", name, inc, n->inc);
    snprintf(n->inc, sizeof n->inc, "%s", inc);
    n->seen = rb_now(b);
    if (b->base.ev.node) b->base.ev.node(b->base.ev.ud, name, 0);
    if (b->base.ev.node) b->base.ev.node(b->base.ev.ud, name, 1);
    return;
  }
  n = wsy_malloc(sizeof *n);
  n->seen = rb_now(b);
  snprintf(n->inc, sizeof n->inc, "%s", inc);
  map_put(&b->nodes, name, n);
  /* A node just started: it hears of this one at once, not a second later
   * (presence asks every node it knows when a room loads). */
  if (b->up) send_heartbeat(b);
  if (b->base.ev.node) b->base.ev.node(b->base.ev.ud, name, 1);
}

static int is_str(const redisReply *r) { return r->type == REDIS_REPLY_STRING; }

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv) {
  rbus *b = priv;
  const redisReply *r = reply;
  if (!r || ac != b->sub || b->freeing) return;
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || !is_str(r->element[0]) || !is_str(r->element[1]))
    return;
  const char *type = r->element[0]->str, *chan = r->element[1]->str;
  size_t clen = r->element[1]->len;
  if (strcmp(type, "message") == 0 && is_str(r->element[2])) {
    const uint8_t *msg = (const uint8_t *)r->element[2]->str;
    size_t len = r->element[2]->len;
    if (clen > sizeof RB_ROOM_PREFIX - 1 && memcmp(chan, RB_ROOM_PREFIX, sizeof RB_ROOM_PREFIX - 1) == 0)
      on_room_message(b, chan + sizeof RB_ROOM_PREFIX - 1, clen - (sizeof RB_ROOM_PREFIX - 1), msg, len);
    else if (strcmp(chan, RB_HB_CHANNEL) == 0)
      on_heartbeat(b, (const char *)msg, len);
    else if (strcmp(chan, b->node_chan) == 0)
      on_direct_message(b, msg, len);
  } else if (strcmp(type, "subscribe") == 0 && strcmp(chan, b->node_chan) == 0 && !b->sub_ready) {
    b->sub_ready = 1;
    rb_maybe_up(b);
  }
}

/* ---- the timer: heartbeats, node TTLs, the PING watchdog, connect timeout ------- */

static void expire_nodes(rbus *b, uint64_t now) {
  const char *k;
  void *v;
  for (;;) {
    const char *gone = NULL;
    for (size_t i = 0; map_next(&b->nodes, &i, &k, &v);)
      if (now - ((rnode *)v)->seen >= BUS_REDIS_NODE_TTL_MS) {
        gone = k;
        break;
      }
    if (!gone) return;
    char *name = wsy_strndup(gone, strlen(gone));
    wsy_free(map_del(&b->nodes, name));
    if (b->base.ev.node) b->base.ev.node(b->base.ev.ud, name, 0);
    wsy_free(name);
    if (b->freeing || !b->up) return;
  }
}

static void on_beat(uv_timer_t *t) {
  rbus *b = t->data;
  uint64_t now = rb_now(b);
  if (b->attempt_at && !b->up && now - b->attempt_at >= BUS_REDIS_CONNECT_TIMEOUT_MS) {
    rb_fail(b, "connect timed out");
    return;
  }
  if (!b->up) return;
  /* Redis answered nothing for the timeout while a PING was out: stopped
   * or unreachable. Replies to publishes count as signs of life, so a long
   * queue ahead of the PING is not taken for a dead server. */
  if (b->ping_at) {
    uint64_t since = b->last_reply > b->ping_at ? b->last_reply : b->ping_at;
    if (now - since >= BUS_REDIS_PING_TIMEOUT_MS) {
      rb_fail(b, "no answer to PING");
      return;
    }
  } else if (now >= b->next_ping) {
    send_ping(b);
    b->next_ping = now + BUS_REDIS_PING_MS;
  }
  if (now >= b->next_hb) send_heartbeat(b);
  expire_nodes(b, now);
}

/* ---- life ------------------------------------------------------------------------ */

static void rb_destroy(rbus *b) {
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&b->nodes, &i, &k, &v);) wsy_free(v);
  map_free(&b->nodes);
  map_free(&b->rooms);
  rb_gather_free(b);
  wsy_free(b->host);
  wsy_free(b->node);
  wsy_free(b->node_chan);
  wsy_free(b->out);
  wsy_free(b->strs);
  wsy_free(b);
}

static void on_timer_closed(uv_handle_t *h) {
  rbus *b = h->data;
  if (--b->open_handles == 0) rb_destroy(b);
}

static void rb_free(bus *base) {
  rbus *b = (rbus *)base;
  b->freeing = 1;
  free_ctx(&b->cmd);
  free_ctx(&b->sub);
  uv_close((uv_handle_t *)&b->beat, on_timer_closed);
  uv_close((uv_handle_t *)&b->retry, on_timer_closed);
}

static const bus_ops redis_ops = {.name = "redis",
                                  .publish = rb_publish,
                                  .hold = rb_hold,
                                  .subscribe = rb_subscribe,
                                  .unsubscribe = rb_unsubscribe,
                                  .send_node = rb_send_node,
                                  .stats = rb_stats,
                                  .free = rb_free};

int bus_redis_new(uv_loop_t *loop, const char *url, const char *node_id, const bus_events *ev, bus **out,
                  char *err, size_t errlen) {
  *out = NULL;
  if (!ev || !ev->deliver) {
    snprintf(err, errlen, "the bus needs a deliver callback");
    return WSY_INVAL;
  }
  if (!node_id || !wsy_charset_ok(node_id, strlen(node_id), 128, "._:@-")) {
    snprintf(err, errlen, "the node id must be 1-128 characters of A-Z a-z 0-9 . _ : @ -");
    return WSY_INVAL;
  }
  rbus *b = wsy_calloc(1, sizeof *b);
  int rc = bus_redis_parse_url(url, &b->host, &b->port, &b->db, err, errlen);
  if (rc != 0) {
    wsy_free(b);
    return rc;
  }
  b->base.ops = &redis_ops;
  b->base.ev = *ev;
  b->loop = loop;
  b->node = wsy_strndup(node_id, strlen(node_id));
  unsigned char rnd[8];
  if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0) {
    uint64_t t = uv_hrtime() ^ ((uint64_t)getpid() << 32); /* distinct enough per start */
    memcpy(rnd, &t, sizeof rnd);
  }
  for (int i = 0; i < 8; i++) snprintf(b->inc + 2 * i, 3, "%02x", rnd[i]);
  size_t nl = strlen(node_id);
  b->node_chan = wsy_malloc(sizeof RB_NODE_PREFIX + nl);
  memcpy(b->node_chan, RB_NODE_PREFIX, sizeof RB_NODE_PREFIX - 1);
  memcpy(b->node_chan + sizeof RB_NODE_PREFIX - 1, node_id, nl + 1);
  b->backoff_ms = BUS_REDIS_BACKOFF_MIN_MS;
  map_init(&b->rooms);
  map_init(&b->gather_at);
  map_init(&b->nodes);
  uv_timer_init(loop, &b->beat);
  uv_timer_init(loop, &b->retry);
  b->beat.data = b->retry.data = b;
  b->open_handles = 2;
  uv_timer_start(&b->beat, on_beat, RB_BEAT_MS, RB_BEAT_MS);
  uv_unref((uv_handle_t *)&b->beat);
  uv_unref((uv_handle_t *)&b->retry);
  rb_connect(b);
  *out = &b->base;
  return 0;
}
