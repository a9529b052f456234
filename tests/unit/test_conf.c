/* conf_load: every key, every value type, every error, and the shipped file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "conf.h"
#include "log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------- */

static char *write_temp(const char *text)
{
    static char path[64];
    size_t len = strlen(text);
    int fd;

    snprintf(path, sizeof(path), "/tmp/test_conf-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
    return path;
}

static int load_text(const char *text, struct conf *c, char *err, size_t errlen)
{
    char *path = write_temp(text);
    int rc = conf_load(path, c, err, errlen);

    unlink(path);
    return rc;
}

static void load_ok(const char *text, struct conf *c)
{
    char err[512] = "";

    if (load_text(text, c, err, sizeof(err)) != 0)
        fail_msg("conf_load failed: %s", err);
}

/* Load text expecting an error on line `line` whose message contains fragment. */
static void load_fails(const char *text, int line, const char *fragment)
{
    struct conf c;
    char err[512] = "", where[32];

    assert_int_equal(load_text(text, &c, err, sizeof(err)), -1);
    snprintf(where, sizeof(where), ":%d: ", line);
    if (strstr(err, where) == NULL || strstr(err, fragment) == NULL)
        fail_msg("error \"%s\" lacks \"%s\" or \"%s\"", err, where, fragment);
    /* conf_load leaves the struct freed on error. */
    assert_null(c.database_url);
    assert_null(c.user);
    assert_null(c.pid_file);
}

/* key = value on line 3, behind a comment and a blank line; the error must say so. */
static void bad_value(const char *key, const char *value, const char *fragment)
{
    char text[512], expect[128];

    snprintf(text, sizeof(text), "# a comment\n\n%s = %s\n", key, value);
    snprintf(expect, sizeof(expect), "%s: expected %s", key, fragment);
    load_fails(text, 3, expect);
}

/* One key set from text; returns the loaded conf for the caller to check and free. */
static struct conf load_one(const char *key, const char *value)
{
    char text[512];
    struct conf c;

    snprintf(text, sizeof(text), "%s = %s\n", key, value);
    load_ok(text, &c);
    return c;
}

static int online_cpus_clamped(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        return 1;
    return n > CONF_MAX_WORKERS ? CONF_MAX_WORKERS : (int)n;
}

static void assert_string_or_null_equal(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

static void assert_conf_equal(const struct conf *a, const struct conf *b)
{
    assert_string_equal(a->listen, b->listen);
    assert_int_equal(a->listen_addrlen, b->listen_addrlen);
    assert_memory_equal(&a->listen_addr, &b->listen_addr, a->listen_addrlen);
    assert_int_equal(a->workers, b->workers);
    assert_int_equal(a->workers_auto, b->workers_auto);
    assert_string_equal(a->database_url, b->database_url);
    assert_int_equal(a->db_connections, b->db_connections);
    assert_int_equal(a->max_body_size, b->max_body_size);
    assert_int_equal(a->perf_max_messages, b->perf_max_messages);
    assert_int_equal(a->perf_max_batch, b->perf_max_batch);
    assert_true(a->request_timeout == b->request_timeout);
    assert_true(a->keepalive_timeout == b->keepalive_timeout);
    assert_true(a->shutdown_timeout == b->shutdown_timeout);
    assert_int_equal(a->log_level, b->log_level);
    assert_int_equal(a->access_log, b->access_log);
    assert_string_or_null_equal(a->user, b->user);
    assert_string_or_null_equal(a->pid_file, b->pid_file);
}

static void assert_ipv4_listen(const struct conf *c, const char *addr, int port)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&c->listen_addr;
    struct in_addr want;

    assert_int_equal(inet_pton(AF_INET, addr, &want), 1);
    assert_int_equal(c->listen_addrlen, sizeof(*sin));
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), port);
    assert_memory_equal(&sin->sin_addr, &want, sizeof(want));
}

static void assert_ipv6_listen(const struct conf *c, const char *addr, int port)
{
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&c->listen_addr;
    struct in6_addr want;

    assert_int_equal(inet_pton(AF_INET6, addr, &want), 1);
    assert_int_equal(c->listen_addrlen, sizeof(*sin6));
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(sin6->sin6_port), port);
    assert_memory_equal(&sin6->sin6_addr, &want, sizeof(want));
}

/* ---- defaults and syntax ---------------------------------------------- */

static void defaults_when_file_is_empty(void **state)
{
    struct conf c, d;

    load_ok("", &c);
    assert_string_equal(c.listen, "127.0.0.1:3000");
    assert_ipv4_listen(&c, "127.0.0.1", 3000);
    assert_true(c.workers_auto);
    assert_int_equal(c.workers, online_cpus_clamped());
    assert_string_equal(c.database_url, "");
    assert_int_equal(c.db_connections, 1);
    assert_int_equal(c.max_body_size, 1024 * 1024);
    assert_int_equal(c.perf_max_messages, 1000000);
    assert_int_equal(c.perf_max_batch, 10000);
    assert_true(c.request_timeout == 10.0);
    assert_true(c.keepalive_timeout == 60.0);
    assert_true(c.shutdown_timeout == 10.0);
    assert_int_equal(c.log_level, LOGL_INFO);
    assert_false(c.access_log);
    assert_null(c.user);
    assert_null(c.pid_file);

    conf_defaults(&d);
    assert_conf_equal(&c, &d);
    conf_free(&d);
    conf_free(&c);
}

