/*
 * The worker's PostgreSQL connections: non-blocking libpq in pipeline mode,
 * driven by the worker's event loop. Every connection is a small state machine
 * (disconnected -> connecting -> schema -> preparing -> ready) that reconnects
 * with back-off. Many queries share one connection; queries submitted in the
 * same loop iteration share one pipeline sync, so their writes commit together
 * (a group that fails is retried one query at a time).
 */
#ifndef TODOD_DB_H
#define TODOD_DB_H

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdbool.h>

struct db_pool;
struct db_query;
struct stats_slot;

/* Prepared statements; db.c holds their SQL. */
enum db_stmt {
    DB_TODO_GET,
    DB_TODO_INSERT,
    DB_TODO_UPDATE,
    DB_TODO_DELETE,
    DB_TODO_LIST,
    DB_TODO_BY_DONE,
    DB_PERF_INSERT,
    DB_NSTMTS
};

enum db_status {
    DB_OK,          /* res is the query's result (tuples or command) */
    DB_FAILED,      /* the server rejected the query; res holds the error */
    DB_UNAVAILABLE, /* no connection, or it was lost; res is NULL */
    DB_TIMEOUT,     /* no answer within request_timeout; res is NULL */
};

/* Called once per query. res is cleared by db.c afterwards. */
typedef void (*db_done_cb)(void *arg, enum db_status st, const PGresult *res);

struct db_params {
    int n;
    const char *const *values;
    const int *lengths; /* NULL: all text */
    const int *formats; /* NULL: all text */
};

enum db_flags {
    /* Run in a transaction of its own (never grouped with other queries), and
     * do not copy the parameters: libpq copies them into its buffer at once. */
    DB_ALONE = 1 << 0,
    /* No request_timeout for this query (the performance test bounds itself). */
    DB_NO_TIMEOUT = 1 << 1,
};

struct conf;

struct db_pool *db_pool_new(struct event_base *base, const struct conf *conf,
                            struct stats_slot *slot);
void db_pool_free(struct db_pool *pool);

/* Connections that are ready for queries. */
int db_pool_ready(const struct db_pool *pool);

/* Every connection the pool keeps open is ready (a worker starts serving then). */
bool db_pool_started(const struct db_pool *pool);

/*
 * Send a prepared statement on the least-loaded ready connection. Returns NULL
 * when no connection is ready (the caller answers 503 at once); cb is then not
 * called.
 */
struct db_query *db_submit(struct db_pool *pool, enum db_stmt stmt, const struct db_params *p,
                           unsigned flags, db_done_cb cb, void *arg);

#endif
