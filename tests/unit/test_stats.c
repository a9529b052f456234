#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "stats.h"
#include "stats_json.h"

enum { ROUTE_TODOS, ROUTE_TODO, ROUTE_HEALTH, ROUTE_METRICS, NROUTES };
static const char *const route_names[NROUTES] = {"/todos", "/todos/{id}", "/health", "/metrics"};

static int setup_shm(void **state)
{
    struct stats_shm *shm = stats_create();

    if (shm == NULL)
        return -1;
    *state = shm;
    return 0;
}

static int teardown_shm(void **state)
{
    stats_destroy(*state);
    return 0;
}

static uint64_t total_requests(const struct stats_shm *shm)
{
    struct stats_totals t;
    uint64_t n = 0;

    stats_sum(shm, &t);
    for (int r = 0; r < STATS_MAX_ROUTES; r++)
        for (int m = 0; m < STATS_NMETHODS; m++)
            for (int c = 0; c < STATS_NCODES; c++)
                n += t.http_requests[r][m][c];
    return n;
}

static int claim_active(struct stats_shm *shm, int pid)
{
    int slot = stats_slot_claim(shm);

    assert_true(slot >= 0);
    atomic_store(&shm->slots[slot].pid, pid);
    return slot;
}

static double monotonic_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Output of a renderer as a NUL-terminated string the test must free. */
static char *render(const struct stats_shm *shm, int json)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc;

    assert_non_null(f);
    if (json)
        rc = stats_json_render(shm, route_names, NROUTES, "0.1.0", f);
    else
        rc = metrics_render(shm, route_names, NROUTES, "0.1.0", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rc, 0);
    return buf;
}

static void assert_has_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
    fail_msg("missing line: %s\n--- output ---\n%s", line, text);
}

/* ---- recording ---- */

static void test_create_maps_zeroed_memory_with_start_time(void **state)
{
    struct stats_shm *shm = *state;
    double now = (double)time(NULL);

    assert_int_equal(atomic_load(&shm->fold_seq), 0);
    assert_int_equal(atomic_load(&shm->slots[0].state), STATS_SLOT_FREE);
    assert_int_equal(total_requests(shm), 0);
    assert_true(shm->master_start_time > now - 5 && shm->master_start_time < now + 5);
}

static void test_histogram_picks_first_bucket_whose_bound_is_not_below_value(void **state)
{
    struct stats_histogram *h = &((struct stats_shm *)*state)->slots[0].c.http_duration[0];

    stats_histogram_observe(h, 0);        /* le 250us */
    stats_histogram_observe(h, 250);      /* exactly on a bound: that bucket */
    stats_histogram_observe(h, 251);      /* le 500us */
    stats_histogram_observe(h, 10000000); /* the last finite bound, 10 s */
    stats_histogram_observe(h, 10000001); /* +Inf */

    assert_int_equal(atomic_load(&h->bucket[0]), 2);
    assert_int_equal(atomic_load(&h->bucket[1]), 1);
    assert_int_equal(atomic_load(&h->bucket[STATS_NBUCKETS - 2]), 1);
    assert_int_equal(atomic_load(&h->bucket[STATS_NBUCKETS - 1]), 1);
    assert_int_equal(atomic_load(&h->count), 5);
    assert_int_equal(atomic_load(&h->sum_us), 0 + 250 + 251 + 10000000 + 10000001);
}

static void test_method_index_knows_standard_methods_and_folds_the_rest(void **state)
{
    assert_int_equal(stats_method_index("GET"), STATS_GET);
    assert_int_equal(stats_method_index("POST"), STATS_POST);
    assert_int_equal(stats_method_index("PUT"), STATS_PUT);
    assert_int_equal(stats_method_index("DELETE"), STATS_DELETE);
    assert_int_equal(stats_method_index("HEAD"), STATS_HEAD);
    assert_int_equal(stats_method_index("OPTIONS"), STATS_OPTIONS);
    assert_int_equal(stats_method_index("PATCH"), STATS_PATCH);
    assert_int_equal(stats_method_index("get"), STATS_OTHER_METHOD);
    assert_int_equal(stats_method_index("BREW"), STATS_OTHER_METHOD);
    assert_int_equal(stats_method_index(NULL), STATS_OTHER_METHOD);
}

static void test_code_index_round_trips_listed_codes_and_folds_the_rest(void **state)
{
    static const int listed[] = {200, 201, 204, 400, 404, 405, 408, 413, 415, 422, 500, 503, 504};

    for (size_t i = 0; i < sizeof(listed) / sizeof(listed[0]); i++)
        assert_int_equal(stats_code_value(stats_code_index(listed[i])), listed[i]);
    assert_int_equal(stats_code_index(418), STATS_NCODES - 1);
    assert_int_equal(stats_code_index(0), STATS_NCODES - 1);
    assert_int_equal(stats_code_value(STATS_NCODES - 1), 0);
    assert_int_equal(stats_code_value(-1), 0);
}

