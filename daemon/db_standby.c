/*
 * Hot standbys for reads (database_read_url; DAEMON.md "Standbys for
 * reads", API.md "Read consistency"). The primary's pool keeps, per standby
 * host, a pool of read connections, and samples every DB_SAMPLE_EVERY the
 * primary's WAL position and each standby's replay position and recovery
 * state. A standby is fit when a connection to it is up, it answered a sample
 * lately, it is in recovery, and its data is at most max_replica_lag old: as
 * new as the primary was at the last moment it was seen at or below the
 * standby's replay position. A read goes to the least busy fit standby that
 * has replayed its Todod-After, else to the primary; a read a standby fails,
 * or answers from older data than asked, is sent to the primary instead
 * (db_standby_fallback), so a standby costs no request.
 */
#include "db_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "conf.h"
#include "log.h"
#include "pgbin.h"
#include "stats.h"

#define HEARD_WITHIN 1.0 /* seconds: a standby not heard from for longer is down */

/* ---- the primary's positions -------------------------------------------------------- */

/* The primary was at lsn at time at (when the sample was sent). */
static void primary_seen(struct db_pool *pool, uint64_t lsn, struct timespec at)
{
    struct db_lsn_seen *e = pool->nseen > 0 ? &pool->seen[pool->seen_head] : NULL;

    if (e != NULL && e->lsn == lsn) {
        e->last = at;
        return;
    }
    if (e != NULL && lsn < e->lsn) /* another primary (a failover): start again */
        pool->nseen = 0;
    pool->seen_head = pool->nseen == 0 ? 0 : (pool->seen_head + 1) % DB_SEEN_MAX;
    if (pool->nseen < DB_SEEN_MAX)
        pool->nseen++;
    pool->seen[pool->seen_head] = (struct db_lsn_seen){lsn, at, at};
}

/* The last time the primary was seen at or below lsn: a server that has
 * replayed lsn has data at least as new as the primary's then. Zero when no
 * position kept is that old. */
static struct timespec as_new_as(const struct db_pool *pool, uint64_t lsn)
{
    int i;

    for (i = 0; i < pool->nseen; i++) {
        const struct db_lsn_seen *e =
            &pool->seen[(pool->seen_head - i + DB_SEEN_MAX) % DB_SEEN_MAX];

        if (e->lsn <= lsn)
            return e->last;
    }
    return (struct timespec){0, 0};
}

/* ---- judging a standby ---------------------------------------------------------------- */

static enum stats_standby_state judge(const struct db_pool *pool, const struct db_standby *s,
                                      struct timespec now, double *lag)
{
    *lag = -1;
    if (!s->sampled || db_pool_ready(s->pool) == 0 || clock_diff(now, s->heard) > HEARD_WITHIN)
        return STATS_STANDBY_DOWN;
    if (!s->in_recovery)
        return STATS_STANDBY_PROMOTED;
    if (s->as_new.tv_sec == 0 && s->as_new.tv_nsec == 0)
        return STATS_STANDBY_LAGGING;
    *lag = clock_diff(now, s->as_new);
    if (*lag < 0)
        *lag = 0;
    return *lag <= pool->conf->max_replica_lag ? STATS_STANDBY_FIT : STATS_STANDBY_LAGGING;
}

/* The slot's gauges for /stats and /metrics. */
static void publish(struct db_pool *pool, struct timespec now)
{
    int i;

    for (i = 0; i < pool->nstandbys; i++) {
        struct db_standby *s = &pool->standbys[i];
        double lag;
        enum stats_standby_state st = judge(pool, s, now, &lag);

        if (s->index < 0)
            continue;
        atomic_store(&pool->slot->standbys[s->index].lag_us, lag < 0 ? -1 : (int64_t)(lag * 1e6));
        atomic_store(&pool->slot->standbys[s->index].state, st);
    }
}

static void refresh(struct db_pool *pool)
{
    int i;

    for (i = 0; i < pool->nstandbys; i++) {
        struct db_standby *s = &pool->standbys[i];

        if (s->sampled)
            s->as_new = as_new_as(pool, s->replay);
    }
}

/* ---- sampling ------------------------------------------------------------------------- */

