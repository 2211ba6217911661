# shellcheck shell=bash
# The real servers the integration tests start by themselves: redis-server, the kinesalite
# Kinesis emulator, PostgreSQL and moto (S3). Sourced by scripts/test.sh and scripts/demo.sh; safe under set -euo pipefail.
#
#   ensure_redis       installs redis-server (apt) if it is not on PATH, then exports
#                      HOTPATH_REDIS_SERVER.
#   ensure_prometheus  installs prometheus (apt; brings promtool) if it is not on PATH, then
#                      exports HOTPATH_PROMETHEUS and HOTPATH_PROMTOOL (the control plane tests).
#   ensure_kinesalite  installs kinesalite (npm, pinned) under $TOOLS/kinesalite if missing, then
#                      exports HOTPATH_KINESALITE (its cli.js) and HOTPATH_REDIS_SERVER when
#                      redis-server is on PATH.
#   ensure_postgres    installs postgresql (apt) if initdb/pg_ctl are missing, then exports
#                      HOTPATH_PG_BIN (the directory of initdb, pg_ctl and postgres); the tests
#                      make their own throwaway cluster there (as the postgres user under root).
#   ensure_venv        creates the Python venv $TOOLS/venv (python3 -m venv) if missing, installs
#                      scripts/requirements-test.txt into it when that file's sha256 differs from
#                      the one stamped in $TOOLS/venv/.req-sha256, then exports HOTPATH_PYTHON
#                      (the tests that run the Python consumer examples and read the S3
#                      archive's Parquet with pyarrow read it; the kinesis_emulators bench runs
#                      moto server from it).
#   ensure_moto        ensure_venv (moto[server] is pinned in scripts/requirements-test.txt),
#                      then exports HOTPATH_MOTO_SERVER (its moto_server); each S3 test starts its
#                      own `moto_server -H 127.0.0.1 -p PORT` on a free port and stops it.
#   ensure_bench_venv  the same for scripts/compare_cryptofeed.sh: $TOOLS/venv-bench with
#                      scripts/requirements-bench.txt (cryptofeed 2.4.1), kept apart so that the
#                      test command never installs it; exports HOTPATH_BENCH_PYTHON.
#
# TOOLS defaults to <repo>/target/tools; set HOTPATH_TOOLS to put the tools elsewhere.

HOTPATH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${HOTPATH_TOOLS:-$HOTPATH_REPO/target/tools}"
KINESALITE_VERSION="3.3.3"

# Runs "$@" as root: directly when we are root, through sudo when it exists; fails otherwise.
_hotpath_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "error: need root (or sudo) to run: $*" >&2
    return 1
  fi
}

# Installs Debian packages "$@" with apt-get (quietly).
_hotpath_apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; install $* by hand" >&2
    return 1
  fi
  _hotpath_as_root apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive _hotpath_as_root apt-get install -y -qq "$@"
}

# Exports HOTPATH_REDIS_SERVER if redis-server is on PATH.
_hotpath_export_redis() {
  if command -v redis-server >/dev/null 2>&1; then
    HOTPATH_REDIS_SERVER="$(command -v redis-server)"
    export HOTPATH_REDIS_SERVER
  fi
}

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server not found: installing it with apt-get" >&2
    if ! _hotpath_apt_install redis-server || ! command -v redis-server >/dev/null 2>&1; then
      echo "error: redis-server is required by the tests and could not be installed" \
        "(apt-get install redis-server)" >&2
      return 1
    fi
  fi
  _hotpath_export_redis
}

# The directory of the newest installed PostgreSQL's initdb, if any.
_hotpath_pg_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

ensure_postgres() {
  if ! _hotpath_pg_bin >/dev/null; then
    echo "PostgreSQL not found: installing it with apt-get" >&2
    if ! _hotpath_apt_install postgresql || ! _hotpath_pg_bin >/dev/null; then
      echo "error: PostgreSQL is required by the tests and could not be installed" \
        "(apt-get install postgresql)" >&2
      return 1
    fi
  fi
  HOTPATH_PG_BIN="$(_hotpath_pg_bin)"
  export HOTPATH_PG_BIN
}

