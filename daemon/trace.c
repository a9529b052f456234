#include "trace.h"

#include <sys/queue.h> /* before libevent: TAILQ_FOREACH over headers */

#include <arpa/inet.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "clock.h"
#include "conf.h"
#include "log.h"
#include "trace_export.h"
#include "trace_int.h"
#include "trace_otlp.h"
#include "utf8.h"

#define SPAN_SPARES TRACE_BATCH_MAX /* exported spans kept for reuse: a batch (2.2 KB a span) */

/* ---- the tracer ---- */

bool tracer_enabled(const struct tracer *t)
{
    return t != NULL && t->enabled;
}

const char *tracer_listen_address(const struct tracer *t, int *port)
{
    *port = t->listen_port;
    return t->listen_host;
}

/* ---- spans ---- */

/* The arena's overflow chunks (strings that did not fit in the span). */
static void span_free_chunks(struct trace_span *s)
{
    while (s->chunks != NULL) {
        struct arena_chunk *c = s->chunks;

        s->chunks = c->next;
        free(c);
    }
}

void span_free(struct trace_span *s)
{
    span_free_chunks(s);
    free(s);
}

/* An exported span is kept for the next span_start (spans are too large for
 * malloc's fast paths). */
void span_recycle(struct tracer *t, struct trace_span *s)
{
    if (t->nspares >= SPAN_SPARES) {
        span_free(s);
        return;
    }
    span_free_chunks(s);
    s->next_spare = t->spares;
    t->spares = s;
    t->nspares++;
}

static char *span_alloc(struct trace_span *s, size_t n)
{
    struct arena_chunk *c;

    if (n <= SPAN_ARENA - s->arena_used) {
        char *p = s->arena + s->arena_used;

        s->arena_used += n;
        return p;
    }
    c = malloc(sizeof(*c) + n);
    if (c == NULL)
        return NULL;
    c->next = s->chunks;
    s->chunks = c;
    return c->data;
}

/* Bytes of the UTF-8 sequence a lead byte starts; 0 for a byte that cannot start one. */
static size_t utf8_seq_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return 2;
    if (c >= 0xe0 && c <= 0xef)
        return 3;
    if (c >= 0xf0 && c <= 0xf4)
        return 4;
    return 0;
}

/*
 * Copy in[0..len) as valid UTF-8 of at most max bytes into out (or only
 * measure it when out is NULL): OTLP/JSON strings must be UTF-8 (a collector
 * refuses the whole batch otherwise), so an invalid byte becomes U+FFFD, and a
 * cut never splits a character. Returns the bytes written.
 */
static size_t utf8_sanitize(const char *in, size_t len, size_t max, char *out)
{
    static const char replacement[] = "\xef\xbf\xbd";
    size_t i = 0, o = 0;

    while (i < len) {
        size_t n = utf8_seq_len((unsigned char)in[i]);
        const char *src = in + i;
        size_t w = n;

        if (n == 0 || n > len - i || (n > 1 && !utf8_valid(in + i, n))) {
            src = replacement;
            w = 3;
            n = 1;
        }
        if (o + w > max)
            break;
        if (out != NULL)
            memcpy(out + o, src, w);
        o += w;
        i += n;
    }
    return o;
}

/* A NUL-terminated, sanitised copy of at most max bytes in the span's arena;
 * false when memory ran out. */
static bool span_copy(struct trace_span *s, const char *str, size_t len, size_t max,
                      struct span_text *out)
{
    unsigned found = trace_byte_classes(str, len);
    bool valid = len <= max && (!(found & TRACE_BYTE_HIGH) || utf8_valid(str, len));
    size_t n = valid ? len : utf8_sanitize(str, len, max, NULL);
    char *p = span_alloc(s, n + 1);

    if (p == NULL)
        return false;
    if (valid) {
        memcpy(p, str, n);
    } else {
        utf8_sanitize(str, len, max, p);
        found = trace_byte_classes(p, n);
    }
    p[n] = '\0';
    out->s = p;
    out->len = (uint32_t)n;
    out->plain = !(found & TRACE_BYTE_ESCAPE);
    return true;
}

