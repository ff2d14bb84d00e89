/* text_op.c -- libFuzzer target for the text OT type (src/sync/text.c).
 *
 * Input: JSON {"doc": string, "op": [...], "other": [...]} (anything else is
 * fine too: it must just not crash). Checked:
 *  - parsing never crashes; a rejected op gives NULL and a message;
 *  - an accepted op is a fixed point of to_json -> from_json, and its
 *    wire form follows the normal form (no empty, adjacent same-kind or
 *    trailing retain components);
 *  - text_apply result is UTF-8 and has doc - deleted + inserted code points;
 *    it fails exactly when the op consumes more code points than doc has;
 *  - when both ops apply to doc, TP1 holds for both sides, and compose agrees
 *    with applying in turn; transform and compose of any two ops (also
 *    unrelated lengths) do not crash;
 *  - text_apply takes the raw input as a document exactly when
 *    wsy_utf8_scan does, unchanged by an empty op, and text_cp_len agrees
 *    with the scan's count of code points;
 *  - a rope (src/sync/rope.c) made from doc and edited by the op holds what
 *    text_apply returns, or fails when it fails, and stays unchanged then.
 * A failed check aborts.
 *
 * Run: make build-fuzz/text_op && build-fuzz/text_op fuzz/corpus/text_op */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/common/utf8.h"
#include "../src/common/wsy.h"
#include "../src/sync/rope.h"
#include "../src/sync/text.h"

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "text_op fuzz: check failed at line %d: %s\n", __LINE__, #cond); \
      abort();                                                                      \
    }                                                                               \
  } while (0)

static const text_limits lim = {.max_components = 64, .max_insert_bytes = 1024};

/* Parses; checks the result's normal form and its round trip. */
static text_op *parse(json_t *j) {
  text_op *op = (text_op *)1;
  char err[128] = "";
  int rc = text_op_from_json(j, &lim, &op, err, sizeof err);
  if (rc != WSY_OK) {
    CHECK(op == NULL);
    CHECK(rc == WSY_INVAL || rc == WSY_TOO_LARGE || rc == WSY_BAD_UTF8);
    CHECK(err[0] != '\0');
    return NULL;
  }
  json_t *w = text_op_to_json(op);
  size_t n = json_array_size(w);
  CHECK(n == text_op_count(op));
  for (size_t i = 0; i < n; i++) {
    json_t *c = json_array_get(w, i), *prev = i ? json_array_get(w, i - 1) : NULL;
    CHECK(json_is_integer(c) || (json_is_string(c) && json_string_length(c) > 0) ||
          json_integer_value(json_object_get(c, "d")) > 0);
    if (prev) CHECK(json_typeof(prev) != json_typeof(c));
  }
  if (n) CHECK(!json_is_integer(json_array_get(w, n - 1)));
  text_op *back;
  CHECK(text_op_from_json(w, NULL, &back, NULL, 0) == WSY_OK);
  json_t *w2 = text_op_to_json(back);
  CHECK(json_equal(w, w2));
  json_decref(w2);
  json_decref(w);
  text_op_free(back);
  return op;
}

/* Inserted code points minus deleted ones. */
static long long growth(const text_op *op) {
  json_t *w = text_op_to_json(op);
  long long g = 0;
  size_t i;
  json_t *c;
  json_array_foreach(w, i, c) {
    if (json_is_string(c)) g += (long long)text_cp_len(json_string_value(c), json_string_length(c));
    else if (json_is_object(c)) g -= json_integer_value(json_object_get(c, "d"));
  }
  json_decref(w);
  return g;
}

static int same(const char *a, size_t alen, const char *b, size_t blen) {
  return alen == blen && memcmp(a, b, alen) == 0;
}

