#include "perftest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/random.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "clock.h"
#include "db.h"
#include "log.h"
#include "stats.h"

/*
 * Batches in flight at once. Two keep the server busy while the next batch is
 * generated; four absorb jitter. Memory is bounded by this times one batch.
 */
#define PERF_DEPTH 4

/* Batch latencies go into a log-scale histogram (1% wide buckets from 1 us to
 * 100 s) so percentiles cost bounded memory whatever the number of batches. */
#define LAT_STEP    1.01
#define LAT_BUCKETS 1852

/* Array element type OIDs (pg_type.h), for binary array parameters. */
#define OID_BOOL    16
#define OID_VARCHAR 1043
#define OID_UUID    2950

struct perf_test {
    struct http_req *r;
    long total, batch_size;
    long next;    /* index of the next todo to generate */
    long batches; /* batches that ran (their latencies are in lat) */
    int in_flight;
    long success, errors, unknown;
    bool stopped; /* the database went away: no more batches */
    struct timespec started;
    double lat_min, lat_max; /* ms */
    uint32_t lat[LAT_BUCKETS];
};

struct perf_batch {
    struct perf_test *t;
    long rows;
    struct timespec sent;
};

static void lat_record(struct perf_test *t, double ms)
{
    double us = ms * 1000.0;
    int i = us <= 1.0 ? 0 : (int)(log(us) / log(LAT_STEP));

    if (i >= LAT_BUCKETS)
        i = LAT_BUCKETS - 1;
    t->lat[i]++;
    if (t->batches == 0 || ms < t->lat_min)
        t->lat_min = ms;
    if (ms > t->lat_max)
        t->lat_max = ms;
}

/* The q-quantile in ms: the upper edge of its bucket, within [min, max]. */
static double lat_quantile(const struct perf_test *t, long count, double q)
{
    long rank = (long)ceil(q * (double)count), seen = 0;
    int i;

    if (rank < 1)
        rank = 1;
    for (i = 0; i < LAT_BUCKETS; i++) {
        seen += t->lat[i];
        if (seen >= rank) {
            double ms = pow(LAT_STEP, i + 1) / 1000.0;

            return fmax(t->lat_min, fmin(ms, t->lat_max));
        }
    }
    return t->lat_max;
}

/* ---- binary array parameters ---- */

static char *put32(char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
    return p + 4;
}

static char *array_header(char *p, uint32_t elem_oid, long n)
{
    p = put32(p, 1); /* dimensions */
    p = put32(p, 0); /* no NULLs */
    p = put32(p, elem_oid);
    p = put32(p, (uint32_t)n);
    return put32(p, 1); /* lower bound */
}

/*
 * Version 4 UUIDs for a whole batch from one getrandom() call. libuuid's
 * uuid_generate_random() makes five system calls per id (it reseeds its
 * fallback generator every time): measured at 9 to 19 us per id on the
 * development machine, it alone would cap a worker at 50,000-110,000 todos/s. The bytes are the
 * same kind (kernel CSPRNG) and the version and variant bits are set as RFC 9562 says.
 */
static int random_uuids(uuid_t *out, long n)
{
    unsigned char *p = (unsigned char *)out;
    size_t want = (size_t)n * sizeof(uuid_t), got = 0;
    long i;

    while (got < want) {
        ssize_t r = getrandom(p + got, want - got, 0);

        if (r < 0 && errno != EINTR)
            return -1;
        if (r > 0)
            got += (size_t)r;
    }
    for (i = 0; i < n; i++) {
        out[i][6] = (out[i][6] & 0x0f) | 0x40; /* version 4 */
        out[i][8] = (out[i][8] & 0x3f) | 0x80; /* variant 10 */
    }
    return 0;
}

#define ARRAY_HEADER 20
#define TITLE_PREFIX "Performance Test Todo #"

/*
 * Sends todos [t->next, t->next + rows) as one INSERT ... SELECT FROM unnest()
 * of three binary arrays: the server parses no text, and one statement per
 * batch keeps the per-row protocol cost near COPY's.
 */
static void batch_send(struct perf_test *t);

/*
 * A batch's fate: committed (its rows count as successes), refused by the
 * server (errors; the test goes on), never sent (errors; the database is gone,
 * so the test stops), or sent on a connection that broke before its commit was
 * confirmed (unknown; the test stops). Only batches that ran are timed.
 */
