/* text_oracle.c -- src/sync/text.c driven by JSON lines, so that
 * tests/e2e/text-oracle.test.mjs can compare it with ot-text-unicode.
 *
 * Each input line is one request; each gets exactly one output line:
 *   {"fn":"transform","op":[...],"other":[...],"side":"left"|"right"}
 *   {"fn":"compose","a":[...],"b":[...]}
 *   {"fn":"apply","doc":"...","op":[...]}
 *   {"fn":"normalize","op":[...]}
 * answered by {"result":R} (an op in wire form, or the new text) or by
 * {"error":"..."} when the request or one of its ops is invalid.
 *
 * Build: make build/text-oracle (or build-asan/text-oracle). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/common/wsy.h"
#include "../../src/sync/text.h"

static json_t *error(const char *fmt, const char *arg) {
  char msg[320];
  snprintf(msg, sizeof msg, fmt, arg);
  return json_pack("{s:s}", "error", msg);
}

/* Parses member name of req; NULL with *res set to the error. */
static text_op *op_of(json_t *req, const char *name, json_t **res) {
  char err[256];
  text_op *op;
  json_t *v = json_object_get(req, name);
  if (!v) {
    *res = error("missing member %s", name);
    return NULL;
  }
  if (text_op_from_json(v, NULL, &op, err, sizeof err) != WSY_OK) {
    char msg[300];
    snprintf(msg, sizeof msg, "%s: %s", name, err);
    *res = error("%s", msg);
    return NULL;
  }
  return op;
}

static json_t *result_op(text_op *op) {
  json_t *r = json_pack("{s:o}", "result", text_op_to_json(op));
  text_op_free(op);
  return r;
}

static json_t *answer(json_t *req) {
  json_t *res = NULL;
  const char *fn = json_string_value(json_object_get(req, "fn"));
  if (!fn) return error("%s", "fn must be a string");
  if (!strcmp(fn, "normalize")) {
    text_op *op = op_of(req, "op", &res);
    return op ? result_op(op) : res;
  }
  if (!strcmp(fn, "transform")) {
    const char *side = json_string_value(json_object_get(req, "side"));
    if (!side || (strcmp(side, "left") && strcmp(side, "right")))
      return error("%s", "side must be 'left' or 'right'");
    text_op *op = op_of(req, "op", &res), *other = op ? op_of(req, "other", &res) : NULL;
    if (op && other) res = result_op(text_transform(op, other, !strcmp(side, "left") ? TEXT_LEFT : TEXT_RIGHT));
    text_op_free(op);
    text_op_free(other);
    return res;
  }
  if (!strcmp(fn, "compose")) {
    text_op *a = op_of(req, "a", &res), *b = a ? op_of(req, "b", &res) : NULL;
    if (a && b) res = result_op(text_compose(a, b));
    text_op_free(a);
    text_op_free(b);
    return res;
  }
  if (!strcmp(fn, "apply")) {
    json_t *doc = json_object_get(req, "doc");
    if (!json_is_string(doc)) return error("%s", "doc must be a string");
    text_op *op = op_of(req, "op", &res);
    if (!op) return res;
    char *out, err[256];
    size_t outlen;
    if (text_apply(json_string_value(doc), json_string_length(doc), op, &out, &outlen, err, sizeof err) != WSY_OK) {
      res = error("%s", err);
    } else {
      json_t *text = json_stringn(out, outlen);
      res = text ? json_pack("{s:o}", "result", text) : error("%s", "the result is not UTF-8");
      wsy_free(out);
    }
    text_op_free(op);
    return res;
  }
  return error("unknown fn '%.64s'", fn);
}

int main(void) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, stdin)) > 0) {
    json_error_t e;
    json_t *req = json_loadb(line, (size_t)n, 0, &e), *res;
    res = req ? answer(req) : error("bad JSON: %s", e.text);
    char *text = json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY);
    fputs(text, stdout);
    fputc('\n', stdout);
    free(text);
    json_decref(res);
    json_decref(req);
  }
  free(line);
  return ferror(stdout) || fflush(stdout) ? 1 : 0;
}
