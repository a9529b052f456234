/*
 * Client connections (conn.h says what this layer owns). Why one file of
 * about 1,000 lines: a connection's life, the listener's and the stop's
 * queue-taking share one set of states; the pure framing gate is apart
 * (framing.c).
 */
#include "conn.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "clock.h"
#include "framing.h"
#include "log.h"
#include "synfilter.h"

#define MAX_HEAD        (64 * 1024)
#define MAX_TARGET      (8 * 1024)
#define MAX_FIELDS      100
#define PULL_MAX        (MAX_HEAD + 2) /* framing_feed wants max_head + 1 bytes when there */
#define ARRIVALS        FRAMING_RING   /* first-byte times kept for pipelined requests */
#define ACCEPT_RETRY    0.1            /* seconds without accepting after accept() failed */
#define ERROR_LOG_EVERY 10.0           /* seconds between two logs of accept() failures */
#define STEP_BACK       0.002          /* a worker ahead of its peers pauses accepting */
#define BACKLOG_POLL    0.001
#define BACKLOG_QUIET   0.2 /* handshakes begun before SYNs were dropped complete by then */
#define BACKLOG_MAX     0.5 /* at most this long taking the backlog before closing */
#define DRAIN_LAST      1.0 /* seconds of shutdown_timeout left when idle connections close */
#define READ_CHUNK      (16 * 1024)
/* Bytes framing passed on that evhttp has not taken yet (it is answering):
 * above INPUT_HIGH the socket is not read until evhttp has taken all but
 * INPUT_LOW of them. */
#define INPUT_HIGH (2 * MAX_HEAD)
#define INPUT_LOW  (MAX_HEAD / 2)

struct conn {
    struct conn_layer *L;
    LIST_ENTRY(conn) link;
    uint64_t id;
    int fd;                     /* -1 until evhttp has set it */
    struct bufferevent *under;  /* holds the fd for evhttp, and bytes framing left */
    struct bufferevent *filter; /* what evhttp reads from and writes to */
    struct framing framing;
    uint64_t dispatched, answered;
    struct timespec arrival[ARRIVALS]; /* first byte of request seq, at seq % ARRIVALS */
    uint64_t deadline_seq;             /* the request ev_deadline is armed for */
    struct event *ev_deadline;         /* request_timeout of the request arriving */
    struct event *ev_idle;             /* keepalive_timeout while idle */
    struct event *ev_flush;            /* deferred: write what evhttp queued */
    struct event *ev_writable;         /* the socket's buffer was full */
    struct event *ev_release;          /* deferred: free the connection */
    struct event *ev_start;            /* deferred: evhttp has set the fd, start reading */
    struct event *ev_read;             /* the socket is readable (always armed) */
    bool emitted;                      /* framing passed bytes on in this read */
    bool read_paused;                  /* evhttp has INPUT_HIGH bytes not taken */
    bool eof;                          /* the client sent all it will send */
    bool first_wait;                   /* draining: waiting for the first request */
    bool closed;
};

LIST_HEAD(conn_list, conn);

struct conn_layer {
    LIST_ENTRY(conn_layer) registered; /* in layers */
    struct event_base *base;
    struct evhttp *http;
    const struct conf *conf;
    struct stats_shm *shm;
    struct stats_slot *slot;
    int slot_index;
    int listen_fd;
    struct evhttp_bound_socket *bound;
    struct conn_list conns;
    int nconns;
    uint64_t next_id;
    struct conn **by_fd;
    int nfds;
    struct framing_limits limits;
    struct event *ev_resume;  /* accepting again after a pause */
    struct event *ev_backlog; /* taking the backlog before the socket closes */
    struct event *ev_grace;   /* draining: the idle connections' time is up */
    struct timespec backlog_started;
    bool paused; /* a timed pause: balancing, or accept() failing */
    bool taking_backlog;
    bool syns_dropped; /* taking the backlog, and the socket drops new SYNs */
    bool closing;      /* answers carry "Connection: close" */
    bool draining;     /* closing, and idle connections close when ev_grace fires */
    bool grace_over;   /* draining, and idle connections now close at once */
    uint64_t accept_errors_unlogged;
    struct timespec last_error_log;
    void (*on_empty)(void *arg);
    void *on_empty_arg;
    char rbuf[READ_CHUNK];
};

