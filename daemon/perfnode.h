/*
 * A share of a performance test run by another todod instance (perf_nodes):
 * POST /todos/performance-test to it with libevent's HTTP client, from the
 * event loop, asking for streamed progress; every line it sends (cumulative
 * counts and latency histograms) replaces what is known of the node.
 *
 * A node is input, as a request body is: each line is strict JSON (RFC 8259,
 * no duplicate names), every field is checked for its type and range (counts
 * within the node's share and never going down, histograms, per_worker
 * entries), a line is at most PERF_NODE_MAX_LINE bytes, and a node sends no
 * more lines than its progress interval allows. A node that breaks a rule is
 * ended with an error saying which; what it had validly confirmed stays.
 *
 * A node that cannot be reached, or that goes away, ends with an error too: its
 * confirmed rows stay counted; its others are errors when it never had the
 * request (no connection) or refused it (a status other than 200), unknown
 * otherwise (it may be running them).
 */
#ifndef TODOD_PERFNODE_H
#define TODOD_PERFNODE_H

#include <event2/dns.h>
#include <event2/event.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "perfboard.h"

struct tls_client;
#define PERF_NODE_MAX_LINE (256 * 1024)

struct perf_node;

struct perf_node_state {
    bool started;  /* it may have run rows: it answered 200, or had the request */
    bool finished; /* its report arrived, or it failed */
    char error[200];
    int64_t success, errors, unknown, batches;
    int workers;
    struct perf_hist latency, lag;
    struct json_object *per_worker; /* from its report (owned, checked), or NULL */
};

/* What a node is asked to run. */
struct perf_node_share {
    const char *url;           /* the node's base URL */
    const char *body;          /* the JSON request, with "share" */
    const char *run_id;        /* the test's, which every line must carry */
    int64_t count;             /* rows of its share */
    double interval;           /* seconds between its progress lines */
    double idle;               /* seconds without a byte before it counts as gone */
    const char *traceparent;   /* its parent span in the test's trace; NULL: untraced */
    const char *authorization; /* the caller's Authorization header, forwarded; NULL: none */
    struct tls_client *tls;    /* the worker's, for an https:// node (tls.h) */
};

/* Starts the share. on_update runs after each line and at the end. */
struct perf_node *perfnode_start(struct event_base *base, struct evdns_base *dns,
                                 const struct perf_node_share *share, void (*on_update)(void *ctx),
                                 void *ctx);
const struct perf_node_state *perfnode_state(const struct perf_node *n);
/* The test ends before the node did (its worker stops): the node is ended
 * now, with error, as one that went away. */
void perfnode_stop(struct perf_node *n, const char *error);
/* The test was cancelled: DELETE the node's share (same run_id; the
 * canceller's Authorization header, or none), which stops at its next batch
 * and ends its streamed answer with its report. Once; the answer is logged. */
void perfnode_cancel(struct perf_node *n, struct event_base *base, struct evdns_base *dns,
                     const char *authorization);
/* Cancels what is in flight and frees. */
void perfnode_free(struct perf_node *n);

/* A histogram as JSON {"min_us","max_us","buckets":[[index,count],...]} and back:
 * the parse checks every field, and that the histogram counts at most max. */
struct json_object *perfnode_hist_json(const struct perf_hist *h);
bool perfnode_hist_parse(struct json_object *o, int64_t max, struct perf_hist *h);

#endif
