/*
 * The OTLP/JSON encoder: a batch of spans as the body of an OTLP/HTTP export
 * request (ExportTraceServiceRequest), written without a json-c object tree.
 */
#ifndef TODOD_TRACE_OTLP_H
#define TODOD_TRACE_OTLP_H

#include <stddef.h>

struct conf;
struct export_body;
struct trace_span;
struct tracer;

/* What a byte asks of a string that holds it: an escape in JSON (a control
 * character, NUL included, a quote or a backslash), or a look at its UTF-8. */
enum { TRACE_BYTE_ESCAPE = 1, TRACE_BYTE_HIGH = 2 };

/* The byte classes found in s[0..len). */
unsigned trace_byte_classes(const char *s, size_t len);

/* The encoder's resources: json-c's scratch objects and the resource and
 * scope of every batch, rendered once; -1 when memory ran out. */
int trace_otlp_init(struct tracer *t, const struct conf *conf);
void trace_otlp_free(struct tracer *t);

/* The body for spans[0..n) into body (kept for retries): its length, or 0
 * when memory ran out. */
size_t trace_otlp_encode_batch(struct tracer *t, struct trace_span *const *spans, int n,
                               struct export_body *body);

#endif
