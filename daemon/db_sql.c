/*
 * The SQL of the database side: every statement of the API (db_statements),
 * todod's schema as one transaction that makes whatever is missing
 * (db_schema_sql), the cheap check of what is missing that each connection
 * runs first (db_schema_missing), and which SQLSTATEs say the schema is gone
 * or a pooler is in the way.
 */
#include "db_int.h"

#include <string.h>

/* ---- SQL ---------------------------------------------------------------- */

#define SCHEMA_VERSION "2"

/*
 * What of todod's schema is missing, as one text ('' when nothing is): one
 * cheap catalog query that takes no lock on todos. It looks at the objects
 * themselves, not only at the version marker, which outlives a table dropped
 * or replaced by the replaced service's own migration.
 */
#define SCHEMA_MISSING                                                                             \
    "concat_ws(', ',"                                                                              \
    " CASE WHEN NOT EXISTS (SELECT 1 FROM pg_proc WHERE"                                           \
    "  oid = to_regprocedure('todod_schema_version()') AND prosrc = 'SELECT " SCHEMA_VERSION "')"  \
    "  THEN 'todod_schema_version() " SCHEMA_VERSION "' END,"                                      \
    " CASE WHEN to_regclass('todos') IS NULL THEN 'table todos' END,"                              \
    " (SELECT string_agg('index ' || i, ', ') FROM unnest(ARRAY['idx_todos_done',"                 \
    "  'idx_todos_created_at', 'todod_todos_created_at_id']) i WHERE NOT EXISTS (SELECT 1"         \
    "  FROM pg_index WHERE indrelid = to_regclass('todos') AND indexrelid = to_regclass(i))),"     \
    " CASE WHEN to_regclass('todod_todo_count') IS NULL"                                           \
    "  OR to_regclass('todod_todo_count_slot') IS NULL THEN 'the count table' END,"                \
    " CASE WHEN to_regprocedure('todod_count_add(bigint)') IS NULL"                                \
    "  OR to_regprocedure('todod_count_unkept()') IS NULL THEN 'the count functions' END,"         \
    " CASE WHEN (" COUNT_TRIGGERS ") < 3 THEN 'the count triggers' END)"
/* todod's three count triggers on todos, enabled. */
#define COUNT_TRIGGERS                                                                             \
    "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('todos') AND tgname IN"           \
    " ('todod_count_insert', 'todod_count_delete', 'todod_count_truncate') AND tgenabled <> 'D'"
/* The list's own check, one index lookup: the insert trigger is on the todos
 * the statement was planned for (a table replaced plans it anew). */
#define COUNT_KEPT                                                                                 \
    "EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'todos'::regclass"                           \
    " AND tgname = 'todod_count_insert' AND tgenabled <> 'D')"

/* A list's exact total, served only while the count is kept (COUNT_KEPT). */
#define LIST_TOTAL                                                                                 \
    "CASE WHEN " COUNT_KEPT " THEN (SELECT coalesce(sum(n), 0) FROM todod_todo_count)"             \
    " ELSE todod_count_unkept() END::bigint"

/* The count triggers are gone (todos replaced): the count is not kept. */
#define SQLSTATE_COUNT_UNKEPT "TD001" /* common/sqlstate.c knows it too */

/*
 * Made sure of once: a connection first asks what is missing (SCHEMA_MISSING,
 * which takes no lock on todos); only when something is does it run this, in
 * one transaction, under an advisory lock (several workers or hosts starting
 * at once do not race) and a short lock_timeout (a session holding a lock on
 * todos makes it fail and retry later rather than queue behind it).
 *
 * The todos table and its two indexes are the replaced service's, unchanged.
 * todod adds an index on (created_at, id) for a stable newest-first order, and
 * an exact row count kept by statement-level triggers in a few rows of
 * todod_todo_count: each statement adds its delta to a row no other open
 * transaction holds (FOR UPDATE SKIP LOCKED), or to a new row when all are
 * held, so no writer ever waits for another's transaction to end, and sum(n)
 * is exact in every snapshot. Whatever is missing is made again; when the
 * triggers or the count table had to be, the table is counted anew under a lock
 * that keeps writers out meanwhile. The list's total is the count only while
 * the triggers are there; otherwise todod_count_unkept() raises (a table
 * replaced under a running todod).
 */
