"""HTTP clients that record every request they make.

Each request becomes one Rec: when it was sent and answered (seconds since the
load started, on the monotonic clock), to which instance, what was sent and
what came back, or how the connection failed. The checker reads nothing else.

A client keeps one keep-alive connection per instance, or opens a fresh one for a
request. Before reusing a connection it looks whether the server has closed it
meanwhile (as careful HTTP clients do), so that a request is only lost to an idle
close when the two cross on the wire."""

import http.client
import json
import select
import socket
import sys
import threading
import time

NOT_APPLIED = ("database unavailable", "database did not answer in time")
KEPT_HEADERS = ("content-type", "location", "connection")
AMBIGUOUS = "database connection lost; the write may have been applied"


class Rec:
    """One request and what came of it.

    err: None (an answer came), "refused" (the connection was refused: nothing
    was sent), "closed" (the connection closed or was reset before a whole
    answer), "timeout" (no answer within the client's time-out), or another
    exception's text. reused: sent on a connection that had carried an answer."""

    __slots__ = ("n", "client", "kind", "inst", "method", "path", "body", "t0", "t1", "status",
                 "ans", "raw", "hdrs", "err", "reused", "info", "lines")

    def __init__(self, n, client, kind, inst, method, path, body):
        self.n, self.client, self.kind, self.inst = n, client, kind, inst
        self.method, self.path, self.body = method, path, body
        self.t0 = self.t1 = None
        self.status = None
        self.ans = None
        self.raw = b""
        self.hdrs = {}
        self.err = None
        self.reused = False
        self.info = {}
        self.lines = None

    @property
    def route(self):
        p = self.path.split("?", 1)[0]
        if p.startswith("/todos/done/"):
            return "/todos/done/{done}"
        if p == "/todos/performance-test":
            return p
        if p.startswith("/todos/"):
            return "/todos/{id}"
        return p

    def answer_text(self):
        """The answer's body (kept as parsed JSON once parsed: less memory)."""
        if self.raw or self.ans is None:
            return self.raw.decode("utf-8", "replace")
        if isinstance(self.ans, str):
            return self.ans
        return json.dumps(self.ans, ensure_ascii=False)

    def error_message(self):
        return self.ans.get("error") if isinstance(self.ans, dict) else None

    def outcome(self):
        """For a write: "applied" (2xx), "not_applied" (a 4xx, a "not applied"
        503, a refused connection), or "ambiguous" (anything else)."""
        if self.err == "refused":
            return "not_applied"
        if self.err is not None or self.status is None:
            return "ambiguous"
        if 200 <= self.status < 300:
            return "applied"
        if 400 <= self.status < 500:
            return "not_applied"
        if self.status == 503 and self.error_message() in NOT_APPLIED:
            return "not_applied"
        return "ambiguous"

    def describe(self):
        body = self.body
        if isinstance(body, (bytes, bytearray)):
            body = bytes(body[:160])
        elif body is not None:
            body = json.dumps(body, ensure_ascii=False)
            if len(body) > 160:
                body = body[:160] + "..."
        if self.err is not None:
            what = "no answer: %s" % self.err
        else:
            what = "%s %s" % (self.status, self.answer_text()[:240])
        t1 = "%.3f" % self.t1 if self.t1 is not None else "?"
        return "#%d %s +%.3f..%ss %s %s %s%s -> %s" % (
            self.n, self.client, self.t0 if self.t0 is not None else -1, t1, self.inst,
            self.method, self.path, " " + str(body) if body is not None else "", what)


class Recorder:
    """Every Rec of the run, numbered in the order they were made."""

    def __init__(self):
        self.t_zero = time.monotonic()
        self.recs = []
        self._lock = threading.Lock()

    def now(self):
        return time.monotonic() - self.t_zero

    def new(self, client, kind, inst, method, path, body):
        with self._lock:
            r = Rec(len(self.recs), client, kind, inst, method, path, body)
            self.recs.append(r)
        return r


