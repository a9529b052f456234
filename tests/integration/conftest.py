"""pytest glue for todod's integration tests (Debian's python3-pytest and
python3-pytest-timeout):

- collection: every function marked @test (lib/marks.py) in a test_*.py module is a
  test under its own name, in the order of the module;
- fixtures: the PostgreSQL server shared by the session (`pg`; started on first use
  as the PostgreSQL user, stopped at the end of the session, by its PID if pg_ctl
  could not), and, around every
  test, the todod daemons and PostgreSQL servers it started, stopped afterwards (a
  sanitizer report in a daemon's log fails the test; a failed test's logs are
  shown); `todod` makes daemons for a test that asks for it by argument;
- the build under test comes from the environment: TODOD_BIN (default
  build/todod), TODOD_SANITIZER=1 for the sanitizer build (tests that run once,
  in the release build's pass, skip themselves there);
- TODOD_SKIP_SLOW=1 skips the tests marked @test(slow=True); TODOD_TEST_TIMEOUT
  (seconds, default 300; slow tests three times that) bounds each test;
- output: what a test prints (its figures, "    (20006 requests, ...)") follows
  its result line; the last line is "N passed, N failed", counting each test once
  (a test whose teardown found a sanitizer report is failed, not passed and
  errored), with collection errors as failures, and "# N skipped" before it.
"""

import os
import signal
import time

import pytest

from lib import env
from lib.env import tail
from lib.pg import get_pg, shared_pg, stop_shared_pg
from lib.todod import Todod

SKIP_SLOW = os.environ.get("TODOD_SKIP_SLOW", "") not in ("", "0")
TIMEOUT = int(os.environ.get("TODOD_TEST_TIMEOUT", "300"))


# --------------------------------------------------------------------------- collection

def pytest_pycollect_makeitem(collector, name, obj):
    """A function marked by @test is a test, whatever its name; nothing else is
    (pytest.ini turns off the default test_* and Test* rules). @test(cases=...)
    becomes a parametrized test, one item per case."""
    if not isinstance(collector, pytest.Module):
        return None
    marked = getattr(obj, "todod_test", None)
    if not callable(obj) or not isinstance(marked, dict) \
            or getattr(obj, "__module__", None) != collector.module.__name__:
        return None
    if marked.get("cases") is None:
        return pytest.Function.from_parent(collector, name=name)
    cases = marked["cases"]
    if not getattr(obj, "todod_parametrized", False):
        pytest.mark.parametrize("case", list(cases.values()), ids=list(cases))(obj)
        obj.todod_parametrized = True
    # what pytest's own hook does for a test function (python.py, pytest 7.2)
    return list(collector._genfunctions(name, obj))


def pytest_collection_modifyitems(config, items):
    seen = {}
    for item in items:
        slow = getattr(item.obj, "todod_test", {}).get("slow", False)
        name = getattr(item, "originalname", item.name)
        item.add_marker(pytest.mark.timeout(TIMEOUT * (3 if slow else 1)))
        if slow:
            item.add_marker(pytest.mark.slow)
            if SKIP_SLOW:
                item.add_marker(pytest.mark.skip(reason="slow; TODOD_SKIP_SLOW is set"))
        if seen.get(name, item.module.__name__) != item.module.__name__:
            # a name is a specification: -k NAME must pick one test's items
            raise pytest.UsageError("test %s is defined in both %s and %s"
                                    % (name, seen[name], item.module.__name__))
        seen[name] = item.module.__name__


def pytest_report_header(config):
    line = "todod under test: %s%s" % (env.TODOD_BIN, " (sanitizer build)" if env.SANITIZER else "")
    if not os.access(env.TODOD_BIN, os.X_OK):
        line += "\nwarning: %s is not an executable file" % env.TODOD_BIN
    return line


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session", autouse=True)
def _session_pg():
    """The shared PostgreSQL lives as long as the session (started by the first
    test that needs it, through get_pg or the `pg` fixture)."""
    env.RUNNER["active"] = True
    yield
    server = shared_pg()
    pid = server.postmaster_pid() if server is not None else None
    stop_shared_pg()
    # pg_ctl stop gave up (its time-out): end the server by its PID, as an
    # immediate shutdown (SIGQUIT), so that no postmaster outlives the session
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@pytest.fixture
def pg():
    """The PostgreSQL server shared by every test of the session."""
    return get_pg()


@pytest.fixture
def todod():
    """Make daemons: todod(workers=1, ...) -> a Todod (not started), stopped
    after the test with the others."""
    return Todod


@pytest.fixture(autouse=True)
def _owned_processes(request):
    """Stop what the test started; fail it on a sanitizer report; show the logs
    of a failed test's daemons and servers."""
    env.OWNED["daemons"] = []
    env.OWNED["postgres"] = []
    yield
    call = getattr(request.node, "todod_call_report", None)
    failed = call is not None and call.failed
    tails = []
    problem = None
    for d in env.OWNED["daemons"]:
        d.shutdown()
        report = d.sanitizer_report()
        d.cleanup(failed=failed or bool(report))
        if report and not failed:
            problem = "sanitizer report in %s:\n%s" % (d.log_path, report)
        if (failed or report) and os.path.exists(d.log_path):
            tails.append(("todod (pid %s)" % d.pid, d.log_path, d.log_tail()))
    for server in env.OWNED["postgres"]:
        if failed:
            tails.append(("postgres (port %d)" % server.port, server.log_path,
                          tail(server.log_path, 15)))
        server.cleanup()
    env.OWNED["daemons"] = []
    env.OWNED["postgres"] = []
    if tails:
        text = "\n".join("--- %s, log %s (last lines):\n%s"
                         % (label, path, "\n".join("| " + ln for ln in t.splitlines()))
                         for label, path, t in tails)
        capman = request.config.pluginmanager.getplugin("capturemanager")
        reporter = request.config.pluginmanager.getplugin("terminalreporter")
        if capman is not None and reporter is not None:
            with capman.global_and_fixture_disabled():
                reporter.ensure_newline()
                for line in text.splitlines():
                    reporter.write_line("    " + line)
        else:
            print(text)
    if problem:
        pytest.fail(problem, pytrace=False)


# --------------------------------------------------------------------------- reporting

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.todod_call_report = rep


_outcomes = {}        # nodeid -> "passed" | "failed" | "skipped"


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    prev = _outcomes.get(report.nodeid)
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.skipped and prev != "failed":
        _outcomes[report.nodeid] = "skipped"
    elif report.when == "call" and prev is None:
        _outcomes[report.nodeid] = "passed"
    if report.when == "call" and report.passed and report.capstdout.strip():
        reporter = _reporter()
        if reporter is not None:
            reporter.ensure_newline()
            for line in report.capstdout.rstrip("\n").splitlines():
                reporter.write_line(line)


def pytest_collectreport(report):
    if report.failed:
        _outcomes["collect:" + report.nodeid] = "failed"


_config = None


def _reporter():
    return _config.pluginmanager.getplugin("terminalreporter") if _config else None


def pytest_configure(config):
    global _config
    _config = config


def pytest_unconfigure(config):
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for v in _outcomes.values():
        counts[v] += 1
    reporter = _reporter()
    write = reporter.write_line if reporter is not None else print
    if counts["skipped"]:
        write("# %d skipped" % counts["skipped"])
    write("%d passed, %d failed" % (counts["passed"], counts["failed"]))