const char db_schema_sql[] =
    "BEGIN;"
    "SET LOCAL client_min_messages = warning;"
    "SET LOCAL lock_timeout = '2s';"
    "SELECT pg_advisory_xact_lock(2036106852);" /* "todo" */
    "DO $do$ DECLARE missing text; recount boolean; BEGIN"
    /* Another worker or host may have made it while this one waited. */
    " missing := (SELECT " SCHEMA_MISSING ");"
    " IF missing = '' THEN RETURN; END IF;"
    " recount := to_regclass('todod_todo_count') IS NULL"
    "  OR to_regclass('todod_todo_count_slot') IS NULL;"
    " CREATE TABLE IF NOT EXISTS todos ("
    "  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    "  title varchar(255) NOT NULL,"
    "  done boolean NOT NULL DEFAULT false,"
    "  created_at timestamptz DEFAULT now(),"
    "  updated_at timestamptz DEFAULT now());"
    " CREATE INDEX IF NOT EXISTS idx_todos_done ON todos (done);"
    " CREATE INDEX IF NOT EXISTS idx_todos_created_at ON todos (created_at);"
    " CREATE INDEX IF NOT EXISTS todod_todos_created_at_id ON todos (created_at, id);"
    " CREATE TABLE IF NOT EXISTS todod_todo_count (slot int PRIMARY KEY, n bigint NOT NULL);"
    " CREATE SEQUENCE IF NOT EXISTS todod_todo_count_slot START 1000;"
    " CREATE OR REPLACE FUNCTION todod_count_add(d bigint) RETURNS void LANGUAGE plpgsql AS $f$"
    "  BEGIN"
    "   IF d = 0 THEN RETURN; END IF;"
    "   UPDATE todod_todo_count SET n = n + d WHERE slot ="
    "    (SELECT slot FROM todod_todo_count FOR UPDATE SKIP LOCKED LIMIT 1);"
    "   IF NOT FOUND THEN"
    "    INSERT INTO todod_todo_count (slot, n) VALUES (nextval('todod_todo_count_slot'), d);"
    "   END IF;"
    "  END $f$;"
    " CREATE OR REPLACE FUNCTION todod_count_unkept() RETURNS bigint LANGUAGE plpgsql AS $f$"
    "  BEGIN"
    "   RAISE EXCEPTION 'todod''s count triggers on todos are missing'"
    "    USING ERRCODE = '" SQLSTATE_COUNT_UNKEPT "';"
    "  END $f$;"
    " CREATE OR REPLACE FUNCTION todod_count_insert() RETURNS trigger LANGUAGE plpgsql AS $f$"
    "  BEGIN PERFORM todod_count_add((SELECT count(*) FROM todod_new)); RETURN NULL; END $f$;"
    " CREATE OR REPLACE FUNCTION todod_count_delete() RETURNS trigger LANGUAGE plpgsql AS $f$"
    "  BEGIN PERFORM todod_count_add(-(SELECT count(*) FROM todod_old)); RETURN NULL; END $f$;"
    " CREATE OR REPLACE FUNCTION todod_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $f$"
    "  BEGIN DELETE FROM todod_todo_count; RETURN NULL; END $f$;"
    " IF recount OR (" COUNT_TRIGGERS ") < 3 THEN"
    "  LOCK TABLE todos IN SHARE ROW EXCLUSIVE MODE;"
    "  DROP TRIGGER IF EXISTS todod_count_insert ON todos;"
    "  DROP TRIGGER IF EXISTS todod_count_delete ON todos;"
    "  DROP TRIGGER IF EXISTS todod_count_truncate ON todos;"
    "  DELETE FROM todod_todo_count;"
    "  INSERT INTO todod_todo_count SELECT 0, count(*) FROM todos;"
    "  CREATE TRIGGER todod_count_insert AFTER INSERT ON todos"
    "   REFERENCING NEW TABLE AS todod_new FOR EACH STATEMENT"
    "   EXECUTE FUNCTION todod_count_insert();"
    "  CREATE TRIGGER todod_count_delete AFTER DELETE ON todos"
    "   REFERENCING OLD TABLE AS todod_old FOR EACH STATEMENT"
    "   EXECUTE FUNCTION todod_count_delete();"
    "  CREATE TRIGGER todod_count_truncate AFTER TRUNCATE ON todos"
    "   FOR EACH STATEMENT EXECUTE FUNCTION todod_count_truncate();"
    "  RAISE WARNING 'counted todos anew: % rows', (SELECT n FROM todod_todo_count);"
    " END IF;"
    " IF missing LIKE 'todod_schema_version() %' THEN"
    "  RAISE WARNING 'created the todod schema, version " SCHEMA_VERSION "';"
    " ELSE"
    "  RAISE WARNING 'made the todod schema whole again (it missed %)', missing;"
    " END IF;"
    " CREATE OR REPLACE FUNCTION todod_schema_version() RETURNS int LANGUAGE sql IMMUTABLE"
    "  AS 'SELECT " SCHEMA_VERSION "';"
    "END $do$;"
    "COMMIT;";

