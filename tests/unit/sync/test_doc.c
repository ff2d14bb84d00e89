/* Unit tests for src/sync/doc.c: op parsing, LWW application, version
 * checks, limits; and for the string map the registries use. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/common/map.h"
#include "../../../src/sync/sync.h"
#include "../../../src/sync/text.h"

static const sync_limits lim = {.max_fields = 4, .max_field_size = 64, .max_item_size = 128,
                                .max_depth = 3, .max_room_items = 3, .max_text_size = 200};

static json_t *J(const char *text) {
  json_error_t e;
  json_t *j = json_loads(text, 0, &e);
  cr_assert_not_null(j, "bad test JSON %s: %s", text, e.text);
  return j;
}

/* Parses and applies; returns the error code or "ok". */
static const char *run(doc *d, const char *op_json, uint64_t seq, char **fields) {
  static char code[32];
  json_t *op = J(op_json);
  sync_op o;
  sync_err err;
  char *f = NULL;
  const char *res = "ok";
  if (sync_op_parse(op, &lim, &o, &err) != 0) res = err.code;
  else if (sync_apply(d, &o, seq, &lim, &f, &err) != 0) res = err.code;
  if (fields) *fields = f;
  else free(f);
  snprintf(code, sizeof code, "%s", res);
  json_decref(op);
  return code;
}

static char *item_text(doc *d, const char *id) {
  json_t *j = doc_item_json(doc_get(d, id));
  char *t = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
  json_decref(j);
  return t;
}

Test(doc, set_creates_then_merges_fields_lww) {
  doc d;
  doc_init(&d);
  char *f;
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":1,\"y\":2}}", 1, &f), "ok");
  cr_assert_str_eq(f, "{\"x\":1,\"y\":2}");
  free(f);
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"y\":3,\"z\":{\"n\":1}}}", 2, &f), "ok");
  free(f);
  char *t = item_text(&d, "a");
  cr_assert_str_eq(t, "{\"fields\":{\"x\":1,\"y\":3,\"z\":{\"n\":1}},\"version\":2}");
  free(t);
  /* a nested object is replaced whole, not merged */
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"z\":{\"m\":2}}}", 3, NULL), "ok");
  t = item_text(&d, "a");
  cr_assert_str_eq(t, "{\"fields\":{\"x\":1,\"y\":3,\"z\":{\"m\":2}},\"version\":3}");
  free(t);
  doc_free(&d);
}

Test(doc, null_deletes_a_field) {
  doc d;
  doc_init(&d);
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":1,\"y\":2}}", 1, NULL), "ok");
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":null}}", 2, NULL), "ok");
  char *t = item_text(&d, "a");
  cr_assert_str_eq(t, "{\"fields\":{\"y\":2},\"version\":2}");
  free(t);
  doc_free(&d);
}

Test(doc, base_checks_versions_and_leaves_doc_unchanged) {
  doc d;
  doc_init(&d);
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":1},\"base\":0}", 5, NULL), "ok");
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":2},\"base\":0}", 6, NULL), "conflict");
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":2},\"base\":4}", 6, NULL), "conflict");
  char *t = item_text(&d, "a");
  cr_assert_str_eq(t, "{\"fields\":{\"x\":1},\"version\":5}");
  free(t);
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":2},\"base\":5}", 6, NULL), "ok");
  cr_assert_str_eq(run(&d, "{\"kind\":\"del\",\"item\":\"a\",\"base\":5}", 7, NULL), "conflict");
  cr_assert_str_eq(run(&d, "{\"kind\":\"del\",\"item\":\"a\",\"base\":6}", 7, NULL), "ok");
  cr_assert_null(doc_get(&d, "a"));
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"b\",\"fields\":{},\"base\":3}", 8, NULL), "conflict");
  doc_free(&d);
}

Test(doc, del_of_missing_item_is_not_found) {
  doc d;
  doc_init(&d);
  char *f = (char *)1;
  cr_assert_str_eq(run(&d, "{\"kind\":\"del\",\"item\":\"nope\"}", 1, &f), "not_found");
  cr_assert_null(f);
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{}}", 1, NULL), "ok");
  cr_assert_str_eq(run(&d, "{\"kind\":\"del\",\"item\":\"a\"}", 2, &f), "ok");
  cr_assert_null(f, "a del reports no fields");
  doc_free(&d);
}