static void comments_and_blank_lines_are_ignored(void **state)
{
    struct conf c, d;

    load_ok("# comment\n\n   \n\t# indented comment\n#workers = 3\n", &c);
    conf_defaults(&d);
    assert_conf_equal(&c, &d);
    conf_free(&d);
    conf_free(&c);
}

static void comment_after_value_is_cut(void **state)
{
    struct conf c;

    load_ok("workers = 4 # four of them\n", &c);
    assert_int_equal(c.workers, 4);
    conf_free(&c);
}

static void hash_not_after_whitespace_is_part_of_value(void **state)
{
    struct conf c = load_one("database_url", "postgresql://u:pa#ss@db/todo");

    assert_string_equal(c.database_url, "postgresql://u:pa#ss@db/todo");
    conf_free(&c);
}

static void whitespace_and_crlf_around_key_and_value_are_trimmed(void **state)
{
    struct conf c;

    load_ok("  workers\t=\t 3  \r\n\tlog_level=debug\r\n", &c);
    assert_int_equal(c.workers, 3);
    assert_int_equal(c.log_level, LOGL_DEBUG);
    conf_free(&c);
}

static void last_line_without_newline_is_parsed(void **state)
{
    struct conf c;

    load_ok("workers = 2", &c);
    assert_int_equal(c.workers, 2);
    conf_free(&c);
}

static void every_key_set_at_once(void **state)
{
    struct conf c;

    load_ok("listen = [::1]:8080\n"
            "workers = 5\n"
            "database_url = host=/tmp dbname=todo\n"
            "db_connections = 4\n"
            "max_body_size = 2m\n"
            "perf_max_messages = 500\n"
            "perf_max_batch = 50\n"
            "request_timeout = 1.5\n"
            "keepalive_timeout = 2\n"
            "shutdown_timeout = 3\n"
            "log_level = warn\n"
            "access_log = on\n"
            "user = todod\n"
            "pid_file = /run/todod.pid\n",
            &c);
    assert_string_equal(c.listen, "[::1]:8080");
    assert_ipv6_listen(&c, "::1", 8080);
    assert_int_equal(c.workers, 5);
    assert_false(c.workers_auto);
    assert_string_equal(c.database_url, "host=/tmp dbname=todo");
    assert_int_equal(c.db_connections, 4);
    assert_int_equal(c.max_body_size, 2 * 1024 * 1024);
    assert_int_equal(c.perf_max_messages, 500);
    assert_int_equal(c.perf_max_batch, 50);
    assert_true(c.request_timeout == 1.5);
    assert_true(c.keepalive_timeout == 2.0);
    assert_true(c.shutdown_timeout == 3.0);
    assert_int_equal(c.log_level, LOGL_WARN);
    assert_true(c.access_log);
    assert_string_equal(c.user, "todod");
    assert_string_equal(c.pid_file, "/run/todod.pid");
    conf_free(&c);
}

