/* Operational routes: /health, /metrics, /stats, the OpenAPI document. None of
 * them waits for the database. */
#ifndef TODOD_OPS_H
#define TODOD_OPS_H

#include "http.h"

void ops_health(struct http_req *r);
void ops_live(struct http_req *r);
void ops_ready(struct http_req *r);
void ops_metrics(struct http_req *r);
void ops_stats(struct http_req *r);
void ops_openapi(struct http_req *r);
void ops_dashboard(struct http_req *r);

#endif
