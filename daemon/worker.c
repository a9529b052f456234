#include "worker.h"

#include <event2/http.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "auth.h"
#include "clock.h"
#include "conn.h"
#include "db.h"
#include "http_method.h"
#include "log.h"
#include "perfshare.h"
#include "perftest.h"
#include "routes.h"
#include "tls.h"
#include "trace.h"
#include "trace_export.h"

#define READY_POLL_MS 5
#define READY_WAIT    1.0
#define CUT_FLUSH     0.2 /* seconds for the answers given at shutdown_timeout to go out */
#define LISTENERS     2   /* listen, and admin_listen when set */

/* One per process: everything the worker owns. */
struct worker {
    struct app app;
    const struct conf *conf;
    struct stats_slot *slot;
    int slot_index;
    int listen_fd[LISTENERS];
    int nlisteners;
    struct event_base *base;
    /* Each listening socket is served alike (framing, limits, time-outs,
     * stop): the same code with its own evhttp and connection layer. */
    struct evhttp *http[LISTENERS];
    struct conn_layer *conns[LISTENERS];
    struct app_listener listeners[LISTENERS];
    struct db_pool *db;
    struct tracer *tracer;
    struct tls_client *tls; /* outgoing https:// (the tracer's, perf_nodes) */
    const struct jwt_verifier *verifier;
    struct auth *auth;
    bool flushing; /* the tracer's last spans are on their way out */
    struct event *sig_term, *sig_int, *sig_usr2, *sig_usr1;
    struct event *ready_timer, *delay_timer, *stop_timer, *abandon_timer;
    bool failed;   /* could not start serving */
    bool draining; /* no new connections; answering what was started */
    bool hurry;    /* stopping (SIGTERM): everything ends within shutdown_timeout */
    bool overdue;  /* retired, past shutdown_timeout: goes when its performance tests end */
    bool cut;      /* shutdown_timeout: everything was answered; out once it is written */
    struct timespec started;
};

/* SIGUSR1: the coordinator of a spread performance test posted a share for
 * us, or, in a test we coordinate, another worker's share ended. */
static void on_share_posted(evutil_socket_t sig, short what, void *arg)
{
    struct worker *w = arg;

    /* A share posted as this worker began to drain is run all the same. */
    perfshare_scan(&w->app);
    perftest_wake(&w->app);
}

/* Shares still running stop with time left to report before shutdown_timeout. */
static void on_abandon_shares(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    if (perfshare_running(&w->app) > 0)
        log_warn("stopping: abandoning %d performance-test shares", perfshare_running(&w->app));
    perfshare_abandon_all(&w->app);
}

static void on_spans_flushed(void *arg)
{
    struct worker *w = arg;

    event_base_loopexit(w->base, NULL);
}

/* Open connections, on every listening socket. */
static int open_conns(const struct worker *w)
{
    int n = 0;

    for (int i = 0; i < w->nlisteners; i++)
        n += conn_layer_open(w->conns[i]);
    return n;
}

/* Whether any listening socket is still open in this worker. */
static bool accepting(const struct worker *w)
{
    for (int i = 0; i < w->nlisteners; i++)
        if (conn_layer_accepting(w->conns[i]))
            return true;
    return false;
}

/* Performance-test work on this worker: shares it runs, tests it coordinates. */
static int perf_work(const struct worker *w)
{
    return perfshare_running(&w->app) + perftest_running(&w->app);
}

/*
 * The socket closed (the queue it had is served), everything answered, every
 * share this worker runs over: the last spans go
 * to the collector (at most 1 s), then out. A retired worker past its
 * shutdown_timeout goes as soon as its performance tests end, whatever else
 * is open (on the loop's next turn: this may run inside a request's answer).
 */
