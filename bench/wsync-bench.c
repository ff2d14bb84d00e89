/* wsync-bench.c -- the load generator of wsync's benchmark suite.
 *
 * One thread, one epoll set, non-blocking sockets. It opens N WebSocket
 * connections spread over K rooms, makes P of them publishers, and measures
 * what comes back:
 *
 *   --proto broadcast   the plain broadcast protocol (/v1/broadcast?room=R):
 *                       the WebSocket message is the payload; every message
 *                       goes to every connection of the room, sender included.
 *                       wsync (--echo-endpoint) and the Node peer speak it.
 *   --proto wsync       the sync protocol on /v1/ws (docs/PROTOCOL.md):
 *                       hello, join, then publish (--mode ephemeral|stored) or
 *                       op set (--mode op); acks are timed too.
 *   --proto socketio    Socket.IO 4 over its WebSocket transport
 *                       (/socket.io/?EIO=4&transport=websocket), against the
 *                       relay peer bench/peers/socketio-node.mjs: engine.io
 *                       open, namespace connect "40", pings "2" answered "3",
 *                       42["join",ROOM] with an ack (ready at the ack), then
 *                       42["pub",ROOM,PAYLOAD] out and 42["msg",PAYLOAD] in.
 *
 * --pub-port P sends the publishers (connections 0..P-1) to port P and the
 * rest to --port: publishers on one node of a cluster, subscribers on another.
 * --alt-port P spreads every room's members over --port and P instead (with
 * --alt-rooms: the odd rooms on P, the even ones on --port). In a
 * cluster an op may answer stale (fenced out by another node's commit): it is
 * re-sent at once with the same cid, as clients do, and counted apart.
 * --server-pid may be given more than once: CPU and RSS are then the sums.
 *
 * Every message carries a marker "~B" followed by 40 hex digits: publisher id
 * (8), per-publisher sequence (16) and send time (16, CLOCK_MONOTONIC ns),
 * padded with 'x' to --size bytes. The receiver finds the marker, so the same
 * parser serves both protocols (the server preserves strings exactly).
 *
 * Correctness is tracked per (subscriber, publisher): the highest sequence
 * seen and a 64-bit bitmap below it give duplicates, out-of-order arrivals
 * and, at the end, losses (sent - distinct received). --check turns any of
 * them into exit status 1; make bench-smoke relies on that.
 *
 * Flow control ("max rate"): a publisher keeps at most --window messages in
 * flight, where a message leaves the window when every live member of its
 * room has received it (and, in the sync protocol, its ack has arrived). So
 * the generator never floods a server beyond window x members messages, and
 * a slow server shows as a lower rate, not as unbounded queues. --rate R
 * paces each publisher at R msg/s instead (still bounded by the window); the
 * timestamp is then the scheduled send time, so a stall of the generator or
 * of the server counts as latency (no coordinated omission).
 *
 * Two other shapes: --idle (scenario a: open connections, sample the server's
 * RSS before and after, per connection) and --catchup N (scenario f: write N
 * ops, then time a join with since {epoch, 0} until the whole joined is read).
 *
 * --deflate offers permessage-deflate (RFC 7692) as browsers do, compresses
 * what it sends when the server agreed, and inflates what comes with RSV1;
 * --fill words pads payloads with words instead of 'x' (padding of one letter
 * would compress far better than real data). The bytes of data frames
 * received while measuring are counted (wire_bytes_per_delivery), so
 * compression on and off can be compared on the wire.
 *
 * Cost discipline, so that the generator is not what it measures: one read
 * of up to 256 KiB per readiness event into a shared buffer, frames parsed
 * in place; output is appended to a per-connection buffer and written with
 * one write() per connection per loop pass, whatever the number of frames.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define READ_BUF (256 * 1024) /* one read per readiness event, at most this */
#define MAX_EVENTS 1024
#define MARKER_LEN 42 /* "~B" + 40 hex digits */

/* ---- small helpers ------------------------------------------------------ */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("wsync-bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) die("out of memory (%zu bytes)", n);
  return q;
}

