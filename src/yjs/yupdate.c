/* yupdate.c -- merge, diff, state vector and compaction of Yjs v1 updates
 * (yupdate.h), streaming: one lazy reader per input, structs written as
 * they are decided, nothing integrated. */
#include "yjs_int.h"

#include <stdlib.h>
#include <string.h>

static void err_init(yerr *e, char *text, size_t len) {
  e->buf = text;
  e->len = len;
  e->set = 0;
  if (text && len) text[0] = '\0';
}

/* Reads the rest of r's structs (if any) and its delete set into ds. */
static int drain(yreader *r, ydelset *ds) {
  while (r->has_cur)
    if (yreader_next(r)) return WSY_INVAL;
  return yds_read(&r->rd, ds, r->index, r->err);
}

static int finish_out(int rc, ybuf *out, yerr *e) {
  if (rc) {
    out->len = 0;
    if (rc == WSY_NOMEM) yfail(e, rc, "out of memory");
    else if (rc == WSY_TOO_LARGE) yfail(e, rc, "result larger than %zu bytes", LIB0_MAX_OUTPUT);
    else yfail(e, rc, "invalid update");
  }
  return rc;
}

int yupdate_validate(const uint8_t *u, size_t n, char *err, size_t errlen) {
  yerr e;
  yreader r;
  ydelset ds = {0};
  err_init(&e, err, errlen);
  int rc = yreader_init(&r, u, n, 0, 0, &e);
  if (!rc) rc = drain(&r, &ds);
  yds_free(&ds);
  return rc;
}

/* ---- merge ----------------------------------------------------------------
 * Yjs's mergeUpdates sorts its readers before every step by (client
 * descending, clock ascending) and takes the first; its sort is stable, and
 * as readers only move forward, of two readers at the same position the one
 * that arrived there last comes first. A binary heap with that order (the
 * stamp) picks the same reader in O(log n) instead of a sort. */

static int heap_before(const yreader *a, const yreader *b) {
  if (a->cur.client != b->cur.client) return a->cur.client > b->cur.client;
  if (a->cur.clock != b->cur.clock) return a->cur.clock < b->cur.clock;
  return a->stamp > b->stamp;
}

static void sift_down(yreader **h, size_t n, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, m = i;
    if (l < n && heap_before(h[l], h[m])) m = l;
    if (l + 1 < n && heap_before(h[l + 1], h[m])) m = l + 1;
    if (m == i) return;
    yreader *t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
  }
}

static int gc_or_skip_join(ystruct *w, const ystruct *s) {
  if (w->kind == YS_ITEM || w->kind != s->kind) return 0; /* items never join lazily */
  w->len += s->len;
  return 1;
}

static int merge_structs(yreader **heap, size_t hn, ywriter *w) {
  uint64_t tick = 1;
  for (size_t i = 0; i < hn; i++) /* later than every initial stamp */
    if (heap[i]->stamp >= tick) tick = heap[i]->stamp + 1;
  ystruct cw; /* Yjs's currWrite */
  int have = 0, rc;
  for (size_t i = hn / 2; i-- > 0;) sift_down(heap, hn, i);
  while (hn > 0) {
    yreader *d = heap[0];
    uint64_t first = d->cur.client, before = d->cur.clock;
    if (have) {
      int iterated = 0;
      while (d->has_cur && d->cur.clock + d->cur.len <= cw.clock + cw.len &&
             d->cur.client >= cw.client) {
        if (yreader_next(d)) return WSY_INVAL;
        iterated = 1;
      }
      if (!d->has_cur || d->cur.client != first ||
          (iterated && d->cur.clock > cw.clock + cw.len))
        goto reheap;
      ystruct curr = d->cur;
      if (first != cw.client) {
        if ((rc = ywriter_put(w, &cw, 0))) return rc;
        cw = curr;
        if (yreader_next(d)) return WSY_INVAL;
      } else if (cw.clock + cw.len < curr.clock) {
        if (cw.kind == YS_SKIP) {
          cw.len = curr.clock + curr.len - cw.clock;
        } else {
          if ((rc = ywriter_put(w, &cw, 0))) return rc;
          ystruct skip = {.client = first, .clock = cw.clock + cw.len, .kind = YS_SKIP};
          skip.len = curr.clock - skip.clock;
          cw = skip;
        }
      } else {
        uint64_t diff = cw.clock + cw.len - curr.clock;
        if (diff > 0) {
          if (cw.kind == YS_SKIP && diff < cw.len) cw.len -= diff;
          else ystruct_slice(&curr, diff);
        }
        if (!gc_or_skip_join(&cw, &curr)) {
          if ((rc = ywriter_put(w, &cw, 0))) return rc;
          cw = curr;
          if (yreader_next(d)) return WSY_INVAL;
        }
      }
    } else {
      cw = d->cur;
      have = 1;
      if (yreader_next(d)) return WSY_INVAL;
    }
    while (d->has_cur && d->cur.client == first && d->cur.clock == cw.clock + cw.len &&
           d->cur.kind != YS_SKIP) {
      if ((rc = ywriter_put(w, &cw, 0))) return rc;
      cw = d->cur;
      if (yreader_next(d)) return WSY_INVAL;
    }
  reheap:
    if (!d->has_cur) {
      heap[0] = heap[--hn];
    } else if (d->cur.client != first || d->cur.clock != before) {
      d->stamp = tick++;
    }
    sift_down(heap, hn, 0);
  }
  return have ? ywriter_put(w, &cw, 0) : 0;
}

