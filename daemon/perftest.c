/*
 * The coordinator of a performance test: the request, its shares on this host
 * and on other nodes, progress lines and the report. Why one file of about
 * 1,000 lines: a test's state and its report are read and written at every
 * step of its life; perfshare.c (a worker's share), perfnode.c (a node's) and
 * perfcancel.c (stopping one) are apart.
 */
#include "perftest.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "clock.h"
#include "conf.h"
#include "db.h"
#include "log.h"
#include "perfboard.h"
#include "perfcancel.h"
#include "perfnode.h"
#include "perfshare.h"
#include "stats.h"
#include "trace.h"

/* The coordinator is woken when another worker's share ends (SIGUSR1 from that
 * worker, or from the master when a worker dies); this slow look is a safety
 * net only. */
#define POLL_MS    1000
#define MIN_RATE   1.0 /* todos/s: the slowest test lasts perf_max_messages seconds */
#define MAX_RATE   1e9
#define NODE_IDLE  10.0 /* seconds beyond the progress interval a node may stay silent */
#define MAX_NODES  16
#define LOCAL_NODE "local"

/*
 * Where a test stands. Only a running test is in its app's list (perf_tests);
 * test_enter() is the one place the state changes, and report() the one way
 * out of running, to one of the two ends.
 */
enum test_state {
    TEST_STARTING, /* its request is being checked; nothing posted or started yet */
    TEST_RUNNING,  /* shares and nodes at work, followed until all are over */
    TEST_REPORTED, /* answered once every share and node was over */
    TEST_CUT,      /* answered as its worker stopped, before every share and node was over */
};

/*
 * A performance test, as the worker that took the request runs it: it splits
 * the rows over this host's workers (shares on the shared-memory board) and the
 * other instances of perf_nodes (HTTP), starts its own share, follows the
 * others, streams progress when asked, and answers one combined report.
 *
 * workers_all, share and streaming are not states: the request sets them
 * before the test runs (what to pass on to the nodes, whose test this is, how
 * to answer), and they never change.
 */
struct perf_test {
    LIST_ENTRY(perf_test) link; /* in app->perf_tests while running */
    enum test_state state;
    struct http_req *r;
    struct app *app;
    char run_id[PERF_RUN_ID_LEN];
    struct perf_run *run;
    int nshares; /* shares posted on the run (the board's count is any worker's to write) */
    int64_t total, batch_size, offset;
    double rate;
    int interval_ms;
    int workers;      /* local shares */
    bool workers_all; /* "workers": "all", passed on to the nodes */
    bool share;       /* this request is another node's share of its test */
    bool streaming;   /* progress lines, then the report, as NDJSON */
    bool cancelling;  /* DELETE: its shares and nodes were told to stop */
    bool handed;      /* its report is on the board for the worker that cancelled it */
    struct timespec started;
    struct event *ev_tick, *ev_poll;
    int64_t last_done;
    struct timespec last_tick;
    struct evdns_base *dns;
    struct trace_span *span;             /* INTERNAL "performance-test", child of the request's */
    char traceparent[TRACE_PARENT_SIZE]; /* its children's parent ("" untraced) */
    int nnodes;
    struct {
        char url[300];
        int64_t first, count;
        struct perf_node *node;
    } nodes[MAX_NODES];
};

static void hand_over(struct perf_test *t);
static void signal_workers(const struct perf_test *t);

/* ---- sums ---- */

/* A node given no rows was never asked: it is over, with nothing to count. */
static const struct perf_node_state *node_state(const struct perf_test *t, int i)
{
    static struct perf_node_state empty = {.finished = true};

    if (empty.latency.min_us == 0) {
        perf_hist_init(&empty.latency);
        perf_hist_init(&empty.lag);
    }
    return t->nodes[i].node != NULL ? perfnode_state(t->nodes[i].node) : &empty;
}

struct perf_sums {
    int64_t success, errors, unknown, batches;
    struct perf_hist latency, lag;
    int workers;
    double last_end; /* seconds after the start when the last share ended */
};

/*
 * A share's counts, with what a worker that died left unsaid: rows it sent
 * without confirmation are unknown, rows it never sent are errors. A test cut
 * short (its coordinator stops) counts every unconfirmed row of a share still
 * running as unknown: its worker may send more before it sees the run orphaned.
 */
static void share_counts(const struct perf_test *t, const struct perf_share *sh, int64_t *ok,
                         int64_t *err, int64_t *unk)
{
    int64_t sent = atomic_load(&sh->sent), confirmed;

    *ok = atomic_load(&sh->success);
    *err = atomic_load(&sh->errors);
    *unk = atomic_load(&sh->unknown);
    confirmed = *ok + *err + *unk;
    if (confirmed >= sh->count)
        return;
    if (perf_share_over(atomic_load(&sh->state))) {
        int64_t lost = sent > confirmed ? sent - confirmed : 0;

        *unk += lost;
        *err += sh->count - confirmed - lost;
    } else if (t->state == TEST_CUT) {
        *unk += sh->count - confirmed;
    }
}

