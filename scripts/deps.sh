#!/usr/bin/env bash
# Installs every Debian package wsync needs to build, test and run.
# Idempotent: quiet and quick when everything is already present.
# Usage (as root on Debian 12): scripts/deps.sh
set -euo pipefail

pkgs=(
  build-essential pkg-config make
  libuv1-dev libmimalloc-dev libhttp-parser-dev libjansson-dev libjwt-dev
  libsqlite3-dev sqlite3 libssl-dev openssl zlib1g-dev libcurl4-openssl-dev
  libcriterion-dev
  postgresql-15 libpq-dev redis-server libhiredis-dev
  clang libclang-rt-14-dev
  gnuplot-nox
  chromium
  man-db
)
# man-db (with groff-base, a few MB) lets tests/e2e/install.test.mjs render
# the installed man page. systemd is not asked for: where it is installed
# (any Debian 12 system that boots with it) the same test runs
# systemd-analyze verify on the unit, and skips that step, saying why, elsewhere.
# Node.js may come from Debian or from another packager that bundles npm;
# ask for Debian's only when the commands are absent.
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing packages: ${missing[*]} (run as root to install)" >&2
    exit 1
  fi
  echo "deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node packages for the tests (ws client, playwright-core driving Debian's
# Chromium, ot-text-unicode as the OT oracle, typescript and esbuild for the
# client's package test); the lockfile keeps them pinned.
# Re-installed when package.json is newer than what was installed.
here=$(cd "$(dirname "$0")/.." && pwd)
e2e="$here/tests/e2e"
if [ -f "$e2e/package.json" ] && { [ ! -f "$e2e/node_modules/.package-lock.json" ] ||
     [ "$e2e/package-lock.json" -nt "$e2e/node_modules/.package-lock.json" ]; }; then
  (cd "$e2e" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1 || npm install --silent --no-audit --no-fund >/dev/null)
fi
