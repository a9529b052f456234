/*
 * libFuzzer harness: accesslog_escape() and accesslog_format()
 * (daemon/accesslog.c), which write what clients send into the access log.
 *
 * Input: byte 0 chooses the format, the method (or a rejected request's raw
 * line) and the size of the escape buffer; byte 1 the status, the HTTP version,
 * the duration and the time; the rest, split at NUL bytes, gives the target (or
 * the raw request line), the Referer, the User-Agent and the client address.
 * Besides the sanitizers' findings it checks:
 * - escape: the output is terminated, its length is returned, it fits the
 *   buffer, it holds no control byte, no byte above 0x7e, no '"', and every
 *   '\' starts a \xHH escape (\\xHH for JSON); it is a prefix of what an
 *   unlimited buffer gets, which decodes back to the input exactly;
 * - format: one line, ending in '\n', of printable ASCII, as long as returned;
 *   never cut in the buffer todod gives it (16 KiB); cut but still one line in
 *   small buffers; Combined Log Format has its three quoted fields, each the
 *   escaped input; JSON is valid JSON (json-c, strict) whose fields are the
 *   escaped input.
 */
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accesslog.h"
#include "conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_accesslog: %s\n", what);                                         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define LINE_CAP   16384 /* what daemon/http.c gives accesslog_format */
#define FIELD_FITS 4000  /* escaped fields shorter than this are never cut */

static const char *const methods[] = {"GET",    "HEAD",  "POST",  "PUT",
                                      "DELETE", "PATCH", "TRACE", "OPTIONS"};
#define UNLIMITED SIZE_MAX
static const size_t escape_caps[8] = {0, 1, 2, 3, 4, 5, 6, UNLIMITED};
static const int statuses[4] = {200, 404, 0, 505};
static const int versions[4] = {1, 0, -1, 12};
static const double durations[4] = {0.000123, 0, 12.5, 86400.999999};

static bool dangerous(unsigned char c)
{
    return c < 0x20 || c >= 0x7f || c == '"' || c == '\\';
}

/* An independent escaper: \xHH for the dangerous bytes. */
static char *escape_model(const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *out = malloc(4 * n + 1), *o = out;
    size_t i;

    CHECK(out != NULL, "out of memory");
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (dangerous(c)) {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        } else {
            *o++ = (char)c;
        }
    }
    *o = '\0';
    return out;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Checks escaped text e[0..n) and decodes it into out; returns the length. */
static size_t unescape(const char *e, size_t n, bool json, char *out)
{
    size_t i = 0, o = 0;

    while (i < n) {
        unsigned char c = (unsigned char)e[i];

        CHECK(c >= 0x20 && c < 0x7f && c != '"', "a dangerous byte in escaped output");
        if (c != '\\') {
            out[o++] = (char)c;
            i++;
            continue;
        }
        if (json) {
            CHECK(i + 1 < n && e[i + 1] == '\\', "a lone backslash in JSON output");
            i++;
        }
        CHECK(i + 3 < n && e[i + 1] == 'x' && hexval(e[i + 2]) >= 0 && hexval(e[i + 3]) >= 0,
              "a backslash not starting \\xHH");
        out[o] = (char)(hexval(e[i + 2]) * 16 + hexval(e[i + 3]));
        CHECK(dangerous((unsigned char)out[o]), "a harmless byte escaped");
        o++;
        i += 4;
    }
    return o;
}

