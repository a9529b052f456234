"""The performance test spread over workers and hosts, paced, watched live
(API.md "Spread over workers and hosts, paced, watched live"; CLUSTER.md "Load
testing the whole cluster"): exact division of the rows, NDJSON progress while
the test runs, pacing, several instances, a worker or a node lost mid-test, the
perf_nodes allow-list."""

import http.client
import json
import os
import re
import signal
import threading
import time

from lib.env import free_port
from lib.marks import skip_if_sanitizer, test
from lib.pg import get_pg
from lib.todod import Todod
from lib.checks import assert_json_error, wait_until
from lib.metrics import metric

PATH = "/todos/performance-test"
NDJSON = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}


def stream(d, body, timeout=120):
    """POST with Accept: application/x-ndjson; returns [(seconds since sent, line)]."""
    conn = http.client.HTTPConnection(d.host, d.port, timeout=timeout)
    t0 = time.monotonic()
    conn.request("POST", PATH, body=json.dumps(body), headers=NDJSON)
    r = conn.getresponse()
    assert r.status == 200, (r.status, r.read())
    assert r.getheader("Content-Type", "").startswith("application/x-ndjson"), r.getheaders()
    assert r.getheader("Transfer-Encoding") == "chunked", r.getheaders()
    lines = []
    while True:
        line = r.readline()
        if not line:
            break
        lines.append((time.monotonic() - t0, json.loads(line)))
    conn.close()
    return lines


def titles_exactly_once(d, n, db=None):
    """Every title #0 .. #n-1 exactly once in the table."""
    got = d.pg.psql("SELECT count(*), count(DISTINCT title), "
                    "min(substr(title, 24)::bigint), max(substr(title, 24)::bigint) "
                    "FROM todos WHERE title LIKE 'Performance Test Todo #%'", db=db or d.db)
    assert got == "%d|%d|0|%d" % (n, n, n - 1), got


def check_report(rep, n):
    assert rep["success_count"] + rep["error_count"] + rep["unknown_count"] == n, rep
    assert rep["total_messages"] == n
    assert len(rep["run_id"]) == 36


def spread_in_background(d, body, timeout):
    """Starts a spread test in a thread; once its coordinator has logged it,
    returns (the thread, a dict that gets its answer as "r", the coordinator's
    pid, the other worker's pid)."""
    result = {}
    t = threading.Thread(target=lambda: result.update(r=d.request("POST", PATH, body,
                                                                  timeout=timeout)))
    t.start()
    pattern = re.compile(r"worker\[(\d+)\] info: performance test \S+ %d todos"
                         % body["message_count"])
    assert wait_until(lambda: pattern.search(d.log()), 10), d.log_tail()
    coordinator = int(pattern.search(d.log()).group(1))
    (other,) = [p for p in d.worker_pids() if p != coordinator]
    return t, result, coordinator, other


def todo_rows(pg, db):
    """How many rows the todos table holds now."""
    return int(pg.psql("SELECT count(*) FROM todos", db=db))


def check_lost_worker(d, rep, n, victim):
    """The report of an n-todo test whose worker `victim` died mid-share: that
    share abandoned, and the table holds the confirmed rows and at most the
    unknown ones besides (batches in flight may have committed unconfirmed)."""
    check_report(rep, n)
    dead = [w for w in rep["per_worker"] if w["worker_pid"] == victim]
    assert dead and dead[0].get("abandoned") is True, rep["per_worker"]
    rows = todo_rows(d.pg, d.db)
    assert rep["success_count"] <= rows <= rep["success_count"] + rep["unknown_count"], \
        (rep, rows)


