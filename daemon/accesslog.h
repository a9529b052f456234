/*
 * The access log: one line per request, whatever log_level says, in the
 * Combined Log Format that nginx and Apache write (plus the duration in seconds
 * and the trace id), or as one JSON object per line. Everything a client sent
 * is escaped: control characters, '"', '\' and non-ASCII bytes are written as
 * \xHH, so no request can forge a log line or a terminal escape.
 */
#ifndef TODOD_ACCESSLOG_H
#define TODOD_ACCESSLOG_H

#include <stddef.h>
#include <time.h>

struct access_entry {
    const char *remote;       /* client address */
    const char *user;         /* the token's sub (NULL: "-") */
    struct timespec arrived;  /* CLOCK_REALTIME of the request's first byte */
    const char *method;       /* NULL: request_line is used whole */
    const char *target;       /* as sent, query string included */
    int version_minor;        /* HTTP/1.x */
    const char *request_line; /* a request that was rejected before parsing */
    int status;
    size_t bytes; /* body bytes sent */
    const char *referer, *user_agent;
    double duration;      /* seconds from the first byte to the answer */
    const char *trace_id; /* NULL: "-" */
};

/* Writes src[0..n) into dst with \xHH escapes (json: as "\\xHH"); returns the
 * length written, cut to fit cap (dst is always terminated). */
size_t accesslog_escape(char *dst, size_t cap, const char *src, size_t n, int json);

/* Formats e (format: enum conf_access_log_format) with a final newline. */
size_t accesslog_format(const struct access_entry *e, int format, char *buf, size_t cap);

#endif
