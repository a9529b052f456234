#include "metrics.h"

#include <inttypes.h>

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
            snprintf(le, sizeof(le), "%g", (double)stats_bucket_bounds_us[b] / 1e6);
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
                stats_code_label(c, code, sizeof(code));
                fputs("todod_http_requests_total{", out);
                prom_route_label(out, route_names[r]);
                fprintf(out, "method=\"%s\",code=\"%s\"} %" PRIu64 "\n", stats_method_label(m),
                        code, t->http_requests[r][m][c]);
            }
    prom_family(out, "todod_http_request_duration_seconds", "histogram",
                "Time from request parsed to response queued, by route pattern.");
    for (int r = 0; r < nroutes; r++)
        if (stats_histogram_total(&t->http_duration[r]) > 0)
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
    prom_counter(out, "todod_perf_tests_cancelled_total",
                 "Perf tests stopped by DELETE /todos/performance-test/{run_id}.",
                 t->perf_tests_cancelled);
    prom_family(out, "todod_perf_todos_total", "counter",
                "Todos written by perf tests, by result.");
    fprintf(out, "todod_perf_todos_total{result=\"success\"} %" PRIu64 "\n", t->perf_todos_success);
    fprintf(out, "todod_perf_todos_total{result=\"error\"} %" PRIu64 "\n", t->perf_todos_error);
    prom_family(out, "todod_perf_batch_duration_seconds", "histogram",
                "Duration of one perf test batch.");
    prom_histogram_samples(out, "todod_perf_batch_duration_seconds", NULL, &t->perf_batch_duration);
}

static void prom_perf_running(FILE *out, const struct stats_shm *shm)
{
    prom_family(out, "todod_perf_tests_running", "gauge",
                "Performance-test shares running now, summed over the workers.");
    fprintf(out, "todod_perf_tests_running %d\n", stats_perf_running(shm));
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

static void prom_auth(FILE *out, const struct stats_totals *t)
{
    prom_family(out, "todod_auth_refusals_total", "counter",
                "Requests refused access, by reason (API.md \"Access control\").");
    for (int i = 0; i < STATS_NAUTH; i++)
        fprintf(out, "todod_auth_refusals_total{reason=\"%s\"} %" PRIu64 "\n",
                stats_auth_reason_name(i), t->auth_refusals[i]);
}

/* Each standby's lag, the largest a live worker estimates (a standby no worker
 * can judge has none). */
static void prom_standby_lag(FILE *out, const struct stats_shm *shm)
{
    prom_family(out, "todod_db_standby_lag_seconds", "gauge",
                "How far behind the primary each standby is, as the workers estimate it.");
    for (int i = 0; i < STATS_MAX_STANDBYS; i++) {
        const char *host = NULL;
        int64_t lag = -1;

        for (int j = 0; j < STATS_MAX_SLOTS; j++) {
            const struct stats_slot *s = &shm->slots[j];
            const struct stats_standby *g = &s->standbys[i];
            int64_t l;

            if (atomic_load(&s->state) != STATS_SLOT_ACTIVE ||
                atomic_load(&g->state) == STATS_STANDBY_NONE)
                continue;
            host = host != NULL ? host : g->host;
            l = atomic_load(&g->lag_us);
            if (l > lag)
                lag = l;
        }
        if (host == NULL || lag < 0)
            continue;
        fputs("todod_db_standby_lag_seconds{host=\"", out);
        prom_label_value(out, host);
        fprintf(out, "\"} %.6f\n", (double)lag / 1e6);
    }
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
    prom_family(out, "todod_db_reads_total", "counter",
                "Reads answered, by the server that served them (database_read_url).");
    fprintf(out, "todod_db_reads_total{server=\"primary\"} %" PRIu64 "\n", t->db_reads[0]);
    fprintf(out, "todod_db_reads_total{server=\"standby\"} %" PRIu64 "\n", t->db_reads[1]);
    prom_standby_lag(out, shm);
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

int metrics_render(const struct stats_shm *shm, const char *const *route_names, int nroutes,
                   const char *version, FILE *out)
{
    struct stats_totals t;

    stats_sum(shm, &t);
    prom_http(out, &t, route_names, stats_named_routes(route_names, nroutes));
    prom_perf(out, &t);
    prom_perf_running(out, shm);
    prom_connections(out, &t);
    prom_db(out, shm, &t);
    prom_trace(out, &t);
    prom_auth(out, &t);
    prom_process(out, shm, version);
    return ferror(out) ? -1 : 0;
}
