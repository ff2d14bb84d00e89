/* request.c -- one HTTP/1.1 request: parsing with http-parser into a capped
 * buffer, then typed access to method, path, query and headers. Pure: no
 * I/O, so it is unit-tested and fuzzed on its own.
 *
 * Header bytes are collected in one capped buffer: URL, then each name and
 * value, recorded as offsets; past max_header the request fails with 431.
 * The parser pauses after each complete request, so pipelined bytes stay
 * with the caller for the next request object.
 *
 * Stricter than http-parser where RFC 9112 says a server must be: a
 * version other than HTTP/1.x is 505; an HTTP/1.1 request without Host, or
 * any request with two, is 400; obsolete line folding is 400. */
#include "httpd.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADERS 64
#define MAX_PATH 2047

typedef struct {
  uint32_t name_off, name_len, val_off, val_len;
} hdr;

struct httpd_req {
  http_parser parser;
  size_t max_body;
  size_t max_header;
  size_t head_seen;   /* bytes fed before the headers were complete */
  int headers_done;
  int line_state;     /* where scan_head() is in the head */
  int after_cr;       /* scan_head() saw a CR and waits for its LF */
  int cr_held;        /* that CR ended the input: counted as used, not yet given to the parser */
  int too_many;       /* more than MAX_HEADERS: failed at the end of the headers */
  buf raw;            /* url, then header names and values */
  buf body;
  uint32_t url_len;
  hdr h[MAX_HEADERS];
  unsigned nh;
  int last_was_value;
  int complete;       /* on_message_complete seen */
  int error_status;   /* set by a callback that refuses the request */
  char *path;         /* decoded path (at most MAX_PATH bytes) */
  const char *query;
  char *url;          /* the request target as received, NUL-terminated */
  char method[16];
  const char *why;    /* what was wrong, with error_status */
};

/* ---- request accessors ---------------------------------------------------- */

const char *httpd_req_method(const httpd_req *r) { return r->method; }
const char *httpd_req_path(const httpd_req *r) { return r->path ? r->path : ""; }
const char *httpd_req_query(const httpd_req *r) { return r->query ? r->query : ""; }

const char *httpd_req_header(const httpd_req *r, const char *name, size_t *len) {
  return httpd_req_header_nth(r, name, 0, len);
}

const char *httpd_req_header_nth(const httpd_req *r, const char *name, unsigned nth, size_t *len) {
  size_t nl = strlen(name);
  for (unsigned i = 0; i < r->nh; i++) {
    const hdr *h = &r->h[i];
    if (h->name_len == nl && strncasecmp((const char *)r->raw.data + h->name_off, name, nl) == 0) {
      const char *v = (const char *)r->raw.data + h->val_off;
      size_t vl = h->val_len;
      /* http-parser drops the whitespace before a value but not after it. */
      while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
      if (nth-- > 0) continue;
      if (len) *len = vl;
      return v;
    }
  }
  return NULL;
}

int httpd_req_query_param(const httpd_req *r, const char *name, char *out, size_t n) {
  const char *q = r->query;
  size_t nl = strlen(name);
  while (q && *q) {
    const char *end = strchr(q, '&');
    size_t seg = end ? (size_t)(end - q) : strlen(q);
    if (seg > nl && strncmp(q, name, nl) == 0 && q[nl] == '=') {
      size_t vl = seg - nl - 1;
      if (vl >= n) return -1;
      memcpy(out, q + nl + 1, vl);
      out[vl] = '\0';
      return 0;
    }
    q = end ? end + 1 : NULL;
  }
  return -1;
}

/* True when the comma-separated header value contains token (any case). */
int httpd_header_has_token(const char *v, size_t len, const char *token) {
  size_t tl = strlen(token), i = 0;
  while (i < len) {
    while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    size_t s = i;
    while (i < len && v[i] != ',') i++;
    size_t e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
    if (e - s == tl && strncasecmp(v + s, token, tl) == 0) return 1;
  }
  return 0;
}

/* ---- obsolete line folding ------------------------------------------------ */

