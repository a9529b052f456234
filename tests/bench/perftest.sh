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
# up by a rolled-back insert); and the binary rows cut into the spread test's
# shares, one session per share, all copying at once (timed on the server's
# clock from the first start to the last end): what PostgreSQL itself reaches
# with as many parallel loaders into this table as the spread test has
# workers, the ceiling the "all" run is compared with too. Before every
# measurement the table is emptied (TRUNCATE: the trigger-kept count follows)
# and a CHECKPOINT is made, so that no measurement pays for the previous one's
# writes. A \copy of the first 500 of those rows is timed too: the floor for
# the 500-todo run, whose end-to-end time (curl's %{time_total}) has a 20 ms
# target. Each measurement
# runs BENCH_RUNS times (default 3); the table gives medians.
#
# With BENCH_INDEXES=1 it also measures, for each set of the table's indexes
# (each alone, all but idx_todos_done, all), one session copying the rows into
# a scratch table with only those indexes against one session per share at
# once into that table and into a table each: where parallel loaders contend.
#
# Environment: BENCH_RUNS, BENCH_INDEXES, BENCH_DB_CONNECTIONS (todod's db_connections;
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

# group N: N with thousands separated by commas.
group() { printf '%s' "$1" | sed ':a; s/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/; ta'; }

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

# The same rows cut as the spread test cuts them (share k of W: rows
# floor(k*N/W) .. floor((k+1)*N/W) - 1), one binary file per share, for W
# sessions copying at once: what PostgreSQL itself reaches with W parallel
# loaders into this one table.
SHARE_BINS=()
for k in $(seq 0 $((WORKERS - 1))); do
    lo=$((k * COPY_ROWS / WORKERS))
    hi=$(((k + 1) * COPY_ROWS / WORKERS))
    sed -n "$((lo + 1)),${hi}p" "$CSV" >"$BENCH_DIR/share$k.csv"
    fresh_table
    bench_psql -c "\\copy todos (id, title, done) FROM '$BENCH_DIR/share$k.csv' WITH (FORMAT csv)" \
        -c "\\copy (SELECT id, title, done FROM todos) TO '$BENCH_DIR/share$k.bin' WITH (FORMAT binary)" >&2
    SHARE_BINS+=("$BENCH_DIR/share$k.bin")
done

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

# copy_took ROWS MS: one run's time, into the calling function's mss and rates.
copy_took() {
    mss+=("$2")
    rates+=("$(awk -v n="$1" -v ms="$2" 'BEGIN { printf "%.1f\n", n / (ms / 1000) }')")
    bench_note "  ${rates[-1]} rows/s, $2 ms"
}

# copy_summed LABEL: the medians of the calling function's runs into C_RATE
# (rows/s) and C_MS, every run into the details.
copy_summed() {
    C_RATE=$(bench_median "${rates[@]}")
    C_MS=$(bench_median "${mss[@]}")
    details+=("$1: rows/s ${rates[*]}; ms ${mss[*]}")
}

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
        copy_took "$rows" "$ms"
    done
    copy_summed "COPY $format $rows"
}

# await_barrier N: until the holder has lock 7007 and N sessions wait for it.
await_barrier() {
    local n
    for n in $(seq 1 600); do
        [ "$(bench_sql "SELECT count(*) FILTER (WHERE granted AND mode = 'ExclusiveLock') || ' ' ||
            count(*) FILTER (WHERE NOT granted) FROM pg_locks
            WHERE locktype = 'advisory' AND objid = 7007")" = "1 $1" ] && return 0
        sleep 0.05
    done
    bench_die "the COPY sessions did not meet at their start within 30 s"
}

