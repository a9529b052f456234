#include "framing.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http_tables.h"

#define CHUNK_LINE_MAX  1024 /* a chunk-size line with its extensions */
#define EMPTY_LINES_MAX 8    /* empty lines tolerated before a request line */
#define METHOD_MAX      16
#define DIGITS_MAX      15 /* Content-Length and chunk sizes: far beyond any body limit */

/* What evhttp parses in place of a rejected request: it is answered with the
 * rejection (the dispatcher knows it by its sequence number), never run. */
static const char standin[] = "GET / HTTP/1.1\r\nHost: todod\r\n\r\n";

/* ---- character classes (RFC 9110 5.6.2, RFC 3986) ---- */

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int hex_value(unsigned char c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* A field value byte: visible ASCII, space, tab, or obs-text. */
static bool is_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* A request-target byte: RFC 3986 unreserved, sub-delims, ":@/?" and '%'. */
static bool is_target_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("-._~!$&'()*+,;=:@/?%", c) != NULL);
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static void trim_ows(const char **s, size_t *n)
{
    while (*n > 0 && is_ows((unsigned char)**s))
        (*s)++, (*n)--;
    while (*n > 0 && is_ows((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

static bool equals_nocase(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* 1*DIGIT, at most DIGITS_MAX of them. */
static bool parse_decimal(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (n == 0 || n > DIGITS_MAX)
        return false;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

/* ---- state changes ---- */

void framing_init(struct framing *f, const struct framing_limits *lim)
{
    memset(f, 0, sizeof(*f));
    f->lim = *lim;
    f->state = FRAMING_IDLE;
}

static void start_request(struct framing *f)
{
    f->state = FRAMING_HEAD;
    f->started++;
    f->scan = f->skip = 0;
    f->fields = 0;
    f->version_minor = -1;
    f->is_options = false;
    f->hosts = 0;
    f->has_length = f->chunked = false;
    f->length = f->remaining = f->body_total = 0;
    f->line[0] = '\0';
}

static void complete_request(struct framing *f)
{
    f->completed++;
    f->state = FRAMING_IDLE;
}

/*
 * Ends the current request for evhttp: the stand-in for a head, the end of a
 * chunked body. False when evhttp is inside a body whose remaining bytes only
 * the client can send.
 */
static bool end_request(struct framing *f, framing_emit_fn *emit, void *ctx)
{
    switch (f->state) {
    case FRAMING_HEAD:
        emit(ctx, standin, sizeof(standin) - 1);
        break;
    case FRAMING_CHUNK_SIZE:
    case FRAMING_TRAILER:
        emit(ctx, "0\r\n\r\n", 5);
        break;
    case FRAMING_CHUNK_CRLF:
        emit(ctx, "\r\n0\r\n\r\n", 7);
        break;
    case FRAMING_IDLE:
    case FRAMING_REJECTED:
        return true;
    case FRAMING_BODY_LENGTH:
    case FRAMING_CHUNK_DATA:
        return false;
    }
    f->completed++;
    return true;
}

static bool reject(struct framing *f, int status, const char *msg, framing_emit_fn *emit, void *ctx)
{
    bool ended;

    if (f->state == FRAMING_REJECTED || f->state == FRAMING_IDLE)
        return true;
    ended = end_request(f, emit, ctx);
    f->rejected_seq = f->started;
    f->reject_status = status;
    snprintf(f->reject_msg, sizeof(f->reject_msg), "%s", msg);
    f->state = FRAMING_REJECTED;
    return ended;
}

/* ---- the head ---- */

/* Keeps the request line for the access log (cut at FRAMING_LINE_MAX). */
static void keep_line(struct framing *f, const char *s, size_t n)
{
    if (n >= sizeof(f->line))
        n = sizeof(f->line) - 1;
    memcpy(f->line, s, n);
    f->line[n] = '\0';
}

static bool valid_target(const char *t, size_t n, bool is_options)
{
    size_t i;

    if (n == 1 && t[0] == '*')
        return is_options;
    if (n > 1 && t[0] == '/' && t[1] == '/')
        return false; /* evhttp would take what follows for an authority */
    if (t[0] != '/') {
        /* absolute-form: a host name or IPv4 address and an optional port,
         * which is all that evhttp's URI parser and todod need. */
        size_t a = n > 7 && strncasecmp(t, "http://", 7) == 0    ? 7
                   : n > 8 && strncasecmp(t, "https://", 8) == 0 ? 8
                                                                 : 0;
        size_t h = a;

        if (a == 0)
            return false;
        while (h < n && ((t[h] >= 'a' && t[h] <= 'z') || (t[h] >= 'A' && t[h] <= 'Z') ||
                         (t[h] >= '0' && t[h] <= '9') || t[h] == '-' || t[h] == '.'))
            h++;
        if (h == a)
            return false;
        if (h < n && t[h] == ':') {
            size_t p = ++h;

            while (h < n && t[h] >= '0' && t[h] <= '9')
                h++;
            if (h == p || h - p > 5)
                return false;
        }
        if (h < n && t[h] != '/' && t[h] != '?')
            return false;
    }
    for (i = 0; i < n; i++) {
        if (!is_target_char((unsigned char)t[i]))
            return false;
        if (t[i] == '%' &&
            (i + 2 >= n || !is_hex((unsigned char)t[i + 1]) || !is_hex((unsigned char)t[i + 2])))
            return false;
    }
    return true;
}

#define SERVED_NAME_SERVED(name) #name,
#define SERVED_NAME_REFUSED(name)
#define SERVED_NAME(name, served, counted) SERVED_NAME_##served(name)

/* method SP request-target SP HTTP-version; 0 or a status with *msg set. */
static int parse_request_line(struct framing *f, const char *s, size_t n, char *msg, size_t msglen)
{
    static const char *const methods[] = {HTTP_METHODS(SERVED_NAME)};
    const char *sp1 = memchr(s, ' ', n), *sp2, *target, *version;
    size_t mlen, tlen, vlen, i;
    bool known = false;

    keep_line(f, s, n);
    if (sp1 == NULL || sp1 == s) {
        snprintf(msg, msglen, "malformed request line");
        return 400;
    }
    mlen = (size_t)(sp1 - s);
    for (i = 0; i < mlen; i++) {
        if (!is_tchar((unsigned char)s[i])) {
            snprintf(msg, msglen, "malformed request line: invalid method");
            return 400;
        }
    }
    target = sp1 + 1;
    sp2 = memchr(target, ' ', n - (size_t)(target - s));
    if (sp2 == NULL || sp2 == target) {
        snprintf(msg, msglen, "malformed request line");
        return 400;
    }
    tlen = (size_t)(sp2 - target);
    version = sp2 + 1;
    vlen = n - (size_t)(version - s);
    if (vlen == 8 && memcmp(version, "HTTP/1.1", 8) == 0) {
        f->version_minor = 1;
        f->minor_of[f->started % FRAMING_RING] = 1;
    } else if (vlen == 8 && memcmp(version, "HTTP/1.0", 8) == 0) {
        f->version_minor = 0;
        f->minor_of[f->started % FRAMING_RING] = 0;
    } else if (vlen == 8 && memcmp(version, "HTTP/", 5) == 0 && version[5] >= '0' &&
               version[5] <= '9' && version[6] == '.' && version[7] >= '0' && version[7] <= '9') {
        snprintf(msg, msglen, "HTTP version %.8s is not supported (HTTP/1.1 and HTTP/1.0 are)",
                 version);
        return 505;
    } else {
        snprintf(msg, msglen, "malformed request line: invalid HTTP version");
        return 400;
    }
    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        known |= strlen(methods[i]) == mlen && memcmp(methods[i], s, mlen) == 0;
    if (!known) {
        snprintf(msg, msglen, "method %.*s is not implemented",
                 mlen > METHOD_MAX ? METHOD_MAX : (int)mlen, s);
        return 501;
    }
    f->is_options = mlen == 7 && memcmp(s, "OPTIONS", 7) == 0;
    f->bodyless =
        (mlen == 4 && memcmp(s, "HEAD", 4) == 0) || (mlen == 5 && memcmp(s, "TRACE", 5) == 0);
    if (tlen > f->lim.max_target) {
        snprintf(msg, msglen, "request target longer than %zu bytes", f->lim.max_target);
        return 414;
    }
    if (!valid_target(target, tlen, f->is_options)) {
        snprintf(msg, msglen, "malformed request target");
        return 400;
    }
    return 0;
}

/* field-name ":" OWS field-value OWS, for a header or trailer field. */
static int check_field(const char *s, size_t n, size_t *name_len_out, const char **value,
                       size_t *vlen, char *msg, size_t msglen)
{
    const char *colon = memchr(s, ':', n);
    size_t i, name_len;

    if (is_ows((unsigned char)s[0])) {
        snprintf(msg, msglen, "obsolete line folding in a header field");
        return 400;
    }
    if (colon == NULL || colon == s) {
        snprintf(msg, msglen, "malformed header field");
        return 400;
    }
    name_len = (size_t)(colon - s);
    for (i = 0; i < name_len; i++) {
        if (is_ows((unsigned char)s[i])) {
            snprintf(msg, msglen, "whitespace before the colon of a header field");
            return 400;
        }
        if (!is_tchar((unsigned char)s[i])) {
            snprintf(msg, msglen, "invalid character in a header field name");
            return 400;
        }
    }
    for (i = name_len + 1; i < n; i++) {
        if (!is_field_char((unsigned char)s[i])) {
            snprintf(msg, msglen, "invalid character in a header field value");
            return 400;
        }
    }
    *name_len_out = name_len;
    *value = colon + 1;
    *vlen = n - name_len - 1;
    trim_ows(value, vlen);
    return 0;
}

/* Transfer-Encoding: only "chunked", last, and in one field. */
static int parse_transfer_encoding(struct framing *f, const char *v, size_t n, char *msg,
                                   size_t msglen)
{
    if (f->chunked) {
        snprintf(msg, msglen, "more than one Transfer-Encoding field");
        return 400;
    }
    while (n > 0) {
        const char *comma = memchr(v, ',', n);
        size_t len = comma ? (size_t)(comma - v) : n;
        const char *item = v;
        size_t ilen = len;

        trim_ows(&item, &ilen);
        if (ilen > 0) {
            if (!equals_nocase(item, ilen, "chunked")) {
                snprintf(msg, msglen, "Transfer-Encoding %.*s is not supported (only chunked is)",
                         ilen > 40 ? 40 : (int)ilen, item);
                return 501;
            }
            f->chunked = true;
        }
        if (comma == NULL)
            break;
        if (f->chunked) {
            /* Something follows chunked: it must be the last coding. */
            const char *rest = comma + 1;
            size_t rlen = n - len - 1;

            trim_ows(&rest, &rlen);
            if (rlen > 0) {
                snprintf(msg, msglen, "chunked must be the last Transfer-Encoding");
                return 400;
            }
        }
        v = comma + 1;
        n -= len + 1;
    }
    if (!f->chunked) {
        snprintf(msg, msglen, "empty Transfer-Encoding");
        return 400;
    }
    return 0;
}

/* A field value as evhttp keeps it: leading spaces (not tabs) and trailing
 * spaces and tabs removed. */
static bool evhttp_value_is(const char *colon, const char *end, const char *word)
{
    const char *v = colon + 1;
    size_t n = (size_t)(end - v);

    while (n > 0 && *v == ' ')
        v++, n--;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return equals_nocase(v, n, word);
}

/* The fields todod looks at for framing; others only need to be well-formed. */
static int header_field(struct framing *f, const char *s, size_t n, char *msg, size_t msglen)
{
    const char *v;
    size_t vlen, name_len;
    int st = check_field(s, n, &name_len, &v, &vlen, msg, msglen);
    uint64_t len;

    if (st != 0)
        return st;
    if (++f->fields > f->lim.max_fields) {
        snprintf(msg, msglen, "more than %d header fields", f->lim.max_fields);
        return 431;
    }
    if (equals_nocase(s, name_len, "content-length")) {
        if (!parse_decimal(v, vlen, &len)) {
            snprintf(msg, msglen, "invalid Content-Length");
            return 400;
        }
        if (f->has_length && len != f->length) {
            snprintf(msg, msglen, "conflicting Content-Length fields");
            return 400;
        }
        f->has_length = true;
        f->length = len;
    } else if (equals_nocase(s, name_len, "transfer-encoding")) {
        st = parse_transfer_encoding(f, v, vlen, msg, msglen);
        if (st == 0 && !evhttp_value_is(s + name_len, s + n, "chunked")) {
            snprintf(msg, msglen, "malformed Transfer-Encoding (only \"chunked\" is accepted)");
            return 400;
        }
        return st;
    } else if (equals_nocase(s, name_len, "host")) {
        if (++f->hosts > 1) {
            snprintf(msg, msglen, "more than one Host header field");
            return 400;
        }
    } else if (equals_nocase(s, name_len, "expect")) {
        if (!evhttp_value_is(s + name_len, s + n, "100-continue")) {
            snprintf(msg, msglen, "unsupported expectation (only 100-continue is)");
            return 417;
        }
    }
    return 0;
}

/* The blank line: the head is complete. Decide how the body is framed. */
static int finish_head(struct framing *f, char *msg, size_t msglen)
{
    if (f->version_minor == 1 && f->hosts == 0) {
        snprintf(msg, msglen, "missing Host header field");
        return 400;
    }
    if (f->chunked && f->has_length) {
        snprintf(msg, msglen, "both Content-Length and Transfer-Encoding");
        return 400;
    }
    if (f->chunked && f->version_minor == 0) {
        snprintf(msg, msglen, "Transfer-Encoding in an HTTP/1.0 request");
        return 400;
    }
    if (f->bodyless && (f->chunked || (f->has_length && f->length > 0))) {
        snprintf(msg, msglen, "a HEAD or TRACE request with a body");
        return 400;
    }
    if (f->has_length && f->length > f->lim.max_body) {
        snprintf(msg, msglen, "request body larger than %zu bytes", f->lim.max_body);
        return 413;
    }
    return 0;
}

/*
 * Validates the head line by line from f->scan (so a trickled head costs
 * linear time) and, once it is complete and valid, passes it on whole.
 * Returns the bytes consumed: 0 while incomplete.
 */
static size_t head_step(struct framing *f, const char *b, size_t avail, framing_emit_fn *emit,
                        void *ctx)
{
    char msg[160];
    int st = 0;

    for (;;) {
        const char *lf = memchr(b + f->scan, '\n', avail - f->scan);
        const char *line = b + f->scan;
        size_t n, end;

        if (lf == NULL) {
            if (f->version_minor < 0 && avail - f->scan > f->lim.max_target + 32) {
                st = 414;
                snprintf(msg, sizeof(msg), "request target longer than %zu bytes",
                         f->lim.max_target);
                break;
            }
            if (avail > f->lim.max_head) {
                st = 431;
                snprintf(msg, sizeof(msg), "request head larger than %zu bytes", f->lim.max_head);
                break;
            }
            return 0;
        }
        end = (size_t)(lf - b) + 1;
        if (end > f->lim.max_head) {
            st = 431;
            snprintf(msg, sizeof(msg), "request head larger than %zu bytes", f->lim.max_head);
            break;
        }
        n = (size_t)(lf - line);
        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (memchr(line, '\r', n) != NULL || memchr(line, '\0', n) != NULL) {
            st = 400;
            snprintf(msg, sizeof(msg), "bare CR or NUL in the request head");
            break;
        }
        f->scan = end;
        if (f->version_minor < 0) {
            if (n == 0) {
                f->skip = end;
                if (end > EMPTY_LINES_MAX * 2) {
                    st = 400;
                    snprintf(msg, sizeof(msg), "empty lines instead of a request line");
                    break;
                }
                continue;
            }
            st = parse_request_line(f, line, n, msg, sizeof(msg));
            if (st != 0)
                break;
            continue;
        }
        if (n == 0) {
            st = finish_head(f, msg, sizeof(msg));
            if (st != 0)
                break;
            emit(ctx, b + f->skip, end - f->skip);
            if (f->chunked) {
                f->state = FRAMING_CHUNK_SIZE;
            } else if (f->has_length && f->length > 0) {
                f->state = FRAMING_BODY_LENGTH;
                f->remaining = f->length;
            } else {
                complete_request(f);
            }
            return end;
        }
        st = header_field(f, line, n, msg, sizeof(msg));
        if (st != 0)
            break;
    }
    reject(f, st, msg, emit, ctx);
    return avail;
}

/* ---- chunked bodies ---- */

/* chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-value ] ) */
static bool valid_chunk_ext(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        while (i < n && is_ows((unsigned char)s[i]))
            i++;
        if (i == n)
            return true;
        if (s[i++] != ';')
            return false;
        while (i < n && is_ows((unsigned char)s[i]))
            i++;
        if (i == n || !is_tchar((unsigned char)s[i]))
            return false;
        while (i < n && is_tchar((unsigned char)s[i]))
            i++;
        while (i < n && is_ows((unsigned char)s[i]))
            i++;
        if (i == n || s[i] != '=')
            continue;
        i++;
        while (i < n && is_ows((unsigned char)s[i]))
            i++;
        if (i < n && s[i] == '"') {
            for (i++; i < n && s[i] != '"'; i++) {
                if (s[i] == '\\')
                    i++;
                if (i >= n || !is_field_char((unsigned char)s[i]))
                    return false;
            }
            if (i >= n)
                return false;
            i++;
        } else {
            if (i == n || !is_tchar((unsigned char)s[i]))
                return false;
            while (i < n && is_tchar((unsigned char)s[i]))
                i++;
        }
    }
    return true;
}

static size_t chunk_size_step(struct framing *f, const char *b, size_t avail, framing_emit_fn *emit,
                              void *ctx)
{
    size_t scan = avail < CHUNK_LINE_MAX + 2 ? avail : CHUNK_LINE_MAX + 2;
    const char *lf = memchr(b, '\n', scan);
    uint64_t size = 0;
    size_t n, i = 0;
    char line[32];

    if (lf == NULL) {
        if (avail <= CHUNK_LINE_MAX + 1)
            return 0;
        reject(f, 400, "malformed chunked body: chunk-size line too long", emit, ctx);
        return avail;
    }
    n = (size_t)(lf - b);
    if (n > 0 && b[n - 1] == '\r')
        n--;
    while (i < n && is_hex((unsigned char)b[i])) {
        if (i == DIGITS_MAX) {
            reject(f, 413, "request body too large: chunk size", emit, ctx);
            return avail;
        }
        size = size * 16 + (uint64_t)hex_value((unsigned char)b[i]);
        i++;
    }
    if (i == 0 || !valid_chunk_ext(b + i, n - i) || memchr(b, '\r', n) != NULL) {
        reject(f, 400, "malformed chunked body: invalid chunk size", emit, ctx);
        return avail;
    }
    if (size == 0) {
        f->state = FRAMING_TRAILER;
        f->fields = 0;
        return (size_t)(lf - b) + 1;
    }
    if (size > f->lim.max_body - f->body_total) {
        char msg[80];

        snprintf(msg, sizeof(msg), "request body larger than %zu bytes", f->lim.max_body);
        reject(f, 413, msg, emit, ctx);
        return avail;
    }
    f->body_total += size;
    f->remaining = size;
    f->state = FRAMING_CHUNK_DATA;
    emit(ctx, line, (size_t)snprintf(line, sizeof(line), "%llx\r\n", (unsigned long long)size));
    return (size_t)(lf - b) + 1;
}

static size_t chunk_crlf_step(struct framing *f, const char *b, size_t avail, framing_emit_fn *emit,
                              void *ctx)
{
    size_t n;

    if (b[0] == '\n') {
        n = 1;
    } else if (b[0] == '\r' && avail < 2) {
        return 0;
    } else if (b[0] == '\r' && b[1] == '\n') {
        n = 2;
    } else {
        reject(f, 400, "malformed chunked body: no CRLF after chunk data", emit, ctx);
        return avail;
    }
    emit(ctx, "\r\n", 2);
    f->state = FRAMING_CHUNK_SIZE;
    return n;
}

/* Trailer fields are checked and dropped: todod uses none. */
static size_t trailer_step(struct framing *f, const char *b, size_t avail, framing_emit_fn *emit,
                           void *ctx)
{
    const char *lf = memchr(b, '\n', avail), *v;
    size_t n, name_len, vlen;
    char msg[160];
    int st;

    if (lf == NULL) {
        if (avail <= f->lim.max_head)
            return 0;
        reject(f, 431, "trailer section too large", emit, ctx);
        return avail;
    }
    n = (size_t)(lf - b);
    if (n > f->lim.max_head) {
        reject(f, 431, "trailer section too large", emit, ctx);
        return avail;
    }
    if (n > 0 && b[n - 1] == '\r')
        n--;
    if (n == 0) {
        emit(ctx, "0\r\n\r\n", 5);
        complete_request(f);
        return (size_t)(lf - b) + 1;
    }
    st = memchr(b, '\r', n) != NULL || memchr(b, '\0', n) != NULL
             ? (snprintf(msg, sizeof(msg), "bare CR or NUL in a trailer field"), 400)
             : check_field(b, n, &name_len, &v, &vlen, msg, sizeof(msg));
    if (st == 0 && ++f->fields > f->lim.max_fields) {
        st = 431;
        snprintf(msg, sizeof(msg), "more than %d trailer fields", f->lim.max_fields);
    }
    if (st != 0) {
        reject(f, st, msg, emit, ctx);
        return avail;
    }
    return (size_t)(lf - b) + 1;
}

/* Passes body or chunk bytes on as they come. */
static size_t data_step(struct framing *f, const char *b, size_t avail, framing_emit_fn *emit,
                        void *ctx)
{
    size_t n = f->remaining < avail ? (size_t)f->remaining : avail;

    emit(ctx, b, n);
    f->remaining -= n;
    if (f->remaining == 0) {
        if (f->state == FRAMING_CHUNK_DATA)
            f->state = FRAMING_CHUNK_CRLF;
        else
            complete_request(f);
    }
    return n;
}

/* ---- the interface ---- */

size_t framing_feed(struct framing *f, const char *in, size_t len, framing_emit_fn *emit, void *ctx)
{
    size_t pos = 0;

    while (pos < len) {
        size_t n = 0;

        switch (f->state) {
        case FRAMING_IDLE:
            start_request(f);
            continue;
        case FRAMING_HEAD:
            n = head_step(f, in + pos, len - pos, emit, ctx);
            break;
        case FRAMING_BODY_LENGTH:
        case FRAMING_CHUNK_DATA:
            n = data_step(f, in + pos, len - pos, emit, ctx);
            break;
        case FRAMING_CHUNK_SIZE:
            n = chunk_size_step(f, in + pos, len - pos, emit, ctx);
            break;
        case FRAMING_CHUNK_CRLF:
            n = chunk_crlf_step(f, in + pos, len - pos, emit, ctx);
            break;
        case FRAMING_TRAILER:
            n = trailer_step(f, in + pos, len - pos, emit, ctx);
            break;
        case FRAMING_REJECTED:
            return len;
        }
        if (n == 0)
            break;
        pos += n;
    }
    return pos;
}

bool framing_abort(struct framing *f, int status, const char *msg, framing_emit_fn *emit, void *ctx)
{
    if (f->state == FRAMING_IDLE || f->state == FRAMING_REJECTED)
        return true;
    return reject(f, status, msg, emit, ctx);
}

bool framing_idle(const struct framing *f)
{
    return f->state == FRAMING_IDLE;
}

int framing_rejection(const struct framing *f, uint64_t seq, const char **msg)
{
    if (f->state != FRAMING_REJECTED || seq != f->rejected_seq)
        return 0;
    *msg = f->reject_msg;
    return f->reject_status;
}
