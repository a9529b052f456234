#!/usr/bin/env bash
# HTTP API benchmark: todod at its shipped defaults (2 workers) under 64
# keep-alive connections, each request set against a ceiling measured in the
# same run.
#
#   make bench-api            (or tests/bench/api.sh after make)
#
# Starts a private PostgreSQL (fresh data directory in /tmp, free loopback port),
# nginx when installed (the ceiling of /health, and a sink for traces) and todod
# (workers = 2, every other key at its default), seeds 1,000,000 rows, then
# measures with wrk (2 threads, 64 connections):
#   GET /todos/{id}       vs pgbench running todod's own SELECT, 64 and 4
#                         clients (the better of the two is the ceiling);
#   GET /todos?limit=10   vs the replaced service's per-request queries
#                         (count(*) of the table, then ORDER BY created_at DESC
#                         LIMIT 10 OFFSET 0), and the figure before this design;
#   GET /todos?after=C&limit=10, C at depth 900,000 (a cursor page: the same
#                         rows as page=90000) vs page 1 (their runs alternate),
#                         and page=90000&limit=10 at its real cost (2 connections,
#                         one request at a time per worker: a page by number reads
#                         the 900,000 rows it skips);
#   GET /health           vs nginx `return 200` with as many workers;
#   POST /todos           vs pgbench: todod's INSERT ... RETURNING;
#   PUT /todos/{id}       vs pgbench: todod's UPDATE ... RETURNING of a random row;
#   DELETE /todos/{id}    vs pgbench: todod's DELETE, every delete finding its row;
#   GET /todos/{id} with tracing on (every request sampled, spans exported to
#                         nginx) vs tracing off (a second todod on the same
#                         database; their runs alternate);
#   GET /todos/{id} with auth = jwt and an ES256 token, and with an HS256 one,
#                         vs auth = off (a third todod on the same database;
#                         their runs alternate; PyJWT mints the tokens);
#   GET /todos/{id} served by a streaming standby (pg_basebackup -R, a fourth
#                         todod with database_read_url) vs served by the
#                         primary (the first todod; their runs alternate), and
#                         the share of the fourth todod's reads the primary
#                         served (todod_db_reads_total). On one machine the
#                         standby shares the CPUs: this measures the cost of
#                         routing, not the gain of a second machine.
# Then writes to a few rows, 32 clients (wrk -c32, pgbench -c 32):
#   PUT /todos/{id}       {"done": true|false} at random, of a random one of
#                         1,000 rows, and of 10 hot rows, vs pgbench running
#                         the same UPDATE on the same rows;
#   a mix on 10 hot rows  half PUTs as above, a quarter POSTs, a quarter
#                         DELETEs (each of a row of its own), vs pgbench
#                         running the same statements in the same proportions;
#   and PostgreSQL's log is searched for deadlocks after each todod run.
# pgbench runs -M prepared, one statement a transaction, 64 clients (32 for
# the few rows), 2 threads,
# on the same database and schema (todod's indexes and count triggers). Each
# figure is the median of BENCH_RUNS runs (default 3) of BENCH_SECONDS seconds
# (default 5); every wrk measurement has a 1 s warm-up first. The report ends
# with each target and whether it was met.
#
# Environment: BENCH_SECONDS, BENCH_RUNS, BENCH_DB_CONNECTIONS and
# BENCH_DB_WRITE_CONNECTIONS (todod's db_connections and db_write_connections;
# unset: the shipped defaults), BENCH_DELETE_CAP (deletes per second the seeded
# rows allow, default 50000, above the DELETE rate tests/README.md gives),
# BENCH_MIX_DELETE_CAP (the same for the hot-row mix, default 10000), BENCH_PG_SETTINGS
# (extra PostgreSQL settings, "name=value name=value"), BENCH_KEEP=1 (keep the
# work directory), PGBIN (PostgreSQL binaries). Everything started is stopped on exit, Ctrl-C included.
# Exit status 1 when a request failed or the row counts disagree, 2 when a
# target was not met.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

BENCH_NAME=bench-api
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WORKERS=2
THREADS=2
CONNS=64
HOT_CONNS=32 # writes to a few rows
HOT_ROWS=10
LIST_ROWS=1000000
LIST_BEFORE=11765 # req/s: GET /todos?limit=10 as tests/README.md had it before the write connections (2026-11-26)
bench_need wrk

echo "# todod API benchmark"
echo
echo "Reproduce: \`make bench-api\` (tests/bench/api.sh; defaults BENCH_SECONDS=5 BENCH_RUNS=3)"
echo

bench_start_pg
bench_start_todod "$WORKERS"

