#include "trace_export.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "clock.h"
#include "decimal.h"
#include "log.h"
#include "tls.h"
#include "trace_int.h"
#include "trace_otlp.h"

#define EXPORT_TIMEOUT  5.0  /* seconds an export request may take, connecting included */
#define EXPORT_ATTEMPTS 5    /* tries per batch before it is dropped */
#define BACKOFF_INITIAL 0.25 /* seconds before the first retry, doubling */
#define BACKOFF_MAX     4.0
#define RESPONSE_MAX    65536 /* bytes of a collector's answer we read */
#define WARN_INTERVAL   60.0  /* seconds between two export warnings in the log */
#define EXPORT_PATH     "/v1/traces"

/* ---- the batch's body ---- */

static void body_free(struct export_body *b)
{
    free(b->data);
    free(b);
}

/* evbuffer_add_reference's cleanup: libevent is done with an attempt's body. */
static void body_released(const void *data, size_t len, void *arg)
{
    struct export_body *b = arg;

    (void)data;
    (void)len;
    if (--b->refs == 0 && b->orphan)
        body_free(b);
}

/* The body to encode the next batch into: the tracer's, unless libevent
 * still holds it (then a new one); NULL when memory ran out. */
static struct export_body *body_take(struct export_body **kept)
{
    struct export_body *b = *kept;

    if (b != NULL && b->refs > 0) {
        b->orphan = true;
        *kept = b = NULL;
    }
    if (b == NULL)
        b = *kept = calloc(1, sizeof(*b));
    return b;
}

/* The tracer lets go of its body (libevent may still hold it). */
static void body_drop(struct export_body *b)
{
    if (b == NULL)
        return;
    if (b->refs > 0)
        b->orphan = true;
    else
        body_free(b);
}

/* ---- export ---- */

