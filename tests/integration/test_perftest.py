"""POST /todos/performance-test: the replaced service's two documented commands,
the report, validation, failed batches, metrics, bounded memory, serving other
requests during a run, a client that goes away. See shared spec API.md ("The
performance test", "Metrics") and reference/replaced-service-PERFORMANCE.md."""

import http.client
import json
import math
import os
import signal
import socket
import threading
import time

from lib.env import SANITIZER
from lib.marks import test
from lib.pg import Postgres
from lib.todod import Todod
from lib.checks import assert_json_error, wait_until
from lib.metrics import metric

PATH = "/todos/performance-test"
TITLE = "Performance Test Todo #"
LIMITS = {"perf_max_messages": 1000, "perf_max_batch": 100}

# The replaced service's fields (name -> JSON types allowed), then ours.
ORIGINAL_FIELDS = {
    "total_messages": (int,),
    "duration_ms": (int,),
    "messages_per_second": (int, float),
    "success_count": (int,),
    "error_count": (int,),
    "success_rate": (int, float),
}


# --------------------------------------------------------------------------- helpers

def perf(d, body, timeout=30, headers=None):
    """POST the performance test; body is a dict (sent as JSON) or raw str/bytes."""
    return d.request("POST", PATH, body=body, headers=headers, timeout=timeout)


def perf_ok(d, n, b=None, timeout=60):
    body = {"message_count": n}
    if b is not None:
        body["batch_size"] = b
    r = perf(d, body, timeout=timeout)
    assert r.status == 200, "POST %s %r: %r" % (PATH, body, r)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    return r.json()


def wait_table(d):
    assert wait_until(lambda: d.pg.psql("SELECT to_regclass('todos') IS NOT NULL", db=d.db) == "t",
                      10), "the todos table was not created"


def rows(d):
    return int(d.pg.psql("SELECT count(*) FROM todos", db=d.db))


def perf_metrics(d):
    text = d.metrics()
    return {
        "tests": metric(text, "todod_perf_tests_total"),
        "success": metric(text, "todod_perf_todos_total", {"result": "success"}),
        "error": metric(text, "todod_perf_todos_total", {"result": "error"}),
        "batches": metric(text, "todod_perf_batch_duration_seconds_count"),
    }


def is_type(v, types):
    return isinstance(v, types) and not isinstance(v, bool)


