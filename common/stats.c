#include "stats.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* A reader that keeps finding a fold in progress spins this many times before
 * it starts yielding the CPU to let the (possibly descheduled) master finish. */
#define SUM_SPIN_TRIES 1000

static const uint64_t bucket_bounds_us[STATS_NBUCKETS - 1] = STATS_BUCKETS_US;

#define CODE_VALUE(c) c,
static const int code_values[STATS_NCODES] = {STATS_CODES(CODE_VALUE) 0};
#define CODE_COUNT(c) +1
_Static_assert(0 STATS_CODES(CODE_COUNT) + 1 == STATS_NCODES,
               "STATS_NCODES must be the length of STATS_CODES plus one");

/* Request method names; the last entry is the Prometheus label of the rest. */
static const char *const method_names[STATS_NMETHODS] = {
    [STATS_GET] = "GET",       [STATS_POST] = "POST",          [STATS_PUT] = "PUT",
    [STATS_DELETE] = "DELETE", [STATS_HEAD] = "HEAD",          [STATS_OPTIONS] = "OPTIONS",
    [STATS_PATCH] = "PATCH",   [STATS_OTHER_METHOD] = "other",
};

/*
 * Folding and summing walk struct stats_counters field by field. Adding a field
 * without teaching counters_move() and counters_add() about it would silently
 * lose counts on every worker exit, so its size is pinned here.
 */
_Static_assert(sizeof(struct stats_counters) ==
                   sizeof(_Atomic uint64_t) * (STATS_MAX_ROUTES * STATS_NMETHODS * STATS_NCODES +
                                               (STATS_MAX_ROUTES + 1) * (STATS_NBUCKETS + 2) + 10),
               "new field in struct stats_counters: fold and sum it in stats.c");

