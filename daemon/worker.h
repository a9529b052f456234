/* A worker process: an event loop serving HTTP on the inherited listening sockets. */
#ifndef TODOD_WORKER_H
#define TODOD_WORKER_H

#include "conf.h"
#include "stats.h"

struct jwt_verifier;

/* Runs the worker until it has stopped; returns the process exit code.
 * verifier: the master's, for auth = jwt (NULL otherwise); admin_fd: the
 * admin_listen socket, or -1 when it is unset. */
int worker_run(const struct conf *conf, const struct jwt_verifier *verifier, int listen_fd,
               int admin_fd, struct stats_shm *shm, int slot);

#endif
