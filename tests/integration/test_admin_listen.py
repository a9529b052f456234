"""admin_listen (DAEMON.md; API.md "Access control"): a second listening socket
serving only the operator's routes (/metrics, /stats, /dashboard, the probes and the
OpenAPI document) without tokens, while the main socket answers 404 for /metrics,
/stats and /dashboard. Both sockets are served by every worker, counted in the same
metrics, moved by a reload and closed by a stop."""

import json
import os
import signal
import socket
import http.client

from lib.checks import wait_until
from lib.env import free_port
from lib.marks import test
from lib.metrics import metric, parse_metrics
from lib.todod import Todod
from test_auth import Keys, Veth, bearer

OPS_ROUTES = ("/metrics", "/stats", "/dashboard")
OPEN_ROUTES = ("/health", "/live", "/ready", "/api-docs/openapi.json")


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:200])


def get(addr, path, method="GET", body=None, headers=None, timeout=5):
    """One request to addr ("host:port") on a fresh connection."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if body is not None:
            body = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()},
                        r.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def refused(addr):
    host, port = addr.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def admin_addr(host="127.0.0.2"):
    return "%s:%d" % (host, free_port(host))


def jwt_admin_todod(keys, admin, **conf):
    d = Todod(auth="jwt", admin_listen=admin, **conf)
    d.write_conf(jwt_keys=keys.write(os.path.join(d.dir, "jwks.json")))
    return d


def start(d, admin):
    """Start d and wait until every worker is ready (seen on admin's /stats)."""
    d.start(wait="http")
    want = int(d.conf["workers"])

    def ready():
        r = get(admin, "/stats")
        return r.status == 200 and sum(1 for w in r.json()["workers"]
                                       if w.get("ready") and w.get("db_connected")) >= want
    assert wait_until(ready, 10), d.log_tail()


def todo_count(d):
    return int(d.pg.psql("SELECT count(*) FROM todos", db=d.db))


@test
def admin_listen_serves_the_operators_routes_without_a_token_and_nothing_else():
    keys = Keys()
    admin = admin_addr()
    with jwt_admin_todod(keys, admin, workers=2) as d:
        start(d, admin)
        for path in OPS_ROUTES + OPEN_ROUTES:
            r = get(admin, path)
            assert r.status == 200, (path, r)
            assert "www-authenticate" not in r.headers, (path, r.headers)
            # a token is not even looked at there: a bad one changes nothing
            assert get(admin, path, headers=bearer("not.a.token")).status == 200, path
        assert get(admin, "/metrics").headers["content-type"].startswith("text/plain")
        assert len(get(admin, "/stats").json()["workers"]) == 2
        assert get(admin, "/health", method="HEAD").status == 200
        # the rest is not there, even with a token that would be good on listen
        token = keys.token()
        for method, path, body in (("GET", "/todos", None), ("POST", "/todos", {"title": "x"}),
                                   ("GET", "/todos/done/true", None),
                                   ("POST", "/todos/performance-test", {"message_count": 5}),
                                   ("DELETE", "/todos/00000000-0000-4000-8000-000000000000",
                                    None),
                                   ("GET", "/nowhere", None)):
            r = get(admin, path, method=method, body=body, headers=bearer(token))
            assert r.status == 404, (method, path, r)
            assert r.json() == {"error": "no route for %s" % path}, r
        assert todo_count(d) == 0
        # a known route, wrong method: 405 as on listen
        r = get(admin, "/metrics", method="POST", body={})
        assert r.status == 405 and r.headers.get("allow") == "GET, HEAD", r
        # the main socket: no /metrics, /stats, /dashboard, whatever the token
        for path in OPS_ROUTES:
            r = get(d.conf["listen"], path, headers=bearer(token))
            assert r.status == 404, (path, r)
            assert r.json() == {"error": "no route for %s" % path}, r
        for path in OPEN_ROUTES:
            assert get(d.conf["listen"], path).status == 200, path
        r = get(d.conf["listen"], "/todos")
        assert r.status == 401 and r.headers["www-authenticate"] == 'Bearer realm="todod"', r
        r = get(d.conf["listen"], "/todos", method="POST", body={"title": "t"},
                headers=bearer(token))
        assert r.status == 201, r
        assert todo_count(d) == 1
        # one set of metrics: the admin socket's exposition counts the main socket's
        # requests, under their usual route labels
        text = get(admin, "/metrics").body
        parse_metrics(text)
        total = "todod_http_requests_total"
        assert metric(text, total, {"route": "/todos", "method": "GET", "code": "401"}) == 1
        assert metric(text, total, {"route": "/todos", "method": "POST", "code": "201"}) == 1
        # GET /todos, /todos/done/true, /nowhere on admin_listen and /metrics, /stats,
        # /dashboard on listen were answered as unknown routes
        assert metric(text, total, {"route": "other", "method": "GET", "code": "404"}) == 6, text
        assert metric(text, total, {"route": "other", "method": "POST", "code": "404"}) == 2, text
        assert metric(text, total, {"route": "/stats", "method": "GET", "code": "200"}) >= 3
        assert metric(text, total, {"route": "/metrics", "method": "GET", "code": "200"}) == 3
        assert metric(text, "todod_auth_refusals_total", default=0) == 1


@test
def admin_listen_answers_a_peer_that_is_not_loopback_without_protected_mode():
    with Veth() as v:
        port = free_port("0.0.0.0")
        admin = "%s:%d" % (v.host_ip, free_port(v.host_ip))
        with Todod(workers=1, listen="0.0.0.0:%d" % port, admin_listen=admin) as d:
            d.start(wait="http")
            assert wait_until(lambda: get(admin, "/ready").status == 200, 10), d.log_tail()
            # protected mode holds on listen (now without /metrics, /stats, /dashboard)
            outside = "http://%s:%d" % (v.host_ip, port)
            assert v.curl(outside + "/todos")[0] == 403
            assert v.curl(outside + "/api-docs/openapi.json")[0] == 403
            for path in OPS_ROUTES:
                assert v.curl(outside + path)[0] == 404, path
            # admin_listen is the operator's network by configuration
            for path in OPS_ROUTES + OPEN_ROUTES:
                status, body = v.curl("http://%s%s" % (admin, path))
                assert status == 200, (path, status, body)
            status, body = v.curl("http://%s/todos" % admin)
            assert status == 404 and json.loads(body) == {"error": "no route for /todos"}


@test
def a_reload_moves_admin_listen_and_one_that_cannot_bind_it_changes_nothing():
    keys = Keys()
    first = admin_addr()
    with jwt_admin_todod(keys, first, workers=1) as d:
        start(d, first)
        second = admin_addr()
        pids = d.worker_pids()
        d.write_conf(admin_listen=second)
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: d.worker_pids() and not set(d.worker_pids()) & set(pids), 10)
        assert get(second, "/metrics").status == 200
        assert wait_until(lambda: refused(first), 10), d.log_tail()
        # an address taken by someone else: the reload fails, nothing changes
        with socket.socket() as taken:
            taken.bind(("127.0.0.2", 0))
            taken.listen(1)
            busy = "127.0.0.2:%d" % taken.getsockname()[1]
            pids = d.worker_pids()
            d.write_conf(admin_listen=busy)
            d.signal(signal.SIGHUP)
            assert wait_until(lambda: "reload failed" in d.log(), 5), d.log_tail()
            assert d.worker_pids() == pids
            assert get(second, "/stats").status == 200
        # unset: listen serves /metrics again, with a token
        token = keys.token()
        d.write_conf(admin_listen=None)
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: d.worker_pids() and not set(d.worker_pids()) & set(pids), 10)
        assert wait_until(lambda: refused(second), 10), d.log_tail()
        assert get(d.conf["listen"], "/metrics", headers=bearer(token)).status == 200
        assert get(d.conf["listen"], "/metrics").status == 401
        # set again
        third = admin_addr()
        pids = d.worker_pids()
        d.write_conf(admin_listen=third)
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: d.worker_pids() and not set(d.worker_pids()) & set(pids), 10)
        assert get(third, "/metrics").status == 200
        assert get(d.conf["listen"], "/metrics", headers=bearer(token)).status == 404


@test
def a_stop_closes_both_sockets_and_the_daemon_exits_0():
    admin = admin_addr()
    with Todod(workers=2, admin_listen=admin) as d:
        d.start(wait="http")
        assert wait_until(lambda: get(admin, "/ready").status == 200, 10), d.log_tail()
        # a keep-alive connection on the admin socket, open when the stop begins
        host, port = admin.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/live")
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        assert d.stop() == 0, d.log_tail()
        conn.close()
        assert refused(admin) and refused(d.conf["listen"])
        assert d.worker_pids() == []


@test
def admin_listen_that_cannot_be_bound_stops_the_start():
    with socket.socket() as taken:
        taken.bind(("127.0.0.2", 0))
        taken.listen(1)
        busy = "127.0.0.2:%d" % taken.getsockname()[1]
        with Todod(workers=1, admin_listen=busy) as d:
            p = d.run("-t", "-c", d.conf_path)
            assert p.returncode == 0, p.stderr
            d.start(wait=None)
            assert d.wait(10) == 1
            assert "cannot listen on %s" % busy in d.log(), d.log_tail()
            assert refused(d.conf["listen"])
