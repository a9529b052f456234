/*
 * libFuzzer harness: framing_feed() and framing_abort() (daemon/framing.c), the
 * gate every byte a client sends passes before evhttp parses it.
 *
 * Input: byte 0 chooses the limits (bit 0) and the largest piece (bits 1-3),
 * bytes 1-2 seed the piece sizes; the rest is what one client sends on one
 * connection. It is fed twice, the way daemon/conn.c feeds it (unconsumed bytes
 * stay in front, at most max_head + 2 bytes per call): whole, and cut into
 * pieces of pseudo-random sizes as TCP may deliver it. Besides the sanitizers'
 * findings it checks:
 * - framing_feed() never consumes more than it is offered, and never nothing
 *   of a full window (the connection would stall);
 * - nothing is emitted once a request was rejected, and all input is then
 *   consumed;
 * - what evhttp is given parses, by an independent parser, as complete,
 *   well-formed requests within the limits (only the last body may still be
 *   arriving), exactly as many as framing says it completed, each framed the
 *   same way by RFC 9112 and by libevent 2.1's evhttp (which reads no body
 *   for HEAD and TRACE, and takes a body as chunked only when the one
 *   Transfer-Encoding field is "chunked"); whatever evhttp would refuse by
 *   itself (its own HTML error page) is reported too;
 * - whole or in pieces, evhttp is given the same bytes and the same requests
 *   complete or are rejected;
 * - framing_abort() ends the request in progress cleanly, or says it cannot
 *   exactly when evhttp is inside a body only the client can finish.
 */
#include <event2/http.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "framing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct framing_limits limit_sets[2] = {
    /* small: every limit is reachable by short inputs */
    {.max_head = 256, .max_target = 64, .max_body = 300, .max_fields = 8},
    /* todod's (daemon/conn.c), with a 1 MiB body */
    {.max_head = 64 * 1024, .max_target = 8 * 1024, .max_body = 1024 * 1024, .max_fields = 100},
};
static const size_t piece_max[8] = {1, 2, 3, 7, 16, 64, 512, 4096};

#define CHUNK_LINE_WINDOW 1026 /* framing needs this much for a chunk-size line */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
    va_list ap;

    fputs("fuzz_framing: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail(__VA_ARGS__);                                                                     \
    } while (0)

/* ---- what evhttp is given ---- */

struct sink {
    const struct framing *f;
    char *buf;
    size_t len, cap;
};

static void collect(void *ctx, const char *p, size_t n)
{
    struct sink *s = ctx;

    CHECK(s->f->state != FRAMING_REJECTED, "%zu bytes emitted after a rejection", n);
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        char *grown;

        while (cap < s->len + n)
            cap *= 2;
        grown = realloc(s->buf, cap);
        CHECK(grown != NULL, "out of memory");
        s->buf = grown;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

/* ---- an independent parser of the emitted stream ---- */

static bool tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* The line at b[pos..n): its length without CRLF or LF, *next past the LF. */
static bool get_line(const char *b, size_t n, size_t pos, size_t *len, size_t *next)
{
    const char *lf = memchr(b + pos, '\n', n - pos);

    if (lf == NULL)
        return false;
    *next = (size_t)(lf - b) + 1;
    *len = (size_t)(lf - (b + pos));
    if (*len > 0 && b[pos + *len - 1] == '\r')
        (*len)--;
    return true;
}

static bool word_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

struct head {
    char method[16];
    bool chunked, has_length;
    uint64_t length;
};

/* The value as evhttp keeps it: leading spaces (not tabs) and trailing
 * spaces and tabs removed (evhttp_parse_headers_). */
static void evhttp_value(const char *v, size_t n, char *out, size_t cap)
{
    while (n > 0 && *v == ' ')
        v++, n--;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, v, n);
    out[n] = '\0';
}

static void check_target(const char *t, size_t n)
{
    static const char allowed[] = "-._~!$&'()*+,;=:@/?%";
    char copy[8 * 1024 + 1];
    struct evhttp_uri *uri;
    size_t i;

    CHECK(n < sizeof(copy), "request target of %zu bytes", n);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];

        CHECK((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c != '\0' && strchr(allowed, c) != NULL) || (n == 1 && c == '*'),
              "byte 0x%02x in a request target", c);
    }
    memcpy(copy, t, n);
    copy[n] = '\0';
    /* evhttp_parse_request_line: a target it cannot parse gets libevent's own 400. */
    uri = evhttp_uri_parse_with_flags(copy, EVHTTP_URI_NONCONFORMANT);
    CHECK(uri != NULL, "evhttp cannot parse the request target \"%s\" (libevent's own 400)", copy);
    evhttp_uri_free(uri);
}

