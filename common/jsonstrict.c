#include "jsonstrict.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

/* The decoded member names of the objects being parsed, innermost last. */
struct key {
    size_t off, len; /* into names */
};

struct parser {
    const unsigned char *s;
    size_t n, pos;
    int depth;
    char *err;
    size_t errlen;
    enum json_strict_error failed; /* the first error, JSON_STRICT_VALID until then */
    char *names;                   /* decoded names, back to back */
    size_t names_len, names_cap;
    struct key *keys;
    size_t nkeys, keys_cap;
};

#define ERROR_MESSAGE(kind, message) [kind] = message,
static const char *const messages[] = {JSON_STRICT_ERRORS(ERROR_MESSAGE)};

static bool fail(struct parser *p, enum json_strict_error kind)
{
    const char *what = messages[kind];

    if (p->failed == JSON_STRICT_VALID) {
        if (p->pos < p->n && p->s[p->pos] >= 0x20 && p->s[p->pos] < 0x7f)
            snprintf(p->err, p->errlen, "%s ('%c') at byte %zu", what, p->s[p->pos], p->pos);
        else
            snprintf(p->err, p->errlen, "%s at byte %zu", what, p->pos);
        p->failed = kind;
    }
    return false;
}

static void skip_ws(struct parser *p)
{
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                             p->s[p->pos] == '\r'))
        p->pos++;
}

static bool literal(struct parser *p, const char *word)
{
    size_t len = strlen(word);

    if (p->n - p->pos < len || memcmp(p->s + p->pos, word, len) != 0)
        return fail(p, JSON_STRICT_ERR_LITERAL);
    p->pos += len;
    return true;
}

static bool digits(struct parser *p)
{
    size_t start = p->pos;

    while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
        p->pos++;
    return p->pos > start;
}

/* -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)? */
static bool number(struct parser *p)
{
    if (p->s[p->pos] == '-')
        p->pos++;
    if (p->pos < p->n && p->s[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            return fail(p, JSON_STRICT_ERR_LEADING_ZERO);
    } else if (!digits(p)) {
        return fail(p, JSON_STRICT_ERR_NUMBER);
    }
    if (p->pos < p->n && p->s[p->pos] == '.') {
        p->pos++;
        if (!digits(p))
            return fail(p, JSON_STRICT_ERR_FRACTION);
    }
    if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (!digits(p))
            return fail(p, JSON_STRICT_ERR_EXPONENT);
    }
    return true;
}

static int hex4(const unsigned char *s)
{
    int v = 0;

    for (int i = 0; i < 4; i++) {
        int c = s[i];

        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            v |= (c | 0x20) - 'a' + 10;
        else
            return -1;
    }
    return v;
}

static bool names_append(struct parser *p, const void *data, size_t len)
{
    /* Allocated even for an empty name: the keys point into names, and
     * NULL + 0 is undefined (memcpy, compare_keys). */
    if (p->names == NULL || p->names_len + len > p->names_cap) {
        size_t cap = p->names_cap ? p->names_cap * 2 : 256;
        char *grown;

        while (cap < p->names_len + len)
            cap *= 2;
        grown = realloc(p->names, cap);
        if (grown == NULL)
            return fail(p, JSON_STRICT_ERR_NOMEM);
        p->names = grown;
        p->names_cap = cap;
    }
    memcpy(p->names + p->names_len, data, len);
    p->names_len += len;
    return true;
}

static bool append_code_point(struct parser *p, uint32_t cp)
{
    unsigned char b[4];
    size_t n;

    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xc0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xe0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xf0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return names_append(p, b, n);
}

/* A \uXXXX escape at p->pos (after the backslash and 'u'), pairs joined. */
static bool unicode_escape(struct parser *p, bool decode)
{
    int v, lo;

    if (p->n - p->pos < 4 || (v = hex4(p->s + p->pos)) < 0)
        return fail(p, JSON_STRICT_ERR_UNICODE_ESCAPE);
    p->pos += 4;
    if (v >= 0xdc00 && v <= 0xdfff)
        return fail(p, JSON_STRICT_ERR_SURROGATE);
    if (v >= 0xd800 && v <= 0xdbff) {
        if (p->n - p->pos < 6 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u' ||
            (lo = hex4(p->s + p->pos + 2)) < 0xdc00 || lo > 0xdfff)
            return fail(p, JSON_STRICT_ERR_SURROGATE);
        p->pos += 6;
        v = 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00);
    }
    /* json-c ends a member name at U+0000: "done\u0000" would reach the
     * handlers as a second "done", past the duplicate check. */
    if (decode && v == 0)
        return fail(p, JSON_STRICT_ERR_NAME_NUL);
    return !decode || append_code_point(p, (uint32_t)v);
}

