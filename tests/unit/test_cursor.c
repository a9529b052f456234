/* The cursor of keyset pages: one string per key, and nothing else accepted. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "cursor.h"

#define PG_TIMESTAMP_MIN -211813488000000000LL /* 4714-11-24 00:00:00 BC */
#define PG_TIMESTAMP_END 9223371331200000000LL /* 294277-01-01 00:00:00 */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 0b6f4c1e-3f5a-4d8e-9a39-2c1f0e7d9b21 */
static const uint8_t an_id[16] = {0x0b, 0x6f, 0x4c, 0x1e, 0x3f, 0x5a, 0x4d, 0x8e,
                                  0x9a, 0x39, 0x2c, 0x1f, 0x0e, 0x7d, 0x9b, 0x21};

static struct cursor_key key(bool null, int64_t t, const uint8_t id[16])
{
    struct cursor_key k = {null, t, {0}};

    memcpy(k.id, id, 16);
    return k;
}

static enum cursor_err decode_str(const char *s, struct cursor_key *k)
{
    return cursor_decode(s, strlen(s), k);
}

static void assert_round_trip(struct cursor_key k)
{
    char s[CURSOR_LEN + 1], again[CURSOR_LEN + 1];
    struct cursor_key back;

    cursor_encode(&k, s);
    assert_int_equal(strlen(s), CURSOR_LEN);
    assert_int_equal(strspn(s, b64url), CURSOR_LEN);
    assert_int_equal(decode_str(s, &back), CURSOR_OK);
    assert_int_equal(back.created_null, k.created_null);
    assert_true(back.created_at == k.created_at);
    assert_memory_equal(back.id, k.id, 16);
    cursor_encode(&back, again);
    assert_string_equal(again, s);
}

/* The strings Python's zlib.crc32 and base64.urlsafe_b64encode give for these
 * keys (the layout in cursor.h, written independently). */
static void encodes_as_the_documented_layout(void **state)
{
    struct cursor_key k = key(false, 849461016841130LL, an_id); /* 2026-12-01T17:23:36.841130Z */
    uint8_t ff[16];
    char s[CURSOR_LEN + 1];

    (void)state;
    cursor_encode(&k, s);
    assert_string_equal(s, "AQAAAwSUjijLqgtvTB4_Wk2OmjksHw59myEGwvU4");
    k = key(true, 0, an_id);
    cursor_encode(&k, s);
    assert_string_equal(s, "AQEAAAAAAAAAAAtvTB4_Wk2OmjksHw59myHf0IrO");
    memset(ff, 0xff, sizeof(ff));
    k = key(false, INT64_MAX, ff);
    cursor_encode(&k, s);
    assert_string_equal(s, "AQB_______________________________8tMVR6");
}

static void every_time_postgresql_stores_round_trips(void **state)
{
    uint8_t zero[16] = {0}, ff[16];

    (void)state;
    memset(ff, 0xff, sizeof(ff));
    assert_round_trip(key(false, 849461016841130LL, an_id));
    assert_round_trip(key(true, 0, an_id));
    assert_round_trip(key(true, 0, zero));
    assert_round_trip(key(false, 0, zero));
    assert_round_trip(key(false, -1, ff));
    assert_round_trip(key(false, INT64_MAX, an_id)); /* 'infinity' */
    assert_round_trip(key(false, INT64_MIN, an_id)); /* '-infinity' */
    assert_round_trip(key(false, PG_TIMESTAMP_MIN, an_id));
    assert_round_trip(key(false, PG_TIMESTAMP_END - 1, ff));
}

/* A key PostgreSQL cannot hold encodes to a string that is refused. */
static void a_key_postgresql_would_refuse_is_refused(void **state)
{
    const struct cursor_key bad[] = {
        key(false, PG_TIMESTAMP_END, an_id),        key(false, PG_TIMESTAMP_MIN - 1, an_id),
        key(false, INT64_MAX - 1, an_id),           key(false, INT64_MIN + 1, an_id),
        key(true, 1, an_id) /* NULL with a time */,
    };
    struct cursor_key k;
    char s[CURSOR_LEN + 1];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cursor_encode(&bad[i], s);
        assert_int_equal(decode_str(s, &k), CURSOR_ERR_KEY);
    }
}