/* A sample's answer: (in recovery, position); false when it is not one. */
static bool sample_values(const struct db_result *r, bool *recovery, uint64_t *lsn)
{
    const PGresult *res = r->res;

    if (r->status != DB_OK || PQntuples(res) != 1 || PQnfields(res) != 2 ||
        PQgetisnull(res, 0, 0) || PQgetlength(res, 0, 0) != 1 || PQgetisnull(res, 0, 1) ||
        PQgetlength(res, 0, 1) != 8)
        return false;
    *recovery = *PQgetvalue(res, 0, 0) != 0;
    *lsn = (uint64_t)pgbin_int64(PQgetvalue(res, 0, 1));
    return true;
}

struct sample {
    struct db_pool *pool; /* the primary's */
    int standby;          /* its index, or -1: the primary */
    struct timespec sent;
};

static void sampled(void *arg, const struct db_result *r)
{
    struct sample *sm = arg;
    struct db_pool *pool = sm->pool;
    bool recovery;
    uint64_t lsn;

    if (sm->standby < 0) {
        pool->primary_pending = false;
        if (sample_values(r, &recovery, &lsn) && !recovery)
            primary_seen(pool, lsn, sm->sent);
    } else {
        struct db_standby *s = &pool->standbys[sm->standby];

        s->pending = false;
        if (sample_values(r, &recovery, &lsn)) {
            s->sampled = true;
            s->in_recovery = recovery;
            s->replay = lsn;
            s->heard = clock_now();
        }
    }
    free(sm);
    if (!pool->closed)
        refresh(pool);
}

/* One sample sent on the least busy read connection of p; false when none. */
static bool sample_send(struct db_pool *pool, struct db_pool *p, int standby)
{
    struct db_conn *c = db_pick_read(p);
    struct sample *sm;
    struct query *q;

    if (c == NULL || (sm = malloc(sizeof(*sm))) == NULL)
        return false;
    *sm = (struct sample){pool, standby, clock_now()};
    q = db_query_new(DB_WAL_SAMPLE, clock_add(sm->sent, pool->conf->request_timeout), sampled, sm);
    if (q == NULL || db_read_send(c, q) != 0) {
        if (q != NULL)
            db_query_free(q);
        free(sm);
        return false;
    }
    return true;
}

static void sample_tick(evutil_socket_t fd, short what, void *arg)
{
    struct db_pool *pool = arg;
    struct timeval tv = clock_timeval(DB_SAMPLE_EVERY);
    int i;

    if (pool->closed)
        return;
    if (!pool->primary_pending)
        pool->primary_pending = sample_send(pool, pool, -1);
    for (i = 0; i < pool->nstandbys; i++)
        if (!pool->standbys[i].pending)
            pool->standbys[i].pending = sample_send(pool, pool->standbys[i].pool, i);
    publish(pool, clock_now());
    evtimer_add(pool->ev_sample, &tv);
}

/* ---- the pools -------------------------------------------------------------------------- */

int db_standbys_open(struct db_pool *pool)
{
    const struct conf *conf = pool->conf;
    char **each = NULL, **names = NULL;
    struct timeval tv = clock_timeval(DB_SAMPLE_EVERY);
    int n, i;

    if (conf->database_read_url == NULL || conf->database_read_url[0] == '\0')
        return 0;
    n = db_conninfo_split(conf->database_read_url, &each, &names);
    if (n < 0)
        return 0; /* logged: reads go to the primary */
    pool->standbys = calloc((size_t)n, sizeof(*pool->standbys));
    pool->seen = calloc(DB_SEEN_MAX, sizeof(*pool->seen));
    pool->ev_sample = evtimer_new(pool->base, sample_tick, pool);
    if (pool->standbys == NULL || pool->seen == NULL || pool->ev_sample == NULL)
        goto fail;
    for (i = 0; i < n; i++) {
        struct db_standby *s = &pool->standbys[i];

        s->host = names[i];
        names[i] = NULL;
        s->index = i < STATS_MAX_STANDBYS ? i : -1;
        s->pool = db_pool_make(pool->base, conf, pool->slot, pool->tracer, each[i], pool);
        pool->nstandbys++;
        if (s->pool == NULL)
            goto fail;
        s->pool->standby = s;
        if (s->index >= 0) {
            struct stats_standby *g = &pool->slot->standbys[s->index];
            size_t k;

            /* A label value: what a host name or address may hold, nothing else. */
            snprintf(g->host, sizeof(g->host), "%s", s->host);
            for (k = 0; g->host[k] != '\0'; k++)
                if (strchr("\"\\\n", g->host[k]) != NULL)
                    g->host[k] = '_';
            atomic_store(&g->lag_us, -1);
            atomic_store(&g->state, STATS_STANDBY_DOWN);
        }
    }
    evtimer_add(pool->ev_sample, &tv);
    for (i = 0; i < n; i++) {
        free(each[i]);
        free(names[i]);
    }
    free(each);
    free(names);
    return 0;
fail:
    for (i = 0; i < n; i++) {
        free(each[i]);
        free(names[i]);
    }
    free(each);
    free(names);
    log_error("database_read_url: out of memory");
    return -1;
}