def _dropped(sock):
    """True when the server has closed (or reset) an idle connection."""
    try:
        r, _, _ = select.select([sock], [], [], 0)
        if not r:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Client:
    """A named client: keep-alive connections to the instances, every request
    recorded. instances: name -> (host, port)."""

    def __init__(self, name, recorder, instances, timeout, record=True):
        self.name = name
        self.record = record   # False: the soak's own probes, not part of the history
        self.rec = recorder
        self.instances = instances
        self.timeout = timeout
        self.conns = {}    # instance name -> [HTTPConnection, requests answered]

    def close(self, inst=None):
        for k in ([inst] if inst else list(self.conns)):
            c = self.conns.pop(k, None)
            if c is not None:
                try:
                    c[0].close()
                except OSError:
                    pass

    def _conn(self, inst, fresh, timeout):
        """(connection, reused); raises ConnectionRefusedError and the like."""
        c = self.conns.get(inst)
        if c is not None and (fresh or c[0].sock is None or _dropped(c[0].sock)):
            self.close(inst)
            c = None
        if c is not None:
            c[0].sock.settimeout(timeout)
            return c, True
        host, port = self.instances[inst]
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except BaseException:
            conn.close()
            raise
        c = [conn, 0]
        if not fresh:
            self.conns[inst] = c
        return c, False

    def call(self, inst, method, path, body=None, *, kind, fresh=False, headers=None,
             timeout=None, info=None, stream=False):
        """One request, recorded; returns its Rec (never raises for the server's
        faults). body: a dict/list (sent as JSON), bytes, or None. stream: read
        an NDJSON answer line by line into rec.lines (time, object)."""
        timeout = timeout or self.timeout
        r = self.rec.new(self.name, kind, inst, method, path, body) if self.record else \
            Rec(-1, self.name, kind, inst, method, path, body)
        if info:
            r.info.update(info)
        hdrs = dict(headers or {})
        data = body
        if isinstance(body, (dict, list)):
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            hdrs.setdefault("Content-Type", "application/json")
        if fresh:
            hdrs.setdefault("Connection", "close")
        c = None
        try:
            try:
                c, r.reused = self._conn(inst, fresh, timeout)
            except ConnectionRefusedError:
                r.t0 = r.t1 = self.rec.now()
                r.err = "refused"
                return r
            r.t0 = self.rec.now()
            c[0].request(method, path, body=data, headers=hdrs)
            resp = c[0].getresponse()
            r.status = resp.status
            r.hdrs = {k.lower(): v for k, v in resp.getheaders()
                      if k.lower() in KEPT_HEADERS}
            if stream:
                r.lines = []
                # The terminal chunk was read when http.client reads the trailer:
                # a connection closed before it (even before the first chunk,
                # when chunk_left is still None) is a cut answer, not an end.
                ended = []
                trailer = getattr(resp, "_read_and_discard_trailer", None)
                if resp.chunked and trailer is not None:
                    def read_trailer(trailer=trailer):
                        ended.append(True)
                        return trailer()
                    resp._read_and_discard_trailer = read_trailer
                while True:
                    line = resp.readline()
                    if not line:
                        break
                    r.raw += line
                    try:
                        r.lines.append((self.rec.now(), json.loads(line)))
                    except ValueError:
                        r.lines.append((self.rec.now(), line))
                # readline() ends quietly when the connection closes before the
                # last chunk; http.client leaves chunk_left None only after it
                if resp.chunked and (resp.chunk_left is not None or
                                     (trailer is not None and not ended)):
                    raise http.client.IncompleteRead(r.raw)
            else:
                r.raw = resp.read()
            r.t1 = self.rec.now()
            c[1] += 1
            if fresh:
                c[0].close()
            elif resp.will_close:
                self.close(inst)
        except socket.timeout:
            r.t1 = self.rec.now()
            r.err = "timeout"
        except (http.client.RemoteDisconnected, http.client.IncompleteRead,
                http.client.BadStatusLine, ConnectionResetError, BrokenPipeError,
                ConnectionAbortedError):
            r.t1 = self.rec.now()
            r.err = "closed"
        except (OSError, http.client.HTTPException) as e:
            r.t1 = self.rec.now()
            r.err = "%s: %s" % (type(e).__name__, e)
        finally:
            if r.err is not None and c is not None:
                if fresh:
                    c[0].close()
                else:
                    self.close(inst)
        if r.err is None and not stream:
            ctype = r.hdrs.get("content-type", "")
            if ctype.startswith("application/json"):
                try:
                    r.ans = json.loads(r.raw.decode("utf-8"))
                    r.raw = b""   # answer_text() makes it again when needed
                    # a long soak keeps 100,000s of these: only what the checker reads,
                    # and a todo's strings shared with its other answers and its request
                    r.hdrs = {"location": r.hdrs["location"]} if "location" in r.hdrs else {}
                    if isinstance(r.ans, dict):
                        for k in ("id", "title", "created_at"):
                            if isinstance(r.ans.get(k), str):
                                r.ans[k] = sys.intern(r.ans[k])
                except ValueError:
                    r.ans = None
                    r.info["bad_json"] = True
            else:
                r.ans = r.raw.decode("utf-8", "replace")
        elif stream and r.lines:
            last = r.lines[-1][1]
            r.ans = last if isinstance(last, dict) else None
        return r


def raw_exchange(host, port, data, timeout=5, pieces=None, sent=None):
    """Send bytes on a fresh connection (pieces: a list of (bytes, pause before
    it) to trickle), read until the server closes or timeout. Returns (answers
    [(status, headers, body)], closed, error); sent, a dict, gets "first" and
    "last": when the first and the last byte were sent (time.monotonic()), or
    "cut": when the server closed the connection before the last."""
    s = None
    sent = sent if sent is not None else {}
    try:
        s = socket.create_connection((host, port), timeout=timeout)
        sent["first"] = time.monotonic()
        try:
            if pieces is None:
                s.sendall(data)
            else:
                for piece, pause in pieces:
                    if pause:
                        time.sleep(pause)
                    s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            sent["cut"] = time.monotonic()
            raise
        sent["last"] = time.monotonic()
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
        return parse_responses(b"".join(chunks)), closed, None
    except ConnectionRefusedError:
        return [], True, "refused"
    except (BrokenPipeError, ConnectionResetError):
        return [], True, "closed"
    except OSError as e:
        return [], True, "%s: %s" % (type(e).__name__, e)
    finally:
        if s is not None:
            s.close()


def parse_responses(data):
    """HTTP/1.1 responses in data -> [(status, headers (lower-case), body)]; a
    response cut short ends the list."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ")[1])
        except (IndexError, ValueError):
            break
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                try:
                    size = int(size_line.split(b";")[0], 16)
                except ValueError:
                    return out
                if size == 0:
                    rest = rest[2:]
                    break
                body += rest[:size]
                rest = rest[size + 2:]
        else:
            n = int(headers.get("content-length", "0") or 0)
            if len(rest) < n:
                break
            body, rest = rest[:n], rest[n:]
        out.append((status, headers, body))
        data = rest
    return out
