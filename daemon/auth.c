#include "auth.h"

#include <errno.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "http.h"
#include "jwk.h"
#include "jwt.h"
#include "log.h"
#include "stats.h"

#define KEYS_MAX   (1 << 20) /* bytes of a JWK Set file */
#define CACHE_SIZE 1024      /* verified tokens a worker remembers */
#define REALM      "Bearer realm=\"todod\""
#define PROTECTED  "protected mode: set auth = jwt, or protected_mode = off for a trusted network"

struct auth {
    const struct conf *conf;
    const struct jwt_verifier *verifier; /* NULL: auth off */
    struct jwt_cache *cache;
    bool protect; /* protected mode: outside peers refused */
};

const char *auth_scope_name(enum auth_scope scope)
{
#define AUTH_SCOPE_NAME(id, name) name,
    static const char *const names[AUTH_NSCOPES] = {AUTH_SCOPES(AUTH_SCOPE_NAME)};
#undef AUTH_SCOPE_NAME

    return scope < AUTH_NSCOPES ? names[scope] : "";
}

/* ---- keys (the master) ---- */

/* The whole of fd, at most KEYS_MAX bytes; NULL with err set. */
static char *read_all(int fd, const char *path, size_t *len, char *err, size_t errlen)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    ssize_t got;

    while (buf != NULL) {
        if (n == cap) {
            char *more = cap < KEYS_MAX ? realloc(buf, cap * 2) : NULL;

            if (more == NULL) {
                snprintf(err, errlen, "jwt_keys %s: %s", path,
                         cap < KEYS_MAX ? "out of memory" : "larger than 1 MiB");
                break;
            }
            buf = more;
            cap *= 2;
        }
        got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            snprintf(err, errlen, "jwt_keys %s: cannot read: %s", path, strerror(errno));
            break;
        }
        if (got == 0) {
            *len = n;
            return buf;
        }
        n += (size_t)got;
    }
    free(buf);
    return NULL;
}

struct jwk_set *auth_read_keys(const char *path, char *err, size_t errlen)
{
    char why[256] = "";
    struct jwk_set *keys;
    struct stat st;
    size_t len = 0;
    char *data;
    int fd;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "jwt_keys %s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "jwt_keys %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    data = read_all(fd, path, &len, err, errlen);
    close(fd);
    if (data == NULL)
        return NULL;
    keys = jwk_set_parse(data, len, why, sizeof(why));
    explicit_bzero(data, len); /* secret keys do not linger in freed memory */
    free(data);
    if (keys == NULL) {
        snprintf(err, errlen, "jwt_keys %s: %s", path, why);
        return NULL;
    }
    if (!jwk_set_check_mode(keys, &st, why, sizeof(why))) {
        snprintf(err, errlen, "jwt_keys %s: %s", path, why);
        jwk_set_free(keys);
        return NULL;
    }
    return keys;
}

int auth_load(const struct conf *conf, struct jwt_verifier **out, char *err, size_t errlen)
{
    struct jwk_set *keys;

    *out = NULL;
    if (conf->auth != CONF_AUTH_JWT)
        return 0;
    keys = auth_read_keys(conf->jwt_keys, err, errlen);
    if (keys == NULL)
        return -1;
    if (jwk_set_skipped(keys) > 0) /* an issuer's set (Keycloak's) holds encryption keys */
        log_info("jwt_keys %s: %zu signature keys; %zu encryption keys (\"use\": \"enc\") skipped",
                 conf->jwt_keys, jwk_set_count(keys), jwk_set_skipped(keys));
    *out = jwt_verifier_new(keys, conf->jwt_audience, conf->jwt_issuer, conf->jwt_leeway);
    if (*out == NULL) {
        jwk_set_free(keys);
        snprintf(err, errlen, "jwt_keys %s: out of memory", conf->jwt_keys);
        return -1;
    }
    return 0;
}

static bool loopback(const struct sockaddr *sa)
{
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
}

bool auth_protected_mode(const struct conf *conf)
{
    return conf->auth == CONF_AUTH_OFF && conf->protected_mode &&
           !loopback((const struct sockaddr *)&conf->listen_addr);
}

/* ---- a worker's checks ---- */

struct auth *auth_new(const struct conf *conf, const struct jwt_verifier *verifier)
{
    struct auth *a = calloc(1, sizeof(*a));

