/* Unit tests for doc_freeze (src/sync/sync.h): a frozen document, written
 * out in parts, is the document as it was at the freeze, whatever changes
 * between the parts (sets, deletes, new items, text edits in ropes, a load,
 * the document freed): items changed are saved first, the rest read in
 * place. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/sync/sync.h"
#include "../../../src/sync/text.h"

static const sync_limits lim = {.max_fields = 8, .max_field_size = 4096, .max_item_size = 8192,
                                .max_depth = 3, .max_room_items = 1000, .max_text_size = 4096};

static void set(doc *d, const char *op_json, uint64_t seq) {
  json_error_t e;
  json_t *op = json_loads(op_json, 0, &e);
  cr_assert_not_null(op, "%s", e.text);
  sync_op o;
  sync_err err;
  char *f = NULL;
  cr_assert_eq(sync_op_parse(op, &lim, &o, &err), 0, "%s", err.code);
  cr_assert_eq(sync_apply(d, &o, seq, &lim, &f, &err), 0, "%s", err.code);
  free(f);
  json_decref(op);
}

static void text(doc *d, const char *item, uint64_t rev, const char *ops, uint64_t seq) {
  char j[256];
  snprintf(j, sizeof j, "{\"item\":\"%s\",\"field\":\"t\",\"rev\":%llu,\"ops\":%s}", item, (unsigned long long)rev, ops);
  json_error_t e;
  json_t *op = json_loads(j, 0, &e);
  cr_assert_not_null(op, "%s", e.text);
  sync_text t;
  sync_err err;
  cr_assert_eq(sync_text_parse(op, &lim, &t, &err), 0, "%s", err.code);
  cr_assert_eq(sync_text_apply(d, &t, t.op, seq, &lim, &err), 0, "%s", err.code);
  text_op_free(t.op);
  json_decref(op);
}

/* A document of n items i000.. with a number, a string and a text field
 * edited once (so it lives in a rope). Returns the next seq. */
static uint64_t fill(doc *d, int n) {
  uint64_t seq = 1;
  char op[160];
  for (int i = 0; i < n; i++) {
    snprintf(op, sizeof op, "{\"kind\":\"set\",\"item\":\"i%03d\",\"fields\":{\"n\":%d,\"s\":\"v%d\",\"t\":\"ab\"}}", i, i, i);
    set(d, op, seq++);
  }
  for (int i = 0; i < n; i += 3) {
    char id[16];
    snprintf(id, sizeof id, "i%03d", i);
    text(d, id, doc_text_rev(d, id, "t"), "[1,\"X\"]", seq++);
  }
  return seq;
}

/* The document now, as the parts would give it: {"id":{...},...}. */
static json_t *now(doc *d) {
  json_t *s = doc_snapshot(d);
  json_t *items = json_incref(json_object_get(s, "items"));
  json_decref(s);
  return items;
}

/* Writes f in parts of about `bytes`, calling change(d, k) before part k
 * (k >= 1); returns the items the parts add up to. */
static json_t *parts(doc_frozen *f, doc *d, size_t bytes, void (*change)(doc *, int)) {
  json_t *all = json_object();
  size_t at = 0;
  int k = 0;
  while (at < f->n || k == 0) {
    if (k > 0 && change) change(d, k);
    jw w = JW_INIT;
    jw_lit(&w, "{");
    size_t next = doc_frozen_write(f, at, &w, bytes);
    jw_lit(&w, "}");
    cr_assert(next > at || f->n == 0, "a part holds at least one item");
    json_error_t e;
    json_t *p = json_loadb(w.p, w.len, 0, &e);
    cr_assert_not_null(p, "part %d is not JSON: %s", k, e.text);
    const char *id;
    json_t *v;
    json_object_foreach(p, id, v) {
      cr_assert_null(json_object_get(all, id), "%s in two parts", id);
      json_object_set(all, id, v);
    }
    json_decref(p);
    jw_free(&w);
    at = next;
    k++;
    if (f->n == 0) break;
  }
  return all;
}

static void expect_same(json_t *got, json_t *want) {
  char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS), *w = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
  cr_assert_str_eq(g, w);
  free(g);
  free(w);
}

static uint64_t seq_now;