static void export_warn(struct tracer *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A collector that is down would otherwise fill the log with one line per try. */
static void export_warn(struct tracer *t, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    t->failing = true;
    if (t->warned && clock_since(t->last_warn) < WARN_INTERVAL)
        return;
    t->warned = true;
    t->last_warn = clock_now();
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_warn("tracing: export to %s: %s", t->endpoint, msg);
}

static void flush_check(struct tracer *t);

static void timer_set(struct tracer *t, double seconds)
{
    struct timeval tv = clock_timeval(seconds);

    evtimer_add(t->timer, &tv);
}

/* Spans are waiting and nothing is in flight: send now, or when the batch delay ends. */
static void export_schedule(struct tracer *t)
{
    if (t->state != EXPORT_IDLE || t->queued == 0)
        return;
    if (t->queued >= TRACE_BATCH_MAX || t->flushing)
        event_active(t->kick, EV_TIMEOUT, 0);
    else if (!evtimer_pending(t->timer, NULL))
        timer_set(t, TRACE_BATCH_DELAY);
}

void trace_export_enqueue(struct tracer *t, struct trace_span *s)
{
    if (t->queued == TRACE_QUEUE_MAX) {
        span_free(s);
        TRACE_COUNT(t, trace_spans_dropped, 1);
        return;
    }
    t->queue[(t->head + t->queued) % TRACE_QUEUE_MAX] = s;
    t->queued++;
    export_schedule(t);
}

/* The batch is over, delivered or not. */
static void batch_done(struct tracer *t)
{
    t->body_len = 0;
    t->batch_spans = 0;
    t->state = EXPORT_IDLE;
    evtimer_del(t->timer);
    export_schedule(t);
    flush_check(t);
}

static void batch_drop(struct tracer *t)
{
    TRACE_COUNT(t, trace_spans_dropped, t->batch_spans);
    batch_done(t);
}

static void export_done(struct evhttp_request *req, void *arg);

static void export_retry(struct tracer *t, const char *why);

static void export_send(struct tracer *t)
{
    struct evhttp_request *req = evhttp_request_new(export_done, t);
    struct evkeyvalq *h;

    t->state = EXPORT_SENDING;
    t->retry_after = 0;
    t->attempts++;
    if (req == NULL) {
        export_retry(t, "out of memory");
        return;
    }
    h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", t->host_header);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "User-Agent", "todod/" TODOD_VERSION);
    /* By reference, counted: libevent may still be writing an attempt when
     * the collector answers early, and the body stays for the next retry. */
    if (evbuffer_add_reference(evhttp_request_get_output_buffer(req), t->body->data, t->body_len,
                               body_released, t->body) != 0) {
        evhttp_request_free(req);
        export_retry(t, "out of memory");
        return;
    }
    t->body->refs++;
    /* The deadline, set before the request: a connection that fails at once
     * calls export_done from inside evhttp_make_request, which then sets the
     * timer for the retry. */
    timer_set(t, EXPORT_TIMEOUT);
    t->req = req;
    if (evhttp_make_request(t->conn, req, EVHTTP_REQ_POST, t->target) != 0 && t->req == req) {
        /* Failed before sending, without calling back (req is libevent's). */
        t->req = NULL;
        export_retry(t, "cannot start the request");
    }
}

/* Take the next batch off the queue, encode it and send it. */
static void export_next(struct tracer *t)
{
    int n = t->queued < TRACE_BATCH_MAX ? t->queued : TRACE_BATCH_MAX;
    struct trace_span *batch[TRACE_BATCH_MAX];
    struct export_body *body;
    size_t len = 0;
    int i;

    if (t->state != EXPORT_IDLE || n == 0) {
        flush_check(t);
        return;
    }
    t->batch_spans = n;
    t->attempts = 0;
    body = body_take(&t->body);
    if (body != NULL) {
        /* Off the queue, encoded once (the body is kept for the retries), and
         * kept for the next span_start. */
        for (i = 0; i < n; i++) {
            batch[i] = t->queue[t->head];
            t->head = (t->head + 1) % TRACE_QUEUE_MAX;
            t->queued--;
        }
        len = trace_otlp_encode_batch(t, batch, n, body);
        for (i = 0; i < n; i++)
            span_recycle(t, batch[i]);
    }
    if (len == 0) {
        export_warn(t, "out of memory encoding %d spans", n);
        batch_drop(t);
        return;
    }
    t->body_len = len;
    export_send(t);
}

static bool retryable(int code)
{
    /* No answer at all (0), or what OTLP/HTTP names as worth a retry. */
    return code == 0 || code == 429 || code == 502 || code == 503 || code == 504;
}

static double backoff_delay(struct tracer *t)
{
    double d = BACKOFF_INITIAL * (double)(1u << (t->attempts - 1));

    if (d > BACKOFF_MAX)
        d = BACKOFF_MAX;
    /* Jitter (75 % to 125 %), so the workers do not retry in step. */
    d *= 0.75 + 0.5 * (double)(trace_rng_next(&t->rng) >> 11) / 9007199254740992.0;
    if (t->retry_after > d)
        d = t->retry_after < BACKOFF_MAX ? t->retry_after : BACKOFF_MAX;
    return d;
}

/* An attempt failed with a retryable outcome: wait and retry, or give up. */
static void export_retry(struct tracer *t, const char *why)
{
    double delay;

    TRACE_COUNT(t, trace_export_errors, 1);
    delay = backoff_delay(t);
    /* During the final flush there is no time to wait for a collector. */
    if (t->attempts >= EXPORT_ATTEMPTS || t->flushing) {
        export_warn(t, "%s; %d spans dropped after %d attempts", why, t->batch_spans, t->attempts);
        batch_drop(t);
        return;
    }
    export_warn(t, "%s; retrying", why);
    t->state = EXPORT_BACKOFF;
    timer_set(t, delay);
}

/* A 2xx: count the spans, minus those a partial success says were rejected. */
static void export_succeeded(struct tracer *t, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    int64_t rejected = 0;

    if (len > 0 && len <= RESPONSE_MAX) {
        struct json_tokener *tok = json_tokener_new();
        struct json_object *resp = NULL, *ps, *n, *msg;

        /* The body is not NUL-terminated: parse exactly its length. */
        if (tok != NULL) {
            resp = json_tokener_parse_ex(tok, (const char *)evbuffer_pullup(in, -1), (int)len);
            json_tokener_free(tok);
        }

        if (resp != NULL && json_object_object_get_ex(resp, "partialSuccess", &ps)) {
            if (json_object_object_get_ex(ps, "rejectedSpans", &n))
                rejected = json_object_get_int64(n);
            if (rejected > 0)
                export_warn(t, "collector rejected %" PRId64 " of %d spans: %s", rejected,
                            t->batch_spans,
                            json_object_object_get_ex(ps, "errorMessage", &msg)
                                ? json_object_get_string(msg)
                                : "no reason given");
        }
        json_object_put(resp);
    }
    if (rejected < 0)
        rejected = 0;
    if (rejected > t->batch_spans)
        rejected = t->batch_spans;
    TRACE_COUNT(t, trace_spans_exported, t->batch_spans - rejected);
    TRACE_COUNT(t, trace_spans_dropped, rejected);
    if (t->failing && rejected == 0) {
        t->failing = false;
        log_info("tracing: export to %s works again", t->endpoint);
    }
    batch_done(t);
}

static void export_done(struct evhttp_request *req, void *arg)
{
    struct tracer *t = arg;
    int code = req ? evhttp_request_get_response_code(req) : 0;
    const char *tls_why;
    char why[160];

    if (t->state != EXPORT_SENDING || t->req == NULL)
        return;
    t->req = NULL;
    evtimer_del(t->timer);
    if (code >= 200 && code < 300) {
        export_succeeded(t, req);
        return;
    }
    if (code == 0 && t->https && (tls_why = tls_failure_reason(t->conn, &t->tls_failure)) != NULL) {
        snprintf(why, sizeof(why), "no answer (%s)", tls_why);
    } else if (code == 0) {
        snprintf(why, sizeof(why), "no answer (connection failed or closed)");
    } else {
        const char *ra = evhttp_find_header(evhttp_request_get_input_headers(req), "Retry-After");
        /* delay-seconds; an HTTP-date or a longer delay is ignored (the wait
         * is capped at BACKOFF_MAX anyway). */
        int secs = ra ? decimal_parse_u16(ra, strlen(ra)) : -1;

        snprintf(why, sizeof(why), "HTTP %d", code);
        if (secs >= 0)
            t->retry_after = secs;
    }
    if (retryable(code)) {
        export_retry(t, why);
        return;
    }
    /* Anything else will not get better by sending the same batch again. */
    TRACE_COUNT(t, trace_export_errors, 1);
    export_warn(t, "%s; %d spans dropped", why, t->batch_spans);
    batch_drop(t);
}

static void export_timer(evutil_socket_t fd, short what, void *arg)
{
    struct tracer *t = arg;
    struct evhttp_request *req;

    switch (t->state) {
    case EXPORT_IDLE:
        export_next(t);
        break;
    case EXPORT_SENDING:
        /* The deadline: a slow collector must not hold the queue. Cancelling
         * resets the connection and does not call export_done. */
        req = t->req;
        t->req = NULL;
        if (req != NULL)
            evhttp_cancel_request(req);
        export_retry(t, "no answer within the time-out");
        break;
    case EXPORT_BACKOFF:
        export_send(t);
        break;
    }
}

static void export_kick(evutil_socket_t fd, short what, void *arg)
{
    struct tracer *t = arg;

    if (t->state == EXPORT_IDLE) {
        evtimer_del(t->timer);
        export_next(t);
    } else if (t->state == EXPORT_BACKOFF && (t->flushing || !evtimer_pending(t->timer, NULL))) {
        evtimer_del(t->timer);
        export_send(t);
    }
}

/* ---- the final flush ---- */

static void flush_finished(evutil_socket_t fd, short what, void *arg)
{
    struct tracer *t = arg;
    void (*done)(void *) = t->flush_done;

    t->flush_done = NULL;
    if (t->flush_deadline != NULL)
        event_del(t->flush_deadline);
    if (done != NULL)
        done(t->flush_arg); /* may free t: nothing after this */
}

/* Everything sent: tell the caller, from the loop (it may free the tracer). */
static void flush_check(struct tracer *t)
{
    if (t->flushing && t->flush_done != NULL && t->state == EXPORT_IDLE && t->queued == 0)
        event_active(t->flush_finished, EV_TIMEOUT, 0);
}

static void drop_queued(struct tracer *t)
{
    TRACE_COUNT(t, trace_spans_dropped, t->queued);
    while (t->queued > 0) {
        span_free(t->queue[t->head]);
        t->head = (t->head + 1) % TRACE_QUEUE_MAX;
        t->queued--;
    }
}

/* Out of time: what is still unsent is dropped. */
static void flush_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct tracer *t = arg;
    struct evhttp_request *req = t->req;

    if (t->state != EXPORT_IDLE) {
        t->req = NULL;
        if (req != NULL)
            evhttp_cancel_request(req);
        TRACE_COUNT(t, trace_export_errors, 1);
        export_warn(t, "no answer before the worker stopped; %d spans dropped", t->batch_spans);
        batch_drop(t);
    }
    drop_queued(t);
    flush_finished(fd, what, t);
}

