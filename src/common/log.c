/* log.c -- one line per event: time, level, message (and fields), as text
 * or as a JSON object. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int wsy_log_level = LOG_INFO;
int wsy_log_format = LOG_TEXT;

static const char *const names[] = {"error", "warn", "info", "debug"};

int wsy_log_parse_level(const char *s) {
  for (int i = 0; i < (int)WSY_ARRAY_LEN(names); i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

int wsy_log_parse_format(const char *s) {
  if (!strcmp(s, "text")) return LOG_TEXT;
  if (!strcmp(s, "json")) return LOG_JSON;
  return -1;
}

/* A bounded line being written. */
typedef struct {
  char p[2048];
  size_t n;
} line;

static void put(line *l, const char *s, size_t len) {
  if (len > sizeof l->p - 1 - l->n) len = sizeof l->p - 1 - l->n;
  memcpy(l->p + l->n, s, len);
  l->n += len;
}
static void puts_(line *l, const char *s) { put(l, s, strlen(s)); }

/* s as a JSON string (quotes included). */
static void put_json(line *l, const char *s) {
  puts_(l, "\"");
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    char esc[8];
    if (ch == '"' || ch == '\\') {
      esc[0] = '\\';
      esc[1] = (char)ch;
      put(l, esc, 2);
    } else if (ch < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", ch);
      puts_(l, esc);
    } else {
      put(l, s, 1);
    }
  }
  puts_(l, "\"");
}

/* A text value: bare when it has no space, quote, = or control byte. */
static void put_text_value(line *l, const char *s) {
  int bare = *s != '\0';
  for (const char *p = s; *p && bare; p++) bare = (unsigned char)*p > 0x20 && *p != '"' && *p != '=';
  if (bare) puts_(l, s);
  else put_json(l, s);
}

static void begin(line *l, int level) {
  char ts[40];
  struct timespec now;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  size_t k = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + k, sizeof ts - k, ".%03ldZ", now.tv_nsec / 1000000L);
  l->n = 0;
  if (wsy_log_format == LOG_JSON) {
    puts_(l, "{\"ts\":\"");
    puts_(l, ts);
    puts_(l, "\",\"level\":\"");
    puts_(l, names[level]);
    puts_(l, "\"");
  } else {
    char head[64];
    snprintf(head, sizeof head, "%s %-5s ", ts, names[level]);
    puts_(l, head);
  }
}

/* An event loop's thread holds its info and debug lines until the loop is
 * about to wait (wsy_log_loop_wait), so a turn that accepts a hundred
 * sessions writes their lines in one system call, not three hundred. Warn
 * and error lines go out at once, with whatever was held before them; other
 * threads write each line as it comes. stderr itself is unbuffered. */
#define HELD_CAP 65536
static _Thread_local char *held;
static _Thread_local size_t held_n;

void wsy_log_flush(void) {
  if (held_n) fwrite(held, 1, held_n, stderr);
  held_n = 0;
}

/* Runs on the thread that exits (the main thread, the server's loop): its
 * lines are written and the hold given back, so that any line after this
 * is written at once. */
static void flush_at_exit(void) {
  wsy_log_flush();
  wsy_free(held);
  held = NULL;
}

void wsy_log_loop_wait(void) {
  if (!held) {
    held = wsy_malloc(HELD_CAP);
    static int registered;
    if (!registered++) atexit(flush_at_exit);
  }
  wsy_log_flush();
}

static void end(line *l, int level) {
  if (wsy_log_format == LOG_JSON) puts_(l, "}");
  l->p[l->n++] = '\n';
  if (!held) {
    fwrite(l->p, 1, l->n, stderr);
    return;
  }
  if (l->n > HELD_CAP - held_n) wsy_log_flush();
  memcpy(held + held_n, l->p, l->n);
  held_n += l->n;
  if (level <= LOG_WARN) wsy_log_flush();
}

static void vevent(int level, const char *msg, va_list ap) {
  line l;
  begin(&l, level);
  if (wsy_log_format == LOG_JSON) {
    puts_(&l, ",\"msg\":");
    put_json(&l, msg);
  } else {
    puts_(&l, msg);
  }
  for (const char *k; (k = va_arg(ap, const char *));) {
    const char *v = va_arg(ap, const char *);
    if (!v) continue;
    if (wsy_log_format == LOG_JSON) {
      puts_(&l, ",");
      put_json(&l, k);
      puts_(&l, ":");
      put_json(&l, v);
    } else {
      puts_(&l, " ");
      puts_(&l, k);
      puts_(&l, "=");
      put_text_value(&l, v);
    }
  }
  end(&l, level);
}

void wsy_log_event(int level, const char *msg, ...) {
  if (level > wsy_log_level) return;
  va_list ap;
  va_start(ap, msg);
  vevent(level, msg, ap);
  va_end(ap);
}

void wsy_log(int level, const char *fmt, ...) {
  if (level > wsy_log_level) return;
  char text[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  line l;
  begin(&l, level);
  if (wsy_log_format == LOG_JSON) {
    puts_(&l, ",\"msg\":");
    put_json(&l, text);
  } else {
    puts_(&l, text);
  }
  end(&l, level);
}
