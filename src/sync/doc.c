/* doc.c -- the document model: items, set/del with LWW per field, version
 * checks, limits. Pure: every function is a transformation of a doc. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/jsonw.h"
#include "../common/wsy.h"
#include "rope.h"
#include "sync.h"
#include "text.h"

#define MAX_SAFE_INT 9007199254740991LL

/* A text field of an item held in a rope (sync.h: doc_item). */
struct doc_text {
  doc_text *next;
  char *field;
  rope *r;
  int stale; /* the item's JSON value lags behind the rope */
};

void doc_init(doc *d) {
  map_init(&d->items);
  d->frozen = NULL;
}

static doc_text *live_find(const doc_item *it, const char *field) {
  for (doc_text *x = it->live; x; x = x->next)
    if (!strcmp(x->field, field)) return x;
  return NULL;
}

void doc_item_fresh(const doc_item *cit) {
  doc_item *it = (doc_item *)cit; /* the content is the same, only its JSON form catches up */
  json_t *fields = NULL;
  for (doc_text *x = it->live; x; x = x->next) {
    if (!x->stale) continue;
    /* Copy on write: replies built earlier may still hold the old object. */
    if (!fields) fields = json_copy(it->fields);
    size_t len;
    char *s = rope_dump(x->r, &len);
    json_object_set_new(fields, x->field, json_stringn_nocheck(s, len));
    wsy_free(s);
    x->stale = 0;
  }
  if (fields) {
    json_decref(it->fields);
    it->fields = fields;
  }
}

static void doc_changing(doc *d);
static void item_changing(doc *d, const char *id, doc_item *it);

/* Brings the JSON up to date and lets the ropes go: the item is about to be
 * changed as JSON (a set, a batch), which the ropes would not see. */
static void live_free(doc_item *it) {
  while (it->live) {
    doc_text *x = it->live;
    it->live = x->next;
    rope_free(x->r);
    wsy_free(x->field);
    wsy_free(x);
  }
}

static void live_drop(doc_item *it) {
  doc_item_fresh(it);
  live_free(it);
}

int doc_item_snapshot_due(const doc_item *it) {
  size_t text = 0;
  for (doc_text *x = it->live; x; x = x->next) text += rope_bytes(x->r);
  return it->text_ops >= DOC_SNAPSHOT_OPS || it->text_bytes > text + DOC_SNAPSHOT_SLACK;
}

char *doc_item_snapshot(doc_item *it) {
  doc_item_fresh(it);
  it->text_ops = it->text_bytes = 0;
  return jw_dumps(it->fields);
}

static void item_free(doc_item *it) {
  if (!it) return;
  live_free(it);
  json_decref(it->fields);
  json_decref(it->revs);
  wsy_free(it);
}

void doc_free(doc *d) {
  doc_changing(d);
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&d->items, &i, &k, &v);) item_free(v);
  map_free(&d->items);
}

size_t doc_len(const doc *d) { return map_len(&d->items); }
const doc_item *doc_get(const doc *d, const char *id) { return map_get(&d->items, id); }

int doc_load(doc *d, const char *id, const char *fields_json, size_t len, const char *revs_json,
             uint64_t version) {
  json_error_t e;
  json_t *f = json_loadb(fields_json, len, 0, &e);
  json_t *revs = revs_json ? json_loads(revs_json, 0, &e) : NULL;
  if (!f || !json_is_object(f) || (revs_json && !json_is_object(revs))) {
    json_decref(f);
    json_decref(revs);
    return WSY_INVAL;
  }
  doc_item *old = d->frozen ? map_get(&d->items, id) : NULL;
  if (old) item_changing(d, id, old);
  doc_item *it = wsy_calloc(1, sizeof *it);
  it->fields = f;
  it->revs = doc_revs_split(revs, &it->gen);
  it->version = version;
  item_free(map_put(&d->items, id, it));
  return WSY_OK;
}

