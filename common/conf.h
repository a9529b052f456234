/* The configuration file: "key = value" lines, parsed by a table of directives. */
#ifndef TODOD_CONF_H
#define TODOD_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define CONF_DEFAULT_PATH       "/etc/todod/todod.conf"
#define CONF_MAX_WORKERS        64
#define CONF_MAX_DB_CONNECTIONS 64

struct conf {
    char listen[300]; /* as written, e.g. "127.0.0.1:3000", "[::1]:3000" */
    struct sockaddr_storage listen_addr;
    socklen_t listen_addrlen;
    char admin_listen[300]; /* "" when unset; else as listen, with its companions */
    struct sockaddr_storage admin_listen_addr;
    socklen_t admin_listen_addrlen;
    int workers; /* resolved: "auto" becomes the online CPU count */
    bool workers_auto;
    char *database_url;   /* never NULL; "" means libpq defaults (PG* env) */
    int db_connections;   /* 1..CONF_MAX_DB_CONNECTIONS */
    size_t max_body_size; /* bytes */
    long perf_max_messages;
    long perf_max_batch;
    double request_timeout;   /* seconds */
    double keepalive_timeout; /* seconds */
    double shutdown_timeout;  /* seconds */
    int log_level;            /* enum log_level */
    bool access_log;
    int access_log_format;    /* enum conf_access_log_format */
    char *user;               /* NULL when unset */
    char *pid_file;           /* NULL when unset */
    int max_connections;      /* open client connections per worker */
    double drain_delay;       /* seconds /ready says 503 before a stopping worker stops accepting */
    bool db_prepared;         /* off: unnamed statements, no session state (PgBouncer) */
    int db_write_connections; /* at most this many write connections per worker, on demand */
    char *database_read_url;  /* never NULL; "": no standbys, reads go to database_url */
    double max_replica_lag;   /* seconds: a standby further behind serves no read */
    char *otlp_endpoint;      /* NULL: tracing off */
    double trace_sample_ratio;
    char *service_name;
    char *perf_nodes;         /* NULL when unset: comma-separated base URLs */
    double perf_max_duration; /* seconds a paced test may be planned to run */
    int auth;                 /* enum conf_auth */
    char *jwt_keys;           /* NULL when unset: a JWK Set file */
    char *jwt_audience;       /* NULL: aud not checked */
    char *jwt_issuer;         /* NULL: iss not checked */
    int jwt_leeway;           /* seconds of clock skew on exp, nbf, iat */
    bool protected_mode;      /* auth off, listen not loopback: refuse outside peers */
    char *tls_ca_file;        /* NULL: the system's store, for outgoing https:// */
    char *tls_ca_pem;         /* tls_ca_file's certificates, read by conf_load (or NULL) */
    size_t tls_ca_len;
};

enum conf_access_log_format { CONF_LOG_COMBINED, CONF_LOG_JSON };
enum conf_auth { CONF_AUTH_OFF, CONF_AUTH_JWT };

/* Fill with the documented defaults (allocates database_url). */
void conf_defaults(struct conf *c);

/*
 * Parse path into *c (which conf_load initialises with the defaults first).
 * On error returns -1, leaves *c freed, and writes "path:line: message" into err.
 * After a successful parse the DATABASE_URL environment variable, when set and
 * non-empty, replaces database_url. tls_ca_file, when set, is read and
 * checked (tlsca.h) into tls_ca_pem: a bad file is an error here.
 */
int conf_load(const char *path, struct conf *c, char *err, size_t errlen);

void conf_free(struct conf *c);

/*
 * At a reload: give next the running value of every key read at start only
 * (pid_file), logging each change it holds back. On error (out of memory)
 * returns -1, frees next and writes a message into err.
 */
int conf_keep_immutable(struct conf *next, const struct conf *running, char *err, size_t errlen);

/* The key table, for documentation checks: name and default (NULL: unset) of key i. */
size_t conf_nkeys(void);
const char *conf_key_name(size_t i);
const char *conf_key_default(size_t i);

#endif
