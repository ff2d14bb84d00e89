/* kind.c -- document rooms (kind.h): set, del, batch and text ops decided
 * against the room's document and sequenced through the log. */
#include "kind.h"

#include <string.h>

#include "commit.h"
#include "opfwd.h"
#include "proto.h"
#include "sess.h"
#include "text.h"

/* The text ops accepted on one field, newest last: ops[i] took the field
 * from revision base + i to base + i + 1. An op made at revision R is
 * transformed against ops[R - base ...] (PROTOCOL.md 5.7). */
typedef struct text_hist {
  uint64_t gen;   /* the item incarnation these ops were made on */
  uint64_t base;
  text_op **ops;
  size_t n, cap;
} text_hist;

#define TEXT_HISTORY 1024 /* ops kept per field; older revisions: rev_too_old */

/* A document room's state: the document, and the recent text ops of each
 * field ("item\x1ffield" -> text_hist*), started afresh when the room loads. */
typedef struct docroom {
  doc d;
  map texts;
} docroom;

#define D(r) ((docroom *)(r)->ks)

static void hist_free(text_hist *h) {
  for (size_t i = 0; i < h->n; i++) text_op_free(h->ops[i]);
  wsy_free(h->ops);
  wsy_free(h);
}

/* Appends op (stolen) to h, forgetting the oldest past TEXT_HISTORY. */
static void hist_push(text_hist *h, text_op *op) {
  if (h->n == TEXT_HISTORY) { /* the oldest revision is no longer reachable */
    text_op_free(h->ops[0]);
    memmove(h->ops, h->ops + 1, (h->n - 1) * sizeof *h->ops);
    h->n--;
    h->base++;
  }
  if (h->n == h->cap) {
    h->cap = h->cap ? h->cap * 2 : 8;
    h->ops = wsy_realloc(h->ops, h->cap * sizeof *h->ops);
  }
  h->ops[h->n++] = op;
}

static int load_item(const char *item, const char *fields, size_t len, const char *revs, uint64_t version,
                     void *ud) {
  return doc_load(ud, item, fields, len, revs, version);
}

static int load_text(const char *item, const char *field, uint64_t rev, uint64_t seq, const char *ops,
                     size_t len, void *ud) {
  return doc_text_load(ud, item, field, rev, seq, ops, len);
}

int doc_room_read(store *st, const char *name, doc *d) {
  int rc = store_room_items(st, name, load_item, d);
  return rc ? rc : store_room_texts(st, name, load_text, d);
}

static int doc_kind_load(room *r, store *st, const store_room_info *info) {
  docroom *dr = wsy_calloc(1, sizeof *dr);
  doc_init(&dr->d);
  map_init(&dr->texts);
  r->ks = dr;
  return info->exists ? doc_room_read(st, r->name, &dr->d) : 0;
}

static void doc_kind_unload(room *r) {
  docroom *dr = r->ks;
  if (!dr) return;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&dr->texts, &i, &k, &v);) hist_free(v);
  map_free(&dr->texts);
  doc_free(&dr->d);
  wsy_free(dr);
  r->ks = NULL;
}

/* A reload (room.h: after a failed commit, or in a cluster after other
 * nodes wrote the room): the document is read again, and so are the fields'
 * text histories, from the store's texts rows (the committed text ops since
 * each item's row was last written), so that an op made at a revision
 * another node's op already passed is still transformed. A history that
 * does not end at the field's revision is dropped by run_text_op as before. */
static int reload_text(const char *item, const char *field, uint64_t rev, uint64_t seq, const char *ops,
                       size_t len, void *ud) {
  docroom *dr = ud;
  int rc = doc_text_load(&dr->d, item, field, rev, seq, ops, len);
  const doc_item *it = doc_get(&dr->d, item);
  json_t *j = rc == 0 && it && rev > 0 ? json_loadb(ops, len, 0, NULL) : NULL;
  text_op *op = NULL;
  if (!j || text_op_from_json(j, NULL, &op, NULL, 0) != 0) {
    json_decref(j);
    return rc;
  }
  json_decref(j);
  char key[300];
  snprintf(key, sizeof key, "%s\x1f%s", item, field);
  text_hist *h = map_get(&dr->texts, key);
  if (h && (h->gen != it->gen || h->base + h->n != rev - 1)) {
    hist_free(map_del(&dr->texts, key));
    h = NULL;
  }
  if (!h) {
    h = wsy_calloc(1, sizeof *h);
    h->gen = it->gen;
    h->base = rev - 1;
    map_put(&dr->texts, key, h);
  }
  hist_push(h, op);
  return 0;
}

