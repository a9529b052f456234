#include "perfnode.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "jsonstrict.h"
#include "log.h"
#include "tls.h"

#define MAX_HEADERS (16 * 1024) /* the head of the node's answer */
#define REFUSAL_MAX 512         /* bytes of a refusal's body kept, for its reason */
#define REASON_MAX  120         /* bytes of that reason quoted in the error */
#define SPARE_LINES 10          /* lines a node may send beyond two per progress interval */

/* Where the node's share stands, as far as this side can know. */
enum node_phase {
    NODE_CONNECTING, /* no connection yet: the node never had the request */
    NODE_CONNECTED,  /* connected: the node may have the request, and run it */
    NODE_RUNNING,    /* it answered 200: its share runs */
    NODE_REFUSED,    /* it answered another status: it runs nothing */
};

struct perf_node {
    struct evhttp_connection *evcon;
    struct evhttp_request *req; /* NULL once libevent is done with it */
    struct event *ev_hangup;    /* cancels req, outside libevent's callbacks */
    struct evbuffer *lines;     /* what arrived and is not a whole line yet (or a refusal) */
    enum node_phase phase;
    int status;
    size_t received; /* bytes of the answer's body so far */
    int64_t nlines;
    struct timespec started, last_line;
    struct perf_node_state st;
    struct perf_hist latency, lag; /* a line's, until the whole line is found valid */
    char url[300];
    char host[256], path[600]; /* where the share was asked, for its cancel */
    int port;
    struct evhttp_connection *evcon_cancel; /* DELETE of the share, once asked */
    char run_id[PERF_RUN_ID_LEN];
    int64_t count;
    double interval, idle;
    void (*on_update)(void *ctx);
    void *ctx;
    bool https;                     /* evcon speaks TLS */
    struct tls_client *tls;         /* the worker's, for https nodes (the cancel too) */
    struct tls_failure tls_failure; /* why its handshake failed */
};

/* ---- histograms ---- */

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

/* A member of o of type t, or NULL. */
static struct json_object *member(struct json_object *o, const char *key, enum json_type t)
{
    struct json_object *v;

    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, t) ? v : NULL;
}

/* An integer (json-c's int, not a double) within [min, max]. */
static bool int_in(struct json_object *v, int64_t min, int64_t max, int64_t *out)
{
    if (!json_object_is_type(v, json_type_int))
        return false;
    *out = json_object_get_int64(v);
    return *out >= min && *out <= max;
}

bool perfnode_hist_parse(struct json_object *o, int64_t max, struct perf_hist *h)
{
    struct json_object *buckets = member(o, "buckets", json_type_array);
    int64_t mn, mx;
    size_t n;

    perf_hist_init(h);
    if (buckets == NULL || !int_in(member(o, "min_us", json_type_int), 0, INT64_MAX, &mn) ||
        !int_in(member(o, "max_us", json_type_int), 0, INT64_MAX, &mx))
        return false;
    n = json_object_array_length(buckets);
    if (n > PERF_HIST_BUCKETS)
        return false;
    for (size_t i = 0; i < n; i++) {
        struct json_object *pair = json_object_array_get_idx(buckets, i);
        int64_t idx, count;

        if (!json_object_is_type(pair, json_type_array) || json_object_array_length(pair) != 2 ||
            !int_in(json_object_array_get_idx(pair, 0), 0, PERF_HIST_BUCKETS - 1, &idx) ||
            !int_in(json_object_array_get_idx(pair, 1), 0, max - (int64_t)h->count, &count))
            return false;
        h->bucket[idx] += (uint64_t)count;
        h->count += (uint64_t)count;
    }
    if (h->count > 0) {
        if (mn > mx)
            return false;
        h->min_us = (uint64_t)mn;
        h->max_us = (uint64_t)mx;
    }
    return true;
}

/* ---- the node's lines ---- */

