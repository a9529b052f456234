/*
 * libFuzzer harness: conf_load() (common/conf.c) on arbitrary file contents,
 * the configuration `todod -t` checks and SIGHUP re-reads.
 *
 * conf_load() reads a path: the input is written to an anonymous memory file
 * (memfd) and read through /proc/self/fd/N, so no file is left behind (a
 * temporary file when memfd is not available). DATABASE_URL is set for
 * inputs of odd length. Besides the sanitizers' findings (LeakSanitizer's
 * included: whatever conf_load allocates, conf_free releases, and a failed
 * conf_load leaves nothing allocated) it checks:
 * - a failure says "PATH:LINE: message" or "PATH: message", with a line
 *   that exists, and leaves the string fields NULL;
 * - a success gives values within the bounds conf/todod.conf documents.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_conf: %s\n", what);                                              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int fd = -1;
static char path[64];

static void open_file(void)
{
    fd = memfd_create("todod.conf", MFD_CLOEXEC);
    if (fd >= 0) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        if (access(path, R_OK) == 0)
            return;
        close(fd);
    }
    /* No memfd or no /proc: a temporary file, removed at exit. */
    snprintf(path, sizeof(path), "%s/todod-fuzz-conf.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    fd = mkstemp(path);
    CHECK(fd >= 0, "cannot create a temporary file");
}

static void remove_file(void)
{
    if (strncmp(path, "/proc/", 6) != 0)
        unlink(path);
}

static void write_file(const uint8_t *data, size_t size)
{
    size_t done = 0;

    CHECK(ftruncate(fd, 0) == 0, "ftruncate");
    while (done < size) {
        ssize_t n = pwrite(fd, data + done, size - done, (off_t)done);

        CHECK(n > 0 || errno == EINTR, "pwrite");
        if (n > 0)
            done += (size_t)n;
    }
}

static size_t count_lines(const uint8_t *data, size_t size)
{
    size_t n = 0, i;

    for (i = 0; i < size; i++)
        n += data[i] == '\n';
    return n + 1;
}

static void check_error(const char *err, size_t lines)
{
    size_t plen = strlen(path);
    char *end;
    unsigned long line;

    CHECK(strncmp(err, path, plen) == 0 && err[plen] == ':', "error does not start with PATH:");
    if (err[plen + 1] >= '0' && err[plen + 1] <= '9') {
        line = strtoul(err + plen + 1, &end, 10);
        CHECK(*end == ':' && end[1] == ' ' && end[2] != '\0', "PATH:LINE: without a message");
        CHECK(line >= 1 && line <= lines, "error names a line the file does not have");
    } else {
        CHECK(err[plen + 1] == ' ' && err[plen + 2] != '\0', "PATH: without a message");
    }
}

static void check_values(const struct conf *c)
{
    CHECK(memchr(c->listen, '\0', sizeof(c->listen)) != NULL && c->listen[0] != '\0', "listen");
    CHECK(c->listen_addrlen > 0 && c->listen_addrlen <= sizeof(c->listen_addr), "listen_addr");
    CHECK(c->workers >= 1 && c->workers <= CONF_MAX_WORKERS, "workers");
    CHECK(c->database_url != NULL, "database_url NULL");
    CHECK(c->db_connections >= 1 && c->db_connections <= CONF_MAX_DB_CONNECTIONS, "db_connections");
    CHECK(c->db_write_connections >= 1 && c->db_write_connections <= CONF_MAX_DB_CONNECTIONS,
          "db_write_connections");
    CHECK(c->max_body_size >= 1 && c->max_body_size <= 64 * 1024 * 1024, "max_body_size");
    CHECK(c->max_connections >= 1 && c->max_connections <= 1 << 20, "max_connections");
    CHECK(c->perf_max_messages >= 1 && c->perf_max_messages <= 100000000, "perf_max_messages");
    CHECK(c->perf_max_batch >= 1 && c->perf_max_batch <= 100000, "perf_max_batch");
    CHECK(c->request_timeout > 0 && c->request_timeout <= 86400, "request_timeout");
    CHECK(c->keepalive_timeout > 0 && c->keepalive_timeout <= 86400, "keepalive_timeout");
    CHECK(c->shutdown_timeout > 0 && c->shutdown_timeout <= 86400, "shutdown_timeout");
    CHECK(c->drain_delay >= 0 && c->drain_delay <= 86400, "drain_delay");
    CHECK(c->trace_sample_ratio >= 0 && c->trace_sample_ratio <= 1, "trace_sample_ratio");
    CHECK(c->log_level >= LOGL_ERROR && c->log_level <= LOGL_DEBUG, "log_level");
    CHECK(c->access_log_format == CONF_LOG_COMBINED || c->access_log_format == CONF_LOG_JSON,
          "access_log_format");
    CHECK(c->user == NULL || c->user[0] != '\0', "empty user");
    CHECK(c->pid_file == NULL || c->pid_file[0] != '\0', "empty pid_file");
    CHECK(c->service_name == NULL || c->service_name[0] != '\0', "empty service_name");
    CHECK(c->otlp_endpoint == NULL || strncasecmp(c->otlp_endpoint, "http://", 7) == 0,
          "otlp_endpoint");
    CHECK(c->perf_nodes == NULL || strncasecmp(c->perf_nodes, "http://", 7) == 0, "perf_nodes");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct conf c;
    char err[1024];

    if (fd < 0) {
        open_file();
        atexit(remove_file);
    }
    write_file(data, size);
    if (size & 1)
        setenv("DATABASE_URL", "postgresql://fuzz@127.0.0.1/todod", 1);
    else
        unsetenv("DATABASE_URL");

    memset(err, 0, sizeof(err));
    if (conf_load(path, &c, err, sizeof(err)) != 0) {
        CHECK(memchr(err, '\0', sizeof(err)) != NULL, "error not terminated");
        check_error(err, count_lines(data, size));
        CHECK(c.database_url == NULL && c.user == NULL && c.pid_file == NULL &&
                  c.otlp_endpoint == NULL && c.service_name == NULL && c.perf_nodes == NULL,
              "a failed conf_load left a string set");
        return 0;
    }
    CHECK(err[0] == '\0', "success with an error message");
    check_values(&c);
    if (size & 1)
        CHECK(strcmp(c.database_url, "postgresql://fuzz@127.0.0.1/todod") == 0,
              "DATABASE_URL did not win");
    conf_free(&c);
    return 0;
}
