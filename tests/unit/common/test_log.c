/* test_log.c -- held log lines (src/common/log.c): an event loop's thread
 * writes its info and debug lines when the loop is about to wait, warn and
 * error lines at once with what was held before them, other threads each
 * line as it comes; nothing is lost, reordered or cut when a turn logs more
 * than the hold takes, or when the process exits. stderr goes to a temporary
 * file here, read back after each step. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../../src/common/log.h"

static FILE *out;

/* stderr into a fresh temporary file, unbuffered as stderr is. */
static void capture(void) {
  out = tmpfile();
  cr_assert(out);
  cr_assert_eq(dup2(fileno(out), STDERR_FILENO), STDERR_FILENO);
  wsy_log_level = LOG_DEBUG;
  wsy_log_format = LOG_TEXT;
}

/* Everything written to stderr so far (caller frees). */
static char *written(void) {
  long n = lseek(fileno(out), 0, SEEK_END);
  char *s = calloc(1, (size_t)n + 1);
  cr_assert_eq(pread(fileno(out), s, (size_t)n, 0), n);
  return s;
}

static size_t written_len(void) { return (size_t)lseek(fileno(out), 0, SEEK_END); }

Test(log, a_thread_that_never_waited_writes_each_line_at_once) {
  capture();
  wsy_log_event(LOG_INFO, "connect", "remote", "127.0.0.1:1", (const char *)NULL);
  char *s = written();
  cr_assert(strstr(s, "info  connect remote=127.0.0.1:1\n"), "%s", s);
  free(s);
}

Test(log, a_loop_threads_info_and_debug_lines_wait_for_the_loop) {
  capture();
  wsy_log_loop_wait();
  wsy_log_event(LOG_INFO, "connect", "remote", "a", (const char *)NULL);
  wsy_log(LOG_DEBUG, "detail %d", 7);
  cr_assert_eq(written_len(), 0, "held lines were written before the loop waited");
  wsy_log_loop_wait();
  char *s = written();
  char *a = strstr(s, "connect remote=a\n"), *b = strstr(s, "detail 7\n");
  cr_assert(a && b && a < b, "%s", s);
  /* The next turn starts empty: nothing is written twice. */
  wsy_log_loop_wait();
  cr_assert_eq(written_len(), strlen(s));
  free(s);
}

Test(log, a_warning_goes_out_at_once_after_what_was_held) {
  capture();
  wsy_log_loop_wait();
  wsy_log(LOG_INFO, "first");
  wsy_log(LOG_WARN, "second");
  char *s = written();
  char *a = strstr(s, "info  first\n"), *b = strstr(s, "warn  second\n");
  cr_assert(a && b && a < b, "%s", s);
  free(s);
  wsy_log(LOG_ERROR, "third");
  s = written();
  cr_assert(strstr(s, "error third\n"), "%s", s);
  free(s);
}

Test(log, a_turn_that_logs_more_than_the_hold_takes_loses_nothing) {
  capture();
  wsy_log_format = LOG_JSON;
  wsy_log_loop_wait();
  /* 200 lines of about 1.1 KB each, past what is held at once (64 KiB), and one
   * line past the length a line is cut at. */
  char v[1024];
  memset(v, 'x', sizeof v - 1);
  v[sizeof v - 1] = '\0';
  char k[16];
  for (int i = 0; i < 200; i++) {
    snprintf(k, sizeof k, "%d", i);
    wsy_log_event(LOG_INFO, "line", "i", k, "v", v, (const char *)NULL);
  }
  char big[4096];
  memset(big, 'y', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  wsy_log_event(LOG_INFO, "long", "v", big, (const char *)NULL);
  cr_assert_gt(written_len(), 0, "a full hold is written before it overflows");
  wsy_log_loop_wait();
  char *s = written();
  char *p = s;
  for (int i = 0; i < 200; i++) {
    char want[64];
    snprintf(want, sizeof want, "\"msg\":\"line\",\"i\":\"%d\",\"v\":\"xxx", i);
    char *at = strstr(p, want);
    cr_assert(at, "line %d missing or out of order", i);
    char *nl = strchr(at, '\n');
    cr_assert(nl && nl[-1] == '}' && nl - at > 1023, "line %d cut", i);
    p = nl + 1;
  }
  /* The long line is cut to its bound but still ends the line. */
  char *at = strstr(p, "\"msg\":\"long\"");
  cr_assert(at);
  cr_assert_eq(strchr(at, '\n'), s + strlen(s) - 1);
  free(s);
}

static void *other_thread(void *ud) {
  (void)ud;
  wsy_log(LOG_INFO, "from another thread");
  return NULL;
}

Test(log, another_thread_writes_its_lines_at_once) {
  capture();
  wsy_log_loop_wait();
  wsy_log(LOG_INFO, "held on the loop");
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, other_thread, NULL), 0);
  pthread_join(t, NULL);
  char *s = written();
  cr_assert(strstr(s, "from another thread\n"), "%s", s);
  cr_assert_null(strstr(s, "held on the loop"), "%s", s);
  free(s);
}

Test(log, held_lines_are_written_at_exit_and_on_flush) {
  capture();
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    wsy_log_loop_wait();
    wsy_log(LOG_INFO, "said just before exit");
    exit(0);
  }
  int st;
  cr_assert_eq(waitpid(pid, &st, 0), pid);
  char *s = written();
  cr_assert(strstr(s, "said just before exit\n"), "%s", s);
  free(s);
  wsy_log_loop_wait();
  wsy_log(LOG_INFO, "flushed");
  wsy_log_flush();
  s = written();
  cr_assert(strstr(s, "flushed\n"), "%s", s);
  free(s);
}
