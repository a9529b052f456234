/*
 * Shared-memory statistics: one slot of atomic counters per worker plus the
 * retired totals. Workers only ever write their own slot; the master folds the
 * slot of a dead worker into the retired totals. Readers sum everything: the
 * workers' renderers, daemon/metrics.c (Prometheus) and daemon/stats_json.c.
 */
#ifndef TODOD_STATS_H
#define TODOD_STATS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "http_tables.h"
#include "perfboard.h"

#define STATS_MAX_SLOTS  160 /* workers of the current and of a draining generation */
#define STATS_MAX_ROUTES 16

#define STATS_MAX_STANDBYS 8  /* standby hosts of database_read_url a worker reports */
#define STATS_HOST_MAX     64 /* a standby's label: host:port, cut to fit */

/* The methods HTTP_METHODS counts APART (STATS_GET, ...), then the rest. */
#define STATS_METHOD_APART(name) STATS_##name,
#define STATS_METHOD_OTHER(name)
#define STATS_METHOD(name, served, counted) STATS_METHOD_##counted(name)
enum stats_method { HTTP_METHODS(STATS_METHOD) STATS_OTHER_METHOD, STATS_NMETHODS };

/* Status codes kept apart: HTTP_STATUSES; any other is counted under the last
 * index, "other". */
#define STATS_NCODES 21 /* HTTP_STATUSES plus one "other" */

/* Why a request was refused access (API.md "Access control"): the reason
 * label of todod_auth_refusals_total. */
#define STATS_AUTH_REASONS(X) X(missing) X(invalid) X(expired) X(scope) X(protected)
#define STATS_AUTH_ENUM(name) STATS_AUTH_##name,
enum stats_auth_reason { STATS_AUTH_REASONS(STATS_AUTH_ENUM) STATS_NAUTH };
#undef STATS_AUTH_ENUM
const char *stats_auth_reason_name(int reason); /* the label value; NULL out of range */

/* Histogram upper bounds in microseconds; a final +Inf bucket is implicit. */
#define STATS_BUCKETS_US                                                                           \
    {                                                                                              \
        250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, \
            5000000, 10000000                                                                      \
    }
#define STATS_NBUCKETS 16 /* 15 bounds + Inf */

struct stats_histogram {
    _Atomic uint64_t bucket[STATS_NBUCKETS]; /* not cumulative */
    _Atomic uint64_t sum_us;
    _Atomic uint64_t count;
};

/* Everything that is a counter: summed over slots, folded on worker exit. */
struct stats_counters {
    _Atomic uint64_t http_requests[STATS_MAX_ROUTES][STATS_NMETHODS][STATS_NCODES];
    struct stats_histogram http_duration[STATS_MAX_ROUTES];
    _Atomic uint64_t perf_tests;
    _Atomic uint64_t perf_tests_cancelled; /* by DELETE /todos/performance-test/{run_id} */
    _Atomic uint64_t perf_todos_success;
    _Atomic uint64_t perf_todos_error;
    struct stats_histogram perf_batch_duration;
    _Atomic uint64_t db_errors;
    _Atomic uint64_t db_reconnects;
    _Atomic uint64_t accept_errors;   /* accept() failed (out of descriptors, ...) */
    _Atomic uint64_t client_timeouts; /* connections cut off: request or idle time-out */
    _Atomic uint64_t trace_spans_exported;
    _Atomic uint64_t trace_spans_dropped;
    _Atomic uint64_t trace_export_errors;
    _Atomic uint64_t auth_refusals[STATS_NAUTH];
    _Atomic uint64_t db_reads[2]; /* reads answered by the primary [0], by a standby [1] */
};

/* What a worker makes of a standby (database_read_url), as /stats shows it. */
enum stats_standby_state {
    STATS_STANDBY_NONE,     /* no standby in this place */
    STATS_STANDBY_DOWN,     /* no connection up, or no position sampled lately */
    STATS_STANDBY_PROMOTED, /* out of recovery: no longer a standby */
    STATS_STANDBY_LAGGING,  /* further behind than max_replica_lag */
    STATS_STANDBY_FIT,      /* serves reads */
};
const char *stats_standby_state_name(int state);

/* A worker's view of one standby: gauges, written by that worker only. */
struct stats_standby {
    _Atomic int state;         /* enum stats_standby_state; set last, after host */
    _Atomic int64_t lag_us;    /* its lag as the worker estimates it; -1: unknown */
    char host[STATS_HOST_MAX]; /* its host:port, written before state */
};

enum stats_slot_state { STATS_SLOT_FREE, STATS_SLOT_ACTIVE };

