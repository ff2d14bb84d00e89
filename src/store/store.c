/* store.c -- the store interface (store.h): each call goes to the backend
** behind it; and the fault-injecting backend that tests put in front of a
** real one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

const char *store_backend(const store *s) { return s->ops->name; }

void store_close(store *s) {
  if (s) s->ops->close(s);
}

int store_room_get(store *s, const char *room, store_room_info *out) {
  return s->ops->room_get(s, room, out);
}

int store_room_items(store *s, const char *room, store_item_cb cb, void *ud) {
  return s->ops->room_items(s, room, cb, ud);
}

int store_room_texts(store *s, const char *room, store_text_cb cb, void *ud) {
  return s->ops->room_texts(s, room, cb, ud);
}

int store_history(store *s, const char *room, uint64_t after_seq, size_t limit, store_history_cb cb,
                  void *ud) {
  return s->ops->history(s, room, after_seq, limit, cb, ud);
}

int store_recent_messages(store *s, const char *room, size_t limit, store_history_cb cb, void *ud) {
  return s->ops->recent_messages(s, room, limit, cb, ud);
}

int store_dedupe_each(store *s, store_dedupe_cb cb, void *ud) { return s->ops->dedupe_each(s, cb, ud); }

int store_dedupe_get(store *s, const char *dkey, const char *cid, char room_out[STORE_ROOM_MAX + 1],
                     uint64_t *seq_out) {
  return s->ops->dedupe_get(s, dkey, cid, room_out, seq_out);
}

int store_cursors(store *s, const char *room, store_cursor_cb cb, void *ud) {
  return s->ops->cursors(s, room, cb, ud);
}

int store_hook_positions(store *s, const char *hook, store_hook_pos_cb cb, void *ud) {
  return s->ops->hook_positions(s, hook, cb, ud);
}
int store_hook_pos_get(store *s, const char *hook, const char *room, const char *epoch, uint64_t *seq_out) {
  return s->ops->hook_pos_get(s, hook, room, epoch, seq_out);
}

int store_read_begin(store *s) { return s->ops->read_begin(s); }
int store_read_end(store *s) { return s->ops->read_end(s); }
int store_stats(store *s, store_stats_info *out) { return s->ops->stats(s, out); }
int store_fetch(store *s, const char *room, int flags, uint64_t after_seq, store_fetch_cb cb, void *ud) {
  return s->ops->fetch ? s->ops->fetch(s, room, flags, after_seq, cb, ud) : WSY_INVAL;
}
int store_fetch_rooms(store *s, const char *const *names, size_t n, store_fetch_cb cb, void *ud) {
  return s->ops->fetch_rooms ? s->ops->fetch_rooms(s, names, n, cb, ud) : WSY_INVAL;
}
int store_fetch_log(store *s, const char *room, uint64_t after_seq, size_t limit, store_fetch_cb cb, void *ud) {
  return s->ops->fetch_log ? s->ops->fetch_log(s, room, after_seq, limit, cb, ud) : WSY_INVAL;
}

int store_fetch_list(store *s, const char *after, size_t limit, store_fetch_cb cb, void *ud) {
  return s->ops->fetch_list ? s->ops->fetch_list(s, after, limit, cb, ud) : WSY_INVAL;
}
int store_fetch_changes(store *s, const char *room, int flags, uint64_t after_seq, const char *const *items,
                        size_t n, store_fetch_cb cb, void *ud) {
  return s->ops->fetch_changes ? s->ops->fetch_changes(s, room, flags, after_seq, items, n, cb, ud) : WSY_INVAL;
}

int store_fetch_dedupe(store *s, const char *dkey, const char *cid, store_fetch_cb cb, void *ud) {
  return s->ops->fetch_dedupe ? s->ops->fetch_dedupe(s, dkey, cid, cb, ud) : WSY_INVAL;
}
void store_read_counts(store *s, uint64_t *sync_reads, uint64_t *fetches, uint64_t *fetch_failures) {
  *sync_reads = *fetches = *fetch_failures = 0;
  if (s->ops->read_counts) s->ops->read_counts(s, sync_reads, fetches, fetch_failures);
}
int store_release_locks_of(store *s, const char *prefix, store_release_cb cb, void *ud) {
  return s->ops->release_locks_of ? s->ops->release_locks_of(s, prefix, cb, ud) : 0;
}
int store_release_locks_async(store *s, const char *prefix, store_fetch_cb cb, void *ud) {
  return s->ops->release_locks_async ? s->ops->release_locks_async(s, prefix, cb, ud) : WSY_INVAL;
}
int store_rooms_get(store *s, const char *const *names, size_t n, store_room_cb cb, void *ud) {
  if (s->ops->rooms_get) return s->ops->rooms_get(s, names, n, cb, ud);
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    store_room_info info;
    rc = store_room_get(s, names[i], &info);
    if (!rc && info.exists) rc = cb(names[i], &info, ud);
  }
  return rc;
}
int store_room_locks(store *s, const char *room, store_lock_cb cb, void *ud) {
  return s->ops->room_locks ? s->ops->room_locks(s, room, cb, ud) : 0;
}
int store_rooms_list(store *s, const char *after, size_t limit, store_room_cb cb, void *ud) {
  return s->ops->rooms_list(s, after, limit, cb, ud);
}

void store_commit(store *s, store_batch *b, store_commit_cb cb, void *ud) { s->ops->commit(s, b, cb, ud); }

/* ---- fault injection ------------------------------------------------------ */

