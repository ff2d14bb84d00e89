/* test_config.c -- flags, environment, sizes and durations (src/config.c). */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/common/log.h"
#include "../../../src/config/config.h"

/* Every variable config_parse() reads, so a developer's environment cannot
 * leak into a test. Criterion runs each test in its own process. */
static void clear_env(void) {
  static const char *vars[] = {
    "WSYNC_LISTEN",           "WSYNC_DATA_DIR",         "WSYNC_STATIC",
    "WSYNC_MAX_MESSAGE_SIZE", "WSYNC_MAX_CONNECTIONS",  "WSYNC_MAX_QUEUED_BYTES",
    "WSYNC_IDLE_TIMEOUT",     "WSYNC_PING_INTERVAL",    "WSYNC_HANDSHAKE_TIMEOUT",
    "WSYNC_ALLOWED_ORIGINS",  "WSYNC_LOG_LEVEL",        "WSYNC_ECHO_ENDPOINT",
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(vars); i++) unsetenv(vars[i]);
}

/* ---- sizes and durations ------------------------------------------------------- */

Test(config, parse_size_valid) {
  static const struct {
    const char *s;
    size_t want;
  } cases[] = {
    {"0", 0},
    {"1", 1},
    {"1048576", 1048576},
    {"64K", 64 * 1024},
    {"64k", 64 * 1024},
    {"1KiB", 1024},
    {"1KB", 1024},
    {"1M", 1048576},
    {"1m", 1048576},
    {"1MiB", 1048576},
    {"1mib", 1048576},
    {"1MB", 1048576},
    {"4M", 4 * 1048576},
    {"1G", 1024ull * 1024 * 1024},
    {"2GiB", 2048ull * 1024 * 1024},
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(cases); i++) {
    size_t v = 777;
    cr_assert_eq(config_parse_size(cases[i].s, &v), 0, "\"%s\" refused", cases[i].s);
    cr_assert_eq(v, cases[i].want, "\"%s\" -> %zu, want %zu", cases[i].s, v, cases[i].want);
  }
}

Test(config, parse_size_invalid) {
  static const char *bad[] = {"",     "12Q",  "-1",   "-1K",  "K",    "1.5M", "1 M",
                              "1MiBx", "1iB", "1KK",  "0x10", "abc",  "1T",
                              "99999999999999999999", "18446744073709551616",
                              "1000000G", "17179869184K"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(bad); i++) {
    size_t v = 777;
    cr_assert_eq(config_parse_size(bad[i], &v), -1, "\"%s\" accepted (%zu)", bad[i], v);
  }
}

Test(config, parse_duration_valid) {
  static const struct {
    const char *s;
    unsigned want;
  } cases[] = {
    {"500ms", 500}, {"30s", 30000},     {"2m", 120000}, {"1h", 3600000}, {"10", 10000},
    {"0", 0},       {"1.5s", 1500},     {"0ms", 0},     {"25s", 25000},  {"1ms", 1},
    {"24h", 86400000},
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(cases); i++) {
    unsigned v = 777;
    cr_assert_eq(config_parse_duration(cases[i].s, &v), 0, "\"%s\" refused", cases[i].s);
    cr_assert_eq(v, cases[i].want, "\"%s\" -> %u, want %u", cases[i].s, v, cases[i].want);
  }
}

Test(config, parse_duration_invalid) {
  static const char *bad[] = {"", "abc", "-1", "-1s", "10x", "5 s", "1d", "ms", "s",
                              "10sec", "10S", "inf", "1e30", "1000000h"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(bad); i++) {
    unsigned v = 777;
    cr_assert_eq(config_parse_duration(bad[i], &v), -1, "\"%s\" accepted (%u)", bad[i], v);
  }
}

/* ---- config_parse --------------------------------------------------------------- */

static int parse(wsy_config *cfg, char *err, size_t errlen, int argc, char **argv) {
  config_defaults(cfg);
  err[0] = '\0';
  return config_parse(cfg, argc, argv, err, errlen);
}
#define ARGV(...) (char *[]){__VA_ARGS__}, (int)(sizeof((char *[]){__VA_ARGS__}) / sizeof(char *))
#define PARSE(cfg, err, ...) parse_v(cfg, err, sizeof err, ARGV(__VA_ARGS__))
static int parse_v(wsy_config *cfg, char *err, size_t errlen, char **argv, int argc) {
  return parse(cfg, err, errlen, argc, argv);
}

