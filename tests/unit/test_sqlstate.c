/* What a refused statement means, by its SQLSTATE (common/sqlstate.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "sqlstate.h"

static void a_deadlock_or_serialization_failure_is_sent_again(void **state)
{
    (void)state;
    assert_int_equal(sqlstate_kind("40P01"), SQLSTATE_RESEND); /* deadlock_detected */
    assert_int_equal(sqlstate_kind("40001"), SQLSTATE_RESEND); /* serialization_failure */
}

static void other_rollbacks_of_class_40_are_failures(void **state)
{
    (void)state;
    assert_int_equal(sqlstate_kind("40000"), SQLSTATE_FAILED); /* transaction_rollback */
    assert_int_equal(sqlstate_kind("40002"), SQLSTATE_FAILED); /* integrity constraint */
    assert_int_equal(sqlstate_kind("40003"), SQLSTATE_FAILED); /* completion unknown */
}

static void statement_timeout_is_a_time_out(void **state)
{
    (void)state;
    assert_int_equal(sqlstate_kind("57014"), SQLSTATE_TIMED_OUT);
}

static void the_server_going_away_or_read_only_is_unavailable(void **state)
{
    (void)state;
    assert_int_equal(sqlstate_kind("57P01"), SQLSTATE_UNAVAILABLE); /* admin_shutdown */
    assert_int_equal(sqlstate_kind("57P02"), SQLSTATE_UNAVAILABLE); /* crash_shutdown */
    assert_int_equal(sqlstate_kind("57P03"), SQLSTATE_UNAVAILABLE); /* cannot_connect_now */
    assert_int_equal(sqlstate_kind("25006"), SQLSTATE_UNAVAILABLE); /* read_only_sql_transaction */
    /* the whole of class 08, connection exceptions */
    assert_int_equal(sqlstate_kind("08000"), SQLSTATE_UNAVAILABLE);
    assert_int_equal(sqlstate_kind("08003"), SQLSTATE_UNAVAILABLE);
    assert_int_equal(sqlstate_kind("08006"), SQLSTATE_UNAVAILABLE);
    assert_int_equal(sqlstate_kind("08P01"), SQLSTATE_UNAVAILABLE);
    /* their neighbours are not */
    assert_int_equal(sqlstate_kind("57000"), SQLSTATE_FAILED); /* operator_intervention */
    assert_int_equal(sqlstate_kind("57P04"), SQLSTATE_FAILED); /* database_dropped */
    assert_int_equal(sqlstate_kind("25P02"), SQLSTATE_FAILED); /* in_failed_sql_transaction */
    assert_int_equal(sqlstate_kind("09000"), SQLSTATE_FAILED);
}

static void a_missing_schema_or_a_pooler_in_the_way_is_unavailable(void **state)
{
    (void)state;
    /* todod's statements never ran: the schema is re-checked, the pooler explained */
    assert_int_equal(sqlstate_kind("42P01"), SQLSTATE_UNAVAILABLE); /* undefined_table */
    assert_int_equal(sqlstate_kind("42883"), SQLSTATE_UNAVAILABLE); /* undefined_function */
    assert_int_equal(sqlstate_kind("TD001"), SQLSTATE_UNAVAILABLE); /* count triggers gone */
    assert_int_equal(sqlstate_kind("26000"), SQLSTATE_UNAVAILABLE); /* prepared elsewhere */
    assert_int_equal(sqlstate_kind("42P05"), SQLSTATE_UNAVAILABLE); /* prepared twice */
    /* their neighbours are not */
    assert_int_equal(sqlstate_kind("42P00"), SQLSTATE_FAILED);
    assert_int_equal(sqlstate_kind("42884"), SQLSTATE_FAILED);
    assert_int_equal(sqlstate_kind("TD002"), SQLSTATE_FAILED);
}

static void everything_else_is_a_failure(void **state)
{
    (void)state;
    assert_int_equal(sqlstate_kind("23505"), SQLSTATE_FAILED); /* unique_violation */
    assert_int_equal(sqlstate_kind("42P02"), SQLSTATE_FAILED); /* undefined_parameter */
    assert_int_equal(sqlstate_kind("55P03"), SQLSTATE_FAILED); /* lock_not_available */
    assert_int_equal(sqlstate_kind("XX000"), SQLSTATE_FAILED); /* internal_error */
    assert_int_equal(sqlstate_kind("00000"), SQLSTATE_FAILED);
}

static void what_is_not_a_sqlstate_is_a_failure(void **state)
{
    (void)state;
    assert_int_equal(sqlstate_kind(NULL), SQLSTATE_FAILED);
    assert_int_equal(sqlstate_kind(""), SQLSTATE_FAILED);
    assert_int_equal(sqlstate_kind("08"), SQLSTATE_FAILED); /* a class, not a code */
    assert_int_equal(sqlstate_kind("4"), SQLSTATE_FAILED);
    assert_int_equal(sqlstate_kind("40P0"), SQLSTATE_FAILED);   /* too short */
    assert_int_equal(sqlstate_kind("40P011"), SQLSTATE_FAILED); /* too long */
    assert_int_equal(sqlstate_kind("40p01"), SQLSTATE_FAILED);  /* the server sends upper case */
    assert_int_equal(sqlstate_kind("08 00"), SQLSTATE_FAILED);
    assert_int_equal(sqlstate_kind("5701\n"), SQLSTATE_FAILED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_deadlock_or_serialization_failure_is_sent_again),
        cmocka_unit_test(other_rollbacks_of_class_40_are_failures),
        cmocka_unit_test(statement_timeout_is_a_time_out),
        cmocka_unit_test(the_server_going_away_or_read_only_is_unavailable),
        cmocka_unit_test(a_missing_schema_or_a_pooler_in_the_way_is_unavailable),
        cmocka_unit_test(everything_else_is_a_failure),
        cmocka_unit_test(what_is_not_a_sqlstate_is_a_failure),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