static void test_http_observe_counts_route_method_code_and_duration(void **state)
{
    struct stats_slot *s = &((struct stats_shm *)*state)->slots[3];
    const int not_found = stats_code_index(404), other_code = STATS_NCODES - 1;

    stats_http_observe(s, ROUTE_TODO, STATS_GET, 404, 300);
    stats_http_observe(s, ROUTE_TODO, STATS_GET, 404, 100);
    stats_http_observe(s, ROUTE_TODOS, STATS_POST, 418, 100);

    assert_int_equal(atomic_load(&s->c.http_requests[ROUTE_TODO][STATS_GET][not_found]), 2);
    assert_int_equal(atomic_load(&s->c.http_requests[ROUTE_TODOS][STATS_POST][other_code]), 1);
    assert_int_equal(atomic_load(&s->c.http_duration[ROUTE_TODO].count), 2);
    assert_int_equal(atomic_load(&s->c.http_duration[ROUTE_TODO].sum_us), 400);
    assert_int_equal(stats_slot_requests(s), 3);
}

static void test_http_observe_ignores_route_out_of_range(void **state)
{
    struct stats_slot *s = &((struct stats_shm *)*state)->slots[0];

    stats_http_observe(s, STATS_MAX_ROUTES, STATS_GET, 200, 1);
    stats_http_observe(s, -1, STATS_GET, 200, 1);
    assert_int_equal(stats_slot_requests(s), 0);
}

/* ---- slots, sum, retire ---- */

static void test_sum_adds_every_slot_and_the_retired_totals(void **state)
{
    struct stats_shm *shm = *state;
    struct stats_totals t;

    stats_http_observe(&shm->slots[0], ROUTE_TODOS, STATS_GET, 200, 10);
    stats_http_observe(&shm->slots[7], ROUTE_TODOS, STATS_GET, 200, 20);
    stats_http_observe(&shm->slots[STATS_MAX_SLOTS - 1], ROUTE_TODOS, STATS_GET, 200, 30);
    atomic_store(&shm->retired.http_requests[ROUTE_TODOS][STATS_GET][0], 5);
    atomic_store(&shm->slots[2].c.perf_todos_success, 4);
    atomic_store(&shm->retired.perf_todos_success, 6);

    stats_sum(shm, &t);
    assert_int_equal(t.http_requests[ROUTE_TODOS][STATS_GET][0], 8);
    assert_int_equal(t.http_duration[ROUTE_TODOS].count, 3);
    assert_int_equal(t.http_duration[ROUTE_TODOS].sum_us, 60);
    assert_int_equal(t.perf_todos_success, 10);
}

static void test_claim_takes_free_slots_resets_gauges_and_fails_when_full(void **state)
{
    struct stats_shm *shm = *state;
    int first;

    atomic_store(&shm->slots[0].ready, 1);
    atomic_store(&shm->slots[0].open_conns, 9);
    atomic_store(&shm->slots[0].pid, 1234);
    first = stats_slot_claim(shm);
    assert_int_equal(first, 0);
    assert_int_equal(atomic_load(&shm->slots[0].state), STATS_SLOT_ACTIVE);
    assert_int_equal(atomic_load(&shm->slots[0].ready), 0);
    assert_int_equal(atomic_load(&shm->slots[0].open_conns), 0);
    assert_int_equal(atomic_load(&shm->slots[0].pid), 0);
    assert_true(atomic_load(&shm->slots[0].started_at) > 0);

    for (int i = 1; i < STATS_MAX_SLOTS; i++)
        assert_int_equal(stats_slot_claim(shm), i);
    assert_int_equal(stats_slot_claim(shm), -1);
}

static void test_retire_keeps_totals_zeroes_and_frees_the_slot(void **state)
{
    struct stats_shm *shm = *state;
    struct stats_totals before, after;
    int a = stats_slot_claim(shm), b = stats_slot_claim(shm);

    stats_http_observe(&shm->slots[a], ROUTE_TODO, STATS_DELETE, 204, 700);
    stats_http_observe(&shm->slots[b], ROUTE_TODO, STATS_DELETE, 204, 900);
    atomic_store(&shm->slots[b].c.perf_tests, 2);
    atomic_store(&shm->slots[b].c.db_reconnects, 3);
    atomic_store(&shm->slots[b].pid, 4242);
    stats_histogram_observe(&shm->slots[b].c.perf_batch_duration, 42);
    stats_sum(shm, &before);

    stats_slot_retire(shm, b);
    /* the dead worker's pid is no one's to signal through the slot */
    assert_int_equal(atomic_load(&shm->slots[b].pid), 0);

    stats_sum(shm, &after);
    assert_memory_equal(&before, &after, sizeof(before));
    assert_int_equal(stats_slot_requests(&shm->slots[b]), 0);
    assert_int_equal(atomic_load(&shm->slots[b].c.perf_tests), 0);
    assert_int_equal(atomic_load(&shm->slots[b].c.perf_batch_duration.count), 0);
    assert_int_equal(atomic_load(&shm->slots[b].state), STATS_SLOT_FREE);
    assert_int_equal(atomic_load(&shm->fold_seq) % 2, 0);
    assert_int_equal(stats_slot_claim(shm), b);
}

