"""A performance test's remote nodes (perf_nodes) are input, and the report
stays true whatever they do (API.md "Spread over workers and hosts"): a node
counts as started from its status line, a refusal keeps its reason, every line
a node sends is checked like a request body (strict JSON, types, ranges, the
node's share) and bounded, a node that answers garbage is ended with a clear
error while what it validly confirmed stays counted, and the nodes continue
the caller's trace. A fake peer (a raw socket server below) answers each kind
of garbage; real instances do the rest."""

import json
import os
import re
import signal
import socket
import threading
import time

from lib.env import free_port
from lib.marks import skip_if_sanitizer, test
from lib.pg import get_pg
from lib.todod import Todod
from lib.checks import wait_until
from otlp import OtlpReceiver

PATH = "/todos/performance-test"


def todo_rows(pg, db):
    return int(pg.psql("SELECT count(*) FROM todos", db=db))


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


class FakePeer:
    """A peer in perf_nodes that answers POST /todos/performance-test as told:
    answer(share, send) gets the request body (a dict) and send(bytes), which
    returns False once the coordinator has closed the connection. Each request
    is recorded in `requests`: its body, headers, the bytes of the answer that
    got out, and whether the answer is over."""

    def __init__(self, host="127.0.0.6"):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.url = "http://%s:%d" % self.sock.getsockname()
        self.answer = None
        self.requests = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        rec = {"share": None, "headers": None, "sent": 0, "over": False}

        def send(data):
            try:
                conn.sendall(data)
                rec["sent"] += len(data)
                return True
            except OSError:
                return False
        try:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return
                data += more
            head, body = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            rec["headers"] = {k.strip().lower(): v.strip() for k, v in
                              (line.split(":", 1) for line in lines[1:])}
            while len(body) < int(rec["headers"].get("content-length", "0")):
                body += conn.recv(65536)
            rec["share"] = json.loads(body)
            self.requests.append(rec)
            self.answer(rec["share"], send)
        except OSError:
            pass
        finally:
            rec["over"] = True
            conn.close()

    def close(self):
        self.closed.set()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
HIST = {"min_us": 0, "max_us": 0, "buckets": []}


def progress(share, **fields):
    line = {"type": "progress", "run_id": share["share"]["run_id"], "success_count": 0,
            "error_count": 0, "unknown_count": 0, "batches": 0,
            "latency_histogram": HIST, "lag_histogram": HIST}
    line.update(fields)
    return line


def report(share, **fields):
    n = share["message_count"]
    line = progress(share, type="report", total_messages=n, error_count=n, workers=1,
                    per_worker=[{"node": "local", "worker_pid": 4242, "first": 0,
                                 "success_count": 0, "error_count": n, "unknown_count": 0,
                                 "duration_ms": 1, "messages_per_second": 0.0}])
    line.update(fields)
    return line


def lines(*objs, tail=b""):
    """An answer that streams these lines (dicts or raw bytes), then ends."""
    def answer(share, send):
        send(STREAM_HEAD)
        for o in objs:
            o = o(share) if callable(o) else o
            send(chunk(o if isinstance(o, bytes) else json.dumps(o).encode() + b"\n"))
            time.sleep(0.05)
        send(tail + b"0\r\n\r\n")
    return answer


def endless(share, send):
    """A line that never ends: 'x' until the coordinator hangs up (at most 64 MiB)."""
    send(STREAM_HEAD)
    for _ in range(1024):
        if not send(chunk(b"x" * 65536)):
            return


def flood(share, send):
    """Valid progress lines, as fast as it can: far more than were asked for."""
    send(STREAM_HEAD)
    line = chunk(json.dumps(progress(share)).encode() + b"\n")
    for _ in range(200000):
        if not send(line):
            return


def refusal(status, body):
    def answer(share, send):
        send(b"HTTP/1.1 %d No\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
             b"Connection: close\r\n\r\n%s" % (status, len(body), body))
    return answer


def raw(share, extra):
    """A valid progress line with extra bytes added before its closing brace."""
    return json.dumps(progress(share)).encode()[:-1] + extra + b"}\n"