typedef struct fault_store {
  store base;
  store *inner;
  unsigned skip[STORE_FAULT__COUNT], fail[STORE_FAULT__COUNT];
  char *control;                 /* store_fault_control's file, or NULL */
  /* a commit that fails is answered from the loop, like a real one */
  uv_idle_t idle;
  int idle_init;
  store_batch *failed;
  store_commit_cb cb;
  void *cb_ud;
  /* "delay MS": the next commit is held that long before it goes on;
   * "delay-fetch MS": the next store_fetch is made that much later */
  unsigned delay_ms, fetch_delay_ms;
  uv_timer_t timer, fetch_timer;
  store_batch *held;
  store_commit_cb held_cb;
  void *held_ud;
  struct {
    char *room;
    int flags;
    uint64_t after;
    char **items; /* store_fetch_changes: its items (changes set) */
    size_t n;
    int changes;
    store_fetch_cb cb;
    void *ud;
  } held_fetch; /* room NULL: none */
  int handles; /* open libuv handles: f is freed when the last one closes */
} fault_store;

static const char *const fault_names[STORE_FAULT__COUNT] = {"commit", "dedupe", "read"};

/* Arms from the control file: "KIND N" lines; the file keeps what is left. */
static void read_control(fault_store *f) {
  FILE *fp = fopen(f->control, "r");
  if (!fp) return;
  char line[64], kind[16];
  unsigned n;
  while (fgets(line, sizeof line, fp))
    if (sscanf(line, "%15s %u", kind, &n) == 2) {
      for (int k = 0; k < STORE_FAULT__COUNT; k++)
        if (!strcmp(kind, fault_names[k])) f->fail[k] += n;
      if (!strcmp(kind, "delay")) f->delay_ms = n;
      if (!strcmp(kind, "delay-fetch")) f->fetch_delay_ms = n;
    }
  fclose(fp);
  remove(f->control);
}

static void write_control(fault_store *f) {
  unsigned left = f->delay_ms + f->fetch_delay_ms;
  for (int k = 0; k < STORE_FAULT__COUNT; k++) left += f->fail[k];
  if (!left) return;
  FILE *fp = fopen(f->control, "w");
  if (!fp) return;
  for (int k = 0; k < STORE_FAULT__COUNT; k++)
    if (f->fail[k]) fprintf(fp, "%s %u\n", fault_names[k], f->fail[k]);
  if (f->delay_ms) fprintf(fp, "delay %u\n", f->delay_ms);
  if (f->fetch_delay_ms) fprintf(fp, "delay-fetch %u\n", f->fetch_delay_ms);
  fclose(fp);
  for (int k = 0; k < STORE_FAULT__COUNT; k++) f->fail[k] = 0; /* the file holds them now */
  f->delay_ms = f->fetch_delay_ms = 0;
}

