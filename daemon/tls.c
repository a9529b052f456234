#include "tls.h"

#include <arpa/inet.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "log.h"
#include "tlsca.h"

struct tls_client {
    const struct conf *conf;
    SSL_CTX *ctx; /* made at the first https:// connection */
};

bool tls_url_is_https(const char *url)
{
    return url != NULL && strncasecmp(url, "https://", 8) == 0;
}

struct tls_client *tls_client_new(const struct conf *conf)
{
    struct tls_client *c = calloc(1, sizeof(*c));

    if (c != NULL)
        c->conf = conf;
    return c;
}

void tls_client_free(struct tls_client *c)
{
    if (c == NULL)
        return;
    SSL_CTX_free(c->ctx); /* each SSL holds a reference of its own */
    free(c);
}

/* The first check that failed, for the message; OpenSSL decides, we only note. */
static int on_verify(int ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_failure *f = ssl != NULL ? SSL_get_app_data(ssl) : NULL;

    if (!ok && f != NULL && f->verify == X509_V_OK)
        f->verify = X509_STORE_CTX_get_error(store);
    return ok;
}

/* evhttp reuses the SSL when it reconnects: each handshake starts clean. */
static void on_info(const SSL *ssl, int where, int ret)
{
    struct tls_failure *f = SSL_get_app_data(ssl);

    (void)ret;
    if ((where & SSL_CB_HANDSHAKE_START) && f != NULL) {
        f->verify = X509_V_OK;
        f->why[0] = '\0';
    }
}

static SSL_CTX *make_ctx(const struct conf *conf)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL)
        return NULL;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        goto fail;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, on_verify);
    if (conf->tls_ca_pem != NULL) {
        if (tlsca_add(SSL_CTX_get_cert_store(ctx), conf->tls_ca_pem, conf->tls_ca_len) <= 0)
            goto fail;
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* The name the certificate must carry, and SNI (never for an address: RFC 6066). */
static int set_peer_name(SSL *ssl, const char *host)
{
    if (is_ip_literal(host))
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 ? 0 : -1;
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(ssl, host) != 1 || SSL_set_tlsext_host_name(ssl, host) != 1)
        return -1;
    return 0;
}

struct evhttp_connection *tls_connection_new(struct tls_client *c, struct event_base *base,
                                             struct evdns_base *dns, const char *host,
                                             unsigned short port, struct tls_failure *failure)
{
    struct evhttp_connection *evcon;
    struct bufferevent *bev;
    SSL *ssl;

    memset(failure, 0, sizeof(*failure));
    if (c->ctx == NULL && (c->ctx = make_ctx(c->conf)) == NULL) {
        log_error("https://%s:%u: cannot set up TLS: %s", host, port,
                  ERR_reason_error_string(ERR_get_error()));
        ERR_clear_error();
        return NULL;
    }
    ssl = SSL_new(c->ctx);
    if (ssl == NULL || set_peer_name(ssl, host) != 0) {
        log_error("https://%s:%u: cannot set up TLS", host, port);
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_app_data(ssl, failure);
    SSL_set_info_callback(ssl, on_info);
    /* The bufferevent owns the SSL from here (freed with it). */
    bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                         BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (bev == NULL) {
        SSL_free(ssl);
        return NULL;
    }
    /* A peer that closes without close_notify: HTTP's own framing (a length or
     * chunks) is what tells a whole answer from a cut one, as for plain HTTP. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    evcon = evhttp_connection_base_bufferevent_new(base, dns, bev, host, port);
    if (evcon == NULL)
        bufferevent_free(bev);
    return evcon;
}

const char *tls_failure_reason(struct evhttp_connection *evcon, struct tls_failure *failure)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    unsigned long e, last = 0;

    /* The bufferevent keeps OpenSSL's errors for us: take them all. */
    while (bev != NULL && (e = bufferevent_get_openssl_error(bev)) != 0)
        last = e;
    if (failure->verify != X509_V_OK)
        snprintf(failure->why, sizeof(failure->why), "TLS: certificate verify failed: %s",
                 X509_verify_cert_error_string(failure->verify));
    else if (last != 0 && ERR_reason_error_string(last) != NULL)
        snprintf(failure->why, sizeof(failure->why), "TLS: %s", ERR_reason_error_string(last));
    else if (last != 0)
        snprintf(failure->why, sizeof(failure->why), "TLS: error %lx", last);
    else
        failure->why[0] = '\0';
    /* Said once: a later failure without a handshake (refused) is not this one. */
    failure->verify = X509_V_OK;
    return failure->why[0] != '\0' ? failure->why : NULL;
}
