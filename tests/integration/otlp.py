"""An OTLP/HTTP trace receiver for the integration tests.

OtlpReceiver runs tests/integration/otlp_receiver.js (Node.js) as a child
process: it listens on 127.0.0.1, validates every payload todod posts against
the OTLP protobuf schema of @opentelemetry/otlp-transformer (installed into
tests/.tools from the npm registry, pinned) and writes each span as one JSON
line. Tests read the spans, and tell it to refuse, delay or hang up:

    from otlp import OtlpReceiver

    with OtlpReceiver() as otlp:
        with Todod(otlp_endpoint=otlp.endpoint) as d:   # however the test configures todod
            ...
        spans = otlp.wait_spans(2)
        assert not otlp.invalid(), otlp.invalid()
        otlp.behave(status=503, times=2)   # the next two exports get 503
        otlp.behave(delay_ms=3000)         # a slow collector
        otlp.behave(close=True)            # hangs up without an answer
        otlp.behave()                      # back to normal

Python standard library only.
"""

import atexit
import http.client
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time

from lib.env import ROOT

RECEIVER_JS = os.path.join(ROOT, "tests", "integration", "otlp_receiver.js")
TOOLS = os.path.join(ROOT, "tests", ".tools")
# Exact version: its build/src/generated/root is the schema the receiver loads.
TRANSFORMER_PKG = "@opentelemetry/otlp-transformer"
TRANSFORMER_VERSION = "0.200.0"


def ensure_transformer():
    """Install the pinned package into tests/.tools unless it is already there."""
    assert shutil.which("node"), "node not found (conf/dev/deps.sh test installs nodejs)"
    pkg_json = os.path.join(TOOLS, "node_modules", *TRANSFORMER_PKG.split("/"), "package.json")
    try:
        with open(pkg_json, encoding="utf-8") as f:
            if json.load(f).get("version") == TRANSFORMER_VERSION:
                return
    except (OSError, ValueError):
        pass
    assert shutil.which("npm"), "npm not found (conf/dev/deps.sh test installs npm)"
    os.makedirs(TOOLS, exist_ok=True)
    r = subprocess.run(["npm", "install", "--prefix", TOOLS, "--no-audit", "--no-fund",
                        "--save-exact", f"{TRANSFORMER_PKG}@{TRANSFORMER_VERSION}"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert r.returncode == 0, \
        f"npm install {TRANSFORMER_PKG}@{TRANSFORMER_VERSION} failed:\n{r.stdout}"


class OtlpReceiver:
    """The receiver as a child process. port=0 picks a free port; status, delay_ms
    and close set its behaviour from the start (see behave())."""

    def __init__(self, port=0, status=200, delay_ms=0, close=False):
        self.port = port
        self._initial = {"status": status, "delay_ms": delay_ms, "close": close}
        self.proc = None
        self.dir = None
        self.out = None
        self.log = None

    # ------------------------------------------------------------ lifecycle

    def start(self):
        ensure_transformer()
        self.dir = tempfile.mkdtemp(prefix="todod-otlp-")
        self.out = os.path.join(self.dir, "spans.jsonl")
        self.log = os.path.join(self.dir, "receiver.log")
        open(self.out, "w").close()
        argv = ["node", RECEIVER_JS, "--port", str(self.port), "--out", self.out,
                "--tools", TOOLS, "--status", str(self._initial["status"]),
                "--delay-ms", str(self._initial["delay_ms"])]
        if self._initial["close"]:
            argv.append("--close")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL)
        atexit.register(self.stop)
        line = self._first_line(30)
        assert line.strip().isdigit(), \
            f"otlp_receiver.js did not start ({line!r}):\n{self._log_tail()}"
        self.port = int(line)
        return self

    def _first_line(self, timeout):
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 256)
                if not chunk:
                    break
                buf += chunk
        return buf.decode(errors="replace").split("\n")[0]

    def _log_tail(self):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self):
        """Stop the receiver by its PID (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if self.dir and not any(exc):
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ addresses

    @property
    def endpoint(self):
        """The otlp_endpoint todod is configured with."""
        return f"http://127.0.0.1:{self.port}/v1/traces"

    # ------------------------------------------------------------ talking to it

    def _request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def post(self, payload, content_type="application/json", path="/v1/traces", timeout=30):
        """POST a payload (dict, str or bytes) as a sender would; (status, parsed body).
        Raises on a connection the receiver closed."""
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        if isinstance(payload, str):
            payload = payload.encode()
        status, body = self._request("POST", path, payload,
                                     {"Content-Type": content_type} if content_type else {},
                                     timeout)
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, body

    def behave(self, status=200, delay_ms=0, close=False, times=None, rejected=0):
        """Answer the next `times` exports (all when None) with status, after delay_ms,
        or hang up (close=True); rejected=N answers 200 with N spans rejected. No
        argument: back to normal."""
        body = json.dumps({"status": status, "delay_ms": delay_ms, "close": close,
                           "times": times, "rejected": rejected})
        st, resp = self._request("POST", "/control", body, {"Content-Type": "application/json"})
        assert st == 200, f"control: {st} {resp!r}"

    def reset(self):
        """Normal behaviour, counters zeroed (the spans already written stay)."""
        st, _ = self._request("POST", "/control", json.dumps({"reset": True}),
                              {"Content-Type": "application/json"})
        assert st == 200

    def stats(self):
        """{"requests", "answered": {"200": n, ...}, "closed", "invalid", "spans", "package"}."""
        st, body = self._request("GET", "/stats")
        assert st == 200, st
        return json.loads(body)

    # ------------------------------------------------------------ what it received

    def spans(self):
        """Every line written so far (one per span; a payload that had no span to
        show is a line with only "request" and "error")."""
        with open(self.out, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def invalid(self):
        """The lines that carry a validation error."""
        return [s for s in self.spans() if s.get("error")]

    def wait_spans(self, n=1, timeout=10, where=None):
        """Wait until at least n spans (matching where(span), when given) arrived;
        returns them all (the matching ones when where is given)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = [s for s in self.spans() if "spanId" in s and (where is None or where(s))]
            if len(spans) >= n:
                return spans
            if time.monotonic() >= deadline:
                raise AssertionError(f"waited {timeout}s for {n} spans, have {len(spans)}: "
                                     f"{json.dumps(spans)[:2000]}")
            time.sleep(0.05)
