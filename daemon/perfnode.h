/*
 * A share of a performance test run by another todod instance (perf_nodes):
 * POST /todos/performance-test to it with libevent's HTTP client, from the
 * event loop, asking for streamed progress; every line it sends (cumulative
 * counts and latency histograms) replaces what is known of the node. A node
 * that cannot be reached, or that goes away, ends with an error; what it
 * confirmed stays counted, its other rows are errors (never started) or
 * unknown (started, not confirmed).
 */
#ifndef TODOD_PERFNODE_H
#define TODOD_PERFNODE_H

#include <event2/dns.h>
#include <event2/event.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "perfboard.h"

struct perf_node;

struct perf_node_state {
    bool started;  /* the node answered 200: its share runs */
    bool finished; /* its report arrived, or it failed */
    char error[200];
    int64_t success, errors, unknown, batches;
    int workers;
    struct perf_hist latency, lag;
    struct json_object *per_worker; /* from its report (owned), or NULL */
};

/*
 * Starts the share: rows described by body (a JSON object the node's
 * /todos/performance-test accepts, with "share"). on_update runs after each
 * line and at the end. idle: seconds without a line before the node counts as
 * gone. traceparent may be NULL.
 */
struct perf_node *perfnode_start(struct event_base *base, struct evdns_base *dns,
                                 const char *base_url, const char *body, double idle,
                                 const char *traceparent, void (*on_update)(void *ctx), void *ctx);
const struct perf_node_state *perfnode_state(const struct perf_node *n);
/* Cancels what is in flight and frees. */
void perfnode_free(struct perf_node *n);

/* A histogram as JSON {"min_us","max_us","buckets":[[index,count],...]} and back. */
struct json_object *perfnode_hist_json(const struct perf_hist *h);
bool perfnode_hist_parse(struct json_object *o, struct perf_hist *h);

#endif
