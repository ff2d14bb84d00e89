/* ycompact.c -- compaction of a Yjs v1 update (yupdate.h says what is
 * collected and what is kept). Two passes over the one update: the first
 * reaches and reads the delete set, the second writes every struct again,
 * items cut at the delete set's edges and their deleted parts' content
 * replaced by Deleted(len). */
#include "yjs_int.h"

#include <string.h>

/* First range of ds (normalized: client descending, clock ascending, joined)
 * for client that ends after clock, or ds->n. */
static size_t ds_find(const ydelset *ds, uint64_t client, uint64_t clock) {
  size_t lo = 0, hi = ds->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const ydel *d = &ds->v[mid];
    int before = d->client > client || (d->client == client && d->clock + d->len <= clock);
    if (before) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static int put_compacted(ywriter *w, const ydelset *ds, const ystruct *s) {
  if (s->kind != YS_ITEM) return ywriter_put(w, s, 0);
  uint64_t end = s->clock + s->len, pos = s->clock;
  size_t i = ds_find(ds, s->client, s->clock);
  while (pos < end) {
    const ydel *d = i < ds->n && ds->v[i].client == s->client ? &ds->v[i] : NULL;
    int deleted = d && d->clock <= pos;
    uint64_t stop = deleted ? d->clock + d->len : d ? d->clock : end;
    if (stop > end) stop = end;
    ystruct piece = *s;
    if (pos > s->clock) ystruct_slice(&piece, pos - s->clock);
    piece.len = stop - pos;
    if (deleted) piece.ref = 1; /* Deleted(len): the struct stays for its ID and origins */
    int rc = ywriter_put(w, &piece, 0);
    if (rc) return rc;
    pos = stop;
    if (deleted) i++;
  }
  return 0;
}

int yupdate_compact(const uint8_t *u, size_t n, ybuf *out, char *err, size_t errlen) {
  yerr e = {err, errlen, 0};
  yreader r;
  ywriter w = {0};
  ydelset ds = {0};
  if (err && errlen) err[0] = '\0';
  out->len = 0;
  int rc = yreader_init(&r, u, n, 0, 0, &e);
  while (!rc && r.has_cur) rc = yreader_next(&r);
  if (!rc) rc = yds_read(&r.rd, &ds, 0, &e);
  if (!rc) {
    yds_normalize(&ds, 1);
    rc = yreader_init(&r, u, n, 0, 0, &e);
  }
  while (!rc && r.has_cur) {
    rc = put_compacted(&w, &ds, &r.cur);
    if (!rc) rc = yreader_next(&r);
  }
  if (!rc) rc = ywriter_finish(&w, out);
  if (!rc) rc = yds_write(&ds, out);
  ywriter_free(&w);
  yds_free(&ds);
  if (rc) {
    out->len = 0;
    if (rc == WSY_NOMEM) yfail(&e, rc, "out of memory");
    else if (rc == WSY_TOO_LARGE) yfail(&e, rc, "result too large");
  }
  return rc;
}

int yupdate_compact_many(const uint8_t *const *ups, const size_t *lens, size_t count, ybuf *out,
                         char *err, size_t errlen) {
  ybuf merged = {0};
  int rc = yupdate_merge(ups, lens, count, &merged, err, errlen);
  if (!rc) rc = yupdate_compact(merged.p, merged.len, out, err, errlen);
  ybuf_free(&merged);
  return rc;
}
