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
#include <netdb.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <malloc.h>
#include <uv.h>

#include "auth/auth.h"
#include "common/log.h"
#include "config/config.h"
#include "hooks/webhook.h"
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
  ws_route sync_route, yjs_route, echo_route, bcast_route;
  bcast_registry *bcast;
  engine *sync;
  auth_jwks *jwks;          /* --auth-jwks, as last read */
  struct timespec jwks_mtime;
  off_t jwks_size;
  net_tls *tls;            /* --tls-cert/--tls-key, NULL for plain HTTP */
};

/* ---- keys ---------------------------------------------------------------------- */

/* Reads a whole small file (keys, certificates) into a malloc'd string. */
static char *read_small_file(const char *path, size_t *len, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 20, n = 0;
  char *text = wsy_malloc(cap + 1);
  n = fread(text, 1, cap + 1, f);
  int bad = ferror(f);
  fclose(f);
  if (bad || n > cap) {
    snprintf(err, errlen, "%s: %s", path, bad ? "cannot read" : "larger than 1 MiB");
    wsy_free(text);
    return NULL;
  }
  text[n] = '\0';
  *len = n;
  return text;
}

/* (Re)reads --auth-jwks. On failure the keys in use stay; 0 or -1 with err. */
static int load_jwks(struct app *app, char *err, size_t errlen) {
  const char *path = app->cfg->auth_jwks;
  struct stat st;
  if (stat(path, &st) != 0) {
    snprintf(err, errlen, "--auth-jwks %s: %s", path, strerror(errno));
    return -1;
  }
  size_t len;
  char *text = read_small_file(path, &len, err, errlen);
  if (!text) return -1;
  auth_jwks *ks;
  char why[200];
  int rc = auth_jwks_parse(text, len, &ks, why, sizeof why);
  wsy_free(text);
  if (rc != 0) {
    snprintf(err, errlen, "--auth-jwks %s: %s", path, why);
    return -1;
  }
  if (app->sync) engine_set_jwks(app->sync, ks);
  auth_jwks_free(app->jwks);
  app->jwks = ks;
  app->jwks_mtime = st.st_mtim;
  app->jwks_size = st.st_size;
  log_info("--auth-jwks %s: %zu signing key(s)", path, auth_jwks_count(ks));
  return 0;
}

/* Rereads the keys when the file changed (an identity provider rotating). */
static void reload_jwks_if_changed(struct app *app) {
  struct stat st;
  if (!app->cfg->auth_jwks || stat(app->cfg->auth_jwks, &st) != 0) return;
  if (st.st_mtim.tv_sec == app->jwks_mtime.tv_sec && st.st_mtim.tv_nsec == app->jwks_mtime.tv_nsec &&
      st.st_size == app->jwks_size)
    return;
  char err[300];
  if (load_jwks(app, err, sizeof err) != 0) log_error("%s (the keys read before stay in use)", err);
}

/* ---- routes ------------------------------------------------------------------ */

static void healthz(void *ud, conn *c, httpd_req *r) {
  struct app *app = ud;
  const char *m = httpd_req_method(r);
  int head = !strcmp(m, "HEAD");
  if (strcmp(m, "GET") != 0 && !head) {
    httpd_method_not_allowed(c, "GET, HEAD");
    return;
  }
  uint64_t up = (wsy_now_ms() - app->started_ms) / 1000;
  size_t sessions, rooms;
  const char *st, *bus, *degraded;
  engine_health(app->sync, &sessions, &rooms, &st, &bus, &degraded);
  json_t *b = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:s,s:s}", "status", degraded ? "degraded" : "ok", "version",
                        WSYNC_VERSION, "uptime_s", (json_int_t)up, "connections",
                        (json_int_t)net_loop_conn_count(app->net), "sessions", (json_int_t)sessions, "rooms",
                        (json_int_t)rooms, "store", st, "bus", bus);
  if (degraded) json_object_set_new(b, "reason", json_string(degraded));
  /* heap_bytes: bytes malloc has handed out and not taken back, for memory
   * measurements (wsync-bench --idle --healthz) without reading /proc. Only
   * with the libc allocator: mimalloc (release builds) keeps no such count,
   * and its committed memory moves in whole segments. */
