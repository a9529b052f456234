#include "trace.h"

#include <sys/queue.h> /* before libevent: TAILQ_FOREACH over headers */

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h> /* the request's HTTP version: 2.1 has no accessor */
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "clock.h"
#include "decimal.h"
#include "conf.h"
#include "log.h"
#include "stats.h"
#include "utf8.h"

#define TRACEPARENT_LEN      55 /* version 00: "00-" 32 "-" 16 "-" 2 */
#define TRACESTATE_MEMBERS   32
#define TRACESTATE_KEY_MAX   256
#define TRACESTATE_VALUE_MAX 256

#define EXPORT_TIMEOUT  5.0  /* seconds an export request may take, connecting included */
#define EXPORT_ATTEMPTS 5    /* tries per batch before it is dropped */
#define BACKOFF_INITIAL 0.25 /* seconds before the first retry, doubling */
#define BACKOFF_MAX     4.0
#define RESPONSE_MAX    65536           /* bytes of a collector's answer we read */
#define WARN_INTERVAL   60.0            /* seconds between two export warnings in the log */
#define SPAN_ARENA      768             /* bytes of strings kept inside a span */
#define SPAN_SPARES     TRACE_BATCH_MAX /* exported spans kept for reuse: a batch (2.2 KB a span) */
#define EXPORT_PATH     "/v1/traces"

/* ---- hex ---- */

