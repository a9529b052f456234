/*
 * The configuration file, nginx-style: a table of keys, each row naming the
 * type of the value (which handler parses it), the field of struct conf it
 * fills, its bounds, its default and its flags (what the code does with the
 * key beyond parsing it). Adding a key is adding a row.
 *
 * Why one file of about 1,000 lines: the table, one setter per value type
 * and the line grammar are read together when a key is added; split, each
 * piece would be meaningless alone.
 *
 * Grammar of a line:
 *     [key = value] [# comment]
 * '#' starts a comment at the start of a line or after whitespace, so that a
 * '#' inside a value (a URL fragment, a password) needs no quoting. A value
 * may be wrapped in double quotes (no escapes): the quotes are removed and
 * a " #" inside them is kept. Whitespace around key and value is trimmed;
 * whitespace inside a value is kept (libpq key=value conninfo strings).
 */
#include "conf.h"

#include "log.h"
#include "tlsca.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define KIB         1024L
#define MIB         (1024L * 1024L)
#define MAX_SECONDS 86400
#define MAX_ECHO    200 /* longest part of a bad value quoted back in an error */

enum set_result { SET_OK, SET_BAD, SET_NOMEM };

struct conf_key;

/*
 * Parse v into the key's field. On SET_BAD, write into expect what a good
 * value looks like; the caller turns it into "key: expected ..., got ...".
 */
typedef enum set_result conf_set_fn(struct conf *c, const struct conf_key *k, const char *v,
                                    char *expect, size_t expectlen);

/* What a value is: the handler that parses it, and how its field is held. */
enum conf_type {
    CONF_T_LISTEN,     /* address:port, into listen or admin_listen and its companions */
    CONF_T_WORKERS,    /* a number or "auto", into workers and workers_auto */
    CONF_T_INT,        /* a number within min..max, into an int */
    CONF_T_LONG,       /* the same, into a long */
    CONF_T_SIZE,       /* bytes, or with a k or m suffix, into a size_t */
    CONF_T_SECONDS,    /* a plain decimal, into a double */
    CONF_T_RATIO,      /* a plain decimal from min to max, into a double */
    CONF_T_FLAG,       /* on/off and synonyms, into a bool */
    CONF_T_LOG_LEVEL,  /* into an int, enum log_level */
    CONF_T_LOG_FORMAT, /* into an int, enum conf_access_log_format */
    CONF_T_AUTH,       /* off or jwt, into an int, enum conf_auth */
    CONF_T_STRING,     /* into a char * the conf owns */
    CONF_T_CONNINFO,   /* a connection string libpq can parse, the same */
    CONF_T_URL,        /* an http:// or https:// URL, into a char * (NULL when empty) */
    CONF_T_URL_LIST,   /* comma-separated http:// or https:// URLs, the same */
};

/* What the code does with a key beyond parsing it: bits of conf_key.flags. */
enum {
    CONF_EMPTY = 1 << 0,     /* "key =" with nothing after it is a value, not an error */
    CONF_IMMUTABLE = 1 << 1, /* read at start only: a reload keeps the running value
                                (conf_keep_immutable; string keys only) */
    CONF_SECRET = 1 << 2,    /* may hold a password: no message quotes the value */
};

struct conf_key {
    const char *name;
    enum conf_type type;
    size_t offset;   /* of the field the type's handler fills (some fill a companion too) */
    long min, max;   /* inclusive, except seconds: min < value <= max (min -1: 0 allowed) */
    const char *def; /* default, run through the handler by conf_defaults; NULL = zeroed */
    unsigned flags;  /* CONF_EMPTY, CONF_IMMUTABLE, CONF_SECRET */
};

#define FIELD(c, k, type) ((type *)((char *)(c) + (k)->offset))

static conf_set_fn set_listen, set_workers, set_int, set_long, set_size, set_seconds, set_log_level,
    set_flag, set_string, set_conninfo, set_log_format, set_auth, set_ratio, set_url, set_url_list;