static void check_escape(const char *src, size_t n, size_t cap, bool json)
{
    size_t full_cap = (json ? 5 : 4) * n + 1, r, full_len, dec_len;
    char *full = malloc(full_cap), *dst, *dec = malloc(n + 1);

    CHECK(full != NULL && dec != NULL, "out of memory");
    full_len = accesslog_escape(full, full_cap, src, n, json);
    CHECK(full_len < full_cap && full[full_len] == '\0' && strlen(full) == full_len,
          "escape: length or termination");
    dec_len = unescape(full, full_len, json, dec);
    CHECK(dec_len == n && memcmp(dec, src, n) == 0, "escape does not decode back to its input");
    if (cap != UNLIMITED) {
        dst = malloc(cap ? cap : 1);
        CHECK(dst != NULL, "out of memory");
        dst[0] = 'Z';
        r = accesslog_escape(dst, cap, src, n, json);
        if (cap == 0) {
            CHECK(r == 0 && dst[0] == 'Z', "escape wrote into an empty buffer");
        } else {
            CHECK(r < cap && dst[r] == '\0' && strlen(dst) == r, "escape: cut output");
            CHECK(memcmp(dst, full, r) == 0, "cut output not a prefix of the whole");
            /* cut between escapes, never inside one */
            unescape(dst, r, json, dec);
        }
        free(dst);
    }
    free(dec);
    free(full);
}

/* One line of printable ASCII ending in '\n', n bytes long. */
static void check_line(const char *buf, size_t n)
{
    size_t i;

    CHECK(n > 0 && strlen(buf) == n && buf[n - 1] == '\n', "not one line ending in \\n");
    for (i = 0; i + 1 < n; i++)
        CHECK((unsigned char)buf[i] >= 0x20 && (unsigned char)buf[i] < 0x7f,
              "a control or non-ASCII byte in a log line");
}

static const char *json_string(struct json_object *o, const char *key)
{
    struct json_object *v;

    CHECK(json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string),
          "a JSON field missing or not a string");
    return json_object_get_string(v);
}

/* The length of escaped text as written: JSON doubles each backslash. */
static size_t written_len(const char *escaped, bool json)
{
    size_t n = strlen(escaped);
    const char *p;

    for (p = escaped; json && (p = strchr(p, '\\')) != NULL; p++)
        n++;
    return n;
}

/* The field as written: "-" when absent or empty, else escaped (cut when long). */
static void check_field(const char *got, const char *in, bool json)
{
    char *want;

    if (in == NULL || in[0] == '\0') {
        CHECK(strcmp(got, "-") == 0, "an absent field not written as -");
        return;
    }
    want = escape_model(in, strlen(in));
    if (written_len(want, json) < FIELD_FITS)
        CHECK(strcmp(got, want) == 0, "a field not written as its escaped input");
    else
        CHECK(strncmp(got, want, strlen(got)) == 0, "a cut field not a prefix of its input");
    free(want);
}

/* The client address is kept in 64 bytes: cut, but between escapes. */
static void check_remote(const char *got, const char *in, bool json)
{
    size_t written; /* its length as escaped in the line */
    char *want;

    if (in == NULL || in[0] == '\0') {
        CHECK(strcmp(got, "-") == 0, "an absent address not written as -");
        return;
    }
    want = escape_model(in, strlen(in));
    written = written_len(want, json);
    CHECK(strncmp(got, want, strlen(got)) == 0 && (written > 63 || !strcmp(got, want)),
          "the address not written as its escaped input");
    free(want);
}