/* A string at p->pos (the opening quote); member names are decoded into names. */
static bool string(struct parser *p, bool decode)
{
    p->pos++;
    for (;;) {
        size_t start = p->pos;
        unsigned char c;

        while (p->pos < p->n && p->s[p->pos] != '"' && p->s[p->pos] != '\\' && p->s[p->pos] >= 0x20)
            p->pos++;
        if (decode && !names_append(p, p->s + start, p->pos - start))
            return false;
        if (p->pos >= p->n)
            return fail(p, JSON_STRICT_ERR_UNTERMINATED);
        c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            return true;
        }
        if (c < 0x20)
            return fail(p, JSON_STRICT_ERR_CONTROL);
        /* A backslash escape. */
        p->pos++;
        if (p->pos >= p->n)
            return fail(p, JSON_STRICT_ERR_UNTERMINATED);
        c = p->s[p->pos++];
        switch (c) {
        case '"':
        case '\\':
        case '/':
            if (decode && !names_append(p, &c, 1))
                return false;
            break;
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't': {
            static const char from[] = "bfnrt", to[] = "\b\f\n\r\t";
            char d = to[strchr(from, c) - from];

            if (decode && !names_append(p, &d, 1))
                return false;
            break;
        }
        case 'u':
            if (!unicode_escape(p, decode))
                return false;
            break;
        default:
            p->pos--;
            return fail(p, JSON_STRICT_ERR_ESCAPE);
        }
    }
}

static int compare_keys(const void *a, const void *b, void *arg)
{
    const struct key *x = a, *y = b;
    const char *names = arg;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(names + x->off, names + y->off, n);

    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* The names of one object: keys[mark..nkeys). */
static bool unique_names(struct parser *p, size_t mark)
{
    size_t count = p->nkeys - mark, i;

    if (count < 2)
        return true;
    qsort_r(p->keys + mark, count, sizeof(*p->keys), compare_keys, p->names);
    for (i = mark + 1; i < p->nkeys; i++)
        if (compare_keys(&p->keys[i - 1], &p->keys[i], p->names) == 0)
            return fail(p, JSON_STRICT_ERR_DUPLICATE);
    return true;
}

static bool value(struct parser *p);

static bool object(struct parser *p)
{
    size_t mark = p->nkeys, names_mark = p->names_len;

    p->pos++;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == '}') {
        p->pos++;
        return true;
    }
    for (;;) {
        struct key k;

        skip_ws(p);
        if (p->pos >= p->n || p->s[p->pos] != '"')
            return fail(p, JSON_STRICT_ERR_NAME_QUOTES);
        k.off = p->names_len;
        if (!string(p, true))
            return false;
        k.len = p->names_len - k.off;
        if (p->nkeys == p->keys_cap) {
            size_t cap = p->keys_cap ? p->keys_cap * 2 : 16;
            struct key *grown = realloc(p->keys, cap * sizeof(*grown));

            if (grown == NULL)
                return fail(p, JSON_STRICT_ERR_NOMEM);
            p->keys = grown;
            p->keys_cap = cap;
        }
        p->keys[p->nkeys++] = k;
        skip_ws(p);
        if (p->pos >= p->n || p->s[p->pos] != ':')
            return fail(p, JSON_STRICT_ERR_COLON);
        p->pos++;
        if (!value(p))
            return false;
        skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->n && p->s[p->pos] == '}') {
            p->pos++;
            break;
        }
        return fail(p, JSON_STRICT_ERR_OBJECT_SEP);
    }
    if (!unique_names(p, mark))
        return false;
    p->nkeys = mark;
    p->names_len = names_mark;
    return true;
}

static bool array(struct parser *p)
{
    p->pos++;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == ']') {
        p->pos++;
        return true;
    }
    for (;;) {
        if (!value(p))
            return false;
        skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->n && p->s[p->pos] == ']') {
            p->pos++;
            return true;
        }
        return fail(p, JSON_STRICT_ERR_ARRAY_SEP);
    }
}

static bool value(struct parser *p)
{
    bool ok;

    skip_ws(p);
    if (p->pos >= p->n)
        return fail(p, JSON_STRICT_ERR_END);
    switch (p->s[p->pos]) {
    case '{':
    case '[':
        if (++p->depth > JSON_STRICT_MAX_DEPTH)
            return fail(p, JSON_STRICT_ERR_DEPTH);
        ok = p->s[p->pos] == '{' ? object(p) : array(p);
        p->depth--;
        return ok;
    case '"':
        return string(p, false);
    case 't':
        return literal(p, "true");
    case 'f':
        return literal(p, "false");
    case 'n':
        return literal(p, "null");
    default:
        if (p->s[p->pos] == '-' || (p->s[p->pos] >= '0' && p->s[p->pos] <= '9'))
            return number(p);
        return fail(p, JSON_STRICT_ERR_CHARACTER);
    }
}

enum json_strict_error json_strict_validate(const char *s, size_t n, char *err, size_t errlen)
{
    struct parser p = {.s = (const unsigned char *)s, .n = n, .err = err, .errlen = errlen};

    if (errlen > 0)
        err[0] = '\0';
    if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
        fail(&p, JSON_STRICT_ERR_BOM);
        return p.failed;
    }
    if (!utf8_valid(s, n)) {
        snprintf(err, errlen, "%s", messages[JSON_STRICT_ERR_UTF8]);
        return JSON_STRICT_ERR_UTF8;
    }
    if (value(&p)) {
        skip_ws(&p);
        if (p.pos < p.n)
            fail(&p, JSON_STRICT_ERR_TRAILING);
    }
    free(p.names);
    free(p.keys);
    return p.failed;
}
