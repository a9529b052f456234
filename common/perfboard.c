#include "perfboard.h"

#include <math.h>
#include <string.h>
#include <time.h>

static int64_t now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int perf_hist_bucket(uint64_t us)
{
    int i = us <= 1 ? 0 : (int)(log((double)us) / log(PERF_HIST_STEP));

    return i >= PERF_HIST_BUCKETS ? PERF_HIST_BUCKETS - 1 : i;
}

void perf_hist_init(struct perf_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min_us = UINT64_MAX;
}

void perf_hist_shm_init(struct perf_hist_shm *h)
{
    for (int i = 0; i < PERF_HIST_BUCKETS; i++)
        atomic_store_explicit(&h->bucket[i], 0, memory_order_relaxed);
    atomic_store(&h->count, 0);
    atomic_store(&h->min_us, UINT64_MAX);
    atomic_store(&h->max_us, 0);
}

/* One writer (the share's worker): plain read-modify-write of each field. */
void perf_hist_shm_record(struct perf_hist_shm *h, uint64_t us)
{
    int b = perf_hist_bucket(us);

    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    if (us < atomic_load_explicit(&h->min_us, memory_order_relaxed))
        atomic_store_explicit(&h->min_us, us, memory_order_relaxed);
    if (us > atomic_load_explicit(&h->max_us, memory_order_relaxed))
        atomic_store_explicit(&h->max_us, us, memory_order_relaxed);
    /* Last, released: a reader that sees the count sees the bucket. */
    atomic_fetch_add_explicit(&h->count, 1, memory_order_release);
}

void perf_hist_merge_shm(struct perf_hist *dst, const struct perf_hist_shm *src)
{
    uint64_t n = atomic_load_explicit(&src->count, memory_order_acquire), seen = 0, mn, mx;

    if (n == 0)
        return;
    for (int i = 0; i < PERF_HIST_BUCKETS; i++) {
        uint32_t v = atomic_load_explicit(&src->bucket[i], memory_order_relaxed);

        dst->bucket[i] += v;
        seen += v;
    }
    dst->count += seen;
    mn = atomic_load_explicit(&src->min_us, memory_order_relaxed);
    mx = atomic_load_explicit(&src->max_us, memory_order_relaxed);
    if (mn < dst->min_us)
        dst->min_us = mn;
    if (mx > dst->max_us)
        dst->max_us = mx;
}

void perf_hist_merge(struct perf_hist *dst, const struct perf_hist *src)
{
    for (int i = 0; i < PERF_HIST_BUCKETS; i++)
        dst->bucket[i] += src->bucket[i];
    dst->count += src->count;
    if (src->min_us < dst->min_us)
        dst->min_us = src->min_us;
    if (src->max_us > dst->max_us)
        dst->max_us = src->max_us;
}

double perf_hist_quantile(const struct perf_hist *h, double q)
{
    uint64_t rank, seen = 0;
    double lo, hi;

    if (h->count == 0)
        return 0;
    rank = (uint64_t)ceil(q * (double)h->count);
    if (rank < 1)
        rank = 1;
    lo = (double)h->min_us / 1e3;
    hi = (double)h->max_us / 1e3;
    for (int i = 0; i < PERF_HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            double ms = pow(PERF_HIST_STEP, i + 1) / 1e3;

            return fmax(lo, fmin(ms, hi));
        }
    }
    return hi;
}

struct perf_run *perf_board_claim(struct perf_board *b, const char *run_id, int coordinator_slot)
{
    for (int i = 0; i < PERF_MAX_RUNS; i++) {
        struct perf_run *run = &b->runs[i];
        int expected = PERF_RUN_FREE;

        if (!atomic_compare_exchange_strong(&run->state, &expected, PERF_RUN_ACTIVE))
            continue;
        strncpy(run->run_id, run_id, sizeof(run->run_id) - 1);
        run->run_id[sizeof(run->run_id) - 1] = '\0';
        run->coordinator_slot = coordinator_slot;
        atomic_store(&run->nshares, 0);
        for (int k = 0; k < PERF_MAX_SHARES; k++)
            atomic_store(&run->shares[k].state, PERF_SHARE_FREE);
        atomic_store(&run->report_len, 0);
        /* Last, after the run_id: a canceller that took the previous run's
         * cancel_slot in between loses it here, or sees this run_id. */
        atomic_store(&run->cancel_slot, PERF_CANCEL_NONE);
        return run;
    }
    return NULL;
}

bool perf_share_over(int state)
{
    return state == PERF_SHARE_DONE || state == PERF_SHARE_ABANDONED;
}

int perf_run_nshares(const struct perf_run *run)
{
    int n = atomic_load(&run->nshares);

    return n < 0 ? 0 : n > PERF_MAX_SHARES ? PERF_MAX_SHARES : n;
}

static bool all_over(struct perf_run *run)
{
    int n = perf_run_nshares(run);

    for (int k = 0; k < n; k++)
        if (!perf_share_over(atomic_load(&run->shares[k].state)))
            return false;
    return true;
}

void perf_board_release(struct perf_run *run)
{
    atomic_store(&run->state, PERF_RUN_FREE);
}

/*
 * An orphaned run whose shares are all over is freed once: its last share's
 * worker and whoever orphaned it may both see it so, and a run freed twice
 * could be taken by a new test in between.
 */
static void release_if_orphan_done(struct perf_run *run)
{
    int expected = PERF_RUN_ORPHANED;

    if (atomic_load(&run->state) == PERF_RUN_ORPHANED && all_over(run))
        atomic_compare_exchange_strong(&run->state, &expected, PERF_RUN_FREE);
}

void perf_run_orphan(struct perf_run *run)
{
    atomic_store(&run->state, PERF_RUN_ORPHANED);
    release_if_orphan_done(run);
}

