# wsync -- build, test, fuzz, run.
#   make            release build: build/wsync
#   make test       every test: C units, end-to-end, both again under ASan+UBSan, the threaded
#                   suites under TSan, fuzzers briefly, and a short self-checking run of the load generator
#   make run        build and start the server with the demo on http://127.0.0.1:8080
#   make asan       sanitizer build: build-asan/wsync
#   make test-tsan  ThreadSanitizer build (build-tsan/wsync) through the suites that run threads
#                   beside the loop (write helpers, commits, checkpoints, logs, webhooks); part of make test
#   make fuzz       each libFuzzer target for FUZZ_SECONDS (default 60)
#   make bench      every benchmark scenario against wsync and the Node ws peer, and the Yjs endpoint
#                   against y-websocket's server and Hocuspocus (docs/PERFORMANCE.md)
#   make bench-yjs  the Yjs update merge (src/yjs) against Y.mergeUpdates on the paper trace
#   make install    binary, man page, systemd unit, example environment under $(DESTDIR)$(PREFIX)

SHELL   := /bin/bash
.SHELLFLAGS := -o pipefail -c
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
PKGS    := libuv libssl libcrypto jansson libjwt sqlite3 zlib libcurl libpq hiredis
DEPCFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS    := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -luv -lssl -lcrypto -ljansson -ljwt -lsqlite3 -lz -lcurl -lpq -lhiredis) -lhttp_parser -lm
ifeq ($(CI),true)
WARN += -Werror
endif
# Release binaries allocate with mimalloc (docs/PERFORMANCE.md, (e)): linked
# first and kept even though nothing calls it by name, so its malloc/free
# replace glibc's for wsync and for jansson and SQLite inside it. Sanitizer
# and fuzz builds keep the libc allocator that ASan intercepts.
ALLOC_LIBS := -Wl,--push-state,--no-as-needed -lmimalloc -Wl,--pop-state
ALLOC_CFLAGS := -DWSY_MIMALLOC