static void conn_update(struct conn *c);

/* ---- helpers ---- */

static struct evconnlistener *listener(struct conn_layer *L)
{
    return L->bound != NULL ? evhttp_bound_socket_get_listener(L->bound) : NULL;
}

/* evhttp frees a connection by freeing its bufferevent; ours keeps the memory
 * alive (we hold a reference), with its callbacks cleared. */
static bool evhttp_let_go(const struct conn *c)
{
    bufferevent_event_cb eventcb = NULL;

    bufferevent_getcb(c->filter, NULL, NULL, &eventcb, NULL);
    return eventcb == NULL;
}

static bool output_pending(const struct conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->filter)) > 0 ||
           (c->ev_writable != NULL && event_pending(c->ev_writable, EV_WRITE, NULL));
}

static enum conn_state derive_state(const struct conn *c)
{
    if (c->closed)
        return CONN_CLOSED;
    if (c->framing.state != FRAMING_IDLE && c->framing.state != FRAMING_REJECTED)
        return CONN_RECEIVING;
    if (c->answered < c->framing.completed || output_pending(c))
        return CONN_ANSWERING;
    return CONN_IDLE;
}

static void learn_fd(struct conn *c)
{
    struct conn_layer *L = c->L;

    if (c->fd >= 0)
        return;
    c->fd = bufferevent_getfd(c->under);
    if (c->fd >= 0 && c->fd < L->nfds)
        L->by_fd[c->fd] = c;
}

static struct conn *lookup(struct conn_layer *L, struct conn_ref ref)
{
    struct conn *c;

    if (ref.fd < 0 || ref.fd >= L->nfds)
        return NULL;
    c = L->by_fd[ref.fd];
    return c != NULL && c->id == ref.id && !c->closed ? c : NULL;
}

/* ---- accepting ---- */

/* The listener accepts unless paused, full, or stopped. */
static void listener_update(struct conn_layer *L)
{
    struct evconnlistener *lis = listener(L);

    if (lis == NULL)
        return;
    if (L->taking_backlog || (!L->paused && L->nconns < L->conf->max_connections))
        evconnlistener_enable(lis);
    else
        evconnlistener_disable(lis);
}

static void pause_accepting(struct conn_layer *L, double seconds)
{
    struct timeval tv = clock_timeval(seconds);

    L->paused = true;
    listener_update(L);
    evtimer_add(L->ev_resume, &tv);
}

static void resume_accepting(evutil_socket_t fd, short what, void *arg)
{
    struct conn_layer *L = arg;

    L->paused = false;
    listener_update(L);
}

/*
 * The layers of this process (a worker has one), to find ours from the
 * argument the listener's error callback gets: its evhttp. It has to be a
 * process-wide list. evhttp makes the listener and sets its callback argument
 * to itself (evhttp_bind_listener: evconnlistener_set_cb(listener,
 * accept_socket_cb, http)), the error callback gets that same argument, and
 * neither evhttp nor the listener has room for a pointer of ours. Setting our
 * own argument (evconnlistener_set_cb) would replace evhttp's accept callback,
 * which libevent does not export, nor any other way to give evhttp an accepted
 * socket.
 */
static LIST_HEAD(, conn_layer) layers = LIST_HEAD_INITIALIZER(layers);

static struct conn_layer *layer_of(const struct evhttp *http)
{
    struct conn_layer *L;

    LIST_FOREACH(L, &layers, registered)
        if (L->http == http)
            return L;
    return NULL;
}

/* Fewest open connections among the other workers that accept, or -1. */
static int least_loaded_peer(const struct conn_layer *L)
{
    int i, least = -1;

    for (i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &L->shm->slots[i];
        int n;

        if (i == L->slot_index || atomic_load(&s->state) != STATS_SLOT_ACTIVE ||
            !atomic_load(&s->ready) || atomic_load(&s->draining))
            continue;
        n = atomic_load(&s->open_conns);
        if (least < 0 || n < least)
            least = n;
    }
    return least;
}