/* Applies; returns the new text or NULL, checking either outcome. */
static char *apply(const char *doc, size_t len, const text_op *op, size_t *outlen) {
  char *out, err[128];
  size_t cps;
  CHECK(wsy_utf8_scan((const uint8_t *)doc, len, &cps, NULL) == WSY_OK);
  int rc = text_apply(doc, len, op, &out, outlen, err, sizeof err);
  rope *r = rope_new(doc, len);
  int rrc = rope_apply(r, op, SIZE_MAX, err, sizeof err);
  size_t rlen;
  char *rs = rope_dump(r, &rlen);
  if (text_op_base_len(op) > cps) {
    CHECK(rc == WSY_INVAL && out == NULL);
    CHECK(rrc == WSY_INVAL && same(rs, rlen, doc, len));
    wsy_free(rs);
    rope_free(r);
    return NULL;
  }
  CHECK(rc == WSY_OK);
  CHECK(rrc == WSY_OK && same(rs, rlen, out, *outlen) && rope_cps(r) == text_cp_len(out, *outlen));
  wsy_free(rs);
  rope_free(r);
  size_t ocps;
  CHECK(wsy_utf8_scan((const uint8_t *)out, *outlen, &ocps, NULL) == WSY_OK);
  CHECK((long long)ocps == (long long)cps + growth(op));
  CHECK(out[*outlen] == '\0');
  return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t raw_cps = 0, outlen;
  int raw = wsy_utf8_scan(data, size, &raw_cps, NULL);
  json_t *empty = json_array();
  text_op *none;
  char *out, err[128];
  CHECK(text_op_from_json(empty, NULL, &none, NULL, 0) == WSY_OK);
  CHECK(text_apply((const char *)data, size, none, &out, &outlen, err, sizeof err) == raw);
  if (raw == WSY_OK) CHECK(same(out, outlen, (const char *)data, size) && text_cp_len(out, outlen) == raw_cps);
  wsy_free(out);
  text_op_free(none);
  json_decref(empty);

  json_error_t e;
  json_t *in = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &e);
  if (!in) return 0;
  json_t *jdoc = json_object_get(in, "doc");
  text_op *a = parse(json_object_get(in, "op"));
  text_op *b = parse(json_object_get(in, "other"));
  if (a && b) {
    /* Any two ops: total functions. */
    for (int side = TEXT_LEFT; side <= TEXT_RIGHT; side++) text_op_free(text_transform(a, b, side));
    text_op_free(text_compose(a, b));
  }
  if (json_is_string(jdoc)) {
    const char *doc = json_string_value(jdoc);
    size_t len = json_string_length(jdoc), la = 0, lb = 0;
    char *da = a ? apply(doc, len, a, &la) : NULL;
    char *db = b ? apply(doc, len, b, &lb) : NULL;
    if (da && db) {
      for (int side = TEXT_LEFT; side <= TEXT_RIGHT; side++) {
        text_op *b2 = text_transform(b, a, side), *a2 = text_transform(a, b, !side);
        size_t l1, l2, l3;
        char *dab = apply(da, la, b2, &l1), *dba = apply(db, lb, a2, &l2);
        CHECK(dab && dba && same(dab, l1, dba, l2)); /* TP1 */
        text_op *c = text_compose(a, b2);
        char *dc = apply(doc, len, c, &l3);
        CHECK(dc && same(dc, l3, dab, l1));
        wsy_free(dab), wsy_free(dba), wsy_free(dc);
        text_op_free(a2), text_op_free(b2), text_op_free(c);
      }
    }
    if (da && b) {
      /* other as an op on a's result, when it fits there. */
      size_t l1, l2;
      char *two = apply(da, la, b, &l1);
      text_op *c = text_compose(a, b);
      char *one = apply(doc, len, c, &l2);
      CHECK((two == NULL) == (one == NULL));
      if (two) CHECK(same(one, l2, two, l1));
      wsy_free(one), wsy_free(two);
      text_op_free(c);
    }
    wsy_free(da), wsy_free(db);
  }
  text_op_free(a);
  text_op_free(b);
  json_decref(in);
  return 0;
}
