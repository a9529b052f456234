/*
 * libFuzzer harness: bearer tokens (common/jwt.c, common/jwk.c,
 * common/b64url.c), every Authorization header's way in.
 *
 * Input: byte 0 chooses what the rest is, and with which verifier (its low
 * bit: audience and issuer configured or not):
 * - mode 0, a token, checked with a fixed key set (the RFC 7515 and RFC 8037
 *   example keys: HS256, RS256, ES256, EdDSA, and two HS384 keys without kid);
 * - mode 1, a header and a claims set (JSON text, split at the first NUL),
 *   which the harness encodes and signs with the HS256 key, with libcrypto and
 *   OpenSSL's base64: this reaches the claims, which an unsigned token never does;
 * - mode 2, a JWK Set file;
 * - mode 3, base64url text;
 * - mode 4, a sub and scopes (split at the first NUL) for jwt_sign.
 * Besides the sanitizers' findings it checks, against models that do not use
 * the code under test:
 * - a token is TOO_LARGE past 8 KiB, and otherwise MALFORMED exactly when it
 *   is not three canonical base64url parts (decoded and re-encoded by
 *   OpenSSL: the same text); so an accepted token re-encodes to its own bytes;
 * - an accepted token's claims, parsed by json-c alone, hold a numeric exp
 *   after now - leeway, an nbf and iat not after now + leeway, the configured
 *   aud and iss, the sub that jwt_claims_sub() gives, and every scope
 *   jwt_has_scope() finds appears in "scope" or "scp";
 * - jwt_verify_cached() (a cache per verifier kept across inputs, small, so
 *   that it evicts) answers as jwt_verify() does, twice in a row, and again
 *   at another time (from an hour before to two hours after);
 * - a JWK Set is refused with a message, accepted with 1 to 64 keys of known
 *   algorithms, distinct kids each found by jwk_set_find(), the same answer
 *   with a 1-byte message buffer;
 * - base64url: decoding agrees with OpenSSL's decoder on canonical text, and
 *   what decodes re-encodes to the input;
 * - what jwt_sign() returns verifies, with the sub and the scopes given.
 */
#include <json-c/json.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b64url.h"
#include "jwk.h"
#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_jwt: %s\n", what);                                               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define NOW    1700000000.0
#define LEEWAY 30

/* The RFC 7515 appendix A.1 (HS256), A.2 (RS256), A.3 (ES256) and RFC 8037 A.2 keys. */
static const char keys_json[] =
    "{\"keys\":["
    "{\"kty\":\"oct\",\"kid\":\"hs\",\"alg\":\"HS256\",\"k\":\"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-"
    "EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow\"},"
    "{\"kty\":\"oct\",\"alg\":\"HS384\",\"k\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzND"
    "U2Nzg5YWJjZGVm\"},"
    "{\"kty\":\"oct\",\"alg\":\"HS384\",\"k\":\"ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1-"
    "f4CBgoOEhYaHiImKi4"
    "yNjo-QkZKT\"},"
    "{\"kty\":\"RSA\",\"kid\":\"rs\",\"alg\":\"RS256\",\"e\":\"AQAB\",\"n\":"
    "\"ofgWCuLjybRlzo0tZWJjNi"
    "uSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNM"
    "sD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo"
    "7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaG"
    "Nj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ\"},"
    "{\"kty\":\"EC\",\"kid\":\"ec\",\"alg\":\"ES256\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2xF1Bg8vub9"
    "tLe1gHMzV76e8Tus9uPHvRVEU\",\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"},"
    "{\"kty\":\"OKP\",\"kid\":\"ed\",\"alg\":\"EdDSA\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7T"
    "yWQHOg7hcvPapiMlrwIaaPcHURo\"}]}";
static const char *const audience = "todod", *const issuer = "https://idp.example";

static struct jwt_verifier *plain, *strict; /* strict: audience and issuer configured */
static struct jwt_cache *caches[2];         /* one per verifier: neither flushes the other */
static unsigned char hs256_secret[64];