static void sum_up(const struct perf_test *t, struct perf_sums *s)
{
    int64_t t0 = (int64_t)t->started.tv_sec * 1000000000 + t->started.tv_nsec;

    memset(s, 0, sizeof(*s));
    perf_hist_init(&s->latency);
    perf_hist_init(&s->lag);
    for (int k = 0; k < t->nshares; k++) {
        const struct perf_share *sh = &t->run->shares[k];
        int64_t ok, err, unk, ended = atomic_load(&sh->ended_ns);

        share_counts(t, sh, &ok, &err, &unk);
        s->success += ok;
        s->errors += err;
        s->unknown += unk;
        s->batches += atomic_load(&sh->batches);
        perf_hist_merge_shm(&s->latency, &sh->latency);
        perf_hist_merge_shm(&s->lag, &sh->lag);
        s->workers++;
        if (perf_share_over(atomic_load(&sh->state)) && (double)(ended - t0) / 1e9 > s->last_end)
            s->last_end = (double)(ended - t0) / 1e9;
    }
    for (int i = 0; i < t->nnodes; i++) {
        const struct perf_node_state *ns = node_state(t, i);
        int64_t confirmed = ns->success + ns->errors + ns->unknown;

        s->success += ns->success;
        s->errors += ns->errors;
        s->unknown += ns->unknown;
        s->batches += ns->batches;
        perf_hist_merge(&s->latency, &ns->latency);
        perf_hist_merge(&s->lag, &ns->lag);
        s->workers += ns->workers;
        if (ns->finished && confirmed < t->nodes[i].count) {
            /* Gone before its report: never started means never sent. */
            if (ns->started)
                s->unknown += t->nodes[i].count - confirmed;
            else
                s->errors += t->nodes[i].count - confirmed;
        }
    }
}

static bool shares_over(const struct perf_test *t)
{
    for (int k = 0; k < t->nshares; k++)
        if (!perf_share_over(atomic_load(&t->run->shares[k].state)))
            return false;
    return true;
}

static bool all_over(const struct perf_test *t)
{
    if (!shares_over(t))
        return false;
    for (int i = 0; i < t->nnodes; i++)
        if (!node_state(t, i)->finished)
            return false;
    return true;
}

/* ---- JSON ---- */

/* v as a JSON number written with that many decimals ("12.500"). */
static struct json_object *rounded_number(double v, int decimals)
{
    char s[64];

    snprintf(s, sizeof(s), "%.*f", decimals, v);
    return json_object_new_double_s(v, s);
}

enum { SUMMARY_MIN = 1, SUMMARY_P95 = 2, SUMMARY_MAX = 4 };

/* p50 and p99, and what `parts` adds, in ms. */
static struct json_object *latency_summary(const struct perf_hist *h, int parts)
{
    struct json_object *o = json_object_new_object();

    if (parts & SUMMARY_MIN)
        json_object_object_add(o, "min", rounded_number(h->count ? (double)h->min_us / 1e3 : 0, 3));
    json_object_object_add(o, "p50", rounded_number(perf_hist_quantile(h, 0.50), 3));
    if (parts & SUMMARY_P95)
        json_object_object_add(o, "p95", rounded_number(perf_hist_quantile(h, 0.95), 3));
    json_object_object_add(o, "p99", rounded_number(perf_hist_quantile(h, 0.99), 3));
    if (parts & SUMMARY_MAX)
        json_object_object_add(o, "max", rounded_number((double)h->max_us / 1e3, 3));
    return o;
}

static struct json_object *per_worker(const struct perf_test *t)
{
    struct json_object *arr = json_object_new_array();
    int64_t t0 = (int64_t)t->started.tv_sec * 1000000000 + t->started.tv_nsec;

