/* map.c -- open addressing with linear probing and tombstones; FNV-1a. Two
 * slot layouts (map.h): key and value, or the value alone (keyed). */
#include "map.h"

#include <string.h>

#include "wsy.h"

static char tombstone;
#define MAP_TOMBSTONE (&tombstone)

static size_t hash(const char *s) {
  size_t h = 1469598103934665603ull;
  while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
  return h;
}

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

/* Slot i: its key (NULL: empty, MAP_TOMBSTONE: deleted) and value. */
static const char *key_at(const map *m, size_t i) {
  if (!m->key_of) return m->slots[i].key;
  void *v = m->vals[i];
  return !v || v == MAP_TOMBSTONE ? v : m->key_of(v);
}

static void *val_at(const map *m, size_t i) { return m->key_of ? m->vals[i] : m->slots[i].val; }

static void set_at(map *m, size_t i, char *key, void *val) {
  if (m->key_of) {
    m->vals[i] = key == MAP_TOMBSTONE ? MAP_TOMBSTONE : val;
  } else {
    m->slots[i].key = key;
    m->slots[i].val = val;
  }
}

static size_t slot_size(const map *m) { return m->key_of ? sizeof *m->vals : sizeof *m->slots; }

void map_free(map *m) {
  for (size_t i = 0; i < m->cap && !m->borrowed; i++)
    if (m->slots[i].key && m->slots[i].key != MAP_TOMBSTONE) wsy_free(m->slots[i].key);
  wsy_free(m->slots);
  reset(m);
}

/* The slot holding key, or -1. */
static ptrdiff_t find(const map *m, const char *key) {
  if (!m->cap) return -1;
  for (size_t i = hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    const char *k = key_at(m, i);
    if (!k) return -1;
    if (k != MAP_TOMBSTONE && strcmp(k, key) == 0) return (ptrdiff_t)i;
  }
}

static void grow(map *m) {
  map old = *m;
  /* Sized by live keys, not by the old capacity: a map with steady churn
   * (the pending cids) fills with tombstones and is rebuilt at its size
   * instead of doubling for ever. */
  m->cap = 16;
  while (m->cap < 2 * (old.len + 1)) m->cap *= 2;
  m->slots = wsy_calloc(m->cap, slot_size(m));
  m->len = m->used = 0;
  for (size_t i = 0; i < old.cap; i++) {
    const char *k = key_at(&old, i);
    if (!k || k == MAP_TOMBSTONE) continue;
    size_t j = hash(k) & (m->cap - 1);
    while (key_at(m, j)) j = (j + 1) & (m->cap - 1);
    set_at(m, j, (char *)k, val_at(&old, i));
    m->len++;
    m->used++;
  }
  wsy_free(old.slots);
}

void *map_get(const map *m, const char *key) {
  ptrdiff_t i = find(m, key);
  return i < 0 ? NULL : val_at(m, (size_t)i);
}

void *map_put(map *m, const char *key, void *val) {
  ptrdiff_t f = find(m, key);
  if (f >= 0) {
    void *prev = val_at(m, (size_t)f);
    /* borrowed: the old key may go with its value */
    set_at(m, (size_t)f, m->borrowed ? (char *)key : m->slots[f].key, val);
    return prev;
  }
  if ((m->used + 1) * 4 > m->cap * 3) grow(m);
  size_t i = hash(key) & (m->cap - 1);
  for (const char *k; (k = key_at(m, i)) && k != MAP_TOMBSTONE;) i = (i + 1) & (m->cap - 1);
  if (!key_at(m, i)) m->used++;
  set_at(m, i, m->borrowed ? (char *)key : wsy_strndup(key, strlen(key)), val);
  m->len++;
  return NULL;
}

static void *del_slot(map *m, size_t i) {
  void *v = val_at(m, i);
  if (!m->borrowed) wsy_free(m->slots[i].key);
  set_at(m, i, MAP_TOMBSTONE, NULL);
  m->len--;
  if (m->len == 0) { /* reset tombstones when empty */
    wsy_free(m->slots);
    reset(m);
  }
  return v;
}

void *map_del(map *m, const char *key) {
  ptrdiff_t i = find(m, key);
  return i < 0 ? NULL : del_slot(m, (size_t)i);
}

int map_del_if(map *m, const char *key, const void *val) {
  ptrdiff_t i = find(m, key);
  if (i < 0 || val_at(m, (size_t)i) != val) return 0;
  del_slot(m, (size_t)i);
  return 1;
}

int map_next(const map *m, size_t *i, const char **key, void **val) {
  for (; *i < m->cap; (*i)++) {
    const char *k = key_at(m, *i);
    if (k && k != MAP_TOMBSTONE) {
      if (key) *key = k;
      if (val) *val = val_at(m, *i);
      (*i)++;
      return 1;
    }
  }
  return 0;
}
