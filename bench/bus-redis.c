/* bus-redis.c -- times the Redis bus (src/sync/bus_redis.c): node A publishes
 * N room entries, node B (same process, same loop) delivers them; and the
 * same count of the same payloads through plain hiredis PUBLISH/SUBSCRIBE
 * (no framing, no bus) as the peer in the same run. Prints messages/s and
 * CPU per message of this process and of redis-server, and the ratios.
 *
 *   make build/bus-redis-bench && build/bus-redis-bench [N] [PAYLOAD_BYTES]
 *
 * It starts its own redis-server on 127.0.0.1 and a free port (no
 * persistence) and kills it after. At most WINDOW messages are in flight,
 * so Redis's output buffer limit for subscribers is never reached. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../src/sync/bus.h"
#include "../src/ws/ws.h"
#include "../src/ws/ws_conn.h"

extern char **environ;

enum { WINDOW = 20000, BATCH = 500 };

static uv_loop_t loop;
static int port;
static pid_t redis_pid;
static long n_msgs;
static size_t payload_len;
static char *payload;
static long sent, got;
static int b_up, a_up;
static bus *ba, *bb;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_self(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double cpu_of(pid_t pid) {
  char p[64], text[1024];
  snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(p, "r");
  if (!f) return 0;
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  char *s = strrchr(text, ')');
  unsigned long ut = 0, st = 0;
  /* fields after the name: state(3) ... utime(14) stime(15) */
  if (s) sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void start_redis(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &al)) exit(1);
  close(fd);
  port = ntohs(a.sin_port);
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  char *argv[] = {"redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", "/tmp", "--loglevel", "warning", NULL};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  if (posix_spawnp(&redis_pid, "redis-server", &fa, NULL, argv, environ) != 0) {
    fprintf(stderr, "cannot start redis-server\n");
    exit(1);
  }
  for (int i = 0; i < 250; i++) {
    redisContext *c = redisConnect("127.0.0.1", port);
    int ok = c && !c->err;
    if (c) redisFree(c);
    if (ok) return;
    usleep(20000);
  }
  fprintf(stderr, "redis-server did not start\n");
  exit(1);
}

/* ---- the bus ------------------------------------------------------------------ */

static void on_deliver(void *ud, const bus_msg *m) {
  if (ud == &bb && m->origin) got++;
}
static void on_link(void *ud, int up) {
  if (ud == &ba) a_up = up;
  else b_up = up;
}

static void bus_pump(uv_check_t *h) {
  (void)h;
  for (int i = 0; i < BATCH && sent < n_msgs && sent - got < WINDOW; i++) {
    net_chunk *f = ws_frame_new(WS_OP_TEXT, payload, payload_len);
    bus_msg m = {.room = "bench-room", .epoch = "e1", .seq = (uint64_t)sent + 1, .frame = f};
    bus_publish(ba, &m);
    net_chunk_unref(f);
    sent++;
  }
}

/* ---- plain hiredis ------------------------------------------------------------- */

static redisAsyncContext *rpub, *rsub;
static int raw_subscribed;

static void raw_on_msg(redisAsyncContext *ac, void *reply, void *priv) {
  redisReply *r = reply;
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3) return;
  if (!strcmp(r->element[0]->str, "subscribe")) raw_subscribed = 1;
  else if (!strcmp(r->element[0]->str, "message")) got++;
}

static void raw_pump(uv_check_t *h) {
  (void)h;
  for (int i = 0; i < BATCH && sent < n_msgs && sent - got < WINDOW; i++) {
    redisAsyncCommand(rpub, NULL, NULL, "PUBLISH raw-room %b", payload, payload_len);
    sent++;
  }
}

static void on_wake(uv_timer_t *t) { (void)t; }

typedef struct result {
  double secs, cpu, rcpu;
} result;