static void shipped_conf_parses_to_defaults(void **state)
{
    const char *srcdir = getenv("TODOD_SRCDIR");
    char path[4096], err[512] = "";
    struct conf c, d;

    snprintf(path, sizeof(path), "%s/conf/todod.conf", srcdir != NULL ? srcdir : ".");
    if (conf_load(path, &c, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    conf_defaults(&d);
    assert_conf_equal(&c, &d);
    conf_free(&d);
    conf_free(&c);
}

/*
 * The shipped file lists every key commented out with its default: uncommented,
 * it must parse to the defaults too. user and pid_file have no default, so the
 * file shows an example for them instead.
 */
static void shipped_conf_commented_values_are_the_defaults(void **state)
{
    const char *srcdir = getenv("TODOD_SRCDIR");
    char path[4096], line[1024], text[8192] = "";
    struct conf c, d;
    FILE *f;

    snprintf(path, sizeof(path), "%s/conf/todod.conf", srcdir != NULL ? srcdir : ".");
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        /* "#key = value" (no space after '#') is a commented-out setting. */
        if (line[0] == '#' && line[1] != ' ' && line[1] != '\n' && strchr(line, '=') != NULL)
            strncat(text, line + 1, sizeof(text) - strlen(text) - 1);
    }
    fclose(f);
    load_ok(text, &c);
    assert_non_null(c.user);
    assert_non_null(c.pid_file);
    free(c.user);
    free(c.pid_file);
    c.user = c.pid_file = NULL;
    conf_defaults(&d);
    assert_conf_equal(&c, &d);
    conf_free(&d);
    conf_free(&c);
}

/* ---- listen ----------------------------------------------------------- */

static void listen_ipv4_literal_sets_address_and_port(void **state)
{
    struct conf c = load_one("listen", "0.0.0.0:8080");

    assert_string_equal(c.listen, "0.0.0.0:8080");
    assert_ipv4_listen(&c, "0.0.0.0", 8080);
    conf_free(&c);
}

static void listen_ipv6_literal_in_brackets_sets_address_and_port(void **state)
{
    struct conf c = load_one("listen", "[::1]:3000");

    assert_string_equal(c.listen, "[::1]:3000");
    assert_ipv6_listen(&c, "::1", 3000);
    conf_free(&c);

    c = load_one("listen", "[::]:65535");
    assert_ipv6_listen(&c, "::", 65535);
    conf_free(&c);
}

static void listen_rejects_names_missing_brackets_and_bad_ports(void **state)
{
    static const char *bad[] = {
        "localhost:3000",  "127.0.0.1",     "127.0.0.1:",    "127.0.0.1:0",
        "127.0.0.1:65536", "127.0.0.1:80x", "127.0.0.1:-80", "256.0.0.1:80",
        "::1:3000",        "[::1]3000",     "[::1:3000",     "[127.0.0.1]:80",
        ":3000",           "[]:3000",       "127.0.0.1:+80", "[::1]:99999999999999999999",
    };
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        bad_value("listen", bad[i], "an IPv4 address:port");
}

static void admin_listen_is_unset_by_default_and_parsed_like_listen(void **state)
{
    struct conf c = load_one("admin_listen", "127.0.0.2:9100");
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&c.admin_listen_addr;

    assert_string_equal(c.admin_listen, "127.0.0.2:9100");
    assert_int_equal(c.admin_listen_addrlen, sizeof(*sin));
    assert_int_equal(ntohs(sin->sin_port), 9100);
    assert_ipv4_listen(&c, "127.0.0.1", 3000); /* listen keeps its own */
    conf_free(&c);

    c = load_one("admin_listen", "");
    assert_string_equal(c.admin_listen, "");
    assert_int_equal(c.admin_listen_addrlen, 0);
    conf_free(&c);

    load_ok("", &c);
    assert_string_equal(c.admin_listen, "");
    conf_free(&c);

    bad_value("admin_listen", "localhost:9100", "an IPv4 address:port");
}

/* ---- workers ---------------------------------------------------------- */

static void workers_auto_uses_online_cpus(void **state)
{
    struct conf c = load_one("workers", "auto");

    assert_true(c.workers_auto);
    assert_int_equal(c.workers, online_cpus_clamped());
    conf_free(&c);
}

static void workers_number_is_used_as_given(void **state)
{
    struct conf c = load_one("workers", "64");

    assert_false(c.workers_auto);
    assert_int_equal(c.workers, 64);
    conf_free(&c);
}

static void workers_rejects_words_zero_and_too_many(void **state)
{
    struct conf c;
    char err[512];

    assert_int_equal(load_text("\n\nworkers = zero\n", &c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":3: workers: expected a number from 1 to 64 or \"auto\", "
                                "got \"zero\""));
    bad_value("workers", "0", "a number from 1 to 64 or \"auto\"");
    bad_value("workers", "65", "a number from 1 to 64");
    bad_value("workers", "-1", "a number from 1 to 64");
    bad_value("workers", "autox", "a number from 1 to 64");
}

/* ---- integers --------------------------------------------------------- */

static void db_connections_within_range(void **state)
{
    struct conf c = load_one("db_connections", "64");

    assert_int_equal(c.db_connections, 64);
    conf_free(&c);
    bad_value("db_connections", "0", "a number from 1 to 64");
    bad_value("db_connections", "65", "a number from 1 to 64");
}

static void perf_limits_within_range(void **state)
{
    struct conf c;

    load_ok("perf_max_messages = 100000000\nperf_max_batch = 1\n", &c);
    assert_int_equal(c.perf_max_messages, 100000000);
    assert_int_equal(c.perf_max_batch, 1);
    conf_free(&c);
    bad_value("perf_max_messages", "100000001", "a number from 1 to 100000000");
    bad_value("perf_max_messages", "0", "a number from 1 to 100000000");
    bad_value("perf_max_batch", "100001", "a number from 1 to 100000");
}

static void numbers_reject_trailing_junk(void **state)
{
    bad_value("workers", "10x", "a number");
    bad_value("db_connections", "1 0", "a number");
    bad_value("perf_max_batch", "10x", "a number");
    bad_value("max_body_size", "10x", "a size");
    bad_value("request_timeout", "10x", "a number of seconds");
    bad_value("perf_max_messages", "0x10", "a number");
}

static void numbers_reject_overflow(void **state)
{
    bad_value("perf_max_messages", "99999999999999999999999", "a number from 1 to 100000000");
    bad_value("max_body_size", "99999999999999999999999", "a size");
    bad_value("max_body_size", "9999999999999999k", "a size");
    bad_value("request_timeout",
              "1"
              "000000000000000000000000000000000000000000000000000"
              "000000000000000000000000000000000000000000000000000000"
              "000000000000000000000000000000000000000000000000000000"
              "000000000000000000000000000000000000000000000000000000"
              "000000000000000000000000000000000000000000000000000000"
              "00000000000000000000000000000000000000000000000000000",
              "a number of seconds");
}

/* ---- sizes ------------------------------------------------------------ */

static void max_body_size_accepts_bytes_and_k_m_suffixes(void **state)
{
    static const struct {
        const char *text;
        size_t bytes;
    } cases[] = {
        {"1", 1},
        {"512", 512},
        {"4k", 4096},
        {"4K", 4096},
        {"2m", 2 * 1024 * 1024},
        {"64M", 64 * 1024 * 1024},
        {"65536k", 64 * 1024 * 1024},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf c = load_one("max_body_size", cases[i].text);

        assert_int_equal(c.max_body_size, cases[i].bytes);
        conf_free(&c);
    }
}

static void max_body_size_rejects_out_of_range_and_bad_suffixes(void **state)
{
    static const char *bad[] = {"0",   "0k", "65m", "65537k", "67108865", "1g",
                                "1kb", "k",  "-1k", "1.5m",   "m1"};
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        bad_value("max_body_size", bad[i], "a size from 1 to 64m");
}

/* ---- seconds ---------------------------------------------------------- */

static void seconds_accept_decimals(void **state)
{
    struct conf c;

    load_ok("request_timeout = 0.5\nkeepalive_timeout = 86400\nshutdown_timeout = .25\n", &c);
    assert_true(c.request_timeout == 0.5);
    assert_true(c.keepalive_timeout == 86400.0);
    assert_true(c.shutdown_timeout == 0.25);
    conf_free(&c);
}

static void seconds_reject_zero_negative_too_large_and_non_decimal(void **state)
{
    static const char *bad[] = {"0",   "0.0",  "-1",    "86400.5", "1e3", "inf",
                                "nan", "0x10", "1.2.3", ".",       "10s", "+5"};
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bad_value("request_timeout", bad[i], "a number of seconds greater than 0");
        bad_value("keepalive_timeout", bad[i], "a number of seconds");
        bad_value("shutdown_timeout", bad[i], "a number of seconds");
    }
}