SRC_LIB := $(wildcard src/common/*.c src/config/*.c src/net/*.c src/http/*.c src/ws/*.c src/auth/*.c src/store/*.c src/yjs/*.c src/hooks/*.c src/sync/*.c)
SRC_BIN := src/main.c
UNIT_SRC := $(wildcard tests/unit/*/*.c tests/unit/*.c)
FUZZ_TARGETS := ws_frame ws_inflate utf8 http_request sync_op auth_token text_op yjs_update json_read
FUZZ_SECONDS ?= 60
FUZZ_BRIEF ?= 5

ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -DWSY_ALLOC_TESTING

.PHONY: all asan test unit e2e e2e-cluster e2e-writers browser test-asan test-tsan test-tsan-e2e fuzz fuzz-brief run cluster clean deps www

all: build/wsync

# ---- release build ------------------------------------------------------
build/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(ALLOC_CFLAGS) $(DEPCFLAGS) -MMD -MP -c $< -o $@

build/wsync: $(SRC_LIB:%.c=build/%.o) $(SRC_BIN:%.c=build/%.o)
	$(CC) $(CFLAGS) -o $@ $^ $(ALLOC_LIBS) $(LIBS)

build/unit-tests: $(SRC_LIB:%.c=build/%.o) $(UNIT_SRC:%.c=build/%.o)
	$(CC) $(CFLAGS) -o $@ $^ $(ALLOC_LIBS) $(LIBS) -lcriterion

# ---- sanitizer build ----------------------------------------------------
build-asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(ASAN_FLAGS) $(DEPCFLAGS) -MMD -MP -c $< -o $@

build-asan/wsync: $(SRC_LIB:%.c=build-asan/%.o) $(SRC_BIN:%.c=build-asan/%.o)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LIBS)

build-asan/unit-tests: $(SRC_LIB:%.c=build-asan/%.o) $(UNIT_SRC:%.c=build-asan/%.o)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LIBS) -lcriterion

asan: build-asan/wsync

# ---- ThreadSanitizer build: the loop shares work with threads (write
# helpers, the commit pool, the checkpoint thread); make test-tsan runs the
# suites that exercise them, with two write helpers from two connections ----
TSAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
TSAN_SUITES := writers fanout sync-ops sync-ring sync-stream sync-restart sync-storefault logs \
  sync-catchup-parts webhooks text-large sync-presence-batch hooks-op
build-tsan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(TSAN_FLAGS) $(DEPCFLAGS) -MMD -MP -c $< -o $@

build-tsan/wsync: $(SRC_LIB:%.c=build-tsan/%.o) $(SRC_BIN:%.c=build-tsan/%.o)
	$(CC) $(TSAN_FLAGS) -o $@ $^ $(LIBS)

test-tsan-e2e: build-tsan/wsync tests/e2e/node_modules
	cd tests/e2e && WSYNC_BIN=../../build-tsan/wsync WSYNC_E2E_ARGS="--write-threads 2 --write-threads-min 2" \
	  node --test --test-concurrency=1 --test-timeout=300000 $(TSAN_SUITES:%=%.test.mjs)
test-tsan: test-tsan-e2e

# ---- text OT oracle: src/sync/text.c over JSON lines, checked against the npm
# package ot-text-unicode by tests/e2e/text-oracle.test.mjs ---------------
TEXT_ORACLE_SRC := tests/oracle/text_oracle.c src/sync/text.c src/common/wsy.c src/common/utf8.c
build/text-oracle: $(TEXT_ORACLE_SRC:%.c=build/%.o)
	$(CC) $(CFLAGS) -o $@ $^ $(ALLOC_LIBS) $(LIBS)
build-asan/text-oracle: $(TEXT_ORACLE_SRC:%.c=build-asan/%.o)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LIBS)

# ---- Yjs update oracle: src/yjs over JSON lines, checked against the npm
# package yjs by tests/e2e/yjs-oracle.test.mjs and timed by bench/yjs-merge.mjs
YJS_ORACLE_SRC := tests/oracle/yjs_oracle.c $(wildcard src/yjs/*.c) src/common/wsy.c src/common/utf8.c
build/yjs-oracle: $(YJS_ORACLE_SRC:%.c=build/%.o)
	$(CC) $(CFLAGS) -o $@ $^ $(ALLOC_LIBS) $(LIBS)
build-asan/yjs-oracle: $(YJS_ORACLE_SRC:%.c=build-asan/%.o)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LIBS)

# ---- fuzzers (clang + libFuzzer) ---------------------------------------
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(DEPCFLAGS)
FUZZ_LIB := $(filter-out src/main.c,$(SRC_LIB))
build-fuzz/%: fuzz/%.c $(FUZZ_LIB) $(wildcard src/*/*.h src/*.h)
	@mkdir -p build-fuzz
	clang $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_LIB) $(LIBS)

fuzz: $(FUZZ_TARGETS:%=build-fuzz/%)
	@for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t ($(FUZZ_SECONDS)s)"; mkdir -p build-fuzz/corpus-$$t fuzz/artifacts; \
	  build-fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=fuzz/artifacts/ \
	    -print_final_stats=0 build-fuzz/corpus-$$t fuzz/corpus/$$t 2>&1 | tail -n 2 || exit 1; \
	done

fuzz-brief: $(FUZZ_TARGETS:%=build-fuzz/%)
	@for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t ($(FUZZ_BRIEF)s)"; mkdir -p fuzz/artifacts build-fuzz/brief-$$t; \
	  build-fuzz/$$t -max_total_time=$(FUZZ_BRIEF) -artifact_prefix=fuzz/artifacts/ \
	    build-fuzz/brief-$$t fuzz/corpus/$$t > build-fuzz/$$t.log 2>&1 || { tail -n 30 build-fuzz/$$t.log; exit 1; }; \
	  tail -n 1 build-fuzz/$$t.log; \
	done

# ---- tests --------------------------------------------------------------
tests/e2e/node_modules: tests/e2e/package.json
	cd tests/e2e && (npm ci --silent --no-audit --no-fund || npm install --silent --no-audit --no-fund)
	@touch $@

# The pg* suites need a PostgreSQL: one throwaway server (tests/lib/pgtmp.sh)
# for the run, its URL in WSYNC_TEST_PG, stopped after even when tests fail.
WITH_PG = pg_out=$$(tests/lib/pgtmp.sh start) || exit 1; \
  pg_dir=$$(sed -n 2p <<<"$$pg_out"); trap 'tests/lib/pgtmp.sh stop "$$pg_dir"' EXIT; \
  export WSYNC_TEST_PG=$$(sed -n 1p <<<"$$pg_out");

unit: build/unit-tests
	$(WITH_PG) build/unit-tests --jobs 2

e2e: build/wsync build/text-oracle build/yjs-oracle tests/e2e/node_modules
	cd tests/e2e && WSYNC_BIN=../../build/wsync node --test --test-concurrency=1 *.test.mjs

# The sync suites, and the client suites, run again against three nodes
# (PostgreSQL store, Redis bus) behind a round-robin proxy: each connection
# and request of a test lands on another node (tests/e2e/lib/cluster.mjs,
# docs/CLUSTER.md). A check that needs one process (a restart, its signal)
# adapts with WSYNC_E2E_CLUSTER; a known cluster gap is a todo test, shown
# in every run. WSYNC_E2E_LOGDIR=DIR keeps each node's log.
E2E_CLUSTER_SUITES := sync-ops sync-batch sync-rooms sync-cursors sync-wire sync-locks sync-fallback client-sync \
  text-sync sync-api-admin sync-catchup-parts
e2e-cluster: build/wsync tests/e2e/node_modules
	cd tests/e2e && WSYNC_BIN=../../build/wsync WSYNC_E2E_CLUSTER=3 node --test --test-concurrency=1 \
	  $(E2E_CLUSTER_SUITES:%=%.test.mjs)

# Suites that exercise fan-out, framing and the sync path, again with two
# write helper threads that share the writes of every flush to two
# connections or more (--write-threads, docs/SERVER.md).
E2E_WRITERS_SUITES := fanout echo frames load sync-ops sync-ring sync-presence-batch sync-stream compression \
  lifecycle timeouts
e2e-writers: build/wsync tests/e2e/node_modules
	cd tests/e2e && WSYNC_BIN=../../build/wsync WSYNC_E2E_ARGS="--write-threads 2 --write-threads-min 2" \
	  node --test --test-concurrency=1 $(E2E_WRITERS_SUITES:%=%.test.mjs)

test-asan: build-asan/unit-tests build-asan/wsync build-asan/text-oracle build-asan/yjs-oracle tests/e2e/node_modules
	@# Criterion workers skip exit handlers unless told, and LeakSanitizer only
	@# prints: the log is checked so that a leak fails the run.
	$(WITH_PG) CRITERION_NO_EARLY_EXIT=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  build-asan/unit-tests --jobs 2 2>&1 | tee build-asan/unit.log
	@! grep -E "LeakSanitizer|AddressSanitizer|runtime error:" build-asan/unit.log
	cd tests/e2e && WSYNC_BIN=../../build-asan/wsync WSYNC_SANITIZED=1 \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  node --test --test-concurrency=1 *.test.mjs

# The browser tests drive Debian's Chromium (scripts/deps.sh) through
# playwright-core against the demo served from build/www.
browser: build/wsync www tests/e2e/node_modules
	cd tests/e2e/browser && WSYNC_BIN=$(CURDIR)/build/wsync WSYNC_WWW=$(CURDIR)/build/www \
	  node --test --test-concurrency=1 *.test.mjs

test: all unit e2e e2e-cluster e2e-writers browser test-asan test-tsan fuzz-brief bench-smoke

deps:
	bash scripts/deps.sh

# The demo: web/ (the board app) beside the JavaScript client (clients/js),
# and the Yjs editor (web/yjs.html): web/yjs/editor.js bundled with its npm
# dependencies (CodeMirror, yjs, y-websocket; tests/e2e/node_modules) by
# esbuild into build/www/yjs/editor.bundle.js. The bundle is never in git.
WWW_SRC := $(wildcard web/* web/yjs/*) $(wildcard clients/js/*.js)
ESBUILD := tests/e2e/node_modules/.bin/esbuild
www: build/www/.stamp
build/www/.stamp: $(WWW_SRC) | $(ESBUILD)
	rm -rf build/www && mkdir -p build/www
	cp -r web/. build/www/
	cp clients/js/*.js build/www/
	rm -f build/www/yjs/*.js
	NODE_PATH=$(CURDIR)/tests/e2e/node_modules $(ESBUILD) web/yjs/editor.js --bundle --format=esm \
	  --target=es2020 --minify --sourcemap --log-level=warning --outfile=build/www/yjs/editor.bundle.js
	@touch $@
# Only when esbuild is missing (a fresh checkout): install the test packages.
$(ESBUILD):
	$(MAKE) tests/e2e/node_modules

run: build/wsync www
	./build/wsync serve --static build/www --echo-endpoint --insecure-demo

# The demo on a cluster (issue 13): a throwaway PostgreSQL and Redis, three
# nodes serving it as `run` does, each on a free port, and a round-robin proxy
# on 127.0.0.1:8080 (scripts/cluster.mjs; CLUSTER_ARGS="--listen
# 127.0.0.1:9090 --nodes 2", or "--help"). Ctrl-C stops everything.
CLUSTER_ARGS ?=
cluster: build/wsync www
	node scripts/cluster.mjs $(CLUSTER_ARGS)

# ---- benchmarks (bench/, docs/PERFORMANCE.md) ----------------------------
#   make bench        every scenario against wsync and the Node ws peer, medians and ratios
#   make bench-smoke  a few seconds of the load generator against wsync, checking its accounting
.PHONY: bench bench-smoke bench-yjs
BENCH_ARGS ?=

build/wsync-bench: bench/wsync-bench.c
	@mkdir -p build
	$(CC) $(WARN) $(CFLAGS) -o $@ $< -lm -lz

# bench/bus-redis.c: the Redis bus (src/sync/bus_redis.c) timed against plain
# hiredis pub/sub in the same run (it starts its own redis-server).
build/bus-redis-bench: bench/bus-redis.c $(SRC_LIB:%.c=build/%.o)
	$(CC) $(WARN) $(CFLAGS) $(DEPCFLAGS) -o $@ $^ $(ALLOC_LIBS) $(LIBS)

# bench/tls.mjs: the TLS scenario (wsync over TLS against the Node ws peer
# over node:https), a Node client since wsync-bench has no TLS.
BENCH_TLS_ARGS ?=
# bench/yjs.mjs: /v1/yjs against the reference y-websocket server and
# Hocuspocus (bench/peers): editing trace, cold load, memory per document,
# many rooms (docs/PERFORMANCE.md, "Yjs"); about 15 minutes.
BENCH_YJS_SERVER_ARGS ?=
# bench/cluster.mjs: two wsync nodes (PostgreSQL store, Redis bus) against two
# Socket.IO nodes on @socket.io/redis-adapter (bench/peers): cross-node
# fan-out, durable ops through PostgreSQL beside one SQLite node; about 1.5
# minutes (--quick: 35 s; --check: the bounded self-check; --perf: perf record
# on the nodes and PostgreSQL during the ops runs).
BENCH_CLUSTER_ARGS ?=
bench: build/wsync build/wsync-bench
	node bench/run.mjs $(BENCH_ARGS)
	node bench/tls.mjs $(BENCH_TLS_ARGS)
	node bench/yjs.mjs $(BENCH_YJS_SERVER_ARGS)
	node bench/cluster.mjs $(BENCH_CLUSTER_ARGS)

bench-smoke: build/wsync build/wsync-bench
	bash bench/smoke.sh build/wsync build/wsync-bench

# bench/yjs-merge.mjs: the Yjs update codec's merge against Y.mergeUpdates on
# the paper editing trace (../shared/data; BENCH_YJS_ARGS="--trace FILE" from
# a checkout elsewhere), and the sizes of the merged and compacted document.
BENCH_YJS_ARGS ?=
bench-yjs: build/yjs-oracle
	node bench/yjs-merge.mjs $(BENCH_YJS_ARGS)

# ---- install (packaging/) ------------------------------------------------
#   make install [PREFIX=/usr/local] [DESTDIR=]   the binary, wsync(1), the
#                   systemd unit and the example environment file, under
#                   $(DESTDIR)$(PREFIX); the unit's ExecStart and the man
#                   page's paths are rewritten to the installed ones
#   make uninstall  removes exactly those files
# Nothing is written outside these paths: no /etc, no user, no systemctl
# (docs: README.md, Install).
.PHONY: install uninstall
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/wsync
SYSTEMD_UNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL ?= install

install: build/wsync packaging/wsync.1 packaging/wsync.service packaging/wsync.env
	$(INSTALL) -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(SYSTEMD_UNITDIR) $(DESTDIR)$(DOCDIR)
	$(INSTALL) -m 0755 build/wsync $(DESTDIR)$(BINDIR)/wsync
	sed -e 's|/usr/local/bin/wsync|$(BINDIR)/wsync|g' -e 's|/usr/local/share/doc/wsync|$(DOCDIR)|g' \
	  -e 's|/usr/local/lib/systemd/system|$(SYSTEMD_UNITDIR)|g' packaging/wsync.1 > $(DESTDIR)$(MANDIR)/man1/wsync.1.tmp
	sed -e 's|/usr/local/bin/wsync|$(BINDIR)/wsync|g' packaging/wsync.service > $(DESTDIR)$(SYSTEMD_UNITDIR)/wsync.service.tmp
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/wsync.1.tmp $(DESTDIR)$(SYSTEMD_UNITDIR)/wsync.service.tmp
	mv -f $(DESTDIR)$(MANDIR)/man1/wsync.1.tmp $(DESTDIR)$(MANDIR)/man1/wsync.1
	mv -f $(DESTDIR)$(SYSTEMD_UNITDIR)/wsync.service.tmp $(DESTDIR)$(SYSTEMD_UNITDIR)/wsync.service
	$(INSTALL) -m 0644 packaging/wsync.env $(DESTDIR)$(DOCDIR)/wsync.env.example

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/wsync $(DESTDIR)$(MANDIR)/man1/wsync.1 \
	  $(DESTDIR)$(SYSTEMD_UNITDIR)/wsync.service $(DESTDIR)$(DOCDIR)/wsync.env.example
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true

clean:
	rm -rf build build-asan build-tsan build-fuzz

-include $(shell find build build-asan build-tsan -name '*.d' 2>/dev/null)
