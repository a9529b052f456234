#include "http_parse.h"

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "jsonstrict.h"

/* ---- request bodies ---- */

static bool is_json_content_type(const char *ct)
{
    size_t n = strlen("application/json");

    if (ct == NULL)
        return false;
    ct += strspn(ct, " \t");
    if (strncasecmp(ct, "application/json", n) != 0)
        return false;
    ct += n;
    ct += strspn(ct, " \t");
    return *ct == '\0' || *ct == ';';
}

int http_parse_json_body(const char *content_type, const char *body, size_t len, size_t max,
                         struct json_object **out, char *err, size_t errlen)
{
    struct json_tokener *tok;
    struct json_object *obj;
    char why[160];

    *out = NULL;
    if (!is_json_content_type(content_type)) {
        snprintf(err, errlen, "Content-Type must be application/json");
        return 415;
    }
    if (len > max) {
        snprintf(err, errlen, "request body larger than %zu bytes", max);
        return 413;
    }
    if (len == 0) {
        snprintf(err, errlen, "request body is empty: expected a JSON object");
        return 400;
    }
    switch (json_strict_validate(body, len, why, sizeof(why))) {
    case JSON_STRICT_VALID:
        break;
    case JSON_STRICT_ERR_UTF8:
    case JSON_STRICT_ERR_SURROGATE: /* text no UTF-8 can carry */
        snprintf(err, errlen, "request body is not valid UTF-8: %s", why);
        return 400;
    default:
        snprintf(err, errlen, "malformed JSON: %s", why);
        return 400;
    }
    /* Valid by now; json-c builds the objects. Its depth limit is set past ours. */
    tok = json_tokener_new_ex(JSON_STRICT_MAX_DEPTH + 2);
    if (tok == NULL) {
        snprintf(err, errlen, "internal error");
        return 500;
    }
    obj = json_tokener_parse_ex(tok, body, (int)len);
    /* A number at the very end of the body waits for more input. */
    if (obj == NULL && json_tokener_get_error(tok) == json_tokener_continue)
        obj = json_tokener_parse_ex(tok, "", 1);
    json_tokener_free(tok);
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        snprintf(err, errlen, "request body must be a JSON object");
        return 422;
    }
    *out = obj;
    return 0;
}

/* ---- query strings ---- */

/* Strict decimal: an optional minus sign and digits, nothing else. Values too
 * long to be meaningful saturate instead of overflowing. */
static bool parse_long(const char *s, long *out)
{
    bool neg = *s == '-';
    long v = 0;

    s += neg;
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        if (v < 100000000000000L)
            v = v * 10 + (*s - '0');
    }
    *out = neg ? -v : v;
    return true;
}

/*
 * Whether the value evhttp_find_header() gives for name (the first pair whose
 * key is name, in any case; keys are not decoded) holds a NUL byte: evhttp
 * decodes "%00" into one and the value then looks cut short ("1%00x" as "1").
 */
static bool query_value_has_nul(const char *query, const char *name)
{
    size_t name_len = strlen(name);
    const char *p = query;

    while (*p != '\0') {
        size_t n = strcspn(p, "&");
        const char *eq = memchr(p, '=', n);

        if (eq != NULL && (size_t)(eq - p) == name_len && strncasecmp(p, name, name_len) == 0)
            return memmem(eq + 1, n - name_len - 1, "%00", 3) != NULL;
        p += n;
        if (*p == '&')
            p++;
    }
    return false;
}

int http_query_parse_long(const char *query, const char *name, long def, long min, long max,
                          bool clamp, long *out, char *err, size_t errlen)
{
    struct evkeyvalq args;
    const char *value;
    long v;
    int rc = 0;

    *out = def;
    if (query == NULL)
        return 0;
    TAILQ_INIT(&args);
    if (evhttp_parse_query_str(query, &args) != 0) {
        snprintf(err, errlen, "malformed query string");
        return -1;
    }
    value = evhttp_find_header(&args, name);
    if (value != NULL) {
        if (query_value_has_nul(query, name) || !parse_long(value, &v) ||
            (!clamp && (v < min || v > max))) {
            if (clamp)
                snprintf(err, errlen, "%s must be a whole number", name);
            else
                snprintf(err, errlen, "%s must be a whole number from %ld to %ld", name, min, max);
            rc = -1;
        } else {
            *out = v < min ? min : v > max ? max : v;
        }
    }
    evhttp_clear_headers(&args);
    return rc;
}

enum http_query_text http_query_parse_text(const char *query, const char *name, char **out)
{
    struct evkeyvalq args;
    const char *value;
    enum http_query_text rc = HTTP_QUERY_ABSENT;

    *out = NULL;
    if (query == NULL)
        return HTTP_QUERY_ABSENT;
    TAILQ_INIT(&args);
    if (evhttp_parse_query_str(query, &args) != 0)
        return HTTP_QUERY_MALFORMED;
    value = evhttp_find_header(&args, name);
    if (value != NULL) {
        if (query_value_has_nul(query, name))
            rc = HTTP_QUERY_NUL;
        else if ((*out = strdup(value)) == NULL)
            rc = HTTP_QUERY_NOMEM;
        else
            rc = HTTP_QUERY_FOUND;
    }
    evhttp_clear_headers(&args);
    return rc;
}