/*
 * accept() failed for a reason other than a client that went away: most often
 * the process is out of descriptors (EMFILE). Retrying at once would spin (the
 * socket stays readable), so stop accepting for a while, as nginx does, keep
 * serving the connections we have, and log once per interval, not per failure.
 */
static void on_accept_error(struct evconnlistener *lis, void *arg)
{
    /* evhttp owns the listener: the argument is its evhttp, not our layer. */
    struct conn_layer *L = layer_of(arg);
    int err = EVUTIL_SOCKET_ERROR();

    if (L == NULL)
        return;
    atomic_fetch_add_explicit(&L->slot->c.accept_errors, 1, memory_order_relaxed);
    L->accept_errors_unlogged++;
    if (clock_since(L->last_error_log) >= ERROR_LOG_EVERY) {
        log_warn("accept() failed %llu times (%s): not accepting for %.0f ms at a time, "
                 "serving the %d open connections",
                 (unsigned long long)L->accept_errors_unlogged, strerror(err), ACCEPT_RETRY * 1e3,
                 L->nconns);
        L->accept_errors_unlogged = 0;
        L->last_error_log = clock_now();
    }
    pause_accepting(L, ACCEPT_RETRY);
}

static enum bufferevent_filter_result pass_nothing(struct evbuffer *src, struct evbuffer *dst,
                                                   ev_ssize_t limit,
                                                   enum bufferevent_flush_mode mode, void *ctx)
{
    /* Input and output never go through libevent's filter machinery: the
     * callbacks below move the bytes themselves. */
    return BEV_NEED_MORE;
}

static void on_start(evutil_socket_t fd, short what, void *arg);
static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_input_changed(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);
static void on_output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);
static void on_flush(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);
static void on_deadline(evutil_socket_t fd, short what, void *arg);
static void on_idle_timeout(evutil_socket_t fd, short what, void *arg);
static void on_release(evutil_socket_t fd, short what, void *arg);

static void conn_free(struct conn *c)
{
    if (c->ev_deadline != NULL)
        event_free(c->ev_deadline);
    if (c->ev_idle != NULL)
        event_free(c->ev_idle);
    if (c->ev_flush != NULL)
        event_free(c->ev_flush);
    if (c->ev_writable != NULL)
        event_free(c->ev_writable);
    if (c->ev_release != NULL)
        event_free(c->ev_release);
    if (c->ev_start != NULL)
        event_free(c->ev_start);
    if (c->ev_read != NULL)
        event_free(c->ev_read);
    if (c->filter != NULL)
        bufferevent_decref(c->filter); /* the last reference: frees the socket too */
    else if (c->under != NULL)
        bufferevent_free(c->under);
    free(c);
}

static struct conn *conn_new(struct conn_layer *L)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->L = L;
    c->fd = -1;
    c->id = ++L->next_id;
    framing_init(&c->framing, &L->limits);
    c->under = bufferevent_socket_new(L->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (c->under != NULL)
        c->filter = bufferevent_filter_new(c->under, pass_nothing, pass_nothing,
                                           BEV_OPT_CLOSE_ON_FREE, NULL, NULL);
    c->ev_deadline = evtimer_new(L->base, on_deadline, c);
    c->ev_idle = evtimer_new(L->base, on_idle_timeout, c);
    c->ev_flush = event_new(L->base, -1, 0, on_flush, c);
    c->ev_writable = NULL; /* needs the fd: created when first needed */
    c->ev_release = event_new(L->base, -1, 0, on_release, c);
    c->ev_start = event_new(L->base, -1, 0, on_start, c);
    c->ev_read = NULL; /* needs the fd */
    if (c->filter == NULL || c->ev_deadline == NULL || c->ev_idle == NULL || c->ev_flush == NULL ||
        c->ev_release == NULL || c->ev_start == NULL ||
        evbuffer_add_cb(bufferevent_get_input(c->filter), on_input_changed, c) == NULL ||
        evbuffer_add_cb(bufferevent_get_output(c->filter), on_output_added, c) == NULL) {
        conn_free(c);
        return NULL;
    }
    bufferevent_incref(c->filter);
    /* Reads and writes go straight to the socket (on_readable, write_out):
     * the socket bufferevent never arms an event, so evhttp's turning reading
     * off and on again around each request costs no system call. */
    bufferevent_setcb(c->under, NULL, NULL, NULL, NULL);
    bufferevent_disable(c->under, EV_READ | EV_WRITE);
    return c;
}

