/* api.c -- the backend HTTP API and /metrics (api.h). */
#include "api.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "../common/log.h"

#include "cluster.h"
#include "commit.h"
#include "kind.h"
#include "yroom.h"
#include "proto.h"
#include "room.h"
#include "sess.h"

void api_error(conn *c, int status, const char *code, const char *message) {
  json_t *b = json_pack("{s:s,s:s,s:s}", "type", "error", "code", code, "message", message);
  char *text = jw_dumps(b);
  json_decref(b);
  httpd_json(c, status, "", text);
  free(text);
}

static int api_key_ok(engine *e, conn *c, httpd_req *r) {
  const char *key = e->cfg->api_key;
  if (!key || !*key) {
    httpd_error(c, 404, "no such resource (the backend API needs --api-key)");
    return 0;
  }
  size_t hl = 0;
  const char *h = httpd_req_header(r, "Authorization", &hl);
  size_t kl = strlen(key);
  int ok = h && hl == kl + 7 && strncmp(h, "Bearer ", 7) == 0 && CRYPTO_memcmp(h + 7, key, kl) == 0;
  if (!ok) {
    json_t *b = json_pack("{s:s,s:s,s:s}", "type", "error", "code", "unauthorized", "message",
                          "Authorization: Bearer <api key> required");
    char *text = jw_dumps(b);
    json_decref(b);
    httpd_respond(c, 401, "application/json", "WWW-Authenticate: Bearer\r\n", text, strlen(text));
    free(text);
  }
  return ok;
}

static void http_json(conn *c, int status, json_t *body) {
  char *text = jw_dumps(body);
  json_decref(body);
  httpd_json(c, status, "", text);
  free(text);
}

static int status_of(const char *code) {
  if (!strcmp(code, "conflict") || !strcmp(code, "lock_lost")) return 409;
  if (!strcmp(code, "too_large")) return 413;
  if (!strcmp(code, "locked")) return 423;
  if (!strcmp(code, "not_found")) return 404;
  if (!strcmp(code, "internal")) return 500;
  return 400;
}

/* The buckets of wsync_commit_seconds: the bounds and their label, one table. */
static const struct {
  double le;
  const char *text;
} commit_bounds[] = {
  {0.0005, "0.0005"}, {0.001, "0.001"}, {0.0025, "0.0025"}, {0.005, "0.005"}, {0.01, "0.01"}, {0.025, "0.025"},
  {0.05, "0.05"},     {0.1, "0.1"},     {0.25, "0.25"},     {0.5, "0.5"},     {1, "1"},       {2.5, "2.5"},
};

void api_commit_observed(engine *e, double secs, int failed) {
  _Static_assert(WSY_ARRAY_LEN(commit_bounds) < WSY_ARRAY_LEN(((engine *)0)->commit_hist),
                 "a bucket per bound and one for +Inf");
  size_t bi = 0;
  while (bi < WSY_ARRAY_LEN(commit_bounds) && secs > commit_bounds[bi].le) bi++;
  e->commit_hist[bi]++;
  e->commit_sum += secs;
  e->commits++;
  if (failed) e->commit_failures++;
}

void api_lag_observed(engine *e, double secs) {
  size_t bi = 0;
  while (bi < WSY_ARRAY_LEN(commit_bounds) && secs > commit_bounds[bi].le) bi++;
  e->lag_hist[bi]++;
  e->lag_sum += secs;
  e->lag_count++;
}

/* One histogram of commit_bounds' buckets. */
static void emit_hist(buf *b, const char *name, const uint64_t *hist, double sum, uint64_t count) {
  uint64_t cum = 0;
  char line[160];
  for (size_t i = 0; i <= WSY_ARRAY_LEN(commit_bounds); i++) {
    cum += hist[i];
    int n = snprintf(line, sizeof line, "%s_bucket{le=\"%s\"} %llu\n", name,
                     i < WSY_ARRAY_LEN(commit_bounds) ? commit_bounds[i].text : "+Inf", (unsigned long long)cum);
    if (buf_append(b, line, wsy_snlen(n, sizeof line)) != WSY_OK) return;
  }
  int n = snprintf(line, sizeof line, "%s_sum %.6f\n%s_count %llu\n", name, sum, name, (unsigned long long)count);
  if (buf_append(b, line, wsy_snlen(n, sizeof line)) != WSY_OK) return;
}

