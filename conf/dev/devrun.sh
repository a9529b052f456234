#!/usr/bin/env bash
# `make run`: build/todod in the foreground against a private PostgreSQL.
#
# The database lives in <repo>/.run/pgdata and is kept for the next run (or, when
# the postgres user cannot reach into the repository, in
# ${TMPDIR:-/tmp}/todod-run-<uid>-<hash of the repo path>). Port 54329 unless
# PGPORT_TODOD says otherwise (the next free one when that is taken).
# Ctrl-C (or SIGTERM to this script) stops todod gracefully, then PostgreSQL.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$ROOT"
PG_SH=$ROOT/conf/dev/pg.sh
BIN=$ROOT/build/todod
CONF=$ROOT/conf/todod.conf

[ -x "$BIN" ] || { echo "devrun: $BIN is missing: run make first" >&2; exit 1; }
[ -f "$CONF" ] || { echo "devrun: $CONF is missing" >&2; exit 1; }

# Where the data goes.
base=$ROOT/.run
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$ROOT"; then
    hash=$(printf '%s' "$ROOT" | sha256sum | cut -c1-10)
    base=${TMPDIR:-/tmp}/todod-run-$(id -u)-$hash
    echo "devrun: the postgres user cannot reach into $ROOT, so the database lives in $base"
fi
mkdir -p "$base"
DATADIR=$base/pgdata

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A server left running by an earlier run that was killed: stop it first.
if "$PG_SH" status "$DATADIR" >/dev/null 2>&1; then
    echo "devrun: stopping the PostgreSQL an earlier run left running"
    "$PG_SH" stop "$DATADIR"
fi

port=${PGPORT_TODOD:-54329}
case "$port" in ''|*[!0-9]*) echo "devrun: bad PGPORT_TODOD: $port" >&2; exit 1 ;; esac
tries=0
while port_busy "$port"; do
    tries=$((tries + 1))
    [ "$tries" -lt 200 ] || { echo "devrun: no free port found near ${PGPORT_TODOD:-54329}" >&2; exit 1; }
    echo "devrun: port $port is taken, trying $((port + 1))"
    port=$((port + 1))
done

PSQL=psql
for d in "${PGBIN:-}" /usr/lib/postgresql/15/bin; do
    if [ -n "$d" ] && [ -x "$d/psql" ]; then PSQL=$d/psql; break; fi
done

# From here on, whatever happens, PostgreSQL is stopped on the way out. A signal
# before todod runs ends the script (then the EXIT trap); once todod runs, it is
# passed on to todod, and the script ends when todod has exited.
child=
stopping=
# shellcheck disable=SC2317  # called by the EXIT trap
pg_stop() { "$PG_SH" stop "$DATADIR" || true; }
# shellcheck disable=SC2317  # called by the INT/TERM/HUP trap
on_signal() {
    stopping=1
    if [ -z "$child" ]; then exit 130; fi
    kill -TERM "$child" 2>/dev/null || true
}
trap pg_stop EXIT
trap on_signal INT TERM HUP

"$PG_SH" start "$DATADIR" "$port"

if [ "$("$PSQL" -X -At -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -c "SELECT 1 FROM pg_database WHERE datname = 'todod'")" != 1 ]; then
    "$PSQL" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c 'CREATE DATABASE todod'
fi
export DATABASE_URL="postgresql://postgres@127.0.0.1:$port/todod"

# The address todod will listen on, as conf/todod.conf says.
listen=$(sed -n 's/^[[:space:]]*listen[[:space:]]*=[[:space:]]*\([^#[:space:]]*\).*/\1/p' "$CONF" | tail -n 1)
listen=${listen:-127.0.0.1:3000}
case "$listen" in
    0.0.0.0:*) listen=127.0.0.1:${listen#0.0.0.0:} ;;
    \[::\]:*) listen="[::1]:${listen#\[::\]:}" ;;
esac
url=http://$listen

cat <<EOT

PostgreSQL: $DATABASE_URL (data in $DATADIR)
todod:      $url  (conf/todod.conf; Ctrl-C stops both)

  curl -i $url/health
  curl -s -X POST -H 'Content-Type: application/json' -d '{"title":"buy milk"}' $url/todos
  curl -s '$url/todos?page=1&limit=10'
  curl -s -X POST -H 'Content-Type: application/json' \\
       -d '{"message_count":100000,"batch_size":1000}' $url/todos/performance-test
  curl -s $url/metrics
  curl -s $url/stats
  kill -HUP <master pid>     # reload conf/todod.conf

EOT

# todod in its own session, so that a Ctrl-C reaches only this script, which
# passes it on to the master once; the master stops its workers itself.
# (SIGINT/SIGQUIT would be ignored by a background child without the trap reset.)
( trap - INT QUIT; exec setsid "$BIN" -c "$CONF" ) &
child=$!

rc=0
while :; do
    if wait "$child"; then rc=0; else rc=$?; fi
    # wait returns early when a trapped signal arrives; go on waiting for todod
    if ! kill -0 "$child" 2>/dev/null; then break; fi
done
[ -n "$stopping" ] && echo "devrun: todod exited ($rc); stopping PostgreSQL"
exit "$rc"
