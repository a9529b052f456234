/*
 * Bearer tokens (jwt.h): the compact JWS parser and the claims checks, HS*
 * signing for `todod token`, and the verified-token cache. The signature
 * operations themselves are jwk.c's.
 */
#define OPENSSL_NO_DEPRECATED

#include <json-c/json.h>
#include <math.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "b64url.h"
#include "jwk.h"
#include "jwt.h"
#include "utf8.h"

/* NumericDate values beyond +-2^53 are not exact in JSON numbers (RFC 7493
 * 2.2); json-c would also clamp larger integers silently. */
#define NUMERIC_DATE_MAX 9007199254740991.0

#define JWT_ERR_ROW(id, description, reason) {description, reason},
static const struct {
    const char *description, *reason;
} errors[JWT_NERRS] = {JWT_ERRORS(JWT_ERR_ROW)};
#undef JWT_ERR_ROW

const char *jwt_err_description(enum jwt_err e)
{
    return (unsigned)e < JWT_NERRS ? errors[e].description : errors[JWT_ERR_INTERNAL].description;
}

const char *jwt_err_reason(enum jwt_err e)
{
    return (unsigned)e < JWT_NERRS ? errors[e].reason : errors[JWT_ERR_INTERNAL].reason;
}

/* ---- the verifier ------------------------------------------------------------ */

struct jwt_verifier {
    struct jwk_set *keys;
    char *audience, *issuer; /* NULL: not checked */
    int leeway;
    uint64_t generation;
};

/* The last generation number given to a verifier in this process. */
static uint64_t last_generation;

struct jwt_verifier *jwt_verifier_new(struct jwk_set *keys, const char *audience,
                                      const char *issuer, int leeway)
{
    struct jwt_verifier *v = calloc(1, sizeof(*v));

    if (v == NULL || (audience != NULL && (v->audience = strdup(audience)) == NULL) ||
        (issuer != NULL && (v->issuer = strdup(issuer)) == NULL)) {
        jwt_verifier_free(v);
        return NULL;
    }
    v->keys = keys;
    v->leeway = leeway < 0 ? 0 : leeway;
    v->generation = ++last_generation;
    return v;
}

void jwt_verifier_free(struct jwt_verifier *v)
{
    if (v == NULL)
        return;
    jwk_set_free(v->keys);
    free(v->audience);
    free(v->issuer);
    free(v);
}

const struct jwk_set *jwt_verifier_keys(const struct jwt_verifier *v)
{
    return v->keys;
}

/* ---- claims --------------------------------------------------------------- */

struct jwt_claims {
    unsigned refs;
    double exp, nbf, iat;
    bool has_nbf, has_iat;
    const char *sub;   /* into text, or NULL */
    const char *scope; /* into text */
    char text[];
};

struct jwt_claims *jwt_claims_ref(struct jwt_claims *c)
{
    c->refs++;
    return c;
}

void jwt_claims_unref(struct jwt_claims *c)
{
    if (c != NULL && --c->refs == 0)
        free(c);
}

const char *jwt_claims_sub(const struct jwt_claims *c)
{
    return c->sub;
}

const char *jwt_claims_scope(const struct jwt_claims *c)
{
    return c->scope;
}

double jwt_claims_exp(const struct jwt_claims *c)
{
    return c->exp;
}

bool jwt_has_scope(const struct jwt_claims *c, const char *scope)
{
    size_t want = strlen(scope);
    const char *p = c->scope;

    while (*p != '\0') {
        size_t n = strcspn(p, " ");

        if (n == want && memcmp(p, scope, n) == 0)
            return true;
        p += n;
        p += *p == ' ';
    }
    return false;
}

/* The checks that depend on the clock: made by every verification and every
 * cache hit alike. exp is exclusive, nbf inclusive (RFC 7519 4.1.4, 4.1.5). */
static enum jwt_err check_times(const struct jwt_claims *c, double now, int leeway)
{
    if (now >= c->exp + leeway)
        return JWT_ERR_EXPIRED;
    if (c->has_nbf && now + leeway < c->nbf)
        return JWT_ERR_NOT_YET_VALID;
    if (c->has_iat && c->iat > now + leeway)
        return JWT_ERR_ISSUED_IN_FUTURE;
    return JWT_ERR_OK;
}

