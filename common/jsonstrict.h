/*
 * Strict JSON: RFC 8259 exactly, plus I-JSON's (RFC 7493) rule that an object
 * has no member name twice. Checked before json-c parses a request body, since
 * json-c accepts NaN, Infinity, single-quoted strings, comments, raw control
 * characters in strings and more. Pure code, fuzzed and unit-tested alone.
 */
#ifndef TODOD_JSONSTRICT_H
#define TODOD_JSONSTRICT_H

#include <stddef.h>

#define JSON_STRICT_MAX_DEPTH 32

/*
 * The ways a document fails the check, one row each: the kind and its message.
 * Callers act on the kind; the message is for people.
 */
/* clang-format off */
#define JSON_STRICT_ERRORS(X)                                                                      \
    X(JSON_STRICT_ERR_BOM,            "a byte-order mark before the value")                        \
    X(JSON_STRICT_ERR_UTF8,           "not valid UTF-8")                                           \
    X(JSON_STRICT_ERR_END,            "unexpected end of data")                                    \
    X(JSON_STRICT_ERR_CHARACTER,      "unexpected character")                                      \
    X(JSON_STRICT_ERR_TRAILING,       "unexpected data after the value")                           \
    X(JSON_STRICT_ERR_DEPTH,          "nested deeper than 32 levels")                              \
    X(JSON_STRICT_ERR_LITERAL,        "invalid literal")                                           \
    X(JSON_STRICT_ERR_LEADING_ZERO,   "leading zero in a number")                                  \
    X(JSON_STRICT_ERR_NUMBER,         "invalid number")                                            \
    X(JSON_STRICT_ERR_FRACTION,       "invalid number: digits must follow the decimal point")      \
    X(JSON_STRICT_ERR_EXPONENT,       "invalid number: digits must follow the exponent")           \
    X(JSON_STRICT_ERR_UNTERMINATED,   "unterminated string")                                       \
    X(JSON_STRICT_ERR_CONTROL,        "unescaped control character in a string")                   \
    X(JSON_STRICT_ERR_ESCAPE,         "invalid escape in a string")                                \
    X(JSON_STRICT_ERR_UNICODE_ESCAPE, "invalid \\u escape")                                        \
    X(JSON_STRICT_ERR_SURROGATE,      "a \\u escape of an unpaired UTF-16 surrogate")              \
    X(JSON_STRICT_ERR_NAME_QUOTES,    "expected a member name in double quotes")                   \
    X(JSON_STRICT_ERR_NAME_NUL,       "a member name holding \\u0000")                             \
    X(JSON_STRICT_ERR_COLON,          "expected ':' after a member name")                          \
    X(JSON_STRICT_ERR_OBJECT_SEP,     "expected ',' or '}' in an object")                          \
    X(JSON_STRICT_ERR_ARRAY_SEP,      "expected ',' or ']' in an array")                           \
    X(JSON_STRICT_ERR_DUPLICATE,      "duplicate member name in an object")                        \
    X(JSON_STRICT_ERR_NOMEM,          "out of memory")
/* clang-format on */

#define JSON_STRICT_ERROR_KIND(kind, message) kind,
enum json_strict_error { JSON_STRICT_VALID, JSON_STRICT_ERRORS(JSON_STRICT_ERROR_KIND) };
#undef JSON_STRICT_ERROR_KIND

/*
 * JSON_STRICT_VALID when s[0..n) is one JSON value with optional surrounding
 * whitespace, valid UTF-8, no lone surrogate escapes, nested at most
 * JSON_STRICT_MAX_DEPTH deep, and no duplicate member names. Otherwise the
 * first error found, and err says what is wrong and where ("unexpected
 * character ('N') at byte 9"); err is "" when the document is valid.
 */
enum json_strict_error json_strict_validate(const char *s, size_t n, char *err, size_t errlen);

#endif
