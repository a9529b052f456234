"""Integration-test library for todod: a private PostgreSQL, todod daemons in temp
directories, HTTP helpers, a sd_notify socket, Prometheus text parsing.

Tests live in tests/integration/test_*.py and register themselves with @test;
tests/integration/run.py runs them. Python standard library only.

    from harness import test, Todod, get_pg

    @test
    def health_says_ok():
        with Todod(workers=1) as d:
            d.start()
            r = d.request("GET", "/health")
            assert r.status == 200, r
"""

import atexit
import http.client
import itertools
import json
import os
import shutil
import signal as _signal
import socket
import subprocess
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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


# --------------------------------------------------------------------------- registry

TESTS = []          # list of dicts: name, fn, slow, module
_current = {"daemons": [], "postgres": [], "name": None}


def test(fn=None, *, slow=False):
    """Register a test: @test or @test(slow=True). The name is the function name."""
    def register(f):
        TESTS.append({"name": f.__name__, "fn": f, "slow": slow, "module": f.__module__})
        return f
    if fn is not None:
        return register(fn)
    return register


class Skip(Exception):
    """Raised by skip(): the runner reports the test as skipped."""


def skip(reason):
    raise Skip(reason)


def skip_if_sanitizer(reason="measures memory or timing; not meaningful under sanitizers"):
    if SANITIZER:
        raise Skip(reason)


# --------------------------------------------------------------------------- helpers

def assert_json_error(r, status, *fragments):
    """r is a JSON error with that status whose message contains every fragment
    (case-insensitive). Returns the message."""
    assert r.status == status, "want %d, got %r" % (status, r)
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("application/json"), "error Content-Type: %r (%r)" % (ctype, r)
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, "error body: %r" % r.body
    msg = body["error"]
    assert isinstance(msg, str) and msg, "error message: %r" % r.body
    for f in fragments:
        assert f.lower() in msg.lower(), "error message %r does not say %r" % (msg, f)
    return msg


def run_threads(n, fn, timeout=120):
    """Run fn(i) in n threads started together; returns their results (the
    exception instance where fn raised)."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def body(i):
        try:
            barrier.wait(10)
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            results[i] = e

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "client threads still running after %ds" % timeout
    return results


def wait_until(fn, timeout, interval=0.02):
    """Call fn until it returns something true (returned as True) or timeout seconds pass
    (False). Exceptions from fn count as false."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if fn():
                return True
        except Exception:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Threads:
    """Client threads, each running one of `targets` (a callable taking no
    argument) until the `with` block ends; stop_flag tells them to end, lock
    guards what they record."""

    def __init__(self, targets, join_timeout=10):
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.join_timeout = join_timeout
        self.threads = [threading.Thread(target=t, daemon=True) for t in targets]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(self.join_timeout)