void doc_changes_begin(doc *d) { d->mark++; }

int doc_load_changed(doc *d, const char *id, const char *fields_json, size_t len, const char *revs_json,
                     uint64_t version) {
  if (fields_json) {
    int rc = doc_load(d, id, fields_json, len, revs_json, version);
    if (rc == WSY_OK) ((doc_item *)map_get(&d->items, id))->mark = d->mark;
    return rc;
  }
  doc_item *it = map_get(&d->items, id);
  if (!it) return WSY_NOT_FOUND;
  it->mark = d->mark;
  return WSY_OK;
}

void doc_changes_end(doc *d) {
  size_t n = 0, cap = 0;
  char **gone = NULL;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&d->items, &i, &k, &v);) {
    if (((doc_item *)v)->mark == d->mark) continue;
    if (n == cap) gone = wsy_realloc(gone, (cap = cap ? cap * 2 : 8) * sizeof *gone);
    gone[n++] = wsy_strndup(k, strlen(k));
  }
  for (size_t i = 0; i < n; i++) {
    doc_item *it = map_get(&d->items, gone[i]);
    if (d->frozen) item_changing(d, gone[i], it);
    item_free(map_del(&d->items, gone[i]));
    wsy_free(gone[i]);
  }
  wsy_free(gone);
}

json_t *doc_item_json(const doc_item *it) {
  if (!it) return json_null();
  doc_item_fresh(it);
  json_t *j = json_pack("{s:I,s:O}", "version", (json_int_t)it->version, "fields", it->fields);
  /* A copy: revisions change in place, and a snapshot sent in parts
   * (stream.h) must keep those of its seq. */
  if (it->revs && json_object_size(it->revs)) json_object_set_new(j, "revs", json_copy(it->revs));
  return j;
}

char *doc_item_revs_json(const doc_item *it) {
  int has_revs = it && it->revs && json_object_size(it->revs);
  if (!it || (!has_revs && !it->gen)) return NULL;
  /* The revisions, then the generation under "" (no field has that name):
   * the bytes json_copy, json_object_set and jw_dumps gave, written once. */
  jw w = JW_INIT;
  jw_lit(&w, "{");
  int first = 1;
  const char *name;
  json_t *v;
  if (has_revs)
    json_object_foreach(it->revs, name, v) {
      if (!first) jw_lit(&w, ",");
      first = 0;
      jw_cstr(&w, name);
      jw_lit(&w, ":");
      jw_value(&w, v);
    }
  if (it->gen) {
    if (!first) jw_lit(&w, ",");
    jw_lit(&w, "\"\":");
    jw_int(&w, (int64_t)it->gen);
  }
  jw_lit(&w, "}");
  return jw_steal(&w);
}

json_t *doc_revs_split(json_t *stored, uint64_t *gen) {
  *gen = 0;
  if (!json_is_object(stored)) {
    json_decref(stored);
    return NULL;
  }
  json_t *g = json_object_get(stored, "");
  if (json_is_integer(g) && json_integer_value(g) > 0) *gen = (uint64_t)json_integer_value(g);
  json_object_del(stored, "");
  if (!json_object_size(stored)) {
    json_decref(stored);
    return NULL;
  }
  return stored;
}

uint64_t doc_text_rev(const doc *d, const char *item, const char *field) {
  const doc_item *it = doc_get(d, item);
  json_t *r = it && it->revs ? json_object_get(it->revs, field) : NULL;
  return r ? (uint64_t)json_integer_value(r) : it ? it->gen : 0;
}

/* A set that writes (or deletes) a text field resets it: one more revision,
 * so text ops made against the old text no longer apply (PROTOCOL.md 5.7). */
static void revs_bump(json_t *revs, const char *field) {
  json_t *r = json_object_get(revs, field);
  if (r) json_object_set_new(revs, field, json_integer(json_integer_value(r) + 1));
}

