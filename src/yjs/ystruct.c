/* ystruct.c -- the Yjs v1 struct reader and writer and the delete set
 * (yjs_int.h). Nothing here knows about merging: yupdate.c does. */
#include "yjs_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int yfail(yerr *e, int code, const char *fmt, ...) {
  if (e && !e->set && e->buf && e->len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->buf, e->len, fmt, ap);
    va_end(ap);
  }
  if (e) e->set = 1;
  return code;
}

#define BAD(r, what) \
  yfail((r)->err, WSY_INVAL, "update %zu: %s at byte %zu", (r)->index, (what), (r)->rd.pos)

int yreader_init(yreader *r, const uint8_t *u, size_t n, size_t index, int filter_skips,
                 yerr *err) {
  memset(r, 0, sizeof *r);
  lib0_rd_init(&r->rd, u, n);
  r->index = index;
  r->filter_skips = filter_skips;
  r->err = err;
  if (lib0_read_varuint(&r->rd, &r->clients_left) || r->clients_left > lib0_rd_left(&r->rd))
    return BAD(r, "bad client count");
  return yreader_next(r);
}

static int read_id(yreader *r, uint64_t *client, uint64_t *clock) {
  if (lib0_read_varuint(&r->rd, client) || lib0_read_varuint(&r->rd, clock))
    return BAD(r, "truncated ID");
  return 0;
}

/* Content of an item: its extent in the input and its length in clocks. */
static int read_content(yreader *r, ystruct *s) {
  lib0_rd *rd = &r->rd;
  const uint8_t *p;
  size_t n, units, start = rd->pos;
  uint64_t v;
  switch (s->ref) {
    case 1: /* Deleted */
      if (lib0_read_varuint(rd, &v)) return BAD(r, "truncated deleted length");
      s->len = v;
      break;
    case 2: /* JSON: n strings */
    case 8: /* Any: n lib0 values */
      if (lib0_read_varuint(rd, &v) || v > lib0_rd_left(rd)) return BAD(r, "bad content count");
      for (uint64_t i = 0; i < v; i++) {
        int rc = s->ref == 2 ? lib0_read_varstring(rd, &p, &n, NULL) : lib0_skip_any(rd);
        if (rc) return BAD(r, s->ref == 2 ? "bad JSON content string" : "bad any value");
      }
      s->len = v;
      break;
    case 3: /* Binary */
      if (lib0_read_varbytes(rd, &p, &n)) return BAD(r, "bad binary content");
      s->len = 1;
      break;
    case 4: /* String */
      if (lib0_read_varstring(rd, &p, &n, &units)) return BAD(r, "bad string content");
      s->len = units;
      break;
    case 5: /* Embed: JSON text */
      if (lib0_read_varstring(rd, &p, &n, NULL)) return BAD(r, "bad embed content");
      s->len = 1;
      break;
    case 6: /* Format: key, JSON text */
      if (lib0_read_varstring(rd, &p, &n, NULL) || lib0_read_varstring(rd, &p, &n, NULL))
        return BAD(r, "bad format content");
      s->len = 1;
      break;
    case 7: /* Type: ref, and a name for XmlElement (3) and XmlHook (5) */
      if (lib0_read_varuint(rd, &v) || v > 6) return BAD(r, "bad type ref");
      if ((v == 3 || v == 5) && lib0_read_varstring(rd, &p, &n, NULL))
        return BAD(r, "bad type name");
      s->len = 1;
      break;
    case 9: /* Doc: guid, options */
      if (lib0_read_varstring(rd, &p, &n, NULL) || lib0_skip_any(rd))
        return BAD(r, "bad subdocument content");
      s->len = 1;
      break;
    default: return BAD(r, "unknown content ref");
  }
  s->content = rd->p + start;
  s->content_n = rd->pos - start;
  return 0;
}