    if (a == NULL)
        return NULL;
    a->conf = conf;
    a->protect = auth_protected_mode(conf);
    if (conf->auth == CONF_AUTH_JWT) {
        a->verifier = verifier;
        a->cache = jwt_cache_new(CACHE_SIZE);
        if (verifier == NULL || a->cache == NULL) {
            auth_free(a);
            return NULL;
        }
    }
    return a;
}

void auth_free(struct auth *a)
{
    if (a == NULL)
        return;
    jwt_cache_free(a->cache);
    free(a);
}

static void refuse(struct http_req *r, enum stats_auth_reason reason)
{
    atomic_fetch_add_explicit(&r->app->slot->c.auth_refusals[reason], 1, memory_order_relaxed);
}

/* RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static bool b64token(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n && (((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z') ||
                     (s[i] >= '0' && s[i] <= '9') || strchr("-._~+/", s[i]) != NULL))
        i++;
    if (i == 0)
        return false;
    while (i < n && s[i] == '=')
        i++;
    return i == n;
}

/* The Authorization headers of r: how many, and the first. */
static int authorization(const struct http_req *r, const char **value)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->req);
    struct evkeyval *h;
    int n = 0;

    *value = NULL;
    TAILQ_FOREACH(h, in, next) {
        if (strcasecmp(h->key, "Authorization") == 0) {
            if (n++ == 0)
                *value = h->value;
        }
    }
    return n;
}

static void refuse_missing(struct http_req *r)
{
    refuse(r, STATS_AUTH_missing);
    http_add_header(r, "WWW-Authenticate", REALM);
    http_reply_error(r, 401, "%s", jwt_err_description(JWT_ERR_MISSING));
}

static void refuse_token(struct http_req *r, enum jwt_err e)
{
    char challenge[256];

    refuse(r, e == JWT_ERR_EXPIRED ? STATS_AUTH_expired : STATS_AUTH_invalid);
    snprintf(challenge, sizeof(challenge),
             REALM ", error=\"invalid_token\", error_description=\"%s\"", jwt_err_description(e));
    http_add_header(r, "WWW-Authenticate", challenge);
    http_reply_error(r, 401, "%s", jwt_err_description(e));
}

static void refuse_scope(struct http_req *r, enum auth_scope scope)
{
    char challenge[256];

    refuse(r, STATS_AUTH_scope);
    snprintf(challenge, sizeof(challenge), REALM ", error=\"insufficient_scope\", scope=\"%s\"",
             auth_scope_name(scope));
    http_add_header(r, "WWW-Authenticate", challenge);
    http_reply_error(r, 403, "insufficient scope: this route needs %s", auth_scope_name(scope));
}

static double wall_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool auth_admit(struct auth *a, struct http_req *r, enum auth_scope scope)
{
    struct jwt_claims *claims = NULL;
    const char *value, *token;
    enum jwt_err e;
    size_t len;
    int n;

    if (scope == AUTH_PROBE || a == NULL)
        return true;
    if (a->verifier == NULL) {
        struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);

        if (!a->protect || (evcon != NULL && loopback(evhttp_connection_get_addr(evcon))))
            return true;
        refuse(r, STATS_AUTH_protected);
        http_reply_error(r, 403, "%s", PROTECTED);
        return false;
    }
    if (scope == AUTH_OPEN)
        return true;
    n = authorization(r, &value);
    /* RFC 6750 3.1: no credentials, or another scheme's, is "missing" (no
     * error code); the token is never read from the query string. */
    if (n == 0 || strncasecmp(value, "Bearer", 6) != 0 || (value[6] != ' ' && value[6] != '\0')) {
        refuse_missing(r);
        return false;
    }
    token = value + 6;
    token += strspn(token, " ");
    len = strlen(token);
    while (len > 0 && token[len - 1] == ' ')
        len--;
    if (n > 1 || len == 0 || !b64token(token, len)) {
        refuse_token(r, JWT_ERR_MALFORMED); /* several tokens are no one's token */
        return false;
    }
    e = jwt_verify_cached(a->cache, a->verifier, token, len, wall_now(), &claims);
    if (e != JWT_ERR_OK) {
        refuse_token(r, e);
        return false;
    }
    r->claims = claims; /* the request's: the access log's user, dropped at its end */
    if (!jwt_has_scope(claims, auth_scope_name(scope))) {
        refuse_scope(r, scope);
        return false;
    }
    return true;
}