/* A NumericDate claim: 1 present (*out set), 0 absent, -1 not a number in range. */
static int date_claim(struct json_object *o, const char *name, double *out)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, name, &v))
        return 0;
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return -1;
    *out = json_object_get_double(v);
    return isfinite(*out) && fabs(*out) <= NUMERIC_DATE_MAX ? 1 : -1;
}

/* An RFC 6749 scope-token character: %x21 / %x23-5B / %x5D-7E. */
static bool scope_char(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e && c != '"' && c != '\\';
}

/*
 * Appends the space-separated scope tokens of s[0..n) to out (at *used, room
 * for them all: out is as long as the claims). false when a token has a
 * character RFC 6749 does not allow.
 */
static bool append_scopes(const char *s, size_t n, char *out, size_t *used)
{
    size_t i = 0;

    while (i < n) {
        size_t start;

        if (s[i] == ' ') {
            i++;
            continue;
        }
        for (start = i; i < n && s[i] != ' '; i++)
            if (!scope_char((unsigned char)s[i]))
                return false;
        if (*used > 0)
            out[(*used)++] = ' ';
        memcpy(out + *used, s + start, i - start);
        *used += i - start;
    }
    return true;
}

/* "scope" (a string) and "scp" (an array of strings, or a string), joined. */
static bool collect_scopes(struct json_object *o, char *out, size_t *used)
{
    struct json_object *v;
    size_t i;

    *used = 0;
    if (json_object_object_get_ex(o, "scope", &v)) {
        if (!json_object_is_type(v, json_type_string) ||
            !append_scopes(json_object_get_string(v), (size_t)json_object_get_string_len(v), out,
                           used))
            return false;
    }
    if (!json_object_object_get_ex(o, "scp", &v))
        return true;
    if (json_object_is_type(v, json_type_string))
        return append_scopes(json_object_get_string(v), (size_t)json_object_get_string_len(v), out,
                             used);
    if (!json_object_is_type(v, json_type_array))
        return false;
    for (i = 0; i < json_object_array_length(v); i++) {
        struct json_object *s = json_object_array_get_idx(v, i);
        size_t len, before = *used;

        if (!json_object_is_type(s, json_type_string))
            return false;
        len = (size_t)json_object_get_string_len(s);
        /* One element, one scope token: "a b" is not two. */
        if (len == 0 || memchr(json_object_get_string(s), ' ', len) != NULL ||
            !append_scopes(json_object_get_string(s), len, out, used) || *used == before)
            return false;
    }
    return true;
}

/* Whether "aud" (a string or an array of strings) holds audience; -1 when malformed. */
static int audience_holds(struct json_object *aud, const char *audience)
{
    size_t i;
    int found = 0;

    if (json_object_is_type(aud, json_type_string))
        return audience != NULL && strcmp(json_object_get_string(aud), audience) == 0;
    if (!json_object_is_type(aud, json_type_array))
        return -1;
    for (i = 0; i < json_object_array_length(aud); i++) {
        struct json_object *a = json_object_array_get_idx(aud, i);

        if (!json_object_is_type(a, json_type_string))
            return -1;
        if (audience != NULL && strcmp(json_object_get_string(a), audience) == 0)
            found = 1;
    }
    return found;
}

