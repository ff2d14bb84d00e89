/* ws_conn.c -- WebSocket connections: upgrade, delivery, pings, close.
 *
 * States of one connection (ws_conn.state):
 *
 *   OPEN --ws_close()--------------> CLOSE_SENT --peer close / timeout--> DONE
 *   OPEN --peer close (echoed)-----------------------------------------> DONE
 *   OPEN --protocol error, slow consumer, idle (close frame, no wait)--> DONE
 *   any  --TCP EOF or error--------------------------------------------> DONE
 *
 * DONE always goes through net_conn_end(): flush what is queued (the close
 * frame last), FIN, wait briefly for the peer's FIN, close. The endpoint's
 * on_close runs exactly once, when the connection leaves OPEN, so fan-out
 * never targets a connection that can no longer take data frames. */
#include "ws_conn.h"

#include <stdio.h>
#include <string.h>

#include "../common/log.h"
#include "../http/httpd.h"
#include "ws_pmd.h"

enum { WS_OPEN, WS_CLOSE_SENT, WS_DONE };

struct ws_conn {
  ws_parser parser;
  const ws_route *rt;
  void *user;
  uint32_t last_rx;        /* loop ms, wrapping: compared by differences */
  uint32_t close_deadline;
  uint32_t ep_slot;        /* the endpoint's index of this connection */
  uint16_t close_code;     /* the first close code sent or received, 0 while none */
  uint8_t state;
  /* One byte of flags: every idle connection carries this struct, and a
   * byte more would move it to the allocator's next size class. */
  uint8_t ping_outstanding : 1;
  uint8_t ep_closed : 1;
  uint8_t close_by_peer : 1;  /* the close code is the peer's */
  uint8_t pmd_bits : 4;       /* permessage-deflate: server_max_window_bits (8-15); 0: off */
};

static const conn_ops ws_ops;

size_t ws_conn_ext_size(void) { return sizeof(ws_conn); }
conn *ws_conn_net(ws_conn *w) { return net_conn_from_ext(w); }
void *ws_conn_ud(ws_conn *w) { return w->rt->ud; }
void *ws_conn_user(ws_conn *w) { return w->user; }
void ws_conn_set_user(ws_conn *w, void *user) { w->user = user; }
uint32_t ws_conn_slot(const ws_conn *w) { return w->ep_slot; }
void ws_conn_set_slot(ws_conn *w, uint32_t slot) { w->ep_slot = slot; }
unsigned ws_conn_close_code(const ws_conn *w, int *by_peer) {
  if (by_peer) *by_peer = w->close_by_peer;
  return w->close_code ? w->close_code : 1006;
}
ws_conn *ws_conn_of(conn *c) { return net_conn_ops(c) == &ws_ops ? net_conn_ext(c) : NULL; }
int ws_conn_compressed(const ws_conn *w) { return w->pmd_bits != 0; }

net_chunk *ws_frame_new(int opcode, const void *payload, size_t len) {
  uint8_t hdr[WS_MAX_HEADER];
  size_t hl = ws_frame_header(hdr, 1, opcode, len, NULL);
  net_chunk *ch = net_chunk_new(hl + len);
  memcpy(ch->data, hdr, hl);
  if (len) memcpy(ch->data + hl, payload, len);
  return ch;
}

static void ep_closed(ws_conn *w) {
  if (w->ep_closed) return;
  w->ep_closed = 1;
  if (w->rt && w->rt->ep->on_close) w->rt->ep->on_close(w);
}

static net_chunk *close_frame(unsigned code, const char *reason) {
  uint8_t p[125];
  size_t n = 0;
  if (code != WS_CLOSE_NO_STATUS) {
    p[0] = (uint8_t)(code >> 8);
    p[1] = (uint8_t)code;
    n = 2;
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > sizeof p - 2) rl = sizeof p - 2;
    if (rl) memcpy(p + 2, reason, rl);
    n += rl;
  }
  return ws_frame_new(WS_OP_CLOSE, p, n);
}

/* Queues a close frame past the queue cap: it is the last thing sent. */
static void send_close(ws_conn *w, unsigned code, const char *reason) {
  if (!w->close_code) w->close_code = (uint16_t)code;
  net_chunk *ch = close_frame(code, reason);
  net_conn_send_force(ws_conn_net(w), ch);
  net_chunk_unref(ch);
}

