#include "http.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "accesslog.h"
#include "clock.h"
#include "conf.h"
#include "http_method.h"
#include "http_span.h"
#include "http_tables.h"
#include "jwt.h"
#include "log.h"
#include "pgbin.h"
#include "stats.h"
#include "utf8.h"

/* The reason phrases of HTTP_STATUSES. */
#define REASON_ROW(c, reason) {c, reason},
static const struct {
    int code;
    const char *reason;
} reasons[] = {HTTP_STATUSES(REASON_ROW)};

static const char *reason_phrase(int code)
{
    size_t i;

    for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (reasons[i].code == code)
            return reasons[i].reason;
    return "Unknown";
}

const char *http_method(const struct http_req *r)
{
    const char *name = http_method_name(evhttp_request_get_command(r->req));

    return name != NULL ? name : "OTHER";
}

/* ---- the request's life ---- */

static void request_free(struct http_req *r)
{
    struct app *app = r->app;

    if (r->cleanup != NULL)
        r->cleanup(r);
    free(r->rejected_line);
    free(r->path);
    if (r->claims != NULL)
        jwt_claims_unref(r->claims);
    free(r);
    app->requests_alive--;
    if (app->on_request_done != NULL)
        app->on_request_done(app);
}

static void access_log(struct http_req *r, int status, double seconds)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->req);
    char trace_id[TRACE_ID_HEX_SIZE];

    trace_context_id_hex(&r->trace, trace_id);
    struct access_entry e = {
        .remote = r->remote,
        .user = r->claims != NULL ? jwt_claims_sub(r->claims) : NULL,
        .arrived = r->arrived_wall,
        .method = r->rejected_line ? NULL : http_method(r),
        .target = evhttp_request_get_uri(r->req),
        .version_minor = r->version_minor,
        .request_line = r->rejected_line,
        .status = status,
        .bytes = r->bytes_sent,
        .referer = r->rejected_line ? NULL : evhttp_find_header(in, "Referer"),
        .user_agent = r->rejected_line ? NULL : evhttp_find_header(in, "User-Agent"),
        .duration = seconds,
        .trace_id = trace_id,
    };
    char line[16384];
    size_t n = accesslog_format(&e, r->app->conf->access_log_format, line, sizeof(line));

    log_access(line, n);
}

/*
 * The Date header (RFC 9110 6.6.1), formatted once a second for every answer
 * of this process, as nginx does; evhttp would format it for each answer
 * (gmtime_r and a printf), and only for HTTP/1.1.
 */
static const char *http_date(void)
{
    static char date[40];
    static time_t formatted = (time_t)-1;
    time_t now = time(NULL);

    if (now != formatted) {
        static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
        static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        struct tm tm;

        /* IMF-fixdate, in English whatever the locale. */
        gmtime_r(&now, &tm);
        snprintf(date, sizeof(date), "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
                 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
        formatted = now;
    }
    return date;
}

/* The headers every answer gets. */
static void add_common_headers(struct http_req *r)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->req);

    evhttp_add_header(out, "Date", http_date());
    if (r->rejected_line != NULL || conn_layer_draining(r->via->conns))
        evhttp_add_header(out, "Connection", "close");
    if (r->db_route) {
        char timing[128], desc[32] = "";

        if (r->db_server != NULL)
            snprintf(desc, sizeof(desc), ";desc=\"%s\"", r->db_server);
        snprintf(timing, sizeof(timing), "db;dur=%.3f%s, total;dur=%.3f", r->db_seconds * 1e3, desc,
                 clock_since(r->arrived) * 1e3);
        evhttp_add_header(out, "Server-Timing", timing);
    }
    if (r->db_lsn != 0) {
        char lsn[PGBIN_LSN_MAX];

        pgbin_lsn_format(r->db_lsn, lsn);
        evhttp_add_header(out, "Todod-Lsn", lsn);
    }
}

