/*
 * What only the tracer's own files share (trace.c: spans and the tracer;
 * trace_otlp.c: the encoder; trace_export.c: the exporter): the tracer and a
 * span as they are in memory. The rest of the daemon sees both as opaque
 * (trace.h).
 */
#ifndef TODOD_TRACE_INT_H
#define TODOD_TRACE_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "stats.h"
#include "tls.h"
#include "trace_attr.h"
#include "trace_context.h"

#define SPAN_ARENA 768 /* bytes of strings kept inside a span */

enum export_state {
    EXPORT_IDLE,    /* no batch: the timer, when armed, sends what has accumulated */
    EXPORT_SENDING, /* a batch is in flight: the timer is its deadline */
    EXPORT_BACKOFF, /* the batch failed: the timer sends it again */
};

/*
 * The JSON of a batch. Each attempt hands it to libevent by reference (a
 * batch is hundreds of KB: a copy per attempt, and a fresh allocation per
 * batch, cost page faults on every batch); libevent tells when it is done
 * with it. The memory is kept for the next batch, unless libevent still
 * holds it then: it is left to libevent (orphan) and freed when released.
 */
struct export_body {
    char *data;
    size_t cap;
    unsigned refs; /* attempts libevent still holds it for */
    bool orphan;   /* no longer the tracer's: freed at the last release */
};

struct tracer {
    struct event_base *base;
    struct stats_slot *slot;
    bool enabled;
    double ratio;
    struct trace_rng rng;
    /* where to and what about us */
    char *endpoint;    /* for the log */
    char *target;      /* path and query of the POST */
    char *host_header; /* host[:port] as in the URL */
    char listen_host[64];
    int listen_port;
    char *prefix; /* the JSON of the resource and scope, rendered once */
    size_t prefix_len;
    struct json_object *scratch_string; /* json-c's escaping, reused */
    struct json_object *scratch_double;
    struct evdns_base *dns; /* NULL when the endpoint's host is an address */
    struct evhttp_connection *conn;
    struct tls_client *tls;         /* the worker's, for an https:// endpoint */
    bool https;                     /* conn speaks TLS */
    struct tls_failure tls_failure; /* why its last handshake failed */
    /* spans waiting: a ring of TRACE_QUEUE_MAX (trace_export.h) */
    struct trace_span **queue;
    int head, queued;
    /* the batch in flight */
    enum export_state state;
    struct evhttp_request *req;
    struct export_body *body; /* kept from batch to batch; NULL: none yet */
    size_t body_len;
    struct trace_span *spares; /* exported spans, for span_start to reuse */
    int nspares;
    size_t span_bytes; /* JSON bytes a span took in the last batch: sizes the next */
    int batch_spans;
    int attempts;
    double retry_after;  /* seconds the collector asked us to wait, 0: none */
    struct event *timer; /* meaning by state, see enum export_state */
    struct event *kick;  /* deferred: export now */
    /* log */
    bool failing;
    struct timespec last_warn;
    bool warned;
    /* the final flush */
    bool flushing;
    void (*flush_done)(void *arg);
    void *flush_arg;
    struct event *flush_deadline;
    struct event *flush_finished; /* deferred: calls flush_done from the loop */
};

#define TRACE_COUNT(t, field, n)                                                                   \
    do {                                                                                           \
        if ((t)->slot != NULL)                                                                     \
            atomic_fetch_add_explicit(&(t)->slot->c.field, (uint64_t)(n), memory_order_relaxed);   \
    } while (0)

enum attr_type { ATTR_STRING, ATTR_INT, ATTR_DOUBLE, ATTR_BOOL };

/* A string kept in a span: valid UTF-8, NUL-terminated, its length and
 * whether it can go into JSON as it is (no byte needs an escape), both found
 * when it is copied, so that encoding needs no second look at it. */
struct span_text {
    const char *s; /* NULL: none */
    uint32_t len;
    bool plain;
};

struct span_attr {
    struct span_text key;
    enum attr_type type;
    union {
        struct span_text s;
        int64_t i;
        double d;
        bool b;
    } v;
};

/* Strings that do not fit in a span's arena get a chunk of their own. */
struct arena_chunk {
    struct arena_chunk *next;
    char data[];
};

struct trace_span {
    struct tracer *tracer;
    uint8_t trace_id[TRACE_ID_SIZE];
    uint8_t span_id[TRACE_SPAN_ID_SIZE];
    uint8_t parent_id[TRACE_SPAN_ID_SIZE]; /* all zero: a root span */
    enum span_kind kind;
    bool error;
    uint64_t start_ns, end_ns; /* since the epoch */
    struct timespec start_mono;
    struct span_text name;
    struct span_text tracestate;     /* .s NULL: none */
    struct span_text status_message; /* .s NULL: none */
    int nattrs;
    int dropped_attrs;
    struct span_attr attrs[TRACE_MAX_ATTRS];
    struct arena_chunk *chunks;
    size_t arena_used;
    struct trace_span *next_spare;
    char arena[SPAN_ARENA];
};

/* A span's memory (trace.c): freed, or kept for the next span_start. */
void span_free(struct trace_span *s);
void span_recycle(struct tracer *t, struct trace_span *s);

#endif
