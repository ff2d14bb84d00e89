/* pg_batch.c -- a batch as the statements of one PostgreSQL pipeline
** (pg.c sends them and reads the results): the checks made before sending,
** the fence on each room's seq, and the set-based statements that write a
** run of log rows, dedupe rows and item rows at once.
**
** Order: entries are applied in the order they were added, except that
** log rows and item writes are gathered and sent as one statement each at
** the next point where order matters: before an entry that deletes rows
** (trim, room delete, room create) or reads them (a text row follows the
** item writes before it and is dropped by those after it), and at the end.
** Within a run only the last write of an item counts, so each (room, item)
** is written once: what applying them one by one would leave. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

static void num(char out[24], uint64_t v) {
  snprintf(out, 24, "%" PRIu64, v > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : v);
}
static void inum(char out[24], int64_t v) { snprintf(out, 24, "%" PRId64, v); }

/* Per room of the batch: the seq the room row was last set to (first) and
** the ops since (last), as SQLite's runs; an open-addressed table. */
typedef struct run {
  const char *room;
  uint64_t first, last;
  int known, dirty;
  const batch_entry *head; /* an E_HEAD not sent yet: joined to the room's next fence */
  int head_entry;
} run;
typedef struct runs {
  run *r;
  size_t cap;
  size_t *dirty;
  size_t ndirty;
  uint64_t *ends; /* per entry: for an op, the last seq of its room's ops up to the next flush (runs_ends) */
} runs;

static run *run_find(runs *t, const char *room) {
  uint64_t h = wsy_fnv1a(1469598103934665603ULL, room);
  for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
    if (!t->r[i].room) t->r[i].room = room;
    if (!strcmp(t->r[i].room, room)) return &t->r[i];
  }
}

static void runs_init(runs *t, const store_batch *b) {
  size_t n = 0;
  for (size_t i = 0; i < b->n; i++) n += b->e[i].room != NULL;
  for (t->cap = 16; t->cap < 2 * n; t->cap *= 2) {}
  t->r = wsy_calloc(t->cap, sizeof *t->r);
  t->dirty = wsy_calloc(t->cap, sizeof *t->dirty);
  t->ndirty = 0;
  t->ends = NULL;
}

static void runs_free(runs *t) {
  wsy_free(t->r);
  wsy_free(t->dirty);
  wsy_free(t->ends);
}

static int flushes_runs(int kind) { return kind == E_TRIM || kind == E_ROOM || kind == E_DELETE || kind == E_HOOK_POS; }

/* Where each op's run ends: its room's last op before the next entry that
** flushes the runs (pg_send_batch). A fence moves the room's row there at
** once, so a room written by a run of ops costs one call, not two (the
** fence, then the move to its last op). One pass from the end; a flush
** empties the table by starting a new generation. */
static void runs_ends(runs *t, const store_batch *b) {
  t->ends = wsy_calloc(b->n ? b->n : 1, sizeof *t->ends);
  runs seen;
  runs_init(&seen, b);
  int gen = 1;
  for (size_t i = b->n; i-- > 0;) {
    const batch_entry *e = &b->e[i];
    if (e->kind == E_OP) {
      run *r = run_find(&seen, e->room);
      if (r->known != gen) {
        r->known = gen;
        r->last = e->seq;
      }
      t->ends[i] = r->last;
    }
    if (flushes_runs(e->kind)) gen++; /* the ops before it end there */
  }
  runs_free(&seen);
}

