#include "db.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "clock.h"
#include "conf.h"
#include "log.h"
#include "stats.h"

/*
 * Schema, run once per new connection as one simple-protocol string. The
 * advisory lock serialises workers (and hosts) that start at the same time.
 * The todos table and its two indexes are the replaced service's, unchanged.
 * todod adds: an index on (created_at, id) so that "newest first" pages have a
 * stable order without sorting ties, and a row count kept by statement-level
 * triggers in 64 slots (one per backend pid modulo 64) so that inserts from
 * different connections do not queue behind one counter row, while
 * sum(n) stays exact in every snapshot.
 */
static const char schema_sql[] =
    "SET client_min_messages = warning;"
    "BEGIN;"
    "SELECT pg_advisory_xact_lock(2036106852);" /* "todo" */
    "CREATE TABLE IF NOT EXISTS todos ("
    "  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    "  title varchar(255) NOT NULL,"
    "  done boolean NOT NULL DEFAULT false,"
    "  created_at timestamptz DEFAULT now(),"
    "  updated_at timestamptz DEFAULT now());"
    "CREATE INDEX IF NOT EXISTS idx_todos_done ON todos (done);"
    "CREATE INDEX IF NOT EXISTS idx_todos_created_at ON todos (created_at);"
    "CREATE INDEX IF NOT EXISTS todod_todos_created_at_id ON todos (created_at, id);"
    "CREATE TABLE IF NOT EXISTS todod_todo_count (slot int PRIMARY KEY, n bigint NOT NULL);"
    "CREATE OR REPLACE FUNCTION todod_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN"
    "  INSERT INTO todod_todo_count AS c (slot, n)"
    "   SELECT pg_backend_pid() % 64, count(*) FROM todod_new"
    "   ON CONFLICT (slot) DO UPDATE SET n = c.n + excluded.n;"
    "  RETURN NULL;"
    " END $$;"
    "CREATE OR REPLACE FUNCTION todod_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN"
    "  INSERT INTO todod_todo_count AS c (slot, n)"
    "   SELECT pg_backend_pid() % 64, -count(*) FROM todod_old"
    "   ON CONFLICT (slot) DO UPDATE SET n = c.n + excluded.n;"
    "  RETURN NULL;"
    " END $$;"
    "CREATE OR REPLACE FUNCTION todod_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN DELETE FROM todod_todo_count; RETURN NULL; END $$;"
    "DO $$ BEGIN"
    " IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'todos'::regclass"
    "                AND tgname = 'todod_count_insert') THEN"
    "  LOCK TABLE todos IN SHARE ROW EXCLUSIVE MODE;"
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
    " END IF;"
    "END $$;"
    "COMMIT;";

#define TODO_COLUMNS                                                                               \
    "id, title, done,"                                                                             \
    " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"                \
    " to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

static const struct {
    const char *name;
    const char *sql;
} statements[DB_NSTMTS] = {
    [DB_TODO_GET] = {"todo_get", "SELECT " TODO_COLUMNS " FROM todos WHERE id = $1"},
    [DB_TODO_INSERT] = {"todo_insert", "INSERT INTO todos (id, title, done) VALUES ($1, $2, $3)"
                                       " RETURNING " TODO_COLUMNS},
    [DB_TODO_UPDATE] = {"todo_update",
                        "UPDATE todos SET title = coalesce($2, title), done = coalesce($3, done),"
                        " updated_at = now() WHERE id = $1 RETURNING " TODO_COLUMNS},
    [DB_TODO_DELETE] = {"todo_delete", "DELETE FROM todos WHERE id = $1"},
    /* One row per todo of the page, each carrying the total; a single row of
     * NULL todo columns when the page is empty. */
    [DB_TODO_LIST] = {"todo_list",
                      "SELECT " TODO_COLUMNS ", c.total FROM"
                      " (SELECT coalesce(sum(n), 0)::bigint AS total FROM todod_todo_count) c"
                      " LEFT JOIN LATERAL (SELECT * FROM todos ORDER BY created_at DESC, id DESC"
                      " LIMIT $1 OFFSET $2) t ON true"},
    [DB_TODO_BY_DONE] = {"todo_by_done", "SELECT " TODO_COLUMNS " FROM todos WHERE done = $1"
                                         " ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"},
    [DB_PERF_INSERT] = {"perf_insert",
                        "INSERT INTO todos (id, title, done)"
                        " SELECT * FROM unnest($1::uuid[], $2::varchar[], $3::bool[])"},
};

