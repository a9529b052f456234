/* A worker process: an event loop serving HTTP on the inherited listening socket. */
#ifndef TODOD_WORKER_H
#define TODOD_WORKER_H

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <stdbool.h>

#include "conf.h"
#include "stats.h"

struct db_pool;

struct worker {
    const struct conf *conf;
    struct stats_shm *shm;
    struct stats_slot *slot;
    int slot_index;
    int listen_fd;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct db_pool *db;
    struct event *sig_term, *sig_int, *sig_usr2, *drain_timer, *accept_timer, *ready_timer,
        *delay_timer;
    unsigned char *counted; /* by fd: connection counted in slot->open_conns */
    int nfds;
    int accepted_unseen; /* accepted, counted, no request seen yet */
    struct timespec last_accept;
    int in_flight;       /* HTTP requests accepted and not yet answered */
    bool failed;         /* could not start serving */
    bool stop_requested; /* told to stop: /ready says 503 (for drain_delay, then draining) */
    bool draining;       /* stopping: no new connections, answer what is in flight */
    struct timespec started;
    struct timespec drain_started;
    struct timespec last_reply;
};

/* Runs the worker until it has stopped; returns the process exit code. */
int worker_run(const struct conf *conf, int listen_fd, struct stats_shm *shm, int slot);

/* Called by the HTTP layer around every request. */
void worker_request_started(struct worker *w);
void worker_request_done(struct worker *w);
#endif
