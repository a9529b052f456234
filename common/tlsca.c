#include "tlsca.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The certificates of pem, parsed by OpenSSL; NULL when it cannot read them. */
static STACK_OF(X509_INFO) * read_infos(const char *pem, size_t len)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    STACK_OF(X509_INFO) *infos = NULL;

    if (bio != NULL)
        infos = PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL);
    BIO_free(bio);
    return infos;
}

int tlsca_add(X509_STORE *store, const char *pem, size_t len)
{
    STACK_OF(X509_INFO) *infos = read_infos(pem, len);
    int i, n = 0;

    if (infos == NULL)
        return -1;
    for (i = 0; i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *info = sk_X509_INFO_value(infos, i);

        if (info->x509 == NULL)
            continue;
        /* The same certificate twice in a bundle is not an error. */
        if (X509_STORE_add_cert(store, info->x509) != 1 &&
            ERR_GET_REASON(ERR_peek_last_error()) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
            n = -1;
            break;
        }
        n++;
    }
    ERR_clear_error();
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    return n;
}

/* A whole file of at most TLSCA_MAX_FILE bytes, NUL-terminated. */
static char *read_file(FILE *f, size_t *len, char *err, size_t errlen, const char *path)
{
    char *buf = malloc(TLSCA_MAX_FILE + 1), *shrunk;
    size_t n;

    if (buf == NULL) {
        snprintf(err, errlen, "tls_ca_file %s: out of memory", path);
        return NULL;
    }
    n = fread(buf, 1, TLSCA_MAX_FILE + 1, f);
    if (ferror(f) || n > TLSCA_MAX_FILE) {
        if (ferror(f))
            snprintf(err, errlen, "tls_ca_file %s: cannot read: %s", path, strerror(errno));
        else
            snprintf(err, errlen, "tls_ca_file %s: larger than %d bytes", path, TLSCA_MAX_FILE);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    /* Kept for the process's life (and each worker's): no more than it holds. */
    shrunk = realloc(buf, n + 1);
    return shrunk != NULL ? shrunk : buf;
}

int tlsca_read(const char *path, char **pem, size_t *len, char *err, size_t errlen)
{
    X509_STORE *store;
    FILE *f = fopen(path, "re");
    char *buf;
    int n;

    if (f == NULL) {
        snprintf(err, errlen, "tls_ca_file %s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    buf = read_file(f, len, err, errlen, path);
    fclose(f);
    if (buf == NULL)
        return -1;
    /* Checked as the workers will use it: into a store of its own. */
    store = X509_STORE_new();
    n = store != NULL ? tlsca_add(store, buf, *len) : -1;
    X509_STORE_free(store);
    if (n <= 0) {
        snprintf(err, errlen, "tls_ca_file %s: %s", path,
                 n == 0 ? "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                        : "is not readable PEM certificates");
        free(buf);
        return -1;
    }
    *pem = buf;
    return 0;
}