enum conn_state {
    CONN_DOWN,       /* waiting for the reconnect timer */
    CONN_CONNECTING, /* PQconnectPoll in progress */
    CONN_SCHEMA,     /* schema_sql sent */
    CONN_PREPARING,  /* pipeline mode, statements being prepared */
    CONN_READY,
};

/* Sent queries are queued in order; a sync marker closes each group. */
struct db_query {
    TAILQ_ENTRY(db_query) entry;
    struct db_conn *conn;
    bool is_sync;
    bool done; /* its results have all arrived */
    enum db_stmt stmt;
    unsigned flags;
    db_done_cb cb; /* NULL once answered early (timeout) */
    void *arg;
    struct timespec deadline;
    PGresult *res; /* held until the group's sync confirms the commit */
    /* A copy of the parameters, to resend the query alone if its group fails. */
    int nparams;
    char **values;
    int *lengths;
    int *formats;
};

TAILQ_HEAD(query_list, db_query);

struct db_conn {
    struct db_pool *pool;
    int index;
    enum conn_state state;
    PGconn *pg;
    int fd;
    struct event *ev_io; /* the socket: read always, write while output is pending */
    short io_what;
    struct event *ev_timer;  /* reconnect back-off, or the next query deadline */
    struct event *ev_sync;   /* deferred: closes the current group */
    struct event *ev_fail;   /* deferred: handles a send failure outside callbacks */
    struct query_list queue; /* sent, waiting for results */
    struct query_list done;  /* answered, waiting for their group's sync */
    int in_flight;           /* queries sent and not yet delivered */
    int unsynced;            /* queries sent since the last sync */
    int setup_pending;       /* prepares not yet answered */
    bool setup_failed;
    bool ever_ready;
    double backoff; /* seconds before the next connection attempt */
};

struct db_pool {
    struct event_base *base;
    char *conninfo;
    char *setup_sql; /* schema_sql, then the session settings */
    double request_timeout;
    struct stats_slot *slot;
    int nconns;
    struct db_conn *conns;
};

#define SQLSTATE_QUERY_CANCELED "57014"
#define GROUP_MAX               256 /* queries per sync group */
#define BACKOFF_MIN             0.05
#define BACKOFF_MAX             5.0

static void conn_connect(struct db_conn *c);
static void conn_lost(struct db_conn *c, const char *why);
static void conn_io(evutil_socket_t fd, short what, void *arg);
static int conn_send(struct db_conn *c, struct db_query *q, const struct db_params *p);

static void error_message_line(const char *msg, char *out, size_t n)
{
    snprintf(out, n, "%s", msg ? msg : "");
    out[strcspn(out, "\n")] = '\0';
}

/* ---- event watching ---- */

static void conn_watch(struct db_conn *c, short what)
{
    int fd = PQsocket(c->pg);

    what |= EV_PERSIST;
    if (fd < 0)
        return;
    if (c->ev_io != NULL && fd == c->fd && what == c->io_what)
        return;
    if (c->ev_io != NULL)
        event_free(c->ev_io);
    c->fd = fd;
    c->io_what = what;
    c->ev_io = event_new(c->pool->base, fd, what, conn_io, c);
    event_add(c->ev_io, NULL);
}

/* Push buffered output; watch for writability while some remains. */
static int conn_flush(struct db_conn *c)
{
    int rc = PQflush(c->pg);

    if (rc < 0)
        return -1;
    conn_watch(c, rc == 1 ? EV_READ | EV_WRITE : EV_READ);
    return 0;
}

/* ---- queries ---- */

static void query_free(struct db_query *q)
{
    if (q->res != NULL)
        PQclear(q->res);
    free(q->values);
    free(q);
}