Test(doc, malformed_ops) {
  doc d;
  doc_init(&d);
  struct { const char *op, *code; } v[] = {
    {"[]", "bad_request"},
    {"{\"item\":\"a\"}", "bad_request"},
    {"{\"kind\":\"text\",\"item\":\"a\"}", "bad_request"},
    {"{\"kind\":\"set\",\"fields\":{}}", "bad_request"},
    {"{\"kind\":\"set\",\"item\":5,\"fields\":{}}", "bad_request"},
    {"{\"kind\":\"set\",\"item\":\"a b\",\"fields\":{}}", "invalid_field"},
    {"{\"kind\":\"set\",\"item\":\"a\"}", "bad_request"},
    {"{\"kind\":\"set\",\"item\":\"a\",\"fields\":[1]}", "bad_request"},
    {"{\"kind\":\"set\",\"item\":\"a\",\"fields\":{},\"base\":-1}", "bad_request"},
    {"{\"kind\":\"set\",\"item\":\"a\",\"fields\":{},\"base\":\"1\"}", "bad_request"},
    {"{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}}", "too_large"},
    {"{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":[[[[1]]]]}}", "invalid_field"},
    {"{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":9007199254740992}}", "invalid_field"},
    {"{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"\":1}}", "invalid_field"},
    {"{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":\"0123456789012345678901234567890123456789012345678901234567890123\"}}", "too_large"},
  };
  for (size_t i = 0; i < sizeof v / sizeof *v; i++)
    cr_assert_str_eq(run(&d, v[i].op, 1, NULL), v[i].code, "op %s", v[i].op);
  cr_assert_eq(doc_len(&d), 0, "no rejected op changed the document");
  /* at the limits: depth 3, 2^53-1 */
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":[[[1]]],\"y\":9007199254740991}}", 1, NULL), "ok");
  doc_free(&d);
}

Test(doc, item_size_and_room_item_limits) {
  doc d;
  doc_init(&d);
  const char *fill = "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"%c\":\"0123456789012345678901234567890123456789\"}}";
  char op[256];
  snprintf(op, sizeof op, fill, 'p');
  cr_assert_str_eq(run(&d, op, 1, NULL), "ok");
  snprintf(op, sizeof op, fill, 'q');
  cr_assert_str_eq(run(&d, op, 2, NULL), "ok");
  snprintf(op, sizeof op, fill, 'r');
  cr_assert_str_eq(run(&d, op, 3, NULL), "too_large", "over max_item_size after the merge");
  char *t = item_text(&d, "a");
  cr_assert(strstr(t, "\"r\"") == NULL && strstr(t, "\"version\":2"), "unchanged: %s", t);
  free(t);
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"b\",\"fields\":{}}", 4, NULL), "ok");
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"c\",\"fields\":{}}", 5, NULL), "ok");
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"d\",\"fields\":{}}", 6, NULL), "too_large");
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"c\",\"fields\":{\"k\":1}}", 6, NULL), "ok", "existing items still writable");
  doc_free(&d);
}

Test(doc, replicas_applying_the_same_ops_in_order_agree) {
  /* Concurrent writers, serialized by seq: every replica that applies the
   * log in order ends with the same document (LWW per field). */
  doc a, b;
  doc_init(&a);
  doc_init(&b);
  const char *log[] = {
    "{\"kind\":\"set\",\"item\":\"k\",\"fields\":{\"t\":\"A\",\"c\":1}}",
    "{\"kind\":\"set\",\"item\":\"k\",\"fields\":{\"t\":\"B\"}}",
    "{\"kind\":\"set\",\"item\":\"k\",\"fields\":{\"c\":null,\"d\":true}}",
    "{\"kind\":\"set\",\"item\":\"m\",\"fields\":{\"t\":\"C\"}}",
    "{\"kind\":\"del\",\"item\":\"m\"}",
  };
  for (size_t i = 0; i < sizeof log / sizeof *log; i++) {
    cr_assert_str_eq(run(&a, log[i], i + 1, NULL), "ok");
    cr_assert_str_eq(run(&b, log[i], i + 1, NULL), "ok");
  }
  json_t *sa = doc_snapshot(&a), *sb = doc_snapshot(&b);
  cr_assert(json_equal(sa, sb));
  char *t = json_dumps(sa, JSON_COMPACT | JSON_SORT_KEYS);
  cr_assert_str_eq(t, "{\"items\":{\"k\":{\"fields\":{\"d\":true,\"t\":\"B\"},\"version\":3}}}");
  free(t);
  json_decref(sa);
  json_decref(sb);
  doc_free(&a);
  doc_free(&b);
}

