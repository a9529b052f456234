/*
 * The exporter: the queue of ended spans, sent in batches to the collector
 * over OTLP/HTTP from the worker's event loop, with retries and back-off; and
 * the final flush when the worker stops.
 */
#ifndef TODOD_TRACE_EXPORT_H
#define TODOD_TRACE_EXPORT_H

struct trace_span;
struct tracer;

/* Export: at most this many spans per request, or what accumulated after the delay. */
#define TRACE_BATCH_MAX   512
#define TRACE_BATCH_DELAY 1.0  /* seconds */
#define TRACE_QUEUE_MAX   2048 /* spans waiting per worker; more are dropped */
#define TRACE_FLUSH_MAX   1.0  /* seconds tracer_flush may take */

/*
 * The final flush when the worker stops: send what is queued (spans ended later
 * are sent too, while time allows) and call done(arg) from the event loop once
 * nothing is left or TRACE_FLUSH_MAX seconds have passed, whichever is first;
 * what is still unsent then is counted as dropped. The loop must keep running
 * until done is called. With a NULL tracer done is called at once.
 */
void tracer_flush(struct tracer *t, void (*done)(void *arg), void *arg);

/* The flush's deferred callback, which even a tracer that exports nothing
 * needs; -1 when memory ran out. */
int trace_export_init(struct tracer *t);

/* What exporting to endpoint takes, but its HTTP client: the queue and the
 * timers; -1 when memory ran out. */
int trace_export_open(struct tracer *t, const char *endpoint);

/*
 * Set up the HTTP client for endpoint. A host name is resolved by evdns from
 * the loop (libevent would otherwise call the blocking getaddrinfo()).
 * Returns -1, logged, when the endpoint cannot be used.
 */
int trace_export_connect(struct tracer *t, const char *endpoint);

/* A request in flight is cancelled; spans not sent count as dropped. */
void trace_export_free(struct tracer *t);

/* An ended span joins the queue (dropped, and counted, when it is full). */
void trace_export_enqueue(struct tracer *t, struct trace_span *s);

#endif
