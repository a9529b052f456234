"""The daemon's foundation: routing basics, metrics totals, the process model
(workers, restarts, reloads, graceful stop), sd_notify, the command line, the
database going away, log line tags. See shared spec DAEMON.md and API.md."""

import os
import re
import signal
import threading
import time

from lib.env import ROOT
from lib.marks import test
from lib.pg import Postgres
from lib.notify import NotifySocket
from lib.todod import Todod
from lib.load import Threads, run_threads
from lib.checks import assert_json_error, wait_until
from lib.metrics import metric

NIL_ID = "00000000-0000-4000-8000-000000000000"


def health_count(d):
    return metric(d.metrics(), "todod_http_requests_total",
                  {"route": "/health", "method": "GET", "code": "200"})


class Traffic(Threads):
    """Background clients that keep sending GET /health until stopped: one opening a
    new connection per request, one reusing a keep-alive connection. Records every
    failure (exception or non-200)."""

    def __init__(self, d):
        super().__init__([self._new_conn, self._keepalive])
        self.d = d
        self.ok = {"new": 0, "keepalive": 0}
        self.ok_times = []
        self.failures = []
        self.retries = 0

    def _record(self, kind, r):
        with self.lock:
            if r.status == 200:
                self.ok[kind] += 1
                self.ok_times.append(time.monotonic())
            else:
                self.failures.append("%s: %r" % (kind, r))

    def _new_conn(self):
        while not self.stop_flag.is_set():
            try:
                self._record("new", self.d.request("GET", "/health", timeout=5))
            except Exception as e:  # noqa: BLE001
                with self.lock:
                    self.failures.append("new connection: %r" % e)
            time.sleep(0.005)

    def _keepalive(self):
        c = self.d.Client(timeout=5)
        try:
            while not self.stop_flag.is_set():
                try:
                    self._record("keepalive", c.request("GET", "/health"))
                except Exception as e:  # noqa: BLE001
                    with self.lock:
                        self.failures.append("keep-alive: %r" % e)
                time.sleep(0.005)
        finally:
            self.retries = c.retries
            c.close()

    def ok_after(self, t):
        with self.lock:
            return sum(1 for x in self.ok_times if x > t)


# --------------------------------------------------------------------------- routing basics

@test
def health_returns_200_text_plain_ok():
    with Todod(workers=1) as d:
        d.start()
        r = d.request("GET", "/health")
        assert r.status == 200, r
        assert r.headers.get("content-type", "").startswith("text/plain"), r.headers
        assert r.text.strip() == "ok", r.body
        assert d.stop() == 0


@test
def unknown_route_is_404_json_error():
    with Todod(workers=1) as d:
        d.start()
        for path in ("/nope", "/todos/x/y/z", "/healthz", "/"):
            assert_json_error(d.request("GET", path), 404)
        assert d.stop() == 0


@test
def wrong_method_is_405_json_with_allow_header():
    with Todod(workers=1) as d:
        d.start()
        r = d.request("DELETE", "/health")
        assert_json_error(r, 405)
        allow = r.headers.get("allow")
        assert allow is not None, "no Allow header: %r" % r.headers
        assert "GET" in [m.strip() for m in allow.split(",")], allow

        r = d.request("PATCH", "/todos", body={"title": "x"})
        assert_json_error(r, 405)
        methods = [m.strip() for m in r.headers.get("allow", "").split(",")]
        assert "GET" in methods and "POST" in methods, r.headers
        assert d.stop() == 0


# --------------------------------------------------------------------------- metrics

