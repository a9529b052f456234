"""The HTTP API contract (shared spec API.md): every route's success path, titles
that must round-trip intact, pagination, every row of the error table, the
replaced service's curl commands, concurrency, route-pattern metrics, and how the
asynchronous database pipeline behaves around locks, timeouts and failing queries."""

import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid

from lib.env import free_port
from lib.marks import test
from lib.pg import get_pg
from lib.todod import Todod
from lib.load import run_threads
from lib.checks import assert_json_error, wait_until
from lib.metrics import metric, parse_metrics

UUID_V4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
TODO_FIELDS = {"id", "title", "done", "created_at", "updated_at"}
ABSENT_ID = "00000000-0000-4000-8000-000000000000"


# --------------------------------------------------------------------------- helpers

def assert_todo_shape(t):
    assert isinstance(t, dict) and set(t) == TODO_FIELDS, "todo fields: %r" % (t,)
    assert isinstance(t["id"], str) and UUID_V4_RE.match(t["id"]), "id: %r" % t["id"]
    assert isinstance(t["title"], str), t
    assert isinstance(t["done"], bool), t
    for k in ("created_at", "updated_at"):
        assert isinstance(t[k], str) and TIMESTAMP_RE.match(t[k]), "%s: %r" % (k, t[k])


def create(c, title, done=None, raw_utf8=False):
    """POST /todos through c (a Todod or a Client); asserts 201 and returns the todo."""
    body = {"title": title}
    if done is not None:
        body["done"] = done
    if raw_utf8:
        r = c.request("POST", "/todos", body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                      headers={"Content-Type": "application/json"})
    else:
        r = c.request("POST", "/todos", body=body)
    assert r.status == 201, "POST /todos %r: %r" % (body, r)
    t = r.json()
    assert_todo_shape(t)
    assert t["title"] == title, "created title %r, sent %r" % (t["title"], title)
    assert t["done"] is bool(done), t
    return t


def get_todo(c, tid):
    r = c.request("GET", "/todos/" + tid)
    assert r.status == 200, "GET /todos/%s: %r" % (tid, r)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    t = r.json()
    assert_todo_shape(t)
    return t


def list_todos(c, query=""):
    r = c.request("GET", "/todos" + query)
    assert r.status == 200, "GET /todos%s: %r" % (query, r)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"data", "pagination"}, body
    for t in body["data"]:
        assert_todo_shape(t)
    return body


def sql(d, text):
    return d.pg.psql(text, db=d.db)


def row_count(d):
    return int(sql(d, "SELECT count(*) FROM todos"))


def sql_literal(s):
    return "'" + s.replace("'", "''") + "'"


def db_title(d, tid):
    return sql(d, "SELECT title FROM todos WHERE id = %s" % sql_literal(tid))


def insert_rows(d, n, done="false", prefix="row"):
    """n rows straight into the table (the count triggers see them too)."""
    sql(d, "INSERT INTO todos (title, done) SELECT '%s ' || g, %s FROM generate_series(1, %d) g"
        % (prefix, done, n))


def ordered_ids(d, where=""):
    out = sql(d, "SELECT id FROM todos %s ORDER BY created_at DESC, id DESC" % where)
    return out.split() if out else []


def raise_errors(results):
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise AssertionError("%d of %d threads failed; first: %r" % (len(errors), len(results),
                                                                     errors[0])) from errors[0]


def lock_todos(d, seconds):
    """Another session takes ACCESS EXCLUSIVE on todos for `seconds`; returns its
    Popen once the lock is granted."""
    return d.pg.lock_bg(d.db, seconds)