@test
def workers_all_splits_the_rows_exactly_and_streams_progress_while_it_runs():
    n = 400001
    with Todod(workers=2) as d:
        d.start()
        lines = stream(d, {"message_count": n, "batch_size": 1000, "workers": "all",
                           "progress_interval_ms": 100})
        *progress, (t_end, rep) = lines
        assert rep["type"] == "report", rep
        check_report(rep, n)
        assert rep["success_count"] == n and rep["workers"] == 2 and rep["nodes"] == 1, rep
        pids = {w["worker_pid"] for w in rep["per_worker"]}
        assert pids == set(d.worker_pids()), (pids, d.worker_pids())
        firsts = sorted((w["first"], w["success_count"]) for w in rep["per_worker"])
        assert firsts == [(0, n // 2), (n // 2, n - n // 2)], firsts
        assert progress, "no progress line"
        assert all(o["type"] == "progress" and o["run_id"] == rep["run_id"] for _, o in progress)
        # lines arrived while the test ran, not all at the end
        assert progress[0][0] < t_end - 0.15, (progress[0][0], t_end)
        counts = [o["success_count"] for _, o in progress]
        assert counts == sorted(counts) and counts[-1] <= n, counts
        assert "p50" in progress[-1][1]["batch_latency_ms"]
        titles_exactly_once(d, n)
        assert d.request("GET", "/todos").json()["pagination"]["total"] == n


@test
def without_the_accept_header_the_answer_is_the_plain_report():
    with Todod(workers=2) as d:
        d.start()
        r = d.request("POST", PATH, {"message_count": 1000, "batch_size": 100, "workers": 2})
        assert r.status == 200 and r.headers["content-type"].startswith("application/json"), r
        rep = r.json()
        assert "type" not in rep and rep["success_count"] == 1000 and rep["workers"] == 2, rep
        titles_exactly_once(d, 1000)


@test
def a_paced_test_follows_its_schedule():
    n, rate = 6000, 4000.0
    with Todod(workers=2) as d:
        d.start()
        t0 = time.monotonic()
        r = d.request("POST", PATH, {"message_count": n, "batch_size": 100, "workers": "all",
                                     "rate": rate}, timeout=30)
        took = time.monotonic() - t0
        rep = r.json()
        assert rep["success_count"] == n, rep
        expected = n / rate
        assert expected * 0.95 < took < expected + 0.5, "took %.2fs for a %.2fs schedule" % (
            took, expected)
        assert set(rep["schedule_lag_ms"]) == {"p50", "p99", "max"}, rep
        assert rep["schedule_lag_ms"]["p50"] < 20, rep["schedule_lag_ms"]
        titles_exactly_once(d, n)


@test
def a_worker_killed_mid_share_is_reported_and_its_unconfirmed_rows_are_unknown():
    skip_if_sanitizer()
    n = 1000000
    with Todod(workers=2) as d:
        d.start()
        t, result, coordinator, victim = spread_in_background(
            d, {"message_count": n, "batch_size": 1000, "workers": "all"}, 120)
        assert wait_until(lambda: todo_rows(d.pg, d.db) > 50000, 30)
        os.kill(victim, signal.SIGKILL)
        t.join(120)
        rep = result["r"].json()
        check_lost_worker(d, rep, n, victim)
        assert 0 <= rep["unknown_count"] <= 4 * 1000, rep
        assert rep["error_count"] > 0, rep  # rows the dead worker never sent
        live = [w for w in rep["per_worker"] if w["worker_pid"] == coordinator]
        assert live and live[0]["success_count"] == n // 2, rep["per_worker"]


@test
def the_coordinator_answers_when_the_last_share_ends_not_at_its_next_poll():
    # Another worker's share ending wakes the coordinator (SIGUSR1); its own
    # look at the board is only a safety net, once a second. A tiny test ends in
    # milliseconds; in about half of them the coordinator's own share ends
    # first, and one that waited for its poll would take a whole second.
    with Todod(workers=2) as d:
        d.start()
        took = []
        for _ in range(10):
            t0 = time.monotonic()
            rep = d.request("POST", PATH, {"message_count": 2, "batch_size": 1,
                                           "workers": "all"}).json()
            took.append(time.monotonic() - t0)
            assert rep["success_count"] == 2 and rep["workers"] == 2, rep
        assert sum(took) < 1.0, "10 tests took %.3f s: %s" % (sum(took), took)
        rows = todo_rows(d.pg, d.db)
        assert rows == 20, rows


@test
def a_stalled_worker_that_dies_ends_the_test_at_once():
    # The other share's worker stops (SIGSTOP) mid-test; the coordinator's own
    # share ends; then the stalled worker is killed: the master, reaping it,
    # abandons its share and wakes the coordinator, which answers at once.
    skip_if_sanitizer()
    n = 20000
    with Todod(workers=2) as d:
        d.start()
        t, result, coordinator, victim = spread_in_background(
            d, {"message_count": n, "batch_size": 100, "workers": "all", "rate": 4000}, 60)
        assert wait_until(lambda: todo_rows(d.pg, d.db) > 2000, 10)
        os.kill(victim, signal.SIGSTOP)
        done = re.compile(r"worker\[%d\] info: performance test \S+ share of %d todos done"
                          % (coordinator, n // 2))
        assert wait_until(lambda: done.search(d.log()), 20), d.log_tail()
        time.sleep(0.3)
        assert t.is_alive(), "answered while a share was still running"
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        t.join(30)
        took = time.monotonic() - t0
        rep = result["r"].json()
        assert took < 0.5, "answered %.3f s after the worker died" % took
        check_lost_worker(d, rep, n, victim)
        assert rep["success_count"] >= n // 2 and rep["error_count"] > 0, rep


@test
def several_instances_share_one_test_over_their_perf_nodes():
    skip_if_sanitizer()
    n = 300002
    pg = get_pg()
    db = pg.create_database()
    b = Todod(pg=pg, db=db, workers=2, listen="127.0.0.3:%d" % free_port("127.0.0.3"))
    c = Todod(pg=pg, db=db, workers=2, listen="127.0.0.4:%d" % free_port("127.0.0.4"))
    a = Todod(pg=pg, db=db, workers=2, listen="127.0.0.2:%d" % free_port("127.0.0.2"),
              perf_nodes="%s, %s/" % (b.base_url, c.base_url))
    with b, c, a:
        for x in (b, c, a):
            x.start()
        lines = stream(a, {"message_count": n, "batch_size": 1000, "workers": "all", "nodes": "all",
                           "progress_interval_ms": 200})
        rep = lines[-1][1]
        check_report(rep, n)
        assert rep["success_count"] == n and rep["nodes"] == 3 and rep["workers"] == 6, rep
        assert [p["node"] for p in rep["per_node"]] == ["local", b.base_url, c.base_url], \
            rep["per_node"]
        assert all(p["success_count"] == n // 3 or p["success_count"] == n // 3 + 1
                   for p in rep["per_node"]), rep["per_node"]
        assert len(rep["per_worker"]) == 6
        assert len(lines) >= 2, "no progress line"
        titles_exactly_once(a, n, db=db)
        # each instance counted its own share's rows, and only the coordinator the test
        for x in (a, b, c):
            assert metric(x.metrics(), "todod_perf_todos_total", {"result": "success"}) in (
                n // 3, n // 3 + 1), x.base_url
        assert metric(a.metrics(), "todod_perf_tests_total") == 1
        assert metric(b.metrics(), "todod_perf_tests_total") == 0


@test
def a_node_down_at_the_start_or_killed_mid_test_is_reported_and_counts_stay_exact():
    skip_if_sanitizer()
    n = 1500000
    pg = get_pg()
    db = pg.create_database()
    down = "http://127.0.0.5:%d" % free_port("127.0.0.5")
    b = Todod(pg=pg, db=db, workers=1, listen="127.0.0.3:%d" % free_port("127.0.0.3"),
              perf_max_messages=n)
    a = Todod(pg=pg, db=db, workers=1, listen="127.0.0.2:%d" % free_port("127.0.0.2"),
              perf_nodes="%s,%s" % (b.base_url, down), perf_max_messages=n)
    with b, a:
        b.start()
        a.start()
        result = {}
        t = threading.Thread(target=lambda: result.update(lines=stream(
            a, {"message_count": n, "batch_size": 1000, "nodes": "all",
                "progress_interval_ms": 200})))
        t.start()
        assert wait_until(lambda: todo_rows(pg, db) > 60000, 30)
        b.kill()
        t.join(120)
        rep = result["lines"][-1][1]
        assert rep["type"] == "report", rep
        check_report(rep, n)
        rows = todo_rows(pg, db)
        assert rep["success_count"] <= rows, (rep, rows)
        # b's batches in flight when it died may have committed unconfirmed
        assert rows - rep["success_count"] <= rep["unknown_count"], (rep, rows)
        nodes = {p["node"]: p for p in rep["per_node"]}
        assert "error" not in nodes["local"] and nodes["local"]["success_count"] == n // 3
        assert nodes[down]["error"] and nodes[down]["success_count"] == 0, nodes[down]
        assert nodes[down]["error_count"] == n // 3, nodes[down]  # never started: not committed
        assert nodes[b.base_url]["error"], nodes[b.base_url]
        assert nodes[b.base_url]["unknown_count"] > 0, nodes[b.base_url]


@test
def nodes_come_only_from_the_configuration():
    with Todod(workers=1) as d:
        d.start()
        assert_json_error(d.request("POST", PATH, {"message_count": 10, "nodes": "all"}), 422,
                          "no perf_nodes")
    with Todod(workers=1, perf_nodes="http://127.0.0.9:1") as d:
        d.start()
        for bad in ("http://127.0.0.1:9", ["http://127.0.0.1:9"], True, 2):
            assert_json_error(d.request("POST", PATH, {"message_count": 10, "nodes": bad}), 422,
                              "nodes must be")
        assert_json_error(d.request("POST", PATH, {"message_count": 10, "workers": 5}), 422,
                          "workers must be")
        assert_json_error(d.request("POST", PATH, {"message_count": 10, "rate": 0}), 422, "rate")
        assert_json_error(d.request("POST", PATH, {"message_count": 10,
                                                   "progress_interval_ms": 50}), 422,
                          "progress_interval_ms")
        assert todo_rows(d.pg, d.db) == 0


@test
def perf_tests_running_is_a_gauge_and_the_counters_advance_during_a_test():
    n = 600000
    with Todod(workers=2) as d:
        d.start()
        result = {}
        t = threading.Thread(target=lambda: result.update(r=d.request(
            "POST", PATH, {"message_count": n, "batch_size": 1000, "workers": "all"}, timeout=60)))
        t.start()
        assert wait_until(lambda: metric(d.metrics(), "todod_perf_tests_running") == 2, 10)
        assert wait_until(lambda: metric(d.metrics(), "todod_perf_todos_total",
                                         {"result": "success"}) > 0, 10)
        mid = metric(d.metrics(), "todod_perf_todos_total", {"result": "success"})
        t.join(60)
        assert result["r"].status == 200
        assert 0 < mid < n, mid
        assert metric(d.metrics(), "todod_perf_tests_running") == 0
        assert metric(d.metrics(), "todod_perf_todos_total", {"result": "success"}) == n


@test
def a_reload_in_the_middle_of_a_paced_spread_test_fails_no_row():
    # The retired workers run their shares (and the test they coordinate) to
    # the end: the old generation leaves once its work is done, not at once.
    n, rate = 20000, 8000
    with Todod(workers=2) as d:
        d.start()
        t, result, coordinator, other = spread_in_background(
            d, {"message_count": n, "batch_size": 100, "workers": "all", "rate": rate}, 60)
        time.sleep(1.2)
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: len(set(d.worker_pids()) - {coordinator, other}) == 2, 10), \
            d.log_tail()
        t.join(60)
        rep = result["r"].json()
        check_report(rep, n)
        assert rep["error_count"] == 0 and rep["unknown_count"] == 0, rep
        assert rep["success_count"] == n == todo_rows(d.pg, d.db), rep
        assert {w["worker_pid"] for w in rep["per_worker"]} == {coordinator, other}, rep
        assert not any(w.get("abandoned") for w in rep["per_worker"]), rep["per_worker"]
        # and the retired workers are gone once it is over
        assert wait_until(lambda: not {coordinator, other} & set(d.worker_pids()), 10), \
            d.worker_pids()
        assert "killed by signal" not in d.log(), d.log_tail()


@test
def rate_is_at_least_one_todo_per_second_and_a_nodes_part_of_it_may_be_less():
    pg = get_pg()
    db = pg.create_database()
    b = Todod(pg=pg, db=db, workers=1, listen="127.0.0.3:%d" % free_port("127.0.0.3"),
              perf_max_messages=1000)
    a = Todod(pg=pg, db=db, workers=1, listen="127.0.0.2:%d" % free_port("127.0.0.2"),
              perf_nodes=b.base_url)
    with b, a:
        b.start()
        a.start()
        for bad in (0.999, 0.000001, 0, -1, "1"):
            assert_json_error(a.request("POST", PATH, {"message_count": 2, "rate": bad}), 422,
                              "rate must be a number of todos per second from 1 to")
        assert todo_rows(pg, db) == 0
        rep = a.request("POST", PATH, {"message_count": 2, "rate": 1}).json()
        assert rep["success_count"] == 2, rep
        # 2 todos at 1/s over two instances: the node's share runs at 0.5/s
        rep = a.request("POST", PATH, {"message_count": 2, "rate": 1, "nodes": "all"}).json()
        assert rep["success_count"] == 2 and rep["per_node"][1]["success_count"] == 1, rep
        # a share may last as long as a whole test (perf_max_messages s), no longer
        share = {"run_id": "4bf92f35-77b3-4da6-a3ce-929d0e0e4736", "offset": 0}
        assert_json_error(b.request("POST", PATH, {"message_count": 10, "rate": 0.009,
                                                   "share": share}), 422, "rate must be")
        assert todo_rows(pg, db) == 4
