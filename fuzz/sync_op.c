/* libFuzzer target: an op (as JSON text) parsed and applied to a small
 * document. Invariants: a rejected op leaves the document exactly as it was;
 * an accepted set leaves the item's stored fields equal to what sync_apply
 * reported; the hand-written encoder (src/common/jsonw.c) writes the same
 * bytes and counts the same length as jansson for every input value;
 * nothing crashes or leaks. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/common/jsonw.h"
#include "../src/sync/sync.h"

static const sync_limits lim = {.max_fields = 8, .max_field_size = 256, .max_item_size = 1024,
                                .max_depth = 4, .max_room_items = 4};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_error_t e;
  json_t *op = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &e);
  if (!op) return 0;
  char *want = json_dumps(op, JSON_COMPACT | JSON_ENCODE_ANY), *got = jw_dumps(op);
  if (strcmp(want, got) != 0 || jw_size(op) != strlen(want)) __builtin_trap();
  free(want);
  free(got);
  doc d;
  doc_init(&d);
  doc_load(&d, "a", "{\"x\":1,\"y\":[1,2]}", 17, NULL, 3);
  doc_load(&d, "b", "{}", 2, NULL, 5);
  json_t *before = doc_snapshot(&d);
  sync_op o;
  sync_err err;
  char *fields = NULL;
  if (sync_op_parse(op, &lim, &o, &err) != 0 || sync_apply(&d, &o, 9, &lim, &fields, &err) != 0) {
    json_t *after = doc_snapshot(&d);
    if (!json_equal(before, after)) __builtin_trap();
    json_decref(after);
  } else if (o.kind == SYNC_SET) {
    const doc_item *it = doc_get(&d, o.item);
    if (!it || it->version != 9 || !fields) __builtin_trap();
    json_t *f = json_loads(fields, 0, &e);
    if (!f || !json_equal(f, it->fields)) __builtin_trap();
    json_decref(f);
    /* the broadcast form is JSON and drops base */
    jw w = JW_INIT;
    sync_op_write(&w, &o);
    json_t *n = json_loads(w.p, 0, &e);
    if (!n || json_object_get(n, "base") || !json_equal(json_object_get(n, "fields"), o.fields)) __builtin_trap();
    json_decref(n);
    jw_free(&w);
  } else if (doc_get(&d, o.item) || fields) {
    __builtin_trap();
  }
  free(fields);
  json_decref(before);
  doc_free(&d);
  json_decref(op);
  return 0;
}