/* True when this call of kind k is to fail. */
static int faulted(fault_store *f, store_fault_kind k) {
  if (f->skip[k]) {
    f->skip[k]--;
    return 0;
  }
  if (f->control && !f->fail[k]) read_control(f);
  int hit = 0;
  if (f->fail[k]) {
    f->fail[k]--;
    hit = 1;
  }
  if (f->control) write_control(f);
  return hit;
}

#define F(s) ((fault_store *)(s))

static void held_fetch_free(fault_store *f) {
  for (size_t i = 0; i < f->held_fetch.n; i++) wsy_free(f->held_fetch.items[i]);
  wsy_free(f->held_fetch.items);
  wsy_free(f->held_fetch.room);
  memset(&f->held_fetch, 0, sizeof f->held_fetch);
}

static void f_closed(uv_handle_t *h) {
  fault_store *f = h->data;
  if (--f->handles == 0) wsy_free(f);
}

static void f_close(store *s) {
  fault_store *f = F(s);
  f->held = NULL; /* a commit still held is never answered (its batch is the caller's) */
  held_fetch_free(f); /* nor a fetch not made yet, as store_close drops those in flight */
  store_close(f->inner);
  wsy_free(f->control);
  if (f->idle_init) {
    f->idle.data = f;
    f->timer.data = f;
    f->fetch_timer.data = f;
    uv_close((uv_handle_t *)&f->idle, f_closed);
    uv_close((uv_handle_t *)&f->timer, f_closed);
    uv_close((uv_handle_t *)&f->fetch_timer, f_closed);
  } else {
    wsy_free(f);
  }
}

static int f_room_get(store *s, const char *room, store_room_info *out) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO;
  return store_room_get(F(s)->inner, room, out);
}


static void f_fetch_go(uv_timer_t *t) {
  fault_store *f = t->data;
  int rc = f->held_fetch.changes
             ? store_fetch_changes(f->inner, f->held_fetch.room, f->held_fetch.flags, f->held_fetch.after,
                                   (const char *const *)f->held_fetch.items, f->held_fetch.n, f->held_fetch.cb,
                                   f->held_fetch.ud)
             : store_fetch(f->inner, f->held_fetch.room, f->held_fetch.flags, f->held_fetch.after, f->held_fetch.cb,
                           f->held_fetch.ud);
  store_fetch_cb cb = f->held_fetch.cb;
  void *ud = f->held_fetch.ud;
  held_fetch_free(f);
  if (rc != 0) cb(ud, rc, NULL); /* accepted earlier: answered now */
}

/* 1 when a "delay-fetch" is armed: the room fetch is kept (f->held_fetch,
 * filled by the caller) and made later. */
static int fetch_held(fault_store *f, const char *room, uint64_t after, store_fetch_cb cb, void *ud) {
  if (!f->control || !f->idle_init || f->held_fetch.room) return 0;
  read_control(f);
  unsigned ms = f->fetch_delay_ms;
  f->fetch_delay_ms = 0;
  write_control(f);
  if (!ms) return 0;
  f->held_fetch.room = wsy_strndup(room, strlen(room));
  f->held_fetch.after = after;
  f->held_fetch.cb = cb;
  f->held_fetch.ud = ud;
  f->fetch_timer.data = f;
  uv_timer_start(&f->fetch_timer, f_fetch_go, ms, 0);
  return 1;
}

static int f_fetch(store *s, const char *room, int flags, uint64_t after, store_fetch_cb cb, void *ud) {
  fault_store *f = F(s);
  if (faulted(f, STORE_FAULT_READ)) return WSY_IO; /* refused at once: cb never runs */
  if (room && cb && fetch_held(f, room, after, cb, ud)) {
    f->held_fetch.flags = flags;
    return 0;
  }
  return store_fetch(f->inner, room, flags, after, cb, ud);
}

static int f_fetch_rooms(store *s, const char *const *names, size_t n, store_fetch_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO; /* refused at once: cb never runs */
  return store_fetch_rooms(F(s)->inner, names, n, cb, ud);
}