# Each kind of answer, what the coordinator's per_node error must say, and
# whether the node counts as started (its unconfirmed rows unknown, not errors).
GARBAGE = [
    ("type null", lines({"type": None}), "invalid", True),
    ("per_worker of numbers", lines(lambda s: report(s, per_worker=[1])), "invalid", True),
    ("counts beyond its share", lines(lambda s: progress(s, success_count=10 ** 9)), "invalid",
     True),
    ("a negative count", lines(lambda s: progress(s, error_count=-5)), "invalid", True),
    ("a count that is not an integer", lines(lambda s: progress(s, success_count="12")),
     "invalid", True),
    ("a report that does not add up", lines(lambda s: report(s, error_count=1)), "invalid", True),
    ("another test's run_id", lines(lambda s: report(s, run_id="0" * 8 + "-0000-4000-8000-" +
                                                     "0" * 12)), "invalid", True),
    ("a histogram bucket out of range",
     lines(lambda s: progress(s, latency_histogram={"min_us": 1, "max_us": 1,
                                                    "buckets": [[99999, 1]]})), "invalid", True),
    ("a histogram that is not one", lines(lambda s: progress(s, lag_histogram=[1, 2])),
     "invalid", True),
    ("JSON json-c takes and RFC 8259 does not", lines(lambda s: raw(s, b',"x":NaN')), "invalid",
     True),
    ("a duplicate member", lines(b'{"type":"report","type":"progress"}\n'), "invalid", True),
    ("a line that is not an object", lines(b"[]\n"), "invalid", True),
    ("invalid UTF-8", lines(lambda s: raw(s, b',"x":"\xff"')), "invalid", True),
    ("a line without end", endless, "line", True),
    ("far more lines than asked for", flood, "lines", True),
    ("no report", lines(lambda s: progress(s)), "without its report", True),
    ("a refusal with a JSON error", refusal(422, b'{"error":"message_count must be small"}'),
     "message_count must be small", False),
    ("a refusal in bytes that are not UTF-8", refusal(503, b"\xff\xfe" * 5000), "503", False),
]


def check_report(rep, n):
    assert rep["success_count"] + rep["error_count"] + rep["unknown_count"] == n, rep
    assert rep["total_messages"] == n, rep


