#!/usr/bin/env bash
# backup.sh -- online backup and restore of a wsync data directory
# (docs/DEPLOY.md). Needs the sqlite3 command-line shell (scripts/deps.sh
# installs it).
#
#   scripts/backup.sh backup DATA_DIR OUT_FILE
#       A consistent copy of DATA_DIR/wsync.db taken while the server runs
#       (SQLite's VACUUM INTO reads one snapshot; writers are not blocked),
#       checked with PRAGMA integrity_check, then renamed to OUT_FILE (which
#       must not exist). Durable once this exits 0.
#   scripts/backup.sh restore BACKUP_FILE DATA_DIR
#       Makes DATA_DIR (mode 0700; it must not hold a database yet) hold the
#       backup; start `wsync serve --data-dir DATA_DIR` on it afterwards.
set -euo pipefail

die() { echo "backup.sh: $*" >&2; exit 1; }
command -v sqlite3 >/dev/null 2>&1 || die "the sqlite3 shell is missing (apt-get install sqlite3, or scripts/deps.sh)"
# A path inside a single-quoted SQL string literal.
sql_quote() { printf "%s" "$1" | sed "s/'/''/g"; }

check() { # FILE: integrity and that it is a wsync database
  local ok app
  ok=$(sqlite3 -bail "$1" "PRAGMA integrity_check;" 2>&1) || die "$1: $ok"
  [ "$ok" = "ok" ] || die "$1: integrity check failed: $ok"
  app=$(sqlite3 -bail "$1" "PRAGMA application_id;")
  [ "$app" = "$((0x77737963))" ] || die "$1: not a wsync database (application_id $app)"
}

case "${1:-}" in
backup)
  [ $# -eq 3 ] || die "usage: backup.sh backup DATA_DIR OUT_FILE"
  db="$2/wsync.db" out="$3"
  [ -f "$db" ] || die "$db: no such database"
  [ ! -e "$out" ] || die "$out exists; choose a new name"
  tmp="$out.partial.$$"
  trap 'rm -f "$tmp"' EXIT
  # The busy timeout covers a checkpoint holding a lock for a moment.
  sqlite3 -bail -cmd ".timeout 10000" "$db" "VACUUM INTO '$(sql_quote "$tmp")';"
  check "$tmp"
  sync "$tmp" 2>/dev/null || sync
  mv "$tmp" "$out"
  trap - EXIT
  echo "backup.sh: $db -> $out ($(stat -c %s "$out") bytes, schema $(sqlite3 "$out" 'PRAGMA user_version;'))"
  ;;
restore)
  [ $# -eq 3 ] || die "usage: backup.sh restore BACKUP_FILE DATA_DIR"
  src="$2" dir="$3"
  [ -f "$src" ] || die "$src: no such file"
  check "$src"
  mkdir -p -m 0700 "$dir"
  [ ! -e "$dir/wsync.db" ] || die "$dir/wsync.db exists: restore into an empty directory (or move it away first)"
  rm -f "$dir/wsync.db-wal" "$dir/wsync.db-shm"
  cp "$src" "$dir/wsync.db.partial"
  chmod 0600 "$dir/wsync.db.partial"
  mv "$dir/wsync.db.partial" "$dir/wsync.db"
  echo "backup.sh: restored $src into $dir; start: wsync serve --data-dir $dir"
  ;;
*)
  die "usage: backup.sh backup DATA_DIR OUT_FILE | backup.sh restore BACKUP_FILE DATA_DIR"
  ;;
esac
