#include "perfnode.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct perf_node {
    struct evhttp_connection *evcon;
    struct evbuffer *lines;     /* what arrived and is not a whole line yet */
    struct evhttp_request *req; /* NULL once it is over */
    struct perf_node_state st;
    char url[512];
    void (*on_update)(void *ctx);
    void *ctx;
};

struct json_object *perfnode_hist_json(const struct perf_hist *h)
{
    struct json_object *o = json_object_new_object(), *buckets = json_object_new_array();

    if (o == NULL || buckets == NULL) {
        json_object_put(o);
        json_object_put(buckets);
        return NULL;
    }
    json_object_object_add(o, "min_us", json_object_new_int64(h->count ? (int64_t)h->min_us : 0));
    json_object_object_add(o, "max_us", json_object_new_int64((int64_t)h->max_us));
    for (int i = 0; i < PERF_HIST_BUCKETS; i++) {
        struct json_object *pair;

        if (h->bucket[i] == 0)
            continue;
        pair = json_object_new_array();
        json_object_array_add(pair, json_object_new_int(i));
        json_object_array_add(pair, json_object_new_int64((int64_t)h->bucket[i]));
        json_object_array_add(buckets, pair);
    }
    json_object_object_add(o, "buckets", buckets);
    return o;
}

bool perfnode_hist_parse(struct json_object *o, struct perf_hist *h)
{
    struct json_object *mn, *mx, *buckets;
    size_t i, n;

    perf_hist_init(h);
    if (!json_object_object_get_ex(o, "min_us", &mn) ||
        !json_object_object_get_ex(o, "max_us", &mx) ||
        !json_object_object_get_ex(o, "buckets", &buckets) ||
        !json_object_is_type(buckets, json_type_array))
        return false;
    n = json_object_array_length(buckets);
    for (i = 0; i < n; i++) {
        struct json_object *pair = json_object_array_get_idx(buckets, i);
        int64_t idx, count;

        if (!json_object_is_type(pair, json_type_array) || json_object_array_length(pair) != 2)
            return false;
        idx = json_object_get_int64(json_object_array_get_idx(pair, 0));
        count = json_object_get_int64(json_object_array_get_idx(pair, 1));
        if (idx < 0 || idx >= PERF_HIST_BUCKETS || count < 0)
            return false;
        h->bucket[idx] += (uint64_t)count;
        h->count += (uint64_t)count;
    }
    if (h->count > 0) {
        h->min_us = (uint64_t)json_object_get_int64(mn);
        h->max_us = (uint64_t)json_object_get_int64(mx);
    }
    return true;
}

static int64_t get_int(struct json_object *o, const char *key)
{
    struct json_object *v;

    return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

/* One line the node sent: progress or its report. */
static void take_line(struct perf_node *n, const char *line, size_t len)
{
    struct json_object *o = json_tokener_parse(line), *v;
    bool report;

    (void)len;
    if (o == NULL || !json_object_is_type(o, json_type_object)) {
        snprintf(n->st.error, sizeof(n->st.error), "unreadable progress line");
        json_object_put(o);
        return;
    }
    report = json_object_object_get_ex(o, "type", &v) &&
             strcmp(json_object_get_string(v), "report") == 0;
    n->st.success = get_int(o, "success_count");
    n->st.errors = get_int(o, "error_count");
    n->st.unknown = get_int(o, "unknown_count");
    n->st.batches = get_int(o, "batches");
    if (json_object_object_get_ex(o, "latency_histogram", &v))
        perfnode_hist_parse(v, &n->st.latency);
    if (json_object_object_get_ex(o, "lag_histogram", &v))
        perfnode_hist_parse(v, &n->st.lag);
    if (report) {
        n->st.finished = true;
        n->st.workers = (int)get_int(o, "workers");
        if (json_object_object_get_ex(o, "per_worker", &v)) {
            json_object_put(n->st.per_worker);
            n->st.per_worker = json_object_get(v);
        }
    }
    json_object_put(o);
}

static void on_chunk(struct evhttp_request *req, void *arg)
{
    struct perf_node *n = arg;
    char *line;
    size_t len;

    n->st.started = true;
    /* libevent empties its buffer after this callback: a line cut between
     * two chunks waits in ours. */
    evbuffer_add_buffer(n->lines, evhttp_request_get_input_buffer(req));
    while ((line = evbuffer_readln(n->lines, &len, EVBUFFER_EOL_LF)) != NULL) {
        if (len > 0)
            take_line(n, line, len);
        free(line);
    }
    if (n->on_update != NULL)
        n->on_update(n->ctx);
}

static void finish(struct perf_node *n, const char *error)
{
    n->req = NULL;
    if (!n->st.finished && error != NULL && n->st.error[0] == '\0')
        snprintf(n->st.error, sizeof(n->st.error), "%s", error);
    n->st.finished = true;
    if (n->on_update != NULL)
        n->on_update(n->ctx);
}

static void on_done(struct evhttp_request *req, void *arg)
{
    struct perf_node *n = arg;
    int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
    char why[160];

    log_debug("performance test node %s: answer %d", n->url, code);
    if (req == NULL || code == 0) {
        finish(n, "the node did not answer, or its connection broke");
        return;
    }
    if (code != 200) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);

        snprintf(why, sizeof(why), "the node answered %d: %.*s", code, len > 120 ? 120 : (int)len,
                 (const char *)evbuffer_pullup(in, -1));
        why[strcspn(why, "\n")] = '\0';
        finish(n, why);
        return;
    }
    on_chunk(req, n); /* what is left of the body */
    finish(n, n->st.finished ? NULL : "the node's answer ended without its report");
}

