/*
 * A listening TCP socket that drops new connections: the last close of a
 * listening socket resets what waits in its accept queue, so a stopping daemon
 * first stops the queue from growing (conn.c and master.c say when).
 */
#ifndef TODOD_SYNFILTER_H
#define TODOD_SYNFILTER_H

/* Attaches to listening socket fd a filter that drops every SYN opening a
 * connection; the handshakes already begun and the queue go on. 0, or -1 with
 * errno (EPERM: Linux asks CAP_NET_ADMIN for a filter on a TCP socket, which
 * a master started as root has and its workers, switched to `user`, do not).
 * The filter is the socket's, shared by every process's copy. */
int synfilter_attach(int fd);

#endif
