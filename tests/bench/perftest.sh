#!/usr/bin/env bash
# The performance test endpoint against COPY speed.
#
#   make bench-perftest       (or tests/bench/perftest.sh after make)
#
# Starts a private PostgreSQL (fresh data directory in /tmp, free loopback port)
# and todod (workers = 2, other keys at their defaults but the performance
# test's limits), then runs POST /todos/performance-test, in this order, with
#   message_count 100,000 and batch_size 1,000 on one worker (the default),
#   message_count 100,000 and batch_size 1,000 with "workers":"all",
#   message_count     500 and batch_size    50 (also timed end to end by curl),
#   message_count 1,000,000 and batch_size 10,000 on one worker,
#   message_count 1,000,000 and batch_size 10,000 with "workers":"all",
# and, as the ceilings, psql's \copy of 100,000 equivalent rows (id, title
# 'Performance Test Todo #i', done = i % 2 = 0) into the same todos table
# (todod's indexes and triggers) from files generated beforehand: binary
# (FORMAT binary, the fastest way PostgreSQL loads rows on one connection) and
# CSV, each timed by psql's \timing around the copy alone (in a session warmed
# up by a rolled-back insert). Before every measurement the table is
# emptied (TRUNCATE: the trigger-kept count follows) and a CHECKPOINT is made,
# so that no measurement pays for the previous one's writes. A \copy of the
# first 500 of those rows is timed too: the floor for the 500-todo run, whose
# end-to-end time (curl's %{time_total}) has a 20 ms target. Each measurement
# runs BENCH_RUNS times (default 3); the table gives medians.
#
# Environment: BENCH_RUNS, BENCH_DB_CONNECTIONS (todod's db_connections;
# unset: the shipped default), BENCH_PG_SETTINGS (extra PostgreSQL
# settings, "name=value name=value", e.g. synchronous_commit=off),
# BENCH_KEEP=1 (keep the work directory), PGBIN (PostgreSQL binaries).
# Everything started is stopped on exit, Ctrl-C included. Exit status 1 when a
# run lost todos or a check did not hold, 2 when a target was not met
# ("workers":"all" >= 1.2x binary COPY, one worker >= 0.95x, 500 todos < 20 ms).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

BENCH_NAME=bench-perftest
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WORKERS=2
COPY_ROWS=100000
OLD_RATE=90 # todos/s, the replaced service's documented figure
# message_count batch_size workers ("-": the field left out, one worker)
RUNS=("100000 1000 -" "100000 1000 all" "500 50 -" "1000000 10000 -" "1000000 10000 all")

echo "# todod performance test vs COPY"
echo
echo "Reproduce: \`make bench-perftest\` (tests/bench/perftest.sh; default BENCH_RUNS=3)"
echo

bench_start_pg
bench_start_todod "$WORKERS" "perf_max_messages = 1000000" "perf_max_batch = 10000"