void db_standbys_close(struct db_pool *pool)
{
    int i;

    if (pool->ev_sample != NULL)
        evtimer_del(pool->ev_sample);
    for (i = 0; i < pool->nstandbys; i++)
        if (pool->standbys[i].pool != NULL)
            db_pool_close(pool->standbys[i].pool);
}

void db_standbys_free(struct db_pool *pool)
{
    int i;

    for (i = 0; i < pool->nstandbys; i++) {
        db_pool_free(pool->standbys[i].pool);
        free(pool->standbys[i].host);
    }
    free(pool->standbys);
    free(pool->seen);
    if (pool->ev_sample != NULL)
        event_free(pool->ev_sample);
}

/* ---- reads -------------------------------------------------------------------------------- */

static int load(const struct db_conn *c)
{
    return c->inflight + c->held;
}

struct db_conn *db_standby_pick(struct db_pool *pool, uint64_t after)
{
    struct timespec now;
    struct db_conn *best = NULL;
    int i;

    if (pool->nstandbys == 0)
        return NULL;
    now = clock_now();
    /* Ties go round: an idle worker spreads its reads too. */
    pool->standby_turn = (pool->standby_turn + 1) % pool->nstandbys;
    for (i = 0; i < pool->nstandbys; i++) {
        struct db_standby *s = &pool->standbys[(pool->standby_turn + i) % pool->nstandbys];
        struct db_conn *c;
        double lag;

        if (judge(pool, s, now, &lag) != STATS_STANDBY_FIT || s->replay < after)
            continue;
        c = db_pick_read(s->pool);
        if (c != NULL && (best == NULL || load(c) < load(best)))
            best = c;
    }
    return best;
}

/*
 * q, a read a standby answered with st (or with data older than its
 * Todod-After), goes to the primary as a new query with the same parameters,
 * callback and span, unless its deadline has passed. Returns true when it
 * went: q is then answered, silently.
 */
bool db_standby_fallback(struct query *q, enum db_status st)
{
    struct db_pool *primary = q->pool->parent;
    struct db_params p = {q->nparams, (const char *const *)q->values, q->lengths, q->formats};
    struct db_conn *c;
    struct query *nq;

    if (primary->closed || st == DB_TIMEOUT || clock_diff(q->deadline, clock_now()) <= 0 ||
        (c = db_pick_read(primary)) == NULL)
        return false;
    nq = db_query_new(q->stmt, q->deadline, q->cb, q->arg);
    if (nq == NULL)
        return false;
    if (db_query_copy_params(nq, &p) != 0) {
        db_query_free(nq);
        return false;
    }
    nq->submitted = q->submitted;
    nq->pool = primary;
    nq->span = q->span;
    if (db_read_send(c, nq) != 0) {
        nq->span = NULL;
        db_query_free(nq);
        return false;
    }
    q->span = NULL;
    q->state = QUERY_ANSWERED;
    q->cb = NULL;
    return true;
}

/* A connection of pool broke: if it is a standby's, what was sampled of it
 * may no longer hold (it may have restarted from an older position). */
void db_standby_lost(struct db_pool *pool)
{
    if (pool->standby != NULL)
        pool->standby->sampled = false;
}
