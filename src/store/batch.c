/* batch.c -- a group-commit batch: the entries one loop iteration accepted,
** copied into memory the batch owns, in the order they were added. Backend
** neutral: a backend reads b->e[0..n) when it commits (store_int.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_int.h"

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int store_batch_fail(store_batch *b, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b->err, sizeof b->err, fmt, ap);
  va_end(ap);
  return err;
}

/* The batch's arena: glibc's obstack, whose chunks come from wsy_malloc
 * (which does not return NULL). Under AddressSanitizer, every block is its
 * own allocation instead, so an overrun of one is still caught. */
#define obstack_chunk_alloc wsy_malloc
#define obstack_chunk_free wsy_free

store_batch *store_batch_new(void) {
  store_batch *b = wsy_calloc(1, sizeof(store_batch));
#ifndef WSY_ASAN
  obstack_begin(&b->mem, 16384); /* a chunk holds about 40 ops */
#endif
  return b;
}

void *store_batch_alloc(store_batch *b, size_t n) {
#ifdef WSY_ASAN
  if (b->nblocks == b->capblocks) {
    b->capblocks = b->capblocks ? 2 * b->capblocks : 16;
    b->blocks = wsy_realloc(b->blocks, b->capblocks * sizeof *b->blocks);
  }
  return b->blocks[b->nblocks++] = wsy_malloc(n ? n : 1);
#else
  return obstack_alloc(&b->mem, n);
#endif
}

void store_batch_free(store_batch *b) {
  if (!b) return;
#ifdef WSY_ASAN
  for (size_t i = 0; i < b->nblocks; i++) wsy_free(b->blocks[i]);
  wsy_free(b->blocks);
#else
  obstack_free(&b->mem, NULL);
#endif
  wsy_free(b->e);
  wsy_free(b);
}

size_t store_batch_count(const store_batch *b) { return b->n; }

void store_batch_each_item(const store_batch *b, void (*cb)(const char *room, const char *item, void *ud), void *ud) {
  for (size_t i = 0; i < b->n; i++) {
    const batch_entry *x = &b->e[i];
    if ((x->kind == E_OP || x->kind == E_ITEM || x->kind == E_TEXT) && x->item) cb(x->room, x->item, ud);
    else if (x->kind == E_DELETE) cb(x->room, NULL, ud);
  }
}

const char *store_batch_error(const store_batch *b) { return b->err; }

static batch_entry *batch_add(store_batch *b, int kind) {
  if (b->state != B_BUILDING) {
    /* A programming error, and a dangerous one: the entry would silently
    ** miss the transaction that the caller then acknowledges. */
    fprintf(stderr, "wsync: store batch changed after store_batch_commit\n");
    abort();
  }
  if (b->n == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 16;
    b->e = wsy_realloc(b->e, b->cap * sizeof *b->e);
  }
  batch_entry *e = &b->e[b->n++];
  memset(e, 0, sizeof *e);
  e->kind = kind;
  return e;
}

/* Copies the strings of one entry into the batch's arena. */
typedef struct {
  const char *src;
  size_t len;
  const char **dst;
} pack_item;

static void pack(store_batch *b, pack_item *it, size_t n) {
  size_t total = 1;
  for (size_t i = 0; i < n; i++)
    if (it[i].src) total += it[i].len + 1;
  char *p = store_batch_alloc(b, total);
  for (size_t i = 0; i < n; i++) {
    if (!it[i].src) {
      *it[i].dst = NULL;
      continue;
    }
    memcpy(p, it[i].src, it[i].len);
    p[it[i].len] = '\0';
    *it[i].dst = p;
    p += it[i].len + 1;
  }
}

static size_t slen(const char *s) { return s ? strlen(s) : 0; }
#define STR(s, dstp) {(s), slen(s), (dstp)}

void store_batch_room_create(store_batch *b, const char *room, const char *epoch) {
  batch_entry *e = batch_add(b, E_ROOM);
  pack_item it[] = {STR(room, &e->room), STR(epoch, &e->epoch)};
  pack(b, it, WSY_ARRAY_LEN(it));
  e->now_ms = wall_ms();
}

