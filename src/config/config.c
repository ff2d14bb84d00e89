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

enum kind { K_LIST, K_STR, K_SIZE, K_DUR, K_UINT, K_BOOL, K_LISTEN, K_LOGLEVEL, K_LOGFORMAT, K_DURABILITY, K_ONOFF };

typedef struct {
  const char *flag;  /* without the leading "--" */
  enum kind kind;
  size_t off;
  const char *arg;   /* the value's name in --help, NULL for a switch */
  const char *def;   /* the default, parsed like a flag's value; NULL: none */
  unsigned long long min, max; /* bounds of a number, in its unit (bytes, ms); max 0: none */
  const char *help;
} option;

#define OFF(f) offsetof(wsy_config, f)
static const option options[] = {
  {"listen", K_LISTEN, 0, "HOST:PORT", "127.0.0.1:8080", 0, 0,
   "address to listen on: an IPv4 or [IPv6] address or a host name (resolved at start); port 0 picks a free one"},
  {"data-dir", K_STR, OFF(data_dir), "DIR", "data", 0, 0,
   "where the database lives"},
  {"store", K_STR, OFF(store_url), "URL", NULL, 0, 0,
   "postgres://USER@HOST:PORT/DB: keep rooms, logs, items, dedupe records and cursors in PostgreSQL, "
   "shared by every node (default: the embedded SQLite store in --data-dir)"},
  {"bus", K_STR, OFF(bus_url), "URL", NULL, 0, 0,
   "redis://HOST:PORT[/DB]: connect the nodes of a cluster through Redis (needs --store postgres://...)"},
  {"forward-ops", K_ONOFF, OFF(forward_ops), "MODE", "on", 0, 0,
   "on or off: with --bus, a session's ops are decided on the node that owns the room (docs/CLUSTER.md)"},
  {"node-id", K_STR, OFF(node_id), "NAME", NULL, 0, 0,
   "this node's name in logs, metrics and presence (default: unique per process)"},
  {"static", K_STR, OFF(static_dir), "DIR", NULL, 0, 0,
   "serve files from DIR at / (default: none)"},
  {"max-message-size", K_SIZE, OFF(max_message), "SIZE", "1M", 1, 0,
   "largest WebSocket message"},
  {"compression", K_ONOFF, OFF(compression), "MODE", "on", 0, 0,
   "on or off: accept permessage-deflate (RFC 7692) offers"},
  {"max-connections", K_UINT, OFF(max_connections), "N", "100000", 0, 0,
   "connections beyond N are refused"},
  {"write-threads", K_UINT, OFF(write_threads), "N", "0", 0, 64,
   "helper threads that share the write calls of a large fan-out with the event loop (docs/SERVER.md); "
   "0: the loop writes alone"},
  {"write-threads-min", K_UINT, OFF(write_threads_min), "N", "8", 2, 100000,
   "with --write-threads, a flush shares its writes when at least N connections have something to send"},
  {"max-queued-bytes", K_SIZE, OFF(max_queued), "SIZE", "4M", 1024, 1ull << 31,
   "output queued per connection before it is closed as a slow consumer"},
  {"idle-timeout", K_DUR, OFF(idle_timeout_ms), "DUR", "60s", 0, 0,
   "close a connection silent this long"},
  {"ping-interval", K_DUR, OFF(ping_interval_ms), "DUR", "25s", 0, 0,
   "ping a WebSocket silent this long"},
  {"handshake-timeout", K_DUR, OFF(handshake_timeout_ms), "DUR", "10s", 0, 0,
   "time allowed to send a complete HTTP request"},
  {"allowed-origins", K_STR, OFF(allowed_origins), "LIST", NULL, 0, 0,
   "comma-separated Origin values (or *) accepted on WebSocket and the HTTP transports, others get 403; "
   "the HTTP transports send them CORS headers (default: any Origin on WebSocket, no CORS headers)"},
  {"log-level", K_LOGLEVEL, OFF(log_level), "LEVEL", "info", 0, 0,
   "error, warn, info or debug"},
  {"log-format", K_LOGFORMAT, OFF(log_format), "FORMAT", "text", 0, 0,
   "text (one line per event, fields as k=v) or json (one JSON object per line)"},
  {"echo-endpoint", K_BOOL, OFF(echo_endpoint), NULL, NULL, 0, 0,
   "enable /v1/echo and /v1/broadcast (conformance tests, benchmarks)"},
  {"auth-secret", K_STR, OFF(auth_secret), "SECRET", NULL, 0, 0,
   "HS256 key that signs client tokens, at least 32 bytes (required for tokens)"},
  {"auth-jwks", K_STR, OFF(auth_jwks), "FILE", NULL, 0, 0,
   "public keys (a JWKS document) for RS256, ES256 and EdDSA tokens; reread on SIGHUP and when it changes"},
  {"auth-issuer", K_STR, OFF(auth_issuer), "ISS", NULL, 0, 0,
   "refuse tokens whose iss is not ISS (default: not checked)"},
  {"auth-audience", K_STR, OFF(auth_audience), "AUD", NULL, 0, 0,
   "refuse tokens whose aud does not name AUD (default: not checked)"},
  {"auth-leeway", K_DUR, OFF(auth_leeway_ms), "DUR", "0s", 0, 3600000,
   "clock skew allowed when checking a token's exp and nbf"},
  {"insecure-demo", K_BOOL, OFF(insecure_demo), NULL, NULL, 0, 0,
   "accept hello with a bare user name and no token (demo only: never in production; loopback only "
   "unless --insecure-demo-public)"},
  {"insecure-demo-public", K_BOOL, OFF(insecure_demo_public), NULL, NULL, 0, 0,
   "allow --insecure-demo on an address other than loopback: anyone who reaches it may act as anyone"},
  {"durability", K_DURABILITY, OFF(durability_full), "MODE", "normal", 0, 0,
   "normal (survives a process crash) or full (fsync before ack)"},
  {"max-rooms", K_UINT, OFF(max_rooms), "N", "100", 0, 0,
   "rooms one session may join"},
  {"rate", K_UINT, OFF(rate), "N", "100", 1, 0,
   "requests per second per session, sustained"},
  {"burst", K_UINT, OFF(burst), "N", "200", 1, 0,
   "requests per session allowed in a burst"},
  {"max-lock-ttl", K_DUR, OFF(max_lock_ttl_ms), "DUR", "5m", 0, 0,
   "longest lock lease a client may ask for"},
  {"resume-window", K_DUR, OFF(resume_window_ms), "DUR", "60s", 0, 0,
   "how long a session outlives its connection"},
  {"lock-grace", K_DUR, OFF(lock_grace_ms), "DUR", "10s", 0, 0, "how long a session without a connection keeps its locks"},
  {"poll-timeout", K_DUR, OFF(poll_timeout_ms), "DUR", "25s", 100, 0,
   "longest wait of a long-poll request with nothing to say"},
  {"max-outbox", K_SIZE, OFF(max_outbox), "SIZE", "1M", 0, 0,
   "unconfirmed messages kept per session for a resume"},
  {"resume-ring", K_SIZE, OFF(resume_ring), "SIZE", "64K", 1024, 1ull << 31,
   "room messages kept once per room for resumes"},
  {"dedupe-filter", K_UINT, OFF(dedupe_filter), "N", "1000000", 64, 1000000000,
   "cids the dedupe filter holds before it grows (2 bytes each); a store holding more is read twice at start, into a filter for twice its cids"},
  {"session-queue", K_SIZE, OFF(session_queue), "SIZE", "1K", 0, 1ull << 31,
   "messages to one session alone kept for a resume"},
  {"max-batch", K_UINT, OFF(max_batch), "N", "100", 1, 0,
   "sub-ops in one batch op"},
  {"max-fields", K_UINT, OFF(max_fields), "N", "256", 1, 0,
   "fields in one set"},
  {"max-field-size", K_SIZE, OFF(max_field_size), "SIZE", "64K", 0, 0,
   "one field value, compact JSON"},
  {"max-item-size", K_SIZE, OFF(max_item_size), "SIZE", "256K", 0, 0,
   "all fields of an item, text fields aside"},
  {"max-text-size", K_SIZE, OFF(max_text_size), "SIZE", "4M", 0, 0,
   "one text field (written by text ops), compact JSON"},
  {"max-depth", K_UINT, OFF(max_depth), "N", "16", 1, 32,
   "nesting of a field value"},
  {"max-room-items", K_UINT, OFF(max_room_items), "N", "100000", 1, 0,
   "items in one room"},
  {"max-presence-state", K_SIZE, OFF(max_presence_state), "SIZE", "2K", 0, 0,
   "a member's presence state"},
  {"presence-interval", K_DUR, OFF(presence_interval_ms), "DUR", "100ms", 0, 60000,
   "how often a room's presence changes are sent, merged (0: each at once)"},
  {"presence-max-interval", K_DUR, OFF(presence_max_interval_ms), "DUR", "500ms", 0, 60000,
   "while a room's members join or leave in window after window, its presence window doubles, up to this long; "
   "a state or connection change still goes out within --presence-interval (not above it, as 0: it never grows)"},
  {"max-catchup", K_UINT, OFF(max_catchup), "N", "10000", 0, 0,
   "ops sent on join before a snapshot is sent instead"},
  {"api-key", K_STR, OFF(api_key), "KEY", NULL, 0, 0,
   "bearer key of the backend HTTP API and /metrics, at least 16 bytes (default: API off)"},
  {"allow-weak-secrets", K_BOOL, OFF(allow_weak_secrets), NULL, NULL, 0, 0,
   "accept an --auth-secret under 32 bytes or an --api-key under 16 (tests only: a short HS256 key "
   "can be guessed offline from any token)"},
  {"history-ops", K_UINT, OFF(history_ops), "N", "100000", 0, 0,
   "log entries kept per room for catch-up; older ones are trimmed"},
  {"yjs-compact-ops", K_UINT, OFF(yjs_compact_ops), "N", "1000", 1, 0,
   "compact a Yjs room's log into one snapshot once it holds N updates since the last one"},
  {"yjs-compact-bytes", K_SIZE, OFF(yjs_compact_bytes), "SIZE", "4M", 1, 0,
   "... or once its updates since the last snapshot reach SIZE"},
  {"yjs-max-awareness", K_SIZE, OFF(yjs_max_awareness), "SIZE", "64K", 2, 1ull << 24,
   "largest awareness state of one Yjs client; larger closes the connection (4413)"},
  {"degraded-status", K_UINT, OFF(degraded_status), "CODE", "503", 200, 599,
   "HTTP status of /healthz while degraded (commits failing); 200 keeps the node in a load balancer"},
  {"tls-cert", K_STR, OFF(tls_cert), "FILE", NULL, 0, 0,
   "PEM certificate chain: serve HTTPS and wss:// on --listen (with --tls-key; SIGHUP reloads both)"},
  {"tls-key", K_STR, OFF(tls_key), "FILE", NULL, 0, 0,
   "PEM private key of --tls-cert (no passphrase)"},
  {"webhook", K_LIST, OFF(webhooks), "SPEC", NULL, 0, 0,
   "POST every committed log entry to a receiver, signed and at least once; repeatable (the environment "
   "variable holds one): \"URL [rooms=GLOB] [name=NAME] [events=lifecycle]\" (docs/HOOKS.md)"},
  {"webhook-secret", K_STR, OFF(webhook_secret), "SECRET", NULL, 0, 0,
   "HMAC-SHA256 key of the Wsync-Signature header of webhook requests, at least 32 bytes (required with --webhook)"},
  {"webhook-batch", K_UINT, OFF(webhook_batch), "N", "1000", 1, 10000,
   "log entries in one webhook request at most"},
  {"webhook-delay", K_DUR, OFF(webhook_delay_ms), "DUR", "20ms", 0, 10000,
   "how long a webhook waits for a batch to fill before it sends a smaller one"},
  {"webhook-timeout", K_DUR, OFF(webhook_timeout_ms), "DUR", "10s", 100, 600000,
   "a webhook request not answered in time fails and is retried"},
  {"webhook-max-backoff", K_DUR, OFF(webhook_max_backoff_ms), "DUR", "60s", 250, 3600000,
   "longest wait between retries of a failed webhook request (exponential backoff with jitter)"},
  {"webhook-retain", K_UINT, OFF(webhook_retain), "N", "1000000", 1, 0,
   "log entries a room keeps (beyond --history-ops) while a webhook has not delivered them; past that the "
   "webhook gets a gap event"},
  {"hook-secret", K_STR, OFF(hook_secret), "SECRET", NULL, 0, 0,
   "signs the requests of --auth-hook and --op-hook (HMAC-SHA256, Wsync-Signature header), at least 32 bytes"},
  {"auth-hook", K_STR, OFF(auth_hook), "URL", NULL, 0, 0,
   "ask URL (http:// or https://) on every hello and on joins (see --auth-hook-joins); allow or deny, "
   "grants, a TTL (default: off)"},
  {"auth-hook-joins", K_STR, OFF(auth_hook_joins), "MODE", "outside", 0, 0,
   "outside (joins of rooms the token's grants do not cover) or all (every join) ask --auth-hook"},
  {"auth-hook-timeout", K_DUR, OFF(auth_hook_timeout_ms), "DUR", "2s", 10, 60000,
   "longest wait for --auth-hook; then the hello or join fails with hook_unavailable (retryable)"},
  {"auth-hook-cache", K_UINT, OFF(auth_hook_cache), "N", "10000", 0, 10000000,
   "--auth-hook answers kept for their TTL at most (0: none cached)"},
  {"op-hook", K_LIST, OFF(op_hooks), "PATTERN=URL", NULL, 0, 0,
   "repeatable: ops of rooms matching PATTERN are sent to URL before they are sequenced (accept, reject "
   "or change); the first matching pattern wins"},
  {"op-hook-timeout", K_DUR, OFF(op_hook_timeout_ms), "DUR", "2s", 10, 60000,
   "longest wait for an --op-hook; then the op fails with hook_unavailable (retryable)"},
  {"op-hook-batch", K_UINT, OFF(op_hook_batch), "N", "1", 1, 256,
   "up to N waiting ops of a room in one --op-hook request ({\"action\":\"ops\",\"ops\":[...]}, answered "
   "with {\"results\":[...]}); 1: one op per request"},
  {"store-faults", K_STR, OFF(store_faults), "FILE", NULL, 0, 0,
   "TESTING ONLY: fail store calls as FILE says (\"commit N\", \"dedupe N\", \"read N\"), or hold the next "
   "commit (\"delay MS\") or room fetch (\"delay-fetch MS\")"},
};
#undef OFF

