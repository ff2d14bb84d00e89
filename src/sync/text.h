/* text.h -- operational transformation of plain text over Unicode code
 * points: the op type of docs/PROTOCOL.md 5.7, which is that of the npm
 * package ot-text-unicode (4.x). Pure functions: no I/O, no globals, no clock.
 *
 * An op is a list of components walked over the document from its start:
 *   retain n   keep n code points              wire: a positive integer n
 *   insert s   insert the UTF-8 string s       wire: a non-empty string
 *   delete n   remove n code points            wire: {"d":n}
 * Code points past the last component are kept: an op may cover less than
 * the whole text, never more (text_apply fails then).
 *
 * Every text_op this module hands out is normalized as ot-text-unicode's
 * type.normalize() would leave it: adjacent components of one kind merged, no
 * trailing retain, no empty component. The relative order of an insert and a
 * delete at the same place is kept as given (["a",{"d":1}] and [{"d":1},"a"]
 * are both normal and differ under transform: see text_transform).
 * For normalized inputs, text_transform() and text_compose() return exactly
 * what type.transform() and type.compose() return, component for component.
 *
 * Costs: every call is linear in the sizes of its arguments (components and
 * inserted bytes, plus the document's bytes for text_apply). Lengths are kept
 * per component, so no string is rescanned from its start.
 *
 * Ownership: text_op_from_json(), text_transform() and text_compose() return
 * a new op owned by the caller, released with text_op_free(). text_apply()
 * returns a new string released with wsy_free(). Arguments are borrowed. */
#ifndef WSY_SYNC_TEXT_H
#define WSY_SYNC_TEXT_H

#include <jansson.h>
#include <stddef.h>

#include "../common/wsy.h"

/* Retain and delete counts, and the code points one op consumes in all, are
 * at most 2^53-1 (the integers a JavaScript peer represents exactly). */
#define TEXT_MAX_COUNT 9007199254740991ULL

typedef struct text_limits {
  size_t max_components;    /* members of the wire array, before normalizing */
  size_t max_insert_bytes;  /* bytes of all inserted strings together */
} text_limits;

/* Which op's insert goes first when both insert at the same position. */
enum { TEXT_LEFT = 0, TEXT_RIGHT = 1 };

typedef struct text_op text_op;

/* Parses and validates a wire op, then normalizes it. On success returns
 * WSY_OK and sets *out. On failure *out is NULL, err (when errlen > 0) holds
 * a message naming the offending component, e.g. "ops[2]: a retain must be
 * a positive integer", and the result is
 *   WSY_INVAL      not an array, or a component of the wrong shape: a number
 *                  that is not a positive integer (reals such as 5.0 too), an
 *                  empty string, an object other than {"d":n}, null, a bool;
 *                  or a count past TEXT_MAX_COUNT;
 *   WSY_BAD_UTF8   an inserted string that is not UTF-8 (jansson guarantees it
 *                  for parsed text; json_stringn_nocheck() does not);
 *   WSY_TOO_LARGE  more than lim->max_components members or more than
 *                  lim->max_insert_bytes inserted bytes.
 * lim NULL means no limit but TEXT_MAX_COUNT.
 * Unlike ot-text-unicode's checkOp, adjacent and trailing retains are
 * accepted (and normalized away), as PROTOCOL.md 5.7 says; stricter than it,
 * {"d":"text"} (its invertible delete) and non-integers are rejected. */
int text_op_from_json(json_t *ops, const text_limits *lim, text_op **out, char *err,
                      size_t errlen) WSY_WUR;

/* The op in wire form (a new reference). An empty op is []. */
json_t *text_op_to_json(const text_op *op);

/* An op that changes nothing (the identity of compose), owned by the caller. */
text_op *text_op_new(void);
text_op *text_op_clone(const text_op *op);
void text_op_free(text_op *op); /* NULL is fine */

/* Applies op to doc (len bytes of UTF-8, NUL not required). On success
 * returns WSY_OK, *out is the new text (NUL-terminated, owned by the caller,
 * wsy_free) and *outlen its bytes. On failure *out is NULL and:
 *   WSY_INVAL     the op reaches beyond the end of doc (its retains and
 *                 deletes consume more code points than doc has);
 *   WSY_BAD_UTF8  doc is not UTF-8.
 * ot-text-unicode's apply throws for a retain past the end but silently
 * clips a delete past the end; this module fails on both. */
int text_apply(const char *doc, size_t len, const text_op *op, char **out, size_t *outlen,
               char *err, size_t errlen) WSY_WUR;

/* op transformed to apply after other, both made against the same text.
 * side says whose insert goes first at one position: TEXT_LEFT op's,
 * TEXT_RIGHT other's. As in ot-text-unicode, "at one position" means that
 * op's insert is its next component when other inserts: an op that deletes
 * and then inserts at position p ([p,{"d":k},"x"]) yields to an insert at p
 * even on the left. Never fails: ops are implicitly padded with retains.
 * Convergence (TP1), for a and b valid on doc:
 *   apply(apply(doc, a), transform(b, a, RIGHT))
 *     == apply(apply(doc, b), transform(a, b, LEFT)).
 * The server, whose accepted ops were sequenced first and win ties, uses
 *   client_op = text_transform(client_op, accepted, TEXT_RIGHT). */
text_op *text_transform(const text_op *op, const text_op *other, int side);

/* One op with the effect of a then b (b made against a's result). Never
 * fails: past its last component an op retains, so any two ops compose.
 * apply(apply(doc, a), b) == apply(doc, compose(a, b)) when the left side
 * succeeds. */
text_op *text_compose(const text_op *a, const text_op *b);

/* Component i (< text_op_count) of a normalized op, for walking it over
 * another representation of the text (rope.h); returns TEXT_RETAIN,
 * TEXT_INSERT or TEXT_DELETE, sets *n to its code points and, for an
 * insert, *s and *len to its UTF-8 bytes (borrowed from op). */
enum { TEXT_RETAIN = 1, TEXT_INSERT = 2, TEXT_DELETE = 3 };
int text_op_comp(const text_op *op, size_t i, size_t *n, const char **s, size_t *len);
/* Bytes of all inserted strings together. */
size_t text_op_insert_bytes(const text_op *op);

/* Code points the op consumes (retains + deletes): the shortest text, in
 * code points, it applies to. */
size_t text_op_base_len(const text_op *op);
/* Components after normalization; 0 for an op that changes nothing. */
size_t text_op_count(const text_op *op);

/* Code points of s (len bytes). For valid UTF-8 only: it counts the bytes
 * that are not continuation bytes. */
size_t text_cp_len(const char *s, size_t len);

#endif