static void drain_delay_accepts_zero_and_decimals(void **state)
{
    struct conf c = load_one("drain_delay", "0");

    assert_true(c.drain_delay == 0.0);
    conf_free(&c);
    c = load_one("drain_delay", "1.5");
    assert_true(c.drain_delay == 1.5);
    conf_free(&c);
    bad_value("drain_delay", "-1", "a number of seconds from 0 to 86400");
    bad_value("drain_delay", "86401", "a number of seconds from 0 to 86400");
}

/* ---- the keys of the connection, tracing and cluster features --------- */

static void new_keys_have_their_defaults(void **state)
{
    struct conf c;

    load_ok("", &c);
    assert_int_equal(c.max_connections, 1024);
    assert_int_equal(c.db_write_connections, 4);
    assert_true(c.db_prepared);
    assert_int_equal(c.access_log_format, CONF_LOG_COMBINED);
    assert_true(c.drain_delay == 0.0);
    assert_null(c.otlp_endpoint);
    assert_null(c.perf_nodes);
    assert_true(c.trace_sample_ratio == 1.0);
    assert_string_equal(c.service_name, "todod");
    conf_free(&c);
}

static void access_log_format_is_combined_or_json(void **state)
{
    struct conf c = load_one("access_log_format", "json");

    assert_int_equal(c.access_log_format, CONF_LOG_JSON);
    conf_free(&c);
    bad_value("access_log_format", "common", "combined or json");
}

static void auth_is_off_or_jwt_and_jwt_needs_keys(void **state)
{
    struct conf c;
    char err[512] = "";

    load_ok("", &c);
    assert_int_equal(c.auth, CONF_AUTH_OFF);
    assert_true(c.protected_mode);
    assert_int_equal(c.jwt_leeway, 30);
    assert_true(c.perf_max_duration == 3600);
    assert_null(c.jwt_keys);
    conf_free(&c);
    load_ok("auth = jwt\njwt_keys = /etc/todod/jwks.json\njwt_audience = api\n"
            "jwt_issuer = https://idp/\njwt_leeway = 0\nprotected_mode = off\n",
            &c);
    assert_int_equal(c.auth, CONF_AUTH_JWT);
    assert_string_equal(c.jwt_keys, "/etc/todod/jwks.json");
    assert_string_equal(c.jwt_audience, "api");
    assert_string_equal(c.jwt_issuer, "https://idp/");
    assert_int_equal(c.jwt_leeway, 0);
    assert_false(c.protected_mode);
    conf_free(&c);
    bad_value("auth", "basic", "off or jwt");
    bad_value("jwt_leeway", "86401", "a number from 0 to 86400");
    assert_int_equal(load_text("auth = jwt\n", &c, err, sizeof(err)), -1);
    if (strstr(err, "auth = jwt needs jwt_keys") == NULL)
        fail_msg("error \"%s\" does not say that jwt needs jwt_keys", err);
    assert_null(c.database_url);
}

static void trace_sample_ratio_is_between_zero_and_one(void **state)
{
    static const char *bad[] = {"1.5", "-0.1", "2", "abc", "1e-3", ""};
    struct conf c = load_one("trace_sample_ratio", "0.25");
    size_t i;

    assert_true(c.trace_sample_ratio == 0.25);
    conf_free(&c);
    c = load_one("trace_sample_ratio", "0");
    assert_true(c.trace_sample_ratio == 0.0);
    conf_free(&c);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (bad[i][0] != '\0')
            bad_value("trace_sample_ratio", bad[i], "a number from 0 to 1");
}

