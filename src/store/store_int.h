/* store_int.h -- private to src/store: what every backend implements (the
 * operations behind store.h) and the batch layout backends read when they
 * commit. Nothing outside src/store includes it (unit tests of the store
 * aside). */
#ifndef WSY_STORE_INT_H
#define WSY_STORE_INT_H

#include <obstack.h>

#include "store.h"

/* Built with AddressSanitizer (GCC says so one way, clang another). */
#if defined(__SANITIZE_ADDRESS__)
#define WSY_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WSY_ASAN 1
#endif
#endif

/* One backend. Every function has the contract of the store.h call of the
 * same name; s is the backend's own object, whose first member is a store. */
typedef struct store_ops {
  const char *name;
  void (*close)(store *s);
  int (*room_get)(store *s, const char *room, store_room_info *out);
  int (*room_items)(store *s, const char *room, store_item_cb cb, void *ud);
  int (*room_texts)(store *s, const char *room, store_text_cb cb, void *ud);
  int (*history)(store *s, const char *room, uint64_t after_seq, size_t limit, store_history_cb cb, void *ud);
  int (*recent_messages)(store *s, const char *room, size_t limit, store_history_cb cb, void *ud);
  int (*dedupe_each)(store *s, store_dedupe_cb cb, void *ud);
  int (*dedupe_get)(store *s, const char *dkey, const char *cid, char room_out[STORE_ROOM_MAX + 1],
                    uint64_t *seq_out);
  int (*cursors)(store *s, const char *room, store_cursor_cb cb, void *ud);
  int (*hook_positions)(store *s, const char *hook, store_hook_pos_cb cb, void *ud);
  int (*hook_pos_get)(store *s, const char *hook, const char *room, const char *epoch, uint64_t *seq_out);
  int (*read_begin)(store *s);
  int (*read_end)(store *s);
  int (*stats)(store *s, store_stats_info *out);
  int (*room_locks)(store *s, const char *room, store_lock_cb cb, void *ud); /* NULL: no locks kept */
  int (*release_locks_of)(store *s, const char *prefix, store_release_cb cb, void *ud); /* NULL: none kept */
  int (*rooms_get)(store *s, const char *const *names, size_t n, store_room_cb cb, void *ud); /* NULL: one by one */
  int (*fetch)(store *s, const char *room, int flags, uint64_t after, store_fetch_cb cb, void *ud); /* NULL: none */
  int (*fetch_rooms)(store *s, const char *const *names, size_t n, store_fetch_cb cb, void *ud); /* NULL: none */
  int (*fetch_log)(store *s, const char *room, uint64_t after, size_t limit, store_fetch_cb cb, void *ud); /* NULL: none */
  int (*fetch_list)(store *s, const char *after, size_t limit, store_fetch_cb cb, void *ud); /* NULL: none */
  int (*fetch_dedupe)(store *s, const char *dkey, const char *cid, store_fetch_cb cb, void *ud); /* NULL: none */
  int (*fetch_changes)(store *s, const char *room, int flags, uint64_t after, const char *const *items, size_t n,
                       store_fetch_cb cb, void *ud); /* NULL: none */
  int (*release_locks_async)(store *s, const char *prefix, store_fetch_cb cb, void *ud); /* NULL: none */
  void (*read_counts)(store *s, uint64_t *sync_reads, uint64_t *fetches, uint64_t *failures); /* NULL: zeros */
  int (*rooms_list)(store *s, const char *after, size_t limit, store_room_cb cb, void *ud);
  void (*commit)(store *s, store_batch *b, store_commit_cb cb, void *ud);
} store_ops;

struct store {
  const store_ops *ops;
};

/* ---- batches (batch.c): built on the loop thread, read by a backend ----- */

enum { E_ROOM, E_OP, E_CURSOR, E_TRIM, E_ITEM, E_DELETE, E_HOOK_POS, E_TEXT, E_LOCK, E_HEAD };
enum { B_BUILDING, B_COMMITTING, B_COMMITTED, B_FAILED };

typedef struct batch_entry {
  int kind; /* its strings below are copies in the batch's arena */
  const char *room;          /* every kind; E_DELETE: the room deleted */
  const char *epoch;         /* E_ROOM, E_HOOK_POS; E_HEAD: the new head */
  const char *hook;          /* E_HOOK_POS */
  const char *item, *fields; /* E_OP, E_ITEM, E_TEXT (fields: the field's name) */
  const char *revs;          /* E_OP, E_ITEM: NULL when no text fields */
  const char *device, *cid;  /* E_OP: device is the dedupe key "user:device"; E_CURSOR: the device */
  const char *user;          /* E_CURSOR, E_LOCK (with device) */
  const char *holder;        /* E_LOCK: NULL for a release; E_HEAD: the expected head (NULL: none) */
  const char *msg;           /* E_OP, E_TEXT (the op), msg_len bytes (+ NUL) */
  size_t msg_len;
  uint64_t seq;              /* E_OP seq, E_CURSOR seq, E_TRIM keep_from, E_HOOK_POS seq, E_LOCK fence */
  uint64_t version;          /* E_OP; E_TEXT: the rev; E_LOCK: the row's expected version; E_HEAD: soft */
  uint64_t locks_at;         /* E_OP: store_op.locks_at */
  int64_t now_ms;            /* E_ROOM created_at, E_CURSOR and E_HOOK_POS updated_at, E_LOCK expiry */
} batch_entry;

struct store_batch {
  batch_entry *e;
  size_t n, cap;
  int state;
  char err[256];
  /* The copies of the entries' strings, and what the caller keeps with the
   * batch (store_batch_alloc): freed at once with it. */
#ifdef WSY_ASAN
  void **blocks; /* each its own allocation, so ASan sees every bound */
  size_t nblocks, capblocks;
#else
  struct obstack mem;
#endif
};

/* Sets b->err from fmt and returns err. */
int store_batch_fail(store_batch *b, int err, const char *fmt, ...) WSY_PRINTF(3, 4);

#endif
