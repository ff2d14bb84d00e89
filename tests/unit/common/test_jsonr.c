/* test_jsonr.c -- the fast reader (src/common/jsonr.c): the messages clients
 * send every second are read by it (not handed back to jansson), and give
 * jansson's tree; the texts jansson must judge are handed back. The
 * differential fuzzer (fuzz/json_read.c) covers arbitrary input. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/common/jsonr.h"

/* Read fast, and equal to jansson's tree, types and member order included. */
static void fast_and_same(const char *text) {
  json_t *got = jsonr_parse(text, strlen(text), JSONR_MAX_DEPTH);
  cr_assert_not_null(got, "not read fast: %s", text);
  json_error_t e;
  json_t *want = json_loadb(text, strlen(text), JSON_REJECT_DUPLICATES, &e);
  cr_assert_not_null(want, "jansson refuses %s: %s", text, e.text);
  cr_assert(json_equal(got, want), "different tree for %s", text);
  char *a = json_dumps(got, JSON_COMPACT), *b = json_dumps(want, JSON_COMPACT);
  cr_assert_str_eq(a, b);
  free(a);
  free(b);
  json_decref(got);
  json_decref(want);
}

static void declined(const char *text, size_t len) {
  json_t *got = jsonr_parse(text, len, JSONR_MAX_DEPTH);
  cr_assert_null(got, "read fast, but jansson must judge: %.*s", (int)len, text);
}

Test(jsonr, protocol_messages_are_read_fast) {
  fast_and_same("{\"type\":\"op\",\"id\":17,\"room\":\"board:1\",\"cid\":\"c-3f.12\",\"base\":4,"
                "\"op\":{\"kind\":\"set\",\"item\":\"card-7\",\"fields\":{\"title\":\"Ship \\\"it\\\"\\n\","
                "\"pos\":{\"x\":1.5,\"y\":-20},\"tags\":[\"a\",\"b\"],\"done\":false,\"due\":null}}}");
  fast_and_same("{\"type\":\"recv\",\"n\":9007199254740991}");
  fast_and_same("{\"type\":\"publish\",\"room\":\"chat\",\"data\":{\"text\":\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"}}");
  fast_and_same("{\"type\":\"presence\",\"room\":\"r\",\"state\":{}}");
  fast_and_same("[{\"type\":\"ping\",\"id\":\"a\"},{\"type\":\"recv\",\"n\":0}]"); /* a POST /v1/send body */
  fast_and_same(" \t\r\n{ \"a\" : [ ] , \"b\" : { } }\n");
  fast_and_same("{\"n\":[0,-0,1E2,1e-2,-0.0,2.5e+3,-9223372036854775808,9223372036854775807]}");
  fast_and_same("{\"esc\":\"\\\\ \\/ \\b \\f \\n \\r \\t\",\"\\\"k\\\"\":1}");
  fast_and_same("{\"path\":\"C:\\\\u0041\\\\\"}"); /* an escaped backslash before u: no \u escape */
}

Test(jsonr, deep_nesting_up_to_the_limit) {
  char text[2 * JSONR_MAX_DEPTH + 1];
  for (int i = 0; i < JSONR_MAX_DEPTH; i++) text[i] = '[', text[2 * JSONR_MAX_DEPTH - 1 - i] = ']';
  text[2 * JSONR_MAX_DEPTH] = '\0';
  fast_and_same(text);
  char deeper[2 * JSONR_MAX_DEPTH + 3];
  snprintf(deeper, sizeof deeper, "[%s]", text);
  declined(deeper, strlen(deeper));
}

Test(jsonr, texts_jansson_judges) {
  const char *texts[] = {
    "",                                 /* empty */
    "{\"a\":1,\"a\":2}",                /* duplicate member */
    "{\"a\":\"\\u0041\"}",              /* any \u escape */
    "{\"a\":\"\\ud800\"}",              /* a lone surrogate */
    "{\"a\":9223372036854775808}",      /* beyond int64: proto.c's marker */
    "{\"a\":1e400}",                    /* beyond a double */
    "{\"a\":01}", "{\"a\":1.}", "{\"a\":-}", "{\"a\":.5}", "{\"a\":+1}",
    "{\"a\":NaN}", "{\"a\":tru}", "{\"a\":1}/*c*/", "{\"a\":1,}", "[1,]",
    "1", "\"s\"", "null",               /* not an object or array */
    "{\"a\":1} 1", "{\"a\":1}x", "{\"a\":1} \"x", "{}{}", /* something after the value */
    "{\"a\":1}\v", "{\v\"a\":1}", "{\f}",  /* not JSON whitespace */
    "{\"a\":\"\xc0\xaf\"}",             /* overlong */
    "{\"a\":\"\xed\xa0\x80\"}",         /* a surrogate in UTF-8 */
    "{\"a\":\"\xf4\x90\x80\x80\"}",     /* above U+10FFFF */
    "{\"a\":\"\xe2\x82\"}",             /* cut short */
    "{\"\xff\":1}",                     /* in a member name */
    "{\"a\":\"tab\there\"}",            /* a raw control character */
    "{\"a\":[1,2}",                     /* unbalanced */
  };
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) declined(texts[i], strlen(texts[i]));
  declined("{\"a\":\"x\0y\"}", 11); /* a raw NUL */
}