static void worker_exit_if_done(struct worker *w)
{
    if (w->overdue && !w->cut && perf_work(w) == 0 && w->stop_timer != NULL) {
        event_active(w->stop_timer, EV_TIMEOUT, 0);
        return;
    }
    if (!w->draining || w->flushing || accepting(w) || open_conns(w) != 0 ||
        w->app.requests_alive != 0 || perfshare_running(&w->app) != 0)
        return;
    w->flushing = true;
    tracer_flush(w->tracer, on_spans_flushed, w);
}

static void on_request_done(struct app *app)
{
    worker_exit_if_done((struct worker *)app); /* app is the first member */
}

static void on_connections_closed(void *arg)
{
    worker_exit_if_done(arg);
}

/*
 * Out of time: every request still waiting is answered before anything it
 * uses is freed. The database's queries end (a write that was sent gets
 * "database connection lost; the write may have been applied", one never sent
 * "database unavailable", a performance-test batch counts as unknown), shares
 * end as abandoned, running tests report what they know. The answers go out on
 * the loop's next turns, within CUT_FLUSH (a client that does not read gets
 * none); then the worker exits.
 */
static void worker_cut(struct worker *w)
{
    struct timeval flush = clock_timeval(CUT_FLUSH);

    w->cut = true;
    perfshare_abandon_all(&w->app);
    db_pool_close(w->db);
    perftest_end_all(&w->app);
    if (w->stop_timer == NULL || evtimer_add(w->stop_timer, &flush) != 0)
        event_base_loopexit(w->base, NULL);
}

static void on_shutdown_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    if (w->cut) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    /* Retired by a reload, not stopped: its performance-test work runs to its
     * end, which its own schedule bounds; the rest goes then. */
    if (!w->hurry && perf_work(w) > 0) {
        if (!w->overdue)
            log_info("retired: shutdown_timeout reached; %d performance-test shares and %d "
                     "tests run to their end",
                     perfshare_running(&w->app), perftest_running(&w->app));
        w->overdue = true;
        return;
    }
    log_warn("shutdown_timeout reached with %d connections and %d requests open", open_conns(w),
             w->app.requests_alive);
    worker_cut(w);
}

/* shutdown_timeout from now; a stop (not a retirement) abandons its shares a
 * quarter of it (at most 2 s) before, for their batches in flight and their
 * test's report. */
static void worker_arm_deadline(struct worker *w)
{
    struct timeval limit = clock_timeval(w->conf->shutdown_timeout), abandon;

    if (w->stop_timer == NULL)
        w->stop_timer = evtimer_new(w->base, on_shutdown_timeout, w);
    if (w->stop_timer != NULL)
        evtimer_add(w->stop_timer, &limit);
    if (!w->hurry)
        return;
    abandon = clock_timeval(w->conf->shutdown_timeout - fmin(2.0, w->conf->shutdown_timeout / 4));
    if (w->abandon_timer == NULL)
        w->abandon_timer = evtimer_new(w->base, on_abandon_shares, w);
    if (w->abandon_timer != NULL)
        evtimer_add(w->abandon_timer, &abandon);
}

/*
 * Stop accepting and answer what was started: every request whose first byte
 * arrived is answered (with "Connection: close"), and so is the next request
 * on an idle keep-alive connection; one that stays idle closes shortly before
 * shutdown_timeout (conn_layer_drain). A full stop first takes the connections
 * the kernel already queued, so none is reset when the socket closes; a
 * retiring worker leaves them to its successors.
 */
static void worker_drain(struct worker *w, bool full_stop)
{
    if (w->draining)
        return;
    w->draining = true;
    atomic_store(&w->slot->draining, 1);
    log_info("stopping: %d connections open", open_conns(w));
    for (int i = 0; i < w->nlisteners; i++) {
        conn_layer_stop_accepting(w->conns[i], full_stop);
        conn_layer_drain(w->conns[i]);
    }
    worker_arm_deadline(w);
    worker_exit_if_done(w);
}

static void on_drain_delay_over(evutil_socket_t fd, short what, void *arg)
{
    worker_drain(arg, true);
}