void store_batch_op(store_batch *b, const store_op *op) {
  batch_entry *e = batch_add(b, E_OP);
  const char *msg = op->msg ? op->msg : "";
  pack_item it[] = {
    STR(op->room, &e->room),
    STR(op->item, &e->item),
    STR(op->item ? op->fields_json : NULL, &e->fields),
    STR(op->item && op->fields_json ? op->revs_json : NULL, &e->revs),
    STR(op->dkey, &e->device),
    STR(op->cid, &e->cid),
    {msg, op->msg ? op->msg_len : 0, &e->msg},
  };
  pack(b, it, WSY_ARRAY_LEN(it));
  e->msg_len = op->msg ? op->msg_len : 0;
  e->seq = op->seq;
  e->version = op->version;
  e->locks_at = op->locks_at;
}

void store_batch_cursor(store_batch *b, const char *user, const char *device, const char *room,
                        uint64_t seq) {
  batch_entry *e = batch_add(b, E_CURSOR);
  pack_item it[] = {STR(user, &e->user), STR(device, &e->device), STR(room, &e->room)};
  pack(b, it, WSY_ARRAY_LEN(it));
  e->seq = seq;
  e->now_ms = wall_ms();
}

void store_batch_item(store_batch *b, const char *room, const char *item, const char *fields_json,
                      const char *revs_json, uint64_t version) {
  batch_entry *e = batch_add(b, E_ITEM);
  pack_item it[] = {STR(room, &e->room), STR(item, &e->item), STR(fields_json, &e->fields),
                    STR(fields_json ? revs_json : NULL, &e->revs)};
  pack(b, it, WSY_ARRAY_LEN(it));
  e->version = version;
}

void store_batch_text(store_batch *b, const char *room, const char *item, const char *field, uint64_t rev,
                      uint64_t seq, const char *ops_json, size_t len) {
  batch_entry *e = batch_add(b, E_TEXT);
  pack_item it[] = {STR(room, &e->room), STR(item, &e->item), STR(field, &e->fields), {ops_json, len, &e->msg}};
  pack(b, it, WSY_ARRAY_LEN(it));
  e->msg_len = len;
  e->seq = seq;
  e->version = rev;
}

void store_batch_trim(store_batch *b, const char *room, uint64_t keep_from_seq) {
  batch_entry *e = batch_add(b, E_TRIM);
  pack_item it[] = {STR(room, &e->room)};
  pack(b, it, WSY_ARRAY_LEN(it));
  e->seq = keep_from_seq;
}

void store_batch_hook_pos(store_batch *b, const char *hook, const char *room, const char *epoch,
                          uint64_t seq) {
  batch_entry *e = batch_add(b, E_HOOK_POS);
  pack_item it[] = {STR(hook, &e->hook), STR(room, &e->room), STR(epoch, &e->epoch)};
  pack(b, it, WSY_ARRAY_LEN(it));
  e->seq = seq;
  e->now_ms = wall_ms();
}

void store_batch_lock(store_batch *b, const char *room, uint64_t expect_version, const char *item,
                      const char *holder, const char *user, const char *device, uint64_t fence,
                      int64_t expires_ms) {
  batch_entry *e = batch_add(b, E_LOCK);
  pack_item it[] = {STR(room, &e->room), STR(item, &e->item), STR(holder, &e->holder),
                    STR(holder ? user : NULL, &e->user), STR(holder ? device : NULL, &e->device)};
  pack(b, it, WSY_ARRAY_LEN(it));
  e->seq = fence;
  e->version = expect_version;
  e->now_ms = expires_ms;
}

size_t store_batch_head(store_batch *b, const char *room, const char *expect, const char *head, int soft) {
  batch_entry *e = batch_add(b, E_HEAD);
  pack_item it[] = {STR(room, &e->room), STR(expect, &e->holder), STR(head, &e->epoch)};
  pack(b, it, WSY_ARRAY_LEN(it));
  e->version = soft != 0;
  return b->n - 1;
}

void store_batch_head_strict(store_batch *b, size_t entry) {
  if (entry < b->n && b->e[entry].kind == E_HEAD) b->e[entry].version = 0;
}

void store_batch_room_delete(store_batch *b, const char *room) {
  batch_entry *e = batch_add(b, E_DELETE);
  pack_item it[] = {STR(room, &e->room)};
  pack(b, it, WSY_ARRAY_LEN(it));
}

/* ---- commit -------------------------------------------------------------- */

/* Steps a write statement to completion. The batch's error text gets
** SQLite's message on failure; the result is a SQLite code. */
