/*
 * Shared-memory statistics: one slot of atomic counters per worker plus the
 * retired totals. Workers only ever write their own slot; the master folds the
 * slot of a dead worker into the retired totals. Readers sum everything.
 */
#ifndef TODOD_STATS_H
#define TODOD_STATS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "perfboard.h"

#define STATS_MAX_SLOTS  160 /* workers of the current and of a draining generation */
#define STATS_MAX_ROUTES 16

enum stats_method {
    STATS_GET,
    STATS_POST,
    STATS_PUT,
    STATS_DELETE,
    STATS_HEAD,
    STATS_OPTIONS,
    STATS_PATCH,
    STATS_OTHER_METHOD,
    STATS_NMETHODS
};

/* Status codes kept apart; anything else is counted under STATS_OTHER_CODE. */
/* clang-format off */
#define STATS_CODES(X)                                                                             \
    X(200) X(201) X(204) X(400) X(404) X(405) X(408) X(413) X(414) X(415) X(417) X(422) X(431)      \
    X(500) X(501) X(503) X(504) X(505)
/* clang-format on */
#define STATS_NCODES 19 /* the list above plus one "other" */

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
    struct stats_counters c;
};

struct stats_shm {
    _Atomic uint64_t fold_seq;        /* odd while the master folds a slot */
    double master_start_time;         /* unix seconds, with fraction */
    _Atomic uint64_t worker_restarts; /* replacements of workers that died */
    _Atomic int workers;              /* live workers of the current generation */
    _Atomic int stopping;             /* set by the master: no process accepts again */
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
    uint64_t perf_tests, perf_todos_success, perf_todos_error;
    uint64_t db_errors, db_reconnects;
    uint64_t accept_errors, client_timeouts;
    uint64_t trace_spans_exported, trace_spans_dropped, trace_export_errors;
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

/* The pid of the worker that coordinates run, while the run is active (0
 * otherwise): the process to signal when one of its shares ends. */
int stats_coordinator_pid(struct stats_shm *shm, struct perf_run *run);

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

/*
 * Render Prometheus text format 0.0.4 / the /stats JSON. route_names[i] is the
 * pattern of route index i (e.g. "/todos/{id}"). Returns 0, -1 on error.
 */
int stats_render_prometheus(const struct stats_shm *shm, const char *const *route_names,
                            int nroutes, const char *version, FILE *out);
int stats_render_json(const struct stats_shm *shm, const char *const *route_names, int nroutes,
                      const char *version, FILE *out);

#endif