static int read_struct(yreader *r, ystruct *s) {
  lib0_rd *rd = &r->rd;
  uint8_t info;
  uint64_t v;
  memset(s, 0, sizeof *s);
  s->client = r->client;
  s->clock = r->clock;
  if (lib0_read_u8(rd, &info)) return BAD(r, "truncated struct");
  if (info == YS_SKIP || (info & 31) == 0) {
    s->kind = info == YS_SKIP ? YS_SKIP : YS_GC;
    if (lib0_read_varuint(rd, &s->len)) return BAD(r, "truncated struct length");
  } else {
    s->kind = YS_ITEM;
    s->ref = info & 31;
    s->has_origin = (info & 0x80) != 0;
    s->has_rorigin = (info & 0x40) != 0;
    if (s->has_origin && read_id(r, &s->oc, &s->ok)) return WSY_INVAL;
    if (s->has_rorigin && read_id(r, &s->rc, &s->rk)) return WSY_INVAL;
    if (!s->has_origin && !s->has_rorigin) {
      if (lib0_read_varuint(rd, &v)) return BAD(r, "truncated parent info");
      if (v == 1) {
        s->parent = 1;
        if (lib0_read_varstring(rd, &s->pname, &s->pname_n, NULL))
          return BAD(r, "bad root type name");
      } else {
        s->parent = 2;
        if (read_id(r, &s->pc, &s->pk)) return WSY_INVAL;
      }
      if (info & 0x20) {
        s->has_sub = 1;
        if (lib0_read_varstring(rd, &s->sub, &s->sub_n, NULL)) return BAD(r, "bad map key");
      }
    }
    if (read_content(r, s)) return WSY_INVAL;
  }
  if (s->len == 0) return BAD(r, "zero-length struct");
  if (s->len > LIB0_MAX_SAFE - s->clock) return BAD(r, "clock overflow");
  s->full = s->len;
  r->clock = s->clock + s->len;
  return 0;
}

int yreader_next(yreader *r) {
  for (;;) {
    while (r->structs_left == 0) {
      if (r->clients_left == 0) {
        r->has_cur = 0;
        return 0;
      }
      r->clients_left--;
      if (lib0_read_varuint(&r->rd, &r->structs_left) ||
          r->structs_left > lib0_rd_left(&r->rd))
        return BAD(r, "bad struct count");
      if (read_id(r, &r->client, &r->clock)) return WSY_INVAL;
    }
    r->structs_left--;
    if (read_struct(r, &r->cur)) {
      r->has_cur = 0;
      return WSY_INVAL;
    }
    r->has_cur = 1;
    if (!(r->filter_skips && r->cur.kind == YS_SKIP)) return 0;
  }
}

void ystruct_slice(ystruct *s, uint64_t diff) {
  if (s->kind == YS_ITEM) {
    s->has_origin = 1;
    s->oc = s->client;
    s->ok = s->clock + diff - 1;
    s->off += diff;
  }
  s->clock += diff;
  s->len -= diff;
}

/* ---- writing ---------------------------------------------------------- */

static const uint8_t FFFD[3] = {0xef, 0xbf, 0xbd};

/* String content units [start, start + count) of the original string, with
 * its length prefix or (prefix = 0) without. */
static int put_string(ybuf *b, const ystruct *s, uint64_t start, uint64_t count, int prefix) {
  lib0_rd rd;
  const uint8_t *p;
  size_t n;
  int split1, split2;
  lib0_rd_init(&rd, s->content, s->content_n);
  if (lib0_read_varbytes(&rd, &p, &n)) return WSY_INVAL; /* checked when read */
  size_t b0 = lib0_utf8_offset(p, n, start, &split1);
  size_t mid = split1 ? b0 + 4 : b0;
  size_t b1 = lib0_utf8_offset(p, n, start + count, &split2);
  if (b1 < mid) b1 = mid;
  int rc = prefix ? lib0_write_varuint(b, (split1 ? 3 : 0) + (b1 - mid) + (split2 ? 3 : 0)) : 0;
  if (!rc && split1) rc = lib0_write_bytes(b, FFFD, 3);
  if (!rc) rc = lib0_write_bytes(b, p + mid, b1 - mid);
  if (!rc && split2) rc = lib0_write_bytes(b, FFFD, 3);
  return rc;
}

/* JSON or Any content: elements [start, start + count), with their count
 * first or (prefix = 0) without. */
