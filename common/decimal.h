/*
 * Decimal digits without printf: the hot writers (span JSON, timestamps, the
 * performance test's titles) format integers by the million, where snprintf's
 * format parsing costs more than the digits. And the one small parser the
 * tracer needs, where strtol would accept signs, spaces and overflow.
 */
#ifndef TODOD_DECIMAL_H
#define TODOD_DECIMAL_H

#include <stddef.h>
#include <stdint.h>

#define DECIMAL_U64_MAX 20 /* digits of UINT64_MAX */

/* v in decimal, left-padded with zeros to at least width (<= DECIMAL_U64_MAX)
 * digits, at out (no NUL); returns the digits written. */
static inline size_t decimal_u64(char *out, uint64_t v, size_t width)
{
    char tmp[DECIMAL_U64_MAX];
    size_t len = 0, i;

    do {
        tmp[len++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (len < width && len < sizeof(tmp))
        tmp[len++] = '0';
    for (i = 0; i < len; i++)
        out[i] = tmp[len - 1 - i];
    return len;
}

/* s[0..n) as a number of 1 to 5 digits up to 65535 (a port, a Retry-After
 * delay), or -1 for anything else. */
static inline int decimal_parse_u16(const char *s, size_t n)
{
    int v = 0;
    size_t i;

    if (n == 0 || n > 5)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= 65535 ? v : -1;
}

#endif