/*
 * evhttp's hook for each accepted connection, before it reads a byte: our
 * bufferevent goes between the socket and evhttp. Workers share one listening
 * socket; left alone, whichever worker wakes first accepts the whole backlog,
 * and keep-alive connections stay where they land. So a worker takes at most
 * one connection per turn of its loop, and one that holds more connections
 * than the least loaded of its peers steps back briefly.
 */
static struct bufferevent *on_accept(struct event_base *base, void *arg)
{
    struct conn_layer *L = arg;
    struct conn *c = conn_new(L);
    struct timeval idle = clock_timeval(L->conf->keepalive_timeout);
    int least;

    if (c == NULL) {
        /* evhttp serves it with a plain bufferevent; the HTTP layer answers
         * its requests 503 since it cannot see them through this layer. */
        log_error("out of memory for a new connection");
        return NULL;
    }
    LIST_INSERT_HEAD(&L->conns, c, link);
    L->nconns++;
    event_active(c->ev_start, 0, 0);
    atomic_fetch_add_explicit(&L->slot->open_conns, 1, memory_order_relaxed);
    evtimer_add(c->ev_idle, &idle);
    if (!L->taking_backlog) {
        least = least_loaded_peer(L);
        pause_accepting(L, least >= 0 && atomic_load(&L->slot->open_conns) > least + 1 ? STEP_BACK
                                                                                       : 0);
    }
    return c->filter;
}

int conn_layer_accept(struct conn_layer *L)
{
    L->bound = evhttp_accept_socket_with_handle(L->http, L->listen_fd);
    if (L->bound == NULL)
        return -1;
    evconnlistener_set_error_cb(listener(L), on_accept_error);
    listener_update(L);
    return 0;
}

static void close_listener(struct conn_layer *L)
{
    if (L->bound != NULL)
        evhttp_del_accept_socket(L->http, L->bound); /* closes this worker's copy */
    L->bound = NULL;
    L->taking_backlog = false;
    if (L->ev_backlog != NULL)
        event_del(L->ev_backlog);
    if (L->draining && L->nconns == 0 && L->on_empty != NULL)
        L->on_empty(L->on_empty_arg);
}

/*
 * The last close of a listening socket resets the connections in its accept
 * queue, whose clients may have written a request already; a queue that new
 * clients keep filling may never be seen empty. So when the daemon stops (no
 * process will accept on the socket again), the socket first drops every new
 * SYN: the queue then only shrinks, but for handshakes already begun, which
 * complete within BACKLOG_QUIET. A client whose SYN was dropped sends it again
 * (after a second, in Linux) to a closed socket: its connection is refused.
 * The filter is the socket's, shared by every worker's copy. Linux lets only a
 * process with CAP_NET_ADMIN attach one to a TCP socket: a master started as
 * root does it for its workers, which run as `user` (master.c); otherwise a
 * worker tries itself.
 */
static bool drop_new_syns(struct conn_layer *L)
{
    if (atomic_load(&L->shm->syns_dropped))
        return true; /* the master did, a little before drain_delay ended */
    if (synfilter_attach(L->listen_fd) != 0) {
        log_warn("cannot make the listening socket drop new connections (%s): closing it once "
                 "its queue is seen empty",
                 strerror(errno));
        return false;
    }
    return true;
}

/* Takes what the kernel queued until the queue is empty (or BACKLOG_MAX). */
static void on_backlog_poll(evutil_socket_t fd, short what, void *arg)
{
    struct conn_layer *L = arg;
    struct pollfd p = {.fd = L->listen_fd, .events = POLLIN};
    double since = clock_since(L->backlog_started);

    if (since < BACKLOG_MAX && ((poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) ||
                                (L->syns_dropped && since < BACKLOG_QUIET)))
        return; /* the listener takes them on this turn; look again */
    close_listener(L);
}