/* The claims set text[0..len), signature already checked. */
static enum jwt_err parse_claims(const struct jwt_verifier *v, const char *text, size_t len,
                                 double now, struct jwt_claims **out)
{
    struct json_object *o, *m;
    struct jwt_claims t = {0}, *c = NULL;
    const char *sub = NULL;
    size_t sub_len = 0, scope_len;
    enum jwt_err e = JWT_ERR_BAD_CLAIMS;
    /* The scopes, joined, are never longer than the claims' text. */
    char why[160], scopes[B64URL_DECODED_MAX(JWT_MAX_LEN)];
    int nbf, iat, exp, r;

    if (len > sizeof(scopes) || (o = jwk_json_object(text, len, why, sizeof(why))) == NULL)
        return JWT_ERR_BAD_CLAIMS;
    exp = date_claim(o, "exp", &t.exp);
    nbf = date_claim(o, "nbf", &t.nbf);
    iat = date_claim(o, "iat", &t.iat);
    if (exp == 0) {
        e = JWT_ERR_MISSING_EXP;
        goto fail;
    }
    if (exp < 0 || nbf < 0 || iat < 0)
        goto fail;
    t.has_nbf = nbf == 1;
    t.has_iat = iat == 1;
    if (json_object_object_get_ex(o, "sub", &m)) {
        if (!json_object_is_type(m, json_type_string))
            goto fail;
        sub = json_object_get_string(m);
        sub_len = (size_t)json_object_get_string_len(m);
    }
    if (!collect_scopes(o, scopes, &scope_len))
        goto fail;
    if (json_object_object_get_ex(o, "iss", &m)) {
        if (!json_object_is_type(m, json_type_string))
            goto fail;
        if (v->issuer != NULL && strcmp(json_object_get_string(m), v->issuer) != 0) {
            e = JWT_ERR_WRONG_ISSUER;
            goto fail;
        }
    } else if (v->issuer != NULL) {
        e = JWT_ERR_WRONG_ISSUER;
        goto fail;
    }
    if (json_object_object_get_ex(o, "aud", &m)) {
        if ((r = audience_holds(m, v->audience)) < 0)
            goto fail;
        if (v->audience != NULL && r == 0) {
            e = JWT_ERR_WRONG_AUDIENCE;
            goto fail;
        }
    } else if (v->audience != NULL) {
        e = JWT_ERR_WRONG_AUDIENCE;
        goto fail;
    }
    if ((e = check_times(&t, now, v->leeway)) != JWT_ERR_OK)
        goto fail;
    /* Kept (in the cache too): the dates, the scopes and sub, nothing else. */
    if ((c = malloc(sizeof(*c) + scope_len + 1 + (sub != NULL ? sub_len + 1 : 0))) == NULL) {
        e = JWT_ERR_INTERNAL;
        goto fail;
    }
    *c = t;
    c->refs = 1;
    memcpy(c->text, scopes, scope_len);
    c->text[scope_len] = '\0';
    c->scope = c->text;
    if (sub != NULL) {
        memcpy(c->text + scope_len + 1, sub, sub_len + 1);
        c->sub = c->text + scope_len + 1;
    }
    json_object_put(o);
    *out = c;
    return JWT_ERR_OK;
fail:
    json_object_put(o);
    return e;
}

/* ---- the token ------------------------------------------------------------ */

/* "typ": JWT (RFC 7519 5.1) or at+jwt (RFC 9068 2.1), "application/" optional,
 * in any case (RFC 7515 4.1.9). */
static bool typ_allowed(const char *typ)
{
    if (strncasecmp(typ, "application/", 12) == 0)
        typ += 12;
    return strcasecmp(typ, "JWT") == 0 || strcasecmp(typ, "at+jwt") == 0;
}

/* The header text[0..len): the key to check the signature with. */
static enum jwt_err parse_header(const struct jwt_verifier *v, const char *text, size_t len,
                                 const struct jwk **key)
{
    struct json_object *o, *m;
    const char *kid = NULL, *typ;
    enum jwk_alg alg;
    enum jwt_err e = JWT_ERR_BAD_HEADER;
    char why[160];

    if ((o = jwk_json_object(text, len, why, sizeof(why))) == NULL)
        return JWT_ERR_BAD_HEADER;
    if (!json_object_object_get_ex(o, "alg", &m) || !json_object_is_type(m, json_type_string))
        goto out;
    if (!jwk_alg_lookup(json_object_get_string(m), (size_t)json_object_get_string_len(m), &alg)) {
        e = JWT_ERR_ALG_NOT_ALLOWED;
        goto out;
    }
    /* No extension todod would have to understand (RFC 7515 4.1.11). */
    if (json_object_object_get_ex(o, "crit", NULL)) {
        e = JWT_ERR_CRIT;
        goto out;
    }
    if (json_object_object_get_ex(o, "typ", &m)) {
        if (!json_object_is_type(m, json_type_string))
            goto out;
        typ = json_object_get_string(m);
        if (!typ_allowed(typ)) {
            e = JWT_ERR_WRONG_TYPE;
            goto out;
        }
    }
    if (json_object_object_get_ex(o, "kid", &m)) {
        if (!json_object_is_type(m, json_type_string))
            goto out;
        kid = json_object_get_string(m);
    }
    switch (jwk_set_find(v->keys, kid, alg, key)) {
    case JWK_NOT_FOUND:
        e = JWT_ERR_UNKNOWN_KEY;
        goto out;
    case JWK_AMBIGUOUS:
        e = JWT_ERR_AMBIGUOUS_KEY;
        goto out;
    case JWK_FOUND:
        break;
    }
    e = jwk_key_alg(*key) == alg ? JWT_ERR_OK : JWT_ERR_ALG_MISMATCH;
out:
    json_object_put(o);
    return e;
}