static void metrics(engine *e, conn *c) {
  const net_stats *ns = net_loop_stats(e->net);
  size_t nsess = 0;
  const char *k;
  void *v;
  buf b;
  buf_init(&b, 1 << 20);
  char line[512];
  /* One line at most 511 bytes (wsy_snlen clamps): every format here is far
   * shorter, and a cut line is better than bytes past the buffer. */
#define EMIT(...)                                                            \
  do {                                                                       \
    int n_ = snprintf(line, sizeof line, __VA_ARGS__);                        \
    if (buf_append(&b, line, wsy_snlen(n_, sizeof line)) != WSY_OK) break;   \
  } while (0)
  /* One series without labels: its HELP and TYPE lines, then its value. */
#define SERIES(name, type, fmt, help, ...) \
  EMIT("# HELP " name " " help "\n# TYPE " name " " type "\n" name " " fmt "\n", __VA_ARGS__)
  unsigned conns = e->ws_conns;
  for (size_t i = 0; map_next(&e->rooms, &i, &k, &v);) nsess += ((room *)v)->nmembers;
  EMIT("# HELP wsync_connections Open client connections.\n# TYPE wsync_connections gauge\n");
  EMIT("wsync_connections{transport=\"ws\"} %u\n", conns);
  SERIES("wsync_rooms", "gauge", "%zu", "Rooms loaded in memory.", map_len(&e->rooms));
  SERIES("wsync_room_members", "gauge", "%zu", "Session memberships of loaded rooms.", nsess);
  size_t yrooms = 0, ybytes = 0, yconns = 0;
  for (size_t i = 0; map_next(&e->rooms, &i, &k, &v);)
    if (((room *)v)->kind == &yjs_room_kind) {
      yrooms++;
      ybytes += yroom_bytes(v);
      yconns += ((room *)v)->npeers;
    }
  SERIES("wsync_yjs_rooms", "gauge", "%zu", "Yjs rooms loaded in memory.", yrooms);
  SERIES("wsync_yjs_connections", "gauge", "%zu", "Connections to Yjs rooms (/v1/yjs).", yconns);
  SERIES("wsync_yjs_bytes", "gauge", "%zu", "Bytes of Yjs documents and updates held by loaded rooms.", ybytes);
  SERIES("wsync_yjs_updates_total", "counter", "%llu",
         "Yjs updates accepted and sequenced.", (unsigned long long)e->y_updates);
  SERIES("wsync_yjs_compactions_total", "counter", "%llu",
         "Yjs room logs compacted into a snapshot.", (unsigned long long)e->y_compactions);
  SERIES("wsync_ops_accepted_total", "counter", "%llu",
         "Log entries accepted and sequenced (ops and stored publishes), before their commit: committed plus failed "
         "plus in flight.", (unsigned long long)e->ops_accepted);
  SERIES("wsync_ops_committed_total", "counter", "%llu",
         "Log entries committed durably to the store (acknowledged).", (unsigned long long)e->ops_committed);
  SERIES("wsync_ops_failed_total", "counter", "%llu",
         "Log entries whose commit failed: not stored, refused with internal.", (unsigned long long)e->ops_failed);
  SERIES("wsync_joins_waited_total", "counter", "%llu",
         "Joins that waited for their room's pending entries to commit, rather than reading the room from the store.",
         (unsigned long long)e->joins_waited);
  SERIES("wsync_joins_refetched_total", "counter", "%llu",
         "Cluster: joins that found their replica behind after waiting, or needed its log, and waited for another "
         "asynchronous read of the room.", (unsigned long long)e->joins_refetched);
  EMIT("# HELP wsync_ops_rejected_total Rejected ops, by error code.\n# TYPE wsync_ops_rejected_total counter\n");
  for (size_t i = 0; map_next(&e->rejected, &i, &k, &v);)
    EMIT("wsync_ops_rejected_total{code=\"%s\"} %llu\n", k, (unsigned long long)(uintptr_t)v);
  size_t attached = 0, detached = 0;
  for (size_t i = 0; map_next(&e->sessions, &i, &k, &v);) {
    if (sess_online(v)) attached++;
    else detached++;
  }
  EMIT("# HELP wsync_sessions Live sessions.\n# TYPE wsync_sessions gauge\n"
       "wsync_sessions{state=\"attached\"} %zu\nwsync_sessions{state=\"detached\"} %zu\n", attached, detached);
  SERIES("wsync_deliveries_total", "counter", "%llu",
         "Messages queued to sessions by fan-out.", (unsigned long long)e->deliveries);
  SERIES("wsync_presence_windows_total", "counter", "%llu",
         "Presence windows sent (a room's presence changes of one window, merged).",
         (unsigned long long)e->pres_windows);
  SERIES("wsync_presence_windows_lengthened_total", "counter", "%llu",
         "Presence windows sent that lasted longer than --presence-interval (joins and leaves in window after "
         "window).", (unsigned long long)e->pres_windows_long);
  SERIES("wsync_outbox_bytes", "gauge", "%zu",
         "Bytes the sessions' outboxes hold themselves (their own messages, run entries).", e->outbox_mem);
  SERIES("wsync_resume_ring_bytes", "gauge", "%zu",
         "Bytes of room messages the resume rings hold (once per room).", e->ring_mem);
  bus_stats bs;
  bus_get_stats(e->bus, &bs);
  if (e->clustered) {
    uint64_t rs, rf, rff;
    store_read_counts(e->st, &rs, &rf, &rff);
    EMIT("# HELP wsync_store_reads_total Reads of the shared store: sync waited on the loop (bounded by a deadline),"
         " async did not (fetches).\n# TYPE wsync_store_reads_total counter\n"
         "wsync_store_reads_total{mode=\"sync\"} %llu\nwsync_store_reads_total{mode=\"async\"} %llu\n",
         (unsigned long long)rs, (unsigned long long)rf);
    SERIES("wsync_cluster_check_behind_total", "counter", "%llu",
         "Loaded rooms the once-a-second comparison with the store found behind it (an entry the bus lost): each is "
         "then fetched.", (unsigned long long)e->check_behind);
    SERIES("wsync_api_writes_fetched_total", "counter", "%llu",
         "Backend writes to a room not loaded on this node (or whose replica had to be read again) that waited for "
         "an asynchronous read of it rather than reading on the loop.", (unsigned long long)e->api_writes_waited);
    SERIES("wsync_store_fetch_failures_total", "counter", "%llu",
         "Asynchronous reads that failed.", (unsigned long long)rff);
  }
  EMIT("# HELP wsync_node_info This node's name and its bus (a constant 1).\n# TYPE wsync_node_info gauge\n"
       "wsync_node_info{node=\"%s\",bus=\"%s\",store=\"%s\"} 1\n", e->node_id, bus_name(e->bus),
       store_backend(e->st));
  SERIES("wsync_bus_up", "gauge", "%d", "1 while the link to the bus is up.", bs.up);
  SERIES("wsync_bus_nodes", "gauge", "%u", "Other nodes heard from within the heartbeat TTL.", bs.nodes);
  SERIES("wsync_bus_published_total", "counter", "%llu",
         "Messages handed to the bus.", (unsigned long long)bs.published);
  SERIES("wsync_bus_received_total", "counter", "%llu",
         "Messages delivered here from other nodes.", (unsigned long long)e->bus_received);
  SERIES("wsync_bus_dropped_total", "counter", "%llu",
         "Publishes lost while the bus link was down (entries are refilled from the store).",
         (unsigned long long)bs.dropped);
  SERIES("wsync_bus_reconnects_total", "counter", "%llu",
         "Times the bus link came back.", (unsigned long long)bs.reconnects);
  SERIES("wsync_bus_duplicates_total", "counter", "%llu",
         "Entries dropped because this node had delivered them already.", (unsigned long long)e->bus_duplicates);
  SERIES("wsync_bus_gaps_total", "counter", "%llu",
         "Entries that arrived past a gap, which was refilled from the store first.",
         (unsigned long long)e->bus_gaps);
  SERIES("wsync_refills_total", "counter", "%llu",
         "Reads of missing entries from the store (gaps, link back, periodic check).",
         (unsigned long long)e->refills);
  SERIES("wsync_refilled_entries_total", "counter", "%llu",
         "Entries delivered from the store rather than the bus.", (unsigned long long)e->refilled);
  SERIES("wsync_room_reloads_total", "counter", "%llu",
         "Rooms read again from the store after other nodes wrote them.", (unsigned long long)e->reloads);
  SERIES("wsync_room_reloads_changes_total", "counter", "%llu",
         "Of those, replicas read again as only the items written since their seq.",
         (unsigned long long)e->reloads_changes);
  SERIES("wsync_room_reloads_whole_total", "counter", "%llu",
         "Reads of changes that could not be used (the replica had run ahead of the store, or the room was made "
         "again): the room was read again whole.", (unsigned long long)e->reloads_whole);
  SERIES("wsync_ops_forwarded_total", "counter", "%llu",
         "Ops of this node's sessions sent to their room's owner node to be decided (--forward-ops).",
         (unsigned long long)e->ops_forwarded);
  SERIES("wsync_ops_forwarded_in_total", "counter", "%llu",
         "Ops of other nodes' sessions decided here, as their room's owner.", (unsigned long long)e->ops_forwarded_in);
  SERIES("wsync_ops_forward_rerouted_total", "counter", "%llu",
         "Forwarded ops decided again elsewhere: their owner went away, was out of reach or did not answer in time.",
         (unsigned long long)e->ops_rerouted);
  SERIES("wsync_stale_commits_total", "counter", "%llu",
         "Batches fenced out because another node committed to a room first.", (unsigned long long)e->stale_commits);
  SERIES("wsync_stale_deferred_total", "counter", "%llu",
         "Writes that found their room's replica behind with entries pending, and waited for a read.",
         (unsigned long long)e->stale_deferred);
  SERIES("wsync_dedupe_fetches_total", "counter", "%llu",
         "Dedupe lookups read from the store without blocking.", (unsigned long long)e->dedupe_fetches);
  SERIES("wsync_dedupe_lookups_total", "counter", "%llu",
         "Dedupe records read from the store on the loop thread: the dedupe filter could not rule the cid out.",
         (unsigned long long)e->dedupe_lookups);
  SERIES("wsync_dedupe_filter_bytes", "gauge", "%zu", "Bytes of the dedupe filter, which grows with the cids recorded.",
         cidf_bytes(&e->seen));
  SERIES("wsync_bytes_in_total", "counter", "%llu", "Bytes received.", (unsigned long long)ns->bytes_in);
  SERIES("wsync_bytes_out_total", "counter", "%llu", "Bytes sent.", (unsigned long long)ns->bytes_out);
  SERIES("wsync_write_calls_total", "counter", "%llu", "Write system calls to connections.",
         (unsigned long long)ns->writes);
  SERIES("wsync_write_calls_helped_total", "counter", "%llu",
         "Write system calls made by --write-threads helpers.", (unsigned long long)ns->writes_helped);
  SERIES("wsync_slow_consumer_closes_total", "counter", "%llu",
         "Connections closed with 1013.", (unsigned long long)ns->slow_closes);
  EMIT("# HELP wsync_commit_seconds Time a batch takes to commit durably.\n"
       "# TYPE wsync_commit_seconds histogram\n");
  emit_hist(&b, "wsync_commit_seconds", e->commit_hist, e->commit_sum, e->commits);
  EMIT("# HELP wsync_bus_lag_seconds Time from an entry's decision on another node to its delivery here"
       " (over the bus, or refilled from the store; ms resolution, clocks of both nodes).\n"
       "# TYPE wsync_bus_lag_seconds histogram\n");
  emit_hist(&b, "wsync_bus_lag_seconds", e->lag_hist, e->lag_sum, e->lag_count);
  SERIES("wsync_commit_failures_total", "counter", "%llu",
         "Batches whose commit failed (nothing of them was stored).", (unsigned long long)e->commit_failures);
  webhooks_metrics(e->hooks, &b);
  if (e->cfg->auth_hook || e->cfg->op_hooks.n) {
    EMIT("# HELP wsync_hook_requests_total Questions asked of the hooks that decide (--auth-hook, --op-hook).\n"
         "# TYPE wsync_hook_requests_total counter\nwsync_hook_requests_total{hook=\"auth\"} %llu\n"
         "wsync_hook_requests_total{hook=\"op\"} %llu\n", (unsigned long long)e->hook_calls,
         (unsigned long long)e->ophook_calls);
    EMIT("# HELP wsync_hook_failures_total Questions without a usable answer (timeout, status, shape): refused "
         "with hook_unavailable.\n# TYPE wsync_hook_failures_total counter\nwsync_hook_failures_total{hook=\"auth\"} "
         "%llu\nwsync_hook_failures_total{hook=\"op\"} %llu\n", (unsigned long long)e->hook_failures,
         (unsigned long long)e->ophook_failures);
    SERIES("wsync_auth_hook_cache_hits_total", "counter", "%llu",
         "Hellos and joins decided by a cached --auth-hook answer.", (unsigned long long)e->hook_cache_hits);
  }
#undef SERIES
#undef EMIT
  httpd_respond(c, 200, "text/plain; version=0.0.4", "Cache-Control: no-store\r\n", b.data, b.len);
  buf_free(&b);
}

