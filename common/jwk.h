/*
 * Verification keys: a JWK Set (RFC 7517, RFC 7518 section 6, RFC 8037) read
 * from jwt_keys, each key turned into what libcrypto needs to check a
 * signature with it, and the signature operations themselves.
 *
 * Each key is bound to one algorithm, its "alg" member, which is required
 * (RFC 8725 section 3.1: the algorithm comes from the key, never from the
 * token). Key types and algorithms:
 *   oct  HS256 HS384 HS512                secret "k", at least the hash's length
 *   RSA  RS256..RS512, PS256..PS512       public "n" (odd, 2048 to 16384 bits), "e"
 *                                         (odd, 2^16 < e < 2^64)
 *   EC   ES256 (P-256), ES384 (P-384)     public "x", "y", on the curve (OpenSSL's check)
 *   OKP  EdDSA (Ed25519)                  public "x"
 * A key may have a "kid" (unique in the set); "use", when present, is "sig"
 * or "enc": an encryption key (as in an identity provider's published set) is
 * skipped, and counted. Private members ("d", "p", ...) are refused: todod
 * needs only public keys, and so should not be given private ones. The file
 * is strict JSON, and its base64url strict (b64url.h).
 *
 * No cryptography here is hand-written: keys become EVP_PKEYs through
 * OpenSSL 3's EVP_PKEY_fromdata, HMAC is EVP_MAC, signatures EVP_DigestVerify.
 */
#ifndef TODOD_JWK_H
#define TODOD_JWK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

/* A JWK Set file larger than this is refused, and so is one with more keys. */
#define JWK_SET_MAX_BYTES (1024 * 1024)
#define JWK_SET_MAX_KEYS  64

/* The largest HMAC todod makes (HS512). */
#define JWK_MAX_MAC 64

enum jwk_family {
    JWK_HMAC,      /* size: the hash's length, the least key length and the MAC's */
    JWK_RSA_PKCS1, /* size: the hash's length */
    JWK_RSA_PSS,   /* size: the hash's length, which is also the salt's (RFC 7518 3.5) */
    JWK_ECDSA,     /* size: a coordinate's length; a JOSE signature is r || s */
    JWK_EDDSA,     /* size: the public key's length */
};

/* One row per algorithm todod accepts: enum, "alg" name, family, digest, size. */
/* clang-format off */
#define JWK_ALGS(X)                                                                                \
    X(HS256, "HS256", JWK_HMAC,      "SHA256", 32, "oct", NULL)                                    \
    X(HS384, "HS384", JWK_HMAC,      "SHA384", 48, "oct", NULL)                                    \
    X(HS512, "HS512", JWK_HMAC,      "SHA512", 64, "oct", NULL)                                    \
    X(RS256, "RS256", JWK_RSA_PKCS1, "SHA256", 32, "RSA", NULL)                                    \
    X(RS384, "RS384", JWK_RSA_PKCS1, "SHA384", 48, "RSA", NULL)                                    \
    X(RS512, "RS512", JWK_RSA_PKCS1, "SHA512", 64, "RSA", NULL)                                    \
    X(PS256, "PS256", JWK_RSA_PSS,   "SHA256", 32, "RSA", NULL)                                    \
    X(PS384, "PS384", JWK_RSA_PSS,   "SHA384", 48, "RSA", NULL)                                    \
    X(PS512, "PS512", JWK_RSA_PSS,   "SHA512", 64, "RSA", NULL)                                    \
    X(ES256, "ES256", JWK_ECDSA,     "SHA256", 32, "EC",  "P-256")                                 \
    X(ES384, "ES384", JWK_ECDSA,     "SHA384", 48, "EC",  "P-384")                                 \
    X(EDDSA, "EdDSA", JWK_EDDSA,     NULL,     32, "OKP", "Ed25519")
/* clang-format on */

#define JWK_ALG_ENUM(id, name, family, md, size, kty, crv) JWK_ALG_##id,
enum jwk_alg { JWK_ALGS(JWK_ALG_ENUM) JWK_NALGS };
#undef JWK_ALG_ENUM

struct jwk_alg_info {
    const char *name;
    enum jwk_family family;
    const char *md; /* OpenSSL digest name; NULL for EdDSA */
    size_t size;
    const char *kty; /* the one key type that carries it */
    const char *crv; /* the curve, for EC and OKP */
};

const struct jwk_alg_info *jwk_alg_info(enum jwk_alg alg);

/* The algorithm named name[0..len), exactly; false for "none" and all others. */
bool jwk_alg_lookup(const char *name, size_t len, enum jwk_alg *alg);

struct jwk;
struct jwk_set;
struct json_object;

/*
 * Parses a JWK Set from the bytes of its file. On error returns NULL and err
 * says what is wrong, naming the key ("key 2 (kid \"a\"): EC key not on curve
 * P-256").
 */
struct jwk_set *jwk_set_parse(const char *data, size_t len, char *err, size_t errlen);
void jwk_set_free(struct jwk_set *set);

size_t jwk_set_count(const struct jwk_set *set);
const struct jwk *jwk_set_key(const struct jwk_set *set, size_t i);
/* Keys skipped because their "use" is "enc". */
size_t jwk_set_skipped(const struct jwk_set *set);
/* Whether the set holds an oct (secret) key. */
bool jwk_set_has_secret(const struct jwk_set *set);

/*
 * Refuses, as ssh refuses a private key file others can read, a file holding
 * a secret key whose mode gives the group or others any access. st is the
 * file's stat (taken by the caller, on the descriptor it read). true when
 * acceptable; otherwise false and err says why and what to do.
 */
bool jwk_set_check_mode(const struct jwk_set *set, const struct stat *st, char *err, size_t errlen);

enum jwk_find { JWK_FOUND, JWK_NOT_FOUND, JWK_AMBIGUOUS };

/*
 * The key for a token: with a kid (non-NULL), the key with that kid, whatever
 * its algorithm (the caller then checks that it is alg); without, the only key
 * whose algorithm is alg (JWK_AMBIGUOUS when several are).
 */
enum jwk_find jwk_set_find(const struct jwk_set *set, const char *kid, enum jwk_alg alg,
                           const struct jwk **key);

/* The oct key to sign with: the one with kid, or without kid the first. NULL if none. */
const struct jwk *jwk_set_signing_key(const struct jwk_set *set, const char *kid);

enum jwk_alg jwk_key_alg(const struct jwk *key);
const char *jwk_key_kid(const struct jwk *key); /* NULL when the key has none */

/*
 * Whether sig is key's signature of data, in the JOSE form (RFC 7518 section
 * 3): an HMAC compared in constant time, RSA PKCS#1 v1.5 or PSS (salt = hash
 * length), ECDSA r || s of fixed length, Ed25519. Leaves no error behind in
 * OpenSSL's error queue.
 */
bool jwk_verify(const struct jwk *key, const void *data, size_t len, const unsigned char *sig,
                size_t siglen);

/* For an oct key: its HMAC of data into mac (JWK_MAX_MAC bytes), *maclen set. */
bool jwk_sign(const struct jwk *key, const void *data, size_t len, unsigned char *mac,
              size_t *maclen);

/*
 * Strict JSON (jsonstrict.h) parsed by json-c, as every JOSE object is read:
 * NULL unless text[0..len) is one JSON object, strict, without the escape
 * \u0000 (json-c would cut a member name at it: "exp\u0000x" would read as
 * "exp", a second "exp"). err says why.
 */
struct json_object *jwk_json_object(const char *text, size_t len, char *err, size_t errlen);

#endif
