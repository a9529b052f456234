/*
 * What only the database files share (db.h is the rest of the daemon's view):
 * a connection, a transaction, a query and the pool as they are in memory,
 * and the functions one db file calls in another:
 *
 *  - db_sql.c       the statements' SQL, the schema and its check;
 *  - db_conninfo.c  database_url parsed, host lists, host names resolved;
 *  - db_conn.c      a connection's states: connect, set up, watch, deadlines, lose;
 *  - db_txn.c       queries and transactions on a connection: send, read results,
 *                   a transaction's verdict;
 *  - db_pool.c      the pool: writes grouped in lock order, batches, db_* API.
 *
 * Private: only db*.c include it.
 */
#ifndef TODOD_DB_INT_H
#define TODOD_DB_INT_H

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <time.h>

#include "db.h"

struct evdns_base;
struct evdns_getaddrinfo_request;

/* Transaction-local, so it holds behind PgBouncer in transaction pooling too. */
#define SET_TIMEOUT_NAME "todod_timeout"
#define SET_TIMEOUT_SQL  "SELECT set_config('statement_timeout', $1, true)"

#define HARD_GRACE   0.5 /* beyond a deadline: the server is not answering */
#define BATCH_PARAMS 3   /* a batch's parameters, kept in its query */

enum db_conn_kind { DB_KIND_READ, DB_KIND_WRITE, DB_KIND_PERF, DB_NKINDS };

enum db_conn_state {
    DB_CONN_CLOSED,     /* not wanted now (on-demand connections) */
    DB_CONN_DOWN,       /* waiting for the reconnect timer */
    DB_CONN_RESOLVING,  /* host names being resolved (evdns) */
    DB_CONN_CONNECTING, /* PQconnectPoll in progress */
    DB_CONN_CHECKING,   /* session settings and todod_schema_version() sent */
    DB_CONN_CREATING,   /* the schema being created or upgraded */
    DB_CONN_PREPARING,  /* pipeline mode, statements being prepared */
    DB_CONN_READY,
};

/* What a connection's schema check (DB_CONN_CHECKING) answered. */
enum db_schema_check {
    DB_SCHEMA_UNANSWERED, /* no answer yet */
    DB_SCHEMA_WHOLE,      /* nothing is missing */
    DB_SCHEMA_INCOMPLETE, /* something is: made whole under the schema lock */
};

/*
 * A query's life. Owned by the pool's write queue (QUEUED) or by a transaction
 * of a connection (all other states) until that transaction is over.
 */
enum query_state {
    QUERY_QUEUED,   /* a write waiting for a free write connection */
    QUERY_SENT,     /* in a pipeline, no result yet, not answered */
    QUERY_HELD,     /* a write's result is in; answered when its commit is */
    QUERY_ANSWERED, /* answered; its result (if any) is read and dropped */
};

/*
 * TXN_LSN: DB_WAL_LSN alone, sent right after a write transaction's Sync in
 * the same pipeline, so it runs once the commit is in; the writes committed
 * wait in its list "waiting" for the position it reads (db_txn.c).
 */
enum txn_kind { TXN_READS, TXN_WRITES, TXN_BATCH, TXN_LSN };

struct txn;

struct query {
    TAILQ_ENTRY(query) link;
    enum query_state state;
    struct txn *txn;
    int stmt; /* enum db_stmt, or -1 for the set_config prefix */
    bool has_result;
    db_done_cb cb; /* NULL for the prefix */
    void *arg;
    struct timespec submitted, deadline;
    PGresult *res;
    uint64_t lsn; /* its answer's (db_result) */
    /* An API read: the pool it went to (a standby's: its answer may send it to
     * the primary instead, db_standby.c), and its request's Todod-After. */
    struct db_pool *pool;
    uint64_t after;
    bool promoted; /* a standby's read answered by a server out of recovery */
    int nparams;   /* a copy of the parameters (writes and batches wait before sending) */
    char **values;
    int *lengths;
    int *formats;
    void *owned;             /* a batch's data, handed over by its caller */
    struct trace_span *span; /* its CLIENT span, ended when it is answered */
    char *param_values[BATCH_PARAMS];
    int param_lengths[BATCH_PARAMS], param_formats[BATCH_PARAMS];

    /* A write's: the id of the row it locks (NULL: none), its place in the
     * order writes arrived, and after a deadlock when it is sent again. */
    const char *row;
    uint64_t seq;
    struct timespec resend_at;
};

TAILQ_HEAD(query_list, query);

