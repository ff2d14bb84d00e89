/* test_bus_redis.c -- src/sync/bus_redis.c against a real redis-server: each
 * test starts its own on 127.0.0.1 and a free port (no persistence, a temp
 * dir), runs two or three buses with different node ids on one private uv
 * loop, and kills the server after. Without redis-server the tests fail. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../../src/sync/bus.h"
#include "../../../src/ws/ws.h"
#include "../../../src/ws/ws_conn.h"

extern char **environ;

/* ---- the throwaway Redis ------------------------------------------------------ */

static pid_t redis_pid;
static int redis_port;
static char redis_dir[64];
static char url[64];
static uv_loop_t loop;

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
  close(fd);
  return ntohs(a.sin_port);
}

static redisContext *redis_sync(void) {
  struct timeval tv = {1, 0};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
  cr_assert_not_null(c);
  return c;
}

static void redis_spawn(void) {
  char port[16];
  snprintf(port, sizeof port, "%d", redis_port);
  char *argv[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", redis_dir, "--daemonize", "no", "--loglevel", "warning", NULL};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  int rc = posix_spawnp(&redis_pid, "redis-server", &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  cr_assert_eq(rc, 0, "cannot start redis-server (%s): it is needed by these tests", strerror(rc));
  /* Ready when it answers PING: at most 5 s. */
  for (int i = 0; i < 250; i++) {
    redisContext *c = redis_sync();
    if (!c->err) {
      redisReply *r = redisCommand(c, "PING");
      int ok = r && r->type == REDIS_REPLY_STATUS;
      if (r) freeReplyObject(r);
      redisFree(c);
      if (ok) return;
    } else {
      redisFree(c);
    }
    int st;
    cr_assert_eq(waitpid(redis_pid, &st, WNOHANG), 0, "redis-server exited at start");
    usleep(20000);
  }
  cr_assert_fail("redis-server on port %d did not answer PING", redis_port);
}

static void redis_kill(int sig) {
  if (redis_pid <= 0) return;
  kill(redis_pid, sig);
  if (sig == SIGKILL || sig == SIGTERM) {
    int st;
    waitpid(redis_pid, &st, 0);
    redis_pid = 0;
  }
}

static void setup(void) {
  /* A hung test ends its worker with SIGALRM, which Criterion reports as a
   * crash. Not the suite's .timeout: the runner's timeout watcher (in
   * Criterion 2.4's sandbox library) now and then leaks its 48-byte
   * request, and the ASan run's leak check fails on it. */
  alarm(40);
  signal(SIGPIPE, SIG_IGN);
  snprintf(redis_dir, sizeof redis_dir, "/tmp/wsync-busredis-XXXXXX");
  cr_assert_not_null(mkdtemp(redis_dir));
  redis_port = free_port();
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", redis_port);
  redis_spawn();
  cr_assert_eq(uv_loop_init(&loop), 0);
}

static bus *open_buses[8]; /* freed by teardown when a test failed first */
static void forget(bus *b);

static void teardown(void) {
  for (size_t i = 0; i < sizeof open_buses / sizeof open_buses[0]; i++) {
    bus_free(open_buses[i]);
    open_buses[i] = NULL;
  }
  /* The closes bus_free started; bounded, so that a leak fails the test
   * (uv_loop_close) instead of hanging it. */
  for (int i = 0; i < 300 && uv_loop_alive(&loop); i++) {
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(10000);
  }
  int rc = uv_loop_close(&loop);
  if (redis_pid > 0) {
    kill(redis_pid, SIGCONT);
    redis_kill(SIGKILL);
  }
  rmdir(redis_dir);
  cr_assert_eq(rc, 0, "handles left open on the loop");
}

TestSuite(busredis, .init = setup, .fini = teardown);

/* ---- a bus and what it reports --------------------------------------------------- */

typedef struct got {
  char room[64], epoch[64], except[64], only_user[64], origin[64];
  int has_epoch, has_except, has_only, has_origin;
  uint64_t seq;
  char payload[256];
  int frame_ok; /* the frame is what ws_frame_new makes of the payload */
} got;

typedef struct node {
  const char *name;
  bus *b;
  int up, ups, downs;
  int nodes_up, nodes_down;
  char last_node[64];
  int n; /* deliveries */
  got g[16];
  uint64_t *seqs; /* every delivery's seq, when set */
  int free_in_deliver; /* bus_free from inside the deliver callback */
  int directs;
  char d_from[64], d_kind[64];
  uint8_t d_body[64];
  size_t d_len;
} node;

static void cp(char *dst, size_t n, const char *s, int *has) {
  *has = s != NULL;
  snprintf(dst, n, "%s", s ? s : "");
}

static void on_deliver(void *ud, const bus_msg *m) {
  node *nd = ud;
  if (nd->seqs) nd->seqs[nd->n] = m->seq;
  if (nd->n < (int)(sizeof nd->g / sizeof nd->g[0])) {
    got *g = &nd->g[nd->n];
    int dummy;
    cp(g->room, sizeof g->room, m->room, &dummy);
    cp(g->epoch, sizeof g->epoch, m->epoch, &g->has_epoch);
    cp(g->except, sizeof g->except, m->except, &g->has_except);
    cp(g->only_user, sizeof g->only_user, m->only_user, &g->has_only);
    cp(g->origin, sizeof g->origin, m->origin, &g->has_origin);
    g->seq = m->seq;
    uint8_t l7 = m->frame->data[1] & 0x7f;
    size_t hdr = l7 < 126 ? 2 : l7 == 126 ? 4 : 10, len = m->frame->len - hdr;
    snprintf(g->payload, sizeof g->payload, "%.*s", (int)len, m->frame->data + hdr);
    net_chunk *want = ws_frame_new(WS_OP_TEXT, m->frame->data + hdr, len);
    g->frame_ok = want->len == m->frame->len && memcmp(want->data, m->frame->data, want->len) == 0;
    net_chunk_unref(want);
  }
  nd->n++;
  if (nd->free_in_deliver && m->origin) {
    forget(nd->b);
    bus_free(nd->b);
    nd->b = NULL;
  }
}

static void on_direct(void *ud, const char *from, const char *kind, const uint8_t *body, size_t len) {
  node *nd = ud;
  nd->directs++;
  snprintf(nd->d_from, sizeof nd->d_from, "%s", from);
  snprintf(nd->d_kind, sizeof nd->d_kind, "%s", kind);
  nd->d_len = len < sizeof nd->d_body ? len : sizeof nd->d_body;
  memcpy(nd->d_body, body, nd->d_len);
}

static void on_node(void *ud, const char *name, int up) {
  node *nd = ud;
  if (up) nd->nodes_up++;
  else nd->nodes_down++;
  snprintf(nd->last_node, sizeof nd->last_node, "%s", name);
}

static void on_link(void *ud, int up) {
  node *nd = ud;
  cr_assert_neq(nd->up, up, "link %d reported twice in a row", up);
  nd->up = up;
  if (up) nd->ups++;
  else nd->downs++;
}

static void bus_open(node *nd, const char *name, const char *u) {
  memset(nd, 0, sizeof *nd);
  nd->name = name;
  bus_events ev = {.deliver = on_deliver, .direct = on_direct, .node = on_node, .link = on_link, .ud = nd};
  char err[256] = "";
  int rc = bus_redis_new(&loop, u ? u : url, name, &ev, &nd->b, err, sizeof err);
  cr_assert_eq(rc, 0, "bus_redis_new: %s", err);
  cr_assert_str_eq(bus_name(nd->b), "redis");
  for (size_t i = 0;; i++)
    if (!open_buses[i]) {
      open_buses[i] = nd->b;
      break;
    }
}

static void forget(bus *b) {
  for (size_t i = 0; i < sizeof open_buses / sizeof open_buses[0]; i++)
    if (open_buses[i] == b) open_buses[i] = NULL;
}

static void bus_close(node *nd) {
  forget(nd->b);
  bus_free(nd->b);
  nd->b = NULL;
}

/* Runs the loop until cond(a) holds or ms pass: returns whether it held. A
 * timer wakes the loop so that a quiet loop cannot block the test. */
static void on_wake(uv_timer_t *t) { (void)t; }

static int run_until(int (*cond)(void *), void *a, unsigned ms) {
  uv_timer_t wake;
  uv_timer_init(&loop, &wake);
  uv_timer_start(&wake, on_wake, 10, 10);
  uv_update_time(&loop);
  uint64_t end = uv_now(&loop) + ms;
  int ok;
  while (!(ok = cond(a)) && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&wake, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  return ok;
}

static int all_up(void *a) {
  node **ns = a;
  for (; *ns; ns++)
    if (!(*ns)->up) return 0;
  return 1;
}

static void wait_up(node *x, node *y, node *z) {
  node *ns[] = {x, y, z, NULL};
  cr_assert(run_until(all_up, ns, 5000), "the link did not come up");
}

typedef struct {
  node *nd;
  int n;
} at_least;
static int has_n(void *a) {
  at_least *w = a;
  return w->nd->n >= w->n;
}
static void wait_n(node *nd, int n, unsigned ms) {
  at_least w = {nd, n};
  cr_assert(run_until(has_n, &w, ms), "%s got %d deliveries, not %d", nd->name, nd->n, n);
}

static net_chunk *text_frame(const char *s) { return ws_frame_new(WS_OP_TEXT, s, strlen(s)); }

static void publish(node *nd, const char *room, const char *epoch, uint64_t seq, const char *json,
                    const char *except, const char *only_user) {
  net_chunk *f = text_frame(json);
  bus_msg m = {.room = room, .epoch = epoch, .seq = seq, .frame = f, .except = except, .only_user = only_user};
  bus_publish(nd->b, &m);
  net_chunk_unref(f);
}

static bus_stats stats(node *nd) {
  bus_stats s;
  bus_get_stats(nd->b, &s);
  return s;
}

/* Subscribers of a channel as Redis counts them. */
static long long numsub(const char *chan) {
  redisContext *c = redis_sync();
  redisReply *r = redisCommand(c, "PUBSUB NUMSUB %s", chan);
  cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
  long long n = r->element[1]->integer;
  freeReplyObject(r);
  redisFree(c);
  return n;
}

/* PUBLISH commands Redis has run so far (INFO commandstats). */
static uint64_t numsub_sent(void) {
  redisContext *c = redis_sync();
  redisReply *r = redisCommand(c, "INFO commandstats");
  cr_assert(r && r->type == REDIS_REPLY_STRING);
  const char *at = strstr(r->str, "cmdstat_publish:calls=");
  uint64_t n = at ? strtoull(at + strlen("cmdstat_publish:calls="), NULL, 10) : 0;
  freeReplyObject(r);
  redisFree(c);
  return n;
}

typedef struct {
  const char *chan;
  long long want;
} numsub_is;
static int numsub_reached(void *a) {
  numsub_is *w = a;
  return numsub(w->chan) == w->want;
}

/* ---- the tests --------------------------------------------------------------------- */

Test(busredis, entry_reaches_other_node_once_with_its_fields) {
  node a, b;
  /* Different DBs: pub/sub is global to the server all the same. */
  char url5[80];
  snprintf(url5, sizeof url5, "%s/5", url);
  bus_open(&a, "A", NULL);
  bus_open(&b, "B", url5);
  bus_subscribe(a.b, "room1");
  bus_subscribe(b.b, "room1");
  wait_up(&a, &b, NULL);
  cr_assert_eq(a.ups, 1);

  publish(&a, "room1", "ep1", 7, "{\"type\":\"op\",\"seq\":7}", "u1:d1", "u1");
  cr_assert_eq(a.n, 1, "the publisher's node is delivered before bus_publish returns");
  cr_assert_eq(a.g[0].has_origin, 0, "local delivery has no origin");
  wait_n(&b, 1, 3000);
  got *g = &b.g[0];
  cr_assert_str_eq(g->room, "room1");
  cr_assert_str_eq(g->epoch, "ep1");
  cr_assert_eq(g->seq, 7);
  cr_assert_str_eq(g->except, "u1:d1");
  cr_assert_str_eq(g->only_user, "u1");
  cr_assert_str_eq(g->origin, "A");
  cr_assert_str_eq(g->payload, "{\"type\":\"op\",\"seq\":7}");
  cr_assert(g->frame_ok);

  /* Ephemeral, no targeting: NULLs stay NULL. */
  publish(&a, "room1", NULL, 0, "{\"type\":\"presence\"}", NULL, NULL);
  wait_n(&b, 2, 3000);
  g = &b.g[1];
  cr_assert(!g->has_epoch && !g->has_except && !g->has_only && g->seq == 0);
  cr_assert_str_eq(g->payload, "{\"type\":\"presence\"}");

  /* B answers; when A has it, A's own messages (published before) have come
   * back to A from Redis too, and were ignored. */
  publish(&b, "room1", NULL, 0, "{\"from\":\"B\"}", NULL, NULL);
  cr_assert_eq(b.n, 3);
  wait_n(&a, 3, 3000);
  cr_assert_str_eq(a.g[2].origin, "B");
  run_until(has_n, &(at_least){&a, 99}, 200);
  cr_assert_eq(a.n, 3, "A delivered its own message twice");
  cr_assert_eq(b.n, 3);
  cr_assert_eq(stats(&a).received, 1);
  cr_assert_eq(stats(&b).received, 2);
  cr_assert_eq(stats(&a).published, 2);
  cr_assert_eq(stats(&a).dropped, 0);
  cr_assert_eq(stats(&a).up, 1);
  bus_close(&a);
  bus_close(&b);
}

Test(busredis, keeps_the_order_of_10k_entries) {
  node a, b;
  bus_open(&a, "A", NULL);
  bus_open(&b, "B", NULL);
  enum { N = 10000 };
  b.seqs = calloc(N + 16, sizeof *b.seqs);
  bus_subscribe(b.b, "r");
  wait_up(&a, &b, NULL);
  char json[96];
  for (uint64_t i = 1; i <= N; i++) {
    snprintf(json, sizeof json, "{\"seq\":%llu,\"pad\":\"%.*s\"}", (unsigned long long)i, (int)(i % 40),
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    publish(&a, "r", "e", i, json, NULL, NULL);
    if (i % 1000 == 0) uv_run(&loop, UV_RUN_NOWAIT); /* as the engine would between batches */
  }
  wait_n(&b, N, 20000);
  for (int i = 0; i < N; i++) cr_assert_eq(b.seqs[i], (uint64_t)i + 1, "delivery %d has seq %llu", i,
                                           (unsigned long long)b.seqs[i]);
  cr_assert_eq(stats(&b).received, N);
  cr_assert_eq(stats(&a).dropped, 0);
  cr_assert_eq(a.n, N, "A has no members' subscription but delivers locally all the same");
  free(b.seqs);
  b.seqs = NULL;
  bus_close(&a);
  bus_close(&b);
}

/* A hold (a commit's entries): this node delivers at once, the others
 * get each room's messages together when it ends, in order; a hold inside
 * a hold does not end it. */
Test(busredis, a_hold_gathers_each_rooms_messages_until_it_ends) {
  node a, b;
  bus_open(&a, "A", NULL);
  bus_open(&b, "B", NULL);
  enum { N = 600, ROOMS = 3 };
  b.seqs = calloc(N + 16, sizeof *b.seqs);
  static const char *rooms[ROOMS] = {"g0", "g1", "g2"};
  for (int i = 0; i < ROOMS; i++) bus_subscribe(b.b, rooms[i]);
  wait_up(&a, &b, NULL);
  uint64_t sent0 = numsub_sent();
  bus_hold(a.b);
  bus_hold(a.b);
  char json[64];
  for (int i = 0; i < N; i++) { /* seq: room * 100000 + its own count */
    int r = (i * 7) % ROOMS;
    uint64_t seq = (uint64_t)r * 100000 + (uint64_t)i + 1;
    snprintf(json, sizeof json, "{\"seq\":%llu}", (unsigned long long)seq);
    publish(&a, rooms[r], i % 50 == 49 ? NULL : "e", i % 50 == 49 ? 0 : seq, json, NULL, NULL);
  }
  cr_assert_eq(a.n, N, "this node's deliveries do not wait for the hold");
  bus_release(a.b);
  run_until(has_n, &(at_least){&b, 1}, 300);
  cr_assert_eq(b.n, 0, "nothing went before the outer hold ended");
  bus_release(a.b);
  wait_n(&b, N, 5000);
  uint64_t last[ROOMS] = {0};
  int per[ROOMS] = {0};
  for (int i = 0; i < N; i++) {
    if (!b.seqs[i]) continue; /* the ephemeral ones */
    int r = (int)(b.seqs[i] / 100000);
    cr_assert(r < ROOMS && b.seqs[i] > last[r], "delivery %d: seq %llu after %llu", i,
              (unsigned long long)b.seqs[i], (unsigned long long)last[r]);
    last[r] = b.seqs[i];
    per[r]++;
  }
  cr_assert_eq(per[0] + per[1] + per[2], N - N / 50);
  cr_assert_eq(stats(&b).received, N);
  cr_assert_eq(stats(&a).dropped, 0);
  uint64_t sent = numsub_sent() - sent0;
  /* one per room (and the nodes' heartbeats meanwhile), not one per message */
  cr_assert(sent >= ROOMS && sent <= 20, "%llu PUBLISH commands for %d rooms' %d messages",
            (unsigned long long)sent, ROOMS, N);
  free(b.seqs);
  b.seqs = NULL;
  bus_close(&a);
  bus_close(&b);
}

Test(busredis, subscriptions_are_counted_and_unsubscribed_rooms_not_delivered) {
  node a, b;
  bus_open(&a, "A", NULL);
  bus_open(&b, "B", NULL);
  bus_subscribe(b.b, "x");
  bus_subscribe(b.b, "x");
  bus_subscribe(b.b, "y");
  wait_up(&a, &b, NULL);
  cr_assert_eq(numsub("wsync:r:x"), 1, "one SUBSCRIBE for two bus_subscribe");

  bus_unsubscribe(b.b, "x"); /* one of two: still there */
  publish(&a, "x", NULL, 0, "{\"n\":1}", NULL, NULL);
  wait_n(&b, 1, 3000);
  cr_assert_str_eq(b.g[0].room, "x");
  cr_assert_eq(numsub("wsync:r:x"), 1);

  bus_unsubscribe(b.b, "x"); /* the last one: UNSUBSCRIBE */
  numsub_is w = {"wsync:r:x", 0};
  cr_assert(run_until(numsub_reached, &w, 3000), "B still subscribed to x at Redis");
  publish(&a, "x", NULL, 0, "{\"n\":2}", NULL, NULL);
  publish(&a, "y", NULL, 0, "{\"n\":3}", NULL, NULL);
  wait_n(&b, 2, 3000);
  cr_assert_str_eq(b.g[1].room, "y", "x was delivered after its last unsubscribe");
  cr_assert_eq(b.n, 2);

  /* Unsubscribed right after a publish is sent: whatever Redis still routes
   * is dropped on arrival. */
  publish(&a, "y", NULL, 0, "{\"n\":4}", NULL, NULL);
  bus_unsubscribe(b.b, "y");
  bus_subscribe(b.b, "z");
  publish(&a, "z", NULL, 0, "{\"n\":5}", NULL, NULL);
  /* z's message may be published before B's SUBSCRIBE z reaches Redis:
   * send z until one arrives. */
  for (int i = 0; i < 100 && b.n < 3; i++) {
    run_until(has_n, &(at_least){&b, 3}, 30);
    if (b.n < 3) publish(&a, "z", NULL, 0, "{\"n\":5}", NULL, NULL);
  }
  wait_n(&b, 3, 1000);
  for (int i = 2; i < b.n && i < 16; i++) cr_assert_str_eq(b.g[i].room, "z");
  bus_unsubscribe(b.b, "unknown"); /* not subscribed: nothing happens */
  bus_close(&a);
  bus_close(&b);
}

typedef struct {
  node *nd;
  int n;
} directs_n;
static int has_directs(void *a) {
  directs_n *w = a;
  return w->nd->directs >= w->n;
}

Test(busredis, send_node_reaches_only_that_node) {
  node a, b, c;
  bus_open(&a, "A", NULL);
  cr_assert_eq(bus_send_node(a.b, "B", "k", "x", 1), WSY_AGAIN, "the link is not up yet");
  bus_open(&b, "B", NULL);
  bus_open(&c, "C", NULL);
  wait_up(&a, &b, &c);
  const uint8_t body[] = {'h', 0, 'i', 0xff};
  cr_assert_eq(bus_send_node(a.b, "B", "poll", body, sizeof body), 0);
  cr_assert(run_until(has_directs, &(directs_n){&b, 1}, 3000));
  cr_assert_str_eq(b.d_from, "A");
  cr_assert_str_eq(b.d_kind, "poll");
  cr_assert_eq(b.d_len, sizeof body);
  cr_assert_eq(memcmp(b.d_body, body, sizeof body), 0);
  cr_assert_eq(bus_send_node(a.b, "C", "send", NULL, 0), 0);
  cr_assert(run_until(has_directs, &(directs_n){&c, 1}, 3000));
  cr_assert_eq(c.d_len, 0);
  cr_assert_str_eq(c.d_kind, "send");
  cr_assert_eq(b.directs, 1, "B got C's message");
  cr_assert_eq(c.directs, 1);
  cr_assert_eq(a.directs, 0);
  cr_assert_eq(bus_send_node(a.b, "", "k", NULL, 0), WSY_INVAL);
  bus_close(&a);
  bus_close(&b);
  bus_close(&c);
}

static int both_nodes_up(void *a) {
  node **ns = a;
  return ns[0]->nodes_up >= 1 && ns[1]->nodes_up >= 1;
}
static int node_down(void *a) { return ((node *)a)->nodes_down >= 1; }

Test(busredis, heartbeat_reports_nodes_up_then_gone) {
  node a, b;
  bus_open(&a, "A", NULL);
  bus_open(&b, "B", NULL);
  node *ns[] = {&a, &b};
  cr_assert(run_until(both_nodes_up, ns, 5000), "the nodes did not hear each other");
  cr_assert_str_eq(a.last_node, "B");
  cr_assert_str_eq(b.last_node, "A");
  cr_assert_eq(stats(&a).nodes, 1);
  /* Several heartbeats later: still one node, reported once. */
  run_until(node_down, &a, BUS_REDIS_HEARTBEAT_MS * 2 + 200);
  cr_assert_eq(a.nodes_up, 1);
  cr_assert_eq(a.nodes_down, 0);
  bus_close(&b);
  cr_assert(run_until(node_down, &a, BUS_REDIS_NODE_TTL_MS + 2000), "B not reported gone within the TTL");
  cr_assert_str_eq(a.last_node, "B");
  cr_assert_eq(stats(&a).nodes, 0);
  cr_assert_eq(a.nodes_up, 1);
  bus_close(&a);
}

typedef struct {
  node *x, *y;
  int up;
} link_want;
static int links(void *a) {
  link_want *w = a;
  return w->x->up == w->up && (!w->y || w->y->up == w->up);
}

Test(busredis, redis_killed_and_restarted) {
  node a, b;
  bus_open(&a, "A", NULL);
  bus_open(&b, "B", NULL);
  bus_subscribe(b.b, "r");
  wait_up(&a, &b, NULL);
  redis_kill(SIGKILL);
  cr_assert(run_until(links, &(link_want){&a, &b, 0}, 5000), "the link did not go down");
  for (int i = 0; i < 5; i++) publish(&a, "r", "e", (uint64_t)i + 1, "{\"lost\":1}", NULL, NULL);
  cr_assert_eq(a.n, 5, "delivered locally while down");
  cr_assert_eq(stats(&a).dropped, 5);
  cr_assert_eq(stats(&a).up, 0);
  cr_assert_eq(bus_send_node(a.b, "B", "k", NULL, 0), WSY_AGAIN);
  /* A few failed attempts (backoff) before Redis is back. */
  run_until(node_down, &(node){0}, 400);
  cr_assert_eq(a.downs, 1, "link down reported once");
  redis_spawn();
  cr_assert(run_until(links, &(link_want){&a, &b, 1}, 8000), "the link did not come back");
  cr_assert_eq(a.ups, 2);
  cr_assert_eq(stats(&a).reconnects, 1);
  cr_assert_eq(b.n, 0, "B got a publish made while the link was down");
  publish(&a, "r", "e", 6, "{\"back\":1}", NULL, NULL);
  wait_n(&b, 1, 3000);
  cr_assert_eq(b.g[0].seq, 6);
  cr_assert_str_eq(b.g[0].payload, "{\"back\":1}");
  bus_close(&a);
  bus_close(&b);
}

Test(busredis, redis_stopped_3s_trips_the_watchdog) {
  node a, b;
  bus_open(&a, "A", NULL);
  bus_open(&b, "B", NULL);
  bus_subscribe(b.b, "r");
  wait_up(&a, &b, NULL);
  redis_kill(SIGSTOP);
  uv_update_time(&loop);
  uint64_t stopped = uv_now(&loop);
  cr_assert(run_until(links, &(link_want){&a, &b, 0}, BUS_REDIS_PING_TIMEOUT_MS + BUS_REDIS_PING_MS + 2000),
            "the watchdog did not take the link down");
  publish(&a, "r", "e", 1, "{\"lost\":1}", NULL, NULL);
  cr_assert_eq(stats(&a).dropped, 1);
  uv_update_time(&loop);
  uint64_t elapsed = uv_now(&loop) - stopped;
  if (elapsed < 3000) run_until(node_down, &(node){0}, (unsigned)(3000 - elapsed));
  redis_kill(SIGCONT);
  cr_assert(run_until(links, &(link_want){&a, &b, 1}, 8000), "the link did not come back after SIGCONT");
  cr_assert_eq(a.downs, 1);
  cr_assert_eq(a.ups, 2);
  publish(&a, "r", "e", 2, "{\"back\":1}", NULL, NULL);
  wait_n(&b, 1, 3000);
  cr_assert_eq(b.g[0].seq, 2, "the message published while down arrived");
  bus_close(&a);
  bus_close(&b);
}

/* Hand-made messages, in the documented wire format. */
static size_t put_s(uint8_t *p, const char *s) {
  size_t n = strlen(s);
  p[0] = (uint8_t)(n >> 8);
  p[1] = (uint8_t)n;
  memcpy(p + 2, s, n);
  return n + 2;
}

static size_t room_msg(uint8_t *p, const char *origin, const char *room, const char *epoch, uint64_t seq,
                       const char *except, const char *only, const char *payload) {
  size_t n = 0;
  p[n++] = 1;
  n += put_s(p + n, origin);
  n += put_s(p + n, room);
  n += put_s(p + n, epoch);
  for (int i = 7; i >= 0; i--) p[n++] = (uint8_t)(seq >> (8 * i));
  n += put_s(p + n, except);
  n += put_s(p + n, only);
  memcpy(p + n, payload, strlen(payload));
  return n + strlen(payload);
}

static void raw_publish(redisContext *c, const char *chan, const void *msg, size_t len) {
  redisReply *r = redisCommand(c, "PUBLISH %s %b", chan, msg, len);
  cr_assert(r && r->type == REDIS_REPLY_INTEGER);
  freeReplyObject(r);
}

Test(busredis, malformed_messages_are_counted_and_dropped) {
  node b;
  bus_open(&b, "B", NULL);
  bus_subscribe(b.b, "m");
  wait_up(&b, NULL, NULL);
  redisContext *c = redis_sync();
  uint8_t m[512];
  size_t n;
  int bad = 0;
  raw_publish(c, "wsync:r:m", "", 0), bad++;
  raw_publish(c, "wsync:r:m", "garbage", 7), bad++; /* version 'g' */
  n = room_msg(m, "Z", "m", "e", 1, "", "", "{}");
  m[0] = 3;
  raw_publish(c, "wsync:r:m", m, n), bad++; /* a version from the future */
  n = room_msg(m, "Z", "m", "e", 1, "", "", "{}");
  m[0] = 2;
  raw_publish(c, "wsync:r:m", m, n), bad++; /* gathered (version 2), but its parts' lengths are not there */
  n = room_msg(m, "Z", "m", "e", 1, "", "", "{}");
  raw_publish(c, "wsync:r:m", m, 12), bad++; /* cut inside the seq */
  n = room_msg(m, "Z", "other", "e", 1, "", "", "{}");
  raw_publish(c, "wsync:r:m", m, n), bad++; /* not the channel's room */
  n = room_msg(m, "Z", "m", "e", 1, "", "", "{}");
  m[4] = 0xff; /* room length far past the end */
  raw_publish(c, "wsync:r:m", m, n), bad++;
  n = room_msg(m, "Z", "m", "e\x01", 1, "", "", "{}");
  m[n - 2 - 4 - 8 - 1] = 0; /* a NUL inside the epoch */
  raw_publish(c, "wsync:r:m", m, n), bad++;
  n = room_msg(m, "", "m", "e", 1, "", "", "{}");
  raw_publish(c, "wsync:r:m", m, n), bad++; /* no origin */
  n = room_msg(m, "Z", "m", "e", 1, "", "", "{\"x\":\"\xc3\x28\"}");
  raw_publish(c, "wsync:r:m", m, n), bad++; /* payload not UTF-8 */
  /* Every cut inside the header (before the payload) of a valid one. */
  n = room_msg(m, "Zz", "m", "ep", 9, "u:d", "u", "");
  for (size_t cut = 1; cut < n; cut++) raw_publish(c, "wsync:r:m", m, cut), bad++;
  raw_publish(c, "wsync:hb", "", 0), bad++;
  raw_publish(c, "wsync:n:B", "\x01\x00", 2), bad++;
  /* And a good one, made by hand from the documented format. */
  n = room_msg(m, "Z", "m", "ep", 0x0102030405060708ull, "u:d", "", "{\"ok\":true}");
  raw_publish(c, "wsync:r:m", m, n);
  /* Gathered by hand: two good parts, then one cut short (counted, the
   * two before it delivered in order), then one whose part is no room
   * message of version 1. */
  uint8_t gm[1024];
  size_t gl = 0;
  gm[gl++] = 2;
  for (int i = 0; i < 3; i++) {
    size_t pl = room_msg(gm + gl + 4, "Z", "m", "ep", 100 + (uint64_t)i, "", "", i == 1 ? "{\"g\":2}" : "{\"g\":1}");
    if (i == 2) pl += 5; /* says 5 more bytes than there are */
    for (int k = 0; k < 4; k++) gm[gl + (size_t)k] = (uint8_t)(pl >> (24 - 8 * k));
    gl += 4 + (i == 2 ? pl - 5 : pl);
  }
  raw_publish(c, "wsync:r:m", gm, gl), bad++;
  gl = 0;
  gm[gl++] = 2;
  gm[gl++] = 0, gm[gl++] = 0, gm[gl++] = 0, gm[gl++] = 3;
  memcpy(gm + gl, "abc", 3), gl += 3;
  raw_publish(c, "wsync:r:m", gm, gl), bad++;
  redisFree(c);
  wait_n(&b, 3, 3000);
  cr_assert_eq(b.g[1].seq, 100);
  cr_assert_str_eq(b.g[1].payload, "{\"g\":1}");
  cr_assert_eq(b.g[2].seq, 101);
  cr_assert_str_eq(b.g[2].payload, "{\"g\":2}");
  cr_assert(b.g[2].frame_ok);
  run_until(has_n, &(at_least){&b, 99}, 200);
  cr_assert_str_eq(b.g[0].origin, "Z");
  cr_assert_str_eq(b.g[0].epoch, "ep");
  cr_assert_eq(b.g[0].seq, 0x0102030405060708ull);
  cr_assert_str_eq(b.g[0].except, "u:d");
  cr_assert_eq(b.g[0].has_only, 0);
  cr_assert_str_eq(b.g[0].payload, "{\"ok\":true}");
  cr_assert(b.g[0].frame_ok);
  cr_assert_eq(b.n, 3);
  cr_assert_eq(stats(&b).malformed, (uint64_t)bad);
  cr_assert_eq(stats(&b).received, 3);
  cr_assert_eq(b.directs, 0);
  cr_assert_eq(b.nodes_up, 0);
  cr_assert_eq(b.up, 1, "the link survived");
  bus_close(&b);
}

Test(busredis, bad_urls_and_node_ids_are_refused) {
  static const char *bad[] = {
      NULL, "", "redis://", "redis://host", "redis://:6379", "redis://host:", "redis://host:0",
      "redis://host:65536", "redis://host:99999999999", "redis://host:63a9", "http://host:6379",
      "redis://host:6379/x", "redis://host:6379/-1", "redis://host:6379/1/2", "redis://u:p@host:6379",
      "redis://[::1]6379", "redis://[::1", "rediss://host:6379",
  };
  bus_events ev = {.deliver = on_deliver};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    bus *b = (bus *)1;
    char err[256] = "";
    cr_assert_eq(bus_redis_new(&loop, bad[i], "A", &ev, &b, err, sizeof err), WSY_INVAL, "%s accepted",
                 bad[i] ? bad[i] : "NULL");
    cr_assert_null(b);
    cr_assert_gt(strlen(err), 10, "no sentence for %s", bad[i] ? bad[i] : "NULL");
  }
  static const char *good[] = {"redis://127.0.0.1:1", "redis://localhost:1/0", "redis://[::1]:1/15",
                               "redis://127.0.0.1:1/"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    bus *b = NULL;
    char err[256] = "";
    cr_assert_eq(bus_redis_new(&loop, good[i], "A", &ev, &b, err, sizeof err), 0, "%s: %s", good[i], err);
    bus_stats s;
    bus_get_stats(b, &s);
    cr_assert_eq(s.up, 0);
    bus_free(b);
  }
  static const char *bad_ids[] = {NULL, "", "a b", "n/1"};
  for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
    bus *b = NULL;
    char err[256] = "";
    cr_assert_eq(bus_redis_new(&loop, url, bad_ids[i], &ev, &b, err, sizeof err), WSY_INVAL);
    cr_assert_gt(strlen(err), 10);
  }
}

static int nothing(void *a) {
  (void)a;
  return 0;
}

Test(busredis, a_db_redis_refuses_keeps_the_link_down) {
  node a;
  char u[80];
  snprintf(u, sizeof u, "%s/99", url); /* 16 DBs by default */
  bus_open(&a, "A", u);
  run_until(nothing, NULL, 1500); /* several attempts */
  cr_assert_eq(a.ups, 0, "up on a DB Redis refused");
  cr_assert_eq(stats(&a).up, 0);
  publish(&a, "r", NULL, 0, "{}", NULL, NULL);
  cr_assert_eq(a.n, 1);
  cr_assert_eq(stats(&a).dropped, 1);
  bus_close(&a);
}

Test(busredis, free_while_connecting_and_from_a_callback) {
  node a, b;
  bus_open(&a, "A", NULL);
  bus_close(&a); /* before the connection is even made */
  bus_open(&a, "A", NULL);
  bus_open(&b, "B", NULL);
  bus_subscribe(b.b, "r");
  wait_up(&a, &b, NULL);
  publish(&a, "r", NULL, 0, "{}", NULL, NULL);
  wait_n(&b, 1, 3000);
  /* B frees its bus inside the delivery of the next of two messages that
   * arrive together: the second must not reach it. */
  b.free_in_deliver = 1;
  publish(&a, "r", NULL, 0, "{\"n\":1}", NULL, NULL);
  publish(&a, "r", NULL, 0, "{\"n\":2}", NULL, NULL);
  wait_n(&b, 2, 3000);
  cr_assert_null(b.b);
  int n = b.n, downs = b.downs;
  publish(&a, "r", NULL, 0, "{}", NULL, NULL);
  run_until(nothing, NULL, 300);
  cr_assert_eq(b.n, n, "B's deliver called after bus_free");
  cr_assert_eq(b.n, 2);
  cr_assert_eq(b.downs, downs);
  bus_close(&a);
}
