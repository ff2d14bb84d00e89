/* hclient.c -- libcurl multi driven by libuv (contract in hclient.h).
 *
 * curl tells us which sockets to watch (socket_cb) and when to wake it up
 * (timer_cb); we turn those into uv_poll handles and one uv_timer, and feed
 * every readiness or timeout back with curl_multi_socket_action. After each
 * feed, finished transfers are collected (collect_done) and their callbacks
 * run, from a uv callback, so never inside hclient_post.
 *
 * Lifetime: the hclient is freed only in the close callback of its last uv
 * handle, so every uv callback may touch c after a user callback ran, even if
 * that user callback called hclient_close: it checks c->closing and stops.
 *
 *   open --hclient_close--> closing (multi cleaned up, handles closing)
 *        --last uv close cb--> freed */
#include "hclient.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/log.h"

typedef struct hsock hsock;
typedef struct hreq hreq;

struct hclient {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  hreq *reqs;      /* in flight, doubly linked */
  hsock *socks;    /* poll handles not yet closed */
  size_t pending;  /* requests in flight */
  unsigned open_handles; /* uv handles whose close callback has not run */
  int closing;
};

struct hsock {
  uv_poll_t poll;
  hclient *c;
  curl_socket_t fd;
  hsock *prev, *next;
};

struct hreq {
  hclient *c;
  CURL *easy;
  struct curl_slist *hdrs;
  char *body;       /* the request body, ours */
  char *resp;       /* the answer's body, grown up to HCLIENT_MAX_BODY */
  size_t resp_len, resp_cap;
  int too_large;
  hclient_cb cb;
  void *ud;
  hreq *prev, *next;
};

static void handle_closed(uv_handle_t *h) {
  hclient *c = h->data;
  if (h->type == UV_POLL) wsy_free(wsy_container_of((uv_poll_t *)h, hsock, poll));
  if (--c->open_handles == 0) {
    wsy_free(c);
    curl_global_cleanup();
  }
}

static void sock_unlink(hsock *s) {
  hclient *c = s->c;
  if (s->prev) s->prev->next = s->next;
  else c->socks = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
}

static void sock_close(hsock *s) {
  sock_unlink(s);
  uv_close((uv_handle_t *)&s->poll, handle_closed);
}

static void req_unlink(hreq *r) {
  hclient *c = r->c;
  if (r->prev) r->prev->next = r->next;
  else c->reqs = r->next;
  if (r->next) r->next->prev = r->prev;
  r->prev = r->next = NULL;
  c->pending--;
}

static void req_free(hreq *r) {
  if (r->easy) curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->hdrs);
  wsy_free(r->body);
  wsy_free(r->resp);
  wsy_free(r);
}

/* r is already out of the list and the multi: run its cb, then free it. */
static void req_finish(hreq *r, int rc, long status) {
  hclient_resp resp = {.rc = rc, .status = rc == 0 ? status : 0};
  if (rc == 0) {
    resp.body = r->resp ? r->resp : "";
    resp.body_len = r->resp_len;
  } else {
    resp.body = "";
  }
  r->cb(r->ud, &resp);
  req_free(r);
}

static void collect_done(hclient *c) {
  CURLMsg *m;
  int left;
  while (!c->closing && (m = curl_multi_info_read(c->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    hreq *r = NULL;
    CURLcode res = m->data.result;
    CURL *easy = m->easy_handle;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(c->multi, easy);
    req_unlink(r);
    int rc = 0;
    if (r->too_large) rc = WSY_TOO_LARGE;
    else if (res != CURLE_OK) {
      rc = WSY_IO;
      wsy_log(LOG_DEBUG, "hclient: request failed: %s", curl_easy_strerror(res));
    }
    req_finish(r, rc, status);
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  hsock *s = wsy_container_of(p, hsock, poll);
  hclient *c = s->c;
  if (c->closing) return;
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  int running;
  /* s may be freed (closed by socket_cb) inside this call: only c from here on */
  curl_multi_socket_action(c->multi, s->fd, flags, &running);
  collect_done(c);
}

static void on_timer(uv_timer_t *t) {
  hclient *c = t->data;
  if (c->closing) return;
  int running;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  collect_done(c);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl wants, or stop. */
static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  hclient *c = userp;
  hsock *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      curl_multi_assign(c->multi, fd, NULL);
      sock_close(s);
    }
    return 0;
  }
  if (!s) {
    s = wsy_calloc(1, sizeof *s);
    s->c = c;
    s->fd = fd;
    if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
      wsy_free(s);
      return -1; /* curl fails the transfer */
    }
    s->poll.data = c;
    c->open_handles++;
    s->next = c->socks;
    if (c->socks) c->socks->prev = s;
    c->socks = s;
    curl_multi_assign(c->multi, fd, s);
  }
  int ev = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev |= UV_WRITABLE;
  uv_poll_start(&s->poll, ev, on_poll);
  return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl's next deadline. A 0 still goes through the
 * loop, so socket_action is never re-entered from inside curl. */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
  hclient *c = userp;
  if (timeout_ms < 0) uv_timer_stop(&c->timer);
  else if (!c->closing) uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
  hreq *r = ud;
  size_t n = size * nmemb;
  if (n > HCLIENT_MAX_BODY - r->resp_len) {
    r->too_large = 1;
    return 0; /* curl aborts the transfer with CURLE_WRITE_ERROR */
  }
  if (r->resp_len + n + 1 > r->resp_cap) {
    size_t cap = r->resp_cap ? r->resp_cap : 1024;
    while (cap < r->resp_len + n + 1) cap *= 2;
    r->resp = wsy_realloc(r->resp, cap); /* bounded by HCLIENT_MAX_BODY */
    r->resp_cap = cap;
  }
  memcpy(r->resp + r->resp_len, data, n);
  r->resp_len += n;
  r->resp[r->resp_len] = '\0';
  return n;
}

