"""The OpenAPI document is the truth: real answers of a real todod, errors included,
validated against daemon/openapi.json by a validator nobody here wrote.

- Stoplight Prism's validation proxy (`prism proxy --errors --validate-request false`,
  @stoplight/prism-cli from the npm registry at an exact version, installed into
  tests/.tools/prism-<version>) sits between the tests and todod. With --errors, a
  response that violates the document becomes Prism's own
  `application/problem+json` error; lesser findings (a status the operation does not
  declare) only go into its `sl-violations` header: both fail the tests here. Request
  validation is off so that invalid requests reach todod and its error answers are
  validated too.
- What the proxy cannot carry is validated by the same library, Prism's
  validateOutput, called from openapi_conformance.js on answers captured from raw
  sockets: the framing layer's rejections (bad Content-Length, obsolete line
  folding, HTTP/2.0, 408, 414, 417, 431, ...), answers that belong to no operation
  (404 no route, 405 with Allow, 501: Prism routes them itself), 501 answers (Prism
  re-mocks an upstream 501), request bodies Prism parses and re-serializes
  (malformed or non-strict JSON) and the lines of a streamed performance test.
- Prism warns only when a status is not declared, and an operation's `default`
  response would accept any: here a status must be declared by the operation or be
  one of the framing statuses its `default` lists (x-status-codes), and every answer
  of a database-backed route must carry Server-Timing (API.md).
- openapi_validators_reject_violations shows that each path can fail: Prism and the
  driver both report a real answer that a broken copy of the document does not
  describe, and the driver checks that every schema of the document rejects a
  wrong body (a schema Prism cannot compile would otherwise pass silently).

Prism is stopped by its process group id whatever happens.
"""

import atexit
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

from lib.env import ROOT, free_port
from lib.marks import test
from lib.client import Client
from lib.todod import Todod
from lib.checks import wait_until

OPENAPI = os.path.join(ROOT, "daemon", "openapi.json")
DRIVER = os.path.join(ROOT, "tests", "integration", "openapi_conformance.js")
PRISM_PKG = "@stoplight/prism-cli"
PRISM_VERSION = "5.14.2"   # exact; 5.15 and later need Node.js >= 24 (Debian 12 has 18/20)
PRISM_DIR = os.path.join(ROOT, "tests", ".tools", "prism-" + PRISM_VERSION)
PRISM_JS = os.path.join(PRISM_DIR, "node_modules", "@stoplight", "prism-cli", "dist", "index.js")

MAX_BODY = 4096           # max_body_size of the daemons here: 413 is cheap to provoke
DB_ROUTE = re.compile(r"^/todos(/|$|\?)")
SERVER_TIMING = re.compile(r'^db;dur=[0-9]+\.[0-9]{3}(;desc="(primary|standby)")?, '
                           r'total;dur=[0-9]+\.[0-9]{3}$')
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


# --------------------------------------------------------------------------- tools