class WriteLoad(Threads):
    """Threads POSTing todos back to back, each on its own keep-alive connection (no
    retries), each reading back the todo it was acknowledged last (unless read_back
    is false), until the `with` block ends. Records every answer as (sent, answered,
    thread, method, title, status, todo or error message); in `wrong`, every POST
    answer that is not the todo sent and every read that is not the todo
    acknowledged; in `errors`, every exception (connection errors, answers that are
    not JSON)."""

    def __init__(self, d, nthreads=4, timeout=10, read_back=True, prefix="load"):
        super().__init__([lambda k=k: self._run(k) for k in range(nthreads)], timeout + 5)
        self.d = d
        self.timeout = timeout
        self.read_back = read_back
        self.prefix = prefix
        self.answers = []
        self.wrong = []
        self.errors = []

    def _call(self, c, k, method, path, title, body=None):
        t0 = time.monotonic()
        r = c.request(method, path, body)
        t1 = time.monotonic()
        got = r.json()
        what = got if r.status in (200, 201) else got.get("error")
        with self.lock:
            self.answers.append((t0, t1, k, method, title, r.status, what))
        return r.status, what

    def _wrong(self, want, got):
        with self.lock:
            self.wrong.append((want, got))

    def _run(self, k):
        c = self.d.Client(timeout=self.timeout, retry=False)
        seq = 0
        last = None
        try:
            while not self.stop_flag.is_set():
                seq += 1
                title = "%s %d.%d" % (self.prefix, k, seq)
                try:
                    status, what = self._call(c, k, "POST", "/todos", title, {"title": title})
                    if status == 201:
                        if what.get("title") != title or what.get("done") is not False:
                            self._wrong(title, what)
                        last = what
                    else:
                        time.sleep(0.005)  # pace the retries while there is no database
                    if last is not None and self.read_back:
                        status, what = self._call(c, k, "GET", "/todos/" + last["id"],
                                                  last["title"])
                        if status == 200 and what != last:
                            self._wrong(last, what)
                except (OSError, http.client.HTTPException, ValueError) as e:
                    with self.lock:
                        self.errors.append("thread %d, %s: %r" % (k, title, e))
                    c.close()
                    time.sleep(0.01)
        finally:
            c.close()

    def of(self, method, status=None, since=0.0):
        """Answers to `method` requests sent at or after `since` (of that status)."""
        with self.lock:
            return [a for a in self.answers if a[3] == method and a[0] >= since and
                    (status is None or a[5] == status)]

    def first(self, method, status, since):
        """The first answer of that status to a request sent at or after `since`."""
        found = self.of(method, status, since)
        return min(found, key=lambda a: a[1]) if found else None

    def seen(self, status, since=0.0):
        """Some request sent at or after `since` was answered `status`."""
        with self.lock:
            return any(a[5] == status and a[0] >= since for a in self.answers)


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _parse_labels(s, i):
    """Parse '{a="x",b="y"}' starting at s[i] == '{'; return (dict, index after '}')."""
    labels = {}
    i += 1
    n = len(s)
    while True:
        while i < n and s[i] in " \t,":
            i += 1
        if i >= n:
            raise ValueError("unterminated label set: " + s)
        if s[i] == "}":
            return labels, i + 1
        j = s.index("=", i)
        key = s[i:j].strip()
        i = j + 1
        while s[i] in " \t":
            i += 1
        if s[i] != '"':
            raise ValueError("label value not quoted: " + s)
        i += 1
        val = []
        while s[i] != '"':
            if s[i] == "\\":
                i += 1
                val.append({"n": "\n", "\\": "\\", '"': '"'}.get(s[i], "\\" + s[i]))
            else:
                val.append(s[i])
            i += 1
        labels[key] = "".join(val)
        i += 1


