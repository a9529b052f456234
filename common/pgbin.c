#include "pgbin.h"

#include <stdio.h>

#include "decimal.h"

#define US_PER_DAY       86400000000LL
#define DAYS_1970_2000   10957 /* days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01 */
#define PG_TIMESTAMP_MIN -211813488000000000LL /* 4714-11-24 00:00:00 BC */
#define PG_TIMESTAMP_END 9223371331200000000LL /* 294277-01-01 00:00:00 */

int64_t pgbin_int64(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = v << 8 | u[i];
    return (int64_t)v;
}

bool pgbin_timestamp_valid(int64_t us)
{
    return (us >= PG_TIMESTAMP_MIN && us < PG_TIMESTAMP_END) || us == INT64_MIN || us == INT64_MAX;
}

/* The proleptic Gregorian date of a day number (days since 1970-01-01), after
 * Howard Hinnant's civil_from_days. */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    yoe = z - era * 146097;                                      /* [0, 146096] */
    yoe = (yoe - yoe / 1460 + yoe / 36524 - yoe / 146096) / 365; /* [0, 399] */
    doy = z - era * 146097 - (365 * yoe + yoe / 4 - yoe / 100);  /* [0, 365] */
    mp = (5 * doy + 2) / 153;                                    /* [0, 11] */
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

size_t pgbin_timestamp(int64_t us, char out[PGBIN_TIMESTAMP_MAX])
{
    int64_t days, rem, y;
    unsigned m, d;
    uint64_t secs;
    size_t n = 0;

    /* PostgreSQL's range: 4714-11-24 BC to 294276-12-31; beyond it, the
     * infinities (and nothing a server would send, nor text that would fit). */
    if (us < PG_TIMESTAMP_MIN || us >= PG_TIMESTAMP_END)
        return 0;
    days = us / US_PER_DAY;
    rem = us % US_PER_DAY;
    if (rem < 0) {
        rem += US_PER_DAY;
        days--;
    }
    civil_from_days(days + DAYS_1970_2000, &y, &m, &d);
    n += decimal_u64(out + n, (uint64_t)(y > 0 ? y : 1 - y), 4);
    out[n++] = '-';
    n += decimal_u64(out + n, m, 2);
    out[n++] = '-';
    n += decimal_u64(out + n, d, 2);
    out[n++] = 'T';
    secs = (uint64_t)rem / 1000000;
    n += decimal_u64(out + n, secs / 3600, 2);
    out[n++] = ':';
    n += decimal_u64(out + n, secs / 60 % 60, 2);
    out[n++] = ':';
    n += decimal_u64(out + n, secs % 60, 2);
    out[n++] = '.';
    n += decimal_u64(out + n, (uint64_t)rem % 1000000, 6);
    out[n++] = 'Z';
    out[n] = '\0';
    return n;
}

size_t pgbin_lsn_format(uint64_t lsn, char out[PGBIN_LSN_MAX])
{
    return (size_t)snprintf(out, PGBIN_LSN_MAX, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
}

/* One group of 1 to 8 hex digits at text[*at], up to stop. */
static bool lsn_half(const char *text, size_t *at, size_t stop, uint32_t *out)
{
    size_t start = *at;

    *out = 0;
    for (; *at < stop; (*at)++) {
        char c = text[*at];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;

        if (d < 0)
            break;
        if (*at - start == 8)
            return false;
        *out = *out << 4 | (uint32_t)d;
    }
    return *at > start;
}

bool pgbin_lsn_parse(const char *text, size_t len, uint64_t *lsn)
{
    size_t at = 0;
    uint32_t hi, lo;

    if (!lsn_half(text, &at, len, &hi) || at >= len || text[at++] != '/' ||
        !lsn_half(text, &at, len, &lo) || at != len)
        return false;
    *lsn = (uint64_t)hi << 32 | lo;
    return true;
}
