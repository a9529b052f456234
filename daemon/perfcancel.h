/*
 * DELETE /todos/performance-test/{run_id}: stops a running performance test
 * from any worker of the instance that coordinates it. The worker that takes
 * the request marks the run cancelled on the shared board (its shares stop at
 * their next batch), wakes the test's coordinator (SIGUSR1), which tells its
 * nodes and answers the test, and then answers with the report the
 * coordinator left on the board for it.
 */
#ifndef TODOD_PERFCANCEL_H
#define TODOD_PERFCANCEL_H

#include "http.h"

void perfcancel_request(struct http_req *r);

/* A coordinator may have left a report (SIGUSR1): each waiting request looks now. */
void perfcancel_wake(struct app *app);

#endif
