/* JWK Sets and the signature operations with their keys (jwk.h). */
#define OPENSSL_NO_DEPRECATED /* OpenSSL 3's own APIs only: no RSA_ or EC_KEY_ calls */

#include <ctype.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b64url.h"
#include "jsonstrict.h"
#include "jwk.h"

#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 16384 /* OpenSSL's own bound for a modulus it will verify with */
#define RSA_MAX_E    8     /* bytes of the public exponent */
#define SECRET_MAX   1024  /* bytes of an oct key */
#define KID_MAX      256
#define MEMBER_MAX   (RSA_MAX_BITS / 8 + 1) /* the longest base64url member decoded (n) */

struct jwk {
    enum jwk_alg alg;
    char *kid;         /* NULL when absent */
    EVP_PKEY *pkey;    /* RSA, EC, OKP */
    EVP_MAC_CTX *hmac; /* oct: HMAC keyed with the secret, duplicated for each use */
};

struct jwk_set {
    struct jwk *keys;
    size_t n;
    size_t skipped;
};

#define JWK_ALG_ROW(id, name, family, md, size, kty, crv) {name, family, md, size, kty, crv},
static const struct jwk_alg_info algs[JWK_NALGS] = {JWK_ALGS(JWK_ALG_ROW)};
#undef JWK_ALG_ROW

const struct jwk_alg_info *jwk_alg_info(enum jwk_alg alg)
{
    return &algs[alg];
}

bool jwk_alg_lookup(const char *name, size_t len, enum jwk_alg *alg)
{
    int i;

    for (i = 0; i < JWK_NALGS; i++)
        if (strlen(algs[i].name) == len && memcmp(algs[i].name, name, len) == 0) {
            *alg = (enum jwk_alg)i;
            return true;
        }
    return false;
}

/* ---- strict JSON ---------------------------------------------------------- */

/* Whether text (strict JSON: a backslash only ever starts an escape) holds \u0000. */
static bool has_nul_escape(const char *text, size_t len)
{
    size_t i;

    for (i = 0; i + 1 < len; i++)
        if (text[i] == '\\') {
            if (text[i + 1] == 'u' && len - i >= 6 && memcmp(text + i + 2, "0000", 4) == 0)
                return true;
            i++; /* the escaped character: "\\u0000" is a backslash, then text */
        }
    return false;
}

struct json_object *jwk_json_object(const char *text, size_t len, char *err, size_t errlen)
{
    struct json_tokener *tok;
    struct json_object *obj;
    char why[160];

    if (json_strict_validate(text, len, why, sizeof(why)) != JSON_STRICT_VALID) {
        snprintf(err, errlen, "not strict JSON: %s", why);
        return NULL;
    }
    if (has_nul_escape(text, len)) {
        snprintf(err, errlen, "the escape \\u0000 in JSON text");
        return NULL;
    }
    if (len > INT_MAX || (tok = json_tokener_new_ex(JSON_STRICT_MAX_DEPTH + 1)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    obj = json_tokener_parse_ex(tok, text, (int)len);
    if (obj == NULL || json_tokener_get_error(tok) != json_tokener_success) {
        /* json-c only ever refuses here what the strict check let through by a bug. */
        snprintf(err, errlen, "JSON that json-c cannot parse: %s",
                 json_tokener_error_desc(json_tokener_get_error(tok)));
        json_object_put(obj);
        obj = NULL;
    } else if (!json_object_is_type(obj, json_type_object)) {
        snprintf(err, errlen, "not a JSON object");
        json_object_put(obj);
        obj = NULL;
    }
    json_tokener_free(tok);
    return obj;
}

/* ---- one key ---------------------------------------------------------------- */

/* What the error messages of one key start with. */
struct key_ctx {
    size_t index; /* from 1 */
    const char *kid;
    char *err;
    size_t errlen;
};

static bool key_fail(const struct key_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static bool key_fail(const struct key_ctx *c, const char *fmt, ...)
{
    char kid[72] = "";
    size_t i, used;
    va_list ap;

    /* The kid comes from the file: printable ASCII only, and not all of it. */
    if (c->kid != NULL) {
        for (i = 0; c->kid[i] != '\0' && i < 64; i++)
            kid[i] = isprint((unsigned char)c->kid[i]) && c->kid[i] != '"' ? c->kid[i] : '?';
        snprintf(kid + i, sizeof(kid) - i, "%s", c->kid[i] != '\0' ? "..." : "");
    }
    if (c->errlen == 0)
        return false;
    if (c->kid != NULL)
        snprintf(c->err, c->errlen, "key %zu (kid \"%s\"): ", c->index, kid);
    else
        snprintf(c->err, c->errlen, "key %zu: ", c->index);
    used = strlen(c->err);
    va_start(ap, fmt);
    vsnprintf(c->err + used, c->errlen - used, fmt, ap);
    va_end(ap);
    return false;
}

/* A string member: 1 present (*s set), 0 absent, -1 present but not a string. */
static int string_member(struct json_object *o, const char *name, const char **s)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, name, &v))
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return -1;
    *s = json_object_get_string(v);
    return 1;
}

