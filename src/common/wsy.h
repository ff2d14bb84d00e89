/* wsy.h -- shared vocabulary of every wsync module: the error enum, the
 * allocator wrapper, byte buffers and small helpers.
 *
 * Errors: 0 is success, every failure is a negative wsy_err built from the one
 * WSY_ERRORS table; wsy_strerror() and wsy_errname() come from the same table.
 * Allocation: wsy_malloc() and friends abort on exhaustion of small fixed
 * sizes (the house rule); sizes a peer controls are capped before they are
 * asked for, and the caps fail with WSY_TOO_LARGE, never with an abort. */
#ifndef WSY_H
#define WSY_H

#include <stddef.h>
#include <stdint.h>

#define WSYNC_VERSION "0.1.0"

#define WSY_ERRORS(X)                                   \
  X(OK, 0, "ok")                                        \
  X(AGAIN, -1, "would block")                           \
  X(NOMEM, -2, "out of memory")                         \
  X(TOO_LARGE, -3, "too large")                         \
  X(PROTO, -4, "protocol error")                        \
  X(SLOW, -5, "slow consumer")                          \
  X(BAD_UTF8, -6, "invalid UTF-8")                      \
  X(INVAL, -7, "invalid argument")                      \
  X(IO, -8, "input/output error")                       \
  X(CLOSED, -9, "connection closed")                    \
  X(NOT_FOUND, -10, "not found")                        \
  X(LIMIT, -11, "limit reached")                       \
  X(STALE, -12, "stale: another node committed first")  \
  X(DUPLICATE, -13, "already recorded")

#define WSY_ENUM(name, val, text) WSY_##name = val,
typedef enum { WSY_ERRORS(WSY_ENUM) } wsy_err;
#undef WSY_ENUM

const char *wsy_strerror(int err);
const char *wsy_errname(int err);

#if defined(__GNUC__)
#define WSY_WUR __attribute__((warn_unused_result))
#define WSY_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define WSY_WUR
#define WSY_PRINTF(a, b)
#endif

/* s[0..len) is 1..max bytes of A-Z a-z 0-9 and the characters of extra:
 * the shape of names on the wire (rooms, users, devices, cids, item ids),
 * each with its own max and extra. */
int wsy_charset_ok(const char *s, size_t len, size_t max, const char *extra);

#define WSY_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* FNV-1a (64 bits) over the bytes of s, going on from h:
 * wsy_fnv1a(WSY_FNV1A_BASIS, s) is the FNV-1a hash of s, and a hash goes
 * on over more strings and separator bytes (wsy_fnv1a_byte). Callers that
 * only need a spread in memory start from a seed of their own (map.c,
 * cidf.c, pg_batch.c); opfwd.c's result picks a room's owner node and must
 * be the same on every node and version. */
#define WSY_FNV1A_BASIS 14695981039346656037ull
#define WSY_FNV1A_PRIME 1099511628211ull
static inline uint64_t wsy_fnv1a_byte(uint64_t h, unsigned char c) { return (h ^ c) * WSY_FNV1A_PRIME; }
static inline uint64_t wsy_fnv1a(uint64_t h, const char *s) {
  for (; *s; s++) h = wsy_fnv1a_byte(h, (unsigned char)*s);
  return h;
}

/* The length snprintf(out, size, ...) actually wrote, from its result n:
 * 0 on an encoding error, size - 1 when the text was cut. Use it wherever a
 * snprintf result becomes a copy length. */
static inline size_t wsy_snlen(int n, size_t size) {
  if (n < 0 || size == 0) return 0;
  return (size_t)n < size ? (size_t)n : size - 1;
}
#define wsy_container_of(ptr, type, member) \
  ((type *)((char *)(ptr) - offsetof(type, member)))

/* Abort with a message when a small allocation fails: callers never see NULL
 * (the house rule for fixed, small sizes). */
void *wsy_malloc(size_t n);
void *wsy_calloc(size_t n, size_t size);
void *wsy_realloc(void *p, size_t n);
char *wsy_strndup(const char *s, size_t n);
void wsy_free(void *p);
/* For blocks that come and go in bursts (a connection's write queue while a
 * presence window or a fan-out is being written): they are kept apart from
 * long-lived blocks of the same size, so that a burst freed leaves whole
 * pages free rather than pages half-used by blocks allocated between its
 * own. With mimalloc (release builds) a heap of the calling thread's own;
 * elsewhere plain malloc. Freed with wsy_free, from any thread. */
void *wsy_malloc_apart(size_t n);

/* Fallible allocation, for sizes a peer controls (buffers that grow with
 * what it sends): NULL on failure, for the caller to turn into WSY_NOMEM
 * and a clean error. */
void *wsy_try_realloc(void *p, size_t n);
/* The same for jansson, installed with json_set_alloc_funcs() by whoever
 * wants JSON built from peer input to fail cleanly (tests do). */
void *wsy_try_malloc(size_t n);

#ifdef WSY_ALLOC_TESTING
/* Test builds only: the nth fallible allocation from now fails (1: the
 * next one); 0 turns failures off. Returns how many fallible allocations
 * ran since the last call, so a test can tell when it has covered them all. */
unsigned long wsy_alloc_fail_at(unsigned long n);
#endif

/* A growable byte buffer with a hard cap fixed at init (curl's dynbuf idea).
 * Owned by whoever holds it; buf_free() releases the bytes. */
typedef struct {
  uint8_t *data;
  size_t len, cap, max;
} buf;

void buf_init(buf *b, size_t max);
/* Appends n bytes; WSY_TOO_LARGE past max, WSY_NOMEM when growing fails
 * (either way the buffer is left untouched). */
int buf_append(buf *b, const void *p, size_t n) WSY_WUR;
void buf_reset(buf *b); /* len = 0, keeps the memory */
void buf_free(buf *b);  /* releases memory; buffer may be reused after init */

/* Monotonic milliseconds. */
uint64_t wsy_now_ms(void);

#endif