/* Every kind of change, each on items not written yet and written already. */
static void change_all(doc *d, int k) {
  char op[160];
  if (k == 1) {
    for (int i = 0; i < 60; i += 2) { /* sets, on every other item */
      snprintf(op, sizeof op, "{\"kind\":\"set\",\"item\":\"i%03d\",\"fields\":{\"s\":\"changed\",\"n\":null}}", i);
      set(d, op, seq_now++);
    }
    for (int i = 1; i < 60; i += 6) { /* deletes */
      snprintf(op, sizeof op, "{\"kind\":\"del\",\"item\":\"i%03d\"}", i);
      set(d, op, seq_now++);
    }
    for (int i = 0; i < 200; i++) { /* new items, enough to grow the map */
      snprintf(op, sizeof op, "{\"kind\":\"set\",\"item\":\"new%03d\",\"fields\":{\"n\":%d}}", i, i);
      set(d, op, seq_now++);
    }
  } else if (k == 2) {
    for (int i = 3; i < 60 && doc_get(d, "i003"); i += 3) { /* text edits, in ropes or not */
      char id[16];
      snprintf(id, sizeof id, "i%03d", i);
      if (doc_get(d, id)) text(d, id, doc_text_rev(d, id, "t"), "[{\"d\":1}]", seq_now++);
    }
  }
}

Test(freeze, unchanged_document_is_read_in_place) {
  doc d;
  doc_init(&d);
  fill(&d, 60);
  json_t *want = now(&d);
  doc_frozen *f = doc_freeze(&d);
  cr_assert_eq(f->n, 60);
  json_t *got = parts(f, &d, 200, NULL);
  cr_assert_not_null(f->d, "read in place");
  cr_assert_eq(f->saved.len, 0, "nothing changed: nothing saved");
  expect_same(got, want);
  doc_frozen_free(f);
  cr_assert_null(d.frozen);
  json_decref(got);
  json_decref(want);
  doc_free(&d);
}

Test(freeze, parts_are_the_state_at_the_freeze_whatever_changes_between_them) {
  doc d;
  doc_init(&d);
  seq_now = fill(&d, 60);
  json_t *want = now(&d);
  doc_frozen *f = doc_freeze(&d);
  json_t *got = parts(f, &d, 300, change_all);
  cr_assert_not_null(f->d, "still read in place");
  cr_assert(f->saved.len > 0 && f->saved.len <= 60, "the changed items saved (%zu), not the document", f->saved.len);
  expect_same(got, want);
  /* and the document itself did change */
  cr_assert_null(doc_get(&d, "i001"));
  cr_assert_not_null(doc_get(&d, "new199"));
  doc_frozen_free(f);
  json_decref(got);
  json_decref(want);
  doc_free(&d);
}

Test(freeze, several_freezes_each_see_their_own_state) {
  doc d;
  doc_init(&d);
  seq_now = fill(&d, 60);
  json_t *want1 = now(&d);
  doc_frozen *f1 = doc_freeze(&d);
  set(&d, "{\"kind\":\"set\",\"item\":\"i005\",\"fields\":{\"s\":\"second\"}}", seq_now++);
  json_t *want2 = now(&d);
  doc_frozen *f2 = doc_freeze(&d);
  doc_frozen *f3 = doc_freeze(&d);
  json_t *got2 = parts(f2, &d, 100, change_all);
  json_t *got1 = parts(f1, &d, 100, NULL);
  expect_same(got1, want1);
  expect_same(got2, want2);
  doc_frozen_free(f3); /* freed while its document changed meanwhile */
  doc_frozen_free(f1);
  doc_frozen_free(f2);
  json_decref(got1);
  json_decref(got2);
  json_decref(want1);
  json_decref(want2);
  doc_free(&d);
}

static doc *freed_doc;
static void free_the_doc(doc *d, int k) {
  if (k == 1) {
    doc_free(d); /* a room unloaded, or reloaded, while its snapshot is sent */
    freed_doc = d;
  }
}

Test(freeze, the_document_freed_between_parts) {
  doc d;
  doc_init(&d);
  fill(&d, 50);
  json_t *want = now(&d);
  doc_frozen *f = doc_freeze(&d);
  json_t *got = parts(f, &d, 150, free_the_doc);
  cr_assert_eq(freed_doc, &d);
  cr_assert_null(f->d, "doc_free copied what was left");
  expect_same(got, want);
  doc_frozen_free(f);
  json_decref(got);
  json_decref(want);
}

Test(freeze, an_empty_document) {
  doc d;
  doc_init(&d);
  doc_frozen *f = doc_freeze(&d);
  cr_assert_eq(f->n, 0);
  jw w = JW_INIT;
  cr_assert_eq(doc_frozen_write(f, 0, &w, 100), 0);
  cr_assert_eq(w.len, 0);
  jw_free(&w);
  doc_frozen_free(f);
  doc_free(&d);
}
