/* config.c -- flags and environment variables of `wsync serve`.
 *
 * One table lists every option: its flag, its kind and where it lands in
 * wsy_config; --help, the environment names and the parser are all made
 * from it, so they cannot drift apart. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/wsy.h"

enum kind { K_STR, K_SIZE, K_DUR, K_UINT, K_BOOL, K_LISTEN, K_LOGLEVEL, K_DURABILITY };

typedef struct {
  const char *flag; /* without the leading "--" */
  enum kind kind;
  size_t off;
  const char *arg, *help;
} option;

#define OFF(f) offsetof(wsy_config, f)
static const option options[] = {
  {"listen", K_LISTEN, 0, "HOST:PORT", "address to listen on (default 127.0.0.1:8080; port 0 picks a free one)"},
  {"data-dir", K_STR, OFF(data_dir), "DIR", "where the database lives (default ./data)"},
  {"static", K_STR, OFF(static_dir), "DIR", "serve files from DIR at / (default: none)"},
  {"max-message-size", K_SIZE, OFF(max_message), "SIZE", "largest WebSocket message (default 1M)"},
  {"max-connections", K_UINT, OFF(max_connections), "N", "connections beyond N are refused (default 100000)"},
  {"max-queued-bytes", K_SIZE, OFF(max_queued), "SIZE", "output queued per connection before it is closed as a slow consumer (default 4M)"},
  {"idle-timeout", K_DUR, OFF(idle_timeout_ms), "DUR", "close a connection silent this long (default 60s)"},
  {"ping-interval", K_DUR, OFF(ping_interval_ms), "DUR", "ping a WebSocket silent this long (default 25s)"},
  {"handshake-timeout", K_DUR, OFF(handshake_timeout_ms), "DUR", "time allowed to send a complete HTTP request (default 10s)"},
  {"allowed-origins", K_STR, OFF(allowed_origins), "LIST", "comma-separated Origin values accepted for WebSocket (default: any)"},
  {"log-level", K_LOGLEVEL, OFF(log_level), "LEVEL", "error, warn, info or debug (default info)"},
  {"echo-endpoint", K_BOOL, OFF(echo_endpoint), NULL, "enable /v1/echo and /v1/broadcast (conformance tests, benchmarks)"},
  {"auth-secret", K_STR, OFF(auth_secret), "SECRET", "HS256 key that signs client tokens (required for tokens)"},
  {"insecure-demo", K_BOOL, OFF(insecure_demo), NULL, "accept hello with a bare user name and no token (demo only: never in production)"},
  {"durability", K_DURABILITY, OFF(durability_full), "MODE", "normal (survives a process crash) or full (fsync before ack) (default normal)"},
  {"max-rooms", K_UINT, OFF(max_rooms), "N", "rooms one session may join (default 100)"},
  {"rate", K_UINT, OFF(rate), "N", "requests per second per session, sustained (default 100)"},
  {"burst", K_UINT, OFF(burst), "N", "requests per session allowed in a burst (default 200)"},
  {"max-lock-ttl", K_DUR, OFF(max_lock_ttl_ms), "DUR", "longest lock lease a client may ask for (default 5m)"},
  {"resume-window", K_DUR, OFF(resume_window_ms), "DUR", "how long a session outlives its connection (default 60s)"},
  {"poll-timeout", K_DUR, OFF(poll_timeout_ms), "DUR", "longest wait of a long-poll request with nothing to say (default 25s)"},
  {"max-outbox", K_SIZE, OFF(max_outbox), "SIZE", "unconfirmed messages kept per session for a resume (default 1M)"},
  {"max-batch", K_UINT, OFF(max_batch), "N", "sub-ops in one batch op (default 100)"},
  {"max-fields", K_UINT, OFF(max_fields), "N", "fields in one set (default 256)"},
  {"max-field-size", K_SIZE, OFF(max_field_size), "SIZE", "one field value, compact JSON (default 64K)"},
  {"max-item-size", K_SIZE, OFF(max_item_size), "SIZE", "all fields of an item (default 256K)"},
  {"max-depth", K_UINT, OFF(max_depth), "N", "nesting of a field value (default 16)"},
  {"max-room-items", K_UINT, OFF(max_room_items), "N", "items in one room (default 100000)"},
  {"max-presence-state", K_SIZE, OFF(max_presence_state), "SIZE", "a member's presence state (default 2K)"},
  {"max-catchup", K_UINT, OFF(max_catchup), "N", "ops sent on join before a snapshot is sent instead (default 10000)"},
  {"api-key", K_STR, OFF(api_key), "KEY", "bearer key of the backend HTTP API and /metrics (default: API off)"},
  {"history-ops", K_UINT, OFF(history_ops), "N", "log entries kept per room for catch-up; older ones are trimmed (default 100000)"},
  {"store-faults", K_STR, OFF(store_faults), "FILE", "TESTING ONLY: fail store calls as FILE says (\"commit N\", \"dedupe N\", \"read N\")"},
};
#undef OFF

