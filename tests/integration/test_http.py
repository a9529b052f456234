"""The HTTP layer against hostile and slow clients (API.md "Strict JSON",
"Server-Timing"; DAEMON.md "Draining, precisely", "Slow and abusive clients",
access log, max_connections): request framing per RFC 9112 with raw sockets
(no body ever runs as a request), strict JSON on every body, request deadlines,
idle and connection limits, descriptor exhaustion, precise draining."""

import json
import os
import re
import signal
import socket
import threading
import time
import uuid

from lib.marks import skip_if_sanitizer, test
from lib.todod import Todod
from lib.load import run_threads
from lib.checks import assert_json_error, wait_until
from lib.metrics import metric

JSON_HEAD = "Content-Type: application/json\r\n"


def connect(d, timeout=5):
    return socket.create_connection((d.host, d.port), timeout=timeout)


def read_all(s, timeout=3):
    """Everything until the server closes (or timeout); (bytes, closed)."""
    s.settimeout(timeout)
    chunks = []
    closed = False
    try:
        while True:
            b = s.recv(65536)
            if not b:
                closed = True
                break
            chunks.append(b)
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    return b"".join(chunks), closed


def parse_responses(data):
    """HTTP/1.1 responses in data -> [(version, status, headers (lower-case), body)]."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, "incomplete response head: %r" % data[:200]
        lines = head.decode("latin-1").split("\r\n")
        version, status = lines[0].split(" ")[:2]
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    rest = rest[2:]
                    break
                body += rest[:size]
                rest = rest[size + 2:]
        else:
            n = int(headers.get("content-length", "0"))
            body, rest = rest[:n], rest[n:]
        out.append((version, int(status), headers, body))
        data = rest
    return out


def exchange(d, data, timeout=3):
    s = connect(d)
    try:
        s.sendall(data)
        raw, closed = read_all(s, timeout)
    finally:
        s.close()
    return parse_responses(raw), closed


def assert_rejected(d, data, status, fragment):
    """One JSON error answer with `status`, and the connection closed: nothing
    after the bad request ran."""
    before = rows(d)
    responses, closed = exchange(d, data)
    assert len(responses) == 1, "want one answer, got %r" % [r[:2] for r in responses]
    version, st, headers, body = responses[0]
    assert st == status, (st, body)
    assert version == "HTTP/1.1", version
    assert headers.get("content-type", "").startswith("application/json"), headers
    msg = json.loads(body.decode("utf-8"))["error"]
    assert fragment.lower() in msg.lower(), msg
    assert headers.get("connection", "").lower() == "close", headers
    assert closed, "connection left open after a framing error"
    assert rows(d) == before, "a rejected request changed the table"
    return msg


def rows(d):
    return int(d.pg.psql("SELECT count(*) FROM todos", db=d.db))


SMUGGLED = b"GET /todos/00000000-0000-4000-8000-000000000000 HTTP/1.1\r\nHost: x\r\n\r\n"
BODY = b'{"title":"smuggle"}'


def post(headers, body=BODY):
    return ("POST /todos HTTP/1.1\r\nHost: x\r\n" + JSON_HEAD + headers + "\r\n").encode() + body


# ---- framing ----------------------------------------------------------------------------


@test
def framing_violations_are_rejected_and_no_body_runs_as_a_request():
    with Todod(workers=1) as d:
        d.start()
        n = len(BODY + SMUGGLED)
        cases = [
            (post("Content-Length : %d\r\n" % n, BODY + SMUGGLED), 400, "whitespace before the colon"),
            (post("Transfer-Encoding: gzip\r\n", BODY + SMUGGLED), 501, "gzip is not supported"),
            (post("Content-Length: %d\r\nContent-Length: %d\r\n" % (len(BODY), n), BODY + SMUGGLED),
             400, "conflicting Content-Length"),
            (post("Content-Length: +%d\r\n" % len(BODY)), 400, "invalid Content-Length"),
            (post("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(BODY),
                  b"13\r\n" + BODY + b"\r\n0\r\n\r\n"), 400, "both Content-Length"),
            (post("Transfer-Encoding: chunked\r\n", b"0x13\r\n" + BODY + b"\r\n0\r\n\r\n"), 400,
             "invalid chunk size"),
            (post("Transfer-Encoding: chunked\r\n", b"+13\r\n" + BODY + b"\r\n0\r\n\r\n"), 400,
             "invalid chunk size"),
            (post("Transfer-Encoding: chunked\r\n", b"13\r\n" + BODY + b"0\r\n\r\n"), 400,
             "no CRLF after chunk data"),
            (post("Transfer-Encoding: chunked\r\n", b"zz\r\n" + BODY + b"\r\n0\r\n\r\n"), 400,
             "invalid chunk size"),
            (b"GET /health HTTP/1.9\r\nHost: x\r\n\r\n", 505, "HTTP/1.9 is not supported"),
            (b"GET /health HTTP/1.1\r\n\r\n", 400, "missing Host"),
            (b"GET /health HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400, "folding"),
            (b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request target"),
            (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 501, "not implemented"),
            (b"GET /health HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n", 417, "expectation"),
            (b"GET /health HTTP/1.1\r\nHost: x\r\nExpect:\t100-continue\r\n\r\n", 417,
             "expectation"),
            # evhttp frames these otherwise than as chunked
            (post("Transfer-Encoding: chunked,\r\n", b"13\r\n" + BODY + b"\r\n0\r\n\r\n" + SMUGGLED),
             400, "Transfer-Encoding"),
            (post("Transfer-Encoding:\tchunked\r\n", b"13\r\n" + BODY + b"\r\n0\r\n\r\n" + SMUGGLED),
             400, "Transfer-Encoding"),
            (post("Transfer-Encoding: chunked\r\nTransfer-Encoding: \r\n",
                  b"13\r\n" + BODY + b"\r\n0\r\n\r\n" + SMUGGLED), 400, "Transfer-Encoding"),
            # targets evhttp's URI parser refuses (or reads an authority in)
            (b"GET //a:b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request target"),
            (b"GET http://a:b/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request target"),
        ]
        for data, status, fragment in cases:
            try:
                assert_rejected(d, data, status, fragment)
            except AssertionError as e:
                raise AssertionError("%r: %s" % (data[:80], e))
        # evhttp reads no body for HEAD: the body would run as the next request.
        # (The answer to a HEAD has no body to read the message from.)
        responses, closed = exchange(d, b"HEAD /ready HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED)
        assert [r[1] for r in responses] == [400] and closed, [r[:3] for r in responses]
        assert d.request("GET", "/health").status == 200


@test
def connect_gets_501_and_the_connection_closes_at_once():
    with Todod(workers=1) as d:
        d.start()
        s = connect(d)
        t0 = time.monotonic()
        s.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        raw, closed = read_all(s, 3)
        s.close()
        (resp,) = parse_responses(raw)
        assert resp[1] == 501 and closed, resp
        assert time.monotonic() - t0 < 1, "connection kept open"


@test
def a_valid_chunk_extension_and_a_chunked_body_are_accepted():
    with Todod(workers=1) as d:
        d.start()
        body = post("Transfer-Encoding: chunked\r\n",
                    b"a;name=value\r\n" + BODY[:10] + b"\r\n9 ; q=\"x y\"\r\n" + BODY[10:] +
                    b"\r\n0\r\nX-Trailer: 1\r\n\r\n")
        responses, _ = exchange(d, body, timeout=0.5)
        resp = responses[0]
        assert resp[1] == 201, resp
        assert json.loads(resp[3])["title"] == "smuggle"


@test
def pipelined_requests_are_answered_in_order_up_to_a_bad_one():
    with Todod(workers=1) as d:
        d.start()
        data = (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + post("Content-Length: %d\r\n" % len(BODY))
                + b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n"
                + b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        responses, closed = exchange(d, data)
        assert [r[1] for r in responses] == [200, 201, 400], [r[:2] for r in responses]
        assert closed


@test
def a_body_over_max_body_size_is_refused_before_it_is_read():
    with Todod(workers=1, max_body_size="1k") as d:
        d.start()
        s = connect(d)
        s.sendall(post("Content-Length: 5000000\r\n", b""))
        raw, closed = read_all(s, 3)
        s.close()
        (resp,) = parse_responses(raw)
        assert resp[1] == 413 and closed, resp
        assert "larger than 1024 bytes" in json.loads(resp[3])["error"]


@test
def error_bodies_that_echo_input_are_valid_utf8_json():
    with Todod(workers=1) as d:
        d.start()
        for path in ("/nope%ff%fe", "/todos/%c3%28", "/" + "a" * 300):
            r = d.request("GET", path)
            assert r.status in (400, 404), r
            json.loads(r.body.decode("utf-8"))  # strict UTF-8 decode


# ---- strict JSON ------------------------------------------------------------------------


@test
def lenient_json_is_refused_on_every_body_route_and_changes_nothing():
    with Todod(workers=1) as d:
        d.start()
        todo = d.request("POST", "/todos", {"title": "kept"}).json()
        bad = ['{"title": NaN}', "{'title': 'x'}", '{"title": "a\tb"}', '{"title": "x",}',
               '{"title": 1.}', '{"title": "x"} x', '{"title": "x", "title": "y"}',
               '\ufeff{"title": "x"}', '{"title": "x" /* c */}', '{"done": Infinity}',
               '{"title": "\\ud800"}', '[' * 40 + ']' * 40, '{"title": 01}',
               # json-c ends a member name at U+0000: a second "title", unseen
               '{"title": "x", "title\\u0000": "y"}']
        routes = [("POST", "/todos"), ("PUT", "/todos/" + todo["id"]),
                  ("POST", "/todos/performance-test")]
        for body in bad:
            for method, path in routes:
                r = d.request(method, path, body.encode("utf-8"),
                              headers={"Content-Type": "application/json"})
                assert r.status == 400, (method, path, body, r)
                assert_json_error(r, 400)
        r = d.request("POST", "/todos/performance-test", "{'message_count': 100}",
                      headers={"Content-Type": "application/json"})
        assert r.status == 400, r
        assert rows(d) == 1
        assert d.request("GET", "/todos/" + todo["id"]).json() == todo


# ---- slow clients and limits ---------------------------------------------------------------


@test
def a_trickled_head_is_cut_off_at_request_timeout_with_408():
    with Todod(workers=1, request_timeout=1) as d:
        d.start()
        s = connect(d)
        t0 = time.monotonic()
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        closed_at = None
        data = b""
        s.settimeout(0.2)
        for byte in head:
            try:
                s.send(bytes([byte]))
            except OSError:
                break
            try:
                b = s.recv(4096)
                if not b:
                    closed_at = time.monotonic() - t0
                    break
                data += b
            except socket.timeout:
                pass
        if closed_at is None:
            rest, closed = read_all(s, 2)
            data += rest
            closed_at = time.monotonic() - t0
        s.close()
        assert closed_at < 1.6, "the slow client lasted %.2fs" % closed_at
        (resp,) = parse_responses(data)
        assert resp[1] == 408, resp
        assert metric(d.metrics(), "todod_http_client_timeouts_total") >= 1


@test
def a_trickled_body_is_cut_off_at_request_timeout_and_changes_nothing():
    with Todod(workers=1, request_timeout=1) as d:
        d.start()
        s = connect(d)
        t0 = time.monotonic()
        s.sendall(post("Content-Length: %d\r\n" % len(BODY), b""))
        closed = False
        for byte in BODY[:-1]:
            time.sleep(0.15)
            try:
                s.send(bytes([byte]))
            except OSError:
                closed = True
                break
        if not closed:
            _, closed = read_all(s, 2)
        took = time.monotonic() - t0
        s.close()
        assert closed and took < 2.5, (closed, took)
        assert rows(d) == 0


@test
def an_idle_keepalive_connection_closes_after_keepalive_timeout():
    with Todod(workers=1, keepalive_timeout=0.5) as d:
        d.start()
        s = connect(d)
        s.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        raw, closed = read_all(s, 3)
        s.close()
        assert parse_responses(raw)[0][1] == 200
        assert closed and 0.4 < time.monotonic() - t0 < 1.5


@test
def max_connections_caps_what_a_worker_holds():
    with Todod(workers=1, max_connections=4) as d:
        d.start()
        held = [connect(d) for _ in range(4)]
        for s in held:
            s.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(2)
            assert b"200" in s.recv(4096)
        extra = connect(d)  # queued by the kernel, not taken by the worker
        extra.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        extra.settimeout(0.5)
        try:
            got = extra.recv(4096)
        except socket.timeout:
            got = b""
        assert got == b"", "a fifth connection was served: %r" % got
        held[0].close()
        extra.settimeout(3)
        assert b"200" in extra.recv(4096)
        for s in held[1:] + [extra]:
            s.close()


def health_latencies(d, seconds):
    """/health on one keep-alive connection for `seconds`: sorted latencies."""
    out = []
    with d.Client(timeout=5) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            r = c.request("GET", "/health")
            out.append(time.monotonic() - t0)
            assert r.status == 200, r
            time.sleep(0.002)
    return sorted(out)


def p99(xs):
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


@test
def a_slowloris_attack_neither_delays_other_clients_nor_floods_the_log():
    skip_if_sanitizer()
    n = 300
    with Todod(workers=2, request_timeout=3) as d:
        d.start()
        stop = threading.Event()
        socks = []

        def attacker():
            while not stop.is_set():
                for s in list(socks):
                    try:
                        s.send(b"a")
                    except OSError:
                        socks.remove(s)
                while len(socks) < n and not stop.is_set():
                    try:
                        s = connect(d, timeout=2)
                        s.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                        socks.append(s)
                    except OSError:
                        break
                time.sleep(0.5)

        t = threading.Thread(target=attacker, daemon=True)
        t.start()
        try:
            time.sleep(1)
            lat = health_latencies(d, 5)
        finally:
            stop.set()
            t.join(10)
            for s in socks:
                s.close()
        size = os.path.getsize(d.log_path)
        cut = metric(d.metrics(), "todod_http_client_timeouts_total")
        print("    (%d slow connections: /health p50 %.2f ms, p99 %.2f ms over %d requests; "
              "%d cut off; log %d bytes)" % (n, lat[len(lat) // 2] * 1e3, p99(lat) * 1e3, len(lat),
                                            cut, size))
        assert p99(lat) < 0.05, "p99 %.1f ms under the attack" % (p99(lat) * 1e3)
        assert cut >= n / 2, "slow connections were not cut off (%d)" % cut
        assert size < 100000, "log grew to %d bytes" % size


@test
def running_out_of_descriptors_backs_off_accepting_and_serves_on():
    skip_if_sanitizer()
    with Todod(workers=1, request_timeout=3) as d:
        d.start(nofile=64)
        with d.Client(timeout=5) as c:
            assert c.request("GET", "/health").status == 200
            (pid,) = d.worker_pids()
            socks = []
            for _ in range(120):  # more connections than the worker has descriptors
                try:
                    s = connect(d, timeout=1)
                    s.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    socks.append(s)
                except OSError:
                    break
            time.sleep(0.5)
            cpu0 = proc_cpu(pid)
            lat = []
            for _ in range(300):
                t0 = time.monotonic()
                assert c.request("GET", "/health").status == 200
                lat.append(time.monotonic() - t0)
                time.sleep(0.005)
            cpu = proc_cpu(pid) - cpu0
            lat.sort()
            for s in socks:
                s.close()
        log = d.log()
        lines = log.count("accept() failed")
        print("    (descriptors exhausted: /health p99 %.2f ms; worker CPU %.2f s over %.1f s; "
              "%d log lines about it; %d accept errors counted)"
              % (p99(lat) * 1e3, cpu, 300 * 0.005 + sum(lat), lines,
                 metric(d.metrics(), "todod_http_accept_errors_total")))
        assert p99(lat) < 0.05, "p99 %.1f ms" % (p99(lat) * 1e3)
        assert metric(d.metrics(), "todod_http_accept_errors_total") >= 1
        assert 1 <= lines <= 3, "%d log lines about accept()" % lines
        assert cpu < 1.0, "the worker spun: %.2f s of CPU" % cpu
        # once the slow connections are gone, new ones are served again
        assert wait_until(lambda: d.request("GET", "/health").status == 200, 10)


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- draining ------------------------------------------------------------------------------


def half_sent_post(d, title):
    body = json.dumps({"title": title}).encode()
    s = connect(d, timeout=10)
    s.sendall(post("Content-Length: %d\r\n" % len(body), body[:5]))
    return s, body[5:]


@test
def a_post_whose_body_is_still_arriving_at_sigterm_is_answered():
    with Todod(workers=2) as d:
        d.start()
        s, rest = half_sent_post(d, "during the stop")
        time.sleep(0.2)
        d.signal(signal.SIGTERM)
        time.sleep(0.5)
        s.sendall(rest)
        raw, closed = read_all(s, 5)
        s.close()
        (resp,) = parse_responses(raw)
        assert resp[1] == 201, resp
        assert resp[2].get("connection", "").lower() == "close", resp[2]
        assert d.wait(15) == 0
        assert d.pg.psql("SELECT count(*) FROM todos WHERE title = 'during the stop'",
                         db=d.db) == "1"


@test
def a_post_whose_body_is_still_arriving_at_a_reload_is_answered():
    with Todod(workers=1) as d:
        d.start()
        old = d.worker_pids()
        s, rest = half_sent_post(d, "during the reload")
        time.sleep(0.2)
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: len(d.worker_pids()) == 2, 5)
        time.sleep(0.5)
        assert old[0] in d.worker_pids(), "the old worker left with a request half received"
        s.sendall(rest)
        raw, _ = read_all(s, 5)
        s.close()
        (resp,) = parse_responses(raw)
        assert resp[1] == 201, resp
        assert wait_until(lambda: old[0] not in d.worker_pids(), 5)
        assert d.pg.psql("SELECT count(*) FROM todos WHERE title = 'during the reload'",
                         db=d.db) == "1"


def keepalive_answer(s, path="/live"):
    """GET path on s, an HTTP/1.1 keep-alive connection: its one answer, as
    parse_responses gives it, once it has all arrived."""
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    s.settimeout(3)
    data = b""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep and len(rest) >= int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1)):
            (resp,) = parse_responses(data)
            return resp
        b = s.recv(65536)
        assert b, "closed before an answer: %r" % data
        data += b


def answered_then_closed(s, path="/todos?limit=1"):
    """GET path on s: True when it is answered 200 with "Connection: close" and the
    connection closes right after."""
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    raw, closed = read_all(s, 3)
    responses = parse_responses(raw)
    assert [r[1] for r in responses] == [200], responses
    assert responses[0][2].get("connection", "").lower() == "close", responses[0][2]
    assert closed, "not closed after an answer that said Connection: close"
    return True


def still_open(s):
    """The server has not closed s (and sent nothing on it)."""
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        s.setblocking(True)


DRAINING_RE = re.compile(r"stopping: \d+ connections open")


@test
def a_retiring_worker_answers_the_next_request_on_an_idle_keepalive_connection():
    # A reload retires the worker: its idle keep-alive connections are not closed
    # under a request that may be on its way; the next request on one is answered
    # with "Connection: close", and one that stays idle closes shortly before
    # shutdown_timeout (4 s here: after 3 s).
    with Todod(workers=1, shutdown_timeout=4) as d:
        d.start()
        used, unused = connect(d), connect(d)
        for s in (used, unused):
            resp = keepalive_answer(s)
            assert resp[1] == 200 and "connection" not in resp[2], resp
        old = d.worker_pids()
        t0 = time.monotonic()
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: DRAINING_RE.search(d.log()), 5), d.log_tail()
        time.sleep(0.5)
        assert still_open(used) and still_open(unused), "an idle connection closed at the reload"
        assert old[0] in d.worker_pids()
        assert answered_then_closed(used)
        _, closed = read_all(unused, 10)
        took = time.monotonic() - t0
        assert closed, "an idle connection still open 10 s after the reload"
        assert took >= 2.5, "an idle connection closed %.2f s after the reload, before 3 s" % took
        assert wait_until(lambda: old[0] not in d.worker_pids(), 5), "the old worker stayed"


@test
def a_stopping_worker_tells_keepalive_clients_to_close_and_answers_idle_ones():
    # SIGTERM: for drain_delay (1 s here) every answer says "Connection: close";
    # then the socket closes, and a connection still idle is kept for its next
    # request until shortly before shutdown_timeout (4 s: 3 s after draining began).
    with Todod(workers=1, shutdown_timeout=4, drain_delay=1) as d:
        d.start()
        early, late, unused = connect(d), connect(d), connect(d)
        for s in (early, late, unused):
            assert keepalive_answer(s)[1] == 200
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert answered_then_closed(early)
        assert wait_until(lambda: DRAINING_RE.search(d.log()), 5), d.log_tail()
        time.sleep(0.5)
        assert still_open(late) and still_open(unused), "an idle connection closed at the drain"
        assert answered_then_closed(late)
        _, closed = read_all(unused, 10)
        took = time.monotonic() - t0
        assert closed, "an idle connection still open 10 s after SIGTERM"
        assert took >= 1 + 2.5, "an idle connection closed %.2f s after SIGTERM, before 4 s" % took
        assert d.wait(10) == 0


@test
def a_connection_whose_first_request_has_not_begun_is_served_when_draining():
    # Not an idle keep-alive connection: its client connected to send a request
    # (as one accepted from the backlog while the worker stops does).
    with Todod(workers=1, shutdown_timeout=5, request_timeout=2) as d:
        d.start()
        fresh = connect(d)
        assert d.request("GET", "/live").status == 200  # the worker has accepted both
        slow, _ = half_sent_post(d, "keeps the worker draining")
        d.signal(signal.SIGTERM)
        time.sleep(0.3)
        fresh.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        raw, closed = read_all(fresh, 2)
        responses = parse_responses(raw)
        assert [r[1] for r in responses] == [200], "no answer on a connection opened before the stop"
        assert responses[0][2].get("connection", "").lower() == "close", responses[0][2]
        assert closed
        slow.close()
        d.wait(15)


@test
def once_the_workers_stop_accepting_new_connections_are_refused_not_reset():
    with Todod(workers=2, shutdown_timeout=5) as d:
        d.start()
        slow, _ = half_sent_post(d, "keeps a worker draining")
        d.signal(signal.SIGTERM)
        time.sleep(0.5)
        assert d.running()
        try:
            s = connect(d, timeout=1)
        except ConnectionRefusedError:
            pass
        else:
            s.close()
            raise AssertionError("a connection was accepted by a daemon that stopped accepting")
        slow.close()
        d.wait(15)


# ---- access log and Server-Timing ----------------------------------------------------------


@test
def the_access_log_is_combined_format_escaped_and_written_whatever_log_level_says():
    with Todod(workers=1, access_log="on", log_level="warn") as d:
        d.start()
        d.request("GET", "/todos?page=2&limit=3",
                  headers={"User-Agent": 'evil "ua" \\ \xe9', "Referer": "http://r/"})
        assert wait_until(lambda: "/todos?page=2&limit=3" in d.log(), 2), d.log()
        line = [l for l in d.log().splitlines() if "/todos?page=2" in l][0]
        m = re.match(r'^(\S+) - - \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] '
                     r'"GET /todos\?page=2&limit=3 HTTP/1\.1" 200 (\d+) "http://r/" '
                     r'"evil \\x22ua\\x22 \\x5c \\xe9" (\d+\.\d{6}) -$', line)
        assert m, line
        assert m.group(1) == "127.0.0.1" and int(m.group(3)) > 0
        raw = d.log().encode("latin-1", "replace")
        assert b"\x1b" not in raw and b"\xe9" not in raw


@test
def the_access_log_in_json_is_one_object_per_line():
    with Todod(workers=1, access_log="on", access_log_format="json") as d:
        d.start()
        d.request("GET", "/todos/not-a-uuid?x=1", headers={"User-Agent": "a\xe9"})
        assert wait_until(lambda: "not-a-uuid" in d.log(), 2)
        line = [l for l in d.log().splitlines() if "not-a-uuid" in l][0]
        e = json.loads(line)
        assert e["request"] == "GET /todos/not-a-uuid?x=1 HTTP/1.1", e
        assert e["status"] == 400 and e["user_agent"] == "a\\xe9" and e["trace_id"] == "-", e
        assert e["remote_addr"] == "127.0.0.1" and e["duration"] >= 0, e


@test
def a_rejected_request_is_logged_with_the_line_it_sent():
    with Todod(workers=1, access_log="on") as d:
        d.start()
        exchange(d, b"GET /x HTTP/1.9\r\nHost: y\r\n\r\n")
        assert wait_until(lambda: '"GET /x HTTP/1.9" 505' in d.log(), 2), d.log()


@test
def database_backed_answers_carry_server_timing():
    with Todod(workers=1) as d:
        d.start()
        todo = d.request("POST", "/todos", {"title": "t"})
        for r in (todo, d.request("GET", "/todos/" + todo.json()["id"]), d.request("GET", "/todos"),
                  d.request("GET", "/todos/not-a-uuid")):
            st = r.headers.get("server-timing", "")
            # desc: who answered (API.md "Read consistency"); none for a 400
            m = re.match(r'^db;dur=(\d+\.\d{3})(;desc="primary")?, total;dur=(\d+\.\d{3})$', st)
            assert m, (r, st)
            assert float(m.group(1)) <= float(m.group(3)), st
            assert bool(m.group(2)) == (r.status != 400), st
        assert "server-timing" not in d.request("GET", "/health").headers


@test
def every_answer_carries_a_date_in_imf_fixdate():
    # RFC 9110 6.6.1: an origin server with a clock sends Date, HTTP/1.0 included.
    import email.utils
    with Todod(workers=1) as d:
        d.start()
        answers = [
            exchange(d, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0][0],
            exchange(d, b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0.5)[0][0],
            exchange(d, b"HEAD /todos HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0][0],
            exchange(d, b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0][0],
            exchange(d, b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n")[0][0],
        ]
        for version, status, headers, body in answers:
            date = headers.get("date", "")
            assert re.match(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
                            r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
                            r"\d\d:\d\d:\d\d GMT$", date), (status, headers)
            assert abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 5, date
        assert [a[1] for a in answers] == [200, 200, 200, 404, 400], [a[:2] for a in answers]
        assert answers[2][3] == b"" and int(answers[2][2]["content-length"]) > 0, answers[2]


@test
def framing_rejections_on_database_backed_routes_carry_server_timing():
    # Answered by the framing gate before any handler ran: the route is the one
    # the request line names, db;dur is 0 and total the time since its first byte.
    with Todod(workers=1, max_body_size="1k") as d:
        d.start()
        cases = [
            (post("Content-Length: 5000\r\n", b""), 413, True),
            (b"PUT /todos/%s?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
             % str(uuid.uuid4()).encode(), 413, True),
            (b"GET /todos HTTP/1.1\r\nHost : x\r\n\r\n", 400, True),
            (b"POST /todos/performance-test HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
             413, True),
            (b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413, False),
            (b"GET /nowhere HTTP/1.1\r\nHost : x\r\n\r\n", 400, False),
            (b"GET /todos\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400, False),
        ]
        for data, status, timed in cases:
            (resp,), closed = exchange(d, data)
            assert resp[1] == status and closed, (data, resp)
            st = resp[2].get("server-timing")
            if timed:
                assert st and re.match(r"^db;dur=0\.000, total;dur=\d+\.\d{3}$", st), (data, st)
            else:
                assert st is None, (data, st)
        assert rows(d) == 0
