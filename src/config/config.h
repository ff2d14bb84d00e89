/* config.h -- the settings of `wsync serve`, from the command line and the
 * environment. Each flag --some-name has an environment variable
 * WSYNC_SOME_NAME; flags win. Pure: no I/O but the usage text, no loop;
 * every module below main reads its settings from a wsy_config or from a
 * config struct of its own that main fills from it. */
#ifndef WSY_CONFIG_H
#define WSY_CONFIG_H

#include <stddef.h>
#include <stdio.h>

/* A repeatable option's values, in order (borrowed from argv/environ). */
#define WSY_LIST_MAX 16
typedef struct wsy_strlist {
  const char *v[WSY_LIST_MAX];
  unsigned n;
} wsy_strlist;

typedef struct wsy_config {
  char listen_host[64];
  int listen_port;
  const char *data_dir;
  const char *store_url;     /* postgres://...: the shared store; NULL: SQLite in data_dir */
  const char *bus_url;       /* redis://...: the bus between nodes; NULL: one node */
  int forward_ops;           /* a session's ops decided on the room's owner node (cluster) */
  const char *node_id;       /* NULL: made at start, unique per process */
  const char *static_dir;
  size_t max_message;        /* bytes */
  size_t max_queued;         /* bytes per connection */
  size_t max_header;         /* HTTP request line + headers */
  size_t max_body;           /* HTTP request body */
  unsigned max_connections;
  unsigned write_threads;    /* helpers for a large flush's writes */
  unsigned write_threads_min; /* ... when at least this many connections write */
  unsigned idle_timeout_ms;
  unsigned ping_interval_ms;
  unsigned handshake_timeout_ms;
  unsigned close_timeout_ms; /* wait for the peer's close frame */
  unsigned shutdown_grace_ms;
  const char *allowed_origins; /* comma-separated; NULL or "" = any */
  int log_level;
  int log_format;            /* LOG_TEXT or LOG_JSON */
  int echo_endpoint;
  int compression;           /* permessage-deflate (RFC 7692) accepted */
  const char *auth_secret;   /* HS256 key for tokens; NULL: HS256 tokens refused */
  const char *auth_jwks;     /* JWKS file of public keys; NULL: public-key tokens refused */
  const char *auth_issuer;   /* required iss, or NULL */
  const char *auth_audience; /* required aud, or NULL */
  unsigned auth_leeway_ms;   /* clock skew allowed for exp and nbf */
  int insecure_demo;         /* hello may name a user without a token */
  int durability_full;       /* fsync before ack */
  unsigned resume_window_ms;
  unsigned lock_grace_ms;    /* a detached session's locks go after this (PROTOCOL 9.4) */
  unsigned poll_timeout_ms;  /* long-poll wait (PROTOCOL 2.4) */
  unsigned max_rooms;        /* per session */
  unsigned rate;             /* requests per second per session */
  unsigned burst;
  unsigned max_lock_ttl_ms;
  unsigned history_ops;      /* log entries kept per room */
  unsigned max_batch;        /* sub-ops in one batch op */
  unsigned max_fields;       /* members of one set */
  size_t max_field_size;
  size_t max_item_size;
  size_t max_text_size;
  unsigned max_depth;
  unsigned max_room_items;
  size_t max_presence_state;
  unsigned presence_interval_ms; /* a room's presence changes are sent this often, merged (0: at once) */
  unsigned presence_max_interval_ms; /* ... or, while members keep joining and leaving, up to this seldom */
  unsigned max_catchup;      /* ops sent on join before a snapshot is preferred */
  size_t max_outbox;         /* bytes of unconfirmed messages kept per session */
  size_t session_queue;      /* bytes of messages to one session alone kept for resumes */
  unsigned dedupe_filter;    /* cids the dedupe filter is sized for at first (cidf.h) */
  size_t resume_ring;        /* bytes of room messages kept per room for resumes (ring.h) */
  const char *api_key;       /* backend API bearer key; NULL: API off */
  unsigned yjs_compact_ops;  /* Yjs log entries since the snapshot that start a compaction */
  size_t yjs_compact_bytes;  /* ... or bytes of their updates */
  size_t yjs_max_awareness;  /* largest awareness state of one Yjs client */
  unsigned degraded_status;  /* /healthz status while degraded (503) */
  const char *tls_cert;      /* PEM certificate chain: serve HTTPS and wss:// (with tls_key) */
  const char *tls_key;       /* PEM private key of tls_cert */
  const char *store_faults;  /* testing: the fault store's control file, or NULL */
  int insecure_demo_public;  /* --insecure-demo allowed beyond loopback */
  int allow_weak_secrets;    /* short --auth-secret / --api-key accepted */
  wsy_strlist webhooks;      /* "URL [rooms=GLOB] [name=NAME] [events=lifecycle]" each */
  const char *webhook_secret;/* HMAC-SHA256 key of webhook signatures */
  unsigned webhook_batch;    /* entries per request */
  unsigned webhook_delay_ms; /* wait for a batch to fill */
  unsigned webhook_timeout_ms;
  unsigned webhook_max_backoff_ms;
  unsigned webhook_retain;   /* log entries a room keeps for undelivered webhooks */
  const char *hook_secret;   /* signs the requests of the auth and op hooks (HMAC-SHA256); NULL: unsigned */
  const char *auth_hook;     /* URL asked on hello and on joins (docs/HOOKS.md); NULL: off */
  const char *auth_hook_joins; /* "outside" (joins the token's grants do not cover) or "all" */
  int auth_hook_all_joins;   /* auth_hook_joins is "all" */
  unsigned auth_hook_timeout_ms;
  unsigned auth_hook_cache;  /* cached answers kept at most */
  wsy_strlist op_hooks;      /* "PATTERN=URL": ops of matching rooms are asked first */
  unsigned op_hook_timeout_ms;
  unsigned op_hook_batch;    /* ops per request (1: one op, the plain shape) */
} wsy_config;

void config_defaults(wsy_config *cfg);
/* Applies environment then argv. Returns 0, or -1 with a message in err, or
 * 1 when --help/--version printed something and the caller should exit 0. */
int config_parse(wsy_config *cfg, int argc, char **argv, char *err, size_t errlen);
void config_usage(FILE *out);
/* "localhost", 127.0.0.0/8 or ::1. */
int config_host_is_loopback(const char *host);

/* "64K", "1M", "1048576" -> bytes; -1 on error. */
int config_parse_size(const char *s, size_t *out);
/* "500ms", "30s", "2m", "1h", "10" (seconds) -> milliseconds; -1 on error. */
int config_parse_duration(const char *s, unsigned *out_ms);

#endif
