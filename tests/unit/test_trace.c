/*
 * Tracing: W3C Trace Context parsing, sampling, spans, and the OTLP/HTTP JSON
 * export, against a collector served by libevent in this process (every
 * payload it receives is parsed strictly and checked against the OTLP/JSON
 * shape).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sys/queue.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conf.h"
#include "db_span.h"
#include "http_span.h"
#include "stats.h"
#include "trace.h"
#include "trace_export.h"

#define TP_SAMPLED   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define TP_UNSAMPLED "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
#define TRACE_HEX    "4bf92f3577b34da6a3ce929d0e0e4736"
#define PARENT_HEX   "00f067aa0ba902b7"

/* ---- a collector in this process ---------------------------------------- */

#define MAX_BODIES 16

struct collector {
    struct evhttp *http;
    int port;
    int requests;    /* POSTs to /v1/traces seen */
    int statuses[8]; /* answers to the first requests; 200 after them */
    int nstatuses;
    bool hang;          /* never answer */
    const char *answer; /* body of a 2xx */
    int invalid;        /* payloads that are not strict OTLP/JSON */
    char invalid_why[256];
    char content_type[64], host[64], user_agent[64], path[64];
    enum evhttp_cmd_type method;
    struct json_object *accepted;         /* every span of the payloads answered 2xx */
    struct json_object *resource, *scope; /* of the last payload */
    int batches[MAX_BODIES];              /* spans per payload */
    /* the application route of the HTTP span test */
    struct tracer *app_tracer;
};

static void shape_fail(struct collector *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void shape_fail(struct collector *c, const char *fmt, ...)
{
    va_list ap;

    if (c->invalid++ > 0)
        return;
    va_start(ap, fmt);
    vsnprintf(c->invalid_why, sizeof(c->invalid_why), fmt, ap);
    va_end(ap);
}

static bool only_keys(struct json_object *o, const char *const *allowed)
{
    json_object_object_foreach(o, key, val) {
        const char *const *a;

        (void)val;
        for (a = allowed; *a != NULL; a++)
            if (strcmp(*a, key) == 0)
                break;
        if (*a == NULL)
            return false;
    }
    return true;
}

static bool is_hex(const char *s, size_t n)
{
    size_t i;

    if (strlen(s) != n)
        return false;
    for (i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool is_decimal(const char *s)
{
    size_t i = s[0] == '-';

    if (s[i] == '\0')
        return false;
    for (; s[i] != '\0'; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static struct json_object *member(struct json_object *o, const char *key, enum json_type type)
{
    struct json_object *v;

    if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, type))
        return NULL;
    return v;
}

/* KeyValue: {"key": string, "value": AnyValue with exactly one of the scalar members}. */
static bool key_value_valid(struct json_object *kv)
{
    static const char *const kv_keys[] = {"key", "value", NULL};
    struct json_object *v = member(kv, "value", json_type_object), *x;

    if (!only_keys(kv, kv_keys) || member(kv, "key", json_type_string) == NULL || v == NULL ||
        json_object_object_length(v) != 1)
        return false;
    if ((x = member(v, "stringValue", json_type_string)) != NULL)
        return true;
    if ((x = member(v, "intValue", json_type_string)) != NULL)
        return is_decimal(json_object_get_string(x));
    if (member(v, "boolValue", json_type_boolean) != NULL)
        return true;
    if (member(v, "doubleValue", json_type_double) != NULL ||
        member(v, "doubleValue", json_type_int) != NULL)
        return true;
    if ((x = member(v, "doubleValue", json_type_string)) != NULL) {
        const char *s = json_object_get_string(x);

        return !strcmp(s, "NaN") || !strcmp(s, "Infinity") || !strcmp(s, "-Infinity");
    }
    return false;
}

static bool attributes_valid(struct json_object *list)
{
    size_t i;

    if (!json_object_is_type(list, json_type_array))
        return false;
    for (i = 0; i < json_object_array_length(list); i++)
        if (!key_value_valid(json_object_array_get_idx(list, i)))
            return false;
    return true;
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One span as OTLP/JSON (protobuf JSON mapping) has it. */
static void check_span(struct collector *c, struct json_object *s)
{
    static const char *const span_keys[] = {"traceId",
                                            "spanId",
                                            "traceState",
                                            "parentSpanId",
                                            "name",
                                            "kind",
                                            "startTimeUnixNano",
                                            "endTimeUnixNano",
                                            "attributes",
                                            "droppedAttributesCount",
                                            "status",
                                            NULL};
    static const char *const status_keys[] = {"code", "message", NULL};
    struct json_object *v, *st;
    uint64_t start, end, now = realtime_ns();

    if (!only_keys(s, span_keys))
        return shape_fail(c, "span with an unknown member: %s", json_object_to_json_string(s));
    if ((v = member(s, "traceId", json_type_string)) == NULL ||
        !is_hex(json_object_get_string(v), 32))
        return shape_fail(c, "traceId is not 32 lowercase hex digits");
    if ((v = member(s, "spanId", json_type_string)) == NULL ||
        !is_hex(json_object_get_string(v), 16))
        return shape_fail(c, "spanId is not 16 lowercase hex digits");
    if (json_object_object_get_ex(s, "parentSpanId", &v) &&
        (!json_object_is_type(v, json_type_string) || !is_hex(json_object_get_string(v), 16)))
        return shape_fail(c, "parentSpanId is not 16 lowercase hex digits");
    if (json_object_object_get_ex(s, "traceState", &v) && !json_object_is_type(v, json_type_string))
        return shape_fail(c, "traceState is not a string");
    if ((v = member(s, "name", json_type_string)) == NULL || json_object_get_string_len(v) == 0)
        return shape_fail(c, "name is not a non-empty string");
    if ((v = member(s, "kind", json_type_int)) == NULL || json_object_get_int(v) < 1 ||
        json_object_get_int(v) > 5)
        return shape_fail(c, "kind is not an integer from 1 to 5");
    if ((v = member(s, "startTimeUnixNano", json_type_string)) == NULL ||
        !is_decimal(json_object_get_string(v)))
        return shape_fail(c, "startTimeUnixNano is not a decimal string");
    start = strtoull(json_object_get_string(v), NULL, 10);
    if ((v = member(s, "endTimeUnixNano", json_type_string)) == NULL ||
        !is_decimal(json_object_get_string(v)))
        return shape_fail(c, "endTimeUnixNano is not a decimal string");
    end = strtoull(json_object_get_string(v), NULL, 10);
    if (end < start || start + 60000000000u < now || start > now)
        return shape_fail(c, "times %" PRIu64 "..%" PRIu64 " are not around now", start, end);
    if ((v = member(s, "attributes", json_type_array)) == NULL || !attributes_valid(v))
        return shape_fail(c, "attributes are not KeyValues: %s", json_object_to_json_string(s));
    if (json_object_object_get_ex(s, "droppedAttributesCount", &v) &&
        !json_object_is_type(v, json_type_int))
        return shape_fail(c, "droppedAttributesCount is not an integer");
    if (json_object_object_get_ex(s, "status", &st) &&
        (!json_object_is_type(st, json_type_object) || !only_keys(st, status_keys) ||
         member(st, "code", json_type_int) == NULL ||
         (json_object_object_get_ex(st, "message", &v) &&
          !json_object_is_type(v, json_type_string))))
        return shape_fail(c, "status is not {code: int, message: string}");
}

/* ExportTraceServiceRequest: one resource, one scope, spans. Returns the spans. */
static struct json_object *check_payload(struct collector *c, struct json_object *root)
{
    static const char *const root_keys[] = {"resourceSpans", NULL};
    static const char *const rs_keys[] = {"resource", "scopeSpans", NULL};
    static const char *const res_keys[] = {"attributes", NULL};
    static const char *const ss_keys[] = {"scope", "spans", NULL};
    static const char *const scope_keys[] = {"name", "version", NULL};
    struct json_object *list, *rs, *res, *ss, *scope, *spans, *v;
    size_t i;

    list = member(root, "resourceSpans", json_type_array);
    if (!only_keys(root, root_keys) || list == NULL || json_object_array_length(list) != 1) {
        shape_fail(c, "not {resourceSpans: [one]}");
        return NULL;
    }
    rs = json_object_array_get_idx(list, 0);
    res = member(rs, "resource", json_type_object);
    list = member(rs, "scopeSpans", json_type_array);
    if (!only_keys(rs, rs_keys) || res == NULL || !only_keys(res, res_keys) ||
        !attributes_valid(member(res, "attributes", json_type_array)) || list == NULL ||
        json_object_array_length(list) != 1) {
        shape_fail(c, "resourceSpans[0] is not {resource, scopeSpans: [one]}");
        return NULL;
    }
    ss = json_object_array_get_idx(list, 0);
    scope = member(ss, "scope", json_type_object);
    spans = member(ss, "spans", json_type_array);
    if (!only_keys(ss, ss_keys) || scope == NULL || !only_keys(scope, scope_keys) ||
        (v = member(scope, "name", json_type_string)) == NULL ||
        strcmp(json_object_get_string(v), "todod") != 0 || spans == NULL) {
        shape_fail(c, "scopeSpans[0] is not {scope: {name: todod}, spans}");
        return NULL;
    }
    for (i = 0; i < json_object_array_length(spans); i++)
        check_span(c, json_object_array_get_idx(spans, i));
    json_object_put(c->resource);
    json_object_put(c->scope);
    c->resource = json_object_get(res);
    c->scope = json_object_get(scope);
    return spans;
}

/* Strict JSON, all of it. */
static struct json_object *parse_strict(const char *text, size_t len)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *obj;

    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    obj = json_tokener_parse_ex(tok, text, (int)len);
    if (obj != NULL && json_tokener_get_parse_end(tok) != len) {
        json_object_put(obj);
        obj = NULL;
    }
    json_tokener_free(tok);
    return obj;
}

static void copy_header(struct evhttp_request *req, const char *name, char *out, size_t n)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), name);

    snprintf(out, n, "%s", v ? v : "");
}

