/* yroom.c -- the Yjs room kind (yroom.h): the document as update bytes,
 * loading it from the snapshot and the log, sequencing updates, serving the
 * committed document, and compaction on the thread pool.
 *
 * THE LIFE OF AN UPDATE (seq s):
 *   yroom_update: validated by the caller; r->seq = s; the log entry goes
 *     into the batch (commit_sequence) and the update onto ks->wait;
 *   commit done: the bus delivers the entry (seq s) -> deliver(): the
 *     updates up to s move from wait to done, then the frame goes to every
 *     connection;
 *   yroom_doc (a client's sync step 1, the server's own step 1): doc and
 *     done merged into doc (doc_seq = the last of them);
 *   compaction: doc and done copied, compacted off the loop, written as the
 *     snapshot at S (the last seq copied) with the log trimmed below S + 1.
 * A failed commit leaves the room broken; it reloads from the store when
 * nothing of it is pending, and its connections are closed (1013) so that
 * the clients sync again and resend what the store lost. */
#include "yroom.h"

#include <openssl/evp.h>
#include <string.h>

#include "../common/log.h"
#include "commit.h"
#include "kind.h"

#define Y(r) ((ydoc *)(r)->ks)

/* An empty update: no structs, no deletes (Y.encodeStateAsUpdate of a new doc). */
static const uint8_t EMPTY_UPDATE[2] = {0, 0};

/* ---- base64 (the log and the snapshot are JSON text) ------------------------- */

/* Appends the base64 of p[0..n) to w. */
static void b64_write(jw *w, const uint8_t *p, size_t n) {
  jw_grow(w, (n + 2) / 3 * 4 + 1);
  int k = EVP_EncodeBlock((unsigned char *)w->p + w->len, p, (int)n);
  w->len += (size_t)k;
}

/* The bytes of base64 text s[0..n), in a new buffer (wsy_free); NULL when
 * s is not base64. */
static uint8_t *b64_read(const char *s, size_t n, size_t *out_len) {
  if (n % 4 != 0) return NULL;
  uint8_t *out = wsy_malloc(n / 4 * 3 + 1);
  int k = n ? EVP_DecodeBlock(out, (const unsigned char *)s, (int)n) : 0;
  if (k < 0) {
    wsy_free(out);
    return NULL;
  }
  size_t pad = n && s[n - 1] == '=' ? (n > 1 && s[n - 2] == '=' ? 2 : 1) : 0;
  *out_len = (size_t)k - pad;
  return out;
}

/* ---- the in-memory document ------------------------------------------------ */

static yupd *upd_new(uint64_t seq, const uint8_t *b, size_t n) {
  yupd *u = wsy_malloc(sizeof *u + n);
  u->next = NULL;
  u->seq = seq;
  u->len = n;
  memcpy(u->b, b, n);
  return u;
}

static void upd_list_free(yupd *u) {
  for (yupd *next; u; u = next) {
    next = u->next;
    wsy_free(u);
  }
}

static void done_append(ydoc *y, yupd *u) {
  u->next = NULL;
  *y->done_tail = u;
  y->done_tail = &u->next;
  y->ndone++;
  y->done_seq = u->seq;
}

struct ycompaction {
  uv_work_t work;
  engine *e;
  room *r;          /* NULL once the room unloaded: the result is dropped */
  uint64_t upto;    /* the last seq among the inputs */
  uint64_t doc_seq; /* ks->doc_seq when it started: memory takes the result only if unchanged */
  uint64_t bytes, cum; /* update bytes in the inputs after doc; y->cum_bytes covered */
  const uint8_t **ups;
  size_t *lens, count;
  uint8_t **owned;  /* the copies ups point into */
  ybuf out;
  int rc;
  char err[200];
};

static void job_free(ycompaction *j) {
  for (size_t i = 0; i < j->count; i++) wsy_free(j->owned[i]);
  wsy_free(j->owned);
  wsy_free(j->ups);
  wsy_free(j->lens);
  ybuf_free(&j->out);
  wsy_free(j);
}

