/*
 * Access control (API.md "Access control"): protected mode when auth is off,
 * bearer tokens (common/jwt.h) when auth = jwt. The route decides the scope a
 * request needs; a refused request is answered here (401 or 403 with RFC
 * 6750's WWW-Authenticate) and never reaches its handler, so it costs the
 * database nothing.
 */
#ifndef TODOD_AUTH_H
#define TODOD_AUTH_H

#include <stdbool.h>
#include <stddef.h>

struct conf;
struct http_req;
struct jwk_set;
struct jwt_verifier;

/* One row per scope a route may need: enum, the scope token (API.md). PROBE:
 * open to anyone, protected mode included (load balancers); OPEN: no token,
 * but protected mode applies. */
#define AUTH_SCOPES(X)                                                                             \
    X(PROBE, "")                                                                                   \
    X(OPEN, "")                                                                                    \
    X(TODOS_READ, "todos:read")                                                                    \
    X(TODOS_WRITE, "todos:write")                                                                  \
    X(PERF_RUN, "perf:run")                                                                        \
    X(OPS_READ, "ops:read")

#define AUTH_SCOPE_ENUM(id, name) AUTH_##id,
enum auth_scope { AUTH_SCOPES(AUTH_SCOPE_ENUM) AUTH_NSCOPES };
#undef AUTH_SCOPE_ENUM

const char *auth_scope_name(enum auth_scope scope);

/*
 * Reads conf's jwt_keys (a JWK Set; refused when it holds a secret others may
 * read) into a new verifier with conf's audience, issuer and leeway. *out is
 * NULL when auth is off. The master calls it (it may read a file the workers,
 * once unprivileged, cannot), at start and at each reload; the workers it
 * forks inherit the verifier. -1 with a message in err when it cannot.
 */
int auth_load(const struct conf *conf, struct jwt_verifier **out, char *err, size_t errlen);

/* The JWK Set in the file at path, refused when it holds a secret that others
 * may read (as ssh refuses such a key); NULL with a message in err. */
struct jwk_set *auth_read_keys(const char *path, char *err, size_t errlen);

/* Whether conf puts a running todod in protected mode (auth off, protected_mode
 * on, listen not on loopback): the master says so once at start. */
bool auth_protected_mode(const struct conf *conf);

/* A worker's access control: the verifier (borrowed) and its token cache. */
struct auth;
struct auth *auth_new(const struct conf *conf, const struct jwt_verifier *verifier);
void auth_free(struct auth *a);

/*
 * Whether r may reach a handler that needs scope. When not, r is answered (and
 * finished) here, the refusal counted by reason. When a token was checked, the
 * request keeps its claims (the access log's user is their "sub").
 */
bool auth_admit(struct auth *a, struct http_req *r, enum auth_scope scope);

#endif
