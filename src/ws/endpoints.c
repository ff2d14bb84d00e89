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

typedef struct bcast_room bcast_room;
typedef struct member {
  ws_conn *w;
  bcast_room *room;
  struct member *prev, *next;
} member;

struct bcast_room {
  char name[64];
  member *head;
  unsigned count;
  bcast_room *next;
};

struct bcast_registry {
  bcast_room *rooms;
};

static bcast_registry *registry(struct app *app) {
  if (!app->bcast) app->bcast = wsy_calloc(1, sizeof *app->bcast);
  return app->bcast;
}

static int bcast_open(ws_conn *w, const void *req_ctx) {
  const httpd_req *r = req_ctx;
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
  bcast_registry *reg = registry(ws_conn_app(w));
  bcast_room *room = reg->rooms;
  while (room && strcmp(room->name, name) != 0) room = room->next;
  if (!room) {
    room = wsy_calloc(1, sizeof *room);
    memcpy(room->name, name, sizeof room->name);
    room->next = reg->rooms;
    reg->rooms = room;
  }
  member *m = wsy_calloc(1, sizeof *m);
  m->w = w;
  m->room = room;
  m->next = room->head;
  if (room->head) room->head->prev = m;
  room->head = m;
  room->count++;
  ws_conn_set_user(w, m);
  return 0;
}

static void bcast_message(ws_conn *w, int opcode, uint8_t *data, size_t len) {
  member *me = ws_conn_user(w);
  net_chunk *frame = ws_frame_new(opcode, data, len);
  for (member *m = me->room->head, *next; m; m = next) {
    next = m->next; /* a slow consumer leaves the list while we walk it */
    (void)ws_send_frame(m->w, frame);
  }
  net_chunk_unref(frame);
}

static void bcast_close(ws_conn *w) {
  member *m = ws_conn_user(w);
  if (!m) return;
  bcast_room *room = m->room;
  if (m->prev) m->prev->next = m->next;
  else room->head = m->next;
  if (m->next) m->next->prev = m->prev;
  room->count--;
  ws_conn_set_user(w, NULL);
  wsy_free(m);
  if (room->count == 0) {
    bcast_registry *reg = registry(ws_conn_app(w));
    for (bcast_room **pp = &reg->rooms; *pp; pp = &(*pp)->next)
      if (*pp == room) {
        *pp = room->next;
        break;
      }
    wsy_free(room);
  }
}

const ws_endpoint ws_broadcast_endpoint = {
  .name = "broadcast",
  .on_open = bcast_open,
  .on_message = bcast_message,
  .on_close = bcast_close,
};
