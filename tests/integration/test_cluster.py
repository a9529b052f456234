"""Many instances (CLUSTER.md): the shipped conf/haproxy.cfg, conf/prometheus.yml and
conf/todod.rules.yml, checked by their own tools and run for real.

The live tests start three todod instances on 127.0.0.2, 127.0.0.3 and 127.0.0.4
sharing one database, a real HAProxy in front of them and, for the monitoring test,
a real Prometheus scraping them. HAProxy's and Prometheus's configurations are the
shipped files with only the addresses replaced (server lines, bind lines, scrape
targets, and Prometheus's intervals), so these tests prove the shipped settings.
Every process is started in a temporary directory and stopped by PID, whatever
happens.
"""

import csv
import http.client
import io
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from lib.env import ROOT, Leftovers, free_port
from lib.marks import skip_if_sanitizer, test
from lib.pg import get_pg
from lib.client import Client
from lib.todod import Todod
from lib.checks import wait_until
from lib.metrics import metric

CONF = ROOT / "conf"
HAPROXY_CFG = CONF / "haproxy.cfg"
PROMETHEUS_YML = CONF / "prometheus.yml"
RULES_YML = CONF / "todod.rules.yml"
RULES_TEST_YML = CONF / "todod.rules.test.yml"
TODOD_CONF = CONF / "todod.conf"

# The sections of conf/haproxy.cfg the tests rewrite addresses in.
API_FRONTEND = "todod_api"
HTTPS_FRONTEND = "todod_https"
STATS_FRONTEND = "stats"
BACKEND = "todod"
# The certificate of the https frontend, as the shipped file names it.
SHIPPED_CERT = "/etc/haproxy/certs/todod.pem"
# Performance tests a client address may start in 10 s through HAProxy.
PERF_RATE_LIMIT = 10

# todod's drain_delay in the live tests: longer than the time the shipped checks
# take to mark a draining instance DOWN (asserted in Cluster.__init__).
DRAIN_DELAY = 1.5

# Client threads of the load; each has at most one request in flight.
LOAD_THREADS = 4

SANITIZER_REASON = ("the cluster tests time HAProxy's health checks against drain_delay; "
                    "a sanitizer build is too slow for those timings")


def _tool(name):
    path = shutil.which(name)
    if path is None:
        raise AssertionError("%s is not installed (conf/dev/deps.sh installs it)" % name)
    return path


def _run(argv, timeout=60, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, **kw)


def _seconds(value):
    """HAProxy time value ('500ms', '2s', '1m', '300') -> seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?", value)
    if m is None:
        raise ValueError("not an HAProxy time: %r" % value)
    unit = {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return float(m.group(1)) * unit


def _cfg_lines(text):
    """(section kind, section name, stripped line) for every non-comment line of an
    HAProxy configuration."""
    section = (None, None)
    for line in text.splitlines():
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        m = re.match(r"^(global|defaults|frontend|backend|listen)\b\s*(\S*)", line)
        if m:
            section = (m.group(1), m.group(2))
            continue
        yield section[0], section[1], s


def _shipped_check_timing():
    """(inter, fastinter, fall, rise) of the shipped backend's default-server lines."""
    params = {}
    for kind, name, s in _cfg_lines(HAPROXY_CFG.read_text()):
        if kind == "backend" and name == BACKEND and s.startswith("default-server "):
            words = s.split()[1:]
            for k, v in zip(words, words[1:]):
                if k in ("inter", "fastinter", "fall", "rise"):
                    params[k] = v
    inter = _seconds(params.get("inter", "2s"))
    fastinter = _seconds(params["fastinter"]) if "fastinter" in params else inter
    return inter, fastinter, int(params.get("fall", 3)), int(params.get("rise", 2))


def _todod_default(key):
    """The default of a todod.conf key, from its commented line in conf/todod.conf."""
    m = re.search(r"^#%s = (\S+)" % re.escape(key), TODOD_CONF.read_text(), re.M)
    assert m, "conf/todod.conf does not show the default of %s" % key
    return float(m.group(1))


# --------------------------------------------------------------------------- the shipped files


def make_haproxy_cert(where):
    """A self-signed certificate for localhost and 127.0.0.1 with its key, in one
    PEM file as HAProxy's crt wants it; returns its path."""
    crt, key = os.path.join(where, "haproxy.crt"), os.path.join(where, "haproxy.key")
    r = _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
              "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
    assert r.returncode == 0, "openssl req failed:\n" + r.stdout
    pem = os.path.join(where, "haproxy.pem")
    with open(pem, "w") as f:
        f.write(open(crt).read() + open(key).read())
    return pem


def with_test_cert(text, pem):
    """The configuration with the https frontend's certificate path replaced by pem
    (the shipped path exists only on a real installation)."""
    assert text.count("crt %s" % SHIPPED_CERT) == 1, \
        "conf/haproxy.cfg: want one bind line with crt %s" % SHIPPED_CERT
    return text.replace("crt %s" % SHIPPED_CERT, "crt %s" % pem)