static void counter_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t counter_get(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static double now_realtime(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct stats_shm *stats_create(void)
{
    /* Anonymous mappings are zero-filled, which is every counter at 0 and
     * every slot FREE. */
    struct stats_shm *shm =
        mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (shm == MAP_FAILED)
        return NULL;
    shm->master_start_time = now_realtime();
    return shm;
}

void stats_destroy(struct stats_shm *shm)
{
    if (shm != NULL)
        munmap(shm, sizeof(*shm));
}

/* Only the master claims and retires slots, so finding a FREE one and taking
 * it need not be a single atomic step. */
int stats_slot_claim(struct stats_shm *shm)
{
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        struct stats_slot *s = &shm->slots[i];

        if (atomic_load(&s->state) != STATS_SLOT_FREE)
            continue;
        /* Gauges still hold whatever the previous worker left there. */
        atomic_store(&s->pid, 0);
        atomic_store(&s->ready, 0);
        atomic_store(&s->draining, 0);
        atomic_store(&s->db_up, 0);
        atomic_store(&s->open_conns, 0);
        atomic_store(&s->perf_running, 0);
        atomic_store(&s->started_at, (int64_t)time(NULL));
        /* Last, so a reader that sees ACTIVE sees the reset gauges. */
        atomic_store(&s->state, STATS_SLOT_ACTIVE);
        return i;
    }
    return -1;
}

static void counter_move(_Atomic uint64_t *dst, _Atomic uint64_t *src)
{
    counter_add(dst, atomic_exchange_explicit(src, 0, memory_order_relaxed));
}

static void histogram_move(struct stats_histogram *dst, struct stats_histogram *src)
{
    for (int b = 0; b < STATS_NBUCKETS; b++)
        counter_move(&dst->bucket[b], &src->bucket[b]);
    counter_move(&dst->sum_us, &src->sum_us);
    counter_move(&dst->count, &src->count);
}

static void counters_move(struct stats_counters *dst, struct stats_counters *src)
{
    for (int r = 0; r < STATS_MAX_ROUTES; r++) {
        for (int m = 0; m < STATS_NMETHODS; m++)
            for (int c = 0; c < STATS_NCODES; c++)
                counter_move(&dst->http_requests[r][m][c], &src->http_requests[r][m][c]);
        histogram_move(&dst->http_duration[r], &src->http_duration[r]);
    }
    counter_move(&dst->perf_tests, &src->perf_tests);
    counter_move(&dst->perf_todos_success, &src->perf_todos_success);
    counter_move(&dst->perf_todos_error, &src->perf_todos_error);
    histogram_move(&dst->perf_batch_duration, &src->perf_batch_duration);
    counter_move(&dst->db_errors, &src->db_errors);
    counter_move(&dst->db_reconnects, &src->db_reconnects);
    counter_move(&dst->accept_errors, &src->accept_errors);
    counter_move(&dst->client_timeouts, &src->client_timeouts);
    counter_move(&dst->trace_spans_exported, &src->trace_spans_exported);
    counter_move(&dst->trace_spans_dropped, &src->trace_spans_dropped);
    counter_move(&dst->trace_export_errors, &src->trace_export_errors);
}

/*
 * Moving a slot into the retired totals is not one atomic step, so it is
 * wrapped in a seqlock: a reader that overlaps it would otherwise count the
 * slot twice or not at all, and totals would jump or go down.
 */
void stats_slot_retire(struct stats_shm *shm, int slot)
{
    struct stats_slot *s;

    if (slot < 0 || slot >= STATS_MAX_SLOTS)
        return;
    s = &shm->slots[slot];
    atomic_fetch_add(&shm->fold_seq, 1);
    /* Pairs with the reader's acquire fence: a reader that sees any moved
     * value also sees the odd sequence number. */
    atomic_thread_fence(memory_order_release);
    counters_move(&shm->retired, &s->c);
    atomic_fetch_add(&shm->fold_seq, 1);
    /* Its pid may be another process's soon: nobody signals it from here on. */
    atomic_store(&s->pid, 0);
    perf_board_slot_gone(&shm->perf, slot);
    atomic_store(&s->state, STATS_SLOT_FREE);
}

/*
 * The share is filled and run->nshares counts it. Posted, then its worker is
 * looked at again: the master, reaping a worker, sets its pid to 0 before it
 * abandons the shares it finds posted for it (perf_board_slot_gone). Either it
 * found this one, or it had not looked when the share was posted, and then
 * this look sees the pid gone (every access here and there is sequentially
 * consistent); the compare-and-swap settles who ends it when both do.
 */
bool stats_perf_post(struct stats_shm *shm, struct perf_run *run, struct perf_share *sh)
{
    int slot = sh->worker_slot, pid = atomic_load(&sh->pid);
    const struct stats_slot *s;

    atomic_store(&sh->state, PERF_SHARE_POSTED);
    if (slot < 0 || slot >= STATS_MAX_SLOTS)
        return !perf_share_abandon_posted(run, sh);
    s = &shm->slots[slot];
    if (pid > 0 && atomic_load(&s->pid) == pid && atomic_load(&s->state) == STATS_SLOT_ACTIVE)
        return true;
    return !perf_share_abandon_posted(run, sh);
}

int stats_coordinator_pid(struct stats_shm *shm, struct perf_run *run)
{
    int slot = run->coordinator_slot;

    if (atomic_load(&run->state) != PERF_RUN_ACTIVE || slot < 0 || slot >= STATS_MAX_SLOTS)
        return 0;
    return atomic_load(&shm->slots[slot].pid);
}

int stats_method_index(const char *method)
{
    if (method == NULL)
        return STATS_OTHER_METHOD;
    /* HTTP methods are case-sensitive (RFC 9110 9.1). */
    for (int i = 0; i < STATS_OTHER_METHOD; i++)
        if (strcmp(method, method_names[i]) == 0)
            return i;
    return STATS_OTHER_METHOD;
}

int stats_code_index(int status)
{
    for (int i = 0; i < STATS_NCODES - 1; i++)
        if (code_values[i] == status)
            return i;
    return STATS_NCODES - 1;
}

int stats_code_value(int index)
{
    if (index < 0 || index >= STATS_NCODES)
        return 0;
    return code_values[index];
}

void stats_histogram_observe(struct stats_histogram *h, uint64_t us)
{
    int b = 0;

    while (b < STATS_NBUCKETS - 1 && us > bucket_bounds_us[b])
        b++;
    counter_add(&h->bucket[b], 1);
    counter_add(&h->sum_us, us);
    counter_add(&h->count, 1);
}

void stats_http_observe(struct stats_slot *s, int route, int method, int status,
                        uint64_t duration_us)
{
    if (route < 0 || route >= STATS_MAX_ROUTES)
        return;
    if (method < 0 || method >= STATS_NMETHODS)
        method = STATS_OTHER_METHOD;
    counter_add(&s->c.http_requests[route][method][stats_code_index(status)], 1);
    stats_histogram_observe(&s->c.http_duration[route], duration_us);
}

static void histogram_add(struct stats_histogram_totals *t, const struct stats_histogram *h)
{
    for (int b = 0; b < STATS_NBUCKETS; b++)
        t->bucket[b] += counter_get(&h->bucket[b]);
    t->sum_us += counter_get(&h->sum_us);
    t->count += counter_get(&h->count);
}

static void counters_add(struct stats_totals *t, const struct stats_counters *c)
{
    for (int r = 0; r < STATS_MAX_ROUTES; r++) {
        for (int m = 0; m < STATS_NMETHODS; m++)
            for (int k = 0; k < STATS_NCODES; k++)
                t->http_requests[r][m][k] += counter_get(&c->http_requests[r][m][k]);
        histogram_add(&t->http_duration[r], &c->http_duration[r]);
    }
    t->perf_tests += counter_get(&c->perf_tests);
    t->perf_todos_success += counter_get(&c->perf_todos_success);
    t->perf_todos_error += counter_get(&c->perf_todos_error);
    histogram_add(&t->perf_batch_duration, &c->perf_batch_duration);
    t->db_errors += counter_get(&c->db_errors);
    t->db_reconnects += counter_get(&c->db_reconnects);
    t->accept_errors += counter_get(&c->accept_errors);
    t->client_timeouts += counter_get(&c->client_timeouts);
    t->trace_spans_exported += counter_get(&c->trace_spans_exported);
    t->trace_spans_dropped += counter_get(&c->trace_spans_dropped);
    t->trace_export_errors += counter_get(&c->trace_export_errors);
}

/* FREE slots are summed too: retiring zeroes them, so they add nothing, and
 * skipping them would race with a slot being claimed or retired. */
static void sum_once(const struct stats_shm *shm, struct stats_totals *out)
{
    memset(out, 0, sizeof(*out));
    counters_add(out, &shm->retired);
    for (int i = 0; i < STATS_MAX_SLOTS; i++)
        counters_add(out, &shm->slots[i].c);
}

void stats_sum(const struct stats_shm *shm, struct stats_totals *out)
{
    for (unsigned tries = 0;; tries++) {
        uint64_t seq = atomic_load_explicit(&shm->fold_seq, memory_order_acquire);

        if ((seq & 1) == 0) {
            sum_once(shm, out);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&shm->fold_seq, memory_order_relaxed) == seq)
                return;
        }
        if (tries >= SUM_SPIN_TRIES)
            sched_yield();
    }
}

