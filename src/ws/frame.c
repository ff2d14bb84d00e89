/* frame.c -- RFC 6455 frame parser and encoder, close-code rules.
 *
 * The parser is a resumable state machine (see ws.h): it keeps no more than
 * the frame header it is reading, so any split of the input -- a byte at a
 * time or a megabyte at once -- gives the same events. Payload is unmasked
 * in place in the caller's buffer. A single-frame message that arrives whole
 * in one read is delivered straight from that buffer; only messages spanning
 * reads or fragments are copied into the reassembly buffer.
 *
 * A compressed message (permessage-deflate, RSV1 on its first frame) is
 * inflated as its payload arrives, into the reassembly buffer; the output
 * is checked in the order it is produced -- UTF-8 first, then the size limit
 * -- so that how the input was split cannot change which error is seen. */
#include "ws.h"

#include <string.h>
#include <zlib.h>

#include "../common/utf8.h"
#include "ws_pmd.h"

enum { ST_HDR0, ST_HDR1, ST_EXTLEN, ST_MASKKEY, ST_PAYLOAD, ST_ERROR };

#define FIN 0x80
#define RSV 0x70
#define RSV1 0x40
#define MASKBIT 0x80
#define MAX_CONTROL 125

int ws_close_code_valid(unsigned code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

size_t ws_frame_header(uint8_t out[WS_MAX_HEADER], int fin, int opcode, uint64_t len,
                       const uint8_t *mask) {
  size_t n;
  out[0] = (uint8_t)((fin ? FIN : 0) | (opcode & 0x0f));
  uint8_t m = mask ? MASKBIT : 0;
  if (len < 126) {
    out[1] = (uint8_t)(m | len);
    n = 2;
  } else if (len <= 0xffff) {
    out[1] = m | 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    n = 4;
  } else {
    out[1] = m | 127;
    for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    n = 10;
  }
  if (mask) {
    memcpy(out + n, mask, 4);
    n += 4;
  }
  return n;
}

unsigned ws_mask(uint8_t *p, size_t n, const uint8_t key[4], unsigned pos) {
  size_t i = 0;
  /* Align to the key, then XOR eight bytes at a time with the key doubled. */
  while (i < n && (pos & 3)) p[i++] ^= key[pos++ & 3];
  if (n - i >= 8) {
    uint32_t k4;
    memcpy(&k4, key, 4);
    uint64_t k8 = ((uint64_t)k4 << 32) | k4;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      memcpy(&w, p + i, 8);
      w ^= k8;
      memcpy(p + i, &w, 8);
    }
  }
  for (; i < n; i++) p[i] ^= key[pos++ & 3];
  return pos & 3;
}

void ws_parser_init(ws_parser *p, const ws_limits *lim, const ws_parser_cb *cb, void *ctx) {
  memset(p, 0, sizeof *p);
  p->lim = lim;
  p->cb = cb;
  p->ctx = ctx;
  p->state = ST_HDR0;
}

/* The reassembly buffer exists only while a message spans frames or reads:
 * an idle connection holds one pointer, not a buffer header. */
static void msg_free(ws_parser *p) {
  if (!p->msg) return;
  buf_free(p->msg);
  wsy_free(p->msg);
  p->msg = NULL;
}

static size_t msg_len(const ws_parser *p) { return p->msg ? p->msg->len : 0; }

/* The inflate stream goes back to the pool when its message ends. */
static void z_release(ws_parser *p) {
  if (!p->z) return;
  ws_pmd_inflate_put(p->z);
  p->z = NULL;
}

void ws_parser_deinit(ws_parser *p) {
  msg_free(p);
  z_release(p);
  wsy_free(p->ctl);
  p->ctl = NULL;
}

size_t ws_parser_buffered(const ws_parser *p) {
  return (p->msg ? sizeof *p->msg + p->msg->cap : 0) + (p->ctl ? MAX_CONTROL : 0);
}

static int fail(ws_parser *p, int err, unsigned code) {
  p->state = ST_ERROR;
  p->close_code = (uint16_t)code;
  msg_free(p);
  z_release(p);
  return err;
}

/* Header complete: check the frame against the protocol and the message in
 * progress before any payload byte is looked at. */