/* Each type's handler, and whether its field is a string conf_free releases. */
static const struct {
    conf_set_fn *set;
    bool string;
} types[] = {
    [CONF_T_LISTEN] = {set_listen, false},
    [CONF_T_WORKERS] = {set_workers, false},
    [CONF_T_INT] = {set_int, false},
    [CONF_T_LONG] = {set_long, false},
    [CONF_T_SIZE] = {set_size, false},
    [CONF_T_SECONDS] = {set_seconds, false},
    [CONF_T_RATIO] = {set_ratio, false},
    [CONF_T_FLAG] = {set_flag, false},
    [CONF_T_LOG_LEVEL] = {set_log_level, false},
    [CONF_T_LOG_FORMAT] = {set_log_format, false},
    [CONF_T_AUTH] = {set_auth, false},
    [CONF_T_STRING] = {set_string, true},
    [CONF_T_CONNINFO] = {set_conninfo, true},
    [CONF_T_URL] = {set_url, true},
    [CONF_T_URL_LIST] = {set_url_list, true},
};

#define OFF(field) offsetof(struct conf, field)

/*
 * conf/todod.conf and todod.conf(5) repeat this table: every key with its default
 * (tests/integration/test_manpages.py compares them with it).
 */
/* clang-format off */
static const struct conf_key keys[] = {
    /* name                 type               field                      min max                      default           flags */
    {"listen",               CONF_T_LISTEN,     OFF(listen),               0, 0,                       "127.0.0.1:3000", 0},
    {"admin_listen",         CONF_T_LISTEN,     OFF(admin_listen),         0, 0,                       NULL,             CONF_EMPTY},
    {"workers",              CONF_T_WORKERS,    OFF(workers),              1, CONF_MAX_WORKERS,        "auto",           0},
    {"database_url",         CONF_T_CONNINFO,   OFF(database_url),         0, 0,                       "",               CONF_EMPTY | CONF_SECRET},
    {"db_connections",       CONF_T_INT,        OFF(db_connections),       1, CONF_MAX_DB_CONNECTIONS, "1",              0},
    {"db_write_connections", CONF_T_INT,        OFF(db_write_connections), 1, CONF_MAX_DB_CONNECTIONS, "4",              0},
    {"db_prepared",          CONF_T_FLAG,       OFF(db_prepared),          0, 0,                       "on",             0},
    {"database_read_url",    CONF_T_CONNINFO,   OFF(database_read_url),    0, 0,                       "",               CONF_EMPTY | CONF_SECRET},
    {"max_replica_lag",      CONF_T_SECONDS,    OFF(max_replica_lag),      0, MAX_SECONDS,             "1",              0},
    {"max_body_size",        CONF_T_SIZE,       OFF(max_body_size),        1, 64 * MIB,                "1m",             0},
    {"max_connections",      CONF_T_INT,        OFF(max_connections),      1, 1 << 20,                 "1024",           0},
    {"perf_max_messages",    CONF_T_LONG,       OFF(perf_max_messages),    1, 100000000,               "1000000",        0},
    {"perf_max_batch",       CONF_T_LONG,       OFF(perf_max_batch),       1, 100000,                  "10000",          0},
    {"perf_nodes",           CONF_T_URL_LIST,   OFF(perf_nodes),           0, 0,                       NULL,             CONF_EMPTY},
    {"perf_max_duration",    CONF_T_SECONDS,    OFF(perf_max_duration),    1, MAX_SECONDS,             "3600",           0},
    {"request_timeout",      CONF_T_SECONDS,    OFF(request_timeout),      0, MAX_SECONDS,             "10",             0},
    {"keepalive_timeout",    CONF_T_SECONDS,    OFF(keepalive_timeout),    0, MAX_SECONDS,             "60",             0},
    {"shutdown_timeout",     CONF_T_SECONDS,    OFF(shutdown_timeout),     0, MAX_SECONDS,             "10",             0},
    {"drain_delay",          CONF_T_SECONDS,    OFF(drain_delay),         -1, MAX_SECONDS,             "0",              0},
    {"log_level",            CONF_T_LOG_LEVEL,  OFF(log_level),            0, 0,                       "info",           0},
    {"access_log",           CONF_T_FLAG,       OFF(access_log),           0, 0,                       "off",            0},
    {"access_log_format",    CONF_T_LOG_FORMAT, OFF(access_log_format),    0, 0,                       "combined",       0},
    {"user",                 CONF_T_STRING,     OFF(user),                 0, 0,                       NULL,             0},
    {"pid_file",             CONF_T_STRING,     OFF(pid_file),             0, 0,                       NULL,             CONF_IMMUTABLE},
    {"otlp_endpoint",        CONF_T_URL,        OFF(otlp_endpoint),        0, 0,                       NULL,             CONF_EMPTY},
    {"trace_sample_ratio",   CONF_T_RATIO,      OFF(trace_sample_ratio),   0, 1,                       "1",              0},
    {"service_name",         CONF_T_STRING,     OFF(service_name),         0, 0,                       "todod",          0},
    {"auth",                 CONF_T_AUTH,       OFF(auth),                 0, 0,                       "off",            0},
    {"jwt_keys",             CONF_T_STRING,     OFF(jwt_keys),             0, 0,                       NULL,             0},
    {"jwt_audience",         CONF_T_STRING,     OFF(jwt_audience),         0, 0,                       NULL,             0},
    {"jwt_issuer",           CONF_T_STRING,     OFF(jwt_issuer),           0, 0,                       NULL,             0},
    {"jwt_leeway",           CONF_T_INT,        OFF(jwt_leeway),           0, 86400,                   "30",             0},
    {"protected_mode",       CONF_T_FLAG,       OFF(protected_mode),       0, 0,                       "on",             0},
    {"tls_ca_file",          CONF_T_STRING,     OFF(tls_ca_file),          0, 0,                       NULL,             0},
};
/* clang-format on */

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