uint64_t stats_slot_requests(const struct stats_slot *s)
{
    uint64_t n = 0;

    for (int r = 0; r < STATS_MAX_ROUTES; r++)
        for (int m = 0; m < STATS_NMETHODS; m++)
            for (int c = 0; c < STATS_NCODES; c++)
                n += counter_get(&s->c.http_requests[r][m][c]);
    return n;
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

/* Route indexes that have a name; counts of any others cannot be labelled. */
static int named_routes(const char *const *route_names, int nroutes)
{
    if (route_names == NULL || nroutes < 0)
        return 0;
    return nroutes < STATS_MAX_ROUTES ? nroutes : STATS_MAX_ROUTES;
}

static void code_label(int index, char *buf, size_t len)
{
    if (index == STATS_NCODES - 1)
        snprintf(buf, len, "other");
    else
        snprintf(buf, len, "%d", code_values[index]);
}

/* ---- Prometheus text format 0.0.4 ---- */

static void prom_label_value(FILE *out, const char *v)
{
    for (; *v != '\0'; v++) {
        if (*v == '\\')
            fputs("\\\\", out);
        else if (*v == '"')
            fputs("\\\"", out);
        else if (*v == '\n')
            fputs("\\n", out);
        else
            fputc(*v, out);
    }
}

static void prom_family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `route="r",` ahead of further labels; nothing for unlabelled families. */
static void prom_route_label(FILE *out, const char *route)
{
    if (route == NULL)
        return;
    fputs("route=\"", out);
    prom_label_value(out, route);
    fputs("\",", out);
}

/* `{route="r"}` on _sum and _count, which carry no other label. */
static void prom_route_only(FILE *out, const char *route)
{
    if (route == NULL)
        return;
    fputs("{route=\"", out);
    prom_label_value(out, route);
    fputs("\"}", out);
}

static void prom_histogram_samples(FILE *out, const char *name, const char *route,
                                   const struct stats_histogram_totals *h)
{
    uint64_t cumulative = 0;

    for (int b = 0; b < STATS_NBUCKETS; b++) {
        char le[32];

        if (b < STATS_NBUCKETS - 1)
            snprintf(le, sizeof(le), "%g", (double)bucket_bounds_us[b] / 1e6);
        else
            snprintf(le, sizeof(le), "+Inf");
        cumulative += h->bucket[b];
        fprintf(out, "%s_bucket{", name);
        prom_route_label(out, route);
        fprintf(out, "le=\"%s\"} %" PRIu64 "\n", le, cumulative);
    }
    fprintf(out, "%s_sum", name);
    prom_route_only(out, route);
    fprintf(out, " %.6f\n", (double)h->sum_us / 1e6);
    /* The +Inf bucket rather than h->count: both are bumped separately, and a
     * scrape between the two must still see _count equal to the +Inf bucket. */
    fprintf(out, "%s_count", name);
    prom_route_only(out, route);
    fprintf(out, " %" PRIu64 "\n", cumulative);
}

static uint64_t histogram_total(const struct stats_histogram_totals *h)
{
    uint64_t n = 0;

    for (int b = 0; b < STATS_NBUCKETS; b++)
        n += h->bucket[b];
    return n;
}

static void prom_http(FILE *out, const struct stats_totals *t, const char *const *route_names,
                      int nroutes)
{
    prom_family(out, "todod_http_requests_total", "counter",
                "HTTP requests answered, by route pattern, method and status code.");
    for (int r = 0; r < nroutes; r++)
        for (int m = 0; m < STATS_NMETHODS; m++)
            for (int c = 0; c < STATS_NCODES; c++) {
                char code[16];

                if (t->http_requests[r][m][c] == 0)
                    continue;
                code_label(c, code, sizeof(code));
                fputs("todod_http_requests_total{", out);
                prom_route_label(out, route_names[r]);
                fprintf(out, "method=\"%s\",code=\"%s\"} %" PRIu64 "\n", method_names[m], code,
                        t->http_requests[r][m][c]);
            }
    prom_family(out, "todod_http_request_duration_seconds", "histogram",
                "Time from request parsed to response queued, by route pattern.");
    for (int r = 0; r < nroutes; r++)
        if (histogram_total(&t->http_duration[r]) > 0)
            prom_histogram_samples(out, "todod_http_request_duration_seconds", route_names[r],
                                   &t->http_duration[r]);
}

static void prom_counter(FILE *out, const char *name, const char *help, uint64_t v)
{
    prom_family(out, name, "counter", help);
    fprintf(out, "%s %" PRIu64 "\n", name, v);
}

static void prom_perf(FILE *out, const struct stats_totals *t)
{
    prom_counter(out, "todod_perf_tests_total", "Perf tests started.", t->perf_tests);
    prom_family(out, "todod_perf_todos_total", "counter",
                "Todos written by perf tests, by result.");
    fprintf(out, "todod_perf_todos_total{result=\"success\"} %" PRIu64 "\n", t->perf_todos_success);
    fprintf(out, "todod_perf_todos_total{result=\"error\"} %" PRIu64 "\n", t->perf_todos_error);
    prom_family(out, "todod_perf_batch_duration_seconds", "histogram",
                "Duration of one perf test batch.");
    prom_histogram_samples(out, "todod_perf_batch_duration_seconds", NULL, &t->perf_batch_duration);
}

static int perf_running(const struct stats_shm *shm)
{
    int n = 0;

    for (int i = 0; i < STATS_MAX_SLOTS; i++)
        if (atomic_load(&shm->slots[i].state) == STATS_SLOT_ACTIVE)
            n += atomic_load(&shm->slots[i].perf_running);
    return n;
}

static void prom_perf_running(FILE *out, const struct stats_shm *shm)
{
    prom_family(out, "todod_perf_tests_running", "gauge",
                "Performance-test shares running now, summed over the workers.");
    fprintf(out, "todod_perf_tests_running %d\n", perf_running(shm));
}

static void prom_connections(FILE *out, const struct stats_totals *t)
{
    prom_counter(out, "todod_http_accept_errors_total",
                 "Failed accept() calls (such as running out of file descriptors).",
                 t->accept_errors);
    prom_counter(out, "todod_http_client_timeouts_total",
                 "Client connections cut off by request_timeout or keepalive_timeout.",
                 t->client_timeouts);
}

static void prom_trace(FILE *out, const struct stats_totals *t)
{
    prom_counter(out, "todod_trace_spans_exported_total", "Spans accepted by the OTLP collector.",
                 t->trace_spans_exported);
    prom_counter(out, "todod_trace_spans_dropped_total",
                 "Spans dropped: export queue full, or given up on after retries.",
                 t->trace_spans_dropped);
    prom_counter(out, "todod_trace_export_errors_total",
                 "Failed OTLP export requests (each retry counts).", t->trace_export_errors);
}

static void prom_db(FILE *out, const struct stats_shm *shm, const struct stats_totals *t)
{
    prom_counter(out, "todod_db_errors_total", "Failed database queries and connections.",
                 t->db_errors);
    prom_counter(out, "todod_db_reconnects_total", "Database reconnection attempts.",
                 t->db_reconnects);
    prom_family(out, "todod_db_up", "gauge", "Database connections that are up, per worker slot.");
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &shm->slots[i];

        if (atomic_load(&s->state) == STATS_SLOT_ACTIVE)
            fprintf(out, "todod_db_up{slot=\"%d\"} %d\n", i, atomic_load(&s->db_up));
    }
}