static int frame_begin(ws_parser *p) {
  int op = p->b0 & 0x0f, fin = p->b0 & FIN;
  /* RSV1 is permessage-deflate's, and only on the first frame of a data
   * message (RFC 7692 6); RSV2 and RSV3 belong to no agreed extension. */
  int rsv1 = p->b0 & RSV1;
  if ((p->b0 & RSV & ~RSV1) || (rsv1 && (!p->deflate || (op != WS_OP_TEXT && op != WS_OP_BINARY))))
    return fail(p, WSY_PROTO, WS_CLOSE_PROTOCOL);
  if (op & 0x8) {
    if (op != WS_OP_CLOSE && op != WS_OP_PING && op != WS_OP_PONG)
      return fail(p, WSY_PROTO, WS_CLOSE_PROTOCOL);
    if (!fin || p->remaining > MAX_CONTROL) return fail(p, WSY_PROTO, WS_CLOSE_PROTOCOL);
    p->ctl_len = 0;
    return WSY_OK;
  }
  if (op == WS_OP_CONT) {
    if (!p->msg_opcode) return fail(p, WSY_PROTO, WS_CLOSE_PROTOCOL);
  } else if (op == WS_OP_TEXT || op == WS_OP_BINARY) {
    if (p->msg_opcode) return fail(p, WSY_PROTO, WS_CLOSE_PROTOCOL);
    p->msg_opcode = (uint8_t)op;
    p->utf8 = WSY_UTF8_ACCEPT;
    p->msg_deflated = rsv1 != 0;
    p->z_ended = 0;
    if (p->msg) buf_reset(p->msg);
    if (rsv1) {
      p->z = ws_pmd_inflate_get();
      if (!p->z) return fail(p, WSY_NOMEM, WS_CLOSE_INTERNAL);
    }
  } else {
    return fail(p, WSY_PROTO, WS_CLOSE_PROTOCOL);
  }
  /* The bytes received count against the limit, compressed or not. */
  uint64_t *wire = p->msg_deflated ? ws_pmd_inflate_wire(p->z) : NULL;
  if (p->remaining > p->lim->max_message - (wire ? *wire : msg_len(p)))
    return fail(p, WSY_TOO_LARGE, WS_CLOSE_TOO_BIG);
  if (wire) *wire += p->remaining;
  return WSY_OK;
}

static int control_done(ws_parser *p, uint8_t *d, size_t n) {
  int op = p->b0 & 0x0f, stop;
  if (op == WS_OP_PING) {
    stop = p->cb->on_ping ? p->cb->on_ping(p->ctx, d, n) : 0;
  } else if (op == WS_OP_PONG) {
    stop = p->cb->on_pong ? p->cb->on_pong(p->ctx, d, n) : 0;
  } else {
    unsigned code = WS_CLOSE_NO_STATUS;
    if (n == 1) return fail(p, WSY_PROTO, WS_CLOSE_PROTOCOL);
    if (n >= 2) {
      code = ((unsigned)d[0] << 8) | d[1];
      if (!ws_close_code_valid(code)) return fail(p, WSY_PROTO, WS_CLOSE_PROTOCOL);
      if (wsy_utf8_scan(d + 2, n - 2, NULL, NULL) != WSY_OK) return fail(p, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA);
    }
    stop = p->cb->on_close(p->ctx, code, n >= 2 ? d + 2 : d, n >= 2 ? n - 2 : 0);
  }
  return stop ? WSY_CLOSED : WSY_OK;
}

static int message_done(ws_parser *p, uint8_t *d, size_t n) {
  int op = p->msg_opcode;
  if (op == WS_OP_TEXT && !wsy_utf8_complete(p->utf8))
    return fail(p, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA);
  p->msg_opcode = 0;
  if (p->msg_deflated) {
    ws_pmd_count_inflate(*ws_pmd_inflate_wire(p->z), n);
    z_release(p);
    p->msg_deflated = 0;
  }
  int stop = p->cb->on_message(p->ctx, op, d, n);
  /* A reassembly buffer is not kept for an idle connection. */
  msg_free(p);
  return stop ? WSY_CLOSED : WSY_OK;
}