/* Decodes one part into buf at *used; its bytes are buf[*start..*used). */
static bool decode_part(const char *s, size_t n, unsigned char *buf, size_t *used, size_t *start)
{
    size_t len;

    *start = *used;
    if (!b64url_decode(s, n, buf + *used, &len))
        return false;
    *used += len;
    return true;
}

enum jwt_err jwt_verify(const struct jwt_verifier *v, const char *token, size_t len, double now,
                        struct jwt_claims **claims)
{
    /* The three parts decoded one after the other: never more than the token. */
    unsigned char buf[B64URL_DECODED_MAX(JWT_MAX_LEN) + 4];
    const char *dot1, *dot2;
    size_t used = 0, h, p, s;
    const struct jwk *key;
    enum jwt_err e;

    *claims = NULL;
    if (len > JWT_MAX_LEN)
        return JWT_ERR_TOO_LARGE;
    if ((dot1 = memchr(token, '.', len)) == NULL ||
        (dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))) == NULL ||
        memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return JWT_ERR_MALFORMED;
    if (!decode_part(token, (size_t)(dot1 - token), buf, &used, &h) ||
        !decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf, &used, &p) ||
        !decode_part(dot2 + 1, len - (size_t)(dot2 + 1 - token), buf, &used, &s))
        return JWT_ERR_MALFORMED;
    if ((e = parse_header(v, (const char *)buf + h, p - h, &key)) != JWT_ERR_OK)
        return e;
    /* The signing input is the encoded header and payload (RFC 7515 5.2). */
    if (!jwk_verify(key, token, (size_t)(dot2 - token), buf + s, used - s))
        return JWT_ERR_BAD_SIGNATURE;
    return parse_claims(v, (const char *)buf + p, s - p, now, claims);
}

/* ---- signing -------------------------------------------------------------- */

/* Appends the base64url of text to out at *used; false past JWT_MAX_LEN. */
static bool append_b64(char *out, size_t *used, const void *data, size_t n)
{
    if (B64URL_ENCODED_LEN(n) > JWT_MAX_LEN - *used)
        return false;
    *used += b64url_encode(data, n, out + *used);
    return true;
}