static int f_fetch_log(store *s, const char *room, uint64_t after, size_t limit, store_fetch_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO; /* refused at once: cb never runs */
  return store_fetch_log(F(s)->inner, room, after, limit, cb, ud);
}

static int f_fetch_list(store *s, const char *after, size_t limit, store_fetch_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO; /* refused at once: cb never runs */
  return store_fetch_list(F(s)->inner, after, limit, cb, ud);
}

static int f_fetch_changes(store *s, const char *room, int flags, uint64_t after, const char *const *items,
                           size_t n, store_fetch_cb cb, void *ud) {
  fault_store *f = F(s);
  if (faulted(f, STORE_FAULT_READ)) return WSY_IO; /* refused at once: cb never runs */
  if (room && cb && (!n || items) && fetch_held(f, room, after, cb, ud)) {
    f->held_fetch.changes = 1;
    f->held_fetch.flags = flags;
    f->held_fetch.n = n;
    f->held_fetch.items = n ? wsy_malloc(n * sizeof *f->held_fetch.items) : NULL;
    for (size_t i = 0; i < n; i++) f->held_fetch.items[i] = wsy_strndup(items[i], strlen(items[i]));
    return 0;
  }
  return store_fetch_changes(f->inner, room, flags, after, items, n, cb, ud);
}

static int f_fetch_dedupe(store *s, const char *dkey, const char *cid, store_fetch_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_DEDUPE)) return WSY_IO; /* refused at once: cb never runs */
  return store_fetch_dedupe(F(s)->inner, dkey, cid, cb, ud);
}

static int f_release_locks_async(store *s, const char *prefix, store_fetch_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO; /* refused at once: cb never runs */
  return store_release_locks_async(F(s)->inner, prefix, cb, ud);
}

static void f_read_counts(store *s, uint64_t *a, uint64_t *b, uint64_t *c) { store_read_counts(F(s)->inner, a, b, c); }

static int f_release_locks_of(store *s, const char *prefix, store_release_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO;
  return store_release_locks_of(F(s)->inner, prefix, cb, ud);
}

static int f_rooms_get(store *s, const char *const *names, size_t n, store_room_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO;
  return store_rooms_get(F(s)->inner, names, n, cb, ud);
}

static int f_room_locks(store *s, const char *room, store_lock_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO;
  return store_room_locks(F(s)->inner, room, cb, ud);
}

static int f_room_items(store *s, const char *room, store_item_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO;
  return store_room_items(F(s)->inner, room, cb, ud);
}

static int f_room_texts(store *s, const char *room, store_text_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO;
  return store_room_texts(F(s)->inner, room, cb, ud);
}

static int f_history(store *s, const char *room, uint64_t after, size_t limit, store_history_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO;
  return store_history(F(s)->inner, room, after, limit, cb, ud);
}

static int f_recent(store *s, const char *room, size_t limit, store_history_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO;
  return store_recent_messages(F(s)->inner, room, limit, cb, ud);
}

static int f_dedupe_each(store *s, store_dedupe_cb cb, void *ud) { return store_dedupe_each(F(s)->inner, cb, ud); }

static int f_dedupe_get(store *s, const char *dkey, const char *cid, char room_out[STORE_ROOM_MAX + 1],
                        uint64_t *seq_out) {
  if (faulted(F(s), STORE_FAULT_DEDUPE)) return WSY_IO;
  return store_dedupe_get(F(s)->inner, dkey, cid, room_out, seq_out);
}

static int f_cursors(store *s, const char *room, store_cursor_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO;
  return store_cursors(F(s)->inner, room, cb, ud);
}

static int f_rooms_list(store *s, const char *after, size_t limit, store_room_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO;
  return store_rooms_list(F(s)->inner, after, limit, cb, ud);
}

static int f_hook_positions(store *s, const char *hook, store_hook_pos_cb cb, void *ud) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO;
  return store_hook_positions(F(s)->inner, hook, cb, ud);
}