# copy_at_once ROWS TABLE:FILE...: one session per TABLE:FILE pair, copying
# binary FILE into TABLE, all released at once, each warmed up as above; sets
# C_RATE (rows/s) and C_MS, medians of BENCH_RUNS runs. The time runs from the
# first session's start to the last one's end, read on the server's clock.
# The sessions start once a holder session has an advisory lock, and wait for
# it; the holder keeps it until every one of them waits (then it is
# cancelled). Every table named is emptied before each run, and must hold ROWS
# rows in all after it.
copy_at_once() {
    local rows=$1 i k pair ms mss=() rates=() holder t0 t1 pids tables got t
    shift
    tables=$(printf '%s\n' "${@%%:*}" | sort -u | paste -sd, -)
    for i in $(seq 1 "$BENCH_RUNS"); do
        bench_psql -c "TRUNCATE $tables" -c 'CHECKPOINT' >&2
        bench_note "COPY (binary) of $rows rows in $# session(s) at once into $tables (run $i of $BENCH_RUNS)"
        bench_psql -c 'SELECT pg_advisory_lock(7007)' -c 'SELECT pg_sleep(60)' >/dev/null 2>&1 &
        holder=$!
        await_barrier 0
        k=0
        pids=()
        for pair in "$@"; do
            printf '%s\n' "BEGIN;" \
                "INSERT INTO ${pair%%:*} (id, title, done) VALUES (gen_random_uuid(), 'warm-up', false);" \
                "ROLLBACK;" "SELECT pg_advisory_lock_shared(7007);" \
                "SELECT 'T0', extract(epoch FROM clock_timestamp());" \
                "\\copy ${pair%%:*} (id, title, done) FROM '${pair#*:}' WITH (FORMAT binary)" \
                "SELECT 'T1', extract(epoch FROM clock_timestamp());" |
                bench_psql -At -F ' ' >"$BENCH_DIR/par$k.out" 2>&1 &
            pids+=($!)
            k=$((k + 1))
        done
        await_barrier $# # then release them
        bench_sql "SELECT pg_cancel_backend(pid) FROM pg_locks WHERE locktype = 'advisory'
            AND objid = 7007 AND granted AND mode = 'ExclusiveLock'" >/dev/null
        wait "$holder" || true
        wait "${pids[@]}" || true
        t0=$(cat "$BENCH_DIR"/par*.out | awk '$1 == "T0" { print $2 }' | sort -n | head -n 1)
        t1=$(cat "$BENCH_DIR"/par*.out | awk '$1 == "T1" { print $2 }' | sort -n | tail -n 1)
        [ "$(cat "$BENCH_DIR"/par*.out | grep -c '^T[01] ')" = $((2 * $#)) ] ||
            bench_die "COPY sessions failed: $(cat "$BENCH_DIR"/par*.out)"
        ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }')
        rm -f "$BENCH_DIR"/par*.out
        if [ "$tables" = todos ]; then
            check_rows "$rows" || true
        else
            got=0
            for t in ${tables//,/ }; do
                got=$((got + $(bench_sql "SELECT count(*) FROM $t")))
            done
            if [ "$got" != "$rows" ]; then
                bench_note "CHECK FAILED: $tables hold $got rows, expected $rows"
                failed=1
            fi
        fi
        copy_took "$rows" "$ms"
    done
    copy_summed "COPY binary $rows in $# session(s) into $tables"
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
copy_at_once "$COPY_ROWS" "${SHARE_BINS[@]/#/todos:}"
PAR_RATE=$C_RATE
PAR_MS=$C_MS

# ---- where the sessions meet (BENCH_INDEXES=1) ----

# For each set of the table's indexes: one session copying all the rows into
# a table with those indexes alone, against one session per share copying at
# once into that same table, and into a table of its own each (the same
# indexes): what sharing the table's pages costs parallel loaders.
INDEX_ROWS=()
if [ "${BENCH_INDEXES:-0}" = 1 ]; then
    for set in "PRIMARY KEY (id)" "(done)" "(created_at)" "(created_at, id)" \
        "PRIMARY KEY (id)|(created_at)|(created_at, id)" \
        "PRIMARY KEY (id)|(done)|(created_at)|(created_at, id)"; do
        own=()
        for k in $(seq 0 $((WORKERS - 1))); do
            bench_psql -c "DROP TABLE IF EXISTS bench_copy$k" \
                -c "CREATE TABLE bench_copy$k (LIKE todos INCLUDING DEFAULTS)" >&2
            IFS='|' read -ra defs <<<"$set"
            for def in "${defs[@]}"; do
                case $def in
                PRIMARY*) bench_psql -c "ALTER TABLE bench_copy$k ADD $def" >&2 ;;
                *) bench_psql -c "CREATE INDEX ON bench_copy$k $def" >&2 ;;
                esac
            done
            own+=("bench_copy$k:${SHARE_BINS[$k]}")
        done
        copy_at_once "$COPY_ROWS" "bench_copy0:$BIN"
        one=$C_RATE
        copy_at_once "$COPY_ROWS" "${SHARE_BINS[@]/#/bench_copy0:}"
        same=$C_RATE
        copy_at_once "$COPY_ROWS" "${own[@]}"
        apart=$C_RATE
        INDEX_ROWS+=("| ${set//|/, } | $(group "$(bench_fmt "$one")") | $(group "$(bench_fmt "$same")") |\
 $(bench_ratio "$same" "$one" 2) | $(group "$(bench_fmt "$apart")") | $(bench_ratio "$apart" "$one" 2) |")
        for k in $(seq 0 $((WORKERS - 1))); do
            bench_psql -c "DROP TABLE bench_copy$k" >&2
        done
    done
fi

# ---- report ----

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
echo "| psql \\copy, binary, $WORKERS sessions at once (the shares' rows) | $(group "$COPY_ROWS") | - | - |" \
    "$(group "$(bench_fmt "$PAR_RATE")") | $(bench_fmt "$PAR_MS") | $(bench_ratio "$PAR_RATE" "$BIN_RATE" 2) |" \
    "$(bench_ratio "$PAR_RATE" "$COPY_RATE" 2) |"
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
echo "PostgreSQL's own parallel ceiling: $WORKERS sessions copying the shares' rows at once reach" \
    "$(bench_ratio "$PAR_RATE" "$BIN_RATE" 2)x one binary COPY; \"workers\":\"all\" reaches" \
    "$(bench_ratio "${RATE["100000 1000 all"]}" "$PAR_RATE" 2)x those $WORKERS sessions."
echo
if [ "${#INDEX_ROWS[@]}" -gt 0 ]; then
    echo "Where parallel loaders meet (BENCH_INDEXES=1): binary COPY of $(group "$COPY_ROWS") rows into a table" \
        "with only the indexes named (no triggers), rows/s, medians:"
    echo
    echo "| indexes | 1 session | $WORKERS sessions, one table | ratio | $WORKERS sessions, a table each | ratio |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${INDEX_ROWS[@]}"
    echo
fi
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
