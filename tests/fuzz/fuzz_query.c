/*
 * libFuzzer harness: http_query_parse_long() (daemon/http_parse.c), how GET /todos
 * and GET /todos/done/{done} read page= and limit=; and, when bit 0x20 of byte
 * 0 is set, http_query_parse_text() and the cursor codec (daemon/cursor.c),
 * how GET /todos reads after=.
 *
 * Input: byte 0 chooses the parameter's name, its bounds, its default and
 * whether out-of-range values are clamped (or the cursor mode); the rest is the
 * query string (none when there is no rest; it ends at its first NUL, as
 * evhttp's does). Besides the sanitizers' findings (and LeakSanitizer's) it
 * compares every answer with an independent model of the rules:
 * - the query string is split the way libevent 2.1 does (evhttp_parse_query_str:
 *   '&'-separated name=value pairs, a pair without '=' or with an empty name
 *   makes the whole string malformed; the value is %-decoded, '+' is a space);
 *   the first pair whose name matches, in any case, is the parameter;
 * - the value is an optional '-' and decimal digits, nothing else (a decoded
 *   NUL is refused: evhttp's C string would end there); out of the bounds it
 *   is clamped or refused;
 * - refused: -1, a message, and the default in *out; absent: 0 and the default.
 * In the cursor mode, after the same split and decoding (a decoded NUL is
 * HTTP_QUERY_NUL), the value is decoded by cursor_decode() and by a model of
 * the layout in cursor.h (its own base64url, CRC-32 and PostgreSQL's range),
 * which must agree on the verdict and the key; every accepted string encodes
 * back to itself; and a key made of the input's bytes encodes to a string that
 * both decode back to that key exactly when the key is valid.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cursor.h"
#include "http_parse.h"

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

/* ---- the cursor mode ---- */

