/*
 * The SERVER span of an HTTP request, from what evhttp parsed: the tracer's
 * helpers that know evhttp (the tracer itself does not).
 */
#ifndef TODOD_HTTP_SPAN_H
#define TODOD_HTTP_SPAN_H

#include "trace.h"

struct evhttp_request;

/*
 * The SERVER span of an incoming request: fills *ctx from its traceparent and
 * tracestate (trace_request_context), then starts "{METHOD} {route}" ("{METHOD}"
 * when route is NULL: nothing matched) with http.request.method, http.route,
 * url.path, url.query (when present), url.scheme, server.address and
 * server.port (from Host, else the listening address), client.address,
 * user_agent.original and network.protocol.version. Call it once the route is
 * known. NULL when not recorded; *ctx names the trace all the same.
 */
struct trace_span *trace_http_server_start(struct tracer *t, struct evhttp_request *req,
                                           const char *route, struct trace_context *ctx);

/* http.response.status_code, and status ERROR on 5xx. */
void span_set_http_status(struct trace_span *s, int status);

#endif