#ifndef WSY_MIMALLOC
  json_object_set_new(b, "heap_bytes", json_integer((json_int_t)mallinfo2().uordblks));
#endif
  /* permessage-deflate: messages compressed, deliveries that reused one,
   * and the bytes zlib holds (docs/PERFORMANCE.md, compression). */
  const ws_pmd_stats *z = ws_pmd_stats_get();
  json_object_set_new(b, "compression",
                      json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "deflates", (json_int_t)z->deflates, "shared",
                                (json_int_t)z->shared_hits, "skipped", (json_int_t)z->deflate_skipped, "inflates",
                                (json_int_t)z->inflates, "inflate_streams", (json_int_t)z->inflate_streams,
                                "cached_frames", (json_int_t)z->cached_frames, "zlib_bytes",
                                (json_int_t)z->zlib_bytes));
  char *text = json_dumps(b, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(b);
  size_t len = strlen(text);
  /* Degraded: a load balancer should stop sending writes here (503 by
   * default; --degraded-status 200 reports it in the body only). */
  int status = degraded ? (int)app->cfg->degraded_status : 200;
  if (head) httpd_respond_head(c, status, "application/json", "Cache-Control: no-store\r\n", len + 1);
  else {
    char *withnl = malloc(len + 2);
    memcpy(withnl, text, len);
    withnl[len] = '\n';
    httpd_respond(c, status, "application/json", "Cache-Control: no-store\r\n", withnl, len + 1);
    free(withnl);
  }
  free(text);
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
                            .allowed_origins = cfg->allowed_origins,
                            .compression = cfg->compression};
  app->sync_route = (ws_route){&engine_ws_endpoint, app->sync, &app->ws_cfg};
  httpd_server *hs = app->http;
  httpd_route_upgrade(hs, "/v1/ws", ws_http_upgrade, &app->sync_route);
  app->yjs_route = (ws_route){&engine_yjs_endpoint, app->sync, &app->ws_cfg};
  httpd_route_upgrade_prefix(hs, "/v1/yjs/", ws_http_upgrade, &app->yjs_route);
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
  httpd_route(hs, "/v1/rooms", engine_route_rooms_list, app->sync);
  httpd_route_prefix(hs, "/v1/rooms/", engine_route_rooms, app->sync);
  httpd_route_prefix(hs, "/v1/users/", engine_route_users, app->sync);
  httpd_route(hs, "/metrics", engine_route_metrics, app->sync);
  /* The backend API answers even a malformed or oversized request with its
   * JSON error object. */
  httpd_json_errors(hs, "/v1/rooms");
  httpd_json_errors(hs, "/v1/users/");
  httpd_json_errors(hs, "/metrics");
  httpd_route(hs, "/healthz", healthz, app);
  httpd_route_default(hs, static_files, app);
}

/* The store: PostgreSQL with --store postgres://..., else SQLite in
 * --data-dir; behind the fault injector when a test asks for it
 * (--store-faults). A bus between nodes needs the shared store. */
static int open_store(struct app *app, store **out, char *err, size_t errlen) {
  store *st;
  const char *url = app->cfg->store_url;
  int rc;
  if (url && *url) {
    if (strncmp(url, "postgres://", 11) != 0 && strncmp(url, "postgresql://", 13) != 0) {
      snprintf(err, errlen, "--store: %s is not a postgres:// URL", url);
      return WSY_INVAL;
    }
    rc = store_pg_open(url, app->cfg->durability_full, app->loop, &st, err, errlen);
  } else if (app->cfg->bus_url && *app->cfg->bus_url) {
    snprintf(err, errlen,
             "--bus needs a store shared by every node: add --store postgres://USER@HOST:PORT/DB "
             "(the embedded SQLite store belongs to one node)");
    return WSY_INVAL;
  } else {
    rc = store_sqlite_open(app->cfg->data_dir, app->cfg->durability_full, app->loop, &st, err, errlen);
  }
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
  uv_timer_t drain, watch;
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
    uv_close((uv_handle_t *)&rt->sighup, NULL);
    uv_close((uv_handle_t *)&rt->watch, NULL);
    return;
  }
  if (!rt->forced && uv_now(app->loop) >= rt->deadline) {
    rt->forced = 1;
    log_warn("shutdown: %u connections did not close in time; closing them",
             net_loop_conn_count(app->net));
    net_loop_foreach(app->net, force_one, NULL);
  }
}