    for (int k = 0; k < t->nshares; k++) {
        const struct perf_share *sh = &t->run->shares[k];
        struct json_object *o = json_object_new_object();
        int64_t ok, err, unk, ended = atomic_load(&sh->ended_ns);
        double ms = ended > t0 ? (double)(ended - t0) / 1e6 : clock_since(t->started) * 1e3;

        share_counts(t, sh, &ok, &err, &unk);
        json_object_object_add(o, "node", json_object_new_string(LOCAL_NODE));
        json_object_object_add(o, "worker_pid", json_object_new_int(atomic_load(&sh->pid)));
        json_object_object_add(o, "first", json_object_new_int64(sh->first));
        json_object_object_add(o, "success_count", json_object_new_int64(ok));
        json_object_object_add(o, "error_count", json_object_new_int64(err));
        json_object_object_add(o, "unknown_count", json_object_new_int64(unk));
        json_object_object_add(o, "duration_ms", json_object_new_int64((int64_t)ms));
        json_object_object_add(o, "messages_per_second",
                               rounded_number(ms > 0 ? (double)sh->count / (ms / 1e3) : 0, 1));
        /* A share still running when its test is cut stops at its next batch. */
        if (atomic_load(&sh->state) == PERF_SHARE_ABANDONED ||
            (t->state == TEST_CUT && !perf_share_over(atomic_load(&sh->state))))
            json_object_object_add(o, "abandoned", json_object_new_boolean(true));
        json_object_array_add(arr, o);
    }
    for (int i = 0; i < t->nnodes; i++) {
        const struct perf_node_state *ns = node_state(t, i);
        size_t n = ns->per_worker ? json_object_array_length(ns->per_worker) : 0;

        for (size_t j = 0; j < n; j++) {
            struct json_object *w = json_object_array_get_idx(ns->per_worker, j), *copy = NULL;

            if (json_object_deep_copy(w, &copy, NULL) != 0)
                continue;
            json_object_object_add(copy, "node", json_object_new_string(t->nodes[i].url));
            json_object_array_add(arr, copy);
        }
    }
    return arr;
}

static struct json_object *per_node(const struct perf_test *t)
{
    struct json_object *arr = json_object_new_array(), *o = json_object_new_object();
    int64_t ok = 0, err = 0, unk = 0;

    for (int k = 0; k < t->nshares; k++) {
        int64_t a, b, c;

        share_counts(t, &t->run->shares[k], &a, &b, &c);
        ok += a, err += b, unk += c;
    }
    json_object_object_add(o, "node", json_object_new_string(LOCAL_NODE));
    json_object_object_add(o, "success_count", json_object_new_int64(ok));
    json_object_object_add(o, "error_count", json_object_new_int64(err));
    json_object_object_add(o, "unknown_count", json_object_new_int64(unk));
    json_object_object_add(o, "workers", json_object_new_int(t->nshares));
    json_object_array_add(arr, o);
    for (int i = 0; i < t->nnodes; i++) {
        const struct perf_node_state *ns = node_state(t, i);
        int64_t confirmed = ns->success + ns->errors + ns->unknown, rest = 0;

        if (ns->finished && confirmed < t->nodes[i].count)
            rest = t->nodes[i].count - confirmed;
        o = json_object_new_object();
        json_object_object_add(o, "node", json_object_new_string(t->nodes[i].url));
        json_object_object_add(o, "success_count", json_object_new_int64(ns->success));
        json_object_object_add(o, "error_count",
                               json_object_new_int64(ns->errors + (ns->started ? 0 : rest)));
        json_object_object_add(o, "unknown_count",
                               json_object_new_int64(ns->unknown + (ns->started ? rest : 0)));
        json_object_object_add(o, "workers", json_object_new_int(ns->workers));
        if (ns->error[0] != '\0')
            json_object_object_add(o, "error", json_object_new_string(ns->error));
        json_object_array_add(arr, o);
    }
    return arr;
}

/* The report; typed (NDJSON's last line) or as the DELETE answers it. */
static struct json_object *report_json(struct perf_test *t, bool typed)
{
    struct json_object *o = json_object_new_object();
    struct perf_sums s;
    double secs;

    sum_up(t, &s);
    secs = s.last_end > 0 ? s.last_end : clock_since(t->started);
    if (typed)
        json_object_object_add(o, "type", json_object_new_string("report"));
    json_object_object_add(o, "total_messages", json_object_new_int64(t->total));
    json_object_object_add(o, "duration_ms", json_object_new_int64((int64_t)(secs * 1e3)));
    json_object_object_add(o, "messages_per_second",
                           rounded_number(secs > 0 ? (double)t->total / secs : 0, 1));
    json_object_object_add(o, "success_count", json_object_new_int64(s.success));
    json_object_object_add(o, "error_count", json_object_new_int64(s.errors));
    json_object_object_add(o, "success_rate",
                           rounded_number(100.0 * (double)s.success / (double)t->total, 1));
    json_object_object_add(o, "batch_size", json_object_new_int64(t->batch_size));
    json_object_object_add(o, "batches", json_object_new_int64(s.batches));
    json_object_object_add(o, "batch_latency_ms",
                           latency_summary(&s.latency, SUMMARY_MIN | SUMMARY_P95 | SUMMARY_MAX));
    json_object_object_add(o, "worker_pid", json_object_new_int(getpid()));
    json_object_object_add(o, "run_id", json_object_new_string(t->run_id));
    json_object_object_add(o, "unknown_count", json_object_new_int64(s.unknown));
    json_object_object_add(o, "workers", json_object_new_int(s.workers));
    json_object_object_add(o, "nodes", json_object_new_int(1 + t->nnodes));
    json_object_object_add(o, "per_worker", per_worker(t));
    if (t->nnodes > 0)
        json_object_object_add(o, "per_node", per_node(t));
    if (t->rate > 0)
        json_object_object_add(o, "schedule_lag_ms", latency_summary(&s.lag, SUMMARY_MAX));
    if (t->r->trace.valid) {
        char id[TRACE_ID_HEX_SIZE];

        trace_context_id_hex(&t->r->trace, id);
        json_object_object_add(o, "trace_id", json_object_new_string(id));
    }
    if (t->cancelling)
        json_object_object_add(o, "cancelled", json_object_new_boolean(true));
    if (t->share && typed) {
        json_object_object_add(o, "latency_histogram", perfnode_hist_json(&s.latency));
        json_object_object_add(o, "lag_histogram", perfnode_hist_json(&s.lag));
    }
    return o;
}

