/*
 * base64url (RFC 4648 section 5) without padding, as JOSE uses it (RFC 7515
 * section 2), decoded strictly: only the 64 characters of the alphabet, no
 * '=', no whitespace, no length that cannot come from whole bytes (4k+1), and
 * the unused low bits of the last character zero, so that one byte string has
 * exactly one encoding. Parsing, not cryptography; pure code, fuzzed with the
 * token parser.
 */
#ifndef TODOD_B64URL_H
#define TODOD_B64URL_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes that n characters decode to at most; characters n bytes encode to. */
#define B64URL_DECODED_MAX(n) ((n) / 4 * 3 + 2)
#define B64URL_ENCODED_LEN(n) ((n) / 3 * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))

/*
 * Decodes s[0..n) into out (room for B64URL_DECODED_MAX(n) bytes) and sets
 * *outlen. false when s is not strict unpadded base64url.
 */
bool b64url_decode(const char *s, size_t n, unsigned char *out, size_t *outlen);

/* Encodes in[0..n) into out (room for B64URL_ENCODED_LEN(n) characters, not
 * terminated); returns the characters written. */
size_t b64url_encode(const unsigned char *in, size_t n, char *out);

#endif
