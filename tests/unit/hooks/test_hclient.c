/* test_hclient.c -- src/hooks/hclient.c against a real Node HTTP server on
 * loopback (http-peer.mjs beside this file), driven by a private uv loop. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../../src/hooks/hclient.h"

extern char **environ;

static pid_t peer_pid;
static int peer_stdin = -1;
static int peer_port;
static uv_loop_t loop;
static hclient *cl;

/* The peer script sits beside this file; __FILE__ is relative to the repo
 * root, where the unit tests run. */
static void peer_start(void) {
  char script[512];
  const char *slash = strrchr(__FILE__, '/');
  snprintf(script, sizeof script, "%.*s/http-peer.mjs", (int)(slash - __FILE__), __FILE__);
  cr_assert_eq(access(script, R_OK), 0, "peer script %s not found (run from the repo root)",
               script);
  int in[2], out[2];
  cr_assert_eq(pipe(in), 0);
  cr_assert_eq(pipe(out), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_addclose(&fa, in[1]);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  char *argv[] = {"node", script, NULL};
  cr_assert_eq(posix_spawnp(&peer_pid, "node", &fa, NULL, argv, environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  close(out[1]);
  peer_stdin = in[1];
  FILE *f = fdopen(out[0], "r");
  char line[32] = "";
  cr_assert(fgets(line, sizeof line, f) != NULL, "peer printed no port");
  fclose(f);
  peer_port = atoi(line);
  cr_assert_gt(peer_port, 0);
}

static void setup(void) {
  /* A hung test ends its worker with SIGALRM, which Criterion reports as a
   * crash. Not the suite's .timeout: the runner's timeout watcher (in
   * Criterion 2.4's sandbox library) now and then leaks its 48-byte
   * request, and the ASan run's leak check fails on it. */
  alarm(20);
  signal(SIGPIPE, SIG_IGN);
  peer_start();
  cr_assert_eq(uv_loop_init(&loop), 0);
  cl = hclient_new(&loop);
}

static void teardown(void) {
  hclient_close(cl);
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_assert_eq(uv_loop_close(&loop), 0, "handles left open on the loop");
  close(peer_stdin);
  int st;
  waitpid(peer_pid, &st, 0);
}

static void url(char *out, size_t n, const char *path) {
  snprintf(out, n, "http://127.0.0.1:%d%s", peer_port, path);
}

typedef struct {
  int calls;
  int rc;
  long status;
  char body[512];
  size_t body_len;
} answer;

static void on_answer(void *ud, const hclient_resp *r) {
  answer *a = ud;
  a->calls++;
  a->rc = r->rc;
  a->status = r->status;
  a->body_len = r->body_len;
  snprintf(a->body, sizeof a->body, "%.*s", (int)r->body_len, r->body);
}

/* Runs the loop until every answer in as[0..n) came. */
static void wait_all(answer *as, int n) {
  for (;;) {
    int done = 1;
    for (int i = 0; i < n; i++) done &= as[i].calls > 0;
    if (done) return;
    uv_run(&loop, UV_RUN_ONCE);
  }
}

static json_t *body_json(const answer *a) {
  json_error_t err;
  json_t *j = json_loads(a->body, 0, &err);
  cr_assert_not_null(j, "not JSON: %s", a->body);
  return j;
}

TestSuite(hclient, .init = setup, .fini = teardown);

Test(hclient, posts_body_and_headers_and_answers_later) {
  char u[128];
  url(u, sizeof u, "/echo");
  const char *hdrs[] = {"X-Test: yes", NULL};
  answer a = {0};
  cr_assert_eq(hclient_post(cl, u, hdrs, "{\"a\":1}", 7, 5000, on_answer, &a), 0);
  cr_assert_eq(a.calls, 0, "the callback ran inside hclient_post");
  cr_assert_eq(hclient_pending(cl), 1);
  wait_all(&a, 1);
  cr_assert_eq(a.calls, 1);
  cr_assert_eq(a.rc, 0);
  cr_assert_eq(a.status, 200);
  json_t *j = body_json(&a);
  cr_assert_eq(json_integer_value(json_object_get(j, "len")), 7);
  cr_assert_str_eq(json_string_value(json_object_get(j, "method")), "POST");
  cr_assert_str_eq(json_string_value(json_object_get(j, "ctype")), "application/json");
  cr_assert_str_eq(json_string_value(json_object_get(j, "xtest")), "yes");
  json_decref(j);
  cr_assert_eq(hclient_pending(cl), 0);
}

Test(hclient, large_body_arrives_whole_without_expect_continue) {
  size_t n = 300 * 1024;
  char *big = malloc(n);
  uint32_t sum = 0;
  for (size_t i = 0; i < n; i++) {
    big[i] = (char)('a' + i % 26);
    sum = sum * 31 + (uint8_t)big[i];
  }
  char u[128];
  url(u, sizeof u, "/echo");
  const char *hdrs[] = {"Content-Type: text/plain", NULL};
  answer a = {0};
  cr_assert_eq(hclient_post(cl, u, hdrs, big, n, 5000, on_answer, &a), 0);
  free(big); /* copied by hclient_post */
  wait_all(&a, 1);
  cr_assert_eq(a.rc, 0);
  json_t *j = body_json(&a);
  cr_assert_eq(json_integer_value(json_object_get(j, "len")), (json_int_t)n);
  cr_assert_eq(json_integer_value(json_object_get(j, "sum")), (json_int_t)sum);
  cr_assert_str_eq(json_string_value(json_object_get(j, "ctype")), "text/plain");
  cr_assert(json_is_null(json_object_get(j, "expect")));
  json_decref(j);
}

Test(hclient, keeps_the_connection_alive_between_requests) {
  char u[128];
  url(u, sizeof u, "/echo");
  long ports[3];
  for (int i = 0; i < 3; i++) {
    answer a = {0};
    cr_assert_eq(hclient_post(cl, u, NULL, "x", 1, 5000, on_answer, &a), 0);
    wait_all(&a, 1);
    cr_assert_eq(a.status, 200);
    json_t *j = body_json(&a);
    ports[i] = (long)json_integer_value(json_object_get(j, "port"));
    json_decref(j);
  }
  cr_assert_eq(ports[0], ports[1], "a new connection for the second request");
  cr_assert_eq(ports[1], ports[2]);
}

Test(hclient, many_in_flight_all_answered) {
  char u[128];
  url(u, sizeof u, "/echo");
  answer as[20] = {0};
  for (int i = 0; i < 20; i++)
    cr_assert_eq(hclient_post(cl, u, NULL, "0123456789", (size_t)i % 10, 5000, on_answer, &as[i]),
                 0);
  wait_all(as, 20);
  for (int i = 0; i < 20; i++) {
    cr_assert_eq(as[i].rc, 0);
    json_t *j = body_json(&as[i]);
    cr_assert_eq(json_integer_value(json_object_get(j, "len")), i % 10);
    json_decref(j);
  }
}

Test(hclient, any_status_is_an_answer) {
  char u[128];
  url(u, sizeof u, "/status/503");
  answer a = {0};
  cr_assert_eq(hclient_post(cl, u, NULL, "", 0, 5000, on_answer, &a), 0);
  wait_all(&a, 1);
  cr_assert_eq(a.rc, 0);
  cr_assert_eq(a.status, 503);
  cr_assert_str_eq(a.body, "status 503");
}

Test(hclient, timeout_is_an_io_error) {
  char u[128];
  url(u, sizeof u, "/slow");
  answer a = {0};
  cr_assert_eq(hclient_post(cl, u, NULL, "{}", 2, 200, on_answer, &a), 0);
  wait_all(&a, 1);
  cr_assert_eq(a.rc, WSY_IO);
  cr_assert_eq(a.status, 0);
}

Test(hclient, body_past_the_cap_is_too_large) {
  char u[128];
  url(u, sizeof u, "/big");
  answer a = {0};
  cr_assert_eq(hclient_post(cl, u, NULL, "{}", 2, 5000, on_answer, &a), 0);
  wait_all(&a, 1);
  cr_assert_eq(a.rc, WSY_TOO_LARGE);
}

Test(hclient, dropped_connection_and_refused_port_are_io_errors) {
  char u[128];
  url(u, sizeof u, "/drop");
  answer a[2] = {0};
  cr_assert_eq(hclient_post(cl, u, NULL, "{}", 2, 5000, on_answer, &a[0]), 0);
  /* a port nobody listens on: bind one, note it, close it */
  uv_tcp_t t;
  uv_tcp_init(&loop, &t);
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  cr_assert_eq(uv_tcp_bind(&t, (struct sockaddr *)&sa, 0), 0);
  int len = sizeof sa;
  uv_tcp_getsockname(&t, (struct sockaddr *)&sa, &len);
  uv_close((uv_handle_t *)&t, NULL);
  char refused[128];
  snprintf(refused, sizeof refused, "http://127.0.0.1:%d/x", ntohs(sa.sin_port));
  cr_assert_eq(hclient_post(cl, refused, NULL, "{}", 2, 5000, on_answer, &a[1]), 0);
  wait_all(a, 2);
  cr_assert_eq(a[0].rc, WSY_IO);
  cr_assert_eq(a[1].rc, WSY_IO);
}

Test(hclient, refuses_other_schemes_and_posts_after_close) {
  answer a = {0};
  cr_assert_eq(hclient_post(cl, "ftp://127.0.0.1/x", NULL, "", 0, 100, on_answer, &a), WSY_INVAL);
  cr_assert_eq(hclient_post(cl, "file:///etc/passwd", NULL, "", 0, 100, on_answer, &a),
               WSY_INVAL);
  hclient_close(cl);
  char u[128];
  url(u, sizeof u, "/echo");
  cr_assert_eq(hclient_post(cl, u, NULL, "", 0, 100, on_answer, &a), WSY_CLOSED);
  cr_assert_eq(a.calls, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  cl = NULL; /* freed by the loop */
}

Test(hclient, close_cancels_requests_in_flight) {
  char u[128];
  url(u, sizeof u, "/slow");
  answer a[3] = {0};
  for (int i = 0; i < 3; i++)
    cr_assert_eq(hclient_post(cl, u, NULL, "{}", 2, 10000, on_answer, &a[i]), 0);
  /* let the requests reach the server before canceling them */
  for (int i = 0; i < 20; i++) uv_run(&loop, UV_RUN_NOWAIT);
  hclient_close(cl);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(a[i].calls, 1);
    cr_assert_eq(a[i].rc, WSY_IO);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  cl = NULL;
}

typedef struct {
  answer a;
  hclient *c;
} closer;

static void close_in_cb(void *ud, const hclient_resp *r) {
  closer *k = ud;
  on_answer(&k->a, r);
  hclient_close(k->c);
}

Test(hclient, close_inside_a_callback_cancels_the_rest) {
  char u[128], slow[128];
  url(u, sizeof u, "/echo");
  url(slow, sizeof slow, "/slow");
  closer k = {.c = cl};
  answer other = {0};
  cr_assert_eq(hclient_post(cl, slow, NULL, "{}", 2, 10000, on_answer, &other), 0);
  cr_assert_eq(hclient_post(cl, u, NULL, "{}", 2, 5000, close_in_cb, &k), 0);
  wait_all(&k.a, 1);
  cr_assert_eq(k.a.rc, 0);
  cr_assert_eq(other.calls, 1);
  cr_assert_eq(other.rc, WSY_IO);
  uv_run(&loop, UV_RUN_DEFAULT);
  cl = NULL;
}
