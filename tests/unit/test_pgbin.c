/* Binary timestamps written as to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') does.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "pgbin.h"

#define US_PER_DAY 86400000000LL

static void assert_formats(int64_t us, const char *want)
{
    char out[PGBIN_TIMESTAMP_MAX];
    size_t n = pgbin_timestamp(us, out);

    assert_int_equal(n, strlen(want));
    assert_string_equal(out, want);
}

static void the_epoch_and_times_around_it(void **state)
{
    (void)state;
    assert_formats(0, "2000-01-01T00:00:00.000000Z");
    assert_formats(1, "2000-01-01T00:00:00.000001Z");
    assert_formats(-1, "1999-12-31T23:59:59.999999Z");
    assert_formats(US_PER_DAY - 1, "2000-01-01T23:59:59.999999Z");
    assert_formats(-US_PER_DAY, "1999-12-31T00:00:00.000000Z");
    /* 2026-12-01 17:23:36.84113 UTC */
    assert_formats(849461016841130LL, "2026-12-01T17:23:36.841130Z");
}

static void leap_days_and_century_rules(void **state)
{
    (void)state;
    /* 2000 is a leap year (divisible by 400): Feb 29 is day 59 */
    assert_formats(59 * US_PER_DAY, "2000-02-29T00:00:00.000000Z");
    assert_formats(60 * US_PER_DAY, "2000-03-01T00:00:00.000000Z");
    /* 1900 is not (divisible by 100): 1900-03-01 is 36465 days before 2000 */
    assert_formats(-36465 * US_PER_DAY, "1900-03-01T00:00:00.000000Z");
    assert_formats(-36466 * US_PER_DAY, "1900-02-28T00:00:00.000000Z");
    /* 2024-02-29 and the day after */
    assert_formats(8825 * US_PER_DAY, "2024-02-29T00:00:00.000000Z");
    assert_formats(8826 * US_PER_DAY, "2024-03-01T00:00:00.000000Z");
}

static void far_years_as_to_char_writes_them(void **state)
{
    (void)state;
    /* the values are PostgreSQL's own for these timestamps */
    assert_formats(-63082281600000000LL, "0001-01-01T00:00:00.000000Z");
    /* the day before is 1 BC (astronomical year 0): to_char gives 0001 */
    assert_formats(-63082368000000000LL, "0001-12-31T00:00:00.000000Z");
    /* 44 BC (year -43), March 15, noon */
    assert_formats(-64464465600000000LL, "0044-03-15T12:00:00.000000Z");
    /* past 9999: every digit */
    assert_formats(315569520000000000LL, "12000-01-01T00:00:00.000000Z");
    /* PostgreSQL's last timestamp, 294276-12-31 23:59:59.999999 */
    assert_formats(9223371331199999999LL, "294276-12-31T23:59:59.999999Z");
}

static void infinities_are_none(void **state)
{
    char out[PGBIN_TIMESTAMP_MAX];

    (void)state;
    assert_int_equal(pgbin_timestamp(INT64_MAX, out), 0);
    assert_int_equal(pgbin_timestamp(INT64_MIN, out), 0);
    /* outside PostgreSQL's range: none either (no such timestamp exists) */
    assert_int_equal(pgbin_timestamp(9223371331200000000LL, out), 0);
    assert_int_equal(pgbin_timestamp(-211813488000000001LL, out), 0);
    assert_int_equal(pgbin_timestamp(INT64_MAX - 1, out), 0);
    /* its first instant */
    assert_int_equal(pgbin_timestamp(-211813488000000000LL, out), 27);
    assert_string_equal(out, "4714-11-24T00:00:00.000000Z");
}

static void int64_is_big_endian(void **state)
{
    (void)state;
    assert_true(pgbin_int64("\x00\x00\x00\x00\x00\x00\x00\x01") == 1);
    assert_true(pgbin_int64("\xff\xff\xff\xff\xff\xff\xff\xff") == -1);
    assert_true(pgbin_int64("\x7f\xff\xff\xff\xff\xff\xff\xff") == INT64_MAX);
    assert_true(pgbin_int64("\x01\x02\x03\x04\x05\x06\x07\x08") == 0x0102030405060708LL);
}

static void lsns_as_postgresql_prints_and_reads_them(void **state)
{
    char out[PGBIN_LSN_MAX];
    uint64_t lsn = 1;

    (void)state;
    assert_int_equal(pgbin_lsn_format(0x16B3748, out), 9);
    assert_string_equal(out, "0/16B3748");
    assert_int_equal(pgbin_lsn_format(UINT64_MAX, out), 17);
    assert_string_equal(out, "FFFFFFFF/FFFFFFFF");
    assert_true(pgbin_lsn_parse("0/16B3748", 9, &lsn));
    assert_true(lsn == 0x16B3748);
    assert_true(pgbin_lsn_parse("ffffffff/FFFFFFFF", 17, &lsn));
    assert_true(lsn == UINT64_MAX);
    assert_true(pgbin_lsn_parse("1/0", 3, &lsn));
    assert_true(lsn == 1ULL << 32);
    /* not an LSN: empty halves, too many digits, signs, spaces, other bytes */
    static const char *const bad[] = {
        "",     "/",    "0/",   "/0",   "0",    "0/0/0", "123456789/0", "0/123456789",
        "-1/0", "+1/0", "0/ 1", " 0/1", "0/1 ", "0x1/0", "g/0",         "0/1\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_false(pgbin_lsn_parse(bad[i], strlen(bad[i]), &lsn));
    /* the length bounds it: the NUL and what follows are not read */
    assert_false(pgbin_lsn_parse("0/1\0", 4, &lsn));
    assert_true(pgbin_lsn_parse("0/1junk", 3, &lsn));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_epoch_and_times_around_it),
        cmocka_unit_test(leap_days_and_century_rules),
        cmocka_unit_test(far_years_as_to_char_writes_them),
        cmocka_unit_test(infinities_are_none),
        cmocka_unit_test(int64_is_big_endian),
        cmocka_unit_test(lsns_as_postgresql_prints_and_reads_them),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