void conn_layer_stop_accepting(struct conn_layer *L, bool take_backlog)
{
    struct timeval tv = clock_timeval(BACKLOG_POLL);

    if (L->bound == NULL)
        return;
    if (!take_backlog) {
        close_listener(L);
        return;
    }
    L->taking_backlog = true;
    L->backlog_started = clock_now();
    L->syns_dropped = atomic_load(&L->shm->stopping) && drop_new_syns(L);
    listener_update(L);
    L->ev_backlog = event_new(L->base, -1, EV_PERSIST, on_backlog_poll, L);
    if (L->ev_backlog == NULL || event_add(L->ev_backlog, &tv) != 0)
        close_listener(L);
}

bool conn_layer_accepting(const struct conn_layer *L)
{
    return L->bound != NULL;
}

/* ---- a connection's life ---- */

static void mark_closed(struct conn *c)
{
    c->closed = true;
    bufferevent_disable(c->under, EV_READ | EV_WRITE);
    evtimer_del(c->ev_deadline);
    evtimer_del(c->ev_idle);
    if (c->ev_writable != NULL)
        event_del(c->ev_writable);
    if (c->ev_read != NULL)
        event_del(c->ev_read);
    event_active(c->ev_release, 0, 0);
}

/* After anything that may have let evhttp free the connection. */
static bool check_let_go(struct conn *c)
{
    if (!c->closed && evhttp_let_go(c))
        mark_closed(c);
    return c->closed;
}

/* Hands evhttp an event (EOF, error, time-out): it drops the connection. */
static void hand_event(struct conn *c, short what)
{
    if (c->closed)
        return;
    bufferevent_trigger_event(c->filter, what, 0);
    if (!check_let_go(c)) {
        /* Not expected: evhttp drops incoming connections on any event. */
        log_warn("evhttp kept a connection after an event 0x%x: closing it", what);
        mark_closed(c);
    }
}

static void close_conn(struct conn *c)
{
    hand_event(c, BEV_EVENT_EOF | BEV_EVENT_READING);
}

/*
 * Closing an idle keep-alive connection races with a request the client may
 * be sending on it at that very moment. Bytes that reached us already are
 * served (the answer says "Connection: close"); only a socket with nothing
 * waiting is closed. A connection whose first request has not begun is not
 * idle: its client connected to send one (a worker taking the backlog before
 * it stops accepts such connections), so it gets request_timeout to begin.
 */
static void close_if_idle(struct conn *c)
{
    char byte;

    if (c->framing.started == 0) {
        if (!c->first_wait) {
            struct timeval tv = clock_timeval(c->L->conf->request_timeout);

            c->first_wait = true;
            evtimer_add(c->ev_idle, &tv);
        }
        return;
    }
    learn_fd(c);
    if (evbuffer_get_length(bufferevent_get_input(c->under)) > 0 ||
        (c->fd >= 0 && recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0))
        return;
    close_conn(c);
}

static void on_release(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct conn_layer *L = c->L;

    LIST_REMOVE(c, link);
    if (c->fd >= 0 && c->fd < L->nfds && L->by_fd[c->fd] == c)
        L->by_fd[c->fd] = NULL;
    L->nconns--;
    atomic_fetch_sub_explicit(&L->slot->open_conns, 1, memory_order_relaxed);
    conn_free(c);
    listener_update(L);
    if (L->draining && L->nconns == 0 && L->on_empty != NULL)
        L->on_empty(L->on_empty_arg);
}

static void emit_to_evhttp(void *ctx, const char *p, size_t n)
{
    struct conn *c = ctx;

    evbuffer_add(bufferevent_get_input(c->filter), p, n);
    c->emitted = true;
}

/* evhttp reads what framing passed on, if it is reading now (while a request
 * of this connection is being handled it is not, and it looks by itself when
 * it starts reading again). */
