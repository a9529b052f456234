/*
 * W3C Trace Context (level 1) and the ids of spans: the traceparent and
 * tracestate headers parsed and checked, the sampling decision by trace id,
 * and the generator that draws new ids. Pure code: no tracer, no I/O, fuzzed
 * (tests/fuzz/fuzz_traceparent.c) and unit-tested alone.
 */
#ifndef TODOD_TRACE_CONTEXT_H
#define TODOD_TRACE_CONTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACE_ID_SIZE      16
#define TRACE_SPAN_ID_SIZE 8
#define TRACE_ID_HEX_SIZE  33  /* 32 lowercase hex digits and the NUL */
#define TRACE_PARENT_SIZE  56  /* "00-" 32 "-" 16 "-" 2, and the NUL */
#define TRACE_STATE_MAX    512 /* longer tracestate headers are dropped */
#define TRACE_FLAG_SAMPLED 0x01

/*
 * A trace as it reaches this process. After trace_parse_traceparent: the
 * caller's span (span_id) in trace trace_id. After trace_request_context (or
 * trace_http_server_start): the trace of a request, with the sampling decision
 * in flags; span_id is all zero when the trace starts here.
 */
struct trace_context {
    bool valid; /* false: no trace (tracing off, or nothing parsed) */
    uint8_t trace_id[TRACE_ID_SIZE];
    uint8_t span_id[TRACE_SPAN_ID_SIZE];
    uint8_t flags;                        /* W3C trace-flags; TRACE_FLAG_SAMPLED */
    char tracestate[TRACE_STATE_MAX + 1]; /* "" when absent or invalid */
};

/*
 * Parse a traceparent header value strictly (W3C Trace Context level 1):
 * version 00 is exactly 55 characters; lowercase hex only; an all-zero trace-id
 * or parent-id and version ff are invalid; a higher version is read as 00 when
 * its first 55 characters parse and are followed by the end or by "-" (the
 * spec's forward-compatibility rule). Optional whitespace around the value is
 * ignored. Returns 0, or -1 with out->valid false. out->tracestate is cleared.
 */
int trace_parse_traceparent(const char *traceparent, struct trace_context *out);

/*
 * A tracestate value todod keeps: at most TRACE_STATE_MAX characters, at most 32
 * list members of key=value with the W3C key and value grammar (printable
 * ASCII), no duplicate key. Empty members are allowed.
 */
bool trace_tracestate_valid(const char *tracestate);

/*
 * The sampling decision for a trace that has no parent decision: the lower 8
 * bytes of the trace id, big-endian and shifted right by one, below
 * ratio * 2^63 (as OpenTelemetry's TraceIdRatioBased sampler in Go): the same
 * trace id gets the same answer in every process; 0 never, 1 always.
 */
bool trace_ratio_sampled(const uint8_t trace_id[TRACE_ID_SIZE], double ratio);

/* ctx's trace id in lowercase hex, or "-" when ctx is NULL or not valid. */
void trace_context_id_hex(const struct trace_context *ctx, char out[TRACE_ID_HEX_SIZE]);

/* ---- ids ---- */

/*
 * xoshiro256**: ids must be unique and unpredictable enough for sampling by
 * trace id, not secret. One getrandom() seeds a worker's generator; an id then
 * costs a few nanoseconds, no system call.
 */
struct trace_rng {
    uint64_t s[4];
};

void trace_rng_seed(struct trace_rng *r);
uint64_t trace_rng_next(struct trace_rng *r);
/* n random bytes, never all zero (an all-zero id is invalid). */
void trace_rng_id(struct trace_rng *r, uint8_t *out, size_t n);

/* n bytes as 2n lowercase hex digits and a NUL at out. */
void trace_hex_encode(const uint8_t *in, size_t n, char *out);
bool trace_all_zero(const uint8_t *b, size_t n);
/* Optional whitespace (RFC 9110 5.6.3): a space or a tab. */
bool trace_is_ows(char c);

#endif
