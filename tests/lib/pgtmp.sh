#!/usr/bin/env bash
# pgtmp.sh -- a throwaway PostgreSQL for tests, on 127.0.0.1 only.
#   pgtmp.sh start        initdb a temp dir, start postgres on a free port, create
#                         database "wsync"; prints two lines: the URL
#                         (postgres://USER@127.0.0.1:PORT/wsync) and the temp dir
#   pgtmp.sh stop DIR     stop that server and remove DIR
#   pgtmp.sh halt DIR     stop the server, keep DIR (for failure tests)
#   pgtmp.sh resume DIR   start a halted server again, same port
# PostgreSQL refuses to run as root: as root the server runs as the
# `postgres` system user (or $WSYNC_PG_USER), which owns the temp dir.
# Binaries: $PG_BIN, else /usr/lib/postgresql/<newest>/bin, else PATH.
set -euo pipefail

pg_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n "$d" ]]; then echo "$d"; else dirname "$(command -v pg_ctl)"; fi
}

# Runs a command as the server's user.
as_user() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u "$PGUSER_RUN" -- "$@"
  else
    "$@"
  fi
}

# A port nothing listens on now (a race with another starter is caught by
# the retries below: postgres will not start on a taken port).
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

BIN=$(pg_bin)
if [[ $(id -u) -eq 0 ]]; then PGUSER_RUN=${WSYNC_PG_USER:-postgres}; else PGUSER_RUN=$(id -un); fi

start_server() { # DIR
  as_user "$BIN/pg_ctl" -D "$1/data" -l "$1/log" -w -t 30 start >/dev/null
}

case "${1:-}" in
  start)
    dir=$(mktemp -d /tmp/wsync-pg-XXXXXX)
    chmod 0755 "$dir"
    [[ $(id -u) -eq 0 ]] && chown "$PGUSER_RUN" "$dir"
    as_user "$BIN/initdb" -D "$dir/data" -U "$PGUSER_RUN" -A trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2; exit 1; }
    cp "$dir/data/postgresql.conf" "$dir/postgresql.conf.orig"
    for try in 1 2 3 4 5; do
      port=$(free_port)
      # Loopback TCP only; the socket dir inside the temp dir.
      cp "$dir/postgresql.conf.orig" "$dir/data/postgresql.conf"
      cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
log_min_messages = warning
EOF
      if start_server "$dir"; then break; fi
      if [[ $try -eq 5 ]]; then cat "$dir/log" >&2; exit 1; fi
    done
    as_user "$BIN/createdb" -h 127.0.0.1 -p "$port" -U "$PGUSER_RUN" wsync
    echo "postgres://$PGUSER_RUN@127.0.0.1:$port/wsync"
    echo "$dir"
    ;;
  stop)
    dir=${2:?usage: pgtmp.sh stop DIR}
    [[ -f "$dir/data/PG_VERSION" ]] || { echo "pgtmp.sh: $dir is not a pgtmp dir" >&2; exit 1; }
    as_user "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  halt)
    dir=${2:?usage: pgtmp.sh halt DIR}
    as_user "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  resume)
    dir=${2:?usage: pgtmp.sh resume DIR}
    start_server "$dir"
    ;;
  *)
    echo "usage: pgtmp.sh start | stop DIR | halt DIR | resume DIR" >&2
    exit 2
    ;;
esac
