/* The Prometheus metrics (GET /metrics): the shared-memory counters of every
 * worker, summed, in the text exposition format 0.0.4. */
#ifndef TODOD_METRICS_H
#define TODOD_METRICS_H

#include <stdio.h>

#include "stats.h"

/*
 * Render shm's counters to out. route_names[i] is the pattern of route index i
 * (e.g. "/todos/{id}"). Returns 0, -1 on error.
 */
int metrics_render(const struct stats_shm *shm, const char *const *route_names, int nroutes,
                   const char *version, FILE *out);

#endif