/* ---- streaming ---- */

static void write_line(struct perf_test *t, struct json_object *o)
{
    size_t len;
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    char *line = malloc(len + 1);

    if (line != NULL) {
        memcpy(line, s, len);
        line[len] = '\n';
        http_stream_write(t->r, line, len + 1);
        free(line);
    }
    json_object_put(o);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct perf_test *t = arg;
    struct json_object *o = json_object_new_object();
    struct perf_sums s;
    double elapsed = clock_since(t->started), dt = clock_since(t->last_tick);
    int64_t done;

    sum_up(t, &s);
    done = s.success + s.errors + s.unknown;
    json_object_object_add(o, "type", json_object_new_string("progress"));
    json_object_object_add(o, "run_id", json_object_new_string(t->run_id));
    json_object_object_add(o, "elapsed_ms", json_object_new_int64((int64_t)(elapsed * 1e3)));
    json_object_object_add(o, "success_count", json_object_new_int64(s.success));
    json_object_object_add(o, "error_count", json_object_new_int64(s.errors));
    json_object_object_add(o, "unknown_count", json_object_new_int64(s.unknown));
    json_object_object_add(o, "batches", json_object_new_int64(s.batches));
    json_object_object_add(o, "messages_per_second",
                           rounded_number(elapsed > 0 ? (double)done / elapsed : 0, 1));
    json_object_object_add(o, "interval_messages_per_second",
                           rounded_number(dt > 0 ? (double)(done - t->last_done) / dt : 0, 1));
    json_object_object_add(o, "batch_latency_ms", latency_summary(&s.latency, 0));
    if (t->share) {
        json_object_object_add(o, "latency_histogram", perfnode_hist_json(&s.latency));
        json_object_object_add(o, "lag_histogram", perfnode_hist_json(&s.lag));
    }
    t->last_done = done;
    t->last_tick = clock_now();
    write_line(t, o);
}

/* ---- the end ---- */

static void test_enter(struct perf_test *t, enum test_state to)
{
    if (to == TEST_RUNNING)
        LIST_INSERT_HEAD(&t->app->perf_tests, t, link);
    else if (t->state == TEST_RUNNING)
        LIST_REMOVE(t, link);
    t->state = to;
}

static void perf_free(struct http_req *r)
{
    struct perf_test *t = r->data;

    if (t->state == TEST_RUNNING)
        LIST_REMOVE(t, link);
    if (t->ev_tick != NULL)
        event_free(t->ev_tick);
    if (t->ev_poll != NULL)
        event_free(t->ev_poll);
    for (int i = 0; i < t->nnodes; i++)
        perfnode_free(t->nodes[i].node);
    if (t->dns != NULL)
        evdns_base_free(t->dns, 0);
    span_end(t->span);
    /* Shares still running stop at their next batch; the last one frees the run. */
    if (t->run != NULL && t->handed)
        hand_over(t); /* its canceller frees it */
    else if (t->run != NULL && shares_over(t))
        perf_board_release(t->run);
    else if (t->run != NULL)
        perf_run_orphan(t->run);
    free(t);
}

/*
 * A copy of the report on the board, for the worker that cancelled the test,
 * which answers it to its DELETE; without per_worker when it would not fit,
 * and at worst a report of the counts alone. Its worker is woken.
 */
static void hand_report(struct perf_test *t)
{
    static const char *const drop[] = {"per_worker", "per_node", NULL};
    struct json_object *o = report_json(t, false);
    const char *s;
    size_t len;

    for (int i = 0;; i++) {
        s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
        if (len <= PERF_REPORT_MAX || drop[i] == NULL)
            break;
        json_object_object_del(o, drop[i]);
    }
    t->handed = perf_run_put_report(t->run, s, len);
    json_object_put(o);
    if (!t->handed)
        log_error("performance test %s: its report does not fit the board", t->run_id);
}

/* The run is the canceller's now: it is woken to answer (this worker, or another). */
static void hand_over(struct perf_test *t)
{
    int slot = perf_run_canceller(t->run), pid;

    perf_run_hand_over(t->run);
    if (slot == t->app->slot_index) {
        perfcancel_wake(t->app);
        return;
    }
    pid = slot >= 0 && slot < STATS_MAX_SLOTS ? atomic_load(&t->app->shm->slots[slot].pid) : 0;
    if (pid > 0)
        kill(pid, SIGUSR1);
}

