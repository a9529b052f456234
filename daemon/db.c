#include "db.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "clock.h"
#include "conf.h"
#include "log.h"
#include "sqlstate.h"
#include "stats.h"
#include "db_span.h"

/* ---- SQL ---------------------------------------------------------------- */

#define SCHEMA_VERSION "2"

/*
 * What of todod's schema is missing, as one text ('' when nothing is): one
 * cheap catalog query that takes no lock on todos. It looks at the objects
 * themselves, not only at the version marker, which outlives a table dropped
 * or replaced by the replaced service's own migration.
 */
#define SCHEMA_MISSING                                                                             \
    "concat_ws(', ',"                                                                              \
    " CASE WHEN NOT EXISTS (SELECT 1 FROM pg_proc WHERE"                                           \
    "  oid = to_regprocedure('todod_schema_version()') AND prosrc = 'SELECT " SCHEMA_VERSION "')"  \
    "  THEN 'todod_schema_version() " SCHEMA_VERSION "' END,"                                      \
    " CASE WHEN to_regclass('todos') IS NULL THEN 'table todos' END,"                              \
    " (SELECT string_agg('index ' || i, ', ') FROM unnest(ARRAY['idx_todos_done',"                 \
    "  'idx_todos_created_at', 'todod_todos_created_at_id']) i WHERE NOT EXISTS (SELECT 1"         \
    "  FROM pg_index WHERE indrelid = to_regclass('todos') AND indexrelid = to_regclass(i))),"     \
    " CASE WHEN to_regclass('todod_todo_count') IS NULL"                                           \
    "  OR to_regclass('todod_todo_count_slot') IS NULL THEN 'the count table' END,"                \
    " CASE WHEN to_regprocedure('todod_count_add(bigint)') IS NULL"                                \
    "  OR to_regprocedure('todod_count_unkept()') IS NULL THEN 'the count functions' END,"         \
    " CASE WHEN (" COUNT_TRIGGERS ") < 3 THEN 'the count triggers' END)"
/* todod's three count triggers on todos, enabled. */
#define COUNT_TRIGGERS                                                                             \
    "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('todos') AND tgname IN"           \
    " ('todod_count_insert', 'todod_count_delete', 'todod_count_truncate') AND tgenabled <> 'D'"
/* The list's own check, one index lookup: the insert trigger is on the todos
 * the statement was planned for (a table replaced plans it anew). */
#define COUNT_KEPT                                                                                 \
    "EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'todos'::regclass"                           \
    " AND tgname = 'todod_count_insert' AND tgenabled <> 'D')"

/* A list's exact total, served only while the count is kept (COUNT_KEPT). */
#define LIST_TOTAL                                                                                 \
    "CASE WHEN " COUNT_KEPT " THEN (SELECT coalesce(sum(n), 0) FROM todod_todo_count)"             \
    " ELSE todod_count_unkept() END::bigint"

/* The count triggers are gone (todos replaced): the count is not kept. */
#define SQLSTATE_COUNT_UNKEPT "TD001" /* common/sqlstate.c knows it too */

/*
 * Made sure of once: a connection first asks what is missing (SCHEMA_MISSING,
 * which takes no lock on todos); only when something is does it run this, in
 * one transaction, under an advisory lock (several workers or hosts starting
 * at once do not race) and a short lock_timeout (a session holding a lock on
 * todos makes it fail and retry later rather than queue behind it).
 *
 * The todos table and its two indexes are the replaced service's, unchanged.
 * todod adds an index on (created_at, id) for a stable newest-first order, and
 * an exact row count kept by statement-level triggers in a few rows of
 * todod_todo_count: each statement adds its delta to a row no other open
 * transaction holds (FOR UPDATE SKIP LOCKED), or to a new row when all are
 * held, so no writer ever waits for another's transaction to end, and sum(n)
 * is exact in every snapshot. Whatever is missing is made again; when the
 * triggers or the count table had to be, the table is counted anew under a lock
 * that keeps writers out meanwhile. The list's total is the count only while
 * the triggers are there; otherwise todod_count_unkept() raises (a table
 * replaced under a running todod).
 */
static const char db_schema_sql[] =
    "BEGIN;"
    "SET LOCAL client_min_messages = warning;"
    "SET LOCAL lock_timeout = '2s';"
    "SELECT pg_advisory_xact_lock(2036106852);" /* "todo" */
    "DO $do$ DECLARE missing text; recount boolean; BEGIN"
    /* Another worker or host may have made it while this one waited. */
    " missing := (SELECT " SCHEMA_MISSING ");"
    " IF missing = '' THEN RETURN; END IF;"
    " recount := to_regclass('todod_todo_count') IS NULL"
    "  OR to_regclass('todod_todo_count_slot') IS NULL;"
    " CREATE TABLE IF NOT EXISTS todos ("
    "  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    "  title varchar(255) NOT NULL,"
    "  done boolean NOT NULL DEFAULT false,"
    "  created_at timestamptz DEFAULT now(),"
    "  updated_at timestamptz DEFAULT now());"
    " CREATE INDEX IF NOT EXISTS idx_todos_done ON todos (done);"
    " CREATE INDEX IF NOT EXISTS idx_todos_created_at ON todos (created_at);"
    " CREATE INDEX IF NOT EXISTS todod_todos_created_at_id ON todos (created_at, id);"
    " CREATE TABLE IF NOT EXISTS todod_todo_count (slot int PRIMARY KEY, n bigint NOT NULL);"
    " CREATE SEQUENCE IF NOT EXISTS todod_todo_count_slot START 1000;"
    " CREATE OR REPLACE FUNCTION todod_count_add(d bigint) RETURNS void LANGUAGE plpgsql AS $f$"
    "  BEGIN"
    "   IF d = 0 THEN RETURN; END IF;"
    "   UPDATE todod_todo_count SET n = n + d WHERE slot ="
    "    (SELECT slot FROM todod_todo_count FOR UPDATE SKIP LOCKED LIMIT 1);"
    "   IF NOT FOUND THEN"
    "    INSERT INTO todod_todo_count (slot, n) VALUES (nextval('todod_todo_count_slot'), d);"
    "   END IF;"
    "  END $f$;"
    " CREATE OR REPLACE FUNCTION todod_count_unkept() RETURNS bigint LANGUAGE plpgsql AS $f$"
    "  BEGIN"
    "   RAISE EXCEPTION 'todod''s count triggers on todos are missing'"
    "    USING ERRCODE = '" SQLSTATE_COUNT_UNKEPT "';"
    "  END $f$;"
    " CREATE OR REPLACE FUNCTION todod_count_insert() RETURNS trigger LANGUAGE plpgsql AS $f$"
    "  BEGIN PERFORM todod_count_add((SELECT count(*) FROM todod_new)); RETURN NULL; END $f$;"
    " CREATE OR REPLACE FUNCTION todod_count_delete() RETURNS trigger LANGUAGE plpgsql AS $f$"
    "  BEGIN PERFORM todod_count_add(-(SELECT count(*) FROM todod_old)); RETURN NULL; END $f$;"
    " CREATE OR REPLACE FUNCTION todod_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $f$"
    "  BEGIN DELETE FROM todod_todo_count; RETURN NULL; END $f$;"
    " IF recount OR (" COUNT_TRIGGERS ") < 3 THEN"
    "  LOCK TABLE todos IN SHARE ROW EXCLUSIVE MODE;"
    "  DROP TRIGGER IF EXISTS todod_count_insert ON todos;"
    "  DROP TRIGGER IF EXISTS todod_count_delete ON todos;"
    "  DROP TRIGGER IF EXISTS todod_count_truncate ON todos;"
    "  DELETE FROM todod_todo_count;"
    "  INSERT INTO todod_todo_count SELECT 0, count(*) FROM todos;"
    "  CREATE TRIGGER todod_count_insert AFTER INSERT ON todos"
    "   REFERENCING NEW TABLE AS todod_new FOR EACH STATEMENT"
    "   EXECUTE FUNCTION todod_count_insert();"
    "  CREATE TRIGGER todod_count_delete AFTER DELETE ON todos"
    "   REFERENCING OLD TABLE AS todod_old FOR EACH STATEMENT"
    "   EXECUTE FUNCTION todod_count_delete();"
    "  CREATE TRIGGER todod_count_truncate AFTER TRUNCATE ON todos"
    "   FOR EACH STATEMENT EXECUTE FUNCTION todod_count_truncate();"
    "  RAISE WARNING 'counted todos anew: % rows', (SELECT n FROM todod_todo_count);"
    " END IF;"
    " IF missing LIKE 'todod_schema_version() %' THEN"
    "  RAISE WARNING 'created the todod schema, version " SCHEMA_VERSION "';"
    " ELSE"
    "  RAISE WARNING 'made the todod schema whole again (it missed %)', missing;"
    " END IF;"
    " CREATE OR REPLACE FUNCTION todod_schema_version() RETURNS int LANGUAGE sql IMMUTABLE"
    "  AS 'SELECT " SCHEMA_VERSION "';"
    "END $do$;"
    "COMMIT;";

/* The columns of a todo, answered in the binary format (every statement's
 * results are): the server writes no text, and todos.c formats the id and the
 * timestamps, which to_char() in every row cost the server more than the rest
 * of a lookup by id. */
#define TODO_COLUMNS "id, title, done, created_at, updated_at"

static const char *const db_operations[DB_NSTMTS] = {
    [DB_TODO_GET] = "SELECT",    [DB_TODO_LIST] = "SELECT",       [DB_TODO_BY_DONE] = "SELECT",
    [DB_TODO_AFTER] = "SELECT",  [DB_TODO_AFTER_NULL] = "SELECT", [DB_TODO_INSERT] = "INSERT",
    [DB_TODO_UPDATE] = "UPDATE", [DB_TODO_DELETE] = "DELETE",     [DB_PERF_INSERT] = "INSERT",
};

static const struct {
    const char *name;
    const char *sql;
} db_statements[DB_NSTMTS] = {
    [DB_TODO_GET] = {"todo_get", "SELECT " TODO_COLUMNS " FROM todos WHERE id = $1"},
    /* One row per todo of the page, each carrying the total; a single row of
     * NULL todo columns when the page is empty. */
    [DB_TODO_LIST] = {"todo_list",
                      "SELECT " TODO_COLUMNS ", c.total FROM"
                      " (SELECT " LIST_TOTAL " AS total) c"
                      " LEFT JOIN LATERAL (SELECT * FROM todos ORDER BY created_at DESC, id DESC"
                      " LIMIT $1 OFFSET $2) t ON true"},
    /* The same rows, the $3 after the key ($1, $2): one range of the
     * (created_at, id) index, O(log n + $3) at any depth. */
    [DB_TODO_AFTER] = {"todo_after",
                       "SELECT " TODO_COLUMNS ", c.total FROM"
                       " (SELECT " LIST_TOTAL " AS total) c"
                       " LEFT JOIN LATERAL (SELECT * FROM todos WHERE (created_at, id) < ($1, $2)"
                       " ORDER BY created_at DESC, id DESC LIMIT $3) t ON true"},
    /* After the key (NULL, $1): NULL times come first in this order, so the
     * NULL ones of lower id, then every other; two ranges, merged. */
    [DB_TODO_AFTER_NULL] = {"todo_after_null",
                            "SELECT " TODO_COLUMNS ", c.total FROM"
                            " (SELECT " LIST_TOTAL " AS total) c"
                            " LEFT JOIN LATERAL ((SELECT * FROM todos WHERE created_at IS NULL"
                            " AND id < $1 ORDER BY created_at DESC, id DESC LIMIT $2)"
                            " UNION ALL (SELECT * FROM todos WHERE created_at IS NOT NULL"
                            " ORDER BY created_at DESC, id DESC LIMIT $2)"
                            " ORDER BY created_at DESC, id DESC LIMIT $2) t ON true"},
    [DB_TODO_BY_DONE] = {"todo_by_done", "SELECT " TODO_COLUMNS " FROM todos WHERE done = $1"
                                         " ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"},
    [DB_TODO_INSERT] = {"todo_insert", "INSERT INTO todos (id, title, done) VALUES ($1, $2, $3)"
                                       " RETURNING " TODO_COLUMNS},
    [DB_TODO_UPDATE] = {"todo_update",
                        "UPDATE todos SET title = coalesce($2, title), done = coalesce($3, done),"
                        " updated_at = now() WHERE id = $1 RETURNING " TODO_COLUMNS},
    [DB_TODO_DELETE] = {"todo_delete", "DELETE FROM todos WHERE id = $1"},
    /* Set-returning functions in the select list, which run in step (the
     * arrays are as long as each other): unnest() in FROM would first copy
     * every row into a tuplestore, more work for the server. */
    [DB_PERF_INSERT] = {"perf_insert",
                        "INSERT INTO todos (id, title, done) SELECT unnest($1::uuid[]),"
                        " unnest($2::varchar[]), unnest($3::bool[])"},
};

