/* map.h -- a string-keyed hash map (open addressing, linear probing) for the
 * registries of rooms, sessions and items. Keys are copied and owned by the
 * map, unless it was made with map_init_borrowed: then the map keeps the
 * caller's key pointers, which must stay valid and unchanged while in the
 * map (map_put of a key already there takes the new pointer). Values are
 * the caller's pointers, never freed by the map.
 *
 * A map made with map_init_keyed keeps no key at all: each value carries its
 * own, which key_of reads (a session's token). Its slots are one pointer
 * each instead of two, for the registries that hold one entry per session;
 * map_put's key must then be key_of(val), unchanged while in the map.
 *
 * Slots keep no hash, only a tag byte each (7 bits of the key's hash, or
 * empty, or deleted) in an array beside them, keyed maps excepted: a probe
 * reads a key only where the tag matches, and growing hashes the keys again. A map is rebuilt at
 * twice its live keys when three quarters of its slots are used, so it is
 * between 3/8 and 3/4 full. */
#ifndef WSY_MAP_H
#define WSY_MAP_H

#include <stddef.h>

typedef struct map_slot {
  char *key; /* valid where the slot's tag says occupied */
  void *val;
} map_slot;

typedef const char *(*map_key_fn)(const void *val);

typedef struct map {
  union {
    map_slot *slots; /* key and value */
    void **vals;     /* keyed (map_init_keyed): the value alone */
  };
  unsigned char *tags;   /* a byte per slot, after the slots (map.c); NULL when keyed */
  size_t cap, len, used; /* used counts tombstones too */
  int borrowed;          /* keys are the caller's (map_init_borrowed, map_init_keyed) */
  map_key_fn key_of;     /* keyed: the key of a value */
} map;

void map_init(map *m);
/* A map that keeps the caller's keys instead of copies: for registries
 * whose key lives in the value (a session's token), saving a copy each. */
void map_init_borrowed(map *m);
/* A map whose values carry their keys (key_of(val)): see above. */
void map_init_keyed(map *m, map_key_fn key_of);
void map_free(map *m);                       /* frees keys (unless borrowed), not values */
void *map_get(const map *m, const char *key);
/* Sets key to val (replacing any value, which is returned; NULL when new). */
void *map_put(map *m, const char *key, void *val);
/* Removes key and returns its value, or NULL when absent. */
void *map_del(map *m, const char *key);
/* Removes key only if it maps to val (one probe); 1 when removed. */
int map_del_if(map *m, const char *key, const void *val);
static inline size_t map_len(const map *m) { return m->len; }
/* Iteration: for (size_t i = 0; map_next(m, &i, &k, &v);) ... (no changes meanwhile) */
int map_next(const map *m, size_t *i, const char **key, void **val);

#endif