def check_report(d, rep, n, b):
    """Everything a fully successful run of n todos in batches of b must report
    and leave in the table (which held no todo before)."""
    for name, types in ORIGINAL_FIELDS.items():
        assert name in rep, "report lacks %s: %r" % (name, rep)
        assert is_type(rep[name], types), "%s is %r (%s)" % (name, rep[name], type(rep[name]).__name__)
    assert rep["total_messages"] == n, rep
    assert rep["success_count"] == n, rep
    assert rep["error_count"] == 0, rep
    assert rep["success_rate"] == 100, rep
    assert rep["batch_size"] == b and is_type(rep["batch_size"], (int,)), rep
    assert rep["batches"] == math.ceil(n / b) and is_type(rep["batches"], (int,)), rep
    assert rep["duration_ms"] >= 0, rep
    assert rep["messages_per_second"] > 0, rep
    # the rate comes from the exact elapsed time: n / rate lies in [duration_ms, duration_ms + 1)
    exact_ms = n * 1000.0 / rep["messages_per_second"]
    slack = exact_ms * 0.05 / rep["messages_per_second"] + 1e-6  # rate printed to 0.1
    assert rep["duration_ms"] - slack <= exact_ms <= rep["duration_ms"] + 1 + slack, \
        "messages_per_second %r does not match duration_ms %r for %d messages" % (
            rep["messages_per_second"], rep["duration_ms"], n)

    lat = rep.get("batch_latency_ms")
    assert isinstance(lat, dict), rep
    keys = ("min", "p50", "p95", "p99", "max")
    for k in keys:
        assert is_type(lat.get(k), (int, float)), "batch_latency_ms.%s: %r" % (k, lat)
    assert lat["min"] > 0, lat
    values = [lat[k] for k in keys]
    assert values == sorted(values), "percentiles out of order: %r" % lat
    assert lat["max"] <= rep["duration_ms"] + 1, (lat, rep["duration_ms"])

    assert is_type(rep.get("worker_pid"), (int,)), rep
    assert rep["worker_pid"] in d.worker_pids(), (rep["worker_pid"], d.worker_pids())

    # the table: exactly todos #0..n-1, done for the even ones, timestamps set
    assert rows(d) == n, "%d rows in todos, want %d" % (rows(d), n)
    out = d.pg.psql("SELECT substr(title, %d), done, created_at IS NOT NULL AND updated_at IS NOT NULL"
                    " FROM todos WHERE title LIKE 'Performance Test Todo #%%'" % (len(TITLE) + 1),
                    db=d.db)
    seen = {}
    for line in out.splitlines():
        num, done, stamped = line.split("|")
        assert num.isdigit(), "unexpected title %r" % (TITLE + num)
        assert stamped == "t", "todo #%s without timestamps" % num
        seen[int(num)] = done == "t"
    assert sorted(seen) == list(range(n)), "titles are not #0..#%d (%d distinct)" % (n - 1, len(seen))
    wrong = [i for i, done in seen.items() if done != (i % 2 == 0)]
    assert not wrong, "done is not (i %% 2 == 0) for #%r" % wrong[:10]
    ndone = int(d.pg.psql("SELECT count(*) FROM todos WHERE done", db=d.db))
    assert ndone == math.ceil(n / 2), "%d done, want %d" % (ndone, math.ceil(n / 2))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class Sampler(threading.Thread):
    """Calls fn every `interval` seconds until stopped; keeps (time, result or exception)."""

    def __init__(self, fn, interval):
        super().__init__(daemon=True)
        self.fn, self.interval = fn, interval
        self.samples = []
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            t = time.monotonic()
            try:
                v = self.fn()
            except Exception as e:  # noqa: BLE001 - reported by the test
                v = e
            self.samples.append((t, v))
            self.stop_flag.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def stop(self):
        self.stop_flag.set()
        self.join(10)
        return self.samples


# --------------------------------------------------------------------------- the original commands

@test(cases={"100_by_20": (100, 20, 5), "500_by_50": (500, 50, 10)})
def perftest_original_all_succeed(case):
    n, b, batches = case
    with Todod(workers=2) as d:
        d.start()
        wait_table(d)
        rep = perf_ok(d, n, b)
        check_report(d, rep, n, b)
        assert rep["batches"] == batches
        assert d.stop() == 0


@test
def perftest_batch_size_defaults_to_10():
    with Todod(workers=1) as d:
        d.start()
        wait_table(d)
        rep = perf_ok(d, 35)
        assert rep["batch_size"] == 10, rep
        check_report(d, rep, 35, 10)
        assert rep["batches"] == 4, rep
        assert d.stop() == 0


@test
def perftest_accepts_values_at_configured_limits():
    with Todod(workers=1, **LIMITS) as d:
        d.start()
        wait_table(d)
        rep = perf_ok(d, LIMITS["perf_max_messages"], LIMITS["perf_max_batch"])
        check_report(d, rep, LIMITS["perf_max_messages"], LIMITS["perf_max_batch"])
        rep = perf_ok(d, 1, 1)
        assert rep["success_count"] == 1 and rep["batches"] == 1, rep
        assert d.stop() == 0


# --------------------------------------------------------------------------- validation