static void app_route(struct collector *c, struct evhttp_request *req);

static void collector_cb(struct evhttp_request *req, void *arg)
{
    struct collector *c = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    struct json_object *root, *spans;
    struct evbuffer *out;
    int status;
    size_t i;

    if (strncmp(evhttp_request_get_uri(req), "/v1/traces", 10) != 0) {
        app_route(c, req);
        return;
    }
    c->requests++;
    c->method = evhttp_request_get_command(req);
    snprintf(c->path, sizeof(c->path), "%s", evhttp_request_get_uri(req));
    copy_header(req, "Content-Type", c->content_type, sizeof(c->content_type));
    copy_header(req, "Host", c->host, sizeof(c->host));
    copy_header(req, "User-Agent", c->user_agent, sizeof(c->user_agent));
    root = parse_strict((const char *)evbuffer_pullup(in, -1), len);
    if (root == NULL)
        shape_fail(c, "payload is not strict JSON");
    spans = root ? check_payload(c, root) : NULL;
    if (c->hang) {
        json_object_put(root);
        return; /* evhttp_free takes the request with it */
    }
    status = c->requests <= c->nstatuses ? c->statuses[c->requests - 1] : 200;
    if (status / 100 == 2 && spans != NULL) {
        if (c->requests <= MAX_BODIES)
            c->batches[c->requests - 1] = (int)json_object_array_length(spans);
        for (i = 0; i < json_object_array_length(spans); i++)
            json_object_array_add(c->accepted,
                                  json_object_get(json_object_array_get_idx(spans, i)));
    }
    json_object_put(root);
    out = evbuffer_new();
    if (status / 100 == 2)
        evbuffer_add_printf(out, "%s", c->answer ? c->answer : "{}");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, "Test", out);
    evbuffer_free(out);
}

static int collector_start(struct collector *c, struct event_base *base)
{
    struct evhttp_bound_socket *bound;
    struct sockaddr_in sin;
    socklen_t slen = sizeof(sin);

    c->http = evhttp_new(base);
    c->accepted = json_object_new_array();
    evhttp_set_gencb(c->http, collector_cb, c);
    evhttp_set_allowed_methods(c->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    bound = evhttp_bind_socket_with_handle(c->http, "127.0.0.1", 0);
    if (bound == NULL ||
        getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&sin, &slen) != 0)
        return -1;
    c->port = ntohs(sin.sin_port);
    return 0;
}

static void collector_stop(struct collector *c)
{
    if (c->http != NULL)
        evhttp_free(c->http);
    json_object_put(c->accepted);
    json_object_put(c->resource);
    json_object_put(c->scope);
}

/* ---- fixture ------------------------------------------------------------- */

struct fixture {
    struct event_base *base;
    struct conf conf;
    struct stats_slot slot;
    struct collector col;
    struct tracer *t;
    bool flushed;
};

static void tick(evutil_socket_t fd, short what, void *arg) {}

/* Run the loop until cond(arg) holds or seconds pass; returns cond(arg). */
static bool run_until(struct fixture *f, bool (*cond)(struct fixture *), double seconds)
{
    struct timeval tv = {0, 10000};
    struct event *ev = event_new(f->base, -1, EV_PERSIST, tick, NULL);
    struct timespec start = clock_now();

    event_add(ev, &tv);
    while (!cond(f) && clock_since(start) < seconds)
        event_base_loop(f->base, EVLOOP_ONCE);
    event_free(ev);
    return cond(f);
}

static bool never(struct fixture *f)
{
    return false;
}

static void run_for(struct fixture *f, double seconds)
{
    run_until(f, never, seconds);
}

static uint64_t exported(struct fixture *f)
{
    return atomic_load(&f->slot.c.trace_spans_exported);
}

static uint64_t dropped(struct fixture *f)
{
    return atomic_load(&f->slot.c.trace_spans_dropped);
}

static uint64_t errors(struct fixture *f)
{
    return atomic_load(&f->slot.c.trace_export_errors);
}

static bool is_flushed(struct fixture *f)
{
    return f->flushed;
}

static void on_flushed(void *arg)
{
    ((struct fixture *)arg)->flushed = true;
}

/* Exporting to port (0: the collector's), or with tracing off when port < 0. */
static struct fixture *fixture_new(int port, double ratio)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    assert_int_equal(collector_start(&f->col, f->base), 0);
    conf_defaults(&f->conf);
    if (port >= 0)
        assert_true(asprintf(&f->conf.otlp_endpoint, "http://127.0.0.1:%d/v1/traces",
                             port ? port : f->col.port) > 0);
    free(f->conf.service_name);
    f->conf.service_name = strdup("test-service");
    f->conf.trace_sample_ratio = ratio;
    f->t = tracer_new(f->base, &f->conf, &f->slot, NULL);
    assert_non_null(f->t);
    return f;
}

static void fixture_free(struct fixture *f)
{
    tracer_free(f->t);
    collector_stop(&f->col);
    conf_free(&f->conf);
    event_base_free(f->base);
    free(f);
}

static struct fixture *tracing_on(double ratio)
{
    return fixture_new(0, ratio);
}

