/*
 * Where the connections go: database_url parsed once into libpq's keyword
 * arrays, its host list resolved with evdns (libpq would block in
 * getaddrinfo), and the host, hostaddr and port lists handed to libpq for an
 * attempt, starting with the host that is next in turn.
 */
#include "db_int.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"

/* ---- host names ------------------------------------------------------------------------------ */

static bool is_ip_literal(const char *h)
{
    struct in6_addr a6;
    struct in_addr a4;

    return inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1;
}

/* Unix-socket directories, IP literals and empty entries need no lookup. */
static bool needs_lookup(const char *h)
{
    return h[0] != '\0' && h[0] != '/' && h[0] != '@' && !is_ip_literal(h);
}

static void on_resolved(int err, struct evutil_addrinfo *res, void *arg);

struct dns_ctx {
    struct db_conn *c;
    int host;
};

/*
 * libpq resolves host names with a blocking getaddrinfo() inside
 * PQconnectPoll. So names are resolved here first, with evdns, and handed to
 * libpq as hostaddr (host still names the server, for its messages).
 */
void db_conn_resolve(struct db_conn *c)
{
    struct db_pool *pool = c->pool;
    struct evutil_addrinfo hints;
    int i;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->state = DB_CONN_RESOLVING;
    c->dns_pending = 0;
    for (i = 0; i < pool->nhosts; i++)
        if (needs_lookup(pool->hosts[i]))
            c->dns_pending++;
    for (i = 0; i < pool->nhosts; i++) {
        struct dns_ctx *ctx;

        if (!needs_lookup(pool->hosts[i]))
            continue;
        ctx = malloc(sizeof(*ctx));
        if (ctx == NULL) {
            db_conn_lost(c, "out of memory");
            return;
        }
        ctx->c = c;
        ctx->host = i;
        c->dns_reqs[i] =
            evdns_getaddrinfo(pool->dns, pool->hosts[i], NULL, &hints, on_resolved, ctx);
        /* A name found at once (in /etc/hosts) has called back already. */
        if (c->state != DB_CONN_RESOLVING)
            return;
    }
}

