/* kind.h -- the kinds of room (room.h: room_kind). Document
 * rooms (PROTOCOL.md 5), a map of items with fields, written by set, del,
 * batch and text ops under last-writer-wins, version checks (base), locks
 * and fences, and operational transformation of text fields against the
 * ops a client has not seen. Its state per room is the document (sync.h:
 * doc) and the recent text ops of each field.
 *
 * Loop thread only. Pure decisions (sync.h, text.h) plus sequencing through
 * commit.h; no store writes of its own. */
#ifndef WSY_KIND_H
#define WSY_KIND_H

#include "room.h"

extern const room_kind doc_room_kind;
/* Yjs rooms (yroom.h, docs/YJS.md): the document is Yjs update bytes. */
extern const room_kind yjs_room_kind;

/* Reads a document room's committed state from the store into d (an empty
 * doc): its items rows, then its texts rows replayed (store.h: texts).
 * 0 or a wsy_err. For reads outside a loaded room's state (the backend
 * API, a snapshot while entries are pending). */
int doc_room_read(store *st, const char *name, doc *d);

/* The kind of the room named name (document rooms, for every name today). */
const room_kind *room_kind_for(const char *name);

#endif
