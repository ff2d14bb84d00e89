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

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
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
    port=$(free_port)
    # Loopback TCP only; the socket dir inside the temp dir; quick to stop.
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = on
max_connections = 200
log_min_messages = warning
EOF
    if ! start_server "$dir"; then cat "$dir/log" >&2; exit 1; fi
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
