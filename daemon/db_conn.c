/*
 * A PostgreSQL connection's state machine (enum db_conn_state in db_int.h):
 * CLOSED or DOWN, RESOLVING (db_conninfo.c), CONNECTING, CHECKING and CREATING
 * the schema, PREPARING, READY; what moves it from one to the next: the socket
 * (conn_io), its one timer (reconnect back-off, the bound on connecting,
 * deadlines, idle close), and losing it (conn_lost_at), which marks it down
 * before anyone waiting on it is answered.
 */
#include "db_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "stats.h"

#define BACKOFF_MIN 0.05 /* reconnect: 0, then 50 ms doubling */
#define BACKOFF_MAX 0.5
#define IDLE_CLOSE  30.0 /* an on-demand connection unused this long closes */

static void conn_io(evutil_socket_t fd, short what, void *arg);

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
int db_conn_flush(struct db_conn *c)
{
    int rc = PQflush(c->pg);

    if (rc < 0)
        return -1;
    conn_watch(c, rc == 1 ? EV_READ | EV_WRITE : EV_READ, false);
    return 0;
}

/* A send failed: libpq's connection is broken. Handle it outside the caller. */
void db_conn_defer_failure(struct db_conn *c)
{
    event_active(c->ev_fail, 0, 0);
}

/* Why libpq gave up on c: what todod found (c->why), else libpq's message,
 * else what was being done. */
const char *db_conn_why(struct db_conn *c, const char *doing)
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