void config_defaults(wsy_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->listen_host, sizeof cfg->listen_host, "127.0.0.1");
  cfg->listen_port = 8080;
  cfg->data_dir = "data";
  cfg->max_message = 1024 * 1024;
  cfg->max_queued = 4 * 1024 * 1024;
  cfg->max_header = 16 * 1024;
  cfg->max_body = 1024 * 1024;
  cfg->max_connections = 100000;
  cfg->idle_timeout_ms = 60000;
  cfg->ping_interval_ms = 25000;
  cfg->handshake_timeout_ms = 10000;
  cfg->close_timeout_ms = 5000;
  cfg->shutdown_grace_ms = 3000;
  cfg->log_level = LOG_INFO;
  cfg->resume_window_ms = 60000;
  cfg->poll_timeout_ms = 25000;
  cfg->max_rooms = 100;
  cfg->rate = 100;
  cfg->burst = 200;
  cfg->max_lock_ttl_ms = 300000;
  cfg->history_ops = 100000;
  cfg->max_outbox = 1024 * 1024;
  cfg->max_batch = 100;
  cfg->max_fields = 256;
  cfg->max_field_size = 64 * 1024;
  cfg->max_item_size = 256 * 1024;
  cfg->max_depth = 16;
  cfg->max_room_items = 100000;
  cfg->max_presence_state = 2048;
  cfg->max_catchup = 10000;
}

int config_parse_size(const char *s, size_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *s == '-') return -1;
  unsigned long long mul = 1;
  if (*end) {
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024ull; break;
    case 'M': mul = 1024ull * 1024; break;
    case 'G': mul = 1024ull * 1024 * 1024; break;
    default: return -1;
    }
    end++;
    if (toupper((unsigned char)*end) == 'I') end++;
    if (toupper((unsigned char)*end) == 'B') end++;
    if (*end) return -1;
  }
  if (v > (unsigned long long)UINT32_MAX * 4 / mul) return -1;
  *out = (size_t)(v * mul);
  return 0;
}

int config_parse_duration(const char *s, unsigned *out_ms) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || !(v >= 0)) return -1; /* also NaN */
  double mul = 1000;
  if (strcmp(end, "ms") == 0) mul = 1;
  else if (strcmp(end, "s") == 0 || *end == '\0') mul = 1000;
  else if (strcmp(end, "m") == 0) mul = 60000;
  else if (strcmp(end, "h") == 0) mul = 3600000;
  else return -1;
  double ms = v * mul;
  if (ms > 86400000.0 * 7) return -1;
  *out_ms = (unsigned)ms;
  return 0;
}

static int parse_listen(wsy_config *cfg, const char *v) {
  const char *colon = strrchr(v, ':');
  if (!colon) return -1;
  const char *h = v;
  size_t hl = (size_t)(colon - v);
  if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
    h++;
    hl -= 2;
  }
  if (hl == 0 || hl >= sizeof cfg->listen_host) return -1;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || end == colon + 1 || port < 0 || port > 65535) return -1;
  memcpy(cfg->listen_host, h, hl);
  cfg->listen_host[hl] = '\0';
  cfg->listen_port = (int)port;
  return 0;
}

