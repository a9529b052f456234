/* UTF-8 validation and length: what the title checks rely on. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "utf8.h"

static bool valid(const char *s)
{
    return utf8_valid(s, strlen(s));
}

static void ascii_and_multibyte_sequences_are_valid(void **state)
{
    (void)state;
    assert_true(valid(""));
    assert_true(valid("buy milk"));
    assert_true(valid("caf\xc3\xa9"));      /* é, 2 bytes */
    assert_true(valid("\xe2\x82\xac"));     /* €, 3 bytes */
    assert_true(valid("\xf0\x9f\x98\x80")); /* 😀, 4 bytes */
    assert_true(valid("\xf4\x8f\xbf\xbf")); /* U+10FFFF */
}

static void malformed_sequences_are_invalid(void **state)
{
    (void)state;
    assert_false(valid("\x80"));     /* lone continuation byte */
    assert_false(valid("\xc3"));     /* truncated */
    assert_false(valid("\xe2\x82")); /* truncated */
    assert_false(valid("\xc3\x28")); /* bad continuation */
    assert_false(valid("\xff"));
    assert_false(valid("\xfe"));
}

static void overlong_surrogate_and_out_of_range_forms_are_invalid(void **state)
{
    (void)state;
    assert_false(valid("\xc0\xaf")); /* overlong '/' */
    assert_false(valid("\xc1\xbf"));
    assert_false(valid("\xe0\x80\xaf"));     /* overlong, 3 bytes */
    assert_false(valid("\xf0\x80\x80\xaf")); /* overlong, 4 bytes */
    assert_false(valid("\xed\xa0\x80"));     /* U+D800 surrogate */
    assert_false(valid("\xed\xbf\xbf"));     /* U+DFFF surrogate */
    assert_false(valid("\xf4\x90\x80\x80")); /* U+110000 */
    assert_false(valid("\xf5\x80\x80\x80"));
}

static void embedded_nul_is_valid_utf8(void **state)
{
    (void)state;
    /* U+0000 is valid UTF-8; the title check refuses it separately. */
    assert_true(utf8_valid("a\0b", 3));
}

static void length_counts_code_points_not_bytes(void **state)
{
    (void)state;
    assert_int_equal(utf8_length("", 0), 0);
    assert_int_equal(utf8_length("abc", 3), 3);
    assert_int_equal(utf8_length("caf\xc3\xa9", 5), 4);
    assert_int_equal(utf8_length("\xf0\x9f\x98\x80\xf0\x9f\x98\x80", 8), 2);
    assert_int_equal(utf8_length("\xe2\x82\xac!", 4), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ascii_and_multibyte_sequences_are_valid),
        cmocka_unit_test(malformed_sequences_are_invalid),
        cmocka_unit_test(overlong_surrogate_and_out_of_range_forms_are_invalid),
        cmocka_unit_test(embedded_nul_is_valid_utf8),
        cmocka_unit_test(length_counts_code_points_not_bytes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