/* Checks what can be checked without the server: a failure here sends
** nothing. Sets b->err. */
int pg_validate(store_batch *b) {
  runs t;
  runs_init(&t, b);
  int rc = WSY_OK;
  for (size_t i = 0; i < b->n && !rc; i++) {
    const batch_entry *e = &b->e[i];
    size_t el = e->epoch ? strlen(e->epoch) : 0;
    if (!e->room && e->kind != E_CURSOR) rc = store_batch_fail(b, WSY_INVAL, "entry %zu has no room", i);
    else if (e->room && (!*e->room || strlen(e->room) > STORE_ROOM_MAX))
      rc = store_batch_fail(b, WSY_INVAL, "entry %zu: room names are 1-%d bytes", i, STORE_ROOM_MAX);
    else if ((e->kind == E_ROOM || e->kind == E_HOOK_POS) && (el == 0 || el > STORE_EPOCH_MAX))
      rc = store_batch_fail(b, WSY_INVAL, "entry %zu: epoch must be 1-%d bytes", i, STORE_EPOCH_MAX);
    else if (e->kind == E_CURSOR && (!e->user || !e->device || !e->room))
      rc = store_batch_fail(b, WSY_INVAL, "entry %zu: cursor needs user, device and room", i);
    else if ((e->kind == E_ITEM || e->kind == E_TEXT) && !e->item)
      rc = store_batch_fail(b, WSY_INVAL, "entry %zu: item entry needs an item", i);
    else if (e->kind == E_TEXT && (!e->fields || e->version == 0 || e->version > INT64_MAX || e->seq == 0 ||
                                   e->seq > INT64_MAX))
      rc = store_batch_fail(b, WSY_INVAL, "entry %zu: text entry needs a field, a rev and a seq", i);
    else if (e->kind == E_HOOK_POS && !e->hook)
      rc = store_batch_fail(b, WSY_INVAL, "entry %zu: webhook position needs a hook", i);
    else if (e->kind == E_HEAD && (!e->epoch || !*e->epoch || strlen(e->epoch) > STORE_HEAD_MAX))
      rc = store_batch_fail(b, WSY_INVAL, "entry %zu: a head is 1-%d bytes", i, STORE_HEAD_MAX);
    else if (e->kind == E_LOCK && (!e->item || (e->holder && (!e->user || !e->device)) || e->seq > INT64_MAX ||
                                   e->version >= INT64_MAX))
      rc = store_batch_fail(b, WSY_INVAL, "entry %zu: lock entry needs an item, a holder's user and device", i);
    else if (e->kind == E_OP && (e->seq == 0 || e->seq > INT64_MAX || e->version > INT64_MAX ||
                                 e->locks_at > INT64_MAX))
      rc = store_batch_fail(b, WSY_INVAL, "entry %zu: seq/version out of range", i);
    if (rc || !e->room) continue;
    run *r = run_find(&t, e->room);
    if (e->kind == E_ROOM || e->kind == E_DELETE) r->known = 0;
    if (e->kind != E_OP) continue;
    if (r->known && e->seq != r->last + 1)
      rc = store_batch_fail(b, WSY_INVAL, "entry %zu (op, room %.64s): seq %" PRIu64 " does not follow %" PRIu64
                            " in the same batch", i, e->room, e->seq, r->last);
    r->known = 1;
    r->last = e->seq;
  }
  runs_free(&t);
  return rc;
}

/* A one-dimensional array parameter in PostgreSQL's binary format
** (array_recv): a 20-byte header, then per element its length (-1: NULL)
** and its bytes. Sent as bytes, elements need no quoting or escaping on
** this side and no parsing on the server's (text arrays cost both). */
#define OPS_MAX ((size_t)512 << 20) /* under PostgreSQL's 1 GB per message */
#define OID_TEXT 25
#define OID_INT8 20
typedef struct barr {
  buf b;
  uint32_t n, nulls, oid;
} barr;

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static void barr_init(barr *a, uint32_t oid) {
  buf_init(&a->b, OPS_MAX);
  a->n = a->nulls = 0;
  a->oid = oid;
}

static int barr_elem(barr *a, const void *p, size_t len) {
  if (!a->b.len) { /* the header, filled in by barr_done */
    uint8_t h[20] = {0};
    int rc = buf_append(&a->b, h, sizeof h);
    if (rc) return rc;
  }
  if (len > (size_t)INT32_MAX) return WSY_TOO_LARGE;
  uint8_t l[4];
  put_be32(l, p ? (uint32_t)len : 0xffffffffu);
  int rc = buf_append(&a->b, l, 4);
  if (!rc && p) rc = buf_append(&a->b, p, len);
  if (!rc) {
    a->n++;
    a->nulls += !p;
  }
  return rc;
}

static int barr_text(barr *a, const char *v) { return barr_elem(a, v, v ? strlen(v) : 0); }

static int barr_int8(barr *a, uint64_t v) {
  uint8_t x[8];
  put_be32(x, (uint32_t)(v >> 32));
  put_be32(x + 4, (uint32_t)v);
  return barr_elem(a, x, 8);
}

