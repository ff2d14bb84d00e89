/* log.c -- one line per event: time, level, message. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int wsy_log_level = LOG_INFO;

static const char *const names[] = {"error", "warn", "info", "debug"};

int wsy_log_parse_level(const char *s) {
  for (int i = 0; i < (int)WSY_ARRAY_LEN(names); i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

void wsy_log(int level, const char *fmt, ...) {
  if (level > wsy_log_level) return;
  char ts[32];
  struct timespec now;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s.%03ldZ %-5s %s\n", ts, now.tv_nsec / 1000000L, names[level], line);
}