Test(doc, normalized_op_drops_base) {
  json_t *op = J("{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":null},\"base\":3,\"fence\":9}");
  sync_op o;
  sync_err err;
  cr_assert_eq(sync_op_parse(op, &lim, &o, &err), 0);
  jw w = JW_INIT;
  sync_op_write(&w, &o);
  cr_assert_str_eq(w.p, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":null}}");
  jw_reset(&w);
  sync_op del = {.kind = SYNC_DEL, .item = "b\"q"};
  sync_batch_write(&w, (sync_op[]){o, del}, 2);
  cr_assert_str_eq(w.p, "{\"kind\":\"batch\",\"ops\":[{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":null}},"
                        "{\"kind\":\"del\",\"item\":\"b\\\"q\"}]}");
  jw_free(&w);
  json_decref(op);
}

/* A reload of what changed: items handed unchanged are kept as they are,
 * changed ones loaded again, those not handed dropped; an item said
 * unchanged that memory lacks is WSY_NOT_FOUND (read it whole). */
Test(doc, a_reload_of_changes_keeps_loads_and_drops) {
  doc d;
  doc_init(&d);
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":1}}", 1, NULL), "ok");
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"b\",\"fields\":{\"x\":2}}", 2, NULL), "ok");
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"c\",\"fields\":{\"x\":3}}", 3, NULL), "ok");
  doc_changes_begin(&d);
  cr_assert_eq(doc_load_changed(&d, "a", NULL, 0, NULL, 1), WSY_OK);
  const char *c4 = "{\"x\":4}";
  cr_assert_eq(doc_load_changed(&d, "c", c4, strlen(c4), NULL, 4), WSY_OK);
  const char *n5 = "{\"y\":5}";
  cr_assert_eq(doc_load_changed(&d, "n", n5, strlen(n5), NULL, 5), WSY_OK);
  doc_changes_end(&d);
  cr_assert_eq(doc_len(&d), 3);
  char *t = item_text(&d, "a");
  cr_assert_str_eq(t, "{\"fields\":{\"x\":1},\"version\":1}", "kept: %s", t);
  free(t);
  cr_assert_null(doc_get(&d, "b"), "not handed: dropped");
  t = item_text(&d, "c");
  cr_assert_str_eq(t, "{\"fields\":{\"x\":4},\"version\":4}", "loaded again: %s", t);
  free(t);
  cr_assert_not_null(doc_get(&d, "n"));
  doc_changes_begin(&d);
  cr_assert_eq(doc_load_changed(&d, "b", NULL, 0, NULL, 2), WSY_NOT_FOUND, "memory does not have it");
  doc_free(&d);
}

Test(map, del_if_removes_only_the_matching_value) {
  map m;
  map_init(&m);
  int a, b;
  map_put(&m, "k", &a);
  cr_assert_eq(map_del_if(&m, "k", &b), 0);
  cr_assert_eq(map_get(&m, "k"), &a);
  cr_assert_eq(map_del_if(&m, "nope", &a), 0);
  cr_assert_eq(map_del_if(&m, "k", &a), 1);
  cr_assert_null(map_get(&m, "k"));
  cr_assert_eq(map_len(&m), 0);
  map_free(&m);
}

/* A table with steady churn (one put and one del per step, as the pending
 * cids see) stays sized by its live keys. */
Test(map, churn_does_not_grow_the_table) {
  map m;
  map_init(&m);
  char key[32];
  static int v;
  for (int i = 0; i < 100000; i++) {
    snprintf(key, sizeof key, "dev|cid-%d", i);
    map_put(&m, key, &v);
    if (i >= 8) {
      snprintf(key, sizeof key, "dev|cid-%d", i - 8);
      cr_assert_eq(map_del(&m, key), &v);
    }
  }
  cr_assert_eq(map_len(&m), 8);
  cr_assert_leq(m.cap, 64, "capacity %zu for 8 live keys", m.cap);
  map_free(&m);
}