/* The header: one dimension of n elements from 1. Never called empty. */
static void barr_done(barr *a) {
  uint8_t *h = a->b.data;
  put_be32(h, 1);
  put_be32(h + 4, a->nulls ? 1 : 0);
  put_be32(h + 8, a->oid);
  put_be32(h + 12, a->n);
  put_be32(h + 16, 1);
}

static void barr_reset(barr *a) {
  buf_reset(&a->b);
  a->n = a->nulls = 0;
}

/* Sends statement st with its ncol array parameters. */
static int barr_send(pg_store *s, int st, int entry, barr *col, int ncol) {
  const char *v[8] = {0};
  int len[8] = {0}, fmt[8] = {0};
  for (int c = 0; c < ncol; c++) {
    barr_done(&col[c]);
    v[c] = (const char *)col[c].b.data;
    len[c] = (int)col[c].b.len;
    fmt[c] = 1;
  }
  int rc = pg_send_stmt_bin(s, st, entry, v, len, fmt);
  for (int c = 0; c < ncol; c++) barr_reset(&col[c]);
  return rc;
}

/* The log rows of the ops sent so far, waiting to be inserted together:
** six array parameters, one per column. A run is sent before any entry
** that deletes log rows (trim, delete, create) and at the end. */
typedef struct ops_run {
  barr col[6];
  size_t n;
  int first_entry;
} ops_run;

static int ops_add(ops_run *o, const batch_entry *e, int entry) {
  int cid = e->device && e->cid;
  if (!o->n) o->first_entry = entry;
  o->n++;
  int rc = barr_text(&o->col[0], e->room);
  if (!rc) rc = barr_int8(&o->col[1], e->seq);
  if (!rc) rc = barr_text(&o->col[2], e->item);
  if (!rc) rc = barr_text(&o->col[3], cid ? e->device : NULL);
  if (!rc) rc = barr_text(&o->col[4], cid ? e->cid : NULL);
  if (!rc) rc = barr_text(&o->col[5], e->msg);
  return rc;
}

static int ops_flush(pg_store *s, ops_run *o) {
  if (!o->n) return WSY_OK;
  o->n = 0;
  return barr_send(s, PW_OPS, o->first_entry, o->col, 6);
}

/* The item writes since the last flush, the last one of each (room, item)
** only: within a run no text row is added (an E_TEXT flushes first), so
** only the last write of an item counts. */
typedef struct items_run {
  const batch_entry **w;
  size_t n, cap;
  size_t *tab, tcap; /* open addressing: index + 1 into w, 0 empty */
  int first_entry;
} items_run;

static uint64_t item_hash(const char *room, const char *item) {
  return wsy_fnv1a(wsy_fnv1a_byte(wsy_fnv1a(1469598103934665603ULL, room), 0xff), item);
}

static size_t *item_slot(items_run *ir, const batch_entry *e) {
  for (size_t i = item_hash(e->room, e->item) & (ir->tcap - 1);; i = (i + 1) & (ir->tcap - 1)) {
    size_t k = ir->tab[i];
    if (!k || (!strcmp(ir->w[k - 1]->room, e->room) && !strcmp(ir->w[k - 1]->item, e->item))) return &ir->tab[i];
  }
}

static void items_add(items_run *ir, const batch_entry *e, int entry) {
  if (2 * (ir->n + 1) > ir->tcap) { /* grow and rehash */
    wsy_free(ir->tab);
    ir->tcap = ir->tcap ? ir->tcap * 2 : 64;
    ir->tab = wsy_calloc(ir->tcap, sizeof *ir->tab);
    for (size_t i = 0; i < ir->n; i++) *item_slot(ir, ir->w[i]) = i + 1;
  }
  size_t *slot = item_slot(ir, e);
  if (*slot) {
    ir->w[*slot - 1] = e;
    return;
  }
  if (ir->n == ir->cap) {
    ir->cap = ir->cap ? ir->cap * 2 : 64;
    ir->w = wsy_realloc(ir->w, ir->cap * sizeof *ir->w);
  }
  if (!ir->n) ir->first_entry = entry;
  ir->w[ir->n++] = e;
  *slot = ir->n;
}

