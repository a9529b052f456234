#include "perfshare.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "clock.h"
#include "decimal.h"
#include "db.h"
#include "log.h"
#include "stats.h"
#include "trace.h"

/* Array element type OIDs (pg_type.h), for binary array parameters. */
#define OID_BOOL     16
#define OID_VARCHAR  1043
#define OID_UUID     2950
#define ARRAY_HEADER 20
#define TITLE_PREFIX "Performance Test Todo #"
#define TITLE_MAX    (sizeof(TITLE_PREFIX) + 20)

/*
 * Where a share's executor stands. It is in its app's list of the executors
 * sending, or of those stopped; exec_stop() is the one way from the first to
 * the second, and the executor ends (exec_end) once no batch is in flight.
 */
enum exec_state {
    EXEC_SENDING,    /* sends its rows in batches as they fall due */
    EXEC_FINISHING,  /* sends no more (the database went away, no memory, or the worker
                        stops after its last row was sent): ends as done */
    EXEC_ABANDONING, /* sends no more, stopped before its end (its coordinator is gone, or
                        the worker stops): ends as abandoned */
    EXEC_CANCELLING, /* sends no more: its test was cancelled (DELETE); ends as done, its
                        rows never sent counted as errors */
};

struct perf_exec {
    LIST_ENTRY(perf_exec) link; /* in app->perf_execs_sending or perf_execs_stopped */
    enum exec_state state;
    struct app *app;
    struct perf_run *run;
    struct perf_share *sh;
    int64_t next; /* offset in the share of the next row to send */
    int in_flight;
    struct event *ev_pace;
    struct timespec t0;
    struct trace_context trace; /* the share's place in the test's trace */
    struct trace_span *span;    /* its INTERNAL span */
    int batch_spans;            /* batches still to be traced */
    void (*on_end)(void *ctx);
    void *ctx;
};

struct perf_batch {
    struct perf_exec *e;
    int64_t rows;
    struct timespec due; /* when it was scheduled (paced) or sent */
};

static void pump(struct perf_exec *e);
static void exec_stop(struct perf_exec *e, enum exec_state to);
static void batch_done(void *arg, const struct db_result *dr);

/* ---- binary arrays ---- */

static char *put32(char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
    return p + 4;
}

static char *array_header(char *p, uint32_t elem_oid, int64_t n)
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
 * fallback generator every time): enough on its own to cap a worker's rate
 * (tests/README.md has the figures).
 * The bytes are the same kind (kernel CSPRNG) and the version and variant bits
 * are set as RFC 9562 says.
 */
static int random_uuids(unsigned char *out, int64_t n)
{
    size_t want = (size_t)n * 16, got = 0;
    int64_t i;

    while (got < want) {
        ssize_t r = getrandom(out + got, want - got, 0);

        if (r < 0 && errno != EINTR)
            return -1;
        if (r > 0)
            got += (size_t)r;
    }
    for (i = 0; i < n; i++) {
        out[i * 16 + 6] = (out[i * 16 + 6] & 0x0f) | 0x40; /* version 4 */
        out[i * 16 + 8] = (out[i * 16 + 8] & 0x3f) | 0x80; /* variant 10 */
    }
    return 0;
}