/* What of the schema is missing, for the set-up string (db_pool_new). */
const char db_schema_missing[] = SCHEMA_MISSING;

/*
 * DB_LSN_COLUMN: one expression for the primary and a standby, evaluated
 * after the statement's snapshot was taken, so an upper bound of the commits
 * it sees: a later read from a server at or past it sees all it showed. On the
 * primary the insert position, which is past every commit record inserted
 * (and so past every commit visible) whatever synchronous_commit says.
 */
#define LSN_NOW                                                                                    \
    "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"                                  \
    " ELSE pg_current_wal_insert_lsn() END AS " DB_LSN_COLUMN ","                                  \
    " pg_is_in_recovery() AS " DB_RECOVERY_COLUMN

/* The columns of a todo, answered in the binary format (every statement's
 * results are): the server writes no text, and todos.c formats the id and the
 * timestamps, which to_char() in every row cost the server more than the rest
 * of a lookup by id. */
#define TODO_COLUMN_FIRST(name, sql) sql
#define TODO_COLUMN_NEXT(name, sql)  ", " sql
#define TODO_COLUMNS                 DB_TODO_COLUMNS(TODO_COLUMN_FIRST, TODO_COLUMN_NEXT)

const char *const db_operations[DB_NSTMTS] = {
    [DB_TODO_GET] = "SELECT",        [DB_TODO_LIST] = "SELECT",   [DB_TODO_BY_DONE] = "SELECT",
    [DB_WAL_LSN] = "SELECT",         [DB_WAL_SAMPLE] = "SELECT",  [DB_TODO_AFTER] = "SELECT",
    [DB_TODO_AFTER_NULL] = "SELECT", [DB_TODO_INSERT] = "INSERT", [DB_TODO_UPDATE] = "UPDATE",
    [DB_TODO_DELETE] = "DELETE",     [DB_PERF_INSERT] = "INSERT",
};