/* What one line says, checked; committed to the node's state only when all of it is valid. */
struct node_line {
    bool report;
    int64_t success, errors, unknown, batches, workers;
    struct json_object *per_worker; /* rebuilt from checked fields (owned) */
};

static bool bad(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static bool bad(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return false;
}

/* A line's counts, in this order wherever they are kept in arrays below. */
static const char *const count_names[] = {"success_count", "error_count", "unknown_count"};
#define NCOUNTS ((int)(sizeof(count_names) / sizeof(count_names[0])))

/* One per_worker entry of a report, rebuilt from its checked fields only. */
static struct json_object *worker_entry(const struct perf_node *n, struct json_object *w,
                                        int64_t sums[NCOUNTS], char *why, size_t wn)
{
    struct json_object *out, *mps, *abandoned = NULL;
    int64_t pid, first, ms, c[NCOUNTS];

    if (!json_object_is_type(w, json_type_object)) {
        bad(why, wn, "a per_worker entry is not an object");
        return NULL;
    }
    mps = member(w, "messages_per_second", json_type_double);
    if (mps == NULL)
        mps = member(w, "messages_per_second", json_type_int);
    if (!int_in(member(w, "worker_pid", json_type_int), 0, INT32_MAX, &pid) ||
        !int_in(member(w, "first", json_type_int), 0, INT64_MAX / 2, &first) ||
        !int_in(member(w, "duration_ms", json_type_int), 0, INT64_MAX, &ms) || mps == NULL ||
        !isfinite(json_object_get_double(mps)) || json_object_get_double(mps) < 0 ||
        (json_object_object_get_ex(w, "abandoned", &abandoned) &&
         !json_object_is_type(abandoned, json_type_boolean))) {
        bad(why, wn, "a per_worker entry lacks a field or has one of the wrong type");
        return NULL;
    }
    for (int i = 0; i < NCOUNTS; i++) {
        if (!int_in(member(w, count_names[i], json_type_int), 0, n->count, &c[i])) {
            bad(why, wn, "a per_worker entry's %s is not a count within the share", count_names[i]);
            return NULL;
        }
        sums[i] += c[i];
    }
    out = json_object_new_object();
    if (out == NULL) {
        bad(why, wn, "out of memory");
        return NULL;
    }
    json_object_object_add(out, "worker_pid", json_object_new_int((int)pid));
    json_object_object_add(out, "first", json_object_new_int64(first));
    for (int i = 0; i < NCOUNTS; i++)
        json_object_object_add(out, count_names[i], json_object_new_int64(c[i]));
    json_object_object_add(out, "duration_ms", json_object_new_int64(ms));
    json_object_object_add(out, "messages_per_second", json_object_get(mps));
    if (abandoned != NULL && json_object_get_boolean(abandoned))
        json_object_object_add(out, "abandoned", json_object_new_boolean(true));
    return out;
}

/* A report's per_worker: at most PERF_MAX_SHARES entries, which add up to the report. */
static bool check_per_worker(const struct perf_node *n, struct json_object *o, struct node_line *l,
                             char *why, size_t wn)
{
    struct json_object *arr = member(o, "per_worker", json_type_array);
    int64_t sums[NCOUNTS] = {0};
    size_t len;

    if (arr == NULL || (len = json_object_array_length(arr)) > PERF_MAX_SHARES)
        return bad(why, wn, "per_worker is not an array of at most %d entries", PERF_MAX_SHARES);
    l->per_worker = json_object_new_array();
    if (l->per_worker == NULL)
        return bad(why, wn, "out of memory");
    for (size_t i = 0; i < len; i++) {
        struct json_object *e = worker_entry(n, json_object_array_get_idx(arr, i), sums, why, wn);

        if (e == NULL)
            return false;
        json_object_array_add(l->per_worker, e);
    }
    if (sums[0] != l->success || sums[1] != l->errors || sums[2] != l->unknown)
        return bad(why, wn, "per_worker does not add up to the report");
    return true;
}

static bool check_line(struct perf_node *n, struct json_object *o, struct node_line *l, char *why,
                       size_t wn)
{
    struct json_object *type, *id;
    int64_t *counts[NCOUNTS] = {&l->success, &l->errors, &l->unknown};
    const int64_t seen[NCOUNTS] = {n->st.success, n->st.errors, n->st.unknown};
    int64_t total;

    if (!json_object_is_type(o, json_type_object))
        return bad(why, wn, "not a JSON object");
    type = member(o, "type", json_type_string);
    if (type == NULL || (strcmp(json_object_get_string(type), "progress") != 0 &&
                         strcmp(json_object_get_string(type), "report") != 0))
        return bad(why, wn, "type is not \"progress\" or \"report\"");
    l->report = strcmp(json_object_get_string(type), "report") == 0;
    id = member(o, "run_id", json_type_string);
    if (id == NULL || strcmp(json_object_get_string(id), n->run_id) != 0)
        return bad(why, wn, "run_id is not this test's");
    for (int i = 0; i < NCOUNTS; i++) {
        if (!int_in(member(o, count_names[i], json_type_int), 0, n->count, counts[i]))
            return bad(why, wn, "%s is not a count within its share of %lld", count_names[i],
                       (long long)n->count);
        if (*counts[i] < seen[i])
            return bad(why, wn, "%s went down", count_names[i]);
    }
    total = l->success + l->errors + l->unknown;
    if (total > n->count)
        return bad(why, wn, "its counts add up to more than its share of %lld",
                   (long long)n->count);
    if (!int_in(member(o, "batches", json_type_int), n->st.batches, n->count, &l->batches))
        return bad(why, wn, "batches is not a count within its share, or went down");
    if (!perfnode_hist_parse(member(o, "latency_histogram", json_type_object), n->count,
                             &n->latency) ||
        !perfnode_hist_parse(member(o, "lag_histogram", json_type_object), n->count, &n->lag))
        return bad(why, wn, "a histogram is malformed or counts more than its share");
    if (!l->report)
        return true;
    if (total != n->count)
        return bad(why, wn, "its report accounts for %lld of its %lld rows", (long long)total,
                   (long long)n->count);
    if (!int_in(member(o, "total_messages", json_type_int), n->count, n->count, &total))
        return bad(why, wn, "its report's total_messages is not its share");
    if (!int_in(member(o, "workers", json_type_int), 0, PERF_MAX_SHARES, &l->workers))
        return bad(why, wn, "workers is not a number of workers");
    return check_per_worker(n, o, l, why, wn);
}

static void finish(struct perf_node *n, const char *error)
{
    if (!n->st.finished && error != NULL && n->st.error[0] == '\0') {
        snprintf(n->st.error, sizeof(n->st.error), "%s", error);
        log_warn("performance test %s: node %s: %s", n->run_id, n->url, error);
    }
    n->st.finished = true;
    if (n->on_update != NULL)
        n->on_update(n->ctx);
}

/* The node broke a rule: it is over, and its connection goes (on the next turn). */
static void node_fail(struct perf_node *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void node_fail(struct perf_node *n, const char *fmt, ...)
{
    char why[sizeof(n->st.error)];
    va_list ap;

    if (n->st.finished)
        return;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    event_active(n->ev_hangup, 0, 0);
    finish(n, why);
}

/* s[0..len) as JSON, parsed only when it is strictly valid (as a request body is); NULL
 * and why otherwise. */
static struct json_object *parse_strict(const char *s, size_t len, char *why, size_t wn)
{
    struct json_tokener *tok;
    struct json_object *o;

    if (json_strict_validate(s, len, why, wn) != JSON_STRICT_VALID)
        return NULL;
    tok = json_tokener_new_ex(JSON_STRICT_MAX_DEPTH + 2);
    if (tok == NULL) {
        snprintf(why, wn, "out of memory");
        return NULL;
    }
    o = json_tokener_parse_ex(tok, s, (int)len);
    if (o == NULL && json_tokener_get_error(tok) == json_tokener_continue)
        o = json_tokener_parse_ex(tok, "", 1); /* a number at the very end */
    json_tokener_free(tok);
    if (o == NULL)
        snprintf(why, wn, "not JSON");
    return o;
}

static void take_line(struct perf_node *n, const char *line, size_t len)
{
    struct json_object *o;
    struct node_line l = {0};
    char why[160];

    if (n->st.finished)
        return; /* after its report, or its failure: nothing counts any more */
    if (len > PERF_NODE_MAX_LINE) {
        node_fail(n, "the node sent a line longer than %d bytes", PERF_NODE_MAX_LINE);
        return;
    }
    o = parse_strict(line, len, why, sizeof(why));
    if (o == NULL) {
        node_fail(n, "the node sent an invalid line: %s", why);
        return;
    }
    if (!check_line(n, o, &l, why, sizeof(why))) {
        json_object_put(o);
        json_object_put(l.per_worker);
        node_fail(n, "the node sent an invalid line: %s", why);
        return;
    }
    json_object_put(o);
    n->st.success = l.success;
    n->st.errors = l.errors;
    n->st.unknown = l.unknown;
    n->st.batches = l.batches;
    n->st.latency = n->latency;
    n->st.lag = n->lag;
    n->last_line = clock_now();
    if (l.report) {
        n->st.finished = true;
        n->st.workers = (int)l.workers;
        json_object_put(n->st.per_worker);
        n->st.per_worker = l.per_worker;
    }
}

/* ---- libevent's callbacks ---- */

/* The connection was up (libevent calls this only then): the request may be the node's. */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
    struct perf_node *n = arg;

    if (n->phase == NODE_CONNECTING) {
        n->phase = NODE_CONNECTED;
        n->st.started = true;
    }
}

/* The status line and headers: from here on the node runs its share, or refused it. */
static int on_head(struct evhttp_request *req, void *arg)
{
    struct perf_node *n = arg;

    n->status = evhttp_request_get_response_code(req);
    n->phase = n->status == 200 ? NODE_RUNNING : NODE_REFUSED;
    n->st.started = n->status == 200;
    log_debug("performance test node %s: status %d", n->url, n->status);
    return 0;
}

static void on_chunk(struct evhttp_request *req, void *arg)
{
    struct perf_node *n = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    char *line;

    n->received += len;
    /* libevent holds at most one line more than what was taken, chunk or not. */
    evhttp_connection_set_max_body_size(n->evcon, (ev_ssize_t)(n->received + PERF_NODE_MAX_LINE));
    if (n->phase == NODE_REFUSED) {
        size_t room = REFUSAL_MAX - evbuffer_get_length(n->lines);

        evbuffer_remove_buffer(in, n->lines, len < room ? len : room);
        return;
    }
    if (n->st.finished)
        return;
    /* libevent empties its buffer after this callback: a line cut between
     * two chunks waits in ours. */
    evbuffer_add_buffer(n->lines, in);
    while (!n->st.finished && (line = evbuffer_readln(n->lines, &len, EVBUFFER_EOL_LF)) != NULL) {
        n->nlines++;
        if (n->nlines > SPARE_LINES + (int64_t)(2 * clock_since(n->started) / n->interval))
            node_fail(n, "the node sent more lines than its progress interval allows");
        else if (len > 0)
            take_line(n, line, len);
        free(line);
    }
    if (!n->st.finished && evbuffer_get_length(n->lines) > PERF_NODE_MAX_LINE)
        node_fail(n, "the node sent a line longer than %d bytes", PERF_NODE_MAX_LINE);
    if (!n->st.finished && clock_since(n->last_line) > n->interval + n->idle)
        node_fail(n, "the node sent no whole line for %.0f s", clock_since(n->last_line));
    if (n->on_update != NULL)
        n->on_update(n->ctx);
}

/* "the node answered 422: message_count must be ..." from a refusal's JSON error, if any. */
static void refusal_error(struct perf_node *n, char *out, size_t outlen)
{
    size_t len = evbuffer_get_length(n->lines), cut;
    const char *body = len > 0 ? (const char *)evbuffer_pullup(n->lines, -1) : "";
    char reason[REASON_MAX + 1];
    struct json_object *o = len > 0 ? parse_strict(body, len, reason, sizeof(reason)) : NULL;
    struct json_object *e = NULL;

    if (o != NULL)
        e = member(o, "error", json_type_string);
    if (e == NULL) {
        snprintf(out, outlen, "the node answered %d", n->status);
        json_object_put(o);
        return;
    }
    /* Valid UTF-8 (checked strictly), cut on a character, one line. */
    cut = (size_t)json_object_get_string_len(e);
    if (cut > REASON_MAX)
        for (cut = REASON_MAX; cut > 0 && (json_object_get_string(e)[cut] & 0xc0) == 0x80; cut--)
            ;
    memcpy(reason, json_object_get_string(e), cut);
    reason[cut] = '\0';
    for (char *p = reason; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    snprintf(out, outlen, "the node answered %d: %s", n->status, reason);
    json_object_put(o);
}

/* "the node could not be reached", saying why when TLS knows. */
static const char *unreachable(struct perf_node *n, char *buf, size_t len)
{
    const char *tls_why = n->https ? tls_failure_reason(n->evcon, &n->tls_failure) : NULL;

    if (tls_why == NULL)
        return "the node could not be reached";
    snprintf(buf, len, "the node could not be reached (%s)", tls_why);
    return buf;
}

static void on_done(struct evhttp_request *req, void *arg)
{
    struct perf_node *n = arg;
    char why[sizeof(n->st.error)];

    n->req = NULL; /* libevent frees it after this */
    if (n->phase == NODE_REFUSED) {
        refusal_error(n, why, sizeof(why));
        finish(n, why);
        return;
    }
    if (req == NULL || evhttp_request_get_response_code(req) == 0) {
        finish(n, n->phase == NODE_CONNECTING ? unreachable(n, why, sizeof(why))
                                              : "the node's connection broke");
        return;
    }
    finish(n, n->st.finished ? NULL : "the node's answer ended without its report");
}

static void on_error(enum evhttp_request_error err, void *arg)
{
    struct perf_node *n = arg;
    char why[sizeof(n->st.error)];

    n->req = NULL; /* freed by libevent already */
    switch (err) {
    case EVREQ_HTTP_TIMEOUT:
        finish(n, "the node sent nothing for too long");
        break;
    case EVREQ_HTTP_EOF:
        finish(n, n->phase == NODE_CONNECTING ? unreachable(n, why, sizeof(why))
                                              : "the node closed the connection");
        break;
    case EVREQ_HTTP_INVALID_HEADER:
        finish(n, "the node's answer is not valid HTTP");
        break;
    case EVREQ_HTTP_DATA_TOO_LONG:
        if (n->phase == NODE_REFUSED) {
            refusal_error(n, why, sizeof(why));
            finish(n, why);
        } else {
            finish(n, "the node sent a line longer than its bound, or too big a head");
        }
        break;
    case EVREQ_HTTP_REQUEST_CANCEL:
        finish(n, "the test stopped before the node's report");
        break;
    default:
        finish(n, unreachable(n, why, sizeof(why)));
        break;
    }
}

static void on_hangup(evutil_socket_t fd, short what, void *arg)
{
    struct perf_node *n = arg;
    struct evhttp_request *req = n->req;

    n->req = NULL;
    if (req != NULL)
        evhttp_cancel_request(req); /* its error callback runs: the node is over already */
}

/* ---- the share ---- */

/* An IPv6 literal without the brackets a URL has (TLS checks the address). */
static const char *bare_host(const char *host, char *buf, size_t len)
{
    size_t n = strlen(host);

    if (n > 2 && host[0] == '[' && host[n - 1] == ']')
        snprintf(buf, len, "%.*s", (int)(n - 2), host + 1);
    else
        snprintf(buf, len, "%s", host);
    return buf;
}

static struct perf_node *failed_at_start(struct perf_node *n, const char *why)
{
    snprintf(n->st.error, sizeof(n->st.error), "%s", why);
    n->st.finished = true;
    return n;
}

struct perf_node *perfnode_start(struct event_base *base, struct evdns_base *dns,
                                 const struct perf_node_share *share, void (*on_update)(void *ctx),
                                 void *ctx)
{
    struct perf_node *n = calloc(1, sizeof(*n));
    struct evhttp_uri *uri = NULL;
    struct evkeyvalq *headers;
    const char *host, *upath;
    char hostport[300], path[600], bare[300];
    int port;

    if (n == NULL)
        return NULL;
    perf_hist_init(&n->st.latency);
    perf_hist_init(&n->st.lag);
    n->on_update = on_update;
    n->ctx = ctx;
    n->count = share->count;
    n->interval = share->interval > 0.1 ? share->interval : 0.1;
    n->idle = share->idle;
    n->started = n->last_line = clock_now();
    snprintf(n->url, sizeof(n->url), "%s", share->url);
    snprintf(n->run_id, sizeof(n->run_id), "%s", share->run_id);
    n->lines = evbuffer_new();
    n->ev_hangup = event_new(base, -1, 0, on_hangup, n);
    if (n->lines == NULL || n->ev_hangup == NULL)
        return failed_at_start(n, "out of memory");
    uri = evhttp_uri_parse(share->url);
    host = uri != NULL ? evhttp_uri_get_host(uri) : NULL;
    if (host == NULL) {
        if (uri != NULL)
            evhttp_uri_free(uri);
        return failed_at_start(n, "invalid node URL");
    }
    n->https = tls_url_is_https(share->url);
    n->tls = share->tls;
    port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : n->https ? 443 : 80;
    upath = evhttp_uri_get_path(uri);
    snprintf(path, sizeof(path), "%s/todos/performance-test",
             upath != NULL && strcmp(upath, "/") != 0 ? upath : "");
    snprintf(hostport, sizeof(hostport), "%s:%d", host, port);
    snprintf(n->host, sizeof(n->host), "%s", host);
    snprintf(n->path, sizeof(n->path), "%s", path);
    n->port = port;
    n->evcon = !n->https ? evhttp_connection_base_new(base, dns, host, (unsigned short)port)
               : share->tls != NULL
                   ? tls_connection_new(share->tls, base, dns, bare_host(host, bare, sizeof(bare)),
                                        (unsigned short)port, &n->tls_failure)
                   : NULL;
    evhttp_uri_free(uri);
    if (n->evcon == NULL && n->https)
        return failed_at_start(n, "the node could not be reached (cannot set up TLS)");
    n->req = n->evcon != NULL ? evhttp_request_new(on_done, n) : NULL;
    if (n->req == NULL)
        return failed_at_start(n, "out of memory");
    evhttp_connection_set_timeout(n->evcon, (int)(share->idle + 0.999));
    evhttp_connection_set_retries(n->evcon, 0);
    evhttp_connection_set_max_headers_size(n->evcon, MAX_HEADERS);
    evhttp_connection_set_max_body_size(n->evcon, PERF_NODE_MAX_LINE);
    evhttp_connection_set_closecb(n->evcon, on_close, n);
    evhttp_request_set_header_cb(n->req, on_head);
    evhttp_request_set_chunked_cb(n->req, on_chunk);
    evhttp_request_set_error_cb(n->req, on_error);
    headers = evhttp_request_get_output_headers(n->req);
    evhttp_add_header(headers, "Host", hostport);
    evhttp_add_header(headers, "Content-Type", "application/json");
    evhttp_add_header(headers, "Accept", "application/x-ndjson");
    evhttp_add_header(headers, "Connection", "close");
    if (share->traceparent != NULL)
        evhttp_add_header(headers, "traceparent", share->traceparent);
    if (share->authorization != NULL)
        evhttp_add_header(headers, "Authorization", share->authorization);
    evbuffer_add(evhttp_request_get_output_buffer(n->req), share->body, strlen(share->body));
    if (evhttp_make_request(n->evcon, n->req, EVHTTP_REQ_POST, path) != 0) {
        n->req = NULL; /* freed by libevent on failure */
        return failed_at_start(n, "the node could not be reached");
    }
    return n;
}

const struct perf_node_state *perfnode_state(const struct perf_node *n)
{
    return &n->st;
}

void perfnode_stop(struct perf_node *n, const char *error)
{
    if (n->st.finished)
        return;
    finish(n, error);
    on_hangup(-1, 0, n);
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
    if (n->evcon_cancel != NULL)
        evhttp_connection_free(n->evcon_cancel); /* and its request, without callbacks */
    if (n->ev_hangup != NULL)
        event_free(n->ev_hangup);
    json_object_put(n->st.per_worker);
    if (n->lines != NULL)
        evbuffer_free(n->lines);
    free(n);
}

/* ---- cancelling the share ---- */

/* The node's answer to the DELETE is input too: only its status is taken (the
 * share's counts come from its streamed report); its body is bounded by
 * max_body_size and thrown away. */
static void on_cancel_done(struct evhttp_request *req, void *arg)
{
    struct perf_node *n = arg;
    int status = req != NULL ? evhttp_request_get_response_code(req) : 0;

    if (status == 200)
        log_info("performance test %s: node %s stops its share", n->run_id, n->url);
    else if (status == 404)
        log_info("performance test %s: node %s runs no such share (any more)", n->run_id, n->url);
    else if (status == 0)
        log_warn("performance test %s: node %s: the cancel went unanswered", n->run_id, n->url);
    else
        log_warn("performance test %s: node %s answered %d to the cancel", n->run_id, n->url,
                 status);
}

void perfnode_cancel(struct perf_node *n, struct event_base *base, struct evdns_base *dns,
                     const char *authorization)
{
    struct evhttp_request *req;
    struct evkeyvalq *headers;
    char target[sizeof(n->path) + PERF_RUN_ID_LEN + 2], hostport[300];

    if (n == NULL || n->st.finished || n->evcon_cancel != NULL || n->host[0] == '\0')
        return;
    /* The same link as the share's: TLS for an https node, never plain text. */
    if (!n->https) {
        n->evcon_cancel = evhttp_connection_base_new(base, dns, n->host, (unsigned short)n->port);
    } else if (n->tls != NULL) {
        char bare[256];

        n->evcon_cancel =
            tls_connection_new(n->tls, base, dns, bare_host(n->host, bare, sizeof(bare)),
                               (unsigned short)n->port, &n->tls_failure);
    }
    req = n->evcon_cancel != NULL ? evhttp_request_new(on_cancel_done, n) : NULL;
    if (req == NULL) {
        log_error("performance test %s: node %s: no memory to cancel its share", n->run_id, n->url);
        return;
    }
    evhttp_connection_set_timeout(n->evcon_cancel, (int)(n->idle + 0.999));
    evhttp_connection_set_retries(n->evcon_cancel, 0);
    evhttp_connection_set_max_headers_size(n->evcon_cancel, MAX_HEADERS);
    evhttp_connection_set_max_body_size(n->evcon_cancel, PERF_REPORT_MAX);
    snprintf(target, sizeof(target), "%s/%s", n->path, n->run_id);
    snprintf(hostport, sizeof(hostport), "%s:%d", n->host, n->port);
    headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Host", hostport);
    evhttp_add_header(headers, "Connection", "close");
    if (authorization != NULL)
        evhttp_add_header(headers, "Authorization", authorization);
    if (evhttp_make_request(n->evcon_cancel, req, EVHTTP_REQ_DELETE, target) != 0)
        log_warn("performance test %s: node %s: the cancel could not be sent", n->run_id, n->url);
}
