/* ophook.c -- the write validation hook (hook.h; HOOKS.md "Op hook"):
 * --op-hook PATTERN=URL sends each op of a matching room to URL before the
 * room decides it. The answer accepts it (as it is, or with its op
 * replaced), or rejects it with a code and a message for the client.
 *
 * Order: a room's ops wait in one queue (any author), and are decided in
 * arrival order. Their questions go out at once, up to WINDOW per room, so
 * a slow answer costs the room one round trip, not one per op; the answers
 * are applied from the head as soon as the head has one. Rooms without a
 * waiting op have no queue, and ops of other rooms never wait.
 *
 *   op ──> queue(room) ──> POST (in flight) ──> answered ──> head? ──> decided
 *                                                              │ no: waits for
 *                                                              └─ the ops ahead
 */
#include <string.h>

#include "../common/log.h"
#include "../hooks/hclient.h"
#include "commit.h"
#include "hook.h"
#include "proto.h"
#include "room.h"

#define WINDOW 64         /* requests in flight per room, one op each */
#define BATCH_WINDOW 4    /* with --op-hook-batch: fewer, so that ops gather while they are out */
#define QUEUE_MAX 4096    /* ops waiting per room; more are refused (retryable) */
#define RETRY_AFTER_MS 1000

typedef struct opq opq;

typedef struct opq_item {
  struct opq_item *next;
  opq *q;
  sess *s;         /* a reference */
  json_t *req;     /* a reference */
  int sent, answered;
  int verdict;     /* 1 accept, 0 reject, -1 no usable answer */
  json_t *op;      /* accept: the replacement op, or NULL */
  char code[65];
  char *message;
} opq_item;

struct opq {
  engine *e;
  char *room;
  const char *url;
  opq_item *head, **tail;
  opq_item *unsent; /* the first op not asked about yet: every op before it was */
  unsigned n, inflight;
};

/* The URL of the first --op-hook whose pattern matches name, or NULL. */
static const char *url_for(const wsy_config *cfg, const char *name) {
  for (unsigned i = 0; i < cfg->op_hooks.n; i++) {
    const char *v = cfg->op_hooks.v[i], *eq = strchr(v, '=');
    char pat[160];
    snprintf(pat, sizeof pat, "%.*s", (int)(eq - v), v);
    if (auth_pattern_match(pat, name)) return eq + 1;
  }
  return NULL;
}

static void item_free(opq_item *it) {
  sess_unref(it->s);
  json_decref(it->req);
  json_decref(it->op);
  wsy_free(it->message);
  wsy_free(it);
}

/* A refusal of the op, behind the room's pending entries when there are
 * some (as handle_op sends its refusals): the client's earlier acks first. */
static void refuse(opq *q, opq_item *it, const char *code, const char *message, json_t *extra) {
  engine *e = q->e;
  commit_count_rejection(e, code);
  json_t *msg = sess_error_msg(it->req, code, message, NULL, extra);
  member *m = room_membership(it->s, q->room);
  if (m && m->r->pending) {
    author au = {e, it->s, NULL, it->s->dkey};
    commit_refusal_in_order(&au, m->r, msg);
  } else {
    sess_send_json(it->s, msg);
  }
}

static void apply(opq *q, opq_item *it) {
  if (it->s->ended) return;
  if (it->verdict > 0) {
    if (it->op) json_object_set(it->req, "op", it->op);
    proto_op_decided(it->s, it->req);
  } else if (it->verdict == 0) {
    refuse(q, it, "rejected", it->message ? it->message : "the op hook rejected this op",
           json_pack("{s:s}", "reason", it->code));
  } else {
    refuse(q, it, "hook_unavailable", "the op hook did not answer; retry later (same cid)",
           json_pack("{s:i}", "retry_after", RETRY_AFTER_MS));
  }
}

/* A reject's code: 1-64 characters of a-z 0-9 _ (an app's vocabulary,
 * relayed as the error's reason). */
