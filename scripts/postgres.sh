#!/usr/bin/env bash
# A PostgreSQL server of kiln's own (Debian's postgresql 15) on a data directory and port of ours:
#   scripts/postgres.sh start DIR PORT   initdb on first use, then start; prints the database URL
#   scripts/postgres.sh stop DIR         a fast shutdown
# KILN_PG_EXTRA adds server settings (e.g. "-c shared_preload_libraries=pg_stat_statements").
# It listens on 127.0.0.1 only, trusts local connections (a test and demo server, not a
# production one), and runs as the postgres user, which owns DIR.
source "$(dirname "$0")/lib.sh"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: scripts/postgres.sh start DIR PORT | stop DIR"
[ -x "$PG_BIN/initdb" ] || die "PostgreSQL 15 is not installed (scripts/setup.sh installs it)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
  start)
    port=${3:-}; [ -n "$port" ] || die "usage: scripts/postgres.sh start DIR PORT"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_pg "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    fi
    if ! as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=${KILN_PG_FSYNC:-on} -c max_connections=200 ${KILN_PG_EXTRA:-}" start >/dev/null \
        || { tail -20 "$dir/log" >&2; die "PostgreSQL did not start; see $dir/log"; }
    fi
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -f "$dir/data/PG_VERSION" ] || exit 0
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *) die "usage: scripts/postgres.sh start DIR PORT | stop DIR" ;;
esac