static void texts_clear(docroom *dr) {
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&dr->texts, &i, &k, &v);) hist_free(v);
  map_free(&dr->texts);
  map_init(&dr->texts);
}

static int doc_kind_reload(room *r, store *st, const store_room_info *info) {
  docroom *dr = r->ks;
  texts_clear(dr);
  doc_free(&dr->d);
  doc_init(&dr->d);
  if (!info->exists) return 0;
  int rc = store_room_items(st, r->name, load_item, &dr->d);
  return rc ? rc : store_room_texts(st, r->name, reload_text, dr);
}

static int load_changed(const char *item, const char *fields, size_t len, const char *revs, uint64_t version,
                        void *ud) {
  return doc_load_changed(ud, item, fields, len, revs, version);
}

/* The same from a snapshot of changes: the items written since the
 * replica's seq are loaded again, those gone are dropped, the others kept;
 * the text histories are read again whole, as above (text ops do not
 * rewrite their item's row). */
static int doc_kind_reload_changes(room *r, store *st, const store_room_info *info) {
  docroom *dr = r->ks;
  texts_clear(dr);
  if (!info->exists) return WSY_INVAL; /* the caller reads it whole */
  doc_changes_begin(&dr->d);
  int rc = store_room_items(st, r->name, load_changed, &dr->d);
  if (rc == 0) doc_changes_end(&dr->d);
  return rc ? rc : store_room_texts(st, r->name, reload_text, dr);
}

/* With nothing of the room pending, its document is exactly what the store
 * holds: served from memory. Otherwise the committed state, from the store. */
static int doc_kind_snapshot(room *r, store *st, doc_frozen **out) {
  if (r->pending == 0 && !r->broken && !r->stale) {
    *out = doc_freeze(&D(r)->d);
    return 0;
  }
  doc d;
  doc_init(&d);
  int rc = doc_room_read(st, r->name, &d);
  if (rc == 0) *out = doc_freeze(&d); /* copied by doc_free below */
  doc_free(&d);
  return rc;
}

/* May the author write item now? Locks (unless force) and the fence. */
static int lock_ok(engine *e, room *r, sess *s, json_t *subj, const char *item, int force, op_refusal *why) {
  const lock *l = room_lock_held(r, item);
  /* A backend write (no session) never holds a lock: one held on another
   * node has no local holder either. In a cluster a refusal is decided
   * again on locks read from the store (proto.c); an acceptance needs no
   * read: the commit is fenced by the lock version. */
  /* A ghost (opfwd.h) holds what its origin session holds. */
  int mine = l && s && (l->holder == s || (s->ghost && l->rid && opfwd_ghost_is(s, l->rid)));
  if (l && !mine && !force)
    return commit_refuse(why, "locked", "the item is locked by another session",
                     json_pack("{s:s,s:o}", "item", item, "lock", room_lock_json(e, item, l)));
  json_t *fence = json_object_get(subj, "fence");
  if (fence && (!s || !json_is_integer(fence) || !l || !mine ||
                (json_int_t)l->fence != json_integer_value(fence)))
    return commit_refuse(why, "lock_lost", "the op's fence is not a lock this session holds",
                     json_pack("{s:s}", "item", item));
  return 0;
}

/* A text op (PROTOCOL.md 5.7): transformed against the ops accepted on
 * its field since its revision, applied, sequenced like any op. */