struct stats_slot {
    _Atomic int state; /* enum stats_slot_state, written by the master */
    _Atomic int pid;
    _Atomic int64_t started_at; /* unix seconds */
    _Atomic int ready;          /* set by the worker once it accepts connections */
    _Atomic int draining;       /* set by the worker when it stops accepting */
    _Atomic int db_up;          /* database connections of this worker that are up */
    _Atomic int open_conns;     /* HTTP connections open on this worker */
    _Atomic int perf_running;   /* performance-test shares running on this worker */
    struct stats_standby standbys[STATS_MAX_STANDBYS];
    struct stats_counters c;
};

struct stats_shm {
    _Atomic uint64_t fold_seq;        /* odd while the master folds a slot */
    double master_start_time;         /* unix seconds, with fraction */
    _Atomic uint64_t worker_restarts; /* replacements of workers that died */
    _Atomic int workers;              /* live workers of the current generation */
    _Atomic int stopping;             /* set by the master: no process accepts again */
    _Atomic int syns_dropped;         /* set by the master: the listening socket drops SYNs */
    struct stats_counters retired;
    struct stats_slot slots[STATS_MAX_SLOTS];
    struct perf_board perf; /* performance tests spread over the workers */
};

/* Plain (non-atomic) sum of every slot and the retired totals. */
struct stats_totals {
    uint64_t http_requests[STATS_MAX_ROUTES][STATS_NMETHODS][STATS_NCODES];
    struct stats_histogram_totals {
        uint64_t bucket[STATS_NBUCKETS];
        uint64_t sum_us;
        uint64_t count;
    } http_duration[STATS_MAX_ROUTES], perf_batch_duration;
    uint64_t perf_tests, perf_tests_cancelled, perf_todos_success, perf_todos_error;
    uint64_t db_errors, db_reconnects;
    uint64_t accept_errors, client_timeouts;
    uint64_t trace_spans_exported, trace_spans_dropped, trace_export_errors;
    uint64_t auth_refusals[STATS_NAUTH];
    uint64_t db_reads[2];
};

/* mmap(MAP_SHARED|MAP_ANONYMOUS), zeroed; NULL on failure. */
struct stats_shm *stats_create(void);
void stats_destroy(struct stats_shm *shm);

/* Master: claim a free slot (returns index, or -1 when none), mark it ACTIVE. */
int stats_slot_claim(struct stats_shm *shm);
/* Master, after reaping the slot's worker: fold its counters into the retired
 * totals, zero it and mark it FREE. Readers never see a count go down. */
void stats_slot_retire(struct stats_shm *shm, int slot);

/*
 * Coordinator: hands share sh of run (filled, counted in run->nshares) to the
 * worker of its slot, whose pid it holds. A worker reaped since it was chosen
 * never runs it: the share then ends as abandoned at once, and this returns
 * false (true: the share is its worker's, whatever becomes of it).
 */
bool stats_perf_post(struct stats_shm *shm, struct perf_run *run, struct perf_share *sh);

/* Worker-side recording into its own slot. */
int stats_method_index(const char *method); /* "GET" -> STATS_GET, unknown -> OTHER */
int stats_code_index(int status);           /* 404 -> its index, unknown -> last */
int stats_code_value(int index);            /* inverse; 0 for the "other" index */
void stats_histogram_observe(struct stats_histogram *h, uint64_t us);
void stats_http_observe(struct stats_slot *s, int route, int method, int status,
                        uint64_t duration_us);

/* Sum of all slots and retired totals, consistent against concurrent folds. */
void stats_sum(const struct stats_shm *shm, struct stats_totals *out);
/* Requests counted by one slot (all routes, methods, codes). */
uint64_t stats_slot_requests(const struct stats_slot *s);

/* ---- for the renderers (daemon/metrics.c, daemon/stats_json.c) ---- */

/* The histograms' upper bounds in microseconds (STATS_BUCKETS_US). */
extern const uint64_t stats_bucket_bounds_us[STATS_NBUCKETS - 1];

/* Observations in h: the sum of its buckets. */
uint64_t stats_histogram_total(const struct stats_histogram_totals *h);

/* Status code index as a label: "404", or "other" for the last index. */
void stats_code_label(int index, char *buf, size_t len);

/* Method index as a label: "GET", ..., or "other" for STATS_OTHER_METHOD. */
const char *stats_method_label(int method);

/* Performance-test shares running now, summed over the active slots. */
int stats_perf_running(const struct stats_shm *shm);

/* Route indexes that have a name (route_names[i] for i < this); counts of any
 * others cannot be labelled. */
int stats_named_routes(const char *const *route_names, int nroutes);

#endif
