#!/usr/bin/env bash
# Worker memory over a million requests: is there growth?
#
#   make bench-rss            (or tests/bench/rss.sh after make)
#
# Starts a private PostgreSQL and todod (workers = 2), then drives GET /todos/{id}
# with wrk (2 threads, 64 connections) in rounds of BENCH_SECONDS (default 2)
# until the workers have answered RSS_REQUESTS requests (default 1,000,000),
# printing each worker's VmRSS whenever another 100,000 requests have been
# served. The figure to read: RSS at 200k versus at the end (no growth wanted).
# Bounded: at most RSS_MAX_ROUNDS rounds (default 300).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

BENCH_NAME=bench-rss
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET=${RSS_REQUESTS:-1000000}
ROUND=${BENCH_SECONDS:-2}
MAX_ROUNDS=${RSS_MAX_ROUNDS:-300}
bench_need wrk

echo "# todod worker memory over $TARGET requests"
echo
echo "Reproduce: make bench-rss"
bench_start_pg
bench_start_todod 2

id=$(curl -s -X POST -H 'Content-Type: application/json' -d '{"title":"rss"}' "$(bench_url /todos)" |
     sed -n 's/.*"id":"\([0-9a-f-]*\)".*/\1/p')
[ -n "$id" ] || bench_die "could not create the todo to read"

served() {
    curl -s "$(bench_url /stats)" | sed -n 's/.*"totals":{"requests":\([0-9]*\).*/\1/p'
}
rss_line() {
    local pid out=""
    for pid in $(bench_worker_pids); do
        out="$out $(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status") kB"
    done
    echo "$out"
}

echo
echo "| requests served | worker VmRSS |"
echo "|---:|---|"
next=100000
rounds=0
while :; do
    n=$(served)
    if [ "$n" -ge "$next" ]; then
        echo "| $n | $(rss_line) |"
        next=$(( (n / 100000 + 1) * 100000 ))
    fi
    [ "$n" -lt "$TARGET" ] || break
    rounds=$((rounds + 1))
    [ "$rounds" -le "$MAX_ROUNDS" ] || bench_die "stopped after $MAX_ROUNDS rounds at $n requests"
    bench_bounded $((ROUND + 30)) wrk -t2 -c64 -d"${ROUND}s" "$(bench_url "/todos/$id")" >/dev/null
done