json_t *doc_snapshot(const doc *d) {
  json_t *items = json_object();
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&d->items, &i, &k, &v);) json_object_set_new(items, k, doc_item_json(v));
  return json_pack("{s:o}", "items", items);
}

doc_frozen *doc_freeze(doc *d) {
  doc_frozen *f = wsy_calloc(1, sizeof *f);
  f->live = doc_len(d) ? wsy_malloc(doc_len(d) * sizeof *f->live) : NULL;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&d->items, &i, &k, &v);) f->live[f->n++] = (map_slot){(char *)k, v};
  map_init(&f->saved);
  f->d = d;
  f->next = d->frozen;
  d->frozen = f;
  return f;
}

static void unlink_frozen(doc_frozen *f) {
  doc_frozen **pp = &f->d->frozen;
  while (*pp != f) pp = &(*pp)->next;
  *pp = f->next;
  f->d = NULL;
}

static void take(doc_frozen_item *x, const char *id, doc_item *it) {
  doc_item_fresh(it);
  x->id = wsy_strndup(id, strlen(id));
  x->version = it->version;
  x->fields = json_incref(it->fields);
  x->revs = it->revs && json_object_size(it->revs) ? json_copy(it->revs) : NULL;
}

static void drop(doc_frozen_item *x) {
  wsy_free(x->id);
  json_decref(x->fields);
  json_decref(x->revs);
}

/* An item's key in a freeze's saved map: its address, which stays unique
 * while the freeze lists it (a deleted item is saved before it is freed). */
static const char *addr_key(char *k, size_t cap, const doc_item *it) {
  /* Hex digits, low first, written by hand: snprintf("%p") was 5% of a
   * part's time once a written room had items saved (PERFORMANCE.md). */
  uintptr_t a = (uintptr_t)it;
  size_t n = 0;
  do {
    k[n++] = "0123456789abcdef"[a & 15];
    a >>= 4;
  } while (a && n + 1 < cap);
  k[n] = 0;
  return k;
}

/* The state of f's item i: saved, or the item itself (*saved NULL). */
static doc_frozen_item *saved_of(const doc_frozen *f, size_t i) {
  if (!f->saved.len) return NULL;
  char k[32];
  return map_get(&f->saved, addr_key(k, sizeof k, f->live[i].val));
}

/* Called before item `it` (id) of d changes or goes. */
static void item_changing(doc *d, const char *id, doc_item *it) {
  for (doc_frozen *f = d->frozen; f; f = f->next) {
    char k[32];
    if (map_get(&f->saved, addr_key(k, sizeof k, it))) continue; /* saved before */
    doc_frozen_item *x = wsy_malloc(sizeof *x);
    take(x, id, it);
    map_put(&f->saved, k, x);
  }
}

/* doc_free: copies what f has not written yet out of its document. */
static void copy_frozen(doc_frozen *f) {
  size_t from = f->copied_from;
  f->v = f->n > from ? wsy_malloc((f->n - from) * sizeof *f->v) : NULL;
  for (size_t i = from; i < f->n; i++) {
    doc_frozen_item *x = &f->v[i - from], *sv = saved_of(f, i);
    if (sv) *x = *sv, sv->id = NULL, sv->fields = sv->revs = NULL; /* moved */
    else take(x, f->live[i].key, f->live[i].val);
  }
  wsy_free(f->live);
  f->live = NULL;
  unlink_frozen(f);
}

static void doc_changing(doc *d) {
  while (d->frozen) copy_frozen(d->frozen);
}

void doc_frozen_free(doc_frozen *f) {
  if (!f) return;
  if (f->d) unlink_frozen(f);
  for (size_t i = 0; f->v && i < f->n - f->copied_from; i++) drop(&f->v[i]);
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&f->saved, &i, &k, &v);) {
    drop(v);
    wsy_free(v);
  }
  map_free(&f->saved);
  wsy_free(f->v);
  wsy_free(f->live);
  wsy_free(f);
}