const struct db_statement db_statements[DB_NSTMTS] = {
    /* One row, of NULL todo columns when there is no such todo. */
    [DB_TODO_GET] = {"todo_get",
                     "SELECT " TODO_COLUMNS ", l." DB_LSN_COLUMN ", l." DB_RECOVERY_COLUMN " FROM"
                     " (SELECT " LSN_NOW ") l LEFT JOIN todos ON id = $1"},
    /* One row per todo of the page, each carrying the total; a single row of
     * NULL todo columns when the page is empty. */
    [DB_TODO_LIST] = {"todo_list",
                      "SELECT " TODO_COLUMNS ", c.total, c." DB_LSN_COLUMN ", c." DB_RECOVERY_COLUMN
                      " FROM"
                      " (SELECT " LIST_TOTAL " AS total, " LSN_NOW ") c"
                      " LEFT JOIN LATERAL (SELECT * FROM todos ORDER BY created_at DESC, id DESC"
                      " LIMIT $1 OFFSET $2) t ON true"},
    /* The same rows, the $3 after the key ($1, $2): one range of the
     * (created_at, id) index, O(log n + $3) at any depth. */
    [DB_TODO_AFTER] = {"todo_after",
                       "SELECT " TODO_COLUMNS ", c.total, c." DB_LSN_COLUMN
                       ", c." DB_RECOVERY_COLUMN " FROM"
                       " (SELECT " LIST_TOTAL " AS total, " LSN_NOW ") c"
                       " LEFT JOIN LATERAL (SELECT * FROM todos WHERE (created_at, id) < ($1, $2)"
                       " ORDER BY created_at DESC, id DESC LIMIT $3) t ON true"},
    /* After the key (NULL, $1): NULL times come first in this order, so the
     * NULL ones of lower id, then every other; two ranges, merged. */
    [DB_TODO_AFTER_NULL] = {"todo_after_null",
                            "SELECT " TODO_COLUMNS ", c.total, c." DB_LSN_COLUMN
                            ", c." DB_RECOVERY_COLUMN " FROM"
                            " (SELECT " LIST_TOTAL " AS total, " LSN_NOW ") c"
                            " LEFT JOIN LATERAL ((SELECT * FROM todos WHERE created_at IS NULL"
                            " AND id < $1 ORDER BY created_at DESC, id DESC LIMIT $2)"
                            " UNION ALL (SELECT * FROM todos WHERE created_at IS NOT NULL"
                            " ORDER BY created_at DESC, id DESC LIMIT $2)"
                            " ORDER BY created_at DESC, id DESC LIMIT $2) t ON true"},
    [DB_TODO_BY_DONE] = {"todo_by_done",
                         "SELECT " TODO_COLUMNS ", l." DB_LSN_COLUMN ", l." DB_RECOVERY_COLUMN
                         " FROM (SELECT " LSN_NOW ") l"
                         " LEFT JOIN LATERAL (SELECT * FROM todos WHERE done = $1"
                         " ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3) t ON true"},
    [DB_WAL_LSN] = {"wal_lsn", "SELECT " LSN_NOW},
    /* Whether the server is a standby, and its replay position, or the
     * primary's current (written) position: what the sampler compares. */
    [DB_WAL_SAMPLE] = {"wal_sample",
                       "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery()"
                       " THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END"},
    [DB_TODO_INSERT] = {"todo_insert", "INSERT INTO todos (id, title, done) VALUES ($1, $2, $3)"
                                       " RETURNING " TODO_COLUMNS},
    [DB_TODO_UPDATE] = {"todo_update",
                        "UPDATE todos SET title = coalesce($2, title), done = coalesce($3, done),"
                        " updated_at = now() WHERE id = $1 RETURNING " TODO_COLUMNS},
    [DB_TODO_DELETE] = {"todo_delete", "DELETE FROM todos WHERE id = $1"},
    /* Set-returning functions in the select list, which run in step (the
     * arrays are as long as each other): unnest() in FROM would first copy
     * every row into a tuplestore, more work for the server. */
    [DB_PERF_INSERT] = {"perf_insert",
                        "INSERT INTO todos (id, title, done) SELECT unnest($1::uuid[]),"
                        " unnest($2::varchar[]), unnest($3::bool[])"},
};

/* The statement found todod's table, function or count triggers gone. */
bool db_schema_gone(const char *state)
{
    return strcmp(state, "42P01") == 0 || strcmp(state, "42883") == 0 ||
           strcmp(state, SQLSTATE_COUNT_UNKEPT) == 0;
}

/* A prepared statement missing, or already there, on the server connection:
 * db_prepared = on through a pooler that shares server connections. */
bool db_pooler_symptom(const char *state)
{
    return strcmp(state, "26000") == 0 || strcmp(state, "42P05") == 0;
}