/* ---- value parsers ---------------------------------------------------- */

/*
 * A run of decimal digits at the start of s. strtol alone would also take
 * leading spaces and a sign, and clamps on overflow; both are errors here.
 */
static bool parse_digits(const char *s, long *out, const char **rest)
{
    char *end;
    long n;

    if (!isdigit((unsigned char)*s))
        return false;
    errno = 0;
    n = strtol(s, &end, 10);
    if (errno == ERANGE)
        return false;
    *out = n;
    *rest = end;
    return true;
}

/* The whole of s is a number within [min, max]: "10x" is not 10. */
static bool parse_number(const char *s, long min, long max, long *out)
{
    const char *rest;
    long n;

    if (!parse_digits(s, &n, &rest) || *rest != '\0' || n < min || n > max)
        return false;
    *out = n;
    return true;
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        return 1;
    return n > CONF_MAX_WORKERS ? CONF_MAX_WORKERS : (int)n;
}

/*
 * "a.b.c.d:port" or "[v6]:port", literals only: resolving names would make
 * the bound address depend on DNS at start-up.
 */
static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN];
    const char *host_start = s, *host_end, *port;
    int family = AF_INET;
    long portnum;

    if (s[0] == '[') {
        family = AF_INET6;
        host_start = s + 1;
        host_end = strchr(host_start, ']');
        if (host_end == NULL || host_end[1] != ':')
            return -1;
        port = host_end + 2;
    } else {
        host_end = strrchr(s, ':');
        if (host_end == NULL)
            return -1;
        port = host_end + 1;
    }
    if ((size_t)(host_end - host_start) >= sizeof(host))
        return -1;
    memcpy(host, host_start, (size_t)(host_end - host_start));
    host[host_end - host_start] = '\0';
    if (!parse_number(port, 1, 65535, &portnum))
        return -1;

    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;

        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return -1;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)portnum);
        *len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return -1;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)portnum);
        *len = sizeof(*sin6);
    }
    return 0;
}

/* "64m" rather than "67108864" in messages, so the limit reads as it is written. */
static void format_size(long n, char *buf, size_t len)
{
    if (n % MIB == 0)
        snprintf(buf, len, "%ldm", n / MIB);
    else if (n % KIB == 0)
        snprintf(buf, len, "%ldk", n / KIB);
    else
        snprintf(buf, len, "%ld", n);
}

/* ---- handlers, one per value type ------------------------------------- */

/* Fills listen or admin_listen (as written) and its companions *_addr and
 * *_addrlen; an empty admin_listen is unset. */
static enum set_result set_listen(struct conf *c, const struct conf_key *k, const char *v,
                                  char *expect, size_t expectlen)
{
    char *field = FIELD(c, k, char);
    bool admin = k->offset == OFF(admin_listen);
    struct sockaddr_storage *ss = admin ? &c->admin_listen_addr : &c->listen_addr;
    socklen_t *len = admin ? &c->admin_listen_addrlen : &c->listen_addrlen;

    if (admin && v[0] == '\0') {
        field[0] = '\0';
        *len = 0;
        return SET_OK;
    }
    if (strlen(v) >= sizeof(c->listen) || parse_listen(v, ss, len) != 0) {
        snprintf(expect, expectlen,
                 "an IPv4 address:port or [IPv6 address]:port with a port from 1 to 65535, "
                 "such as 127.0.0.1:3000 or [::1]:3000");
        return SET_BAD;
    }
    memcpy(field, v, strlen(v) + 1);
    return SET_OK;
}