static const char hex_digits[] = "0123456789abcdef";

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = hex_digits[in[i] >> 4];
        out[2 * i + 1] = hex_digits[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

/* Lowercase only: W3C Trace Context forbids uppercase hex in traceparent. */
static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* 2n hex digits into n bytes. */
static bool hex_decode(const char *s, size_t n, uint8_t *out)
{
    size_t i;

    for (i = 0; i < n; i++) {
        int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (b[i] != 0)
            return false;
    return true;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* ---- W3C Trace Context ---- */

int trace_parse_traceparent(const char *tp, struct trace_context *out)
{
    uint8_t version, trace_id[TRACE_ID_SIZE], span_id[TRACE_SPAN_ID_SIZE], flags;
    size_t len;

    out->valid = false;
    out->tracestate[0] = '\0';
    if (tp == NULL)
        return -1;
    /* An HTTP field value excludes the optional whitespace around it. */
    while (is_ows(*tp))
        tp++;
    len = strlen(tp);
    while (len > 0 && is_ows(tp[len - 1]))
        len--;
    if (len < TRACEPARENT_LEN || !hex_decode(tp, 1, &version) || tp[2] != '-')
        return -1;
    if (version == 0xff)
        return -1;
    /* Version 00 is exactly 55 characters. A higher version may append
     * fields: its first four are read as 00's when a dash or the end follows. */
    if (version == 0 ? len != TRACEPARENT_LEN : len > TRACEPARENT_LEN && tp[55] != '-')
        return -1;
    if (!hex_decode(tp + 3, TRACE_ID_SIZE, trace_id) || tp[35] != '-' ||
        !hex_decode(tp + 36, TRACE_SPAN_ID_SIZE, span_id) || tp[52] != '-' ||
        !hex_decode(tp + 53, 1, &flags))
        return -1;
    if (all_zero(trace_id, TRACE_ID_SIZE) || all_zero(span_id, TRACE_SPAN_ID_SIZE))
        return -1;
    memcpy(out->trace_id, trace_id, TRACE_ID_SIZE);
    memcpy(out->span_id, span_id, TRACE_SPAN_ID_SIZE);
    /* Of a future version only the sampled bit is known to mean anything. */
    out->flags = version == 0 ? flags : (flags & TRACE_FLAG_SAMPLED);
    out->valid = true;
    return 0;
}

static bool tracestate_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' ||
           c == '/' || c == '@';
}

/* Printable ASCII but for ',' and '='. */
static bool tracestate_value_char(char c)
{
    return c >= 0x20 && c <= 0x7e && c != ',' && c != '=';
}

/*
 * One list member, OWS already cut: key "=" value. The key grammar is the one
 * of the W3C test suite (lowercase letter or digit, then up to 255 of
 * [a-z0-9_*-/@]), which accepts every level-1 key, multi-tenant ones included.
 */
static bool tracestate_member_valid(const char *m, size_t n)
{
    size_t k = 0;

    if (n == 0 || !((m[0] >= 'a' && m[0] <= 'z') || (m[0] >= '0' && m[0] <= '9')))
        return false;
    while (k < n && tracestate_key_char(m[k]))
        k++;
    if (k > TRACESTATE_KEY_MAX || k == n || m[k] != '=')
        return false;
    m += k + 1;
    n -= k + 1;
    if (n == 0 || n > TRACESTATE_VALUE_MAX || m[n - 1] == ' ')
        return false;
    while (n > 0)
        if (!tracestate_value_char(m[--n]))
            return false;
    return true;
}

bool trace_tracestate_valid(const char *ts)
{
    size_t len = strnlen(ts, TRACE_STATE_MAX + 1);
    int members = 0;
    size_t i = 0;

    if (len > TRACE_STATE_MAX)
        return false;
    for (;;) {
        size_t start, end;

        /* Members are separated by commas; empty ones are allowed (headers
         * joined by a proxy leave them), OWS around each is not part of it. */
        while (i < len && is_ows(ts[i]))
            i++;
        start = i;
        while (i < len && ts[i] != ',')
            i++;
        end = i;
        while (end > start && is_ows(ts[end - 1]))
            end--;
        if (end > start) {
            if (++members > TRACESTATE_MEMBERS || !tracestate_member_valid(ts + start, end - start))
                return false;
        }
        if (i == len)
            return true;
        i++; /* the comma */
    }
}

bool trace_ratio_sampled(const uint8_t trace_id[TRACE_ID_SIZE], double ratio)
{
    uint64_t x = 0, bound;
    int i;

    if (!(ratio > 0))
        return false;
    if (ratio >= 1)
        return true;
    for (i = 8; i < 16; i++)
        x = x << 8 | trace_id[i];
    bound = (uint64_t)(ratio * 9223372036854775808.0); /* ratio * 2^63 */
    return x >> 1 < bound;
}

void trace_context_id_hex(const struct trace_context *ctx, char out[TRACE_ID_HEX_SIZE])
{
    if (ctx == NULL || !ctx->valid)
        strcpy(out, "-");
    else
        hex_encode(ctx->trace_id, TRACE_ID_SIZE, out);
}

/* ---- ids ---- */

/*
 * xoshiro256** (Blackman and Vigna): ids must be unique and unpredictable
 * enough for sampling by trace id, not secret. One getrandom() seeds a
 * worker's generator; an id then costs a few nanoseconds, no system call.
 */
struct rng {
    uint64_t s[4];
};

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* splitmix64, to spread a weak fallback seed over the whole state. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void rng_seed(struct rng *r)
{
    ssize_t n = getrandom(r->s, sizeof(r->s), GRND_NONBLOCK);

    /* Early in boot the kernel may not have entropy yet: do not wait for it. */
    if (n != (ssize_t)sizeof(r->s) || all_zero((const uint8_t *)r->s, sizeof(r->s))) {
        struct timespec ts;
        uint64_t x;
        int i;

        clock_gettime(CLOCK_REALTIME, &ts);
        x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        x ^= (uint64_t)getpid() << 32;
        for (i = 0; i < 4; i++)
            r->s[i] = splitmix64(&x);
    }
}

/* n random bytes, never all zero (an all-zero id is invalid). */
static void rng_id(struct rng *r, uint8_t *out, size_t n)
{
    do {
        size_t i;

        for (i = 0; i < n; i += 8) {
            uint64_t v = rng_next(r);

            memcpy(out + i, &v, n - i < 8 ? n - i : 8);
        }
    } while (all_zero(out, n));
}

/* ---- the tracer ---- */

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

struct tracer {
    struct event_base *base;
    struct stats_slot *slot;
    bool enabled;
    double ratio;
    struct rng rng;
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
    /* spans waiting: a ring */
    struct trace_span *queue[TRACE_QUEUE_MAX];
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

bool tracer_enabled(const struct tracer *t)
{
    return t != NULL && t->enabled;
}

/* ---- spans ---- */

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

/* The arena's overflow chunks (strings that did not fit in the span). */
static void span_free_chunks(struct trace_span *s)
{
    while (s->chunks != NULL) {
        struct arena_chunk *c = s->chunks;

        s->chunks = c->next;
        free(c);
    }
}

static void span_free(struct trace_span *s)
{
    span_free_chunks(s);
    free(s);
}

/* An exported span is kept for the next span_start (spans are too large for
 * malloc's fast paths). */
static void span_recycle(struct tracer *t, struct trace_span *s)
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

/* What a byte asks of a string that holds it: an escape in JSON (a control
 * character, NUL included, a quote or a backslash), or a look at its UTF-8. */
enum { BYTE_ESCAPE = 1, BYTE_HIGH = 2 };

static const uint8_t byte_class[256] = {
    [0x00 ... 0x1f] = BYTE_ESCAPE,
    ['"'] = BYTE_ESCAPE,
    ['\\'] = BYTE_ESCAPE,
    [0x80 ... 0xff] = BYTE_HIGH,
};

/* The byte classes found in s[0..len). */
static unsigned byte_classes(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    unsigned found = 0;
    size_t i;

    for (i = 0; i < len; i++)
        found |= byte_class[u[i]];
    return found;
}

/* A NUL-terminated, sanitised copy of at most max bytes in the span's arena;
 * false when memory ran out. */
static bool span_copy(struct trace_span *s, const char *str, size_t len, size_t max,
                      struct span_text *out)
{
    unsigned found = byte_classes(str, len);
    bool valid = len <= max && (!(found & BYTE_HIGH) || utf8_valid(str, len));
    size_t n = valid ? len : utf8_sanitize(str, len, max, NULL);
    char *p = span_alloc(s, n + 1);

    if (p == NULL)
        return false;
    if (valid) {
        memcpy(p, str, n);
    } else {
        utf8_sanitize(str, len, max, p);
        found = byte_classes(p, n);
    }
    p[n] = '\0';
    out->s = p;
    out->len = (uint32_t)n;
    out->plain = !(found & BYTE_ESCAPE);
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
        rng_id(&t->rng, trace_id, TRACE_ID_SIZE);
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
    rng_id(&t->rng, s->span_id, TRACE_SPAN_ID_SIZE);
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
           (message[len - 1] == '\n' || message[len - 1] == '\r' || is_ows(message[len - 1])))
        len--;
    if (len == 0 || !span_copy(s, message, len, TRACE_ATTR_VALUE_MAX, &s->status_message))
        s->status_message = (struct span_text){0};
}

void span_trace_id_hex(const struct trace_span *s, char out[TRACE_ID_HEX_SIZE])
{
    if (s == NULL)
        strcpy(out, "-");
    else
        hex_encode(s->trace_id, TRACE_ID_SIZE, out);
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

static void tracer_enqueue(struct tracer *t, struct trace_span *s);

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
    tracer_enqueue(s->tracer, s);
}

/* ---- propagation with a tracer ---- */

/* tracestate headers joined by commas (RFC 9110 field lines), kept when valid. */
static void collect_tracestate(const struct evkeyvalq *headers, struct trace_context *ctx)
{
    const struct evkeyval *h;
    size_t used = 0;

    TAILQ_FOREACH(h, headers, next)
    {
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

        TAILQ_FOREACH(h, headers, next)
        {
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
    rng_id(&t->rng, out->trace_id, TRACE_ID_SIZE);
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
        if (all_zero(span_id, TRACE_SPAN_ID_SIZE)) {
            rng_id(&t->rng, random_id, TRACE_SPAN_ID_SIZE);
            span_id = random_id;
        }
        sampled = ctx->flags & TRACE_FLAG_SAMPLED;
    } else {
        return -1;
    }
    hex_encode(trace_id, TRACE_ID_SIZE, tid);
    hex_encode(span_id, TRACE_SPAN_ID_SIZE, sid);
    snprintf(out, TRACE_PARENT_SIZE, "00-%s-%s-%02x", tid, sid, sampled);
    return 0;
}

/* ---- the spans todod makes ---- */

/* "a b" (or "a" when b is NULL) into out[size], cut to fit: span names, made
 * per request, where printf would be a large share of a span's cost. */
static const char *join_name(char *out, size_t size, const char *a, const char *b)
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

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "_OTHER"; /* the semantic conventions' name for any other method */
}

/* A port number, or -1. */
static int parse_port(const char *s, size_t n)
{
    int port = 0;
    size_t i;

    if (n == 0 || n > 5)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        port = port * 10 + (s[i] - '0');
    }
    return port <= 65535 ? port : -1;
}

/* server.address and server.port from the Host header ("name", "name:port",
 * "[v6]:port"), or from the listening socket. */
static void span_set_server(struct trace_span *s, const struct tracer *t, const char *host)
{
    const char *name = host, *colon = NULL;
    size_t n = 0;
    int port = -1;

    if (host != NULL && host[0] == '[') {
        const char *end = strchr(host, ']');

        if (end != NULL) {
            name = host + 1;
            n = (size_t)(end - name);
            if (end[1] == ':')
                colon = end + 1;
        }
    } else if (host != NULL) {
        colon = strrchr(host, ':');
        n = colon ? (size_t)(colon - host) : strlen(host);
    }
    if (colon != NULL)
        port = parse_port(colon + 1, strlen(colon + 1));
    if (n > 0)
        span_set_strn(s, TRACE_ATTR_SERVER_ADDRESS, name, n);
    else if (t->listen_host[0] != '\0')
        span_set_str(s, TRACE_ATTR_SERVER_ADDRESS, t->listen_host);
    if (port < 0)
        port = t->listen_port;
    if (port > 0)
        span_set_int(s, TRACE_ATTR_SERVER_PORT, port);
}

struct trace_span *trace_http_server_start(struct tracer *t, struct evhttp_request *req,
                                           const char *route, struct trace_context *ctx)
{
    struct evkeyvalq *headers = req ? evhttp_request_get_input_headers(req) : NULL;
    const struct evhttp_uri *uri;
    struct evhttp_connection *evcon;
    const char *method, *path, *query;
    struct trace_span *s;
    char name[320], version[16];

    trace_request_context(t, headers, ctx);
    if (req == NULL || !ctx->valid || !(ctx->flags & TRACE_FLAG_SAMPLED))
        return NULL;
    method = method_name(evhttp_request_get_command(req));
    /* "HTTP" stands for a method the conventions do not know. */
    join_name(name, sizeof(name), strcmp(method, "_OTHER") ? method : "HTTP", route);
    s = span_start(t, ctx, NULL, name, SPAN_KIND_SERVER);
    if (s == NULL)
        return NULL;
    span_set_str(s, TRACE_ATTR_HTTP_METHOD, method);
    span_set_str(s, TRACE_ATTR_HTTP_ROUTE, route);
    uri = evhttp_request_get_evhttp_uri(req);
    path = uri ? evhttp_uri_get_path(uri) : NULL;
    query = uri ? evhttp_uri_get_query(uri) : NULL;
    span_set_str(s, TRACE_ATTR_URL_PATH, path && *path ? path : "/");
    span_set_str(s, TRACE_ATTR_URL_QUERY, query);
    span_set_str(s, TRACE_ATTR_URL_SCHEME, "http");
    span_set_server(s, t, evhttp_find_header(headers, "Host"));
    evcon = evhttp_request_get_connection(req);
    if (evcon != NULL) {
        char *address = NULL;
        ev_uint16_t port = 0;

        evhttp_connection_get_peer(evcon, &address, &port);
        span_set_str(s, TRACE_ATTR_CLIENT_ADDRESS, address);
    }
    span_set_str(s, TRACE_ATTR_USER_AGENT, evhttp_find_header(headers, "User-Agent"));
    if (req->major > 0 && req->major < 10 && req->minor >= 0 && req->minor < 10) {
        version[0] = (char)('0' + req->major);
        version[1] = '.';
        version[2] = (char)('0' + req->minor);
        span_set_strn(s, TRACE_ATTR_PROTOCOL_VERSION, version, 3);
    }
    return s;
}

void span_set_http_status(struct trace_span *s, int status)
{
    char code[16];

    if (s == NULL)
        return;
    span_set_int(s, TRACE_ATTR_HTTP_STATUS, status);
    /* A server span is an error on 5xx only: a 4xx is the client's. */
    if (status >= 500) {
        snprintf(code, sizeof(code), "%d", status);
        span_set_str(s, TRACE_ATTR_ERROR_TYPE, code);
        span_set_error(s, NULL);
    }
}

struct trace_span *trace_db_start(struct tracer *t, const struct trace_context *ctx,
                                  const struct trace_span *parent, const char *operation,
                                  const char *table, const struct trace_db_peer *peer)
{
    struct trace_span *s;
    char name[160];
    int port;

    if (!tracer_enabled(t) || operation == NULL)
        return NULL;
    s = span_start(t, ctx, parent, join_name(name, sizeof(name), operation, table),
                   SPAN_KIND_CLIENT);
    if (s == NULL)
        return NULL;
    span_set_str(s, TRACE_ATTR_DB_SYSTEM, "postgresql");
    span_set_str(s, TRACE_ATTR_DB_OPERATION, operation);
    span_set_str(s, TRACE_ATTR_DB_COLLECTION, table);
    if (peer != NULL) {
        if (peer->name != NULL && peer->name[0] != '\0')
            span_set_str(s, TRACE_ATTR_DB_NAMESPACE, peer->name);
        if (peer->host != NULL && peer->host[0] != '\0')
            span_set_str(s, TRACE_ATTR_SERVER_ADDRESS, peer->host);
        port = peer->port ? parse_port(peer->port, strlen(peer->port)) : -1;
        if (port > 0)
            span_set_int(s, TRACE_ATTR_SERVER_PORT, port);
    }
    return s;
}

void span_set_db_error(struct trace_span *s, const char *sqlstate, const char *message)
{
    if (s == NULL)
        return;
    span_set_str(s, TRACE_ATTR_ERROR_TYPE, sqlstate && *sqlstate ? sqlstate : "_OTHER");
    if (sqlstate != NULL && *sqlstate != '\0')
        span_set_str(s, TRACE_ATTR_DB_STATUS_CODE, sqlstate);
    span_set_error(s, message);
}

/* ---- OTLP/JSON encoding ---- */

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
    hex_encode(id, n, w);
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
    struct span_text x = {s, (uint32_t)len, !(byte_classes(s, len) & BYTE_ESCAPE)};
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
    if (!all_zero(s->parent_id, TRACE_SPAN_ID_SIZE)) {
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
        {"service.name", conf->service_name ? conf->service_name : "todod"},
        {"service.version", TODOD_VERSION},
        /* Each worker exports on its own, so each is an instance of the service. */
        {"service.instance.id", instance},
        {"host.name", host},
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
    buf_printf(&b, "{\"key\":\"process.pid\",\"value\":{\"intValue\":\"%ld\"}}]},", (long)getpid());
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

/* Takes n spans off the queue (recycling them) and writes the body for
 * them into t->body (kept for retries); false when memory ran out. */
static bool encode_batch(struct tracer *t, int n)
{
    struct export_body *body = body_take(&t->body);
    struct buf b = {0};
    int i;

    if (body == NULL)
        return false;
    b.p = body->data;
    b.cap = body->cap;
    /* Room from the last batch's size: growing a large body by doubling would
     * copy it over and over. */
    if (t->span_bytes > 0)
        buf_reserve(&b, t->prefix_len + 64 + (size_t)n * (t->span_bytes + t->span_bytes / 4));
    buf_lit(&b, "{\"resourceSpans\":[");
    buf_add(&b, t->prefix, t->prefix_len);
    for (i = 0; i < n; i++) {
        struct trace_span *s = t->queue[t->head];

        t->head = (t->head + 1) % TRACE_QUEUE_MAX;
        t->queued--;
        enc_span(&b, t, s, i == 0);
        span_recycle(t, s);
    }
    buf_lit(&b, "]}]}]}");
    body->data = b.p;
    body->cap = b.cap;
    if (b.failed)
        return false;
    if (n > 0)
        t->span_bytes = (b.len - t->prefix_len) / (size_t)n;
    t->body_len = b.len;
    return true;
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

static void tracer_enqueue(struct tracer *t, struct trace_span *s)
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

    if (t->state != EXPORT_IDLE || n == 0) {
        flush_check(t);
        return;
    }
    t->batch_spans = n;
    t->attempts = 0;
    if (!encode_batch(t, n)) {
        export_warn(t, "out of memory encoding %d spans", n);
        batch_drop(t);
        return;
    }
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
    d *= 0.75 + 0.5 * (double)(rng_next(&t->rng) >> 11) / 9007199254740992.0;
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
    char why[64];

    if (t->state != EXPORT_SENDING || t->req == NULL)
        return;
    t->req = NULL;
    evtimer_del(t->timer);
    if (code >= 200 && code < 300) {
        export_succeeded(t, req);
        return;
    }
    if (code == 0) {
        snprintf(why, sizeof(why), "no answer (connection failed or closed)");
    } else {
        const char *ra = evhttp_find_header(evhttp_request_get_input_headers(req), "Retry-After");
        int secs = ra ? parse_port(ra, strlen(ra)) : -1;

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

/* ---- lifecycle ---- */

/* The listening address, for server.address and server.port when Host lacks them. */
static void tracer_listen_address(struct tracer *t, const struct conf *conf)
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

static bool is_ip_address(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/*
 * Set up the HTTP client for conf->otlp_endpoint. A host name is resolved by
 * evdns from the loop (libevent would otherwise call the blocking
 * getaddrinfo()). Returns -1, logged, when the endpoint cannot be used.
 */
static int tracer_connect_setup(struct tracer *t, const char *endpoint)
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
    if (scheme == NULL || strcasecmp(scheme, "http") != 0 || host == NULL || host[0] == '\0') {
        log_error("tracing off: otlp_endpoint %s is not an http:// URL with a host", endpoint);
        goto out;
    }
    /* libevent keeps the brackets of an IPv6 literal; connecting wants none. */
    n = strlen(host);
    if (host[0] == '[' && n > 2 && host[n - 1] == ']')
        snprintf(name, sizeof(name), "%.*s", (int)(n - 2), host + 1);
    else
        snprintf(name, sizeof(name), "%s", host);
    if (port < 0)
        port = 80;
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

struct tracer *tracer_new(struct event_base *base, const struct conf *conf, struct stats_slot *slot)
{
    struct tracer *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->base = base;
    t->slot = slot;
    t->ratio = conf->trace_sample_ratio;
    t->state = EXPORT_IDLE;
    rng_seed(&t->rng);
    t->flush_finished = event_new(base, -1, 0, flush_finished, t);
    if (t->flush_finished == NULL) {
        free(t);
        return NULL;
    }
    if (conf->otlp_endpoint == NULL || conf->otlp_endpoint[0] == '\0')
        return t;
    t->endpoint = strdup(conf->otlp_endpoint);
    t->timer = evtimer_new(base, export_timer, t);
    t->kick = event_new(base, -1, 0, export_kick, t);
    t->flush_deadline = evtimer_new(base, flush_deadline, t);
    t->scratch_string = json_object_new_string("");
    t->scratch_double = json_object_new_double(0);
    if (t->endpoint == NULL || t->timer == NULL || t->kick == NULL || t->flush_deadline == NULL ||
        t->scratch_string == NULL || t->scratch_double == NULL || tracer_describe(t, conf) != 0) {
        log_error("tracing off: out of memory");
        tracer_free(t);
        return NULL;
    }
    tracer_listen_address(t, conf);
    if (tracer_connect_setup(t, conf->otlp_endpoint) != 0)
        return t; /* off, as logged; the worker serves all the same */
    t->enabled = true;
    return t;
}

void tracer_free(struct tracer *t)
{
    if (t == NULL)
        return;
    if (t->req != NULL) {
        struct evhttp_request *req = t->req;

        t->req = NULL;
        evhttp_cancel_request(req);
    }
    TRACE_COUNT(t, trace_spans_dropped, t->batch_spans);
    drop_queued(t);
    while (t->spares != NULL) {
        struct trace_span *s = t->spares;

        t->spares = s->next_spare;
        span_free(s);
    }
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
    json_object_put(t->scratch_string);
    json_object_put(t->scratch_double);
    free(t->prefix);
    free(t->endpoint);
    free(t->target);
    free(t->host_header);
    free(t);
}