int yupdate_merge(const uint8_t *const *ups, const size_t *lens, size_t count, ybuf *out,
                  char *err, size_t errlen) {
  yerr e;
  int rc = 0;
  err_init(&e, err, errlen);
  out->len = 0;
  if (count == 1) {
    if (!(rc = yupdate_validate(ups[0], lens[0], err, errlen)))
      rc = lib0_write_bytes(out, ups[0], lens[0]);
    return finish_out(rc, out, &e);
  }
  yreader *rs = count ? wsy_try_realloc(NULL, count * sizeof *rs) : NULL;
  yreader **heap = count ? wsy_try_realloc(NULL, count * sizeof *heap) : NULL;
  ywriter w = {0};
  ydelset ds = {0};
  size_t hn = 0;
  if (count && (!rs || !heap)) rc = WSY_NOMEM;
  for (size_t i = 0; !rc && i < count; i++) {
    if ((rc = yreader_init(&rs[i], ups[i], lens[i], i, 1, &e))) break;
    rs[i].stamp = count - i;
    if (rs[i].has_cur) heap[hn++] = &rs[i];
  }
  if (!rc) rc = merge_structs(heap, hn, &w);
  for (size_t i = 0; !rc && i < count; i++) rc = drain(&rs[i], &ds);
  if (!rc) rc = ywriter_finish(&w, out);
  if (!rc) {
    yds_normalize(&ds, 1);
    rc = yds_write(&ds, out);
  }
  ywriter_free(&w);
  yds_free(&ds);
  wsy_free(rs);
  wsy_free(heap);
  return finish_out(rc, out, &e);
}

/* ---- state vector ------------------------------------------------------ */

int yupdate_state_vector(const uint8_t *u, size_t n, ybuf *sv, char *err, size_t errlen) {
  yerr e;
  yreader r;
  ydelset ds = {0};
  ybuf pairs = {0};
  uint64_t size = 0, client = 0, clock = 0;
  int stop = 0, rc;
  err_init(&e, err, errlen);
  sv->len = 0;
  if ((rc = yreader_init(&r, u, n, 0, 0, &e))) return finish_out(rc, sv, &e);
  if (r.has_cur) {
    client = r.cur.client;
    stop = r.cur.clock != 0;
  }
  for (; !rc && r.has_cur; rc = yreader_next(&r)) {
    if (r.cur.client != client) {
      if (clock != 0) {
        size++;
        if (!rc) rc = lib0_write_varuint(&pairs, client);
        if (!rc) rc = lib0_write_varuint(&pairs, clock);
      }
      client = r.cur.client;
      clock = 0;
      stop = r.cur.clock != 0;
    }
    if (r.cur.kind == YS_SKIP) stop = 1;
    if (!stop) clock = r.cur.clock + r.cur.len;
    if (rc) break;
  }
  if (!rc && clock != 0) {
    size++;
    rc = lib0_write_varuint(&pairs, client);
    if (!rc) rc = lib0_write_varuint(&pairs, clock);
  }
  if (!rc) rc = yds_read(&r.rd, &ds, 0, &e);
  if (!rc) rc = lib0_write_varuint(sv, size);
  if (!rc) rc = lib0_write_bytes(sv, pairs.p, pairs.len);
  ybuf_free(&pairs);
  yds_free(&ds);
  return finish_out(rc, sv, &e);
}

