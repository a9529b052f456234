/* perfboard's histograms: 1 % buckets, merged bucket by bucket, quantiles. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "perfboard.h"

/* A private histogram holding values[0..n) (recorded as a share does, merged
 * as a coordinator does). */
static void hist_of(struct perf_hist *h, const uint64_t *values, size_t n)
{
    struct perf_hist_shm *shm = malloc(sizeof(*shm));

    assert_non_null(shm);
    perf_hist_shm_init(shm);
    for (size_t i = 0; i < n; i++)
        perf_hist_shm_record(shm, values[i]);
    perf_hist_init(h);
    perf_hist_merge_shm(h, shm);
    free(shm);
}

static void hist_of_repeated(struct perf_hist *h, uint64_t us, size_t n)
{
    uint64_t *v = malloc(n * sizeof(*v));

    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = us;
    hist_of(h, v, n);
    free(v);
}

static void buckets_are_one_percent_wide_from_one_microsecond(void **state)
{
    assert_int_equal(perf_hist_bucket(0), 0);
    assert_int_equal(perf_hist_bucket(1), 0);
    /* Bucket i holds [1.01^i, 1.01^(i+1)). */
    for (uint64_t us = 2; us < 100000000; us = us * 3 + 1) {
        int b = perf_hist_bucket(us);

        assert_true(pow(PERF_HIST_STEP, b) <= (double)us * (1 + 1e-9));
        assert_true((double)us < pow(PERF_HIST_STEP, b + 1) * (1 + 1e-9));
    }
    /* Never fewer buckets for a larger value. */
    for (uint64_t us = 1; us < 1000000; us += 7)
        assert_true(perf_hist_bucket(us) <= perf_hist_bucket(us + 1));
}

static void values_past_100_seconds_share_the_last_bucket(void **state)
{
    assert_true(perf_hist_bucket(99000000) < PERF_HIST_BUCKETS);
    assert_int_equal(perf_hist_bucket(100000000), PERF_HIST_BUCKETS - 1);
    assert_int_equal(perf_hist_bucket(1000000000000ULL), PERF_HIST_BUCKETS - 1);
    assert_int_equal(perf_hist_bucket(UINT64_MAX), PERF_HIST_BUCKETS - 1);
}

static void an_empty_histogram_has_no_quantiles(void **state)
{
    struct perf_hist h, empty;
    struct perf_hist_shm *shm = malloc(sizeof(*shm));

    perf_hist_init(&h);
    assert_int_equal(h.count, 0);
    assert_true(h.min_us == UINT64_MAX && h.max_us == 0);
    assert_true(perf_hist_quantile(&h, 0.5) == 0);
    /* Merging nothing changes nothing. */
    assert_non_null(shm);
    perf_hist_shm_init(shm);
    perf_hist_merge_shm(&h, shm);
    perf_hist_init(&empty);
    perf_hist_merge(&h, &empty);
    assert_int_equal(h.count, 0);
    assert_true(h.min_us == UINT64_MAX && h.max_us == 0);
    free(shm);
}

static void a_quantile_is_its_buckets_upper_edge_within_min_and_max(void **state)
{
    uint64_t v[1000];
    struct perf_hist h;

    /* One value: every quantile is that value exactly (clamped to min = max). */
    hist_of_repeated(&h, 5000, 3);
    assert_int_equal(h.count, 3);
    assert_true(perf_hist_quantile(&h, 0.5) == 5.0);
    assert_true(perf_hist_quantile(&h, 0.99) == 5.0);
    /* 1 ms .. 1000 ms: within 1 % above the exact value, never past the max. */
    for (int i = 0; i < 1000; i++)
        v[i] = (uint64_t)(i + 1) * 1000;
    hist_of(&h, v, 1000);
    assert_int_equal(h.count, 1000);
    assert_int_equal(h.min_us, 1000);
    assert_int_equal(h.max_us, 1000000);
    assert_true(perf_hist_quantile(&h, 0.5) >= 500.0);
    assert_true(perf_hist_quantile(&h, 0.5) <= 505.0);
    assert_true(perf_hist_quantile(&h, 0.99) >= 990.0);
    assert_true(perf_hist_quantile(&h, 0.99) <= 1000.0);
    assert_true(perf_hist_quantile(&h, 1.0) == 1000.0);
    assert_true(perf_hist_quantile(&h, 0.0) >= 1.0); /* the first rank, not below min */
    assert_true(perf_hist_quantile(&h, 0.0) <= 1.01);
}

static void merging_adds_buckets_and_keeps_min_and_max(void **state)
{
    struct perf_hist a, b, both;
    uint64_t all[200];

    hist_of_repeated(&a, 1000, 100);   /* 100 batches of 1 ms */
    hist_of_repeated(&b, 100000, 100); /* 100 of 100 ms */
    for (int i = 0; i < 200; i++)
        all[i] = i < 100 ? 1000 : 100000;
    hist_of(&both, all, 200);

    perf_hist_merge(&a, &b);
    assert_int_equal(a.count, 200);
    assert_int_equal(a.min_us, 1000);
    assert_int_equal(a.max_us, 100000);
    assert_memory_equal(a.bucket, both.bucket, sizeof(a.bucket));
    /* The merged median is the 1 ms side's, not an average of two medians. */
    assert_true(perf_hist_quantile(&a, 0.5) < 1.02);
    assert_true(perf_hist_quantile(&a, 0.51) >= 99.0);
    assert_true(perf_hist_quantile(&a, 0.51) <= 100.0);
}

static void merging_a_shared_histogram_adds_what_it_holds_now(void **state)
{
    struct perf_hist_shm *shm = malloc(sizeof(*shm));
    struct perf_hist h;

    assert_non_null(shm);
    perf_hist_shm_init(shm);
    perf_hist_shm_record(shm, 300);
    perf_hist_shm_record(shm, 700);
    perf_hist_init(&h);
    perf_hist_merge_shm(&h, shm);
    perf_hist_shm_record(shm, 50); /* after the merge: in the next one only */
    perf_hist_merge_shm(&h, shm);
    assert_int_equal(h.count, 5);
    assert_int_equal(h.bucket[perf_hist_bucket(300)], 2);
    assert_int_equal(h.bucket[perf_hist_bucket(700)], 2);
    assert_int_equal(h.bucket[perf_hist_bucket(50)], 1);
    assert_int_equal(h.min_us, 50);
    assert_int_equal(h.max_us, 700);
    free(shm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buckets_are_one_percent_wide_from_one_microsecond),
        cmocka_unit_test(values_past_100_seconds_share_the_last_bucket),
        cmocka_unit_test(an_empty_histogram_has_no_quantiles),
        cmocka_unit_test(a_quantile_is_its_buckets_upper_edge_within_min_and_max),
        cmocka_unit_test(merging_adds_buckets_and_keeps_min_and_max),
        cmocka_unit_test(merging_a_shared_histogram_adds_what_it_holds_now),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