Test(config, defaults_without_arguments) {
  clear_env();
  wsy_config cfg;
  char err[256];
  cr_assert_eq(parse(&cfg, err, sizeof err, 0, NULL), 0, "%s", err);
  cr_assert_str_eq(cfg.listen_host, "127.0.0.1");
  cr_assert_eq(cfg.listen_port, 8080);
  cr_assert_eq(cfg.max_message, 1048576);
  cr_assert_eq(cfg.idle_timeout_ms, 60000);
  cr_assert_eq(cfg.echo_endpoint, 0);
}

Test(config, valid_argv) {
  clear_env();
  wsy_config cfg;
  char err[256];
  int rc = PARSE(&cfg, err, "--listen", "0.0.0.0:9000", "--data-dir", "/tmp/wsync-data",
                 "--static", "web", "--max-message-size=64K", "--max-queued-bytes", "8M",
                 "--max-connections", "10", "--idle-timeout", "90s", "--ping-interval=500ms",
                 "--handshake-timeout", "2", "--allowed-origins", "https://a.example,https://b",
                 "--log-level", "debug", "--echo-endpoint");
  cr_assert_eq(rc, 0, "%s", err);
  cr_assert_str_eq(cfg.listen_host, "0.0.0.0");
  cr_assert_eq(cfg.listen_port, 9000);
  cr_assert_str_eq(cfg.data_dir, "/tmp/wsync-data");
  cr_assert_str_eq(cfg.static_dir, "web");
  cr_assert_eq(cfg.max_message, 64 * 1024);
  cr_assert_eq(cfg.max_queued, 8 * 1048576);
  cr_assert_eq(cfg.max_connections, 10);
  cr_assert_eq(cfg.idle_timeout_ms, 90000);
  cr_assert_eq(cfg.ping_interval_ms, 500);
  cr_assert_eq(cfg.handshake_timeout_ms, 2000);
  cr_assert_str_eq(cfg.allowed_origins, "https://a.example,https://b");
  cr_assert_eq(cfg.log_level, LOG_DEBUG);
  cr_assert_eq(cfg.echo_endpoint, 1);
}

Test(config, listen_forms) {
  clear_env();
  wsy_config cfg;
  char err[256];
  cr_assert_eq(PARSE(&cfg, err, "--listen", "[::1]:0"), 0, "%s", err);
  cr_assert_str_eq(cfg.listen_host, "::1");
  cr_assert_eq(cfg.listen_port, 0);
  cr_assert_eq(PARSE(&cfg, err, "--listen=localhost:65535"), 0, "%s", err);
  cr_assert_str_eq(cfg.listen_host, "localhost");
  cr_assert_eq(cfg.listen_port, 65535);
  static const char *bad[] = {"nohost", ":80", "h:", "h:65536", "h:-1", "h:8o", "[]:80"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(bad); i++) {
    cr_assert_eq(PARSE(&cfg, err, "--listen", (char *)bad[i]), -1, "\"%s\" accepted", bad[i]);
    cr_assert(strstr(err, "listen"), "message \"%s\" does not name the flag", err);
  }
}

Test(config, bool_flag_values) {
  clear_env();
  wsy_config cfg;
  char err[256];
  cr_assert_eq(PARSE(&cfg, err, "--echo-endpoint=false"), 0, "%s", err);
  cr_assert_eq(cfg.echo_endpoint, 0);
  cr_assert_eq(PARSE(&cfg, err, "--echo-endpoint=yes"), 0, "%s", err);
  cr_assert_eq(cfg.echo_endpoint, 1);
  cr_assert_eq(PARSE(&cfg, err, "--echo-endpoint=maybe"), -1);
  cr_assert(strstr(err, "maybe"), "message: %s", err);
}

Test(config, unknown_flag) {
  clear_env();
  wsy_config cfg;
  char err[256];
  cr_assert_eq(PARSE(&cfg, err, "--max-message-size", "1M", "--frobnicate", "3"), -1);
  cr_assert(strstr(err, "--frobnicate"), "message \"%s\" does not name the flag", err);
  cr_assert_eq(PARSE(&cfg, err, "--frobnicate=3"), -1);
  cr_assert(strstr(err, "--frobnicate"), "message \"%s\"", err);
  cr_assert_null(strstr(err, "=3"), "message \"%s\" includes the value", err);
  /* A prefix of a real flag is not that flag. */
  cr_assert_eq(PARSE(&cfg, err, "--max-message", "1M"), -1);
  cr_assert_eq(PARSE(&cfg, err, "positional"), -1);
  cr_assert(strstr(err, "positional"), "message \"%s\"", err);
  cr_assert_eq(PARSE(&cfg, err, "-x"), -1);
  cr_assert_neq(err[0], '\0');
}