/* A required base64url member decoded into out (room for cap bytes). */
static bool b64_member(const struct key_ctx *c, struct json_object *o, const char *name,
                       unsigned char *out, size_t cap, size_t *len)
{
    const char *s;
    size_t n;

    switch (string_member(o, name, &s)) {
    case 0:
        return key_fail(c, "no \"%s\"", name);
    case -1:
        return key_fail(c, "\"%s\" is not a string", name);
    }
    n = strlen(s);
    if (n > B64URL_ENCODED_LEN(cap))
        return key_fail(c, "\"%s\" is too long", name);
    if (!b64url_decode(s, n, out, len))
        return key_fail(c, "\"%s\" is not base64url without padding", name);
    return true;
}

/* Skips leading zero octets (an integer's minimal form, RFC 7518 6.3.1.1). */
static const unsigned char *strip_zeros(const unsigned char *b, size_t *len)
{
    while (*len > 1 && b[0] == 0) {
        b++;
        (*len)--;
    }
    return b;
}

/*
 * Builds a public key of type (an OpenSSL name) from params; with check, then
 * runs OpenSSL's public key check (for EC: on the curve, not the point at
 * infinity, of the group's order). Not for RSA: there it tests n with
 * Miller-Rabin from random bases, so that a malformed modulus could pass at
 * one load and fail at the next; rsa_key's checks are deterministic.
 */
static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM *params, bool check_key)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL), *check = NULL;
    EVP_PKEY *pkey = NULL;

    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        goto fail;
    if (check_key && ((check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL)) == NULL ||
                      EVP_PKEY_public_check(check) != 1))
        goto fail;
    EVP_PKEY_CTX_free(check);
    EVP_PKEY_CTX_free(ctx);
    return pkey;
fail:
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(check);
    EVP_PKEY_CTX_free(ctx);
    return NULL;
}

static bool rsa_key(const struct key_ctx *c, struct json_object *o, struct jwk *k)
{
    unsigned char nb[MEMBER_MAX], eb[MEMBER_MAX];
    const unsigned char *n, *e;
    size_t nlen, elen;
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    int bits;

    if (!b64_member(c, o, "n", nb, sizeof(nb), &nlen) ||
        !b64_member(c, o, "e", eb, sizeof(eb), &elen))
        return false;
    n = strip_zeros(nb, &nlen);
    e = strip_zeros(eb, &elen);
    if (nlen == 0 || elen == 0)
        return key_fail(c, "empty \"n\" or \"e\"");
    bits = (int)(nlen * 8);
    while (bits > 0 && !(n[0] & (1u << ((bits - 1) % 8))))
        bits--;
    if (bits < RSA_MIN_BITS)
        return key_fail(c, "RSA key of %d bits: at least %d needed", bits, RSA_MIN_BITS);
    if (bits > RSA_MAX_BITS)
        return key_fail(c, "RSA key of %d bits: at most %d", bits, RSA_MAX_BITS);
    if (!(n[nlen - 1] & 1))
        return key_fail(c, "RSA modulus \"n\" is even");
    /* Odd and above 2^16, as OpenSSL's check and SP 800-56B want it. */
    if (elen > RSA_MAX_E)
        return key_fail(c, "RSA public exponent of more than %d bytes", RSA_MAX_E);
    if (!(e[elen - 1] & 1) || elen < 3) /* 3 bytes without a leading zero: >= 2^16 */
        return key_fail(c, "RSA public exponent \"e\" must be odd and above 65536");
    if ((bn_n = BN_bin2bn(n, (int)nlen, NULL)) == NULL ||
        (bn_e = BN_bin2bn(e, (int)elen, NULL)) == NULL || (bld = OSSL_PARAM_BLD_new()) == NULL ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL) {
        key_fail(c, "out of memory");
    } else if ((k->pkey = pkey_from_params("RSA", params, false)) == NULL) {
        key_fail(c, "RSA key refused by OpenSSL");
    }
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_e);
    BN_free(bn_n);
    return k->pkey != NULL;
}

