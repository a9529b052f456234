/* The /stats document: the shared-memory counters summed, and each worker's
 * gauges, as JSON (for the dashboard and for people). */
#ifndef TODOD_STATS_JSON_H
#define TODOD_STATS_JSON_H

#include <stdio.h>

#include "stats.h"

/*
 * Render shm's counters to out. route_names[i] is the pattern of route index i
 * (e.g. "/todos/{id}"). Returns 0, -1 on error.
 */
int stats_json_render(const struct stats_shm *shm, const char *const *route_names, int nroutes,
                      const char *version, FILE *out);

#endif