static int run_text_op(author *a, json_t *req, room *r, json_t *opj, const char *cid, int force,
                       json_t *from, op_refusal *why) {
  engine *e = a->e;
  sync_text t;
  if (sync_text_parse(opj, &e->lim, &t, &why->err) != 0) {
    if (t.item) why->extra = json_pack("{s:s}", "item", t.item);
    return -1;
  }
  int rc = -1;
  text_op *op = NULL;
  char *fields_json = NULL, *revs_json = NULL, *ops_json = NULL;
  int adm = commit_admit(a, req, r, cid, why);
  if (adm != 0) {
    rc = adm > 0 ? 0 : -1;
    goto out;
  }
  if (lock_ok(e, r, a->s, opj, t.item, force, why) != 0) goto out;
  const doc_item *it = doc_get(&D(r)->d, t.item);
  if (!it) {
    /* Text edits do not create items: one racing the item's del would bring
     * it back holding only that field. The del wins (PROTOCOL.md 5.7). */
    commit_refuse(why, "not_found", "the item does not exist; a set creates it",
              json_pack("{s:s,s:s}", "item", t.item, "field", t.field));
    goto out;
  }
  /* The field's history, started afresh when the field was reset (a set,
   * a delete), the item was created again, or the room was loaded since it
   * was last written. */
  char key[300];
  snprintf(key, sizeof key, "%s\x1f%s", t.item, t.field);
  uint64_t cur = doc_text_rev(&D(r)->d, t.item, t.field);
  text_hist *h = map_get(&D(r)->texts, key);
  if (h && (h->gen != it->gen || h->base + h->n != cur)) {
    hist_free(map_del(&D(r)->texts, key));
    h = NULL;
  }
  /* Below the item's gen: made for an incarnation that a del has ended
   * (sync.h: doc_item). Else too old (or beyond): rebase. Both carry the
   * field as it is now (PROTOCOL.md 5.7). */
  /* Compatibility (PROTOCOL.md 5.7): a client that does not know gens
   * addresses a field that never held text as revision 0; it is taken as
   * gen. Such an op cannot be told from one made for an earlier
   * incarnation: clients that know gens send gen. */
  if (t.rev == 0) t.rev = it->gen;
  int replaced = t.rev < it->gen;
  if (replaced || t.rev > cur || t.rev < (h ? h->base : cur)) {
    doc_item_fresh(it);
    json_t *txt = json_object_get(it->fields, t.field);
    json_t *tv = json_is_string(txt) ? json_incref(txt) : json_string("");
    commit_refuse(why, replaced ? "item_replaced" : "rev_too_old",
              replaced ? "the item was deleted and created again since rev; the op is not applied"
              : t.rev > cur ? "rev is beyond the field's revision" : "the ops after rev are no longer kept; rebase on text",
              json_pack("{s:s,s:s,s:I,s:o}", "item", t.item, "field", t.field, "rev", (json_int_t)cur, "text", tv));
    goto out;
  }
  op = text_op_clone(t.op);
  for (uint64_t i = t.rev - (h ? h->base : cur); h && i < h->n; i++) {
    text_op *x = text_transform(op, h->ops[i], TEXT_RIGHT);
    text_op_free(op);
    op = x;
  }
  if (sync_text_apply(&D(r)->d, &t, op, r->seq + 1, &e->lim, &why->err) != 0) {
    why->extra = json_pack("{s:s}", "item", t.item);
    goto out;
  }
  if (!h) {
    h = wsy_calloc(1, sizeof *h);
    h->gen = it->gen;
    h->base = cur;
    map_put(&D(r)->texts, key, h);
  }
  hist_push(h, text_op_clone(op));
  r->seq++;
  json_t *opv = json_pack("{s:s,s:s,s:s,s:I,s:o}", "kind", "text", "item", t.item, "field", t.field, "rev",
                           (json_int_t)cur, "ops", text_op_to_json(op));
  /* The log entry names no item: the items row stays as it is, and the op
   * goes to the item's texts rows, a snapshot of the item now and then
   * (store.h: texts). */
  pend *p = commit_sequence(a, req, r, commit_entry_frame(e, r, COMMIT_OP, from, cid, opv), NULL, NULL, NULL, NULL, 0, cid);
  ops_json = jw_dumps(json_object_get(opv, "ops"));
  json_decref(opv);
  store_batch_text(e->batch, r->name, t.item, t.field, cur + 1, r->seq, ops_json, strlen(ops_json));
  doc_item *mit = map_get(&D(r)->d.items, t.item);
  if (doc_item_snapshot_due(mit)) {
    fields_json = doc_item_snapshot(mit);
    revs_json = doc_item_revs_json(mit);
    store_batch_item(e->batch, r->name, t.item, fields_json, revs_json, mit->version);
  }
  p->rev = cur + 1;
  rc = 0;
out:
  text_op_free(op);
  text_op_free(t.op);
  free(fields_json);
  free(revs_json);
  free(ops_json);
  return rc;
}