static void feed_evhttp(struct conn *c)
{
    if (!c->emitted || c->closed)
        return;
    c->emitted = false;
    if (bufferevent_get_enabled(c->filter) & EV_READ)
        bufferevent_trigger(c->filter, EV_READ, 0);
    check_let_go(c);
}

/* evhttp has set the socket of the connection it made (after our on_accept). */
static void on_start(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    if (check_let_go(c))
        return;
    learn_fd(c);
    if (c->fd >= 0)
        c->ev_read = event_new(c->L->base, c->fd, EV_READ | EV_PERSIST, on_readable, c);
    if (c->ev_read == NULL || event_add(c->ev_read, NULL) != 0) {
        log_error("cannot watch a new connection: closing it");
        hand_event(c, BEV_EVENT_READING | BEV_EVENT_ERROR);
        return;
    }
    conn_update(c);
}

/* Passes bytes through framing; what framing cannot take yet (a head line in
 * pieces) waits in the socket bufferevent's input for the next bytes. */
static void take_bytes(struct conn *c, const char *buf, size_t len)
{
    struct evbuffer *in = bufferevent_get_input(c->under);
    uint64_t started = c->framing.started;
    struct timespec now;

    if (evbuffer_get_length(in) == 0) {
        size_t used = framing_feed(&c->framing, buf, len, emit_to_evhttp, c);

        if (used < len)
            evbuffer_add(in, buf + used, len - used);
    } else {
        evbuffer_add(in, buf, len);
        for (;;) {
            size_t avail = evbuffer_get_length(in), n = avail < PULL_MAX ? avail : PULL_MAX, used;
            const char *p;

            if (avail == 0)
                break;
            p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
            if (p == NULL)
                break;
            used = framing_feed(&c->framing, p, n, emit_to_evhttp, c);
            evbuffer_drain(in, used);
            if (used == 0)
                break;
        }
    }
    if (c->framing.started != started) {
        now = clock_now();
        while (started < c->framing.started)
            c->arrival[++started % ARRIVALS] = now;
    }
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    ssize_t n;

    if (c->closed)
        return;
    n = recv(fd, c->L->rbuf, sizeof(c->L->rbuf), 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        hand_event(c, BEV_EVENT_READING | BEV_EVENT_ERROR);
        return;
    }
    if (n == 0) {
        /* Requests already here are still answered (conn_update closes). */
        c->eof = true;
        event_del(c->ev_read);
    } else {
        take_bytes(c, c->L->rbuf, (size_t)n);
    }
    feed_evhttp(c);
    if (c->closed)
        return;
    if (!c->eof && evbuffer_get_length(bufferevent_get_input(c->filter)) > INPUT_HIGH) {
        c->read_paused = true;
        event_del(c->ev_read);
    }
    conn_update(c);
}

static void on_input_changed(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;

    if (c->read_paused && info->n_deleted > 0 && evbuffer_get_length(buf) <= INPUT_LOW) {
        c->read_paused = false;
        if (!c->closed && !c->eof)
            event_add(c->ev_read, NULL);
    }
}

/* Writes what evhttp queued straight to the socket; evhttp hears that it was
 * written only once the kernel has it all, so a connection it then closes
 * loses nothing. */
static void write_out(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->filter);
    struct timeval stall = clock_timeval(c->L->conf->keepalive_timeout);

    if (c->closed)
        return;
    learn_fd(c);
    while (evbuffer_get_length(out) > 0) {
        int n = evbuffer_write(out, c->fd);

        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->ev_writable == NULL)
                c->ev_writable = event_new(c->L->base, c->fd, EV_WRITE, on_writable, c);
            if (c->ev_writable == NULL || event_add(c->ev_writable, &stall) != 0)
                hand_event(c, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
            return;
        }
        hand_event(c, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
        return;
    }
    if (c->ev_writable != NULL)
        event_del(c->ev_writable);
    if (bufferevent_get_enabled(c->filter) & EV_WRITE)
        bufferevent_trigger(c->filter, EV_WRITE, 0);
    if (!check_let_go(c))
        conn_update(c);
}