Test(map, put_get_del_and_growth) {
  map m;
  map_init(&m);
  char key[32];
  for (long i = 0; i < 5000; i++) {
    snprintf(key, sizeof key, "k%ld", i);
    cr_assert_null(map_put(&m, key, (void *)(i + 1)));
  }
  cr_assert_eq(map_len(&m), 5000);
  for (long i = 0; i < 5000; i += 2) {
    snprintf(key, sizeof key, "k%ld", i);
    cr_assert_eq((long)map_del(&m, key), i + 1);
  }
  for (long i = 0; i < 5000; i++) {
    snprintf(key, sizeof key, "k%ld", i);
    cr_assert_eq((long)map_get(&m, key), i % 2 ? i + 1 : 0);
  }
  cr_assert_eq((long)map_put(&m, "k1", (void *)7), 2, "replace returns the old value");
  size_t n = 0, it = 0;
  const char *k;
  void *v;
  while (map_next(&m, &it, &k, &v)) n++;
  cr_assert_eq(n, 2500);
  map_free(&m);
}

static const char *run_batch(doc *d, const char *op_json, uint64_t seq, size_t *index, size_t *nchanges) {
  static char code[32];
  json_t *op = J(op_json);
  sync_op *subs = NULL;
  size_t n = 0;
  sync_err err;
  sync_change *ch = NULL;
  const char *res = "ok";
  *nchanges = 0;
  if (sync_batch_parse(op, &lim, 3, &subs, &n, &err, index) != 0) res = err.code;
  else if (sync_batch_apply(d, subs, n, seq, &lim, &ch, nchanges, &err, index) != 0) res = err.code;
  sync_changes_free(ch, *nchanges);
  wsy_free(subs);
  snprintf(code, sizeof code, "%s", res);
  json_decref(op);
  return code;
}

Test(doc, batch_applies_in_order_with_one_version) {
  doc d;
  doc_init(&d);
  size_t idx, nch;
  cr_assert_str_eq(run_batch(&d, "{\"kind\":\"batch\",\"ops\":[{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":1}},"
                                  "{\"kind\":\"set\",\"item\":\"b\",\"fields\":{}},{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"y\":2},\"base\":7}]}",
                             7, &idx, &nch), "ok", "a later sub-op sees the earlier one's version");
  cr_assert_eq(nch, 2, "one change per distinct item");
  char *t = item_text(&d, "a");
  cr_assert_str_eq(t, "{\"fields\":{\"x\":1,\"y\":2},\"version\":7}");
  free(t);
  doc_free(&d);
}

Test(doc, failing_batch_changes_nothing) {
  doc d;
  doc_init(&d);
  size_t idx = 99, nch;
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":1}}", 1, NULL), "ok");
  json_t *before = doc_snapshot(&d);
  cr_assert_str_eq(run_batch(&d, "{\"kind\":\"batch\",\"ops\":[{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"x\":2}},"
                                  "{\"kind\":\"del\",\"item\":\"a\"},{\"kind\":\"del\",\"item\":\"zz\"}]}",
                             2, &idx, &nch), "not_found");
  cr_assert_eq(idx, 2);
  json_t *after = doc_snapshot(&d);
  cr_assert(json_equal(before, after), "the first two sub-ops were undone");
  json_decref(before);
  json_decref(after);
  cr_assert_str_eq(run_batch(&d, "{\"kind\":\"batch\",\"ops\":[]}", 2, &idx, &nch), "bad_request");
  cr_assert_str_eq(run_batch(&d, "{\"kind\":\"batch\",\"ops\":[{\"kind\":\"del\",\"item\":\"a\"},{\"kind\":\"del\",\"item\":\"a\"},"
                                  "{\"kind\":\"del\",\"item\":\"a\"},{\"kind\":\"del\",\"item\":\"a\"}]}", 2, &idx, &nch), "too_large");
  cr_assert_str_eq(run_batch(&d, "{\"kind\":\"batch\",\"ops\":[{\"kind\":\"batch\",\"ops\":[]}]}", 2, &idx, &nch), "bad_request");
  cr_assert_eq(idx, 0);
  cr_assert_str_eq(run_batch(&d, "{\"kind\":\"batch\",\"ops\":[{\"kind\":\"del\",\"item\":\"a\"},{\"kind\":\"set\",\"item\":\"a\"}]}", 2, &idx, &nch), "bad_request");
  cr_assert_eq(idx, 1);
  cr_assert_not_null(doc_get(&d, "a"));
  doc_free(&d);
}