static int items_flush(pg_store *s, items_run *ir) {
  if (!ir->n) return WSY_OK;
  barr col[5];
  static const uint32_t oid[5] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_INT8, OID_TEXT};
  int rc = WSY_OK;
  for (int c = 0; c < 5; c++) barr_init(&col[c], oid[c]);
  for (size_t i = 0; i < ir->n && !rc; i++) {
    const batch_entry *e = ir->w[i];
    rc = barr_text(&col[0], e->room);
    if (!rc) rc = barr_text(&col[1], e->item);
    if (!rc) rc = barr_text(&col[2], e->fields);
    if (!rc) rc = barr_int8(&col[3], e->version > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : e->version);
    if (!rc) rc = barr_text(&col[4], e->fields ? e->revs : NULL);
  }
  if (!rc) rc = barr_send(s, PW_ITEMS, ir->first_entry, col, 5);
  for (int c = 0; c < 5; c++) buf_free(&col[c].b);
  memset(ir->tab, 0, ir->tcap * sizeof *ir->tab);
  ir->n = 0;
  return rc;
}

/* Moves each room whose ops ran past its row's seq to its last op. */
static int runs_flush(pg_store *s, runs *t, int entry) {
  for (size_t k = 0; k < t->ndirty; k++) {
    run *r = &t->r[t->dirty[k]];
    r->dirty = 0;
    if (r->last <= r->first) continue;
    char a[24], c[24];
    num(a, r->first);
    num(c, r->last);
    const char *v[] = {r->room, a, c, "-1"}; /* the lock version was checked by the run's first op */
    if (pg_send_stmt(s, PW_ADVANCE, entry, v)) return WSY_IO;
    r->first = r->last;
  }
  t->ndirty = 0;
  return WSY_OK;
}

/* Sends r's pending head check alone (a soft one moves the head or not,
** and fails nothing: store.h). */
static int head_flush(pg_store *s, run *r) {
  if (!r->head) return WSY_OK;
  const batch_entry *h = r->head;
  r->head = NULL;
  const char *v[] = {h->room, h->holder, h->epoch};
  return pg_send_stmt(s, h->version ? PW_HEAD_SOFT : PW_HEAD, r->head_entry, v);
}

static int heads_flush(pg_store *s, runs *t) {
  for (size_t i = 0; i < t->cap; i++)
    if (t->r[i].room && head_flush(s, &t->r[i])) return WSY_IO;
  return WSY_OK;
}

