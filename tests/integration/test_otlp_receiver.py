"""The OTLP receiver the tracing tests rely on (otlp_receiver.js through otlp.py):
it must record a valid payload, refuse every payload the OTLP schema does not
allow (so a test that sees no validation error means something), and refuse,
delay or hang up when told to. Hand-made payloads only: no todod here.
"""

import http.client
import os
import time

from lib.marks import test
from otlp import TRANSFORMER_PKG, TRANSFORMER_VERSION, OtlpReceiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SERVER_SPAN = "00f067aa0ba902b7"
CLIENT_SPAN = "b7ad6b7169203331"


def _kv(key, **value):
    return {"key": key, "value": value}


def _span(span_id=SERVER_SPAN, parent="", name="GET /todos/{id}", kind=2, **extra):
    now = time.time_ns()
    span = {"traceId": TRACE, "spanId": span_id, "name": name, "kind": kind,
            "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1500),
            "attributes": [_kv("http.request.method", stringValue="GET"),
                           _kv("http.response.status_code", intValue="200")]}
    if parent:
        span["parentSpanId"] = parent
    span.update(extra)
    return span


def _payload(*spans):
    return {"resourceSpans": [{
        "resource": {"attributes": [_kv("service.name", stringValue="selfcheck"),
                                    _kv("process.pid", intValue="4242")]},
        "scopeSpans": [{"scope": {"name": "todod", "version": "0.1.0"},
                        "spans": list(spans)}]}]}


def _valid():
    client = _span(CLIENT_SPAN, SERVER_SPAN, "SELECT todos", 3,
                   traceState="rojo=00f067aa0ba902b7",
                   status={"code": 2, "message": "canceling statement"})
    client["attributes"] += [_kv("db.system.name", stringValue="postgresql"),
                             _kv("ratio", doubleValue=0.5), _kv("nan", doubleValue="NaN"),
                             _kv("cached", boolValue=False)]
    return _payload(_span(), client)


@test
def otlp_receiver_records_a_valid_payload():
    with OtlpReceiver() as otlp:
        assert otlp.stats()["package"] == f"{TRANSFORMER_PKG}@{TRANSFORMER_VERSION}"
        status, body = otlp.post(_valid())
        assert (status, body) == (200, {}), (status, body)
        spans = otlp.wait_spans(2)
        assert not otlp.invalid(), otlp.invalid()
        server = next(s for s in spans if s["name"] == "GET /todos/{id}")
        client = next(s for s in spans if s["name"] == "SELECT todos")
        assert server["traceId"] == TRACE and server["spanId"] == SERVER_SPAN, server
        assert server["parentSpanId"] == "" and server["kind"] == 2, server
        assert server["attributes"] == {"http.request.method": "GET",
                                        "http.response.status_code": 200}, server
        assert server["resource"] == {"service.name": "selfcheck", "process.pid": 4242}, server
        assert server["scope"] == {"name": "todod", "version": "0.1.0"}, server
        assert int(server["endTimeUnixNano"]) - int(server["startTimeUnixNano"]) == 1500
        assert client["parentSpanId"] == SERVER_SPAN and client["kind"] == 3, client
        assert client["traceState"] == "rojo=00f067aa0ba902b7", client
        assert client["status"] == {"code": 2, "message": "canceling statement"}, client
        assert client["attributes"]["ratio"] == 0.5 and client["attributes"]["nan"] == "NaN"
        assert client["attributes"]["cached"] is False, client
        assert otlp.stats()["answered"] == {"200": 1}


