# shellcheck shell=bash
# Shared by tests/bench/api.sh and tests/bench/perftest.sh (sourced, not run).
#
# Gives: a private work directory under /tmp, a private PostgreSQL on a free
# loopback port with an empty "todod" database, todod started with a
# configuration written for the run, bounded commands, medians, and one cleanup
# (EXIT trap; Ctrl-C, SIGTERM and SIGHUP go through it too) that stops all that
# was started and removes the work directory (BENCH_KEEP=1 keeps it).
#
# The caller sets BENCH_NAME before sourcing. Progress goes to stderr; results
# (configuration, tables) go to stdout.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
PG_SH=$BENCH_ROOT/conf/dev/pg.sh
TODOD_BIN=$BENCH_ROOT/build/todod
BENCH_NAME=${BENCH_NAME:-bench}
BENCH_SECONDS=${BENCH_SECONDS:-5}
BENCH_RUNS=${BENCH_RUNS:-3}

# todod must read its database from the configuration written here, and the
# clients must reach only the private server.
unset DATABASE_URL PGOPTIONS PGSERVICE PGSERVICEFILE

# Called as "command || bench_die ...": a command that ended on an interrupt
# passes its status on, so that the run ends as interrupted, not as failed.
bench_die() {
    local st=$?
    case "$st" in
        129 | 130 | 143)
            echo "$BENCH_NAME: interrupted" >&2
            exit "$st"
            ;;
    esac
    echo "$BENCH_NAME: $*" >&2
    exit 1
}
bench_note() { echo "$BENCH_NAME: $*" >&2; }

case "$BENCH_SECONDS" in '' | *[!0-9]* | 0) bench_die "BENCH_SECONDS must be a whole number of seconds >= 1" ;; esac
case "$BENCH_RUNS" in '' | *[!0-9]* | 0) bench_die "BENCH_RUNS must be a whole number >= 1" ;; esac

bench_find_pgbin() {
    local d
    for d in "${PGBIN:-}" /usr/lib/postgresql/15/bin; do
        if [ -n "$d" ] && [ -x "$d/psql" ] && [ -x "$d/pgbench" ]; then
            echo "$d"
            return
        fi
    done
    d=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/pgbench' 2>/dev/null |
        sort -V | tail -n 1)
    [ -n "$d" ] || bench_die "pgbench and psql not found (install postgresql: conf/dev/deps.sh build)"
    dirname "$d"
}
PGBIN=$(bench_find_pgbin)

bench_need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || bench_die "$t is needed and not installed"
    done
}
bench_need curl timeout setsid awk sort
[ -x "$TODOD_BIN" ] || bench_die "$TODOD_BIN is missing: run make first"

# ---- cleanup ----

BENCH_DIR=
PG_DATA=
PG_PORT=
TODOD_PID=
HTTP_PORT=
BENCH_EXTRA_PIDS=() # started with setsid: each leads a process group
BENCH_EXTRA_PG=()   # data directories of further PostgreSQL servers (standbys)
BENCH_CHILD=

# shellcheck disable=SC2317  # called by the traps
bench_cleanup() {
    local rc=$? pid
    # A second Ctrl-C must not cut the cleanup short.
    trap '' INT TERM HUP
    trap - EXIT
    set +e
    for pid in $BENCH_CHILD; do
        kill -TERM "$pid" 2>/dev/null
    done
    # Extra servers run in sessions of their own (setsid): their whole process
    # group is stopped, workers included.
    for pid in "${BENCH_EXTRA_PIDS[@]}"; do
        kill -TERM -- "-$pid" "$pid" 2>/dev/null
    done
    bench_stop_todod
    for pid in "${BENCH_EXTRA_PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 -- "-$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    for pid in "${BENCH_EXTRA_PG[@]}"; do
        "$PG_SH" stop "$pid" >/dev/null 2>&1 || bench_note "could not stop PostgreSQL in $pid"
    done
    if [ -n "$PG_DATA" ]; then
        "$PG_SH" stop "$PG_DATA" >/dev/null 2>&1 || bench_note "could not stop PostgreSQL in $PG_DATA"
    fi
    if [ -n "$BENCH_DIR" ] && [ -d "$BENCH_DIR" ]; then
        # Kept: everything with BENCH_KEEP=1; the logs after a failure (not after
        # a signal) unless BENCH_KEEP=0.
        if [ "${BENCH_KEEP:-}" = 1 ]; then
            bench_note "work directory kept: $BENCH_DIR (remove it when done)"
        elif [ "${BENCH_KEEP:-}" != 0 ] && [ "$rc" -ne 0 ] && [ "$rc" -ne 129 ] &&
            [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ]; then
            rm -rf "$BENCH_DIR/pg/data"
            bench_note "logs kept in $BENCH_DIR (remove it when done)"
        else
            rm -rf "$BENCH_DIR"
        fi
    fi
    exit "$rc"
}
# Each signal stops the bounded command running (if any) and exits; the EXIT
# trap then cleans up. Command substitutions reset traps: bench_bounded sets
# them again there.
bench_traps() {
    trap 'bench_stop_child; exit 130' INT
    trap 'bench_stop_child; exit 143' TERM
    trap 'bench_stop_child; exit 129' HUP
}
# shellcheck disable=SC2317  # called by the traps
bench_stop_child() {
    if [ -n "$BENCH_CHILD" ]; then
        kill -TERM "$BENCH_CHILD" 2>/dev/null || true
    fi
}
trap bench_cleanup EXIT
bench_traps