/* Parses the head at b[pos..n); returns the position after it. */
static size_t check_head(const char *b, size_t n, size_t pos, const struct framing_limits *lim,
                         struct head *h)
{
    static const char *const methods[] = {"GET",    "HEAD",  "POST",  "PUT",
                                          "DELETE", "PATCH", "TRACE", "OPTIONS"};
    size_t start = pos, len, next, i, mlen;
    const char *line, *sp1, *sp2;
    int fields = 0, hosts = 0, te_fields = 0, minor;
    bool te_exact = false, known = false, expect_seen = false;
    static char ev[64 * 1024 + 1]; /* a field value as evhttp keeps it */
    char bad_expect[64] = "", te_value[64] = "";

    memset(h, 0, sizeof(*h));
    CHECK(get_line(b, n, pos, &len, &next), "an incomplete head was passed on at byte %zu", pos);
    line = b + pos;
    CHECK(len >= 14, "a request line shorter than evhttp takes, at byte %zu", pos);
    CHECK(memchr(line, '\r', len) == NULL && memchr(line, '\0', len) == NULL,
          "CR or NUL in a request line");
    sp1 = memchr(line, ' ', len);
    CHECK(sp1 != NULL && sp1 > line, "request line without a method");
    mlen = (size_t)(sp1 - line);
    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        known |= strlen(methods[i]) == mlen && memcmp(methods[i], line, mlen) == 0;
    CHECK(known, "unknown method \"%.*s\" passed on", (int)(mlen > 16 ? 16 : mlen), line);
    memcpy(h->method, line, mlen);
    sp2 = memchr(sp1 + 1, ' ', len - mlen - 1);
    CHECK(sp2 != NULL && sp2 > sp1 + 1, "request line without a target");
    CHECK((size_t)(sp2 - sp1 - 1) <= lim->max_target, "request target over max_target");
    check_target(sp1 + 1, (size_t)(sp2 - sp1 - 1));
    CHECK(line + len - (sp2 + 1) == 8 && memcmp(sp2 + 1, "HTTP/1.", 7) == 0 &&
              (sp2[8] == '0' || sp2[8] == '1'),
          "HTTP version \"%.*s\" passed on", (int)(line + len - (sp2 + 1)), sp2 + 1);
    minor = sp2[8] - '0';
    pos = next;