def _mutations():
    """(what, payload, status, a fragment of the error) for payloads OTLP/JSON forbids."""
    def with_span(**changes):
        span = _span()
        for k, v in changes.items():
            if v is None:
                del span[k]
            else:
                span[k] = v
        return _payload(span)

    yield "uppercase trace id", with_span(traceId=TRACE.upper()), 400, "lowercase hex"
    yield "short span id", with_span(spanId=SERVER_SPAN[:15]), 400, "16 lowercase hex"
    yield "all-zero trace id", with_span(traceId="0" * 32), 400, "all zeroes"
    yield "time as a JSON number", with_span(startTimeUnixNano=time.time_ns()), 400, \
        "decimal strings"
    yield "kind by name", with_span(kind="SPAN_KIND_SERVER"), 400, "enums must be integers"
    # Only protobufjs's verify() knows which enum values exist.
    yield "unknown kind", with_span(kind=9), 400, "verify: "
    yield "misspelt field", with_span(traceID=TRACE), 400, "not a field of the OTLP schema"
    yield "attributes not a list", with_span(attributes={"a": 1}), 400, "fromObject"
    yield "int attribute not decimal", \
        with_span(attributes=[_kv("n", intValue="12x")]), 400, "reads as"
    yield "no name", with_span(name=""), 400, "name"
    yield "no end time", with_span(endTimeUnixNano=None), 400, "endTimeUnixNano"
    now = time.time_ns()
    yield "ends before it starts", \
        with_span(startTimeUnixNano=str(now), endTimeUnixNano=str(now - 1)), 400, "ends before"
    yield "not JSON", "{\"resourceSpans\": [", 400, "not JSON"
    yield "a JSON array", [], 400, "not a JSON object"


@test
def otlp_receiver_refuses_what_the_otlp_schema_forbids():
    with OtlpReceiver() as otlp:
        cases = list(_mutations())
        for i, (what, payload, want_status, fragment) in enumerate(cases, 1):
            status, body = otlp.post(payload)
            assert status == want_status, f"{what}: answered {status} {body!r}"
            lines = [s for s in otlp.spans() if s["request"] == i]
            assert lines and all(fragment in (s.get("error") or "") for s in lines), \
                f"{what}: want an error with {fragment!r}, recorded {lines!r}"
        status, body = otlp.post(_valid(), content_type="text/plain")
        assert status == 415, (status, body)
        assert otlp.stats()["invalid"] == len(cases) + 1
        # The same receiver still takes a valid payload, without an error.
        assert otlp.post(_valid())[0] == 200
        assert not [s for s in otlp.spans() if s["request"] == len(cases) + 2 and s["error"]]


@test
def otlp_receiver_refuses_delays_and_hangs_up_when_told():
    with OtlpReceiver() as otlp:
        otlp.behave(status=503, times=1)
        assert otlp.post(_payload(_span()))[0] == 503
        assert otlp.spans() == [], "a refused export must not be recorded"
        assert otlp.post(_payload(_span()))[0] == 200
        otlp.behave(status=429, times=2)
        assert [otlp.post(_payload(_span()))[0] for _ in range(3)] == [429, 429, 200]

        otlp.behave(delay_ms=600, times=1)
        t0 = time.monotonic()
        assert otlp.post(_payload(_span()))[0] == 200
        assert time.monotonic() - t0 >= 0.6

        otlp.behave(close=True, times=1)
        try:
            status = otlp.post(_payload(_span()))[0]
        except (http.client.HTTPException, ConnectionError):
            status = None
        assert status is None, f"expected a hang-up, got {status}"

        otlp.behave(rejected=1, times=1)
        status, body = otlp.post(_payload(_span()))
        assert status == 200 and body["partialSuccess"]["rejectedSpans"] == "1", body

        stats = otlp.stats()
        assert stats["answered"] == {"503": 1, "429": 2, "200": 4}, stats
        assert stats["closed"] == 1 and stats["invalid"] == 0, stats
        assert len(otlp.wait_spans(4)) == 4

        otlp.reset()
        assert otlp.stats()["requests"] == 0


@test
def otlp_receiver_starts_with_a_behaviour_and_stops_by_pid():
    otlp = OtlpReceiver(status=503).start()
    try:
        assert otlp.post(_payload(_span()))[0] == 503
        pid = otlp.proc.pid
    finally:
        otlp.stop()
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, f"receiver {pid} still running"
