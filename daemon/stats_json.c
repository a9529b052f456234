#include "stats_json.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <time.h>

static uint64_t counter_get(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static uint64_t route_requests(const struct stats_totals *t, int route)
{
    uint64_t n = 0;

    for (int m = 0; m < STATS_NMETHODS; m++)
        for (int c = 0; c < STATS_NCODES; c++)
            n += t->http_requests[route][m][c];
    return n;
}

static uint64_t code_requests(const struct stats_totals *t, int code)
{
    uint64_t n = 0;

    for (int r = 0; r < STATS_MAX_ROUTES; r++)
        for (int m = 0; m < STATS_NMETHODS; m++)
            n += t->http_requests[r][m][code];
    return n;
}

/* RFC 3339 in UTC, e.g. 2024-05-01T12:00:00Z. */
static void format_utc(int64_t unix_seconds, char *buf, size_t len)
{
    time_t when = (time_t)unix_seconds;
    struct tm tm;

    if (gmtime_r(&when, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "1970-01-01T00:00:00Z");
}

/* Adds val under key and takes ownership of it; -1 when val could not be
 * allocated or added, so callers can OR results and check once. */
static int json_add(json_object *obj, const char *key, json_object *val)
{
    if (val == NULL)
        return -1;
    if (json_object_object_add(obj, key, val) != 0) {
        json_object_put(val);
        return -1;
    }
    return 0;
}

static json_object *json_requests_by_route(const struct stats_totals *t,
                                           const char *const *route_names, int nroutes)
{
    json_object *obj = json_object_new_object();
    int err = 0;

    if (obj == NULL)
        return NULL;
    for (int r = 0; r < nroutes; r++) {
        uint64_t n = route_requests(t, r);

        if (n > 0 && route_names[r] != NULL)
            err |= json_add(obj, route_names[r], json_object_new_uint64(n));
    }
    if (err) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

static json_object *json_requests_by_code(const struct stats_totals *t)
{
    json_object *obj = json_object_new_object();
    int err = 0;

    if (obj == NULL)
        return NULL;
    for (int c = 0; c < STATS_NCODES; c++) {
        uint64_t n = code_requests(t, c);
        char code[16];

        if (n == 0)
            continue;
        stats_code_label(c, code, sizeof(code));
        err |= json_add(obj, code, json_object_new_uint64(n));
    }
    if (err) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

/* {"buckets":[non-cumulative counts, +Inf last],"count":N,"sum_ms":S} */
static json_object *json_histogram(const struct stats_histogram_totals *h)
{
    json_object *obj = json_object_new_object(), *arr = json_object_new_array();
    int err = 0;

    if (obj == NULL || arr == NULL) {
        json_object_put(obj);
        json_object_put(arr);
        return NULL;
    }
    for (int b = 0; b < STATS_NBUCKETS; b++)
        err |= json_object_array_add(arr, json_object_new_uint64(h->bucket[b])) != 0;
    err |= json_add(obj, "buckets", arr);
    err |= json_add(obj, "count", json_object_new_uint64(stats_histogram_total(h)));
    err |= json_add(obj, "sum_ms", json_object_new_double((double)h->sum_us / 1e3));
    if (err) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

/* {"bounds_ms":[...],"routes":{route: histogram}}: the buckets of
 * todod_http_request_duration_seconds, for clients that compute percentiles. */
static json_object *json_durations(const struct stats_totals *t, const char *const *route_names,
                                   int nroutes)
{
    json_object *obj = json_object_new_object(), *bounds = json_object_new_array(),
                *routes = json_object_new_object();
    int err = 0;

    if (obj == NULL || bounds == NULL || routes == NULL) {
        json_object_put(obj);
        json_object_put(bounds);
        json_object_put(routes);
        return NULL;
    }
    for (int b = 0; b < STATS_NBUCKETS - 1; b++)
        err |= json_object_array_add(
                   bounds, json_object_new_double((double)stats_bucket_bounds_us[b] / 1e3)) != 0;
    err |= json_add(obj, "bounds_ms", bounds);
    for (int r = 0; r < nroutes; r++)
        if (route_names[r] != NULL && stats_histogram_total(&t->http_duration[r]) > 0)
            err |= json_add(routes, route_names[r], json_histogram(&t->http_duration[r]));
    err |= json_add(obj, "routes", routes);
    if (err) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

/* {"missing": n, ...}: todod_auth_refusals_total by reason. */
static json_object *json_auth_refusals(const struct stats_totals *t)
{
    json_object *obj = json_object_new_object();
    int err = 0;

    if (obj == NULL)
        return NULL;
    for (int i = 0; i < STATS_NAUTH; i++)
        err |=
            json_add(obj, stats_auth_reason_name(i), json_object_new_uint64(t->auth_refusals[i]));
    if (err) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

static json_object *json_totals(const struct stats_shm *shm, const struct stats_totals *t,
                                const char *const *route_names, int nroutes)
{
    json_object *obj = json_object_new_object();
    uint64_t requests = 0;
    int err = 0;

    if (obj == NULL)
        return NULL;
    for (int r = 0; r < STATS_MAX_ROUTES; r++)
        requests += route_requests(t, r);
    err |= json_add(obj, "requests", json_object_new_uint64(requests));
    err |= json_add(obj, "requests_by_route", json_requests_by_route(t, route_names, nroutes));
    err |= json_add(obj, "requests_by_code", json_requests_by_code(t));
    err |= json_add(obj, "perf_tests", json_object_new_uint64(t->perf_tests));
    err |= json_add(obj, "perf_tests_cancelled", json_object_new_uint64(t->perf_tests_cancelled));
    err |= json_add(obj, "perf_todos_success", json_object_new_uint64(t->perf_todos_success));
    err |= json_add(obj, "perf_todos_error", json_object_new_uint64(t->perf_todos_error));
    err |= json_add(obj, "perf_tests_running", json_object_new_int(stats_perf_running(shm)));
    err |= json_add(obj, "accept_errors", json_object_new_uint64(t->accept_errors));
    err |= json_add(obj, "client_timeouts", json_object_new_uint64(t->client_timeouts));
    err |= json_add(obj, "trace_spans_exported", json_object_new_uint64(t->trace_spans_exported));
    err |= json_add(obj, "trace_spans_dropped", json_object_new_uint64(t->trace_spans_dropped));
    err |= json_add(obj, "trace_export_errors", json_object_new_uint64(t->trace_export_errors));
    err |= json_add(obj, "auth_refusals", json_auth_refusals(t));
    err |= json_add(obj, "http_duration", json_durations(t, route_names, nroutes));
    err |= json_add(obj, "perf_batch_duration", json_histogram(&t->perf_batch_duration));
    err |= json_add(obj, "db_errors", json_object_new_uint64(t->db_errors));
    err |= json_add(obj, "db_reconnects", json_object_new_uint64(t->db_reconnects));
    err |= json_add(obj, "db_reads_primary", json_object_new_uint64(t->db_reads[0]));
    err |= json_add(obj, "db_reads_standby", json_object_new_uint64(t->db_reads[1]));
    err |= json_add(obj, "workers", json_object_new_int(atomic_load(&shm->workers)));
    err |= json_add(obj, "worker_restarts",
                    json_object_new_uint64(atomic_load(&shm->worker_restarts)));
    if (err) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

/* The worker's view of each standby (database_read_url): host, state, lag. */
static json_object *json_standbys(const struct stats_slot *s)
{
    json_object *arr = json_object_new_array();

    for (int i = 0; arr != NULL && i < STATS_MAX_STANDBYS; i++) {
        const struct stats_standby *g = &s->standbys[i];
        int state = atomic_load(&g->state);
        int64_t lag = atomic_load(&g->lag_us);
        json_object *o;

        if (state == STATS_STANDBY_NONE || (o = json_object_new_object()) == NULL)
            continue;
        json_object_object_add(o, "host", json_object_new_string(g->host));
        json_object_object_add(o, "state", json_object_new_string(stats_standby_state_name(state)));
        json_object_object_add(o, "lag_seconds",
                               lag < 0 ? NULL : json_object_new_double((double)lag / 1e6));
        json_object_array_add(arr, o);
    }
    return arr;
}

static json_object *json_worker(const struct stats_slot *s, int slot)
{
    json_object *obj = json_object_new_object();
    char started[32];
    int err = 0;

    if (obj == NULL)
        return NULL;
    format_utc(atomic_load(&s->started_at), started, sizeof(started));
    err |= json_add(obj, "slot", json_object_new_int(slot));
    err |= json_add(obj, "pid", json_object_new_int(atomic_load(&s->pid)));
    err |= json_add(obj, "started_at", json_object_new_int64(atomic_load(&s->started_at)));
    err |= json_add(obj, "started", json_object_new_string(started));
    err |= json_add(obj, "requests", json_object_new_uint64(stats_slot_requests(s)));
    err |= json_add(obj, "perf_todos",
                    json_object_new_uint64(counter_get(&s->c.perf_todos_success) +
                                           counter_get(&s->c.perf_todos_error)));
    err |= json_add(obj, "db_connected", json_object_new_boolean(atomic_load(&s->db_up) > 0));
    err |= json_add(obj, "ready", json_object_new_boolean(atomic_load(&s->ready) != 0));
    err |= json_add(obj, "draining", json_object_new_boolean(atomic_load(&s->draining) != 0));
    err |= json_add(obj, "open_connections", json_object_new_int(atomic_load(&s->open_conns)));
    err |= json_add(obj, "db_connections_up", json_object_new_int(atomic_load(&s->db_up)));
    err |= json_add(obj, "perf_running", json_object_new_int(atomic_load(&s->perf_running)));
    err |= json_add(obj, "standbys", json_standbys(s));
    if (err) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

static json_object *json_workers(const struct stats_shm *shm)
{
    json_object *arr = json_object_new_array();

    if (arr == NULL)
        return NULL;
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &shm->slots[i];
        json_object *w;

        if (atomic_load(&s->state) != STATS_SLOT_ACTIVE)
            continue;
        w = json_worker(s, i);
        if (w == NULL || json_object_array_add(arr, w) != 0) {
            json_object_put(w);
            json_object_put(arr);
            return NULL;
        }
    }
    return arr;
}

int stats_json_render(const struct stats_shm *shm, const char *const *route_names, int nroutes,
                      const char *version, FILE *out)
{
    json_object *root = json_object_new_object();
    struct stats_totals t;
    int64_t started_at = (int64_t)shm->master_start_time;
    char started[32];
    const char *text;
    int named, rc = -1;

    if (root == NULL)
        return -1;
    stats_sum(shm, &t);
    named = stats_named_routes(route_names, nroutes);
    format_utc(started_at, started, sizeof(started));
    /* The instance: what runs, since when (the master), and the time of this
     * answer on the same clock, so that uptime needs no other clock. */
    if (json_add(root, "version", json_object_new_string(version != NULL ? version : "")) != 0 ||
        json_add(root, "started_at", json_object_new_int64(started_at)) != 0 ||
        json_add(root, "started", json_object_new_string(started)) != 0 ||
        json_add(root, "now", json_object_new_int64((int64_t)time(NULL))) != 0 ||
        json_add(root, "totals", json_totals(shm, &t, route_names, named)) != 0 ||
        json_add(root, "workers", json_workers(shm)) != 0)
        goto out;
    text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
    if (text != NULL && fputs(text, out) != EOF && !ferror(out))
        rc = 0;
out:
    json_object_put(root);
    return rc;
}
