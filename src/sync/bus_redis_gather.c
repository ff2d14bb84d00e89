/* bus_redis_gather.c -- the Redis bus's room messages: written (version
** 1, bus_redis.c's header) and, during a hold (bus_hold), gathered per
** room and published together at its end (RB_GATHERED). */
#include <string.h>

#include "bus_redis_int.h"

/* A room message of version 1 (bus_redis.c's header). */
size_t rb_room_msg_len(const rbus *b, const bus_msg *m, size_t plen) {
  return 1 + 2 + strlen(b->node) + 2 + strlen(m->room) + 2 + rb_slen(m->epoch) + 8 + 2 + rb_slen(m->except) + 2 +
         rb_slen(m->only_user) + plen;
}

void rb_room_msg_write(const rbus *b, const bus_msg *m, const uint8_t *payload, size_t plen, uint8_t *p) {
  *p++ = RB_VERSION;
  p += rb_put_str(p, b->node, strlen(b->node));
  p += rb_put_str(p, m->room, strlen(m->room));
  p += rb_put_str(p, m->epoch, rb_slen(m->epoch));
  for (int i = 7; i >= 0; i--) *p++ = (uint8_t)(m->seq >> (8 * i));
  p += rb_put_str(p, m->except, rb_slen(m->except));
  p += rb_put_str(p, m->only_user, rb_slen(m->only_user));
  if (plen) memcpy(p, payload, plen);
}

/* Publishes what is gathered for g's room: one message alone as it is,
 * several in one message of RB_GATHERED. */
void rb_gather_send(rbus *b, struct gathered *g) {
  if (!g->n) return;
  const uint8_t *body = g->n == 1 ? g->data + 1 + 4 : g->data;
  size_t blen = g->n == 1 ? g->len - 1 - 4 : g->len;
  uint8_t *p;
  size_t len = rb_format_publish(b, RB_ROOM_PREFIX, g->room, blen, &p);
  memcpy(p, body, blen);
  if (rb_send_cmd(b, len) != 0) b->dropped += g->n;
  g->len = 1;
  g->n = 0;
}

void rb_gather_add(rbus *b, const bus_msg *m, const uint8_t *payload, size_t plen, size_t mlen) {
  uintptr_t at = (uintptr_t)map_get(&b->gather_at, m->room);
  if (!at) {
    if (b->ngather == b->gather_cap) {
      b->gather_cap = b->gather_cap ? 2 * b->gather_cap : 16;
      b->gather = wsy_realloc(b->gather, b->gather_cap * sizeof *b->gather);
    }
    struct gathered *g = &b->gather[b->ngather++];
    memset(g, 0, sizeof *g);
    g->room = wsy_strndup(m->room, strlen(m->room));
    at = b->ngather;
    map_put(&b->gather_at, m->room, (void *)at);
  }
  struct gathered *g = &b->gather[at - 1];
  if (g->n && g->len + 4 + mlen > RB_GATHER_MAX) rb_gather_send(b, g);
  if (g->len + 4 + mlen > g->cap) {
    g->cap = g->len + 4 + mlen + (g->cap > 4096 ? g->cap : 4096);
    g->data = wsy_realloc(g->data, g->cap);
  }
  g->data[0] = RB_GATHERED;
  if (!g->len) g->len = 1;
  uint8_t *p = g->data + g->len;
  for (int i = 3; i >= 0; i--) *p++ = (uint8_t)(mlen >> (8 * i));
  rb_room_msg_write(b, m, payload, plen, p);
  g->len += 4 + mlen;
  g->n++;
}

/* The end of a hold: every room's gathered messages go, and are forgotten. */
static void gather_flush(rbus *b) {
  for (size_t i = 0; i < b->ngather; i++) {
    rb_gather_send(b, &b->gather[i]);
    wsy_free(b->gather[i].room);
    wsy_free(b->gather[i].data);
  }
  b->ngather = 0;
  map_free(&b->gather_at);
  map_init(&b->gather_at);
}

void rb_hold(bus *base, int on) {
  rbus *b = (rbus *)base;
  b->holding += on ? 1 : -1;
  if (!b->holding) gather_flush(b);
}

void rb_gather_free(rbus *b) {
  for (size_t i = 0; i < b->ngather; i++) {
    wsy_free(b->gather[i].room);
    wsy_free(b->gather[i].data);
  }
  wsy_free(b->gather);
  map_free(&b->gather_at);
}
