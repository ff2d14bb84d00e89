/* bus_redis_url.c -- the Redis bus's URL (bus_int.h). */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "bus_int.h"

static int digits(const char *s, size_t n, long max, long *out) {
  if (n == 0 || n > 10) return -1;
  long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  if (v > max) return -1;
  *out = v;
  return 0;
}

int bus_redis_parse_url(const char *url, char **host_out, int *port_out, int *db_out, char *err, size_t errlen) {
  static const char scheme[] = "redis://";
  if (!url || strncmp(url, scheme, sizeof scheme - 1) != 0) {
    snprintf(err, errlen, "the bus URL must look like redis://HOST:PORT[/DB]");
    return WSY_INVAL;
  }
  const char *a = url + sizeof scheme - 1;
  const char *slash = strchr(a, '/');
  size_t alen = slash ? (size_t)(slash - a) : strlen(a);
  if (memchr(a, '@', alen)) {
    snprintf(err, errlen, "the bus URL has credentials: Redis AUTH is not supported, use redis://HOST:PORT[/DB]");
    return WSY_INVAL;
  }
  const char *colon = NULL, *host = a;
  size_t hlen;
  if (alen && a[0] == '[') {
    const char *close = memchr(a, ']', alen);
    if (!close || close + 1 >= a + alen || close[1] != ':') goto bad_hostport;
    host = a + 1;
    hlen = (size_t)(close - host);
    colon = close + 1;
  } else {
    for (size_t i = alen; i-- > 0;)
      if (a[i] == ':') {
        colon = a + i;
        break;
      }
    if (!colon) goto bad_hostport;
    hlen = (size_t)(colon - a);
  }
  if (hlen == 0) goto bad_hostport;
  long port;
  if (digits(colon + 1, (size_t)(a + alen - colon - 1), 65535, &port) != 0 || port == 0) {
    snprintf(err, errlen, "the bus URL's port must be a number from 1 to 65535: %s", url);
    return WSY_INVAL;
  }
  long db = -1;
  if (slash && slash[1] && digits(slash + 1, strlen(slash + 1), INT_MAX, &db) != 0) {
    snprintf(err, errlen, "the bus URL's database must be a number (redis://HOST:PORT/DB): %s", url);
    return WSY_INVAL;
  }
  *host_out = wsy_strndup(host, hlen);
  *port_out = (int)port;
  *db_out = (int)db;
  return 0;
bad_hostport:
  snprintf(err, errlen, "the bus URL needs a host and a port (redis://HOST:PORT[/DB]): %s", url);
  return WSY_INVAL;
}
