#include "http.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <event2/keyvalq_struct.h>
#include <stdarg.h>
#include <sys/queue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "db.h"
#include "log.h"
#include "ops.h"
#include "perftest.h"
#include "stats.h"
#include "todos.h"
#include "utf8.h"
#include "worker.h"

/*
 * The route table: a path pattern ("{name}" matches one non-empty segment)
 * and a handler per method. Order matters: the first matching pattern wins, so
 * literal paths come before the patterns that would also match them. A GET
 * handler also answers HEAD.
 */
struct route {
    const char *pattern;
    struct {
        enum stats_method method;
        http_handler fn;
    } methods[3];
};

static const struct route routes[] = {
    {"/health", {{STATS_GET, ops_health}}},
    {"/live", {{STATS_GET, ops_live}}},
    {"/ready", {{STATS_GET, ops_ready}}},
    {"/metrics", {{STATS_GET, ops_metrics}}},
    {"/stats", {{STATS_GET, ops_stats}}},
    {"/api-docs/openapi.json", {{STATS_GET, ops_openapi}}},
    {"/dashboard", {{STATS_GET, ops_dashboard}}},
    {"/todos", {{STATS_GET, todos_list}, {STATS_POST, todos_create}}},
    {"/todos/performance-test", {{STATS_POST, perf_start}}},
    {"/todos/done/{done}", {{STATS_GET, todos_by_done}}},
    {"/todos/{id}",
     {{STATS_GET, todos_get}, {STATS_PUT, todos_update}, {STATS_DELETE, todos_delete}}},
};

#define NROUTES     (int)(sizeof(routes) / sizeof(routes[0]))
#define ROUTE_OTHER NROUTES /* requests that match no route */

const char *const http_route_names[] = {
    "/health",
    "/live",
    "/ready",
    "/metrics",
    "/stats",
    "/api-docs/openapi.json",
    "/dashboard",
    "/todos",
    "/todos/performance-test",
    "/todos/done/{done}",
    "/todos/{id}",
    "other",
};
const int http_nroutes = NROUTES + 1;

_Static_assert(sizeof(http_route_names) / sizeof(http_route_names[0]) == NROUTES + 1,
               "http_route_names must follow the route table");
_Static_assert(NROUTES + 1 <= STATS_MAX_ROUTES, "too many routes for the stats segment");

static const char *const method_names[STATS_NMETHODS] = {
    [STATS_GET] = "GET",       [STATS_POST] = "POST",          [STATS_PUT] = "PUT",
    [STATS_DELETE] = "DELETE", [STATS_HEAD] = "HEAD",          [STATS_OPTIONS] = "OPTIONS",
    [STATS_PATCH] = "PATCH",   [STATS_OTHER_METHOD] = "OTHER",
};