/* Copies the parameters into one allocation owned by q. */
static int query_copy_params(struct db_query *q, const struct db_params *p)
{
    size_t total = 0;
    char *data;
    int i;

    q->nparams = p->n;
    if (p->n <= 0)
        return 0;
    for (i = 0; i < p->n; i++)
        total += p->values[i]
                     ? (p->lengths && p->formats && p->formats[i] ? (size_t)p->lengths[i]
                                                                  : strlen(p->values[i]) + 1)
                     : 0;
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

static void conn_arm_deadline(struct db_conn *c)
{
    struct db_query *q;
    struct timespec now = clock_now();

    TAILQ_FOREACH(q, &c->queue, entry)
    {
        if (!q->is_sync && q->cb != NULL && !(q->flags & DB_NO_TIMEOUT)) {
            double left = clock_diff(q->deadline, now);
            struct timeval tv = clock_timeval(left);

            evtimer_add(c->ev_timer, &tv);
            return;
        }
    }
    evtimer_del(c->ev_timer);
}

static void conn_sync(struct db_conn *c)
{
    struct db_query *m;

    if (c->unsynced == 0)
        return;
    m = calloc(1, sizeof(*m));
    if (m == NULL || PQpipelineSync(c->pg) != 1) {
        free(m);
        event_active(c->ev_fail, 0, 0); /* handled outside the caller's stack */
        return;
    }
    m->is_sync = true;
    m->conn = c;
    TAILQ_INSERT_TAIL(&c->queue, m, entry);
    c->unsynced = 0;
}

static void conn_deferred_sync(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;

    if (c->state != CONN_READY)
        return;
    conn_sync(c);
    if (conn_flush(c) < 0)
        conn_lost(c, "write failed");
}

static void conn_deferred_fail(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;

    if (c->state != CONN_DOWN)
        conn_lost(c, PQerrorMessage(c->pg));
}

/* Send q on c (in pipeline mode) with parameters p, and queue it. */
static int conn_send(struct db_conn *c, struct db_query *q, const struct db_params *p)
{
    if (q->flags & DB_ALONE)
        conn_sync(c); /* close the open group first: this one commits alone */
    if (PQsendQueryPrepared(c->pg, statements[q->stmt].name, p->n, p->values, p->lengths,
                            p->formats, 0) != 1)
        return -1;
    q->conn = c;
    TAILQ_INSERT_TAIL(&c->queue, q, entry);
    c->in_flight++;
    c->unsynced++;
    if ((q->flags & DB_ALONE) || c->unsynced >= GROUP_MAX)
        conn_sync(c);
    else if (c->unsynced == 1)
        event_active(c->ev_sync, 0, 0); /* the group closes after this loop turn */
    if (!evtimer_pending(c->ev_timer, NULL))
        conn_arm_deadline(c);
    return 0;
}

static int conn_resend(struct db_conn *c, struct db_query *q)
{
    struct db_params p = {q->nparams, (const char *const *)q->values, q->lengths, q->formats};

    return conn_send(c, q, &p);
}

static struct db_conn *pool_pick(struct db_pool *pool)
{
    struct db_conn *best = NULL;
    int i;

    for (i = 0; i < pool->nconns; i++) {
        struct db_conn *c = &pool->conns[i];

        if (c->state == CONN_READY && (best == NULL || c->in_flight < best->in_flight))
            best = c;
    }
    return best;
}

struct db_query *db_submit(struct db_pool *pool, enum db_stmt stmt, const struct db_params *p,
                           unsigned flags, db_done_cb cb, void *arg)
{
    struct db_conn *c = pool_pick(pool);
    struct db_query *q;

    if (c == NULL)
        return NULL;
    q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->stmt = stmt;
    q->flags = flags;
    q->cb = cb;
    q->arg = arg;
    q->deadline = clock_add(clock_now(), pool->request_timeout);
    /* A grouped query keeps its parameters to be resent alone if its group
     * fails; one that runs alone is never resent, so libpq's copy suffices. */
    if (!(flags & DB_ALONE) && query_copy_params(q, p) < 0) {
        free(q);
        return NULL;
    }
    if (conn_send(c, q, p) < 0) {
        /* The connection is broken: handle that outside the caller's stack.
         * The caller treats NULL like "no connection" and answers 503. */
        query_free(q);
        event_active(c->ev_fail, 0, 0);
        return NULL;
    }
    if (conn_flush(c) < 0)
        event_active(c->ev_fail, 0, 0);
    return q;
}

static void query_deliver(struct db_query *q, enum db_status st)
{
    struct db_pool *pool = q->conn->pool;
    db_done_cb cb = q->cb;

    if (st == DB_FAILED) {
        const char *state = q->res ? PQresultErrorField(q->res, PG_DIAG_SQLSTATE) : NULL;
        char line[512];

        error_message_line(q->res ? PQresultErrorMessage(q->res) : "", line, sizeof(line));
        atomic_fetch_add_explicit(&pool->slot->c.db_errors, 1, memory_order_relaxed);
        log_warn("query %s failed: %s", statements[q->stmt].name, line);
        /* statement_timeout (= request_timeout) may fire before our own timer. */
        if (state != NULL && strcmp(state, SQLSTATE_QUERY_CANCELED) == 0)
            st = DB_TIMEOUT;
    }
    q->cb = NULL;
    if (cb != NULL)
        cb(q->arg, st, st == DB_OK || st == DB_FAILED ? q->res : NULL);
}

static bool result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);

    return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