static int uuid_order(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

/* TITLE_PREFIX and the decimal digits of i >= 0 (snprintf was the largest
 * share of a worker's time building a batch); returns the bytes written. */
static int put_title(char *out, int64_t i)
{
    _Static_assert(sizeof(TITLE_PREFIX) - 1 + DECIMAL_U64_MAX <= TITLE_MAX, "title fits");
    memcpy(out, TITLE_PREFIX, sizeof(TITLE_PREFIX) - 1);
    return (int)(sizeof(TITLE_PREFIX) - 1 +
                 decimal_u64(out + sizeof(TITLE_PREFIX) - 1, (uint64_t)i, 0));
}

/*
 * Sends rows [next, next + rows) of the share as one INSERT ... SELECT FROM
 * unnest() of three binary arrays: the server parses no text, and one
 * statement per batch keeps the per-row protocol cost near COPY's. The arrays
 * are built in one allocation that the database layer takes over.
 */
static int send_batch(struct perf_exec *e, int64_t rows, struct perf_batch *b)
{
    size_t ids_len = ARRAY_HEADER + (size_t)rows * 20,
           titles_cap = ARRAY_HEADER + (size_t)rows * (4 + TITLE_MAX),
           dones_len = ARRAY_HEADER + (size_t)rows * 5;
    char *buf = malloc(ids_len + titles_cap + dones_len + (size_t)rows * 16);
    char *ids, *titles, *dones, *pi, *pt, *pd;
    unsigned char *uuids;
    const char *values[3];
    int lengths[3];
    static const int formats[3] = {1, 1, 1};
    struct db_params p = {3, values, lengths, formats};
    int64_t i, first = e->sh->first + e->next;

    if (buf == NULL)
        return -1;
    ids = buf;
    titles = ids + ids_len;
    dones = titles + titles_cap;
    uuids = (unsigned char *)dones + dones_len;
    if (random_uuids(uuids, rows) != 0) {
        log_error("performance test: getrandom: %s", strerror(errno));
        free(buf);
        return -1;
    }
    /* In the primary key's order (PostgreSQL compares uuids byte by byte):
     * the index descents of one batch then share their pages while they are
     * hot, which makes the INSERT cheaper for the server (tests/README.md). */
    qsort(uuids, (size_t)rows, 16, uuid_order);
    pi = array_header(ids, OID_UUID, rows);
    pt = array_header(titles, OID_VARCHAR, rows);
    pd = array_header(dones, OID_BOOL, rows);
    for (i = 0; i < rows; i++) {
        int n;

        pi = put32(pi, 16);
        memcpy(pi, uuids + i * 16, 16);
        pi += 16;
        n = put_title(pt + 4, first + i);
        pt = put32(pt, (uint32_t)n) + n;
        pd = put32(pd, 1);
        *pd++ = (first + i) % 2 == 0;
    }
    values[0] = ids, lengths[0] = (int)(pi - ids);
    values[1] = titles, lengths[1] = (int)(pt - titles);
    values[2] = dones, lengths[2] = (int)(pd - dones);
    return db_submit_batch(e->app->db, &p, buf,
                           e->span != NULL && e->batch_spans-- > 0
                               ? &(struct db_trace){&e->trace, e->span}
                               : NULL,
                           batch_done, b) == 0
               ? 0
               : -1;
}

/* ---- counting ---- */

static void count_rows(struct perf_exec *e, _Atomic int64_t *counter, int64_t rows,
                       _Atomic uint64_t *global)
{
    atomic_fetch_add_explicit(counter, rows, memory_order_relaxed);
    if (global != NULL)
        atomic_fetch_add_explicit(global, (uint64_t)rows, memory_order_relaxed);
}

/*
 * A batch's fate: committed (its rows are successes), refused by the server
 * (errors; the share goes on), never sent (errors; the database is gone, so
 * the share stops), or sent on a connection that broke before its commit was
 * confirmed (unknown; the share stops). Only batches that ran are timed, from
 * their scheduled start when the test is paced.
 */
static void batch_done(void *arg, const struct db_result *dr)
{
    struct perf_batch *b = arg;
    struct perf_exec *e = b->e;
    struct stats_slot *slot = e->app->slot;
    uint64_t us = (uint64_t)(clock_since(b->due) * 1e6);
    int64_t ok = 0;

    e->in_flight--;
    switch (dr->status) {
    case DB_OK:
        ok = atoll(PQcmdTuples((PGresult *)dr->res));
        /* fall through */
    case DB_FAILED:
    case DB_TIMEOUT:
        perf_hist_shm_record(&e->sh->latency, us);
        stats_histogram_observe(&slot->c.perf_batch_duration, us);
        count_rows(e, &e->sh->success, ok, &slot->c.perf_todos_success);
        count_rows(e, &e->sh->errors, b->rows - ok, &slot->c.perf_todos_error);
        atomic_fetch_add_explicit(&e->sh->batches, 1, memory_order_relaxed);
        break;
    case DB_UNAVAILABLE:
        count_rows(e, &e->sh->errors, b->rows, &slot->c.perf_todos_error);
        exec_stop(e, EXEC_FINISHING);
        break;
    case DB_LOST:
        count_rows(e, &e->sh->unknown, b->rows, NULL);
        exec_stop(e, EXEC_FINISHING);
        break;
    }
    free(b);
    pump(e);
}

/* ---- the executor ---- */

/* The pid of the worker that coordinates run, while the run is active (0
 * otherwise): the process to signal when one of its shares ends. */
static int coordinator_pid(struct stats_shm *shm, struct perf_run *run)
{
    int slot = run->coordinator_slot;

    if (atomic_load(&run->state) != PERF_RUN_ACTIVE || slot < 0 || slot >= STATS_MAX_SLOTS)
        return 0;
    return atomic_load(&shm->slots[slot].pid);
}

/*
 * The one transition: out of EXEC_SENDING, to `to`, once (the first reason
 * stands). No batch is sent from now on, so none is waited for on the
 * schedule; the executor ends when those in flight are back (pump).
 */
static void exec_stop(struct perf_exec *e, enum exec_state to)
{
    if (e->state != EXEC_SENDING)
        return;
    e->state = to;
    evtimer_del(e->ev_pace);
    LIST_REMOVE(e, link);
    LIST_INSERT_HEAD(&e->app->perf_execs_stopped, e, link);
}

/*
 * A share ended (its state says how): the coordinator looks now rather than at
 * its next poll. This worker's own test hears it through on_end; another
 * worker's coordinator through SIGUSR1 (it is the worker of an active run's
 * slot). Called last: on_end may end the test.
 */
static void share_ended(struct app *app, struct perf_run *run, void (*on_end)(void *), void *ctx)
{
    int pid;

    if (on_end != NULL) {
        on_end(ctx);
        return;
    }
    pid = coordinator_pid(app->shm, run);
    if (pid > 0 && run->coordinator_slot != app->slot_index)
        kill(pid, SIGUSR1);
}

static void exec_end(struct perf_exec *e)
{
    int64_t unsent = e->sh->count - e->next;
    void (*on_end)(void *) = e->on_end;
    void *ctx = e->ctx;
    struct app *app = e->app;
    struct perf_run *run = e->run;

    /* Rows never sent are known not committed, counted in one step. */
    if (unsent > 0)
        count_rows(e, &e->sh->errors, unsent, &e->app->slot->c.perf_todos_error);
    e->next = e->sh->count;
    LIST_REMOVE(e, link);
    atomic_fetch_sub(&e->app->slot->perf_running, 1);
    if (e->ev_pace != NULL)
        event_free(e->ev_pace);
    log_info("performance test %s: share of %lld todos %s", e->run->run_id, (long long)e->sh->count,
             e->state == EXEC_ABANDONING   ? "abandoned"
             : e->state == EXEC_CANCELLING ? "cancelled"
                                           : "done");
    span_set_int(e->span, TRACE_ATTR_PERF_SUCCESS, atomic_load(&e->sh->success));
    span_set_int(e->span, TRACE_ATTR_PERF_ERRORS, atomic_load(&e->sh->errors));
    span_set_int(e->span, TRACE_ATTR_PERF_BATCHES, atomic_load(&e->sh->batches));
    if (e->state == EXEC_ABANDONING)
        span_set_error(e->span, "abandoned");
    span_end(e->span);
    perf_share_end(e->run, e->sh,
                   e->state == EXEC_ABANDONING ? PERF_SHARE_ABANDONED : PERF_SHARE_DONE);
    free(e);
    share_ended(app, run, on_end, ctx);
    if (app->on_share_end != NULL)
        app->on_share_end(app); /* a stopping worker may be waiting for it */
}

static void on_pace(evutil_socket_t fd, short what, void *arg)
{
    pump(arg);
}

/* When row offset `next` is due on the schedule (the share's rate). */
static struct timespec due_at(const struct perf_exec *e, int64_t next)
{
    return clock_add(e->t0, (double)next / e->sh->rate);
}

/* Sends what is due, up to PERF_DEPTH batches in flight; bounded work. */
static void pump(struct perf_exec *e)
{
    if (atomic_load(&e->run->state) != PERF_RUN_ACTIVE)
        exec_stop(e, EXEC_ABANDONING); /* its coordinator is gone */
    else if (perf_run_cancelled(e->run))
        exec_stop(e, EXEC_CANCELLING); /* at this batch boundary */
    while (e->state == EXEC_SENDING && e->in_flight < PERF_DEPTH && e->next < e->sh->count) {
        int64_t rows =
            e->sh->count - e->next < e->sh->batch_size ? e->sh->count - e->next : e->sh->batch_size;
        struct perf_batch *b = malloc(sizeof(*b));
        struct timespec now = clock_now();

        if (b == NULL) {
            exec_stop(e, EXEC_FINISHING);
            break;
        }
        b->e = e;
        b->rows = rows;
        b->due = now;
        if (e->sh->rate > 0) {
            b->due = due_at(e, e->next);
            if (clock_diff(b->due, now) > 0) {
                struct timeval tv = clock_timeval(clock_diff(b->due, now));

                free(b);
                evtimer_add(e->ev_pace, &tv);
                return;
            }
            perf_hist_shm_record(&e->sh->lag, (uint64_t)(clock_diff(now, b->due) * 1e6));
        }
        if (send_batch(e, rows, b) != 0) {
            free(b);
            exec_stop(e, EXEC_FINISHING); /* the database is unreachable */
            break;
        }
        e->next += rows;
        e->in_flight++;
        atomic_fetch_add_explicit(&e->sh->sent, rows, memory_order_relaxed);
    }
    if (e->in_flight == 0 && (e->state != EXEC_SENDING || e->next >= e->sh->count))
        exec_end(e);
}

int perfshare_start(struct app *app, struct perf_run *run, int index, void (*on_end)(void *ctx),
                    void *ctx)
{
    struct perf_share *sh = &run->shares[index];
    struct perf_exec *e = calloc(1, sizeof(*e));
    int expected = PERF_SHARE_POSTED;

    if (!atomic_compare_exchange_strong(&sh->state, &expected, PERF_SHARE_RUNNING)) {
        free(e);
        return -1; /* not posted (any more) */
    }
    atomic_store(&sh->pid, (int)getpid());
    if (e == NULL || (e->ev_pace = evtimer_new(app->base, on_pace, e)) == NULL) {
        free(e);
        atomic_fetch_add(&sh->errors, sh->count);
        perf_share_end(run, sh, PERF_SHARE_ABANDONED);
        share_ended(app, run, on_end, ctx);
        return -1;
    }
    e->app = app;
    e->run = run;
    e->sh = sh;
    e->on_end = on_end;
    e->ctx = ctx;
    e->t0.tv_sec = (time_t)(sh->t0_ns / 1000000000);
    e->t0.tv_nsec = (long)(sh->t0_ns % 1000000000);
    /* A child span of the test's, in the same trace, whichever worker runs it. */
    if (sh->traceparent[0] != '\0' && trace_parse_traceparent(sh->traceparent, &e->trace) == 0) {
        e->span =
            span_start(app->tracer, &e->trace, NULL, "performance-test share", SPAN_KIND_INTERNAL);
        span_set_int(e->span, TRACE_ATTR_PERF_MESSAGES, sh->count);
        span_set_int(e->span, TRACE_ATTR_PERF_BATCH, sh->batch_size);
        span_set_int(e->span, TRACE_ATTR_PERF_FIRST, sh->first);
        e->batch_spans = sh->batch_spans;
    }
    e->state = EXEC_SENDING;
    LIST_INSERT_HEAD(&app->perf_execs_sending, e, link);
    atomic_fetch_add(&app->slot->perf_running, 1);
    if (app->stop_requested && app->abandon_shares)
        exec_stop(e, EXEC_ABANDONING);
    pump(e);
    return 0;
}

void perfshare_scan(struct app *app)
{
    struct perf_board *board = &app->shm->perf;
    struct perf_exec *e, *next;

    /* A cancelled test's shares stop now, not when their pace timer fires. */
    for (e = LIST_FIRST(&app->perf_execs_sending); e != NULL; e = next) {
        next = LIST_NEXT(e, link);
        if (perf_run_cancelled(e->run))
            pump(e); /* stops it, and ends it once no batch is in flight */
    }

    for (int i = 0; i < PERF_MAX_RUNS; i++) {
        struct perf_run *run = &board->runs[i];
        int n = perf_run_nshares(run);

        if (atomic_load(&run->state) != PERF_RUN_ACTIVE)
            continue;
        for (int k = 0; k < n; k++) {
            struct perf_share *sh = &run->shares[k];

            if (sh->worker_slot == app->slot_index && atomic_load(&sh->state) == PERF_SHARE_POSTED)
                perfshare_start(app, run, k, NULL, NULL);
        }
    }
}

void perfshare_abandon_all(struct app *app)
{
    struct perf_exec *e;

    app->abandon_shares = true;
    /* exec_stop() takes each out of the list. */
    while ((e = LIST_FIRST(&app->perf_execs_sending)) != NULL) {
        exec_stop(e, e->next < e->sh->count ? EXEC_ABANDONING : EXEC_FINISHING);
        pump(e); /* may end it (and free it) at once */
    }
}

int perfshare_running(const struct app *app)
{
    const struct perf_exec *e;
    int n = 0;

    LIST_FOREACH(e, &app->perf_execs_sending, link)
        n++;
    LIST_FOREACH(e, &app->perf_execs_stopped, link)
        n++;
    return n;
}
