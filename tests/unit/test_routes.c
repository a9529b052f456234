/* routes: each method and path finds its handler; 404, 405 and its Allow list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "auth.h"
#include "ops.h"
#include "perftest.h"
#include "routes.h"
#include "stats.h"
#include "todos.h"

#define OTHER_ROUTE (routes_count - 1)

struct found {
    http_handler fn;
    int route, status, scope;
    const char *params[HTTP_MAX_PARAMS];
    char buf[256];
    char allow[64];
};

static void find(struct found *f, int method, const char *path)
{
    memset(f, 0, sizeof(*f));
    assert_true(strlen(path) + 1 <= sizeof(f->buf));
    f->fn = routes_find(path, method, &f->route, f->params, f->buf, &f->status, f->allow,
                        sizeof(f->allow), &f->scope);
}

/* path resolves, for method, to fn on the route named pattern. */
static void resolves(int method, const char *path, http_handler fn, const char *pattern)
{
    struct found f;

    find(&f, method, path);
    if (f.fn != fn)
        fail_msg("%s %s: not the expected handler (status %d)", stats_method_label(method), path,
                 f.status);
    assert_string_equal(routes_names[f.route], pattern);
}

static void not_found(int method, const char *path)
{
    struct found f;

    find(&f, method, path);
    if (f.fn != NULL || f.status != 404)
        fail_msg("%s %s: want 404, got status %d", stats_method_label(method), path, f.status);
    assert_int_equal(f.route, OTHER_ROUTE);
}

static void not_allowed(int method, const char *path, const char *pattern, const char *allow)
{
    struct found f;

    find(&f, method, path);
    if (f.fn != NULL || f.status != 405)
        fail_msg("%s %s: want 405, got status %d", stats_method_label(method), path, f.status);
    assert_string_equal(routes_names[f.route], pattern);
    assert_string_equal(f.allow, allow);
}

static void every_route_resolves_to_its_handler(void **state)
{
    resolves(STATS_GET, "/health", ops_health, "/health");
    resolves(STATS_GET, "/live", ops_live, "/live");
    resolves(STATS_GET, "/ready", ops_ready, "/ready");
    resolves(STATS_GET, "/metrics", ops_metrics, "/metrics");
    resolves(STATS_GET, "/stats", ops_stats, "/stats");
    resolves(STATS_GET, "/api-docs/openapi.json", ops_openapi, "/api-docs/openapi.json");
    resolves(STATS_GET, "/dashboard", ops_dashboard, "/dashboard");
    resolves(STATS_GET, "/todos", todos_list, "/todos");
    resolves(STATS_POST, "/todos", todos_create, "/todos");
    resolves(STATS_POST, "/todos/performance-test", perf_start, "/todos/performance-test");
    resolves(STATS_GET, "/todos/done/true", todos_by_done, "/todos/done/{done}");
    resolves(STATS_GET, "/todos/42", todos_get, "/todos/{id}");
    resolves(STATS_PUT, "/todos/42", todos_update, "/todos/{id}");
    resolves(STATS_DELETE, "/todos/42", todos_delete, "/todos/{id}");
}

static void head_is_served_by_the_get_handler(void **state)
{
    resolves(STATS_HEAD, "/health", ops_health, "/health");
    resolves(STATS_HEAD, "/todos", todos_list, "/todos");
    resolves(STATS_HEAD, "/todos/7", todos_get, "/todos/{id}");
    not_allowed(STATS_HEAD, "/todos/performance-test", "/todos/performance-test", "POST");
}

static void parameters_are_cut_from_the_path(void **state)
{
    struct found f;

    find(&f, STATS_GET, "/todos/00000000-0000-4000-8000-000000000000");
    assert_ptr_equal(f.fn, todos_get);
    assert_string_equal(f.params[0], "00000000-0000-4000-8000-000000000000");
    find(&f, STATS_GET, "/todos/done/false");
    assert_ptr_equal(f.fn, todos_by_done);
    assert_string_equal(f.params[0], "false");
    /* Any non-empty segment is an id here: the handler judges it. */
    find(&f, STATS_DELETE, "/todos/not-a-number");
    assert_ptr_equal(f.fn, todos_delete);
    assert_string_equal(f.params[0], "not-a-number");
}

