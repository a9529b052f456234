/*
 * Request framing, strictly (RFC 9112): the gate between a client's socket and
 * evhttp. Every byte a client sends goes through framing_feed() before evhttp
 * parses it. A request head is held back until it is complete and valid, then
 * passed on whole; a body is passed on as it arrives, chunk sizes rewritten
 * without extensions. What evhttp sees is therefore always well-framed, so a
 * body can never be run as a request, whatever libevent's parser tolerates.
 *
 * A request that breaks the rules is rejected: it is replaced by a minimal
 * stand-in request (or, in a chunked body, by the end of the body) so that
 * evhttp dispatches it in its turn, after the requests before it on the same
 * connection; the dispatcher sees that its sequence number is the rejected one
 * and answers the rejection's status and message instead of running a handler.
 * Everything after a rejected request is discarded (the connection closes).
 *
 * Pure code: no I/O and no libevent, so it is unit-tested and fuzzed alone.
 */
#ifndef TODOD_FRAMING_H
#define TODOD_FRAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum framing_state {
    FRAMING_IDLE,        /* between requests */
    FRAMING_HEAD,        /* request line and header fields arriving (held back) */
    FRAMING_BODY_LENGTH, /* a Content-Length body arriving */
    FRAMING_CHUNK_SIZE,  /* chunked body: a chunk-size line */
    FRAMING_CHUNK_DATA,  /* chunked body: chunk data */
    FRAMING_CHUNK_CRLF,  /* chunked body: the CRLF after chunk data */
    FRAMING_TRAILER,     /* chunked body: trailer fields after the last chunk */
    FRAMING_REJECTED,    /* a request was rejected: all further input is discarded */
};

struct framing_limits {
    size_t max_head;   /* request line + header fields, bytes (431 beyond) */
    size_t max_target; /* request target, bytes (414 beyond) */
    size_t max_body;   /* body, bytes (413 beyond) */
    int max_fields;    /* header fields (431 beyond) */
};

#define FRAMING_LINE_MAX 256 /* the request line kept for the access log */
#define FRAMING_RING     16  /* per-request facts kept for pipelined requests */

struct framing {
    enum framing_state state;
    struct framing_limits lim;
    size_t scan;              /* head: bytes already validated */
    size_t skip;              /* head: empty lines before the request line */
    int fields;               /* header (or trailer) fields so far */
    int version_minor;        /* of the current request: HTTP/1.0 or 1.1 */
    bool is_options;          /* the method, for "OPTIONS *" */
    bool bodyless;            /* HEAD or TRACE: evhttp reads no body */
    int hosts;                /* Host fields */
    bool has_length, chunked; /* framing of the current request's body */
    uint64_t length;          /* Content-Length */
    uint64_t remaining;       /* body or chunk bytes still to pass on */
    uint64_t body_total;      /* chunked: data bytes so far */
    uint64_t started;         /* requests whose first byte arrived */
    uint64_t completed;       /* requests passed on whole (or their stand-ins) */
    /* The rejection, when state is FRAMING_REJECTED. */
    uint64_t rejected_seq; /* the sequence number (1-based) of the rejected request */
    int reject_status;
    char reject_msg[160];
    char line[FRAMING_LINE_MAX]; /* the current request's first line, as sent (cut) */
    /* HTTP/1.x minor version of request seq, at seq % FRAMING_RING (pipelining). */
    unsigned char minor_of[FRAMING_RING];
};

/* Receives the bytes to pass on to evhttp, in order. */
typedef void framing_emit_fn(void *ctx, const char *p, size_t n);

void framing_init(struct framing *f, const struct framing_limits *lim);

/*
 * Process input. in[0..len) is all the input not consumed yet (the caller keeps
 * unconsumed bytes and offers them again with what follows). Returns how many
 * bytes were consumed; emit is called for what evhttp must see. A head is
 * consumed only once complete, so the caller must offer at least max_head + 1
 * bytes when it has them (less is never a reason to reject).
 */
size_t framing_feed(struct framing *f, const char *in, size_t len, framing_emit_fn *emit,
                    void *ctx);

/*
 * The request in progress ran out of time (status 408) or must otherwise end.
 * Returns true when it could be ended cleanly (the stand-in or the end of a
 * chunked body was emitted, and the rejection is answered in its turn); false
 * when evhttp is in the middle of a body of known length: then the caller must
 * close the connection without an answer. Nothing to do (and true) when idle.
 */
bool framing_abort(struct framing *f, int status, const char *msg, framing_emit_fn *emit,
                   void *ctx);

/* No byte of an unfinished request is held or expected. */
bool framing_idle(const struct framing *f);

/* The rejection to answer for request number seq (1-based), or 0. */
int framing_rejection(const struct framing *f, uint64_t seq, const char **msg);

#endif
