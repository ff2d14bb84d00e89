/* rope.h -- the text of one text field while it is being edited: UTF-8
 * kept in chunks of at most ROPE_CHUNK bytes, so a text op (text.h) edits it
 * in place. Pure data structure: no I/O, no globals, no clock.
 *
 * Why: a text op used to rebuild the whole field (apply into a new string,
 * then serialize the item), so its cost grew with the field (PERFORMANCE.md,
 * target 5). Here an op costs a walk of the chunk table (one small record per
 * ROPE_CHUNK bytes) plus a move of at most two chunks' bytes, whatever the
 * size of the text.
 *
 * Invariants: every chunk is non-empty and holds whole code points (a chunk
 * never ends inside a UTF-8 sequence); the rope's totals (bytes, code
 * points, JSON size) are the sums of its chunks'. The text is valid UTF-8
 * as long as it was built from valid UTF-8 and edited with valid ops
 * (text_op_from_json checks inserts).
 *
 * Ownership: rope_new() returns a rope owned by the caller (rope_free).
 * rope_dump() returns a string owned by the caller (wsy_free). */
#ifndef WSY_SYNC_ROPE_H
#define WSY_SYNC_ROPE_H

#include <stddef.h>

#include "../common/wsy.h"
#include "text.h"

#define ROPE_CHUNK 4096 /* bytes a chunk holds at most */

typedef struct rope rope;

/* A rope holding s (len bytes of valid UTF-8; not checked). */
rope *rope_new(const char *s, size_t len);
void rope_free(rope *r); /* NULL is fine */

size_t rope_bytes(const rope *r);
size_t rope_cps(const rope *r); /* code points */
/* Bytes of the text as a compact JSON string, quotes included (what
 * sync_encoded_size says of the same text in a json_t). */
size_t rope_json_size(const rope *r);

/* Applies op in place. On failure the rope is unchanged, err (errlen > 0)
 * says why, and the result is
 *   WSY_INVAL      the op reaches beyond the end of the text;
 *   WSY_TOO_LARGE  the text's JSON size would exceed max_json.
 * The check comes first (a pass that measures what the op deletes), the
 * edit after, so a refused op costs no edit and no undo. */
int rope_apply(rope *r, const text_op *op, size_t max_json, char *err, size_t errlen) WSY_WUR;

/* The whole text, NUL-terminated; *len (when not NULL) gets its bytes. */
char *rope_dump(const rope *r, size_t *len);

/* Chunks in use, for tests and statistics. */
size_t rope_chunks(const rope *r);

#endif
