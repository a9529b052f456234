#include "trace_context.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define TRACEPARENT_LEN      55 /* version 00: "00-" 32 "-" 16 "-" 2 */
#define TRACESTATE_MEMBERS   32
#define TRACESTATE_KEY_MAX   256
#define TRACESTATE_VALUE_MAX 256

/* ---- hex ---- */

static const char hex_digits[] = "0123456789abcdef";

void trace_hex_encode(const uint8_t *in, size_t n, char *out)
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

bool trace_all_zero(const uint8_t *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (b[i] != 0)
            return false;
    return true;
}

bool trace_is_ows(char c)
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
    while (trace_is_ows(*tp))
        tp++;
    len = strlen(tp);
    while (len > 0 && trace_is_ows(tp[len - 1]))
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
    if (trace_all_zero(trace_id, TRACE_ID_SIZE) || trace_all_zero(span_id, TRACE_SPAN_ID_SIZE))
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
        while (i < len && trace_is_ows(ts[i]))
            i++;
        start = i;
        while (i < len && ts[i] != ',')
            i++;
        end = i;
        while (end > start && trace_is_ows(ts[end - 1]))
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
        trace_hex_encode(ctx->trace_id, TRACE_ID_SIZE, out);
}

/* ---- ids ---- */

/* xoshiro256** (Blackman and Vigna). */

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t trace_rng_next(struct trace_rng *r)
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

void trace_rng_seed(struct trace_rng *r)
{
    ssize_t n = getrandom(r->s, sizeof(r->s), GRND_NONBLOCK);

    /* Early in boot the kernel may not have entropy yet: do not wait for it. */
    if (n != (ssize_t)sizeof(r->s) || trace_all_zero((const uint8_t *)r->s, sizeof(r->s))) {
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
void trace_rng_id(struct trace_rng *r, uint8_t *out, size_t n)
{
    do {
        size_t i;

        for (i = 0; i < n; i += 8) {
            uint64_t v = trace_rng_next(r);

            memcpy(out + i, &v, n - i < 8 ? n - i : 8);
        }
    } while (trace_all_zero(out, n));
}