static int put_elements(ybuf *b, const ystruct *s, uint64_t start, uint64_t count, int prefix) {
  lib0_rd rd;
  const uint8_t *p;
  size_t n, from = 0;
  uint64_t total;
  lib0_rd_init(&rd, s->content, s->content_n);
  if (lib0_read_varuint(&rd, &total)) return WSY_INVAL;
  for (uint64_t i = 0; i < start + count && i < total; i++) {
    if (i == start) from = rd.pos;
    int rc = s->ref == 2 ? lib0_read_varstring(&rd, &p, &n, NULL) : lib0_skip_any(&rd);
    if (rc) return WSY_INVAL;
  }
  int rc = prefix ? lib0_write_varuint(b, count) : 0;
  return rc ? rc : lib0_write_bytes(b, s->content + from, rd.pos - from);
}

static int put_id(ybuf *b, uint64_t client, uint64_t clock) {
  int rc = lib0_write_varuint(b, client);
  return rc ? rc : lib0_write_varuint(b, clock);
}

static int put_struct(ybuf *b, const ystruct *s, uint64_t offset) {
  int rc;
  if (s->kind != YS_ITEM) {
    rc = lib0_write_u8(b, s->kind);
    return rc ? rc : lib0_write_varuint(b, s->len - offset);
  }
  int origin = offset > 0 || s->has_origin;
  uint8_t info = (uint8_t)(s->ref | (origin ? 0x80 : 0) | (s->has_rorigin ? 0x40 : 0) |
                           (s->has_sub ? 0x20 : 0));
  if ((rc = lib0_write_u8(b, info))) return rc;
  if (offset > 0) rc = put_id(b, s->client, s->clock + offset - 1);
  else if (s->has_origin) rc = put_id(b, s->oc, s->ok);
  if (!rc && s->has_rorigin) rc = put_id(b, s->rc, s->rk);
  if (!rc && !origin && !s->has_rorigin) {
    if (s->parent == 1) {
      rc = lib0_write_varuint(b, 1);
      if (!rc) rc = lib0_write_varbytes(b, s->pname, s->pname_n);
    } else {
      rc = lib0_write_varuint(b, 0);
      if (!rc) rc = put_id(b, s->pc, s->pk);
    }
    if (!rc && s->has_sub) rc = lib0_write_varbytes(b, s->sub, s->sub_n);
  }
  if (rc) return rc;
  uint64_t start = s->off + offset, count = s->len - offset;
  if (s->ref == 1) return lib0_write_varuint(b, count);
  if (start == 0 && count == s->full) return lib0_write_bytes(b, s->content, s->content_n);
  if (s->ref == 4) return put_string(b, s, start, count, 1);
  if (s->ref == 2 || s->ref == 8) return put_elements(b, s, start, count, 1);
  return lib0_write_bytes(b, s->content, s->content_n); /* length 1: never sliced */
}

int ystruct_put_body(ybuf *b, const ystruct *s) {
  if (s->ref == 4) return put_string(b, s, s->off, s->len, 0);
  if (s->ref == 2 || s->ref == 8) return put_elements(b, s, s->off, s->len, 0);
  return WSY_INVAL;
}

int ywriter_put(ywriter *w, const ystruct *s, uint64_t offset) {
  int rc;
  if (w->nblocks == 0 || w->client != s->client) {
    if (w->nblocks == w->cap) {
      size_t cap = w->cap ? w->cap * 2 : 16;
      yblock *nb = wsy_try_realloc(w->blocks, cap * sizeof *nb);
      if (!nb) return WSY_NOMEM;
      w->blocks = nb;
      w->cap = cap;
    }
    w->blocks[w->nblocks].written = 0;
    w->blocks[w->nblocks].start = w->body.len;
    w->nblocks++;
    w->client = s->client;
    if ((rc = put_id(&w->body, s->client, s->clock + offset))) return rc;
  }
  w->blocks[w->nblocks - 1].written++;
  return put_struct(&w->body, s, offset);
}

int ywriter_finish(ywriter *w, ybuf *out) {
  int rc = lib0_write_varuint(out, w->nblocks);
  for (size_t i = 0; !rc && i < w->nblocks; i++) {
    size_t end = i + 1 < w->nblocks ? w->blocks[i + 1].start : w->body.len;
    rc = lib0_write_varuint(out, w->blocks[i].written);
    if (!rc) rc = lib0_write_bytes(out, w->body.p + w->blocks[i].start, end - w->blocks[i].start);
  }
  return rc;
}