static void on_resolved(int err, struct evutil_addrinfo *res, void *arg)
{
    struct dns_ctx *ctx = arg;
    struct db_conn *c = ctx->c;
    struct evutil_addrinfo *ai;
    char list[1024] = "";
    int host = ctx->host;

    free(ctx);
    if (err == EVUTIL_EAI_CANCEL)
        return;
    c->dns_reqs[host] = NULL;
    for (ai = res; err == 0 && ai != NULL; ai = ai->ai_next) {
        char addr[INET6_ADDRSTRLEN];
        const void *a = ai->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;

        if (inet_ntop(ai->ai_family, a, addr, sizeof(addr)) == NULL ||
            strlen(list) + strlen(addr) + 2 > sizeof(list))
            continue;
        if (strstr(list, addr) != NULL)
            continue;
        if (list[0] != '\0')
            strcat(list, ",");
        strcat(list, addr);
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    if (list[0] == '\0') {
        char why[300];

        snprintf(why, sizeof(why), "could not resolve host name \"%s\": %s", c->pool->hosts[host],
                 evutil_gai_strerror(err));
        db_conn_lost(c, why);
        return;
    }
    c->dns_addrs[host] = strdup(list);
    if (--c->dns_pending == 0 && c->state == DB_CONN_RESOLVING)
        db_conn_start_pq(c);
}

/* host, hostaddr and port lists for libpq, with every address of every name. */
int db_host_lists(struct db_conn *c, char **host, char **hostaddr, char **port)
{
    struct db_pool *pool = c->pool;
    const char *ports = pool->port_key >= 0 ? pool->vals[pool->port_key] : NULL;
    size_t cap = 4096;
    int nports = 0;
    char *p;

    *host = calloc(1, cap);
    *hostaddr = calloc(1, cap);
    *port = calloc(1, cap);
    if (*host == NULL || *hostaddr == NULL || *port == NULL)
        return -1;
    if (ports != NULL)
        for (nports = 1, p = (char *)ports; (p = strchr(p, ',')) != NULL; p++)
            nports++;
    for (int j = 0; j < pool->nhosts; j++) {
        int i = (c->first_host + j) % pool->nhosts;
        const char *addrs = c->dns_addrs[i] ? c->dns_addrs[i] : "";
        char this_port[32] = "";

        if (nports > 1) {
            const char *s = ports;
            int k;

            for (k = 0; k < i && s != NULL; k++) {
                s = strchr(s, ',');
                if (s != NULL)
                    s++;
            }
            if (s != NULL)
                snprintf(this_port, sizeof(this_port), "%.*s", (int)strcspn(s, ","), s);
        } else if (ports != NULL) {
            snprintf(this_port, sizeof(this_port), "%s", ports);
        }
        do {
            size_t alen = strcspn(addrs, ",");

            if (strlen(*host) + strlen(pool->hosts[i]) + 2 >= cap ||
                strlen(*hostaddr) + alen + 2 >= cap || strlen(*port) + strlen(this_port) + 2 >= cap)
                return -1;
            if ((*host)[0] != '\0' || j > 0) {
                strcat(*host, ",");
                strcat(*hostaddr, ",");
                strcat(*port, ",");
            }
            strcat(*host, pool->hosts[i]);
            strncat(*hostaddr, addrs, alen);
            strcat(*port, this_port);
            addrs += alen;
            if (*addrs == ',')
                addrs++;
        } while (*addrs != '\0');
    }
    return 0;
}

void db_conn_cancel_dns(struct db_conn *c)
{
    int i;

    for (i = 0; c->dns_reqs != NULL && i < c->pool->nhosts; i++) {
        if (c->dns_reqs[i] != NULL)
            evdns_getaddrinfo_cancel(c->dns_reqs[i]);
        c->dns_reqs[i] = NULL;
    }
    for (i = 0; c->dns_addrs != NULL && i < c->pool->nhosts; i++) {
        free(c->dns_addrs[i]);
        c->dns_addrs[i] = NULL;
    }
    c->dns_pending = 0;
}

/*
 * database_url, parsed once (libpq's URI and key=value forms alike) into the
 * keyword arrays PQconnectStartParams takes; its host list is kept apart for
 * the name lookups.
 */
int db_parse_conninfo(struct db_pool *pool, const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err), *o;
    const char *hosts;
    int n = 0, i;

    if (opts == NULL) {
        char line[512];

        db_error_line(err ? err : "out of memory", line, sizeof(line));
        log_error("database_url: %s", line);
        PQfreemem(err);
        return -1;
    }
    for (o = opts; o->keyword != NULL; o++)
        n += o->val != NULL;
    /* Its own, fallback_application_name, and host and port from PGHOST and PGPORT. */
    pool->keys = calloc((size_t)n + 3, sizeof(char *));
    pool->vals = calloc((size_t)n + 3, sizeof(char *));
    pool->host_key = pool->hostaddr_key = pool->port_key = -1;
    if (pool->keys == NULL || pool->vals == NULL)
        goto fail;
    for (o = opts, i = 0; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        pool->keys[i] = strdup(o->keyword);
        pool->vals[i] = strdup(o->val);
        if (pool->keys[i] == NULL || pool->vals[i] == NULL)
            goto fail;
        if (strcmp(o->keyword, "host") == 0)
            pool->host_key = i;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            pool->hostaddr_key = i;
        else if (strcmp(o->keyword, "port") == 0)
            pool->port_key = i;
        i++;
    }
    pool->keys[i] = strdup("fallback_application_name");
    pool->vals[i] = strdup("todod");
    if (pool->keys[i] == NULL || pool->vals[i] == NULL)
        goto fail;
    pool->nkeys = i + 1;
    PQconninfoFree(opts);
    opts = NULL;
    /* Names to look up: from database_url or PGHOST, unless hostaddr is given. */
    hosts = pool->host_key >= 0 ? pool->vals[pool->host_key] : getenv("PGHOST");
    if (hosts == NULL || pool->hostaddr_key >= 0)
        return 0;
    for (pool->nhosts = 1, i = 0; hosts[i] != '\0'; i++)
        pool->nhosts += hosts[i] == ',';
    pool->hosts = calloc((size_t)pool->nhosts, sizeof(char *));
    if (pool->hosts == NULL)
        goto fail;
    for (i = 0; i < pool->nhosts; i++) {
        size_t len = strcspn(hosts, ",");

        pool->hosts[i] = strndup(hosts, len);
        if (pool->hosts[i] == NULL)
            goto fail;
        pool->needs_dns |= needs_lookup(pool->hosts[i]);
        hosts += len + (hosts[len] == ',');
    }
    if (pool->needs_dns && pool->host_key < 0) {
        /* The names came from PGHOST: pass them as host, explicitly. */
        pool->keys[pool->nkeys] = strdup("host");
        pool->vals[pool->nkeys] = strdup(getenv("PGHOST"));
        if (pool->keys[pool->nkeys] == NULL || pool->vals[pool->nkeys] == NULL)
            goto fail;
        pool->host_key = pool->nkeys++;
    }
    if (pool->needs_dns && pool->port_key < 0 && getenv("PGPORT") != NULL) {
        pool->keys[pool->nkeys] = strdup("port");
        pool->vals[pool->nkeys] = strdup(getenv("PGPORT"));
        if (pool->keys[pool->nkeys] == NULL || pool->vals[pool->nkeys] == NULL)
            goto fail;
        pool->port_key = pool->nkeys++;
    }
    return 0;
fail:
    if (opts != NULL)
        PQconninfoFree(opts);
    log_error("database_url: out of memory");
    return -1;
}