/* A worker can write anything in the segment; the master, reaping a worker,
 * looks at no more shares than a run can hold. */
static void test_retire_looks_at_no_more_shares_than_a_run_holds(void **state)
{
    struct stats_shm *shm = *state;
    int a = claim_active(shm, 100), b = claim_active(shm, 101);
    struct perf_run *run = perf_board_claim(&shm->perf, "scribbled", a);

    assert_non_null(run);
    for (int k = 0; k < PERF_MAX_SHARES; k++) {
        run->shares[k].worker_slot = b;
        atomic_store(&run->shares[k].state, PERF_SHARE_RUNNING);
    }
    run->nshares = INT_MAX;
    stats_slot_retire(shm, b);
    for (int k = 0; k < PERF_MAX_SHARES; k++)
        assert_int_equal(atomic_load(&run->shares[k].state), PERF_SHARE_ABANDONED);
    run->nshares = -5;
    assert_int_equal(perf_run_nshares(run), 0);
    run->nshares = PERF_MAX_SHARES + 1;
    assert_int_equal(perf_run_nshares(run), PERF_MAX_SHARES);
}

/* The coordinator fills share 0 of a run for the worker of slot, whose pid it read. */
static struct perf_share *fill_share(struct perf_run *run, int slot, int pid)
{
    struct perf_share *sh = &run->shares[0];

    atomic_store(&run->nshares, 1);
    sh->worker_slot = slot;
    atomic_store(&sh->pid, pid);
    sh->count = 10;
    return sh;
}

/*
 * The master may reap a worker between the moment the coordinator chose it
 * (usable_workers) and the moment it posts the worker's share: the share ends
 * as abandoned at once instead of waiting for a worker that is gone. Posted
 * first and reaped then, the master abandons it; a live worker keeps it.
 */
static void test_a_share_posted_for_a_worker_reaped_meanwhile_ends_abandoned(void **state)
{
    struct stats_shm *shm = *state;
    int a = claim_active(shm, 100), b = claim_active(shm, 101);
    struct perf_run *run = perf_board_claim(&shm->perf, "reaped", a);
    struct perf_share *sh;

    assert_non_null(run);
    /* chosen, reaped, then posted */
    stats_slot_retire(shm, b);
    sh = fill_share(run, b, 101);
    assert_false(stats_perf_post(shm, run, sh));
    assert_int_equal(atomic_load(&sh->state), PERF_SHARE_ABANDONED);
    assert_true(perf_share_over(atomic_load(&sh->state)));
    perf_board_release(run);

    /* reaped and its slot taken by a new worker before the post */
    b = claim_active(shm, 102);
    run = perf_board_claim(&shm->perf, "replaced", a);
    sh = fill_share(run, b, 101);
    assert_false(stats_perf_post(shm, run, sh));
    assert_int_equal(atomic_load(&sh->state), PERF_SHARE_ABANDONED);
    perf_board_release(run);

    /* posted, then reaped */
    run = perf_board_claim(&shm->perf, "posted", a);
    sh = fill_share(run, b, 102);
    assert_true(stats_perf_post(shm, run, sh));
    assert_int_equal(atomic_load(&sh->state), PERF_SHARE_POSTED);
    stats_slot_retire(shm, b);
    assert_int_equal(atomic_load(&sh->state), PERF_SHARE_ABANDONED);
    perf_board_release(run);
}

/* A run orphaned while a share runs is freed by that share's end, once. */
static void test_an_orphaned_run_is_freed_by_its_last_share(void **state)
{
    struct stats_shm *shm = *state;
    int a = claim_active(shm, 100), b = claim_active(shm, 101);
    struct perf_run *run = perf_board_claim(&shm->perf, "orphan", a);
    struct perf_share *sh = fill_share(run, b, 101);

    assert_true(stats_perf_post(shm, run, sh));
    atomic_store(&sh->state, PERF_SHARE_RUNNING);
    perf_run_orphan(run);
    assert_int_equal(atomic_load(&run->state), PERF_RUN_ORPHANED);
    perf_share_end(run, sh, PERF_SHARE_ABANDONED);
    assert_int_equal(atomic_load(&run->state), PERF_RUN_FREE);
    /* nothing left running: orphaning frees it at once */
    run = perf_board_claim(&shm->perf, "empty", a);
    perf_run_orphan(run);
    assert_int_equal(atomic_load(&run->state), PERF_RUN_FREE);
}

