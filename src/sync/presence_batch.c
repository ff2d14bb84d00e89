/* presence_batch.c -- presence windows (room.h, PROTOCOL.md 8.3): a room's
 * presence changes of one --presence-interval, gathered and sent together.
 *
 * Why: every join, leave and update used to be one message to every other
 * member at once, so a room filling up with n members cost n^2 / 2
 * messages, each written on its own (one writev per connection per loop
 * iteration, and joins arrive over many iterations). Gathered, a member
 * gets the window's events in one go (one writev), and the changes of one
 * member within a window merge.
 *
 * A window holds one entry per member (user, device) that changed in it:
 * whether it was a member when the window opened, the generations of its
 * joins and leaves within the window, the generation of its last change,
 * and its last state and connected flag. Generations count the room's
 * changes within the window (r->pgen, 1 and up; 0 again once sent). What a
 * recipient gets of an entry depends on what it saw: the members that
 * joined before the window (pgen 0) saw the state when the window opened;
 * a member that joined during it (pgen J) saw the state after change J in
 * its joined list. Against that base:
 *   absent then, present now          join (last state)
 *   present then, absent now          leave
 *   absent then and now               nothing (a join and leave unseen)
 *   present then and now, no rejoin   update (last state), if it changed
 *   present then and now, rejoined    leave, then join (last state)
 * The frames are made once per entry and kind, take one position in the
 * room's ring and are shared by every recipient; those to the members of
 * before the window go through the bus (other nodes' members get them too:
 * their view of this node's members is the one of the window's opening),
 * those to the members that joined during it are sent apart, from the same
 * positions where their event is the same one.
 *
 * How long a window lasts. A window costs one write per member, so a room
 * that fills up (or empties) over several windows, as after a restart when
 * every client reconnects at once, costs each member a write per window.
 * With --presence-max-interval above the interval (it is off by default:
 * the larger windows' transient memory stays resident afterwards), the
 * room's windows double while that goes on, from --presence-interval up to
 * --presence-max-interval: a window sent with a join or leave in it
 * makes the next one twice as long; one without, or a quiet interval after
 * a window, makes the next one last the interval again. State updates
 * alone (cursors, typing) never lengthen a window. The engine's one timer
 * still ticks every interval and sends the windows that are due.
 *
 * Loop thread only. */
#include <stdlib.h>
#include <string.h>

#include "room.h"
#include "sess.h"

enum { PK_JOIN, PK_UPDATE, PK_LEAVE, PK_N };
static const char *const kind_name[PK_N] = {"join", "update", "leave"};

typedef struct pchange {
  struct pchange *next;
  char *dkey, *user, *device; /* one allocation with the entry; dkey is the map's key */
  json_t *state;              /* the last state while a member (NULL: {}) */
  int connected;
  int was;                    /* a member when the window opened */
  uint32_t last;              /* generation of its last change */
  uint32_t nflips, cap;       /* its joins and leaves in the window, */
  uint32_t *flips;            /* their generations, ascending */
  net_chunk *frame[PK_N];     /* made at the window's end, when needed */
  uint64_t pos[PK_N];         /* their positions in the room's ring, once pushed */
} pchange;

static void on_timer(uv_timer_t *t);

/* The length of r's window at its pshift. */
static uint64_t window_ms(const engine *e, const room *r) {
  uint64_t iv = e->cfg->presence_interval_ms, max = e->cfg->presence_max_interval_ms;
  uint64_t len = iv << r->pshift;
  return len < max ? len : max > iv ? max : iv;
}

void presence_batch_init(engine *e) {
  uv_timer_init(e->loop, &e->pres_timer);
  e->pres_timer.data = e;
  uv_unref((uv_handle_t *)&e->pres_timer); /* shutdown sends what is open (engine_free) */
}

void presence_batch_deinit(engine *e) { uv_close((uv_handle_t *)&e->pres_timer, NULL); }

static pchange *pchange_new(const sess *s) {
  size_t ld = strlen(s->dkey) + 1, lu = strlen(s->id.user) + 1, lv = strlen(s->device) + 1;
  pchange *c = wsy_calloc(1, sizeof *c + ld + lu + lv);
  c->dkey = (char *)(c + 1);
  c->user = c->dkey + ld;
  c->device = c->user + lu;
  memcpy(c->dkey, s->dkey, ld);
  memcpy(c->user, s->id.user, lu);
  memcpy(c->device, s->device, lv);
  return c;
}