/* Snapshot row: {"seq":S,"update":"<base64>"}. */
static int load_snapshot(const char *item, const char *fields, size_t len, const char *revs, uint64_t version,
                         void *ud) {
  (void)revs;
  (void)version;
  ydoc *y = ud;
  if (strcmp(item, YROOM_SNAPSHOT_ITEM) != 0) return 0;
  json_error_t jerr;
  json_t *v = json_loadb(fields, len, 0, &jerr);
  const char *b64 = json_string_value(json_object_get(v, "update"));
  json_t *seq = json_object_get(v, "seq");
  size_t n = 0;
  uint8_t *b = b64 && json_is_integer(seq) ? b64_read(b64, strlen(b64), &n) : NULL;
  int rc = WSY_INVAL;
  if (b && yupdate_validate(b, n, NULL, 0) == 0) {
    ybuf_free(&y->doc);
    y->doc = (ybuf){b, n, n};
    y->doc_seq = y->snap_seq = (uint64_t)json_integer_value(seq);
    b = NULL;
    rc = 0;
  }
  wsy_free(b);
  json_decref(v);
  if (rc) log_error("a Yjs snapshot in the store is not valid; the room is not served");
  return rc;
}

/* Log entry: {"type":"yjs","update":"<base64>"}. */
static int load_entry(uint64_t seq, const char *msg, size_t len, void *ud) {
  ydoc *y = ud;
  json_error_t jerr;
  json_t *v = json_loadb(msg, len, 0, &jerr);
  const char *b64 = json_string_value(json_object_get(v, "update"));
  size_t n = 0;
  uint8_t *b = b64 ? b64_read(b64, strlen(b64), &n) : NULL;
  json_decref(v);
  if (!b) {
    log_error("Yjs log entry %llu is not an update; the room is not served", (unsigned long long)seq);
    return WSY_INVAL;
  }
  done_append(y, upd_new(seq, b, n));
  y->cum_bytes += n;
  wsy_free(b);
  return 0;
}

static void ykind_unload(room *r) {
  ydoc *y = r->ks;
  if (!y) return;
  if (y->job) y->job->r = NULL; /* finishes on the pool; its result is dropped */
  ybuf_free(&y->doc);
  upd_list_free(y->done);
  upd_list_free(y->wait);
  wsy_free(y);
  r->ks = NULL;
}

static int ykind_load(room *r, store *st, const store_room_info *info) {
  ydoc *y = wsy_calloc(1, sizeof *y);
  y->done_tail = &y->done;
  y->wait_tail = &y->wait;
  r->ks = y;
  int rc = 0;
  if (info->exists) {
    rc = store_room_items(st, r->name, load_snapshot, y);
    if (rc == 0 && info->seq > y->doc_seq && y->doc_seq + 1 < info->min_seq) {
      log_error("Yjs room %s: the log starts at %llu, after its snapshot (%llu)", r->name,
                (unsigned long long)info->min_seq, (unsigned long long)y->doc_seq);
      rc = WSY_INVAL;
    }
    if (rc == 0) rc = store_history(st, r->name, y->doc_seq, 0, load_entry, y);
  }
  /* A reload after a failed commit: what the clients were sent may be
   * ahead of the store. They reconnect (1013 is not final for
   * y-websocket) and resend what the store lacks in their sync step 2. */
  if (r->npeers) yconn_close_all(r, WS_CLOSE_TRY_AGAIN_LATER, "the room was reloaded after a storage failure");
  return rc;
}

/* Yjs rooms take no JSON ops (join refuses them before that). */
static int ykind_apply(author *a, json_t *req, room *r, json_t *op, const char *cid, int force, json_t *from,
                       op_refusal *why) {
  (void)a, (void)req, (void)r, (void)op, (void)cid, (void)force, (void)from;
  return commit_refuse(why, "bad_request", "the room is a Yjs room: it takes Yjs updates on /v1/yjs/{room}", NULL);
}

/* A Yjs room's joiners sync by the y-protocols handshake (docs/YJS.md), not
 * by items: its snapshot has none. */
static int ykind_snapshot(room *r, store *st, doc_frozen **out) {
  (void)r;
  (void)st;
  (void)out;
  return 0;
}

size_t yroom_bytes(const room *r) {
  const ydoc *y = r->ks;
  if (!y) return 0;
  size_t n = sizeof *y + y->doc.cap;
  for (const yupd *u = y->done; u; u = u->next) n += sizeof *u + u->len;
  for (const yupd *u = y->wait; u; u = u->next) n += sizeof *u + u->len;
  return n;
}