void tracer_flush(struct tracer *t, void (*done)(void *arg), void *arg)
{
    struct timeval tv = clock_timeval(TRACE_FLUSH_MAX);

    if (t == NULL) {
        if (done != NULL)
            done(arg);
        return;
    }
    t->flushing = true;
    t->flush_done = done;
    t->flush_arg = arg;
    if (!t->enabled) {
        event_active(t->flush_finished, EV_TIMEOUT, 0);
        return;
    }
    evtimer_add(t->flush_deadline, &tv);
    if (t->state == EXPORT_SENDING)
        return; /* its answer sends the rest */
    event_active(t->kick, EV_TIMEOUT, 0);
    flush_check(t);
}

int trace_export_init(struct tracer *t)
{
    t->state = EXPORT_IDLE;
    t->flush_finished = event_new(t->base, -1, 0, flush_finished, t);
    return t->flush_finished != NULL ? 0 : -1;
}

int trace_export_open(struct tracer *t, const char *endpoint)
{
    t->endpoint = strdup(endpoint);
    t->queue = calloc(TRACE_QUEUE_MAX, sizeof(*t->queue));
    t->timer = evtimer_new(t->base, export_timer, t);
    t->kick = event_new(t->base, -1, 0, export_kick, t);
    t->flush_deadline = evtimer_new(t->base, flush_deadline, t);
    if (t->endpoint == NULL || t->queue == NULL || t->timer == NULL || t->kick == NULL ||
        t->flush_deadline == NULL)
        return -1;
    return 0;
}

