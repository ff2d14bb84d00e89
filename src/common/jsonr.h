/* jsonr.h -- a faster way to the jansson tree of a protocol message.
 *
 * Why: jansson's decoder reads its input through a callback per character
 * and was about 4 us of the loop thread per op message in bench (e), close
 * to half of the loop's time (docs/PERFORMANCE.md, issue 15). yajl
 * (Debian's libyajl) building the tree from its events was three times
 * faster, but its tokenizer alone still cost about 47 instructions per
 * byte, a quarter of the loop; jsonr is now a recursive-descent reader
 * written for this contract, which builds the tree as it reads (no faster
 * strict tokenizer for C is packaged in Debian 12: simdjson and RapidJSON
 * are C++). Every handler keeps reading json_t.
 *
 * The contract is one-sided: jsonr_parse returns a tree only where it is
 * sure that json_loadb(data, len, JSON_REJECT_DUPLICATES) would return an
 * equal one (same types, same member order, same bytes in every string);
 * otherwise NULL, and the caller asks jansson, whose answer (a tree, or the
 * error message a client sees) then decides. NULL is never a verdict. Texts
 * it leaves to jansson: any "\u" escape (jansson's handling of surrogates
 * is its own), a duplicate member, a member name over 256 bytes, a number
 * beyond int64 or a double, a string that is not strict UTF-8 (RFC 3629: no
 * overlongs, no surrogates), nesting deeper than JSONR_MAX_DEPTH, a top
 * level that is not an object or an array, and every text that is not
 * RFC 8259 JSON. fuzz/json_read.c checks the contract against jansson on
 * arbitrary input. */
#ifndef WSY_JSONR_H
#define WSY_JSONR_H

#include <jansson.h>
#include <stddef.h>

#define JSONR_MAX_DEPTH 64

/* max_depth (at most JSONR_MAX_DEPTH): containers nested deeper than this
 * (the top level is 1) are left to jansson too, so a tree returned is known
 * to nest no deeper. */
json_t *jsonr_parse(const char *data, size_t len, int max_depth);

#endif