/* RFC 9112 5.2: a header line that starts with SP or HTAB continues the
 * line before it (obs-fold). http-parser joins it to the previous value;
 * here the request is refused with 400. RFC 9112 2.2: a bare CR (not
 * followed by LF) in the head makes it invalid; it is refused too (400),
 * since http-parser's reading of one depends on how the bytes were split.
 * The head is scanned ahead of the parser, which is then given only the
 * bytes before the problem: an error it finds earlier still wins, and the
 * answer is decided by the position of the problem, not by how the bytes
 * were split. The line structure follows http-parser: empty lines before
 * the request line are skipped, lines end at LF (with or without CR), and
 * an empty line ends the head. */
enum { LS_BEFORE, LS_REQUEST_LINE, LS_LINE_START, LS_IN_LINE, LS_END };
enum { HEAD_OK, HEAD_FOLD, HEAD_BARE_CR };

/* Advances the line state over d[0..n); returns how many bytes of d the
 * parser may have now: up to the first byte it must not see (the folded
 * line's first byte, or a bare CR, with *problem set), or up to a CR that
 * ends d (*hold set: the caller keeps that CR until the next byte says
 * whether it is a line end), or n. *feed_cr is set when a CR held from the
 * last call turned out to end a line: the parser gets it first. A bare CR is
 * never given to the parser, so its reading of one cannot depend on the
 * split. */
static size_t scan_head(httpd_req *r, const uint8_t *d, size_t n, int *problem, int *feed_cr, int *hold) {
  *problem = HEAD_OK;
  *feed_cr = *hold = 0;
  for (size_t i = 0; i < n && r->line_state != LS_END; i++) {
    uint8_t ch = d[i];
    if (r->after_cr) {
      r->after_cr = 0;
      int held = r->cr_held;
      r->cr_held = 0;
      if (ch != '\n') {
        *problem = HEAD_BARE_CR;
        return held ? 0 : i - 1;
      }
      *feed_cr = held;
    } else if (ch == '\r') {
      r->after_cr = 1; /* a line end only if LF follows: decided at the next byte */
      if (i == n - 1) {
        r->cr_held = 1;
        *hold = 1;
        return i;
      }
      continue;
    }
    switch (r->line_state) {
    case LS_BEFORE:
      if (ch != '\n') r->line_state = LS_REQUEST_LINE;
      break;
    case LS_REQUEST_LINE:
    case LS_IN_LINE:
      if (ch == '\n') {
        r->line_state = LS_LINE_START;
        /* One line at a time: the parser sees each line, and may fail on
         * it, before anything after it is looked at, as when the bytes come
         * split at every line end. */
        return i + 1;
      }
      break;
    case LS_LINE_START:
      if (ch == ' ' || ch == '\t') {
        *problem = HEAD_FOLD;
        return i;
      }
      r->line_state = ch == '\n' ? LS_END : LS_IN_LINE;
      break;
    }
  }
  return n;
}

/* ---- parser callbacks ---------------------------------------------------- */

static int raw_add(httpd_req *r, const char *at, size_t len) {
  int rc = buf_append(&r->raw, at, len);
  if (rc != WSY_OK) {
    r->error_status = rc == WSY_NOMEM ? 503 : 431;
    if (rc == WSY_NOMEM) r->why = "out of memory";
    return -1;
  }
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  httpd_req *r = p->data;
  if (raw_add(r, at, len)) {
    if (r->error_status != 503) r->error_status = 414;
    return -1;
  }
  r->url_len += (uint32_t)len;
  return 0;
}

/* The table is updated only after the bytes are stored, so a request that
 * failed on the cap never has entries pointing past its buffer. Trailers of
 * a chunked body are not headers and are ignored. */
static int on_header_field(http_parser *p, const char *at, size_t len) {
  httpd_req *r = p->data;
  if (r->headers_done) return 0;
  if (r->too_many || (r->nh == MAX_HEADERS && r->last_was_value)) {
    /* Refused only when the headers end: a syntax error further on must
     * win or lose the same way however the bytes were split. */
    r->too_many = 1;
    return 0;
  }
  size_t off = r->raw.len;
  if (raw_add(r, at, len)) return -1;
  if (r->nh == 0 || r->last_was_value) {
    hdr *h = &r->h[r->nh++];
    h->name_off = (uint32_t)off;
    h->name_len = 0;
    h->val_off = 0;
    h->val_len = 0;
    r->last_was_value = 0;
  }
  r->h[r->nh - 1].name_len += (uint32_t)len;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  httpd_req *r = p->data;
  if (r->headers_done || r->too_many) return 0;
  size_t off = r->raw.len;
  if (raw_add(r, at, len)) return -1;
  hdr *h = &r->h[r->nh - 1];
  if (!r->last_was_value) {
    h->val_off = (uint32_t)off;
    r->last_was_value = 1;
  }
  h->val_len += (uint32_t)len;
  return 0;
}

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Decodes the path part of the URL into r->path; 0 on success. A decoded NUL
 * or a path too long is an error (400/414). */
