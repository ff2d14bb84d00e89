/* ycompact.c -- compaction of a Yjs v1 update (yupdate.h says what is
 * collected and what is kept). Two passes over the one update: the first
 * reaches and reads the delete set, the second writes every struct again,
 * items cut at the delete set's edges and their deleted parts' content
 * replaced by Deleted(len), then neighbours joined.
 *
 * JOINING. Item R joins the item L written just before it when R is L's
 * continuation: same client, R's clock = L's end, R's origin = L's last ID,
 * the same right origin, and the same joinable content (Deleted, String,
 * JSON, Any). Such an R is exactly the right half Yjs makes when it splits
 * one item (its parent and map key are L's, through the origin), so L+R as
 * one item encodes the same document; Y.encodeStateAsUpdate joins the same
 * way (Item.mergeWith). Typing makes long runs of such items, one per key
 * press: joining them is most of what compaction saves. Neighbouring GC
 * structs of a client join too. */
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

/* The struct waiting to be written, grown while the next ones join it. */
typedef struct pending {
  ystruct s;
  int have;
  int owned; /* s.content is raw (below), built from the joined parts */
  ybuf body, raw;
  ywriter *w;
} pending;

static int joins(const ystruct *l, const ystruct *r) {
  if (l->client != r->client || l->clock + l->len != r->clock || l->kind != r->kind) return 0;
  if (l->kind == YS_GC) return 1;
  if (l->kind != YS_ITEM || l->ref != r->ref) return 0;
  if (l->ref != 1 && l->ref != 2 && l->ref != 4 && l->ref != 8) return 0;
  if (!r->has_origin || r->oc != l->client || r->ok != r->clock - 1) return 0;
  if (l->has_rorigin != r->has_rorigin) return 0;
  return !l->has_rorigin || (l->rc == r->rc && l->rk == r->rk);
}

static int pending_flush(pending *p) {
  if (!p->have) return 0;
  p->have = 0;
  if (p->owned) {
    p->raw.len = 0;
    int rc = lib0_write_varuint(&p->raw, p->s.ref == 4 ? p->body.len : p->s.len);
    if (!rc) rc = lib0_write_bytes(&p->raw, p->body.p, p->body.len);
    if (rc) return rc;
    p->s.content = p->raw.p;
    p->s.content_n = p->raw.len;
    p->s.off = 0;
    p->s.full = p->s.len;
    p->owned = 0;
  }
  return ywriter_put(p->w, &p->s, 0);
}

static int pending_push(pending *p, const ystruct *s) {
  int rc;
  if (p->have && joins(&p->s, s)) {
    if (s->kind == YS_ITEM && s->ref != 1) {
      if (!p->owned) {
        p->body.len = 0;
        if ((rc = ystruct_put_body(&p->body, &p->s))) return rc;
        p->owned = 1;
      }
      if ((rc = ystruct_put_body(&p->body, s))) return rc;
    }
    p->s.len += s->len;
    return 0;
  }
  if ((rc = pending_flush(p))) return rc;
  p->s = *s;
  p->have = 1;
  return 0;
}

static int put_compacted(pending *p, const ydelset *ds, const ystruct *s) {
  if (s->kind != YS_ITEM) return pending_push(p, s);
  uint64_t end = s->clock + s->len, pos = s->clock;
  size_t i = ds_find(ds, s->client, s->clock);
  while (pos < end) {
    const ydel *d = i < ds->n && ds->v[i].client == s->client ? &ds->v[i] : NULL;
    if (d && d->clock + d->len <= pos) { /* an empty range (Yjs keeps those) */
      i++;
      continue;
    }
    int deleted = d && d->clock <= pos;
    uint64_t stop = deleted ? d->clock + d->len : d ? d->clock : end;
    if (stop > end) stop = end;
    ystruct piece = *s;
    if (pos > s->clock) ystruct_slice(&piece, pos - s->clock);
    piece.len = stop - pos;
    if (deleted) piece.ref = 1; /* Deleted(len): the struct stays for its ID and origins */
    int rc = pending_push(p, &piece);
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
  pending p = {.w = &w};
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
    rc = put_compacted(&p, &ds, &r.cur);
    if (!rc) rc = yreader_next(&r);
  }
  if (!rc) rc = pending_flush(&p);
  if (!rc) rc = ywriter_finish(&w, out);
  if (!rc) rc = yds_write(&ds, out);
  ywriter_free(&w);
  yds_free(&ds);
  ybuf_free(&p.body);
  ybuf_free(&p.raw);
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