    for (;;) {
        const char *colon, *v;
        size_t vlen;

        CHECK(get_line(b, n, pos, &len, &next), "an incomplete head was passed on");
        line = b + pos;
        pos = next;
        if (len == 0)
            break;
        CHECK(line[0] != ' ' && line[0] != '\t', "obs-fold passed on");
        colon = memchr(line, ':', len);
        CHECK(colon != NULL && colon > line, "header field without a name");
        for (i = 0; line + i < colon; i++)
            CHECK(tchar((unsigned char)line[i]), "byte 0x%02x in a field name",
                  (unsigned char)line[i]);
        for (i = (size_t)(colon - line) + 1; i < len; i++)
            CHECK(line[i] == '\t' || ((unsigned char)line[i] >= 0x20 && line[i] != 0x7f),
                  "byte 0x%02x in a field value", (unsigned char)line[i]);
        fields++;
        CHECK(len < sizeof(ev), "a header line of %zu bytes passed on", len);
        v = colon + 1;
        vlen = len - (size_t)(v - line);
        evhttp_value(v, vlen, ev, sizeof(ev));
        while (vlen > 0 && (*v == ' ' || *v == '\t'))
            v++, vlen--;
        while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
            vlen--;
        if (word_is(line, (size_t)(colon - line), "content-length")) {
            uint64_t x = 0;
            char *end;

            CHECK(vlen > 0 && vlen <= 15, "Content-Length of %zu characters passed on", vlen);
            for (i = 0; i < vlen; i++) {
                CHECK(v[i] >= '0' && v[i] <= '9', "Content-Length \"%.*s\" passed on", (int)vlen,
                      v);
                x = x * 10 + (uint64_t)(v[i] - '0');
            }
            CHECK(!h->has_length || x == h->length, "conflicting Content-Length passed on");
            /* evhttp: evutil_strtoll of the first one */
            CHECK((uint64_t)strtoll(ev, &end, 10) == x && *end == '\0',
                  "evhttp reads Content-Length \"%s\" differently", ev);
            h->has_length = true;
            h->length = x;
        } else if (word_is(line, (size_t)(colon - line), "transfer-encoding")) {
            te_fields++;
            te_exact = te_fields == 1 && strcasecmp(ev, "chunked") == 0;
            if (te_fields == 1)
                snprintf(te_value, sizeof(te_value), "%s", ev);
            /* RFC 9112: chunked, the final coding; framing supports no other. */
            for (i = 0; i < vlen;) {
                size_t e = i;

                while (e < vlen && v[e] != ',')
                    e++;
                while (i < e && (v[i] == ' ' || v[i] == '\t'))
                    i++;
                {
                    size_t k = e;

                    while (k > i && (v[k - 1] == ' ' || v[k - 1] == '\t'))
                        k--;
                    if (k > i) {
                        CHECK(word_is(v + i, k - i, "chunked") && !h->chunked,
                              "Transfer-Encoding \"%.*s\" passed on", (int)vlen, v);
                        h->chunked = true;
                    }
                }
                i = e + 1;
            }
        } else if (word_is(line, (size_t)(colon - line), "host")) {
            hosts++;
        } else if (word_is(line, (size_t)(colon - line), "expect") && !expect_seen) {
            expect_seen = true; /* evhttp_have_expect looks at the first one */
            if (strcasecmp(ev, "100-continue") != 0)
                snprintf(bad_expect, sizeof(bad_expect), "%s", ev);
        }
    }
    CHECK(pos - start <= lim->max_head, "a head of %zu bytes passed on", pos - start);
    CHECK(fields <= lim->max_fields, "%d header fields passed on", fields);
    CHECK(minor == 0 || hosts == 1, "HTTP/1.1 request with %d Host fields passed on", hosts);
    CHECK(hosts <= 1, "%d Host fields passed on", hosts);
    CHECK(te_fields == 0 || h->chunked, "Transfer-Encoding without chunked passed on");
    CHECK(!(h->chunked && h->has_length), "both Transfer-Encoding and Content-Length passed on");
    CHECK(!(h->chunked && minor == 0), "Transfer-Encoding in HTTP/1.0 passed on");
    CHECK(!h->has_length || h->length <= lim->max_body, "Content-Length over max_body passed on");
    /* The body as evhttp (libevent 2.1) frames it must be the body framing passes on. */
    if (h->chunked || (h->has_length && h->length > 0)) {
        CHECK(strcmp(h->method, "HEAD") != 0 && strcmp(h->method, "TRACE") != 0,
              "%s request with a body passed on: evhttp reads no body for %s, so it would run "
              "the body as the next request",
              h->method, h->method);
        /* evhttp_get_body: evhttp_have_expect() before reading a body */
        CHECK(minor == 0 || bad_expect[0] == '\0',
              "Expect \"%s\" passed on: evhttp answers 417 by itself", bad_expect);
    }
    CHECK(!h->chunked || te_exact,
          "Transfer-Encoding \"%s\"%s passed on as chunked: evhttp frames it otherwise", te_value,
          te_fields > 1 ? " and more fields" : "");
    return pos;
}

/* Parses a chunked body as framing rewrites it ("%llx\r\n", data, "\r\n", ...,
 * "0\r\n\r\n"). Returns the position after it, or n when it is still arriving. */