/* SIGHUP: reread what can change under a running server (the JWKS). */
static void on_sighup(uv_signal_t *s, int signum) {
  runtime *rt = s->data;
  struct app *app = rt->app;
  (void)signum;
  log_info("SIGHUP: reloading");
  if (app->cfg->auth_jwks) {
    char err[300];
    if (load_jwks(app, err, sizeof err) != 0) log_error("%s (the keys read before stay in use)", err);
  }
  if (app->tls) {
    char err[512];
    if (net_tls_reload(app->tls, err, sizeof err) != 0)
      log_warn("SIGHUP: TLS certificate not reloaded, keeping the old one: %s", err);
    else
      log_info("SIGHUP: TLS certificate reloaded (sha256 %s)", net_tls_fingerprint(app->tls));
  }
}

static void on_watch(uv_timer_t *t) {
  runtime *rt = t->data;
  reload_jwks_if_changed(rt->app);
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
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* --listen's host as a numeric address: an address as it is, a host name
 * through getaddrinfo (the first address it gives, IPv4 preferred, as
 * "localhost" usually means 127.0.0.1). 0, or an EAI_ error. */
static int resolve_host(const char *host, char *out, size_t n) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
  int rc = getaddrinfo(host, NULL, &hints, &res);
  if (rc != 0) return rc;
  const struct addrinfo *pick = res;
  for (const struct addrinfo *a = res; a; a = a->ai_next)
    if (a->ai_family == AF_INET) {
      pick = a;
      break;
    }
  rc = getnameinfo(pick->ai_addr, pick->ai_addrlen, out, (socklen_t)n, NULL, 0, NI_NUMERICHOST);
  freeaddrinfo(res);
  return rc;
}

