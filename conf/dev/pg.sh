#!/usr/bin/env bash
# A private PostgreSQL server for development and tests.
#
#   conf/dev/pg.sh start DATADIR PORT [NAME=VALUE...]
#       initialise DATADIR if needed (trust auth, user postgres, UTF8, C locale),
#       start a server listening on 127.0.0.1:PORT only, unix socket in
#       PARENT/sock, log in PARENT/postgres.log (PARENT = the directory holding
#       DATADIR), wait until it accepts connections. NAME=VALUE are extra server
#       settings.
#   conf/dev/pg.sh stop DATADIR      fast shutdown; no error when not running
#   conf/dev/pg.sh status DATADIR    exit 0 when running, 3 when not
#
# As root the server runs as the "postgres" system user (PostgreSQL refuses to run
# as root): PARENT is given to that user, and it must be able to reach PARENT
# (every directory above it searchable); when it cannot, this script fails and
# says so, and the caller picks a directory elsewhere (under /tmp, say).
# Not as root, everything runs as the current user.
set -euo pipefail

die() { echo "pg.sh: $*" >&2; exit 1; }

find_pgbin() {
    local d
    if [ -n "${PGBIN:-}" ] && [ -x "$PGBIN/postgres" ]; then
        echo "$PGBIN"; return
    fi
    if [ -x /usr/lib/postgresql/15/bin/postgres ]; then
        echo /usr/lib/postgresql/15/bin; return
    fi
    d=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null |
        sort -V | tail -n 1)
    [ -n "$d" ] || die "no PostgreSQL server found (install postgresql-15: conf/dev/deps.sh build)"
    dirname "$d"
}

PGBIN=$(find_pgbin)

if [ "$(id -u)" -eq 0 ]; then
    RUNNER=postgres
    id "$RUNNER" >/dev/null 2>&1 || die "running as root, but there is no '$RUNNER' user to run PostgreSQL as"
    as_runner() { (cd / && runuser -u "$RUNNER" -- "$@"); }
else
    RUNNER=$(id -un)
    as_runner() { "$@"; }
fi

absdir() { # absolute path of $1 without requiring it to exist
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$(pwd -P)" "$1" ;;
    esac
}

# GUC string literal: 'value' with ' doubled.
guc_quote() { printf "'%s'" "${1//\'/\'\'}"; }

is_running() {
    [ -f "$DATADIR/postmaster.pid" ] || return 1
    as_runner "$PGBIN/pg_ctl" -D "$DATADIR" status >/dev/null 2>&1
}

cmd=${1:-}
[ $# -ge 2 ] || die "usage: pg.sh start DATADIR PORT [NAME=VALUE...] | stop DATADIR | status DATADIR"
DATADIR=$(absdir "$2")
DATADIR=${DATADIR%/}
PARENT=$(dirname "$DATADIR")
SOCKDIR=$PARENT/sock
LOG=$PARENT/postgres.log

case "$cmd" in
start)
    [ $# -ge 3 ] || die "usage: pg.sh start DATADIR PORT [NAME=VALUE...]"
    PORT=$3
    shift 3
    case "$PORT" in ''|*[!0-9]*) die "bad port: $PORT" ;; esac

    mkdir -p "$PARENT"
    if [ "$(id -u)" -eq 0 ]; then
        chown "$RUNNER": "$PARENT"
        if ! as_runner test -x "$PARENT" -a -w "$PARENT"; then
            die "the '$RUNNER' user cannot reach $PARENT (a directory above it is not searchable" \
                "by that user, e.g. a home directory of mode 700); use a data directory" \
                "that user can reach, e.g. under /tmp"
        fi
    fi
    as_runner mkdir -p "$SOCKDIR"
    as_runner chmod 0700 "$SOCKDIR"

    if is_running; then
        die "a server is already running on $DATADIR (stop it first: pg.sh stop $DATADIR)"
    fi

    if [ ! -f "$DATADIR/PG_VERSION" ]; then
        if ! as_runner "$PGBIN/initdb" -D "$DATADIR" -A trust -U postgres -E UTF8 \
                --locale=C --no-sync >"$PARENT/initdb.log" 2>&1; then
            cat "$PARENT/initdb.log" >&2
            die "initdb failed"
        fi
    fi

    # The settings of this run go to a file of their own, included from
    # postgresql.conf (no quoting trouble with paths on a command line).
    conf=$DATADIR/postgresql.todod.conf
    {
        echo "# written by conf/dev/pg.sh at each start"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PORT"
        # a unix socket path is limited to 107 bytes: without room, TCP only
        if [ $(( ${#SOCKDIR} + 20 )) -le 107 ]; then
            echo "unix_socket_directories = $(guc_quote "$SOCKDIR")"
        else
            echo "unix_socket_directories = ''"
        fi
        echo "max_connections = 200"
        echo "shared_buffers = 256MB"
        echo "log_line_prefix = '%m [%p] %q%u@%d '"
        for kv in "$@"; do
            case "$kv" in
                *=*) echo "${kv%%=*} = $(guc_quote "${kv#*=}")" ;;
                *) die "bad setting (want NAME=VALUE): $kv" ;;
            esac
        done
    } | as_runner tee "$conf" >/dev/null
    if ! grep -qxF "include_if_exists = 'postgresql.todod.conf'" "$DATADIR/postgresql.conf"; then
        echo "include_if_exists = 'postgresql.todod.conf'" | as_runner tee -a "$DATADIR/postgresql.conf" >/dev/null
    fi

    as_runner touch "$LOG"
    if ! as_runner "$PGBIN/pg_ctl" -D "$DATADIR" -l "$LOG" -w -t 60 start >/dev/null; then
        echo "pg.sh: PostgreSQL did not start; the end of $LOG:" >&2
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
    for _ in $(seq 1 300); do
        if "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres; then
            exit 0
        fi
        sleep 0.1
    done
    echo "pg.sh: PostgreSQL started but does not accept connections on 127.0.0.1:$PORT; the end of $LOG:" >&2
    tail -n 20 "$LOG" >&2 || true
    exit 1
    ;;
stop)
    [ -d "$DATADIR" ] || exit 0
    if is_running; then
        as_runner "$PGBIN/pg_ctl" -D "$DATADIR" -m fast -w -t 60 stop >/dev/null
    fi
    ;;
status)
    if is_running; then
        echo "running: $DATADIR"
        exit 0
    fi
    echo "not running: $DATADIR"
    exit 3
    ;;
*)
    die "unknown command '$cmd' (start, stop or status)"
    ;;
esac