static json_t *parse_body(conn *c, httpd_req *r) {
  size_t len;
  const uint8_t *body = httpd_req_body(r, &len);
  json_error_t jerr;
  json_t *j = len ? json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
  if (!j || !json_is_object(j)) {
    json_decref(j);
    api_error(c, 400, "bad_json", "the body must be one JSON object");
    return NULL;
  }
  return j;
}

/* An answer to a backend request, deferred (it waited for a fetch: logged
 * here with its line, as api_route does not see it) or not. c NULL: the
 * client is gone. */
static void answer(conn *c, const char *line, int deferred, int status, json_t *body) {
  if (!deferred) {
    http_json(c, status, body);
    return;
  }
  if (line) log_info("api %s -> %d%s", line, status, c ? "" : " (client gone)");
  if (c) {
    char *text = jw_dumps(body);
    httpd_deferred_answer(c, status, "application/json", "Cache-Control: no-store\r\n", text, strlen(text));
    free(text);
  }
  json_decref(body);
}

static json_t *error_body(const char *code, const char *message) {
  return json_pack("{s:s,s:s,s:s}", "type", "error", "code", code, "message", message);
}

static void backend_write_room(engine *e, conn *c, int deferred, room *rm, json_t *req, int is_publish);

static void backend_write(engine *e, conn *c, httpd_req *r, const char *name, int is_publish) {
  json_t *req = parse_body(c, r);
  if (!req) return;
  const char *cid = jstr(req, "cid");
  if (json_object_get(req, "cid") && (!cid || !commit_cid_valid(cid))) {
    api_error(c, 400, "bad_request", "cid must be 1-128 characters of A-Z a-z 0-9 . _ : @ -");
    goto out;
  }
  json_t *data = json_object_get(req, "data");
  if (!is_publish && !json_is_object(json_object_get(req, "op"))) {
    api_error(c, 400, "bad_request", "op must be an object");
    goto out;
  }
  if (is_publish && !data) {
    api_error(c, 400, "bad_request", "data is required");
    goto out;
  }
  if (is_publish) {
    if (sync_encoded_size(data) > e->lim.max_field_size) {
      api_error(c, 413, "too_large", "data is too large");
      goto out;
    }
    if (!sync_value_ok(data, e->lim.max_depth)) {
      api_error(c, 400, "invalid_field", "data nests too deep or holds an integer beyond 2^53");
      goto out;
    }
    json_t *eph = json_object_get(req, "ephemeral");
    if (eph && !json_is_boolean(eph)) {
      api_error(c, 400, "bad_request", "ephemeral must be a boolean");
      goto out;
    }
  }
  /* In a cluster, a room not loaded here, or whose replica must be read
   * again, is read without blocking first (cluster.h). */
  if (cluster_api_write_wait(e, c, name, req, is_publish)) goto out;
  int lerr = 0;
  room *rm = room_get(e, name, &lerr);
  if (!rm) {
    if (lerr == ROOM_WRONG_KIND) api_error(c, 409, "bad_request", "the room is a Yjs room: it takes Yjs updates on /v1/yjs/{room}");
    else api_error(c, 500, "internal", "the room could not be loaded");
    goto out;
  }
  backend_write_room(e, c, 0, rm, req, is_publish);
out:
  json_decref(req);
}