Test(config, missing_value) {
  clear_env();
  wsy_config cfg;
  char err[256];
  static char *flags[] = {"--max-message-size", "--listen", "--idle-timeout", "--data-dir",
                          "--log-level", "--max-connections"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(flags); i++) {
    cr_assert_eq(parse(&cfg, err, sizeof err, 1, &flags[i]), -1, "%s without value", flags[i]);
    cr_assert(strstr(err, flags[i] + 2), "message \"%s\" does not name %s", err, flags[i]);
  }
}

Test(config, invalid_values) {
  clear_env();
  wsy_config cfg;
  char err[256];
  cr_assert_eq(PARSE(&cfg, err, "--max-message-size", "12Q"), -1);
  cr_assert(strstr(err, "12Q") && strstr(err, "max-message-size"), "message \"%s\"", err);
  cr_assert_eq(PARSE(&cfg, err, "--idle-timeout", "soon"), -1);
  cr_assert_eq(PARSE(&cfg, err, "--max-connections", "-5"), -1);
  cr_assert_eq(PARSE(&cfg, err, "--max-connections", "99999999999"), -1);
  cr_assert_eq(PARSE(&cfg, err, "--log-level", "loud"), -1);
  /* Values that parse but make no sense for the server. */
  cr_assert_eq(PARSE(&cfg, err, "--max-message-size", "0"), -1);
  cr_assert_eq(PARSE(&cfg, err, "--max-queued-bytes", "100"), -1);
}

Test(config, environment_applies_and_flags_win) {
  clear_env();
  wsy_config cfg;
  char err[256];
  cr_assert_eq(setenv("WSYNC_MAX_MESSAGE_SIZE", "2M", 1), 0);
  cr_assert_eq(setenv("WSYNC_IDLE_TIMEOUT", "5s", 1), 0);
  cr_assert_eq(setenv("WSYNC_ECHO_ENDPOINT", "1", 1), 0);
  cr_assert_eq(parse(&cfg, err, sizeof err, 0, NULL), 0, "%s", err);
  cr_assert_eq(cfg.max_message, 2 * 1048576);
  cr_assert_eq(cfg.idle_timeout_ms, 5000);
  cr_assert_eq(cfg.echo_endpoint, 1);

  cr_assert_eq(PARSE(&cfg, err, "--max-message-size", "3M"), 0, "%s", err);
  cr_assert_eq(cfg.max_message, 3 * 1048576, "the flag must win over the environment");
  cr_assert_eq(cfg.idle_timeout_ms, 5000, "the environment still applies to other options");
  cr_assert_eq(PARSE(&cfg, err, "--echo-endpoint=0"), 0, "%s", err);
  cr_assert_eq(cfg.echo_endpoint, 0);

  /* An empty variable counts as unset. */
  cr_assert_eq(setenv("WSYNC_MAX_MESSAGE_SIZE", "", 1), 0);
  cr_assert_eq(parse(&cfg, err, sizeof err, 0, NULL), 0, "%s", err);
  cr_assert_eq(cfg.max_message, 1048576);

  /* A bad value in the environment is an error that names the variable. */
  cr_assert_eq(setenv("WSYNC_MAX_MESSAGE_SIZE", "lots", 1), 0);
  cr_assert_eq(parse(&cfg, err, sizeof err, 0, NULL), -1);
  cr_assert(strstr(err, "lots") && strstr(err, "WSYNC_"), "message \"%s\"", err);
  unsetenv("WSYNC_MAX_MESSAGE_SIZE");
  unsetenv("WSYNC_IDLE_TIMEOUT");
  unsetenv("WSYNC_ECHO_ENDPOINT");
}

Test(config, help_and_version_ask_to_exit, .init = cr_redirect_stdout) {
  clear_env();
  wsy_config cfg;
  char err[256];
  cr_assert_eq(PARSE(&cfg, err, "--help"), 1);
  cr_assert_eq(PARSE(&cfg, err, "-h"), 1);
  cr_assert_eq(PARSE(&cfg, err, "--version"), 1);
  fflush(stdout);
}