static bool ec_key(const struct key_ctx *c, struct json_object *o, struct jwk *k)
{
    const struct jwk_alg_info *info = &algs[k->alg];
    unsigned char x[MEMBER_MAX], y[MEMBER_MAX], point[1 + 2 * 48];
    size_t xlen, ylen;
    const char *crv;
    OSSL_PARAM params[3];

    if (string_member(o, "crv", &crv) != 1)
        return key_fail(c, "no \"crv\" string");
    if (strcmp(crv, info->crv) != 0)
        return key_fail(c, "curve \"%s\" does not fit alg %s, which needs %s", crv, info->name,
                        info->crv);
    if (!b64_member(c, o, "x", x, sizeof(x), &xlen) || !b64_member(c, o, "y", y, sizeof(y), &ylen))
        return false;
    /* Full length, leading zeros included (RFC 7518 6.2.1.2). */
    if (xlen != info->size || ylen != info->size)
        return key_fail(c, "\"x\" and \"y\" must be %zu bytes for %s, not %zu and %zu", info->size,
                        info->crv, xlen, ylen);
    point[0] = 0x04; /* uncompressed (SEC 1) */
    memcpy(point + 1, x, info->size);
    memcpy(point + 1 + info->size, y, info->size);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)info->crv, 0);
    params[1] =
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * info->size);
    params[2] = OSSL_PARAM_construct_end();
    if ((k->pkey = pkey_from_params("EC", params, true)) == NULL)
        return key_fail(c, "EC key not on curve %s", info->crv);
    return true;
}

static bool okp_key(const struct key_ctx *c, struct json_object *o, struct jwk *k)
{
    unsigned char x[MEMBER_MAX];
    size_t xlen;
    const char *crv;

    if (string_member(o, "crv", &crv) != 1)
        return key_fail(c, "no \"crv\" string");
    if (strcmp(crv, "Ed25519") != 0)
        return key_fail(c, "curve \"%s\": EdDSA keys must be Ed25519", crv);
    if (!b64_member(c, o, "x", x, sizeof(x), &xlen))
        return false;
    if (xlen != algs[k->alg].size)
        return key_fail(c, "\"x\" must be %zu bytes for Ed25519, not %zu", algs[k->alg].size, xlen);
    k->pkey = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, x, xlen);
    if (k->pkey == NULL)
        return key_fail(c, "Ed25519 key refused by OpenSSL");
    return true;
}

static bool oct_key(const struct key_ctx *c, struct json_object *o, struct jwk *k)
{
    const struct jwk_alg_info *info = &algs[k->alg];
    unsigned char secret[SECRET_MAX];
    size_t len;
    EVP_MAC *mac = NULL;
    OSSL_PARAM params[2];
    bool ok = false;

    if (!b64_member(c, o, "k", secret, sizeof(secret), &len))
        return false;
    if (len < info->size) {
        key_fail(c, "a secret of %zu bytes: %s needs at least %zu (RFC 7518 3.2)", len, info->name,
                 info->size);
        goto out;
    }
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)info->md, 0);
    params[1] = OSSL_PARAM_construct_end();
    if ((mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL ||
        (k->hmac = EVP_MAC_CTX_new(mac)) == NULL ||
        EVP_MAC_init(k->hmac, secret, len, params) != 1) {
        key_fail(c, "HMAC refused by OpenSSL");
        goto out;
    }
    ok = true;
out:
    EVP_MAC_free(mac);
    OPENSSL_cleanse(secret, sizeof(secret));
    return ok;
}

