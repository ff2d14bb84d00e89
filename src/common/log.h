/* log.h -- leveled logging to stderr. The level is process-wide: it is the
 * one piece of configuration every module reads, set once at start-up. */
#ifndef WSY_LOG_H
#define WSY_LOG_H

#include "wsy.h"

enum { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern int wsy_log_level;
int wsy_log_parse_level(const char *s); /* -1 when unknown */
void wsy_log(int level, const char *fmt, ...) WSY_PRINTF(2, 3);

#define log_error(...) wsy_log(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) wsy_log(LOG_WARN, __VA_ARGS__)
#define log_info(...) do { if (wsy_log_level >= LOG_INFO) wsy_log(LOG_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (wsy_log_level >= LOG_DEBUG) wsy_log(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