const ybuf *yroom_doc(engine *e, room *r, int *err) {
  (void)e;
  ydoc *y = Y(r);
  if (y->ndone == 0 && y->doc.len) return &y->doc;
  size_t count = y->ndone + 1, i = 0;
  const uint8_t **ups = wsy_malloc(count * sizeof *ups);
  size_t *lens = wsy_malloc(count * sizeof *lens);
  ups[i] = y->doc.len ? y->doc.p : EMPTY_UPDATE;
  lens[i++] = y->doc.len ? y->doc.len : sizeof EMPTY_UPDATE;
  for (yupd *u = y->done; u; u = u->next, i++) {
    ups[i] = u->b;
    lens[i] = u->len;
  }
  ybuf out = {0};
  char why[200];
  int rc = yupdate_merge(ups, lens, count, &out, why, sizeof why);
  wsy_free(ups);
  wsy_free(lens);
  if (rc != 0) {
    log_error("Yjs room %s: merging its updates failed: %s", r->name, why);
    ybuf_free(&out);
    *err = rc;
    return NULL;
  }
  /* Held while the room is loaded: no growth slack. */
  if (out.cap > out.len && out.len) {
    out.p = wsy_realloc(out.p, out.len);
    out.cap = out.len;
  }
  ybuf_free(&y->doc);
  y->doc = out;
  for (yupd *u = y->done; u; u = u->next) y->doc_seq = u->seq;
  upd_list_free(y->done);
  y->done = NULL;
  y->done_tail = &y->done;
  y->ndone = 0;
  return &y->doc;
}

/* ---- compaction ------------------------------------------------------------ */

static void compact_work(uv_work_t *w) {
  ycompaction *j = w->data;
  j->rc = yupdate_compact_many(j->ups, j->lens, j->count, &j->out, j->err, sizeof j->err);
}

static void compact_done(uv_work_t *w, int status) {
  ycompaction *j = w->data;
  engine *e = j->e;
  room *r = j->r;
  e->y_jobs--;
  if (!r) { /* the room unloaded meanwhile (shutdown) */
    job_free(j);
    return;
  }
  ydoc *y = Y(r);
  y->job = NULL;
  if (status != 0 || j->rc != 0) {
    log_error("Yjs room %s: compaction failed: %s", r->name, status ? uv_strerror(status) : j->err);
  } else {
    /* The snapshot and the trim in one transaction: the log below S + 1 is
     * gone only if the snapshot that holds it is stored. */
    jw *t = &e->frame_text;
    jw_reset(t);
    jw_lit(t, "{\"seq\":");
    jw_int(t, (int64_t)j->upto);
    jw_lit(t, ",\"update\":\"");
    b64_write(t, j->out.p, j->out.len);
    jw_lit(t, "\"}");
    store_batch_item(e->batch, r->name, YROOM_SNAPSHOT_ITEM, t->p, NULL, j->upto);
    store_batch_trim(e->batch, r->name, j->upto + 1);
    y->snap_seq = j->upto;
    y->snap_cum = j->cum;
    e->y_compactions++;
    log_info("Yjs room %s compacted up to seq %llu: %zu updates, %llu bytes -> %zu bytes", r->name,
             (unsigned long long)j->upto, j->count, (unsigned long long)j->bytes, j->out.len);
    /* Memory takes the result when nothing was merged meanwhile: the
     * compacted document, and the updates after S still to merge. */
    if (y->doc_seq == j->doc_seq) {
      ybuf_free(&y->doc);
      y->doc = j->out;
      j->out = (ybuf){0};
      y->doc_seq = j->upto;
      while (y->done && y->done->seq <= j->upto) {
        yupd *u = y->done;
        y->done = u->next;
        y->ndone--;
        wsy_free(u);
      }
      if (!y->done) y->done_tail = &y->done;
    }
  }
  job_free(j);
  r->pending--;
  if (r->broken && r->pending == 0) (void)room_reload(e, r);
  room_unload_if_idle(e, r);
}

/* Starts a compaction of r's committed updates when the log since the last
 * snapshot passed a threshold and none is in flight. */
