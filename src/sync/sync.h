/* sync.h -- the document model and its conflict policies, as pure functions:
 * (document, op) -> result. No I/O, no clock.
 *
 * A document maps item ids to items {fields: JSON object, version}. Ops:
 *   set  fields of one item, creating it; a null value deletes a field,
 *        any other value replaces the field as a whole (LWW per field in
 *        server order, since ops are applied in seq order);
 *   del  removes an existing item.
 * Either may carry `base`: 0 = the item must not exist, n = its version must
 * be n; otherwise the op fails with "conflict" and changes nothing.
 * Error results are the wire error codes of docs/PROTOCOL.md 11.2. */
#ifndef WSY_SYNC_H
#define WSY_SYNC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/jsonw.h"
#include "../common/map.h"

typedef struct sync_limits {
  size_t max_fields;      /* members per set */
  size_t max_field_size;  /* one field value, compact JSON */
  size_t max_item_size;   /* all fields of an item, compact JSON */
  int max_depth;          /* nesting of a field value */
  size_t max_room_items;
  size_t max_text_size;   /* a field written by text ops, compact JSON (PROTOCOL.md 5.7) */
} sync_limits;

/* An item is one incarnation: a del ends it, and a later set creates a new
 * one whose gen is the seq of the entry that created it. Revisions of text
 * fields (PROTOCOL.md 5.7) start at gen, so the revisions of an incarnation
 * are all >= its gen and all below the gen of any later incarnation (a
 * revision grows by one per entry that changes the field, so it is never
 * above the seq of that entry): a text op whose rev is below gen was made
 * for an incarnation that is gone. Stored inside the revs JSON under the
 * member "" (never a field name): {"":gen,"field":rev,...}. Items stored
 * before gens existed load with gen 0, which makes them behave as before. */
/* Text fields being edited are kept in ropes (rope.h) beside the JSON: a
 * text op edits the rope in place and marks the field stale; the JSON value
 * is rebuilt from the rope only when someone reads the item
 * (doc_item_fresh), not once per op. */
typedef struct doc_text doc_text;

typedef struct doc_item {
  json_t *fields;    /* stale for live text fields until doc_item_fresh */
  json_t *revs;      /* text field -> revision (PROTOCOL.md 5.7), or NULL */
  uint64_t version;
  uint64_t gen;      /* seq of the entry that created this incarnation; 0: unknown */
  doc_text *live;    /* text fields held in ropes, or NULL */
  /* Text ops applied since the item's stored row was last written: the
   * store holds them as ops (store.h: texts) until a snapshot of the item
   * (doc_item_snapshot_due) replaces them. */
  size_t text_ops, text_bytes;
  unsigned mark;     /* doc_load_changed: noted in the reload of this mark */
} doc_item;

typedef struct doc_frozen doc_frozen;

typedef struct doc {
  map items;          /* item id -> doc_item* */
  doc_frozen *frozen; /* freezes still reading the items in place */
  unsigned mark;      /* the reload of what changed in progress (doc_load_changed) */
} doc;

enum { SYNC_SET = 1, SYNC_DEL = 2 };

typedef struct sync_op {
  int kind;
  const char *item;  /* borrowed from the request's JSON */
  json_t *fields;    /* borrowed; set only */
  int has_base;
  uint64_t base;
} sync_op;

/* A rejection: code (static string), a message, the offending member path. */
typedef struct sync_err {
  const char *code;
  char message[160];
  const char *field;
} sync_err;

void doc_init(doc *d);
void doc_free(doc *d);
size_t doc_len(const doc *d);
const doc_item *doc_get(const doc *d, const char *id);
/* Loads a stored item (fields and revs, NULL for none, as JSON text; revs
 * may hold the gen under ""). WSY_OK or WSY_INVAL. */
int doc_load(doc *d, const char *id, const char *fields_json, size_t len, const char *revs_json,
             uint64_t version);
/* A reload of only what changed (a replica read again with
 * STORE_FETCH_CHANGES): doc_changes_begin, then doc_load_changed for every
 * item the store holds (fields_json NULL: unchanged, kept; else loaded as
 * doc_load), then doc_changes_end drops the items the store no longer
 * holds. doc_load_changed returns WSY_NOT_FOUND for an item said unchanged
 * that memory does not have: the document is not the store's, read it
 * whole. */