def waiting_on_lock(d):
    """Some session of this database waits for a lock (a todod query queued behind it)."""
    return int(sql(d, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND wait_event_type = 'Lock'")) >= 1


def in_background(fn):
    """Start fn() in a thread; returns (thread, result dict with resp/error/elapsed)."""
    result = {}

    def body():
        t0 = time.monotonic()
        try:
            result["resp"] = fn()
        except Exception as e:  # noqa: BLE001 - reported by the caller
            result["error"] = e
        result["elapsed"] = time.monotonic() - t0

    th = threading.Thread(target=body)
    th.start()
    return th, result


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def start(d, **kw):
    """d.start(), then wait until every worker has its database connection:
    Todod.start (lib/todod.py) returns at the first GET /health that answers 200, which
    one worker may give while another is still connecting (and would answer 503)."""
    d.start(**kw)
    return wait_connected(d)


def wait_connected(d):
    want = int(d.conf.get("workers", 2))

    def all_connected():
        ws = d.stats()["workers"]
        return len(ws) == want and all(w["db_connected"] for w in ws)

    assert wait_until(all_connected, 10), "workers not all connected: %r" % d.stats()["workers"]
    return d


def error_lines(log):
    """Log lines at level error, and what a crash would print."""
    return [l for l in log.splitlines()
            if "] error: " in l or re.search(r"\b(fatal|panic|segfault)\b", l, re.I)]


# --------------------------------------------------------------------------- success paths

@test
def post_creates_todo_201_with_location_and_canonical_fields():
    with Todod() as d:
        start(d)
        r = d.request("POST", "/todos", body={"title": "buy milk"})
        assert r.status == 201, r
        assert r.headers.get("content-type", "").startswith("application/json"), r.headers
        t = r.json()
        assert_todo_shape(t)
        assert t["title"] == "buy milk" and t["done"] is False, t
        assert t["created_at"] == t["updated_at"], t
        assert r.headers.get("location") == "/todos/" + t["id"], r.headers
        assert str(uuid.UUID(t["id"])) == t["id"] and uuid.UUID(t["id"]).version == 4, t["id"]
        assert sql(d, "SELECT title || '|' || done FROM todos WHERE id = '%s'" % t["id"]) \
            == "buy milk|false"
        assert d.stop() == 0


@test
def post_with_done_true_stores_done():
    with Todod() as d:
        start(d)
        t = create(d, "already done", done=True)
        assert sql(d, "SELECT done FROM todos WHERE id = '%s'" % t["id"]) == "t"
        assert get_todo(d, t["id"])["done"] is True
        assert d.stop() == 0


@test
def post_with_charset_in_content_type_is_accepted():
    with Todod() as d:
        start(d)
        r = d.request("POST", "/todos", body=json.dumps({"title": "cs"}),
                      headers={"Content-Type": "application/json; charset=utf-8"})
        assert r.status == 201, r
        assert r.json()["title"] == "cs"
        assert d.stop() == 0


@test
def get_by_id_returns_the_created_todo():
    with Todod() as d:
        start(d)
        created = create(d, "read me")
        create(d, "another one")
        assert get_todo(d, created["id"]) == created
        assert d.stop() == 0


@test
def get_by_upper_case_id_returns_canonical_id():
    with Todod() as d:
        start(d)
        created = create(d, "case")
        got = get_todo(d, created["id"].upper())
        assert got == created, (got, created)
        assert d.stop() == 0


@test
def head_routes_answer_like_get_without_body():
    with Todod() as d:
        start(d)
        r = d.request("HEAD", "/health")
        assert r.status == 200, r
        assert r.body == b"", r.body
        assert r.headers.get("content-type", "").startswith("text/plain"), r.headers
        t = create(d, "head")
        r = d.request("HEAD", "/todos/" + t["id"])
        assert r.status == 200 and r.body == b"", r
        assert r.headers.get("content-type", "").startswith("application/json"), r.headers
        r = d.request("HEAD", "/todos/" + ABSENT_ID)
        assert r.status == 404 and r.body == b"", r
        assert d.stop() == 0


@test
def put_title_only_keeps_done_and_bumps_updated_at():
    with Todod() as d:
        start(d)
        t = create(d, "old title", done=True)
        time.sleep(0.005)  # now() must move on by at least a microsecond
        r = d.request("PUT", "/todos/" + t["id"], body={"title": "new title"})
        assert r.status == 200, r
        u = r.json()
        assert_todo_shape(u)
        assert u["id"] == t["id"] and u["title"] == "new title" and u["done"] is True, u
        assert u["created_at"] == t["created_at"], (t, u)
        assert u["updated_at"] > t["updated_at"], (t, u)
        assert get_todo(d, t["id"]) == u
        assert d.stop() == 0


@test
def put_done_only_keeps_title_and_bumps_updated_at():
    with Todod() as d:
        start(d)
        t = create(d, "keep this title")
        time.sleep(0.005)
        r = d.request("PUT", "/todos/" + t["id"], body={"done": True})
        assert r.status == 200, r
        u = r.json()
        assert_todo_shape(u)
        assert u["title"] == "keep this title" and u["done"] is True, u
        assert u["created_at"] == t["created_at"] and u["updated_at"] > t["updated_at"], (t, u)
        r = d.request("PUT", "/todos/" + t["id"], body={"done": False})
        assert r.status == 200 and r.json()["done"] is False, r
        assert get_todo(d, t["id"])["done"] is False
        assert d.stop() == 0


@test
def put_both_fields_updates_both():
    with Todod() as d:
        start(d)
        t = create(d, "a")
        r = d.request("PUT", "/todos/" + t["id"], body={"title": "b", "done": True})
        assert r.status == 200, r
        u = r.json()
        assert (u["title"], u["done"]) == ("b", True), u
        assert sql(d, "SELECT title || '|' || done FROM todos WHERE id = '%s'" % t["id"]) == "b|true"
        assert d.stop() == 0


@test
def delete_is_204_empty_then_404_for_delete_and_get():
    with Todod() as d:
        start(d)
        t = create(d, "delete me")
        keep = create(d, "keep me")
        r = d.request("DELETE", "/todos/" + t["id"])
        assert r.status == 204, r
        assert r.body == b"", r.body
        assert_json_error(d.request("DELETE", "/todos/" + t["id"]), 404, "not found")
        assert_json_error(d.request("GET", "/todos/" + t["id"]), 404, "not found")
        assert_json_error(d.request("PUT", "/todos/" + t["id"], body={"title": "x"}), 404)
        assert row_count(d) == 1
        assert get_todo(d, keep["id"]) == keep
        assert d.stop() == 0


@test
def list_returns_data_and_pagination_object():
    with Todod() as d:
        start(d)
        made = [create(d, "item %d" % i) for i in range(3)]
        body = list_todos(d)
        assert body["pagination"] == {"page": 1, "limit": 10, "total": 3, "total_pages": 1,
                                      "has_next": False, "has_prev": False}, body["pagination"]
        assert body["data"] == made[::-1], body["data"]
        assert d.stop() == 0


@test
def by_done_true_and_false_return_only_matching_todos():
    with Todod() as d:
        start(d)
        made = [create(d, "t%d" % i, done=(i % 3 == 0)) for i in range(10)]
        for flag in (True, False):
            r = d.request("GET", "/todos/done/%s" % str(flag).lower())
            assert r.status == 200, r
            assert r.headers.get("content-type", "").startswith("application/json"), r.headers
            got = r.json()
            assert isinstance(got, list), got
            for t in got:
                assert_todo_shape(t)
            want = [t for t in reversed(made) if t["done"] is flag]
            assert got == want, "done=%s: got %r, want %r" % (flag, [t["title"] for t in got],
                                                              [t["title"] for t in want])
        assert d.stop() == 0


# --------------------------------------------------------------------------- titles

def round_trip(d, title, raw_utf8=False):
    """Create a todo with title; it must come back intact from POST, GET, the list
    and the database."""
    t = create(d, title, raw_utf8=raw_utf8)
    assert get_todo(d, t["id"])["title"] == title
    assert [x["title"] for x in list_todos(d)["data"] if x["id"] == t["id"]] == [title]
    stored = sql(d, "SELECT title = %s FROM todos WHERE id = '%s'" % (sql_literal(title), t["id"]))
    assert stored == "t", "stored title differs from %r: %r" % (title, db_title(d, t["id"]))
    return t


@test
def title_with_quotes_and_backslashes_round_trips():
    with Todod() as d:
        start(d)
        for title in ['He said "hi"', "back\\slash", '\\"', "\\\\\\", "it's", "a/b</script>",
                      '{"title": "nested"}', "\\u0041 is not A"]:
            round_trip(d, title)
        assert d.stop() == 0


@test
def title_with_emoji_and_non_ascii_round_trips():
    with Todod() as d:
        start(d)
        for title in ["🎉", "café ✓ 日本語", "👩‍👩‍👧 family", "Ωmega ß ñ", "𝄞 clef"]:
            round_trip(d, title)                  # sent as \uXXXX (surrogate pairs) escapes
            round_trip(d, title, raw_utf8=True)   # sent as raw UTF-8
        assert d.stop() == 0


@test
def title_with_control_characters_round_trips_escaped():
    with Todod() as d:
        start(d)
        title = "a\u0001b\nc\td\re\u001f"
        t = round_trip(d, title)
        r = d.request("GET", "/todos/" + t["id"])
        for raw in (b"\x01", b"\n", b"\t", b"\r", b"\x1f"):
            assert raw not in r.body, "control byte %r not escaped in %r" % (raw, r.body)
        json.loads(r.body.decode("utf-8"))  # strict: raw control characters would fail here
        assert sql(d, "SELECT octet_length(title) FROM todos WHERE id = '%s'" % t["id"]) == "10"
        assert d.stop() == 0


@test
def sql_injection_title_is_stored_literally_and_table_survives():
    with Todod() as d:
        start(d)
        create(d, "bystander")
        for title in ["'; DROP TABLE todos; --", "x'); DELETE FROM todos; --", "$1", "%s %n"]:
            round_trip(d, title)
        assert sql(d, "SELECT to_regclass('todos') IS NOT NULL") == "t"
        assert row_count(d) == 5
        assert list_todos(d)["pagination"]["total"] == 5
        assert d.stop() == 0


@test
def title_of_255_characters_is_accepted():
    with Todod() as d:
        start(d)
        for title, octets in (("😀" * 255, 1020), ("a" * 255, 255), ("é" * 255, 510)):
            t = create(d, title)
            assert get_todo(d, t["id"])["title"] == title
            t = create(d, title, raw_utf8=True)
            got = sql(d, "SELECT char_length(title) || ' ' || octet_length(title) FROM todos "
                         "WHERE id = '%s'" % t["id"])
            assert got == "255 %d" % octets, got
        assert d.stop() == 0


@test
def title_of_256_characters_is_422():
    refused_and_nothing_changed(on_post_and_put(
        [{"title": title} for title in ("😀" * 256, "a" * 256, "é" * 256)], 422, "title", "255"))


@test
def list_of_empty_table_has_zero_total_and_pages():
    with Todod() as d:
        start(d)
        body = list_todos(d)
        assert body == {"data": [], "pagination": {"page": 1, "limit": 10, "total": 0,
                                                   "total_pages": 0, "has_next": False,
                                                   "has_prev": False}}, body
        body = list_todos(d, "?page=3&limit=5")
        assert body["data"] == [] and body["pagination"]["total"] == 0, body
        assert body["pagination"]["has_prev"] is True and body["pagination"]["has_next"] is False
        r = d.request("GET", "/todos/done/true")
        assert r.status == 200 and r.json() == [], r
        assert d.stop() == 0


@test
def list_pages_cover_every_row_once_in_order():
    with Todod() as d:
        start(d)
        insert_rows(d, 25)   # one statement: equal created_at, so ties decide the order
        want = ordered_ids(d)
        seen = []
        for page in (1, 2, 3):
            body = list_todos(d, "?page=%d&limit=10" % page)
            p = body["pagination"]
            cursor = p.pop("next_cursor", None)
            assert p == {"page": page, "limit": 10, "total": 25, "total_pages": 3,
                         "has_next": page < 3, "has_prev": page > 1}, p
            assert (cursor is not None) == (page < 3), cursor  # test_cursor_pages.py
            assert len(body["data"]) == (5 if page == 3 else 10), len(body["data"])
            seen += [t["id"] for t in body["data"]]
        assert seen == want, "pages do not follow created_at DESC, id DESC"
        assert d.stop() == 0


@test
def list_page_past_the_end_is_empty_with_has_prev():
    with Todod() as d:
        start(d)
        insert_rows(d, 7)
        body = list_todos(d, "?page=2&limit=10")
        assert body["data"] == [], body
        assert body["pagination"] == {"page": 2, "limit": 10, "total": 7, "total_pages": 1,
                                      "has_next": False, "has_prev": True}, body["pagination"]
        body = list_todos(d, "?page=100000000")
        assert body["data"] == [] and body["pagination"]["has_prev"] is True, body
        assert d.stop() == 0


@test
def list_limit_is_clamped_to_1_through_100():
    with Todod() as d:
        start(d)
        insert_rows(d, 105)
        for query, limit, rows, pages in (("?limit=0", 1, 1, 105), ("?limit=-5", 1, 1, 105),
                                          ("?limit=1000", 100, 100, 2), ("?limit=100", 100, 100, 2),
                                          ("?limit=1", 1, 1, 105), ("", 10, 10, 11),
                                          ("?limit=99999999999999999999", 100, 100, 2)):
            body = list_todos(d, query)
            p = body["pagination"]
            assert (p["limit"], len(body["data"]), p["total"], p["total_pages"]) == \
                (limit, rows, 105, pages), "%s: %r" % (query, p)
        assert d.stop() == 0


@test
def list_total_follows_creates_and_deletes():
    with Todod() as d:
        start(d)
        made = [create(d, "n%d" % i) for i in range(12)]
        assert list_todos(d)["pagination"]["total"] == 12
        for t in made[:5]:
            assert d.request("DELETE", "/todos/" + t["id"]).status == 204
        body = list_todos(d, "?limit=100")
        assert body["pagination"]["total"] == 7 == row_count(d), body["pagination"]
        assert body["pagination"]["total_pages"] == 1
        assert sorted(t["id"] for t in body["data"]) == sorted(t["id"] for t in made[5:])
        insert_rows(d, 3)
        sql(d, "DELETE FROM todos WHERE id = '%s'" % made[5]["id"])
        assert list_todos(d)["pagination"]["total"] == 9 == row_count(d)
        assert d.stop() == 0


@test
def list_is_newest_first_with_ties_by_id_desc():
    with Todod() as d:
        start(d)
        made = [create(d, "order %d" % i) for i in range(5)]
        assert [t["id"] for t in list_todos(d)["data"]] == [t["id"] for t in reversed(made)]
        # rows that share one created_at, older than the ones above: id DESC among them
        tie_ids = sorted(str(uuid.uuid4()) for _ in range(4))
        sql(d, "INSERT INTO todos (id, title, created_at, updated_at) SELECT i::uuid, 'tie', "
               "'2020-01-01T00:00:00Z', '2020-01-01T00:00:00Z' FROM unnest(ARRAY[%s]) i"
            % ",".join(sql_literal(i) for i in tie_ids))
        ids = [t["id"] for t in list_todos(d, "?limit=100")["data"]]
        assert ids == [t["id"] for t in reversed(made)] + tie_ids[::-1], ids
        r = d.request("GET", "/todos/done/false")
        assert [t["id"] for t in r.json()] == ids, r
        assert d.stop() == 0


@test
def timestamps_are_written_exactly_as_postgresql_writes_them():
    """Rows come in the binary format and todod formats their timestamps: what
    it answers must be what to_char() gives, for every kind of timestamp."""
    with Todod() as d:
        start(d)
        fmt = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"
        special = ["'2026-12-01 17:23:36.84113+00'", "'2000-01-01 00:00:00+00'",
                   "'1999-12-31 23:59:59.999999+00'", "'1970-01-01 00:00:00+00'",
                   "'1900-02-28 12:00:00+00'", "'2000-02-29 00:00:00.000001+00'",
                   "'0001-01-01 00:00:00+00'", "'0044-03-15 12:00:00+00 BC'",
                   "'4713-11-24 00:00:00+00 BC'", "'12345-06-07 01:02:03.5+00'",
                   "'294276-12-31 23:59:59.999999+00'", "'infinity'", "'-infinity'",
                   "'2024-06-30 23:59:59+14'", "NULL"]
        sql(d, "INSERT INTO todos (title, created_at, updated_at) VALUES %s"
            % ", ".join("('special %d', %s, %s)" % (i, t, special[-1 - i])
                        for i, t in enumerate(special)))
        # and 300 instants anywhere from 4713 BC to 294276 AD, to the microsecond
        sql(d, "INSERT INTO todos (title, created_at, updated_at) SELECT 'random ' || g,"
               " timestamptz '4713-11-24 00:00:00+00 BC' + random() * interval '106000000 days',"
               " timestamptz '1900-01-01 00:00:00+00' + random() * interval '73000 days'"
               " FROM generate_series(1, 300) g")
        want = {}
        for line in sql(d, "SELECT id, coalesce(to_char(created_at AT TIME ZONE 'UTC', %s), '-'),"
                           " coalesce(to_char(updated_at AT TIME ZONE 'UTC', %s), '-')"
                           " FROM todos" % (fmt, fmt)).splitlines():
            tid, created, updated = line.split("|")
            want[tid] = (None if created == "-" else created, None if updated == "-" else updated)
        assert len(want) == len(special) + 300, len(want)
        for tid, (created, updated) in want.items():
            r = d.request("GET", "/todos/" + tid)
            assert r.status == 200, r
            t = r.json()
            assert (t["id"], t["created_at"], t["updated_at"]) == (tid, created, updated), \
                (t, created, updated)
        # the same through the list, whose rows come the same way
        r = d.request("GET", "/todos/done/false?limit=1000")
        assert r.status == 200, r
        got = {t["id"]: (t["created_at"], t["updated_at"]) for t in r.json()}
        assert got == want
        assert d.stop() == 0


@test
def by_done_limit_defaults_to_100_and_caps_at_1000():
    with Todod() as d:
        start(d)
        insert_rows(d, 1005, done="true")
        insert_rows(d, 3, done="false")
        want = ordered_ids(d, "WHERE done")

        def ids(query):
            r = d.request("GET", "/todos/done/true" + query, timeout=15)
            assert r.status == 200, r
            got = r.json()
            assert all(t["done"] is True for t in got)
            return [t["id"] for t in got]

        assert ids("") == want[:100]
        assert ids("?limit=1000") == want[:1000]
        assert ids("?limit=5000") == want[:1000]
        assert ids("?limit=1000&page=2") == want[1000:]
        assert ids("?limit=0") == want[:1]
        assert ids("?limit=7&page=3") == want[14:21]
        r = d.request("GET", "/todos/done/false")
        assert len(r.json()) == 3, r
        assert d.stop() == 0


# --------------------------------------------------------------------------- errors

def post_raw(d, body, ctype="application/json", path="/todos", method="POST"):
    headers = {"Content-Type": ctype} if ctype is not None else {}
    return d.request(method, path, body=body, headers=headers)


def on_post_and_put(bodies, status, *fragments, put=None, ctype="application/json"):
    """Cases for refused_and_nothing_changed: each body POSTed to /todos and PUT to
    the victim, refused with status and a message naming the fragments (put: the
    fragments of the PUT's message, when they differ)."""
    cases = []
    for body in bodies:
        cases.append(("POST", "/todos", body, ctype, status, fragments))
        cases.append(("PUT", "/todos/{victim}", body, ctype, status,
                      fragments if put is None else put))
    return cases


def refused_and_nothing_changed(cases, check=None, **conf):
    """The bad-input table: start todod (conf), make one todo (the victim), then
    send every case (method, path, body, Content-Type, status, message fragments;
    {victim} in a path is the victim's id; bytes are sent as they are with that
    Content-Type, None for none; anything else as JSON). Each must be refused with
    that status and a JSON error whose message names every fragment. check(d,
    victim), if given, runs next. Then the table holds the victim alone, unchanged,
    and todod stops with status 0. cases may be a function of the victim."""
    with Todod(**conf) as d:
        start(d)
        victim = create(d, "unchanged")
        for method, path, body, ctype, status, fragments in (
                cases(victim) if callable(cases) else cases):
            path = path.replace("{victim}", victim["id"])
            if isinstance(body, bytes):
                r = post_raw(d, body, ctype=ctype, path=path, method=method)
            else:
                r = d.request(method, path, body=body)
            try:
                assert_json_error(r, status, *fragments)
            except AssertionError as e:
                raise AssertionError("%s %s %r: %s" % (method, path, body, e)) from None
        if check is not None:
            check(d, victim)
        assert row_count(d) == 1
        assert get_todo(d, victim["id"]) == victim
        assert d.stop() == 0


@test
def malformed_json_is_400_and_creates_nothing():
    refused_and_nothing_changed(on_post_and_put(
        [b'{"title":', b'{title: "x"}', b'{"title": "x"} trailing', b"{'title': 'x'}",
         b'{"title": "x",}', b"", b'{"title": "x"}{"title": "y"}', b"nul",
         b'{"title": "unterminated}'], 400, "JSON"))


@test
def invalid_utf8_body_is_400_and_creates_nothing():
    refused_and_nothing_changed(on_post_and_put(
        [b'{"title": "\xff"}', b'{"title": "\xc3"}', b'{"title": "\xed\xa0\x80"}',
         b'{"title": "\xc0\xaf"}', b'{"title": "ok"}\xfe'], 400, "UTF-8"))


@test
def unpaired_surrogate_escape_in_title_is_400_not_replaced():
    # "\ud800" alone is grammatical JSON but encodes no character: the title cannot be
    # stored intact, so it is refused (not silently turned into U+FFFD)
    refused_and_nothing_changed(on_post_and_put(
        [b'{"title": "a\\ud800b"}', b'{"title": "\\udc00"}', b'{"title": "x\\ud83d"}'],
        400, "UTF-8"))


@test
def bad_todo_id_is_400_invalid_todo_id():
    def cases(victim):
        bad = ["not-a-uuid", "123", victim["id"] + "0", victim["id"][:-1],
               victim["id"].replace("-", ""), "zzzzzzzz-zzzz-4zzz-8zzz-zzzzzzzzzzzz",
               urllib.parse.quote("'; DROP TABLE todos; --"), "%00" + victim["id"][3:]]
        return [(method, "/todos/" + b, body, None, 400, ("invalid todo id",))
                for b in bad
                for method, body in (("GET", None), ("PUT", {"title": "x"}), ("DELETE", None))]

    def table_still_there(d, victim):
        assert sql(d, "SELECT to_regclass('todos') IS NOT NULL") == "t"

    refused_and_nothing_changed(cases, check=table_still_there)


@test
def bad_page_query_is_400():
    # %00 decodes to a NUL byte, which must not cut "1%00x" down to 1
    cases = [("GET", path + query, None, None, 400, ("page",))
             for query in ("?page=abc", "?page=0", "?page=-1", "?page=1.5", "?page=", "?page=2x",
                           "?page=100000001", "?page=1%00x", "?page=%001", "?PAGE=2%00",
                           "?page=1%00&page=2")
             for path in ("/todos", "/todos/done/true")]
    cases += [("GET", "/todos" + query, None, None, 400, ("limit",))
              for query in ("?limit=abc", "?limit=", "?limit=1e3", "?limit=5%00")]

    def nul_elsewhere_is_ignored(d, victim):
        # a NUL in a parameter the route does not read is not its business
        for query in ("?other=%00&page=1", "?page=1&xpage=%00", "?page=1&page=%00"):
            r = d.request("GET", "/todos" + query)
            assert r.status == 200, (query, r)

    refused_and_nothing_changed(cases, check=nul_elsewhere_is_ignored)


@test
def bad_query_parameters_do_not_crash_the_worker():
    with Todod(workers=1) as d:
        start(d)
        [worker] = d.worker_pids()
        with d.Client(timeout=5, retry=False) as c:
            for i in range(20):
                path = ("/todos?page=abc", "/todos?limit=x", "/todos/done/true?page=0")[i % 3]
                try:
                    r = c.request("GET", path)
                    assert r.status == 400, "%s (request %d): %r" % (path, i, r)
                    assert c.request("GET", "/todos").status == 200
                except (OSError, http.client.HTTPException) as e:
                    raise AssertionError("connection lost after %d bad requests (%s): %r\n%s" % (
                        i + 1, path, e, d.log_tail(6))) from e
        assert d.worker_pids() == [worker], "the worker died: %r -> %r\n%s" % (
            [worker], d.worker_pids(), d.log_tail(8))
        assert "killed by signal" not in d.log(), d.log_tail(8)
        assert d.stop() == 0


@test
def bad_done_segment_is_400():
    refused_and_nothing_changed([("GET", "/todos/done/" + seg, None, None, 400,
                                  ("done", "true or false"))
                                 for seg in ("maybe", "1", "0", "TRUE", "yes", "true%20")])


@test
def missing_todo_is_404_not_found():
    with Todod() as d:
        start(d)
        create(d, "someone else")
        for tid in (ABSENT_ID, str(uuid.uuid4())):
            for method, body in (("GET", None), ("PUT", {"title": "x"}), ("PUT", {}),
                                 ("DELETE", None)):
                r = d.request(method, "/todos/" + tid, body=body)
                assert_json_error(r, 404)
                assert r.json() == {"error": "not found"}, r
        assert row_count(d) == 1
        assert d.stop() == 0


@test
def unknown_path_is_404_naming_the_path():
    def names_the_path(d, victim):
        msg = assert_json_error(d.request("GET", "/nothing-here"), 404)
        assert "/nothing-here" in msg, msg

    refused_and_nothing_changed([("GET", path, None, None, 404, ("no route for",))
                                 for path in ("/nope", "/todo", "/todos/", "/todos/done/true/x",
                                              "/todos/%s/extra" % ABSENT_ID, "/TODOS",
                                              "/api-docs")],
                                check=names_the_path)


@test
def wrong_method_is_405_with_allow_header():
    with Todod() as d:
        start(d)
        t = create(d, "x")
        cases = [("PATCH", "/todos/" + t["id"], {"GET", "HEAD", "PUT", "DELETE"}),
                 ("POST", "/todos/" + t["id"], {"GET", "HEAD", "PUT", "DELETE"}),
                 ("DELETE", "/todos", {"GET", "HEAD", "POST"}),
                 ("PUT", "/todos", {"GET", "HEAD", "POST"}),
                 ("POST", "/todos/done/true", {"GET", "HEAD"}),
                 ("GET", "/todos/performance-test", {"POST"}),
                 ("POST", "/health", {"GET", "HEAD"}),
                 ("POST", "/metrics", {"GET", "HEAD"})]
        for method, path, allowed in cases:
            body = {"title": "y"} if method in ("POST", "PUT", "PATCH") else None
            r = d.request(method, path, body=body)
            assert_json_error(r, 405, method)
            got = {m.strip() for m in r.headers.get("allow", "").split(",") if m.strip()}
            assert got == allowed, "%s %s: Allow %r, want %r" % (method, path, got, allowed)
        assert row_count(d) == 1
        assert get_todo(d, t["id"]) == t
        assert d.stop() == 0


@test
def body_over_max_body_size_is_413():
    with Todod(max_body_size="1k") as d:
        start(d)
        victim = create(d, "unchanged")
        big = json.dumps({"title": "x", "pad": "p" * 2048}).encode()
        assert len(big) > 2048
        assert_json_error(post_raw(d, big), 413, "1024")
        assert_json_error(post_raw(d, big, path="/todos/" + victim["id"], method="PUT"), 413)
        ok = json.dumps({"title": "y", "pad": "p" * 900}).encode()
        assert len(ok) <= 1024
        assert post_raw(d, ok).status == 201
        assert row_count(d) == 2
        assert get_todo(d, victim["id"]) == victim
        assert d.stop() == 0


@test
def non_json_content_type_is_415():
    body = json.dumps({"title": "x"}).encode()
    refused_and_nothing_changed(
        [case for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx",
                            "application/json-patch+json", "text/json", None)
         for case in on_post_and_put([body], 415, "Content-Type", "application/json",
                                     put=("Content-Type",), ctype=ctype)])


@test
def non_object_json_body_is_422():
    refused_and_nothing_changed(on_post_and_put(
        [b"[]", b'[{"title": "x"}]', b'"x"', b"1", b"null", b"true"], 422, "JSON object"))


@test
def missing_or_mistyped_title_is_422():
    refused_and_nothing_changed(
        [("POST", "/todos", {}, None, 422, ("title", "required")),
         ("POST", "/todos", {"done": True}, None, 422, ("title", "required")),
         ("POST", "/todos", {"Title": "x"}, None, 422, ("title",))] +
        on_post_and_put([{"title": bad} for bad in (None, 1, 1.5, True, [], ["x"], {"t": "x"})],
                        422, "title", "string"))


@test
def empty_title_is_422():
    refused_and_nothing_changed(on_post_and_put([{"title": ""}], 422, "title", "1 to 255"))


@test
def done_not_boolean_is_422():
    cases = []
    for bad in ("true", 1, 0, None, [], {}):
        cases += [("POST", "/todos", {"title": "x", "done": bad}, None, 422, ("done", "boolean")),
                  ("PUT", "/todos/{victim}", {"done": bad}, None, 422, ("done", "boolean")),
                  # a good title next to a bad done changes nothing either
                  ("PUT", "/todos/{victim}", {"title": "changed", "done": bad}, None, 422,
                   ("done",))]
    refused_and_nothing_changed(cases)


@test
def database_unreachable_is_503_json_on_every_database_route():
    # nothing listens on this port: every connection attempt is refused at once
    dead = "postgresql://postgres@127.0.0.1:%d/todo" % free_port()
    with Todod(database_url=dead) as d:
        d.start(wait="http")
        for method, path, body in (("GET", "/health", None), ("GET", "/todos", None),
                                   ("POST", "/todos", {"title": "x"}),
                                   ("GET", "/todos/" + ABSENT_ID, None),
                                   ("PUT", "/todos/" + ABSENT_ID, {"done": True}),
                                   ("DELETE", "/todos/" + ABSENT_ID, None),
                                   ("GET", "/todos/done/true", None),
                                   ("POST", "/todos/performance-test", {"message_count": 10})):
            r, dt = timed(lambda: d.request(method, path, body=body))
            assert_json_error(r, 503, "database")
            assert dt < 1.0, "%s %s took %.2fs to answer 503" % (method, path, dt)
        # validation still comes first: bad input is reported as such
        assert_json_error(d.request("GET", "/todos/nope"), 400, "invalid todo id")
        assert_json_error(d.request("POST", "/todos", body={"title": ""}), 422)
        assert d.stop() == 0


# --------------------------------------------------------------------------- the replaced service's curl commands

def port_3000_free():
    """Both loopback addresses free on 3000: curl's "localhost" may try either."""
    for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((addr, 3000))
        except OSError as e:
            if family == socket.AF_INET6 and e.errno in (97, 99):  # no IPv6 loopback: fine
                continue
            return False
    return True


def start_on_3000(**conf):
    """A Todod on 127.0.0.1:3000 when that port is free, else on a free port.
    Returns (daemon, port)."""
    if port_3000_free():
        d = Todod(listen="127.0.0.1:3000", **conf)
        try:
            d.start()
        except RuntimeError:
            d.shutdown()  # someone took the port in the meantime: fall back
        else:
            return wait_connected(d), 3000
    d = Todod(**conf)
    return start(d), d.port


def curl(cmd, port):
    """Run a README curl command line as a shell would. The commands name
    localhost:3000; when port 3000 was taken on this machine the daemon listens
    elsewhere and only the port number in the URL is substituted. Only output
    options are appended (-sS, and -w for the status line), nothing that changes
    the request. Returns (status, body text)."""
    if port != 3000:
        cmd = cmd.replace("localhost:3000", "localhost:%d" % port)
    argv = shlex.split(cmd) + ["-sS", "-w", "\n%{http_code}"]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, "%s: exit %d, %s" % (cmd, r.returncode, r.stderr)
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


@test
def readme_crud_curl_commands_work_unchanged():
    d, port = start_on_3000()
    with d:
        print("    (todod on port %d)" % port)
        status, body = curl('curl -X POST http://localhost:3000/todos '
                            '-H "Content-Type: application/json" -d \'{"title":"x"}\'', port)
        assert status == 201, (status, body)
        t = json.loads(body)
        assert_todo_shape(t)
        assert t["title"] == "x" and t["done"] is False, t
        tid = t["id"]

        status, body = curl("curl http://localhost:3000/todos", port)
        assert status == 200, (status, body)
        listing = json.loads(body)
        assert listing["data"] == [t] and listing["pagination"]["total"] == 1, listing

        status, body = curl("curl http://localhost:3000/todos/%s" % tid, port)
        assert status == 200 and json.loads(body) == t, (status, body)

        status, body = curl('curl -X PUT http://localhost:3000/todos/%s '
                            '-H "Content-Type: application/json" '
                            '-d \'{"title":"y","done":true}\'' % tid, port)
        assert status == 200, (status, body)
        u = json.loads(body)
        assert (u["id"], u["title"], u["done"]) == (tid, "y", True), u

        status, body = curl("curl http://localhost:3000/todos/done/true", port)
        assert status == 200 and json.loads(body) == [u], (status, body)
        status, body = curl("curl http://localhost:3000/todos/done/false", port)
        assert status == 200 and json.loads(body) == [], (status, body)

        status, body = curl("curl -X DELETE http://localhost:3000/todos/%s" % tid, port)
        assert status == 204 and body == "", (status, body)
        status, body = curl("curl http://localhost:3000/todos/%s" % tid, port)
        assert status == 404 and json.loads(body) == {"error": "not found"}, (status, body)
        status, body = curl("curl http://localhost:3000/health", port)
        assert status == 200 and body.strip() == "ok", (status, body)
        assert row_count(d) == 0
        assert d.stop() == 0


@test
def performance_readme_curl_commands_work_unchanged():
    d, port = start_on_3000()
    with d:
        print("    (todod on port %d)" % port)
        total = 0
        for n, b in ((100, 20), (500, 50), (1000, 100)):
            cmd = ('curl -X POST http://localhost:3000/todos/performance-test \\\n'
                   '  -H "Content-Type: application/json" \\\n'
                   '  -d \'{"message_count": %d, "batch_size": %d}\'' % (n, b))
            status, body = curl(cmd.replace("\\\n", " "), port)
            assert status == 200, (status, body)
            rep = json.loads(body)
            for k in ("total_messages", "duration_ms", "messages_per_second", "success_count",
                      "error_count", "success_rate"):
                assert k in rep, "report lacks %s: %r" % (k, rep)
            assert rep["total_messages"] == n and rep["success_count"] == n, rep
            assert rep["error_count"] == 0 and rep["success_rate"] == 100.0, rep
            assert isinstance(rep["duration_ms"], int) and rep["messages_per_second"] > 0, rep
            assert rep["batch_size"] == b and rep["batches"] == n // b, rep
            total += n
            assert row_count(d) == total
        assert list_todos(d)["pagination"]["total"] == total
        assert sql(d, "SELECT count(*) FROM todos WHERE title LIKE 'Performance Test Todo #%' "
                      "AND done = (substr(title, 24)::int % 2 = 0)") == str(total)
        assert d.stop() == 0


# --------------------------------------------------------------------------- concurrency

@test
def concurrent_clients_create_and_read_back_their_own_todos():
    nthreads, per = 32, 20
    with Todod(workers=2) as d:
        start(d)

        def client(i):
            mine = []
            with d.Client(timeout=20) as c:
                for j in range(per):
                    title = "client %d todo %d ✓ \"q\" \\ %s" % (i, j, os.urandom(4).hex())
                    done = (i + j) % 2 == 0
                    r = c.request("POST", "/todos", body={"title": title, "done": done})
                    assert r.status == 201, "client %d POST %d: %r" % (i, j, r)
                    t = r.json()
                    assert_todo_shape(t)
                    assert (t["title"], t["done"]) == (title, done), (title, done, t)
                    assert r.headers.get("location") == "/todos/" + t["id"], r.headers
                    mine.append(t)
                for t in mine:
                    r = c.request("GET", "/todos/" + t["id"])
                    assert r.status == 200, "client %d GET: %r" % (i, r)
                    assert r.json() == t, (r.json(), t)
            return mine

        results = run_threads(nthreads, client)
        raise_errors(results)
        ids = [t["id"] for mine in results for t in mine]
        assert len(ids) == len(set(ids)) == nthreads * per
        assert list_todos(d)["pagination"]["total"] == nthreads * per
        assert row_count(d) == nthreads * per
        assert d.stop() == 0


# --------------------------------------------------------------------------- metrics

@test
def metrics_count_route_pattern_never_raw_path():
    with Todod(workers=2) as d:
        start(d)
        labels = {"route": "/todos/{id}", "method": "GET", "code": "404"}
        before = metric(d.metrics(), "todod_http_requests_total", labels, default=0.0)
        tid = str(uuid.uuid4())
        assert_json_error(d.request("GET", "/todos/" + tid), 404)
        assert_json_error(d.request("GET", "/no-such-route-" + tid[:8]), 404)
        assert wait_until(lambda: metric(d.metrics(), "todod_http_requests_total", labels)
                          == before + 1, 2), d.metrics()
        text = d.metrics()
        assert tid not in text and tid[:8] not in text, "a raw path leaked into /metrics"
        assert "/no-such-route" not in text
        routes = {ls.get("route") for n, ls, v in parse_metrics(text)
                  if n == "todod_http_requests_total"}
        patterns = {"/health", "/metrics", "/stats", "/api-docs/openapi.json", "/todos",
                    "/todos/performance-test", "/todos/done/{done}", "/todos/{id}", "other"}
        assert "/todos/{id}" in routes and routes <= patterns, routes
        assert d.stop() == 0


# --------------------------------------------------------------------------- the database pipeline

@test
def lock_wait_does_not_block_health_and_metrics():
    with Todod(workers=1) as d:
        start(d)
        t = create(d, "behind the lock")
        locker = lock_todos(d, 2)
        try:
            th, result = in_background(lambda: d.request("GET", "/todos/" + t["id"], timeout=15))
            assert wait_until(lambda: waiting_on_lock(d), 3, interval=0.01), \
                "todod's query never waited on the lock"
            assert th.is_alive(), "the request did not wait on the lock: %r" % result
            times = []
            with d.Client() as c:
                for path in ("/health", "/metrics") * 5:
                    r, dt = timed(lambda: c.request("GET", path))
                    assert r.status == 200, "%s: %r" % (path, r)
                    times.append((path, dt))
            for path in ("/health", "/metrics"):
                r, dt = timed(lambda: d.request("GET", path))  # a new connection too
                assert r.status == 200, r
                times.append((path, dt))
            slow = [(p, round(dt, 3)) for p, dt in times if dt >= 0.1]
            assert not slow, "answers took 100 ms or more while a query waited: %r" % slow
            assert th.is_alive(), "the locked request finished before the lock was released"
            th.join(15)
            assert not th.is_alive(), "no answer after the lock was released"
        finally:
            locker.wait(10)
        assert "error" not in result, result
        assert result["resp"].status == 200, result
        assert result["resp"].json() == t, result["resp"]
        assert result["elapsed"] >= 1.0, "answered too early to have waited: %r" % result
        print("    (health/metrics max %.1f ms; locked request %.2fs)"
              % (max(dt for _, dt in times) * 1e3, result["elapsed"]))
        assert d.stop() == 0


@test
def request_timeout_answers_503_and_worker_keeps_serving():
    with Todod(workers=1, request_timeout=1) as d:
        start(d)
        worker = d.worker_pids()
        t = create(d, "timeout")
        locker = lock_todos(d, 3)
        try:
            r, dt = timed(lambda: d.request("GET", "/todos/" + t["id"], timeout=10))
            assert_json_error(r, 503)
            assert 0.8 <= dt < 2.5, "503 after %.2fs with request_timeout = 1" % dt
            r, dt2 = timed(lambda: d.request("GET", "/health"))
            assert r.status == 200 and dt2 < 0.5, (r, dt2)
        finally:
            locker.wait(10)
        assert get_todo(d, t["id"]) == t
        assert create(d, "after the timeout")["title"] == "after the timeout"
        assert d.worker_pids() == worker, "the worker was replaced: %r -> %r" % (worker,
                                                                              d.worker_pids())
        print("    (503 after %.2fs)" % dt)
        assert d.stop() == 0


@test
def failing_query_does_not_fail_its_group_neighbours():
    nok, npoison = 50, 5
    with Todod(workers=1) as d:
        start(d)
        # every insert attempt bumps the (non-transactional) sequence, even when rolled back
        sql(d, """
            CREATE SEQUENCE insert_attempts;
            CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM nextval('insert_attempts');
                IF NEW.title = 'poison' THEN
                    RAISE EXCEPTION 'poisoned title';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER poison BEFORE INSERT ON todos FOR EACH ROW EXECUTE FUNCTION poison();
        """)
        titles = ["ok %d" % i for i in range(nok)]
        for k in range(npoison):
            titles.insert(k * 11 + 5, "poison")
        n = len(titles)
        clients = [d.Client(timeout=20) for _ in range(n)]
        sent = [0]
        lock = threading.Lock()
        try:
            for c in clients:  # keep-alive connections open and known to the worker
                assert c.request("GET", "/health").status == 200
            [worker] = d.worker_pids()
            # With the worker stopped, every request lands in its socket; on SIGCONT one
            # turn of its loop reads them all, and they go to the database as one group.
            os.kill(worker, signal.SIGSTOP)
            try:
                def send(i):
                    with lock:
                        sent[0] += 1
                    return clients[i].request("POST", "/todos", body={"title": titles[i]})

                threads_result = {}
                runner = threading.Thread(
                    target=lambda: threads_result.setdefault("r", run_threads(n, send)))
                runner.start()
                assert wait_until(lambda: sent[0] == n, 10), sent
                time.sleep(0.2)  # the last requests' bytes reach the worker's sockets
            finally:
                os.kill(worker, signal.SIGCONT)
            runner.join(60)
            assert not runner.is_alive()
        finally:
            for c in clients:
                c.close()
        results = threads_result["r"]
        raise_errors(results)
        for title, r in zip(titles, results):
            if title == "poison":
                assert_json_error(r, 500)
                assert r.json() == {"error": "internal error"}, r
            else:
                assert r.status == 201, "%r: %r" % (title, r)
                assert r.json()["title"] == title, r
        assert row_count(d) == nok
        assert sorted(sql(d, "SELECT title FROM todos").splitlines()) == sorted(
            t for t in titles if t != "poison")
        assert list_todos(d)["pagination"]["total"] == nok
        attempts = int(sql(d, "SELECT last_value FROM insert_attempts"))
        assert attempts > n, "%d insert attempts for %d requests: the requests never shared " \
            "a failing group, so this test proved nothing" % (attempts, n)
        assert "poisoned title" not in "".join(r.text for r in results)
        print("    (%d insert attempts for %d requests)" % (attempts, n))
        assert d.stop() == 0


@test
def existing_replaced_service_table_is_adopted():
    pg = get_pg()
    db = pg.create_database()
    # the replaced service's migration, verbatim (API.md), and rows it wrote
    pg.psql("""
        create table if not exists todos (
            id          uuid primary key default gen_random_uuid(),
            title       varchar(255) not null,
            done        boolean not null default false,
            created_at  timestamptz default now(),
            updated_at  timestamptz default now()
        );
        create index if not exists idx_todos_done on todos (done);
        create index if not exists idx_todos_created_at on todos (created_at);
        insert into todos (title, done, created_at, updated_at) values
            ('old one', true, now() - interval '3 days', now() - interval '3 days'),
            ('old two', false, now() - interval '2 days', now() - interval '1 day'),
            ('old three', false, now() - interval '1 day', now() - interval '1 day');
    """, db=db)
    old = pg.psql("select id from todos order by created_at desc", db=db).split()
    with Todod(db=db) as d:
        start(d)
        body = list_todos(d)
        assert body["pagination"]["total"] == 3, body["pagination"]
        assert [t["id"] for t in body["data"]] == old
        assert [t["title"] for t in body["data"]] == ["old three", "old two", "old one"]
        assert get_todo(d, old[2])["done"] is True
        new = create(d, "new one")
        body = list_todos(d)
        assert body["pagination"]["total"] == 4 and body["data"][0] == new, body
        assert d.request("DELETE", "/todos/" + old[0]).status == 204
        assert list_todos(d)["pagination"]["total"] == 3 == row_count(d)
        cols = pg.psql("select string_agg(column_name || ':' || data_type, ',' order by "
                       "ordinal_position) from information_schema.columns where table_name = "
                       "'todos'", db=db)
        assert cols == ("id:uuid,title:character varying,done:boolean,created_at:timestamp with "
                        "time zone,updated_at:timestamp with time zone"), cols
        assert d.stop() == 0
        assert not error_lines(d.log()), error_lines(d.log())


@test
def simultaneous_starts_on_fresh_database_all_become_healthy():
    pg = get_pg()
    db = pg.create_database()
    daemons = [Todod(db=db, workers=2) for _ in range(3)]
    try:
        for d in daemons:
            d.start(wait=None)
        for d in daemons:
            assert wait_until(lambda: d.request("GET", "/health", timeout=1).status == 200, 15), \
                "todod on port %d not healthy:\n%s" % (d.port, d.log_tail())
        for d in daemons:
            wait_connected(d)  # every worker of every daemon: schema set up, statements prepared
            assert d.running(), d.log_tail()
            for _ in range(6):
                assert d.request("GET", "/health").status == 200
        made = [create(d, "from %d" % d.port) for d in daemons]
        for d in daemons:
            assert list_todos(d)["pagination"]["total"] == 3
            for t in made:
                assert get_todo(d, t["id"]) == t
        triggers = pg.psql("select count(*) from pg_trigger where tgrelid = 'todos'::regclass "
                           "and not tgisinternal", db=db)
        assert triggers == "3", triggers
        for d in daemons:
            assert d.stop() == 0
        for d in daemons:
            errs = error_lines(d.log())
            assert not errs, "port %d logged errors: %r" % (d.port, errs)
    finally:
        for d in daemons:
            d.shutdown()