static void prom_process(FILE *out, const struct stats_shm *shm, const char *version)
{
    prom_family(out, "todod_workers", "gauge", "Live workers of the current generation.");
    fprintf(out, "todod_workers %d\n", atomic_load(&shm->workers));
    prom_counter(out, "todod_worker_restarts_total", "Workers replaced after dying.",
                 atomic_load(&shm->worker_restarts));
    prom_family(out, "todod_build_info", "gauge", "Build information; always 1.");
    fputs("todod_build_info{version=\"", out);
    prom_label_value(out, version != NULL ? version : "");
    fputs("\"} 1\n", out);
    prom_family(out, "process_start_time_seconds", "gauge",
                "Start time of the master process since unix epoch in seconds.");
    fprintf(out, "process_start_time_seconds %.6f\n", shm->master_start_time);
}

int stats_render_prometheus(const struct stats_shm *shm, const char *const *route_names,
                            int nroutes, const char *version, FILE *out)
{
    struct stats_totals t;

    stats_sum(shm, &t);
    prom_http(out, &t, route_names, named_routes(route_names, nroutes));
    prom_perf(out, &t);
    prom_perf_running(out, shm);
    prom_connections(out, &t);
    prom_db(out, shm, &t);
    prom_trace(out, &t);
    prom_process(out, shm, version);
    return ferror(out) ? -1 : 0;
}