@test
def metrics_request_total_equals_requests_sent():
    with Todod(workers=2) as d:
        d.start()
        before = health_count(d)
        assert before >= 1, "the readiness probe's GET /health is not counted"
        text = d.metrics()
        before_hist = metric(text, "todod_http_request_duration_seconds_count", {"route": "/health"})

        def client(i):
            answered = 0
            with d.Client() as c:
                for _ in range(25):
                    r = c.request("GET", "/health")
                    assert r.status == 200, r
                    answered += 1
            return answered

        results = run_threads(8, client)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors
        assert sum(results) == 200, results

        # a worker may count a request just after sending its answer: allow a moment
        wait_until(lambda: health_count(d) - before >= 200, 2)
        after = health_count(d)
        assert after - before == 200, "counted %g GET /health 200, sent 200" % (after - before)
        text = d.metrics()
        hist = metric(text, "todod_http_request_duration_seconds_count", {"route": "/health"})
        assert hist - before_hist == 200, "histogram count grew by %g, sent 200" % (hist - before_hist)
        assert metric(text, "todod_workers") == 2
        assert d.stop() == 0


@test
def stats_names_the_version_and_start_of_the_instance_as_metrics_does():
    with Todod(workers=2) as d:
        d.start()
        before = int(time.time())
        s = d.stats()
        after = time.time()
        text = d.metrics()
        version = re.search(r'^todod_build_info\{version="([^"]*)"\} 1$', text, re.M)
        assert version and s["version"] == version.group(1) != "", (s["version"], version)
        started = metric(text, "process_start_time_seconds")
        assert s["started_at"] == int(started), (s["started_at"], started)
        assert s["started"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s["started_at"])), s
        assert before <= s["now"] <= after, (before, s["now"], after)
        assert s["started_at"] <= s["now"], s
        # the master's start, not a worker's: it stays when a worker is replaced
        victim = d.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: len(d.worker_pids()) == 2 and victim not in d.worker_pids(), 10)
        assert d.stats()["started_at"] == s["started_at"]
        assert d.stop() == 0


@test
def connections_spread_over_workers():
    with Todod(workers=2) as d:
        d.start()
        assert wait_until(lambda: len(d.worker_pids()) == 2, 5), d.worker_pids()

        def per_worker():
            return {w["pid"]: w["requests"] for w in d.stats()["workers"]}

        before = per_worker()
        assert sorted(before) == d.worker_pids(), (before, d.worker_pids())
        nconn, nreq = 64, 20

        def client(i):
            with d.Client() as c:
                for _ in range(nreq):
                    r = c.request("GET", "/health")
                    assert r.status == 200, r
                assert c.connections == 1, "connection %d was not kept alive" % i
            return nreq

        results = run_threads(nconn, client)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors[:3]
        total = nconn * nreq
        assert sum(results) == total

        wait_until(lambda: sum(per_worker().values()) - sum(before.values()) >= total, 2)
        after = per_worker()
        deltas = {pid: after[pid] - before.get(pid, 0) for pid in after}
        assert sum(deltas.values()) >= total, (before, after)
        for pid, n in deltas.items():
            assert n >= total / 4, "worker %d served %d of %d requests: %r" % (pid, n, total, deltas)
        assert d.stop() == 0


# --------------------------------------------------------------------------- process model

@test
def killed_worker_is_replaced_and_counters_kept():
    with Todod(workers=2) as d:
        d.start()
        assert wait_until(lambda: len(d.worker_pids()) == 2, 5), d.worker_pids()
        for _ in range(40):
            assert d.request("GET", "/health").status == 200
        stats = d.stats()
        served = {w["pid"]: w["requests"] for w in stats["workers"]}
        victim = max(served, key=served.get)
        assert served[victim] > 0, served
        assert victim in d.worker_pids(), (victim, d.worker_pids())
        before = health_count(d)
        restarts_before = metric(d.metrics(), "todod_worker_restarts_total")
        assert restarts_before == 0

        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        replaced = wait_until(lambda: len(d.worker_pids()) == 2 and victim not in d.worker_pids(), 1.0,
                              interval=0.01)
        dt = time.monotonic() - t0
        assert replaced, "no replacement within 1 s: workers %r" % d.worker_pids()

        assert wait_until(lambda: metric(d.metrics(), "todod_workers") == 2, 3), d.metrics()
        text = d.metrics()
        assert metric(text, "todod_worker_restarts_total") == 1, text
        after = health_count(d)
        assert after >= before, "GET /health counter went down: %g -> %g" % (before, after)
        assert wait_until(lambda: all(d.request("GET", "/health").status == 200 for _ in range(4)), 3), \
            "GET /health not 200 after the replacement: %r" % d.request("GET", "/health")
        def logged_death():
            for line in d.log().splitlines():
                if "master[" not in line or str(victim) not in line:
                    continue
                rest = line.replace(str(victim), "").replace(str(d.pid), "")
                if "9" in rest or "kill" in rest.lower():
                    return True
            return False
        assert wait_until(logged_death, 2), "the master did not log how worker %d died" % victim
        print("    (replacement after %.3fs)" % dt)
        assert d.stop() == 0


