#!/usr/bin/env python3
"""Run the integration tests: every @test of tests/integration/test_*.py.

    python3 tests/integration/run.py [SUBSTRING...]

Arguments keep the tests whose name contains one of them. TODOD_SKIP_SLOW=1 skips
the tests registered with @test(slow=True). TODOD_BIN names the binary under test
(default build/todod). TODOD_TEST_TIMEOUT (seconds, default 300; slow tests 3x)
bounds each test. The last line is "N passed, N failed"; exit status 1 if any failed.
"""

import importlib
import os
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402


class TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimeout("test timed out")


def indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def main(argv):
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    filters = [a for a in argv if not a.startswith("-")]
    skip_slow = os.environ.get("TODOD_SKIP_SLOW", "") not in ("", "0")
    timeout = int(os.environ.get("TODOD_TEST_TIMEOUT", "300"))

    load_failures = []
    for path in sorted(HERE.glob("test_*.py")):
        try:
            importlib.import_module(path.stem)
        except Exception:
            load_failures.append((path.name, traceback.format_exc()))

    print("# todod integration tests: %s%s" % (harness.TODOD_BIN,
          " (sanitizer build)" if harness.SANITIZER else ""), flush=True)
    if not os.access(harness.TODOD_BIN, os.X_OK):
        print("# warning: %s is not an executable file" % harness.TODOD_BIN, flush=True)

    passed = failed = skipped = 0
    for name, tb in load_failures:
        failed += 1
        print("FAIL - import %s\n%s" % (name, indent(tb)), flush=True)

    seen = set()
    tests = []
    for t in harness.TESTS:
        if t["name"] in seen:
            failed += 1
            print("FAIL - %s: registered twice (%s)" % (t["name"], t["module"]), flush=True)
            continue
        seen.add(t["name"])
        if filters and not any(f in t["name"] or f == t["module"] for f in filters):
            continue
        tests.append(t)

    harness._runner["active"] = True
    signal.signal(signal.SIGALRM, _alarm)
    interrupted = False
    try:
        for t in tests:
            name = t["name"]
            if t["slow"] and skip_slow:
                skipped += 1
                print("skip - %s (slow; TODOD_SKIP_SLOW is set)" % name, flush=True)
                continue
            harness._begin_test(name)
            t0 = time.monotonic()
            err = None
            skip_reason = None
            signal.alarm(timeout * (3 if t["slow"] else 1))
            try:
                t["fn"]()
            except harness.Skip as e:
                skip_reason = str(e)
            except KeyboardInterrupt:
                interrupted = True
                err = "interrupted (Ctrl-C)\n"
            except BaseException:
                err = traceback.format_exc()
            finally:
                signal.alarm(0)
            tails, problem = harness._end_test(err is not None)
            if problem and err is None:
                err = problem + "\n"
            dt = time.monotonic() - t0
            if skip_reason is not None and err is None:
                skipped += 1
                print("skip - %s (%s)" % (name, skip_reason), flush=True)
            elif err is None:
                passed += 1
                print("ok - %s (%.1fs)" % (name, dt), flush=True)
            else:
                failed += 1
                print("FAIL - %s (%.1fs)" % (name, dt), flush=True)
                print(indent(err), flush=True)
                for label, path, tail in tails:
                    print("    --- %s, log %s (last lines):" % (label, path))
                    print(indent(tail, "    | "), flush=True)
            if interrupted:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.alarm(0)
        try:
            harness._end_test(True)
        except BaseException:
            pass
        harness.stop_shared_pg()

    if skipped:
        print("# %d skipped" % skipped)
    if interrupted:
        print("# interrupted")
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed or interrupted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
