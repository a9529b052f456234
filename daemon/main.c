/* todod: a todo-list HTTP API and PostgreSQL load generator. */
#include <event2/event.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "conf.h"
#include "jwt.h"
#include "log.h"
#include "master.h"
#include "token.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: todod [-c FILE] [-t] [-V] [-h]\n"
                 "       todod token [-c FILE] [--kid KID] --sub NAME --scope \"S1 S2\" "
                 "[--ttl SECONDS]\n"
                 "  -c FILE   configuration file (default: " CONF_DEFAULT_PATH ")\n"
                 "  -t        check the configuration and exit (0: valid, 1: not)\n"
                 "  -V        print the version and exit\n"
                 "  -h        print this help and exit\n"
                 "todod stays in the foreground; SIGHUP reloads, SIGTERM stops gracefully.\n");
}

int main(int argc, char **argv)
{
    const char *path = CONF_DEFAULT_PATH;
    struct conf conf;
    char err[512];
    int opt, test_only = 0;

    /* libevent's calloc is then malloc and memset: glibc's calloc skips its
     * per-thread cache, and evhttp callocs several blocks a request (what it
     * saves is measured in tests/README.md). */
    event_set_mem_functions(malloc, realloc, free);
    if (argc > 1 && strcmp(argv[1], "token") == 0)
        return token_main(argc - 1, argv + 1);
    while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 'V':
            printf("todod %s\n", TODOD_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 1;
    }
    log_init("master", LOGL_INFO);
    if (conf_load(path, &conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "todod: %s\n", err);
        return 1;
    }
    if (test_only) {
        struct jwt_verifier *verifier;

        /* The keys are part of the configuration: read them as a start would. */
        if (auth_load(&conf, &verifier, err, sizeof(err)) != 0) {
            fprintf(stderr, "todod: %s: %s\n", path, err);
            conf_free(&conf);
            return 1;
        }
        jwt_verifier_free(verifier);
        printf("todod: %s: configuration OK\n", path);
        conf_free(&conf);
        return 0;
    }
    log_set_level(conf.log_level);
    return master_run(path, &conf);
}
