/*
 * The cursor of a keyset page (GET /todos?after=C): an opaque string that names
 * a todo by its place in the list's order, (created_at, id). Pure: no I/O, no
 * allocation, no secret, so that every instance and worker reads every other's
 * cursors, and the fuzz harness and the unit tests link it alone.
 *
 * The string is 40 characters of base64url without padding, 30 bytes:
 *
 *   version (1) | flags (1) | created_at (8) | id (16) | CRC-32 (4)
 *
 * version 1; flags bit 0: created_at is NULL (then its 8 bytes are zero; no
 * other bit is set); created_at as PostgreSQL's binary timestamptz (big-endian
 * microseconds since 2000-01-01 UTC, the infinities included); the CRC-32
 * (ISO-HDLC, zlib's crc32) of the 26 bytes before it, least significant byte
 * first, which makes the 30 bytes one codeword of that reflected CRC: every
 * error within 32 consecutive bits is found, so every change of one character or
 * of two adjacent ones (at most 12 bits in at most 3 bytes), and all but 1 in
 * 2^32 of other strings. A cursor is not a security boundary: the check refuses
 * typos and strings todod did not make, not a forgery (no secret, by design).
 *
 * Exactly one string names each key: 30 bytes fill 40 characters with no spare
 * bits, so decode(encode(k)) == k for every valid key and encode(decode(s)) == s
 * for every accepted s.
 */
#ifndef TODOD_CURSOR_H
#define TODOD_CURSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CURSOR_LEN     40 /* characters */
#define CURSOR_VERSION 1

/* The sort key of a todo: where a page ends. */
struct cursor_key {
    bool created_null;  /* created_at is NULL (first in the list's order) */
    int64_t created_at; /* binary timestamptz; 0 when created_null */
    uint8_t id[16];
};

/* Why a string is not a cursor, in the order decoding finds it. */
enum cursor_err {
    CURSOR_OK,
    CURSOR_ERR_LENGTH,   /* not CURSOR_LEN characters */
    CURSOR_ERR_ALPHABET, /* a character outside base64url's (padding included) */
    CURSOR_ERR_VERSION,  /* a version todod does not write */
    CURSOR_ERR_CHECK,    /* the CRC-32 does not match */
    CURSOR_ERR_KEY,      /* an unknown flag, or a time PostgreSQL would refuse */
};

/* out: CURSOR_LEN characters and a NUL. Decodes back to k when k is valid
 * (cursor_decode refuses it otherwise, with CURSOR_ERR_KEY). */
void cursor_encode(const struct cursor_key *k, char out[CURSOR_LEN + 1]);

/* The key named by the len bytes at s (no NUL needed); *k is set on CURSOR_OK only. */
enum cursor_err cursor_decode(const char *s, size_t len, struct cursor_key *k);

#endif
