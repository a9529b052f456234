"""The run: where things are, the binary under test and its build, free ports,
log tails, temp directories the PostgreSQL user can reach, server processes left
over. The names here are read at call time (env.TODOD_BIN may be replaced by a
test, as test_ops does for valgrind)."""

import atexit
import os
import socket
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TODOD_BIN = os.environ.get("TODOD_BIN") or str(ROOT / "build" / "todod")
PG_SH = ROOT / "conf" / "dev" / "pg.sh"
SANITIZER = bool(os.environ.get("TODOD_SANITIZER"))
if SANITIZER:
    # as tests/run.sh sets them: a finding aborts the process and is written to its
    # stderr, which is the daemon log the harness scans (SANITIZER_MARKERS)
    os.environ.setdefault("ASAN_OPTIONS", "abort_on_error=1:halt_on_error=1:detect_leaks=1:print_summary=1")
    os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:abort_on_error=1")
IS_ROOT = os.geteuid() == 0
PG_RUNNER = "postgres" if IS_ROOT else None  # the user PostgreSQL runs as (None: us)

# Text that a sanitizer writes when it finds something.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "ERROR: UndefinedBehaviorSanitizer",
                     "SUMMARY: AddressSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


def _find_pgbin():
    env = os.environ.get("PGBIN")
    if env and os.path.exists(os.path.join(env, "postgres")):
        return env
    default = "/usr/lib/postgresql/15/bin"
    if os.path.exists(os.path.join(default, "postgres")):
        return default
    base = Path("/usr/lib/postgresql")
    found = sorted(base.glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if found:
        return str(found[-1].parent)
    return default


PGBIN = _find_pgbin()

# Daemons and servers the current test started (conftest.py stops them after it).
OWNED = {"daemons": [], "postgres": []}
# Set by conftest.py: a failing test's logs are shown by the runner, not by Todod.
RUNNER = {"active": False}


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(no log: %s)" % e
    return "\n".join(data.splitlines()[-lines:])


def tmp_base():
    """A temp directory the PostgreSQL runner user can reach."""
    candidates = [tempfile.gettempdir(), "/tmp", "/var/tmp"]
    for c in candidates:
        if not os.path.isdir(c):
            continue
        if not IS_ROOT:
            return c
        r = subprocess.run(["runuser", "-u", PG_RUNNER, "--", "test", "-x", c, "-a", "-w", c],
                           cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            return c
    raise RuntimeError("no temp directory that the %s user can reach" % PG_RUNNER)



class Leftovers:
    """Server processes a test module started and has not stopped yet, killed at
    exit: a run interrupted half-way leaves nothing behind."""

    def __init__(self):
        self.procs = set()
        atexit.register(self.kill)

    def add(self, p):
        self.procs.add(p)

    def discard(self, p):
        self.procs.discard(p)

    def kill(self):
        for p in list(self.procs):
            if p.poll() is None:
                try:
                    p.kill()
                    p.wait(5)
                except Exception:
                    pass