static void setup(void)
{
    char err[256];
    struct jwk_set *a = jwk_set_parse(keys_json, strlen(keys_json), err, sizeof(err));
    struct jwk_set *b = jwk_set_parse(keys_json, strlen(keys_json), err, sizeof(err));
    const char *k = strstr(keys_json, "\"k\":\"") + 5;
    size_t len;

    CHECK(a != NULL && b != NULL, err);
    plain = jwt_verifier_new(a, NULL, NULL, LEEWAY);
    strict = jwt_verifier_new(b, audience, issuer, LEEWAY);
    caches[0] = jwt_cache_new(8);
    caches[1] = jwt_cache_new(8);
    CHECK(plain != NULL && strict != NULL && caches[0] != NULL && caches[1] != NULL,
          "out of memory");
    CHECK(b64url_decode(k, (size_t)(strchr(k, '"') - k), hs256_secret, &len) && len == 64,
          "the A.1 key");
}

/* ---- the model's base64url, by OpenSSL ---------------------------------------- */

/* Decodes s[0..n) with EVP_DecodeBlock; -1 when it is not base64url the way
 * OpenSSL and the alphabet see it. Canonical form is checked by the caller. */
static long openssl_decode(const char *s, size_t n, unsigned char *out)
{
    char *std = malloc(n + 4);
    size_t i, pad = (4 - n % 4) % 4;
    int len;

    CHECK(std != NULL, "out of memory");
    for (i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            free(std);
            return -1;
        }
        std[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    if (pad == 3) {
        free(std);
        return -1;
    }
    memset(std + n, '=', pad);
    len = n + pad == 0 ? 0 : EVP_DecodeBlock(out, (unsigned char *)std, (int)(n + pad));
    free(std);
    return len < 0 ? -1 : len - (long)pad; /* EVP_DecodeBlock counts the padding as zeros */
}

static char *openssl_encode(const unsigned char *in, size_t n)
{
    char *out = malloc(4 * (n / 3 + 1) + 1);
    int i, len;

    CHECK(out != NULL, "out of memory");
    len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

/* Whether s[0..n) is canonical unpadded base64url, by the model. */
static bool canonical(const char *s, size_t n)
{
    unsigned char *buf = malloc(n + 3);
    long len = openssl_decode(s, n, buf);
    bool ok = false;

    CHECK(buf != NULL, "out of memory");
    if (len >= 0) {
        char *again = openssl_encode(buf, (size_t)len);

        ok = strlen(again) == n && memcmp(again, s, n) == 0;
        free(again);
    }
    free(buf);
    return ok;
}

/* ---- the model's view of claims ------------------------------------------------ */

static struct json_object *json_c_object(const unsigned char *text, size_t n)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o;

    CHECK(tok != NULL, "out of memory");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    o = json_tokener_parse_ex(tok, (const char *)text, (int)n);
    json_tokener_free(tok);
    return o;
}

static bool number(struct json_object *o, const char *name, double *d)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, name, &v))
        return false;
    CHECK(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double),
          "a date claim that is not a number");
    *d = json_object_get_double(v);
    return true;
}

/* Whether word is one of the space-separated tokens of s. */
static bool has_word(const char *s, const char *word, size_t n)
{
    const char *p = s + strspn(s, " ");

    while (*p != '\0') {
        size_t k = strcspn(p, " ");

        if (k == n && memcmp(p, word, n) == 0)
            return true;
        p += k;
        p += strspn(p, " ");
    }
    return false;
}

static bool scope_listed(struct json_object *o, const char *word, size_t n)
{
    struct json_object *v;
    size_t i;

    if (json_object_object_get_ex(o, "scope", &v) && has_word(json_object_get_string(v), word, n))
        return true;
    if (!json_object_object_get_ex(o, "scp", &v))
        return false;
    if (json_object_is_type(v, json_type_string))
        return has_word(json_object_get_string(v), word, n);
    for (i = 0; i < json_object_array_length(v); i++) {
        const char *s = json_object_get_string(json_object_array_get_idx(v, i));

        if (strlen(s) == n && memcmp(s, word, n) == 0)
            return true;
    }
    return false;
}