static int serve(int argc, char **argv) {
  wsy_config cfg;
  char err[256];
  config_defaults(&cfg);
  int rc = config_parse(&cfg, argc, argv, err, sizeof err);
  if (rc == 1) return 0;
  if (rc < 0 || webhooks_check(cfg.webhooks.v, cfg.webhooks.n, err, sizeof err) != 0) {
    fprintf(stderr, "wsync: %s\n", err);
    return 2;
  }
  wsy_log_level = cfg.log_level;
  wsy_log_format = cfg.log_format;

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
    log_warn("*** --insecure-demo: clients may claim any user name without a token. %s ***",
             cfg.insecure_demo_public ? "--insecure-demo-public: it is reachable beyond this machine."
                                      : "Loopback only.");
  if (cfg.allow_weak_secrets) log_warn("*** --allow-weak-secrets: short secrets accepted (tests only) ***");
  if (!cfg.auth_secret && !cfg.auth_jwks && !cfg.insecure_demo)
    log_warn("no --auth-secret or --auth-jwks: every hello will be refused (unauthorized)");
  if (cfg.auth_jwks && load_jwks(&app, err, sizeof err) != 0) {
    fprintf(stderr, "wsync: %s\n", err);
    return 2;
  }
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
    .write_threads = cfg.write_threads,
    .write_min = cfg.write_threads_min,
  };
  app.http = httpd_new(&(httpd_config){.max_header = cfg.max_header,
                                        .max_body = cfg.max_body,
                                        .handshake_timeout_ms = cfg.handshake_timeout_ms,
                                        .idle_timeout_ms = cfg.idle_timeout_ms});
  app.net = net_loop_new(app.loop, &ncfg, app.http);
  if (app.tls) net_loop_set_tls(app.net, app.tls);
  rc = engine_new(app.loop, app.net, &cfg, st, &app.sync, err, sizeof err);
  if (rc == 0) engine_set_jwks(app.sync, app.jwks);
  if (rc) {
    fprintf(stderr, "wsync: %s\n", err);
    store_close(st);
    net_loop_free(app.net);
    httpd_free(app.http);
    auth_jwks_free(app.jwks);
    net_tls_free(app.tls);
    return 1;
  }
  add_routes(&app);
  char addr[INET6_ADDRSTRLEN + 8];
  int gai = resolve_host(cfg.listen_host, addr, sizeof addr);
  rc = gai ? UV_EINVAL : net_listen(app.net, addr, cfg.listen_port, httpd_accept, app.http);
  if (rc) {
    if (gai)
      fprintf(stderr, "wsync: cannot listen on %s:%d: cannot resolve '%s': %s\n", cfg.listen_host,
              cfg.listen_port, cfg.listen_host, gai_strerror(gai));
    else
      fprintf(stderr, "wsync: cannot listen on %s:%d: %s\n", cfg.listen_host, cfg.listen_port, uv_strerror(rc));
    engine_free(app.sync);
    net_loop_free(app.net);
    httpd_free(app.http);
    ws_bcast_free(app.bcast);
    auth_jwks_free(app.jwks);
    net_tls_free(app.tls);
    return 1;
  }
  const char *h = addr;
  int v6 = strchr(h, ':') != NULL;
  store_stats_info sti = {0};
  if (store_stats(st, &sti) != 0) sti.schema_version = -1;
  struct rlimit fds = {0};
  getrlimit(RLIMIT_NOFILE, &fds);
  char listen_as[96] = "";
  if (strcmp(cfg.listen_host, addr) != 0) snprintf(listen_as, sizeof listen_as, " (%s)", cfg.listen_host);
  log_info("wsync %s listening on %s://%s%s%s:%d%s pid %d; store %s in %s (schema %d, durability %s); "
           "auth %s; backend API %s; origins %s; max connections %u (fd limit %llu); log %s %s",
           WSYNC_VERSION, app.tls ? "https" : "http", v6 ? "[" : "", h, v6 ? "]" : "", net_listen_port(app.net), listen_as, (int)getpid(),
           store_backend(st), cfg.data_dir, sti.schema_version, cfg.durability_full ? "full" : "normal",
           cfg.auth_secret && *cfg.auth_secret ? (cfg.insecure_demo ? "token and insecure demo" : "token")
           : cfg.auth_jwks                     ? "tokens from the JWKS"
                                               : (cfg.insecure_demo ? "insecure demo only" : "none (hello refused)"),
           cfg.api_key && *cfg.api_key ? "on" : "off",
           cfg.allowed_origins && *cfg.allowed_origins ? cfg.allowed_origins : "any",
           cfg.max_connections, (unsigned long long)fds.rlim_cur,
           cfg.log_level == LOG_DEBUG ? "debug" : cfg.log_level == LOG_INFO ? "info"
           : cfg.log_level == LOG_WARN ? "warn" : "error",
           cfg.log_format == LOG_JSON ? "json" : "text");
  if (cfg.echo_endpoint) log_info("test endpoints enabled: /v1/echo, /v1/broadcast");
  if (cfg.write_threads)
    log_info("write helpers: %u thread(s) share the writes of a large flush", net_loop_write_threads(app.net));
  if (app.tls)
    log_info("TLS 1.2/1.3 with %s (sha256 %s); SIGHUP reloads it", cfg.tls_cert, net_tls_fingerprint(app.tls));

  runtime rt = {.app = &app};
  uv_signal_init(app.loop, &rt.sigint);
  uv_signal_init(app.loop, &rt.sigterm);
  uv_timer_init(app.loop, &rt.drain);
  rt.sigint.data = rt.sigterm.data = rt.drain.data = &rt;
  uv_signal_start(&rt.sigint, on_signal, SIGINT);
  uv_signal_start(&rt.sigterm, on_signal, SIGTERM);
  uv_signal_init(app.loop, &rt.sighup);
  rt.sighup.data = &rt;
  uv_signal_start(&rt.sighup, on_sighup, SIGHUP);
  uv_timer_init(app.loop, &rt.watch);
  rt.watch.data = &rt;
  if (cfg.auth_jwks) uv_timer_start(&rt.watch, on_watch, 2000, 2000);

  uv_run(app.loop, UV_RUN_DEFAULT);
  engine_free(app.sync);
  net_loop_free(app.net);
  httpd_free(app.http);
  ws_bcast_free(app.bcast);
  auth_jwks_free(app.jwks);
  net_tls_free(app.tls);
  ws_conn_pmd_release();
  uv_loop_close(app.loop);
  log_info("stopped");
  return 0;
}

