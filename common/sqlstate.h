/* What PostgreSQL's refusal of a statement means to todod, by its SQLSTATE. */
#ifndef TODOD_SQLSTATE_H
#define TODOD_SQLSTATE_H

/*
 * Every refusal rolls the statement's transaction back, so a refused write was
 * not applied; the kinds differ in what todod may do next.
 */
enum sqlstate_kind {
    SQLSTATE_FAILED,      /* refused for what it is: a failure (500) */
    SQLSTATE_TIMED_OUT,   /* statement_timeout: the request's deadline came (503) */
    SQLSTATE_UNAVAILABLE, /* the server going away or read-only: try later (503) */
    SQLSTATE_RESEND,      /* deadlock or serialization failure: may be sent again */
};

/* The kind of a SQLSTATE (five characters, as PG_DIAG_SQLSTATE gives it);
 * SQLSTATE_FAILED for NULL or anything that is not a SQLSTATE. */
enum sqlstate_kind sqlstate_kind(const char *sqlstate);

#endif