static size_t check_chunked(const char *b, size_t n, size_t pos, const struct framing_limits *lim,
                            bool *partial)
{
    uint64_t total = 0;

    for (;;) {
        uint64_t size = 0;
        size_t len, next, i;
        char expect[32];

        if (!get_line(b, n, pos, &len, &next)) {
            *partial = true;
            return n;
        }
        CHECK(len > 0 && len <= 16 && b[next - 2] == '\r', "malformed chunk-size line passed on");
        for (i = 0; i < len; i++) {
            char c = b[pos + i];

            CHECK((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'), "chunk size not in hex");
            size = size * 16 + (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
        }
        snprintf(expect, sizeof(expect), "%llx", (unsigned long long)size);
        CHECK(strlen(expect) == len, "chunk size not as framing writes it");
        pos = next;
        if (size == 0) {
            if (n - pos < 2) {
                CHECK(memcmp(b + pos, "\r\n", n - pos) == 0, "no CRLF after the last chunk");
                *partial = true;
                return n;
            }
            CHECK(b[pos] == '\r' && b[pos + 1] == '\n', "trailer fields passed on");
            return pos + 2;
        }
        total += size;
        CHECK(total <= lim->max_body, "chunked body over max_body passed on");
        if (n - pos < size + 2) {
            if (n - pos > size)
                CHECK(b[pos + size] == '\r', "no CRLF after chunk data");
            *partial = true;
            return n;
        }
        CHECK(b[pos + size] == '\r' && b[pos + size + 1] == '\n', "no CRLF after chunk data");
        pos += size + 2;
    }
}

/* Complete requests in the stream; *partial: the last body is still arriving. */
static uint64_t check_stream(const struct sink *s, const struct framing_limits *lim, bool *partial)
{
    const char *b = s->buf;
    size_t n = s->len, pos = 0;
    uint64_t complete = 0;

    *partial = false;
    while (pos < n) {
        struct head h;

        pos = check_head(b, n, pos, lim, &h);
        if (h.chunked) {
            pos = check_chunked(b, n, pos, lim, partial);
        } else if (h.has_length && h.length > 0) {
            if (n - pos < h.length) {
                *partial = true;
                pos = n;
            } else {
                pos += h.length;
            }
        }
        if (!*partial)
            complete++;
    }
    return complete;
}

/* ---- feeding ---- */

struct run {
    struct framing f;
    struct sink out;
};

static uint32_t next_rand(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* Feeds in[0..n) in pieces of 1..piece bytes (0: whole), as daemon/conn.c does. */
static void feed(struct run *r, const char *in, size_t n, size_t piece, uint32_t seed,
                 size_t window)
{
    char *pending = malloc(n + 1);
    size_t npending = 0, pos = 0;

    CHECK(pending != NULL, "out of memory");
    while (pos < n) {
        size_t k = piece == 0 ? n - pos : 1 + next_rand(&seed) % piece;

        if (k > n - pos)
            k = n - pos;
        memcpy(pending + npending, in + pos, k);
        npending += k;
        pos += k;
        while (npending > 0) {
            size_t offer = npending < window ? npending : window, used;

            used = framing_feed(&r->f, pending, offer, collect, &r->out);
            CHECK(used <= offer, "consumed %zu of %zu bytes", used, offer);
            CHECK(r->f.state != FRAMING_REJECTED || used == offer,
                  "rejected, but consumed %zu of %zu bytes", used, offer);
            CHECK(used > 0 || offer < window,
                  "consumed nothing of a full window of %zu bytes (state %d): the connection "
                  "would stall",
                  offer, r->f.state);
            memmove(pending, pending + used, npending - used);
            npending -= used;
            if (used == 0)
                break;
        }
    }
    free(pending);
}

static void check_state(const struct run *r, const struct framing_limits *lim)
{
    const struct framing *f = &r->f;
    bool partial;
    uint64_t complete = check_stream(&r->out, lim, &partial);
    const char *msg = NULL;
    int st;

    CHECK(complete == f->completed, "evhttp sees %llu complete requests, framing says %llu",
          (unsigned long long)complete, (unsigned long long)f->completed);
    CHECK(f->completed <= f->started && f->started - f->completed <= 1,
          "started %llu, completed %llu", (unsigned long long)f->started,
          (unsigned long long)f->completed);
    switch (f->state) {
    case FRAMING_IDLE:
    case FRAMING_HEAD:
    case FRAMING_REJECTED:
        CHECK(!partial, "the stream ends inside a body, framing is in state %d", f->state);
        break;
    case FRAMING_BODY_LENGTH:
    case FRAMING_CHUNK_SIZE:
    case FRAMING_CHUNK_DATA:
    case FRAMING_CHUNK_CRLF:
    case FRAMING_TRAILER:
        CHECK(partial, "framing is inside a body (state %d), the stream is not", f->state);
        break;
    }
    CHECK(memchr(f->line, '\0', sizeof(f->line)) != NULL, "request line copy not terminated");
    if (f->state == FRAMING_REJECTED) {
        st = framing_rejection(f, f->rejected_seq, &msg);
        CHECK(f->rejected_seq == f->started, "rejected request %llu of %llu",
              (unsigned long long)f->rejected_seq, (unsigned long long)f->started);
        CHECK(st == 400 || st == 408 || st == 413 || st == 414 || st == 417 || st == 431 ||
                  st == 501 || st == 505,
              "rejection status %d", st);
        CHECK(msg != NULL && msg[0] != '\0' && strpbrk(msg, "\r\n") == NULL,
              "rejection message \"%s\"", msg ? msg : "(null)");
        CHECK(framing_rejection(f, f->rejected_seq + 1, &msg) == 0, "two rejections");
    } else {
        CHECK(framing_rejection(f, f->started, &msg) == 0, "a rejection while not rejected");
    }
    CHECK(framing_idle(f) == (f->state == FRAMING_IDLE), "framing_idle");
}

/* The request in progress times out; then the client sends more. */
static void check_abort(struct run *r, const struct framing_limits *lim, const char *more,
                        size_t nmore)
{
    enum framing_state was = r->f.state;
    size_t before = r->out.len;
    bool ended = framing_abort(&r->f, 408, "request not received in time", collect, &r->out);

    switch (was) {
    case FRAMING_IDLE:
    case FRAMING_REJECTED:
        CHECK(ended && r->f.state == was && r->out.len == before, "abort changed state %d", was);
        break;
    case FRAMING_BODY_LENGTH:
    case FRAMING_CHUNK_DATA:
        CHECK(!ended && r->out.len == before && r->f.state == FRAMING_REJECTED,
              "abort inside a body of known length");
        break;
    default:
        CHECK(ended && r->f.state == FRAMING_REJECTED, "abort in state %d did not end it", was);
        check_state(r, lim);
        break;
    }
    if (r->f.state == FRAMING_REJECTED) {
        before = r->out.len;
        CHECK(framing_feed(&r->f, more, nmore, collect, &r->out) == nmore,
              "input after a rejection not consumed");
        CHECK(r->out.len == before, "input after a rejection passed on");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct framing_limits *lim;
    struct run *whole, *split;
    size_t window, piece, n;
    const char *in;
    uint32_t seed;

    if (size < 3)
        return 0;
    lim = &limit_sets[data[0] & 1];
    piece = piece_max[(data[0] >> 1) & 7];
    seed = (uint32_t)data[1] << 8 | data[2] | 0x10000u; /* never 0 */
    in = (const char *)data + 3;
    n = size - 3;
    /* daemon/conn.c offers max_head + 2 bytes at most; framing also needs a
     * whole chunk-size line (which the small limits' head would not hold). */
    window = lim->max_head + 2 > CHUNK_LINE_WINDOW ? lim->max_head + 2 : CHUNK_LINE_WINDOW;

    whole = calloc(1, sizeof(*whole));
    split = calloc(1, sizeof(*split));
    CHECK(whole != NULL && split != NULL, "out of memory");
    framing_init(&whole->f, lim);
    framing_init(&split->f, lim);
    whole->out.f = &whole->f;
    split->out.f = &split->f;

    feed(whole, in, n, 0, seed, window);
    check_state(whole, lim);
    feed(split, in, n, piece, seed, window);
    check_state(split, lim);

    CHECK(whole->out.len == split->out.len &&
              (whole->out.len == 0 || memcmp(whole->out.buf, split->out.buf, whole->out.len) == 0),
          "whole and in pieces of at most %zu, evhttp is given different bytes (%zu, %zu)", piece,
          whole->out.len, split->out.len);
    CHECK(whole->f.state == split->f.state && whole->f.started == split->f.started &&
              whole->f.completed == split->f.completed,
          "whole and in pieces of at most %zu: state %d/%d, started %llu/%llu, completed "
          "%llu/%llu",
          piece, whole->f.state, split->f.state, (unsigned long long)whole->f.started,
          (unsigned long long)split->f.started, (unsigned long long)whole->f.completed,
          (unsigned long long)split->f.completed);

    check_abort(whole, lim, in, n);

    free(whole->out.buf);
    free(split->out.buf);
    free(whole);
    free(split);
    return 0;
}