Test(config, usage_lists_every_flag_and_variable) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  cr_assert_not_null(f);
  config_usage(f);
  fclose(f);
  static const char *want[] = {"--listen", "--max-message-size", "WSYNC_MAX_MESSAGE_SIZE",
                               "--idle-timeout", "WSYNC_IDLE_TIMEOUT", "--echo-endpoint",
                               "WSYNC_ECHO_ENDPOINT", "--allowed-origins"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(want); i++)
    cr_assert(strstr(text, want[i]), "usage lacks %s", want[i]);
  free(text);
}

/* ---- secrets, the demo flag, the log format, the degraded status --------------- */

static void clear_secret_env(void) {
  clear_env();
  static const char *vars[] = {"WSYNC_AUTH_SECRET", "WSYNC_API_KEY", "WSYNC_ALLOW_WEAK_SECRETS",
                               "WSYNC_INSECURE_DEMO", "WSYNC_INSECURE_DEMO_PUBLIC", "WSYNC_LOG_FORMAT",
                               "WSYNC_DEGRADED_STATUS"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(vars); i++) unsetenv(vars[i]);
}

Test(config, short_secrets_are_refused_unless_allowed) {
  clear_secret_env();
  wsy_config cfg;
  char err[256];
  cr_assert_eq(PARSE(&cfg, err, "--auth-secret", "0123456789abcdef0123456789abcde"), -1);
  cr_assert(strstr(err, "--auth-secret is 31 bytes"), "%s", err);
  cr_assert_eq(PARSE(&cfg, err, "--auth-secret", "0123456789abcdef0123456789abcdef"), 0, "%s", err);
  cr_assert_eq(PARSE(&cfg, err, "--api-key", "0123456789abcde"), -1);
  cr_assert(strstr(err, "--api-key is 15 bytes"), "%s", err);
  cr_assert_eq(PARSE(&cfg, err, "--api-key", "0123456789abcdef"), 0, "%s", err);
  cr_assert_eq(PARSE(&cfg, err, "--api-key", "k", "--auth-secret", "s", "--allow-weak-secrets"), 0, "%s", err);
  cr_assert_eq(cfg.allow_weak_secrets, 1);
  setenv("WSYNC_AUTH_SECRET", "short", 1);
  cr_assert_eq(PARSE(&cfg, err, "--listen", "127.0.0.1:0"), -1);
  cr_assert(strstr(err, "--auth-secret"), "%s", err);
}

Test(config, insecure_demo_is_loopback_only_unless_public) {
  clear_secret_env();
  wsy_config cfg;
  char err[256];
  static const char *const loopback[] = {"127.0.0.1:0", "127.1.2.3:80", "[::1]:0", "localhost:8080"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(loopback); i++)
    cr_assert_eq(PARSE(&cfg, err, "--insecure-demo", "--listen", (char *)loopback[i]), 0, "%s: %s",
                 loopback[i], err);
  static const char *const other[] = {"0.0.0.0:0", "[::]:0", "192.168.1.5:8080", "example.com:80"};
  for (size_t i = 0; i < WSY_ARRAY_LEN(other); i++) {
    cr_assert_eq(PARSE(&cfg, err, "--insecure-demo", "--listen", (char *)other[i]), -1, "%s", other[i]);
    cr_assert(strstr(err, "--insecure-demo-public"), "%s", err);
    cr_assert_eq(PARSE(&cfg, err, "--insecure-demo", "--insecure-demo-public", "--listen", (char *)other[i]), 0,
                 "%s", err);
  }
  cr_assert_eq(PARSE(&cfg, err, "--listen", "0.0.0.0:0"), 0, "no demo: any address");
}

Test(config, log_format_and_degraded_status) {
  clear_secret_env();
  wsy_config cfg;
  char err[256];
  cr_assert_eq(PARSE(&cfg, err, "--listen", "127.0.0.1:0"), 0, "%s", err);
  cr_assert_eq(cfg.log_format, LOG_TEXT);
  cr_assert_eq(cfg.degraded_status, 503);
  cr_assert_eq(PARSE(&cfg, err, "--log-format", "json", "--degraded-status", "200"), 0, "%s", err);
  cr_assert_eq(cfg.log_format, LOG_JSON);
  cr_assert_eq(cfg.degraded_status, 200);
  cr_assert_eq(PARSE(&cfg, err, "--log-format", "xml"), -1);
  cr_assert(strstr(err, "(text or json)"), "%s", err);
  cr_assert_eq(PARSE(&cfg, err, "--degraded-status", "99"), -1);
  cr_assert_eq(PARSE(&cfg, err, "--degraded-status", "600"), -1);
}

