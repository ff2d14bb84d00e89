/* sqtest.c -- see sqtest.h. */
#include "sqtest.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void sqt_mkdir(char *dir, size_t n, const char *tag) {
  snprintf(dir, n, "/tmp/wsync-%s-XXXXXX", tag);
  cr_assert_not_null(mkdtemp(dir), "mkdtemp %s", dir);
}

void sqt_rmdir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *de;
  char p[512];
  while ((de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

store *sqt_open(const char *dir, int durability_full) {
  store *s = NULL;
  char err[256];
  int rc = store_sqlite_open(dir, durability_full, NULL, &s, err, sizeof err);
  cr_assert_eq(rc, 0, "store_open: %s (%s)", wsy_errname(rc), err);
  cr_assert_not_null(s);
  return s;
}

void sqt_commit(store *s, store_batch *b) {
  int rc = store_sqlite_commit_sync(s, b);
  cr_assert_eq(rc, 0, "commit: %s: %s", wsy_errname(rc), store_batch_error(b));
  store_batch_free(b);
}