static void otlp_endpoint_must_be_an_http_or_https_url(void **state)
{
    static const char *bad[] = {"127.0.0.1:4318",    "https://",          "http://",
                                "http:///v1/traces", "http://user@host/", "ftp://x",
                                "https://user@h/",   "httpss://h/"};
    struct conf c = load_one("otlp_endpoint", "http://127.0.0.1:4318/v1/traces");
    size_t i;

    assert_string_equal(c.otlp_endpoint, "http://127.0.0.1:4318/v1/traces");
    conf_free(&c);
    c = load_one("otlp_endpoint", "HTTPS://collector.example/v1/traces");
    assert_string_equal(c.otlp_endpoint, "HTTPS://collector.example/v1/traces");
    conf_free(&c);
    c = load_one("otlp_endpoint", "");
    assert_null(c.otlp_endpoint);
    conf_free(&c);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        bad_value("otlp_endpoint", bad[i], "an http:// or https:// URL");
}

static void perf_nodes_is_a_list_of_http_or_https_urls(void **state)
{
    struct conf c = load_one("perf_nodes", "http://127.0.0.2:3000, https://node3.example:3000");

    assert_string_equal(c.perf_nodes, "http://127.0.0.2:3000, https://node3.example:3000");
    conf_free(&c);
    bad_value("perf_nodes", "http://a:1,https://", "comma-separated http://");
    bad_value("perf_nodes", "http://127.0.0.2:3000,,http://x", "comma-separated http://");
    bad_value("perf_nodes", "127.0.0.2:3000", "comma-separated http://");
    bad_value("perf_nodes", "http://a:1,", "comma-separated http://");
}

/* tls_ca_file pointing at what is not a CA file: conf_load fails, saying which and why. */
static void tls_ca_file_fails(const char *ca_text, const char *fragment)
{
    char text[256], err[512] = "", ca[64];
    struct conf c;
    int rc;

    snprintf(ca, sizeof(ca), "%s", ca_text != NULL ? write_temp(ca_text) : "/nonexistent/ca.pem");
    snprintf(text, sizeof(text), "tls_ca_file = %s\n", ca);
    rc = load_text(text, &c, err, sizeof(err));
    if (ca_text != NULL)
        unlink(ca);
    assert_int_equal(rc, -1);
    if (strstr(err, "tls_ca_file") == NULL || strstr(err, fragment) == NULL)
        fail_msg("error \"%s\" lacks \"tls_ca_file\" or \"%s\"", err, fragment);
    assert_null(c.tls_ca_pem);
}

static void tls_ca_file_must_hold_pem_certificates(void **state)
{
    struct conf c = load_one("otlp_endpoint", "https://collector.example/");

    assert_null(c.tls_ca_file); /* unset: the system's store */
    assert_null(c.tls_ca_pem);
    conf_free(&c);
    tls_ca_file_fails(NULL, "cannot open");
    tls_ca_file_fails("", "holds no PEM certificate");
    tls_ca_file_fails("not a certificate\n", "holds no PEM certificate");
    tls_ca_file_fails("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
                      "-----END CERTIFICATE-----\n",
                      "is not readable PEM certificates");
}

static void max_connections_and_write_connections_within_range(void **state)
{
    struct conf c = load_one("max_connections", "1048576");

    assert_int_equal(c.max_connections, 1048576);
    conf_free(&c);
    bad_value("max_connections", "0", "a number from 1 to 1048576");
    c = load_one("db_write_connections", "64");
    assert_int_equal(c.db_write_connections, 64);
    conf_free(&c);
    bad_value("db_write_connections", "0", "a number from 1 to 64");
    c = load_one("db_prepared", "off");
    assert_false(c.db_prepared);
    conf_free(&c);
}

static void key_table_is_enumerable(void **state)
{
    size_t i, n = conf_nkeys();
    bool seen_listen = false, seen_perf_nodes = false;

    assert_true(n >= 23);
    for (i = 0; i < n; i++) {
        assert_non_null(conf_key_name(i));
        seen_listen |= strcmp(conf_key_name(i), "listen") == 0;
        seen_perf_nodes |= strcmp(conf_key_name(i), "perf_nodes") == 0;
    }
    assert_null(conf_key_name(n));
    assert_true(seen_listen && seen_perf_nodes);
    assert_string_equal(conf_key_default(0), "127.0.0.1:3000");
}

/* ---- enums and flags -------------------------------------------------- */

static void log_level_accepts_each_level(void **state)
{
    static const struct {
        const char *text;
        int level;
    } cases[] = {
        {"error", LOGL_ERROR},
        {"warn", LOGL_WARN},
        {"info", LOGL_INFO},
        {"debug", LOGL_DEBUG},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf c = load_one("log_level", cases[i].text);

        assert_int_equal(c.log_level, cases[i].level);
        conf_free(&c);
    }
}

static void log_level_rejects_unknown_level(void **state)
{
    bad_value("log_level", "verbose", "error, warn, info or debug");
    bad_value("log_level", "3", "error, warn, info or debug");
}

static void access_log_accepts_on_off_and_synonyms(void **state)
{
    static const struct {
        const char *text;
        bool on;
    } cases[] = {
        {"on", true},  {"off", false}, {"true", true}, {"false", false},
        {"yes", true}, {"no", false},  {"ON", true},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf c = load_one("access_log", cases[i].text);

        assert_int_equal(c.access_log, cases[i].on);
        conf_free(&c);
    }
}

