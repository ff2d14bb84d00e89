/* yjs_oracle.c -- src/yjs driven by JSON lines, so that
 * tests/e2e/yjs-oracle.test.mjs can compare it with the yjs npm package and
 * bench/yjs-merge.mjs can time it. Updates travel as base64.
 *
 * Each input line is one request; each gets exactly one output line:
 *   {"fn":"validate","update":B}             -> {"result":true}
 *   {"fn":"merge","updates":[B,...]}          -> {"result":B}   (Y.mergeUpdates)
 *   {"fn":"compact","updates":[B,...]}        -> {"result":B}   (merge + compaction)
 *   {"fn":"sv","update":B}                    -> {"result":B}   (Y.encodeStateVectorFromUpdate)
 *   {"fn":"diff","update":B,"sv":B}           -> {"result":B}   (Y.diffUpdate)
 *   {"fn":"bench_merge","updates":[...],"rounds":N}
 *        -> {"result":B,"ns":[t1,...]}: the nanoseconds of each of N merges,
 *           the decoding of the request not included
 * or by {"error":"...","code":"INVAL"} (wsy_errname of the failure).
 *
 * Build: make build/yjs-oracle (or build-asan/yjs-oracle). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../src/common/wsy.h"
#include "../../src/yjs/yupdate.h"

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static json_t *b64_encode(const uint8_t *p, size_t n) {
  char *s = wsy_malloc(4 * (n / 3 + 1) + 1);
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                 (i + 2 < n ? p[i + 2] : 0);
    s[o++] = B64[v >> 18 & 63];
    s[o++] = B64[v >> 12 & 63];
    s[o++] = i + 1 < n ? B64[v >> 6 & 63] : '=';
    s[o++] = i + 2 < n ? B64[v & 63] : '=';
  }
  json_t *j = json_stringn(s, o);
  wsy_free(s);
  return j;
}

/* Decodes a base64 JSON string; NULL when v is not one. *n gets the length. */
static uint8_t *b64_decode(json_t *v, size_t *n) {
  if (!json_is_string(v)) return NULL;
  const char *s = json_string_value(v);
  size_t len = json_string_length(v), o = 0;
  uint8_t *out = wsy_malloc(len / 4 * 3 + 3);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len && s[i] != '='; i++) {
    const char *c = strchr(B64, s[i]);
    if (!c || !s[i]) {
      wsy_free(out);
      return NULL;
    }
    acc = acc << 6 | (uint32_t)(c - B64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
    }
  }
  *n = o;
  return out;
}

static json_t *error(int code, const char *msg) {
  return json_pack("{s:s,s:s}", "error", msg, "code", wsy_errname(code));
}

static json_t *result(int rc, ybuf *out, const char *err) {
  json_t *r = rc ? error(rc, err) : json_pack("{s:o}", "result", b64_encode(out->p, out->len));
  ybuf_free(out);
  return r;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static json_t *answer(json_t *req) {
  char err[256] = "";
  ybuf out = {0};
  int rc;
  const char *fn = json_string_value(json_object_get(req, "fn"));
  if (!fn) return error(WSY_INVAL, "fn must be a string");
  json_t *ups = json_object_get(req, "updates");
  if (ups) {
    size_t count = json_array_size(ups);
    uint8_t **bufs = wsy_calloc(count + 1, sizeof *bufs);
    size_t *lens = wsy_calloc(count + 1, sizeof *lens);
    json_t *res = NULL;
    for (size_t i = 0; i < count && !res; i++)
      if (!(bufs[i] = b64_decode(json_array_get(ups, i), &lens[i])))
        res = error(WSY_INVAL, "updates must be base64 strings");
    const uint8_t *const *cu = (const uint8_t *const *)bufs;
    if (res) {
    } else if (!strcmp(fn, "merge")) {
      rc = yupdate_merge(cu, lens, count, &out, err, sizeof err);
      res = result(rc, &out, err);
    } else if (!strcmp(fn, "compact")) {
      rc = yupdate_compact_many(cu, lens, count, &out, err, sizeof err);
      res = result(rc, &out, err);
    } else if (!strcmp(fn, "bench_merge")) {
      json_int_t rounds = json_integer_value(json_object_get(req, "rounds"));
      json_t *ns = json_array();
      rc = 0;
      for (json_int_t k = 0; k < (rounds > 0 ? rounds : 1) && !rc; k++) {
        uint64_t t0 = now_ns();
        rc = yupdate_merge(cu, lens, count, &out, err, sizeof err);
        json_array_append_new(ns, json_integer((json_int_t)(now_ns() - t0)));
      }
      res = result(rc, &out, err);
      if (!rc) json_object_set(res, "ns", ns);
      json_decref(ns);
    } else {
      res = error(WSY_INVAL, "unknown fn");
    }
    for (size_t i = 0; i < count; i++) wsy_free(bufs[i]);
    wsy_free(bufs);
    wsy_free(lens);
    return res;
  }
  size_t n, svn;
  uint8_t *u = b64_decode(json_object_get(req, "update"), &n);
  if (!u) return error(WSY_INVAL, "update must be a base64 string");
  json_t *res;
  if (!strcmp(fn, "validate")) {
    rc = yupdate_validate(u, n, err, sizeof err);
    res = rc ? error(rc, err) : json_pack("{s:b}", "result", 1);
  } else if (!strcmp(fn, "sv")) {
    rc = yupdate_state_vector(u, n, &out, err, sizeof err);
    res = result(rc, &out, err);
  } else if (!strcmp(fn, "diff")) {
    uint8_t *sv = b64_decode(json_object_get(req, "sv"), &svn);
    if (!sv) {
      res = error(WSY_INVAL, "sv must be a base64 string");
    } else {
      rc = yupdate_diff(u, n, sv, svn, &out, err, sizeof err);
      res = result(rc, &out, err);
    }
    wsy_free(sv);
  } else {
    res = error(WSY_INVAL, "unknown fn");
  }
  wsy_free(u);
  return res;
}

int main(void) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, stdin)) > 0) {
    json_error_t e;
    json_t *req = json_loadb(line, (size_t)n, 0, &e), *res;
    res = req ? answer(req) : error(WSY_INVAL, e.text);
    char *text = json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY);
    fputs(text, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    free(text);
    json_decref(res);
    json_decref(req);
  }
  free(line);
  return ferror(stdout) ? 1 : 0;
}