/* Fills workers and its companion workers_auto. */
static enum set_result set_workers(struct conf *c, const struct conf_key *k, const char *v,
                                   char *expect, size_t expectlen)
{
    long n;

    if (strcasecmp(v, "auto") == 0) {
        *FIELD(c, k, int) = online_cpus();
        c->workers_auto = true;
        return SET_OK;
    }
    if (!parse_number(v, k->min, k->max, &n)) {
        snprintf(expect, expectlen, "a number from %ld to %ld or \"auto\"", k->min, k->max);
        return SET_BAD;
    }
    *FIELD(c, k, int) = (int)n;
    c->workers_auto = false;
    return SET_OK;
}

static enum set_result set_int(struct conf *c, const struct conf_key *k, const char *v,
                               char *expect, size_t expectlen)
{
    long n;

    if (!parse_number(v, k->min, k->max, &n)) {
        snprintf(expect, expectlen, "a number from %ld to %ld", k->min, k->max);
        return SET_BAD;
    }
    *FIELD(c, k, int) = (int)n;
    return SET_OK;
}

static enum set_result set_long(struct conf *c, const struct conf_key *k, const char *v,
                                char *expect, size_t expectlen)
{
    long n;

    if (!parse_number(v, k->min, k->max, &n)) {
        snprintf(expect, expectlen, "a number from %ld to %ld", k->min, k->max);
        return SET_BAD;
    }
    *FIELD(c, k, long) = n;
    return SET_OK;
}

static enum set_result bad_size(const struct conf_key *k, char *expect, size_t expectlen)
{
    char min[32], max[32];

    format_size(k->min, min, sizeof(min));
    format_size(k->max, max, sizeof(max));
    snprintf(expect, expectlen, "a size from %s to %s (bytes, or with a k or m suffix)", min, max);
    return SET_BAD;
}

/* Bytes, or k/m (any case) for multiples of 1024. */
static enum set_result set_size(struct conf *c, const struct conf_key *k, const char *v,
                                char *expect, size_t expectlen)
{
    static const struct {
        char suffix;
        long multiplier;
    } units[] = {{'\0', 1}, {'k', KIB}, {'m', MIB}};
    const size_t nunits = sizeof(units) / sizeof(units[0]);
    const char *rest;
    long n;
    size_t i;

    if (!parse_digits(v, &n, &rest) || (*rest != '\0' && rest[1] != '\0'))
        return bad_size(k, expect, expectlen);
    for (i = 0; i < nunits; i++)
        if (tolower((unsigned char)*rest) == units[i].suffix)
            break;
    /* Check before multiplying: "99999999999999k" must not wrap into range. */
    if (i == nunits || n > k->max / units[i].multiplier)
        return bad_size(k, expect, expectlen);
    n *= units[i].multiplier;
    if (n < k->min)
        return bad_size(k, expect, expectlen);
    *FIELD(c, k, size_t) = (size_t)n;
    return SET_OK;
}

/* Plain decimals only: strtod would also take "inf", "nan", "1e3" and hex. */
static enum set_result set_seconds(struct conf *c, const struct conf_key *k, const char *v,
                                   char *expect, size_t expectlen)
{
    char *end;
    double d;

    if (v[0] == '\0' || strspn(v, "0123456789.") != strlen(v))
        goto bad;
    errno = 0;
    d = strtod(v, &end);
    if (*end != '\0' || errno == ERANGE || d > (double)k->max ||
        (k->min < 0 ? d < 0 : !(d > (double)k->min)))
        goto bad;
    *FIELD(c, k, double) = d;
    return SET_OK;
bad:
    if (k->min < 0)
        snprintf(expect, expectlen,
                 "a number of seconds from 0 to %ld (decimals allowed, e.g. 0.5)", k->max);
    else
        snprintf(
            expect, expectlen,
            "a number of seconds greater than %ld and at most %ld (decimals allowed, e.g. 0.5)",
            k->min, k->max);
    return SET_BAD;
}

