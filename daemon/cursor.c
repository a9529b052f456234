#include "cursor.h"

#include <string.h>

#include "pgbin.h"

#define RAW_LEN     30 /* bytes: CURSOR_LEN characters of base64 */
#define CHECKED_LEN 26 /* bytes the CRC covers: all before it */
#define FLAG_NULL   0x01

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* CRC-32/ISO-HDLC, bit by bit: 26 bytes a request, no table needed. */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xffffffffu;
    int bit;

    while (n-- > 0) {
        crc ^= *p++;
        for (bit = 0; bit < 8; bit++)
            crc = crc >> 1 ^ (0xedb88320u & -(crc & 1));
    }
    return ~crc;
}

/* The value of a base64url character, or -1. */
static int sextet(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '-' ? 62 : c == '_' ? 63 : -1;
}

void cursor_encode(const struct cursor_key *k, char out[CURSOR_LEN + 1])
{
    uint8_t raw[RAW_LEN];
    uint64_t t = (uint64_t)k->created_at;
    uint32_t crc;
    int i;

    raw[0] = CURSOR_VERSION;
    raw[1] = k->created_null ? FLAG_NULL : 0;
    for (i = 0; i < 8; i++)
        raw[2 + i] = (uint8_t)(t >> (56 - 8 * i));
    memcpy(raw + 10, k->id, 16);
    crc = crc32_of(raw, CHECKED_LEN);
    for (i = 0; i < 4; i++)
        raw[CHECKED_LEN + i] = (uint8_t)(crc >> (8 * i));
    for (i = 0; i < RAW_LEN / 3; i++) {
        uint32_t g = (uint32_t)raw[3 * i] << 16 | (uint32_t)raw[3 * i + 1] << 8 | raw[3 * i + 2];

        out[4 * i] = alphabet[g >> 18];
        out[4 * i + 1] = alphabet[g >> 12 & 63];
        out[4 * i + 2] = alphabet[g >> 6 & 63];
        out[4 * i + 3] = alphabet[g & 63];
    }
    out[CURSOR_LEN] = '\0';
}

enum cursor_err cursor_decode(const char *s, size_t len, struct cursor_key *k)
{
    uint8_t raw[RAW_LEN];
    uint64_t t = 0;
    uint32_t crc = 0;
    int i, j;

    if (len != CURSOR_LEN)
        return CURSOR_ERR_LENGTH;
    for (i = 0; i < RAW_LEN / 3; i++) {
        uint32_t g = 0;

        for (j = 0; j < 4; j++) {
            int v = sextet((unsigned char)s[4 * i + j]);

            if (v < 0)
                return CURSOR_ERR_ALPHABET;
            g = g << 6 | (uint32_t)v;
        }
        raw[3 * i] = (uint8_t)(g >> 16);
        raw[3 * i + 1] = (uint8_t)(g >> 8);
        raw[3 * i + 2] = (uint8_t)g;
    }
    if (raw[0] != CURSOR_VERSION)
        return CURSOR_ERR_VERSION;
    for (i = 3; i >= 0; i--)
        crc = crc << 8 | raw[CHECKED_LEN + i];
    if (crc != crc32_of(raw, CHECKED_LEN))
        return CURSOR_ERR_CHECK;
    for (i = 0; i < 8; i++)
        t = t << 8 | raw[2 + i];
    /* One string per key: a NULL time has its bytes zero, and no unknown flag. */
    if ((raw[1] & ~FLAG_NULL) != 0 || ((raw[1] & FLAG_NULL) && t != 0) ||
        !pgbin_timestamp_valid((int64_t)t))
        return CURSOR_ERR_KEY;
    k->created_null = raw[1] & FLAG_NULL;
    k->created_at = (int64_t)t;
    memcpy(k->id, raw + 10, 16);
    return CURSOR_OK;
}
