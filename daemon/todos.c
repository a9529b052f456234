#include "todos.h"

#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#include "clock.h"
#include "conf.h"
#include "cursor.h"
#include "db.h"
#include "pgbin.h"
#include "utf8.h"

#define TITLE_MAX      255
#define PAGE_MAX       100000000L
#define LIST_LIMIT     10L  /* GET /todos: limit's default, */
#define LIST_LIMIT_MAX 100L /* and where it is clamped */

/* The value at (row, col) when it is not NULL and is len bytes (0: any length). */
static const char *binary_value(const PGresult *res, int row, int col, int len)
{
    if (PQgetisnull(res, row, col) || (len > 0 && PQgetlength(res, row, col) != len))
        return NULL;
    return PQgetvalue(res, row, col);
}

/* The id as text, in out[37]; false when there is none. */
static bool id_text(const PGresult *res, int row, char out[37])
{
    const char *v = binary_value(res, row, DB_COL_ID, 16);

    if (v == NULL)
        return false;
    uuid_unparse_lower((const unsigned char *)v, out);
    return true;
}

static struct json_object *id_json(const PGresult *res, int row)
{
    char id[37];

    return id_text(res, row, id) ? json_object_new_string_len(id, 36) : NULL;
}

static struct json_object *text_json(const PGresult *res, int row, int col)
{
    const char *v = binary_value(res, row, col, 0);

    return v ? json_object_new_string_len(v, PQgetlength(res, row, col)) : NULL;
}

/* As to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') wrote it
 * (null for NULL and the infinities). */
static struct json_object *time_json(const PGresult *res, int row, int col)
{
    const char *v = binary_value(res, row, col, 8);
    char text[PGBIN_TIMESTAMP_MAX];
    size_t n = v ? pgbin_timestamp(pgbin_int64(v), text) : 0;

    return n ? json_object_new_string_len(text, (int)n) : NULL;
}

static struct json_object *todo_json(const PGresult *res, int row)
{
    struct json_object *o = json_object_new_object();
    const char *done = binary_value(res, row, DB_COL_DONE, 1);

    if (o == NULL)
        return NULL;
    json_object_object_add(o, "id", id_json(res, row));
    json_object_object_add(o, "title", text_json(res, row, DB_COL_TITLE));
    json_object_object_add(o, "done", json_object_new_boolean(done != NULL && *done != 0));
    json_object_object_add(o, "created_at", time_json(res, row, DB_COL_CREATED));
    json_object_object_add(o, "updated_at", time_json(res, row, DB_COL_UPDATED));
    return o;
}

/*
 * The answer to a query that did not succeed. Each 503 says what a client may
 * conclude about a write (API.md "Writes, time-outs and lost connections").
 */
static void reply_db_status(struct http_req *r, enum db_status st)
{
    switch (st) {
    case DB_UNAVAILABLE: /* never sent: not applied */
        http_reply_error(r, 503, "database unavailable");
        break;
    case DB_TIMEOUT: /* rolled back by the server, or never sent: not applied */
        http_reply_error(r, 503, "database did not answer in time");
        break;
    case DB_LOST: /* sent, then the connection broke: unknown */
        http_reply_error(r, 503, "database connection lost; the write may have been applied");
        break;
    default:
        http_reply_error(r, 500, "internal error");
        break;
    }
}

/* The database answered: its time, and who served it at what position. */
static void db_answered(struct http_req *r, const struct db_result *dr)
{
    if (dr->status == DB_OK)
        http_db_answered(r, dr->standby, dr->lsn);
    else
        http_db_done(r);
}

/*
 * The request's Todod-After (API.md "Read consistency"): the WAL position
 * its read must be at or past, 0 when it names none. Answers 400 itself and
 * returns false when the header is not an LSN.
 */
static bool parse_after_lsn(struct http_req *r, uint64_t *after)
{
    const char *v = http_header(r, "Todod-After");

    *after = 0;
    if (v == NULL)
        return true;
    if (!pgbin_lsn_parse(v, strlen(v), after)) {
        http_reply_error(r, 400, "invalid Todod-After: expected a WAL position as X/Y in hex");
        return false;
    }
    return true;
}

static void submit(struct http_req *r, enum db_stmt stmt, const struct db_params *p, db_done_cb cb)
{
    struct timespec deadline = clock_add(r->arrived, r->app->conf->request_timeout);
    uint64_t after = 0;

    if (!db_is_read(stmt) || parse_after_lsn(r, &after)) {
        http_db_wait(r);
        if (db_submit(r->app->db, stmt, p, deadline, after, HTTP_DB_TRACE(r), cb, r) != 0)
            http_reply_error(r, 503, "database unavailable");
    }
}

