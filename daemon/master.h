/* The master process: binds, creates the stats segment, forks and supervises workers. */
#ifndef TODOD_MASTER_H
#define TODOD_MASTER_H

#include "conf.h"

/* Runs until SIGTERM/SIGINT; takes ownership of *conf. Returns the exit code. */
int master_run(const char *conf_path, struct conf *conf);

/* A listening socket for conf->listen, or -1 (logged). */
int master_listen(const struct conf *conf);

#endif
