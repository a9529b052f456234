/*
 * What a request handler may use: the worker's narrow context. Handlers get
 * this (through struct http_req), never the worker itself.
 */
#ifndef TODOD_APP_H
#define TODOD_APP_H

#include <event2/event.h>
#include <stdbool.h>
#include <sys/queue.h>

struct auth;
struct conf;
struct conn_layer;
struct db_pool;
struct perf_cancel;
struct perf_exec;
struct perf_test;
struct stats_shm;
struct stats_slot;
struct tls_client;
struct tracer;

struct app {
    struct event_base *base;
    const struct conf *conf;
    struct stats_shm *shm;
    struct stats_slot *slot;
    int slot_index;
    struct db_pool *db;
    struct tracer *tracer;
    struct tls_client *tls;         /* outgoing https:// */
    struct auth *auth;              /* who may use which route */
    const char *const *route_names; /* for /metrics and /stats */
    int nroutes;
    bool stop_requested; /* told to stop: /ready answers 503 */
    bool abandon_shares; /* performance-test shares must stop (shutdown_timeout) */
    int requests_alive;  /* begun and not yet finished (some outlive their connection) */
    void (*on_request_done)(struct app *app); /* the worker checks whether it may exit */
    void (*on_share_end)(struct app *app);    /* likewise, when a test's share ends here */

    /* The performance-test work of this worker (one app per worker process),
     * each piece in the list of its state. */
    LIST_HEAD(, perf_test) perf_tests;         /* tests it coordinates, running (perftest.c) */
    LIST_HEAD(, perf_exec) perf_execs_sending; /* shares it runs, sending (perfshare.c) */
    LIST_HEAD(, perf_exec) perf_execs_stopped; /* shares that send no more, batches in flight */
    LIST_HEAD(, perf_cancel) perf_cancels;     /* DELETEs waiting for a report (perfcancel.c) */
};

/*
 * A listening socket of the worker: listen, or admin_listen when set. Each has
 * its own evhttp and connection layer (conn.h), and this is that evhttp's
 * callback argument, so a request knows which socket it came through from the
 * argument it is dispatched with: no lookup per request, and the connection
 * layer stays what it was (one listening socket, its connections).
 */
struct app_listener {
    struct app *app;
    struct conn_layer *conns;
    bool admin; /* admin_listen: only the operator's routes, no token (routes.c) */
};

#endif