/* Shared between the test and its forked children. */
struct race {
    _Atomic int writer_done;
    _Atomic uint64_t writes;
    _Atomic uint64_t reads;
    _Atomic uint64_t folds;
};

#define RACE_MIN_WRITES 200000
#define RACE_MIN_FOLDS  100
#define RACE_DEADLINE_S 1.5
#define RACE_GIVE_UP_S  10.0 /* the master stops waiting for a writer that died */

/* Keeps writing until it did its share and the master folded a fair number of
 * times, or the deadline passed (slow valgrind runs). */
static int race_writer(struct stats_slot *s, struct race *race)
{
    double deadline = monotonic_seconds() + RACE_DEADLINE_S;
    uint64_t n = 0;

    for (;;) {
        stats_http_observe(s, ROUTE_TODOS, STATS_POST, 201, 50);
        if (++n % 4096 != 0)
            continue;
        if (n >= RACE_MIN_WRITES &&
            (atomic_load(&race->folds) >= RACE_MIN_FOLDS || monotonic_seconds() > deadline))
            break;
        /* Three busy processes may share fewer CPUs; let the master run. */
        sched_yield();
    }
    atomic_store(&race->writes, n);
    atomic_store(&race->writer_done, 1);
    return 0;
}

/* Exit status 1 when a sum went down (a fold seen half done). */
static int race_reader(const struct stats_shm *shm, struct race *race)
{
    uint64_t last = 0;

    for (;;) {
        int done = atomic_load(&race->writer_done);
        uint64_t now = total_requests(shm);

        if (now < last)
            return 1;
        last = now;
        atomic_fetch_add(&race->reads, 1);
        if (done)
            return 0;
    }
}

static pid_t fork_child(int (*body)(struct stats_shm *, struct race *), struct stats_shm *shm,
                        struct race *race)
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0)
        _exit(body(shm, race));
    return pid;
}

static int run_writer(struct stats_shm *shm, struct race *race)
{
    return race_writer(&shm->slots[0], race);
}

static int run_reader(struct stats_shm *shm, struct race *race)
{
    return race_reader(shm, race);
}

static void assert_child_succeeded(pid_t pid, const char *what)
{
    int status;

    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("%s child failed (status 0x%x)", what, status);
}

/* A worker that served many requests: its fold moves far more than the
 * writer adds during one sum, so a half-seen fold cannot hide in the noise. */
#define RACE_FOLD_BATCH 1000000

static int claim_busy_slot(struct stats_shm *shm)
{
    int slot = stats_slot_claim(shm);

    assert_int_equal(slot, STATS_MAX_SLOTS - 1);
    atomic_fetch_add(&shm->slots[slot].c.http_requests[ROUTE_TODO][STATS_GET][0], RACE_FOLD_BATCH);
    return slot;
}

/* Returns once the reader finished a sum that started after the last call,
 * the writer is done, or give_up passed. */
static void wait_for_next_sum(struct race *race, uint64_t *seen, double give_up)
{
    uint64_t target = *seen + 2;

    while (atomic_load(&race->reads) < target && !atomic_load(&race->writer_done) &&
           monotonic_seconds() < give_up)
        sched_yield();
    *seen = atomic_load(&race->reads);
}