/* An accepted token's claims (text[0..n)), as json-c alone reads them. */
static void check_accepted_claims(const struct jwt_claims *c, const unsigned char *text, size_t n,
                                  bool with_aud)
{
    struct json_object *o = json_c_object(text, n), *v;
    double exp, nbf, iat;
    const char *scope = jwt_claims_scope(c);

    CHECK(o != NULL && json_object_is_type(o, json_type_object), "accepted claims json-c refuses");
    CHECK(number(o, "exp", &exp) && NOW < exp + LEEWAY, "accepted without a valid exp");
    CHECK(exp == jwt_claims_exp(c), "exp differs");
    CHECK(!number(o, "nbf", &nbf) || NOW + LEEWAY >= nbf, "accepted before nbf");
    CHECK(!number(o, "iat", &iat) || iat <= NOW + LEEWAY, "accepted an iat in the future");
    if (json_object_object_get_ex(o, "sub", &v))
        CHECK(jwt_claims_sub(c) != NULL &&
                  strcmp(json_object_get_string(v), jwt_claims_sub(c)) == 0,
              "sub differs");
    else
        CHECK(jwt_claims_sub(c) == NULL, "a sub from nowhere");
    if (with_aud) {
        CHECK(json_object_object_get_ex(o, "iss", &v) &&
                  strcmp(json_object_get_string(v), issuer) == 0,
              "accepted without the issuer");
        CHECK(json_object_object_get_ex(o, "aud", &v), "accepted without aud");
        if (json_object_is_type(v, json_type_string)) {
            CHECK(strcmp(json_object_get_string(v), audience) == 0, "accepted another audience");
        } else {
            size_t i;
            bool found = false;

            for (i = 0; i < json_object_array_length(v); i++)
                found |=
                    strcmp(json_object_get_string(json_object_array_get_idx(v, i)), audience) == 0;
            CHECK(found, "accepted an aud array without the audience");
        }
    }
    /* Every scope jwt_has_scope() finds is one the claims list. */
    while (*scope != '\0') {
        size_t k = strcspn(scope, " ");
        char *word = strndup(scope, k);

        CHECK(word != NULL && jwt_has_scope(c, word), "a listed scope not found");
        CHECK(scope_listed(o, word, k), "a scope the claims do not list");
        free(word);
        scope += k;
        scope += *scope == ' ';
    }
    json_object_put(o);
}

/* ---- modes --------------------------------------------------------------------- */

