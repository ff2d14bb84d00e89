/* test_config_list.c -- repeatable options (--webhook): order, the
 * environment's value replaced by flags, the count cap, the secret rules. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/config/config.h"

static int parse(wsy_config *cfg, int argc, char **argv, char *err, size_t n) {
  config_defaults(cfg);
  return config_parse(cfg, argc, argv, err, n);
}

#define SECRET "webhook-unit-secret-0123456789abcdef"

Test(config_list, flags_repeat_in_order) {
  unsetenv("WSYNC_WEBHOOK");
  char *argv[] = {"--webhook", "http://a/", "--webhook=http://b/ rooms=x:*", "--webhook-secret", SECRET};
  wsy_config cfg;
  char err[256] = "";
  cr_assert_eq(parse(&cfg, 5, argv, err, sizeof err), 0, "%s", err);
  cr_assert_eq(cfg.webhooks.n, 2);
  cr_assert_str_eq(cfg.webhooks.v[0], "http://a/");
  cr_assert_str_eq(cfg.webhooks.v[1], "http://b/ rooms=x:*");
  cr_assert_eq(cfg.webhook_batch, 1000);
  cr_assert_eq(cfg.webhook_delay_ms, 20);
  cr_assert_eq(cfg.webhook_timeout_ms, 10000);
  cr_assert_eq(cfg.webhook_max_backoff_ms, 60000);
  cr_assert_eq(cfg.webhook_retain, 1000000);
}

Test(config_list, the_environment_holds_one_and_flags_replace_it) {
  setenv("WSYNC_WEBHOOK", "http://env/", 1);
  setenv("WSYNC_WEBHOOK_SECRET", SECRET, 1);
  wsy_config cfg;
  char err[256] = "";
  cr_assert_eq(parse(&cfg, 0, NULL, err, sizeof err), 0, "%s", err);
  cr_assert_eq(cfg.webhooks.n, 1);
  cr_assert_str_eq(cfg.webhooks.v[0], "http://env/");
  char *argv[] = {"--webhook", "http://flag1/", "--webhook", "http://flag2/"};
  cr_assert_eq(parse(&cfg, 4, argv, err, sizeof err), 0, "%s", err);
  cr_assert_eq(cfg.webhooks.n, 2);
  cr_assert_str_eq(cfg.webhooks.v[0], "http://flag1/");
  cr_assert_str_eq(cfg.webhooks.v[1], "http://flag2/");
}

Test(config_list, capped_and_the_secret_is_required_and_long) {
  unsetenv("WSYNC_WEBHOOK");
  unsetenv("WSYNC_WEBHOOK_SECRET");
  char *argv[2 * WSY_LIST_MAX + 4];
  int n = 0;
  for (int i = 0; i <= WSY_LIST_MAX; i++) {
    argv[n++] = "--webhook";
    argv[n++] = "http://x/";
  }
  wsy_config cfg;
  char err[256] = "";
  cr_assert_eq(parse(&cfg, n, argv, err, sizeof err), -1);
  cr_assert(strstr(err, "webhook given more than 16 times"), "%s", err);

  char *none[] = {"--webhook", "http://x/"};
  cr_assert_eq(parse(&cfg, 2, none, err, sizeof err), -1);
  cr_assert(strstr(err, "--webhook needs --webhook-secret"), "%s", err);
  char *weak[] = {"--webhook", "http://x/", "--webhook-secret", "short"};
  cr_assert_eq(parse(&cfg, 4, weak, err, sizeof err), -1);
  cr_assert(strstr(err, "--webhook-secret is 5 bytes"), "%s", err);
}
