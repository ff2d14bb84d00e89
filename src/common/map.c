/* map.c -- open addressing with linear probing and tombstones; FNV-1a. Two
 * slot layouts (map.h): key and value with a tag byte per slot, or the
 * value alone (keyed). */
#include "map.h"

#include <string.h>

#include "wsy.h"

/* A byte per slot, beside the slots: whether it is empty, deleted, or
 * holds a key, and then 7 bits of that key's hash. A probe reads the key
 * (a pointer away, often a cache miss) only when the tag matches, about
 * once in 128 for another key: the churning maps (pending cids, one insert
 * and one delete per op) walk runs of occupied and deleted slots.
 *
 * Keyed maps (the per-session registries) keep no tags: a slot is one
 * pointer, NULL when empty and MAP_TOMBSTONE when deleted, and every
 * occupied slot is compared (T_ANY). The byte would add 1/8 to their
 * slots, and measured about 40 bytes per idle session (bench (a)). */
enum { T_EMPTY = 0, T_DELETED = 1, T_ANY = 0x100 };

static char tombstone;
#define MAP_TOMBSTONE ((void *)&tombstone)

static size_t hash(const char *s) { return (size_t)wsy_fnv1a(1469598103934665603ull, s); }

static unsigned char tag_of(size_t h) { return (unsigned char)(0x80 | (h >> 57)); }

void map_init(map *m) { memset(m, 0, sizeof *m); }

void map_init_borrowed(map *m) {
  map_init(m);
  m->borrowed = 1;
}

void map_init_keyed(map *m, map_key_fn key_of) {
  map_init_borrowed(m);
  m->key_of = key_of;
}

/* Empty again, of the same kind (copying, borrowing or keyed). */
static void reset(map *m) {
  int borrowed = m->borrowed;
  map_key_fn key_of = m->key_of;
  map_init(m);
  m->borrowed = borrowed;
  m->key_of = key_of;
}

/* The key of an occupied slot i. */
static const char *key_at(const map *m, size_t i) { return m->key_of ? m->key_of(m->vals[i]) : m->slots[i].key; }

static void *val_at(const map *m, size_t i) { return m->key_of ? m->vals[i] : m->slots[i].val; }

static void set_at(map *m, size_t i, char *key, void *val) {
  if (m->key_of) {
    m->vals[i] = val;
  } else {
    m->slots[i].key = key;
    m->slots[i].val = val;
  }
}

static size_t slot_size(const map *m) { return m->key_of ? sizeof *m->vals : sizeof *m->slots; }

/* Slots and tags in one block: cap slots, then cap tags (zero: empty). */
static void alloc_slots(map *m, size_t cap) {
  m->cap = cap;
  m->slots = wsy_calloc(cap, slot_size(m) + !m->key_of);
  m->tags = m->key_of ? NULL : (unsigned char *)m->slots + cap * slot_size(m);
}

/* Slot i's state: T_EMPTY, T_DELETED, or (occupied) its tag, or T_ANY. */
static unsigned state_at(const map *m, size_t i) {
  if (m->tags) return m->tags[i];
  void *v = m->vals[i];
  return !v ? T_EMPTY : v == MAP_TOMBSTONE ? T_DELETED : T_ANY;
}

static int occupied(const map *m, size_t i) { return state_at(m, i) >= 0x80; }

static void set_state(map *m, size_t i, unsigned st) {
  if (m->tags) m->tags[i] = (unsigned char)st;
  else if (st == T_DELETED) m->vals[i] = MAP_TOMBSTONE;
}

void map_free(map *m) {
  for (size_t i = 0; i < m->cap && !m->borrowed; i++)
    if (occupied(m, i)) wsy_free(m->slots[i].key);
  wsy_free(m->slots);
  reset(m);
}

/* The slot holding key (whose hash is h), or -1. */
static ptrdiff_t find(const map *m, const char *key, size_t h) {
  if (!m->cap) return -1;
  unsigned char t = tag_of(h);
  for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    unsigned st = state_at(m, i);
    if (st == T_EMPTY) return -1;
    if ((st == t || st == T_ANY) && strcmp(key_at(m, i), key) == 0) return (ptrdiff_t)i;
  }
}

/* The first slot free for a key of hash h (empty or deleted). */
static size_t free_slot(const map *m, size_t h) {
  size_t i = h & (m->cap - 1);
  while (occupied(m, i)) i = (i + 1) & (m->cap - 1);
  return i;
}

static void grow(map *m) {
  map old = *m;
  /* Sized by live keys, not by the old capacity: a map with steady churn
   * (the pending cids) fills with tombstones and is rebuilt at its size
   * instead of doubling for ever. */
  size_t cap = 16;
  while (cap < 2 * (old.len + 1)) cap *= 2;
  alloc_slots(m, cap);
  m->len = m->used = 0;
  for (size_t i = 0; i < old.cap; i++) {
    if (!occupied(&old, i)) continue;
    const char *k = key_at(&old, i);
    size_t h = hash(k), j = free_slot(m, h);
    set_state(m, j, tag_of(h));
    set_at(m, j, (char *)k, val_at(&old, i));
    m->len++;
    m->used++;
  }
  wsy_free(old.slots);
}

void *map_get(const map *m, const char *key) {
  ptrdiff_t i = find(m, key, hash(key));
  return i < 0 ? NULL : val_at(m, (size_t)i);
}

void *map_put(map *m, const char *key, void *val) {
  size_t h = hash(key);
  ptrdiff_t f = find(m, key, h);
  if (f >= 0) {
    void *prev = val_at(m, (size_t)f);
    /* borrowed: the old key may go with its value */
    set_at(m, (size_t)f, m->borrowed ? (char *)key : m->slots[f].key, val);
    return prev;
  }
  if ((m->used + 1) * 4 > m->cap * 3) grow(m);
  size_t i = free_slot(m, h);
  if (state_at(m, i) == T_EMPTY) m->used++;
  set_state(m, i, tag_of(h));
  set_at(m, i, m->borrowed ? (char *)key : wsy_strndup(key, strlen(key)), val);
  m->len++;
  return NULL;
}

static void *del_slot(map *m, size_t i) {
  void *v = val_at(m, i);
  if (!m->borrowed) wsy_free(m->slots[i].key);
  set_at(m, i, NULL, NULL);
  set_state(m, i, T_DELETED);
  m->len--;
  if (m->len == 0) { /* reset tombstones when empty */
    wsy_free(m->slots);
    reset(m);
  }
  return v;
}

void *map_del(map *m, const char *key) {
  ptrdiff_t i = find(m, key, hash(key));
  return i < 0 ? NULL : del_slot(m, (size_t)i);
}

int map_del_if(map *m, const char *key, const void *val) {
  ptrdiff_t i = find(m, key, hash(key));
  if (i < 0 || val_at(m, (size_t)i) != val) return 0;
  del_slot(m, (size_t)i);
  return 1;
}

int map_next(const map *m, size_t *i, const char **key, void **val) {
  for (; *i < m->cap; (*i)++) {
    if (occupied(m, *i)) {
      if (key) *key = key_at(m, *i);
      if (val) *val = val_at(m, *i);
      (*i)++;
      return 1;
    }
  }
  return 0;
}
