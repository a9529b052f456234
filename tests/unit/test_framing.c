/* framing: what evhttp gets to see of a client's bytes, and every rejection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framing.h"

struct out {
    char buf[200000];
    size_t len;
};

static void collect(void *ctx, const char *p, size_t n)
{
    struct out *o = ctx;

    assert_true(o->len + n < sizeof(o->buf));
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

static const struct framing_limits limits = {
    .max_head = 4096, .max_target = 512, .max_body = 1000, .max_fields = 20};

/* A connection's input as the glue keeps it: unconsumed bytes stay in front. */
struct conn {
    struct framing f;
    struct out out;
    char pending[300000];
    size_t npending;
};

static struct conn *conn_new(void)
{
    struct conn *c = calloc(1, sizeof(*c));

    assert_non_null(c);
    framing_init(&c->f, &limits);
    return c;
}

static void feed(struct conn *c, const char *data, size_t n)
{
    size_t used;

    assert_true(c->npending + n <= sizeof(c->pending));
    memcpy(c->pending + c->npending, data, n);
    c->npending += n;
    used = framing_feed(&c->f, c->pending, c->npending, collect, &c->out);
    assert_true(used <= c->npending);
    memmove(c->pending, c->pending + used, c->npending - used);
    c->npending -= used;
}

static void feed_str(struct conn *c, const char *s)
{
    feed(c, s, strlen(s));
}

/* Feeds s whole, and again one byte at a time: both must give the same output. */
static struct conn *run(const char *s)
{
    struct conn *whole = conn_new(), *bytes = conn_new();
    size_t i, n = strlen(s);

    feed(whole, s, n);
    for (i = 0; i < n; i++)
        feed(bytes, s + i, 1);
    assert_string_equal(whole->out.buf, bytes->out.buf);
    assert_int_equal(whole->f.state, bytes->f.state);
    assert_int_equal(whole->f.completed, bytes->f.completed);
    free(bytes);
    return whole;
}

/* s is rejected with status, message containing fragment, and evhttp gets
 * what it already had (expect_prefix) followed by the stand-in or body end. */
static void assert_rejected(const char *s, int status, const char *fragment, const char *expect_out)
{
    struct conn *c = run(s);
    const char *msg = NULL;

    assert_int_equal(c->f.state, FRAMING_REJECTED);
    assert_int_equal(framing_rejection(&c->f, c->f.rejected_seq, &msg), status);
    if (strstr(msg, fragment) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", msg, fragment);
    assert_string_equal(c->out.buf, expect_out);
    /* Whatever follows is discarded. */
    feed_str(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_string_equal(c->out.buf, expect_out);
    free(c);
}

#define STANDIN "GET / HTTP/1.1\r\nHost: todod\r\n\r\n"
#define HEAD    "POST /todos HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

/* ---- what passes ---- */

static void simple_get_passes_unchanged(void **state)
{
    const char *req = "GET /todos/1 HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n";
    struct conn *c = run(req);

    assert_string_equal(c->out.buf, req);
    assert_int_equal(c->f.started, 1);
    assert_int_equal(c->f.completed, 1);
    assert_true(framing_idle(&c->f));
    free(c);
}

static void head_is_held_back_until_complete(void **state)
{
    struct conn *c = conn_new();

    feed_str(c, "GET / HTTP/1.1\r\nHost: x\r\n");
    assert_int_equal(c->out.len, 0);
    assert_false(framing_idle(&c->f));
    assert_int_equal(c->f.started, 1);
    feed_str(c, "\r\n");
    assert_string_equal(c->out.buf, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(framing_idle(&c->f));
    free(c);
}

static void pipelined_requests_pass_in_order(void **state)
{
    const char *two = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                      "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    struct conn *c = run(two);

    assert_string_equal(c->out.buf, two);
    assert_int_equal(c->f.started, 2);
    assert_int_equal(c->f.completed, 2);
    free(c);
}

static void content_length_body_passes(void **state)
{
    const char *req =
        "POST /todos HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n{\"title\":\"x\"}!";
    struct conn *c = run(req);

    assert_string_equal(c->out.buf, req);
    assert_true(framing_idle(&c->f));
    free(c);
}

static void same_content_length_twice_is_accepted(void **state)
{
    const char *req =
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nab";
    struct conn *c = run(req);

    assert_string_equal(c->out.buf, req);
    free(c);
}

static void chunked_body_is_passed_with_plain_chunk_sizes(void **state)
{
    struct conn *c = run(HEAD "5;name=value\r\nhello\r\n6 ; q=\"a \\\"b\"\r\n world\r\n"
                              "0\r\nX-Trailer: t\r\n\r\n");

    assert_string_equal(c->out.buf, HEAD "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    assert_true(framing_idle(&c->f));
    assert_int_equal(c->f.completed, 1);
    free(c);
}

static void transfer_encoding_chunked_is_case_insensitive(void **state)
{
    struct conn *c =
        run("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  CHUNKED \r\n\r\n0\r\n\r\n");

    assert_int_equal(c->f.completed, 1);
    assert_true(framing_idle(&c->f));
    free(c);
}

/* evhttp takes a body as chunked only when the value it keeps (leading spaces
 * and trailing blanks removed) is "chunked": anything else would leave the
 * chunks to be read as the next request. */
static void transfer_encoding_evhttp_would_not_see_as_chunked_is_400(void **state)
{
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , chunked\r\n\r\n", 400,
                    "Transfer-Encoding", STANDIN);
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked,\r\n\r\n", 400,
                    "Transfer-Encoding", STANDIN);
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\n\r\n", 400,
                    "Transfer-Encoding", STANDIN);
}

static void http_1_0_needs_no_host(void **state)
{
    struct conn *c = run("GET / HTTP/1.0\r\n\r\n");

    assert_string_equal(c->out.buf, "GET / HTTP/1.0\r\n\r\n");
    free(c);
}

static void empty_lines_before_a_request_are_dropped(void **state)
{
    struct conn *c = run("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");

    assert_string_equal(c->out.buf, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    free(c);
}

static void bare_lf_line_ends_are_accepted(void **state)
{
    struct conn *c = run("GET / HTTP/1.1\nHost: x\n\n");

    assert_int_equal(c->f.completed, 1);
    free(c);
}

static void expect_100_continue_and_absolute_targets_pass(void **state)
{
    struct conn *c =
        run("PUT http://x/todos/1?a=%20 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            "Content-Length: 1\r\n\r\nz");

    assert_int_equal(c->f.completed, 1);
    free(c);
}

static void request_line_is_kept_for_the_log(void **state)
{
    struct conn *c = run("DELETE /todos/9 HTTP/1.1\r\nHost: x\r\n\r\n");

    assert_string_equal(c->f.line, "DELETE /todos/9 HTTP/1.1");
    free(c);
}

/* ---- what is rejected ---- */

static void whitespace_before_colon_is_400(void **state)
{
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc", 400,
                    "whitespace before the colon", STANDIN);
}

static void unknown_transfer_coding_is_501(void **state)
{
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
                    "gzip is not supported", STANDIN);
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501,
                    "not supported", STANDIN);
}

