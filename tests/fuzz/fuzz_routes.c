/*
 * libFuzzer harness: routes_find() (daemon/routes.c) on arbitrary paths, the
 * way routes_dispatch() calls it for every request.
 *
 * Input: byte 0 chooses the method (enum stats_method, one value past it too)
 * and the size of the Allow buffer; the rest is the path (up to its first NUL).
 * The parameter buffer and the Allow buffer are exactly as large as the
 * contract says, on the heap, so that ASan sees any write past them. Besides
 * the sanitizers' findings it checks, against an independent matcher over
 * routes_names[]:
 * - the route index is in range: a route whose pattern matches the path, the
 *   first one that does, or routes_count - 1 ("other") with 404 when none does;
 * - each parameter is a non-empty '/'-free piece of the path, the one its
 *   "{name}" segment matched, and lies inside the buffer given;
 * - 405 comes with a terminated Allow list of known method names (HEAD with
 *   GET) that does not name the method refused; a handler comes without a status;
 * - HEAD finds what GET finds;
 * - routes_of_line() on the same bytes taken as a request line finds the route
 *   of its target's path.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes.h"
#include "stats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_routes: %s (path \"%s\")\n", what, path);                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *const method_names[STATS_NMETHODS] = {
    [STATS_GET] = "GET",       [STATS_POST] = "POST",          [STATS_PUT] = "PUT",
    [STATS_DELETE] = "DELETE", [STATS_HEAD] = "HEAD",          [STATS_OPTIONS] = "OPTIONS",
    [STATS_PATCH] = "PATCH",   [STATS_OTHER_METHOD] = "OTHER",
};
static const size_t allow_sizes[4] = {1, 9, 24, 64}; /* routes_dispatch gives 64 */

/*
 * Matches path against pattern segment by segment ("{x}" takes one non-empty
 * segment); fills the parameters' offsets and lengths into the path.
 */
static bool matches(const char *pattern, const char *path, size_t *off, size_t *len, int *np)
{
    const char *p = pattern, *s = path;

    *np = 0;
    for (;;) {
        size_t plen, slen;

        if (*p == '\0' || *s == '\0')
            return *p == '\0' && *s == '\0';
        if (*p != '/' || *s != '/')
            return false;
        p++, s++;
        plen = strcspn(p, "/");
        slen = strcspn(s, "/");
        if (*p == '{') {
            if (slen == 0 || *np == HTTP_MAX_PARAMS)
                return false;
            off[*np] = (size_t)(s - path);
            len[*np] = slen;
            (*np)++;
        } else if (plen != slen || memcmp(p, s, slen) != 0) {
            return false;
        }
        p += plen;
        s += slen;
    }
}

static void check_allow(const char *path, const char *allow, size_t cap, int method)
{
    char copy[64], *tok, *save = NULL;

    CHECK(memchr(allow, '\0', cap) != NULL, "Allow not terminated");
    if (cap < sizeof(copy) || strlen(allow) + 1 >= cap)
        return; /* cut to fit: nothing more to say */
    snprintf(copy, sizeof(copy), "%s", allow);
    CHECK(copy[0] != '\0', "405 with an empty Allow");
    for (tok = strtok_r(copy, ", ", &save); tok != NULL; tok = strtok_r(NULL, ", ", &save)) {
        int m, known = -1;

        for (m = 0; m < STATS_NMETHODS; m++)
            if (strcmp(tok, method_names[m]) == 0)
                known = m;
        CHECK(known >= 0 && known != STATS_OTHER_METHOD, "an unknown method in Allow");
        CHECK(known != method && !(method == STATS_HEAD && known == STATS_GET),
              "Allow names the method refused");
    }
}

/* The route of a request line's target ("M /path?q V"), independently. */
static int line_route(const char *line)
{
    const char *sp = strchr(line, ' ');
    size_t off[HTTP_MAX_PARAMS], len[HTTP_MAX_PARAMS], n;
    char *target;
    int i, np, found = routes_count - 1;

    if (sp == NULL || sp[1] != '/')
        return found;
    n = strcspn(sp + 1, " ?#");
    if (n >= CONN_LINE_MAX || (target = strndup(sp + 1, n)) == NULL)
        return found;
    for (i = 0; i < routes_count - 1; i++) {
        if (matches(routes_names[i], target, off, len, &np)) {
            found = i;
            break;
        }
    }
    free(target);
    return found;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *params[HTTP_MAX_PARAMS], *params2[HTTP_MAX_PARAMS];
    size_t off[HTTP_MAX_PARAMS], len[HTTP_MAX_PARAMS], plen, allow_len;
    int method, route, route2, status, status2, scope = -1, scope2 = -1, i, np, first = -1;
    char *path, *buf, *buf2, *allow, *allow2;
    http_handler fn, fn2;

    if (size == 0)
        return 0;
    method = (data[0] & 15) % (STATS_NMETHODS + 1); /* one past: routes_dispatch never */
    if (method == STATS_NMETHODS)
        method = STATS_OTHER_METHOD;
    allow_len = allow_sizes[(data[0] >> 4) & 3];
    path = strndup((const char *)data + 1, size - 1);
    if (path == NULL)
        return 0;
    plen = strlen(path);
    buf = malloc(plen + 1);
    buf2 = malloc(plen + 1);
    allow = malloc(allow_len);
    allow2 = malloc(allow_len);
    if (buf == NULL || buf2 == NULL || allow == NULL || allow2 == NULL)
        abort();

    for (i = 0; i < routes_count - 1; i++) {
        if (matches(routes_names[i], path, off, len, &np)) {
            first = i;
            break;
        }
    }

    memset(params, 0, sizeof(params));
    status = 0;
    route = -7;
    fn = routes_find(path, method, &route, params, buf, &status, allow, allow_len, &scope);
    if (first < 0) {
        CHECK(fn == NULL && status == 404 && route == routes_count - 1, "no route, yet found");
    } else {
        CHECK(route == first, "not the first route whose pattern matches");
        CHECK(route >= 0 && route < routes_count - 1, "route index out of range");
        CHECK(fn != NULL ? status == 0 : status == 405, "handler and status disagree");
        for (i = 0; i < np; i++) {
            const char *p = params[i];

            CHECK(p != NULL && p >= buf && p + len[i] < buf + plen + 1, "parameter outside buf");
            CHECK(strlen(p) == len[i] && memcmp(p, path + off[i], len[i]) == 0,
                  "parameter is not the segment it matched");
            CHECK(strchr(p, '/') == NULL && len[i] > 0, "parameter empty or with '/'");
        }
        if (fn == NULL)
            check_allow(path, allow, allow_len, method);
    }

    /* HEAD is answered by the GET handler. */
    if (method == STATS_HEAD || method == STATS_GET) {
        status2 = 0;
        route2 = -7;
        fn2 = routes_find(path, method == STATS_HEAD ? STATS_GET : STATS_HEAD, &route2, params2,
                          buf2, &status2, allow2, allow_len, &scope2);
        CHECK(fn2 == fn && route2 == route && status2 == status && (fn == NULL || scope2 == scope),
              "HEAD and GET differ");
    }

    /* The same input as a request line, as framing rejections are routed. */
    CHECK(routes_of_line(path) == line_route(path), "routes_of_line: not the target's route");
    free(allow2);
    free(allow);
    free(buf2);
    free(buf);
    free(path);
    return 0;
}