static void write_item(jw *w, const char *id, uint64_t version, json_t *fields, json_t *revs) {
  jw_cstr(w, id);
  jw_lit(w, ":{\"version\":");
  jw_int(w, (int64_t)version);
  jw_lit(w, ",\"fields\":");
  jw_value(w, fields);
  if (revs && json_object_size(revs)) {
    jw_lit(w, ",\"revs\":");
    jw_value(w, revs);
  }
  jw_lit(w, "}");
}

size_t doc_frozen_write(doc_frozen *f, size_t from, jw *w, size_t bytes) {
  size_t start = w->len, i = from;
  for (; i < f->n && (i == from || w->len - start < bytes); i++) {
    if (i > from) jw_lit(w, ",");
    const doc_frozen_item *x = f->live ? saved_of(f, i) : &f->v[i - f->copied_from];
    if (x) {
      write_item(w, x->id, x->version, x->fields, x->revs);
    } else { /* unchanged since the freeze: the item itself */
      doc_item *it = f->live[i].val;
      doc_item_fresh(it);
      write_item(w, f->live[i].key, it->version, it->fields, it->revs);
    }
  }
  if (f->live) f->copied_from = i; /* doc_free copies from here on */
  return i;
}

json_t *sync_number_marker(void) {
  json_t *m = json_object();
  json_object_setn_new_nocheck(m, "", 1, json_null()); /* the name is one byte: U+0000 */
  return m;
}

int sync_is_number_marker(json_t *v) {
  if (!json_is_object(v) || json_object_size(v) != 1) return 0;
  void *it = json_object_iter(v);
  return json_object_iter_key_len(it) == 1 && json_object_iter_key(it)[0] == '\0';
}

int sync_has_number_marker(json_t *v) {
  if (sync_is_number_marker(v)) return 1;
  const char *k;
  json_t *x;
  size_t i;
  if (json_is_object(v)) {
    json_object_foreach(v, k, x) if (sync_has_number_marker(x)) return 1;
  } else if (json_is_array(v)) {
    json_array_foreach(v, i, x) if (sync_has_number_marker(x)) return 1;
  }
  return 0;
}

/* PROTOCOL.md 5.1: its own rule, not the room names', though alike today. */
int sync_item_id_valid(const char *id) { return wsy_charset_ok(id, strlen(id), 128, "._:@-"); }

static int fail(sync_err *err, const char *code, const char *field, const char *fmt, const char *arg) {
  err->code = code;
  err->field = field;
  snprintf(err->message, sizeof err->message, fmt, arg);
  return -1;
}

/* Within limits: nesting (a scalar is level 0, each enclosing array or
 * object adds one, so an empty container is level 1) and integer range. */
static int value_ok(json_t *v, int levels_left) {
  if (sync_is_number_marker(v)) return 0; /* a number out of any range */
  if (json_is_integer(v)) {
    json_int_t n = json_integer_value(v);
    return n <= MAX_SAFE_INT && n >= -MAX_SAFE_INT;
  }
  if (!json_is_object(v) && !json_is_array(v)) return 1;
  if (levels_left <= 0) return 0;
  if (json_is_object(v)) {
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) if (!value_ok(x, levels_left - 1)) return 0;
  } else {
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) if (!value_ok(x, levels_left - 1)) return 0;
  }
  return 1;
}

int sync_value_ok(json_t *v, int max_depth) { return value_ok(v, max_depth); }

size_t sync_encoded_size(json_t *v) { return jw_size(v); }

static int field_name_ok(const char *k) {
  size_t n = strlen(k);
  if (n == 0 || n > 128) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)k[i] < 0x20) return 0;
  return 1;
}

