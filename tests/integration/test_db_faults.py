"""The database failing under todod (shared spec API.md "503", DAEMON.md "the
database goes away"): down at start, and going down in the middle of traffic and
coming back. Each test has its own PostgreSQL, which it stops and starts."""

import http.client
import socket
import threading
import time

from harness import (assert_json_error, metric, Postgres, test, Todod, wait_until)


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def all_health(d, status, n=6):
    """n GET /health in a row (new connections, so both workers are asked) all
    answer `status`."""
    return all(d.request("GET", "/health", timeout=2).status == status for _ in range(n))


class Load:
    """Client threads sending POST /todos and GET /todos/{id} back to back until
    stopped, each through its own keep-alive connection (no retries). Records
    every answer: (sent at, elapsed, method, status), every exception, and every
    answer that does not belong to its request."""

    def __init__(self, d, nthreads=2, timeout=10):
        self.d = d
        self.timeout = timeout
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.answers = []
        self.errors = []
        self.mismatches = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(nthreads)]

    def _record(self, t0, method, r):
        with self.lock:
            self.answers.append((t0, time.monotonic() - t0, method, r.status))

    def _check(self, ok, what):
        if not ok:
            with self.lock:
                self.mismatches.append(what)

    def _run(self, n):
        c = self.d.Client(timeout=self.timeout, retry=False)
        created = []
        seq = 0
        try:
            while not self.stop_flag.is_set():
                seq += 1
                title = "load %d.%d" % (n, seq)
                try:
                    t0 = time.monotonic()
                    r = c.request("POST", "/todos", body={"title": title})
                    self._record(t0, "POST", r)
                    if r.status == 201:
                        t = r.json()
                        self._check(t.get("title") == title, ("POST", title, t))
                        created.append(t)
                    if r.status == 503:
                        time.sleep(0.002)  # pace the retries while the database is down
                    if created:
                        want = created[-1]
                        t0 = time.monotonic()
                        r = c.request("GET", "/todos/" + want["id"])
                        self._record(t0, "GET", r)
                        if r.status == 200:
                            self._check(r.json() == want, ("GET", want, r.json()))
                except (OSError, http.client.HTTPException, ValueError) as e:
                    with self.lock:
                        self.errors.append("thread %d: %r" % (n, e))
                    c.close()
                    time.sleep(0.01)
        finally:
            c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(self.timeout + 5)

    def seen(self, status, since=0.0):
        with self.lock:
            return any(s == status and t0 >= since for t0, _, _, s in self.answers)


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
        with Load(d, nthreads=2, timeout=request_timeout + 5) as load:
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
        assert not load.mismatches, "answers to other requests: %r" % load.mismatches[:3]
        statuses = {}
        for _, _, method, status in load.answers:
            statuses[(method, status)] = statuses.get((method, status), 0) + 1
        unexpected = {k: v for k, v in statuses.items() if k[1] not in (200, 201, 503)}
        assert not unexpected, "unexpected statuses: %r" % unexpected
        slow = [(round(dt, 2), m, s) for _, dt, m, s in load.answers if dt >= request_timeout + 1]
        assert not slow, "answers slower than request_timeout + 1 s: %r" % slow[:5]
        # sent once the server had stopped, answered before it was started again
        down = [a for a in load.answers if a[0] >= t_stopped and a[0] + a[1] <= t_starting]
        assert len(down) >= 2, "few requests while the database was down: %r" % down
        assert all(s == 503 for _, _, _, s in down), "while down: %r" % [
            a for a in down if a[3] != 503][:5]
        assert metric(d.metrics(), "todod_db_reconnects_total") > reconnects_before
        assert d.running()
        assert all_health(d, 200)
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
            assert_json_error(d.request("POST", "/todos", {"title": "x"}), 503)
            assert time.monotonic() - t0 < 0.5
    finally:
        silent.close()