/* Inflates d[0..n) (compressed payload, or the 00 00 ff ff put back at the
 * end of the message) into the reassembly buffer. At most max_message + 1
 * bytes are ever produced: the output is checked chunk by chunk, and the
 * first byte past the limit ends it with 1009. */
static int inflate_bytes(ws_parser *p, const uint8_t *d, size_t n, int tail) {
  z_stream *z = p->z;
  size_t max = p->lim->max_message;
  if (p->z_ended) {
    /* After a final block only the tail wsync appends may follow. */
    return n == 0 || tail ? WSY_OK : fail(p, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA);
  }
  if (!p->msg) {
    p->msg = wsy_malloc(sizeof *p->msg);
    buf_init(p->msg, max + 1);
  }
  z->next_in = (Bytef *)(uintptr_t)d;
  z->avail_in = (uInt)n;
  for (;;) {
    uint8_t out[16384];
    size_t room = max + 1 - p->msg->len;
    if (room > sizeof out) room = sizeof out;
    z->next_out = out;
    z->avail_out = (uInt)room;
    int zrc = inflate(z, Z_SYNC_FLUSH);
    size_t got = room - z->avail_out;
    if (got) {
      if (p->msg_opcode == WS_OP_TEXT && wsy_utf8_feed(&p->utf8, out, got) != WSY_OK)
        return fail(p, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA);
      int rc = buf_append(p->msg, out, got);
      if (rc == WSY_NOMEM) return fail(p, WSY_NOMEM, WS_CLOSE_INTERNAL);
      if (rc != WSY_OK || p->msg->len > max) return fail(p, WSY_TOO_LARGE, WS_CLOSE_TOO_BIG);
    }
    if (zrc == Z_STREAM_END) {
      /* A block with BFINAL set ends the data: nothing but the tail after it. */
      p->z_ended = 1;
      if (z->avail_in && !tail) return fail(p, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA);
      return WSY_OK;
    }
    if (zrc == Z_MEM_ERROR) return fail(p, WSY_NOMEM, WS_CLOSE_INTERNAL);
    if (zrc != Z_OK && zrc != Z_BUF_ERROR) return fail(p, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA);
    if (z->avail_out != 0) break; /* all input taken, all output given */
  }
  if (tail && !(z->data_type & 128)) {
    /* After the 00 00 ff ff put back, a well-formed message stands at a
     * block boundary (RFC 7692 7.2.1 ends it with an empty stored block):
     * anywhere else its deflate data was cut short. */
    return fail(p, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA);
  }
  return WSY_OK;
}

/* Payload bytes d[0..n) of the current frame, already unmasked. */
static int payload(ws_parser *p, uint8_t *d, size_t n, int whole_frame) {
  int op = p->b0 & 0x0f;
  int last = p->remaining == 0;
  if (op & 0x8) {
    if (whole_frame) return control_done(p, d, n);
    if (!p->ctl) p->ctl = wsy_malloc(MAX_CONTROL);
    memcpy(p->ctl + p->ctl_len, d, n);
    p->ctl_len = (uint8_t)(p->ctl_len + n);
    if (!last) return WSY_OK;
    int rc = control_done(p, p->ctl, p->ctl_len);
    wsy_free(p->ctl);
    p->ctl = NULL;
    return rc;
  }
  int fin = p->b0 & FIN;
  if (p->msg_deflated) {
    int rc = inflate_bytes(p, d, n, 0);
    if (rc != WSY_OK) return rc;
    if (!(last && fin)) return WSY_OK;
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    /* No compressed bytes at all is taken as the empty message (RFC 7692
     * 7.2.3.6 sends it as one 00 byte; an empty payload is as clear). */
    if (*ws_pmd_inflate_wire(p->z) && (rc = inflate_bytes(p, tail, sizeof tail, 1)) != WSY_OK) return rc;
    static uint8_t empty[1];
    return message_done(p, p->msg ? p->msg->data : empty, p->msg ? p->msg->len : 0);
  }
  if (p->msg_opcode == WS_OP_TEXT && wsy_utf8_feed(&p->utf8, d, n) != WSY_OK)
    return fail(p, WSY_BAD_UTF8, WS_CLOSE_BAD_DATA);
  if (whole_frame && fin && msg_len(p) == 0) return message_done(p, d, n);
  if (!p->msg) {
    p->msg = wsy_malloc(sizeof *p->msg);
    buf_init(p->msg, p->lim->max_message);
  }
  int rc = buf_append(p->msg, d, n);
  if (rc == WSY_NOMEM) return fail(p, WSY_NOMEM, WS_CLOSE_INTERNAL); /* 1011: the server's trouble */
  if (rc != WSY_OK) return fail(p, WSY_TOO_LARGE, WS_CLOSE_TOO_BIG);
  if (last && fin) return message_done(p, p->msg->data, p->msg->len);
  return WSY_OK;
}