/*
 * SIGTERM/SIGINT (the daemon stops): /ready answers 503 at once so that load
 * balancers stop routing here, everything else is served for drain_delay, each
 * answer with "Connection: close" so that keep-alive clients leave by
 * themselves, then the worker drains. SIGUSR2 (a reload retires this worker:
 * its successors already accept on the same socket) drains at once, and is in
 * no hurry: its performance-test work runs to its end (see
 * on_shutdown_timeout), until a SIGTERM sets the stop's bounds from then on.
 */
static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    struct worker *w = arg;
    struct timeval tv = clock_timeval(w->conf->drain_delay);

    if (sig == SIGUSR2) {
        w->app.stop_requested = true;
        worker_drain(w, false);
        return;
    }
    if (w->hurry)
        return;
    w->hurry = true;
    if (w->draining) {
        worker_arm_deadline(w);
        return;
    }
    w->app.stop_requested = true;
    for (int i = 0; i < w->nlisteners; i++)
        conn_layer_close_after_answers(w->conns[i]);
    if (w->conf->drain_delay <= 0 || !accepting(w)) {
        worker_drain(w, true);
        return;
    }
    log_info("stopping: /ready answers 503, draining in %.1f s", w->conf->drain_delay);
    w->delay_timer = evtimer_new(w->base, on_drain_delay_over, w);
    if (w->delay_timer == NULL || evtimer_add(w->delay_timer, &tv) != 0)
        worker_drain(w, true);
}

/*
 * A worker starts accepting connections, and tells the master it is ready,
 * once its database connections are up: during a reload or a restart the
 * other workers keep answering until this one can (the master stops the old
 * generation only when every new worker is ready). A database that is down
 * does not hold the start up for longer than READY_WAIT: then /health says 503.
 */
static void on_ready_poll(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    if (!db_pool_started(w->db) && clock_since(w->started) < READY_WAIT)
        return;
    event_del(w->ready_timer);
    if (w->draining)
        return;
    for (int i = 0; i < w->nlisteners; i++) {
        if (conn_layer_accept(w->conns[i]) != 0) {
            log_error("cannot accept on %s", i == 0 ? w->conf->listen : w->conf->admin_listen);
            w->failed = true;
            event_base_loopbreak(w->base);
            return;
        }
    }
    atomic_store(&w->slot->ready, 1);
    if (w->nlisteners > 1)
        log_info("serving on %s, admin_listen %s (slot %d)", w->conf->listen, w->conf->admin_listen,
                 w->slot_index);
    else
        log_info("serving on %s (slot %d)", w->conf->listen, w->slot_index);
}

static struct event *watch_signal(struct worker *w, int sig)
{
    struct event *ev = evsignal_new(w->base, sig, on_stop_signal, w);

    if (ev != NULL && evsignal_add(ev, NULL) != 0) {
        event_free(ev);
        return NULL;
    }
    return ev;
}