static void check_format(const struct access_entry *e, bool json)
{
    char *buf = malloc(LINE_CAP), small[256], request[8192];
    size_t n, caps[] = {2, 3, 40, sizeof(small)}, i;

    CHECK(buf != NULL, "out of memory");
    n = accesslog_format(e, json ? CONF_LOG_JSON : CONF_LOG_COMBINED, buf, LINE_CAP);
    CHECK(n < LINE_CAP - 1, "a line cut in todod's buffer");
    check_line(buf, n);
    if (e->method != NULL) {
        char *t = escape_model(e->target ? e->target : "", e->target ? strlen(e->target) : 0);

        snprintf(request, sizeof(request), "%s %s HTTP/1.%d", e->method,
                 e->target && e->target[0] ? t : "-",
                 e->version_minor < 0 ? 1 : e->version_minor % 10);
        free(t);
    }
    if (json) {
        struct json_tokener *tok = json_tokener_new();
        struct json_object *o;

        CHECK(tok != NULL, "out of memory");
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        o = json_tokener_parse_ex(tok, buf, (int)n - 1);
        CHECK(o != NULL && json_tokener_get_error(tok) == json_tokener_success &&
                  json_tokener_get_parse_end(tok) == n - 1 &&
                  json_object_is_type(o, json_type_object),
              "a JSON log line json-c refuses");
        if (e->method != NULL && written_len(request, true) < FIELD_FITS)
            CHECK(strcmp(json_string(o, "request"), request) == 0, "JSON request field");
        if (e->method == NULL)
            check_field(json_string(o, "request"), e->request_line, true);
        check_field(json_string(o, "referer"), e->referer, true);
        check_field(json_string(o, "user_agent"), e->user_agent, true);
        check_remote(json_string(o, "remote_addr"), e->remote, true);
        json_object_put(o);
        json_tokener_free(tok);
    } else {
        /* remote - - [time] "request" status bytes "referer" "agent" duration trace */
        char *q[6], *p = buf;
        int k;

        for (k = 0; k < 6; k++) {
            q[k] = strchr(p, '"');
            CHECK(q[k] != NULL, "fewer than three quoted fields");
            p = q[k] + 1;
        }
        CHECK(strchr(p, '"') == NULL, "more than three quoted fields");
        for (k = 0; k < 6; k += 2)
            *q[k + 1] = '\0';
        /* The address is the first word (an address has no space). */
        if (e->remote == NULL || strchr(e->remote, ' ') == NULL) {
            *strchr(buf, ' ') = '\0';
            check_remote(buf, e->remote, false);
        }
        if (e->method != NULL && written_len(request, false) < FIELD_FITS)
            CHECK(strcmp(q[0] + 1, request) == 0, "request field");
        if (e->method == NULL)
            check_field(q[0] + 1, e->request_line, false);
        check_field(q[2] + 1, e->referer, false);
        check_field(q[4] + 1, e->user_agent, false);
    }
    /* Buffers too small: cut, still one line. */
    for (i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        n = accesslog_format(e, json ? CONF_LOG_JSON : CONF_LOG_COMBINED, small, caps[i]);
        CHECK(n < caps[i], "longer than the buffer");
        check_line(small, n);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct access_entry e;
    const char *field[4] = {NULL, NULL, NULL, NULL};
    char *text;
    size_t n, i, k;
    bool json;
    int m;

    if (size < 2)
        return 0;
    json = data[0] & 1;
    m = (data[0] >> 1) & 15;
    n = size - 2;
    text = malloc(n + 1);
    CHECK(text != NULL, "out of memory");
    memcpy(text, data + 2, n);
    text[n] = '\0';

    /* Arbitrary bytes, NULs included. */
    check_escape(text, n, escape_caps[data[0] >> 5], json);

    /* The fields: the text split at NUL bytes. */
    for (i = 0, k = 0; k < 4 && i <= n; k++) {
        field[k] = text + i;
        i += strlen(text + i) + 1;
    }
    memset(&e, 0, sizeof(e));
    e.method = m < 8 ? methods[m] : NULL;
    e.target = field[0];
    e.request_line = m < 8 ? NULL : field[0];
    e.referer = field[1];
    e.user_agent = field[2];
    e.remote = field[3];
    e.arrived.tv_sec = 1700000000 + (time_t)data[1] * 86400;
    e.arrived.tv_nsec = (long)data[1] * 3921568;
    e.status = statuses[data[1] & 3];
    e.version_minor = versions[(data[1] >> 2) & 3];
    e.bytes = (size_t)data[1] << 20;
    e.duration = durations[(data[1] >> 4) & 3];
    e.trace_id = data[1] & 0x40 ? "4bf92f3577b34da6a3ce929d0e0e4736" : NULL;
    check_format(&e, json);
    free(text);
    return 0;
}
