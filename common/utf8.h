/* UTF-8 checks for request bodies and titles (json-c does not validate by default). */
#ifndef TODOD_UTF8_H
#define TODOD_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Well-formed UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
bool utf8_valid(const char *s, size_t len);

/* Characters (code points) in valid UTF-8. */
size_t utf8_length(const char *s, size_t len);

#endif
