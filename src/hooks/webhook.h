/* webhook.h -- webhooks that follow the durable log (docs/HOOKS.md).
 *
 * Every committed log entry (ops and stored publishes) of a room that a
 * webhook's pattern matches is POSTed to its URL, in batches, in seq order per
 * room, signed with HMAC-SHA256. A dispatcher per webhook keeps, per room, the
 * last seq the receiver acknowledged with a 2xx; the position is stored by
 * the group commit (store_batch_hook_pos into the batch the caller hands
 * out), so delivery resumes from the log after a restart, a crash or an
 * outage: at least once, receivers dedupe by (room, epoch, seq). A webhook
 * that keeps up takes entries from a bounded tail rendered at commit time;
 * one that fell behind (or after a restart) reads them back from the store
 * in bounded slices (store_history with a limit). Lifecycle events (session connected/ended, join,
 * leave) are optional per webhook and sent at most once, never retried.
 *
 * Threads: loop thread only. Nothing here blocks: HTTP goes through hclient
 * (libcurl multi on the loop); the store reads are the store's synchronous,
 * short reads (at most --webhook-batch entries each). A slow or dead
 * receiver costs only its own backlog: the commit path only notes the new
 * head seq of the room (webhooks_committed).
 *
 * One request in flight per webhook; a failed one (timeout, connection
 * error, any status but 2xx) is retried with the same entries after an
 * exponential backoff with jitter, up to max_backoff_ms between attempts,
 * for as long as it takes.
 *
 * Retention: webhooks_trim_point() tells the engine how far it may trim a
 * room's log without dropping entries a webhook has not delivered, keeping
 * at most `retain` entries per room beyond what the engine keeps anyway;
 * past that the webhook gets a `gap` event naming the first seq still
 * available. */
#ifndef WSY_WEBHOOK_H
#define WSY_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../common/wsy.h"
#include "../store/store.h"

/* Larger request bodies are cut into several requests (at least one entry
 * each, so one entry larger than this still goes out alone). */
#define WEBHOOK_MAX_BODY (1024 * 1024)
/* Lifecycle events waiting per webhook; more are dropped and counted. */
#define WEBHOOK_MAX_EVENTS 1000

typedef struct webhooks webhooks;

typedef struct webhooks_config {
  /* "URL [rooms=GLOB] [name=NAME] [events=lifecycle]", one per webhook */
  const char *const *specs;
  size_t nspecs;
  const char *secret;      /* HMAC-SHA256 key of the signature (required) */
  unsigned batch_max;      /* entries per request */
  unsigned delay_ms;       /* wait this long for a batch to fill */
  unsigned timeout_ms;     /* per request */
  unsigned max_backoff_ms; /* longest wait between retries */
  uint64_t retain;         /* entries a room keeps for undelivered webhooks, beyond the engine's */
} webhooks_config;

/* The store batch being filled, which the caller commits soon (the engine's
 * group commit): where positions go. */
typedef store_batch *(*webhooks_batch_fn)(void *ud);

/* Checks one spec; 0, or WSY_INVAL with a sentence in err. id_out (when not
 * NULL, 65 bytes) gets the webhook's stable id: its name=, else the first
 * 16 hex digits of SHA-256 of its URL. */
int webhooks_parse_spec(const char *spec, char id_out[65], char *err, size_t errlen) WSY_WUR;

/* Checks every spec and that no two share an id (at start-up, before
 * anything opens): 0, or WSY_INVAL with a sentence in err. */
int webhooks_check(const char *const *specs, size_t n, char *err, size_t errlen) WSY_WUR;

/* Builds the dispatchers and reads where each stopped (positions and rooms
 * from st, which must outlive w). 0, or WSY_INVAL (a bad spec, no secret,
 * two webhooks with one id) or a store error, with err set. */
int webhooks_new(uv_loop_t *loop, store *st, const webhooks_config *cfg, webhooks_batch_fn batch,
                 void *batch_ud, webhooks **out, char *err, size_t errlen) WSY_WUR;
/* Cancels requests in flight (their entries go again after a restart) and
 * frees w once the loop has closed its handles. NULL is allowed. */
void webhooks_free(webhooks *w);

/* Entry seq of room (in epoch) has committed; msg is its broadcast JSON
 * (borrowed: copied when a webhook follows from memory). No I/O. */
void webhooks_committed(webhooks *w, const char *room, const char *epoch, uint64_t seq, const char *msg,
                        size_t len);

/* The engine wants to drop room's entries below want (head: the room's
 * last seq): returns the seq to keep from instead, <= want, so that no
 * entry a webhook still has to deliver goes, but never keeping more than
 * `retain` entries below want for them. */
uint64_t webhooks_trim_point(webhooks *w, const char *room, const char *epoch, uint64_t want,
                             uint64_t head);

/* A lifecycle event for the webhooks that asked for them: kind is
 * "connected", "ended", "join" or "leave"; room NULL for session events. */
void webhooks_event(webhooks *w, const char *kind, const char *room, const char *user,
                    const char *device);

/* Appends the Prometheus lines of every webhook to out (/metrics). */
void webhooks_metrics(webhooks *w, buf *out);

#endif