static void chunked_not_last_or_twice_is_400(void **state)
{
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                    400, "last Transfer-Encoding", STANDIN);
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n",
                    400, "more than one Transfer-Encoding", STANDIN);
}

/* evhttp reads no body for HEAD or TRACE: one would run as the next request. */
static void head_or_trace_with_a_body_is_400(void **state)
{
    struct conn *c = run("HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");

    assert_int_equal(c->f.completed, 1);
    free(c);
    assert_rejected("HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /", 400,
                    "HEAD or TRACE request with a body", STANDIN);
    assert_rejected("TRACE / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
                    "HEAD or TRACE request with a body", STANDIN);
}

/* Targets evhttp's URI parser refuses, or reads an authority in. */
static void targets_evhttp_cannot_parse_are_400(void **state)
{
    assert_rejected("GET //a:b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request target", STANDIN);
    assert_rejected("GET http://a:b/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request target", STANDIN);
    assert_rejected("GET http://a:123456/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request target",
                    STANDIN);
}

static void conflicting_or_malformed_content_length_is_400(void **state)
{
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                    400, "conflicting Content-Length", STANDIN);
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +14\r\n\r\n", 400,
                    "invalid Content-Length", STANDIN);
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\n", 400,
                    "invalid Content-Length", STANDIN);
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n", 400,
                    "invalid Content-Length", STANDIN);
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", 400,
                    "invalid Content-Length", STANDIN);
}

static void content_length_with_transfer_encoding_is_400(void **state)
{
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n",
                    400, "both Content-Length and Transfer-Encoding", STANDIN);
}

static void malformed_chunk_sizes_are_400_and_end_the_body(void **state)
{
    assert_rejected(HEAD "0x11\r\n", 400, "invalid chunk size", HEAD "0\r\n\r\n");
    assert_rejected(HEAD "+11\r\n", 400, "invalid chunk size", HEAD "0\r\n\r\n");
    assert_rejected(HEAD " 11\r\n", 400, "invalid chunk size", HEAD "0\r\n\r\n");
    assert_rejected(HEAD "11;\r\n", 400, "invalid chunk size", HEAD "0\r\n\r\n");
    assert_rejected(HEAD "11;a=\"x\r\n", 400, "invalid chunk size", HEAD "0\r\n\r\n");
    assert_rejected(HEAD "\r\n", 400, "invalid chunk size", HEAD "0\r\n\r\n");
}

