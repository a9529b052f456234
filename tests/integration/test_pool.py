"""db_connections: a worker's queries go to the connection with the fewest in
flight, so one stalled on a row lock does not hold up the others; with a single
connection they queue behind it (that is what pipelining one connection means)."""

import threading
import time

from harness import Todod, test, wait_until


def create(d, title):
    r = d.request("POST", "/todos", {"title": title})
    assert r.status == 201, r
    return r.json()["id"]


def wait_connections(d, n):
    assert wait_until(lambda: d.pg.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'todod'", db=d.db) == str(n), 5), "expected %d connections" % n


def stall_update_behind_row_lock(d, todo):
    """Holds todo's row lock from another session and starts a PUT on it that
    waits; returns (locker process, thread, result dict)."""
    # psql runs one statement at a time: pg_sleep is active once the row is locked.
    locker = d.pg.psql_bg("BEGIN; SELECT 1 FROM todos WHERE id = '%s' FOR UPDATE; "
                          "SELECT pg_sleep(2); COMMIT;" % todo, db=d.db)
    assert wait_until(lambda: d.pg.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' "
        "AND state = 'active' AND pid <> pg_backend_pid()", db=d.db) == "1", 5), "no lock holder"
    result = {}

    def put():
        result["response"] = d.request("PUT", "/todos/" + todo, {"done": True}, timeout=10)

    t = threading.Thread(target=put)
    t.start()
    assert wait_until(lambda: d.pg.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND application_name = 'todod'", db=d.db) == "1", 5), "the PUT is not waiting"
    return locker, t, result


@test
def with_several_connections_a_query_stalled_on_a_lock_does_not_hold_up_others():
    with Todod(workers=1, db_connections=3) as d:
        d.start()
        wait_connections(d, 3)
        locked, other = create(d, "locked"), create(d, "free")
        locker, t, result = stall_update_behind_row_lock(d, locked)
        t0 = time.monotonic()
        r = d.request("GET", "/todos/" + other)
        took = time.monotonic() - t0
        assert r.status == 200 and r.json()["id"] == other, r
        assert took < 0.5, "GET waited %.2fs behind the stalled PUT" % took
        t.join(10)
        locker.wait(10)
        assert result["response"].status == 200 and result["response"].json()["done"] is True


@test
def with_one_connection_queries_queue_behind_a_stalled_one():
    with Todod(workers=1, db_connections=1) as d:
        d.start()
        wait_connections(d, 1)
        locked, other = create(d, "locked"), create(d, "free")
        locker, t, result = stall_update_behind_row_lock(d, locked)
        t0 = time.monotonic()
        r = d.request("GET", "/todos/" + other, timeout=10)
        took = time.monotonic() - t0
        assert r.status == 200 and r.json()["id"] == other, r
        assert took >= 0.5, "GET answered in %.2fs: not behind the stalled PUT?" % took
        t.join(10)
        locker.wait(10)
        assert result["response"].status == 200
