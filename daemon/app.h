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
    struct conn_layer *conns;
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
};

#endif