struct trace_span *span_start(struct tracer *t, const struct trace_context *remote_parent,
                              const struct trace_span *local_parent, const char *name,
                              enum span_kind kind)
{
    uint8_t trace_id[TRACE_ID_SIZE], parent_id[TRACE_SPAN_ID_SIZE];
    const char *tracestate = NULL;
    struct trace_span *s;
    struct timespec now;

    if (!tracer_enabled(t))
        return NULL;
    if (local_parent != NULL) {
        memcpy(trace_id, local_parent->trace_id, TRACE_ID_SIZE);
        memcpy(parent_id, local_parent->span_id, TRACE_SPAN_ID_SIZE);
        tracestate = local_parent->tracestate.s;
    } else if (remote_parent != NULL && remote_parent->valid) {
        if (!(remote_parent->flags & TRACE_FLAG_SAMPLED))
            return NULL;
        memcpy(trace_id, remote_parent->trace_id, TRACE_ID_SIZE);
        memcpy(parent_id, remote_parent->span_id, TRACE_SPAN_ID_SIZE);
        if (remote_parent->tracestate[0] != '\0')
            tracestate = remote_parent->tracestate;
    } else {
        trace_rng_id(&t->rng, trace_id, TRACE_ID_SIZE);
        if (!trace_ratio_sampled(trace_id, t->ratio))
            return NULL;
        memset(parent_id, 0, sizeof(parent_id));
    }
    s = t->spares;
    if (s != NULL) {
        t->spares = s->next_spare;
        t->nspares--;
    } else {
        s = malloc(sizeof(*s));
        if (s == NULL)
            return NULL;
    }
    s->tracer = t;
    memcpy(s->trace_id, trace_id, TRACE_ID_SIZE);
    memcpy(s->parent_id, parent_id, TRACE_SPAN_ID_SIZE);
    trace_rng_id(&t->rng, s->span_id, TRACE_SPAN_ID_SIZE);
    s->kind = kind;
    s->error = false;
    s->status_message = (struct span_text){0};
    s->tracestate = (struct span_text){0};
    s->nattrs = 0;
    s->dropped_attrs = 0;
    s->chunks = NULL;
    s->arena_used = 0;
    if (!span_copy(s, name ? name : "", name ? strlen(name) : 0, TRACE_ATTR_VALUE_MAX, &s->name) ||
        (tracestate != NULL &&
         !span_copy(s, tracestate, strlen(tracestate), TRACE_STATE_MAX, &s->tracestate))) {
        span_free(s);
        return NULL;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    s->start_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    s->end_ns = s->start_ns;
    s->start_mono = clock_now();
    return s;
}

/* The attribute named key: found, or added; NULL (and counted) past the limit. */
static struct span_attr *span_attr(struct trace_span *s, const char *key)
{
    size_t len = strlen(key);
    struct span_attr *a;
    int i;