void doc_changes_begin(doc *d);
int doc_load_changed(doc *d, const char *id, const char *fields_json, size_t len, const char *revs_json,
                     uint64_t version);
void doc_changes_end(doc *d);
/* Brings it->fields up to date with the item's live text fields. Logically
 * const: the item's content does not change, only its JSON form. Every
 * reader of it->fields calls it first (doc_item_json does). */
void doc_item_fresh(const doc_item *it);
/* 1 when enough text ops went to the store as ops since the item's row was
 * written that the row should be written again (a snapshot): after
 * DOC_SNAPSHOT_OPS ops, or when the ops' bytes pass the size of the item's
 * live text by DOC_SNAPSHOT_SLACK, so the stored ops never take much more
 * room than the text and replaying them on load stays cheap, while a
 * snapshot's cost spread over the ops stays small (a text typed from
 * scratch grows as fast as its ops: the slack keeps it from a snapshot per
 * op). */
#define DOC_SNAPSHOT_OPS 1000
#define DOC_SNAPSHOT_SLACK (64 * 1024)
int doc_item_snapshot_due(const doc_item *it);
/* The item's fields as compact JSON (malloc'd), for a snapshot row; resets
 * the count of ops since the last one. */
char *doc_item_snapshot(doc_item *it);
/* Replays a stored text op (store.h: texts) on load: applies ops_json to
 * item's field when rev is above the field's revision (older rows belong
 * to a text the item row already holds), which becomes rev; the version
 * becomes seq when greater. A missing item is skipped. WSY_OK, or WSY_INVAL
 * for an op that does not parse or apply. */
int doc_text_load(doc *d, const char *item, const char *field, uint64_t rev, uint64_t seq,
                  const char *ops_json, size_t len);
/* {"version":v,"fields":{...}[,"revs":{...}]} of an item (new reference),
 * or json null. The gen is not on the wire (PROTOCOL.md 5.7). */
json_t *doc_item_json(const doc_item *it);
/* What the store keeps as the item's revs: its text field revisions and
 * its gen under "", as compact JSON (malloc'd); NULL when it has neither. */
char *doc_item_revs_json(const doc_item *it);
/* Splits stored revs JSON (a new reference to an object, consumed) into
 * the text field revisions (NULL when none) and the gen (0 when none). */
json_t *doc_revs_split(json_t *stored, uint64_t *gen);
/* The revision of a text field: the item's gen, plus the text ops applied
 * to the field and the sets that reset it since; gen when it never held
 * text in this incarnation (0 for a missing item). */
uint64_t doc_text_rev(const doc *d, const char *item, const char *field);
/* {"items":{id:{version,fields}}} (new reference). */
json_t *doc_snapshot(const doc *d);

/* A document frozen for a snapshot sent in parts (stream.h), without
 * building its JSON and without a pass over its items: freezing lists the
 * (id, item) pairs of the map's slots, and the parts are written from the
 * items themselves. An item about to change (a write, a delete, a text edit
 * in its rope, a load over it) is first saved in each freeze of its
 * document as it was (its id, version, a reference to its fields, which
 * are replaced and never changed in place, and a copy of its text
 * revisions, which are), and the parts write the saved state instead; so a
 * freeze always reads the state it was taken at, and a write costs one
 * saved item per freeze, not a copy of the document. doc_free copies what
 * each freeze has not written yet. */
typedef struct doc_frozen_item {
  char *id;
  uint64_t version;
  json_t *fields, *revs; /* revs NULL when none */
} doc_frozen_item;
struct doc_frozen {
  doc_frozen *next;  /* in d->frozen */
  doc *d;            /* read in place; NULL once freed (then all is in v) */
  map_slot *live;    /* (id, item) of each item at the freeze; NULL once copied */
  map saved;         /* "%p" of an item -> doc_frozen_item*: items changed since */
  doc_frozen_item *v; /* after doc_free: the items not written yet, from copied_from on */
  size_t n, copied_from;
};
/* A freeze of d as it is now (wsy_free'd by doc_frozen_free). */
doc_frozen *doc_freeze(doc *d);
void doc_frozen_free(doc_frozen *f);
/* Writes items from `from` on as members of a JSON object, "id":{"version",
 * "fields"[,"revs"]} separated by commas (no braces), into w until w has
 * grown by at least `bytes` (at least one item) or the items end: returns
 * the index of the next item (f->n at the end). Items before `from` may not
 * be asked for again. */
