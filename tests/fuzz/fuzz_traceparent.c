/*
 * libFuzzer harness: trace_parse_traceparent() and trace_tracestate_valid()
 * on arbitrary bytes (the header values any client can send). Besides the
 * sanitizers' findings it checks what a caller relies on: an accepted
 * traceparent has non-zero ids and survives being written back as version 00;
 * a rejected one leaves the context invalid; an accepted tracestate is short
 * and printable.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Idaemon -D_GNU_SOURCE \
 *       tests/fuzz/fuzz_traceparent.c daemon/trace_context.c -o fuzz_traceparent
 *   ./fuzz_traceparent tests/fuzz/corpus/traceparent
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace_context.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 0xf];
    }
    out[2 * n] = '\0';
}

static int all_zero(const uint8_t *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (b[i] != 0)
            return 0;
    return 1;
}

static void check_traceparent(const char *s)
{
    struct trace_context ctx, again;
    char tid[33], sid[17], written[TRACE_PARENT_SIZE];

    memset(&ctx, 0xa5, sizeof(ctx));
    if (trace_parse_traceparent(s, &ctx) != 0) {
        if (ctx.valid || ctx.tracestate[0] != '\0')
            abort();
        return;
    }
    if (!ctx.valid || ctx.tracestate[0] != '\0' || all_zero(ctx.trace_id, TRACE_ID_SIZE) ||
        all_zero(ctx.span_id, TRACE_SPAN_ID_SIZE) || strlen(s) < 55)
        abort();
    /* What todod would propagate: the same ids as version 00. */
    hex(ctx.trace_id, TRACE_ID_SIZE, tid);
    hex(ctx.span_id, TRACE_SPAN_ID_SIZE, sid);
    snprintf(written, sizeof(written), "00-%s-%s-%02x", tid, sid, ctx.flags);
    if (strlen(written) != 55 || trace_parse_traceparent(written, &again) != 0 ||
        memcmp(again.trace_id, ctx.trace_id, TRACE_ID_SIZE) != 0 ||
        memcmp(again.span_id, ctx.span_id, TRACE_SPAN_ID_SIZE) != 0 || again.flags != ctx.flags)
        abort();
    trace_context_id_hex(&ctx, tid);
    if (strlen(tid) != 32)
        abort();
}

static void check_tracestate(const char *s)
{
    size_t i, n;

    if (!trace_tracestate_valid(s))
        return;
    n = strlen(s);
    if (n > TRACE_STATE_MAX)
        abort();
    for (i = 0; i < n; i++)
        if ((s[i] < 0x20 || s[i] > 0x7e) && s[i] != '\t')
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0'; /* a header value ends at its first NUL, as in libevent */
    check_traceparent(s);
    check_tracestate(s);
    free(s);
    return 0;
}