static void pchange_free(pchange *c) {
  json_decref(c->state);
  for (int k = 0; k < PK_N; k++)
    if (c->frame[k]) net_chunk_unref(c->frame[k]);
  wsy_free(c->flips);
  wsy_free(c);
}

void presence_batch_note(engine *e, member *about, const char *event) {
  room *r = about->r;
  sess *s = about->s;
  int kind = !strcmp(event, "join") ? PK_JOIN : !strcmp(event, "leave") ? PK_LEAVE : PK_UPDATE;
  pchange *c = map_get(&r->pch_by, s->dkey);
  if (!c) {
    c = pchange_new(s);
    c->was = kind != PK_JOIN; /* an update or a leave is of a member already there */
    map_put(&r->pch_by, c->dkey, c);
    if (!r->pch) {
      r->pch_tail = &r->pch;
      r->pnext = e->pres_open;
      e->pres_open = r;
      uint64_t now = uv_now(e->loop);
      if (r->pshift && now - r->pflushed > window_ms(e, r) + e->cfg->presence_interval_ms)
        r->pshift = 0; /* quiet since the last window */
      r->pdue = r->pshift ? now + window_ms(e, r) : 0; /* 0: at the next tick */
      if (!uv_is_active((uv_handle_t *)&e->pres_timer))
        uv_timer_start(&e->pres_timer, on_timer, e->cfg->presence_interval_ms, e->cfg->presence_interval_ms);
    }
    *r->pch_tail = c;
    r->pch_tail = &c->next;
  }
  /* A state or connection change does not wait for a long window: live
   * cursors and typing indicators keep --presence-interval while a crowd
   * arrives. The window closes at the next tick, its joins with it. */
  if (kind == PK_UPDATE) r->pdue = 0;
  c->last = ++r->pgen;
  if (kind != PK_UPDATE) {
    if (c->nflips == c->cap) {
      c->cap = c->cap ? 2 * c->cap : 2;
      c->flips = wsy_realloc(c->flips, c->cap * sizeof *c->flips);
    }
    c->flips[c->nflips++] = c->last;
  }
  json_decref(c->state);
  c->state = NULL;
  if (kind != PK_LEAVE) {
    c->state = about->state ? json_incref(about->state) : NULL; /* states are replaced, never changed */
    c->connected = sess_online(s);
  }
}

void presence_batch_joined(member *m) { m->pgen = m->r->pgen; }

/* What a recipient that saw the state after change base gets of c: up to
 * two kinds into out, their count returned (the table above). */
static int effect(const pchange *c, uint32_t base, int out[2]) {
  if (c->last <= base) return 0;
  uint32_t seen = 0; /* flips the recipient saw */
  while (seen < c->nflips && c->flips[seen] <= base) seen++;
  int then = c->was ^ (int)(seen & 1), now = c->was ^ (int)(c->nflips & 1);
  if (!then && !now) return 0;
  if (!then) {
    out[0] = PK_JOIN;
    return 1;
  }
  if (!now) {
    out[0] = PK_LEAVE;
    return 1;
  }
  if (seen == c->nflips) {
    out[0] = PK_UPDATE;
    return 1;
  }
  out[0] = PK_LEAVE;
  out[1] = PK_JOIN;
  return 2;
}

/* The event of kind about c, as today's message (PROTOCOL.md 8.3). */
static net_chunk *frame_of(engine *e, room *r, pchange *c, int kind) {
  if (c->frame[kind]) return c->frame[kind];
  json_t *msg = json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", "presence", "room", r->name, "event", kind_name[kind],
                          "user", c->user, "device", c->device);
  if (kind != PK_LEAVE) {
    json_object_set_new(msg, "state", c->state ? json_incref(c->state) : json_object());
    json_object_set_new(msg, "connected", json_boolean(c->connected));
  }
  c->frame[kind] = engine_frame(e, msg);
  json_decref(msg);
  return c->frame[kind];
}

static int by_pgen(const void *a, const void *b) {
  unsigned x = (*(member *const *)a)->pgen, y = (*(member *const *)b)->pgen;
  return x < y ? -1 : x > y;
}

/* Sends r's window: to the members of before it (and other nodes) through
 * the bus, then to each member that joined during it apart. The window is
 * detached first, so what these sends cause opens a new one. */