hclient *hclient_new(uv_loop_t *loop) {
  /* Reference-counted by libcurl; paired with the cleanup in handle_closed. */
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    wsy_log(LOG_ERROR, "hclient: libcurl cannot initialize");
    abort();
  }
  hclient *c = wsy_calloc(1, sizeof *c);
  c->loop = loop;
  c->multi = curl_multi_init();
  if (!c->multi) {
    wsy_log(LOG_ERROR, "hclient: curl_multi_init failed");
    abort();
  }
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->open_handles = 1;
  return c;
}

static int is_http_url(const char *url) {
  return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

int hclient_post(hclient *c, const char *url, const char *const *headers, const char *body,
                 size_t len, unsigned timeout_ms, hclient_cb cb, void *ud) {
  if (c->closing) return WSY_CLOSED;
  if (!url || !cb || !is_http_url(url)) return WSY_INVAL;
  hreq *r = wsy_calloc(1, sizeof *r);
  r->c = c;
  r->cb = cb;
  r->ud = ud;
  r->body = wsy_malloc(len ? len : 1);
  if (len) memcpy(r->body, body, len);
  int has_ctype = 0;
  struct curl_slist *h = NULL;
  for (size_t i = 0; headers && headers[i]; i++) {
    if (strncasecmp(headers[i], "content-type:", 13) == 0) has_ctype = 1;
    struct curl_slist *nh = curl_slist_append(h, headers[i]);
    if (!nh) goto nomem;
    h = nh;
  }
  if (!has_ctype) {
    struct curl_slist *nh = curl_slist_append(h, "Content-Type: application/json");
    if (!nh) goto nomem;
    h = nh;
  }
  /* An empty Expect: stops curl waiting up to a second for "100 Continue"
   * before bodies over 1 KiB: receivers here answer the POST directly. */
  struct curl_slist *nh = curl_slist_append(h, "Expect:");
  if (!nh) goto nomem;
  h = nh;
  r->hdrs = h;
  h = NULL;

  r->easy = curl_easy_init();
  if (!r->easy) goto nomem;
  CURL *e = r->easy;
  int bad = 0;
  bad |= curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, "wsync/" WSYNC_VERSION) != CURLE_OK;
  if (bad) {
    req_free(r);
    return WSY_INVAL;
  }
  if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
    req_free(r);
    return WSY_IO;
  }
  r->next = c->reqs;
  if (c->reqs) c->reqs->prev = r;
  c->reqs = r;
  c->pending++;
  return 0;

nomem:
  curl_slist_free_all(h);
  req_free(r);
  return WSY_NOMEM;
}

size_t hclient_pending(const hclient *c) {
  return c->pending;
}

void hclient_close(hclient *c) {
  if (!c || c->closing) return;
  c->closing = 1;
  uv_timer_stop(&c->timer);
  /* Take every request out of curl first, so a cb that posts or closes
   * again finds a client that refuses cleanly. */
  hreq *list = c->reqs;
  c->reqs = NULL;
  for (hreq *r = list; r; r = r->next) curl_multi_remove_handle(c->multi, r->easy);
  c->pending = 0;
  while (list) {
    hreq *r = list;
    list = r->next;
    r->prev = r->next = NULL;
    req_finish(r, WSY_IO, 0);
  }
  curl_multi_cleanup(c->multi); /* may still report CURL_POLL_REMOVE */
  c->multi = NULL;
  while (c->socks) sock_close(c->socks);
  uv_close((uv_handle_t *)&c->timer, handle_closed);
}