/* Transaction-local, so it holds behind PgBouncer in transaction pooling too. */
#define SET_TIMEOUT_NAME "todod_timeout"
#define SET_TIMEOUT_SQL  "SELECT set_config('statement_timeout', $1, true)"

#define GROUP_MAX             256  /* writes in one transaction */
#define RESEND_DELAY          0.05 /* a write rolled back by a deadlock: sent again after */
#define HARD_GRACE            0.5  /* beyond a deadline: the server is not answering */
#define RECHECK_EVERY         1.0  /* seconds between two re-checks of the schema */
#define BACKOFF_MIN           0.05 /* reconnect: 0, then 50 ms doubling */
#define BACKOFF_MAX           0.5
#define IDLE_CLOSE            30.0 /* an on-demand connection unused this long closes */
#define ROTATE_BOUND          2.0  /* with several hosts: the most one may take to connect */
#define BATCH_PARAMS          3    /* a batch's parameters, kept in its query */
#define READ_TIMEOUT_MS(pool) ((long)((pool)->conf->request_timeout * 1000))

/* ---- types ---------------------------------------------------------------- */

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

enum txn_kind { TXN_READS, TXN_WRITES, TXN_BATCH };

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
    int nparams; /* a copy of the parameters (writes and batches wait before sending) */
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
};

static void db_conn_connect(struct db_conn *c);
static void db_conn_lost(struct db_conn *c, const char *why);
static void conn_io(evutil_socket_t fd, short what, void *arg);
static void db_conn_arm_timer(struct db_conn *c);
static void db_pool_dispatch_writes(struct db_pool *pool);
static void db_pool_arm_queue_timer(struct db_pool *pool);
static void db_pool_dispatch_batches(struct db_pool *pool);
static void read_resend(struct db_pool *pool, struct query *q);
static void db_txn_free(struct txn *t);

static void db_error_line(const char *msg, char *out, size_t n)
{
    snprintf(out, n, "%s", msg ? msg : "");
    out[strcspn(out, "\n")] = '\0';
}

static const char *kind_name(enum db_conn_kind k)
{
    return k == DB_KIND_READ ? "read" : k == DB_KIND_WRITE ? "write" : "performance-test";
}

/* The first write connection stays open while idle: a write need not wait for
 * a connection to open (the others open on demand and close after IDLE_CLOSE). */
static bool db_conn_is_resident(const struct db_conn *c)
{
    return c->kind == DB_KIND_WRITE && c->index == 0;
}

static bool db_is_write(int stmt)
{
    return stmt >= DB_TODO_INSERT;
}

