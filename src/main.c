/* main.c -- configuration and wiring only: parse flags, build the parts
 * (net loop, httpd with its routes, the store, the engine), listen, run the
 * loop, shut down gracefully on SIGINT/SIGTERM, reload the TLS certificate
 * on SIGHUP. The routes are registered
 * here and nowhere else: transport (net, http, ws) knows paths and
 * callbacks only, the engine knows no paths. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include <malloc.h>
#include <uv.h>

#include "auth/auth.h"
#include "common/log.h"
#include "config/config.h"
#include "http/httpd.h"
#include "store/store.h"
#include "sync/engine.h"
#include "ws/ws_conn.h"

/* The server's parts, wired together once. */
struct app {
  uv_loop_t *loop;
  net_loop *net;
  httpd_server *http;
  const wsy_config *cfg;
  uint64_t started_ms;
  int shutting_down;
  char static_root[4096]; /* realpath of --static, "" when none */
  ws_config ws_cfg;
  ws_route sync_route, echo_route, bcast_route;
  bcast_registry *bcast;
  engine *sync;
  net_tls *tls;            /* --tls-cert/--tls-key, NULL for plain HTTP */
};

/* ---- routes ------------------------------------------------------------------ */

static void healthz(void *ud, conn *c, httpd_req *r) {
  struct app *app = ud;
  const char *m = httpd_req_method(r);
  int head = !strcmp(m, "HEAD");
  if (strcmp(m, "GET") != 0 && !head) {
    httpd_method_not_allowed(c, "GET, HEAD");
    return;
  }
  char body[400];
  uint64_t up = (wsy_now_ms() - app->started_ms) / 1000;
  size_t sessions, rooms;
  const char *st, *bus;
  engine_health(app->sync, &sessions, &rooms, &st, &bus);
  /* heap_bytes: bytes malloc has handed out and not taken back, for memory
   * measurements (wsync-bench --idle --healthz) without reading /proc. Only
   * with the libc allocator: mimalloc (release builds) keeps no such count,
   * and its committed memory moves in whole segments. */
  char heap[48] = "";
#ifndef WSY_MIMALLOC
  snprintf(heap, sizeof heap, ",\"heap_bytes\":%zu", mallinfo2().uordblks);
#endif
  int n = snprintf(body, sizeof body,
                   "{\"status\":\"ok\",\"version\":\"%s\",\"uptime_s\":%llu,\"connections\":%u,"
                   "\"sessions\":%zu,\"rooms\":%zu,\"store\":\"%s\",\"bus\":\"%s\"%s}\n",
                   WSYNC_VERSION, (unsigned long long)up, net_loop_conn_count(app->net), sessions, rooms, st,
                   bus, heap);
  size_t len = wsy_snlen(n, sizeof body);
  if (head) httpd_respond_head(c, 200, "application/json", "Cache-Control: no-store\r\n", len);
  else httpd_respond(c, 200, "application/json", "Cache-Control: no-store\r\n", body, len);
}

/* Whatever no route took: a static file (--static), else 404. */
static void static_files(void *ud, conn *c, httpd_req *r) {
  struct app *app = ud;
  const char *m = httpd_req_method(r);
  int head = !strcmp(m, "HEAD");
  if (app->static_root[0]) {
    if (strcmp(m, "GET") != 0 && !head) {
      httpd_method_not_allowed(c, "GET, HEAD");
      return;
    }
    if (httpd_static(app->static_root, c, r, head) == 0) return;
  }
  httpd_error(c, 404, "no such resource");
}

