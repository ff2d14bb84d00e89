/* libFuzzer target for the fast reader (src/common/jsonr.c) against jansson.
 *
 * jsonr_parse may decline any text (NULL: the caller then asks jansson),
 * but a tree it returns must be the one jansson returns for the same text
 * with JSON_REJECT_DUPLICATES, and nest no deeper than the limit it was
 * given (taken from the first byte): jansson must accept the text, and the two
 * trees must be equal with the same types (json_equal tells an integer
 * from a real) and encode to the same bytes (member order included).
 * Also checked: a text jansson refuses is never accepted, nothing crashes
 * or leaks.
 *
 * Run: make build-fuzz/json_read && build-fuzz/json_read fuzz/corpus/json_read */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/common/jsonr.h"

/* Containers nest this deep (the top level is 1; a scalar is 0). */
static int depth_of(const json_t *v) {
  int d = 0;
  const char *k;
  json_t *x;
  size_t i;
  if (json_is_object(v)) json_object_foreach((json_t *)v, k, x) if (depth_of(x) > d) d = depth_of(x);
  if (json_is_array(v)) json_array_foreach(v, i, x) if (depth_of(x) > d) d = depth_of(x);
  return json_is_object(v) || json_is_array(v) ? d + 1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The depth limit from the input, so that both sides of it are reached. */
  int max_depth = size ? 1 + data[0] % JSONR_MAX_DEPTH : JSONR_MAX_DEPTH;
  json_t *fast = jsonr_parse((const char *)data, size, max_depth);
  if (!fast) return 0;
  if (depth_of(fast) > max_depth) __builtin_trap();
  json_error_t e;
  json_t *ref = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &e);
  if (!ref || !json_equal(fast, ref)) __builtin_trap();
  char *a = json_dumps(fast, JSON_COMPACT), *b = json_dumps(ref, JSON_COMPACT);
  if (!a || !b || strcmp(a, b) != 0) __builtin_trap();
  free(a);
  free(b);
  json_decref(fast);
  json_decref(ref);
  return 0;
}