cat <<EOT
Configuration:
- machine: $(bench_machine); loopback only, wrk, pgbench, nginx, todod and PostgreSQL share the CPUs
- todod $("$TODOD_BIN" -V | awk '{ print $2 }'), its configuration file: \`$(bench_todod_conf)\` (every other key at its default)
- PostgreSQL $(bench_pg_version): $(bench_pg_settings)
- load: wrk -t$THREADS -c$CONNS -d${BENCH_SECONDS}s (1 s warm-up first); pgbench -n -M prepared -c $CONNS -j $THREADS -T $BENCH_SECONDS; $HOT_CONNS connections and clients for the writes to a few rows
- each figure: median of $BENCH_RUNS runs

EOT

# ---- seed ----

# Deterministic ids: row k of a range is PREFIX-%012d (decimal digits are hex
# digits too), so that wrk and pgbench can name rows without a lookup.
ID_MAIN=00000000-0000-4000-8000     # the 1,000,000 rows read, listed and updated
ID_DEL_HTTP=00000000-0000-4000-9000 # rows deleted through DELETE /todos/{id}
ID_DEL_PG=00000000-0000-4000-a000   # rows deleted by pgbench
ID_MIX_HTTP=00000000-0000-4000-b000 # rows deleted by the hot-row mix through DELETE /todos/{id}
ID_MIX_PG=00000000-0000-4000-c000   # rows deleted by pgbench's hot-row mix
uuid_sql() { echo "('$1-' || lpad(($2)::text, 12, '0'))::uuid"; }

# seed PREFIX COUNT: COUNT rows PREFIX-000000000001 .. with distinct
# timestamps, one second apart, older than every row already there, as a table
# filled over time would have.
seed() {
    bench_psql -c "INSERT INTO todos (id, title, done, created_at, updated_at)
        SELECT $(uuid_sql "$1" k), 'seeded todo #' || k, k % 2 = 0, ts, ts
        FROM (SELECT k, coalesce((SELECT min(created_at) FROM todos), now())
                        - k * interval '1 second' AS ts
              FROM generate_series(1, $2) k) s" >&2
    # VACUUM (ANALYZE): statistics, and the hint bits and visibility map a
    # table of that age would have (which helps the old design's count(*) most).
    bench_psql -c 'VACUUM (ANALYZE) todos' >&2
    # The seed's dirty pages written now, not by a checkpoint during the measurements.
    bench_psql -c 'CHECKPOINT' >&2
}

bench_note "seeding $LIST_ROWS rows with one INSERT ... SELECT"
seed "$ID_MAIN" "$LIST_ROWS"
TODO_ID=$ID_MAIN-$(printf '%012d' 1)

check_counts() { # expected
    local exact kept
    exact=$(bench_sql 'SELECT count(*) FROM todos')
    kept=$(bench_sql 'SELECT coalesce(sum(n), 0) FROM todod_todo_count')
    if [ "$exact" != "$kept" ] || { [ -n "${1:-}" ] && [ "$exact" != "$1" ]; }; then
        echo "CHECK FAILED: count(*) = $exact, trigger-kept count = $kept${1:+, expected $1}"
    else
        echo "Row count check: count(*) = $exact = trigger-kept count."
    fi
}
count_line=$(check_counts "$LIST_ROWS")

code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$(bench_url "/todos/$TODO_ID")")
[ "$code" = 200 ] || bench_die "GET /todos/$TODO_ID answered $code"
page=$(curl -s --max-time 30 "$(bench_url '/todos?limit=10')")
total=$(printf '%s' "$page" | sed -n 's/.*"total" *: *\([0-9]*\).*/\1/p')
ids=$(printf '%s' "$page" | grep -o '"id" *: *"' | wc -l)
if [ "$total" != "$LIST_ROWS" ] || [ "$ids" != 10 ]; then
    bench_die "GET /todos?limit=10 gave total=$total and $ids todos (want $LIST_ROWS and 10)"
fi

# ---- wrk and pgbench ----

# BENCH_MODE: "" (the URL as given; BENCH_BODY, when set, is POSTed as JSON),
# "put" (PUT of a random one of the BENCH_ROWS main rows), "delete" (each
# thread deletes its own run of rows: BENCH_BASE + thread * BENCH_STRIDE + 1, + 2, ...),
# "toggle" (PUT {"done": true|false} at random of a random one of the
# BENCH_ROWS main rows) or "mix" (half toggles, a quarter POSTs, a quarter
# DELETEs as "delete" does, of rows named by BENCH_DEL_PREFIX).
cat >"$BENCH_DIR/wrk.lua" <<'EOF'
local mode = os.getenv("BENCH_MODE") or ""
local body = os.getenv("BENCH_BODY") or ""
local auth = os.getenv("BENCH_AUTH") or ""
local nthreads = 0

if auth ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. auth
end

function setup(thread)
    thread:set("tid", nthreads)
    nthreads = nthreads + 1
end

if mode == "" and body ~= "" then
    wrk.method = "POST"
    wrk.body = body
    wrk.headers["Content-Type"] = "application/json"
elseif mode == "put" then
    local rows = tonumber(os.getenv("BENCH_ROWS"))
    local prefix = os.getenv("BENCH_PREFIX")
    local headers = { ["Content-Type"] = "application/json" }
    function init(args)
        math.randomseed(os.time() * 1000 + tid)
    end
    function request()
        return wrk.format("PUT", string.format("/todos/%s-%012d", prefix, math.random(1, rows)),
            headers, body)
    end
elseif mode == "delete" then
    local prefix = os.getenv("BENCH_PREFIX")
    local base = tonumber(os.getenv("BENCH_BASE"))
    local stride = tonumber(os.getenv("BENCH_STRIDE"))
    local n = 0
    function request()
        n = n + 1
        if n > stride then
            n = stride -- out of seeded rows: answered 404, counted as an error
        end
        return wrk.format("DELETE", string.format("/todos/%s-%012d", prefix, base + tid * stride + n))
    end
elseif mode == "toggle" or mode == "mix" then
    local rows = tonumber(os.getenv("BENCH_ROWS"))
    local prefix = os.getenv("BENCH_PREFIX")
    local del_prefix = os.getenv("BENCH_DEL_PREFIX")
    local base = tonumber(os.getenv("BENCH_BASE") or "0")
    local stride = tonumber(os.getenv("BENCH_STRIDE") or "0")
    local headers = { ["Content-Type"] = "application/json" }
    local toggles = { '{"done":true}', '{"done":false}' }
    local n = 0
    function init(args)
        math.randomseed(os.time() * 1000 + tid)
    end
    function request()
        local r = mode == "mix" and math.random() or 0
        if r < 0.5 then
            return wrk.format("PUT", string.format("/todos/%s-%012d", prefix, math.random(1, rows)),
                headers, toggles[math.random(1, 2)])
        elseif r < 0.75 then
            return wrk.format("POST", "/todos", headers, '{"title":"bench mix"}')
        end
        n = n + 1
        if n > stride then
            n = stride -- out of seeded rows: answered 404, counted as an error
        end
        return wrk.format("DELETE", string.format("/todos/%s-%012d", del_prefix, base + tid * stride + n))
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("BENCH rps=%.1f p50=%.3f p99=%.3f requests=%d socket_errors=%d status_errors=%d\n",
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        summary.requests, e.connect + e.read + e.write + e.timeout, e.status))
end
EOF

http_errors=0
notes=()
details=()
# field NAME LINE: the value of NAME=value in LINE.
field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# wrk_run SECONDS URL: one wrk run (the BENCH_* variables exported by the caller;
# WRK_CONNS, when set, instead of CONNS).
wrk_run() {
    bench_bounded $(($1 + 60)) wrk -t"$THREADS" -c"${WRK_CONNS:-$CONNS}" -d"$1s" --latency -s "$BENCH_DIR/wrk.lua" "$2" 2>&1
}

# wrk_series LABEL URL RUN: run RUN (0: the 1 s warm-up) of a measurement; its
# figures go to the arrays named LABEL's (see wrk_begin and wrk_end).
declare -A WRK_RPS WRK_P50 WRK_P99 WRK_SE WRK_ST WRK_AUTH
wrk_series() {
    local label=$1 url=$2 run=$3 out line
    BENCH_BASE=$((run * THREADS * ${BENCH_STRIDE:-0}))
    BENCH_AUTH=${WRK_AUTH[$label]:-} # a bearer token for this series' requests
    export BENCH_BASE BENCH_AUTH
    out=$(wrk_run "$([ "$run" = 0 ] && echo 1 || echo "$BENCH_SECONDS")" "$url") || bench_die "wrk failed: $out"
    printf '== %s run %s\n%s\n' "$label" "$run" "$out" >>"$BENCH_DIR/wrk.log"
    line=$(printf '%s\n' "$out" | grep '^BENCH ') || bench_die "no result from wrk: $out"
    WRK_ST[$label]=$((${WRK_ST[$label]:-0} + $(field status_errors "$line")))
    [ "$run" = 0 ] && return 0
    WRK_RPS[$label]="${WRK_RPS[$label]:-} $(field rps "$line")"
    WRK_P50[$label]="${WRK_P50[$label]:-} $(field p50 "$line")"
    WRK_P99[$label]="${WRK_P99[$label]:-} $(field p99 "$line")"
    WRK_SE[$label]=$((${WRK_SE[$label]:-0} + $(field socket_errors "$line")))
}
# wrk_result LABEL: sets W_RPS, W_P50, W_P99 (medians) and notes errors.
wrk_result() {
    local label=$1 rps p50 p99
    read -ra rps <<<"${WRK_RPS[$label]}"
    read -ra p50 <<<"${WRK_P50[$label]}"
    read -ra p99 <<<"${WRK_P99[$label]}"
    W_RPS=$(bench_median "${rps[@]}")
    W_P50=$(bench_median "${p50[@]}")
    W_P99=$(bench_median "${p99[@]}")
    bench_note "  $label: ${rps[*]} req/s -> median $W_RPS"
    details+=("$label (wrk): req/s ${rps[*]}; p50 ms ${p50[*]}; p99 ms ${p99[*]}")
    if [ "${WRK_ST[$label]}" -gt 0 ]; then
        notes+=("$label: ${WRK_ST[$label]} answers were not 2xx/3xx")
        http_errors=1
    fi
    [ "${WRK_SE[$label]}" -gt 0 ] && notes+=("$label: ${WRK_SE[$label]} socket errors (connect/read/write/timeout)")
    return 0
}
# wrk_measure LABEL PATH [BODY]: sets W_RPS, W_P50, W_P99 (medians of
# BENCH_RUNS runs, after a 1 s warm-up).
wrk_measure() {
    local label=$1 url run
    url=$(bench_url "$2")
    export BENCH_BODY=${3:-}
    bench_note "wrk: $label (warm-up, then $BENCH_RUNS x ${BENCH_SECONDS}s)"
    for run in $(seq 0 "$BENCH_RUNS"); do
        wrk_series "$label" "$url" "$run"
    done
    wrk_result "$label"
}
# wrk_alternate LABEL_A URL_A LABEL_B URL_B: both measured, their runs
# alternating (A, B, A, B, ...) so that a drift of the machine hits both alike;
# sets A_* and B_* as wrk_measure sets W_*.
wrk_alternate() {
    local run
    export BENCH_BODY=
    bench_note "wrk: $1 and $3, alternating (warm-up, then $BENCH_RUNS x ${BENCH_SECONDS}s each)"
    for run in $(seq 0 "$BENCH_RUNS"); do
        wrk_series "$1" "$2" "$run"
        wrk_series "$3" "$4" "$run"
    done
    wrk_result "$1"
    A_RPS=$W_RPS A_P50=$W_P50 A_P99=$W_P99
    wrk_result "$3"
    B_RPS=$W_RPS B_P50=$W_P50 B_P99=$W_P99
    # Each run of A against the run of B next to it: the ratio with less of
    # the machine's drift in it than the medians'.
    local a b i pairs=()
    read -ra a <<<"${WRK_RPS[$1]}"
    read -ra b <<<"${WRK_RPS[$3]}"
    for i in "${!a[@]}"; do pairs+=("$(bench_ratio "${a[$i]}" "${b[$i]}" 2)"); done
    details+=("$1 / $3, run by run: ${pairs[*]} (median $(bench_median "${pairs[@]}"))")
}

# pgbench_measure LABEL CLIENTS SCRIPT [pgbench options]: sets P_TPS (median).
# A script that names pgbench_run in a -D option gets the run's number (0, 1, ...).
# With PGBENCH_P99=1, pgbench logs every transaction, and P_P99 is the median
# of the runs' 99th percentiles of latency, in ms.
pgbench_measure() {
    local label=$1 clients=$2 script=$3 i out tps=() p99=() v jobs=$THREADS log=()
    shift 3
    [ "$clients" -lt "$jobs" ] && jobs=$clients
    bench_note "pgbench: $label, $clients clients ($BENCH_RUNS x ${BENCH_SECONDS}s)"
    for i in $(seq 1 "$BENCH_RUNS"); do
        [ -z "${PGBENCH_P99:-}" ] || log=(--log --log-prefix="$BENCH_DIR/pgbench-txn.$i")
        out=$(bench_bounded $((BENCH_SECONDS + 120)) "$PGBIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" \
            -U postgres -n -M prepared -c "$clients" -j "$jobs" -T "$BENCH_SECONDS" \
            -D "run=$((i - 1))" "${log[@]}" -f "$script" "$@" todod 2>&1) || bench_die "pgbench failed: $out"
        printf '== %s run %s\n%s\n' "$label" "$i" "$out" >>"$BENCH_DIR/pgbench.log"
        v=$(printf '%s\n' "$out" | awk '/^tps = / { print $3; exit }')
        [ -n "$v" ] || bench_die "no tps from pgbench (BENCH_SECONDS too short for $clients connections to open?): $out"
        if printf '%s\n' "$out" | grep -q '^number of failed transactions: [1-9]'; then
            bench_die "pgbench: failed transactions: $out"
        fi
        tps+=("$v")
        if [ -n "${PGBENCH_P99:-}" ]; then
            # a log line: client, transaction, latency in us, ...
            p99+=("$(cat "$BENCH_DIR/pgbench-txn.$i".* | awk '{ print $3 / 1000 }' | sort -g |
                awk '{ v[NR] = $1 } END { print v[int((NR * 99 + 99) / 100)] + 0 }')")
            rm -f "$BENCH_DIR/pgbench-txn.$i".*
        fi
    done
    P_TPS=$(bench_median "${tps[@]}")
    P_P99=n/a
    bench_note "  $label: ${tps[*]} tps -> median $P_TPS"
    details+=("$label, $clients clients (pgbench): tps $(printf '%.1f\n' "${tps[@]}" | paste -sd ' ')${p99[*]:+; p99 ms ${p99[*]}}")
    [ "${#p99[@]}" -eq 0 ] || P_P99=$(bench_median "${p99[@]}")
}

# The statements todod prepares (daemon/db_sql.c), with the same parameters.
COLS="id, title, done, created_at, updated_at"
cat >"$BENCH_DIR/get.sql" <<EOF
SELECT $COLS FROM todos WHERE id = :id;
EOF
cat >"$BENCH_DIR/insert.sql" <<EOF
INSERT INTO todos (id, title, done) VALUES (gen_random_uuid(), 'bench', false) RETURNING $COLS;
EOF
cat >"$BENCH_DIR/update.sql" <<EOF
\\set k random(1, $LIST_ROWS)
UPDATE todos SET title = coalesce('bench put', title), done = coalesce(true, done), updated_at = now()
    WHERE id = $(uuid_sql "$ID_MAIN" ":k") RETURNING $COLS;
EOF
# Each client deletes its own run of rows, a run of rows per measurement.
cat >"$BENCH_DIR/delete.sql" <<EOF
\\set n :n + 1
\\set k (:run * $CONNS + :client_id) * :stride + :n
DELETE FROM todos WHERE id = $(uuid_sql "$ID_DEL_PG" ":k");
EOF
# Writes to a few rows: todod's UPDATE as a PUT {"done": true|false} sends it
# (no title), of a random one of the first :rows main rows; and the mix's
# DELETE, each client deleting its own run of rows.
cat >"$BENCH_DIR/toggle.sql" <<EOF
\\set k random(1, :rows)
\\set d random(0, 1)
UPDATE todos SET title = coalesce(NULL::varchar, title), done = coalesce(:d = 1, done), updated_at = now()
    WHERE id = $(uuid_sql "$ID_MAIN" ":k") RETURNING $COLS;
EOF
cat >"$BENCH_DIR/mix_delete.sql" <<EOF
\\set n :n + 1
\\set k (:run * $HOT_CONNS + :client_id) * :stride + :n
DELETE FROM todos WHERE id = $(uuid_sql "$ID_MIX_PG" ":k");
EOF
cat >"$BENCH_DIR/old_list.sql" <<'EOF'
SELECT count(*) FROM todos;
SELECT id, title, done, created_at, updated_at FROM todos ORDER BY created_at DESC LIMIT 10 OFFSET 0;
EOF

# ---- nginx: the ceiling of /health, and a sink for traces ----

NGINX_PORT=
nginx_label="nginx \`return 200\` (nginx not installed)"
if command -v nginx >/dev/null 2>&1; then
    NGINX_PORT=$(bench_free_port)
    mkdir -p "$BENCH_DIR/nginx"
    cat >"$BENCH_DIR/nginx/nginx.conf" <<EOF
worker_processes $WORKERS;
daemon off;
pid $BENCH_DIR/nginx/nginx.pid;
error_log $BENCH_DIR/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $BENCH_DIR/nginx/body;
    proxy_temp_path $BENCH_DIR/nginx/proxy;
    fastcgi_temp_path $BENCH_DIR/nginx/fastcgi;
    uwsgi_temp_path $BENCH_DIR/nginx/uwsgi;
    scgi_temp_path $BENCH_DIR/nginx/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_max_body_size 64m;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /health { default_type "text/plain; charset=utf-8"; return 200 ok; }
        location = /v1/traces { default_type application/json; return 200 '{}'; }
    }
}
EOF
    setsid nginx -e "$BENCH_DIR/nginx/error.log" -p "$BENCH_DIR/nginx" -c "$BENCH_DIR/nginx/nginx.conf" \
        >"$BENCH_DIR/nginx/stdout.log" 2>&1 </dev/null &
    BENCH_EXTRA_PIDS+=($!)
    for _ in $(seq 1 100); do
        [ "$(curl -s --max-time 1 "http://127.0.0.1:$NGINX_PORT/health" || true)" = ok ] && break
        sleep 0.1
    done
    if [ "$(curl -s --max-time 1 "http://127.0.0.1:$NGINX_PORT/health" || true)" = ok ]; then
        nginx_label="nginx $(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p') \`return 200\`, $WORKERS workers"
    else
        notes+=("nginx did not start (see its error log): no /health ceiling, no tracing row")
        nginx_label="nginx \`return 200\` (did not start)"
        NGINX_PORT=
    fi
fi

# ---- measurements ----

rows=()
row() { # request rps p50 p99 ceiling ceiling_rps|n/a [decimals of ceiling_rps [of the ratio]]
    local c=n/a r=n/a
    if [ "$6" != n/a ]; then
        c=$(bench_fmt "$6" "${7:-0}")
        r="$(bench_ratio "$2" "$6" "${8:-2}")x"
    fi
    rows+=("| $1 | $(bench_fmt "$2") | $(bench_fmt "$3" 2) | $(bench_fmt "$4" 2) | $5 | $c | $r |")
}
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 > b + 0) ? a : b }'; }

# Reads first, on exactly LIST_ROWS rows; then the writes.
wrk_measure "GET /todos/{id}" "/todos/$TODO_ID"
get=("$W_RPS" "$W_P50" "$W_P99")
pgbench_measure "SELECT by id" "$CONNS" "$BENCH_DIR/get.sql" -D "id=$TODO_ID"
get_c64=$P_TPS
pgbench_measure "SELECT by id" 4 "$BENCH_DIR/get.sql" -D "id=$TODO_ID"
get_c4=$P_TPS
get_ceiling=$(max "$get_c64" "$get_c4")

wrk_measure "GET /todos?limit=10" "/todos?limit=10"
list=("$W_RPS" "$W_P50" "$W_P99")
pgbench_measure "old list (count(*) + ORDER BY ... LIMIT 10 OFFSET 0)" "$CONNS" "$BENCH_DIR/old_list.sql"
list_old=$P_TPS
count_line=$(check_counts "$LIST_ROWS")

# Cursor pages at depth 900,000: seeded row k is the k-th newest, so
# page=90000 (limit 10) holds rows 899,991 to 900,000, and so does the cursor
# page after row 899,990, which the next_cursor of page 89,999 names.
deep=$(curl -s --max-time 120 "$(bench_url '/todos?page=89999&limit=10')")
cursor=$(printf '%s' "$deep" | sed -n 's/.*"next_cursor" *: *"\([A-Za-z0-9_-]*\)".*/\1/p')
[ "${#cursor}" = 40 ] || bench_die "GET /todos?page=89999&limit=10 gave no next_cursor: ${deep:0:300}"
after_path="/todos?after=$cursor&limit=10"
first_id() { printf '%s' "$1" | grep -o '"id" *: *"[^"]*"' | head -n 1 | sed 's/.*: *"\(.*\)"/\1/'; }
want_id=$ID_MAIN-$(printf '%012d' 899991)
got_after=$(first_id "$(curl -s --max-time 30 "$(bench_url "$after_path")")")
got_page=$(first_id "$(curl -s --max-time 120 "$(bench_url '/todos?page=90000&limit=10')")")
if [ "$got_after" != "$want_id" ] || [ "$got_page" != "$want_id" ]; then
    bench_die "depth 900,000: the cursor page starts at $got_after, page 90000 at $got_page (want $want_id)"
fi
wrk_alternate "GET /todos?after=C&limit=10 (depth 900,000)" "$(bench_url "$after_path")" \
    "GET /todos?limit=10 (page 1)" "$(bench_url '/todos?limit=10')"
after_deep=("$A_RPS" "$A_P50" "$A_P99")
page_first=("$B_RPS" "$B_P50" "$B_P99")
WRK_CONNS=$THREADS wrk_measure "GET /todos?page=90000&limit=10" "/todos?page=90000&limit=10"
page_deep=("$W_RPS" "$W_P50" "$W_P99")

wrk_measure "GET /health" "/health"
health=("$W_RPS" "$W_P50" "$W_P99")
health_ceiling=n/a
if [ -n "$NGINX_PORT" ]; then
    saved_port=$HTTP_PORT
    HTTP_PORT=$NGINX_PORT
    wrk_measure "nginx /health" "/health"
    HTTP_PORT=$saved_port
    health_ceiling=$W_RPS
fi

wrk_measure "POST /todos" "/todos" '{"title":"bench"}'
post=("$W_RPS" "$W_P50" "$W_P99")
pgbench_measure "INSERT one row" "$CONNS" "$BENCH_DIR/insert.sql"
post_ceiling=$P_TPS

export BENCH_MODE=put BENCH_ROWS=$LIST_ROWS BENCH_PREFIX=$ID_MAIN
wrk_measure "PUT /todos/{id}" "/" '{"title":"bench put","done":true}'
put=("$W_RPS" "$W_P50" "$W_P99")
pgbench_measure "UPDATE one row" "$CONNS" "$BENCH_DIR/update.sql"
put_ceiling=$P_TPS

# Rows to delete: a run of STRIDE rows per wrk thread (or pgbench client) and
# measurement, enough for DELETE_CAP deletes per second.
DELETE_CAP=${BENCH_DELETE_CAP:-50000}
HTTP_STRIDE=$((DELETE_CAP * BENCH_SECONDS / THREADS))
PG_STRIDE=$((DELETE_CAP * BENCH_SECONDS / CONNS))
bench_note "seeding rows to delete"
seed "$ID_DEL_HTTP" $(((BENCH_RUNS + 1) * THREADS * HTTP_STRIDE))
seed "$ID_DEL_PG" $(((BENCH_RUNS + 1) * CONNS * PG_STRIDE))
export BENCH_MODE=delete BENCH_PREFIX=$ID_DEL_HTTP BENCH_STRIDE=$HTTP_STRIDE
wrk_measure "DELETE /todos/{id}" "/"
delete=("$W_RPS" "$W_P50" "$W_P99")
unset BENCH_MODE BENCH_STRIDE
pg_left() {
    bench_sql "SELECT count(*) FROM todos WHERE id >= '$ID_DEL_PG-000000000000' AND id < '$ID_DEL_PG-999999999999'"
}
pg_before=$(pg_left)
pgbench_measure "DELETE one row" "$CONNS" "$BENCH_DIR/delete.sql" -D n=0 -D "stride=$PG_STRIDE"
delete_ceiling=$P_TPS
# Every pgbench delete found its row (a delete of nothing would commit nothing).
pg_gone=$((pg_before - $(pg_left)))
pg_txns=$(awk '/^== DELETE one row/ { on = 1; next } /^== / { on = 0 }
    on && /^number of transactions actually processed:/ { s += $6 } END { print s + 0 }' "$BENCH_DIR/pgbench.log")
if [ "$pg_gone" != "$pg_txns" ]; then
    notes+=("pgbench DELETE: $pg_txns transactions deleted $pg_gone rows (raise BENCH_DELETE_CAP)")
    BENCH_MISSED=1
fi

# ---- writes to a few rows, 32 clients ----

deadlocks() { grep -c 'deadlock detected' "$BENCH_DIR/pg/postgres.log" || true; }
# hot_measure LABEL PATH: wrk_measure with HOT_CONNS connections; sets
# HOT_DEADLOCKS (deadlocks PostgreSQL logged meanwhile) and HOT_ERRORS.
hot_measure() {
    local before
    before=$(deadlocks)
    WRK_CONNS=$HOT_CONNS wrk_measure "$@"
    HOT_DEADLOCKS=$(($(deadlocks) - before))
    HOT_ERRORS=$((${WRK_ST[$1]} + ${WRK_SE[$1]}))
    details+=("$1: $HOT_DEADLOCKS deadlocks in PostgreSQL's log")
    [ "$HOT_DEADLOCKS" -eq 0 ] || notes+=("$1: PostgreSQL logged $HOT_DEADLOCKS deadlocks")
}

export BENCH_MODE=toggle BENCH_PREFIX=$ID_MAIN BENCH_ROWS=1000
hot_measure "PUT /todos/{id}, 1,000 rows, 32 clients" "/"
put_1k=("$W_RPS" "$W_P50" "$W_P99" "$HOT_DEADLOCKS" "$HOT_ERRORS")
PGBENCH_P99=1 pgbench_measure "UPDATE one of 1,000 rows" "$HOT_CONNS" "$BENCH_DIR/toggle.sql" -D rows=1000
put_1k_ceiling=$P_TPS put_1k_ceiling_p99=$P_P99

export BENCH_ROWS=$HOT_ROWS
hot_measure "PUT /todos/{id}, $HOT_ROWS hot rows, 32 clients" "/"
put_hot=("$W_RPS" "$W_P50" "$W_P99" "$HOT_DEADLOCKS" "$HOT_ERRORS")
PGBENCH_P99=1 pgbench_measure "UPDATE one of $HOT_ROWS rows" "$HOT_CONNS" "$BENCH_DIR/toggle.sql" -D rows="$HOT_ROWS"
put_hot_ceiling=$P_TPS put_hot_ceiling_p99=$P_P99

# The mix: PUT, POST, DELETE 2:1:1, each DELETE finding its row (a run of
# rows per wrk thread or pgbench client and measurement, as above).
MIX_CAP=${BENCH_MIX_DELETE_CAP:-10000}
MIX_HTTP_STRIDE=$((MIX_CAP * BENCH_SECONDS / THREADS))
MIX_PG_STRIDE=$((MIX_CAP * BENCH_SECONDS / HOT_CONNS))
bench_note "seeding rows for the mix to delete"
seed "$ID_MIX_HTTP" $(((BENCH_RUNS + 1) * THREADS * MIX_HTTP_STRIDE))
seed "$ID_MIX_PG" $(((BENCH_RUNS + 1) * HOT_CONNS * MIX_PG_STRIDE))
export BENCH_MODE=mix BENCH_DEL_PREFIX=$ID_MIX_HTTP BENCH_STRIDE=$MIX_HTTP_STRIDE
hot_measure "mix on $HOT_ROWS hot rows, 32 clients" "/"
mix_hot=("$W_RPS" "$W_P50" "$W_P99" "$HOT_DEADLOCKS" "$HOT_ERRORS")
unset BENCH_MODE BENCH_STRIDE BENCH_DEL_PREFIX BENCH_ROWS
mix_left() {
    bench_sql "SELECT count(*) FROM todos WHERE id >= '$ID_MIX_PG-000000000000' AND id < '$ID_MIX_PG-999999999999'"
}
mix_before=$(mix_left)
PGBENCH_P99=1 pgbench_measure "mix: UPDATE one of $HOT_ROWS rows, INSERT, DELETE (2:1:1)" "$HOT_CONNS" "$BENCH_DIR/toggle.sql@2" \
    -f "$BENCH_DIR/insert.sql@1" -f "$BENCH_DIR/mix_delete.sql@1" -D rows="$HOT_ROWS" -D n=0 -D "stride=$MIX_PG_STRIDE"
mix_hot_ceiling=$P_TPS mix_hot_ceiling_p99=$P_P99
# Every pgbench delete of the mix found its row (the third script's transactions).
mix_gone=$((mix_before - $(mix_left)))
mix_txns=$(awk '/^== mix/ { on = 1; next } /^== / { on = 0 }
    on && /^SQL script / { script = $3 + 0 } on && script == 3 && /^ - [0-9]+ transactions/ { s += $2 }
    END { print s + 0 }' "$BENCH_DIR/pgbench.log")
if [ "$mix_gone" != "$mix_txns" ]; then
    notes+=("pgbench mix: $mix_txns DELETE transactions deleted $mix_gone rows (raise BENCH_MIX_DELETE_CAP)")
    BENCH_MISSED=1
fi
end_count_line=$(check_counts "")

# Tracing: GET /todos/{id} again, from a second todod on the same database
# with every request traced (trace_sample_ratio 1; nginx takes the spans and
# drops them), alternating with the first, untraced, one.
trace_on=(n/a n/a n/a)
trace_off=(n/a n/a n/a)
if [ -n "$NGINX_PORT" ]; then
    TRACED_PORT=$(bench_free_port)
    sed -e "s/^listen = .*/listen = 127.0.0.1:$TRACED_PORT/" "$TODOD_CONF" >"$BENCH_DIR/todod-traced.conf"
    echo "otlp_endpoint = http://127.0.0.1:$NGINX_PORT/v1/traces" >>"$BENCH_DIR/todod-traced.conf"
    setsid "$TODOD_BIN" -c "$BENCH_DIR/todod-traced.conf" >"$BENCH_DIR/todod-traced.log" 2>&1 </dev/null &
    BENCH_EXTRA_PIDS+=($!)
    for _ in $(seq 1 100); do
        [ "$(curl -s --max-time 1 "http://127.0.0.1:$TRACED_PORT/health" || true)" = ok ] && break
        sleep 0.1
    done
    wrk_alternate "GET /todos/{id}, tracing on" "http://127.0.0.1:$TRACED_PORT/todos/$TODO_ID" \
        "GET /todos/{id}, tracing off" "$(bench_url "/todos/$TODO_ID")"
    trace_on=("$A_RPS" "$A_P50" "$A_P99")
    trace_off=("$B_RPS" "$B_P50" "$B_P99")
    exported=$(curl -s --max-time 5 "http://127.0.0.1:$TRACED_PORT/metrics" |
        awk '/^todod_trace_spans_exported_total/ { s += $2 } END { print s + 0 }')
    details+=("tracing on: $exported spans exported")
    [ "$exported" -gt 0 ] || notes+=("tracing on: no span was exported (see $BENCH_DIR/todod-traced.log)")
fi

# Access control: GET /todos/{id} from a third todod on the same database with
# auth = jwt, with an ES256 token and with an HS256 one (PyJWT mints them; the
# keys are made here), each alternating with the first todod (auth = off).
auth_es=(n/a n/a n/a)
auth_hs=(n/a n/a n/a)
auth_off_es=n/a
auth_off_hs=n/a
if /usr/bin/python3 -c 'import jwt, cryptography' 2>/dev/null; then
    AUTH_PORT=$(bench_free_port)
    /usr/bin/python3 - "$BENCH_DIR" <<'PY' || bench_die "cannot make the JWT keys and tokens"
import base64, json, os, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
d = sys.argv[1]
secret = os.urandom(32)
key = ec.generate_private_key(ec.SECP256R1())
public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
public.update(kid="es", alg="ES256")
for c in ("x", "y"):  # the full 32 bytes (RFC 7518 6.2.1.2); PyJWT may drop a leading zero
    raw = base64.urlsafe_b64decode(public[c] + "=" * (-len(public[c]) % 4))
    public[c] = base64.urlsafe_b64encode(raw.rjust(32, b"\0")).rstrip(b"=").decode()
keys = {"keys": [public, {"kty": "oct", "kid": "hs", "alg": "HS256",
                          "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}]}
with open(os.path.join(d, "jwks.json"), "w") as f:
    json.dump(keys, f)
os.chmod(os.path.join(d, "jwks.json"), 0o600)
claims = {"sub": "bench", "scope": "todos:read", "exp": int(time.time()) + 3600}
for kid, k, alg in (("es", key, "ES256"), ("hs", secret, "HS256")):
    with open(os.path.join(d, "token-" + kid), "w") as f:
        f.write(jwt.encode(claims, k, algorithm=alg, headers={"kid": kid}))
PY
    sed -e "s/^listen = .*/listen = 127.0.0.1:$AUTH_PORT/" "$TODOD_CONF" >"$BENCH_DIR/todod-auth.conf"
    printf 'auth = jwt\njwt_keys = %s\n' "$BENCH_DIR/jwks.json" >>"$BENCH_DIR/todod-auth.conf"
    setsid "$TODOD_BIN" -c "$BENCH_DIR/todod-auth.conf" >"$BENCH_DIR/todod-auth.log" 2>&1 </dev/null &
    BENCH_EXTRA_PIDS+=($!)
    for _ in $(seq 1 100); do
        [ "$(curl -s --max-time 1 "http://127.0.0.1:$AUTH_PORT/health" || true)" = ok ] && break
        sleep 0.1
    done
    WRK_AUTH["GET /todos/{id}, ES256 token"]=$(cat "$BENCH_DIR/token-es")
    WRK_AUTH["GET /todos/{id}, HS256 token"]=$(cat "$BENCH_DIR/token-hs")
    wrk_alternate "GET /todos/{id}, ES256 token" "http://127.0.0.1:$AUTH_PORT/todos/$TODO_ID" \
        "GET /todos/{id}, auth off (with ES256)" "$(bench_url "/todos/$TODO_ID")"
    auth_es=("$A_RPS" "$A_P50" "$A_P99")
    auth_off_es=$B_RPS
    wrk_alternate "GET /todos/{id}, HS256 token" "http://127.0.0.1:$AUTH_PORT/todos/$TODO_ID" \
        "GET /todos/{id}, auth off (with HS256)" "$(bench_url "/todos/$TODO_ID")"
    auth_hs=("$A_RPS" "$A_P50" "$A_P99")
    auth_off_hs=$B_RPS
    refusals=$(curl -s --max-time 5 -H "Authorization: Bearer $(cat "$BENCH_DIR/token-hs")" \
        "http://127.0.0.1:$AUTH_PORT/metrics" | awk '/^todod_auth_refusals_total/ { s += $2 } END { print s + 0 }')
    [ "$refusals" = 0 ] || notes+=("auth = jwt: $refusals requests refused (see $BENCH_DIR/todod-auth.log)")
else
    notes+=("auth = jwt not measured: python3-jwt and python3-cryptography are needed to mint tokens")
fi

# ---- report ----

# Standbys: a streaming standby of the database (pg_basebackup -R, as the
# PostgreSQL user), a fourth todod whose database_read_url names it, and
# GET /todos/{id} through it alternating with the first todod (the primary).
standby_get=(n/a n/a n/a)
primary_get=(n/a n/a n/a)
primary_share=n/a
as_pg() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
STANDBY_PORT=$(bench_free_port)
STANDBY_DATA=$BENCH_DIR/standby/data
mkdir -p "$BENCH_DIR/standby"
[ "$(id -u)" -ne 0 ] || chown postgres: "$BENCH_DIR/standby"
bench_note "making a standby with pg_basebackup -R on 127.0.0.1:$STANDBY_PORT"
if as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$STANDBY_DATA" \
    -R -X stream -c fast --no-sync >&2 && "$PG_SH" start "$STANDBY_DATA" "$STANDBY_PORT" hot_standby=on >&2; then
    BENCH_EXTRA_PG+=("$STANDBY_DATA")
    READ_PORT=$(bench_free_port)
    sed -e "s/^listen = .*/listen = 127.0.0.1:$READ_PORT/" "$TODOD_CONF" >"$BENCH_DIR/todod-standby.conf"
    echo "database_read_url = \"postgresql://postgres@127.0.0.1:$STANDBY_PORT/todod\"" >>"$BENCH_DIR/todod-standby.conf"
    setsid "$TODOD_BIN" -c "$BENCH_DIR/todod-standby.conf" >"$BENCH_DIR/todod-standby.log" 2>&1 </dev/null &
    BENCH_EXTRA_PIDS+=($!)
    for _ in $(seq 1 300); do
        [ "$(curl -s --max-time 1 "http://127.0.0.1:$READ_PORT/stats" | grep -o '"state": *"fit"' | wc -l)" = "$WORKERS" ] && break
        sleep 0.1
    done
    reads() { # SERVER: the fourth todod's todod_db_reads_total{server=SERVER}
        curl -s --max-time 5 "http://127.0.0.1:$READ_PORT/metrics" |
            awk -v s="todod_db_reads_total{server=\"$1\"}" '$1 == s { print $2 + 0 }'
    }
    p0=$(reads primary) s0=$(reads standby)
    wrk_alternate "GET /todos/{id}, from a standby" "http://127.0.0.1:$READ_PORT/todos/$TODO_ID" \
        "GET /todos/{id}, from the primary" "$(bench_url "/todos/$TODO_ID")"
    standby_get=("$A_RPS" "$A_P50" "$A_P99")
    primary_get=("$B_RPS" "$B_P50" "$B_P99")
    p1=$(reads primary) s1=$(reads standby)
    primary_share=$(awk -v p=$((p1 - p0)) -v s=$((s1 - s0)) 'BEGIN { printf "%.2f", (p + s > 0 ? 100 * p / (p + s) : 100) }')
    details+=("from a standby: $((s1 - s0)) reads served by the standby, $((p1 - p0)) by the primary ($primary_share %)")
else
    notes+=("the standby did not start (see $BENCH_DIR/standby): no standby rows")
fi

row "GET /todos/{id}" "${get[@]}" \
    "pgbench: the same SELECT, best of 64 clients ($(bench_fmt "$get_c64")) and 4 ($(bench_fmt "$get_c4"))" "$get_ceiling"
row "POST /todos" "${post[@]}" "pgbench: the same INSERT ... RETURNING" "$post_ceiling"
row "PUT /todos/{id}" "${put[@]}" "pgbench: the same UPDATE ... RETURNING, random row" "$put_ceiling"
row "DELETE /todos/{id}" "${delete[@]}" "pgbench: the same DELETE, a row each" "$delete_ceiling"
row "PUT /todos/{id} of 1 of 1,000 rows, 32 clients" "${put_1k[@]:0:3}" \
    "pgbench: the same UPDATE of the same rows, 32 clients (p99 $(bench_fmt "$put_1k_ceiling_p99" 2) ms)" \
    "$put_1k_ceiling"
row "PUT /todos/{id} of 1 of $HOT_ROWS hot rows, 32 clients" "${put_hot[@]:0:3}" \
    "pgbench: the same UPDATE of the same rows, 32 clients (p99 $(bench_fmt "$put_hot_ceiling_p99" 2) ms)" \
    "$put_hot_ceiling"
row "PUT, POST, DELETE 2:1:1, PUTs of $HOT_ROWS hot rows, 32 clients" "${mix_hot[@]:0:3}" \
    "pgbench: the same statements in the same proportions, 32 clients (p99 $(bench_fmt "$mix_hot_ceiling_p99" 2) ms)" \
    "$mix_hot_ceiling"
row "GET /todos?limit=10 (1,000,000 rows)" "${list[@]}" \
    "the replaced design: count(*) + ORDER BY created_at DESC LIMIT 10 OFFSET 0" "$list_old" 1
row "GET /todos?after=C&limit=10, C at depth 900,000" "${after_deep[@]}" \
    "GET /todos?limit=10 (page 1; runs alternating with these)" "${page_first[0]}"
row "GET /todos?page=90000&limit=10 ($THREADS connections)" "${page_deep[@]}" \
    "GET /todos?limit=10 (page 1, above)" "${page_first[0]}" 0 4
row "GET /health" "${health[@]}" "$nginx_label" "$health_ceiling"
[ "${trace_on[0]}" = n/a ] ||
    row "GET /todos/{id}, tracing on" "${trace_on[@]}" "the same, tracing off (runs alternating with these)" "${trace_off[0]}"
[ "${standby_get[0]}" = n/a ] ||
    row "GET /todos/{id}, from a standby" "${standby_get[@]}" "the same from the primary (runs alternating with these)" "${primary_get[0]}"
if [ "${auth_es[0]}" != n/a ]; then
    row "GET /todos/{id}, auth = jwt, ES256 token" "${auth_es[@]}" "the same, auth = off (runs alternating with these)" "$auth_off_es"
    row "GET /todos/{id}, auth = jwt, HS256 token" "${auth_hs[@]}" "the same, auth = off (runs alternating with these)" "$auth_off_hs"
fi

bench_target "GET /todos/{id} >= 0.7x the best pgbench SELECT, p99 < 5 ms" \
    "${get[0]} >= 0.7 * $get_ceiling && ${get[2]} < 5"
bench_target "POST /todos >= 0.8x pgbench INSERT, p99 < 20 ms" "${post[0]} >= 0.8 * $post_ceiling && ${post[2]} < 20"
bench_target "PUT /todos/{id} >= 0.8x pgbench UPDATE" "${put[0]} >= 0.8 * $put_ceiling"
bench_target "DELETE /todos/{id} >= 0.8x pgbench DELETE" "${delete[0]} >= 0.8 * $delete_ceiling"
bench_target "PUT of $HOT_ROWS hot rows >= 0.8x pgbench on the same rows, p99 < 50 ms, no error, no deadlock" \
    "${put_hot[0]} >= 0.8 * $put_hot_ceiling && ${put_hot[2]} < 50 && ${put_hot[4]} == 0 && ${put_hot[3]} == 0"
bench_target "the mix on $HOT_ROWS hot rows >= 0.8x pgbench's, p99 < 50 ms, no error, no deadlock" \
    "${mix_hot[0]} >= 0.8 * $mix_hot_ceiling && ${mix_hot[2]} < 50 && ${mix_hot[4]} == 0 && ${mix_hot[3]} == 0"
bench_target "PUT of 1,000 rows (32 clients): no error, no deadlock" "${put_1k[4]} == 0 && ${put_1k[3]} == 0"
[ "${auth_es[0]}" = n/a ] || bench_target "GET /todos/{id} with an ES256 token >= 0.8x auth = off" \
    "${auth_es[0]} >= 0.8 * $auth_off_es"
[ "${auth_hs[0]}" = n/a ] || bench_target "GET /todos/{id} with an HS256 token >= 0.8x auth = off" \
    "${auth_hs[0]} >= 0.8 * $auth_off_hs"
bench_target "GET /todos?limit=10 >= 10x the replaced design" "${list[0]} >= 10 * $list_old"
bench_target "GET /todos?limit=10 not below $(bench_fmt "$LIST_BEFORE") req/s (the figure before the write connections)" \
    "${list[0]} >= $LIST_BEFORE"
bench_target "GET /todos?after=C at depth 900,000 >= 0.8x page 1" "${after_deep[0]} >= 0.8 * ${page_first[0]}"
[ "$health_ceiling" = n/a ] || bench_target "GET /health >= 0.8x nginx" "${health[0]} >= 0.8 * $health_ceiling"
[ "${trace_on[0]}" = n/a ] || bench_target "tracing on >= 0.8x tracing off" "${trace_on[0]} >= 0.8 * ${trace_off[0]}"
[ "${standby_get[0]}" = n/a ] || bench_target "GET /todos/{id} from a standby >= 0.9x from the primary" \
    "${standby_get[0]} >= 0.9 * ${primary_get[0]}"
[ "$primary_share" = n/a ] || bench_target "the primary's share of reads with a fresh standby <= 5 %" "$primary_share <= 5"

echo "| request | todod req/s | p50 ms | p99 ms | ceiling | ceiling req/s | ratio |"
echo "| --- | ---: | ---: | ---: | --- | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
echo "Targets:"
printf -- '- %s\n' "${BENCH_VERDICTS[@]}"
echo
echo "Ratio = todod req/s / ceiling req/s (pgbench: transactions/s, one statement and one transaction per request; p50/p99 are wrk's)."
echo "$count_line"
echo "After the write runs: ${end_count_line#Row count check: }"
echo "Deadlocks in PostgreSQL's log over the whole run: $(deadlocks)."
if [ "${#notes[@]}" -gt 0 ]; then
    echo
    echo "Notes:"
    printf -- '- %s\n' "${notes[@]}"
fi
echo
echo "Runs:"
printf -- '- %s\n' "${details[@]}"
echo
echo "todod's PostgreSQL connections at the end: $(bench_sql "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'todod%'")"
echo
echo "Worker memory at the end:"
bench_worker_rss

if [ "$http_errors" -ne 0 ] || [[ "$count_line$end_count_line" == *FAILED* ]]; then
    exit 1
fi
[ "$BENCH_MISSED" -eq 0 ] || exit 2