static void add_routes(struct app *app) {
  const wsy_config *cfg = app->cfg;
  app->ws_cfg = (ws_config){.lim = {.max_message = cfg->max_message, .require_mask = 1},
                            .close_timeout_ms = cfg->close_timeout_ms,
                            .idle_timeout_ms = cfg->idle_timeout_ms,
                            .ping_interval_ms = cfg->ping_interval_ms,
                            .allowed_origins = cfg->allowed_origins};
  app->sync_route = (ws_route){&engine_ws_endpoint, app->sync, &app->ws_cfg};
  httpd_server *hs = app->http;
  httpd_route_upgrade(hs, "/v1/ws", ws_http_upgrade, &app->sync_route);
  if (cfg->echo_endpoint) {
    app->bcast = ws_bcast_new();
    app->echo_route = (ws_route){&ws_echo_endpoint, NULL, &app->ws_cfg};
    app->bcast_route = (ws_route){&ws_broadcast_endpoint, app->bcast, &app->ws_cfg};
    httpd_route_upgrade(hs, "/v1/echo", ws_http_upgrade, &app->echo_route);
    httpd_route_upgrade(hs, "/v1/broadcast", ws_http_upgrade, &app->bcast_route);
  }
  httpd_route(hs, "/v1/send", engine_route_fallback, app->sync);
  httpd_route(hs, "/v1/sse", engine_route_fallback, app->sync);
  httpd_route(hs, "/v1/poll", engine_route_fallback, app->sync);
  httpd_route_prefix(hs, "/v1/rooms/", engine_route_rooms, app->sync);
  httpd_route(hs, "/metrics", engine_route_metrics, app->sync);
  httpd_route(hs, "/healthz", healthz, app);
  httpd_route_default(hs, static_files, app);
}

/* The store: SQLite in --data-dir, behind the fault injector when a test
 * asks for it (--store-faults). */
static int open_store(struct app *app, store **out, char *err, size_t errlen) {
  store *st;
  int rc = store_sqlite_open(app->cfg->data_dir, app->cfg->durability_full, app->loop, &st, err, errlen);
  if (rc != 0) return rc;
  if (app->cfg->store_faults && *app->cfg->store_faults) {
    st = store_fault_new(st, app->loop);
    store_fault_control(st, app->cfg->store_faults);
    log_warn("--store-faults %s: store calls fail as that file says (testing only)", app->cfg->store_faults);
  }
  *out = st;
  return 0;
}

typedef struct {
  struct app *app;
  uv_signal_t sigint, sigterm, sighup;
  uv_timer_t drain;
  uint64_t deadline;
  int forced;
} runtime;

static void close_one(conn *c, void *ud) {
  (void)ud;
  ws_conn *w = ws_conn_of(c);
  if (w) ws_close(w, WS_CLOSE_GOING_AWAY, "server shutting down");
  else net_conn_end(c);
}

static void force_one(conn *c, void *ud) {
  (void)ud;
  net_conn_close(c);
}

/* Runs every few ms once shutdown started: done when no connection is left;
 * past the grace period, whatever is left is closed hard. */
static void on_drain(uv_timer_t *t) {
  runtime *rt = t->data;
  struct app *app = rt->app;
  net_loop_flush(app->net);
  if (net_loop_conn_count(app->net) == 0) {
    uv_timer_stop(&rt->drain);
    uv_close((uv_handle_t *)&rt->drain, NULL);
    uv_close((uv_handle_t *)&rt->sigint, NULL);
    uv_close((uv_handle_t *)&rt->sigterm, NULL);
    if (app->tls) uv_close((uv_handle_t *)&rt->sighup, NULL);
    return;
  }
  if (!rt->forced && uv_now(app->loop) >= rt->deadline) {
    rt->forced = 1;
    log_warn("shutdown: %u connections did not close in time; closing them",
             net_loop_conn_count(app->net));
    net_loop_foreach(app->net, force_one, NULL);
  }
}

static void on_signal(uv_signal_t *s, int signum) {
  runtime *rt = s->data;
  struct app *app = rt->app;
  if (app->shutting_down) {
    log_warn("second signal: exiting now");
    exit(1);
  }
  log_info("%s: shutting down (closing %u connections with 1001)",
           signum == SIGINT ? "SIGINT" : "SIGTERM", net_loop_conn_count(app->net));
  app->shutting_down = 1;
  httpd_shutdown(app->http);
  net_stop_listening(app->net);
  if (app->sync) engine_shutdown(app->sync);
  net_loop_foreach(app->net, close_one, NULL);
  rt->deadline = uv_now(app->loop) + app->cfg->shutdown_grace_ms;
  uv_timer_start(&rt->drain, on_drain, 5, 5);
}

/* SIGHUP: load --tls-cert and --tls-key again (a renewed certificate). New
 * handshakes use the new pair; open connections are not touched. A pair
 * that fails to load leaves the old one in use. */
static void on_hup(uv_signal_t *s, int signum) {
  (void)signum;
  runtime *rt = s->data;
  char err[512];
  if (net_tls_reload(rt->app->tls, err, sizeof err) != 0)
    log_warn("SIGHUP: TLS certificate not reloaded, keeping the old one: %s", err);
  else
    log_info("SIGHUP: TLS certificate reloaded (sha256 %s)", net_tls_fingerprint(rt->app->tls));
}