static void db_count(_Atomic uint64_t *counter)
{
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

/* ---- queries ---------------------------------------------------------------- */

static void db_query_free(struct query *q)
{
    span_end(q->span); /* a query freed unanswered (pool freed): its span ends too */
    if (q->res != NULL)
        PQclear(q->res);
    if (q->values != q->param_values)
        free(q->values);
    free(q->owned);
    free(q);
}

/* Copies the parameters into one allocation owned by q. */
static int db_query_copy_params(struct query *q, const struct db_params *p)
{
    size_t total = 0;
    char *data;
    int i;

    q->nparams = p->n;
    if (p->n <= 0)
        return 0;
    for (i = 0; i < p->n; i++)
        if (p->values[i] != NULL)
            total += p->formats && p->formats[i] ? (size_t)p->lengths[i] : strlen(p->values[i]) + 1;
    q->values = malloc((size_t)p->n * (sizeof(char *) + 2 * sizeof(int)) + total);
    if (q->values == NULL)
        return -1;
    q->lengths = (int *)(q->values + p->n);
    q->formats = q->lengths + p->n;
    data = (char *)(q->formats + p->n);
    for (i = 0; i < p->n; i++) {
        int binary = p->formats ? p->formats[i] : 0;
        size_t len;

        q->formats[i] = binary;
        q->lengths[i] = p->lengths ? p->lengths[i] : 0;
        if (p->values[i] == NULL) {
            q->values[i] = NULL;
            continue;
        }
        len = binary ? (size_t)p->lengths[i] : strlen(p->values[i]) + 1;
        memcpy(data, p->values[i], len);
        q->values[i] = data;
        data += len;
    }
    return 0;
}

static struct query *db_query_new(int stmt, struct timespec deadline, db_done_cb cb, void *arg)
{
    struct query *q = calloc(1, sizeof(*q));

    if (q == NULL)
        return NULL;
    q->stmt = stmt;
    q->cb = cb;
    q->arg = arg;
    q->submitted = clock_now();
    q->deadline = deadline;
    return q;
}

/*
 * The one place a query is answered. Its callback runs once; the query stays
 * where it is (a transaction still has to read its result) as ANSWERED, or is
 * freed by the caller when it was QUEUED.
 */
static void db_query_answer(struct query *q, enum db_status st, const PGresult *res)
{
    struct db_result r = {st, res, clock_since(q->submitted)};
    db_done_cb cb = q->cb;

    if (q->span != NULL) {
        static const char *const why[] = {
            [DB_UNAVAILABLE] = "unavailable",
            [DB_TIMEOUT] = "timeout",
            [DB_LOST] = "connection lost",
        };

        if (st == DB_FAILED || (st == DB_TIMEOUT && res != NULL))
            span_set_db_error(q->span, res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL,
                              res ? PQresultErrorMessage(res) : "failed");
        else if (st != DB_OK) {
            span_set_db_error(q->span, NULL, why[st]);
            span_set_str(q->span, TRACE_ATTR_ERROR_TYPE, why[st]);
        }
        span_end(q->span);
        q->span = NULL;
    }
    q->state = QUERY_ANSWERED;
    q->cb = NULL;
    if (cb != NULL)
        cb(q->arg, &r);
}

/* The statement found todod's table, function or count triggers gone. */
static bool db_schema_gone(const char *state)
{
    return strcmp(state, "42P01") == 0 || strcmp(state, "42883") == 0 ||
           strcmp(state, SQLSTATE_COUNT_UNKEPT) == 0;
}

/* A prepared statement missing, or already there, on the server connection:
 * db_prepared = on through a pooler that shares server connections. */
static bool db_pooler_symptom(const char *state)
{
    return strcmp(state, "26000") == 0 || strcmp(state, "42P05") == 0;
}

static enum sqlstate_kind refusal_kind(const PGresult *res)
{
    return sqlstate_kind(res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL);
}

/*
 * What a refused statement means to its request (common/sqlstate.c says which
 * SQLSTATE is which kind). Every refusal rolls the statement back, so a write
 * was not applied. A write refused with SQLSTATE_RESEND is sent again instead
 * (txn_finished); a read so refused is answered as unavailable.
 */
static enum db_status failed_status(const PGresult *res)
{
    static const enum db_status status[] = {
        [SQLSTATE_FAILED] = DB_FAILED,
        [SQLSTATE_TIMED_OUT] = DB_TIMEOUT,
        [SQLSTATE_UNAVAILABLE] = DB_UNAVAILABLE,
        [SQLSTATE_RESEND] = DB_UNAVAILABLE,
    };

    return status[refusal_kind(res)];
}

/* A result's error message; when the server sent none, what kind of result it is. */
static void db_result_error(const PGresult *res, char *out, size_t n)
{
    db_error_line(res ? PQresultErrorMessage(res) : NULL, out, n);
    if (out[0] == '\0')
        snprintf(out, n, "no message (a result of kind %s)",
                 res ? PQresStatus(PQresultStatus(res)) : "none");
}

static void log_failure(struct db_pool *pool, const struct query *q, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char line[512];

    db_result_error(res, line, sizeof(line));
    db_count(&pool->slot->c.db_errors);
    /* The pooler's symptom is explained once (db_pool_say_pooler), not per query. */
    log_msg(state && db_pooler_symptom(state) && pool->said_pooler ? LOGL_DEBUG : LOGL_WARN,
            "query %s failed%s: %s", q->stmt >= 0 ? db_statements[q->stmt].name : SET_TIMEOUT_NAME,
            q->state == QUERY_ANSWERED && q->stmt >= 0 ? " (after its answer)" : "", line);
}

/* ---- watching the socket ------------------------------------------------------ */

/*
 * libpq may close and reopen its socket inside PQconnectPoll (trying the next
 * host of a list) and get the same descriptor number back; the kernel has
 * dropped the old registration, so the event is made anew whenever asked.
 */
static void conn_watch(struct db_conn *c, short what, bool renew)
{
    int fd = PQsocket(c->pg);

    what |= EV_PERSIST;
    if (fd < 0)
        return;
    if (!renew && c->ev_io != NULL && fd == c->io_fd && what == c->io_what)
        return;
    if (c->ev_io != NULL)
        event_free(c->ev_io);
    c->io_fd = fd;
    c->io_what = what;
    c->ev_io = event_new(c->pool->base, fd, what, conn_io, c);
    if (c->ev_io != NULL)
        event_add(c->ev_io, NULL);
}

static void conn_unwatch(struct db_conn *c)
{
    if (c->ev_io != NULL)
        event_free(c->ev_io);
    c->ev_io = NULL;
    c->io_fd = -1;
}

/* Pushes buffered output (libpq also writes on its own, and may hold part of
 * what it was given: which transactions may have reached the server is decided
 * when their Sync is handed over, in db_txn_close). */
static int db_conn_flush(struct db_conn *c)
{
    int rc = PQflush(c->pg);

    if (rc < 0)
        return -1;
    conn_watch(c, rc == 1 ? EV_READ | EV_WRITE : EV_READ, false);
    return 0;
}

/* ---- sending ---------------------------------------------------------------------- */

static struct txn *db_txn_new(enum txn_kind kind)
{
    struct txn *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->kind = kind;
    TAILQ_INIT(&t->queries);
    return t;
}

static int send_query(struct db_conn *c, struct txn *t, struct query *q, int n,
                      const char *const *values, const int *lengths, const int *formats)
{
    const char *name = q->stmt >= 0 ? db_statements[q->stmt].name : SET_TIMEOUT_NAME;
    const char *sql = q->stmt >= 0 ? db_statements[q->stmt].sql : SET_TIMEOUT_SQL;
    int ok = c->pool->prepared
                 ? PQsendQueryPrepared(c->pg, name, n, values, lengths, formats, DB_BINARY)
                 : PQsendQueryParams(c->pg, sql, n, NULL, values, lengths, formats, DB_BINARY);

    if (ok != 1)
        return -1;
    if (q->span != NULL) {
        const char *port = PQport(c->pg);

        span_set_str(q->span, TRACE_ATTR_DB_NAMESPACE, PQdb(c->pg));
        span_set_str(q->span, TRACE_ATTR_SERVER_ADDRESS, PQhost(c->pg));
        if (port != NULL && *port != '\0')
            span_set_int(q->span, TRACE_ATTR_SERVER_PORT, atoi(port));
    }
    q->state = QUERY_SENT;
    q->txn = t;
    TAILQ_INSERT_TAIL(&t->queries, q, link);
    if (t->next == NULL)
        t->next = q;
    c->inflight++;
    return 0;
}

static int db_send_copied(struct db_conn *c, struct txn *t, struct query *q)
{
    return send_query(c, t, q, q->nparams, (const char *const *)q->values, q->lengths, q->formats);
}

/* set_config('statement_timeout', ms, true): first statement of a transaction. */
static int db_send_timeout_prefix(struct db_conn *c, struct txn *t, long ms)
{
    struct query *q = db_query_new(-1, clock_now(), NULL, NULL);
    char value[32];
    const char *values[1] = {value};

    if (q == NULL)
        return -1;
    t->timeout = ms / 1000.0;
    snprintf(value, sizeof(value), "%ld", ms);
    if (send_query(c, t, q, 1, values, NULL, NULL) != 0) {
        db_query_free(q);
        return -1;
    }
    q->state = QUERY_ANSWERED; /* nobody waits for it */
    return 0;
}

/*
 * Closes transaction t with a Sync and puts it in the connection's list. From
 * the moment its Sync is handed to libpq, the server may commit t: libpq
 * writes when it likes, and a kernel buffer may hold the Sync while libpq
 * still holds later bytes; so any failure of the connection after this leaves
 * t's writes unknown (DB_LOST), never "not applied".
 */
static int db_txn_close(struct db_conn *c, struct txn *t)
{
    t->sent = true;
    if (TAILQ_EMPTY(&c->txns))
        c->progress = clock_now(); /* the server starts on it now */
    if (PQpipelineSync(c->pg) != 1)
        return -1;
    t->synced = true;
    TAILQ_INSERT_TAIL(&c->txns, t, link);
    return 0;
}

/* A send failed: libpq's connection is broken. Handle it outside the caller. */
static void db_conn_defer_failure(struct db_conn *c)
{
    event_active(c->ev_fail, 0, 0);
}

/* Why libpq gave up on c: what todod found (c->why), else libpq's message,
 * else what was being done. */
static const char *db_conn_why(struct db_conn *c, const char *doing)
{
    const char *m = c->pg != NULL ? PQerrorMessage(c->pg) : NULL;

    if (c->why[0] != '\0')
        return c->why;
    if (m != NULL && m[0] != '\0')
        return m;
    snprintf(c->why, sizeof(c->why), "%s failed, and libpq gave no reason", doing);
    return c->why;
}

static void conn_deferred_fail(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;

    if (c->state == DB_CONN_READY)
        db_conn_lost(c, db_conn_why(c, "sending"));
}

/* ---- reads ---------------------------------------------------------------------- */

/* The ready read connection with the least work; none that waits to re-check
 * the schema. */
static struct db_conn *db_pick_read(struct db_pool *pool)
{
    struct db_conn *best = NULL;
    int i;

    for (i = 0; i < pool->nreads; i++) {
        struct db_conn *c = &pool->reads[i];

        if (c->state == DB_CONN_READY && !c->recheck &&
            (best == NULL || c->inflight + c->held < best->inflight + best->held))
            best = c;
    }
    return best;
}

/*
 * Pooled: the reads held in t go now, whole: the timeout prefix, each read,
 * then (the caller) the Sync, with nothing else in flight on c. A pooler that
 * hands the server connection on at a ReadyForQuery then never has part of a
 * transaction of c's on a server connection it gives away.
 */
static int read_send_held(struct db_conn *c, struct txn *t)
{
    struct query_list held = TAILQ_HEAD_INITIALIZER(held);
    struct query *q;

    TAILQ_CONCAT(&held, &t->queries, link);
    c->held = 0;
    if (db_send_timeout_prefix(c, t, READ_TIMEOUT_MS(c->pool)) != 0) {
        TAILQ_CONCAT(&t->queries, &held, link);
        return -1;
    }
    while ((q = TAILQ_FIRST(&held)) != NULL) {
        TAILQ_REMOVE(&held, q, link);
        if (db_send_copied(c, t, q) != 0) {
            /* Still in t, unsent: answered with the connection. */
            TAILQ_INSERT_TAIL(&t->queries, q, link);
            TAILQ_CONCAT(&t->queries, &held, link);
            return -1;
        }
    }
    return 0;
}

static void db_conn_deferred_sync(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;
    struct txn *t = c->open;

    if (c->state != DB_CONN_READY || t == NULL)
        return;
    if (c->pool->pooled) {
        if (!TAILQ_EMPTY(&c->txns))
            return; /* sent when the transaction in flight is over */
        if (TAILQ_EMPTY(&t->queries)) {
            c->open = NULL; /* every read held in it was answered at its deadline */
            db_txn_free(t);
            return;
        }
    }
    c->open = NULL;
    if ((c->pool->pooled && read_send_held(c, t) != 0) || db_txn_close(c, t) != 0) {
        /* Its queries are still in t: answered as unavailable with the connection. */
        TAILQ_INSERT_TAIL(&c->txns, t, link);
        db_conn_lost(c, db_conn_why(c, "sending reads"));
        return;
    }
    if (db_conn_flush(c) < 0) {
        db_conn_lost(c, db_conn_why(c, "writing to the socket"));
        return;
    }
    db_conn_arm_timer(c);
}

/*
 * A read joins the connection's open transaction, synced after this loop turn.
 * Pooled, it is held there (not given to libpq) until the open transaction
 * goes whole, once nothing else is in flight on c.
 */
static int db_read_send(struct db_conn *c, struct query *q)
{
    if (c->open == NULL) {
        c->open = db_txn_new(TXN_READS);
        if (c->open == NULL)
            return -1;
        c->open->timeout = c->pool->conf->request_timeout; /* the session's, or the prefix's */
        event_active(c->ev_sync, 0, 0);
    }
    if (c->pool->pooled) {
        q->state = QUERY_QUEUED;
        q->txn = c->open;
        TAILQ_INSERT_TAIL(&c->open->queries, q, link);
        c->held++;
    } else if (db_send_copied(c, c->open, q) != 0) {
        db_conn_defer_failure(c);
        return -1;
    }
    if (!evtimer_pending(c->ev_timer, NULL))
        db_conn_arm_timer(c);
    return 0;
}

/* A read that PostgreSQL never ran (a neighbour failed first) runs again. */
static void read_resend(struct db_pool *pool, struct query *q)
{
    struct db_conn *c = db_pick_read(pool);

    q->has_result = false;
    if (q->res != NULL)
        PQclear(q->res);
    q->res = NULL;
    if (clock_diff(q->deadline, clock_now()) <= 0) {
        db_query_answer(q, DB_TIMEOUT, NULL);
        db_query_free(q);
        return;
    }
    if (c == NULL || db_read_send(c, q) != 0) {
        db_query_answer(q, DB_UNAVAILABLE, NULL);
        db_query_free(q);
    }
}

/* ---- writes ------------------------------------------------------------------------ */

/*
 * The one order in which every write transaction of todod (of every worker and
 * instance) locks rows: its INSERTs first (a new row, which no other
 * transaction can wait for), then its UPDATEs and DELETEs by the id of their
 * row (the canonical text of a UUID sorts as the UUID does), the writes to one
 * row in the order they arrived. README "The database connections" says why
 * no deadlock can then form between them.
 */
static int lock_order(const void *a, const void *b)
{
    const struct query *x = *(struct query *const *)a, *y = *(struct query *const *)b;
    int c = x->row == NULL || y->row == NULL ? (x->row != NULL) - (y->row != NULL)
                                             : strcmp(x->row, y->row);

    return c != 0 ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

static int row_cmp(const void *row, const void *elem)
{
    return strcmp(row, *(const char *const *)elem);
}

/* Whether a write transaction of this pool in flight locks that row, or one
 * rolled back by a deadlock waits to lock it again. */
static bool row_in_flight(const struct db_pool *pool, const char *row)
{
    const struct query *q;
    int i;

    TAILQ_FOREACH(q, &pool->resend_queue, link)
        if (q->row != NULL && strcmp(q->row, row) == 0)
            return true;
    for (i = 0; i < pool->nwrites; i++) {
        const struct txn *t = TAILQ_FIRST(&pool->writes[i].txns);

        if (t != NULL && t->nrows > 0 &&
            bsearch(row, t->rows, (size_t)t->nrows, sizeof(*t->rows), row_cmp) != NULL)
            return true;
    }
    return false;
}

/*
 * A queued write may go unless a transaction of this pool in flight locks its
 * row: it then waits here, not on the server, and goes with the next writes to
 * that row once that transaction is over. So the pool's transactions in flight
 * never wait for each other, and writes to a busy row share a commit.
 */
static bool write_may_go(const struct db_pool *pool, const struct query *q)
{
    return q->row == NULL || !row_in_flight(pool, q->row);
}

static bool write_waiting(const struct db_pool *pool)
{
    const struct query *q;

    TAILQ_FOREACH(q, &pool->write_queue, link)
        if (write_may_go(pool, q))
            return true;
    return false;
}

static struct db_conn *free_write_conn(struct db_pool *pool, bool *opening)
{
    int i;

    *opening = false;
    for (i = 0; i < pool->nwrites; i++) {
        struct db_conn *c = &pool->writes[i];

        if (c->state == DB_CONN_READY && TAILQ_EMPTY(&c->txns))
            return c;
        if (c->state != DB_CONN_READY && c->state != DB_CONN_CLOSED && c->state != DB_CONN_DOWN)
            *opening = true;
    }
    return NULL;
}

/* Opens one more write connection, if the bound allows. */
static void open_write_conn(struct db_pool *pool)
{
    int i;

    for (i = 0; i < pool->nwrites; i++) {
        if (pool->writes[i].state == DB_CONN_CLOSED) {
            db_conn_connect(&pool->writes[i]);
            return;
        }
    }
}

/* Queued writes whose deadline passed were never sent: not applied. */
static void expire_queued(struct db_pool *pool, struct query_list *queue)
{
    struct timespec now = clock_now();
    struct query *q, *next;

    for (q = TAILQ_FIRST(queue); q != NULL; q = next) {
        next = TAILQ_NEXT(q, link);
        if (clock_diff(q->deadline, now) > 0)
            continue;
        TAILQ_REMOVE(queue, q, link);
        db_query_answer(q, DB_TIMEOUT, NULL);
        db_query_free(q);
    }
}

/*
 * The queued writes that may go, in the order they arrived and at most
 * GROUP_MAX, go to c as one transaction, sent in lock order. Returns how many
 * went (0: none may, or out of memory).
 */
static int write_start(struct db_conn *c)
{
    struct db_pool *pool = c->pool;
    struct query *group[GROUP_MAX], *q;
    struct timespec first = {0, 0};
    struct txn *t;
    int n = 0, i;
    long ms;

    TAILQ_FOREACH(q, &pool->write_queue, link) {
        if (n == GROUP_MAX)
            break;
        if (!write_may_go(pool, q))
            continue;
        if (n == 0 || clock_diff(q->deadline, first) < 0)
            first = q->deadline;
        group[n++] = q;
    }
    if (n == 0 || (t = db_txn_new(TXN_WRITES)) == NULL)
        return 0;
    t->rows = malloc((size_t)n * sizeof(*t->rows));
    if (t->rows == NULL) {
        db_txn_free(t);
        return 0;
    }
    qsort(group, (size_t)n, sizeof(*group), lock_order);
    for (i = 0; i < n; i++)
        if (group[i]->row != NULL)
            t->rows[t->nrows++] = group[i]->row;
    /* The server gives up on the transaction when its first request does. */
    ms = (long)ceil(clock_diff(first, clock_now()) * 1000);
    if (db_send_timeout_prefix(c, t, ms < 1 ? 1 : ms) != 0)
        goto broken;
    for (i = 0; i < n; i++) {
        TAILQ_REMOVE(&pool->write_queue, group[i], link);
        if (db_send_copied(c, t, group[i]) != 0) {
            TAILQ_INSERT_HEAD(&pool->write_queue, group[i], link);
            goto broken;
        }
    }
    t->hard_deadline = clock_add(first, HARD_GRACE);
    if (db_txn_close(c, t) != 0)
        goto broken;
    if (db_conn_flush(c) < 0) {
        db_conn_lost(c, "write failed");
        return n;
    }
    c->last_used = clock_now();
    db_conn_arm_timer(c);
    return n;
broken:
    /* What was sent of t is answered with the connection: never synced, so
     * never committed (not applied). */
    TAILQ_INSERT_TAIL(&c->txns, t, link);
    db_conn_lost(c, PQerrorMessage(c->pg));
    return n;
}

/* Writes whose resend_at has come go back to the head of the queue: nothing
 * queued for their rows arrived before them. */
static void requeue_resends(struct db_pool *pool)
{
    struct timespec now = clock_now();
    struct query_list due = TAILQ_HEAD_INITIALIZER(due);
    struct query *q;

    while ((q = TAILQ_FIRST(&pool->resend_queue)) != NULL && clock_diff(q->resend_at, now) <= 0) {
        TAILQ_REMOVE(&pool->resend_queue, q, link);
        TAILQ_INSERT_TAIL(&due, q, link);
    }
    TAILQ_CONCAT(&due, &pool->write_queue, link);
    TAILQ_CONCAT(&pool->write_queue, &due, link);
}

static void db_pool_dispatch_writes(struct db_pool *pool)
{
    bool opening;
    struct db_conn *c;

    requeue_resends(pool);
    expire_queued(pool, &pool->write_queue);
    while (write_waiting(pool)) {
        c = free_write_conn(pool, &opening);
        if (c == NULL) {
            if (!opening)
                open_write_conn(pool);
            break;
        }
        if (write_start(c) == 0)
            break;
    }
    db_pool_arm_queue_timer(pool);
}

static void pool_deferred_batches(evutil_socket_t fd, short what, void *arg)
{
    db_pool_dispatch_batches(arg);
}

static void pool_deferred_dispatch(evutil_socket_t fd, short what, void *arg)
{
    db_pool_dispatch_writes(arg);
}

static void pool_queue_timer(evutil_socket_t fd, short what, void *arg)
{
    db_pool_dispatch_writes(arg);
}

static void db_pool_arm_queue_timer(struct db_pool *pool)
{
    struct query *q;
    struct timespec first = {0, 0};
    bool any = false;
    struct timeval tv;

    TAILQ_FOREACH(q, &pool->write_queue, link) {
        if (!any || clock_diff(q->deadline, first) < 0)
            first = q->deadline;
        any = true;
    }
    q = TAILQ_FIRST(&pool->resend_queue); /* the first to come: all wait as long */
    if (q != NULL && (!any || clock_diff(q->resend_at, first) < 0)) {
        first = q->resend_at;
        any = true;
    }
    if (!any) {
        evtimer_del(pool->ev_queue_timer);
        return;
    }
    tv = clock_timeval(clock_diff(first, clock_now()));
    evtimer_add(pool->ev_queue_timer, &tv);
}

/* ---- performance-test batches -------------------------------------------------------- */

static void batch_start(struct db_conn *c, struct query *q)
{
    struct txn *t = db_txn_new(TXN_BATCH);

    if (t == NULL) {
        db_query_answer(q, DB_UNAVAILABLE, NULL);
        db_query_free(q);
        return;
    }
    if ((!c->pool->prepared && db_send_timeout_prefix(c, t, 0) != 0) || db_send_copied(c, t, q) != 0) {
        if (q->txn == NULL) {
            db_query_answer(q, DB_UNAVAILABLE, NULL);
            db_query_free(q);
        }
        TAILQ_INSERT_TAIL(&c->txns, t, link);
        db_conn_defer_failure(c);
        return;
    }
    if (db_txn_close(c, t) != 0) {
        TAILQ_INSERT_TAIL(&c->txns, t, link);
        db_conn_defer_failure(c);
        return;
    }
    c->last_used = clock_now();
    if (db_conn_flush(c) < 0)
        db_conn_defer_failure(c);
}

static void db_pool_dispatch_batches(struct db_pool *pool)
{
    struct db_conn *c = &pool->perf;
    struct query *q;

    if (c->state == DB_CONN_CLOSED && !TAILQ_EMPTY(&pool->batch_queue))
        db_conn_connect(c);
    if (c->state != DB_CONN_READY || c->recheck)
        return;
    /* Pooled: one batch in flight at a time, the next when its commit is in. */
    while ((q = TAILQ_FIRST(&pool->batch_queue)) != NULL &&
           !(pool->pooled && !TAILQ_EMPTY(&c->txns))) {
        TAILQ_REMOVE(&pool->batch_queue, q, link);
        batch_start(c, q);
        if (c->state != DB_CONN_READY)
            break;
    }
}

/* ---- results --------------------------------------------------------------------------- */

static bool db_result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);

    return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

static void db_txn_free(struct txn *t)
{
    struct query *q;

    while ((q = TAILQ_FIRST(&t->queries)) != NULL) {
        TAILQ_REMOVE(&t->queries, q, link);
        db_query_free(q);
    }
    free(t->rows);
    free(t);
}

/* A query's result is complete: reads are answered at once, writes wait for
 * the commit. */
static void query_resulted(struct db_conn *c, struct query *q)
{
    c->inflight--;
    if (q->state == QUERY_ANSWERED && q->stmt >= 0 && q->res != NULL &&
        PQresultStatus(q->res) != PGRES_PIPELINE_ABORTED)
        log_failure(c->pool, q, q->res); /* answered at its deadline, then failed */
    if (q->state == QUERY_ANSWERED || q->txn->kind != TXN_READS) {
        if (q->state == QUERY_SENT)
            q->state = QUERY_HELD;
        return;
    }
    if (q->res != NULL && db_result_ok(q->res)) {
        db_query_answer(q, DB_OK, q->res);
    } else if (q->res != NULL && PQresultStatus(q->res) == PGRES_PIPELINE_ABORTED) {
        /* Never ran: resent when the transaction is over (below). */
        q->state = QUERY_HELD;
    } else {
        log_failure(c->pool, q, q->res);
        db_query_answer(q, failed_status(q->res), q->res);
    }
}

/*
 * The Sync of the oldest transaction arrived: the server committed it, or
 * rolled all of it back when a statement failed. Writes learn their fate now.
 * Statements rolled back because of a neighbour run again (their own request's
 * deadline permitting); the failing one is never resent, unless it was refused
 * for a deadlock or a serialization failure (common/sqlstate.c).
 */
static void txn_finished(struct db_conn *c, struct txn *t)
{
    struct db_pool *pool = c->pool;
    struct query *q, *failed = NULL;
    struct query_list again = TAILQ_HEAD_INITIALIZER(again);
    struct query_list resends = TAILQ_HEAD_INITIALIZER(resends);
    struct timespec resend_at;
    bool write_back = false, aborted = false, resend;

    TAILQ_FOREACH(q, &t->queries, link) {
        if (failed == NULL && q->res != NULL && !db_result_ok(q->res) &&
            PQresultStatus(q->res) != PGRES_PIPELINE_ABORTED)
            failed = q;
        aborted |= q->res != NULL && PQresultStatus(q->res) == PGRES_PIPELINE_ABORTED;
    }
    if (failed != NULL && failed->stmt < 0)
        log_failure(pool, failed, failed->res);
    /* A deadlock or serialization failure rolled the whole transaction back:
     * a write so refused runs again too, within its own deadline. */
    resend =
        failed != NULL && t->kind == TXN_WRITES && refusal_kind(failed->res) == SQLSTATE_RESEND;
    while ((q = TAILQ_FIRST(&t->queries)) != NULL) {
        TAILQ_REMOVE(&t->queries, q, link);
        if (q->state != QUERY_HELD) {
            db_query_free(q);
            continue;
        }
        if (failed == NULL && !aborted) { /* aborted: rolled back, by whatever failed */
            db_query_answer(q, DB_OK, q->res);
            db_query_free(q);
        } else if (q == failed && !resend) {
            log_failure(pool, q, q->res);
            db_query_answer(q, failed_status(q->res), q->res);
            db_query_free(q);
        } else {
            if (q == failed)
                log_failure(pool, q, q->res);
            TAILQ_INSERT_TAIL(&again, q, link);
        }
    }
    db_txn_free(t);
    /* Requeued in their original order, ahead of newer writes. After a
     * deadlock, a moment later: sent again at once, they could take the rows
     * back before the transaction that won wakes up, and deadlock again. */
    resend_at = clock_add(clock_now(), RESEND_DELAY);
    while ((q = TAILQ_LAST(&again, query_list)) != NULL) {
        TAILQ_REMOVE(&again, q, link);
        q->state = QUERY_QUEUED;
        q->txn = NULL;
        q->has_result = false;
        if (q->res != NULL)
            PQclear(q->res);
        q->res = NULL;
        if (!db_is_write(q->stmt)) {
            read_resend(pool, q);
        } else if (q->stmt == DB_PERF_INSERT) {
            TAILQ_INSERT_HEAD(&pool->batch_queue, q, link);
        } else if (resend) {
            q->resend_at = resend_at;
            TAILQ_INSERT_HEAD(&resends, q, link);
        } else {
            TAILQ_INSERT_HEAD(&pool->write_queue, q, link);
            write_back = true;
        }
    }
    if (!TAILQ_EMPTY(&resends)) {
        TAILQ_CONCAT(&pool->resend_queue, &resends, link);
        db_pool_arm_queue_timer(pool);
    }
    if (write_back || (c->kind == DB_KIND_WRITE && !TAILQ_EMPTY(&pool->write_queue)))
        event_active(pool->ev_dispatch, 0, 0);
    if (c->kind == DB_KIND_PERF)
        db_pool_dispatch_batches(pool);
}

/* The result kinds a statement's place in a pipeline may hold. */
static bool result_in_step(const PGresult *res)
{
    switch (PQresultStatus(res)) {
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
    case PGRES_FATAL_ERROR:
    case PGRES_PIPELINE_ABORTED:
        return true;
    default:
        return false;
    }
}

/* The pooler's symptom explained once per worker: what is wrong, what to set. */
static void db_pool_say_pooler(struct db_pool *pool, const char *state, const char *message)
{
    char line[512];

    if (pool->said_pooler)
        return;
    pool->said_pooler = true;
    db_error_line(message, line, sizeof(line));
    log_error("database: %s (SQLSTATE %s): with db_prepared = on, todod prepares its statements "
              "once per connection, but this database_url leads to a pooler that gives each "
              "transaction any server connection (PgBouncer in transaction pooling mode): set "
              "db_prepared = off (said once; the retries are logged at debug level)",
              line, state);
}

/* A statement failed: its SQLSTATE may say the schema is gone (re-checked,
 * at most every RECHECK_EVERY s) or that a pooler is in the way. */
static void conn_note_failure(struct db_conn *c, const PGresult *res)
{
    struct db_pool *pool = c->pool;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    struct timespec now;

    if (state == NULL)
        return;
    if (db_pooler_symptom(state)) {
        db_pool_say_pooler(pool, state, PQresultErrorMessage(res));
        return;
    }
    if (!db_schema_gone(state) || c->recheck)
        return;
    now = clock_now();
    if (pool->last_recheck.tv_sec != 0 && clock_diff(now, pool->last_recheck) < RECHECK_EVERY)
        return;
    pool->last_recheck = now;
    c->recheck = true;
}

/* Reads every complete result; -1 when the connection broke (c->why says how
 * when libpq does not). */
static int db_conn_read_results(struct db_conn *c)
{
    if (!PQconsumeInput(c->pg))
        return -1;
    while (c->state == DB_CONN_READY && !PQisBusy(c->pg)) {
        struct txn *t = TAILQ_FIRST(&c->txns);
        PGresult *res;

        if (t == NULL)
            break;
        res = PQgetResult(c->pg);
        if (res != NULL)
            c->progress = clock_now();
        if (t->next == NULL) {
            /* All its queries are in: what comes is the Sync. */
            if (res == NULL)
                break; /* not yet */
            if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
                char line[200];

                db_result_error(res, line, sizeof(line));
                snprintf(c->why, sizeof(c->why),
                         "protocol out of step: a result of kind %s (%s) where the end of a "
                         "transaction (Sync) was due",
                         PQresStatus(PQresultStatus(res)), line);
                PQclear(res);
                return -1;
            }
            PQclear(res);
            TAILQ_REMOVE(&c->txns, t, link);
            txn_finished(c, t);
            /* Pooled: the reads held meanwhile go now (after this turn's). */
            if (c->pool->pooled && c->open != NULL && TAILQ_EMPTY(&c->txns))
                event_active(c->ev_sync, 0, 0);
            continue;
        }
        if (res != NULL) {
            struct query *q = t->next;

            if (!result_in_step(res)) {
                snprintf(c->why, sizeof(c->why),
                         "protocol out of step: a result of kind %s where the result of %s was "
                         "due",
                         PQresStatus(PQresultStatus(res)),
                         q->stmt >= 0 ? db_statements[q->stmt].name : SET_TIMEOUT_NAME);
                PQclear(res);
                return -1;
            }
            if (!db_result_ok(res) && PQresultStatus(res) != PGRES_PIPELINE_ABORTED)
                conn_note_failure(c, res);
            /* Keep the first result (an error wins over what follows). A
             * query answered early drops a result that succeeded, but keeps
             * a failure: it decides the transaction's, and its neighbours
             * aborted by it must run again, never be taken for done. */
            if (q->res == NULL && (q->state != QUERY_ANSWERED || q->stmt < 0 || !db_result_ok(res)))
                q->res = res;
            else
                PQclear(res);
            q->has_result = true;
            continue;
        }
        if (!t->next->has_result)
            break; /* not yet */
        {
            struct query *q = t->next;

            t->next = TAILQ_NEXT(q, link);
            query_resulted(c, q);
        }
    }
    return 0;
}