static int decode_path(httpd_req *r) {
  const char *u = (const char *)r->raw.data;
  size_t ul = r->url_len, o = 0;
  r->url = wsy_strndup(u, ul);
  struct http_parser_url pu;
  http_parser_url_init(&pu);
  if (http_parser_parse_url(u, ul, 0, &pu) != 0 || !(pu.field_set & (1 << UF_PATH))) return 400;
  const char *s = u + pu.field_data[UF_PATH].off;
  size_t sl = pu.field_data[UF_PATH].len;
  /* Decoding only shrinks, so the raw length bounds the result. */
  r->path = wsy_malloc(sl + 1);
  for (size_t i = 0; i < sl; i++) {
    int ch = (unsigned char)s[i];
    if (ch == '%') {
      if (i + 2 >= sl) return 400;
      int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
      if (hi < 0 || lo < 0) return 400;
      ch = hi * 16 + lo;
      i += 2;
      if (ch == 0) return 400;
    }
    if (o >= MAX_PATH) return 414;
    r->path[o++] = (char)ch;
  }
  r->path[o] = '\0';
  r->query = NULL;
  if (pu.field_set & (1 << UF_QUERY)) {
    size_t qo = pu.field_data[UF_QUERY].off, ql = pu.field_data[UF_QUERY].len;
    if (ql >= 1024) return 414;
    char *q = wsy_strndup(u + qo, ql);
    r->query = q;
  }
  return 0;
}

static unsigned header_count(const httpd_req *r, const char *name) {
  size_t nl = strlen(name);
  unsigned n = 0;
  for (unsigned i = 0; i < r->nh; i++)
    if (r->h[i].name_len == nl && strncasecmp((const char *)r->raw.data + r->h[i].name_off, name, nl) == 0)
      n++;
  return n;
}