static int code_ok(const char *c) {
  size_t n = strlen(c);
  if (n == 0 || n > 64) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((c[i] >= 'a' && c[i] <= 'z') || (c[i] >= '0' && c[i] <= '9') || c[i] == '_')) return 0;
  return 1;
}

static void on_answer(void *ud, const hclient_resp *r);

/* One request: one op, or with --op-hook-batch > 1 up to that many
 * consecutive ops of the room. */
typedef struct opq_req {
  opq *q;
  size_t n;
  opq_item *items[]; /* in queue order */
} opq_req;

/* What the hook is told about one op. */
static json_t *op_question(opq *q, opq_item *it, int with_action) {
  json_t *op = json_object_get(it->req, "op");
  json_t *b = json_pack("{s:s,s:s,s:s,s:s,s:O}", "room", q->room, "user", it->s->id.user, "device",
                        it->s->device, "cid", jstr(it->req, "cid"), "op", op ? op : json_null());
  if (with_action) json_object_set_new(b, "action", json_string("op"));
  return b;
}

/* Sends the questions of the queue's unasked ops, up to WINDOW requests. */
static void pump(opq *q) {
  engine *e = q->e;
  unsigned batch = e->cfg->op_hook_batch ? e->cfg->op_hook_batch : 1;
  unsigned window = batch > 1 ? BATCH_WINDOW : WINDOW;
  opq_item *it = q->unsent;
  while (it && q->inflight < window) {
    opq_req *rq = wsy_calloc(1, sizeof *rq + batch * sizeof(opq_item *));
    rq->q = q;
    for (; it && rq->n < batch; it = it->next) {
      it->sent = 1;
      rq->items[rq->n++] = it;
    }
    json_t *body;
    if (batch == 1) {
      body = op_question(q, rq->items[0], 1);
    } else {
      json_t *ops = json_array();
      for (size_t i = 0; i < rq->n; i++) json_array_append_new(ops, op_question(q, rq->items[i], 0));
      body = json_pack("{s:s,s:s,s:o}", "action", "ops", "room", q->room, "ops", ops);
    }
    e->ophook_calls++;
    int rc = hook_post(e, q->url, body, e->cfg->op_hook_timeout_ms, on_answer, rq);
    json_decref(body);
    if (rc != 0) {
      e->ophook_failures++;
      for (size_t i = 0; i < rq->n; i++) {
        rq->items[i]->answered = 1;
        rq->items[i]->verdict = -1;
      }
      wsy_free(rq);
      continue;
    }
    q->inflight++;
    e->hook_inflight++;
  }
  q->unsent = it;
}

/* Decides the ops at the head that have their answer; frees the queue when
 * it is empty. */
static void drain(opq *q) {
  engine *e = q->e;
  for (;;) {
    while (q->head && q->head->answered) {
      opq_item *it = q->head;
      q->head = it->next;
      if (!q->head) q->tail = &q->head;
      q->n--;
      apply(q, it);
      item_free(it);
    }
    if (!q->head && !q->inflight) {
      map_del(&e->opq, q->room);
      wsy_free(q->room);
      wsy_free(q);
      return;
    }
    pump(q); /* a question that cannot be sent is answered at once */
    if (!q->head || !q->head->answered) return;
  }
}

/* Reads one op's answer a into it (verdict stays -1, why set, when a is
 * not a valid answer). */
