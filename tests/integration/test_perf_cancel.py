"""Stopping a running performance test (API.md: `DELETE /todos/performance-test/{run_id}`
and "The performance test's bounds"): any worker of the coordinating instance takes
the DELETE; every share, local and remote, stops at its next batch; the DELETE and
the POST that started the test answer the same report, with "cancelled": true and
counts that match the table; an unknown or finished run is 404; a token without
perf:run is 403 and stops nothing; todod_perf_tests_cancelled_total counts it."""

import base64
import http.client
import json
import os
import re
import threading
import time
import uuid

import jwt

from lib.checks import assert_json_error, wait_until
from lib.client import Client
from lib.env import free_port
from lib.marks import test
from lib.metrics import metric
from lib.pg import get_pg
from lib.todod import Todod

PATH = "/todos/performance-test"
NDJSON = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}


class Keys:
    """One HS256 key, as a JWK Set, and tokens minted with it by PyJWT."""

    def __init__(self):
        self.secret = os.urandom(32)

    def write(self, path):
        k = base64.urlsafe_b64encode(self.secret).rstrip(b"=").decode()
        with open(path, "w") as f:
            json.dump({"keys": [{"kty": "oct", "kid": "hs", "alg": "HS256", "k": k}]}, f)
        os.chmod(path, 0o600)
        return path

    def bearer(self, scope):
        now = int(time.time())
        token = jwt.encode({"sub": "alice", "scope": scope, "iat": now, "exp": now + 300},
                           self.secret, algorithm="HS256", headers={"kid": "hs"})
        return {"Authorization": "Bearer " + token}


def todo_rows(pg, db):
    return int(pg.psql("SELECT count(*) FROM todos", db=db))


def run_started(d, n):
    """(run_id, coordinator pid) of the test of n todos, from its log line."""
    m = re.search(r"worker\[(\d+)\] info: performance test (\S+): %d todos" % n, d.log())
    return (m.group(2), int(m.group(1))) if m else None


def worker_client(d, avoid, headers=None, tries=12):
    """A keep-alive connection served by a worker other than pid `avoid`: on each
    fresh connection (the kernel picks its worker) /stats twice; the worker whose
    request count rose by one between the two served it."""
    for _ in range(tries):
        c = Client(d.host, d.port, timeout=30)
        first = c.request("GET", "/stats", headers=headers).json()["workers"]
        second = c.request("GET", "/stats", headers=headers).json()["workers"]
        before = {w["pid"]: w["requests"] for w in first}
        grew = [w["pid"] for w in second if w["requests"] == before.get(w["pid"], -1) + 1]
        if len(grew) == 1 and grew[0] != avoid:
            return c, grew[0]
        c.close()
    raise AssertionError("no connection reached a worker other than %d in %d tries"
                         % (avoid, tries))


def check_cancelled(rep, n, run_id):
    assert rep["cancelled"] is True and rep["run_id"] == run_id, rep
    assert rep["total_messages"] == n, rep
    assert rep["success_count"] + rep["error_count"] + rep["unknown_count"] == n, rep
    assert rep["unknown_count"] == 0, rep
    # stopped early: rows were never sent, and they are known not committed
    assert 0 < rep["success_count"] and rep["error_count"] > 0, rep