static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static int serve(int argc, char **argv) {
  wsy_config cfg;
  char err[256];
  config_defaults(&cfg);
  int rc = config_parse(&cfg, argc, argv, err, sizeof err);
  if (rc == 1) return 0;
  if (rc < 0) {
    fprintf(stderr, "wsync: %s\n", err);
    return 2;
  }
  wsy_log_level = cfg.log_level;

  struct app app;
  memset(&app, 0, sizeof app);
  app.cfg = &cfg;
  app.loop = uv_default_loop();
  app.started_ms = wsy_now_ms();
  if (cfg.static_dir && *cfg.static_dir) {
    if (!realpath(cfg.static_dir, app.static_root)) {
      fprintf(stderr, "wsync: --static %s: %s\n", cfg.static_dir, strerror(errno));
      return 2;
    }
  }
  if (cfg.data_dir && *cfg.data_dir && mkdir(cfg.data_dir, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "wsync: --data-dir %s: %s\n", cfg.data_dir, strerror(errno));
    return 2;
  }

  if (!cfg.tls_cert != !cfg.tls_key) {
    fprintf(stderr, "wsync: %s needs %s too\n", cfg.tls_cert ? "--tls-cert" : "--tls-key",
            cfg.tls_cert ? "--tls-key" : "--tls-cert");
    return 2;
  }
  if (cfg.tls_cert) {
    char terr[512];
    app.tls = net_tls_new(cfg.tls_cert, cfg.tls_key, terr, sizeof terr);
    if (!app.tls) {
      fprintf(stderr, "wsync: %s\n", terr);
      return 2;
    }
  }

  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  if (cfg.insecure_demo)
    log_warn("*** --insecure-demo: clients may claim any user name without a token. "
             "Never expose this server. ***");
  if (!cfg.auth_secret && !cfg.insecure_demo)
    log_warn("no --auth-secret: every hello will be refused (unauthorized)");
  store *st = NULL;
  rc = open_store(&app, &st, err, sizeof err);
  if (rc) {
    fprintf(stderr, "wsync: %s\n", err);
    net_tls_free(app.tls);
    return 1;
  }

  unsigned shortest = cfg.handshake_timeout_ms;
  if (cfg.idle_timeout_ms && cfg.idle_timeout_ms < shortest) shortest = cfg.idle_timeout_ms;
  if (cfg.ping_interval_ms && cfg.ping_interval_ms < shortest) shortest = cfg.ping_interval_ms;
  net_config ncfg = {
    .max_queued = cfg.max_queued,
    .max_connections = cfg.max_connections,
    .ext_size = httpd_ext_size() > ws_conn_ext_size() ? httpd_ext_size() : ws_conn_ext_size(),
    .tick_ms = shortest / 4 < 10 ? 10 : shortest / 4 > 1000 ? 1000 : shortest / 4,
    .linger_ms = 2000,
  };
  app.http = httpd_new(&(httpd_config){.max_header = cfg.max_header,
                                        .max_body = cfg.max_body,
                                        .handshake_timeout_ms = cfg.handshake_timeout_ms,
                                        .idle_timeout_ms = cfg.idle_timeout_ms});
  app.net = net_loop_new(app.loop, &ncfg, app.http);
  if (app.tls) net_loop_set_tls(app.net, app.tls);
  rc = engine_new(app.loop, app.net, &cfg, st, &app.sync, err, sizeof err);
  if (rc) {
    fprintf(stderr, "wsync: %s\n", err);
    store_close(st);
    net_loop_free(app.net);
    httpd_free(app.http);
    net_tls_free(app.tls);
    return 1;
  }
  add_routes(&app);
  rc = net_listen(app.net, cfg.listen_host, cfg.listen_port, httpd_accept, app.http);
  if (rc) {
    fprintf(stderr, "wsync: cannot listen on %s:%d: %s\n", cfg.listen_host, cfg.listen_port,
            uv_strerror(rc));
    engine_free(app.sync);
    net_loop_free(app.net);
    httpd_free(app.http);
    ws_bcast_free(app.bcast);
    net_tls_free(app.tls);
    return 1;
  }
  const char *h = cfg.listen_host;
  int v6 = strchr(h, ':') != NULL;
  log_info("wsync %s listening on %s://%s%s%s:%d (store %s in %s, durability %s, backend API %s)",
           WSYNC_VERSION, app.tls ? "https" : "http", v6 ? "[" : "", h, v6 ? "]" : "", net_listen_port(app.net), store_backend(st),
           cfg.data_dir, cfg.durability_full ? "full" : "normal", cfg.api_key && *cfg.api_key ? "on" : "off");
  if (cfg.echo_endpoint) log_info("test endpoints enabled: /v1/echo, /v1/broadcast");
  if (app.tls)
    log_info("TLS 1.2/1.3 with %s (sha256 %s); SIGHUP reloads it", cfg.tls_cert, net_tls_fingerprint(app.tls));

  runtime rt = {.app = &app};
  uv_signal_init(app.loop, &rt.sigint);
  uv_signal_init(app.loop, &rt.sigterm);
  uv_timer_init(app.loop, &rt.drain);
  rt.sigint.data = rt.sigterm.data = rt.drain.data = &rt;
  uv_signal_start(&rt.sigint, on_signal, SIGINT);
  uv_signal_start(&rt.sigterm, on_signal, SIGTERM);
  if (app.tls) {
    uv_signal_init(app.loop, &rt.sighup);
    rt.sighup.data = &rt;
    uv_signal_start(&rt.sighup, on_hup, SIGHUP);
  }

  uv_run(app.loop, UV_RUN_DEFAULT);
  engine_free(app.sync);
  net_loop_free(app.net);
  httpd_free(app.http);
  ws_bcast_free(app.bcast);
  net_tls_free(app.tls);
  uv_loop_close(app.loop);
  log_info("stopped");
  return 0;
}

