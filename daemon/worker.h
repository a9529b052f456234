/* A worker process: an event loop serving HTTP on the inherited listening socket. */
#ifndef TODOD_WORKER_H
#define TODOD_WORKER_H

#include "conf.h"
#include "stats.h"

/* Runs the worker until it has stopped; returns the process exit code. */
int worker_run(const struct conf *conf, int listen_fd, struct stats_shm *shm, int slot);

#endif
