#include "db_span.h"

#include <string.h>

#include "decimal.h"

struct trace_span *trace_db_start(struct tracer *t, const struct trace_context *ctx,
                                  const struct trace_span *parent, const char *operation,
                                  const char *table, const struct trace_db_peer *peer)
{
    struct trace_span *s;
    char name[160];
    int port;

    if (!tracer_enabled(t) || operation == NULL)
        return NULL;
    s = span_start(t, ctx, parent, span_name_join(name, sizeof(name), operation, table),
                   SPAN_KIND_CLIENT);
    if (s == NULL)
        return NULL;
    span_set_str(s, TRACE_ATTR_DB_SYSTEM, "postgresql");
    span_set_str(s, TRACE_ATTR_DB_OPERATION, operation);
    span_set_str(s, TRACE_ATTR_DB_COLLECTION, table);
    if (peer != NULL) {
        if (peer->name != NULL && peer->name[0] != '\0')
            span_set_str(s, TRACE_ATTR_DB_NAMESPACE, peer->name);
        if (peer->host != NULL && peer->host[0] != '\0')
            span_set_str(s, TRACE_ATTR_SERVER_ADDRESS, peer->host);
        port = peer->port ? decimal_parse_u16(peer->port, strlen(peer->port)) : -1;
        if (port > 0)
            span_set_int(s, TRACE_ATTR_SERVER_PORT, port);
    }
    return s;
}

void span_set_db_error(struct trace_span *s, const char *sqlstate, const char *message)
{
    if (s == NULL)
        return;
    span_set_str(s, TRACE_ATTR_ERROR_TYPE, sqlstate && *sqlstate ? sqlstate : "_OTHER");
    if (sqlstate != NULL && *sqlstate != '\0')
        span_set_str(s, TRACE_ATTR_DB_STATUS_CODE, sqlstate);
    span_set_error(s, message);
}
