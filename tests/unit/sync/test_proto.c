/* Unit tests for the message parser of src/sync/proto.c (PROTOCOL.md 1.1):
 * numbers jansson cannot hold become markers instead of failing the text,
 * at the boundaries jansson itself uses; everything else is parsed (or
 * refused) as before; and the nesting count (containers, not scalars). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "../../../src/sync/proto.h"

static json_t *P(const char *text) {
  json_error_t e;
  return proto_parse(text, strlen(text), &e);
}

/* The member z of {"z": <num>} after parsing: a marker or the number. */
static int is_marker_num(const char *num) {
  char text[200];
  snprintf(text, sizeof text, "{\"z\":%s}", num);
  json_t *j = P(text);
  cr_assert_not_null(j, "%s did not parse", text);
  int m = sync_is_number_marker(json_object_get(j, "z"));
  if (!m) cr_assert(json_is_number(json_object_get(j, "z")), "%s: a number", text);
  json_decref(j);
  return m;
}

Test(proto_parse, numbers_at_the_boundaries_jansson_uses) {
  cr_assert_not(is_marker_num("9223372036854775807"));
  cr_assert(is_marker_num("9223372036854775808"));
  cr_assert_not(is_marker_num("-9223372036854775808"));
  cr_assert(is_marker_num("-9223372036854775809"));
  cr_assert(is_marker_num("100000000000000000000"));
  cr_assert_not(is_marker_num("1e308"));
  cr_assert(is_marker_num("1e309"));
  cr_assert(is_marker_num("-1.8e308"));
  cr_assert(is_marker_num("1E+400"));
  cr_assert_not(is_marker_num("1e-400")); /* an underflow is 0 to jansson */
  cr_assert_not(is_marker_num("100000000000000000000.0")); /* a real that fits */
  cr_assert_not(is_marker_num("0"));
}

Test(proto_parse, markers_go_where_the_numbers_were_and_nowhere_else) {
  json_t *j = P("{\"a\":[1,100000000000000000000,{\"b\":-1e999}],\"s\":\"1e999 \\\" 100000000000000000000\","
                "\"id\":7,\"c\":1e999}");
  cr_assert_not_null(j);
  json_t *a = json_object_get(j, "a");
  cr_assert_eq(json_integer_value(json_array_get(a, 0)), 1);
  cr_assert(sync_is_number_marker(json_array_get(a, 1)));
  cr_assert(sync_is_number_marker(json_object_get(json_array_get(a, 2), "b")));
  cr_assert_str_eq(json_string_value(json_object_get(j, "s")), "1e999 \" 100000000000000000000");
  cr_assert(json_is_integer(json_object_get(j, "id")));
  cr_assert_eq(json_integer_value(json_object_get(j, "id")), 7);
  cr_assert(sync_is_number_marker(json_object_get(j, "c")));
  cr_assert(sync_has_number_marker(a));
  cr_assert_not(sync_has_number_marker(json_object_get(j, "s")));
  /* a marker is no valid document value, whatever the depth allowed */
  cr_assert_not(sync_value_ok(json_array_get(a, 1), 16));
  cr_assert_not(sync_value_ok(a, 16));
  cr_assert(sync_value_ok(json_array_get(a, 0), 16));
  json_decref(j);
}

Test(proto_parse, what_is_not_json_stays_not_json) {
  const char *bad[] = {
    "{\"z\":1e400,",                          /* truncated after the number */
    "{\"z\":1e400,\"y\":\"\\u0000\"}",        /* U+0000 after it: refused, not a placeholder */
    "{\"y\":\"a\\u0000\",\"z\":1e400}",       /* and before it */
    "{\"z\":1e400,\"z\":1}",                  /* a duplicate member */
    "{\"z\":100000000000000000000} x",        /* trailing garbage */
    "{\"z\":1e400,\"y\":01}",                 /* a bad number after it */
    "{\"y\":\"\\u0000\"}",                    /* U+0000 alone, as ever */
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    json_error_t e;
    json_t *j = proto_parse(bad[i], strlen(bad[i]), &e);
    cr_assert_null(j, "%s parsed", bad[i]);
  }
  /* an escaped backslash before u0000 is no U+0000 */
  json_t *j = P("{\"y\":\"\\\\u0000\",\"z\":1e400}");
  cr_assert_not_null(j);
  cr_assert_str_eq(json_string_value(json_object_get(j, "y")), "\\u0000");
  json_decref(j);
}

Test(proto_parse, many_big_numbers_in_one_message) {
  size_t n = 20000;
  char *text = malloc(n * 8 + 16);
  size_t o = 0;
  o += (size_t)sprintf(text + o, "[");
  for (size_t i = 0; i < n; i++) o += (size_t)sprintf(text + o, "%s1e400", i ? "," : "");
  o += (size_t)sprintf(text + o, "]");
  json_error_t e;
  json_t *j = proto_parse(text, o, &e);
  cr_assert_not_null(j, "%s", e.text);
  cr_assert_eq(json_array_size(j), n);
  for (size_t i = 0; i < n; i++) cr_assert(sync_is_number_marker(json_array_get(j, i)));
  json_decref(j);
  free(text);
}

static json_t *nest(int arrays, const char *leaf) {
  char text[400];
  int o = sprintf(text, "{\"x\":");
  for (int i = 0; i < arrays; i++) text[o++] = '[';
  o += sprintf(text + o, "%s", leaf);
  for (int i = 0; i < arrays; i++) text[o++] = ']';
  sprintf(text + o, "}");
  return P(text);
}

Test(proto_too_deep, containers_count_scalars_do_not) {
  const char *leaves[] = {"1", "", "\"s\"", "1e400"};
  for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++) {
    json_t *ok = nest(31, leaves[i]), *deep = nest(32, leaves[i]);
    cr_assert_not(proto_too_deep(ok, 1, 32), "32 levels with leaf '%s' pass", leaves[i]);
    cr_assert(proto_too_deep(deep, 1, 32), "33 levels with leaf '%s' do not", leaves[i]);
    json_decref(ok);
    json_decref(deep);
  }
}