char *jwt_sign(const struct jwk *key, const char *sub, const char *scope, long long now,
               long long ttl, const char *audience, const char *issuer, char *err, size_t errlen)
{
    const struct jwk_alg_info *info = jwk_alg_info(jwk_key_alg(key));
    struct json_object *header = NULL, *claims = NULL;
    const char *text;
    unsigned char mac[JWK_MAX_MAC];
    char *out = NULL, scopes[JWT_MAX_LEN];
    size_t used = 0, maclen, scopes_len;
    const int flags = JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE;

    if (info->family != JWK_HMAC) {
        snprintf(err, errlen, "key %s is not a secret (oct) key", info->name);
        return NULL;
    }
    if (ttl < 1 || now < 0 || (double)now + (double)ttl > NUMERIC_DATE_MAX) {
        snprintf(err, errlen, "a lifetime of %lld seconds from %lld is out of range", ttl, now);
        return NULL;
    }
    if ((sub != NULL && !utf8_valid(sub, strlen(sub))) ||
        (audience != NULL && !utf8_valid(audience, strlen(audience))) ||
        (issuer != NULL && !utf8_valid(issuer, strlen(issuer)))) {
        snprintf(err, errlen, "sub, aud and iss must be UTF-8");
        return NULL;
    }
    /* The scopes as a verifier will read them: RFC 6749 scope tokens. */
    if (scope != NULL &&
        (strlen(scope) >= sizeof(scopes) || !append_scopes(scope, strlen(scope), scopes, &used))) {
        snprintf(err, errlen, "scope \"%.64s\" is not space-separated scope tokens", scope);
        return NULL;
    }
    scopes_len = used;
    used = 0;
    if ((header = json_object_new_object()) == NULL || (claims = json_object_new_object()) == NULL)
        goto oom;
    if (json_object_object_add(header, "alg", json_object_new_string(info->name)) ||
        json_object_object_add(header, "typ", json_object_new_string("JWT")) ||
        (jwk_key_kid(key) != NULL &&
         json_object_object_add(header, "kid", json_object_new_string(jwk_key_kid(key)))))
        goto oom;
    if ((sub != NULL && json_object_object_add(claims, "sub", json_object_new_string(sub))) ||
        (scope != NULL &&
         json_object_object_add(claims, "scope",
                                json_object_new_string_len(scopes, (int)scopes_len))) ||
        json_object_object_add(claims, "iat", json_object_new_int64(now)) ||
        json_object_object_add(claims, "exp", json_object_new_int64(now + ttl)) ||
        (audience != NULL &&
         json_object_object_add(claims, "aud", json_object_new_string(audience))) ||
        (issuer != NULL && json_object_object_add(claims, "iss", json_object_new_string(issuer))))
        goto oom;
    if ((out = malloc(JWT_MAX_LEN + 1)) == NULL)
        goto oom;
    text = json_object_to_json_string_ext(header, flags);
    if (text == NULL || !append_b64(out, &used, text, strlen(text)))
        goto too_long;
    out[used++] = '.';
    text = json_object_to_json_string_ext(claims, flags);
    if (text == NULL || !append_b64(out, &used, text, strlen(text)) || used >= JWT_MAX_LEN)
        goto too_long;
    if (!jwk_sign(key, out, used, mac, &maclen)) {
        snprintf(err, errlen, "HMAC failed");
        goto fail;
    }
    out[used++] = '.';
    if (!append_b64(out, &used, mac, maclen))
        goto too_long;
    out[used] = '\0';
    json_object_put(header);
    json_object_put(claims);
    return out;
too_long:
    snprintf(err, errlen, "the token would be longer than %d bytes", JWT_MAX_LEN);
    goto fail;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    free(out);
    json_object_put(header);
    json_object_put(claims);
    return NULL;
}

/* ---- the verified-token cache ------------------------------------------------- */

#define NO_ENTRY SIZE_MAX

struct cache_entry {
    unsigned char hash[32];    /* SHA-256 of the token */
    struct jwt_claims *claims; /* NULL: a free slot */
    size_t next;               /* the next entry of its bucket, or NO_ENTRY */
};

struct jwt_cache {
    EVP_MD *sha256;
    uint64_t generation; /* of the verifier the entries were verified with */
    struct cache_entry *entries;
    size_t capacity;
    size_t head; /* the next slot written: the oldest entry, or a free slot */
    size_t size;
    size_t *buckets; /* first entry of each, or NO_ENTRY */
    size_t nbuckets; /* a power of two, at least twice the capacity */
    struct jwt_cache_stats stats;
};

struct jwt_cache *jwt_cache_new(size_t capacity)
{
    struct jwt_cache *c = calloc(1, sizeof(*c));
    size_t i;