/* The test ends (end: TEST_REPORTED or TEST_CUT) and answers. */
static void report(struct perf_test *t, enum test_state end)
{
    struct http_req *r = t->r;
    struct json_object *o;
    struct perf_sums s;

    test_enter(t, end);
    o = report_json(t, t->streaming);
    sum_up(t, &s);
    if (!t->share)
        atomic_fetch_add_explicit(&t->app->slot->c.perf_tests, 1, memory_order_relaxed);
    if (!t->share && t->cancelling)
        atomic_fetch_add_explicit(&t->app->slot->c.perf_tests_cancelled, 1, memory_order_relaxed);
    /* Over, every batch counted: the report is its canceller's to answer. */
    if (end == TEST_REPORTED && t->cancelling)
        hand_report(t);
    log_info(
        "performance test %s: %lld todos, %lld committed, %lld failed, %lld unknown, %d workers, "
        "%d nodes%s",
        t->run_id, (long long)t->total, (long long)s.success, (long long)s.errors,
        (long long)s.unknown, s.workers, 1 + t->nnodes, t->cancelling ? " (cancelled)" : "");
    r->db_seconds = clock_since(t->started);
    span_set_int(t->span, TRACE_ATTR_PERF_SUCCESS, s.success);
    span_set_int(t->span, TRACE_ATTR_PERF_ERRORS, s.errors);
    span_set_int(t->span, TRACE_ATTR_PERF_UNKNOWN, s.unknown);
    span_set_int(t->span, TRACE_ATTR_PERF_BATCHES, s.batches);
    if (s.errors + s.unknown > 0)
        span_set_error(t->span, "some todos were not committed");
    span_end(t->span);
    t->span = NULL;
    if (t->streaming) {
        write_line(t, o);
        http_stream_end(r); /* frees r, and t through its cleanup */
    } else {
        http_reply_json(r, 200, o);
    }
}

/*
 * DELETE on some worker of this instance cancelled the run: the shares stop at
 * their next batch (this worker's own in perfshare_scan, the others' when
 * signalled), each node still running is told the same with the canceller's
 * Authorization header, and the test answers as usual once all are over.
 */
static void cancel_test(struct perf_test *t)
{
    const char *auth = t->run->authorization[0] != '\0' ? t->run->authorization : NULL;

    t->cancelling = true;
    log_info("performance test %s: cancelled; stopping %d shares and %d nodes", t->run_id,
             t->nshares, t->nnodes);
    signal_workers(t);
    perfshare_scan(t->app);
    for (int i = 0; i < t->nnodes; i++)
        if (t->nodes[i].node != NULL && !perfnode_state(t->nodes[i].node)->finished)
            perfnode_cancel(t->nodes[i].node, t->app->base, t->dns, auth);
}

static void check_done(struct perf_test *t)
{
    if (t->state == TEST_RUNNING && !t->cancelling && perf_run_cancelled(t->run))
        cancel_test(t);
    if (t->state == TEST_RUNNING && all_over(t))
        report(t, TEST_REPORTED);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    check_done(arg);
}

void perftest_wake(struct app *app)
{
    struct perf_test *t;

    LIST_FOREACH(t, &app->perf_tests, link)
        event_active(t->ev_poll, 0, 0);
    perfcancel_wake(app);
}

int perftest_running(const struct app *app)
{
    const struct perf_test *t;
    int n = 0;

    LIST_FOREACH(t, &app->perf_tests, link)
        n++;
    return n;
}

void perftest_end_all(struct app *app)
{
    struct perf_test *t;

    /* report() takes each out of the list (and may free it). */
    while ((t = LIST_FIRST(&app->perf_tests)) != NULL) {
        for (int i = 0; i < t->nnodes; i++)
            if (t->nodes[i].node != NULL)
                perfnode_stop(t->nodes[i].node, "its coordinator stopped before the node's report");
        report(t, TEST_CUT);
    }
}

static void on_own_share_end(void *ctx)
{
    struct perf_test *t = ctx;

    event_active(t->ev_poll, 0, 0); /* not from inside the share's callback */
}

static void on_node_update(void *ctx)
{
    struct perf_test *t = ctx;

    event_active(t->ev_poll, 0, 0);
}

/* ---- the request ---- */

/* An integer field in [min, max]; answers 422 itself and returns false when bad. */
static bool int_field(struct http_req *r, struct json_object *body, const char *name, int64_t def,
                      int64_t min, int64_t max, int64_t *out)
{
    struct json_object *v;
    int64_t n;

    if (!json_object_object_get_ex(body, name, &v)) {
        if (def >= 0) {
            *out = def;
            return true;
        }
        http_reply_error(r, 422, "%s is required", name);
        return false;
    }
    if (!json_object_is_type(v, json_type_int)) {
        http_reply_error(r, 422, "%s must be an integer", name);
        return false;
    }
    n = json_object_get_int64(v);
    if (n < min || n > max) {
        http_reply_error(r, 422, "%s must be from %lld to %lld", name, (long long)min,
                         (long long)max);
        return false;
    }
    *out = n;
    return true;
}