static void access_log_rejects_other_words(void **state)
{
    bad_value("access_log", "maybe", "on or off");
    bad_value("access_log", "1", "on or off");
}

/* ---- strings ---------------------------------------------------------- */

static void database_url_conninfo_keeps_inner_spaces(void **state)
{
    struct conf c;

    load_ok("database_url =   host=/tmp  dbname=todo user=me  \n", &c);
    assert_string_equal(c.database_url, "host=/tmp  dbname=todo user=me");
    conf_free(&c);
}

static void database_url_surrounding_quotes_are_removed(void **state)
{
    struct conf c;

    load_ok("database_url = \"host=db password='a #b'\"  # the hash above is kept\n", &c);
    assert_string_equal(c.database_url, "host=db password='a #b'");
    conf_free(&c);
}

static void database_url_may_be_empty(void **state)
{
    struct conf c;

    load_ok("database_url =\n", &c);
    assert_string_equal(c.database_url, "");
    conf_free(&c);
    load_ok("database_url = \"\"\n", &c);
    assert_string_equal(c.database_url, "");
    conf_free(&c);
}

/* Load text expecting an error that contains fragment and does not quote secret. */
static void load_fails_without(const char *text, const char *fragment, const char *secret)
{
    struct conf c;
    char err[512] = "";

    assert_int_equal(load_text(text, &c, err, sizeof(err)), -1);
    if (strstr(err, fragment) == NULL || strstr(err, secret) != NULL)
        fail_msg("error \"%s\" lacks \"%s\" or quotes \"%s\"", err, fragment, secret);
    assert_null(c.database_url);
}

/*
 * A string libpq cannot parse would reach every worker (none could connect),
 * and libpq's message quotes it, password and all: an error at load, which
 * keeps what libpq says but none of the string.
 */
static void database_url_libpq_cannot_parse_is_an_error_that_does_not_quote_it(void **state)
{
    load_fails("database_url = postgresql://todo:pw-secret@[db/todo\n", 1,
               "database_url: expected a libpq connection string");
    load_fails_without("database_url = postgresql://todo:pw-secret@[db/todo\n",
                       "looking for matching \"]\" in IPv6 host address in URI: \"...\")",
                       "pw-secret");
    load_fails_without("database_url = host=db password=pw secret\n",
                       "missing \"=\" after \"...\" in connection info string", "secret\"");
    load_fails_without("database_url = host=db password='pw-secret\n", "unterminated quoted string",
                       "pw-secret");
    load_fails_without("database_url = postgresql://todo:pw-secret@db/todo?pw-secret=1\n",
                       "invalid URI query parameter: \"...\"", "pw-secret");
}

static void database_url_env_libpq_cannot_parse_is_an_error_that_does_not_quote_it(void **state)
{
    struct conf c;
    char err[512] = "";
    int rc;

    setenv("DATABASE_URL", "postgresql://todo:pw-secret@[db/todo", 1);
    rc = load_text("workers = 2\n", &c, err, sizeof(err));
    unsetenv("DATABASE_URL"); /* before any assertion, which would leave it to the next test */
    assert_int_equal(rc, -1);
    if (strstr(err, ": DATABASE_URL: expected a libpq connection string") == NULL ||
        strstr(err, "pw-secret") != NULL)
        fail_msg("error \"%s\" does not name DATABASE_URL or quotes its password", err);
    assert_null(c.database_url);
}

static void long_values_are_read_whole(void **state)
{
    size_t n = 10000, len = strlen("database_url = "), key = strlen("dbname=");
    char *text = malloc(len + n + 2);
    struct conf c;

    assert_non_null(text);
    memcpy(text, "database_url = dbname=", len + key);
    memset(text + len + key, 'x', n - key);
    strcpy(text + len + n, "\n");
    load_ok(text, &c);
    assert_int_equal(strlen(c.database_url), n);
    conf_free(&c);
    free(text);
}

static void user_and_pid_file_are_set(void **state)
{
    struct conf c;

    load_ok("user = todod\npid_file = \"/run/todod/todod.pid\"\n", &c);
    assert_string_equal(c.user, "todod");
    assert_string_equal(c.pid_file, "/run/todod/todod.pid");
    conf_free(&c);
}

static void user_and_pid_file_reject_empty_quoted_value(void **state)
{
    bad_value("user", "\"\"", "a non-empty string");
    bad_value("pid_file", "\"\"", "a non-empty string");
}

static void quote_without_closing_quote_is_an_error(void **state)
{
    load_fails("user = todod\ndatabase_url = \"host=db\n", 2, "database_url: missing closing");
}

static void text_after_closing_quote_is_an_error(void **state)
{
    load_fails("user = \"todod\" x\n", 1, "user: unexpected text after the closing");
    load_fails("user = \"todod\"#x\n", 1, "user: unexpected text after the closing");
}

/* ---- structural errors ------------------------------------------------ */

static void unknown_key_names_key_and_line(void **state)
{
    struct conf c;
    char err[512];

    assert_int_equal(load_text("workers = 2\n# x\nfoo = bar\n", &c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":3: unknown key \"foo\""));
    assert_null(c.database_url);
}