/* Copies the canonical lower-case form of the {id} parameter into out, or answers 400. */
static bool parse_id(struct http_req *r, char out[37])
{
    uuid_t uu;

    if (strlen(r->params[0]) != 36 || uuid_parse(r->params[0], uu) != 0) {
        http_reply_error(r, 400, "invalid todo id: expected a UUID");
        return false;
    }
    uuid_unparse_lower(uu, out);
    return true;
}

/* ---- body validation ---- */

struct todo_input {
    const char *title; /* NULL when absent */
    int done;          /* -1 when absent */
};

/* Validates the fields of a POST or PUT body; answers 400/422 itself. */
static bool parse_todo_input(struct http_req *r, struct json_object *body, bool title_required,
                             struct todo_input *in)
{
    struct json_object *title, *done;

    in->title = NULL;
    in->done = -1;
    if (json_object_object_get_ex(body, "title", &title)) {
        const char *s;
        size_t len, chars;

        if (!json_object_is_type(title, json_type_string)) {
            http_reply_error(r, 422, "title must be a string");
            return false;
        }
        s = json_object_get_string(title);
        len = (size_t)json_object_get_string_len(title);
        if (!utf8_valid(s, len)) {
            http_reply_error(r, 400, "title is not valid UTF-8 (unpaired surrogate escape?)");
            return false;
        }
        if (memchr(s, '\0', len) != NULL) {
            http_reply_error(r, 422, "title must not contain NUL characters");
            return false;
        }
        chars = utf8_length(s, len);
        if (chars < 1 || chars > TITLE_MAX) {
            http_reply_error(r, 422, "title must be 1 to %d characters (got %zu)", TITLE_MAX,
                             chars);
            return false;
        }
        in->title = s;
    } else if (title_required) {
        http_reply_error(r, 422, "title is required");
        return false;
    }
    if (json_object_object_get_ex(body, "done", &done)) {
        if (!json_object_is_type(done, json_type_boolean)) {
            http_reply_error(r, 422, "done must be a boolean");
            return false;
        }
        in->done = json_object_get_boolean(done);
    }
    return true;
}

/* ---- single todo ---- */

static void reply_one(void *arg, const struct db_result *dr, int code)
{
    struct http_req *r = arg;
    enum db_status st = dr->status;
    const PGresult *res = dr->res;

    db_answered(r, dr);
    if (st != DB_OK) {
        reply_db_status(r, st);
        return;
    }
    if (PQntuples(res) == 0 || PQgetisnull(res, 0, DB_COL_ID)) { /* a read: one row of NULLs */
        http_reply_error(r, 404, "not found");
        return;
    }
    if (code == 201) {
        char location[64], id[37];

        if (id_text(res, 0, id)) {
            snprintf(location, sizeof(location), "/todos/%s", id);
            http_add_header(r, "Location", location);
        }
    }
    http_reply_json(r, code, todo_json(res, 0));
}

static void todo_found(void *arg, const struct db_result *dr)
{
    reply_one(arg, dr, 200);
}

static void todo_created(void *arg, const struct db_result *dr)
{
    reply_one(arg, dr, 201);
}

void todos_get(struct http_req *r)
{
    char id[37];
    const char *values[] = {id};
    struct db_params p = {1, values, NULL, NULL};

    if (parse_id(r, id))
        submit(r, DB_TODO_GET, &p, todo_found);
}

void todos_create(struct http_req *r)
{
    struct json_object *body = http_read_json_object(r);
    struct todo_input in;
    uuid_t uu;
    char id[37];
    const char *values[3];
    struct db_params p = {3, values, NULL, NULL};

    if (body == NULL)
        return;
    if (parse_todo_input(r, body, true, &in)) {
        uuid_generate_random(uu);
        uuid_unparse_lower(uu, id);
        values[0] = id;
        values[1] = in.title;
        values[2] = in.done == 1 ? "true" : "false";
        submit(r, DB_TODO_INSERT, &p, todo_created);
    }
    json_object_put(body);
}

void todos_update(struct http_req *r)
{
    struct json_object *body;
    struct todo_input in;
    char id[37];
    const char *values[3];
    struct db_params p = {3, values, NULL, NULL};

    if (!parse_id(r, id))
        return;
    body = http_read_json_object(r);
    if (body == NULL)
        return;
    if (parse_todo_input(r, body, false, &in)) {
        values[0] = id;
        values[1] = in.title;
        values[2] = in.done < 0 ? NULL : in.done ? "true" : "false";
        submit(r, DB_TODO_UPDATE, &p, todo_found);
    }
    json_object_put(body);
}

static void todo_deleted(void *arg, const struct db_result *dr)
{
    struct http_req *r = arg;
    enum db_status st = dr->status;
    const PGresult *res = dr->res;

    db_answered(r, dr);
    if (st != DB_OK)
        reply_db_status(r, st);
    else if (strcmp(PQcmdTuples((PGresult *)res), "0") == 0)
        http_reply_error(r, 404, "not found");
    else
        http_reply_raw(r, 204, NULL, "", 0);
}