static void batch_done(void *arg, const struct db_result *dr)
{
    struct perf_batch *b = arg;
    struct perf_test *t = b->t;
    struct stats_slot *slot = t->r->app->slot;
    double ms = clock_since(b->sent) * 1e3;
    long ok = 0;

    t->in_flight--;
    switch (dr->status) {
    case DB_OK:
        ok = atol(PQcmdTuples((PGresult *)dr->res));
        /* fall through */
    case DB_FAILED:
    case DB_TIMEOUT:
        lat_record(t, ms);
        t->batches++;
        t->success += ok;
        t->errors += b->rows - ok;
        stats_histogram_observe(&slot->c.perf_batch_duration, (uint64_t)(ms * 1000.0));
        atomic_fetch_add_explicit(&slot->c.perf_todos_success, ok, memory_order_relaxed);
        atomic_fetch_add_explicit(&slot->c.perf_todos_error, b->rows - ok, memory_order_relaxed);
        break;
    case DB_UNAVAILABLE:
        t->errors += b->rows;
        atomic_fetch_add_explicit(&slot->c.perf_todos_error, b->rows, memory_order_relaxed);
        t->stopped = true;
        break;
    case DB_LOST:
        t->unknown += b->rows;
        t->stopped = true;
        break;
    }
    free(b);
    batch_send(t);
}

static void perf_report(struct perf_test *t);

/* Rows never sent count as errors, in one step whatever their number. */
static void give_up_rest(struct perf_test *t)
{
    long rest = t->total - t->next;

    t->errors += rest;
    atomic_fetch_add_explicit(&t->r->app->slot->c.perf_todos_error, rest, memory_order_relaxed);
    t->next = t->total;
}

static void batch_send(struct perf_test *t)
{
    if (t->stopped && t->next < t->total)
        give_up_rest(t);
    while (t->in_flight < PERF_DEPTH && t->next < t->total) {
        long rows = t->total - t->next < t->batch_size ? t->total - t->next : t->batch_size;
        size_t title_max = sizeof(TITLE_PREFIX) + 20;
        char *ids = malloc(ARRAY_HEADER + rows * 20);
        char *titles = malloc(ARRAY_HEADER + rows * (4 + title_max));
        char *dones = malloc(ARRAY_HEADER + rows * 5);
        struct perf_batch *b = malloc(sizeof(*b));
        uuid_t *uuids = malloc(rows * sizeof(uuid_t));
        char *pi, *pt, *pd;
        const char *values[3];
        int lengths[3];
        static const int formats[3] = {1, 1, 1};
        struct db_params p = {3, values, lengths, formats};
        long i;

        if (ids == NULL || titles == NULL || dones == NULL || b == NULL || uuids == NULL) {
            free(ids), free(titles), free(dones), free(b), free(uuids);
            log_error("performance test: out of memory");
            give_up_rest(t);
            break;
        }
        pi = array_header(ids, OID_UUID, rows);
        pt = array_header(titles, OID_VARCHAR, rows);
        pd = array_header(dones, OID_BOOL, rows);
        if (random_uuids(uuids, rows) != 0) {
            free(ids), free(titles), free(dones), free(b), free(uuids);
            log_error("performance test: getrandom: %s", strerror(errno));
            give_up_rest(t);
            break;
        }
        for (i = t->next; i < t->next + rows; i++) {
            int n;

            pi = put32(pi, 16);
            memcpy(pi, uuids[i - t->next], 16);
            pi += 16;
            n = snprintf(pt + 4, title_max, TITLE_PREFIX "%ld", i);
            pt = put32(pt, (uint32_t)n) + n;
            pd = put32(pd, 1);
            *pd++ = i % 2 == 0;
        }
        values[0] = ids, lengths[0] = (int)(pi - ids);
        values[1] = titles, lengths[1] = (int)(pt - titles);
        values[2] = dones, lengths[2] = (int)(pd - dones);
        b->t = t;
        b->rows = rows;
        b->sent = clock_now();
        t->next += rows;
        /* Each batch commits alone, so a failed one costs only its own rows. */
        if (db_submit_batch(t->r->app->db, &p, batch_done, b) == 0) {
            t->in_flight++;
        } else {
            t->next -= rows;
            free(b);
            free(ids), free(titles), free(dones), free(uuids);
            give_up_rest(t);
            break;
        }
        free(ids), free(titles), free(dones), free(uuids);
    }
    if (t->in_flight == 0 && t->next >= t->total)
        perf_report(t);
}