@test
def shipped_haproxy_cfg_passes_haproxy_check():
    where = tempfile.mkdtemp(prefix="todod-haproxy-check-")
    cfg = os.path.join(where, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(with_test_cert(HAPROXY_CFG.read_text(), make_haproxy_cert(where)))
    r = _run([_tool("haproxy"), "-c", "-f", cfg])
    shutil.rmtree(where, ignore_errors=True)
    assert r.returncode == 0, "haproxy -c -f conf/haproxy.cfg failed:\n" + r.stdout
    assert "Configuration file is valid" in r.stdout, r.stdout
    # HAProxy says what it ignores or finds dubious with [WARNING]
    assert "[WARNING]" not in r.stdout, "haproxy -c warns:\n" + r.stdout


@test
def shipped_haproxy_cfg_agrees_with_todod_timings_and_retries_safely():
    text = HAPROXY_CFG.read_text()
    lines = list(_cfg_lines(text))
    defaults = {}
    for kind, _, s in lines:
        if kind == "defaults" and s.startswith("timeout "):
            _, what, value = s.split()
            defaults[what] = _seconds(value)
    request_timeout = _todod_default("request_timeout")
    keepalive_timeout = _todod_default("keepalive_timeout")
    # todod's own 503 must reach the client before HAProxy gives up with a 504
    assert defaults.get("server", 0) > request_timeout + 1, \
        "timeout server %r does not exceed todod's request_timeout (%g s) + 1 s" \
        % (defaults.get("server"), request_timeout)
    # idle server connections belong to a client connection and close with it, at
    # the latest timeout http-keep-alive after its last request: before todod's
    # keepalive_timeout would close them (see cluster_haproxy_closes_idle_...)
    reuse = [s for kind, _, s in lines if s.startswith("http-reuse ")]
    assert reuse == ["http-reuse never"], reuse
    assert defaults.get("http-keep-alive", 1e9) + 5 <= keepalive_timeout, \
        "timeout http-keep-alive %r is not well below todod's keepalive_timeout (%g s)" \
        % (defaults.get("http-keep-alive"), keepalive_timeout)
    # ... and before a worker retired by a reload (or stopping) closes the idle
    # connections it kept for their next request, shutdown_timeout - 1 s after it
    # began to drain (daemon/conn.c: conn_layer_drain)
    shutdown_timeout = _todod_default("shutdown_timeout")
    assert defaults.get("http-keep-alive", 1e9) + 2 <= shutdown_timeout - 1, \
        "timeout http-keep-alive %r is not well below the %g s a draining todod keeps an " \
        "idle connection (shutdown_timeout - 1 s)" % (defaults.get("http-keep-alive"),
                                                      shutdown_timeout - 1)
    # health checks on /ready, expecting 200
    backend = [s for kind, name, s in lines if kind == "backend" and name == BACKEND]
    assert "option httpchk GET /ready" in backend, backend
    assert "http-check expect status 200" in backend, backend
    # retries: a request that reached an instance is replayed only when it is a GET
    # or a HEAD; nothing is retried on a timeout or a status code
    retry_on = [s.split()[1:] for kind, _, s in lines if s.startswith("retry-on ")]
    assert retry_on, "no retry-on: HAProxy's default is conn-failure only; say it"
    for words in retry_on:
        assert set(words) <= {"conn-failure", "empty-response"}, \
            "retry-on %s may replay a request that todod executed" % " ".join(words)
    assert "http-request disable-l7-retry if !METH_GET !METH_HEAD" in backend, backend
    assert any(s.startswith("option redispatch") for _, _, s in lines), "no option redispatch"
    inter, fastinter, fall, _ = _shipped_check_timing()
    down = inter + (fall - 1) * fastinter
    # the comments tell the operator this figure and a drain_delay above it
    assert "%d ms" % round(down * 1000) in text, \
        "conf/haproxy.cfg does not state the time to mark a server down (%d ms)" % (down * 1000)


@test
def shipped_prometheus_config_and_rules_pass_promtool():
    promtool = _tool("promtool")
    r = _run([promtool, "check", "config", str(PROMETHEUS_YML)])
    assert r.returncode == 0, "promtool check config conf/prometheus.yml failed:\n" + r.stdout
    assert "1 rule files found" in r.stdout, r.stdout
    r = _run([promtool, "check", "rules", str(RULES_YML)])
    assert r.returncode == 0, "promtool check rules conf/todod.rules.yml failed:\n" + r.stdout


@test
def shipped_rules_unit_tests_pass_promtool_and_cover_every_alert():
    r = _run([_tool("promtool"), "test", "rules", str(RULES_TEST_YML)])
    assert r.returncode == 0, "promtool test rules conf/todod.rules.test.yml failed:\n" + r.stdout
    alerts = set(re.findall(r"^\s*- alert:\s*(\S+)", RULES_YML.read_text(), re.M))
    records = set(re.findall(r"^\s*- record:\s*(\S+)", RULES_YML.read_text(), re.M))
    assert {"TododInstanceDown", "TododDatabaseDown", "TododHighErrorRatio", "TododHighLatency",
            "TododWorkersRestarting"} <= alerts, alerts
    tests = RULES_TEST_YML.read_text()
    for a in sorted(alerts):
        fired = re.search(r"alertname: %s\n\s*exp_alerts:\n\s*- exp_labels:" % a, tests)
        quiet = re.search(r"alertname: %s\n\s*exp_alerts: \[\]" % a, tests)
        assert fired and quiet, "%s is not tested both firing and not firing" % a
    for rec in sorted(records):
        assert re.search(r"- expr: %s\n" % re.escape(rec), tests), \
            "recording rule %s has no promql_expr_test" % rec


# --------------------------------------------------------------------------- processes

_procs = Leftovers()  # servers started here and not yet stopped


class Proc:
    """A server started by a test, its output (stdout and stderr) kept with the time
    each line arrived (time.monotonic()) and copied to NAME.log in `where`."""

    def __init__(self, name, argv, where):
        self.name = name
        self.log_path = os.path.join(where, name + ".log")
        self.lines = []
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=where, start_new_session=True)
        _procs.add(self.proc)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        with open(self.log_path, "a", encoding="utf-8") as log:
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.lines.append((time.monotonic(), line))
                log.write(line + "\n")
                log.flush()

    def running(self):
        return self.proc.poll() is None

    def text(self):
        return "\n".join(line for _, line in list(self.lines))

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(2)
        self.proc.stdout.close()
        _procs.discard(self.proc)


def _http_get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode("utf-8", "replace")


