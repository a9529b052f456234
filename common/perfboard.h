/*
 * The performance-test board, in the shared-memory segment: a test spread over
 * this host's workers is a run with one share per worker. The worker that took
 * the request (the coordinator) posts the shares; each worker runs its own on
 * its own database connection and event loop and keeps its counts and latency
 * histograms here, batch by batch; the coordinator sums them (histograms are
 * merged bucket by bucket, never percentiles averaged).
 *
 * Each share field has one writer: the coordinator fills a share and hands it
 * over by its state (POSTED); from RUNNING on, only the share's worker writes
 * its counters, until its state says it is over.
 *
 * Every worker can write the whole segment, and the master (root) reads it:
 * the master takes no count or index from it without bounding it first
 * (perf_run_nshares).
 */
#ifndef TODOD_PERFBOARD_H
#define TODOD_PERFBOARD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PERF_MAX_RUNS   8
#define PERF_MAX_SHARES 64 /* CONF_MAX_WORKERS */
#define PERF_RUN_ID_LEN 37

/* Latencies (and schedule lags) in a log-scale histogram: 1 % wide buckets from
 * 1 us to 100 s, bounded memory whatever the number of batches. */
#define PERF_HIST_STEP    1.01
#define PERF_HIST_BUCKETS 1852

enum perf_share_state {
    PERF_SHARE_FREE,
    PERF_SHARE_POSTED,    /* filled by the coordinator, waiting for its worker */
    PERF_SHARE_RUNNING,   /* its worker inserts its rows */
    PERF_SHARE_DONE,      /* every row has a fate */
    PERF_SHARE_ABANDONED, /* its worker stopped, or died, before the end (or never took it) */
};

struct perf_hist_shm {
    _Atomic uint32_t bucket[PERF_HIST_BUCKETS];
    _Atomic uint64_t count;
    _Atomic uint64_t min_us, max_us; /* min_us is UINT64_MAX while empty */
};

struct perf_share {
    _Atomic int state; /* enum perf_share_state */
    int worker_slot;   /* the stats slot of the worker that runs it */
    _Atomic int pid;   /* set by that worker when it starts */
    int64_t first;     /* titles #first .. #first+count-1 */
    int64_t count;
    int batch_size;
    double rate;              /* todos/s for this share; 0: as fast as possible */
    int64_t t0_ns;            /* CLOCK_MONOTONIC origin of the schedule */
    _Atomic int64_t sent;     /* rows handed to the database */
    _Atomic int64_t success;  /* rows confirmed committed */
    _Atomic int64_t errors;   /* rows known not committed */
    _Atomic int64_t unknown;  /* rows whose fate is unknown (a lost connection) */
    _Atomic int64_t batches;  /* batches that ran */
    _Atomic int64_t ended_ns; /* CLOCK_MONOTONIC when it ended */
    char traceparent[56];     /* its parent span in the test's trace; "" when untraced */
    int batch_spans;          /* how many of its batches get a span */
    struct perf_hist_shm latency, lag;
};

enum perf_run_state {
    PERF_RUN_FREE,
    PERF_RUN_ACTIVE,
    PERF_RUN_ORPHANED, /* its coordinator is gone or reported early: shares stop; the last
                          one frees it */
    PERF_RUN_REPORTED, /* cancelled and over: its report waits in report[] for the worker
                          that cancelled it, which frees the run once it has a copy */
};

/* Who waits for a run's report: a stats slot, or one of these. */
#define PERF_CANCEL_NONE   (-1) /* not cancelled */
#define PERF_CANCEL_NOBODY (-2) /* cancelled; whoever asked is gone */

#define PERF_REPORT_MAX 65536 /* bytes of a cancelled run's report kept for its canceller */
#define PERF_AUTH_MAX   8256  /* "Bearer " and a token of JWT_MAX_LEN, with room */