/* todod_db_up counts the read connections that are up: what /health reports. */
static void slot_db_up(struct db_conn *c, int delta)
{
    if (c->kind == DB_KIND_READ)
        atomic_fetch_add_explicit(&c->pool->slot->db_up, delta, memory_order_relaxed);
}

/* ---- deadlines -------------------------------------------------------------------------- */

/*
 * When the server must next be heard from on c, if it is answering: the
 * statement running now started at the last progress at the latest (a result
 * came, or the transaction went to an idle connection), and the server's
 * statement_timeout bounds it. A pipelined read's own deadline counts from its
 * arrival, but its statement_timeout only from the end of the one ahead of it,
 * so deadlines alone cannot tell a hung server from a busy one. False when
 * nothing is owed (idle, or a batch, which has no time-out).
 */
static bool conn_owed_by(const struct db_conn *c, struct timespec *at)
{
    const struct txn *t = TAILQ_FIRST(&c->txns);

    if (t == NULL || t->timeout <= 0)
        return false;
    *at = clock_add(c->progress, t->timeout + HARD_GRACE);
    return true;
}

static void earliest(struct timespec *next, bool *any, struct timespec at)
{
    if (!*any || clock_diff(at, *next) < 0)
        *next = at;
    *any = true;
}

/* The next moment something is due on c: a read's deadline (answered early),
 * a write transaction's hard deadline, or the moment the server, silent,
 * counts as hung. */
