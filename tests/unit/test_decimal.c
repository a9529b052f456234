/* decimal_u64: the digits printf("%0*llu") would write, without the NUL. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "decimal.h"

static void assert_as_printf(uint64_t v, size_t width)
{
    char got[DECIMAL_U64_MAX + 1], want[DECIMAL_U64_MAX + 8];
    size_t n;

    memset(got, 'x', sizeof(got));
    n = decimal_u64(got, v, width);
    snprintf(want, sizeof(want), "%0*llu", (int)width, (unsigned long long)v);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(got, want, n);
    assert_int_equal(got[n], 'x'); /* nothing past the digits */
}

static void zero_and_the_ends_of_the_range(void **state)
{
    (void)state;
    assert_as_printf(0, 0);
    assert_as_printf(9, 0);
    assert_as_printf(10, 0);
    assert_as_printf(UINT64_MAX, 0);
    assert_as_printf(UINT64_MAX / 10, 0);
    assert_as_printf(1000000000000000000ULL, 0);
}

static void padding_to_a_width(void **state)
{
    (void)state;
    assert_as_printf(0, 4);
    assert_as_printf(7, 2);
    assert_as_printf(12345, 2); /* wider than asked: all the digits */
    assert_as_printf(1, DECIMAL_U64_MAX);
}

static void every_power_of_ten_and_its_neighbours(void **state)
{
    uint64_t p = 1;

    (void)state;
    for (int i = 0; i < 20; i++, p *= 10) {
        assert_as_printf(p - 1, 0);
        assert_as_printf(p, 0);
        assert_as_printf(p + 1, 3);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(zero_and_the_ends_of_the_range),
        cmocka_unit_test(padding_to_a_width),
        cmocka_unit_test(every_power_of_ten_and_its_neighbours),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