static int apply(wsy_config *cfg, const option *o, const char *v, char *err, size_t errlen,
                 const char *src) {
  void *field = (char *)cfg + o->off;
  int bad = 0;
  switch (o->kind) {
  case K_STR: *(const char **)field = v; break;
  case K_SIZE: bad = config_parse_size(v, field) != 0; break;
  case K_DUR: bad = config_parse_duration(v, field) != 0; break;
  case K_UINT: {
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    bad = errno || *end || end == v || *v == '-' || n > UINT_MAX;
    if (!bad) *(unsigned *)field = (unsigned)n;
    break;
  }
  case K_BOOL:
    if (!v || !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes")) *(int *)field = 1;
    else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no")) *(int *)field = 0;
    else bad = 1;
    break;
  case K_LISTEN: bad = parse_listen(cfg, v) != 0; break;
  case K_DURABILITY:
    if (!strcmp(v, "normal")) *(int *)field = 0;
    else if (!strcmp(v, "full")) *(int *)field = 1;
    else bad = 1;
    break;
  case K_LOGLEVEL: {
    int l = wsy_log_parse_level(v);
    bad = l < 0;
    if (!bad) *(int *)field = l;
    break;
  }
  }
  if (bad) snprintf(err, errlen, "invalid value '%s' for %s%s", v ? v : "", src, o->flag);
  return bad ? -1 : 0;
}

static void env_name(const option *o, char *out, size_t n) {
  size_t k = (size_t)snprintf(out, n, "WSYNC_");
  for (const char *p = o->flag; *p && k + 1 < n; p++) out[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
  out[k] = '\0';
}

void config_usage(FILE *out) {
  fprintf(out,
          "usage: wsync serve [options]\n"
          "       wsync --help | --version\n\n"
          "wsync is a real-time multi-device synchronization server.\n\n"
          "options (each also read from the environment variable shown):\n");
  for (size_t i = 0; i < WSY_ARRAY_LEN(options); i++) {
    const option *o = &options[i];
    char env[64], left[64];
    env_name(o, env, sizeof env);
    snprintf(left, sizeof left, "--%s%s%s", o->flag, o->arg ? " " : "", o->arg ? o->arg : "");
    fprintf(out, "  %-28s %s\n  %-28s [%s]\n", left, o->help, "", env);
  }
  fprintf(out, "\nSIZE takes K, M or G suffixes (KiB...); DUR takes ms, s, m or h (seconds when bare).\n");
}

int config_parse(wsy_config *cfg, int argc, char **argv, char *err, size_t errlen) {
  for (size_t i = 0; i < WSY_ARRAY_LEN(options); i++) {
    char env[64];
    env_name(&options[i], env, sizeof env);
    const char *v = getenv(env);
    if (v && *v && apply(cfg, &options[i], v, err, errlen, "$WSYNC_ env for --") != 0) return -1;
  }
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      config_usage(stdout);
      return 1;
    }
    if (!strcmp(a, "--version")) {
      printf("wsync %s\n", WSYNC_VERSION);
      return 1;
    }
    if (strncmp(a, "--", 2) != 0) {
      snprintf(err, errlen, "unexpected argument '%s'", a);
      return -1;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t nl = eq ? (size_t)(eq - name) : strlen(name);
    const option *o = NULL;
    for (size_t k = 0; k < WSY_ARRAY_LEN(options); k++)
      if (strlen(options[k].flag) == nl && !strncmp(options[k].flag, name, nl)) o = &options[k];
    if (!o) {
      snprintf(err, errlen, "unknown option '%.*s' (see --help)", (int)(nl + 2), a);
      return -1;
    }
    const char *v = eq ? eq + 1 : NULL;
    if (!v && o->kind != K_BOOL) {
      if (i + 1 >= argc) {
        snprintf(err, errlen, "option --%s needs a value", o->flag);
        return -1;
      }
      v = argv[++i];
    }
    if (apply(cfg, o, v, err, errlen, "--") != 0) return -1;
  }
  if (cfg->max_batch == 0 || cfg->max_fields == 0 || cfg->max_depth == 0 || cfg->max_depth > 32 ||
      cfg->max_room_items == 0) {
    snprintf(err, errlen, "--max-batch, --max-fields, --max-room-items must be >= 1 and --max-depth 1-32");
    return -1;
  }
  if (cfg->rate == 0 || cfg->burst == 0) {
    snprintf(err, errlen, "--rate and --burst must be at least 1");
    return -1;
  }
  if (cfg->max_message < 1 || cfg->max_queued < 1024) {
    snprintf(err, errlen, "--max-message-size must be >= 1 and --max-queued-bytes >= 1K");
    return -1;
  }
  if (cfg->max_queued > ((size_t)1 << 31)) {
    snprintf(err, errlen, "--max-queued-bytes must be at most 2G");
    return -1;
  }
  if (cfg->poll_timeout_ms < 100) {
    snprintf(err, errlen, "--poll-timeout must be at least 100ms");
    return -1;
  }
  /* POST /v1/send carries messages: its body may be as large as one. */
  if (cfg->max_body < cfg->max_message) cfg->max_body = cfg->max_message;
  return 0;
}