static int f_hook_pos_get(store *s, const char *hook, const char *room, const char *epoch, uint64_t *seq_out) {
  if (faulted(F(s), STORE_FAULT_READ)) return WSY_IO;
  return store_hook_pos_get(F(s)->inner, hook, room, epoch, seq_out);
}

static int f_read_begin(store *s) { return store_read_begin(F(s)->inner); }
static int f_read_end(store *s) { return store_read_end(F(s)->inner); }
static int f_stats(store *s, store_stats_info *out) { return store_stats(F(s)->inner, out); }

static void f_answer(uv_idle_t *h) {
  fault_store *f = h->data;
  uv_idle_stop(h);
  store_batch *b = f->failed;
  f->failed = NULL;
  f->cb(f->cb_ud, store_batch_fail(b, WSY_IO, "injected fault"));
}

static void f_commit_now(fault_store *f, store_batch *b, store_commit_cb cb, void *ud);

static void f_held_done(uv_timer_t *t) {
  fault_store *f = t->data;
  store_batch *b = f->held;
  f->held = NULL;
  if (b) f_commit_now(f, b, f->held_cb, f->held_ud);
}

static void f_commit(store *s, store_batch *b, store_commit_cb cb, void *ud) {
  fault_store *f = F(s);
  if (f->control && f->idle_init) { /* a delay armed: this commit waits first */
    read_control(f);
    unsigned ms = f->delay_ms;
    f->delay_ms = 0;
    write_control(f);
    if (ms) {
      f->held = b;
      f->held_cb = cb;
      f->held_ud = ud;
      f->timer.data = f;
      uv_timer_start(&f->timer, f_held_done, ms, 0);
      return;
    }
  }
  f_commit_now(f, b, cb, ud);
}

static void f_commit_now(fault_store *f, store_batch *b, store_commit_cb cb, void *ud) {
  if (!faulted(f, STORE_FAULT_COMMIT)) {
    store_commit(f->inner, b, cb, ud);
    return;
  }
  if (!f->idle_init) abort(); /* store_fault_new without a loop commits nothing */
  f->failed = b;
  f->cb = cb;
  f->cb_ud = ud;
  f->idle.data = f;
  uv_idle_start(&f->idle, f_answer);
}

static const store_ops fault_ops = {
  .name = "fault",
  .close = f_close,
  .room_get = f_room_get,
  .room_items = f_room_items,
  .room_locks = f_room_locks,
  .rooms_get = f_rooms_get,
  .release_locks_of = f_release_locks_of,
  .fetch = f_fetch,
  .fetch_rooms = f_fetch_rooms,
  .fetch_log = f_fetch_log,
  .fetch_list = f_fetch_list,
  .fetch_dedupe = f_fetch_dedupe,
  .fetch_changes = f_fetch_changes,
  .release_locks_async = f_release_locks_async,
  .read_counts = f_read_counts,
  .room_texts = f_room_texts,
  .history = f_history,
  .recent_messages = f_recent,
  .dedupe_each = f_dedupe_each,
  .dedupe_get = f_dedupe_get,
  .cursors = f_cursors,
  .hook_positions = f_hook_positions,
  .hook_pos_get = f_hook_pos_get,
  .read_begin = f_read_begin,
  .read_end = f_read_end,
  .stats = f_stats,
  .rooms_list = f_rooms_list,
  .commit = f_commit,
};

store *store_fault_new(store *inner, uv_loop_t *loop) {
  fault_store *f = wsy_calloc(1, sizeof *f);
  f->base.ops = &fault_ops;
  f->inner = inner;
  if (loop) {
    uv_idle_init(loop, &f->idle);
    uv_timer_init(loop, &f->timer);
    uv_timer_init(loop, &f->fetch_timer);
    f->idle_init = 1;
    f->handles = 3;
  }
  return &f->base;
}

void store_fault_arm(store *s, store_fault_kind what, unsigned skip, unsigned count) {
  F(s)->skip[what] = skip;
  F(s)->fail[what] = count;
}

void store_fault_control(store *s, const char *path) {
  wsy_free(F(s)->control);
  F(s)->control = wsy_strndup(path, strlen(path));
}