/* Entry i of a comma-separated list (the last when it has fewer: libpq's rule
 * for a single port), as a new string. */
static char *list_entry(const char *list, int i)
{
    const char *s = list;
    int k;

    for (k = 0; k < i; k++) {
        const char *comma = strchr(s, ',');

        if (comma == NULL)
            break;
        s = comma + 1;
    }
    return strndup(s, strcspn(s, ","));
}

static int list_length(const char *list)
{
    int n = 1;

    for (; *list != '\0'; list++)
        n += *list == ',';
    return n;
}

/* key='value' with \ and ' escaped, appended to buf (of size cap). */
static bool append_pair(char *buf, size_t cap, const char *key, const char *value)
{
    size_t n = strlen(buf);

    n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s='", n > 0 ? " " : "", key);
    for (; *value != '\0' && n + 3 < cap; value++) {
        if (*value == '\\' || *value == '\'')
            buf[n++] = '\\';
        buf[n++] = *value;
    }
    if (n + 2 >= cap)
        return false;
    buf[n++] = '\'';
    buf[n] = '\0';
    return true;
}

int db_conninfo_split(const char *conninfo, char ***each, char ***names)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err), *o;
    const char *hosts = NULL, *addrs = NULL, *ports = NULL;
    int n, i;

    *each = *names = NULL;
    if (opts == NULL) {
        char line[512];

        db_error_line(err ? err : "out of memory", line, sizeof(line));
        log_error("database_read_url: %s", line);
        PQfreemem(err);
        return -1;
    }
    for (o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            hosts = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            addrs = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            ports = o->val;
    }
    n = hosts != NULL ? list_length(hosts) : addrs != NULL ? list_length(addrs) : 1;
    *each = calloc((size_t)n, sizeof(char *));
    *names = calloc((size_t)n, sizeof(char *));
    if (*each == NULL || *names == NULL)
        goto fail;
    for (i = 0; i < n; i++) {
        size_t cap = strlen(conninfo) * 2 + 64;
        char *host = hosts ? list_entry(hosts, i) : NULL;
        char *addr = addrs ? list_entry(addrs, i) : NULL;
        char *port = ports ? list_entry(ports, i) : NULL;
        bool ok;

        (*each)[i] = calloc(1, cap);
        ok = (*each)[i] != NULL;

        for (o = opts; ok && o->keyword != NULL; o++) {
            const char *v = strcmp(o->keyword, "host") == 0       ? host
                            : strcmp(o->keyword, "hostaddr") == 0 ? addr
                            : strcmp(o->keyword, "port") == 0     ? port
                                                                  : o->val;

            if (o->val != NULL)
                ok = v != NULL && append_pair((*each)[i], cap, o->keyword, v);
        }
        if (ok && asprintf(&(*names)[i], "%s%s%s",
                           host   ? host
                           : addr ? addr
                                  : "localhost",
                           port ? ":" : "", port ? port : "") < 0)
            (*names)[i] = NULL;
        free(host);
        free(addr);
        free(port);
        if (!ok || (*names)[i] == NULL)
            goto fail;
    }
    PQconninfoFree(opts);
    return n;
fail:
    PQconninfoFree(opts);
    for (i = 0; i < n; i++) {
        free(*each ? (*each)[i] : NULL);
        free(*names ? (*names)[i] : NULL);
    }
    free(*each);
    free(*names);
    *each = *names = NULL;
    log_error("database_read_url: out of memory");
    return -1;
}