static void keys_are_case_sensitive(void **state)
{
    load_fails("Workers = 2\n", 1, "unknown key \"Workers\"");
}

static void duplicate_key_names_first_line(void **state)
{
    load_fails("\n\nworkers = 2\nlog_level = info\nworkers = 3\n", 5,
               "duplicate key \"workers\" (first set on line 3)");
}

static void line_without_equals_is_an_error(void **state)
{
    load_fails("workers = 2\nworkers 3\n", 2, "expected \"key = value\", got \"workers 3\"");
    load_fails("workers # = 3\n", 1, "expected \"key = value\"");
}

static void missing_value_is_an_error(void **state)
{
    load_fails("# c\nworkers =\n", 2, "missing value for \"workers\"");
    load_fails("user =   # nobody\n", 1, "missing value for \"user\"");
}

static void missing_key_is_an_error(void **state)
{
    load_fails("= 3\n", 1, "missing key");
}

static void nul_byte_in_line_is_an_error(void **state)
{
    char *path = write_temp("");
    struct conf c;
    char err[512];
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fwrite("workers = 2\nuser = a\0b\n", 1, 23, f);
    fclose(f);
    assert_int_equal(conf_load(path, &c, err, sizeof(err)), -1);
    unlink(path);
    assert_non_null(strstr(err, ":2: line contains a NUL byte"));
}

static void error_after_valid_strings_frees_them(void **state)
{
    /* valgrind and ASan check that user and pid_file from lines 1-2 are freed. */
    load_fails("user = u\npid_file = /p\ndatabase_url = host=x\nworkers = many\n", 4, "workers");
}

static void unopenable_file_names_path_and_reason(void **state)
{
    struct conf c;
    char err[512];

    assert_int_equal(conf_load("/nonexistent/todod.conf", &c, err, sizeof(err)), -1);
    assert_string_equal(err, "/nonexistent/todod.conf: cannot open: No such file or directory");
    assert_null(c.database_url);
}