# todod's db_connections and db_write_connections for the run: the shipped
# defaults (not written in the configuration) unless BENCH_DB_CONNECTIONS or
# BENCH_DB_WRITE_CONNECTIONS say.
DB_CONNECTIONS=${BENCH_DB_CONNECTIONS:-}
DB_WRITE_CONNECTIONS=${BENCH_DB_WRITE_CONNECTIONS:-}
case "$DB_CONNECTIONS" in *[!0-9]*) bench_die "BENCH_DB_CONNECTIONS must be a number" ;; esac
case "$DB_WRITE_CONNECTIONS" in *[!0-9]*) bench_die "BENCH_DB_WRITE_CONNECTIONS must be a number" ;; esac

BENCH_DIR=$(mktemp -d /tmp/todod-bench.XXXXXX)
# The postgres user (when run as root) must reach BENCH_DIR/pg.
chmod 0711 "$BENCH_DIR"

# ---- small helpers ----

# The median of the numbers given (mean of the two middle ones for an even count).
bench_median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) exit 1
              if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# a / b with the given number of decimals; "n/a" when either is not a positive number.
bench_ratio() {
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN {
        if (a + 0 > 0 && b + 0 > 0) printf "%.*f\n", d, a / b; else print "n/a" }'
}

# bench_target TEXT CONDITION: records "TEXT: met" or "TEXT: NOT met" in
# BENCH_VERDICTS (CONDITION is an awk expression); BENCH_MISSED=1 when not met.
BENCH_VERDICTS=()
BENCH_MISSED=0
# shellcheck disable=SC2034  # BENCH_MISSED is read by the scripts that source this file
bench_target() {
    if awk "BEGIN { exit !($2) }"; then
        BENCH_VERDICTS+=("$1: met")
    else
        BENCH_VERDICTS+=("$1: NOT met")
        BENCH_MISSED=1
    fi
}

# Rounds a number to the given decimals.
bench_fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { printf "%.*f\n", d, v }'; }

bench_port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A loopback TCP port nothing listens on (and not one already taken by this run),
# below the kernel's range of ephemeral ports, so that no outgoing connection
# holds it either.
bench_free_port() {
    local p i low hi=32768
    read -r hi _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    low=$((hi > 20000 ? 10000 : 1024))
    for i in $(seq 1 500); do
        p=$((low + (RANDOM * 32768 + RANDOM) % (hi - low)))
        [ "$p" = "$PG_PORT" ] && continue
        [ "$p" = "$HTTP_PORT" ] && continue
        bench_port_busy "$p" || {
            echo "$p"
            return
        }
        : "$i"
    done
    bench_die "no free port found"
}

# Runs a command bounded in time. It runs in the background (in a process
# group of its own, timeout's) while this shell waits for it: a signal then
# interrupts the wait at once and the trap stops the command. (In the
# foreground, a command that handles Ctrl-C itself, as wrk, which reports and
# exits 0, or psql, which cancels its query and exits 1, would hide the
# interrupt from this shell.)
bench_bounded() {
    local secs=$1 st=0
    shift
    bench_traps
    if [ -t 0 ]; then
        timeout -k 5 "$secs" "$@" </dev/null &
    else
        timeout -k 5 "$secs" "$@" <&0 &
    fi
    BENCH_CHILD=$!
    wait "$BENCH_CHILD" || st=$?
    BENCH_CHILD=
    return "$st"
}

# ---- PostgreSQL ----

bench_psql() {
    bench_bounded 900 "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d todod "$@"
}
# One value (or rows, '|'-separated) from a query.
bench_sql() { bench_psql -At -c "$1"; }

# Starts the private server (extra NAME=VALUE settings allowed) and creates the database.
# shellcheck disable=SC2120  # the settings are optional
bench_start_pg() {
    PG_PORT=$(bench_free_port)
    mkdir -p "$BENCH_DIR/pg"
    PG_DATA=$BENCH_DIR/pg/data
    local extra=()
    read -ra extra <<<"${BENCH_PG_SETTINGS:-}"
    bench_note "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    "$PG_SH" start "$PG_DATA" "$PG_PORT" "$@" "${extra[@]}" >&2 || bench_die "PostgreSQL did not start"
    bench_bounded 60 "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres \
        -d postgres -c 'CREATE DATABASE todod' >&2
}

bench_pg_version() { bench_sql 'SHOW server_version'; }

