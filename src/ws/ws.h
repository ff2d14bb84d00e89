/* ws.h -- RFC 6455 for wsync: frame parser and encoder (text checked as it
 * arrives with the incremental validator of src/common/utf8.h), the upgrade
 * handshake's accept key, close-code rules, and permessage-deflate (RFC
 * 7692): offers, the answer, compressed messages.
 *
 * This header is the pure part: no I/O, no clock, no allocation beyond the
 * parser's own reassembly buffers and the inflate stream it borrows for a
 * compressed message, so every function here is unit-tested and fuzzed on
 * its own. The connection side (upgrade, pings, close handshake,
 * fan-out) is in ws_conn.h. Errors are wsy_err; ownership is stated per call. */
#ifndef WSY_WS_H
#define WSY_WS_H

#include <stddef.h>
#include <stdint.h>

#include "../common/wsy.h"

enum ws_opcode {
  WS_OP_CONT = 0x0,
  WS_OP_TEXT = 0x1,
  WS_OP_BINARY = 0x2,
  WS_OP_CLOSE = 0x8,
  WS_OP_PING = 0x9,
  WS_OP_PONG = 0xA,
};

enum ws_close_code {
  WS_CLOSE_NORMAL = 1000,
  WS_CLOSE_GOING_AWAY = 1001,
  WS_CLOSE_PROTOCOL = 1002,
  WS_CLOSE_UNSUPPORTED = 1003,
  WS_CLOSE_NO_STATUS = 1005,   /* never on the wire */
  WS_CLOSE_ABNORMAL = 1006,    /* never on the wire */
  WS_CLOSE_BAD_DATA = 1007,
  WS_CLOSE_POLICY = 1008,
  WS_CLOSE_TOO_BIG = 1009,
  WS_CLOSE_INTERNAL = 1011,
  WS_CLOSE_TRY_AGAIN_LATER = 1013,
};

/* ---- close codes ------------------------------------------------------ */

/* True for codes a peer may send in a close frame: 1000-1003, 1007-1014 and
 * 3000-4999. 1004-1006, 1015 and everything else are protocol errors. */
int ws_close_code_valid(unsigned code);

/* ---- handshake -------------------------------------------------------- */

/* True when key is the base64 of exactly 16 bytes, as RFC 6455 4.1 asks. */
int ws_key_valid(const char *key, size_t len);
/* Writes the Sec-WebSocket-Accept value for key (28 chars + NUL) into out. */
void ws_accept_key(const char *key, size_t len, char out[29]);

/* ---- encoder ---------------------------------------------------------- */

#define WS_MAX_HEADER 14
/* Writes a frame header for a payload of len bytes into out and returns its
 * size (2, 4 or 10 bytes; 4 more when mask is not NULL). Servers pass NULL;
 * clients (tests, the benchmark) pass their 4-byte masking key and mask the
 * payload themselves with ws_mask(). */
size_t ws_frame_header(uint8_t out[WS_MAX_HEADER], int fin, int opcode, uint64_t len,
                       const uint8_t *mask);
/* XORs p[0..n) with key, starting at key position pos (0-3); returns the
 * position after the last byte. */
unsigned ws_mask(uint8_t *p, size_t n, const uint8_t key[4], unsigned pos);

/* ---- permessage-deflate (RFC 7692) --------------------------------------- */

/* What was agreed for one connection. wsync always answers with
 * server_no_context_takeover and client_no_context_takeover: every message is
 * compressed on its own in both directions, so no connection keeps a zlib
 * stream between messages, and a broadcast is compressed once for all. */
typedef struct ws_pmd {
  uint8_t server_max_window_bits; /* 8-15: the window wsync may use (15 unless the client asked) */
  uint8_t asked_server_bits;      /* the offer had server_max_window_bits: echo it */
} ws_pmd;

/* Reads one Sec-WebSocket-Extensions value (a list of offers, RFC 6455 9.1)
 * and takes the first permessage-deflate offer wsync can accept (RFC 7692
 * 7.1): returns 1 and fills *out, or 0. Offers of other extensions and
 * permessage-deflate offers that are malformed (syntax, a parameter twice,
 * an unknown parameter, a value where none is allowed, a window size that is
 * not 8-15 without leading zeros) are declined, never an error. */
int ws_pmd_negotiate(const char *v, size_t len, ws_pmd *out);
/* Writes the Sec-WebSocket-Extensions value answering an accepted offer
 * (NUL-terminated); returns its length. */
size_t ws_pmd_response(const ws_pmd *a, char *out, size_t n);
/* A message shorter than this is sent uncompressed (RSV1 clear): a deflate
 * stream of a few dozen bytes is rarely smaller than the bytes themselves. */
#define WS_PMD_MIN_SIZE 128

