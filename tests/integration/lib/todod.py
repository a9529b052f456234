"""todod daemons for the tests: one master (and its workers) per Todod, with its
own config file, log and temp directory; the shared PostgreSQL by default."""

import http.client
import os
import shutil
import signal as _signal
import subprocess
import tempfile
import time

from lib import env
from lib.client import Client, _encode_body, _http_connection, _read_response
from lib.env import SANITIZER_MARKERS, free_port
from lib.env import tail as _tail
from lib.pg import get_pg

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
        self.binary = binary or env.TODOD_BIN
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
        env.OWNED["daemons"].append(self)

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
        lines = ["# todod test configuration (tests/integration/lib/todod.py)"]
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
        if failed and not env.RUNNER["active"]:
            print("--- todod log (%s), last lines:\n%s" % (self.log_path, self.log_tail()))
        if report:
            raise AssertionError("sanitizer report in the todod log %s:\n%s"
                                 % (self.log_path, report))
        return False

