"""Liveness and readiness for load balancers: GET /live, GET /ready, drain_delay
(API.md routes; DAEMON.md "drain_delay", signals)."""

import signal
import time

from lib.env import free_port
from lib.marks import test
from lib.todod import Todod
from lib.checks import assert_json_error, wait_until


@test
def live_answers_ok_and_ready_answers_ready():
    with Todod(workers=1) as d:
        d.start()
        r = d.request("GET", "/live")
        assert r.status == 200 and r.body == b"ok", r
        assert r.headers["content-type"].startswith("text/plain"), r.headers
        r = d.request("GET", "/ready")
        assert r.status == 200 and r.body == b"ready", r


@test
def without_a_database_live_is_200_and_ready_is_503():
    url = "postgresql://postgres@127.0.0.1:%d/postgres?connect_timeout=1" % free_port()
    with Todod(workers=1, database_url=url) as d:
        d.start(wait="http")
        r = d.request("GET", "/live")
        assert r.status == 200 and r.body == b"ok", r
        assert_json_error(d.request("GET", "/ready"), 503, "database unavailable")


@test
def during_drain_delay_ready_says_draining_and_everything_else_is_served():
    with Todod(workers=2, drain_delay=1.5) as d:
        d.start()
        with d.Client() as c:
            assert c.request("GET", "/ready").status == 200
            started = time.monotonic()
            d.signal(signal.SIGTERM)
            assert wait_until(lambda: d.request("GET", "/ready").status == 503, 1), \
                "/ready still 200 after SIGTERM"
            assert_json_error(d.request("GET", "/ready"), 503, "draining")
            # the same keep-alive connection and new ones are served as usual
            time.sleep(0.3)
            r = c.request("POST", "/todos", {"title": "during the drain delay"})
            assert r.status == 201, r
            assert d.request("GET", "/health").status == 200
            assert d.request("GET", "/todos/" + r.json()["id"]).status == 200
        assert d.wait(15) == 0
        took = time.monotonic() - started
        assert took >= 1.5, "stopped %.2f s after SIGTERM, before drain_delay ran out" % took
        assert d.pg.psql("SELECT count(*) FROM todos WHERE title = 'during the drain delay'",
                         db=d.db) == "1"


@test
def a_reload_does_not_wait_for_drain_delay():
    with Todod(workers=1, drain_delay=30) as d:
        d.start()
        old = d.worker_pids()
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: d.worker_pids() and not set(old) & set(d.worker_pids()), 10), \
            "the old worker is still there 10 s after SIGHUP (waited for drain_delay?)"
        assert d.request("GET", "/ready").status == 200
        d.kill()  # a graceful stop would now wait the 30 s of drain_delay