static void wrong_length_padding_and_other_alphabets_are_refused(void **state)
{
    const char *good = "AQAAAwSUjijLqgtvTB4_Wk2OmjksHw59myEGwvU4";
    struct cursor_key k;
    char s[64];

    (void)state;
    assert_int_equal(decode_str(good, &k), CURSOR_OK);
    assert_int_equal(decode_str("", &k), CURSOR_ERR_LENGTH);
    assert_int_equal(cursor_decode(good, 39, &k), CURSOR_ERR_LENGTH);
    snprintf(s, sizeof(s), "%sA", good);
    assert_int_equal(decode_str(s, &k), CURSOR_ERR_LENGTH);
    snprintf(s, sizeof(s), "%s=", good); /* padding is never written */
    assert_int_equal(decode_str(s, &k), CURSOR_ERR_LENGTH);
    snprintf(s, sizeof(s), "%.39s=", good);
    assert_int_equal(decode_str(s, &k), CURSOR_ERR_ALPHABET);
    /* the standard alphabet's 62 and 63 */
    assert_int_equal(decode_str("AQAAAwSUjijLqgtvTB4/Wk2OmjksHw59myEGwvU4", &k),
                     CURSOR_ERR_ALPHABET);
    assert_int_equal(decode_str("AQAAAwSUjijLqgtvTB4+Wk2OmjksHw59myEGwvU4", &k),
                     CURSOR_ERR_ALPHABET);
    assert_int_equal(decode_str("AQAAAwSUjijLqgtvTB4 Wk2OmjksHw59myEGwvU4", &k),
                     CURSOR_ERR_ALPHABET);
    assert_int_equal(decode_str("AQAAAwSUjijLqgtvTB4%Wk2OmjksHw59myEGwvU4", &k),
                     CURSOR_ERR_ALPHABET);
    assert_int_equal(cursor_decode("AQAAAwSUjijLqgtvTB4\0Wk2OmjksHw59myEGwvU4", 40, &k),
                     CURSOR_ERR_ALPHABET);
    memcpy(s, good, 41);
    s[5] = (char)0xc3; /* not ASCII */
    assert_int_equal(decode_str(s, &k), CURSOR_ERR_ALPHABET);
}

/* Version 0 and 2, unknown flags, a NULL time with bytes set: each with a
 * correct CRC (Python, as above), refused for what it is. */
static void other_versions_and_flags_are_refused(void **state)
{
    struct cursor_key k;

    (void)state;
    assert_int_equal(decode_str("AAAAAwSUjijLqgtvTB4_Wk2OmjksHw59myGRZOjf", &k),
                     CURSOR_ERR_VERSION); /* version 0 */
    assert_int_equal(decode_str("AgAAAwSUjijLqgtvTB4_Wk2OmjksHw59myH-L6LK", &k),
                     CURSOR_ERR_VERSION); /* version 2 */
    assert_int_equal(decode_str("AQIAAwSUjijLqgtvTB4_Wk2OmjksHw59myFb5JOo", &k),
                     CURSOR_ERR_KEY); /* flag 0x02 */
    assert_int_equal(decode_str("AQEAAwSUjijLqgtvTB4_Wk2OmjksHw59myEIUn6d", &k),
                     CURSOR_ERR_KEY); /* NULL, with a time */
}

/* Every change of one character, or of two adjacent ones, and every swap of
 * two neighbours that differ, is refused: the CRC finds errors of up to 32
 * consecutive bits. */
static void typos_are_refused(void **state)
{
    struct cursor_key k = key(false, 849461016841130LL, an_id);
    char good[CURSOR_LEN + 1], s[CURSOR_LEN + 1];
    int i, a, b, tried = 0;

    (void)state;
    cursor_encode(&k, good);
    for (i = 0; i < CURSOR_LEN; i++) {
        for (a = 0; a < 64; a++) {
            if (b64url[a] == good[i])
                continue;
            memcpy(s, good, sizeof(s));
            s[i] = b64url[a];
            assert_int_not_equal(decode_str(s, &k), CURSOR_OK);
            tried++;
            for (b = 0; i + 1 < CURSOR_LEN && b < 64; b++) {
                if (b64url[b] == good[i + 1])
                    continue;
                s[i + 1] = b64url[b];
                assert_int_not_equal(decode_str(s, &k), CURSOR_OK);
                tried++;
            }
        }
        if (i + 1 < CURSOR_LEN && good[i] != good[i + 1]) {
            memcpy(s, good, sizeof(s));
            s[i] = good[i + 1];
            s[i + 1] = good[i];
            assert_int_not_equal(decode_str(s, &k), CURSOR_OK);
        }
    }
    assert_int_equal(tried, 40 * 63 + 39 * 63 * 63);
}

/* Strings of the right form that todod did not make: a million random ones
 * (a fixed sequence), none accepted; and whatever is accepted encodes back to
 * itself. */
static void random_strings_are_refused(void **state)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    char s[CURSOR_LEN + 1], again[CURSOR_LEN + 1];
    struct cursor_key k;
    int n, i, accepted = 0;

    (void)state;
    s[CURSOR_LEN] = '\0';
    for (n = 0; n < 1000000; n++) {
        for (i = 0; i < CURSOR_LEN; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s[i] = b64url[x >> 58];
        }
        /* a quarter of them with the right version byte (A, then Q..T) */
        if (n % 4 == 0) {
            s[0] = 'A';
            s[1] = "QRST"[x & 3];
        }
        if (decode_str(s, &k) == CURSOR_OK) {
            accepted++;
            cursor_encode(&k, again);
            assert_string_equal(again, s);
        }
    }
    assert_int_equal(accepted, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encodes_as_the_documented_layout),
        cmocka_unit_test(every_time_postgresql_stores_round_trips),
        cmocka_unit_test(a_key_postgresql_would_refuse_is_refused),
        cmocka_unit_test(wrong_length_padding_and_other_alphabets_are_refused),
        cmocka_unit_test(other_versions_and_flags_are_refused),
        cmocka_unit_test(typos_are_refused),
        cmocka_unit_test(random_strings_are_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
