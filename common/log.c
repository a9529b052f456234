#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct {
    char role[32];
    int level;
    int journal; /* stderr is read by journald: prefix lines with <N> */
} logger = {"todod", LOGL_INFO, 0};

static const struct {
    const char *name;
    int syslog_priority;
} levels[] = {
    [LOGL_ERROR] = {"error", 3},
    [LOGL_WARN] = {"warn", 4},
    [LOGL_INFO] = {"info", 6},
    [LOGL_DEBUG] = {"debug", 7},
};

/* JOURNAL_STREAM is "dev:ino" of the stream journald reads; it only applies when
 * our stderr is still that stream (not redirected by a wrapper). */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
        return 0;
    if (fstat(STDERR_FILENO, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(const char *role, int level)
{
    snprintf(logger.role, sizeof(logger.role), "%s", role);
    logger.level = level;
    logger.journal = stderr_is_journal();
}

void log_set_level(int level)
{
    logger.level = level;
}

int log_get_level(void)
{
    return logger.level;
}

void log_msg(int level, const char *fmt, ...)
{
    char line[2048];
    int n = 0;
    va_list ap;

    if (level > logger.level || level < LOGL_ERROR)
        return;
    if (logger.journal)
        n = snprintf(line, sizeof(line), "<%d>", levels[level].syslog_priority);
    n += snprintf(line + n, sizeof(line) - n, "todod %s[%ld] %s: ", logger.role, (long)getpid(),
                  levels[level].name);
    va_start(ap, fmt);
    if (n < (int)sizeof(line))
        n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* One write per line so lines of concurrent processes never interleave. */
    (void)!write(STDERR_FILENO, line, n);
}

void log_access(const char *line, size_t len)
{
    char buf[16384 + 8];
    size_t n = 0;

    if (logger.journal)
        n = (size_t)snprintf(buf, sizeof(buf), "<%d>", levels[LOGL_INFO].syslog_priority);
    if (len > sizeof(buf) - n)
        len = sizeof(buf) - n;
    memcpy(buf + n, line, len);
    /* One write per line so lines of concurrent processes never interleave. */
    (void)!write(STDERR_FILENO, buf, n + len);
}
