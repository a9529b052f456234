#!/usr/bin/env bash
# Runs libFuzzer harnesses for a bounded time and says what each found.
#
#   tests/fuzz/run.sh -b DIR [-t SECONDS] [-r RUNS] [-j JOBS] NAME...
#
# DIR holds the harness binaries DIR/fuzz_NAME (make fuzz-build). Each harness
# runs for SECONDS (default 60), or until RUNS executions when RUNS is given,
# JOBS harnesses at a time (default 1), from its seed corpus tests/fuzz/corpus/NAME/
# (read only) and a scratch corpus DIR/corpus/NAME/ that keeps what it learnt
# for the next run; tests/fuzz/NAME.dict is its dictionary when there is one.
# A finding (crash, sanitizer report, leak, time-out, out of memory) is kept as
# DIR/findings/NAME/<kind>-<hash>; replay it with DIR/fuzz_NAME FILE. The whole
# libFuzzer output is in DIR/logs/NAME.log.
#
# One line per harness:
#   fuzz NAME: E executions in S s (R/s), corpus C inputs: no finding
# then "fuzz: H harnesses, F findings"; exit status 1 on any finding or when a
# harness did not run.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
dir=
seconds=60
runs=
jobs=1
while getopts "b:t:r:j:" opt; do
    case $opt in
    b) dir=$OPTARG ;;
    t) seconds=$OPTARG ;;
    r) runs=$OPTARG ;;
    j) jobs=$OPTARG ;;
    *) echo "usage: $0 -b DIR [-t SECONDS] [-r RUNS] [-j JOBS] NAME..." >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ -z "$dir" ] || [ $# -eq 0 ]; then
    echo "usage: $0 -b DIR [-t SECONDS] [-r RUNS] [-j JOBS] NAME..." >&2
    exit 2
fi
for v in "$seconds" "$jobs" ${runs:+"$runs"}; do
    if ! [[ "$v" =~ ^[1-9][0-9]*$ ]]; then
        echo "$0: SECONDS, RUNS and JOBS are positive whole numbers, not '$v'" >&2
        exit 2
    fi
done
mkdir -p "$dir/logs" || exit 1
dir=$(cd "$dir" && pwd -P)

# Sanitizer reports end the run (libFuzzer keeps the input); leaks count.
export ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"

# Runs harness $1; writes its summary line to $dir/logs/$1.summary.
fuzz_one() {
    local name=$1 bin=$dir/fuzz_$1 corpus=$dir/corpus/$1 found=$dir/findings/$1
    local seeds=$ROOT/tests/fuzz/corpus/$1 log=$dir/logs/$1.log sum=$dir/logs/$1.summary
    local args=() dirs=("$corpus") rc execs rate secs start inputs before after new
    mkdir -p "$corpus" "$found"
    if [ ! -x "$bin" ]; then
        echo "fuzz $name: FAILED: $bin is missing (make fuzz-build)" >"$sum"
        return
    fi
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$found/")
    [ -n "$runs" ] && args+=(-runs="$runs")
    [ -f "$ROOT/tests/fuzz/$1.dict" ] && args+=(-dict="$ROOT/tests/fuzz/$1.dict")
    [ -d "$seeds" ] && dirs+=("$seeds")
    before=$(find "$found" -type f | wc -l)
    start=$(date +%s)
    # New inputs go to the first directory only: the seeds stay as they are.
    (cd "$dir" && exec "$bin" "${args[@]}" "${dirs[@]}") >"$log" 2>&1
    rc=$?
    secs=$(($(date +%s) - start))
    after=$(find "$found" -type f | wc -l)
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    inputs=$(find "$corpus" -type f | wc -l)
    execs=${execs:-0}
    rate=$((execs / (secs > 0 ? secs : 1)))
    line="fuzz $name: $execs executions in $secs s ($rate/s), corpus $inputs inputs"
    if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
        new=$(ls -t "$found" 2>/dev/null | head -n 1)
        echo "$line: FINDING (exit status $rc)${new:+: $found/$new}" >"$sum"
        grep -E '^(==[0-9]+==|SUMMARY|fuzz_|.*runtime error:)' "$log" | head -n 20 | sed 's/^/    | /' >>"$sum"
    elif [ "$execs" -eq 0 ]; then
        echo "$line: FAILED: no executions (see $log)" >"$sum"
    else
        echo "$line: no finding" >"$sum"
    fi
}

names=("$@")
running=0
for name in "${names[@]}"; do
    rm -f "$dir/logs/$name.summary"
    if [ "$jobs" -gt 1 ]; then
        if [ "$running" -ge "$jobs" ]; then
            wait -n
            running=$((running - 1))
        fi
        fuzz_one "$name" &
        running=$((running + 1))
    else
        fuzz_one "$name"
        cat "$dir/logs/$name.summary"
    fi
done
wait

bad=0
findings=0
for name in "${names[@]}"; do
    [ "$jobs" -gt 1 ] && cat "$dir/logs/$name.summary" 2>/dev/null
    if ! grep -q ': no finding$' "$dir/logs/$name.summary" 2>/dev/null; then
        bad=$((bad + 1))
        grep -q ': FINDING' "$dir/logs/$name.summary" 2>/dev/null && findings=$((findings + 1))
    fi
done
echo "fuzz: ${#names[@]} harnesses, $findings findings"
[ "$bad" -eq 0 ]