/* Process-wide counters of the compression code (loop thread only). */
typedef struct ws_pmd_stats {
  uint64_t deflates;        /* messages compressed (one per broadcast) */
  uint64_t deflate_in, deflate_out; /* bytes before and after */
  uint64_t deflate_skipped; /* compressed but not smaller: sent plain */
  uint64_t shared_hits;     /* deliveries that reused a compressed frame */
  uint64_t inflates;        /* compressed messages received */
  uint64_t inflate_in, inflate_out;
  size_t zlib_bytes;        /* bytes zlib holds now (streams in use and pooled) */
  unsigned inflate_streams; /* inflate streams lent to parsers now */
  unsigned cached_frames;   /* compressed frames kept for sharing now (at most 8) */
} ws_pmd_stats;
const ws_pmd_stats *ws_pmd_stats_get(void);
/* Releases the pooled zlib streams (at exit, and in tests). */
void ws_pmd_release(void);

/* ---- parser ----------------------------------------------------------- */

typedef struct ws_limits {
  size_t max_message; /* largest reassembled message; larger -> 1009 */
  int require_mask;   /* server side: 1; a client parsing server frames: 0 */
} ws_limits;

/* Events, called from inside ws_parser_feed(). Each returns 0 to go on or a
 * non-zero value to stop feeding at once (the connection is closing); feed
 * then returns WSY_CLOSED. Payload pointers are valid only during the call:
 * they may point into the caller's input (unmasked in place) or into the
 * parser's reassembly buffer. */
typedef struct ws_parser_cb {
  int (*on_message)(void *ctx, int opcode, uint8_t *data, size_t len);
  int (*on_ping)(void *ctx, const uint8_t *data, size_t len);
  int (*on_pong)(void *ctx, const uint8_t *data, size_t len);
  /* code is WS_CLOSE_NO_STATUS for an empty close frame; the reason has been
   * checked to be UTF-8 and the code to be ws_close_code_valid(). */
  int (*on_close)(void *ctx, unsigned code, const uint8_t *reason, size_t len);
} ws_parser_cb;

struct z_stream_s;

/* HDR0 -> HDR1 -> [LEN16 | LEN64] -> [MASKKEY] -> PAYLOAD -> HDR0
 * any -> ERROR (sticky; ws_parser_close_code() says 1002, 1007 or 1009).
 * Message-level rules are checked here too: continuation without a start,
 * a new data frame inside a fragmented message, fragmented or oversized
 * control frames, reserved bits and opcodes, masking, text UTF-8 (checked as
 * bytes arrive, so a bad byte fails before the message ends).
 *
 * With permessage-deflate on (ws_parser_set_deflate), RSV1 on the first
 * frame of a data message marks it compressed; its frames' payloads are
 * inflated as they arrive, with an inflate stream borrowed from a small pool
 * for the length of that message only. RSV1 on a continuation or control
 * frame is 1002. The inflated bytes are what is checked: text UTF-8 (1007)
 * and --max-message-size (1009, as soon as the output crosses it: a
 * decompression bomb is never inflated whole). The compressed bytes count
 * against the same limit. Invalid deflate data is 1007. */
typedef struct ws_parser {
  const ws_limits *lim;
  const ws_parser_cb *cb;
  void *ctx;
  uint64_t remaining;  /* payload bytes left in the current frame */
  buf *msg;            /* reassembly of a message spanning reads or frames (lazy) */
  uint8_t *ctl;        /* lazily allocated control payload spanning reads */
  uint32_t utf8;       /* wsy_utf8_feed state of the text message in progress */
  uint16_t close_code; /* set with the sticky error */
  uint8_t state;
  uint8_t hdr[8];      /* extended length being accumulated */
  uint8_t hdr_have, hdr_need;
  uint8_t b0, b1;      /* first two header bytes of the current frame */
  uint8_t mask[4];
  uint8_t mask_pos;
  uint8_t msg_opcode;  /* TEXT or BINARY while a message is open, else 0 */
  uint8_t ctl_len;
  uint8_t deflate;     /* permessage-deflate negotiated */
  uint8_t msg_deflated;/* the message in progress is compressed */
  uint8_t z_ended;     /* ... and its deflate data has ended (BFINAL) */
  struct z_stream_s *z;/* inflate stream, only while a compressed message is open */
} ws_parser;

void ws_parser_init(ws_parser *p, const ws_limits *lim, const ws_parser_cb *cb, void *ctx);
/* Allows compressed messages (RSV1), after permessage-deflate was agreed. */
static inline void ws_parser_set_deflate(ws_parser *p, int on) { p->deflate = (uint8_t)(on != 0); }
/* Releases reassembly buffers; the parser may be initialised again. */
void ws_parser_deinit(ws_parser *p);
/* Consumes in[0..len). The bytes are modified (unmasked in place). Returns
 * WSY_OK, WSY_CLOSED when a callback stopped it, or WSY_PROTO / WSY_BAD_UTF8 /
 * WSY_NOMEM (close 1011: a reassembly buffer could not grow) /
 * WSY_TOO_LARGE (sticky) with ws_parser_close_code() giving the close code. */
int ws_parser_feed(ws_parser *p, uint8_t *in, size_t len) WSY_WUR;
static inline unsigned ws_parser_close_code(const ws_parser *p) { return p->close_code; }
/* Bytes the parser holds beyond the fixed struct (for memory accounting). */
size_t ws_parser_buffered(const ws_parser *p);

#endif