void api_delete_go(engine *e, conn *c, const char *name, const char *line) {
  const char *outer = e->api_line;
  e->api_line = line;
  if (!cluster_api_write_wait(e, c, name, NULL, API_DELETE)) {
    author au = {e, NULL, c, ":backend"};
    commit_room_delete(&au, map_get(&e->rooms, name));
  }
  e->api_line = outer;
}

void api_write_resume(engine *e, conn *c, room *rm, json_t *req, int kind, const char *line, int status) {
  if (status != 0) {
    answer(c, line, 1, status,
           status == 409   ? error_body("bad_request", "the room is a Yjs room: it takes Yjs updates on /v1/yjs/{room}")
           : status == 503 ? error_body("internal", "server shutting down")
                           : error_body("internal", "the room could not be loaded"));
    return;
  }
  const char *outer = e->api_line;
  e->api_line = line; /* commit.c logs the answer it gives with it */
  if (kind == API_DELETE) {
    author au = {e, NULL, c, ":backend"};
    commit_room_delete(&au, rm);
  } else {
    backend_write_room(e, c, 1, rm, req, kind);
  }
  e->api_line = outer;
}

/* A backend write decided on rm (loaded and current): answered now, or
 * when its commit is (commit.c). */
static void backend_write_room(engine *e, conn *c, int deferred, room *rm, json_t *req, int is_publish) {
  const char *cid = jstr(req, "cid");
  if (cid && commit_backend_lookup(e, c, rm, req, is_publish)) { /* answered after its dedupe record is read */
    room_unload_if_idle(e, rm);
    return;
  }
  json_t *data = json_object_get(req, "data");
  author au = {e, NULL, c, ":backend"};
  json_t *from = json_pack("{s:b}", "backend", 1);
  op_refusal why;
  int rc = !is_publish ? rm->kind->apply(&au, NULL, rm, json_object_get(req, "op"), cid,
                                         json_is_true(json_object_get(req, "force")), from, &why)
                       : commit_admit(&au, req, rm, cid, &why);
  if (rc < 0) {
    commit_count_rejection(e, why.err.code);
    json_t *b = json_pack("{s:s,s:s,s:s}", "type", "error", "code", why.err.code, "message", why.err.message);
    if (why.extra) json_object_update(b, why.extra);
    json_decref(why.extra);
    answer(c, e->api_line, deferred, status_of(why.err.code), b);
  }
  if (rc != 0 || !is_publish) { /* refused, answered as a duplicate, or an op sequenced */
    json_decref(from);
    goto out_room;
  }
  if (json_is_true(json_object_get(req, "ephemeral"))) {
    room_send(e, rm, json_pack("{s:s,s:s,s:I,s:o,s:O,s:b}", "type", "message", "room", rm->name,
                               "ts", (json_int_t)wall_ms(), "from", from, "data", data,
                               "ephemeral", 1));
    answer(c, e->api_line, deferred, 200, json_pack("{s:s,s:s}", "room", rm->name, "epoch", rm->epoch));
    goto out_room;
  }
  rm->seq++;
  commit_sequence(&au, NULL, rm, commit_entry_frame(e, rm, COMMIT_MESSAGE, from, cid, data), NULL, NULL, NULL, NULL, 0, cid);
  json_decref(from);
out_room:
  room_unload_if_idle(e, rm);
}

