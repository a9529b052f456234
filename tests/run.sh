#!/usr/bin/env bash
# The whole test suite (make check runs it after building build/todod, build/san/todod
# and the unit tests of both trees):
#   1. every unit test binary of build/tests/ and build/san/tests/ (cmocka)
#   2. the integration tests against build/todod (pytest over tests/integration)
#   3. the integration tests against build/san/todod (AddressSanitizer + UBSan)
# Arguments are passed to pytest (e.g. -k NAME_SUBSTRING). Each pytest run ends with
# "N passed, N failed" (tests/integration/conftest.py: each test counted once).
# The last line is the grand total "N passed, N failed"; exit status 1 if any failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT" || exit 1
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

# Sanitizer findings abort the process and are written to its stderr (the daemon
# log in integration tests, where the harness looks for them).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:halt_on_error=1:detect_leaks=1:print_summary=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:abort_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-print_suppressions=0}
export CMOCKA_MESSAGE_OUTPUT=stdout
unset CMOCKA_XML_FILE

total_pass=0
total_fail=0
total_skip=0
out=$(mktemp "${TMPDIR:-/tmp}/todod-check.XXXXXX")
trap 'rm -f "$out"' EXIT

# ---------------------------------------------------------------- unit tests
run_unit() { # binary
    local bin=$1 rc p f
    "$bin" >"$out" 2>&1
    rc=$?
    # cmocka: "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s), listed below:"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\..*/\1/p' "$out" | awk '{s += $1} END {print s + 0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s).*/\1/p' "$out" | awk '{s += $1} END {print s + 0}')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1   # crashed, or failed without saying so
    fi
    if [ "$rc" -eq 0 ] && [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        f=1   # ran nothing recognisable
        echo "    (no cmocka summary line)"
    fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    if [ "$f" -eq 0 ]; then
        echo "ok - $bin ($p passed)"
    else
        echo "FAIL - $bin ($p passed, $f failed, exit status $rc)"
        sed 's/^/    | /' "$out" | tail -n 60
    fi
}

echo "# unit tests"
for tree in build build/san; do
    found=0
    for bin in "$tree"/tests/test_*; do
        if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then continue; fi
        found=1
        run_unit "$bin"
    done
    if [ "$found" -eq 0 ] && compgen -G "tests/unit/test_*.c" >/dev/null; then
        echo "FAIL - no unit test binaries in $tree/tests (build them first: make check)"
        total_fail=$((total_fail + 1))
    fi
done

# ---------------------------------------------------------------- integration tests
run_integration() { # label binary [env...]
    local label=$1 bin=$2 line p f s rc
    shift 2
    echo
    echo "# integration tests: $label ($bin)"
    if [ ! -x "$bin" ]; then
        echo "FAIL - $bin is missing (build it first: make check)"
        total_fail=$((total_fail + 1))
        return
    fi
    env TODOD_BIN="$ROOT/$bin" PYTHONUNBUFFERED=1 "$@" \
        "$PY" -m pytest tests/integration "${ARGS[@]}" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    line=$(tail -n 1 "$out")
    if [[ "$line" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        p=${BASH_REMATCH[1]}
        f=${BASH_REMATCH[2]}
        # 5: no test selected (an argument that matches nothing)
        if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ] && [ "$f" -eq 0 ]; then f=1; fi
    else
        p=0
        f=1
        echo "FAIL - pytest ended without its summary line (exit status $rc)"
    fi
    s=$(sed -n 's/^# \([0-9][0-9]*\) skipped$/\1/p' "$out" | tail -n 1)
    total_skip=$((total_skip + ${s:-0}))
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
}

ARGS=("$@")
run_integration "release build" build/todod
run_integration "sanitizer build" build/san/todod TODOD_SANITIZER=1

echo
[ "$total_skip" -eq 0 ] || echo "# $total_skip skipped"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