int sync_op_parse(json_t *op, const sync_limits *lim, sync_op *out, sync_err *err) {
  memset(out, 0, sizeof *out);
  if (!json_is_object(op) || sync_is_number_marker(op)) return fail(err, "bad_request", "op", "%s", "op must be an object");
  json_t *kind = json_object_get(op, "kind"), *item = json_object_get(op, "item");
  const char *k = json_string_value(kind);
  if (!k) return fail(err, "bad_request", "op.kind", "%s", "op.kind must be a string");
  if (!strcmp(k, "set")) out->kind = SYNC_SET;
  else if (!strcmp(k, "del")) out->kind = SYNC_DEL;
  else return fail(err, "bad_request", "op.kind", "op kind '%.64s' is not supported", k);
  if (!json_is_string(item)) return fail(err, "bad_request", "op.item", "%s", "op.item must be a string");
  out->item = json_string_value(item);
  if (!sync_item_id_valid(out->item))
    return fail(err, "invalid_field", "op.item", "%s", "item ids are 1-128 characters of A-Z a-z 0-9 . _ : @ -");
  json_t *base = json_object_get(op, "base");
  if (base) {
    if (!json_is_integer(base) || json_integer_value(base) < 0 || json_integer_value(base) > MAX_SAFE_INT)
      return fail(err, "bad_request", "op.base", "%s", "op.base must be a non-negative integer");
    out->has_base = 1;
    out->base = (uint64_t)json_integer_value(base);
  }
  if (out->kind == SYNC_SET) {
    json_t *fields = json_object_get(op, "fields");
    if (!json_is_object(fields) || sync_is_number_marker(fields))
      return fail(err, "bad_request", "op.fields", "%s", "op.fields must be an object");
    if (json_object_size(fields) > lim->max_fields)
      return fail(err, "too_large", "op.fields", "%s", "too many fields in one set");
    const char *name;
    json_t *v;
    json_object_foreach(fields, name, v) {
      if (!field_name_ok(name))
        return fail(err, "invalid_field", "op.fields", "%s", "field names are 1-128 bytes without control characters");
      if (!value_ok(v, lim->max_depth))
        return fail(err, "invalid_field", "op.fields", "field '%.64s' nests too deep or holds a number out of range", name);
      /* A string escapes to at most 6 bytes per byte: short ones need no count. */
      int fits = json_is_string(v) && lim->max_field_size >= 2 &&
                 json_string_length(v) <= (lim->max_field_size - 2) / 6;
      if (!fits && sync_encoded_size(v) > lim->max_field_size)
        return fail(err, "too_large", "op.fields", "field '%.64s' is too large", name);
    }
    out->fields = fields;
  }
  return 0;
}

/* Bytes of an item's fields as the item size limit counts them: text fields
 * (those with a revision holding a string) count against max_text_size
 * instead, so a set next to a large text still fits. */
static size_t item_size(json_t *fields, json_t *revs, size_t encoded) {
  const char *k;
  json_t *v;
  if (revs) json_object_foreach(revs, k, v) {
    json_t *t = json_object_get(fields, k);
    if (json_is_string(t)) encoded -= sync_encoded_size(t);
  }
  return encoded;
}