def rejected(body, status, *words, headers=None):
    """Send one bad request to a daemon with LIMITS: a JSON error of that status
    naming `words`; no todo written, no test counted."""
    with Todod(workers=1, **LIMITS) as d:
        d.start()
        wait_table(d)
        perf_ok(d, 3, 2)  # some rows, so that "unchanged" means something
        before_rows = rows(d)
        before = perf_metrics(d)
        try:
            r = perf(d, body, headers=headers)
        except (OSError, http.client.HTTPException) as e:
            def deaths():
                return [l for l in d.log().splitlines() if "killed by signal" in l
                        or ("exited with status" in l and "status 0" not in l)]
            wait_until(deaths, 3)
            died = deaths()
            found = d.sanitizer_report().splitlines()[:2]
            raise AssertionError("no answer to %r (%r); worker deaths: %r %r" % (body, e, died, found))
        assert_json_error(r, status, *words)
        time.sleep(0.2)  # an insert wrongly started would land by now
        assert rows(d) == before_rows, "rows %d -> %d after a rejected test" % (before_rows, rows(d))
        assert perf_metrics(d) == before, (before, perf_metrics(d))
        assert d.request("GET", "/health").status == 200
        assert d.stop() == 0


JSON_TYPE = {"Content-Type": "application/json"}


# What is wrong -> (body: a dict or list sent as JSON, a str sent as it is; status;
# words the message must name; headers)
REJECTED = {
    "missing_message_count": ({"batch_size": 10}, 422, ("message_count",), None),
    "empty_object": ({}, 422, ("message_count",), None),
    "message_count_string": ({"message_count": "100", "batch_size": 10}, 422,
                             ("message_count",), None),
    "message_count_float": ('{"message_count": 10.5, "batch_size": 10}', 422,
                            ("message_count",), JSON_TYPE),
    "message_count_integral_float": ('{"message_count": 10.0, "batch_size": 10}', 422,
                                     ("message_count",), JSON_TYPE),
    "message_count_exponent": ('{"message_count": 1e2}', 422, ("message_count",), JSON_TYPE),
    "message_count_zero": ({"message_count": 0, "batch_size": 10}, 422, ("message_count",), None),
    "message_count_negative": ({"message_count": -5, "batch_size": 10}, 422, ("message_count",),
                               None),
    "message_count_over_configured_max": (
        {"message_count": LIMITS["perf_max_messages"] + 1, "batch_size": 10}, 422,
        ("message_count",), None),
    "message_count_beyond_int64": ('{"message_count": 99999999999999999999999999, '
                                   '"batch_size": 10}', 422, ("message_count",), JSON_TYPE),
    "message_count_null": ({"message_count": None, "batch_size": 10}, 422, ("message_count",),
                           None),
    "message_count_boolean": ({"message_count": True, "batch_size": 10}, 422, ("message_count",),
                              None),
    "batch_size_zero": ({"message_count": 10, "batch_size": 0}, 422, ("batch_size",), None),
    "batch_size_negative": ({"message_count": 10, "batch_size": -1}, 422, ("batch_size",), None),
    "batch_size_over_configured_max": (
        {"message_count": 10, "batch_size": LIMITS["perf_max_batch"] + 1}, 422, ("batch_size",),
        None),
    "batch_size_string": ({"message_count": 10, "batch_size": "5"}, 422, ("batch_size",), None),
    "batch_size_float": ('{"message_count": 10, "batch_size": 2.5}', 422, ("batch_size",),
                         JSON_TYPE),
    "batch_size_null": ({"message_count": 10, "batch_size": None}, 422, ("batch_size",), None),
    "batch_size_boolean": ({"message_count": 10, "batch_size": False}, 422, ("batch_size",),
                           None),
    "body_array": ([{"message_count": 10}], 422, ("object",), None),
    "body_number": ("100", 422, ("object",), JSON_TYPE),
    "malformed_json_400": ('{"message_count": 10,', 400, (), JSON_TYPE),
    "empty_body_400": ("", 400, (), JSON_TYPE),
    "missing_content_type_415": (json.dumps({"message_count": 10}), 415, ("Content-Type",), None),
    "text_plain_content_type_415": (json.dumps({"message_count": 10}), 415, ("Content-Type",),
                                    {"Content-Type": "text/plain"}),
}


