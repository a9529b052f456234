/*
 * Distributed tracing: W3C Trace Context (level 1) in, OpenTelemetry spans out
 * over OTLP/HTTP with JSON encoding, from the worker's event loop.
 *
 * A worker has one tracer (tracer_new). Per request:
 *
 *     struct trace_context ctx;   // the request's trace, even when not sampled
 *     struct trace_span *srv = trace_http_server_start(t, req, "/todos/{id}", &ctx);
 *     struct trace_span *db = trace_db_start(t, &ctx, srv, "SELECT", "todos", &peer);
 *     ...                             // on failure: span_set_db_error(db, sqlstate, msg)
 *     span_end(db);
 *     span_set_http_status(srv, 200);
 *     span_end(srv);
 *     trace_context_id_hex(&ctx, id);  // for the access log: "-" when tracing is off
 *
 * (trace_http_server_start and span_set_http_status are in http_span.h,
 * trace_db_start and span_set_db_error in db_span.h: the tracer knows neither
 * evhttp's request nor the database.)
 *
 * span_start and the helpers return NULL when tracing is off or the trace is
 * not sampled; every span_* function accepts NULL and then does nothing, so
 * call sites need no checks. span_end hands the span to the tracer, which
 * batches spans and posts them to otlp_endpoint; nothing here ever blocks or
 * fails a request: a collector that is down, slow or refusing costs dropped
 * spans (counted in the worker's stats slot), never latency.
 *
 * The tracer's files: trace_context.c (W3C Trace Context and ids, pure),
 * trace.c (spans and the tracer: this header), trace_otlp.c (the OTLP/JSON
 * encoder), trace_export.c (the exporter and the final flush, tracer_flush),
 * with trace_int.h for what only they share; trace_attr.h names the attributes.
 */
#ifndef TODOD_TRACE_H
#define TODOD_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "trace_attr.h"
#include "trace_context.h"

struct conf;
struct event_base;
struct evkeyvalq;
struct stats_slot;
struct tls_client;
struct trace_span;
struct tracer;

/* Batch spans of one performance test. */
#define TRACE_PERF_BATCH_SPANS 100

/* ---- propagation with a tracer ---- */

/*
 * The trace of an incoming request, from its headers: a valid traceparent is
 * continued with its sampled flag (parent-based sampling, both ways) and its
 * tracestate; otherwise a new trace id is drawn and trace_sample_ratio
 * decides. Several traceparent headers are invalid; several tracestate headers
 * are joined with commas. out->valid is false only when tracing is off.
 */
void trace_request_context(struct tracer *t, const struct evkeyvalq *headers,
                           struct trace_context *out);

/*
 * A traceparent for an outgoing request made under span (or, when span is NULL
 * because the trace is not sampled, under ctx): "00-<trace>-<span>-<flags>".
 * Returns -1 (out = "") when there is no trace to propagate.
 */
int trace_format_traceparent(struct tracer *t, const struct trace_context *ctx,
                             const struct trace_span *span, char out[TRACE_PARENT_SIZE]);

/* ---- spans ---- */

/*
 * Start a span named name (copied). Its parent is local_parent when given,
 * else the remote parent (ctx->span_id, none when zero) in ctx's trace with
 * ctx's sampling decision; with neither, a new trace sampled by the ratio.
 * Returns NULL when tracing is off, the trace is not sampled or memory ran out.
 */
struct trace_span *span_start(struct tracer *t, const struct trace_context *remote_parent,
                              const struct trace_span *local_parent, const char *name,
                              enum span_kind kind);

/* Attributes: key and string values are copied (values cut to TRACE_ATTR_VALUE_MAX
 * bytes, invalid UTF-8 replaced); setting a key again replaces its value; beyond
 * TRACE_MAX_ATTRS keys the attribute is dropped and counted. A NULL value is ignored. */
void span_set_str(struct trace_span *s, const char *key, const char *value);
void span_set_strn(struct trace_span *s, const char *key, const char *value, size_t len);
void span_set_int(struct trace_span *s, const char *key, int64_t value);
void span_set_double(struct trace_span *s, const char *key, double value);
void span_set_bool(struct trace_span *s, const char *key, bool value);

/* Status ERROR with a description (copied, trailing whitespace cut; may be NULL). */
void span_set_error(struct trace_span *s, const char *message);

/* The span began earlier than span_start, at started (CLOCK_MONOTONIC, as
 * clock_now() gives): a server span from the request's first byte. */
void span_set_start(struct trace_span *s, struct timespec started);

/* Record the end time and hand the span to the tracer: s must not be used after. */
void span_end(struct trace_span *s);

/* The span's trace id in lowercase hex, or "-" for NULL. */
void span_trace_id_hex(const struct trace_span *s, char out[TRACE_ID_HEX_SIZE]);

/* "a b" (or "a" when b is NULL) into out[size], cut to fit, and out: span
 * names made per request ("GET /todos/{id}", "SELECT todos"), where printf
 * would be a large share of a span's cost. */
const char *span_name_join(char *out, size_t size, const char *a, const char *b);

/* ---- the tracer of a worker ---- */

/*
 * A tracer exporting from base to conf->otlp_endpoint, counting in slot (may be
 * NULL), to an https:// endpoint through tls (the worker's; NULL: tracing to
 * https:// is off). With no endpoint (or one it cannot use, logged) it does
 * nothing: spans are NULL and trace ids "-". NULL only when memory ran out;
 * every function accepts a NULL tracer as one that does nothing.
 */
struct tracer *tracer_new(struct event_base *base, const struct conf *conf, struct stats_slot *slot,
                          struct tls_client *tls);

/* Tracing is on: spans may be recorded. */
bool tracer_enabled(const struct tracer *t);

/* The address the worker listens on and its port ("" and 0 when unknown):
 * server.address and server.port of a request without a Host header. */
const char *tracer_listen_address(const struct tracer *t, int *port);

/* Free the tracer: a request in flight is cancelled; spans not sent count as
 * dropped. Every span must have been ended before. */
void tracer_free(struct tracer *t);

#endif
