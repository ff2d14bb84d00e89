/* bus.c -- the bus seam (bus.h) and its in-process implementation: one
** node, so publishing is delivering. */
#include "bus.h"

#include "../common/wsy.h"

typedef struct bus_ops {
  const char *name;
  void (*publish)(bus *b, const bus_msg *m);
  void (*free)(bus *b);
} bus_ops;

struct bus {
  const bus_ops *ops;
  bus_deliver_fn deliver;
  void *ud;
};

void bus_publish(bus *b, const bus_msg *m) { b->ops->publish(b, m); }
const char *bus_name(const bus *b) { return b->ops->name; }

void bus_free(bus *b) {
  if (b) b->ops->free(b);
}

static void local_publish(bus *b, const bus_msg *m) { b->deliver(b->ud, m); }
static void local_free(bus *b) { wsy_free(b); }

static const bus_ops local_ops = {.name = "local", .publish = local_publish, .free = local_free};

bus *bus_local_new(bus_deliver_fn deliver, void *ud) {
  bus *b = wsy_calloc(1, sizeof *b);
  b->ops = &local_ops;
  b->deliver = deliver;
  b->ud = ud;
  return b;
}
