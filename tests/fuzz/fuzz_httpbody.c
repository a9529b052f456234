/*
 * libFuzzer harness: http_parse_json_body() (daemon/http_parse.c), what POST /todos,
 * PUT /todos/{id} and POST /todos/performance-test do with a request's
 * Content-Type and body.
 *
 * Input: the Content-Type up to the first '\n' (none when the input has no
 * '\n'), then the body. Besides the sanitizers' findings (and LeakSanitizer's:
 * every json-c object is released) it checks:
 * - the status is 0, 400, 413, 415 or 422 with a message, and the object is
 *   returned exactly with 0 and is then a JSON object;
 * - 415 exactly when the Content-Type is not application/json (an independent
 *   reading: optional whitespace, the media type in any case, optional
 *   whitespace, then the end or parameters);
 * - 413 exactly when the body is over the limit (also tried at one byte under
 *   the body's length);
 * - otherwise, against json_strict_validate(): 400 exactly when it refuses the
 *   body, 422 exactly when it accepts a value that is not an object; json-c must
 *   build every object json_strict_validate() accepts.
 */
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_parse.h"
#include "jsonstrict.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_BODY (1024 * 1024) /* max_body_size's default */

#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_httpbody: %s\n", what);                                          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool json_media_type(const char *ct)
{
    static const char type[] = "application/json";
    size_t i = 0;

    if (ct == NULL)
        return false;
    while (ct[i] == ' ' || ct[i] == '\t')
        i++;
    if (strncasecmp(ct + i, type, sizeof(type) - 1) != 0)
        return false;
    i += sizeof(type) - 1;
    while (ct[i] == ' ' || ct[i] == '\t')
        i++;
    return ct[i] == '\0' || ct[i] == ';';
}

/* The first non-whitespace byte of the body. */
static char first_byte(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return s[i];
    return '\0';
}

/* json-c's member count agrees with a walk over the members. */
static void check_object(struct json_object *obj)
{
    struct json_object_iterator it = json_object_iter_begin(obj), end = json_object_iter_end(obj);
    int n = 0;

    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it))
        n++;
    CHECK(n == json_object_object_length(obj), "member count");
}

static int parse(const char *ct, const char *body, size_t len, size_t max, struct json_object **out,
                 char *err, size_t errlen)
{
    int st;

    memset(err, 0x5a, errlen);
    *out = (struct json_object *)(uintptr_t)1; /* must be overwritten */
    st = http_parse_json_body(ct, body, len, max, out, err, errlen);
    CHECK(st == 0 || st == 400 || st == 413 || st == 415 || st == 422, "unexpected status");
    CHECK((st == 0) == (*out != NULL), "an object without success, or none with it");
    if (st != 0)
        CHECK(memchr(err, '\0', errlen) != NULL && err[0] != '\0', "no message with an error");
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    char *ct = NULL, *body, err[256], why[160];
    size_t len;
    struct json_object *obj;
    bool strict;
    int st;

    if (nl != NULL) {
        size_t ctlen = (size_t)(nl - (const char *)data);

        ct = malloc(ctlen + 1);
        CHECK(ct != NULL, "out of memory");
        memcpy(ct, data, ctlen);
        ct[ctlen] = '\0'; /* a header value ends at its first NUL, as in libevent */
        data += ctlen + 1;
        size -= ctlen + 1;
    }
    /* The body in a buffer of its own size, so that ASan sees any overread. */
    len = size;
    body = malloc(len ? len : 1);
    CHECK(body != NULL, "out of memory");
    memcpy(body, data, len);

    st = parse(ct, body, len, MAX_BODY, &obj, err, sizeof(err));
    if (!json_media_type(ct)) {
        CHECK(st == 415, "a Content-Type not application/json accepted");
        goto done;
    }
    CHECK(st != 415, "application/json refused");
    CHECK((st == 413) == (len > MAX_BODY), "413 or not");
    if (len > 0) {
        struct json_object *none;

        CHECK(parse(ct, body, len, len - 1, &none, err, sizeof(err)) == 413,
              "a body one byte over the limit not refused");
    }
    if (len == 0) {
        CHECK(st == 400, "an empty body not refused");
        goto done;
    }
    strict = json_strict_validate(body, len, why, sizeof(why)) == JSON_STRICT_VALID;
    if (!strict) {
        CHECK(st == 400, "a body json_strict_validate refuses not refused with 400");
    } else if (first_byte(body, len) != '{') {
        CHECK(st == 422, "a JSON value that is not an object not refused with 422");
    } else {
        CHECK(st == 0, "json-c failed on an object json_strict_validate accepts");
        CHECK(json_object_is_type(obj, json_type_object), "not an object");
        check_object(obj);
    }
done:
    json_object_put(obj);
    free(body);
    free(ct);
    return 0;
}