void todos_delete(struct http_req *r)
{
    char id[37];
    const char *values[] = {id};
    struct db_params p = {1, values, NULL, NULL};

    if (parse_id(r, id))
        submit(r, DB_TODO_DELETE, &p, todo_deleted);
}

/* ---- lists ---- */

/* A list request: a page by number, or a keyset page (page 0) after a cursor. */
struct page {
    long page, limit;
    struct cursor_key after;
};

/* The todo rows of a list result: none when the page is empty, whose one row
 * (the LEFT JOIN's) has NULL todo columns. */
static int todo_rows(const PGresult *res)
{
    int n = PQntuples(res);

    return n == 1 && PQgetisnull(res, 0, DB_COL_ID) ? 0 : n;
}

/* The first n todo rows of res as a JSON array. */
static struct json_object *rows_json(const PGresult *res, int n)
{
    struct json_object *arr = json_object_new_array();
    int i;

    for (i = 0; arr != NULL && i < n; i++)
        if (!PQgetisnull(res, i, DB_COL_ID))
            json_object_array_add(arr, todo_json(res, i));
    return arr;
}

static void page_cleanup(struct http_req *r)
{
    free(r->data);
}

/* Keeps pg as the request's data. */
static bool page_keep(struct http_req *r, const struct page *pg)
{
    struct page *copy = malloc(sizeof(*copy));

    if (copy == NULL) {
        http_reply_error(r, 500, "internal error");
        return false;
    }
    *copy = *pg;
    r->data = copy;
    r->cleanup = page_cleanup;
    return true;
}

/* Reads page and limit into r->data; answers 400 itself (freeing r) and
 * returns false when one is bad. */
static bool parse_page(struct http_req *r, long def_limit, long max_limit)
{
    struct page pg = {0};

    pg.page = http_query_long(r, "page", 1, 1, PAGE_MAX, false);
    if (pg.page < 0)
        return false;
    pg.limit = http_query_long(r, "limit", def_limit, 1, max_limit, true);
    if (pg.limit < 0)
        return false;
    return page_keep(r, &pg);
}

/* Reads the cursor after (NULL: its value held a NUL byte) and limit into
 * r->data; answers 400 itself and returns false when one is bad, or when page
 * is given too. */
static bool parse_after(struct http_req *r, const char *after)
{
    struct page pg = {0};
    char *page;

    switch (http_query_text(r, "page", &page)) {
    case HTTP_QUERY_ABSENT:
        break;
    case HTTP_QUERY_FOUND:
    case HTTP_QUERY_NUL:
        free(page);
        http_reply_error(r, 400, "after and page cannot be used together");
        return false;
    default: /* answered */
        return false;
    }
    if (after == NULL || cursor_decode(after, strlen(after), &pg.after) != CURSOR_OK) {
        http_reply_error(r, 400, "invalid cursor");
        return false;
    }
    pg.limit = http_query_long(r, "limit", LIST_LIMIT, 1, LIST_LIMIT_MAX, true);
    if (pg.limit < 0)
        return false;
    return page_keep(r, &pg);
}

/* The key of a todo row, for the cursor that names it. */
static bool row_key(const PGresult *res, int row, struct cursor_key *k)
{
    const char *id = binary_value(res, row, DB_COL_ID, 16);
    const char *created = binary_value(res, row, DB_COL_CREATED, 8);

    if (id == NULL || (created == NULL && !PQgetisnull(res, row, DB_COL_CREATED)))
        return false;
    k->created_null = created == NULL;
    k->created_at = created ? pgbin_int64(created) : 0;
    memcpy(k->id, id, 16);
    return true;
}

/* pagination.next_cursor and the Link header, naming the row last shown. */
static void add_next(struct http_req *r, struct json_object *pagination, const PGresult *res,
                     int last, long limit)
{
    struct cursor_key k;
    char cursor[CURSOR_LEN + 1], link[CURSOR_LEN + 64];

    if (last < 0 || !row_key(res, last, &k))
        return;
    cursor_encode(&k, cursor);
    json_object_object_add(pagination, "next_cursor", json_object_new_string(cursor));
    snprintf(link, sizeof(link), "</todos?after=%s&limit=%ld>; rel=\"next\"", cursor, limit);
    http_add_header(r, "Link", link);
}