int ws_parser_feed(ws_parser *p, uint8_t *in, size_t len) {
  size_t i = 0;
  int rc;
  if (p->state == ST_ERROR) return p->close_code == WS_CLOSE_BAD_DATA ? WSY_BAD_UTF8
                                    : p->close_code == WS_CLOSE_TOO_BIG ? WSY_TOO_LARGE : WSY_PROTO;
  while (i < len) {
    switch (p->state) {
    case ST_HDR0:
      p->b0 = in[i++];
      p->state = ST_HDR1;
      break;
    case ST_HDR1: {
      p->b1 = in[i++];
      int masked = p->b1 & MASKBIT;
      if (p->lim->require_mask && !masked) return fail(p, WSY_PROTO, WS_CLOSE_PROTOCOL);
      if (!p->lim->require_mask && masked) return fail(p, WSY_PROTO, WS_CLOSE_PROTOCOL);
      unsigned l7 = p->b1 & 0x7f;
      p->hdr_have = 0;
      p->mask_pos = 0;
      if (l7 == 126) {
        p->hdr_need = 2;
        p->state = ST_EXTLEN;
      } else if (l7 == 127) {
        p->hdr_need = 8;
        p->state = ST_EXTLEN;
      } else {
        p->remaining = l7;
        p->hdr_need = 0;
        goto length_known;
      }
      break;
    }
    case ST_EXTLEN:
      p->hdr[p->hdr_have++] = in[i++];
      if (p->hdr_have < p->hdr_need) break;
      p->remaining = 0;
      for (int k = 0; k < p->hdr_need; k++) p->remaining = (p->remaining << 8) | p->hdr[k];
      /* Minimal encoding is required, and the top bit of a 64-bit length. */
      if ((p->hdr_need == 2 && p->remaining < 126) ||
          (p->hdr_need == 8 && (p->remaining <= 0xffff || (p->remaining >> 63))))
        return fail(p, WSY_PROTO, WS_CLOSE_PROTOCOL);
    length_known:
      if ((rc = frame_begin(p)) != WSY_OK) return rc;
      p->hdr_have = 0;
      if (p->b1 & MASKBIT) {
        p->state = ST_MASKKEY;
        break;
      }
      goto payload_start;
    case ST_MASKKEY:
      p->mask[p->hdr_have++] = in[i++];
      if (p->hdr_have < 4) break;
    payload_start:
      p->state = ST_PAYLOAD;
      p->hdr_have = 0;
      if (p->remaining == 0) {
        p->state = ST_HDR0;
        if ((rc = payload(p, in + i, 0, 1)) != WSY_OK) return rc;
      }
      break;
    case ST_PAYLOAD: {
      size_t avail = len - i;
      size_t n = avail < p->remaining ? avail : (size_t)p->remaining;
      /* hdr_have is 0 until the first payload byte of this frame is seen:
       * a frame whose payload all arrives in this call needs no copy. */
      int first = p->hdr_have == 0;
      p->hdr_have = 1;
      if (p->b1 & MASKBIT) p->mask_pos = (uint8_t)ws_mask(in + i, n, p->mask, p->mask_pos);
      uint8_t *d = in + i;
      i += n;
      p->remaining -= n;
      if (p->remaining == 0) p->state = ST_HDR0;
      if ((rc = payload(p, d, n, first && p->remaining == 0)) != WSY_OK) return rc;
      break;
    }
    default:
      return WSY_PROTO;
    }
  }
  return WSY_OK;
}