/* Members that only a private key has (RFC 7518 6.3.2, 6.2.2; RFC 8037 2). */
static const char *private_member(struct json_object *o, const char *kty)
{
    static const char *const rsa[] = {"d", "p", "q", "dp", "dq", "qi", "oth", NULL};
    static const char *const d[] = {"d", NULL};
    const char *const *names = strcmp(kty, "RSA") == 0 ? rsa : strcmp(kty, "oct") == 0 ? NULL : d;

    for (; names != NULL && *names != NULL; names++)
        if (json_object_object_get_ex(o, *names, NULL))
            return *names;
    return NULL;
}

/* "key_ops", when present, must allow "verify" (RFC 7517 4.3). */
static bool key_ops_allow_verify(struct json_object *o, bool *present)
{
    struct json_object *ops;
    size_t i;

    *present = json_object_object_get_ex(o, "key_ops", &ops);
    if (!*present)
        return true;
    if (!json_object_is_type(ops, json_type_array))
        return false;
    for (i = 0; i < json_object_array_length(ops); i++) {
        struct json_object *op = json_object_array_get_idx(ops, i);

        if (json_object_is_type(op, json_type_string) &&
            strcmp(json_object_get_string(op), "verify") == 0)
            return true;
    }
    return false;
}

/* Parses key o (the index-th, from 1) into k; *skip when it is an encryption key. */
static bool key_parse(struct json_object *o, size_t index, struct jwk *k, bool *skip, char *err,
                      size_t errlen)
{
    struct key_ctx c = {index, NULL, err, errlen};
    const char *kty, *alg, *use, *kid = NULL, *priv;
    bool ops;

    *skip = false;
    if (!json_object_is_type(o, json_type_object))
        return key_fail(&c, "not a JSON object");
    switch (string_member(o, "kid", &kid)) {
    case -1:
        return key_fail(&c, "\"kid\" is not a string");
    case 1:
        c.kid = kid;
        if (kid[0] == '\0' || strlen(kid) > KID_MAX)
            return key_fail(&c, "\"kid\" is empty or longer than %d bytes", KID_MAX);
    }
    switch (string_member(o, "use", &use)) {
    case -1:
        return key_fail(&c, "\"use\" is not a string");
    case 1:
        if (strcmp(use, "enc") == 0) {
            *skip = true;
            return true;
        }
        if (strcmp(use, "sig") != 0)
            return key_fail(&c, "\"use\" is \"%s\", not \"sig\"", use);
    }
    if (!key_ops_allow_verify(o, &ops))
        return key_fail(&c, "\"key_ops\" does not allow \"verify\"");
    if (string_member(o, "kty", &kty) != 1)
        return key_fail(&c, "no \"kty\" string");
    if (string_member(o, "alg", &alg) != 1)
        return key_fail(&c, "no \"alg\" string: todod binds each key to its algorithm");
    if (!jwk_alg_lookup(alg, strlen(alg), &k->alg))
        return key_fail(&c, "alg \"%s\" is not one todod verifies", alg);
    if (strcmp(kty, algs[k->alg].kty) != 0)
        return key_fail(&c, "alg %s needs kty \"%s\", not \"%s\"", alg, algs[k->alg].kty, kty);
    if ((priv = private_member(o, kty)) != NULL)
        return key_fail(&c, "a private key (\"%s\"): give todod the public key only", priv);
    if (kid != NULL && (k->kid = strdup(kid)) == NULL)
        return key_fail(&c, "out of memory");
    switch (algs[k->alg].family) {
    case JWK_HMAC:
        return oct_key(&c, o, k);
    case JWK_RSA_PKCS1:
    case JWK_RSA_PSS:
        return rsa_key(&c, o, k);
    case JWK_ECDSA:
        return ec_key(&c, o, k);
    case JWK_EDDSA:
        return okp_key(&c, o, k);
    }
    return key_fail(&c, "unknown key family");
}

static void key_clear(struct jwk *k)
{
    free(k->kid);
    EVP_PKEY_free(k->pkey);
    EVP_MAC_CTX_free(k->hmac);
    memset(k, 0, sizeof(*k));
}