static void flush_room(engine *e, room *r) {
  room_presence_list_drop(r); /* the joins of the window are over */
  pchange *list = r->pch;
  r->pch = NULL;
  r->pch_tail = &r->pch;
  map_free(&r->pch_by);
  map_init_borrowed(&r->pch_by);
  r->pgen = 0;
  /* The next window's length: twice this one's after joins or leaves. */
  int churn = 0;
  for (pchange *c = list; c && !churn; c = c->next) churn = c->nflips > 0;
  e->pres_windows++;
  if (r->pshift) e->pres_windows_long++;
  if (!churn) r->pshift = 0;
  else if (window_ms(e, r) < e->cfg->presence_max_interval_ms) r->pshift++;
  r->pflushed = uv_now(e->loop);
  int kinds[2];
  /* One ring position per event, taken here: the members that joined
   * during the window get the same positions where their event is the
   * same, so every outbox names few runs of consecutive positions. */
  for (pchange *c = list; c; c = c->next) {
    /* No member here but the one it is about (or none): nothing in the
     * ring, the event goes to other nodes only. */
    int alone = !r->members || (!r->members->next && !strcmp(r->members->s->dkey, c->dkey));
    int n = effect(c, 0, kinds);
    for (int i = 0; i < n; i++) {
      net_chunk *f = frame_of(e, r, c, kinds[i]);
      if (!alone) c->pos[kinds[i]] = ring_push(r->ring, f);
      bus_msg m = {.room = r->name, .frame = f, .except = c->dkey, .pres_pos = c->pos[kinds[i]]};
      bus_publish(e->bus, &m);
    }
  }
  /* The members that joined during the window, earliest first: each needs
   * the frames of the entries after its join, mostly the ones the member
   * before it needed, so the frames go into the ring in that order and
   * each outbox names one run of positions rather than many (sess.h). */
  member *late_few[64], **late = late_few;
  size_t nlate = 0, cap = 64;
  for (member *x = r->members; x; x = x->next) {
    if (!x->pgen) continue;
    if (nlate == cap) {
      cap *= 2;
      late = late == late_few ? memcpy(wsy_malloc(cap * sizeof *late), late_few, sizeof late_few)
                              : wsy_realloc(late, cap * sizeof *late);
    }
    late[nlate++] = x;
  }
  qsort(late, nlate, sizeof *late, by_pgen);
  for (size_t i = 0; i < nlate; i++) {
    member *x = late[i];
    uint32_t base = x->pgen;
    for (pchange *c = list; c; c = c->next) {
      if (c->last <= base || !strcmp(c->dkey, x->s->dkey)) continue;
      int n = effect(c, base, kinds);
      for (int k = 0; k < n; k++) {
        net_chunk *f = frame_of(e, r, c, kinds[k]);
        if (!c->pos[kinds[k]]) c->pos[kinds[k]] = ring_push(r->ring, f);
        sess_send_ring(x->s, r->ring, c->pos[kinds[k]], f);
        e->deliveries++;
      }
    }
  }
  for (size_t i = 0; i < nlate; i++) late[i]->pgen = 0; /* the next window opens after what this one sends */
  if (late != late_few) wsy_free(late);
  for (pchange *c = list, *next; c; c = next) {
    next = c->next;
    pchange_free(c);
  }
}

static void unlink_open(engine *e, room *r) {
  for (room **pp = &e->pres_open; *pp; pp = &(*pp)->pnext)
    if (*pp == r) {
      *pp = r->pnext;
      break;
    }
  r->pnext = NULL;
}

void presence_batch_flush_room(engine *e, room *r) {
  if (!r->pch) return;
  unlink_open(e, r);
  flush_room(e, r);
  room_unload_if_idle(e, r); /* nothing is sent to it synchronously: no window again */
}

void presence_batch_flush_all(engine *e) {
  while (e->pres_open) presence_batch_flush_room(e, e->pres_open);
  uv_timer_stop(&e->pres_timer);
}

/* Every window that is due closes (within half a tick: the timer ticks
 * every interval); the others stay open. The timer stops once none is. */
static void on_timer(uv_timer_t *t) {
  engine *e = t->data;
  uint64_t soon = uv_now(e->loop) + e->cfg->presence_interval_ms / 2;
  room *open = e->pres_open;
  e->pres_open = NULL;
  while (open) {
    room *r = open;
    open = r->pnext;
    r->pnext = NULL;
    if (!r->pch) continue;
    if (r->pdue > soon) {
      r->pnext = e->pres_open;
      e->pres_open = r;
      continue;
    }
    flush_room(e, r);
    room_unload_if_idle(e, r);
  }
  if (!e->pres_open) uv_timer_stop(t);
}

void presence_batch_free(engine *e, room *r) {
  if (r->pch) unlink_open(e, r);
  for (pchange *c = r->pch, *next; c; c = next) {
    next = c->next;
    pchange_free(c);
  }
  r->pch = NULL;
  map_free(&r->pch_by);
}