/* A share from 0 to 1, plain decimals. */
static enum set_result set_ratio(struct conf *c, const struct conf_key *k, const char *v,
                                 char *expect, size_t expectlen)
{
    char *end;
    double d;

    if (v[0] == '\0' || strspn(v, "0123456789.") != strlen(v))
        goto bad;
    d = strtod(v, &end);
    if (*end != '\0' || d < (double)k->min || d > (double)k->max)
        goto bad;
    *FIELD(c, k, double) = d;
    return SET_OK;
bad:
    snprintf(expect, expectlen, "a number from %ld to %ld, such as 0.1", k->min, k->max);
    return SET_BAD;
}

static enum set_result set_log_level(struct conf *c, const struct conf_key *k, const char *v,
                                     char *expect, size_t expectlen)
{
    static const struct {
        const char *name;
        enum log_level level;
    } levels[] = {
        {"error", LOGL_ERROR},
        {"warn", LOGL_WARN},
        {"info", LOGL_INFO},
        {"debug", LOGL_DEBUG},
    };
    size_t i;

    for (i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        if (strcasecmp(v, levels[i].name) == 0) {
            *FIELD(c, k, int) = (int)levels[i].level;
            return SET_OK;
        }
    }
    snprintf(expect, expectlen, "error, warn, info or debug");
    return SET_BAD;
}

static enum set_result set_flag(struct conf *c, const struct conf_key *k, const char *v,
                                char *expect, size_t expectlen)
{
    static const struct {
        const char *word;
        bool value;
    } words[] = {
        {"on", true},     {"off", false}, {"true", true},
        {"false", false}, {"yes", true},  {"no", false},
    };
    size_t i;

    for (i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (strcasecmp(v, words[i].word) == 0) {
            *FIELD(c, k, bool) = words[i].value;
            return SET_OK;
        }
    }
    snprintf(expect, expectlen, "on or off");
    return SET_BAD;
}

static enum set_result set_log_format(struct conf *c, const struct conf_key *k, const char *v,
                                      char *expect, size_t expectlen)
{
    if (strcasecmp(v, "combined") == 0)
        *FIELD(c, k, int) = CONF_LOG_COMBINED;
    else if (strcasecmp(v, "json") == 0)
        *FIELD(c, k, int) = CONF_LOG_JSON;
    else {
        snprintf(expect, expectlen, "combined or json");
        return SET_BAD;
    }
    return SET_OK;
}

static enum set_result set_auth(struct conf *c, const struct conf_key *k, const char *v,
                                char *expect, size_t expectlen)
{
    if (strcasecmp(v, "off") == 0)
        *FIELD(c, k, int) = CONF_AUTH_OFF;
    else if (strcasecmp(v, "jwt") == 0)
        *FIELD(c, k, int) = CONF_AUTH_JWT;
    else {
        snprintf(expect, expectlen, "off or jwt");
        return SET_BAD;
    }
    return SET_OK;
}

static conf_set_fn set_optional_string;

/*
 * "http[s]://host[:port][/path]": plain HTTP, or TLS with the certificate and
 * host name verified (tls_ca_file). Only the shape is checked here; the host
 * is resolved when it is used.
 */
