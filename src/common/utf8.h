/* utf8.h -- the one UTF-8 validator of wsync, for every module that takes
 * text from a peer: WebSocket text messages and close reasons (src/ws), JSON
 * strings (jsonr), OT text (src/sync/text.c), Yjs strings (src/yjs/lib0.c),
 * bus messages (src/sync/bus_redis.c).
 *
 * Valid means RFC 3629, which RFC 6455 and JSON (RFC 8259) both point to: no
 * overlong forms, no UTF-16 surrogates (U+D800..U+DFFF), nothing above
 * U+10FFFF, no C0, C1 or F5..FF bytes. NUL is a code point like any other:
 * inputs are a pointer and a length, never C strings.
 *
 * Two forms, one state machine (utf8.c), so they cannot disagree:
 *  - wsy_utf8_scan checks a whole buffer and can count what JavaScript and
 *    the OT types measure: code points and UTF-16 code units;
 *  - wsy_utf8_feed checks text that arrives in pieces (fragments, inflated
 *    chunks): the pieces give the verdict of the whole however they are cut,
 *    and a piece that already rules out every continuation fails at once.
 *
 * Pure: no allocation, no state but the caller's uint32_t, any thread.
 * Errors: WSY_OK or WSY_BAD_UTF8, nothing else. */
#ifndef WSY_UTF8_H
#define WSY_UTF8_H

#include <stddef.h>
#include <stdint.h>

#include "wsy.h"

/* WSY_OK when s[0..n) is complete, valid UTF-8 (n == 0 is; s may then be
 * NULL). Then *cps gets its length in code points and *units in UTF-16 code
 * units (JavaScript's String.length: a code point above U+FFFF is two); either
 * may be NULL. On WSY_BAD_UTF8 neither is written. */
int wsy_utf8_scan(const uint8_t *s, size_t n, size_t *cps, size_t *units) WSY_WUR;

/* Incremental form. *state starts at WSY_UTF8_ACCEPT and carries a code
 * point cut between two calls. WSY_OK while what was fed is a valid prefix
 * (it may end inside a code point: wsy_utf8_complete says whether it does);
 * WSY_BAD_UTF8 as soon as no continuation can make it valid, and from then
 * on for every call with that state (WSY_UTF8_REJECT). Feeding 0 bytes
 * changes nothing. */
#define WSY_UTF8_ACCEPT 0u
#define WSY_UTF8_REJECT 0xffffffffu
int wsy_utf8_feed(uint32_t *state, const uint8_t *p, size_t n) WSY_WUR;
/* True when the text fed so far is valid and ends on a code point boundary. */
static inline int wsy_utf8_complete(uint32_t state) { return state == WSY_UTF8_ACCEPT; }

#endif