/* ---- query parameters ----------------------------------------------------- */

/* The query parameter name, percent-decoded, into out: 1 when present, 0
 * when absent, -1 when it does not fit or its encoding is broken. */
static int query_param(httpd_req *r, const char *name, char *out, size_t n) {
  const char *q = httpd_req_query(r);
  size_t nl = strlen(name);
  while (*q) {
    const char *end = strchr(q, '&');
    size_t seg = end ? (size_t)(end - q) : strlen(q);
    if (seg >= nl && strncmp(q, name, nl) == 0 && (seg == nl || q[nl] == '=')) {
      const char *v = seg == nl ? q + seg : q + nl + 1, *ve = q + seg;
      size_t o = 0;
      for (; v < ve; v++) {
        if (o + 1 >= n) return -1;
        if (*v == '%') {
          unsigned x;
          if (ve - v < 3 || sscanf(v + 1, "%2x", &x) != 1 || !isxdigit((unsigned char)v[1]) ||
              !isxdigit((unsigned char)v[2]) || x == 0)
            return -1;
          out[o++] = (char)x;
          v += 2;
        } else {
          out[o++] = *v == '+' ? ' ' : *v;
        }
      }
      out[o] = '\0';
      return 1;
    }
    q = end ? end + 1 : q + seg;
  }
  return 0;
}