Test(jsonr, a_depth_limit_of_the_caller) {
  const char *text = "{\"a\":{\"b\":[[1]]}}"; /* 4 levels */
  json_t *v = jsonr_parse(text, strlen(text), 4);
  cr_assert_not_null(v);
  json_decref(v);
  cr_assert_null(jsonr_parse(text, strlen(text), 3));
}

Test(jsonr, a_long_member_name_goes_to_jansson) {
  char text[400];
  memset(text, 'k', sizeof text);
  text[0] = '{', text[1] = '"';
  memcpy(text + 300, "\":1}", 5);
  declined(text, strlen(text));
}

/* Integers of up to 18 digits are read without strtoll; the lengths around
 * that bound, and int64's ends, give jansson's values. */
Test(jsonr, integers_around_the_fast_path) {
  fast_and_same("{\"a\":[0,-0,7,-7,123456789012345678,-123456789012345678,999999999999999999,"
                "-999999999999999999,1000000000000000000,-1000000000000000000,9223372036854775807,"
                "-9223372036854775808,12.5,-3e2]}");
  json_t *v = jsonr_parse("{\"a\":999999999999999999,\"b\":-0}", 31, JSONR_MAX_DEPTH);
  cr_assert_not_null(v);
  cr_assert_eq(json_integer_value(json_object_get(v, "a")), 999999999999999999LL);
  cr_assert(json_is_integer(json_object_get(v, "b")) && json_integer_value(json_object_get(v, "b")) == 0);
  json_decref(v);
  declined("{\"a\":-9223372036854775809}", 26);
  declined("{\"a\":99999999999999999999}", 26);
}

/* A member repeated in a nested object, or after others, is left to jansson
 * (which refuses it) however the object was filled. */
Test(jsonr, duplicates_anywhere_are_declined) {
  const char *texts[] = {
    "{\"a\":{\"x\":1,\"y\":2,\"x\":3}}",
    "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"a\":0}",
    "[{\"k\":[]},{\"k\":{},\"k\":null}]",
  };
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) declined(texts[i], strlen(texts[i]));
  fast_and_same("{\"a\":{\"x\":1},\"b\":{\"x\":1},\"x\":{\"a\":1,\"b\":2}}");
}

/* Strings: escapes in values and member names are decoded, a string longer
 * than the reader's stack buffer with escapes in it too, words of plain
 * bytes next to escapes and UTF-8; member names up to 256 bytes are read,
 * longer ones (and broken texts inside strings) are left to jansson. */
Test(jsonr, strings_escapes_and_member_names) {
  fast_and_same("{\"k\\n\\\"q\\\"\":\"a\\tb\",\"\":\"\",\"\\\\\":[\"\\/\\b\\f\\r\"]}");
  fast_and_same("{\"utf8\":\"abcdefgh\xc3\xa9ijklmnop\xe2\x82\xacqrstuvwx\\\"yz\"}");
  static char big[3000];
  size_t n = 0;
  n += (size_t)snprintf(big, sizeof big, "{\"long\":\"");
  for (int i = 0; i < 600; i++) n += (size_t)snprintf(big + n, sizeof big - n, i % 50 ? "x" : "\\n");
  snprintf(big + n, sizeof big - n, "\"}");
  fast_and_same(big);
  char key[300];
  for (int len = 255; len <= 257; len++) {
    char text[400];
    memset(key, 'k', (size_t)len);
    key[len] = '\0';
    snprintf(text, sizeof text, "{\"%s\":1}", key);
    if (len <= 256) fast_and_same(text);
    else declined(text, strlen(text));
  }
  const char *broken[] = {
    "{\"a\":\"\\x\"}", "{\"a\":\"abc", "{\"a\":\"abc\\", "{\"a\" 1}", "{\"a\":}", "{,}", "{\"a\":1 \"b\":2}",
    "[1 2]", "[tru]", "[nul]", "[falsey]", "[-]", "[1e]", "[1e+]", "[0x1]", "[1.e5]", "{\"a\":1}}", "[[]",
  };
  for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) declined(broken[i], strlen(broken[i]));
}