/* Sends a close frame and ends the connection without waiting for the
 * peer's reply: for errors, where the peer is not to be trusted further. */
static void fail(ws_conn *w, unsigned code, const char *reason) {
  conn *c = ws_conn_net(w);
  if (w->state == WS_OPEN) send_close(w, code, reason);
  w->state = WS_DONE;
  ep_closed(w);
  net_conn_end(c);
}

void ws_close(ws_conn *w, unsigned code, const char *reason) {
  if (w->state != WS_OPEN) return;
  conn *c = ws_conn_net(w);
  send_close(w, code, reason);
  w->state = WS_CLOSE_SENT;
  w->close_deadline = (uint32_t)(net_loop_now(net_conn_loop(c)) + w->rt->cfg->close_timeout_ms);
  ep_closed(w);
}

/* ---- permessage-deflate on the way out ------------------------------------ */

/* The payload of a frame made by ws_frame_new(), when it is a data frame
 * worth compressing; NULL otherwise. */
static const uint8_t *frame_payload(const net_chunk *f, int *opcode, size_t *len) {
  if (f->len < 2) return NULL;
  uint8_t b0 = f->data[0], l7 = f->data[1] & 0x7f;
  int op = b0 & 0x0f;
  if (!(b0 & 0x80) || (b0 & 0x70) || (op != WS_OP_TEXT && op != WS_OP_BINARY) || (f->data[1] & 0x80))
    return NULL;
  size_t hl = l7 == 126 ? 4 : l7 == 127 ? 10 : 2;
  if (f->len < hl) return NULL;
  *opcode = op;
  *len = f->len - hl;
  return *len >= WS_PMD_MIN_SIZE ? f->data + hl : NULL;
}

/* The window to compress a message of len bytes with for a client that
 * allowed 2^bits: a message no longer than the window never refers further
 * back than it, so the one compressed with 15 bits serves every client; a
 * longer one is compressed with the client's window (zlib's smallest raw
 * window is 9 bits: a client asking for 8 gets such messages uncompressed).
 * Returns 0 for "send uncompressed". */
static int window_for(size_t len, int bits) {
  if (bits >= 15 || len <= ((size_t)1 << bits)) return 15;
  return bits >= 9 ? bits : 0;
}

/* Compresses the payload into a frame with RSV1 set: one reference, owned
 * by the caller; NULL when compression does not make the message smaller. */
static net_chunk *deflate_frame(int opcode, const uint8_t *payload, size_t len, int wbits) {
  static buf z; /* scratch, kept between calls: the loop is single-threaded */
  if (!z.max) buf_init(&z, (size_t)UINT32_MAX);
  z.len = 0;
  if (ws_pmd_deflate(payload, len, wbits, &z) != WSY_OK || z.len >= len) {
    if (z.cap > 1 << 20) buf_free(&z); /* do not keep a large scratch buffer */
    return NULL;
  }
  uint8_t hdr[WS_MAX_HEADER];
  size_t hl = ws_frame_header(hdr, 1, opcode, z.len, NULL);
  hdr[0] |= 0x40; /* RSV1: compressed (RFC 7692 6) */
  net_chunk *ch = net_chunk_new(hl + z.len);
  memcpy(ch->data, hdr, hl);
  memcpy(ch->data + hl, z.data, z.len);
  if (z.cap > 1 << 20) buf_free(&z);
  return ch;
}

/* Frames recently compressed, by (frame, window): a broadcast is sent to its
 * recipients one after another, so the first compresses and the others
 * reuse. An entry holds a reference to its frame, so the address cannot be
 * reused by another frame while it is cached; it is dropped as soon as the
 * cache holds the only reference (nobody can send that frame again). */
#define ZCACHE 8
static struct {
  net_chunk *src, *z; /* z NULL: not worth compressing, send src */
  uint8_t bits;
} zcache[ZCACHE];
static unsigned zcache_n;

static void zcache_drop(unsigned i) {
  net_chunk_unref(zcache[i].src);
  net_chunk_unref(zcache[i].z);
  memmove(&zcache[i], &zcache[i + 1], (zcache_n - i - 1) * sizeof zcache[0]);
  zcache_n--;
  ws_pmd_set_cached(zcache_n);
}

