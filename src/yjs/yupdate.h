/* yupdate.h -- the Yjs update format v1 (what Y.encodeStateAsUpdate and
 * the y-protocols sync messages carry), read and written without a Y.Doc:
 * validate, merge, state vector, diff against a state vector, compaction.
 * The results are those of yjs 13.6's Y.mergeUpdates, Y.diffUpdate and
 * Y.encodeStateVectorFromUpdate (tests/e2e/yjs-oracle.test.mjs checks it,
 * byte for byte where Yjs is deterministic).
 *
 * FORMAT (lib0 encoding, lib0.h):
 *   update   = #clients, then per client: #structs, client, first clock,
 *              structs; then the delete set.
 *   struct   = info byte: 0 GC(len) | 10 Skip(len) | item, where an item's
 *              low 5 bits are its content ref (1..9) and bit 8 = origin ID,
 *              bit 7 = right origin ID, and when neither is set the parent
 *              follows (varuint 1 + root type name | 0 + parent item ID)
 *              and, with bit 6, the map key (parentSub).
 *   content  = 1 Deleted(len) 2 JSON(n strings) 3 Binary 4 String (length in
 *              UTF-16 units) 5 Embed(JSON text) 6 Format(key, JSON text)
 *              7 Type(type ref, + name for XmlElement(3), key for XmlHook(5))
 *              8 Any(n lib0 any values) 9 Doc(guid, any options).
 *   deletes  = #clients, per client: client, #ranges, (clock, len) ranges.
 *   state vector = #clients, (client, clock) pairs.
 * Clocks count items' lengths; a string item of n UTF-16 units takes n clocks.
 *
 * STRICTER THAN YJS, deliberately: input is WSY_INVAL when it is truncated,
 * has bytes after the delete set, a struct whose clock range passes 2^53,
 * an unknown info or content ref, an "any" value nested past 64, or a string
 * that is not valid UTF-8 (Yjs would decode such bytes to U+FFFD; nothing
 * Yjs writes contains them). Each function reads its whole input, so it
 * validates it too, and on any error leaves *out empty (len 0): a result
 * is never built from part of an update. JSON and Any content is checked
 * for its framing, not parsed: it is copied as it came.
 *
 * BOUNDS: lengths and counts are checked against the remaining input before
 * use (a count of structs can't exceed the bytes left), and nothing is
 * allocated from a length prefix: structs are views into the input. Memory
 * is the output, the delete set ranges (32 bytes each), and for a merge a
 * reader per input (about 240 bytes each: merging 259,778 one-edit updates
 * of 3.7 MB takes some 62 MB); outputs above LIB0_MAX_OUTPUT fail with
 * WSY_TOO_LARGE. Time is linear in the input, n log n in the number of
 * updates merged and of delete ranges.
 *
 * SURROGATES: slicing a string item between the two UTF-16 halves of a
 * character outside the BMP (possible only when another update split it)
 * writes the right half as U+FFFD, as Yjs does.
 *
 * Errors: 0 or a negative wsy_err (WSY_INVAL for malformed input, WSY_NOMEM,
 * WSY_TOO_LARGE); err (may be NULL, errlen bytes) then holds a short
 * sentence naming what was wrong and where (byte offset, update index).
 * Output buffers are owned by the caller: pass a zeroed ybuf (or one to
 * reuse: it is overwritten, not appended to), release with ybuf_free().
 * No state outside the arguments: any thread. Uses src/common only. */
#ifndef WSY_YUPDATE_H
#define WSY_YUPDATE_H

#include <stddef.h>
#include <stdint.h>

#include "lib0.h"

/* The whole update parses (structs, contents, delete set, nothing after). */
int yupdate_validate(const uint8_t *u, size_t n, char *err, size_t errlen) WSY_WUR;

/* Y.mergeUpdates: one update holding every struct of the inputs and the
 * union of their delete sets, without integrating (no Y.Doc): per client
 * the structs in clock order, overlaps sliced away, gaps filled with Skip
 * structs, neighbouring GC or Skip structs joined. Like Yjs, one input is
 * returned as it is (copied) without being rewritten. */
int yupdate_merge(const uint8_t *const *ups, const size_t *lens, size_t count, ybuf *out,
                  char *err, size_t errlen) WSY_WUR;

/* Y.encodeStateVectorFromUpdate: per client, the clock after the run of
 * structs that starts at clock 0 with no Skip (a client whose structs start
 * later, or a run stopped by a Skip, counts only up to there). */
int yupdate_state_vector(const uint8_t *u, size_t n, ybuf *sv, char *err, size_t errlen) WSY_WUR;

/* Y.diffUpdate: the structs of u the state vector sv does not cover (the
 * first one of a client sliced at sv's clock), and u's whole delete set. */
int yupdate_diff(const uint8_t *u, size_t n, const uint8_t *sv, size_t svn, ybuf *out,
                 char *err, size_t errlen) WSY_WUR;

/* Compaction of one update (merge a log first, or use yupdate_compact_many):
 *   GC'D: every item whose whole clock range is inside the delete set keeps
 *     its struct (ID, origins, parent, map key: other items still name them
 *     as origins) but its content becomes Deleted(len), what Yjs's garbage
 *     collector does to a deleted item. An item partly inside the delete
 *     set is split at the delete set's edges first (as Yjs splits items)
 *     and its deleted parts become Deleted(len).
 *   JOINED: an item and its continuation (same client, next clock, origin
 *     = the first one's last ID, same right origin, both Deleted, String,
 *     JSON or Any) become one item, as Yjs's Item.mergeWith joins them;
 *     neighbouring GC structs of a client become one.
 *   KEPT: content of items not deleted, GC and Skip structs, the delete set
 *     (unchanged: it still says what is deleted). Children of a deleted
 *     type are deleted with it, so their content goes too; their structs
 *     stay items (Yjs would make them GC structs: the same document).
 * Applying the result to a fresh Y.Doc gives the same content as applying
 * the input, and the same state vector. */
int yupdate_compact(const uint8_t *u, size_t n, ybuf *out, char *err, size_t errlen) WSY_WUR;

/* yupdate_merge then yupdate_compact, in one call. */
int yupdate_compact_many(const uint8_t *const *ups, const size_t *lens, size_t count, ybuf *out,
                         char *err, size_t errlen) WSY_WUR;

/* Decodes a state vector into (client, clock) pairs, *pairs allocated with
 * wsy_try_realloc (caller frees with wsy_free), sorted by client. */
int yupdate_sv_decode(const uint8_t *sv, size_t n, uint64_t **pairs, size_t *count, char *err,
                      size_t errlen) WSY_WUR;

#endif
