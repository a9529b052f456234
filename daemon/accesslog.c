#include "accesslog.h"

#include <stdio.h>
#include <string.h>

#include "conf.h"

#define FIELD_MAX 4096 /* an escaped field longer than this is cut */

static int dangerous(unsigned char c)
{
    return c < 0x20 || c >= 0x7f || c == '"' || c == '\\';
}

size_t accesslog_escape(char *dst, size_t cap, const char *src, size_t n, int json)
{
    static const char hex[] = "0123456789abcdef";
    const char *prefix = json ? "\\\\x" : "\\x";
    size_t plen = strlen(prefix), out = 0, i;

    if (cap == 0)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];

        if (!dangerous(c)) {
            if (out + 1 >= cap)
                break;
            dst[out++] = (char)c;
            continue;
        }
        if (out + plen + 2 >= cap)
            break;
        memcpy(dst + out, prefix, plen);
        out += plen;
        dst[out++] = hex[c >> 4];
        dst[out++] = hex[c & 15];
    }
    dst[out] = '\0';
    return out;
}

/* An escaped copy of s, or "-" for NULL or empty. */
static const char *field(char *buf, size_t cap, const char *s, int json)
{
    if (s == NULL || s[0] == '\0')
        return "-";
    accesslog_escape(buf, cap, s, strlen(s), json);
    return buf;
}

size_t accesslog_format(const struct access_entry *e, int format, char *buf, size_t cap)
{
    char request[FIELD_MAX + 32], referer_buf[FIELD_MAX], agent_buf[FIELD_MAX], when[64],
        remote_buf[64], user_buf[FIELD_MAX];
    const char *referer, *agent, *remote, *user;
    int json = format == CONF_LOG_JSON, n;
    time_t secs = e->arrived.tv_sec;
    struct tm tm;

    if (e->method != NULL) {
        char target[FIELD_MAX];

        snprintf(request, sizeof(request), "%.16s %s HTTP/1.%d", e->method,
                 field(target, sizeof(target), e->target, json),
                 e->version_minor < 0 ? 1 : e->version_minor % 10);
    } else {
        snprintf(request, sizeof(request), "%s",
                 field(agent_buf, sizeof(agent_buf), e->request_line, json));
    }
    referer = field(referer_buf, sizeof(referer_buf), e->referer, json);
    agent = field(agent_buf, sizeof(agent_buf), e->user_agent, json);
    remote = field(remote_buf, sizeof(remote_buf), e->remote, json);
    user = field(user_buf, sizeof(user_buf), e->user, json);
    if (json) {
        gmtime_r(&secs, &tm);
        n = (int)strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(when + n, sizeof(when) - (size_t)n, ".%06ldZ", e->arrived.tv_nsec / 1000);
        n = snprintf(buf, cap,
                     "{\"time\":\"%s\",\"remote_addr\":\"%s\",\"user\":\"%s\",\"request\":\"%s\","
                     "\"status\":%d,\"bytes\":%zu,\"referer\":\"%s\",\"user_agent\":\"%s\","
                     "\"duration\":%.6f,\"trace_id\":\"%s\"}\n",
                     when, remote, user, request, e->status, e->bytes, referer, agent, e->duration,
                     e->trace_id ? e->trace_id : "-");
    } else {
        localtime_r(&secs, &tm);
        strftime(when, sizeof(when), "%d/%b/%Y:%H:%M:%S %z", &tm);
        n = snprintf(buf, cap, "%s - %s [%s] \"%s\" %d %zu \"%s\" \"%s\" %.6f %s\n", remote, user,
                     when, request, e->status, e->bytes, referer, agent, e->duration,
                     e->trace_id ? e->trace_id : "-");
    }
    if (n < 0 || cap < 2)
        return 0;
    if ((size_t)n >= cap) { /* cut, but still one line */
        buf[cap - 2] = '\n';
        return cap - 1;
    }
    return (size_t)n;
}