void ywriter_free(ywriter *w) {
  ybuf_free(&w->body);
  wsy_free(w->blocks);
  memset(w, 0, sizeof *w);
}

/* ---- delete sets -------------------------------------------------------- */

int yds_read(lib0_rd *rd, ydelset *ds, size_t index, yerr *err) {
  uint64_t nclients, client, nranges, clock, len;
  if (lib0_read_varuint(rd, &nclients) || nclients > lib0_rd_left(rd))
    return yfail(err, WSY_INVAL, "update %zu: bad delete set client count at byte %zu", index,
                 rd->pos);
  for (uint64_t i = 0; i < nclients; i++) {
    if (lib0_read_varuint(rd, &client) || lib0_read_varuint(rd, &nranges) ||
        nranges > lib0_rd_left(rd) / 2)
      return yfail(err, WSY_INVAL, "update %zu: bad delete set entry at byte %zu", index,
                   rd->pos);
    if (ds->n + nranges > ds->cap) {
      size_t cap = ds->cap ? ds->cap : 16;
      while (cap < ds->n + nranges) cap *= 2;
      ydel *nv = wsy_try_realloc(ds->v, cap * sizeof *nv);
      if (!nv) return yfail(err, WSY_NOMEM, "out of memory reading a delete set");
      ds->v = nv;
      ds->cap = cap;
    }
    for (uint64_t k = 0; k < nranges; k++) {
      if (lib0_read_varuint(rd, &clock) || lib0_read_varuint(rd, &len))
        return yfail(err, WSY_INVAL, "update %zu: truncated delete range at byte %zu", index,
                     rd->pos);
      if (len > LIB0_MAX_SAFE - clock)
        return yfail(err, WSY_INVAL, "update %zu: delete range overflows at byte %zu", index,
                     rd->pos);
      ds->v[ds->n] = (ydel){client, clock, len, ds->n};
      ds->n++;
    }
  }
  if (lib0_rd_left(rd))
    return yfail(err, WSY_INVAL, "update %zu: %zu bytes after the delete set at byte %zu",
                 index, lib0_rd_left(rd), rd->pos);
  return 0;
}

static int cmp_clock(const void *a, const void *b) {
  const ydel *x = a, *y = b;
  if (x->client != y->client) return x->client > y->client ? -1 : 1;
  if (x->clock != y->clock) return x->clock < y->clock ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int cmp_seq(const void *a, const void *b) {
  const ydel *x = a, *y = b;
  if (x->client != y->client) return x->client > y->client ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void yds_normalize(ydelset *ds, int merge) {
  if (ds->n < 2) return;
  qsort(ds->v, ds->n, sizeof *ds->v, merge ? cmp_clock : cmp_seq);
  if (!merge) return;
  size_t j = 0;
  for (size_t i = 1; i < ds->n; i++) {
    ydel *l = &ds->v[j], *r = &ds->v[i];
    if (l->client == r->client && l->clock + l->len >= r->clock) {
      if (r->clock + r->len - l->clock > l->len) l->len = r->clock + r->len - l->clock;
    } else {
      ds->v[++j] = *r;
    }
  }
  ds->n = j + 1;
}

int yds_write(const ydelset *ds, ybuf *out) {
  size_t nclients = 0;
  for (size_t i = 0; i < ds->n; i++)
    if (i == 0 || ds->v[i].client != ds->v[i - 1].client) nclients++;
  int rc = lib0_write_varuint(out, nclients);
  for (size_t i = 0; !rc && i < ds->n;) {
    size_t k = i;
    while (k < ds->n && ds->v[k].client == ds->v[i].client) k++;
    rc = lib0_write_varuint(out, ds->v[i].client);
    if (!rc) rc = lib0_write_varuint(out, k - i);
    for (; !rc && i < k; i++) {
      rc = lib0_write_varuint(out, ds->v[i].clock);
      if (!rc) rc = lib0_write_varuint(out, ds->v[i].len);
    }
  }
  return rc;
}

void yds_free(ydelset *ds) {
  wsy_free(ds->v);
  memset(ds, 0, sizeof *ds);
}