def _ensure_prism():
    """Install the pinned Prism into its own prefix unless it is already there."""
    node = shutil.which("node")
    assert node, "node not found (conf/dev/deps.sh test installs nodejs)"
    out = subprocess.run([node, "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
    major, minor = (int(x) for x in out.lstrip("v").split(".")[:2])
    assert (major, minor) >= (18, 20), f"Prism {PRISM_VERSION} needs Node.js >= 18.20, found {out}"
    pkg_json = os.path.join(PRISM_DIR, "node_modules", *PRISM_PKG.split("/"), "package.json")
    try:
        with open(pkg_json, encoding="utf-8") as f:
            if json.load(f).get("version") == PRISM_VERSION and os.path.exists(PRISM_JS):
                return
    except (OSError, ValueError):
        pass
    assert shutil.which("npm"), "npm not found (conf/dev/deps.sh test installs npm)"
    os.makedirs(PRISM_DIR, exist_ok=True)
    r = subprocess.run(["npm", "install", "--prefix", PRISM_DIR, "--no-audit", "--no-fund",
                        "--save-exact", f"{PRISM_PKG}@{PRISM_VERSION}"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert r.returncode == 0, f"npm install {PRISM_PKG}@{PRISM_VERSION} failed:\n{r.stdout}"


def _load_doc(path=OPENAPI):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _deref(doc, node):
    while isinstance(node, dict) and "$ref" in node:
        target = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _declared(doc, method, template):
    """Statuses an operation may answer: its own, and those its default lists."""
    op = doc["paths"][template][method.lower()]
    codes = {k for k in op["responses"] if k != "default"}
    default = _deref(doc, op["responses"].get("default"))
    codes |= {str(c) for c in (default or {}).get("x-status-codes", [])}
    return codes


_LIVE = set()   # Prism processes not yet stopped (stopped at exit too, by their ids)


class Prism:
    """`prism proxy --errors` in front of upstream, in its own process group."""

    def __init__(self, document, upstream):
        self.document, self.upstream = document, upstream
        self.proc = None
        self.port = None
        fd, self.log_path = tempfile.mkstemp(prefix="prism-", suffix=".log")
        os.close(fd)

    def start(self):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "NODE_ENV"}  # one process (-m off)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["node", PRISM_JS, "proxy", "--errors", "--validate-request", "false", "--cors", "false",
                 "--verboseLevel", "warn", "-h", "127.0.0.1", "-p", str(self.port),
                 self.document, self.upstream],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)
        _LIVE.add(self)
        return self

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("prism exited with %s:\n%s" % (self.proc.returncode, self.log_text()))
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("prism did not listen within %ds:\n%s" % (timeout, self.log_text()))

    def log_text(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self):
        """SIGTERM to its process group (its own session: pgid == pid), SIGKILL after 5 s."""
        _LIVE.discard(self)
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(5)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass
        return False


@atexit.register
def _stop_live_prisms():
    for p in list(_LIVE):
        p.stop()


# --------------------------------------------------------------------------- requests

def _json(obj):
    """Compact JSON, as Prism's JSON.stringify re-serializes a request body."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


JSON_CT = {"Content-Type": "application/json"}


class Checker:
    """Sends requests through Prism and collects what is wrong with the answers."""

    def __init__(self, prism, doc):
        self.client = Client("127.0.0.1", prism.port, timeout=30, retry=False)
        self.doc = doc
        self.problems = []
        self.count = 0

    def __call__(self, method, path, template, want, body=None, headers=None, fragment=None):
        """Send; the answer must have status want, pass Prism and be declared by the
        operation (method, template); on a database-backed route it must carry
        Server-Timing, even when the framing layer answered before routing.
        Returns the Response."""
        self.count += 1
        what = "%s %s" % (method, path)
        r = self.client.request(method, path, body=body, headers=headers)
        ctype = r.headers.get("content-type", "")
        if ctype.startswith("application/problem+json"):
            self.problems.append("%s: Prism refused todod's answer: %s" % (what, r.text[:1500]))
            return r
        if "sl-violations" in r.headers:
            self.problems.append("%s -> %d: Prism found %s" % (what, r.status, r.headers["sl-violations"]))
        if r.status != want:
            self.problems.append("%s: want %d, got %d %r" % (what, want, r.status, r.body[:300]))
        if str(r.status) not in _declared(self.doc, method, template):
            self.problems.append("%s: status %d is not declared by %s %s" % (what, r.status, method, template))
        if DB_ROUTE.match(path) and not SERVER_TIMING.match(r.headers.get("server-timing", "")):
            self.problems.append("%s -> %d: Server-Timing %r" % (what, r.status, r.headers.get("server-timing")))
        if fragment is not None and r.status >= 400:
            try:
                msg = r.json().get("error", "")
            except ValueError:
                msg = ""
            if fragment.lower() not in msg.lower():
                self.problems.append("%s: error %r does not say %r" % (what, msg, fragment))
        return r

    def assert_clean(self):
        assert not self.problems, "%d of %d answers do not conform to daemon/openapi.json:\n%s" % (
            len(self.problems), self.count, "\n".join(self.problems))

    def close(self):
        self.client.close()


def _raw(host, port, data, method="GET", timeout=10, parts=None, pause=0.0):
    """Send raw bytes (or parts with pauses); parse one answer -> (status, headers, body)."""
    s = socket.create_connection((host, port), timeout)
    try:
        for i, part in enumerate(parts or [data]):
            if i and pause:
                time.sleep(pause)
            s.sendall(part)
        resp = http.client.HTTPResponse(s, method=method)
        resp.begin()
        body = resp.read()
        headers = {}
        for k, v in resp.getheaders():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        return resp.status, headers, body
    finally:
        s.close()


def _exchange(name, method, path, answer, kind="route"):
    status, headers, body = answer
    return {"name": name, "method": method, "path": path, "status": status, "headers": headers,
            "body_b64": base64.b64encode(body).decode("ascii"), "as": kind}


def _run_driver(exchanges, document=OPENAPI):
    """Validate exchanges with openapi_conformance.js -> {name: [violations]}, output."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(exchanges, f)
    try:
        r = subprocess.run(["node", DRIVER, PRISM_DIR, document, "validate", f.name],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.unlink(f.name)
    assert r.returncode in (0, 1), "openapi_conformance.js failed (%d):\n%s%s" % (
        r.returncode, r.stdout[-2000:], r.stderr[-4000:])
    results = {}
    for line in r.stdout.splitlines():
        o = json.loads(line)
        results[o["name"]] = o
    missing = {e["name"] for e in exchanges} - set(results)
    assert not missing, "no verdict for %s:\n%s" % (sorted(missing), r.stderr[-2000:])
    return results


def _ndjson_exchanges(name, answer):
    """One exchange per line of a streamed performance test."""
    status, headers, body = answer
    lines = body.decode("utf-8").split("\n")
    assert lines[-1] == "", "%s: the stream does not end with a newline: %r" % (name, body[-200:])
    lines = lines[:-1]
    assert lines, "%s: empty stream" % name
    out = []
    for i, line in enumerate(lines):
        kind = "report-line" if i == len(lines) - 1 else "progress-line"
        out.append(_exchange("%s line %d" % (name, i + 1), "GET", "/", (200, {"content-type": "application/json"},
                                                                          line.encode("utf-8")), kind))
    return out


# --------------------------------------------------------------------------- the tests

def _start_pair(doc_path=OPENAPI, workers=1, **conf):
    """A todod and a Prism proxy in front of it, started side by side."""
    d = Todod(workers=workers, max_body_size=MAX_BODY, **conf)
    prism = Prism(doc_path, "http://127.0.0.1:%d" % d.port).start()
    return d, prism


@test
def openapi_answers_validated_by_prism_proxy():
    """Every route, its successes and the errors a client can provoke, through Prism."""
    _ensure_prism()
    doc = _load_doc()
    d, prism = _start_pair(workers=2)
    with d, prism:
        d.start()
        prism.wait_ready()
        c = Checker(prism, doc)
        try:
            c("GET", "/health", "/health", 200)
            c("GET", "/live", "/live", 200)
            c("GET", "/ready", "/ready", 200)
            c("GET", "/api-docs/openapi.json", "/api-docs/openapi.json", 200)
            c("GET", "/dashboard", "/dashboard", 200)
            c("GET", "/todos", "/todos", 200)   # empty table

            # POST /todos
            made = c("POST", "/todos", "/todos", 201, _json({"title": "buy milk"}), JSON_CT)
            c.assert_clean()   # the rest needs that todo
            tid = made.json()["id"]
            assert made.headers.get("location") == "/todos/" + tid, made.headers
            c("POST", "/todos", "/todos", 201,
              _json({"title": "é ☃ 𝄞 \"q\" \\ \t\u0001 " + "x" * 200, "done": True, "extra": [1]}), JSON_CT)
            c("POST", "/todos", "/todos", 415, b"buy milk", {"Content-Type": "text/plain"}, "Content-Type")
            c("POST", "/todos", "/todos", 400, b"", JSON_CT, "empty")
            c("POST", "/todos", "/todos", 422, _json({}), JSON_CT, "title")
            c("POST", "/todos", "/todos", 422, _json([{"title": "x"}]), JSON_CT, "object")
            c("POST", "/todos", "/todos", 422, _json({"title": 5}), JSON_CT, "title")
            c("POST", "/todos", "/todos", 422, _json({"title": ""}), JSON_CT, "title")
            c("POST", "/todos", "/todos", 422, _json({"title": "x" * 256}), JSON_CT, "title")
            c("POST", "/todos", "/todos", 422, _json({"title": "a\u0000b"}), JSON_CT, "NUL")
            c("POST", "/todos", "/todos", 422, _json({"title": "x", "done": "yes"}), JSON_CT, "done")
            # Content-Length over max_body_size: refused by the framing gate, before any handler
            c("POST", "/todos", "/todos", 413, _json({"title": "x" * (MAX_BODY + 10)}), JSON_CT, "larger")

            # the performance test (before the lists, so that they have rows)
            c("POST", "/todos/performance-test", "/todos/performance-test", 200,
              _json({"message_count": 25, "batch_size": 7}), JSON_CT)
            c("POST", "/todos/performance-test", "/todos/performance-test", 200,
              _json({"message_count": 40, "batch_size": 5, "workers": "all"}), JSON_CT)
            # spread over the workers, paced, streamed: about 0.3 s of progress lines
            streamed = c("POST", "/todos/performance-test", "/todos/performance-test", 200,
                         _json({"message_count": 300, "batch_size": 10, "workers": "all", "rate": 1000,
                                "progress_interval_ms": 100}),
                         dict(JSON_CT, Accept="application/x-ndjson"))
            for body, want, frag in (
                    ({}, 422, "message_count"), ({"message_count": 0}, 422, "message_count"),
                    ({"message_count": 10 ** 9}, 422, "message_count"),
                    ({"message_count": "5"}, 422, "message_count"),
                    ({"message_count": 5, "batch_size": 0}, 422, "batch_size"),
                    ({"message_count": 5, "batch_size": 10 ** 6}, 422, "batch_size")):
                c("POST", "/todos/performance-test", "/todos/performance-test", want, _json(body),
                  JSON_CT, frag)
            c("POST", "/todos/performance-test", "/todos/performance-test", 415,
              b'{"message_count":5}', {"Content-Type": "text/plain"})
            c("POST", "/todos/performance-test", "/todos/performance-test", 400, b"", JSON_CT)
            # a running test stopped: its report, then 404; a malformed run_id is 400
            running = threading.Thread(target=lambda: d.request(
                "POST", "/todos/performance-test",
                {"message_count": 20000, "batch_size": 10, "workers": "all", "rate": 1000},
                timeout=60))
            running.start()
            started = re.compile(r"performance test (\S+): 20000 todos")
            assert wait_until(lambda: started.search(d.log()), 10), d.log_tail()
            run_id = started.search(d.log()).group(1)
            cancel = "/todos/performance-test/" + run_id
            stopped = c("DELETE", cancel, "/todos/performance-test/{run_id}", 200)
            running.join(60)
            assert stopped.json().get("cancelled") is True, stopped.body
            c("DELETE", cancel, "/todos/performance-test/{run_id}", 404, fragment="no performance")
            c("DELETE", "/todos/performance-test/x1", "/todos/performance-test/{run_id}", 400,
              fragment="run_id")

            # GET /todos
            c("GET", "/todos?page=2&limit=5", "/todos", 200)
            c("GET", "/todos?limit=1000", "/todos", 200)    # clamped to 100
            c("GET", "/todos?limit=0", "/todos", 200)       # clamped to 1
            c("GET", "/todos?page=1000", "/todos", 200)     # past the end: empty page
            for q in ("page=abc", "page=0", "page=-1", "page=1.5", "limit=ten", "page=100000001"):
                c("GET", "/todos?" + q, "/todos", 400, fragment=q.split("=")[0])
            # GET /todos by cursor: a page with a next, the last page, and refusals
            first = c("GET", "/todos?limit=1", "/todos", 200)
            cursor = first.json()["pagination"]["next_cursor"]
            c("GET", "/todos?after=%s&limit=1" % cursor, "/todos", 200)
            c("GET", "/todos?after=%s&limit=100" % cursor, "/todos", 200)
            c("GET", "/todos?after=%s&page=2" % cursor, "/todos", 400, fragment="page")
            c("GET", "/todos?after=" + cursor[::-1], "/todos", 400, fragment="invalid cursor")

            # GET /todos/done/{done}
            c("GET", "/todos/done/true", "/todos/done/{done}", 200)
            c("GET", "/todos/done/false?limit=3&page=2", "/todos/done/{done}", 200)
            c("GET", "/todos/done/true?limit=5000", "/todos/done/{done}", 200)   # clamped to 1000
            c("GET", "/todos/done/maybe", "/todos/done/{done}", 400, fragment="done")
            c("GET", "/todos/done/true?page=x", "/todos/done/{done}", 400, fragment="page")

            # /todos/{id}
            gone = str(uuid.uuid4())
            c("GET", "/todos/" + tid, "/todos/{id}", 200)
            c("GET", "/todos/" + tid.upper(), "/todos/{id}", 200)
            c("GET", "/todos/not-a-uuid", "/todos/{id}", 400, fragment="id")
            c("GET", "/todos/" + gone, "/todos/{id}", 404, fragment="not found")
            c("PUT", "/todos/" + tid, "/todos/{id}", 200, _json({"done": True}), JSON_CT)
            c("PUT", "/todos/" + tid, "/todos/{id}", 200, _json({"title": "renamed"}), JSON_CT)
            c("PUT", "/todos/" + tid, "/todos/{id}", 200, _json({}), JSON_CT)
            c("PUT", "/todos/" + gone, "/todos/{id}", 404, _json({"done": True}), JSON_CT)
            c("PUT", "/todos/xyz", "/todos/{id}", 400, _json({"done": True}), JSON_CT, "id")
            c("PUT", "/todos/" + tid, "/todos/{id}", 415, b'{"done":true}', {"Content-Type": "text/plain"})
            c("PUT", "/todos/" + tid, "/todos/{id}", 422, _json({"done": "yes"}), JSON_CT, "done")
            c("PUT", "/todos/" + tid, "/todos/{id}", 422, _json({"title": ""}), JSON_CT, "title")
            c("PUT", "/todos/" + tid, "/todos/{id}", 422, _json([]), JSON_CT, "object")
            c("PUT", "/todos/" + tid, "/todos/{id}", 413, _json({"title": "x" * (MAX_BODY + 10)}), JSON_CT)
            c("DELETE", "/todos/" + tid, "/todos/{id}", 204)
            c("DELETE", "/todos/" + tid, "/todos/{id}", 404, fragment="not found")
            c("DELETE", "/todos/12345", "/todos/{id}", 400, fragment="id")
            c("GET", "/todos/" + tid, "/todos/{id}", 404)

            # last: the figures of everything above
            c("GET", "/metrics", "/metrics", 200)
            stats = c("GET", "/stats", "/stats", 200)
        finally:
            c.close()
        c.assert_clean()
        assert all(isinstance(w["started_at"], int) for w in stats.json()["workers"]), stats.body

        # A streamed answer: Prism sees a string; its lines are checked one by one.
        if streamed.headers.get("content-type", "").startswith("application/x-ndjson"):
            ex = _ndjson_exchanges("streamed performance test",
                                   (streamed.status, streamed.headers, streamed.body))
            bad = {k: v for k, v in _run_driver(ex).items() if v["violations"]}
            assert not bad, "streamed lines do not conform:\n%s" % json.dumps(bad, indent=1)


@test
def openapi_answers_without_database_validated_by_prism_proxy():
    """503 from every database-backed route, /health and /ready, then /ready while
    draining, through Prism."""
    _ensure_prism()
    doc = _load_doc()
    d, prism = _start_pair(database_url="postgresql://todod@127.0.0.1:%d/none?connect_timeout=1"
                           % free_port(), drain_delay=1)
    with d, prism:
        d.start(wait="http")
        prism.wait_ready()
        c = Checker(prism, doc)
        some = str(uuid.uuid4())
        try:
            c("GET", "/health", "/health", 503, fragment="database unavailable")
            c("GET", "/ready", "/ready", 503, fragment="database unavailable")
            c("GET", "/live", "/live", 200)
            c("GET", "/todos", "/todos", 503, fragment="database")
            c("POST", "/todos", "/todos", 503, _json({"title": "x"}), JSON_CT, "database")
            c("GET", "/todos/" + some, "/todos/{id}", 503, fragment="database")
            c("PUT", "/todos/" + some, "/todos/{id}", 503, _json({"done": True}), JSON_CT, "database")
            c("DELETE", "/todos/" + some, "/todos/{id}", 503, fragment="database")
            c("GET", "/todos/done/false", "/todos/done/{done}", 503, fragment="database")
            c("POST", "/todos/performance-test", "/todos/performance-test", 503,
              _json({"message_count": 10}), JSON_CT, "database")
            stats = c("GET", "/stats", "/stats", 200)
            c.assert_clean()
            assert not stats.json()["workers"][0]["db_connected"], stats.body
            c("GET", "/metrics", "/metrics", 200)
            d.signal(signal.SIGTERM)        # drain_delay: /ready says so, the rest is served
            c.client.close()
            time.sleep(0.1)
            c("GET", "/ready", "/ready", 503, fragment="draining")
        finally:
            c.close()
        c.assert_clean()


def _framing_cases(uuid_path):
    """(name, method, path, request bytes, want status, kind): answers Prism cannot
    forward or would not forward as sent. method and path name the operation the
    request was meant for; kind is "route" (validated against that operation),
    "handler" (the same, answered by the route itself: Server-Timing on /todos...)
    or "unrouted" (x-unrouted-responses)."""
    H = b"Host: t\r\n"
    big = str(MAX_BODY + 1).encode()
    cases = [
        # a route that answers normally, so that a driver which routes nothing fails
        ("GET /health", "GET", "/health", b"GET /health HTTP/1.1\r\n" + H + b"\r\n", 200, "route"),
        # framing-layer rejections of requests meant for an operation
        ("whitespace before a colon", "GET", "/health", b"GET /health HTTP/1.1\r\nHost : t\r\n\r\n", 400, "route"),
        ("obsolete line folding", "GET", "/health",
         b"GET /health HTTP/1.1\r\n" + H + b"X-A: 1\r\n  folded\r\n\r\n", 400, "route"),
        ("no Host", "GET", "/todos", b"GET /todos HTTP/1.1\r\n\r\n", 400, "route"),
        ("two Hosts", "GET", "/todos", b"GET /todos HTTP/1.1\r\n" + H + H + b"\r\n", 400, "route"),
        ("Content-Length +14", "POST", "/todos",
         b"POST /todos HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\nContent-Length: +14\r\n\r\n"
         b'{"title":"ab"}', 400, "route"),
        ("Content-Length abc", "PUT", uuid_path,
         b"PUT " + uuid_path.encode() + b" HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n", 400, "route"),
        ("conflicting Content-Length", "POST", "/todos",
         b"POST /todos HTTP/1.1\r\n" + H + b"Content-Length: 14\r\nContent-Length: 15\r\n\r\n"
         b'{"title":"ab"}', 400, "route"),
        ("Content-Length and Transfer-Encoding", "POST", "/todos/performance-test",
         b"POST /todos/performance-test HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "route"),
        ("Transfer-Encoding gzip", "POST", "/todos",
         b"POST /todos HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 501, "route"),
        ("malformed chunk size", "POST", "/todos",
         b"POST /todos HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\n"
         b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "route"),
        ("chunked body too large", "POST", "/todos",
         b"POST /todos HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_BODY + 1) + b"a" * (MAX_BODY + 1) + b"\r\n0\r\n\r\n",
         413, "route"),
        ("Content-Length too large", "POST", "/todos",
         b"POST /todos HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\nContent-Length: " + big
         + b"\r\n\r\n", 413, "route"),
        ("HTTP/2.0", "GET", "/health", b"GET /health HTTP/2.0\r\n" + H + b"\r\n", 505, "route"),
        ("target too long", "GET", "/todos", b"GET /todos?q=" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n",
         414, "route"),
        ("head too large", "GET", "/stats",
         b"GET /stats HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n", 431, "route"),
        ("too many header fields", "GET", "/metrics",
         b"GET /metrics HTTP/1.1\r\n" + H + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n",
         431, "route"),
        ("Expect: teapot", "GET", "/live", b"GET /live HTTP/1.1\r\n" + H + b"Expect: teapot\r\n\r\n", 417, "route"),
        # request bodies Prism would refuse or re-serialize: strict JSON
        ("no Content-Type", "POST", "/todos",
         b"POST /todos HTTP/1.1\r\n" + H + b"Content-Length: 14\r\n\r\n" + b'{"title":"ab"}', 415, "handler"),
        ("PUT without Content-Type", "PUT", uuid_path,
         b"PUT " + uuid_path.encode() + b" HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n\r\n{}", 415, "handler"),
    ]
    for label, path, body in (
            ("malformed JSON", "/todos", b"{bad}"),
            ("duplicate member", "/todos", b'{"title":"a","title":"b"}'),
            ("NaN", "/todos", b'{"title":"a","done":NaN}'),
            ("trailing comma", "/todos", b'{"title":"a",}'),
            ("single quotes", uuid_path, b"{'done': true}"),
            ("byte-order mark", "/todos", b'\xef\xbb\xbf{"title":"a"}'),
            ("raw tab in a string", "/todos", b'{"title":"a\tb"}'),
            ("lone surrogate", "/todos", b'{"title":"\\ud800"}'),
            ("invalid UTF-8", "/todos", b'{"title":"\xff\xfe"}'),
            ("trailing garbage", "/todos/performance-test", b'{"message_count":5} x'),
            ("leading zero", "/todos/performance-test", b'{"message_count":05}'),
            ("1.", "/todos/performance-test", b'{"message_count":1.}'),
            ("nesting 33 deep", "/todos", b'{"title":"a","x":' + b"[" * 32 + b"]" * 32 + b"}")):
        method = "PUT" if path == uuid_path else "POST"
        req = (method.encode() + b" " + path.encode() + b" HTTP/1.1\r\n" + H
               + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        cases.append((label, method, path, req, 400, "handler"))
    # answers that belong to no operation
    for method, path in (("GET", "/nope"), ("GET", "/todos/"), ("GET", "/health/x"), ("GET", "/%ff%fe")):
        cases.append(("%s %s" % (method, path), method, path,
                      method.encode() + b" " + path.encode() + b" HTTP/1.1\r\n" + H + b"\r\n", 404, "unrouted"))
    for method, path in (("PATCH", "/todos"), ("DELETE", "/todos"), ("POST", "/health"), ("PUT", "/stats"),
                         ("GET", "/todos/performance-test"), ("PATCH", uuid_path),
                         ("POST", "/todos/done/true"), ("OPTIONS", "/metrics"), ("TRACE", "/dashboard"),
                         ("DELETE", "/api-docs/openapi.json")):
        cases.append(("%s %s" % (method, path), method, path,
                      method.encode() + b" " + path.encode() + b" HTTP/1.1\r\n" + H
                      + b"Content-Length: 0\r\n\r\n", 405, "unrouted"))
    cases += [
        ("unknown method", "BREW", "/todos", b"BREW /todos HTTP/1.1\r\n" + H + b"\r\n", 501, "unrouted"),
        ("not a request line", "GET", "/", b"hello\r\n\r\n", 400, "unrouted"),
        ("control byte in the target", "GET", "/", b"GET /he\x01lth HTTP/1.1\r\n" + H + b"\r\n", 400, "unrouted"),
    ]
    return cases


def _template_of(doc, path):
    """The path template a request path belongs to by OpenAPI's rule (concrete
    paths before templated ones), or None."""
    segs = path.split("?")[0].split("/")
    best = None
    for template in doc["paths"]:
        t = template.split("/")
        if len(t) != len(segs):
            continue
        if all(a == b or (a.startswith("{") and a.endswith("}") and b) for a, b in zip(t, segs)):
            concrete = "{" not in template
            if best is None or concrete:
                best = template
    return best


@test
def openapi_answers_prism_cannot_forward():
    """Framing rejections, unrouted answers (404, 405 with Allow, 501) and strict-JSON
    refusals, captured from raw sockets and validated by Prism's validateOutput."""
    _ensure_prism()
    doc = _load_doc()
    uuid_path = "/todos/" + str(uuid.uuid4())
    with Todod(workers=1, max_body_size=MAX_BODY, request_timeout=1) as d:
        d.start()
        # 408: a head that never ends, left to run out while the other cases go
        slow = {}

        def trickle():
            try:
                slow["answer"] = _raw(d.host, d.port, None, parts=[b"GET /live HTTP/1.1\r\n", b"Host: t\r\n"],
                                      pause=0.2)
            except Exception as e:  # noqa: BLE001 - reported below
                slow["error"] = e
        t = threading.Thread(target=trickle)
        t.start()
        exchanges, problems = [], []
        for name, method, path, data, want, kind in _framing_cases(uuid_path):
            status, headers, body = _raw(d.host, d.port, data, method=method)
            if status != want:
                problems.append("%s: want %d, got %d %r" % (name, want, status, body[:200]))
            if status == 405:
                template = _template_of(doc, path)
                documented = {m.upper() for m in doc["paths"][template] if m in HTTP_METHODS}
                documented |= {"HEAD"} if "GET" in documented else set()
                allow = {m.strip() for m in headers.get("allow", "").split(",") if m.strip()}
                if allow != documented:
                    problems.append("%s: Allow %r, the document has %s for %s"
                                    % (name, headers.get("allow"), sorted(documented), template))
            if kind in ("route", "handler") and DB_ROUTE.match(path) \
                    and not SERVER_TIMING.match(headers.get("server-timing", "")):
                problems.append("%s -> %d: Server-Timing %r" % (name, status, headers.get("server-timing")))
            exchanges.append(_exchange(name, method, path, (status, headers, body),
                                       "route" if kind == "handler" else kind))
        t.join(10)
        assert "answer" in slow, "no answer to a head trickled past request_timeout: %r" % slow.get("error")
        if slow["answer"][0] != 408:
            problems.append("trickled head: want 408, got %r" % (slow["answer"],))
        exchanges.append(_exchange("trickled head", "GET", "/live", slow["answer"]))
    for name, result in _run_driver(exchanges).items():
        for v in result["violations"]:
            problems.append("%s (%s): %s" % (name, result["operation"], v["message"]))
    assert not problems, "%d problems in %d answers:\n%s" % (len(problems), len(exchanges), "\n".join(problems))


def _head_then_get(host, port, path, timeout=5):
    """HEAD path and GET /live pipelined on one connection -> (HEAD status line and
    headers as text, the bytes that follow the HEAD answer's head)."""
    s = socket.create_connection((host, port), timeout)
    try:
        s.sendall(b"HEAD %s HTTP/1.1\r\nHost: t\r\n\r\nGET /live HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            end = buf.find(b"\r\n\r\n")
            if end >= 0 and len(buf) >= end + 4 + 9:
                break
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        end = buf.find(b"\r\n\r\n")
        assert end >= 0, "HEAD %s: no answer: %r" % (path, buf[:200])
        return buf[:end].decode("latin-1"), buf[end + 4:]
    finally:
        s.close()


@test
def openapi_head_answers_like_get_without_body():
    """HEAD is answered wherever GET is (the document says so): the same status and
    Content-Type, and no body, so that the next answer on the connection is intact
    (RFC 9110 9.3.2)."""
    with Todod(workers=1) as d:
        d.start()
        problems = []
        for path in ("/health", "/live", "/ready", "/metrics", "/stats", "/api-docs/openapi.json", "/dashboard",
                     "/todos", "/todos/done/true", "/todos/" + str(uuid.uuid4()), "/nope"):
            get = d.request("GET", path)
            head, rest = _head_then_get(d.host, d.port, path)
            lines = head.split("\r\n")
            status = int(lines[0].split()[1])
            ctype = [l.split(":", 1)[1].strip() for l in lines[1:] if l.lower().startswith("content-type:")]
            if status != get.status:
                problems.append("HEAD %s: %d, GET gives %d" % (path, status, get.status))
            if ctype != [get.headers.get("content-type")]:
                problems.append("HEAD %s: Content-Type %r, GET gives %r"
                                % (path, ctype, get.headers.get("content-type")))
            if not rest.startswith(b"HTTP/1.1 200 "):
                problems.append("HEAD %s: a body follows the answer's head: %r" % (path, rest[:60]))
        assert not problems, "\n".join(problems)


def _broken_copy(doc, tmp):
    """The document with five lies in it, each about an answer todod really gives."""
    bad = json.loads(json.dumps(doc))
    c = bad["components"]
    c["schemas"]["Todo"]["properties"]["done"] = {"type": "string"}                 # a 201 body
    c["headers"]["ServerTiming"]["schema"]["pattern"] = "^never$"                    # a header
    bad["paths"]["/health"]["get"]["responses"]["200"]["content"] = {
        "text/html": {"schema": {"type": "string"}}}                                 # a media type
    c["schemas"]["NotFoundError"]["properties"]["error"] = {"type": "integer"}       # an error body
    del bad["paths"]["/todos/{id}"]["get"]["responses"]["400"]                       # a status
    c["responses"]["RequestRejected"]["x-status-codes"].remove(400)                  # ... and framing's
    path = os.path.join(tmp, "broken-openapi.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(bad, f)
    return path


@test
def openapi_validators_reject_violations():
    """Each validation path can fail: Prism and the driver report real answers that a
    broken copy of the document does not describe, and every schema of the real
    document rejects a wrong body, a wrong media type and a missing header."""
    _ensure_prism()
    selfcheck = subprocess.Popen(["node", DRIVER, PRISM_DIR, OPENAPI, "selfcheck"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)   # meanwhile, the rest
    doc = _load_doc()
    tmp = tempfile.mkdtemp(prefix="openapi-broken-")
    try:
        broken = _broken_copy(doc, tmp)
        d, prism = _start_pair(broken)
        with d, prism:
            d.start()
            prism.wait_ready()
            c = Checker(prism, _load_doc(broken))
            try:
                c("POST", "/todos", "/todos", 201, _json({"title": "x"}), JSON_CT)
                c("GET", "/health", "/health", 200)
                c("GET", "/todos/" + str(uuid.uuid4()), "/todos/{id}", 404)
                c("GET", "/todos/oops", "/todos/{id}", 400)
            finally:
                c.close()
            found = "\n".join(c.problems)
            for what, pattern in (("a body of the wrong type", r"POST /todos: Prism refused.*done must be string"),
                                  ("a malformed header", r"POST /todos: Prism refused.*server-timing"),
                                  ("a wrong media type", r"GET /health: Prism refused.*media type"),
                                  ("an error body of the wrong type", r"GET /todos/\S+: Prism refused.*integer"),
                                  ("a status not declared", r"GET /todos/oops: status 400 is not declared")):
                assert re.search(pattern, found, re.I), "Prism did not report %s:\n%s" % (what, found)
            assert len(c.problems) == 4, "more found than the lies told:\n%s" % found   # POST: two in one
            gone = "/todos/" + str(uuid.uuid4())
            exchanges = [
                _exchange("framing 400", "GET", "/health",
                          _raw(d.host, d.port, b"GET /health HTTP/1.1\r\nHost : t\r\n\r\n")),
                _exchange("404", "GET", gone,
                          _raw(d.host, d.port, b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % gone.encode())),
                _exchange("405", "PATCH", "/health",
                          _raw(d.host, d.port, b"PATCH /health HTTP/1.1\r\nHost: t\r\n\r\n"), "unrouted"),
            ]
        results = _run_driver(exchanges, document=broken)
        said = {k: " ".join(v["message"] for v in r["violations"]) for k, r in results.items()}
        assert "status 400 is neither declared" in said["framing 400"], said
        assert "must be integer" in said["404"], said
        assert not said["405"], "the driver reported an answer the broken document describes: %r" % said
        out, _ = selfcheck.communicate(timeout=120)
        assert selfcheck.returncode == 0, "selfcheck of daemon/openapi.json:\n%s" % out[-4000:]
    finally:
        if selfcheck.poll() is None:
            selfcheck.kill()
            selfcheck.wait()
        shutil.rmtree(tmp, ignore_errors=True)
