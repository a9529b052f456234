"""The connection policy (DAEMON.md "The schema and the database connections";
todod(8), DATABASE): reads are pipelined on db_connections read
connections; writes go to write connections opened on demand up to
db_write_connections, each carrying one transaction at a time, so a write stalled
on a lock holds up neither reads nor other writes, and the number of PostgreSQL
connections a worker opens is bounded."""

import threading
import time

from lib.marks import test
from lib.todod import Todod
from lib.load import run_threads
from lib.checks import wait_until


def create(d, title):
    r = d.request("POST", "/todos", {"title": title})
    assert r.status == 201, r
    return r.json()["id"]


def todod_connections(d):
    return int(d.pg.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'todod' AND datname = current_database()", db=d.db))


def wait_connections(d, n):
    assert wait_until(lambda: todod_connections(d) == n, 5), \
        "expected %d connections, see %d" % (n, todod_connections(d))


class RowLock:
    """Holds a todo's row lock from another session for `seconds`."""

    def __init__(self, d, todo, seconds=2):
        self.d = d
        # psql runs one statement at a time: pg_sleep is active once the row is locked.
        self.proc = d.pg.psql_bg("BEGIN; SELECT 1 FROM todos WHERE id = '%s' FOR UPDATE; "
                                 "SELECT pg_sleep(%g); COMMIT;" % (todo, seconds), db=d.db)

    def wait_held(self, holders=1):
        assert self.d.pg.wait_sleeping(self.d.db, holders), \
            "no lock holder"

    def wait(self):
        self.proc.wait(15)


def stalled_put(d, todo, result):
    """Starts a PUT on todo (whose row is locked) in a thread; returns the thread."""
    def put():
        result["response"] = d.request("PUT", "/todos/" + todo, {"done": True}, timeout=15)

    t = threading.Thread(target=put)
    t.start()
    return t


def wait_lock_waiters(d, n):
    assert wait_until(lambda: d.pg.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND application_name = 'todod' AND datname = current_database()", db=d.db) == str(n), 5), "%d PUTs are not waiting" % n


@test
def a_worker_opens_its_read_connections_and_one_write_connection():
    with Todod(workers=1, db_connections=2, db_write_connections=3) as d:
        d.start()
        wait_connections(d, 3)


@test
def a_lock_stalled_write_holds_up_no_read_of_the_same_worker():
    with Todod(workers=1, db_connections=1, request_timeout=10) as d:
        d.start()
        locked, other = create(d, "locked"), create(d, "free")
        lock = RowLock(d, locked)
        lock.wait_held()
        result = {}
        t = stalled_put(d, locked, result)
        wait_lock_waiters(d, 1)
        t0 = time.monotonic()
        r = d.request("GET", "/todos/" + other)
        took = time.monotonic() - t0
        assert r.status == 200 and r.json()["id"] == other, r
        assert took < 0.5, "GET waited %.2fs behind the stalled PUT" % took
        lists = d.request("GET", "/todos")
        assert lists.status == 200 and lists.json()["pagination"]["total"] == 2, lists
        t.join(15)
        lock.wait()
        assert result["response"].status == 200 and result["response"].json()["done"] is True


@test
def a_lock_stalled_write_holds_up_no_other_write_and_connections_stay_bounded():
    with Todod(workers=1, db_connections=1, db_write_connections=2, request_timeout=10) as d:
        d.start()
        ids = [create(d, "row %d" % i) for i in range(3)]
        locks = [RowLock(d, ids[0], 2), RowLock(d, ids[1], 2)]
        locks[1].wait_held(2)
        results = [{}, {}]
        threads = [stalled_put(d, ids[0], results[0])]
        wait_lock_waiters(d, 1)
        # One write connection is stalled: a new write goes on a second one at once.
        t0 = time.monotonic()
        r = d.request("POST", "/todos", {"title": "beside the stalled PUT"})
        took = time.monotonic() - t0
        assert r.status == 201, r
        assert took < 0.5, "POST waited %.2fs behind the stalled PUT" % took
        # Both write connections stalled: the next write waits for one (bounded),
        # and still commits once the locks go.
        threads.append(stalled_put(d, ids[1], results[1]))
        wait_lock_waiters(d, 2)
        assert todod_connections(d) == 3, "1 read + 2 write connections expected, see %d" \
            % todod_connections(d)
        r = d.request("POST", "/todos", {"title": "after the locks"}, timeout=15)
        assert r.status == 201, r
        assert todod_connections(d) <= 3
        for t in threads:
            t.join(15)
        for lock in locks:
            lock.wait()
        assert all(res["response"].status == 200 for res in results), results
        assert d.pg.psql("SELECT count(*) FROM todos", db=d.db) == "5"


@test
def a_write_load_does_not_starve_reads():
    with Todod(workers=1, db_connections=1, db_write_connections=2) as d:
        d.start()
        todo = create(d, "read me")
        stop = threading.Event()
        writes = {"ok": 0, "other": []}

        def writer(i):
            with d.Client(timeout=10) as c:
                while not stop.is_set():
                    r = c.request("POST", "/todos", {"title": "load %d" % i})
                    if r.status == 201:
                        writes["ok"] += 1
                    else:
                        writes["other"].append(r)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            worst = 0.0
            with d.Client() as c:
                for _ in range(50):
                    t0 = time.monotonic()
                    r = c.request("GET", "/todos/" + todo)
                    worst = max(worst, time.monotonic() - t0)
                    assert r.status == 200, r
        finally:
            stop.set()
            for t in threads:
                t.join(15)
        assert not writes["other"], writes["other"][:3]
        assert writes["ok"] > 0
        assert worst < 1.0, "a read took %.2fs under the write load" % worst
        assert d.pg.psql("SELECT count(*) FROM todos", db=d.db) == str(writes["ok"] + 1)


@test
def concurrent_writes_of_one_loop_turn_commit_together_and_each_is_answered():
    with Todod(workers=1, db_write_connections=1) as d:
        d.start()
        results = run_threads(32, lambda i: d.request("POST", "/todos", {"title": "t%d" % i}))
        assert all(r.status == 201 for r in results), [r for r in results if r.status != 201][:3]
        ids = {r.json()["id"] for r in results}
        assert len(ids) == 32
        assert d.pg.psql("SELECT count(*) FROM todos", db=d.db) == "32"