def derive_haproxy_cfg(text, servers, port, stats_port, https_port, pem):
    """conf/haproxy.cfg with its backend's server addresses replaced by `servers`
    ([(host, port)], in order; the shipped server lines past them left out), the
    API frontend bound to 127.0.0.1:port, the https one to 127.0.0.1:https_port
    with the certificate pem, and the stats frontend to 127.0.0.1:stats_port.
    Returns (config text, server names)."""
    text = with_test_cert(text, pem)
    ports = {API_FRONTEND: port, HTTPS_FRONTEND: https_port, STATS_FRONTEND: stats_port}
    out = []
    names = []
    binds = set()
    section = (None, None)
    for line in text.splitlines():
        m = re.match(r"^(global|defaults|frontend|backend|listen)\b\s*(\S*)", line)
        if m:
            section = (m.group(1), m.group(2))
        words = line.split("#", 1)[0].split()
        if words and words[0] == "server" and section == ("backend", BACKEND):
            if len(names) == len(servers):
                continue
            host, p = servers[len(names)]
            names.append(words[1])
            line = "    " + " ".join(["server", words[1], "%s:%d" % (host, p)] + words[3:])
        elif words and words[0] == "bind" and section[0] == "frontend":
            addr = "127.0.0.1:%d" % ports.get(section[1], port)
            binds.add(section[1])
            line = "    " + " ".join(["bind", addr] + words[2:])
        out.append(line)
    assert len(names) == len(servers), \
        "conf/haproxy.cfg has %d server lines in backend %s, want at least %d" % (
            len(names), BACKEND, len(servers))
    assert binds == set(ports), \
        "conf/haproxy.cfg: bind lines found in frontends %s, want %s" % (
            sorted(binds), sorted(ports))
    return "\n".join(out) + "\n", names


# `Server todod/a is DOWN. ...` (HAProxy writes it both to its log and to stderr)
_STATE_RE = re.compile(r"Server %s/(\S+) is (UP|DOWN)\b" % BACKEND)
# option httplog: client [date] frontend backend/server Tq/Tw/Tc/Tr/Ta status bytes
#                 cookie cookie termination_state act/fe/be/srv/retries queues "request"
_HTTPLOG_RE = re.compile(r'^\S+ \[[^\]]+\] (\S+) (\S+)/(\S+) (\S+) (-?\d+) \S+ \S+ \S+ (\S{4}) '
                         r'(\S+) (\S+) "(.*)"$')


class HAProxy(Proc):
    """HAProxy started from conf/haproxy.cfg in front of `servers`."""

    def __init__(self, servers, where):
        self.port = free_port()
        self.stats_port = free_port()
        self.https_port = free_port()
        self.pem = make_haproxy_cert(where)
        cfg, self.names = derive_haproxy_cfg(HAPROXY_CFG.read_text(), servers, self.port,
                                             self.stats_port, self.https_port, self.pem)
        self.cfg_path = os.path.join(where, "haproxy.cfg")
        with open(self.cfg_path, "w") as f:
            f.write(cfg)
        super().__init__("haproxy", [_tool("haproxy"), "-db", "-f", self.cfg_path], where)
        if not wait_until(self._stats_answers, 10, 0.05):
            self.stop()
            raise AssertionError("HAProxy's stats page did not answer within 10 s; output:\n"
                                 + self.text())

    def _stats_answers(self):
        if not self.running():
            raise AssertionError("haproxy exited with %s:\n%s" % (self.proc.poll(), self.text()))
        return self.servers() is not None

    def servers(self):
        """{server name: row of /stats;csv} for the todod backend."""
        _, body = _http_get("http://127.0.0.1:%d/stats;csv;norefresh" % self.stats_port)
        rows = csv.DictReader(io.StringIO(body.lstrip("# ")))
        return {r["svname"]: r for r in rows
                if r["pxname"] == BACKEND and r["svname"] not in ("FRONTEND", "BACKEND")}

    def status(self, name):
        return self.servers()[name]["status"]

    def wait_status(self, names, status, timeout):
        return wait_until(lambda: all(self.status(n) == status for n in names), timeout, 0.05)

    def changes(self):
        """[(time seen, server, 'UP' or 'DOWN')], in order."""
        out = []
        for t, line in list(self.lines):
            m = _STATE_RE.search(line)
            if m and not line.startswith("["):  # the log line, not its stderr copy
                out.append((t, m.group(1), m.group(2)))
        return out

    def first_change(self, name, state, after):
        for t, n, s in self.changes():
            if n == name and s == state and t >= after:
                return t
        return None

    def requests(self):
        """Request log lines of the API frontend, parsed: dicts with server, status,
        termination, retries, request, line."""
        out = []
        for _, line in list(self.lines):
            m = _HTTPLOG_RE.match(line)
            if m and m.group(1) == API_FRONTEND:
                conns = m.group(7).split("/")
                out.append({"server": m.group(3), "status": int(m.group(5)),
                            "termination": m.group(6), "retries": conns[-1],
                            "request": m.group(9), "line": line})
        return out

    def problems(self):
        """API request log lines that HAProxy did not end normally or that got a 5xx."""
        return [r["line"] for r in self.requests()
                if r["termination"] != "----" or r["status"] >= 500]


