/* `todod token`: mints an HS* token from an oct key of jwt_keys (DAEMON.md). */
#ifndef TODOD_TOKEN_H
#define TODOD_TOKEN_H

/* argv[0] is "token"; returns the process exit code. */
int token_main(int argc, char **argv);

#endif