/* A non-negative integer parameter: 0 when absent (*out unchanged), 1 when
 * set, -1 after answering 400 (not digits, or beyond 2^63). */
int api_query_uint(conn *c, httpd_req *r, const char *name, uint64_t *out) {
  char v[32];
  int rc = query_param(r, name, v, sizeof v);
  if (rc == 0) return 0;
  int ok = rc > 0 && v[0] != '\0' && strlen(v) <= 19;
  for (const char *p = v; ok && *p; p++) ok = *p >= '0' && *p <= '9';
  unsigned long long n = ok ? strtoull(v, NULL, 10) : 0;
  if (!ok || n > (unsigned long long)INT64_MAX) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a non-negative integer", name);
    api_error(c, 400, "bad_request", msg);
    return -1;
  }
  *out = n;
  return 1;
}

/* ---- administration ---------------------------------------------------- */

/* GET /v1/rooms?after=NAME&limit=N: rooms that exist in the store, by name. */
static void rooms_list(engine *e, conn *c, httpd_req *r) {
  char after[STORE_ROOM_MAX + 1] = "";
  int ar = query_param(r, "after", after, sizeof after);
  if (ar < 0 || (ar > 0 && after[0] && !auth_room_valid(after, strlen(after)))) {
    api_error(c, 400, "bad_request", "after must be a room name");
    return;
  }
  uint64_t limit = 100;
  if (api_query_uint(c, r, "limit", &limit) < 0) return;
  if (limit == 0 || limit > 1000) limit = limit ? 1000 : 1;
  api_rooms_list_read(e, c, after, (size_t)limit);
}