class Prometheus(Proc):
    """Prometheus from conf/prometheus.yml, with the shipped rules file, scraping the
    todod instances and HAProxy every second."""

    def __init__(self, todod_targets, haproxy_target, where):
        self.port = free_port()
        self.dir = os.path.join(where, "prometheus")
        os.makedirs(self.dir)
        cfg = derive_prometheus_yml(PROMETHEUS_YML.read_text(), todod_targets, haproxy_target)
        self.cfg_path = os.path.join(self.dir, "prometheus.yml")
        with open(self.cfg_path, "w") as f:
            f.write(cfg)
        # rule_files is relative to the configuration file, as shipped
        shutil.copy(RULES_YML, os.path.join(self.dir, RULES_YML.name))
        super().__init__("prometheus", [
            _tool("prometheus"), "--config.file=" + self.cfg_path,
            "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
            "--web.listen-address=127.0.0.1:%d" % self.port,
        ], self.dir)
        if not wait_until(self._ready, 30, 0.1):
            self.stop()
            raise AssertionError("Prometheus not ready within 30 s; output:\n" + self.text()[-4000:])

    def _ready(self):
        if not self.running():
            raise AssertionError("prometheus exited with %s:\n%s" % (self.proc.poll(),
                                                                    self.text()[-4000:]))
        return _http_get("http://127.0.0.1:%d/-/ready" % self.port)[0] == 200

    def api(self, path, **params):
        url = "http://127.0.0.1:%d/api/v1/%s" % (self.port, path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = _http_get(url, timeout=5)
        doc = json.loads(body)
        assert status == 200 and doc.get("status") == "success", body
        return doc["data"]

    def query(self, expr):
        """Instant query -> [(labels, float value)]."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]


def derive_prometheus_yml(text, todod_targets, haproxy_target):
    """conf/prometheus.yml with the targets of its jobs replaced and every interval
    (scrape, evaluation, scrape timeout) set to 1 s."""
    out = []
    job = None
    replaced = set()
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        m = re.match(r"^\s*- job_name:\s*(\S+)", code)
        if m:
            job = m.group(1)
        if re.match(r"^\s*(scrape_interval|evaluation_interval|scrape_timeout):", code):
            line = re.sub(r":\s*\S+", ": 1s", code.rstrip(), count=1)
        elif re.match(r"^\s*- targets:", code) and job in ("todod", "haproxy"):
            targets = todod_targets if job == "todod" else [haproxy_target]
            indent = code[:code.index("-")]
            line = "%s- targets: [%s]" % (indent, ", ".join("'%s'" % t for t in targets))
            replaced.add(job)
        out.append(line)
    assert replaced == {"todod", "haproxy"}, \
        "conf/prometheus.yml: static targets found for jobs %s, want todod and haproxy" % sorted(
            replaced)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- load


class Load:
    """Client threads sending, through HAProxy, over keep-alive connections:
    POST /todos (every 201's id recorded), GET /todos/{id} of it, GET /todos?limit=5.
    Every request is recorded with its start and end times (time.monotonic()).

    With targets ([(host, port)]), thread k sends to targets[k % len(targets)]
    instead of HAProxy; the first `fresh` threads open a new connection for every
    request. The clients are plain HTTP/1.1 (harness Client, retry=False): a
    connection closes when an answer says "Connection: close" (counted in
    told_to_close), the next request opens a new one, and no request is ever sent
    twice."""

    def __init__(self, port, threads=LOAD_THREADS, pause=0.01, targets=None, fresh=0):
        self.targets = targets or [("127.0.0.1", port)]
        self.pause = pause
        self.fresh = fresh
        self.results = []   # dicts: t0, t1, thread, method, path, status, error, reused
        self.acked = []     # ids of the todos whose creation was acknowledged (201)
        self.told_to_close = 0  # keep-alive connections closed after an answer's say-so
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                         for k in range(threads)]
        self.started = None

    def __enter__(self):
        self.started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(30)
        assert not any(t.is_alive() for t in self._threads), "load threads still running"

    def count(self):
        return len(self.results)

    def failures(self):
        return [r for r in list(self.results) if r["error"] is not None]

    def _call(self, client, k, method, path, body, want):
        if self._stop.is_set():
            return None
        if k < self.fresh:
            client.close()
        rec = {"t0": time.monotonic(), "thread": k, "method": method, "path": path,
               "status": None, "error": None, "reused": client.conn is not None and client.used}
        try:
            r = client.request(method, path, body)
            if rec["reused"] and client.conn is None:
                with self._lock:
                    self.told_to_close += 1
            rec["status"] = r.status
            if r.status != want:
                rec["error"] = "status %d: %r" % (r.status, r.body[:200])
                r = None
        except Exception as e:  # noqa: BLE001 - every failure is recorded
            rec["error"] = "%s: %s" % (type(e).__name__, e)
            client.close()  # one whose connect() failed, too: the next request opens one
            r = None
        rec["t1"] = time.monotonic()
        self.results.append(rec)
        return r

    def _run(self, k):
        # no client-side retry: HAProxy keeps the client connection whatever the
        # servers do, so any failure here is a failure a client would see
        host, port = self.targets[k % len(self.targets)]
        client = Client(host, port, timeout=15, retry=False)
        i = 0
        try:
            while not self._stop.is_set():
                i += 1
                r = self._call(client, k, "POST", "/todos", {"title": "cluster %d.%d" % (k, i)},
                               201)
                if r is not None:
                    tid = r.json()["id"]
                    self.acked.append(tid)
                    self._call(client, k, "GET", "/todos/" + tid, None, 200)
                self._call(client, k, "GET", "/todos?limit=5", None, 200)
                time.sleep(self.pause)
        finally:
            client.close()

    def describe(self, rows, t_ref=None, limit=25):
        t_ref = self.started if t_ref is None else t_ref
        lines = ["  +%.3fs..+%.3fs thread %d %s %s on a %s connection: %s" % (
            r["t0"] - t_ref, r["t1"] - t_ref, r["thread"], r["method"], r["path"],
            "reused" if r.get("reused") else "new", r["error"]) for r in rows[:limit]]
        if len(rows) > limit:
            lines.append("  ... %d more" % (len(rows) - limit))
        return "\n".join(lines)


# --------------------------------------------------------------------------- cluster


class Cluster:
    """n todod instances (127.0.0.2, .3, ..., free ports; three by default) on one
    database (of pg, default the shared server; db, default a new one), and HAProxy
    in front of them, started by start(); everything is stopped on exit. The
    directory with HAProxy's (and Prometheus's) configuration and log is kept when
    the test fails."""

    def __init__(self, n=3, pg=None, db=None, **conf):
        inter, fastinter, fall, _ = _shipped_check_timing()
        self.time_to_down = inter + (fall - 1) * fastinter
        assert DRAIN_DELAY > self.time_to_down + 0.5, \
            "DRAIN_DELAY %.1f s is not comfortably above the %.1f s the shipped checks " \
            "take to mark a server down" % (DRAIN_DELAY, self.time_to_down)
        self.pg = pg if pg is not None else get_pg()
        self.db = db if db is not None else self.pg.create_database("cluster")
        self.dir = tempfile.mkdtemp(prefix="todod-cluster-")
        os.chmod(self.dir, 0o755)
        # shutdown_timeout as shipped (None: todod's default), which the shipped
        # HAProxy configuration's keep-alive timeout is consistent with
        settings = {"workers": 2, "drain_delay": DRAIN_DELAY, "shutdown_timeout": None}
        settings.update(conf)
        self.nodes = []
        for i in range(n):
            host = "127.0.0.%d" % (2 + i)
            self.nodes.append(Todod(pg=self.pg, db=self.db,
                                    listen="%s:%d" % (host, free_port(host)), **settings))
        self.haproxy = None
        self.prometheus = None

    def start(self, haproxy=True):
        for d in self.nodes:
            d.start()
        if not haproxy:
            return self
        self.haproxy = HAProxy([(d.host, d.port) for d in self.nodes], self.dir)
        assert self.haproxy.wait_status(self.haproxy.names, "UP", 10), \
            "HAProxy does not see every instance UP within 10 s: %s\n%s" % (
                {n: self.haproxy.status(n) for n in self.haproxy.names}, self.haproxy.text())
        return self

    def name(self, d):
        if self.haproxy is None:
            return "%s:%d" % (d.host, d.port)
        return self.haproxy.names[self.nodes.index(d)]

    def load(self, **kw):
        return Load(self.haproxy.port, **kw)

    def start_prometheus(self):
        self.prometheus = Prometheus(["%s:%d" % (d.host, d.port) for d in self.nodes],
                                     "127.0.0.1:%d" % self.haproxy.stats_port, self.dir)
        return self.prometheus

    def table_ids(self):
        out = self.pg.psql("SELECT id FROM todos", db=self.db)
        return set(out.split()) if out else set()

    def report(self, load=None, events=()):
        """What happened, for an assertion message."""
        parts = ["cluster files and logs: %s" % self.dir]
        for e in events:
            parts.append("  " + e)
        if load is not None:
            fails = load.failures()
            parts.append("%d requests, %d failed:" % (load.count(), len(fails)))
            if fails:
                parts.append(load.describe(fails))
        if self.haproxy is not None:
            probs = self.haproxy.problems()
            parts.append("HAProxy log, requests not ended normally (%d):" % len(probs))
            parts.extend("  " + p for p in probs[:25])
            changes = self.haproxy.changes()
            t_ref = load.started if load is not None and load.started else 0
            parts.append("HAProxy server state changes: " + ", ".join(
                "%s %s at +%.3fs" % (n, s, t - t_ref) for t, n, s in changes))
        return "\n".join(parts)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        for p in (self.prometheus, self.haproxy):
            if p is not None:
                try:
                    p.stop()
                except Exception:
                    pass
        for d in self.nodes:
            d.shutdown()
        _procs.kill()   # a server whose start was interrupted
        if exc_type is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


def _wait_load(load, n, timeout=20):
    assert wait_until(lambda: load.count() >= n, timeout), \
        "the load made only %d requests in %d s" % (load.count(), timeout)


# --------------------------------------------------------------------------- live tests


@test
def cluster_rolling_restart_behind_haproxy_fails_no_request():
    """SIGTERM one instance, wait for its exit, start it again, wait until HAProxy
    sees it UP, next: under a steady load of reads and writes, no request fails
    and every acknowledged todo is in the table."""
    skip_if_sanitizer(SANITIZER_REASON)
    with Cluster() as cl:
        cl.start()
        events = []
        problems = []
        with cl.load() as load:
            _wait_load(load, 100)
            for d in cl.nodes:
                name = cl.name(d)
                t_term = time.monotonic()
                d.signal(signal.SIGTERM)
                rc = d.wait(20)
                t_exit = time.monotonic()
                t_down = cl.haproxy.first_change(name, "DOWN", t_term)
                d.start()
                t_started = time.monotonic()
                up = cl.haproxy.wait_status([name], "UP", 10)
                t_up = time.monotonic()
                events.append("%s: SIGTERM at +%.3fs, HAProxy DOWN %s, exit %s at +%.3fs, "
                              "started at +%.3fs, UP at +%.3fs" % (
                                  name, t_term - load.started,
                                  "at +%.3fs" % (t_down - load.started) if t_down else "never",
                                  rc, t_exit - load.started, t_started - load.started,
                                  t_up - load.started))
                if rc != 0:
                    problems.append("%s exited with %s after SIGTERM" % (name, rc))
                if t_down is None or t_down > t_exit:
                    problems.append("HAProxy did not mark %s DOWN before it exited: drain_delay "
                                    "(%.1f s) should have covered the checks" % (name,
                                                                                 DRAIN_DELAY))
                if not up:
                    problems.append("HAProxy did not see %s UP again within 10 s" % name)
                    break
                # let it take its share again before the next one goes
                n = load.count()
                _wait_load(load, n + 30)
            n = load.count()
            _wait_load(load, n + 30)
        failed = load.failures()
        acked = set(load.acked)
        table = cl.table_ids()
        missing = acked - table
        if failed:
            problems.insert(0, "%d of %d requests failed during the rolling restart"
                            % (len(failed), load.count()))
        if missing:
            problems.append("%d acknowledged todos are not in the table: %s"
                            % (len(missing), sorted(missing)[:5]))
        if len(table) != len(acked):
            problems.append("the table has %d todos, %d were acknowledged (a write ran twice, "
                            "or one that failed was committed)" % (len(table), len(acked)))
        assert not problems, "\n".join(problems) + "\n" + cl.report(load, events)


@test
def cluster_reload_of_each_instance_under_load_fails_no_request():
    skip_if_sanitizer(SANITIZER_REASON)
    with Cluster() as cl:
        cl.start()
        events = []
        with cl.load() as load:
            _wait_load(load, 100)
            for d in cl.nodes:
                old = d.worker_pids()
                t = time.monotonic()
                d.signal(signal.SIGHUP)
                replaced = wait_until(lambda: len(d.worker_pids()) == 2
                                      and not set(old) & set(d.worker_pids()), 15)
                events.append("%s: SIGHUP at +%.3fs, old workers %s, gone at +%.3fs" % (
                    cl.name(d), t - load.started, "replaced" if replaced else "NOT replaced",
                    time.monotonic() - load.started))
                assert replaced, "the workers of %s were not replaced within 15 s of SIGHUP\n%s" \
                    % (cl.name(d), cl.report(load, events))
                n = load.count()
                _wait_load(load, n + 30)
        failed = load.failures()
        acked = set(load.acked)
        table = cl.table_ids()
        assert not failed, "%d of %d requests failed during the reloads\n%s" % (
            len(failed), load.count(), cl.report(load, events))
        assert acked <= table and len(table) == len(acked), \
            "%d todos acknowledged, %d in the table, %d missing\n%s" % (
                len(acked), len(table), len(acked - table), cl.report(load, events))
        for d in cl.nodes:
            assert d.running(), "%s is not running after its reload" % cl.name(d)


def _https(haproxy, method, path, body=None, tls=True):
    """One request to HAProxy's https frontend, the certificate verified against
    the one the test made (it names localhost), or with tls=False to its plain
    frontend; returns (status, headers, body)."""
    if tls:
        ctx = ssl.create_default_context(cafile=haproxy.pem)
        conn = http.client.HTTPSConnection("localhost", haproxy.https_port, context=ctx,
                                           timeout=10)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", haproxy.port, timeout=10)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@test
def haproxy_serves_https_and_limits_performance_tests_per_source_with_429():
    skip_if_sanitizer(SANITIZER_REASON)
    with Cluster() as c:
        c.start()
        h = c.haproxy
        status, _, body = _https(h, "POST", "/todos", {"title": "through TLS"})
        assert status == 201, (status, body)
        made = json.loads(body)
        status, _, body = _https(h, "GET", "/todos/%s" % made["id"])
        assert status == 200 and json.loads(body)["title"] == "through TLS", (status, body)
        # more performance tests from one address than the limit, through both frontends
        statuses = []
        for i in range(PERF_RATE_LIMIT + 5):
            status, headers, body = _https(h, "POST", "/todos/performance-test",
                                           {"message_count": 3}, tls=i % 2 == 1)
            statuses.append(status)
            if status == 429:
                assert headers.get("retry-after") == "10", headers
                assert "error" in json.loads(body), body
            # other routes from the same address are not limited
            assert _https(h, "GET", "/todos?limit=1")[0] == 200
        passed = statuses.count(200)
        assert statuses[:PERF_RATE_LIMIT] == [200] * PERF_RATE_LIMIT, statuses
        assert statuses.count(429) >= 1 and passed + statuses.count(429) == len(statuses), statuses
        # a 429 never reached an instance: only the tests let through wrote rows
        rows = c.pg.psql("SELECT count(*) FROM todos WHERE title LIKE 'Performance Test Todo #%'",
                         db=c.db)
        assert int(rows) == 3 * passed, (rows, statuses)
        reached = sum(metric(d.metrics(), "todod_http_requests_total",
                             {"route": "/todos/performance-test"}, default=0.0) for d in c.nodes)
        assert reached == passed, (reached, statuses)


# --------------------------------------------------------------------------- reloads and stops
# under keep-alive load: a retiring worker answers the next request on each of its
# keep-alive connections with "Connection: close" instead of closing them while idle


# At least three reloads of each instance under at least this many requests: GET and
# POST, on keep-alive connections and on a new connection per request.
RELOADS_EACH = 3
RELOAD_REQUESTS = 20000
RELOAD_THREADS = 6
RELOAD_FRESH = 2  # of the threads, those opening a new connection per request


def _reload_each_under_load(cl, load, events):
    """SIGHUP to each instance in turn, RELOADS_EACH rounds, spread over the first
    RELOAD_REQUESTS requests of the load, each time waiting until the instance's old
    workers are gone; then until the load has made RELOAD_REQUESTS requests."""
    total = RELOADS_EACH * len(cl.nodes)
    step = RELOAD_REQUESTS // (total + 1)
    n = 0
    for _ in range(RELOADS_EACH):
        for d in cl.nodes:
            n += 1
            _wait_load(load, n * step, 60)
            old = d.worker_pids()
            t = time.monotonic()
            d.signal(signal.SIGHUP)
            replaced = wait_until(lambda: len(d.worker_pids()) == 2
                                  and not set(old) & set(d.worker_pids()), 15)
            events.append("%s: SIGHUP at +%.3fs (request %d), old workers %s at +%.3fs" % (
                cl.name(d), t - load.started, load.count(),
                "gone" if replaced else "STILL THERE", time.monotonic() - load.started))
            assert replaced, "the old workers of %s were still there 15 s after SIGHUP\n%s" % (
                cl.name(d), cl.report(load, events))
    _wait_load(load, RELOAD_REQUESTS, 60)


def _acked_problems(cl, load):
    acked = set(load.acked)
    table = cl.table_ids()
    out = []
    if acked - table:
        out.append("%d acknowledged todos are not in the table: %s"
                   % (len(acked - table), sorted(acked - table)[:5]))
    if len(table) != len(acked):
        out.append("the table has %d todos, %d were acknowledged" % (len(table), len(acked)))
    return out


@test
def cluster_reloads_under_keepalive_load_behind_haproxy_fail_no_request():
    """Three SIGHUPs to each of the three instances, through the shipped HAProxy
    configuration, under GET and POST on keep-alive and new client connections: no
    request fails, HAProxy retries none (a request that met the close of an idle
    connection would be retried, if a GET, or fail), every 201 is in the table."""
    skip_if_sanitizer(SANITIZER_REASON)
    with Cluster() as cl:
        cl.start()
        events = []
        with cl.load(threads=RELOAD_THREADS, fresh=RELOAD_FRESH, pause=0) as load:
            _reload_each_under_load(cl, load, events)
        sent = load.count()
        # HAProxy logs a request once it ended; its log reaches us a little later
        wait_until(lambda: len(cl.haproxy.requests()) >= sent, 5)
        retried = [r["line"] for r in cl.haproxy.requests() if r["retries"].lstrip("+") != "0"]
        failed = load.failures()
        print("    (%d requests, %d failed, %d retried by HAProxy, %d reloads)"
              % (sent, len(failed), len(retried), RELOADS_EACH * len(cl.nodes)))
        problems = []
        if failed:
            problems.append("%d of %d requests failed during the reloads" % (len(failed), sent))
        if retried:
            problems.append("HAProxy retried %d requests (an idle connection closed under "
                            "them):\n  %s" % (len(retried), "\n  ".join(retried[:10])))
        problems += _acked_problems(cl, load)
        assert not problems, "\n".join(problems) + "\n" + cl.report(load, events)


@test
def reloads_under_keepalive_load_straight_to_todod_fail_no_request_of_a_plain_client():
    """The same load and reloads with no proxy: plain HTTP/1.1 clients (no retry)
    straight to the three instances. A client that sends its next request on a
    retiring worker's keep-alive connection gets its answer with "Connection: close"
    and opens a new connection for the following one: none fails, and each reload
    tells at least one keep-alive client so."""
    skip_if_sanitizer("20,000 requests and nine reloads: too slow for a sanitizer build")
    with Cluster() as cl:
        cl.start(haproxy=False)
        events = []
        with Load(None, threads=RELOAD_THREADS, fresh=RELOAD_FRESH, pause=0,
                  targets=[(d.host, d.port) for d in cl.nodes]) as load:
            _reload_each_under_load(cl, load, events)
        sent = load.count()
        failed = load.failures()
        reloads = RELOADS_EACH * len(cl.nodes)
        print("    (%d requests, %d failed, %d keep-alive connections closed after an answer "
              "with Connection: close, %d reloads)" % (sent, len(failed), load.told_to_close,
                                                       reloads))
        problems = []
        if failed:
            problems.append("%d of %d requests failed during the reloads" % (len(failed), sent))
        if load.told_to_close < reloads:
            problems.append("only %d keep-alive connections were told to close by an answer "
                            "over %d reloads" % (load.told_to_close, reloads))
        problems += _acked_problems(cl, load)
        assert not problems, "\n".join(problems) + "\n" + cl.report(load, events)


@test(cases={"as_root": {}, "workers_as_nobody": {"user": "nobody"}})
def a_stop_under_keepalive_load_straight_to_todod_fails_only_refused_connections(case):
    """SIGTERM to an instance under plain HTTP/1.1 clients (no retry, no proxy) on
    keep-alive and new connections: during drain_delay every answer says
    "Connection: close"; then the socket closes. A request either gets its answer
    or its connection is refused: none is sent on a connection that then closes
    under it, and every 201 is in the table. With the workers switched to an
    unprivileged `user`, which Linux does not let attach a socket filter to a TCP
    socket, the master (root) makes the socket drop new SYNs for them."""
    with Cluster(n=1, **case) as cl:
        cl.start(haproxy=False)
        d = cl.nodes[0]
        with Load(None, threads=7, fresh=1, pause=0.02, targets=[(d.host, d.port)]) as load:
            _wait_load(load, 300)
            t = time.monotonic()
            d.signal(signal.SIGTERM)
            rc = d.wait(20)
            took = time.monotonic() - t
        failed = load.failures()
        lost = [r for r in failed if r["reused"] or "ConnectionRefusedError" not in r["error"]]
        print("    (%d requests, %d refused connections, %d keep-alive connections closed "
              "after an answer with Connection: close, stopped in %.1f s)"
              % (load.count(), len(failed), load.told_to_close, took))
        assert rc == 0, "exit status %s" % rc
        assert not lost, "%d requests were sent and got no answer:\n%s" % (
            len(lost), load.describe(lost, t))
        assert "cannot make the listening socket drop new connections" not in d.log(), \
            d.log_tail()
        assert load.told_to_close >= 1, "no keep-alive connection was told to close"
        problems = _acked_problems(cl, load)
        assert not problems, "\n".join(problems)


def _established(host, port):
    """Established TCP connections to host:port (IPv4), from /proc/net/tcp."""
    want = "%s:%04X" % ("".join("%02X" % int(x) for x in reversed(host.split("."))), port)
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[2] == want and fields[3] == "01":
                n += 1
    return n


@test
def cluster_haproxy_closes_idle_server_connections_before_todod_does():
    """HAProxy must close an idle connection to an instance before todod's
    keepalive_timeout does, or it may send a request on it just as todod closes it.
    Clients that stay connected but idle: HAProxy closes their connections, and
    with them its connections to the instances, after timeout http-keep-alive
    (5 s), before todod's keepalive_timeout (here 20 s) runs out."""
    skip_if_sanitizer(SANITIZER_REASON)
    keepalive = 20
    with Cluster(keepalive_timeout=keepalive) as cl:
        cl.start()
        clients = [Client("127.0.0.1", cl.haproxy.port, timeout=5, retry=False)
                   for _ in range(4)]
        try:
            sent = 0
            for _ in range(30):
                for c in clients:
                    r = c.request("GET", "/todos?limit=5")
                    assert r.status == 200, r
                    sent += 1
            t_last = time.monotonic()
            per_server = {cl.name(d): _established(d.host, d.port) for d in cl.nodes}
            stats = cl.haproxy.servers()
            connects = sum(int(r["connect"] or 0) for r in stats.values())
            # keep-alive to the instances: connections were reused
            assert connects <= sent // 4, \
                "HAProxy opened %d server connections for %d requests" % (connects, sent)
            assert all(n >= 1 for n in per_server.values()), \
                "no idle connection from HAProxy to some instances: %s" % per_server
            history = []

            def all_closed():
                now = {cl.name(d): _established(d.host, d.port) for d in cl.nodes}
                history.append((round(time.monotonic() - t_last, 1), now))
                return not any(now.values())
            assert wait_until(all_closed, keepalive - 4, 0.25), \
                "HAProxy still holds idle connections to the instances %d s after the last " \
                "request; todod closes them at %d s (after the requests: %s; then %s)" % (
                    keepalive - 4, keepalive, per_server, history[-4:])
            took = time.monotonic() - t_last
        finally:
            for c in clients:
                c.close()
        for d in cl.nodes:
            # once todod counts connections it cut off (keepalive_timeout), none of them
            assert metric(d.metrics(), "todod_http_client_timeouts_total", default=0) == 0, \
                "todod closed idle connections of HAProxy itself (after %.1f s)" % took


@test
def cluster_kill_9_of_an_instance_costs_at_most_its_in_flight_requests():
    """kill -9 of an instance's master and workers: the requests it had in flight
    may fail (at most one per client thread), none after HAProxy marked it down,
    and it is marked down within its check interval."""
    skip_if_sanitizer(SANITIZER_REASON)
    with Cluster() as cl:
        cl.start()
        victim = cl.nodes[1]
        name = cl.name(victim)
        with cl.load() as load:
            _wait_load(load, 150)
            pids = [victim.pid] + victim.worker_pids()
            t_kill = time.monotonic()
            os.killpg(victim.pid, signal.SIGKILL)   # the workers share the master's group
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            t_killed = time.monotonic()
            marked = wait_until(lambda: cl.haproxy.first_change(name, "DOWN", t_kill), 5)
            t_down = cl.haproxy.first_change(name, "DOWN", t_kill)
            # a while on the two others
            n = load.count()
            _wait_load(load, n + 150)
            time.sleep(max(0.0, t_kill + 2 - time.monotonic()))
        victim.proc.wait(5)
        events = ["%s: SIGKILL at +%.3fs..+%.3fs, HAProxy DOWN %s" % (
            name, t_kill - load.started, t_killed - load.started,
            "at +%.3fs" % (t_down - load.started) if t_down else "never")]
        failed = load.failures()
        report = cl.report(load, events)
        assert marked, "HAProxy did not mark %s DOWN within 5 s of kill -9\n%s" % (name, report)
        # inter + (fall - 1) * fastinter, plus scheduling slack on a loaded machine
        assert t_down - t_kill < cl.time_to_down + 1.0, \
            "HAProxy took %.2f s to mark %s DOWN (checks: %.2f s)\n%s" % (
                t_down - t_kill, name, cl.time_to_down, report)
        late = [r for r in failed if r["t0"] >= t_down]
        assert not late, "%d requests sent after HAProxy marked %s DOWN failed:\n%s\n%s" % (
            len(late), name, load.describe(late), report)
        assert len(failed) <= LOAD_THREADS, \
            "%d requests failed; at most %d (one per client thread) can have been in flight\n%s" \
            % (len(failed), LOAD_THREADS, report)
        missing = set(load.acked) - cl.table_ids()
        assert not missing, "%d acknowledged todos are not in the table\n%s" % (len(missing),
                                                                             report)


@test
def cluster_prometheus_counts_every_request_and_evaluates_the_shipped_rules():
    skip_if_sanitizer(SANITIZER_REASON)
    with Cluster() as cl:
        cl.start()
        prom = cl.start_prometheus()
        targets = ["%s:%d" % (d.host, d.port) for d in cl.nodes]

        def all_up():
            up = {m["instance"]: v for m, v in prom.query('up{job="todod"}')}
            return sorted(up) == sorted(targets) and all(v == 1 for v in up.values())
        assert wait_until(all_up, 15, 0.2), "Prometheus does not scrape all three instances: %s" \
            % prom.query("up")
        # long enough for several scrapes to see the counters grow
        with cl.load() as load:
            _wait_load(load, 600)
            time.sleep(max(0.0, load.started + 5 - time.monotonic()))
        failed = load.failures()
        assert not failed, "%d requests failed\n%s" % (len(failed), cl.report(load))
        sent = load.count()
        expr = 'sum(todod_http_requests_total{job="todod",route=~"/todos.*"})'
        seen = []

        def counted():
            v = prom.query(expr)
            seen.append(v)
            return v and v[0][1] == sent
        assert wait_until(counted, 15, 0.25), \
            "Prometheus counts %s requests to /todos routes over the cluster, the client sent %d" \
            % (seen[-1] if seen else "no", sent)
        # every instance got a share
        per = {m["instance"]: v for m, v in prom.query(
            'sum by (instance) (todod_http_requests_total{job="todod",route=~"/todos.*"})')}
        assert sorted(per) == sorted(targets) and all(v > 0 for v in per.values()), per

        # the shipped rules are loaded, and every one of them has been evaluated
        # without error
        want = len(re.findall(r"^\s*- (?:record|alert):", RULES_YML.read_text(), re.M))

        def rules():
            return [r for g in prom.api("rules")["groups"] for r in g["rules"]]

        def evaluated():
            rs = rules()
            return len(rs) == want and all(
                r.get("health") != "unknown" and not r.get("lastEvaluation", "").startswith("0001")
                for r in rs)
        assert wait_until(evaluated, 10, 0.25), "rules not all evaluated: %s" % json.dumps(rules())
        bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules()
               if r.get("health") != "ok" or r.get("lastError")]
        assert not bad, "rules with evaluation errors: %s" % bad
        # the recording rules give figures from the real metrics
        rate = []

        def rate_positive():
            rate[:] = prom.query("job:todod_http_requests:rate1m")
            return rate and rate[0][1] > 0
        assert wait_until(rate_positive, 5, 0.25), "job:todod_http_requests:rate1m = %s" % rate
        assert {m["route"] for m, _ in prom.query("job_route:todod_http_requests:rate1m")} == \
            {"/todos", "/todos/{id}"}, prom.query("job_route:todod_http_requests:rate1m")
        ratio = prom.query("job:todod_http_requests_5xx:ratio_rate5m")
        assert ratio and ratio[0][1] == 0, "5xx ratio of a healthy cluster: %s" % ratio
        db = {m["instance"]: v for m, v in prom.query("instance:todod_db_up:sum")}
        assert sorted(db) == sorted(targets) and all(v >= 2 for v in db.values()), \
            "database connections up per instance (2 workers, at least 1 each): %s" % db
        # a healthy cluster raises no alert, not even a pending one
        alerts = prom.query("ALERTS")
        assert not alerts, "alerts on a healthy cluster: %s" % alerts
        # and HAProxy's own exporter, as the shipped configuration scrapes it
        assert [v for _, v in prom.query('up{job="haproxy"}')] == [1], prom.query("up")