/* Entries whose frame nobody else holds any more. */
static void zcache_sweep(void) {
  for (unsigned i = zcache_n; i-- > 0;)
    if (zcache[i].src->refs == 1) zcache_drop(i);
}

void ws_conn_pmd_release(void) {
  while (zcache_n) zcache_drop(zcache_n - 1);
  ws_pmd_release();
}

/* What to send to a connection that agreed to compression: the shared
 * compressed frame, or frame itself. Borrowed: no reference is added. */
static net_chunk *compressed_for(ws_conn *w, net_chunk *frame) {
  int op;
  size_t len;
  const uint8_t *pl = frame_payload(frame, &op, &len);
  if (!pl) return frame;
  int bits = window_for(len, w->pmd_bits);
  if (!bits) return frame;
  for (unsigned i = 0; i < zcache_n; i++)
    if (zcache[i].src == frame && zcache[i].bits == bits) {
      if (zcache[i].z) ws_pmd_count_shared(1, 0);
      return zcache[i].z ? zcache[i].z : frame;
    }
  zcache_sweep();
  if (zcache_n == ZCACHE) zcache_drop(ZCACHE - 1); /* the oldest */
  net_chunk *z = deflate_frame(op, pl, len, bits);
  if (!z) ws_pmd_count_shared(0, 1);
  memmove(&zcache[1], &zcache[0], zcache_n * sizeof zcache[0]);
  zcache[0].src = net_chunk_ref(frame);
  zcache[0].z = z;
  zcache[0].bits = (uint8_t)bits;
  zcache_n++;
  ws_pmd_set_cached(zcache_n);
  return z ? z : frame;
}

/* Queues frame; a consumer over its queue cap is closed with 1013. */
static int queue(ws_conn *w, net_chunk *frame) {
  conn *c = ws_conn_net(w);
  int rc = net_conn_send(c, frame);
  if (rc == WSY_SLOW) {
    char peer[80];
    net_conn_peer(c, peer, sizeof peer);
    log_warn("slow consumer %s: %zu bytes queued, closing with 1013", peer, net_conn_queued(c));
    ((net_stats *)net_loop_stats(net_conn_loop(c)))->slow_closes++;
    /* What no write has started on is dropped: the client catches up from
     * the log after it reconnects. */
    net_conn_discard_pending(c);
    fail(w, WS_CLOSE_TRY_AGAIN_LATER, "slow consumer");
  }
  return rc;
}

int ws_send_frame(ws_conn *w, net_chunk *frame) {
  if (w->state != WS_OPEN) return WSY_CLOSED;
  if (w->pmd_bits) frame = compressed_for(w, frame);
  return queue(w, frame);
}

int ws_send(ws_conn *w, int opcode, const void *payload, size_t len) {
  if (w->state != WS_OPEN) return WSY_CLOSED;
  net_chunk *ch = NULL;
  /* A message for one connection is compressed here, not cached. */
  int bits = w->pmd_bits && len >= WS_PMD_MIN_SIZE && (opcode == WS_OP_TEXT || opcode == WS_OP_BINARY)
                 ? window_for(len, w->pmd_bits)
                 : 0;
  if (bits) ch = deflate_frame(opcode, payload, len, bits);
  if (bits && !ch) ws_pmd_count_shared(0, 1);
  if (!ch) ch = ws_frame_new(opcode, payload, len);
  int rc = queue(w, ch);
  net_chunk_unref(ch);
  return rc;
}

/* ---- parser events ------------------------------------------------------ */

static int on_message(void *ctx, int opcode, uint8_t *data, size_t len) {
  ws_conn *w = ctx;
  if (w->state != WS_OPEN) return 0; /* after our close frame: discarded */
  w->rt->ep->on_message(w, opcode, data, len);
  return net_conn_closing(ws_conn_net(w));
}

static int on_ping(void *ctx, const uint8_t *data, size_t len) {
  ws_conn *w = ctx;
  if (w->state == WS_OPEN) ws_send(w, WS_OP_PONG, data, len);
  return net_conn_closing(ws_conn_net(w));
}