@test
def sighup_changes_worker_count_without_failed_requests():
    with Todod(workers=2) as d:
        d.start()
        assert wait_until(lambda: len(d.worker_pids()) == 2, 5), d.worker_pids()
        old = set(d.worker_pids())
        with Traffic(d) as traffic:
            time.sleep(0.3)
            d.write_conf(workers=3)
            d.signal(signal.SIGHUP)
            done = wait_until(lambda: len(d.worker_pids()) == 3 and not old & set(d.worker_pids()),
                              10)
            assert done, "workers after reload: %r (old %r)" % (d.worker_pids(), old)
            assert wait_until(lambda: metric(d.metrics(), "todod_workers") == 3, 3), \
                "todod_workers: %r" % metric(d.metrics(), "todod_workers")
            t_reloaded = time.monotonic()
            time.sleep(0.5)
        assert not traffic.failures, "%d failed requests, first: %r" % (
            len(traffic.failures), traffic.failures[:5])
        assert traffic.ok["new"] >= 20 and traffic.ok["keepalive"] >= 20, traffic.ok
        assert traffic.ok_after(t_reloaded) >= 10, "few requests after the reload"
        assert len(d.worker_pids()) == 3
        print("    (%r answered, keep-alive retries %d)" % (traffic.ok, traffic.retries))
        assert d.stop() == 0


@test
def sighup_with_broken_config_keeps_old_workers():
    with Todod(workers=2) as d:
        d.start()
        assert wait_until(lambda: len(d.worker_pids()) == 2, 5), d.worker_pids()
        pids = d.worker_pids()
        d.write_conf(workers="lots")
        where = "%s:%d" % (d.conf_path, d.conf_line("workers"))
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: where in d.log(), 3), \
            "no log line naming %s:\n%s" % (where, d.log_tail())
        time.sleep(0.5)
        assert d.running()
        assert d.worker_pids() == pids, (pids, d.worker_pids())
        for _ in range(10):
            r = d.request("GET", "/health")
            assert r.status == 200, r
        assert d.worker_pids() == pids
        assert d.stop() == 0


@test
def sigusr1_and_sigusr2_sent_to_the_master_by_hand_change_nothing():
    # They are the workers' signals (perf-test shares, retiring a generation):
    # the master ignores them, and its forked workers until their loop handles them.
    with Todod(workers=2) as d:
        d.start()
        workers = sorted(d.worker_pids())
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1):
            d.signal(sig)
        time.sleep(0.3)
        assert d.running(), d.log_tail()
        assert sorted(d.worker_pids()) == workers, (workers, d.worker_pids(), d.log_tail())
        assert d.request("GET", "/health").status == 200
        assert d.stop() == 0


