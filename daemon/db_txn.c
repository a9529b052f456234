/*
 * Queries and transactions on one connection: a query's life and its one
 * answer, sending (a transaction is closed by its Sync), reads joining the
 * connection's open transaction, reading results in pipeline order, and a
 * transaction's verdict, which answers its writes and sends again what the
 * server rolled back because of a neighbour.
 */
#include "db_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "conf.h"
#include "db_span.h"
#include "log.h"
#include "pgbin.h"
#include "sqlstate.h"
#include "stats.h"

#define RESEND_DELAY          0.05 /* a write rolled back by a deadlock: sent again after */
#define RECHECK_EVERY         1.0  /* seconds between two re-checks of the schema */
#define READ_TIMEOUT_MS(pool) ((long)((pool)->conf->request_timeout * 1000))

void db_error_line(const char *msg, char *out, size_t n)
{
    snprintf(out, n, "%s", msg ? msg : "");
    out[strcspn(out, "\n")] = '\0';
}

/* ---- queries ---------------------------------------------------------------- */

void db_query_free(struct query *q)
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
int db_query_copy_params(struct query *q, const struct db_params *p)
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

struct query *db_query_new(int stmt, struct timespec deadline, db_done_cb cb, void *arg)
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
void db_query_answer(struct query *q, enum db_status st, const PGresult *res)
{
    bool standby = q->pool != NULL && q->pool->parent != NULL;
    struct db_result r = {st, res, clock_since(q->submitted), st == DB_OK ? q->lsn : 0, standby};
    db_done_cb cb = q->cb;

    /* A standby's read that failed, or that is older than asked: the primary's
     * answer is the one given, if it can still come in time. */
    if (standby && cb != NULL && (st != DB_OK || q->lsn < q->after || q->promoted)) {
        if (db_standby_fallback(q, st))
            return;
        if (st == DB_OK) { /* never older than asked */
            st = r.status = DB_UNAVAILABLE;
            r.res = NULL;
            r.lsn = 0;
        }
    }
    if (st == DB_OK && q->pool != NULL)
        db_count(&q->pool->slot->c.db_reads[standby]);

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
void db_result_error(const PGresult *res, char *out, size_t n)
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

/* ---- sending ---------------------------------------------------------------------- */

struct txn *db_txn_new(enum txn_kind kind)
{
    struct txn *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->kind = kind;
    TAILQ_INIT(&t->queries);
    TAILQ_INIT(&t->waiting);
    return t;
}

/*
 * After write transaction w's Sync, in the same pipeline: DB_WAL_LSN, its own
 * transaction, which the server runs once w's commit is in. Its position is
 * then past the commit record, with no round trip of its own. Returns -1
 * when it could not be given to libpq (the connection is broken); without
 * memory, w's writes are answered without a position.
 */
int db_txn_follow_lsn(struct db_conn *c, struct txn *w)
{
    struct txn *t = db_txn_new(TXN_LSN);
    struct query *q = db_query_new(DB_WAL_LSN, w->hard_deadline, NULL, NULL);

    if (t == NULL || q == NULL) {
        free(t);
        free(q);
        return 0;
    }
    t->timeout = w->timeout;
    /* Pooled, it goes after w's verdict, maybe at w's deadline: a moment more. */
    t->hard_deadline = clock_add(clock_now(), HARD_GRACE);
    if (clock_diff(w->hard_deadline, t->hard_deadline) > 0)
        t->hard_deadline = w->hard_deadline;
    if (db_send_copied(c, t, q) != 0) {
        db_query_free(q);
        db_txn_free(t);
        return -1;
    }
    if (db_txn_close(c, t) != 0) {
        /* Its query is in t: taken out of the count with the connection. */
        TAILQ_INSERT_TAIL(&c->txns, t, link);
        return -1;
    }
    w->lsn = t;
    return 0;
}

/* The writes committed that waited for TXN_LSN t's position are answered. */
void db_txn_answer_waiting(struct txn *t, uint64_t lsn)
{
    struct query *q;

    while ((q = TAILQ_FIRST(&t->waiting)) != NULL) {
        TAILQ_REMOVE(&t->waiting, q, link);
        q->lsn = lsn;
        db_query_answer(q, DB_OK, q->res);
        db_query_free(q);
    }
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

int db_send_copied(struct db_conn *c, struct txn *t, struct query *q)
{
    return send_query(c, t, q, q->nparams, (const char *const *)q->values, q->lengths, q->formats);
}

/* set_config('statement_timeout', ms, true): first statement of a transaction. */
int db_send_timeout_prefix(struct db_conn *c, struct txn *t, long ms)
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
int db_txn_close(struct db_conn *c, struct txn *t)
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

/* ---- reads ---------------------------------------------------------------------- */

/* The ready read connection with the least work; none that waits to re-check
 * the schema. */
struct db_conn *db_pick_read(struct db_pool *pool)
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

void db_conn_deferred_sync(evutil_socket_t fd, short what, void *arg)
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
int db_read_send(struct db_conn *c, struct query *q)
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

/* ---- results --------------------------------------------------------------------------- */

bool db_result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);

    return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

void db_txn_free(struct txn *t)
{
    struct query *q;

    while ((q = TAILQ_FIRST(&t->queries)) != NULL) {
        TAILQ_REMOVE(&t->queries, q, link);
        db_query_free(q);
    }
    while ((q = TAILQ_FIRST(&t->waiting)) != NULL) {
        TAILQ_REMOVE(&t->waiting, q, link);
        db_query_free(q);
    }
    free(t->rows);
    free(t);
}

/* DB_LSN_COLUMN of a result's first row; 0 when it has none. */
static uint64_t result_lsn(const PGresult *res)
{
    int col = PQfnumber(res, DB_LSN_COLUMN);
    const char *v;

    if (col < 0 || PQntuples(res) < 1 || PQgetisnull(res, 0, col) || PQgetlength(res, 0, col) != 8)
        return 0;
    v = PQgetvalue(res, 0, col);
    return (uint64_t)pgbin_int64(v);
}

/* DB_RECOVERY_COLUMN of a result's first row: true when it has none. */
static bool result_recovery(const PGresult *res)
{
    int col = PQfnumber(res, DB_RECOVERY_COLUMN);

    return col < 0 || PQntuples(res) < 1 || PQgetisnull(res, 0, col) ||
           PQgetlength(res, 0, col) != 1 || *PQgetvalue(res, 0, col) != 0;
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
        q->lsn = result_lsn(q->res);
        q->promoted = c->pool->parent != NULL && !result_recovery(q->res);
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

    if (t->kind == TXN_LSN) {
        q = TAILQ_FIRST(&t->queries);
        if (q != NULL && q->res != NULL && !db_result_ok(q->res))
            log_failure(pool, q, q->res);
        db_txn_answer_waiting(
            t, q != NULL && q->res != NULL && db_result_ok(q->res) ? result_lsn(q->res) : 0);
        db_txn_free(t);
        /* The write connection is free now. */
        if (!TAILQ_EMPTY(&pool->write_queue))
            event_active(pool->ev_dispatch, 0, 0);
        return;
    }
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
    /* Pooled, nothing goes past a Sync before its ReadyForQuery: the position
     * is read now, one round trip (the connection is idle: one transaction at
     * a time). Should that fail, the writes are answered without it. */
    if (t->kind == TXN_WRITES && pool->pooled && failed == NULL && !aborted &&
        c->state == DB_CONN_READY && TAILQ_EMPTY(&c->txns) && db_txn_follow_lsn(c, t) == 0 &&
        t->lsn != NULL && db_conn_flush(c) >= 0)
        db_conn_arm_timer(c);
    while ((q = TAILQ_FIRST(&t->queries)) != NULL) {
        TAILQ_REMOVE(&t->queries, q, link);
        if (q->state != QUERY_HELD) {
            db_query_free(q);
            continue;
        }
        if (failed == NULL && !aborted && t->lsn != NULL) {
            /* Committed: answered with the position TXN_LSN reads next. */
            q->txn = t->lsn;
            TAILQ_INSERT_TAIL(&t->lsn->waiting, q, link);
        } else if (failed == NULL && !aborted) { /* aborted: rolled back, by whatever failed */
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
void db_pool_say_pooler(struct db_pool *pool, const char *state, const char *message)
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
int db_conn_read_results(struct db_conn *c)
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
            c->progress = c->heard = clock_now();
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