static void db_conn_arm_timer(struct db_conn *c)
{
    struct timespec next = {0, 0}, at;
    bool any = false;
    struct txn *t;
    struct query *q;
    struct timeval tv;

    if (c->state != DB_CONN_READY)
        return;
    if (conn_owed_by(c, &at))
        earliest(&next, &any, at);
    TAILQ_FOREACH(t, &c->txns, link) {
        if (t->kind == TXN_WRITES)
            earliest(&next, &any, t->hard_deadline);
        if (t->kind != TXN_READS)
            continue;
        TAILQ_FOREACH(q, &t->queries, link)
            if (q->stmt >= 0 && !q->has_result && q->state == QUERY_SENT)
                earliest(&next, &any, q->deadline);
    }
    if (c->open != NULL)
        TAILQ_FOREACH(q, &c->open->queries, link)
            if (q->state == QUERY_QUEUED)
                earliest(&next, &any, q->deadline);
    if (!any && c->kind != DB_KIND_READ && !db_conn_is_resident(c)) {
        /* Idle: an on-demand connection closes after IDLE_CLOSE. */
        next = clock_add(c->last_used, IDLE_CLOSE);
        any = true;
    }
    if (!any) {
        evtimer_del(c->ev_timer);
        return;
    }
    tv = clock_timeval(clock_diff(next, clock_now()));
    evtimer_add(c->ev_timer, &tv);
}

static void conn_close_idle(struct db_conn *c)
{
    slot_db_up(c, -1);
    log_debug("%s connection %d closed after %.0f s unused", kind_name(c->kind), c->index,
              IDLE_CLOSE);
    conn_unwatch(c);
    PQfinish(c->pg);
    c->pg = NULL;
    c->state = DB_CONN_CLOSED;
    evtimer_del(c->ev_timer);
}

/*
 * A server that gives no verdict in time is hung (stopped, or a machine that
 * still accepts connections but runs nothing): every connection to it is, not
 * only the one that noticed. All are dropped and reconnect, moving on to the
 * next host of a list.
 */
static void pool_server_hung(struct db_pool *pool, struct db_conn *noticed)
{
    struct db_conn *all[DB_NKINDS] = {pool->reads, pool->writes, &pool->perf};
    int counts[DB_NKINDS] = {pool->nreads, pool->nwrites, 1};

    log_warn("database %s connection %d: no answer within request_timeout: the server seems hung, "
             "dropping every connection to it",
             kind_name(noticed->kind), noticed->index);
    for (int k = 0; k < DB_NKINDS; k++) {
        for (int i = 0; i < counts[k]; i++) {
            struct db_conn *c = &all[k][i];

            if (c->state != DB_CONN_READY)
                continue;
            if (pool->rotate)
                c->first_host = (c->first_host + 1) % pool->nhosts;
            db_conn_lost(c, "dropped: the server seems hung");
        }
    }
}

static void conn_check_deadlines(struct db_conn *c)
{
    struct timespec now = clock_now(), at;
    struct txn *t;
    struct query *q, *next;

    if (conn_owed_by(c, &at) && clock_diff(at, now) <= 0) {
        pool_server_hung(c->pool, c);
        return;
    }
    TAILQ_FOREACH(t, &c->txns, link) {
        if (t->kind == TXN_WRITES && clock_diff(t->hard_deadline, now) <= 0) {
            if (t == TAILQ_FIRST(&c->txns) && clock_diff(now, c->progress) >= t->timeout) {
                pool_server_hung(c->pool, c); /* silent past its statement_timeout */
                return;
            }
            /* The server answers, but gave this transaction no verdict in time
             * (several of its statements waited): its writes are answered as
             * possibly applied, with this connection only. */
            db_conn_lost(c, "no verdict on a write transaction by its deadline, although the server "
                         "answers: dropping this connection");
            return;
        }
        if (t->kind != TXN_READS)
            continue;
        TAILQ_FOREACH(q, &t->queries, link) {
            if (q->stmt >= 0 && !q->has_result && q->state == QUERY_SENT &&
                clock_diff(q->deadline, now) <= 0)
                db_query_answer(q, DB_TIMEOUT, NULL); /* its result is dropped */
        }
    }
    /* Pooled: reads held past their deadline were never sent. */
    for (q = c->open ? TAILQ_FIRST(&c->open->queries) : NULL; q != NULL; q = next) {
        next = TAILQ_NEXT(q, link);
        if (q->state != QUERY_QUEUED || clock_diff(q->deadline, now) > 0)
            continue;
        TAILQ_REMOVE(&c->open->queries, q, link);
        c->held--;
        db_query_answer(q, DB_TIMEOUT, NULL);
        db_query_free(q);
    }
    if (TAILQ_EMPTY(&c->txns) && c->kind != DB_KIND_READ &&
        !db_conn_is_resident(c) && clock_diff(now, c->last_used) >= IDLE_CLOSE &&
        TAILQ_EMPTY(&c->pool->batch_queue) && TAILQ_EMPTY(&c->pool->write_queue)) {
        conn_close_idle(c);
        return;
    }
    db_conn_arm_timer(c);
}

/* ---- losing a connection ------------------------------------------------------------------ */

static void conn_schedule_reconnect(struct db_conn *c)
{
    struct timeval tv = clock_timeval(c->backoff);

    c->state = DB_CONN_DOWN;
    evtimer_add(c->ev_timer, &tv);
    c->backoff = c->backoff < BACKOFF_MIN ? BACKOFF_MIN : fmin(c->backoff * 2, BACKOFF_MAX);
}

static void db_conn_cancel_dns(struct db_conn *c)
{
    int i;

    for (i = 0; c->dns_reqs != NULL && i < c->pool->nhosts; i++) {
        if (c->dns_reqs[i] != NULL)
            evdns_getaddrinfo_cancel(c->dns_reqs[i]);
        c->dns_reqs[i] = NULL;
    }
    for (i = 0; c->dns_addrs != NULL && i < c->pool->nhosts; i++) {
        free(c->dns_addrs[i]);
        c->dns_addrs[i] = NULL;
    }
    c->dns_pending = 0;
}

/*
 * The connection is gone. It is marked down and reset first, so that nothing
 * answered below can be sent on it again; then every query on it is answered:
 * a write whose transaction reached the server may have been committed (LOST),
 * one that did not was not (UNAVAILABLE); reads are simply unavailable.
 */