/* The one way out: counted, logged, freed. */
static void request_done(struct http_req *r, int status)
{
    double seconds = clock_since(r->arrived);

    conn_request_end(r->via->conns, r->conn);
    stats_http_observe(r->app->slot, r->route, r->method, status, (uint64_t)(seconds * 1e6));
    span_set_http_status(r->span, status);
    span_end(r->span);
    r->span = NULL;
    if (r->app->conf->access_log)
        access_log(r, status, seconds);
    request_free(r);
}

/* The answer's body, if any, is in the request's output buffer already. */
static void finish(struct http_req *r, int status)
{
    struct evbuffer *body = evhttp_request_get_output_buffer(r->req);

    add_common_headers(r);
    if (r->method == STATS_HEAD) {
        /* The headers a GET would get, its Content-Length included, no body:
         * libevent would send it. */
        char len[32];

        snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
        http_add_header(r, "Content-Length", len);
        evbuffer_drain(body, evbuffer_get_length(body));
    }
    r->bytes_sent = evbuffer_get_length(body);
    evhttp_send_reply(r->req, status, reason_phrase(status), NULL);
    request_done(r, status);
}

struct http_req *http_req_begin(const struct app_listener *via, struct evhttp_request *req)
{
    struct app *app = via->app;
    struct http_req *r = calloc(1, sizeof(*r));
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    struct conn_request cr;
    struct timespec now_wall;
    size_t plen;
    bool known;

    if (r == NULL) {
        /* Out of memory: still a JSON answer, not libevent's HTML page. */
        static const char oom[] = "{\"error\":\"internal error\"}";
        struct evbuffer *buf = evbuffer_new();

        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/json");
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        if (buf != NULL)
            evbuffer_add_reference(buf, oom, sizeof(oom) - 1, NULL, NULL);
        evhttp_send_reply(req, 500, "Internal Server Error", buf);
        if (buf != NULL)
            evbuffer_free(buf);
        return NULL;
    }
    app->requests_alive++;
    r->app = app;
    r->via = via;
    r->req = req;
    r->method = http_method_stats_index(evhttp_request_get_command(req));
    r->route = app->nroutes - 1; /* "other" until routed */
    known = conn_request_begin(via->conns, req, &cr);
    r->conn = cr.ref;
    r->arrived = known ? cr.arrived : clock_now();
    r->version_minor = known ? cr.version_minor : 1;
    clock_gettime(CLOCK_REALTIME, &now_wall);
    r->arrived_wall = clock_add(now_wall, -clock_since(r->arrived));
    if (evcon != NULL) {
        char *host = NULL;
        ev_uint16_t port;

        evhttp_connection_get_peer(evcon, &host, &port);
        snprintf(r->remote, sizeof(r->remote), "%s", host != NULL ? host : "-");
    }
    if (path == NULL || *path == '\0')
        path = "/";
    plen = strlen(path);
    /* The path, then room for the parameters cut out of it. */
    r->path = malloc(2 * plen + 2);
    if (r->path == NULL) {
        http_reply_error(r, 500, "internal error");
        return NULL;
    }
    memcpy(r->path, path, plen + 1);
    if (known && cr.reject_status != 0) {
        r->rejected_line = strdup(cr.line);
        if (r->rejected_line == NULL) {
            http_reply_error(r, 500, "internal error");
            return NULL;
        }
        r->method = stats_method_index(strtok(cr.line, " "));
        r->reject_status = cr.reject_status;
        r->reject_msg = cr.reject_msg;
        return r;
    }
    if (!known) {
        /* Not seen through the connection layer: nothing vouches for its framing. */
        r->rejected_line = strdup("-");
        http_reply_error(r, 503, "connection not accepted properly; try again");
        return NULL;
    }
    return r;
}

/* ---- replies ---- */

void http_reply_rejected(struct http_req *r)
{
    http_reply_error(r, r->reject_status, "%s", r->reject_msg);
}