/* ---- /stats JSON ---- */

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
        code_label(c, code, sizeof(code));
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
    err |= json_add(obj, "count", json_object_new_uint64(histogram_total(h)));
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
                   bounds, json_object_new_double((double)bucket_bounds_us[b] / 1e3)) != 0;
    err |= json_add(obj, "bounds_ms", bounds);
    for (int r = 0; r < nroutes; r++)
        if (route_names[r] != NULL && histogram_total(&t->http_duration[r]) > 0)
            err |= json_add(routes, route_names[r], json_histogram(&t->http_duration[r]));
    err |= json_add(obj, "routes", routes);
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
    err |= json_add(obj, "perf_todos_success", json_object_new_uint64(t->perf_todos_success));
    err |= json_add(obj, "perf_todos_error", json_object_new_uint64(t->perf_todos_error));
    err |= json_add(obj, "perf_tests_running", json_object_new_int(perf_running(shm)));
    err |= json_add(obj, "accept_errors", json_object_new_uint64(t->accept_errors));
    err |= json_add(obj, "client_timeouts", json_object_new_uint64(t->client_timeouts));
    err |= json_add(obj, "trace_spans_exported", json_object_new_uint64(t->trace_spans_exported));
    err |= json_add(obj, "trace_spans_dropped", json_object_new_uint64(t->trace_spans_dropped));
    err |= json_add(obj, "trace_export_errors", json_object_new_uint64(t->trace_export_errors));
    err |= json_add(obj, "http_duration", json_durations(t, route_names, nroutes));
    err |= json_add(obj, "perf_batch_duration", json_histogram(&t->perf_batch_duration));
    err |= json_add(obj, "db_errors", json_object_new_uint64(t->db_errors));
    err |= json_add(obj, "db_reconnects", json_object_new_uint64(t->db_reconnects));
    err |= json_add(obj, "workers", json_object_new_int(atomic_load(&shm->workers)));
    err |= json_add(obj, "worker_restarts",
                    json_object_new_uint64(atomic_load(&shm->worker_restarts)));
    if (err) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