/* The workers that can take a share now: ready, not draining; this one first. */
static int usable_workers(const struct app *app, int *slots)
{
    int n = 0;

    slots[n++] = app->slot_index;
    for (int i = 0; i < STATS_MAX_SLOTS && n < PERF_MAX_SHARES; i++) {
        const struct stats_slot *s = &app->shm->slots[i];

        if (i == app->slot_index || atomic_load(&s->state) != STATS_SLOT_ACTIVE ||
            !atomic_load(&s->ready) || atomic_load(&s->draining))
            continue;
        slots[n++] = i;
    }
    return n;
}

static bool parse_workers(struct http_req *r, struct json_object *body, int running, int *out,
                          bool *all)
{
    struct json_object *v;

    *all = false;
    if (!json_object_object_get_ex(body, "workers", &v)) {
        *out = 1;
        return true;
    }
    if (json_object_is_type(v, json_type_string) && strcmp(json_object_get_string(v), "all") == 0) {
        *out = running;
        *all = true;
        return true;
    }
    if (json_object_is_type(v, json_type_int) && json_object_get_int64(v) >= 1 &&
        json_object_get_int64(v) <= running) {
        *out = (int)json_object_get_int64(v);
        return true;
    }
    http_reply_error(r, 422,
                     "workers must be \"all\" or a whole number from 1 to %d (the workers "
                     "running)",
                     running);
    return false;
}

/* perf_nodes "http://a:1, http://b:2" into t->nodes. */
static int node_list(struct perf_test *t, const char *list)
{
    const char *p = list;
    int n = 0;

    while (p != NULL && *p != '\0' && n < MAX_NODES) {
        size_t len;

        p += strspn(p, " \t,");
        len = strcspn(p, ",");
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len > 0) {
            snprintf(t->nodes[n].url, sizeof(t->nodes[n].url), "%.*s", (int)len, p);
            if (t->nodes[n].url[strlen(t->nodes[n].url) - 1] == '/')
                t->nodes[n].url[strlen(t->nodes[n].url) - 1] = '\0';
            n++;
        }
        p += strcspn(p, ",");
    }
    return n;
}

/* Another instance's coordinator hands this one a share of its test. */
static bool parse_share(struct perf_test *t, struct json_object *share)
{
    struct json_object *id, *offset;
    uuid_t uu;

    if (!json_object_is_type(share, json_type_object) ||
        !json_object_object_get_ex(share, "run_id", &id) ||
        !json_object_is_type(id, json_type_string) ||
        uuid_parse(json_object_get_string(id), uu) != 0 ||
        !json_object_object_get_ex(share, "offset", &offset) ||
        !json_object_is_type(offset, json_type_int) || json_object_get_int64(offset) < 0 ||
        json_object_get_int64(offset) > (int64_t)1 << 50) {
        http_reply_error(t->r, 422, "share must be {\"run_id\": a UUID, \"offset\": a row number}");
        return false;
    }
    t->share = true;
    t->offset = json_object_get_int64(offset);
    uuid_unparse_lower(uu, t->run_id);
    return true;
}

/*
 * A test runs at MIN_RATE todos/s at least, so it lasts perf_max_messages
 * seconds at most. A share of another instance's test has its part of that
 * test's rate, which may be below MIN_RATE: it may last as long as a whole
 * test, no longer (message_count / rate up to perf_max_messages seconds).
 */
static bool parse_rate(struct perf_test *t, struct json_object *v)
{
    double min =
        t->share ? (double)t->total / (double)t->r->app->conf->perf_max_messages : MIN_RATE;
    double rate = json_object_get_double(v);

    if (!(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)) ||
        !(rate >= min) || rate > MAX_RATE) {
        if (t->share)
            http_reply_error(t->r, 422,
                             "rate must be a number of todos per second from %g to %.0f (a share "
                             "lasts at most perf_max_messages seconds)",
                             min, MAX_RATE);
        else
            http_reply_error(t->r, 422,
                             "rate must be a number of todos per second from %.0f to %.0f",
                             MIN_RATE, MAX_RATE);
        return false;
    }
    /* perf_max_duration bounds what one caller may plan to take (API.md): a
     * share's bound is its coordinator's, which checked the whole test. */
    if (!t->share && (double)t->total / rate > t->r->app->conf->perf_max_duration) {
        http_reply_error(t->r, 422,
                         "message_count / rate is %.0f s, longer than perf_max_duration (%.0f s)",
                         (double)t->total / rate, t->r->app->conf->perf_max_duration);
        return false;
    }
    t->rate = rate;
    return true;
}