/* todod_db_up counts the read connections that are up: what /health reports. */
static void slot_db_up(struct db_conn *c, int delta)
{
    if (c->kind == DB_KIND_READ && c->pool->parent == NULL) /* a standby's are not */
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
void db_conn_arm_timer(struct db_conn *c)
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
        if (t->kind == TXN_WRITES || t->kind == TXN_LSN)
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

/* Whether the server c is connected to sent something on another connection
 * since c's statement could have started (c->progress). */
static bool server_heard_since(const struct db_conn *c)
{
    const struct db_pool *pool = c->pool;
    const struct db_conn *all[DB_NKINDS] = {pool->reads, pool->writes, &pool->perf};
    int counts[DB_NKINDS] = {pool->nreads, pool->nwrites, 1};
    const char *host = PQhost(c->pg), *port = PQport(c->pg);

    for (int k = 0; k < DB_NKINDS; k++) {
        for (int i = 0; i < counts[k]; i++) {
            const struct db_conn *o = &all[k][i];

            if (o == c || o->pg == NULL || o->state < DB_CONN_CHECKING ||
                clock_diff(o->heard, c->progress) <= 0)
                continue;
            if (host != NULL && port != NULL && PQhost(o->pg) != NULL && PQport(o->pg) != NULL &&
                strcmp(host, PQhost(o->pg)) == 0 && strcmp(port, PQport(o->pg)) == 0)
                return true;
        }
    }
    return false;
}

/*
 * c owes a verdict the server has not given in time. Silent on every
 * connection, the server is hung. But if it sent something on another
 * connection since c's statement could have started, it is running: it was
 * stopped a while and went on, so c's statement started late and its
 * statement_timeout ends later than c's deadline. Then c alone is dropped,
 * and the writes on the other connections get the server's own verdicts.
 */
static void conn_overdue(struct db_conn *c)
{
    if (!server_heard_since(c)) {
        pool_server_hung(c->pool, c);
        return;
    }
    db_conn_lost(c, "no answer on this connection within request_timeout, although the server "
                    "answers on another: dropping this one");
}

static void conn_check_deadlines(struct db_conn *c)
{
    struct timespec now = clock_now(), at;
    struct txn *t;
    struct query *q, *next;

    if (conn_owed_by(c, &at) && clock_diff(at, now) <= 0) {
        conn_overdue(c);
        return;
    }
    TAILQ_FOREACH(t, &c->txns, link) {
        if ((t->kind == TXN_WRITES || t->kind == TXN_LSN) &&
            clock_diff(t->hard_deadline, now) <= 0) {
            if (t == TAILQ_FIRST(&c->txns) && clock_diff(now, c->progress) >= t->timeout) {
                conn_overdue(c); /* silent past its statement_timeout */
                return;
            }
            /* The server answers, but gave this transaction no verdict in time
             * (several of its statements waited): its writes are answered as
             * possibly applied, with this connection only. */
            db_conn_lost(c,
                         "no verdict on a write transaction by its deadline, although the server "
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
    if (TAILQ_EMPTY(&c->txns) && c->kind != DB_KIND_READ && !db_conn_is_resident(c) &&
        clock_diff(now, c->last_used) >= IDLE_CLOSE && TAILQ_EMPTY(&c->pool->batch_queue) &&
        TAILQ_EMPTY(&c->pool->write_queue)) {
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
        /* A server that refuses every attempt for one reason (a certificate,
         * a password) is said once, not at each back-off. */
        bool again = strcmp(line, c->last_failure) == 0;

        log_msg(again ? LOGL_DEBUG : level, "database %s connection %d failed: %s",
                kind_name(c->kind), c->index, line);
        snprintf(c->last_failure, sizeof(c->last_failure), "%s", line);
    }
    db_count(&pool->slot->c.db_errors);
    c->why[0] = '\0';
    c->recheck = false;
    db_standby_lost(pool);
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
        /* Writes whose commit came, waiting for its position: committed. */
        db_txn_answer_waiting(t, 0);
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

void db_conn_lost(struct db_conn *c, const char *why)
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
    c->last_used = c->progress = c->heard = clock_now();
    c->why[0] = '\0';
    c->last_failure[0] = '\0';
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

/*
 * Set-up is three steps, one function each. A step takes one result of its
 * statements (NULL: the step's query string has given them all) and answers
 * SETUP_MORE to read on, or the verdict of this read: 0 (the next step is
 * sent, or the connection is ready) or -1 (lost; c->why says why).
 */
#define SETUP_MORE 1 /* neither of db_conn_flush's 0 and -1 */

/* What the schema check found missing ("" when whole). */
static void setup_schema_answer(struct db_conn *c, const char *missing)
{
    char line[400];

    c->schema_check = missing[0] == '\0' ? DB_SCHEMA_WHOLE : DB_SCHEMA_INCOMPLETE;
    if (c->schema_check == DB_SCHEMA_WHOLE)
        return;
    db_error_line(missing, line, sizeof(line));
    if (c->setup_made)
        snprintf(c->why, sizeof(c->why),
                 "the schema is still incomplete after making it (missing: %s): does another "
                 "object have one of these names?",
                 line);
    else if (strncmp(line, "todod_schema_version() ", 23) == 0)
        log_info("database schema missing: making sure of it under the schema lock");
    else
        log_info("database schema incomplete (missing: %s): making sure of it under the schema "
                 "lock",
                 line);
}

/* DB_CONN_CHECKING: the session settings, then the schema check's one value. */
static int setup_checking(struct db_conn *c, PGresult *res)
{
    if (res != NULL) {
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 1)
            setup_schema_answer(c, PQgetvalue(res, 0, 0));
        else if (!db_result_ok(res))
            setup_failure(c, res, "checking the schema"); /* said by db_conn_lost */
        PQclear(res);
        return SETUP_MORE;
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

/* DB_CONN_CREATING: the schema's statements, then checked again. */
static int setup_creating(struct db_conn *c, PGresult *res)
{
    if (res != NULL) {
        if (!db_result_ok(res))
            setup_failure(c, res, "making the schema");
        PQclear(res);
        return SETUP_MORE;
    }
    if (c->setup_failed)
        return -1; /* retried with back-off */
    c->setup_made = true;
    return send_setup(c);
}

/* DB_CONN_PREPARING: one result and a NULL per statement, then the sync. */
static int setup_preparing(struct db_conn *c, PGresult *res)
{
    if (res == NULL)
        return SETUP_MORE;
    if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
        if (!db_result_ok(res))
            setup_failure(c, res, "preparing statements");
        c->prepares_pending--;
        PQclear(res);
        return SETUP_MORE;
    }
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

static int setup_step(struct db_conn *c, PGresult *res)
{
    switch (c->state) {
    case DB_CONN_CHECKING:
        return setup_checking(c, res);
    case DB_CONN_CREATING:
        return setup_creating(c, res);
    case DB_CONN_PREPARING:
        return setup_preparing(c, res);
    default:
        PQclear(res);
        snprintf(c->why, sizeof(c->why), "a set-up result in an unexpected state");
        return -1;
    }
}

/* The results that have come of the set-up step under way. */
static int conn_read_setup(struct db_conn *c)
{
    int verdict = SETUP_MORE;

    if (!PQconsumeInput(c->pg))
        return -1;
    while (verdict == SETUP_MORE && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);

        if (res != NULL)
            c->heard = clock_now();
        verdict = setup_step(c, res);
    }
    return verdict == SETUP_MORE ? 0 : verdict;
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

/* What the server says besides results (the schema creation's report, ...)
 * goes to the log, not to a bare stderr line. */
static void on_notice(void *arg, const char *message)
{
    char line[512];

    db_error_line(message, line, sizeof(line));
    log_info("database says: %s", line);
}

void db_conn_start_pq(struct db_conn *c)
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

void db_conn_connect(struct db_conn *c)
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

int db_conn_init(struct db_pool *pool, struct db_conn *c, enum db_conn_kind kind, int index)
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

void db_conn_fini(struct db_conn *c)
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
                db_query_answer(q, t->kind != TXN_READS && t->sent ? DB_LOST : DB_UNAVAILABLE,
                                NULL);
        db_txn_answer_waiting(t, 0); /* committed */
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