void perf_share_end(struct perf_run *run, struct perf_share *sh, int final_state)
{
    atomic_store(&sh->ended_ns, now_ns());
    atomic_store(&sh->state, final_state);
    release_if_orphan_done(run);
}

bool perf_share_abandon_posted(struct perf_run *run, struct perf_share *sh)
{
    int expected = PERF_SHARE_POSTED;

    if (!atomic_compare_exchange_strong(&sh->state, &expected, PERF_SHARE_ABANDONED))
        return false;
    atomic_store(&sh->ended_ns, now_ns());
    release_if_orphan_done(run);
    return true;
}

void perf_board_slot_gone(struct perf_board *b, int slot)
{
    for (int i = 0; i < PERF_MAX_RUNS; i++) {
        struct perf_run *run = &b->runs[i];
        int n = perf_run_nshares(run), expected;

        if (atomic_load(&run->state) == PERF_RUN_FREE)
            continue;
        for (int k = 0; k < n; k++) {
            struct perf_share *sh = &run->shares[k];
            int st = atomic_load(&sh->state);

            if (sh->worker_slot == slot && !perf_share_over(st) && st != PERF_SHARE_FREE)
                perf_share_end(run, sh, PERF_SHARE_ABANDONED);
        }
        if (run->coordinator_slot == slot && atomic_load(&run->state) == PERF_RUN_ACTIVE)
            perf_run_orphan(run);
        /* A canceller that died waits no more; one that died halfway cancels nothing. */
        perf_run_cancel_drop(run, slot);
        expected = slot;
        atomic_compare_exchange_strong(&run->cancel_slot, &expected, PERF_CANCEL_NONE);
    }
}

/* ---- cancelling ---- */

/*
 * cancel_slot says who cancels: PERF_CANCEL_NONE; a slot s while s writes the
 * Authorization header; s + CANCEL_SET once the run is cancelled (shares stop)
 * and s waits for the report; PERF_CANCEL_NOBODY once s gave up waiting. Each
 * step is one compare-and-swap, so a run freed and claimed again in between
 * (perf_board_claim resets cancel_slot last) is never cancelled by mistake.
 */
#define CANCEL_SET 1024 /* above any slot */

bool perf_run_cancelled(const struct perf_run *run)
{
    int v = atomic_load(&run->cancel_slot);

    return v >= CANCEL_SET || v == PERF_CANCEL_NOBODY;
}

int perf_run_canceller(const struct perf_run *run)
{
    int v = atomic_load(&run->cancel_slot);

    return v >= CANCEL_SET ? v - CANCEL_SET : -1;
}

static bool same_run(const struct perf_run *run, const char *run_id, int state)
{
    return atomic_load(&run->state) == state && strncmp(run->run_id, run_id, PERF_RUN_ID_LEN) == 0;
}

struct perf_run *perf_board_cancel(struct perf_board *b, const char *run_id, int slot,
                                   const char *authorization, bool *busy)
{
    *busy = false;
    for (int i = 0; i < PERF_MAX_RUNS; i++) {
        struct perf_run *run = &b->runs[i];
        int expected = PERF_CANCEL_NONE;
        size_t len = authorization != NULL ? strlen(authorization) : 0;

        if (!same_run(run, run_id, PERF_RUN_ACTIVE))
            continue;
        if (!atomic_compare_exchange_strong(&run->cancel_slot, &expected, slot)) {
            *busy = true; /* another worker cancels it */
            continue;
        }
        if (!same_run(run, run_id, PERF_RUN_ACTIVE)) { /* it ended meanwhile */
            expected = slot;
            atomic_compare_exchange_strong(&run->cancel_slot, &expected, PERF_CANCEL_NONE);
            continue;
        }
        if (len >= sizeof(run->authorization))
            len = 0; /* longer than any token todod accepts: nothing to forward */
        memcpy(run->authorization, authorization != NULL ? authorization : "", len);
        run->authorization[len] = '\0';
        expected = slot;
        if (atomic_compare_exchange_strong(&run->cancel_slot, &expected, slot + CANCEL_SET)) {
            *busy = false;
            return run;
        }
    }
    return NULL;
}

bool perf_run_put_report(struct perf_run *run, const char *json, size_t len)
{
    if (len > PERF_REPORT_MAX)
        return false;
    memcpy(run->report, json, len);
    atomic_store(&run->report_len, (uint32_t)len);
    return true;
}

void perf_run_hand_over(struct perf_run *run)
{
    int expected = PERF_RUN_REPORTED;

    atomic_store(&run->state, PERF_RUN_REPORTED);
    if (atomic_load(&run->cancel_slot) == PERF_CANCEL_NOBODY)
        atomic_compare_exchange_strong(&run->state, &expected, PERF_RUN_FREE);
}

long perf_run_take_report(struct perf_run *run, const char *run_id, int slot, char *out)
{
    uint32_t len;

    if (atomic_load(&run->cancel_slot) != slot + CANCEL_SET)
        return -1;
    if (same_run(run, run_id, PERF_RUN_ACTIVE))
        return 0;
    if (!same_run(run, run_id, PERF_RUN_REPORTED))
        return -1;
    len = atomic_load(&run->report_len);
    if (len > PERF_REPORT_MAX)
        len = 0;
    memcpy(out, run->report, len);
    out[len] = '\0';
    perf_board_release(run);
    return (long)len;
}

void perf_run_cancel_drop(struct perf_run *run, int slot)
{
    int expected = slot + CANCEL_SET;

    if (!atomic_compare_exchange_strong(&run->cancel_slot, &expected, PERF_CANCEL_NOBODY))
        return;
    expected = PERF_RUN_REPORTED;
    atomic_compare_exchange_strong(&run->state, &expected, PERF_RUN_FREE);
}
