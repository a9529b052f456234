"""The soak's two in-process servers: an OTLP collector stub that the fault
schedule takes down and brings back, and a fake perf_nodes peer that relays a
performance-test share to a real instance or, when told, answers garbage.

Both are threads of the soak process, on loopback, stopped by close()."""

import json
import socket
import threading
import time

# --------------------------------------------------------------------------- OTLP sink


class OtlpSink:
    """Accepts OTLP/HTTP posts on 127.0.0.1:port and answers 200 {}. Modes, set by
    the fault schedule: "up"; "closed" (its connections are closed and the port
    refuses new ones, as a collector that died); "hang" (reads the request, never
    answers, until the mode changes); "503". It never closes an idle connection
    itself."""

    def __init__(self):
        self.port = None
        self.mode = "up"
        self.posts = 0
        self.bytes = 0
        self._conns = set()
        self._lock = threading.Lock()
        self._sock = None
        self._thread = None
        self._closed = False
        self._listen()

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d/v1/traces" % self.port

    def _listen(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port or 0))
        s.listen(64)
        s.settimeout(0.2)
        self.port = s.getsockname()[1]
        self._sock = s
        self._thread = threading.Thread(target=self._accept, args=(s,), daemon=True)
        self._thread.start()

    def _accept(self, s):
        while not self._closed and self._sock is s:
            try:
                c, _ = s.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with self._lock:
            self._conns.add(c)
        buf = b""
        try:
            while not self._closed:
                while b"\r\n\r\n" not in buf:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        n = int(v.strip())
                while len(buf) < n:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[n:]
                with self._lock:
                    self.posts += 1
                    self.bytes += n
                deadline = time.monotonic() + 30
                while self.mode == "hang" and time.monotonic() < deadline and not self._closed:
                    time.sleep(0.05)
                if self.mode == "hang":
                    return
                if self.mode == "503":
                    body = b'{"error":"unavailable"}'
                    status = b"503 Service Unavailable"
                else:
                    body = b"{}"
                    status = b"200 OK"
                c.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(c)
            c.close()

    def _close_conns(self):
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def set_mode(self, mode):
        """Switch modes; "closed" closes the listening socket and every
        connection, leaving it re-opens it on the same port."""
        if mode == "closed" and self._sock is not None:
            self._sock.close()
            self._sock = None
            self._close_conns()
        elif mode != "closed" and self._sock is None:
            for _ in range(50):
                try:
                    self._listen()
                    break
                except OSError:   # the port is in TIME_WAIT's hands for a moment
                    time.sleep(0.1)
        self.mode = mode

    def close(self):
        self._closed = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._close_conns()


# --------------------------------------------------------------------------- fake peer

# What the fake peer answers to a share when told to misbehave. Each is a
# function of (the share request's body) -> bytes to send, or a special action.
# None of them claims rows it did not write in a way a coordinator could not
# check: counts are of the wrong type, out of range, or the answer breaks off.
GARBAGE_MODES = (
    "type_null",          # {"type":null}: a report whose type is not a string
    "per_worker_scalar",  # "per_worker":[1]: an array of numbers, not objects
    "not_json",           # a line that is not JSON at all
    "wrong_types",        # counts as strings, arrays; a histogram of junk
    "huge_counts",        # a report claiming far more rows than the share had
    "negative_counts",    # a report with negative counts
    "endless_line",       # megabytes with no newline, then the connection closes
    "deep_json",          # nesting far deeper than any parser should follow
    "http_500",           # a 500 with a body that is not JSON
    "bad_chunking",       # a chunked answer with an invalid chunk size
    "close_at_once",      # reads the request, closes without a word
    "hang",               # reads the request, then says nothing for 13 s
    "truncate",           # relays to a real instance, cuts the answer mid-stream
)


def _chunk(data):
    return b"%x\r\n" % len(data) + data + b"\r\n"