static void list_done(void *arg, const struct db_result *dr)
{
    struct http_req *r = arg;
    enum db_status st = dr->status;
    const PGresult *res = dr->res;
    struct page *pg = r->data;
    struct json_object *o, *pagination;
    long long total = 0, pages;
    int shown;
    bool has_next;
    const char *v;

    db_answered(r, dr);
    if (st != DB_OK) {
        reply_db_status(r, st);
        return;
    }
    if (PQntuples(res) > 0 && (v = binary_value(res, 0, DB_COL_TOTAL, 8)) != NULL)
        total = pgbin_int64(v);
    shown = todo_rows(res);
    pagination = json_object_new_object();
    if (pg->page > 0) {
        pages = (total + pg->limit - 1) / pg->limit;
        has_next = pg->page < pages;
        json_object_object_add(pagination, "page", json_object_new_int64(pg->page));
        json_object_object_add(pagination, "limit", json_object_new_int64(pg->limit));
        json_object_object_add(pagination, "total", json_object_new_int64(total));
        json_object_object_add(pagination, "total_pages", json_object_new_int64(pages));
        json_object_object_add(pagination, "has_next", json_object_new_boolean(has_next));
        json_object_object_add(pagination, "has_prev", json_object_new_boolean(pg->page > 1));
    } else {
        /* A keyset page asks for one row more than it shows: whether there is a next. */
        has_next = shown > pg->limit;
        if (has_next)
            shown = (int)pg->limit;
        json_object_object_add(pagination, "limit", json_object_new_int64(pg->limit));
        json_object_object_add(pagination, "total", json_object_new_int64(total));
        json_object_object_add(pagination, "has_next", json_object_new_boolean(has_next));
    }
    if (has_next)
        add_next(r, pagination, res, shown - 1, pg->limit);
    o = json_object_new_object();
    json_object_object_add(o, "data", rows_json(res, shown));
    json_object_object_add(o, "pagination", pagination);
    http_reply_json(r, 200, o);
}

/* Sends a page query: its parameters are [filter,] limit, offset. */
static void submit_page(struct http_req *r, enum db_stmt stmt, const char *filter, db_done_cb cb)
{
    const struct page *pg = r->data;
    char limit[24], offset[24];
    const char *values[3];
    struct db_params p = {0, values, NULL, NULL};

    snprintf(limit, sizeof(limit), "%ld", pg->limit);
    snprintf(offset, sizeof(offset), "%ld", (pg->page - 1) * pg->limit);
    if (filter != NULL)
        values[p.n++] = filter;
    values[p.n++] = limit;
    values[p.n++] = offset;
    submit(r, stmt, &p, cb);
}

/* Sends a keyset page query: [created_at (binary),] id (binary), limit + 1; a
 * NULL time has a statement of its own (NULL is no bound in SQL). */
static void submit_after(struct http_req *r)
{
    const struct page *pg = r->data;
    char created[8], limit[24];
    const char *values[3];
    int lengths[3], formats[3] = {1, 1, 0};
    struct db_params p = {0, values, lengths, formats};
    uint64_t t = (uint64_t)pg->after.created_at;
    int i;

    if (!pg->after.created_null) {
        for (i = 0; i < 8; i++)
            created[i] = (char)(t >> (56 - 8 * i));
        values[p.n] = created;
        lengths[p.n++] = 8;
    }
    values[p.n] = (const char *)pg->after.id;
    lengths[p.n++] = 16;
    snprintf(limit, sizeof(limit), "%ld", pg->limit + 1);
    values[p.n] = limit;
    formats[p.n] = 0;
    lengths[p.n++] = 0;
    submit(r, pg->after.created_null ? DB_TODO_AFTER_NULL : DB_TODO_AFTER, &p, list_done);
}

void todos_list(struct http_req *r)
{
    char *after;

    switch (http_query_text(r, "after", &after)) {
    case HTTP_QUERY_ABSENT:
        if (parse_page(r, LIST_LIMIT, LIST_LIMIT_MAX))
            submit_page(r, DB_TODO_LIST, NULL, list_done);
        break;
    case HTTP_QUERY_FOUND:
    case HTTP_QUERY_NUL:
        if (parse_after(r, after))
            submit_after(r);
        free(after);
        break;
    default: /* answered */
        break;
    }
}

static void by_done_listed(void *arg, const struct db_result *dr)
{
    struct http_req *r = arg;
    enum db_status st = dr->status;
    const PGresult *res = dr->res;

    db_answered(r, dr);
    if (st != DB_OK)
        reply_db_status(r, st);
    else
        http_reply_json(r, 200, rows_json(res, todo_rows(res)));
}

void todos_by_done(struct http_req *r)
{
    const char *done = r->params[0];

    if (strcmp(done, "true") != 0 && strcmp(done, "false") != 0) {
        http_reply_error(r, 400, "done must be true or false");
        return;
    }
    if (parse_page(r, 100, 1000))
        submit_page(r, DB_TODO_BY_DONE, done, by_done_listed);
}