/* Flush and wait for done; returns the seconds it took. */
static double flush(struct fixture *f)
{
    struct timespec start = clock_now();

    f->flushed = false;
    tracer_flush(f->t, on_flushed, f);
    assert_true(run_until(f, is_flushed, 5));
    return clock_since(start);
}

static void assert_shapes_valid(struct fixture *f)
{
    if (f->col.invalid > 0)
        fail_msg("%d invalid payloads; first: %s", f->col.invalid, f->col.invalid_why);
}

/* The spans the collector accepted. */
static size_t nspans(struct fixture *f)
{
    return json_object_array_length(f->col.accepted);
}

static struct json_object *span_at(struct fixture *f, size_t i)
{
    return json_object_array_get_idx(f->col.accepted, i);
}

static struct json_object *span_named(struct fixture *f, const char *name)
{
    size_t i;

    for (i = 0; i < nspans(f); i++) {
        struct json_object *v = member(span_at(f, i), "name", json_type_string);

        if (v != NULL && strcmp(json_object_get_string(v), name) == 0)
            return span_at(f, i);
    }
    fail_msg("no span named %s", name);
    return NULL;
}

static const char *str_member(struct json_object *o, const char *key)
{
    struct json_object *v = member(o, key, json_type_string);

    if (v == NULL)
        fail_msg("no string %s in %s", key, json_object_to_json_string(o));
    return json_object_get_string(v);
}

/* The AnyValue of attribute key in list, or NULL. */
static struct json_object *attr_in(struct json_object *list, const char *key)
{
    size_t i;

    for (i = 0; i < json_object_array_length(list); i++) {
        struct json_object *kv = json_object_array_get_idx(list, i);

        if (strcmp(str_member(kv, "key"), key) == 0)
            return member(kv, "value", json_type_object);
    }
    return NULL;
}

static struct json_object *attr(struct json_object *span, const char *key)
{
    return attr_in(member(span, "attributes", json_type_array), key);
}

static void assert_attr_str(struct json_object *span, const char *key, const char *want)
{
    struct json_object *v = attr(span, key);

    if (v == NULL)
        fail_msg("no attribute %s in %s", key, json_object_to_json_string(span));
    assert_string_equal(str_member(v, "stringValue"), want);
}

static void assert_attr_int(struct json_object *span, const char *key, long long want)
{
    struct json_object *v = attr(span, key);
    char buf[32];

    if (v == NULL)
        fail_msg("no attribute %s in %s", key, json_object_to_json_string(span));
    snprintf(buf, sizeof(buf), "%lld", want);
    assert_string_equal(str_member(v, "intValue"), buf);
}

static void assert_no_attr(struct json_object *span, const char *key)
{
    if (attr(span, key) != NULL)
        fail_msg("unexpected attribute %s in %s", key, json_object_to_json_string(span));
}

static void parse_ok(const char *tp, struct trace_context *ctx)
{
    if (trace_parse_traceparent(tp, ctx) != 0)
        fail_msg("\"%s\" should be valid", tp);
    assert_true(ctx->valid);
}

