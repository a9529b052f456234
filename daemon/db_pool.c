/*
 * The pool of a worker's connections and the db_* API (db.h): writes queued,
 * grouped and sent in lock order on a free write connection (a write to a row
 * that a transaction in flight locks waits here), performance-test batches on
 * their own connection, and the pool's making and closing.
 */
#include "db.h"

#include <event2/dns.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "conf.h"
#include "db_int.h"
#include "db_span.h"
#include "stats.h"

#define GROUP_MAX    256 /* writes in one transaction */
#define ROTATE_BOUND 2.0 /* with several hosts: the most one may take to connect */

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
    if ((!pool->pooled && db_txn_follow_lsn(c, t) != 0) || db_conn_flush(c) < 0) {
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

void db_pool_dispatch_writes(struct db_pool *pool)
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

void db_pool_arm_queue_timer(struct db_pool *pool)
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
    if ((!c->pool->prepared && db_send_timeout_prefix(c, t, 0) != 0) ||
        db_send_copied(c, t, q) != 0) {
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

void db_pool_dispatch_batches(struct db_pool *pool)
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

/* ---- the pool ------------------------------------------------------------------------ */

/* A pool of connections to conninfo; a standby's (parent: the primary's pool)
 * has read connections only. */
struct db_pool *db_pool_make(struct event_base *base, const struct conf *conf,
                             struct stats_slot *slot, struct tracer *tracer, const char *conninfo,
                             struct db_pool *parent)
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
    pool->parent = parent;
    pool->prepared = conf->db_prepared;
    pool->pooled = !conf->db_prepared;
    TAILQ_INIT(&pool->write_queue);
    TAILQ_INIT(&pool->resend_queue);
    TAILQ_INIT(&pool->batch_queue);
    if (db_parse_conninfo(pool, conninfo) != 0) {
        /* Connections fail (and say why) until a reload brings a valid one. */
        free(pool->keys);
        free(pool->vals);
        pool->keys = calloc(3, sizeof(char *));
        pool->vals = calloc(3, sizeof(char *));
        if (pool->keys == NULL || pool->vals == NULL)
            goto fail;
        pool->keys[0] = strdup("dbname");
        pool->vals[0] = strdup(conninfo);
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
                     timeout_ms, db_schema_missing) < 0 ||
            asprintf(&pool->setup_sql[DB_KIND_WRITE], "SELECT %s", db_schema_missing) < 0 ||
            asprintf(&pool->setup_sql[DB_KIND_PERF], "SET statement_timeout = 0; SELECT %s",
                     db_schema_missing) < 0)
            goto fail;
    } else {
        for (i = 0; i < DB_NKINDS; i++)
            if (asprintf(&pool->setup_sql[i], "SELECT %s", db_schema_missing) < 0)
                goto fail;
    }
    pool->nreads = conf->db_connections;
    pool->nwrites = parent != NULL ? 0 : conf->db_write_connections;
    pool->reads = calloc((size_t)pool->nreads, sizeof(*pool->reads));
    pool->writes = calloc((size_t)pool->nwrites + 1, sizeof(*pool->writes));
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

struct db_pool *db_pool_new(struct event_base *base, const struct conf *conf,
                            struct stats_slot *slot, struct tracer *tracer)
{
    struct db_pool *pool = db_pool_make(base, conf, slot, tracer, conf->database_url, NULL);

    if (pool != NULL && db_standbys_open(pool) != 0) {
        db_pool_free(pool);
        return NULL;
    }
    return pool;
}

void db_pool_close(struct db_pool *pool)
{
    struct query *q;
    int i;

    if (pool == NULL || pool->closed)
        return;
    pool->closed = true; /* first: an answer's callback may submit again */
    db_standbys_close(pool);
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
    db_standbys_free(pool);
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
              struct timespec deadline, uint64_t after, const struct db_trace *trace, db_done_cb cb,
              void *arg)
{
    struct query *q;
    struct db_conn *c = NULL;

    /* A read goes to a standby that is fit and has replayed after, if any. */
    if (!pool->closed && db_is_read(stmt))
        c = db_standby_pick(pool, after);
    if (pool->closed ||
        (db_is_write(stmt) ? !pool_reachable(pool) : c == NULL && (c = db_pick_read(pool)) == NULL))
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
        q->pool = c->pool;
        q->after = after;
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
