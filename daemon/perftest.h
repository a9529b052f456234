/* POST /todos/performance-test: generate N todos and insert them in batches of
 * B rows, several batches in flight on the worker's pipelined connection. */
#ifndef TODOD_PERFTEST_H
#define TODOD_PERFTEST_H

#include "http.h"

void perf_start(struct http_req *r);

#endif
