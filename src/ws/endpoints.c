/* endpoints.c -- the WebSocket endpoints of the server core, enabled with
 * --echo-endpoint: /v1/echo sends each message back (the RFC 6455
 * conformance tests drive it), /v1/broadcast?room=R re-sends each message to
 * every connection in room R, the sender included (fan-out tests and the
 * benchmark's plain broadcast protocol). A broadcast frame is encoded once
 * and shared by every recipient's queue. */
#include <stdio.h>
#include <string.h>

#include "../common/log.h"
#include "../http/httpd.h"
#include "ws_conn.h"

/* ---- echo ------------------------------------------------------------------ */

static void echo_message(ws_conn *w, int opcode, uint8_t *data, size_t len) {
  ws_send(w, opcode, data, len);
}

const ws_endpoint ws_echo_endpoint = {
  .name = "echo",
  .on_message = echo_message,
};

/* ---- broadcast ----------------------------------------------------------- */

/* A room's members are an array of connections; each connection keeps its
 * index (ws_conn_slot) and its room (ws_conn_user), so joining costs one
 * pointer in the array rather than an allocation per member. */
typedef struct bcast_room bcast_room;
struct bcast_room {
  char name[64];
  ws_conn **m;
  unsigned count, cap;
  bcast_room *next;
};

struct bcast_registry {
  bcast_room *rooms;
};

bcast_registry *ws_bcast_new(void) { return wsy_calloc(1, sizeof(bcast_registry)); }

void ws_bcast_free(bcast_registry *reg) { wsy_free(reg); } /* rooms go with their last member */

static int bcast_open(ws_conn *w, const httpd_req *r) {
  /* Larger than any query request.c accepts, so -1 means "no room=". */
  char name[1024];
  if (httpd_req_query_param(r, "room", name, sizeof name) != 0) strcpy(name, "default");
  /* A name that does not fit is refused: cutting it short, or falling back
   * to the default room, would deliver one room's messages to another. */
  if (strlen(name) >= sizeof ((bcast_room *)0)->name) {
    log_info("broadcast refused: room name longer than %zu bytes",
             sizeof ((bcast_room *)0)->name - 1);
    return -1;
  }
  bcast_registry *reg = ws_conn_ud(w);
  bcast_room *room = reg->rooms;
  while (room && strcmp(room->name, name) != 0) room = room->next;
  if (!room) {
    room = wsy_calloc(1, sizeof *room);
    memcpy(room->name, name, sizeof room->name);
    room->next = reg->rooms;
    reg->rooms = room;
  }
  if (room->count == room->cap) {
    room->cap = room->cap ? room->cap * 2 : 4;
    room->m = wsy_realloc(room->m, room->cap * sizeof *room->m);
  }
  ws_conn_set_slot(w, room->count);
  room->m[room->count++] = w;
  ws_conn_set_user(w, room);
  return 0;
}

static void bcast_message(ws_conn *w, int opcode, uint8_t *data, size_t len) {
  bcast_room *room = ws_conn_user(w);
  net_chunk *frame = ws_frame_new(opcode, data, len);
  /* Backwards: a slow consumer closed by its send leaves the array, and the
   * member moved into its place has been served already. */
  for (unsigned i = room->count; i-- > 0;) {
    if (i < room->count) (void)ws_send_frame(room->m[i], frame);
  }
  net_chunk_unref(frame);
}

static void bcast_close(ws_conn *w) {
  bcast_room *room = ws_conn_user(w);
  if (!room) return;
  uint32_t i = ws_conn_slot(w);
  ws_conn *last = room->m[--room->count];
  room->m[i] = last;
  ws_conn_set_slot(last, i);
  ws_conn_set_user(w, NULL);
  if (room->count == 0) {
    bcast_registry *reg = ws_conn_ud(w);
    for (bcast_room **pp = &reg->rooms; *pp; pp = &(*pp)->next)
      if (*pp == room) {
        *pp = room->next;
        break;
      }
    wsy_free(room->m);
    wsy_free(room);
  } else if (room->count * 4 < room->cap && room->cap > 16) {
    room->cap /= 2;
    room->m = wsy_realloc(room->m, room->cap * sizeof *room->m);
  }
}

const ws_endpoint ws_broadcast_endpoint = {
  .name = "broadcast",
  .on_open = bcast_open,
  .on_message = bcast_message,
  .on_close = bcast_close,
};