int sync_apply(doc *d, const sync_op *op, uint64_t seq, const sync_limits *lim, char **fields_json,
               sync_err *err) {
  doc_item *it = map_get(&d->items, op->item);
  *fields_json = NULL;
  if (it && d->frozen) item_changing(d, op->item, it);
  if (it) live_drop(it); /* from here on the item changes as JSON */
  if (op->has_base) {
    int ok = op->base == 0 ? it == NULL : (it && it->version == op->base);
    if (!ok) {
      err->code = "conflict";
      err->field = NULL;
      if (it) snprintf(err->message, sizeof err->message, "item is at version %llu, not %llu",
                       (unsigned long long)it->version, (unsigned long long)op->base);
      else snprintf(err->message, sizeof err->message, "item does not exist (base %llu)",
                    (unsigned long long)op->base);
      return -1;
    }
  }
  if (op->kind == SYNC_DEL) {
    if (!it) return fail(err, "not_found", NULL, "item '%.128s' does not exist", op->item);
    item_free(map_del(&d->items, op->item));
    return 0;
  }
  if (!it && doc_len(d) >= lim->max_room_items)
    return fail(err, "too_large", NULL, "%s", "the room holds the maximum number of items");
  /* Merge into a copy first, so a result over the item size limit leaves
   * the document untouched. */
  json_t *merged = it ? json_copy(it->fields) : json_object();
  const char *name;
  json_t *v;
  json_object_foreach(op->fields, name, v) {
    if (json_is_null(v)) json_object_del(merged, name);
    else json_object_set(merged, name, v);
  }
  char *enc = jw_dumps(merged);
  if (!enc || item_size(merged, it ? it->revs : NULL, strlen(enc)) > lim->max_item_size) {
    free(enc);
    json_decref(merged);
    return fail(err, "too_large", "op.fields", "%s", "the item would exceed the item size limit");
  }
  if (!it) { /* a new incarnation (sync.h: doc_item) */
    it = wsy_calloc(1, sizeof *it);
    it->gen = seq;
    map_put(&d->items, op->item, it);
  } else {
    json_decref(it->fields);
    if (it->revs) json_object_foreach(op->fields, name, v) revs_bump(it->revs, name);
  }
  it->fields = merged;
  it->version = seq;
  it->text_ops = it->text_bytes = 0; /* the store gets the whole item */
  *fields_json = enc;
  return 0;
}

int sync_text_parse(json_t *op, const sync_limits *lim, sync_text *out, sync_err *err) {
  memset(out, 0, sizeof *out);
  json_t *item = json_object_get(op, "item"), *field = json_object_get(op, "field");
  json_t *rev = json_object_get(op, "rev");
  if (!json_is_string(item)) return fail(err, "bad_request", "op.item", "%s", "op.item must be a string");
  out->item = json_string_value(item);
  if (!sync_item_id_valid(out->item))
    return fail(err, "invalid_field", "op.item", "%s", "item ids are 1-128 characters of A-Z a-z 0-9 . _ : @ -");
  if (!json_is_string(field)) return fail(err, "bad_request", "op.field", "%s", "op.field must be a string");
  out->field = json_string_value(field);
  if (!field_name_ok(out->field))
    return fail(err, "invalid_field", "op.field", "%s", "field names are 1-128 bytes without control characters");
  if (!json_is_integer(rev) || json_integer_value(rev) < 0 || json_integer_value(rev) > MAX_SAFE_INT)
    return fail(err, "bad_request", "op.rev", "%s", "op.rev must be a non-negative integer");
  out->rev = (uint64_t)json_integer_value(rev);
  if (json_object_get(op, "base"))
    return fail(err, "bad_request", "op.base", "%s", "base is not allowed on text ops");
  text_limits tl = {.max_components = 4 * 1024 + lim->max_field_size / 16, .max_insert_bytes = lim->max_field_size};
  char why[120];
  int rc = text_op_from_json(json_object_get(op, "ops"), &tl, &out->op, why, sizeof why);
  if (rc == WSY_TOO_LARGE) return fail(err, "too_large", "op.ops", "%s", why);
  if (rc != WSY_OK) return fail(err, "invalid_field", "op.ops", "%s", why);
  if (text_op_count(out->op) == 0) { /* [] or only retains: it would take a revision for nothing */
    text_op_free(out->op);
    out->op = NULL;
    return fail(err, "invalid_field", "op.ops", "%s", "a text op must insert or delete something");
  }
  return 0;
}