static int on_headers_complete(http_parser *p) {
  httpd_req *r = p->data;
  r->headers_done = 1;
  if (r->too_many) {
    r->error_status = 431;
    r->why = "too many request headers";
    return -1;
  }
  /* Only HTTP/1.x is served (RFC 9110 2.5: a later 1.x minor is read as
   * 1.1). http-parser takes any one digit on each side of the dot, and
   * reads a request line without a version as HTTP/0.9. Checked here, once
   * the headers are complete, so a syntax error in them wins the same way
   * however the bytes are split. */
  if (p->http_major != 1) {
    r->error_status = 505;
    r->why = "HTTP version not supported";
    return -1;
  }
  if (p->upgrade && ((p->content_length != ULLONG_MAX && p->content_length > 0) ||
                     (p->flags & F_CHUNKED))) {
    /* Where the body would end and the new protocol begin is ambiguous. */
    r->error_status = 400;
    r->why = "upgrade request with a body";
    return -1;
  }
  /* RFC 9112 3.2: Host is required in HTTP/1.1 (HTTP/1.0 predates it), and
   * more than one is refused in any version. */
  unsigned hosts = header_count(r, "Host");
  if (hosts > 1 || (hosts == 0 && httpd_req_http11(r))) {
    r->error_status = 400;
    r->why = hosts ? "more than one Host header" : "missing Host header";
    return -1;
  }
  snprintf(r->method, sizeof r->method, "%s", http_method_str((enum http_method)p->method));
  int st = decode_path(r);
  if (st) {
    r->error_status = st;
    return -1;
  }
  if (p->content_length != ULLONG_MAX && p->content_length > r->max_body) {
    r->error_status = 413;
    return -1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  httpd_req *r = p->data;
  int rc = buf_append(&r->body, at, len);
  if (rc != WSY_OK) {
    r->error_status = rc == WSY_NOMEM ? 503 : 413;
    if (rc == WSY_NOMEM) r->why = "out of memory";
    return -1;
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  httpd_req *r = p->data;
  r->complete = 1;
  /* Stop after each request: it is answered before the next one is parsed. */
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
  .on_url = on_url,
  .on_header_field = on_header_field,
  .on_header_value = on_header_value,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

httpd_req *httpd_req_new(size_t max_header, size_t max_body) {
  httpd_req *r = wsy_calloc(1, sizeof *r);
  http_parser_init(&r->parser, HTTP_REQUEST);
  r->parser.data = r;
  r->max_body = max_body;
  r->max_header = max_header;
  buf_init(&r->raw, max_header);
  buf_init(&r->body, max_body);
  return r;
}

void httpd_req_free(httpd_req *r) {
  if (!r) return;
  buf_free(&r->raw);
  buf_free(&r->body);
  wsy_free((void *)r->query);
  wsy_free(r->url);
  wsy_free(r->path);
  wsy_free(r);
}

int httpd_req_feed(httpd_req *r, const uint8_t *data, size_t len, size_t *used) {
  *used = 0;
  if (r->error_status) return r->error_status;
  if (r->complete) return 1;
  /* http-parser takes a zero length as end of stream and fails a request in
   * progress; here no bytes just means no progress. */
  while (len > 0 && !r->complete) {
    /* Until the headers are complete the parser sees at most one byte past
     * the header cap, so the cap trips at the same byte however the input is
     * split (http-parser reports a span only when it ends or input does). */
    size_t slice = len;
    if (!r->headers_done && slice > r->max_header + 1 - r->head_seen)
      slice = r->max_header + 1 - r->head_seen;
    int problem = HEAD_OK, feed_cr = 0, hold = 0;
    if (!r->headers_done) slice = scan_head(r, data, slice, &problem, &feed_cr, &hold);
    if (feed_cr) { /* the CR held from the last call ends a line after all */
      (void)http_parser_execute(&r->parser, &settings, "\r", 1);
      r->head_seen++;
    }
    enum http_errno err = HTTP_PARSER_ERRNO(&r->parser);
    /* Zero bytes would be end of stream to http-parser: a problem first. */
    size_t n = slice && err == HPE_OK ? http_parser_execute(&r->parser, &settings, (const char *)data, slice) : 0;
    err = HTTP_PARSER_ERRNO(&r->parser);
    *used += n;
    data += n;
    len -= n;
    if (r->error_status || (err != HPE_OK && err != HPE_PAUSED)) {
      if (!r->error_status) r->error_status = err == HPE_HEADER_OVERFLOW ? 431 : 400;
      if (!r->why)
        r->why = r->error_status == 431   ? "request headers too large"
                 : r->error_status == 413 ? "request body too large"
                 : r->error_status == 414 ? "request URI too long"
                 : err != HPE_OK && err != HPE_PAUSED && err != HPE_CB_headers_complete
                     ? http_errno_description(err)
                     : "malformed request";
      return r->error_status;
    }
    if (!r->headers_done) {
      r->head_seen += n;
      if (r->head_seen > r->max_header) {
        int line = r->nh == 0; /* still in the request line */
        r->error_status = line ? 414 : 431;
        r->why = line ? "request line too long" : "request headers too large";
        return r->error_status;
      }
    }
    if (hold && n == slice) { /* the CR that ended this input: kept for the next call */
      *used += 1;
      data += 1;
      len -= 1;
      continue;
    }
    if (problem != HEAD_OK) {
      r->error_status = 400;
      r->why = problem == HEAD_FOLD ? "obsolete line folding in the headers" : "a bare CR in the request head";
      return r->error_status;
    }
    if (n < slice && !r->complete) break; /* cannot happen unless paused */
  }
  return r->complete ? 1 : 0;
}

const char *httpd_req_url(const httpd_req *r) { return r->url; }

const char *httpd_req_error(const httpd_req *r) { return r->why ? r->why : "malformed request"; }
int httpd_req_upgrade(const httpd_req *r) { return r->parser.upgrade; }
int httpd_req_keep_alive(const httpd_req *r) { return http_should_keep_alive(&r->parser); }
int httpd_req_http11(const httpd_req *r) {
  return r->parser.http_major > 1 || (r->parser.http_major == 1 && r->parser.http_minor >= 1);
}
const uint8_t *httpd_req_body(const httpd_req *r, size_t *len) {
  *len = r->body.len;
  return r->body.data;
}