@test(cases=REJECTED)
def perftest_rejects(case):
    body, status, words, headers = case
    rejected(body, status, *words, headers=headers)


@test
def perftest_database_down_is_503():
    pg = Postgres()
    pg.start()
    with Todod(pg=pg, workers=1) as d:
        d.start()
        pg.stop()
        assert wait_until(lambda: d.request("GET", "/health", timeout=2).status == 503, 3), \
            "/health still %r with the database stopped" % d.request("GET", "/health")
        t = time.monotonic()
        r = perf(d, {"message_count": 100, "batch_size": 10}, timeout=10)
        assert_json_error(r, 503, "database unavailable")  # nothing was sent
        assert time.monotonic() - t < 1.0, "took %.2fs to answer 503" % (time.monotonic() - t)
        assert perf_metrics(d)["tests"] == 0
        assert d.running()


# --------------------------------------------------------------------------- failed batches

@test
def perftest_failed_batch_counts_its_rows_as_errors():
    with Todod(workers=1) as d:
        d.start()
        wait_table(d)
        d.pg.psql("""
            CREATE FUNCTION perf_fail_37() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.title = 'Performance Test Todo #37' THEN
                RAISE EXCEPTION 'forced failure for todo #37';
              END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER perf_fail_37 BEFORE INSERT ON todos
              FOR EACH ROW EXECUTE FUNCTION perf_fail_37();
        """, db=d.db)
        before = perf_metrics(d)
        rep = perf_ok(d, 100, 10)
        assert rep["error_count"] == 10, rep
        assert rep["success_count"] == 90, rep
        assert rep["success_rate"] == 90, rep
        assert rep["batches"] == 10, rep
        assert rep["total_messages"] == 100, rep
        assert rows(d) == 90, "%d rows, want 90" % rows(d)
        missing = d.pg.psql("SELECT count(*) FROM todos WHERE title IN (%s)" % ", ".join(
            "'%s%d'" % (TITLE, i) for i in range(30, 40)), db=d.db)
        assert missing == "0", "rows of the failed batch (#30..#39) were committed: %s" % missing
        after = perf_metrics(d)
        assert after["error"] - before["error"] == 10, (before, after)
        assert after["success"] - before["success"] == 90, (before, after)
        assert after["tests"] - before["tests"] == 1, (before, after)
        assert after["batches"] - before["batches"] == 10, (before, after)
        # the connection recovered: the next test succeeds entirely
        d.pg.psql("DROP TRIGGER perf_fail_37 ON todos", db=d.db)
        rep = perf_ok(d, 20, 10)
        assert rep["success_count"] == 20 and rep["error_count"] == 0, rep
        assert d.stop() == 0


# --------------------------------------------------------------------------- large run

