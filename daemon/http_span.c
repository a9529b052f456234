#include "http_span.h"

#include <event2/http.h>
#include <event2/http_struct.h> /* the request's HTTP version: 2.1 has no accessor */
#include <stdio.h>
#include <string.h>

#include "decimal.h"
#include "http_method.h"

static const char *method_name(enum evhttp_cmd_type cmd)
{
    const char *name = http_method_name(cmd);

    return name != NULL ? name : "_OTHER"; /* the semantic conventions' name for any other */
}

/* server.address and server.port from the Host header ("name", "name:port",
 * "[v6]:port"), or from the listening socket. */
static void span_set_server(struct trace_span *s, const struct tracer *t, const char *host)
{
    const char *name = host, *colon = NULL, *listen_host;
    size_t n = 0;
    int port = -1, listen_port;

    if (host != NULL && host[0] == '[') {
        const char *end = strchr(host, ']');

        if (end != NULL) {
            name = host + 1;
            n = (size_t)(end - name);
            if (end[1] == ':')
                colon = end + 1;
        }
    } else if (host != NULL) {
        colon = strrchr(host, ':');
        n = colon ? (size_t)(colon - host) : strlen(host);
    }
    if (colon != NULL)
        port = decimal_parse_u16(colon + 1, strlen(colon + 1));
    listen_host = tracer_listen_address(t, &listen_port);
    if (n > 0)
        span_set_strn(s, TRACE_ATTR_SERVER_ADDRESS, name, n);
    else if (listen_host[0] != '\0')
        span_set_str(s, TRACE_ATTR_SERVER_ADDRESS, listen_host);
    if (port < 0)
        port = listen_port;
    if (port > 0)
        span_set_int(s, TRACE_ATTR_SERVER_PORT, port);
}

struct trace_span *trace_http_server_start(struct tracer *t, struct evhttp_request *req,
                                           const char *route, struct trace_context *ctx)
{
    struct evkeyvalq *headers = req ? evhttp_request_get_input_headers(req) : NULL;
    const struct evhttp_uri *uri;
    struct evhttp_connection *evcon;
    const char *method, *path, *query;
    struct trace_span *s;
    char name[320], version[16];

    trace_request_context(t, headers, ctx);
    if (req == NULL || !ctx->valid || !(ctx->flags & TRACE_FLAG_SAMPLED))
        return NULL;
    method = method_name(evhttp_request_get_command(req));
    /* "HTTP" stands for a method the conventions do not know. */
    span_name_join(name, sizeof(name), strcmp(method, "_OTHER") ? method : "HTTP", route);
    s = span_start(t, ctx, NULL, name, SPAN_KIND_SERVER);
    if (s == NULL)
        return NULL;
    span_set_str(s, TRACE_ATTR_HTTP_METHOD, method);
    span_set_str(s, TRACE_ATTR_HTTP_ROUTE, route);
    uri = evhttp_request_get_evhttp_uri(req);
    path = uri ? evhttp_uri_get_path(uri) : NULL;
    query = uri ? evhttp_uri_get_query(uri) : NULL;
    span_set_str(s, TRACE_ATTR_URL_PATH, path && *path ? path : "/");
    span_set_str(s, TRACE_ATTR_URL_QUERY, query);
    span_set_str(s, TRACE_ATTR_URL_SCHEME, "http");
    span_set_server(s, t, evhttp_find_header(headers, "Host"));
    evcon = evhttp_request_get_connection(req);
    if (evcon != NULL) {
        char *address = NULL;
        ev_uint16_t port = 0;

        evhttp_connection_get_peer(evcon, &address, &port);
        span_set_str(s, TRACE_ATTR_CLIENT_ADDRESS, address);
    }
    span_set_str(s, TRACE_ATTR_USER_AGENT, evhttp_find_header(headers, "User-Agent"));
    if (req->major > 0 && req->major < 10 && req->minor >= 0 && req->minor < 10) {
        version[0] = (char)('0' + req->major);
        version[1] = '.';
        version[2] = (char)('0' + req->minor);
        span_set_strn(s, TRACE_ATTR_PROTOCOL_VERSION, version, 3);
    }
    return s;
}

void span_set_http_status(struct trace_span *s, int status)
{
    char code[16];

    if (s == NULL)
        return;
    span_set_int(s, TRACE_ATTR_HTTP_STATUS, status);
    /* A server span is an error on 5xx only: a 4xx is the client's. */
    if (status >= 500) {
        snprintf(code, sizeof(code), "%d", status);
        span_set_str(s, TRACE_ATTR_ERROR_TYPE, code);
        span_set_error(s, NULL);
    }
}