static void on_error(enum evhttp_request_error err, void *arg)
{
    struct perf_node *n = arg;

    switch (err) {
    case EVREQ_HTTP_TIMEOUT:
        finish(n, "the node sent nothing for too long");
        break;
    case EVREQ_HTTP_EOF:
        finish(n, "the node closed the connection");
        break;
    default:
        finish(n, "the node could not be reached");
        break;
    }
}

struct perf_node *perfnode_start(struct event_base *base, struct evdns_base *dns,
                                 const char *base_url, const char *body, double idle,
                                 const char *traceparent, void (*on_update)(void *ctx), void *ctx)
{
    struct perf_node *n = calloc(1, sizeof(*n));
    struct evhttp_uri *uri = NULL;
    struct evkeyvalq *headers;
    const char *host;
    char hostport[300], path[600];
    int port;

    if (n == NULL)
        return NULL;
    perf_hist_init(&n->st.latency);
    perf_hist_init(&n->st.lag);
    n->on_update = on_update;
    n->ctx = ctx;
    n->lines = evbuffer_new();
    snprintf(n->url, sizeof(n->url), "%s", base_url);
    uri = evhttp_uri_parse(base_url);
    host = uri != NULL ? evhttp_uri_get_host(uri) : NULL;
    if (host == NULL) {
        snprintf(n->st.error, sizeof(n->st.error), "invalid node URL");
        n->st.finished = true;
        goto out;
    }
    port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 80;
    snprintf(path, sizeof(path), "%s/todos/performance-test",
             evhttp_uri_get_path(uri) != NULL && strcmp(evhttp_uri_get_path(uri), "/") != 0
                 ? evhttp_uri_get_path(uri)
                 : "");
    n->evcon = evhttp_connection_base_new(base, dns, host, (unsigned short)port);
    n->req = evhttp_request_new(on_done, n);
    if (n->evcon == NULL || n->req == NULL) {
        snprintf(n->st.error, sizeof(n->st.error), "out of memory");
        n->st.finished = true;
        if (n->req != NULL)
            evhttp_request_free(n->req);
        n->req = NULL;
        goto out;
    }
    evhttp_connection_set_timeout(n->evcon, (int)(idle + 0.999));
    evhttp_connection_set_retries(n->evcon, 0);
    evhttp_request_set_chunked_cb(n->req, on_chunk);
    evhttp_request_set_error_cb(n->req, on_error);
    headers = evhttp_request_get_output_headers(n->req);
    snprintf(hostport, sizeof(hostport), "%s:%d", host, port);
    evhttp_add_header(headers, "Host", hostport);
    evhttp_add_header(headers, "Content-Type", "application/json");
    evhttp_add_header(headers, "Accept", "application/x-ndjson");
    evhttp_add_header(headers, "Connection", "close");
    if (traceparent != NULL)
        evhttp_add_header(headers, "traceparent", traceparent);
    evbuffer_add(evhttp_request_get_output_buffer(n->req), body, strlen(body));
    if (evhttp_make_request(n->evcon, n->req, EVHTTP_REQ_POST, path) != 0) {
        /* the request is freed by libevent on failure */
        n->req = NULL;
        snprintf(n->st.error, sizeof(n->st.error), "the node could not be reached");
        n->st.finished = true;
    }
out:
    if (uri != NULL)
        evhttp_uri_free(uri);
    return n;
}

const struct perf_node_state *perfnode_state(const struct perf_node *n)
{
    return &n->st;
}

void perfnode_free(struct perf_node *n)
{
    if (n == NULL)
        return;
    n->on_update = NULL;
    if (n->req != NULL)
        evhttp_cancel_request(n->req);
    if (n->evcon != NULL)
        evhttp_connection_free(n->evcon);
    json_object_put(n->st.per_worker);
    if (n->lines != NULL)
        evbuffer_free(n->lines);
    free(n);
}
