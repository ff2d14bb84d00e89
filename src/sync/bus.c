/* bus.c -- the bus seam (bus.h) and its in-process implementation: one
** node, so publishing is delivering. */
#include "bus_int.h"

#include <string.h>

void bus_publish(bus *b, const bus_msg *m) {
  b->published++;
  b->ops->publish(b, m);
}

void bus_hold(bus *b) {
  if (b->ops->hold) b->ops->hold(b, 1);
}

void bus_release(bus *b) {
  if (b->ops->hold) b->ops->hold(b, 0);
}

void bus_subscribe(bus *b, const char *room) {
  if (b->ops->subscribe) b->ops->subscribe(b, room);
}

void bus_unsubscribe(bus *b, const char *room) {
  if (b->ops->unsubscribe) b->ops->unsubscribe(b, room);
}

int bus_send_node(bus *b, const char *node, const char *kind, const void *body, size_t len) {
  return b->ops->send_node ? b->ops->send_node(b, node, kind, body, len) : WSY_INVAL;
}

void bus_get_stats(const bus *b, bus_stats *out) {
  memset(out, 0, sizeof *out);
  out->up = 1;
  if (b->ops->stats) b->ops->stats(b, out);
  out->published = b->published;
}

const char *bus_name(const bus *b) { return b->ops->name; }

void bus_free(bus *b) {
  if (b) b->ops->free(b);
}

static void local_publish(bus *b, const bus_msg *m) { b->ev.deliver(b->ev.ud, m); }
static void local_free(bus *b) { wsy_free(b); }

static const bus_ops local_ops = {.name = "local", .publish = local_publish, .free = local_free};

bus *bus_local_new(bus_deliver_fn deliver, void *ud) {
  bus *b = wsy_calloc(1, sizeof *b);
  b->ops = &local_ops;
  b->ev.deliver = deliver;
  b->ev.ud = ud;
  return b;
}
