#include "routes.h"

#include <string.h>

#include "auth.h"
#include "conf.h"
#include "ops.h"
#include "perfcancel.h"
#include "perftest.h"
#include "stats.h"
#include "todos.h"

enum {
    ROUTE_DB = 1 << 0,    /* waits for PostgreSQL: Server-Timing */
    ROUTE_ADMIN = 1 << 1, /* served on admin_listen (and, unless ROUTE_MOVES, on listen) */
    ROUTE_MOVES = 1 << 2, /* with admin_listen set, served there only */
};

/*
 * Order matters: the first matching pattern wins, so literal paths come before
 * the patterns that would also match them. A GET handler also answers HEAD.
 */
struct route {
    const char *pattern;
    unsigned flags;
    struct {
        enum stats_method method;
        http_handler fn;
        enum auth_scope scope; /* what a token must carry (API.md "Access control") */
    } methods[3];
};

static const struct route routes[] = {
    {"/health", ROUTE_ADMIN, {{STATS_GET, ops_health, AUTH_PROBE}}},
    {"/live", ROUTE_ADMIN, {{STATS_GET, ops_live, AUTH_PROBE}}},
    {"/ready", ROUTE_ADMIN, {{STATS_GET, ops_ready, AUTH_PROBE}}},
    {"/metrics", ROUTE_ADMIN | ROUTE_MOVES, {{STATS_GET, ops_metrics, AUTH_OPS_READ}}},
    {"/stats", ROUTE_ADMIN | ROUTE_MOVES, {{STATS_GET, ops_stats, AUTH_OPS_READ}}},
    {"/api-docs/openapi.json", ROUTE_ADMIN, {{STATS_GET, ops_openapi, AUTH_OPEN}}},
    /* The page holds no data: it asks for a token, and its requests carry it. */
    {"/dashboard", ROUTE_ADMIN | ROUTE_MOVES, {{STATS_GET, ops_dashboard, AUTH_OPEN}}},
    {"/todos",
     ROUTE_DB,
     {{STATS_GET, todos_list, AUTH_TODOS_READ}, {STATS_POST, todos_create, AUTH_TODOS_WRITE}}},
    {"/todos/performance-test", ROUTE_DB, {{STATS_POST, perf_start, AUTH_PERF_RUN}}},
    {"/todos/performance-test/{run_id}",
     ROUTE_DB,
     {{STATS_DELETE, perfcancel_request, AUTH_PERF_RUN}}},
    {"/todos/done/{done}", ROUTE_DB, {{STATS_GET, todos_by_done, AUTH_TODOS_READ}}},
    {"/todos/{id}",
     ROUTE_DB,
     {{STATS_GET, todos_get, AUTH_TODOS_READ},
      {STATS_PUT, todos_update, AUTH_TODOS_WRITE},
      {STATS_DELETE, todos_delete, AUTH_TODOS_WRITE}}},
};

#define NROUTES (int)(sizeof(routes) / sizeof(routes[0]))

const char *const routes_names[] = {
    "/health",
    "/live",
    "/ready",
    "/metrics",
    "/stats",
    "/api-docs/openapi.json",
    "/dashboard",
    "/todos",
    "/todos/performance-test",
    "/todos/performance-test/{run_id}",
    "/todos/done/{done}",
    "/todos/{id}",
    "other",
};
const int routes_count = NROUTES + 1;

_Static_assert(sizeof(routes_names) / sizeof(routes_names[0]) == NROUTES + 1,
               "routes_names must follow the route table");
_Static_assert(NROUTES + 1 <= STATS_MAX_ROUTES, "too many routes for the stats segment");

/* Matches path against pattern; fills params with copies cut from buf. */
static int match(const char *pattern, const char *path, char *buf, const char **params)
{
    int np = 0;

    while (*pattern == '/' && *path == '/') {
        size_t plen = strcspn(pattern + 1, "/");
        size_t slen = strcspn(path + 1, "/");

        if (pattern[1] == '{') {
            if (slen == 0 || np == HTTP_MAX_PARAMS)
                return 0;
            memcpy(buf, path + 1, slen);
            buf[slen] = '\0';
            params[np++] = buf;
            buf += slen + 1;
        } else if (plen != slen || memcmp(pattern + 1, path + 1, slen) != 0) {
            return 0;
        }
        pattern += plen + 1;
        path += slen + 1;
    }
    return *pattern == '\0' && *path == '\0';
}

