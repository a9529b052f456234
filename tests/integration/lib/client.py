"""HTTP for the tests: Response, one request on a fresh connection
(request), and Client, a keep-alive HTTP/1.1 connection."""

import http.client
import json

class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        b = self.body[:300]
        return "<Response %d %r %r>" % (self.status, self.headers.get("content-type"), b)


def _encode_body(body, headers):
    headers = dict(headers or {})
    lower = {k.lower() for k in headers}
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        if "content-type" not in lower:
            headers["Content-Type"] = "application/json"
    elif isinstance(body, str):
        body = body.encode("utf-8")
    return body, headers


def _read_response(conn):
    r = conn.getresponse()
    body = r.read()
    headers = {}
    for k, v in r.getheaders():
        k = k.lower()
        headers[k] = headers[k] + ", " + v if k in headers else v
    return Response(r.status, r.reason, headers, body), r


def _http_connection(host, port, timeout):
    return http.client.HTTPConnection(host, port, timeout=timeout)


class Client:
    """A keep-alive HTTP/1.1 connection to a daemon.

    request() has the signature of Todod.request. When the server has closed a
    connection that was idle since its last answer (as a stopping worker does), an
    idempotent request is sent again once on a new connection, as HTTP clients do;
    `retries` counts those, `connections` the connections opened."""

    IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}

    def __init__(self, host, port, timeout=5, retry=True):
        self.host, self.port, self.timeout, self.retry = host, port, timeout, retry
        self.conn = None
        self.used = False
        self.retries = 0
        self.connections = 0

    def _connect(self):
        self.close()
        self.conn = _http_connection(self.host, self.port, self.timeout)
        self.conn.connect()
        self.used = False
        self.connections += 1

    def request(self, method, path, body=None, headers=None, timeout=None):
        body, headers = _encode_body(body, headers)
        for attempt in (0, 1):
            if self.conn is None:
                self._connect()
            reused = self.used
            try:
                self.conn.sock.settimeout(timeout or self.timeout)
                self.conn.request(method, path, body=body, headers=headers)
                resp, raw = _read_response(self.conn)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.BadStatusLine) as e:
                self.close()
                if attempt == 0 and reused and self.retry and method in self.IDEMPOTENT:
                    self.retries += 1
                    continue
                raise e
            except Exception:
                self.close()
                raise
            self.used = True
            if raw.will_close:
                self.close()
            return resp
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