/* ---- the set ------------------------------------------------------------ */

struct jwk_set *jwk_set_parse(const char *data, size_t len, char *err, size_t errlen)
{
    struct json_object *root, *keys;
    struct jwk_set *set = NULL;
    size_t i, j, n;

    if (errlen > 0)
        err[0] = '\0';
    if (len > JWK_SET_MAX_BYTES) {
        snprintf(err, errlen, "larger than %d bytes", JWK_SET_MAX_BYTES);
        return NULL;
    }
    if ((root = jwk_json_object(data, len, err, errlen)) == NULL)
        goto out;
    if (!json_object_object_get_ex(root, "keys", &keys) ||
        !json_object_is_type(keys, json_type_array)) {
        snprintf(err, errlen, "no \"keys\" array: not a JWK Set (RFC 7517 5)");
        goto out;
    }
    n = json_object_array_length(keys);
    if (n > JWK_SET_MAX_KEYS) {
        snprintf(err, errlen, "%zu keys: at most %d", n, JWK_SET_MAX_KEYS);
        goto out;
    }
    if ((set = calloc(1, sizeof(*set))) == NULL ||
        (n > 0 && (set->keys = calloc(n, sizeof(*set->keys))) == NULL)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (i = 0; i < n; i++) {
        struct jwk *k = &set->keys[set->n];
        bool skip;

        if (!key_parse(json_object_array_get_idx(keys, i), i + 1, k, &skip, err, errlen)) {
            key_clear(k);
            goto fail;
        }
        if (skip) {
            set->skipped++;
            continue;
        }
        for (j = 0; k->kid != NULL && j < set->n; j++)
            if (set->keys[j].kid != NULL && strcmp(set->keys[j].kid, k->kid) == 0) {
                struct key_ctx c = {i + 1, k->kid, err, errlen};

                key_fail(&c, "the same kid as an earlier key");
                key_clear(k);
                goto fail;
            }
        set->n++;
    }
    if (set->n == 0) {
        snprintf(err, errlen, "no signature keys (%zu encryption keys skipped)", set->skipped);
        goto fail;
    }
    goto out;
fail:
    jwk_set_free(set);
    set = NULL;
out:
    json_object_put(root);
    ERR_clear_error();
    return set;
}

void jwk_set_free(struct jwk_set *set)
{
    size_t i;

    if (set == NULL)
        return;
    for (i = 0; i < set->n; i++)
        key_clear(&set->keys[i]);
    free(set->keys);
    free(set);
}

size_t jwk_set_count(const struct jwk_set *set)
{
    return set->n;
}

const struct jwk *jwk_set_key(const struct jwk_set *set, size_t i)
{
    return i < set->n ? &set->keys[i] : NULL;
}

size_t jwk_set_skipped(const struct jwk_set *set)
{
    return set->skipped;
}

bool jwk_set_has_secret(const struct jwk_set *set)
{
    size_t i;

    for (i = 0; i < set->n; i++)
        if (set->keys[i].hmac != NULL)
            return true;
    return false;
}

bool jwk_set_check_mode(const struct jwk_set *set, const struct stat *st, char *err, size_t errlen)
{
    if (errlen > 0)
        err[0] = '\0';
    if (!jwk_set_has_secret(set) || (st->st_mode & (S_IRWXG | S_IRWXO)) == 0)
        return true;
    snprintf(err, errlen,
             "holds a secret (oct) key, and its mode %04o lets others than its owner at it: "
             "chmod 600 it",
             (unsigned)(st->st_mode & 07777));
    return false;
}

enum jwk_find jwk_set_find(const struct jwk_set *set, const char *kid, enum jwk_alg alg,
                           const struct jwk **key)
{
    size_t i, found = 0;

    *key = NULL;
    for (i = 0; i < set->n; i++) {
        const struct jwk *k = &set->keys[i];

        if (kid != NULL ? k->kid != NULL && strcmp(k->kid, kid) == 0 : k->alg == alg) {
            *key = k;
            found++;
        }
    }
    /* kids are unique: more than one only without. */
    return found == 0 ? JWK_NOT_FOUND : found == 1 ? JWK_FOUND : JWK_AMBIGUOUS;
}

const struct jwk *jwk_set_signing_key(const struct jwk_set *set, const char *kid)
{
    size_t i;

    for (i = 0; i < set->n; i++)
        if (set->keys[i].hmac != NULL &&
            (kid == NULL || (set->keys[i].kid != NULL && strcmp(set->keys[i].kid, kid) == 0)))
            return &set->keys[i];
    return NULL;
}

enum jwk_alg jwk_key_alg(const struct jwk *key)
{
    return key->alg;
}

const char *jwk_key_kid(const struct jwk *key)
{
    return key->kid;
}

/* ---- signatures ------------------------------------------------------------ */

bool jwk_sign(const struct jwk *key, const void *data, size_t len, unsigned char *mac,
              size_t *maclen)
{
    EVP_MAC_CTX *ctx;
    bool ok;

    if (key->hmac == NULL || (ctx = EVP_MAC_CTX_dup(key->hmac)) == NULL)
        return false;
    ok = EVP_MAC_update(ctx, data, len) == 1 && EVP_MAC_final(ctx, mac, maclen, JWK_MAX_MAC) == 1;
    EVP_MAC_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

static bool verify_hmac(const struct jwk *key, const void *data, size_t len,
                        const unsigned char *sig, size_t siglen)
{
    unsigned char mac[JWK_MAX_MAC];
    size_t maclen;
    bool ok;

    /* The length is no secret: the algorithm fixes it. */
    if (siglen != algs[key->alg].size || !jwk_sign(key, data, len, mac, &maclen))
        return false;
    ok = maclen == siglen && CRYPTO_memcmp(mac, sig, siglen) == 0;
    OPENSSL_cleanse(mac, sizeof(mac));
    return ok;
}

/* JOSE's r || s (RFC 7518 3.4) as the DER ECDSA-Sig-Value libcrypto verifies. */
static int ecdsa_der(const unsigned char *sig, size_t siglen, size_t size, unsigned char *der,
                     size_t cap)
{
    ECDSA_SIG *s;
    BIGNUM *r = NULL, *ss = NULL;
    int n = -1;

    if (siglen != 2 * size || (s = ECDSA_SIG_new()) == NULL)
        return -1;
    r = BN_bin2bn(sig, (int)size, NULL);
    ss = BN_bin2bn(sig + size, (int)size, NULL);
    if (r != NULL && ss != NULL && ECDSA_SIG_set0(s, r, ss) == 1) {
        r = ss = NULL; /* s owns them */
        if ((n = i2d_ECDSA_SIG(s, NULL)) > 0 && (size_t)n <= cap) {
            unsigned char *p = der;

            n = i2d_ECDSA_SIG(s, &p);
        } else {
            n = -1;
        }
    }
    BN_free(r);
    BN_free(ss);
    ECDSA_SIG_free(s);
    return n;
}

bool jwk_verify(const struct jwk *key, const void *data, size_t len, const unsigned char *sig,
                size_t siglen)
{
    const struct jwk_alg_info *info = &algs[key->alg];
    unsigned char der[2 * (3 + 48 + 1) + 8];
    EVP_MD_CTX *md;
    EVP_PKEY_CTX *pctx = NULL;
    bool ok = false;
    int n;

    if (info->family == JWK_HMAC)
        return verify_hmac(key, data, len, sig, siglen);
    if ((md = EVP_MD_CTX_new()) == NULL)
        return false;
    if (EVP_DigestVerifyInit_ex(md, &pctx, info->md, NULL, NULL, key->pkey, NULL) != 1)
        goto out;
    switch (info->family) {
    case JWK_RSA_PKCS1:
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0)
            goto out;
        break;
    case JWK_RSA_PSS:
        /* MGF1 with the same hash, a salt as long as the hash (RFC 7518 3.5). */
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0)
            goto out;
        break;
    case JWK_ECDSA:
        if ((n = ecdsa_der(sig, siglen, info->size, der, sizeof(der))) < 0)
            goto out;
        sig = der;
        siglen = (size_t)n;
        break;
    case JWK_HMAC:
    case JWK_EDDSA:
        break;
    }
    ok = EVP_DigestVerify(md, sig, siglen, data, len) == 1;
out:
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return ok;
}
