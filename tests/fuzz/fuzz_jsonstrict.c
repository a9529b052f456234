/*
 * libFuzzer harness: json_strict_validate() (common/jsonstrict.c), which every
 * request body passes before json-c parses it. Besides the sanitizers' findings
 * it checks:
 * - a rejection says why, in a terminated message that fits the buffer given
 *   (also one of 0 and 1 bytes), and its kind does not depend on that buffer;
 * - differentially: whatever json_strict_validate() accepts, json-c's tokener in
 *   its strict mode (JSON_TOKENER_STRICT, with UTF-8 validation) accepts too, as
 *   one value followed by nothing but whitespace;
 * - what it accepts has no byte-order mark, no raw control character and is
 *   valid UTF-8.
 */
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonstrict.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_jsonstrict: %s\n", what);                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool only_whitespace(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return false;
    return true;
}

/* json-c, strictly: one value, then only whitespace. */
static bool json_c_accepts(const char *s, size_t n)
{
    struct json_tokener *tok;
    struct json_object *obj;
    enum json_tokener_error e;
    bool ok;
    size_t used;

    if (n > INT32_MAX)
        return false;
    /* Depth: one more than ours, so that depth is not what is compared. */
    tok = json_tokener_new_ex(JSON_STRICT_MAX_DEPTH + 1);
    CHECK(tok != NULL, "out of memory");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    obj = json_tokener_parse_ex(tok, s, (int)n);
    e = json_tokener_get_error(tok);
    if (obj == NULL && e == json_tokener_continue) {
        /* A number at the very end waits for more input: end it. */
        obj = json_tokener_parse_ex(tok, "", 1);
        e = json_tokener_get_error(tok);
        used = n;
    } else {
        used = json_tokener_get_parse_end(tok);
    }
    ok = e == json_tokener_success && used <= n && only_whitespace(s + used, n - used);
    json_object_put(obj);
    json_tokener_free(tok);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char err[160], *tiny = malloc(1), *none = malloc(0);
    enum json_strict_error kind;
    bool ok;
    size_t i;

    CHECK(tiny != NULL && none != NULL, "out of memory");
    memset(err, 0x5a, sizeof(err));
    kind = json_strict_validate(s, size, err, sizeof(err));
    ok = kind == JSON_STRICT_VALID;
    CHECK(memchr(err, '\0', sizeof(err)) != NULL, "message not terminated");
    CHECK(ok == (err[0] == '\0'), "a message with an acceptance, or none with a rejection");
    /* Smaller buffers: the same answer, never written past. */
    CHECK(json_strict_validate(s, size, tiny, 1) == kind && tiny[0] == '\0',
          "a 1-byte message buffer");
    CHECK(json_strict_validate(s, size, none, 0) == kind, "a 0-byte message buffer");
    free(tiny);
    free(none);
    if (!ok)
        return 0;

    CHECK(utf8_valid(s, size), "accepted invalid UTF-8");
    CHECK(size < 3 || memcmp(s, "\xef\xbb\xbf", 3) != 0, "accepted a byte-order mark");
    for (i = 0; i < size; i++)
        CHECK((unsigned char)s[i] >= 0x20 || s[i] == ' ' || s[i] == '\t' || s[i] == '\n' ||
                  s[i] == '\r',
              "accepted a raw control character");
    CHECK(json_c_accepts(s, size), "accepted what json-c's strict mode refuses");
    return 0;
}
