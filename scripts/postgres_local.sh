#!/usr/bin/env bash
# A PostgreSQL server on 127.0.0.1 only (Debian's postgresql, trust authentication) for the tests
# of an Optuna study shared between sweeper processes: start (install if needed, a cluster under
# $BRAINSEG_POSTGRES_DIR, the database), stop, env (BRAINSEG_TEST_POSTGRES). Waits are bounded.
set -euo pipefail
STATE=${BRAINSEG_POSTGRES_DIR:-/tmp/brainseg-postgres}
PORT=${BRAINSEG_POSTGRES_PORT:-54329}
DATABASE=brainseg

bindir() { find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1; }

as_postgres() { runuser -u postgres -- "$@"; }

start() {
  [ -n "$(bindir)" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
  local bin; bin=$(bindir)
  mkdir -p "$STATE" && chown postgres "$STATE"
  [ -f "$STATE/data/PG_VERSION" ] || as_postgres "$bin/initdb" -D "$STATE/data" -U postgres -A trust >/dev/null
  as_postgres "$bin/pg_ctl" -D "$STATE/data" status >/dev/null 2>&1 || as_postgres "$bin/pg_ctl" \
    -D "$STATE/data" -l "$STATE/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $STATE" start >/dev/null
  as_postgres "$bin/psql" -h 127.0.0.1 -p "$PORT" -U postgres -Atc \
    "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" | grep -q 1 ||
    as_postgres "$bin/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DATABASE"
  echo "PostgreSQL on 127.0.0.1:$PORT, database $DATABASE (log: $STATE/server.log)"
}

stop() {
  local bin; bin=$(bindir)
  [ -n "$bin" ] && [ -f "$STATE/data/PG_VERSION" ] || return 0
  as_postgres "$bin/pg_ctl" -D "$STATE/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  start | stop) "$1" ;;
  env) echo "export BRAINSEG_TEST_POSTGRES=postgresql://postgres@127.0.0.1:$PORT/$DATABASE" ;;
  *) echo "usage: $0 start|env|stop" >&2; exit 2 ;;
esac