@test(slow=True)
def perftest_million_rows_bounded_memory_and_health_responsive():
    n, b = 1000000, 10000
    with Todod(workers=1) as d:
        d.start()
        wait_table(d)
        assert wait_until(lambda: len(d.worker_pids()) == 1, 5), d.worker_pids()
        (pid,) = d.worker_pids()
        perf_ok(d, 1000, 1000)  # warm up: statement prepared, buffers sized once
        d.pg.psql("TRUNCATE todos", db=d.db)
        rss_before = rss_kb(pid)

        def health_ms():
            t = time.monotonic()
            r = d.request("GET", "/health", timeout=2)
            ms = (time.monotonic() - t) * 1000
            if r.status != 200:
                raise AssertionError("GET /health: %r" % r)
            return ms

        rss = Sampler(lambda: rss_kb(pid), 0.2)
        health = Sampler(health_ms, 0.05)
        rss.start()
        health.start()
        t0 = time.monotonic()
        try:
            rep = perf_ok(d, n, b, timeout=120)
        finally:
            rss_samples = rss.stop()
            health_samples = health.stop()
        elapsed = time.monotonic() - t0

        assert rep["success_count"] == n and rep["error_count"] == 0, rep
        assert rep["batches"] == n // b, rep
        assert rep["worker_pid"] == pid, (rep, pid)
        assert rows(d) == n, "%d rows, want %d" % (rows(d), n)

        problems = []
        failures = [v for _, v in health_samples if isinstance(v, BaseException)]
        if failures:
            problems.append("%d /health probes failed, first: %r" % (len(failures), failures[:3]))
        during = [v for t, v in health_samples if t < t0 + elapsed and not isinstance(v, BaseException)]
        assert len(during) >= 5, "only %d /health probes during the test" % len(during)
        worst = max(during)
        # a loop turn blocked for a whole batch would show as seconds; the
        # sanitizer build runs every turn several times slower
        bound = 500 if SANITIZER else 100
        over = sorted(v for v in during if v >= bound)
        if worst >= bound:
            problems.append("/health took %.1f ms during the test; %d of %d probes >= %d ms: %s" % (
                worst, len(over), len(during), bound, ", ".join("%.0f" % v for v in over[-10:])))

        rss_errors = [v for _, v in rss_samples if isinstance(v, BaseException)]
        assert not rss_errors, rss_errors[:3]
        peak = max([v for _, v in rss_samples] + [rss_kb(pid)])
        growth_mb = (peak - rss_before) / 1024.0
        print("    (%d todos in %.1fs, %.0f/s; /health max %.1f ms over %d probes; "
              "worker RSS %d kB -> peak %d kB, +%.1f MB)" % (
                  n, elapsed, rep["messages_per_second"], worst, len(during), rss_before, peak,
                  growth_mb))
        if SANITIZER:
            print("    (TODOD_SANITIZER is set: RSS growth not checked)")
        elif growth_mb >= 20:
            problems.append("worker RSS grew by %.1f MB (%d -> %d kB)" % (growth_mb, rss_before, peak))
        assert not problems, "; ".join(problems)
        assert d.stop() == 0


# --------------------------------------------------------------------------- metrics

@test
def perftest_metrics_count_tests_todos_batches_across_restart():
    with Todod(workers=2) as d:
        d.start()
        wait_table(d)
        assert wait_until(lambda: len(d.worker_pids()) == 2, 5), d.worker_pids()
        assert perf_metrics(d) == {"tests": 0, "success": 0, "error": 0, "batches": 0}
        reports = []
        lock = threading.Lock()
        sizes = [(1500, 100), (700, 70), (999, 10), (2000, 250)]

        def client(i):
            for k in range(3):
                n, b = sizes[(i + k) % len(sizes)]
                rep = perf_ok(d, n, b)
                with lock:
                    reports.append(rep)

        for _ in range(5):  # bounded: stop once both workers served some
            errors = []
            threads = []
            for i in range(2):
                def run(i=i):
                    try:
                        client(i)
                    except BaseException as e:  # noqa: BLE001
                        errors.append(e)
                threads.append(threading.Thread(target=run))
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert not errors, errors
            if len({r["worker_pid"] for r in reports}) == 2:
                break
        served = {}
        for r in reports:
            served.setdefault(r["worker_pid"], []).append(r)
        assert len(served) == 2, "all %d tests ran on worker(s) %r" % (len(reports), list(served))

        want = {"tests": len(reports), "success": sum(r["success_count"] for r in reports),
                "error": 0, "batches": sum(r["batches"] for r in reports)}
        assert all(r["error_count"] == 0 for r in reports), reports
        assert rows(d) == want["success"], (rows(d), want)
        assert wait_until(lambda: perf_metrics(d) == want, 2), (perf_metrics(d), want)

        def stats_totals():
            t = d.stats()["totals"]
            return {"tests": t["perf_tests"], "success": t["perf_todos_success"],
                    "error": t["perf_todos_error"]}

        want_stats = {k: want[k] for k in ("tests", "success", "error")}
        assert stats_totals() == want_stats, (stats_totals(), want_stats)
        per_worker = {w["pid"]: w["perf_todos"] for w in d.stats()["workers"]}
        for pid, reps in served.items():
            assert per_worker.get(pid) == sum(r["success_count"] for r in reps), \
                "worker %d: /stats perf_todos %r, its reports %d" % (
                    pid, per_worker.get(pid), sum(r["success_count"] for r in reps))

        victim = max(served, key=lambda p: sum(r["success_count"] for r in served[p]))
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: len(d.worker_pids()) == 2 and victim not in d.worker_pids(), 5), \
            "worker %d not replaced: %r" % (victim, d.worker_pids())
        assert wait_until(lambda: d.request("GET", "/health").status == 200, 5)
        assert wait_until(lambda: metric(d.metrics(), "todod_worker_restarts_total") == 1, 3)
        assert perf_metrics(d) == want, "after restart %r, before %r" % (perf_metrics(d), want)
        assert stats_totals() == want_stats, (stats_totals(), want_stats)
        assert d.stop() == 0