static bool valid_http_url(const char *s, size_t n)
{
    static const char *const schemes[] = {"http://", "https://"};
    size_t i, host_end, skip = 0;

    for (i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
        if (n > strlen(schemes[i]) && strncasecmp(s, schemes[i], strlen(schemes[i])) == 0)
            skip = strlen(schemes[i]);
    if (skip == 0)
        return false;
    for (i = 0; i < n; i++)
        if (!isgraph((unsigned char)s[i]))
            return false;
    s += skip;
    n -= skip;
    host_end = strcspn(s, "/?#");
    if (host_end > n)
        host_end = n;
    return host_end > 0 && memchr(s, '@', host_end) == NULL && s[0] != ':';
}

static enum set_result set_url(struct conf *c, const struct conf_key *k, const char *v,
                               char *expect, size_t expectlen)
{
    if (v[0] != '\0' && !valid_http_url(v, strlen(v))) {
        snprintf(expect, expectlen,
                 "an http:// or https:// URL such as http://127.0.0.1:4318/v1/traces");
        return SET_BAD;
    }
    return set_optional_string(c, k, v, expect, expectlen);
}

/* Comma-separated http:// or https:// base URLs (spaces around commas allowed). */
static enum set_result set_url_list(struct conf *c, const struct conf_key *k, const char *v,
                                    char *expect, size_t expectlen)
{
    const char *p = v;

    while (*v != '\0') {
        size_t n;

        p += strspn(p, " \t");
        n = strcspn(p, ",");
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (!valid_http_url(p, n)) {
            snprintf(expect, expectlen,
                     "comma-separated http:// or https:// base URLs such as "
                     "http://10.0.0.2:3000,https://node3.example:3000");
            return SET_BAD;
        }
        p += strcspn(p, ",");
        if (*p == '\0')
            break;
        p++; /* a comma: another URL must follow */
    }
    return set_optional_string(c, k, v, expect, expectlen);
}

/* "key =" (empty) leaves the field unset (NULL). */
static enum set_result set_optional_string(struct conf *c, const struct conf_key *k, const char *v,
                                           char *expect, size_t expectlen)
{
    if (v[0] == '\0') {
        free(*FIELD(c, k, char *));
        *FIELD(c, k, char *) = NULL;
        return SET_OK;
    }
    return set_string(c, k, v, expect, expectlen);
}

static enum set_result set_string(struct conf *c, const struct conf_key *k, const char *v,
                                  char *expect, size_t expectlen)
{
    char **field = FIELD(c, k, char *);
    char *copy;

    /* Reached with "" only when the value was written as a pair of quotes. */
    if (v[0] == '\0' && !(k->flags & CONF_EMPTY)) {
        snprintf(expect, expectlen, "a non-empty string");
        return SET_BAD;
    }
    copy = strdup(v);
    if (copy == NULL)
        return SET_NOMEM;
    free(*field);
    *field = copy;
    return SET_OK;
}

/*
 * libpq's message about a connection string it cannot parse, without what it
 * quotes of that string (the whole URI, password and all, or a word of it):
 * every quoted part but the separators it looked for ("=", "]", ":", "/")
 * becomes "...".
 */
static void conninfo_error(const char *libpq, char *out, size_t len)
{
    size_t n = 0;
    const char *p;

    for (p = libpq; *p != '\0' && n + 6 < len; p++) {
        const char *close = *p == '"' ? strchr(p + 1, '"') : NULL;

        if (close != NULL && close - p == 2 && strchr("=]:/", p[1]) != NULL) {
            memcpy(out + n, p, 3);
            n += 3;
            p = close;
        } else if (*p == '"') {
            memcpy(out + n, "\"...\"", 5);
            n += 5;
            if (close == NULL)
                break;
            p = close;
        } else {
            out[n++] = *p;
        }
    }
    while (n > 0 && isspace((unsigned char)out[n - 1]))
        n--;
    out[n] = '\0';
}

/*
 * Checked as libpq will read it: a string it cannot parse would reach every
 * worker, which could never connect, and libpq's message quotes it whole.
 */
static enum set_result set_conninfo(struct conf *c, const struct conf_key *k, const char *v,
                                    char *expect, size_t expectlen)
{
    char *err = NULL, why[192];
    PQconninfoOption *opts = PQconninfoParse(v, &err);

    if (opts == NULL) {
        if (err == NULL)
            return SET_NOMEM;
        conninfo_error(err, why, sizeof(why));
        PQfreemem(err);
        snprintf(expect, expectlen, "a libpq connection string (libpq: %s)", why);
        return SET_BAD;
    }
    PQconninfoFree(opts);
    return set_string(c, k, v, expect, expectlen);
}

/* "key: expected ..., got ...", never quoting a secret. */
static void bad_value(const struct conf_key *k, const char *name, const char *expect,
                      const char *value, char *msg, size_t msglen)
{
    if (k->flags & CONF_SECRET)
        snprintf(msg, msglen, "%s: expected %s; the value is not shown: it may hold a password",
                 name, expect);
    else
        snprintf(msg, msglen, "%s: expected %s, got \"%.*s\"", name, expect, MAX_ECHO, value);
}

/* ---- the line parser -------------------------------------------------- */

static char *skip_space(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    return s;
}

static void trim_end(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
}

/* line is the start of the whole line: a '#' right after '=' is not a comment. */
static bool starts_comment(const char *line, const char *p)
{
    return *p == '#' && (p == line || isspace((unsigned char)p[-1]));
}

static void cut_comment(const char *line, char *s)
{
    for (; *s != '\0'; s++) {
        if (starts_comment(line, s)) {
            *s = '\0';
            return;
        }
    }
}

static const struct conf_key *find_key(const char *name)
{
    size_t i;

    for (i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/*
 * Split line into key and raw value (comments before '=' cut).
 * Returns 1 for a key = value line, 0 for a blank or comment line, -1 on error.
 */
static int split_line(char *line, char **key, char **value, char *msg, size_t msglen)
{
    char *p;

    for (p = line; *p != '\0' && *p != '='; p++) {
        if (starts_comment(line, p)) {
            *p = '\0';
            break;
        }
    }
    if (*p != '=') {
        *key = skip_space(line);
        trim_end(*key);
        if (**key == '\0')
            return 0;
        snprintf(msg, msglen, "expected \"key = value\", got \"%.*s\"", MAX_ECHO, *key);
        return -1;
    }
    *p = '\0';
    *key = skip_space(line);
    trim_end(*key);
    *value = skip_space(p + 1);
    if (**key == '\0') {
        snprintf(msg, msglen, "missing key before \"=\"");
        return -1;
    }
    return 1;
}

/* Cut the trailing comment, or unwrap a quoted value; *quoted tells which. */
static int finish_value(const char *line, const struct conf_key *k, char **value, bool *quoted,
                        char *msg, size_t msglen)
{
    char *close, *after;

    *quoted = (**value == '"');
    if (!*quoted) {
        cut_comment(line, *value);
        trim_end(*value);
        return 0;
    }
    close = strchr(*value + 1, '"');
    if (close == NULL) {
        snprintf(msg, msglen, "%s: missing closing '\"'", k->name);
        return -1;
    }
    *close = '\0';
    after = skip_space(close + 1);
    if (*after != '\0' && !starts_comment(line, after)) {
        snprintf(msg, msglen, "%s: unexpected text after the closing '\"'", k->name);
        return -1;
    }
    (*value)++;
    return 0;
}

/* first_line[i] is the line keys[i] was set on, 0 when not yet. */
static int parse_line(struct conf *c, char *line, int lineno, int *first_line, char *msg,
                      size_t msglen)
{
    const struct conf_key *k;
    char *key, *value, expect[256];
    bool quoted;
    int rc;

    rc = split_line(line, &key, &value, msg, msglen);
    if (rc <= 0)
        return rc;
    k = find_key(key);
    if (k == NULL) {
        snprintf(msg, msglen, "unknown key \"%.*s\"", MAX_ECHO, key);
        return -1;
    }
    if (first_line[k - keys] != 0) {
        snprintf(msg, msglen, "duplicate key \"%s\" (first set on line %d)", k->name,
                 first_line[k - keys]);
        return -1;
    }
    if (finish_value(line, k, &value, &quoted, msg, msglen) != 0)
        return -1;
    if (*value == '\0' && !quoted && !(k->flags & CONF_EMPTY)) {
        snprintf(msg, msglen, "missing value for \"%s\"", k->name);
        return -1;
    }
    switch (types[k->type].set(c, k, value, expect, sizeof(expect))) {
    case SET_OK:
        first_line[k - keys] = lineno;
        return 0;
    case SET_BAD:
        bad_value(k, k->name, expect, value, msg, msglen);
        return -1;
    case SET_NOMEM:
        break;
    }
    snprintf(msg, msglen, "%s: out of memory", k->name);
    return -1;
}

static int parse_file(FILE *f, const char *path, struct conf *c, char *err, size_t errlen)
{
    int first_line[NKEYS] = {0};
    char *line = NULL, msg[512];
    size_t cap = 0;
    ssize_t n;
    int lineno = 0, rc = 0;

    while ((n = getline(&line, &cap, f)) != -1) {
        lineno++;
        if (memchr(line, '\0', (size_t)n) != NULL) {
            snprintf(err, errlen, "%s:%d: line contains a NUL byte", path, lineno);
            rc = -1;
            break;
        }
        if (parse_line(c, line, lineno, first_line, msg, sizeof(msg)) != 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
            rc = -1;
            break;
        }
    }
    /* getline returns -1 both at end of file and on errors (EISDIR, ENOMEM). */
    if (rc == 0 && !feof(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        rc = -1;
    }
    free(line);
    return rc;
}

/*
 * The environment wins over the file: it is how containers and CI pass secrets.
 * Its value is checked as the key's would be.
 */
static int apply_env(struct conf *c, char *msg, size_t msglen)
{
    const struct conf_key *k = find_key("database_url");
    const char *url = getenv("DATABASE_URL");
    char expect[256];

    if (url == NULL || url[0] == '\0')
        return 0;
    switch (types[k->type].set(c, k, url, expect, sizeof(expect))) {
    case SET_OK:
        return 0;
    case SET_BAD:
        bad_value(k, "DATABASE_URL", expect, url, msg, msglen);
        return -1;
    case SET_NOMEM:
        break;
    }
    snprintf(msg, msglen, "DATABASE_URL: out of memory");
    return -1;
}

/* ---- public interface ------------------------------------------------- */

void conf_defaults(struct conf *c)
{
    char expect[256];
    size_t i;

    memset(c, 0, sizeof(*c));
    /* The defaults are valid by construction; only strdup can fail (NULL field). */
    for (i = 0; i < NKEYS; i++)
        if (keys[i].def != NULL)
            (void)types[keys[i].type].set(c, &keys[i], keys[i].def, expect, sizeof(expect));
}

int conf_load(const char *path, struct conf *c, char *err, size_t errlen)
{
    char msg[512];
    FILE *f;
    int rc;

    conf_defaults(c);
    if (c->database_url == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    rc = parse_file(f, path, c, err, errlen);
    fclose(f);
    if (rc != 0)
        goto fail;
    if (apply_env(c, msg, sizeof(msg)) != 0) {
        snprintf(err, errlen, "%s: %s", path, msg);
        goto fail;
    }
    /* Tokens cannot be checked without keys: refused here rather than
     * answering every request 401. */
    if (c->auth == CONF_AUTH_JWT && (c->jwt_keys == NULL || c->jwt_keys[0] == '\0')) {
        snprintf(err, errlen, "%s: auth = jwt needs jwt_keys (a JWK Set file)", path);
        goto fail;
    }
    if (c->tls_ca_file != NULL &&
        tlsca_read(c->tls_ca_file, &c->tls_ca_pem, &c->tls_ca_len, msg, sizeof(msg)) != 0) {
        snprintf(err, errlen, "%s: %s", path, msg);
        goto fail;
    }
    return 0;
fail:
    conf_free(c);
    return -1;
}

static bool same_string(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/*
 * The master writes the pid file at start and removes it at exit: a new path
 * taken at a reload would leave the file it wrote behind and never write the
 * new one. Such keys keep their running value until the next start.
 */
int conf_keep_immutable(struct conf *next, const struct conf *running, char *err, size_t errlen)
{
    size_t i;

    for (i = 0; i < NKEYS; i++) {
        const struct conf_key *k = &keys[i];
        const char *keep;
        char **field, *copy = NULL;

        if (!(k->flags & CONF_IMMUTABLE))
            continue;
        keep = *(const char *const *)((const char *)running + k->offset);
        field = FIELD(next, k, char *);
        if (same_string(*field, keep))
            continue;
        if (keep != NULL && (copy = strdup(keep)) == NULL) {
            snprintf(err, errlen, "%s: out of memory", k->name);
            conf_free(next);
            return -1;
        }
        log_warn("%s: a reload keeps %s; the new value takes effect at the next start", k->name,
                 keep != NULL ? keep : "it unset");
        free(*field);
        *field = copy;
    }
    return 0;
}

static bool is_string_key(const struct conf_key *k)
{
    return types[k->type].string;
}

void conf_free(struct conf *c)
{
    size_t i;

    for (i = 0; i < NKEYS; i++) {
        if (is_string_key(&keys[i])) {
            free(*FIELD(c, &keys[i], char *));
            *FIELD(c, &keys[i], char *) = NULL;
        }
    }
    free(c->tls_ca_pem);
    c->tls_ca_pem = NULL;
}

size_t conf_nkeys(void)
{
    return NKEYS;
}

const char *conf_key_name(size_t i)
{
    return i < NKEYS ? keys[i].name : NULL;
}

const char *conf_key_default(size_t i)
{
    return i < NKEYS ? keys[i].def : NULL;
}