/*
 * A sync arrived: the queries answered before it are committed (or all rolled
 * back). Deliver them; when a group of several failed, resend each one alone so
 * one bad query cannot fail its neighbours.
 */
static void conn_finish_group(struct db_conn *c)
{
    struct query_list group = TAILQ_HEAD_INITIALIZER(group);
    struct db_query *q;
    bool failed = false;
    int n = 0;

    TAILQ_CONCAT(&group, &c->done, entry);
    TAILQ_FOREACH(q, &group, entry)
    {
        n++;
        if (q->res == NULL || !result_ok(q->res))
            failed = true;
    }
    while ((q = TAILQ_FIRST(&group)) != NULL) {
        TAILQ_REMOVE(&group, q, entry);
        c->in_flight--;
        if (!failed || n == 1 || q->cb == NULL) {
            query_deliver(q, q->res != NULL && result_ok(q->res) ? DB_OK : DB_FAILED);
            query_free(q);
            continue;
        }
        PQclear(q->res);
        q->res = NULL;
        q->done = false;
        q->flags |= DB_ALONE;
        if (c->state != CONN_READY || conn_resend(c, q) < 0) {
            query_deliver(q, DB_UNAVAILABLE);
            query_free(q);
            event_active(c->ev_fail, 0, 0);
        }
    }
}

/* Read every complete result; returns -1 when the connection broke. */
static int conn_read_results(struct db_conn *c)
{
    int nulls_at_sync = 0;

    if (!PQconsumeInput(c->pg))
        return -1;
    for (;;) {
        struct db_query *head = TAILQ_FIRST(&c->queue);
        PGresult *res;

        if (head == NULL || c->state != CONN_READY || PQisBusy(c->pg))
            break;
        res = PQgetResult(c->pg);
        if (head->is_sync) {
            if (res == NULL) {
                if (++nulls_at_sync > 1)
                    break;
                continue;
            }
            nulls_at_sync = 0;
            if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
                PQclear(res);
                return -1;
            }
            PQclear(res);
            TAILQ_REMOVE(&c->queue, head, entry);
            free(head);
            conn_finish_group(c);
            continue;
        }
        if (res != NULL) {
            /* Keep the first result (an error wins over "aborted"). */
            if (head->res == NULL)
                head->res = res;
            else
                PQclear(res);
            head->done = true;
            continue;
        }
        if (!head->done)
            break;
        TAILQ_REMOVE(&c->queue, head, entry);
        TAILQ_INSERT_TAIL(&c->done, head, entry);
    }
    return 0;
}

/* ---- connection set-up ---- */

static void slot_db_up(struct db_conn *c, int delta)
{
    atomic_fetch_add_explicit(&c->pool->slot->db_up, delta, memory_order_relaxed);
}

static void conn_schedule_reconnect(struct db_conn *c)
{
    struct timeval tv = clock_timeval(c->backoff);

    c->state = CONN_DOWN;
    evtimer_add(c->ev_timer, &tv);
    c->backoff = c->backoff < BACKOFF_MIN ? BACKOFF_MIN : fmin(c->backoff * 2, BACKOFF_MAX);
}

