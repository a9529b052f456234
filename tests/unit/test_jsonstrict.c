/* json_strict_check: RFC 8259 exactly, I-JSON duplicate names, depth. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "jsonstrict.h"

static void ok(const char *s)
{
    char err[160];

    if (!json_strict_check(s, strlen(s), err, sizeof(err)))
        fail_msg("refused %s: %s", s, err);
}

static void bad_n(const char *s, size_t n, const char *fragment)
{
    char err[160];

    if (json_strict_check(s, n, err, sizeof(err)))
        fail_msg("accepted %.*s", (int)n, s);
    if (strstr(err, fragment) == NULL)
        fail_msg("error \"%s\" for %.*s lacks \"%s\"", err, (int)n, s, fragment);
}

static void bad(const char *s, const char *fragment)
{
    bad_n(s, strlen(s), fragment);
}

static void valid_documents_pass(void **state)
{
    ok("{}");
    ok("[]");
    ok(" {\"title\":\"buy milk\",\"done\":false} \r\n\t");
    ok("{\"a\":[1,-2,3.5,0,-0,1e10,1E-3,2.5e+2,null,true,false,\"\",{}]}");
    ok("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\ud83d\\ude00\"");
    ok("{\"t\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}");
    ok("0");
    ok("null");
    ok("{\"a\":{\"a\":{\"a\":1}},\"b\":{\"a\":2}}"); /* same name in different objects */
}

static void javascript_extensions_are_refused(void **state)
{
    bad("NaN", "unexpected character");
    bad("{\"n\":Infinity}", "unexpected character");
    bad("{\"n\":-Infinity}", "invalid number");
    bad("{'done': true}", "member name in double quotes");
    bad("{\"a\":'x'}", "unexpected character");
    bad("{\"a\":1,}", "member name");
    bad("[1,2,]", "unexpected character");
    bad("{\"a\":1} // comment", "after the value");
    bad("/* c */ {}", "unexpected character");
    bad("{done: true}", "member name in double quotes");
}

static void number_forms_are_strict(void **state)
{
    bad("1.", "follow the decimal point");
    bad(".5", "unexpected character");
    bad("01", "leading zero");
    bad("{\"n\":+1}", "unexpected character");
    bad("1e", "follow the exponent");
    bad("0x10", "after the value");
    bad("-", "invalid number");
    bad("1.5e+", "follow the exponent");
}

static void strings_are_strict(void **state)
{
    bad("{\"title\":\"a\tb\"}", "unescaped control character");
    bad("{\"title\":\"a\nb\"}", "unescaped control character");
    bad("\"\\x41\"", "invalid escape");
    bad("\"\\u12\"", "invalid \\u escape");
    bad("\"abc", "unterminated string");
    bad("\"\\ud800\"", "unpaired UTF-16 surrogate");
    bad("\"\\udc00\\ud800\"", "unpaired UTF-16 surrogate");
    bad("\"\\ud800\\u0041\"", "unpaired UTF-16 surrogate");
    bad("\"\xc3\x28\"", "not valid UTF-8");
    bad("\"\xed\xa0\x80\"", "not valid UTF-8"); /* an encoded surrogate */
}

static void literals_are_exact(void **state)
{
    bad("tru", "invalid literal");
    bad("True", "unexpected character");
    bad("nul", "invalid literal");
    bad("truex", "after the value");
}

static void whole_body_is_one_value(void **state)
{
    bad("", "unexpected end of data");
    bad("   ", "unexpected end of data");
    bad("{} {}", "after the value");
    bad("\xef\xbb\xbf{}", "byte-order mark");
    bad_n("{}\0", 3, "after the value");
    bad("{\"a\" 1}", "expected ':'");
    bad("{\"a\":1 \"b\":2}", "expected ',' or '}'");
}

static void duplicate_member_names_are_refused(void **state)
{
    bad("{\"done\":true,\"done\":false}", "duplicate member name");
    bad("{\"a\":1,\"b\":2,\"c\":3,\"b\":4}", "duplicate member name");
    bad("{\"a\":1,\"\\u0061\":2}", "duplicate member name");
    bad("{\"x\":{\"k\":1,\"k\":2}}", "duplicate member name");
    /* json-c cuts a name at U+0000: the second would read as "done" again */
    bad("{\"done\":true,\"done\\u0000\":false}", "\\u0000");
    bad("{\"\\u0000\":1}", "\\u0000");
    bad("{\"ab\":1,\"a\":2,\"b\":3,\"a\\u0000\":4}", "\\u0000");
    ok("{\"ab\":1,\"a\":2,\"b\":3,\"a\\u0001\":4}");
}

static void nesting_is_bounded(void **state)
{
    char deep[200];
    int i;

    for (i = 0; i < 32; i++)
        deep[i] = '[';
    for (i = 0; i < 32; i++)
        deep[32 + i] = ']';
    deep[64] = '\0';
    ok(deep);
    for (i = 0; i < 33; i++)
        deep[i] = '[';
    for (i = 0; i < 33; i++)
        deep[33 + i] = ']';
    deep[66] = '\0';
    bad(deep, "deeper than 32");
}

static void error_names_the_byte(void **state)
{
    char err[160];

    assert_false(json_strict_check("{\"a\":NaN}", 9, err, sizeof(err)));
    assert_string_equal(err, "unexpected character ('N') at byte 5");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_documents_pass),
        cmocka_unit_test(javascript_extensions_are_refused),
        cmocka_unit_test(number_forms_are_strict),
        cmocka_unit_test(strings_are_strict),
        cmocka_unit_test(literals_are_exact),
        cmocka_unit_test(whole_body_is_one_value),
        cmocka_unit_test(duplicate_member_names_are_refused),
        cmocka_unit_test(nesting_is_bounded),
        cmocka_unit_test(error_names_the_byte),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
