/* libFuzzer target for the fast reader (src/common/jsonr.c) against jansson.
 *
 * jsonr_parse may decline any text (NULL: the caller then asks jansson),
 * but a tree it returns must be the one jansson returns for the same text
 * with JSON_REJECT_DUPLICATES: jansson must accept the text, and the two
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_t *fast = jsonr_parse((const char *)data, size);
  if (!fast) return 0;
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