class FakePeer:
    """Listens on host:port. By default a transparent relay of each request to
    `relay_to` (host, port) of a real instance, so a test spread to it writes
    real rows; arm(mode) makes it answer the next share with garbage (one shot).
    Every share request received is kept in `shares` (mode, body)."""

    def __init__(self, host, relay_to):
        self.host = host
        self.relay_to = relay_to
        self.shares = []
        self._armed = None
        self._lock = threading.Lock()
        self._closed = False
        self._conns = []
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        s.listen(16)
        s.settimeout(0.2)
        self.port = s.getsockname()[1]
        self._sock = s
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self):
        return "http://%s:%d" % (self.host, self.port)

    def arm(self, mode):
        with self._lock:
            self._armed = mode

    def armed(self):
        with self._lock:
            return self._armed

    def _accept(self):
        while not self._closed:
            try:
                c, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read_request(c):
        """The whole request (head + Content-Length body) as bytes, and its body."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = c.recv(65536)
            if not data:
                return None, None
            buf += data
            if len(buf) > 1 << 20:
                return None, None
        head, _, rest = buf.partition(b"\r\n\r\n")
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v.strip())
        while len(rest) < n:
            data = c.recv(65536)
            if not data:
                return None, None
            rest += data
        return head + b"\r\n\r\n" + rest[:n], rest[:n]

    def _serve(self, c):
        c.settimeout(20)
        try:
            raw, body = self._read_request(c)
            if raw is None:
                return
            with self._lock:
                mode, self._armed = self._armed, None
                try:
                    share = json.loads(body)
                except ValueError:
                    share = None
                self.shares.append((mode or "relay", share))
            if mode is None or mode == "truncate":
                self._relay(c, raw, cut=mode == "truncate")
            else:
                self._garbage(c, mode, share if isinstance(share, dict) else {})
        except OSError:
            pass
        finally:
            c.close()

    def _relay(self, c, raw, cut):
        up = socket.create_connection(self.relay_to, timeout=60)
        try:
            up.sendall(raw)
            sent = 0
            limit = 600 if cut else None   # past the head and a progress line or so
            while True:
                data = up.recv(65536)
                if not data:
                    return
                if limit is not None and sent + len(data) > limit:
                    c.sendall(data[:max(0, limit - sent)])
                    return
                c.sendall(data)
                sent += len(data)
        finally:
            up.close()

    def _garbage(self, c, mode, share):
        count = share.get("message_count") if isinstance(share.get("message_count"), int) else 1
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        lines = {
            "type_null": b'{"type":null}\n',
            "per_worker_scalar": json.dumps({
                "type": "report", "success_count": 0, "error_count": count, "unknown_count": 0,
                "batches": 0, "workers": 1, "per_worker": [1]}).encode() + b"\n",
            "not_json": b"this is not json at all\n",
            "wrong_types": json.dumps({
                "type": "progress", "success_count": "lots", "error_count": [],
                "unknown_count": {"a": 1}, "batches": None,
                "latency_histogram": {"min_us": "a", "max_us": {},
                                      "buckets": [[1e300, -1], ["x", 1]]},
                "lag_histogram": [1, 2, 3]}).encode() + b"\n",
            "huge_counts": json.dumps({
                "type": "report", "success_count": count + 1000000, "error_count": 0,
                "unknown_count": 0, "batches": 1, "workers": 1,
                "per_worker": []}).encode() + b"\n",
            "negative_counts": json.dumps({
                "type": "report", "success_count": -count, "error_count": 2 * count,
                "unknown_count": 0, "batches": -1, "workers": -3,
                "per_worker": []}).encode() + b"\n",
            "deep_json": b"[" * 100000 + b"]" * 100000 + b"\n",
        }
        if mode in lines:
            c.sendall(head + _chunk(lines[mode]) + b"0\r\n\r\n")
        elif mode == "endless_line":
            c.sendall(head)
            piece = _chunk(b"x" * 65536)
            deadline = time.monotonic() + 4
            sent = 0
            while sent < 8 << 20 and time.monotonic() < deadline and not self._closed:
                c.sendall(piece)
                sent += 65536
        elif mode == "http_500":
            body = b"<html>oops</html>"
            c.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\n"
                      b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        elif mode == "bad_chunking":
            c.sendall(head + b"zz\r\n{}\r\n0\r\n\r\n")
        elif mode == "close_at_once":
            pass
        elif mode == "hang":
            deadline = time.monotonic() + 13
            while time.monotonic() < deadline and not self._closed:
                time.sleep(0.1)

    def close(self):
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass
