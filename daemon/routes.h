/*
 * The route table and the dispatcher evhttp calls for every request: a path
 * pattern ("{name}" matches one non-empty segment) and a handler per method.
 */
#ifndef TODOD_ROUTES_H
#define TODOD_ROUTES_H

#include <event2/http.h>
#include <stddef.h>

#include "http.h"

/* Route patterns for the metrics (index = route; the last is "other"). */
extern const char *const routes_names[];
extern const int routes_count; /* including "other" */

/* evhttp's generic callback; arg is the struct app_listener of the socket. */
void routes_dispatch(struct evhttp_request *req, void *arg);

/*
 * Finds the route of path for method (enum stats_method; HEAD is served by a
 * GET handler). Returns the handler, or NULL with *status 404 (no route) or
 * 405 (allow[] lists the methods, comma-separated). *route is the route index
 * (routes_count - 1 when none); params point into buf (at least strlen(path)+1);
 * *scope is the enum auth_scope the handler needs.
 */
http_handler routes_find(const char *path, int method, int *route, const char **params, char *buf,
                         int *status, char *allow, size_t allow_len, int *scope);

/*
 * The route a request line names, as a client sent it ("METHOD /path?query
 * HTTP/1.1", perhaps cut short): the index of the first route whose pattern
 * matches the target's path, routes_count - 1 when none does (no origin-form
 * target, or a path of CONN_LINE_MAX bytes or more).
 */
int routes_of_line(const char *line);

/* Whether route i waits for the database (its answers carry Server-Timing). */
int routes_db_backed(int route);

#endif