@test
def a_delete_on_another_worker_stops_every_share_and_node_and_the_counts_match_the_table():
    n, rate = 30000, 1500   # 20 s if nothing stopped it
    pg = get_pg()
    db = pg.create_database()
    b = Todod(pg=pg, db=db, workers=2, listen="127.0.0.3:%d" % free_port("127.0.0.3"))
    a = Todod(pg=pg, db=db, workers=2, listen="127.0.0.2:%d" % free_port("127.0.0.2"),
              perf_nodes=b.base_url)
    with b, a:
        b.start()
        a.start()
        result = {}
        t = threading.Thread(target=lambda: result.update(r=a.request(
            "POST", PATH, {"message_count": n, "batch_size": 50, "workers": "all",
                           "nodes": "all", "rate": rate}, timeout=120)))
        t.start()
        assert wait_until(lambda: run_started(a, n), 10), a.log_tail()
        run_id, coordinator = run_started(a, n)
        c, other = worker_client(a, avoid=coordinator)
        # both instances are inserting
        node_share = re.compile(r"performance test %s: %d todos" % (run_id, n // 2))
        assert wait_until(lambda: node_share.search(b.log()), 10), b.log_tail()
        assert wait_until(lambda: todo_rows(pg, db) > 300, 20)
        with c:
            r = c.request("DELETE", "%s/%s" % (PATH, run_id.upper()), timeout=60)
        assert r.status == 200, r
        rep = r.json()
        t.join(60)
        assert not t.is_alive()
        posted = result["r"]
        assert posted.status == 200, posted
        # the DELETE answered once everything had stopped: nothing comes after
        rows = todo_rows(pg, db)
        check_cancelled(rep, n, run_id)
        assert rep["success_count"] == rows, (rep, rows)
        assert re.search(r"worker\[%d\] info: performance test %s: cancelled" % (other, run_id),
                         a.log()), a.log_tail()
        # the POST ends with the same report
        same = ("success_count", "error_count", "unknown_count", "batches", "cancelled")
        assert {k: posted.json()[k] for k in same} == {k: rep[k] for k in same}, \
            (posted.json(), rep)
        # the node's share stopped too, and said so
        node = rep["per_node"][1]
        assert node["error_count"] > 0 and "error" not in node, node
        assert node["success_count"] + node["error_count"] == n - n // 2, node
        assert "performance test %s: cancelled; its shares stop" % run_id in b.log(), b.log_tail()
        assert re.search(r"performance test %s: share of \d+ todos cancelled" % run_id,
                         b.log()), b.log_tail()
        node_done = metric(b.metrics(), "todod_perf_todos_total", {"result": "success"})
        time.sleep(1)
        assert metric(b.metrics(), "todod_perf_todos_total", {"result": "success"}) == node_done
        assert todo_rows(pg, db) == rows
        # over: 404, like a run that never was; a malformed id is 400
        assert_json_error(a.request("DELETE", "%s/%s" % (PATH, run_id)), 404, run_id)
        assert_json_error(a.request("DELETE", "%s/%s" % (PATH, uuid.uuid4())), 404, "no performance")
        assert_json_error(a.request("DELETE", PATH + "/not-a-uuid"), 400, "run_id")
        assert metric(a.metrics(), "todod_perf_tests_cancelled_total") == 1
        assert a.stats()["totals"]["perf_tests_cancelled"] == 1


@test
def a_delete_without_perf_run_is_403_and_a_streamed_test_ends_with_the_cancelled_report():
    n, rate = 20000, 1000
    keys = Keys()
    d = Todod(auth="jwt", workers=2)
    d.write_conf(jwt_keys=keys.write(os.path.join(d.dir, "jwks.json")))
    with d:
        d.start()
        run = keys.bearer("perf:run")
        ops = keys.bearer("ops:read")
        lines = []

        def post():
            conn = http.client.HTTPConnection(d.host, d.port, timeout=120)
            conn.request("POST", PATH, body=json.dumps(
                {"message_count": n, "batch_size": 20, "workers": "all", "rate": rate,
                 "progress_interval_ms": 200}), headers=dict(NDJSON, **run))
            resp = conn.getresponse()
            lines.append(resp.status)
            for line in resp:
                lines.append(json.loads(line))
            conn.close()

        t = threading.Thread(target=post)
        t.start()
        assert wait_until(lambda: run_started(d, n), 10), d.log_tail()
        run_id, _ = run_started(d, n)
        assert wait_until(lambda: todo_rows(d.pg, d.db) > 100, 20)
        # a token without perf:run: 403, and the test runs on
        r = d.request("DELETE", "%s/%s" % (PATH, run_id),
                      headers=keys.bearer("todos:read todos:write ops:read"))
        assert r.status == 403 and 'scope="perf:run"' in r.headers["www-authenticate"], r
        assert d.request("DELETE", "%s/%s" % (PATH, run_id)).status == 401
        rows = todo_rows(d.pg, d.db)
        assert wait_until(lambda: todo_rows(d.pg, d.db) > rows + 100, 20)
        assert metric(d.request("GET", "/metrics", headers=ops).text,
                      "todod_perf_tests_cancelled_total") == 0
        r = d.request("DELETE", "%s/%s" % (PATH, run_id), headers=run, timeout=60)
        assert r.status == 200, r
        rep = r.json()
        t.join(60)
        assert not t.is_alive()
        check_cancelled(rep, n, run_id)
        assert rep["success_count"] == todo_rows(d.pg, d.db), rep
        assert lines[0] == 200 and lines[-1]["type"] == "report", lines[-3:]
        last = lines[-1]
        for k in ("success_count", "error_count", "unknown_count", "batches", "cancelled"):
            assert last[k] == rep[k], (last, rep)
        assert metric(d.request("GET", "/metrics", headers=ops).text,
                      "todod_perf_tests_cancelled_total") == 1