struct txn {
    TAILQ_ENTRY(txn) link;
    enum txn_kind kind;
    struct query_list queries;
    struct query *next;            /* the query whose results come next */
    bool synced;                   /* its Sync is queued (the transaction is closed) */
    bool sent;                     /* its Sync was handed to libpq: the server may commit it */
    double timeout;                /* the server's statement_timeout for it (s); 0: none */
    struct timespec hard_deadline; /* no verdict by then: drop the connection */
    const char **rows;             /* writes: the rows they lock, in lock order */
    int nrows;
    struct txn *lsn;           /* writes: the TXN_LSN that follows, or NULL */
    struct query_list waiting; /* TXN_LSN: the writes committed, answered with its position */
};

TAILQ_HEAD(txn_list, txn);

struct db_conn {
    struct db_pool *pool;
    enum db_conn_kind kind;
    int index;
    enum db_conn_state state;
    PGconn *pg;
    struct event *ev_io;
    int io_fd;
    short io_what;
    struct event *ev_timer; /* reconnect back-off, connect bound, deadlines, idle close */
    struct event *ev_sync;  /* deferred: closes the open read transaction */
    struct event *ev_fail;  /* deferred: a send failed inside a caller's stack */
    struct txn_list txns;   /* sent, verdict pending, oldest first */
    struct txn *open;       /* reads of this loop turn, not yet synced */
    int inflight;           /* queries sent and not yet resulted */
    /* Pooled reads, the hung detector, the schema's re-check. */
    int held;                 /* reads in open not sent yet (pooled: one transaction in flight) */
    struct timespec progress; /* the server last answered, or got work while idle */
    struct timespec heard;    /* the server last sent something on this connection */
    bool recheck;             /* a statement found the schema gone: re-check once drained */
    char why[512];            /* what broke, when libpq does not say */
    enum db_schema_check schema_check; /* DB_CONN_CHECKING: what the check answered */
    int prepares_pending;              /* DB_CONN_PREPARING: results still to come */
    bool setup_failed;
    bool setup_made;       /* this attempt made the schema: it must now be whole */
    char setup_error[256]; /* the first real error of the set-up */
    char setup_state[6];   /* ... and its SQLSTATE */
    bool ever_ready;
    double backoff;
    char last_failure[512]; /* said in the log; the same again, attempt after attempt, is debug */
    struct timespec last_used;
    int first_host; /* where the next attempt starts in a host list */
    /* Resolving host names. */
    int dns_pending;
    struct evdns_getaddrinfo_request **dns_reqs;
    char **dns_addrs; /* per host: comma-separated addresses, or NULL */
};

struct db_pool {
    struct event_base *base;
    struct evdns_base *dns;
    const struct conf *conf;
    struct stats_slot *slot;
    struct tracer *tracer;
    bool prepared;
    /* db_prepared = off, for a pooler that hands the server connection on at
     * each ReadyForQuery (PgBouncer's transaction pooling): at most one
     * transaction in flight per connection, sent whole. */
    bool pooled;
    bool said_pooler;             /* the pooler's symptom was explained (once) */
    struct timespec last_recheck; /* the schema was last re-checked after a failure */
    /* The parsed database_url, for PQconnectStartParams. */
    const char **keys, **vals;
    int nkeys;
    int host_key, hostaddr_key, port_key; /* indexes in keys, or -1 */
    char **hosts;                         /* the host list split on ',' */
    int nhosts;
    bool needs_dns;
    bool rotate;          /* several hosts: each attempt starts one further after a time-out */
    double attempt_bound; /* seconds a connection attempt may take */
    char *setup_sql[DB_NKINDS]; /* per kind: session settings + the schema check */
    int nreads, nwrites;
    struct db_conn *reads, *writes, perf;
    struct query_list write_queue;
    struct query_list batch_queue; /* batches waiting for the perf connection */
    struct event *ev_dispatch;     /* deferred: start write transactions */
    struct event *ev_batches;      /* deferred: send queued batches */
    struct event *ev_queue_timer;  /* the first queued write's deadline or resend_at */
    bool closed;                   /* db_pool_close(): nothing is sent any more */

    struct query_list resend_queue; /* writes rolled back by a deadlock, until their resend_at */
    uint64_t write_seq;             /* writes submitted so far */

    /* Standbys (database_read_url, db_standby.c). The primary's pool has one
     * pool of read connections per standby host, whose parent it is. */
    struct db_pool *parent;     /* a standby's pool: the primary's */
    struct db_standby *standby; /* a standby's pool: its standby */
    struct db_standby *standbys;
    int nstandbys;
    int standby_turn;         /* where the next pick starts */
    struct event *ev_sample;  /* the WAL positions, sampled every DB_SAMPLE_EVERY */
    bool primary_pending;     /* the primary's sample is in flight */
    struct db_lsn_seen *seen; /* the primary's positions, a ring of DB_SEEN_MAX */
    int nseen, seen_head;     /* entries, and the newest's index */
};

#define DB_SAMPLE_EVERY 0.1 /* seconds between two samples of the WAL positions */
#define DB_SEEN_MAX     256 /* positions of the primary kept (each kept while unchanged) */

