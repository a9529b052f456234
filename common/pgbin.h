/* Values in PostgreSQL's binary format (todo rows come in it), written as the API writes them. */
#ifndef TODOD_PGBIN_H
#define TODOD_PGBIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "YYYY-MM-DDTHH:MM:SS.ffffffZ" with room for a six-digit year and the NUL. */
#define PGBIN_TIMESTAMP_MAX 32

/*
 * A timestamptz as PostgreSQL sends it in binary (microseconds since
 * 2000-01-01 00:00:00 UTC) in UTC, the way
 * to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') writes it:
 * a year before 1 AD as its number before Christ (44 BC is "0044"), a year
 * past 9999 with all its digits. Returns the length, or 0 for 'infinity' and
 * '-infinity' (for which to_char gives NULL) and anything else outside
 * PostgreSQL's range.
 */
size_t pgbin_timestamp(int64_t us, char out[PGBIN_TIMESTAMP_MAX]);

/* Whether PostgreSQL accepts us as a binary timestamptz: within its range, or
 * one of the infinities (INT64_MIN and INT64_MAX). */
bool pgbin_timestamp_valid(int64_t us);

/* A big-endian 64-bit integer: how the binary format sends bigint and timestamps. */
int64_t pgbin_int64(const char *p);

/* An LSN as PostgreSQL prints it, "X/Y" in upper-case hex, and its NUL. */
#define PGBIN_LSN_MAX 18

/* lsn as PostgreSQL prints a pg_lsn; returns the length. */
size_t pgbin_lsn_format(uint64_t lsn, char out[PGBIN_LSN_MAX]);

/*
 * An LSN in the text form PostgreSQL reads and prints: two groups of 1 to 8
 * hex digits (either case) around one '/', nothing else (no sign, no space).
 * len bytes of text, not NUL-terminated. False when it is not one.
 */
bool pgbin_lsn_parse(const char *text, size_t len, uint64_t *lsn);

#endif
