/* yroom.h -- Yjs rooms (docs/YJS.md): the room kind whose document is Yjs
 * update bytes (yroom.c), and the WebSocket endpoint /v1/yjs/{room} that
 * speaks y-protocols v1 to the stock y-websocket provider (yconn.c).
 *
 * Loop thread only, but for compaction, which merges and compacts a copy
 * of a room's updates on libuv's thread pool.
 *
 * A Yjs room shares what every room has (room.h): its name, grants, epoch,
 * seq, the durable log, the group commit and the bus. An update from a
 * client is validated (yupdate_validate), sequenced as one log entry
 * {"type":"yjs","update":"<base64>"} through commit_sequence, and relayed
 * only when the batch holding it has committed, through the bus, to every
 * connection of the room (room_deliver -> the kind's deliver hook). So no
 * client ever receives an update a crash could lose.
 *
 * IN MEMORY (r->ks, rebuilt from the store on every (re)load): the merged
 * document up to doc_seq as ONE update (never a Y.Doc), the committed
 * updates after it (merged into it lazily, when a client asks for a diff or
 * they pile up), and the updates waiting for their commit (never served).
 * THE ROOM'S CONNECTIONS and the awareness states they control (r->peers)
 * survive a reload; they keep the room loaded as members do (r->npeers).
 *
 * COMPACTION: once the log since the last snapshot holds --yjs-compact-ops
 * entries or --yjs-compact-bytes bytes of updates, a copy of the committed
 * updates is merged and compacted (yupdate_compact_many) off the loop; the
 * result is written as the room's snapshot (the item "yjs" of the items
 * table: {"seq":S,"update":"<base64>"}) and the log below S+1 trimmed, in
 * one batch. Updates that arrive meanwhile are later entries, untouched. */
#ifndef WSY_YROOM_H
#define WSY_YROOM_H

#include "../yjs/yupdate.h"
#include "room.h"

/* The snapshot's item id in the items table (not a valid doc item id, so
 * it is never mistaken for one). */
#define YROOM_SNAPSHOT_ITEM "yjs"
/* Awareness client ids one connection may control. */
#define YROOM_MAX_CLIENT_IDS 64

typedef struct ypeer ypeer;
typedef struct ycompaction ycompaction;

/* One update held in memory. */
typedef struct yupd {
  struct yupd *next;
  uint64_t seq;
  size_t len;
  uint8_t b[];
} yupd;

/* The kind's state of one room (r->ks). */
typedef struct ydoc {
  ybuf doc;               /* one update: every committed entry up to doc_seq */
  uint64_t doc_seq;
  yupd *done, **done_tail; /* committed after doc_seq, in seq order */
  size_t ndone;
  uint64_t done_seq;       /* seq of the last in done */
  yupd *wait, **wait_tail; /* sequenced, their batch not committed yet */
  uint64_t snap_seq;       /* seq the stored snapshot covers (0: none) */
  uint64_t cum_bytes;      /* update bytes sequenced since the load ... */
  uint64_t snap_cum;       /* ... and how many of them the snapshot covers */
  uint64_t wait_bytes;     /* bytes of the updates in wait */
  ycompaction *job;       /* the compaction in flight, or NULL */
} ydoc;

/* An awareness state some connection of the room controls. */
typedef struct yaware {
  uint64_t client, clock;
  ypeer *owner;
  uint8_t *state; /* the state's JSON text, as received */
  size_t len;
} yaware;

/* r->peers of a Yjs room. */
typedef struct ypeers {
  ypeer *head;
  yaware *aw;
  size_t naw, capaw;
} ypeers;

/* ---- yroom.c: the kind ---------------------------------------------------- */

/* The committed document as one update (merging what piled up): borrowed,
 * valid until the next call that changes the room. NULL with *err set when
 * the codec fails (WSY_NOMEM, WSY_TOO_LARGE). */
const ybuf *yroom_doc(engine *e, room *r, int *err);
/* A validated update from a writer: sequenced into the batch, relayed after
 * the commit. 0, or -1 when the room refuses writes now (a failed commit
 * being recovered from). */
int yroom_update(engine *e, room *r, const uint8_t *u, size_t n);
/* Bytes the kind holds for r (document, piled-up and waiting updates). */
size_t yroom_bytes(const room *r);

/* ---- yconn.c: the connections ----------------------------------------- */

/* Closes every connection of r with code and reason (a reload after a
 * failed commit: the clients reconnect and sync again). */
void yconn_close_all(room *r, unsigned code, const char *reason);
/* Sends frame to every connection of r. */
void yconn_send_all(engine *e, room *r, net_chunk *frame);

#endif