static void read_answer(opq_item *it, json_t *a, char *why, size_t whylen) {
  const char *result = jstr(a, "result");
  json_t *op = json_object_get(a, "op"), *code = json_object_get(a, "code"), *msg = json_object_get(a, "message");
  if (!json_is_object(a)) {
    snprintf(why, whylen, "an answer is not an object");
  } else if (!result) {
    snprintf(why, whylen, "result is not a string");
  } else if (!strcmp(result, "accept")) {
    if (op && !json_is_object(op)) snprintf(why, whylen, "op is not an object");
    else {
      it->verdict = 1;
      it->op = op ? json_incref(op) : NULL;
    }
  } else if (!strcmp(result, "reject")) {
    if (code && (!json_is_string(code) || !code_ok(json_string_value(code))))
      snprintf(why, whylen, "code is not 1-64 characters of a-z 0-9 _");
    else if (msg && (!json_is_string(msg) || json_string_length(msg) > 500))
      snprintf(why, whylen, "message is not a string of at most 500 bytes");
    else {
      it->verdict = 0;
      snprintf(it->code, sizeof it->code, "%s", code ? json_string_value(code) : "rejected");
      if (msg) it->message = wsy_strndup(json_string_value(msg), json_string_length(msg));
    }
  } else {
    snprintf(why, whylen, "result is neither accept nor reject");
  }
}

static void on_answer(void *ud, const hclient_resp *r) {
  opq_req *rq = ud;
  opq *q = rq->q;
  engine *e = q->e;
  q->inflight--;
  e->hook_inflight--;
  for (size_t i = 0; i < rq->n; i++) {
    rq->items[i]->answered = 1;
    rq->items[i]->verdict = -1;
  }
  if (e->hooks_closing) { /* the items are freed by ophook_free_all */
    wsy_free(rq);
    return;
  }
  char why[160] = "";
  json_t *a = hook_answer_json(r, why, sizeof why);
  if (a && e->cfg->op_hook_batch > 1) {
    json_t *res = json_object_get(a, "results");
    if (!json_is_array(res) || json_array_size(res) != rq->n)
      snprintf(why, sizeof why, "results is not an array of %zu answers", rq->n);
    else
      for (size_t i = 0; i < rq->n; i++) read_answer(rq->items[i], json_array_get(res, i), why, sizeof why);
  } else if (a) {
    read_answer(rq->items[0], a, why, sizeof why);
  }
  for (size_t i = 0; i < rq->n; i++) {
    if (rq->items[i]->verdict >= 0) continue;
    e->ophook_failures++;
    log_warn("op hook %s: %s for op %s in %s: refused with hook_unavailable", q->url, why,
             jstr(rq->items[i]->req, "cid"), q->room);
  }
  json_decref(a);
  wsy_free(rq);
  drain(q);
}

int ophook_op(sess *s, json_t *req, const char *name) {
  engine *e = s->e;
  const char *url = url_for(e->cfg, name);
  if (!url) return 0;
  opq *q = map_get(&e->opq, name);
  if (!q) {
    q = wsy_calloc(1, sizeof *q);
    q->e = e;
    q->room = wsy_strndup(name, strlen(name));
    q->url = url;
    q->tail = &q->head;
    map_put(&e->opq, name, q);
  }
  if (q->n >= QUEUE_MAX) {
    commit_count_rejection(e, "hook_unavailable");
    sess_error(s, req, "hook_unavailable", "too many ops are waiting for the op hook; retry later", NULL,
               json_pack("{s:i}", "retry_after", RETRY_AFTER_MS));
    return 1;
  }
  opq_item *it = wsy_calloc(1, sizeof *it);
  it->q = q;
  it->s = s;
  s->refs++;
  it->req = json_incref(req);
  *q->tail = it;
  q->tail = &it->next;
  if (!q->unsent) q->unsent = it;
  q->n++;
  pump(q);
  /* A question that could not even be sent is answered (hook_unavailable)
   * in order, now if nothing is ahead of it. */
  if (q->head == it && it->answered) drain(q);
  return 1;
}

void ophook_free_all(engine *e) {
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->opq, &i, &k, &v);) {
    opq *q = v;
    while (q->head) {
      opq_item *it = q->head;
      q->head = it->next;
      item_free(it);
    }
    wsy_free(q->room);
    wsy_free(q);
  }
  map_free(&e->opq);
}
