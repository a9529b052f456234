#include "ops.h"

#include <stdio.h>
#include <stdlib.h>

#include "db.h"
#include "metrics.h"
#include "stats_json.h"

/* Generated from daemon/openapi.json and daemon/dashboard.html by the Makefile. */
extern const char openapi_json[], dashboard_html[];
extern const char dashboard_script_sha256[], dashboard_style_sha256[]; /* "sha256-..." */
extern const unsigned long openapi_json_len, dashboard_html_len;

void ops_health(struct http_req *r)
{
    if (db_pool_ready(r->app->db) == 0) {
        http_reply_error(r, 503, "database unavailable");
        return;
    }
    http_reply_raw(r, 200, "text/plain; charset=utf-8", "ok", 2);
}

void ops_live(struct http_req *r)
{
    http_reply_raw(r, 200, "text/plain; charset=utf-8", "ok", 2);
}

/* For load balancers: 503 from the moment the worker is told to stop (for
 * drain_delay it still serves everything else), or while it has no database. */
void ops_ready(struct http_req *r)
{
    if (r->app->stop_requested) {
        http_reply_error(r, 503, "draining");
        return;
    }
    if (db_pool_ready(r->app->db) == 0) {
        http_reply_error(r, 503, "database unavailable");
        return;
    }
    http_reply_raw(r, 200, "text/plain; charset=utf-8", "ready", 5);
}

typedef int (*render_fn)(const struct stats_shm *, const char *const *, int, const char *, FILE *);

static void reply_rendered(struct http_req *r, render_fn render, const char *content_type)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    int rc;

    if (out == NULL) {
        http_reply_error(r, 500, "internal error");
        return;
    }
    rc = render(r->app->shm, r->app->route_names, r->app->nroutes, TODOD_VERSION, out);
    if (fclose(out) != 0 || rc != 0) {
        free(text);
        http_reply_error(r, 500, "internal error");
        return;
    }
    http_reply_raw(r, 200, content_type, text, len);
    free(text);
}

void ops_metrics(struct http_req *r)
{
    reply_rendered(r, metrics_render, "text/plain; version=0.0.4; charset=utf-8");
}

void ops_stats(struct http_req *r)
{
    reply_rendered(r, stats_json_render, "application/json");
}

void ops_openapi(struct http_req *r)
{
    http_reply_raw(r, 200, "application/json", openapi_json, openapi_json_len);
}

/*
 * The page loads nothing but itself and talks only to this origin: a policy
 * that says so keeps anything injected from loading or sending elsewhere, and
 * other sites from framing it. Its script and style are inline (the page is
 * one self-contained file) and allowed by their SHA-256, computed when the
 * page is built in: no other inline script, style element or style attribute
 * runs. It is fetched anew after an upgrade.
 */
static const char *dashboard_csp(void)
{
    static char csp[320];

    if (csp[0] == '\0')
        snprintf(csp, sizeof(csp),
                 "default-src 'none'; script-src '%s'; style-src '%s'; connect-src 'self'; "
                 "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                 dashboard_script_sha256, dashboard_style_sha256);
    return csp;
}

void ops_dashboard(struct http_req *r)
{
    http_add_header(r, "Content-Security-Policy", dashboard_csp());
    http_add_header(r, "X-Content-Type-Options", "nosniff");
    http_add_header(r, "Referrer-Policy", "no-referrer");
    http_add_header(r, "Cache-Control", "no-cache");
    http_reply_raw(r, 200, "text/html; charset=utf-8", dashboard_html, dashboard_html_len);
}