/* wsync token --user U [--device D] [--grant 'board:*=rw']... [--ttl 1h]
 * Prints an HS256 token signed with --auth-secret / WSYNC_AUTH_SECRET, or,
 * with --key FILE (a PEM private key), an RS256/ES256/EdDSA token as an
 * identity provider would sign it (development and tests). */
static int token_cmd(int argc, char **argv) {
  const char *user = NULL, *device = NULL, *secret = getenv("WSYNC_AUTH_SECRET");
  const char *key = NULL, *kid = NULL;
  const char *grants[64];
  size_t ngrants = 0;
  unsigned ttl_ms = 3600 * 1000;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      printf("usage: wsync token --user USER [options]\n\n"
             "Prints a client token (PROTOCOL.md 3.1, docs/TOKENS.md): HS256 signed with the server's\n"
             "secret, or signed with a private key as an identity provider would. For development and\n"
             "tests: in production the application's backend or the provider mints them.\n\n"
             "options:\n"
             "  --user USER            the token's sub: 1-64 characters of A-Z a-z 0-9 . _ @ - (required)\n"
             "  --device DEVICE        bind the token to this device id (default: none, any device)\n"
             "  --grant PATTERN=PERMS  a room grant, PERMS r, w or rw; * matches any run of characters;\n"
             "                         repeat for more, up to 64 (default: none, only user:USER)\n"
             "  --ttl DUR              lifetime: ms, s, m or h, at least 1s (default 1h)\n"
             "  --auth-secret SECRET   the HS256 key (default: $WSYNC_AUTH_SECRET)\n"
             "  --key PRIVATE.pem      sign with this key instead: RS256 (RSA), ES256 (P-256), EdDSA (Ed25519)\n"
             "  --kid KID              with --key: the key id in the token's header (default: none)\n"
             "  --help                 this text\n");
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
    else if (!strcmp(a, "--key")) key = v;
    else if (!strcmp(a, "--kid")) kid = v;
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
  char *t;
  if (key) {
    char err[300];
    size_t len;
    char *pem = read_small_file(key, &len, err, sizeof err);
    t = pem ? auth_mint_pem(pem, len, kid, user, device, grants, ngrants, (int64_t)time(NULL), ttl_ms / 1000, err,
                            sizeof err)
            : NULL;
    wsy_free(pem);
    if (!t) {
      fprintf(stderr, "wsync token: --key %s: %s\n", key, err);
      return 2;
    }
  } else {
    if (!secret || !*secret) {
      fprintf(stderr, "wsync token: --auth-secret, WSYNC_AUTH_SECRET or --key is required\n");
      return 2;
    }
    t = auth_mint(secret, user, device, grants, ngrants, (int64_t)time(NULL), ttl_ms / 1000);
    if (!t) {
      fprintf(stderr, "wsync token: could not sign the token\n");
      return 1;
    }
  }
  printf("%s\n", t);
  free(t);
  return 0;
}

/* The top level: the commands, each with its own --help. */
static void usage(FILE *out) {
  fprintf(out,
          "usage: wsync COMMAND [options]\n\n"
          "wsync is a real-time multi-device synchronization server.\n\n"
          "commands:\n"
          "  serve     run the server (wsync serve --help lists its options)\n"
          "  token     print a signed client token for development (wsync token --help)\n"
          "  version   print the version (also --version)\n"
          "  help      this text (also --help, -h)\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "serve")) return serve(argc - 2, argv + 2);
  if (!strcmp(argv[1], "token")) return token_cmd(argc - 2, argv + 2);
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
    printf("wsync %s\n", WSYNC_VERSION);
    return 0;
  }
  fprintf(stderr, "wsync: unknown command '%s' (try 'wsync --help')\n", argv[1]);
  return 2;
}