#define CURSOR_MODE 0x20

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* CRC-32 (zlib's), from a table built on first use. */
static uint32_t model_crc32(const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    uint32_t crc = 0xffffffffu;
    size_t i;

    if (table[1] == 0)
        for (i = 0; i < 256; i++) {
            uint32_t c = (uint32_t)i;
            int k;

            for (k = 0; k < 8; k++)
                c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    for (i = 0; i < n; i++)
        crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return crc ^ 0xffffffffu;
}

static bool model_time_valid(int64_t t)
{
    return t == INT64_MIN || t == INT64_MAX ||
           (t >= -211813488000000000LL && t < 9223371331200000000LL);
}

/* The layout of cursor.h read bit by bit: the verdict, and the key on CURSOR_OK. */
static enum cursor_err model_decode(const char *s, size_t len, struct cursor_key *k)
{
    uint8_t raw[30] = {0};
    uint64_t t = 0;
    uint32_t crc;
    size_t i;
    int b;

    if (len != 40)
        return CURSOR_ERR_LENGTH;
    for (i = 0; i < 40; i++) {
        const char *at = s[i] != '\0' ? strchr(b64url, s[i]) : NULL;

        if (at == NULL)
            return CURSOR_ERR_ALPHABET;
        for (b = 5; b >= 0; b--) /* bit 6 * i + (5 - b) of the 240 */
            if ((at - b64url) >> b & 1)
                raw[(6 * i + 5 - b) / 8] |= (uint8_t)(0x80 >> ((6 * i + 5 - b) % 8));
    }
    if (raw[0] != 1)
        return CURSOR_ERR_VERSION;
    crc = (uint32_t)raw[26] | (uint32_t)raw[27] << 8 | (uint32_t)raw[28] << 16 |
          (uint32_t)raw[29] << 24;
    if (crc != model_crc32(raw, 26))
        return CURSOR_ERR_CHECK;
    for (i = 2; i < 10; i++)
        t = t << 8 | raw[i];
    if (raw[1] > 1 || (raw[1] == 1 && t != 0) || !model_time_valid((int64_t)t))
        return CURSOR_ERR_KEY;
    k->created_null = raw[1] == 1;
    k->created_at = (int64_t)t;
    memcpy(k->id, raw + 10, 16);
    return CURSOR_OK;
}

static bool same_key(const struct cursor_key *a, const struct cursor_key *b)
{
    return a->created_null == b->created_null && a->created_at == b->created_at &&
           memcmp(a->id, b->id, 16) == 0;
}

/* The model of http_query_parse_text(): the value of the first pair named name. */
static enum http_query_text model_text(const char *q, const char *name, char **out)
{
    const char *p = q, *found = NULL;
    size_t found_len = 0, decoded;

    *out = NULL;
    if (q == NULL || *q == '\0')
        return HTTP_QUERY_ABSENT;
    for (;;) {
        const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));

        if (eq == NULL || eq == p)
            return HTTP_QUERY_MALFORMED;
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
        return HTTP_QUERY_ABSENT;
    *out = malloc(found_len + 1);
    CHECK(*out != NULL, "out of memory");
    decoded = decode(found, found_len, *out);
    if (strlen(*out) != decoded) {
        free(*out);
        *out = NULL;
        return HTTP_QUERY_NUL;
    }
    return HTTP_QUERY_FOUND;
}

static void fuzz_cursor(const uint8_t *data, size_t size, const char *q)
{
    const char *name = (data[0] & 1) ? "AfTeR" : "after";
    enum http_query_text rc, mrc;
    char *value = NULL, *want = NULL, again[CURSOR_LEN + 1];
    struct cursor_key k, mk;
    enum cursor_err err, merr;

    rc = http_query_parse_text(q, name, &value);
    mrc = model_text(q, name, &want);
    if (rc != mrc || (value == NULL) != (want == NULL) ||
        (value != NULL && strcmp(value, want) != 0)) {
        fprintf(stderr, "fuzz_query: %s as text in \"%s\": got %d \"%s\", model %d \"%s\"\n", name,
                q ? q : "(none)", rc, value ? value : "", mrc, want ? want : "");
        abort();
    }
    if (rc == HTTP_QUERY_FOUND) {
        memset(&k, 0x5a, sizeof(k));
        err = cursor_decode(value, strlen(value), &k);
        merr = model_decode(value, strlen(value), &mk);
        if (err != merr || (err == CURSOR_OK && !same_key(&k, &mk))) {
            fprintf(stderr, "fuzz_query: cursor \"%s\": got %d, model %d\n", value, err, merr);
            abort();
        }
        if (err == CURSOR_OK) {
            cursor_encode(&k, again);
            CHECK(strcmp(again, value) == 0, "an accepted cursor does not encode back to itself");
        }
    }
    free(value);
    free(want);
    /* A key from the input's bytes: encoded, it decodes back exactly when valid. */
    if (size >= 26) {
        struct cursor_key in = {data[1] & 1, 0, {0}};
        uint64_t t = 0;
        size_t i;

        for (i = 2; i < 10; i++)
            t = t << 8 | data[i];
        in.created_at = (data[1] & 2) ? 0 : (int64_t)t;
        memcpy(in.id, data + 10, 16);
        cursor_encode(&in, again);
        CHECK(strlen(again) == CURSOR_LEN && strspn(again, b64url) == CURSOR_LEN,
              "an encoded cursor is not 40 base64url characters");
        merr = model_decode(again, CURSOR_LEN, &mk);
        err = cursor_decode(again, CURSOR_LEN, &k);
        if (err != merr || (err == CURSOR_OK && !same_key(&k, &mk)) ||
            (merr == CURSOR_OK) !=
                (model_time_valid(in.created_at) && (!in.created_null || in.created_at == 0)) ||
            (merr != CURSOR_OK && merr != CURSOR_ERR_KEY) ||
            (merr == CURSOR_OK && !same_key(&in, &mk))) {
            fprintf(stderr, "fuzz_query: key (%d, %lld) encodes to \"%s\", model %d\n",
                    in.created_null, (long long)in.created_at, again, merr);
            abort();
        }
    }
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
    if (data[0] & CURSOR_MODE) {
        if (size > 1) {
            q = malloc(size);
            CHECK(q != NULL, "out of memory");
            memcpy(q, data + 1, size - 1);
            q[size - 1] = '\0';
        }
        fuzz_cursor(data, size, q);
        free(q);
        return 0;
    }
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
