/* yjs_int.h -- internals shared by the files of src/yjs: the lazy struct
 * reader, the struct writer and the delete set (yupdate.h has the format). */
#ifndef WSY_YJS_INT_H
#define WSY_YJS_INT_H

#include "yupdate.h"

/* An error sentence for the caller: the first failure wins. */
typedef struct yerr {
  char *buf;
  size_t len;
  int set;
} yerr;
int yfail(yerr *e, int code, const char *fmt, ...) WSY_PRINTF(3, 4);

enum { YS_GC = 0, YS_ITEM = 1, YS_SKIP = 10 };

/* One struct, its bytes borrowed from the update it was read from. A slice
 * of it is the same struct with clock and off advanced, len reduced, and
 * an origin at its left neighbour's last clock (what Yjs's slicing does). */
typedef struct ystruct {
  uint64_t client, clock, len; /* len in clocks */
  uint64_t off;                /* units cut from the front of the content */
  uint64_t full;               /* the content's length as read */
  uint8_t kind;                /* YS_GC, YS_ITEM, YS_SKIP */
  uint8_t ref;                 /* items: content ref 1..9 */
  uint8_t has_origin, has_rorigin, has_sub;
  uint8_t parent;              /* 0: none written, 1: root type name, 2: parent ID */
  uint64_t oc, ok, rc, rk, pc, pk;
  const uint8_t *pname, *sub, *content;
  size_t pname_n, sub_n, content_n;
} ystruct;

/* Cuts the first `diff` clocks off s (0 < diff < s->len). */
void ystruct_slice(ystruct *s, uint64_t diff);

/* Appends the content of a String, JSON or Any item s without its length
 * prefix: UTF-8 bytes, or the encoded elements. */
int ystruct_put_body(ybuf *b, const ystruct *s) WSY_WUR;

/* Reads the structs of one update lazily, then its delete set. */
typedef struct yreader {
  lib0_rd rd;
  uint64_t clients_left, structs_left, client, clock;
  ystruct cur;
  int has_cur;      /* cur holds a struct; 0 once the structs are done */
  int filter_skips; /* never yield Skip structs (merge does not want them) */
  size_t index;     /* which input, for messages */
  uint64_t stamp;   /* merge: when cur last changed (ties go to the latest) */
  yerr *err;
} yreader;
int yreader_init(yreader *r, const uint8_t *u, size_t n, size_t index, int filter_skips,
                 yerr *err);
int yreader_next(yreader *r); /* 0 (has_cur says whether there is one) or WSY_INVAL */

/* Writes structs the way Yjs's LazyStructWriter does: a block per run of
 * one client, prefixed at the end by the block count. */
typedef struct yblock {
  uint64_t written;
  size_t start;
} yblock;
typedef struct ywriter {
  ybuf body;
  yblock *blocks;
  size_t nblocks, cap;
  uint64_t client;
} ywriter;
/* Writes s from `offset` clocks on (0 <= offset < s->len). */
int ywriter_put(ywriter *w, const ystruct *s, uint64_t offset) WSY_WUR;
/* out = #blocks, the blocks; the writer is emptied. */
int ywriter_finish(ywriter *w, ybuf *out) WSY_WUR;
void ywriter_free(ywriter *w);

/* Delete set ranges of any number of updates, in reading order. */
typedef struct ydel {
  uint64_t client, clock, len;
  size_t seq;
} ydel;
typedef struct ydelset {
  ydel *v;
  size_t n, cap;
} ydelset;
int yds_read(lib0_rd *rd, ydelset *ds, size_t index, yerr *err) WSY_WUR;
/* Groups by client (descending); with merge, sorts each client's ranges by
 * clock and joins overlapping or touching ones (Yjs's sortAndMergeDeleteSet),
 * else keeps reading order (what reading and writing a delete set does). */
void yds_normalize(ydelset *ds, int merge);
int yds_write(const ydelset *ds, ybuf *out) WSY_WUR;
void yds_free(ydelset *ds);

#endif