static const struct {
    int code;
    const char *reason;
} reasons[] = {
    {200, "OK"},
    {201, "Created"},
    {204, "No Content"},
    {400, "Bad Request"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {413, "Payload Too Large"},
    {415, "Unsupported Media Type"},
    {422, "Unprocessable Entity"},
    {500, "Internal Server Error"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
};

static const char *reason_phrase(int code)
{
    size_t i;

    for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (reasons[i].code == code)
            return reasons[i].reason;
    return "Unknown";
}

static int method_index(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return STATS_GET;
    case EVHTTP_REQ_POST:
        return STATS_POST;
    case EVHTTP_REQ_PUT:
        return STATS_PUT;
    case EVHTTP_REQ_DELETE:
        return STATS_DELETE;
    case EVHTTP_REQ_HEAD:
        return STATS_HEAD;
    case EVHTTP_REQ_OPTIONS:
        return STATS_OPTIONS;
    case EVHTTP_REQ_PATCH:
        return STATS_PATCH;
    default:
        return STATS_OTHER_METHOD;
    }
}

/* ---- replies ---- */

static void http_finish(struct http_req *r, int status, struct evbuffer *body)
{
    struct worker *w = r->w;
    uint64_t us;

    if (w->draining)
        evhttp_add_header(evhttp_request_get_output_headers(r->req), "Connection", "close");
    evhttp_send_reply(r->req, status, reason_phrase(status), body);
    us = (uint64_t)(clock_since(r->started) * 1e6);
    stats_http_observe(w->slot, r->route, r->method, status, us);
    if (w->conf->access_log)
        log_info("%s %s %d %.3fms", method_names[r->method], r->path ? r->path : "-", status,
                 us / 1000.0);
    if (r->cleanup != NULL)
        r->cleanup(r);
    free(r->path);
    free(r);
    worker_request_done(w);
}

void http_add_header(struct http_req *r, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

void http_reply_raw(struct http_req *r, int status, const char *content_type, const char *body,
                    size_t len)
{
    struct evbuffer *buf = evbuffer_new();

    if (buf == NULL || evbuffer_add(buf, body, len) != 0) {
        if (buf != NULL)
            evbuffer_free(buf);
        http_finish(r, 500, NULL);
        return;
    }
    if (content_type != NULL)
        http_add_header(r, "Content-Type", content_type);
    http_finish(r, status, buf);
    evbuffer_free(buf);
}

void http_reply_json(struct http_req *r, int status, struct json_object *obj)
{
    size_t len;
    const char *s;

    if (obj == NULL) {
        http_reply_error(r, 500, "internal error");
        return;
    }
    s = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    http_reply_raw(r, status, "application/json", s, len);
    json_object_put(obj);
}

static struct json_object *error_object(const char *msg)
{
    struct json_object *obj = json_object_new_object();

    if (obj != NULL)
        json_object_object_add(obj, "error", json_object_new_string(msg));
    return obj;
}

void http_reply_error(struct http_req *r, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    http_reply_json(r, status, error_object(msg));
}

/* ---- request bodies and query strings ---- */

static bool is_json_content_type(const char *ct)
{
    size_t n = strlen("application/json");

    if (ct == NULL)
        return false;
    ct += strspn(ct, " \t");
    if (strncasecmp(ct, "application/json", n) != 0)
        return false;
    ct += n;
    ct += strspn(ct, " \t");
    return *ct == '\0' || *ct == ';';
}

static bool only_whitespace(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return false;
    return true;
}

static int hex4(const char *s, size_t n)
{
    int i, v = 0;

    if (n < 4)
        return -1;
    for (i = 0; i < 4; i++) {
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

/*
 * json-c turns a \u escape of a lone UTF-16 surrogate into U+FFFD; todod
 * refuses it instead, so that what is stored is what the client meant.
 */
static bool has_unpaired_surrogate(const char *s, size_t n)
{
    size_t i = 0;

    while (i + 1 < n) {
        int v;

        if (s[i] != '\\') {
            i++;
            continue;
        }
        if (s[i + 1] != 'u') {
            i += 2; /* any other escape, an escaped backslash included */
            continue;
        }
        v = hex4(s + i + 2, n - i - 2);
        i += 6;
        if (v < 0xd800 || v > 0xdfff)
            continue;
        if (v >= 0xdc00)
            return true; /* a low surrogate first */
        if (i + 1 >= n || s[i] != '\\' || s[i + 1] != 'u')
            return true;
        v = hex4(s + i + 2, n - i - 2);
        if (v < 0xdc00 || v > 0xdfff)
            return true;
        i += 6;
    }
    return false;
}

struct json_object *http_read_json_object(struct http_req *r)
{
    struct evkeyvalq *headers = evhttp_request_get_input_headers(r->req);
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    size_t len = evbuffer_get_length(in);
    struct json_tokener *tok;
    struct json_object *obj;
    const char *body;
    size_t end;

    if (!is_json_content_type(evhttp_find_header(headers, "Content-Type"))) {
        http_reply_error(r, 415, "Content-Type must be application/json");
        return NULL;
    }
    if (len > r->w->conf->max_body_size) {
        http_reply_error(r, 413, "request body larger than %zu bytes", r->w->conf->max_body_size);
        return NULL;
    }
    if (len == 0) {
        http_reply_error(r, 400, "request body is empty: expected a JSON object");
        return NULL;
    }
    body = (const char *)evbuffer_pullup(in, -1);
    if (!utf8_valid(body, len)) {
        http_reply_error(r, 400, "request body is not valid UTF-8");
        return NULL;
    }
    if (has_unpaired_surrogate(body, len)) {
        http_reply_error(
            r, 400,
            "request body is not valid UTF-8: a \\u escape of an unpaired UTF-16 surrogate");
        return NULL;
    }
    tok = json_tokener_new();
    if (tok == NULL) {
        http_reply_error(r, 500, "internal error");
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    obj = json_tokener_parse_ex(tok, body, (int)len);
    end = json_tokener_get_parse_end(tok);
    /* A number or literal at the very end of the body ("1", "true") waits for
     * more input: the end of the body is what ends it. */
    if (obj == NULL && json_tokener_get_error(tok) == json_tokener_continue) {
        obj = json_tokener_parse_ex(tok, "", 1);
        end = len;
    }
    /* Success with a NULL object is the JSON literal null: a value, not an error. */
    if (json_tokener_get_error(tok) != json_tokener_success ||
        !only_whitespace(body + end, len - end)) {
        enum json_tokener_error err = json_tokener_get_error(tok);

        if (err == json_tokener_success)
            http_reply_error(r, 400, "malformed JSON: unexpected data after the value");
        else if (err == json_tokener_continue)
            http_reply_error(r, 400, "malformed JSON: unexpected end of data");
        else
            http_reply_error(r, 400, "malformed JSON: %s", json_tokener_error_desc(err));
        json_object_put(obj);
        json_tokener_free(tok);
        return NULL;
    }
    json_tokener_free(tok);
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        http_reply_error(r, 422, "request body must be a JSON object");
        return NULL;
    }
    return obj;
}

/* Strict decimal: an optional minus sign and digits, nothing else. Values too
 * long to be meaningful saturate instead of overflowing. */
static bool parse_long(const char *s, long *out)
{
    bool neg = *s == '-';
    long v = 0;

    s += neg;
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        if (v < 100000000000000L)
            v = v * 10 + (*s - '0');
    }
    *out = neg ? -v : v;
    return true;
}

long http_query_long(struct http_req *r, const char *name, long def, long min, long max, int clamp)
{
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r->req));
    struct evkeyvalq args;
    const char *value;
    long v;

    if (query == NULL)
        return def;
    TAILQ_INIT(&args);
    if (evhttp_parse_query_str(query, &args) != 0) {
        http_reply_error(r, 400, "malformed query string");
        return -1;
    }
    value = evhttp_find_header(&args, name);
    if (value == NULL) {
        evhttp_clear_headers(&args);
        return def;
    }
    if (!parse_long(value, &v) || (!clamp && (v < min || v > max))) {
        if (clamp)
            http_reply_error(r, 400, "%s must be a whole number", name);
        else
            http_reply_error(r, 400, "%s must be a whole number from %ld to %ld", name, min, max);
        evhttp_clear_headers(&args);
        return -1;
    }
    evhttp_clear_headers(&args);
    return v < min ? min : v > max ? max : v;
}

/* ---- routing ---- */

/* Matches path against pattern; fills params with copies cut from buf. */
static bool route_match(const char *pattern, const char *path, char *buf, const char **params)
{
    int np = 0;

    while (*pattern == '/' && *path == '/') {
        size_t plen = strcspn(pattern + 1, "/");
        size_t slen = strcspn(path + 1, "/");

        if (pattern[1] == '{') {
            if (slen == 0 || np == HTTP_MAX_PARAMS)
                return false;
            memcpy(buf, path + 1, slen);
            buf[slen] = '\0';
            params[np++] = buf;
            buf += slen + 1;
        } else if (plen != slen || memcmp(pattern + 1, path + 1, slen) != 0) {
            return false;
        }
        pattern += plen + 1;
        path += slen + 1;
    }
    return *pattern == '\0' && *path == '\0';
}

static void reply_not_allowed(struct http_req *r, const struct route *rt)
{
    char allow[64] = "";
    size_t i;

    for (i = 0; i < 3 && rt->methods[i].fn != NULL; i++) {
        if (i > 0)
            strcat(allow, ", ");
        strcat(allow, method_names[rt->methods[i].method]);
        if (rt->methods[i].method == STATS_GET)
            strcat(allow, ", HEAD");
    }
    http_add_header(r, "Allow", allow);
    http_reply_error(r, 405, "method %s not allowed on %s (allowed: %s)", method_names[r->method],
                     rt->pattern, allow);
}

static void count_connection(struct worker *w, struct evhttp_request *req);

static void http_dispatch(struct evhttp_request *req, void *arg)
{
    struct worker *w = arg;
    struct http_req *r = calloc(1, sizeof(*r));
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    size_t plen;
    int i;

    if (r == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    r->started = clock_now();
    worker_request_started(w);
    count_connection(w, req);
    r->w = w;
    r->req = req;
    r->route = ROUTE_OTHER;
    r->method = method_index(evhttp_request_get_command(req));
    if (path == NULL || *path == '\0')
        path = "/";
    plen = strlen(path);
    /* The path, then room for the parameters cut out of it. */
    r->path = malloc(2 * plen + 2);
    if (r->path == NULL) {
        http_reply_error(r, 500, "internal error");
        return;
    }
    memcpy(r->path, path, plen + 1);
    for (i = 0; i < NROUTES; i++) {
        const struct route *rt = &routes[i];
        int m;
        int want = r->method == STATS_HEAD ? STATS_GET : r->method;

        if (!route_match(rt->pattern, path, r->path + plen + 1, r->params))
            continue;
        r->route = i;
        for (m = 0; m < 3 && rt->methods[m].fn != NULL; m++) {
            if ((int)rt->methods[m].method == want) {
                rt->methods[m].fn(r);
                return;
            }
        }
        reply_not_allowed(r, rt);
        return;
    }
    http_reply_error(r, 404, "no route for %s", r->path);
}

#define HARD_BODY_LIMIT ((size_t)8 << 20)

static void resume_accepting(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    if (w->bound != NULL)
        evconnlistener_enable(evhttp_bound_socket_get_listener(w->bound));
}

/* Fewest open connections among the other workers that accept, or -1. */
static int least_loaded_peer(const struct worker *w)
{
    int i, least = -1;

    for (i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &w->shm->slots[i];
        int n;

        if (i == w->slot_index || atomic_load(&s->state) != STATS_SLOT_ACTIVE ||
            !atomic_load(&s->ready) || atomic_load(&s->draining))
            continue;
        n = atomic_load(&s->open_conns);
        if (least < 0 || n < least)
            least = n;
    }
    return least;
}

/*
 * A connection is counted when accepted, but evhttp only shows it to us with
 * its first request (then it is tracked by fd until it closes). Accepted
 * connections that never sent a request within a second are uncounted here.
 */
static void expire_unseen(struct worker *w)
{
    if (w->accepted_unseen == 0)
        return;
    if (clock_since(w->last_accept) >= 1.0) {
        atomic_fetch_sub(&w->slot->open_conns, w->accepted_unseen);
        w->accepted_unseen = 0;
    }
}

/*
 * Called by evhttp for each accepted connection, before it reads a byte.
 * Workers share one listening socket; left alone, whichever worker wakes first
 * accepts the whole backlog, and keep-alive connections stay where they land.
 * So a worker takes at most one connection per turn of its loop, and one that
 * holds more connections than the least loaded of its peers steps back
 * briefly: the kernel hands the backlog to the others meanwhile.
 */
static struct bufferevent *http_on_accept(struct event_base *base, void *arg)
{
    struct worker *w = arg;
    static const struct timeval next_turn = {0, 0}, step_back = {0, 2000};
    int least = least_loaded_peer(w);
    bool ahead;

    expire_unseen(w);
    /* Counted from now on, so the peers see it before its first request. */
    atomic_fetch_add(&w->slot->open_conns, 1);
    w->accepted_unseen++;
    w->last_accept = clock_now();
    ahead = least >= 0 && atomic_load(&w->slot->open_conns) > least + 1;

    if (w->bound != NULL) {
        evconnlistener_disable(evhttp_bound_socket_get_listener(w->bound));
        evtimer_add(w->accept_timer, ahead ? &step_back : &next_turn);
    }
    return NULL; /* evhttp creates the connection's bufferevent as usual */
}

static int connection_fd(struct evhttp_connection *evcon)
{
    return bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
}

static void on_connection_close(struct evhttp_connection *evcon, void *arg)
{
    struct worker *w = arg;
    int fd = connection_fd(evcon);

    if (fd >= 0 && fd < w->nfds && w->counted[fd]) {
        w->counted[fd] = 0;
        atomic_fetch_sub(&w->slot->open_conns, 1);
    }
}

/* Counts a connection as open from its first request until it closes. */
static void count_connection(struct worker *w, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    int fd = evcon ? connection_fd(evcon) : -1;

    if (fd < 0 || fd >= w->nfds || w->counted[fd])
        return;
    w->counted[fd] = 1;
    expire_unseen(w);
    if (w->accepted_unseen > 0)
        w->accepted_unseen--; /* counted when accepted */
    else
        atomic_fetch_add(&w->slot->open_conns, 1);
    evhttp_connection_set_closecb(evcon, on_connection_close, w);
}

void http_setup(struct worker *w)
{
    struct timeval tv;

    evhttp_set_gencb(w->http, http_dispatch, w);
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH |
                                            EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
    /*
     * Bodies over max_body_size get the API's JSON 413 from the handler. evhttp
     * itself only cuts off bodies far beyond it, before reading them (its own
     * 413 page): libevent 2.1 has no hook to answer that one in JSON.
     */
    evhttp_set_max_body_size(w->http, (ev_ssize_t)(w->conf->max_body_size < HARD_BODY_LIMIT / 8
                                                       ? HARD_BODY_LIMIT
                                                       : 8 * w->conf->max_body_size));
    evhttp_set_max_headers_size(w->http, 64 * 1024);
    tv.tv_sec = (time_t)w->conf->keepalive_timeout;
    tv.tv_usec = (suseconds_t)((w->conf->keepalive_timeout - (double)tv.tv_sec) * 1e6);
    evhttp_set_timeout_tv(w->http, &tv);
    evhttp_set_default_content_type(w->http, NULL);
    w->accept_timer = evtimer_new(w->base, resume_accepting, w);
    evhttp_set_bevcb(w->http, http_on_accept, w);
}