static int run_op(author *a, json_t *req, room *r, json_t *opj, const char *cid, int force,
                  json_t *from, op_refusal *why) {
  engine *e = a->e;
  why->extra = NULL;
  const char *kind = json_string_value(json_object_get(opj, "kind"));
  if (kind && !strcmp(kind, "text") && json_is_object(opj)) return run_text_op(a, req, r, opj, cid, force, from, why);
  int is_batch = kind && !strcmp(kind, "batch");
  sync_op one, *subs = NULL;
  size_t n = 0, index = SIZE_MAX;
  if (is_batch ? sync_batch_parse(opj, &e->lim, e->cfg->max_batch, &subs, &n, &why->err, &index)
               : sync_op_parse(opj, &e->lim, &one, &why->err)) {
    if (is_batch && index != SIZE_MAX) why->extra = json_pack("{s:I}", "index", (json_int_t)index);
    else if (!is_batch && one.item) why->extra = json_pack("{s:s}", "item", one.item);
    return -1;
  }
  if (!is_batch) {
    subs = &one;
    n = 1;
  }
  int rc = -1;
  int adm = commit_admit(a, req, r, cid, why);
  if (adm != 0) {
    rc = adm > 0 ? 0 : -1;
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    json_t *subj = is_batch ? json_array_get(json_object_get(opj, "ops"), i) : opj;
    if (lock_ok(e, r, a->s, subj, subs[i].item, force, why) != 0) {
      if (is_batch) json_object_set_new(why->extra, "index", json_integer((json_int_t)i));
      goto out;
    }
  }
  char *fields_json = NULL;
  sync_change *changes = NULL;
  size_t nchanges = 0;
  int arc = is_batch ? sync_batch_apply(&D(r)->d, subs, n, r->seq + 1, &e->lim, &changes, &nchanges,
                                        &why->err, &index)
                     : sync_apply(&D(r)->d, &one, r->seq + 1, &e->lim, &fields_json, &why->err);
  if (arc != 0) {
    const char *item = is_batch ? subs[index].item : one.item;
    why->extra = json_pack("{s:s}", "item", item);
    if (is_batch) json_object_set_new(why->extra, "index", json_integer((json_int_t)index));
    if (!strcmp(why->err.code, "conflict"))
      json_object_set_new(why->extra, "current", doc_item_json(doc_get(&D(r)->d, item)));
    goto out;
  }
  r->seq++;
  char *revs_json = is_batch ? NULL : doc_item_revs_json(doc_get(&D(r)->d, one.item));
  jw *w = commit_entry_begin(e, r, COMMIT_OP, from, cid);
  if (is_batch) sync_batch_write(w, subs, n);
  else sync_op_write(w, &one);
  commit_sequence(a, req, r, commit_entry_end(w), is_batch ? NULL : one.item, fields_json, revs_json, changes, nchanges, cid);
  free(fields_json);
  free(revs_json);
  sync_changes_free(changes, nchanges);
  rc = 0;
out:
  if (is_batch) wsy_free(subs);
  return rc;
}

const room_kind doc_room_kind = {
  .name = "doc",
  .load = doc_kind_load,
  .unload = doc_kind_unload,
  .apply = run_op,
  .snapshot = doc_kind_snapshot,
  .reload = doc_kind_reload,
  .reload_changes = doc_kind_reload_changes,
};

const room_kind *room_kind_for(const char *name) {
  (void)name;
  return &doc_room_kind;
}