/* Parses a text op; returns the error code or "ok". */
static const char *text_parse(const char *op_json) {
  static char code[32];
  json_t *op = J(op_json);
  sync_text t;
  sync_err err;
  const char *res = sync_text_parse(op, &lim, &t, &err) == 0 ? "ok" : err.code;
  snprintf(code, sizeof code, "%s", res);
  if (!strcmp(res, "ok")) text_op_free(t.op);
  else cr_assert_null(t.op, "no op is left behind on failure");
  json_decref(op);
  return code;
}

Test(doc, text_ops_that_change_nothing_are_refused) {
  cr_assert_str_eq(text_parse("{\"item\":\"a\",\"field\":\"f\",\"rev\":0,\"ops\":[]}"), "invalid_field");
  cr_assert_str_eq(text_parse("{\"item\":\"a\",\"field\":\"f\",\"rev\":0,\"ops\":[3]}"), "invalid_field");
  cr_assert_str_eq(text_parse("{\"item\":\"a\",\"field\":\"f\",\"rev\":0,\"ops\":[1,2]}"), "invalid_field");
  cr_assert_str_eq(text_parse("{\"item\":\"a\",\"field\":\"f\",\"rev\":0,\"ops\":[1,\"x\"]}"), "ok");
  cr_assert_str_eq(text_parse("{\"item\":\"a\",\"field\":\"f\",\"rev\":0,\"ops\":[{\"d\":1}]}"), "ok");
}

/* Applies a text op made at rev to item a's field f; "ok" or the code. */
static const char *text_run(doc *d, const char *field, uint64_t rev, const char *ops_json, uint64_t seq) {
  static char code[32];
  char opj[256];
  snprintf(opj, sizeof opj, "{\"item\":\"a\",\"field\":\"%s\",\"rev\":%llu,\"ops\":%s}", field,
           (unsigned long long)rev, ops_json);
  json_t *op = J(opj);
  sync_text t;
  sync_err err;
  char *f = NULL;
  const char *res = "ok";
  if (sync_text_parse(op, &lim, &t, &err) != 0) res = err.code;
  else if (sync_text_apply(d, &t, t.op, seq, &lim, &err) != 0) res = err.code;
  text_op_free(t.op);
  free(f);
  snprintf(code, sizeof code, "%s", res);
  json_decref(op);
  return code;
}

Test(doc, incarnations_have_a_gen_and_revisions_start_there) {
  doc d;
  doc_init(&d);
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"f\":\"\"}}", 4, NULL), "ok");
  cr_assert_eq(doc_get(&d, "a")->gen, 4);
  cr_assert_eq(doc_text_rev(&d, "a", "f"), 4, "a field that never held text is at gen");
  cr_assert_eq(doc_text_rev(&d, "a", "nothing"), 4);
  cr_assert_eq(doc_text_rev(&d, "missing", "f"), 0);
  char *rj = doc_item_revs_json(doc_get(&d, "a"));
  cr_assert_str_eq(rj, "{\"\":4}", "the gen is stored even without text fields");
  free(rj);
  cr_assert_str_eq(text_run(&d, "f", 4, "[\"ab\"]", 5), "ok");
  cr_assert_eq(doc_text_rev(&d, "a", "f"), 5);
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"g\":1}}", 6, NULL), "ok");
  cr_assert_eq(doc_get(&d, "a")->gen, 4, "a set on an existing item keeps its gen");
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"f\":\"x\"}}", 7, NULL), "ok");
  cr_assert_eq(doc_text_rev(&d, "a", "f"), 6, "a set resets a text field: one more");
  char *t = item_text(&d, "a");
  cr_assert_str_eq(t, "{\"fields\":{\"f\":\"x\",\"g\":1},\"revs\":{\"f\":6},\"version\":7}");
  free(t);
  /* del and create again: a new incarnation above every earlier revision */
  cr_assert_str_eq(run(&d, "{\"kind\":\"del\",\"item\":\"a\"}", 8, NULL), "ok");
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"f\":\"\"}}", 9, NULL), "ok");
  cr_assert_eq(doc_get(&d, "a")->gen, 9);
  cr_assert_eq(doc_text_rev(&d, "a", "f"), 9);
  cr_assert_null(doc_get(&d, "a")->revs, "the old revisions went with the old item");
  doc_free(&d);
}