cat <<EOT
Configuration:
- machine: $(bench_machine); loopback only, curl, psql, todod and PostgreSQL share the CPUs
- todod $("$TODOD_BIN" -V | awk '{ print $2 }'), workers = $WORKERS (a test runs in the worker that took the request, or, with "workers":"all", in every worker); its configuration file: \`$(bench_todod_conf)\` (other keys at their defaults)
- PostgreSQL $(bench_pg_version): $(bench_pg_settings)
- table: todod's todos table as todod created it (primary key, 3 indexes, row-count triggers), emptied by TRUNCATE and followed by a CHECKPOINT before each measurement
- each figure: median of $BENCH_RUNS runs

EOT

# ---- helpers ----

failed=0
details=()

# json_num NAME JSON: the first number field NAME of a JSON text (the report's
# own fields come before those of per_worker).
json_num() { printf '%s' "$2" | grep -o "\"$1\" *: *[0-9.eE+-]*" | head -n 1 | sed 's/.*: *//'; }

fresh_table() {
    bench_psql -c 'TRUNCATE todos' -c 'CHECKPOINT' >&2
}

check_rows() { # expected
    local exact kept
    exact=$(bench_sql 'SELECT count(*) FROM todos')
    kept=$(bench_sql 'SELECT coalesce(sum(n), 0) FROM todod_todo_count')
    if [ "$exact" != "$1" ] || [ "$kept" != "$1" ]; then
        bench_note "CHECK FAILED: count(*) = $exact, trigger-kept count = $kept, expected $1"
        failed=1
        return 1
    fi
}

# ---- the files for COPY, made before any timing ----

CSV=$BENCH_DIR/copy.csv
BIN=$BENCH_DIR/copy.bin
bench_note "generating $COPY_ROWS rows of CSV and of binary COPY data"
bench_psql -c "\\copy (SELECT gen_random_uuid(), 'Performance Test Todo #' || i, i % 2 = 0
    FROM generate_series(0, $((COPY_ROWS - 1))) i) TO '$CSV' WITH (FORMAT csv)" >&2
[ "$(wc -l <"$CSV")" -eq "$COPY_ROWS" ] || bench_die "the CSV file does not hold $COPY_ROWS rows"
# The same rows in binary: loaded once from the CSV, written out binary.
fresh_table
bench_psql -c "\\copy todos (id, title, done) FROM '$CSV' WITH (FORMAT csv)" \
    -c "\\copy (SELECT id, title, done FROM todos) TO '$BIN' WITH (FORMAT binary)" >&2

# ---- todod ----

declare -A RATE DUR E2E
for spec in "${RUNS[@]}"; do
    read -r total batch workers <<<"$spec"
    more=
    [ "$workers" = - ] || more=",\"workers\":\"$workers\""
    rates=()
    durs=()
    e2es=()
    for i in $(seq 1 "$BENCH_RUNS"); do
        fresh_table
        bench_note "performance test: $total todos, batch $batch, workers $workers (run $i of $BENCH_RUNS)"
        out=$(curl -s --max-time 900 -X POST -H 'Content-Type: application/json' \
            -d "{\"message_count\":$total,\"batch_size\":$batch$more}" \
            -w '\n%{http_code} %{time_total}' "$(bench_url /todos/performance-test)") ||
            bench_die "curl failed: $out"
        status=${out##*$'\n'}
        body=${out%$'\n'*}
        [ "${status%% *}" = 200 ] || bench_die "POST /todos/performance-test answered: $out"
        rate=$(json_num messages_per_second "$body")
        dur=$(json_num duration_ms "$body")
        ok=$(json_num success_count "$body")
        errs=$(json_num error_count "$body")
        p50=$(json_num p50 "$body")
        p99=$(json_num p99 "$body")
        e2e=$(awk -v s="${status#* }" 'BEGIN { printf "%.3f\n", s * 1000 }')
        if [ "$ok" != "$total" ] || [ "$errs" != 0 ]; then
            bench_note "RUN FAILED: success_count $ok, error_count $errs of $total: $body"
            failed=1
        fi
        check_rows "$total" || true
        bench_note "  $rate todos/s, $dur ms in todod, $e2e ms end to end, batch p50 $p50 ms, p99 $p99 ms"
        rates+=("$rate")
        durs+=("$dur")
        e2es+=("$e2e")
    done
    RATE[$spec]=$(bench_median "${rates[@]}")
    DUR[$spec]=$(bench_median "${durs[@]}")
    E2E[$spec]=$(bench_median "${e2es[@]}")
    details+=("todod $total/$batch/workers $workers: todos/s ${rates[*]}; duration ms ${durs[*]}; curl time_total ms ${e2es[*]}")
done

# ---- COPY ----

# copy_measure ROWS FILE FORMAT: sets C_RATE (rows/s) and C_MS, medians.
copy_measure() {
    local rows=$1 file=$2 format=$3 i out ms mss=() rates=()
    for i in $(seq 1 "$BENCH_RUNS"); do
        fresh_table
        bench_note "COPY ($format) of $rows rows (run $i of $BENCH_RUNS)"
        # A rolled-back insert first warms the session up (catalog caches, the
        # count trigger's function), as todod's long-lived connections are.
        out=$(printf '%s\n' "BEGIN;" \
            "INSERT INTO todos (id, title, done) VALUES (gen_random_uuid(), 'warm-up', false);" \
            "ROLLBACK;" '\timing on' \
            "\\copy todos (id, title, done) FROM '$file' WITH (FORMAT $format)" |
            bench_psql 2>&1) || bench_die "COPY failed: $out"
        ms=$(printf '%s\n' "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1)
        [ -n "$ms" ] || bench_die "no time from psql's \\timing: $out"
        check_rows "$rows" || true
        mss+=("$ms")
        rates+=("$(awk -v n="$rows" -v ms="$ms" 'BEGIN { printf "%.1f\n", n / (ms / 1000) }')")
        bench_note "  ${rates[-1]} rows/s, $ms ms"
    done
    C_RATE=$(bench_median "${rates[@]}")
    C_MS=$(bench_median "${mss[@]}")
    details+=("COPY $format $rows: rows/s ${rates[*]}; ms ${mss[*]}")
}

copy_measure "$COPY_ROWS" "$BIN" binary
BIN_RATE=$C_RATE
BIN_MS=$C_MS
copy_measure "$COPY_ROWS" "$CSV" csv
COPY_RATE=$C_RATE
COPY_MS=$C_MS
# The same for 500 rows: what the 500-todo run would cost at COPY speed.
head -n 500 "$CSV" >"$BENCH_DIR/copy500.csv"
copy_measure 500 "$BENCH_DIR/copy500.csv" csv
COPY500_RATE=$C_RATE
COPY500_MS=$C_MS

# ---- report ----

group() { printf '%s' "$1" | sed ':a; s/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/; ta'; }

echo "| run | todos | batch | workers | todos/s (median) | duration ms | vs binary COPY | vs CSV COPY |"
echo "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
for spec in "${RUNS[@]}"; do
    read -r total batch workers <<<"$spec"
    label=1
    [ "$workers" = - ] || label="\"$workers\" ($WORKERS)"
    echo "| todod POST /todos/performance-test | $(group "$total") | $(group "$batch") | $label |" \
        "$(group "$(bench_fmt "${RATE[$spec]}")") | $(bench_fmt "${DUR[$spec]}") |" \
        "$(bench_ratio "${RATE[$spec]}" "$BIN_RATE" 2) | $(bench_ratio "${RATE[$spec]}" "$COPY_RATE" 2) |"
done
echo "| psql \\copy, binary (ceiling) | $(group "$COPY_ROWS") | - | - | $(group "$(bench_fmt "$BIN_RATE")") |" \
    "$(bench_fmt "$BIN_MS") | 1.00 | $(bench_ratio "$BIN_RATE" "$COPY_RATE" 2) |"
echo "| psql \\copy, CSV | $(group "$COPY_ROWS") | - | - | $(group "$(bench_fmt "$COPY_RATE")") |" \
    "$(bench_fmt "$COPY_MS") | $(bench_ratio "$COPY_RATE" "$BIN_RATE" 2) | 1.00 |"
echo "| psql \\copy, CSV (small) | 500 | - | - | $(group "$(bench_fmt "$COPY500_RATE")") |" \
    "$(bench_fmt "$COPY500_MS" 1) | $(bench_ratio "$COPY500_RATE" "$BIN_RATE" 2) | $(bench_ratio "$COPY500_RATE" "$COPY_RATE" 2) |"
echo
e2e=${E2E["500 50 -"]}
bench_target "\"workers\":\"all\", 100,000 todos >= 1.2x binary COPY" "${RATE["100000 1000 all"]} >= 1.2 * $BIN_RATE"
bench_target "one worker, 100,000 todos >= 0.95x binary COPY" "${RATE["100000 1000 -"]} >= 0.95 * $BIN_RATE"
bench_target "500 todos, batch 50, end to end < 20 ms" "$e2e < 20"
echo "Targets:"
printf -- '- %s\n' "${BENCH_VERDICTS[@]}"
echo
echo "500 todos, batch 50, end to end (curl %{time_total}: connect, request, all batches, answer):" \
    "$(bench_fmt "$e2e" 1) ms median; COPY of the same 500 rows takes $(bench_fmt "$COPY500_MS" 1) ms."
echo
echo "Against the replaced service's documented $OLD_RATE todos/s:"
for spec in "${RUNS[@]}"; do
    read -r total batch workers <<<"$spec"
    echo "- $(group "$total") todos, batch $(group "$batch"), workers $workers: $(group "$(bench_ratio "${RATE[$spec]}" "$OLD_RATE" 0)")x"
done
echo
echo "duration ms is todod's own duration_ms (request received to answer ready); todos/s is its messages_per_second."
printf '%s\n' 'COPY: psql \timing of the \copy alone, the files generated beforehand.'
echo
echo "Runs:"
printf -- '- %s\n' "${details[@]}"
echo
echo "Worker memory at the end:"
bench_worker_rss

[ "$failed" -eq 0 ] || exit 1
[ "$BENCH_MISSED" -eq 0 ] || exit 2
