/* bus_int.h -- private to the bus implementations (bus.c, bus_redis.c):
 * the operations behind bus.h. A backend's object starts with a struct bus. */
#ifndef WSY_BUS_INT_H
#define WSY_BUS_INT_H

#include "bus.h"

typedef struct bus_ops {
  const char *name;
  void (*publish)(bus *b, const bus_msg *m);
  void (*hold)(bus *b, int on);                  /* NULL: publishes go at once (bus_hold) */
  void (*subscribe)(bus *b, const char *room);   /* NULL: nothing to do */
  void (*unsubscribe)(bus *b, const char *room); /* NULL: nothing to do */
  int (*send_node)(bus *b, const char *node, const char *kind, const void *body, size_t len); /* NULL: WSY_INVAL */
  void (*stats)(const bus *b, bus_stats *out);   /* NULL: counts of bus.c only */
  void (*free)(bus *b);
} bus_ops;

struct bus {
  const bus_ops *ops;
  bus_events ev;
  uint64_t published;
};

/* "redis://HOST:PORT[/DB]": HOST a name, an IPv4 address or [IPv6]; db -1
 * when none is given. 0, or WSY_INVAL with a reason in err. */
int bus_redis_parse_url(const char *url, char **host, int *port, int *db, char *err, size_t errlen);

#endif
