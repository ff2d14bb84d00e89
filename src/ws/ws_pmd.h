/* ws_pmd.h -- internal to src/ws: the zlib side of permessage-deflate
 * (pmd.c), used by the frame parser (inflate) and by ws_conn.c (deflate).
 * Loop thread only: the streams and counters are process-wide. */
#ifndef WSY_WS_PMD_H
#define WSY_WS_PMD_H

#include <stddef.h>
#include <stdint.h>

#include "../common/wsy.h"

struct z_stream_s;

/* An inflate stream (raw deflate, 32 KiB window) for one message, or NULL
 * when memory is short; give it back with ws_pmd_inflate_put(). */
struct z_stream_s *ws_pmd_inflate_get(void);
void ws_pmd_inflate_put(struct z_stream_s *z);
/* The compressed bytes of the message counted so far: kept with the stream,
 * so that the parser of every connection need not carry the counter. */
uint64_t *ws_pmd_inflate_wire(struct z_stream_s *z);
void ws_pmd_count_inflate(size_t in, size_t out);

/* Appends in[0..len) compressed as one message (no context takeover, the
 * trailing 00 00 ff ff removed, RFC 7692 7.2.1) to out, with a window of
 * 2^wbits bytes (9-15). WSY_OK, WSY_TOO_LARGE (out's cap) or WSY_NOMEM. */
int ws_pmd_deflate(const uint8_t *in, size_t len, int wbits, buf *out);
void ws_pmd_count_shared(uint64_t hits, uint64_t skipped);
void ws_pmd_set_cached(unsigned n);

#endif