def parse_metrics(text):
    """Prometheus text format -> list of (sample name, labels dict, float value)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name = line[:brace]
            labels, i = _parse_labels(line, brace)
            rest = line[i:].split()
        else:
            name, *rest = line.split()
            labels = {}
        if not rest:
            raise ValueError("sample without a value: " + line)
        v = rest[0]
        value = {"+Inf": float("inf"), "-Inf": float("-inf"), "NaN": float("nan")}.get(v)
        out.append((name, labels, float(v) if value is None else value))
    return out


def metric(text, name, labels=None, default=KeyError):
    """The value of sample `name` in Prometheus text: the sum over the samples whose
    labels include `labels` (a dict subset). 0.0 when samples of that name exist but
    none matches the labels; when there is no sample of that name at all, `default`
    if given, else KeyError."""
    labels = labels or {}
    total = 0.0
    seen = False
    for n, ls, v in parse_metrics(text):
        if n != name:
            continue
        seen = True
        if all(ls.get(k) == str(val) for k, val in labels.items()):
            total += v
    if not seen:
        if default is KeyError:
            raise KeyError("no metric named %s in the exposition" % name)
        return default
    return total


def _tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(no log: %s)" % e
    return "\n".join(data.splitlines()[-lines:])


def _tmp_base():
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


# --------------------------------------------------------------------------- PostgreSQL

class Postgres:
    """A private PostgreSQL server (conf/dev/pg.sh) in a temp dir, on 127.0.0.1."""

    _dbseq = itertools.count(1)

    def __init__(self, port=None, settings=None):
        self.port = port or free_port()
        self.settings = dict(settings or {})
        self.dir = tempfile.mkdtemp(prefix="todod-test-", dir=_tmp_base())
        os.chmod(self.dir, 0o755)
        self.datadir = os.path.join(self.dir, "pgdata")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.running = False
        _current["postgres"].append(self)

    def url(self, db="postgres"):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def _pg_sh(self, *args, check=True):
        r = subprocess.run([str(PG_SH), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if check and r.returncode != 0:
            raise RuntimeError("pg.sh %s failed (%d):\n%s" % (" ".join(args), r.returncode, r.stdout))
        return r

    def start(self):
        extra = ["%s=%s" % kv for kv in self.settings.items()]
        for attempt in range(3):
            r = self._pg_sh("start", self.datadir, str(self.port), *extra, check=False)
            if r.returncode == 0:
                self.running = True
                return self
            # another process took the port in the meantime: take another one
            if attempt < 2 and ("could not bind" in r.stdout or "Address already in use" in r.stdout):
                self.port = free_port()
                continue
            raise RuntimeError("could not start PostgreSQL:\n" + r.stdout)
        return self

    def stop(self):
        if os.path.isdir(self.datadir):
            self._pg_sh("stop", self.datadir)
        self.running = False

    def restart(self):
        self.stop()
        self.start()

    def status(self):
        return self._pg_sh("status", self.datadir, check=False).returncode == 0

    def _psql_cmd(self, db):
        cmd = [os.path.join(PGBIN, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-q",
               "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-f", "-"]
        if IS_ROOT:
            cmd = ["runuser", "-u", PG_RUNNER, "--"] + cmd
        return cmd

    def psql(self, sql, db="postgres", timeout=60):
        """Run SQL (several statements allowed) and return stdout, stripped."""
        r = subprocess.run(self._psql_cmd(db), input=sql, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd="/", timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("psql failed (%d): %s\nSQL: %s" % (r.returncode, r.stderr.strip(), sql))
        return r.stdout.strip()

    def psql_bg(self, sql, db="postgres"):
        """Start psql on SQL in the background; returns the Popen (stdout/stderr piped)."""
        p = subprocess.Popen(self._psql_cmd(db), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd="/")
        p.stdin.write(sql)
        p.stdin.close()
        return p

    def session(self, db="postgres", name="todod-test"):
        """An interactive psql session (PsqlSession) with application_name `name`."""
        return PsqlSession(self, db, name)

    def create_database(self, prefix="t"):
        name = "%s_%d_%d_%s" % (prefix, os.getpid(), next(self._dbseq), os.urandom(3).hex())
        self.psql('CREATE DATABASE "%s"' % name)
        return name

    def cleanup(self):
        """Stop and remove the data (used by the runner)."""
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class PsqlSession:
    """One psql process, one backend, kept open: send() gives it SQL and returns
    at once, wait() waits until that SQL has run (psql echoes a marker after it)
    and returns its output; run() does both. Use it as a context manager: the
    session ends (psql is stopped) with the block. psql stops at the first error
    (ON_ERROR_STOP), which wait() reports."""

    MARKER = "--- psql session: done ---"

    def __init__(self, pg, db, name):
        self.proc = subprocess.Popen(pg._psql_cmd("dbname=%s application_name=%s" % (db, name)),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd="/")
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.pid = int(self.run("SELECT pg_backend_pid();"))

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # end of output
            self.cond.notify_all()

    def send(self, sql):
        self.proc.stdin.write(sql + "\n\\echo '%s'\n" % self.MARKER)
        self.proc.stdin.flush()

    def wait(self, timeout=30):
        """The output of the oldest SQL sent and not yet waited for, once it has run."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.MARKER in self.lines:
                    i = self.lines.index(self.MARKER)
                    out, self.lines = self.lines[:i], self.lines[i + 1:]
                    return "\n".join(out)
                if None in self.lines:
                    raise RuntimeError("psql session ended: %s" % "\n".join(
                        line for line in self.lines if line is not None))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("psql session: no answer within %gs" % timeout)
                self.cond.wait(left)

    def run(self, sql, timeout=30):
        self.send(sql)
        return self.wait(timeout)

    def close(self):
        try:
            self.proc.stdin.close()
        except Exception:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_shared_pg = None
_shared_lock = threading.Lock()


def get_pg():
    """The PostgreSQL shared by every test of the run (started on first use)."""
    global _shared_pg
    with _shared_lock:
        if _shared_pg is None:
            pg = Postgres()
            _current["postgres"].remove(pg)  # not owned by the current test
            try:
                pg.start()
            except Exception:
                pg.cleanup()
                raise
            _shared_pg = pg
        return _shared_pg


def stop_shared_pg():
    global _shared_pg
    with _shared_lock:
        if _shared_pg is not None:
            _shared_pg.cleanup()
            _shared_pg = None


atexit.register(stop_shared_pg)


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


# --------------------------------------------------------------------------- HTTP

class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        b = self.body[:300]
        return "<Response %d %r %r>" % (self.status, self.headers.get("content-type"), b)


