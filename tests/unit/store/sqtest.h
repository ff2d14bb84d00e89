/* sqtest.h -- helpers of the SQLite store tests: a data directory of the
 * test's own under /tmp, the store opened in it, batches committed. */
#ifndef WSY_SQTEST_H
#define WSY_SQTEST_H

#include <stddef.h>

#include "../../../src/store/store.h"

/* Makes /tmp/wsync-<tag>-XXXXXX into dir (n bytes), failing the test when it cannot. */
void sqt_mkdir(char *dir, size_t n, const char *tag);
/* Removes dir and the files in it (a store's directory has no subdirectory). */
void sqt_rmdir(const char *dir);
/* store_sqlite_open(dir), failing the test when it fails. */
store *sqt_open(const char *dir, int durability_full);
/* Commits b synchronously, failing the test when it fails, and frees it. */
void sqt_commit(store *s, store_batch *b);

#endif