/* A position the primary was seen at: first and last sampled (sent) then. */
struct db_lsn_seen {
    uint64_t lsn;
    struct timespec first, last;
};

/* A standby host, as a worker sees it. */
struct db_standby {
    struct db_pool *pool;   /* its read connections */
    char *host;             /* host:port, for /stats and the metric */
    int index;              /* in the slot's stats_standby array (-1: beyond it) */
    bool pending;           /* its sample is in flight */
    bool sampled;           /* known since its connections last broke */
    bool in_recovery;       /* not promoted */
    uint64_t replay;        /* pg_last_wal_replay_lsn(), sampled */
    struct timespec heard;  /* the sample came */
    struct timespec as_new; /* its data is as new as the primary was then (0: unknown) */
};

/* ---- db_sql.c ---------------------------------------------------------------------- */

struct db_statement {
    const char *name; /* its prepared statement's */
    const char *sql;
};

extern const struct db_statement db_statements[DB_NSTMTS];
extern const char *const db_operations[DB_NSTMTS]; /* for its span: SELECT, INSERT, ... */
extern const char db_schema_sql[];
extern const char db_schema_missing[];

bool db_schema_gone(const char *state);
bool db_pooler_symptom(const char *state);

/* ---- db_conninfo.c ----------------------------------------------------------------- */

int db_parse_conninfo(struct db_pool *pool, const char *conninfo);
/* One connection string per host of conninfo (each with its own port), and
 * host:port names; returns how many, or -1 (logged). */
int db_conninfo_split(const char *conninfo, char ***each, char ***names);
int db_host_lists(struct db_conn *c, char **host, char **hostaddr, char **port);
void db_conn_resolve(struct db_conn *c);
void db_conn_cancel_dns(struct db_conn *c);

/* ---- db_conn.c --------------------------------------------------------------------- */

int db_conn_init(struct db_pool *pool, struct db_conn *c, enum db_conn_kind kind, int index);
void db_conn_fini(struct db_conn *c);
void db_conn_connect(struct db_conn *c);
void db_conn_start_pq(struct db_conn *c);
int db_conn_flush(struct db_conn *c);
void db_conn_arm_timer(struct db_conn *c);
void db_conn_defer_failure(struct db_conn *c);
const char *db_conn_why(struct db_conn *c, const char *doing);
void db_conn_lost(struct db_conn *c, const char *why);

/* ---- db_txn.c ---------------------------------------------------------------------- */

void db_error_line(const char *msg, char *out, size_t n);
struct query *db_query_new(int stmt, struct timespec deadline, db_done_cb cb, void *arg);
int db_query_copy_params(struct query *q, const struct db_params *p);
void db_query_answer(struct query *q, enum db_status st, const PGresult *res);
void db_query_free(struct query *q);
bool db_result_ok(const PGresult *res);
void db_result_error(const PGresult *res, char *out, size_t n);
struct txn *db_txn_new(enum txn_kind kind);
int db_txn_follow_lsn(struct db_conn *c, struct txn *w);
void db_txn_answer_waiting(struct txn *t, uint64_t lsn);
int db_send_copied(struct db_conn *c, struct txn *t, struct query *q);
int db_send_timeout_prefix(struct db_conn *c, struct txn *t, long ms);
int db_txn_close(struct db_conn *c, struct txn *t);
void db_txn_free(struct txn *t);
struct db_conn *db_pick_read(struct db_pool *pool);
int db_read_send(struct db_conn *c, struct query *q);
void db_conn_deferred_sync(evutil_socket_t fd, short what, void *arg);
int db_conn_read_results(struct db_conn *c);
void db_pool_say_pooler(struct db_pool *pool, const char *state, const char *message);

/* ---- db_standby.c ------------------------------------------------------------------ */

int db_standbys_open(struct db_pool *pool);
void db_standbys_close(struct db_pool *pool);
void db_standbys_free(struct db_pool *pool);
struct db_conn *db_standby_pick(struct db_pool *pool, uint64_t after);
bool db_standby_fallback(struct query *q, enum db_status st);
void db_standby_lost(struct db_pool *pool);

/* ---- db_pool.c --------------------------------------------------------------------- */

struct db_pool *db_pool_make(struct event_base *base, const struct conf *conf,
                             struct stats_slot *slot, struct tracer *tracer, const char *conninfo,
                             struct db_pool *parent);

void db_pool_dispatch_writes(struct db_pool *pool);
void db_pool_dispatch_batches(struct db_pool *pool);
void db_pool_arm_queue_timer(struct db_pool *pool);

/* ---- shared helpers ---------------------------------------------------------------- */

static inline bool db_is_write(int stmt)
{
    return stmt >= DB_TODO_INSERT;
}

static inline void db_count(_Atomic uint64_t *counter)
{
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

#endif