static void maybe_compact(engine *e, room *r) {
  ydoc *y = Y(r);
  uint64_t committed = y->done ? y->done_seq : y->doc_seq;
  uint64_t cum = y->cum_bytes - y->wait_bytes;
  if (y->job || r->broken || committed <= y->snap_seq ||
      (committed - y->snap_seq < e->cfg->yjs_compact_ops && cum - y->snap_cum < e->cfg->yjs_compact_bytes))
    return;
  ycompaction *j = wsy_calloc(1, sizeof *j);
  j->e = e;
  j->r = r;
  j->doc_seq = y->doc_seq;
  j->upto = committed;
  j->cum = cum;
  j->count = y->ndone + (y->doc.len ? 1 : 0);
  j->ups = wsy_malloc(j->count * sizeof *j->ups);
  j->lens = wsy_malloc(j->count * sizeof *j->lens);
  j->owned = wsy_malloc(j->count * sizeof *j->owned);
  size_t i = 0;
  if (y->doc.len) {
    j->owned[i] = wsy_malloc(y->doc.len);
    memcpy(j->owned[i], y->doc.p, y->doc.len);
    j->lens[i++] = y->doc.len;
  }
  for (yupd *u = y->done; u; u = u->next, i++) {
    j->owned[i] = wsy_malloc(u->len);
    memcpy(j->owned[i], u->b, u->len);
    j->lens[i] = u->len;
    j->bytes += u->len;
  }
  for (i = 0; i < j->count; i++) j->ups[i] = j->owned[i];
  j->work.data = j;
  y->job = j;
  r->pending++; /* pins the room until the result is in the batch */
  e->y_jobs++;
  int rc = uv_queue_work(e->loop, &j->work, compact_work, compact_done);
  if (rc != 0) {
    e->y_jobs--;
    log_error("Yjs room %s: compaction not started: %s", r->name, uv_strerror(rc));
    y->job = NULL;
    r->pending--;
    job_free(j);
  }
}

/* ---- sequencing and delivery ------------------------------------------------ */

int yroom_update(engine *e, room *r, const uint8_t *u, size_t n) {
  if (n == sizeof EMPTY_UPDATE && memcmp(u, EMPTY_UPDATE, n) == 0) return 0; /* says nothing */
  author a = {e, NULL, NULL, NULL};
  op_refusal why;
  if (commit_admit(&a, NULL, r, NULL, &why) != 0) {
    json_decref(why.extra);
    return -1;
  }
  r->seq++;
  /* The log entry (e->frame_text, which commit_sequence stores) and the
   * relayed message (y-protocols sync update) are different texts. */
  jw *t = &e->frame_text;
  jw_reset(t);
  jw_lit(t, "{\"type\":\"yjs\",\"update\":\"");
  b64_write(t, u, n);
  jw_lit(t, "\"}");
  ybuf m = {0};
  if (lib0_write_varuint(&m, 0) || lib0_write_varuint(&m, 2) || lib0_write_varbytes(&m, u, n)) abort();
  net_chunk *frame = ws_frame_new(WS_OP_BINARY, m.p, m.len);
  ybuf_free(&m);
  commit_sequence(&a, NULL, r, frame, NULL, NULL, NULL, NULL, 0, NULL);
  ydoc *y = Y(r);
  yupd *x = upd_new(r->seq, u, n);
  *y->wait_tail = x;
  y->wait_tail = &x->next;
  y->cum_bytes += n;
  y->wait_bytes += n;
  e->y_updates++;
  return 0;
}

static void ykind_deliver(engine *e, room *r, const bus_msg *m) {
  ydoc *y = Y(r);
  if (m->seq && y) {
    while (y->wait && y->wait->seq <= m->seq) {
      yupd *u = y->wait;
      y->wait = u->next;
      y->wait_bytes -= u->len;
      done_append(y, u);
    }
    if (!y->wait) y->wait_tail = &y->wait;
  }
  yconn_send_all(e, r, m->frame);
  if (m->seq && y) maybe_compact(e, r);
}

const room_kind yjs_room_kind = {
  .name = "yjs",
  .load = ykind_load,
  .unload = ykind_unload,
  .apply = ykind_apply,
  .snapshot = ykind_snapshot,
  .deliver = ykind_deliver,
  .epoch_tag = 'y',
  .own_retention = 1,
};