int sync_text_apply(doc *d, const sync_text *t, const text_op *op, uint64_t seq, const sync_limits *lim,
                    sync_err *err) {
  doc_item *it = map_get(&d->items, t->item);
  if (it && d->frozen) item_changing(d, t->item, it); /* the rope below changes in place */
  doc_text *x = it ? live_find(it, t->field) : NULL;
  json_t *cur = it && !x ? json_object_get(it->fields, t->field) : NULL;
  if (cur && !json_is_string(cur))
    return fail(err, "invalid_field", "op.field", "field '%.64s' is not a string", t->field);
  if (!it && doc_len(d) >= lim->max_room_items)
    return fail(err, "too_large", NULL, "%s", "the room holds the maximum number of items");
  /* The field's first op since it was loaded or set: its rope, made once. */
  rope *r = x ? x->r : rope_new(cur ? json_string_value(cur) : "", cur ? json_string_length(cur) : 0);
  char why[120];
  int rc = rope_apply(r, op, lim->max_text_size, why, sizeof why);
  if (rc != WSY_OK) {
    if (!x) rope_free(r);
    if (rc == WSY_TOO_LARGE) return fail(err, "too_large", "op.ops", "field '%.64s' would be too large", t->field);
    return fail(err, "invalid_field", "op.ops", "%s", why);
  }
  if (!it) {
    it = wsy_calloc(1, sizeof *it);
    it->fields = json_object();
    it->gen = seq;
    map_put(&d->items, t->item, it);
  }
  if (!x) {
    x = wsy_calloc(1, sizeof *x);
    x->field = wsy_strndup(t->field, strlen(t->field));
    x->r = r;
    x->next = it->live;
    it->live = x;
  }
  x->stale = 1;
  it->version = seq;
  if (!it->revs) it->revs = json_object();
  json_t *rv = json_object_get(it->revs, t->field);
  uint64_t from = rv ? (uint64_t)json_integer_value(rv) : it->gen; /* a field's first text op: from gen */
  json_object_set_new(it->revs, t->field, json_integer((json_int_t)(from + 1)));
  it->text_ops++;
  it->text_bytes += text_op_insert_bytes(op) + 8 * text_op_count(op);
  return 0;
}

int doc_text_load(doc *d, const char *item, const char *field, uint64_t rev, uint64_t seq,
                  const char *ops_json, size_t len) {
  doc_item *it = map_get(&d->items, item);
  if (!it || rev <= doc_text_rev(d, item, field)) return WSY_OK; /* the row already holds it */
  if (d->frozen) item_changing(d, item, it);
  json_error_t jerr;
  json_t *j = json_loadb(ops_json, len, 0, &jerr);
  text_op *op = NULL;
  int rc = j ? text_op_from_json(j, NULL, &op, NULL, 0) : WSY_INVAL;
  json_decref(j);
  if (rc != WSY_OK) return WSY_INVAL;
  sync_text t = {.item = item, .field = field, .rev = rev, .op = op};
  sync_limits any = {.max_room_items = SIZE_MAX, .max_text_size = SIZE_MAX};
  sync_err err;
  uint64_t version = it->version;
  rc = sync_text_apply(d, &t, op, seq, &any, &err);
  text_op_free(op);
  if (rc != 0) return WSY_INVAL;
  /* The stored revision, not one more than the row's: revisions of ops the
   * row's text already holds were skipped above, and a set may have reset
   * the field in between (then the row holds the set's text and its rev). */
  json_object_set_new(it->revs, field, json_integer((json_int_t)rev));
  if (version > seq) it->version = version; /* rows come by field, not in seq order */
  return WSY_OK;
}

void sync_op_write(jw *w, const sync_op *op) {
  if (op->kind == SYNC_DEL) jw_lit(w, "{\"kind\":\"del\",\"item\":");
  else jw_lit(w, "{\"kind\":\"set\",\"item\":");
  jw_cstr(w, op->item);
  if (op->kind != SYNC_DEL) {
    jw_lit(w, ",\"fields\":");
    jw_value(w, op->fields);
  }
  jw_lit(w, "}");
}

