/*
 * Client connections. evhttp accepts them on the shared listening socket and
 * parses requests; this layer owns everything around that:
 *
 *  - the bytes: each connection's socket is read here, every byte goes through
 *    the strict framing gate (framing.h) before evhttp sees it, and responses
 *    are written here, straight to the socket (no wait for a writable event);
 *  - the clock: request_timeout is a deadline from a request's first byte to its
 *    last, keepalive_timeout bounds idle time, a client that stops reading is cut
 *    off after keepalive_timeout without progress;
 *  - the count: max_connections per worker, accept back-off when descriptors run
 *    out, connections shared out between the workers;
 *  - the end: draining answers what was started, each answer with "Connection:
 *    close", and closes an idle connection only when its client had time to use
 *    it or to close it first (conn_layer_drain).
 *
 * A connection's state is derived, never stored twice: IDLE (nothing started,
 * nothing owed), RECEIVING (a request's bytes are arriving), ANSWERING (every
 * request arrived, not all answered and written), CLOSED (evhttp let go; the
 * memory goes at the end of the loop turn).
 */
#ifndef TODOD_CONN_H
#define TODOD_CONN_H

#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "conf.h"
#include "stats.h"

struct conn_layer;

enum conn_state { CONN_IDLE, CONN_RECEIVING, CONN_ANSWERING, CONN_CLOSED };

/* Names a connection across asynchronous waits: it may be gone meanwhile. */
struct conn_ref {
    int fd;
    uint64_t id;
};

/* What the HTTP layer learns about a request when evhttp dispatches it. */
#define CONN_LINE_MAX 256

struct conn_request {
    struct conn_ref ref;
    struct timespec arrived; /* its first byte */
    int version_minor;       /* HTTP/1.x */
    int reject_status;       /* a framing rejection to answer instead (0: none) */
    const char *reject_msg;
    char line[CONN_LINE_MAX]; /* the request line as sent (cut short), for the log of a rejection */
};

struct conn_layer *conn_layer_new(struct event_base *base, struct evhttp *http,
                                  const struct conf *conf, struct stats_shm *shm, int slot_index,
                                  int listen_fd);
void conn_layer_free(struct conn_layer *L);

/* Starts accepting on the listening socket; -1 on failure. */
int conn_layer_accept(struct conn_layer *L);

/*
 * Stops accepting. With take_backlog (the whole daemon stops), connections the
 * kernel has already queued are taken and served first (within a bound), so
 * that none is left to be reset when the socket closes; when the master has
 * marked the daemon stopping, the socket drops new SYNs meanwhile.
 */
void conn_layer_stop_accepting(struct conn_layer *L, bool take_backlog);

/*
 * From now on every answer carries "Connection: close" and its connection
 * closes once it is written: the client learns with its next answer to open a
 * new connection. Idle connections stay open for that next request (SIGTERM's
 * drain_delay, while the socket still accepts).
 */
void conn_layer_close_after_answers(struct conn_layer *L);

/*
 * The end (a reload retires the worker, or drain_delay ran out): as
 * conn_layer_close_after_answers(), and then a connection that stayed idle
 * closes with one second of shutdown_timeout left (its half, when that is
 * under 2 s) or after keepalive_timeout, whichever comes first. Only such a
 * close can meet a request on the wire, and only a client that sent nothing
 * for that long can send it then.
 */
void conn_layer_drain(struct conn_layer *L);

/* Answers carry "Connection: close" (either of the above was called). */
bool conn_layer_draining(const struct conn_layer *L);
bool conn_layer_accepting(const struct conn_layer *L);

/* Open connections (including those evhttp has not shown a request of yet). */
int conn_layer_open(const struct conn_layer *L);

/* Called when draining, the listening socket closed and the last connection
 * closed (whichever came last). */
void conn_layer_on_empty(struct conn_layer *L, void (*cb)(void *arg), void *arg);

/* evhttp dispatched req: fills *out; false when its connection is unknown. */
bool conn_request_begin(struct conn_layer *L, struct evhttp_request *req, struct conn_request *out);

/* The answer to a request of ref was handed to evhttp. */
void conn_request_end(struct conn_layer *L, struct conn_ref ref);

#endif
