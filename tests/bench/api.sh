#!/usr/bin/env bash
# HTTP API benchmark: todod with 2 workers under 64 keep-alive connections.
#
#   make bench-api            (or tests/bench/api.sh after make)
#
# Starts a private PostgreSQL (fresh data directory in /tmp, free loopback port)
# and todod (workers = 2, configuration written for the run), then measures with
# wrk (2 threads, 64 connections) each of
#   GET /todos/{id}, POST /todos, GET /todos?limit=10 (table of 1,000,000 rows),
#   GET /health
# and, in the same run, a ceiling for each with pgbench (-M prepared, 64
# clients, 2 threads) on the same database: the same single-row SELECT and
# INSERT without HTTP, and for the list the replaced service's per-request
# queries (count(*) of the table, then ORDER BY created_at DESC LIMIT 10
# OFFSET 0). /health is compared with nginx answering a static "ok" when nginx
# is installed. Each figure is the median of BENCH_RUNS runs (default 3) of
# BENCH_SECONDS seconds each (default 5), after a 1 s warm-up.
#
# Environment: BENCH_SECONDS, BENCH_RUNS, BENCH_DB_CONNECTIONS (todod's
# db_connections, default 1: the shipped default), BENCH_PG_SETTINGS (extra
# PostgreSQL settings, "name=value name=value"), BENCH_KEEP=1 (keep the work
# directory), PGBIN (PostgreSQL binaries). Everything started is stopped on
# exit, Ctrl-C included. Exit status 1 when a request failed or a check did not hold.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

BENCH_NAME=bench-api
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WORKERS=2
THREADS=2
CONNS=64
LIST_ROWS=1000000
bench_need wrk

echo "# todod API benchmark"
echo
echo "Reproduce: \`make bench-api\` (tests/bench/api.sh; defaults BENCH_SECONDS=5 BENCH_RUNS=3 BENCH_DB_CONNECTIONS=1)"
echo

bench_start_pg
bench_start_todod "$WORKERS" "$DB_CONNECTIONS"