static void conn_lost_at(struct db_conn *c, const char *why, int level)
{
    struct db_pool *pool = c->pool;
    struct txn_list lost = TAILQ_HEAD_INITIALIZER(lost);
    struct txn *t;
    struct query *q0;
    char line[512];
    bool was_ready = c->state == DB_CONN_READY;
    bool on_demand = c->kind != DB_KIND_READ;

    db_error_line(why, line, sizeof(line));
    if (line[0] == '\0')
        snprintf(line, sizeof(line), "no reason given");
    if (was_ready) {
        slot_db_up(c, -1);
        log_msg(level, "database %s connection %d lost: %s", kind_name(c->kind), c->index, line);
    } else {
        log_msg(level, "database %s connection %d failed: %s", kind_name(c->kind), c->index, line);
    }
    db_count(&pool->slot->c.db_errors);
    c->why[0] = '\0';
    c->recheck = false;
    TAILQ_CONCAT(&lost, &c->txns, link);
    if (c->open != NULL)
        TAILQ_INSERT_TAIL(&lost, c->open, link);
    c->open = NULL;
    c->inflight = 0;
    c->held = 0;
    conn_unwatch(c);
    db_conn_cancel_dns(c);
    evtimer_del(c->ev_timer);
    if (c->pg != NULL)
        PQfinish(c->pg);
    c->pg = NULL;
    /* An on-demand connection with nothing waiting for it is not retried. */
    if (on_demand && was_ready && !db_conn_is_resident(c) &&
        (c->kind == DB_KIND_PERF || TAILQ_EMPTY(&pool->write_queue))) {
        c->state = DB_CONN_CLOSED;
        c->backoff = 0;
    } else {
        conn_schedule_reconnect(c);
    }

    while ((t = TAILQ_FIRST(&lost)) != NULL) {
        struct query *q;

        TAILQ_REMOVE(&lost, t, link);
        TAILQ_FOREACH(q, &t->queries, link) {
            if (q->state == QUERY_ANSWERED || q->stmt < 0)
                continue;
            db_query_answer(q, t->kind != TXN_READS && t->sent ? DB_LOST : DB_UNAVAILABLE, NULL);
        }
        db_txn_free(t);
    }
    /* Batches waiting for this connection are not sent: the performance test
     * learns at once that the database is gone. */
    while (c->kind == DB_KIND_PERF && (q0 = TAILQ_FIRST(&pool->batch_queue)) != NULL) {
        TAILQ_REMOVE(&pool->batch_queue, q0, link);
        db_query_answer(q0, DB_UNAVAILABLE, NULL);
        db_query_free(q0);
    }
    if (c->kind == DB_KIND_WRITE && !TAILQ_EMPTY(&pool->write_queue))
        event_active(pool->ev_dispatch, 0, 0);
}

static void db_conn_lost(struct db_conn *c, const char *why)
{
    conn_lost_at(c, why, LOGL_WARN);
}

/* A statement found the schema gone, and c has nothing in flight any more: it
 * connects again, and so checks (and makes whole) the schema; on-demand
 * connections too, at once. */
static void conn_recheck(struct db_conn *c)
{
    conn_lost_at(c, "a statement found todod's schema incomplete: connecting again to check it",
                 LOGL_INFO);
    if (c->state == DB_CONN_CLOSED)
        db_conn_connect(c);
}

/* ---- connection set-up ---------------------------------------------------------------------- */

static void conn_ready(struct db_conn *c)
{
    c->state = DB_CONN_READY;
    c->backoff = 0;
    c->last_used = c->progress = clock_now();
    c->why[0] = '\0';
    slot_db_up(c, 1);
    if (c->ever_ready) {
        db_count(&c->pool->slot->c.db_reconnects);
        log_info("database %s connection %d re-established", kind_name(c->kind), c->index);
    } else {
        log_info("database %s connection %d ready", kind_name(c->kind), c->index);
    }
    c->ever_ready = true;
    db_conn_arm_timer(c);
    if (c->kind == DB_KIND_WRITE)
        db_pool_dispatch_writes(c->pool);
    else if (c->kind == DB_KIND_PERF)
        db_pool_dispatch_batches(c->pool);
}

static void conn_prepare(struct db_conn *c)
{
    int i;

    if (PQenterPipelineMode(c->pg) != 1)
        goto fail;
    c->state = DB_CONN_PREPARING;
    c->prepares_pending = 0;
    c->setup_failed = false;
    if (!c->pool->prepared) {
        conn_ready(c);
        return;
    }
    for (i = 0; i < DB_NSTMTS; i++)
        if (PQsendPrepare(c->pg, db_statements[i].name, db_statements[i].sql, 0, NULL) != 1)
            goto fail;
    if (PQsendPrepare(c->pg, SET_TIMEOUT_NAME, SET_TIMEOUT_SQL, 0, NULL) != 1 ||
        PQpipelineSync(c->pg) != 1)
        goto fail;
    c->prepares_pending = DB_NSTMTS + 1;
    if (db_conn_flush(c) < 0)
        goto fail;
    return;
fail:
    db_conn_lost(c, db_conn_why(c, "preparing statements"));
}

static int send_setup(struct db_conn *c)
{
    c->state = DB_CONN_CHECKING;
    c->setup_failed = false;
    c->schema_check = DB_SCHEMA_UNANSWERED;
    if (PQsendQuery(c->pg, c->pool->setup_sql[c->kind]) != 1)
        return -1;
    return db_conn_flush(c);
}

/* The first real failure of a set-up step is what c->why says; the results of
 * statements aborted after it carry no message. */
static void setup_failure(struct db_conn *c, const PGresult *res, const char *doing)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    char line[200];

    if (c->setup_failed || PQresultStatus(res) == PGRES_PIPELINE_ABORTED) {
        c->setup_failed = true;
        return;
    }
    c->setup_failed = true;
    snprintf(c->setup_state, sizeof(c->setup_state), "%s", state ? state : "");
    db_result_error(res, line, sizeof(line));
    snprintf(c->setup_error, sizeof(c->setup_error), "%s", line);
    snprintf(c->why, sizeof(c->why), "%s failed: %s", doing, line);
}

/* The prepares failed. Through a pooler they always will: that is said once,
 * and the retries are logged at debug level. */
static int conn_prepare_failed(struct db_conn *c)
{
    bool said = c->pool->said_pooler;

    if (!db_pooler_symptom(c->setup_state))
        return -1;
    db_pool_say_pooler(c->pool, c->setup_state, c->setup_error);
    conn_lost_at(c, c->why, said ? LOGL_DEBUG : LOGL_WARN);
    return 0;
}

/* Results of the setup string, of the schema creation, or of the prepares. */
static int conn_read_setup(struct db_conn *c)
{
    PGresult *res;

    if (!PQconsumeInput(c->pg))
        return -1;
    while (!PQisBusy(c->pg)) {
        res = PQgetResult(c->pg);
        if (c->state == DB_CONN_CHECKING || c->state == DB_CONN_CREATING) {
            if (res == NULL) {
                if (c->state == DB_CONN_CREATING) {
                    if (c->setup_failed)
                        return -1; /* retried with back-off */
                    c->setup_made = true;
                    return send_setup(c);
                }
                if (c->setup_failed)
                    return -1;
                if (c->schema_check == DB_SCHEMA_WHOLE) {
                    conn_prepare(c);
                    return 0;
                }
                if (c->setup_made)
                    return -1; /* c->why says what is still missing */
                /* Missing, or part of it: made whole, once, under the lock. */
                c->state = DB_CONN_CREATING;
                if (PQsendQuery(c->pg, db_schema_sql) != 1)
                    return -1;
                return db_conn_flush(c);
            }
            if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
                PQnfields(res) == 1 && c->state == DB_CONN_CHECKING) {
                const char *missing = PQgetvalue(res, 0, 0);
                char line[400];

                c->schema_check = missing[0] == '\0' ? DB_SCHEMA_WHOLE : DB_SCHEMA_INCOMPLETE;
                db_error_line(missing, line, sizeof(line));
                if (c->schema_check != DB_SCHEMA_WHOLE && c->setup_made)
                    snprintf(c->why, sizeof(c->why),
                             "the schema is still incomplete after making it (missing: %s): does "
                             "another object have one of these names?",
                             line);
                else if (c->schema_check != DB_SCHEMA_WHOLE && strncmp(line, "todod_schema_version() ", 23) == 0)
                    log_info("database schema missing: making sure of it under the schema lock");
                else if (c->schema_check != DB_SCHEMA_WHOLE)
                    log_info("database schema incomplete (missing: %s): making sure of it under "
                             "the schema lock",
                             line);
            } else if (!db_result_ok(res)) {
                /* Said once, by db_conn_lost, when the results are all in. */
                setup_failure(c, res,
                              c->state == DB_CONN_CHECKING ? "checking the schema"
                                                        : "making the schema");
            }
            PQclear(res);
            continue;
        }
        /* DB_CONN_PREPARING: one result and a NULL per statement, then the sync. */
        if (res == NULL)
            continue;
        if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            if (c->setup_failed)
                return conn_prepare_failed(c);
            if (c->prepares_pending != 0) {
                snprintf(c->why, sizeof(c->why), "preparing statements: %d results missing",
                         c->prepares_pending);
                return -1;
            }
            conn_ready(c);
            return 0;
        }
        if (!db_result_ok(res))
            setup_failure(c, res, "preparing statements");
        c->prepares_pending--;
        PQclear(res);
    }
    return 0;
}

static void conn_poll_connect(struct db_conn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        conn_watch(c, EV_READ, true);
        return;
    case PGRES_POLLING_WRITING:
        conn_watch(c, EV_WRITE, true);
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        db_conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    evtimer_del(c->ev_timer);
    c->setup_made = false;
    if (PQsetnonblocking(c->pg, 1) != 0 || send_setup(c) != 0)
        db_conn_lost(c, PQerrorMessage(c->pg));
}

static void conn_io(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;

    if (c->state == DB_CONN_CONNECTING) {
        conn_poll_connect(c);
        return;
    }
    if ((what & EV_WRITE) && db_conn_flush(c) < 0)
        goto lost;
    if (!(what & EV_READ))
        return;
    if (c->state == DB_CONN_READY) {
        if (db_conn_read_results(c) < 0)
            goto lost;
        if (c->state == DB_CONN_READY && c->recheck && TAILQ_EMPTY(&c->txns) && c->open == NULL) {
            conn_recheck(c);
            return;
        }
        if (c->state == DB_CONN_READY) {
            if (db_conn_flush(c) < 0)
                goto lost;
            db_conn_arm_timer(c);
        }
    } else if (conn_read_setup(c) < 0) {
        goto lost;
    }
    return;
lost:
    db_conn_lost(c, db_conn_why(c, c->state == DB_CONN_READY ? "reading results" : "setting up"));
}

/* ---- host names ------------------------------------------------------------------------------ */

static bool is_ip_literal(const char *h)
{
    struct in6_addr a6;
    struct in_addr a4;

    return inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1;
}

/* Unix-socket directories, IP literals and empty entries need no lookup. */
static bool needs_lookup(const char *h)
{
    return h[0] != '\0' && h[0] != '/' && h[0] != '@' && !is_ip_literal(h);
}

static void db_conn_start_pq(struct db_conn *c);

static void on_resolved(int err, struct evutil_addrinfo *res, void *arg);

struct dns_ctx {
    struct db_conn *c;
    int host;
};

/*
 * libpq resolves host names with a blocking getaddrinfo() inside
 * PQconnectPoll. So names are resolved here first, with evdns, and handed to
 * libpq as hostaddr (host still names the server, for its messages).
 */