struct perf_run {
    _Atomic int state; /* enum perf_run_state */
    char run_id[PERF_RUN_ID_LEN];
    int coordinator_slot;
    _Atomic int nshares; /* set before the shares are posted; read it with perf_run_nshares */
    struct perf_share shares[PERF_MAX_SHARES];
    /*
     * DELETE /todos/performance-test/{run_id}, on any worker: it takes
     * cancel_slot (its stats slot), writes authorization, then sets cancelled,
     * which every share checks at its next batch. The coordinator answers its
     * test, copies the report here and hands the run to that worker (REPORTED).
     */
    _Atomic int cancel_slot;           /* PERF_CANCEL_NONE, a slot, or PERF_CANCEL_NOBODY */
    _Atomic int cancelled;             /* shares stop at their next batch */
    char authorization[PERF_AUTH_MAX]; /* the canceller's, for the nodes ("" none) */
    _Atomic uint32_t report_len;       /* bytes in report, once REPORTED */
    char report[PERF_REPORT_MAX];
};

struct perf_board {
    struct perf_run runs[PERF_MAX_RUNS];
};

/* A histogram in private memory: what a coordinator merges into. */
struct perf_hist {
    uint64_t bucket[PERF_HIST_BUCKETS];
    uint64_t count;
    uint64_t min_us, max_us;
};

void perf_hist_init(struct perf_hist *h);
void perf_hist_shm_init(struct perf_hist_shm *h);
void perf_hist_shm_record(struct perf_hist_shm *h, uint64_t us);
/* Adds what src holds now into dst. */
void perf_hist_merge_shm(struct perf_hist *dst, const struct perf_hist_shm *src);
void perf_hist_merge(struct perf_hist *dst, const struct perf_hist *src);
/* The q-quantile in ms: its bucket's upper edge, within [min, max]; 0 when empty. */
double perf_hist_quantile(const struct perf_hist *h, double q);
int perf_hist_bucket(uint64_t us);

/* Claims a free run (returns it, or NULL when all are in use) / frees it. */
struct perf_run *perf_board_claim(struct perf_board *b, const char *run_id, int coordinator_slot);
void perf_board_release(struct perf_run *run);

/* The run's number of shares, within [0, PERF_MAX_SHARES] whatever was written there. */
int perf_run_nshares(const struct perf_run *run);

/*
 * The coordinator reports before every share is over (its worker stops): the
 * run is orphaned, so its shares stop at their next batch, and the last one
 * to end frees it (or this call, when none is left).
 */
void perf_run_orphan(struct perf_run *run);

/* A share still POSTED (never taken by its worker) ends as abandoned; false
 * when its worker took it first, or it is over. */
bool perf_share_abandon_posted(struct perf_run *run, struct perf_share *sh);

/*
 * Master: the worker of slot is gone. Its shares that were posted or running
 * are abandoned (the coordinator counts their rows sent and unconfirmed as
 * unknown, the others as errors); the runs it coordinated are orphaned.
 */
void perf_board_slot_gone(struct perf_board *b, int slot);

/* A share's worker ends it; the last share of an orphaned run frees the run. */
void perf_share_end(struct perf_run *run, struct perf_share *sh, int final_state);

bool perf_share_over(int state);

/* ---- cancelling (DELETE /todos/performance-test/{run_id}) ---- */

/*
 * The active run named run_id, taken for cancelling by the worker of slot,
 * with the caller's Authorization header (NULL or too long: none forwarded).
 * NULL when no such run is active (*busy false) or another worker is
 * cancelling it already (*busy true).
 */
struct perf_run *perf_board_cancel(struct perf_board *b, const char *run_id, int slot,
                                   const char *authorization, bool *busy);

/* The coordinator's side: was the run cancelled? Then its report goes to the
 * canceller: copied (truncated to nothing when too long: false), then the run
 * is handed over (perf_run_hand_over) instead of freed. */
bool perf_run_cancelled(const struct perf_run *run);
/* The stats slot of the worker waiting for the report of a cancelled run, or -1. */
int perf_run_canceller(const struct perf_run *run);
bool perf_run_put_report(struct perf_run *run, const char *json, size_t len);
void perf_run_hand_over(struct perf_run *run);

/*
 * The canceller's side: the run's report once it is there (copied into out,
 * of size PERF_REPORT_MAX + 1; returns its length, then the run is freed), 0
 * while the test runs, -1 when the run is no longer the one it cancelled (its
 * coordinator stopped before reporting).
 */
long perf_run_take_report(struct perf_run *run, const char *run_id, int slot, char *out);

/* The canceller gives up waiting (its client went away): the run is freed
 * when it is reported, by whoever comes last. */
void perf_run_cancel_drop(struct perf_run *run, int slot);

#endif