/* ---- diff -------------------------------------------------------------- */

static int cmp_pair(const void *a, const void *b) {
  const uint64_t *x = a, *y = b;
  if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
  return x[2] < y[2] ? -1 : x[2] > y[2]; /* reading order: the last one wins */
}

int yupdate_sv_decode(const uint8_t *sv, size_t n, uint64_t **pairs, size_t *count, char *err,
                      size_t errlen) {
  yerr e;
  lib0_rd rd;
  uint64_t m, *v = NULL;
  err_init(&e, err, errlen);
  *pairs = NULL;
  *count = 0;
  lib0_rd_init(&rd, sv, n);
  if (lib0_read_varuint(&rd, &m) || m > lib0_rd_left(&rd) / 2)
    return yfail(&e, WSY_INVAL, "state vector: bad count at byte %zu", rd.pos);
  if (m && !(v = wsy_try_realloc(NULL, (size_t)m * 3 * sizeof *v)))
    return yfail(&e, WSY_NOMEM, "out of memory");
  for (uint64_t i = 0; i < m; i++) {
    if (lib0_read_varuint(&rd, &v[3 * i]) || lib0_read_varuint(&rd, &v[3 * i + 1])) {
      wsy_free(v);
      return yfail(&e, WSY_INVAL, "state vector: truncated entry at byte %zu", rd.pos);
    }
    v[3 * i + 2] = i;
  }
  if (lib0_rd_left(&rd)) {
    wsy_free(v);
    return yfail(&e, WSY_INVAL, "state vector: %zu bytes after the end", lib0_rd_left(&rd));
  }
  if (m > 1) qsort(v, (size_t)m, 3 * sizeof *v, cmp_pair);
  size_t k = 0; /* keep the last entry of each client, as a Map.set would */
  for (size_t i = 0; i < m; i++) {
    if (k > 0 && v[2 * (k - 1)] == v[3 * i]) k--;
    v[2 * k] = v[3 * i];
    v[2 * k + 1] = v[3 * i + 1];
    k++;
  }
  *pairs = v;
  *count = k;
  return 0;
}

static uint64_t sv_get(const uint64_t *pairs, size_t n, uint64_t client) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (pairs[2 * mid] < client) lo = mid + 1;
    else hi = mid;
  }
  return lo < n && pairs[2 * lo] == client ? pairs[2 * lo + 1] : 0;
}

int yupdate_diff(const uint8_t *u, size_t n, const uint8_t *sv, size_t svn, ybuf *out,
                 char *err, size_t errlen) {
  yerr e;
  yreader r;
  ywriter w = {0};
  ydelset ds = {0};
  uint64_t *pairs;
  size_t np;
  err_init(&e, err, errlen);
  out->len = 0;
  int rc = yupdate_sv_decode(sv, svn, &pairs, &np, err, errlen);
  if (rc) return finish_out(rc, out, &e);
  rc = yreader_init(&r, u, n, 0, 0, &e);
  while (!rc && r.has_cur) {
    uint64_t client = r.cur.client, svc = sv_get(pairs, np, client);
    if (r.cur.kind == YS_SKIP) {
      rc = yreader_next(&r);
    } else if (r.cur.clock + r.cur.len > svc) {
      rc = ywriter_put(&w, &r.cur, svc > r.cur.clock ? svc - r.cur.clock : 0);
      if (!rc) rc = yreader_next(&r);
      while (!rc && r.has_cur && r.cur.client == client) {
        rc = ywriter_put(&w, &r.cur, 0);
        if (!rc) rc = yreader_next(&r);
      }
    } else {
      while (!rc && r.has_cur && r.cur.client == client && r.cur.clock + r.cur.len <= svc)
        rc = yreader_next(&r);
    }
  }
  if (!rc) rc = yds_read(&r.rd, &ds, 0, &e);
  if (!rc) rc = ywriter_finish(&w, out);
  if (!rc) {
    yds_normalize(&ds, 0);
    rc = yds_write(&ds, out);
  }
  wsy_free(pairs);
  ywriter_free(&w);
  yds_free(&ds);
  return finish_out(rc, out, &e);
}