void http_add_header(struct http_req *r, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

void http_reply_raw(struct http_req *r, int status, const char *content_type, const char *body,
                    size_t len)
{
    struct evbuffer *out = evhttp_request_get_output_buffer(r->req);

    /* Straight into the buffer evhttp sends from (HEAD: its length only). */
    if (evbuffer_add(out, body, len) != 0) {
        evbuffer_drain(out, evbuffer_get_length(out));
        finish(r, 500);
        return;
    }
    if (content_type != NULL)
        http_add_header(r, "Content-Type", content_type);
    finish(r, status);
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

void http_reply_error(struct http_req *r, int status, const char *fmt, ...)
{
    struct json_object *obj = json_object_new_object();
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (obj == NULL) {
        finish(r, 500);
        return;
    }
    /* The message may echo what a client sent (a path, a method) or be cut in
     * the middle of a character: JSON must carry valid UTF-8, and json-c does
     * not check, so anything else is escaped. */
    if (!utf8_valid(msg, strlen(msg))) {
        char safe[4 * sizeof(msg)];

        accesslog_escape(safe, sizeof(safe), msg, strlen(msg), 0);
        json_object_object_add(obj, "error", json_object_new_string(safe));
    } else {
        json_object_object_add(obj, "error", json_object_new_string(msg));
    }
    http_reply_json(r, status, obj);
}

void http_stream_start(struct http_req *r, int status, const char *content_type)
{
    http_add_header(r, "Content-Type", content_type);
    add_common_headers(r);
    evhttp_send_reply_start(r->req, status, reason_phrase(status));
}

void http_stream_write(struct http_req *r, const char *data, size_t len)
{
    struct evbuffer *buf = evbuffer_new();

    if (buf == NULL)
        return;
    if (evbuffer_add(buf, data, len) == 0) {
        r->bytes_sent += len;
        evhttp_send_reply_chunk(r->req, buf);
    }
    evbuffer_free(buf);
}

void http_stream_end(struct http_req *r)
{
    int status = evhttp_request_get_response_code(r->req);

    evhttp_send_reply_end(r->req);
    request_done(r, status);
}

void http_trace_start(struct http_req *r, const char *route)
{
    r->span = trace_http_server_start(r->app->tracer, r->req, route, &r->trace);
    span_set_start(r->span, r->arrived);
}

void http_db_wait(struct http_req *r)
{
    r->db_since = clock_now();
}

void http_db_done(struct http_req *r)
{
    r->db_seconds += clock_since(r->db_since);
}

void http_db_answered(struct http_req *r, bool standby, uint64_t lsn)
{
    http_db_done(r);
    r->db_server = standby ? "standby" : "primary";
    r->db_lsn = lsn;
}

const char *http_header(const struct http_req *r, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
}

/* ---- request bodies ---- */

struct json_object *http_read_json_object(struct http_req *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    size_t len = evbuffer_get_length(in);
    const char *body = len > 0 ? (const char *)evbuffer_pullup(in, -1) : "";
    struct json_object *obj;
    char err[256];
    int status = http_parse_json_body(http_header(r, "Content-Type"), body, len,
                                      r->app->conf->max_body_size, &obj, err, sizeof(err));

    if (status != 0) {
        http_reply_error(r, status, "%s", err);
        return NULL;
    }
    return obj;
}

/* ---- query strings ---- */

enum http_query_text http_query_text(struct http_req *r, const char *name, char **out)
{
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r->req));
    enum http_query_text rc = http_query_parse_text(query, name, out);

    if (rc == HTTP_QUERY_MALFORMED)
        http_reply_error(r, 400, "malformed query string");
    else if (rc == HTTP_QUERY_NOMEM)
        http_reply_error(r, 500, "internal error");
    return rc;
}

long http_query_long(struct http_req *r, const char *name, long def, long min, long max, bool clamp)
{
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r->req));
    char err[160];
    long v;

    if (http_query_parse_long(query, name, def, min, max, clamp, &v, err, sizeof(err)) != 0) {
        http_reply_error(r, 400, "%s", err);
        return -1;
    }
    return v;
}
