/*
 * tls_ca_file: the CA certificates the outgoing https:// connections trust
 * (otlp_endpoint, perf_nodes). The file is read where the configuration is
 * (conf_load: at start, at a reload, by todod -t), so a bad file is a
 * configuration error and a reload with one fails; the workers build their
 * trust store from the bytes read, never from the file (they may no longer
 * be allowed to read it, and a worker restarted later trusts what its
 * generation was started with).
 */
#ifndef TODOD_TLSCA_H
#define TODOD_TLSCA_H

#include <openssl/x509_vfy.h>
#include <stddef.h>

#define TLSCA_MAX_FILE (4 * 1024 * 1024) /* a system bundle is about 200 KiB */

/*
 * Reads path into *pem (NUL-terminated, *len bytes) and checks that it is PEM
 * holding at least one certificate and nothing unreadable. On error returns
 * -1 and writes why into err.
 */
int tlsca_read(const char *path, char **pem, size_t *len, char *err, size_t errlen);

/* Adds every certificate of pem to store: how many, or -1 on an error. */
int tlsca_add(X509_STORE *store, const char *pem, size_t len);

#endif