cat <<EOT
Configuration:
- machine: $(bench_machine); loopback only, wrk, pgbench, todod and PostgreSQL share the CPUs
- todod $("$TODOD_BIN" -V | awk '{ print $2 }'), workers = $WORKERS, db_connections = $DB_CONNECTIONS (per worker); its configuration file: \`$(bench_todod_conf)\` (other keys at their defaults)
- PostgreSQL $(bench_pg_version): $(bench_pg_settings)
- load: wrk -t$THREADS -c$CONNS -d${BENCH_SECONDS}s (1 s warm-up first); pgbench -n -M prepared -c $CONNS -j $THREADS -T $BENCH_SECONDS
- each figure: median of $BENCH_RUNS runs

EOT

# ---- seed ----

bench_note "seeding: one todo through POST /todos, then $((LIST_ROWS - 1)) rows with one INSERT ... SELECT"
resp=$(curl -s --max-time 10 -X POST -H 'Content-Type: application/json' \
    -d '{"title":"bench get by id"}' -w '\n%{http_code}' "$(bench_url /todos)")
[ "${resp##*$'\n'}" = 201 ] || bench_die "POST /todos answered: $resp"
TODO_ID=$(printf '%s\n' "$resp" | sed -n 's/.*"id" *: *"\([0-9a-f-]\{36\}\)".*/\1/p' | head -n 1)
[ -n "$TODO_ID" ] || bench_die "no id in the answer of POST /todos: $resp"

# Distinct timestamps, one second apart, as a table filled over time would have.
bench_psql -c "INSERT INTO todos (id, title, done, created_at, updated_at)
    SELECT gen_random_uuid(), 'seeded todo #' || i, i % 2 = 0, ts, ts
    FROM (SELECT i, now() - i * interval '1 second' AS ts
          FROM generate_series(1, $((LIST_ROWS - 1))) i) s" >&2
# VACUUM (ANALYZE): statistics, and the hint bits and visibility map a table
# of that age would have (which helps the old design's count(*) most).
bench_psql -c 'VACUUM (ANALYZE) todos' >&2
# The seed's dirty pages written now, not by a checkpoint during the measurements.
bench_psql -c 'CHECKPOINT' >&2

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

# ---- wrk ----

cat >"$BENCH_DIR/wrk.lua" <<'EOF'
-- BENCH_BODY, when set, is sent with POST as application/json.
local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
    wrk.method = "POST"
    wrk.body = body
    wrk.headers["Content-Type"] = "application/json"
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
# wrk_measure LABEL PATH [BODY]: sets W_RPS, W_P50, W_P99 (medians).
wrk_measure() {
    local label=$1 path=$2 body=${3:-} i out line rps=() p50=() p99=() se=0 st=0
    local url
    url=$(bench_url "$path")
    bench_note "wrk: $label (warm-up, then $BENCH_RUNS x ${BENCH_SECONDS}s)"
    BENCH_BODY=$body bench_bounded 60 wrk -t"$THREADS" -c"$CONNS" -d1s -s "$BENCH_DIR/wrk.lua" "$url" \
        >>"$BENCH_DIR/wrk.log" 2>&1 || bench_die "wrk failed (see $BENCH_DIR/wrk.log)"
    for i in $(seq 1 "$BENCH_RUNS"); do
        out=$(BENCH_BODY=$body bench_bounded $((BENCH_SECONDS + 60)) wrk -t"$THREADS" -c"$CONNS" \
            -d"${BENCH_SECONDS}s" --latency -s "$BENCH_DIR/wrk.lua" "$url" 2>&1) ||
            bench_die "wrk failed: $out"
        printf '== %s run %s\n%s\n' "$label" "$i" "$out" >>"$BENCH_DIR/wrk.log"
        line=$(printf '%s\n' "$out" | grep '^BENCH ') || bench_die "no result from wrk: $out"
        rps+=("$(field rps "$line")")
        p50+=("$(field p50 "$line")")
        p99+=("$(field p99 "$line")")
        se=$((se + $(field socket_errors "$line")))
        st=$((st + $(field status_errors "$line")))
    done
    W_RPS=$(bench_median "${rps[@]}")
    W_P50=$(bench_median "${p50[@]}")
    W_P99=$(bench_median "${p99[@]}")
    bench_note "  $label: ${rps[*]} req/s -> median $W_RPS"
    details+=("$label (wrk): req/s ${rps[*]}; p50 ms ${p50[*]}; p99 ms ${p99[*]}")
    if [ "$st" -gt 0 ]; then
        notes+=("$label: $st answers were not 2xx/3xx")
        http_errors=1
    fi
    [ "$se" -gt 0 ] && notes+=("$label: $se socket errors (connect/read/write/timeout)")
    return 0
}

# pgbench_measure LABEL SCRIPT [pgbench options]: sets P_TPS (median).
pgbench_measure() {
    local label=$1 script=$2 i out tps=() v
    shift 2
    bench_note "pgbench: $label ($BENCH_RUNS x ${BENCH_SECONDS}s)"
    for i in $(seq 1 "$BENCH_RUNS"); do
        out=$(bench_bounded $((BENCH_SECONDS + 120)) "$PGBIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" \
            -U postgres -n -M prepared -c "$CONNS" -j "$THREADS" -T "$BENCH_SECONDS" \
            -f "$script" "$@" todod 2>&1) || bench_die "pgbench failed: $out"
        printf '== %s run %s\n%s\n' "$label" "$i" "$out" >>"$BENCH_DIR/pgbench.log"
        v=$(printf '%s\n' "$out" | awk '/^tps = / { print $3; exit }')
        [ -n "$v" ] || bench_die "no tps from pgbench (BENCH_SECONDS too short for $CONNS connections to open?): $out"
        if printf '%s\n' "$out" | grep -q '^number of failed transactions: [1-9]'; then
            bench_die "pgbench: failed transactions: $out"
        fi
        tps+=("$v")
    done
    P_TPS=$(bench_median "${tps[@]}")
    bench_note "  $label: ${tps[*]} tps -> median $P_TPS"
    details+=("$label (pgbench): tps $(printf '%.1f\n' "${tps[@]}" | paste -sd ' ')")
}

cat >"$BENCH_DIR/get.sql" <<'EOF'
SELECT id, title, done, created_at, updated_at FROM todos WHERE id = :id;
EOF
cat >"$BENCH_DIR/insert.sql" <<'EOF'
INSERT INTO todos (id, title, done) VALUES (gen_random_uuid(), 'bench', false);
EOF
cat >"$BENCH_DIR/old_list.sql" <<'EOF'
SELECT count(*) FROM todos;
SELECT id, title, done, created_at, updated_at FROM todos ORDER BY created_at DESC LIMIT 10 OFFSET 0;
EOF

rows=()
row() { # request rps p50 p99 ceiling ceiling_rps|n/a [decimals of ceiling_rps]
    local c=n/a r=n/a
    if [ "$6" != n/a ]; then
        c=$(bench_fmt "$6" "${7:-0}")
        r="$(bench_ratio "$2" "$6" 2)x"
    fi
    rows+=("| $1 | $(bench_fmt "$2") | $(bench_fmt "$3" 2) | $(bench_fmt "$4" 2) | $5 | $c | $r |")
}

# Reads first, on exactly LIST_ROWS rows; then the writes, which add rows.
wrk_measure "GET /todos/{id}" "/todos/$TODO_ID"
get=("$W_RPS" "$W_P50" "$W_P99")
pgbench_measure "SELECT by id" "$BENCH_DIR/get.sql" -D "id=$TODO_ID"
get_ceiling=$P_TPS

wrk_measure "GET /todos?limit=10" "/todos?limit=10"
list=("$W_RPS" "$W_P50" "$W_P99")
pgbench_measure "old list (count(*) + ORDER BY ... LIMIT 10 OFFSET 0)" "$BENCH_DIR/old_list.sql"
list_old=$P_TPS
count_line=$(check_counts "$LIST_ROWS")

wrk_measure "GET /health" "/health"
health=("$W_RPS" "$W_P50" "$W_P99")
health_ceiling=n/a
health_label="nginx static \`ok\` (nginx not installed)"
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
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /health { default_type "text/plain; charset=utf-8"; return 200 ok; }
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
        saved_port=$HTTP_PORT
        HTTP_PORT=$NGINX_PORT
        wrk_measure "nginx /health" "/health"
        HTTP_PORT=$saved_port
        health_ceiling=$W_RPS
        health_label="nginx $(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p') static \`ok\`, $WORKERS workers"
    else
        notes+=("nginx did not start (see its error log): no /health ceiling")
        health_label="nginx static \`ok\` (did not start)"
    fi
    kill -TERM "${BENCH_EXTRA_PIDS[-1]}" 2>/dev/null || true
fi

wrk_measure "POST /todos" "/todos" '{"title":"bench"}'
post=("$W_RPS" "$W_P50" "$W_P99")
pgbench_measure "INSERT one row" "$BENCH_DIR/insert.sql"
post_ceiling=$P_TPS
end_count_line=$(check_counts "")

row "GET /todos/{id}" "${get[@]}" "pgbench: same single-row SELECT by id" "$get_ceiling"
row "POST /todos" "${post[@]}" "pgbench: single-row INSERT" "$post_ceiling"
row "GET /todos?limit=10 (1,000,000 rows)" "${list[@]}" \
    "old service's queries: count(*) + ORDER BY created_at DESC LIMIT 10 OFFSET 0" "$list_old" 1
row "GET /health" "${health[@]}" "$health_label" "$health_ceiling"

list_ratio=$(bench_ratio "${list[0]}" "$list_old" 2)
verdict=$(awk -v r="$list_ratio" 'BEGIN { print (r + 0 >= 10) ? "met" : "NOT met" }')

echo "| request | todod req/s | p50 ms | p99 ms | ceiling | ceiling req/s | ratio |"
echo "| --- | ---: | ---: | ---: | --- | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
echo "GET /todos?limit=10 vs the replaced service's design on the same 1,000,000 rows: ${list_ratio}x (target >= 10x: $verdict)."
echo "Ratio = todod req/s / ceiling req/s (pgbench: transactions/s, one transaction per request; p50/p99 are wrk's)."
echo "$count_line"
echo "After the write runs: ${end_count_line#Row count check: }"
if [ "${#notes[@]}" -gt 0 ]; then
    echo
    echo "Notes:"
    printf -- '- %s\n' "${notes[@]}"
fi
echo
echo "Runs:"
printf -- '- %s\n' "${details[@]}"
echo
echo "Worker memory at the end:"
bench_worker_rss

if [ "$http_errors" -ne 0 ] || [[ "$count_line$end_count_line" == *FAILED* ]]; then
    exit 1
fi