/* wsync token --user U [--device D] [--grant 'board:*=rw']... [--ttl 1h]
 * Prints an HS256 token signed with --auth-secret / WSYNC_AUTH_SECRET. */
static int token_cmd(int argc, char **argv) {
  const char *user = NULL, *device = NULL, *secret = getenv("WSYNC_AUTH_SECRET");
  const char *grants[64];
  size_t ngrants = 0;
  unsigned ttl_ms = 3600 * 1000;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help")) {
      printf("usage: wsync token --user U [--device D] [--grant PATTERN=r|w|rw]... [--ttl DUR] [--auth-secret S]\n");
      return 0;
    }
    if (!v) {
      fprintf(stderr, "wsync token: %s needs a value\n", a);
      return 2;
    }
    i++;
    if (!strcmp(a, "--user")) user = v;
    else if (!strcmp(a, "--device")) device = v;
    else if (!strcmp(a, "--auth-secret")) secret = v;
    else if (!strcmp(a, "--ttl")) {
      if (config_parse_duration(v, &ttl_ms) != 0 || ttl_ms < 1000) {
        fprintf(stderr, "wsync token: bad --ttl '%s'\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--grant")) {
      auth_grant g;
      if (ngrants == 64 || auth_grant_parse(v, &g) != 0) {
        fprintf(stderr, "wsync token: bad --grant '%s' (PATTERN=r|w|rw)\n", v);
        return 2;
      }
      wsy_free(g.pattern);
      grants[ngrants++] = v;
    } else {
      fprintf(stderr, "wsync token: unknown option '%s'\n", a);
      return 2;
    }
  }
  if (!user || !auth_user_valid(user, strlen(user))) {
    fprintf(stderr, "wsync token: --user is required (1-64 characters of A-Z a-z 0-9 . _ @ -)\n");
    return 2;
  }
  if (device && !auth_device_valid(device, strlen(device))) {
    fprintf(stderr, "wsync token: bad --device '%s'\n", device);
    return 2;
  }
  if (!secret || !*secret) {
    fprintf(stderr, "wsync token: --auth-secret or WSYNC_AUTH_SECRET is required\n");
    return 2;
  }
  char *t = auth_mint(secret, user, device, grants, ngrants, (int64_t)time(NULL), ttl_ms / 1000);
  if (!t) {
    fprintf(stderr, "wsync token: could not sign the token\n");
    return 1;
  }
  printf("%s\n", t);
  free(t);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    config_usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "serve")) return serve(argc - 2, argv + 2);
  if (!strcmp(argv[1], "token")) return token_cmd(argc - 2, argv + 2);
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    config_usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
    printf("wsync %s\n", WSYNC_VERSION);
    return 0;
  }
  fprintf(stderr, "wsync: unknown command '%s' (try 'wsync --help')\n", argv[1]);
  return 2;
}