static int apply(wsy_config *cfg, const option *o, const char *v, char *err, size_t errlen, const char *src);

void config_defaults(wsy_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < WSY_ARRAY_LEN(options); i++)
    if (options[i].def && apply(cfg, &options[i], options[i].def, NULL, 0, "the default of --") != 0) abort();
  /* Settings without a flag. */
  cfg->max_header = 16 * 1024;
  cfg->max_body = 1024 * 1024;
  cfg->close_timeout_ms = 5000;
  cfg->shutdown_grace_ms = 3000;
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

/* Sets o from the text v; src names where v came from, for the message. */
static int apply(wsy_config *cfg, const option *o, const char *v, char *err, size_t errlen, const char *src) {
  void *field = (char *)cfg + o->off;
  int bad = 0;
  switch (o->kind) {
  case K_LIST: {
    wsy_strlist *l = field;
    if (l->n == WSY_LIST_MAX) {
      if (err) snprintf(err, errlen, "%s%s given more than %d times", src, o->flag, WSY_LIST_MAX);
      return -1;
    }
    l->v[l->n++] = v;
    break;
  }
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
  case K_ONOFF:
    if (!strcmp(v, "on")) *(int *)field = 1;
    else if (!strcmp(v, "off")) *(int *)field = 0;
    else bad = 1;
    break;
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
  case K_LOGFORMAT: {
    int f = wsy_log_parse_format(v);
    bad = f < 0;
    if (!bad) *(int *)field = f;
    break;
  }
  }
  if (!bad && (o->min || o->max)) {
    unsigned long long n = o->kind == K_SIZE ? *(size_t *)field : *(unsigned *)field;
    if (n < o->min || (o->max && n > o->max)) {
      if (o->max) snprintf(err, errlen, "%s%s must be from %llu to %llu%s, not '%s'", src, o->flag, o->min, o->max,
                           o->kind == K_DUR ? " ms" : o->kind == K_SIZE ? " bytes" : "", v);
      else snprintf(err, errlen, "%s%s must be at least %llu%s, not '%s'", src, o->flag, o->min,
                    o->kind == K_DUR ? " ms" : o->kind == K_SIZE ? " bytes" : "", v);
      return -1;
    }
  }
  if (bad && err) {
    const char *valid = o->kind == K_DURABILITY ? " (normal or full)"
                        : o->kind == K_ONOFF    ? " (on or off)"
                        : o->kind == K_LOGLEVEL ? " (error, warn, info or debug)"
                        : o->kind == K_LOGFORMAT ? " (text or json)"
                        : o->kind == K_BOOL     ? " (true or false)"
                        : o->kind == K_LISTEN   ? " (HOST:PORT or [IPv6]:PORT)"
                                                : "";
    snprintf(err, errlen, "invalid value '%s' for %s%s%s", v ? v : "", src, o->flag, valid);
  }
  return bad ? -1 : 0;
}