def _encode_body(body, headers):
    headers = dict(headers or {})
    lower = {k.lower() for k in headers}
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        if "content-type" not in lower:
            headers["Content-Type"] = "application/json"
    elif isinstance(body, str):
        body = body.encode("utf-8")
    return body, headers


def _read_response(conn):
    r = conn.getresponse()
    body = r.read()
    headers = {}
    for k, v in r.getheaders():
        k = k.lower()
        headers[k] = headers[k] + ", " + v if k in headers else v
    return Response(r.status, r.reason, headers, body), r


def _http_connection(host, port, timeout):
    return http.client.HTTPConnection(host, port, timeout=timeout)


class Client:
    """A keep-alive HTTP/1.1 connection to a daemon.

    request() has the signature of Todod.request. When the server has closed a
    connection that was idle since its last answer (as a stopping worker does), an
    idempotent request is sent again once on a new connection, as HTTP clients do;
    `retries` counts those, `connections` the connections opened."""

    IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}

    def __init__(self, host, port, timeout=5, retry=True):
        self.host, self.port, self.timeout, self.retry = host, port, timeout, retry
        self.conn = None
        self.used = False
        self.retries = 0
        self.connections = 0

    def _connect(self):
        self.close()
        self.conn = _http_connection(self.host, self.port, self.timeout)
        self.conn.connect()
        self.used = False
        self.connections += 1

    def request(self, method, path, body=None, headers=None, timeout=None):
        body, headers = _encode_body(body, headers)
        for attempt in (0, 1):
            if self.conn is None:
                self._connect()
            reused = self.used
            try:
                self.conn.sock.settimeout(timeout or self.timeout)
                self.conn.request(method, path, body=body, headers=headers)
                resp, raw = _read_response(self.conn)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.BadStatusLine) as e:
                self.close()
                if attempt == 0 and reused and self.retry and method in self.IDEMPOTENT:
                    self.retries += 1
                    continue
                raise e
            except Exception:
                self.close()
                raise
            self.used = True
            if raw.will_close:
                self.close()
            return resp
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- sd_notify

class NotifySocket:
    """An AF_UNIX datagram socket to pass as NOTIFY_SOCKET; collects what is sent."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="todod-notify-")
        os.chmod(self.dir, 0o755)
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)
        self.sock.settimeout(0.1)
        self._msgs = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            with self._cond:
                self._msgs.append(data.decode("utf-8", "replace"))
                self._cond.notify_all()

    def messages(self):
        with self._cond:
            return list(self._msgs)

    def wait_for(self, substr, timeout, since=0):
        """True once a datagram (index >= since) containing substr has arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self._msgs[since:]:
                    if substr in m:
                        return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    def index(self, substr, since=0):
        """Index of the first datagram (>= since) containing substr, or -1."""
        with self._cond:
            for i, m in enumerate(self._msgs[since:], since):
                if substr in m:
                    return i
        return -1

    def close(self):
        self._closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        self._thread.join(1)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- todod

def _format_value(v):
    if v is True:
        return "on"
    if v is False:
        return "off"
    return str(v)


