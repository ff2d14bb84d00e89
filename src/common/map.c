/* map.c -- open addressing with linear probing and tombstones; FNV-1a. */
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

/* Empty again, of the same kind (copying or borrowing). */
static void reset(map *m) {
  int borrowed = m->borrowed;
  map_init(m);
  m->borrowed = borrowed;
}

void map_free(map *m) {
  for (size_t i = 0; i < m->cap && !m->borrowed; i++)
    if (m->slots[i].key && m->slots[i].key != MAP_TOMBSTONE) wsy_free(m->slots[i].key);
  wsy_free(m->slots);
  reset(m);
}

static map_slot *find_h(const map *m, const char *key, size_t h) {
  if (!m->cap) return NULL;
  for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    map_slot *s = &m->slots[i];
    if (!s->key) return NULL;
    if (s->hash == h && s->key != MAP_TOMBSTONE && strcmp(s->key, key) == 0) return s;
  }
}

static map_slot *find(const map *m, const char *key) { return find_h(m, key, hash(key)); }

static void grow(map *m) {
  map old = *m;
  /* Sized by live keys, not by the old capacity: a map with steady churn
   * (the pending cids) fills with tombstones and is rebuilt at its size
   * instead of doubling for ever. */
  m->cap = 16;
  while (m->cap < 4 * (old.len + 1)) m->cap *= 2;
  m->slots = wsy_calloc(m->cap, sizeof *m->slots);
  m->len = m->used = 0;
  for (size_t i = 0; i < old.cap; i++) {
    map_slot *s = &old.slots[i];
    if (!s->key || s->key == MAP_TOMBSTONE) continue;
    size_t j = s->hash & (m->cap - 1);
    while (m->slots[j].key) j = (j + 1) & (m->cap - 1);
    m->slots[j] = *s;
    m->len++;
    m->used++;
  }
  wsy_free(old.slots);
}

void *map_get(const map *m, const char *key) {
  map_slot *s = find(m, key);
  return s ? s->val : NULL;
}

void *map_put(map *m, const char *key, void *val) {
  size_t h = hash(key);
  map_slot *s = find_h(m, key, h);
  if (s) {
    void *prev = s->val;
    s->val = val;
    if (m->borrowed) s->key = (char *)key; /* the old one may go with its value */
    return prev;
  }
  if ((m->used + 1) * 4 > m->cap * 3) grow(m);
  size_t i = h & (m->cap - 1);
  while (m->slots[i].key && m->slots[i].key != MAP_TOMBSTONE) i = (i + 1) & (m->cap - 1);
  if (!m->slots[i].key) m->used++;
  m->slots[i].key = m->borrowed ? (char *)key : wsy_strndup(key, strlen(key));
  m->slots[i].val = val;
  m->slots[i].hash = h;
  m->len++;
  return NULL;
}

static void *del_slot(map *m, map_slot *s);

void *map_del(map *m, const char *key) {
  map_slot *s = find(m, key);
  return s ? del_slot(m, s) : NULL;
}

int map_del_if(map *m, const char *key, const void *val) {
  map_slot *s = find(m, key);
  if (!s || s->val != val) return 0;
  del_slot(m, s);
  return 1;
}

static void *del_slot(map *m, map_slot *s) {
  void *v = s->val;
  if (!m->borrowed) wsy_free(s->key);
  s->key = MAP_TOMBSTONE;
  s->val = NULL;
  m->len--;
  if (m->len == 0) { /* reset tombstones when empty */
    wsy_free(m->slots);
    reset(m);
  }
  return v;
}

int map_next(const map *m, size_t *i, const char **key, void **val) {
  for (; *i < m->cap; (*i)++) {
    map_slot *s = &m->slots[*i];
    if (s->key && s->key != MAP_TOMBSTONE) {
      if (key) *key = s->key;
      if (val) *val = s->val;
      (*i)++;
      return 1;
    }
  }
  return 0;
}