@test
def sigterm_lets_in_flight_request_finish_then_exits_0():
    with Todod(workers=1) as d:
        d.start()
        pg = d.pg
        assert wait_until(lambda: pg.psql("SELECT to_regclass('todos') IS NOT NULL", db=d.db) == "t", 5)
        locker = pg.lock_bg(d.db, 2)
        try:
            result = {}

            def slow_request():
                t = time.monotonic()
                try:
                    result["resp"] = d.request("GET", "/todos/" + NIL_ID, timeout=15)
                except Exception as e:  # noqa: BLE001
                    result["error"] = e
                result["elapsed"] = time.monotonic() - t

            th = threading.Thread(target=slow_request)
            th.start()
            time.sleep(0.3)
            assert th.is_alive(), "the request did not wait on the lock: %r" % result
            d.signal(signal.SIGTERM)
            th.join(15)
            assert not th.is_alive(), "no answer within 15 s"
            assert "error" not in result, "the in-flight request failed: %r" % result["error"]
            assert_json_error(result["resp"], 404)
            assert result["elapsed"] >= 1.0, "answered too early to have waited: %r" % result
            rc = d.wait(15)
            assert rc == 0, "master exit code %r" % rc
        finally:
            locker.wait(10)


@test
def sd_notify_ready_reloading_stopping():
    with NotifySocket() as ns, Todod(workers=2) as d:
        d.start(notify_socket=ns)
        assert ns.wait_for("READY=1", 5), ns.messages()
        n = len(ns.messages())
        d.signal(signal.SIGHUP)
        assert ns.wait_for("RELOADING=1", 5, since=n), ns.messages()
        i = ns.index("RELOADING=1", n)
        assert ns.wait_for("READY=1", 10, since=i + 1), ns.messages()
        assert wait_until(lambda: len(d.worker_pids()) == 2, 5), d.worker_pids()
        assert wait_until(lambda: d.request("GET", "/health").status == 200, 3)
        n = len(ns.messages())
        d.signal(signal.SIGTERM)
        assert ns.wait_for("STOPPING=1", 5, since=n), ns.messages()
        assert d.wait(15) == 0


# --------------------------------------------------------------------------- command line

def _version():
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"VERSION\s*:?=\s*(\S+)", line)
        if m:
            return m.group(1)
    raise AssertionError("no VERSION in the Makefile")


@test
def check_config_good_exits_0():
    d = Todod()
    r = d.run("-t", "-c", d.conf_path)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert not d.running()