/* DELETE /v1/rooms/{room}: answered after the deletion has committed. */
static void room_delete(engine *e, conn *c, const char *name) {
  /* In a cluster, a room not loaded here (or whose replica must be read
   * again) is looked up, then loaded, without blocking (api_read.c). */
  if (e->clustered && cluster_api_write_needs_fetch(e, name)) {
    api_delete_check(e, c, name);
    return;
  }
  room *rm = room_ready(map_get(&e->rooms, name)); /* one loading is loaded below */
  if (rm && rm->kind != room_kind_for(name)) {
    api_error(c, 409, "bad_request", "a Yjs room cannot be deleted while it is loaded");
    return;
  }
  if (!rm) {
    store_room_info info;
    int rc = store_room_get(e->st, name, &info);
    if (rc != 0) {
      api_error(c, 500, "internal", "the room could not be read");
      return;
    }
    if (!info.exists) {
      api_error(c, 404, "not_found", "no such room");
      return;
    }
    int lerr = 0;
    rm = room_get(e, name, &lerr);
    if (!rm && lerr == ROOM_WRONG_KIND) {
      /* Not loaded: nothing holds its state, and the store forgets it. */
      rm = room_open(e, name, info.epoch[0] == 'y' ? &yjs_room_kind : room_kind_for(name), &lerr);
    }
    if (!rm) {
      api_error(c, 500, "internal", "the room could not be loaded");
      return;
    }
  }
  author au = {e, NULL, c, ":backend"};
  commit_room_delete(&au, rm);
}

/* POST /v1/users/{user}/disconnect: every session of the user ends, its
 * connection closed with 4003 (PROTOCOL.md 2.2): access was revoked. In a
 * cluster, on every node (presence.c asks them and adds their counts). */
static void user_disconnect(engine *e, conn *c, const char *user) {
  size_t n = api_disconnect_local(e, user);
  json_t *body = json_pack("{s:s,s:I}", "user", user, "sessions", (json_int_t)n);
  if (!cluster_api_disconnect(e, c, user, body)) http_json(c, 200, body);
}

size_t api_disconnect_local(engine *e, const char *user) {
  sess **list = NULL;
  size_t n = 0, cap = 0;
  const char *k;
  void *v;
  for (size_t i = 0; map_next(&e->sessions, &i, &k, &v);) {
    sess *s = v;
    if (s->ended || !s->id.user || strcmp(s->id.user, user) != 0) continue;
    if (n == cap) list = wsy_realloc(list, (cap = cap ? cap * 2 : 8) * sizeof *list);
    s->refs++;
    list[n++] = s;
  }
  for (size_t i = 0; i < n; i++) {
    sess_end(list[i], 4003, "access revoked");
    sess_unref(list[i]);
  }
  wsy_free(list);
  if (n) log_info("user %s disconnected by the backend: %zu sessions ended", user, n);
  return n;
}

/* ---- routes ------------------------------------------------------------- */

/* Every route: the key, then one access log line per request (with its
 * status, or logged by commit.c when the answer waits for a commit). */
typedef void (*api_fn)(engine *e, conn *c, httpd_req *r);

static void api_route(engine *e, conn *c, httpd_req *r, api_fn fn) {
  char peer[80], line[400];
  net_conn_peer(c, peer, sizeof peer);
  snprintf(line, sizeof line, "%s %.300s from %s", httpd_req_method(r), httpd_req_url(r), peer);
  if (api_key_ok(e, c, r)) {
    e->api_line = line;
    fn(e, c, r);
    e->api_line = NULL;
  }
  int st = httpd_answered_status(c);
  if (st) log_info("api %s -> %d", line, st);
}

static int method_is(httpd_req *r, const char *m) { return strcmp(httpd_req_method(r), m) == 0; }

