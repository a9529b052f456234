"""Stops, reloads and a killed master, true to the end (DAEMON.md "Signals and
lifecycle"): a request still waiting on the database at shutdown_timeout gets
an answer that the table agrees with and the worker exits cleanly; a
performance test cut by shutdown_timeout reports its counts; workers do not
outlive a master killed with SIGKILL, also as another user; a reload that
fails changes nothing, not even the listening socket, and never leaves
systemd "reloading"."""

import os
import pwd
import signal
import socket
import threading
import time

from lib.env import free_port
from lib.marks import skip, test
from lib.client import Client
from lib.notify import NotifySocket
from lib.todod import Todod
from lib.checks import wait_until

AMBIGUOUS = "database connection lost; the write may have been applied"
PATH = "/todos/performance-test"


def backends_waiting_on_a_lock(d):
    return d.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'todod' "
                     "AND wait_event_type = 'Lock'", db=d.db) != "0"


def in_background(fn):
    result = {}

    def run():
        try:
            result["r"] = fn()
        except Exception as e:  # noqa: BLE001 - the test reports it
            result["error"] = e
    t = threading.Thread(target=run)
    t.start()
    return t, result


def no_worker_crashed(d):
    log = d.log()
    assert "killed by signal" not in log and "keeps dying" not in log, d.log_tail()


@test
def a_write_waiting_on_the_database_at_shutdown_timeout_is_answered_and_the_table_agrees():
    with Todod(workers=1, shutdown_timeout=1, request_timeout=10) as d:
        d.start()
        todo = d.request("POST", "/todos", {"title": "locked"}).json()
        holder = d.pg.psql_bg("BEGIN; SELECT 1 FROM todos WHERE id = '%s' FOR UPDATE; "
                              "SELECT pg_sleep(3); COMMIT;" % todo["id"], db=d.db)
        try:
            assert d.pg.wait_sleeping(d.db)
            t, result = in_background(lambda: d.request(
                "PUT", "/todos/" + todo["id"], {"title": "changed", "done": True}, timeout=15))
            assert wait_until(lambda: backends_waiting_on_a_lock(d), 5), "the PUT is not waiting"
            d.signal(signal.SIGTERM)
            t.join(15)
            assert "error" not in result, "no answer: %r" % result.get("error")
            r = result["r"]
            assert r.status == 503 and r.json() == {"error": AMBIGUOUS}, r
            assert d.wait(10) == 0
            no_worker_crashed(d)
        finally:
            holder.wait(10)
        # The PUT was sent whole: it commits once the lock goes. "May have been
        # applied" is what the client heard; the row is the PUT's or the old one.
        time.sleep(0.5)
        row = d.pg.psql("SELECT title, done FROM todos WHERE id = '%s'" % todo["id"], db=d.db)
        assert row in ("changed|t", "locked|f"), row
        print("    (the PUT %s)" % ("was applied" if row == "changed|t" else "was not applied"))


@test
def a_performance_test_cut_by_shutdown_timeout_reports_its_counts():
    n = 1000
    with Todod(workers=1, shutdown_timeout=1) as d:
        d.start()
        # the performance-test connection is up (its setup would wait on the lock)
        assert d.request("POST", PATH, {"message_count": 1}).json()["success_count"] == 1
        # SHARE mode blocks inserts, not reads: every batch waits
        locker = d.pg.lock_bg(d.db, 3, mode="SHARE")
        try:
            t, result = in_background(lambda: d.request(
                "POST", PATH, {"message_count": n, "batch_size": 100}, timeout=15))
            assert wait_until(lambda: backends_waiting_on_a_lock(d), 5), "no batch waiting"
            d.signal(signal.SIGTERM)
            t.join(15)
            assert "error" not in result, "no answer: %r" % result.get("error")
            r = result["r"]
            assert r.status == 200, r
            rep = r.json()
            assert rep["success_count"] + rep["error_count"] + rep["unknown_count"] == n, rep
            assert rep["success_count"] == 0 and rep["unknown_count"] > 0, rep
            assert d.wait(10) == 0
            no_worker_crashed(d)
        finally:
            locker.wait(10)
        # batches that were sent may commit once the lock goes: unknown, not errors
        time.sleep(0.5)
        rows = int(d.pg.psql("SELECT count(*) FROM todos", db=d.db)) - 1
        assert rep["success_count"] <= rows <= rep["success_count"] + rep["unknown_count"], \
            (rep, rows)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@test
def workers_do_not_outlive_a_killed_master_when_they_run_as_another_user():
    if os.geteuid() != 0:
        skip("needs root")
    pwd.getpwnam("nobody")
    with Todod(user="nobody", workers=2) as d:
        d.start()
        workers = d.worker_pids()
        assert len(workers) == 2, workers
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait(5)
        assert wait_until(lambda: not any(alive(p) for p in workers), 5), \
            "workers still running after their master died: %r" % [p for p in workers if alive(p)]


@test
def a_reload_that_fails_changes_nothing_not_even_the_listening_socket():
    if os.geteuid() != 0:
        skip("needs root (the user is checked only then)")
    with NotifySocket() as ns, Todod(workers=1) as d:
        d.start(notify_socket=ns)
        assert ns.wait_for("READY=1", 5), ns.messages()
        old = (d.host, d.port)
        new = ("127.0.0.7", free_port("127.0.0.7"))
        n = len(ns.messages())
        d.write_conf(listen="%s:%d" % new, user="no-such-user-here")
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: "reload failed" in d.log(), 5), d.log_tail()
        time.sleep(0.3)
        msgs = ns.messages()[n:]
        # systemd is never left "reloading": a RELOADING=1 would need its READY=1
        reloading = [i for i, m in enumerate(msgs) if "RELOADING=1" in m]
        assert not reloading or any("READY=1" in m for m in msgs[reloading[-1] + 1:]), msgs

        def refused():
            try:
                socket.create_connection(new, timeout=1).close()
                return False
            except ConnectionRefusedError:
                return True
        assert refused(), "the failed reload took the new address"
        # a worker started after the failed reload serves the old address
        (worker,) = d.worker_pids()
        os.kill(worker, signal.SIGKILL)
        assert wait_until(lambda: d.worker_pids() and d.worker_pids() != [worker], 5)
        with Client(*old, timeout=2) as c:
            assert wait_until(lambda: c.request("GET", "/health").status == 200, 5)
        assert refused(), "the new address is served after all"
