/* log.h -- leveled logging to stderr, one line per event. The level and the
 * format are process-wide: the configuration every module reads, set once
 * at start-up.
 *
 * Formats: text (the default), "TIME LEVEL message k=v k=v", values with a
 * space or a quote quoted; json (--log-format json), one object per line:
 * {"ts":"...","level":"info","msg":"...","k":"v",...}. */
#ifndef WSY_LOG_H
#define WSY_LOG_H

#include "wsy.h"

enum { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };
enum { LOG_TEXT = 0, LOG_JSON };

extern int wsy_log_level;
extern int wsy_log_format;
int wsy_log_parse_level(const char *s); /* -1 when unknown */
int wsy_log_parse_format(const char *s); /* -1 when unknown */
void wsy_log(int level, const char *fmt, ...) WSY_PRINTF(2, 3);
/* An event with fields: msg, then pairs of (key, string value) ending with
 * a NULL key; a NULL value is left out. */
void wsy_log_event(int level, const char *msg, ...);
/* From an event loop's thread, each time before it waits for events: writes
 * the lines held since the last call, and holds this thread's info and debug
 * lines from now on (warn and error lines are never held). */
void wsy_log_loop_wait(void);
/* Writes this thread's held lines now: before a loop stops for good. At
 * exit the main thread's are written anyway; an abort or a crash loses
 * the lines of the turn it interrupts. */
void wsy_log_flush(void);

#define log_error(...) wsy_log(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) wsy_log(LOG_WARN, __VA_ARGS__)
#define log_info(...) do { if (wsy_log_level >= LOG_INFO) wsy_log(LOG_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (wsy_log_level >= LOG_DEBUG) wsy_log(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