static bool parse_request(struct perf_test *t, struct json_object *body, int running)
{
    struct http_req *r = t->r;
    const struct conf *conf = r->app->conf;
    struct json_object *v, *share;
    int64_t n, b, interval;

    if (!int_field(r, body, "message_count", -1, 1, conf->perf_max_messages, &n) ||
        !int_field(r, body, "batch_size", 10, 1, conf->perf_max_batch, &b) ||
        !int_field(r, body, "progress_interval_ms", 1000, 100, 60000, &interval) ||
        !parse_workers(r, body, running, &t->workers, &t->workers_all))
        return false;
    t->total = n;
    t->batch_size = b;
    t->interval_ms = (int)interval;
    if (json_object_object_get_ex(body, "share", &share) && !parse_share(t, share))
        return false;
    if (json_object_object_get_ex(body, "rate", &v) && !parse_rate(t, v))
        return false;
    if (json_object_object_get_ex(body, "nodes", &v) && !t->share) {
        if (!json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), "all")) {
            http_reply_error(r, 422,
                             "nodes must be \"all\" (the instances of perf_nodes; a request "
                             "cannot name them)");
            return false;
        }
        if (conf->perf_nodes == NULL) {
            http_reply_error(r, 422, "nodes: this instance has no perf_nodes configured");
            return false;
        }
        t->nnodes = node_list(t, conf->perf_nodes);
    }
    return true;
}

/*
 * Shares of [first, first+count) over the workers in slots, posted on the
 * board: counted first, filled, then handed over one by one (stats_perf_post:
 * a share for a worker reaped since usable_workers() looked ends as
 * abandoned at once, never posted forever).
 */
static void post_shares(struct perf_test *t, const int *slots, int64_t first, int64_t count)
{
    int64_t t0 = (int64_t)t->started.tv_sec * 1000000000 + t->started.tv_nsec;
    int w = t->workers < count ? t->workers : (int)count;

    t->nshares = w;
    atomic_store(&t->run->nshares, w);
    for (int k = 0; k < w; k++) {
        struct perf_share *sh = &t->run->shares[k];
        int64_t a = first + (int64_t)((__int128)k * count / w);
        int64_t b = first + (int64_t)((__int128)(k + 1) * count / w);

        sh->worker_slot = slots[k];
        atomic_store(&sh->pid, atomic_load(&t->app->shm->slots[slots[k]].pid));
        sh->first = a + t->offset;
        sh->count = b - a;
        sh->batch_size = (int)t->batch_size;
        sh->rate = t->rate > 0 ? t->rate * (double)sh->count / (double)t->total : 0;
        sh->t0_ns = t0;
        atomic_store(&sh->sent, 0);
        atomic_store(&sh->success, 0);
        atomic_store(&sh->errors, 0);
        atomic_store(&sh->unknown, 0);
        atomic_store(&sh->batches, 0);
        atomic_store(&sh->ended_ns, 0);
        perf_hist_shm_init(&sh->latency);
        perf_hist_shm_init(&sh->lag);
        snprintf(sh->traceparent, sizeof(sh->traceparent), "%s", t->traceparent);
        /* At most TRACE_PERF_BATCH_SPANS batch spans for the whole test. */
        sh->batch_spans = TRACE_PERF_BATCH_SPANS / w + (k < TRACE_PERF_BATCH_SPANS % w);
    }
    for (int k = 0; k < w; k++)
        if (!stats_perf_post(t->app->shm, t->run, &t->run->shares[k]))
            log_warn("performance test %s: the worker of share %d is gone; abandoned", t->run_id,
                     k);
}

static void start_nodes(struct perf_test *t, int64_t n, int parts)
{
    struct perf_node_share node = {
        .run_id = t->run_id,
        .interval = (t->interval_ms < 1000 ? t->interval_ms : 1000) / 1e3, /* as asked below */
        .idle = t->interval_ms / 1e3 + NODE_IDLE,
        .traceparent = t->traceparent[0] != '\0' ? t->traceparent : NULL, /* its trace goes on */
        .authorization = http_header(t->r, "Authorization"), /* each node checks it too */
        .tls = t->app->tls,                                  /* for https:// nodes */
    };

    for (int i = 0; i < t->nnodes; i++) {
        int64_t a = (int64_t)((__int128)(i + 1) * n / parts);
        int64_t b = (int64_t)((__int128)(i + 2) * n / parts);
        struct json_object *o = json_object_new_object(), *share = json_object_new_object();

        t->nodes[i].first = a;
        t->nodes[i].count = b - a;
        json_object_object_add(o, "message_count", json_object_new_int64(b - a));
        json_object_object_add(o, "batch_size", json_object_new_int64(t->batch_size));
        if (t->workers_all)
            json_object_object_add(o, "workers", json_object_new_string("all"));
        else
            json_object_object_add(o, "workers", json_object_new_int(t->workers));
        if (t->rate > 0)
            json_object_object_add(o, "rate",
                                   json_object_new_double(t->rate * (double)(b - a) / (double)n));
        json_object_object_add(o, "progress_interval_ms",
                               json_object_new_int(t->interval_ms < 1000 ? t->interval_ms : 1000));
        json_object_object_add(share, "run_id", json_object_new_string(t->run_id));
        json_object_object_add(share, "offset", json_object_new_int64(a));
        json_object_object_add(o, "share", share);
        if (b - a == 0) {
            json_object_put(o);
            continue;
        }
        node.url = t->nodes[i].url;
        node.body = json_object_to_json_string(o);
        node.count = b - a;
        t->nodes[i].node = perfnode_start(t->app->base, t->dns, &node, on_node_update, t);
        json_object_put(o);
    }
}