static void on_output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;

    if (info->n_added > 0 && !c->closed)
        event_active(c->ev_flush, 0, 0);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    write_out(arg);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    if (what & EV_TIMEOUT) {
        /* The client read nothing for keepalive_timeout. */
        atomic_fetch_add_explicit(&c->L->slot->c.client_timeouts, 1, memory_order_relaxed);
        close_conn(c);
        return;
    }
    write_out(c);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    atomic_fetch_add_explicit(&c->L->slot->c.client_timeouts, 1, memory_order_relaxed);
    if (!framing_abort(&c->framing, 408, "request not received within request_timeout",
                       emit_to_evhttp, c)) {
        /* In the middle of a body of known length: nothing to answer with. */
        close_conn(c);
        return;
    }
    feed_evhttp(c);
    conn_update(c);
}

static void on_idle_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    if (derive_state(c) == CONN_IDLE)
        close_conn(c);
}

/* Timers and draining follow the connection's state. */
static void conn_update(struct conn *c)
{
    const struct conf *conf = c->L->conf;
    enum conn_state st = derive_state(c);

    if (st == CONN_CLOSED)
        return;
    if (c->eof && st != CONN_ANSWERING) {
        /* Nothing more will come: idle, or a request that cannot complete. */
        close_conn(c);
        return;
    }
    if (st == CONN_RECEIVING) {
        if (c->deadline_seq != c->framing.started) {
            struct timespec at =
                clock_add(c->arrival[c->framing.started % ARRIVALS], conf->request_timeout);
            struct timeval tv = clock_timeval(clock_diff(at, clock_now()));

            c->deadline_seq = c->framing.started;
            evtimer_add(c->ev_deadline, &tv);
        }
    } else if (c->deadline_seq != 0) {
        c->deadline_seq = 0;
        evtimer_del(c->ev_deadline);
    }
    if (st != CONN_IDLE) {
        evtimer_del(c->ev_idle);
        return;
    }
    if (c->framing.state == FRAMING_REJECTED) {
        close_conn(c);
        return;
    }
    if (c->L->grace_over) {
        close_if_idle(c);
        return;
    }
    if (!evtimer_pending(c->ev_idle, NULL)) {
        struct timeval tv = clock_timeval(conf->keepalive_timeout);

        evtimer_add(c->ev_idle, &tv);
    }
}

/* ---- requests ---- */

bool conn_request_begin(struct conn_layer *L, struct evhttp_request *req, struct conn_request *out)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
    int fd = bev != NULL ? bufferevent_getfd(bev) : -1;
    struct conn *c = fd >= 0 && fd < L->nfds ? L->by_fd[fd] : NULL;
    uint64_t seq;

    memset(out, 0, sizeof(*out));
    out->ref.fd = -1;
    if (c == NULL || c->filter != bev || c->closed)
        return false;
    seq = ++c->dispatched;
    out->ref.fd = fd;
    out->ref.id = c->id;
    out->arrived = c->framing.started - seq < ARRIVALS ? c->arrival[seq % ARRIVALS] : clock_now();
    out->version_minor = c->framing.minor_of[seq % FRAMING_RING];
    if (seq > c->framing.completed) {
        /* evhttp found a request framing has not passed on whole: never
         * expected, and never run (its bytes were another request's). */
        out->reject_status = 400;
        out->reject_msg = "request framing out of step; connection closed";
        snprintf(out->line, sizeof(out->line), "-");
        return true;
    }
    out->reject_status = framing_rejection(&c->framing, seq, &out->reject_msg);
    if (out->reject_status != 0)
        snprintf(out->line, sizeof(out->line), "%s", c->framing.line);
    return true;
}

void conn_request_end(struct conn_layer *L, struct conn_ref ref)
{
    struct conn *c = lookup(L, ref);

    if (c != NULL)
        c->answered++;
}

/* ---- the layer ---- */

static int open_files_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > (1 << 20))
        return 1 << 20;
    return (int)rl.rlim_cur;
}

