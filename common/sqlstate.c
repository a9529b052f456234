#include "sqlstate.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/*
 * The SQLSTATEs todod treats apart from plain failures (PostgreSQL's
 * "Appendix A. PostgreSQL Error Codes"). A two-character entry is a whole
 * class. Retrying 40001 and 40P01 is what PostgreSQL's manual prescribes
 * ("Serialization Failure Handling"): the server rolled the whole transaction
 * back, so sending it again runs nothing twice.
 */
static const struct {
    const char *code;
    enum sqlstate_kind kind;
} kinds[] = {
    {"57014", SQLSTATE_TIMED_OUT},   /* query_canceled: statement_timeout ran out */
    {"08", SQLSTATE_UNAVAILABLE},    /* connection_exception */
    {"57P01", SQLSTATE_UNAVAILABLE}, /* admin_shutdown: a fast shutdown, pg_terminate_backend */
    {"57P02", SQLSTATE_UNAVAILABLE}, /* crash_shutdown */
    {"57P03", SQLSTATE_UNAVAILABLE}, /* cannot_connect_now: starting up, shutting down */
    {"25006", SQLSTATE_UNAVAILABLE}, /* read_only_sql_transaction: a standby */
    /* todod's own statements meet these only when its schema is gone or a
     * pooler is in the way: the statement never ran (the pool re-checks the
     * schema, or explains the pooler once). */
    {"42P01", SQLSTATE_UNAVAILABLE}, /* undefined_table: the table dropped */
    {"42883", SQLSTATE_UNAVAILABLE}, /* undefined_function: the schema function dropped */
    {"TD001", SQLSTATE_UNAVAILABLE}, /* todod's own: the count triggers are gone */
    {"26000", SQLSTATE_UNAVAILABLE}, /* invalid_sql_statement_name: prepared elsewhere */
    {"42P05", SQLSTATE_UNAVAILABLE}, /* duplicate_prepared_statement: a pooler's reuse */
    {"40001", SQLSTATE_RESEND},      /* serialization_failure */
    {"40P01", SQLSTATE_RESEND},      /* deadlock_detected */
};

/* Five digits or upper-case letters, as the server sends them. */
static bool well_formed(const char *s)
{
    for (int i = 0; i < 5; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
            return false;
    return s[5] == '\0';
}

enum sqlstate_kind sqlstate_kind(const char *sqlstate)
{
    if (sqlstate == NULL || !well_formed(sqlstate))
        return SQLSTATE_FAILED;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strncmp(sqlstate, kinds[i].code, strlen(kinds[i].code)) == 0)
            return kinds[i].kind;
    return SQLSTATE_FAILED;
}