    if (c == NULL)
        return NULL;
    c->capacity = capacity > 0 ? capacity : 1;
    for (c->nbuckets = 2; c->nbuckets < 2 * c->capacity; c->nbuckets *= 2)
        ;
    c->entries = calloc(c->capacity, sizeof(*c->entries));
    c->buckets = malloc(c->nbuckets * sizeof(*c->buckets));
    c->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (c->entries == NULL || c->buckets == NULL || c->sha256 == NULL) {
        jwt_cache_free(c);
        return NULL;
    }
    for (i = 0; i < c->nbuckets; i++)
        c->buckets[i] = NO_ENTRY;
    return c;
}

static size_t bucket_of(const struct jwt_cache *c, const unsigned char *hash)
{
    size_t b;

    memcpy(&b, hash, sizeof(b)); /* a SHA-256 is uniform enough as it is */
    return b & (c->nbuckets - 1);
}

/* Empties slot i. */
static void cache_drop(struct jwt_cache *c, size_t i)
{
    struct cache_entry *e = &c->entries[i];
    size_t *link = &c->buckets[bucket_of(c, e->hash)];

    while (*link != i)
        link = &c->entries[*link].next;
    *link = e->next;
    jwt_claims_unref(e->claims);
    e->claims = NULL;
    c->size--;
}

static void cache_flush(struct jwt_cache *c)
{
    size_t i;

    for (i = 0; i < c->capacity; i++)
        if (c->entries[i].claims != NULL)
            cache_drop(c, i);
    c->head = 0;
}

void jwt_cache_free(struct jwt_cache *c)
{
    if (c == NULL)
        return;
    if (c->entries != NULL && c->buckets != NULL)
        cache_flush(c);
    free(c->entries);
    free(c->buckets);
    EVP_MD_free(c->sha256);
    free(c);
}

size_t jwt_cache_size(const struct jwt_cache *c)
{
    return c->size;
}

struct jwt_cache_stats jwt_cache_stats(const struct jwt_cache *c)
{
    return c->stats;
}

static size_t cache_find(const struct jwt_cache *c, const unsigned char *hash)
{
    size_t i;

    for (i = c->buckets[bucket_of(c, hash)]; i != NO_ENTRY; i = c->entries[i].next)
        if (memcmp(c->entries[i].hash, hash, sizeof(c->entries[i].hash)) == 0)
            return i;
    return NO_ENTRY;
}

/* Keeps claims (a reference of its own) in the oldest slot. */
static void cache_insert(struct jwt_cache *c, const unsigned char *hash, struct jwt_claims *claims)
{
    size_t i = c->head, b = bucket_of(c, hash);
    struct cache_entry *e = &c->entries[i];

    if (e->claims != NULL) {
        cache_drop(c, i);
        c->stats.evictions++;
    }
    memcpy(e->hash, hash, sizeof(e->hash));
    e->claims = jwt_claims_ref(claims);
    e->next = c->buckets[b];
    c->buckets[b] = i;
    c->size++;
    c->head = (i + 1) % c->capacity;
}

enum jwt_err jwt_verify_cached(struct jwt_cache *c, const struct jwt_verifier *v, const char *token,
                               size_t len, double now, struct jwt_claims **claims)
{
    unsigned char hash[EVP_MAX_MD_SIZE];
    unsigned int hlen;
    enum jwt_err e;
    size_t i;

    *claims = NULL;
    if (len > JWT_MAX_LEN)
        return JWT_ERR_TOO_LARGE;
    if (c->generation != v->generation) {
        cache_flush(c);
        c->generation = v->generation;
    }
    if (EVP_Digest(token, len, hash, &hlen, c->sha256, NULL) != 1 || hlen != 32) {
        ERR_clear_error();
        return jwt_verify(v, token, len, now, claims);
    }
    if ((i = cache_find(c, hash)) != NO_ENTRY) {
        c->stats.hits++;
        e = check_times(c->entries[i].claims, now, v->leeway);
        if (e == JWT_ERR_OK)
            *claims = jwt_claims_ref(c->entries[i].claims);
        else if (e == JWT_ERR_EXPIRED)
            cache_drop(c, i); /* for good, unless the clock goes back: verified again then */
        return e;
    }
    c->stats.misses++;
    e = jwt_verify(v, token, len, now, claims);
    if (e == JWT_ERR_OK)
        cache_insert(c, hash, *claims);
    return e;
}