int config_host_is_loopback(const char *h) {
  return !strcmp(h, "localhost") || !strncmp(h, "127.", 4) || !strcmp(h, "::1");
}

static void env_name(const option *o, char *out, size_t n) {
  size_t k = (size_t)snprintf(out, n, "WSYNC_");
  for (const char *p = o->flag; *p && k + 1 < n; p++) out[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
  out[k] = '\0';
}

void config_usage(FILE *out) {
  fprintf(out,
          "usage: wsync serve [options]\n\n"
          "Runs the server (the other commands: wsync --help).\n\n"
          "options (each also read from the environment variable shown):\n");
  for (size_t i = 0; i < WSY_ARRAY_LEN(options); i++) {
    const option *o = &options[i];
    char env[64], left[64];
    env_name(o, env, sizeof env);
    snprintf(left, sizeof left, "--%s%s%s", o->flag, o->arg ? " " : "", o->arg ? o->arg : "");
    if (o->def) fprintf(out, "  %-28s %s (default %s)\n  %-28s [%s]\n", left, o->help, o->def, "", env);
    else fprintf(out, "  %-28s %s\n  %-28s [%s]\n", left, o->help, "", env);
  }
  fprintf(out, "\nSIZE takes K, M or G suffixes (KiB...); DUR takes ms, s, m or h (seconds when bare).\n");
}

static int url_ok(const char *u) {
  return (!strncmp(u, "http://", 7) && u[7]) || (!strncmp(u, "https://", 8) && u[8]);
}

/* The hook options: URLs that curl can take, patterns of the grant
 * alphabet, a MODE of two words, and a signing secret as long as a token's. */
static int check_hooks(wsy_config *cfg, char *err, size_t errlen) {
  if (cfg->auth_hook && *cfg->auth_hook && !url_ok(cfg->auth_hook)) {
    snprintf(err, errlen, "--auth-hook must be an http:// or https:// URL, not '%s'", cfg->auth_hook);
    return -1;
  }
  if (cfg->auth_hook && !*cfg->auth_hook) cfg->auth_hook = NULL;
  if (!strcmp(cfg->auth_hook_joins, "all")) cfg->auth_hook_all_joins = 1;
  else if (!strcmp(cfg->auth_hook_joins, "outside")) cfg->auth_hook_all_joins = 0;
  else {
    snprintf(err, errlen, "invalid value '%s' for --auth-hook-joins (outside or all)", cfg->auth_hook_joins);
    return -1;
  }
  for (unsigned i = 0; i < cfg->op_hooks.n; i++) {
    const char *v = cfg->op_hooks.v[i], *eq = strchr(v, '=');
    int pat_ok = eq && eq > v && eq - v <= 128;
    for (const char *p = v; pat_ok && p < eq; p++)
      pat_ok = isalnum((unsigned char)*p) || strchr("._:@-*", *p);
    if (!pat_ok || !url_ok(eq + 1)) {
      snprintf(err, errlen, "--op-hook takes PATTERN=URL (a room pattern, an http:// or https:// URL), not '%s'", v);
      return -1;
    }
  }
  if (!cfg->allow_weak_secrets && cfg->hook_secret && *cfg->hook_secret && strlen(cfg->hook_secret) < 32) {
    snprintf(err, errlen, "--hook-secret is %zu bytes; it must be at least 32, or pass --allow-weak-secrets for a test",
             strlen(cfg->hook_secret));
    return -1;
  }
  return 0;
}

int config_parse(wsy_config *cfg, int argc, char **argv, char *err, size_t errlen) {
  for (size_t i = 0; i < WSY_ARRAY_LEN(options); i++) {
    char env[64];
    env_name(&options[i], env, sizeof env);
    const char *v = getenv(env);
    char src[80];
    snprintf(src, sizeof src, "$%s, that is --", env);
    if (v && *v && apply(cfg, &options[i], v, err, errlen, src) != 0) return -1;
  }
  unsigned char from_flags[WSY_ARRAY_LEN(options)] = {0}; /* a list given as flags drops its environment value */
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
    if (o && o->kind == K_LIST && !from_flags[o - options]) {
      from_flags[o - options] = 1;
      ((wsy_strlist *)((char *)cfg + o->off))->n = 0;
    }
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
  /* Secrets: an HS256 key shorter than the hash (RFC 7518 3.2) can be
   * brute-forced offline from any one token, which then forges every user;
   * a short API key can be guessed online. Refused, not warned about: a
   * warning scrolls by, a forged token does not. */
  if (!cfg->allow_weak_secrets) {
    if (cfg->auth_secret && *cfg->auth_secret && strlen(cfg->auth_secret) < 32) {
      snprintf(err, errlen, "--auth-secret is %zu bytes; it must be at least 32 (e.g. openssl rand -hex 32), "
               "or pass --allow-weak-secrets for a test", strlen(cfg->auth_secret));
      return -1;
    }
    if (cfg->webhook_secret && *cfg->webhook_secret && strlen(cfg->webhook_secret) < 32) {
      snprintf(err, errlen, "--webhook-secret is %zu bytes; it must be at least 32 (e.g. openssl rand -hex 32), "
               "or pass --allow-weak-secrets for a test", strlen(cfg->webhook_secret));
      return -1;
    }
    if (cfg->api_key && *cfg->api_key && strlen(cfg->api_key) < 16) {
      snprintf(err, errlen, "--api-key is %zu bytes; it must be at least 16 (e.g. openssl rand -hex 24), "
               "or pass --allow-weak-secrets for a test", strlen(cfg->api_key));
      return -1;
    }
  }
  if (check_hooks(cfg, err, errlen) != 0) return -1;
  if (cfg->insecure_demo && !cfg->insecure_demo_public && !config_host_is_loopback(cfg->listen_host)) {
    snprintf(err, errlen, "--insecure-demo lets anyone claim any user: it listens on loopback only, not on "
             "'%s', unless --insecure-demo-public is given too", cfg->listen_host);
    return -1;
  }
  if (cfg->webhooks.n && (!cfg->webhook_secret || !*cfg->webhook_secret)) {
    snprintf(err, errlen, "--webhook needs --webhook-secret: receivers verify every request with it");
    return -1;
  }
  /* POST /v1/send carries messages: its body may be as large as one. */
  if (cfg->max_body < cfg->max_message) cfg->max_body = cfg->max_message;
  return 0;
}
