#include "stats.h"

#include <inttypes.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* A reader that keeps finding a fold in progress spins this many times before
 * it starts yielding the CPU to let the (possibly descheduled) master finish. */
#define SUM_SPIN_TRIES 1000

const uint64_t stats_bucket_bounds_us[STATS_NBUCKETS - 1] = STATS_BUCKETS_US;

#define CODE_VALUE(c, reason) c,
static const int code_values[STATS_NCODES] = {HTTP_STATUSES(CODE_VALUE) 0};
#define CODE_COUNT(c, reason) +1
_Static_assert(0 HTTP_STATUSES(CODE_COUNT) + 1 == STATS_NCODES,
               "STATS_NCODES must be the length of HTTP_STATUSES plus one");

/* Request method names; STATS_OTHER_METHOD's is the Prometheus label of the rest. */
#define METHOD_NAME_APART(name) [STATS_##name] = #name,
#define METHOD_NAME_OTHER(name)
#define METHOD_NAME(name, served, counted) METHOD_NAME_##counted(name)
static const char *const method_names[STATS_NMETHODS] = {[STATS_OTHER_METHOD] = "other",
                                                         HTTP_METHODS(METHOD_NAME)};

/*
 * Folding and summing walk struct stats_counters field by field. Adding a field
 * without teaching counters_move() and counters_add() about it would silently
 * lose counts on every worker exit, so its size is pinned here.
 */
_Static_assert(sizeof(struct stats_counters) ==
                   sizeof(_Atomic uint64_t) *
                       (STATS_MAX_ROUTES * STATS_NMETHODS * STATS_NCODES +
                        (STATS_MAX_ROUTES + 1) * (STATS_NBUCKETS + 2) + 11 + STATS_NAUTH + 2),
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
        for (int j = 0; j < STATS_MAX_STANDBYS; j++)
            atomic_store(&s->standbys[j].state, STATS_STANDBY_NONE);
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
    counter_move(&dst->perf_tests_cancelled, &src->perf_tests_cancelled);
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
    for (int a = 0; a < STATS_NAUTH; a++)
        counter_move(&dst->auth_refusals[a], &src->auth_refusals[a]);
    for (int i = 0; i < 2; i++)
        counter_move(&dst->db_reads[i], &src->db_reads[i]);
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

    while (b < STATS_NBUCKETS - 1 && us > stats_bucket_bounds_us[b])
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
    t->perf_tests_cancelled += counter_get(&c->perf_tests_cancelled);
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
    for (int a = 0; a < STATS_NAUTH; a++)
        t->auth_refusals[a] += counter_get(&c->auth_refusals[a]);
    for (int i = 0; i < 2; i++)
        t->db_reads[i] += counter_get(&c->db_reads[i]);
}

const char *stats_standby_state_name(int state)
{
    static const char *const names[] = {
        [STATS_STANDBY_NONE] = "none",         [STATS_STANDBY_DOWN] = "down",
        [STATS_STANDBY_PROMOTED] = "promoted", [STATS_STANDBY_LAGGING] = "lagging",
        [STATS_STANDBY_FIT] = "fit",
    };

    return state >= 0 && state <= STATS_STANDBY_FIT ? names[state] : "none";
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

/* Route indexes that have a name; counts of any others cannot be labelled. */
int stats_named_routes(const char *const *route_names, int nroutes)
{
    if (route_names == NULL || nroutes < 0)
        return 0;
    return nroutes < STATS_MAX_ROUTES ? nroutes : STATS_MAX_ROUTES;
}

void stats_code_label(int index, char *buf, size_t len)
{
    if (index == STATS_NCODES - 1)
        snprintf(buf, len, "other");
    else
        snprintf(buf, len, "%d", code_values[index]);
}

uint64_t stats_histogram_total(const struct stats_histogram_totals *h)
{
    uint64_t n = 0;

    for (int b = 0; b < STATS_NBUCKETS; b++)
        n += h->bucket[b];
    return n;
}

int stats_perf_running(const struct stats_shm *shm)
{
    int n = 0;

    for (int i = 0; i < STATS_MAX_SLOTS; i++)
        if (atomic_load(&shm->slots[i].state) == STATS_SLOT_ACTIVE)
            n += atomic_load(&shm->slots[i].perf_running);
    return n;
}

const char *stats_method_label(int method)
{
    return method >= 0 && method < STATS_NMETHODS ? method_names[method] : NULL;
}

const char *stats_auth_reason_name(int reason)
{
#define AUTH_REASON_NAME(name) #name,
    static const char *const names[STATS_NAUTH] = {STATS_AUTH_REASONS(AUTH_REASON_NAME)};
#undef AUTH_REASON_NAME

    return reason >= 0 && reason < STATS_NAUTH ? names[reason] : NULL;
}
