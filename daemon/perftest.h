/* POST /todos/performance-test: generate N todos and insert them in batches of
 * B rows, several batches in flight on the worker's pipelined connection. */
#ifndef TODOD_PERFTEST_H
#define TODOD_PERFTEST_H

#include "http.h"

void perf_start(struct http_req *r);

/* Another worker's share of a test this worker coordinates may have ended
 * (SIGUSR1): each running test looks at its shares now. */
void perftest_wake(struct app *app);

/* Tests this worker coordinates (or runs as another instance's share) that
 * have not answered yet. */
int perftest_running(const struct app *app);

/* The worker stops at shutdown_timeout: every running test answers now, with
 * what it knows (rows of shares and nodes still running are unknown; those
 * shares stop at their next batch). */
void perftest_end_all(struct app *app);

#endif