static void literal_paths_win_over_patterns(void **state)
{
    /* "/todos/performance-test" would also match "/todos/{id}", which takes GET. */
    not_allowed(STATS_GET, "/todos/performance-test", "/todos/performance-test", "POST");
    not_allowed(STATS_DELETE, "/todos/performance-test", "/todos/performance-test", "POST");
    /* "/todos/done" alone is an id; "/todos/done/x" is the done filter. */
    resolves(STATS_GET, "/todos/done", todos_get, "/todos/{id}");
    resolves(STATS_GET, "/todos/done/x", todos_by_done, "/todos/done/{done}");
}

static void a_path_no_route_matches_is_404(void **state)
{
    not_found(STATS_GET, "/");
    not_found(STATS_GET, "/nope");
    not_found(STATS_POST, "/todo");
    not_found(STATS_GET, "/todos/42/extra");
    not_found(STATS_GET, "/todos/done/true/extra");
    not_found(STATS_GET, "/HEALTH"); /* paths are case-sensitive */
    not_found(STATS_GET, "health");  /* not origin-form */
    /* 404 outranks 405: an unknown path with a method no route takes. */
    not_found(STATS_PATCH, "/nope");
}

static void trailing_and_empty_segments_match_nothing(void **state)
{
    not_found(STATS_GET, "/health/");
    not_found(STATS_GET, "/todos/");
    not_found(STATS_GET, "/todos//");
    not_found(STATS_GET, "/todos/42/");
    not_found(STATS_GET, "/todos//42");
    not_found(STATS_GET, "//todos");
    not_found(STATS_GET, "/todos/done/");
}

static void the_path_is_matched_as_sent_not_decoded(void **state)
{
    struct found f;

    not_found(STATS_GET, "/%68ealth");
    not_found(STATS_GET, "/todos%2F42");
    find(&f, STATS_GET, "/todos/%34%32");
    assert_ptr_equal(f.fn, todos_get);
    assert_string_equal(f.params[0], "%34%32");
}

static void a_method_no_handler_takes_is_405_with_allow(void **state)
{
    not_allowed(STATS_DELETE, "/todos", "/todos", "GET, HEAD, POST");
    not_allowed(STATS_PUT, "/todos", "/todos", "GET, HEAD, POST");
    not_allowed(STATS_POST, "/todos/42", "/todos/{id}", "GET, HEAD, PUT, DELETE");
    not_allowed(STATS_PATCH, "/todos/42", "/todos/{id}", "GET, HEAD, PUT, DELETE");
    not_allowed(STATS_POST, "/health", "/health", "GET, HEAD");
    not_allowed(STATS_OPTIONS, "/metrics", "/metrics", "GET, HEAD");
    not_allowed(STATS_PUT, "/todos/done/true", "/todos/done/{done}", "GET, HEAD");
    /* TRACE, or any method counted as "other", is no route's. */
    not_allowed(STATS_OTHER_METHOD, "/dashboard", "/dashboard", "GET, HEAD");
}

static void routes_names_end_with_other(void **state)
{
    assert_true(routes_count >= 2);
    assert_true(routes_count <= STATS_MAX_ROUTES);
    assert_string_equal(routes_names[OTHER_ROUTE], "other");
}

