/*
 * Outgoing https:// (otlp_endpoint, perf_nodes): evhttp client connections
 * over libevent's OpenSSL bufferevents. Every connection verifies the
 * server's certificate chain against tls_ca_file (or the system's store when
 * it is unset) and the URL's host name (or IP address) against the
 * certificate, and sends the name as SNI; a connection that fails either
 * check never carries a byte of the request. There is no option to turn
 * verification off, and no fall-back to plain text.
 *
 * A worker has one tls_client (one SSL_CTX), made after the fork and only
 * when it first connects to an https:// URL.
 */
#ifndef TODOD_TLS_H
#define TODOD_TLS_H

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stddef.h>

struct conf;
struct tls_client;

/* The URL's scheme is https (any case). */
bool tls_url_is_https(const char *url);

/* NULL when out of memory. conf must outlive the client. */
struct tls_client *tls_client_new(const struct conf *conf);
void tls_client_free(struct tls_client *c);

/* Why a connection's TLS failed, kept until the next attempt on it. */
struct tls_failure {
    long verify;  /* X509_V_OK, or the first certificate check that failed */
    char why[96]; /* "" when nothing failed */
};

/*
 * A connection to host:port like evhttp_connection_base_new's, speaking TLS;
 * host is a name or an address literal (without brackets). What failed is
 * written into *failure, which must live as long as the connection. NULL
 * (logged) when the TLS context or the connection cannot be made.
 */
struct evhttp_connection *tls_connection_new(struct tls_client *c, struct event_base *base,
                                             struct evdns_base *dns, const char *host,
                                             unsigned short port, struct tls_failure *failure);

/*
 * After a request on the connection failed: fills failure->why with what TLS
 * says went wrong ("certificate verify failed: hostname mismatch", ...) and
 * returns it, or returns NULL when TLS saw nothing wrong. What it returns is
 * taken: the next call reports only a newer failure.
 */
const char *tls_failure_reason(struct evhttp_connection *evcon, struct tls_failure *failure);

#endif