static void *xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz ? sz : 1);
  if (!p) die("out of memory");
  return p;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rng32(void) { /* xorshift64*: masks and keys, not crypto */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

static const char HEX[] = "0123456789abcdef";
static void put_hex(char *dst, uint64_t v, int digits) {
  for (int i = digits - 1; i >= 0; i--, v >>= 4) dst[i] = HEX[v & 15];
}
/* 8 lowercase hex digits at s (any alignment) -> value; -1 when one is not
 * [0-9a-f]. Eight at a time (SWAR): this runs once per delivery. */
static int64_t hex8(const uint8_t *s) {
  uint64_t x;
  memcpy(&x, s, 8);
  uint64_t lo = x & 0x0F0F0F0F0F0F0F0Full;
  uint64_t val = lo + ((x & 0x4040404040404040ull) >> 6) * 9; /* 'a'-'f': low nibble 1-6, +9 */
  val = __builtin_bswap64(val);                               /* first digit in the top byte */
  val = (val | val >> 4) & 0x00FF00FF00FF00FFull;
  val = (val | val >> 8) & 0x0000FFFF0000FFFFull;
  val = (val | val >> 16) & 0x00000000FFFFFFFFull;
  /* validate by encoding back: only canonical lowercase hex survives the round trip */
  uint64_t e = val;
  e = (e | e << 16) & 0x0000FFFF0000FFFFull;
  e = (e | e << 8) & 0x00FF00FF00FF00FFull;
  e = (e | e << 4) & 0x0F0F0F0F0F0F0F0Full;
  uint64_t letters = ((e + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
  e = __builtin_bswap64(e + 0x3030303030303030ull + letters * 39);
  return e == x ? (int64_t)val : -1;
}

static int hex_fast(const uint8_t *s, int digits, uint64_t *out) {
  uint64_t v = 0;
  for (int i = 0; i < digits; i += 8) {
    int64_t h = hex8(s + i);
    if (h < 0) return -1;
    v = v << 32 | (uint64_t)h;
  }
  *out = v;
  return 0;
}

/* ---- log-bucketed histogram (ns) ---------------------------------------
 * Values below 32 have a bucket each; above, each power of two is cut in 32
 * buckets, so any value is known within 1/32 (about 3%). */

#define HSUB 32
#define HBUCKETS (61 * HSUB)
typedef struct {
  uint64_t b[HBUCKETS];
  uint64_t n, max, min;
  double sum;
} hist;

static unsigned hist_index(uint64_t v) {
  if (v < HSUB) return (unsigned)v;
  unsigned e = 63 - (unsigned)__builtin_clzll(v); /* >= 5 */
  unsigned m = (unsigned)(v >> (e - 5)) & (HSUB - 1);
  return (e - 4) * HSUB + m;
}
static void hist_bounds(unsigned i, uint64_t *lo, uint64_t *width) {
  if (i < HSUB) {
    *lo = i;
    *width = 1;
    return;
  }
  unsigned e = i / HSUB + 4, m = i % HSUB;
  *lo = (uint64_t)(HSUB + m) << (e - 5);
  *width = 1ull << (e - 5);
}
static void hist_add(hist *h, uint64_t v) {
  h->b[hist_index(v)]++;
  if (h->n == 0 || v < h->min) h->min = v;
  h->n++;
  if (v > h->max) h->max = v;
  h->sum += (double)v;
}
static double hist_pct(const hist *h, double pct) {
  if (h->n == 0) return 0;
  uint64_t want = (uint64_t)ceil(pct / 100.0 * (double)h->n), acc = 0;
  if (want == 0) want = 1;
  for (unsigned i = 0; i < HBUCKETS; i++) {
    acc += h->b[i];
    if (acc >= want) {
      uint64_t lo, w;
      hist_bounds(i, &lo, &w);
      double mid = (double)lo + (double)(w - 1) / 2.0;
      return mid > (double)h->max ? (double)h->max : mid;
    }
  }
  return (double)h->max;
}

/* ---- options -------------------------------------------------------------- */

enum { P_BROADCAST, P_WSYNC, P_SOCKETIO };
enum { M_EPHEMERAL, M_STORED, M_OP };

static struct {
  const char *host;
  int port;
  int pub_port; /* publishers connect here (0: --port) */
  int alt_port;  /* connection i goes here when i / rooms is odd (0: --port) */
  int alt_rooms; /* ... when its room is odd instead: each room on one node */
  int proto, mode;
  int conns, rooms, pubs, size, window;
  double rate; /* per publisher, msg/s; 0 = max */
  double warmup, duration, drain, settle;
  int server_pid;
  int extra_pids[7], nextra; /* further --server-pid: summed into the server's figures */
  int json, check, idle, quiet;
  int pipeline; /* wsync: join right behind hello, not after welcome */
  long catchup;
  double rejoin_for; /* catch-up: join again, one after another, for this long */
  int items;
  int concurrency;
  int recv_interval_ms;
  const char *hist_file;
  const char *prefix;
  const char *label;
  int healthz;
  int inject_loss, inject_dup; /* self-test of the checker: every Nth delivery */
  int spin;                    /* poll without sleeping (latency runs) */
  int idle_warm, idle_n;       /* idle: connections before the baseline, and measured ones */
  int deflate;                 /* offer permessage-deflate */
  int fill_words;              /* pad with words, not 'x' */
} opt = {
  .host = "127.0.0.1", .proto = P_BROADCAST, .mode = M_EPHEMERAL,
  .conns = 100, .rooms = 1, .pubs = 1, .size = 64, .window = 64,
  .warmup = 2, .duration = 5, .drain = 3, .settle = 1.5,
  .idle_warm = 100, .items = 100, .concurrency = 256, .recv_interval_ms = 1000, .prefix = "bench",
};

static void usage(void) {
  fputs(
    "usage: wsync-bench --port PORT [options]\n"
    "  --host H             server address (127.0.0.1)\n"
    "  --proto P            broadcast (/v1/broadcast) | wsync (/v1/ws)\n"
    "                       | socketio (Socket.IO 4, WebSocket transport)   [broadcast]\n"
    "  --pub-port P         publishers connect to port P, the others to --port\n"
    "  --alt-port P         connection i connects to P when i / rooms is odd: every\n"
    "                       room's members alternate between --port and P\n"
    "  --alt-rooms          with --alt-port: the odd rooms go to P, whole\n"
    "  --mode M             wsync: ephemeral | stored (publish) | op (set)  [ephemeral]\n"
    "  --conns N            connections                                     [100]\n"
    "  --rooms K            rooms; connection i joins room i % K             [1]\n"
    "  --pubs P             publishers (connections 0..P-1)                 [1]\n"
    "  --size B             payload bytes (wsync: the string inside data)   [64]\n"
    "  --rate R             msg/s per publisher; 0 = max rate               [0]\n"
    "  --window W           messages in flight per publisher                [64]\n"
    "  --warmup S, --duration S                                             [2, 5]\n"
    "  --drain S            after the run, wait for in-flight messages until\n"
    "                       S seconds pass without progress                 [3]\n"
    "  --server-pid PID     read the server's CPU and RSS from /proc/PID; given\n"
    "                       again (up to 8), the figures are the sums\n"
    "  --healthz            also read heap_bytes from the server's /healthz\n"
    "  --idle               scenario (a): connect, wait --settle S, report memory per connection\n"
    "  --idle-warm W        idle: open W connections before the baseline sample, so\n"
    "                       one-time costs (code pages, first allocations) are not counted [100]\n"
    "  --catchup N          scenario (f): write N ops (op set, --pubs writers, 1 room),\n"
    "                       then time a join with since {epoch, seq 0}\n"
    "  --rejoin-for S       catch-up: then join again (each with since, after the\n"
    "                       last part of the one before) for S seconds; reported\n"
    "                       as rejoins and their times (run another generator\n"
    "                       meanwhile to see what large joins cost other rooms)\n"
    "  --items M            op mode: distinct items written                 [100]\n"
    "  --concurrency C      connections being set up at once                [256]\n"
    "  --pipeline           wsync: send join right behind hello instead of after\n"
    "                       welcome (PROTOCOL.md 3.1: one round trip less)\n"
    "  --recv-interval MS   wsync: send recv about this often (0: never)    [1000]\n"
    "  --prefix S           room name prefix                                [bench]\n"
    "  --label S            name echoed in the report\n"
    "  --hist FILE          write the latency distribution (us, cumulative fraction)\n"
    "  --json               one JSON object on stdout\n"
    "  --check              exit 1 unless zero losses, duplicates, reorders, errors, closes\n"
    "  --quiet              no progress on stderr\n"
    "  --spin               never sleep in epoll (a core busy-polls; for latency runs)\n"
    "  --deflate            offer permessage-deflate; compress sends, inflate RSV1 frames\n"
    "  --fill F             payload padding: x | words                      [x]\n"
    "  --inject-loss N, --inject-dup N\n"
    "                       checker self-test: forget / double every Nth delivery\n",
    stderr);
  exit(2);
}

static void parse_opts(int argc, char **argv) {
  static const struct option lo[] = {
    {"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"proto", 1, 0, 'P'}, {"mode", 1, 0, 'm'},
    {"conns", 1, 0, 'n'}, {"rooms", 1, 0, 'k'}, {"pubs", 1, 0, 'u'}, {"size", 1, 0, 's'},
    {"rate", 1, 0, 'r'}, {"window", 1, 0, 'w'}, {"warmup", 1, 0, 'W'}, {"duration", 1, 0, 'd'},
    {"drain", 1, 0, 'D'}, {"settle", 1, 0, 'S'}, {"server-pid", 1, 0, 'i'}, {"json", 0, 0, 'j'},
    {"check", 0, 0, 'c'}, {"idle", 0, 0, 'I'}, {"quiet", 0, 0, 'q'}, {"catchup", 1, 0, 'C'}, {"rejoin-for", 1, 0, 'J'},
    {"pipeline", 0, 0, 'E'},
    {"items", 1, 0, 'M'}, {"concurrency", 1, 0, 'x'}, {"recv-interval", 1, 0, 'R'},
    {"hist", 1, 0, 'H'}, {"prefix", 1, 0, 'f'}, {"label", 1, 0, 'l'}, {"healthz", 0, 0, 'z'},
    {"spin", 0, 0, 'B'}, {"idle-warm", 1, 0, 'A'}, {"inject-loss", 1, 0, 'L'}, {"inject-dup", 1, 0, 'U'}, {"deflate", 0, 0, 'Z'}, {"fill", 1, 0, 'F'}, {"pub-port", 1, 0, 'O'}, {"alt-port", 1, 0, 'T'}, {"alt-rooms", 0, 0, 'V'}, {"help", 0, 0, '?'}, {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (ch) {
    case 'h': opt.host = optarg; break;
    case 'p': opt.port = atoi(optarg); break;
    case 'P':
      if (!strcmp(optarg, "broadcast")) opt.proto = P_BROADCAST;
      else if (!strcmp(optarg, "wsync")) opt.proto = P_WSYNC;
      else if (!strcmp(optarg, "socketio")) opt.proto = P_SOCKETIO;
      else usage();
      break;
    case 'm':
      if (!strcmp(optarg, "ephemeral")) opt.mode = M_EPHEMERAL;
      else if (!strcmp(optarg, "stored")) opt.mode = M_STORED;
      else if (!strcmp(optarg, "op")) opt.mode = M_OP;
      else usage();
      break;
    case 'n': opt.conns = atoi(optarg); break;
    case 'k': opt.rooms = atoi(optarg); break;
    case 'u': opt.pubs = atoi(optarg); break;
    case 's': opt.size = atoi(optarg); break;
    case 'r': opt.rate = atof(optarg); break;
    case 'w': opt.window = atoi(optarg); break;
    case 'W': opt.warmup = atof(optarg); break;
    case 'd': opt.duration = atof(optarg); break;
    case 'D': opt.drain = atof(optarg); break;
    case 'S': opt.settle = atof(optarg); break;
    case 'i':
      if (!opt.server_pid) opt.server_pid = atoi(optarg);
      else if (opt.nextra < (int)(sizeof opt.extra_pids / sizeof opt.extra_pids[0])) opt.extra_pids[opt.nextra++] = atoi(optarg);
      else die("--server-pid: at most 8");
      break;
    case 'O': opt.pub_port = atoi(optarg); break;
    case 'T': opt.alt_port = atoi(optarg); break;
    case 'V': opt.alt_rooms = 1; break;
    case 'j': opt.json = 1; break;
    case 'c': opt.check = 1; break;
    case 'I': opt.idle = 1; break;
    case 'q': opt.quiet = 1; break;
    case 'C': opt.catchup = atol(optarg); break;
    case 'J': opt.rejoin_for = atof(optarg); break;
    case 'E': opt.pipeline = 1; break;
    case 'M': opt.items = atoi(optarg); break;
    case 'x': opt.concurrency = atoi(optarg); break;
    case 'R': opt.recv_interval_ms = atoi(optarg); break;
    case 'H': opt.hist_file = optarg; break;
    case 'f': opt.prefix = optarg; break;
    case 'l': opt.label = optarg; break;
    case 'z': opt.healthz = 1; break;
    case 'B': opt.spin = 1; break;
    case 'A': opt.idle_warm = atoi(optarg); break;
    case 'L': opt.inject_loss = atoi(optarg); break;
    case 'U': opt.inject_dup = atoi(optarg); break;
    case 'Z': opt.deflate = 1; break;
    case 'F':
      if (!strcmp(optarg, "words")) opt.fill_words = 1;
      else if (strcmp(optarg, "x") != 0) usage();
      break;
    default: usage();
    }
  }
  if (opt.port <= 0 || opt.port > 65535) usage();
  if (opt.pub_port < 0 || opt.pub_port > 65535 || opt.alt_port < 0 || opt.alt_port > 65535) usage();
  if (opt.catchup > 0) { /* scenario (f) has a fixed shape */
    opt.proto = P_WSYNC;
    opt.mode = M_OP;
    opt.rooms = 1;
    if (opt.pubs < 1) opt.pubs = 1;
    opt.conns = opt.pubs;
  }
  if (opt.idle) {
    opt.pubs = 0;
    if (opt.idle_warm < 0) opt.idle_warm = 0;
    opt.idle_n = opt.conns;
    opt.conns += opt.idle_warm; /* the warm-up connections stay open */
  }
  if (opt.conns < 1 || opt.rooms < 1 || opt.rooms > opt.conns || opt.pubs < 0 || opt.pubs > opt.conns)
    die("need 1 <= rooms <= conns and 0 <= pubs <= conns");
  if (opt.window < 1) opt.window = 1;
  if (opt.concurrency < 1) opt.concurrency = 1;
  if (opt.items < 1) opt.items = 1;
  if (opt.size < MARKER_LEN) opt.size = MARKER_LEN;
  if (opt.size > 1 << 20) die("--size at most 1 MiB");
}

/* ---- state ------------------------------------------------------------------ */

enum { CS_IDLE, CS_CONNECTING, CS_UPGRADING, CS_HELLO, CS_JOINING, CS_READY, CS_CLOSED };

typedef struct {
  uint64_t next;     /* highest sequence seen + 1 (0: none yet) */
  uint64_t bits;     /* bit d: sequence next-1-d seen */
  uint64_t distinct; /* distinct sequences received */
} track;

typedef struct {
  int fd;
  int state;
  int room;
  int pub; /* publisher index, or -1 */
  uint8_t *in;
  size_t in_len, in_cap; /* bytes kept between reads (partial frame) */
  uint8_t deflate;       /* permessage-deflate agreed */
  uint8_t *out;
  size_t out_len, out_off, out_cap;
  int dirty, want_out;
  track *tr; /* one per publisher of the room, by local index */
  uint64_t ordinal, ordinal_confirmed; /* wsync: messages after welcome */
  uint64_t room_seq;                   /* op mode: the room's seq last seen (joined, then each op) */
  uint64_t t_start, t_join_sent;
} conn;

typedef struct {
  int conn, room, local;
  uint64_t next_seq;  /* next sequence to send */
  uint64_t done_seq;  /* every sequence below is complete */
  uint32_t *cnt;      /* receipts per in-flight sequence (ring of window) */
  uint64_t *sent_ns;  /* actual send time per in-flight sequence */
  uint64_t *ts_ns;    /* its marker's time (a re-send carries the same) */
  uint64_t *retry_at; /* op mode: when a stale op goes again (0: not waiting) */
  uint8_t *tries;     /* op mode: stale answers so far */
  uint64_t due_ns;    /* fixed rate: when the next one is due */
  uint64_t interval_ns;
  uint64_t acked;     /* acks received (op and publish modes) */
} pub;

static conn *conns;
static pub *pubs;
static int *room_live;     /* live (ready, not closed) members per room */
static int *room_npubs;    /* publishers per room */
static int **room_pubs;    /* publisher ids per room */
static int ep;
static struct sockaddr_in server_addr, pub_addr, alt_addr; /* --pub-port, --alt-port */

/* The port connection ci connects to: --pub-port, --alt-port or --port. */
static int conn_port(int ci) {
  if (conns[ci].pub >= 0 && opt.pub_port) return opt.pub_port;
  if (opt.alt_port && (opt.alt_rooms ? conns[ci].room : ci / opt.rooms) % 2 == 1) return opt.alt_port;
  return opt.port;
}
static uint8_t *rbuf;
static int *dirty_list, ndirty;
static char *scratch;
static char run_tag[16];
static char epoch[80];

enum { PH_CONNECT, PH_WARM, PH_MEASURE, PH_DRAIN, PH_SETTLE, PH_CATCHUP, PH_DONE };
static int phase = PH_CONNECT;
static int measuring; /* samples are recorded only in PH_MEASURE */

static struct {
  uint64_t sent, sent_total, deliveries, delivered_bytes, acks, errors, closes, unexpected;
  uint64_t wire_bytes; /* data frames received while measuring, headers included */
  uint64_t dups, ooo, foreign;
  uint64_t stale;      /* ops re-sent after a stale error (cluster mode) */
  uint64_t retries_waiting; /* of which not yet re-sent */
  uint64_t seq_breaks; /* op mode: an op whose room seq is not the last one + 1 */
  hist lat, ack_lat;
  uint64_t t_connect0, t_connected, t_upgraded_last;
  int nready, nconnecting, next_to_connect, nupgraded;
  uint64_t t_measure0, t_measure1;
  uint64_t catch_t0, catch_t1, catch_first, catch_bytes, catch_seq, catch_parts;
  int catch_recovered, catch_conn, catch_done, catch_more;
  /* --rejoin-for: the joins after the first, each timed to its last part */
  uint64_t rejoin_until, rejoins, rejoin_bytes;
  hist rejoin_lat;
  uint64_t catch_write_t0, catch_write_t1;
  int stalled;
  char first_error[256];
  char first_ooo[160]; /* the first delivery out of its publisher's order */
} st;

/* ---- /proc ------------------------------------------------------------------ */

typedef struct {
  double cpu_s;
  long rss_kib, hwm_kib;
} procinfo;

/* Samples at the edges of the measured interval (or of the idle wait). */
static struct {
  procinfo srv_before, srv0, srv1;
  double self0, self1;
  double mach0, mach1; /* busy CPU seconds of the whole machine (/proc/stat) */
  double irq0, irq1;   /* of which interrupts and softirqs (loopback TCP runs there) */
  long long heap0, heap1;
} smp = {.heap0 = -1, .heap1 = -1};

static int read_proc(int pid, procinfo *pi);
static int read_servers(procinfo *pi);
static double self_cpu(void);
static double machine_busy(double *irq) {
  FILE *f = fopen("/proc/stat", "r");
  unsigned long long v[8] = {0};
  if (!f) return 0;
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  if (n < 8) return 0;
  /* user nice system [idle iowait] irq softirq steal */
  *irq = (double)(v[5] + v[6]) / (double)sysconf(_SC_CLK_TCK);
  return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static void sample(procinfo *srv, double *self, double *mach, double *irq) {
  if (opt.server_pid) read_servers(srv);
  *self = self_cpu();
  *mach = machine_busy(irq);
}

static int read_proc(int pid, procinfo *pi) {
  char path[64], buf[4096];
  memset(pi, 0, sizeof *pi);
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return -1;
  /* fields after "pid (comm)": state(3) ... utime(14) stime(15) */
  unsigned long ut = 0, stt = 0;
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) != 2) return -1;
  pi->cpu_s = (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  f = fopen(path, "r");
  if (!f) return -1;
  while (fgets(buf, sizeof buf, f)) {
    if (!strncmp(buf, "VmRSS:", 6)) pi->rss_kib = atol(buf + 6);
    if (!strncmp(buf, "VmHWM:", 6)) pi->hwm_kib = atol(buf + 6);
  }
  fclose(f);
  return 0;
}

/* The --server-pid processes, summed (the nodes of a cluster). */
static int read_servers(procinfo *pi) {
  if (read_proc(opt.server_pid, pi) != 0) return -1;
  for (int i = 0; i < opt.nextra; i++) {
    procinfo x;
    if (read_proc(opt.extra_pids[i], &x) != 0) return -1;
    pi->cpu_s += x.cpu_s;
    pi->rss_kib += x.rss_kib;
    pi->hwm_kib += x.hwm_kib;
  }
  return 0;
}

static double self_cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

/* GET /healthz on a blocking socket (outside measured intervals): heap_bytes or -1. */
static long long healthz_heap(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct timeval tv = {2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) != 0) {
    close(fd);
    return -1;
  }
  const char req[] = "GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
  if (write(fd, req, sizeof req - 1) < 0) {
    close(fd);
    return -1;
  }
  char buf[8192];
  size_t got = 0;
  ssize_t r;
  while (got < sizeof buf - 1 && (r = read(fd, buf + got, sizeof buf - 1 - got)) > 0) got += (size_t)r;
  close(fd);
  buf[got] = 0;
  char *p = strstr(buf, "\"heap_bytes\":");
  return p ? atoll(p + 13) : -1;
}

/* ---- output ---------------------------------------------------------------- */

static void mark_dirty(int ci) {
  conn *c = &conns[ci];
  if (!c->dirty) {
    c->dirty = 1;
    dirty_list[ndirty++] = ci;
  }
}

static uint8_t *out_reserve(conn *c, size_t n) {
  if (c->out_off && c->out_off == c->out_len) c->out_off = c->out_len = 0;
  if (c->out_len + n > c->out_cap) {
    if (c->out_off) { /* compact before growing */
      memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
      c->out_len -= c->out_off;
      c->out_off = 0;
    }
    if (c->out_len + n > c->out_cap) {
      size_t cap = c->out_cap ? c->out_cap : 512;
      while (cap < c->out_len + n) cap *= 2;
      c->out = xrealloc(c->out, cap);
      c->out_cap = cap;
    }
  }
  return c->out + c->out_len;
}

/* ---- permessage-deflate (--deflate) ------------------------------------------- */

static z_stream zdef, zinf;
/* Inflated messages in zbuf, compressed ones in zout: a delivery being read
 * from zbuf may send (and compress) the publisher's next message. */
static uint8_t *zbuf, *zout;
static size_t zcap, zout_cap;

static void zbuf_reserve(size_t n) {
  if (zcap < n) {
    zcap = n;
    zbuf = xrealloc(zbuf, zcap);
  }
}

/* Compresses d[0..n) as one message without context takeover (the sync
 * flush's 00 00 ff ff removed); the result is in zout, its length returned. */
static size_t zcompress(const void *d, size_t n) {
  if (!zdef.state && deflateInit2(&zdef, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) die("deflateInit2");
  size_t need = deflateBound(&zdef, n) + 16;
  if (zout_cap < need) {
    zout_cap = need;
    zout = xrealloc(zout, zout_cap);
  }
  zdef.next_in = (Bytef *)(uintptr_t)d;
  zdef.avail_in = (uInt)n;
  zdef.next_out = zout;
  zdef.avail_out = (uInt)zout_cap;
  if (deflate(&zdef, Z_SYNC_FLUSH) != Z_OK || zdef.avail_in) die("deflate");
  size_t len = zout_cap - zdef.avail_out;
  deflateReset(&zdef);
  return len - 4;
}

/* Inflates a compressed message into zbuf; returns its length. */
static size_t zinflate(const uint8_t *d, size_t n) {
  if (!zinf.state && inflateInit2(&zinf, -15) != Z_OK) die("inflateInit2");
  static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
  size_t got = 0;
  for (int part = 0; part < 2; part++) {
    zinf.next_in = (Bytef *)(uintptr_t)(part ? tail : d);
    zinf.avail_in = (uInt)(part ? 4 : n);
    do {
      zbuf_reserve(got + 65536);
      zinf.next_out = zbuf + got;
      zinf.avail_out = (uInt)(zcap - got);
      int rc = inflate(&zinf, Z_SYNC_FLUSH);
      if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) die("inflate: bad data from the server");
      got = zcap - zinf.avail_out;
    } while (zinf.avail_out == 0);
  }
  inflateReset(&zinf);
  return got;
}

/* Appends one masked client frame (FIN set), compressed when the server
 * agreed to permessage-deflate and the message is data of 128 bytes or more. */
static void send_frame(int ci, int opcode, const void *payload, size_t len) {
  conn *c = &conns[ci];
  uint8_t rsv1 = 0;
  if (c->deflate && (opcode == 1 || opcode == 2) && len >= 128) {
    len = zcompress(payload, len);
    payload = zout;
    rsv1 = 0x40;
  }
  uint8_t *p = out_reserve(c, len + 14), *h = p;
  *p++ = (uint8_t)(0x80 | rsv1 | opcode);
  if (len < 126) {
    *p++ = (uint8_t)(0x80 | len);
  } else if (len < 65536) {
    *p++ = 0x80 | 126;
    *p++ = (uint8_t)(len >> 8);
    *p++ = (uint8_t)len;
  } else {
    *p++ = 0x80 | 127;
    for (int i = 7; i >= 0; i--) *p++ = (uint8_t)((uint64_t)len >> (8 * i));
  }
  uint32_t key = rng32();
  uint8_t mk[4];
  memcpy(mk, &key, 4);
  memcpy(p, mk, 4);
  p += 4;
  const uint8_t *src = payload;
  for (size_t i = 0; i < len; i++) p[i] = src[i] ^ mk[i & 3];
  c->out_len += (size_t)(p - h) + len;
  mark_dirty(ci);
}

static void send_raw(int ci, const void *data, size_t len) {
  conn *c = &conns[ci];
  memcpy(out_reserve(c, len), data, len);
  c->out_len += len;
  mark_dirty(ci);
}

static void conn_closed(int ci, const char *why);

static void set_events(int ci, uint32_t evs) {
  struct epoll_event ev = {.events = evs, .data.u32 = (uint32_t)ci};
  if (epoll_ctl(ep, EPOLL_CTL_MOD, conns[ci].fd, &ev) != 0) die("epoll_ctl: %s", strerror(errno));
}

static void flush_conn(int ci) {
  conn *c = &conns[ci];
  if (c->state == CS_CLOSED || c->state == CS_CONNECTING) return;
  while (c->out_off < c->out_len) {
    ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (w > 0) {
      c->out_off += (size_t)w;
      if (c->out_off < c->out_len) break; /* the kernel took less: wait for EPOLLOUT */
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    conn_closed(ci, "write failed");
    return;
  }
  int want = c->out_off < c->out_len;
  if (want != c->want_out) {
    c->want_out = want;
    set_events(ci, EPOLLIN | (want ? EPOLLOUT : 0));
  }
  if (!want) c->out_off = c->out_len = 0;
}

static void flush_dirty(void) {
  for (int i = 0; i < ndirty; i++) {
    int ci = dirty_list[i];
    conns[ci].dirty = 0;
    flush_conn(ci);
  }
  ndirty = 0;
}

/* ---- publishing -------------------------------------------------------------- */

static void room_name(char *dst, size_t cap, int room) {
  if (opt.proto == P_WSYNC) snprintf(dst, cap, "%s:%d", opt.prefix, room);
  else snprintf(dst, cap, "%s-%d", opt.prefix, room);
}

/* Writes the marker and padding: exactly opt.size bytes. */
static void put_marker(char *dst, uint32_t pid, uint64_t seq, uint64_t ts) {
  dst[0] = '~';
  dst[1] = 'B';
  put_hex(dst + 2, pid, 8);
  put_hex(dst + 10, seq, 16);
  put_hex(dst + 26, ts, 16);
  if (!opt.fill_words) {
    memset(dst + MARKER_LEN, 'x', (size_t)opt.size - MARKER_LEN);
    return;
  }
  /* Words of a board app, picked by a generator seeded from the sequence:
   * text that deflates about as well as the titles and notes of real ops. */
  static const char *const words[] = {
    "card", "board", "todo", "doing", "done", "review", "title", "note", "alice", "bob", "carol",
    "the", "a", "to", "of", "and", "in", "for", "meeting", "design", "fix", "bug", "release",
    "monday", "tuesday", "color", "#ffcc00", "#3366ff", "x", "y", "width", "height", "42", "17",
    "2026-12-06", "urgent", "later", "draft", "ship", "test", "deploy", "notes", "idea", "plan"};
  uint64_t r = seq * 0x9e3779b97f4a7c15ull + pid + 1;
  size_t at = MARKER_LEN, end = (size_t)opt.size;
  while (at < end) {
    r ^= r >> 12, r ^= r << 25, r ^= r >> 27;
    const char *w = words[(r * 2685821657736338717ull >> 40) % (sizeof words / sizeof words[0])];
    dst[at++] = ' ';
    for (; *w && at < end; w++) dst[at++] = *w;
  }
}

static int acked_mode(void) { return opt.proto == P_WSYNC; }

/* Writes publisher pi's message seq (marker time ts) into scratch; returns its length. */
static size_t build_msg(int pi, uint64_t seq, uint64_t ts) {
  pub *p = &pubs[pi];
  char rn[96];
  size_t len;
  room_name(rn, sizeof rn, p->room);
  if (opt.proto == P_BROADCAST) {
    put_marker(scratch, (uint32_t)pi, seq, ts);
    len = (size_t)opt.size;
  } else if (opt.proto == P_SOCKETIO) { /* an event packet: 42["pub",ROOM,PAYLOAD] */
    int n = snprintf(scratch, 512, "42[\"pub\",\"%s\",\"", rn);
    put_marker(scratch + n, (uint32_t)pi, seq, ts);
    memcpy(scratch + n + opt.size, "\"]", 2);
    len = (size_t)n + (size_t)opt.size + 2;
  } else if (opt.mode == M_OP) {
    uint64_t item = (seq * (uint64_t)(opt.pubs ? opt.pubs : 1) + (uint64_t)pi) % (uint64_t)opt.items;
    int n = snprintf(scratch, 512,
                     "{\"type\":\"op\",\"id\":%" PRIu64 ",\"room\":\"%s\",\"cid\":\"c%s.%" PRIu64
                     "\",\"op\":{\"kind\":\"set\",\"item\":\"i%" PRIu64 "\",\"fields\":{\"v\":\"",
                     seq, rn, run_tag, seq, item);
    put_marker(scratch + n, (uint32_t)pi, seq, ts);
    memcpy(scratch + n + opt.size, "\"}}}", 4);
    len = (size_t)n + (size_t)opt.size + 4;
  } else {
    int n = snprintf(scratch, 512, "{\"type\":\"publish\",\"id\":%" PRIu64 ",\"room\":\"%s\",\"data\":{\"b\":\"",
                     seq, rn);
    put_marker(scratch + n, (uint32_t)pi, seq, ts);
    const char *tail = opt.mode == M_EPHEMERAL ? "\"},\"ephemeral\":true}" : "\"},\"ephemeral\":false}";
    size_t tl = strlen(tail);
    memcpy(scratch + n + opt.size, tail, tl);
    len = (size_t)n + (size_t)opt.size + tl;
  }
  return len;
}

static void pub_send(int pi, uint64_t ts, uint64_t now) {
  pub *p = &pubs[pi];
  uint64_t seq = p->next_seq;
  send_frame(p->conn, 1, scratch, build_msg(pi, seq, ts));
  p->cnt[seq % (uint64_t)opt.window] = 0;
  p->sent_ns[seq % (uint64_t)opt.window] = now;
  p->ts_ns[seq % (uint64_t)opt.window] = ts;
  p->retry_at[seq % (uint64_t)opt.window] = 0;
  p->tries[seq % (uint64_t)opt.window] = 0;
  p->next_seq++;
  st.sent_total++;
  if (measuring) st.sent++;
}

/* A sequence is complete when every live member got it (and its ack came). */
static void pub_advance(pub *p) {
  uint32_t need = (uint32_t)room_live[p->room] + (acked_mode() ? 1u : 0u);
  while (p->done_seq < p->next_seq && p->cnt[p->done_seq % (uint64_t)opt.window] >= need) p->done_seq++;
}

static void pub_receipt(pub *p, uint64_t seq) {
  if (seq < p->done_seq || seq >= p->next_seq) return;
  p->cnt[seq % (uint64_t)opt.window]++;
  if (seq == p->done_seq) pub_advance(p);
}

static int writes_open(void) {
  if (phase == PH_WARM || phase == PH_MEASURE) return 1;
  return phase == PH_CATCHUP && st.catch_write_t1 == 0;
}

/* Stale ops whose wait is over go again (an ack may not come otherwise, so
 * this runs in every phase, the drain included). */
static void resend_due(uint64_t now) {
  for (int i = 0; i < opt.pubs && st.retries_waiting; i++) {
    pub *p = &pubs[i];
    for (uint64_t seq = p->done_seq; seq < p->next_seq; seq++) {
      uint64_t slot = seq % (uint64_t)opt.window;
      if (!p->retry_at[slot] || p->retry_at[slot] > now) continue;
      p->retry_at[slot] = 0;
      st.retries_waiting--;
      if (conns[p->conn].state == CS_READY) send_frame(p->conn, 1, scratch, build_msg(i, seq, p->ts_ns[slot]));
    }
  }
}

static void publish_due(uint64_t now) {
  if (st.retries_waiting) resend_due(now);
  if (!writes_open()) return;
  for (int i = 0; i < opt.pubs; i++) {
    pub *p = &pubs[i];
    if (conns[p->conn].state != CS_READY) continue;
    if (phase == PH_CATCHUP) {
      uint64_t quota = (uint64_t)opt.catchup / (uint64_t)opt.pubs + ((uint64_t)i < (uint64_t)opt.catchup % (uint64_t)opt.pubs);
      while (p->next_seq - p->done_seq < (uint64_t)opt.window && p->next_seq < quota) pub_send(i, now, now);
      continue;
    }
    if (opt.rate <= 0) {
      while (p->next_seq - p->done_seq < (uint64_t)opt.window) pub_send(i, now, now);
    } else {
      while (p->due_ns <= now && p->next_seq - p->done_seq < (uint64_t)opt.window) {
        pub_send(i, p->due_ns, now);
        p->due_ns += p->interval_ns;
      }
    }
  }
}

/* ---- receiving ----------------------------------------------------------------- */

/* Records sequence seq of one (subscriber, publisher) pair; 0 for a duplicate. */
static int on_track(track *t, uint64_t seq) {
  if (seq >= t->next) {
    uint64_t shift = seq - t->next + 1;
    if (seq != t->next) st.ooo++; /* a gap: this one came early */
    t->bits = shift >= 64 ? 0 : t->bits << shift;
    t->bits |= 1;
    t->next = seq + 1;
    t->distinct++;
  } else {
    uint64_t d = t->next - 1 - seq;
    if (d < 64 && (t->bits >> d & 1)) {
      st.dups++;
      return 0;
    }
    if (d < 64) t->bits |= 1ull << d;
    t->distinct++;
    st.ooo++; /* late */
  }
  return 1;
}

static void on_delivery(int ci, const uint8_t *m, uint64_t now, size_t msg_len) {
  conn *c = &conns[ci];
  uint64_t pid, seq, ts;
  if (hex_fast(m + 2, 8, &pid) || hex_fast(m + 10, 16, &seq) || hex_fast(m + 26, 16, &ts) ||
      pid >= (uint64_t)opt.pubs || pubs[pid].room != c->room) {
    st.foreign++;
    return;
  }
  pub *p = &pubs[pid];
  track *t = &c->tr[p->local];
  static uint64_t injected;
  int inject = (opt.inject_loss || opt.inject_dup) && ++injected % (uint64_t)(opt.inject_loss + opt.inject_dup) == 0;
  if (inject && opt.inject_loss) { /* the window still moves; only the checker misses it */
    pub_receipt(p, seq);
    return;
  }
  uint64_t ooo = st.ooo, want = t->next;
  int fresh = on_track(t, seq);
  if (st.ooo != ooo && !st.first_ooo[0])
    snprintf(st.first_ooo, sizeof st.first_ooo,
             "connection %d (room %d, room seq %" PRIu64 "): publisher %" PRIu64 " seq %" PRIu64 ", expected %" PRIu64, ci,
             c->room, c->room_seq, pid, seq, want);
  if (inject) (void)on_track(t, seq); /* the checker must see a duplicate */
  if (!fresh) return;
  if (measuring) {
    st.deliveries++;
    st.delivered_bytes += msg_len;
    hist_add(&st.lat, now > ts ? now - ts : 0);
  }
  pub_receipt(p, seq);
}

static const uint8_t *find_marker(const uint8_t *d, size_t len) {
  const uint8_t *end = d + len;
  while (d + MARKER_LEN <= end) {
    const uint8_t *q = memchr(d, '~', (size_t)(end - d));
    if (!q || q + MARKER_LEN > end) return NULL;
    if (q[1] == 'B') return q;
    d = q + 1;
  }
  return NULL;
}

/* JSON value after "key": (a bare integer), or -1. */
static long long json_int_after(const uint8_t *d, size_t len, const char *key) {
  size_t kl = strlen(key);
  const uint8_t *p = memmem(d, len, key, kl);
  if (!p) return -1;
  p += kl;
  const uint8_t *end = d + len;
  if (p >= end || !isdigit(*p)) return -1;
  long long v = 0;
  while (p < end && isdigit(*p)) v = v * 10 + (*p++ - '0');
  return v;
}

static void send_join(int ci, int with_since);

/* The catch-up connection's join comes as joined, then, when joined says
 * "more": true, as snapshot or catchup parts until one says "more": false
 * (PROTOCOL.md 6.3): a join is timed to its last part. With --rejoin-for
 * the next join goes as soon as one is complete. */
static struct {
  uint64_t first, bytes, parts;
  int busy;
} cj;

static void catch_part(const uint8_t *d, size_t len, uint64_t now, int first) {
  if (first) {
    cj.first = now;
    cj.bytes = 0;
    cj.parts = 0;
    if (!st.catch_done) {
      st.catch_recovered = memmem(d, len, "\"recovered\":true", 16) != NULL;
      long long s = json_int_after(d, len, "\"seq\":");
      st.catch_seq = s < 0 ? 0 : (uint64_t)s;
    }
  } else if (!cj.busy || !st.catch_more) {
    st.unexpected++; /* a part after the last one */
    return;
  }
  cj.bytes += len;
  cj.parts++;
  st.catch_more = memmem(d, len, "\"more\":true", 11) != NULL;
  if (st.catch_more) return;
  cj.busy = 0;
  if (!st.catch_done) {
    st.catch_done = 1;
    st.catch_t1 = now;
    st.catch_first = cj.first;
    st.catch_bytes = cj.bytes;
    st.catch_parts = cj.parts;
  } else {
    st.rejoins++;
    st.rejoin_bytes += cj.bytes;
    hist_add(&st.rejoin_lat, now - conns[st.catch_conn].t_join_sent);
  }
  if (now < st.rejoin_until) {
    cj.busy = 1;
    send_join(st.catch_conn, 1);
  }
}

static void on_wsync_text(int ci, const uint8_t *d, size_t len, uint64_t now) {
  conn *c = &conns[ci];
  /* the server writes "type" first: {"type":"... */
  const uint8_t *t = d + 9;
  size_t tl = len > 9 ? len - 9 : 0;
  /* Ordinals count what follows the welcome (PROTOCOL.md 3.4); with
   * --pipeline the welcome itself arrives in CS_JOINING. */
  if (c->state >= CS_JOINING && !(tl >= 8 && !memcmp(t, "welcome\"", 8))) c->ordinal++;
  if (tl >= 8 && !memcmp(t, "message\"", 8)) {
    const uint8_t *m = find_marker(d, len);
    if (m) on_delivery(ci, m, now, len);
    else st.unexpected++;
  } else if (tl >= 3 && !memcmp(t, "op\"", 3)) {
    /* The room's entries arrive in seq order, one by one: a re-sent op may
     * overtake its publisher's later ones, but never a room seq. */
    long long rs = json_int_after(d, len, "\"seq\":");
    if (rs < 0 || (uint64_t)rs != c->room_seq + 1) st.seq_breaks++;
    if (rs >= 0) c->room_seq = (uint64_t)rs;
    const uint8_t *m = find_marker(d, len);
    if (m) on_delivery(ci, m, now, len);
    else st.unexpected++;
  } else if (tl >= 4 && !memcmp(t, "ack\"", 4)) {
    long long re = json_int_after(d, len, "\"re\":");
    if (c->pub < 0 || re < 0) {
      st.unexpected++;
      return;
    }
    pub *p = &pubs[c->pub];
    uint64_t seq = (uint64_t)re;
    if (seq >= p->done_seq && seq < p->next_seq) {
      p->acked++;
      if (measuring) {
        st.acks++;
        hist_add(&st.ack_lat, now - p->sent_ns[seq % (uint64_t)opt.window]);
      }
      pub_receipt(p, seq);
    } else {
      st.unexpected++;
    }
  } else if (tl >= 8 && !memcmp(t, "welcome\"", 8)) {
    if (c->state == CS_HELLO) {
      c->state = CS_JOINING;
      send_join(ci, ci == st.catch_conn && phase == PH_CATCHUP);
    }
  } else if (tl >= 7 && !memcmp(t, "joined\"", 7)) {
    if (ci == st.catch_conn && phase == PH_CATCHUP) {
      c->state = CS_READY;
      catch_part(d, len, now, 1);
      return;
    }
    if (c->state != CS_JOINING) return;
    c->state = CS_READY;
    const uint8_t *e = memmem(d, len, "\"epoch\":\"", 9);
    if (e && !epoch[0]) {
      e += 9;
      size_t n = 0;
      while (e + n < d + len && e[n] != '"' && n < sizeof epoch - 1) n++;
      memcpy(epoch, e, n);
      epoch[n] = 0;
    }
    long long js = json_int_after(d, len, "\"seq\":");
    c->room_seq = js < 0 ? 0 : (uint64_t)js;
    room_live[c->room]++;
    st.nready++;
    st.nconnecting--;
  } else if (tl >= 6 && !memcmp(t, "error\"", 6)) {
    /* Cluster mode: a batch fenced out by another node's commit answers
     * stale; the op goes again with the same id, cid and marker after the
     * JS client's wait (random, below 10 ms x tries, tries capped at 10:
     * clients/js/wsync.js). Its ack latency counts from the first send. */
    long long re = json_int_after(d, len, "\"re\":");
    if (c->pub >= 0 && re >= 0 && memmem(d, len, "\"code\":\"stale\"", 14)) {
      pub *p = &pubs[c->pub];
      uint64_t seq = (uint64_t)re, slot = seq % (uint64_t)opt.window;
      if (seq >= p->done_seq && seq < p->next_seq) {
        st.stale++;
        if (p->tries[slot] < 255) p->tries[slot]++;
        uint32_t span = 10u * (p->tries[slot] < 10 ? p->tries[slot] : 10u);
        p->retry_at[slot] = now + (uint64_t)(rng32() % span) * 1000000ull + 1;
        st.retries_waiting++;
        return;
      }
    }
    st.errors++;
    if (!st.first_error[0]) snprintf(st.first_error, sizeof st.first_error, "%.*s", (int)(len > 200 ? 200 : len), d);
  } else if (ci == st.catch_conn && ((tl >= 9 && !memcmp(t, "snapshot\"", 9)) || (tl >= 8 && !memcmp(t, "catchup\"", 8)))) {
    catch_part(d, len, now, 0);
  }
  /* presence, pong and the rest: counted in the ordinal only */
}

/* Socket.IO 4: one engine.io packet per WebSocket message. Its first digit
 * is the engine.io type (0 open, 1 close, 2 ping, 4 message); a message's
 * second digit is the Socket.IO type (0 connect, 1 disconnect, 2 event,
 * 3 ack, 4 connect error). */
static void on_sio_text(int ci, const uint8_t *d, size_t len, uint64_t now) {
  conn *c = &conns[ci];
  if (len >= 2 && d[0] == '4' && d[1] == '2') { /* 42["msg",PAYLOAD] */
    const uint8_t *m = find_marker(d, len);
    if (m && len > 9 && !memcmp(d + 2, "[\"msg\",", 7)) on_delivery(ci, m, now, len);
    else st.unexpected++;
  } else if (len == 1 && d[0] == '2') {
    send_frame(ci, 1, "3", 1);
  } else if (len >= 1 && d[0] == '0') { /* engine.io open: connect to the main namespace */
    if (c->state == CS_HELLO) send_frame(ci, 1, "40", 2);
    else st.unexpected++;
  } else if (len >= 2 && d[0] == '4' && d[1] == '0') { /* namespace connected: join with ack id 0 */
    if (c->state != CS_HELLO) {
      st.unexpected++;
      return;
    }
    char rn[96], msg[160];
    room_name(rn, sizeof rn, c->room);
    int n = snprintf(msg, sizeof msg, "420[\"join\",\"%s\"]", rn);
    c->state = CS_JOINING;
    c->t_join_sent = now_ns();
    send_frame(ci, 1, msg, (size_t)n);
  } else if (len >= 3 && d[0] == '4' && d[1] == '3' && d[2] == '0') { /* the join's ack */
    if (c->state != CS_JOINING) {
      st.unexpected++;
      return;
    }
    c->state = CS_READY;
    room_live[c->room]++;
    st.nready++;
    st.nconnecting--;
  } else if (len >= 2 && d[0] == '4' && (d[1] == '1' || d[1] == '4')) {
    st.errors++;
    if (!st.first_error[0]) snprintf(st.first_error, sizeof st.first_error, "%.*s", (int)(len > 200 ? 200 : len), d);
  } else if (len >= 1 && d[0] == '1') {
    conn_closed(ci, "engine.io close packet");
  } else {
    st.unexpected++;
  }
}

static void on_text(int ci, const uint8_t *d, size_t len, uint64_t now) {
  if (opt.proto == P_WSYNC) {
    on_wsync_text(ci, d, len, now);
    return;
  }
  if (opt.proto == P_SOCKETIO) {
    on_sio_text(ci, d, len, now);
    return;
  }
  if (len >= MARKER_LEN && d[0] == '~' && d[1] == 'B') on_delivery(ci, d, now, len);
  else st.unexpected++;
}

/* Parses whole frames from d[0..len); returns the bytes consumed. *need is
 * set to the total size of an incomplete frame when its header is known. */
static size_t parse_frames(int ci, uint8_t *d, size_t len, uint64_t now, size_t *need) {
  size_t off = 0;
  *need = 0;
  while (off + 2 <= len) {
    uint8_t b0 = d[off], b1 = d[off + 1];
    uint64_t pl = b1 & 0x7f;
    size_t hl = 2;
    if (pl == 126) {
      if (off + 4 > len) break;
      pl = (uint64_t)d[off + 2] << 8 | d[off + 3];
      hl = 4;
    } else if (pl == 127) {
      if (off + 10 > len) break;
      pl = 0;
      for (int i = 0; i < 8; i++) pl = pl << 8 | d[off + 2 + i];
      hl = 10;
    }
    if (b1 & 0x80) hl += 4; /* servers do not mask; tolerate it anyway */
    if (off + hl + pl > len) {
      *need = hl + (size_t)pl;
      break;
    }
    uint8_t *payload = d + off + hl;
    int opcode = b0 & 0x0f;
    if (opcode == 1 || opcode == 2) {
      if (measuring) st.wire_bytes += hl + pl;
      if (!(b0 & 0x80)) st.unexpected++; /* fragmented: not produced by the servers under test */
      else if (b0 & 0x40) {
        if (!conns[ci].deflate) st.unexpected++;
        size_t n = zinflate(payload, (size_t)pl);
        on_text(ci, zbuf, n, now);
      } else on_text(ci, payload, (size_t)pl, now);
    } else if (opcode == 9) {
      send_frame(ci, 10, payload, (size_t)pl);
    } else if (opcode == 8) {
      unsigned code = pl >= 2 ? (unsigned)payload[0] << 8 | payload[1] : 1005;
      char why[64];
      snprintf(why, sizeof why, "server sent close %u", code);
      conn_closed(ci, why);
      return len;
    } else if (opcode != 10) {
      st.unexpected++;
    }
    off += hl + (size_t)pl;
    if (conns[ci].state == CS_CLOSED) return len;
  }
  return off;
}

static void keep_tail(conn *c, const uint8_t *d, size_t n, size_t need) {
  size_t cap = need > n ? need : n;
  if (cap < 4096) cap = 4096;
  if (c->in_cap < cap) {
    c->in = xrealloc(c->in, cap);
    c->in_cap = cap;
  }
  memmove(c->in, d, n);
  c->in_len = n;
}

static int on_upgrade_bytes(int ci, uint8_t *d, size_t len, uint64_t now);

static void on_readable(int ci, uint64_t now) {
  conn *c = &conns[ci];
  uint8_t *base;
  size_t room;
  if (c->in_len == 0) {
    base = rbuf;
    room = READ_BUF;
  } else { /* a partial frame waits: read behind it, in its own buffer */
    if (c->in_cap - c->in_len < 65536) {
      c->in_cap = c->in_cap * 2 > c->in_len + 65536 ? c->in_cap * 2 : c->in_len + 65536;
      c->in = xrealloc(c->in, c->in_cap);
    }
    base = c->in;
    room = c->in_cap - c->in_len;
    if (room > READ_BUF) room = READ_BUF;
  }
  uint8_t *dst = base == rbuf ? rbuf : c->in + c->in_len;
  ssize_t r = read(c->fd, dst, room);
  now = now_ns(); /* per read, not per epoll batch: a long batch must not hide latency */
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    conn_closed(ci, "read failed");
    return;
  }
  if (r == 0) {
    conn_closed(ci, "server closed the connection");
    return;
  }
  size_t total = (base == rbuf ? 0 : c->in_len) + (size_t)r;
  if (c->state == CS_UPGRADING) {
    if (base == rbuf) { /* the response may span reads: keep it whole */
      keep_tail(c, rbuf, (size_t)r, 0);
      total = c->in_len;
    } else {
      c->in_len = total;
    }
    on_upgrade_bytes(ci, c->in, total, now);
    return;
  }
  size_t need, used = parse_frames(ci, base, total, now, &need);
  if (c->state == CS_CLOSED) return;
  if (used < total) keep_tail(c, base + used, total - used, need);
  else c->in_len = 0;
}

/* ---- connections ---------------------------------------------------------------- */

static void b64(char *dst, const uint8_t *src, size_t n) {
  static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i, j = 0;
  for (i = 0; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
    dst[j++] = T[v >> 18];
    dst[j++] = T[v >> 12 & 63];
    dst[j++] = T[v >> 6 & 63];
    dst[j++] = T[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)src[i] << 16 | (i + 1 < n ? (uint32_t)src[i + 1] << 8 : 0);
    dst[j++] = T[v >> 18];
    dst[j++] = T[v >> 12 & 63];
    dst[j++] = i + 1 < n ? T[v >> 6 & 63] : '=';
    dst[j++] = '=';
  }
  dst[j] = 0;
}

static void start_connect(int ci) {
  conn *c = &conns[ci];
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket: %s (raise the fd limit?)", strerror(errno));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->fd = fd;
  c->t_start = now_ns();
  c->state = CS_CONNECTING;
  st.nconnecting++;
  struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)ci};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl: %s", strerror(errno));
  int port = conn_port(ci);
  const struct sockaddr_in *to = port == opt.port ? &server_addr : port == opt.pub_port ? &pub_addr : &alt_addr;
  if (connect(fd, (const struct sockaddr *)to, sizeof *to) != 0 && errno != EINPROGRESS)
    die("connect: %s", strerror(errno));
}

static void on_connected(int ci) {
  conn *c = &conns[ci];
  int err = 0;
  socklen_t el = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
  int port = conn_port(ci);
  if (err) die("connect to %s:%d: %s", opt.host, port, strerror(err));
  c->state = CS_UPGRADING;
  uint8_t key[16];
  for (int i = 0; i < 16; i += 4) {
    uint32_t r = rng32();
    memcpy(key + i, &r, 4);
  }
  char k64[32], rn[96], req[640];
  b64(k64, key, 16);
  /* What Chromium offers. */
  const char *ext = opt.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "";
  int n;
  if (opt.proto == P_BROADCAST) {
    room_name(rn, sizeof rn, c->room);
    n = snprintf(req, sizeof req,
                 "GET /v1/broadcast?room=%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                 rn, opt.host, port, k64, ext);
  } else if (opt.proto == P_SOCKETIO) {
    n = snprintf(req, sizeof req,
                 "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                 opt.host, port, k64, ext);
  } else {
    n = snprintf(req, sizeof req,
                 "GET /v1/ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                 opt.host, port, k64, ext);
  }
  c->want_out = 1; /* registered for EPOLLOUT while connecting */
  send_raw(ci, req, (size_t)n);
}

static void send_join(int ci, int with_since) {
  conn *c = &conns[ci];
  char rn[96], msg[320];
  room_name(rn, sizeof rn, c->room);
  int n;
  if (with_since)
    n = snprintf(msg, sizeof msg, "{\"type\":\"join\",\"id\":\"j\",\"room\":\"%s\",\"since\":{\"epoch\":\"%s\",\"seq\":0}}",
                 rn, epoch);
  else
    n = snprintf(msg, sizeof msg, "{\"type\":\"join\",\"id\":\"j\",\"room\":\"%s\"}", rn);
  c->t_join_sent = now_ns();
  if (with_since && !st.catch_done) st.catch_t0 = c->t_join_sent;
  send_frame(ci, 1, msg, (size_t)n);
}

static int on_upgrade_bytes(int ci, uint8_t *d, size_t len, uint64_t now) {
  conn *c = &conns[ci];
  uint8_t *end = memmem(d, len, "\r\n\r\n", 4);
  if (!end) {
    if (len > 16384) die("handshake response too long");
    return 0;
  }
  if (len < 12 || memcmp(d, "HTTP/1.1 101", 12) != 0) {
    char *eol = memchr(d, '\r', len);
    die("upgrade refused: %.*s", (int)(eol ? eol - (char *)d : 40), d);
  }
  size_t hl = (size_t)(end + 4 - d);
  if (opt.deflate) {
    c->deflate = memmem(d, hl, "permessage-deflate", 18) != NULL;
    if (!c->deflate && st.nupgraded == 0) fprintf(stderr, "wsync-bench: --deflate: the server declined permessage-deflate\n");
  }
  st.nupgraded++;
  st.t_upgraded_last = now;
  if (opt.proto == P_SOCKETIO) {
    c->state = CS_HELLO; /* until the engine.io open packet */
  } else if (opt.proto == P_WSYNC) {
    c->state = CS_HELLO;
    char msg[160];
    int n = ci == st.catch_conn && phase == PH_CATCHUP
                ? snprintf(msg, sizeof msg, "{\"type\":\"hello\",\"user\":\"ucatch\",\"device\":\"dcatch%s\"}", run_tag)
                : snprintf(msg, sizeof msg, "{\"type\":\"hello\",\"user\":\"u%d\",\"device\":\"d%d.%s\"}", ci, ci, run_tag);
    send_frame(ci, 1, msg, (size_t)n);
    if (opt.pipeline && !(ci == st.catch_conn && phase == PH_CATCHUP)) {
      c->state = CS_JOINING; /* welcome then joined come in one flight */
      send_join(ci, 0);
    }
  } else {
    c->state = CS_READY;
    room_live[c->room]++;
    st.nready++;
  }
  size_t rest = len - hl;
  c->in_len = 0;
  if (rest) { /* frames right behind the response */
    uint8_t *tmp = xcalloc(1, rest);
    memcpy(tmp, d + hl, rest);
    size_t need, used = parse_frames(ci, tmp, rest, now, &need);
    if (c->state != CS_CLOSED && used < rest) keep_tail(c, tmp + used, rest - used, need);
    free(tmp);
  }
  if (opt.proto == P_BROADCAST) st.nconnecting--; /* wsync: at joined */
  return 1;
}

static void conn_closed(int ci, const char *why) {
  conn *c = &conns[ci];
  if (c->state == CS_CLOSED) return;
  int was_ready = c->state == CS_READY;
  if (!was_ready && phase == PH_CONNECT) die("connection %d: %s during setup", ci, why);
  c->state = CS_CLOSED;
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
  if (phase != PH_DONE) {
    st.closes++;
    if (!opt.quiet && st.closes <= 5) fprintf(stderr, "wsync-bench: connection %d: %s\n", ci, why);
  }
  if (was_ready && ci != st.catch_conn) {
    room_live[c->room]--;
    for (int i = 0; i < room_npubs[c->room]; i++) pub_advance(&pubs[room_pubs[c->room][i]]);
  }
}

/* wsync: confirm received messages about once per --recv-interval, as clients
 * SHOULD. Connections take turns across the interval (a cursor sweeps them at
 * N per interval), so the server sees a steady trickle, not N at once. */
static void send_recvs(uint64_t now) {
  static uint64_t t0, done;
  static int cursor;
  char msg[64];
  uint64_t iv = (uint64_t)opt.recv_interval_ms * 1000000ull;
  if (!t0) t0 = now;
  uint64_t target = (now - t0) / iv * (uint64_t)opt.conns + (now - t0) % iv * (uint64_t)opt.conns / iv;
  for (; done < target; done++) {
    conn *c = &conns[cursor];
    int i = cursor;
    cursor = (cursor + 1) % opt.conns;
    if (c->state != CS_READY || c->ordinal == c->ordinal_confirmed) continue;
    int n = snprintf(msg, sizeof msg, "{\"type\":\"recv\",\"n\":%" PRIu64 "}", c->ordinal);
    send_frame(i, 1, msg, (size_t)n);
    c->ordinal_confirmed = c->ordinal;
  }
}

/* ---- the loop ------------------------------------------------------------------ */

static void handle_event(struct epoll_event *ev, uint64_t now) {
  int ci = (int)ev->data.u32;
  conn *c = &conns[ci];
  if (c->state == CS_CLOSED) return;
  if (c->state == CS_CONNECTING) {
    if (ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(ci);
    return;
  }
  if (ev->events & EPOLLOUT) flush_conn(ci);
  if (c->state != CS_CLOSED && (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP))) on_readable(ci, now);
}

static int baseline_done;

static void connect_more(void) {
  int limit = opt.idle && !baseline_done ? opt.idle_warm : opt.conns;
  while (st.next_to_connect < limit && st.nconnecting < opt.concurrency) start_connect(st.next_to_connect++);
}

static int all_pubs_done(void) {
  for (int i = 0; i < opt.pubs; i++)
    if (pubs[i].done_seq < pubs[i].next_seq && conns[pubs[i].conn].state != CS_CLOSED) return 0;
  return 1;
}

static uint64_t next_due(uint64_t now, uint64_t deadline) {
  uint64_t t = deadline;
  if (opt.rate > 0 && (phase == PH_WARM || phase == PH_MEASURE))
    for (int i = 0; i < opt.pubs; i++)
      if (pubs[i].due_ns < t && pubs[i].next_seq - pubs[i].done_seq < (uint64_t)opt.window) t = pubs[i].due_ns;
  return t < now ? now : t;
}

static void run(void) {
  struct epoll_event evs[MAX_EVENTS];
  uint64_t now = now_ns(), deadline = UINT64_MAX, last_progress = now, progress_mark = 0;
  st.t_connect0 = now;
  connect_more();
  while (phase != PH_DONE) {
    uint64_t until = next_due(now, deadline);
    if (opt.proto == P_WSYNC && opt.recv_interval_ms > 0 && now + 10000000ull < until) until = now + 10000000ull;
    if (until > now + 200000000ull) until = now + 200000000ull; /* wake at least every 200 ms */
    uint64_t wait = until > now && !opt.spin ? until - now : 0;
    struct timespec ts = {(time_t)(wait / 1000000000ull), (long)(wait % 1000000000ull)};
    int n = epoll_pwait2(ep, evs, MAX_EVENTS, &ts, NULL);
    if (n < 0 && errno != EINTR) die("epoll_pwait2: %s", strerror(errno));
    now = now_ns();
    for (int i = 0; i < n; i++) handle_event(&evs[i], now);

    switch (phase) {
    case PH_CONNECT:
      if (opt.idle && !baseline_done && st.nready == opt.idle_warm) {
        /* settle like at the end, then the baseline (outside any timing) */
        struct timespec pause = {0, 300000000};
        nanosleep(&pause, NULL);
        if (opt.server_pid && read_servers(&smp.srv_before) != 0) die("cannot read /proc/%d", opt.server_pid);
        if (opt.healthz) smp.heap0 = healthz_heap();
        baseline_done = 1;
        now = now_ns();
        st.t_connect0 = now;
      }
      connect_more();
      if (st.nready == opt.conns) {
        st.t_connected = now;
        if (opt.idle) {
          sample(&smp.srv0, &smp.self0, &smp.mach0, &smp.irq0);
          phase = PH_SETTLE;
          deadline = now + (uint64_t)(opt.settle * 1e9);
        } else if (opt.catchup > 0) {
          sample(&smp.srv0, &smp.self0, &smp.mach0, &smp.irq0);
          phase = PH_CATCHUP;
          st.catch_write_t0 = now;
          deadline = UINT64_MAX;
        } else {
          phase = PH_WARM;
          for (int i = 0; i < opt.pubs; i++)
            pubs[i].due_ns = now + (opt.rate > 0 ? pubs[i].interval_ns * (uint64_t)i / (uint64_t)opt.pubs : 0);
          deadline = now + (uint64_t)(opt.warmup * 1e9);
        }
        if (!opt.quiet)
          fprintf(stderr, "wsync-bench: %d connections ready in %.0f ms\n", opt.conns, (now - st.t_connect0) / 1e6);
      }
      break;
    case PH_WARM:
      if (now >= deadline) {
        phase = PH_MEASURE;
        measuring = 1;
        sample(&smp.srv0, &smp.self0, &smp.mach0, &smp.irq0);
        st.t_measure0 = now_ns();
        deadline = now + (uint64_t)(opt.duration * 1e9);
      }
      break;
    case PH_MEASURE:
      if (now >= deadline) {
        measuring = 0;
        st.t_measure1 = now;
        sample(&smp.srv1, &smp.self1, &smp.mach1, &smp.irq1);
        phase = PH_DRAIN;
        deadline = now + (uint64_t)(opt.drain * 1e9);
      }
      break;
    case PH_DRAIN: /* until every window is empty, or --drain s pass without progress */
      if (all_pubs_done() || now >= deadline) phase = PH_DONE;
      break;
    case PH_SETTLE:
      if (now >= deadline) {
        sample(&smp.srv1, &smp.self1, &smp.mach1, &smp.irq1);
        phase = PH_DONE;
      }
      break;
    case PH_CATCHUP:
      if (st.catch_write_t1 == 0) {
        uint64_t acked = 0;
        for (int i = 0; i < opt.pubs; i++) acked += pubs[i].done_seq;
        if (acked >= (uint64_t)opt.catchup) {
          st.catch_write_t1 = now;
          if (!opt.quiet)
            fprintf(stderr, "wsync-bench: %ld ops written in %.0f ms; joining with since {%s, 0}\n", opt.catchup,
                    (now - st.catch_write_t0) / 1e6, epoch);
          st.rejoin_until = now + (uint64_t)(opt.rejoin_for * 1e9);
          deadline = st.rejoin_until + 60000000000ull;
          cj.busy = 1;
          start_connect(st.catch_conn);
        }
      } else if ((st.catch_done && !cj.busy && now >= st.rejoin_until) || now >= deadline) {
        sample(&smp.srv1, &smp.self1, &smp.mach1, &smp.irq1);
        phase = PH_DONE;
      }
      break;
    }
    publish_due(now);
    if (opt.proto == P_WSYNC && opt.recv_interval_ms > 0) send_recvs(now);
    flush_dirty();

    /* a window that stops moving for 10 s means lost messages: give up */
    uint64_t mark = st.sent_total;
    for (int i = 0; i < opt.pubs; i++) mark += pubs[i].done_seq;
    if (mark != progress_mark || phase == PH_SETTLE || phase == PH_CONNECT || opt.rate > 0) {
      if (phase == PH_DRAIN && mark != progress_mark) deadline = now + (uint64_t)(opt.drain * 1e9);
      progress_mark = mark;
      last_progress = now;
    } else if (now - last_progress > 10000000000ull && phase != PH_DRAIN) {
      st.stalled = 1;
      if (!opt.quiet) fprintf(stderr, "wsync-bench: no progress for 10 s, stopping\n");
      if (measuring) {
        st.t_measure1 = now;
        sample(&smp.srv1, &smp.self1, &smp.mach1, &smp.irq1);
      }
      measuring = 0;
      phase = PH_DONE;
    }
    if (phase == PH_CONNECT && now - st.t_connect0 > 120000000000ull)
      die("only %d of %d connections ready after 120 s", st.nready, opt.conns);
  }
}

/* ---- report ---------------------------------------------------------------------- */

static void json_hist(FILE *f, const char *name, const hist *h) {
  fprintf(f, ",\"%s\":{\"n\":%" PRIu64 ",\"min\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,\"mean\":%.1f}",
          name, h->n, h->min / 1e3, hist_pct(h, 50) / 1e3, hist_pct(h, 90) / 1e3, hist_pct(h, 99) / 1e3, hist_pct(h, 99.9) / 1e3,
          h->max / 1e3, h->n ? h->sum / (double)h->n / 1e3 : 0.0);
}

static void write_hist(const char *path, const hist *h) {
  FILE *f = fopen(path, "w");
  if (!f) die("cannot write %s: %s", path, strerror(errno));
  fprintf(f, "# latency_us cumulative_fraction count (log buckets; %" PRIu64 " samples)\n", h->n);
  uint64_t acc = 0;
  for (unsigned i = 0; i < HBUCKETS; i++) {
    if (!h->b[i]) continue;
    acc += h->b[i];
    uint64_t lo, w;
    hist_bounds(i, &lo, &w);
    fprintf(f, "%.3f %.9f %" PRIu64 "\n", (double)(lo + w) / 1e3, (double)acc / (double)h->n, h->b[i]);
  }
  fclose(f);
}

static const char *proto_name(void) {
  return opt.proto == P_WSYNC ? "wsync" : opt.proto == P_SOCKETIO ? "socketio" : "broadcast";
}

static const char *mode_name(void) {
  return opt.mode == M_OP ? "op" : opt.mode == M_STORED ? "stored" : "ephemeral";
}

static int report(void) {
  uint64_t expected = 0, distinct = 0;
  for (int ci = 0; ci < opt.conns; ci++) {
    conn *c = &conns[ci];
    for (int l = 0; l < room_npubs[c->room]; l++) {
      expected += pubs[room_pubs[c->room][l]].next_seq;
      distinct += c->tr[l].distinct;
    }
  }
  uint64_t losses = expected > distinct ? expected - distinct : 0;
  int nmeasured = opt.idle ? opt.idle_n : opt.conns;
  double connect_s = (double)(st.t_connected - st.t_connect0) / 1e9;
  double secs = st.t_measure1 > st.t_measure0 ? (double)(st.t_measure1 - st.t_measure0) / 1e9 : 0;
  double srv_cpu = smp.srv1.cpu_s - smp.srv0.cpu_s, self_cpu_s = smp.self1 - smp.self0;
  double mach_cpu = smp.mach1 - smp.mach0, irq_cpu = smp.irq1 - smp.irq0;
  double other_cpu = mach_cpu - irq_cpu - srv_cpu - self_cpu_s;
  double wall = secs;
  if (opt.idle || opt.catchup) wall = 0;
  int measured = !opt.idle && !opt.catchup;
  double dps = secs > 0 ? (double)st.deliveries / secs : 0;
  double mps = secs > 0 ? (double)st.sent / secs : 0;
  double aps = secs > 0 ? (double)st.acks / secs : 0;
  uint64_t per = opt.proto == P_WSYNC && opt.mode == M_OP ? st.acks : st.deliveries;
  double bytes_per_conn = (double)(smp.srv1.rss_kib - smp.srv_before.rss_kib) * 1024.0 / nmeasured;
  double heap_per_conn =
      smp.heap0 >= 0 && smp.heap1 >= 0 ? (double)(smp.heap1 - smp.heap0) / nmeasured : -1;
  /* After a stale re-send a publisher's ops may reach members out of its
   * order (the room's seq order is checked instead, seq_breaks). */
  int failed = losses || st.dups || (st.ooo && !st.stale) || st.seq_breaks || st.errors || st.closes || st.foreign || st.unexpected || st.stalled ||
               (!opt.idle && st.sent_total == 0);
  if (opt.catchup && (!st.catch_done || cj.busy || st.catch_seq != (uint64_t)opt.catchup)) failed = 1;
  if (opt.hist_file) write_hist(opt.hist_file, opt.proto == P_WSYNC && opt.mode == M_OP ? &st.ack_lat : &st.lat);

  if (opt.json) {
    FILE *f = stdout;
    fprintf(f, "{\"label\":\"%s\",\"proto\":\"%s\",\"mode\":\"%s\",\"conns\":%d,\"rooms\":%d,\"pubs\":%d,"
               "\"size\":%d,\"rate\":%g,\"window\":%d,\"warmup_s\":%g,\"duration_s\":%g",
            opt.label ? opt.label : "", proto_name(),
            opt.proto == P_WSYNC ? mode_name() : "", nmeasured, opt.rooms, opt.pubs, opt.size, opt.rate, opt.window,
            opt.warmup, opt.duration);
    fprintf(f, ",\"connect_ms\":%.1f,\"connect_per_s\":%.0f", connect_s * 1e3, connect_s > 0 ? nmeasured / connect_s : 0);
    if (measured) {
      fprintf(f, ",\"measured_s\":%.3f,\"sent\":%" PRIu64 ",\"msgs_per_s\":%.0f,\"deliveries\":%" PRIu64
                 ",\"deliveries_per_s\":%.0f,\"mbytes_per_s\":%.2f,\"acks\":%" PRIu64 ",\"acks_per_s\":%.0f",
              secs, st.sent, mps, st.deliveries, dps, secs > 0 ? st.delivered_bytes / secs / 1e6 : 0, st.acks, aps);
      fprintf(f, ",\"wire_bytes\":%" PRIu64 ",\"wire_bytes_per_delivery\":%.1f,\"deflate\":%s", st.wire_bytes,
              st.deliveries ? (double)st.wire_bytes / (double)st.deliveries : 0, opt.deflate ? "true" : "false");
      json_hist(f, "latency_us", &st.lat);
      if (opt.proto == P_WSYNC) json_hist(f, "ack_latency_us", &st.ack_lat);
    }
    fprintf(f, ",\"expected\":%" PRIu64 ",\"received\":%" PRIu64 ",\"losses\":%" PRIu64 ",\"duplicates\":%" PRIu64
               ",\"out_of_order\":%" PRIu64 ",\"foreign\":%" PRIu64 ",\"unexpected\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"server_closes\":%" PRIu64 ",\"stalled\":%s",
            expected, distinct, losses, st.dups, st.ooo, st.foreign, st.unexpected, st.errors, st.closes,
            st.stalled ? "true" : "false");
    if (st.stale) fprintf(f, ",\"stale_resends\":%" PRIu64, st.stale);
    if (st.seq_breaks) fprintf(f, ",\"room_seq_breaks\":%" PRIu64, st.seq_breaks);
    if (st.first_ooo[0]) fprintf(f, ",\"first_out_of_order\":\"%s\"", st.first_ooo);
    if (st.first_error[0]) {
      fputs(",\"first_error\":\"", f);
      for (const char *q = st.first_error; *q; q++) {
        if (*q == '"' || *q == '\\') fputc('\\', f);
        fputc(*q >= 32 ? *q : ' ', f);
      }
      fputc('"', f);
    }
    if (opt.server_pid) {
      fprintf(f, ",\"server\":{\"pid\":%d,\"rss_before_kib\":%ld,\"rss_kib\":%ld,\"hwm_kib\":%ld", opt.server_pid,
              smp.srv_before.rss_kib, smp.srv1.rss_kib, smp.srv1.hwm_kib);
      if (opt.nextra) fprintf(f, ",\"processes\":%d", 1 + opt.nextra);
      if (measured)
        fprintf(f, ",\"cpu_s\":%.2f,\"cpu_pct\":%.1f,\"cpu_us_per_delivery\":%.3f", srv_cpu,
                wall > 0 ? srv_cpu / wall * 100 : 0, per ? srv_cpu * 1e6 / (double)per : 0);
      fputc('}', f);
    }
    if (measured)
      fprintf(f, ",\"self\":{\"cpu_s\":%.2f,\"cpu_pct\":%.1f},\"machine\":{\"cpu_s\":%.2f,\"irq_cpu_pct\":%.1f,"
                 "\"other_cpu_pct\":%.1f}",
              self_cpu_s, wall > 0 ? self_cpu_s / wall * 100 : 0, mach_cpu, wall > 0 ? irq_cpu / wall * 100 : 0,
              wall > 0 && opt.server_pid ? other_cpu / wall * 100 : 0);
    if (opt.idle) {
      fprintf(f, ",\"idle\":{\"bytes_per_conn\":%.0f", bytes_per_conn);
      if (heap_per_conn >= 0) fprintf(f, ",\"heap_bytes_per_conn\":%.0f", heap_per_conn);
      fputc('}', f);
    }
    if (opt.catchup) {
      double wms = (double)(st.catch_write_t1 - st.catch_write_t0) / 1e6;
      fprintf(f, ",\"catchup\":{\"ops\":%ld,\"write_ms\":%.0f,\"write_ops_per_s\":%.0f,\"done\":%s,\"catchup_ms\":%.1f,"
                 "\"first_part_ms\":%.1f,\"joined_bytes\":%" PRIu64 ",\"parts\":%" PRIu64 ",\"recovered\":%s,\"seq\":%" PRIu64
                 ",\"server_cpu_s\":%.2f",
              opt.catchup, wms, wms > 0 ? opt.catchup / wms * 1e3 : 0, st.catch_done ? "true" : "false",
              st.catch_done ? (double)(st.catch_t1 - st.catch_t0) / 1e6 : -1.0,
              st.catch_done ? (double)(st.catch_first - st.catch_t0) / 1e6 : -1.0, st.catch_bytes, st.catch_parts,
              st.catch_recovered ? "true" : "false", st.catch_seq, srv_cpu);
      if (opt.rejoin_for > 0)
        fprintf(f, ",\"rejoins\":%" PRIu64 ",\"rejoin_bytes\":%" PRIu64 ",\"rejoin_ms\":{\"p50\":%.1f,\"max\":%.1f}",
                st.rejoins, st.rejoin_bytes, hist_pct(&st.rejoin_lat, 50) / 1e6, st.rejoin_lat.max / 1e6);
      fputc('}', f);
    }
    fprintf(f, ",\"ok\":%s}\n", failed ? "false" : "true");
  } else {
    printf("%s%s%s: %d connections in %.0f ms (%.0f/s)\n", opt.label ? opt.label : "", opt.label ? ": " : "",
           opt.proto == P_WSYNC ? "wsync protocol" : opt.proto == P_SOCKETIO ? "Socket.IO" : "broadcast protocol", nmeasured, connect_s * 1e3,
           connect_s > 0 ? nmeasured / connect_s : 0);
    if (measured) {
      printf("  sent %.0f msg/s, delivered %.0f/s (%.1f MB/s) over %.2f s; %.1f bytes on the wire per delivery%s\n",
             mps, dps, secs > 0 ? st.delivered_bytes / secs / 1e6 : 0, secs,
             st.deliveries ? (double)st.wire_bytes / (double)st.deliveries : 0, opt.deflate ? " (deflate offered)" : "");
      printf("  latency us: min %.0f  p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  (%" PRIu64 " samples)\n", st.lat.min / 1e3,
             hist_pct(&st.lat, 50) / 1e3, hist_pct(&st.lat, 90) / 1e3, hist_pct(&st.lat, 99) / 1e3,
             hist_pct(&st.lat, 99.9) / 1e3, st.lat.max / 1e3, st.lat.n);
      if (opt.proto == P_WSYNC)
        printf("  acks %.0f/s; ack latency us: p50 %.0f  p99 %.0f  max %.0f\n", aps, hist_pct(&st.ack_lat, 50) / 1e3,
               hist_pct(&st.ack_lat, 99) / 1e3, st.ack_lat.max / 1e3);
      if (opt.server_pid)
        printf("  server CPU %.2f s (%.0f%%), %.3f us per %s; RSS %ld KiB\n", srv_cpu, wall > 0 ? srv_cpu / wall * 100 : 0,
               per ? srv_cpu * 1e6 / (double)per : 0, opt.proto == P_WSYNC && opt.mode == M_OP ? "ack" : "delivery",
               smp.srv1.rss_kib);
      printf("  generator CPU %.2f s (%.0f%%); softirq+irq %.0f%%; everything else on the machine %.0f%%\n",
             self_cpu_s, wall > 0 ? self_cpu_s / wall * 100 : 0, wall > 0 ? irq_cpu / wall * 100 : 0,
             wall > 0 && opt.server_pid ? other_cpu / wall * 100 : 0);
    }
    if (opt.idle && opt.server_pid) {
      printf("  server RSS %ld -> %ld KiB: %.0f bytes per connection", smp.srv_before.rss_kib, smp.srv1.rss_kib,
             bytes_per_conn);
      if (heap_per_conn >= 0) printf(" (malloc'd: %.0f)", heap_per_conn);
      printf("\n");
    }
    if (opt.catchup) {
      printf("  wrote %ld ops in %.0f ms; join with since {epoch, 0}: first part after %.1f ms, last after %.1f ms, %" PRIu64
             " bytes in %" PRIu64 " parts, recovered %s, seq %" PRIu64 "\n",
             opt.catchup, (st.catch_write_t1 - st.catch_write_t0) / 1e6,
             st.catch_done ? (st.catch_first - st.catch_t0) / 1e6 : -1.0,
             st.catch_done ? (st.catch_t1 - st.catch_t0) / 1e6 : -1.0, st.catch_bytes, st.catch_parts,
             st.catch_recovered ? "true" : "false", st.catch_seq);
      if (opt.rejoin_for > 0)
        printf("  then %" PRIu64 " joins again in %.1f s (%" PRIu64 " bytes): each p50 %.1f ms, max %.1f ms\n", st.rejoins,
               opt.rejoin_for, st.rejoin_bytes, hist_pct(&st.rejoin_lat, 50) / 1e6, st.rejoin_lat.max / 1e6);
    }
    printf("  expected %" PRIu64 ", received %" PRIu64 ": losses %" PRIu64 ", duplicates %" PRIu64
           ", out of order %" PRIu64 ", errors %" PRIu64 ", server closes %" PRIu64 "%s\n",
           expected, distinct, losses, st.dups, st.ooo, st.errors, st.closes, st.stalled ? ", STALLED" : "");
    if (st.stale) printf("  ops re-sent after stale (fenced out by another node): %" PRIu64 "\n", st.stale);
    if (st.seq_breaks) printf("  ops out of the room's seq order: %" PRIu64 "\n", st.seq_breaks);
    if (st.first_error[0]) printf("  first error: %s\n", st.first_error);
    if (st.first_ooo[0]) printf("  first out of order: %s\n", st.first_ooo);
  }
  return opt.check && failed ? 1 : 0;
}

int main(int argc, char **argv) {
  parse_opts(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  rng_state ^= now_ns() ^ ((uint64_t)getpid() << 32);
  snprintf(run_tag, sizeof run_tag, "%08x", rng32());
  memset(&server_addr, 0, sizeof server_addr);
  server_addr.sin_family = AF_INET;
  server_addr.sin_port = htons((uint16_t)opt.port);
  if (inet_pton(AF_INET, opt.host, &server_addr.sin_addr) != 1) die("--host must be an IPv4 address");
  pub_addr = server_addr;
  pub_addr.sin_port = htons((uint16_t)(opt.pub_port ? opt.pub_port : opt.port));
  alt_addr = server_addr;
  alt_addr.sin_port = htons((uint16_t)(opt.alt_port ? opt.alt_port : opt.port));

  int total = opt.conns + (opt.catchup > 0 ? 1 : 0);
  conns = xcalloc((size_t)total, sizeof *conns);
  pubs = xcalloc((size_t)(opt.pubs ? opt.pubs : 1), sizeof *pubs);
  room_live = xcalloc((size_t)opt.rooms, sizeof *room_live);
  room_npubs = xcalloc((size_t)opt.rooms, sizeof *room_npubs);
  room_pubs = xcalloc((size_t)opt.rooms, sizeof *room_pubs);
  dirty_list = xcalloc((size_t)total, sizeof *dirty_list);
  rbuf = xrealloc(NULL, READ_BUF);
  scratch = xrealloc(NULL, (size_t)opt.size + 1024);
  st.catch_conn = opt.catchup > 0 ? opt.conns : -1;

  /* Publisher j is connection j, in room j % K: publishers spread over rooms. */
  for (int i = 0; i < opt.pubs; i++) room_npubs[i % opt.rooms]++;
  for (int r = 0; r < opt.rooms; r++) room_pubs[r] = xcalloc((size_t)(room_npubs[r] ? room_npubs[r] : 1), sizeof(int));
  int *fill = xcalloc((size_t)opt.rooms, sizeof(int));
  for (int i = 0; i < opt.pubs; i++) {
    pub *p = &pubs[i];
    p->conn = i;
    p->room = i % opt.rooms;
    p->local = fill[p->room]++;
    room_pubs[p->room][p->local] = i;
    p->cnt = xcalloc((size_t)opt.window, sizeof *p->cnt);
    p->sent_ns = xcalloc((size_t)opt.window, sizeof *p->sent_ns);
    p->ts_ns = xcalloc((size_t)opt.window, sizeof *p->ts_ns);
    p->retry_at = xcalloc((size_t)opt.window, sizeof *p->retry_at);
    p->tries = xcalloc((size_t)opt.window, sizeof *p->tries);
    p->interval_ns = opt.rate > 0 ? (uint64_t)(1e9 / opt.rate) : 0;
  }
  free(fill);
  for (int i = 0; i < total; i++) {
    conn *c = &conns[i];
    c->fd = -1;
    c->room = i % opt.rooms;
    c->pub = i < opt.pubs ? i : -1;
    c->tr = xcalloc((size_t)(room_npubs[c->room] ? room_npubs[c->room] : 1), sizeof(track));
  }
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1: %s", strerror(errno));

  if (!opt.idle) {
    if (opt.server_pid && read_servers(&smp.srv_before) != 0) die("cannot read /proc/%d", opt.server_pid);
    if (opt.healthz) smp.heap0 = healthz_heap();
  }

  if (!opt.quiet)
    fprintf(stderr, "wsync-bench: %s%s%s%s: %d connections, %d rooms, %d publishers, %d B, %s\n",
            proto_name(), opt.proto == P_WSYNC ? " " : "", opt.proto == P_WSYNC ? mode_name() : "",
            opt.idle ? " idle" : opt.catchup ? " catch-up" : "", opt.conns, opt.rooms, opt.pubs, opt.size,
            opt.rate > 0 ? "fixed rate" : "max rate");
  run();
  if (opt.healthz) smp.heap1 = healthz_heap();
  return report();
}
