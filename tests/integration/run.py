#!/usr/bin/env python3
"""Run the integration tests (a short way to call pytest on them):

    python3 tests/integration/run.py [SUBSTRING...] [-- PYTEST_OPTION...]

Each SUBSTRING keeps the tests whose name contains it, or a whole module named by
it (test_tracing); without one, every test runs. It is the same as

    python3 -m pytest tests/integration -k 'SUBSTRING or ...'

(Debian's python3-pytest and python3-pytest-timeout; `make deps-test` installs
them). TODOD_BIN names the binary under test (default build/todod),
TODOD_SANITIZER=1 says it is the sanitizer build, TODOD_SKIP_SLOW=1 skips the slow
tests, TODOD_TEST_TIMEOUT (seconds, default 300; slow tests 3x) bounds each test.
The last line is "N passed, N failed"; exit status 1 if any failed.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"


def main(argv):
    try:
        import pytest  # noqa: F401
    except ImportError:
        # a python3 of its own (pyenv, a venv) without Debian's pytest: use Debian's
        if sys.executable != SYSTEM_PYTHON and os.access(SYSTEM_PYTHON, os.X_OK):
            os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, __file__, *argv])
        print("run.py: pytest is not installed (make deps-test, or apt-get install "
              "python3-pytest python3-pytest-timeout)", file=sys.stderr)
        return 2
    import pytest

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    filters = [a for a in argv if not a.startswith("-")]
    args = [str(HERE)]
    if filters:
        # -k matches a substring of a test's name or of its module's name
        args += ["-k", " or ".join(filters)]
    rc = pytest.main(args + extra)
    # no test selected (a filter that matches nothing) is not a failure
    return 0 if rc in (0, pytest.ExitCode.NO_TESTS_COLLECTED) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