/* ---- the report ---- */

static struct json_object *fixed(double v, int decimals)
{
    char s[64];

    snprintf(s, sizeof(s), "%.*f", decimals, v);
    return json_object_new_double_s(v, s);
}

static void perf_report(struct perf_test *t)
{
    struct http_req *r = t->r;
    double ms = clock_since(t->started) * 1e3;
    struct json_object *o = json_object_new_object(), *lat = json_object_new_object();
    long measured = t->batches > 0 ? t->batches : 1;

    atomic_fetch_add_explicit(&r->app->slot->c.perf_tests, 1, memory_order_relaxed);
    json_object_object_add(o, "total_messages", json_object_new_int64(t->total));
    json_object_object_add(o, "duration_ms", json_object_new_int64((int64_t)ms));
    json_object_object_add(o, "messages_per_second", fixed(ms > 0 ? t->total / (ms / 1e3) : 0, 1));
    json_object_object_add(o, "success_count", json_object_new_int64(t->success));
    json_object_object_add(o, "error_count", json_object_new_int64(t->errors));
    json_object_object_add(o, "success_rate", fixed(100.0 * t->success / t->total, 1));
    json_object_object_add(o, "batch_size", json_object_new_int64(t->batch_size));
    json_object_object_add(o, "batches", json_object_new_int64(t->batches));
    json_object_object_add(o, "unknown_count", json_object_new_int64(t->unknown));
    json_object_object_add(lat, "min", fixed(t->lat_min, 3));
    json_object_object_add(lat, "p50", fixed(lat_quantile(t, measured, 0.50), 3));
    json_object_object_add(lat, "p95", fixed(lat_quantile(t, measured, 0.95), 3));
    json_object_object_add(lat, "p99", fixed(lat_quantile(t, measured, 0.99), 3));
    json_object_object_add(lat, "max", fixed(t->lat_max, 3));
    json_object_object_add(o, "batch_latency_ms", lat);
    json_object_object_add(o, "worker_pid", json_object_new_int(getpid()));
    log_info("performance test: %ld todos in %.1f ms, %ld ok, %ld failed, %ld unknown", t->total,
             ms, t->success, t->errors, t->unknown);
    r->db_seconds = ms / 1e3;
    http_reply_json(r, 200, o); /* frees r, and t through its cleanup */
}

/* ---- the request ---- */

static void perf_cleanup(struct http_req *r)
{
    free(r->data);
}

/* An integer field in [1, max]; answers 422 itself and returns -1 when bad. */
static long int_field(struct http_req *r, struct json_object *body, const char *name, long def,
                      long max)
{
    struct json_object *v;
    int64_t n;

    if (!json_object_object_get_ex(body, name, &v)) {
        if (def > 0)
            return def;
        http_reply_error(r, 422, "%s is required", name);
        return -1;
    }
    if (!json_object_is_type(v, json_type_int)) {
        http_reply_error(r, 422, "%s must be an integer", name);
        return -1;
    }
    n = json_object_get_int64(v);
    if (n < 1 || n > max) {
        http_reply_error(r, 422, "%s must be from 1 to %ld", name, max);
        return -1;
    }
    return (long)n;
}

void perf_start(struct http_req *r)
{
    const struct conf *conf = r->app->conf; /* before r can be answered and freed */
    struct json_object *body = http_read_json_object(r);
    struct perf_test *t;
    long n, b;

    if (body == NULL)
        return;
    n = int_field(r, body, "message_count", 0, conf->perf_max_messages);
    b = n < 0 ? -1 : int_field(r, body, "batch_size", 10, conf->perf_max_batch);
    json_object_put(body);
    if (n < 0 || b < 0)
        return;
    if (db_pool_ready(r->app->db) == 0) {
        http_reply_error(r, 503, "database unavailable");
        return;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        http_reply_error(r, 500, "internal error");
        return;
    }
    t->r = r;
    t->total = n;
    t->batch_size = b;
    r->data = t;
    r->cleanup = perf_cleanup;
    t->started = clock_now();
    batch_send(t);
}
