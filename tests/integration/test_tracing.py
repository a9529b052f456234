"""Distributed tracing (API.md "Tracing"; DAEMON.md otlp_endpoint,
trace_sample_ratio, service_name): W3C trace context in, OpenTelemetry spans out
over OTLP/HTTP JSON to a receiver that checks every payload against the real
OTLP schema (@opentelemetry/otlp-transformer)."""

import json
import signal
import threading
import time

from lib.marks import test
from lib.todod import Todod
from lib.checks import assert_json_error, wait_until
from lib.metrics import metric
from otlp import OtlpReceiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def traceparent(flags="01", trace=TRACE, parent=PARENT):
    return "00-%s-%s-%s" % (trace, parent, flags)


def by_trace(otlp, trace, n, timeout=10):
    return otlp.wait_spans(n, timeout, where=lambda s: s["traceId"] == trace)


def children(spans, parent):
    return [s for s in spans if s["parentSpanId"] == parent["spanId"]]


@test
def a_request_with_traceparent_gives_a_server_span_and_sql_child_spans_under_it():
    with OtlpReceiver() as otlp, Todod(workers=1, otlp_endpoint=otlp.endpoint,
                                       service_name="todo-api", access_log="on") as d:
        d.start()
        todo = d.request("POST", "/todos", {"title": "traced"}).json()
        r = d.request("GET", "/todos/%s?x=1" % todo["id"],
                      headers={"traceparent": traceparent(), "tracestate": "vendor=abc",
                               "User-Agent": "trace-test"})
        assert r.status == 200
        spans = by_trace(otlp, TRACE, 2)
        (server,) = [s for s in spans if s["kind"] == 2]
        assert server["name"] == "GET /todos/{id}", server
        assert server["parentSpanId"] == PARENT and server["traceState"] == "vendor=abc"
        a = server["attributes"]
        assert a["http.request.method"] == "GET" and a["http.route"] == "/todos/{id}"
        assert a["url.path"] == "/todos/" + todo["id"] and a["url.query"] == "x=1"
        assert a["http.response.status_code"] == 200 and a["user_agent.original"] == "trace-test"
        assert a["client.address"] == "127.0.0.1" and a["server.port"] == d.port
        assert a["network.protocol.version"] == "1.1"
        (sql,) = children(spans, server)
        assert sql["kind"] == 3 and sql["name"] == "SELECT todos", sql
        b = sql["attributes"]
        assert b["db.system.name"] == "postgresql" and b["db.operation.name"] == "SELECT"
        assert b["db.collection.name"] == "todos" and b["db.namespace"] == d.db
        assert b["server.port"] == d.pg.port
        assert int(server["startTimeUnixNano"]) <= int(sql["startTimeUnixNano"])
        assert int(sql["endTimeUnixNano"]) <= int(server["endTimeUnixNano"])
        res = server["resource"]
        assert res["service.name"] == "todo-api" and res["service.version"] == "0.1.0"
        assert res["process.pid"] in d.worker_pids() and res["host.name"]
        assert res["service.instance.id"]
        assert server["scope"]["name"] == "todod"
        assert not otlp.invalid(), otlp.invalid()
        # the access log carries the trace id
        assert wait_until(lambda: TRACE in d.log(), 2), d.log_tail()


@test
def every_route_names_its_span_after_its_pattern_and_5xx_is_an_error():
    url = "postgresql://postgres@127.0.0.1:1/x?connect_timeout=1"
    with OtlpReceiver() as otlp, Todod(workers=1, otlp_endpoint=otlp.endpoint) as d:
        d.start()
        todo = d.request("POST", "/todos", {"title": "t"}).json()
        calls = [("GET", "/todos?limit=2", None, "GET /todos"),
                 ("PUT", "/todos/" + todo["id"], {"done": True}, "PUT /todos/{id}"),
                 ("GET", "/todos/done/true", None, "GET /todos/done/{done}"),
                 ("DELETE", "/todos/" + todo["id"], None, "DELETE /todos/{id}"),
                 ("GET", "/health", None, "GET /health"),
                 ("GET", "/nowhere", None, "GET")]
        for i, (method, path, body, name) in enumerate(calls):
            trace = "%032x" % (i + 1)
            d.request(method, path, body, headers={"traceparent": traceparent(trace=trace)})
            spans = by_trace(otlp, trace, 1)
            server = [s for s in spans if s["kind"] == 2]
            assert server and server[0]["name"] == name, (path, spans)
        ops = {s["name"] for s in otlp.spans() if s.get("kind") == 3}
        assert {"SELECT todos", "UPDATE todos", "DELETE todos"} <= ops, ops
        assert not otlp.invalid()
    with OtlpReceiver() as otlp, Todod(workers=1, otlp_endpoint=otlp.endpoint,
                                       database_url=url) as d:
        d.start(wait="http")
        r = d.request("GET", "/todos", headers={"traceparent": traceparent()})
        assert r.status == 503
        (server,) = by_trace(otlp, TRACE, 1)
        assert server["status"]["code"] == 2, server  # ERROR
        assert server["attributes"]["http.response.status_code"] == 503


@test
def a_failing_statement_has_an_error_span():
    with OtlpReceiver() as otlp, Todod(workers=1, otlp_endpoint=otlp.endpoint,
                                       request_timeout=0.5) as d:
        d.start()
        holder = d.pg.lock_bg(d.db, 1.5)
        r = d.request("POST", "/todos", {"title": "x"}, headers={"traceparent": traceparent()},
                      timeout=5)
        holder.wait(10)
        assert_json_error(r, 503, "database did not answer in time")
        spans = by_trace(otlp, TRACE, 2)
        (sql,) = [s for s in spans if s["kind"] == 3]
        assert sql["name"] == "INSERT todos" and sql["status"]["code"] == 2, sql
        assert sql["attributes"].get("db.response.status_code") == "57014", sql


