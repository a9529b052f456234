/*
 * Strict JSON: RFC 8259 exactly, plus I-JSON's (RFC 7493) rule that an object
 * has no member name twice. Checked before json-c parses a request body, since
 * json-c accepts NaN, Infinity, single-quoted strings, comments, raw control
 * characters in strings and more. Pure code, fuzzed and unit-tested alone.
 */
#ifndef TODOD_JSONSTRICT_H
#define TODOD_JSONSTRICT_H

#include <stdbool.h>
#include <stddef.h>

#define JSON_STRICT_MAX_DEPTH 32

/*
 * true when s[0..n) is one JSON value with optional surrounding whitespace,
 * valid UTF-8, no lone surrogate escapes, nested at most JSON_STRICT_MAX_DEPTH
 * deep, and no duplicate member names. Otherwise false, and err says what is
 * wrong and where ("unexpected character 'N' at byte 9").
 */
bool json_strict_check(const char *s, size_t n, char *err, size_t errlen);

#endif
