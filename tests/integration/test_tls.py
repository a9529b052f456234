"""Encrypted links out (DAEMON.md tls_ca_file; issue 21, "Encrypted links out"):
otlp_endpoint and perf_nodes over https://, the certificate chain and the host
name verified against tls_ca_file or the system's store, a failure an export
error or a node that never got the test, never plain text; the CA file checked
at start and at a reload; database_url with sslmode=verify-full to a
PostgreSQL with ssl = on.

The certificates are made by the `openssl` command (a test CA, server
certificates naming localhost, or another host); the TLS servers are Python's
ssl module in front of the real receivers (TlsProxy): the OTLP receiver of
otlp.py, or a second todod."""

import atexit
import contextlib
import http.client
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import tempfile
import threading

import shutil

from lib.checks import wait_until
from lib.env import PG_RUNNER, free_port
from lib.marks import test
from lib.metrics import metric
from lib.pg import Postgres, get_pg
from lib.todod import Todod
from otlp import OtlpReceiver

PATH = "/todos/performance-test"


class Pki:
    """A test CA in a temporary directory, and server certificates it signs."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="todod-tls-")
        atexit.register(shutil.rmtree, self.dir, True)
        os.chmod(self.dir, 0o755)
        self.ca = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "2",
                      "-subj", "/CN=todod test CA",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def _openssl(self, *args):
        r = subprocess.run(["openssl", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=60)
        assert r.returncode == 0, "openssl %s failed:\n%s" % (" ".join(args), r.stdout)

    def server(self, name, san):
        """(certificate, key) for CN=name with subjectAltName san, e.g. "DNS:localhost"."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        crt = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                    "extendedKeyUsage=serverAuth\n" % san)
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + name)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                      "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt)
        os.chmod(key, 0o644)
        return crt, key


class TlsProxy:
    """Terminates TLS on 127.0.0.1:port with (cert, key) and relays each
    connection to backend (host, port) in plain text. Counts handshakes that
    succeeded and failed, and the bytes relayed to the backend."""

    def __init__(self, cert, key, backend):
        self.backend = backend
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        self.failed_handshakes = 0
        self.relayed = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(10)
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            with self.lock:
                self.failed_handshakes += 1
            raw.close()
            return
        with self.lock:
            self.handshakes += 1
        try:
            back = socket.create_connection(self.backend, timeout=10)
        except OSError:
            tls.close()
            return
        tls.settimeout(None)
        back.settimeout(None)
        try:
            while True:
                ready, _, _ = select.select([tls, back], [], [], 120)
                if not ready:
                    break
                if tls in ready or tls.pending():
                    data = tls.recv(65536)
                    if not data:
                        break
                    with self.lock:
                        self.relayed += len(data)
                    back.sendall(data)
                if back in ready:
                    data = back.recv(65536)
                    if not data:
                        break
                    tls.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            back.close()
            tls.close()

    def close(self):
        self.stopping = True
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def traced_requests(d, n):
    """n requests with a sampled traceparent, each answered 2xx."""
    for i in range(n):
        trace = "%032x" % (0x7e57 + i)
        r = d.request("GET", "/todos", headers={
            "traceparent": "00-%s-00f067aa0ba902b7-01" % trace})
        assert r.status == 200, r


def export_errors(d):
    return metric(d.metrics(), "todod_trace_export_errors_total")


@test
def spans_reach_an_https_collector_tls_ca_file_trusts():
    pki = Pki()
    cert, key = pki.server("localhost", "DNS:localhost")
    with OtlpReceiver() as otlp, TlsProxy(cert, key, ("127.0.0.1", otlp.port)) as proxy, \
            Todod(workers=1, otlp_endpoint="https://localhost:%d/v1/traces" % proxy.port,
                  tls_ca_file=pki.ca) as d:
        d.start()
        traced_requests(d, 5)
        spans = otlp.wait_spans(5, 15, where=lambda s: s.get("kind") == 2)
        assert len(spans) >= 5, spans
        assert not otlp.invalid(), otlp.invalid()
        assert proxy.handshakes >= 1 and proxy.failed_handshakes == 0
        assert export_errors(d) == 0, d.log_tail()


def collector_gets_nothing(d, proxy, otlp, why):
    d.start()
    traced_requests(d, 5)  # every request is answered all the same
    assert wait_until(lambda: export_errors(d) >= 1, 15), d.log_tail()
    traced_requests(d, 5)
    assert wait_until(lambda: why in d.log(), 10), d.log_tail()
    assert proxy.relayed == 0, proxy.relayed  # not one byte of a request
    assert proxy.handshakes == 0 and proxy.failed_handshakes >= 1
    assert otlp.spans() == []
    assert d.running()