static void routes_of_line_finds_the_route_of_a_raw_request_line(void **state)
{
    assert_string_equal(routes_names[routes_of_line("GET /todos/7?x=1 HTTP/1.1")], "/todos/{id}");
    assert_string_equal(routes_names[routes_of_line("POST /todos HTTP/1.0")], "/todos");
    assert_string_equal(routes_names[routes_of_line("BREW /todos#frag HTTP/1.1")], "/todos");
    /* Cut short by the framing gate: the target so far. */
    assert_string_equal(routes_names[routes_of_line("GET /health")], "/health");
    assert_int_equal(routes_of_line("GET /tod"), OTHER_ROUTE);
    assert_int_equal(routes_of_line("OPTIONS * HTTP/1.1"), OTHER_ROUTE);
    assert_int_equal(routes_of_line("GET http://h/todos HTTP/1.1"), OTHER_ROUTE);
    assert_int_equal(routes_of_line("GET"), OTHER_ROUTE);
    assert_int_equal(routes_of_line(""), OTHER_ROUTE);
    assert_int_equal(routes_of_line(NULL), OTHER_ROUTE);
}

/* method and path ask for scope (API.md "Access control"). */
static void asks_for(int method, const char *path, enum auth_scope scope)
{
    struct found f;

    find(&f, method, path);
    assert_non_null(f.fn);
    if (f.scope != (int)scope)
        fail_msg("%s %s asks for scope %d (\"%s\"), not %d (\"%s\")", stats_method_label(method),
                 path, f.scope, auth_scope_name(f.scope), scope, auth_scope_name(scope));
}

static void every_route_asks_for_the_scope_api_md_names(void **state)
{
    (void)state;
    asks_for(STATS_GET, "/health", AUTH_PROBE);
    asks_for(STATS_GET, "/live", AUTH_PROBE);
    asks_for(STATS_GET, "/ready", AUTH_PROBE);
    asks_for(STATS_GET, "/api-docs/openapi.json", AUTH_OPEN);
    asks_for(STATS_GET, "/dashboard", AUTH_OPEN); /* holds no data; asks for a token */
    asks_for(STATS_GET, "/metrics", AUTH_OPS_READ);
    asks_for(STATS_GET, "/stats", AUTH_OPS_READ);
    asks_for(STATS_GET, "/todos", AUTH_TODOS_READ);
    asks_for(STATS_HEAD, "/todos", AUTH_TODOS_READ);
    asks_for(STATS_GET, "/todos/done/true", AUTH_TODOS_READ);
    asks_for(STATS_GET, "/todos/x", AUTH_TODOS_READ);
    asks_for(STATS_POST, "/todos", AUTH_TODOS_WRITE);
    asks_for(STATS_PUT, "/todos/x", AUTH_TODOS_WRITE);
    asks_for(STATS_DELETE, "/todos/x", AUTH_TODOS_WRITE);
    asks_for(STATS_POST, "/todos/performance-test", AUTH_PERF_RUN);
}

static void only_routes_that_wait_for_postgresql_are_db_backed(void **state)
{
    struct found f;

    find(&f, STATS_GET, "/todos");
    assert_true(routes_db_backed(f.route));
    find(&f, STATS_GET, "/todos/1");
    assert_true(routes_db_backed(f.route));
    find(&f, STATS_POST, "/todos/performance-test");
    assert_true(routes_db_backed(f.route));
    find(&f, STATS_GET, "/health");
    assert_false(routes_db_backed(f.route));
    find(&f, STATS_GET, "/ready");
    assert_false(routes_db_backed(f.route));
    assert_false(routes_db_backed(OTHER_ROUTE));
    assert_false(routes_db_backed(-1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_route_resolves_to_its_handler),
        cmocka_unit_test(head_is_served_by_the_get_handler),
        cmocka_unit_test(parameters_are_cut_from_the_path),
        cmocka_unit_test(literal_paths_win_over_patterns),
        cmocka_unit_test(a_path_no_route_matches_is_404),
        cmocka_unit_test(trailing_and_empty_segments_match_nothing),
        cmocka_unit_test(the_path_is_matched_as_sent_not_decoded),
        cmocka_unit_test(a_method_no_handler_takes_is_405_with_allow),
        cmocka_unit_test(routes_names_end_with_other),
        cmocka_unit_test(routes_of_line_finds_the_route_of_a_raw_request_line),
        cmocka_unit_test(every_route_asks_for_the_scope_api_md_names),
        cmocka_unit_test(only_routes_that_wait_for_postgresql_are_db_backed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