@test
def a_peer_answering_garbage_is_ended_with_an_error_and_the_report_stays_true():
    n = 1000
    with FakePeer() as peer, Todod(workers=1, perf_nodes=peer.url) as d:
        d.start()
        pids = d.worker_pids()
        for name, answer, says, started in GARBAGE:
            peer.answer = answer
            t0 = time.monotonic()
            r = d.request("POST", PATH, {"message_count": n, "batch_size": 100, "nodes": "all"},
                          timeout=30)
            took = time.monotonic() - t0
            assert r.status == 200, (name, r)
            rep = json.loads(r.body)  # valid UTF-8 JSON whatever the peer sent
            check_report(rep, n)
            local, node = rep["per_node"]
            assert node["node"] == peer.url, (name, node)
            assert says.lower() in node.get("error", "").lower(), (name, node)
            # the peer inserted nothing and never validly confirmed a row as committed
            assert rep["success_count"] == n // 2 == local["success_count"], (name, rep)
            assert node["success_count"] == 0, (name, node)
            rest = node["error_count"] + node["unknown_count"]
            assert rest == n - n // 2, (name, node)
            if started:
                assert node["unknown_count"] == rest, (name, node)
            else:
                assert node["error_count"] == rest, (name, node)
            assert all(isinstance(w, dict) for w in rep["per_worker"]), (name, rep)
            assert took < 10, "%s: answered after %.1f s" % (name, took)
            assert d.worker_pids() == pids, "%s: a worker died\n%s" % (name, d.log_tail())
            # the coordinator hung up on it: a line without end or a flood is cut
            # off early, not taken to its end
            last = peer.requests[-1]
            assert wait_until(lambda: last["over"], 10), name
            assert last["sent"] < 8 * 1024 * 1024, (name, last["sent"])
        assert "killed by signal" not in d.log(), d.log_tail()
        # every committed row is one of the local shares' successes
        assert todo_rows(d.pg, d.db) == len(GARBAGE) * (n // 2)


@test
def what_a_peer_validly_confirmed_before_its_garbage_stays_counted():
    n = 1000
    with FakePeer() as peer, Todod(workers=1, perf_nodes=peer.url) as d:
        d.start()
        peer.answer = lines(lambda s: progress(s, error_count=100, batches=1),
                            lambda s: progress(s, error_count=50), b"{")
        rep = d.request("POST", PATH, {"message_count": n, "batch_size": 100, "nodes": "all"},
                        timeout=30).json()
        check_report(rep, n)
        node = rep["per_node"][1]
        # counts only grow: the second line is garbage; the first stays
        assert node["error_count"] == 100 and node["unknown_count"] == 400, node
        assert "invalid" in node["error"], node
        assert rep["success_count"] == n // 2 == todo_rows(d.pg, d.db), rep


@test
def a_node_counts_as_started_from_its_status_line_not_its_first_progress_line():
    # The node's worker dies 0.6 s in, before its first progress line (1 s):
    # the rows it committed meanwhile are not errors; its unconfirmed rows are
    # unknown, and every committed row is a success or unknown.
    skip_if_sanitizer()
    n, rate = 40000, 8000
    pg = get_pg()
    db = pg.create_database()
    b = Todod(pg=pg, db=db, workers=1, listen="127.0.0.3:%d" % free_port("127.0.0.3"))
    a = Todod(pg=pg, db=db, workers=1, listen="127.0.0.2:%d" % free_port("127.0.0.2"),
              perf_nodes=b.base_url)
    with b, a:
        b.start()
        a.start()
        (victim,) = b.worker_pids()
        result = {}
        t = threading.Thread(target=lambda: result.update(r=a.request(
            "POST", PATH, {"message_count": n, "batch_size": 100, "nodes": "all", "rate": rate},
            timeout=60)))
        t.start()
        started = re.compile(r"worker\[%d\] info: performance test \S+ %d todos" % (victim, n // 2))
        assert wait_until(lambda: started.search(b.log()), 10), b.log_tail()
        time.sleep(0.6)
        os.kill(victim, signal.SIGKILL)
        t.join(60)
        rep = result["r"].json()
        check_report(rep, n)
        rows = todo_rows(pg, db)
        node = rep["per_node"][1]
        assert node["success_count"] == 0 and node["error"], node
        assert rows > n // 2, "the node committed nothing before it died: %d rows" % rows
        assert rep["success_count"] <= rows <= rep["success_count"] + rep["unknown_count"], \
            (rep, rows)
        assert rep["error_count"] <= n - rows, (rep, rows)


@test
def a_node_that_refuses_its_share_is_reported_with_its_reason_and_its_rows_are_errors():
    n = 1000
    pg = get_pg()
    db = pg.create_database()
    b = Todod(pg=pg, db=db, workers=1, listen="127.0.0.3:%d" % free_port("127.0.0.3"),
              perf_max_messages=100)
    a = Todod(pg=pg, db=db, workers=1, listen="127.0.0.2:%d" % free_port("127.0.0.2"),
              perf_nodes=b.base_url)
    with b, a:
        b.start()
        a.start()
        rep = a.request("POST", PATH, {"message_count": n, "batch_size": 100, "nodes": "all"},
                        timeout=30).json()
        check_report(rep, n)
        node = rep["per_node"][1]
        assert "422" in node["error"] and "message_count must be from 1 to 100" in node["error"], \
            node
        assert node["error_count"] == n // 2 and node["unknown_count"] == 0, node
        assert rep["success_count"] == n // 2 == todo_rows(pg, db), rep


@test
def nodes_continue_the_callers_trace():
    trace, parent = "5bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    pg = get_pg()
    db = pg.create_database()
    with OtlpReceiver() as otlp:
        b = Todod(pg=pg, db=db, workers=1, listen="127.0.0.3:%d" % free_port("127.0.0.3"),
                  otlp_endpoint=otlp.endpoint)
        a = Todod(pg=pg, db=db, workers=1, listen="127.0.0.2:%d" % free_port("127.0.0.2"),
                  perf_nodes=b.base_url, otlp_endpoint=otlp.endpoint)
        with b, a:
            b.start()
            a.start()
            r = a.request("POST", PATH, {"message_count": 200, "batch_size": 100,
                                         "nodes": "all"},
                          headers={"traceparent": "00-%s-%s-01" % (trace, parent)}, timeout=30)
            assert r.json()["success_count"] == 200, r
            spans = otlp.wait_spans(6, 10, where=lambda s: s["traceId"] == trace)
            servers = [s for s in spans if s["kind"] == 2]
            perfs = [s for s in spans if s["name"] == "performance-test"]
            assert len(servers) == 2 and len(perfs) == 2, [(s["name"], s["kind"]) for s in spans]
            (a_server,) = [s for s in servers if s["parentSpanId"] == parent]
            (a_perf,) = [s for s in perfs if s["parentSpanId"] == a_server["spanId"]]
            (b_server,) = [s for s in servers if s is not a_server]
            # the node's request is a child of the coordinator's performance-test span
            assert b_server["parentSpanId"] == a_perf["spanId"], (b_server, a_perf)
            assert b_server["resource"]["process.pid"] in b.worker_pids()
            assert not otlp.invalid(), otlp.invalid()