@test
def an_https_collector_with_another_host_name_gets_nothing():
    pki = Pki()
    cert, key = pki.server("other", "DNS:other.example")
    with OtlpReceiver() as otlp, TlsProxy(cert, key, ("127.0.0.1", otlp.port)) as proxy, \
            Todod(workers=1, otlp_endpoint="https://localhost:%d/v1/traces" % proxy.port,
                  tls_ca_file=pki.ca) as d:
        collector_gets_nothing(d, proxy, otlp, "hostname mismatch")


@test
def an_https_collector_the_system_store_does_not_know_gets_nothing():
    pki = Pki()
    cert, key = pki.server("localhost", "DNS:localhost,IP:127.0.0.1")
    with OtlpReceiver() as otlp, TlsProxy(cert, key, ("127.0.0.1", otlp.port)) as proxy, \
            Todod(workers=1, otlp_endpoint="https://127.0.0.1:%d/v1/traces" % proxy.port) as d:
        collector_gets_nothing(d, proxy, otlp, "unable to get local issuer certificate")


@test
def a_tls_ca_file_without_certificates_fails_todod_t_the_start_and_a_reload():
    pki = Pki()
    junk = os.path.join(pki.dir, "junk.pem")
    with open(junk, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    d = Todod(workers=1, tls_ca_file=pki.ca)
    with d:
        r = d.run("-t", "-c", d.conf_path)
        assert r.returncode == 0 and "configuration OK" in r.stdout, r
        d.start()
        d.write_conf(tls_ca_file=junk)
        r = d.run("-t", "-c", d.conf_path)
        assert r.returncode == 1 and "tls_ca_file %s" % junk in r.stderr, r
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: "reload failed" in d.log(), 5), d.log_tail()
        assert "tls_ca_file %s" % junk in d.log(), d.log_tail()
        assert d.request("GET", "/todos").status == 200  # the running configuration
        d.write_conf(tls_ca_file=os.path.join(pki.dir, "missing.pem"))
        r = d.run("-t", "-c", d.conf_path)
        assert r.returncode == 1 and "cannot open" in r.stderr, r
    with Todod(workers=1, tls_ca_file=junk) as d:
        r = d.run("-c", d.conf_path, timeout=10)  # a start: refused before it forks
        assert r.returncode == 1 and "tls_ca_file %s" % junk in r.stderr, r


def spread(a, n):
    """A spread test from a over every node, streamed; returns its report."""
    conn = http.client.HTTPConnection(a.host, a.port, timeout=120)
    conn.request("POST", PATH, body=json.dumps({
        "message_count": n, "batch_size": 500, "workers": "all", "nodes": "all",
        "progress_interval_ms": 200}),
        headers={"Content-Type": "application/json", "Accept": "application/x-ndjson"})
    r = conn.getresponse()
    assert r.status == 200, (r.status, r.read())
    lines = [json.loads(line) for line in r.read().splitlines() if line]
    conn.close()
    assert lines and lines[-1]["type"] == "report", lines[-3:]
    return lines[-1]


def rows(pg, db):
    return int(pg.psql("SELECT count(*) FROM todos WHERE title LIKE 'Performance Test Todo #%'",
                       db=db))


@contextlib.contextmanager
def https_node(cn, san):
    """Instance b behind a TLS proxy whose certificate (from a test CA) names cn and
    san, and instance a, which trusts that CA and spreads its tests to b over
    https://localhost. Yields (pg, db, a, b, proxy, node)."""
    pki = Pki()
    cert, key = pki.server(cn, san)
    pg = get_pg()
    db = pg.create_database()
    with Todod(pg=pg, db=db, workers=1, listen="127.0.0.3:%d" % free_port("127.0.0.3")) as b:
        b.start()
        with TlsProxy(cert, key, (b.host, b.port)) as proxy:
            node = "https://localhost:%d" % proxy.port
            with Todod(pg=pg, db=db, workers=1, perf_nodes=node, tls_ca_file=pki.ca) as a:
                a.start()
                yield pg, db, a, b, proxy, node