static void signal_workers(const struct perf_test *t)
{
    for (int k = 0; k < t->nshares; k++) {
        const struct perf_share *sh = &t->run->shares[k];

        if (sh->worker_slot != t->app->slot_index && atomic_load(&sh->pid) > 0)
            kill(atomic_load(&sh->pid), SIGUSR1);
    }
}

void perf_start(struct http_req *r)
{
    struct json_object *body = http_read_json_object(r);
    struct perf_test *t;
    struct timeval poll = {0, POLL_MS * 1000}, tick;
    const char *accept;
    int slots[PERF_MAX_SHARES], running, parts;
    int64_t local;
    uuid_t uu;

    if (body == NULL)
        return;
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        json_object_put(body);
        http_reply_error(r, 500, "internal error");
        return;
    }
    t->r = r;
    t->app = r->app;
    r->data = t;
    r->cleanup = perf_free;
    running = usable_workers(r->app, slots);
    if (!parse_request(t, body, running)) {
        json_object_put(body);
        return;
    }
    json_object_put(body);
    if (db_pool_ready(r->app->db) == 0) {
        http_reply_error(r, 503, "database unavailable");
        return;
    }
    if (!t->share) {
        uuid_generate_random(uu);
        uuid_unparse_lower(uu, t->run_id);
    }
    t->run = perf_board_claim(&r->app->shm->perf, t->run_id, r->app->slot_index);
    if (t->run == NULL) {
        http_reply_error(r, 503, "%d performance tests are running already on this host",
                         PERF_MAX_RUNS);
        return;
    }
    t->ev_poll = event_new(r->app->base, -1, EV_PERSIST, on_poll, t);
    t->ev_tick = event_new(r->app->base, -1, EV_PERSIST, on_tick, t);
    if (t->nnodes > 0)
        t->dns = evdns_base_new(r->app->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                                  EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (t->ev_poll == NULL || t->ev_tick == NULL || (t->nnodes > 0 && t->dns == NULL)) {
        http_reply_error(r, 500, "internal error");
        return;
    }
    test_enter(t, TEST_RUNNING);
    accept = http_header(r, "Accept");
    t->streaming = accept != NULL && strcasestr(accept, "application/x-ndjson") != NULL;
    t->started = clock_now();
    t->last_tick = t->started;
    parts = 1 + t->nnodes;
    local = t->total / parts; /* this node's part: rows [0, floor(N / parts)) */
    t->span =
        span_start(r->app->tracer, &r->trace, r->span, "performance-test", SPAN_KIND_INTERNAL);
    span_set_int(t->span, TRACE_ATTR_PERF_MESSAGES, t->total);
    span_set_int(t->span, TRACE_ATTR_PERF_BATCH, t->batch_size);
    span_set_int(t->span, TRACE_ATTR_PERF_WORKERS, t->workers);
    span_set_int(t->span, TRACE_ATTR_PERF_NODES, parts);
    span_set_str(t->span, TRACE_ATTR_PERF_RUN_ID, t->run_id);
    if (t->rate > 0)
        span_set_double(t->span, TRACE_ATTR_PERF_RATE, t->rate);
    if (t->span != NULL)
        trace_format_traceparent(r->app->tracer, &r->trace, t->span, t->traceparent);
    log_info("performance test %s: %lld todos in batches of %lld over %d workers and %d nodes%s",
             t->run_id, (long long)t->total, (long long)t->batch_size, t->workers, parts,
             t->share ? " (a share of another instance's test)" : "");
    post_shares(t, slots, 0, local);
    signal_workers(t);
    start_nodes(t, t->total, parts);
    http_db_wait(r);
    if (t->streaming) {
        http_stream_start(r, 200, "application/x-ndjson");
        tick = clock_timeval(t->interval_ms / 1e3);
        event_add(t->ev_tick, &tick);
    }
    event_add(t->ev_poll, &poll);
    /* Last: our own share may end at once (and the test with it, later). */
    if (t->nshares > 0 && t->run->shares[0].worker_slot == r->app->slot_index)
        perfshare_start(r->app, t->run, 0, on_own_share_end, t);
}