static void db_conn_resolve(struct db_conn *c)
{
    struct db_pool *pool = c->pool;
    struct evutil_addrinfo hints;
    int i;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->state = DB_CONN_RESOLVING;
    c->dns_pending = 0;
    for (i = 0; i < pool->nhosts; i++)
        if (needs_lookup(pool->hosts[i]))
            c->dns_pending++;
    for (i = 0; i < pool->nhosts; i++) {
        struct dns_ctx *ctx;

        if (!needs_lookup(pool->hosts[i]))
            continue;
        ctx = malloc(sizeof(*ctx));
        if (ctx == NULL) {
            db_conn_lost(c, "out of memory");
            return;
        }
        ctx->c = c;
        ctx->host = i;
        c->dns_reqs[i] =
            evdns_getaddrinfo(pool->dns, pool->hosts[i], NULL, &hints, on_resolved, ctx);
        /* A name found at once (in /etc/hosts) has called back already. */
        if (c->state != DB_CONN_RESOLVING)
            return;
    }
}

static void on_resolved(int err, struct evutil_addrinfo *res, void *arg)
{
    struct dns_ctx *ctx = arg;
    struct db_conn *c = ctx->c;
    struct evutil_addrinfo *ai;
    char list[1024] = "";
    int host = ctx->host;

    free(ctx);
    if (err == EVUTIL_EAI_CANCEL)
        return;
    c->dns_reqs[host] = NULL;
    for (ai = res; err == 0 && ai != NULL; ai = ai->ai_next) {
        char addr[INET6_ADDRSTRLEN];
        const void *a = ai->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;

        if (inet_ntop(ai->ai_family, a, addr, sizeof(addr)) == NULL ||
            strlen(list) + strlen(addr) + 2 > sizeof(list))
            continue;
        if (strstr(list, addr) != NULL)
            continue;
        if (list[0] != '\0')
            strcat(list, ",");
        strcat(list, addr);
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    if (list[0] == '\0') {
        char why[300];

        snprintf(why, sizeof(why), "could not resolve host name \"%s\": %s", c->pool->hosts[host],
                 evutil_gai_strerror(err));
        db_conn_lost(c, why);
        return;
    }
    c->dns_addrs[host] = strdup(list);
    if (--c->dns_pending == 0 && c->state == DB_CONN_RESOLVING)
        db_conn_start_pq(c);
}

/* host, hostaddr and port lists for libpq, with every address of every name. */
static int db_host_lists(struct db_conn *c, char **host, char **hostaddr, char **port)
{
    struct db_pool *pool = c->pool;
    const char *ports = pool->port_key >= 0 ? pool->vals[pool->port_key] : NULL;
    size_t cap = 4096;
    int nports = 0;
    char *p;

    *host = calloc(1, cap);
    *hostaddr = calloc(1, cap);
    *port = calloc(1, cap);
    if (*host == NULL || *hostaddr == NULL || *port == NULL)
        return -1;
    if (ports != NULL)
        for (nports = 1, p = (char *)ports; (p = strchr(p, ',')) != NULL; p++)
            nports++;
    for (int j = 0; j < pool->nhosts; j++) {
        int i = (c->first_host + j) % pool->nhosts;
        const char *addrs = c->dns_addrs[i] ? c->dns_addrs[i] : "";
        char this_port[32] = "";

        if (nports > 1) {
            const char *s = ports;
            int k;

            for (k = 0; k < i && s != NULL; k++) {
                s = strchr(s, ',');
                if (s != NULL)
                    s++;
            }
            if (s != NULL)
                snprintf(this_port, sizeof(this_port), "%.*s", (int)strcspn(s, ","), s);
        } else if (ports != NULL) {
            snprintf(this_port, sizeof(this_port), "%s", ports);
        }
        do {
            size_t alen = strcspn(addrs, ",");

            if (strlen(*host) + strlen(pool->hosts[i]) + 2 >= cap ||
                strlen(*hostaddr) + alen + 2 >= cap || strlen(*port) + strlen(this_port) + 2 >= cap)
                return -1;
            if ((*host)[0] != '\0' || j > 0) {
                strcat(*host, ",");
                strcat(*hostaddr, ",");
                strcat(*port, ",");
            }
            strcat(*host, pool->hosts[i]);
            strncat(*hostaddr, addrs, alen);
            strcat(*port, this_port);
            addrs += alen;
            if (*addrs == ',')
                addrs++;
        } while (*addrs != '\0');
    }
    return 0;
}

/* What the server says besides results (the schema creation's report, ...)
 * goes to the log, not to a bare stderr line. */
static void on_notice(void *arg, const char *message)
{
    char line[512];

    db_error_line(message, line, sizeof(line));
    log_info("database says: %s", line);
}

static void db_conn_start_pq(struct db_conn *c)
{
    struct db_pool *pool = c->pool;
    const char **keys = calloc((size_t)pool->nkeys + 4, sizeof(char *));
    const char **vals = calloc((size_t)pool->nkeys + 4, sizeof(char *));
    char *host = NULL, *hostaddr = NULL, *port = NULL;
    int i, n = 0;
    bool lists = pool->needs_dns || pool->rotate;

    if (keys == NULL || vals == NULL)
        goto oom;
    if (lists && db_host_lists(c, &host, &hostaddr, &port) != 0)
        goto oom;
    for (i = 0; i < pool->nkeys; i++) {
        if (lists && (i == pool->host_key || i == pool->hostaddr_key || i == pool->port_key))
            continue;
        keys[n] = pool->keys[i];
        vals[n++] = pool->vals[i];
    }
    if (lists) {
        keys[n] = "host", vals[n++] = host;
        keys[n] = "hostaddr", vals[n++] = hostaddr;
        if (pool->port_key >= 0)
            keys[n] = "port", vals[n++] = port;
    }
    keys[n] = NULL;
    c->pg = PQconnectStartParams(keys, vals, 0);
    free(keys), free(vals), free(host), free(hostaddr), free(port);
    db_conn_cancel_dns(c);
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
        db_conn_lost(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
        return;
    }
    PQsetNoticeProcessor(c->pg, on_notice, c);
    c->state = DB_CONN_CONNECTING;
    conn_watch(c, EV_WRITE, true);
    return;
oom:
    free(keys), free(vals), free(host), free(hostaddr), free(port);
    db_conn_lost(c, "out of memory");
}

static void db_conn_connect(struct db_conn *c)
{
    /* libpq's connect_timeout only applies to blocking connects: a server (or
     * a name server) that never answers is given up on here, and with several
     * hosts the next attempt starts with the next one. */
    struct timeval tv = clock_timeval(c->pool->attempt_bound);

    evtimer_add(c->ev_timer, &tv);
    if (c->pool->needs_dns)
        db_conn_resolve(c);
    else
        db_conn_start_pq(c);
}

/* The timer: the reconnect back-off while down, the bound on connecting and
 * resolving, the deadlines and the idle close once ready. */
static void conn_timer(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;

    switch (c->state) {
    case DB_CONN_DOWN:
        db_conn_connect(c);
        return;
    case DB_CONN_RESOLVING:
    case DB_CONN_CONNECTING:
    case DB_CONN_CHECKING:
    case DB_CONN_CREATING:
    case DB_CONN_PREPARING:
        if (c->pool->rotate)
            c->first_host = (c->first_host + 1) % c->pool->nhosts;
        db_conn_lost(c, c->pool->rotate ? "no answer from the server in time while connecting: "
                                       "trying the next host"
                                     : "no answer from the server in time while connecting");
        return;
    case DB_CONN_READY:
        conn_check_deadlines(c);
        return;
    case DB_CONN_CLOSED:
        return;
    }
}

/* ---- the pool
 * ------------------------------------------------------------------------------------ */

/*
 * database_url, parsed once (libpq's URI and key=value forms alike) into the
 * keyword arrays PQconnectStartParams takes; its host list is kept apart for
 * the name lookups.
 */
static int db_parse_conninfo(struct db_pool *pool, const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err), *o;
    const char *hosts;
    int n = 0, i;

    if (opts == NULL) {
        char line[512];

        db_error_line(err ? err : "out of memory", line, sizeof(line));
        log_error("database_url: %s", line);
        PQfreemem(err);
        return -1;
    }
    for (o = opts; o->keyword != NULL; o++)
        n += o->val != NULL;
    pool->keys = calloc((size_t)n + 2, sizeof(char *));
    pool->vals = calloc((size_t)n + 2, sizeof(char *));
    pool->host_key = pool->hostaddr_key = pool->port_key = -1;
    if (pool->keys == NULL || pool->vals == NULL)
        goto fail;
    for (o = opts, i = 0; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        pool->keys[i] = strdup(o->keyword);
        pool->vals[i] = strdup(o->val);
        if (pool->keys[i] == NULL || pool->vals[i] == NULL)
            goto fail;
        if (strcmp(o->keyword, "host") == 0)
            pool->host_key = i;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            pool->hostaddr_key = i;
        else if (strcmp(o->keyword, "port") == 0)
            pool->port_key = i;
        i++;
    }
    pool->keys[i] = strdup("fallback_application_name");
    pool->vals[i] = strdup("todod");
    if (pool->keys[i] == NULL || pool->vals[i] == NULL)
        goto fail;
    pool->nkeys = i + 1;
    PQconninfoFree(opts);
    opts = NULL;
    /* Names to look up: from database_url or PGHOST, unless hostaddr is given. */
    hosts = pool->host_key >= 0 ? pool->vals[pool->host_key] : getenv("PGHOST");
    if (hosts == NULL || pool->hostaddr_key >= 0)
        return 0;
    for (pool->nhosts = 1, i = 0; hosts[i] != '\0'; i++)
        pool->nhosts += hosts[i] == ',';
    pool->hosts = calloc((size_t)pool->nhosts, sizeof(char *));
    if (pool->hosts == NULL)
        goto fail;
    for (i = 0; i < pool->nhosts; i++) {
        size_t len = strcspn(hosts, ",");

        pool->hosts[i] = strndup(hosts, len);
        if (pool->hosts[i] == NULL)
            goto fail;
        pool->needs_dns |= needs_lookup(pool->hosts[i]);
        hosts += len + (hosts[len] == ',');
    }
    if (pool->needs_dns && pool->host_key < 0) {
        /* The names came from PGHOST: pass them as host, explicitly. */
        pool->keys[pool->nkeys] = strdup("host");
        pool->vals[pool->nkeys] = strdup(getenv("PGHOST"));
        if (pool->keys[pool->nkeys] == NULL || pool->vals[pool->nkeys] == NULL)
            goto fail;
        pool->host_key = pool->nkeys++;
    }
    if (pool->needs_dns && pool->port_key < 0 && getenv("PGPORT") != NULL) {
        pool->keys[pool->nkeys] = strdup("port");
        pool->vals[pool->nkeys] = strdup(getenv("PGPORT"));
        if (pool->keys[pool->nkeys] == NULL || pool->vals[pool->nkeys] == NULL)
            goto fail;
        pool->port_key = pool->nkeys++;
    }
    return 0;
fail:
    if (opts != NULL)
        PQconninfoFree(opts);
    log_error("database_url: out of memory");
    return -1;
}

static int db_conn_init(struct db_pool *pool, struct db_conn *c, enum db_conn_kind kind, int index)
{
    c->pool = pool;
    c->kind = kind;
    c->index = index;
    c->io_fd = -1;
    c->state = DB_CONN_CLOSED;
    TAILQ_INIT(&c->txns);
    c->ev_timer = evtimer_new(pool->base, conn_timer, c);
    c->ev_sync = event_new(pool->base, -1, 0, db_conn_deferred_sync, c);
    c->ev_fail = event_new(pool->base, -1, 0, conn_deferred_fail, c);
    c->dns_reqs = calloc((size_t)pool->nhosts + 1, sizeof(*c->dns_reqs));
    c->dns_addrs = calloc((size_t)pool->nhosts + 1, sizeof(*c->dns_addrs));
    return c->ev_timer && c->ev_sync && c->ev_fail && c->dns_reqs && c->dns_addrs ? 0 : -1;
}

