"""The database failing under todod (shared spec API.md "503", DAEMON.md "the
database goes away"): down at start, and going down in the middle of traffic and
coming back. Each test has its own PostgreSQL, which it stops and starts."""

import socket
import time

from lib.marks import test
from lib.pg import Postgres
from lib.todod import Todod
from lib.load import WriteLoad
from lib.checks import assert_json_error, wait_until
from lib.metrics import metric


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def all_health(d, status, n=6):
    """n GET /health in a row (new connections, so both workers are asked) all
    answer `status`."""
    return all(d.request("GET", "/health", timeout=2).status == status for _ in range(n))


@test
def database_down_at_start_gives_503_then_recovers():
    pg = Postgres()
    pg.start()
    db = pg.create_database()
    pg.stop()
    with Todod(pg=pg, db=db, workers=2) as d:
        d.start(wait="http")
        assert d.running()
        assert_json_error(d.request("GET", "/health"), 503, "database")
        for method, path, body in (("POST", "/todos", {"title": "x"}), ("GET", "/todos", None)):
            r, dt = timed(lambda: d.request(method, path, body=body, timeout=5))
            assert_json_error(r, 503, "database")
            assert dt < 1.0, "%s %s took %.2fs to answer 503" % (method, path, dt)

        pg.start()
        t0 = time.monotonic()
        assert wait_until(lambda: all_health(d, 200), 5.0, interval=0.05), \
            "/health not 200 within 5 s of the database starting: %r" % d.request("GET", "/health")
        up = time.monotonic() - t0
        r = d.request("POST", "/todos", body={"title": "after the outage"})
        assert r.status == 201, r
        assert r.json()["title"] == "after the outage"
        assert pg.psql("SELECT count(*) FROM todos", db=db) == "1"
        r = d.request("GET", "/todos")
        assert r.status == 200 and r.json()["pagination"]["total"] == 1, r
        print("    (healthy %.2fs after the database started)" % up)
        assert d.stop() == 0


@test
def database_restart_under_load_gives_503_then_recovers():
    request_timeout = 2
    pg = Postgres()
    pg.start()
    with Todod(pg=pg, workers=2, request_timeout=request_timeout) as d:
        d.start()
        assert wait_until(lambda: all_health(d, 200), 5), "workers not all connected"
        reconnects_before = metric(d.metrics(), "todod_db_reconnects_total")
        with WriteLoad(d, nthreads=2, timeout=request_timeout + 5) as load:
            assert wait_until(lambda: load.seen(201) and load.seen(200), 5), load.answers[-5:]
            t_down = time.monotonic()
            pg.stop()
            t_stopped = time.monotonic()
            assert wait_until(lambda: load.seen(503, since=t_down), 3), \
                "no 503 after the database stopped: %r" % load.answers[-5:]
            time.sleep(0.5)  # traffic while the database is down
            t_starting = time.monotonic()  # it may accept (and todod serve) before start() returns
            pg.start()
            t_up = time.monotonic()
            recovered = wait_until(lambda: load.seen(201, since=t_up) and load.seen(200, since=t_up),
                                   5, interval=0.05)
            t_ok = time.monotonic()
            time.sleep(0.3)  # some traffic after the recovery
        assert recovered, "no success within 5 s of the database starting: %r" % load.answers[-5:]

        assert not load.errors, "%d connection errors, first: %r" % (len(load.errors),
                                                                     load.errors[:3])
        assert not load.wrong, "answers to other requests: %r" % load.wrong[:3]
        statuses = {}
        for _, _, _, method, _, status, _ in load.answers:
            statuses[(method, status)] = statuses.get((method, status), 0) + 1
        unexpected = {k: v for k, v in statuses.items() if k[1] not in (200, 201, 503)}
        assert not unexpected, "unexpected statuses: %r" % unexpected
        slow = [(round(t1 - t0, 2), m, s) for t0, t1, _, m, _, s, _ in load.answers
                if t1 - t0 >= request_timeout + 1]
        assert not slow, "answers slower than request_timeout + 1 s: %r" % slow[:5]
        # sent once the server had stopped, answered before it was started again
        down = [a for a in load.answers if a[0] >= t_stopped and a[1] <= t_starting]
        assert len(down) >= 2, "few requests while the database was down: %r" % down
        assert all(a[5] == 503 for a in down), "while down: %r" % [
            a for a in down if a[5] != 503][:5]
        assert metric(d.metrics(), "todod_db_reconnects_total") > reconnects_before
        assert d.running()
        # every worker serves again within a second of PostgreSQL accepting
        # connections (todod(8), DATABASE): one may still be in its reconnect back-off here
        assert wait_until(lambda: all_health(d, 200), 2), "a worker did not reconnect"
        print("    (%s; recovered %.2fs after the start)" % (
            ", ".join("%s %d: %d" % (m, s, n) for (m, s), n in sorted(statuses.items())),
            t_ok - t_up))
        assert d.stop() == 0


@test
def a_server_that_never_answers_the_handshake_is_given_up_and_retried():
    # A listener whose backlog completes TCP handshakes but which never speaks:
    # libpq would wait forever; todod gives up after request_timeout and retries.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]
    try:
        with Todod(workers=1, request_timeout=0.5,
                   database_url="postgresql://postgres@127.0.0.1:%d/x" % port) as d:
            d.start(wait="http")
            r = d.request("GET", "/health")
            assert_json_error(r, 503, "database")
            marker = "no answer from the server in time while connecting"
            assert wait_until(lambda: d.log().count(marker) >= 2, 5), d.log_tail()
            t0 = time.monotonic()
            assert_json_error(d.request("POST", "/todos", {"title": "x"}), 503,
                              "database unavailable")  # never sent
            assert time.monotonic() - t0 < 0.5
    finally:
        silent.close()