# "name=value" for the PostgreSQL settings that matter to these benchmarks.
bench_pg_settings() {
    bench_sql "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
               FROM pg_settings WHERE name IN ('max_connections', 'shared_buffers', 'work_mem',
               'fsync', 'synchronous_commit', 'wal_level', 'max_wal_size', 'checkpoint_timeout',
               'full_page_writes', 'max_parallel_workers_per_gather', 'jit', 'effective_cache_size')"
    if [ -n "${BENCH_PG_SETTINGS:-}" ]; then
        echo "(BENCH_PG_SETTINGS: ${BENCH_PG_SETTINGS})"
    fi
}

# ---- todod ----

bench_url() { echo "http://127.0.0.1:$HTTP_PORT$1"; }

# Master's children, one pid a line.
bench_worker_pids() {
    [ -n "$TODOD_PID" ] || return 0
    if [ -r "/proc/$TODOD_PID/task/$TODOD_PID/children" ]; then
        tr ' ' '\n' <"/proc/$TODOD_PID/task/$TODOD_PID/children" | sed '/^$/d'
    else
        pgrep -P "$TODOD_PID" || true
    fi
}

# bench_start_todod WORKERS [KEY = VALUE lines...]
# Writes BENCH_DIR/todod.conf, starts todod, waits until /health answers "ok"
# (the database is reachable and todod has created its schema) and every worker
# runs. The port stays the same when todod is started again in the same run.
bench_start_todod() {
    local workers=$1 i line n
    shift
    [ -n "$HTTP_PORT" ] || HTTP_PORT=$(bench_free_port)
    TODOD_CONF=$BENCH_DIR/todod.conf
    {
        echo "# written by tests/bench for one run"
        echo "listen = 127.0.0.1:$HTTP_PORT"
        echo "workers = $workers"
        echo "database_url = \"postgresql://postgres@127.0.0.1:$PG_PORT/todod\""
        [ -z "$DB_CONNECTIONS" ] || echo "db_connections = $DB_CONNECTIONS"
        [ -z "$DB_WRITE_CONNECTIONS" ] || echo "db_write_connections = $DB_WRITE_CONNECTIONS"
        echo "log_level = warn"
        echo "access_log = off"
        echo "shutdown_timeout = 2"
        for line in "$@"; do echo "$line"; done
    } >"$TODOD_CONF"
    "$TODOD_BIN" -t -c "$TODOD_CONF" >/dev/null || bench_die "todod refuses the configuration written"
    bench_note "starting todod on 127.0.0.1:$HTTP_PORT (workers=$workers)"
    # In a session of its own: a Ctrl-C reaches this script only, whose cleanup
    # then stops todod (the master stops its workers).
    setsid "$TODOD_BIN" -c "$TODOD_CONF" >"$BENCH_DIR/todod.log" 2>&1 </dev/null &
    TODOD_PID=$!
    for i in $(seq 1 300); do
        if ! kill -0 "$TODOD_PID" 2>/dev/null; then
            tail -n 20 "$BENCH_DIR/todod.log" >&2
            TODOD_PID=
            bench_die "todod exited at start"
        fi
        n=$(bench_worker_pids | wc -l)
        if [ "$n" -eq "$workers" ] &&
            [ "$(curl -s --max-time 2 "$(bench_url /health)" 2>/dev/null || true)" = ok ]; then
            return 0
        fi
        sleep 0.1
        : "$i"
    done
    tail -n 20 "$BENCH_DIR/todod.log" >&2
    bench_die "todod did not answer ok on /health in 30 s"
}

# Stops todod (SIGTERM, then SIGKILL after 10 s) and waits for it.
bench_stop_todod() {
    local workers pid i
    if [ -n "$TODOD_PID" ] && kill -0 "$TODOD_PID" 2>/dev/null; then
        workers=$(bench_worker_pids)
        kill -TERM "$TODOD_PID" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$TODOD_PID" 2>/dev/null || break
            sleep 0.1
            : "$i"
        done
        if kill -0 "$TODOD_PID" 2>/dev/null; then
            bench_note "todod did not stop in 10 s: killing it"
            kill -KILL "$TODOD_PID" 2>/dev/null || true
        fi
        for pid in $workers; do
            kill -KILL "$pid" 2>/dev/null || true
        done
        wait "$TODOD_PID" 2>/dev/null || true
    fi
    TODOD_PID=
    return 0
}

# The configuration file written for todod, its settings on one line.
bench_todod_conf() {
    sed -e '/^#/d' -e '/^$/d' "$TODOD_CONF" | awk '{ printf "%s%s", (NR > 1 ? "; " : ""), $0 } END { print "" }'
}

# Worker memory, one line per worker.
bench_worker_rss() {
    local pid rss hwm
    for pid in $(bench_worker_pids); do
        rss=$(awk '/^VmRSS:/ { print $2 " " $3 }' "/proc/$pid/status" 2>/dev/null || true)
        hwm=$(awk '/^VmHWM:/ { print $2 " " $3 }' "/proc/$pid/status" 2>/dev/null || true)
        echo "- worker pid $pid: VmRSS ${rss:-?} (peak VmHWM ${hwm:-?})"
    done
}

bench_machine() {
    local cpu
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    echo "$(nproc) CPUs${cpu:+ ($cpu)}, Linux $(uname -r)"
}
