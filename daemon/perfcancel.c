#include "perfcancel.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/queue.h>
#include <uuid/uuid.h>

#include "log.h"
#include "perfboard.h"
#include "stats.h"

/* The coordinator signals when it leaves the report; this slow look is a
 * safety net only (a signal merged with another, a coordinator gone). */
#define POLL_MS 200

struct perf_cancel {
    LIST_ENTRY(perf_cancel) link; /* in app->perf_cancels while it waits */
    struct http_req *r;
    struct perf_run *run;
    char run_id[PERF_RUN_ID_LEN];
    struct event *ev_poll;
    bool waiting;
};

static void cancel_free(struct http_req *r)
{
    struct perf_cancel *c = r->data;

    if (c->waiting) {
        LIST_REMOVE(c, link);
        perf_run_cancel_drop(c->run, r->app->slot_index); /* its report is nobody's */
    }
    if (c->ev_poll != NULL)
        event_free(c->ev_poll);
    free(c);
}

/* Answers once the coordinator left its report; true when it answered. */
static bool look(struct perf_cancel *c)
{
    struct http_req *r = c->r;
    char *report = malloc(PERF_REPORT_MAX + 1);
    long len;

    if (report == NULL) {
        /* Keep waiting: the run stays ours until we copy its report. */
        log_error("performance test %s: no memory for its report", c->run_id);
        return false;
    }
    len = perf_run_take_report(c->run, c->run_id, r->app->slot_index, report);
    if (len == 0) {
        free(report);
        return false;
    }
    c->waiting = false;
    LIST_REMOVE(c, link);
    if (len < 0)
        http_reply_error(r, 404, "performance test %s ended before it could be stopped", c->run_id);
    else
        http_reply_raw(r, 200, "application/json", report, (size_t)len);
    free(report);
    return true;
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    look(arg);
}

void perfcancel_wake(struct app *app)
{
    struct perf_cancel *c;

    LIST_FOREACH(c, &app->perf_cancels, link)
        event_active(c->ev_poll, 0, 0);
}

void perfcancel_request(struct http_req *r)
{
    struct app *app = r->app;
    struct perf_cancel *c;
    struct timeval poll = {0, POLL_MS * 1000};
    uuid_t uu;
    bool busy;
    int slot, pid;

    if (uuid_parse(r->params[0], uu) != 0) {
        http_reply_error(r, 400, "run_id must be a UUID");
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        http_reply_error(r, 500, "internal error");
        return;
    }
    c->r = r;
    r->data = c;
    r->cleanup = cancel_free;
    uuid_unparse_lower(uu, c->run_id);
    c->ev_poll = event_new(app->base, -1, EV_PERSIST, on_poll, c);
    if (c->ev_poll == NULL) {
        http_reply_error(r, 500, "internal error");
        return;
    }
    c->run = perf_board_cancel(&app->shm->perf, c->run_id, app->slot_index,
                               http_header(r, "Authorization"), &busy);
    if (c->run == NULL) {
        if (busy)
            http_reply_error(r, 409, "performance test %s is being stopped already", c->run_id);
        else
            http_reply_error(r, 404, "no performance test %s runs here", c->run_id);
        return;
    }
    c->waiting = true;
    LIST_INSERT_HEAD(&app->perf_cancels, c, link);
    log_info("performance test %s: cancelled; its shares stop at their next batch", c->run_id);
    /* The coordinator (maybe this very worker) tells its shares and nodes. */
    slot = c->run->coordinator_slot;
    pid = slot >= 0 && slot < STATS_MAX_SLOTS ? atomic_load(&app->shm->slots[slot].pid) : 0;
    if (pid > 0)
        kill(pid, SIGUSR1);
    event_add(c->ev_poll, &poll);
}
