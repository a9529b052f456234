/*
 * Bearer tokens: JWS compact serialization (RFC 7515) carrying JWT claims (RFC
 * 7519), verified as RFC 8725 advises, with the keys of a JWK Set (jwk.h).
 *
 * A token is refused unless all of this holds, in this order:
 * - at most JWT_MAX_LEN bytes, three parts, each strict base64url (b64url.h);
 * - the header is a strict JSON object (no duplicate member, no \u0000), with
 *   "alg" one of jwk.h's algorithms ("none" and all others are refused), no
 *   "crit", "kid" a string when present, "typ" "JWT" or "at+jwt" (RFC 9068)
 *   when present;
 * - the key is the one named by "kid", or without "kid" the only key whose
 *   algorithm is "alg", and "alg" is that key's algorithm (an RS256 key is
 *   never used for HS256: the algorithm is bound to the key);
 * - the signature checks (libcrypto; the claims are not read before);
 * - the claims are a strict JSON object; "exp" is required; "exp", "nbf",
 *   "iat" are numbers within +-2^53 and checked with the leeway; "aud" (a
 *   string or an array of strings) contains the configured audience and "iss"
 *   equals the configured issuer, when these are configured; "sub" is a string
 *   when present; scopes, from "scope" (space-separated) and "scp" (an array
 *   of strings, or a space-separated string), are RFC 6749 scope tokens.
 * The answer is an error kind; its description and metrics reason are data.
 *
 * The verified-token cache (jwt_cache_*) is there for the hot path: a
 * signature check costs tens of microseconds (ECDSA, RSA), a request a few.
 * It stays exactly as strict as verifying every time, because:
 * - an entry is keyed by the SHA-256 of the whole token, so a hit is the very
 *   byte string verified before (finding another with the same hash is
 *   finding a SHA-256 collision); nothing but successes are kept, so a refused
 *   token is checked again each time and cannot push out good entries;
 * - everything that the verification read besides the token is the verifier
 *   (keys, audience, issuer, leeway), and each verifier has its own
 *   generation number: the cache remembers the generation its entries were
 *   verified under and empties itself when asked with another, so a reload
 *   of jwt_keys (a new verifier) invalidates everything at once;
 * - the only inputs that change with time are "exp", "nbf" and "iat": the entry
 *   keeps them and a hit checks them against the clock again, with the same
 *   code as a full verification, so an entry answers "expired" from the
 *   moment the token is expired (and is then dropped);
 * - it is bounded (the oldest entry goes first) and belongs to one process:
 *   todod's workers are single-threaded, nothing here is shared or locked.
 */
#ifndef TODOD_JWT_H
#define TODOD_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jwk.h"

#define JWT_MAX_LEN 8192 /* bytes of a token (API.md) */

/* One row per error kind: enum, description (for WWW-Authenticate's
 * error_description and the JSON error: no quote, no backslash), reason (the
 * label of todod_auth_refusals_total). */
/* clang-format off */
#define JWT_ERRORS(X)                                                                              \
    X(OK,              "",                                      "")                               \
    X(MISSING,         "authentication required",               "missing")                        \
    X(TOO_LARGE,       "token too large",                       "invalid")                        \
    X(MALFORMED,       "malformed token",                       "invalid")                        \
    X(BAD_HEADER,      "malformed token header",                "invalid")                        \
    X(ALG_NOT_ALLOWED, "algorithm not allowed",                 "invalid")                        \
    X(CRIT,            "critical header parameters not supported", "invalid")                     \
    X(WRONG_TYPE,      "token type not JWT",                    "invalid")                        \
    X(UNKNOWN_KEY,     "unknown key",                           "invalid")                        \
    X(AMBIGUOUS_KEY,   "several keys fit: kid required",        "invalid")                        \
    X(ALG_MISMATCH,    "algorithm does not match the key",      "invalid")                        \
    X(BAD_SIGNATURE,   "bad signature",                         "invalid")                        \
    X(BAD_CLAIMS,      "malformed token claims",                "invalid")                        \
    X(MISSING_EXP,     "token without expiry",                  "invalid")                        \
    X(EXPIRED,         "token expired",                         "expired")                        \
    X(NOT_YET_VALID,   "token not yet valid",                   "invalid")                        \
    X(ISSUED_IN_FUTURE, "token issued in the future",           "invalid")                        \
    X(WRONG_AUDIENCE,  "wrong audience",                        "invalid")                        \
    X(WRONG_ISSUER,    "wrong issuer",                          "invalid")                        \
    X(INTERNAL,        "token check failed",                    "invalid")
