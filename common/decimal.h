/*
 * Decimal digits without printf: the hot writers (span JSON, timestamps, the
 * performance test's titles) format integers by the million, where snprintf's
 * format parsing costs more than the digits.
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

#endif