static int send_entry(pg_store *s, runs *t, ops_run *o, items_run *ir, const batch_entry *e, int i) {
  /* A room's head is checked before anything else of the room runs: joined
  ** to its first op's fence when that comes next (a strict head), else
  ** alone, first. */
  if (e->room && e->kind != E_HEAD && e->kind != E_CURSOR) {
    run *hr = run_find(t, e->room);
    int join = hr->head && !hr->head->version && e->kind == E_OP && !(hr->known && e->seq == hr->last + 1);
    if (hr->head && !join && head_flush(s, hr)) return WSY_IO;
  }
  char n1[24], n2[24];
  switch (e->kind) {
  case E_ROOM: {
    inum(n1, e->now_ms);
    const char *v[] = {e->room, e->epoch, n1};
    run_find(t, e->room)->known = 0;
    return pg_send_stmt(s, PW_ROOM_CREATE, i, v);
  }
  case E_DELETE: {
    const char *v[] = {e->room};
    run_find(t, e->room)->known = 0;
    return pg_send_stmt(s, PW_DELETE, i, v);
  }
  case E_TRIM: {
    num(n1, e->seq);
    const char *v[] = {e->room, n1};
    return pg_send_stmt(s, PW_TRIM, i, v);
  }
  case E_CURSOR: {
    num(n1, e->seq);
    inum(n2, e->now_ms);
    const char *v[] = {e->user, e->device, e->room, n1, n2};
    return pg_send_stmt(s, PW_CURSOR_UPSERT, i, v);
  }
  case E_HOOK_POS: {
    num(n1, e->seq);
    inum(n2, e->now_ms);
    const char *v[] = {e->hook, e->room, e->epoch, n1, n2};
    return pg_send_stmt(s, PW_HOOK_POS, i, v);
  }
  case E_HEAD: { /* sent with the room's next fence, or alone before its next statement */
    run *r = run_find(t, e->room);
    int rc = head_flush(s, r);
    r->head = e;
    r->head_entry = i;
    return rc;
  }
  case E_LOCK: {
    char f[24], ex[24];
    num(n1, e->version);
    num(f, e->seq);
    inum(ex, e->now_ms);
    const char *v[] = {e->room, n1, e->item, e->holder, e->user, e->device, f, ex};
    return pg_send_stmt(s, PW_LOCK, i, v);
  }
  case E_TEXT: {
    num(n1, e->version);
    num(n2, e->seq);
    const char *v[] = {e->room, e->item, e->fields, n1, n2, e->msg};
    return pg_send_stmt(s, PW_TEXT_INSERT, i, v);
  }
  case E_ITEM:
  case E_OP: break;
  default: return WSY_INVAL;
  }
  if (e->kind == E_OP) {
    run *r = run_find(t, e->room);
    if (!(r->known && e->seq == r->last + 1)) {
      /* The fence: the room's row must be at seq - 1 right now (and at
      ** the lock version the op was checked against, when it names one). */
      char lv[24] = "-1";
      uint64_t end = t->ends[i] > e->seq ? t->ends[i] : e->seq;
      num(n1, e->seq - 1);
      num(n2, end);
      if (e->locks_at) num(lv, e->locks_at - 1);
      if (r->head) { /* and its head, in the same call */
        const char *v[] = {e->room, n1, n2, lv, r->head->holder, r->head->epoch};
        r->head = NULL;
        if (pg_send_stmt(s, PW_ADVANCE_HEAD, i, v)) return WSY_IO;
      } else {
        const char *v[] = {e->room, n1, n2, lv};
        if (pg_send_stmt(s, PW_ADVANCE, i, v)) return WSY_IO;
      }
      r->known = 1;
      r->first = end; /* moved to the run's end already */
    } else if (e->seq > r->first && !r->dirty) {
      r->dirty = 1;
      t->dirty[t->ndirty++] = (size_t)(r - t->r);
    }
    r->last = e->seq;
    int rc = ops_add(o, e, i);
    if (rc) return store_batch_fail(s->committing, rc, "the batch is too large");
    if (!e->item) return WSY_OK;
  }
  items_add(ir, e, i);
  return WSY_OK;
}

/* Queues the batch's statements and its Sync; PQflush sends what fits. */
int pg_send_batch(pg_store *s) {
  store_batch *b = s->committing;
  runs t;
  runs_init(&t, b);
  runs_ends(&t, b);
  ops_run o = {.n = 0};
  items_run ir = {.n = 0};
  static const uint32_t ooid[6] = {OID_TEXT, OID_INT8, OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT};
  for (int c = 0; c < 6; c++) barr_init(&o.col[c], ooid[c]);
  int rc = WSY_OK;
  for (size_t i = 0; i < b->n && !rc; i++) {
    int k = b->e[i].kind;
    /* A trim reads the room's seq, a delete or create resets it; trims and
    ** deletes remove rows, which must be there by then; a text row follows
    ** the item writes before it and is dropped by those after it. */
    if (flushes_runs(k)) rc = runs_flush(s, &t, (int)i);
    if (!rc && (k == E_TRIM || k == E_ROOM || k == E_DELETE)) rc = ops_flush(s, &o);
    if (!rc && (k == E_TRIM || k == E_ROOM || k == E_DELETE || k == E_TEXT)) rc = items_flush(s, &ir);
    if (!rc) rc = send_entry(s, &t, &o, &ir, &b->e[i], (int)i);
  }
  if (!rc) rc = heads_flush(s, &t); /* heads of rooms with nothing after them */
  if (!rc) rc = ops_flush(s, &o);
  if (!rc) rc = items_flush(s, &ir);
  if (!rc) rc = runs_flush(s, &t, (int)b->n - 1);
  runs_free(&t);
  for (int c = 0; c < 6; c++) buf_free(&o.col[c].b);
  wsy_free(ir.w);
  wsy_free(ir.tab);
  if (rc == WSY_TOO_LARGE || rc == WSY_NOMEM) return rc;
  if (rc || !PQpipelineSync(s->wc)) return WSY_IO;
  s->syncs_left++;
  s->sent_commit = 1;
  return WSY_OK;
}