/* clang-format on */

#define JWT_ERR_ENUM(id, description, reason) JWT_ERR_##id,
enum jwt_err { JWT_ERRORS(JWT_ERR_ENUM) JWT_NERRS };
#undef JWT_ERR_ENUM

const char *jwt_err_description(enum jwt_err e);
const char *jwt_err_reason(enum jwt_err e);

/*
 * What a token is checked against: the keys (taken: freed with the verifier),
 * the audience and issuer (copied; NULL: not checked) and the leeway in seconds.
 * Each verifier gets a generation number of its own (see the cache).
 */
struct jwt_verifier;

struct jwt_verifier *jwt_verifier_new(struct jwk_set *keys, const char *audience,
                                      const char *issuer, int leeway);
void jwt_verifier_free(struct jwt_verifier *v);
const struct jwk_set *jwt_verifier_keys(const struct jwt_verifier *v);

/*
 * A verified token's claims, immutable and reference-counted (one process,
 * no locking): jwt_verify hands one reference to the caller, who drops it with
 * jwt_claims_unref when the request is done.
 */
struct jwt_claims;

struct jwt_claims *jwt_claims_ref(struct jwt_claims *c);
void jwt_claims_unref(struct jwt_claims *c);
const char *jwt_claims_sub(const struct jwt_claims *c); /* NULL when the token has none */
/* The scopes joined by single spaces ("" when none). */
const char *jwt_claims_scope(const struct jwt_claims *c);
double jwt_claims_exp(const struct jwt_claims *c);
/* Whether the token carries scope (a whole scope token, exactly). */
bool jwt_has_scope(const struct jwt_claims *c, const char *scope);

/*
 * Verifies token[0..len) at time now (seconds since the epoch, the wall
 * clock). JWT_ERR_OK sets *claims; anything else leaves it NULL. Never
 * JWT_ERR_MISSING, which is the caller's (no Authorization header); an empty
 * token is JWT_ERR_MALFORMED.
 */
enum jwt_err jwt_verify(const struct jwt_verifier *v, const char *token, size_t len, double now,
                        struct jwt_claims **claims);

/* The verified-token cache, capacity entries (at least 1). */
struct jwt_cache;

struct jwt_cache *jwt_cache_new(size_t capacity);
void jwt_cache_free(struct jwt_cache *cache);
size_t jwt_cache_size(const struct jwt_cache *cache);

/* jwt_verify, through cache: the same answers, faster for a token seen before. */
enum jwt_err jwt_verify_cached(struct jwt_cache *cache, const struct jwt_verifier *v,
                               const char *token, size_t len, double now,
                               struct jwt_claims **claims);

/* How jwt_verify_cached answered, since the cache was made. */
struct jwt_cache_stats {
    uint64_t hits, misses, evictions;
};
struct jwt_cache_stats jwt_cache_stats(const struct jwt_cache *cache);

/*
 * Signs a token with key (an oct key: HS256/384/512) for `todod token`:
 * header {"alg","typ":"JWT","kid" when the key has one}, claims {"sub",
 * "scope" (when not NULL), "iat": now, "exp": now + ttl, "aud", "iss" (when
 * not NULL)}. Returns the token (free it), or NULL with err set.
 */
char *jwt_sign(const struct jwk *key, const char *sub, const char *scope, long long now,
               long long ttl, const char *audience, const char *issuer, char *err, size_t errlen);

#endif