Test(config, tls_flags) {
  clear_env();
  unsetenv("WSYNC_TLS_CERT");
  unsetenv("WSYNC_TLS_KEY");
  wsy_config cfg;
  char err[256];
  cr_assert_eq(parse(&cfg, err, sizeof err, 0, NULL), 0, "%s", err);
  cr_assert_null(cfg.tls_cert, "plain HTTP unless asked");
  cr_assert_null(cfg.tls_key);
  cr_assert_eq(PARSE(&cfg, err, "--tls-cert", "/etc/wsync/cert.pem", "--tls-key=/etc/wsync/key.pem"), 0, "%s", err);
  cr_assert_str_eq(cfg.tls_cert, "/etc/wsync/cert.pem");
  cr_assert_str_eq(cfg.tls_key, "/etc/wsync/key.pem");
  setenv("WSYNC_TLS_CERT", "/env/cert.pem", 1);
  setenv("WSYNC_TLS_KEY", "/env/key.pem", 1);
  cr_assert_eq(PARSE(&cfg, err, "--tls-key", "/flag/key.pem"), 0, "%s", err);
  cr_assert_str_eq(cfg.tls_cert, "/env/cert.pem", "from the environment");
  cr_assert_str_eq(cfg.tls_key, "/flag/key.pem", "the flag wins");
}

/* ---- the hooks that decide (--auth-hook, --op-hook) ---------------------------- */

Test(config, hook_options) {
  clear_env();
  unsetenv("WSYNC_OP_HOOK");
  unsetenv("WSYNC_AUTH_HOOK");
  wsy_config cfg;
  char err[256];
  cr_assert_eq(parse(&cfg, err, sizeof err, 0, NULL), 0, "%s", err);
  cr_assert_null(cfg.auth_hook);
  cr_assert_eq(cfg.auth_hook_all_joins, 0);
  cr_assert_eq(cfg.auth_hook_timeout_ms, 2000);
  cr_assert_eq(cfg.op_hooks.n, 0);
  cr_assert_eq(cfg.op_hook_batch, 1);
  int rc = PARSE(&cfg, err, "--auth-hook", "https://app.example/auth", "--auth-hook-joins", "all",
                 "--op-hook", "board:*=http://127.0.0.1:7000/a", "--op-hook=form:x=https://b.example/",
                 "--op-hook-batch", "16");
  cr_assert_eq(rc, 0, "%s", err);
  cr_assert_str_eq(cfg.auth_hook, "https://app.example/auth");
  cr_assert_eq(cfg.auth_hook_all_joins, 1);
  cr_assert_eq(cfg.op_hooks.n, 2, "repeatable, in the order given");
  cr_assert_str_eq(cfg.op_hooks.v[0], "board:*=http://127.0.0.1:7000/a");
  cr_assert_str_eq(cfg.op_hooks.v[1], "form:x=https://b.example/");
  cr_assert_eq(cfg.op_hook_batch, 16);
}

Test(config, hook_options_refused) {
  clear_env();
  static const char *const bad[][2] = {
    {"--auth-hook", "ftp://a.example/"},
    {"--auth-hook", "http://"},
    {"--auth-hook-joins", "some"},
    {"--op-hook", "board:*"},
    {"--op-hook", "=http://a.example/"},
    {"--op-hook", "bo ard=http://a.example/"},
    {"--op-hook", "board:*=a.example"},
    {"--op-hook-batch", "0"},
    {"--op-hook-batch", "257"},
    {"--hook-secret", "too-short"},
  };
  for (size_t i = 0; i < WSY_ARRAY_LEN(bad); i++) {
    wsy_config cfg;
    char err[256] = "";
    int rc = PARSE(&cfg, err, (char *)bad[i][0], (char *)bad[i][1]);
    cr_assert_eq(rc, -1, "%s %s accepted", bad[i][0], bad[i][1]);
    cr_assert(strstr(err, bad[i][0] + 2) != NULL, "the error names the option: %s", err);
  }
  /* A 17th --op-hook is refused rather than dropped. */
  wsy_config cfg;
  char err[256] = "";
  char *argv[40];
  int argc = 0;
  for (int i = 0; i < 17; i++) {
    argv[argc++] = "--op-hook";
    argv[argc++] = "r=http://127.0.0.1/";
  }
  cr_assert_eq(parse(&cfg, err, sizeof err, argc, argv), -1);
  cr_assert(strstr(err, "op-hook") != NULL, "%s", err);
}
