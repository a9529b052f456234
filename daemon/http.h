/* HTTP plumbing shared by the handlers: request context, routing, replies. */
#ifndef TODOD_HTTP_H
#define TODOD_HTTP_H

#include <event2/http.h>
#include <json-c/json.h>
#include <stdint.h>
#include <time.h>

struct worker;

#define HTTP_MAX_PARAMS 2

struct http_req {
    struct worker *w;
    struct evhttp_request *req;
    int route;  /* index into the route table */
    int method; /* enum stats_method */
    struct timespec started;
    char *path; /* decoded path, owned; params point into it */
    const char *params[HTTP_MAX_PARAMS];
    void *state;                         /* handler-private */
    void (*cleanup)(struct http_req *r); /* frees state, if set */
};

typedef void (*http_handler)(struct http_req *r);

/* Install the router on an evhttp. */
void http_setup(struct worker *w);

/* Route patterns for the metrics (index = route), and their count. */
extern const char *const http_route_names[];
extern const int http_nroutes;

/* Replies: each one finishes the request (counts it, logs it, frees r). */
void http_reply_json(struct http_req *r, int status, struct json_object *obj); /* takes obj */
void http_reply_error(struct http_req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void http_reply_raw(struct http_req *r, int status, const char *content_type, const char *body,
                    size_t len);
void http_add_header(struct http_req *r, const char *name, const char *value);

/*
 * Body helpers for handlers of body-carrying requests. Each one answers the
 * request itself on failure (415, 413, 400 with a message) and returns NULL.
 */
struct json_object *http_read_json_object(struct http_req *r);

/* Query parameter as a positive integer: default when absent, -1 (and 400 sent) when bad. */
long http_query_long(struct http_req *r, const char *name, long def, long min, long max, int clamp);

#endif