/* ---- batch ------------------------------------------------------------- */

int sync_batch_parse(json_t *op, const sync_limits *lim, size_t max_batch, sync_op **subs, size_t *n,
                     sync_err *err, size_t *index) {
  *subs = NULL;
  *n = 0;
  *index = SIZE_MAX;
  json_t *ops = json_object_get(op, "ops");
  if (!json_is_array(ops) || json_array_size(ops) == 0)
    return fail(err, "bad_request", "op.ops", "%s", "a batch needs a non-empty array ops");
  if (json_array_size(ops) > max_batch) return fail(err, "too_large", "op.ops", "%s", "too many ops in one batch");
  size_t cnt = json_array_size(ops);
  sync_op *out = wsy_calloc(cnt, sizeof *out);
  for (size_t i = 0; i < cnt; i++) {
    json_t *sub = json_array_get(ops, i);
    const char *k = json_string_value(json_object_get(sub, "kind"));
    if (k && !strcmp(k, "batch")) {
      wsy_free(out);
      *index = i;
      return fail(err, "bad_request", "op.ops", "%s", "a batch cannot contain a batch");
    }
    if (sync_op_parse(sub, lim, &out[i], err) != 0) {
      wsy_free(out);
      *index = i;
      return -1;
    }
  }
  *subs = out;
  *n = cnt;
  return 0;
}

typedef struct undo {
  const char *item;
  doc_item *saved; /* NULL: the item did not exist */
} undo;

int sync_batch_apply(doc *d, const sync_op *subs, size_t n, uint64_t seq, const sync_limits *lim,
                     sync_change **changes, size_t *nchanges, sync_err *err, size_t *index) {
  undo *u = wsy_calloc(n, sizeof *u);
  size_t nu = 0;
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    size_t j = 0;
    while (j < nu && strcmp(u[j].item, subs[i].item) != 0) j++;
    if (j == nu) { /* first touch: remember how it was */
      doc_item *it = map_get(&d->items, subs[i].item);
      if (it) live_drop(it); /* the saved copy must hold the current text */
      u[nu].item = subs[i].item;
      if (it) {
        u[nu].saved = wsy_calloc(1, sizeof *u[nu].saved);
        u[nu].saved->fields = json_copy(it->fields);
        u[nu].saved->revs = it->revs ? json_copy(it->revs) : NULL;
        u[nu].saved->version = it->version;
        u[nu].saved->gen = it->gen;
      }
      nu++;
    }
    char *f = NULL;
    if (sync_apply(d, &subs[i], seq, lim, &f, err) != 0) {
      rc = -1;
      *index = i;
    }
    free(f);
  }
  if (rc != 0) { /* put every touched item back as it was */
    for (size_t j = 0; j < nu; j++) {
      item_free(map_del(&d->items, u[j].item));
      if (u[j].saved) map_put(&d->items, u[j].item, u[j].saved);
    }
    wsy_free(u);
    return -1;
  }
  sync_change *c = wsy_calloc(nu, sizeof *c);
  for (size_t j = 0; j < nu; j++) {
    item_free(u[j].saved);
    const doc_item *it = doc_get(d, u[j].item);
    c[j].item = u[j].item;
    c[j].fields_json = it ? jw_dumps(it->fields) : NULL;
    c[j].revs_json = doc_item_revs_json(it);
  }
  wsy_free(u);
  *changes = c;
  *nchanges = nu;
  return 0;
}

void sync_changes_free(sync_change *c, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(c[i].fields_json);
    free(c[i].revs_json);
  }
  wsy_free(c);
}

void sync_batch_write(jw *w, const sync_op *subs, size_t n) {
  jw_lit(w, "{\"kind\":\"batch\",\"ops\":[");
  for (size_t i = 0; i < n; i++) {
    if (i) jw_lit(w, ",");
    sync_op_write(w, &subs[i]);
  }
  jw_lit(w, "]}");
}