    for (i = 0; i < s->nattrs; i++)
        if (s->attrs[i].key.len == len && memcmp(s->attrs[i].key.s, key, len) == 0)
            return &s->attrs[i];
    if (s->nattrs == TRACE_MAX_ATTRS) {
        s->dropped_attrs++;
        return NULL;
    }
    a = &s->attrs[s->nattrs];
    if (!span_copy(s, key, len, TRACE_ATTR_VALUE_MAX, &a->key)) {
        s->dropped_attrs++;
        return NULL;
    }
    s->nattrs++;
    return a;
}

void span_set_strn(struct trace_span *s, const char *key, const char *value, size_t len)
{
    struct span_attr *a;
    struct span_text copy;

    if (s == NULL || key == NULL || value == NULL)
        return;
    a = span_copy(s, value, len, TRACE_ATTR_VALUE_MAX, &copy) ? span_attr(s, key) : NULL;
    if (a == NULL)
        return;
    a->type = ATTR_STRING;
    a->v.s = copy;
}

void span_set_str(struct trace_span *s, const char *key, const char *value)
{
    if (value != NULL)
        span_set_strn(s, key, value, strlen(value));
}

void span_set_int(struct trace_span *s, const char *key, int64_t value)
{
    struct span_attr *a = s && key ? span_attr(s, key) : NULL;

    if (a == NULL)
        return;
    a->type = ATTR_INT;
    a->v.i = value;
}

void span_set_double(struct trace_span *s, const char *key, double value)
{
    struct span_attr *a = s && key ? span_attr(s, key) : NULL;

    if (a == NULL)
        return;
    a->type = ATTR_DOUBLE;
    a->v.d = value;
}

void span_set_bool(struct trace_span *s, const char *key, bool value)
{
    struct span_attr *a = s && key ? span_attr(s, key) : NULL;

    if (a == NULL)
        return;
    a->type = ATTR_BOOL;
    a->v.b = value;
}

void span_set_error(struct trace_span *s, const char *message)
{
    size_t len;

    if (s == NULL)
        return;
    s->error = true;
    if (message == NULL)
        return;
    /* libpq's messages end in a newline. */
    len = strlen(message);
    while (len > 0 &&
           (message[len - 1] == '\n' || message[len - 1] == '\r' || trace_is_ows(message[len - 1])))
        len--;
    if (len == 0 || !span_copy(s, message, len, TRACE_ATTR_VALUE_MAX, &s->status_message))
        s->status_message = (struct span_text){0};
}

void span_trace_id_hex(const struct trace_span *s, char out[TRACE_ID_HEX_SIZE])
{
    if (s == NULL)
        strcpy(out, "-");
    else
        trace_hex_encode(s->trace_id, TRACE_ID_SIZE, out);
}

void span_set_start(struct trace_span *s, struct timespec started)
{
    double earlier;

    if (s == NULL)
        return;
    earlier = clock_diff(s->start_mono, started);
    if (earlier <= 0)
        return;
    s->start_ns -= (uint64_t)(earlier * 1e9);
    s->start_mono = started;
}

void span_end(struct trace_span *s)
{
    struct timespec now;
    double elapsed;

    if (s == NULL)
        return;
    /* Duration from the monotonic clock: a wall-clock step mid-span must not
     * make it negative. */
    now = clock_now();
    elapsed = clock_diff(now, s->start_mono);
    s->end_ns = s->start_ns + (elapsed > 0 ? (uint64_t)(elapsed * 1e9) : 0);
    trace_export_enqueue(s->tracer, s);
}

const char *span_name_join(char *out, size_t size, const char *a, const char *b)
{
    size_t na = strlen(a), nb = b ? strlen(b) : 0;

    if (na > size - 1)
        na = size - 1;
    memcpy(out, a, na);
    if (b != NULL && na < size - 1) {
        out[na++] = ' ';
        if (nb > size - 1 - na)
            nb = size - 1 - na;
        memcpy(out + na, b, nb);
        na += nb;
    }
    out[na] = '\0';
    return out;
}

/* ---- propagation with a tracer ---- */

/* tracestate headers joined by commas (RFC 9110 field lines), kept when valid. */
static void collect_tracestate(const struct evkeyvalq *headers, struct trace_context *ctx)
{
    const struct evkeyval *h;
    size_t used = 0;

    TAILQ_FOREACH(h, headers, next) {
        size_t n;

        if (strcasecmp(h->key, "tracestate") != 0)
            continue;
        n = strlen(h->value);
        if (used + (used > 0) + n > TRACE_STATE_MAX) {
            ctx->tracestate[0] = '\0';
            return;
        }
        if (used > 0)
            ctx->tracestate[used++] = ',';
        memcpy(ctx->tracestate + used, h->value, n);
        used += n;
    }
    ctx->tracestate[used] = '\0';
    if (!trace_tracestate_valid(ctx->tracestate))
        ctx->tracestate[0] = '\0';
}

void trace_request_context(struct tracer *t, const struct evkeyvalq *headers,
                           struct trace_context *out)
{
    out->valid = false;
    out->tracestate[0] = '\0';
    if (!tracer_enabled(t))
        return;
    if (headers != NULL) {
        const struct evkeyval *h, *tp = NULL;
        int n = 0;

        TAILQ_FOREACH(h, headers, next) {
            if (strcasecmp(h->key, "traceparent") == 0) {
                tp = h;
                n++;
            }
        }
        /* Two traceparent headers contradict each other: start afresh. */
        if (n == 1 && trace_parse_traceparent(tp->value, out) == 0) {
            collect_tracestate(headers, out);
            return;
        }
    }
    trace_rng_id(&t->rng, out->trace_id, TRACE_ID_SIZE);
    memset(out->span_id, 0, TRACE_SPAN_ID_SIZE);
    out->flags = trace_ratio_sampled(out->trace_id, t->ratio) ? TRACE_FLAG_SAMPLED : 0;
    out->tracestate[0] = '\0';
    out->valid = true;
}

int trace_format_traceparent(struct tracer *t, const struct trace_context *ctx,
                             const struct trace_span *span, char out[TRACE_PARENT_SIZE])
{
    const uint8_t *trace_id, *span_id;
    uint8_t random_id[TRACE_SPAN_ID_SIZE];
    char tid[TRACE_ID_HEX_SIZE], sid[2 * TRACE_SPAN_ID_SIZE + 1];
    int sampled;

    out[0] = '\0';
    if (span != NULL) {
        trace_id = span->trace_id;
        span_id = span->span_id;
        sampled = 1;
    } else if (ctx != NULL && ctx->valid && tracer_enabled(t)) {
        trace_id = ctx->trace_id;
        span_id = ctx->span_id;
        /* A trace started here but not recorded has no span: any id will do,
         * the callee only needs a valid one. */
        if (trace_all_zero(span_id, TRACE_SPAN_ID_SIZE)) {
            trace_rng_id(&t->rng, random_id, TRACE_SPAN_ID_SIZE);
            span_id = random_id;
        }
        sampled = ctx->flags & TRACE_FLAG_SAMPLED;
    } else {
        return -1;
    }
    trace_hex_encode(trace_id, TRACE_ID_SIZE, tid);
    trace_hex_encode(span_id, TRACE_SPAN_ID_SIZE, sid);
    snprintf(out, TRACE_PARENT_SIZE, "00-%s-%s-%02x", tid, sid, sampled);
    return 0;
}

/* ---- lifecycle ---- */

/* The listening address, for server.address and server.port when Host lacks them. */
static void tracer_set_listen_address(struct tracer *t, const struct conf *conf)
{
    const struct sockaddr_storage *ss = &conf->listen_addr;

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

        inet_ntop(AF_INET, &sin->sin_addr, t->listen_host, sizeof(t->listen_host));
        t->listen_port = ntohs(sin->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

        inet_ntop(AF_INET6, &sin6->sin6_addr, t->listen_host, sizeof(t->listen_host));
        t->listen_port = ntohs(sin6->sin6_port);
    }
}

struct tracer *tracer_new(struct event_base *base, const struct conf *conf, struct stats_slot *slot,
                          struct tls_client *tls)
{
    struct tracer *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->base = base;
    t->slot = slot;
    t->tls = tls;
    t->ratio = conf->trace_sample_ratio;
    trace_rng_seed(&t->rng);
    if (trace_export_init(t) != 0) {
        free(t);
        return NULL;
    }
    if (conf->otlp_endpoint == NULL || conf->otlp_endpoint[0] == '\0')
        return t;
    if (trace_export_open(t, conf->otlp_endpoint) != 0 || trace_otlp_init(t, conf) != 0) {
        log_error("tracing off: out of memory");
        tracer_free(t);
        return NULL;
    }
    tracer_set_listen_address(t, conf);
    if (trace_export_connect(t, conf->otlp_endpoint) != 0)
        return t; /* off, as logged; the worker serves all the same */
    t->enabled = true;
    return t;
}

void tracer_free(struct tracer *t)
{
    if (t == NULL)
        return;
    trace_export_free(t);
    while (t->spares != NULL) {
        struct trace_span *s = t->spares;

        t->spares = s->next_spare;
        span_free(s);
    }
    trace_otlp_free(t);
    free(t);
}