static result run(void (*pump)(uv_check_t *)) {
  uv_check_t chk;
  uv_timer_t wake;
  uv_check_init(&loop, &chk);
  uv_timer_init(&loop, &wake);
  uv_timer_start(&wake, on_wake, 50, 50);
  sent = got = 0;
  double t0 = now_s(), c0 = cpu_self(), r0 = cpu_of(redis_pid);
  uv_check_start(&chk, pump);
  pump(&chk);
  while (got < n_msgs) uv_run(&loop, UV_RUN_ONCE);
  result res = {now_s() - t0, cpu_self() - c0, cpu_of(redis_pid) - r0};
  uv_close((uv_handle_t *)&chk, NULL);
  uv_close((uv_handle_t *)&wake, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  return res;
}

static int by_secs(const void *x, const void *y) {
  double a = ((const result *)x)->secs, b = ((const result *)y)->secs;
  return (a > b) - (a < b);
}

static void report(const char *name, result r) {
  printf("%-14s %8.0f msg/s  %6.2f us CPU/msg (this process)  %6.2f us CPU/msg (redis-server)  %.3f s\n", name,
         n_msgs / r.secs, r.cpu * 1e6 / n_msgs, r.rcpu * 1e6 / n_msgs, r.secs);
}

int main(int argc, char **argv) {
  n_msgs = argc > 1 ? atol(argv[1]) : 100000;
  payload_len = argc > 2 ? (size_t)atol(argv[2]) : 120;
  payload = malloc(payload_len + 1);
  snprintf(payload, payload_len + 1, "{\"type\":\"op\",\"room\":\"bench-room\",\"seq\":1,\"item\":\"i1\",\"data\":\"");
  for (size_t i = strlen(payload); i < payload_len; i++) payload[i] = 'x';
  if (payload_len >= 2) memcpy(payload + payload_len - 2, "\"}", 2);
  signal(SIGPIPE, SIG_IGN);
  start_redis();
  uv_loop_init(&loop);
  char url[64], err[256];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);

  /* Both set up on one loop, then ROUNDS runs of each, alternating; the
   * medians are reported. */
  rpub = redisAsyncConnect("127.0.0.1", port);
  rsub = redisAsyncConnect("127.0.0.1", port);
  redisLibuvAttach(rpub, &loop);
  redisLibuvAttach(rsub, &loop);
  redisAsyncCommand(rsub, raw_on_msg, NULL, "SUBSCRIBE raw-room");
  bus_events ea = {.deliver = on_deliver, .link = on_link, .ud = &ba};
  bus_events eb = {.deliver = on_deliver, .link = on_link, .ud = &bb};
  if (bus_redis_new(&loop, url, "A", &ea, &ba, err, sizeof err) ||
      bus_redis_new(&loop, url, "B", &eb, &bb, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  bus_subscribe(bb, "bench-room");
  while (!a_up || !b_up || !raw_subscribed) uv_run(&loop, UV_RUN_ONCE);
  enum { ROUNDS = 5 };
  result raws[ROUNDS], buses[ROUNDS];
  for (int i = 0; i < ROUNDS; i++) {
    raws[i] = run(raw_pump);
    buses[i] = run(bus_pump);
  }
  qsort(raws, ROUNDS, sizeof raws[0], by_secs);
  qsort(buses, ROUNDS, sizeof buses[0], by_secs);
  result raw = raws[ROUNDS / 2], rb = buses[ROUNDS / 2];
  redisAsyncFree(rpub);
  redisAsyncFree(rsub);
  bus_stats sa, sb;
  bus_get_stats(ba, &sa);
  bus_get_stats(bb, &sb);

  printf("%ld messages of %zu bytes, A -> Redis -> B, one process, one loop; median of %d runs each\n", n_msgs,
         payload_len, ROUNDS);
  report("hiredis raw", raw);
  report("wsync bus", rb);
  printf("ratio bus/raw: %.2fx the time, %.2fx the CPU of this process, %.2fx redis-server's CPU\n",
         rb.secs / raw.secs, rb.cpu / raw.cpu, raw.rcpu > 0 ? rb.rcpu / raw.rcpu : 0);
  printf("bus stats: A published %llu dropped %llu; B received %llu malformed %llu\n",
         (unsigned long long)sa.published, (unsigned long long)sa.dropped, (unsigned long long)sb.received,
         (unsigned long long)sb.malformed);
  bus_free(ba);
  bus_free(bb);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  kill(redis_pid, SIGKILL);
  waitpid(redis_pid, NULL, 0);
  free(payload);
  return 0;
}