static void metrics_fn(engine *e, conn *c, httpd_req *r) {
  if (!method_is(r, "GET")) httpd_method_not_allowed(c, "GET");
  else metrics(e, c);
}

void api_metrics_route(void *ud, conn *c, httpd_req *r) { api_route(ud, c, r, metrics_fn); }

static void rooms_list_fn(engine *e, conn *c, httpd_req *r) {
  if (!method_is(r, "GET")) httpd_method_not_allowed(c, "GET");
  else rooms_list(e, c, r);
}

void api_rooms_list_route(void *ud, conn *c, httpd_req *r) { api_route(ud, c, r, rooms_list_fn); }

#define ROOM_RULE "room names are 1-128 characters of A-Z a-z 0-9 . _ : @ -"

/* /v1/rooms/{room}[/what]: each sub-resource and its methods. */
static void rooms_fn(engine *e, conn *c, httpd_req *r) {
  static const char prefix[] = "/v1/rooms/";
  static const struct {
    const char *what, *allow;
  } res[] = {
    {"", "GET, DELETE"}, {"history", "GET"}, {"presence", "GET"}, {"cursors", "GET"},
    {"ops", "POST"},     {"publish", "POST"},
  };
  const char *path = httpd_req_path(r), *method = httpd_req_method(r);
  /* A slash is never part of a room name, so an encoded one must not turn
   * into a path separator. */
  const char *url = httpd_req_url(r);
  if (strncmp(path, prefix, sizeof prefix - 1) != 0 || strstr(url, "%2F") || strstr(url, "%2f")) {
    api_error(c, 400, "room_invalid", ROOM_RULE);
    return;
  }
  const char *rest = path + sizeof prefix - 1;
  const char *slash = strchr(rest, '/');
  char name[STORE_ROOM_MAX + 1];
  size_t nl = slash ? (size_t)(slash - rest) : strlen(rest);
  const char *what = slash ? slash + 1 : "";
  if (nl == 0 || nl > STORE_ROOM_MAX) {
    api_error(c, 400, "room_invalid", ROOM_RULE);
    return;
  }
  memcpy(name, rest, nl);
  name[nl] = '\0';
  if (!auth_room_valid(name, nl)) {
    api_error(c, 400, "room_invalid", ROOM_RULE);
    return;
  }
  size_t k = 0;
  while (k < WSY_ARRAY_LEN(res) && strcmp(res[k].what, what) != 0) k++;
  if (k == WSY_ARRAY_LEN(res)) {
    api_error(c, 404, "not_found", "no such resource");
    return;
  }
  if (!httpd_header_has_token(res[k].allow, strlen(res[k].allow), method)) {
    httpd_method_not_allowed(c, res[k].allow);
    return;
  }
  if (e->shutting_down) {
    api_error(c, 503, "internal", "server shutting down");
    return;
  }
  if (!strcmp(method, "POST")) backend_write(e, c, r, name, !strcmp(what, "publish"));
  else if (!strcmp(method, "DELETE")) room_delete(e, c, name);
  else api_backend_read(e, c, r, name, what);
}

void api_rooms_route(void *ud, conn *c, httpd_req *r) { api_route(ud, c, r, rooms_fn); }

/* /v1/users/{user}/disconnect. */
static void users_fn(engine *e, conn *c, httpd_req *r) {
  static const char prefix[] = "/v1/users/", tail[] = "/disconnect";
  const char *path = httpd_req_path(r);
  size_t pl = strlen(path);
  if (strncmp(path, prefix, sizeof prefix - 1) != 0 || pl < sizeof prefix - 1 + sizeof tail - 1 ||
      strcmp(path + pl - (sizeof tail - 1), tail) != 0) {
    api_error(c, 404, "not_found", "no such resource");
    return;
  }
  char user[80];
  size_t ul = pl - (sizeof prefix - 1) - (sizeof tail - 1);
  if (ul == 0 || ul >= sizeof user || !auth_user_valid(path + sizeof prefix - 1, ul)) {
    api_error(c, 400, "bad_request", "user ids are 1-64 characters of A-Z a-z 0-9 . _ @ -");
    return;
  }
  memcpy(user, path + sizeof prefix - 1, ul);
  user[ul] = '\0';
  if (!method_is(r, "POST")) {
    httpd_method_not_allowed(c, "POST");
    return;
  }
  user_disconnect(e, c, user);
}

void api_users_route(void *ud, conn *c, httpd_req *r) { api_route(ud, c, r, users_fn); }