@test
def a_spread_test_reaches_an_https_node_with_exact_counts():
    n = 20001
    with https_node("localhost", "DNS:localhost") as (pg, db, a, b, proxy, node):
        rep = spread(a, n)
        assert rep["success_count"] == n and rep["error_count"] == 0, rep
        assert rep["unknown_count"] == 0 and rep["nodes"] == 2, rep
        nodes = {p["node"]: p for p in rep["per_node"]}
        assert nodes[node]["success_count"] == n - n // 2, nodes  # ran by b, through TLS
        assert "error" not in nodes[node], nodes[node]
        assert rows(pg, db) == n
        assert proxy.handshakes >= 1 and proxy.failed_handshakes == 0


@test
def an_https_node_with_another_host_name_never_gets_the_test():
    n = 20001
    with https_node("other", "DNS:other.example") as (pg, db, a, b, proxy, node):
        rep = spread(a, n)
        nodes = {p["node"]: p for p in rep["per_node"]}
        assert "hostname mismatch" in nodes[node]["error"], nodes[node]
        # never sent the request: its rows are errors, not unknown
        assert nodes[node]["error_count"] == n - n // 2, nodes[node]
        assert nodes[node]["success_count"] == 0 and nodes[node]["unknown_count"] == 0
        assert rep["success_count"] == n // 2, rep  # the local share only
        assert rows(pg, db) == n // 2
        assert proxy.relayed == 0 and proxy.handshakes == 0, proxy.relayed
        assert metric(b.metrics(), "todod_http_requests_total",
                      {"route": "/todos/performance-test"}, default=0.0) == 0
        assert a.request("GET", "/todos").status == 200


def tls_postgres(pki, cert, key):
    """A private PostgreSQL with ssl = on and (cert, key), its own copies
    readable by the user it runs as."""
    pg = Postgres()
    paths = {}
    for name, src in (("server.crt", cert), ("server.key", key)):
        paths[name] = os.path.join(pg.dir, name)
        shutil.copy(src, paths[name])
        os.chmod(paths[name], 0o600)
        if PG_RUNNER:
            shutil.chown(paths[name], PG_RUNNER)
    pg.settings.update({"ssl": "on", "ssl_cert_file": paths["server.crt"],
                        "ssl_key_file": paths["server.key"]})
    return pg.start()


@test
def sslmode_verify_full_connects_to_a_postgresql_the_ca_vouches_for_and_writes():
    pki = Pki()
    cert, key = pki.server("localhost", "DNS:localhost")
    pg = tls_postgres(pki, cert, key)
    db = pg.create_database()
    url = "host=localhost port=%d user=postgres dbname=%s sslmode=verify-full sslrootcert=%s" % (
        pg.port, db, pki.ca)
    with Todod(pg=pg, db=db, workers=1, database_url=url) as d:
        d.start()
        r = d.request("POST", "/todos", {"title": "over TLS"})
        assert r.status == 201, r
        assert pg.psql("SELECT title FROM todos", db=db) == "over TLS"
        # every connection todod holds to its database is encrypted
        ssl_rows = pg.psql("SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s "
                           "JOIN pg_stat_activity a USING (pid) WHERE a.datname = '%s' "
                           "AND a.application_name LIKE 'todod%%'" % db)
        enc, total = map(int, ssl_rows.split("|"))
        assert total >= 1 and enc == total, ssl_rows


@test
def sslmode_verify_full_refuses_a_postgresql_whose_certificate_names_another_host():
    pki = Pki()
    cert, key = pki.server("localhost", "DNS:localhost")
    pg = tls_postgres(pki, cert, key)
    db = pg.create_database()
    url = "host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=verify-full sslrootcert=%s" % (
        pg.port, db, pki.ca)
    with Todod(pg=pg, db=db, workers=1, database_url=url) as d:
        d.start(wait="http")
        assert wait_until(lambda: "does not match host name" in d.log(), 10), d.log_tail()
        for _ in range(3):
            assert d.request("GET", "/health").status == 503
            assert d.request("POST", "/todos", {"title": "never"}).status == 503
        # several attempts, each refused; each connection said why once, not at every attempt
        assert wait_until(lambda: metric(d.metrics(), "todod_db_errors_total") >= 6, 20)
        lines = [ln for ln in d.log().splitlines() if "does not match host name" in ln]
        conns = [re.search(r"database (\w+) connection (\d+) failed", ln).groups() for ln in lines]
        assert lines and len(conns) == len(set(conns)), lines
        # todod never got in: not even its schema was made
        assert pg.psql("SELECT to_regclass('todos') IS NULL", db=db) == "t"