static void list_allowed(const struct route *rt, char *allow, size_t len)
{
    size_t i;

    allow[0] = '\0';
    for (i = 0; i < 3 && rt->methods[i].fn != NULL; i++) {
        if (i > 0)
            strncat(allow, ", ", len - strlen(allow) - 1);
        strncat(allow, stats_method_label(rt->methods[i].method), len - strlen(allow) - 1);
        if (rt->methods[i].method == STATS_GET)
            strncat(allow, ", HEAD", len - strlen(allow) - 1);
    }
}

/* The first route whose pattern matches path (params cut from buf); NROUTES. */
static int route_index(const char *path, char *buf, const char **params)
{
    for (int i = 0; i < NROUTES; i++)
        if (match(routes[i].pattern, path, buf, params))
            return i;
    return NROUTES;
}

http_handler routes_find(const char *path, int method, int *route, const char **params, char *buf,
                         int *status, char *allow, size_t allow_len, int *scope)
{
    int want = method == STATS_HEAD ? STATS_GET : method;
    const struct route *rt;

    *route = route_index(path, buf, params);
    if (*route == NROUTES) {
        *status = 404;
        return NULL;
    }
    rt = &routes[*route];
    for (int m = 0; m < 3 && rt->methods[m].fn != NULL; m++)
        if ((int)rt->methods[m].method == want) {
            *scope = (int)rt->methods[m].scope;
            return rt->methods[m].fn;
        }
    *status = 405;
    list_allowed(rt, allow, allow_len);
    return NULL;
}

int routes_db_backed(int route)
{
    return route >= 0 && route < NROUTES && (routes[route].flags & ROUTE_DB);
}

int routes_of_line(const char *line)
{
    const char *target = line != NULL ? strchr(line, ' ') : NULL;
    char path[CONN_LINE_MAX], buf[2 * CONN_LINE_MAX];
    const char *params[HTTP_MAX_PARAMS];
    size_t n;

    if (target == NULL || target[1] != '/')
        return NROUTES;
    target++;
    n = strcspn(target, " ?#");
    if (n >= sizeof(path))
        return NROUTES;
    memcpy(path, target, n);
    path[n] = '\0';
    return route_index(path, buf, params);
}

/*
 * Whether route i is served on the socket r came through (DAEMON.md
 * admin_listen): admin_listen serves the operator's routes only; listen serves
 * the rest, and these too unless admin_listen is set.
 */
static bool served_here(const struct http_req *r, int i)
{
    if (i >= NROUTES)
        return true; /* no route: 404 anyway */
    if (r->via->admin)
        return routes[i].flags & ROUTE_ADMIN;
    return !(routes[i].flags & ROUTE_MOVES) || r->app->conf->admin_listen[0] == '\0';
}

void routes_dispatch(struct evhttp_request *req, void *arg)
{
    struct http_req *r = http_req_begin(arg, req);
    char allow[64];
    http_handler fn;
    int status = 0, scope = AUTH_PROBE;

    if (r == NULL)
        return; /* answered already */
    if (r->reject_status != 0) {
        /* Framing's answer; a database-backed route's answers carry Server-Timing. */
        r->db_route = routes_db_backed(routes_of_line(r->rejected_line));
        http_reply_rejected(r);
        return;
    }
    fn = routes_find(r->path, r->method, &r->route, r->params, r->path + strlen(r->path) + 1,
                     &status, allow, sizeof(allow), &scope);
    if (!served_here(r, r->route)) {
        /* As an unknown route: counted as "other", no Server-Timing. */
        r->route = NROUTES;
        fn = NULL;
        status = 404;
    }
    r->db_route = routes_db_backed(r->route);
    http_trace_start(r, r->route < NROUTES ? routes[r->route].pattern : NULL);
    if (fn != NULL) {
        /* admin_listen is the operator's own network, by configuration: no
         * token asked, no protected mode. */
        if (!r->via->admin && !auth_admit(r->app->auth, r, (enum auth_scope)scope))
            return; /* refused and answered: the handler never sees it */
        fn(r);      /* r belongs to the handler from here */
        return;
    }
    if (status == 405) {
        http_add_header(r, "Allow", allow);
        http_reply_error(r, 405, "method %s not allowed on %s (allowed: %s)", http_method(r),
                         routes[r->route].pattern, allow);
        return;
    }
    http_reply_error(r, 404, "no route for %s", r->path);
}
