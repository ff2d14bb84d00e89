/* config.h -- command line and environment for `wsync serve`. Each flag
 * --some-name has an environment variable WSYNC_SOME_NAME; flags win. */
#ifndef WSY_CONFIG_H
#define WSY_CONFIG_H

#include <stdio.h>

#include "app.h"

void config_defaults(wsy_config *cfg);
/* Applies environment then argv. Returns 0, or -1 with a message in err, or
 * 1 when --help/--version printed something and the caller should exit 0. */
int config_parse(wsy_config *cfg, int argc, char **argv, char *err, size_t errlen);
void config_usage(FILE *out);

/* "64K", "1M", "1048576" -> bytes; -1 on error. */
int config_parse_size(const char *s, size_t *out);
/* "500ms", "30s", "2m", "1h", "10" (seconds) -> milliseconds; -1 on error. */
int config_parse_duration(const char *s, unsigned *out_ms);

#endif
