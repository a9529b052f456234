/*
 * HTTP_METHODS (http_tables.h) mapped onto libevent's evhttp: a method's name,
 * its stats index, and the methods the worker lets evhttp hand to the routes.
 */
#ifndef TODOD_HTTP_METHOD_H
#define TODOD_HTTP_METHOD_H

#include <event2/http.h>

/* The method's name ("GET", ...); NULL for one HTTP_METHODS lacks. */
const char *http_method_name(enum evhttp_cmd_type cmd);

/* Its stats index (enum stats_method): its own, or STATS_OTHER_METHOD. */
int http_method_stats_index(enum evhttp_cmd_type cmd);

/* The SERVED methods as evhttp's bit mask, for evhttp_set_allowed_methods(). */
unsigned http_methods_served(void);

#endif