static void hex_of(const uint8_t *b, size_t n, char *out)
{
    size_t i;

    for (i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

/* ---- traceparent -------------------------------------------------------- */

static void traceparent_version_00_is_parsed(void **state)
{
    struct trace_context ctx;
    char hex[33];

    strcpy(ctx.tracestate, "left over");
    parse_ok(TP_SAMPLED, &ctx);
    hex_of(ctx.trace_id, 16, hex);
    assert_string_equal(hex, TRACE_HEX);
    hex_of(ctx.span_id, 8, hex);
    assert_string_equal(hex, PARENT_HEX);
    assert_int_equal(ctx.flags, TRACE_FLAG_SAMPLED);
    assert_string_equal(ctx.tracestate, "");
    parse_ok(TP_UNSAMPLED, &ctx);
    assert_int_equal(ctx.flags, 0);
    /* Flags are a bit field: 09 is sampled plus an unknown bit. */
    parse_ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", &ctx);
    assert_true(ctx.flags & TRACE_FLAG_SAMPLED);
    trace_context_id_hex(&ctx, hex);
    assert_string_equal(hex, TRACE_HEX);
}

static void traceparent_malformed_forms_are_absent(void **state)
{
    static const char *const bad[] = {
        "",
        "00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        /* version */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ".0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "0.-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* trace-id */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-.bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473.-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e47361-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        /* parent-id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-.0f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b71-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        /* flags */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-.0",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0.",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-001",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        /* separators, and version 00 with anything after it */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 x",
        "00 -4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    };
    struct trace_context ctx;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ctx.valid = true;
        if (trace_parse_traceparent(bad[i], &ctx) != -1)
            fail_msg("\"%s\" should be invalid", bad[i]);
        assert_false(ctx.valid);
    }
    assert_int_equal(trace_parse_traceparent(NULL, &ctx), -1);
}

static void traceparent_surrounding_whitespace_is_ignored(void **state)
{
    struct trace_context ctx;

    parse_ok(" " TP_SAMPLED, &ctx);
    parse_ok("\t" TP_SAMPLED, &ctx);
    parse_ok(TP_SAMPLED " ", &ctx);
    parse_ok("\t " TP_SAMPLED " \t", &ctx);
}

static void traceparent_future_version_is_read_as_00(void **state)
{
    struct trace_context ctx;
    char hex[33];

    parse_ok("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &ctx);
    hex_of(ctx.trace_id, 16, hex);
    assert_string_equal(hex, TRACE_HEX);
    assert_int_equal(ctx.flags, TRACE_FLAG_SAMPLED);
    parse_ok("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
             &ctx);
    parse_ok("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-", &ctx);
    assert_int_equal(ctx.flags, 0);
    /* Only the sampled bit of a future version's flags is known. */
    parse_ok("fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", &ctx);
    assert_int_equal(ctx.flags, TRACE_FLAG_SAMPLED);
    assert_int_equal(
        trace_parse_traceparent(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what-the-future", &ctx),
        -1);
    assert_int_equal(
        trace_parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", &ctx),
        -1);
    assert_int_equal(
        trace_parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011", &ctx),
        -1);
    assert_int_equal(
        trace_parse_traceparent("cc-00000000000000000000000000000000-00f067aa0ba902b7-01", &ctx),
        -1);
    assert_int_equal(
        trace_parse_traceparent("cC-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &ctx),
        -1);
}

/* ---- tracestate ------------------------------------------------------- */

static char *repeat(char c, size_t n, const char *suffix)
{
    char *s = malloc(n + strlen(suffix) + 1);

    assert_non_null(s);
    memset(s, c, n);
    strcpy(s + n, suffix);
    return s;
}

static void assert_tracestate(const char *ts, bool want)
{
    if (trace_tracestate_valid(ts) != want)
        fail_msg("tracestate \"%s\" should be %s", ts, want ? "valid" : "invalid");
}

static void tracestate_w3c_grammar_and_bounds(void **state)
{
    char members[512] = "", *s;
    int i;

    assert_tracestate("", true);
    assert_tracestate("rojo=00f067aa0ba902b7", true);
    assert_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", true);
    assert_tracestate("foo=1 \t , \t bar=2, \t baz=3", true);
    assert_tracestate(" foo=1", true);
    assert_tracestate("\t foo=1 \t", true);
    assert_tracestate("foo=1,,  ,bar=2", true); /* empty members */
    assert_tracestate("fw529a3039@dt=x", true); /* multi-tenant keys */
    assert_tracestate("foo@=1,bar=2", true);
    assert_tracestate("1foo=a b", true);
    assert_tracestate("abcdefghijklmnopqrstuvwxyz0123456789_-*/@a-z0-9_-*/="
                      " !\"#$%&'()*+-./0123456789:;<>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
                      "abcdefghijklmnopqrstuvwxyz{|}~",
                      true);
    assert_tracestate("foo =1", false);
    assert_tracestate("FOO=1", false);
    assert_tracestate("foo.bar=1", false);
    assert_tracestate("@foo=1,bar=2", false);
    assert_tracestate("foo=bar=baz", false);
    assert_tracestate("foo=,bar=3", false);
    assert_tracestate("foo", false);
    assert_tracestate("=1", false);
    assert_tracestate("foo=a\tb", false);
    assert_tracestate("foo=\x7f", false);
    assert_tracestate("foo=caf\xc3\xa9", false);
    assert_tracestate("foo=a\nb", false);
    /* 32 members, not 33. */
    for (i = 1; i <= 32; i++)
        sprintf(members + strlen(members), "%sbar%02d=%02d", i > 1 ? "," : "", i, i);
    assert_tracestate(members, true);
    strcat(members, ",bar33=33");
    assert_tracestate(members, false);
    /* Keys up to 256 characters, values up to 256. */
    s = repeat('z', 256, "=1");
    assert_tracestate(s, true);
    free(s);
    s = repeat('z', 257, "=1");
    assert_tracestate(s, false);
    free(s);
    s = repeat('v', 256, "");
    s[0] = 'k';
    s[1] = '=';
    assert_tracestate(s, true);
    free(s);
    /* The whole value: TRACE_STATE_MAX characters, not one more. */
    s = repeat('x', TRACE_STATE_MAX, "");
    memcpy(s, "a=", 2);
    memcpy(s + 242, ",b=", 3);
    memcpy(s + 485, ",c=", 3);
    assert_int_equal(strlen(s), TRACE_STATE_MAX);
    assert_tracestate(s, true);
    free(s);
    s = repeat('x', TRACE_STATE_MAX + 1, "");
    memcpy(s, "a=", 2);
    memcpy(s + 242, ",b=", 3);
    memcpy(s + 485, ",c=", 3);
    assert_tracestate(s, false);
    free(s);
}

/* ---- the trace of a request ------------------------------------------- */

static void request_context_continues_a_valid_parent(void **state)
{
    struct fixture *f = tracing_on(0);
    struct evkeyvalq h;
    struct trace_context ctx;
    char hex[33];

    TAILQ_INIT(&h);
    evhttp_add_header(&h, "TraceParent", TP_SAMPLED);
    evhttp_add_header(&h, "tracestate", "rojo=00f067aa0ba902b7");
    evhttp_add_header(&h, "TRACESTATE", "congo=t61rcWkgMzE");
    trace_request_context(f->t, &h, &ctx);
    assert_true(ctx.valid);
    trace_context_id_hex(&ctx, hex);
    assert_string_equal(hex, TRACE_HEX);
    hex_of(ctx.span_id, 8, hex);
    assert_string_equal(hex, PARENT_HEX);
    assert_int_equal(ctx.flags, TRACE_FLAG_SAMPLED);
    /* Several tracestate headers are one list. */
    assert_string_equal(ctx.tracestate, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    evhttp_clear_headers(&h);
    fixture_free(f);
}

static void request_context_drops_an_invalid_tracestate_only(void **state)
{
    struct fixture *f = tracing_on(1);
    struct evkeyvalq h;
    struct trace_context ctx;
    char hex[33], *big = repeat('x', 300, "");

    big[0] = 'k';
    big[1] = '=';
    TAILQ_INIT(&h);
    evhttp_add_header(&h, "traceparent", TP_UNSAMPLED);
    evhttp_add_header(&h, "tracestate", "FOO=1");
    trace_request_context(f->t, &h, &ctx);
    trace_context_id_hex(&ctx, hex);
    assert_string_equal(hex, TRACE_HEX);
    assert_string_equal(ctx.tracestate, "");
    assert_int_equal(ctx.flags, 0);
    evhttp_clear_headers(&h);
    /* Two valid halves that are too long together. */
    evhttp_add_header(&h, "traceparent", TP_SAMPLED);
    evhttp_add_header(&h, "tracestate", big);
    big[0] = 'j';
    evhttp_add_header(&h, "tracestate", big);
    trace_request_context(f->t, &h, &ctx);
    assert_true(ctx.valid);
    assert_string_equal(ctx.tracestate, "");
    evhttp_clear_headers(&h);
    free(big);
    fixture_free(f);
}

static void request_context_restarts_on_a_malformed_or_repeated_traceparent(void **state)
{
    struct fixture *f = tracing_on(1);
    struct evkeyvalq h;
    struct trace_context ctx;
    char hex[33];
    static const uint8_t zero[8];

    TAILQ_INIT(&h);
    evhttp_add_header(&h, "traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01");
    evhttp_add_header(&h, "tracestate", "rojo=1");
    trace_request_context(f->t, &h, &ctx);
    assert_true(ctx.valid);
    trace_context_id_hex(&ctx, hex);
    assert_true(strcmp(hex, TRACE_HEX) != 0 && strcmp(hex, "4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_memory_equal(ctx.span_id, zero, 8);
    assert_string_equal(ctx.tracestate, "");         /* not parsed without a traceparent */
    assert_int_equal(ctx.flags, TRACE_FLAG_SAMPLED); /* ratio 1 */
    evhttp_clear_headers(&h);
    evhttp_add_header(&h, "traceparent", TP_SAMPLED);
    evhttp_add_header(&h, "traceparent", TP_SAMPLED);
    trace_request_context(f->t, &h, &ctx);
    trace_context_id_hex(&ctx, hex);
    assert_string_not_equal(hex, TRACE_HEX);
    assert_memory_equal(ctx.span_id, zero, 8);
    evhttp_clear_headers(&h);
    /* No headers at all: a new trace, with an id the access log can print. */
    trace_request_context(f->t, NULL, &ctx);
    assert_true(ctx.valid);
    trace_context_id_hex(&ctx, hex);
    assert_int_equal(strlen(hex), 32);
    fixture_free(f);
}

/* ---- sampling ----------------------------------------------------------- */

static void sampled_parent_is_recorded_even_at_ratio_0(void **state)
{
    struct fixture *f = tracing_on(0);
    struct trace_context ctx;
    struct trace_span *s, *child;
    char hex[33];

    parse_ok(TP_SAMPLED, &ctx);
    s = span_start(f->t, &ctx, NULL, "GET /todos", SPAN_KIND_SERVER);
    assert_non_null(s);
    span_trace_id_hex(s, hex);
    assert_string_equal(hex, TRACE_HEX);
    child = trace_db_start(f->t, &ctx, s, "SELECT", "todos", NULL);
    assert_non_null(child);
    span_end(child);
    span_end(s);
    fixture_free(f);
}

static void unsampled_parent_is_never_recorded_even_at_ratio_1(void **state)
{
    struct fixture *f = tracing_on(1);
    struct evkeyvalq h;
    struct trace_context ctx;
    char hex[33];

    TAILQ_INIT(&h);
    evhttp_add_header(&h, "traceparent", TP_UNSAMPLED);
    trace_request_context(f->t, &h, &ctx);
    assert_null(span_start(f->t, &ctx, NULL, "GET /todos", SPAN_KIND_SERVER));
    /* Its statements are not recorded either, and the id still shows in the log. */
    assert_null(trace_db_start(f->t, &ctx, NULL, "SELECT", "todos", NULL));
    trace_context_id_hex(&ctx, hex);
    assert_string_equal(hex, TRACE_HEX);
    evhttp_clear_headers(&h);
    fixture_free(f);
}

static void ratio_0_records_no_new_trace_and_ratio_1_every_one(void **state)
{
    struct fixture *off = tracing_on(0), *on = tracing_on(1);
    struct trace_context ctx;
    int i;

    for (i = 0; i < 1000; i++) {
        struct trace_span *s;

        assert_null(span_start(off->t, NULL, NULL, "x", SPAN_KIND_INTERNAL));
        trace_request_context(off->t, NULL, &ctx);
        assert_true(ctx.valid);
        assert_int_equal(ctx.flags, 0);
        assert_null(span_start(off->t, &ctx, NULL, "x", SPAN_KIND_SERVER));
        s = span_start(on->t, NULL, NULL, "x", SPAN_KIND_INTERNAL);
        assert_non_null(s);
        span_end(s);
        trace_request_context(on->t, NULL, &ctx);
        assert_int_equal(ctx.flags, TRACE_FLAG_SAMPLED);
    }
    fixture_free(off);
    fixture_free(on);
}

static void ratio_half_decides_by_the_trace_id(void **state)
{
    uint8_t id[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6};
    uint64_t x = 88172645463325252u;
    int i, yes = 0;

    /* The lower 8 bytes, big-endian, shifted right by one, against 2^62. */
    memset(id + 8, 0x00, 8);
    assert_true(trace_ratio_sampled(id, 0.5));
    memcpy(id + 8, "\x7f\xff\xff\xff\xff\xff\xff\xff", 8);
    assert_true(trace_ratio_sampled(id, 0.5));
    memcpy(id + 8, "\x80\x00\x00\x00\x00\x00\x00\x00", 8);
    assert_false(trace_ratio_sampled(id, 0.5));
    memcpy(id + 8, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
    assert_false(trace_ratio_sampled(id, 0.5));
    assert_true(trace_ratio_sampled(id, 1));
    memset(id + 8, 0x00, 8);
    assert_false(trace_ratio_sampled(id, 0));
    /* The upper bytes do not count: another process decides the same. */
    memset(id, 0xff, 8);
    assert_true(trace_ratio_sampled(id, 0.5));
    /* About half of many ids, each one always the same way. */
    for (i = 0; i < 20000; i++) {
        bool first;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(id + 8, &x, 8);
        first = trace_ratio_sampled(id, 0.5);
        assert_true(trace_ratio_sampled(id, 0.5) == first);
        yes += first;
    }
    assert_in_range(yes, 9400, 10600);
}

/* ---- no tracing, no spans ----------------------------------------------- */

static void tracing_off_does_nothing(void **state)
{
    struct fixture *f = fixture_new(-1, 1);
    struct trace_context ctx;
    char hex[33], tp[TRACE_PARENT_SIZE];

    assert_false(tracer_enabled(f->t));
    trace_request_context(f->t, NULL, &ctx);
    assert_false(ctx.valid);
    trace_context_id_hex(&ctx, hex);
    assert_string_equal(hex, "-");
    assert_null(span_start(f->t, NULL, NULL, "x", SPAN_KIND_SERVER));
    assert_null(trace_db_start(f->t, &ctx, NULL, "SELECT", "todos", NULL));
    assert_int_equal(trace_format_traceparent(f->t, &ctx, NULL, tp), -1);
    assert_string_equal(tp, "");
    assert_true(flush(f) < 0.5);
    fixture_free(f);
}

static void done_at_once(void *arg)
{
    *(int *)arg += 1;
}

static void null_spans_and_tracers_are_no_ops(void **state)
{
    struct trace_context ctx;
    char hex[33], tp[TRACE_PARENT_SIZE];
    int called = 0;

    span_set_str(NULL, "k", "v");
    span_set_strn(NULL, "k", "v", 1);
    span_set_int(NULL, "k", 1);
    span_set_double(NULL, "k", 1.5);
    span_set_bool(NULL, "k", true);
    span_set_error(NULL, "boom");
    span_set_http_status(NULL, 500);
    span_set_db_error(NULL, "23505", "duplicate");
    span_end(NULL);
    span_trace_id_hex(NULL, hex);
    assert_string_equal(hex, "-");
    trace_context_id_hex(NULL, hex);
    assert_string_equal(hex, "-");
    assert_false(tracer_enabled(NULL));
    assert_null(span_start(NULL, NULL, NULL, "x", SPAN_KIND_SERVER));
    assert_null(trace_http_server_start(NULL, NULL, "/todos", &ctx));
    assert_false(ctx.valid);
    assert_null(trace_db_start(NULL, NULL, NULL, "SELECT", "todos", NULL));
    trace_request_context(NULL, NULL, &ctx);
    assert_false(ctx.valid);
    assert_int_equal(trace_format_traceparent(NULL, &ctx, NULL, tp), -1);
    tracer_flush(NULL, done_at_once, &called);
    assert_int_equal(called, 1);
    tracer_free(NULL);
}

/* ---- export ------------------------------------------------------------- */

static void batch_is_strict_otlp_json(void **state)
{
    struct fixture *f = tracing_on(1);
    struct trace_context ctx;
    struct trace_span *srv, *db;
    struct json_object *s, *d, *st;
    struct trace_db_peer peer = {"todod", "127.0.0.1", "5432"};

    parse_ok(TP_SAMPLED, &ctx);
    strcpy(ctx.tracestate, "rojo=00f067aa0ba902b7");
    srv = span_start(f->t, &ctx, NULL, "GET /todos/{id}", SPAN_KIND_SERVER);
    span_set_str(srv, TRACE_ATTR_HTTP_ROUTE, "/todos/{id}");
    span_set_int(srv, TRACE_ATTR_HTTP_STATUS, 503);
    span_set_double(srv, "test.ratio", 0.25);
    span_set_bool(srv, "test.flag", true);
    db = trace_db_start(f->t, &ctx, srv, "SELECT", "todos", &peer);
    span_set_db_error(db, "57014", "canceling statement due to statement timeout\n");
    span_end(db);
    span_set_http_status(srv, 503);
    span_end(srv);
    flush(f);
    assert_shapes_valid(f);
    assert_int_equal(f->col.requests, 1);
    assert_int_equal(f->col.method, EVHTTP_REQ_POST);
    assert_string_equal(f->col.path, "/v1/traces");
    assert_string_equal(f->col.content_type, "application/json");
    assert_true(strstr(f->col.host, "127.0.0.1:") == f->col.host);
    assert_string_equal(f->col.user_agent, "todod/" TODOD_VERSION);
    assert_int_equal(nspans(f), 2);
    assert_int_equal(exported(f), 2);
    assert_int_equal(dropped(f), 0);
    assert_int_equal(errors(f), 0);

    s = span_named(f, "GET /todos/{id}");
    d = span_named(f, "SELECT todos");
    assert_string_equal(str_member(s, "traceId"), TRACE_HEX);
    assert_string_equal(str_member(s, "parentSpanId"), PARENT_HEX);
    assert_string_equal(str_member(s, "traceState"), "rojo=00f067aa0ba902b7");
    assert_int_equal(json_object_get_int(member(s, "kind", json_type_int)), SPAN_KIND_SERVER);
    assert_string_equal(str_member(d, "traceId"), TRACE_HEX);
    assert_string_equal(str_member(d, "parentSpanId"), str_member(s, "spanId"));
    assert_string_equal(str_member(d, "traceState"), "rojo=00f067aa0ba902b7");
    assert_int_equal(json_object_get_int(member(d, "kind", json_type_int)), SPAN_KIND_CLIENT);
    /* int attributes are decimal strings; doubles and booleans JSON values */
    assert_attr_int(s, TRACE_ATTR_HTTP_STATUS, 503);
    assert_true(fabs(json_object_get_double(
                         member(attr(s, "test.ratio"), "doubleValue", json_type_double)) -
                     0.25) < 1e-12);
    assert_true(
        json_object_get_boolean(member(attr(s, "test.flag"), "boolValue", json_type_boolean)));
    /* 5xx: status ERROR, without a message, error.type the code */
    st = member(s, "status", json_type_object);
    assert_int_equal(json_object_get_int(member(st, "code", json_type_int)), 2);
    assert_null(member(st, "message", json_type_string));
    assert_attr_str(s, TRACE_ATTR_ERROR_TYPE, "503");
    /* the statement */
    assert_attr_str(d, TRACE_ATTR_DB_SYSTEM, "postgresql");
    assert_attr_str(d, TRACE_ATTR_DB_OPERATION, "SELECT");
    assert_attr_str(d, TRACE_ATTR_DB_COLLECTION, "todos");
    assert_attr_str(d, TRACE_ATTR_DB_NAMESPACE, "todod");
    assert_attr_str(d, TRACE_ATTR_SERVER_ADDRESS, "127.0.0.1");
    assert_attr_int(d, TRACE_ATTR_SERVER_PORT, 5432);
    assert_attr_str(d, TRACE_ATTR_ERROR_TYPE, "57014");
    assert_attr_str(d, TRACE_ATTR_DB_STATUS_CODE, "57014");
    st = member(d, "status", json_type_object);
    assert_int_equal(json_object_get_int(member(st, "code", json_type_int)), 2);
    assert_string_equal(str_member(st, "message"), "canceling statement due to statement timeout");
    assert_null(member(d, "droppedAttributesCount", json_type_int));
    fixture_free(f);
}

static void resource_names_the_service_and_process(void **state)
{
    struct fixture *f = tracing_on(1);
    struct json_object *attrs;
    char pid[24], host[256];
    const char *instance;
    size_t i;

    span_end(span_start(f->t, NULL, NULL, "x", SPAN_KIND_INTERNAL));
    flush(f);
    assert_shapes_valid(f);
    attrs = member(f->col.resource, "attributes", json_type_array);
    assert_int_equal(json_object_array_length(attrs), 5);
    assert_string_equal(str_member(attr_in(attrs, "service.name"), "stringValue"), "test-service");
    assert_string_equal(str_member(attr_in(attrs, "service.version"), "stringValue"),
                        TODOD_VERSION);
    instance = str_member(attr_in(attrs, "service.instance.id"), "stringValue");
    assert_int_equal(strlen(instance), 36);
    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(instance[i], '-');
        else
            assert_non_null(strchr("0123456789abcdef", instance[i]));
    }
    assert_int_equal(gethostname(host, sizeof(host)), 0);
    assert_string_equal(str_member(attr_in(attrs, "host.name"), "stringValue"), host);
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    assert_string_equal(str_member(attr_in(attrs, "process.pid"), "intValue"), pid);
    assert_string_equal(str_member(f->col.scope, "name"), "todod");
    assert_string_equal(str_member(f->col.scope, "version"), TODOD_VERSION);
    fixture_free(f);
}

static void attributes_are_bounded_copied_and_utf8(void **state)
{
    struct fixture *f = tracing_on(1);
    struct trace_span *s = span_start(f->t, NULL, NULL, "bounded", SPAN_KIND_INTERNAL);
    char key[32], value[8] = "abc", *big = repeat('a', 5000, ""), ctl[TRACE_ATTR_VALUE_MAX + 1];
    struct json_object *j, *v;
    const char *cut;
    size_t len;
    int i;

    /* the most a string can grow to in JSON: every byte a \u00XX escape */
    memset(ctl, '\x1f', TRACE_ATTR_VALUE_MAX);
    ctl[TRACE_ATTR_VALUE_MAX] = '\0';
    for (i = 0; i < TRACE_MAX_ATTRS + 8; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        span_set_str(s, key, value);
    }
    value[0] = 'X';              /* copied: changing the caller's buffer changes nothing */
    span_set_int(s, "k00", -42); /* replaces, does not add */
    span_end(s);
    s = span_start(f->t, NULL, NULL, "strings", SPAN_KIND_INTERNAL);
    big[TRACE_ATTR_VALUE_MAX - 1] = '\xc3'; /* a two-byte character across the limit */
    big[TRACE_ATTR_VALUE_MAX] = '\xa9';
    span_set_str(s, "long", big);
    span_set_str(s, "bad.utf8",
                 "a\xff"
                 "b\xc3(c");
    span_set_str(s, "escapes", "q\"b\\s/n\nt\tc\x01");
    span_set_strn(s, "cut", "abcdef", 3);
    span_set_strn(s, "nul", "a\0b", 3);
    span_set_str(s, "bad.utf8.quoted", "\"\xff\"");
    span_set_str(s, "all.escaped", ctl);
    span_set_double(s, "nan", NAN);
    span_set_double(s, "inf", -INFINITY);
    span_set_str(s, "", "empty key");
    span_end(s);
    flush(f);
    assert_shapes_valid(f);

    j = span_named(f, "bounded");
    assert_int_equal(json_object_array_length(member(j, "attributes", json_type_array)),
                     TRACE_MAX_ATTRS);
    assert_int_equal(json_object_get_int(member(j, "droppedAttributesCount", json_type_int)), 8);
    assert_attr_int(j, "k00", -42);
    assert_attr_str(j, "k01", "abc");
    assert_no_attr(j, "k32");

    j = span_named(f, "strings");
    v = attr(j, "long");
    cut = str_member(v, "stringValue");
    assert_int_equal(strlen(cut), TRACE_ATTR_VALUE_MAX - 1); /* not half a character */
    assert_string_equal(str_member(attr(j, "bad.utf8"), "stringValue"), "a\xef\xbf\xbd"
                                                                        "b\xef\xbf\xbd(c");
    assert_string_equal(str_member(attr(j, "escapes"), "stringValue"), "q\"b\\s/n\nt\tc\x01");
    assert_attr_str(j, "cut", "abc");
    /* a value given with its length keeps a NUL in it, escaped */
    v = member(attr(j, "nul"), "stringValue", json_type_string);
    len = (size_t)json_object_get_string_len(v);
    assert_int_equal(len, 3);
    assert_memory_equal(json_object_get_string(v), "a\0b", 3);
    /* a repaired value is escaped as the repaired text needs */
    assert_string_equal(str_member(attr(j, "bad.utf8.quoted"), "stringValue"), "\"\xef\xbf\xbd\"");
    assert_string_equal(str_member(attr(j, "all.escaped"), "stringValue"), ctl);
    assert_string_equal(str_member(attr(j, "nan"), "doubleValue"), "NaN");
    assert_string_equal(str_member(attr(j, "inf"), "doubleValue"), "-Infinity");
    free(big);
    fixture_free(f);
}

static void a_span_can_start_at_the_request_arrival(void **state)
{
    struct fixture *f = tracing_on(1);
    struct timespec arrived = clock_add(clock_now(), -0.25);
    uint64_t before = realtime_ns();
    struct trace_span *s = span_start(f->t, NULL, NULL, "early", SPAN_KIND_SERVER);
    struct json_object *j;
    uint64_t start, end;

    span_set_start(s, arrived);
    span_set_start(s, clock_add(clock_now(), 1)); /* later than its start: ignored */
    span_end(s);
    flush(f);
    assert_shapes_valid(f);
    j = span_named(f, "early");
    start = strtoull(str_member(j, "startTimeUnixNano"), NULL, 10);
    end = strtoull(str_member(j, "endTimeUnixNano"), NULL, 10);
    assert_true(start <= before - 240000000u && start >= before - 300000000u);
    assert_true(end - start >= 250000000u && end - start < 350000000u);
    span_set_start(NULL, arrived);
    fixture_free(f);
}

static void batches_hold_at_most_512_spans(void **state)
{
    struct fixture *f = tracing_on(1);
    int i;

    for (i = 0; i < TRACE_BATCH_MAX + 88; i++)
        span_end(span_start(f->t, NULL, NULL, "many", SPAN_KIND_INTERNAL));
    flush(f);
    assert_shapes_valid(f);
    assert_int_equal(f->col.requests, 2);
    assert_int_equal(f->col.batches[0], TRACE_BATCH_MAX);
    assert_int_equal(f->col.batches[1], 88);
    assert_int_equal(exported(f), TRACE_BATCH_MAX + 88);
    fixture_free(f);
}

static bool got_two(struct fixture *f)
{
    return exported(f) == 2;
}

static void a_partial_batch_goes_after_the_delay(void **state)
{
    struct fixture *f = tracing_on(1);
    struct timespec start = clock_now();
    double took;

    span_end(span_start(f->t, NULL, NULL, "a", SPAN_KIND_INTERNAL));
    span_end(span_start(f->t, NULL, NULL, "b", SPAN_KIND_INTERNAL));
    assert_true(run_until(f, got_two, 5));
    took = clock_since(start);
    assert_true(took > TRACE_BATCH_DELAY * 0.9 && took < TRACE_BATCH_DELAY + 1.0);
    assert_int_equal(f->col.requests, 1);
    assert_shapes_valid(f);
    fixture_free(f);
}

static void queue_overflow_is_dropped_and_counted(void **state)
{
    struct fixture *f = tracing_on(1);
    int i;

    /* The loop does not run: nothing leaves the queue. */
    for (i = 0; i < TRACE_QUEUE_MAX + 10; i++)
        span_end(span_start(f->t, NULL, NULL, "q", SPAN_KIND_INTERNAL));
    assert_int_equal(dropped(f), 10);
    assert_int_equal(exported(f), 0);
    /* What is still queued when the tracer goes is dropped too. */
    tracer_free(f->t);
    f->t = NULL;
    assert_int_equal(dropped(f), TRACE_QUEUE_MAX + 10);
    fixture_free(f);
}

static bool got_one(struct fixture *f)
{
    return exported(f) + dropped(f) >= 1;
}

static void retryable_answers_are_retried_with_backoff(void **state)
{
    struct fixture *f = tracing_on(1);

    f->col.statuses[0] = 503;
    f->col.statuses[1] = 429;
    f->col.statuses[2] = 502;
    f->col.nstatuses = 3;
    span_end(span_start(f->t, NULL, NULL, "again", SPAN_KIND_INTERNAL));
    assert_true(run_until(f, got_one, 10));
    assert_int_equal(f->col.requests, 4);
    assert_int_equal(exported(f), 1);
    assert_int_equal(dropped(f), 0);
    assert_int_equal(errors(f), 3);
    assert_int_equal(nspans(f), 1);
    fixture_free(f);
}

static void other_errors_drop_the_batch(void **state)
{
    struct fixture *f = tracing_on(1);

    f->col.statuses[0] = 400;
    f->col.nstatuses = 1;
    span_end(span_start(f->t, NULL, NULL, "refused", SPAN_KIND_INTERNAL));
    span_end(span_start(f->t, NULL, NULL, "refused", SPAN_KIND_INTERNAL));
    assert_true(run_until(f, got_one, 5));
    run_for(f, 0.7); /* no retry follows */
    assert_int_equal(f->col.requests, 1);
    assert_int_equal(dropped(f), 2);
    assert_int_equal(exported(f), 0);
    assert_int_equal(errors(f), 1);
    fixture_free(f);
}

static void partial_success_counts_rejected_spans(void **state)
{
    struct fixture *f = tracing_on(1);
    int i;

    f->col.answer = "{\"partialSuccess\":{\"rejectedSpans\":\"2\",\"errorMessage\":\"too old\"}}";
    for (i = 0; i < 5; i++)
        span_end(span_start(f->t, NULL, NULL, "p", SPAN_KIND_INTERNAL));
    flush(f);
    assert_int_equal(exported(f), 3);
    assert_int_equal(dropped(f), 2);
    assert_int_equal(errors(f), 0);
    fixture_free(f);
}

/* A port nothing listens on: bound, then closed. */
static int dead_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    port = ntohs(sin.sin_port);
    close(fd);
    return port;
}

static struct fixture *dead_collector(void)
{
    return fixture_new(dead_port(), 1);
}

static void dead_collector_is_given_up_after_bounded_attempts(void **state)
{
    struct fixture *f = dead_collector();
    struct timespec start = clock_now();
    struct trace_span *s;

    span_end(span_start(f->t, NULL, NULL, "lost", SPAN_KIND_INTERNAL));
    /* Starting and ending spans never waits for the collector. */
    s = span_start(f->t, NULL, NULL, "lost", SPAN_KIND_INTERNAL);
    span_end(s);
    assert_true(clock_since(start) < 0.05);
    assert_true(run_until(f, got_one, 15));
    /* 1 s of batching, then 5 attempts with 0.25, 0.5, 1, 2 s (+-25 %) between them */
    assert_true(clock_since(start) > 1 + 0.75 * 3.75);
    assert_int_equal(dropped(f), 2);
    assert_int_equal(exported(f), 0);
    assert_int_equal(errors(f), 5);
    fixture_free(f);
}

static void flush_sends_at_once(void **state)
{
    struct fixture *f = tracing_on(1);

    span_end(span_start(f->t, NULL, NULL, "last", SPAN_KIND_INTERNAL));
    assert_true(flush(f) < 0.5);
    assert_int_equal(exported(f), 1);
    fixture_free(f);
}

static void flush_ends_within_a_second_when_the_collector_hangs(void **state)
{
    struct fixture *f = tracing_on(1);
    double took;

    f->col.hang = true;
    span_end(span_start(f->t, NULL, NULL, "stuck", SPAN_KIND_INTERNAL));
    took = flush(f);
    assert_true(took > TRACE_FLUSH_MAX * 0.9 && took < TRACE_FLUSH_MAX + 0.5);
    assert_int_equal(f->col.requests, 1);
    assert_int_equal(dropped(f), 1);
    assert_int_equal(errors(f), 1);
    fixture_free(f);
}

static void flush_ends_at_once_when_the_collector_is_down(void **state)
{
    struct fixture *f = dead_collector();

    span_end(span_start(f->t, NULL, NULL, "down", SPAN_KIND_INTERNAL));
    assert_true(flush(f) < 0.5);
    assert_int_equal(dropped(f), 1);
    fixture_free(f);
}

/* ---- the spans of a real HTTP request ------------------------------------ */

/* The application route of the collector's server: what the lead wires in http.c. */
static void app_route(struct collector *c, struct evhttp_request *req)
{
    struct trace_context ctx;
    struct trace_span *srv, *db;
    struct trace_db_peer peer = {"todos_db", "/var/run/postgresql", "5433"};
    char id[TRACE_ID_HEX_SIZE];

    srv = trace_http_server_start(c->app_tracer, req, "/todos/{id}", &ctx);
    db = trace_db_start(c->app_tracer, &ctx, srv, "SELECT", "todos", &peer);
    span_end(db);
    trace_context_id_hex(&ctx, id);
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Trace-Id", id);
    span_set_http_status(srv, 200);
    span_end(srv);
    evhttp_send_reply(req, 200, "OK", NULL);
}

struct client_result {
    bool done;
    int status;
    char trace_id[64];
};

static struct client_result client;

static void client_done(struct evhttp_request *req, void *arg)
{
    const char *id;

    client.done = true;
    if (req == NULL)
        return;
    client.status = evhttp_request_get_response_code(req);
    id = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Trace-Id");
    snprintf(client.trace_id, sizeof(client.trace_id), "%s", id ? id : "");
}

static bool client_is_done(struct fixture *f)
{
    return client.done;
}

static void get_todo(struct fixture *f, const char *traceparent, const char *host)
{
    struct evhttp_connection *conn =
        evhttp_connection_base_new(f->base, NULL, "127.0.0.1", (unsigned short)f->col.port);
    struct evhttp_request *req = evhttp_request_new(client_done, NULL);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    memset(&client, 0, sizeof(client));
    evhttp_add_header(h, "Host", host);
    evhttp_add_header(h, "User-Agent", "curl/8.0");
    if (traceparent != NULL)
        evhttp_add_header(h, "traceparent", traceparent);
    assert_int_equal(evhttp_make_request(conn, req, EVHTTP_REQ_GET, "/todos/abc?page=2"), 0);
    assert_true(run_until(f, client_is_done, 5));
    assert_int_equal(client.status, 200);
    evhttp_connection_free(conn);
}

static void http_request_makes_a_server_span_with_its_statement(void **state)
{
    struct fixture *f = tracing_on(0);
    struct json_object *s, *d;
    char port[16];

    f->col.app_tracer = f->t;
    snprintf(port, sizeof(port), "%d", f->col.port);
    get_todo(f, TP_SAMPLED, "localhost:8080");
    assert_string_equal(client.trace_id, TRACE_HEX);
    flush(f);
    assert_shapes_valid(f);
    assert_int_equal(nspans(f), 2);
    s = span_named(f, "GET /todos/{id}");
    d = span_named(f, "SELECT todos");
    assert_string_equal(str_member(s, "parentSpanId"), PARENT_HEX);
    assert_string_equal(str_member(d, "parentSpanId"), str_member(s, "spanId"));
    assert_int_equal(json_object_get_int(member(s, "kind", json_type_int)), SPAN_KIND_SERVER);
    assert_attr_str(s, TRACE_ATTR_HTTP_METHOD, "GET");
    assert_attr_str(s, TRACE_ATTR_HTTP_ROUTE, "/todos/{id}");
    assert_attr_str(s, TRACE_ATTR_URL_PATH, "/todos/abc");
    assert_attr_str(s, TRACE_ATTR_URL_QUERY, "page=2");
    assert_attr_str(s, TRACE_ATTR_URL_SCHEME, "http");
    assert_attr_str(s, TRACE_ATTR_SERVER_ADDRESS, "localhost");
    assert_attr_int(s, TRACE_ATTR_SERVER_PORT, 8080);
    assert_attr_str(s, TRACE_ATTR_CLIENT_ADDRESS, "127.0.0.1");
    assert_attr_str(s, TRACE_ATTR_USER_AGENT, "curl/8.0");
    assert_attr_str(s, TRACE_ATTR_PROTOCOL_VERSION, "1.1");
    assert_attr_int(s, TRACE_ATTR_HTTP_STATUS, 200);
    assert_null(member(s, "status", json_type_object));
    assert_attr_str(d, TRACE_ATTR_DB_NAMESPACE, "todos_db");
    assert_attr_str(d, TRACE_ATTR_SERVER_ADDRESS, "/var/run/postgresql");
    assert_attr_int(d, TRACE_ATTR_SERVER_PORT, 5433);

    /* Unsampled: nothing recorded, the trace id still answered; no Host port:
     * server.port from the listening address (unset here: none). */
    get_todo(f, TP_UNSAMPLED, "[::1]");
    assert_string_equal(client.trace_id, TRACE_HEX);
    /* No traceparent, ratio 0: a new trace id, not recorded. */
    get_todo(f, NULL, "localhost");
    assert_int_equal(strlen(client.trace_id), 32);
    assert_string_not_equal(client.trace_id, TRACE_HEX);
    flush(f);
    assert_int_equal(nspans(f), 2);
    fixture_free(f);
    (void)port;
}

static void outgoing_traceparent_names_the_current_span(void **state)
{
    struct fixture *f = tracing_on(0);
    struct trace_context ctx, back;
    struct trace_span *s;
    char tp[TRACE_PARENT_SIZE], hex[33];

    parse_ok(TP_SAMPLED, &ctx);
    s = span_start(f->t, &ctx, NULL, "performance-test", SPAN_KIND_INTERNAL);
    assert_int_equal(trace_format_traceparent(f->t, &ctx, s, tp), 0);
    parse_ok(tp, &back);
    assert_int_equal(strlen(tp), 55);
    trace_context_id_hex(&back, hex);
    assert_string_equal(hex, TRACE_HEX);
    assert_int_equal(back.flags, TRACE_FLAG_SAMPLED);
    assert_memory_not_equal(back.span_id, ctx.span_id, 8);
    span_end(s);
    /* Not sampled, started here: still a valid header, flagged unsampled. */
    trace_request_context(f->t, NULL, &ctx);
    assert_int_equal(trace_format_traceparent(f->t, &ctx, NULL, tp), 0);
    parse_ok(tp, &back);
    assert_int_equal(back.flags, 0);
    assert_memory_equal(back.trace_id, ctx.trace_id, 16);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(traceparent_version_00_is_parsed),
        cmocka_unit_test(traceparent_malformed_forms_are_absent),
        cmocka_unit_test(traceparent_surrounding_whitespace_is_ignored),
        cmocka_unit_test(traceparent_future_version_is_read_as_00),
        cmocka_unit_test(tracestate_w3c_grammar_and_bounds),
        cmocka_unit_test(request_context_continues_a_valid_parent),
        cmocka_unit_test(request_context_drops_an_invalid_tracestate_only),
        cmocka_unit_test(request_context_restarts_on_a_malformed_or_repeated_traceparent),
        cmocka_unit_test(sampled_parent_is_recorded_even_at_ratio_0),
        cmocka_unit_test(unsampled_parent_is_never_recorded_even_at_ratio_1),
        cmocka_unit_test(ratio_0_records_no_new_trace_and_ratio_1_every_one),
        cmocka_unit_test(ratio_half_decides_by_the_trace_id),
        cmocka_unit_test(tracing_off_does_nothing),
        cmocka_unit_test(null_spans_and_tracers_are_no_ops),
        cmocka_unit_test(batch_is_strict_otlp_json),
        cmocka_unit_test(resource_names_the_service_and_process),
        cmocka_unit_test(attributes_are_bounded_copied_and_utf8),
        cmocka_unit_test(a_span_can_start_at_the_request_arrival),
        cmocka_unit_test(batches_hold_at_most_512_spans),
        cmocka_unit_test(a_partial_batch_goes_after_the_delay),
        cmocka_unit_test(queue_overflow_is_dropped_and_counted),
        cmocka_unit_test(retryable_answers_are_retried_with_backoff),
        cmocka_unit_test(other_errors_drop_the_batch),
        cmocka_unit_test(partial_success_counts_rejected_spans),
        cmocka_unit_test(dead_collector_is_given_up_after_bounded_attempts),
        cmocka_unit_test(flush_sends_at_once),
        cmocka_unit_test(flush_ends_within_a_second_when_the_collector_hangs),
        cmocka_unit_test(flush_ends_at_once_when_the_collector_is_down),
        cmocka_unit_test(http_request_makes_a_server_span_with_its_statement),
        cmocka_unit_test(outgoing_traceparent_names_the_current_span),
    };

    signal(SIGPIPE, SIG_IGN); /* a collector closing mid-request */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
