/*
 * A performance-test share running on this worker: rows [first, first+count)
 * of a run, inserted in batches of binary arrays on the worker's
 * performance-test connection, released on a schedule when the test is paced,
 * counted batch by batch in the shared-memory board (perfboard.h). Memory is
 * bounded by PERF_DEPTH batches whatever the share's size, and no callback does
 * more than that.
 */
#ifndef TODOD_PERFSHARE_H
#define TODOD_PERFSHARE_H

#include <stdbool.h>

#include "app.h"
#include "perfboard.h"

#define PERF_DEPTH 4 /* batches in flight per share */

/* Starts share index of run on this worker. When it is over (or could not
 * start: no memory) its coordinator hears it: on_end is called when given, or
 * the coordinator is signalled (SIGUSR1). Returns 0, or -1: the share was not
 * posted (any more), or it ended as abandoned at once. */
int perfshare_start(struct app *app, struct perf_run *run, int index, void (*on_end)(void *ctx),
                    void *ctx);

/* Starts the shares posted for this worker (the coordinator signals SIGUSR1). */
void perfshare_scan(struct app *app);

/* The worker stops: shares still running stop issuing batches now (their
 * unsent rows count as errors) and end as abandoned once in-flight batches are
 * back. */
void perfshare_abandon_all(struct app *app);

/* Shares running on this worker. */
int perfshare_running(const struct app *app);

#endif