void trace_export_free(struct tracer *t)
{
    if (t->req != NULL) {
        struct evhttp_request *req = t->req;

        t->req = NULL;
        evhttp_cancel_request(req);
    }
    TRACE_COUNT(t, trace_spans_dropped, t->batch_spans);
    drop_queued(t);
    if (t->conn != NULL)
        evhttp_connection_free(t->conn);
    body_drop(t->body); /* after the connection: its requests held it */
    if (t->dns != NULL)
        evdns_base_free(t->dns, 0);
    if (t->timer != NULL)
        event_free(t->timer);
    if (t->kick != NULL)
        event_free(t->kick);
    if (t->flush_deadline != NULL)
        event_free(t->flush_deadline);
    if (t->flush_finished != NULL)
        event_free(t->flush_finished);
    free(t->queue);
    free(t->endpoint);
    free(t->target);
    free(t->host_header);
}

/* ---- the HTTP client ---- */

static bool is_ip_address(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int trace_export_connect(struct tracer *t, const char *endpoint)
{
    struct evhttp_uri *uri = evhttp_uri_parse(endpoint);
    const char *scheme, *host, *path, *query;
    char name[256];
    struct timeval tv = clock_timeval(EXPORT_TIMEOUT);
    int port, rc = -1;
    size_t n;

    if (uri == NULL) {
        log_error("tracing off: otlp_endpoint %s is not a URL", endpoint);
        return -1;
    }
    scheme = evhttp_uri_get_scheme(uri);
    host = evhttp_uri_get_host(uri);
    port = evhttp_uri_get_port(uri);
    path = evhttp_uri_get_path(uri);
    query = evhttp_uri_get_query(uri);
    if (scheme == NULL || host == NULL || host[0] == '\0' ||
        (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        log_error("tracing off: otlp_endpoint %s is not an http:// or https:// URL with a host",
                  endpoint);
        goto out;
    }
    t->https = strcasecmp(scheme, "https") == 0;
    if (t->https && t->tls == NULL) {
        log_error("tracing off: otlp_endpoint %s: no TLS client", endpoint);
        goto out;
    }
    /* libevent keeps the brackets of an IPv6 literal; connecting wants none. */
    n = strlen(host);
    if (host[0] == '[' && n > 2 && host[n - 1] == ']')
        snprintf(name, sizeof(name), "%.*s", (int)(n - 2), host + 1);
    else
        snprintf(name, sizeof(name), "%s", host);
    if (port < 0)
        port = t->https ? 443 : 80;
    /* A URL without a path means the collector's standard traces path. */
    if (path == NULL || path[0] == '\0' || strcmp(path, "/") == 0)
        path = EXPORT_PATH;
    if (asprintf(&t->target, "%s%s%s", path, query ? "?" : "", query ? query : "") < 0) {
        t->target = NULL;
        goto out;
    }
    /* Host as the URL has it: the port only when the URL names one. */
    if ((evhttp_uri_get_port(uri) >= 0 ? asprintf(&t->host_header, "%s:%d", host, port)
                                       : asprintf(&t->host_header, "%s", host)) < 0) {
        t->host_header = NULL;
        goto out;
    }
    if (!is_ip_address(name)) {
        t->dns = evdns_base_new(t->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        if (t->dns == NULL) {
            log_error("tracing off: no DNS resolver for %s", name);
            goto out;
        }
    }
    /* Never plain text to an https:// endpoint: no TLS, no connection. */
    if (t->https)
        t->conn = tls_connection_new(t->tls, t->base, t->dns, name, (unsigned short)port,
                                     &t->tls_failure);
    else
        t->conn = evhttp_connection_base_new(t->base, t->dns, name, (unsigned short)port);
    if (t->conn == NULL)
        goto out;
    /* Our own retries, with back-off, between batches; libevent's would resend at once. */
    evhttp_connection_set_retries(t->conn, 0);
    evhttp_connection_set_timeout_tv(t->conn, &tv);
    evhttp_connection_set_max_body_size(t->conn, RESPONSE_MAX);
    evhttp_connection_set_max_headers_size(t->conn, RESPONSE_MAX);
    rc = 0;
out:
    evhttp_uri_free(uri);
    return rc;
}
