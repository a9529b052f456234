/*
 * The worker's PostgreSQL connections: non-blocking libpq in pipeline mode,
 * driven by the worker's event loop. Three kinds of connection:
 *
 *  - read connections (db_connections, always open): reads are pipelined on
 *    the one with the fewest queries in flight, those of one loop turn sharing a
 *    sync;
 *  - write connections (up to db_write_connections, opened on demand): each
 *    carries one transaction at a time; writes that arrive meanwhile wait in the
 *    pool's queue and go together, as one transaction (one commit, one WAL
 *    flush), on the first write connection that is free. Each transaction locks
 *    its rows in one global order (by id), and a write to a row that one of the
 *    pool's transactions in flight locks waits in the queue for it, so todod's
 *    transactions never deadlock each other (UPDATE and DELETE take the todo's
 *    id as $1, in text);
 *  - the performance-test connection (opened on demand): batches pipelined, each
 *    its own transaction, no statement time-out.
 *
 * With db_prepared = off (a pooler in transaction mode) every connection has one
 * transaction in flight at a time, sent whole: reads that arrive meanwhile wait
 * and go together as the next one, batches go one by one.
 *
 * Every answer about a write is true: DB_OK means committed; DB_TIMEOUT and
 * DB_UNAVAILABLE mean not applied, now or later (the server rolled it back, or it
 * was never sent); DB_LOST means the connection broke after the write's Sync was
 * handed to libpq, so it may have been applied. No statement runs twice: one is
 * sent again only when the server rolled its whole transaction back, because a
 * neighbour in it failed, or to break a deadlock or a serialization failure
 * (40P01, 40001), within its request's deadline.
 */
#ifndef TODOD_DB_H
#define TODOD_DB_H

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct conf;
struct db_pool;
struct stats_slot;
struct trace_context;
struct trace_span;
struct tracer;

/* Where a statement's CLIENT span goes in a trace; NULL: not traced. */
struct db_trace {
    const struct trace_context *ctx;
    const struct trace_span *parent;
};

/* The result format of every statement: 1, PostgreSQL's binary format. */
#define DB_BINARY 1

/* The statements; db_sql.c holds their SQL. */
enum db_stmt {
    DB_TODO_GET,
    DB_TODO_LIST,
    DB_TODO_AFTER,
    DB_TODO_AFTER_NULL,
    DB_TODO_BY_DONE,
    DB_WAL_LSN,     /* the position a write's answer names (db_int.h TXN_LSN) */
    DB_WAL_SAMPLE,  /* recovery and WAL position, sampled (db_standby.c) */
    DB_TODO_INSERT, /* writes from here on */
    DB_TODO_UPDATE,
    DB_TODO_DELETE,
    DB_PERF_INSERT,
    DB_NSTMTS
};

/*
 * The columns of a todo, in the order every statement that returns todos
 * returns them, each in PostgreSQL's binary format (uuid 16 bytes, text its
 * bytes, bool one byte, timestamptz 8 bytes, big-endian): FIRST(enum name, SQL
 * name) for the first, NEXT(...) for each other. db_sql.c writes the SQL from
 * it, todos.c reads rows by it.
 */
#define DB_TODO_COLUMNS(FIRST, NEXT)                                                               \
    FIRST(DB_COL_ID, "id")                                                                         \
    NEXT(DB_COL_TITLE, "title")                                                                    \
    NEXT(DB_COL_DONE, "done")                                                                      \
    NEXT(DB_COL_CREATED, "created_at")                                                             \
    NEXT(DB_COL_UPDATED, "updated_at")

/* (clang-format would take the list's expansion for the start of a statement) */
/* clang-format off */
enum db_todo_column {
#define DB_COL_ENUM(name, sql) name,
    DB_TODO_COLUMNS(DB_COL_ENUM, DB_COL_ENUM)
#undef DB_COL_ENUM
    DB_COL_TOTAL, /* the lists' statements: the total (int8), after a todo's columns */
};
/* clang-format on */

enum db_status {
    DB_OK,          /* done (a write: committed); res is the result */
    DB_FAILED,      /* the server refused it (not applied); res holds the error */
    DB_UNAVAILABLE, /* no usable connection; never sent, never applied */
    DB_TIMEOUT,     /* no answer within request_timeout; a write: not applied */
    DB_LOST,        /* the connection broke after the write's Sync went: may be applied */
};

/*
 * The column every read statement returns beside its rows: the WAL position
 * its data is at least as new as (pg_lsn, read after the statement's snapshot
 * was taken), the primary's insert position or a standby's replay position.
 */
#define DB_LSN_COLUMN "todod_lsn"
/* ... and whether the server was a standby then (a standby's pool drops an
 * answer from a server promoted since it was last sampled). */
#define DB_RECOVERY_COLUMN "todod_recovery"

struct db_result {
    enum db_status status;
    const PGresult *res; /* DB_OK and DB_FAILED; cleared after the callback */
    double seconds;      /* from submission to this answer */
    /* DB_OK: a read, the position its data is at least as new as; a write,
     * one at or past its commit. 0: not known (the connection broke between
     * the commit and the statement that reads it). */
    uint64_t lsn;
    bool standby; /* served by a standby (database_read_url), not the primary */
};

/* Called exactly once per submitted query, never from inside db_submit. */
typedef void (*db_done_cb)(void *arg, const struct db_result *r);

struct db_params {
    int n;
    const char *const *values;
    const int *lengths; /* NULL: all text */
    const int *formats; /* NULL: all text */
};

/* The statements a standby may serve (database_read_url). */
static inline bool db_is_read(enum db_stmt stmt)
{
    return stmt < DB_WAL_LSN;
}

struct db_pool *db_pool_new(struct event_base *base, const struct conf *conf,
                            struct stats_slot *slot, struct tracer *tracer);
/*
 * The worker stops: what is still pending is answered now, DB_LOST when it
 * was sent (a write or a batch: it may be applied), DB_UNAVAILABLE otherwise;
 * every connection closes and none opens again; db_submit and db_submit_batch
 * refuse from now on. The memory stays until db_pool_free.
 */
void db_pool_close(struct db_pool *pool);
/* db_pool_close() if not done yet, and frees. */
void db_pool_free(struct db_pool *pool);

/* Read connections that are ready (/health, /ready). */
int db_pool_ready(const struct db_pool *pool);

/* Every read connection is ready (a worker starts serving then). */
bool db_pool_started(const struct db_pool *pool);

/*
 * Runs a statement of the API; the answer must come by deadline (a request's
 * arrival + request_timeout). A read is served from data at or past the WAL
 * position after (0: any). Returns 0, or -1 when no connection is usable
 * (the caller answers 503 at once; cb is then not called).
 */
int db_submit(struct db_pool *pool, enum db_stmt stmt, const struct db_params *p,
              struct timespec deadline, uint64_t after, const struct db_trace *trace, db_done_cb cb,
              void *arg);

/*
 * A performance-test batch (DB_PERF_INSERT), its own transaction, no time-out,
 * pipelined on the pool's performance-test connection. The pool takes owned
 * (one allocation that p's values point into) and frees it with the query,
 * also on failure. Returns 0, or -1 when the database is unreachable.
 */
int db_submit_batch(struct db_pool *pool, const struct db_params *p, void *owned,
                    const struct db_trace *trace, db_done_cb cb, void *arg);

#endif