static void conn_lost(struct db_conn *c, const char *why)
{
    struct db_query *q;
    char line[512];

    error_message_line(why, line, sizeof(line));
    if (c->state == CONN_READY) {
        slot_db_up(c, -1);
        log_warn("database connection %d lost: %s", c->index, line);
        atomic_fetch_add_explicit(&c->pool->slot->c.db_errors, 1, memory_order_relaxed);
    } else {
        log_warn("database connection %d failed: %s", c->index, line);
    }
    TAILQ_CONCAT(&c->done, &c->queue, entry);
    while ((q = TAILQ_FIRST(&c->done)) != NULL) {
        TAILQ_REMOVE(&c->done, q, entry);
        if (!q->is_sync)
            query_deliver(q, DB_UNAVAILABLE);
        query_free(q);
    }
    c->in_flight = c->unsynced = 0;
    if (c->ev_io != NULL) {
        event_free(c->ev_io);
        c->ev_io = NULL;
    }
    evtimer_del(c->ev_timer);
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    conn_schedule_reconnect(c);
}

static void conn_prepare(struct db_conn *c)
{
    int i;

    if (PQenterPipelineMode(c->pg) != 1)
        goto fail;
    for (i = 0; i < DB_NSTMTS; i++)
        if (PQsendPrepare(c->pg, statements[i].name, statements[i].sql, 0, NULL) != 1)
            goto fail;
    if (PQpipelineSync(c->pg) != 1)
        goto fail;
    c->setup_pending = DB_NSTMTS;
    c->setup_failed = false;
    c->state = CONN_PREPARING;
    if (conn_flush(c) < 0)
        goto fail;
    return;
fail:
    conn_lost(c, PQerrorMessage(c->pg));
}

static void conn_ready(struct db_conn *c)
{
    c->state = CONN_READY;
    c->backoff = 0;
    slot_db_up(c, 1);
    if (c->ever_ready) {
        atomic_fetch_add_explicit(&c->pool->slot->c.db_reconnects, 1, memory_order_relaxed);
        log_info("database connection %d re-established", c->index);
    } else {
        log_info("database connection %d ready", c->index);
    }
    c->ever_ready = true;
}

/* Results of the schema string (simple protocol) or of the prepares (pipeline). */
static int conn_read_setup(struct db_conn *c)
{
    PGresult *res;

    if (!PQconsumeInput(c->pg))
        return -1;
    while (!PQisBusy(c->pg)) {
        res = PQgetResult(c->pg);
        if (c->state == CONN_SCHEMA) {
            if (res == NULL) {
                if (c->setup_failed)
                    return -1;
                conn_prepare(c);
                return 0;
            }
            if (!result_ok(res)) {
                char line[512];

                error_message_line(PQresultErrorMessage(res), line, sizeof(line));
                log_error("creating the schema failed: %s", line);
                c->setup_failed = true;
            }
            PQclear(res);
            continue;
        }
        /* CONN_PREPARING: one result and a NULL per statement, then the sync. */
        if (res == NULL)
            continue;
        if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            if (c->setup_failed || c->setup_pending != 0)
                return -1;
            conn_ready(c);
            return 0;
        }
        if (!result_ok(res)) {
            char line[512];

            error_message_line(PQresultErrorMessage(res), line, sizeof(line));
            log_error("preparing statements failed: %s", line);
            c->setup_failed = true;
        }
        c->setup_pending--;
        PQclear(res);
    }
    return 0;
}