static void db_conn_fini(struct db_conn *c)
{
    struct txn *t;

    db_conn_cancel_dns(c);
    if (c->open != NULL)
        TAILQ_INSERT_TAIL(&c->txns, c->open, link);
    c->open = NULL;
    while ((t = TAILQ_FIRST(&c->txns)) != NULL) {
        struct query *q;

        TAILQ_REMOVE(&c->txns, t, link);
        TAILQ_FOREACH(q, &t->queries, link)
            if (q->state != QUERY_ANSWERED && q->stmt >= 0)
                db_query_answer(q, t->kind != TXN_READS && t->sent ? DB_LOST : DB_UNAVAILABLE, NULL);
        db_txn_free(t);
    }
    if (c->state == DB_CONN_READY)
        slot_db_up(c, -1);
    conn_unwatch(c);
    if (c->ev_timer != NULL)
        event_free(c->ev_timer);
    if (c->ev_sync != NULL)
        event_free(c->ev_sync);
    if (c->ev_fail != NULL)
        event_free(c->ev_fail);
    if (c->pg != NULL)
        PQfinish(c->pg);
    free(c->dns_reqs);
    free(c->dns_addrs);
}

struct db_pool *db_pool_new(struct event_base *base, const struct conf *conf,
                            struct stats_slot *slot, struct tracer *tracer)
{
    struct db_pool *pool = calloc(1, sizeof(*pool));
    long timeout_ms = (long)(conf->request_timeout * 1000);
    int i;

    if (pool == NULL)
        return NULL;
    pool->base = base;
    pool->conf = conf;
    pool->slot = slot;
    pool->tracer = tracer;
    pool->prepared = conf->db_prepared;
    pool->pooled = !conf->db_prepared;
    TAILQ_INIT(&pool->write_queue);
    TAILQ_INIT(&pool->resend_queue);
    TAILQ_INIT(&pool->batch_queue);
    if (db_parse_conninfo(pool, conf->database_url) != 0) {
        /* Connections fail (and say why) until a reload brings a valid one. */
        free(pool->keys);
        free(pool->vals);
        pool->keys = calloc(3, sizeof(char *));
        pool->vals = calloc(3, sizeof(char *));
        if (pool->keys == NULL || pool->vals == NULL)
            goto fail;
        pool->keys[0] = strdup("dbname");
        pool->vals[0] = strdup(conf->database_url);
        pool->nkeys = 1;
        pool->host_key = pool->hostaddr_key = pool->port_key = -1;
    }
    pool->rotate = pool->nhosts > 1 && pool->hostaddr_key < 0;
    pool->attempt_bound = conf->request_timeout;
    for (i = 0; i < pool->nkeys; i++)
        if (strcmp(pool->keys[i], "connect_timeout") == 0 && atoi(pool->vals[i]) > 0)
            pool->attempt_bound = atoi(pool->vals[i]) < 2 ? 2 : atoi(pool->vals[i]);
    if (pool->rotate && pool->attempt_bound > ROTATE_BOUND)
        pool->attempt_bound = fmin(pool->attempt_bound, ROTATE_BOUND);
    if (pool->needs_dns) {
        pool->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (pool->dns == NULL)
            goto fail;
    }
    /*
     * Session settings, then the schema check, as one simple-protocol string.
     * Behind PgBouncer (db_prepared = off) nothing is set for the session:
     * every transaction sets its own statement_timeout.
     */
    if (pool->prepared) {
        if (asprintf(&pool->setup_sql[DB_KIND_READ], "SET statement_timeout = %ld; SELECT %s",
                     timeout_ms, SCHEMA_MISSING) < 0 ||
            asprintf(&pool->setup_sql[DB_KIND_WRITE], "SELECT %s", SCHEMA_MISSING) < 0 ||
            asprintf(&pool->setup_sql[DB_KIND_PERF], "SET statement_timeout = 0; SELECT %s",
                     SCHEMA_MISSING) < 0)
            goto fail;
    } else {
        for (i = 0; i < DB_NKINDS; i++)
            if (asprintf(&pool->setup_sql[i], "SELECT %s", SCHEMA_MISSING) < 0)
                goto fail;
    }
    pool->nreads = conf->db_connections;
    pool->nwrites = conf->db_write_connections;
    pool->reads = calloc((size_t)pool->nreads, sizeof(*pool->reads));
    pool->writes = calloc((size_t)pool->nwrites, sizeof(*pool->writes));
    pool->ev_dispatch = event_new(base, -1, 0, pool_deferred_dispatch, pool);
    pool->ev_queue_timer = evtimer_new(base, pool_queue_timer, pool);
    pool->ev_batches = event_new(base, -1, 0, pool_deferred_batches, pool);
    if (pool->reads == NULL || pool->writes == NULL || pool->ev_dispatch == NULL ||
        pool->ev_queue_timer == NULL || pool->ev_batches == NULL)
        goto fail;
    for (i = 0; i < pool->nreads; i++)
        if (db_conn_init(pool, &pool->reads[i], DB_KIND_READ, i) != 0)
            goto fail;
    for (i = 0; i < pool->nwrites; i++)
        if (db_conn_init(pool, &pool->writes[i], DB_KIND_WRITE, i) != 0)
            goto fail;
    if (db_conn_init(pool, &pool->perf, DB_KIND_PERF, 0) != 0)
        goto fail;
    for (i = 0; i < pool->nreads; i++)
        db_conn_connect(&pool->reads[i]);
    /* One write connection from the start: the first write need not wait for it. */
    if (pool->nwrites > 0)
        db_conn_connect(&pool->writes[0]);
    return pool;
fail:
    db_pool_free(pool);
    return NULL;
}

void db_pool_close(struct db_pool *pool)
{
    struct query *q;
    int i;

    if (pool == NULL || pool->closed)
        return;
    pool->closed = true; /* first: an answer's callback may submit again */
    for (i = 0; pool->reads != NULL && i < pool->nreads; i++)
        if (pool->reads[i].pool != NULL)
            db_conn_fini(&pool->reads[i]);
    for (i = 0; pool->writes != NULL && i < pool->nwrites; i++)
        if (pool->writes[i].pool != NULL)
            db_conn_fini(&pool->writes[i]);
    if (pool->perf.pool != NULL)
        db_conn_fini(&pool->perf);
    TAILQ_CONCAT(&pool->write_queue, &pool->resend_queue, link);
    while ((q = TAILQ_FIRST(&pool->write_queue)) != NULL) {
        TAILQ_REMOVE(&pool->write_queue, q, link);
        db_query_answer(q, DB_UNAVAILABLE, NULL);
        db_query_free(q);
    }
    while ((q = TAILQ_FIRST(&pool->batch_queue)) != NULL) {
        TAILQ_REMOVE(&pool->batch_queue, q, link);
        db_query_answer(q, DB_UNAVAILABLE, NULL);
        db_query_free(q);
    }
    if (pool->ev_dispatch != NULL)
        event_free(pool->ev_dispatch);
    if (pool->ev_queue_timer != NULL)
        event_free(pool->ev_queue_timer);
    if (pool->ev_batches != NULL)
        event_free(pool->ev_batches);
    if (pool->dns != NULL)
        evdns_base_free(pool->dns, 1);
}

void db_pool_free(struct db_pool *pool)
{
    int i;

    if (pool == NULL)
        return;
    db_pool_close(pool);
    for (i = 0; pool->keys != NULL && i < pool->nkeys; i++) {
        free((char *)pool->keys[i]);
        free((char *)pool->vals[i]);
    }
    free(pool->keys);
    free(pool->vals);
    for (i = 0; pool->hosts != NULL && i < pool->nhosts; i++)
        free(pool->hosts[i]);
    free(pool->hosts);
    for (i = 0; i < DB_NKINDS; i++)
        free(pool->setup_sql[i]);
    free(pool->reads);
    free(pool->writes);
    free(pool);
}

int db_pool_ready(const struct db_pool *pool)
{
    int i, n = 0;

    if (pool->closed)
        return 0;

    for (i = 0; i < pool->nreads; i++)
        n += pool->reads[i].state == DB_CONN_READY;
    return n;
}

bool db_pool_started(const struct db_pool *pool)
{
    return db_pool_ready(pool) == pool->nreads;
}

/* Whether any connection is up: otherwise writes are refused at once. */
static bool pool_reachable(const struct db_pool *pool)
{
    int i;

    if (db_pool_ready(pool) > 0 || pool->perf.state == DB_CONN_READY)
        return true;
    for (i = 0; i < pool->nwrites; i++)
        if (pool->writes[i].state == DB_CONN_READY)
            return true;
    return false;
}

static void query_trace(struct db_pool *pool, struct query *q, const struct db_trace *trace)
{
    if (trace != NULL && trace->ctx != NULL)
        q->span = trace_db_start(pool->tracer, trace->ctx, trace->parent, db_operations[q->stmt],
                                 "todos", NULL);
}

int db_submit(struct db_pool *pool, enum db_stmt stmt, const struct db_params *p,
              struct timespec deadline, const struct db_trace *trace, db_done_cb cb, void *arg)
{
    struct query *q;
    struct db_conn *c = NULL;

    if (pool->closed || (db_is_write(stmt) ? !pool_reachable(pool) : (c = db_pick_read(pool)) == NULL))
        return -1;
    q = db_query_new(stmt, deadline, cb, arg);
    if (q == NULL)
        return -1;
    /* Copied: a read may have to run again, a write waits before it is sent. */
    if (db_query_copy_params(q, p) != 0) {
        db_query_free(q);
        return -1;
    }
    query_trace(pool, q, trace);
    if (!db_is_write(stmt)) {
        if (db_read_send(c, q) != 0) {
            db_query_free(q);
            return -1;
        }
        return 0;
    }
    q->state = QUERY_QUEUED;
    q->seq = pool->write_seq++;
    /* $1 of an UPDATE or a DELETE: the row it locks (an INSERT's is new). */
    if ((stmt == DB_TODO_UPDATE || stmt == DB_TODO_DELETE) && q->nparams > 0)
        q->row = q->values[0];
    TAILQ_INSERT_TAIL(&pool->write_queue, q, link);
    /* After this loop turn, so that the writes of one turn commit together. */
    event_active(pool->ev_dispatch, 0, 0);
    return 0;
}

int db_submit_batch(struct db_pool *pool, const struct db_params *p, void *owned,
                    const struct db_trace *trace, db_done_cb cb, void *arg)
{
    struct query *q;
    int i;

    if (pool->closed || !pool_reachable(pool) || p->n > BATCH_PARAMS ||
        (q = db_query_new(DB_PERF_INSERT, clock_now(), cb, arg)) == NULL) {
        free(owned);
        return -1;
    }
    /* The caller's buffer is used as it is: a batch is large, and copying it
     * again would cost what the binary format saves. */
    q->owned = owned;
    q->nparams = p->n;
    q->values = q->param_values;
    q->lengths = q->param_lengths;
    q->formats = q->param_formats;
    for (i = 0; i < p->n; i++) {
        q->param_values[i] = (char *)p->values[i];
        q->param_lengths[i] = p->lengths ? p->lengths[i] : 0;
        q->param_formats[i] = p->formats ? p->formats[i] : 0;
    }
    query_trace(pool, q, trace);
    q->state = QUERY_QUEUED;
    TAILQ_INSERT_TAIL(&pool->batch_queue, q, link);
    event_active(pool->ev_batches, 0, 0);
    return 0;
}
