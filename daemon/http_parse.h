/*
 * The pure parsers of a request: its JSON body (strict), its query
 * parameters. No request, no reply: fuzzed (tests/fuzz/fuzz_httpbody.c,
 * tests/fuzz/fuzz_query.c) and used by http.c, which answers what they refuse.
 */
#ifndef TODOD_HTTP_PARSE_H
#define TODOD_HTTP_PARSE_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * A request body as a JSON object, parsed strictly: 0 and *out (the caller
 * puts it), or a status and err: 415 without a JSON Content-Type, 413 over max
 * bytes, 400 malformed (json_strict_validate), 422 not an object.
 */
int http_parse_json_body(const char *content_type, const char *body, size_t len, size_t max,
                         struct json_object **out, char *err, size_t errlen);

/*
 * Query parameter name of query (NULL: none) as an integer: 0 and *out (def
 * when absent; out of [min, max] clamped when clamp), or -1 and err.
 */
int http_query_parse_long(const char *query, const char *name, long def, long min, long max,
                          bool clamp, long *out, char *err, size_t errlen);

/* A query parameter read as text. */
enum http_query_text {
    HTTP_QUERY_ABSENT,    /* no such parameter (and the query string is well formed) */
    HTTP_QUERY_FOUND,     /* its %-decoded value, in a copy the caller frees */
    HTTP_QUERY_NUL,       /* its value decodes to a NUL byte, which the text would hide */
    HTTP_QUERY_MALFORMED, /* the query string is not name=value pairs */
    HTTP_QUERY_NOMEM,     /* no memory for the copy */
};

/* Query parameter name (the first, in any case), as evhttp decodes it ('+' a
 * space): *out is the copy on HTTP_QUERY_FOUND, NULL otherwise. Pure. */
enum http_query_text http_query_parse_text(const char *query, const char *name, char **out);

#endif