ensure_prometheus() {
  if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    echo "prometheus not found: installing it with apt-get" >&2
    if ! _hotpath_apt_install prometheus || ! command -v promtool >/dev/null 2>&1; then
      echo "error: prometheus and promtool are required by the control plane tests and could" \
        "not be installed (apt-get install prometheus)" >&2
      return 1
    fi
  fi
  HOTPATH_PROMETHEUS="$(command -v prometheus)"
  HOTPATH_PROMTOOL="$(command -v promtool)"
  export HOTPATH_PROMETHEUS HOTPATH_PROMTOOL
}

ensure_kinesalite() {
  local cli="$TOOLS/kinesalite/node_modules/kinesalite/cli.js"
  if [ ! -f "$cli" ]; then
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
      echo "node/npm not found: installing them with apt-get" >&2
      if ! _hotpath_apt_install nodejs npm ||
        ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "error: node and npm are required to install kinesalite (the Kinesis emulator" \
          "of the tests) and could not be installed (apt-get install nodejs npm)" >&2
        return 1
      fi
    fi
    echo "installing kinesalite@$KINESALITE_VERSION into $TOOLS/kinesalite" >&2
    mkdir -p "$TOOLS/kinesalite"
    if ! npm install --no-audit --no-fund --prefix "$TOOLS/kinesalite" \
      "kinesalite@$KINESALITE_VERSION" >&2 || [ ! -f "$cli" ]; then
      echo "error: npm install kinesalite@$KINESALITE_VERSION failed ($cli missing)" >&2
      return 1
    fi
  fi
  if ! command -v node >/dev/null 2>&1; then
    echo "error: kinesalite is installed at $cli but node is not on PATH" >&2
    return 1
  fi
  HOTPATH_KINESALITE="$cli"
  export HOTPATH_KINESALITE
  _hotpath_export_redis
}

# Makes the venv $1 if missing and installs the requirements file $2 into it when that file's
# sha256 differs from the one stamped in $1/.req-sha256.
_hotpath_venv() {
  local venv="$1" req="$2"
  if [ ! -x "$venv/bin/python" ]; then
    echo "creating the Python venv $venv" >&2
    mkdir -p "$TOOLS"
    if ! python3 -m venv "$venv"; then
      echo "error: python3 -m venv failed (apt-get install python3-venv)" >&2
      return 1
    fi
  fi
  local sha
  sha="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ "$(cat "$venv/.req-sha256" 2>/dev/null)" != "$sha" ]; then
    echo "installing $req into $venv" >&2
    if ! "$venv/bin/pip" install -q -r "$req"; then
      echo "error: pip install -r $req failed" >&2
      return 1
    fi
    echo "$sha" >"$venv/.req-sha256"
  fi
}

ensure_venv() {
  _hotpath_venv "$TOOLS/venv" "$HOTPATH_REPO/scripts/requirements-test.txt" || return 1
  HOTPATH_PYTHON="$TOOLS/venv/bin/python"
  export HOTPATH_PYTHON
}

ensure_bench_venv() {
  _hotpath_venv "$TOOLS/venv-bench" "$HOTPATH_REPO/scripts/requirements-bench.txt" || return 1
  HOTPATH_BENCH_PYTHON="$TOOLS/venv-bench/bin/python"
  export HOTPATH_BENCH_PYTHON
}

ensure_moto() {
  ensure_venv || return 1
  if [ ! -x "$TOOLS/venv/bin/moto_server" ]; then
    echo "error: moto_server is missing from $TOOLS/venv (moto[server] is in" \
      "scripts/requirements-test.txt; remove $TOOLS/venv/.req-sha256 to reinstall)" >&2
    return 1
  fi
  HOTPATH_MOTO_SERVER="$TOOLS/venv/bin/moto_server"
  export HOTPATH_MOTO_SERVER
}