size_t doc_frozen_write(doc_frozen *f, size_t from, jw *w, size_t bytes);

/* A number the JSON parser could not hold (an integer beyond int64, a real
 * beyond a double) in a decoded message: an object whose one member is
 * named U+0000, which no parsed JSON text can produce (proto_parse). It
 * stands in for the number so that a member nobody reads can be ignored;
 * wherever it is read it is refused: it is not an integer nor a string,
 * and sync_value_ok rejects it. New reference. */
json_t *sync_number_marker(void);
int sync_is_number_marker(json_t *v);
/* 1 when a marker is anywhere in v. */
int sync_has_number_marker(json_t *v);

int sync_item_id_valid(const char *id);
/* Bytes of v as compact JSON, counted without building the text. */
size_t sync_encoded_size(json_t *v);
/* A JSON value within max_depth levels, with integers within 2^53-1 and
 * no number marker. */
int sync_value_ok(json_t *v, int max_depth);
/* Reads an op object from a request. NULL on success, else the error. */
int sync_op_parse(json_t *op, const sync_limits *lim, sync_op *out, sync_err *err);
/* Checks op against d and, when it passes, applies it with version seq.
 * On success returns 0 and sets *fields_json to the item's fields after the
 * op (malloc'd compact JSON; NULL after a del). On failure returns -1, fills
 * err (conflict: err->field NULL, see doc_get for the current item) and d is
 * unchanged. */
int sync_apply(doc *d, const sync_op *op, uint64_t seq, const sync_limits *lim, char **fields_json,
               sync_err *err);
/* The op as broadcast, appended to w: {"kind","item"[,"fields"]} without base. */
void sync_op_write(jw *w, const sync_op *op);

/* ---- batch: 1..max_batch set/del sub-ops applied atomically, one seq ---- */

/* The item states a batch left, one per distinct item touched. */
typedef struct sync_change {
  const char *item;   /* borrowed from the request */
  char *fields_json;  /* malloc'd; NULL when the item was deleted */
  char *revs_json;    /* malloc'd; NULL when the item has no text fields */
} sync_change;

/* Parses {"kind":"batch","ops":[...]} into subs (malloc'd array, *n long;
 * strings borrowed from op). On failure err is set and *index names the
 * failing sub-op (or SIZE_MAX for the batch itself). */
int sync_batch_parse(json_t *op, const sync_limits *lim, size_t max_batch, sync_op **subs, size_t *n,
                     sync_err *err, size_t *index);
/* Applies subs in order, each seeing the ones before; all or nothing. On
 * success *changes (malloc'd, *nchanges long; free with
 * sync_changes_free) lists the final state of every item touched. */
int sync_batch_apply(doc *d, const sync_op *subs, size_t n, uint64_t seq, const sync_limits *lim,
                     sync_change **changes, size_t *nchanges, sync_err *err, size_t *index);
void sync_changes_free(sync_change *c, size_t n);
/* The batch as broadcast: {"kind":"batch","ops":[...]}, each sub-op as sync_op_write. */
void sync_batch_write(jw *w, const sync_op *subs, size_t n);

/* ---- text ops (PROTOCOL.md 5.7; the OT itself is text.h) ---------------- */

typedef struct text_op text_op;

typedef struct sync_text {
  const char *item;  /* borrowed from the request */
  const char *field; /* borrowed */
  uint64_t rev;      /* the revision the op was made against */
  text_op *op;       /* owned: text_op_free */
} sync_text;

/* Reads {"kind":"text","item","field","rev","ops"}; 0, or -1 with err. */
int sync_text_parse(json_t *op, const sync_limits *lim, sync_text *out, sync_err *err);
/* Applies op (already transformed to the field's current revision) to
 * t->field of t->item, creating the item (with gen seq) or the field ("")
 * when missing:
 * the text changes in place (a rope), the revision grows by one, the
 * version becomes seq. The field is limited to lim->max_text_size and does
 * not count against max_item_size. Nothing is serialized: the store gets
 * the op (and, when doc_item_snapshot_due, a snapshot). -1 with err
 * (invalid_field: not a string or the op reaches past the end; too_large)
 * leaves d unchanged. */
int sync_text_apply(doc *d, const sync_text *t, const text_op *op, uint64_t seq, const sync_limits *lim,
                    sync_err *err);

#endif
