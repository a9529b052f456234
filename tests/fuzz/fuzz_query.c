/*
 * libFuzzer harness: http_query_parse_long() (daemon/http.c), how GET /todos
 * and GET /todos/done/{done} read page= and limit=.
 *
 * Input: byte 0 chooses the parameter's name, its bounds, its default and
 * whether out-of-range values are clamped; the rest is the query string (none
 * when there is no rest; it ends at its first NUL, as evhttp's does). Besides
 * the sanitizers' findings (and LeakSanitizer's) it compares every answer with
 * an independent model of the rules:
 * - the query string is split the way libevent 2.1 does (evhttp_parse_query_str:
 *   '&'-separated name=value pairs, a pair without '=' or with an empty name
 *   makes the whole string malformed; the value is %-decoded, '+' is a space);
 *   the first pair whose name matches, in any case, is the parameter;
 * - the value is an optional '-' and decimal digits, nothing else (a decoded
 *   NUL is refused: evhttp's C string would end there); out of the bounds it
 *   is clamped or refused;
 * - refused: -1, a message, and the default in *out; absent: 0 and the default.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_query: %s\n", what);                                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *const names[4] = {"page", "limit", "p", "LiMiT"};
static const struct {
    long min, max, def;
} bounds[4] = {
    {1, 100000000, 1}, /* page */
    {1, 1000, 100},    /* limit of /todos/done/{done} */
    {1, 100, 10},      /* limit of /todos */
    {-5, 5, 0},
};

static int hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* evhttp_decode_uri_internal with '+' as a space, into a C string; returns
 * the bytes decoded (more than its strlen when a NUL was decoded). */
static size_t decode(const char *s, size_t n, char *out)
{
    size_t i, j = 0;

    for (i = 0; i < n; i++) {
        char c = s[i];

        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < n && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
            c = (char)(hex(s[i + 1]) * 16 + hex(s[i + 2]));
            i += 2;
        }
        out[j++] = c;
    }
    out[j] = '\0';
    return j;
}

/* The model: 0 or -1, and *out. */
static int model(const char *q, const char *name, long def, long min, long max, bool clamp,
                 long *out)
{
    const char *p = q, *found = NULL;
    size_t found_len = 0, decoded;
    char *value;
    bool neg;
    uint64_t v = 0;
    const char *d;
    int rc = 0;

    *out = def;
    if (q == NULL || *q == '\0')
        return 0;
    for (;;) {
        const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));

        if (eq == NULL || eq == p)
            return -1; /* malformed, whatever came before */
        if (found == NULL && (size_t)(eq - p) == strlen(name) &&
            strncasecmp(p, name, (size_t)(eq - p)) == 0) {
            found = eq + 1;
            found_len = (size_t)(end - eq - 1);
        }
        if (amp == NULL || amp[1] == '\0')
            break;
        p = amp + 1;
    }
    if (found == NULL)
        return 0;
    value = malloc(found_len + 1);
    CHECK(value != NULL, "out of memory");
    decoded = decode(found, found_len, value);
    neg = value[0] == '-';
    d = value + neg;
    if (strlen(value) != decoded || *d == '\0' || strspn(d, "0123456789") != strlen(d)) {
        rc = -1;
    } else {
        long x;

        for (; *d; d++)
            if (v < 1000000000000000ULL) /* far beyond any bound: saturate */
                v = v * 10 + (uint64_t)(*d - '0');
        x = neg ? -(long)v : (long)v;
        if (x >= min && x <= max)
            *out = x;
        else if (clamp)
            *out = x < min ? min : max;
        else
            rc = -1;
    }
    if (rc != 0)
        *out = def;
    free(value);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *name;
    long min, max, def, got, want;
    char *q = NULL, err[160];
    bool clamp;
    int rc, mrc;

    if (size == 0)
        return 0;
    name = names[data[0] & 3];
    min = bounds[(data[0] >> 2) & 3].min;
    max = bounds[(data[0] >> 2) & 3].max;
    def = bounds[(data[0] >> 2) & 3].def;
    clamp = data[0] & 0x10;
    if (size > 1) {
        q = malloc(size);
        CHECK(q != NULL, "out of memory");
        memcpy(q, data + 1, size - 1);
        q[size - 1] = '\0';
    }
    memset(err, 0x5a, sizeof(err));
    got = 0x5a5a;
    rc = http_query_parse_long(q, name, def, min, max, clamp, &got, err, sizeof(err));
    mrc = model(q, name, def, min, max, clamp, &want);
    CHECK(rc == 0 || rc == -1, "neither 0 nor -1");
    if (rc != mrc || got != want) {
        fprintf(stderr, "fuzz_query: %s=? in \"%s\" [%ld, %ld]%s: got %d/%ld, model %d/%ld\n", name,
                q ? q : "(none)", min, max, clamp ? " clamped" : "", rc, got, mrc, want);
        abort();
    }
    if (rc != 0)
        CHECK(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0', "no message");
    else
        CHECK(got == def || (got >= min && got <= max), "out of bounds");
    free(q);
    return 0;
}
