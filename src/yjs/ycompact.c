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

/* An item cut into pieces by the delete set is walked once, piece after
 * piece (slicing each piece from the start would be quadratic in the
 * number of cuts). For strings, a position between the two UTF-16 halves
 * of a character is `split`: the piece that ends there ends with U+FFFD and
 * the one that starts there starts with U+FFFD, as Yjs splits them. */
typedef struct walker {
  const uint8_t *p; /* the content after its length or count prefix */
  size_t n, pos, from;
  uint64_t unit;
  int split, from_split;
  uint8_t ref;
} walker;

static const uint8_t FFFD[3] = {0xef, 0xbf, 0xbd};

static int walker_init(walker *k, const ystruct *s) {
  lib0_rd rd;
  uint64_t count;
  memset(k, 0, sizeof *k);
  k->ref = s->ref;
  lib0_rd_init(&rd, s->content, s->content_n);
  if (s->ref == 4) return lib0_read_varbytes(&rd, &k->p, &k->n);
  if (lib0_read_varuint(&rd, &count)) return WSY_INVAL;
  k->p = s->content + rd.pos;
  k->n = s->content_n - rd.pos;
  return 0;
}

static int walker_to(walker *k, uint64_t t) {
  while (k->unit < t) {
    if (k->ref != 4) { /* JSON strings or Any values: one unit each */
      lib0_rd rd;
      const uint8_t *q;
      size_t m;
      lib0_rd_init(&rd, k->p, k->n);
      rd.pos = k->pos;
      if (k->ref == 2 ? lib0_read_varstring(&rd, &q, &m, NULL) : lib0_skip_any(&rd))
        return WSY_INVAL;
      k->pos = rd.pos;
      k->unit++;
    } else if (k->split) {
      k->pos += 4;
      k->unit++;
      k->split = 0;
    } else {
      if (k->pos >= k->n) return WSY_INVAL;
      uint8_t c = k->p[k->pos];
      size_t w = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
      if (w == 4 && k->unit + 1 == t) {
        k->split = 1;
        k->unit++;
      } else {
        k->pos += w;
        k->unit += w == 4 ? 2 : 1;
      }
    }
  }
  return 0;
}

/* Appends the content between the mark and the walker's position. */
static int walker_body(const walker *k, ybuf *b) {
  size_t start = k->from_split ? k->from + 4 : k->from;
  int rc = k->from_split ? lib0_write_bytes(b, FFFD, 3) : 0;
  if (!rc && k->pos > start) rc = lib0_write_bytes(b, k->p + start, k->pos - start);
  if (!rc && k->split) rc = lib0_write_bytes(b, FFFD, 3);
  return rc;
}

/* pending_push for a piece whose content is the walker's last stretch. */
static int pending_push_walked(pending *p, const ystruct *s, const walker *k) {
  int rc;
  if (p->have && joins(&p->s, s)) {
    if (!p->owned) {
      p->body.len = 0;
      if ((rc = ystruct_put_body(&p->body, &p->s))) return rc;
      p->owned = 1;
    }
  } else {
    if ((rc = pending_flush(p))) return rc;
    p->s = *s;
    p->s.len = 0;
    p->have = p->owned = 1;
    p->body.len = 0;
  }
  if ((rc = walker_body(k, &p->body))) return rc;
  p->s.len += s->len;
  return 0;
}

static int put_compacted(pending *p, const ydelset *ds, const ystruct *s) {
  if (s->kind != YS_ITEM) return pending_push(p, s);
  uint64_t end = s->clock + s->len, pos = s->clock;
  size_t i = ds_find(ds, s->client, s->clock);
  int walk = s->ref == 2 || s->ref == 4 || s->ref == 8, walking = 0, rc;
  walker k;
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
    if (!walk || (pos == s->clock && stop == end)) { /* not cut */
      rc = pending_push(p, &piece);
    } else {
      if (!walking && (rc = walker_init(&k, s))) return rc;
      walking = 1;
      k.from = k.pos;
      k.from_split = k.split;
      rc = walker_to(&k, stop - s->clock);
      if (!rc) rc = deleted ? pending_push(p, &piece) : pending_push_walked(p, &piece, &k);
    }
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
