/*
 * The CLIENT span of an SQL statement: the tracer's helpers that know the
 * database (the tracer itself does not).
 */
#ifndef TODOD_DB_SPAN_H
#define TODOD_DB_SPAN_H

#include "trace.h"

/* Where a statement runs: PQdb(), PQhost(), PQport() of its connection; any may be NULL. */
struct trace_db_peer {
    const char *name;
    const char *host;
    const char *port;
};

/*
 * The CLIENT span of one SQL statement: "{operation} {table}" ("SELECT todos")
 * with db.system.name = postgresql, db.operation.name, db.collection.name,
 * db.namespace, server.address and server.port, as a child of parent (or of
 * ctx's remote parent when parent is NULL; then ctx's sampling decides).
 */
struct trace_span *trace_db_start(struct tracer *t, const struct trace_context *ctx,
                                  const struct trace_span *parent, const char *operation,
                                  const char *table, const struct trace_db_peer *peer);

/* A failed statement: error.type and db.response.status_code = sqlstate (error.type
 * "_OTHER" without one), status ERROR with message (e.g. PQresultErrorMessage). */
void span_set_db_error(struct trace_span *s, const char *sqlstate, const char *message);

#endif