static int on_pong(void *ctx, const uint8_t *data, size_t len) {
  (void)data;
  (void)len;
  ((ws_conn *)ctx)->ping_outstanding = 0;
  return 0;
}

static int on_close(void *ctx, unsigned code, const uint8_t *reason, size_t len) {
  ws_conn *w = ctx;
  conn *c = ws_conn_net(w);
  log_debug("peer close %u %.*s", code, (int)len, (const char *)reason);
  if (!w->close_code) {
    w->close_code = (uint16_t)code;
    w->close_by_peer = 1;
  }
  if (w->state == WS_OPEN) send_close(w, code, NULL); /* echo the peer's code (RFC 6455 5.5.1) */
  w->state = WS_DONE;
  ep_closed(w);
  net_conn_end(c);
  return 1;
}

static const ws_parser_cb parser_cb = {
  .on_message = on_message,
  .on_ping = on_ping,
  .on_pong = on_pong,
  .on_close = on_close,
};

/* ---- conn ops ------------------------------------------------------------- */

static void ws_on_data(conn *c, uint8_t *data, size_t len) {
  ws_conn *w = net_conn_ext(c);
  w->last_rx = (uint32_t)net_loop_now(net_conn_loop(c));
  int rc = ws_parser_feed(&w->parser, data, len);
  if (rc == WSY_OK || rc == WSY_CLOSED) return;
  unsigned code = ws_parser_close_code(&w->parser);
  log_debug("websocket protocol violation (%s): closing with %u", wsy_strerror(rc), code);
  fail(w, code, rc == WSY_BAD_UTF8    ? "invalid UTF-8"
                : rc == WSY_TOO_LARGE ? "message too big"
                : rc == WSY_NOMEM     ? "out of memory"
                                      : "protocol error");
}

static void ws_on_eof(conn *c) {
  ws_conn *w = net_conn_ext(c);
  w->state = WS_DONE;
  ep_closed(w);
}

static void ws_on_tick(conn *c, uint64_t now) {
  ws_conn *w = net_conn_ext(c);
  const ws_config *cfg = w->rt->cfg;
  /* Once per tick, not per connection: compressed frames nobody holds any
   * more leave the cache even when no further broadcast comes to push them
   * out (a large message would otherwise stay until then). */
  static uint64_t swept;
  if (zcache_n && now != swept) {
    swept = now;
    zcache_sweep();
  }
  if (w->state == WS_CLOSE_SENT) {
    if ((int32_t)((uint32_t)now - w->close_deadline) >= 0) {
      w->state = WS_DONE;
      net_conn_end(c);
    }
    return;
  }
  if (w->state != WS_OPEN) return;
  if (w->rt->ep->on_tick) {
    w->rt->ep->on_tick(w, now);
    if (w->state != WS_OPEN) return;
  }
  uint32_t quiet = (uint32_t)now - w->last_rx;
  if (cfg->idle_timeout_ms && quiet >= cfg->idle_timeout_ms) {
    log_debug("websocket idle for %llu ms: closing", (unsigned long long)quiet);
    fail(w, WS_CLOSE_GOING_AWAY, "idle timeout");
  } else if (cfg->ping_interval_ms && quiet >= cfg->ping_interval_ms && !w->ping_outstanding) {
    w->ping_outstanding = 1;
    ws_send(w, WS_OP_PING, "wsync", 5);
  }
}

static void ws_on_free(conn *c) {
  ws_conn *w = net_conn_ext(c);
  ep_closed(w);
  ws_parser_deinit(&w->parser);
}

static const conn_ops ws_ops = {
  .name = "ws",
  .on_data = ws_on_data,
  .on_eof = ws_on_eof,
  .on_tick = ws_on_tick,
  .on_free = ws_on_free,
};

