/* POST /todos/performance-test: generate N todos and insert them in batches of
 * B rows, several batches in flight on the worker's pipelined connection. */
#ifndef TODOD_PERFTEST_H
#define TODOD_PERFTEST_H

#include "http.h"

void perf_start(struct http_req *r);

/* Another worker's share of a test this worker coordinates may have ended
 * (SIGUSR1): each running test looks at its shares now. */
void perftest_wake(void);

#endif