struct conn_layer *conn_layer_new(struct event_base *base, struct evhttp *http,
                                  const struct conf *conf, struct stats_shm *shm, int slot_index,
                                  int listen_fd)
{
    struct conn_layer *L = calloc(1, sizeof(*L));

    if (L == NULL)
        return NULL;
    LIST_INSERT_HEAD(&layers, L, registered); /* conn_layer_free() takes it out */
    L->base = base;
    L->http = http;
    L->conf = conf;
    L->shm = shm;
    L->slot = &shm->slots[slot_index];
    L->slot_index = slot_index;
    L->listen_fd = listen_fd;
    LIST_INIT(&L->conns);
    L->limits.max_head = MAX_HEAD;
    L->limits.max_target = MAX_TARGET;
    L->limits.max_body = conf->max_body_size;
    L->limits.max_fields = MAX_FIELDS;
    L->nfds = open_files_limit();
    L->by_fd = calloc((size_t)L->nfds, sizeof(*L->by_fd));
    L->ev_resume = evtimer_new(base, resume_accepting, L);
    if (L->by_fd == NULL || L->ev_resume == NULL) {
        conn_layer_free(L);
        return NULL;
    }
    /* Time-outs are this layer's: evhttp's own would count inactivity of a
     * bufferevent it does not see the bytes of. */
    evhttp_set_timeout(http, 24 * 3600);
    evhttp_set_max_headers_size(http, MAX_HEAD + 1024);
    evhttp_set_max_body_size(http, (ev_ssize_t)conf->max_body_size + 1024);
    evhttp_set_bevcb(http, on_accept, L);
    return L;
}

/* After evhttp_free(): what evhttp let go of, we free. */
void conn_layer_free(struct conn_layer *L)
{
    struct conn *c;

    if (L == NULL)
        return;
    LIST_REMOVE(L, registered);
    while ((c = LIST_FIRST(&L->conns)) != NULL) {
        LIST_REMOVE(c, link);
        conn_free(c);
    }
    if (L->ev_resume != NULL)
        event_free(L->ev_resume);
    if (L->ev_backlog != NULL)
        event_free(L->ev_backlog);
    if (L->ev_grace != NULL)
        event_free(L->ev_grace);
    free(L->by_fd);
    free(L);
}

void conn_layer_close_after_answers(struct conn_layer *L)
{
    L->closing = true;
}

/* The clients of idle connections had their time: what is still idle closes. */
static void on_idle_grace_over(evutil_socket_t fd, short what, void *arg)
{
    struct conn_layer *L = arg;
    struct conn *c;

    L->grace_over = true;
    /* Closing only marks a connection (it is freed on a later turn), so the
     * list is not changed under this loop. */
    LIST_FOREACH(c, &L->conns, link) {
        if (derive_state(c) == CONN_IDLE)
            close_if_idle(c);
    }
}

/*
 * A keep-alive connection that is idle when the worker starts draining is not
 * closed then: its client may be sending a request on it at this very moment,
 * and a close that crosses it on the wire loses it (a proxy or client may
 * retry only a request that changes nothing). Its next request is answered
 * with "Connection: close", after which a close loses nothing. A client that
 * sends nothing until DRAIN_LAST before shutdown_timeout (a proxy whose own
 * keep-alive timeout is shorter has closed the connection by then) finds it
 * closed; so does one that stays idle for keepalive_timeout, as always.
 */
void conn_layer_drain(struct conn_layer *L)
{
    double t = L->conf->shutdown_timeout;
    struct timeval grace = clock_timeval(t - fmin(DRAIN_LAST, t / 2));

    if (L->draining)
        return;
    L->closing = true;
    L->draining = true;
    L->ev_grace = evtimer_new(L->base, on_idle_grace_over, L);
    if (L->ev_grace == NULL || evtimer_add(L->ev_grace, &grace) != 0)
        on_idle_grace_over(-1, 0, L); /* out of memory: close them now */
    if (L->nconns == 0 && L->on_empty != NULL)
        L->on_empty(L->on_empty_arg);
}

bool conn_layer_draining(const struct conn_layer *L)
{
    return L->closing;
}

int conn_layer_open(const struct conn_layer *L)
{
    return L->nconns;
}

void conn_layer_on_empty(struct conn_layer *L, void (*cb)(void *arg), void *arg)
{
    L->on_empty = cb;
    L->on_empty_arg = arg;
}