static void missing_crlf_after_chunk_data_is_400(void **state)
{
    assert_rejected(HEAD "3\r\nabc5\r\nhello\r\n0\r\n\r\n", 400, "no CRLF after chunk data",
                    HEAD "3\r\nabc\r\n0\r\n\r\n");
}

static void chunked_body_over_the_limit_is_413(void **state)
{
    assert_rejected(HEAD "3e9\r\n", 413, "larger than 1000 bytes", HEAD "0\r\n\r\n");
    assert_rejected(HEAD "ffffffffffffffffffff\r\n", 413, "too large", HEAD "0\r\n\r\n");
}

static void content_length_over_the_limit_is_413(void **state)
{
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413,
                    "larger than 1000 bytes", STANDIN);
}

static void other_http_versions_are_505_and_garbage_400(void **state)
{
    assert_rejected("GET / HTTP/1.9\r\nHost: x\r\n\r\n", 505, "HTTP/1.9 is not supported", STANDIN);
    assert_rejected("GET / HTTP/2.0\r\n\r\n", 505, "not supported", STANDIN);
    assert_rejected("GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400, "invalid HTTP version", STANDIN);
    assert_rejected("GET / http/1.1\r\nHost: x\r\n\r\n", 400, "invalid HTTP version", STANDIN);
    assert_rejected("GET /\r\n\r\n", 400, "malformed request line", STANDIN);
    assert_rejected("GET  / HTTP/1.1\r\n\r\n", 400, "malformed request", STANDIN);
}

static void unsupported_methods_are_501(void **state)
{
    assert_rejected("CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 501, "CONNECT is not implemented",
                    STANDIN);
    assert_rejected("BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501, "BREW is not implemented", STANDIN);
    assert_rejected("G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid method", STANDIN);
}

static void bad_targets_are_400_and_long_ones_414(void **state)
{
    char req[1200];

    assert_rejected("GET todos HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request target", STANDIN);
    assert_rejected("GET /a\"b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request target", STANDIN);
    assert_rejected("GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request target", STANDIN);
    assert_rejected("GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request target", STANDIN);
    assert_rejected("GET /\x80 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request target", STANDIN);
    memset(req, 'a', sizeof(req));
    memcpy(req, "GET /", 5);
    req[sizeof(req) - 1] = '\0';
    assert_rejected(req, 414, "longer than 512 bytes", STANDIN);
}

static void host_rules_are_enforced(void **state)
{
    assert_rejected("GET / HTTP/1.1\r\n\r\n", 400, "missing Host", STANDIN);
    assert_rejected("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host",
                    STANDIN);
}

static void folding_bare_cr_nul_and_control_characters_are_400(void **state)
{
    static const char nul_req[] = "GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n";
    struct conn *c = conn_new();
    const char *msg;

    assert_rejected("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400, "line folding",
                    STANDIN);
    assert_rejected("GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400, "bare CR", STANDIN);
    assert_rejected("GET / HTTP/1.1\r\nHost: x\r\nX: a\x01"
                    "b\r\n\r\n",
                    400, "invalid character", STANDIN);
    assert_rejected("GET / HTTP/1.1\r\nHost: x\r\nX\x7f: a\r\n\r\n", 400, "invalid character",
                    STANDIN);
    assert_rejected("GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n", 400, "malformed header", STANDIN);
    feed(c, nul_req, sizeof(nul_req) - 1);
    assert_int_equal(framing_rejection(&c->f, 1, &msg), 400);
    free(c);
}

static void oversized_heads_and_too_many_fields_are_431(void **state)
{
    char req[6000];
    size_t i, n = 0;

    n += (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: x\r\n");
    for (i = 0; i < 21; i++)
        n += (size_t)snprintf(req + n, sizeof(req) - n, "X-%zu: y\r\n", i);
    snprintf(req + n, sizeof(req) - n, "\r\n");
    assert_rejected(req, 431, "more than 20 header fields", STANDIN);
    n = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: x\r\nX: ");
    memset(req + n, 'v', sizeof(req) - n - 1);
    req[sizeof(req) - 1] = '\0';
    assert_rejected(req, 431, "larger than 4096 bytes", STANDIN);
}

static void unsupported_expectation_is_417(void **state)
{
    assert_rejected("POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417, "expectation",
                    STANDIN);
}

static void transfer_encoding_in_http_1_0_is_400(void **state)
{
    assert_rejected("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0",
                    STANDIN);
}

static void too_many_empty_lines_are_400(void **state)
{
    assert_rejected("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n", 400, "empty lines", STANDIN);
}

static void rejection_keeps_earlier_pipelined_requests_and_numbers_the_bad_one(void **state)
{
    struct conn *c = run("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost : x\r\n\r\n");
    const char *msg;

    assert_string_equal(c->out.buf, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" STANDIN);
    assert_int_equal(framing_rejection(&c->f, 1, &msg), 0);
    assert_int_equal(framing_rejection(&c->f, 2, &msg), 400);
    assert_int_equal(c->f.completed, 2);
    free(c);
}

/* ---- aborting (request_timeout) ---- */

static void abort_in_the_head_sends_the_standin(void **state)
{
    struct conn *c = conn_new();
    const char *msg;

    feed_str(c, "POST /todos HTTP/1.1\r\nHo");
    assert_true(framing_abort(&c->f, 408, "request not received in time", collect, &c->out));
    assert_string_equal(c->out.buf, STANDIN);
    assert_int_equal(framing_rejection(&c->f, 1, &msg), 408);
    free(c);
}

static void abort_between_chunks_ends_the_body(void **state)
{
    struct conn *c = conn_new();

    feed_str(c, HEAD "3\r\nabc\r\n");
    assert_true(framing_abort(&c->f, 408, "late", collect, &c->out));
    assert_string_equal(c->out.buf, HEAD "3\r\nabc\r\n0\r\n\r\n");
    free(c);
}

static void abort_inside_a_body_of_known_length_asks_for_a_close(void **state)
{
    struct conn *c = conn_new();

    feed_str(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    assert_false(framing_abort(&c->f, 408, "late", collect, &c->out));
    assert_int_equal(c->f.state, FRAMING_REJECTED);
    free(c);
}

static void abort_when_idle_does_nothing(void **state)
{
    struct conn *c = run("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    size_t before = c->out.len;

    assert_true(framing_abort(&c->f, 408, "late", collect, &c->out));
    assert_int_equal(c->out.len, before);
    assert_true(framing_idle(&c->f));
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(simple_get_passes_unchanged),
        cmocka_unit_test(head_is_held_back_until_complete),
        cmocka_unit_test(pipelined_requests_pass_in_order),
        cmocka_unit_test(content_length_body_passes),
        cmocka_unit_test(same_content_length_twice_is_accepted),
        cmocka_unit_test(chunked_body_is_passed_with_plain_chunk_sizes),
        cmocka_unit_test(transfer_encoding_chunked_is_case_insensitive),
        cmocka_unit_test(transfer_encoding_evhttp_would_not_see_as_chunked_is_400),
        cmocka_unit_test(head_or_trace_with_a_body_is_400),
        cmocka_unit_test(targets_evhttp_cannot_parse_are_400),
        cmocka_unit_test(http_1_0_needs_no_host),
        cmocka_unit_test(empty_lines_before_a_request_are_dropped),
        cmocka_unit_test(bare_lf_line_ends_are_accepted),
        cmocka_unit_test(expect_100_continue_and_absolute_targets_pass),
        cmocka_unit_test(request_line_is_kept_for_the_log),
        cmocka_unit_test(whitespace_before_colon_is_400),
        cmocka_unit_test(unknown_transfer_coding_is_501),
        cmocka_unit_test(chunked_not_last_or_twice_is_400),
        cmocka_unit_test(conflicting_or_malformed_content_length_is_400),
        cmocka_unit_test(content_length_with_transfer_encoding_is_400),
        cmocka_unit_test(malformed_chunk_sizes_are_400_and_end_the_body),
        cmocka_unit_test(missing_crlf_after_chunk_data_is_400),
        cmocka_unit_test(chunked_body_over_the_limit_is_413),
        cmocka_unit_test(content_length_over_the_limit_is_413),
        cmocka_unit_test(other_http_versions_are_505_and_garbage_400),
        cmocka_unit_test(unsupported_methods_are_501),
        cmocka_unit_test(bad_targets_are_400_and_long_ones_414),
        cmocka_unit_test(host_rules_are_enforced),
        cmocka_unit_test(folding_bare_cr_nul_and_control_characters_are_400),
        cmocka_unit_test(oversized_heads_and_too_many_fields_are_431),
        cmocka_unit_test(unsupported_expectation_is_417),
        cmocka_unit_test(transfer_encoding_in_http_1_0_is_400),
        cmocka_unit_test(too_many_empty_lines_are_400),
        cmocka_unit_test(rejection_keeps_earlier_pipelined_requests_and_numbers_the_bad_one),
        cmocka_unit_test(abort_in_the_head_sends_the_standin),
        cmocka_unit_test(abort_between_chunks_ends_the_body),
        cmocka_unit_test(abort_inside_a_body_of_known_length_asks_for_a_close),
        cmocka_unit_test(abort_when_idle_does_nothing),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