Test(doc, gen_and_revs_round_trip_through_the_stored_revs_json) {
  doc d;
  doc_init(&d);
  cr_assert_eq(doc_load(&d, "a", "{\"f\":\"hi\"}", 10, "{\"\":5,\"f\":7}", 8), WSY_OK);
  const doc_item *it = doc_get(&d, "a");
  cr_assert_eq(it->gen, 5);
  cr_assert_eq(doc_text_rev(&d, "a", "f"), 7);
  cr_assert_eq(doc_text_rev(&d, "a", "g"), 5);
  char *rj = doc_item_revs_json(it);
  cr_assert_str_eq(rj, "{\"f\":7,\"\":5}", "the revisions in order, then the gen");
  json_t *back = J(rj);
  cr_assert_eq(json_integer_value(json_object_get(back, "")), 5);
  cr_assert_eq(json_integer_value(json_object_get(back, "f")), 7);
  cr_assert_eq(json_object_size(back), 2);
  json_decref(back);
  free(rj);
  char *t = item_text(&d, "a");
  cr_assert_str_eq(t, "{\"fields\":{\"f\":\"hi\"},\"revs\":{\"f\":7},\"version\":8}");
  free(t);
  /* stored before gens: gen 0, revisions as they were */
  cr_assert_eq(doc_load(&d, "b", "{\"f\":\"x\"}", 9, "{\"f\":3}", 4), WSY_OK);
  cr_assert_eq(doc_get(&d, "b")->gen, 0);
  cr_assert_eq(doc_text_rev(&d, "b", "f"), 3);
  cr_assert_eq(doc_text_rev(&d, "b", "g"), 0);
  rj = doc_item_revs_json(doc_get(&d, "b"));
  cr_assert_str_eq(rj, "{\"f\":3}");
  free(rj);
  cr_assert_eq(doc_load(&d, "c", "{}", 2, "{\"\":6}", 6), WSY_OK);
  cr_assert_null(doc_get(&d, "c")->revs);
  cr_assert_eq(doc_get(&d, "c")->gen, 6);
  cr_assert_eq(doc_load(&d, "e", "{}", 2, NULL, 6), WSY_OK);
  cr_assert_null(doc_item_revs_json(doc_get(&d, "e")));
  doc_free(&d);
}

Test(doc, a_failed_batch_restores_the_gen) {
  doc d;
  doc_init(&d);
  cr_assert_str_eq(run(&d, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{}}", 1, NULL), "ok");
  json_t *b = J("{\"kind\":\"batch\",\"ops\":[{\"kind\":\"del\",\"item\":\"a\"},{\"kind\":\"set\",\"item\":\"a\",\"fields\":{}},"
                "{\"kind\":\"del\",\"item\":\"missing\"}]}");
  sync_op *subs;
  size_t n, index, nch;
  sync_err err;
  sync_change *ch;
  cr_assert_eq(sync_batch_parse(b, &lim, 10, &subs, &n, &err, &index), 0);
  cr_assert_neq(sync_batch_apply(&d, subs, n, 2, &lim, &ch, &nch, &err, &index), 0);
  cr_assert_eq(doc_get(&d, "a")->gen, 1);
  wsy_free(subs);
  json_decref(b);
  doc_free(&d);
}

/* A field value's limit counts its compact JSON: a string up to the limit
 * passes, one byte more is too large, and a short string of characters
 * that escape to six bytes each is counted, not assumed to fit (lim:
 * max_field_size 64). */
Test(doc, field_size_counts_escapes_at_the_limit) {
  doc d;
  doc_init(&d);
  char op[256], s[80];
  for (int n = 60; n <= 63; n++) { /* plain: n + 2 bytes */
    memset(s, 'a', (size_t)n);
    s[n] = '\0';
    snprintf(op, sizeof op, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"f\":\"%s\"}}", s);
    cr_assert_str_eq(run(&d, op, (uint64_t)n, NULL), n <= 62 ? "ok" : "too_large", "plain string of %d", n);
  }
  for (int n = 9; n <= 12; n++) { /* \u0001 each: 6n + 2 bytes */
    size_t k = 0;
    for (int i = 0; i < n; i++) k += (size_t)snprintf(s + k, sizeof s - k, "\\u0001");
    snprintf(op, sizeof op, "{\"kind\":\"set\",\"item\":\"a\",\"fields\":{\"f\":\"%s\"}}", s);
    cr_assert_str_eq(run(&d, op, (uint64_t)(100 + n), NULL), 6 * n + 2 <= 64 ? "ok" : "too_large",
                     "%d control characters", n);
  }
  doc_free(&d);
}
