/*
 * A request's life and the helpers handlers use: replies (JSON, errors, raw,
 * streamed), strict request bodies, query strings (parsed by http_parse.c). A
 * request has one owner and one way out: every reply function finishes it
 * (counts it, logs it, frees it), after which nothing may touch it.
 */
#ifndef TODOD_HTTP_H
#define TODOD_HTTP_H

#include <event2/http.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "app.h"
#include "conn.h"
#include "http_parse.h"
#include "trace.h"

#define HTTP_MAX_PARAMS 2

struct jwt_claims;

struct http_req {
    struct app *app;
    const struct app_listener *via; /* the listening socket it came through */
    struct evhttp_request *req;
    int route;     /* index into the route table (the last: no route) */
    int method;    /* enum stats_method */
    bool db_route; /* Server-Timing on the answer */
    struct conn_ref conn;
    struct timespec arrived; /* its first byte (monotonic) */
    struct timespec arrived_wall;
    int version_minor;
    double db_seconds; /* time spent waiting for PostgreSQL */
    struct timespec db_since;
    const char *db_server; /* who answered: "primary" or "standby" (NULL: nobody) */
    uint64_t db_lsn;       /* the answer's Todod-Lsn (0: none) */
    const char *params[HTTP_MAX_PARAMS];
    char *path; /* the request path, then the parameters cut out of it */
    char remote[64];
    char *rejected_line; /* a request framing rejected: its first line, for the log */
    int reject_status;   /* framing's answer to it, which the dispatcher sends (0: none) */
    const char *reject_msg;
    size_t bytes_sent;
    struct trace_context trace;          /* its trace (valid when tracing is on) */
    struct trace_span *span;             /* its SERVER span, when sampled */
    struct jwt_claims *claims;           /* its verified token (auth.c), or NULL */
    void *data;                          /* handler-private */
    void (*cleanup)(struct http_req *r); /* frees data, if set */
};

typedef void (*http_handler)(struct http_req *r);

/*
 * evhttp dispatched req: the request object, or NULL when it was answered
 * already (an unknown connection, no memory). A request the framing gate
 * rejected has reject_status set: the dispatcher answers it with
 * http_reply_rejected(), once it knows whether the line it sent names a
 * database-backed route.
 */
struct http_req *http_req_begin(const struct app_listener *via, struct evhttp_request *req);
void http_reply_rejected(struct http_req *r);

/* Replies: each one finishes the request. */
void http_reply_json(struct http_req *r, int status, struct json_object *obj); /* takes obj */
void http_reply_error(struct http_req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void http_reply_raw(struct http_req *r, int status, const char *content_type, const char *body,
                    size_t len);
void http_add_header(struct http_req *r, const char *name, const char *value);

/* A chunked answer: start, any number of writes, end (which finishes r). */
void http_stream_start(struct http_req *r, int status, const char *content_type);
void http_stream_write(struct http_req *r, const char *data, size_t len);
void http_stream_end(struct http_req *r);

/* Starts the request's trace once its route is known (NULL: none). */
void http_trace_start(struct http_req *r, const char *route);

/* The request's trace as a db_trace parent for its statements. */
#define HTTP_DB_TRACE(r) (&(struct db_trace){&(r)->trace, (r)->span})

/* The handler now waits for the database / has its answer (Server-Timing db). */
void http_db_wait(struct http_req *r);
void http_db_done(struct http_req *r);
/* ... and its answer came from the database: Server-Timing says which server,
 * Todod-Lsn the WAL position (API.md "Read consistency"; 0: none known). */
void http_db_answered(struct http_req *r, bool standby, uint64_t lsn);

/* The request's method as sent ("GET", ...). */
const char *http_method(const struct http_req *r);

/* A request header, or NULL. */
const char *http_header(const struct http_req *r, const char *name);

/*
 * The body as a JSON object, parsed strictly (415 without a JSON Content-Type,
 * 413 over max_body_size, 400 malformed, 422 not an object). On failure it
 * answers the request itself and returns NULL.
 */
struct json_object *http_read_json_object(struct http_req *r);

/*
 * Query parameter name as an integer: def when absent; out of [min, max] is
 * clamped (clamp) or refused. Answers 400 itself and returns -1 when bad.
 */
long http_query_long(struct http_req *r, const char *name, long def, long min, long max,
                     bool clamp);

/* Query parameter name of r as text (http_query_parse_text); answers
 * HTTP_QUERY_MALFORMED (400) and HTTP_QUERY_NOMEM (500) itself, so that r is
 * gone after them. */
enum http_query_text http_query_text(struct http_req *r, const char *name, char **out);

#endif