static void check_token(const struct jwt_verifier *v, const char *token, size_t n, bool with_aud)
{
    struct jwt_cache *cache = caches[with_aud];
    /* A second time to check at, from an hour before to two after: a cache hit
     * must then refuse an expired or not yet valid token as jwt_verify does. */
    double later = NOW + (double)((int)(n % 13) - 4) * 900;
    struct jwt_claims *c, *c2;
    enum jwt_err e = jwt_verify(v, token, n, NOW, &c), e2;
    const char *d1 = memchr(token, '.', n),
               *d2 = d1 ? memchr(d1 + 1, '.', n - (d1 + 1 - token)) : NULL;
    bool three = d2 != NULL && memchr(d2 + 1, '.', n - (d2 + 1 - token)) == NULL;
    bool structural;

    CHECK((unsigned)e < JWT_NERRS && e != JWT_ERR_MISSING, "an error kind out of range");
    CHECK((e == JWT_ERR_OK) == (c != NULL), "claims with a refusal or none with a success");
    CHECK(jwt_err_description(e) != NULL && jwt_err_reason(e) != NULL, "no description");
    if (n > JWT_MAX_LEN) {
        CHECK(e == JWT_ERR_TOO_LARGE, "a token over 8 KiB not refused as too large");
    } else {
        structural = three && canonical(token, (size_t)(d1 - token)) &&
                     canonical(d1 + 1, (size_t)(d2 - d1 - 1)) &&
                     canonical(d2 + 1, n - (size_t)(d2 + 1 - token));
        CHECK((e == JWT_ERR_MALFORMED) == !structural,
              structural ? "canonical parts refused as malformed" : "malformed parts passed");
    }
    if (e == JWT_ERR_OK) {
        unsigned char *claims = malloc(n);
        long len;

        CHECK(claims != NULL, "out of memory");
        len = openssl_decode(d1 + 1, (size_t)(d2 - d1 - 1), claims);
        CHECK(len >= 0, "accepted claims OpenSSL cannot decode");
        check_accepted_claims(c, claims, (size_t)len, with_aud);
        free(claims);
    }
    /* The cache answers the same, first (miss or hit) and second (hit) time. */
    e2 = jwt_verify_cached(cache, v, token, n, NOW, &c2);
    CHECK(e2 == e && (c2 != NULL) == (c != NULL), "the cache answers otherwise");
    jwt_claims_unref(c2);
    e2 = jwt_verify_cached(cache, v, token, n, NOW, &c2);
    CHECK(e2 == e && (c2 != NULL) == (c != NULL), "the cache answers otherwise, twice");
    if (c != NULL && c2 != NULL) {
        CHECK(strcmp(jwt_claims_scope(c), jwt_claims_scope(c2)) == 0, "cached scopes differ");
        CHECK((jwt_claims_sub(c) == NULL) == (jwt_claims_sub(c2) == NULL), "cached sub differs");
    }
    jwt_claims_unref(c2);
    jwt_claims_unref(c);
    e = jwt_verify(v, token, n, later, &c);
    e2 = jwt_verify_cached(cache, v, token, n, later, &c2);
    CHECK(e2 == e && (c2 != NULL) == (c != NULL), "the cache answers otherwise later");
    jwt_claims_unref(c2);
    jwt_claims_unref(c);
}

/* Signs header.claims with the HS256 key: the token a key holder would make. */
static void check_signed(const struct jwt_verifier *v, const uint8_t *data, size_t size,
                         bool with_aud)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t hlen = nul ? (size_t)(nul - data) : size, clen = nul ? size - hlen - 1 : 0;
    char *h = openssl_encode(data, hlen), *c = openssl_encode(nul ? nul + 1 : data, clen), *sig;
    size_t input_len = strlen(h) + 1 + strlen(c);
    char *token = malloc(input_len + 1 + 100);
    unsigned char mac[64];
    size_t maclen;

    CHECK(token != NULL, "out of memory");
    sprintf(token, "%s.%s", h, c);
    CHECK(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, hs256_secret, sizeof(hs256_secret),
                    (unsigned char *)token, input_len, mac, sizeof(mac), &maclen) != NULL,
          "HMAC");
    sig = openssl_encode(mac, maclen);
    sprintf(token + input_len, ".%s", sig);
    check_token(v, token, strlen(token), with_aud);
    free(h);
    free(c);
    free(sig);
    free(token);
}

static void check_jwk_set(const uint8_t *data, size_t size)
{
    char err[200], tiny[1];
    struct jwk_set *s;
    struct jwk_set *again;
    size_t i, j;

    memset(err, 0x5a, sizeof(err));
    s = jwk_set_parse((const char *)data, size, err, sizeof(err));
    CHECK(memchr(err, '\0', sizeof(err)) != NULL, "message not terminated");
    CHECK((s == NULL) == (err[0] != '\0'), "a message with an acceptance, or none with a refusal");
    again = jwk_set_parse((const char *)data, size, tiny, sizeof(tiny));
    CHECK((again == NULL) == (s == NULL) && tiny[0] == '\0', "a 1-byte message buffer");
    jwk_set_free(again);
    if (s == NULL)
        return;
    CHECK(jwk_set_count(s) >= 1 && jwk_set_count(s) <= JWK_SET_MAX_KEYS, "key count");
    for (i = 0; i < jwk_set_count(s); i++) {
        const struct jwk *k = jwk_set_key(s, i), *found;
        const char *kid = jwk_key_kid(k);
        unsigned char sig[64] = {0};

        CHECK((unsigned)jwk_key_alg(k) < JWK_NALGS, "an algorithm out of range");
        if (kid != NULL) {
            CHECK(jwk_set_find(s, kid, jwk_key_alg(k), &found) == JWK_FOUND && found == k,
                  "a kid that does not find its key");
            for (j = 0; j < i; j++)
                CHECK(jwk_key_kid(jwk_set_key(s, j)) == NULL ||
                          strcmp(jwk_key_kid(jwk_set_key(s, j)), kid) != 0,
                      "two keys with one kid");
        }
        /* Any key can be asked about any signature. An all-zero one never verifies,
         * but with Ed25519 a key of small order (which OpenSSL 3.0 does not refuse)
         * can make it. */
        CHECK(!jwk_verify(k, data, size, sig, sizeof(sig)) || jwk_key_alg(k) == JWK_ALG_EDDSA,
              "a zero signature verified");
    }
    jwk_set_free(s);
}