static void test_sum_never_goes_down_while_master_retires_slots(void **state)
{
    struct stats_shm *shm = *state;
    struct race *race =
        mmap(NULL, sizeof(*race), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    double give_up = monotonic_seconds() + RACE_GIVE_UP_S;
    uint64_t folded = 0, seen_reads = 0;
    pid_t writer, reader;
    int slot;

    assert_true(race != MAP_FAILED);
    /* The writer gets slot 0 and the folds hit the last slot: sums read the
     * retired totals first and the last slot last, so a fold overlapping a
     * sum without the seqlock would show up as a drop. */
    for (int i = 0; i < STATS_MAX_SLOTS; i++)
        assert_int_equal(stats_slot_claim(shm), i);
    stats_slot_retire(shm, STATS_MAX_SLOTS - 1);
    reader = fork_child(run_reader, shm, race);
    writer = fork_child(run_writer, shm, race);

    /* Play the master: workers come and go in the last slot while the writer
     * counts and the reader sums. Each fold waits until a sum has seen the
     * worker's requests in its slot, and lands while the next sum runs. */
    slot = claim_busy_slot(shm);
    folded += RACE_FOLD_BATCH;
    while (!atomic_load(&race->writer_done) && monotonic_seconds() < give_up) {
        wait_for_next_sum(race, &seen_reads, give_up);
        stats_slot_retire(shm, slot);
        atomic_fetch_add(&race->folds, 1);
        slot = claim_busy_slot(shm);
        folded += RACE_FOLD_BATCH;
    }
    /* Stops the reader even if the writer died without saying so. */
    atomic_store(&race->writer_done, 1);
    assert_child_succeeded(writer, "writer");
    assert_child_succeeded(reader, "reader (sum went down)");
    assert_int_equal(total_requests(shm), atomic_load(&race->writes) + folded);
    munmap(race, sizeof(*race));
}

#define WRITERS           4
#define WRITES_PER_WRITER 50000

static void write_own_slot(struct stats_slot *s)
{
    for (int i = 0; i < WRITES_PER_WRITER; i++) {
        stats_http_observe(s, ROUTE_TODO, STATS_PUT, 200, 1000);
        atomic_fetch_add_explicit(&s->c.perf_todos_success, 1, memory_order_relaxed);
    }
}

static void test_forked_writers_in_their_own_slots_sum_exactly(void **state)
{
    struct stats_shm *shm = *state;
    pid_t pids[WRITERS];
    struct stats_totals t;

    for (int w = 0; w < WRITERS; w++) {
        int slot = stats_slot_claim(shm);

        pids[w] = fork();
        assert_true(pids[w] >= 0);
        if (pids[w] == 0) {
            write_own_slot(&shm->slots[slot]);
            _exit(0);
        }
    }
    for (int w = 0; w < WRITERS; w++)
        assert_child_succeeded(pids[w], "writer");

    stats_sum(shm, &t);
    assert_int_equal(t.http_requests[ROUTE_TODO][STATS_PUT][0], WRITERS * WRITES_PER_WRITER);
    assert_int_equal(t.http_duration[ROUTE_TODO].count, WRITERS * WRITES_PER_WRITER);
    assert_int_equal(t.http_duration[ROUTE_TODO].sum_us, WRITERS * WRITES_PER_WRITER * 1000ull);
    assert_int_equal(t.perf_todos_success, WRITERS * WRITES_PER_WRITER);
    for (int w = 0; w < WRITERS; w++)
        assert_int_equal(stats_slot_requests(&shm->slots[w]), WRITES_PER_WRITER);
}

/* ---- Prometheus ---- */

#define REQUESTS "todod_http_requests_total"
#define DURATION "todod_http_request_duration_seconds"

/* Two workers and a retired one, with something in every family. */
static void fill_sample(struct stats_shm *shm)
{
    int a = claim_active(shm, 101), b = claim_active(shm, 102), gone = stats_slot_claim(shm);
    struct stats_slot *sa = &shm->slots[a], *sb = &shm->slots[b];

    for (int i = 0; i < 3; i++)
        stats_http_observe(sa, ROUTE_TODO, STATS_GET, 404, 200);
    stats_http_observe(sa, ROUTE_TODOS, STATS_POST, 201, 100);
    stats_http_observe(sb, ROUTE_TODOS, STATS_POST, 201, 300);
    stats_http_observe(sb, ROUTE_HEALTH, stats_method_index("BREW"), 418, 5);
    stats_http_observe(&shm->slots[gone], ROUTE_TODOS, STATS_GET, 200, 1000);
    atomic_store(&shm->slots[gone].c.perf_todos_error, 1);
    stats_slot_retire(shm, gone);

    atomic_store(&sa->c.perf_tests, 1);
    atomic_store(&sa->c.perf_todos_success, 5);
    stats_histogram_observe(&sa->c.perf_batch_duration, 1500000);
    atomic_store(&sb->c.db_errors, 2);
    atomic_store(&sb->c.db_reconnects, 1);
    atomic_store(&sb->db_up, 1);
    atomic_store(&sa->ready, 1);
    atomic_store(&sb->draining, 1);
    atomic_store(&sb->open_conns, 7);
    atomic_store(&shm->workers, 2);
    atomic_store(&shm->worker_restarts, 1);
}

static void test_prometheus_has_a_sample_per_nonzero_route_method_code(void **state)
{
    struct stats_shm *shm = *state;
    char *text;

    fill_sample(shm);
    text = render(shm, 0);
    assert_has_line(text, "# TYPE todod_http_requests_total counter");
    assert_has_line(text, REQUESTS "{route=\"/todos/{id}\",method=\"GET\",code=\"404\"} 3");
    assert_has_line(text, REQUESTS "{route=\"/todos\",method=\"POST\",code=\"201\"} 2");
    assert_has_line(text, REQUESTS "{route=\"/todos\",method=\"GET\",code=\"200\"} 1");
    assert_has_line(text, REQUESTS "{route=\"/health\",method=\"other\",code=\"other\"} 1");
    assert_null(strstr(text, "method=\"DELETE\""));
    free(text);
}

static void test_prometheus_histograms_are_cumulative_in_seconds(void **state)
{
    struct stats_shm *shm = *state;
    char *text;

    fill_sample(shm);
    text = render(shm, 0);
    assert_has_line(text, "# TYPE todod_http_request_duration_seconds histogram");
    assert_has_line(text, DURATION "_bucket{route=\"/todos\",le=\"0.00025\"} 1");
    assert_has_line(text, DURATION "_bucket{route=\"/todos\",le=\"0.0005\"} 2");
    assert_has_line(text, DURATION "_bucket{route=\"/todos\",le=\"0.001\"} 3");
    assert_has_line(text, DURATION "_bucket{route=\"/todos\",le=\"10\"} 3");
    assert_has_line(text, DURATION "_bucket{route=\"/todos\",le=\"+Inf\"} 3");
    assert_has_line(text, DURATION "_sum{route=\"/todos\"} 0.001400");
    assert_has_line(text, DURATION "_count{route=\"/todos\"} 3");
    /* A route nobody asked for has no histogram. */
    assert_null(strstr(text, "route=\"/metrics\""));
    assert_has_line(text, "todod_perf_batch_duration_seconds_bucket{le=\"1\"} 0");
    assert_has_line(text, "todod_perf_batch_duration_seconds_bucket{le=\"2.5\"} 1");
    assert_has_line(text, "todod_perf_batch_duration_seconds_sum 1.500000");
    assert_has_line(text, "todod_perf_batch_duration_seconds_count 1");
    free(text);
}

static void test_prometheus_has_perf_db_and_process_families(void **state)
{
    struct stats_shm *shm = *state;
    char *text, expect[128];

    fill_sample(shm);
    text = render(shm, 0);
    assert_has_line(text, "todod_perf_tests_total 1");
    assert_has_line(text, "todod_perf_todos_total{result=\"success\"} 5");
    assert_has_line(text, "todod_perf_todos_total{result=\"error\"} 1");
    assert_has_line(text, "todod_db_errors_total 2");
    assert_has_line(text, "todod_db_reconnects_total 1");
    assert_has_line(text, "todod_db_up{slot=\"0\"} 0");
    assert_has_line(text, "todod_db_up{slot=\"1\"} 1");
    assert_null(strstr(text, "todod_db_up{slot=\"2\"}")); /* retired */
    assert_has_line(text, "todod_workers 2");
    assert_has_line(text, "todod_worker_restarts_total 1");
    assert_has_line(text, "todod_build_info{version=\"0.1.0\"} 1");
    snprintf(expect, sizeof(expect), "process_start_time_seconds %.6f", shm->master_start_time);
    assert_has_line(text, expect);
    free(text);
}

static void test_prometheus_empty_shm_still_has_every_always_present_sample(void **state)
{
    char *text = render(*state, 0);

    assert_has_line(text, "# HELP todod_http_requests_total HTTP requests answered, by route "
                          "pattern, method and status code.");
    assert_has_line(text, "todod_perf_todos_total{result=\"success\"} 0");
    assert_has_line(text, "todod_perf_todos_total{result=\"error\"} 0");
    assert_has_line(text, "todod_perf_batch_duration_seconds_bucket{le=\"+Inf\"} 0");
    assert_null(strstr(text, "todod_http_requests_total{"));
    free(text);
}

static void test_prometheus_escapes_label_values(void **state)
{
    static const char *const odd_routes[] = {"/a\"b\\c\nd"};
    struct stats_shm *shm = *state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    stats_http_observe(&shm->slots[0], 0, STATS_GET, 200, 1);
    assert_int_equal(metrics_render(shm, odd_routes, 1, "1.0\"x", f), 0);
    fclose(f);
    assert_has_line(buf, "todod_http_requests_total{route=\"/a\\\"b\\\\c\\nd\",method=\"GET\","
                         "code=\"200\"} 1");
    assert_has_line(buf, "todod_build_info{version=\"1.0\\\"x\"} 1");
    free(buf);
}

/* promtool exits non-zero and prints the problem on any lint warning. */
static void assert_promtool_accepts(const char *text)
{
    char in[] = "/tmp/test_stats_metrics.XXXXXX", out[] = "/tmp/test_stats_promtool.XXXXXX";
    char cmd[256], report[4096] = "";
    int fd_in, fd_out, rc;
    FILE *f;

    if (system("command -v promtool >/dev/null 2>&1") != 0)
        fail_msg("promtool not found in PATH: install it (Debian: prometheus package) to "
                 "validate the /metrics format");
    fd_in = mkstemp(in);
    fd_out = mkstemp(out);
    assert_true(fd_in >= 0 && fd_out >= 0);
    assert_int_equal(write(fd_in, text, strlen(text)), (ssize_t)strlen(text));
    close(fd_in);
    close(fd_out);
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s > %s 2>&1", in, out);
    rc = system(cmd);
    f = fopen(out, "r");
    if (f != NULL) {
        report[fread(report, 1, sizeof(report) - 1, f)] = '\0';
        fclose(f);
    }
    unlink(in);
    unlink(out);
    if (rc != 0 || report[0] != '\0')
        fail_msg("promtool check metrics failed (%d):\n%s\n--- input ---\n%s", rc, report, text);
}

static void test_prometheus_output_passes_promtool(void **state)
{
    struct stats_shm *shm = *state;
    char *text;

    fill_sample(shm);
    text = render(shm, 0);
    assert_promtool_accepts(text);
    free(text);
}

static void test_prometheus_empty_output_passes_promtool(void **state)
{
    char *text = render(*state, 0);

    assert_promtool_accepts(text);
    free(text);
}

/* ---- JSON ---- */

static json_object *get(json_object *obj, const char *key)
{
    json_object *val = NULL;

    if (!json_object_object_get_ex(obj, key, &val))
        fail_msg("missing key %s in %s", key, json_object_to_json_string(obj));
    return val;
}

static void test_running_gauge_tracing_and_connection_counters_are_exposed(void **state)
{
    struct stats_shm *shm = *state;
    int a = claim_active(shm, 1), b = claim_active(shm, 2);
    char *text;
    json_object *root, *totals, *durations;

    atomic_store(&shm->slots[a].perf_running, 1);
    atomic_store(&shm->slots[b].perf_running, 2);
    atomic_store(&shm->slots[a].c.trace_spans_exported, 7);
    atomic_store(&shm->retired.trace_spans_dropped, 3);
    atomic_store(&shm->slots[b].c.trace_export_errors, 1);
    atomic_store(&shm->slots[b].c.accept_errors, 4);
    atomic_store(&shm->slots[a].c.client_timeouts, 5);
    stats_http_observe(&shm->slots[a], ROUTE_TODOS, STATS_GET, 200, 300);
    stats_http_observe(&shm->slots[b], ROUTE_TODOS, STATS_GET, 200, 100000);
    text = render(shm, 0);
    assert_has_line(text, "todod_perf_tests_running 3");
    assert_has_line(text, "todod_trace_spans_exported_total 7");
    assert_has_line(text, "todod_trace_spans_dropped_total 3");
    assert_has_line(text, "todod_trace_export_errors_total 1");
    assert_has_line(text, "todod_http_accept_errors_total 4");
    assert_has_line(text, "todod_http_client_timeouts_total 5");
    free(text);
    text = render(shm, 1);
    root = json_tokener_parse(text);
    assert_non_null(root);
    totals = get(root, "totals");
    assert_int_equal(json_object_get_int(get(totals, "perf_tests_running")), 3);
    assert_int_equal(json_object_get_uint64(get(totals, "trace_spans_dropped")), 3);
    durations = get(get(get(totals, "http_duration"), "routes"), "/todos");
    assert_int_equal(json_object_get_uint64(get(durations, "count")), 2);
    /* 300 us falls in the second bucket (<= 0.5 ms), 100 ms in the ninth (<= 100 ms). */
    assert_int_equal(
        json_object_get_uint64(json_object_array_get_idx(get(durations, "buckets"), 1)), 1);
    assert_int_equal(
        json_object_get_uint64(json_object_array_get_idx(get(durations, "buckets"), 8)), 1);
    assert_int_equal(json_object_array_length(get(get(totals, "http_duration"), "bounds_ms")),
                     STATS_NBUCKETS - 1);
    json_object_put(root);
    free(text);
}

static void test_json_has_totals(void **state)
{
    struct stats_shm *shm = *state;
    char *text;
    json_object *root, *totals;

    fill_sample(shm);
    text = render(shm, 1);
    root = json_tokener_parse(text);
    assert_non_null(root);
    totals = get(root, "totals");
    assert_int_equal(json_object_get_uint64(get(totals, "requests")), 7);
    assert_int_equal(json_object_get_uint64(get(get(totals, "requests_by_route"), "/todos")), 3);
    assert_int_equal(json_object_get_uint64(get(get(totals, "requests_by_route"), "/todos/{id}")),
                     3);
    assert_false(json_object_object_get_ex(get(totals, "requests_by_route"), "/metrics", NULL));
    assert_int_equal(json_object_get_uint64(get(get(totals, "requests_by_code"), "404")), 3);
    assert_int_equal(json_object_get_uint64(get(get(totals, "requests_by_code"), "other")), 1);
    assert_false(json_object_object_get_ex(get(totals, "requests_by_code"), "500", NULL));
    assert_int_equal(json_object_get_uint64(get(totals, "perf_tests")), 1);
    assert_int_equal(json_object_get_uint64(get(totals, "perf_todos_success")), 5);
    assert_int_equal(json_object_get_uint64(get(totals, "perf_todos_error")), 1);
    assert_int_equal(json_object_get_uint64(get(totals, "db_errors")), 2);
    assert_int_equal(json_object_get_uint64(get(totals, "db_reconnects")), 1);
    assert_int_equal(json_object_get_int(get(totals, "workers")), 2);
    assert_int_equal(json_object_get_uint64(get(totals, "worker_restarts")), 1);
    json_object_put(root);
    free(text);
}

static void test_json_has_one_entry_per_active_slot(void **state)
{
    struct stats_shm *shm = *state;
    char *text;
    json_object *root, *workers, *w0, *w1;

    fill_sample(shm);
    text = render(shm, 1);
    root = json_tokener_parse(text);
    assert_non_null(root);
    workers = get(root, "workers");
    assert_int_equal(json_object_array_length(workers), 2);
    w0 = json_object_array_get_idx(workers, 0);
    w1 = json_object_array_get_idx(workers, 1);

    assert_int_equal(json_object_get_int(get(w0, "slot")), 0);
    assert_int_equal(json_object_get_int(get(w0, "pid")), 101);
    assert_int_equal(json_object_get_uint64(get(w0, "requests")), 4);
    assert_int_equal(json_object_get_uint64(get(w0, "perf_todos")), 5);
    assert_false(json_object_get_boolean(get(w0, "db_connected")));
    assert_true(json_object_get_boolean(get(w0, "ready")));
    assert_false(json_object_get_boolean(get(w0, "draining")));

    assert_int_equal(json_object_get_int(get(w1, "pid")), 102);
    assert_int_equal(json_object_get_uint64(get(w1, "requests")), 2);
    assert_true(json_object_get_boolean(get(w1, "db_connected")));
    assert_true(json_object_get_boolean(get(w1, "draining")));
    assert_int_equal(json_object_get_int(get(w1, "open_connections")), 7);
    json_object_put(root);
    free(text);
}

static void test_json_started_at_is_unix_seconds_and_started_rfc3339_utc(void **state)
{
    struct stats_shm *shm = *state;
    int slot = claim_active(shm, 1);
    char *text;
    json_object *root, *worker;

    atomic_store(&shm->slots[slot].started_at, 1714564800); /* 2024-05-01 12:00:00 UTC */
    text = render(shm, 1);
    root = json_tokener_parse(text);
    assert_non_null(root);
    worker = json_object_array_get_idx(get(root, "workers"), 0);
    assert_true(json_object_is_type(get(worker, "started_at"), json_type_int));
    assert_int_equal(json_object_get_int64(get(worker, "started_at")), 1714564800);
    assert_string_equal(json_object_get_string(get(worker, "started")), "2024-05-01T12:00:00Z");
    json_object_put(root);
    free(text);
}

static void test_json_names_the_instance_its_version_start_and_now(void **state)
{
    struct stats_shm *shm = *state;
    int64_t before = (int64_t)time(NULL), now;
    char *text;
    json_object *root;

    shm->master_start_time = 1714564800.75; /* 2024-05-01 12:00:00.75 UTC */
    text = render(shm, 1);
    root = json_tokener_parse(text);
    assert_non_null(root);
    assert_string_equal(json_object_get_string(get(root, "version")), "0.1.0");
    assert_true(json_object_is_type(get(root, "started_at"), json_type_int));
    assert_int_equal(json_object_get_int64(get(root, "started_at")), 1714564800);
    assert_string_equal(json_object_get_string(get(root, "started")), "2024-05-01T12:00:00Z");
    assert_true(json_object_is_type(get(root, "now"), json_type_int));
    now = json_object_get_int64(get(root, "now"));
    assert_true(now >= before && now <= (int64_t)time(NULL));
    json_object_put(root);
    free(text);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_shm, teardown_shm)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_create_maps_zeroed_memory_with_start_time),
        T(test_histogram_picks_first_bucket_whose_bound_is_not_below_value),
        T(test_method_index_knows_standard_methods_and_folds_the_rest),
        T(test_code_index_round_trips_listed_codes_and_folds_the_rest),
        T(test_http_observe_counts_route_method_code_and_duration),
        T(test_http_observe_ignores_route_out_of_range),
        T(test_sum_adds_every_slot_and_the_retired_totals),
        T(test_claim_takes_free_slots_resets_gauges_and_fails_when_full),
        T(test_retire_keeps_totals_zeroes_and_frees_the_slot),
        T(test_retire_looks_at_no_more_shares_than_a_run_holds),
        T(test_a_share_posted_for_a_worker_reaped_meanwhile_ends_abandoned),
        T(test_an_orphaned_run_is_freed_by_its_last_share),
        T(test_sum_never_goes_down_while_master_retires_slots),
        T(test_forked_writers_in_their_own_slots_sum_exactly),
        T(test_prometheus_has_a_sample_per_nonzero_route_method_code),
        T(test_prometheus_histograms_are_cumulative_in_seconds),
        T(test_prometheus_has_perf_db_and_process_families),
        T(test_prometheus_empty_shm_still_has_every_always_present_sample),
        T(test_prometheus_escapes_label_values),
        T(test_prometheus_output_passes_promtool),
        T(test_prometheus_empty_output_passes_promtool),
        T(test_json_has_totals),
        T(test_json_has_one_entry_per_active_slot),
        T(test_json_started_at_is_unix_seconds_and_started_rfc3339_utc),
        T(test_json_names_the_instance_its_version_start_and_now),
        T(test_running_gauge_tracing_and_connection_counters_are_exposed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