static int worker_setup(struct worker *w, struct stats_shm *shm)
{
    struct timeval tick = {0, READY_POLL_MS * 1000};

    w->base = event_base_new();
    if (w->base == NULL) {
        log_error("cannot create the event loop");
        return -1;
    }
    w->sig_term = watch_signal(w, SIGTERM);
    w->sig_int = watch_signal(w, SIGINT);
    w->sig_usr2 = watch_signal(w, SIGUSR2);
    w->sig_usr1 = evsignal_new(w->base, SIGUSR1, on_share_posted, w);
    if (w->sig_term == NULL || w->sig_int == NULL || w->sig_usr2 == NULL || w->sig_usr1 == NULL ||
        evsignal_add(w->sig_usr1, NULL) != 0) {
        log_error("cannot watch signals");
        return -1;
    }
    /* After the fork: each worker has its own ids, random state and exporter. */
    w->tls = tls_client_new(w->conf);
    w->tracer = w->tls != NULL ? tracer_new(w->base, w->conf, w->slot, w->tls) : NULL;
    w->db = db_pool_new(w->base, w->conf, w->slot, w->tracer);
    w->auth = auth_new(w->conf, w->verifier);
    if (w->tracer == NULL || w->db == NULL || w->auth == NULL) {
        log_error("out of memory");
        return -1;
    }
    w->app = (struct app){
        .base = w->base,
        .conf = w->conf,
        .shm = shm,
        .slot = w->slot,
        .slot_index = w->slot_index,
        .db = w->db,
        .tracer = w->tracer,
        .tls = w->tls,
        .auth = w->auth,
        .route_names = routes_names,
        .nroutes = routes_count,
        .on_request_done = on_request_done,
        .on_share_end = on_request_done,
    };
    for (int i = 0; i < w->nlisteners; i++) {
        w->http[i] = evhttp_new(w->base);
        if (w->http[i] != NULL)
            w->conns[i] =
                conn_layer_new(w->base, w->http[i], w->conf, shm, w->slot_index, w->listen_fd[i]);
        if (w->conns[i] == NULL) {
            log_error("out of memory");
            return -1;
        }
        conn_layer_on_empty(w->conns[i], on_connections_closed, w);
        w->listeners[i] =
            (struct app_listener){.app = &w->app, .conns = w->conns[i], .admin = i > 0};
        evhttp_set_gencb(w->http[i], routes_dispatch, &w->listeners[i]);
        evhttp_set_allowed_methods(w->http[i], http_methods_served());
        evhttp_set_default_content_type(w->http[i], NULL);
    }
    w->started = clock_now();
    w->ready_timer = event_new(w->base, -1, EV_PERSIST, on_ready_poll, w);
    if (w->ready_timer == NULL || event_add(w->ready_timer, &tick) != 0) {
        log_error("out of memory");
        return -1;
    }
    return 0;
}

static void free_event(struct event *ev)
{
    if (ev != NULL)
        event_free(ev);
}

/* In reverse order of creation; evhttp first, since it hands its connections
 * back to the connection layer. Whatever still waits is answered before
 * anything it uses goes (worker_cut does it in time to send the answers; this
 * only makes sure). */
static void worker_teardown(struct worker *w)
{
    if (w->base != NULL) {
        w->flushing = w->cut = true; /* no exit to arrange any more */
        perfshare_abandon_all(&w->app);
        db_pool_close(w->db);
        perftest_end_all(&w->app);
    }
    for (int i = 0; i < w->nlisteners; i++) {
        if (w->http[i] != NULL)
            evhttp_free(w->http[i]);
        conn_layer_free(w->conns[i]);
    }
    db_pool_free(w->db);
    tracer_free(w->tracer);
    tls_client_free(w->tls); /* after every connection that used it */
    auth_free(w->auth);
    free_event(w->stop_timer);
    free_event(w->abandon_timer);
    free_event(w->sig_usr1);
    free_event(w->delay_timer);
    free_event(w->ready_timer);
    free_event(w->sig_usr2);
    free_event(w->sig_int);
    free_event(w->sig_term);
    if (w->base != NULL)
        event_base_free(w->base);
    libevent_global_shutdown();
}

int worker_run(const struct conf *conf, const struct jwt_verifier *verifier, int listen_fd,
               int admin_fd, struct stats_shm *shm, int slot)
{
    static struct worker w; /* one per process */
    int rc = 1;

    memset(&w, 0, sizeof(w));
    w.conf = conf;
    w.verifier = verifier;
    w.slot = &shm->slots[slot];
    w.slot_index = slot;
    w.listen_fd[0] = listen_fd;
    w.listen_fd[1] = admin_fd;
    w.nlisteners = admin_fd >= 0 ? 2 : 1;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN); /* the master reloads; workers are replaced */
    atomic_store(&w.slot->pid, (int)getpid());
    if (worker_setup(&w, shm) == 0) {
        event_base_dispatch(w.base);
        rc = w.failed ? 1 : 0;
        log_info("stopped");
    }
    worker_teardown(&w);
    return rc;
}