static void conn_poll_connect(struct db_conn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        conn_watch(c, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        conn_watch(c, EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    /* Connected: create the schema, then prepare the statements. */
    evtimer_del(c->ev_timer);
    if (PQsetnonblocking(c->pg, 1) != 0 || PQsendQuery(c->pg, c->pool->setup_sql) != 1) {
        conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    c->state = CONN_SCHEMA;
    c->setup_failed = false;
    if (conn_flush(c) < 0)
        conn_lost(c, PQerrorMessage(c->pg));
}

static void conn_io(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;

    if (c->state == CONN_CONNECTING) {
        conn_poll_connect(c);
        return;
    }
    if ((what & EV_WRITE) && conn_flush(c) < 0)
        goto lost;
    if (!(what & EV_READ))
        return;
    if (c->state == CONN_READY) {
        if (conn_read_results(c) < 0)
            goto lost;
        if (c->state == CONN_READY && conn_flush(c) < 0)
            goto lost;
    } else if (conn_read_setup(c) < 0) {
        goto lost;
    }
    return;
lost:
    conn_lost(c, PQerrorMessage(c->pg));
}

static void conn_connect(struct db_conn *c)
{
    static const char *const keys[] = {"dbname", "fallback_application_name", NULL};
    const char *values[] = {c->pool->conninfo, "todod", NULL};
    struct timeval tv;

    c->pg = PQconnectStartParams(keys, values, 1);
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_lost(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
        return;
    }
    c->state = CONN_CONNECTING;
    c->fd = -1;
    conn_watch(c, EV_WRITE);
    /* libpq's connect_timeout only applies to blocking connects: a server that
     * never answers gets request_timeout. (Creating the schema is not bounded:
     * a first start may build an index on a large existing table.) */
    tv = clock_timeval(c->pool->request_timeout);
    evtimer_add(c->ev_timer, &tv);
}

/* The timer: the reconnect back-off while down, the bound on connecting, the
 * query deadlines once ready. */
static void conn_timer(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;
    struct timespec now = clock_now();
    struct db_query *q;

    if (c->state == CONN_DOWN) {
        conn_connect(c);
        return;
    }
    if (c->state == CONN_CONNECTING) {
        conn_lost(c, "no answer from the server within request_timeout while connecting");
        return;
    }
    if (c->state != CONN_READY)
        return;
    TAILQ_FOREACH(q, &c->queue, entry)
    {
        if (q->is_sync || q->cb == NULL || (q->flags & DB_NO_TIMEOUT))
            continue;
        if (clock_diff(q->deadline, now) > 0)
            break;
        /* Answer now; the result, when it comes, is dropped. */
        query_deliver(q, DB_TIMEOUT);
    }
    conn_arm_deadline(c);
}

/* ---- pool ---- */

struct db_pool *db_pool_new(struct event_base *base, const struct conf *conf,
                            struct stats_slot *slot)
{
    const char *conninfo = conf->database_url;
    int nconns = conf->db_connections;
    double request_timeout = conf->request_timeout;
    struct db_pool *pool = calloc(1, sizeof(*pool));
    int i;

    if (pool == NULL)
        return NULL;
    pool->base = base;
    pool->conninfo = strdup(conninfo);
    /* The server gives up on a statement when todod does: a query stuck on a
     * lock must not hold the pipeline for longer than request_timeout. */
    if (asprintf(&pool->setup_sql, "%sSET statement_timeout = %ld;", schema_sql,
                 (long)(request_timeout * 1000)) < 0)
        pool->setup_sql = NULL;
    pool->request_timeout = request_timeout;
    pool->slot = slot;
    pool->nconns = nconns;
    pool->conns = calloc(nconns, sizeof(*pool->conns));
    if (pool->conninfo == NULL || pool->setup_sql == NULL || pool->conns == NULL) {
        free(pool->setup_sql);
        free(pool->conninfo);
        free(pool->conns);
        free(pool);
        return NULL;
    }
    for (i = 0; i < nconns; i++) {
        struct db_conn *c = &pool->conns[i];

        c->pool = pool;
        c->index = i;
        c->fd = -1;
        TAILQ_INIT(&c->queue);
        TAILQ_INIT(&c->done);
        c->ev_timer = evtimer_new(base, conn_timer, c);
        c->ev_sync = event_new(base, -1, 0, conn_deferred_sync, c);
        c->ev_fail = event_new(base, -1, 0, conn_deferred_fail, c);
        conn_connect(c);
    }
    return pool;
}

void db_pool_free(struct db_pool *pool)
{
    int i;

    if (pool == NULL)
        return;
    for (i = 0; i < pool->nconns; i++) {
        struct db_conn *c = &pool->conns[i];
        struct db_query *q;

        TAILQ_CONCAT(&c->done, &c->queue, entry);
        while ((q = TAILQ_FIRST(&c->done)) != NULL) {
            TAILQ_REMOVE(&c->done, q, entry);
            query_free(q);
        }
        if (c->state == CONN_READY)
            slot_db_up(c, -1);
        if (c->ev_io != NULL)
            event_free(c->ev_io);
        event_free(c->ev_timer);
        event_free(c->ev_sync);
        event_free(c->ev_fail);
        if (c->pg != NULL)
            PQfinish(c->pg);
    }
    free(pool->conns);
    free(pool->setup_sql);
    free(pool->conninfo);
    free(pool);
}

int db_pool_ready(const struct db_pool *pool)
{
    int i, n = 0;

    for (i = 0; i < pool->nconns; i++)
        n += pool->conns[i].state == CONN_READY;
    return n;
}

bool db_pool_started(const struct db_pool *pool)
{
    return db_pool_ready(pool) == pool->nconns;
}
