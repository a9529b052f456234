/*
 * What a span carries: its kind, the names of its attributes and of the
 * resource's (every name todod sets, in this one table), and how much of them
 * a span keeps.
 */
#ifndef TODOD_TRACE_ATTR_H
#define TODOD_TRACE_ATTR_H

/* The OTLP values of Span.SpanKind. */
enum span_kind {
    SPAN_KIND_INTERNAL = 1,
    SPAN_KIND_SERVER = 2,
    SPAN_KIND_CLIENT = 3,
    SPAN_KIND_PRODUCER = 4,
    SPAN_KIND_CONSUMER = 5,
};

/* Limits of one span; what is beyond them is dropped (and counted in the span). */
#define TRACE_MAX_ATTRS      32
#define TRACE_ATTR_VALUE_MAX 1024 /* bytes of a string value; longer ones are cut */

/* OpenTelemetry semantic-convention attribute names. */
#define TRACE_ATTR_HTTP_METHOD      "http.request.method"
#define TRACE_ATTR_HTTP_ROUTE       "http.route"
#define TRACE_ATTR_HTTP_STATUS      "http.response.status_code"
#define TRACE_ATTR_URL_PATH         "url.path"
#define TRACE_ATTR_URL_QUERY        "url.query"
#define TRACE_ATTR_URL_SCHEME       "url.scheme"
#define TRACE_ATTR_SERVER_ADDRESS   "server.address"
#define TRACE_ATTR_SERVER_PORT      "server.port"
#define TRACE_ATTR_CLIENT_ADDRESS   "client.address"
#define TRACE_ATTR_USER_AGENT       "user_agent.original"
#define TRACE_ATTR_PROTOCOL_VERSION "network.protocol.version"
#define TRACE_ATTR_ERROR_TYPE       "error.type"
#define TRACE_ATTR_DB_SYSTEM        "db.system.name"
#define TRACE_ATTR_DB_OPERATION     "db.operation.name"
#define TRACE_ATTR_DB_COLLECTION    "db.collection.name"
#define TRACE_ATTR_DB_NAMESPACE     "db.namespace"
#define TRACE_ATTR_DB_QUERY_TEXT    "db.query.text"
#define TRACE_ATTR_DB_STATUS_CODE   "db.response.status_code"
#define TRACE_ATTR_DB_BATCH_SIZE    "db.operation.batch.size"
/* todod's own, for the performance-test span. */
#define TRACE_ATTR_PERF_MESSAGES "todod.perf.message_count"
#define TRACE_ATTR_PERF_BATCH    "todod.perf.batch_size"
#define TRACE_ATTR_PERF_BATCHES  "todod.perf.batches"
#define TRACE_ATTR_PERF_SUCCESS  "todod.perf.success_count"
#define TRACE_ATTR_PERF_ERRORS   "todod.perf.error_count"
#define TRACE_ATTR_PERF_UNKNOWN  "todod.perf.unknown_count"
#define TRACE_ATTR_PERF_WORKERS  "todod.perf.workers"
#define TRACE_ATTR_PERF_NODES    "todod.perf.nodes"
#define TRACE_ATTR_PERF_RUN_ID   "todod.perf.run_id"
#define TRACE_ATTR_PERF_RATE     "todod.perf.rate"
#define TRACE_ATTR_PERF_FIRST    "todod.perf.first" /* a share's first todo */

/* The resource's attributes: the process that exports. */
#define TRACE_RESOURCE_SERVICE_NAME     "service.name"
#define TRACE_RESOURCE_SERVICE_VERSION  "service.version"
#define TRACE_RESOURCE_SERVICE_INSTANCE "service.instance.id"
#define TRACE_RESOURCE_HOST_NAME        "host.name"
#define TRACE_RESOURCE_PROCESS_PID      "process.pid"

#endif