static void directory_is_a_read_error(void **state)
{
    struct conf c;
    char err[512];

    assert_int_equal(conf_load("/tmp", &c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/tmp: "));
    assert_null(c.database_url);
}

static void small_error_buffer_is_truncated_not_overrun(void **state)
{
    struct conf c;
    char err[8];

    assert_int_equal(load_text("foo = bar\n", &c, err, sizeof(err)), -1);
    assert_int_equal(strlen(err), sizeof(err) - 1);
}

/* ---- environment ------------------------------------------------------ */

static void database_url_env_overrides_file(void **state)
{
    struct conf c;

    setenv("DATABASE_URL", "postgresql://env/db", 1);
    load_ok("database_url = postgresql://file/db\n", &c);
    unsetenv("DATABASE_URL");
    assert_string_equal(c.database_url, "postgresql://env/db");
    conf_free(&c);
}

static void database_url_env_overrides_default(void **state)
{
    struct conf c;

    setenv("DATABASE_URL", "host=env", 1);
    load_ok("", &c);
    unsetenv("DATABASE_URL");
    assert_string_equal(c.database_url, "host=env");
    conf_free(&c);
}

static void database_url_env_empty_is_ignored(void **state)
{
    struct conf c;

    setenv("DATABASE_URL", "", 1);
    load_ok("database_url = host=file\n", &c);
    unsetenv("DATABASE_URL");
    assert_string_equal(c.database_url, "host=file");
    conf_free(&c);
}

static void database_url_env_does_not_hide_file_errors(void **state)
{
    setenv("DATABASE_URL", "host=env", 1);
    load_fails("workers = none\n", 1, "workers");
    unsetenv("DATABASE_URL");
}

/* ---- reload ----------------------------------------------------------- */

/* pid_file is read at start only; every other key takes the new file's value. */
static void reload_keeps_the_running_pid_file_and_takes_the_rest(void **state)
{
    struct conf running, next;
    char err[256] = "";

    load_ok("pid_file = /run/a.pid\nworkers = 2\nuser = alice\n", &running);
    load_ok("pid_file = /run/b.pid\nworkers = 3\nuser = bob\n", &next);
    assert_int_equal(conf_keep_immutable(&next, &running, err, sizeof(err)), 0);
    assert_string_equal(next.pid_file, "/run/a.pid");
    assert_ptr_not_equal(next.pid_file, running.pid_file);
    assert_int_equal(next.workers, 3);
    assert_string_equal(next.user, "bob");
    conf_free(&running);
    assert_string_equal(next.pid_file, "/run/a.pid");
    conf_free(&next);
}

static void reload_keeps_pid_file_unset_or_set_as_it_started(void **state)
{
    struct conf running, next;
    char err[256] = "";

    load_ok("", &running);
    load_ok("pid_file = /run/b.pid\n", &next);
    assert_int_equal(conf_keep_immutable(&next, &running, err, sizeof(err)), 0);
    assert_null(next.pid_file);
    conf_free(&next);
    conf_free(&running);

    load_ok("pid_file = /run/a.pid\n", &running);
    load_ok("", &next);
    assert_int_equal(conf_keep_immutable(&next, &running, err, sizeof(err)), 0);
    assert_string_equal(next.pid_file, "/run/a.pid");
    conf_free(&next);
    conf_free(&running);
}

/* ---- free ------------------------------------------------------------- */

static void free_is_safe_on_defaults_and_twice(void **state)
{
    struct conf c;

    conf_defaults(&c);
    conf_free(&c);
    conf_free(&c);
    assert_null(c.database_url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_when_file_is_empty),
        cmocka_unit_test(comments_and_blank_lines_are_ignored),
        cmocka_unit_test(comment_after_value_is_cut),
        cmocka_unit_test(hash_not_after_whitespace_is_part_of_value),
        cmocka_unit_test(whitespace_and_crlf_around_key_and_value_are_trimmed),
        cmocka_unit_test(last_line_without_newline_is_parsed),
        cmocka_unit_test(every_key_set_at_once),
        cmocka_unit_test(shipped_conf_parses_to_defaults),
        cmocka_unit_test(shipped_conf_commented_values_are_the_defaults),
        cmocka_unit_test(listen_ipv4_literal_sets_address_and_port),
        cmocka_unit_test(listen_ipv6_literal_in_brackets_sets_address_and_port),
        cmocka_unit_test(listen_rejects_names_missing_brackets_and_bad_ports),
        cmocka_unit_test(admin_listen_is_unset_by_default_and_parsed_like_listen),
        cmocka_unit_test(workers_auto_uses_online_cpus),
        cmocka_unit_test(workers_number_is_used_as_given),
        cmocka_unit_test(workers_rejects_words_zero_and_too_many),
        cmocka_unit_test(db_connections_within_range),
        cmocka_unit_test(perf_limits_within_range),
        cmocka_unit_test(numbers_reject_trailing_junk),
        cmocka_unit_test(numbers_reject_overflow),
        cmocka_unit_test(max_body_size_accepts_bytes_and_k_m_suffixes),
        cmocka_unit_test(max_body_size_rejects_out_of_range_and_bad_suffixes),
        cmocka_unit_test(seconds_accept_decimals),
        cmocka_unit_test(seconds_reject_zero_negative_too_large_and_non_decimal),
        cmocka_unit_test(drain_delay_accepts_zero_and_decimals),
        cmocka_unit_test(new_keys_have_their_defaults),
        cmocka_unit_test(access_log_format_is_combined_or_json),
        cmocka_unit_test(auth_is_off_or_jwt_and_jwt_needs_keys),
        cmocka_unit_test(trace_sample_ratio_is_between_zero_and_one),
        cmocka_unit_test(otlp_endpoint_must_be_an_http_or_https_url),
        cmocka_unit_test(perf_nodes_is_a_list_of_http_or_https_urls),
        cmocka_unit_test(tls_ca_file_must_hold_pem_certificates),
        cmocka_unit_test(max_connections_and_write_connections_within_range),
        cmocka_unit_test(key_table_is_enumerable),
        cmocka_unit_test(log_level_accepts_each_level),
        cmocka_unit_test(log_level_rejects_unknown_level),
        cmocka_unit_test(access_log_accepts_on_off_and_synonyms),
        cmocka_unit_test(access_log_rejects_other_words),
        cmocka_unit_test(database_url_conninfo_keeps_inner_spaces),
        cmocka_unit_test(database_url_surrounding_quotes_are_removed),
        cmocka_unit_test(database_url_may_be_empty),
        cmocka_unit_test(database_url_libpq_cannot_parse_is_an_error_that_does_not_quote_it),
        cmocka_unit_test(database_url_env_libpq_cannot_parse_is_an_error_that_does_not_quote_it),
        cmocka_unit_test(long_values_are_read_whole),
        cmocka_unit_test(user_and_pid_file_are_set),
        cmocka_unit_test(user_and_pid_file_reject_empty_quoted_value),
        cmocka_unit_test(quote_without_closing_quote_is_an_error),
        cmocka_unit_test(text_after_closing_quote_is_an_error),
        cmocka_unit_test(unknown_key_names_key_and_line),
        cmocka_unit_test(keys_are_case_sensitive),
        cmocka_unit_test(duplicate_key_names_first_line),
        cmocka_unit_test(line_without_equals_is_an_error),
        cmocka_unit_test(missing_value_is_an_error),
        cmocka_unit_test(missing_key_is_an_error),
        cmocka_unit_test(nul_byte_in_line_is_an_error),
        cmocka_unit_test(error_after_valid_strings_frees_them),
        cmocka_unit_test(unopenable_file_names_path_and_reason),
        cmocka_unit_test(directory_is_a_read_error),
        cmocka_unit_test(small_error_buffer_is_truncated_not_overrun),
        cmocka_unit_test(database_url_env_overrides_file),
        cmocka_unit_test(database_url_env_overrides_default),
        cmocka_unit_test(database_url_env_empty_is_ignored),
        cmocka_unit_test(database_url_env_does_not_hide_file_errors),
        cmocka_unit_test(reload_keeps_the_running_pid_file_and_takes_the_rest),
        cmocka_unit_test(reload_keeps_pid_file_unset_or_set_as_it_started),
        cmocka_unit_test(free_is_safe_on_defaults_and_twice),
    };

    /* The tests set DATABASE_URL themselves; one inherited from the shell would
     * replace every database_url they check. */
    unsetenv("DATABASE_URL");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