static void check_b64url(const uint8_t *data, size_t size)
{
    unsigned char *out = malloc(B64URL_DECODED_MAX(size)), *ref = malloc(size + 3);
    char *enc;
    size_t len;
    bool ok;
    long rlen;

    CHECK(out != NULL && ref != NULL, "out of memory");
    ok = b64url_decode((const char *)data, size, out, &len);
    CHECK(ok == canonical((const char *)data, size), "differs from OpenSSL's canonical base64url");
    if (ok) {
        rlen = openssl_decode((const char *)data, size, ref);
        CHECK(rlen == (long)len && (len == 0 || memcmp(out, ref, len) == 0),
              "decodes otherwise than OpenSSL");
        enc = malloc(B64URL_ENCODED_LEN(len) + 1);
        CHECK(enc != NULL, "out of memory");
        CHECK(b64url_encode(out, len, enc) == size && memcmp(enc, data, size) == 0,
              "does not re-encode to itself");
        free(enc);
    }
    free(out);
    free(ref);
}

static void check_sign(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    char *sub = strndup((const char *)data, nul ? (size_t)(nul - data) : size);
    char *scope = nul ? strndup((const char *)nul + 1, size - (size_t)(nul - data) - 1) : NULL;
    const struct jwk *key = jwk_set_signing_key(jwt_verifier_keys(strict), NULL);
    char err[200], *token;
    struct jwt_claims *c;

    CHECK(sub != NULL && key != NULL, "setup");
    token = jwt_sign(key, sub, scope, (long long)NOW, 60, audience, issuer, err, sizeof(err));
    if (token != NULL) {
        CHECK(jwt_verify(strict, token, strlen(token), NOW, &c) == JWT_ERR_OK,
              "a signed token refused");
        CHECK(strlen(sub) == strlen(jwt_claims_sub(c)) && strcmp(sub, jwt_claims_sub(c)) == 0,
              "sub changed by signing");
        if (scope != NULL) {
            const char *p = scope;

            while (*p != '\0') {
                size_t k = strcspn(p, " ");
                char *word = strndup(p, k);

                CHECK(word != NULL && (k == 0 || jwt_has_scope(c, word)), "a scope lost");
                free(word);
                p += k;
                p += strspn(p, " ");
            }
        }
        jwt_claims_unref(c);
        free(token);
    } else {
        CHECK(err[0] != '\0', "a refusal without a message");
    }
    free(sub);
    free(scope);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool with_aud;

    if (plain == NULL)
        setup();
    if (size == 0)
        return 0;
    with_aud = data[0] & 1;
    switch ((data[0] >> 1) % 5) {
    case 0:
        check_token(with_aud ? strict : plain, (const char *)data + 1, size - 1, with_aud);
        break;
    case 1:
        check_signed(with_aud ? strict : plain, data + 1, size - 1, with_aud);
        break;
    case 2:
        check_jwk_set(data + 1, size - 1);
        break;
    case 3:
        check_b64url(data + 1, size - 1);
        break;
    default:
        check_sign(data + 1, size - 1);
        break;
    }
    return 0;
}
