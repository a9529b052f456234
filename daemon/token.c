#include "token.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "conf.h"
#include "jwk.h"
#include "jwt.h"

#define TTL_MAX (366L * 24 * 3600) /* a year: a longer-lived secret is a password */

static void usage(FILE *out)
{
    fprintf(out, "usage: todod token [-c FILE] [--kid KID] --sub NAME --scope \"S1 S2\" "
                 "[--ttl SECONDS]\n"
                 "  signs a token with an oct key of jwt_keys (the first, or --kid) and prints it\n"
                 "  scopes: todos:read todos:write perf:run ops:read; --ttl defaults to 3600\n");
}

/* RFC 6749 3.3: scope tokens of %x21 / %x23-5B / %x5D-7E, one space apart. */
static bool valid_scope(const char *s)
{
    bool token = false;

    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == ' ') {
            if (!token)
                return false;
            token = false;
        } else if (c >= 0x21 && c <= 0x7e && c != '"' && c != '\\') {
            token = true;
        } else {
            return false;
        }
    }
    return token;
}

int token_main(int argc, char **argv)
{
    static const struct option options[] = {
        {"kid", required_argument, NULL, 'k'},   {"sub", required_argument, NULL, 's'},
        {"scope", required_argument, NULL, 'S'}, {"ttl", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    const char *path = CONF_DEFAULT_PATH, *kid = NULL, *sub = NULL, *scope = NULL;
    long ttl = 3600;
    char err[512], *end, *token;
    const struct jwk *key;
    struct jwk_set *keys;
    struct conf conf;
    int opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            kid = optarg;
            break;
        case 's':
            sub = optarg;
            break;
        case 'S':
            scope = optarg;
            break;
        case 't':
            ttl = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || ttl < 1 || ttl > TTL_MAX) {
                fprintf(stderr, "todod token: --ttl: expected seconds from 1 to %ld\n", TTL_MAX);
                return 1;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind != argc || sub == NULL || sub[0] == '\0' || scope == NULL) {
        usage(stderr);
        return 1;
    }
    if (!valid_scope(scope)) {
        fprintf(stderr, "todod token: --scope: expected scopes separated by single spaces\n");
        return 1;
    }
    if (conf_load(path, &conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "todod token: %s\n", err);
        return 1;
    }
    if (conf.jwt_keys == NULL) {
        fprintf(stderr, "todod token: %s: jwt_keys is not set\n", path);
        conf_free(&conf);
        return 1;
    }
    keys = auth_read_keys(conf.jwt_keys, err, sizeof(err));
    if (keys == NULL) {
        fprintf(stderr, "todod token: %s\n", err);
        conf_free(&conf);
        return 1;
    }
    key = jwk_set_signing_key(keys, kid);
    token = key == NULL ? NULL
                        : jwt_sign(key, sub, scope, (long long)time(NULL), ttl, conf.jwt_audience,
                                   conf.jwt_issuer, err, sizeof(err));
    if (key == NULL)
        snprintf(err, sizeof(err), "%s: no oct (HS256/384/512) key%s%s", conf.jwt_keys,
                 kid ? " with kid " : "", kid ? kid : "");
    jwk_set_free(keys);
    conf_free(&conf);
    if (token == NULL) {
        fprintf(stderr, "todod token: %s\n", err);
        return 1;
    }
    printf("%s\n", token);
    free(token);
    return 0;
}