@test
def an_unsampled_parent_records_nothing_and_a_malformed_one_starts_a_new_trace():
    with OtlpReceiver() as otlp, Todod(workers=1, otlp_endpoint=otlp.endpoint,
                                       access_log="on") as d:
        d.start()
        d.request("GET", "/todos", headers={"traceparent": traceparent(flags="00")})
        for bad in ("00-%s-%s-01-extra" % (TRACE, PARENT), "00-%s-%s-01" % (TRACE.upper(), PARENT),
                    "00-%s-%s-01" % ("0" * 32, PARENT), "ff-%s-%s-01" % (TRACE, PARENT), "junk"):
            d.request("GET", "/ready", headers={"traceparent": bad})
        marker = "%032x" % 99
        d.request("GET", "/live", headers={"traceparent": traceparent(trace=marker)})
        by_trace(otlp, marker, 1)
        spans = otlp.spans()
        assert not [s for s in spans if s.get("traceId") == TRACE], "an unsampled trace was exported"
        health = [s for s in spans if s.get("name") == "GET /ready"]
        assert len(health) == 5, health
        assert all(s["parentSpanId"] == "" and s["traceId"] != TRACE for s in health), health
        assert len({s["traceId"] for s in health}) == 5
        # unsampled, the trace id still goes into the access log
        assert TRACE in d.log()


@test
def trace_sample_ratio_decides_for_new_traces():
    with OtlpReceiver() as otlp, Todod(workers=1, otlp_endpoint=otlp.endpoint,
                                       trace_sample_ratio=0) as d:
        d.start()
        for _ in range(20):
            d.request("GET", "/live")
        marker = "%032x" % 7
        d.request("GET", "/live", headers={"traceparent": traceparent(trace=marker)})
        by_trace(otlp, marker, 1)  # a sampled parent wins over the ratio
        assert [s["traceId"] for s in otlp.spans() if "traceId" in s] == [marker]


@test
def a_performance_test_has_its_span_share_spans_and_at_most_100_batch_spans():
    with OtlpReceiver() as otlp, Todod(workers=2, otlp_endpoint=otlp.endpoint) as d:
        d.start()
        r = d.request("POST", "/todos/performance-test",
                      {"message_count": 30000, "batch_size": 100, "workers": "all"},
                      headers={"traceparent": traceparent()}, timeout=60)
        rep = r.json()
        assert rep["success_count"] == 30000 and rep["trace_id"] == TRACE, rep
        spans = by_trace(otlp, TRACE, 1 + 1 + 2 + 100, timeout=15)
        (server,) = [s for s in spans if s["kind"] == 2]
        (perf,) = [s for s in spans if s["name"] == "performance-test"]
        assert perf["parentSpanId"] == server["spanId"] and perf["kind"] == 1
        assert perf["attributes"]["todod.perf.message_count"] == 30000
        assert perf["attributes"]["todod.perf.success_count"] == 30000
        shares = [s for s in spans if s["name"] == "performance-test share"]
        assert len(shares) == 2 and all(s["parentSpanId"] == perf["spanId"] for s in shares)
        assert {s["resource"]["process.pid"] for s in shares} == set(d.worker_pids())
        batches = [s for s in spans if s["kind"] == 3]
        assert len(batches) == 100, len(batches)
        assert all(b["parentSpanId"] in {s["spanId"] for s in shares} for b in batches)
        assert not otlp.invalid()


@test
def a_dead_slow_or_failing_collector_costs_no_request():
    with OtlpReceiver() as otlp, Todod(workers=1, otlp_endpoint=otlp.endpoint) as d:
        d.start()
        otlp.behave(delay_ms=3000)
        took = []
        for i in range(50):
            t0 = time.monotonic()
            assert d.request("GET", "/todos", headers={"traceparent": traceparent()}).status == 200
            took.append(time.monotonic() - t0)
        assert max(took) < 0.5, "a request waited %.2fs for a slow collector" % max(took)
        otlp.behave(status=503, times=2)
        d.request("GET", "/live", headers={"traceparent": traceparent(trace="%032x" % 5)})
        by_trace(otlp, "%032x" % 5, 1, timeout=20)  # retried after two 503s
        assert metric(d.metrics(), "todod_trace_export_errors_total") >= 2
        assert metric(d.metrics(), "todod_trace_spans_exported_total") > 0
    # the collector gone altogether
    with OtlpReceiver() as otlp:
        dead = otlp.endpoint
    with Todod(workers=1, otlp_endpoint=dead) as d:
        d.start()
        took = []
        for _ in range(200):
            t0 = time.monotonic()
            assert d.request("GET", "/live", headers={"traceparent": traceparent()}).status == 200
            took.append(time.monotonic() - t0)
        assert max(took) < 0.5
        assert wait_until(lambda: metric(d.metrics(), "todod_trace_export_errors_total") >= 1, 10)


@test
def a_stopping_worker_flushes_its_last_spans():
    with OtlpReceiver() as otlp, Todod(workers=1, otlp_endpoint=otlp.endpoint) as d:
        d.start()
        d.request("GET", "/live", headers={"traceparent": traceparent()})
        assert d.stop() == 0  # within the 1 s batch delay: sent by the final flush
        assert by_trace(otlp, TRACE, 1, timeout=2)
