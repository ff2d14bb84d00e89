#!/usr/bin/env bash
# smoke.sh -- make bench-smoke: a short run of the load generator against
# wsync, in both protocol modes, that checks the generator's own accounting:
# every publisher sequence reaches every subscriber of its room exactly once
# and in order (zero losses, duplicates, reorders, errors, server closes).
# Small numbers, a second or so per case, no timing assertions. Two cases
# inject faults into the generator's receive path and must be caught.
#
# usage: bench/smoke.sh [path/to/wsync] [path/to/wsync-bench]
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
WSYNC=${1:-$here/build/wsync}
BENCH=${2:-$here/build/wsync-bench}
data=$(mktemp -d /tmp/wsync-bench-smoke-XXXXXX)
log=$data/server.log
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  rm -rf "$data"
}
trap cleanup EXIT

# start LOG ARGS...: a server on a free port; sets pid and port
start() {
  local log=$1
  shift
  "$WSYNC" serve --listen 127.0.0.1:0 --data-dir "$data/db-$(basename "$log" .log)" --echo-endpoint --insecure-demo \
    --rate 1000000 --burst 1000000 "$@" 2>"$log" &
  pid=$!
  port=
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on http:\/\/[0-9.]*:\([0-9]*\).*/\1/p' "$log")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$port" ]; then
    cat "$log" >&2
    echo "bench-smoke: 0 passed, 1 failed"
    exit 1
  fi
}
start "$log"

passed=0 failed=0
short=(--warmup 0.2 --duration 0.8 --drain 3 --quiet --server-pid "$pid")
# run NAME EXPECT ARGS...: EXPECT is the exit status the case must give
run() {
  local name=$1 expect=$2
  shift 2
  local out rc
  out=$("$BENCH" --port "$port" --check "$@" 2>&1)
  rc=$?
  if [ "$rc" -eq "$expect" ]; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name (exit $rc, wanted $expect)"
    echo "$out" | sed 's/^/     /'
  fi
}

run "broadcast, 60 connections, 6 rooms, 12 publishers, max rate" 0 \
  --proto broadcast --prefix s1 --conns 60 --rooms 6 --pubs 12 --window 16 "${short[@]}"
run "broadcast, fixed rate 500/s, 1 KiB messages" 0 \
  --proto broadcast --prefix s2 --conns 40 --rooms 4 --pubs 8 --rate 500 --size 1024 "${short[@]}"
run "broadcast, 70 KiB messages (64-bit length form, reads split frames)" 0 \
  --proto broadcast --prefix s3 --conns 10 --rooms 1 --pubs 2 --window 4 --size 71680 "${short[@]}"
run "wsync protocol, ephemeral publish" 0 \
  --proto wsync --mode ephemeral --prefix s4 --conns 60 --rooms 6 --pubs 12 --window 16 "${short[@]}"
run "wsync protocol, stored publish" 0 \
  --proto wsync --mode stored --prefix s5 --conns 30 --rooms 3 --pubs 6 --window 16 "${short[@]}"
run "wsync protocol, op set" 0 \
  --proto wsync --mode op --prefix s6 --conns 30 --rooms 3 --pubs 30 --window 16 "${short[@]}"
run "wsync protocol, join sent right behind hello" 0 \
  --proto wsync --mode ephemeral --pipeline --prefix s11 --conns 60 --rooms 6 --pubs 12 --window 16 "${short[@]}"
run "wsync protocol, catch-up of 3000 ops" 0 \
  --catchup 3000 --pubs 5 --items 3000 --prefix s7 --quiet --server-pid "$pid"
run "broadcast, idle connections" 0 \
  --proto broadcast --idle --prefix s8 --conns 300 --rooms 10 --settle 0.2 --quiet --server-pid "$pid"
run "the checker catches a loss (injected)" 1 \
  --proto broadcast --prefix s9 --conns 20 --rooms 2 --pubs 4 --inject-loss 997 "${short[@]}"
run "the checker catches a duplicate (injected)" 1 \
  --proto wsync --prefix s10 --conns 20 --rooms 2 --pubs 4 --inject-dup 997 "${short[@]}"

# The cluster benchmark (bench/cluster.mjs), short and self-checking: two
# nodes on a throwaway PostgreSQL and Redis, cross-node fan-out and durable
# ops; loss, duplicate or reorder fails it, and an injected duplicate must.
cluster() {
  local name=$1 want=$2
  shift 2
  local rc=0
  node "$(dirname "$0")/cluster.mjs" --check "$@" >/tmp/wsync-smoke-cluster.$$ 2>&1 || rc=$?
  if [ "$rc" -eq "$want" ]; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name (exit $rc, wanted $want)"
    tail -20 /tmp/wsync-smoke-cluster.$$
    failed=$((failed + 1))
  fi
  rm -f /tmp/wsync-smoke-cluster.$$
}
cluster "cluster: cross-node fan-out and durable ops, checked" 0
cluster "cluster: the checker catches a duplicate (injected)" 1 --inject-dup 997

if ! kill -0 "$pid" 2>/dev/null; then
  echo "FAIL the server exited during the smoke run"
  failed=$((failed + 1))
fi
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null

# The same checks against a server whose fan-out writes are shared with two
# helper threads (--write-threads, docs/SERVER.md), from two connections to
# write up: order, loss and duplicates as above, and the helpers must have
# made some of the write calls (its /metrics says how many).
key=smoke-metrics-key-0123456789
start "$data/server2.log" --write-threads 2 --write-threads-min 2 --api-key "$key"
short=(--warmup 0.2 --duration 0.8 --drain 3 --quiet --server-pid "$pid")
run "write helpers: broadcast, 60 connections, 6 rooms, 12 publishers, max rate" 0 \
  --proto broadcast --prefix w1 --conns 60 --rooms 6 --pubs 12 --window 16 "${short[@]}"
run "write helpers: broadcast, 70 KiB messages (partial writes)" 0 \
  --proto broadcast --prefix w2 --conns 10 --rooms 1 --pubs 2 --window 4 --size 71680 "${short[@]}"
run "write helpers: wsync protocol, ephemeral publish" 0 \
  --proto wsync --mode ephemeral --prefix w3 --conns 60 --rooms 6 --pubs 12 --window 16 "${short[@]}"
run "write helpers: wsync protocol, op set" 0 \
  --proto wsync --mode op --prefix w4 --conns 30 --rooms 3 --pubs 30 --window 16 "${short[@]}"
helped=$(curl -s -H "Authorization: Bearer $key" "http://127.0.0.1:$port/metrics" |
  sed -n 's/^wsync_write_calls_helped_total \([0-9]*\)$/\1/p')
if [ "${helped:-0}" -gt 0 ]; then
  passed=$((passed + 1))
  echo "ok   write helpers: $helped write calls made by helpers"
else
  failed=$((failed + 1))
  echo "FAIL write helpers: /metrics reports no write call by a helper (${helped:-nothing})"
fi
if ! kill -0 "$pid" 2>/dev/null; then
  echo "FAIL the server with write helpers exited during the smoke run"
  failed=$((failed + 1))
fi
echo "bench-smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