static void upgrade(const ws_route *rt, conn *c, const char *accept, const ws_pmd *pmd, const httpd_req *r,
                    uint8_t *rest, size_t rest_len) {
  char resp[320], ext[160] = "";
  if (pmd) ws_pmd_response(pmd, ext, sizeof ext);
  int n = snprintf(resp, sizeof resp,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
                   accept, pmd ? "Sec-WebSocket-Extensions: " : "", ext, pmd ? "\r\n" : "");
  size_t rl = wsy_snlen(n, sizeof resp);
  net_chunk *ch = net_chunk_new(rl);
  memcpy(ch->data, resp, rl);
  net_conn_send_force(c, ch);
  net_chunk_unref(ch);

  ws_conn *w = net_conn_ext(c);
  memset(w, 0, sizeof *w);
  ws_parser_init(&w->parser, &rt->cfg->lim, &parser_cb, w);
  w->rt = rt;
  w->state = WS_OPEN;
  if (pmd) {
    w->pmd_bits = pmd->server_max_window_bits;
    ws_parser_set_deflate(&w->parser, 1);
  }
  w->last_rx = (uint32_t)net_loop_now(net_conn_loop(c));
  net_conn_set_ops(c, &ws_ops);
  if (rt->ep->on_open && rt->ep->on_open(w, r) != 0) {
    fail(w, WS_CLOSE_POLICY, "refused");
    return;
  }
  if (rest_len && !net_conn_closing(c)) ws_on_data(c, rest, rest_len);
}

int ws_http_upgrade(void *route, conn *c, httpd_req *r, uint8_t *rest, size_t rest_len) {
  const ws_route *rt = route;
  size_t ul, cl, kl, vl, ol;
  const char *upg = httpd_req_header(r, "Upgrade", &ul);
  const char *con = httpd_req_header(r, "Connection", &cl);
  const char *key = httpd_req_header(r, "Sec-WebSocket-Key", &kl);
  const char *ver = httpd_req_header(r, "Sec-WebSocket-Version", &vl);
  const char *org = httpd_req_header(r, "Origin", &ol);
  if (!upg || !httpd_header_has_token(upg, ul, "websocket")) {
    const char msg[] = "426 Upgrade Required: this endpoint speaks WebSocket\n";
    httpd_respond(c, 426, "text/plain; charset=utf-8",
                  "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n", msg,
                  sizeof msg - 1);
    return 0;
  }
  if (strcmp(httpd_req_method(r), "GET") != 0) {
    httpd_fail_and_end(c, 400, "WebSocket upgrade must use GET");
    return 0;
  }
  if (!httpd_req_http11(r)) {
    httpd_fail_and_end(c, 400, "WebSocket upgrade needs HTTP/1.1");
    return 0;
  }
  if (!httpd_req_header(r, "Host", NULL)) {
    httpd_fail_and_end(c, 400, "missing Host header");
    return 0;
  }
  if (!con || !httpd_header_has_token(con, cl, "upgrade")) {
    httpd_fail_and_end(c, 400, "Connection header must contain Upgrade");
    return 0;
  }
  if (!ver || vl != 2 || memcmp(ver, "13", 2) != 0) {
    const char msg[] = "426 Upgrade Required: Sec-WebSocket-Version 13 is supported\n";
    httpd_respond(c, 426, "text/plain; charset=utf-8",
                  "Sec-WebSocket-Version: 13\r\nConnection: close\r\n", msg, sizeof msg - 1);
    net_conn_end(c);
    return 0;
  }
  if (!key || !ws_key_valid(key, kl)) {
    httpd_fail_and_end(c, 400, "missing or malformed Sec-WebSocket-Key");
    return 0;
  }
  if (!httpd_origin_allowed(rt->cfg->allowed_origins, org, org ? ol : 0)) {
    log_info("websocket refused: origin %.*s not allowed", org ? (int)ol : 6, org ? org : "(none)");
    httpd_fail_and_end(c, 403, "origin not allowed");
    return 0;
  }
  /* permessage-deflate: the first acceptable offer, over every
   * Sec-WebSocket-Extensions header in order; none is not an error. */
  ws_pmd pmd;
  int deflate = 0;
  if (rt->cfg->compression) {
    const char *ev;
    size_t el;
    for (unsigned i = 0; !deflate && (ev = httpd_req_header_nth(r, "Sec-WebSocket-Extensions", i, &el)); i++)
      deflate = ws_pmd_negotiate(ev, el, &pmd);
  }
  char accept[29];
  ws_accept_key(key, kl, accept);
  upgrade(rt, c, accept, deflate ? &pmd : NULL, r, rest, rest_len);
  return 1;
}