@test
def check_config_errors_name_file_and_line():
    d = Todod()
    cases = [("unknown key", {"no_such_key": "1"}, "no_such_key"),
             ("bad value", {"workers": "lots"}, "workers")]
    for label, change, key in cases:
        saved = dict(d.conf)
        d.write_conf(**change)
        where = "%s:%d" % (d.conf_path, d.conf_line(key))
        r = d.run("-t", "-c", d.conf_path)
        out = r.stdout + r.stderr
        assert r.returncode == 1, (label, r.returncode, out)
        assert where in out, "%s: %r does not name %s" % (label, out, where)
        d.conf = saved
        d.write_conf()
    # a key given twice: the second occurrence is the error
    with open(d.conf_path, "a") as f:
        f.write("workers = 3\n")
    nlines = len(open(d.conf_path).read().splitlines())
    r = d.run("-t", "-c", d.conf_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, ("duplicate key", r.returncode, out)
    assert "%s:%d" % (d.conf_path, nlines) in out, out


# libpq cannot parse it, and says so quoting the whole URI, password included.
BROKEN_URL_SECRET = "s3cret-pw"
BROKEN_URL = "postgresql://todo:%s@[db.example/todo" % BROKEN_URL_SECRET


@test
def check_config_refuses_a_database_url_libpq_cannot_parse_without_quoting_it():
    d = Todod()
    d.write_conf(database_url=BROKEN_URL)
    where = "%s:%d: database_url: " % (d.conf_path, d.conf_line("database_url"))
    r = d.run("-t", "-c", d.conf_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, (r.returncode, out)
    assert where in out and "libpq" in out, out
    assert BROKEN_URL_SECRET not in out, "the error quotes the password: %r" % out
    # The same from the environment, which overrides the file.
    d.write_conf(database_url="")
    r = d.run("-t", "-c", d.conf_path, env={"DATABASE_URL": BROKEN_URL})
    out = r.stdout + r.stderr
    assert r.returncode == 1, (r.returncode, out)
    assert "DATABASE_URL" in out and BROKEN_URL_SECRET not in out, out


@test
def sighup_to_a_database_url_libpq_cannot_parse_keeps_old_workers_serving():
    with Todod(workers=2) as d:
        d.start()
        assert wait_until(lambda: len(d.worker_pids()) == 2, 5), d.worker_pids()
        pids = d.worker_pids()
        good = d.conf["database_url"]
        d.write_conf(database_url=BROKEN_URL)
        where = "%s:%d: database_url: " % (d.conf_path, d.conf_line("database_url"))
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: where in d.log(), 3), \
            "no log line naming %s:\n%s" % (where, d.log_tail())
        time.sleep(0.5)
        assert d.worker_pids() == pids, (pids, d.worker_pids())
        for _ in range(10):
            assert d.request("GET", "/health").status == 200
        assert d.request("POST", "/todos", body={"title": "still here"}).status == 201
        assert BROKEN_URL_SECRET not in d.log(), "the log quotes the password"
        d.write_conf(database_url=good)
        assert d.stop() == 0


@test
def version_and_help():
    d = Todod()
    r = d.run("-V")
    assert r.returncode == 0, r
    assert _version() in r.stdout + r.stderr, (r.stdout, r.stderr)
    r = d.run("-h")
    out = r.stdout + r.stderr
    assert r.returncode == 0, (r.returncode, out)
    assert "usage" in out.lower() and "-c" in out and "-t" in out, out


# --------------------------------------------------------------------------- database down

@test
def health_503_while_database_down_then_recovers():
    pg = Postgres()
    pg.start()
    with Todod(pg=pg, workers=2) as d:
        d.start()
        assert wait_until(lambda: len(d.worker_pids()) == 2, 5)
        for _ in range(6):
            assert d.request("GET", "/health").status == 200

        def all_status(status, n=6):
            return all(d.request("GET", "/health", timeout=2).status == status for _ in range(n))

        pg.stop()
        t0 = time.monotonic()
        assert wait_until(lambda: all_status(503), 1.0, interval=0.01), \
            "/health not 503 within 1 s of the database stopping: %r" % d.request("GET", "/health")
        print("    (503 after %.3fs)" % (time.monotonic() - t0))
        assert_json_error(d.request("GET", "/health"), 503)
        t = time.monotonic()
        r = d.request("GET", "/todos", timeout=5)
        assert_json_error(r, 503)
        assert time.monotonic() - t < 1.0, "GET /todos took %.2fs to answer 503" % (time.monotonic() - t)

        pg.start()
        t0 = time.monotonic()
        assert wait_until(lambda: all_status(200), 5.0, interval=0.05), \
            "/health not 200 within 5 s of the database starting: %r" % d.request("GET", "/health")
        print("    (200 again after %.3fs)" % (time.monotonic() - t0))
        r = d.request("GET", "/todos")
        assert r.status == 200, r
        assert metric(d.metrics(), "todod_db_reconnects_total") >= 1
        assert d.running()
        assert d.stop() == 0


# --------------------------------------------------------------------------- logging

@test
def log_lines_tag_master_and_worker_pids():
    with Todod(workers=2) as d:
        d.start()
        assert wait_until(lambda: len(d.worker_pids()) == 2, 5)
        workers = d.worker_pids()
        line_re = re.compile(r"^(<\d>)?todod (master|worker)\[(\d+)\] (error|warn|info|debug): \S")

        def tagged():
            seen = {}
            for line in d.log().splitlines():
                m = line_re.match(line)
                if m:
                    seen.setdefault(m.group(2), set()).add(int(m.group(3)))
            return seen

        assert wait_until(lambda: d.pid in tagged().get("master", set()), 3), \
            "no 'todod master[%d] info: ...' line:\n%s" % (d.pid, d.log_tail())
        assert wait_until(lambda: set(workers) <= tagged().get("worker", set()), 3), \
            "no 'todod worker[PID] ...' line for each of %r:\n%s" % (workers, d.log_tail())
        assert d.stop() == 0