/* RFC 3339 in UTC, e.g. 2024-05-01T12:00:00Z. */
static void format_utc(int64_t unix_seconds, char *buf, size_t len)
{
    time_t when = (time_t)unix_seconds;
    struct tm tm;

    if (gmtime_r(&when, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "1970-01-01T00:00:00Z");
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

int stats_render_json(const struct stats_shm *shm, const char *const *route_names, int nroutes,
                      const char *version, FILE *out)
{
    json_object *root = json_object_new_object();
    struct stats_totals t;
    int64_t started_at = (int64_t)shm->master_start_time;
    char started[32];
    const char *text;
    int rc = -1;

    if (root == NULL)
        return -1;
    stats_sum(shm, &t);
    format_utc(started_at, started, sizeof(started));
    /* The instance: what runs, since when (the master), and the time of this
     * answer on the same clock, so that uptime needs no other clock. */
    if (json_add(root, "version", json_object_new_string(version != NULL ? version : "")) != 0 ||
        json_add(root, "started_at", json_object_new_int64(started_at)) != 0 ||
        json_add(root, "started", json_object_new_string(started)) != 0 ||
        json_add(root, "now", json_object_new_int64((int64_t)time(NULL))) != 0 ||
        json_add(root, "totals",
                 json_totals(shm, &t, route_names, named_routes(route_names, nroutes))) != 0 ||
        json_add(root, "workers", json_workers(shm)) != 0)
        goto out;
    text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
    if (text != NULL && fputs(text, out) != EOF && !ferror(out))
        rc = 0;
out:
    json_object_put(root);
    return rc;
}
