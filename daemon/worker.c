#include "worker.h"

#include <event2/http.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "db.h"
#include "http.h"
#include "log.h"

/*
 * A stopping worker waits for its in-flight requests, then for this much quiet
 * (no reply sent) so that keep-alive clients in the middle of a request burst
 * get their "Connection: close" answers before the sockets are closed.
 */
#define DRAIN_QUIET   0.3
#define DRAIN_POLL_MS 20
#define READY_POLL_MS 5
#define READY_WAIT    1.0

void worker_request_started(struct worker *w)
{
    w->in_flight++;
}

void worker_request_done(struct worker *w)
{
    w->in_flight--;
    w->last_reply = clock_now();
}

static void worker_check_drained(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    if (clock_since(w->drain_started) >= w->conf->shutdown_timeout) {
        if (w->in_flight > 0)
            log_warn("shutdown_timeout reached with %d requests in flight", w->in_flight);
        event_base_loopexit(w->base, NULL);
        return;
    }
    if (w->in_flight == 0 && clock_since(w->last_reply) >= DRAIN_QUIET)
        event_base_loopexit(w->base, NULL);
}

/* Stop accepting, finish what is in flight. */
static void worker_begin_drain(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct timeval poll = {0, DRAIN_POLL_MS * 1000};

    if (w->draining)
        return;
    w->draining = true;
    atomic_store(&w->slot->draining, 1);
    w->drain_started = clock_now();
    /* Connections still queued on the shared socket go to the other workers. */
    if (w->bound != NULL)
        evhttp_del_accept_socket(w->http, w->bound);
    w->bound = NULL;
    log_info("stopping: %d requests in flight", w->in_flight);
    w->drain_timer = event_new(w->base, -1, EV_PERSIST, worker_check_drained, w);
    event_add(w->drain_timer, &poll);
}

/*
 * SIGTERM/SIGINT (the daemon stops): /ready answers 503 at once so that load
 * balancers stop routing here, everything else is served as usual for
 * drain_delay, then the worker drains. SIGUSR2 (a reload retires this worker:
 * its successors already accept on the same socket) drains at once.
 */
static void worker_on_stop(evutil_socket_t sig, short what, void *arg)
{
    struct worker *w = arg;
    struct timeval tv = clock_timeval(w->conf->drain_delay);

    if (w->stop_requested && sig != SIGUSR2)
        return;
    w->stop_requested = true;
    if (sig == SIGUSR2 || w->conf->drain_delay <= 0) {
        worker_begin_drain(-1, 0, w);
        return;
    }
    log_info("stopping: /ready answers 503, draining in %.1f s", w->conf->drain_delay);
    w->delay_timer = evtimer_new(w->base, worker_begin_drain, w);
    evtimer_add(w->delay_timer, &tv);
}

/*
 * A worker starts accepting connections, and tells the master it is ready,
 * once its database connections are up: during a reload or a restart the
 * other workers keep answering until this one can (the master stops the old
 * generation only when every new worker is ready). A database that is down
 * does not hold the start up for longer than READY_WAIT: then /health says 503.
 */
static void worker_check_ready(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    if (db_pool_ready(w->db) < w->conf->db_connections && clock_since(w->started) < READY_WAIT)
        return;
    event_del(w->ready_timer);
    if (w->draining)
        return;
    w->bound = evhttp_accept_socket_with_handle(w->http, w->listen_fd);
    if (w->bound == NULL) {
        log_error("cannot accept on the listening socket");
        event_base_loopbreak(w->base);
        w->failed = true;
        return;
    }
    atomic_store(&w->slot->ready, 1);
    log_info("serving on %s (slot %d)", w->conf->listen, w->slot_index);
}

static int open_files_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > (1 << 20))
        return 1 << 20;
    return (int)rl.rlim_cur;
}

static int worker_setup(struct worker *w)
{
    w->base = event_base_new();
    if (w->base == NULL) {
        log_error("cannot create the event loop");
        return -1;
    }
    w->sig_term = evsignal_new(w->base, SIGTERM, worker_on_stop, w);
    w->sig_int = evsignal_new(w->base, SIGINT, worker_on_stop, w);
    w->sig_usr2 = evsignal_new(w->base, SIGUSR2, worker_on_stop, w);
    if (w->sig_term == NULL || w->sig_int == NULL || w->sig_usr2 == NULL ||
        evsignal_add(w->sig_term, NULL) != 0 || evsignal_add(w->sig_int, NULL) != 0 ||
        evsignal_add(w->sig_usr2, NULL) != 0) {
        log_error("cannot watch signals");
        return -1;
    }
    w->db = db_pool_new(w->base, w->conf->database_url, w->conf->db_connections,
                        w->conf->request_timeout, w->slot);
    w->http = evhttp_new(w->base);
    if (w->db == NULL || w->http == NULL) {
        log_error("out of memory");
        return -1;
    }
    w->nfds = open_files_limit();
    w->counted = calloc(w->nfds, 1);
    if (w->counted == NULL) {
        log_error("out of memory");
        return -1;
    }
    http_setup(w);
    return 0;
}

static void worker_teardown(struct worker *w)
{
    if (w->http != NULL)
        evhttp_free(w->http);
    db_pool_free(w->db);
    if (w->drain_timer != NULL)
        event_free(w->drain_timer);
    if (w->accept_timer != NULL)
        event_free(w->accept_timer);
    if (w->ready_timer != NULL)
        event_free(w->ready_timer);
    if (w->sig_term != NULL)
        event_free(w->sig_term);
    if (w->sig_int != NULL)
        event_free(w->sig_int);
    if (w->sig_usr2 != NULL)
        event_free(w->sig_usr2);
    if (w->delay_timer != NULL)
        event_free(w->delay_timer);
    if (w->base != NULL)
        event_base_free(w->base);
    free(w->counted);
    libevent_global_shutdown();
}

int worker_run(const struct conf *conf, int listen_fd, struct stats_shm *shm, int slot)
{
    struct worker w;
    int rc = 1;

    memset(&w, 0, sizeof(w));
    w.conf = conf;
    w.shm = shm;
    w.slot = &shm->slots[slot];
    w.slot_index = slot;
    w.listen_fd = listen_fd;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN); /* the master reloads; workers are replaced */
    if (worker_setup(&w) == 0) {
        struct timeval tick = {0, READY_POLL_MS * 1000};

        atomic_store(&w.slot->pid, (int)getpid());
        w.started = clock_now();
        w.ready_timer = event_new(w.base, -1, EV_PERSIST, worker_check_ready, &w);
        event_add(w.ready_timer, &tick);
        w.last_reply = clock_now();
        event_base_dispatch(w.base);
        rc = w.failed ? 1 : 0;
        log_info("stopped");
    }
    worker_teardown(&w);
    return rc;
}
