/* json_strict_validate: RFC 8259 exactly, I-JSON duplicate names, depth. */
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

    if (json_strict_validate(s, strlen(s), err, sizeof(err)) != JSON_STRICT_VALID)
        fail_msg("refused %s: %s", s, err);
    assert_string_equal(err, "");
}

static void bad_n(const char *s, size_t n, enum json_strict_error want)
{
    char err[160];
    enum json_strict_error got = json_strict_validate(s, n, err, sizeof(err));

    if (got == JSON_STRICT_VALID)
        fail_msg("accepted %.*s", (int)n, s);
    if (got != want)
        fail_msg("error kind %d (\"%s\") for %.*s, want %d", got, err, (int)n, s, want);
    if (err[0] == '\0')
        fail_msg("no message for %.*s", (int)n, s);
}

static void bad(const char *s, enum json_strict_error want)
{
    bad_n(s, strlen(s), want);
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
    bad("NaN", JSON_STRICT_ERR_CHARACTER);
    bad("{\"n\":Infinity}", JSON_STRICT_ERR_CHARACTER);
    bad("{\"n\":-Infinity}", JSON_STRICT_ERR_NUMBER);
    bad("{'done': true}", JSON_STRICT_ERR_NAME_QUOTES);
    bad("{\"a\":'x'}", JSON_STRICT_ERR_CHARACTER);
    bad("{\"a\":1,}", JSON_STRICT_ERR_NAME_QUOTES);
    bad("[1,2,]", JSON_STRICT_ERR_CHARACTER);
    bad("{\"a\":1} // comment", JSON_STRICT_ERR_TRAILING);
    bad("/* c */ {}", JSON_STRICT_ERR_CHARACTER);
    bad("{done: true}", JSON_STRICT_ERR_NAME_QUOTES);
}

static void number_forms_are_strict(void **state)
{
    bad("1.", JSON_STRICT_ERR_FRACTION);
    bad(".5", JSON_STRICT_ERR_CHARACTER);
    bad("01", JSON_STRICT_ERR_LEADING_ZERO);
    bad("{\"n\":+1}", JSON_STRICT_ERR_CHARACTER);
    bad("1e", JSON_STRICT_ERR_EXPONENT);
    bad("0x10", JSON_STRICT_ERR_TRAILING);
    bad("-", JSON_STRICT_ERR_NUMBER);
    bad("1.5e+", JSON_STRICT_ERR_EXPONENT);
}

static void strings_are_strict(void **state)
{
    bad("{\"title\":\"a\tb\"}", JSON_STRICT_ERR_CONTROL);
    bad("{\"title\":\"a\nb\"}", JSON_STRICT_ERR_CONTROL);
    bad("\"\\x41\"", JSON_STRICT_ERR_ESCAPE);
    bad("\"\\u12\"", JSON_STRICT_ERR_UNICODE_ESCAPE);
    bad("\"abc", JSON_STRICT_ERR_UNTERMINATED);
    bad("\"\\ud800\"", JSON_STRICT_ERR_SURROGATE);
    bad("\"\\udc00\\ud800\"", JSON_STRICT_ERR_SURROGATE);
    bad("\"\\ud800\\u0041\"", JSON_STRICT_ERR_SURROGATE);
    bad("\"\xc3\x28\"", JSON_STRICT_ERR_UTF8);
    bad("\"\xed\xa0\x80\"", JSON_STRICT_ERR_UTF8); /* an encoded surrogate */
}

static void literals_are_exact(void **state)
{
    bad("tru", JSON_STRICT_ERR_LITERAL);
    bad("True", JSON_STRICT_ERR_CHARACTER);
    bad("nul", JSON_STRICT_ERR_LITERAL);
    bad("truex", JSON_STRICT_ERR_TRAILING);
}

static void whole_body_is_one_value(void **state)
{
    bad("", JSON_STRICT_ERR_END);
    bad("   ", JSON_STRICT_ERR_END);
    bad("{} {}", JSON_STRICT_ERR_TRAILING);
    bad("\xef\xbb\xbf{}", JSON_STRICT_ERR_BOM);
    bad_n("{}\0", 3, JSON_STRICT_ERR_TRAILING);
    bad("{\"a\" 1}", JSON_STRICT_ERR_COLON);
    bad("[1 2]", JSON_STRICT_ERR_ARRAY_SEP);
    bad("{\"a\":1 \"b\":2}", JSON_STRICT_ERR_OBJECT_SEP);
}

static void duplicate_member_names_are_refused(void **state)
{
    bad("{\"done\":true,\"done\":false}", JSON_STRICT_ERR_DUPLICATE);
    bad("{\"a\":1,\"b\":2,\"c\":3,\"b\":4}", JSON_STRICT_ERR_DUPLICATE);
    bad("{\"a\":1,\"\\u0061\":2}", JSON_STRICT_ERR_DUPLICATE);
    bad("{\"x\":{\"k\":1,\"k\":2}}", JSON_STRICT_ERR_DUPLICATE);
    /* json-c cuts a name at U+0000: the second would read as "done" again */
    bad("{\"done\":true,\"done\\u0000\":false}", JSON_STRICT_ERR_NAME_NUL);
    bad("{\"\\u0000\":1}", JSON_STRICT_ERR_NAME_NUL);
    bad("{\"ab\":1,\"a\":2,\"b\":3,\"a\\u0000\":4}", JSON_STRICT_ERR_NAME_NUL);
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
    bad(deep, JSON_STRICT_ERR_DEPTH);
}

static void error_names_the_byte(void **state)
{
    char err[160];

    assert_int_equal(json_strict_validate("{\"a\":NaN}", 9, err, sizeof(err)),
                     JSON_STRICT_ERR_CHARACTER);
    assert_string_equal(err, "unexpected character ('N') at byte 5");
    assert_int_equal(json_strict_validate("[1 2]", 5, err, sizeof(err)), JSON_STRICT_ERR_ARRAY_SEP);
    assert_string_equal(err, "expected ',' or ']' in an array ('2') at byte 3");
    /* Invalid UTF-8 is found before parsing starts: no position. */
    assert_int_equal(json_strict_validate("\"\xff\"", 3, err, sizeof(err)), JSON_STRICT_ERR_UTF8);
    assert_string_equal(err, "not valid UTF-8");
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
