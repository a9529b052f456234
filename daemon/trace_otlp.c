#include "trace_otlp.h"

#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "conf.h"
#include "decimal.h"
#include "trace_int.h"

static const uint8_t byte_class[256] = {
    [0x00 ... 0x1f] = TRACE_BYTE_ESCAPE,
    ['"'] = TRACE_BYTE_ESCAPE,
    ['\\'] = TRACE_BYTE_ESCAPE,
    [0x80 ... 0xff] = TRACE_BYTE_HIGH,
};

unsigned trace_byte_classes(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    unsigned found = 0;
    size_t i;

    for (i = 0; i < len; i++)
        found |= byte_class[u[i]];
    return found;
}

/*
 * The body of an export request: ExportTraceServiceRequest in the OTLP/JSON
 * encoding (the protobuf JSON mapping: ids as hex strings, 64-bit integers as
 * decimal strings, enums as numbers). json-c escapes every string that needs
 * it and formats every double; the fixed skeleton of the message around them
 * is literal text. A json-c object tree per span (two hash tables per
 * attribute) took several times longer to encode (tests/README.md).
 */
struct buf {
    char *p;
    size_t len, cap;
    bool failed; /* out of memory: the batch is dropped */
};

/* Room for n more bytes; false (and the buffer failed) when memory ran out. */
static bool buf_reserve(struct buf *b, size_t n)
{
    size_t cap;
    char *p;

    if (b->failed)
        return false;
    if (n <= b->cap - b->len)
        return true;
    cap = b->cap ? b->cap : 4096;
    while (n > cap - b->len)
        cap *= 2;
    p = realloc(b->p, cap);
    if (p == NULL) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define buf_lit(b, s) buf_add((b), (s), sizeof(s) - 1)

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Numbers and the literal text around them: short, never user data. */
static void buf_printf(struct buf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        b->failed = true;
    else
        buf_add(b, tmp, (size_t)n);
}

/*
 * A span is written in one go into room reserved for the most it can take
 * (span_json_max), so that the many short pieces of its skeleton are plain
 * stores instead of a bounds check and a call each.
 */
#define ESCAPED_MAX 6  /* bytes a string byte can take in JSON: \u00XX */
#define NUMBER_MAX  40 /* a 64-bit integer, or a double as json-c writes it */

static char *put(char *w, const void *s, size_t n)
{
    memcpy(w, s, n);
    return w + n;
}

#define put_lit(w, s) put((w), (s), sizeof(s) - 1)

static char *put_u64(char *w, uint64_t v)
{
    return w + decimal_u64(w, v, 0);
}

static char *put_hex(char *w, const uint8_t *id, size_t n)
{
    *w++ = '"';
    trace_hex_encode(id, n, w);
    w += 2 * n;
    *w++ = '"';
    return w;
}

/* A JSON string: as it is when plain, else quoted and escaped by json-c (a
 * scratch object whose buffers are reused). NULL when json-c fails. */
static char *put_text(char *w, struct tracer *t, const struct span_text *x)
{
    const char *q;
    size_t n;

    if (x->plain) {
        *w++ = '"';
        w = put(w, x->s, x->len);
        *w++ = '"';
        return w;
    }
    if (!json_object_set_string_len(t->scratch_string, x->s, (int)x->len))
        return NULL;
    q = json_object_to_json_string_length(
        t->scratch_string, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    if (q == NULL || n > ESCAPED_MAX * (size_t)x->len + 2)
        return NULL;
    return put(w, q, n);
}

/* A C string as a JSON string at the end of b (the resource's few strings),
 * through put_text like every span string. */
static void enc_string(struct buf *b, struct tracer *t, const char *s)
{
    size_t len = strlen(s);
    struct span_text x = {s, (uint32_t)len, !(trace_byte_classes(s, len) & TRACE_BYTE_ESCAPE)};
    char *w;

    if (!buf_reserve(b, ESCAPED_MAX * len + 2))
        return;
    w = put_text(b->p + b->len, t, &x);
    if (w == NULL)
        b->failed = true;
    else
        b->len = (size_t)(w - b->p);
}

/* AnyValue: 64-bit integers as decimal strings; doubles as json-c writes them,
 * the non-finite ones as the strings "NaN", "Infinity", "-Infinity". */
static char *put_value(char *w, struct tracer *t, const struct span_attr *a)
{
    const char *d;
    size_t n;

    switch (a->type) {
    case ATTR_STRING:
        w = put_lit(w, "{\"stringValue\":");
        w = put_text(w, t, &a->v.s);
        break;
    case ATTR_INT:
        w = put_lit(w, "{\"intValue\":\"");
        if (a->v.i < 0) {
            *w++ = '-';
            w = put_u64(w, (uint64_t)0 - (uint64_t)a->v.i);
        } else {
            w = put_u64(w, (uint64_t)a->v.i);
        }
        *w++ = '"';
        break;
    case ATTR_DOUBLE:
        w = put_lit(w, "{\"doubleValue\":");
        if (isnan(a->v.d)) {
            w = put_lit(w, "\"NaN\"");
        } else if (isinf(a->v.d)) {
            if (a->v.d > 0)
                w = put_lit(w, "\"Infinity\"");
            else
                w = put_lit(w, "\"-Infinity\"");
        } else {
            json_object_set_double(t->scratch_double, a->v.d);
            d = json_object_to_json_string_length(t->scratch_double, JSON_C_TO_STRING_PLAIN, &n);
            if (d == NULL || n > NUMBER_MAX)
                return NULL;
            w = put(w, d, n);
        }
        break;
    case ATTR_BOOL:
        if (a->v.b)
            w = put_lit(w, "{\"boolValue\":true");
        else
            w = put_lit(w, "{\"boolValue\":false");
        break;
    }
    if (w != NULL)
        *w++ = '}';
    return w;
}

/* The most bytes put_span can write for s: its fixed text (about 315 bytes
 * with every optional member), every string byte escaped, every number at
 * its longest. */
static size_t span_json_max(const struct trace_span *s)
{
    size_t n =
        512 + ESCAPED_MAX * ((size_t)s->name.len + s->tracestate.len + s->status_message.len);
    int i;

    for (i = 0; i < s->nattrs; i++) {
        const struct span_attr *a = &s->attrs[i];

        n += 64 + NUMBER_MAX + ESCAPED_MAX * (size_t)a->key.len;
        if (a->type == ATTR_STRING)
            n += ESCAPED_MAX * (size_t)a->v.s.len;
    }
    return n;
}

/* A Span, at w, which has room for span_json_max(s) bytes; NULL when json-c failed. */
static char *put_span(char *w, struct tracer *t, const struct trace_span *s)
{
    int i;

    w = put_lit(w, "{\"traceId\":");
    w = put_hex(w, s->trace_id, TRACE_ID_SIZE);
    w = put_lit(w, ",\"spanId\":");
    w = put_hex(w, s->span_id, TRACE_SPAN_ID_SIZE);
    if (s->tracestate.s != NULL) {
        w = put_lit(w, ",\"traceState\":");
        if ((w = put_text(w, t, &s->tracestate)) == NULL)
            return NULL;
    }
    if (!trace_all_zero(s->parent_id, TRACE_SPAN_ID_SIZE)) {
        w = put_lit(w, ",\"parentSpanId\":");
        w = put_hex(w, s->parent_id, TRACE_SPAN_ID_SIZE);
    }
    w = put_lit(w, ",\"name\":");
    if ((w = put_text(w, t, &s->name)) == NULL)
        return NULL;
    w = put_lit(w, ",\"kind\":");
    w = put_u64(w, (uint64_t)s->kind);
    w = put_lit(w, ",\"startTimeUnixNano\":\"");
    w = put_u64(w, s->start_ns);
    w = put_lit(w, "\",\"endTimeUnixNano\":\"");
    w = put_u64(w, s->end_ns);
    w = put_lit(w, "\",\"attributes\":[");
    for (i = 0; i < s->nattrs && w != NULL; i++) {
        if (i > 0)
            *w++ = ',';
        w = put_lit(w, "{\"key\":");
        if ((w = put_text(w, t, &s->attrs[i].key)) == NULL)
            return NULL;
        w = put_lit(w, ",\"value\":");
        if ((w = put_value(w, t, &s->attrs[i])) == NULL)
            return NULL;
        *w++ = '}';
    }
    if (w == NULL)
        return NULL;
    *w++ = ']';
    if (s->dropped_attrs > 0) {
        w = put_lit(w, ",\"droppedAttributesCount\":");
        w = put_u64(w, (uint64_t)s->dropped_attrs);
    }
    if (s->error) {
        w = put_lit(w, ",\"status\":{\"code\":2"); /* STATUS_CODE_ERROR */
        if (s->status_message.s != NULL) {
            w = put_lit(w, ",\"message\":");
            if ((w = put_text(w, t, &s->status_message)) == NULL)
                return NULL;
        }
        *w++ = '}';
    }
    *w++ = '}';
    return w;
}

/* A span at the end of b (with a comma first unless it is the first). */
static void enc_span(struct buf *b, struct tracer *t, const struct trace_span *s, bool first)
{
    char *w;

    if (!buf_reserve(b, span_json_max(s) + 1))
        return;
    w = b->p + b->len;
    if (!first)
        *w++ = ',';
    w = put_span(w, t, s);
    if (w == NULL)
        b->failed = true;
    else
        b->len = (size_t)(w - b->p);
}

/*
 * The resource and the scope, the same for every batch of a worker, rendered
 * once: {"resource":{...},"scopeSpans":[{"scope":{...},"spans":[ .
 */
static int tracer_describe(struct tracer *t, const struct conf *conf)
{
    char host[256], instance[37];
    struct buf b = {0};
    uuid_t uuid;
    const struct {
        const char *key, *value;
    } attrs[] = {
        {TRACE_RESOURCE_SERVICE_NAME, conf->service_name ? conf->service_name : "todod"},
        {TRACE_RESOURCE_SERVICE_VERSION, TODOD_VERSION},
        /* Each worker exports on its own, so each is an instance of the service. */
        {TRACE_RESOURCE_SERVICE_INSTANCE, instance},
        {TRACE_RESOURCE_HOST_NAME, host},
    };
    size_t i;

    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = '\0';
    uuid_generate_random(uuid);
    uuid_unparse_lower(uuid, instance);
    buf_lit(&b, "{\"resource\":{\"attributes\":[");
    for (i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
        buf_lit(&b, "{\"key\":");
        enc_string(&b, t, attrs[i].key);
        buf_lit(&b, ",\"value\":{\"stringValue\":");
        enc_string(&b, t, attrs[i].value);
        buf_lit(&b, "}},");
    }
    buf_printf(&b,
               "{\"key\":\"" TRACE_RESOURCE_PROCESS_PID "\",\"value\":{\"intValue\":\"%ld\"}}]},",
               (long)getpid());
    buf_lit(&b, "\"scopeSpans\":[{\"scope\":{\"name\":\"todod\",\"version\":");
    enc_string(&b, t, TODOD_VERSION);
    buf_lit(&b, "},\"spans\":[");
    if (b.failed) {
        free(b.p);
        return -1;
    }
    t->prefix = b.p;
    t->prefix_len = b.len;
    return 0;
}

int trace_otlp_init(struct tracer *t, const struct conf *conf)
{
    t->scratch_string = json_object_new_string("");
    t->scratch_double = json_object_new_double(0);
    if (t->scratch_string == NULL || t->scratch_double == NULL)
        return -1;
    return tracer_describe(t, conf);
}

void trace_otlp_free(struct tracer *t)
{
    json_object_put(t->scratch_string);
    json_object_put(t->scratch_double);
    free(t->prefix);
}

size_t trace_otlp_encode_batch(struct tracer *t, struct trace_span *const *spans, int n,
                               struct export_body *body)
{
    struct buf b = {0};
    int i;

    b.p = body->data;
    b.cap = body->cap;
    /* Room from the last batch's size: growing a large body by doubling would
     * copy it over and over. */
    if (t->span_bytes > 0)
        buf_reserve(&b, t->prefix_len + 64 + (size_t)n * (t->span_bytes + t->span_bytes / 4));
    buf_lit(&b, "{\"resourceSpans\":[");
    buf_add(&b, t->prefix, t->prefix_len);
    for (i = 0; i < n; i++)
        enc_span(&b, t, spans[i], i == 0);
    buf_lit(&b, "]}]}]}");
    body->data = b.p;
    body->cap = b.cap;
    if (b.failed)
        return 0;
    if (n > 0)
        t->span_bytes = (b.len - t->prefix_len) / (size_t)n;
    return b.len;
}