class Todod:
    """One todod master (and its workers) with its own config file and log.

    Todod(pg=None, db=None, binary=None, **conf): conf keys override the defaults
    (listen, workers=2, database_url of a fresh database, log_level=info,
    shutdown_timeout=5); a value of None removes the key. binary: the todod to
    run (default TODOD_BIN)."""

    def __init__(self, pg=None, db=None, binary=None, **conf):
        self.binary = binary or TODOD_BIN
        self.pg = pg if pg is not None else get_pg()
        self.db = db if db is not None else self.pg.create_database()
        self.dir = tempfile.mkdtemp(prefix="todod-d-")
        os.chmod(self.dir, 0o755)
        self.conf_path = os.path.join(self.dir, "todod.conf")
        self.log_path = os.path.join(self.dir, "todod.log")
        self.conf = {
            "listen": "127.0.0.1:%d" % free_port(),
            "workers": 2,
            "database_url": self.pg.url(self.db),
            "log_level": "info",
            "shutdown_timeout": 5,
        }
        self._apply(conf)
        self.proc = None
        self.probes = 0          # readiness probes (GET /health) answered during start()
        self.probes_ok = 0       # ... of which with status 200
        self.failed = False
        self.keep = False
        self.write_conf()
        _current["daemons"].append(self)

    # -- configuration
    def _apply(self, changes):
        for k, v in changes.items():
            if v is None:
                self.conf.pop(k, None)
            else:
                self.conf[k] = v

    def write_conf(self, **changes):
        """Apply changes (None removes a key) and rewrite the config file."""
        self._apply(changes)
        lines = ["# todod test configuration (tests/integration/harness.py)"]
        lines += ["%s = %s" % (k, _format_value(v)) for k, v in self.conf.items()]
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def conf_line(self, key):
        """Line number (1-based) of key in the config file as last written."""
        with open(self.conf_path) as f:
            for n, line in enumerate(f, 1):
                if line.split("=", 1)[0].strip() == key:
                    return n
        raise KeyError(key)

    # -- address
    @property
    def host(self):
        listen = str(self.conf.get("listen", "127.0.0.1:3000"))
        host = listen.rsplit(":", 1)[0]
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)

    @property
    def port(self):
        return int(str(self.conf.get("listen", "127.0.0.1:3000")).rsplit(":", 1)[1])

    @property
    def base_url(self):
        h = self.host
        return "http://%s:%d" % ("[%s]" % h if ":" in h else h, self.port)

    # -- process
    def _env(self, env, notify_socket):
        e = dict(os.environ)
        for k in ("DATABASE_URL", "NOTIFY_SOCKET", "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID",
                  "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"):
            e.pop(k, None)
        if notify_socket is not None:
            e["NOTIFY_SOCKET"] = getattr(notify_socket, "path", notify_socket)
        if env:
            for k, v in env.items():
                if v is None:
                    e.pop(k, None)
                else:
                    e[k] = str(v)
        return e

    def run(self, *args, env=None, timeout=30):
        """Run the binary with args (not as a daemon); returns CompletedProcess (text)."""
        return subprocess.run([self.binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=self._env(env, None), cwd=self.dir, timeout=timeout)

    def start(self, wait="ready", env=None, notify_socket=None, timeout=10, nofile=None):
        """Spawn the binary -c FILE (output to the log; nofile: its open-files limit),
        then wait (up to timeout s):
        wait="ready": until GET /health answers 200 and GET /stats shows every
        worker ready and connected to the database; wait="http": until GET /health
        answers at all (any status); wait=None: not at all."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("todod is already running (pid %d)" % self.proc.pid)
        log = open(self.log_path, "ab")

        def limits():
            if nofile is not None:  # as `ulimit -n` would: soft and hard
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        try:
            self.proc = subprocess.Popen([self.binary, "-c", self.conf_path], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self._env(env, notify_socket), cwd=self.dir,
                                         start_new_session=True, preexec_fn=limits)
        finally:
            log.close()
        if wait is None:
            return self
        if wait not in ("ready", "http"):
            raise ValueError("wait must be 'ready', 'http' or None")
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError("todod exited with %d while starting; log:\n%s"
                                   % (rc, _tail(self.log_path)))
            try:
                r = self.request("GET", "/health", timeout=1)
                self.probes += 1
                last = r.status
                if r.status == 200:
                    self.probes_ok += 1
                if wait == "http":
                    return self
                if r.status == 200:
                    self._wait_workers_ready(deadline)
                    return self
            except (OSError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError("todod not %s within %gs (last /health: %r); log:\n%s"
                           % (wait, timeout, last, _tail(self.log_path)))

    def _wait_workers_ready(self, deadline):
        """After a first GET /health 200 (one worker ready): wait until GET /stats shows
        every worker ready and connected to the database, so that a test's first
        requests do not meet a worker still connecting. A /stats that does not answer
        or says nothing of that is not waited for."""
        want = self.conf.get("workers")
        want = int(want) if str(want).isdigit() else 1
        while time.monotonic() < deadline:
            try:
                r = self.request("GET", "/stats", timeout=1)
                if r.status != 200:
                    return
                workers = r.json().get("workers")
                if not isinstance(workers, list):
                    return
                live = [w for w in workers if not w.get("draining")]
                if len(live) >= want and all(w.get("db_connected", True) and w.get("ready", True)
                                             for w in live):
                    return
            except (OSError, http.client.HTTPException, ValueError, AttributeError):
                return
            time.sleep(0.02)
        raise RuntimeError("todod workers not all ready and connected to the database "
                           "(GET /stats) in time; log:\n%s" % _tail(self.log_path))

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def worker_pids(self):
        """The master's child processes (sorted pids); [] when it is not running."""
        if not self.running():
            return []
        pids = set()
        try:
            tasks = os.listdir("/proc/%d/task" % self.pid)
        except OSError:
            return []
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (self.pid, t)) as f:
                    pids.update(int(x) for x in f.read().split())
            except OSError:
                pass
        return sorted(pids)

    def signal(self, sig):
        os.kill(self.pid, sig)

    def stop(self, sig=_signal.SIGTERM, timeout=15):
        """Send sig to the master and wait for it to exit; returns its exit code
        (negative: killed by that signal). On timeout the process group is killed
        and TimeoutError raised."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise TimeoutError("todod (pid %d) did not exit within %gs of signal %d"
                                   % (self.proc.pid, timeout, sig))
        return self.proc.returncode

    def wait(self, timeout=15):
        """Wait for the master to exit (no signal sent); returns its exit code.
        On timeout the process group is killed and TimeoutError raised."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError("todod (pid %d) did not exit within %gs" % (self.proc.pid, timeout))

    def kill(self):
        """SIGKILL the master and everything in its process group."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, _signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in self.worker_pids():
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def leftover(self):
        """True when processes of the daemon's process group are still alive."""
        if self.proc is None:
            return False
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=40):
        return _tail(self.log_path, lines)

    def sanitizer_report(self):
        """The sanitizer report lines of the log, '' when there are none."""
        text = self.log()
        hits = [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKERS)]
        return "\n".join(hits)

    # -- HTTP
    def request(self, method, path, body=None, headers=None, timeout=5):
        """One request on a fresh connection -> Response."""
        body, headers = _encode_body(body, headers)
        conn = _http_connection(self.host, self.port, timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp, _ = _read_response(conn)
            return resp
        finally:
            conn.close()

    def Client(self, timeout=5, retry=True):
        return Client(self.host, self.port, timeout=timeout, retry=retry)

    def metrics(self):
        r = self.request("GET", "/metrics")
        assert r.status == 200, "GET /metrics: %r" % r
        return r.text

    def stats(self):
        r = self.request("GET", "/stats")
        assert r.status == 200, "GET /stats: %r" % r
        return r.json()

    # -- lifetime
    def shutdown(self):
        """Stop if running (SIGTERM, then SIGKILL of the group after 10 s)."""
        if self.running():
            try:
                self.stop(timeout=10)
            except TimeoutError:
                pass
        if self.leftover():
            self.kill()

    def cleanup(self, failed=False):
        """shutdown(), then remove the temp dir unless failed (or kept)."""
        self.shutdown()
        if failed:
            self.failed = True
            self.keep = True
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        failed = exc_type is not None
        self.shutdown()
        report = "" if failed else self.sanitizer_report()
        self.cleanup(failed=failed or bool(report))
        if failed and not _runner_active():
            print("--- todod log (%s), last lines:\n%s" % (self.log_path, self.log_tail()))
        if report:
            raise AssertionError("sanitizer report in the todod log %s:\n%s"
                                 % (self.log_path, report))
        return False


# --------------------------------------------------------------------------- runner glue

_runner = {"active": False}


def _runner_active():
    return _runner["active"]


def _begin_test(name):
    _current["name"] = name
    _current["daemons"] = []
    _current["postgres"] = []


def _end_test(failed):
    """Stop what the test left running. Returns (tails, problem): tails is a list of
    (label, log path, last lines) to show (the test's daemons when it failed, or any
    daemon whose log has a sanitizer report); problem is a message when a test that
    passed must fail after all (a sanitizer report), else None."""
    tails = []
    problem = None
    for d in _current["daemons"]:
        try:
            d.shutdown()
            report = d.sanitizer_report()
            d.cleanup(failed=failed or bool(report))
            if report and not failed:
                problem = "sanitizer report in %s:\n%s" % (d.log_path, report)
            if (failed or report) and os.path.exists(d.log_path):
                tails.append(("todod (pid %s)" % d.pid, d.log_path, d.log_tail()))
        except Exception:
            traceback.print_exc()
    for pg in _current["postgres"]:
        try:
            if failed:
                tails.append(("postgres (port %d)" % pg.port, pg.log_path, _tail(pg.log_path, 15)))
            pg.cleanup()
        except Exception:
            traceback.print_exc()
    _current["daemons"] = []
    _current["postgres"] = []
    return tails, problem