# --------------------------------------------------------------------------- during a run

@test
def perftest_client_disconnect_test_still_completes():
    n, b = 300000, 1000
    with Todod(workers=1) as d:
        d.start()
        wait_table(d)
        assert wait_until(lambda: len(d.worker_pids()) == 1, 5), d.worker_pids()
        (pid,) = d.worker_pids()
        body = json.dumps({"message_count": n, "batch_size": b}).encode()
        head = ("POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % (PATH, d.host, d.port, len(body))).encode()
        s = socket.create_connection((d.host, d.port), timeout=5)
        try:
            s.sendall(head + body)
            time.sleep(0.05)
        finally:
            s.close()
        assert rows(d) < n, "the test was already over: pick a larger message_count"

        r = d.request("GET", "/health", timeout=5)
        assert r.status == 200, r
        assert wait_until(lambda: rows(d) == n, 60, interval=0.2), \
            "rows %d of %d after 60 s" % (rows(d), n)
        assert wait_until(lambda: perf_metrics(d)["tests"] == 1, 10), perf_metrics(d)
        m = perf_metrics(d)
        assert m["success"] == n and m["error"] == 0, m
        assert d.worker_pids() == [pid], "worker %d was replaced: %r" % (pid, d.worker_pids())
        assert metric(d.metrics(), "todod_worker_restarts_total") == 0
        # still serving, tests included
        rep = perf_ok(d, 10, 5)
        assert rep["success_count"] == 10 and rep["worker_pid"] == pid, rep
        assert d.request("GET", "/todos").status == 200
        assert d.stop() == 0


@test
def perftest_other_requests_served_during_a_test():
    n, b = 200000, 1000
    with Todod(workers=1) as d:
        d.start()
        wait_table(d)
        result = {}

        def run():
            try:
                result["report"] = perf_ok(d, n, b, timeout=120)
            except BaseException as e:  # noqa: BLE001
                result["error"] = e
            result["done"] = time.monotonic()

        th = threading.Thread(target=run)
        th.start()
        time.sleep(0.1)
        answers = []
        try:
            while th.is_alive() and len(answers) < 20:
                t = time.monotonic()
                r = d.request("GET", "/todos?limit=5", timeout=10)
                answers.append((r, t, time.monotonic()))
                time.sleep(0.02)
        finally:
            th.join(120)
        assert "error" not in result, result["error"]
        assert result["report"]["success_count"] == n, result["report"]
        for r, _, _ in answers:
            assert r.status == 200, r
            assert isinstance(r.json(), (dict, list)), r
        during = [(r, t, e) for r, t, e in answers if e < result["done"]]
        assert during, "no GET /todos answered while the test ran (%d sent)" % len(answers)
        slowest = max(e - t for _, t, e in during)
        print("    (%d GET /todos answered during the test, slowest %.0f ms)"
              % (len(during), slowest * 1000))
        assert slowest < 2.0, "GET /todos took %.2fs during the test" % slowest
        assert d.stop() == 0
